/* test_conf_lex.c: unit tests of the configuration lexer (one line into a
 * directive or a tag), quoting back, and the directive table itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "conf_internal.h"

static struct conf_line lex_ok(const char *text)
{
	struct conf_line line;
	struct buf err = BUF_INIT;
	if (!conf_lex_line(text, strlen(text), &line, &err))
		fail_msg("lex \"%s\": %s", text, buf_cstr(&err));
	buf_free(&err);
	return line;
}

static void assert_lex_error(const char *text, size_t len, const char *message)
{
	struct conf_line line;
	struct buf err = BUF_INIT;
	assert_false(conf_lex_line(text, len, &line, &err));
	assert_string_equal(buf_cstr(&err), message);
	conf_line_free(&line);
	buf_free(&err);
}

static void test_directive(void **state)
{
	(void)state;
	struct conf_line l = lex_ok("  Max-SMTP-Out   20\t# a comment");
	assert_int_equal(l.kind, CONF_LINE_DIRECTIVE);
	assert_string_equal(l.name, "max-smtp-out");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "20");
	assert_string_equal(l.rest, "20");
	conf_line_free(&l);

	l = lex_ok("records d, b");
	assert_int_equal(l.args.count, 2);
	assert_string_equal(l.args.items[0], "d,");
	assert_string_equal(l.args.items[1], "b");
	conf_line_free(&l);

	l = lex_ok("auth-password abc#def");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "abc");
	conf_line_free(&l);
}

static void test_empty_and_comment(void **state)
{
	(void)state;
	const char *lines[] = {"", "   ", "\t", "# comment", "   # indented comment"};
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		struct conf_line l = lex_ok(lines[i]);
		assert_int_equal(l.kind, CONF_LINE_EMPTY);
		conf_line_free(&l);
	}
}

static void test_quotes(void **state)
{
	(void)state;
	struct conf_line l = lex_ok("command \"/bin/proc --envid \\\"$envid\\\" a\\\\b c\\.d\" # x");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "/bin/proc --envid \"$envid\" a\\b c\\.d");
	conf_line_free(&l);

	l = lex_ok("smtp-hosts \"\"");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "");
	conf_line_free(&l);

	l = lex_ok("auth-password \"has # inside\"");
	assert_string_equal(l.args.items[0], "has # inside");
	conf_line_free(&l);
}

static void test_curly_quotes(void **state)
{
	(void)state;
	/* U+201C and U+201D, as pasted from a web page. */
	struct conf_line l = lex_ok("smtp-client-certificate /etc/c.pem \xe2\x80\x9ckey password\xe2\x80\x9d");
	assert_int_equal(l.args.count, 2);
	assert_string_equal(l.args.items[1], "key password");
	conf_line_free(&l);

	l = lex_ok("x \xe2\x80\x9d\xe2\x80\x9d");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "");
	conf_line_free(&l);
}

static void test_utf8_text(void **state)
{
	(void)state;
	struct conf_line l = lex_ok("<domain b\xc3\xbc\x63her.example>");
	assert_int_equal(l.kind, CONF_LINE_OPEN);
	assert_string_equal(l.args.items[0], "b\xc3\xbc\x63her.example");
	conf_line_free(&l);
}

static void test_tags(void **state)
{
	(void)state;
	struct conf_line l = lex_ok("<Domain [*.]example.com>   # comment");
	assert_int_equal(l.kind, CONF_LINE_OPEN);
	assert_string_equal(l.name, "domain");
	assert_int_equal(l.args.count, 1);
	assert_string_equal(l.args.items[0], "[*.]example.com");
	conf_line_free(&l);

	l = lex_ok("<acct-file \"|/usr/bin/proc --x\">");
	assert_string_equal(l.args.items[0], "|/usr/bin/proc --x");
	conf_line_free(&l);

	l = lex_ok("  </DOMAIN>");
	assert_int_equal(l.kind, CONF_LINE_CLOSE);
	assert_string_equal(l.name, "domain");
	assert_int_equal(l.args.count, 0);
	conf_line_free(&l);

	l = lex_ok("<bounce-category-patterns>");
	assert_int_equal(l.kind, CONF_LINE_OPEN);
	assert_int_equal(l.args.count, 0);
	conf_line_free(&l);
}

static void test_regex_line(void **state)
{
	(void)state;
	struct conf_line l = lex_ok("    /mailbox (is )?full/ quota-issues   # comment");
	assert_int_equal(l.kind, CONF_LINE_DIRECTIVE);
	assert_string_equal(l.name, CONF_REGEX_LINE);
	assert_string_equal(l.rest, "/mailbox (is )?full/ quota-issues");
	conf_line_free(&l);
}

static void test_errors(void **state)
{
	(void)state;
	assert_lex_error("foo \"bar", 8, "unterminated quoted string");
	assert_lex_error("foo \"bar\"baz", 12, "unexpected text right after a closing quote");
	assert_lex_error("\"foo\" bar", 9, "a directive name cannot be quoted");
	assert_lex_error("<domain x", 9, "missing '>' to end the tag <domain");
	assert_lex_error("<domain x> y", 12, "unexpected text after '>'");
	assert_lex_error("</domain x>", 11, "closing tag </domain> takes no argument");
	assert_lex_error("< x>", 4, "missing tag name after '<'");
	assert_lex_error("foo\0bar", 7, "NUL byte in line");
	assert_lex_error("foo \x1b[1m", 8, "control character 0x1b in line");
	assert_lex_error("foo \xff", 5, "invalid UTF-8 in line");
	assert_lex_error("foo \xc0\xaf", 6, "invalid UTF-8 in line");     /* overlong */
	assert_lex_error("foo \xed\xa0\x80", 7, "invalid UTF-8 in line"); /* surrogate */
	assert_lex_error("foo \xe2\x80", 6, "invalid UTF-8 in line");     /* truncated */
}

