/* smtp_session.c: the SMTP dialogue of one outbound connection: greeting,
 * EHLO (HELO when EHLO is refused), STARTTLS by the queue's TLS policy and
 * EHLO again, then transactions for the job's unfinished messages (several
 * recipients each, pipelined when the server offers PIPELINING; the content
 * in one BDAT LAST chunk right behind the envelope when it also offers
 * CHUNKING, else after DATA's 354) until the job is done or
 * max-msg-per-connection is reached, then QUIT.  With BDAT the job's next
 * messages go out behind the first, each behind an RSET, before any
 * reply has come: a window of transactions in flight (send_ahead).
 *
 * TLS policy is enforced here, in one place: with require-starttls no
 * MAIL command is ever written before the handshake has succeeded (and,
 * with smtp-tls-ca-file, the server's certificate has been verified). */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "mem.h"

/* RFC 5321 4.5.3.2 timeouts for what the configuration does not name. */
#define COMMAND_TIMEOUT 300
#define DATA_INIT_TIMEOUT 120
#define QUIT_TIMEOUT 10

enum state {
	S_CONNECT,
	S_GREETING,
	S_EHLO,
	S_HELO,
	S_STARTTLS,
	S_TLS,
	S_TXN,        /* MAIL, RCPT, DATA replies; with BDAT, the chunk's too */
	S_BODY,       /* the reply to the final dot */
	S_DOT_IGNORE, /* a 354 without accepted recipients: "." and ignore */
	S_RSET,
	S_QUIT,
	S_IDLE, /* parked between jobs of its queue */
};

enum cmd_kind { CMD_RSET, CMD_MAIL, CMD_RCPT, CMD_DATA, CMD_BDAT };

struct cmd {
	enum cmd_kind kind;
	size_t rcpt; /* CMD_RCPT: index in the message */
};

/* A transaction written behind the current one before its replies came:
 * RSET, MAIL, RCPTs and the BDAT LAST chunk. */
struct ahead {
	struct smtp_msg *msg;
	struct cmd *cmds;
	size_t ncmds;
	size_t bytes; /* what it added to the connection's output */
};

/* The window: transactions in flight behind the current one, and the
 * output they may hold unsent. */
#define AHEAD_MAX 16
#define AHEAD_BYTES_MAX (1024 * 1024)

struct smtp_session {
	struct smtp_job *job;           /* NULL while idle */
	struct smtp_target target_copy; /* the session may outlive its job */
	const struct smtp_target *target;
	struct smtp_conn *conn;
	smtp_session_done_cb done;
	enum state state;
	bool in_clear, tls_active, began; /* began: a MAIL was sent */
	struct smtp_ehlo ehlo;
	struct smtp_peer peer;
	struct smtp_reply reply;
	struct buf line; /* the command being written, its memory kept */
	size_t msgs_on_conn;
	/* idle: which queue and configuration it may serve, and for how long */
	char *idle_queue;
	struct smtp_conf *idle_conf; /* held, so that its address stays unique */
	struct event *idle_timer;
	struct smtp_session *idle_next;
	/* the current transaction */
	struct smtp_msg *msg, *txn_msg;
	struct cmd *cmds;
	size_t ncmds, nsent, nanswered;
	size_t *accepted;
	size_t naccepted;
	bool txn_failed;
	/* The message whose dot awaits its reply, with the recipients the
	 * server accepted, kept apart so that the next transaction can start
	 * before the reply (send_next_envelope). */
	struct smtp_msg *body_msg;
	size_t *body_accepted;
	size_t body_naccepted;
	bool next_sent;    /* the next message's envelope followed the dot */
	size_t after_dot;  /* bytes written to the connection after the dot */
	bool body_drained; /* the whole message and its dot are written */
	bool chunk_sent;   /* the transaction's BDAT LAST chunk is written or on its way */
	bool txn_whole;    /* the transaction carries every recipient its message has left */
	struct ahead ahead[AHEAD_MAX];
	size_t nahead;
	bool dispatching; /* inside a reply's handler: freeing waits (see on_readable) */
	bool dead;        /* freed while dispatching: free once the handler returns */
	/* how the session ends, once QUIT is answered */
	enum smtp_session_end end;
	char *end_why;
};

static void on_connected(void *arg);
static void on_readable(void *arg, struct buf *in);
static void on_tls_done(void *arg);
static void on_drained(void *arg);
static void on_failed(void *arg, const char *why);

static const struct smtp_conn_events conn_events = {
    .connected = on_connected,
    .readable = on_readable,
    .tls_done = on_tls_done,
    .drained = on_drained,
    .failed = on_failed,
};

static struct smtp_session *idle_sessions;

static void session_free(struct smtp_session *s)
{
	if (s->dispatching) {
		s->dead = true;
		return;
	}
	if (s->idle_timer)
		event_free(s->idle_timer);
	smtp_conf_unref(s->idle_conf);
	free(s->idle_queue);
	free(s->target_copy.mx);
	smtp_conn_close(s->conn);
	smtp_reply_free(&s->reply);
	buf_free(&s->line);
	free(s->cmds);
	for (size_t i = 0; i < s->nahead; i++)
		free(s->ahead[i].cmds);
	free(s->accepted);
	free(s->body_accepted);
	free(s->end_why);
	free(s);
}

