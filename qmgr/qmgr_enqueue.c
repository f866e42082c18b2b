/* qmgr_enqueue.c: the enqueue server on <spool>/private/qmgr, through
 * which smtpd and pickup hand messages to the queue.  One connection
 * carries any number of messages, one after the other:
 *
 *   client: enqueue (envelope) ; rcpt (one per recipient)... ;
 *           data (body chunks)... ; end
 *   qmgr:   status 250 + queue_id once the message is durable,
 *           or status 451/452/552 + reason (nothing was kept)
 *
 * A protocol violation closes that connection only.  A client may send
 * its next messages before the replies to those before (pipelining):
 * they are read and committed as they come, and the replies go out in
 * the order of the messages.  With PIPELINE_MAX messages waiting for
 * their replies the connection's further input stays unread, so a
 * client cannot run far ahead of its acknowledgements.
 *
 * Messages completed in the same turn of the event loop share one
 * transaction: under load many connections finish a message per turn,
 * and one commit (one log write, one segment write) serves them all.
 * The commit runs at the end of that turn, so it waits for nothing. */
#include "qmgr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "bev_write.h"
#include "fileio.h"
#include "ipc_evbuffer.h"
#include "listen.h"
#include "log.h"
#include "mem.h"

/* The body is held in memory until "end"; this bounds what one client
 * can make us hold. */
#define MESSAGE_MAX (64u * 1024 * 1024)
#define RCPT_MAX 10000
/* Enough input for one whole frame, so a frame can always complete. */
#define READ_HIGH_WATER (IPC_FRAME_MAX_DEFAULT + IPC_FRAME_HEADER)
/* Complete messages of one connection waiting for their replies. */
#define PIPELINE_MAX 64
/* What a turn reads of one connection beyond libevent's 4 KB. */
#define TURN_READ_MAX (64 * 1024)
/* Connections smtpd may have made that qmgr has not accepted yet: each
 * message that does not fit smtpd's pipe makes one, and while qmgr's loop
 * flushes, a burst of them waits here (the kernel caps it at
 * net.core.somaxconn).  A full backlog fails smtpd's connect (EAGAIN). */
#define ENQUEUE_BACKLOG 4096

enum client_state {
	WANT_ENVELOPE, /* between messages */
	WANT_RCPT,     /* recipients, or the first body chunk, or end */
	WANT_DATA,     /* body chunks or end */
	WANT_REPLAY,   /* smtp's replayed results, waiting until durable */
};

/* One message: received (client.receiving), then complete and in the
 * client's list until its reply has gone, waiting meanwhile for the
 * turn's transaction and then for the flush. */
struct message {
	struct client *c;
	struct message *next; /* the client's next complete message */
	struct qmgr_incoming in;
	bool too_big;
	bool answered;
	struct buf reply; /* the reply frame, sent once those before it are */
	char qid[QMGR_QID_SIZE];
	char **queues; /* of the message waiting for its flush */
	uint64_t *queue_rcpts;
	size_t queues_n;
	char *sender; /* of the message waiting for its flush, for its log line */
	size_t size, nrcpt;
};

struct client {
	struct qmgr_enqueue *eq;
	struct bufferevent *bev; /* NULL once the peer is gone */
	struct client *prev, *next;
	enum client_state state;
	bool processing;             /* inside process_input: callbacks must not re-enter */
	struct message *receiving;   /* the message being received */
	struct message *head, *tail; /* complete messages, in order, until answered */
	size_t unanswered;           /* how many */
	bool pipelining;             /* it sent a message before the reply to one before */
	struct buf payload;
};

struct qmgr_enqueue {
	struct event_base *base;
	struct evconnlistener *listener;
	struct qmgr_store *st;
	struct qmgr_flusher *flusher;
	bool sync;
	struct qmgr_sched *sched;
	struct qmgr_control *control;
	struct client *clients;
	struct event *exit_event;   /* the queue broke: leave, to be recovered */
	struct event *commit_event; /* the end of the turn: commit the batch */
	struct event *write_event;  /* replies made in this pass: written together */
	struct message **batch;     /* complete messages waiting for the turn's commit */
	size_t nbatch, batch_cap;
};

