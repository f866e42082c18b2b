/* log.h: logging with fixed levels.
 * info and warning report normal and unusual events; error is a failure
 * the program survives; fatal is a configuration or environment problem
 * that stops the program (exit 1); panic is an internal bug (abort).
 * Lines go to syslog (LOG_MAIL) by default, to stderr in foreground mode,
 * or to a file (reopened on request, for logrotate). */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdarg.h>
#include <sys/types.h>

enum log_level { LOG_LEVEL_INFO, LOG_LEVEL_WARNING, LOG_LEVEL_ERROR, LOG_LEVEL_FATAL, LOG_LEVEL_PANIC };
enum log_target { LOG_TO_SYSLOG, LOG_TO_STDERR, LOG_TO_FILE };

/* ident names the program in every line ("tern/smtpd"); path is used only
 * with LOG_TO_FILE.  Returns 0, or -1 with errno when the file cannot be
 * opened (the previous target stays in use). */
int log_open(const char *ident, enum log_target target, const char *path);
/* Closes and reopens the log file (after logrotate moved it). */
int log_reopen(void);
/* Gives the open log file to UID:GID, so that workers running as that user
 * can reopen it after a rotation; 0 when the target is not a file. */
int log_chown(uid_t uid, gid_t gid);
void log_close(void);

/* Batching, for an event loop: from log_batch_start on, the info and
 * warning lines of the calling thread are kept (at most LOG_BATCH_BYTES)
 * and written together by log_flush(); wake(ctx) is called when a line
 * is kept in an empty batch, so that the loop flushes it soon (server.c:
 * within LOG_FLUSH_DELAY_MS).
 * A full batch, an error line or a line of another thread writes the
 * batch at once; so do log_reopen, log_close and log_batch_stop.  Not
 * for syslog, which takes each line itself.  A forked child does not
 * batch and drops its parent's kept lines. */
#define LOG_BATCH_BYTES 4096
typedef void (*log_batch_wake_fn)(void *ctx);
void log_batch_start(log_batch_wake_fn wake, void *ctx);
void log_batch_stop(void);
void log_flush(void);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void log_panic(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