/* The session's last act: the delivery decides what comes next. */
static void finish(struct smtp_session *s, enum smtp_session_end end, const char *why)
{
	struct smtp_job *job = s->job;
	if (job == NULL) { /* an idle session that ended */
		session_free(s);
		return;
	}
	smtp_session_done_cb done = s->done;
	char *copy = why ? mem_strdup(why) : NULL;
	job->session = NULL;
	session_free(s);
	done(job, end, copy);
	free(copy);
}

static void send_line(struct smtp_session *s, const struct buf *line)
{
	smtp_conn_write(s->conn, line->data, line->len);
}

static void send_text(struct smtp_session *s, const char *text, int64_t timeout, enum state next)
{
	smtp_conn_write(s->conn, text, strlen(text));
	smtp_conn_set_timeout(s->conn, timeout);
	s->state = next;
}

/* Ends politely: QUIT, then finish with end and why. */
static void quit(struct smtp_session *s, enum smtp_session_end end, const char *why)
{
	s->end = end;
	free(s->end_why);
	s->end_why = why ? mem_strdup(why) : NULL;
	send_text(s, "QUIT\r\n", QUIT_TIMEOUT, S_QUIT);
}

static void failf(struct smtp_session *s, enum smtp_session_end end, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void failf(struct smtp_session *s, enum smtp_session_end end, const char *fmt, ...)
{
	struct buf why = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&why, fmt, ap);
	va_end(ap);
	quit(s, end, buf_cstr(&why));
	buf_free(&why);
}

/* "421 4.3.2 text" as a diagnostic, "smtp;421 4.3.2 text". */
static void reply_diagnostic(const struct smtp_reply *reply, struct buf *out)
{
	buf_puts(out, "smtp;");
	smtp_reply_format(reply, out);
}

static void report_msg_reply(struct smtp_session *s, struct smtp_msg *msg, struct smtp_rcpt *rcpt,
                             const struct smtp_reply *reply)
{
	enum smtp_rcpt_status status = reply->code < 400   ? SMTP_RCPT_DELIVERED
	                               : reply->code < 500 ? SMTP_RCPT_DEFERRED
	                                                   : SMTP_RCPT_BOUNCED;
	struct buf diag = BUF_INIT;
	reply_diagnostic(reply, &diag);
	const char *enhanced = reply->enhanced[0] ? reply->enhanced : smtp_reply_default_enhanced(reply->code);
	smtp_job_report(s->job, msg, rcpt, status, enhanced, buf_cstr(&diag), &s->peer);
	buf_free(&diag);
}

static void report_reply(struct smtp_session *s, struct smtp_rcpt *rcpt, const struct smtp_reply *reply)
{
	report_msg_reply(s, s->msg, rcpt, reply);
}

static void report_status(struct smtp_session *s, struct smtp_rcpt *rcpt, enum smtp_rcpt_status status,
                          const char *enhanced, const char *diag)
{
	smtp_job_report(s->job, s->msg, rcpt, status, enhanced, diag, &s->peer);
}

/* ---- transactions ------------------------------------------------------------ */

static void next_transaction(struct smtp_session *s);
static bool park(struct smtp_session *s);

static bool wants_8bitmime(const struct smtp_session *s, const struct smtp_msg *msg)
{
	return msg->body_type && strcasecmp(msg->body_type, "8BITMIME") == 0 && s->ehlo.eightbitmime &&
	       !s->job->policy.ignore_8bitmime;
}

static bool use_dsn(const struct smtp_session *s)
{
	return s->ehlo.dsn && !s->job->policy.ignore_dsn;
}

/* Commands are put together by appends, not formats: three a message. */
static void format_mail(struct smtp_session *s, const struct smtp_msg *msg, struct buf *line)
{
	buf_concat(line, "MAIL FROM:<", msg->sender, ">", NULL);
	if (s->ehlo.size) {
		buf_puts(line, " SIZE=");
		buf_put_decimal(line, msg->content.len);
	}
	if (wants_8bitmime(s, msg))
		buf_puts(line, " BODY=8BITMIME");
	if (msg->smtputf8)
		buf_puts(line, " SMTPUTF8");
	if (use_dsn(s) && msg->ret && *msg->ret)
		buf_concat(line, " RET=", msg->ret, NULL);
	if (use_dsn(s) && msg->envid && *msg->envid)
		buf_concat(line, " ENVID=", msg->envid, NULL);
	buf_puts(line, "\r\n");
}

static void format_rcpt(struct smtp_session *s, const struct smtp_rcpt *rcpt, struct buf *line)
{
	buf_concat(line, "RCPT TO:<", rcpt->address, ">", NULL);
	if (use_dsn(s) && rcpt->notify && *rcpt->notify)
		buf_concat(line, " NOTIFY=", rcpt->notify, NULL);
	if (use_dsn(s) && rcpt->orcpt && *rcpt->orcpt) {
		/* qmgr passes ORCPT as received ("rfc822;xtext"); a bare
		 * address is encoded here. */
		if (strchr(rcpt->orcpt, ';')) {
			buf_concat(line, " ORCPT=", rcpt->orcpt, NULL);
		} else {
			buf_puts(line, " ORCPT=rfc822;");
			smtp_xtext_append(line, rcpt->orcpt);
		}
	}
	buf_puts(line, "\r\n");
}

/* RFC 3030: the whole content as one last chunk, right behind the
 * envelope; its reply is the message's verdict. */
