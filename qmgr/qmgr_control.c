/* qmgr_control.c: the queue's control requests, which master relays from
 * ternctl to qmgr's socket as "qmgr.VERB" with the caller's role.  The
 * answer is a reply frame {status 0 ok / 1 failed / 2 refused, reason},
 * data frames, then "end":
 *
 *   qmgr.show-queues [queue=PATTERN] [paused=1] [errors=1]   "queue" frames
 *   qmgr.show-topqueues                                     "queue" frames
 *   qmgr.show-domains                                       "domain" frames
 *   qmgr.list queue=D/V [recipient=] [sender=] [max_items=N]  "rcpt" frames
 *   qmgr.pause | qmgr.resume | qmgr.schedule queue=PATTERN
 *   qmgr.set-mode queue=PATTERN queue_mode=backoff|normal
 *   qmgr.delete queue=PATTERN [recipient=] [sender=] [older_than=S]
 *               [no_accounting=1]
 *   qmgr.status                 one "status" frame, "traffic" frames (hour,
 *                               minute, top-hour, top-minute)
 *   qmgr.mailq [max_items=N]    per message still to deliver, oldest first:
 *                               a "message" frame, then a "rcpt" frame per
 *                               recipient not yet delivered or bounced
 *
 * PATTERN is a queue name or a shell pattern: every queue ("*" "/" "*"),
 * every queue of a domain ("domain/" "*"), of a virtual MTA.
 * A reader may only run show, list, mailq and status. */
#include "qmgr.h"

#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mem.h"

#define TOP_QUEUES 20
#define LIST_DEFAULT_ITEMS 1000
/* Messages mailq shows at most unless asked for more. */
#define MAILQ_DEFAULT_ITEMS 10000

struct qmgr_control {
	struct qmgr_sched *sched;
	struct qmgr_outbox *outbox;
};

static const struct ipc_spec request_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},       {IPC_ATTR_ROLE, IPC_OPTIONAL},       {IPC_ATTR_QUEUE, IPC_OPTIONAL},
    {IPC_ATTR_PAUSED, IPC_OPTIONAL},        {IPC_ATTR_ERRORS, IPC_OPTIONAL},     {IPC_ATTR_MAX_ITEMS, IPC_OPTIONAL},
    {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},     {IPC_ATTR_SENDER, IPC_OPTIONAL},     {IPC_ATTR_OLDER_THAN, IPC_OPTIONAL},
    {IPC_ATTR_NO_ACCOUNTING, IPC_OPTIONAL}, {IPC_ATTR_QUEUE_MODE, IPC_OPTIONAL},
};

/* ---- frames ---------------------------------------------------------------------- */

static void frame_end(struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_error("control reply cannot be encoded: %s", buf_cstr(&err));
	buf_free(&err);
}

static void put_reply(struct buf *out, int status, const char *reason)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "reply");
	ipc_put_int(&w, IPC_ATTR_STATUS, status);
	ipc_put_str(&w, IPC_ATTR_REASON, reason);
	frame_end(&w);
}

static void put_end(struct buf *out)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
	frame_end(&w);
}

static void put_queue(struct buf *out, const struct qmgr_squeue *q)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "queue");
	ipc_put_str(&w, IPC_ATTR_QUEUE, q->name);
	ipc_put_int(&w, IPC_ATTR_RCPTS, (int64_t)q->rcpts);
	ipc_put_int(&w, IPC_ATTR_PAUSED, q->state.paused);
	ipc_put_str(&w, IPC_ATTR_QUEUE_MODE, q->state.backoff ? "backoff" : "normal");
	ipc_put_int(&w, IPC_ATTR_CONNECTIONS, (int64_t)q->jobs);
	ipc_put_int(&w, IPC_ATTR_NEXT_RETRY, q->state.next_retry);
	ipc_put_int(&w, IPC_ATTR_DELIVERED, (int64_t)q->delivered);
	ipc_put_int(&w, IPC_ATTR_BOUNCED, (int64_t)q->bounced);
	ipc_put_int(&w, IPC_ATTR_DEFERRED, (int64_t)q->deferred);
	ipc_put_int(&w, IPC_ATTR_PRIORITY, (int64_t)q->priority);
	if (q->last_error && q->state.next_retry)
		ipc_put_str(&w, IPC_ATTR_REASON, q->last_error);
	frame_end(&w);
}

