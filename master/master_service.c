/* master_service.c: starting, watching and restarting the worker
 * processes.  Each service has a number of worker slots; a slot whose
 * worker exits is refilled, at once when the worker had been doing its
 * work, after the crash throttle's pause when it died during start-up.
 * Workers replaced by a reload finish what they are doing ("draining")
 * and are not restarted. */
#include "master.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bsd/unistd.h>
#include <event2/event.h>

#include "clock.h"
#include "listen.h"

/* Worker descriptors from 3 upwards: the shared private socket, the
 * listeners, then the status pipe. */
#define FIRST_PASSED_FD 3

struct service_def {
	enum master_service_id id;
	const char *name;
	const char *count_directive; /* NULL: one process */
	bool gets_listeners;         /* the smtp-listener sockets */
	/* A UNIX socket in <spool>/private that master creates and every
	 * worker of the service shares (NULL: none). */
	const char *private_socket;
	/* Stop order (see MASTER_STOP_PHASES). */
	int stop_phase;
	/* Keeps root (-R): the local agent writes each mailbox as its user. */
	bool keeps_root;
	/* Runs as SCHED_BATCH (see schedule_as_batch). */
	bool batch;
	/* Added to master's nice value (see lower_priority). */
	int nice;
};

static const struct service_def service_defs[SERVICE_COUNT] = {
    {SERVICE_ACCTD, "acctd", NULL, false, NULL, 2, false, true, 10},
    {SERVICE_QMGR, "qmgr", NULL, false, NULL, 1, false, false, 0},
    {SERVICE_SMTPD, "smtpd", "smtpd-processes", true, NULL, 0, false, true, 0},
    {SERVICE_SMTP, "smtp", "smtp-processes", false, "smtp", 0, false, true, 5},
    {SERVICE_LOCAL, "local", NULL, false, "local", 0, true, false, 0},
    {SERVICE_PICKUP, "pickup", NULL, false, NULL, 0, false, false, 0},
};

static unsigned wanted_processes(const struct conf *conf, const struct service_def *def)
{
	return def->count_directive ? conf_worker_processes(conf, def->count_directive) : 1;
}

static void on_restart_timer(evutil_socket_t fd, short what, void *arg)
{
	struct master_service *s = arg;
	master_services_start(s->master);
}

/* Creates <spool>/private/NAME for a service whose workers share it. */
static int open_private_socket(const struct master *m, const char *name)
{
	char *path = mem_asprintf("%s/private/%s", m->spool, name);
	struct buf err = BUF_INIT;
	/* what is there is stale: the pid file says no other master runs */
	int fd = listen_unix(path, 256, 0600, m->user_uid, m->user_gid, &err);
	if (fd < 0)
		log_fatal("%s", buf_cstr(&err));
	free(path);
	return fd;
}

void master_services_init(struct master *m)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		struct master_service *s = &m->services[i];
		memset(s, 0, sizeof(*s));
		s->id = service_defs[i].id;
		s->name = service_defs[i].name;
		s->master = m;
		s->wanted = wanted_processes(m->conf, &service_defs[i]);
		s->workers = mem_calloc(s->wanted, sizeof(*s->workers));
		master_throttle_init(&s->throttle);
		s->restart_ev = evtimer_new(m->base, on_restart_timer, s);
		s->socket_fd =
		    service_defs[i].private_socket ? open_private_socket(m, service_defs[i].private_socket) : -1;
	}
}

/* ---- readiness ------------------------------------------------------------- */

static void stop_status_watch(struct master_worker *w)
{
	if (w->status_ev) {
		event_free(w->status_ev);
		w->status_ev = NULL;
	}
	if (w->status_fd >= 0) {
		close(w->status_fd);
		w->status_fd = -1;
	}
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	struct master_worker *w = arg;
	char text[16];
	ssize_t n = read(fd, text, sizeof(text));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n >= 5 && memcmp(text, "ready", 5) == 0)
		w->ready = true;
	stop_status_watch(w);
}

/* ---- starting a worker --------------------------------------------------------- */

/* In the child: moves the descriptors to pass to 3, 4, ... without one
 * overwriting another, and closes everything else. */
