/* master.h: the private header of the master supervisor.
 * master stays root, reads the configuration, opens the listening and
 * control sockets, starts every worker service and restarts the ones that
 * die (with a crash throttle), reloads on SIGHUP or `ternctl reload`, and
 * drains and stops everything on SIGTERM or `ternctl stop`. */
#ifndef TERN_MASTER_H
#define TERN_MASTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "addr.h"
#include "buf.h"
#include "conf.h"
#include "listen.h"
#include "log.h"
#include "mem.h"

struct event_base;
struct event;

/* ---- crash throttle (master_throttle.c) ------------------------------------ */

struct master_throttle {
	unsigned failures;    /* failed starts in a row */
	int64_t resume_at_ms; /* no start before this (monotonic) */
	bool logged;          /* the pause was reported */
};

void master_throttle_init(struct master_throttle *t);
/* Records a worker's exit; returns true when it counts as a failed start
 * (and a pause now applies). */
bool master_throttle_exit(struct master_throttle *t, bool was_ready, int64_t started_ms, int64_t now_ms);
int64_t master_throttle_wait_ms(const struct master_throttle *t, int64_t now_ms);
bool master_throttle_is_throttled(const struct master_throttle *t);

/* ---- listeners (master_listeners.c) ------------------------------------------ */

/* A listener has one copy of its sockets per smtpd process (SO_REUSEPORT),
 * so that the kernel spreads new connections over the processes instead of
 * the one that wakes first taking them all. */
struct master_listener {
	char *name; /* as conf_block_name() gives it: the key across reloads */
	struct addr_endpoint endpoint;
	struct listen_sockets *copies; /* copies[0] from listen_open, the rest from listen_open_copy */
	size_t copy_count;
};

struct master_listeners {
	struct master_listener *items;
	size_t count;
};

/* Opens the listeners of conf with at least `copies` copies each, reusing
 * the sockets of old (may be NULL) where the name is the same.  A kept
 * listener keeps all its copies, even more than asked for: closing one
 * would drop the connections waiting on it.  On failure nothing new stays
 * open, old is untouched, and err says why. */
bool master_listeners_open(const struct conf *conf, struct master_listeners *old, size_t copies,
                           struct master_listeners *out, struct buf *err);
/* Closes the sockets of old that next does not reuse, then frees old. */
void master_listeners_retire(struct master_listeners *old, const struct master_listeners *next);
void master_listeners_free(struct master_listeners *l);
/* The descriptors for worker `slot` of `workers`: the copies c with
 * c % workers == slot, of every listener, appended to fds. */
void master_listeners_for_worker(const struct master_listeners *l, unsigned slot, unsigned workers, int *fds,
                                 size_t *count);
/* "3=NAME,4=NAME" for those descriptors as they will be numbered in the
 * child (first_fd upwards), for TERN_LISTEN_FDS. */
void master_listeners_describe(const struct master_listeners *l, unsigned slot, unsigned workers, int first_fd,
                               struct buf *out);
/* How many descriptors one worker gets at most. */
size_t master_listeners_fd_count(const struct master_listeners *l);

/* ---- services and workers (master_service.c) --------------------------------- */

enum master_service_id {
	SERVICE_ACCTD,
	SERVICE_QMGR,
	SERVICE_SMTPD,
	SERVICE_SMTP,
	SERVICE_LOCAL,
	SERVICE_PICKUP,
	SERVICE_COUNT
};

struct master_worker {
	pid_t pid; /* 0: the slot is empty */
	int64_t started_ms;
	bool ready;    /* reported start-up done */
	int status_fd; /* read end of the readiness pipe, -1 once read */
	struct event *status_ev;
	bool draining; /* old generation: finishing up, not restarted */
	struct master_service *service;
	struct master_worker *next_draining;
};

struct master_service {
	enum master_service_id id;
	const char *name;
	unsigned wanted;               /* processes to keep running */
	struct master_worker *workers; /* wanted slots */
	struct master_throttle throttle;
	struct event *restart_ev; /* pending restart after a pause */
	int socket_fd;            /* shared private socket, or -1 */
	unsigned restarts;
	struct master *master;
};

