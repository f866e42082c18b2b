/* enqueue.c: building and reading the frames of qmgr's enqueue protocol
 * (see enqueue.h), and a blocking client for programs without an event
 * loop of their own in the way (pickup). */
#include "enqueue.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc.h"
#include "mem.h"

#define REPLY_FRAME_MAX (64 * 1024)

static void put_opt(struct ipc_writer *w, enum ipc_attr attr, const char *value)
{
	if (value)
		ipc_put_str(w, attr, value);
}

bool enqueue_put_envelope(struct buf *out, const struct enqueue_envelope *e, struct buf *err)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, e->sender);
	put_opt(&w, IPC_ATTR_ENVID, e->envid);
	put_opt(&w, IPC_ATTR_RET, e->ret);
	if (e->declared_size)
		ipc_put_int(&w, IPC_ATTR_SIZE, (int64_t)e->declared_size);
	put_opt(&w, IPC_ATTR_BODY_TYPE, e->body_type);
	if (e->smtputf8)
		ipc_put_int(&w, IPC_ATTR_SMTPUTF8, 1);
	put_opt(&w, IPC_ATTR_CLIENT_IP, e->client_ip);
	put_opt(&w, IPC_ATTR_CLIENT_NAME, e->client_name);
	put_opt(&w, IPC_ATTR_HELO, e->helo);
	put_opt(&w, IPC_ATTR_SRC_TYPE, e->src_type);
	put_opt(&w, IPC_ATTR_LISTENER, e->listener);
	put_opt(&w, IPC_ATTR_AUTH_USER, e->auth_user);
	put_opt(&w, IPC_ATTR_VMTA, e->vmta);
	put_opt(&w, IPC_ATTR_MAIL_JOB, e->mail_job);
	return ipc_write_end(&w, err);
}

bool enqueue_put_rcpt(struct buf *out, const char *recipient, const char *orcpt, const char *notify, struct buf *err)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "rcpt");
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, recipient);
	put_opt(&w, IPC_ATTR_ORCPT, orcpt);
	put_opt(&w, IPC_ATTR_NOTIFY, notify);
	return ipc_write_end(&w, err);
}

bool enqueue_put_data(struct buf *out, const void *data, size_t len, struct buf *err)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "data");
	ipc_put_data(&w, IPC_ATTR_DATA, data, len);
	return ipc_write_end(&w, err);
}

bool enqueue_put_end(struct buf *out, struct buf *err)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
	return ipc_write_end(&w, err);
}

bool enqueue_reply_decode(const void *payload, size_t len, struct enqueue_reply *out, struct buf *err)
{
	static const struct ipc_spec spec[] = {
	    {IPC_ATTR_STATUS, IPC_REQUIRED},
	    {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},
	    {IPC_ATTR_REASON, IPC_OPTIONAL},
	};
	memset(out, 0, sizeof(*out));
	struct ipc_msg msg;
	bool ok = ipc_decode(payload, len, spec, IPC_SPEC_COUNT(spec), &msg, err);
	if (ok) {
		const char *qid = ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID);
		const char *reason = ipc_msg_str(&msg, IPC_ATTR_REASON);
		out->code = (int)ipc_msg_int(&msg, IPC_ATTR_STATUS);
		if (qid && strlen(qid) < sizeof(out->queue_id))
			memcpy(out->queue_id, qid, strlen(qid) + 1);
		out->reason = reason ? mem_strdup(reason) : NULL;
		if (out->code == 250 && out->queue_id[0] == '\0') {
			buf_puts(err, "qmgr accepted without a queue ID");
			enqueue_reply_free(out);
			ok = false;
		}
	}
	ipc_msg_free(&msg);
	return ok;
}

void enqueue_reply_free(struct enqueue_reply *r)
{
	free(r->reason);
	r->reason = NULL;
}

/* ---- the blocking client ------------------------------------------------------- */

bool enqueue_connect(struct enqueue_conn *c, const char *socket_path, struct buf *err)
{
	c->fd = ipc_connect(socket_path, err);
	buf_reset(&c->in);
	return c->fd >= 0;
}

void enqueue_close(struct enqueue_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_free(&c->in);
}

/* All frames of the message, built before anything is sent, so that a
 * value that cannot be encoded sends nothing. */
static bool build_frames(struct buf *out, const struct enqueue_envelope *e, const char *const *rcpts, size_t nrcpts,
                         const void *body, size_t len, struct buf *err)
{
	if (!enqueue_put_envelope(out, e, err))
		return false;
	for (size_t i = 0; i < nrcpts; i++)
		if (!enqueue_put_rcpt(out, rcpts[i], NULL, NULL, err))
			return false;
	const char *p = body;
	for (size_t off = 0; off < len; off += IPC_DATA_MAX) {
		size_t n = len - off < IPC_DATA_MAX ? len - off : IPC_DATA_MAX;
		if (!enqueue_put_data(out, p + off, n, err))
			return false;
	}
	return enqueue_put_end(out, err);
}

bool enqueue_message(struct enqueue_conn *c, const struct enqueue_envelope *e, const char *const *rcpts, size_t nrcpts,
                     const void *body, size_t len, int timeout_ms, struct enqueue_reply *reply, struct buf *err)
{
	struct buf frames = BUF_INIT, payload = BUF_INIT;
	memset(reply, 0, sizeof(*reply));
	bool ok = build_frames(&frames, e, rcpts, nrcpts, body, len, err) &&
	          ipc_send(c->fd, &frames, timeout_ms, err) &&
	          ipc_receive(c->fd, &c->in, REPLY_FRAME_MAX, timeout_ms, &payload, err) &&
	          enqueue_reply_decode(payload.data, payload.len, reply, err);
	if (!ok) {
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
	}
	buf_free(&frames);
	buf_free(&payload);
	return ok;
}
