/* ipc.c: encoder, stream framing, strict decoder and blocking socket
 * helpers of the attribute protocol (see ipc.h for the wire format). */
#include "ipc.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "mem.h"

/* type + name length, and the value length after the name. */
#define ATTR_HEAD 2
#define ATTR_VLEN 4
#define INT_LEN 8

struct attr_info {
	const char *name;
	size_t name_len; /* of the literal: no strlen per attribute */
	enum ipc_type type;
	size_t max;
};

static const struct attr_info attr_table[IPC_ATTR_COUNT] = {
#define IPC_ATTR_INFO(id, name, type, max) [IPC_ATTR_##id] = {name, sizeof(name) - 1, type, max},
    IPC_ATTR_LIST(IPC_ATTR_INFO)
#undef IPC_ATTR_INFO
};

static const struct attr_info *attr_info(enum ipc_attr attr)
{
	if ((unsigned)attr >= IPC_ATTR_COUNT)
		log_panic("bad IPC attribute id %d", (int)attr);
	return &attr_table[attr];
}

const char *ipc_attr_name(enum ipc_attr attr)
{
	return attr_info(attr)->name;
}

enum ipc_type ipc_attr_type(enum ipc_attr attr)
{
	return attr_info(attr)->type;
}

size_t ipc_attr_max(enum ipc_attr attr)
{
	return attr_info(attr)->max;
}

static const char *type_name(int type)
{
	switch (type) {
	case IPC_TYPE_INT:
		return "integer";
	case IPC_TYPE_STR:
		return "string";
	case IPC_TYPE_DATA:
		return "data";
	}
	return "unknown";
}

static size_t effective_max(size_t max_frame)
{
	/* The prefix is 32 bits wide: no setting may exceed what it can say. */
	if (max_frame == 0 || max_frame > UINT32_MAX)
		return IPC_FRAME_MAX_DEFAULT;
	return max_frame;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* ---- encoding ----------------------------------------------------------- */

void ipc_write_begin(struct ipc_writer *w, struct buf *out, size_t max_frame)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
	w->start = out->len;
	w->max_frame = effective_max(max_frame);
	w->failed_attr = -1;
	unsigned char zero[IPC_FRAME_HEADER] = {0};
	buf_append(out, zero, sizeof(zero));
}

static void writer_fail(struct ipc_writer *w, enum ipc_attr attr, const char *why)
{
	if (w->failed_attr < 0) {
		w->failed_attr = (int)attr;
		w->failed_why = why;
	}
}

static void put_attr(struct ipc_writer *w, enum ipc_attr attr, enum ipc_type type, const void *value, size_t len)
{
	const struct attr_info *info = attr_info(attr);
	if (info->type != type)
		log_panic("IPC attribute %s is %s, not %s", info->name, type_name(info->type), type_name(type));
	if (w->failed_attr >= 0)
		return;
	if (w->seen[attr])
		return writer_fail(w, attr, "given twice");
	if (len > info->max)
		return writer_fail(w, attr, "value too long");
	size_t name_len = info->name_len;
	size_t frame_len = w->out->len - w->start - IPC_FRAME_HEADER;
	if (ATTR_HEAD + name_len + ATTR_VLEN + len > w->max_frame - frame_len)
		return writer_fail(w, attr, "does not fit in the frame");
	w->seen[attr] = true;
	/* one reserve, then the head, the name, the value's length and the value */
	size_t total = ATTR_HEAD + name_len + ATTR_VLEN + len;
	buf_reserve(w->out, total);
	unsigned char *p = (unsigned char *)w->out->data + w->out->len;
	p[0] = (unsigned char)type;
	p[1] = (unsigned char)name_len;
	memcpy(p + ATTR_HEAD, info->name, name_len);
	put_be32(p + ATTR_HEAD + name_len, (uint32_t)len);
	if (len)
		memcpy(p + ATTR_HEAD + name_len + ATTR_VLEN, value, len);
	w->out->len += total;
	w->out->data[w->out->len] = '\0';
}

