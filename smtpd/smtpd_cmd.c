/* smtpd_cmd.c: the SMTP commands (RFC 5321 and its extensions) - what
 * each one checks, what it changes in the session, and the reply.  The
 * order of the checks follows the RFCs: sequence errors (503) before
 * syntax details, policy (530, 5.7.x) before the transaction changes. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mem.h"
#include "smtpd.h"

/* ---- the transaction ------------------------------------------------------------- */

void smtpd_txn_reset(struct smtpd_session *s)
{
	struct smtpd_txn *t = &s->txn;
	if (t->enq)
		smtpd_enqueue_abort(t->enq);
	mail_addr_free(&t->sender);
	free(t->body_type);
	free(t->envid);
	free(t->ret);
	free(t->vmta);
	free(t->job_id);
	for (struct smtpd_rcpt *r = t->rcpts, *next; r; r = next) {
		next = r->next;
		free(r->mailbox);
		free(r->notify);
		free(r->orcpt);
		free(r);
	}
	struct buf headers = t->headers;
	buf_reset(&headers);
	memset(t, 0, sizeof(*t));
	t->headers = headers;
	t->rcpt_tail = &t->rcpts;
}

const char *smtpd_protocol_name(const struct smtpd_session *s)
{
	/* RFC 3848 */
	if (!s->esmtp)
		return "SMTP";
	if (s->tls)
		return s->auth_user ? "ESMTPSA" : "ESMTPS";
	return s->auth_user ? "ESMTPA" : "ESMTP";
}

/* ---- EHLO and HELO ------------------------------------------------------------------ */

static bool starttls_offered(const struct smtpd_session *s)
{
	return !s->tls && s->policy.allow_starttls && s->listener->ssl_ctx != NULL;
}

void smtpd_ehlo_reply(struct smtpd_session *s)
{
	struct buf r = BUF_INIT;
	buf_printf(&r, "250 %s Hello [%s]", s->conf->hostname, s->client_text);
	buf_puts(&r, "\nPIPELINING");
	if (s->policy.max_message_size != VALUE_UNLIMITED)
		buf_printf(&r, "\nSIZE %llu", (unsigned long long)s->policy.max_message_size);
	else
		buf_puts(&r, "\nSIZE");
	buf_puts(&r, "\n8BITMIME\nENHANCEDSTATUSCODES\nDSN");
	if (s->policy.allow_smtputf8)
		buf_puts(&r, "\nSMTPUTF8");
	if (s->policy.allow_chunking)
		buf_puts(&r, "\nCHUNKING");
	if (starttls_offered(s))
		buf_puts(&r, "\nSTARTTLS");
	struct buf mechs = BUF_INIT;
	smtpd_auth_mechanisms(s, &mechs);
	if (mechs.len)
		buf_printf(&r, "\nAUTH %s", buf_cstr(&mechs));
	buf_free(&mechs);
	buf_puts(&r, "\nHELP");
	smtpd_reply(s, "%s", buf_cstr(&r));
	buf_free(&r);
}

/* The argument of EHLO/HELO: a domain or an address literal.  Clients get
 * this wrong often enough that only what would break a header is refused. */
static bool helo_ok(const char *arg)
{
	if (*arg == '\0' || strlen(arg) > SMTPD_DOMAIN_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)arg; *p; p++)
		if (*p <= ' ' || *p >= 127 || *p == '(' || *p == ')')
			return false;
	return true;
}

