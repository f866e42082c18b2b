/* acctd_file.c: one accounting file on disk: opening it with its header
 * line, appending a batch (or cutting it back when that fails), following
 * it when logrotate renames it, rotating it to its dated name and removing
 * old rotated files.  The live file always keeps its configured name, so
 * that `tail -F`, logrotate and the state file can find it; rotated files
 * are STEM-YYYY-MM-DD-NNNN.csv, dated by the day the file was begun. */
#include "acctd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"

static mode_t file_mode(const struct acctd_file *f)
{
	return f->world_readable ? 0644 : 0640;
}

/* ---- finding a file by its inode ---------------------------------------------- */

static bool same_file(const struct stat *st, dev_t dev, ino_t ino)
{
	return st->st_dev == dev && st->st_ino == ino;
}

/* The path of the file with that inode in dir, or NULL.  Only names that
 * begin like ours (acct.csv.1 from logrotate, acct-2026-...csv from a
 * rotation) are candidates, so a reused inode number can never make us
 * cut someone else's file. */
static char *find_in_dir(const char *dir, const char *stem, dev_t dev, ino_t ino)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return NULL;
	char *found = NULL;
	struct dirent *e;
	while (found == NULL && (e = readdir(d)) != NULL) {
		if (e->d_ino != ino || strncmp(e->d_name, stem, strlen(stem)) != 0)
			continue;
		char *path = mem_asprintf("%s/%s", dir, e->d_name);
		struct stat st;
		if (lstat(path, &st) == 0 && S_ISREG(st.st_mode) && same_file(&st, dev, ino))
			found = path;
		else
			free(path);
	}
	closedir(d);
	return found;
}

/* Where the file the state knows is now: its live name, or wherever
 * logrotate or a rotation moved it (the live directory or move-to). */
static char *find_marked(const struct acctd_file *f, const struct acctd_file_mark *mark)
{
	struct stat st;
	if (stat(f->path, &st) == 0 && same_file(&st, mark->dev, mark->ino))
		return mem_strdup(f->path);
	char *found = find_in_dir(f->dir, f->stem, mark->dev, mark->ino);
	if (found == NULL && f->move_to)
		found = find_in_dir(f->move_to, f->stem, mark->dev, mark->ino);
	return found;
}

/* ---- recovery --------------------------------------------------------------------- */

/* Removes what was appended after the last saved state: rows of a batch
 * that was never confirmed, which the client will send again. */
static void cut_back_marked(const struct acctd_file *f, const struct acctd_file_mark *mark)
{
	char *where = find_marked(f, mark);
	struct stat st;
	if (where == NULL || stat(where, &st) < 0) {
		free(where);
		return;
	}
	if (st.st_size > mark->size) {
		log_warning("%s: removing %lld bytes of records that were never confirmed", where,
		            (long long)(st.st_size - mark->size));
		if (truncate(where, mark->size) < 0)
			log_error("%s: cannot cut back to %lld bytes: %s", where, (long long)mark->size,
			          strerror(errno));
	} else if (st.st_size < mark->size) {
		log_error("%s: %lld bytes of confirmed records are missing (a machine crash without \"sync yes\"?)",
		          where, (long long)(mark->size - st.st_size));
	}
	free(where);
}

/* True when the file at path begins with our header line (or with a
 * part of it: a header cut short by the crash). */
static bool begins_with_header(const struct acctd_file *f, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	char *head = mem_alloc(f->header.len);
	ssize_t n = read(fd, head, f->header.len);
	bool ours = n > 0 && memcmp(head, f->header.data, (size_t)n) == 0;
	free(head);
	close(fd);
	return ours;
}

/* A live file the state does not know, which begins with our header, was
 * begun after the last save (a rotation or reopen that a crash cut short,
 * or logrotate's create): nothing in it was confirmed.  Anything else is
 * left alone; acctd_file_open moves it aside if its header is not ours. */
static void empty_unknown_live_file(const struct acctd_file *f, const struct acctd_file_mark *mark)
{
	struct stat st;
	if (stat(f->path, &st) < 0 || same_file(&st, mark->dev, mark->ino) || st.st_size == 0 ||
	    !begins_with_header(f, f->path))
		return;
	log_warning("%s: removing %lld bytes of records that were never confirmed", f->path, (long long)st.st_size);
	if (truncate(f->path, 0) < 0)
		log_error("%s: cannot empty: %s", f->path, strerror(errno));
}