void ipc_put_int(struct ipc_writer *w, enum ipc_attr attr, int64_t value)
{
	unsigned char be[INT_LEN];
	uint64_t u = (uint64_t)value;
	for (int i = INT_LEN - 1; i >= 0; i--, u >>= 8)
		be[i] = (unsigned char)u;
	put_attr(w, attr, IPC_TYPE_INT, be, sizeof(be));
}

void ipc_put_str(struct ipc_writer *w, enum ipc_attr attr, const char *value)
{
	put_attr(w, attr, IPC_TYPE_STR, value, strlen(value));
}

void ipc_put_data(struct ipc_writer *w, enum ipc_attr attr, const void *value, size_t len)
{
	put_attr(w, attr, IPC_TYPE_DATA, value, len);
}

bool ipc_write_end(struct ipc_writer *w, struct buf *err)
{
	size_t frame_len = w->out->len - w->start - IPC_FRAME_HEADER;
	if (w->failed_attr >= 0) {
		buf_printf(err, "cannot encode attribute %s: %s", ipc_attr_name((enum ipc_attr)w->failed_attr),
		           w->failed_why);
	} else if (frame_len == 0) {
		buf_puts(err, "cannot encode an empty frame");
	} else {
		put_be32((unsigned char *)w->out->data + w->start, (uint32_t)frame_len);
		return true;
	}
	buf_truncate(w->out, w->start);
	return false;
}

/* ---- framing ------------------------------------------------------------ */

enum ipc_frame_status ipc_frame_scan(const void *head, size_t avail, size_t max_frame, size_t *payload_len,
                                     struct buf *err)
{
	if (avail < IPC_FRAME_HEADER)
		return IPC_FRAME_PARTIAL;
	uint32_t len = get_be32(head);
	size_t max = effective_max(max_frame);
	if (len == 0) {
		buf_puts(err, "empty frame");
		return IPC_FRAME_ERROR;
	}
	if (len > max) {
		buf_printf(err, "frame of %lu bytes exceeds the limit of %zu", (unsigned long)len, max);
		return IPC_FRAME_ERROR;
	}
	if (avail - IPC_FRAME_HEADER < len)
		return IPC_FRAME_PARTIAL;
	*payload_len = len;
	return IPC_FRAME_COMPLETE;
}

enum ipc_frame_status ipc_frame_take(struct buf *in, size_t max_frame, struct buf *payload, struct buf *err)
{
	size_t len = 0;
	enum ipc_frame_status status = ipc_frame_scan(in->data, in->len, max_frame, &len, err);
	if (status != IPC_FRAME_COMPLETE)
		return status;
	buf_reset(payload);
	buf_append(payload, in->data + IPC_FRAME_HEADER, len);
	buf_consume(in, IPC_FRAME_HEADER + len);
	return IPC_FRAME_COMPLETE;
}

/* ---- decoding ----------------------------------------------------------- */

/* One attribute as found on the wire, before its name is looked up. */
struct raw_attr {
	int type;
	const char *name;
	size_t name_len;
	const unsigned char *value;
	size_t len;
};

/* Reads the attribute at *pos.  Structure only: names and types are the
 * caller's business. */
static bool next_raw_attr(const unsigned char *p, size_t end, size_t *pos, struct raw_attr *a, struct buf *err)
{
	size_t left = end - *pos;
	if (left < ATTR_HEAD + 1 + ATTR_VLEN) {
		buf_printf(err, "%zu bytes of trailing garbage after the last attribute", left);
		return false;
	}
	const unsigned char *q = p + *pos;
	a->type = q[0];
	a->name_len = q[1];
	a->name = (const char *)q + ATTR_HEAD;
	if (a->name_len == 0) {
		buf_puts(err, "attribute with an empty name");
		return false;
	}
	if (left - ATTR_HEAD - ATTR_VLEN < a->name_len) {
		buf_puts(err, "truncated attribute name");
		return false;
	}
	size_t vlen_at = ATTR_HEAD + a->name_len;
	a->len = get_be32(q + vlen_at);
	a->value = q + vlen_at + ATTR_VLEN;
	if (left - vlen_at - ATTR_VLEN < a->len) {
		buf_printf(err, "truncated value of attribute %.*s (%zu of %zu bytes)", (int)a->name_len, a->name,
		           left - vlen_at - ATTR_VLEN, a->len);
		return false;
	}
	*pos += vlen_at + ATTR_VLEN + a->len;
	return true;
}