static void write_chunk(struct smtp_session *s, const struct smtp_msg *msg)
{
	buf_puts(&s->line, "BDAT ");
	buf_put_decimal(&s->line, msg->content.len);
	buf_puts(&s->line, " LAST\r\n");
	send_line(s, &s->line);
	smtp_conn_write(s->conn, msg->content.data, msg->content.len);
}

/* One command of a transaction for msg. */
static void write_command(struct smtp_session *s, struct smtp_msg *msg, const struct cmd *cmd)
{
	buf_reset(&s->line);
	switch (cmd->kind) {
	case CMD_RSET:
		buf_puts(&s->line, "RSET\r\n");
		break;
	case CMD_MAIL:
		format_mail(s, msg, &s->line);
		s->began = true;
		break;
	case CMD_RCPT:
		format_rcpt(s, &msg->rcpts[cmd->rcpt], &s->line);
		break;
	case CMD_DATA:
		buf_puts(&s->line, "DATA\r\n");
		break;
	case CMD_BDAT:
		write_chunk(s, msg);
		return;
	}
	send_line(s, &s->line);
}

/* Until a chunk is written, data-send-timeout, then
 * smtp-data-termination-timeout (on_drained). */
static void send_command(struct smtp_session *s, const struct cmd *cmd)
{
	write_command(s, s->msg, cmd);
	s->nsent++;
	if (cmd->kind == CMD_BDAT) {
		s->chunk_sent = true;
		s->body_drained = false;
		smtp_conn_set_timeout(s->conn, s->job->policy.data_send_timeout);
		return;
	}
	smtp_conn_set_timeout(s->conn, cmd->kind == CMD_DATA ? DATA_INIT_TIMEOUT : COMMAND_TIMEOUT);
}

static bool pipelining(const struct smtp_session *s)
{
	return s->ehlo.pipelining && !s->job->policy.ignore_pipelining;
}

/* BDAT instead of DATA: the content goes with the envelope, so a message
 * costs one round trip even when no other message is sent with it.  Only
 * pipelined: without PIPELINING each command would wait for its reply
 * anyway. */
static bool chunking(const struct smtp_session *s)
{
	return s->ehlo.chunking && pipelining(s) && !s->job->policy.ignore_chunking;
}

/* BDAT for msg: not when it is over the server's announced SIZE, which
 * refuses its MAIL; with DATA the content then never leaves. */
static bool chunking_for(const struct smtp_session *s, const struct smtp_msg *msg)
{
	return chunking(s) && !(s->ehlo.size_limit && msg->content.len > s->ehlo.size_limit);
}

/* Sends what may be sent now: everything with PIPELINING, else the next
 * command once the previous one is answered. */
static void send_commands(struct smtp_session *s)
{
	while (s->nsent < s->ncmds && (pipelining(s) || s->nsent == s->nanswered))
		send_command(s, &s->cmds[s->nsent]);
}

static size_t pending_rcpts(const struct smtp_msg *msg)
{
	size_t n = 0;
	for (size_t i = 0; i < msg->nrcpts; i++)
		n += msg->rcpts[i].status == SMTP_RCPT_PENDING;
	return n;
}

/* The commands of a transaction for the next recipients of msg that have
 * no result yet; false when none is left. */
static bool prepare_transaction(struct smtp_session *s, struct smtp_msg *msg)
{
	if (pending_rcpts(msg) == 0)
		return false;
	s->msg = msg;
	s->ncmds = s->nsent = s->nanswered = s->naccepted = 0;
	s->txn_failed = s->chunk_sent = false;
	s->cmds = mem_reallocarray(s->cmds, msg->nrcpts + 2, sizeof *s->cmds);
	s->accepted = mem_reallocarray(s->accepted, msg->nrcpts + 1, sizeof *s->accepted);
	s->cmds[s->ncmds++] = (struct cmd){CMD_MAIL, 0};
	uint64_t limit = s->job->policy.max_rcpt_per_transaction;
	for (size_t i = 0; i < msg->nrcpts && s->ncmds - 1 < limit; i++)
		if (msg->rcpts[i].status == SMTP_RCPT_PENDING)
			s->cmds[s->ncmds++] = (struct cmd){CMD_RCPT, i};
	s->txn_whole = s->ncmds - 1 == pending_rcpts(msg);
	s->cmds[s->ncmds++] = (struct cmd){chunking_for(s, msg) ? CMD_BDAT : CMD_DATA, 0};
	s->txn_msg = msg;
	return true;
}

static void fill_window(struct smtp_session *s);

static bool begin_transaction(struct smtp_session *s, struct smtp_msg *msg)
{
	if (!prepare_transaction(s, msg))
		return false;
	s->state = S_TXN;
	send_commands(s);
	fill_window(s);
	return true;
}

/* ---- the window (BDAT) ---------------------------------------------------------- */

/* Whether msg may go out now behind what is in flight: a whole message
 * in one transaction, that the server can take. */
static bool may_send_ahead(const struct smtp_session *s, const struct smtp_msg *msg)
{
	size_t pending = pending_rcpts(msg);
	return pending > 0 && pending <= s->job->policy.max_rcpt_per_transaction &&
	       (!msg->smtputf8 || s->ehlo.smtputf8) && chunking_for(s, msg);
}

/* RSET first: after a refused chunk the transaction before is failed,
 * not over (RFC 3030 2), and this MAIL must not land inside it. */
