/* testutil.c: helpers shared by the unit tests (see testutil.h). */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

char *testutil_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *path = mem_asprintf("%s/tern-test.XXXXXX", base && *base ? base : "/tmp");
	if (mkdtemp(path) == NULL)
		log_fatal("mkdtemp %s failed", path);
	return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void testutil_rmtree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *testutil_path(const char *dir, const char *name)
{
	return mem_asprintf("%s/%s", dir, name);
}

bool testutil_contains(const char *haystack, const char *needle)
{
	if (haystack && strstr(haystack, needle))
		return true;
	fprintf(stderr, "expected \"%s\" in \"%s\"\n", needle, haystack ? haystack : "(null)");
	return false;
}