static const struct ipc_spec rcpt_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_RECIPIENT, IPC_REQUIRED},
    {IPC_ATTR_ORCPT, IPC_OPTIONAL},
    {IPC_ATTR_NOTIFY, IPC_OPTIONAL},
};
static const struct ipc_spec data_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_DATA, IPC_REQUIRED},
};
static const struct ipc_spec end_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
};

/* ---- the socket ------------------------------------------------------------ */

int qmgr_enqueue_listen(const char *spool, uid_t uid, gid_t gid, struct buf *err)
{
	char *dir = mem_asprintf("%s/private", spool);
	char *path = mem_asprintf("%s/qmgr", dir);
	int fd = -1;
	if (fileio_make_dirs(dir, 0700, uid, gid, err))
		fd = listen_unix(path, ENQUEUE_BACKLOG, 0600, uid, gid, err);
	free(dir);
	free(path);
	return fd;
}

/* ---- replies ------------------------------------------------------------- */

static void process_input(struct client *c);
static void client_free(struct client *c);

static void message_free(struct message *m)
{
	qmgr_incoming_free(&m->in);
	for (size_t i = 0; i < m->queues_n; i++)
		free(m->queues[i]);
	free(m->queues);
	free(m->queue_rcpts);
	free(m->sender);
	buf_free(&m->reply);
	free(m);
}

/* Sends the replies that are due, in the order of the messages; frees
 * the client once it is gone and owes nothing.  May free c. */
static void send_replies(struct client *c)
{
	bool was_full = c->unanswered >= PIPELINE_MAX;
	while (c->head && c->head->answered) {
		struct message *m = c->head;
		c->head = m->next;
		if (c->head == NULL)
			c->tail = NULL;
		c->unanswered--;
		if (c->bev && m->reply.len) {
			bufferevent_write(c->bev, m->reply.data, m->reply.len);
			event_active(c->eq->write_event, 0, 0);
		}
		message_free(m);
	}
	if (c->bev == NULL) {
		if (c->head == NULL && c->state != WANT_REPLAY)
			client_free(c);
		return;
	}
	if (was_full && c->unanswered < PIPELINE_MAX && !c->processing)
		process_input(c);
}

static void finish_frame(struct buf *frame, struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_panic("cannot encode an enqueue reply: %s", buf_cstr(&err));
	buf_free(&err);
}

/* The message's reply is known: it goes once those before it have. */
static void answer(struct message *m, int status, const char *queue_id, const char *reason)
{
	struct ipc_writer w;
	ipc_write_begin(&w, &m->reply, 0);
	ipc_put_int(&w, IPC_ATTR_STATUS, status);
	if (queue_id)
		ipc_put_str(&w, IPC_ATTR_QUEUE_ID, queue_id);
	if (reason)
		ipc_put_str(&w, IPC_ATTR_REASON, reason);
	finish_frame(&m->reply, &w);
	m->answered = true;
	send_replies(m->c);
}

/* The replies of a pass (a flush's, typically) go out with one write
 * per connection, once the pass has made them all. */
static void write_replies(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_enqueue *eq = arg;
	for (struct client *c = eq->clients; c; c = c->next)
		bev_write_now(c->bev);
}

/* Not acknowledged, and nothing said: the client will try again. */
static void drop_unanswered(struct message *m)
{
	buf_reset(&m->reply);
	m->answered = true;
	send_replies(m->c);
}

/* A reply to the client itself (smtp's replay), between messages. */
static void reply_now(struct client *c, int status, const char *reason)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_int(&w, IPC_ATTR_STATUS, status);
	if (reason)
		ipc_put_str(&w, IPC_ATTR_REASON, reason);
	finish_frame(&frame, &w);
	if (c->bev)
		bev_send(c->bev, frame.data, frame.len);
	buf_free(&frame);
}

/* ---- connections ------------------------------------------------------------ */

static void client_free(struct client *c)
{
	if (c->receiving)
		message_free(c->receiving);
	buf_free(&c->payload);
	free(c);
}

/* Complete messages waiting for their replies, or smtp's replay waiting
 * for its flush: the connection's input waits too. */
