/* log.c: leveled logging to syslog, stderr or a file (see log.h).
 * A file target is opened in append mode and can be reopened after an
 * external rotation; a failed reopen keeps writing to the old descriptor
 * rather than losing lines.  An event loop's lines can be gathered and
 * written together (log_batch_start). */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"info", "warning", "error", "fatal", "panic"};
static const int level_priorities[] = {LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT, LOG_ALERT};

static struct {
	enum log_target target;
	char ident[64];
	char path[4096];
	int fd;
	pid_t pid; /* for the line prefix: 0 until the first line, and in a child */
	unsigned generation; /* counts log_open and log_close: the line prefix may change */
} log_state = {LOG_TO_STDERR, "tern", "", -1, 0, 0};

/* Lines kept for one write: the batching thread's, up to LOG_BATCH_BYTES
 * (no more than PIPE_BUF, so that a batch written to a pipe shared with
 * other processes still arrives whole). */
static struct {
	bool on;
	pthread_t thread;
	log_batch_wake_fn wake;
	void *ctx;
	size_t len;
	char data[LOG_BATCH_BYTES];
} batch;

/* A child starts without its parent's lines and without batching. */
static void forget_pid(void)
{
	log_state.pid = 0;
	batch.on = false;
	batch.len = 0;
}

/* getpid() is a system call: once per process, not per line. */
static pid_t our_pid(void)
{
	static bool registered;
	if (!registered)
		registered = pthread_atfork(NULL, NULL, forget_pid) == 0;
	if (log_state.pid == 0)
		log_state.pid = getpid();
	return log_state.pid;
}

/* No symlinks: master and the local agent reopen the file as root in a
 * directory the tern user owns. */
static int open_log_file(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
}

