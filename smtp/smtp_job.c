/* smtp_job.c: the job protocol between qmgr and smtp (doc/delivery.md).
 * qmgr connects to <spool>/private/smtp and sends, per job, the frames
 *   job (job_id, queue) ; message ; recipient... ; data... ; [message ...] ; run
 * and gets back one "result" frame per recipient once it is known (a
 * result waits up to JOB_CONN_SOON_MS for the job's next frames, so that
 * qmgr commits a job's results together), then one "done" frame for the
 * job.  Many jobs may be open at once on one
 * connection; frames carry the job_id they belong to.  A frame that does
 * not decode, or breaks the order above, is answered with "error" and the
 * connection is closed: the stream can no longer be trusted.
 *
 * A job's result frames are kept until qmgr answers its "done" with
 * "ack" (the results are committed).  When the connection to qmgr ends
 * first, running jobs go on as orphans (the transaction under way ends,
 * the rest is returned unsent), and every unconfirmed result is replayed
 * to qmgr (smtp_replay.c). */
#include "smtp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "ipc.h"
#include "job_proto.h"
#include "job_server.h"
#include "log.h"
#include "mem.h"

/* A finished job's results, until qmgr acknowledges them. */
struct held_job {
	int64_t id;
	struct buf frames;
	struct held_job *next;
};

/* One qmgr connection's jobs and unconfirmed results. */
struct smtp_client {
	struct job_conn *conn;
	struct smtp_job *jobs;
	struct held_job *held;
};

static struct smtp_job *orphans; /* running jobs whose qmgr went away */

/* ---- sending ---------------------------------------------------------------------- */

static void send_frame(struct smtp_client *client, struct ipc_writer *w, struct buf *frame)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_panic("cannot encode a frame for qmgr: %s", buf_cstr(&err));
	job_conn_write(client->conn, frame->data, frame->len);
	buf_free(&err);
}

static const char *status_name(enum smtp_rcpt_status status)
{
	switch (status) {
	case SMTP_RCPT_DELIVERED:
		return "delivered";
	case SMTP_RCPT_BOUNCED:
		return "bounced";
	case SMTP_RCPT_RETURNED:
		return "returned";
	default:
		return "deferred";
	}
}

void smtp_job_report(struct smtp_job *job, const struct smtp_msg *msg, struct smtp_rcpt *rcpt,
                     enum smtp_rcpt_status status, const char *enhanced, const char *diagnostic,
                     const struct smtp_peer *peer)
{
	rcpt->status = status;
	log_info("%s: to=<%s> status=%s dsn=%s mx=%s (%s)", msg->queue_id, rcpt->address, status_name(status), enhanced,
	         peer && peer->target ? peer->target->mx : "", diagnostic);
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "result");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, job->id);
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, msg->queue_id);
	ipc_put_int(&w, IPC_ATTR_RCPT_INDEX, rcpt->index);
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, rcpt->address);
	ipc_put_str(&w, IPC_ATTR_OUTCOME, status_name(status));
	ipc_put_str(&w, IPC_ATTR_DSN_STATUS, enhanced);
	job_proto_put_clipped(&w, IPC_ATTR_REASON, diagnostic);
	ipc_put_int(&w, IPC_ATTR_SIZE, (int64_t)msg->content.len);
	if (peer && peer->target) {
		job_proto_put_clipped(&w, IPC_ATTR_REMOTE_HOST, peer->target->mx);
		ipc_put_str(&w, IPC_ATTR_REMOTE_IP, peer->remote_ip);
		ipc_put_str(&w, IPC_ATTR_LOCAL_IP, peer->local_ip);
		job_proto_put_clipped(&w, IPC_ATTR_ESMTP, peer->esmtp);
		ipc_put_str(&w, IPC_ATTR_TLS_PROTOCOL, peer->tls_protocol);
		ipc_put_str(&w, IPC_ATTR_TLS_CIPHER, peer->tls_cipher);
	}
	struct buf err = BUF_INIT;
	if (!ipc_write_end(&w, &err))
		log_panic("cannot encode a frame for qmgr: %s", buf_cstr(&err));
	buf_free(&err);
	buf_append(&job->sent, frame.data, frame.len);
	if (job->client)
		job_conn_write_soon(job->client->conn, frame.data, frame.len);
	buf_free(&frame);
}

void smtp_job_return_rest(struct smtp_job *job)
{
	smtp_job_fail_pending(job, SMTP_RCPT_RETURNED, "4.3.0", "not attempted: the connection to qmgr was lost", NULL);
	smtp_job_finish(job, "failed", "the connection to qmgr was lost", 0);
}

