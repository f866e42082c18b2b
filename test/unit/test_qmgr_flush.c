/* test_qmgr_flush.c: unit tests of qmgr's group commit: every commit that
 * waits is answered exactly once, in order, from the event loop, whether
 * the loop flushes itself, the flush thread does, or flushes move from one
 * to the other as their time changes; a stop answers what is still
 * waiting, including commits made by the callbacks themselves;
 * checkpoints run while commits never stop; the thread's flushes follow
 * the log from file to file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

#define WAITERS 50

/* loop_flush_max_micros: the loop always flushes, never does, or does
 * until its first flush (which takes more than a microsecond) has moved
 * the average above the limit. */
#define LOOP_ALWAYS 1000000000
#define LOOP_NEVER 0
#define LOOP_FIRST_ONLY 1

struct run {
	struct event_base *base;
	struct qmgr_flusher *flusher;
	int answered[WAITERS];
	int order[WAITERS];
	int count;
	bool chain; /* the callback of waiter 0 waits once more */
	int next;            /* the next waiter to come */
	struct event *turns; /* adds a few waiters a turn, when they come in turns */
};

struct waiter_ctx {
	struct run *run;
	int id;
};

static struct waiter_ctx ctxs[WAITERS + 1];

static void on_durable(void *arg, bool ok, const char *reason)
{
	struct waiter_ctx *w = arg;
	struct run *r = w->run;
	assert_true(ok);
	assert_null(reason);
	if (w->id < WAITERS)
		r->answered[w->id]++;
	r->order[r->count++ % WAITERS] = w->id;
	if (r->chain && w->id == 0) {
		ctxs[WAITERS] = (struct waiter_ctx){r, WAITERS};
		qmgr_flusher_wait(r->flusher, on_durable, &ctxs[WAITERS]);
	}
	if (r->count == WAITERS)
		event_base_loopbreak(r->base);
}

static void add_waiters(struct run *r, int n)
{
	for (int i = 0; i < n && r->next < WAITERS; i++, r->next++) {
		ctxs[r->next] = (struct waiter_ctx){r, r->next};
		qmgr_flusher_wait(r->flusher, on_durable, &ctxs[r->next]);
	}
}

/* Five waiters a turn, the turns a millisecond apart. */
static void add_some(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;
	add_waiters(r, 5);
	struct timeval ms = {0, 1000};
	if (r->next < WAITERS)
		evtimer_add(r->turns, &ms);
}

/* Runs WAITERS waits; the flush counts come back in flushes and by_loop. */
static void run_waiters(bool stop_before_loop, bool in_turns, int loop_max, uint64_t *flushes, uint64_t *by_loop)
{
	char *dir = testutil_tmpdir();
	struct buf err = BUF_INIT;
	struct qmgr_store *st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	assert_non_null(st);
	struct run r = {.base = event_base_new(), .chain = stop_before_loop};
	r.flusher = qmgr_flusher_start(r.base, st, 60, loop_max, &err);
	assert_non_null(r.flusher);
	r.turns = evtimer_new(r.base, add_some, &r);
	if (in_turns) {
		struct timeval now = {0, 0};
		evtimer_add(r.turns, &now);
	} else {
		add_waiters(&r, WAITERS);
	}
	if (!stop_before_loop)
		event_base_dispatch(r.base);
	qmgr_flusher_counts(r.flusher, flushes, by_loop);
	qmgr_flusher_stop(r.flusher);
	for (int i = 0; i < WAITERS; i++)
		assert_int_equal(r.answered[i], 1);
	/* Tickets are answered in the order they were taken. */
	for (int i = 1; i < WAITERS && !stop_before_loop; i++)
		assert_true(r.order[i] > r.order[i - 1]);
	if (stop_before_loop)
		assert_int_equal(r.count, WAITERS + 1);
	event_free(r.turns);
	event_base_free(r.base);
	qmgr_store_close(st);
	testutil_rmtree(dir);
	free(dir);
	buf_free(&err);
}

static void test_every_waiter_answered_once_in_order(void **state)
{
	uint64_t flushes, by_loop;
	run_waiters(false, false, LOOP_ALWAYS, &flushes, &by_loop);
	/* all of them made at once: the loop's one flush at the end of the turn */
	assert_int_equal(flushes, 1);
	assert_int_equal(by_loop, 1);
	run_waiters(false, false, LOOP_NEVER, &flushes, &by_loop);
	assert_true(flushes >= 1);
	assert_int_equal(by_loop, 0);
}

static void test_waiters_in_turns_by_the_loop_the_thread_or_both(void **state)
{
	uint64_t flushes, by_loop;
	run_waiters(false, true, LOOP_ALWAYS, &flushes, &by_loop);
	assert_int_equal(flushes, WAITERS / 5);
	assert_int_equal(by_loop, flushes);
	run_waiters(false, true, LOOP_NEVER, &flushes, &by_loop);
	assert_true(flushes >= 1);
	assert_int_equal(by_loop, 0);
	/* slower than the limit after the first: the thread takes over */
	run_waiters(false, true, LOOP_FIRST_ONLY, &flushes, &by_loop);
	assert_int_equal(by_loop, 1);
	assert_true(flushes > 1);
}

static void test_stop_answers_waiters_and_their_followers(void **state)
{
	uint64_t flushes, by_loop;
	run_waiters(true, false, LOOP_ALWAYS, &flushes, &by_loop);
	run_waiters(true, false, LOOP_NEVER, &flushes, &by_loop);
}

/* A loop that commits again at every turn and waits for each commit's
 * flush. */