static bool waiting(const struct client *c)
{
	return c->state == WANT_REPLAY || c->unanswered >= PIPELINE_MAX;
}

/* Drops the connection.  A client with messages waiting for a commit or
 * flush is freed when the last of them is answered, since the batch or
 * the flusher holds a pointer to them. */
static void client_close(struct client *c)
{
	if (c->bev) {
		bufferevent_free(c->bev);
		c->bev = NULL;
	}
	if (c->prev)
		c->prev->next = c->next;
	else if (c->eq->clients == c)
		c->eq->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	if (c->head == NULL && c->state != WANT_REPLAY)
		client_free(c);
}

static void violation(struct client *c, const char *why)
{
	log_warning("enqueue client dropped: protocol violation: %s", why);
	client_close(c);
}

/* ---- frames -------------------------------------------------------------- */

static bool on_envelope(struct client *c, struct buf *err)
{
	struct message *m = mem_zalloc(sizeof(*m));
	m->c = c;
	c->receiving = m;
	if (!qmgr_envelope_decode(c->payload.data, c->payload.len, &m->in.envelope, err))
		return false;
	if (!qmgr_envelope_check(&m->in.envelope, err))
		return false;
	c->state = WANT_RCPT;
	return true;
}

static bool on_rcpt(struct client *c, struct buf *err)
{
	struct qmgr_incoming *in = &c->receiving->in;
	struct ipc_msg m;
	if (!ipc_decode(c->payload.data, c->payload.len, rcpt_spec, IPC_SPEC_COUNT(rcpt_spec), &m, err))
		return false;
	struct buf queue = BUF_INIT;
	const char *address = ipc_msg_str(&m, IPC_ATTR_RECIPIENT);
	bool ok = qmgr_queue_name(address, ipc_msg_str(&in->envelope, IPC_ATTR_VMTA), &queue, err);
	if (ok && in->nrcpt >= RCPT_MAX) {
		buf_printf(err, "more than %d recipients", RCPT_MAX);
		ok = false;
	}
	if (ok) {
		in->rcpts = mem_reallocarray(in->rcpts, in->nrcpt + 1, sizeof(*in->rcpts));
		struct qmgr_rcpt *r = &in->rcpts[in->nrcpt++];
		memset(r, 0, sizeof(*r));
		r->address = mem_strdup(address);
		r->orcpt = ipc_msg_has(&m, IPC_ATTR_ORCPT) ? mem_strdup(ipc_msg_str(&m, IPC_ATTR_ORCPT)) : NULL;
		r->notify = ipc_msg_has(&m, IPC_ATTR_NOTIFY) ? mem_strdup(ipc_msg_str(&m, IPC_ATTR_NOTIFY)) : NULL;
	}
	buf_free(&queue);
	ipc_msg_free(&m);
	return ok;
}

static bool on_data(struct client *c, struct buf *err)
{
	struct ipc_msg m;
	if (!ipc_decode(c->payload.data, c->payload.len, data_spec, IPC_SPEC_COUNT(data_spec), &m, err))
		return false;
	size_t len;
	const void *chunk = ipc_msg_data(&m, IPC_ATTR_DATA, &len);
	struct message *msg = c->receiving;
	/* Too big: keep reading to the end, keep nothing, refuse then. */
	if (msg->in.body.len + len > MESSAGE_MAX) {
		msg->too_big = true;
		buf_free(&msg->in.body);
	}
	if (!msg->too_big)
		buf_append(&msg->in.body, chunk, len);
	ipc_msg_free(&m);
	c->state = WANT_DATA;
	return true;
}

static void on_durable(void *ctx, bool ok, const char *reason);

/* The scheduler learns of the queues a new message went to. */
static void announce_queues(struct message *m)
{
	struct qmgr_sched *sched = m->c->eq->sched;
	for (size_t i = 0; sched && i < m->queues_n; i++)
		qmgr_sched_queued(sched, m->queues[i], m->queue_rcpts[i]);
	if (sched)
		qmgr_sched_count(sched, QMGR_IN_MSGS, 1);
}

/* The message's queues and how many of its recipients go to each.  A
 * bulk message has thousands of recipients over as many queues: the
 * names are found in a table of their hashes (slots hold index + 1). */