static bool matches(const char *pattern, const char *name)
{
	return pattern == NULL || fnmatch(pattern, name, FNM_CASEFOLD) == 0;
}

/* ---- show ------------------------------------------------------------------------ */

static void show_queues(struct qmgr_control *ctl, const struct ipc_msg *m, struct buf *out)
{
	const char *pattern = ipc_msg_str(m, IPC_ATTR_QUEUE);
	bool paused_only = ipc_msg_int(m, IPC_ATTR_PAUSED) != 0;
	bool errors_only = ipc_msg_int(m, IPC_ATTR_ERRORS) != 0;
	put_reply(out, 0, "ok");
	for (struct qmgr_squeue *q = qmgr_sched_first(ctl->sched); q; q = q->next) {
		if (!matches(pattern, q->name) || (paused_only && !q->state.paused) ||
		    (errors_only && !q->state.next_retry))
			continue;
		/* an empty, quiet queue is not worth a line unless named */
		if (pattern == NULL && q->rcpts == 0 && q->jobs == 0 && !q->state.paused)
			continue;
		put_queue(out, q);
	}
}

static int by_rcpts(const void *a, const void *b)
{
	const struct qmgr_squeue *x = *(struct qmgr_squeue *const *)a, *y = *(struct qmgr_squeue *const *)b;
	return x->rcpts < y->rcpts ? 1 : x->rcpts > y->rcpts ? -1 : strcmp(x->name, y->name);
}

static void show_topqueues(struct qmgr_control *ctl, struct buf *out)
{
	size_t n = 0, cap = 0;
	struct qmgr_squeue **v = NULL;
	for (struct qmgr_squeue *q = qmgr_sched_first(ctl->sched); q; q = q->next) {
		if (q->rcpts == 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			v = mem_reallocarray(v, cap, sizeof(*v));
		}
		v[n++] = q;
	}
	if (n)
		qsort(v, n, sizeof(*v), by_rcpts);
	put_reply(out, 0, "ok");
	for (size_t i = 0; i < n && i < TOP_QUEUES; i++)
		put_queue(out, v[i]);
	free(v);
}

struct domain_row {
	char *domain;
	uint64_t rcpts, queues, connections;
};

static void show_domains(struct qmgr_control *ctl, struct buf *out)
{
	struct domain_row *rows = NULL;
	size_t n = 0;
	for (struct qmgr_squeue *q = qmgr_sched_first(ctl->sched); q; q = q->next) {
		if (q->rcpts == 0 && q->jobs == 0)
			continue;
		size_t len = strcspn(q->name, "/"), i = 0;
		while (i < n && !(strlen(rows[i].domain) == len && strncmp(rows[i].domain, q->name, len) == 0))
			i++;
		if (i == n) {
			rows = mem_reallocarray(rows, n + 1, sizeof(*rows));
			rows[n++] = (struct domain_row){.domain = mem_strndup(q->name, len)};
		}
		rows[i].rcpts += q->rcpts;
		rows[i].queues++;
		rows[i].connections += q->jobs;
	}
	put_reply(out, 0, "ok");
	for (size_t i = 0; i < n; i++) {
		struct ipc_writer w;
		ipc_write_begin(&w, out, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "domain");
		ipc_put_str(&w, IPC_ATTR_QUEUE, rows[i].domain);
		ipc_put_int(&w, IPC_ATTR_RCPTS, (int64_t)rows[i].rcpts);
		ipc_put_int(&w, IPC_ATTR_QUEUES, (int64_t)rows[i].queues);
		ipc_put_int(&w, IPC_ATTR_CONNECTIONS, (int64_t)rows[i].connections);
		frame_end(&w);
		free(rows[i].domain);
	}
	free(rows);
}

/* One "traffic" frame: counts by kind for a period. */
static void put_traffic_counts(struct buf *out, const char *period, const uint64_t counts[QMGR_TRAFFIC_KINDS])
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "traffic");
	ipc_put_str(&w, IPC_ATTR_STATE, period);
	ipc_put_int(&w, IPC_ATTR_RECEIVED_MSGS, (int64_t)counts[QMGR_IN_MSGS]);
	ipc_put_int(&w, IPC_ATTR_RECEIVED_RCPTS, (int64_t)counts[QMGR_IN_RCPTS]);
	ipc_put_int(&w, IPC_ATTR_DELIVERED, (int64_t)counts[QMGR_OUT_RCPTS]);
	frame_end(&w);
}

