/* qmgr_sched.c: the scheduler.  It decides when a queue (domain/vmta)
 * gets a delivery job and applies every result smtp sends back.
 *
 * Memory stays bounded: a queue in memory is its name, its settings and
 * a few counters; recipients stay in the database (due.db) until a job
 * takes them, and only the recipients of jobs in flight are held.  A
 * queue's earliest due time is cached, so a tick looks at the database
 * only for queues that have something due.
 *
 * Every result is applied in one transaction with its accounting record
 * (qmgr_store_apply).  A recipient is delivered at most once by qmgr's
 * choice: it is never in two jobs at once, and a final state is never
 * changed.  Before a job goes to smtp its recipients are marked in flight
 * (job ID, and a due time in-flight-grace ahead) in the database, so a
 * qmgr that restarts, or loses its smtp connection, does not send them
 * again while smtp may still be delivering them: smtp replays its results
 * (qmgr_sched_replay), which count while the recipient is still in flight
 * for that job.  Only a recipient whose smtp died mid-transaction is sent
 * again, once the grace period is over. */
#include "qmgr.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "value.h"

#define TICK_SECS 1
#define JOBS_PER_PASS 64
/* How much one job takes from a queue: what smtp holds in memory. */
#define JOB_MAX_RCPTS 500
#define JOB_MAX_MSGS 100
#define JOB_MAX_BYTES (16u * 1024 * 1024)
#define HASH_BUCKETS 4096
/* The bounces of a message that come within this long of its first one
 * share one DSN (sooner when no recipient of it is left waiting). */
#define DSN_GROUP_SECS 10

struct qmgr_sched {
	struct event_base *base;
	struct qmgr_store *st;
	const struct conf *conf;
	struct qmgr_smtp *smtp;
	struct qmgr_smtp *local; /* the local agent, for type file queues */
	struct event *tick;
	/* the queues found at start whose recipients are still to count,
	 * once the recipients held by an earlier start are due again */
	struct qmgr_squeue **to_count;
	size_t ncount, counted;
	struct event *count_ev;
	bool holding_earlier;                      /* the recipients table is still being read */
	struct buf hold_from;                      /* where to read it on */
	size_t held_earlier;                       /* recipients found held by an earlier start */
	int64_t this_start;                        /* this start's job IDs: this_start + a count */
	struct qmgr_squeue *queues;                /* by priority, highest first */
	struct qmgr_squeue *queues_tail;           /* its last: most queues join at the end */
	struct qmgr_squeue *by_name[HASH_BUCKETS]; /* the same, hashed */
	struct inflight *inflight[HASH_BUCKETS];   /* recipients in jobs */
	struct job *jobs;                          /* running, the newest first */
	struct job *last_found;                    /* by job_find: a job's results come together */
	int64_t next_job_id;
	uint64_t fresh_batches;                  /* enqueue batches begun (qmgr_fresh.batch) */
	int64_t grace;                           /* in-flight-grace */
	struct qmgr_patterns *patterns;          /* <smtp-pattern-list> blocks */
	uint64_t mark_jobs, mark_rcpts, mark_us; /* what marking in flight cost */
	uint64_t fresh_jobs, fresh_rcpts;        /* jobs that needed no mark */
	uint64_t total_max_out;
	uint64_t jobs_running;
	struct qmgr_counters counters;
	qmgr_bounce_fn bounce;
	qmgr_dsn_flush_fn dsn_flush;
	void *bounce_ctx;
	struct dsn_wait *dsn_waits;              /* messages with a pending DSN */
	struct dsn_wait *dsn_hash[HASH_BUCKETS]; /* the same, by queue ID */
	bool loaded;
	bool quiesced;                   /* stopping: no job starts any more */
	bool batching;                   /* results wait in pending for one transaction */
	struct pending_result **pending; /* in the order they came */
	size_t npending;
};

/* A result waiting for the batch's transaction; it owns smtp's frame,
 * which its qid and outcome point into. */
struct pending_result {
	struct qmgr_squeue *q;
	struct ipc_msg frame;
	const char *qid;
	size_t index;
	struct qmgr_outcome o;
};

/* A recipient in a job: never given to a second job at once. */
struct inflight {
	char qid[QMGR_QID_SIZE];
	size_t index;
	struct inflight *next;
};

/* A message whose bounces wait for their DSN (dsns.db in the database). */
struct dsn_wait {
	char qid[QMGR_QID_SIZE];
	int64_t since;
	struct dsn_wait *next, *hash_next;
};

struct job_rcpt {
	char qid[QMGR_QID_SIZE];
	size_t index;
	int64_t received; /* the message's arrival, for bounce-after */
	bool answered;
};

/* A bounce waiting for the job's end (or the end of a scheduler pass,
 * for expiries), applied with the job's other bounces. */
struct job_bounce {
	char qid[QMGR_QID_SIZE];
	size_t index;
	char *reason;
	struct ipc_msg detail; /* smtp's result frame; empty for an expiry */
	bool has_detail;
};

struct job {
	int64_t id;
	struct qmgr_squeue *queue;
	struct qmgr_smtp *agent; /* the connection it went to */
	struct job_rcpt *rcpts;
	size_t nrcpt;
	struct job_bounce *bounces;
	size_t nbounce;
	size_t next_result; /* where the next result is looked for in rcpts */
	struct job *next, *prev;
};

static uint32_t hash_str(const char *s, size_t index)
{
	uint32_t h = (qmgr_name_hash(s) ^ (uint32_t)index) * 16777619u;
	return h % HASH_BUCKETS;
}

/* ---- recipients in flight ---------------------------------------------------- */

static struct inflight **inflight_slot(struct qmgr_sched *s, const char *qid, size_t index)
{
	struct inflight **p = &s->inflight[hash_str(qid, index)];
	while (*p && !((*p)->index == index && strcmp((*p)->qid, qid) == 0))
		p = &(*p)->next;
	return p;
}

static bool inflight_has(struct qmgr_sched *s, const char *qid, size_t index)
{
	return *inflight_slot(s, qid, index) != NULL;
}

static void inflight_add(struct qmgr_sched *s, const char *qid, size_t index)
{
	struct inflight *f = mem_zalloc(sizeof(*f));
	memcpy(f->qid, qid, QMGR_QID_SIZE);
	f->index = index;
	struct inflight **head = &s->inflight[hash_str(qid, index)];
	f->next = *head;
	*head = f;
}

static void inflight_remove(struct qmgr_sched *s, const char *qid, size_t index)
{
	struct inflight **p = inflight_slot(s, qid, index);
	if (*p) {
		struct inflight *f = *p;
		*p = f->next;
		free(f);
	}
}

/* ---- queues ---------------------------------------------------------------- */

/* The queue's settings, resolved once: its <domain> blocks and vmta. */
static void queue_configure(struct qmgr_sched *s, struct qmgr_squeue *q)
{
	const char *slash = strchr(q->name, '/');
	char *domain = mem_strndup(q->name, (size_t)(slash - q->name));
	const char *vmta = strcmp(slash + 1, "{default}") == 0 ? NULL : slash + 1;
	struct conf_settings *cs = conf_resolve_domain(s->conf, domain, vmta);
	/* A virtual MTA the configuration does not (or no longer) name:
	 * the domain's own settings; smtp reports the unknown vmta. */
	if (cs == NULL)
		cs = conf_resolve_domain(s->conf, domain, NULL);
	q->max_out = conf_get_uint(cs, "max-smtp-out");
	q->local = qmgr_local_queue(cs);
	q->priority = conf_get_uint(cs, "queue-priority");
	q->rate = conf_get_rate(cs, "max-msg-rate");
	q->retry_rcpt = conf_get_interval(cs, "retry-recipients-after");
	q->bounce_after = conf_get_interval(cs, "bounce-after");
	q->delay_every = conf_get_interval(cs, "notify-of-delay-every");
	const struct conf_value *retry = conf_get_value(cs, "retry-after");
	q->retry = *retry->intervals;
	if (q->retry.count == 0) {
		q->retry.count = 1;
		q->retry.seconds[0] = 600;
	}
	qmgr_backoff_configure(q, cs, s->patterns);
	conf_settings_free(cs);
	free(domain);
}

struct qmgr_squeue *qmgr_sched_find(struct qmgr_sched *s, const char *name)
{
	struct qmgr_squeue *q = s->by_name[hash_str(name, 0)];
	while (q && strcmp(q->name, name) != 0)
		q = q->hash_next;
	return q;
}