static void remember_queues(struct message *m)
{
	struct buf queue = BUF_INIT, err = BUF_INIT;
	const char *vmta = ipc_msg_str(&m->in.envelope, IPC_ATTR_VMTA);
	size_t cap = 16;
	while (cap < 2 * m->in.nrcpt)
		cap *= 2;
	size_t *slots = mem_zalloc(cap * sizeof(*slots));
	/* no more queues than recipients */
	m->queues = mem_reallocarray(m->queues, m->queues_n + m->in.nrcpt, sizeof(char *));
	m->queue_rcpts = mem_reallocarray(m->queue_rcpts, m->queues_n + m->in.nrcpt, sizeof(uint64_t));
	for (size_t i = 0; i < m->in.nrcpt; i++) {
		buf_reset(&queue);
		if (!qmgr_queue_name(m->in.rcpts[i].address, vmta, &queue, &err))
			continue;
		const char *name = buf_cstr(&queue);
		size_t h = qmgr_name_hash(name) & (cap - 1);
		while (slots[h] != 0 && strcmp(m->queues[slots[h] - 1], name) != 0)
			h = (h + 1) & (cap - 1);
		if (slots[h] == 0) {
			m->queues[m->queues_n] = mem_strdup(name);
			m->queue_rcpts[m->queues_n] = 0;
			slots[h] = ++m->queues_n;
		}
		m->queue_rcpts[slots[h] - 1]++;
	}
	free(slots);
	buf_free(&queue);
	buf_free(&err);
}

/* Committed: the message waits for its flush, then its 250. */
static void committed(struct message *m)
{
	struct qmgr_enqueue *eq = m->c->eq;
	const char *sender = ipc_msg_str(&m->in.envelope, IPC_ATTR_SENDER);
	m->sender = mem_strdup(sender ? sender : "");
	m->size = m->in.body.len;
	m->nrcpt = m->in.nrcpt;
	remember_queues(m);
	qmgr_incoming_free(&m->in);
	if (eq->sync)
		qmgr_flusher_wait(eq->flusher, on_durable, m);
	else
		on_durable(m, true, NULL);
}

/* The commit failed: nothing of the message was kept. */
static void refused(struct message *m, enum qmgr_store_status status, const char *reason)
{
	struct qmgr_enqueue *eq = m->c->eq;
	log_error("message refused: %s", reason);
	if (qmgr_store_broken(eq->st))
		event_active(eq->exit_event, 0, 0);
	answer(m, status == QMGR_STORE_NOSPACE ? 452 : 451, NULL,
	       status == QMGR_STORE_NOSPACE ? "4.3.1 Insufficient system storage"
	                                    : "4.3.0 Queue write failed, try again later");
}

static void commit_one(struct message *m)
{
	struct buf err = BUF_INIT;
	enum qmgr_store_status status = qmgr_store_add_message(m->c->eq->st, &m->in, (int64_t)time(NULL), m->qid, &err);
	if (status == QMGR_STORE_OK)
		committed(m);
	else
		refused(m, status, buf_cstr(&err));
	buf_free(&err);
}

/* Before the commit: the recipients a fresh job can take at once
 * (qmgr_sched_fresh_claim). */
static struct qmgr_fresh *claim_fresh(struct qmgr_enqueue *eq, struct qmgr_new_message *msgs, size_t n, int64_t now)
{
	if (eq->sched == NULL)
		return NULL;
	struct qmgr_fresh *f = qmgr_sched_fresh_begin(eq->sched, now);
	struct buf queue = BUF_INIT, err = BUF_INIT;
	for (size_t i = 0; i < n; i++) {
		const struct qmgr_incoming *in = msgs[i].in;
		const char *vmta = ipc_msg_str(&in->envelope, IPC_ATTR_VMTA);
		for (size_t k = 0; k < in->nrcpt; k++) {
			buf_reset(&queue);
			if (qmgr_queue_name(in->rcpts[k].address, vmta, &queue, &err))
				qmgr_sched_fresh_claim(f, i, buf_cstr(&queue), in->body.len, &in->rcpts[k]);
			buf_reset(&err);
		}
	}
	buf_free(&queue);
	buf_free(&err);
	return f;
}