static void send_ahead(struct smtp_session *s, struct smtp_msg *msg)
{
	struct ahead *a = &s->ahead[s->nahead++];
	size_t before = smtp_conn_unsent(s->conn);
	a->msg = msg;
	a->cmds = mem_reallocarray(NULL, msg->nrcpts + 3, sizeof *a->cmds);
	a->ncmds = 0;
	a->cmds[a->ncmds++] = (struct cmd){CMD_RSET, 0};
	a->cmds[a->ncmds++] = (struct cmd){CMD_MAIL, 0};
	for (size_t i = 0; i < msg->nrcpts; i++)
		if (msg->rcpts[i].status == SMTP_RCPT_PENDING)
			a->cmds[a->ncmds++] = (struct cmd){CMD_RCPT, i};
	a->cmds[a->ncmds++] = (struct cmd){CMD_BDAT, 0};
	for (size_t i = 0; i < a->ncmds; i++)
		write_command(s, msg, &a->cmds[i]);
	a->bytes = smtp_conn_unsent(s->conn) - before;
}

/* With BDAT, the job's next messages follow the current transaction at
 * once, in order, so that one write and one read serve several: up to
 * AHEAD_MAX of them, while the connection may take them
 * (max-msg-per-connection) and qmgr is there. */
static void fill_window(struct smtp_session *s)
{
	struct smtp_job *job = s->job;
	uint64_t cap = job->policy.max_msg_per_connection;
	/* behind a BDAT transaction only: behind DATA, what follows would be
	 * read as the message if the server said 354 */
	if (!s->txn_whole || s->cmds[s->ncmds - 1].kind != CMD_BDAT || job->orphaned)
		return;
	while (s->nahead < AHEAD_MAX && smtp_conn_unsent(s->conn) < AHEAD_BYTES_MAX) {
		size_t next = job->next_msg + 1 + s->nahead;
		if (next >= job->nmsgs || (cap && s->msgs_on_conn + s->nahead + 2 > cap) ||
		    !may_send_ahead(s, &job->msgs[next]))
			return;
		send_ahead(s, &job->msgs[next]);
	}
}

static size_t ahead_bytes(const struct smtp_session *s)
{
	size_t n = 0;
	for (size_t i = 0; i < s->nahead; i++)
		n += s->ahead[i].bytes;
	return n;
}

/* The current message has every result: the first transaction of the
 * window becomes the current one, and the window grows again. */
static void next_ahead(struct smtp_session *s)
{
	struct smtp_job *job = s->job;
	struct ahead a = s->ahead[0];
	memmove(s->ahead, s->ahead + 1, --s->nahead * sizeof *s->ahead);
	job->next_msg++;
	s->msgs_on_conn++;
	free(s->cmds);
	s->cmds = a.cmds;
	s->ncmds = s->nsent = a.ncmds;
	s->nanswered = s->naccepted = 0;
	s->accepted = mem_reallocarray(s->accepted, a.msg->nrcpts + 1, sizeof *s->accepted);
	s->msg = s->txn_msg = a.msg;
	s->txn_failed = false;
	s->txn_whole = s->chunk_sent = true;
	s->state = S_TXN;
	s->body_drained = smtp_conn_unsent(s->conn) <= ahead_bytes(s);
	smtp_conn_set_timeout(s->conn,
	                      s->body_drained ? job->policy.data_termination_timeout : job->policy.data_send_timeout);
	fill_window(s);
}

/* Recipients of a message the server cannot take get their result at
 * once; true when that happened. */
static bool refuse_unsupported(struct smtp_session *s, struct smtp_msg *msg)
{
	if (!msg->smtputf8 || s->ehlo.smtputf8)
		return false;
	s->msg = msg;
	struct buf diag = BUF_INIT;
	buf_printf(&diag, "smtp;550 5.6.7 SMTPUTF8 is required but not offered by %s", s->target->mx);
	for (size_t i = 0; i < msg->nrcpts; i++)
		if (msg->rcpts[i].status == SMTP_RCPT_PENDING)
			report_status(s, &msg->rcpts[i], SMTP_RCPT_BOUNCED, "5.6.7", buf_cstr(&diag));
	buf_free(&diag);
	return true;
}

/* ---- idle connections ------------------------------------------------------------ */

static void on_idle_expired(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	for (struct smtp_session **p = &idle_sessions; *p; p = &(*p)->idle_next) {
		if (*p == s) {
			*p = s->idle_next;
			break;
		}
	}
	quit(s, SMTP_END_DONE, NULL);
}

/* With connection-idle-timeout, a session whose job is done waits that
 * long for the next job of its queue instead of closing: the connection
 * (and its TLS handshake) is reused.  The job is told it is done now. */
static bool park(struct smtp_session *s)
{
	struct smtp_job *job = s->job;
	uint64_t cap = job->policy.max_msg_per_connection;
	if (job->policy.connection_idle_timeout <= 0 || (cap && s->msgs_on_conn >= cap))
		return false;
	s->state = S_IDLE;
	s->msg = s->txn_msg = NULL;
	s->idle_queue = mem_strdup(job->queue);
	s->idle_conf = smtp_conf_ref(job->conf);
	smtp_conn_set_timeout(s->conn, 0);
	struct timeval tv = {.tv_sec = (time_t)job->policy.connection_idle_timeout};
	s->idle_timer = evtimer_new(smtp_event_base(), on_idle_expired, s);
	evtimer_add(s->idle_timer, &tv);
	s->idle_next = idle_sessions;
	idle_sessions = s;
	smtp_session_done_cb done = s->done;
	s->job = NULL;
	job->session = NULL;
	done(job, SMTP_END_DONE, NULL);
	return true;
}

