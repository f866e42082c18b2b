/* qmgr_main.c: the queue manager daemon, and the offline modes that
 * work on a queue while no qmgr runs (ternctl calls them):
 *
 *   qmgr [-f] [-R] [-c config] [-u user]   the daemon (server skeleton options)
 *   qmgr -C [-c config]          catastrophic recovery (ternctl queue recover)
 *   qmgr -L [-c config]          list messages, recipients, outbox
 *   qmgr -B QID [-c config]      print a message's body
 *
 * The spool directory and sync-msg-create come from the configuration. */
#include "qmgr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "mem.h"
#include "server.h"

#define CHECKPOINT_SECS 30
/* The event loop flushes the log itself while a flush takes less than
 * this on average (a disk that syncs in well under a millisecond): it
 * costs less than a hand-over to the flush thread and back.  A slower
 * disk's flushes go to the thread, so that deliveries and commands are
 * not held behind them. */
#define LOOP_FLUSH_MAX_MICROS 2000
/* Bodies left in segments closed this long ago go back into bodies.db,
 * so that one deferred message does not keep a whole segment. */
#define SWEEP_SECS 30
#define SWEEP_MIN_AGE 120
#define SWEEP_MAX_MESSAGES 1024
/* A stop waits this long at most for the results of running jobs and for
 * acctd to confirm the records it was sent; what is still out by then
 * comes back after the restart (smtp replays results, the outbox resends
 * from acctd's last seq). */
#define DRAIN_MSECS 5000
#define DRAIN_POLL_MSECS 20

struct qmgr_args {
	char mode; /* 0: the daemon, or 'C', 'L', 'B' */
	const char *qid;
	const char *config;
	/* argv for the server skeleton: the program name and its options */
};

struct qmgr_daemon {
	struct qmgr_settings settings;
	struct qmgr_store *st;
	int listen_fd;
	struct qmgr_flusher *flusher;
	struct qmgr_enqueue *eq;
	struct qmgr_sched *sched;
	struct qmgr_bounce *bounce;
	struct qmgr_outbox *outbox;
	struct qmgr_control *control;
	struct event *sweep;
	char *config_path; /* read again on SIGHUP */
	struct event_base *base;
	struct event *drain; /* stopping: polls for work still in flight */
	int64_t drain_deadline_ms;
	bool stopped;
};

static char *queue_dir(const struct qmgr_settings *s)
{
	return mem_asprintf("%s/queue", s->spool);
}

/* ---- the daemon ------------------------------------------------------------ */