static struct qmgr_squeue *queue_add(struct qmgr_sched *s, const char *name, const struct qmgr_queue_state *state)
{
	struct qmgr_squeue *q = mem_zalloc(sizeof(*q));
	q->name = mem_strdup(name);
	q->state = *state;
	q->state.connections = 0;
	queue_configure(s, q);
	struct qmgr_squeue **h = &s->by_name[hash_str(name, 0)];
	q->hash_next = *h;
	*h = q;
	/* after every queue of its priority or higher: at the end, unless
	 * it outranks the last (thousands of queues mostly share one) */
	struct qmgr_squeue **p = &s->queues;
	if (s->queues_tail && s->queues_tail->priority >= q->priority)
		p = &s->queues_tail->next;
	while (*p && (*p)->priority >= q->priority)
		p = &(*p)->next;
	q->next = *p;
	*p = q;
	if (q->next == NULL)
		s->queues_tail = q;
	return q;
}

static bool count_one(void *ctx, const char *qid, size_t index, int64_t due)
{
	(*(uint64_t *)ctx)++;
	return true;
}

/* A job's recipients still without a result. */
static size_t unanswered(const struct job *j)
{
	size_t n = 0;
	for (size_t i = 0; i < j->nrcpt; i++)
		n += !j->rcpts[i].answered;
	return n;
}

/* This start's recipients in flight in a queue: they have no due entry
 * while their jobs run. */
static uint64_t in_flight_in(const struct qmgr_sched *s, const struct qmgr_squeue *q)
{
	uint64_t n = 0;
	for (const struct job *j = s->jobs; j; j = j->next)
		if (j->queue == q)
			n += unanswered(j);
	return n;
}

/* One step of giving the recipients an earlier start left in flight
 * their due entries (qmgr_store_hold_earlier); false once all are read,
 * or on an error, which leaves the rest held until the next start. */
#define HOLD_EARLIER_STEP 512
static bool hold_earlier_step(struct qmgr_sched *s)
{
	size_t held = 0;
	bool done = false;
	struct buf err = BUF_INIT;
	enum qmgr_store_status status =
	    qmgr_store_hold_earlier(s->st, s->this_start, &s->hold_from, HOLD_EARLIER_STEP, &held, &done, &err);
	s->held_earlier += held;
	if (status != QMGR_STORE_OK) {
		log_error("cannot read the recipients left in flight by an earlier start (held until the next): %s",
		          buf_cstr(&err));
		done = true;
	}
	buf_free(&err);
	if (done && s->held_earlier)
		log_info("%zu recipients in flight before this start: due after in-flight-grace, or at smtp's replay",
		         s->held_earlier);
	return !done;
}

/* After a start, in slices of ~20 ms so that qmgr serves from the first
 * moment even with a million recipients: first the recipients an
 * earlier start left in flight get their due entries, then the queues
 * found at start are counted from due.db (and this start's jobs).  A
 * count replaces what enqueues and results did to the queue meanwhile:
 * the walk sees the database as it is now. */
static void count_slice(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_sched *s = arg;
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		if (s->holding_earlier) {
			s->holding_earlier = hold_earlier_step(s);
			clock_gettime(CLOCK_MONOTONIC, &now);
			continue;
		}
		if (s->counted == s->ncount) {
			log_info("%zu queues counted", s->ncount);
			return;
		}
		struct qmgr_squeue *q = s->to_count[s->counted++];
		uint64_t n = 0;
		struct buf err = BUF_INIT;
		if (!qmgr_store_walk_queue(s->st, q->name, count_one, &n, &err))
			log_error("queue %s: %s", q->name, buf_cstr(&err));
		buf_free(&err);
		q->rcpts = n + in_flight_in(s, q);
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < 20);
	struct timeval zero = {0, 0};
	evtimer_add(s->count_ev, &zero);
}

static bool load_queue(void *ctx, const char *name, const struct qmgr_queue_state *state)
{
	struct qmgr_sched *s = ctx;
	struct qmgr_squeue *q = qmgr_sched_find(s, name);
	if (q == NULL)
		q = queue_add(s, name, state);
	s->to_count = mem_reallocarray(s->to_count, s->ncount + 1, sizeof(*s->to_count));
	s->to_count[s->ncount++] = q;
	return true;
}

void qmgr_sched_queued(struct qmgr_sched *s, const char *queue, uint64_t n)
{
	struct qmgr_squeue *q = qmgr_sched_find(s, queue);
	if (q == NULL) {
		struct qmgr_queue_state fresh = {0};
		q = queue_add(s, queue, &fresh);
	}
	q->rcpts += n;
	qmgr_sched_count(s, QMGR_IN_RCPTS, n);
	q->next_due = 0; /* unknown: look again */
	qmgr_sched_kick(s);
}

void qmgr_sched_removed(struct qmgr_sched *s, struct qmgr_squeue *q, uint64_t n)
{
	q->rcpts = q->rcpts > n ? q->rcpts - n : 0;
}

static bool save_queue(struct qmgr_sched *s, struct qmgr_squeue *q, const struct ipc_msg *detail, const char *reason)
{
	struct buf err = BUF_INIT;
	enum qmgr_store_status status =
	    qmgr_store_put_queue(s->st, q->name, &q->state, detail, reason, time(NULL), &err);
	if (status != QMGR_STORE_OK)
		log_error("queue %s: cannot save its state: %s", q->name, buf_cstr(&err));
	buf_free(&err);
	return status == QMGR_STORE_OK;
}

/* ---- retry policy ---------------------------------------------------------- */

/* retry-after is a list: the n-th failure in a row waits the n-th
 * interval, and the last one repeats. */
static int64_t retry_interval(const struct qmgr_squeue *q, uint64_t failures)
{
	const struct value_interval_list *retry = qmgr_backoff_retry(q);
	size_t i = failures == 0 ? 0 : failures - 1;
	if (i >= retry->count)
		i = retry->count - 1;
	return retry->seconds[i];
}

/* ---- mode ------------------------------------------------------------------- */

static bool save_queue(struct qmgr_sched *s, struct qmgr_squeue *q, const struct ipc_msg *detail, const char *reason);

/* Enters or leaves backoff mode; to_normal_after (seconds, -1 for the
 * queue's backoff-to-normal-after) bounds a backoff. */
static bool set_mode(struct qmgr_sched *s, struct qmgr_squeue *q, bool backoff, int64_t to_normal_after,
                     const char *why)
{
	if (to_normal_after < 0)
		to_normal_after = q->backoff.to_normal_after;
	int64_t until = backoff && to_normal_after != VALUE_NEVER ? time(NULL) + to_normal_after : 0;
	if (q->state.backoff == backoff && q->state.backoff_until == until)
		return true;
	bool changed = q->state.backoff != backoff;
	q->state.backoff = backoff;
	q->state.backoff_until = until;
	if (changed) {
		log_info("queue %s: %s backoff mode%s%s", q->name, backoff ? "enters" : "leaves", why ? ": " : "",
		         why ? why : "");
		qmgr_backoff_notify(s, s->conf, q, why);
	}
	q->next_due = 0;
	qmgr_sched_kick(s);
	return save_queue(s, q, NULL, NULL);
}

/* A reply smtp reported for the queue: its smtp-pattern-list may switch
 * the mode; a delivery ends backoff with
 * backoff-to-normal-after-delivery. */
static void observe_reply(struct qmgr_sched *s, struct qmgr_squeue *q, const char *reply, bool delivered)
{
	int64_t after;
	enum qmgr_mode_action a = qmgr_patterns_match(q->backoff.patterns, reply, &after);
	if (a == QMGR_MODE_BACKOFF)
		set_mode(s, q, true, after, reply);
	else if (a == QMGR_MODE_NORMAL && q->state.backoff)
		set_mode(s, q, false, -1, reply);
	else if (delivered && q->state.backoff && q->backoff.to_normal_on_delivery)
		set_mode(s, q, false, -1, "a delivery (backoff-to-normal-after-delivery)");
}

/* backoff-to-normal-after has passed. */
static void check_backoff_end(struct qmgr_sched *s, struct qmgr_squeue *q, int64_t now)
{
	if (q->state.backoff && q->state.backoff_until && now >= q->state.backoff_until)
		set_mode(s, q, false, -1, "backoff-to-normal-after");
}

bool qmgr_sched_set_mode(struct qmgr_sched *s, struct qmgr_squeue *q, bool backoff, const char *why)
{
	return set_mode(s, q, backoff, -1, why);
}

