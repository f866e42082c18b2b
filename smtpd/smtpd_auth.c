/* smtpd_auth.c: SMTP AUTH (RFC 4954) with PLAIN, LOGIN and EXTERNAL
 * (a verified client certificate), checked against <smtp-user> blocks;
 * the <source> rules that decide when AUTH is offered and allowed; and
 * the failure-rate throttle.  Passwords are wiped after use and never
 * logged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <bsd/string.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "smtpd.h"

enum { AUTH_NONE, AUTH_PLAIN, AUTH_LOGIN };

/* ---- the failure throttle ---------------------------------------------------------- */

#define THROTTLE_SLOTS 1024

struct failures {
	struct addr_ip ip;
	time_t window_start;
	uint64_t count;
};

/* A small table of recent failures by client IP; the oldest window is
 * replaced when it is full.  Enough to slow a guesser down, cheap to keep. */
static struct failures failure_table[THROTTLE_SLOTS];

static struct failures *failures_of(const struct addr_ip *ip, bool create)
{
	struct failures *oldest = &failure_table[0];
	for (size_t i = 0; i < THROTTLE_SLOTS; i++) {
		struct failures *f = &failure_table[i];
		if (f->ip.family && addr_ip_equal(&f->ip, ip))
			return f;
		if (f->window_start < oldest->window_start)
			oldest = f;
	}
	if (!create)
		return NULL;
	memset(oldest, 0, sizeof(*oldest));
	oldest->ip = *ip;
	return oldest;
}

bool smtpd_auth_throttled(const struct smtpd_session *s)
{
	const struct value_rate *rate = &s->policy.auth_failure_rate;
	if (rate->count == VALUE_UNLIMITED || rate->count == 0 || rate->per_seconds <= 0)
		return false;
	struct failures *f = failures_of(&s->client_ip, false);
	return f && time(NULL) - f->window_start < rate->per_seconds && f->count >= rate->count;
}

static void note_failure(const struct smtpd_session *s)
{
	const struct value_rate *rate = &s->policy.auth_failure_rate;
	struct failures *f = failures_of(&s->client_ip, true);
	time_t now = time(NULL);
	if (now - f->window_start >= (rate->per_seconds > 0 ? rate->per_seconds : 1)) {
		f->window_start = now;
		f->count = 0;
	}
	f->count++;
}

/* ---- what is offered --------------------------------------------------------------- */

static bool plain_allowed(const struct smtpd_session *s)
{
	return s->tls || s->policy.allow_unencrypted_plain_auth;
}

/* A verified client certificate that belongs to a certificate user. */
static const char *certificate_user(const struct smtpd_session *s)
{
	if (!s->tls || !s->tls_verified)
		return NULL;
	X509 *peer = SSL_get0_peer_certificate(s->ssl);
	if (peer == NULL)
		return NULL;
	const struct conf *conf = s->conf->conf;
	for (size_t i = 0; i < conf_block_count(conf, CONF_SMTP_USER); i++) {
		const struct conf_block *b = conf_block_at(conf, CONF_SMTP_USER, i);
		const struct conf_settings *us = conf_block_settings(b);
		const char *method = conf_get_string(us, "authentication-method");
		const struct conf_value *cert = conf_get_value(us, "tls-certificate");
		if (method == NULL || strcasecmp(method, "certificate") != 0 || cert == NULL || cert->unset ||
		    cert->string == NULL)
			continue;
		FILE *f = fopen(cert->string, "r");
		if (f == NULL) {
			log_warning("smtp-user %s: cannot read %s", conf_block_name(b), cert->string);
			continue;
		}
		X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
		bool same = x && X509_cmp(x, peer) == 0;
		X509_free(x);
		if (same)
			return conf_block_name(b);
	}
	return NULL;
}

void smtpd_auth_mechanisms(const struct smtpd_session *s, struct buf *out)
{
	if (!s->policy.allow_auth || s->auth_user)
		return;
	if (!s->tls && s->policy.require_starttls_before_auth)
		return;
	if (plain_allowed(s))
		buf_puts(out, "PLAIN LOGIN");
	if (certificate_user(s))
		buf_printf(out, "%sEXTERNAL", out->len ? " " : "");
}

