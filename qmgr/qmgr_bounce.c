/* qmgr_bounce.c: what happens when a recipient fails for good.
 *
 * - bounceCat: the category of a failure, from <bounce-category-patterns>
 *   (first match wins) or, without that block, the stock categories of
 *   PowerMTA (reference section 2.8).
 * - DSNs (RFC 3464): a multipart/report to the envelope sender with a
 *   human part, message/delivery-status and the original headers or the
 *   whole message (RET, else dsn-return-default of the message's source).
 *   Never for a null sender; NOTIFY=NEVER, or a NOTIFY without FAILURE,
 *   means none.  One DSN lists every pending bounce of a message
 *   (qmgr_bounce_flush, when the scheduler says the message's failures
 *   are in), and is queued in the transaction that clears them.  A DSN
 *   is a new message with a null sender, so it can never cause another
 *   one.  Delay notices (NOTIFY=DELAY) are queued at once (on_bounce). */
#include "qmgr.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "conf.h"
#include "fileio.h"
#include "log.h"
#include "mem.h"

struct category_rule {
	regex_t re;
	char *name;
};

struct qmgr_bounce {
	struct qmgr_store *st;
	struct qmgr_sched *sched;
	const struct conf *conf;
	struct category_rule *rules;
	size_t nrules;
	char *host; /* Reporting-MTA */
};

/* The stock block: enhanced status codes first, then words of the
 * diagnostic. */
static const char *const stock_rules[][2] = {
    {"^2\\.[0-9]+\\.[0-9]+", "success"},
    {"^[45]\\.1\\.1", "bad-mailbox"},
    {"^[45]\\.1\\.2", "bad-domain"},
    {"^[45]\\.3\\.5", "bad-configuration"},
    {"^[45]\\.4\\.1", "no-answer-from-host"},
    {"^[45]\\.4\\.2", "bad-connection"},
    {"^[45]\\.4\\.4", "routing-errors"},
    {"^[45]\\.4\\.6", "routing-errors"},
    {"^[45]\\.4\\.7", "message-expired"},
    {"^[45]\\.7\\.1", "policy-related"},
    {"expired", "message-expired"},
    {"(user|mailbox).*(unknown|not found|does not exist)|no such user", "bad-mailbox"},
    {"(quota|mailbox full|over.?quota)", "quota-issues"},
    {"(spam|blacklist|blocklist|listed)", "spam-related"},
    {"virus", "virus-related"},
    {"relay", "relaying-issues"},
    {"", "other"},
};

