/* ctl_queue.c: the ternctl commands about the queue.  They go to master's
 * control socket as "qmgr.VERB" requests, which master relays to qmgr
 * with the caller's role; qmgr answers with a reply frame, data frames and
 * "end" (see qmgr/qmgr_control.c).  Output follows PowerMTA's layout
 * (reference/powermta.md section 4); --json prints the same facts.
 * "queue recover" is offline: it runs qmgr -C while tern is stopped. */
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
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
#include "value.h"

#define CONTROL_SOCKET "public/control"
#define MAX_FRAME (1024 * 1024)
#define TIMEOUT_MS 60000
#define DEFAULT_SPOOL TERN_LOCALSTATEDIR "/spool/tern"
#define DEFAULT_DAEMON_DIR TERN_LIBEXECDIR "/tern"

/* Every attribute a queue reply may carry. */
static const struct ipc_spec frame_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},        {IPC_ATTR_STATUS, IPC_OPTIONAL},
    {IPC_ATTR_REASON, IPC_OPTIONAL},         {IPC_ATTR_QUEUE, IPC_OPTIONAL},
    {IPC_ATTR_RCPTS, IPC_OPTIONAL},          {IPC_ATTR_PAUSED, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE_MODE, IPC_OPTIONAL},     {IPC_ATTR_CONNECTIONS, IPC_OPTIONAL},
    {IPC_ATTR_NEXT_RETRY, IPC_OPTIONAL},     {IPC_ATTR_DELIVERED, IPC_OPTIONAL},
    {IPC_ATTR_BOUNCED, IPC_OPTIONAL},        {IPC_ATTR_DEFERRED, IPC_OPTIONAL},
    {IPC_ATTR_PRIORITY, IPC_OPTIONAL},       {IPC_ATTR_QUEUES, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},       {IPC_ATTR_RCPT_INDEX, IPC_OPTIONAL},
    {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},      {IPC_ATTR_SENDER, IPC_OPTIONAL},
    {IPC_ATTR_RCPT_STATE, IPC_OPTIONAL},     {IPC_ATTR_ATTEMPTS, IPC_OPTIONAL},
    {IPC_ATTR_NEXT_ATTEMPT, IPC_OPTIONAL},   {IPC_ATTR_RECEIVED, IPC_OPTIONAL},
    {IPC_ATTR_BODY_SIZE, IPC_OPTIONAL},      {IPC_ATTR_LAST_RESULT, IPC_OPTIONAL},
    {IPC_ATTR_RECEIVED_MSGS, IPC_OPTIONAL},  {IPC_ATTR_RECEIVED_RCPTS, IPC_OPTIONAL},
    {IPC_ATTR_OUTBOX_PENDING, IPC_OPTIONAL}, {IPC_ATTR_UPTIME, IPC_OPTIONAL},
    {IPC_ATTR_STATE, IPC_OPTIONAL},
};

struct reply {
	int64_t status;
	char *reason;
	struct ipc_msg *rows;
	size_t nrows;
};

static void reply_free(struct reply *r)
{
	for (size_t i = 0; i < r->nrows; i++)
		ipc_msg_free(&r->rows[i]);
	free(r->rows);
	free(r->reason);
	memset(r, 0, sizeof(*r));
}

static char *socket_path(const struct ctl_options *opts)
{
	struct conf *conf = conf_load(opts->config);
	const char *spool = conf_get_string(conf_global(conf), "spool");
	char *path = mem_asprintf("%s/%s", spool && *spool ? spool : DEFAULT_SPOOL, CONTROL_SOCKET);
	conf_free(conf);
	return path;
}

/* One attribute of a request: integers when text is NULL. */
struct arg {
	enum ipc_attr attr;
	const char *text;
	int64_t num;
};

