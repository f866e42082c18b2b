/* test_ipc.c: unit tests of the IPC attribute protocol: encoding and
 * decoding round trips, every class of malformed input, stream framing
 * and the blocking socket helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "ipc.h"
#include "mem.h"
#include "testutil.h"

/* Appends a hand-made attribute, so tests can build frames the encoder
 * refuses to produce. */
static void raw_attr(struct buf *b, char type, const char *name, const void *value, uint32_t len)
{
	unsigned char head[2] = {(unsigned char)type, (unsigned char)strlen(name)};
	unsigned char vlen[4] = {len >> 24, len >> 16, len >> 8, len};
	buf_append(b, head, 2);
	buf_append(b, name, strlen(name));
	buf_append(b, vlen, 4);
	buf_append(b, value, len);
}

static void raw_str(struct buf *b, const char *name, const char *value)
{
	raw_attr(b, 's', name, value, (uint32_t)strlen(value));
}

static const struct ipc_spec enqueue_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_QUEUE_ID, IPC_REQUIRED}, {IPC_ATTR_SIZE, IPC_REQUIRED},
    {IPC_ATTR_DATA, IPC_OPTIONAL},    {IPC_ATTR_ENVID, IPC_OPTIONAL},
};

/* Decodes payload against enqueue_spec and checks the error message. */
static void expect_decode_error(const struct buf *payload, const char *why)
{
	struct ipc_msg msg;
	struct buf err = BUF_INIT;
	assert_false(ipc_decode(payload->data, payload->len, enqueue_spec, IPC_SPEC_COUNT(enqueue_spec), &msg, &err));
	assert_true(testutil_contains(buf_cstr(&err), why));
	ipc_msg_free(&msg);
	buf_free(&err);
}

static void good_payload(struct buf *b)
{
	raw_str(b, "request", "enqueue");
	raw_str(b, "queue_id", "4Fx2k9");
	unsigned char size[8] = {0, 0, 0, 0, 0, 0, 0x10, 0};
	raw_attr(b, 'i', "size", size, 8);
}

static void test_round_trip_types(void **state)
{
	struct buf frame = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	const unsigned char body[] = {'a', 0, 'b', 0xff, '\r', '\n'};
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, "");
	ipc_put_int(&w, IPC_ATTR_SIZE, INT64_MIN);
	ipc_put_int(&w, IPC_ATTR_SEQ, INT64_MAX);
	ipc_put_int(&w, IPC_ATTR_STATUS, -1);
	ipc_put_data(&w, IPC_ATTR_DATA, body, sizeof(body));
	assert_true(ipc_write_end(&w, &err));

	assert_int_equal(ipc_frame_take(&frame, 0, &payload, &err), IPC_FRAME_COMPLETE);
	assert_int_equal(frame.len, 0);
	const struct ipc_spec spec[] = {
	    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_QUEUE_ID, IPC_REQUIRED}, {IPC_ATTR_SIZE, IPC_REQUIRED},
	    {IPC_ATTR_SEQ, IPC_REQUIRED},     {IPC_ATTR_STATUS, IPC_REQUIRED},   {IPC_ATTR_DATA, IPC_REQUIRED},
	    {IPC_ATTR_ENVID, IPC_OPTIONAL},   {IPC_ATTR_JOB_ID, IPC_OPTIONAL},
	};
	struct ipc_msg msg;
	assert_true(ipc_decode(payload.data, payload.len, spec, IPC_SPEC_COUNT(spec), &msg, &err));
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_REQUEST), "enqueue");
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID), "");
	assert_true(ipc_msg_int(&msg, IPC_ATTR_SIZE) == INT64_MIN);
	assert_true(ipc_msg_int(&msg, IPC_ATTR_SEQ) == INT64_MAX);
	assert_true(ipc_msg_int(&msg, IPC_ATTR_STATUS) == -1);
	size_t len = 0;
	const void *data = ipc_msg_data(&msg, IPC_ATTR_DATA, &len);
	assert_int_equal(len, sizeof(body));
	assert_memory_equal(data, body, sizeof(body));
	assert_false(ipc_msg_has(&msg, IPC_ATTR_ENVID));
	assert_null(ipc_msg_str(&msg, IPC_ATTR_ENVID));
	assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_JOB_ID), 0);
	assert_int_equal(err.len, 0);
	ipc_msg_free(&msg);
	buf_free(&frame);
	buf_free(&payload);
	buf_free(&err);
}