static int arrange_fds(const int *fds, size_t count)
{
	int *high = mem_calloc(count, sizeof(int));
	for (size_t i = 0; i < count; i++)
		if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 256)) < 0)
			return -1;
	for (size_t i = 0; i < count; i++)
		if (dup2(high[i], FIRST_PASSED_FD + (int)i) < 0)
			return -1;
	closefrom(FIRST_PASSED_FD + (int)count);
	return 0;
}

static unsigned slot_of(const struct master_service *s, const struct master_worker *w)
{
	return (unsigned)(w - s->workers);
}

static void collect_passed_fds(const struct master *m, const struct master_service *s, unsigned slot, int status_fd,
                               int **fds, size_t *count)
{
	const struct service_def *def = &service_defs[s->id];
	size_t n = def->gets_listeners ? master_listeners_fd_count(&m->listeners) : 0;
	*fds = mem_calloc(n + 2, sizeof(int));
	*count = 0;
	if (s->socket_fd >= 0)
		(*fds)[(*count)++] = s->socket_fd;
	if (def->gets_listeners)
		master_listeners_for_worker(&m->listeners, slot, s->wanted, *fds, count);
	(*fds)[(*count)++] = status_fd;
}

/* The workers that pass mail along a pipeline (smtpd, smtp, acctd) run
 * as SCHED_BATCH: their wake-ups do not preempt the process that woke
 * them.  When qmgr writes a reply to smtpd, it finishes its turn of the
 * loop (and answers the other sessions, in the same write when it can)
 * before smtpd runs, instead of being switched out after each write.
 * An idle CPU still runs a woken worker at once; only on a busy one does
 * it wait, at most the rest of the running task's time slice.  qmgr keeps
 * the normal policy: its group commit's wake-up should preempt.  Not
 * being allowed to is no reason to fail: the worker runs as before. */
static void schedule_as_batch(const char *name)
{
	struct sched_param param = {.sched_priority = 0};
	if (sched_setscheduler(0, SCHED_BATCH, &param) < 0)
		log_warning("%s runs with the normal scheduling policy: %s", name, strerror(errno));
}

/* The workers whose work nobody waits on run at a lower priority than
 * master's: smtp (nice + 5), which delivers what is queued already, and
 * acctd (nice + 10), which writes accounting records that qmgr's outbox
 * keeps until acctd confirms them.  When the CPUs are short, smtpd and
 * qmgr, on whose "250" a client is waiting, get the larger share; when
 * they are not, a nice value changes nothing.  Refused, the worker runs
 * at master's priority. */
static void lower_priority(const char *name, int by)
{
	errno = 0;
	int now = getpriority(PRIO_PROCESS, 0);
	int wanted = now + by > 19 ? 19 : now + by;
	if ((now == -1 && errno != 0) || setpriority(PRIO_PROCESS, 0, wanted) < 0)
		log_warning("%s runs at master's priority: %s", name, strerror(errno));
}

static void exec_worker(const struct master *m, const struct master_service *s, unsigned slot, const int *fds,
                        size_t count)
{
	const struct service_def *def = &service_defs[s->id];
	struct buf env = BUF_INIT;
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	if (arrange_fds(fds, count) < 0)
		_exit(126);
	buf_printf(&env, "%d", FIRST_PASSED_FD + (int)count - 1);
	setenv("TERN_STATUS_FD", buf_cstr(&env), 1);
	buf_reset(&env);
	if (s->socket_fd >= 0)
		setenv("TERN_SERVICE_FD", "3", 1);
	if (def->gets_listeners) {
		master_listeners_describe(&m->listeners, slot, s->wanted, FIRST_PASSED_FD + (s->socket_fd >= 0), &env);
		setenv("TERN_LISTEN_FDS", buf_cstr(&env), 1);
	}
	if (def->batch)
		schedule_as_batch(def->name);
	if (def->nice != 0)
		lower_priority(def->name, def->nice);
	char *path = mem_asprintf("%s/%s", m->daemon_dir, def->name);
	char *argv[12];
	int argc = 0;
	argv[argc++] = (char *)def->name;
	argv[argc++] = "-c";
	argv[argc++] = m->config_path;
	argv[argc++] = "-u";
	argv[argc++] = m->user;
	if (m->foreground)
		argv[argc++] = "-f";
	if (m->run_as_root || def->keeps_root)
		argv[argc++] = "-R";
	const char *log_file = conf_get_string(conf_global(m->conf), "log-file");
	if (!m->foreground && log_file && *log_file) {
		argv[argc++] = "-l";
		argv[argc++] = (char *)log_file;
	}
	argv[argc] = NULL;
	execv(path, argv);
	log_error("cannot run %s: %s", path, strerror(errno));
	_exit(127);
}