static void test_quote_back(void **state)
{
	(void)state;
	const char *words[][2] = {{"plain", "plain"},     {"", "\"\""},           {"two words", "\"two words\""},
	                          {"a\"b", "\"a\\\"b\""}, {"a\\b", "\"a\\\\b\""}, {"x#y", "\"x#y\""}};
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
		struct buf out = BUF_INIT;
		conf_quote(words[i][0], &out);
		assert_string_equal(buf_cstr(&out), words[i][1]);
		/* What is written back reads as the same word. */
		struct buf line = BUF_INIT;
		buf_printf(&line, "x %s", buf_cstr(&out));
		struct conf_line l = lex_ok(buf_cstr(&line));
		assert_int_equal(l.args.count, 1);
		assert_string_equal(l.args.items[0], words[i][0]);
		conf_line_free(&l);
		buf_free(&line);
		buf_free(&out);
	}
}

static void test_table_sorted_and_sane(void **state)
{
	(void)state;
	for (size_t i = 0; i < conf_directive_total; i++) {
		const struct conf_directive *d = &conf_directives[i];
		if (i > 0 && strcmp(conf_directives[i - 1].name, d->name) >= 0)
			fail_msg("directive table not sorted at %s", d->name);
		assert_true(d->scopes != 0);
		assert_true((d->type == CONF_T_ENUM) == (d->words != NULL));
		if (d->inherit) {
			const struct conf_directive *g = conf_directive_lookup(d->inherit);
			assert_non_null(g);
			assert_int_equal(g->type, d->type);
		}
		assert_ptr_equal(conf_directive_lookup(d->name), d);
	}
	assert_true(conf_directive_supported("include"));
	assert_true(conf_directive_supported("domain-macro"));
	assert_true(conf_directive_supported("use-starttls"));
	assert_false(conf_directive_supported("use-dane"));
	assert_true(conf_directive_known("use-starttls"));
	assert_false(conf_directive_known("use-startls"));
}

static void test_table_covers_reference(void **state)
{
	(void)state;
	/* A sample of each section of the reference. */
	const char *names[] = {"smtp-listener",
	                       "host-name",
	                       "total-max-smtp-in",
	                       "log-rotate",
	                       "http-access",
	                       "relay-domain",
	                       "domain-key",
	                       "smtp-source-host",
	                       "mx-connection-limit",
	                       "immediate-tls",
	                       "tls-ca-file",
	                       "smtp-server-tls-ca-file",
	                       "smtp-server-tls-v1.3-ciphersuites",
	                       "require-starttls-before-auth",
	                       "require-client-certificate",
	                       "authentication-method",
	                       "use-starttls",
	                       "smtp-client-certificate",
	                       "smtp-tls-ca-file",
	                       "always-allow-relaying",
	                       "max-message-size",
	                       "dsn-return-default",
	                       "max-smtp-out",
	                       "retry-after",
	                       "bounce-upon-no-mx",
	                       "smtp-hosts",
	                       "dkim-sign",
	                       "queue-priority",
	                       "max-smtp-msg-rate",
	                       "virtual-mta",
	                       "reply",
	                       "mail-from",
	                       CONF_REGEX_LINE,
	                       "records",
	                       "record-fields",
	                       "move-to",
	                       "privacy-policy",
	                       "http-webhook-url",
	                       "priority",
	                       "min-free-space"};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (!conf_directive_known(names[i]))
			fail_msg("%s is not in the table", names[i]);
}

static void test_suggestions(void **state)
{
	(void)state;
	assert_string_equal(conf_directive_suggest("use-startls"), "use-starttls");
	assert_string_equal(conf_directive_suggest("max-smtp-outt"), "max-smtp-out");
	assert_string_equal(conf_directive_suggest("Require-StartTLS"), "require-starttls");
	assert_null(conf_directive_suggest("completely-unrelated-thing"));
	assert_string_equal(conf_blockdef_suggest("virtual-mt"), "virtual-mta");
	assert_int_equal(conf_edit_distance("kitten", "sitting", 5), 3);
	assert_int_equal(conf_edit_distance("abc", "abcdefgh", 2), 3);
}

static void test_empty_config_parses_every_default(void **state)
{
	(void)state;
	/* Building parses each default with the user-value parsers; a bad
	 * default would abort here. */
	struct conf *conf = conf_load_buffer("empty.conf", "", 0, 0);
	assert_true(conf_ok(conf));
	assert_int_equal(conf_diag_count(conf), 0);
	conf_free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_directive),
	    cmocka_unit_test(test_empty_and_comment),
	    cmocka_unit_test(test_quotes),
	    cmocka_unit_test(test_curly_quotes),
	    cmocka_unit_test(test_utf8_text),
	    cmocka_unit_test(test_tags),
	    cmocka_unit_test(test_regex_line),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_quote_back),
	    cmocka_unit_test(test_table_sorted_and_sane),
	    cmocka_unit_test(test_table_covers_reference),
	    cmocka_unit_test(test_suggestions),
	    cmocka_unit_test(test_empty_config_parses_every_default),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
