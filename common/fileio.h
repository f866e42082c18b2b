/* fileio.h: the small file-system steps every daemon needs: writes that
 * go on until everything is out, a file of zeros written ahead, the
 * fsync of a directory after a rename or a new file in it, reading a
 * whole file, and making the directories a daemon works in. */
#ifndef TERN_FILEIO_H
#define TERN_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

/* Writes all of data, retrying after EINTR and short writes; false with
 * errno set (ENOSPC when the file system stopped taking bytes). */
bool fileio_write_all(int fd, const void *data, size_t len);
/* fileio_write_all at a position (pwrite): the file offset stays. */
bool fileio_pwrite_all(int fd, const void *data, size_t len, uint64_t offset);
/* Writes size bytes of zeros at the start of fd and fdatasyncs them: a
 * file whose blocks are all on disk, so that writes inside it later cost
 * their fdatasync only the data.  false with errno set. */
bool fileio_write_zeros(int fd, uint64_t size);
/* fsyncs the directory dir, so that an entry made or renamed in it is on
 * disk; false with errno set. */
bool fileio_sync_dir(const char *dir);
/* fileio_sync_dir of the directory that holds path. */
bool fileio_sync_parent(const char *path);
/* Appends the whole file at path to out; false with "PATH: reason" in
 * err (the caller says what the file was for). */
bool fileio_read_all(const char *path, struct buf *out, struct buf *err);
/* Makes directory path (mode, owned by uid:gid when we run as root) and
 * its missing parents (0755, the same owner), so that the daemon can make
 * and move files there.  An existing directory is left as it is; false
 * with the reason in err. */
bool fileio_make_dirs(const char *path, mode_t mode, uid_t uid, gid_t gid, struct buf *err);
/* The machine's own name (gethostname), "localhost" when it has none;
 * the caller frees it. */
char *fileio_system_host_name(void);

#endif
