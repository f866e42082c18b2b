/* acctd_server.c: the socket <spool>/private/acctd and its clients.
 *
 * The record protocol (doc/accounting.md has the whole of it):
 *   client: hello [seq=C next_seq=N]   acctd: resume seq=S header_names=...
 *   client: record seq=N record_type=d <fields>   (N = S+1, S+2, ... no gaps)
 *   acctd:  ack seq=M                  every record up to M is written
 * acctd takes its own batches: every record that arrived within
 * GATHER_MSECS of the first one (at most BATCH_MAX) is written and
 * confirmed together, so a steady stream costs one state-file commit and
 * one ack (one outbox transaction in qmgr) per batch, not per read.  A
 * record with a number it already wrote is skipped, so a client may
 * resend everything it has not seen confirmed.  Only one client feeds
 * records at a time; a new hello takes over.
 *
 * Requests, directly ("rotate") or relayed by master for ternctl
 * ("acctd.rotate" with role=admin|reader); answered by a "reply" frame
 * (status 0 done, 1 failed, 2 refused to a reader; reason) and "end":
 *   reopen                 close and reopen every file (logrotate)
 *   rotate [acct_file=F]   rotate F, or every file
 *   status                 the highest written seq
 *   tail [seq=N]           reply, then every written record after N (or
 *                          from now on) as its record frame, as it comes
 *                          (no "end": the stream lasts)
 * A broken frame or a protocol error gets an "error" frame and the
 * connection is closed. */
#include "acctd.h"
#include "bev_write.h"
#include "ipc_evbuffer.h"
#include "listen.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#define ACCTD_MAX_FRAME IPC_FRAME_MAX_DEFAULT
#define BATCH_MAX 2000
#define RETRY_SECONDS 1
#define GATHER_MSECS 20
/* A consumer this far behind is dropped; it resumes from its last seq. */
#define TAIL_BACKLOG_MAX (8 * 1024 * 1024)
/* A dropped client that does not read its error frame is not waited for. */
#define CLOSING_TIMEOUT_SECONDS 10

struct acctd_client {
	struct acctd *acctd;
	struct bufferevent *bev;
	bool tailing;      /* follows the live stream */
	uint64_t tail_seq; /* the last record it was sent */
	struct acctd_client *next;
};

static const struct ipc_spec hello_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_SEQ, IPC_OPTIONAL}, {IPC_ATTR_ACCT_NEXT_SEQ, IPC_OPTIONAL}};
/* Requests may come through master, which adds the caller's role. */
static const struct ipc_spec plain_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_ROLE, IPC_OPTIONAL}};
static const struct ipc_spec tail_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_ROLE, IPC_OPTIONAL}, {IPC_ATTR_SEQ, IPC_OPTIONAL}};
static const struct ipc_spec rotate_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_ROLE, IPC_OPTIONAL}, {IPC_ATTR_ACCT_FILE, IPC_OPTIONAL}};

/* ---- sending ------------------------------------------------------------------------ */

static void send_frame(struct acctd_client *c, struct ipc_writer *w, struct buf *frame)
{
	struct buf err = BUF_INIT;
	if (ipc_write_end(w, &err))
		bev_send(c->bev, frame->data, frame->len);
	else
		log_error("cannot encode a reply: %s", buf_cstr(&err));
	buf_free(&err);
}

static void send_reply(struct acctd_client *c, int status, const char *reason, const uint64_t *seq)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, ACCTD_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "reply");
	ipc_put_int(&w, IPC_ATTR_STATUS, status);
	ipc_put_str(&w, IPC_ATTR_REASON, reason);
	if (seq)
		ipc_put_int(&w, IPC_ATTR_SEQ, (int64_t)*seq);
	send_frame(c, &w, &frame);
	buf_free(&frame);
}

static void send_seq(struct acctd_client *c, const char *verb, uint64_t seq)
{
	struct buf frame = BUF_INIT, names = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, ACCTD_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, verb);
	ipc_put_int(&w, IPC_ATTR_SEQ, (int64_t)seq);
	if (strcmp(verb, "resume") == 0) {
		for (size_t i = 0; i < c->acctd->nfiles; i++)
			acct_layout_header_names(&c->acctd->files[i].layout, &names);
		ipc_put_str(&w, IPC_ATTR_ACCT_HEADER_NAMES, buf_cstr(&names));
	}
	send_frame(c, &w, &frame);
	buf_free(&frame);
	buf_free(&names);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* ---- clients ------------------------------------------------------------------------ */

