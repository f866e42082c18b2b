/* smtpd.h: the private header of smtpd, the inbound ESMTP server.
 *
 * One process serves many sessions on one libevent loop.  The files:
 *   smtpd_main.c     daemon skeleton callbacks, configuration, listeners,
 *                    accepting, draining on stop
 *   smtpd_policy.c   the per-connection <source> policy and the TLS
 *                    contexts of the listeners
 *   smtpd_session.c  a session's I/O: lines in, replies out, timeouts,
 *                    STARTTLS and implicit TLS, closing
 *   smtpd_cmd.c      the SMTP commands
 *   smtpd_data.c     DATA and BDAT: framing, headers, Received
 *   smtpd_auth.c     AUTH PLAIN, LOGIN and EXTERNAL (certificates)
 *   smtpd_relay.c    who may send to which recipient
 *   smtpd_enqueue.c  handing a message to qmgr (the only file that knows
 *                    the enqueue protocol)
 *   smtpd_parse.c    pure parsers: ESMTP parameters, xtext,
 *                    base64, the end-of-data scanner (unit tested) */
#ifndef TERN_SMTPD_H
#define TERN_SMTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "addr.h"
#include "buf.h"
#include "mailaddr.h"
#include "value.h"

/* ---- limits (RFC 5321 section 4.5.3.1) ------------------------------------ */

#define SMTPD_COMMAND_LINE_MAX 512 /* octets with the CRLF */
#define SMTPD_TEXT_LINE_MAX 1000   /* octets with the CRLF */
#define SMTPD_AUTH_LINE_MAX 12288  /* RFC 4954 section 4 */
#define SMTPD_DOMAIN_MAX MAIL_DOMAIN_MAX
#define SMTPD_ENVID_MAX 100
/* Recipients per message when max-rcpt-per-message sets no limit: far above
 * what RFC 5321 asks (100), far below what would hurt memory. */
#define SMTPD_RCPT_HARD_MAX 10000
#define SMTPD_NAME_MAX 255 /* virtual MTA names and job ids from headers */

/* ---- pure parsers (smtpd_parse.c) ------------------------------------------- */

/* One ESMTP parameter keyword[=value] of MAIL or RCPT, pointing into a
 * copy of the command line. */
struct smtpd_param {
	char *keyword;
	char *value; /* NULL when absent */
};
#define SMTPD_PARAMS_MAX 16
/* Splits the rest of a MAIL or RCPT line (after the path) into parameters,
 * checking the RFC 5321 syntax of keywords and values.  text is modified. */
bool smtpd_parse_params(char *text, struct smtpd_param *params, size_t *count, const char **why);

/* RFC 3461 xtext.  decode checks the syntax; false on a bad form. */
bool smtpd_xtext_decode(const char *in, struct buf *out);
bool smtpd_xtext_valid(const char *in);
/* NOTIFY=NEVER or a list of SUCCESS,FAILURE,DELAY; normalised upper case. */
bool smtpd_parse_notify(const char *value, struct buf *out);
/* ORCPT=addr-type;xtext with addr-type rfc822 or utf-8. */
bool smtpd_parse_orcpt(const char *value, struct buf *out);

/* Strict base64 (RFC 4648, padding required, no line breaks). */
bool smtpd_base64_decode(const char *in, size_t len, struct buf *out);
void smtpd_base64_encode(const void *in, size_t len, struct buf *out);

/* The end-of-data scanner of DATA: finds CRLF.CRLF and nothing else,
 * removes dot-stuffing, and refuses bare LF and bare CR anywhere, so that
 * no "SMTP smuggling" variant can end a message early. */
enum smtpd_scan_state {
	SMTPD_SCAN_LINE_START,
	SMTPD_SCAN_DOT,
	SMTPD_SCAN_DOT_CR,
	SMTPD_SCAN_TEXT,
	SMTPD_SCAN_CR,
};
struct smtpd_scan {
	enum smtpd_scan_state state;
	size_t line_len;    /* octets of the current line so far */
	bool line_too_long; /* some line exceeded SMTPD_TEXT_LINE_MAX */
};
enum smtpd_scan_result {
	SMTPD_SCAN_MORE, /* all input consumed, no end yet */
	SMTPD_SCAN_END,  /* the final CRLF.CRLF is consumed */
	SMTPD_SCAN_BARE_LF,
	SMTPD_SCAN_BARE_CR,
};
void smtpd_scan_init(struct smtpd_scan *s);
/* Consumes input, appending unstuffed message text to out.  *consumed is
 * how many input octets were used (all of them for MORE). */