/* Every attribute of the list, each at its longest, in one frame. */
static void test_round_trip_every_attribute(void **state)
{
	struct buf frame = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	struct ipc_spec spec[IPC_ATTR_COUNT];
	struct ipc_writer w;
	char *fill = mem_alloc(IPC_DATA_MAX + 1);
	memset(fill, 'x', IPC_DATA_MAX);
	ipc_write_begin(&w, &frame, 0);
	for (int i = 0; i < IPC_ATTR_COUNT; i++) {
		enum ipc_attr a = (enum ipc_attr)i;
		spec[i] = (struct ipc_spec){a, IPC_REQUIRED};
		size_t max = ipc_attr_max(a);
		assert_true(strlen(ipc_attr_name(a)) > 0);
		if (ipc_attr_type(a) == IPC_TYPE_INT) {
			ipc_put_int(&w, a, -1000 * i);
		} else if (ipc_attr_type(a) == IPC_TYPE_STR) {
			fill[max] = '\0';
			ipc_put_str(&w, a, fill);
			fill[max] = 'x';
		} else {
			ipc_put_data(&w, a, fill, max);
		}
	}
	assert_true(ipc_write_end(&w, &err));
	assert_int_equal(ipc_frame_take(&frame, 0, &payload, &err), IPC_FRAME_COMPLETE);
	struct ipc_msg msg;
	assert_true(ipc_decode(payload.data, payload.len, spec, IPC_ATTR_COUNT, &msg, &err));
	for (int i = 0; i < IPC_ATTR_COUNT; i++) {
		enum ipc_attr a = (enum ipc_attr)i;
		size_t len = 0;
		if (ipc_attr_type(a) == IPC_TYPE_INT) {
			assert_true(ipc_msg_int(&msg, a) == -1000 * i);
		} else if (ipc_attr_type(a) == IPC_TYPE_STR) {
			assert_int_equal(strlen(ipc_msg_str(&msg, a)), ipc_attr_max(a));
		} else {
			assert_non_null(ipc_msg_data(&msg, a, &len));
			assert_int_equal(len, ipc_attr_max(a));
		}
	}
	ipc_msg_free(&msg);
	free(fill);
	buf_free(&frame);
	buf_free(&payload);
	buf_free(&err);
}

static bool is_attribute_name(const char *name)
{
	for (int i = 0; i < IPC_ATTR_COUNT; i++)
		if (strcmp(ipc_attr_name(i), name) == 0)
			return true;
	return false;
}

/* A name one byte away from a real one, or one byte longer or shorter,
 * is unknown: the decoder's name table looks at a few bytes of a name to
 * find its slot, and must still compare the whole of it. */
static void test_near_names_unknown(void **state)
{
	struct ipc_spec spec[IPC_ATTR_COUNT];
	for (int i = 0; i < IPC_ATTR_COUNT; i++)
		spec[i] = (struct ipc_spec){(enum ipc_attr)i, IPC_OPTIONAL};
	size_t tried = 0;
	for (int i = 0; i < IPC_ATTR_COUNT; i++) {
		const char *name = ipc_attr_name(i);
		size_t len = strlen(name);
		char variant[260];
		for (size_t pos = 0; pos <= len; pos++) {
			for (int change = 0; change < 3; change++) {
				memcpy(variant, name, len + 1);
				if (change == 0 && pos < len)
					variant[pos] = variant[pos] == 'z' ? 'y' : 'z'; /* one byte changed */
				else if (change == 1 && pos == len)
					memcpy(variant + len, "x", 2); /* one byte longer */
				else if (change == 2 && pos == len && len > 1)
					variant[len - 1] = '\0'; /* one byte shorter */
				else
					continue;
				if (is_attribute_name(variant))
					continue;
				struct buf payload = BUF_INIT, err = BUF_INIT;
				raw_str(&payload, variant, "v");
				struct ipc_msg msg;
				assert_false(ipc_decode(payload.data, payload.len, spec, IPC_ATTR_COUNT, &msg, &err));
				assert_true(testutil_contains(buf_cstr(&err), "unknown attribute"));
				ipc_msg_free(&msg);
				buf_free(&payload);
				buf_free(&err);
				tried++;
			}
		}
	}
	assert_true(tried > (size_t)IPC_ATTR_COUNT * 4);
}