static void unpark(struct smtp_session *s)
{
	event_free(s->idle_timer);
	s->idle_timer = NULL;
	free(s->idle_queue);
	s->idle_queue = NULL;
	smtp_conf_unref(s->idle_conf);
	s->idle_conf = NULL;
}

bool smtp_session_adopt(struct smtp_job *job, smtp_session_done_cb done)
{
	for (struct smtp_session **p = &idle_sessions; *p; p = &(*p)->idle_next) {
		struct smtp_session *s = *p;
		/* Same queue under the same configuration: same policy. */
		if (s->idle_conf != job->conf || strcmp(s->idle_queue, job->queue) != 0)
			continue;
		*p = s->idle_next;
		unpark(s);
		s->job = job;
		s->done = done;
		job->session = s;
		s->began = false; /* a failure before the first MAIL tries elsewhere */
		next_transaction(s);
		return true;
	}
	return false;
}

void smtp_session_shutdown(void)
{
	while (idle_sessions) {
		struct smtp_session *s = idle_sessions;
		idle_sessions = s->idle_next;
		session_free(s);
	}
}

bool smtp_session_delivering(const struct smtp_session *s)
{
	return s != NULL && (s->state == S_BODY || (s->state == S_TXN && s->chunk_sent));
}

static void next_transaction(struct smtp_session *s)
{
	struct smtp_job *job = s->job;
	while (job->next_msg < job->nmsgs) {
		if (job->orphaned) {
			/* qmgr went away: no new transaction; the rest goes
			 * back unsent (on_session_done). */
			quit(s, SMTP_END_DONE, NULL);
			return;
		}
		struct smtp_msg *msg = &job->msgs[job->next_msg];
		if (!refuse_unsupported(s, msg) && begin_transaction(s, msg))
			return;
		/* Every recipient of msg has its result. */
		job->next_msg++;
		if (s->txn_msg == msg)
			s->msgs_on_conn++;
		s->msg = NULL;
		uint64_t cap = job->policy.max_msg_per_connection;
		if (cap && s->msgs_on_conn >= cap && job->next_msg < job->nmsgs) {
			quit(s, SMTP_END_CONNECTION_CAP, NULL);
			return;
		}
	}
	if (!park(s))
		quit(s, SMTP_END_DONE, NULL);
}

static void rset(struct smtp_session *s)
{
	send_text(s, "RSET\r\n", COMMAND_TIMEOUT, S_RSET);
}

/* RFC 2920 3.1: with PIPELINING the content of a message may begin a
 * group of commands, so the next message's MAIL, RCPTs and DATA follow
 * the dot at once and the server answers both in one round trip.  Only
 * when nothing is left to decide in between: this transaction carried
 * every recipient of its message still without a result, the connection
 * may take another message, qmgr is still there, and the server can take
 * the next message. */
static bool send_next_envelope(struct smtp_session *s)
{
	struct smtp_job *job = s->job;
	uint64_t cap = job->policy.max_msg_per_connection;
	if (!pipelining(s) || job->orphaned || (cap && s->msgs_on_conn + 1 >= cap))
		return false;
	if (job->next_msg + 1 >= job->nmsgs || s->body_msg != &job->msgs[job->next_msg] ||
	    pending_rcpts(s->body_msg) != s->body_naccepted)
		return false;
	struct smtp_msg *next = &job->msgs[job->next_msg + 1];
	if ((next->smtputf8 && !s->ehlo.smtputf8) || !prepare_transaction(s, next))
		return false;
	size_t before = smtp_conn_unsent(s->conn);
	send_commands(s);
	s->after_dot = smtp_conn_unsent(s->conn) - before;
	/* the dot's reply comes first: its timeout still holds */
	smtp_conn_set_timeout(s->conn, job->policy.data_send_timeout);
	return true;
}

static void write_to_conn(void *conn, const void *data, size_t len)
{
	smtp_conn_write(conn, data, len);
}

static void send_body(struct smtp_session *s)
{
	smtp_body_dot_stuff(s->msg->content.data, s->msg->content.len, write_to_conn, s->conn);
	smtp_conn_write(s->conn, ".\r\n", 3);
	/* Until everything is written, then smtp-data-termination-timeout
	 * (on_drained). */
	smtp_conn_set_timeout(s->conn, s->job->policy.data_send_timeout);
	s->body_drained = false;
	s->state = S_BODY;
	s->body_msg = s->msg;
	size_t *spare = s->body_accepted;
	s->body_accepted = s->accepted;
	s->body_naccepted = s->naccepted;
	s->accepted = spare;
	s->naccepted = 0;
	s->after_dot = 0;
	s->next_sent = send_next_envelope(s);
}

static void on_data_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	if (r->code == 354) {
		if (s->naccepted > 0 && !s->txn_failed) {
			send_body(s);
		} else {
			/* RFC 2920 3.1: a pipelined DATA accepted although no
			 * recipient was: end it with an empty message. */
			send_text(s, ".\r\n", s->job->policy.data_termination_timeout, S_DOT_IGNORE);
		}
		return;
	}
	if (!s->txn_failed)
		for (size_t i = 0; i < s->naccepted; i++)
			report_reply(s, &s->msg->rcpts[s->accepted[i]], r);
	rset(s);
}