/* The client's records stop counting; an unwritten batch is forgotten:
 * it was not confirmed, so the client will send it again. */
static void stop_feeding(struct acctd_client *c)
{
	struct acctd *a = c->acctd;
	if (a->feeder != c)
		return;
	if (a->batch_seq > a->seq)
		acctd_batch_discard(a);
	event_del(a->retry_ev);
	event_del(a->gather_ev);
	a->feeder = NULL;
}

static void client_free(struct acctd_client *c)
{
	struct acctd *a = c->acctd;
	stop_feeding(c);
	for (struct acctd_client **p = &a->clients; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			break;
		}
	}
	bufferevent_free(c->bev);
	free(c);
}

/* The last words of a dropped client have been sent. */
static void on_closing_write(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_free(arg);
}

/* Says why, after whatever it was already sent, and closes.  The client
 * stops counting at once: no records from it, no acks or stream to it. */
static void client_fail(struct acctd_client *c, const char *why)
{
	log_warning("dropping a client: %s", why);
	stop_feeding(c);
	c->tailing = false;
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, ACCTD_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "error");
	ipc_put_str(&w, IPC_ATTR_REASON, why);
	if (ipc_write_end(&w, &err))
		bufferevent_write(c->bev, frame.data, frame.len);
	buf_free(&err);
	buf_free(&frame);
	bufferevent_disable(c->bev, EV_READ);
	struct timeval timeout = {CLOSING_TIMEOUT_SECONDS, 0};
	bufferevent_set_timeouts(c->bev, NULL, &timeout);
	bufferevent_setcb(c->bev, NULL, on_closing_write, on_event, c);
	bufferevent_enable(c->bev, EV_WRITE);
	on_closing_write(c->bev, c);
}

/* ---- the live stream ------------------------------------------------------------------- */

static void send_tail_frame(const struct acctd_frame *frame, void *arg)
{
	struct acctd_client *c = arg;
	bufferevent_write(c->bev, frame->bytes.data, frame->bytes.len);
	bufferevent_enable(c->bev, EV_WRITE);
}

/* Sends what the consumer has not seen; false when it was dropped. */
static bool tail_flush(struct acctd_client *c)
{
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) > TAIL_BACKLOG_MAX) {
		char *why =
		    mem_asprintf("the consumer is too slow; resume after seq %llu", (unsigned long long)c->tail_seq);
		client_fail(c, why);
		free(why);
		return false;
	}
	c->tail_seq = acctd_tail_each_after(&c->acctd->tail, c->tail_seq, send_tail_frame, c);
	return true;
}

static void tail_broadcast(struct acctd *a)
{
	struct acctd_client *next;
	for (struct acctd_client *c = a->clients; c; c = next) {
		next = c->next;
		if (c->tailing)
			tail_flush(c);
	}
}

static bool run_tail(struct acctd_client *c, const struct ipc_msg *msg)
{
	struct acctd *a = c->acctd;
	/* Without a starting point, only what is written from now on. */
	int64_t since = ipc_msg_has(msg, IPC_ATTR_SEQ) ? ipc_msg_int(msg, IPC_ATTR_SEQ) : (int64_t)a->seq;
	/* After a restart the ring starts empty: the next record is the oldest. */
	uint64_t oldest = acctd_tail_oldest(&a->tail) ? acctd_tail_oldest(&a->tail) : a->seq + 1;
	c->tail_seq = since < 0 ? 0 : (uint64_t)since;
	if (oldest > c->tail_seq + 1) {
		char *why = mem_asprintf("records %llu to %llu are no longer kept: they are in the files",
		                         (unsigned long long)c->tail_seq + 1, (unsigned long long)oldest - 1);
		send_reply(c, 0, why, &a->seq);
		free(why);
	} else {
		send_reply(c, 0, "following", &a->seq);
	}
	c->tailing = true;
	return tail_flush(c);
}

/* ---- the batch ------------------------------------------------------------------------ */

static void commit(struct acctd *a)
{
	if (a->batch_seq <= a->seq) {
		/* Only resends of written records: they are confirmed again. */
		if (a->ack_owed && a->feeder)
			send_seq(a->feeder, "ack", a->seq);
		a->ack_owed = false;
		return;
	}
	struct buf err = BUF_INIT;
	bool was_retrying = a->retrying;
	if (acctd_batch_commit(a, &err)) {
		if (a->feeder)
			send_seq(a->feeder, "ack", a->seq);
		a->ack_owed = false;
		tail_broadcast(a);
	} else {
		if (!was_retrying)
			log_error("records up to seq %llu are not written, retrying: %s",
			          (unsigned long long)a->batch_seq, buf_cstr(&err));
		a->retrying = true;
		if (a->feeder)
			bufferevent_disable(a->feeder->bev, EV_READ);
		struct timeval later = {RETRY_SECONDS, 0};
		event_add(a->retry_ev, &later);
	}
	buf_free(&err);
}