/* ---- checking credentials ------------------------------------------------------------- */

/* The user's own <source>, else {auth} when it exists, applies after AUTH. */
static void apply_user_source(struct smtpd_session *s, const struct conf_settings *us)
{
	const char *name = conf_get_string(us, "source");
	if (name == NULL && conf_block_find(s->conf->conf, CONF_SOURCE, "{auth}"))
		name = "{auth}";
	if (name == NULL)
		return;
	struct smtpd_policy p;
	if (!smtpd_policy_resolve(s->conf, &s->client_ip, name, &p)) {
		log_warning("smtp-user %s names source \"%s\", which does not exist", s->auth_user, name);
		return;
	}
	smtpd_policy_free(&s->policy);
	s->policy = p;
}

static void auth_ok(struct smtpd_session *s, const char *user, const char *mech)
{
	s->auth_user = mem_strdup(user);
	const struct conf_block *b = conf_block_find(s->conf->conf, CONF_SMTP_USER, user);
	if (b)
		apply_user_source(s, conf_block_settings(b));
	log_info("session %lu: [%s] authenticated as %s (%s)", s->id, s->client_text, user, mech);
	smtpd_reply(s, "235 2.7.0 Authentication successful");
}

static void auth_failed(struct smtpd_session *s, const char *user, const char *mech)
{
	note_failure(s);
	struct buf name = BUF_INIT;
	smtpd_log_safe(user ? user : "", 64, &name);
	log_info("session %lu: [%s] authentication failed for \"%s\" (%s)", s->id, s->client_text, buf_cstr(&name),
	         mech);
	buf_free(&name);
	smtpd_reply(s, "535 5.7.8 Authentication credentials invalid");
}

static bool password_matches(const struct smtpd_session *s, const char *user, const char *password)
{
	const struct conf_block *b = conf_block_find(s->conf->conf, CONF_SMTP_USER, user);
	if (b == NULL)
		return false;
	const struct conf_settings *us = conf_block_settings(b);
	const char *method = conf_get_string(us, "authentication-method");
	const char *secret = conf_get_string(us, "password");
	if (secret == NULL || (method && strcasecmp(method, "password") != 0))
		return false;
	size_t a = strlen(secret), p = strlen(password);
	return a == p && CRYPTO_memcmp(secret, password, a) == 0;
}

static void check_password(struct smtpd_session *s, const char *user, const char *password, const char *mech)
{
	if (password_matches(s, user, password))
		auth_ok(s, user, mech);
	else
		auth_failed(s, user, mech);
}

/* PLAIN: authzid NUL authcid NUL password (RFC 4616). */
static void finish_plain(struct smtpd_session *s, const struct buf *msg)
{
	const char *p = msg->data ? msg->data : "";
	const char *nul1 = memchr(p, '\0', msg->len);
	const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', msg->len - (size_t)(nul1 + 1 - p)) : NULL;
	if (nul2 == NULL || memchr(nul2 + 1, '\0', msg->len - (size_t)(nul2 + 1 - p))) {
		note_failure(s);
		smtpd_reply(s, "501 5.5.2 Malformed PLAIN response");
		return;
	}
	const char *authzid = p, *authcid = nul1 + 1, *password = nul2 + 1;
	if (*authzid && strcmp(authzid, authcid) != 0) {
		auth_failed(s, authcid, "PLAIN");
		return;
	}
	check_password(s, authcid, password, "PLAIN");
}