/* The end of the turn: one transaction for every message completed in
 * it, with the new recipients that fresh jobs take written in flight.
 * Should it fail, each message is tried alone (without fresh jobs), so
 * that one bad message costs the others nothing. */
static void commit_batch(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_enqueue *eq = arg;
	size_t n = eq->nbatch;
	struct message **batch = eq->batch;
	/* callbacks may complete the next messages: a new batch */
	eq->batch = NULL;
	eq->nbatch = eq->batch_cap = 0;
	struct qmgr_new_message *msgs = mem_calloc(n, sizeof(*msgs));
	for (size_t i = 0; i < n; i++)
		msgs[i].in = &batch[i]->in;
	int64_t now = (int64_t)time(NULL);
	struct qmgr_fresh *fresh = claim_fresh(eq, msgs, n, now);
	struct buf err = BUF_INIT;
	enum qmgr_store_status status = qmgr_store_add_messages(eq->st, msgs, n, now, &err);
	if (status == QMGR_STORE_OK) {
		if (fresh)
			qmgr_sched_fresh_start(fresh, msgs, n);
		for (size_t i = 0; i < n; i++) {
			memcpy(batch[i]->qid, msgs[i].qid, QMGR_QID_SIZE);
			committed(batch[i]);
		}
	} else {
		if (fresh)
			qmgr_sched_fresh_cancel(fresh, msgs, n);
		if (n == 1) {
			refused(batch[0], status, buf_cstr(&err));
		} else {
			log_warning("%zu messages could not be committed together (%s): one by one", n, buf_cstr(&err));
			for (size_t i = 0; i < n; i++)
				commit_one(batch[i]);
		}
	}
	buf_free(&err);
	free(msgs);
	free(batch);
}

/* A complete message joins the client's list, in order, and the turn's
 * batch. */
static void commit_message(struct client *c)
{
	struct qmgr_enqueue *eq = c->eq;
	struct message *m = c->receiving;
	c->receiving = NULL;
	c->state = WANT_ENVELOPE;
	c->pipelining = c->pipelining || c->head;
	if (c->tail)
		c->tail->next = m;
	else
		c->head = m;
	c->tail = m;
	c->unanswered++;
	if (m->too_big) {
		answer(m, 552, NULL, "5.3.4 Message too big for the queue");
		return;
	}
	if (eq->nbatch == eq->batch_cap) {
		eq->batch_cap = eq->batch_cap ? 2 * eq->batch_cap : 16;
		eq->batch = mem_reallocarray(eq->batch, eq->batch_cap, sizeof(*eq->batch));
	}
	eq->batch[eq->nbatch++] = m;
	/* at the tail of the turn's queue: after every connection ready now */
	if (eq->nbatch == 1)
		event_active(eq->commit_event, 0, 0);
}

static bool on_end(struct client *c, struct buf *err)
{
	struct ipc_msg m;
	if (!ipc_decode(c->payload.data, c->payload.len, end_spec, IPC_SPEC_COUNT(end_spec), &m, err))
		return false;
	ipc_msg_free(&m);
	if (c->receiving->in.nrcpt == 0) {
		buf_puts(err, "end of a message without recipients");
		return false;
	}
	commit_message(c);
	return true;
}

/* A control request relayed by master: answered at once, and the
 * connection may go on. */
static bool on_control(struct client *c, const char *verb)
{
	struct buf out = BUF_INIT;
	qmgr_control_handle(c->eq->control, verb, c->payload.data, c->payload.len, &out);
	if (c->bev)
		bev_send(c->bev, out.data, out.len);
	buf_free(&out);
	return true;
}

void qmgr_enqueue_set_control(struct qmgr_enqueue *eq, struct qmgr_control *ctl)
{
	eq->control = ctl;
}

/* smtp replays results of jobs it ran while qmgr was away: "result"
 * frames, then "replay-end", answered with status 250 once they are
 * durable (smtp keeps them until then; applying one twice is harmless). */