/* Attribute names to IDs: an open-addressing table, built once, so that
 * decoding an attribute costs one hash instead of a scan of every name. */
#define NAME_SLOTS 512 /* 2^9 (name_hash), at least four times the names */
_Static_assert(IPC_ATTR_COUNT * 4 <= NAME_SLOTS, "NAME_SLOTS too small for the attribute names");
static unsigned char name_slots[NAME_SLOTS]; /* attribute ID + 1; 0: empty */
static pthread_once_t name_slots_once = PTHREAD_ONCE_INIT;
_Static_assert(IPC_ATTR_COUNT < 255, "name_slots holds IDs in a byte");

/* From the length and three of the name's bytes: the names differ
 * there, and a hash over every byte cost more than the scan it replaced
 * saved.  (109 names: 1.2 probes on average.) */
static uint32_t name_hash(const char *name, size_t len)
{
	const unsigned char *n = (const unsigned char *)name;
	uint32_t h = (uint32_t)len;
	h = h * 31 + n[0];
	h = h * 31 + n[len / 2];
	h = h * 31 + n[len - 1];
	return (h * 2654435769u) >> 23; /* Fibonacci hashing: the top 9 bits */
}

static void build_name_slots(void)
{
	for (int id = 0; id < IPC_ATTR_COUNT; id++) {
		uint32_t slot = name_hash(attr_table[id].name, attr_table[id].name_len);
		while (name_slots[slot] != 0)
			slot = (slot + 1) & (NAME_SLOTS - 1);
		name_slots[slot] = (unsigned char)(id + 1);
	}
}

/* len is at least 1 (next_raw_attr refuses an empty name). */
static int lookup_name(const char *name, size_t len)
{
	pthread_once(&name_slots_once, build_name_slots);
	for (uint32_t slot = name_hash(name, len); name_slots[slot] != 0;
	     slot = (slot + 1) & (NAME_SLOTS - 1)) {
		const struct attr_info *info = &attr_table[name_slots[slot] - 1];
		if (info->name_len == len && memcmp(info->name, name, len) == 0)
			return name_slots[slot] - 1;
	}
	return -1;
}

/* Peer-supplied names go into log lines: keep them printable. */
static void put_sanitized(struct buf *err, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			buf_putc(err, (char)c);
		else
			buf_printf(err, "\\x%02x", c);
	}
}

static bool check_value(const struct attr_info *info, const struct raw_attr *a, struct buf *err)
{
	if (a->type != (int)info->type) {
		buf_printf(err, "attribute %s has type %s, expected %s", info->name, type_name(a->type),
		           type_name(info->type));
		return false;
	}
	if (info->type == IPC_TYPE_INT && a->len != INT_LEN) {
		buf_printf(err, "integer attribute %s has %zu bytes, expected %d", info->name, a->len, INT_LEN);
		return false;
	}
	if (a->len > info->max) {
		buf_printf(err, "value of attribute %s too long (%zu bytes, at most %zu)", info->name, a->len,
		           info->max);
		return false;
	}
	if (info->type == IPC_TYPE_STR && memchr(a->value, '\0', a->len) != NULL) {
		buf_printf(err, "NUL byte inside string attribute %s", info->name);
		return false;
	}
	return true;
}

static int64_t decode_int(const unsigned char *p)
{
	uint64_t u = 0;
	for (int i = 0; i < INT_LEN; i++)
		u = u << 8 | p[i];
	return (int64_t)u;
}

/* The attributes a spec allows, by ID. */
static void allowed_set(const struct ipc_spec *spec, size_t nspec, bool allowed[IPC_ATTR_COUNT])
{
	memset(allowed, 0, IPC_ATTR_COUNT * sizeof(*allowed));
	for (size_t i = 0; i < nspec; i++)
		allowed[spec[i].attr] = true;
}

