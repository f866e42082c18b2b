/* test_acctd_state.c: unit tests of acctd's state file: a missing file is
 * a fresh start, a save survives a load unchanged (paths with blanks
 * included), the old file is replaced whole, and a damaged file is an
 * error that names the line instead of a guess. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acctd/acctd.h"
#include "testutil.h"

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_missing_is_fresh(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "state");
	struct acctd_state st;
	struct buf err = BUF_INIT;
	assert_true(acctd_state_load(path, &st, &err));
	assert_int_equal(st.seq, 0);
	assert_int_equal(st.count, 0);
	acctd_state_free(&st);
	buf_free(&err);
	testutil_rmtree(dir);
	free(path);
	free(dir);
}

static void test_round_trip(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "state");
	struct acctd_file_mark marks[] = {
	    {"/var/log/tern/acct.csv", 2049, 131, 4096, 1795880000},
	    {"/var/log/tern/with blanks.csv", 2049, 7, 0, 1},
	};
	struct acctd_state st = {99, marks, 2}, back;
	struct buf err = BUF_INIT;
	assert_true(acctd_state_save(path, &st, true, &err));
	st.seq = 100;
	assert_true(acctd_state_save(path, &st, false, &err));
	assert_true(acctd_state_load(path, &back, &err));
	assert_int_equal(back.seq, 100);
	assert_int_equal(back.count, 2);
	const struct acctd_file_mark *m = acctd_state_find(&back, "/var/log/tern/with blanks.csv");
	assert_non_null(m);
	assert_int_equal(m->ino, 7);
	m = acctd_state_find(&back, "/var/log/tern/acct.csv");
	assert_non_null(m);
	assert_int_equal(m->dev, 2049);
	assert_int_equal(m->size, 4096);
	assert_int_equal(m->started, 1795880000);
	assert_null(acctd_state_find(&back, "/elsewhere.csv"));
	/* No temporary file stays behind. */
	char *tmp = testutil_path(dir, "state.new");
	assert_int_equal(access(tmp, F_OK), -1);
	free(tmp);
	acctd_state_free(&back);
	buf_free(&err);
	testutil_rmtree(dir);
	free(path);
	free(dir);
}

static void test_damaged(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "state");
	struct acctd_state st;
	struct buf err = BUF_INIT;
	write_text(path, "tern-acctd-state 1\nseq 5\nfile 1 2 3 /no-size\n");
	assert_false(acctd_state_load(path, &st, &err));
	assert_true(testutil_contains(buf_cstr(&err), "state:3: damaged state file"));
	buf_reset(&err);
	write_text(path, "something else\n");
	assert_false(acctd_state_load(path, &st, &err));
	assert_true(testutil_contains(buf_cstr(&err), "state:1: damaged"));
	buf_free(&err);
	testutil_rmtree(dir);
	free(path);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_missing_is_fresh),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_damaged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
