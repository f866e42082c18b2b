/* smtp.h: the private header of the smtp delivery agent.
 *
 * One smtp process serves qmgr over <spool>/private/smtp: qmgr hands it
 * delivery jobs (one queue, domain/vmta, and one or more messages) and gets
 * back a result for every recipient (doc/delivery.md).  Everything runs on
 * one libevent loop: the qmgr connections, DNS (libunbound through ub_fd)
 * and any number of outbound SMTP sessions, each a non-blocking socket with
 * non-blocking OpenSSL once STARTTLS has been negotiated.
 *
 * The pieces, one file each:
 *   smtp_main.c     daemon start-up, configuration, the service socket
 *   smtp_job.c      the job protocol with qmgr: frames in, results out
 *   smtp_policy.c   a queue's typed settings (routes, TLS, limits, timeouts)
 *   smtp_route.c    smtp-hosts / route parsing and the target list
 *   smtp_dns.c      MX and address lookups with libunbound
 *   smtp_deliver.c  a job's delivery: targets, connections, fallbacks
 *   smtp_session.c  the SMTP dialogue of one connection
 *   smtp_conn.c     socket and TLS I/O with timeouts
 *   smtp_tls.c      TLS contexts, remembered handshake failures, sessions
 *   smtp_reply.c    SMTP replies, EHLO keywords, body encoding (pure code)
 */
#ifndef TERN_SMTP_H
#define TERN_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "addr.h"
#include "buf.h"
#include "conf.h"
#include "tls.h"

struct event_base;
struct smtp_client;
struct smtp_job;

/* ---- replies and the wire form of a message (smtp_reply.c) -------------- */

/* A complete (possibly multi-line) SMTP reply. */
struct smtp_reply {
	int code;          /* 250 */
	char enhanced[16]; /* "2.1.5", or "" when the server sent none */
	struct buf text;   /* the lines, "\n"-joined, without codes */
};

enum smtp_line_status { SMTP_LINE_PARTIAL, SMTP_LINE_COMPLETE, SMTP_LINE_BAD };

/* Takes one complete reply from the front of in (consuming it); PARTIAL
 * leaves in untouched until more arrives. */
enum smtp_line_status smtp_reply_take(struct buf *in, struct smtp_reply *reply);
void smtp_reply_init(struct smtp_reply *reply);
void smtp_reply_free(struct smtp_reply *reply);
/* The reply on one line ("250 2.0.0 ok"; the lines of a multi-line
 * reply joined by blanks). */
void smtp_reply_format(const struct smtp_reply *reply, struct buf *out);
/* An enhanced code for a reply without one, from its class. */
const char *smtp_reply_default_enhanced(int code);

/* ESMTP extensions we use, from the EHLO reply. */
struct smtp_ehlo {
	bool pipelining, size, eightbitmime, dsn, smtputf8, starttls, chunking;
	uint64_t size_limit; /* 0: none announced */
	char keywords[512];  /* "PIPELINING,SIZE,8BITMIME,..." for accounting */
};
void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_ehlo *out);

/* Appends body to out with CRLF line ends, ending in CRLF: the content
 * as BDAT sends it (RFC 3030).  Returns the bytes appended, the message
 * size as SIZE and accounting count it. */
size_t smtp_body_encode(const char *body, size_t len, struct buf *out);
/* The content as DATA sends it: emit is called with consecutive pieces
 * of it, dot-stuffed (RFC 5321 4.5.2); the final "." line is not added. */
typedef void (*smtp_emit_fn)(void *arg, const void *data, size_t len);
void smtp_body_dot_stuff(const char *content, size_t len, smtp_emit_fn emit, void *arg);
/* xtext (RFC 3461) of s, for ORCPT and ENVID built from plain text. */
void smtp_xtext_append(struct buf *out, const char *s);

/* ---- routes (smtp_route.c) ------------------------------------------------ */

/* One entry of smtp-hosts or route. */
struct smtp_hop {
	char *host;     /* host name, or IP text for [IP] literals */
	bool literal;   /* [IP]: no DNS */
	bool lookup_mx; /* lookup-mx:DOMAIN: host is the domain */
	uint16_t port;  /* 0: default-smtp-port */
};

/* Preference levels of hops, tried in order; within a level in random
 * order (RFC 5321 5.1: equal preferences are spread). */
