/* local_job.c: the job protocol between qmgr and the local agent (the
 * frames smtp serves, common/job_proto.h).  A job is collected frame by
 * frame; on "run" its messages are delivered one recipient after the
 * other, each result sent as soon as it is known, then "done".  File
 * deliveries are short and local, so a job runs to its end inside the
 * event loop.  A frame that does not decode or breaks the order is
 * answered with "error" and the connection is closed. */
#include "local.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "alias.h"
#include "ipc.h"
#include "job_proto.h"
#include "job_server.h"
#include "log.h"
#include "mem.h"

struct local_job {
	int64_t id;
	char *domain, *vmta, *queue;
	struct local_msg *msgs;
	size_t nmsgs, cap;
	struct local_job *next;
};

/* One qmgr connection's jobs. */
struct local_client {
	struct job_conn *conn;
	struct local_job *jobs;
};

/* ---- jobs --------------------------------------------------------------------------- */

static void msg_free(struct local_msg *m)
{
	free(m->queue_id);
	free(m->sender);
	free(m->envid);
	free(m->ret);
	free(m->body_type);
	for (size_t i = 0; i < m->nrcpts; i++) {
		free(m->rcpts[i].address);
		free(m->rcpts[i].orcpt);
		free(m->rcpts[i].notify);
	}
	free(m->rcpts);
	buf_free(&m->body);
}

static void job_free(struct local_client *c, struct local_job *job)
{
	for (struct local_job **p = &c->jobs; *p; p = &(*p)->next)
		if (*p == job) {
			*p = job->next;
			break;
		}
	for (size_t i = 0; i < job->nmsgs; i++)
		msg_free(&job->msgs[i]);
	free(job->msgs);
	free(job->domain);
	free(job->vmta);
	free(job->queue);
	free(job);
}

