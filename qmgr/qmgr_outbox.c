/* qmgr_outbox.c: the client that hands the accounting outbox to acctd
 * (doc/accounting.md, "The record protocol").
 *
 *   qmgr:  hello seq=C next_seq=N     C: the oldest record still here - 1
 *   acctd: resume seq=S               everything up to S is written
 *   qmgr:  record seq=S+1 ...; record seq=S+2 ...   (streamed, in order)
 *   acctd: ack seq=M                  qmgr deletes records up to M
 *
 * Records are deleted only after the ack, so a crash of either side
 * resends what was not confirmed and acctd skips what it already wrote.
 * While acctd is down the records wait in the database and delivery goes
 * on; the connection is retried with a growing back-off, and the log
 * says so once acctd has been unreachable for UNREACHABLE_WARN_MSECS. */
#include "qmgr.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_write.h"
#include "clock.h"
#include "ipc_evbuffer.h"
#include "log.h"
#include "mem.h"

/* Records sent but not yet acknowledged, at most. */
#define WINDOW 4000
#define PUMP_MSECS 100
#define BACKOFF_MIN_MSECS 500
#define BACKOFF_MAX_MSECS 30000
/* master starts qmgr and acctd together, so qmgr's first attempts may
 * come before acctd's socket is there: acctd is reported unreachable
 * only once it has been so for this long. */
#define UNREACHABLE_WARN_MSECS 5000

enum outbox_state { DISCONNECTED, WAIT_RESUME, STREAMING };

struct qmgr_outbox {
	struct event_base *base;
	struct qmgr_store *st;
	const struct qmgr_bounce *bounce;
	char *path;
	struct bufferevent *bev;
	enum outbox_state state;
	struct event *timer;
	int backoff_ms;
	int64_t wait_ms; /* until the next connection attempt */
	uint64_t sent;   /* the last sequence number sent */
	uint64_t acked;  /* the last one acctd confirmed */
	struct buf payload;
	int64_t unreachable_since; /* the first failed attempt in a row, or 0 */
	bool warned;
};

static const struct ipc_spec seq_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_SEQ, IPC_REQUIRED},
    {IPC_ATTR_ACCT_HEADER_NAMES, IPC_OPTIONAL},
};
static const struct ipc_spec error_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_OPTIONAL},
};

/* ---- records as acctd wants them ------------------------------------------------ */

static const char *dsn_action(const char *type)
{
	if (strcmp(type, "d") == 0)
		return "relayed";
	if (strcmp(type, "b") == 0)
		return "failed";
	if (strcmp(type, "t") == 0 || strcmp(type, "tq") == 0)
		return "delayed";
	return NULL;
}

/* An outbox field and the acctd column it fills. */
struct field_map {
	enum ipc_attr from, to;
};

static const struct field_map fields[] = {
    {IPC_ATTR_TIME_LOGGED, IPC_ATTR_ACCT_TIME_LOGGED},
    {IPC_ATTR_RECEIVED, IPC_ATTR_ACCT_TIME_QUEUED},
    {IPC_ATTR_SENDER, IPC_ATTR_ACCT_ORIG},
    {IPC_ATTR_RECIPIENT, IPC_ATTR_ACCT_RCPT},
    {IPC_ATTR_ORCPT, IPC_ATTR_ORCPT},
    {IPC_ATTR_DSN_STATUS, IPC_ATTR_ACCT_DSN_STATUS},
    {IPC_ATTR_LAST_RESULT, IPC_ATTR_ACCT_DSN_DIAG},
    {IPC_ATTR_SRC_TYPE, IPC_ATTR_ACCT_SRC_TYPE},
    {IPC_ATTR_LOCAL_IP, IPC_ATTR_ACCT_DLV_SOURCE_IP},
    {IPC_ATTR_REMOTE_IP, IPC_ATTR_ACCT_DLV_DESTINATION_IP},
    {IPC_ATTR_ESMTP, IPC_ATTR_ACCT_DLV_ESMTP_AVAILABLE},
    {IPC_ATTR_BODY_SIZE, IPC_ATTR_ACCT_DLV_SIZE},
    {IPC_ATTR_VMTA, IPC_ATTR_VMTA},
    {IPC_ATTR_MAIL_JOB, IPC_ATTR_ACCT_JOB_ID},
    {IPC_ATTR_ENVID, IPC_ATTR_ACCT_ENV_ID},
    {IPC_ATTR_QUEUE, IPC_ATTR_QUEUE},
    {IPC_ATTR_TLS_PROTOCOL, IPC_ATTR_ACCT_DLV_TLS_PROTOCOL},
    {IPC_ATTR_TLS_CIPHER, IPC_ATTR_ACCT_DLV_TLS_CIPHER},
    {IPC_ATTR_CLIENT_IP, IPC_ATTR_ACCT_RCV_SOURCE_IP},
    {IPC_ATTR_AUTH_USER, IPC_ATTR_ACCT_RCV_SMTP_USER},
    {IPC_ATTR_ACCT_DLV_TYPE, IPC_ATTR_ACCT_DLV_TYPE},
};