static bool read_reply(int fd, struct reply *r, struct buf *err)
{
	struct buf in = BUF_INIT, payload = BUF_INIT;
	bool ok = true, done = false, replied = false;
	while (ok && !done) {
		struct ipc_msg m;
		ok = ipc_receive(fd, &in, MAX_FRAME, TIMEOUT_MS, &payload, err) &&
		     ipc_decode(payload.data, payload.len, frame_spec, IPC_SPEC_COUNT(frame_spec), &m, err);
		if (!ok)
			break;
		const char *verb = ipc_msg_str(&m, IPC_ATTR_REQUEST);
		if (strcmp(verb, "end") == 0) {
			done = true;
			ipc_msg_free(&m);
		} else if (strcmp(verb, "reply") == 0 && !replied) {
			replied = true;
			r->status = ipc_msg_int(&m, IPC_ATTR_STATUS);
			const char *reason = ipc_msg_str(&m, IPC_ATTR_REASON);
			r->reason = mem_strdup(reason ? reason : "");
			ipc_msg_free(&m);
		} else {
			r->rows = mem_reallocarray(r->rows, r->nrows + 1, sizeof(*r->rows));
			r->rows[r->nrows++] = m;
		}
	}
	if (ok && !replied) {
		buf_puts(err, "no reply from qmgr");
		ok = false;
	}
	buf_free(&in);
	buf_free(&payload);
	return ok;
}

/* Sends qmgr.VERB with args through master; CTL_EXIT_OK with the reply
 * in r, or the failure reported. */
static int request(const struct ctl_options *opts, const char *verb, const struct arg *args, size_t nargs,
                   struct reply *r)
{
	memset(r, 0, sizeof(*r));
	char *path = socket_path(opts);
	struct buf err = BUF_INIT, frame = BUF_INIT, name = BUF_INIT;
	int status = CTL_EXIT_OK;
	int fd = ipc_connect(path, &err);
	if (fd < 0) {
		status = errno == ENOENT || errno == ECONNREFUSED
		             ? ctl_fail("tern is not running (no master on %s)", path)
		             : ctl_fail("%s", buf_cstr(&err));
		goto out;
	}
	buf_printf(&name, "qmgr.%s", verb);
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, buf_cstr(&name));
	for (size_t i = 0; i < nargs; i++) {
		if (args[i].text)
			ipc_put_str(&w, args[i].attr, args[i].text);
		else
			ipc_put_int(&w, args[i].attr, args[i].num);
	}
	if (!ipc_write_end(&w, &err) || !ipc_send(fd, &frame, TIMEOUT_MS, &err) || !read_reply(fd, r, &err))
		status = ctl_fail("%s", buf_cstr(&err));
	else if (r->status != 0)
		status = ctl_fail("%s", r->reason);
	close(fd);
out:
	if (status != CTL_EXIT_OK)
		reply_free(r);
	buf_free(&err);
	buf_free(&frame);
	buf_free(&name);
	free(path);
	return status;
}

/* ---- options ------------------------------------------------------------------------ */

/* "--name=value" or "--flag": the value, "" for a flag, NULL if absent. */
static const char *option(int argc, char **argv, const char *name)
{
	size_t len = strlen(name);
	for (int i = 0; i < argc; i++) {
		if (strncmp(argv[i], name, len) != 0)
			continue;
		if (argv[i][len] == '=')
			return argv[i] + len + 1;
		if (argv[i][len] == '\0')
			return "";
	}
	return NULL;
}

/* The one operand (a queue) and no unknown options. */
static int operands(int argc, char **argv, const char *const *known, const char **operand, bool need)
{
	*operand = NULL;
	for (int i = 0; i < argc; i++) {
		if (argv[i][0] == '-') {
			bool ok = false;
			for (size_t k = 0; known && known[k] && !ok; k++) {
				size_t len = strlen(known[k]);
				ok = strncmp(argv[i], known[k], len) == 0 &&
				     (argv[i][len] == '\0' || argv[i][len] == '=');
			}
			if (!ok)
				return ctl_usage_error("unknown option \"%s\"", argv[i]);
		} else if (*operand) {
			return ctl_usage_error("one queue only");
		} else {
			*operand = argv[i];
		}
	}
	if (need && *operand == NULL)
		return ctl_usage_error("which queue? (domain/vmta, */*, domain/*)");
	return CTL_EXIT_OK;
}

/* ---- printing ------------------------------------------------------------------------ */

static void json_field_str(struct buf *out, const char *name, const char *value, bool *first)
{
	buf_printf(out, "%s\"%s\":", *first ? "" : ",", name);
	json_append_string(out, value ? value : "");
	*first = false;
}

static void json_field_int(struct buf *out, const char *name, int64_t value, bool *first)
{
	buf_printf(out, "%s\"%s\":%" PRId64, *first ? "" : ",", name, value);
	*first = false;
}

static void print_time(int64_t t, char *out, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (t <= 0) {
		out[0] = '\0';
		return;
	}
	localtime_r(&tt, &tm);
	strftime(out, len, "%H:%M:%S", &tm);
}