/* The last hour or minute, from its ring. */
static void put_traffic(struct buf *out, const char *period, const struct qmgr_traffic_ring *r)
{
	int64_t now = time(NULL);
	uint64_t counts[QMGR_TRAFFIC_KINDS];
	for (int k = 0; k < QMGR_TRAFFIC_KINDS; k++)
		counts[k] = qmgr_traffic_sum(r, now, (enum qmgr_traffic_kind)k);
	put_traffic_counts(out, period, counts);
}

static void show_status(struct qmgr_control *ctl, struct buf *out)
{
	const struct qmgr_counters *c = qmgr_sched_counters(ctl->sched);
	uint64_t rcpts = 0, queues = 0;
	for (struct qmgr_squeue *q = qmgr_sched_first(ctl->sched); q; q = q->next) {
		rcpts += q->rcpts;
		queues += q->rcpts > 0;
	}
	put_reply(out, 0, "ok");
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "status");
	ipc_put_int(&w, IPC_ATTR_RCPTS, (int64_t)rcpts);
	ipc_put_int(&w, IPC_ATTR_QUEUES, (int64_t)queues);
	ipc_put_int(&w, IPC_ATTR_CONNECTIONS, (int64_t)c->jobs);
	ipc_put_int(&w, IPC_ATTR_RECEIVED_MSGS, (int64_t)c->received_msgs);
	ipc_put_int(&w, IPC_ATTR_RECEIVED_RCPTS, (int64_t)c->received_rcpts);
	ipc_put_int(&w, IPC_ATTR_DELIVERED, (int64_t)c->delivered);
	ipc_put_int(&w, IPC_ATTR_BOUNCED, (int64_t)c->bounced);
	ipc_put_int(&w, IPC_ATTR_DEFERRED, (int64_t)c->deferred);
	ipc_put_int(&w, IPC_ATTR_OUTBOX_PENDING, (int64_t)qmgr_outbox_pending(ctl->outbox));
	ipc_put_int(&w, IPC_ATTR_UPTIME, (int64_t)time(NULL) - c->started);
	frame_end(&w);
	put_traffic(out, "hour", &c->last_hour);
	put_traffic(out, "minute", &c->last_minute);
	put_traffic_counts(out, "top-hour", c->top_hour);
	put_traffic_counts(out, "top-minute", c->top_minute);
}

/* ---- list and delete: a walk over one queue's recipients ---------------------------- */

struct rcpt_walk {
	struct qmgr_control *ctl;
	const struct ipc_msg *m;
	struct buf *out;
	int64_t left;    /* list: items still to show */
	struct buf keys; /* delete: qid + index of the chosen */
	size_t chosen;
	int64_t now;
};

/* The filters of list and delete (--rcpt, --orig; delete's --older-than). */
static bool selected(struct rcpt_walk *w, const struct qmgr_rcpt *r, const struct ipc_msg *env)
{
	const char *rcpt = ipc_msg_str(w->m, IPC_ATTR_RECIPIENT);
	const char *orig = ipc_msg_str(w->m, IPC_ATTR_SENDER);
	int64_t older = ipc_msg_int(w->m, IPC_ATTR_OLDER_THAN);
	if (rcpt && fnmatch(rcpt, r->address, FNM_CASEFOLD) != 0)
		return false;
	if (orig && fnmatch(orig, ipc_msg_str(env, IPC_ATTR_SENDER), FNM_CASEFOLD) != 0)
		return false;
	return older <= 0 || w->now - ipc_msg_int(env, IPC_ATTR_RECEIVED) >= older;
}

static void put_rcpt(struct buf *out, const char *qid, size_t index, const struct qmgr_rcpt *r,
                     const struct ipc_msg *env)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "rcpt");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
	ipc_put_int(&w, IPC_ATTR_RCPT_INDEX, (int64_t)index);
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, r->address);
	ipc_put_str(&w, IPC_ATTR_SENDER, ipc_msg_str(env, IPC_ATTR_SENDER));
	ipc_put_str(&w, IPC_ATTR_QUEUE, r->queue);
	ipc_put_str(&w, IPC_ATTR_RCPT_STATE, qmgr_rcpt_state_name(r->state));
	ipc_put_int(&w, IPC_ATTR_ATTEMPTS, r->attempts);
	ipc_put_int(&w, IPC_ATTR_NEXT_ATTEMPT, r->next_attempt);
	ipc_put_int(&w, IPC_ATTR_RECEIVED, ipc_msg_int(env, IPC_ATTR_RECEIVED));
	ipc_put_int(&w, IPC_ATTR_BODY_SIZE, ipc_msg_int(env, IPC_ATTR_BODY_SIZE));
	if (r->last_result)
		ipc_put_str(&w, IPC_ATTR_LAST_RESULT, r->last_result);
	frame_end(&w);
}

