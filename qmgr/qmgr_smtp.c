/* qmgr_smtp.c: qmgr's side of smtp's job protocol (doc/delivery.md).
 * One connection to <spool>/private/smtp carries every job at once, each
 * named by its job_id; results come back per recipient and are handed to
 * the scheduler, which owns all state.  Once a job's "done" is applied,
 * qmgr answers "ack": smtp may forget the job's results.  When smtp is
 * down or the connection breaks, the jobs in flight are dropped from
 * memory (their recipients stay in flight in the database, and smtp
 * replays what it learns of them on the enqueue socket) and the
 * connection is tried again a second later. */
#include "qmgr.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_write.h"
#include "ipc_evbuffer.h"
#include "log.h"
#include "mem.h"

#define RECONNECT_SECS 1
#define READ_HIGH_WATER (IPC_FRAME_MAX_DEFAULT + IPC_FRAME_HEADER)

struct qmgr_smtp {
	struct event_base *base;
	struct qmgr_sched *sched;
	char *name; /* the agent: "smtp", "local" */
	char *path;
	struct bufferevent *bev;
	int64_t next_connect;
	struct qmgr_job_builder *builder; /* one at a time, reused */
	struct buf payload;
	bool warned;
};

struct qmgr_job_builder {
	struct qmgr_smtp *c;
	int64_t job_id;
	struct buf frames; /* the whole job, sent on run */
	char qid[QMGR_QID_SIZE];
	struct buf body; /* the open message's, sent by end_message */
	bool failed;
};

static const struct ipc_spec result_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},       {IPC_ATTR_JOB_ID, IPC_REQUIRED},       {IPC_ATTR_QUEUE_ID, IPC_REQUIRED},
    {IPC_ATTR_RCPT_INDEX, IPC_REQUIRED},    {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},    {IPC_ATTR_OUTCOME, IPC_REQUIRED},
    {IPC_ATTR_DSN_STATUS, IPC_OPTIONAL},    {IPC_ATTR_REASON, IPC_OPTIONAL},       {IPC_ATTR_SIZE, IPC_OPTIONAL},
    {IPC_ATTR_REMOTE_HOST, IPC_OPTIONAL},   {IPC_ATTR_REMOTE_IP, IPC_OPTIONAL},    {IPC_ATTR_LOCAL_IP, IPC_OPTIONAL},
    {IPC_ATTR_ESMTP, IPC_OPTIONAL},         {IPC_ATTR_TLS_PROTOCOL, IPC_OPTIONAL}, {IPC_ATTR_TLS_CIPHER, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_TYPE, IPC_OPTIONAL},
};
static const struct ipc_spec done_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_JOB_ID, IPC_REQUIRED},      {IPC_ATTR_OUTCOME, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_OPTIONAL},  {IPC_ATTR_RETRY_AFTER, IPC_OPTIONAL},
};
static const struct ipc_spec error_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_OPTIONAL},
    {IPC_ATTR_JOB_ID, IPC_OPTIONAL},
};

bool qmgr_smtp_decode_result(const void *payload, size_t len, struct ipc_msg *m, struct buf *err)
{
	return ipc_decode(payload, len, result_spec, IPC_SPEC_COUNT(result_spec), m, err);
}

/* ---- the connection ------------------------------------------------------------ */

/* The agent's jobs end with it; an agent that closes a connection with
 * nothing on it (it is stopping) is no cause for a warning. */
static void disconnect(struct qmgr_smtp *c, const char *why, bool clean)
{
	if (c->bev == NULL)
		return;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->next_connect = time(NULL) + RECONNECT_SECS;
	size_t jobs = qmgr_sched_lost(c->sched, c);
	if (jobs > 0 || !clean)
		log_warning("%s connection lost: %s; %zu job%s in flight retried", c->name, why, jobs, jobs == 1 ? "" : "s");
	else
		log_info("%s closed its connection, no job in flight", c->name);
}

/* The job's results and its end are applied (committed): smtp may drop
 * what it kept of them for a replay. */
static void send_ack(struct qmgr_smtp *c, int64_t job_id)
{
	if (c->bev == NULL)
		return;
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "ack");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, job_id);
	if (ipc_write_end(&w, &err))
		bev_send(c->bev, frame.data, frame.len);
	else
		log_error("job %" PRId64 ": %s", job_id, buf_cstr(&err));
	buf_free(&frame);
	buf_free(&err);
}