static bool expired(const struct qmgr_squeue *q, int64_t received, int64_t now)
{
	return q->bounce_after != VALUE_NEVER && now - received >= q->bounce_after;
}

/* ---- applying outcomes ------------------------------------------------------- */

/* ---- DSNs waiting for their message's other failures ------------------------- */

static struct dsn_wait **dsn_wait_slot(struct qmgr_sched *s, const char *qid)
{
	struct dsn_wait **p = &s->dsn_hash[hash_str(qid, 0)];
	while (*p && strcmp((*p)->qid, qid) != 0)
		p = &(*p)->hash_next;
	return p;
}

static void dsn_wait_add(struct qmgr_sched *s, const char *qid, int64_t since)
{
	struct dsn_wait **slot = dsn_wait_slot(s, qid);
	if (*slot)
		return;
	struct dsn_wait *w = mem_zalloc(sizeof(*w));
	memcpy(w->qid, qid, QMGR_QID_SIZE);
	w->since = since;
	w->next = s->dsn_waits;
	s->dsn_waits = w;
	*slot = w;
}

static void dsn_wait_unhash(struct qmgr_sched *s, struct dsn_wait *w)
{
	struct dsn_wait **slot = dsn_wait_slot(s, w->qid);
	if (*slot == w)
		*slot = w->hash_next;
}

static bool dsn_ready(struct qmgr_sched *s, const struct dsn_wait *w, int64_t now)
{
	if (now - w->since >= DSN_GROUP_SECS)
		return true;
	bool final = false;
	struct buf err = BUF_INIT;
	if (!qmgr_store_message_final(s->st, w->qid, &final, &err))
		log_error("%s: %s", w->qid, buf_cstr(&err));
	buf_free(&err);
	return final;
}

/* Queues the DSNs whose messages have no recipient left waiting, or
 * whose first bounce is DSN_GROUP_SECS old. */
static void dsn_flush_due(struct qmgr_sched *s, int64_t now)
{
	for (struct dsn_wait **p = &s->dsn_waits; *p;) {
		struct dsn_wait *w = *p;
		if (!dsn_ready(s, w, now)) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		dsn_wait_unhash(s, w);
		if (s->dsn_flush)
			s->dsn_flush(s->bounce_ctx, w->qid);
		free(w);
	}
}

static bool load_dsn_wait(void *ctx, const char *qid, int64_t since)
{
	dsn_wait_add(ctx, qid, since);
	return true;
}

/* What a recorded outcome changes in memory: counters, the queue's
 * next due time, the wait for a DSN. */
static void outcome_recorded(struct qmgr_sched *s, struct qmgr_squeue *q, const char *qid, size_t index,
                             const struct qmgr_outcome *o, int64_t now)
{
	log_info("%s: recipient %zu, queue %s: %s: %s", qid, index, q->name, qmgr_rcpt_state_name(o->state),
	         o->result ? o->result : "");
	if (o->state != QMGR_RCPT_DEFERRED)
		qmgr_sched_removed(s, q, 1);
	if (o->state == QMGR_RCPT_DELIVERED) {
		s->counters.delivered++;
		qmgr_sched_count(s, QMGR_OUT_RCPTS, 1);
		q->delivered++;
	} else if (o->state == QMGR_RCPT_BOUNCED) {
		s->counters.bounced++;
		q->bounced++;
		if (o->dsn)
			dsn_wait_add(s, qid, now);
	} else {
		s->counters.deferred++;
		q->deferred++;
		if (o->next_attempt < q->next_due || q->next_due == 0)
			q->next_due = o->next_attempt;
	}
}

/* Records an outcome; a bounce's DSN becomes pending with it. */
static void apply_outcome(struct qmgr_sched *s, struct qmgr_squeue *q, const char *qid, size_t index,
                          const struct qmgr_outcome *o)
{
	struct buf err = BUF_INIT;
	bool changed = false;
	int64_t now = time(NULL);
	enum qmgr_store_status status = qmgr_store_apply(s->st, qid, index, o, now, &changed, &err);
	if (status != QMGR_STORE_OK)
		log_error("%s: recipient %zu: cannot record the outcome: %s", qid, index, buf_cstr(&err));
	else if (changed)
		outcome_recorded(s, q, qid, index, o, now);
	buf_free(&err);
}

/* ---- results in batches ------------------------------------------------------- */

static void pending_free(struct pending_result *p)
{
	ipc_msg_free(&p->frame);
	free(p);
}

/* Applies the waiting results in one transaction; should that fail,
 * one by one, so that one bad result does not hold back the others. */
static void flush_results(struct qmgr_sched *s)
{
	size_t n = s->npending;
	if (n == 0)
		return;
	struct qmgr_apply_item *items = mem_reallocarray(NULL, n, sizeof(*items));
	for (size_t i = 0; i < n; i++)
		items[i] = (struct qmgr_apply_item){s->pending[i]->qid, s->pending[i]->index, &s->pending[i]->o, false};
	struct buf err = BUF_INIT;
	int64_t now = time(NULL);
	bool together = qmgr_store_apply_many(s->st, items, n, now, &err) == QMGR_STORE_OK;
	for (size_t i = 0; i < n; i++) {
		struct pending_result *p = s->pending[i];
		if (!together)
			apply_outcome(s, p->q, p->qid, p->index, &p->o);
		else if (items[i].changed)
			outcome_recorded(s, p->q, p->qid, p->index, &p->o, now);
		pending_free(p);
	}
	free(items);
	buf_free(&err);
	s->npending = 0;
}

/* Keeps a result for the batch, taking over smtp's frame m. */
static void pending_add(struct qmgr_sched *s, struct qmgr_squeue *q, size_t index, const struct qmgr_outcome *o,
                        struct ipc_msg *m)
{
	struct pending_result *p = mem_zalloc(sizeof(*p));
	p->q = q;
	p->frame = *m;
	m->store = NULL; /* the strings now belong to p->frame */
	p->qid = ipc_msg_str(&p->frame, IPC_ATTR_QUEUE_ID);
	p->index = index;
	p->o = *o;
	if (o->detail == m)
		p->o.detail = &p->frame;
	s->pending = mem_reallocarray(s->pending, s->npending + 1, sizeof(*s->pending));
	s->pending[s->npending++] = p;
}

void qmgr_sched_results_begin(struct qmgr_sched *s)
{
	s->batching = true;
}

void qmgr_sched_results_end(struct qmgr_sched *s)
{
	flush_results(s);
	s->batching = false;
}

/* A bounce's DSN is pending in the same transaction as the bounce
 * (queued later with the message's other failures: dsn_flush_due).  A
 * delay notice is queued first, then the deferral: a crash in between
 * may send it twice, never lose it. */
static void apply(struct qmgr_sched *s, struct qmgr_squeue *q, const char *qid, size_t index,
                  const struct qmgr_outcome *o)
{
	struct qmgr_failure f = {index, o->result, o->detail};
	struct qmgr_outcome with_dsn = *o;
	with_dsn.dsn = o->state == QMGR_RCPT_BOUNCED;
	if (o->state == QMGR_RCPT_DEFERRED && o->delay_notices > 0 && s->bounce)
		s->bounce(s->bounce_ctx, qid, &f, 1, true);
	apply_outcome(s, q, qid, index, &with_dsn);
}

/* Keeps a bounce (reason copied, detail taken over) for the job's end. */
static void job_add_bounce(struct job *j, const char *qid, size_t index, const char *reason, struct ipc_msg *detail)
{
	j->bounces = mem_reallocarray(j->bounces, j->nbounce + 1, sizeof(*j->bounces));
	struct job_bounce *b = &j->bounces[j->nbounce++];
	memset(b, 0, sizeof(*b));
	memcpy(b->qid, qid, QMGR_QID_SIZE);
	b->index = index;
	b->reason = reason ? mem_strdup(reason) : NULL;
	if (detail) {
		b->detail = *detail;
		b->has_detail = true;
		detail->store = NULL;
	}
}

/* The bounces of one message (from first on, in the order they came),
 * each with its DSN pending. */
static void flush_message_bounces(struct qmgr_sched *s, struct job *j, size_t first, bool *done)
{
	const char *qid = j->bounces[first].qid;
	for (size_t i = first; i < j->nbounce; i++) {
		struct job_bounce *b = &j->bounces[i];
		if (done[i] || strcmp(b->qid, qid) != 0)
			continue;
		done[i] = true;
		struct qmgr_outcome o = {.state = QMGR_RCPT_BOUNCED,
		                         .result = b->reason,
		                         .rtype = "b",
		                         .detail = b->has_detail ? &b->detail : NULL,
		                         .dsn = true};
		apply_outcome(s, j->queue, b->qid, b->index, &o);
		inflight_remove(s, b->qid, b->index);
	}
}

