/* sendmail_smtp.c: tern-sendmail -bs, an SMTP conversation on standard
 * input and output (RFC 5321), as programs that speak SMTP to a local
 * sendmail expect.  Every message accepted with 250 is in the pickup
 * directory, synced, before the 250 is written; the pickup service takes
 * it from there.  Nothing is trusted more than on the command line: the
 * envelope is checked with the same parser smtpd uses, and the pickup
 * service checks the file again. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailaddr.h"
#include "mem.h"
#include "sendmail.h"

#define COMMAND_MAX 2048           /* a command line, CRLF included */
#define RCPT_MAX 1000              /* recipients of one message */
#define MESSAGE_MAX (256u << 20)   /* the largest message taken */

struct session {
	const char *dir, *host_name;
	bool have_sender;
	char *sender;
	char **rcpts;
	size_t nrcpts;
	char *line;
	size_t line_cap;
};

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void reply(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputs("\r\n", stdout);
	fflush(stdout);
}

static void reset_envelope(struct session *s)
{
	free(s->sender);
	s->sender = NULL;
	s->have_sender = false;
	for (size_t i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
}

/* One line without its line end; -1 at the end of the input. */
static ssize_t read_line(struct session *s)
{
	ssize_t n = getline(&s->line, &s->line_cap, stdin);
	if (n < 0)
		return -1;
	if (n > 0 && s->line[n - 1] == '\n')
		s->line[--n] = '\0';
	if (n > 0 && s->line[n - 1] == '\r')
		s->line[--n] = '\0';
	return n;
}

/* "VERB" at the start of the line, case-insensitive, then a blank, a
 * colon or the end; *args points after it. */
static bool is_verb(const char *line, const char *verb, const char **args)
{
	size_t n = strlen(verb);
	if (strncasecmp(line, verb, n) != 0 || (line[n] != '\0' && line[n] != ' ' && line[n] != ':'))
		return false;
	*args = line + n;
	return true;
}

/* <user> as local programs write it: qualified with the host name, as
 * sendmail does with a bare name on its command line.  NULL when the path
 * is not a bare local part. */
static char *qualified(const char *p, const char *host_name)
{
	if (*p != '<')
		return NULL;
	size_t n = strcspn(p + 1, "@>\" ");
	if (n == 0 || p[1 + n] != '>')
		return NULL;
	return mem_asprintf("<%.*s@%s>%s", (int)n, p + 1, host_name, p + 2 + n);
}

/* "FROM:<path>" or "TO:<path>", parameters after it ignored. */
static bool take_path(const struct session *s, const char *args, const char *keyword, bool is_sender,
                      struct mail_addr *addr)
{
	size_t n = strlen(keyword);
	while (*args == ' ')
		args++;
	if (strncasecmp(args, keyword, n) != 0) {
		reply("501 5.5.4 Syntax: %s<address>", keyword);
		return false;
	}
	const char *p = args + n;
	while (*p == ' ')
		p++;
	const char *why = NULL;
	char *full = qualified(p, s->host_name);
	const char *path = full ? full : p;
	bool ok = mail_addr_parse_path(&path, is_sender, !is_sender, false, addr, &why);
	free(full);
	if (!ok) {
		reply("501 5.1.%d Bad %s address syntax: %s", is_sender ? 7 : 3, is_sender ? "sender" : "recipient",
		      why ? why : "malformed");
		return false;
	}
	return true;
}

static void do_mail(struct session *s, const char *args)
{
	if (s->have_sender) {
		reply("503 5.5.1 Error: nested MAIL command");
		return;
	}
	struct mail_addr addr;
	if (!take_path(s, args, "FROM:", true, &addr))
		return;
	s->sender = mem_strdup(addr.mailbox);
	s->have_sender = true;
	mail_addr_free(&addr);
	reply("250 2.1.0 Ok");
}

static void do_rcpt(struct session *s, const char *args)
{
	if (!s->have_sender) {
		reply("503 5.5.1 Error: need MAIL command");
		return;
	}
	if (s->nrcpts >= RCPT_MAX) {
		reply("452 4.5.3 Error: too many recipients");
		return;
	}
	struct mail_addr addr;
	if (!take_path(s, args, "TO:", false, &addr))
		return;
	s->rcpts = mem_reallocarray(s->rcpts, s->nrcpts + 1, sizeof *s->rcpts);
	s->rcpts[s->nrcpts++] = mem_strdup(addr.mailbox);
	mail_addr_free(&addr);
	reply("250 2.1.5 Ok");
}

/* Reads the message up to the line "."; dot-stuffing undone, lines end in
 * LF as in a file.  False at the end of the input (nothing is queued). */
static bool read_data(struct session *s, struct buf *msg, bool *too_big)
{
	*too_big = false;
	for (;;) {
		ssize_t n = read_line(s);
		if (n < 0)
			return false;
		if (n == 1 && s->line[0] == '.')
			return true;
		const char *text = s->line[0] == '.' ? s->line + 1 : s->line;
		size_t len = (size_t)n - (text != s->line);
		if (msg->len + len + 1 > MESSAGE_MAX) {
			*too_big = true;
			continue; /* read on to the end, keep nothing more */
		}
		buf_append(msg, text, len);
		buf_putc(msg, '\n');
	}
}

/* False when the input ended in the middle of the message. */
static bool do_data(struct session *s)
{
	if (!s->have_sender || s->nrcpts == 0) {
		reply("503 5.5.1 Error: need %s command", s->have_sender ? "RCPT" : "MAIL");
		return true;
	}
	reply("354 End data with <CR><LF>.<CR><LF>");
	struct buf msg = BUF_INIT, env = BUF_INIT, err = BUF_INIT;
	bool too_big;
	bool complete = read_data(s, &msg, &too_big);
	if (complete && too_big) {
		reply("552 5.3.4 Error: message too large (at most %u bytes)", MESSAGE_MAX);
	} else if (complete) {
		sendmail_build_envelope(s->sender, (const char *const *)s->rcpts, s->nrcpts, &env);
		if (sendmail_drop_file(s->dir, &env, &msg, &err))
			reply("250 2.0.0 Ok: queued");
		else
			reply("451 4.3.0 Error: %s", buf_cstr(&err));
	}
	reset_envelope(s);
	buf_free(&msg);
	buf_free(&env);
	buf_free(&err);
	return complete;
}

/* Answers one command line; false when the session is over. */
static bool command(struct session *s, ssize_t len)
{
	const char *args;
	const char *line = s->line;
	if (len >= COMMAND_MAX - 2) {
		reply("500 5.5.2 Error: line too long");
	} else if (is_verb(line, "EHLO", &args)) {
		reset_envelope(s);
		reply("250-%s\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES", s->host_name);
	} else if (is_verb(line, "HELO", &args)) {
		reset_envelope(s);
		reply("250 %s", s->host_name);
	} else if (is_verb(line, "MAIL", &args)) {
		do_mail(s, args);
	} else if (is_verb(line, "RCPT", &args)) {
		do_rcpt(s, args);
	} else if (is_verb(line, "DATA", &args)) {
		return do_data(s);
	} else if (is_verb(line, "RSET", &args)) {
		reset_envelope(s);
		reply("250 2.0.0 Ok");
	} else if (is_verb(line, "NOOP", &args)) {
		reply("250 2.0.0 Ok");
	} else if (is_verb(line, "VRFY", &args)) {
		reply("252 2.5.2 Cannot VRFY user");
	} else if (is_verb(line, "QUIT", &args)) {
		reply("221 2.0.0 Bye");
		return false;
	} else {
		reply("502 5.5.2 Error: command not recognized");
	}
	return true;
}

int sendmail_smtp_session(const char *dir, const char *host_name)
{
	struct session s = {.dir = dir, .host_name = host_name};
	reply("220 %s ESMTP tern (sendmail -bs)", host_name);
	for (;;) {
		ssize_t n = read_line(&s);
		if (n < 0 || !command(&s, n))
			break;
	}
	reset_envelope(&s);
	free(s.line);
	return 0;
}
