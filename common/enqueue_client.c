/* enqueue_client.c: one message to qmgr over its enqueue socket, waiting
 * for the answer (enqueue, rcpt..., data..., end -> status). */
#include "enqueue_client.h"

#include <string.h>
#include <unistd.h>

#include "ipc.h"

#define ANSWER_MAX_FRAME (64 * 1024)

static void put_opt(struct ipc_writer *w, enum ipc_attr attr, const char *value)
{
	if (value && *value)
		ipc_put_str(w, attr, value);
}

/* Every frame of the message, in order, into out. */
static bool build_frames(const struct enqueue_message *m, struct buf *out, struct buf *err)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, m->sender);
	put_opt(&w, IPC_ATTR_ENVID, m->envid);
	put_opt(&w, IPC_ATTR_RET, m->ret);
	put_opt(&w, IPC_ATTR_BODY_TYPE, m->body_type);
	put_opt(&w, IPC_ATTR_SRC_TYPE, m->src_type);
	bool ok = ipc_write_end(&w, err);
	for (size_t i = 0; ok && i < m->nrcpts; i++) {
		ipc_write_begin(&w, out, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "rcpt");
		ipc_put_str(&w, IPC_ATTR_RECIPIENT, m->rcpts[i]);
		ok = ipc_write_end(&w, err);
	}
	for (size_t off = 0; ok && off < m->body_len; off += IPC_DATA_MAX) {
		size_t n = m->body_len - off < IPC_DATA_MAX ? m->body_len - off : IPC_DATA_MAX;
		ipc_write_begin(&w, out, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "data");
		ipc_put_data(&w, IPC_ATTR_DATA, m->body + off, n);
		ok = ipc_write_end(&w, err);
	}
	if (ok) {
		ipc_write_begin(&w, out, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
		ok = ipc_write_end(&w, err);
	}
	return ok;
}

static int read_answer(int fd, int timeout_ms, struct buf *qid, struct buf *reason)
{
	static const struct ipc_spec spec[] = {
	    {IPC_ATTR_STATUS, IPC_REQUIRED},
	    {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},
	    {IPC_ATTR_REASON, IPC_OPTIONAL},
	};
	struct buf in = BUF_INIT, payload = BUF_INIT;
	struct ipc_msg m;
	memset(&m, 0, sizeof(m));
	int status = 0;
	if (ipc_receive(fd, &in, ANSWER_MAX_FRAME, timeout_ms, &payload, reason) &&
	    ipc_decode(payload.data, payload.len, spec, IPC_SPEC_COUNT(spec), &m, reason)) {
		status = (int)ipc_msg_int(&m, IPC_ATTR_STATUS);
		if (ipc_msg_str(&m, IPC_ATTR_QUEUE_ID))
			buf_puts(qid, ipc_msg_str(&m, IPC_ATTR_QUEUE_ID));
		if (ipc_msg_str(&m, IPC_ATTR_REASON))
			buf_puts(reason, ipc_msg_str(&m, IPC_ATTR_REASON));
		if (status == 250 && qid->len == 0) {
			buf_puts(reason, "qmgr accepted without a queue ID");
			status = 0;
		}
	}
	ipc_msg_free(&m);
	buf_free(&in);
	buf_free(&payload);
	return status;
}

int enqueue_client_send(const char *path, const struct enqueue_message *m, int timeout_ms, struct buf *qid,
                        struct buf *reason)
{
	struct buf frames = BUF_INIT;
	if (!build_frames(m, &frames, reason)) {
		buf_free(&frames);
		return 0;
	}
	int fd = ipc_connect(path, reason);
	int status = 0;
	if (fd >= 0 && ipc_send(fd, &frames, timeout_ms, reason))
		status = read_answer(fd, timeout_ms, qid, reason);
	if (fd >= 0)
		close(fd);
	buf_free(&frames);
	return status;
}