/* ---- the supervisor ------------------------------------------------------------ */

struct master {
	char *config_path;
	char *daemon_dir; /* where the worker programs are */
	char *spool;
	char *user; /* the unprivileged user (or the invoking user) */
	uid_t user_uid;
	gid_t user_gid;
	bool foreground;
	bool run_as_root; /* workers keep root (run-as-root yes) */
	bool stopping;
	time_t started;
	unsigned reloads;
	struct conf *conf;
	struct event_base *base;
	struct master_listeners listeners;
	struct master_service services[SERVICE_COUNT];
	struct master_worker *draining; /* workers of earlier generations */
	struct event *stop_deadline_ev;
	int stop_phase; /* the phase told to stop last */
	int control_fd;
	struct event *control_ev;
};

void master_services_init(struct master *m);
/* Starts every worker slot that is empty and not paused by the throttle. */
void master_services_start(struct master *m);
/* Reaps exited children, schedules restarts. */
void master_services_reap(struct master *m);
/* Moves the current workers to the draining list (sending them SIGTERM) and
 * starts a new generation: used by reload. */
void master_services_replace(struct master *m, enum master_service_id id);
/* Sends sig to the current workers of one service. */
void master_services_signal_service(struct master *m, enum master_service_id id, int sig);
/* Sends sig to every worker (and to the draining ones). */
void master_services_signal(struct master *m, int sig);
/* Signals the workers that finished starting up (a signal a worker
 * handles only once its event loop runs). */
void master_services_signal_ready(struct master *m, int sig);
/* The same for the services of one stop phase: 0 for the front ends
 * (smtpd, smtp), 1 for the queue (qmgr), which stops once nothing feeds
 * it, 2 for accounting (acctd), which takes the queue's last records. */
#define MASTER_STOP_PHASES 3
void master_services_signal_phase(struct master *m, int phase, int sig);
bool master_services_phase_gone(const struct master *m, int phase);
/* True when no worker process is left. */
bool master_services_all_gone(const struct master *m);
void master_services_free(struct master *m);
/* Process ids of a service's live workers, space separated. */
void master_service_pids(const struct master_service *s, struct buf *out);
/* The processes conf asks for of service id (conf_worker_processes). */
unsigned master_services_wanted(const struct conf *conf, enum master_service_id id);
unsigned master_service_running(const struct master_service *s);
/* Workers that reported the end of their start-up. */
unsigned master_service_ready(const struct master_service *s);

/* ---- reload and stop (master_main.c) ------------------------------------------- */

/* Re-reads the configuration; on error keeps the old one and puts every
 * error line in err. */
bool master_reload(struct master *m, struct buf *err);
/* Reopens log-file after a rotation, in master and then in every worker
 * (SIGUSR2).  False, with the reason, when master cannot open it. */
bool master_reopen_log(struct master *m, struct buf *err);
void master_begin_stop(struct master *m);

/* ---- the control socket (master_control.c) ------------------------------------- */

#define MASTER_CONTROL_SOCKET "public/control"

bool master_control_open(struct master *m, struct buf *err);

/* ---- relaying requests to the owning daemon (master_relay.c) -------------------- */

struct relay;
struct bufferevent;

/* The daemon a verb belongs to ("qmgr" for "qmgr.show-queues"), or NULL
 * for master's own verbs. */
const char *master_relay_service(const char *verb);
/* Sends the request frame (payload without its length prefix) to the
 * service with the role added, and copies the replies to client until
 * the service's "end" frame; then calls done (ok false with a reason when
 * the service could not be reached or broke off).  NULL when the request
 * cannot even be sent. */
struct relay *master_relay_start(struct master *m, const char *service, struct bufferevent *client, const void *payload,
                                 size_t len, bool admin, void (*done)(void *arg, bool ok, const char *reason),
                                 void *arg);
/* Drops a relay whose client went away. */
void master_relay_cancel(struct relay *r);
void master_control_close(struct master *m);

#endif