static void flush_bounces(struct qmgr_sched *s, struct job *j)
{
	bool *done = mem_zalloc(j->nbounce ? j->nbounce : 1);
	for (size_t i = 0; i < j->nbounce; i++)
		if (!done[i])
			flush_message_bounces(s, j, i, done);
	for (size_t i = 0; i < j->nbounce; i++) {
		free(j->bounces[i].reason);
		ipc_msg_free(&j->bounces[i].detail);
	}
	free(done);
	free(j->bounces);
	j->bounces = NULL;
	j->nbounce = 0;
}

/* With NOTIFY=DELAY a sender hears of a delay once per
 * notify-of-delay-every the message has waited: the new count when a
 * notice is due, else 0. */
static int64_t delay_notice_due(struct qmgr_sched *s, const struct qmgr_squeue *q, const char *qid, size_t index,
                                int64_t received, int64_t now)
{
	if (q->delay_every == VALUE_NEVER || q->delay_every <= 0)
		return 0;
	struct qmgr_rcpt r;
	bool found;
	struct buf err = BUF_INIT;
	int64_t due = 0;
	if (qmgr_store_get_rcpt(s->st, qid, index, &r, &found, &err)) {
		int64_t periods = (now - received) / q->delay_every;
		if (r.notify && strcasestr(r.notify, "DELAY") && periods > r.delay_notices)
			due = periods;
		qmgr_rcpt_free(&r);
	}
	buf_free(&err);
	return due;
}

/* Bounced at the job's end, with the message's other failures. */
static void expire(struct job *j, const char *qid, size_t index, const char *last)
{
	struct buf why = BUF_INIT;
	/* the status code after the first word, where the accounting and
	 * the DSN look for it */
	buf_printf(&why, "expired: 4.4.7 no delivery within %" PRId64 "s%s%s", j->queue->bounce_after,
	           last ? "; last attempt: " : "", last ? last : "");
	job_add_bounce(j, qid, index, buf_cstr(&why), NULL);
	buf_free(&why);
}

static struct job *job_find(struct qmgr_sched *s, int64_t id)
{
	if (s->last_found && s->last_found->id == id)
		return s->last_found;
	struct job *j = s->jobs;
	while (j && j->id != id)
		j = j->next;
	if (j)
		s->last_found = j;
	return j;
}

/* smtp reports a job's recipients in the order it was given them: the
 * search starts after the one found last and goes round. */
static struct job_rcpt *job_rcpt_find(struct job *j, const char *qid, size_t index)
{
	for (size_t n = 0; n < j->nrcpt; n++) {
		size_t i = (j->next_result + n) % j->nrcpt;
		if (j->rcpts[i].index == index && strcmp(j->rcpts[i].qid, qid) == 0) {
			j->next_result = i + 1;
			return &j->rcpts[i];
		}
	}
	return NULL;
}

/* What smtp's result frame means for the recipient.  "returned": smtp
 * gave the recipient back unsent (its qmgr went away); it is due again
 * now, in the state it had (current), with no attempt counted. */
static void result_outcome(struct qmgr_sched *s, struct qmgr_squeue *q, const struct ipc_msg *m, int64_t now,
                           enum qmgr_rcpt_state current, struct qmgr_outcome *o)
{
	const char *outcome = ipc_msg_str(m, IPC_ATTR_OUTCOME);
	memset(o, 0, sizeof(*o));
	o->result = ipc_msg_str(m, IPC_ATTR_REASON);
	o->detail = m;
	if (strcmp(outcome, "delivered") == 0) {
		o->state = QMGR_RCPT_DELIVERED;
		o->rtype = "d";
	} else if (strcmp(outcome, "bounced") == 0) {
		o->state = QMGR_RCPT_BOUNCED;
		o->rtype = "b";
	} else if (strcmp(outcome, "returned") == 0) {
		o->state = current == QMGR_RCPT_DEFERRED ? QMGR_RCPT_DEFERRED : QMGR_RCPT_PENDING;
		o->next_attempt = now;
		o->not_attempted = true;
		o->detail = NULL;
	} else {
		/* Without a connection the queue as a whole failed: the
		 * recipient waits for the queue's next retry.  A 4xx from a
		 * server waits retry-recipients-after. */
		bool connected = ipc_msg_has(m, IPC_ATTR_REMOTE_IP);
		o->state = QMGR_RCPT_DEFERRED;
		o->rtype = "t";
		int64_t wait = connected ? q->retry_rcpt : retry_interval(q, q->failures + 1);
		if (connected && q->state.backoff)
			wait = retry_interval(q, 1);
		o->next_attempt = now + wait;
	}
}

void qmgr_sched_result(struct qmgr_sched *s, int64_t job_id, struct ipc_msg *m)
{
	struct job *j = job_find(s, job_id);
	const char *qid = ipc_msg_str(m, IPC_ATTR_QUEUE_ID);
	size_t index = (size_t)ipc_msg_int(m, IPC_ATTR_RCPT_INDEX);
	struct job_rcpt *r = j ? job_rcpt_find(j, qid, index) : NULL;
	if (r == NULL || r->answered) {
		log_warning("smtp: a result for %s recipient %zu that job %" PRId64 " does not hold", qid, index,
		            job_id);
		return;
	}
	r->answered = true;
	const char *outcome = ipc_msg_str(m, IPC_ATTR_OUTCOME);
	const char *reason = ipc_msg_str(m, IPC_ATTR_REASON);
	int64_t now = time(NULL);
	observe_reply(s, j->queue, reason, strcmp(outcome, "delivered") == 0);
	if (strcmp(outcome, "bounced") == 0) {
		job_add_bounce(j, qid, index, reason, m); /* m's strings go with it */
		return;
	}
	if (strcmp(outcome, "deferred") == 0 && expired(j->queue, r->received, now)) {
		expire(j, qid, index, reason);
		return;
	}
	struct qmgr_outcome o;
	result_outcome(s, j->queue, m, now, QMGR_RCPT_PENDING, &o);
	o.running_job = job_id;
	if (o.state == QMGR_RCPT_DEFERRED && !o.not_attempted)
		o.delay_notices = delay_notice_due(s, j->queue, qid, index, r->received, now);
	if (s->batching && o.delay_notices == 0) {
		o.dsn = o.state == QMGR_RCPT_BOUNCED;
		pending_add(s, j->queue, index, &o, m); /* qid stays valid: it is in m's strings */
	} else {
		flush_results(s);
		apply(s, j->queue, qid, index, &o);
	}
	inflight_remove(s, qid, index);
}

/* A replayed result: the recipient's job is from before a restart or a
 * lost connection.  It counts only while the recipient is still in
 * flight for that job (qmgr_store_apply checks it in its transaction);
 * otherwise it was applied already. */
void qmgr_sched_replay(struct qmgr_sched *s, struct ipc_msg *m)
{
	int64_t job_id = ipc_msg_int(m, IPC_ATTR_JOB_ID);
	if (job_find(s, job_id)) {
		qmgr_sched_result(s, job_id, m);
		return;
	}
	const char *qid = ipc_msg_str(m, IPC_ATTR_QUEUE_ID);
	size_t index = (size_t)ipc_msg_int(m, IPC_ATTR_RCPT_INDEX);
	struct qmgr_rcpt r;
	bool found = false;
	struct buf err = BUF_INIT;
	if (!qmgr_store_get_rcpt(s->st, qid, index, &r, &found, &err)) {
		if (found)
			log_error("%s: recipient %zu: replayed result not applied: %s", qid, index, buf_cstr(&err));
		buf_free(&err);
		return;
	}
	buf_free(&err);
	if (r.in_flight == job_id) {
		struct qmgr_squeue *q = qmgr_sched_find(s, r.queue);
		if (q == NULL) {
			struct qmgr_queue_state fresh = {0};
			q = queue_add(s, r.queue, &fresh);
		}
		struct qmgr_outcome o;
		result_outcome(s, q, m, time(NULL), r.state, &o);
		o.job_id = job_id;
		observe_reply(s, q, o.result, o.state == QMGR_RCPT_DELIVERED);
		log_info("%s: recipient %zu: result of job %" PRId64 " replayed by smtp", qid, index, job_id);
		apply(s, q, qid, index, &o);
	}
	qmgr_rcpt_free(&r);
}

