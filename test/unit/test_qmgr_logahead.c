/* test_qmgr_logahead.c: the queue log's next file made ahead: made as
 * zeros of the asked size under the next number once the current one is
 * a quarter written, never in place of a file that is there already, and
 * followed as the current number moves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

#define FILE_BYTES (256u * 1024)

struct current {
	uint32_t number;
	uint64_t offset;
	bool known;
};

/* Read by the thread; the test changes it only while it waits. */
static volatile struct current cur;

static bool current_file(void *ctx, uint32_t *number, uint64_t *offset)
{
	(void)ctx;
	*number = cur.number;
	*offset = cur.offset;
	return cur.known;
}

static char *log_path(const char *dir, unsigned number)
{
	char name[32];
	snprintf(name, sizeof(name), "log.%010u", number);
	return testutil_path(dir, name);
}

/* Waits up to 5 s for path to be a file of size bytes. */
static bool appears(const char *path, off_t size)
{
	for (int i = 0; i < 500; i++) {
		struct stat sb;
		if (stat(path, &sb) == 0 && sb.st_size == size)
			return true;
		nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
	}
	return false;
}

static bool all_zeros(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return false;
	int c;
	bool zeros = true;
	while (zeros && (c = fgetc(f)) != EOF)
		zeros = c == 0;
	fclose(f);
	return zeros;
}

static void test_next_file_made_and_followed(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	/* a file less than a quarter written: nothing yet */
	cur = (struct current){.number = 3, .offset = FILE_BYTES / 4 - 1, .known = true};
	struct buf err = BUF_INIT;
	struct qmgr_logahead *la = qmgr_logahead_start(dir, FILE_BYTES, current_file, NULL, &err);
	assert_non_null(la);
	char *four = log_path(dir, 4), *five = log_path(dir, 5);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	assert_int_not_equal(access(four, F_OK), 0);
	cur.offset = FILE_BYTES / 4;
	assert_true(appears(four, FILE_BYTES));
	assert_true(all_zeros(four));
	/* the writer moved on: the one after it follows */
	cur.offset = FILE_BYTES / 2;
	cur.number = 4;
	assert_true(appears(five, FILE_BYTES));
	qmgr_logahead_stop(la);
	/* no temporary file is left */
	char *temp = testutil_path(dir, "next-log.tmp");
	assert_int_not_equal(access(temp, F_OK), 0);
	free(four);
	free(five);
	free(temp);
	buf_free(&err);
	testutil_rmtree(dir);
	free(dir);
}

static void test_existing_file_is_kept(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *next = log_path(dir, 8);
	FILE *f = fopen(next, "w");
	assert_non_null(f);
	fputs("written by the database", f);
	fclose(f);
	cur = (struct current){.number = 7, .offset = FILE_BYTES, .known = true};
	struct buf err = BUF_INIT;
	struct qmgr_logahead *la = qmgr_logahead_start(dir, FILE_BYTES, current_file, NULL, &err);
	assert_non_null(la);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	qmgr_logahead_stop(la);
	struct stat sb;
	assert_int_equal(stat(next, &sb), 0);
	assert_int_equal(sb.st_size, strlen("written by the database"));
	free(next);
	buf_free(&err);
	testutil_rmtree(dir);
	free(dir);
}

static void test_unknown_current_file_makes_nothing(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	cur = (struct current){.number = 1, .offset = FILE_BYTES, .known = false};
	struct buf err = BUF_INIT;
	struct qmgr_logahead *la = qmgr_logahead_start(dir, FILE_BYTES, current_file, NULL, &err);
	assert_non_null(la);
	nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
	qmgr_logahead_stop(la);
	char *two = log_path(dir, 2);
	assert_int_not_equal(access(two, F_OK), 0);
	free(two);
	buf_free(&err);
	testutil_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_next_file_made_and_followed),
	    cmocka_unit_test(test_existing_file_is_kept),
	    cmocka_unit_test(test_unknown_current_file_makes_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