/* Wire names must be unique, or the decoder could not tell them apart. */
static void test_attribute_names_unique(void **state)
{
	for (int i = 0; i < IPC_ATTR_COUNT; i++) {
		assert_true(strlen(ipc_attr_name(i)) < 256);
		for (int j = i + 1; j < IPC_ATTR_COUNT; j++)
			assert_string_not_equal(ipc_attr_name(i), ipc_attr_name(j));
	}
}

static void expect_write_error(void (*puts_fn)(struct ipc_writer *), size_t max_frame, const char *why)
{
	struct buf frame = BUF_INIT, err = BUF_INIT;
	buf_puts(&frame, "earlier");
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, max_frame);
	puts_fn(&w);
	assert_false(ipc_write_end(&w, &err));
	assert_true(testutil_contains(buf_cstr(&err), why));
	/* The partial frame is gone, what was there before stays. */
	assert_string_equal(buf_cstr(&frame), "earlier");
	buf_free(&frame);
	buf_free(&err);
}

static void put_long_queue_id(struct ipc_writer *w)
{
	char id[ipc_attr_max(IPC_ATTR_QUEUE_ID) + 2];
	memset(id, 'A', sizeof(id) - 1);
	id[sizeof(id) - 1] = '\0';
	ipc_put_str(w, IPC_ATTR_QUEUE_ID, id);
	ipc_put_str(w, IPC_ATTR_REQUEST, "after the failure");
}

static void put_twice(struct ipc_writer *w)
{
	ipc_put_int(w, IPC_ATTR_SEQ, 1);
	ipc_put_int(w, IPC_ATTR_SEQ, 2);
}

