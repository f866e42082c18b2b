/* fileio.c: durable writes, whole-file reads, a daemon's directories and
 * the machine's name (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"

bool fileio_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		if (n == 0) {
			errno = ENOSPC;
			return false;
		}
		p += n;
		len -= (size_t)n;
	}
	return true;
}

bool fileio_pwrite_all(int fd, const void *data, size_t len, uint64_t offset)
{
	const char *p = data;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)offset);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ENOSPC;
			return false;
		}
		p += n;
		len -= (size_t)n;
		offset += (uint64_t)n;
	}
	return true;
}

/* The zeros go to disk a piece at a time, each piece written back
 * before the next is written: a writer that fdatasyncs another file
 * meanwhile (the queue's log, at every group commit) waits behind one
 * piece at most, not behind the whole file.  A virtual disk's cache
 * flush grows with what was written since the last one (0.26 ms after
 * 64 KB, 1.16 ms after 1 MB), so the pieces are small. */
#define ZERO_PIECE_BYTES (128u * 1024)

bool fileio_write_zeros(int fd, uint64_t size)
{
	static const char zeros[64 * 1024];
	for (uint64_t piece = 0; piece < size; piece += ZERO_PIECE_BYTES) {
		uint64_t end = size - piece < ZERO_PIECE_BYTES ? size : piece + ZERO_PIECE_BYTES;
		for (uint64_t off = piece; off < end; off += sizeof(zeros)) {
			size_t n = end - off < sizeof(zeros) ? (size_t)(end - off) : sizeof(zeros);
			if (!fileio_pwrite_all(fd, zeros, n, off))
				return false;
		}
		/* Only pacing: a file system that cannot (or an I/O error) is
		 * answered by the fdatasync below. */
		(void)sync_file_range(fd, (off_t)piece, (off_t)(end - piece),
		                      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
	}
	return fdatasync(fd) == 0;
}

bool fileio_sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return false;
	bool ok = fsync(fd) == 0;
	int saved = errno;
	close(fd);
	errno = saved;
	return ok;
}

bool fileio_sync_parent(const char *path)
{
	char *dir = mem_strdup(path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	bool ok = fileio_sync_dir(slash ? dir : ".");
	free(dir);
	return ok;
}

char *fileio_system_host_name(void)
{
	char name[256];
	if (gethostname(name, sizeof(name)) < 0 || name[0] == '\0')
		return mem_strdup("localhost");
	name[sizeof(name) - 1] = '\0';
	return mem_strdup(name);
}

bool fileio_read_all(const char *path, struct buf *out, struct buf *err)
{
	FILE *f = fopen(path, "re");
	if (f == NULL) {
		buf_printf(err, "%s: %s", path, strerror(errno));
		return false;
	}
	char chunk[8192];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(out, chunk, n);
	bool ok = !ferror(f);
	if (!ok)
		buf_printf(err, "%s: %s", path, strerror(errno));
	fclose(f);
	return ok;
}

bool fileio_make_dirs(const char *path, mode_t mode, uid_t uid, gid_t gid, struct buf *err)
{
	struct stat st;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode))
			return true;
		buf_printf(err, "%s is not a directory", path);
		return false;
	}
	char *parent = mem_strdup(path);
	char *slash = strrchr(parent, '/');
	bool ok = true;
	if (slash && slash != parent) {
		*slash = '\0';
		ok = fileio_make_dirs(parent, 0755, uid, gid, err);
	}
	free(parent);
	if (!ok)
		return false;
	/* chmod: mkdir's mode passes through the umask and drops the
	 * sticky and set-group-ID bits */
	if ((mkdir(path, mode) < 0 && errno != EEXIST) || chmod(path, mode) < 0 ||
	    (geteuid() == 0 && chown(path, uid, gid) < 0)) {
		buf_printf(err, "cannot create %s: %s", path, strerror(errno));
		return false;
	}
	return true;
}