static bool on_replay_result(struct client *c, struct buf *err)
{
	struct ipc_msg m;
	bool ok = qmgr_smtp_decode_result(c->payload.data, c->payload.len, &m, err);
	if (ok && c->eq->sched)
		qmgr_sched_replay(c->eq->sched, &m);
	ipc_msg_free(&m);
	return ok;
}

static void on_replay_durable(void *ctx, bool ok, const char *reason)
{
	struct client *c = ctx;
	c->state = WANT_ENVELOPE;
	if (ok)
		reply_now(c, 250, NULL);
	else
		reply_now(c, 451, "4.3.0 Queue write failed, try again later");
	if (c->bev == NULL) {
		client_free(c);
		return;
	}
	if (!c->processing)
		process_input(c);
}

static bool on_replay_end(struct client *c)
{
	c->state = WANT_REPLAY;
	if (c->eq->flusher)
		qmgr_flusher_wait(c->eq->flusher, on_replay_durable, c);
	else
		on_replay_durable(c, true, NULL);
	return true;
}

/* Which verbs each state accepts. */
static bool handle_frame(struct client *c, const char *verb, struct buf *err)
{
	switch (c->state) {
	case WANT_ENVELOPE:
		if (strcmp(verb, "enqueue") == 0)
			return on_envelope(c, err);
		/* the others are answered at once: not among replies still due */
		if (c->head) {
			buf_printf(err, "\"%s\" while messages wait for their replies", verb);
			return false;
		}
		if (strncmp(verb, "qmgr.", 5) == 0 && c->eq->control)
			return on_control(c, verb);
		if (strcmp(verb, "result") == 0)
			return on_replay_result(c, err);
		if (strcmp(verb, "replay-end") == 0)
			return on_replay_end(c);
		break;
	case WANT_RCPT:
		if (strcmp(verb, "rcpt") == 0)
			return on_rcpt(c, err);
		/* data and end are allowed after recipients */
		__attribute__((fallthrough));
	case WANT_DATA:
		if (strcmp(verb, "data") == 0 && c->receiving->in.nrcpt > 0)
			return on_data(c, err);
		if (strcmp(verb, "end") == 0)
			return on_end(c, err);
		break;
	case WANT_REPLAY:
		break;
	}
	buf_printf(err, "unexpected request \"%s\"", verb);
	return false;
}

/* Takes one frame from the input; false when there is none (yet) or
 * the connection was dropped. */
static bool next_frame(struct client *c, struct evbuffer *input, bool *dropped)
{
	struct buf err = BUF_INIT;
	enum ipc_frame_status status = ipc_frame_take_evbuffer(input, 0, &c->payload, &err);
	if (status == IPC_FRAME_ERROR) {
		violation(c, buf_cstr(&err));
		*dropped = true;
	}
	buf_free(&err);
	return status == IPC_FRAME_COMPLETE;
}

static void process_input(struct client *c)
{
	struct evbuffer *input = bufferevent_get_input(c->bev);
	bool dropped = false;
	struct buf verb = BUF_INIT, err = BUF_INIT;
	c->processing = true;
	while (!waiting(c) && next_frame(c, input, &dropped)) {
		buf_reset(&err);
		if (!ipc_peek_request(c->payload.data, c->payload.len, &verb, &err) ||
		    !handle_frame(c, buf_cstr(&verb), &err)) {
			violation(c, buf_cstr(&err));
			dropped = true;
			break;
		}
	}
	if (!dropped)
		c->processing = false;
	buf_free(&verb);
	buf_free(&err);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct qmgr_flusher *flusher = c->eq->flusher;
	/* A client that pipelines (smtpd's pipe) has more messages waiting
	 * than libevent's 4 KB read: they join this turn's commit, up to
	 * TURN_READ_MAX.  Not one that waits for each reply, whose message
	 * may be one with a thousand recipients: turns of those made
	 * `ternctl show queues` wait (common/bev_write.h). */
	if (c->pipelining)
		bev_read_waiting_at_most(bev, TURN_READ_MAX);
	process_input(c); /* may free c */
	qmgr_flusher_notice(flusher);
}