static void put_too_much(struct ipc_writer *w)
{
	ipc_put_str(w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(w, IPC_ATTR_REASON, "a reason too long for a tiny frame");
}

static void put_nothing(struct ipc_writer *w)
{
}

static void test_write_errors(void **state)
{
	expect_write_error(put_long_queue_id, 0, "cannot encode attribute queue_id: value too long");
	expect_write_error(put_twice, 0, "cannot encode attribute seq: given twice");
	expect_write_error(put_too_much, 40, "cannot encode attribute reason: does not fit in the frame");
	expect_write_error(put_nothing, 0, "empty frame");
}

static void test_decode_errors(void **state)
{
	struct buf p = BUF_INIT;

	good_payload(&p);
	raw_str(&p, "no_such_attr\n", "x");
	expect_decode_error(&p, "unknown attribute \"no_such_attr\\x0a\"");

	buf_reset(&p);
	good_payload(&p);
	raw_str(&p, "vmta", "pool1");
	expect_decode_error(&p, "unexpected attribute vmta");

	buf_reset(&p);
	raw_str(&p, "request", "enqueue");
	raw_str(&p, "queue_id", "4Fx2k9");
	expect_decode_error(&p, "missing attribute size");

	buf_reset(&p);
	good_payload(&p);
	raw_str(&p, "queue_id", "again");
	expect_decode_error(&p, "duplicated attribute queue_id");

	buf_reset(&p);
	raw_str(&p, "request", "enqueue");
	raw_str(&p, "size", "12345678");
	expect_decode_error(&p, "attribute size has type string, expected integer");

	buf_reset(&p);
	raw_attr(&p, 'x', "request", "enqueue", 7);
	expect_decode_error(&p, "attribute request has type unknown, expected string");

	buf_reset(&p);
	raw_str(&p, "request", "enqueue");
	raw_attr(&p, 'i', "size", "1234", 4);
	expect_decode_error(&p, "integer attribute size has 4 bytes, expected 8");

	buf_reset(&p);
	raw_str(&p, "request", "enqueue");
	raw_str(&p, "queue_id", "0123456789012345678901234567890123456789");
	expect_decode_error(&p, "value of attribute queue_id too long (40 bytes, at most 32)");

	buf_reset(&p);
	raw_attr(&p, 's', "request", "enq\0ueue", 8);
	expect_decode_error(&p, "NUL byte inside string attribute request");

	buf_reset(&p);
	good_payload(&p);
	buf_append(&p, "\0\0\0", 3);
	expect_decode_error(&p, "3 bytes of trailing garbage after the last attribute");

	buf_reset(&p);
	raw_attr(&p, 's', "", "x", 1);
	expect_decode_error(&p, "attribute with an empty name");

	buf_reset(&p);
	good_payload(&p);
	raw_str(&p, "envid", "abcdef");
	buf_truncate(&p, p.len - 2);
	expect_decode_error(&p, "truncated value of attribute envid (4 of 6 bytes)");

	buf_reset(&p);
	good_payload(&p);
	buf_append(&p,
	           "s\x20"
	           "envid\0\0\0\0",
	           11);
	expect_decode_error(&p, "truncated attribute name");

	/* Binary data may hold NUL bytes. */
	buf_reset(&p);
	good_payload(&p);
	raw_attr(&p, 'd', "data", "a\0b", 3);
	struct ipc_msg msg;
	struct buf err = BUF_INIT;
	assert_true(ipc_decode(p.data, p.len, enqueue_spec, IPC_SPEC_COUNT(enqueue_spec), &msg, &err));
	ipc_msg_free(&msg);
	buf_free(&err);
	buf_free(&p);
}

/* Every proper prefix of a valid payload must be rejected, never read
 * past its end. */
static void test_truncated_payload_every_position(void **state)
{
	const struct ipc_spec all_required[] = {
	    {IPC_ATTR_REQUEST, IPC_REQUIRED},
	    {IPC_ATTR_QUEUE_ID, IPC_REQUIRED},
	    {IPC_ATTR_SIZE, IPC_REQUIRED},
	    {IPC_ATTR_DATA, IPC_REQUIRED},
	};
	struct buf p = BUF_INIT, err = BUF_INIT;
	good_payload(&p);
	raw_attr(&p, 'd', "data", "body", 4);
	for (size_t cut = 0; cut < p.len; cut++) {
		char *copy = mem_memdup(p.data, cut ? cut : 1);
		struct ipc_msg msg;
		buf_reset(&err);
		assert_false(ipc_decode(copy, cut, all_required, IPC_SPEC_COUNT(all_required), &msg, &err));
		assert_true(err.len > 0);
		ipc_msg_free(&msg);
		free(copy);
	}
	buf_free(&p);
	buf_free(&err);
}

static void test_frame_take_partial_every_position(void **state)
{
	struct buf frames = BUF_INIT, in = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "first");
	assert_true(ipc_write_end(&w, &err));
	size_t first_len = frames.len;
	ipc_write_begin(&w, &frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "second");
	assert_true(ipc_write_end(&w, &err));

	/* Byte by byte: PARTIAL until the frame is whole, nothing consumed. */
	for (size_t i = 0; i < first_len - 1; i++) {
		buf_append(&in, frames.data + i, 1);
		assert_int_equal(ipc_frame_take(&in, 0, &payload, &err), IPC_FRAME_PARTIAL);
		assert_int_equal(in.len, i + 1);
	}
	/* The rest arrives at once: two frames come out in order. */
	buf_append(&in, frames.data + first_len - 1, frames.len - first_len + 1);
	struct buf verb = BUF_INIT;
	assert_int_equal(ipc_frame_take(&in, 0, &payload, &err), IPC_FRAME_COMPLETE);
	assert_true(ipc_peek_request(payload.data, payload.len, &verb, &err));
	assert_string_equal(buf_cstr(&verb), "first");
	assert_int_equal(ipc_frame_take(&in, 0, &payload, &err), IPC_FRAME_COMPLETE);
	assert_true(ipc_peek_request(payload.data, payload.len, &verb, &err));
	assert_string_equal(buf_cstr(&verb), "second");
	assert_int_equal(ipc_frame_take(&in, 0, &payload, &err), IPC_FRAME_PARTIAL);
	assert_int_equal(err.len, 0);
	buf_free(&frames);
	buf_free(&in);
	buf_free(&payload);
	buf_free(&err);
	buf_free(&verb);
}

static void expect_frame_error(const char *prefix, size_t max, const char *why)
{
	struct buf in = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	buf_append(&in, prefix, 4);
	assert_int_equal(ipc_frame_take(&in, max, &payload, &err), IPC_FRAME_ERROR);
	assert_true(testutil_contains(buf_cstr(&err), why));
	buf_free(&in);
	buf_free(&payload);
	buf_free(&err);
}