static void handle_frame(struct qmgr_smtp *c)
{
	struct buf verb = BUF_INIT, err = BUF_INIT;
	struct ipc_msg m;
	bool ok = ipc_peek_request(c->payload.data, c->payload.len, &verb, &err);
	const char *v = buf_cstr(&verb);
	if (ok && strcmp(v, "result") == 0) {
		ok = ipc_decode(c->payload.data, c->payload.len, result_spec, IPC_SPEC_COUNT(result_spec), &m, &err);
		if (ok)
			qmgr_sched_result(c->sched, ipc_msg_int(&m, IPC_ATTR_JOB_ID), &m);
		ipc_msg_free(&m);
	} else if (ok && strcmp(v, "done") == 0) {
		ok = ipc_decode(c->payload.data, c->payload.len, done_spec, IPC_SPEC_COUNT(done_spec), &m, &err);
		if (ok) {
			int64_t job_id = ipc_msg_int(&m, IPC_ATTR_JOB_ID);
			qmgr_sched_done(c->sched, job_id, &m);
			send_ack(c, job_id);
		}
		ipc_msg_free(&m);
	} else if (ok && strcmp(v, "error") == 0) {
		ok = ipc_decode(c->payload.data, c->payload.len, error_spec, IPC_SPEC_COUNT(error_spec), &m, &err);
		if (ok)
			log_error("%s reports a protocol error: %s", c->name, ipc_msg_str(&m, IPC_ATTR_REASON));
		ipc_msg_free(&m);
		ok = false;
	} else if (ok) {
		buf_printf(&err, "unexpected request \"%s\"", v);
		ok = false;
	}
	if (!ok)
		disconnect(c, buf_cstr(&err), false);
	buf_free(&verb);
	buf_free(&err);
}

/* The results of one read are applied in one transaction. */
static void on_read(struct bufferevent *bev, void *arg)
{
	struct qmgr_smtp *c = arg;
	bev_read_waiting(bev);
	qmgr_sched_results_begin(c->sched);
	while (c->bev) {
		struct buf err = BUF_INIT;
		enum ipc_frame_status status =
		    ipc_frame_take_evbuffer(bufferevent_get_input(c->bev), 0, &c->payload, &err);
		if (status == IPC_FRAME_ERROR)
			disconnect(c, buf_cstr(&err), false);
		buf_free(&err);
		if (status != IPC_FRAME_COMPLETE)
			break;
		handle_frame(c);
	}
	qmgr_sched_results_end(c->sched);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct qmgr_smtp *c = arg;
	if (what & BEV_EVENT_ERROR)
		disconnect(c, strerror(EVUTIL_SOCKET_ERROR()), false);
	else if (what & BEV_EVENT_EOF)
		disconnect(c, "the agent closed the connection", true);
}

static bool connect_smtp(struct qmgr_smtp *c)
{
	if (c->bev)
		return true;
	if (time(NULL) < c->next_connect)
		return false;
	struct buf err = BUF_INIT;
	int fd = ipc_connect(c->path, &err);
	if (fd < 0) {
		if (!c->warned)
			log_warning("cannot reach %s: %s; deliveries wait", c->name, buf_cstr(&err));
		c->warned = true;
		c->next_connect = time(NULL) + RECONNECT_SECS;
		buf_free(&err);
		return false;
	}
	buf_free(&err);
	evutil_make_socket_nonblocking(fd);
	c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, READ_HIGH_WATER);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (c->warned)
		log_info("connected to %s", c->name);
	c->warned = false;
	return true;
}

bool qmgr_smtp_available(struct qmgr_smtp *c)
{
	return connect_smtp(c);
}

/* ---- jobs ----------------------------------------------------------------------- */

static void frame_end(struct qmgr_job_builder *b, struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err)) {
		log_error("job %" PRId64 ": %s", b->job_id, buf_cstr(&err));
		b->failed = true;
	}
	buf_free(&err);
}

struct qmgr_job_builder *qmgr_smtp_begin(struct qmgr_smtp *c, int64_t job_id, const char *queue)
{
	struct qmgr_job_builder *b = c->builder;
	buf_reset(&b->frames);
	b->job_id = job_id;
	b->failed = false;
	b->qid[0] = '\0';
	struct ipc_writer w;
	ipc_write_begin(&w, &b->frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "job");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, job_id);
	ipc_put_str(&w, IPC_ATTR_QUEUE, queue);
	frame_end(b, &w);
	return b;
}

static void put_if(struct ipc_writer *w, const struct ipc_msg *m, enum ipc_attr a)
{
	if (!ipc_msg_has(m, a))
		return;
	if (ipc_attr_type(a) == IPC_TYPE_INT)
		ipc_put_int(w, a, ipc_msg_int(m, a));
	else
		ipc_put_str(w, a, ipc_msg_str(m, a));
}

