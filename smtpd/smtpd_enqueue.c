/* smtpd_enqueue.c: handing a message to qmgr over <spool>/private/qmgr.
 * The frames are built and read by common/enqueue (shared with pickup);
 * this file streams them on smtpd's event loop, and the rest of smtpd sees
 * open / write / finish / abort.
 *
 * A message, in IPC frames (common/ipc.h):
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
 * A small message (its text fits in one chunk, its frames in
 * PIPE_MESSAGE_MAX) goes at its end on the process's shared connection,
 * the pipe, behind the messages already waiting there: qmgr answers them
 * in order (doc/queue.md), and what the sessions complete in one turn
 * goes in one write.  Any other streams on a connection of its own,
 * from a pool of idle ones.
 *
 * A connection is taken at DATA (or the first BDAT) unless the pipe is
 * up, so that a missing qmgr is a 451 before the client sends the
 * message; the envelope goes out with the first text, once the header
 * section has named the virtual MTA and the job.  A qmgr that is there
 * but busy, whose socket's backlog is full (connect fails with EAGAIN),
 * is not a failure: the frames wait in memory (up to HELD_MAX) and the
 * connection is tried again with each chunk, then, once the message is
 * complete, after a short and growing wait, for as long as an answer
 * may take (ENQUEUE_REPLY_SECONDS).  qmgr answers 250 with
 * the queue ID only once the message is durable.  A connection that
 * closes before "end" abandons the message: qmgr keeps nothing of it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
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
/* Messages waiting for their answers on the pipe; qmgr reads on up to
 * 64 (qmgr_enqueue.c). */
#define PIPE_MAX 64
/* The frames of a message the pipe takes, at most: a message with many
 * recipients is a turn's work for qmgr alone, on its own connection. */
#define PIPE_MESSAGE_MAX (16 * 1024)
/* Frames held in memory while qmgr's backlog is full, at most. */
#define HELD_MAX (1024 * 1024)
/* The waits before connecting again to a busy qmgr: from the first,
 * doubling up to the last. */
#define CONNECT_RETRY_FIRST_MS 2
#define CONNECT_RETRY_LAST_MS 250

struct smtpd_enqueue {
	struct smtpd_session *session;
	struct bufferevent *bev; /* NULL on the pipe */
	struct buf chunk;        /* body text not yet framed */
	uint64_t sent;           /* body octets framed */
	bool envelope_sent;
	bool written; /* some frames left for qmgr on its own connection */
	bool failed;
	struct buf held;                 /* frames, while it has no connection of its own */
	struct smtpd_enqueue_pipe *pipe; /* the pipe it waits on, if any */
	struct smtpd_enqueue *pipe_next;
	struct buf why;
	smtpd_enqueue_done_fn done;
	struct event *later; /* reports a failure outside the caller's stack */
	struct event *retry; /* connects again to a busy qmgr */
	int retry_ms;
	time_t retry_until;
};

static void enqueue_free(struct smtpd_enqueue *e)
{
	if (e->bev)
		bufferevent_free(e->bev);
	if (e->later)
		event_free(e->later);
	if (e->retry)
		event_free(e->retry);
	buf_free(&e->chunk);
	buf_free(&e->held);
	buf_free(&e->why);
	free(e);
}

/* Where enqueue_put_*() encodes the next frame: straight into held
 * while the message has no connection of its own (it goes on the pipe
 * from there, no copy between), else into scratch. */
static struct buf *frame_buf(struct smtpd_enqueue *e, struct buf *scratch)
{
	return e->bev == NULL && !e->failed ? &e->held : scratch;
}

/* Queues a frame that enqueue_put_*() appended to frame (ok), or notes
 * that a value could not be encoded (too long): refuse rather than guess.
 * A frame encoded into held is where it belongs already (a failed one
 * is not there: the encoder takes it back). */
static void write_frame_out(struct smtpd_enqueue *e, struct buf *frame, bool ok, struct buf *err)
{
	if (!ok && !e->failed)
		buf_printf(&e->why, "cannot encode: %s", buf_cstr(err));
	e->failed = e->failed || !ok;
	buf_reset(err);
	if (frame == &e->held)
		return;
	if (!e->failed && frame->len && e->bev)
		bufferevent_write(e->bev, frame->data, frame->len);
	else if (!e->failed && frame->len)
		buf_append(&e->held, frame->data, frame->len);
	buf_reset(frame);
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
	struct buf scratch = BUF_INIT, err = BUF_INIT;
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
	struct buf *frame = frame_buf(e, &scratch);
	write_frame_out(e, frame, enqueue_put_envelope(frame, &env, &err), &err);
	for (const struct smtpd_rcpt *r = t->rcpts; r; r = r->next) {
		char *rcpt = qualified_recipient(s, r->mailbox);
		frame = frame_buf(e, &scratch);
		write_frame_out(e, frame, enqueue_put_rcpt(frame, rcpt, r->orcpt, r->notify, &err), &err);
		free(rcpt);
	}
	buf_free(&scratch);
	buf_free(&err);
}