/* An MTA as PowerMTA names it: "mx.example.net (192.0.2.1)", the name
 * alone or the address alone when only one is known. */
static void put_mta(struct ipc_writer *w, enum ipc_attr to, const struct ipc_msg *rec, enum ipc_attr name_attr,
                    enum ipc_attr ip_attr)
{
	const char *name = ipc_msg_has(rec, name_attr) ? ipc_msg_str(rec, name_attr) : "";
	const char *ip = ipc_msg_has(rec, ip_attr) ? ipc_msg_str(rec, ip_attr) : "";
	if (*name == '\0' && *ip == '\0')
		return;
	struct buf mta = BUF_INIT;
	if (*name && *ip)
		buf_concat(&mta, name, " (", ip, ")", NULL);
	else
		buf_puts(&mta, *name ? name : ip);
	ipc_put_str(w, to, buf_cstr(&mta));
	buf_free(&mta);
}

/* The enhanced status code at the start of a diagnostic, when smtp gave
 * none ("smtp;550 5.1.1 ..." or an expiry). */
static void status_from(const struct ipc_msg *rec, const char *type, struct buf *out)
{
	if (ipc_msg_has(rec, IPC_ATTR_DSN_STATUS))
		return;
	const char *diag = ipc_msg_str(rec, IPC_ATTR_LAST_RESULT);
	const char *p = diag ? strchr(diag, ' ') : NULL;
	if (p && (p[1] == '2' || p[1] == '4' || p[1] == '5') && p[2] == '.') {
		size_t n = strcspn(p + 1, " ");
		buf_append(out, p + 1, n);
	} else if (strcmp(type, "d") == 0) {
		buf_puts(out, "2.0.0");
	} else if (strcmp(type, "b") == 0) {
		buf_puts(out, "5.0.0");
	} else if (type[0] == 't') {
		buf_puts(out, "4.0.0");
	}
}

static void put_record(const struct qmgr_outbox *o, struct buf *out, uint64_t seq, const struct ipc_msg *rec)
{
	const char *type = ipc_msg_str(rec, IPC_ATTR_RECORD_TYPE);
	struct ipc_writer w;
	ipc_write_begin(&w, out, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "record");
	ipc_put_int(&w, IPC_ATTR_SEQ, (int64_t)seq);
	ipc_put_str(&w, IPC_ATTR_RECORD_TYPE, type);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (!ipc_msg_has(rec, fields[i].from))
			continue;
		if (ipc_attr_type(fields[i].from) == IPC_TYPE_INT)
			ipc_put_int(&w, fields[i].to, ipc_msg_int(rec, fields[i].from));
		else
			ipc_put_str(&w, fields[i].to, ipc_msg_str(rec, fields[i].from));
	}
	put_mta(&w, IPC_ATTR_ACCT_DSN_MTA, rec, IPC_ATTR_REMOTE_HOST, IPC_ATTR_REMOTE_IP);
	put_mta(&w, IPC_ATTR_ACCT_SRC_MTA, rec, IPC_ATTR_HELO, IPC_ATTR_CLIENT_IP);
	const char *action = dsn_action(type);
	if (action)
		ipc_put_str(&w, IPC_ATTR_ACCT_DSN_ACTION, action);
	struct buf status = BUF_INIT, err = BUF_INIT;
	status_from(rec, type, &status);
	if (status.len)
		ipc_put_str(&w, IPC_ATTR_ACCT_DSN_STATUS, buf_cstr(&status));
	if (strcmp(type, "b") == 0) {
		struct buf cat = BUF_INIT;
		const char *code =
		    ipc_msg_has(rec, IPC_ATTR_DSN_STATUS) ? ipc_msg_str(rec, IPC_ATTR_DSN_STATUS) : buf_cstr(&status);
		qmgr_bounce_category(o->bounce, code, ipc_msg_str(rec, IPC_ATTR_LAST_RESULT), &cat);
		ipc_put_str(&w, IPC_ATTR_ACCT_BOUNCE_CAT, buf_cstr(&cat));
		buf_free(&cat);
	}
	if (type[0] != 'r' && ipc_msg_has(rec, IPC_ATTR_REMOTE_IP) && !ipc_msg_has(rec, IPC_ATTR_ACCT_DLV_TYPE))
		ipc_put_str(&w, IPC_ATTR_ACCT_DLV_TYPE, "smtp");
	if (!ipc_write_end(&w, &err))
		log_error("outbox record %" PRIu64 " cannot be encoded for acctd: %s", seq, buf_cstr(&err));
	buf_free(&status);
	buf_free(&err);
}