static bool visit_rcpt(void *ctx, const char *qid, size_t index, int64_t due)
{
	struct rcpt_walk *w = ctx;
	struct qmgr_store *st = qmgr_sched_store(w->ctl->sched);
	struct qmgr_rcpt r;
	struct ipc_msg env;
	bool found;
	struct buf err = BUF_INIT;
	if (!qmgr_store_get_rcpt(st, qid, index, &r, &found, &err)) {
		buf_free(&err);
		return true;
	}
	if (qmgr_store_get_message(st, qid, &env, &found, &err)) {
		if (w->out && w->left > 0 && selected(w, &r, &env)) {
			put_rcpt(w->out, qid, index, &r, &env);
			w->left--;
		} else if (!w->out && selected(w, &r, &env)) {
			buf_append(&w->keys, qid, QMGR_QID_SIZE);
			buf_append(&w->keys, &index, sizeof(index));
			w->chosen++;
		}
		ipc_msg_free(&env);
	}
	qmgr_rcpt_free(&r);
	buf_free(&err);
	return w->out == NULL || w->left > 0;
}

static void list_queue(struct qmgr_control *ctl, const struct ipc_msg *m, struct buf *out)
{
	const char *name = ipc_msg_str(m, IPC_ATTR_QUEUE);
	if (name == NULL || qmgr_sched_find(ctl->sched, name) == NULL) {
		put_reply(out, 1, name ? "no such queue" : "which queue? (--queue=domain/vmta)");
		return;
	}
	int64_t max = ipc_msg_has(m, IPC_ATTR_MAX_ITEMS) ? ipc_msg_int(m, IPC_ATTR_MAX_ITEMS) : LIST_DEFAULT_ITEMS;
	put_reply(out, 0, "ok");
	struct rcpt_walk w = {.ctl = ctl, .m = m, .out = out, .left = max};
	struct buf err = BUF_INIT;
	if (!qmgr_store_walk_queue(qmgr_sched_store(ctl->sched), name, visit_rcpt, &w, &err))
		log_error("list %s: %s", name, buf_cstr(&err));
	buf_free(&err);
}

/* ---- mailq: every message still to deliver ------------------------------------------ */

struct mailq_walk {
	struct qmgr_store *st;
	struct buf *out;
	int64_t left;
	size_t skipped; /* messages beyond max_items */
};

static void put_mailq_rcpt(struct buf *out, const struct qmgr_rcpt *r)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "rcpt");
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, r->address);
	ipc_put_str(&w, IPC_ATTR_RCPT_STATE, qmgr_rcpt_state_name(r->state));
	ipc_put_int(&w, IPC_ATTR_NEXT_ATTEMPT, r->next_attempt);
	if (r->last_result)
		ipc_put_str(&w, IPC_ATTR_LAST_RESULT, r->last_result);
	frame_end(&w);
}

static void put_mailq_message(struct buf *out, const char *qid, const struct ipc_msg *msg)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "message");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
	ipc_put_str(&w, IPC_ATTR_SENDER, ipc_msg_str(msg, IPC_ATTR_SENDER));
	ipc_put_int(&w, IPC_ATTR_RECEIVED, ipc_msg_int(msg, IPC_ATTR_RECEIVED));
	ipc_put_int(&w, IPC_ATTR_BODY_SIZE, ipc_msg_int(msg, IPC_ATTR_BODY_SIZE));
	frame_end(&w);
}

/* The message's recipients still waiting, as frames in rcpts. */
static size_t waiting_rcpts(struct qmgr_store *st, const char *qid, const struct ipc_msg *msg, struct buf *rcpts)
{
	size_t n = 0, count = (size_t)ipc_msg_int(msg, IPC_ATTR_RCPT_COUNT);
	struct buf err = BUF_INIT;
	for (size_t i = 0; i < count; i++) {
		struct qmgr_rcpt r;
		bool found;
		buf_reset(&err);
		if (!qmgr_store_get_rcpt(st, qid, i, &r, &found, &err))
			continue;
		if (r.state == QMGR_RCPT_PENDING || r.state == QMGR_RCPT_DEFERRED) {
			put_mailq_rcpt(rcpts, &r);
			n++;
		}
		qmgr_rcpt_free(&r);
	}
	buf_free(&err);
	return n;
}

