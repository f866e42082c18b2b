/* qmgr_flush.c: group commit.  The event loop commits each message
 * without an fsync (DB_TXN_WRITE_NOSYNC: the log records reach the
 * operating system, not the disk) and waits for a flush of the log: one
 * fsync makes every commit made so far durable, and the commits that
 * arrive while it runs share the next one.  So under load one fsync
 * serves many messages, and an idle queue still acknowledges a lone
 * message after a single fsync.
 *
 * Who flushes depends on how long a flush takes (a moving average of the
 * last few).  While flushes are quick, the loop flushes by itself at the
 * end of its turn, once the turn's commits are made: blocking for a
 * fraction of a millisecond costs less than handing the flush to a
 * thread and being woken when it ends, and the messages that arrive
 * meanwhile make the next group larger.  When the disk is slow, a flush
 * thread takes them, so that the loop goes on serving deliveries and
 * commands while the disk works; it tells the loop through a pipe, whose
 * event has the loop's first priority.  A busy loop has many callbacks
 * ready at once; rather than look for new events after each of them
 * (an epoll_wait each), the busiest callbacks ask qmgr_flusher_notice,
 * which reads one counter, and make the wake-up active themselves when a
 * flush has ended.
 *
 * Only the loop calls Berkeley DB (the store opens it without
 * DB_THREAD).  So the flush thread makes commits durable by syncing the
 * log's files itself (qmgr_store_flush_files), up to the end the loop
 * noted when it handed them over; and a periodic checkpoint is begun and
 * ended by the loop, with the long part between, the sync of every body
 * segment (tens of milliseconds under load), on a second thread.  The
 * loop's part (the checkpoint record, the dirty pages, the tables'
 * fsyncs) took 2–11 ms under load.
 *
 * Tickets order everything: each wait gets the next ticket; a flush
 * started after ticket t was issued covers every ticket up to t. */
#include "qmgr.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "mem.h"

#define CHECKPOINT_POLL_MILLIS 1000
/* The average's weight of the newest flush. */
#define FLUSH_TIME_WEIGHT 0.125

struct waiter {
	uint64_t ticket;
	qmgr_durable_fn fn;
	void *ctx;
};

/* What one flush achieved, handed from the thread to the loop. */
struct outcome {
	uint64_t upto;
	bool ok;
	char *reason;
};

struct qmgr_flusher {
	struct qmgr_store *st;
	int checkpoint_secs;
	struct timespec next_checkpoint; /* by the clock; sooner once the log has grown */
	struct event *checkpoint_poll;
	/* The checkpoint under way (its step under mu): the loop begins it,
	 * the thread syncs the segments, the loop ends it, the thread removes
	 * what it freed. */
	struct qmgr_checkpoint ck;
	enum checkpoint_step { CK_IDLE, CK_SYNC, CK_SYNCED, CK_REMOVE } ck_step;
	double loop_flush_max_micros; /* the loop flushes while the average is below */
	pthread_t thread, checkpointer;
	bool thread_started, checkpointer_started;
	int wake_pipe[2]; /* thread -> loop: outcomes are ready */
	struct event *wake;
	struct event *turn_end; /* the loop's own flush, once its turn's commits are made */

	/* Shared with the thread, under mu. */
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* tickets were issued, or stop */
	pthread_cond_t ck_cv;   /* a checkpoint step, or stop (for the checkpointer) */
	uint64_t issued;  /* the last ticket handed out */
	uint64_t flushed; /* every ticket up to this one has had its flush */
	bool thread_asked; /* the loop left the tickets up to noted to the thread */
	uint64_t noted;    /* the last ticket issued when the loop noted the log's end */
	double flush_micros; /* a flush's time, moving average */
	bool stopping;
	struct outcome *outcomes;
	size_t noutcomes;
	uint64_t flushes, flushed_tickets, flushes_by_loop;
	/* Outcomes added so far, also read without mu by
	 * qmgr_flusher_notice; the loop has taken seen of them. */
	_Atomic uint64_t posted;
	uint64_t seen;

	/* The loop's own: waiters in ticket order. */
	struct waiter *waiters;
	size_t nwaiters, cap;
};

/* ---- the thread ------------------------------------------------------------ */

static void add_outcome(struct qmgr_flusher *f, uint64_t upto, bool ok, const char *reason)
{
	f->outcomes = mem_reallocarray(f->outcomes, f->noutcomes + 1, sizeof(*f->outcomes));
	f->outcomes[f->noutcomes++] = (struct outcome){upto, ok, ok ? NULL : mem_strdup(reason)};
}

static void wake_loop(struct qmgr_flusher *f)
{
	char byte = 1;
	/* A full pipe already holds a wake-up: nothing is lost. */
	if (write(f->wake_pipe[1], &byte, 1) < 0 && errno != EAGAIN)
		log_error("cannot wake the event loop: %s", strerror(errno));
}