static void flush_chunk(struct smtpd_enqueue *e)
{
	if (e->chunk.len == 0)
		return;
	struct buf scratch = BUF_INIT, err = BUF_INIT;
	struct buf *frame = frame_buf(e, &scratch);
	write_frame_out(e, frame, enqueue_put_data(frame, e->chunk.data, e->chunk.len, &err), &err);
	buf_free(&scratch);
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

/* ---- the pipe --------------------------------------------------------------------------- */

struct smtpd_enqueue_pipe {
	struct smtpd_server *srv;
	struct bufferevent *bev;
	struct smtpd_enqueue *head, *tail; /* waiting for their answers, in order */
	size_t n;
	struct event *write; /* what the turn put on it goes in one write */
	bool retiring;       /* a reload: closed once it owes nothing, takes nothing new */
	bool closed;         /* pipe_close ran (an answer's callback may end the server) */
	bool dispatching;    /* inside on_pipe_reply: freeing waits for it */
};

/* A message of the pipe has its answer: to its session, if still there. */
static void answer_and_free(struct smtpd_enqueue *e, int code, const char *queue_id, const char *reason)
{
	smtpd_enqueue_done_fn done = e->done;
	e->done = NULL;
	if (done)
		done(e->session, code, queue_id, reason);
	enqueue_free(e);
}

/* The pipe is over: every message still on it gets why (or nothing, when
 * its session is gone). */
static void pipe_close(struct smtpd_enqueue_pipe *p, const char *why)
{
	if (p->closed)
		return;
	p->closed = true;
	if (p->srv->pipe == p)
		p->srv->pipe = NULL;
	bufferevent_free(p->bev);
	p->bev = NULL;
	event_free(p->write);
	while (p->head) {
		struct smtpd_enqueue *e = p->head;
		p->head = e->pipe_next;
		answer_and_free(e, 0, NULL, why);
	}
	if (!p->dispatching)
		free(p);
}

static bool pipe_answer(struct smtpd_enqueue_pipe *p, const struct buf *payload, struct buf *err)
{
	struct enqueue_reply reply;
	if (p->head == NULL) {
		buf_puts(err, "an answer from qmgr for no message");
		return false;
	}
	if (!enqueue_reply_decode(payload->data, payload->len, &reply, err)) {
		buf_puts(err, " (answer from qmgr)");
		return false;
	}
	struct smtpd_enqueue *e = p->head;
	p->head = e->pipe_next;
	if (p->head == NULL) {
		p->tail = NULL;
		bufferevent_set_timeouts(p->bev, NULL, NULL);
	}
	p->n--;
	answer_and_free(e, reply.code, reply.queue_id, reply.reason);
	enqueue_reply_free(&reply);
	return true;
}

static void on_pipe_reply(struct bufferevent *bev, void *arg)
{
	struct smtpd_enqueue_pipe *p = arg;
	struct buf err = BUF_INIT, payload = BUF_INIT;
	p->dispatching = true;
	while (!p->closed) {
		enum ipc_frame_status st = ipc_frame_take_evbuffer(bufferevent_get_input(bev), 0, &payload, &err);
		if (st == IPC_FRAME_PARTIAL) {
			if (p->n == 0 && p->retiring)
				pipe_close(p, NULL);
			break;
		}
		if (st == IPC_FRAME_ERROR || !pipe_answer(p, &payload, &err)) {
			log_error("qmgr connection: %s", buf_cstr(&err));
			pipe_close(p, buf_cstr(&err));
			break;
		}
	}
	p->dispatching = false;
	if (p->closed)
		free(p);
	buf_free(&payload);
	buf_free(&err);
}

static void on_pipe_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & BEV_EVENT_TIMEOUT)
		pipe_close(arg, "no answer from qmgr in time");
	else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		pipe_close(arg, what & BEV_EVENT_EOF ? "qmgr closed the connection" : strerror(EVUTIL_SOCKET_ERROR()));
}

static void on_pipe_write(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_enqueue_pipe *p = arg;
	bev_write_now(p->bev);
}

/* The pipe that takes a message now, if any. */
static struct smtpd_enqueue_pipe *pipe_usable(struct smtpd_server *srv)
{
	struct smtpd_enqueue_pipe *p = srv->pipe;
	return p && p->n < PIPE_MAX && !p->retiring && !srv->stopping ? p : NULL;
}

