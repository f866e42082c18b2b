/* smtpd_data.c: the message itself - DATA text (strict CRLF.CRLF framing,
 * dot-unstuffing, bare LF/CR refused), BDAT chunks, the header section
 * (Received, X-Virtual-MTA, X-Job, X-Envid, Message-Id, Date,
 * remove-header, hop count) and the end of the transaction, whose 250 is
 * only sent once qmgr has the message safely on disk. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "smtpd.h"

/* A header section larger than this is passed on untouched. */
#define SMTPD_HEADER_MAX (256 * 1024)

/* ---- headers ---------------------------------------------------------------------- */

/* The date is formatted once a second, not once a message. */
static void rfc5322_date(struct buf *out)
{
	static char text[64];
	static time_t formatted_at = -1;
	time_t now = time(NULL);
	if (now != formatted_at) {
		struct tm tm;
		localtime_r(&now, &tm);
		strftime(text, sizeof(text), "%a, %d %b %Y %H:%M:%S %z", &tm);
		formatted_at = now;
	}
	buf_puts(out, text);
}

/* Certificate names go into a header comment: printable ASCII without
 * parentheses or backslashes only. */
static void put_comment_text(struct buf *out, const char *text)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)text; *p && n < 200; p++, n++)
		buf_putc(out, *p >= 32 && *p < 127 && *p != '(' && *p != ')' && *p != '\\' ? (char)*p : '?');
}

static void received_header(struct smtpd_session *s, struct buf *out)
{
	const struct smtpd_txn *t = &s->txn;
	buf_puts(out, "Received: ");
	if (!s->policy.hide_message_source)
		buf_concat(out, "from ", s->helo, " ([", s->client_text, "])\r\n\t", NULL);
	buf_concat(out, "by ", s->conf->hostname, " (tern) with ", smtpd_protocol_name(s), NULL);
	bool comment = !s->policy.hide_message_source || s->tls;
	if (comment) {
		buf_puts(out, "\r\n\t(");
		if (!s->policy.hide_message_source)
			buf_concat(out, "source ", s->policy.source, s->tls ? "; " : "", NULL);
		if (s->tls) {
			buf_concat(out, s->tls_protocol, " ", s->tls_cipher, NULL);
			if (s->tls_subject) {
				buf_puts(out, ";\r\n\tclient certificate subject=\"");
				put_comment_text(out, s->tls_subject);
				buf_puts(out, "\" issuer=\"");
				put_comment_text(out, s->tls_issuer ? s->tls_issuer : "");
				buf_printf(out, "\" %s", s->tls_verified ? "verified" : "not verified");
			}
		}
		buf_puts(out, ")");
	}
	if (t->nrcpts == 1 && !s->policy.hide_message_source)
		buf_concat(out, "\r\n\tfor <", t->rcpts->mailbox, ">", NULL);
	buf_puts(out, "; ");
	rfc5322_date(out);
	buf_puts(out, "\r\n");
}

static bool header_is(const char *field, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && field[n] == ':' && strncasecmp(field, name, n) == 0;
}

/* The value of a header field, unfolded and trimmed. */
static char *header_value(const char *field, size_t len)
{
	const char *colon = memchr(field, ':', len);
	struct buf v = BUF_INIT;
	for (const char *p = colon + 1; p < field + len; p++)
		if (*p != '\r' && *p != '\n')
			buf_putc(&v, *p == '\t' ? ' ' : *p);
	char *text = buf_detach(&v);
	char *start = text + strspn(text, " ");
	size_t n = strlen(start);
	while (n && start[n - 1] == ' ')
		n--;
	char *out = mem_strndup(start, n);
	free(text);
	return out;
}

static bool in_remove_list(const struct smtpd_policy *p, const char *field, size_t len)
{
	for (size_t i = 0; i < p->nremove_headers; i++)
		if (header_is(field, len, p->remove_headers[i]))
			return true;
	return false;
}

