/* testutil.h: small helpers shared by the unit tests (temporary
 * directories, checking error messages). */
#ifndef TERN_TESTUTIL_H
#define TERN_TESTUTIL_H

#include <stdbool.h>

/* Creates a fresh directory under $TMPDIR (or /tmp); returns its path,
 * which the caller frees after testutil_rmtree(). */
char *testutil_tmpdir(void);
/* Removes a directory tree made by a test. */
void testutil_rmtree(const char *path);
/* path inside dir, allocated. */
char *testutil_path(const char *dir, const char *name);
/* true when haystack contains needle; prints both when it does not, so a
 * failing assertion shows the actual message. */
bool testutil_contains(const char *haystack, const char *needle);

/* The configuration of DESIGN.md, verbatim. */
extern const char design_conf[];

#endif
