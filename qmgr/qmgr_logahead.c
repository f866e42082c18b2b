/* qmgr_logahead.c: the queue log's next file, made ahead.  Berkeley DB
 * starts each log file empty and appends to it, so every group commit's
 * fdatasync of the log must also write the file's new size and blocks:
 * on ext4 that doubles its time.  A thread keeps the file Berkeley DB
 * will open next ready instead: lg_max bytes of zeros already on disk,
 * under the name log.NNNNNNNNNN.
 *
 * The file is written under a temporary name and linked to its final
 * one, which never replaces a file Berkeley DB made first (it would go on
 * writing to an unlinked inode).  Berkeley DB opens an existing file
 * without truncating it and writes its header at the start; a log file
 * that is all zeros reads as one never written, so recovery stops at the
 * end of the previous file as it would without it.  When the thread
 * cannot keep up or the disk is full, Berkeley DB makes the file itself,
 * as before.  The next file is made once the current one is a quarter
 * written: a queue that logs little (or a qmgr started for a moment)
 * writes no zeros, and a busy one has three quarters of a file's time to
 * make it. */
#include "qmgr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "mem.h"

/* How often the thread looks at which file Berkeley DB writes, and how
 * long it waits after it could not make a file. */
#define POLL_MILLIS 50
#define RETRY_SECS 30
#define AHEAD_FROM_DIVISOR 4 /* make the next file from a quarter of this one */
#define TEMP_NAME "next-log.tmp"

struct qmgr_logahead {
	char *dir;
	uint64_t file_bytes;
	qmgr_log_file_fn current;
	void *ctx;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;
};

char *qmgr_log_file_path(const char *dir, uint32_t number)
{
	return mem_asprintf("%s/log.%010" PRIu32, dir, number);
}

/* Makes log file `number` of zeros unless it exists; false with errno
 * set when it could not. */
static bool make_ahead(const struct qmgr_logahead *la, uint32_t number)
{
	char *path = qmgr_log_file_path(la->dir, number);
	char *temp = mem_asprintf("%s/" TEMP_NAME, la->dir);
	bool ok = true;
	if (access(path, F_OK) != 0) {
		int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		ok = fd >= 0 && fileio_write_zeros(fd, la->file_bytes);
		int saved = errno;
		if (fd >= 0)
			close(fd);
		/* EEXIST: Berkeley DB made it meanwhile, and keeps its own */
		if (ok && link(temp, path) < 0 && errno != EEXIST) {
			saved = errno;
			ok = false;
		}
		unlink(temp);
		errno = saved;
	}
	free(path);
	free(temp);
	return ok;
}

static void *logahead_thread(void *arg)
{
	struct qmgr_logahead *la = arg;
	bool warned = false;
	pthread_mutex_lock(&la->mu);
	while (!la->stopping) {
		pthread_mutex_unlock(&la->mu);
		uint32_t number;
		uint64_t offset;
		bool due = la->current(la->ctx, &number, &offset) && offset >= la->file_bytes / AHEAD_FROM_DIVISOR;
		bool ok = !due || make_ahead(la, number + 1);
		if (!ok && !warned)
			log_warning("cannot make the queue's next log file ahead in %s (log files grow as they fill): %s",
			            la->dir, strerror(errno));
		warned = !ok;
		pthread_mutex_lock(&la->mu);
		struct timespec until = qmgr_deadline_after(ok ? POLL_MILLIS : RETRY_SECS * 1000L);
		while (!la->stopping && pthread_cond_timedwait(&la->cv, &la->mu, &until) != ETIMEDOUT)
			continue;
	}
	pthread_mutex_unlock(&la->mu);
	return NULL;
}

struct qmgr_logahead *qmgr_logahead_start(const char *dir, uint64_t file_bytes, qmgr_log_file_fn current, void *ctx,
                                          struct buf *err)
{
	struct qmgr_logahead *la = mem_zalloc(sizeof(*la));
	la->dir = mem_strdup(dir);
	la->file_bytes = file_bytes;
	la->current = current;
	la->ctx = ctx;
	pthread_mutex_init(&la->mu, NULL);
	pthread_cond_init(&la->cv, NULL);
	/* a temporary file left by a crash */
	char *temp = mem_asprintf("%s/" TEMP_NAME, dir);
	unlink(temp);
	free(temp);
	int rc = pthread_create(&la->thread, NULL, logahead_thread, la);
	if (rc != 0) {
		buf_printf(err, "cannot start the log file thread: %s", strerror(rc));
		pthread_mutex_destroy(&la->mu);
		pthread_cond_destroy(&la->cv);
		free(la->dir);
		free(la);
		return NULL;
	}
	return la;
}

void qmgr_logahead_stop(struct qmgr_logahead *la)
{
	if (la == NULL)
		return;
	pthread_mutex_lock(&la->mu);
	la->stopping = true;
	pthread_cond_signal(&la->cv);
	pthread_mutex_unlock(&la->mu);
	pthread_join(la->thread, NULL);
	pthread_mutex_destroy(&la->mu);
	pthread_cond_destroy(&la->cv);
	free(la->dir);
	free(la);
}