void smtp_job_fail_pending(struct smtp_job *job, enum smtp_rcpt_status status, const char *enhanced, const char *why,
                           const struct smtp_peer *peer)
{
	for (size_t m = job->next_msg; m < job->nmsgs; m++) {
		struct smtp_msg *msg = &job->msgs[m];
		for (size_t i = 0; i < msg->nrcpts; i++)
			if (msg->rcpts[i].status == SMTP_RCPT_PENDING)
				smtp_job_report(job, msg, &msg->rcpts[i], status, enhanced, why, peer);
	}
	job->next_msg = job->nmsgs;
}

/* ---- jobs ---------------------------------------------------------------------------- */

static void msg_free(struct smtp_msg *msg)
{
	free(msg->queue_id);
	free(msg->sender);
	free(msg->envid);
	free(msg->ret);
	free(msg->body_type);
	for (size_t i = 0; i < msg->nrcpts; i++) {
		free(msg->rcpts[i].address);
		free(msg->rcpts[i].orcpt);
		free(msg->rcpts[i].notify);
	}
	free(msg->rcpts);
	buf_free(&msg->body);
	buf_free(&msg->content);
}

static void job_unlink(struct smtp_job *job)
{
	if (job->orphaned) {
		for (struct smtp_job **p = &orphans; *p; p = &(*p)->next) {
			if (*p == job) {
				*p = job->next;
				break;
			}
		}
	}
	if (job->client == NULL)
		return;
	for (struct smtp_job **p = &job->client->jobs; *p; p = &(*p)->next) {
		if (*p == job) {
			*p = job->next;
			break;
		}
	}
	job->client = NULL;
}

static void job_free(struct smtp_job *job)
{
	job_unlink(job);
	smtp_deliver_abort(job);
	for (size_t i = 0; i < job->nmsgs; i++)
		msg_free(&job->msgs[i]);
	free(job->msgs);
	smtp_policy_free(&job->policy);
	if (job->conf)
		smtp_conf_unref(job->conf);
	smtp_targets_free(&job->targets);
	buf_free(&job->last_error);
	buf_free(&job->sent);
	free(job->queue);
	free(job->domain);
	free(job->vmta);
	free(job);
}

/* The finished job's results wait for qmgr's ack. */
static void hold(struct smtp_client *client, struct smtp_job *job)
{
	if (job->sent.len == 0)
		return;
	struct held_job *h = mem_zalloc(sizeof *h);
	h->id = job->id;
	h->frames = job->sent;
	buf_init(&job->sent);
	h->next = client->held;
	client->held = h;
}

static void on_ack(struct smtp_client *client, int64_t id)
{
	for (struct held_job **p = &client->held; *p; p = &(*p)->next) {
		if ((*p)->id == id) {
			struct held_job *h = *p;
			*p = h->next;
			buf_free(&h->frames);
			free(h);
			return;
		}
	}
}

void smtp_job_finish(struct smtp_job *job, const char *outcome, const char *reason, int64_t retry_after)
{
	log_info("job %lld for %s: %s%s%s", (long long)job->id, job->queue, outcome, reason ? ": " : "",
	         reason ? reason : "");
	if (job->client) {
		struct buf frame = BUF_INIT;
		struct ipc_writer w;
		ipc_write_begin(&w, &frame, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "done");
		ipc_put_int(&w, IPC_ATTR_JOB_ID, job->id);
		ipc_put_str(&w, IPC_ATTR_OUTCOME, outcome);
		if (reason)
			job_proto_put_clipped(&w, IPC_ATTR_REASON, reason);
		if (retry_after > 0)
			ipc_put_int(&w, IPC_ATTR_RETRY_AFTER, retry_after);
		send_frame(job->client, &w, &frame);
		buf_free(&frame);
		hold(job->client, job);
	} else {
		smtp_replay_add(job->id, &job->sent);
	}
	job_free(job);
}

static struct smtp_job *find_job(struct smtp_client *client, int64_t id)
{
	for (struct smtp_job *job = client->jobs; job; job = job->next)
		if (job->id == id)
			return job;
	return NULL;
}

/* "example.com/{default}" or "example.com/vmta1"; a queue without a
 * slash is the domain with no virtual MTA. */
static bool split_queue(struct smtp_job *job, const char *queue, struct buf *err)
{
	const char *slash = strrchr(queue, '/');
	size_t dlen = slash ? (size_t)(slash - queue) : strlen(queue);
	if (dlen == 0) {
		buf_printf(err, "queue \"%s\" names no domain", queue);
		return false;
	}
	job->domain = mem_strndup(queue, dlen);
	if (slash && slash[1] && strcmp(slash + 1, "{default}") != 0)
		job->vmta = mem_strdup(slash + 1);
	job->queue = mem_strdup(queue);
	return true;
}