/* The reply to the BDAT LAST chunk: the verdict on the message for the
 * recipients the server accepted (with none, the server refuses the
 * chunk, and that reply says nothing new). */
static void on_chunk_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	s->chunk_sent = false;
	if (!s->txn_failed)
		for (size_t i = 0; i < s->naccepted; i++)
			report_reply(s, &s->msg->rcpts[s->accepted[i]], r);
	/* A verdict while we are still sending: the rest of the chunk would
	 * be read as commands, so this connection is done for. */
	if (smtp_conn_unsent(s->conn) > ahead_bytes(s)) {
		finish(s, SMTP_END_BROKEN, "the server replied before the end of the message");
		return;
	}
	if (s->nahead > 0)
		next_ahead(s); /* which begins with RSET */
	/* RFC 3030 2: after a refused chunk the transaction is failed, not
	 * over; RSET ends it before the next MAIL. */
	else if (r->code / 100 != 2)
		rset(s);
	else
		next_transaction(s);
}

static void on_txn_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	const struct cmd *cmd = &s->cmds[s->nanswered++];
	switch (cmd->kind) {
	case CMD_RSET:
		break; /* the window's: whatever it says, MAIL's reply tells */
	case CMD_MAIL:
		if (r->code / 100 != 2) {
			s->txn_failed = true;
			for (size_t i = 1; i < s->ncmds; i++)
				if (s->cmds[i].kind == CMD_RCPT)
					report_reply(s, &s->msg->rcpts[s->cmds[i].rcpt], r);
		}
		break;
	case CMD_RCPT:
		if (s->txn_failed)
			break;
		if (r->code / 100 == 2)
			s->accepted[s->naccepted++] = cmd->rcpt;
		else
			report_reply(s, &s->msg->rcpts[cmd->rcpt], r);
		break;
	case CMD_DATA:
		on_data_reply(s, r);
		return;
	case CMD_BDAT:
		on_chunk_reply(s, r);
		return;
	}
	if (s->nanswered < s->nsent)
		return; /* more pipelined replies to come */
	/* Without PIPELINING: stop early rather than send what cannot work. */
	const struct cmd *next = &s->cmds[s->nsent];
	if (s->txn_failed || (next->kind == CMD_DATA && s->naccepted == 0))
		rset(s);
	else
		send_commands(s);
}

/* The reply to the dot: the next message's replies follow when its
 * envelope went with the dot. */
static void on_body_reply(struct smtp_session *s, const struct smtp_reply *r)
{
	for (size_t i = 0; i < s->body_naccepted; i++)
		report_msg_reply(s, s->body_msg, &s->body_msg->rcpts[s->body_accepted[i]], r);
	/* A verdict while we are still sending: the rest of the message would
	 * be read as commands, so this connection is done for. */
	if (!s->body_drained && smtp_conn_unsent(s->conn) > s->after_dot) {
		finish(s, SMTP_END_BROKEN, "the server replied before the end of the message");
		return;
	}
	s->body_msg = NULL;
	if (!s->next_sent) {
		next_transaction(s);
		return;
	}
	/* Every recipient of the message has its result now. */
	s->next_sent = false;
	s->job->next_msg++;
	s->msgs_on_conn++;
	if (s->job->orphaned) {
		quit(s, SMTP_END_DONE, NULL);
		return;
	}
	s->state = S_TXN;
	smtp_conn_set_timeout(s->conn, s->cmds[s->nanswered].kind == CMD_DATA ? DATA_INIT_TIMEOUT : COMMAND_TIMEOUT);
}

/* ---- TLS -------------------------------------------------------------------- */

static bool tls_required(const struct smtp_session *s)
{
	return s->job->policy.tls_level == SMTP_TLS_REQUIRED;
}

/* Whether to send STARTTLS after this EHLO; may end the session (TLS
 * required but impossible). */
static bool want_starttls(struct smtp_session *s)
{
	if (s->tls_active || s->job->policy.tls_level == SMTP_TLS_NONE)
		return false;
	if (!tls_required(s) && (s->in_clear || smtp_tls_recently_failed(s->target)))
		return false;
	if (!s->ehlo.starttls) {
		if (tls_required(s))
			failf(s, SMTP_END_NEXT_TARGET, "STARTTLS required but not offered by %s", s->target->mx);
		return false;
	}
	return true;
}

static bool is_ip_literal(const char *host)
{
	struct addr_ip ip;
	return addr_parse_ip(host, &ip, NULL);
}

static SSL *new_ssl(struct smtp_session *s, struct buf *err)
{
	SSL_CTX *ctx = smtp_tls_context(&s->job->policy, err);
	if (ctx == NULL)
		return NULL;
	SSL *ssl = SSL_new(ctx);
	const char *mx = s->target->mx;
	if (is_ip_literal(mx)) {
		X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), mx);
	} else {
		SSL_set_tlsext_host_name(ssl, mx);
		SSL_set1_host(ssl, mx);
	}
	if (s->job->policy.reuse_tls_session) {
		SSL_SESSION *saved = smtp_tls_session_get(s->target);
		if (saved)
			SSL_set_session(ssl, saved);
	}
	return ssl;
}

