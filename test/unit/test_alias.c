/* test_alias.c: unit tests of the aliases file syntax (entries, quoted
 * names, continuations, comments, errors with FILE:LINE), the split of a
 * right-hand side into targets (addresses, files, commands, :include:,
 * \name, quotes) and the compiled Berkeley DB hash (folded keys, atomic
 * replacement, nothing written on an error). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alias.h"

struct seen {
	char names[8][64];
	char values[8][256];
	unsigned lines[8];
	size_t n;
};

static bool collect(void *ctx, const char *name, const char *value, unsigned line, struct buf *err)
{
	struct seen *s = ctx;
	snprintf(s->names[s->n], sizeof(s->names[0]), "%s", name);
	snprintf(s->values[s->n], sizeof(s->values[0]), "%s", value);
	s->lines[s->n++] = line;
	return true;
}

static bool parse(const char *text, struct seen *s, struct buf *err)
{
	memset(s, 0, sizeof(*s));
	return alias_parse_text(text, strlen(text), "aliases", collect, s, err);
}

static void test_entries_continuations_and_comments(void **state)
{
	(void)state;
	struct seen s;
	struct buf err = BUF_INIT;
	assert_true(parse("# comment\n\npostmaster: root\n\"Some Name\": a,\n  b@example.org,\n\tc\r\n"
	                  "  # indented comment\nlast:x",
	                  &s, &err));
	assert_int_equal(s.n, 3);
	assert_string_equal(s.names[0], "postmaster");
	assert_string_equal(s.values[0], "root");
	assert_int_equal(s.lines[0], 3);
	assert_string_equal(s.names[1], "Some Name");
	assert_string_equal(s.values[1], "a,   b@example.org, \tc");
	assert_int_equal(s.lines[1], 4);
	assert_string_equal(s.names[2], "last");
	assert_string_equal(s.values[2], "x");
	buf_free(&err);
}

static void expect_error(const char *text, const char *words)
{
	struct seen s;
	struct buf err = BUF_INIT;
	assert_false(parse(text, &s, &err));
	if (strstr(buf_cstr(&err), words) == NULL)
		fail_msg("\"%s\" not in \"%s\"", words, buf_cstr(&err));
	buf_free(&err);
}

static void test_errors_name_file_and_line(void **state)
{
	(void)state;
	expect_error("ok: a\nno colon here\n", "aliases:2: missing ':'");
	expect_error(" starts indented\n", "aliases:1: continuation line without an alias");
	expect_error("a:\n", "aliases:1: alias \"a\" has no target");
	expect_error("a@b: c\n", "aliases:1: bad alias name");
	expect_error("two words: c\n", "aliases:1: bad alias name");
	expect_error("a: \"unterminated\n", "aliases:1: alias \"a\": unterminated quote");
	expect_error("a: :include:relative\n", "needs an absolute path");
	expect_error("\"open: x\n", "aliases:1: unterminated quoted name");
}

static void test_split_targets(void **state)
{
	(void)state;
	struct alias_targets t = {0};
	struct buf err = BUF_INIT;
	assert_true(alias_split("root, Bob <bob@example.org>, /var/mail/archive, \"|/usr/bin/prog arg\","
	                        " :include:/etc/mail/list, \\joe, \"quoted name\"@example.org,",
	                        &t, &err));
	assert_int_equal(t.count, 7);
	assert_int_equal(t.items[0].kind, ALIAS_ADDRESS);
	assert_string_equal(t.items[0].text, "root");
	assert_false(t.items[0].verbatim);
	assert_string_equal(t.items[1].text, "bob@example.org");
	assert_int_equal(t.items[2].kind, ALIAS_FILE);
	assert_string_equal(t.items[2].text, "/var/mail/archive");
	assert_int_equal(t.items[3].kind, ALIAS_COMMAND);
	assert_string_equal(t.items[3].text, "/usr/bin/prog arg");
	assert_int_equal(t.items[4].kind, ALIAS_INCLUDE);
	assert_string_equal(t.items[4].text, "/etc/mail/list");
	assert_int_equal(t.items[5].kind, ALIAS_ADDRESS);
	assert_string_equal(t.items[5].text, "joe");
	assert_true(t.items[5].verbatim);
	assert_string_equal(t.items[6].text, "quoted name@example.org");
	alias_targets_free(&t);
	/* an :include: file: one or more a line, comments */
	assert_true(alias_split("# members\na\nb, c\n  # more\nd\n", &t, &err));
	assert_int_equal(t.count, 4);
	assert_string_equal(t.items[3].text, "d");
	alias_targets_free(&t);
	assert_false(alias_split("a b", &t, &err));
	assert_non_null(strstr(buf_cstr(&err), "bad target"));
	assert_int_equal(t.count, 0);
	buf_free(&err);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_compile_and_lookup(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_alias.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char src[256], dst[256];
	snprintf(src, sizeof(src), "%s/aliases", dir);
	snprintf(dst, sizeof(dst), "%s/aliases.db", dir);
	write_text(src, "PostMaster: root\nteam: a, b,\n  c\n");
	struct buf err = BUF_INIT, value = BUF_INIT;
	size_t count = 0;
	assert_int_equal(alias_compile(src, dst, &count, &err), ALIAS_COMPILED);
	assert_int_equal(count, 2);
	bool missing;
	struct alias_db *db = alias_db_open(dst, &missing, &err);
	assert_non_null(db);
	assert_int_equal(alias_db_get(db, "postmaster", &value, &err), 1);
	assert_string_equal(buf_cstr(&value), "root");
	assert_int_equal(alias_db_get(db, "team", &value, &err), 1);
	assert_string_equal(buf_cstr(&value), "a, b,   c");
	assert_int_equal(alias_db_get(db, "PostMaster", &value, &err), 0);
	alias_db_close(db);
	/* a bad file leaves the old database alone and no temporary file */
	write_text(src, "x: y\nx: z\n");
	assert_int_equal(alias_compile(src, dst, &count, &err), ALIAS_BAD_ENTRY);
	assert_non_null(strstr(buf_cstr(&err), ":2: duplicate alias"));
	db = alias_db_open(dst, &missing, &err);
	assert_non_null(db);
	assert_int_equal(alias_db_get(db, "team", &value, &err), 1);
	alias_db_close(db);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "test $(ls %s | wc -l) -eq 2 && rm -r %s", dir, dir);
	assert_int_equal(system(cmd), 0);
	assert_null(alias_db_open(dst, &missing, &err));
	assert_true(missing);
	/* a source that cannot be read, a database that cannot be written */
	assert_int_equal(alias_compile("/nonexistent/aliases", dst, &count, &err), ALIAS_IO_ERROR);
	assert_int_equal(alias_compile("/dev/null", "/nonexistent/aliases.db", &count, &err), ALIAS_IO_ERROR);
	buf_free(&err);
	buf_free(&value);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_entries_continuations_and_comments),
	    cmocka_unit_test(test_errors_name_file_and_line),
	    cmocka_unit_test(test_split_targets),
	    cmocka_unit_test(test_compile_and_lookup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