enum smtpd_scan_result smtpd_scan_data(struct smtpd_scan *s, const char *in, size_t len, size_t *consumed,
                                       struct buf *out);

/* Client text made safe for a log line: control characters become '?',
 * and at most max octets are kept ("..." marks a cut). */
void smtpd_log_safe(const char *in, size_t max, struct buf *out);

/* Case-insensitive domain pattern match (PowerMTA section 1.5): "*",
 * "example.com", "*.example.com", "[*.]example.com", "[10/8]". */
bool smtpd_domain_match(const char *pattern, const char *domain);

/* ---- configuration and policy (smtpd_policy.c) -------------------------------- */

struct conf;
struct smtpd_server;

/* A loaded configuration shared by the sessions started under it, so that
 * a reload does not pull it from under a session in flight. */
struct smtpd_conf {
	struct conf *conf;
	unsigned refs;
	char *hostname;
	char *spool;
	char *qmgr_socket;
	uint64_t max_sessions; /* total-max-smtp-in */
	uint64_t processes;    /* smtpd-processes resolved (conf_worker_processes) */
	bool relay_debug;
};
struct smtpd_conf *smtpd_conf_ref(struct smtpd_conf *c);
void smtpd_conf_unref(struct smtpd_conf *c);
/* Loads and checks the file; NULL with the diagnostics in err. */
struct smtpd_conf *smtpd_conf_load(const char *path, struct buf *err);

enum smtpd_add_date { SMTPD_DATE_NO, SMTPD_DATE_YES, SMTPD_DATE_OVERRIDE };

/* What a <source> says, copied out of the configuration once per
 * connection (and again after AUTH when the user has a source). */
struct smtpd_policy {
	char *source; /* the matched <source> name, for logs and Received */
	bool smtp_service;
	bool allow_starttls, require_starttls_before_auth, allow_unencrypted_plain_auth;
	bool allow_auth, require_auth, always_allow_relaying, require_client_certificate;
	bool allow_chunking, allow_smtputf8;
	bool add_received_header, hide_message_source, add_message_id_header;
	enum smtpd_add_date add_date_header;
	bool process_x_virtual_mta, retain_x_virtual_mta, reject_invalid_vmta, process_x_job, retain_x_job,
	    process_x_envid;
	bool log_connections, log_commands, log_tls;
	uint64_t max_message_size; /* VALUE_UNLIMITED: none */
	uint64_t max_rcpt;         /* never 0: SMTPD_RCPT_HARD_MAX at most */
	int64_t command_timeout, data_timeout;
	struct value_rate auth_failure_rate;
	const char *default_vmta; /* strings point into the configuration */
	const char *jobid_header;
	const char *const *remove_headers;
	size_t nremove_headers;
	uint64_t max_hops;
};

/* Resolves the policy for a client IP and a named source (NULL: none).
 * False when the named source does not exist. */
bool smtpd_policy_resolve(const struct smtpd_conf *c, const struct addr_ip *ip, const char *source_name,
                          struct smtpd_policy *out);
void smtpd_policy_free(struct smtpd_policy *p);

/* ---- listeners and the server (smtpd_main.c) ---------------------------------- */

struct smtpd_listener {
	struct smtpd_server *server;
	int fd;
	struct event *ev;
	char *name; /* as conf_block_name() gives it */
	bool immediate_tls;
	char *source_name; /* NULL: match by IP only */
	bool await_slot;   /* at total-max-smtp-in: leave clients in the backlog */
	bool paused;       /* not accepting until a session ends */
	void *ssl_ctx;     /* SSL_CTX, NULL when no certificate is configured */
};

struct smtpd_session;

struct smtpd_server {
	struct event_base *base;
	char *config_path;
	struct smtpd_conf *conf;
	struct smtpd_listener *listeners;
	size_t nlisteners;
	bool from_master;               /* one of smtpd-processes workers sharing the listeners */
	struct smtpd_session *sessions; /* doubly linked, for draining */
	size_t nsessions;
	bool stopping;
	struct event *drain_timer;
	unsigned long next_session_id;
	/* Connections to qmgr between messages, reused by the next one. */
	struct bufferevent **idle_qmgr;
	size_t nidle_qmgr;
	struct smtpd_enqueue_pipe *pipe; /* small messages' shared connection */
};

