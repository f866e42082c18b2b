/* ipc_evbuffer.c: framed IPC messages out of a libevent input buffer (see
 * ipc_evbuffer.h). */
#include "ipc_evbuffer.h"

enum ipc_frame_status ipc_frame_take_evbuffer(struct evbuffer *in, size_t max_frame, struct buf *payload,
                                              struct buf *err)
{
	unsigned char head[IPC_FRAME_HEADER];
	size_t avail = evbuffer_get_length(in), len = 0;
	evbuffer_copyout(in, head, avail < sizeof(head) ? avail : sizeof(head));
	enum ipc_frame_status status = ipc_frame_scan(head, avail, max_frame, &len, err);
	if (status != IPC_FRAME_COMPLETE)
		return status;
	evbuffer_drain(in, IPC_FRAME_HEADER);
	buf_reset(payload);
	buf_reserve(payload, len);
	evbuffer_remove(in, payload->data, len);
	payload->len = len;
	payload->data[len] = '\0';
	return IPC_FRAME_COMPLETE;
}