static void queues_json(const struct reply *r, struct buf *out)
{
	buf_puts(out, "[");
	for (size_t i = 0; i < r->nrows; i++) {
		const struct ipc_msg *m = &r->rows[i];
		bool first = true;
		buf_puts(out, i ? ",{" : "{");
		json_field_str(out, "queue", ipc_msg_str(m, IPC_ATTR_QUEUE), &first);
		json_field_int(out, "rcpts", ipc_msg_int(m, IPC_ATTR_RCPTS), &first);
		json_field_int(out, "connections", ipc_msg_int(m, IPC_ATTR_CONNECTIONS), &first);
		buf_printf(out, ",\"paused\":%s", ipc_msg_int(m, IPC_ATTR_PAUSED) ? "true" : "false");
		json_field_str(out, "mode", ipc_msg_str(m, IPC_ATTR_QUEUE_MODE), &first);
		json_field_int(out, "nextRetry", ipc_msg_int(m, IPC_ATTR_NEXT_RETRY), &first);
		json_field_int(out, "delivered", ipc_msg_int(m, IPC_ATTR_DELIVERED), &first);
		json_field_int(out, "bounced", ipc_msg_int(m, IPC_ATTR_BOUNCED), &first);
		json_field_int(out, "deferred", ipc_msg_int(m, IPC_ATTR_DEFERRED), &first);
		json_field_str(out, "lastError", ipc_msg_str(m, IPC_ATTR_REASON), &first);
		buf_puts(out, "}");
	}
	buf_puts(out, "]");
}

/* queue #rcpt conn st retry last error, as PowerMTA prints it. */
static void queues_text(const struct reply *r)
{
	printf("%-30s %7s %4s %2s %8s %s\n", "queue", "#rcpt", "conn", "st", "retry", "last error");
	printf("%-30s %7s %4s %2s %8s %s\n", "------------------------------", "-------", "----", "--", "--------",
	       "----------");
	for (size_t i = 0; i < r->nrows; i++) {
		const struct ipc_msg *m = &r->rows[i];
		char retry[16];
		print_time(ipc_msg_int(m, IPC_ATTR_NEXT_RETRY), retry, sizeof(retry));
		const char *st = ipc_msg_int(m, IPC_ATTR_PAUSED)                               ? "pa"
		                 : strcmp(ipc_msg_str(m, IPC_ATTR_QUEUE_MODE), "backoff") == 0 ? "bo"
		                                                                               : "";
		const char *err = ipc_msg_str(m, IPC_ATTR_REASON);
		printf("%-30s %7" PRId64 " %4" PRId64 " %2s %8s %s\n", ipc_msg_str(m, IPC_ATTR_QUEUE),
		       ipc_msg_int(m, IPC_ATTR_RCPTS), ipc_msg_int(m, IPC_ATTR_CONNECTIONS), st, retry, err ? err : "");
	}
	printf("\n%zu queue%s shown.\n", r->nrows, r->nrows == 1 ? "" : "s");
}

static int print_queues(const struct ctl_options *opts, const struct reply *r)
{
	if (opts->json) {
		struct buf out = BUF_INIT;
		queues_json(r, &out);
		puts(buf_cstr(&out));
		buf_free(&out);
	} else {
		queues_text(r);
	}
	return CTL_EXIT_OK;
}

static int print_done(const struct ctl_options *opts, const struct reply *r)
{
	if (opts->json) {
		struct buf out = BUF_INIT;
		buf_puts(&out, "{\"ok\":true,\"message\":");
		json_append_string(&out, r->reason);
		buf_puts(&out, "}");
		puts(buf_cstr(&out));
		buf_free(&out);
	} else {
		printf("%s.\n", r->reason);
	}
	return CTL_EXIT_OK;
}

/* ---- commands ------------------------------------------------------------------------ */

int ctl_show_queues(const struct ctl_options *opts, int argc, char **argv)
{
	static const char *const known[] = {"--paused", "--errors", NULL};
	const char *queue;
	int status = operands(argc, argv, known, &queue, false);
	if (status != CTL_EXIT_OK)
		return status;
	struct arg args[3];
	size_t n = 0;
	if (queue)
		args[n++] = (struct arg){IPC_ATTR_QUEUE, queue, 0};
	if (option(argc, argv, "--paused"))
		args[n++] = (struct arg){IPC_ATTR_PAUSED, NULL, 1};
	if (option(argc, argv, "--errors"))
		args[n++] = (struct arg){IPC_ATTR_ERRORS, NULL, 1};
	struct reply r;
	if ((status = request(opts, "show-queues", args, n, &r)) != CTL_EXIT_OK)
		return status;
	status = print_queues(opts, &r);
	reply_free(&r);
	return status;
}