/* The recipients a job ends without results for stay in flight in the
 * queue, due again after in-flight-grace: smtp may still replay their
 * results (a lost connection), or never had them (a job not handed
 * over, qmgr stopping). */
static void hold_unanswered(struct qmgr_sched *s, const struct job *j)
{
	size_t n = unanswered(j);
	if (n == 0)
		return;
	struct qmgr_rcpt_ref *refs = mem_reallocarray(NULL, n, sizeof(*refs));
	n = 0;
	for (size_t i = 0; i < j->nrcpt; i++) {
		if (j->rcpts[i].answered)
			continue;
		memcpy(refs[n].qid, j->rcpts[i].qid, QMGR_QID_SIZE);
		refs[n++].index = j->rcpts[i].index;
	}
	struct buf err = BUF_INIT;
	if (qmgr_store_hold(s->st, refs, n, j->id, time(NULL), &err) != QMGR_STORE_OK)
		log_error("job %" PRId64 ": cannot hold its %zu recipients without results (held until the next start): %s",
		          j->id, n, buf_cstr(&err));
	buf_free(&err);
	free(refs);
}

static void job_free(struct qmgr_sched *s, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		s->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
	if (s->last_found == j)
		s->last_found = NULL;
	flush_bounces(s, j);
	hold_unanswered(s, j);
	for (size_t i = 0; i < j->nrcpt; i++)
		if (!j->rcpts[i].answered)
			inflight_remove(s, j->rcpts[i].qid, j->rcpts[i].index);
	j->queue->jobs--;
	s->jobs_running--;
	free(j->rcpts);
	free(j);
}

void qmgr_sched_done(struct qmgr_sched *s, int64_t job_id, const struct ipc_msg *m)
{
	flush_results(s); /* the job's results before its end */
	struct job *j = job_find(s, job_id);
	if (j == NULL)
		return;
	struct qmgr_squeue *q = j->queue;
	const char *outcome = m ? ipc_msg_str(m, IPC_ATTR_OUTCOME) : "lost";
	int64_t now = time(NULL);
	if (strcmp(outcome, "done") == 0 || strcmp(outcome, "bounced") == 0) {
		if (q->failures || q->state.next_retry) {
			q->failures = 0;
			q->state.next_retry = 0;
			save_queue(s, q, NULL, NULL);
		}
	} else if (strcmp(outcome, "connect-failed") == 0 || strcmp(outcome, "dns-failed") == 0) {
		if (m && ipc_msg_has(m, IPC_ATTR_REASON))
			observe_reply(s, q, ipc_msg_str(m, IPC_ATTR_REASON), false);
		q->failures++;
		int64_t wait = retry_interval(q, q->failures);
		if (m && ipc_msg_has(m, IPC_ATTR_RETRY_AFTER))
			wait = ipc_msg_int(m, IPC_ATTR_RETRY_AFTER);
		q->state.next_retry = now + wait;
		const char *reason = m && ipc_msg_has(m, IPC_ATTR_REASON) ? ipc_msg_str(m, IPC_ATTR_REASON) : outcome;
		free(q->last_error);
		q->last_error = mem_strdup(reason);
		log_info("queue %s: %s (%s): next retry in %" PRId64 "s", q->name, outcome, reason, wait);
		s->counters.queue_failures++;
		save_queue(s, q, m, reason);
	}
	q->next_due = 0;
	job_free(s, j);
	qmgr_sched_kick(s);
}

size_t qmgr_sched_lost(struct qmgr_sched *s, const struct qmgr_smtp *agent)
{
	size_t ended = 0;
	for (struct job *j = s->jobs, *next; j; j = next) {
		next = j->next;
		if (j->agent == agent) {
			qmgr_sched_done(s, j->id, NULL);
			ended++;
		}
	}
	return ended;
}

/* ---- building jobs --------------------------------------------------------- */

struct collect {
	struct qmgr_sched *s;
	struct qmgr_squeue *q;
	struct job *job;
	struct qmgr_job_builder *builder;
	int64_t now;
	size_t messages;
	size_t bytes;
	char last_qid[QMGR_QID_SIZE];
	int64_t last_received;
	bool last_ok;
	bool open; /* a message was given to smtp and awaits its body */
	uint64_t rate_left;
	/* the last message's body could not be read: its recipients here
	 * wait retry-recipients-after instead of going into the job */
	bool last_unreadable;
	struct buf unreadable_why;
	struct qmgr_rcpt_ref *unreadable;
	size_t nunreadable;
	/* the job's recipients' records as read (stored[i] for
	 * job->rcpts[i]; zeroed for one answered at once) */
	struct qmgr_rcpt *stored;
};

/* Adds a message to the job the first time one of its recipients is
 * taken; false when it cannot be read (then it is skipped). */
static bool take_message(struct collect *c, const char *qid)
{
	if (strcmp(qid, c->last_qid) == 0)
		return c->last_ok;
	memcpy(c->last_qid, qid, QMGR_QID_SIZE);
	c->last_ok = false;
	c->last_unreadable = false;
	if (c->open) {
		qmgr_smtp_end_message(c->builder);
		c->open = false;
	}
	if (c->messages >= JOB_MAX_MSGS || c->bytes >= JOB_MAX_BYTES || c->rate_left == 0)
		return false;
	struct ipc_msg env;
	bool found;
	struct buf err = BUF_INIT;
	if (!qmgr_store_get_message(c->s->st, qid, &env, &found, &err)) {
		log_error("%s: cannot read the message: %s", qid, buf_cstr(&err));
		buf_free(&err);
		return false;
	}
	c->last_received = ipc_msg_int(&env, IPC_ATTR_RECEIVED);
	struct buf body = BUF_INIT;
	if (!expired(c->q, c->last_received, c->now) && !qmgr_store_read_body(c->s->st, qid, &body, &err)) {
		log_error("%s: the body cannot be read; its recipients in %s wait for retry-recipients-after: %s", qid,
		          c->q->name, buf_cstr(&err));
		buf_reset(&c->unreadable_why);
		buf_printf(&c->unreadable_why, "4.3.0 the message body cannot be read from the queue: %s",
		           buf_cstr(&err));
		c->last_unreadable = true;
	} else if (!expired(c->q, c->last_received, c->now)) {
		c->last_ok = qmgr_smtp_add_message(c->builder, qid, &env, &body, &err);
		c->open = c->last_ok;
		if (c->last_ok) {
			c->messages++;
			c->bytes += (size_t)ipc_msg_int(&env, IPC_ATTR_BODY_SIZE);
			if (c->rate_left != VALUE_UNLIMITED)
				c->rate_left--;
		} else {
			log_error("%s: cannot hand the message to smtp: %s", qid, buf_cstr(&err));
		}
	} else {
		c->last_ok = true; /* its recipients bounce below */
	}
	ipc_msg_free(&env);
	buf_free(&body);
	buf_free(&err);
	return c->last_ok;
}

static bool collect_rcpt(void *ctx, const char *qid, size_t index, int64_t due)
{
	struct collect *c = ctx;
	if (c->job->nrcpt >= JOB_MAX_RCPTS)
		return false;
	if (inflight_has(c->s, qid, index))
		return true;
	if (!take_message(c, qid)) {
		if (c->last_unreadable) {
			c->unreadable = mem_reallocarray(c->unreadable, c->nunreadable + 1, sizeof(*c->unreadable));
			struct qmgr_rcpt_ref *ref = &c->unreadable[c->nunreadable++];
			memcpy(ref->qid, qid, QMGR_QID_SIZE);
			ref->index = index;
		}
		return c->messages < JOB_MAX_MSGS && c->bytes < JOB_MAX_BYTES && c->rate_left > 0;
	}
	c->job->rcpts = mem_reallocarray(c->job->rcpts, c->job->nrcpt + 1, sizeof(*c->job->rcpts));
	c->stored = mem_reallocarray(c->stored, c->job->nrcpt + 1, sizeof(*c->stored));
	struct qmgr_rcpt *stored = &c->stored[c->job->nrcpt];
	memset(stored, 0, sizeof(*stored));
	struct job_rcpt *r = &c->job->rcpts[c->job->nrcpt++];
	memset(r, 0, sizeof(*r));
	memcpy(r->qid, qid, QMGR_QID_SIZE);
	r->index = index;
	r->received = c->last_received;
	inflight_add(c->s, qid, index);
	if (expired(c->q, c->last_received, c->now)) {
		/* Never attempted within bounce-after: bounced unsent. */
		r->answered = true;
		return true;
	}
	struct buf err = BUF_INIT;
	bool found;
	if (!qmgr_store_get_rcpt(c->s->st, qid, index, stored, &found, &err)) {
		log_error("%s: recipient %zu: %s", qid, index, buf_cstr(&err));
		memset(stored, 0, sizeof(*stored));
		r->answered = true;
	} else if (!qmgr_smtp_add_rcpt(c->builder, index, stored)) {
		r->answered = true;
	}
	buf_free(&err);
	return true;
}