struct smtp_route {
	size_t nlevels;
	struct smtp_hop **levels; /* levels[i][0..counts[i]) */
	size_t *counts;
};

/* Parses one hop ("[127.0.0.1]:2526", "mx.example.com", "host:25",
 * "[IPv6:2001:db8::1]", "lookup-mx:other.example").  false with a
 * sentence in err on a bad entry. */
bool smtp_hop_parse(const char *text, struct smtp_hop *hop, struct buf *err);
/* A route from smtp-hosts levels (lists) or from route text ("a, b; c"). */
bool smtp_route_from_levels(const struct conf_list *levels, size_t nlevels, struct smtp_route *route, struct buf *err);
bool smtp_route_from_text(const char *text, struct smtp_route *route, struct buf *err);
void smtp_route_free(struct smtp_route *route);

/* ---- a queue's settings (smtp_policy.c) ---------------------------------- */

enum smtp_tls_level {
	SMTP_TLS_NONE,          /* use-starttls no */
	SMTP_TLS_OPPORTUNISTIC, /* use-starttls yes: STARTTLS when offered */
	SMTP_TLS_REQUIRED,      /* require-starttls yes: no TLS, no delivery */
};

struct smtp_policy {
	enum smtp_tls_level tls_level;
	struct tls_settings tls;
	bool reuse_tls_session;
	bool have_ca; /* verify the server's chain and name */
	/* Timeouts in seconds. */
	int64_t connect_timeout, greeting_timeout, data_send_timeout, data_termination_timeout;
	uint64_t max_msg_per_connection; /* 0: unlimited */
	int64_t connection_idle_timeout; /* 0: close when the job is done */
	uint64_t max_rcpt_per_transaction;
	uint16_t default_port;
	bool ignore_pipelining, ignore_8bitmime, ignore_dsn, ignore_chunking;
	bool bounce_upon_5xx_greeting;
	/* bounce-upon-no-mx: yes bounces at once; an interval or no falls
	 * back to the domain's addresses (qmgr bounces by age). */
	bool bounce_upon_no_mx;
	int64_t retry_after_dns_error;
	/* smtp-hosts or route; without one, the domain's MX. */
	bool have_route;
	struct smtp_route route;
	char *route_error; /* a route that does not parse defers the queue */
	/* Source address and EHLO name (smtp-source-host, host-name). */
	bool have_source;
	struct addr_ip source_ip;
	char *helo_name;
};

/* Fills policy from the resolved settings of a queue; conf is needed for
 * the <virtual-mta> (smtp-source-host) and global settings. */
void smtp_policy_load(struct smtp_policy *policy, const struct conf *conf, const struct conf_settings *settings,
                      const char *vmta);
void smtp_policy_free(struct smtp_policy *policy);

/* A place to connect to. */
struct smtp_target {
	char *mx; /* the host name as routed (dsnMta) */
	struct addr_ip ip;
	uint16_t port;
};

struct smtp_targets {
	struct smtp_target *items;
	size_t count, cap;
};
void smtp_targets_add(struct smtp_targets *t, const char *mx, const struct addr_ip *ip, uint16_t port);
void smtp_targets_free(struct smtp_targets *t);

/* ---- DNS (smtp_dns.c) -------------------------------------------------------- */

/* How a lookup of the targets of a route or domain ended. */
enum smtp_dns_outcome {
	SMTP_DNS_OK,
	SMTP_DNS_TEMPFAIL, /* server failure, timeout: retry-after-dns-error */
	SMTP_DNS_NXDOMAIN, /* the domain does not exist */
	SMTP_DNS_NO_MX,    /* no MX and bounce-upon-no-mx, or no address at all */
	SMTP_DNS_NULL_MX,  /* RFC 7505: the domain accepts no mail */
};

typedef void (*smtp_targets_cb)(void *arg, enum smtp_dns_outcome outcome, const char *why,
                                struct smtp_targets *targets);

/* Sets up the resolver on the loop: name_servers are "IP" or "IP:PORT"
 * ("[IPv6]:PORT"); none means /etc/resolv.conf. */
bool smtp_dns_init(struct event_base *base, const struct conf_list *name_servers, struct buf *err);
void smtp_dns_shutdown(void);
/* Resolves the targets of a domain (by MX) or of a static route into a
 * list in the order to try; cb is called once, from the loop (never
 * before this returns).  Returns a handle for smtp_dns_cancel. */