int ctl_show_topqueues(const struct ctl_options *opts, int argc, char **argv)
{
	const char *queue;
	int status = operands(argc, argv, NULL, &queue, false);
	struct reply r;
	if (status != CTL_EXIT_OK || (status = request(opts, "show-topqueues", NULL, 0, &r)) != CTL_EXIT_OK)
		return status;
	status = print_queues(opts, &r);
	reply_free(&r);
	return status;
}

int ctl_show_domains(const struct ctl_options *opts, int argc, char **argv)
{
	const char *domain;
	int status = operands(argc, argv, NULL, &domain, false);
	struct reply r;
	if (status != CTL_EXIT_OK || (status = request(opts, "show-domains", NULL, 0, &r)) != CTL_EXIT_OK)
		return status;
	struct buf out = BUF_INIT;
	if (!opts->json)
		printf("%-30s %7s %6s %4s\n%-30s %7s %6s %4s\n", "domain", "#rcpt", "queues", "conn",
		       "------------------------------", "-------", "------", "----");
	buf_puts(&out, "[");
	size_t shown = 0;
	for (size_t i = 0; i < r.nrows; i++) {
		const struct ipc_msg *m = &r.rows[i];
		const char *name = ipc_msg_str(m, IPC_ATTR_QUEUE);
		if (domain && fnmatch(domain, name, FNM_CASEFOLD) != 0)
			continue;
		if (opts->json) {
			bool first = true;
			buf_puts(&out, shown ? ",{" : "{");
			json_field_str(&out, "domain", name, &first);
			json_field_int(&out, "rcpts", ipc_msg_int(m, IPC_ATTR_RCPTS), &first);
			json_field_int(&out, "queues", ipc_msg_int(m, IPC_ATTR_QUEUES), &first);
			json_field_int(&out, "connections", ipc_msg_int(m, IPC_ATTR_CONNECTIONS), &first);
			buf_puts(&out, "}");
		} else {
			printf("%-30s %7" PRId64 " %6" PRId64 " %4" PRId64 "\n", name, ipc_msg_int(m, IPC_ATTR_RCPTS),
			       ipc_msg_int(m, IPC_ATTR_QUEUES), ipc_msg_int(m, IPC_ATTR_CONNECTIONS));
		}
		shown++;
	}
	buf_puts(&out, "]");
	if (opts->json)
		puts(buf_cstr(&out));
	else
		printf("\n%zu of %zu domains shown.\n", shown, r.nrows);
	buf_free(&out);
	reply_free(&r);
	return CTL_EXIT_OK;
}