bool qmgr_smtp_add_message(struct qmgr_job_builder *b, const char *qid, const struct ipc_msg *env, struct buf *body,
                           struct buf *err)
{
	buf_free(&b->body);
	b->body = *body; /* taken over */
	buf_init(body);
	struct ipc_writer w;
	ipc_write_begin(&w, &b->frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "message");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, b->job_id);
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
	ipc_put_str(&w, IPC_ATTR_SENDER, ipc_msg_str(env, IPC_ATTR_SENDER));
	put_if(&w, env, IPC_ATTR_ENVID);
	put_if(&w, env, IPC_ATTR_RET);
	/* smtp knows 7BIT and 8BITMIME; BINARYMIME bodies go as 8BITMIME */
	if (ipc_msg_has(env, IPC_ATTR_BODY_TYPE))
		ipc_put_str(&w, IPC_ATTR_BODY_TYPE,
		            strcmp(ipc_msg_str(env, IPC_ATTR_BODY_TYPE), "7BIT") == 0 ? "7BIT" : "8BITMIME");
	put_if(&w, env, IPC_ATTR_SMTPUTF8);
	ipc_put_int(&w, IPC_ATTR_SIZE, (int64_t)b->body.len);
	frame_end(b, &w);
	memcpy(b->qid, qid, QMGR_QID_SIZE);
	return !b->failed;
}

bool qmgr_smtp_add_rcpt(struct qmgr_job_builder *b, size_t index, const struct qmgr_rcpt *r)
{
	struct ipc_writer w;
	ipc_write_begin(&w, &b->frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "recipient");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, b->job_id);
	ipc_put_int(&w, IPC_ATTR_RCPT_INDEX, (int64_t)index);
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, r->address);
	if (r->orcpt)
		ipc_put_str(&w, IPC_ATTR_ORCPT, r->orcpt);
	if (r->notify)
		ipc_put_str(&w, IPC_ATTR_NOTIFY, r->notify);
	frame_end(b, &w);
	return !b->failed;
}

void qmgr_smtp_end_message(struct qmgr_job_builder *b)
{
	const struct buf *body = &b->body;
	for (size_t off = 0; !b->failed && off < body->len; off += IPC_DATA_MAX) {
		size_t n = body->len - off < IPC_DATA_MAX ? body->len - off : IPC_DATA_MAX;
		struct ipc_writer w;
		ipc_write_begin(&w, &b->frames, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "data");
		ipc_put_int(&w, IPC_ATTR_JOB_ID, b->job_id);
		ipc_put_data(&w, IPC_ATTR_DATA, body->data + off, n);
		frame_end(b, &w);
	}
	buf_free(&b->body);
}

bool qmgr_smtp_can_run(const struct qmgr_job_builder *b)
{
	return !b->failed && b->c->bev != NULL;
}

bool qmgr_smtp_run(struct qmgr_job_builder *b, bool send)
{
	struct qmgr_smtp *c = b->c;
	if (!send || b->failed || c->bev == NULL)
		return false;
	struct ipc_writer w;
	ipc_write_begin(&w, &b->frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "run");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, b->job_id);
	frame_end(b, &w);
	if (b->failed)
		return false;
	/* Out now rather than on the next turn of the loop: its recipients
	 * are in flight in the database already, and a crash before smtp
	 * has the job would hold them for in-flight-grace. */
	bev_send(c->bev, b->frames.data, b->frames.len);
	buf_reset(&b->frames);
	return true;
}

/* ---- life ----------------------------------------------------------------------- */

struct qmgr_smtp *qmgr_smtp_new(struct event_base *base, const char *spool, struct qmgr_sched *sched)
{
	return qmgr_smtp_new_agent(base, spool, "smtp", sched);
}

struct qmgr_smtp *qmgr_smtp_new_agent(struct event_base *base, const char *spool, const char *name,
                                      struct qmgr_sched *sched)
{
	struct qmgr_smtp *c = mem_zalloc(sizeof(*c));
	c->base = base;
	c->sched = sched;
	c->name = mem_strdup(name);
	c->path = mem_asprintf("%s/private/%s", spool, name);
	c->builder = mem_zalloc(sizeof(*c->builder));
	c->builder->c = c;
	return c;
}

void qmgr_smtp_free(struct qmgr_smtp *c)
{
	if (c == NULL)
		return;
	if (c->bev)
		bufferevent_free(c->bev);
	buf_free(&c->builder->frames);
	buf_free(&c->builder->body);
	free(c->builder);
	buf_free(&c->payload);
	free(c->path);
	free(c->name);
	free(c);
}