static bool give_dir_to(const char *dir, uid_t uid, gid_t gid, struct buf *err)
{
	DIR *d = opendir(dir);
	if (d == NULL) {
		buf_printf(err, "cannot read %s: %s", dir, strerror(errno));
		return false;
	}
	bool ok = fchown(dirfd(d), uid, gid) == 0;
	struct dirent *e;
	while (ok && (e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			ok = fchownat(dirfd(d), e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0;
	}
	if (!ok)
		buf_printf(err, "cannot give %s to uid %ld: %s", dir, (long)uid, strerror(errno));
	closedir(d);
	return ok;
}

/* The environment is opened as root; Berkeley DB later creates log files
 * in the directory, and qmgr body segments in bodies/, as the
 * unprivileged user. */
static bool give_queue_to(const char *dir, uid_t uid, gid_t gid, struct buf *err)
{
	char *bodies = mem_asprintf("%s/bodies", dir);
	bool ok = give_dir_to(dir, uid, gid, err) && give_dir_to(bodies, uid, gid, err);
	free(bodies);
	return ok;
}

/* The owner for the files qmgr creates: the user it is about to become,
 * or none (-1) when it keeps its identity. */
static bool lookup_user(const struct server_options *opts, uid_t *uid, gid_t *gid, struct buf *err)
{
	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if ((getuid() != 0 && geteuid() != 0) || opts->stay_root)
		return true;
	const char *user = opts->user;
	struct passwd *pw = getpwnam(user);
	if (pw == NULL) {
		buf_printf(err, "unknown user %s", user);
		return false;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return true;
}

static bool make_spool(const char *spool, struct buf *err)
{
	if (mkdir(spool, 0755) < 0 && errno != EEXIST) {
		buf_printf(err, "cannot create %s: %s", spool, strerror(errno));
		return false;
	}
	return true;
}

static struct qmgr_args args;

static bool daemon_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	struct qmgr_daemon *d = ctx;
	uid_t uid;
	gid_t gid;
	d->config_path = mem_strdup(opts->config_path);
	if (!qmgr_settings_load(&d->settings, opts->config_path, err) || !lookup_user(opts, &uid, &gid, err) ||
	    !make_spool(d->settings.spool, err))
		return false;
	char *dir = queue_dir(&d->settings);
	d->st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, err);
	if (d->st)
		qmgr_store_want_records(d->st, d->settings.acct_records);
	bool ok = d->st != NULL && (uid == (uid_t)-1 || give_queue_to(dir, uid, gid, err));
	free(dir);
	if (ok)
		d->listen_fd = qmgr_enqueue_listen(d->settings.spool, uid, gid, err);
	return ok && d->listen_fd >= 0;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_daemon *d = arg;
	struct buf err = BUF_INIT;
	size_t moved;
	if (qmgr_store_sweep_bodies(d->st, SWEEP_MIN_AGE, SWEEP_MAX_MESSAGES, &moved, &err) != QMGR_STORE_OK)
		log_error("moving bodies out of old segments: %s", buf_cstr(&err));
	else if (moved > 0)
		log_info("moved %zu bodies out of old segments into bodies.db", moved);
	buf_free(&err);
	if (qmgr_store_broken(d->st))
		log_fatal("the queue needs recovery; exiting so that it runs at the next start");
}

static bool daemon_init(void *ctx, struct event_base *base, struct buf *err)
{
	struct qmgr_daemon *d = ctx;
	d->base = base;
	/* Two priorities: the group commit's news (replies that clients
	 * wait for) before everything else; the rest in between. */
	if (event_base_priority_init(base, QMGR_PRIORITIES) != 0) {
		buf_puts(err, "cannot set up event priorities");
		return false;
	}
	d->flusher = qmgr_flusher_start(base, d->st, CHECKPOINT_SECS, LOOP_FLUSH_MAX_MICROS, err);
	if (d->flusher == NULL || !qmgr_store_prepare_files(d->st, err))
		return false;
	d->sched = qmgr_sched_start(base, d->st, d->settings.conf, d->settings.spool, err);
	if (d->sched == NULL)
		return false;
	d->bounce = qmgr_bounce_new(d->st, d->sched, d->settings.conf);
	d->outbox = qmgr_outbox_start(base, d->st, d->settings.spool, d->bounce);
	d->eq = qmgr_enqueue_start(base, d->listen_fd, d->st, d->flusher, d->settings.sync_msg_create, d->sched, err);
	if (d->eq == NULL)
		return false;
	d->control = qmgr_control_new(d->sched, d->outbox);
	qmgr_enqueue_set_control(d->eq, d->control);
	struct timeval every = {SWEEP_SECS, 0};
	d->sweep = event_new(base, -1, EV_PERSIST, on_sweep, d);
	if (d->sweep == NULL || event_add(d->sweep, &every) != 0) {
		buf_puts(err, "cannot start the body sweep timer");
		return false;
	}
	log_info("queue %s/queue open, sync-msg-create %s", d->settings.spool,
	         d->settings.sync_msg_create ? "yes" : "no");
	return true;
}

/* SIGHUP: queue settings, bounce categories and the host name follow the
 * new file; the spool and sync-msg-create need a restart.  A file with
 * errors keeps the running configuration. */
static void daemon_reload(void *ctx)
{
	struct qmgr_daemon *d = ctx;
	struct qmgr_settings fresh;
	struct buf err = BUF_INIT;
	if (!qmgr_settings_load(&fresh, d->config_path, &err)) {
		log_error("reload refused, the running configuration stays: %s", buf_cstr(&err));
		buf_free(&err);
		return;
	}
	struct conf *old = d->settings.conf;
	d->settings.conf = fresh.conf;
	fresh.conf = old;
	qmgr_sched_reload(d->sched, d->settings.conf);
	qmgr_bounce_reload(d->bounce, d->settings.conf);
	qmgr_store_want_records(d->st, fresh.acct_records);
	d->settings.acct_records = fresh.acct_records;
	qmgr_settings_free(&fresh);
	log_info("configuration reloaded");
	buf_free(&err);
}

/* The flusher first: its last flush answers clients still waiting,
 * before their connections close. */
static void release_all(struct qmgr_daemon *d)
{
	if (d->drain)
		event_free(d->drain);
	d->drain = NULL;
	if (d->sweep)
		event_free(d->sweep);
	d->sweep = NULL;
	qmgr_flusher_stop(d->flusher);
	d->flusher = NULL;
	qmgr_enqueue_stop(d->eq);
	d->eq = NULL;
	qmgr_control_free(d->control);
	d->control = NULL;
	qmgr_outbox_stop(d->outbox);
	d->outbox = NULL;
	qmgr_sched_stop(d->sched);
	d->sched = NULL;
	qmgr_bounce_free(d->bounce);
	d->bounce = NULL;
	qmgr_store_close(d->st);
	d->st = NULL;
	qmgr_settings_free(&d->settings);
	free(d->config_path);
	d->config_path = NULL;
}

static void finish_stop(struct qmgr_daemon *d)
{
	if (d->stopped)
		return;
	d->stopped = true;
	release_all(d);
	event_base_loopexit(d->base, NULL);
}

/* Accounting records count only while acctd is there to confirm them. */
static bool work_in_flight(struct qmgr_daemon *d, uint64_t *jobs, uint64_t *records)
{
	*jobs = qmgr_sched_jobs_running(d->sched);
	*records = qmgr_outbox_connected(d->outbox) ? qmgr_outbox_pending(d->outbox) : 0;
	return *jobs > 0 || *records > 0;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr_daemon *d = arg;
	uint64_t jobs, records;
	if (work_in_flight(d, &jobs, &records)) {
		if (clock_monotonic_ms() < d->drain_deadline_ms) {
			struct timeval tv = {0, DRAIN_POLL_MSECS * 1000};
			evtimer_add(d->drain, &tv);
			return;
		}
		log_warning("stopping with %" PRIu64 " jobs and %" PRIu64
		            " accounting records unconfirmed: they resume after the restart",
		            jobs, records);
	}
	finish_stop(d);
}

/* The first stop signal: no job starts any more, and qmgr waits (at most
 * DRAIN_MSECS) for running jobs' results and acctd's confirmations, so
 * that a stop leaves a tidy queue.  A second signal stops at once. */
static void daemon_stop(void *ctx)
{
	struct qmgr_daemon *d = ctx;
	if (d->drain != NULL || d->sched == NULL) {
		finish_stop(d);
		return;
	}
	qmgr_sched_quiesce(d->sched);
	d->drain_deadline_ms = clock_monotonic_ms() + DRAIN_MSECS;
	d->drain = evtimer_new(d->base, on_drain, d);
	struct timeval zero = {0, 0};
	if (d->drain == NULL || evtimer_add(d->drain, &zero) != 0)
		finish_stop(d);
}

/* ---- offline modes ----------------------------------------------------------- */

static bool print_rcpts(struct qmgr_store *st, const char *qid, int64_t count)
{
	for (int64_t i = 0; i < count; i++) {
		struct qmgr_rcpt r;
		struct buf err = BUF_INIT;
		bool found;
		if (!qmgr_store_get_rcpt(st, qid, (size_t)i, &r, &found, &err)) {
			fprintf(stderr, "qmgr: %s: recipient %" PRId64 ": %s\n", qid, i, buf_cstr(&err));
			buf_free(&err);
			return false;
		}
		printf("rcpt\t%s\t%" PRId64 "\t%s\t%s\t%s\t%" PRId64 "\n", qid, i, qmgr_rcpt_state_name(r.state),
		       r.queue, r.address, r.next_attempt);
		qmgr_rcpt_free(&r);
	}
	return true;
}

struct list_ctx {
	struct qmgr_store *st;
	bool ok;
};

static bool list_message(void *ctx, const char *qid, const struct ipc_msg *msg)
{
	struct list_ctx *l = ctx;
	int64_t count = ipc_msg_int(msg, IPC_ATTR_RCPT_COUNT);
	printf("message\t%s\t%s\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\n", qid, ipc_msg_str(msg, IPC_ATTR_SENDER),
	       ipc_msg_int(msg, IPC_ATTR_RECEIVED), ipc_msg_int(msg, IPC_ATTR_BODY_SIZE), count);
	l->ok = print_rcpts(l->st, qid, count);
	return l->ok;
}

/* A "tq" record has no message: its queue stands in the ID's column. */
static bool list_outbox(void *ctx, uint64_t seq, const struct ipc_msg *rec)
{
	const char *qid = ipc_msg_str(rec, IPC_ATTR_QUEUE_ID);
	printf("outbox\t%" PRIu64 "\t%s\t%s\t%" PRId64 "\n", seq, ipc_msg_str(rec, IPC_ATTR_RECORD_TYPE),
	       qid ? qid : ipc_msg_str(rec, IPC_ATTR_QUEUE), ipc_msg_int(rec, IPC_ATTR_RCPT_INDEX));
	return true;
}

static bool run_list(struct qmgr_store *st, struct buf *err)
{
	uint64_t next;
	struct list_ctx l = {st, true};
	if (!qmgr_store_walk_messages(st, list_message, &l, err) || !l.ok ||
	    !qmgr_store_walk_outbox(st, list_outbox, st, err) || !qmgr_store_outbox_next(st, &next, err))
		return false;
	printf("outbox_next\t%" PRIu64 "\n", next);
	return fflush(stdout) == 0;
}

static bool run_body(struct qmgr_store *st, const char *qid, struct buf *err)
{
	struct ipc_msg msg;
	bool found;
	if (!qmgr_store_get_message(st, qid, &msg, &found, err))
		return false;
	ipc_msg_free(&msg);
	struct buf body = BUF_INIT;
	bool ok = qmgr_store_read_body(st, qid, &body, err);
	if (ok)
		ok = fwrite(body.data ? body.data : "", 1, body.len, stdout) == body.len && fflush(stdout) == 0;
	buf_free(&body);
	return ok;
}

static int run_offline(void)
{
	struct qmgr_settings settings;
	struct buf err = BUF_INIT;
	log_open("tern/qmgr", LOG_TO_STDERR, NULL);
	const char *config = args.config ? args.config : TERN_SYSCONFDIR "/tern/config";
	if (!qmgr_settings_load(&settings, config, &err))
		log_fatal("%s", buf_cstr(&err));
	char *dir = queue_dir(&settings);
	enum qmgr_open_mode mode = args.mode == 'C' ? QMGR_OPEN_CATASTROPHIC : QMGR_OPEN_RECOVER;
	struct qmgr_store *st = qmgr_store_open(dir, mode, &err);
	bool ok = st != NULL;
	if (ok && args.mode == 'C')
		log_info("catastrophic recovery of %s done", dir);
	else if (ok && args.mode == 'L')
		ok = run_list(st, &err);
	else if (ok && args.mode == 'B')
		ok = run_body(st, args.qid, &err);
	if (!ok)
		log_error("%s", buf_cstr(&err));
	qmgr_store_close(st);
	free(dir);
	buf_free(&err);
	qmgr_settings_free(&settings);
	return ok ? 0 : 1;
}

/* ---- options ----------------------------------------------------------------- */

static bool parse_args(int argc, char **argv)
{
	int c;
	opterr = 0;
	while ((c = getopt(argc, argv, "+CLB:fRc:u:l:")) != -1) {
		switch (c) {
		case 'C':
		case 'L':
			args.mode = (char)c;
			break;
		case 'B':
			args.mode = 'B';
			args.qid = optarg;
			break;
		case 'c':
			args.config = optarg;
			break;
		case 'u': /* the skeleton's options: server_main reads them */
		case 'f':
		case 'R':
		case 'l':
			break;
		default:
			return false;
		}
	}
	return optind == argc;
}

int main(int argc, char **argv, char **envp)
{
	if (!parse_args(argc, argv)) {
		fprintf(stderr, "usage: qmgr [-f] [-R] [-c config] [-u user] [-l log-file]\n"
		                "       qmgr -C | -L | -B queue-id [-c config]\n");
		return 2;
	}
	int rc;
	if (args.mode) {
		rc = run_offline();
	} else {
		struct qmgr_daemon d = {.listen_fd = -1};
		struct server_daemon daemon = {
		    .name = "qmgr",
		    .ctx = &d,
		    .pre_init = daemon_pre_init,
		    .init = daemon_init,
		    .stop = daemon_stop,
		    .drains = true,
		    .reload = daemon_reload,
		};
		/* Only the skeleton's own options are left (parse_args checked),
		 * and the process's real argv is what setproctitle can rewrite. */
		rc = server_main(&daemon, argc, argv, envp);
	}
	return rc;
}