/* Copies a string or data value into the message's storage with a NUL
 * after it, so strings can be used as C strings. */
static void store_value(struct ipc_msg *msg, size_t *used, struct ipc_value *v, const struct raw_attr *a)
{
	char *dst = msg->store + *used;
	if (a->len)
		memcpy(dst, a->value, a->len);
	dst[a->len] = '\0';
	v->ptr = dst;
	v->len = a->len;
	*used += a->len + 1;
}

static bool decode_attr(struct ipc_msg *msg, size_t *used, const struct raw_attr *a, const bool allowed[IPC_ATTR_COUNT],
                        struct buf *err)
{
	int id = lookup_name(a->name, a->name_len);
	if (id < 0) {
		buf_puts(err, "unknown attribute \"");
		put_sanitized(err, a->name, a->name_len);
		buf_putc(err, '"');
		return false;
	}
	const struct attr_info *info = &attr_table[id];
	if (!allowed[id]) {
		buf_printf(err, "unexpected attribute %s", info->name);
		return false;
	}
	struct ipc_value *v = &msg->values[id];
	if (v->present) {
		buf_printf(err, "duplicated attribute %s", info->name);
		return false;
	}
	if (!check_value(info, a, err))
		return false;
	v->present = true;
	if (info->type == IPC_TYPE_INT)
		v->num = decode_int(a->value);
	else
		store_value(msg, used, v, a);
	return true;
}

static bool check_required(const struct ipc_msg *msg, const struct ipc_spec *spec, size_t nspec, struct buf *err)
{
	for (size_t i = 0; i < nspec; i++) {
		if (spec[i].presence == IPC_REQUIRED && !msg->values[spec[i].attr].present) {
			buf_printf(err, "missing attribute %s", ipc_attr_name(spec[i].attr));
			return false;
		}
	}
	return true;
}

bool ipc_decode(const void *payload, size_t len, const struct ipc_spec *spec, size_t nspec, struct ipc_msg *msg,
                struct buf *err)
{
	memset(msg, 0, sizeof(*msg));
	/* Every value is a slice of the payload; each gains one NUL. */
	msg->store = mem_alloc(len + IPC_ATTR_COUNT + 1);
	size_t used = 0, pos = 0;
	bool allowed[IPC_ATTR_COUNT];
	allowed_set(spec, nspec, allowed);
	bool ok = true;
	while (ok && pos < len) {
		struct raw_attr a;
		ok = next_raw_attr(payload, len, &pos, &a, err) && decode_attr(msg, &used, &a, allowed, err);
	}
	if (ok)
		ok = check_required(msg, spec, nspec, err);
	if (!ok) {
		ipc_msg_free(msg);
		memset(msg, 0, sizeof(*msg));
	}
	return ok;
}

void ipc_msg_free(struct ipc_msg *msg)
{
	free(msg->store);
	msg->store = NULL;
}

static const struct ipc_value *msg_value(const struct ipc_msg *msg, enum ipc_attr attr, enum ipc_type type)
{
	const struct attr_info *info = attr_info(attr);
	if (info->type != type)
		log_panic("IPC attribute %s is %s, read as %s", info->name, type_name(info->type), type_name(type));
	return &msg->values[attr];
}

bool ipc_msg_has(const struct ipc_msg *msg, enum ipc_attr attr)
{
	attr_info(attr); /* panics on a bad id */
	return msg->values[attr].present;
}

int64_t ipc_msg_int(const struct ipc_msg *msg, enum ipc_attr attr)
{
	return msg_value(msg, attr, IPC_TYPE_INT)->num;
}

const char *ipc_msg_str(const struct ipc_msg *msg, enum ipc_attr attr)
{
	return msg_value(msg, attr, IPC_TYPE_STR)->ptr;
}

const void *ipc_msg_data(const struct ipc_msg *msg, enum ipc_attr attr, size_t *len)
{
	const struct ipc_value *v = msg_value(msg, attr, IPC_TYPE_DATA);
	*len = v->len;
	return v->ptr;
}