struct smtp_lookup *smtp_dns_targets(const char *domain, const struct smtp_route *route, uint16_t default_port,
                                     bool bounce_upon_no_mx, smtp_targets_cb cb, void *arg);
void smtp_dns_cancel(struct smtp_lookup *lookup);

/* ---- TLS (smtp_tls.c) -------------------------------------------------------- */

/* The client context for a policy's TLS settings, shared by every queue
 * with the same settings; NULL with the reason in err. */
SSL_CTX *smtp_tls_context(const struct smtp_policy *policy, struct buf *err);
/* Builds the contexts of every <domain> block while still root, so that
 * certificate files need not be readable by the unprivileged user. */
void smtp_tls_preload(const struct conf *conf);
void smtp_tls_shutdown(void);
/* Opportunistic TLS remembers hosts whose handshake failed, so the next
 * connection goes in clear at once instead of failing again. */
void smtp_tls_note_failure(const struct smtp_target *target);
bool smtp_tls_recently_failed(const struct smtp_target *target);
/* reuse-ssl-session: a session to resume with this target, or NULL. */
SSL_SESSION *smtp_tls_session_get(const struct smtp_target *target);
void smtp_tls_session_put(const struct smtp_target *target, SSL_SESSION *session);

/* ---- connections (smtp_conn.c) --------------------------------------------- */

struct smtp_conn;

/* What a connection reports to its owner. */
struct smtp_conn_events {
	void (*connected)(void *arg);
	void (*readable)(void *arg, struct buf *in); /* new bytes in in */
	void (*tls_done)(void *arg);                 /* handshake finished */
	void (*drained)(void *arg);                  /* everything queued was sent */
	void (*failed)(void *arg, const char *why);  /* error, timeout, EOF */
};

/* Starts a non-blocking connect, from source when given. */
struct smtp_conn *smtp_conn_open(struct event_base *base, const struct smtp_target *target,
                                 const struct addr_ip *source, int64_t timeout, const struct smtp_conn_events *events,
                                 void *arg);
/* Queues bytes for sending (through TLS once it is on). */
void smtp_conn_write(struct smtp_conn *c, const void *data, size_t len);
/* Bytes queued and not yet written to the socket (or TLS). */
size_t smtp_conn_unsent(const struct smtp_conn *c);
/* Starts the TLS handshake over the connection; bytes received before it
 * are dropped (RFC 3207: nothing sent in clear may be taken as protected). */
void smtp_conn_start_tls(struct smtp_conn *c, SSL *ssl);
SSL *smtp_conn_ssl(struct smtp_conn *c);
/* The timer for what the owner waits for now (reply, data). */
void smtp_conn_set_timeout(struct smtp_conn *c, int64_t seconds);
/* Local address of the connection, "" before it is connected. */
const char *smtp_conn_local_ip(const struct smtp_conn *c);
void smtp_conn_close(struct smtp_conn *c);

/* ---- sessions (smtp_session.c) ----------------------------------------------- */

/* A recipient of a message, and its result once known. */
/* RETURNED: given back to qmgr unsent (qmgr went away before it was
 * attempted). */
enum smtp_rcpt_status {
	SMTP_RCPT_PENDING,
	SMTP_RCPT_DELIVERED,
	SMTP_RCPT_DEFERRED,
	SMTP_RCPT_BOUNCED,
	SMTP_RCPT_RETURNED
};

struct smtp_rcpt {
	int64_t index; /* qmgr's number for the recipient */
	char *address, *orcpt, *notify;
	enum smtp_rcpt_status status;
};

struct smtp_msg {
	char *queue_id, *sender, *envid, *ret, *body_type;
	bool smtputf8;
	struct smtp_rcpt *rcpts;
	size_t nrcpts, cap;
	struct buf body;    /* as qmgr sent it */
	struct buf content; /* CRLF line ends, not dot-stuffed (smtp_body_encode) */
};

/* What one connection found out, copied into every result it produced. */
struct smtp_peer {
	const struct smtp_target *target;
	char remote_ip[ADDR_IP_STRLEN]; /* the target's, as text */
	char local_ip[ADDR_IP_STRLEN];
	char esmtp[512];
	char tls_protocol[32], tls_cipher[128];
};

