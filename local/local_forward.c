/* local_forward.c: the copy for the remote addresses an alias expands to.
 * It goes back to qmgr as a new message (the original envelope sender, a
 * Delivered-To line first so a loop through another host comes back to
 * us and is seen), and the original recipient counts as delivered only
 * once qmgr said the copy is durable. */
#include "local.h"

#include <stdlib.h>

#include "enqueue.h"
#include "mem.h"

#define ENQUEUE_TIMEOUT_MS 60000

void local_forward(const char *spool, const struct local_msg *msg, const char *delivered_to,
                   const char *const *addresses, size_t n, struct local_result *r)
{
	struct buf body = BUF_INIT, err = BUF_INIT;
	buf_printf(&body, "Delivered-To: %s\r\n", delivered_to);
	buf_append(&body, msg->body.data ? msg->body.data : "", msg->body.len);
	struct enqueue_envelope e = {
	    .sender = msg->sender,
	    .envid = msg->envid,
	    .ret = msg->ret,
	    .body_type = msg->body_type,
	    .src_type = "local",
	};
	char *path = mem_asprintf("%s/private/qmgr", spool);
	struct enqueue_conn conn = {.fd = -1, .in = BUF_INIT};
	struct enqueue_reply reply = {0};
	bool answered = enqueue_connect(&conn, path, &err) &&
	                enqueue_message(&conn, &e, addresses, n, body.data, body.len, ENQUEUE_TIMEOUT_MS, &reply, &err);
	enqueue_close(&conn);
	if (!answered)
		local_result_set(r, LOCAL_DEFERRED, "4.3.0", "cannot queue the forwarded copy: %s", buf_cstr(&err));
	else if (reply.code == 250)
		local_result_set(r, LOCAL_DELIVERED, "2.0.0", "forwarded as %s", reply.queue_id);
	else if (reply.code >= 500)
		local_result_set(r, LOCAL_BOUNCED, "5.3.4", "the forwarded copy was refused: %d %s", reply.code,
		                 reply.reason ? reply.reason : "");
	else
		local_result_set(r, LOCAL_DEFERRED, "4.3.0", "cannot queue the forwarded copy: %d %s", reply.code,
		                 reply.reason ? reply.reason : "");
	enqueue_reply_free(&reply);
	free(path);
	buf_free(&body);
	buf_free(&err);
}
