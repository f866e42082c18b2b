/* job_proto.c: the frames of the job protocol that every delivery agent
 * shares with qmgr: strict specs of qmgr's requests and the encoders of
 * the answers (doc/delivery.md). */
#include "job_proto.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

static const struct ipc_spec job_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_JOB_ID, IPC_REQUIRED},
    {IPC_ATTR_QUEUE, IPC_REQUIRED},
};

static const struct ipc_spec message_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},   {IPC_ATTR_JOB_ID, IPC_REQUIRED},   {IPC_ATTR_QUEUE_ID, IPC_REQUIRED},
    {IPC_ATTR_SENDER, IPC_REQUIRED},    {IPC_ATTR_ENVID, IPC_OPTIONAL},    {IPC_ATTR_RET, IPC_OPTIONAL},
    {IPC_ATTR_BODY_TYPE, IPC_OPTIONAL}, {IPC_ATTR_SMTPUTF8, IPC_OPTIONAL}, {IPC_ATTR_SIZE, IPC_OPTIONAL},
};

static const struct ipc_spec recipient_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},   {IPC_ATTR_JOB_ID, IPC_REQUIRED}, {IPC_ATTR_RCPT_INDEX, IPC_REQUIRED},
    {IPC_ATTR_RECIPIENT, IPC_REQUIRED}, {IPC_ATTR_ORCPT, IPC_OPTIONAL},  {IPC_ATTR_NOTIFY, IPC_OPTIONAL},
};

static const struct ipc_spec data_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_JOB_ID, IPC_REQUIRED},
    {IPC_ATTR_DATA, IPC_REQUIRED},
};

/* run and ack: the job alone */
static const struct ipc_spec job_id_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_JOB_ID, IPC_REQUIRED},
};

static const struct {
	const char *name;
	const struct ipc_spec *spec;
	size_t nspec;
} verbs[JOB_VERB_COUNT] = {
    [JOB_VERB_JOB] = {"job", job_spec, IPC_SPEC_COUNT(job_spec)},
    [JOB_VERB_MESSAGE] = {"message", message_spec, IPC_SPEC_COUNT(message_spec)},
    [JOB_VERB_RECIPIENT] = {"recipient", recipient_spec, IPC_SPEC_COUNT(recipient_spec)},
    [JOB_VERB_DATA] = {"data", data_spec, IPC_SPEC_COUNT(data_spec)},
    [JOB_VERB_RUN] = {"run", job_id_spec, IPC_SPEC_COUNT(job_id_spec)},
    [JOB_VERB_ACK] = {"ack", job_id_spec, IPC_SPEC_COUNT(job_id_spec)},
};

const char *job_proto_verb_name(enum job_verb verb)
{
	return verbs[verb].name;
}

const struct ipc_spec *job_proto_spec(enum job_verb verb, size_t *nspec)
{
	*nspec = verbs[verb].nspec;
	return verbs[verb].spec;
}

bool job_proto_decode(const void *payload, size_t len, enum job_verb *verb, struct ipc_msg *m, struct buf *err)
{
	struct buf name = BUF_INIT;
	memset(m, 0, sizeof(*m));
	bool ok = ipc_peek_request(payload, len, &name, err);
	int found = -1;
	for (int i = 0; ok && i < JOB_VERB_COUNT; i++)
		if (strcmp(verbs[i].name, buf_cstr(&name)) == 0)
			found = i;
	if (ok && found < 0) {
		buf_printf(err, "unknown request \"%s\"", buf_cstr(&name));
		ok = false;
	}
	buf_free(&name);
	if (!ok)
		return false;
	*verb = (enum job_verb)found;
	return ipc_decode(payload, len, verbs[found].spec, verbs[found].nspec, m, err);
}

void job_proto_put_clipped(struct ipc_writer *w, enum ipc_attr attr, const char *value)
{
	size_t max = ipc_attr_max(attr);
	if (strlen(value) <= max) {
		ipc_put_str(w, attr, value);
		return;
	}
	char *clipped = mem_strndup(value, max);
	ipc_put_str(w, attr, clipped);
	free(clipped);
}

void job_proto_begin_result(struct ipc_writer *w, struct buf *out, const struct job_result *r)
{
	ipc_write_begin(w, out, 0);
	ipc_put_str(w, IPC_ATTR_REQUEST, "result");
	ipc_put_int(w, IPC_ATTR_JOB_ID, r->job_id);
	ipc_put_str(w, IPC_ATTR_QUEUE_ID, r->queue_id);
	ipc_put_int(w, IPC_ATTR_RCPT_INDEX, r->rcpt_index);
	job_proto_put_clipped(w, IPC_ATTR_RECIPIENT, r->recipient);
	ipc_put_str(w, IPC_ATTR_OUTCOME, r->outcome);
	ipc_put_str(w, IPC_ATTR_DSN_STATUS, r->dsn_status);
	job_proto_put_clipped(w, IPC_ATTR_REASON, r->reason);
	ipc_put_int(w, IPC_ATTR_SIZE, r->size);
	if (r->dlv_type)
		ipc_put_str(w, IPC_ATTR_ACCT_DLV_TYPE, r->dlv_type);
}

static void end_or_panic(struct ipc_writer *w)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_panic("cannot encode a frame for qmgr: %s", buf_cstr(&err));
	buf_free(&err);
}

void job_proto_put_done(struct buf *out, int64_t job_id, const char *outcome, const char *reason,
                        int64_t retry_after)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "done");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, job_id);
	ipc_put_str(&w, IPC_ATTR_OUTCOME, outcome);
	if (reason)
		job_proto_put_clipped(&w, IPC_ATTR_REASON, reason);
	if (retry_after > 0)
		ipc_put_int(&w, IPC_ATTR_RETRY_AFTER, retry_after);
	end_or_panic(&w);
}

void job_proto_put_error(struct buf *out, int64_t job_id, const char *reason)
{
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "error");
	if (job_id >= 0)
		ipc_put_int(&w, IPC_ATTR_JOB_ID, job_id);
	job_proto_put_clipped(&w, IPC_ATTR_REASON, reason);
	end_or_panic(&w);
}