int ctl_list(const struct ctl_options *opts, int argc, char **argv)
{
	static const char *const known[] = {"--queue", "--orig", "--rcpt", "--maxitems", NULL};
	const char *extra;
	int status = operands(argc, argv, known, &extra, false);
	if (status != CTL_EXIT_OK)
		return status;
	const char *queue = option(argc, argv, "--queue");
	const char *max = option(argc, argv, "--maxitems");
	if (queue == NULL || *queue == '\0' || extra)
		return ctl_usage_error("list needs --queue=domain/vmta");
	struct arg args[4] = {{IPC_ATTR_QUEUE, queue, 0}};
	size_t n = 1;
	const char *rcpt = option(argc, argv, "--rcpt"), *orig = option(argc, argv, "--orig");
	if (rcpt)
		args[n++] = (struct arg){IPC_ATTR_RECIPIENT, rcpt, 0};
	if (orig)
		args[n++] = (struct arg){IPC_ATTR_SENDER, orig, 0};
	if (max) {
		char *end;
		long long v = strtoll(max, &end, 10);
		if (*max == '\0' || *end != '\0' || v < 0)
			return ctl_usage_error("--maxitems wants a number");
		args[n++] = (struct arg){IPC_ATTR_MAX_ITEMS, NULL, v};
	}
	struct reply r;
	if ((status = request(opts, "list", args, n, &r)) != CTL_EXIT_OK)
		return status;
	struct buf out = BUF_INIT;
	buf_puts(&out, "[");
	for (size_t i = 0; i < r.nrows; i++) {
		const struct ipc_msg *m = &r.rows[i];
		const char *last = ipc_msg_str(m, IPC_ATTR_LAST_RESULT);
		if (opts->json) {
			bool first = true;
			buf_puts(&out, i ? ",{" : "{");
			json_field_str(&out, "queueId", ipc_msg_str(m, IPC_ATTR_QUEUE_ID), &first);
			json_field_str(&out, "rcpt", ipc_msg_str(m, IPC_ATTR_RECIPIENT), &first);
			json_field_str(&out, "orig", ipc_msg_str(m, IPC_ATTR_SENDER), &first);
			json_field_str(&out, "state", ipc_msg_str(m, IPC_ATTR_RCPT_STATE), &first);
			json_field_int(&out, "attempts", ipc_msg_int(m, IPC_ATTR_ATTEMPTS), &first);
			json_field_int(&out, "nextAttempt", ipc_msg_int(m, IPC_ATTR_NEXT_ATTEMPT), &first);
			json_field_int(&out, "received", ipc_msg_int(m, IPC_ATTR_RECEIVED), &first);
			json_field_int(&out, "size", ipc_msg_int(m, IPC_ATTR_BODY_SIZE), &first);
			json_field_str(&out, "lastError", last, &first);
			buf_puts(&out, "}");
		} else {
			printf("%s/%" PRId64 " %s <%s> -> <%s> %s attempts=%" PRId64 "%s%s\n",
			       ipc_msg_str(m, IPC_ATTR_QUEUE_ID), ipc_msg_int(m, IPC_ATTR_RCPT_INDEX),
			       ipc_msg_str(m, IPC_ATTR_QUEUE), ipc_msg_str(m, IPC_ATTR_SENDER),
			       ipc_msg_str(m, IPC_ATTR_RECIPIENT), ipc_msg_str(m, IPC_ATTR_RCPT_STATE),
			       ipc_msg_int(m, IPC_ATTR_ATTEMPTS), last ? " " : "", last ? last : "");
		}
	}
	buf_puts(&out, "]");
	if (opts->json)
		puts(buf_cstr(&out));
	else
		printf("%zu recipient%s listed.\n", r.nrows, r.nrows == 1 ? "" : "s");
	buf_free(&out);
	reply_free(&r);
	return CTL_EXIT_OK;
}

static int queue_action(const struct ctl_options *opts, const char *verb, int argc, char **argv)
{
	const char *queue;
	int status = operands(argc, argv, NULL, &queue, true);
	if (status != CTL_EXIT_OK)
		return status;
	struct arg args[1] = {{IPC_ATTR_QUEUE, queue, 0}};
	struct reply r;
	if ((status = request(opts, verb, args, 1, &r)) != CTL_EXIT_OK)
		return status;
	status = print_done(opts, &r);
	reply_free(&r);
	return status;
}

int ctl_pause_queue(const struct ctl_options *opts, int argc, char **argv)
{
	return queue_action(opts, "pause", argc, argv);
}

int ctl_resume_queue(const struct ctl_options *opts, int argc, char **argv)
{
	return queue_action(opts, "resume", argc, argv);
}

/* set queue --mode=backoff|normal domain/vmta */
int ctl_set_queue(const struct ctl_options *opts, int argc, char **argv)
{
	static const char *const known[] = {"--mode", NULL};
	const char *queue;
	int status = operands(argc, argv, known, &queue, true);
	if (status != CTL_EXIT_OK)
		return status;
	const char *mode = option(argc, argv, "--mode");
	if (mode == NULL || (strcmp(mode, "backoff") != 0 && strcmp(mode, "normal") != 0))
		return ctl_usage_error("--mode=backoff or --mode=normal is needed");
	struct arg args[2] = {{IPC_ATTR_QUEUE, queue, 0}, {IPC_ATTR_QUEUE_MODE, mode, 0}};
	struct reply r;
	if ((status = request(opts, "set-mode", args, 2, &r)) != CTL_EXIT_OK)
		return status;
	status = print_done(opts, &r);
	reply_free(&r);
	return status;
}

int ctl_schedule(const struct ctl_options *opts, int argc, char **argv)
{
	return queue_action(opts, "schedule", argc, argv);
}

