/* ipc.h: framing of the messages tern processes send each other over UNIX
 * stream sockets (smtpd -> qmgr, qmgr <-> smtp, qmgr -> acctd,
 * ternctl -> master).  A message is a frame of named, typed attributes; the
 * names are declared once, in ipc_attr.h.
 *
 * Wire format (all integers big-endian):
 *
 *   frame      = length:u32 attribute*        length counts the attributes
 *                                             only; 1 <= length <= max frame
 *   attribute  = type:u8 namelen:u8 name:namelen vlen:u32 value:vlen
 *   type       = 'i' (vlen is 8, int64 two's complement)
 *              / 's' (text, no NUL byte) / 'd' (bytes)
 *
 * Names travel in clear, not as numbers, so a process built from another
 * version that does not know an attribute gets an "unknown attribute"
 * error instead of silently misreading it.
 *
 * Decoding is strict: the receiver names the attributes it accepts (a spec)
 * and anything else - an unknown or unexpected name, a duplicate, a wrong
 * type, an over-long value, a NUL inside a string, a truncated attribute,
 * stray bytes - rejects the whole frame. */
#ifndef TERN_IPC_H
#define TERN_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ipc_attr.h"

/* Bytes of the length prefix. */
#define IPC_FRAME_HEADER 4
/* Largest frame (without its prefix) unless the caller says otherwise. */
#define IPC_FRAME_MAX_DEFAULT (1024 * 1024)

/* The wire name, type and length limit of an attribute. */
const char *ipc_attr_name(enum ipc_attr attr);
enum ipc_type ipc_attr_type(enum ipc_attr attr);
size_t ipc_attr_max(enum ipc_attr attr);

/* ---- encoding ----------------------------------------------------------- */

/* Builds one frame at the end of a buffer.  A put that cannot be encoded
 * (value too long, attribute given twice, frame too large) marks the writer
 * failed; ipc_write_end() then reports the first such problem and removes
 * the partial frame, so callers check once at the end.  Putting a value of
 * the wrong type is a bug and panics. */
struct ipc_writer {
	struct buf *out;
	size_t start;     /* offset of the frame's length prefix in out */
	size_t max_frame; /* 0 means IPC_FRAME_MAX_DEFAULT */
	bool seen[IPC_ATTR_COUNT];
	int failed_attr; /* -1 while all is well */
	const char *failed_why;
};

void ipc_write_begin(struct ipc_writer *w, struct buf *out, size_t max_frame);
void ipc_put_int(struct ipc_writer *w, enum ipc_attr attr, int64_t value);
void ipc_put_str(struct ipc_writer *w, enum ipc_attr attr, const char *value);
void ipc_put_data(struct ipc_writer *w, enum ipc_attr attr, const void *value, size_t len);
/* Fills in the length prefix.  Returns false (reason in err) when a put
 * failed or the frame is empty. */
bool ipc_write_end(struct ipc_writer *w, struct buf *err);

/* ---- taking frames out of a byte stream --------------------------------- */

enum ipc_frame_status {
	IPC_FRAME_COMPLETE, /* a whole frame is available */
	IPC_FRAME_PARTIAL,  /* need more bytes */
	IPC_FRAME_ERROR,    /* the stream is broken: close the connection */
};

/* Looks at the start of a stream: head holds the first min(avail,
 * IPC_FRAME_HEADER) bytes, avail is how many bytes have been received in
 * total.  On COMPLETE, *payload_len is the frame length without its
 * prefix.  A bad length prefix is an error as soon as the prefix is in, so
 * a peer cannot make us wait for (or buffer) a huge frame.  This is the
 * one place frame lengths are checked: the buffer and socket helpers below
 * and the daemons' evbuffer readers all go through it. */
enum ipc_frame_status ipc_frame_scan(const void *head, size_t avail, size_t max_frame, size_t *payload_len,
                                     struct buf *err);

/* Moves one complete frame's attributes from the front of in into payload
 * (replacing its contents). */
enum ipc_frame_status ipc_frame_take(struct buf *in, size_t max_frame, struct buf *payload, struct buf *err);

/* ---- decoding ----------------------------------------------------------- */

enum ipc_presence { IPC_OPTIONAL, IPC_REQUIRED };

struct ipc_spec {
	enum ipc_attr attr;
	enum ipc_presence presence;
};

#define IPC_SPEC_COUNT(spec) (sizeof(spec) / sizeof((spec)[0]))

struct ipc_value {
	bool present;
	int64_t num;     /* IPC_TYPE_INT */
	const char *ptr; /* IPC_TYPE_STR and IPC_TYPE_DATA, NUL-terminated */
	size_t len;
};

/* A decoded frame.  Strings and data are copied into its own storage, so
 * it stays valid after the payload buffer is reused. */
struct ipc_msg {
	struct ipc_value values[IPC_ATTR_COUNT];
	char *store;
};

/* Decodes a frame's attributes (as left by ipc_frame_take) against spec.
 * On failure msg holds nothing and err says what is wrong.  msg must be
 * released with ipc_msg_free() in either case. */
bool ipc_decode(const void *payload, size_t len, const struct ipc_spec *spec, size_t nspec, struct ipc_msg *msg,
                struct buf *err);
void ipc_msg_free(struct ipc_msg *msg);

/* Accessors; an attribute of another type is a bug and panics.  Absent
 * optional attributes read as 0, NULL and NULL. */
bool ipc_msg_has(const struct ipc_msg *msg, enum ipc_attr attr);
int64_t ipc_msg_int(const struct ipc_msg *msg, enum ipc_attr attr);
const char *ipc_msg_str(const struct ipc_msg *msg, enum ipc_attr attr);
const void *ipc_msg_data(const struct ipc_msg *msg, enum ipc_attr attr, size_t *len);

/* Finds the "request" attribute of a frame, to choose the spec to decode
 * it with.  Checks the frame's structure on the way (but not the names of
 * other attributes: ipc_decode does that).  The verb goes into verb. */
bool ipc_peek_request(const void *payload, size_t len, struct buf *verb, struct buf *err);

/* ---- blocking helpers for simple clients (ternctl, tests) ---------------- */

/* Connects to the UNIX stream socket at path.  Returns the descriptor
 * (close-on-exec) or -1 with the reason in err. */
int ipc_connect(const char *path, struct buf *err);
/* The same for event-driven daemons: the socket is non-blocking, and a
 * peer whose backlog is full is an error (EAGAIN) instead of a wait. */
int ipc_connect_nonblocking(const char *path, struct buf *err);
/* Writes all of frame to fd within timeout_ms (-1: no limit). */
bool ipc_send(int fd, const struct buf *frame, int timeout_ms, struct buf *err);
/* Reads until one whole frame is in, within timeout_ms (-1: no limit), and
 * puts its attributes into payload.  in keeps bytes that arrived beyond
 * the frame, for the next call. */
bool ipc_receive(int fd, struct buf *in, size_t max_frame, int timeout_ms, struct buf *payload, struct buf *err);

#endif
