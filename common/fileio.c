/* fileio.c: durable writes and the machine's name (see fileio.h). */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
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
