/* server.c: the daemon skeleton (see server.h). */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <bsd/unistd.h>
#include <event2/event.h>

#include "config.h"
#include "log.h"
#include "mem.h"

#define DEFAULT_CONFIG TERN_SYSCONFDIR "/tern/config"
/* A logged line waits at most this long for the rest of its batch. */
#define LOG_FLUSH_DELAY_MS 10

/* ---- options --------------------------------------------------------------- */

bool server_parse_options(int argc, char **argv, struct server_options *opts, struct buf *err)
{
	memset(opts, 0, sizeof(*opts));
	const char *config = DEFAULT_CONFIG, *user = TERN_USER;
	bool ok = true;
	int c;
	optind = 1;
	opterr = 0;
	const char *log_file = NULL;
	while (ok && (c = getopt(argc, argv, "+fRc:u:l:")) != -1) {
		switch (c) {
		case 'f':
			opts->foreground = true;
			break;
		case 'R':
			opts->stay_root = true;
			break;
		case 'c':
			config = optarg;
			break;
		case 'l':
			log_file = optarg;
			break;
		case 'u':
			user = optarg;
			break;
		default:
			buf_printf(err, "unknown option -%c or missing argument", optopt);
			ok = false;
		}
	}
	if (ok && optind < argc) {
		buf_printf(err, "unexpected argument \"%s\"", argv[optind]);
		ok = false;
	}
	if (!ok) {
		buf_puts(err, "; usage: [-f] [-R] [-c config-file] [-u user] [-l log-file]");
		return false;
	}
	/* Copies: setproctitle may later overwrite the argv strings. */
	opts->config_path = mem_strdup(config);
	opts->user = mem_strdup(user);
	opts->log_file = log_file ? mem_strdup(log_file) : NULL;
	return true;
}

void server_options_free(struct server_options *opts)
{
	free(opts->config_path);
	free(opts->user);
	free(opts->log_file);
	memset(opts, 0, sizeof(*opts));
}

/* ---- privileges -------------------------------------------------------------- */

static bool running_as_root(void)
{
	return getuid() == 0 || geteuid() == 0;
}

static bool drop_took(uid_t uid, gid_t gid, struct buf *err)
{
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;
	if (getresuid(&ruid, &euid, &suid) < 0 || getresgid(&rgid, &egid, &sgid) < 0) {
		buf_printf(err, "cannot read back the process ids: %s", strerror(errno));
		return false;
	}
	if (ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid) {
		buf_printf(err, "privilege drop did not take: uids %ld/%ld/%ld gids %ld/%ld/%ld", (long)ruid,
		           (long)euid, (long)suid, (long)rgid, (long)egid, (long)sgid);
		return false;
	}
	if (setuid(0) == 0 || seteuid(0) == 0) {
		buf_puts(err, "privilege drop did not take: root can be regained");
		return false;
	}
	return true;
}

bool server_drop_privileges(const char *user, struct buf *err)
{
	if (!running_as_root())
		return true;
	errno = 0;
	struct passwd *pw = getpwnam(user);
	if (pw == NULL) {
		buf_printf(err, "unknown user %s%s%s", user, errno ? ": " : "", errno ? strerror(errno) : "");
		return false;
	}
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	if (uid == 0) {
		buf_printf(err, "user %s is root: refusing to run with root privileges", user);
		return false;
	}
	/* Groups first: once the uid is gone, we may no longer change them. */
	if (initgroups(user, gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		buf_printf(err, "cannot become user %s: %s", user, strerror(errno));
		return false;
	}
	return drop_took(uid, gid, err);
}

/* ---- process setup ----------------------------------------------------------- */

/* The master supervises us; if it dies we must not linger, holding
 * sockets it will want to reopen.  Set after the privilege drop, because
 * the kernel clears the setting when credentials change. */
static void die_with_parent(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0)
		log_fatal("cannot set the parent death signal: %s", strerror(errno));
	/* The parent may have gone before the call: we would wait forever. */
	if (getppid() != parent)
		log_fatal("parent process %ld exited during start-up", (long)parent);
}

/* setproctitle() complains on stderr unless server_main prepared it. */
static bool title_ready;

void server_set_title(const char *fmt, ...)
{
	if (!title_ready)
		return;
	struct buf title = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&title, fmt, ap);
	va_end(ap);
	/* "-" keeps libbsd from putting the program name in front. */
	setproctitle("-tern: %s", buf_cstr(&title));
	buf_free(&title);
}

int server_inherited_fd(const char *variable, struct buf *err)
{
	const char *text = getenv(variable);
	if (text == NULL)
		return -1;
	char *end;
	long fd = strtol(text, &end, 10);
	if (*text == '\0' || *end != '\0' || fd < 3 || fd > 65535 || fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) {
		buf_printf(err, "%s \"%s\" names no open descriptor", variable, text);
		return -2;
	}
	unsetenv(variable);
	return (int)fd;
}

/* Tells master that start-up is over: a worker that dies before this is
 * a failed start, one that dies after it had been doing its work.  master
 * passes the write end of a pipe in TERN_STATUS_FD; without it (started by
 * hand) there is no one to tell. */
static void notify_ready(void)
{
	struct buf err = BUF_INIT;
	int fd = server_inherited_fd("TERN_STATUS_FD", &err);
	if (fd == -2)
		log_warning("cannot report readiness to master: %s", buf_cstr(&err));
	buf_free(&err);
	if (fd < 0)
		return;
	static const char ready[] = "ready\n";
	if (write(fd, ready, sizeof(ready) - 1) < 0)
		log_warning("cannot report readiness to master: %s", strerror(errno));
	close(fd);
}