static void add_rule(struct qmgr_bounce *b, const char *pattern, const char *name)
{
	b->rules = mem_reallocarray(b->rules, b->nrules + 1, sizeof(*b->rules));
	struct category_rule *r = &b->rules[b->nrules];
	if (regcomp(&r->re, pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0) {
		log_warning("bounce category pattern /%s/ is not a valid regular expression: ignored", pattern);
		return;
	}
	r->name = mem_strdup(name);
	b->nrules++;
}

static void load_rules(struct qmgr_bounce *b)
{
	const struct conf_block *block = conf_block_count(b->conf, CONF_BOUNCE_CATEGORIES)
	                                     ? conf_block_at(b->conf, CONF_BOUNCE_CATEGORIES, 0)
	                                     : NULL;
	for (size_t i = 0; block && i < conf_block_setting_count(block); i++) {
		const struct conf_value *v = &conf_block_setting_at(block, i)->value;
		if (v->regex && v->string)
			add_rule(b, v->regex, v->string);
	}
	if (b->nrules == 0)
		for (size_t i = 0; i < sizeof(stock_rules) / sizeof(stock_rules[0]); i++)
			add_rule(b, stock_rules[i][0], stock_rules[i][1]);
}

void qmgr_bounce_category(const struct qmgr_bounce *b, const char *status, const char *diag, struct buf *out)
{
	for (size_t i = 0; i < b->nrules; i++) {
		if ((status && regexec(&b->rules[i].re, status, 0, NULL, 0) == 0) ||
		    (diag && regexec(&b->rules[i].re, diag, 0, NULL, 0) == 0)) {
			buf_puts(out, b->rules[i].name);
			return;
		}
	}
	buf_puts(out, "other");
}

/* ---- DSNs ----------------------------------------------------------------------- */

/* A failure is reported unless NOTIFY says otherwise; a delay only when
 * NOTIFY asks for it.  Never to a null sender. */
static bool wants_notice(const struct ipc_msg *env, const struct qmgr_rcpt *r, bool delayed)
{
	if (ipc_msg_str(env, IPC_ATTR_SENDER)[0] == '\0')
		return false;
	if (r->notify == NULL)
		return !delayed;
	return strcasestr(r->notify, "NEVER") == NULL && strcasestr(r->notify, delayed ? "DELAY" : "FAILURE") != NULL;
}

/* RET from MAIL FROM; else dsn-return-default of the source. */
static bool return_full(struct qmgr_bounce *b, const struct ipc_msg *env)
{
	const char *ret = ipc_msg_str(env, IPC_ATTR_RET);
	if (ret)
		return strcasecmp(ret, "FULL") == 0;
	struct addr_ip ip;
	const char *why;
	const char *client = ipc_msg_str(env, IPC_ATTR_CLIENT_IP);
	if (client == NULL || !addr_parse_ip(client, &ip, &why))
		return false;
	struct conf_settings *s = conf_resolve_source(b->conf, &ip, NULL);
	bool full = s && strcmp(conf_get_string(s, "dsn-return-default"), "full") == 0;
	conf_settings_free(s);
	return full;
}

static void header_section(const struct buf *body, struct buf *out)
{
	const char *p = buf_cstr(body);
	const char *end = strstr(p, "\r\n\r\n");
	size_t n = end ? (size_t)(end - p) + 2 : body->len;
	if (!end && (end = strstr(p, "\n\n")) != NULL)
		n = (size_t)(end - p) + 1;
	buf_append(out, p, n);
}

static void rfc5322_date(time_t t, struct buf *out)
{
	char date[64];
	struct tm tm;
	localtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	buf_puts(out, date);
}

/* The status code: smtp's, or the one at the start of a local reason
 * ("expired: 4.4.7 ..."), or 5.0.0. */
static void failure_status(const char *reason, const char *status, struct buf *out)
{
	if (status) {
		buf_puts(out, status);
		return;
	}
	const char *p = reason ? strchr(reason, ' ') : NULL;
	if (p && (p[1] == '4' || p[1] == '5') && p[2] == '.')
		buf_append(out, p + 1, strcspn(p + 1, " "));
	else
		buf_puts(out, "5.0.0");
}

/* One recipient in a DSN. */
struct dsn_rcpt {
	struct qmgr_rcpt r;
	const char *reason;
	const char *status;      /* smtp's, or NULL */
	const char *remote_host; /* the server that refused, or NULL */
};

struct dsn_facts {
	const struct ipc_msg *env;
	const char *qid;
	const struct dsn_rcpt *rcpts;
	size_t nrcpt;
	bool delayed; /* a delay notice: Action delayed, the message is retried */
};

static void per_recipient(const struct dsn_rcpt *d, bool delayed, struct buf *out)
{
	buf_printf(out, "\r\nFinal-Recipient: rfc822; %s\r\n", d->r.address);
	if (d->r.orcpt) {
		const char *semi = strchr(d->r.orcpt, ';');
		if (semi)
			buf_printf(out, "Original-Recipient: %.*s; %s\r\n", (int)(semi - d->r.orcpt), d->r.orcpt,
			           semi + 1);
		else
			buf_printf(out, "Original-Recipient: rfc822; %s\r\n", d->r.orcpt);
	}
	struct buf status = BUF_INIT;
	failure_status(d->reason, d->status, &status);
	buf_printf(out, "Action: %s\r\nStatus: %s\r\n", delayed ? "delayed" : "failed", buf_cstr(&status));
	buf_free(&status);
	if (d->remote_host)
		buf_printf(out, "Remote-MTA: dns; %s\r\n", d->remote_host);
	if (d->reason && strncmp(d->reason, "smtp;", 5) == 0)
		buf_printf(out, "Diagnostic-Code: smtp; %s\r\n", d->reason + 5);
	else if (d->reason)
		buf_printf(out, "Diagnostic-Code: X-tern; %s\r\n", d->reason);
	buf_puts(out, "Last-Attempt-Date: ");
	rfc5322_date(time(NULL), out);
	buf_puts(out, "\r\n");
}

/* The per-message fields, then one block per recipient. */
static void delivery_status(struct qmgr_bounce *b, const struct dsn_facts *f, struct buf *out)
{
	const char *envid = ipc_msg_str(f->env, IPC_ATTR_ENVID);
	buf_printf(out, "Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; %s\r\n", b->host);
	if (envid)
		buf_printf(out, "Original-Envelope-Id: %s\r\n", envid);
	buf_puts(out, "Arrival-Date: ");
	rfc5322_date((time_t)ipc_msg_int(f->env, IPC_ATTR_RECEIVED), out);
	buf_puts(out, "\r\n");
	for (size_t i = 0; i < f->nrcpt; i++)
		per_recipient(&f->rcpts[i], f->delayed, out);
	buf_puts(out, "\r\n");
}

static void human_part(struct qmgr_bounce *b, const struct dsn_facts *f, const char *boundary, struct buf *out)
{
	buf_printf(out,
	           "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
	           "This is the mail system at host %s.\r\n\r\n"
	           "%s\r\n\r\n",
	           b->host,
	           f->delayed ? "Your message has not been delivered yet; the mail system will keep trying."
	                      : "Your message could not be delivered to one or more recipients.");
	for (size_t i = 0; i < f->nrcpt; i++)
		buf_printf(out, "<%s>: %s\r\n", f->rcpts[i].r.address,
		           f->rcpts[i].reason ? f->rcpts[i].reason : "delivery failed");
	buf_printf(out, "\r\n--%s\r\n", boundary);
}

static void build_dsn(struct qmgr_bounce *b, const struct dsn_facts *f, const struct buf *original, bool full,
                      struct buf *out)
{
	const char *sender = ipc_msg_str(f->env, IPC_ATTR_SENDER);
	struct buf bound = BUF_INIT;
	buf_printf(&bound, "%s.%lld/tern", f->qid, (long long)time(NULL));
	const char *boundary = buf_cstr(&bound);
	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\nTo: <%s>\r\n", b->host, sender);
	buf_puts(out, f->delayed ? "Subject: Delayed Mail (still being retried)\r\nDate: "
	                         : "Subject: Undelivered Mail Returned to Sender\r\nDate: ");
	rfc5322_date(time(NULL), out);
	buf_printf(out,
	           "\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
	           "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n",
	           boundary);
	buf_printf(out, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary);
	human_part(b, f, boundary, out);
	delivery_status(b, f, out);
	buf_printf(out, "--%s\r\n", boundary);
	if (full) {
		buf_puts(out, "Content-Type: message/rfc822\r\n\r\n");
		buf_append(out, original->data, original->len);
	} else {
		buf_puts(out, "Content-Type: text/rfc822-headers\r\n\r\n");
		header_section(original, out);
	}
	if (out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
		buf_puts(out, "\r\n");
	buf_printf(out, "\r\n--%s--\r\n", boundary);
	buf_free(&bound);
}

static void log_queued(const struct dsn_facts *f, const char *dsn_qid, const char *sender)
{
	struct buf list = BUF_INIT;
	for (size_t i = 0; i < f->nrcpt; i++)
		buf_printf(&list, "%s<%s>", i ? ", " : "", f->rcpts[i].r.address);
	log_info("%s: DSN %s for recipient%s %s to <%s>", f->qid, dsn_qid, f->nrcpt > 1 ? "s" : "", buf_cstr(&list),
	         sender);
	buf_free(&list);
}

/* The DSN as a message from <> to the sender; false (err) when it
 * cannot be built. */
static bool make_dsn(struct qmgr_bounce *b, const struct dsn_facts *f, struct qmgr_incoming *in, struct buf *err)
{
	struct buf original = BUF_INIT, frame = BUF_INIT;
	memset(in, 0, sizeof(*in));
	if (!qmgr_store_read_body(b->st, f->qid, &original, err)) {
		buf_free(&original);
		return false;
	}
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "");
	ipc_put_str(&w, IPC_ATTR_SRC_TYPE, "dsn");
	bool ok = ipc_write_end(&w, err) &&
	          qmgr_envelope_decode(frame.data + IPC_FRAME_HEADER, frame.len - IPC_FRAME_HEADER, &in->envelope, err);
	in->rcpts = mem_zalloc(sizeof(*in->rcpts));
	in->rcpts[0].address = mem_strdup(ipc_msg_str(f->env, IPC_ATTR_SENDER));
	in->nrcpt = 1;
	build_dsn(b, f, &original, return_full(b, f->env), &in->body);
	buf_free(&frame);
	buf_free(&original);
	return ok;
}

/* The message's pending bounces get their DSN: one for all of them (those
 * whose NOTIFY and sender want one), queued in the transaction that
 * clears their marks. */
void qmgr_bounce_flush(struct qmgr_bounce *b, const char *qid)
{
	struct ipc_msg env;
	bool found;
	struct buf err = BUF_INIT, queue = BUF_INIT;
	char dsn_qid[QMGR_QID_SIZE];
	if (!qmgr_store_get_message(b->st, qid, &env, &found, &err)) {
		if (!found && qmgr_store_dsn_sent(b->st, qid, NULL, time(NULL), dsn_qid, &err) != QMGR_STORE_OK)
			log_error("%s: %s", qid, buf_cstr(&err));
		buf_free(&err);
		return;
	}
	int64_t count = ipc_msg_int(&env, IPC_ATTR_RCPT_COUNT);
	struct dsn_rcpt *rcpts = mem_reallocarray(NULL, count > 0 ? (size_t)count : 1, sizeof(*rcpts));
	size_t n = 0;
	for (int64_t i = 0; i < count; i++) {
		struct dsn_rcpt *d = &rcpts[n];
		if (!qmgr_store_get_rcpt(b->st, qid, (size_t)i, &d->r, &found, &err))
			continue;
		if (!d->r.dsn_pending || !wants_notice(&env, &d->r, false)) {
			qmgr_rcpt_free(&d->r);
			continue;
		}
		d->reason = d->r.last_result;
		d->status = d->r.dsn_status;
		d->remote_host = d->r.remote_host;
		n++;
	}
	buf_reset(&err);
	struct dsn_facts f = {&env, qid, rcpts, n, false};
	struct qmgr_incoming in = {0};
	const char *sender = ipc_msg_str(&env, IPC_ATTR_SENDER);
	bool ok = n == 0 || (make_dsn(b, &f, &in, &err) && qmgr_queue_name(sender, NULL, &queue, &err));
	if (ok && qmgr_store_dsn_sent(b->st, qid, n ? &in : NULL, time(NULL), dsn_qid, &err) == QMGR_STORE_OK) {
		if (n > 0) {
			log_queued(&f, dsn_qid, sender);
			qmgr_sched_queued(b->sched, buf_cstr(&queue), 1);
		}
	} else {
		log_error("%s: cannot queue the DSN to <%s>: %s", qid, sender, buf_cstr(&err));
	}
	qmgr_incoming_free(&in);
	for (size_t i = 0; i < n; i++)
		qmgr_rcpt_free(&rcpts[i].r);
	free(rcpts);
	ipc_msg_free(&env);
	buf_free(&err);
	buf_free(&queue);
}

static void queue_dsn(struct qmgr_bounce *b, const struct dsn_facts *f)
{
	struct buf original = BUF_INIT, err = BUF_INIT;
	if (!qmgr_store_read_body(b->st, f->qid, &original, &err)) {
		log_error("%s: no DSN: cannot read the message: %s", f->qid, buf_cstr(&err));
		buf_free(&err);
		return;
	}
	struct qmgr_incoming in = {0};
	struct buf queue = BUF_INIT;
	const char *sender = ipc_msg_str(f->env, IPC_ATTR_SENDER);
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "");
	ipc_put_str(&w, IPC_ATTR_SRC_TYPE, "dsn");
	bool ok = ipc_write_end(&w, &err) &&
	          qmgr_envelope_decode(frame.data + IPC_FRAME_HEADER, frame.len - IPC_FRAME_HEADER, &in.envelope, &err);
	struct qmgr_rcpt rcpt = {.address = (char *)sender};
	in.rcpts = &rcpt;
	in.nrcpt = 1;
	build_dsn(b, f, &original, return_full(b, f->env), &in.body);
	char qid[QMGR_QID_SIZE];
	if (ok && qmgr_queue_name(sender, NULL, &queue, &err) &&
	    qmgr_store_add_message(b->st, &in, time(NULL), qid, &err) == QMGR_STORE_OK) {
		log_queued(f, qid, sender);
		qmgr_sched_queued(b->sched, buf_cstr(&queue), 1);
	} else {
		log_error("%s: cannot queue the DSN to <%s>: %s", f->qid, sender, buf_cstr(&err));
	}
	in.rcpts = NULL;
	in.nrcpt = 0;
	qmgr_incoming_free(&in);
	buf_free(&frame);
	buf_free(&queue);
	buf_free(&original);
	buf_free(&err);
}