static void cmd_helo(struct smtpd_session *s, char *arg, bool esmtp)
{
	if (!helo_ok(arg)) {
		smtpd_reply(s, "501 5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	smtpd_txn_reset(s);
	free(s->helo);
	s->helo = mem_strdup(arg);
	s->esmtp = esmtp;
	if (esmtp)
		smtpd_ehlo_reply(s);
	else
		smtpd_reply(s, "250 %s", s->conf->hostname);
}

/* ---- MAIL ---------------------------------------------------------------------------- */

/* Checks that apply before any transaction may start. */
static bool may_start_mail(struct smtpd_session *s)
{
	if (s->helo == NULL) {
		smtpd_reply(s, "503 5.5.1 Error: send HELO/EHLO first");
		return false;
	}
	if (s->txn.active) {
		smtpd_reply(s, "503 5.5.1 Error: nested MAIL command");
		return false;
	}
	if (s->policy.require_client_certificate && !(s->tls && s->tls_verified)) {
		smtpd_reply(s, "530 5.7.0 %s",
		            s->tls ? "A valid client certificate is required" : "Must issue a STARTTLS command first");
		return false;
	}
	if (s->policy.require_auth && s->auth_user == NULL) {
		smtpd_reply(s, "530 5.7.0 Authentication required");
		return false;
	}
	if (s->drain_notified) {
		smtpd_reply_close(s, "421 4.3.2 Service shutting down, closing connection");
		return false;
	}
	return true;
}

/* "FROM:" or "TO:", any case, then the path; one space after the colon
 * is tolerated because many clients send it. */
static char *after_keyword(char *arg, const char *kw)
{
	size_t n = strlen(kw);
	if (strncasecmp(arg, kw, n) != 0)
		return NULL;
	arg += n;
	if (*arg == ' ')
		arg++;
	return arg;
}

static bool mail_param(struct smtpd_session *s, const struct smtpd_param *p)
{
	struct smtpd_txn *t = &s->txn;
	const char *k = p->keyword, *v = p->value;
	if (strcasecmp(k, "SIZE") == 0) {
		if (v == NULL || strlen(v) > 19 || strspn(v, "0123456789") != strlen(v)) {
			smtpd_reply(s, "501 5.5.4 Bad SIZE parameter");
			return false;
		}
		t->declared_size = strtoull(v, NULL, 10);
		if (t->declared_size > s->policy.max_message_size) {
			smtpd_reply(s, "552 5.3.4 Message size exceeds fixed limit");
			return false;
		}
	} else if (strcasecmp(k, "BODY") == 0) {
		if (v == NULL || (strcasecmp(v, "7BIT") != 0 && strcasecmp(v, "8BITMIME") != 0)) {
			smtpd_reply(s, "501 5.5.4 Bad BODY parameter");
			return false;
		}
		t->body_type = mem_strdup(v);
		for (char *c = t->body_type; *c; c++)
			*c = (char)toupper((unsigned char)*c);
	} else if (strcasecmp(k, "RET") == 0) {
		if (v == NULL || (strcasecmp(v, "FULL") != 0 && strcasecmp(v, "HDRS") != 0)) {
			smtpd_reply(s, "501 5.5.4 Bad RET parameter");
			return false;
		}
		t->ret = mem_strdup(strcasecmp(v, "FULL") == 0 ? "FULL" : "HDRS");
	} else if (strcasecmp(k, "ENVID") == 0) {
		struct buf decoded = BUF_INIT;
		bool ok = v && strlen(v) <= SMTPD_ENVID_MAX && smtpd_xtext_valid(v) && smtpd_xtext_decode(v, &decoded);
		if (!ok) {
			buf_free(&decoded);
			smtpd_reply(s, "501 5.5.4 Bad ENVID parameter");
			return false;
		}
		t->envid = buf_detach(&decoded);
	} else if (strcasecmp(k, "SMTPUTF8") == 0 && s->policy.allow_smtputf8) {
		if (v != NULL) {
			smtpd_reply(s, "501 5.5.4 SMTPUTF8 takes no value");
			return false;
		}
		t->smtputf8 = true;
	} else if (strcasecmp(k, "AUTH") == 0) {
		/* RFC 4954 section 5: accepted, and not trusted */
		if (v == NULL || (strcmp(v, "<>") != 0 && !smtpd_xtext_valid(v))) {
			smtpd_reply(s, "501 5.5.4 Bad AUTH parameter");
			return false;
		}
	} else {
		smtpd_reply(s, "555 5.5.4 Unsupported parameter %s", k);
		return false;
	}
	return true;
}

static void cmd_mail(struct smtpd_session *s, char *arg)
{
	if (!may_start_mail(s))
		return;
	char *path = after_keyword(arg, "FROM:");
	if (path == NULL) {
		smtpd_reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
		return;
	}
	const char *p = path, *why = NULL;
	struct smtpd_txn *t = &s->txn;
	smtpd_txn_reset(s);
	if (!mail_addr_parse_path(&p, true, false, s->policy.allow_smtputf8, &t->sender, &why)) {
		smtpd_reply(s, "501 5.1.7 Bad sender address syntax: %s", why);
		return;
	}
	char *rest = mem_strdup(p);
	struct smtpd_param params[SMTPD_PARAMS_MAX];
	size_t n;
	bool ok = smtpd_parse_params(rest, params, &n, &why);
	if (!ok)
		smtpd_reply(s, "501 5.5.4 %s", why);
	for (size_t i = 0; ok && i < n; i++)
		ok = mail_param(s, &params[i]);
	free(rest);
	if (ok && t->sender.utf8 && !t->smtputf8) {
		smtpd_reply(s, "553 5.6.7 This address needs the SMTPUTF8 parameter");
		ok = false;
	}
	if (!ok) {
		smtpd_txn_reset(s);
		return;
	}
	t->active = true;
	smtpd_reply(s, "250 2.1.0 Ok");
}

/* ---- RCPT ---------------------------------------------------------------------------- */

static bool rcpt_param(struct smtpd_session *s, const struct smtpd_param *p, struct smtpd_rcpt *r)
{
	struct buf out = BUF_INIT;
	if (strcasecmp(p->keyword, "NOTIFY") == 0) {
		if (p->value == NULL || !smtpd_parse_notify(p->value, &out)) {
			buf_free(&out);
			smtpd_reply(s, "501 5.5.4 Bad NOTIFY parameter");
			return false;
		}
		r->notify = buf_detach(&out);
	} else if (strcasecmp(p->keyword, "ORCPT") == 0) {
		if (p->value == NULL || !smtpd_parse_orcpt(p->value, &out)) {
			buf_free(&out);
			smtpd_reply(s, "501 5.5.4 Bad ORCPT parameter");
			return false;
		}
		r->orcpt = buf_detach(&out);
	} else {
		smtpd_reply(s, "555 5.5.4 Unsupported parameter %s", p->keyword);
		return false;
	}
	return true;
}

static void free_rcpt(struct smtpd_rcpt *r)
{
	free(r->mailbox);
	free(r->notify);
	free(r->orcpt);
	free(r);
}

static void cmd_rcpt(struct smtpd_session *s, char *arg)
{
	struct smtpd_txn *t = &s->txn;
	if (!t->active) {
		smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	char *path = after_keyword(arg, "TO:");
	if (path == NULL) {
		smtpd_reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
		return;
	}
	if (t->nrcpts >= s->policy.max_rcpt) {
		smtpd_reply(s, "452 4.5.3 Too many recipients");
		return;
	}
	const char *p = path, *why = NULL;
	struct mail_addr rcpt;
	if (!mail_addr_parse_path(&p, false, true, s->policy.allow_smtputf8, &rcpt, &why)) {
		smtpd_reply(s, "501 5.1.3 Bad recipient address syntax: %s", why);
		return;
	}
	struct smtpd_rcpt *r = mem_zalloc(sizeof(*r));
	char *rest = mem_strdup(p);
	struct smtpd_param params[SMTPD_PARAMS_MAX];
	size_t n;
	bool ok = smtpd_parse_params(rest, params, &n, &why);
	if (!ok)
		smtpd_reply(s, "501 5.5.4 %s", why);
	for (size_t i = 0; ok && i < n; i++)
		ok = rcpt_param(s, &params[i], r);
	free(rest);
	if (ok && rcpt.utf8 && !t->smtputf8) {
		smtpd_reply(s, "553 5.6.7 This address needs SMTPUTF8 in MAIL");
		ok = false;
	}
	const char *denied = ok ? smtpd_relay_check(s, &rcpt) : NULL;
	if (denied) {
		log_info("session %lu: [%s] relay denied: from=<%s> to=<%s> source=%s", s->id, s->client_text,
		         t->sender.mailbox, rcpt.mailbox, s->policy.source);
		smtpd_reply(s, "%s", denied);
		ok = false;
	}
	if (!ok) {
		mail_addr_free(&rcpt);
		free_rcpt(r);
		return;
	}
	r->mailbox = mem_strdup(rcpt.mailbox);
	mail_addr_free(&rcpt);
	*t->rcpt_tail = r;
	t->rcpt_tail = &r->next;
	t->nrcpts++;
	smtpd_reply(s, "250 2.1.5 Ok");
}

/* ---- DATA and BDAT --------------------------------------------------------------------- */

static bool open_enqueue(struct smtpd_session *s)
{
	struct buf err = BUF_INIT;
	s->txn.enq = smtpd_enqueue_open(s, &err);
	if (s->txn.enq == NULL) {
		log_warning("session %lu: [%s] queue manager unavailable: %s", s->id, s->client_text, buf_cstr(&err));
		smtpd_reply(s, "451 4.3.0 Queue manager unavailable, try again later");
	}
	buf_free(&err);
	return s->txn.enq != NULL;
}

static void cmd_data(struct smtpd_session *s, char *arg)
{
	struct smtpd_txn *t = &s->txn;
	if (*arg) {
		smtpd_reply(s, "501 5.5.4 Syntax: DATA");
		return;
	}
	if (!t->active) {
		smtpd_reply(s, "503 5.5.1 Error: need MAIL command");
		return;
	}
	if (t->bdat) {
		smtpd_reply(s, "503 5.5.1 Error: DATA inside a BDAT transaction");
		return;
	}
	if (t->nrcpts == 0) {
		smtpd_reply(s, "554 5.5.1 Error: no valid recipients");
		return;
	}
	if (!open_enqueue(s))
		return;
	smtpd_reply(s, "354 End data with <CR><LF>.<CR><LF>");
	smtpd_data_begin(s);
}

static void cmd_bdat(struct smtpd_session *s, char *arg)
{
	char *end;
	errno = 0;
	bool last = false;
	unsigned long long size = isdigit((unsigned char)*arg) ? strtoull(arg, &end, 10) : 0;
	if (!isdigit((unsigned char)*arg) || errno || (*end && *end != ' '))
		goto syntax;
	while (*end == ' ')
		end++;
	if (strcasecmp(end, "LAST") == 0)
		last = true;
	else if (*end)
		goto syntax;
	/* From here on the chunk follows whatever we answer: it is read, and
	 * dropped when the command cannot be accepted. */
	struct smtpd_txn *t = &s->txn;
	const char *refusal = NULL;
	if (!s->policy.allow_chunking)
		refusal = "502 5.5.1 Error: command not implemented";
	else if (!t->active)
		refusal = "503 5.5.1 Error: need MAIL command";
	else if (t->nrcpts == 0)
		refusal = "554 5.5.1 Error: no valid recipients";
	if (refusal) {
		smtpd_reply(s, "%s", refusal);
		smtpd_bdat_begin(s, size, last, true);
		return;
	}
	if (!t->bdat && !open_enqueue(s)) {
		/* the 451 is sent; later chunks of this message get 503 */
		smtpd_txn_reset(s);
		smtpd_bdat_begin(s, size, last, true);
		return;
	}
	smtpd_bdat_begin(s, size, last, false);
	return;
syntax:
	/* Without a size we cannot tell where the chunk ends. */
	smtpd_reply_close(s, "501 5.5.4 Syntax: BDAT size [LAST]; closing connection");
}

/* ---- the other commands ---------------------------------------------------------------- */

static void cmd_starttls(struct smtpd_session *s, char *arg)
{
	if (*arg) {
		smtpd_reply(s, "501 5.5.4 Syntax: STARTTLS");
		return;
	}
	if (s->tls) {
		smtpd_reply(s, "503 5.5.1 Error: TLS already active");
		return;
	}
	if (!starttls_offered(s)) {
		smtpd_reply(s, "502 5.5.1 Error: command not implemented");
		return;
	}
	smtpd_reply(s, "220 2.0.0 Ready to start TLS");
	smtpd_session_starttls(s);
}

static void cmd_simple(struct smtpd_session *s, const char *verb, char *arg)
{
	if (strcasecmp(verb, "RSET") == 0) {
		if (*arg) {
			smtpd_reply(s, "501 5.5.4 Syntax: RSET");
			return;
		}
		smtpd_txn_reset(s);
		smtpd_reply(s, "250 2.0.0 Ok");
		if (s->drain_notified)
			smtpd_reply_close(s, "421 4.3.2 Service shutting down, closing connection");
	} else if (strcasecmp(verb, "NOOP") == 0) {
		smtpd_reply(s, "250 2.0.0 Ok");
	} else if (strcasecmp(verb, "QUIT") == 0) {
		smtpd_reply_close(s, "221 2.0.0 Bye");
	} else if (strcasecmp(verb, "VRFY") == 0) {
		if (*arg == '\0')
			smtpd_reply(s, "501 5.5.4 Syntax: VRFY address");
		else
			smtpd_reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
	} else if (strcasecmp(verb, "EXPN") == 0) {
		smtpd_reply(s, "502 5.5.1 Error: command not implemented");
	} else if (strcasecmp(verb, "HELP") == 0) {
		smtpd_reply(s, "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS "
		               "AUTH\nSee RFC 5321");
	} else {
		smtpd_reply(s, "500 5.5.2 Error: command not recognized");
	}
}

static void log_command(struct smtpd_session *s, const char *line)
{
	if (!s->policy.log_commands)
		return;
	struct buf text = BUF_INIT;
	if (strncasecmp(line, "AUTH ", 5) == 0) {
		/* "AUTH PLAIN <secret>": the mechanism only */
		const char *sp = strchr(line + 5, ' ');
		char *mech = mem_strndup(line, sp ? (size_t)(sp - line) : strlen(line));
		smtpd_log_safe(mech, 64, &text);
		if (sp)
			buf_puts(&text, " ********");
		free(mech);
	} else {
		smtpd_log_safe(line, SMTPD_COMMAND_LINE_MAX, &text);
	}
	log_info("session %lu: < %s", s->id, buf_cstr(&text));
	buf_free(&text);
}

void smtpd_cmd_line(struct smtpd_session *s, char *line, size_t len)
{
	log_command(s, line);
	char *sp = strchr(line, ' ');
	char *arg = sp ? sp + 1 : line + len;
	if (sp)
		*sp = '\0';
	const char *verb = line;
	if (strcasecmp(verb, "EHLO") == 0)
		cmd_helo(s, arg, true);
	else if (strcasecmp(verb, "HELO") == 0)
		cmd_helo(s, arg, false);
	else if (strcasecmp(verb, "MAIL") == 0)
		cmd_mail(s, arg);
	else if (strcasecmp(verb, "RCPT") == 0)
		cmd_rcpt(s, arg);
	else if (strcasecmp(verb, "DATA") == 0)
		cmd_data(s, arg);
	else if (strcasecmp(verb, "BDAT") == 0)
		cmd_bdat(s, arg);
	else if (strcasecmp(verb, "STARTTLS") == 0)
		cmd_starttls(s, arg);
	else if (strcasecmp(verb, "AUTH") == 0)
		smtpd_auth_command(s, arg);
	else
		cmd_simple(s, verb, arg);
}