void smtpd_server_session_gone(struct smtpd_server *srv, struct smtpd_session *s);

/* Builds the SSL_CTX of a listener from its settings; false with err when
 * a certificate is configured but unusable. */
bool smtpd_listener_tls(struct smtpd_listener *l, const struct smtpd_conf *c, struct buf *err);

/* ---- sessions (smtpd_session.c, smtpd_cmd.c, smtpd_data.c, smtpd_auth.c) -------- */

enum smtpd_state {
	SMTPD_ST_COMMAND,   /* reading command lines */
	SMTPD_ST_DATA,      /* reading DATA text */
	SMTPD_ST_BDAT,      /* reading a BDAT chunk */
	SMTPD_ST_AUTH,      /* reading a SASL response line */
	SMTPD_ST_WAIT,      /* waiting for qmgr: input is held */
	SMTPD_ST_HANDSHAKE, /* TLS handshake in progress */
	SMTPD_ST_CLOSING,   /* flushing the last reply */
};

struct smtpd_rcpt {
	struct smtpd_rcpt *next;
	char *mailbox;
	char *notify; /* NULL when absent */
	char *orcpt;
};

/* Per-message state, from MAIL to the end of DATA or BDAT LAST. */
struct smtpd_txn {
	bool active; /* MAIL was accepted */
	struct mail_addr sender;
	uint64_t declared_size;
	char *body_type; /* "7BIT", "8BITMIME", NULL */
	char *envid;     /* decoded */
	char *ret;       /* "FULL", "HDRS", NULL */
	bool smtputf8;
	struct smtpd_rcpt *rcpts, **rcpt_tail;
	size_t nrcpts;
	/* DATA / BDAT */
	struct smtpd_scan scan;
	struct buf headers; /* the header section, until it is complete */
	bool headers_done;
	uint64_t size;   /* message octets received */
	bool too_big;    /* over max-message-size: refuse at the end */
	bool bad_header; /* an X-Virtual-MTA or job id header cannot be used */
	unsigned hops;
	bool bdat;          /* a BDAT transaction (DATA is then refused) */
	uint64_t bdat_left; /* octets of the current chunk still to read */
	bool bdat_last;
	bool bdat_discard;
	char *vmta, *job_id;
	struct smtpd_enqueue *enq;
};

struct smtpd_session {
	struct smtpd_session *prev, *next;
	struct smtpd_server *srv;
	struct smtpd_conf *conf;
	struct smtpd_listener *listener;
	unsigned long id;
	struct bufferevent *bev;
	struct addr_ip client_ip;
	uint16_t client_port;
	char client_text[ADDR_IP_STRLEN];
	struct smtpd_policy policy;
	enum smtpd_state state;
	char *helo;         /* NULL until EHLO/HELO */
	bool esmtp;         /* EHLO (not HELO) */
	bool tls;           /* TLS is up */
	bool plain_bev;     /* bev is a plain socket bufferevent: replies go out at once */
	bool skip_line;     /* discarding the rest of an over-long line */
	void *ssl;          /* SSL, owned by bev */
	void *starttls_ssl; /* SSL made at STARTTLS, owned here until the 220 has left */
	char *tls_protocol, *tls_cipher, *tls_subject, *tls_issuer;
	bool tls_verified;
	bool tls_shutdown; /* close_notify sent */
	bool held;         /* reading paused until qmgr catches up */
	bool out_held;     /* reading paused until the client reads replies */
	struct event *resume_ev;
	char *auth_user;
	/* SASL exchange in progress */
	int auth_mech;
	int auth_step;
	char *auth_login_user;
	struct smtpd_txn txn;
	unsigned messages, errors;
	struct buf line;     /* scratch for the current command line */
	struct buf replies;  /* replies not yet in bev's output (see release_replies) */
	bool greeted;        /* the 220 was sent (STARTTLS does not greet again) */
	bool drain_notified; /* the server is stopping */
	unsigned busy;       /* inside smtpd_session_process: freeing is deferred */
	bool dead;           /* freed while busy */
};