static void start_worker(struct master *m, struct master_service *s, struct master_worker *w)
{
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		log_error("cannot start %s: pipe: %s", s->name, strerror(errno));
		return;
	}
	int *fds;
	size_t count;
	collect_passed_fds(m, s, slot_of(s, w), pipefd[1], &fds, &count);
	pid_t pid = fork();
	if (pid == 0)
		exec_worker(m, s, slot_of(s, w), fds, count);
	free(fds);
	close(pipefd[1]);
	if (pid < 0) {
		log_error("cannot start %s: fork: %s", s->name, strerror(errno));
		close(pipefd[0]);
		return;
	}
	memset(w, 0, sizeof(*w));
	w->pid = pid;
	w->service = s;
	w->started_ms = clock_monotonic_ms();
	w->status_fd = pipefd[0];
	w->status_ev = event_new(m->base, pipefd[0], EV_READ | EV_PERSIST, on_status, w);
	event_add(w->status_ev, NULL);
}

void master_services_start(struct master *m)
{
	if (m->stopping)
		return;
	int64_t now = clock_monotonic_ms();
	for (int i = 0; i < SERVICE_COUNT; i++) {
		struct master_service *s = &m->services[i];
		int64_t wait = master_throttle_wait_ms(&s->throttle, now);
		if (wait > 0) {
			struct timeval tv = {wait / 1000, (wait % 1000) * 1000};
			evtimer_add(s->restart_ev, &tv);
			continue;
		}
		for (unsigned j = 0; j < s->wanted; j++)
			if (s->workers[j].pid == 0)
				start_worker(m, s, &s->workers[j]);
	}
}

/* ---- exits ------------------------------------------------------------------------ */

static void describe_exit(int status, struct buf *out)
{
	if (WIFEXITED(status))
		buf_printf(out, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		buf_printf(out, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		buf_printf(out, "ended (wait status %d)", status);
}

static void note_throttle(struct master_service *s, bool failed)
{
	if (!failed) {
		if (s->throttle.logged)
			log_info("service %s is starting normally again", s->name);
		return;
	}
	if (master_throttle_is_throttled(&s->throttle) && !s->throttle.logged) {
		log_warning("service %s keeps failing at start-up: throttling its restarts", s->name);
		s->throttle.logged = true;
	}
}

static bool reap_slot(struct master *m, pid_t pid, int status)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		struct master_service *s = &m->services[i];
		for (unsigned j = 0; j < s->wanted; j++) {
			struct master_worker *w = &s->workers[j];
			if (w->pid != pid)
				continue;
			struct buf how = BUF_INIT;
			describe_exit(status, &how);
			if (m->stopping)
				log_info("%s (pid %ld) %s", s->name, (long)pid, buf_cstr(&how));
			else
				log_warning("%s (pid %ld) %s%s", s->name, (long)pid, buf_cstr(&how),
				            w->ready ? "" : " during start-up");
			buf_free(&how);
			stop_status_watch(w);
			if (!m->stopping) {
				bool failed =
				    master_throttle_exit(&s->throttle, w->ready, w->started_ms, clock_monotonic_ms());
				note_throttle(s, failed);
				s->restarts++;
			}
			memset(w, 0, sizeof(*w));
			return true;
		}
	}
	return false;
}

static bool reap_draining(struct master *m, pid_t pid)
{
	for (struct master_worker **p = &m->draining; *p; p = &(*p)->next_draining) {
		struct master_worker *w = *p;
		if (w->pid != pid)
			continue;
		log_info("%s (pid %ld) finished draining", w->service->name, (long)pid);
		stop_status_watch(w);
		*p = w->next_draining;
		free(w);
		return true;
	}
	return false;
}

void master_services_reap(struct master *m)
{
	pid_t pid;
	int status;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		if (!reap_slot(m, pid, status) && !reap_draining(m, pid))
			log_warning("reaped unknown child %ld", (long)pid);
	master_services_start(m);
}

/* ---- generations, signals ---------------------------------------------------------- */