static double micros_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) * 1e6 + (double)(now.tv_nsec - start->tv_nsec) / 1e3;
}

/* Flushes the log for the tickets up to target, from either side: the
 * loop through Berkeley DB, the thread by the log's files.  Called with
 * mu held; returns with it held, the counts and the average updated. */
static bool flush_locked(struct qmgr_flusher *f, uint64_t target, bool by_thread, struct buf *err)
{
	pthread_mutex_unlock(&f->mu);
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	bool ok = by_thread ? qmgr_store_flush_files(f->st, err) : qmgr_store_flush(f->st, err);
	double took = micros_since(&start);
	pthread_mutex_lock(&f->mu);
	f->flush_micros += (took - f->flush_micros) * FLUSH_TIME_WEIGHT;
	f->flushes++;
	if (target > f->flushed) {
		f->flushed_tickets += target - f->flushed;
		f->flushed = target;
	}
	return ok;
}

static bool flushes_are_quick(const struct qmgr_flusher *f)
{
	return f->flush_micros < f->loop_flush_max_micros;
}

/* The loop hands the tickets issued so far to the thread, with the log's
 * end their commits reached.  Called with mu held. */
static void ask_thread(struct qmgr_flusher *f)
{
	qmgr_store_note_log_end(f->st);
	f->noted = f->issued;
	f->thread_asked = true;
	pthread_cond_signal(&f->cv);
}

/* Called with mu held; returns with it held. */
static void flush_upto(struct qmgr_flusher *f, uint64_t target)
{
	struct buf err = BUF_INIT;
	bool ok = flush_locked(f, target, true, &err);
	add_outcome(f, target, ok, buf_cstr(&err));
	atomic_fetch_add_explicit(&f->posted, 1, memory_order_release);
	buf_free(&err);
	wake_loop(f);
}


