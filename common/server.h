/* server.h: the skeleton every tern daemon (smtpd, qmgr, smtp, acctd)
 * runs in, so that privilege separation, logging and signal handling are
 * written once:
 *
 *   parse the common options -> open the log -> pre_init (still root:
 *   open keys, sockets) -> drop privileges, checked -> parent-death signal
 *   -> init (with the event loop) -> run until SIGTERM/SIGINT (stop) ;
 *   SIGHUP calls reload.
 *
 * Started by an ordinary user (tests, development), a daemon keeps that
 * user's identity and skips the drop. */
#ifndef TERN_SERVER_H
#define TERN_SERVER_H

#include <stdbool.h>

#include "buf.h"

struct event_base;

/* Options every daemon understands:
 *   -f        foreground: log to stderr instead of syslog
 *   -c FILE   configuration file
 *   -u USER   unprivileged user to run as (when started as root)
 *   -R        keep root privileges (run-as-root yes, for PowerMTA
 *             compatibility; warned about)
 *   -l FILE   log to FILE instead of syslog (opened before the drop, so
 *             the file may belong to root) */
struct server_options {
	bool foreground;
	bool stay_root;
	char *config_path;
	char *user;
	char *log_file;
};

struct server_daemon {
	const char *name; /* "smtpd": logs as "tern/smtpd" */
	void *ctx;        /* handed to every callback */
	/* As root, before the drop.  false (reason in err) stops the daemon.
	 * opts stays valid until server_main returns. */
	bool (*pre_init)(void *ctx, const struct server_options *opts, struct buf *err);
	/* After the drop, before the loop runs.  false stops the daemon. */
	bool (*init)(void *ctx, struct event_base *base, struct buf *err);
	/* SIGTERM or SIGINT: release what init set up; the loop ends next,
	 * unless drains is set. */
	void (*stop)(void *ctx);
	/* The daemon finishes work in flight after stop (smtpd lets sessions
	 * end): the skeleton then leaves the loop running, and the daemon calls
	 * event_base_loopexit() itself once it is done.  stop is called again
	 * on every further signal. */
	bool drains;
	/* SIGHUP; may be NULL. */
	void (*reload)(void *ctx);
	/* The daemon needs root to do its work (the local agent switches its
	 * effective identity per delivery): -R is expected, not warned about. */
	bool keeps_root;
};

/* Runs the daemon; returns the process exit status (0 after a stop, 2 on
 * bad options).  Environment problems (pre_init or init failing, a drop
 * that did not take) are fatal. */
int server_main(const struct server_daemon *daemon, int argc, char **argv, char **envp);

/* Parses the common options into opts (strings copied).  Returns false
 * with a usage message in err on an unknown option or stray argument. */
bool server_parse_options(int argc, char **argv, struct server_options *opts, struct buf *err);
void server_options_free(struct server_options *opts);

/* When running as root: becomes user (its groups, gid and uid, real,
 * effective and saved) and checks that the change took and that root
 * cannot be regained.  Otherwise does nothing and succeeds. */
bool server_drop_privileges(const char *user, struct buf *err);

/* A descriptor master handed over, named by an environment variable
 * (TERN_SERVICE_FD): the descriptor (close-on-exec, the variable removed),
 * -1 when the variable is not set, -2 (reason in err) when it does not
 * name an open descriptor. */
int server_inherited_fd(const char *variable, struct buf *err);

/* Sets the process title shown by ps ("tern/smtpd: 12 sessions"). */
void server_set_title(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
