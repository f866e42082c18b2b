/* smtpd_session.c: one SMTP session's input and output on the event
 * loop - the greeting, reading command lines and message text from a
 * bufferevent, sending replies, timeouts, STARTTLS and implicit TLS, and
 * closing.  What a command means is smtpd_cmd.c's business; this file
 * only decides what the bytes are. */
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bev_write.h"
#include "log.h"
#include "mem.h"
#include "smtpd.h"
#include "tls.h"

/* A session that keeps sending bad commands is not a client. */
#define SMTPD_MAX_ERRORS 20
/* Time for the last reply to leave before the socket is closed anyway. */
#define SMTPD_CLOSE_SECONDS 10
/* Message text queued towards qmgr beyond which the client is not read:
 * a slow qmgr must not make smtpd buffer whole messages. */
#define SMTPD_ENQUEUE_HIGH (1024 * 1024)
/* Replies waiting for a client that does not read them: beyond the high
 * mark its commands are not read either, until the replies drain to the
 * low mark.  Pipelining cannot make smtpd buffer without bound. */
#define SMTPD_OUTPUT_HIGH (64 * 1024)
#define SMTPD_OUTPUT_LOW (16 * 1024)

static void on_read(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static bool held_until_reply(struct smtpd_session *s);
static void session_free(struct smtpd_session *s);

/* ---- replies ------------------------------------------------------------------ */

static void log_reply(struct smtpd_session *s, const char *text, size_t len)
{
	if (s->policy.log_commands)
		log_info("session %lu: > %.*s", s->id, (int)len, text);
}

/* Replies made while the client's input is processed wait in s->replies
 * and reach the bufferevent together, so that after STARTTLS the TLS
 * layer makes one record of a pipelined group's replies, not one each. */
static void release_replies(struct smtpd_session *s)
{
	if (s->replies.len == 0)
		return;
	evbuffer_add(bufferevent_get_output(s->bev), s->replies.data, s->replies.len);
	buf_reset(&s->replies);
}

/* A TLS bufferevent on a socket encrypts and writes its output only
 * once the loop finds the socket writable (libevent 2.1 writes at once
 * only for filters): an epoll_ctl pair and a turn of the loop per group
 * of replies.  So its output is written here, as bev_write_now() does
 * for a plain socket: SSL_write now, and EV_WRITE left enabled only for
 * what the socket could not take, which libevent then writes (starting
 * from the same bytes, as OpenSSL wants a retried write to) or whose
 * error it reports. */
static void tls_write_now(struct smtpd_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	bool wrote = false;
	struct evbuffer_iovec first;
	while (evbuffer_peek(out, -1, NULL, &first, 1) > 0 && first.iov_len > 0) {
		ERR_clear_error();
		int n = SSL_write(s->ssl, first.iov_base, first.iov_len > INT_MAX ? INT_MAX : (int)first.iov_len);
		if (n <= 0)
			break;
		evbuffer_drain(out, (size_t)n);
		wrote = true;
	}
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(s->bev, EV_WRITE);
	else
		bufferevent_disable(s->bev, EV_WRITE);
	if (wrote)
		bufferevent_trigger(s->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

/* The session's output goes to the socket now, plain or TLS. */
static void write_output_now(struct smtpd_session *s)
{
	if (s->plain_bev)
		bev_write_now(s->bev);
	else if (s->ssl)
		tls_write_now(s);
}

/* Replies reach the client in this turn of the loop.  A closing
 * session's last reply (its write callback closes the session) and
 * replies the client is not reading are left to libevent, with EV_WRITE
 * enabled. */
static void send_replies_now(struct smtpd_session *s)
{
	release_replies(s);
	if (s->state == SMTPD_ST_CLOSING || s->out_held)
		return;
	write_output_now(s);
}

/* text is "CODE rest" with '\n' between lines of a multi-line reply. */
static void send_reply(struct smtpd_session *s, const char *text)
{
	size_t len = strlen(text);
	const char *line = text + (len > 3 ? 4 : 3), *end = text + len;
	for (;;) {
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		buf_append(&s->replies, text, 3); /* the code on every line */
		buf_putc(&s->replies, nl ? '-' : ' ');
		buf_append(&s->replies, line, (size_t)((nl ? nl : end) - line));
		buf_append(&s->replies, "\r\n", 2);
		if (nl == NULL)
			break;
		line = nl + 1;
	}
	if (s->busy == 0)
		release_replies(s);
	log_reply(s, text, len);
	if (text[0] == '5' || (text[0] == '4' && text[1] != '2'))
		s->errors++;
}

void smtpd_reply(struct smtpd_session *s, const char *fmt, ...)
{
	struct buf text = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	send_reply(s, buf_cstr(&text));
	buf_free(&text);
	/* the replies to pipelined commands go out together, when the
	 * input that caused them is done */
	if (s->busy == 0)
		send_replies_now(s);
	if (s->state != SMTPD_ST_CLOSING && s->errors > SMTPD_MAX_ERRORS) {
		log_info("session %lu: [%s] too many errors", s->id, s->client_text);
		smtpd_reply_close(s, "421 4.7.0 Too many errors, closing connection");
	}
}

/* The session ends once its last reply is out; until then on_flushed
 * comes again when the output is empty. */
static void check_flushed(struct smtpd_session *s)
{
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
		return;
	if (s->tls && !s->tls_shutdown) {
		/* close_notify, so that the client sees a clean end of TLS */
		s->tls_shutdown = true;
		SSL_shutdown(s->ssl);
	}
	session_free(s);
}

static void on_flushed(struct bufferevent *bev, void *arg)
{
	check_flushed(arg);
}

/* The reply goes out, then the connection closes; anything the client
 * still sends is ignored. */
static void close_after_output(struct smtpd_session *s)
{
	release_replies(s);
	s->state = SMTPD_ST_CLOSING;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(s->bev, NULL, on_flushed, on_event, s);
	struct timeval tv = {SMTPD_CLOSE_SECONDS, 0};
	bufferevent_set_timeouts(s->bev, NULL, &tv);
	bufferevent_enable(s->bev, EV_WRITE);
	check_flushed(s);
}

void smtpd_reply_close(struct smtpd_session *s, const char *fmt, ...)
{
	if (s->state == SMTPD_ST_CLOSING)
		return;
	struct buf text = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&text, fmt, ap);
	va_end(ap);
	send_reply(s, buf_cstr(&text));
	buf_free(&text);
	close_after_output(s);
}

void smtpd_session_abort(struct smtpd_session *s, const char *why)
{
	if (why && s->bev && s->state != SMTPD_ST_HANDSHAKE && s->state != SMTPD_ST_CLOSING) {
		/* best effort: one write, no waiting */
		release_replies(s);
		struct evbuffer *out = bufferevent_get_output(s->bev);
		evbuffer_add_printf(out, "%s\r\n", why);
		write_output_now(s);
	}
	session_free(s);
}

/* ---- lifecycle ----------------------------------------------------------------- */

static const char *tls_text(const struct smtpd_session *s)
{
	return s->tls ? s->tls_protocol : "none";
}

static void log_session_end(struct smtpd_session *s)
{
	log_info("session %lu: disconnect from [%s] source=%s tls=%s%s%s auth=%s messages=%u", s->id, s->client_text,
	         s->policy.source ? s->policy.source : "-", tls_text(s), s->tls ? "/" : "", s->tls ? s->tls_cipher : "",
	         s->auth_user ? s->auth_user : "-", s->messages);
}

static void session_free(struct smtpd_session *s)
{
	if (s->busy) {
		s->dead = true;
		if (s->bev)
			bufferevent_disable(s->bev, EV_READ | EV_WRITE);
		return;
	}
	log_session_end(s);
	smtpd_txn_reset(s);
	if (s->resume_ev)
		event_free(s->resume_ev);
	if (s->bev)
		bufferevent_free(s->bev); /* closes the socket and frees the SSL */
	if (s->starttls_ssl)
		SSL_free(s->starttls_ssl);
	smtpd_server_session_gone(s->srv, s);
	smtpd_policy_free(&s->policy);
	smtpd_conf_unref(s->conf);
	free(s->helo);
	free(s->tls_protocol);
	free(s->tls_cipher);
	free(s->tls_subject);
	free(s->tls_issuer);
	free(s->auth_user);
	if (s->auth_login_user)
		mem_free_secret(s->auth_login_user);
	buf_free(&s->line);
	buf_free(&s->replies);
	buf_free(&s->txn.headers);
	free(s);
}

void smtpd_session_timeouts(struct smtpd_session *s)
{
	int64_t secs =
	    s->state == SMTPD_ST_DATA || s->state == SMTPD_ST_BDAT ? s->policy.data_timeout : s->policy.command_timeout;
	struct timeval tv = {(time_t)secs, 0};
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

static void greet(struct smtpd_session *s)
{
	if (!s->policy.smtp_service) {
		log_info("session %lu: [%s] source %s has smtp-service no", s->id, s->client_text, s->policy.source);
		smtpd_reply_close(s, "521 5.3.2 %s does not accept mail from you", s->conf->hostname);
		return;
	}
	s->state = SMTPD_ST_COMMAND;
	s->greeted = true;
	smtpd_session_timeouts(s);
	smtpd_reply(s, "220 %s ESMTP tern", s->conf->hostname);
}

static void note_tls(struct smtpd_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	s->ssl = ssl;
	s->tls = true;
	s->tls_protocol = mem_strdup(tls_protocol_name(ssl));
	s->tls_cipher = mem_strdup(tls_cipher_name(ssl));
	struct buf subject = BUF_INIT, issuer = BUF_INIT;
	if (tls_peer_subject(ssl, &subject)) {
		tls_peer_issuer(ssl, &issuer);
		s->tls_subject = buf_detach(&subject);
		s->tls_issuer = buf_detach(&issuer);
		s->tls_verified = tls_peer_verified(ssl);
	}
	buf_free(&subject);
	buf_free(&issuer);
	if (s->policy.log_connections || s->policy.log_tls || s->tls_subject)
		log_info("session %lu: [%s] TLS %s %s%s%s%s%s", s->id, s->client_text, s->tls_protocol, s->tls_cipher,
		         s->tls_subject ? " client=\"" : "", s->tls_subject ? s->tls_subject : "",
		         s->tls_subject ? "\" verify=" : "", s->tls_subject ? tls_verify_text(ssl) : "");
}

static void handshake_done(struct smtpd_session *s)
{
	note_tls(s);
	if (!s->greeted) {
		greet(s); /* implicit TLS */
	} else {
		/* after STARTTLS: the session starts over without a greeting */
		s->state = SMTPD_ST_COMMAND;
		smtpd_session_timeouts(s);
	}
	smtpd_session_process(s);
}

static SSL *new_ssl(struct smtpd_session *s)
{
	SSL *ssl = SSL_new(s->listener->ssl_ctx);
	if (ssl == NULL) {
		log_error("session %lu: cannot create a TLS session", s->id);
		return NULL;
	}
	/* idle sessions give their record buffers back (28 KB per idle TLS
	 * session become 17 KB) */
	SSL_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
	/* one read(2) takes what the socket holds, not a record's header and
	 * then its body; the records it takes beyond the first are taken
	 * from OpenSSL by take_tls_pending() */
	SSL_set_read_ahead(ssl, 1);
	return ssl;
}

void smtpd_session_start(struct smtpd_listener *l, int fd, const struct addr_ip *ip, uint16_t port)
{
	struct smtpd_server *srv = l->server;
	struct smtpd_session *s = mem_zalloc(sizeof(*s));
	s->srv = srv;
	s->conf = smtpd_conf_ref(srv->conf);
	s->listener = l;
	s->id = ++srv->next_session_id;
	s->client_ip = *ip;
	s->client_port = port;
	addr_ip_format(ip, s->client_text);
	s->next = srv->sessions;
	if (srv->sessions)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->nsessions++;

	if (!smtpd_policy_resolve(s->conf, ip, l->source_name, &s->policy)) {
		log_error("listener %s names source \"%s\", which does not exist", l->name, l->source_name);
		s->policy.source = mem_strdup("-");
		s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		s->plain_bev = true;
		smtpd_session_abort(s, "421 4.3.5 Server configuration error");
		return;
	}
	if (s->policy.log_connections)
		log_info("session %lu: connect from [%s]:%u to %s source=%s", s->id, s->client_text, port, l->name,
		         s->policy.source);
	if (l->immediate_tls) {
		SSL *ssl = new_ssl(s);
		if (ssl == NULL) {
			s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
			session_free(s);
			return;
		}
		s->bev = bufferevent_openssl_socket_new(srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
		                                        BEV_OPT_CLOSE_ON_FREE);
		s->state = SMTPD_ST_HANDSHAKE;
	} else {
		s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		s->plain_bev = true;
	}
	if (s->bev == NULL)
		log_fatal("cannot create a bufferevent");
	bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	if (l->immediate_tls) {
		bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
		smtpd_session_timeouts(s);
	} else {
		greet(s);
	}
}

/* After STARTTLS the socket moves to a TLS bufferevent of its own,
 * which reads and writes it directly, as with implicit TLS.  (A TLS
 * filter on top of the socket bufferevent cost a layer and a copy each
 * way: smtpd's CPU with STARTTLS was about 4 % higher.) */
static void start_tls_on_socket(struct smtpd_session *s)
{
	evutil_socket_t fd = bufferevent_getfd(s->bev);
	bufferevent_setfd(s->bev, -1); /* freed without closing the socket */
	bufferevent_free(s->bev);
	s->bev = bufferevent_openssl_socket_new(s->srv->base, fd, s->starttls_ssl, BUFFEREVENT_SSL_ACCEPTING,
	                                        BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL)
		log_fatal("cannot create a TLS bufferevent");
	s->starttls_ssl = NULL; /* the bufferevent's now */
	s->plain_bev = false;
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	smtpd_session_timeouts(s);
}

/* The 220 could not leave at once (the client had not read the replies
 * before it): the handshake starts once everything before it is out. */
static void on_starttls_reply_sent(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		start_tls_on_socket(s);
}

void smtpd_session_starttls(struct smtpd_session *s)
{
	/* Whatever the client sent after STARTTLS in clear text is an injection
	 * attempt or a broken client: it must have no effect. */
	struct evbuffer *in = bufferevent_get_input(s->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	/* the 220 goes out in clear, before the handshake */
	release_replies(s);
	if ((s->starttls_ssl = new_ssl(s)) == NULL) {
		smtpd_reply_close(s, "421 4.3.0 TLS not available");
		return;
	}
	/* RFC 3207: the session starts over; nothing of the clear-text part is
	 * kept. */
	free(s->helo);
	s->helo = NULL;
	s->esmtp = false;
	smtpd_txn_reset(s);
	s->state = SMTPD_ST_HANDSHAKE;
	bev_write_now(s->bev);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		start_tls_on_socket(s);
		return;
	}
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_setwatermark(s->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(s->bev, NULL, on_starttls_reply_sent, on_event, s);
	bufferevent_enable(s->bev, EV_WRITE);
	smtpd_session_timeouts(s);
}

void smtpd_session_drain(struct smtpd_session *s)
{
	s->drain_notified = true;
	if (s->state == SMTPD_ST_COMMAND && !s->txn.active)
		smtpd_reply_close(s, "421 4.3.2 Service shutting down, closing connection");
}

/* ---- input ----------------------------------------------------------------------- */

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		handshake_done(s);
		return;
	}
	if ((what & BEV_EVENT_READING) && held_until_reply(s))
		return;
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state == SMTPD_ST_CLOSING) {
			session_free(s);
			return;
		}
		log_info("session %lu: [%s] timeout in %s", s->id, s->client_text,
		         s->state == SMTPD_ST_DATA || s->state == SMTPD_ST_BDAT ? "DATA" : "command phase");
		if (s->state == SMTPD_ST_HANDSHAKE)
			session_free(s);
		else
			smtpd_reply_close(s, "421 4.4.2 %s Error: timeout exceeded", s->conf->hostname);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		if (s->state == SMTPD_ST_HANDSHAKE) {
			struct buf err = BUF_INIT;
			unsigned long e;
			while ((e = bufferevent_get_openssl_error(bev)) != 0) {
				char text[256];
				ERR_error_string_n(e, text, sizeof(text));
				buf_printf(&err, "%s%s", err.len ? "; " : "", text);
			}
			log_info("session %lu: [%s] TLS handshake failed: %s", s->id, s->client_text,
			         err.len ? buf_cstr(&err) : "connection closed");
			buf_free(&err);
		}
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		if (s->txn.active && s->policy.log_connections)
			log_info("session %lu: [%s] lost connection in a transaction", s->id, s->client_text);
		session_free(s);
	}
}

