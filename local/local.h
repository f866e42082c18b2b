/* local.h: the private header of the local delivery agent.
 *
 * local serves qmgr over <spool>/private/local with the job protocol that
 * smtp speaks (common/job_proto.h, doc/delivery.md), for queues whose
 * <domain> has "type file".  Each recipient's local part is looked up in
 * the aliases database (expanded recursively: users, files, :include:
 * lists, remote addresses) and else in the passwd database; the message is
 * then appended to the user's mbox (append-mbox, with the dotlock and
 * fcntl locks Debian's mail tools expect) or written as a new file
 * (newfile-plain, newfile-pickup), always with the identity of the user
 * it is for.  Remote addresses that aliases yield are queued again through
 * qmgr's enqueue socket.  The agent keeps root for that (master's
 * per-service flag) and changes only its effective identity, per delivery.
 *
 * The pieces, one file each:
 *   local_main.c     daemon start-up, configuration, the service socket
 *   local_job.c      the job protocol with qmgr: frames in, results out
 *   local_deliver.c  one recipient: expansion, deliveries, its result
 *   local_alias.c    alias expansion (loops, depth, duplicates, :include:)
 *   local_mbox.c     append-mbox: locks, append, fsync, roll back
 *   local_newfile.c  newfile-plain and newfile-pickup
 *   local_format.c   pure text: the mbox form of a message, path macros
 *   local_priv.c     switching the effective identity per delivery
 *   local_forward.c  queueing the copies for remote alias targets
 */
#ifndef TERN_LOCAL_H
#define TERN_LOCAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"
#include "conf.h"

/* ---- results ------------------------------------------------------------------ */

enum local_status { LOCAL_DELIVERED, LOCAL_DEFERRED, LOCAL_BOUNCED };

struct local_result {
	enum local_status status;
	char dsn[16];     /* "2.0.0", "4.2.0", "5.1.1" */
	struct buf reason; /* plain text */
};

void local_result_init(struct local_result *r);
void local_result_free(struct local_result *r);
/* Sets status, code and reason (printf-style). */
void local_result_set(struct local_result *r, enum local_status status, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ---- messages and jobs (local_job.c) ---------------------------------------------- */

struct local_rcpt {
	int64_t index;
	char *address, *orcpt, *notify;
};

struct local_msg {
	char *queue_id, *sender, *envid, *ret, *body_type;
	struct local_rcpt *rcpts;
	size_t nrcpts, cap;
	struct buf body; /* as qmgr sent it: CRLF line ends */
};

enum local_format { LOCAL_APPEND_MBOX, LOCAL_NEWFILE_PLAIN, LOCAL_NEWFILE_PICKUP };

/* A queue's settings, from its <domain> blocks. */
struct local_settings {
	enum local_format format;
	const char *destination; /* file-destination, NULL when unset */
	const char *domain;      /* the queue's domain */
};

/* ---- identities (local_priv.c) ------------------------------------------------- */

/* Whom a delivery is written as. */
struct local_ident {
	uid_t uid;
	gid_t gid;
	char name[64];
	bool check_owner; /* an existing file must belong to uid */
};

/* Remembers whether we run as root, and the mail group. */
void local_priv_init(void);
bool local_priv_root(void);
/* The identity of a user from the passwd database; false when unknown. */
bool local_priv_user(const char *name, struct local_ident *id);
/* The identity for files named by an alias source owned by owner: the
 * owner, but never root (nobody instead); ourselves when not root. */
void local_priv_for_owner(uid_t owner, struct local_ident *id);
/* Becomes id (effective uid, gid mail, groups) when root; false with the
 * reason when the change did not take.  local_priv_restore goes back. */
bool local_priv_become(const struct local_ident *id, struct buf *err);
void local_priv_restore(void);

/* ---- the mbox form and path macros (local_format.c, pure) ----------------------------- */

/* "From SENDER DATE\n" (MAILER-DAEMON for the null sender; DATE as
 * asctime, in local time). */
void local_format_from_line(struct buf *out, const char *sender, time_t when);
/* The message as an mbox entry after its From line: Return-Path and
 * Delivered-To first, LF line ends, "From " at a line start quoted as
 * ">From ", a final newline and one blank line. */
void local_format_mbox_body(struct buf *out, const char *sender, const char *delivered_to, const char *body,
                            size_t len);
/* Does the header section hold "Delivered-To: address" (a loop)? */
bool local_format_has_delivered_to(const char *body, size_t len, const char *address);
/* Expands $user and $domain (also ${user}, ${domain}) in a
 * file-destination.  false with the reason on another macro or a value
 * that would leave the directory ('/' or a leading '.'). */
bool local_format_path(const char *tmpl, const char *user, const char *domain, struct buf *out, struct buf *err);

/* ---- writing (local_mbox.c, local_newfile.c) ----------------------------------------- */

/* Appends the message to the mbox at path, as id; the result says how it
 * went (delivered only after fsync; on any error the file is cut back). */
void local_mbox_deliver(const char *path, const struct local_ident *id, const struct local_msg *msg,
                        const char *delivered_to, struct local_result *r);
/* One new file in the directory dir, as id; pickup adds x-sender and
 * x-receiver lines first. */
void local_newfile_deliver(const char *dir, bool pickup, const struct local_ident *id, const struct local_msg *msg,
                           const char *recipient, struct local_result *r);

/* ---- alias expansion (local_alias.c) ----------------------------------------------------- */

enum local_dest_kind { LOCAL_DEST_USER, LOCAL_DEST_FILE, LOCAL_DEST_REMOTE, LOCAL_DEST_FAILED };

struct local_dest {
	enum local_dest_kind kind;
	char *name;               /* user name, path or address */
	struct local_ident ident; /* users and files: who writes */
	struct local_result fail; /* LOCAL_DEST_FAILED */
	char *via;                /* the alias it came from, or NULL */
};

struct local_dests {
	struct local_dest *items;
	size_t count;
};

/* Is domain one of ours (its <domain> has type file)? */
typedef bool (*local_domain_fn)(void *ctx, const char *domain);

/* Opens (or reopens, when the file changed) the aliases database of the
 * configured alias-file; warns once when it is missing or older than the
 * source. */
void local_alias_setup(const char *alias_file);
void local_alias_shutdown(void);
/* Expands a local part into destinations.  A name neither aliased nor a
 * user gives a failed destination (5.1.1 user unknown); a database error
 * one that defers. */
void local_alias_expand(const char *local_part, const char *domain, local_domain_fn is_local, void *ctx,
                        struct local_dests *out);
void local_dests_free(struct local_dests *d);

/* ---- forwarding (local_forward.c) ---------------------------------------------------------- */

/* Queues one copy of msg for the remote addresses through qmgr (sender
 * kept, a Delivered-To line added); r says whether qmgr took it. */
void local_forward(const char *spool, const struct local_msg *msg, const char *delivered_to,
                   const char *const *addresses, size_t n, struct local_result *r);

/* ---- one recipient (local_deliver.c) --------------------------------------------------------- */

struct local_context {
	const struct conf *conf;
	const char *spool;
};

/* Delivers msg to one recipient of a queue with settings s. */
void local_deliver_rcpt(const struct local_context *ctx, const struct local_settings *s, const struct local_msg *msg,
                        const struct local_rcpt *rcpt, struct local_result *r);

/* ---- the service (local_job.c, local_main.c) -------------------------------------------------- */

struct event_base;
bool local_job_listen(struct event_base *base, int fd, struct buf *err);
void local_job_shutdown(void);
/* The configuration and spool of the jobs that start now. */
const struct conf *local_conf_current(void);
const char *local_spool(void);

#endif