int ctl_delete(const struct ctl_options *opts, int argc, char **argv)
{
	static const char *const known[] = {"--queue", "--rcpt", "--orig", "--older-than", "--no-accounting", NULL};
	const char *extra;
	int status = operands(argc, argv, known, &extra, false);
	if (status != CTL_EXIT_OK)
		return status;
	const char *queue = option(argc, argv, "--queue");
	if (queue == NULL || *queue == '\0' || extra)
		return ctl_usage_error("delete needs --queue=domain/vmta (or */*, domain/*)");
	struct arg args[5] = {{IPC_ATTR_QUEUE, queue, 0}};
	size_t n = 1;
	const char *rcpt = option(argc, argv, "--rcpt"), *orig = option(argc, argv, "--orig");
	const char *older = option(argc, argv, "--older-than");
	if (rcpt)
		args[n++] = (struct arg){IPC_ATTR_RECIPIENT, rcpt, 0};
	if (orig)
		args[n++] = (struct arg){IPC_ATTR_SENDER, orig, 0};
	if (older) {
		int64_t secs;
		const char *why;
		if (!value_parse_interval(older, &secs, &why))
			return ctl_usage_error("--older-than: %s", why);
		args[n++] = (struct arg){IPC_ATTR_OLDER_THAN, NULL, secs};
	}
	if (option(argc, argv, "--no-accounting"))
		args[n++] = (struct arg){IPC_ATTR_NO_ACCOUNTING, NULL, 1};
	struct reply r;
	if ((status = request(opts, "delete", args, n, &r)) != CTL_EXIT_OK)
		return status;
	status = print_done(opts, &r);
	reply_free(&r);
	return status;
}

static const struct ipc_msg *traffic_row(const struct reply *r, const char *period)
{
	for (size_t i = 0; i < r->nrows; i++) {
		const struct ipc_msg *m = &r->rows[i];
		if (strcmp(ipc_msg_str(m, IPC_ATTR_REQUEST), "traffic") == 0 && ipc_msg_has(m, IPC_ATTR_STATE) &&
		    strcmp(ipc_msg_str(m, IPC_ATTR_STATE), period) == 0)
			return m;
	}
	return NULL;
}