static void test_frame_length_prefix(void **state)
{
	/* Refused as soon as the prefix is in, without waiting for the body. */
	expect_frame_error("\xff\xff\xff\xff", 0, "frame of 4294967295 bytes exceeds the limit of 1048576");
	expect_frame_error("\x00\x10\x00\x01", 0, "frame of 1048577 bytes exceeds the limit of 1048576");
	expect_frame_error("\x00\x00\x01\x01", 256, "frame of 257 bytes exceeds the limit of 256");
	expect_frame_error("\x00\x00\x00\x00", 0, "empty frame");

	/* Exactly at the limit is fine. */
	size_t len = 0;
	struct buf err = BUF_INIT;
	assert_int_equal(ipc_frame_scan("\x00\x10\x00\x00", 4 + 1048576, 0, &len, &err), IPC_FRAME_COMPLETE);
	assert_int_equal(len, 1048576);
	assert_int_equal(ipc_frame_scan("\x00\x10\x00\x00", 4 + 1048575, 0, &len, &err), IPC_FRAME_PARTIAL);
	assert_int_equal(ipc_frame_scan("\x00\x10", 2, 0, &len, &err), IPC_FRAME_PARTIAL);
	assert_int_equal(ipc_frame_scan(NULL, 0, 0, &len, &err), IPC_FRAME_PARTIAL);
	buf_free(&err);
}

static void test_peek_request(void **state)
{
	struct buf p = BUF_INIT, verb = BUF_INIT, err = BUF_INIT;
	raw_str(&p, "queue_id", "x");
	raw_str(&p, "surprise", "unknown names are ipc_decode's business");
	raw_str(&p, "request", "status");
	assert_true(ipc_peek_request(p.data, p.len, &verb, &err));
	assert_string_equal(buf_cstr(&verb), "status");

	buf_reset(&p);
	raw_str(&p, "queue_id", "x");
	assert_false(ipc_peek_request(p.data, p.len, &verb, &err));
	assert_true(testutil_contains(buf_cstr(&err), "missing attribute request"));

	buf_reset(&p);
	buf_reset(&err);
	raw_attr(&p, 'i', "request", "\0\0\0\0\0\0\0\1", 8);
	assert_false(ipc_peek_request(p.data, p.len, &verb, &err));
	assert_true(testutil_contains(buf_cstr(&err), "attribute request has type integer, expected string"));

	buf_reset(&p);
	buf_reset(&err);
	raw_str(&p, "queue_id", "x");
	buf_append(&p, "zz", 2);
	assert_false(ipc_peek_request(p.data, p.len, &verb, &err));
	assert_true(testutil_contains(buf_cstr(&err), "trailing garbage"));
	buf_free(&p);
	buf_free(&verb);
	buf_free(&err);
}

/* A fixed-seed generator, so a failure is reproducible. */
static uint32_t next_random(uint32_t *state)
{
	*state = *state * 1103515245u + 12345u;
	return *state >> 8;
}

/* Random bytes and randomly damaged valid frames: decoding must fail
 * cleanly (with a reason) or succeed, and never crash. */
static void test_random_garbage(void **state)
{
	uint32_t seed = 20260101;
	struct buf valid = BUF_INIT, in = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &valid, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, "4Fx2k9");
	ipc_put_int(&w, IPC_ATTR_SIZE, 4096);
	ipc_put_data(&w, IPC_ATTR_DATA, "Subject: hi\r\n", 13);
	assert_true(ipc_write_end(&w, &err));
	int decoded = 0;
	for (int round = 0; round < 20000; round++) {
		buf_reset(&in);
		if (round % 2) {
			buf_append(&in, valid.data, valid.len);
			int flips = 1 + next_random(&seed) % 4;
			for (int i = 0; i < flips; i++)
				in.data[next_random(&seed) % in.len] = (char)next_random(&seed);
		} else {
			size_t len = next_random(&seed) % 80;
			for (size_t i = 0; i < len; i++)
				buf_putc(&in, (char)next_random(&seed));
		}
		buf_reset(&err);
		if (ipc_frame_take(&in, 4096, &payload, &err) != IPC_FRAME_COMPLETE)
			continue;
		struct ipc_msg msg;
		bool ok = ipc_decode(payload.data, payload.len, enqueue_spec, IPC_SPEC_COUNT(enqueue_spec), &msg, &err);
		assert_true(ok ? err.len == 0 : err.len > 0);
		decoded += ok;
		ipc_msg_free(&msg);
	}
	/* Flips inside the data value leave valid frames behind. */
	assert_true(decoded > 0);
	buf_free(&valid);
	buf_free(&in);
	buf_free(&payload);
	buf_free(&err);
}

static void make_frame(struct buf *frame, const char *verb, int64_t seq)
{
	struct buf err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, verb);
	ipc_put_int(&w, IPC_ATTR_SEQ, seq);
	assert_true(ipc_write_end(&w, &err));
	buf_free(&err);
}

