/* smtpd_enqueue.c: handing a message to qmgr over <spool>/private/qmgr.
 * This is the only file that knows the enqueue protocol (qmgr's
 * doc/queue.md); the rest of smtpd sees open / write / finish / abort.
 *
 * One connection per message, in IPC frames (common/ipc.h):
 *
 *   smtpd -> qmgr  request=enqueue  sender, [envid], [ret], [size] (declared),
 *                                   [body_type], [smtputf8], client_ip,
 *                                   helo, src_type=smtp, listener,
 *                                   [auth_user], [vmta], [mail_job]
 *   smtpd -> qmgr  request=rcpt     recipient, [orcpt], [notify]   (each)
 *   smtpd -> qmgr  request=data     data (at most IPC_DATA_MAX octets)  (each)
 *   smtpd -> qmgr  request=end
 *   qmgr -> smtpd  status (250, 451, 452, 552), [queue_id], [reason]
 *
 * The connection is opened at DATA (or the first BDAT), so that a missing
 * qmgr is a 451 before the client sends the message; the envelope goes
 * out with the first text, once the header section has named the virtual
 * MTA and the job.  qmgr answers 250 with the queue ID only once the
 * message is durable.  A connection that closes before "end" abandons the
 * message: qmgr keeps nothing of it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "ipc.h"
#include "log.h"
#include "mem.h"
#include "smtpd.h"

/* Body octets gathered before a data frame is sent. */
#define ENQUEUE_CHUNK (64 * 1024)
/* Below this much unsent text, a client paused for qmgr is read again. */
#define ENQUEUE_LOW (256 * 1024)
/* How long qmgr may take to make a message durable. */
#define ENQUEUE_REPLY_SECONDS 120
/* Idle connections to qmgr kept for the next messages: a connect per
 * message costs smtpd and qmgr more than the message's own frames. */
#define ENQUEUE_POOL_MAX 16

struct smtpd_enqueue {
	struct smtpd_session *session;
	struct bufferevent *bev;
	struct buf chunk; /* body text not yet framed */
	uint64_t sent;    /* body octets framed */
	bool envelope_sent;
	bool failed;
	struct buf why;
	smtpd_enqueue_done_fn done;
	struct event *later; /* reports a failure outside the caller's stack */
};

static void enqueue_free(struct smtpd_enqueue *e)
{
	if (e->bev)
		bufferevent_free(e->bev);
	if (e->later)
		event_free(e->later);
	buf_free(&e->chunk);
	buf_free(&e->why);
	free(e);
}

static void send_frame(struct smtpd_enqueue *e, struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err)) {
		/* a value we cannot encode (too long): refuse rather than guess */
		if (!e->failed)
			buf_printf(&e->why, "cannot encode: %s", buf_cstr(&err));
		e->failed = true;
	}
	buf_free(&err);
}

static void write_frame_out(struct smtpd_enqueue *e, struct buf *frame)
{
	if (!e->failed && frame->len)
		bufferevent_write(e->bev, frame->data, frame->len);
	buf_reset(frame);
}

static void put_opt(struct ipc_writer *w, enum ipc_attr attr, const char *value)
{
	if (value)
		ipc_put_str(w, attr, value);
}

/* qmgr wants a domain on every recipient: <Postmaster> is ours. */
static void put_recipient(struct ipc_writer *w, const struct smtpd_session *s, const char *mailbox)
{
	if (strchr(mailbox, '@')) {
		ipc_put_str(w, IPC_ATTR_RECIPIENT, mailbox);
		return;
	}
	char *qualified = mem_asprintf("%s@%s", mailbox, s->conf->hostname);
	ipc_put_str(w, IPC_ATTR_RECIPIENT, qualified);
	free(qualified);
}

/* "by-smtp-source-ip" is a rule for the delivery side, not a name. */
static const char *default_vmta(const struct smtpd_session *s)
{
	const char *v = s->policy.default_vmta;
	return v && strcasecmp(v, "by-smtp-source-ip") != 0 ? v : NULL;
}