static bool on_job(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct smtp_client *client = state;
	int64_t id = ipc_msg_int(m, IPC_ATTR_JOB_ID);
	if (find_job(client, id)) {
		buf_printf(err, "job %lld is already open", (long long)id);
		return false;
	}
	struct smtp_job *job = mem_zalloc(sizeof *job);
	job->id = id;
	buf_init(&job->last_error);
	buf_init(&job->sent);
	if (!split_queue(job, ipc_msg_str(m, IPC_ATTR_QUEUE), err)) {
		job_free(job);
		return false;
	}
	job->client = client;
	job->next = client->jobs;
	client->jobs = job;
	return true;
}

/* The open job a frame names, still taking messages. */
static struct smtp_job *open_job(struct smtp_client *client, const struct ipc_msg *m, struct buf *err)
{
	int64_t id = ipc_msg_int(m, IPC_ATTR_JOB_ID);
	struct smtp_job *job = find_job(client, id);
	if (job == NULL)
		buf_printf(err, "no open job %lld", (long long)id);
	else if (job->running)
		buf_printf(err, "job %lld is already running", (long long)id);
	return job && !job->running ? job : NULL;
}

static char *opt_strdup(const struct ipc_msg *m, enum ipc_attr attr)
{
	const char *s = ipc_msg_str(m, attr);
	return s ? mem_strdup(s) : NULL;
}

static bool on_message(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct smtp_client *client = state;
	struct smtp_job *job = open_job(client, m, err);
	if (job == NULL)
		return false;
	if (job->nmsgs == job->cap) {
		job->cap = job->cap ? job->cap * 2 : 4;
		job->msgs = mem_reallocarray(job->msgs, job->cap, sizeof *job->msgs);
	}
	struct smtp_msg *msg = &job->msgs[job->nmsgs++];
	memset(msg, 0, sizeof *msg);
	msg->queue_id = mem_strdup(ipc_msg_str(m, IPC_ATTR_QUEUE_ID));
	msg->sender = mem_strdup(ipc_msg_str(m, IPC_ATTR_SENDER));
	msg->envid = opt_strdup(m, IPC_ATTR_ENVID);
	msg->ret = opt_strdup(m, IPC_ATTR_RET);
	msg->body_type = opt_strdup(m, IPC_ATTR_BODY_TYPE);
	msg->smtputf8 = ipc_msg_int(m, IPC_ATTR_SMTPUTF8) != 0;
	buf_init(&msg->body);
	buf_init(&msg->content);
	return true;
}

static struct smtp_msg *current_msg(struct smtp_job *job, struct buf *err)
{
	if (job->nmsgs == 0) {
		buf_printf(err, "job %lld has no message yet", (long long)job->id);
		return NULL;
	}
	return &job->msgs[job->nmsgs - 1];
}

static bool on_recipient(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct smtp_client *client = state;
	struct smtp_job *job = open_job(client, m, err);
	struct smtp_msg *msg = job ? current_msg(job, err) : NULL;
	if (msg == NULL)
		return false;
	if (msg->nrcpts == msg->cap) {
		msg->cap = msg->cap ? msg->cap * 2 : 4;
		msg->rcpts = mem_reallocarray(msg->rcpts, msg->cap, sizeof *msg->rcpts);
	}
	struct smtp_rcpt *rcpt = &msg->rcpts[msg->nrcpts++];
	memset(rcpt, 0, sizeof *rcpt);
	rcpt->index = ipc_msg_int(m, IPC_ATTR_RCPT_INDEX);
	rcpt->address = mem_strdup(ipc_msg_str(m, IPC_ATTR_RECIPIENT));
	rcpt->orcpt = opt_strdup(m, IPC_ATTR_ORCPT);
	rcpt->notify = opt_strdup(m, IPC_ATTR_NOTIFY);
	return true;
}

static bool on_data(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct smtp_client *client = state;
	struct smtp_job *job = open_job(client, m, err);
	struct smtp_msg *msg = job ? current_msg(job, err) : NULL;
	if (msg == NULL)
		return false;
	size_t len;
	const void *data = ipc_msg_data(m, IPC_ATTR_DATA, &len);
	buf_append(&msg->body, data, len);
	return true;
}