/* Decides what happens to one header field: true keeps it. */
static bool filter_field(struct smtpd_session *s, const char *f, size_t len, bool *has_msgid, bool *has_date)
{
	struct smtpd_txn *t = &s->txn;
	const struct smtpd_policy *p = &s->policy;
	if (header_is(f, len, "Received"))
		t->hops++;
	if (header_is(f, len, "Message-Id"))
		*has_msgid = true;
	if (p->process_x_virtual_mta && header_is(f, len, "X-Virtual-MTA")) {
		free(t->vmta);
		t->vmta = header_value(f, len);
		/* qmgr names queues domain/vmta: a slash cannot be part of a name */
		t->bad_header |= strlen(t->vmta) > SMTPD_NAME_MAX || strchr(t->vmta, '/') != NULL;
		return p->retain_x_virtual_mta;
	}
	const char *job = p->jobid_header ? p->jobid_header : "X-Job";
	if (p->process_x_job && header_is(f, len, job)) {
		free(t->job_id);
		t->job_id = header_value(f, len);
		t->bad_header |= strlen(t->job_id) > SMTPD_NAME_MAX;
		return p->retain_x_job;
	}
	if (p->process_x_envid && header_is(f, len, "X-Envid")) {
		char *v = header_value(f, len);
		if (t->envid == NULL && strlen(v) <= SMTPD_ENVID_MAX)
			t->envid = v;
		else
			free(v);
		return false;
	}
	if (header_is(f, len, "Date")) {
		if (p->add_date_header == SMTPD_DATE_OVERRIDE)
			return false;
		*has_date = true;
	}
	return !in_remove_list(p, f, len);
}

static void message_id(struct smtpd_session *s, struct buf *out)
{
	static unsigned long counter;
	buf_printf(out, "Message-Id: <%lld.%ld.%lu.%lu@%s>\r\n", (long long)time(NULL), (long)getpid(), s->id,
	           ++counter, s->conf->hostname);
}

/* Sends the collected header section (processed) and whatever of the body
 * came with it. */
static void emit_headers(struct smtpd_session *s)
{
	struct smtpd_txn *t = &s->txn;
	struct buf out = BUF_INIT;
	const char *h = t->headers.data ? t->headers.data : "";
	size_t len = t->headers.len, pos = 0;
	bool has_msgid = false, has_date = false, processing = len <= SMTPD_HEADER_MAX;
	if (s->policy.add_received_header)
		received_header(s, &out);
	while (processing && pos < len) {
		/* one field: a line with a colon and its continuation lines */
		const char *f = h + pos;
		const char *colon = memchr(f, ':', len - pos);
		const char *eol = memchr(f, '\n', len - pos);
		if (eol == NULL || colon == NULL || colon > eol || f[0] == ' ' || f[0] == '\t' || f[0] == '\r')
			break;
		size_t flen = (size_t)(eol - f) + 1;
		while (pos + flen < len && (h[pos + flen] == ' ' || h[pos + flen] == '\t')) {
			const char *next = memchr(h + pos + flen, '\n', len - pos - flen);
			if (next == NULL)
				break;
			flen = (size_t)(next - f) + 1;
		}
		if (filter_field(s, f, flen, &has_msgid, &has_date))
			buf_append(&out, f, flen);
		pos += flen;
	}
	if (s->policy.add_message_id_header && !has_msgid)
		message_id(s, &out);
	if (s->policy.add_date_header != SMTPD_DATE_NO && !has_date) {
		buf_puts(&out, "Date: ");
		rfc5322_date(&out);
		buf_puts(&out, "\r\n");
	}
	buf_append(&out, h + pos, len - pos);
	smtpd_enqueue_write(t->enq, out.data ? out.data : "", out.len);
	buf_free(&out);
	buf_reset(&t->headers);
	t->headers_done = true;
}

/* ---- message text ------------------------------------------------------------------ */

static void message_start(struct smtpd_session *s)
{
	struct smtpd_txn *t = &s->txn;
	t->size = 0;
	t->headers_done = false;
	buf_reset(&t->headers);
}

