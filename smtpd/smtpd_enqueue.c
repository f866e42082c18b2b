/* smtpd_enqueue.c: handing a message to qmgr over <spool>/private/qmgr.
 * The frames are built and read by common/enqueue (shared with pickup);
 * this file streams them on smtpd's event loop, and the rest of smtpd sees
 * open / write / finish / abort.
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

#include "enqueue.h"
#include "bev_write.h"
#include "ipc.h"
#include "ipc_evbuffer.h"
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

/* Queues a frame that enqueue_put_*() appended to frame (ok), or notes
 * that a value could not be encoded (too long): refuse rather than guess. */
static void write_frame_out(struct smtpd_enqueue *e, struct buf *frame, bool ok, struct buf *err)
{
	if (!ok && !e->failed)
		buf_printf(&e->why, "cannot encode: %s", buf_cstr(err));
	e->failed = e->failed || !ok;
	if (!e->failed && frame->len)
		bufferevent_write(e->bev, frame->data, frame->len);
	buf_reset(frame);
	buf_reset(err);
}

/* qmgr wants a domain on every recipient: <Postmaster> is ours. */
static char *qualified_recipient(const struct smtpd_session *s, const char *mailbox)
{
	if (strchr(mailbox, '@'))
		return mem_strdup(mailbox);
	return mem_asprintf("%s@%s", mailbox, s->conf->hostname);
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
	struct buf frame = BUF_INIT, err = BUF_INIT;
	e->envelope_sent = true;
	const struct enqueue_envelope env = {
	    .sender = t->sender.mailbox,
	    .envid = t->envid,
	    .ret = t->ret,
	    .declared_size = t->declared_size,
	    .body_type = t->body_type,
	    .smtputf8 = t->smtputf8,
	    .client_ip = s->client_text,
	    .helo = s->helo,
	    .src_type = "smtp",
	    .listener = s->listener->name,
	    .auth_user = s->auth_user,
	    .vmta = t->vmta ? t->vmta : default_vmta(s),
	    .mail_job = t->job_id,
	};
	write_frame_out(e, &frame, enqueue_put_envelope(&frame, &env, &err), &err);
	for (const struct smtpd_rcpt *r = t->rcpts; r; r = r->next) {
		char *rcpt = qualified_recipient(s, r->mailbox);
		write_frame_out(e, &frame, enqueue_put_rcpt(&frame, rcpt, r->orcpt, r->notify, &err), &err);
		free(rcpt);
	}
	buf_free(&frame);
	buf_free(&err);
}

static void flush_chunk(struct smtpd_enqueue *e)
{
	if (e->chunk.len == 0)
		return;
	struct buf frame = BUF_INIT, err = BUF_INIT;
	write_frame_out(e, &frame, enqueue_put_data(&frame, e->chunk.data, e->chunk.len, &err), &err);
	buf_free(&frame);
	buf_free(&err);
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
	struct buf err = BUF_INIT, payload = BUF_INIT;
	enum ipc_frame_status st = ipc_frame_take_evbuffer(bufferevent_get_input(bev), 0, &payload, &err);
	if (st == IPC_FRAME_PARTIAL) {
		buf_free(&err);
		return;
	}
	if (st == IPC_FRAME_ERROR || e->done == NULL) {
		buf_printf(&err, "%sunexpected answer from qmgr", err.len ? ": " : "");
		fail_now(e, buf_cstr(&err));
		buf_free(&err);
		buf_free(&payload);
		return;
	}
	struct enqueue_reply reply;
	bool ok = enqueue_reply_decode(payload.data, payload.len, &reply, &err);
	buf_free(&payload);
	if (!ok) {
		buf_puts(&err, " (answer from qmgr)");
		fail_now(e, buf_cstr(&err));
	} else {
		finish(e, reply.code, reply.queue_id, reply.reason);
	}
	enqueue_reply_free(&reply);
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
	/* writing is bev_write_now()'s: it arms EV_WRITE when qmgr lags */
	bufferevent_enable(e->bev, EV_READ);
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
		if (e->chunk.len == ENQUEUE_CHUNK) {
			flush_chunk(e);
			bev_write_now(e->bev);
		}
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
	struct buf frame = BUF_INIT, err = BUF_INIT;
	write_frame_out(e, &frame, enqueue_put_end(&frame, &err), &err);
	bev_write_now(e->bev);
	buf_free(&frame);
	buf_free(&err);
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