static bool visit_mailq_message(void *ctx, const char *qid, const struct ipc_msg *msg)
{
	struct mailq_walk *w = ctx;
	struct buf rcpts = BUF_INIT;
	if (waiting_rcpts(w->st, qid, msg, &rcpts) > 0) {
		if (w->left > 0) {
			put_mailq_message(w->out, qid, msg);
			buf_append(w->out, rcpts.data, rcpts.len);
			w->left--;
		} else {
			w->skipped++;
		}
	}
	buf_free(&rcpts);
	return true;
}

static void mailq(struct qmgr_control *ctl, const struct ipc_msg *m, struct buf *out)
{
	struct buf list = BUF_INIT, err = BUF_INIT, reason = BUF_INIT;
	struct mailq_walk w = {.st = qmgr_sched_store(ctl->sched), .out = &list, .left = MAILQ_DEFAULT_ITEMS};
	if (ipc_msg_has(m, IPC_ATTR_MAX_ITEMS))
		w.left = ipc_msg_int(m, IPC_ATTR_MAX_ITEMS);
	bool ok = qmgr_store_walk_messages(w.st, visit_mailq_message, &w, &err);
	if (!ok) {
		log_error("mailq: %s", buf_cstr(&err));
		put_reply(out, 1, "the queue cannot be read (see the log)");
	} else {
		if (w.skipped)
			buf_printf(&reason, "%zu more message%s not shown", w.skipped, w.skipped == 1 ? "" : "s");
		put_reply(out, 0, w.skipped ? buf_cstr(&reason) : "ok");
		buf_append(out, list.data, list.len);
	}
	buf_free(&list);
	buf_free(&err);
	buf_free(&reason);
}

/* Deleted recipients are final (bounced, with a "b" record unless
 * no_accounting) and get no DSN: the operator chose to drop them. */
static size_t delete_in(struct qmgr_control *ctl, struct qmgr_squeue *q, const struct ipc_msg *m)
{
	struct qmgr_store *st = qmgr_sched_store(ctl->sched);
	struct rcpt_walk w = {.ctl = ctl, .m = m, .now = time(NULL)};
	struct buf err = BUF_INIT;
	if (!qmgr_store_walk_queue(st, q->name, visit_rcpt, &w, &err))
		log_error("delete in %s: %s", q->name, buf_cstr(&err));
	bool accounting = ipc_msg_int(m, IPC_ATTR_NO_ACCOUNTING) == 0;
	struct qmgr_outcome o = {.state = QMGR_RCPT_BOUNCED,
	                         .result = "deleted: 5.0.0 deleted by the operator",
	                         .rtype = accounting ? "b" : NULL};
	size_t deleted = 0, step = QMGR_QID_SIZE + sizeof(size_t);
	for (size_t i = 0; i < w.chosen; i++) {
		const char *qid = w.keys.data + i * step;
		size_t index;
		memcpy(&index, qid + QMGR_QID_SIZE, sizeof(index));
		bool changed = false;
		buf_reset(&err);
		if (qmgr_store_apply(st, qid, index, &o, time(NULL), &changed, &err) != QMGR_STORE_OK)
			log_error("%s: recipient %zu: cannot delete: %s", qid, index, buf_cstr(&err));
		else if (changed)
			deleted++;
		if (changed)
			log_info("%s: recipient %zu deleted from %s by the operator", qid, index, q->name);
	}
	qmgr_sched_removed(ctl->sched, q, deleted);
	buf_free(&w.keys);
	buf_free(&err);
	return deleted;
}

/* ---- pause, resume, schedule, delete ---------------------------------------------- */

enum action { PAUSE, RESUME, SCHEDULE, DELETE, SET_MODE };