static void send_envelope(struct smtpd_enqueue *e)
{
	const struct smtpd_session *s = e->session;
	const struct smtpd_txn *t = &s->txn;
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	e->envelope_sent = true;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, t->sender.mailbox);
	put_opt(&w, IPC_ATTR_ENVID, t->envid);
	put_opt(&w, IPC_ATTR_RET, t->ret);
	if (t->declared_size)
		ipc_put_int(&w, IPC_ATTR_SIZE, (int64_t)t->declared_size);
	put_opt(&w, IPC_ATTR_BODY_TYPE, t->body_type);
	if (t->smtputf8)
		ipc_put_int(&w, IPC_ATTR_SMTPUTF8, 1);
	ipc_put_str(&w, IPC_ATTR_CLIENT_IP, s->client_text);
	ipc_put_str(&w, IPC_ATTR_HELO, s->helo);
	ipc_put_str(&w, IPC_ATTR_SRC_TYPE, "smtp");
	ipc_put_str(&w, IPC_ATTR_LISTENER, s->listener->name);
	put_opt(&w, IPC_ATTR_AUTH_USER, s->auth_user);
	put_opt(&w, IPC_ATTR_VMTA, t->vmta ? t->vmta : default_vmta(s));
	put_opt(&w, IPC_ATTR_MAIL_JOB, t->job_id);
	send_frame(e, &w);
	write_frame_out(e, &frame);
	for (const struct smtpd_rcpt *r = t->rcpts; r; r = r->next) {
		ipc_write_begin(&w, &frame, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "rcpt");
		put_recipient(&w, s, r->mailbox);
		put_opt(&w, IPC_ATTR_ORCPT, r->orcpt);
		put_opt(&w, IPC_ATTR_NOTIFY, r->notify);
		send_frame(e, &w);
		write_frame_out(e, &frame);
	}
	buf_free(&frame);
}

static void flush_chunk(struct smtpd_enqueue *e)
{
	if (e->chunk.len == 0)
		return;
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "data");
	ipc_put_data(&w, IPC_ATTR_DATA, e->chunk.data, e->chunk.len);
	send_frame(e, &w);
	write_frame_out(e, &frame);
	buf_free(&frame);
	e->sent += e->chunk.len;
	buf_reset(&e->chunk);
}

/* ---- the pool of idle connections -------------------------------------------------- */

static void pool_remove(struct smtpd_server *srv, struct bufferevent *bev)
{
	for (size_t i = 0; i < srv->nidle_qmgr; i++) {
		if (srv->idle_qmgr[i] != bev)
			continue;
		srv->idle_qmgr[i] = srv->idle_qmgr[--srv->nidle_qmgr];
		bufferevent_free(bev);
		return;
	}
}

/* An idle connection that qmgr closes (a restart) or talks on is dropped. */
static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
	pool_remove(arg, bev);
}

static void on_idle_read(struct bufferevent *bev, void *arg)
{
	pool_remove(arg, bev);
}

/* Keeps a connection whose message qmgr has answered; false when the pool
 * is full or smtpd is stopping (the caller then closes it). */
static bool pool_put(struct smtpd_server *srv, struct bufferevent *bev)
{
	if (srv->stopping || srv->nidle_qmgr >= ENQUEUE_POOL_MAX || evbuffer_get_length(bufferevent_get_input(bev)) ||
	    evbuffer_get_length(bufferevent_get_output(bev)))
		return false;
	if (srv->idle_qmgr == NULL)
		srv->idle_qmgr = mem_calloc(ENQUEUE_POOL_MAX, sizeof(*srv->idle_qmgr));
	bufferevent_setcb(bev, on_idle_read, NULL, on_idle_event, srv);
	bufferevent_set_timeouts(bev, NULL, NULL);
	bufferevent_enable(bev, EV_READ);
	srv->idle_qmgr[srv->nidle_qmgr++] = bev;
	return true;
}

static struct bufferevent *pool_take(struct smtpd_server *srv)
{
	return srv->nidle_qmgr ? srv->idle_qmgr[--srv->nidle_qmgr] : NULL;
}

void smtpd_enqueue_pool_clear(struct smtpd_server *srv)
{
	while (srv->nidle_qmgr)
		bufferevent_free(srv->idle_qmgr[--srv->nidle_qmgr]);
	free(srv->idle_qmgr);
	srv->idle_qmgr = NULL;
}

/* ---- the answer ------------------------------------------------------------------------ */

static void finish(struct smtpd_enqueue *e, int code, const char *queue_id, const char *reason)
{
	smtpd_enqueue_done_fn done = e->done;
	struct smtpd_session *s = e->session;
	struct smtpd_server *srv = s->srv;
	e->done = NULL;
	/* qmgr answered (code != 0): the connection is ready for another message. */
	if (code != 0 && !e->failed && e->bev && pool_put(srv, e->bev))
		e->bev = NULL;
	if (done)
		done(s, code, queue_id, reason);
	enqueue_free(e);
}

static void fail_now(struct smtpd_enqueue *e, const char *why)
{
	if (!e->failed)
		buf_puts(&e->why, why);
	e->failed = true;
	if (e->done)
		finish(e, 0, NULL, buf_cstr(&e->why));
	else
		smtpd_session_resume(e->session); /* read on: the end gets the 451 */
}