/* ---- the event loop ---------------------------------------------------------- */

struct server_run {
	const struct server_daemon *daemon;
	struct event_base *base;
	struct event *on_term, *on_int, *on_hup, *on_usr2;
	struct event *log_flush; /* writes the lines a turn of the loop logged */
};

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server_run *run = arg;
	log_info("stopping (%s)", strsignal((int)sig));
	if (run->daemon->stop)
		run->daemon->stop(run->daemon->ctx);
	if (!run->daemon->drains)
		event_base_loopexit(run->base, NULL);
}

static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server_run *run = arg;
	if (run->daemon->reload == NULL) {
		log_info("nothing to reload");
		return;
	}
	log_info("reloading");
	run->daemon->reload(run->daemon->ctx);
}

/* SIGUSR2: master has reopened the log file after a rotation. */
static void on_log_reopen_signal(evutil_socket_t sig, short what, void *arg)
{
	if (log_reopen() < 0)
		log_warning("cannot reopen the log file, still writing to the old one: %s", strerror(errno));
	else
		log_info("log file reopened");
}

static struct event *add_signal(struct server_run *run, int sig, event_callback_fn fn)
{
	struct event *ev = evsignal_new(run->base, sig, fn, run);
	if (ev == NULL || event_add(ev, NULL) < 0)
		log_fatal("cannot watch signal %s", strsignal(sig));
	return ev;
}

/* The changelist makes epoll_ctl wait for the next epoll_wait, so arming
 * and disarming an event within one turn (as bev_write_now() does) costs
 * no system call. */
static struct event_base *new_event_base(void)
{
	struct event_config *cfg = event_config_new();
	if (cfg == NULL)
		return NULL;
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	struct event_base *base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

static void on_log_flush(evutil_socket_t fd, short what, void *arg)
{
	log_flush();
}

static void wake_log_flush(void *ev)
{
	const struct timeval delay = {0, LOG_FLUSH_DELAY_MS * 1000};
	event_add(ev, &delay);
}

/* The lines the loop's callbacks log go out together, in one write(2)
 * LOG_FLUSH_DELAY_MS after the first of them, or sooner when they fill
 * a batch, instead of one write per line: a line per message in smtpd
 * and two in qmgr were a tenth of their system calls.  (Written at the
 * end of each turn instead, they were still a write for every four
 * messages in qmgr and every six in smtpd under load.) */
static void batch_log_lines(struct server_run *run)
{
	run->log_flush = evtimer_new(run->base, on_log_flush, NULL);
	if (run->log_flush == NULL)
		log_fatal("cannot create the log flush event");
	event_priority_set(run->log_flush, event_base_get_npriorities(run->base) - 1);
	log_batch_start(wake_log_flush, run->log_flush);
}

static int run_loop(const struct server_daemon *daemon)
{
	struct server_run run = {.daemon = daemon};
	if ((run.base = new_event_base()) == NULL)
		log_fatal("cannot create the event loop");
	run.on_term = add_signal(&run, SIGTERM, on_stop_signal);
	run.on_int = add_signal(&run, SIGINT, on_stop_signal);
	run.on_hup = add_signal(&run, SIGHUP, on_reload_signal);
	run.on_usr2 = add_signal(&run, SIGUSR2, on_log_reopen_signal);

	struct buf err = BUF_INIT;
	if (daemon->init && !daemon->init(daemon->ctx, run.base, &err))
		log_fatal("start-up failed: %s", buf_cstr(&err));
	buf_free(&err);
	batch_log_lines(&run);
	notify_ready();
	log_info("started");
	int rc = event_base_dispatch(run.base);
	log_batch_stop();
	event_free(run.log_flush);

	event_free(run.on_term);
	event_free(run.on_int);
	event_free(run.on_hup);
	event_free(run.on_usr2);
	event_base_free(run.base);
	if (rc < 0)
		log_fatal("event loop failed");
	return 0;
}

int server_main(const struct server_daemon *daemon, int argc, char **argv, char **envp)
{
	pid_t parent = getppid();
	struct server_options opts;
	struct buf err = BUF_INIT;
	if (!server_parse_options(argc, argv, &opts, &err)) {
		log_error("%s", buf_cstr(&err));
		buf_free(&err);
		return 2;
	}
	setproctitle_init(argc, argv, envp);
	title_ready = true;

	char *ident = mem_asprintf("tern/%s", daemon->name);
	if (opts.foreground)
		log_open(ident, LOG_TO_STDERR, NULL);
	else if (opts.log_file == NULL || log_open(ident, LOG_TO_FILE, opts.log_file) < 0)
		log_open(ident, LOG_TO_SYSLOG, NULL);
	free(ident);
	/* A peer closing a socket must be an error return, not a death. */
	signal(SIGPIPE, SIG_IGN);

	if (daemon->pre_init && !daemon->pre_init(daemon->ctx, &opts, &err))
		log_fatal("start-up failed: %s", buf_cstr(&err));
	if (opts.stay_root && running_as_root() && daemon->keeps_root)
		log_info("keeping root privileges to act for each user");
	else if (opts.stay_root && running_as_root())
		log_warning("keeping root privileges (run-as-root)");
	else if (!server_drop_privileges(opts.user, &err))
		log_fatal("%s", buf_cstr(&err));
	buf_free(&err);
	die_with_parent(parent);
	server_set_title("%s", daemon->name);

	int rc = run_loop(daemon);
	server_options_free(&opts);
	log_info("stopped");
	return rc;
}