static void stored_free(struct collect *c)
{
	for (size_t i = 0; c->stored && i < c->job->nrcpt; i++)
		qmgr_rcpt_free(&c->stored[i]);
	free(c->stored);
}

/* The messages a queue may still start under max-msg-rate. */
static uint64_t rate_left(struct qmgr_squeue *q, int64_t now)
{
	const struct value_rate *rate = qmgr_backoff_rate(q);
	if (rate->count == VALUE_UNLIMITED || rate->count == 0 || rate->per_seconds <= 0)
		return VALUE_UNLIMITED;
	if (now - q->rate_window >= rate->per_seconds) {
		q->rate_window = now;
		q->rate_used = 0;
	}
	return rate->count > q->rate_used ? rate->count - q->rate_used : 0;
}

static void expire_unsent(struct qmgr_sched *s, struct job *j)
{
	for (size_t i = 0; i < j->nrcpt; i++) {
		struct job_rcpt *r = &j->rcpts[i];
		if (r->answered && expired(j->queue, r->received, time(NULL))) {
			struct qmgr_rcpt rc;
			bool found;
			struct buf err = BUF_INIT;
			char *last = NULL;
			if (qmgr_store_get_rcpt(s->st, r->qid, r->index, &rc, &found, &err)) {
				last = rc.last_result ? mem_strdup(rc.last_result) : NULL;
				qmgr_rcpt_free(&rc);
			}
			buf_free(&err);
			expire(j, r->qid, r->index, last);
			free(last);
		}
	}
	flush_bounces(s, j);
}

/* The job's recipients are in flight in the database before smtp may
 * see them; false (the job is not sent) when that cannot be written. */
static bool mark_in_flight(struct qmgr_sched *s, struct job *j, const struct qmgr_rcpt *stored, int64_t now)
{
	struct qmgr_rcpt_ref *refs = mem_reallocarray(NULL, j->nrcpt ? j->nrcpt : 1, sizeof(*refs));
	struct qmgr_rcpt *records = mem_reallocarray(NULL, j->nrcpt ? j->nrcpt : 1, sizeof(*records));
	size_t n = 0;
	for (size_t i = 0; i < j->nrcpt; i++) {
		if (j->rcpts[i].answered)
			continue;
		memcpy(refs[n].qid, j->rcpts[i].qid, QMGR_QID_SIZE);
		refs[n].index = j->rcpts[i].index;
		records[n++] = stored[i];
	}
	struct buf err = BUF_INIT;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	enum qmgr_store_status status =
	    qmgr_store_mark_in_flight(s->st, refs, records, n, j->id, now + s->grace, now, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s->mark_jobs++;
	s->mark_rcpts += n;
	s->mark_us += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000);
	if (status != QMGR_STORE_OK)
		log_error("queue %s: job %" PRId64 " not started: %s", j->queue->name, j->id, buf_cstr(&err));
	buf_free(&err);
	free(refs);
	free(records);
	return status == QMGR_STORE_OK;
}

/* Starts one job for the queue; false when nothing was due. */
/* Recipients of messages whose body cannot be read (a damaged or missing
 * segment, doc/queue.md) are deferred like a 4xx: retried after
 * retry-recipients-after and bounced after bounce-after, instead of
 * being tried again at every pass. */
static void defer_unreadable(struct qmgr_sched *s, struct collect *c)
{
	for (size_t i = 0; i < c->nunreadable; i++) {
		struct qmgr_rcpt_ref *ref = &c->unreadable[i];
		struct qmgr_outcome o = {.state = QMGR_RCPT_DEFERRED,
		                         .next_attempt = c->now + c->q->retry_rcpt,
		                         .result = buf_cstr(&c->unreadable_why),
		                         .rtype = "t"};
		apply_outcome(s, c->q, ref->qid, ref->index, &o);
	}
	free(c->unreadable);
	buf_free(&c->unreadable_why);
}

static struct job *job_new(struct qmgr_sched *s, struct qmgr_squeue *q, int64_t id)
{
	struct job *j = mem_zalloc(sizeof(*j));
	j->id = id;
	j->queue = q;
	j->agent = q->local ? s->local : s->smtp;
	return j;
}

/* The job runs (or is about to): it counts against its queue's
 * connections until job_free. */
static void job_register(struct qmgr_sched *s, struct job *j)
{
	j->next = s->jobs;
	j->prev = NULL;
	if (s->jobs)
		s->jobs->prev = j;
	s->jobs = j;
	j->queue->jobs++;
	s->jobs_running++;
}

static bool start_job(struct qmgr_sched *s, struct qmgr_squeue *q, int64_t now)
{
	struct job *j = job_new(s, q, ++s->next_job_id);
	struct collect c = {.s = s, .q = q, .job = j, .now = now, .rate_left = rate_left(q, now)};
	c.builder = qmgr_smtp_begin(j->agent, j->id, q->name);
	struct buf err = BUF_INIT;
	if (!qmgr_store_walk_due(s->st, q->name, now, collect_rcpt, &c, &err))
		log_error("queue %s: %s", q->name, buf_cstr(&err));
	buf_free(&err);
	defer_unreadable(s, &c);
	if (c.open)
		qmgr_smtp_end_message(c.builder);
	if (qmgr_backoff_rate(q)->count != VALUE_UNLIMITED)
		q->rate_used += c.messages;
	job_register(s, j);
	expire_unsent(s, j);
	bool sent = c.messages > 0 && qmgr_smtp_can_run(c.builder) && mark_in_flight(s, j, c.stored, now) &&
	            qmgr_smtp_run(c.builder, true);
	stored_free(&c);
	if (!sent || c.messages == 0) {
		job_free(s, j);
		return false;
	}
	return true;
}

/* The queue may start a job now, if it has recipients due. */
static bool queue_has_room(struct qmgr_sched *s, struct qmgr_squeue *q, int64_t now)
{
	check_backoff_end(s, q, now);
	return !q->state.paused && q->jobs < qmgr_backoff_max_out(q) &&
	       !(q->state.next_retry && now < q->state.next_retry);
}

/* The queue's first due time, read from due.db when not known. */
static int64_t next_due(struct qmgr_sched *s, struct qmgr_squeue *q)
{
	if (q->next_due == 0) {
		bool found;
		struct buf err = BUF_INIT;
		if (!qmgr_store_first_due(s->st, q->name, &q->next_due, &found, &err))
			log_error("queue %s: %s", q->name, buf_cstr(&err));
		buf_free(&err);
		if (!found)
			q->next_due = INT64_MAX;
	}
	return q->next_due;
}

static bool queue_ready(struct qmgr_sched *s, struct qmgr_squeue *q, int64_t now)
{
	return queue_has_room(s, q, now) && next_due(s, q) <= now;
}

/* Starts the jobs that are due, at most JOBS_PER_PASS of them: each costs
 * a transaction and reading its messages, and a pass must not keep
 * enqueues and control requests waiting.  True when there is more to
 * start (the tick comes back at once). */
static bool schedule(struct qmgr_sched *s)
{
	if (s->quiesced)
		return false;
	int64_t now = time(NULL);
	unsigned started = 0;
	for (struct qmgr_squeue *q = s->queues; q && s->jobs_running < s->total_max_out; q = q->next) {
		if (!qmgr_smtp_available(q->local ? s->local : s->smtp))
			continue;
		while (q->jobs < qmgr_backoff_max_out(q) && s->jobs_running < s->total_max_out &&
		       queue_ready(s, q, now)) {
			if (started == JOBS_PER_PASS)
				return true;
			if (!start_job(s, q, now)) {
				/* All its due recipients are in flight (or
				 * unreadable): look again once jobs end. */
				q->next_due = now + TICK_SECS;
				break;
			}
			started++;
		}
	}
	return false;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_sched *s = arg;
	dsn_flush_due(s, time(NULL));
	struct timeval tv = {schedule(s) ? 0 : TICK_SECS, 0};
	evtimer_add(s->tick, &tv);
}