static void retire_worker(struct master *m, struct master_worker *w)
{
	struct master_worker *old = mem_memdup(w, sizeof(*w));
	old->draining = true;
	if (old->status_ev) {
		/* the event's argument is the slot, which is reused: re-point it */
		event_free(old->status_ev);
		old->status_ev = NULL;
		close(old->status_fd);
		old->status_fd = -1;
	}
	old->next_draining = m->draining;
	m->draining = old;
	kill(old->pid, SIGTERM);
	memset(w, 0, sizeof(*w));
}

void master_services_replace(struct master *m, enum master_service_id id)
{
	struct master_service *s = &m->services[id];
	for (unsigned j = 0; j < s->wanted; j++)
		if (s->workers[j].pid)
			retire_worker(m, &s->workers[j]);
	unsigned wanted = wanted_processes(m->conf, &service_defs[id]);
	if (wanted != s->wanted) {
		free(s->workers);
		s->workers = mem_calloc(wanted, sizeof(*s->workers));
		s->wanted = wanted;
	}
	master_throttle_init(&s->throttle);
	evtimer_del(s->restart_ev);
	master_services_start(m);
}

void master_services_signal_service(struct master *m, enum master_service_id id, int sig)
{
	struct master_service *s = &m->services[id];
	for (unsigned j = 0; j < s->wanted; j++)
		if (s->workers[j].pid)
			kill(s->workers[j].pid, sig);
}

void master_services_signal_phase(struct master *m, int phase, int sig)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		if (phase >= 0 && service_defs[i].stop_phase != phase)
			continue;
		struct master_service *s = &m->services[i];
		for (unsigned j = 0; j < s->wanted; j++)
			if (s->workers[j].pid)
				kill(s->workers[j].pid, sig);
	}
	for (struct master_worker *w = m->draining; w; w = w->next_draining)
		if (phase < 0 || service_defs[w->service->id].stop_phase == phase)
			kill(w->pid, sig);
}

void master_services_signal_ready(struct master *m, int sig)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		struct master_service *s = &m->services[i];
		for (unsigned j = 0; j < s->wanted; j++)
			if (s->workers[j].pid && s->workers[j].ready)
				kill(s->workers[j].pid, sig);
	}
	for (struct master_worker *w = m->draining; w; w = w->next_draining)
		kill(w->pid, sig);
}

void master_services_signal(struct master *m, int sig)
{
	master_services_signal_phase(m, -1, sig);
}

bool master_services_phase_gone(const struct master *m, int phase)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		if (phase >= 0 && service_defs[i].stop_phase != phase)
			continue;
		const struct master_service *s = &m->services[i];
		for (unsigned j = 0; j < s->wanted; j++)
			if (s->workers[j].pid)
				return false;
	}
	for (const struct master_worker *w = m->draining; w; w = w->next_draining)
		if (phase < 0 || service_defs[w->service->id].stop_phase == phase)
			return false;
	return true;
}

bool master_services_all_gone(const struct master *m)
{
	return master_services_phase_gone(m, -1);
}

void master_services_free(struct master *m)
{
	for (int i = 0; i < SERVICE_COUNT; i++) {
		struct master_service *s = &m->services[i];
		for (unsigned j = 0; j < s->wanted; j++)
			stop_status_watch(&s->workers[j]);
		free(s->workers);
		if (s->restart_ev)
			event_free(s->restart_ev);
		if (s->socket_fd >= 0)
			close(s->socket_fd);
	}
	while (m->draining) {
		struct master_worker *w = m->draining;
		m->draining = w->next_draining;
		free(w);
	}
}

void master_service_pids(const struct master_service *s, struct buf *out)
{
	for (unsigned j = 0; j < s->wanted; j++)
		if (s->workers[j].pid)
			buf_printf(out, "%s%ld", out->len ? " " : "", (long)s->workers[j].pid);
}

unsigned master_services_wanted(const struct conf *conf, enum master_service_id id)
{
	return wanted_processes(conf, &service_defs[id]);
}

unsigned master_service_running(const struct master_service *s)
{
	unsigned n = 0;
	for (unsigned j = 0; j < s->wanted; j++)
		n += s->workers[j].pid != 0;
	return n;
}

unsigned master_service_ready(const struct master_service *s)
{
	unsigned n = 0;
	for (unsigned j = 0; j < s->wanted; j++)
		n += s->workers[j].pid != 0 && s->workers[j].ready;
	return n;
}