/* The scheduler's hook: called before the recipients are marked bounced.
 * One DSN lists every one of them that is not final yet and wants it. */
static void on_bounce(void *ctx, const char *qid, const struct qmgr_failure *failures, size_t n, bool delayed)
{
	struct qmgr_bounce *b = ctx;
	struct ipc_msg env;
	bool found;
	struct buf err = BUF_INIT;
	if (n == 0 || !qmgr_store_get_message(b->st, qid, &env, &found, &err)) {
		buf_free(&err);
		return;
	}
	struct dsn_rcpt *rcpts = mem_reallocarray(NULL, n, sizeof(*rcpts));
	size_t count = 0;
	for (size_t i = 0; i < n; i++) {
		struct dsn_rcpt *d = &rcpts[count];
		buf_reset(&err);
		if (!qmgr_store_get_rcpt(b->st, qid, failures[i].index, &d->r, &found, &err))
			continue;
		bool final = d->r.state == QMGR_RCPT_DELIVERED || d->r.state == QMGR_RCPT_BOUNCED;
		if (final || !wants_notice(&env, &d->r, delayed)) {
			qmgr_rcpt_free(&d->r);
			continue;
		}
		d->reason = failures[i].reason;
		d->status = failures[i].detail ? ipc_msg_str(failures[i].detail, IPC_ATTR_DSN_STATUS) : NULL;
		d->remote_host = failures[i].detail ? ipc_msg_str(failures[i].detail, IPC_ATTR_REMOTE_HOST) : NULL;
		count++;
	}
	struct dsn_facts f = {&env, qid, rcpts, count, delayed};
	if (count > 0)
		queue_dsn(b, &f);
	for (size_t i = 0; i < count; i++)
		qmgr_rcpt_free(&rcpts[i].r);
	free(rcpts);
	ipc_msg_free(&env);
	buf_free(&err);
}

