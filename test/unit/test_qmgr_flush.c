/* test_qmgr_flush.c: unit tests of qmgr's group commit: every commit that
 * waits is answered exactly once, in order, from the event loop; a stop
 * answers what is still waiting, including commits made by the callbacks
 * themselves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "buf.h"
#include "log.h"
#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

#define WAITERS 50

struct run {
	struct event_base *base;
	struct qmgr_flusher *flusher;
	int answered[WAITERS];
	int order[WAITERS];
	int count;
	bool chain; /* the callback of waiter 0 waits once more */
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

static void run_waiters(bool stop_before_loop)
{
	char *dir = testutil_tmpdir();
	struct buf err = BUF_INIT;
	struct qmgr_store *st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	assert_non_null(st);
	struct run r = {.base = event_base_new(), .chain = stop_before_loop};
	r.flusher = qmgr_flusher_start(r.base, st, 60, &err);
	assert_non_null(r.flusher);
	for (int i = 0; i < WAITERS; i++) {
		ctxs[i] = (struct waiter_ctx){&r, i};
		qmgr_flusher_wait(r.flusher, on_durable, &ctxs[i]);
	}
	if (!stop_before_loop)
		event_base_dispatch(r.base);
	qmgr_flusher_stop(r.flusher);
	for (int i = 0; i < WAITERS; i++)
		assert_int_equal(r.answered[i], 1);
	/* Tickets are answered in the order they were taken. */
	for (int i = 1; i < WAITERS && !stop_before_loop; i++)
		assert_true(r.order[i] > r.order[i - 1]);
	if (stop_before_loop)
		assert_int_equal(r.count, WAITERS + 1);
	event_base_free(r.base);
	qmgr_store_close(st);
	testutil_rmtree(dir);
	free(dir);
	buf_free(&err);
}

static void test_every_waiter_answered_once_in_order(void **state)
{
	run_waiters(false);
}

static void test_stop_answers_waiters_and_their_followers(void **state)
{
	run_waiters(true);
}

int main(void)
{
	log_open("test_qmgr_flush", LOG_TO_STDERR, NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_waiter_answered_once_in_order),
	    cmocka_unit_test(test_stop_answers_waiters_and_their_followers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