bool ipc_peek_request(const void *payload, size_t len, struct buf *verb, struct buf *err)
{
	const char *want = ipc_attr_name(IPC_ATTR_REQUEST);
	size_t pos = 0;
	while (pos < len) {
		struct raw_attr a;
		if (!next_raw_attr(payload, len, &pos, &a, err))
			return false;
		if (a.name_len != strlen(want) || memcmp(a.name, want, a.name_len) != 0)
			continue;
		if (!check_value(attr_info(IPC_ATTR_REQUEST), &a, err))
			return false;
		buf_reset(verb);
		buf_append(verb, a.value, a.len);
		return true;
	}
	buf_printf(err, "missing attribute %s", want);
	return false;
}

/* ---- blocking socket helpers -------------------------------------------- */

/* Waits for fd to become ready for events before the deadline (-1: none).
 * Returns false with the reason in err on timeout or poll failure. */
static bool wait_fd(int fd, short events, int64_t deadline, struct buf *err)
{
	for (;;) {
		int timeout = -1;
		if (deadline >= 0) {
			int64_t left = deadline - clock_monotonic_ms();
			timeout = left > 0 ? (int)(left > INT32_MAX ? INT32_MAX : left) : 0;
		}
		struct pollfd pfd = {.fd = fd, .events = events};
		int n = poll(&pfd, 1, timeout);
		if (n > 0)
			return true;
		if (n == 0) {
			buf_puts(err, "timed out");
			return false;
		}
		if (errno != EINTR) {
			buf_printf(err, "poll: %s", strerror(errno));
			return false;
		}
	}
}

static int64_t deadline_after(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : clock_monotonic_ms() + timeout_ms;
}

static int connect_unix(const char *path, int flags, struct buf *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sun.sun_path)) {
		buf_printf(err, "socket path %s is too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (fd < 0) {
		buf_printf(err, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		buf_printf(err, "cannot connect to %s: %s", path, strerror(errno));
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int ipc_connect(const char *path, struct buf *err)
{
	return connect_unix(path, 0, err);
}

int ipc_connect_nonblocking(const char *path, struct buf *err)
{
	return connect_unix(path, SOCK_NONBLOCK, err);
}

bool ipc_send(int fd, const struct buf *frame, int timeout_ms, struct buf *err)
{
	int64_t deadline = deadline_after(timeout_ms);
	size_t done = 0;
	while (done < frame->len) {
		if (!wait_fd(fd, POLLOUT, deadline, err))
			return false;
		ssize_t n = send(fd, frame->data + done, frame->len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
			continue;
		if (n < 0) {
			buf_printf(err, "send: %s", strerror(errno));
			return false;
		}
		done += (size_t)n;
	}
	return true;
}

/* Appends what one read returns to in.  Returns false at end of stream
 * or on error. */
static bool read_some(int fd, struct buf *in, struct buf *err)
{
	char chunk[16384];
	for (;;) {
		ssize_t n = recv(fd, chunk, sizeof(chunk), MSG_DONTWAIT);
		if (n > 0) {
			buf_append(in, chunk, (size_t)n);
			return true;
		}
		if (n == 0) {
			buf_puts(err, in->len ? "connection closed in the middle of a frame" : "connection closed");
			return false;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return true;
		if (errno != EINTR) {
			buf_printf(err, "recv: %s", strerror(errno));
			return false;
		}
	}
}

bool ipc_receive(int fd, struct buf *in, size_t max_frame, int timeout_ms, struct buf *payload, struct buf *err)
{
	int64_t deadline = deadline_after(timeout_ms);
	for (;;) {
		switch (ipc_frame_take(in, max_frame, payload, err)) {
		case IPC_FRAME_COMPLETE:
			return true;
		case IPC_FRAME_ERROR:
			return false;
		case IPC_FRAME_PARTIAL:
			break;
		}
		if (!wait_fd(fd, POLLIN, deadline, err) || !read_some(fd, in, err))
			return false;
	}
}