static bool take_record(struct acctd_client *c, const void *payload, size_t len)
{
	struct acctd *a = c->acctd;
	if (a->feeder != c) {
		client_fail(c, "records come after a hello");
		return false;
	}
	struct ipc_msg msg;
	struct buf err = BUF_INIT;
	bool ok = ipc_decode(payload, len, acct_record_spec, acct_record_spec_count, &msg, &err);
	enum acct_type type = ACCT_D;
	int64_t seq = ok ? ipc_msg_int(&msg, IPC_ATTR_SEQ) : 0;
	if (ok && !acct_type_parse(ipc_msg_str(&msg, IPC_ATTR_RECORD_TYPE), &type)) {
		buf_printf(&err, "unknown record type \"%s\"", ipc_msg_str(&msg, IPC_ATTR_RECORD_TYPE));
		ok = false;
	}
	if (ok && seq > 0 && (uint64_t)seq > a->batch_seq + 1) {
		buf_printf(&err, "record %lld follows %llu: sequence numbers have no gaps", (long long)seq,
		           (unsigned long long)a->batch_seq);
		ok = false;
	}
	if (ok && seq <= 0) {
		buf_printf(&err, "bad sequence number %lld", (long long)seq);
		ok = false;
	}
	a->ack_owed = ok;
	/* A record we already have (a resend after a lost ack) is skipped. */
	if (ok && (uint64_t)seq == a->batch_seq + 1)
		acctd_batch_add(a, (uint64_t)seq, type, &msg, payload, len);
	ipc_msg_free(&msg);
	if (!ok)
		client_fail(c, buf_cstr(&err));
	buf_free(&err);
	return ok;
}

/* The confirmed point a client reports in its hello, checked against our
 * own: it can only disagree after someone reset one side.  A client whose
 * numbering went back (a new queue) or that saw more confirmed than we
 * have written (our state removed) would otherwise have its records
 * skipped, or refused as a gap, for ever: we continue from its number. */
static void agree_on_seq(struct acctd *a, const struct ipc_msg *hello)
{
	uint64_t from = a->seq;
	int64_t confirmed = ipc_msg_int(hello, IPC_ATTR_SEQ), next = ipc_msg_int(hello, IPC_ATTR_ACCT_NEXT_SEQ);
	if (ipc_msg_has(hello, IPC_ATTR_ACCT_NEXT_SEQ) && next >= 1 && (uint64_t)next - 1 < a->seq)
		from = confirmed >= 0 && confirmed < next ? (uint64_t)confirmed : (uint64_t)next - 1;
	else if (ipc_msg_has(hello, IPC_ATTR_SEQ) && confirmed > 0 && (uint64_t)confirmed > a->seq)
		from = (uint64_t)confirmed;
	if (from == a->seq)
		return;
	log_warning("the client's sequence numbers do not follow ours (it has confirmed %lld, numbers next %lld; we "
	            "wrote up to %llu): a new queue or a removed state?  Continuing after %llu",
	            (long long)confirmed, (long long)next, (unsigned long long)a->seq, (unsigned long long)from);
	acctd_batch_discard(a);
	a->seq = a->batch_seq = from;
	struct buf err = BUF_INIT;
	if (!acctd_save_state(a, &err))
		log_error("%s", buf_cstr(&err));
	buf_free(&err);
}

static bool become_feeder(struct acctd_client *c, const void *payload, size_t len)
{
	struct acctd *a = c->acctd;
	struct ipc_msg msg;
	struct buf err = BUF_INIT;
	if (!ipc_decode(payload, len, hello_spec, IPC_SPEC_COUNT(hello_spec), &msg, &err)) {
		ipc_msg_free(&msg);
		client_fail(c, buf_cstr(&err));
		buf_free(&err);
		return false;
	}
	if (a->feeder && a->feeder != c) {
		log_info("a new client takes over the records");
		client_free(a->feeder);
	}
	a->feeder = c;
	agree_on_seq(a, &msg);
	send_seq(c, "resume", a->seq);
	ipc_msg_free(&msg);
	buf_free(&err);
	return true;
}

/* ---- requests ---------------------------------------------------------------------------- */