static size_t line_limit(const struct smtpd_session *s, struct evbuffer *in)
{
	if (s->state == SMTPD_ST_AUTH)
		return SMTPD_AUTH_LINE_MAX;
	unsigned char head[5];
	if (evbuffer_copyout(in, head, 5) == 5 && strncasecmp((const char *)head, "AUTH ", 5) == 0)
		return SMTPD_AUTH_LINE_MAX;
	return SMTPD_COMMAND_LINE_MAX;
}

/* Takes one command line out of the input.  Returns false when no whole
 * line is there yet. */
static bool next_line(struct smtpd_session *s, struct evbuffer *in)
{
	size_t eol_len;
	struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
	size_t limit = line_limit(s, in);
	if (eol.pos < 0) {
		size_t avail = evbuffer_get_length(in);
		if (avail >= limit || s->skip_line) {
			/* an over-long line: drop it as it comes, answer at its end */
			s->skip_line = true;
			evbuffer_drain(in, avail);
		}
		return false;
	}
	size_t len = (size_t)eol.pos;
	if (s->skip_line || len + 1 > limit) {
		evbuffer_drain(in, len + 1);
		s->skip_line = false;
		if (s->state == SMTPD_ST_AUTH)
			smtpd_auth_cancel(s, "500 5.5.6 Authentication exchange line is too long");
		else
			smtpd_reply(s, "500 5.5.2 Line too long");
		return true;
	}
	buf_reset(&s->line);
	buf_reserve(&s->line, len + 1);
	evbuffer_remove(in, s->line.data, len + 1);
	s->line.len = len;
	s->line.data[len] = '\0';
	if (len == 0 || s->line.data[len - 1] != '\r') {
		/* a bare LF: RFC 5321 lines end in CRLF, and accepting LF alone is
		 * what smuggling attacks build on */
		smtpd_reply(s, "500 5.5.2 Syntax error: command line must end with CRLF");
		return true;
	}
	s->line.data[--s->line.len] = '\0';
	if (memchr(s->line.data, '\0', s->line.len) || memchr(s->line.data, '\r', s->line.len)) {
		smtpd_reply(s, "500 5.5.2 Syntax error: bad character in command");
		return true;
	}
	if (s->state == SMTPD_ST_AUTH)
		smtpd_auth_response(s, s->line.data);
	else
		smtpd_cmd_line(s, s->line.data, s->line.len);
	return true;
}