/* qmgr's part of PowerMTA's status: traffic, connections, queue totals. */
int ctl_show_status(const struct ctl_options *opts, int argc, char **argv)
{
	const char *extra;
	int status = operands(argc, argv, NULL, &extra, false);
	struct reply r;
	if (status != CTL_EXIT_OK || (status = request(opts, "status", NULL, 0, &r)) != CTL_EXIT_OK)
		return status;
	if (r.nrows == 0) {
		reply_free(&r);
		return ctl_fail("qmgr sent no status");
	}
	const struct ipc_msg *m = &r.rows[0];
	const struct ipc_msg *hour = traffic_row(&r, "hour"), *minute = traffic_row(&r, "minute");
	const struct ipc_msg *top_hour = traffic_row(&r, "top-hour"), *top_minute = traffic_row(&r, "top-minute");
#define N(msg, a) (msg ? ipc_msg_int(msg, IPC_ATTR_##a) : 0)
	if (opts->json) {
		printf("{\"traffic\":{\"total\":{\"in\":{\"rcp\":%" PRId64 ",\"msg\":%" PRId64
		       "},\"out\":{\"rcp\":%" PRId64 ",\"bounced\":%" PRId64 ",\"deferred\":%" PRId64
		       "}},\"lastHr\":{\"in\":{\"rcp\":%" PRId64 ",\"msg\":%" PRId64 "},\"out\":{\"rcp\":%" PRId64
		       "}},\"lastMin\":{\"in\":{\"rcp\":%" PRId64 ",\"msg\":%" PRId64 "},\"out\":{\"rcp\":%" PRId64
		       "}},\"topPerHr\":{\"in\":{\"rcp\":%" PRId64 ",\"msg\":%" PRId64 "},\"out\":{\"rcp\":%" PRId64
		       "}},\"topPerMin\":{\"in\":{\"rcp\":%" PRId64 ",\"msg\":%" PRId64 "},\"out\":{\"rcp\":%" PRId64
		       "}}},\"conn\":{\"smtpOut\":{\"cur\":%" PRId64 "}},\"queue\":{\"smtp\":{\"rcp\":%" PRId64
		       ",\"queues\":%" PRId64 "}},\"accounting\":{\"pending\":%" PRId64 "},\"uptime\":%" PRId64
		       ",\"status\":\"running\"}\n",
		       N(m, RECEIVED_RCPTS), N(m, RECEIVED_MSGS), N(m, DELIVERED), N(m, BOUNCED), N(m, DEFERRED),
		       N(hour, RECEIVED_RCPTS), N(hour, RECEIVED_MSGS), N(hour, DELIVERED), N(minute, RECEIVED_RCPTS),
		       N(minute, RECEIVED_MSGS), N(minute, DELIVERED), N(top_hour, RECEIVED_RCPTS),
		       N(top_hour, RECEIVED_MSGS), N(top_hour, DELIVERED), N(top_minute, RECEIVED_RCPTS),
		       N(top_minute, RECEIVED_MSGS), N(top_minute, DELIVERED), N(m, CONNECTIONS), N(m, RCPTS),
		       N(m, QUEUES), N(m, OUTBOX_PENDING), N(m, UPTIME));
	} else {
		int64_t up = N(m, UPTIME);
		printf("  Traffic    ------------inbound------------  ------------outbound-----------\n"
		       "                 rcpts      msgs                  rcpts   bounced   deferred\n");
		printf("      Total %9" PRId64 " %9" PRId64 "            %11" PRId64 " %9" PRId64 " %10" PRId64 "\n",
		       N(m, RECEIVED_RCPTS), N(m, RECEIVED_MSGS), N(m, DELIVERED), N(m, BOUNCED), N(m, DEFERRED));
		printf("  Last Hour %9" PRId64 " %9" PRId64 "            %11" PRId64 "\n", N(hour, RECEIVED_RCPTS),
		       N(hour, RECEIVED_MSGS), N(hour, DELIVERED));
		printf("  Last Min. %9" PRId64 " %9" PRId64 "            %11" PRId64 "\n", N(minute, RECEIVED_RCPTS),
		       N(minute, RECEIVED_MSGS), N(minute, DELIVERED));
		printf("   Top/Hour %9" PRId64 " %9" PRId64 "            %11" PRId64 "\n", N(top_hour, RECEIVED_RCPTS),
		       N(top_hour, RECEIVED_MSGS), N(top_hour, DELIVERED));
		printf("   Top/Min. %9" PRId64 " %9" PRId64 "            %11" PRId64 "\n\n",
		       N(top_minute, RECEIVED_RCPTS), N(top_minute, RECEIVED_MSGS), N(top_minute, DELIVERED));
		printf(" Connections    active\n   Outbound %9" PRId64 "\n\n", N(m, CONNECTIONS));
		printf("     Queues      rcpts    queues  Accounting  pending\n       SMTP %10" PRId64 " %9" PRId64
		       "              %7" PRId64 "\n\n",
		       N(m, RCPTS), N(m, QUEUES), N(m, OUTBOX_PENDING));
		printf("     Status    running    Uptime %3" PRId64 " %2" PRId64 ":%02" PRId64 ":%02" PRId64 "\n",
		       up / 86400, up / 3600 % 24, up / 60 % 60, up % 60);
	}
#undef N
	reply_free(&r);
	return CTL_EXIT_OK;
}

/* Offline: refuses while master answers, then runs qmgr -C. */
int ctl_queue_recover(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("queue recover takes no arguments");
	char *path = socket_path(opts);
	struct buf err = BUF_INIT;
	int fd = ipc_connect(path, &err);
	free(path);
	buf_free(&err);
	if (fd >= 0) {
		close(fd);
		return ctl_fail("tern is running: stop it first (ternctl stop), then recover the queue");
	}
	const char *dir = opts->daemon_dir ? opts->daemon_dir : DEFAULT_DAEMON_DIR;
	char *qmgr = mem_asprintf("%s/qmgr", dir);
	pid_t pid = fork();
	if (pid == 0) {
		char *args[] = {"qmgr", "-C", "-c", (char *)opts->config, NULL};
		execv(qmgr, args);
		fprintf(stderr, "ternctl: cannot run %s: %s\n", qmgr, strerror(errno));
		_exit(127);
	}
	free(qmgr);
	int wstatus;
	if (pid < 0 || waitpid(pid, &wstatus, 0) < 0)
		return ctl_fail("cannot run qmgr: %s", strerror(errno));
	if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0)
		return ctl_fail("catastrophic recovery failed (see the messages above)");
	if (opts->json)
		puts("{\"ok\":true,\"message\":\"queue recovered\"}");
	else
		puts("Queue recovered.");
	return CTL_EXIT_OK;
}