/* The session's lifecycle. */
void smtpd_session_start(struct smtpd_listener *l, int fd, const struct addr_ip *ip, uint16_t port);
/* Sends one reply (text without CRLF; continuation lines are separated by
 * '\n' and get "CODE-"). */
void smtpd_reply(struct smtpd_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends a final reply and closes once it is written. */
void smtpd_reply_close(struct smtpd_session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the connection now. */
void smtpd_session_abort(struct smtpd_session *s, const char *why);
/* Reads what the current state wants from the input buffer. */
void smtpd_session_process(struct smtpd_session *s);
/* Arms the read timeout for the current state. */
void smtpd_session_timeouts(struct smtpd_session *s);
/* Replaces the plain bufferevent by a TLS one (after "220 Ready"). */
void smtpd_session_starttls(struct smtpd_session *s);
/* Stop after the current transaction (server stopping). */
void smtpd_session_drain(struct smtpd_session *s);
/* qmgr took enough of the message: reading may go on (from the loop,
 * never from inside the caller). */
void smtpd_session_resume(struct smtpd_session *s);

/* Commands (smtpd_cmd.c): one complete line, without the CRLF. */
void smtpd_cmd_line(struct smtpd_session *s, char *line, size_t len);
void smtpd_txn_reset(struct smtpd_session *s);
const char *smtpd_protocol_name(const struct smtpd_session *s);
void smtpd_ehlo_reply(struct smtpd_session *s);

/* DATA and BDAT (smtpd_data.c). */
void smtpd_data_begin(struct smtpd_session *s); /* after DATA was accepted */
/* Consumes message input; returns octets used. */
size_t smtpd_data_input(struct smtpd_session *s, const char *in, size_t len);
/* discard: the chunk is read and dropped (its reply was sent). */
void smtpd_bdat_begin(struct smtpd_session *s, uint64_t size, bool last, bool discard);
size_t smtpd_bdat_input(struct smtpd_session *s, const char *in, size_t len);

/* AUTH (smtpd_auth.c). */
void smtpd_auth_command(struct smtpd_session *s, char *args);
void smtpd_auth_response(struct smtpd_session *s, char *line);
/* Ends a SASL exchange with the reply given. */
void smtpd_auth_cancel(struct smtpd_session *s, const char *reply);
/* The mechanisms to announce in EHLO ("PLAIN LOGIN"), "" for none. */
void smtpd_auth_mechanisms(const struct smtpd_session *s, struct buf *out);
bool smtpd_auth_throttled(const struct smtpd_session *s);

/* Relaying (smtpd_relay.c): NULL when the recipient is allowed, else the
 * reply to send. */
const char *smtpd_relay_check(const struct smtpd_session *s, const struct mail_addr *rcpt);

/* ---- enqueue (smtpd_enqueue.c) ----------------------------------------------- */

struct smtpd_enqueue;

/* The outcome qmgr gave: code 250 with a queue ID, 4xx or 5xx with a
 * reason; code 0 when qmgr could not be reached or broke off. */
typedef void (*smtpd_enqueue_done_fn)(struct smtpd_session *s, int code, const char *queue_id, const char *reason);

/* Connects to qmgr and sends the envelope; NULL (reason in err) when qmgr
 * is unreachable. */
struct smtpd_enqueue *smtpd_enqueue_open(struct smtpd_session *s, struct buf *err);
/* Streams message text. */
void smtpd_enqueue_write(struct smtpd_enqueue *e, const void *data, size_t len);
/* Octets written but not yet taken by qmgr (flow control). */
size_t smtpd_enqueue_pending(const struct smtpd_enqueue *e);
/* Ends the message and waits for qmgr's answer; done is called once. */
void smtpd_enqueue_finish(struct smtpd_enqueue *e, smtpd_enqueue_done_fn done);
/* Abandons the message (qmgr drops what it received). */
void smtpd_enqueue_abort(struct smtpd_enqueue *e);
/* Closes the idle connections to qmgr (stop, reload). */
void smtpd_enqueue_pool_clear(struct smtpd_server *srv);
/* The pipe (smtpd_enqueue.c) at a reload: it takes no new message and
 * closes once every message on it is answered. */
void smtpd_enqueue_pipe_retire(struct smtpd_server *srv);
/* ...and at the end: messages still on it get no answer. */
void smtpd_enqueue_pipe_close(struct smtpd_server *srv);

#endif
