/* test_buf.c: unit tests of the growable buffer, memory helpers and the
 * log file target (including reopen after an external rotation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mem.h"

static void test_append_and_grow(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	assert_string_equal(buf_cstr(&b), "");
	for (int i = 0; i < 1000; i++)
		buf_printf(&b, "%d,", i);
	assert_true(b.len == strlen(b.data));
	assert_memory_equal(b.data, "0,1,2,", 6);
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(buf_cstr(&b), "");
	buf_append(&b, "a\0b", 3);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "a\0b", 3);
	buf_free(&b);
}

/* Texts shorter and longer than buf_vprintf's stack buffer, appended to
 * what the buffer holds, come out whole. */
static void test_printf_short_and_long(void **state)
{
	(void)state;
	char *long_text = mem_alloc(3001);
	for (int i = 0; i < 3000; i++)
		long_text[i] = (char)('a' + i % 26);
	long_text[3000] = '\0';
	struct buf b = BUF_INIT;
	buf_puts(&b, "head:");
	buf_printf(&b, "%s|%d", "short", 42);
	assert_string_equal(buf_cstr(&b), "head:short|42");
	for (size_t len = 500; len <= 520; len++) {
		buf_reset(&b);
		buf_puts(&b, "x");
		buf_printf(&b, "%.*s", (int)len, long_text);
		assert_int_equal(b.len, len + 1);
		assert_memory_equal(b.data + 1, long_text, len);
		assert_int_equal(b.data[b.len], '\0');
	}
	buf_reset(&b);
	buf_printf(&b, "[%s]", long_text);
	assert_int_equal(b.len, 3002);
	assert_int_equal(b.data[0], '[');
	assert_memory_equal(b.data + 1, long_text, 3000);
	assert_string_equal(b.data + 3001, "]");
	buf_free(&b);
	free(long_text);
}

static void test_concat(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	buf_concat(&b, "", NULL);
	assert_string_equal(buf_cstr(&b), "");
	buf_concat(&b, "from ", "mx.example", " (", "192.0.2.1", ")", NULL);
	buf_concat(&b, "", ";", NULL);
	assert_string_equal(buf_cstr(&b), "from mx.example (192.0.2.1);");
	assert_int_equal(b.len, strlen("from mx.example (192.0.2.1);"));
	buf_free(&b);
}

static void test_put_decimal(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	buf_put_decimal(&b, 0);
	buf_putc(&b, ' ');
	buf_put_decimal(&b, 2048);
	buf_putc(&b, ' ');
	buf_put_decimal(&b, UINT64_MAX);
	assert_string_equal(buf_cstr(&b), "0 2048 18446744073709551615");
	assert_int_equal(b.len, strlen("0 2048 18446744073709551615"));
	buf_free(&b);
}

static void test_consume_truncate_detach(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	buf_puts(&b, "EHLO x\r\nMAIL");
	buf_consume(&b, 8);
	assert_string_equal(b.data, "MAIL");
	buf_putc(&b, '!');
	buf_truncate(&b, 2);
	assert_string_equal(b.data, "MA");
	buf_consume(&b, 10);
	assert_int_equal(b.len, 0);
	char *s = buf_detach(&b);
	assert_string_equal(s, "");
	assert_null(b.data);
	free(s);
}

static void test_mem_helpers(void **state)
{
	(void)state;
	char *s = mem_asprintf("%s-%d", "tern", 7);
	assert_string_equal(s, "tern-7");
	free(s);
	s = mem_strndup("abcdef", 3);
	assert_string_equal(s, "abc");
	free(s);
	int *v = mem_reallocarray(NULL, 10, sizeof(int));
	v[9] = 1;
	free(v);
	mem_free_secret(mem_strdup("password"));
	mem_free_secret(NULL);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return mem_strdup("");
	struct buf b = BUF_INIT;
	char chunk[512];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_append(&b, chunk, n);
	fclose(f);
	return buf_detach(&b);
}

static void test_log_file_reopen(void **state)
{
	(void)state;
	char dir[] = "/tmp/tern-logtest-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = mem_asprintf("%s/log", dir), *rotated = mem_asprintf("%s/log.1", dir);

	assert_int_equal(log_open("tern/test", LOG_TO_FILE, path), 0);
	log_info("first %d", 1);
	assert_int_equal(rename(path, rotated), 0);
	log_warning("second");
	assert_int_equal(log_reopen(), 0);
	log_error("third");
	log_close();

	char *old = read_file(rotated), *cur = read_file(path);
	assert_non_null(strstr(old, "tern/test["));
	assert_non_null(strstr(old, "]: info: first 1\n"));
	assert_non_null(strstr(old, "]: warning: second\n"));
	assert_null(strstr(cur, "first"));
	assert_non_null(strstr(cur, "]: error: third\n"));
	free(old);
	free(cur);

	assert_int_equal(log_open("tern/test", LOG_TO_FILE, "/nonexistent-dir/x/log"), -1);
	unlink(path);
	unlink(rotated);
	rmdir(dir);
	free(path);
	free(rotated);
}

/* Each line names the process that wrote it, a forked child too. */
static void test_log_lines_carry_the_writers_pid(void **state)
{
	(void)state;
	char dir[] = "/tmp/tern-logtest-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char *path = mem_asprintf("%s/log", dir);
	assert_int_equal(log_open("tern/test", LOG_TO_FILE, path), 0);
	log_info("parent");
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		log_info("child");
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	log_info("parent again");
	log_close();
	char *text = read_file(path);
	char parent_line[64], child_line[64];
	snprintf(parent_line, sizeof(parent_line), "tern/test[%ld]: info: parent\n", (long)getpid());
	snprintf(child_line, sizeof(child_line), "tern/test[%ld]: info: child\n", (long)child);
	assert_non_null(strstr(text, parent_line));
	assert_non_null(strstr(text, child_line));
	snprintf(parent_line, sizeof(parent_line), "tern/test[%ld]: info: parent again\n", (long)getpid());
	assert_non_null(strstr(text, parent_line));
	free(text);
	unlink(path);
	rmdir(dir);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_append_and_grow),
	    cmocka_unit_test(test_printf_short_and_long),
	    cmocka_unit_test(test_concat),
	    cmocka_unit_test(test_put_decimal),
	    cmocka_unit_test(test_consume_truncate_detach),
	    cmocka_unit_test(test_mem_helpers),
	    cmocka_unit_test(test_log_file_reopen),
	    cmocka_unit_test(test_log_lines_carry_the_writers_pid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