struct busy {
	char *dir;
	struct event_base *base;
	struct qmgr_store *st;
	struct qmgr_flusher *flusher;
	struct event *again, *deadline;
	uint64_t committed, answered;
	size_t value_bytes; /* of each commit: 64 unless set */
};

static void on_busy_durable(void *arg, bool ok, const char *reason)
{
	struct busy *b = arg;
	assert_true(ok);
	b->answered++;
}

static void commit_and_wait(evutil_socket_t fd, short what, void *arg)
{
	struct busy *b = arg;
	struct buf err = BUF_INIT;
	size_t n = b->value_bytes ? b->value_bytes : 64;
	char *value = mem_zalloc(n);
	assert_true(qmgr_store_put_raw(b->st, QMGR_TABLE_META, "busy", 4, value, n, &err));
	free(value);
	buf_free(&err);
	b->committed++;
	qmgr_flusher_wait(b->flusher, on_busy_durable, b);
	struct timeval now = {0, 0};
	evtimer_add(b->again, &now);
}

static bool file_exists(const char *dir, const char *name)
{
	char *path = testutil_path(dir, name);
	bool exists = access(path, F_OK) == 0;
	free(path);
	return exists;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* A queue in a new directory, and an event loop that will commit again
 * at every turn once busy_go starts it. */
static void busy_open(struct busy *b, size_t value_bytes)
{
	struct buf err = BUF_INIT;
	b->dir = testutil_tmpdir();
	b->base = event_base_new();
	b->value_bytes = value_bytes;
	b->st = qmgr_store_open(b->dir, QMGR_OPEN_RECOVER, &err);
	assert_non_null(b->st);
	b->again = evtimer_new(b->base, commit_and_wait, b);
	b->deadline = evtimer_new(b->base, on_deadline, b->base);
	buf_free(&err);
}

static void busy_go(struct busy *b, int checkpoint_secs, int loop_max)
{
	struct buf err = BUF_INIT;
	b->flusher = qmgr_flusher_start(b->base, b->st, checkpoint_secs, loop_max, &err);
	assert_non_null(b->flusher);
	struct timeval now = {0, 0};
	evtimer_add(b->again, &now);
	buf_free(&err);
}

/* Runs the loop a tenth of a second at a time until done(b), for at most
 * tenths of them; whether done(b). */
static bool busy_run_until(struct busy *b, int tenths, bool (*done)(const struct busy *b))
{
	for (int tenth = 0; tenth < tenths && !done(b); tenth++) {
		struct timeval tv = {0, 100000};
		evtimer_add(b->deadline, &tv);
		event_base_dispatch(b->base);
	}
	return done(b);
}

static void busy_close(struct busy *b)
{
	event_free(b->again);
	event_free(b->deadline);
	event_base_free(b->base);
	qmgr_store_close(b->st);
	testutil_rmtree(b->dir);
	free(b->dir);
}

static bool first_log_removed(const struct busy *b)
{
	return !file_exists(b->dir, "log.0000000001");
}

static bool fourth_log_made(const struct busy *b)
{
	return file_exists(b->dir, "log.0000000004");
}

static bool all_answered(const struct busy *b)
{
	return b->answered == b->committed;
}

/* Checkpoints run beside commits that never stop: within a few seconds
 * of a 1 s interval one has run and removed the log files it no longer
 * needs, while the commits went on being answered. */
static void test_checkpoints_run_while_commits_never_stop(void **state)
{
	struct buf err = BUF_INIT;
	struct busy b = {0};
	busy_open(&b, 0);
	/* the log past its first files */
	char *filler = mem_zalloc(1024 * 1024);
	for (int i = 0; i < 25 && !file_exists(b.dir, "log.0000000003"); i++)
		assert_true(qmgr_store_put_raw(b.st, QMGR_TABLE_META, "filler", 6, filler, 1024 * 1024, &err));
	free(filler);
	assert_true(file_exists(b.dir, "log.0000000001"));
	busy_go(&b, 1, LOOP_ALWAYS);
	bool removed = busy_run_until(&b, 40, first_log_removed);
	uint64_t before = b.answered;
	event_del(b.again);
	qmgr_flusher_stop(b.flusher);
	assert_true(removed);
	assert_true(before > 100); /* the commits went on all along */
	busy_close(&b);
	buf_free(&err);
}

/* The flush thread syncs the log by its files (no Berkeley DB call)
 * while the loop's commits of 256 KB move the log on from file to file:
 * every commit is answered, by the thread's flushes alone. */
static void test_thread_flushes_follow_the_log_across_files(void **state)
{
	struct busy b = {0};
	busy_open(&b, 256 * 1024);
	busy_go(&b, 60, LOOP_NEVER);
	assert_true(busy_run_until(&b, 100, fourth_log_made));
	event_del(b.again);
	assert_true(busy_run_until(&b, 50, all_answered));
	uint64_t flushes, by_loop;
	qmgr_flusher_counts(b.flusher, &flushes, &by_loop);
	qmgr_flusher_stop(b.flusher);
	assert_true(flushes > 0);
	assert_int_equal(by_loop, 0);
	busy_close(&b);
}

int main(void)
{
	log_open("test_qmgr_flush", LOG_TO_STDERR, NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_waiter_answered_once_in_order),
	    cmocka_unit_test(test_waiters_in_turns_by_the_loop_the_thread_or_both),
	    cmocka_unit_test(test_stop_answers_waiters_and_their_followers),
	    cmocka_unit_test(test_checkpoints_run_while_commits_never_stop),
	    cmocka_unit_test(test_thread_flushes_follow_the_log_across_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
