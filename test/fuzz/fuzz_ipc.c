/* fuzz_ipc.c: libFuzzer target for the IPC framing and strict decoder.
 * The input is a byte stream as a peer would send it: frames are taken
 * out one by one, their request picks a spec as a daemon would, and what
 * decodes is encoded again and must decode to the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "ipc.h"
#include "log.h"

static const struct ipc_spec enqueue_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},     {IPC_ATTR_QUEUE_ID, IPC_REQUIRED},  {IPC_ATTR_SENDER, IPC_REQUIRED},
    {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},   {IPC_ATTR_ORCPT, IPC_OPTIONAL},     {IPC_ATTR_NOTIFY, IPC_OPTIONAL},
    {IPC_ATTR_ENVID, IPC_OPTIONAL},       {IPC_ATTR_RET, IPC_OPTIONAL},       {IPC_ATTR_SIZE, IPC_OPTIONAL},
    {IPC_ATTR_BODY_TYPE, IPC_OPTIONAL},   {IPC_ATTR_SMTPUTF8, IPC_OPTIONAL},  {IPC_ATTR_CLIENT_IP, IPC_OPTIONAL},
    {IPC_ATTR_CLIENT_NAME, IPC_OPTIONAL}, {IPC_ATTR_HELO, IPC_OPTIONAL},      {IPC_ATTR_SRC_TYPE, IPC_OPTIONAL},
    {IPC_ATTR_LISTENER, IPC_OPTIONAL},    {IPC_ATTR_AUTH_USER, IPC_OPTIONAL}, {IPC_ATTR_DATA, IPC_OPTIONAL},
    {IPC_ATTR_SEQ, IPC_OPTIONAL},
};

static const struct ipc_spec result_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},      {IPC_ATTR_JOB_ID, IPC_REQUIRED},     {IPC_ATTR_STATUS, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_OPTIONAL},       {IPC_ATTR_DSN_STATUS, IPC_OPTIONAL}, {IPC_ATTR_REMOTE_IP, IPC_OPTIONAL},
    {IPC_ATTR_TLS_PROTOCOL, IPC_OPTIONAL}, {IPC_ATTR_TLS_CIPHER, IPC_OPTIONAL}, {IPC_ATTR_ESMTP, IPC_OPTIONAL},
    {IPC_ATTR_VMTA, IPC_OPTIONAL},
};

static void reencode(const struct ipc_msg *msg, const struct ipc_spec *spec, size_t nspec)
{
	struct buf frame = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	for (size_t i = 0; i < nspec; i++) {
		const struct ipc_value *v = &msg->values[spec[i].attr];
		if (!v->present)
			continue;
		if (ipc_attr_type(spec[i].attr) == IPC_TYPE_INT)
			ipc_put_int(&w, spec[i].attr, v->num);
		else if (ipc_attr_type(spec[i].attr) == IPC_TYPE_STR)
			ipc_put_str(&w, spec[i].attr, v->ptr);
		else
			ipc_put_data(&w, spec[i].attr, v->ptr, v->len);
	}
	if (!ipc_write_end(&w, &err) || ipc_frame_take(&frame, 0, &payload, &err) != IPC_FRAME_COMPLETE)
		log_panic("re-encoding a decoded frame failed: %s", buf_cstr(&err));
	struct ipc_msg again;
	if (!ipc_decode(payload.data, payload.len, spec, nspec, &again, &err))
		log_panic("re-encoded frame does not decode: %s", buf_cstr(&err));
	for (size_t i = 0; i < nspec; i++) {
		const struct ipc_value *a = &msg->values[spec[i].attr], *b = &again.values[spec[i].attr];
		if (a->present != b->present || a->num != b->num || a->len != b->len ||
		    (a->len && memcmp(a->ptr, b->ptr, a->len) != 0))
			log_panic("attribute %s changed in a round trip", ipc_attr_name(spec[i].attr));
	}
	ipc_msg_free(&again);
	buf_free(&frame);
	buf_free(&payload);
	buf_free(&err);
}

static void decode_frame(const struct buf *payload)
{
	struct buf verb = BUF_INIT, err = BUF_INIT;
	if (ipc_peek_request(payload->data, payload->len, &verb, &err)) {
		bool is_result = strcmp(buf_cstr(&verb), "result") == 0;
		const struct ipc_spec *spec = is_result ? result_spec : enqueue_spec;
		size_t nspec = is_result ? IPC_SPEC_COUNT(result_spec) : IPC_SPEC_COUNT(enqueue_spec);
		struct ipc_msg msg;
		if (ipc_decode(payload->data, payload->len, spec, nspec, &msg, &err))
			reencode(&msg, spec, nspec);
		else if (err.len == 0)
			log_panic("decoder failed without a reason");
		ipc_msg_free(&msg);
	}
	buf_free(&verb);
	buf_free(&err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf in = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	buf_append(&in, data, size);
	while (ipc_frame_take(&in, 64 * 1024, &payload, &err) == IPC_FRAME_COMPLETE)
		decode_frame(&payload);
	buf_free(&in);
	buf_free(&payload);
	buf_free(&err);
	return 0;
}