void qmgr_sched_quiesce(struct qmgr_sched *s)
{
	s->quiesced = true;
}

uint64_t qmgr_sched_jobs_running(const struct qmgr_sched *s)
{
	return s->jobs_running;
}

void qmgr_sched_kick(struct qmgr_sched *s)
{
	if (s->tick) {
		struct timeval tv = {0, 0};
		evtimer_add(s->tick, &tv);
	}
}

/* ---- fresh jobs (qmgr.h) ---------------------------------------------------- */

/* The new recipients of one queue in an enqueue batch, and what they
 * count against the job limits. */
struct fresh_job {
	struct qmgr_squeue *q;
	int64_t id;
	size_t messages, rcpts, bytes;
	size_t last_message; /* the batch index of the last message claimed, + 1 */
};

/* One enqueue batch's fresh jobs.  Each queue is asked once per batch;
 * the queue keeps the answer (fresh_batch, fresh_slot, fresh_refused), so
 * a recipient finds its job through its queue's hash, not by a scan. */
struct qmgr_fresh {
	struct qmgr_sched *s;
	uint64_t batch;
	int64_t now;
	struct fresh_job *jobs;
	size_t njobs, cap;
};

struct qmgr_fresh *qmgr_sched_fresh_begin(struct qmgr_sched *s, int64_t now)
{
	struct qmgr_fresh *f = mem_zalloc(sizeof(*f));
	f->s = s;
	f->batch = ++s->fresh_batches;
	f->now = now;
	return f;
}

/* Whether a fresh job may start on the queue: what a scheduling pass
 * would let it start, and nothing due before the new recipients, so
 * that they do not pass older ones (the pass takes those first). */
static bool fresh_allowed(struct qmgr_fresh *f, struct qmgr_squeue *q)
{
	struct qmgr_sched *s = f->s;
	return !s->quiesced && s->jobs_running + f->njobs < s->total_max_out && queue_has_room(s, q, f->now) &&
	       qmgr_backoff_rate(q)->count == VALUE_UNLIMITED && !expired(q, f->now, f->now) &&
	       qmgr_smtp_available(q->local ? s->local : s->smtp) && next_due(s, q) > f->now;
}

static struct fresh_job *fresh_job_for(struct qmgr_fresh *f, const char *queue)
{
	struct qmgr_squeue *q = qmgr_sched_find(f->s, queue);
	if (q == NULL) /* a new queue: its first recipients go the usual way */
		return NULL;
	if (q->fresh_batch == f->batch)
		return q->fresh_refused ? NULL : &f->jobs[q->fresh_slot];
	q->fresh_batch = f->batch;
	q->fresh_refused = !fresh_allowed(f, q);
	if (q->fresh_refused)
		return NULL;
	if (f->njobs == f->cap) {
		f->cap = f->cap ? 2 * f->cap : 8;
		f->jobs = mem_reallocarray(f->jobs, f->cap, sizeof(*f->jobs));
	}
	q->fresh_slot = f->njobs++;
	f->jobs[q->fresh_slot] = (struct fresh_job){.q = q, .id = ++f->s->next_job_id};
	return &f->jobs[q->fresh_slot];
}

void qmgr_sched_fresh_claim(struct qmgr_fresh *f, size_t message, const char *queue, size_t body_len,
                            struct qmgr_rcpt *r)
{
	struct fresh_job *fj = fresh_job_for(f, queue);
	if (fj == NULL || fj->rcpts >= JOB_MAX_RCPTS)
		return;
	if (fj->last_message != message + 1) {
		if (fj->messages >= JOB_MAX_MSGS || fj->bytes >= JOB_MAX_BYTES)
			return;
		fj->messages++;
		fj->bytes += body_len;
		fj->last_message = message + 1;
	}
	fj->rcpts++;
	r->in_flight = fj->id;
	r->next_attempt = f->now + f->s->grace;
}

static void fresh_free(struct qmgr_fresh *f)
{
	free(f->jobs);
	free(f);
}

/* A claimed recipient: message m of the batch, its recipient k. */
struct fresh_claim {
	size_t m, k;
};

/* The batch's job that claimed a recipient (in_flight = its ID): job IDs
 * are given in order as the jobs are made, so the ID gives the slot. */
static bool fresh_slot_of(const struct qmgr_fresh *f, int64_t id, size_t *slot)
{
	if (f->njobs == 0 || id < f->jobs[0].id || (uint64_t)(id - f->jobs[0].id) >= f->njobs)
		return false;
	*slot = (size_t)(id - f->jobs[0].id);
	return f->jobs[*slot].id == id;
}

/* Every job's claimed recipients, each job's together and in the batch's
 * order, found in one pass: claims[first[i] .. first[i + 1]) are job i's. */
static struct fresh_claim *fresh_claims(const struct qmgr_fresh *f, const struct qmgr_new_message *msgs, size_t n,
                                        size_t **first_out)
{
	size_t *first = mem_zalloc((f->njobs + 1) * sizeof(*first)), slot;
	for (size_t m = 0; m < n; m++)
		for (size_t k = 0; k < msgs[m].in->nrcpt; k++)
			if (fresh_slot_of(f, msgs[m].in->rcpts[k].in_flight, &slot))
				first[slot + 1]++;
	for (size_t i = 0; i < f->njobs; i++)
		first[i + 1] += first[i];
	size_t *filled = mem_zalloc((f->njobs + 1) * sizeof(*filled));
	struct fresh_claim *claims = mem_reallocarray(NULL, first[f->njobs] + 1, sizeof(*claims));
	for (size_t m = 0; m < n; m++)
		for (size_t k = 0; k < msgs[m].in->nrcpt; k++)
			if (fresh_slot_of(f, msgs[m].in->rcpts[k].in_flight, &slot))
				claims[first[slot] + filled[slot]++] = (struct fresh_claim){m, k};
	free(filled);
	*first_out = first;
	return claims;
}

/* A job's claimed recipients, message by message. */
static void fresh_add_claims(struct qmgr_fresh *f, struct job *j, struct qmgr_job_builder *b,
                             const struct qmgr_new_message *msgs, const struct fresh_claim *claims, size_t count)
{
	j->rcpts = mem_reallocarray(j->rcpts, j->nrcpt + count, sizeof(*j->rcpts));
	for (size_t c = 0; c < count; c++) {
		const struct qmgr_new_message *m = &msgs[claims[c].m];
		const struct qmgr_incoming *in = m->in;
		size_t k = claims[c].k;
		if (c == 0 || claims[c - 1].m != claims[c].m) {
			struct buf body = BUF_INIT, err = BUF_INIT;
			buf_append(&body, in->body.data, in->body.len);
			if (!qmgr_smtp_add_message(b, m->qid, &in->envelope, &body, &err))
				log_error("%s: cannot hand the message to smtp: %s", m->qid, buf_cstr(&err));
			buf_free(&body);
			buf_free(&err);
		}
		qmgr_smtp_add_rcpt(b, k, &in->rcpts[k]);
		struct job_rcpt *r = &j->rcpts[j->nrcpt++];
		memset(r, 0, sizeof(*r));
		memcpy(r->qid, m->qid, QMGR_QID_SIZE);
		r->index = k;
		r->received = f->now;
		inflight_add(f->s, m->qid, k);
		if (c + 1 == count || claims[c + 1].m != claims[c].m)
			qmgr_smtp_end_message(b);
	}
}

void qmgr_sched_fresh_start(struct qmgr_fresh *f, const struct qmgr_new_message *msgs, size_t n)
{
	struct qmgr_sched *s = f->s;
	size_t *first;
	struct fresh_claim *claims = fresh_claims(f, msgs, n, &first);
	for (size_t i = 0; i < f->njobs; i++) {
		struct job *j = job_new(s, f->jobs[i].q, f->jobs[i].id);
		struct qmgr_job_builder *b = qmgr_smtp_begin(j->agent, j->id, j->queue->name);
		fresh_add_claims(f, j, b, msgs, claims + first[i], first[i + 1] - first[i]);
		job_register(s, j);
		s->fresh_jobs++;
		s->fresh_rcpts += j->nrcpt;
		if (!qmgr_smtp_can_run(b) || !qmgr_smtp_run(b, true)) {
			/* in flight in the queue: due again after in-flight-grace */
			log_warning("queue %s: job %" PRId64 " could not be handed to smtp", j->queue->name, j->id);
			job_free(s, j);
		}
	}
	free(claims);
	free(first);
	fresh_free(f);
}