/* ---- the connection ------------------------------------------------------------- */

static void arm(struct qmgr_outbox *o, int64_t ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(o->timer, &tv);
}

static void disconnect(struct qmgr_outbox *o, const char *why)
{
	if (o->bev) {
		log_warning("acctd connection lost: %s; records wait in the outbox", why);
		bufferevent_free(o->bev);
		o->bev = NULL;
	}
	o->state = DISCONNECTED;
	o->backoff_ms = o->backoff_ms ? o->backoff_ms * 2 : BACKOFF_MIN_MSECS;
	if (o->backoff_ms > BACKOFF_MAX_MSECS)
		o->backoff_ms = BACKOFF_MAX_MSECS;
	arm(o, o->backoff_ms);
}

struct pump {
	struct qmgr_outbox *o;
	struct buf frames;
	uint64_t room;
};

static bool pump_one(void *ctx, uint64_t seq, const struct ipc_msg *rec)
{
	struct pump *p = ctx;
	if (p->room == 0)
		return false;
	put_record(p->o, &p->frames, seq, rec);
	p->o->sent = seq;
	p->room--;
	return true;
}

/* Sends what the window allows after the last record sent. */
static void pump(struct qmgr_outbox *o)
{
	if (o->state != STREAMING)
		return;
	uint64_t unacked = o->sent > o->acked ? o->sent - o->acked : 0;
	if (unacked >= WINDOW)
		return;
	struct pump p = {.o = o, .frames = BUF_INIT, .room = WINDOW - unacked};
	struct buf err = BUF_INIT;
	if (!qmgr_store_walk_outbox_from(o->st, o->sent + 1, pump_one, &p, &err))
		log_error("cannot read the outbox: %s", buf_cstr(&err));
	if (p.frames.len)
		bev_send(o->bev, p.frames.data, p.frames.len);
	buf_free(&p.frames);
	buf_free(&err);
}

static void on_seq(struct qmgr_outbox *o, const char *verb, uint64_t seq)
{
	if (strcmp(verb, "resume") == 0) {
		o->state = STREAMING;
		o->sent = seq;
		o->backoff_ms = 0;
		if (o->warned)
			log_info("acctd reached: records resume after %" PRIu64, seq);
		o->warned = false;
	}
	if (seq > o->acked) {
		struct buf err = BUF_INIT;
		if (qmgr_store_outbox_confirm(o->st, seq, &err) == QMGR_STORE_OK)
			o->acked = seq;
		else
			log_error("cannot remove confirmed outbox records: %s", buf_cstr(&err));
		buf_free(&err);
	}
	pump(o);
}

