/* master_main.c: the supervisor's start-up, reload and stop.
 * master parses and validates the configuration (refusing to start on an
 * error, printed as FILE:LINE), prepares the spool directories, takes the
 * pid file (one master per spool), opens the listeners and the control
 * socket, and then lives in its event loop: SIGCHLD reaps and restarts
 * workers, SIGHUP reloads, SIGTERM stops in phases (first the front
 * ends, so nothing new arrives, then the queue, then accounting). */
#include "master.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <bsd/unistd.h>
#include <event2/event.h>

#include "config.h"

#define DEFAULT_CONFIG TERN_SYSCONFDIR "/tern/config"
#define DEFAULT_DAEMON_DIR TERN_LIBEXECDIR "/tern"
/* How long workers get to finish their sessions on stop. */
#define STOP_DEADLINE_SECONDS 30

static void usage(void)
{
	fprintf(stderr, "usage: master [-f] [-c config-file] [-d daemon-directory]\n");
	exit(2);
}

static void parse_options(struct master *m, int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG, *daemon_dir = DEFAULT_DAEMON_DIR;
	int c;
	while ((c = getopt(argc, argv, "fc:d:h")) != -1) {
		switch (c) {
		case 'f':
			m->foreground = true;
			break;
		case 'c':
			config = optarg;
			break;
		case 'd':
			daemon_dir = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	m->config_path = realpath(config, NULL);
	if (m->config_path == NULL)
		log_fatal("cannot read configuration file %s: %s", config, strerror(errno));
	m->daemon_dir = mem_strdup(daemon_dir);
}

/* Loads the configuration; NULL (with every error logged, or put in err
 * one per line) when it has errors. */
static struct conf *load_config(const char *path, struct buf *err)
{
	if (err)
		return conf_load_checked(path, "\n", err);
	struct buf errors = BUF_INIT;
	struct conf *conf = conf_load_checked(path, "\n", &errors);
	if (conf == NULL)
		log_error("%s", buf_cstr(&errors));
	buf_free(&errors);
	return conf;
}

/* The user the workers run as: the configured one when we are root, else
 * whoever started us (tests and development need no root). */
static void choose_user(struct master *m)
{
	struct passwd *pw;
	if (geteuid() == 0) {
		m->run_as_root = conf_get_bool(conf_global(m->conf), "run-as-root");
		if (m->run_as_root)
			log_warning("run-as-root is set: the workers keep root privileges");
		pw = getpwnam(TERN_USER);
		if (pw == NULL)
			log_fatal("user %s does not exist: create it (make install does) or configure --with-user",
			          TERN_USER);
	} else {
		pw = getpwuid(getuid());
		if (pw == NULL)
			log_fatal("cannot find the name of user %ld", (long)getuid());
	}
	m->user = mem_strdup(pw->pw_name);
	m->user_uid = pw->pw_uid;
	m->user_gid = pw->pw_gid;
}

static void make_dir(const struct master *m, const char *path, mode_t mode, bool owned_by_user)
{
	if (mkdir(path, mode) < 0 && errno != EEXIST)
		log_fatal("cannot create %s: %s", path, strerror(errno));
	struct stat st;
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
		log_fatal("%s is not a directory", path);
	if (chmod(path, mode) < 0)
		log_fatal("cannot set the mode of %s: %s", path, strerror(errno));
	if (geteuid() == 0 && chown(path, owned_by_user ? m->user_uid : 0, m->user_gid) < 0)
		log_fatal("cannot set the owner of %s: %s", path, strerror(errno));
}

static void prepare_spool(struct master *m)
{
	m->spool = mem_strdup(conf_spool(m->conf));
	make_dir(m, m->spool, 0755, false);
	char *dir = mem_asprintf("%s/private", m->spool);
	make_dir(m, dir, 0700, true);
	free(dir);
	dir = mem_asprintf("%s/public", m->spool);
	make_dir(m, dir, 0710, true);
	free(dir);
	dir = mem_asprintf("%s/queue", m->spool);
	make_dir(m, dir, 0700, true);
	free(dir);
}

static struct pidfh *take_pid_file(const struct master *m)
{
	char *path = mem_asprintf("%s/master.pid", m->spool);
	pid_t other = 0;
	struct pidfh *pfh = pidfile_open(path, 0644, &other);
	if (pfh == NULL) {
		if (errno == EEXIST)
			log_fatal("another master (pid %ld) is running on %s", (long)other, m->spool);
		log_fatal("cannot create %s: %s", path, strerror(errno));
	}
	free(path);
	return pfh;
}

/* The workers run as the tern user and reopen the file by name after a
 * rotation, so the file master creates must be theirs to open. */
static void give_log_to_user(const struct master *m)
{
	if (geteuid() == 0 && log_chown(m->user_uid, m->user_gid) < 0)
		log_warning("cannot give the log file to %s: %s", m->user, strerror(errno));
}

static void open_log(const struct master *m)
{
	const char *log_file = conf_get_string(conf_global(m->conf), "log-file");
	if (m->foreground)
		return;
	if (log_file && *log_file) {
		if (log_open("tern/master", LOG_TO_FILE, log_file) < 0)
			log_fatal("cannot open log file %s: %s", log_file, strerror(errno));
		give_log_to_user(m);
	} else {
		log_open("tern/master", LOG_TO_SYSLOG, NULL);
	}
}

/* ---- log rotation ---------------------------------------------------------------- */

bool master_reopen_log(struct master *m, struct buf *err)
{
	const char *log_file = conf_get_string(conf_global(m->conf), "log-file");
	if (m->foreground || log_file == NULL || *log_file == '\0') {
		buf_puts(err, "tern does not write a log file (it logs to the journal or syslog)");
		return false;
	}
	if (log_reopen() < 0) {
		buf_printf(err, "cannot reopen %s: %s", log_file, strerror(errno));
		log_error("%s", buf_cstr(err));
		return false;
	}
	give_log_to_user(m);
	log_info("log file reopened");
	master_services_signal_ready(m, SIGUSR2);
	return true;
}

/* ---- reload --------------------------------------------------------------------- */

bool master_reload(struct master *m, struct buf *err)
{
	struct conf *conf = load_config(m->config_path, err);
	if (conf == NULL) {
		log_error("reload refused, the running configuration stays: %s", buf_cstr(err));
		return false;
	}
	struct master_listeners listeners;
	if (!master_listeners_open(conf, &m->listeners, master_services_wanted(conf, SERVICE_SMTPD), &listeners, err)) {
		log_error("reload refused, the running configuration stays: %s", buf_cstr(err));
		conf_free(conf);
		return false;
	}
	struct conf *old = m->conf;
	m->conf = conf;
	master_listeners_retire(&m->listeners, &listeners);
	m->listeners = listeners;
	/* smtpd gets its listeners at start: replace it; the others re-read. */
	master_services_replace(m, SERVICE_SMTPD);
	for (int id = 0; id < SERVICE_COUNT; id++)
		if (id != SERVICE_SMTPD)
			master_services_signal_service(m, id, SIGHUP);
	conf_free(old);
	m->reloads++;
	log_info("configuration reloaded from %s", m->config_path);
	return true;
}

/* ---- stop ------------------------------------------------------------------------ */

static void on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct master *m = arg;
	log_warning("workers did not stop within %d seconds: killing them", STOP_DEADLINE_SECONDS);
	master_services_signal(m, SIGKILL);
}

/* Called after every reap while stopping: each phase is told to stop once
 * the one before it is gone, and master exits once everything is. */
static void continue_stop(struct master *m)
{
	while (m->stop_phase + 1 < MASTER_STOP_PHASES && master_services_phase_gone(m, m->stop_phase)) {
		m->stop_phase++;
		master_services_signal_phase(m, m->stop_phase, SIGTERM);
	}
	if (master_services_all_gone(m))
		event_base_loopexit(m->base, NULL);
}

void master_begin_stop(struct master *m)
{
	if (m->stopping)
		return;
	m->stopping = true;
	log_info("stopping: no new connections, letting workers finish");
	master_listeners_retire(&m->listeners, NULL);
	m->stop_phase = 0;
	master_services_signal_phase(m, 0, SIGTERM);
	m->stop_deadline_ev = evtimer_new(m->base, on_stop_deadline, m);
	struct timeval tv = {STOP_DEADLINE_SECONDS, 0};
	evtimer_add(m->stop_deadline_ev, &tv);
	continue_stop(m);
}

/* ---- signals ------------------------------------------------------------------------ */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct master *m = arg;
	struct buf err = BUF_INIT;
	switch (sig) {
	case SIGCHLD:
		master_services_reap(m);
		if (m->stopping)
			continue_stop(m);
		break;
	case SIGHUP:
		master_reload(m, &err);
		break;
	case SIGUSR2:
		master_reopen_log(m, &err);
		break;
	default:
		master_begin_stop(m);
	}
	buf_free(&err);
}

