/* ipc_evbuffer.h: framed IPC messages out of a libevent input buffer, the
 * one reader the daemons' event loops share (ipc.h has the framing and
 * the buffer and socket variants). */
#ifndef TERN_IPC_EVBUFFER_H
#define TERN_IPC_EVBUFFER_H

#include <stddef.h>

#include <event2/buffer.h>

#include "buf.h"
#include "ipc.h"

/* Moves one complete frame's attributes from the front of in into payload
 * (replacing its contents, NUL-terminated after them).  PARTIAL: the
 * frame is not all there yet and nothing was taken; ERROR: the stream is
 * broken (reason in err).  max_frame 0 means IPC_FRAME_MAX_DEFAULT. */
enum ipc_frame_status ipc_frame_take_evbuffer(struct evbuffer *in, size_t max_frame, struct buf *payload,
                                              struct buf *err);

#endif
