/* ctl_control.c: the ternctl commands that talk to a running master over
 * its control socket (<spool>/public/control): start, stop, reload, status
 * and show version.  The spool comes from the configuration file, so
 * ternctl and master agree on where the socket is. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conf.h"
#include "ctl_internal.h"
#include "ipc.h"
#include "json.h"
#include "mem.h"

#define CONTROL_SOCKET "public/control"
#define CONTROL_MAX_FRAME (64 * 1024)
#define CONTROL_TIMEOUT_MS 30000
#define DEFAULT_DAEMON_DIR TERN_LIBEXECDIR "/tern"
#define START_WAIT_SECONDS 15
#define STOP_WAIT_SECONDS 60

struct service_row {
	char *name, *state, *pids;
	int64_t running, ready, wanted, restarts, throttled;
};

struct control_reply {
	int64_t status; /* 0 ok, 1 failed, 2 refused */
	char *reason;
	int64_t pid, uptime, reloads;
	char *version, *config;
	struct service_row *services;
	size_t nservices;
};

static const struct ipc_spec reply_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_STATUS, IPC_REQUIRED}, {IPC_ATTR_REASON, IPC_REQUIRED},
    {IPC_ATTR_PID, IPC_OPTIONAL},     {IPC_ATTR_UPTIME, IPC_OPTIONAL}, {IPC_ATTR_RELOADS, IPC_OPTIONAL},
    {IPC_ATTR_VERSION, IPC_OPTIONAL}, {IPC_ATTR_CONFIG, IPC_OPTIONAL},
};

static const struct ipc_spec service_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_SERVICE, IPC_REQUIRED},  {IPC_ATTR_STATE, IPC_REQUIRED},
    {IPC_ATTR_PIDS, IPC_REQUIRED},    {IPC_ATTR_RUNNING, IPC_REQUIRED},  {IPC_ATTR_WANTED, IPC_REQUIRED},
    {IPC_ATTR_READY, IPC_REQUIRED},   {IPC_ATTR_RESTARTS, IPC_REQUIRED}, {IPC_ATTR_THROTTLED, IPC_REQUIRED},
};

static const struct ipc_spec end_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}};

static void reply_free(struct control_reply *r)
{
	free(r->reason);
	free(r->version);
	free(r->config);
	for (size_t i = 0; i < r->nservices; i++) {
		free(r->services[i].name);
		free(r->services[i].state);
		free(r->services[i].pids);
	}
	free(r->services);
	memset(r, 0, sizeof(*r));
}

static char *copy_str(const struct ipc_msg *msg, enum ipc_attr attr)
{
	const char *s = ipc_msg_str(msg, attr);
	return mem_strdup(s ? s : "");
}

/* ---- finding the master ---------------------------------------------------------- */

/* The control socket path from the configuration's spool.  A file with
 * errors still names its spool: "ternctl reload" must reach master to have
 * the broken file refused, and stop and status must work whatever state
 * the file is in.  Without a spool line the default spool is used. */
char *ctl_control_socket_path(const struct ctl_options *opts)
{
	struct conf *conf = conf_load(opts->config);
	char *path = mem_asprintf("%s/%s", conf_spool(conf), CONTROL_SOCKET);
	conf_free(conf);
	return path;
}

/* ---- one request --------------------------------------------------------------------- */

static bool decode_frame(const struct buf *payload, struct control_reply *r, bool *done, struct buf *err)
{
	struct buf verb = BUF_INIT;
	struct ipc_msg msg;
	bool ok = ipc_peek_request(payload->data, payload->len, &verb, err);
	const char *v = buf_cstr(&verb);
	if (ok && strcmp(v, "reply") == 0) {
		ok = ipc_decode(payload->data, payload->len, reply_spec, IPC_SPEC_COUNT(reply_spec), &msg, err);
		if (ok) {
			r->status = ipc_msg_int(&msg, IPC_ATTR_STATUS);
			r->reason = copy_str(&msg, IPC_ATTR_REASON);
			r->pid = ipc_msg_int(&msg, IPC_ATTR_PID);
			r->uptime = ipc_msg_int(&msg, IPC_ATTR_UPTIME);
			r->reloads = ipc_msg_int(&msg, IPC_ATTR_RELOADS);
			r->version = copy_str(&msg, IPC_ATTR_VERSION);
			r->config = copy_str(&msg, IPC_ATTR_CONFIG);
		}
	} else if (ok && strcmp(v, "service") == 0) {
		ok = ipc_decode(payload->data, payload->len, service_spec, IPC_SPEC_COUNT(service_spec), &msg, err);
		if (ok) {
			r->services = mem_reallocarray(r->services, r->nservices + 1, sizeof(*r->services));
			struct service_row *s = &r->services[r->nservices++];
			s->name = copy_str(&msg, IPC_ATTR_SERVICE);
			s->state = copy_str(&msg, IPC_ATTR_STATE);
			s->pids = copy_str(&msg, IPC_ATTR_PIDS);
			s->running = ipc_msg_int(&msg, IPC_ATTR_RUNNING);
			s->ready = ipc_msg_int(&msg, IPC_ATTR_READY);
			s->wanted = ipc_msg_int(&msg, IPC_ATTR_WANTED);
			s->restarts = ipc_msg_int(&msg, IPC_ATTR_RESTARTS);
			s->throttled = ipc_msg_int(&msg, IPC_ATTR_THROTTLED);
		}
	} else if (ok && strcmp(v, "end") == 0) {
		ok = ipc_decode(payload->data, payload->len, end_spec, IPC_SPEC_COUNT(end_spec), &msg, err);
		*done = ok;
	} else if (ok) {
		buf_printf(err, "unexpected reply \"%s\"", v);
		ok = false;
	}
	if (ok)
		ipc_msg_free(&msg);
	buf_free(&verb);
	return ok;
}