static void on_durable(void *ctx, bool ok, const char *reason)
{
	struct message *m = ctx;
	struct qmgr_enqueue *eq = m->c->eq;
	if (ok) {
		/* one line a message: what was queued, once it is durable */
		log_info("%s: queued, from=<%s>, size=%zu, nrcpt=%zu", m->qid, m->sender, m->size, m->nrcpt);
		announce_queues(m);
		answer(m, 250, m->qid, NULL);
	} else {
		/* The commit may yet reach the disk: a duplicate is possible,
		 * a loss is not, since the client will try again. */
		log_error("%s: not acknowledged: %s", m->qid, reason);
		if (qmgr_store_broken(eq->st))
			event_active(eq->exit_event, 0, 0);
		answer(m, 451, NULL, "4.3.0 Queue write failed, try again later");
	}
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;
	if (what & BEV_EVENT_ERROR)
		log_warning("enqueue client: %s", strerror(EVUTIL_SOCKET_ERROR()));
	/* A message still being received is abandoned: nothing was written. */
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		client_close(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	struct qmgr_enqueue *eq = arg;
	struct bufferevent *bev = bufferevent_socket_new(eq->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		log_error("cannot set up an enqueue connection");
		close(fd);
		return;
	}
	struct client *c = mem_zalloc(sizeof(*c));
	c->eq = eq;
	c->bev = bev;
	c->next = eq->clients;
	if (eq->clients)
		eq->clients->prev = c;
	eq->clients = c;
	bufferevent_setcb(bev, on_read, NULL, on_event, c);
	bufferevent_setwatermark(bev, EV_READ, 0, READ_HIGH_WATER);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	/* Out of descriptors, typically: the listener retries by itself. */
	log_error("enqueue socket: accept: %s", strerror(EVUTIL_SOCKET_ERROR()));
}

static void on_broken(evutil_socket_t fd, short what, void *arg)
{
	log_fatal("the queue database needs recovery: exiting, recovery runs at the next start");
}

struct qmgr_enqueue *qmgr_enqueue_start(struct event_base *base, int listen_fd, struct qmgr_store *st,
                                        struct qmgr_flusher *flusher, bool sync, struct qmgr_sched *sched,
                                        struct buf *err)
{
	struct qmgr_enqueue *eq = mem_zalloc(sizeof(*eq));
	eq->base = base;
	eq->st = st;
	eq->flusher = flusher;
	eq->sync = sync;
	eq->sched = sched;
	eq->exit_event = event_new(base, -1, 0, on_broken, eq);
	eq->commit_event = event_new(base, -1, 0, commit_batch, eq);
	eq->write_event = event_new(base, -1, 0, write_replies, eq);
	if (eq->write_event)
		event_priority_set(eq->write_event, QMGR_PRIORITY_FIRST);
	/* backlog 0: the socket listens already (qmgr_enqueue_listen);
	 * libevent's -1 would listen again, with a backlog of 128 */
	eq->listener =
	    evconnlistener_new(base, on_accept, eq, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, listen_fd);
	if (eq->listener == NULL || eq->exit_event == NULL || eq->commit_event == NULL || eq->write_event == NULL) {
		buf_puts(err, "cannot watch the enqueue socket");
		if (eq->exit_event)
			event_free(eq->exit_event);
		if (eq->commit_event)
			event_free(eq->commit_event);
		if (eq->write_event)
			event_free(eq->write_event);
		free(eq);
		return NULL;
	}
	evconnlistener_set_error_cb(eq->listener, on_accept_error);
	return eq;
}

void qmgr_enqueue_stop(struct qmgr_enqueue *eq)
{
	if (eq == NULL)
		return;
	while (eq->clients) {
		/* the loop will not run again: what the socket takes now */
		if (eq->clients->bev)
			bev_write_now(eq->clients->bev);
		client_close(eq->clients);
	}
	/* complete but never committed: not acknowledged, so the senders
	 * will try again */
	for (size_t i = 0; i < eq->nbatch; i++)
		drop_unanswered(eq->batch[i]);
	free(eq->batch);
	evconnlistener_free(eq->listener);
	event_free(eq->exit_event);
	event_free(eq->commit_event);
	event_free(eq->write_event);
	free(eq);
}
