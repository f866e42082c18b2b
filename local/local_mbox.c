/* local_mbox.c: append-mbox.  The way Debian's mail tools (liblockfile,
 * mail(1), mutt) lock a mailbox: a dotlock FILE.lock made with
 * O_CREAT|O_EXCL (a lock older than five minutes is stale and removed),
 * then an fcntl write lock on the mailbox.  The whole entry is written,
 * then fsync'd; any error cuts the file back to its old size, so a reader
 * never sees half a message and a retry appends it whole.  Everything runs
 * with the identity of the mailbox's user, and an existing mailbox must be
 * a regular file with one link, owned by that user. */
#include "local.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "fileio.h"
#include "mem.h"

#define LOCK_TRIES 10
#define LOCK_PAUSE_US 500000
#define STALE_LOCK_SECS 300

static void nap(void)
{
	struct timespec ts = {0, LOCK_PAUSE_US * 1000L};
	nanosleep(&ts, NULL);
}

/* Removes lock when it is older than STALE_LOCK_SECS. */
static void break_stale(const char *lock)
{
	struct stat st;
	if (lstat(lock, &st) == 0 && time(NULL) - st.st_mtime > STALE_LOCK_SECS) {
		log_warning("removing the stale lock %s", lock);
		unlink(lock);
	}
}

/* 1: locked, 0: not possible here (no permission: fcntl alone), -1: busy or error. */
static int dotlock(const char *lock, struct buf *err)
{
	for (int i = 0; i < LOCK_TRIES; i++) {
		int fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0) {
			char pid[32];
			int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
			(void)!write(fd, pid, (size_t)n);
			close(fd);
			return 1;
		}
		if (errno == EACCES || errno == EROFS)
			return 0;
		if (errno != EEXIST) {
			buf_printf(err, "cannot create %s: %s", lock, strerror(errno));
			return -1;
		}
		break_stale(lock);
		nap();
	}
	buf_printf(err, "mailbox is locked (%s)", lock);
	return -1;
}

static bool fcntl_lock(int fd, const char *path, struct buf *err)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
	for (int i = 0; i < LOCK_TRIES; i++) {
		if (fcntl(fd, F_SETLK, &fl) == 0)
			return true;
		if (errno != EAGAIN && errno != EACCES) {
			buf_printf(err, "cannot lock %s: %s", path, strerror(errno));
			return false;
		}
		nap();
	}
	buf_printf(err, "mailbox %s is locked by another process", path);
	return false;
}

/* Opens the mailbox for appending, creating it (0600) when missing, and
 * checks what was opened. */
static int open_mailbox(const char *path, const struct local_ident *id, struct buf *err)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
	if (fd < 0) {
		buf_printf(err, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	const char *bad = NULL;
	if (fstat(fd, &st) < 0)
		bad = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		bad = "not a regular file";
	else if (st.st_nlink != 1)
		bad = "it has more than one link";
	else if (id->check_owner && st.st_uid != id->uid)
		bad = "it does not belong to the recipient";
	if (bad) {
		buf_printf(err, "refusing to write %s: %s", path, bad);
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}

/* Appends entry; false (file cut back to its old size) on any error. */
static bool append_entry(int fd, const char *path, const struct buf *entry, struct buf *err, int *error)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*error = errno;
		buf_printf(err, "cannot stat %s: %s", path, strerror(errno));
		return false;
	}
	if (fileio_write_all(fd, entry->data, entry->len) && fsync(fd) == 0)
		return true;
	*error = errno;
	buf_printf(err, "cannot write %s: %s", path, strerror(errno));
	if (ftruncate(fd, st.st_size) < 0 || fsync(fd) < 0)
		log_error("cannot cut %s back to %lld bytes: %s", path, (long long)st.st_size, strerror(errno));
	return false;
}

static void build_entry(struct buf *entry, const struct local_msg *msg, const char *delivered_to)
{
	local_format_from_line(entry, msg->sender, time(NULL));
	local_format_mbox_body(entry, msg->sender, delivered_to, msg->body.data ? msg->body.data : "", msg->body.len);
}

/* The work, once the identity is taken. */
static bool deliver_as(const char *path, const struct local_ident *id, const struct buf *entry, struct buf *err,
                       int *error)
{
	char *lock = mem_asprintf("%s.lock", path);
	int locked = dotlock(lock, err);
	bool ok = false;
	if (locked >= 0) {
		int fd = open_mailbox(path, id, err);
		if (fd >= 0) {
			ok = fcntl_lock(fd, path, err) && append_entry(fd, path, entry, err, error);
			close(fd); /* releases the fcntl lock */
		}
		if (locked == 1)
			unlink(lock);
	}
	free(lock);
	return ok;
}

void local_mbox_deliver(const char *path, const struct local_ident *id, const struct local_msg *msg,
                        const char *delivered_to, struct local_result *r)
{
	struct buf entry = BUF_INIT, err = BUF_INIT;
	int error = 0;
	build_entry(&entry, msg, delivered_to);
	if (!local_priv_become(id, &err)) {
		local_result_set(r, LOCAL_DEFERRED, "4.3.0", "%s", buf_cstr(&err));
	} else {
		bool ok = deliver_as(path, id, &entry, &err, &error);
		local_priv_restore();
		if (ok)
			local_result_set(r, LOCAL_DELIVERED, "2.0.0", "delivered to mailbox %s", path);
		else if (error == ENOSPC || error == EDQUOT)
			local_result_set(r, LOCAL_DEFERRED, "4.2.2", "mailbox full: %s", buf_cstr(&err));
		else
			local_result_set(r, LOCAL_DEFERRED, "4.2.0", "%s", buf_cstr(&err));
	}
	buf_free(&entry);
	buf_free(&err);
}