/* Checks a job that qmgr says is complete, and readies its messages. */
static bool job_ready(struct smtp_job *job, struct buf *err)
{
	if (job->nmsgs == 0) {
		buf_printf(err, "job %lld has no message", (long long)job->id);
		return false;
	}
	for (size_t i = 0; i < job->nmsgs; i++) {
		struct smtp_msg *msg = &job->msgs[i];
		if (msg->nrcpts == 0) {
			buf_printf(err, "message %s of job %lld has no recipient", msg->queue_id, (long long)job->id);
			return false;
		}
		smtp_body_encode(msg->body.data ? msg->body.data : "", msg->body.len, &msg->content);
		buf_free(&msg->body);
	}
	return true;
}

static bool on_run(void *state, const struct ipc_msg *m, struct buf *err)
{
	struct smtp_client *client = state;
	struct smtp_job *job = open_job(client, m, err);
	if (job == NULL || !job_ready(job, err))
		return false;
	job->running = true;
	job->conf = smtp_conf_ref(smtp_conf_current());
	struct conf_settings *settings = conf_resolve_domain(job->conf->conf, job->domain, job->vmta);
	if (settings == NULL) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "no virtual-mta or virtual-mta-pool named %s", job->vmta);
		smtp_job_fail_pending(job, SMTP_RCPT_DEFERRED, "4.3.5", buf_cstr(&why), NULL);
		smtp_job_finish(job, "failed", buf_cstr(&why), 0);
		buf_free(&why);
		return true;
	}
	smtp_policy_load(&job->policy, job->conf->conf, settings, job->vmta);
	conf_settings_free(settings);
	smtp_deliver_start(job);
	return true;
}

static bool on_ack_frame(void *state, const struct ipc_msg *m, struct buf *err)
{
	on_ack(state, ipc_msg_int(m, IPC_ATTR_JOB_ID));
	return true;
}

/* ---- connections ------------------------------------------------------------------------ */

/* qmgr is gone from this connection: what it did not confirm is
 * replayed, jobs still being built are dropped, running ones go on as
 * orphans. */
static void client_release(struct smtp_client *client)
{
	while (client->held) {
		struct held_job *h = client->held;
		client->held = h->next;
		smtp_replay_add(h->id, &h->frames);
		buf_free(&h->frames);
		free(h);
	}
	while (client->jobs) {
		struct smtp_job *job = client->jobs;
		client->jobs = job->next;
		job->client = NULL;
		if (!job->running) {
			/* qmgr may have marked its recipients in flight */
			smtp_job_fail_pending(job, SMTP_RCPT_RETURNED, "4.3.0",
			                      "not attempted: the connection to qmgr was lost", NULL);
			smtp_replay_add(job->id, &job->sent);
			job_free(job);
			continue;
		}
		log_info("job %lld for %s goes on without qmgr", (long long)job->id, job->queue);
		job->orphaned = true;
		job->next = orphans;
		orphans = job;
		smtp_deliver_orphaned(job);
	}
}

/* Stopping: jobs that have not sent a final dot go back to qmgr unsent
 * over the live connection, so it need not wait in-flight-grace for
 * them. */
static void client_stopping(void *state)
{
	struct smtp_client *client = state;
	struct smtp_job *job = client->jobs;
	while (job) {
		struct smtp_job *next = job->next;
		if (job->running && !smtp_session_delivering(job->session)) {
			smtp_deliver_abort(job);
			smtp_job_return_rest(job); /* frees it */
		}
		job = next;
	}
}

static void *client_open(struct job_conn *conn)
{
	struct smtp_client *client = mem_zalloc(sizeof *client);
	client->conn = conn;
	return client;
}

static void client_close(void *state, bool qmgr_closed)
{
	struct smtp_client *client = state;
	if (qmgr_closed && client->jobs)
		log_warning("qmgr closed the connection with jobs open; their results are replayed to it");
	client_release(client);
	free(client);
}

static const struct job_agent smtp_agent = {
    .handlers =
        {
            [JOB_VERB_JOB] = on_job,
            [JOB_VERB_MESSAGE] = on_message,
            [JOB_VERB_RECIPIENT] = on_recipient,
            [JOB_VERB_DATA] = on_data,
            [JOB_VERB_RUN] = on_run,
            [JOB_VERB_ACK] = on_ack_frame,
        },
    .open = client_open,
    .close = client_close,
    .stopping = client_stopping,
};

bool smtp_job_listen(struct event_base *base, int fd, const char *spool, struct buf *err)
{
	smtp_replay_init(base, spool);
	return job_server_listen(base, fd, &smtp_agent, err);
}

void smtp_job_shutdown(void)
{
	job_server_shutdown();
	while (orphans)
		job_free(orphans); /* unlinks itself */
	smtp_replay_shutdown();
}