static void expect_frame(int fd, struct buf *in, const char *verb, int64_t seq)
{
	const struct ipc_spec spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_SEQ, IPC_REQUIRED}};
	struct buf payload = BUF_INIT, err = BUF_INIT;
	assert_true(ipc_receive(fd, in, 0, 2000, &payload, &err));
	struct ipc_msg msg;
	assert_true(ipc_decode(payload.data, payload.len, spec, IPC_SPEC_COUNT(spec), &msg, &err));
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_REQUEST), verb);
	assert_true(ipc_msg_int(&msg, IPC_ATTR_SEQ) == seq);
	ipc_msg_free(&msg);
	buf_free(&payload);
	buf_free(&err);
}

static void test_socketpair_round_trip(void **state)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct buf frames = BUF_INIT, in = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	make_frame(&frames, "ping", 1);
	make_frame(&frames, "ping", 2);
	/* Two frames in one write: the second waits in `in`. */
	assert_true(ipc_send(sv[0], &frames, 2000, &err));
	expect_frame(sv[1], &in, "ping", 1);
	assert_true(in.len > 0);
	expect_frame(sv[1], &in, "ping", 2);

	/* A frame larger than the socket buffer, so both sides loop. */
	buf_reset(&frames);
	struct ipc_writer w;
	char *big = mem_zalloc(IPC_DATA_MAX);
	ipc_write_begin(&w, &frames, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "chunk");
	ipc_put_data(&w, IPC_ATTR_DATA, big, IPC_DATA_MAX);
	assert_true(ipc_write_end(&w, &err));
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(ipc_send(sv[0], &frames, 5000, &err) ? 0 : 1);
	assert_true(ipc_receive(sv[1], &in, 0, 5000, &payload, &err));
	assert_int_equal(payload.len, frames.len - 4);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* Nothing arrives: timeout. */
	assert_false(ipc_receive(sv[1], &in, 0, 50, &payload, &err));
	assert_true(testutil_contains(buf_cstr(&err), "timed out"));

	/* Half a frame, then the peer goes away. */
	buf_reset(&err);
	assert_int_equal(write(sv[0], "\0\0\0\x10zz", 6), 6);
	close(sv[0]);
	assert_false(ipc_receive(sv[1], &in, 0, 2000, &payload, &err));
	assert_true(testutil_contains(buf_cstr(&err), "connection closed in the middle of a frame"));
	close(sv[1]);
	free(big);
	buf_free(&frames);
	buf_free(&in);
	buf_free(&payload);
	buf_free(&err);
}

static void test_connect(void **state)
{
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "ctl");
	struct buf err = BUF_INIT, frame = BUF_INIT, in = BUF_INIT;

	assert_int_equal(ipc_connect(path, &err), -1);
	assert_true(testutil_contains(buf_cstr(&err), "cannot connect to"));
	assert_true(testutil_contains(buf_cstr(&err), "No such file or directory"));

	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	strcpy(sun.sun_path, path);
	int listener = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(listener, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(listener, 1), 0);
	int fd = ipc_connect(path, &err);
	assert_true(fd >= 0);
	int peer = accept(listener, NULL, NULL);
	assert_true(peer >= 0);
	make_frame(&frame, "reload", 7);
	assert_true(ipc_send(fd, &frame, 1000, &err));
	expect_frame(peer, &in, "reload", 7);

	char long_path[200];
	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	buf_reset(&err);
	assert_int_equal(ipc_connect(long_path, &err), -1);
	assert_true(testutil_contains(buf_cstr(&err), "is too long"));

	close(fd);
	close(peer);
	close(listener);
	testutil_rmtree(dir);
	free(path);
	free(dir);
	buf_free(&err);
	buf_free(&frame);
	buf_free(&in);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip_types),
	    cmocka_unit_test(test_round_trip_every_attribute),
	    cmocka_unit_test(test_attribute_names_unique),
	    cmocka_unit_test(test_near_names_unknown),
	    cmocka_unit_test(test_write_errors),
	    cmocka_unit_test(test_decode_errors),
	    cmocka_unit_test(test_truncated_payload_every_position),
	    cmocka_unit_test(test_frame_take_partial_every_position),
	    cmocka_unit_test(test_frame_length_prefix),
	    cmocka_unit_test(test_peek_request),
	    cmocka_unit_test(test_random_garbage),
	    cmocka_unit_test(test_socketpair_round_trip),
	    cmocka_unit_test(test_connect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