static struct event *watch_signal(struct master *m, int sig)
{
	struct event *ev = evsignal_new(m->base, sig, on_signal, m);
	if (ev == NULL || event_add(ev, NULL) < 0)
		log_fatal("cannot watch signal %s", strsignal(sig));
	return ev;
}

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv, char **envp)
{
	struct master m = {.control_fd = -1};
	log_open("tern/master", LOG_TO_STDERR, NULL);
	parse_options(&m, argc, argv);
	if ((m.conf = load_config(m.config_path, NULL)) == NULL)
		log_fatal("configuration %s has errors: not starting", m.config_path);
	choose_user(&m);
	prepare_spool(&m);
	struct pidfh *pfh = take_pid_file(&m);
	struct buf err = BUF_INIT;
	if (!master_listeners_open(m.conf, NULL, master_services_wanted(m.conf, SERVICE_SMTPD), &m.listeners, &err))
		log_fatal("%s", buf_cstr(&err));
	if (!m.foreground && daemon(0, 0) < 0)
		log_fatal("cannot become a daemon: %s", strerror(errno));
	open_log(&m);
	pidfile_write(pfh);
	setproctitle_init(argc, argv, envp);
	setproctitle("-tern: master");
	signal(SIGPIPE, SIG_IGN);

	if ((m.base = event_base_new()) == NULL)
		log_fatal("cannot create the event loop");
	struct event *signals[] = {watch_signal(&m, SIGCHLD), watch_signal(&m, SIGHUP), watch_signal(&m, SIGTERM),
	                           watch_signal(&m, SIGINT), watch_signal(&m, SIGUSR2)};
	if (!master_control_open(&m, &err))
		log_fatal("%s", buf_cstr(&err));
	m.started = time(NULL);
	master_services_init(&m);
	master_services_start(&m);
	log_info("started (pid %ld, configuration %s, spool %s)", (long)getpid(), m.config_path, m.spool);

	event_base_dispatch(m.base);

	master_control_close(&m);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		event_free(signals[i]);
	if (m.stop_deadline_ev)
		event_free(m.stop_deadline_ev);
	master_services_free(&m);
	master_listeners_retire(&m.listeners, NULL);
	event_base_free(m.base);
	conf_free(m.conf);
	pidfile_remove(pfh);
	log_info("stopped");
	free(m.config_path);
	free(m.daemon_dir);
	free(m.spool);
	free(m.user);
	buf_free(&err);
	return 0;
}