/* Sends verb to master and reads the whole reply.  Returns false (reason in
 * err, and *not_running set when no master listens) on failure. */
static bool control_request(const char *socket_path, const char *verb, struct control_reply *r, bool *not_running,
                            struct buf *err)
{
	memset(r, 0, sizeof(*r));
	*not_running = false;
	int fd = ipc_connect(socket_path, err);
	if (fd < 0) {
		*not_running = errno == ENOENT || errno == ECONNREFUSED;
		return false;
	}
	struct buf frame = BUF_INIT, in = BUF_INIT, payload = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, CONTROL_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, verb);
	bool ok = ipc_write_end(&w, err) && ipc_send(fd, &frame, CONTROL_TIMEOUT_MS, err);
	bool done = false;
	while (ok && !done)
		ok = ipc_receive(fd, &in, CONTROL_MAX_FRAME, CONTROL_TIMEOUT_MS, &payload, err) &&
		     decode_frame(&payload, r, &done, err);
	if (ok && r->reason == NULL) {
		buf_puts(err, "master sent no reply");
		ok = false;
	}
	close(fd);
	buf_free(&frame);
	buf_free(&in);
	buf_free(&payload);
	return ok;
}

/* Runs one request, reporting connection problems; returns the exit
 * status to use, CTL_EXIT_OK when the reply is in r. */
static int request_or_fail(const struct ctl_options *opts, const char *verb, struct control_reply *r)
{
	char *path = ctl_control_socket_path(opts);
	struct buf err = BUF_INIT;
	bool not_running;
	int status = CTL_EXIT_OK;
	if (!control_request(path, verb, r, &not_running, &err)) {
		if (not_running)
			status = ctl_fail("tern is not running (no master on %s)", path);
		else
			status = ctl_fail("%s", buf_cstr(&err));
		reply_free(r);
	} else if (r->status != 0) {
		status = ctl_fail("%s", r->reason);
		reply_free(r);
	}
	buf_free(&err);
	free(path);
	return status;
}

/* ---- status ---------------------------------------------------------------------------- */

static void format_uptime(int64_t seconds, char *out, size_t len)
{
	snprintf(out, len, "%lldd %02lld:%02lld:%02lld", (long long)(seconds / 86400),
	         (long long)(seconds % 86400 / 3600), (long long)(seconds % 3600 / 60), (long long)(seconds % 60));
}

static void print_status_text(const struct control_reply *r)
{
	char up[64];
	format_uptime(r->uptime, up, sizeof(up));
	printf("tern %s %s, master pid %lld, up %s, %lld reload%s\n", r->version, r->reason, (long long)r->pid, up,
	       (long long)r->reloads, r->reloads == 1 ? "" : "s");
	printf("configuration %s\n\n", r->config);
	printf("%-8s %-10s %-9s %-8s %s\n", "service", "state", "processes", "restarts", "pids");
	for (size_t i = 0; i < r->nservices; i++) {
		const struct service_row *s = &r->services[i];
		char procs[32];
		snprintf(procs, sizeof(procs), "%lld/%lld", (long long)s->running, (long long)s->wanted);
		printf("%-8s %-10s %-9s %-8lld %s\n", s->name, s->state, procs, (long long)s->restarts, s->pids);
	}
}

