/* mailq.c: mailq, or tern-sendmail -bp.  The queue comes from qmgr as
 * "qmgr.mailq" through master's control socket (<spool>/public/control),
 * which lets root, the tern user and members of the tern group read the
 * queue and nobody else: the envelope of other people's mail is private.
 * Messages still in the pickup directory (Postfix's "maildrop") are listed
 * too when the caller may read it.  The layout is Postfix's:
 *
 *   -Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
 *   0005F1C2A3B4D5E6    1234 Sat Nov 28 18:19:02  sender@example.org
 *         (451 4.2.0 mailbox busy)
 *                                            rcpt@example.net
 *
 *   -- 2 Kbytes in 1 Request. */
#include "mailq.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "config.h"
#include "ipc.h"
#include "log.h"
#include "mem.h"

#define TIMEOUT_MS 60000
#define MAX_FRAME (1024 * 1024)
/* Recipient lines start under the sender: 41 columns in. */
#define RCPT_INDENT 41
/* Envelope lines read from a pickup file. */
#define PICKUP_HEAD_MAX (64 * 1024)

static const struct ipc_spec frame_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},      {IPC_ATTR_STATUS, IPC_OPTIONAL},      {IPC_ATTR_REASON, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},     {IPC_ATTR_SENDER, IPC_OPTIONAL},      {IPC_ATTR_RECEIVED, IPC_OPTIONAL},
    {IPC_ATTR_BODY_SIZE, IPC_OPTIONAL},    {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},   {IPC_ATTR_RCPT_STATE, IPC_OPTIONAL},
    {IPC_ATTR_NEXT_ATTEMPT, IPC_OPTIONAL}, {IPC_ATTR_LAST_RESULT, IPC_OPTIONAL},
};

struct totals {
	unsigned long long bytes;
	unsigned long requests;
};

/* ---- printing ------------------------------------------------------------------- */

/* What goes to the terminal comes partly from files anyone may write and
 * from remote servers: control characters are shown as '?'. */