static void start_tls(struct smtp_session *s)
{
	struct buf err = BUF_INIT;
	SSL *ssl = new_ssl(s, &err);
	if (ssl == NULL) {
		/* Our own setup is broken (a certificate file): no server
		 * would do better, so the queue waits for the operator. */
		log_error("TLS client setup for %s: %s", s->job->queue, buf_cstr(&err));
		if (tls_required(s)) {
			failf(s, SMTP_END_NEXT_TARGET, "TLS required but the client setup failed: %s", buf_cstr(&err));
		} else {
			smtp_tls_note_failure(s->target);
			quit(s, SMTP_END_RETRY_CLEAR, buf_cstr(&err));
		}
		buf_free(&err);
		return;
	}
	buf_free(&err);
	s->state = S_TLS;
	smtp_conn_set_timeout(s->conn, COMMAND_TIMEOUT);
	smtp_conn_start_tls(s->conn, ssl);
}

static void on_tls_done(void *arg)
{
	struct smtp_session *s = arg;
	SSL *ssl = smtp_conn_ssl(s->conn);
	s->tls_active = true;
	snprintf(s->peer.tls_protocol, sizeof s->peer.tls_protocol, "%s", tls_protocol_name(ssl));
	snprintf(s->peer.tls_cipher, sizeof s->peer.tls_cipher, "%s", tls_cipher_name(ssl));
	if (s->job->policy.have_ca && !tls_peer_verified(ssl)) {
		if (tls_required(s)) {
			failf(s, SMTP_END_NEXT_TARGET, "TLS verification of %s failed: %s", s->target->mx,
			      tls_verify_text(ssl));
			return;
		}
		/* Opportunistic: an unverified encrypted session still beats
		 * plain text, so delivery goes on over it. */
		log_info("%s: certificate of %s not verified (%s); delivering over TLS anyway", s->job->queue,
		         s->target->mx, tls_verify_text(ssl));
	}
	if (s->job->policy.reuse_tls_session) {
		SSL_SESSION *session = SSL_get1_session(ssl);
		if (session && SSL_SESSION_is_resumable(session))
			smtp_tls_session_put(s->target, session);
		else
			SSL_SESSION_free(session);
	}
	/* RFC 3207: forget what EHLO said in clear and ask again. */
	struct buf line = BUF_INIT;
	buf_printf(&line, "EHLO %s\r\n", s->job->policy.helo_name);
	send_text(s, buf_cstr(&line), COMMAND_TIMEOUT, S_EHLO);
	buf_free(&line);
}

/* ---- the dialogue before transactions ------------------------------------------ */

static void after_hello(struct smtp_session *s)
{
	snprintf(s->peer.esmtp, sizeof s->peer.esmtp, "%s", s->ehlo.keywords);
	if (want_starttls(s)) {
		send_text(s, "STARTTLS\r\n", COMMAND_TIMEOUT, S_STARTTLS);
		return;
	}
	if (s->state == S_QUIT)
		return; /* want_starttls ended the session */
	next_transaction(s);
}

static void on_greeting(struct smtp_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 == 2) {
		struct buf line = BUF_INIT;
		buf_printf(&line, "EHLO %s\r\n", s->job->policy.helo_name);
		send_text(s, buf_cstr(&line), COMMAND_TIMEOUT, S_EHLO);
		buf_free(&line);
		return;
	}
	struct buf diag = BUF_INIT;
	reply_diagnostic(r, &diag);
	if (r->code / 100 == 5 && s->job->policy.bounce_upon_5xx_greeting) {
		const char *enhanced = r->enhanced[0] ? r->enhanced : "5.0.0";
		smtp_job_fail_pending(s->job, SMTP_RCPT_BOUNCED, enhanced, buf_cstr(&diag), &s->peer);
		quit(s, SMTP_END_DONE, NULL);
	} else {
		/* RFC 5321 5.1: a refusing greeting sends us to the next MX. */
		quit(s, SMTP_END_NEXT_TARGET, buf_cstr(&diag));
	}
	buf_free(&diag);
}

static void on_ehlo(struct smtp_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 == 2) {
		smtp_ehlo_parse(r, &s->ehlo);
		after_hello(s);
		return;
	}
	if (s->tls_active) {
		struct buf diag = BUF_INIT;
		reply_diagnostic(r, &diag);
		quit(s, SMTP_END_NEXT_TARGET, buf_cstr(&diag));
		buf_free(&diag);
		return;
	}
	struct buf line = BUF_INIT;
	buf_printf(&line, "HELO %s\r\n", s->job->policy.helo_name);
	send_text(s, buf_cstr(&line), COMMAND_TIMEOUT, S_HELO);
	buf_free(&line);
}

static void on_helo(struct smtp_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		struct buf diag = BUF_INIT;
		reply_diagnostic(r, &diag);
		quit(s, SMTP_END_NEXT_TARGET, buf_cstr(&diag));
		buf_free(&diag);
		return;
	}
	memset(&s->ehlo, 0, sizeof s->ehlo);
	after_hello(s);
}

static void on_starttls(struct smtp_session *s, const struct smtp_reply *r)
{
	if (r->code == 220) {
		start_tls(s);
		return;
	}
	if (tls_required(s)) {
		struct buf reply = BUF_INIT;
		smtp_reply_format(r, &reply);
		failf(s, SMTP_END_NEXT_TARGET, "STARTTLS required but refused by %s: %s", s->target->mx,
		      buf_cstr(&reply));
		buf_free(&reply);
		return;
	}
	next_transaction(s); /* opportunistic: on in clear */
}