bool acctd_file_recover(struct acctd_file *f, const struct acctd_file_mark *mark, struct buf *err)
{
	if (mark) {
		cut_back_marked(f, mark);
		empty_unknown_live_file(f, mark);
		struct stat st;
		if (stat(f->path, &st) == 0 && same_file(&st, mark->dev, mark->ino)) {
			f->dev = mark->dev;
			f->ino = mark->ino;
			f->started = mark->started;
		}
	}
	return acctd_file_open(f, err);
}

static bool move_live_file(const struct acctd_file *f, struct buf *err);

/* ---- opening ------------------------------------------------------------------------ */

static int64_t local_midnight(int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	localtime_r(&tt, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	return (int64_t)mktime(&tm);
}

/* Time-based rotation needs move-to (as in PowerMTA); its boundaries are
 * multiples of move-interval from local midnight, so 1d means midnight. */
static int64_t next_move_time(const struct acctd_file *f)
{
	if (f->move_to == NULL || f->move_interval <= 0)
		return 0;
	int64_t base = local_midnight(f->started);
	int64_t steps = (f->started - base) / f->move_interval + 1;
	return base + steps * f->move_interval;
}

static bool header_matches(const struct acctd_file *f)
{
	char *head = mem_alloc(f->header.len);
	ssize_t n = pread(f->fd, head, f->header.len, 0);
	bool same = n == (ssize_t)f->header.len && memcmp(head, f->header.data, f->header.len) == 0;
	free(head);
	return same;
}

static bool open_live(struct acctd_file *f, struct stat *st, struct buf *err)
{
	f->fd = open(f->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, file_mode(f));
	if (f->fd < 0 || fstat(f->fd, st) < 0) {
		buf_printf(err, "cannot open %s: %s", f->path, strerror(errno));
		acctd_file_close(f);
		return false;
	}
	/* world-readable may have changed since the file was made. */
	if (fchmod(f->fd, file_mode(f)) < 0)
		log_warning("%s: cannot set the mode: %s", f->path, strerror(errno));
	/* Another file than before: its start is not ours to keep. */
	if (st->st_dev != f->dev || st->st_ino != f->ino)
		f->started = 0;
	f->dev = st->st_dev;
	f->ino = st->st_ino;
	f->size = st->st_size;
	return true;
}

static bool start_new_file(struct acctd_file *f, struct buf *err)
{
	if (!fileio_write_all(f->fd, f->header.data, f->header.len)) {
		buf_printf(err, "cannot write the header line of %s: %s", f->path, strerror(errno));
		if (ftruncate(f->fd, 0) < 0)
			log_error("%s: cannot empty: %s", f->path, strerror(errno));
		return false;
	}
	f->size = (off_t)f->header.len;
	f->started = time(NULL);
	return true;
}

bool acctd_file_open(struct acctd_file *f, struct buf *err)
{
	struct stat st;
	if (!open_live(f, &st, err))
		return false;
	if (f->size > 0 && !header_matches(f)) {
		/* Other columns (the configuration changed): rows must match the
		 * header above them, so the old file is finished. */
		log_info("%s: the columns changed; starting a new file", f->path);
		if (f->started == 0)
			f->started = (int64_t)st.st_mtime;
		bool moved = move_live_file(f, err);
		acctd_file_close(f);
		return moved && acctd_file_open(f, err);
	}
	if (f->size == 0 && !start_new_file(f, err)) {
		acctd_file_close(f);
		return false;
	}
	if (f->started == 0)
		f->started = time(NULL);
	f->next_move = next_move_time(f);
	return true;
}

void acctd_file_close(struct acctd_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

/* Someone cut the file under us (logrotate's copytruncate): what it held
 * is gone, and the rows to come need a header above them. */
static bool start_over_if_truncated(struct acctd_file *f, const struct stat *st, struct buf *err)
{
	if (st->st_size >= f->size)
		return true;
	log_warning("%s: the file was cut to %lld bytes by another program (copytruncate?); starting it over", f->path,
	            (long long)st->st_size);
	if (ftruncate(f->fd, 0) < 0) {
		buf_printf(err, "cannot empty %s: %s", f->path, strerror(errno));
		return false;
	}
	f->size = 0;
	return start_new_file(f, err);
}

bool acctd_file_follow(struct acctd_file *f, struct buf *err)
{
	struct stat st;
	if (f->fd >= 0 && stat(f->path, &st) == 0 && same_file(&st, f->dev, f->ino))
		return start_over_if_truncated(f, &st, err);
	if (f->fd >= 0)
		log_info("%s: the file was moved away; opening a new one", f->path);
	acctd_file_close(f);
	return acctd_file_open(f, err);
}

/* ---- writing ------------------------------------------------------------------------------ */

bool acctd_file_write_pending(struct acctd_file *f, struct buf *err)
{
	if (f->pending.len == 0)
		return true;
	if (fileio_write_all(f->fd, f->pending.data, f->pending.len) && (!f->sync || fdatasync(f->fd) == 0))
		return true;
	buf_printf(err, "cannot write to %s: %s", f->path, strerror(errno));
	acctd_file_rollback(f);
	return false;
}

void acctd_file_rollback(struct acctd_file *f)
{
	if (f->fd >= 0 && ftruncate(f->fd, f->size) < 0)
		log_error("%s: cannot cut back to %lld bytes: %s", f->path, (long long)f->size, strerror(errno));
}

/* ---- rotation ------------------------------------------------------------------------------ */

static char *rotated_name(const struct acctd_file *f, unsigned number)
{
	time_t t = (time_t)f->started;
	struct tm tm;
	localtime_r(&t, &tm);
	return mem_asprintf("%s/%s-%04d-%02d-%02d-%04u.csv", f->move_to ? f->move_to : f->dir, f->stem,
	                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, number);
}

/* rename(2) that never replaces an existing file. */
static int rename_new(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* A file system without RENAME_NOREPLACE: we own the directory. */
	if (access(to, F_OK) == 0) {
		errno = EEXIST;
		return -1;
	}
	return rename(from, to);
}

static bool move_live_file(const struct acctd_file *f, struct buf *err)
{
	for (unsigned number = 0; number <= 9999; number++) {
		char *target = rotated_name(f, number);
		int rc = rename_new(f->path, target);
		int saved = errno;
		if (rc == 0)
			log_info("%s: moved to %s", f->path, target);
		free(target);
		if (rc == 0)
			return true;
		if (saved != EEXIST) {
			buf_printf(err, "cannot move %s: %s", f->path, strerror(saved));
			return false;
		}
	}
	buf_printf(err, "cannot move %s: 10000 rotated files of that day already exist", f->path);
	return false;
}

static bool has_rows(const struct acctd_file *f)
{
	return f->size > (off_t)f->header.len;
}

bool acctd_file_rotate(struct acctd_file *f, struct buf *err)
{
	if (!has_rows(f)) {
		/* Nothing to move: the file simply begins the new period. */
		f->started = time(NULL);
		f->next_move = next_move_time(f);
		return true;
	}
	if (!move_live_file(f, err))
		return false;
	acctd_file_close(f);
	return acctd_file_open(f, err);
}

bool acctd_file_rotation_due(const struct acctd_file *f, int64_t now)
{
	if (f->fd < 0 || now < f->retry_rotation_at)
		return false;
	if (has_rows(f) && f->max_size != 0 && f->max_size != VALUE_UNLIMITED && (uint64_t)f->size >= f->max_size)
		return true;
	return f->next_move != 0 && now >= f->next_move;
}

/* STEM-YYYY-MM-DD-NNNN.csv */
static bool is_rotated_name(const struct acctd_file *f, const char *name)
{
	size_t stem = strlen(f->stem);
	if (strncmp(name, f->stem, stem) != 0)
		return false;
	const char *rest = name + stem;
	static const char shape[] = "-dddd-dd-dd-dddd.csv";
	if (strlen(rest) != sizeof(shape) - 1)
		return false;
	for (size_t i = 0; shape[i]; i++) {
		bool ok = shape[i] == 'd' ? rest[i] >= '0' && rest[i] <= '9' : rest[i] == shape[i];
		if (!ok)
			return false;
	}
	return true;
}

void acctd_file_expire(const struct acctd_file *f, int64_t now)
{
	if (f->move_to || f->delete_after == VALUE_NEVER || f->delete_after <= 0)
		return;
	DIR *d = opendir(f->dir);
	if (d == NULL)
		return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!is_rotated_name(f, e->d_name))
			continue;
		char *path = mem_asprintf("%s/%s", f->dir, e->d_name);
		struct stat st;
		if (stat(path, &st) == 0 && (int64_t)st.st_mtime < now - f->delete_after) {
			if (unlink(path) == 0)
				log_info("%s: deleted (older than delete-after)", path);
			else
				log_warning("cannot delete %s: %s", path, strerror(errno));
		}
		free(path);
	}
	closedir(d);
}

void acctd_file_free(struct acctd_file *f)
{
	acctd_file_close(f);
	free(f->path);
	free(f->dir);
	free(f->stem);
	free(f->move_to);
	free(f->user_string);
	acct_layout_free(&f->layout);
	buf_free(&f->header);
	buf_free(&f->pending);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}