static void act(struct qmgr_control *ctl, enum action a, const struct ipc_msg *m, struct buf *out)
{
	const char *pattern = ipc_msg_str(m, IPC_ATTR_QUEUE);
	if (pattern == NULL) {
		put_reply(out, 1, "which queue? (domain/vmta, */*, domain/*)");
		return;
	}
	const char *mode = ipc_msg_str(m, IPC_ATTR_QUEUE_MODE);
	if (a == SET_MODE && (mode == NULL || (strcmp(mode, "backoff") != 0 && strcmp(mode, "normal") != 0))) {
		put_reply(out, 1, "which mode? (--mode=backoff or --mode=normal)");
		return;
	}
	size_t queues = 0, rcpts = 0;
	bool ok = true;
	for (struct qmgr_squeue *q = qmgr_sched_first(ctl->sched); q; q = q->next) {
		if (!matches(pattern, q->name))
			continue;
		queues++;
		if (a == PAUSE || a == RESUME)
			ok = qmgr_sched_set_paused(ctl->sched, q, a == PAUSE) && ok;
		else if (a == SCHEDULE)
			ok = qmgr_sched_retry_now(ctl->sched, q) && ok;
		else if (a == SET_MODE)
			ok = qmgr_sched_set_mode(ctl->sched, q, strcmp(mode, "backoff") == 0, "set by the operator") &&
			     ok;
		else
			rcpts += delete_in(ctl, q, m);
	}
	struct buf reason = BUF_INIT;
	static const char *const done[] = {"paused", "resumed", "scheduled", "searched", "set to "};
	if (queues == 0)
		buf_printf(&reason, "no queue matches %s", pattern);
	else if (a == DELETE)
		buf_printf(&reason, "%zu recipients deleted", rcpts);
	else
		buf_printf(&reason, "%zu queue%s %s%s", queues, queues == 1 ? "" : "s", done[a],
		           a == SET_MODE ? mode : "");
	put_reply(out, queues == 0 || !ok ? 1 : 0, buf_cstr(&reason));
	buf_free(&reason);
}

/* ---- dispatch ---------------------------------------------------------------------- */

static bool read_only(const char *verb)
{
	return strncmp(verb, "show-", 5) == 0 || strcmp(verb, "list") == 0 || strcmp(verb, "status") == 0 ||
	       strcmp(verb, "mailq") == 0;
}

void qmgr_control_handle(struct qmgr_control *ctl, const char *verb, const void *payload, size_t len, struct buf *out)
{
	struct ipc_msg m;
	struct buf err = BUF_INIT;
	const char *v = verb + strlen("qmgr.");
	if (!ipc_decode(payload, len, request_spec, IPC_SPEC_COUNT(request_spec), &m, &err)) {
		put_reply(out, 1, buf_cstr(&err));
	} else if (!read_only(v) &&
	           (!ipc_msg_has(&m, IPC_ATTR_ROLE) || strcmp(ipc_msg_str(&m, IPC_ATTR_ROLE), "admin") != 0)) {
		put_reply(out, 2, "this needs an administrator");
	} else if (strcmp(v, "show-queues") == 0) {
		show_queues(ctl, &m, out);
	} else if (strcmp(v, "show-topqueues") == 0) {
		show_topqueues(ctl, out);
	} else if (strcmp(v, "show-domains") == 0) {
		show_domains(ctl, out);
	} else if (strcmp(v, "status") == 0) {
		show_status(ctl, out);
	} else if (strcmp(v, "list") == 0) {
		list_queue(ctl, &m, out);
	} else if (strcmp(v, "mailq") == 0) {
		mailq(ctl, &m, out);
	} else if (strcmp(v, "pause") == 0) {
		act(ctl, PAUSE, &m, out);
	} else if (strcmp(v, "resume") == 0) {
		act(ctl, RESUME, &m, out);
	} else if (strcmp(v, "schedule") == 0) {
		act(ctl, SCHEDULE, &m, out);
	} else if (strcmp(v, "delete") == 0) {
		act(ctl, DELETE, &m, out);
	} else if (strcmp(v, "set-mode") == 0) {
		act(ctl, SET_MODE, &m, out);
	} else {
		buf_printf(&err, "qmgr has no request \"%s\"", v);
		put_reply(out, 1, buf_cstr(&err));
	}
	put_end(out);
	ipc_msg_free(&m);
	buf_free(&err);
}

struct qmgr_control *qmgr_control_new(struct qmgr_sched *sched, struct qmgr_outbox *outbox)
{
	struct qmgr_control *ctl = mem_zalloc(sizeof(*ctl));
	ctl->sched = sched;
	ctl->outbox = outbox;
	return ctl;
}

void qmgr_control_free(struct qmgr_control *ctl)
{
	free(ctl);
}