int log_open(const char *ident, enum log_target target, const char *path)
{
	int fd = -1;
	if (target == LOG_TO_FILE) {
		if (path == NULL || strlen(path) >= sizeof(log_state.path)) {
			errno = EINVAL;
			return -1;
		}
		if ((fd = open_log_file(path)) < 0)
			return -1;
	}
	log_close();
	snprintf(log_state.ident, sizeof(log_state.ident), "%s", ident);
	log_state.target = target;
	log_state.fd = fd;
	log_state.generation++;
	if (target == LOG_TO_FILE)
		snprintf(log_state.path, sizeof(log_state.path), "%s", path);
	if (target == LOG_TO_SYSLOG)
		openlog(log_state.ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
	return 0;
}

int log_reopen(void)
{
	if (log_state.target != LOG_TO_FILE)
		return 0;
	log_flush();
	int fd = open_log_file(log_state.path);
	if (fd < 0)
		return -1;
	close(log_state.fd);
	log_state.fd = fd;
	return 0;
}

int log_chown(uid_t uid, gid_t gid)
{
	if (log_state.target != LOG_TO_FILE || log_state.fd < 0)
		return 0;
	return fchown(log_state.fd, uid, gid);
}

void log_close(void)
{
	log_flush();
	if (log_state.target == LOG_TO_FILE && log_state.fd >= 0)
		close(log_state.fd);
	if (log_state.target == LOG_TO_SYSLOG)
		closelog();
	log_state.fd = -1;
	log_state.target = LOG_TO_STDERR;
	log_state.generation++;
}

static int target_fd(void)
{
	return log_state.target == LOG_TO_FILE ? log_state.fd : STDERR_FILENO;
}

static void write_out(const char *data, size_t len)
{
	ssize_t ignored = write(target_fd(), data, len);
	(void)ignored;
}

void log_flush(void)
{
	if (batch.len == 0)
		return;
	write_out(batch.data, batch.len);
	batch.len = 0;
}

void log_batch_start(log_batch_wake_fn wake, void *ctx)
{
	log_flush();
	our_pid(); /* registers the fork handler that ends batching in a child */
	batch.thread = pthread_self();
	batch.wake = wake;
	batch.ctx = ctx;
	batch.on = true;
}

void log_batch_stop(void)
{
	log_flush();
	batch.on = false;
}

/* Whole lines only, in one write(2) each time, so that lines from
 * several processes sharing a file or stderr never interleave.  The
 * batching thread's info and warning lines wait in the batch; an error
 * or worse goes out at once, after them. */
static void emit_line(enum log_level level, const char *line, size_t len)
{
	bool ours = batch.on && pthread_equal(batch.thread, pthread_self());
	if (!ours || level >= LOG_LEVEL_ERROR || len > sizeof(batch.data)) {
		if (ours)
			log_flush();
		write_out(line, len);
		return;
	}
	if (batch.len + len > sizeof(batch.data))
		log_flush();
	bool first = batch.len == 0;
	memcpy(batch.data + batch.len, line, len);
	batch.len += len;
	if (first)
		batch.wake(batch.ctx);
}

/* The start of a file or stderr line ("2026-11-30 18:00:00 smtpd[123]: "),
 * made once a second by each thread rather than for every line. */
static _Thread_local struct {
	time_t second;
	pid_t pid;
	unsigned opened; /* log_state's generation it was made for */
	size_t len;
	char text[128];
} line_stamp;

static size_t line_start(char *line)
{
	time_t now = log_state.target == LOG_TO_FILE ? time(NULL) : 0;
	pid_t pid = our_pid();
	if (line_stamp.len == 0 || line_stamp.second != now || line_stamp.pid != pid ||
	    line_stamp.opened != log_state.generation) {
		size_t len = 0;
		if (log_state.target == LOG_TO_FILE) {
			struct tm tm;
			localtime_r(&now, &tm);
			len = strftime(line_stamp.text, sizeof(line_stamp.text), "%Y-%m-%d %H:%M:%S ", &tm);
		}
		int n = snprintf(line_stamp.text + len, sizeof(line_stamp.text) - len, "%s[%ld]: ", log_state.ident,
		                 (long)pid);
		if (n > 0)
			len += (size_t)n;
		line_stamp.len = len < sizeof(line_stamp.text) ? len : sizeof(line_stamp.text) - 1;
		line_stamp.second = now;
		line_stamp.pid = pid;
		line_stamp.opened = log_state.generation;
	}
	memcpy(line, line_stamp.text, line_stamp.len);
	return line_stamp.len;
}

static void write_line(enum log_level level, const char *fmt, va_list ap)
{
	char line[8192];
	size_t len = line_start(line);
	size_t name_len = strlen(level_names[level]);
	memcpy(line + len, level_names[level], name_len);
	len += name_len;
	line[len++] = ':';
	line[len++] = ' ';
	int n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n > 0)
		len += (size_t)n;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	emit_line(level, line, len);
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	int saved_errno = errno;
	if (log_state.target == LOG_TO_SYSLOG) {
		char line[8192];
		vsnprintf(line, sizeof(line), fmt, ap);
		syslog(level_priorities[level], "%s: %s", level_names[level], line);
	} else {
		write_line(level, fmt, ap);
	}
	errno = saved_errno;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

#define LOG_FUNCTION(name, level)                                                                                      \
	void name(const char *fmt, ...)                                                                                \
	{                                                                                                              \
		va_list ap;                                                                                            \
		va_start(ap, fmt);                                                                                     \
		log_vmsg(level, fmt, ap);                                                                              \
		va_end(ap);                                                                                            \
	}

LOG_FUNCTION(log_info, LOG_LEVEL_INFO)
LOG_FUNCTION(log_warning, LOG_LEVEL_WARNING)
LOG_FUNCTION(log_error, LOG_LEVEL_ERROR)

void log_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_FATAL, fmt, ap);
	va_end(ap);
	exit(1);
}

void log_panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_PANIC, fmt, ap);
	va_end(ap);
	abort();
}