static bool header_section_complete(const struct buf *h)
{
	if (h->len >= 2 && memcmp(h->data, "\r\n", 2) == 0)
		return true;
	return h->len >= 4 && memmem(h->data, h->len, "\r\n\r\n", 4) != NULL;
}

static void message_text(struct smtpd_session *s, const char *p, size_t n)
{
	struct smtpd_txn *t = &s->txn;
	t->size += n;
	if (t->size > s->policy.max_message_size)
		t->too_big = true;
	if (t->too_big || n == 0)
		return;
	if (t->headers_done) {
		smtpd_enqueue_write(t->enq, p, n);
		return;
	}
	buf_append(&t->headers, p, n);
	if (header_section_complete(&t->headers) || t->headers.len > SMTPD_HEADER_MAX)
		emit_headers(s);
}

static void back_to_commands(struct smtpd_session *s)
{
	smtpd_txn_reset(s);
	if (s->state == SMTPD_ST_CLOSING) /* the reply was one error too many */
		return;
	s->state = SMTPD_ST_COMMAND;
	smtpd_session_timeouts(s);
	bufferevent_enable(s->bev, EV_READ);
	if (s->drain_notified)
		smtpd_reply_close(s, "421 4.3.2 Service shutting down, closing connection");
}

static void log_message(struct smtpd_session *s, const char *queue_id)
{
	const struct smtpd_txn *t = &s->txn;
	struct buf rcpts = BUF_INIT;
	for (const struct smtpd_rcpt *r = t->rcpts; r; r = r->next)
		buf_concat(&rcpts, rcpts.len ? ",<" : "<", r->mailbox, ">", NULL);
	log_info("%s: from=<%s> to=%s size=%llu nrcpt=%zu client=[%s] source=%s helo=%s proto=%s tls=%s%s%s auth=%s",
	         queue_id, t->sender.mailbox, buf_cstr(&rcpts), (unsigned long long)t->size, t->nrcpts, s->client_text,
	         s->policy.source, s->helo, smtpd_protocol_name(s), s->tls ? s->tls_protocol : "none",
	         s->tls ? "/" : "", s->tls ? s->tls_cipher : "", s->auth_user ? s->auth_user : "-");
	buf_free(&rcpts);
}

/* qmgr's answer, as the client should see it. */
static void reply_for_queue(struct smtpd_session *s, int code, const char *queue_id, const char *reason)
{
	if (code == 250) {
		s->messages++;
		log_message(s, queue_id);
		smtpd_reply(s, "250 2.0.0 Ok: queued as %s", queue_id);
		return;
	}
	log_warning("session %lu: [%s] message not queued: %d %s", s->id, s->client_text, code,
	            reason ? reason : "queue manager unavailable");
	if (code == 452)
		smtpd_reply(s, "452 4.3.1 Insufficient system storage, try again later");
	else if (code == 552)
		smtpd_reply(s, "552 5.3.4 Message too big for the queue");
	else if (code >= 500 && code < 600)
		smtpd_reply(s, "554 5.3.0 Error: message refused by the queue manager");
	else
		smtpd_reply(s, "451 4.3.0 Error: queue manager unavailable, try again later");
}

static void on_queued(struct smtpd_session *s, int code, const char *queue_id, const char *reason)
{
	s->txn.enq = NULL; /* the enqueue is over and freed */
	reply_for_queue(s, code, queue_id, reason);
	back_to_commands(s);
	smtpd_session_process(s);
}

static bool vmta_exists(const struct smtpd_session *s, const char *name)
{
	const struct conf *conf = s->conf->conf;
	return conf_block_find(conf, CONF_VMTA, name) || conf_block_find(conf, CONF_VMTA_POOL, name);
}