/* How a session ended, for the delivery that started it. */
enum smtp_session_end {
	SMTP_END_DONE,           /* it did what it could; recipients have results */
	SMTP_END_NEXT_TARGET,    /* connection failure, 4xx greeting: try the next */
	SMTP_END_RETRY_CLEAR,    /* opportunistic TLS failed: same target in clear */
	SMTP_END_CONNECTION_CAP, /* max-msg-per-connection reached: reconnect */
	SMTP_END_BROKEN,         /* failed after transactions began: defer the rest */
};

struct smtp_session;
typedef void (*smtp_session_done_cb)(struct smtp_job *job, enum smtp_session_end end, const char *why);

/* Opens a connection to target and delivers the job's unfinished
 * messages.  in_clear forbids STARTTLS (the retry after a failed
 * opportunistic handshake). */
struct smtp_session *smtp_session_start(struct smtp_job *job, const struct smtp_target *target, bool in_clear,
                                        smtp_session_done_cb done);
void smtp_session_abort(struct smtp_session *s);
/* Gives the job an idle connection of its queue, if there is one (the
 * delivery then goes on from there); false when there is none. */
bool smtp_session_adopt(struct smtp_job *job, smtp_session_done_cb done);
/* Closes the idle connections (stop). */
void smtp_session_shutdown(void);

/* ---- jobs (smtp_job.c, smtp_deliver.c) ----------------------------------- */

struct smtp_job {
	struct smtp_client *client; /* NULL once qmgr went away */
	int64_t id;
	char *queue, *domain, *vmta;
	struct smtp_conf *conf;
	struct smtp_policy policy;
	struct smtp_msg *msgs;
	size_t nmsgs, cap;
	size_t next_msg; /* the first message not yet finished */
	bool running;
	bool orphaned;   /* qmgr went away: finish the transaction under way, return the rest */
	struct buf sent; /* result frames qmgr has not confirmed (ack) */
	/* delivery */
	struct smtp_lookup *lookup;
	struct smtp_targets targets;
	size_t next_target;
	struct smtp_session *session;
	struct buf last_error; /* the reason the last target failed */
	struct smtp_job *next; /* in the client's list */
};

/* Sends the result of one recipient to qmgr (when still connected). */
void smtp_job_report(struct smtp_job *job, const struct smtp_msg *msg, struct smtp_rcpt *rcpt,
                     enum smtp_rcpt_status status, const char *enhanced, const char *diagnostic,
                     const struct smtp_peer *peer);
/* Every pending recipient of the job's unfinished messages gets status
 * with diagnostic why (a queue-level outcome). */
void smtp_job_fail_pending(struct smtp_job *job, enum smtp_rcpt_status status, const char *enhanced, const char *why,
                           const struct smtp_peer *peer);
/* Ends the job: "done" to qmgr, then freed. */
void smtp_job_finish(struct smtp_job *job, const char *outcome, const char *reason, int64_t retry_after);

/* Every pending recipient is given back to qmgr unsent; the job ends. */
void smtp_job_return_rest(struct smtp_job *job);

void smtp_deliver_start(struct smtp_job *job);
/* qmgr went away: a job that has not sent a message's final dot stops
 * now; one waiting for the reply to it stops after that reply. */
void smtp_deliver_orphaned(struct smtp_job *job);
/* The session is waiting for the reply to a message's final dot: the
 * server may be taking it. */
bool smtp_session_delivering(const struct smtp_session *s);
void smtp_deliver_abort(struct smtp_job *job);

/* ---- the process (smtp_main.c) ----------------------------------------------- */

/* A loaded configuration, kept alive while jobs use it (a reload does not
 * change the settings of a running job). */
struct smtp_conf {
	struct conf *conf;
	unsigned refs;
};

struct smtp_conf *smtp_conf_current(void);
struct smtp_conf *smtp_conf_ref(struct smtp_conf *c);
void smtp_conf_unref(struct smtp_conf *c);
struct event_base *smtp_event_base(void);

/* The service socket: accepts qmgr connections; unconfirmed results go
 * back to qmgr under spool. */
bool smtp_job_listen(struct event_base *base, int fd, const char *spool, struct buf *err);
void smtp_job_shutdown(void);

/* ---- replaying unconfirmed results to qmgr (smtp_replay.c) ------------------- */

void smtp_replay_init(struct event_base *base, const char *spool);
/* Keeps a job's result frames (taken over) until qmgr confirms them. */
void smtp_replay_add(int64_t job_id, struct buf *frames);
bool smtp_replay_pending(void);
void smtp_replay_shutdown(void);

#endif