/* The first pipe is the connection of the message that opens it. */
static struct smtpd_enqueue_pipe *pipe_open(struct smtpd_server *srv, struct smtpd_enqueue *e)
{
	struct smtpd_enqueue_pipe *p = mem_zalloc(sizeof(*p));
	p->srv = srv;
	p->bev = e->bev;
	e->bev = NULL;
	p->write = event_new(srv->base, -1, 0, on_pipe_write, p);
	bufferevent_setcb(p->bev, on_pipe_reply, NULL, on_pipe_event, p);
	bufferevent_setwatermark(p->bev, EV_WRITE, 0, 0);
	bufferevent_set_timeouts(p->bev, NULL, NULL);
	srv->pipe = p;
	return p;
}

static size_t pending_frames(const struct smtpd_enqueue *e)
{
	return e->bev ? evbuffer_get_length(bufferevent_get_output(e->bev)) : e->held.len;
}

/* A message complete before any of its frames left: onto the pipe, to
 * go out with what the other sessions put there in this turn. */
static void free_held(const void *data, size_t len, void *arg)
{
	(void)len, (void)arg;
	free((void *)data);
}

/* The held frames go to the end of out as they are: out takes their
 * memory instead of a copy. */
static void hand_held_to(struct smtpd_enqueue *e, struct evbuffer *out)
{
	size_t len = e->held.len;
	if (len == 0) {
		buf_free(&e->held);
		return;
	}
	char *frames = buf_detach(&e->held);
	if (evbuffer_add_reference(out, frames, len, free_held, NULL) != 0) {
		evbuffer_add(out, frames, len);
		free(frames);
	}
}

static bool pipe_put(struct smtpd_enqueue *e)
{
	struct smtpd_server *srv = e->session->srv;
	if (e->failed || e->written || pending_frames(e) > PIPE_MESSAGE_MAX)
		return false;
	struct smtpd_enqueue_pipe *p = pipe_usable(srv);
	if (p == NULL && (srv->pipe || e->bev == NULL || srv->stopping))
		return false;
	if (p == NULL)
		p = pipe_open(srv, e); /* the frames are on its connection */
	hand_held_to(e, bufferevent_get_output(p->bev));
	if (e->bev) {
		/* the front of a bufferevent's output is frozen to all but its
		 * own write (bev_write_now): this move takes all of it */
		struct evbuffer *frames = bufferevent_get_output(e->bev);
		evbuffer_unfreeze(frames, 1);
		evbuffer_add_buffer(bufferevent_get_output(p->bev), frames);
		evbuffer_freeze(frames, 1);
		if (!pool_put(srv, e->bev))
			bufferevent_free(e->bev);
		e->bev = NULL;
	}
	e->pipe = p;
	if (p->tail)
		p->tail->pipe_next = e;
	else
		p->head = e;
	p->tail = e;
	/* a qmgr that stops answering must not hold the clients forever */
	if (p->n++ == 0) {
		struct timeval tv = {ENQUEUE_REPLY_SECONDS, 0};
		bufferevent_set_timeouts(p->bev, &tv, &tv);
	}
	event_active(p->write, 0, 0);
	return true;
}

void smtpd_enqueue_pipe_retire(struct smtpd_server *srv)
{
	struct smtpd_enqueue_pipe *p = srv->pipe;
	if (p && p->n == 0)
		pipe_close(p, NULL);
	else if (p)
		p->retiring = true;
}