static bool run_rotate(struct acctd_client *c, const struct ipc_msg *msg)
{
	struct buf err = BUF_INIT;
	if (acctd_rotate(c->acctd, ipc_msg_str(msg, IPC_ATTR_ACCT_FILE), &err))
		send_reply(c, 0, "Accounting files rotated.", NULL);
	else
		send_reply(c, 1, buf_cstr(&err), NULL);
	buf_free(&err);
	return true;
}

static bool run_reopen(struct acctd_client *c, const struct ipc_msg *msg)
{
	struct buf err = BUF_INIT;
	if (acctd_reopen(c->acctd, &err))
		send_reply(c, 0, "Accounting files reopened.", NULL);
	else
		send_reply(c, 1, buf_cstr(&err), NULL);
	buf_free(&err);
	return true;
}

static bool run_status(struct acctd_client *c, const struct ipc_msg *msg)
{
	send_reply(c, 0, c->acctd->retrying ? "retrying" : "writing", &c->acctd->seq);
	return true;
}

/* Every request but hello and record.  ternctl's come through master as
 * "acctd.VERB" with the caller's role; a reader may only look. */
struct request {
	const char *verb;
	bool changes_state;
	bool streams; /* the reply opens a stream: no "end" frame */
	const struct ipc_spec *spec;
	size_t nspec;
	bool (*run)(struct acctd_client *c, const struct ipc_msg *msg); /* false: client dropped */
};

static const struct request requests[] = {
    {"reopen", true, false, plain_spec, IPC_SPEC_COUNT(plain_spec), run_reopen},
    {"rotate", true, false, rotate_spec, IPC_SPEC_COUNT(rotate_spec), run_rotate},
    {"status", false, false, plain_spec, IPC_SPEC_COUNT(plain_spec), run_status},
    {"tail", false, true, tail_spec, IPC_SPEC_COUNT(tail_spec), run_tail},
};

static const struct request *find_request(const char *verb)
{
	for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
		if (strcmp(verb, requests[i].verb) == 0)
			return &requests[i];
	return NULL;
}

static void send_end(struct acctd_client *c)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, ACCTD_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
	send_frame(c, &w, &frame);
	buf_free(&frame);
}

static bool handle_request(struct acctd_client *c, const char *verb, const void *payload, size_t len)
{
	const struct request *rq = find_request(verb);
	if (rq == NULL) {
		send_reply(c, 1, "unknown request", NULL);
		send_end(c);
		return true;
	}
	struct ipc_msg msg;
	struct buf err = BUF_INIT;
	bool ok = ipc_decode(payload, len, rq->spec, rq->nspec, &msg, &err);
	const char *role = ok ? ipc_msg_str(&msg, IPC_ATTR_ROLE) : NULL;
	if (!ok) {
		client_fail(c, buf_cstr(&err));
	} else if (rq->changes_state && role && strcmp(role, "admin") != 0) {
		send_reply(c, 2, "permission denied: only root and the tern user may do that", NULL);
		send_end(c);
	} else {
		ok = rq->run(c, &msg);
		if (ok && !rq->streams)
			send_end(c);
	}
	ipc_msg_free(&msg);
	buf_free(&err);
	return ok;
}

/* false when the client was dropped. */
static bool handle_frame(struct acctd_client *c, const void *payload, size_t len)
{
	struct buf verb = BUF_INIT, err = BUF_INIT;
	bool ok = ipc_peek_request(payload, len, &verb, &err);
	const char *v = buf_cstr(&verb);
	bool relayed = strncmp(v, "acctd.", 6) == 0;
	if (!ok)
		client_fail(c, buf_cstr(&err));
	else if (relayed)
		ok = handle_request(c, v + 6, payload, len);
	else if (strcmp(v, "record") == 0)
		ok = take_record(c, payload, len);
	else if (strcmp(v, "hello") == 0)
		ok = become_feeder(c, payload, len);
	else
		ok = handle_request(c, v, payload, len);
	buf_free(&verb);
	buf_free(&err);
	return ok;
}

