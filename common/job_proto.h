/* job_proto.h: the job protocol between qmgr and its delivery agents
 * (smtp, local), doc/delivery.md.  Both agents serve the same frames:
 *   job ; message ; recipient... ; data... ; [message ...] ; run
 * and answer with one "result" per recipient and one "done" per job;
 * qmgr confirms each "done" with "ack" once the results are committed.
 * The strict specs and the answer encoders live here once, so the agents
 * cannot disagree about an attribute. */
#ifndef TERN_JOB_PROTO_H
#define TERN_JOB_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ipc.h"

enum job_verb {
	JOB_VERB_JOB,
	JOB_VERB_MESSAGE,
	JOB_VERB_RECIPIENT,
	JOB_VERB_DATA,
	JOB_VERB_RUN,
	JOB_VERB_ACK, /* qmgr has committed a job's results: they need not be kept */
	JOB_VERB_COUNT
};

/* The verb's wire name and its strict spec. */
const char *job_proto_verb_name(enum job_verb verb);
const struct ipc_spec *job_proto_spec(enum job_verb verb, size_t *nspec);

/* Peeks at the request of a frame from qmgr and decodes it strictly
 * against its verb's spec.  false (reason in err) on an unknown verb or a
 * bad frame; m must be freed with ipc_msg_free either way. */
bool job_proto_decode(const void *payload, size_t len, enum job_verb *verb, struct ipc_msg *m, struct buf *err);

/* Appends a string attribute, clipped to the attribute's limit (server
 * text and reasons can be anything; the frame must not fail for them). */
void job_proto_put_clipped(struct ipc_writer *w, enum ipc_attr attr, const char *value);

/* One recipient's result, without the connection facts smtp adds. */
struct job_result {
	int64_t job_id;
	const char *queue_id;
	int64_t rcpt_index;
	const char *recipient;
	const char *outcome; /* "delivered", "deferred", "bounced" */
	const char *dsn_status;
	const char *reason;
	int64_t size;
	const char *dlv_type; /* dlvType for accounting, or NULL */
};

/* Starts a "result" frame in out with the fields of r; the caller may add
 * attributes and must finish it with ipc_write_end. */
void job_proto_begin_result(struct ipc_writer *w, struct buf *out, const struct job_result *r);
/* Appends a complete "done" frame (reason NULL: none; retry_after 0: none). */
void job_proto_put_done(struct buf *out, int64_t job_id, const char *outcome, const char *reason,
                        int64_t retry_after);
/* Appends an "error" frame (job_id < 0: none). */
void job_proto_put_error(struct buf *out, int64_t job_id, const char *reason);

#endif