static const char *safe(const char *text, struct buf *scratch)
{
	buf_reset(scratch);
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		buf_putc(scratch, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
	return buf_cstr(scratch);
}

static void print_heading(struct totals *t)
{
	if (t->requests == 0)
		printf("-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n");
}

static void print_message(struct totals *t, const char *id, unsigned long long size, time_t arrival, const char *sender)
{
	char when[32];
	struct tm tm;
	strftime(when, sizeof(when), "%a %b %e %H:%M:%S", localtime_r(&arrival, &tm));
	print_heading(t);
	if (t->requests > 0)
		printf("\n");
	struct buf a = BUF_INIT, b = BUF_INIT;
	printf("%-11s %8llu %-20.20s %s\n", safe(id, &a), size, when, *sender ? safe(sender, &b) : "MAILER-DAEMON");
	buf_free(&a);
	buf_free(&b);
	t->bytes += size;
	t->requests++;
}

/* The queue keeps the diagnostic as an RFC 3464 diagnostic-code
 * ("smtp;451 4.2.0 busy"): the type says nothing to a mailq reader. */
static void print_reason(const char *reason)
{
	size_t type = strspn(reason, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-");
	if (type > 0 && reason[type] == ';')
		reason += type + 1;
	struct buf scratch = BUF_INIT;
	printf("%*s(%s)\n", 6, "", safe(reason, &scratch));
	buf_free(&scratch);
}

static void print_rcpt(const char *rcpt)
{
	struct buf scratch = BUF_INIT;
	printf("%*s%s\n", RCPT_INDENT, "", safe(rcpt, &scratch));
	buf_free(&scratch);
}

static void print_totals(const struct totals *t)
{
	if (t->requests == 0) {
		printf("Mail queue is empty\n");
		return;
	}
	printf("\n-- %llu Kbytes in %lu Request%s.\n", (t->bytes + 1023) / 1024, t->requests,
	       t->requests == 1 ? "" : "s");
}

/* ---- qmgr's queue ----------------------------------------------------------------- */

/* One frame of the answer; false at "end". */
static bool print_frame(const struct ipc_msg *m, struct totals *t, char **last_reason)
{
	const char *verb = ipc_msg_str(m, IPC_ATTR_REQUEST);
	if (strcmp(verb, "message") == 0) {
		free(*last_reason);
		*last_reason = NULL;
		print_message(t, ipc_msg_str(m, IPC_ATTR_QUEUE_ID) ? ipc_msg_str(m, IPC_ATTR_QUEUE_ID) : "?",
		              (unsigned long long)ipc_msg_int(m, IPC_ATTR_BODY_SIZE),
		              (time_t)ipc_msg_int(m, IPC_ATTR_RECEIVED),
		              ipc_msg_str(m, IPC_ATTR_SENDER) ? ipc_msg_str(m, IPC_ATTR_SENDER) : "");
	} else if (strcmp(verb, "rcpt") == 0 && ipc_msg_str(m, IPC_ATTR_RECIPIENT)) {
		const char *reason = ipc_msg_str(m, IPC_ATTR_LAST_RESULT);
		/* recipients with the same reason share one reason line */
		if (reason && *reason && (*last_reason == NULL || strcmp(*last_reason, reason) != 0)) {
			print_reason(reason);
			free(*last_reason);
			*last_reason = mem_strdup(reason);
		}
		print_rcpt(ipc_msg_str(m, IPC_ATTR_RECIPIENT));
	}
	return strcmp(verb, "end") != 0;
}

/* Reads the answer to qmgr.mailq and prints it; false with err. */
static bool read_answer(int fd, struct totals *t, struct buf *err)
{
	struct buf in = BUF_INIT, payload = BUF_INIT;
	char *last_reason = NULL;
	bool ok = true, more = true, replied = false;
	while (ok && more) {
		struct ipc_msg m;
		ok = ipc_receive(fd, &in, MAX_FRAME, TIMEOUT_MS, &payload, err) &&
		     ipc_decode(payload.data, payload.len, frame_spec, IPC_SPEC_COUNT(frame_spec), &m, err);
		if (!ok)
			break;
		if (strcmp(ipc_msg_str(&m, IPC_ATTR_REQUEST), "reply") == 0 && !replied) {
			replied = true;
			const char *reason = ipc_msg_str(&m, IPC_ATTR_REASON);
			if (ipc_msg_int(&m, IPC_ATTR_STATUS) != 0) {
				buf_puts(err, reason ? reason : "refused");
				ok = false;
			} else if (reason && strcmp(reason, "ok") != 0) {
				log_warning("%s", reason);
			}
		} else {
			more = print_frame(&m, t, &last_reason);
		}
		ipc_msg_free(&m);
	}
	free(last_reason);
	buf_free(&in);
	buf_free(&payload);
	return ok;
}

static bool list_queue(const struct conf *conf, struct totals *t, struct buf *err)
{
	char *path = mem_asprintf("%s/public/control", conf_spool(conf));
	struct buf frame = BUF_INIT;
	bool ok = false;
	int fd = ipc_connect(path, err);
	if (fd < 0) {
		buf_reset(err);
		if (errno == EACCES)
			buf_printf(err, "only root and members of the %s group may list the queue", TERN_USER);
		else
			buf_printf(err, "the queue is not available: tern is not running (no master on %s)", path);
	} else {
		struct ipc_writer w;
		ipc_write_begin(&w, &frame, 0);
		ipc_put_str(&w, IPC_ATTR_REQUEST, "qmgr.mailq");
		ok = ipc_write_end(&w, err) && ipc_send(fd, &frame, TIMEOUT_MS, err) && read_answer(fd, t, err);
		close(fd);
	}
	buf_free(&frame);
	free(path);
	return ok;
}

/* ---- the pickup directory ("maildrop") -------------------------------------------------- */

/* "x-sender: a" -> "a" when line is that pseudo-header. */
static const char *pseudo_value(const char *line, const char *name)
{
	size_t n = strlen(name);
	if (strncasecmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	line += n + 1;
	while (*line == ' ' || *line == '\t')
		line++;
	return line;
}

/* The envelope lines of a pickup file, in whatever order they come. */
struct pickup_head {
	char *sender; /* NULL: none seen */
	char **rcpts;
	size_t nrcpts;
};

static void read_head(FILE *f, struct pickup_head *h)
{
	char line[1024];
	for (size_t read = 0; read < PICKUP_HEAD_MAX && fgets(line, sizeof(line), f);) {
		read += strlen(line);
		line[strcspn(line, "\r\n")] = '\0';
		const char *v;
		if ((v = pseudo_value(line, "x-sender")) != NULL) {
			free(h->sender);
			h->sender = mem_strdup(strcmp(v, "<>") ? v : "");
		} else if ((v = pseudo_value(line, "x-receiver")) != NULL) {
			h->rcpts = mem_reallocarray(h->rcpts, h->nrcpts + 1, sizeof(char *));
			h->rcpts[h->nrcpts++] = mem_strdup(v);
		} else if (!pseudo_value(line, "x-envid") && !pseudo_value(line, "x-virtual-mta")) {
			break;
		}
	}
}

static void free_head(struct pickup_head *h)
{
	for (size_t i = 0; i < h->nrcpts; i++)
		free(h->rcpts[i]);
	free(h->rcpts);
	free(h->sender);
}

/* Prints one waiting file from its envelope lines. */
static void print_pickup_file(int dir_fd, const char *name, struct totals *t)
{
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (f == NULL || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		if (f)
			fclose(f);
		else if (fd >= 0)
			close(fd);
		return;
	}
	struct pickup_head h = {0};
	read_head(f, &h);
	fclose(f);
	if (h.sender) {
		char id[256];
		snprintf(id, sizeof(id), "%.*s", (int)(strlen(name) - 4), name);
		print_message(t, id, (unsigned long long)st.st_size, st.st_mtime, h.sender);
		printf("%*s(maildrop queue, sender UID %lu)\n", 6, "", (unsigned long)st.st_uid);
		for (size_t i = 0; i < h.nrcpts; i++)
			print_rcpt(h.rcpts[i]);
	}
	free_head(&h);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The caller may not be able to read the directory (1730): then only the
 * queue is shown. */
static void list_pickup(const struct conf *conf, struct totals *t)
{
	char *dir = conf_pickup_dir(conf);
	DIR *d = opendir(dir);
	char **names = NULL;
	size_t n = 0;
	for (const struct dirent *de; d && (de = readdir(d)) != NULL;) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] != '.' && len > 4 && strcmp(de->d_name + len - 4, ".msg") == 0) {
			names = mem_reallocarray(names, n + 1, sizeof(char *));
			names[n++] = mem_strdup(de->d_name);
		}
	}
	if (n > 1)
		qsort(names, n, sizeof(char *), compare_names);
	for (size_t i = 0; i < n; i++) {
		print_pickup_file(dirfd(d), names[i], t);
		free(names[i]);
	}
	free(names);
	if (d)
		closedir(d);
	free(dir);
}

int mailq_run(const struct conf *conf)
{
	struct totals t = {0};
	struct buf err = BUF_INIT;
	bool ok = list_queue(conf, &t, &err);
	fflush(stdout);
	list_pickup(conf, &t);
	/* an unreachable queue is not an empty one */
	if (ok || t.requests > 0)
		print_totals(&t);
	fflush(stdout);
	if (!ok)
		log_error("%s", buf_cstr(&err));
	buf_free(&err);
	return ok ? EX_OK : EX_UNAVAILABLE;
}
