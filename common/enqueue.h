/* enqueue.h: the client side of qmgr's enqueue protocol (doc/queue.md),
 * shared by smtpd (event-driven: it uses the frame builders and the reply
 * decoder) and pickup (which sends whole messages with the blocking
 * helper).  The frames:
 *
 *   request=enqueue  the envelope (struct enqueue_envelope)
 *   request=rcpt     recipient, [orcpt], [notify]      (each)
 *   request=data     data (at most IPC_DATA_MAX octets) (each)
 *   request=end
 *   reply            status (250, 451, 452, 552), [queue_id], [reason] */
#ifndef TERN_ENQUEUE_H
#define TERN_ENQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Optional members are NULL (or 0) when absent. */
struct enqueue_envelope {
	const char *sender; /* required; "" for <> */
	const char *envid, *ret;
	uint64_t declared_size;
	const char *body_type;
	bool smtputf8;
	const char *client_ip, *client_name, *helo;
	const char *src_type; /* "smtp", "pickup" */
	const char *listener, *auth_user, *vmta, *mail_job;
};

/* Each appends one whole frame to out; false (reason in err, nothing
 * appended) when a value cannot be encoded (too long). */
bool enqueue_put_envelope(struct buf *out, const struct enqueue_envelope *e, struct buf *err);
bool enqueue_put_rcpt(struct buf *out, const char *recipient, const char *orcpt, const char *notify, struct buf *err);
bool enqueue_put_data(struct buf *out, const void *data, size_t len, struct buf *err);
bool enqueue_put_end(struct buf *out, struct buf *err);

/* qmgr's answer.  code is 250 with a queue ID, or 4xx/5xx with a reason. */
struct enqueue_reply {
	int code;
	char queue_id[33];
	char *reason; /* NULL when absent */
};
/* Decodes a reply frame's attributes; false (reason in err) when it is
 * malformed or a 250 comes without a queue ID. */
bool enqueue_reply_decode(const void *payload, size_t len, struct enqueue_reply *out, struct buf *err);
void enqueue_reply_free(struct enqueue_reply *r);

/* A blocking connection to qmgr that carries messages one after the
 * other. */
struct enqueue_conn {
	int fd; /* -1 when closed */
	struct buf in;
};
bool enqueue_connect(struct enqueue_conn *c, const char *socket_path, struct buf *err);
void enqueue_close(struct enqueue_conn *c);
/* Sends one whole message (body with CRLF line ends) and waits up to
 * timeout_ms for the answer.  false (reason in err, the connection
 * closed) when qmgr could not be reached, broke off or answered
 * nonsense: the message's fate is then unknown to qmgr's client and it
 * must be offered again later.  true with the answer in reply otherwise. */
bool enqueue_message(struct enqueue_conn *c, const struct enqueue_envelope *e, const char *const *rcpts, size_t nrcpts,
                     const void *body, size_t len, int timeout_ms, struct enqueue_reply *reply, struct buf *err);

#endif