void smtpd_enqueue_pipe_close(struct smtpd_server *srv)
{
	if (srv->pipe)
		pipe_close(srv->pipe, "smtpd is stopping");
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

/* A connect that failed because qmgr has not yet accepted the ones
 * before it: its socket's backlog is full. */
static bool qmgr_busy(int err)
{
	return err == EAGAIN || err == EWOULDBLOCK;
}

/* The message's own connection: from the pool, or a new one.  On false,
 * errno is the connect's. */
static bool attach(struct smtpd_enqueue *e, struct buf *err)
{
	struct smtpd_session *s = e->session;
	struct bufferevent *bev = pool_take(s->srv);
	if (bev == NULL) {
		int fd = ipc_connect_nonblocking(s->conf->qmgr_socket, err);
		if (fd < 0)
			return false;
		bev = bufferevent_socket_new(s->srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL)
			log_fatal("cannot create a bufferevent");
	}
	e->bev = bev;
	bufferevent_setcb(e->bev, on_reply, on_written, on_event, e);
	bufferevent_setwatermark(e->bev, EV_WRITE, ENQUEUE_LOW, 0);
	/* a qmgr that stops reading must not hold the client forever */
	struct timeval tv = {ENQUEUE_REPLY_SECONDS, 0};
	bufferevent_set_timeouts(e->bev, NULL, &tv);
	/* writing is bev_write_now()'s: it arms EV_WRITE when qmgr lags */
	bufferevent_enable(e->bev, EV_READ);
	hand_held_to(e, bufferevent_get_output(e->bev));
	return true;
}

/* With a working pipe, qmgr is there: the message takes no connection
 * until it needs one (a body over a chunk), and likely never. */
struct smtpd_enqueue *smtpd_enqueue_open(struct smtpd_session *s, struct buf *err)
{
	struct smtpd_enqueue *e = mem_zalloc(sizeof(*e));
	e->session = s;
	if (pipe_usable(s->srv) == NULL && !attach(e, err)) {
		if (!qmgr_busy(errno)) {
			free(e);
			return NULL;
		}
		buf_reset(err); /* there, only busy: attach_late tries again */
	}
	return e;
}

/* A message that outgrew the pipe's: its own connection now, or a 451
 * at its end.  A busy qmgr leaves the frames held, within HELD_MAX. */
static void attach_late(struct smtpd_enqueue *e)
{
	struct buf err = BUF_INIT;
	if (e->bev == NULL && !e->failed && !attach(e, &err) && !(qmgr_busy(errno) && e->held.len <= HELD_MAX)) {
		buf_printf(&e->why, "qmgr: %s", buf_cstr(&err));
		e->failed = true;
		buf_free(&e->held);
	}
	buf_free(&err);
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
			attach_late(e);
			if (e->bev) {
				bev_write_now(e->bev);
				e->written = true;
			}
		}
	}
}

size_t smtpd_enqueue_pending(const struct smtpd_enqueue *e)
{
	return e->failed || e->bev == NULL ? 0 : evbuffer_get_length(bufferevent_get_output(e->bev));
}

/* A complete message to qmgr: on the pipe, or on a connection of its
 * own, out and answered in time; false when it went on neither (a busy
 * qmgr, or a failure). */
static bool hand_over(struct smtpd_enqueue *e)
{
	if (pipe_put(e))
		return true;
	attach_late(e); /* the pipe is full, or went away meanwhile */
	if (e->bev == NULL)
		return false;
	bev_write_now(e->bev);
	struct timeval tv = {ENQUEUE_REPLY_SECONDS, 0};
	bufferevent_set_timeouts(e->bev, &tv, &tv);
	return true;
}

static void on_connect_retry(evutil_socket_t fd, short what, void *arg);

static void retry_later(struct smtpd_enqueue *e, int ms, time_t until)
{
	if (e->retry == NULL)
		e->retry = evtimer_new(e->session->srv->base, on_connect_retry, e);
	if (e->retry == NULL)
		log_fatal("cannot create a timer");
	e->retry_ms = ms;
	e->retry_until = until;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(e->retry, &tv);
}

/* A complete message that a busy qmgr did not take: handed over now, or
 * after a longer wait, or a 451 once an answer would have been overdue. */
static void on_connect_retry(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_enqueue *e = arg;
	if (hand_over(e))
		return;
	if (!e->failed && time(NULL) < e->retry_until)
		retry_later(e, e->retry_ms * 2 < CONNECT_RETRY_LAST_MS ? e->retry_ms * 2 : CONNECT_RETRY_LAST_MS,
		            e->retry_until);
	else
		fail_now(e, "qmgr: its socket accepts no connection (backlog full)");
}

void smtpd_enqueue_finish(struct smtpd_enqueue *e, smtpd_enqueue_done_fn done)
{
	if (!e->envelope_sent)
		send_envelope(e);
	flush_chunk(e);
	struct buf scratch = BUF_INIT, err = BUF_INIT;
	struct buf *frame = frame_buf(e, &scratch);
	write_frame_out(e, frame, enqueue_put_end(frame, &err), &err);
	buf_free(&scratch);
	buf_free(&err);
	e->done = done;
	if (hand_over(e))
		return;
	if (!e->failed) {
		retry_later(e, CONNECT_RETRY_FIRST_MS, time(NULL) + ENQUEUE_REPLY_SECONDS);
		return;
	}
	/* the caller expects the answer later, never from inside this call */
	e->later = evtimer_new(e->session->srv->base, on_later, e);
	struct timeval now = {0, 0};
	evtimer_add(e->later, &now);
}

void smtpd_enqueue_abort(struct smtpd_enqueue *e)
{
	e->done = NULL;
	if (e->pipe == NULL)
		enqueue_free(e);
	/* on the pipe: its answer is dropped when it comes (pipe_answer) */
}