void qmgr_sched_fresh_cancel(struct qmgr_fresh *f, const struct qmgr_new_message *msgs, size_t n)
{
	for (size_t m = 0; m < n; m++) {
		for (size_t k = 0; k < msgs[m].in->nrcpt; k++) {
			struct qmgr_rcpt *r = &msgs[m].in->rcpts[k];
			r->in_flight = 0; /* only a claim sets it on a new recipient */
			r->next_attempt = 0;
		}
	}
	fresh_free(f);
}

/* ---- traffic --------------------------------------------------------------------- */

uint64_t qmgr_traffic_add(struct qmgr_traffic_ring *r, int64_t now, enum qmgr_traffic_kind kind, uint64_t n)
{
	int64_t unit = now / r->unit;
	size_t i = (size_t)(unit % 60);
	if (r->stamp[i] != unit) {
		r->stamp[i] = unit;
		memset(r->count[i], 0, sizeof(r->count[i]));
	}
	if (r->sum_unit != unit) {
		for (int k = 0; k < QMGR_TRAFFIC_KINDS; k++)
			r->sum[k] = qmgr_traffic_sum(r, now, (enum qmgr_traffic_kind)k);
		r->sum_unit = unit;
	}
	r->count[i][kind] += n;
	return r->sum[kind] += n;
}

uint64_t qmgr_traffic_sum(const struct qmgr_traffic_ring *r, int64_t now, enum qmgr_traffic_kind kind)
{
	int64_t unit = now / r->unit;
	uint64_t sum = 0;
	for (size_t i = 0; i < 60; i++)
		if (r->stamp[i] > unit - 60 && r->stamp[i] <= unit)
			sum += r->count[i][kind];
	return sum;
}

static void keep_top(uint64_t *top, uint64_t sum)
{
	if (sum > *top)
		*top = sum;
}

void qmgr_sched_count(struct qmgr_sched *s, enum qmgr_traffic_kind kind, uint64_t n)
{
	int64_t now = time(NULL);
	keep_top(&s->counters.top_minute[kind], qmgr_traffic_add(&s->counters.last_minute, now, kind, n));
	keep_top(&s->counters.top_hour[kind], qmgr_traffic_add(&s->counters.last_hour, now, kind, n));
	if (kind == QMGR_IN_MSGS)
		s->counters.received_msgs += n;
	else if (kind == QMGR_IN_RCPTS)
		s->counters.received_rcpts += n;
}

/* ---- control ---------------------------------------------------------------- */

bool qmgr_sched_set_paused(struct qmgr_sched *s, struct qmgr_squeue *q, bool paused)
{
	q->state.paused = paused;
	if (!paused)
		qmgr_sched_kick(s);
	return save_queue(s, q, NULL, NULL);
}

/* "schedule": retry now, whatever the back-off said, deferred
 * recipients included. */
bool qmgr_sched_retry_now(struct qmgr_sched *s, struct qmgr_squeue *q)
{
	size_t moved;
	struct buf err = BUF_INIT;
	if (qmgr_store_reschedule(s->st, q->name, time(NULL), &moved, &err) != QMGR_STORE_OK)
		log_error("queue %s: cannot reschedule: %s", q->name, buf_cstr(&err));
	buf_free(&err);
	q->state.next_retry = 0;
	q->failures = 0;
	q->next_due = 0;
	qmgr_sched_kick(s);
	return save_queue(s, q, NULL, NULL);
}

struct qmgr_squeue *qmgr_sched_first(struct qmgr_sched *s)
{
	return s->queues;
}

struct qmgr_counters *qmgr_sched_counters(struct qmgr_sched *s)
{
	s->counters.jobs = s->jobs_running;
	return &s->counters;
}

struct qmgr_store *qmgr_sched_store(struct qmgr_sched *s)
{
	return s->st;
}

void qmgr_sched_set_bounce(struct qmgr_sched *s, qmgr_bounce_fn fn, qmgr_dsn_flush_fn flush, void *ctx)
{
	s->bounce = fn;
	s->dsn_flush = flush;
	s->bounce_ctx = ctx;
}

/* A reload: every queue's settings are resolved again from conf, which
 * replaces the old configuration (the caller frees that one). */
void qmgr_sched_reload(struct qmgr_sched *s, const struct conf *conf)
{
	struct qmgr_patterns *old = s->patterns;
	s->conf = conf;
	s->patterns = qmgr_patterns_load(conf);
	s->total_max_out = conf_get_uint(conf_global(conf), "total-max-smtp-out");
	s->grace = conf_get_interval(conf_global(conf), "in-flight-grace");
	for (struct qmgr_squeue *q = s->queues; q; q = q->next)
		queue_configure(s, q);
	qmgr_patterns_free(old);
	qmgr_sched_kick(s);
}

/* ---- life -------------------------------------------------------------------- */

static void free_queues(struct qmgr_sched *s)
{
	free(s->to_count);
	s->to_count = NULL;
	s->queues_tail = NULL;
	while (s->queues) {
		struct qmgr_squeue *q = s->queues;
		s->queues = q->next;
		free(q->name);
		free(q->last_error);
		free(q->backoff.notify);
		free(q);
	}
}

struct qmgr_sched *qmgr_sched_start(struct event_base *base, struct qmgr_store *st, const struct conf *conf,
                                    const char *spool, struct buf *err)
{
	struct qmgr_sched *s = mem_zalloc(sizeof(*s));
	s->base = base;
	s->st = st;
	s->conf = conf;
	s->total_max_out = conf_get_uint(conf_global(conf), "total-max-smtp-out");
	s->counters.started = time(NULL);
	s->counters.last_minute.unit = 1;
	s->counters.last_hour.unit = 60;
	s->patterns = qmgr_patterns_load(conf);
	if (!qmgr_store_walk_queues(st, load_queue, s, err)) {
		free_queues(s);
		qmgr_patterns_free(s->patterns);
		free(s);
		return NULL;
	}
	uint64_t gen = 0;
	if (qmgr_store_next_job_gen(st, &gen, err) != QMGR_STORE_OK) {
		free_queues(s);
		qmgr_patterns_free(s->patterns);
		free(s);
		return NULL;
	}
	/* job IDs: this start's number, then a count */
	s->next_job_id = (int64_t)((gen & 0x7fffffu) << 32);
	s->this_start = s->next_job_id;
	s->holding_earlier = true;
	s->grace = conf_get_interval(conf_global(conf), "in-flight-grace");
	if (!qmgr_store_walk_dsns(st, load_dsn_wait, s, err)) {
		free_queues(s);
		qmgr_patterns_free(s->patterns);
		free(s);
		return NULL;
	}
	s->smtp = qmgr_smtp_new(base, spool, s);
	s->local = qmgr_local_new(base, spool, s);
	s->tick = evtimer_new(base, on_tick, s);
	s->count_ev = evtimer_new(base, count_slice, s);
	struct timeval zero = {0, 0};
	evtimer_add(s->count_ev, &zero);
	qmgr_sched_kick(s);
	return s;
}

void qmgr_sched_stop(struct qmgr_sched *s)
{
	if (s == NULL)
		return;
	flush_results(s);
	free(s->pending);
	/* stopping: what is pending goes now rather than after a restart */
	dsn_flush_due(s, INT64_MAX);
	if (s->mark_jobs)
		log_info("in-flight marks: %" PRIu64 " jobs, %" PRIu64 " recipients, %.1f ms (%.1f us per job)",
		         s->mark_jobs, s->mark_rcpts, (double)s->mark_us / 1000,
		         (double)s->mark_us / (double)s->mark_jobs);
	if (s->fresh_jobs)
		log_info("fresh jobs: %" PRIu64 " jobs, %" PRIu64 " recipients", s->fresh_jobs, s->fresh_rcpts);
	qmgr_smtp_free(s->smtp);
	s->smtp = NULL;
	qmgr_smtp_free(s->local);
	s->local = NULL;
	while (s->jobs)
		job_free(s, s->jobs);
	event_free(s->tick);
	event_free(s->count_ev);
	buf_free(&s->hold_from);
	free_queues(s);
	qmgr_patterns_free(s->patterns);
	while (s->dsn_waits) {
		struct dsn_wait *w = s->dsn_waits;
		s->dsn_waits = w->next;
		free(w);
	}
	free(s);
}