/* Hands the first contiguous piece of input to the message reader. */
static bool next_text(struct smtpd_session *s, struct evbuffer *in)
{
	struct evbuffer_iovec vec;
	if (s->txn.enq && smtpd_enqueue_pending(s->txn.enq) > SMTPD_ENQUEUE_HIGH) {
		s->held = true;
		bufferevent_disable(s->bev, EV_READ);
		return false;
	}
	if (evbuffer_peek(in, -1, NULL, &vec, 1) < 1 || vec.iov_len == 0)
		return false;
	size_t used = s->state == SMTPD_ST_DATA ? smtpd_data_input(s, vec.iov_base, vec.iov_len)
	                                        : smtpd_bdat_input(s, vec.iov_base, vec.iov_len);
	/* the session may be gone (a bare LF closes it): the caller checks */
	if (used == 0)
		return false;
	evbuffer_drain(in, used);
	return true;
}

static void on_output_drained(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	if (!s->out_held)
		return;
	s->out_held = false;
	bufferevent_setcb(bev, on_read, NULL, on_event, s);
	bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
	bufferevent_enable(bev, EV_READ);
	smtpd_session_process(s);
}

static bool replies_backed_up(struct smtpd_session *s)
{
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) + s->replies.len <= SMTPD_OUTPUT_HIGH)
		return false;
	s->out_held = true;
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_enable(s->bev, EV_WRITE);
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTPD_OUTPUT_LOW, 0);
	bufferevent_setcb(s->bev, on_read, on_output_drained, on_event, s);
	return true;
}