static void dispatch(struct smtp_session *s, const struct smtp_reply *r)
{
	switch (s->state) {
	case S_GREETING:
		on_greeting(s, r);
		break;
	case S_EHLO:
		on_ehlo(s, r);
		break;
	case S_HELO:
		on_helo(s, r);
		break;
	case S_STARTTLS:
		on_starttls(s, r);
		break;
	case S_TXN:
		on_txn_reply(s, r);
		break;
	case S_BODY:
		on_body_reply(s, r);
		break;
	case S_DOT_IGNORE:
	case S_RSET:
		next_transaction(s);
		break;
	case S_QUIT:
		finish(s, s->end, s->end_why);
		break;
	case S_IDLE: /* a 421 before closing an idle connection */
		on_idle_expired(-1, 0, s);
		break;
	default:
		break; /* S_CONNECT, S_TLS: nothing is expected */
	}
}

/* ---- connection events ------------------------------------------------------------ */

static void on_connected(void *arg)
{
	struct smtp_session *s = arg;
	snprintf(s->peer.local_ip, sizeof s->peer.local_ip, "%s", smtp_conn_local_ip(s->conn));
	s->state = S_GREETING;
	smtp_conn_set_timeout(s->conn, s->job->policy.greeting_timeout);
}

static void on_readable(void *arg, struct buf *in)
{
	struct smtp_session *s = arg;
	for (;;) {
		if (s->state == S_TLS || s->state == S_CONNECT)
			return; /* bytes before the handshake: dropped by the connection */
		enum smtp_line_status st = smtp_reply_take(in, &s->reply);
		if (st == SMTP_LINE_PARTIAL)
			return;
		if (st == SMTP_LINE_BAD) {
			on_failed(s, "malformed reply from the server");
			return;
		}
		/* A reply may end the session: it is freed only once the
		 * handler has returned, and then nothing more is read. */
		s->dispatching = true;
		dispatch(s, &s->reply);
		s->dispatching = false;
		if (s->dead) {
			session_free(s);
			return;
		}
		if (s->state == S_TLS)
			return;
	}
}

static void on_drained(void *arg)
{
	struct smtp_session *s = arg;
	if (s->state == S_BODY || (s->state == S_TXN && s->chunk_sent)) {
		s->body_drained = true;
		smtp_conn_set_timeout(s->conn, s->job->policy.data_termination_timeout);
	}
}

static const char *state_name(const struct smtp_session *s)
{
	if (s->state == S_TXN && s->chunk_sent && s->body_drained)
		return "after the end of data";
	switch (s->state) {
	case S_CONNECT:
		return "connecting";
	case S_GREETING:
		return "waiting for the greeting";
	case S_EHLO:
	case S_HELO:
		return "after EHLO";
	case S_STARTTLS:
		return "after STARTTLS";
	case S_TLS:
		return "during the TLS handshake";
	case S_TXN:
		return "during the transaction";
	case S_BODY:
		return "after the end of data";
	default:
		return "";
	}
}

static void on_idle_closed(struct smtp_session *s)
{
	for (struct smtp_session **p = &idle_sessions; *p; p = &(*p)->idle_next) {
		if (*p == s) {
			*p = s->idle_next;
			break;
		}
	}
	session_free(s);
}

static void on_failed(void *arg, const char *why)
{
	struct smtp_session *s = arg;
	struct buf text = BUF_INIT;
	if (s->state == S_CONNECT)
		buf_puts(&text, why);
	else
		buf_printf(&text, "%s (%s, %s)", why, s->target->mx, state_name(s));
	switch (s->state) {
	case S_QUIT:
		finish(s, s->end, s->end_why);
		break;
	case S_IDLE: /* the server closed an idle connection */
		on_idle_closed(s);
		break;
	case S_TLS:
		if (tls_required(s)) {
			finish(s, SMTP_END_NEXT_TARGET, buf_cstr(&text));
		} else {
			smtp_tls_note_failure(s->target);
			finish(s, SMTP_END_RETRY_CLEAR, buf_cstr(&text));
		}
		break;
	default:
		finish(s, s->began ? SMTP_END_BROKEN : SMTP_END_NEXT_TARGET, buf_cstr(&text));
		break;
	}
	buf_free(&text);
}

struct smtp_session *smtp_session_start(struct smtp_job *job, const struct smtp_target *target, bool in_clear,
                                        smtp_session_done_cb done)
{
	struct smtp_session *s = mem_zalloc(sizeof *s);
	s->job = job;
	s->target_copy = *target;
	s->target_copy.mx = mem_strdup(target->mx);
	s->target = &s->target_copy;
	s->done = done;
	s->in_clear = in_clear;
	s->state = S_CONNECT;
	s->peer.target = s->target;
	addr_ip_format(&s->target->ip, s->peer.remote_ip);
	smtp_reply_init(&s->reply);
	job->session = s;
	const struct addr_ip *source = job->policy.have_source ? &job->policy.source_ip : NULL;
	s->conn = smtp_conn_open(smtp_event_base(), s->target, source, job->policy.connect_timeout, &conn_events, s);
	return s;
}

void smtp_session_abort(struct smtp_session *s)
{
	if (s == NULL)
		return;
	s->job->session = NULL;
	session_free(s);
}