/* One whole frame out of the input into payload: 1, none yet: 0, broken: -1. */
static int next_frame(struct acctd_client *c, struct buf *payload, struct buf *err)
{
	enum ipc_frame_status st =
	    ipc_frame_take_evbuffer(bufferevent_get_input(c->bev), ACCTD_MAX_FRAME, payload, err);
	if (st != IPC_FRAME_COMPLETE)
		return st == IPC_FRAME_PARTIAL ? 0 : -1;
	return 1;
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct acctd_client *c = arg;
	struct acctd *a = c->acctd;
	struct buf payload = BUF_INIT, err = BUF_INIT;
	bev_read_waiting(bev);
	for (;;) {
		if (a->feeder == c && a->retrying)
			break;
		int got = next_frame(c, &payload, &err);
		if (got < 0)
			client_fail(c, buf_cstr(&err));
		if (got <= 0 || !handle_frame(c, payload.data, payload.len))
			break;
		if (a->feeder == c && a->batch_count >= BATCH_MAX)
			commit(a);
	}
	buf_free(&payload);
	buf_free(&err);
	/* c may be gone: look at the daemon, not at the client. */
	if (a->feeder && !a->retrying && !evtimer_pending(a->gather_ev, NULL)) {
		struct timeval gather = {0, GATHER_MSECS * 1000};
		evtimer_add(a->gather_ev, &gather);
	}
}

static void on_gathered(evutil_socket_t fd, short what, void *arg)
{
	struct acctd *a = arg;
	if (a->feeder && !a->retrying)
		commit(a);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	client_free(arg);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct acctd *a = arg;
	commit(a);
	if (!a->retrying)
		acctd_server_batch_done(a);
}

void acctd_server_batch_done(struct acctd *a)
{
	if (a->feeder == NULL)
		return;
	bufferevent_enable(a->feeder->bev, EV_READ);
	/* Frames that arrived while we were retrying wait in the buffer. */
	on_read(a->feeder->bev, a->feeder);
}

void acctd_server_drop_feeder(struct acctd *a)
{
	if (a->feeder)
		client_free(a->feeder);
}

/* ---- the socket ---------------------------------------------------------------------------- */

/* Only our own user (qmgr) and root (master, the administrator) may talk
 * to us: records are trusted input here. */
static bool peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct acctd *a = arg;
	int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (client < 0)
		return;
	if (!peer_allowed(client)) {
		log_warning("refused a connection from another user");
		close(client);
		return;
	}
	struct acctd_client *c = mem_zalloc(sizeof(*c));
	c->acctd = a;
	c->bev = bufferevent_socket_new(a->base, client, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
	/* Bounded input: a fast client waits in its socket, not in our memory. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, 4 * (ACCTD_MAX_FRAME + IPC_FRAME_HEADER));
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->next = a->clients;
	a->clients = c;
}

/* master may create the socket and hand it over in TERN_SERVICE_FD (see
 * doc/processes.md); it then stays master's to remove. */
static int inherited_socket(struct buf *err)
{
	int fd = server_inherited_fd("TERN_SERVICE_FD", err);
	if (fd < 0)
		return fd;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
		buf_printf(err, "TERN_SERVICE_FD %d names no socket", fd);
		return -2;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		buf_printf(err, "cannot set up the inherited socket: %s", strerror(errno));
		return -2;
	}
	return fd;
}

bool acctd_server_bind(struct acctd *a, uid_t uid, gid_t gid, struct buf *err)
{
	int inherited = inherited_socket(err);
	if (inherited == -2)
		return false;
	if (inherited >= 0) {
		a->listen_fd = inherited;
		a->socket_inherited = true;
		return true;
	}
	/* One acctd per spool (master starts one): what is there is stale. */
	a->listen_fd = listen_unix(a->socket_path, 64, 0600, uid, gid, err);
	return a->listen_fd >= 0;
}

bool acctd_server_start(struct acctd *a, struct buf *err)
{
	a->listen_ev = event_new(a->base, a->listen_fd, EV_READ | EV_PERSIST, on_accept, a);
	a->retry_ev = evtimer_new(a->base, on_retry, a);
	a->gather_ev = evtimer_new(a->base, on_gathered, a);
	if (a->listen_ev == NULL || a->retry_ev == NULL || a->gather_ev == NULL || event_add(a->listen_ev, NULL) < 0) {
		buf_puts(err, "cannot watch the socket");
		return false;
	}
	return true;
}

void acctd_server_stop(struct acctd *a)
{
	while (a->clients)
		client_free(a->clients);
	if (a->listen_ev)
		event_free(a->listen_ev);
	if (a->retry_ev)
		event_free(a->retry_ev);
	if (a->gather_ev)
		event_free(a->gather_ev);
	a->listen_ev = a->retry_ev = a->gather_ev = NULL;
	if (a->listen_fd >= 0) {
		close(a->listen_fd);
		if (!a->socket_inherited)
			unlink(a->socket_path);
	}
	a->listen_fd = -1;
}