static void print_status_json(const struct control_reply *r)
{
	struct buf out = BUF_INIT;
	buf_puts(&out, "{\"status\":");
	json_append_string(&out, r->reason);
	buf_printf(&out, ",\"pid\":%lld,\"uptime\":%lld,\"reloads\":%lld,\"version\":", (long long)r->pid,
	           (long long)r->uptime, (long long)r->reloads);
	json_append_string(&out, r->version);
	buf_puts(&out, ",\"config\":");
	json_append_string(&out, r->config);
	buf_puts(&out, ",\"services\":[");
	for (size_t i = 0; i < r->nservices; i++) {
		const struct service_row *s = &r->services[i];
		buf_puts(&out, i ? ",{\"name\":" : "{\"name\":");
		json_append_string(&out, s->name);
		buf_puts(&out, ",\"state\":");
		json_append_string(&out, s->state);
		buf_printf(
		    &out,
		    ",\"running\":%lld,\"ready\":%lld,\"wanted\":%lld,\"restarts\":%lld,\"throttled\":%s,\"pids\":[",
		    (long long)s->running, (long long)s->ready, (long long)s->wanted, (long long)s->restarts,
		    s->throttled ? "true" : "false");
		const char *p = s->pids;
		for (bool first = true; *p; first = false) {
			size_t len = strcspn(p, " ");
			buf_printf(&out, "%s%.*s", first ? "" : ",", (int)len, p);
			p += len;
			p += *p == ' ';
		}
		buf_puts(&out, "]}");
	}
	buf_puts(&out, "]}\n");
	fputs(buf_cstr(&out), stdout);
	buf_free(&out);
}

int ctl_status(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("status takes no arguments");
	struct control_reply r;
	int status = request_or_fail(opts, "status", &r);
	if (status != CTL_EXIT_OK)
		return status;
	if (opts->json)
		print_status_json(&r);
	else
		print_status_text(&r);
	reply_free(&r);
	return CTL_EXIT_OK;
}

/* ---- show version ------------------------------------------------------------------------- */

int ctl_show_version(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("show version takes no arguments");
	char *path = ctl_control_socket_path(opts);
	struct control_reply r;
	struct buf err = BUF_INIT;
	bool not_running = true, running = control_request(path, "status", &r, &not_running, &err);
	if (opts->json) {
		struct buf out = BUF_INIT;
		buf_puts(&out, "{\"version\":");
		json_append_string(&out, PACKAGE_VERSION);
		buf_printf(&out, ",\"running\":%s", running ? "true" : "false");
		if (running) {
			buf_puts(&out, ",\"running_version\":");
			json_append_string(&out, r.version);
			buf_printf(&out, ",\"pid\":%lld", (long long)r.pid);
		}
		buf_puts(&out, "}\n");
		fputs(buf_cstr(&out), stdout);
		buf_free(&out);
	} else if (running) {
		printf("tern %s (running: tern %s, master pid %lld)\n", PACKAGE_VERSION, r.version, (long long)r.pid);
	} else {
		printf("tern %s (not running)\n", PACKAGE_VERSION);
	}
	if (running)
		reply_free(&r);
	buf_free(&err);
	free(path);
	return CTL_EXIT_OK;
}

/* ---- reload ------------------------------------------------------------------------------- */

static void print_result_json(bool ok, const char *message)
{
	struct buf out = BUF_INIT;
	buf_printf(&out, "{\"ok\":%s,\"message\":", ok ? "true" : "false");
	json_append_string(&out, message);
	buf_puts(&out, "}\n");
	fputs(buf_cstr(&out), stdout);
	buf_free(&out);
}

/* Sends master a request it answers itself (reload, reopen-log); REFUSED,
 * when not NULL, follows the reason of a refusal on its own line. */
static int master_request(const struct ctl_options *opts, const char *verb, const char *refused)
{
	char *path = ctl_control_socket_path(opts);
	struct control_reply r;
	struct buf err = BUF_INIT;
	bool not_running;
	int status = CTL_EXIT_OK;
	if (!control_request(path, verb, &r, &not_running, &err)) {
		status = not_running ? ctl_fail("tern is not running (no master on %s)", path)
		                     : ctl_fail("%s", buf_cstr(&err));
	} else if (r.status != 0) {
		if (opts->json)
			print_result_json(false, r.reason);
		fprintf(stderr, "%s\n", r.reason);
		if (refused)
			fprintf(stderr, "ternctl: %s\n", refused);
		status = CTL_EXIT_FAIL;
	} else if (opts->json) {
		print_result_json(true, r.reason);
	} else {
		printf("%s\n", r.reason);
	}
	reply_free(&r);
	buf_free(&err);
	free(path);
	return status;
}

int ctl_reload(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("reload takes no arguments");
	/* Every FILE:LINE error of the refused file comes one per line. */
	return master_request(opts, "reload", "reload refused; the running configuration stays in force");
}

int ctl_reopen_log(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("reopen log takes no arguments");
	return master_request(opts, "reopen-log", NULL);
}