struct timespec qmgr_deadline_after(long millis)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += millis / 1000;
	ts.tv_nsec += (millis % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* Flushes what the loop left to it.  Those tickets are flushed here even
 * when flushes have become quick meanwhile (the loop flushes only the
 * ones it keeps), so none is left waiting; tickets issued after the
 * loop's note are the loop's own. */
static void *flusher_thread(void *arg)
{
	struct qmgr_flusher *f = arg;
	pthread_mutex_lock(&f->mu);
	for (;;) {
		if (f->thread_asked && f->noted > f->flushed) {
			f->thread_asked = false;
			flush_upto(f, f->noted);
			continue;
		}
		if (f->stopping)
			break;
		pthread_cond_wait(&f->cv, &f->mu);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static bool time_reached(const struct timespec *t)
{
	struct timespec now = qmgr_deadline_after(0);
	return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

/* The checkpoint's slow steps, between the loop's. */
static void *checkpointer_thread(void *arg)
{
	struct qmgr_flusher *f = arg;
	pthread_mutex_lock(&f->mu);
	while (!f->stopping) {
		if (f->ck_step == CK_SYNC) {
			pthread_mutex_unlock(&f->mu);
			qmgr_store_checkpoint_sync(f->st, &f->ck);
			pthread_mutex_lock(&f->mu);
			f->ck_step = CK_SYNCED;
			atomic_fetch_add_explicit(&f->posted, 1, memory_order_release);
			wake_loop(f);
		} else if (f->ck_step == CK_REMOVE) {
			pthread_mutex_unlock(&f->mu);
			qmgr_store_checkpoint_remove(f->st, &f->ck);
			pthread_mutex_lock(&f->mu);
			f->ck_step = CK_IDLE;
		} else {
			pthread_cond_wait(&f->ck_cv, &f->mu);
		}
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

/* Called with mu held. */
static void ask_checkpointer(struct qmgr_flusher *f, enum checkpoint_step step)
{
	f->ck_step = step;
	pthread_cond_signal(&f->ck_cv);
}

/* Every checkpoint_secs, or sooner once the log has grown enough
 * (looked at every CHECKPOINT_POLL_MILLIS), the loop begins a checkpoint
 * and hands its segments' sync to the thread. */
static void on_checkpoint_poll(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_flusher *f = arg;
	pthread_mutex_lock(&f->mu);
	bool idle = f->ck_step == CK_IDLE;
	pthread_mutex_unlock(&f->mu);
	if (!idle || !(time_reached(&f->next_checkpoint) || qmgr_store_checkpoint_due(f->st)))
		return;
	struct buf err = BUF_INIT;
	if (qmgr_store_checkpoint_begin(f->st, &f->ck, &err)) {
		pthread_mutex_lock(&f->mu);
		ask_checkpointer(f, CK_SYNC);
		pthread_mutex_unlock(&f->mu);
	} else {
		log_error("%s", buf_cstr(&err));
		f->next_checkpoint = qmgr_deadline_after(f->checkpoint_secs * 1000L);
	}
	buf_free(&err);
}

/* Once the thread has synced the segments, the loop makes the
 * checkpoint, and the thread removes what it freed (here when the thread
 * is gone). */
static void end_checkpoint(struct qmgr_flusher *f)
{
	pthread_mutex_lock(&f->mu);
	bool synced = f->ck_step == CK_SYNCED;
	pthread_mutex_unlock(&f->mu);
	if (!synced)
		return;
	struct buf err = BUF_INIT;
	if (!qmgr_store_checkpoint_end(f->st, &f->ck, &err))
		log_error("%s", buf_cstr(&err));
	buf_free(&err);
	f->next_checkpoint = qmgr_deadline_after(f->checkpoint_secs * 1000L);
	pthread_mutex_lock(&f->mu);
	bool inline_remove = !f->checkpointer_started;
	if (inline_remove)
		f->ck_step = CK_IDLE;
	else
		ask_checkpointer(f, CK_REMOVE);
	pthread_mutex_unlock(&f->mu);
	if (inline_remove)
		qmgr_store_checkpoint_remove(f->st, &f->ck);
}

/* ---- the loop's side ---------------------------------------------------------- */

/* Answers the waiters whose tickets an outcome covers, in order. */
static void settle(struct qmgr_flusher *f, const struct outcome *o)
{
	size_t n = 0;
	while (n < f->nwaiters && f->waiters[n].ticket <= o->upto)
		n++;
	if (n == 0)
		return;
	/* Copy first: a callback may add waiters. */
	struct waiter *due = mem_memdup(f->waiters, n * sizeof(*due));
	memmove(f->waiters, f->waiters + n, (f->nwaiters - n) * sizeof(*f->waiters));
	f->nwaiters -= n;
	for (size_t i = 0; i < n; i++)
		due[i].fn(due[i].ctx, o->ok, o->reason);
	free(due);
}

static void drain_outcomes(struct qmgr_flusher *f)
{
	pthread_mutex_lock(&f->mu);
	struct outcome *list = f->outcomes;
	size_t n = f->noutcomes;
	f->outcomes = NULL;
	f->noutcomes = 0;
	f->seen = atomic_load_explicit(&f->posted, memory_order_relaxed);
	pthread_mutex_unlock(&f->mu);
	for (size_t i = 0; i < n; i++) {
		settle(f, &list[i]);
		free(list[i].reason);
	}
	free(list);
	end_checkpoint(f);
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	/* a short read has emptied the pipe */
	char bytes[64];
	while (read(fd, bytes, sizeof(bytes)) == (ssize_t)sizeof(bytes))
		continue;
	drain_outcomes(arg);
}

void qmgr_flusher_notice(struct qmgr_flusher *f)
{
	if (f != NULL && atomic_load_explicit(&f->posted, memory_order_acquire) != f->seen)
		event_active(f->wake, EV_READ, 0);
}

void qmgr_flusher_wait(struct qmgr_flusher *f, qmgr_durable_fn fn, void *ctx)
{
	if (f->nwaiters == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 64;
		f->waiters = mem_reallocarray(f->waiters, f->cap, sizeof(*f->waiters));
	}
	pthread_mutex_lock(&f->mu);
	uint64_t ticket = ++f->issued;
	bool by_loop = flushes_are_quick(f);
	if (!by_loop)
		ask_thread(f);
	pthread_mutex_unlock(&f->mu);
	f->waiters[f->nwaiters++] = (struct waiter){ticket, fn, ctx};
	if (by_loop)
		event_active(f->turn_end, 0, 0);
}

/* The end of the loop's turn: its commits are made, and the loop
 * flushes them itself, unless flushes have become slow meanwhile. */
static void on_turn_end(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_flusher *f = arg;
	pthread_mutex_lock(&f->mu);
	uint64_t target = f->issued;
	if (target <= f->flushed) {
		pthread_mutex_unlock(&f->mu);
		return; /* the thread's flush covered them: its outcome is on the way */
	}
	if (!flushes_are_quick(f)) {
		ask_thread(f);
		pthread_mutex_unlock(&f->mu);
		return;
	}
	struct buf err = BUF_INIT;
	bool ok = flush_locked(f, target, false, &err);
	f->flushes_by_loop++;
	pthread_mutex_unlock(&f->mu);
	struct outcome o = {target, ok, ok ? NULL : (char *)buf_cstr(&err)};
	settle(f, &o);
	buf_free(&err);
}

static bool make_pipe(int fds[2], struct buf *err)
{
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		buf_printf(err, "pipe: %s", strerror(errno));
		return false;
	}
	return true;
}

static void flusher_free(struct qmgr_flusher *f)
{
	if (f->wake)
		event_free(f->wake);
	if (f->turn_end)
		event_free(f->turn_end);
	if (f->checkpoint_poll)
		event_free(f->checkpoint_poll);
	if (f->ck_step == CK_REMOVE)
		qmgr_store_checkpoint_remove(f->st, &f->ck);
	buf_free(&f->ck.err);
	if (f->wake_pipe[0] >= 0) {
		close(f->wake_pipe[0]);
		close(f->wake_pipe[1]);
	}
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv);
	pthread_cond_destroy(&f->ck_cv);
	free(f->waiters);
	free(f);
}

/* The checkpointer first, so that no checkpoint runs once the flush
 * thread is gone. */
static void stop_threads(struct qmgr_flusher *f)
{
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_cond_signal(&f->ck_cv);
	pthread_cond_signal(&f->cv);
	pthread_mutex_unlock(&f->mu);
	if (f->checkpointer_started)
		pthread_join(f->checkpointer, NULL);
	if (f->thread_started)
		pthread_join(f->thread, NULL);
	f->checkpointer_started = f->thread_started = false;
}

struct qmgr_flusher *qmgr_flusher_start(struct event_base *base, struct qmgr_store *st, int checkpoint_secs,
                                        int loop_flush_max_micros, struct buf *err)
{
	struct qmgr_flusher *f = mem_zalloc(sizeof(*f));
	f->st = st;
	f->loop_flush_max_micros = loop_flush_max_micros;
	f->checkpoint_secs = checkpoint_secs > 0 ? checkpoint_secs : 1;
	f->next_checkpoint = qmgr_deadline_after(f->checkpoint_secs * 1000L);
	buf_init(&f->ck.err);
	f->wake_pipe[0] = f->wake_pipe[1] = -1;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	pthread_cond_init(&f->ck_cv, NULL);
	if (!make_pipe(f->wake_pipe, err)) {
		flusher_free(f);
		return NULL;
	}
	f->wake = event_new(base, f->wake_pipe[0], EV_READ | EV_PERSIST, on_wake, f);
	/* after every callback ready in the turn (the turn's commit among them) */
	f->turn_end = event_new(base, -1, 0, on_turn_end, f);
	int rc = f->wake && f->turn_end ? event_priority_set(f->wake, QMGR_PRIORITY_FIRST) : -1;
	if (rc == 0)
		rc = event_priority_set(f->turn_end, event_base_get_npriorities(base) - 1);
	if (rc == 0)
		rc = event_add(f->wake, NULL);
	struct timeval poll = {CHECKPOINT_POLL_MILLIS / 1000, (CHECKPOINT_POLL_MILLIS % 1000) * 1000};
	if (rc == 0)
		f->checkpoint_poll = event_new(base, -1, EV_PERSIST, on_checkpoint_poll, f);
	if (rc == 0)
		rc = f->checkpoint_poll ? event_add(f->checkpoint_poll, &poll) : -1;
	if (rc == 0)
		rc = pthread_create(&f->checkpointer, NULL, checkpointer_thread, f);
	f->checkpointer_started = rc == 0;
	if (rc == 0)
		rc = pthread_create(&f->thread, NULL, flusher_thread, f);
	f->thread_started = rc == 0;
	if (rc != 0) {
		buf_printf(err, "cannot start the flush threads: %s", rc > 0 ? strerror(rc) : "event setup failed");
		stop_threads(f);
		flusher_free(f);
		return NULL;
	}
	return f;
}

void qmgr_flusher_counts(struct qmgr_flusher *f, uint64_t *flushes, uint64_t *by_loop)
{
	pthread_mutex_lock(&f->mu);
	*flushes = f->flushes;
	*by_loop = f->flushes_by_loop;
	pthread_mutex_unlock(&f->mu);
}

void qmgr_flusher_stop(struct qmgr_flusher *f)
{
	if (f == NULL)
		return;
	stop_threads(f);
	drain_outcomes(f);
	/* Callbacks may have committed more (the next message a client had
	 * sent): flush those here, the thread is gone. */
	while (f->nwaiters > 0) {
		struct buf err = BUF_INIT;
		pthread_mutex_lock(&f->mu);
		uint64_t target = f->issued;
		bool ok = flush_locked(f, target, false, &err);
		pthread_mutex_unlock(&f->mu);
		struct outcome o = {target, ok, ok ? NULL : (char *)buf_cstr(&err)};
		settle(f, &o);
		buf_free(&err);
	}
	if (f->flushes)
		log_info("group commit: %llu commits in %llu flushes, %.1f per flush (%llu by the event loop)",
		         (unsigned long long)f->flushed_tickets, (unsigned long long)f->flushes,
		         (double)f->flushed_tickets / (double)f->flushes, (unsigned long long)f->flushes_by_loop);
	flusher_free(f);
}