/* With read-ahead OpenSSL may hold whole records that the socket no
 * longer has, and libevent reads only when the socket is readable: when
 * the session has used up its input and could take more, the next
 * record is taken from OpenSSL here.  Anything but data (a partial
 * record, the end, an error) is left to libevent's next read. */
static bool take_tls_pending(struct smtpd_session *s)
{
	bool wants_input = s->state == SMTPD_ST_COMMAND || s->state == SMTPD_ST_AUTH || s->state == SMTPD_ST_DATA ||
	                   s->state == SMTPD_ST_BDAT;
	if (s->plain_bev || s->ssl == NULL || !wants_input || !(bufferevent_get_enabled(s->bev) & EV_READ) ||
	    !SSL_has_pending(s->ssl))
		return false;
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec space;
	if (evbuffer_reserve_space(in, SSL3_RT_MAX_PLAIN_LENGTH, &space, 1) < 1)
		return false;
	ERR_clear_error();
	int n = SSL_read(s->ssl, space.iov_base, (int)space.iov_len);
	space.iov_len = n > 0 ? (size_t)n : 0;
	evbuffer_commit_space(in, &space, n > 0 ? 1 : 0);
	return n > 0;
}

void smtpd_session_process(struct smtpd_session *s)
{
	/* What the input causes may close the session: freeing waits until
	 * the loop below is done with s. */
	s->busy++;
	while (!s->dead && s->state != SMTPD_ST_CLOSING && s->state != SMTPD_ST_HANDSHAKE && !replies_backed_up(s)) {
		struct evbuffer *in = bufferevent_get_input(s->bev);
		bool progress;
		if (s->state == SMTPD_ST_COMMAND || s->state == SMTPD_ST_AUTH)
			progress = next_line(s, in);
		else if (s->state == SMTPD_ST_DATA || s->state == SMTPD_ST_BDAT)
			progress = next_text(s, in);
		else
			progress = false;
		if (!progress && !take_tls_pending(s))
			break;
	}
	if (!s->dead && s->drain_notified && s->state == SMTPD_ST_COMMAND && !s->txn.active)
		smtpd_reply_close(s, "421 4.3.2 Service shutting down, closing connection");
	if (s->busy == 1 && !s->dead)
		send_replies_now(s);
	if (--s->busy == 0 && s->dead) {
		s->dead = false;
		session_free(s);
	}
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	if (!s->held || s->state == SMTPD_ST_CLOSING)
		return;
	s->held = false;
	bufferevent_enable(s->bev, EV_READ);
	smtpd_session_process(s);
}

void smtpd_session_resume(struct smtpd_session *s)
{
	if (!s->held)
		return;
	if (s->resume_ev == NULL)
		s->resume_ev = evtimer_new(s->srv->base, on_resume, s);
	struct timeval now = {0, 0};
	evtimer_add(s->resume_ev, &now);
}

/* While qmgr has the message (SMTPD_ST_WAIT) reading stays enabled, so
 * that a message costs no epoll_ctl pair; input, an end of stream or a
 * timeout in that time only turns reading off, and back_to_commands()
 * turns it on again once the reply is out: they are seen then, as if
 * reading had been off all along. */
static bool held_until_reply(struct smtpd_session *s)
{
	if (s->state != SMTPD_ST_WAIT)
		return false;
	bufferevent_disable(s->bev, EV_READ);
	return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	if (held_until_reply(s))
		return;
	if (s->plain_bev)
		bev_read_waiting(bev);
	smtpd_session_process(s);
}