/* ---- stop -------------------------------------------------------------------------------- */

/* A master that has exited but not been reaped by its parent yet (a
 * zombie) has finished stopping. */
static bool process_alive(pid_t pid)
{
	if (kill(pid, 0) < 0 && errno != EPERM)
		return false;
	char path[64], stat[256];
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return true;
	bool zombie = fgets(stat, sizeof(stat), f) && strstr(stat, ") Z ");
	fclose(f);
	return !zombie;
}

int ctl_stop(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("stop takes no arguments");
	struct control_reply r;
	int status = request_or_fail(opts, "status", &r);
	if (status != CTL_EXIT_OK)
		return status;
	pid_t pid = (pid_t)r.pid;
	reply_free(&r);
	if ((status = request_or_fail(opts, "stop", &r)) != CTL_EXIT_OK)
		return status;
	reply_free(&r);
	for (int i = 0; i < STOP_WAIT_SECONDS * 10 && process_alive(pid); i++)
		usleep(100000);
	if (process_alive(pid))
		return ctl_fail("master (pid %ld) is still stopping after %d seconds", (long)pid, STOP_WAIT_SECONDS);
	if (opts->json)
		print_result_json(true, "tern stopped.");
	else
		printf("tern stopped.\n");
	return CTL_EXIT_OK;
}

/* ---- start ------------------------------------------------------------------------------- */

/* Runs master, which checks the configuration, opens its sockets and then
 * goes to the background: its exit status says whether that went well. */
static int run_master(const struct ctl_options *opts)
{
	const char *dir = opts->daemon_dir ? opts->daemon_dir : DEFAULT_DAEMON_DIR;
	char *path = mem_asprintf("%s/master", dir);
	pid_t pid = fork();
	if (pid == 0) {
		char *argv[] = {"master", "-c", (char *)opts->config, "-d", (char *)dir, NULL};
		execv(path, argv);
		fprintf(stderr, "ternctl: cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	free(path);
	int wstatus;
	if (pid < 0 || waitpid(pid, &wstatus, 0) < 0)
		return ctl_fail("cannot start master: %s", strerror(errno));
	if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
		return ctl_fail("master did not start (see the messages above)");
	return CTL_EXIT_OK;
}

/* Every service has finished its start-up. */
static bool all_ready(const struct control_reply *r)
{
	for (size_t i = 0; i < r->nservices; i++)
		if (r->services[i].ready != r->services[i].wanted)
			return false;
	return true;
}

static const struct service_row *throttled_service(const struct control_reply *r)
{
	for (size_t i = 0; i < r->nservices; i++)
		if (r->services[i].throttled)
			return &r->services[i];
	return NULL;
}

/* Waits until master answers and every service is up, or one of them
 * keeps failing.  Returns the exit status; the last status is left in r
 * when master answered. */
static int wait_until_started(const char *path, struct control_reply *r)
{
	struct buf err = BUF_INIT;
	bool not_running, answered = false;
	int status = CTL_EXIT_FAIL;
	for (int i = 0; i < START_WAIT_SECONDS * 10; i++) {
		if (answered)
			reply_free(r);
		buf_reset(&err);
		answered = control_request(path, "status", r, &not_running, &err);
		if (answered && all_ready(r)) {
			status = CTL_EXIT_OK;
			break;
		}
		const struct service_row *failing = answered ? throttled_service(r) : NULL;
		if (failing) {
			ctl_fail("tern started, but %s keeps failing at start-up (see the log)", failing->name);
			break;
		}
		usleep(100000);
	}
	if (!answered)
		ctl_fail("master started but does not answer on %s", path);
	else if (status != CTL_EXIT_OK && !throttled_service(r))
		ctl_fail("tern started, but not every service is up after %d seconds", START_WAIT_SECONDS);
	buf_free(&err);
	return answered ? status : -1;
}

int ctl_start(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("start takes no arguments");
	char *path = ctl_control_socket_path(opts);
	struct control_reply r;
	struct buf err = BUF_INIT;
	bool not_running;
	int status = CTL_EXIT_OK;
	if (control_request(path, "status", &r, &not_running, &err)) {
		status = ctl_fail("tern is already running (master pid %lld)", (long long)r.pid);
		reply_free(&r);
	} else if ((status = run_master(opts)) == CTL_EXIT_OK) {
		status = wait_until_started(path, &r);
		if (status < 0) {
			status = CTL_EXIT_FAIL;
		} else {
			if (opts->json)
				print_status_json(&r);
			else if (status == CTL_EXIT_OK)
				printf("tern started (master pid %lld).\n", (long long)r.pid);
			reply_free(&r);
		}
	}
	buf_free(&err);
	free(path);
	return status;
}