static void on_reply(struct bufferevent *bev, void *arg)
{
	struct smtpd_enqueue *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	unsigned char head[IPC_FRAME_HEADER];
	size_t avail = evbuffer_get_length(in), len = 0;
	evbuffer_copyout(in, head, sizeof(head));
	struct buf err = BUF_INIT;
	enum ipc_frame_status st = ipc_frame_scan(head, avail, 0, &len, &err);
	if (st == IPC_FRAME_PARTIAL) {
		buf_free(&err);
		return;
	}
	if (st == IPC_FRAME_ERROR || e->done == NULL) {
		buf_printf(&err, "%sunexpected answer from qmgr", err.len ? ": " : "");
		fail_now(e, buf_cstr(&err));
		buf_free(&err);
		return;
	}
	static const struct ipc_spec spec[] = {
	    {IPC_ATTR_STATUS, IPC_REQUIRED},
	    {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},
	    {IPC_ATTR_REASON, IPC_OPTIONAL},
	};
	evbuffer_drain(in, IPC_FRAME_HEADER);
	unsigned char *payload = mem_alloc(len);
	evbuffer_remove(in, payload, len);
	struct ipc_msg msg;
	bool ok = ipc_decode(payload, len, spec, IPC_SPEC_COUNT(spec), &msg, &err);
	free(payload);
	if (!ok) {
		buf_puts(&err, " (answer from qmgr)");
		fail_now(e, buf_cstr(&err));
	} else {
		int code = (int)ipc_msg_int(&msg, IPC_ATTR_STATUS);
		const char *qid = ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID);
		if (code == 250 && (qid == NULL || *qid == '\0'))
			fail_now(e, "qmgr accepted without a queue ID");
		else
			finish(e, code, qid, ipc_msg_str(&msg, IPC_ATTR_REASON));
	}
	ipc_msg_free(&msg);
	buf_free(&err);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_enqueue *e = arg;
	if (what & BEV_EVENT_TIMEOUT)
		fail_now(e, "no answer from qmgr in time");
	else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		fail_now(e, what & BEV_EVENT_EOF ? "qmgr closed the connection" : strerror(EVUTIL_SOCKET_ERROR()));
}

static void on_written(struct bufferevent *bev, void *arg)
{
	struct smtpd_enqueue *e = arg;
	if (e->done == NULL)
		smtpd_session_resume(e->session);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	fail_now(arg, "qmgr connection failed");
}

/* ---- the interface --------------------------------------------------------------------- */

struct smtpd_enqueue *smtpd_enqueue_open(struct smtpd_session *s, struct buf *err)
{
	struct bufferevent *bev = pool_take(s->srv);
	if (bev == NULL) {
		int fd = ipc_connect_nonblocking(s->conf->qmgr_socket, err);
		if (fd < 0)
			return NULL;
		bev = bufferevent_socket_new(s->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL)
			log_fatal("cannot create a bufferevent");
	}
	struct smtpd_enqueue *e = mem_zalloc(sizeof(*e));
	e->session = s;
	e->bev = bev;
	bufferevent_setcb(e->bev, on_reply, on_written, on_event, e);
	bufferevent_setwatermark(e->bev, EV_WRITE, ENQUEUE_LOW, 0);
	/* a qmgr that stops reading must not hold the client forever */
	struct timeval tv = {ENQUEUE_REPLY_SECONDS, 0};
	bufferevent_set_timeouts(e->bev, NULL, &tv);
	bufferevent_enable(e->bev, EV_READ | EV_WRITE);
	return e;
}

void smtpd_enqueue_write(struct smtpd_enqueue *e, const void *data, size_t len)
{
	const char *p = data;
	if (!e->envelope_sent)
		send_envelope(e);
	while (len > 0) {
		size_t room = ENQUEUE_CHUNK - e->chunk.len;
		size_t n = len < room ? len : room;
		buf_append(&e->chunk, p, n);
		p += n;
		len -= n;
		if (e->chunk.len == ENQUEUE_CHUNK)
			flush_chunk(e);
	}
}

size_t smtpd_enqueue_pending(const struct smtpd_enqueue *e)
{
	return e->failed ? 0 : evbuffer_get_length(bufferevent_get_output(e->bev));
}

void smtpd_enqueue_finish(struct smtpd_enqueue *e, smtpd_enqueue_done_fn done)
{
	if (!e->envelope_sent)
		send_envelope(e);
	flush_chunk(e);
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
	send_frame(e, &w);
	write_frame_out(e, &frame);
	buf_free(&frame);
	e->done = done;
	struct timeval tv = {ENQUEUE_REPLY_SECONDS, 0};
	bufferevent_set_timeouts(e->bev, &tv, &tv);
	if (e->failed) {
		/* the caller expects the answer later, never from inside this call */
		e->later = evtimer_new(e->session->srv->base, on_later, e);
		struct timeval now = {0, 0};
		evtimer_add(e->later, &now);
	}
}

void smtpd_enqueue_abort(struct smtpd_enqueue *e)
{
	e->done = NULL;
	enqueue_free(e);
}
