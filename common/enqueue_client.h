/* enqueue_client.h: a blocking client of qmgr's enqueue protocol
 * (doc/queue.md), for processes that hand qmgr a message now and then and
 * may wait for the answer (the local agent's forwarded copies).  smtpd's
 * event-driven client is smtpd_enqueue.c. */
#ifndef TERN_ENQUEUE_CLIENT_H
#define TERN_ENQUEUE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

struct enqueue_message {
	const char *sender; /* "" for the null sender */
	const char *envid;  /* NULL: none */
	const char *ret;    /* NULL: none */
	const char *body_type;
	const char *src_type; /* srcType for accounting */
	const char *const *rcpts;
	size_t nrcpts;
	const char *body; /* headers and body, CRLF line ends */
	size_t body_len;
};

/* Sends the message to the enqueue socket at path and waits (timeout_ms)
 * for qmgr's answer.  Returns the status (250 accepted, queue ID in qid;
 * 4xx, 5xx refused) or 0 when qmgr could not be reached or answered
 * nothing usable; the reason goes into reason. */
int enqueue_client_send(const char *path, const struct enqueue_message *m, int timeout_ms, struct buf *qid,
                        struct buf *reason);

#endif