/* The message is complete: refuse it, or hand it over and wait. */
static void message_end(struct smtpd_session *s)
{
	struct smtpd_txn *t = &s->txn;
	if (!t->too_big && !t->headers_done)
		emit_headers(s);
	const char *refusal = NULL;
	if (t->too_big)
		refusal = "552 5.3.4 Message size exceeds fixed limit";
	else if (t->scan.line_too_long)
		refusal = "554 5.6.0 Message has lines longer than 1000 octets";
	else if (t->bad_header)
		refusal = "554 5.6.0 Bad X-Virtual-MTA or job id header";
	else if (t->hops > s->policy.max_hops)
		refusal = "554 5.4.6 Too many hops (mail loop?)";
	else if (t->vmta && s->policy.reject_invalid_vmta && !vmta_exists(s, t->vmta))
		refusal = "554 5.3.5 Unknown virtual MTA in X-Virtual-MTA";
	if (refusal) {
		log_info("session %lu: [%s] message refused: %s", s->id, s->client_text, refusal + 10);
		smtpd_reply(s, "%s", refusal);
		back_to_commands(s);
		return;
	}
	/* reading stays on: what comes before qmgr answers waits, unread
	 * (on_read, on_event) */
	s->state = SMTPD_ST_WAIT;
	struct smtpd_enqueue *e = t->enq;
	smtpd_enqueue_finish(e, on_queued);
}

/* ---- DATA -------------------------------------------------------------------------- */

void smtpd_data_begin(struct smtpd_session *s)
{
	smtpd_scan_init(&s->txn.scan);
	message_start(s);
	s->state = SMTPD_ST_DATA;
	smtpd_session_timeouts(s);
}

size_t smtpd_data_input(struct smtpd_session *s, const char *in, size_t len)
{
	static struct buf text; /* one process, one loop: a shared scratch buffer */
	size_t used;
	buf_reset(&text);
	enum smtpd_scan_result r = smtpd_scan_data(&s->txn.scan, in, len, &used, &text);
	message_text(s, text.data, text.len);
	switch (r) {
	case SMTPD_SCAN_MORE:
		break;
	case SMTPD_SCAN_END:
		message_end(s);
		break;
	case SMTPD_SCAN_BARE_LF:
	case SMTPD_SCAN_BARE_CR:
		/* Another MTA may read this as the end of the message: anything we
		 * would do next could differ from what it does, so we stop. */
		log_info("session %lu: [%s] bare %s in message text, closing", s->id, s->client_text,
		         r == SMTPD_SCAN_BARE_LF ? "LF" : "CR");
		smtpd_txn_reset(s);
		smtpd_reply_close(s, "521 5.5.2 %s Error: bare <%s> received", s->conf->hostname,
		                  r == SMTPD_SCAN_BARE_LF ? "LF" : "CR");
		return len;
	}
	return used;
}

/* ---- BDAT (RFC 3030) ------------------------------------------------------------------ */

static void bdat_chunk_done(struct smtpd_session *s)
{
	struct smtpd_txn *t = &s->txn;
	s->state = SMTPD_ST_COMMAND;
	smtpd_session_timeouts(s);
	if (t->bdat_discard)
		return;
	if (t->bdat_last) {
		message_end(s);
		return;
	}
	smtpd_reply(s, "250 2.0.0 Ok: %llu octets received", (unsigned long long)t->size);
}

void smtpd_bdat_begin(struct smtpd_session *s, uint64_t size, bool last, bool discard)
{
	struct smtpd_txn *t = &s->txn;
	if (!discard && !t->bdat) {
		t->bdat = true;
		smtpd_scan_init(&t->scan);
		message_start(s);
	}
	t->bdat_left = size;
	t->bdat_last = last;
	t->bdat_discard = discard;
	s->state = SMTPD_ST_BDAT;
	smtpd_session_timeouts(s);
	if (size == 0)
		bdat_chunk_done(s);
}

size_t smtpd_bdat_input(struct smtpd_session *s, const char *in, size_t len)
{
	struct smtpd_txn *t = &s->txn;
	size_t n = len < t->bdat_left ? len : (size_t)t->bdat_left;
	if (!t->bdat_discard)
		message_text(s, in, n);
	t->bdat_left -= n;
	if (t->bdat_left == 0)
		bdat_chunk_done(s);
	return n;
}