static void wipe(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

/* Decodes a base64 response; "=" is the empty initial response. */
static bool decode_response(struct smtpd_session *s, const char *text, struct buf *out)
{
	if (strcmp(text, "=") == 0)
		return true;
	if (smtpd_base64_decode(text, strlen(text), out))
		return true;
	smtpd_reply(s, "501 5.5.2 Cannot decode response");
	return false;
}

static void end_exchange(struct smtpd_session *s)
{
	s->state = SMTPD_ST_COMMAND;
	s->auth_mech = AUTH_NONE;
	s->auth_step = 0;
	if (s->auth_login_user) {
		mem_free_secret(s->auth_login_user);
		s->auth_login_user = NULL;
	}
}

void smtpd_auth_cancel(struct smtpd_session *s, const char *reply)
{
	end_exchange(s);
	smtpd_reply(s, "%s", reply);
}

void smtpd_auth_response(struct smtpd_session *s, char *line)
{
	if (strcmp(line, "*") == 0) {
		smtpd_auth_cancel(s, "501 5.7.0 Authentication cancelled");
		return;
	}
	struct buf msg = BUF_INIT;
	int mech = s->auth_mech;
	if (!decode_response(s, line, &msg)) {
		end_exchange(s);
		explicit_bzero(line, strlen(line));
		return;
	}
	explicit_bzero(line, strlen(line));
	if (mech == AUTH_PLAIN) {
		end_exchange(s);
		finish_plain(s, &msg);
	} else if (s->auth_step == 0) {
		/* LOGIN: the user name came, the password is next */
		s->auth_login_user = mem_strndup(msg.data ? msg.data : "", msg.len);
		s->auth_step = 1;
		smtpd_reply(s, "334 UGFzc3dvcmQ6");
	} else {
		char *user = mem_strdup(s->auth_login_user);
		end_exchange(s);
		check_password(s, user, msg.data ? msg.data : "", "LOGIN");
		free(user);
	}
	wipe(&msg);
}

static void auth_external(struct smtpd_session *s, const char *initial)
{
	const char *user = certificate_user(s);
	if (user == NULL) {
		auth_failed(s, NULL, "EXTERNAL");
		return;
	}
	struct buf authzid = BUF_INIT;
	if (initial && strcmp(initial, "=") != 0 && !smtpd_base64_decode(initial, strlen(initial), &authzid)) {
		smtpd_reply(s, "501 5.5.2 Cannot decode response");
		return;
	}
	if (authzid.len && strcmp(buf_cstr(&authzid), user) != 0)
		auth_failed(s, buf_cstr(&authzid), "EXTERNAL");
	else
		auth_ok(s, user, "EXTERNAL");
	buf_free(&authzid);
}

/* Why AUTH cannot be used now; NULL when it can. */
static const char *auth_refusal(const struct smtpd_session *s)
{
	if (!s->policy.allow_auth)
		return "502 5.5.1 Error: authentication not enabled";
	if (s->helo == NULL || !s->esmtp)
		return "503 5.5.1 Error: send EHLO first";
	if (s->auth_user)
		return "503 5.5.1 Error: already authenticated";
	if (s->txn.active)
		return "503 5.5.1 Error: AUTH not allowed during a mail transaction";
	if (!s->tls && s->policy.require_starttls_before_auth)
		return "530 5.7.0 Must issue a STARTTLS command first";
	if (smtpd_auth_throttled(s))
		return "454 4.7.0 Too many authentication failures, try again later";
	return NULL;
}

void smtpd_auth_command(struct smtpd_session *s, char *args)
{
	const char *refusal = auth_refusal(s);
	if (refusal) {
		smtpd_reply(s, "%s", refusal);
		return;
	}
	char *initial = strchr(args, ' ');
	if (initial)
		*initial++ = '\0';
	if (strcasecmp(args, "EXTERNAL") == 0) {
		auth_external(s, initial);
		return;
	}
	int mech = strcasecmp(args, "PLAIN") == 0   ? AUTH_PLAIN
	           : strcasecmp(args, "LOGIN") == 0 ? AUTH_LOGIN
	                                            : AUTH_NONE;
	if (mech == AUTH_NONE) {
		smtpd_reply(s, "504 5.5.4 Unrecognized authentication type");
		return;
	}
	if (!plain_allowed(s)) {
		smtpd_reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
		return;
	}
	s->auth_mech = mech;
	s->auth_step = 0;
	s->state = SMTPD_ST_AUTH;
	if (initial) {
		smtpd_auth_response(s, initial);
		return;
	}
	smtpd_reply(s, mech == AUTH_PLAIN ? "334 " : "334 VXNlcm5hbWU6");
}
