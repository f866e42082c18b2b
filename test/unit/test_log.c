/* test_log.c: unit tests of log batching: kept lines wait for
 * log_flush() and go out whole and in order, the loop is woken once per
 * batch, and errors, a full batch, a line of another thread and
 * log_batch_stop() write what waits at once; each line starts with the
 * time, the identity and the process ID of the moment it was logged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "testutil.h"

struct fixture {
	char *dir;
	char *path;
	int wakes;
};

static void on_wake(void *ctx)
{
	struct fixture *f = ctx;
	f->wakes++;
}

static int setup(void **state)
{
	struct fixture *f = mem_zalloc(sizeof(*f));
	f->dir = testutil_tmpdir();
	f->path = testutil_path(f->dir, "log");
	assert_int_equal(log_open("tern/test", LOG_TO_FILE, f->path), 0);
	log_batch_start(on_wake, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	log_batch_stop();
	log_open("tern/test", LOG_TO_STDERR, NULL);
	testutil_rmtree(f->dir);
	free(f->path);
	free(f->dir);
	free(f);
	return 0;
}

/* The log file's content (the caller frees it). */
static char *contents(const struct fixture *f)
{
	FILE *fp = fopen(f->path, "r");
	assert_non_null(fp);
	char *text = mem_zalloc(64 * 1024);
	size_t n = fread(text, 1, 64 * 1024 - 1, fp);
	text[n] = '\0';
	fclose(fp);
	return text;
}

static size_t count_lines(const char *text)
{
	size_t n = 0;
	for (const char *p = text; (p = strchr(p, '\n')) != NULL; p++)
		n++;
	return n;
}

static void test_lines_wait_for_the_flush(void **state)
{
	struct fixture *f = *state;
	log_info("first %d", 1);
	log_warning("second");
	char *text = contents(f);
	assert_string_equal(text, "");
	free(text);
	assert_int_equal(f->wakes, 1);
	log_flush();
	text = contents(f);
	char *first = strstr(text, "tern/test[");
	assert_non_null(first);
	assert_true(testutil_contains(first, ": info: first 1\n"));
	assert_true(strstr(text, "first 1") < strstr(text, "warning: second\n"));
	assert_int_equal(count_lines(text), 2);
	free(text);
	/* the next batch wakes the loop again */
	log_info("third");
	assert_int_equal(f->wakes, 2);
}

static void test_error_writes_what_waits_first(void **state)
{
	struct fixture *f = *state;
	log_info("kept");
	log_error("broken");
	char *text = contents(f);
	assert_true(testutil_contains(text, "info: kept\n"));
	assert_true(strstr(text, "kept") < strstr(text, "error: broken\n"));
	free(text);
}

static void test_full_batch_goes_out_whole(void **state)
{
	struct fixture *f = *state;
	char chunk[200];
	memset(chunk, 'x', sizeof(chunk) - 1);
	chunk[sizeof(chunk) - 1] = '\0';
	size_t lines = 3 * LOG_BATCH_BYTES / sizeof(chunk);
	for (size_t i = 0; i < lines; i++)
		log_info("%zu %s", i, chunk);
	char *text = contents(f);
	size_t written = count_lines(text);
	assert_true(written > 0 && written < lines);
	assert_true(strlen(text) <= (size_t)(3 * LOG_BATCH_BYTES));
	assert_int_equal(text[strlen(text) - 1], '\n'); /* no line cut */
	free(text);
	log_batch_stop();
	text = contents(f);
	assert_int_equal(count_lines(text), lines);
	free(text);
}

static void *log_from_thread(void *arg)
{
	log_info("from another thread");
	return NULL;
}

static void test_other_threads_write_at_once(void **state)
{
	struct fixture *f = *state;
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, log_from_thread, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	char *text = contents(f);
	assert_true(testutil_contains(text, "info: from another thread\n"));
	free(text);
	assert_int_equal(f->wakes, 0);
}

/* Line n (from 0) of text checked for "YYYY-MM-DD HH:MM:SS IDENT[PID]: REST". */
static void assert_line(const char *text, int n, const char *ident, long pid, const char *rest)
{
	for (int i = 0; i < n; i++)
		text = strchr(text, '\n') + 1;
	int year, month, day, hour, minute, second, used = 0;
	assert_int_equal(sscanf(text, "%4d-%2d-%2d %2d:%2d:%2d %n", &year, &month, &day, &hour, &minute, &second, &used),
	                 6);
	assert_int_equal(used, 20);
	char *want = NULL;
	assert_true(asprintf(&want, "%s[%ld]: %s\n", ident, pid, rest) > 0);
	assert_memory_equal(text + used, want, strlen(want));
	free(want);
}

static void test_line_prefix_follows_identity_and_process(void **state)
{
	struct fixture *f = *state;
	log_info("one");
	log_info("two");
	log_flush();
	assert_int_equal(log_open("tern/other", LOG_TO_FILE, f->path), 0);
	log_warning("three");
	log_flush();
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		log_info("four");
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	char *text = contents(f);
	assert_int_equal(count_lines(text), 4);
	assert_line(text, 0, "tern/test", (long)getpid(), "info: one");
	assert_line(text, 1, "tern/test", (long)getpid(), "info: two");
	assert_line(text, 2, "tern/other", (long)getpid(), "warning: three");
	assert_line(text, 3, "tern/other", (long)child, "info: four");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lines_wait_for_the_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_error_writes_what_waits_first, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_batch_goes_out_whole, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_threads_write_at_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_line_prefix_follows_identity_and_process, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
