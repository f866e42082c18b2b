/* test_enqueue.c: unit tests of common/enqueue - the frames of qmgr's
 * enqueue protocol as smtpd and pickup build them, and the decoding of
 * qmgr's answer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "enqueue.h"
#include "ipc.h"

static const struct ipc_spec envelope_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},   {IPC_ATTR_SENDER, IPC_REQUIRED},   {IPC_ATTR_ENVID, IPC_OPTIONAL},
    {IPC_ATTR_SIZE, IPC_OPTIONAL},      {IPC_ATTR_SMTPUTF8, IPC_OPTIONAL}, {IPC_ATTR_SRC_TYPE, IPC_OPTIONAL},
    {IPC_ATTR_VMTA, IPC_OPTIONAL},      {IPC_ATTR_MAIL_JOB, IPC_OPTIONAL}, {IPC_ATTR_CLIENT_IP, IPC_OPTIONAL},
    {IPC_ATTR_BODY_TYPE, IPC_OPTIONAL},
};

/* The first frame of buf, decoded with spec. */
static void take(struct buf *frames, const struct ipc_spec *spec, size_t n, struct ipc_msg *m)
{
	struct buf payload = BUF_INIT, err = BUF_INIT;
	assert_int_equal(ipc_frame_take(frames, 0, &payload, &err), IPC_FRAME_COMPLETE);
	if (!ipc_decode(payload.data, payload.len, spec, n, m, &err))
		fail_msg("%s", buf_cstr(&err));
	buf_free(&payload);
	buf_free(&err);
}

static void test_envelope_only_what_is_set(void **state)
{
	struct buf out = BUF_INIT, err = BUF_INIT;
	const struct enqueue_envelope e = {.sender = "", .src_type = "pickup", .vmta = "v1", .smtputf8 = true};
	assert_true(enqueue_put_envelope(&out, &e, &err));
	struct ipc_msg m;
	take(&out, envelope_spec, IPC_SPEC_COUNT(envelope_spec), &m);
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_REQUEST), "enqueue");
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_SENDER), "");
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_SRC_TYPE), "pickup");
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_VMTA), "v1");
	assert_int_equal(ipc_msg_int(&m, IPC_ATTR_SMTPUTF8), 1);
	assert_false(ipc_msg_has(&m, IPC_ATTR_ENVID));
	assert_false(ipc_msg_has(&m, IPC_ATTR_SIZE));
	assert_false(ipc_msg_has(&m, IPC_ATTR_CLIENT_IP));
	ipc_msg_free(&m);
	assert_int_equal(out.len, 0);
	buf_free(&out);
	buf_free(&err);
}

static void test_rcpt_data_end(void **state)
{
	static const struct ipc_spec rcpt_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED},
	                                            {IPC_ATTR_RECIPIENT, IPC_REQUIRED},
	                                            {IPC_ATTR_ORCPT, IPC_OPTIONAL},
	                                            {IPC_ATTR_NOTIFY, IPC_OPTIONAL}};
	static const struct ipc_spec data_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_DATA, IPC_REQUIRED}};
	static const struct ipc_spec end_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}};
	struct buf out = BUF_INIT, err = BUF_INIT;
	assert_true(enqueue_put_rcpt(&out, "a@example.net", NULL, "NEVER", &err));
	assert_true(enqueue_put_data(&out, "body\r\n", 6, &err));
	assert_true(enqueue_put_end(&out, &err));
	struct ipc_msg m;
	take(&out, rcpt_spec, IPC_SPEC_COUNT(rcpt_spec), &m);
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_RECIPIENT), "a@example.net");
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_NOTIFY), "NEVER");
	assert_false(ipc_msg_has(&m, IPC_ATTR_ORCPT));
	ipc_msg_free(&m);
	take(&out, data_spec, IPC_SPEC_COUNT(data_spec), &m);
	size_t len;
	const void *data = ipc_msg_data(&m, IPC_ATTR_DATA, &len);
	assert_int_equal(len, 6);
	assert_memory_equal(data, "body\r\n", 6);
	ipc_msg_free(&m);
	take(&out, end_spec, IPC_SPEC_COUNT(end_spec), &m);
	assert_string_equal(ipc_msg_str(&m, IPC_ATTR_REQUEST), "end");
	ipc_msg_free(&m);
	buf_free(&out);
	buf_free(&err);
}

static void test_value_too_long_appends_nothing(void **state)
{
	struct buf out = BUF_INIT, err = BUF_INIT;
	char *vmta = calloc(1, IPC_HOST_MAX + 2);
	memset(vmta, 'v', IPC_HOST_MAX + 1);
	const struct enqueue_envelope e = {.sender = "a@b.c", .vmta = vmta};
	assert_false(enqueue_put_envelope(&out, &e, &err));
	assert_int_equal(out.len, 0);
	assert_true(err.len > 0);
	free(vmta);
	buf_free(&out);
	buf_free(&err);
}

/* A reply frame's attributes, as qmgr writes them. */
static void reply_payload(int status, const char *qid, const char *reason, struct buf *payload)
{
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_int(&w, IPC_ATTR_STATUS, status);
	if (qid)
		ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
	if (reason)
		ipc_put_str(&w, IPC_ATTR_REASON, reason);
	assert_true(ipc_write_end(&w, &err));
	assert_int_equal(ipc_frame_take(&frame, 0, payload, &err), IPC_FRAME_COMPLETE);
	buf_free(&frame);
	buf_free(&err);
}

static void test_reply_decode(void **state)
{
	struct buf payload = BUF_INIT, err = BUF_INIT;
	struct enqueue_reply r;
	reply_payload(250, "0006615A3A7FFB52", NULL, &payload);
	assert_true(enqueue_reply_decode(payload.data, payload.len, &r, &err));
	assert_int_equal(r.code, 250);
	assert_string_equal(r.queue_id, "0006615A3A7FFB52");
	assert_null(r.reason);
	enqueue_reply_free(&r);
	reply_payload(451, NULL, "4.3.0 Queue write failed", &payload);
	assert_true(enqueue_reply_decode(payload.data, payload.len, &r, &err));
	assert_int_equal(r.code, 451);
	assert_string_equal(r.reason, "4.3.0 Queue write failed");
	enqueue_reply_free(&r);
	/* a 250 must name the message */
	reply_payload(250, NULL, NULL, &payload);
	assert_false(enqueue_reply_decode(payload.data, payload.len, &r, &err));
	assert_non_null(strstr(buf_cstr(&err), "without a queue ID"));
	enqueue_reply_free(&r);
	buf_free(&payload);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_envelope_only_what_is_set),
	    cmocka_unit_test(test_rcpt_data_end),
	    cmocka_unit_test(test_value_too_long_appends_nothing),
	    cmocka_unit_test(test_reply_decode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
