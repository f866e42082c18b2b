/* fileio.h: the small file-system steps that make writes durable: a
 * write that goes on until everything is out, and the fsync of a
 * directory after a rename or a new file in it. */
#ifndef TERN_FILEIO_H
#define TERN_FILEIO_H

#include <stdbool.h>
#include <stddef.h>

/* Writes all of data, retrying after EINTR and short writes; false with
 * errno set (ENOSPC when the file system stopped taking bytes). */
bool fileio_write_all(int fd, const void *data, size_t len);
/* fsyncs the directory dir, so that an entry made or renamed in it is on
 * disk; false with errno set. */
bool fileio_sync_dir(const char *dir);
/* fileio_sync_dir of the directory that holds path. */
bool fileio_sync_parent(const char *path);
/* The machine's own name (gethostname), "localhost" when it has none;
 * the caller frees it. */
char *fileio_system_host_name(void);

#endif
