/* local_forward.c: the copy for the remote addresses an alias expands to.
 * It goes back to qmgr as a new message (the original envelope sender, a
 * Delivered-To line first so a loop through another host comes back to
 * us and is seen), and the original recipient counts as delivered only
 * once qmgr said the copy is durable. */
#include "local.h"

#include <stdlib.h>

#include "enqueue_client.h"
#include "mem.h"

#define ENQUEUE_TIMEOUT_MS 60000

void local_forward(const char *spool, const struct local_msg *msg, const char *delivered_to,
                   const char *const *addresses, size_t n, struct local_result *r)
{
	struct buf body = BUF_INIT, qid = BUF_INIT, reason = BUF_INIT;
	buf_printf(&body, "Delivered-To: %s\r\n", delivered_to);
	buf_append(&body, msg->body.data ? msg->body.data : "", msg->body.len);
	struct enqueue_message m = {
	    .sender = msg->sender,
	    .envid = msg->envid,
	    .ret = msg->ret,
	    .body_type = msg->body_type,
	    .src_type = "local",
	    .rcpts = addresses,
	    .nrcpts = n,
	    .body = body.data,
	    .body_len = body.len,
	};
	char *path = mem_asprintf("%s/private/qmgr", spool);
	int status = enqueue_client_send(path, &m, ENQUEUE_TIMEOUT_MS, &qid, &reason);
	if (status == 250)
		local_result_set(r, LOCAL_DELIVERED, "2.0.0", "forwarded as %s", buf_cstr(&qid));
	else if (status >= 500)
		local_result_set(r, LOCAL_BOUNCED, "5.3.4", "the forwarded copy was refused: %d %s", status,
		                 buf_cstr(&reason));
	else
		local_result_set(r, LOCAL_DEFERRED, "4.3.0", "cannot queue the forwarded copy: %s",
		                 reason.len ? buf_cstr(&reason) : "no answer from qmgr");
	free(path);
	buf_free(&body);
	buf_free(&qid);
	buf_free(&reason);
}