static struct local_job *find_job(struct local_client *c, int64_t id)
{
	for (struct local_job *j = c->jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

static char *opt_strdup(const struct ipc_msg *m, enum ipc_attr attr)
{
	const char *s = ipc_msg_str(m, attr);
	return s ? mem_strdup(s) : NULL;
}

static bool on_job(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct local_client *c = state;
	int64_t id = ipc_msg_int(m, IPC_ATTR_JOB_ID);
	const char *queue = ipc_msg_str(m, IPC_ATTR_QUEUE);
	const char *slash = strrchr(queue, '/');
	size_t dlen = slash ? (size_t)(slash - queue) : strlen(queue);
	if (find_job(c, id)) {
		buf_printf(err, "job %lld is already open", (long long)id);
		return false;
	}
	if (dlen == 0) {
		buf_printf(err, "queue \"%s\" names no domain", queue);
		return false;
	}
	struct local_job *job = mem_zalloc(sizeof(*job));
	job->id = id;
	job->queue = mem_strdup(queue);
	job->domain = mem_strndup(queue, dlen);
	if (slash && slash[1] && strcmp(slash + 1, "{default}") != 0)
		job->vmta = mem_strdup(slash + 1);
	job->next = c->jobs;
	c->jobs = job;
	return true;
}

static struct local_job *open_job(struct local_client *c, const struct ipc_msg *m, struct buf *err)
{
	struct local_job *job = find_job(c, ipc_msg_int(m, IPC_ATTR_JOB_ID));
	if (job == NULL)
		buf_printf(err, "no open job %lld", (long long)ipc_msg_int(m, IPC_ATTR_JOB_ID));
	return job;
}

static struct local_msg *last_msg(struct local_job *job, struct buf *err)
{
	if (job->nmsgs == 0) {
		buf_printf(err, "job %lld has no message yet", (long long)job->id);
		return NULL;
	}
	return &job->msgs[job->nmsgs - 1];
}

static bool on_message(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct local_client *c = state;
	struct local_job *job = open_job(c, m, err);
	if (job == NULL)
		return false;
	if (job->nmsgs == job->cap) {
		job->cap = job->cap ? job->cap * 2 : 4;
		job->msgs = mem_reallocarray(job->msgs, job->cap, sizeof(*job->msgs));
	}
	struct local_msg *msg = &job->msgs[job->nmsgs++];
	memset(msg, 0, sizeof(*msg));
	msg->queue_id = mem_strdup(ipc_msg_str(m, IPC_ATTR_QUEUE_ID));
	msg->sender = mem_strdup(ipc_msg_str(m, IPC_ATTR_SENDER));
	msg->envid = opt_strdup(m, IPC_ATTR_ENVID);
	msg->ret = opt_strdup(m, IPC_ATTR_RET);
	msg->body_type = opt_strdup(m, IPC_ATTR_BODY_TYPE);
	buf_init(&msg->body);
	return true;
}

static bool on_recipient(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct local_client *c = state;
	struct local_job *job = open_job(c, m, err);
	struct local_msg *msg = job ? last_msg(job, err) : NULL;
	if (msg == NULL)
		return false;
	if (msg->nrcpts == msg->cap) {
		msg->cap = msg->cap ? msg->cap * 2 : 4;
		msg->rcpts = mem_reallocarray(msg->rcpts, msg->cap, sizeof(*msg->rcpts));
	}
	struct local_rcpt *r = &msg->rcpts[msg->nrcpts++];
	r->index = ipc_msg_int(m, IPC_ATTR_RCPT_INDEX);
	r->address = mem_strdup(ipc_msg_str(m, IPC_ATTR_RECIPIENT));
	r->orcpt = opt_strdup(m, IPC_ATTR_ORCPT);
	r->notify = opt_strdup(m, IPC_ATTR_NOTIFY);
	return true;
}

static bool on_data(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct local_client *c = state;
	struct local_job *job = open_job(c, m, err);
	struct local_msg *msg = job ? last_msg(job, err) : NULL;
	if (msg == NULL)
		return false;
	size_t len;
	const void *data = ipc_msg_data(m, IPC_ATTR_DATA, &len);
	buf_append(&msg->body, data, len);
	return true;
}

/* ---- running a job ------------------------------------------------------------------------ */

static const char *status_name(enum local_status s)
{
	return s == LOCAL_DELIVERED ? "delivered" : s == LOCAL_BOUNCED ? "bounced" : "deferred";
}

static void send_result(struct local_client *c, const struct local_job *job, const struct local_msg *msg,
                        const struct local_rcpt *rcpt, const struct local_result *r)
{
	log_info("%s: to=<%s> status=%s dsn=%s (%s)", msg->queue_id, rcpt->address, status_name(r->status), r->dsn,
	         buf_cstr(&r->reason));
	struct job_result jr = {
	    .job_id = job->id,
	    .queue_id = msg->queue_id,
	    .rcpt_index = rcpt->index,
	    .recipient = rcpt->address,
	    .outcome = status_name(r->status),
	    .dsn_status = r->dsn,
	    .reason = buf_cstr(&r->reason),
	    .size = (int64_t)msg->body.len,
	    .dlv_type = "file",
	};
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	job_proto_begin_result(&w, &frame, &jr);
	if (!ipc_write_end(&w, &err))
		log_panic("cannot encode a result for qmgr: %s", buf_cstr(&err));
	job_conn_write(c->conn, frame.data, frame.len);
	buf_free(&frame);
	buf_free(&err);
}

/* The queue's file settings; false (reason in why) when it is not a file domain. */
static struct conf_settings *job_settings(const struct local_job *job, struct local_settings *s, struct buf *why)
{
	const struct conf *conf = local_conf_current();
	struct conf_settings *cs = conf_resolve_domain(conf, job->domain, job->vmta);
	if (cs == NULL)
		cs = conf_resolve_domain(conf, job->domain, NULL);
	const char *type = conf_get_string(cs, "type");
	if (type == NULL || strcmp(type, "file") != 0) {
		buf_printf(why, "domain %s is not of type file", job->domain);
		conf_settings_free(cs);
		return NULL;
	}
	const char *format = conf_get_string(cs, "file-format");
	s->format = strcmp(format, "append-mbox") == 0      ? LOCAL_APPEND_MBOX
	            : strcmp(format, "newfile-pickup") == 0 ? LOCAL_NEWFILE_PICKUP
	                                                    : LOCAL_NEWFILE_PLAIN;
	s->destination = conf_get_string(cs, "file-destination");
	s->domain = job->domain;
	return cs;
}

static void run_job(struct local_client *c, struct local_job *job)
{
	struct local_settings s = {0};
	struct buf why = BUF_INIT;
	struct conf_settings *cs = job_settings(job, &s, &why);
	struct local_context ctx = {.conf = local_conf_current(), .spool = local_spool()};
	local_alias_setup(conf_get_string(conf_global(ctx.conf), "alias-file"));
	for (size_t m = 0; m < job->nmsgs; m++) {
		struct local_msg *msg = &job->msgs[m];
		for (size_t i = 0; i < msg->nrcpts; i++) {
			struct local_result r;
			local_result_init(&r);
			if (cs == NULL)
				local_result_set(&r, LOCAL_DEFERRED, "4.3.5", "%s", buf_cstr(&why));
			else
				local_deliver_rcpt(&ctx, &s, msg, &msg->rcpts[i], &r);
			send_result(c, job, msg, &msg->rcpts[i], &r);
			local_result_free(&r);
		}
	}
	struct buf frame = BUF_INIT;
	job_proto_put_done(&frame, job->id, "done", NULL, 0);
	job_conn_write(c->conn, frame.data, frame.len);
	buf_free(&frame);
	buf_free(&why);
	conf_settings_free(cs);
}

static bool on_run(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct local_client *c = state;
	struct local_job *job = open_job(c, m, err);
	if (job == NULL)
		return false;
	if (job->nmsgs == 0) {
		buf_printf(err, "job %lld has no message", (long long)job->id);
		return false;
	}
	for (size_t i = 0; i < job->nmsgs; i++)
		if (job->msgs[i].nrcpts == 0) {
			buf_printf(err, "message %s of job %lld has no recipient", job->msgs[i].queue_id,
			           (long long)job->id);
			return false;
		}
	run_job(c, job);
	job_free(c, job);
	return true;
}

/* qmgr committed the job's results.  The local agent keeps none: each
 * result was sent once its file was on disk, and a result lost with qmgr
 * leaves the recipient in flight until in-flight-grace (doc/queue.md). */
static bool on_ack(void *state, const struct ipc_msg *m, struct buf *err)
{
	return true;
}

/* ---- connections ------------------------------------------------------------------------- */

static void *client_open(struct job_conn *conn)
{
	struct local_client *c = mem_zalloc(sizeof(*c));
	c->conn = conn;
	return c;
}

static void client_close(void *state, bool qmgr_closed)
{
	struct local_client *c = state;
	if (qmgr_closed && c->jobs)
		log_warning("qmgr closed the connection with jobs open; they are abandoned");
	while (c->jobs)
		job_free(c, c->jobs);
	free(c);
}

static const struct job_agent local_agent = {
    .handlers =
        {
            [JOB_VERB_JOB] = on_job,
            [JOB_VERB_MESSAGE] = on_message,
            [JOB_VERB_RECIPIENT] = on_recipient,
            [JOB_VERB_DATA] = on_data,
            [JOB_VERB_RUN] = on_run,
            [JOB_VERB_ACK] = on_ack,
        },
    .open = client_open,
    .close = client_close,
};

bool local_job_listen(struct event_base *base, int fd, struct buf *err)
{
	return job_server_listen(base, fd, &local_agent, err);
}

void local_job_shutdown(void)
{
	job_server_shutdown();
	local_alias_shutdown();
}