static void on_flush(void *ctx, const char *qid)
{
	qmgr_bounce_flush(ctx, qid);
}

static void free_rules(struct qmgr_bounce *b)
{
	for (size_t i = 0; i < b->nrules; i++) {
		regfree(&b->rules[i].re);
		free(b->rules[i].name);
	}
	free(b->rules);
	b->rules = NULL;
	b->nrules = 0;
}

static void load_host(struct qmgr_bounce *b)
{
	free(b->host);
	b->host = b->conf ? conf_host_name(b->conf) : fileio_system_host_name();
}

void qmgr_bounce_reload(struct qmgr_bounce *b, const struct conf *conf)
{
	b->conf = conf;
	free_rules(b);
	load_rules(b);
	load_host(b);
}

struct qmgr_bounce *qmgr_bounce_new(struct qmgr_store *st, struct qmgr_sched *sched, const struct conf *conf)
{
	struct qmgr_bounce *b = mem_zalloc(sizeof(*b));
	b->st = st;
	b->sched = sched;
	b->conf = conf;
	load_rules(b);
	load_host(b);
	if (sched)
		qmgr_sched_set_bounce(sched, on_bounce, on_flush, b);
	return b;
}

void qmgr_bounce_free(struct qmgr_bounce *b)
{
	if (b == NULL)
		return;
	free_rules(b);
	free(b->host);
	free(b);
}