static void handle_frame(struct qmgr_outbox *o)
{
	struct buf verb = BUF_INIT, err = BUF_INIT;
	struct ipc_msg m;
	bool ok = ipc_peek_request(o->payload.data, o->payload.len, &verb, &err);
	const char *v = buf_cstr(&verb);
	if (ok && ((strcmp(v, "resume") == 0 && o->state == WAIT_RESUME) ||
	           (strcmp(v, "ack") == 0 && o->state == STREAMING))) {
		ok = ipc_decode(o->payload.data, o->payload.len, seq_spec, IPC_SPEC_COUNT(seq_spec), &m, &err);
		if (ok)
			on_seq(o, v, (uint64_t)ipc_msg_int(&m, IPC_ATTR_SEQ));
		ipc_msg_free(&m);
	} else if (ok && strcmp(v, "error") == 0) {
		if (ipc_decode(o->payload.data, o->payload.len, error_spec, IPC_SPEC_COUNT(error_spec), &m, &err))
			buf_printf(&err, "acctd: %s", ipc_msg_str(&m, IPC_ATTR_REASON));
		ipc_msg_free(&m);
		ok = false;
	} else if (ok) {
		buf_printf(&err, "unexpected \"%s\" from acctd", v);
		ok = false;
	}
	if (!ok)
		disconnect(o, buf_cstr(&err));
	buf_free(&verb);
	buf_free(&err);
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct qmgr_outbox *o = arg;
	struct buf err = BUF_INIT;
	while (o->bev) {
		enum ipc_frame_status status =
		    ipc_frame_take_evbuffer(bufferevent_get_input(o->bev), 0, &o->payload, &err);
		if (status == IPC_FRAME_ERROR)
			disconnect(o, buf_cstr(&err));
		if (status != IPC_FRAME_COMPLETE)
			break;
		handle_frame(o);
	}
	buf_free(&err);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		disconnect(arg, (what & BEV_EVENT_EOF) ? "acctd closed the connection" : "connection error");
}

static void send_hello(struct qmgr_outbox *o)
{
	uint64_t next = 1, first = 0;
	bool found;
	struct buf err = BUF_INIT, frame = BUF_INIT;
	if (!qmgr_store_outbox_next(o->st, &next, &err) || !qmgr_store_outbox_first(o->st, &first, &found, &err))
		log_error("cannot read the outbox: %s", buf_cstr(&err));
	if (!found)
		first = next;
	o->acked = first - 1;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "hello");
	ipc_put_int(&w, IPC_ATTR_SEQ, (int64_t)(first - 1));
	ipc_put_int(&w, IPC_ATTR_ACCT_NEXT_SEQ, (int64_t)next);
	if (ipc_write_end(&w, &err))
		bev_send(o->bev, frame.data, frame.len);
	o->state = WAIT_RESUME;
	buf_free(&frame);
	buf_free(&err);
}

static void try_connect(struct qmgr_outbox *o)
{
	struct buf err = BUF_INIT;
	int fd = ipc_connect(o->path, &err);
	if (fd < 0) {
		int64_t now = clock_monotonic_ms();
		if (o->unreachable_since == 0)
			o->unreachable_since = now;
		if (!o->warned && now - o->unreachable_since >= UNREACHABLE_WARN_MSECS) {
			log_warning("cannot reach acctd: %s; accounting records wait in the outbox", buf_cstr(&err));
			o->warned = true;
		}
		buf_free(&err);
		disconnect(o, NULL);
		return;
	}
	buf_free(&err);
	o->unreachable_since = 0;
	evutil_make_socket_nonblocking(fd);
	o->bev = bufferevent_socket_new(o->base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(o->bev, on_read, NULL, on_event, o);
	bufferevent_enable(o->bev, EV_READ | EV_WRITE);
	send_hello(o);
	arm(o, PUMP_MSECS);
}

/* Connects when disconnected; otherwise sends what was added since. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_outbox *o = arg;
	if (o->state == DISCONNECTED) {
		try_connect(o);
		return;
	}
	pump(o);
	arm(o, PUMP_MSECS);
}

struct qmgr_outbox *qmgr_outbox_start(struct event_base *base, struct qmgr_store *st, const char *spool,
                                      const struct qmgr_bounce *bounce)
{
	struct qmgr_outbox *o = mem_zalloc(sizeof(*o));
	o->bounce = bounce;
	o->base = base;
	o->st = st;
	o->path = mem_asprintf("%s/private/acctd", spool);
	o->timer = evtimer_new(base, on_timer, o);
	arm(o, 0);
	return o;
}

void qmgr_outbox_stop(struct qmgr_outbox *o)
{
	if (o == NULL)
		return;
	if (o->bev)
		bufferevent_free(o->bev);
	event_free(o->timer);
	buf_free(&o->payload);
	free(o->path);
	free(o);
}

uint64_t qmgr_outbox_pending(struct qmgr_outbox *o)
{
	uint64_t next = 1, first = 0;
	bool found = false;
	struct buf err = BUF_INIT;
	if (!qmgr_store_outbox_next(o->st, &next, &err) || !qmgr_store_outbox_first(o->st, &first, &found, &err))
		log_error("cannot read the outbox: %s", buf_cstr(&err));
	buf_free(&err);
	return found ? next - first : 0;
}

bool qmgr_outbox_connected(struct qmgr_outbox *o)
{
	return o->state == STREAMING;
}
