/* test_smtpd_parse.c: unit tests of smtpd's pure parsers - RFC 5321
 * paths, ESMTP parameters, xtext, NOTIFY and ORCPT, base64, domain
 * patterns and the end-of-data scanner (including every split of the
 * input, since the network decides where a read ends). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parsers are compiled in: they are pure functions, and this keeps the
 * test free of smtpd's event loop. */
#include "smtpd/smtpd_parse.c"

/* ---- paths --------------------------------------------------------------------- */

static void assert_path(const char *text, bool null_ok, bool pm_ok, bool utf8_ok, const char *mailbox, const char *rest)
{
	struct mail_addr a;
	const char *p = text, *why = NULL;
	if (!mail_addr_parse_path(&p, null_ok, pm_ok, utf8_ok, &a, &why))
		fail_msg("%s: %s", text, why);
	assert_string_equal(a.mailbox, mailbox);
	assert_string_equal(p, rest);
	mail_addr_free(&a);
}

static void assert_bad_path(const char *text, bool utf8_ok)
{
	struct mail_addr a;
	const char *p = text, *why = NULL;
	if (mail_addr_parse_path(&p, true, true, utf8_ok, &a, &why)) {
		mail_addr_free(&a);
		fail_msg("accepted %s", text);
	}
	assert_non_null(why);
}

static void test_good_paths(void **state)
{
	(void)state;
	assert_path("<a@example.com>", false, false, false, "a@example.com", "");
	assert_path("<a.b+c@sub.example.com> SIZE=1", false, false, false, "a.b+c@sub.example.com", " SIZE=1");
	assert_path("<>", true, false, false, "", "");
	assert_path("<Postmaster>", false, true, false, "Postmaster", "");
	assert_path("<postMASTER>", false, true, false, "postMASTER", "");
	assert_path("<\"a b\"@x.org>", false, false, false, "\"a b\"@x.org", "");
	assert_path("<\"a\\\"b\"@x.org>", false, false, false, "\"a\\\"b\"@x.org", "");
	assert_path("<a@[192.0.2.1]>", false, false, false, "a@[192.0.2.1]", "");
	assert_path("<a@[IPv6:2001:db8::1]>", false, false, false, "a@[IPv6:2001:db8::1]", "");
	assert_path("<j\xc3\xb6rg@b\xc3\xbc\x63her.example>", false, false, true,
	            "j\xc3\xb6rg@b\xc3\xbc\x63her.example", "");
	/* a source route is parsed and dropped (RFC 5321 section 4.1.2), and noted */
	struct mail_addr a;
	const char *p = "<@x.org,@y.org:a@example.com>", *why = NULL;
	assert_true(mail_addr_parse_path(&p, false, false, false, &a, &why));
	assert_true(a.route);
	assert_string_equal(a.mailbox, "a@example.com");
	mail_addr_free(&a);
	p = "<a@example.com.>";
	assert_true(mail_addr_parse_path(&p, false, false, false, &a, &why));
	assert_true(a.trailing_dot);
	assert_string_equal(a.domain, "example.com");
	mail_addr_free(&a);
}

static void test_bad_paths(void **state)
{
	(void)state;
	const char *bad[] = {
	    "a@example.com",
	    "<a@example.com",
	    "<a@@example.com>",
	    "<@example.com>",
	    "<a@>",
	    "<a>",
	    "<.a@example.com>",
	    "<a.@example.com>",
	    "<a..b@example.com>",
	    "<a@example..com>",
	    "<a@.example.com>",
	    "<a@-example.com>",
	    "<a@example-.com>",
	    "<a b@example.com>",
	    "<a@exa mple.com>",
	    "<\"a@example.com>",
	    "<a@[1.2.3]>",
	    "<a@[300.1.1.1]>",
	    "<a@[IPv6:1.2.3.4]>",
	    "<a@[1.2.3.4>",
	    "<a@example.com..>",
	    "<@x.org:>",
	    "<@x.org a@example.com>",
	    "<a\x01@example.com>",
	    "<a@ex\xc3\xa4mple.com>",
	    "<\"a\x7f\"@example.com>",
	    "<a@example.com>>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mail_addr a;
		const char *p = bad[i], *why = NULL;
		bool ok = mail_addr_parse_path(&p, true, true, false, &a, &why);
		/* "<a@example.com>>" parses the path and leaves ">" for the
		 * parameter parser, which refuses it */
		if (ok && strcmp(bad[i], "<a@example.com>>") == 0) {
			assert_string_equal(p, ">");
			mail_addr_free(&a);
			continue;
		}
		if (ok) {
			mail_addr_free(&a);
			fail_msg("accepted %s", bad[i]);
		}
	}
}

/* A line that ends inside the local part: the end of the string is not
 * atext (found by fuzzing: the parser used to read past it). */
static void test_path_ending_inside_the_local_part(void **state)
{
	(void)state;
	static const char *const inputs[] = {"<u", "<user", "<a.b", "<@host:u"};
	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		char *line = mem_strdup(inputs[i]); /* exact-size heap copy for ASan */
		const char *p = line, *why = NULL;
		struct mail_addr addr;
		assert_false(mail_addr_parse_path(&p, true, true, true, &addr, &why));
		assert_non_null(why);
		free(line);
	}
}

static void test_path_limits(void **state)
{
	(void)state;
	char local[80], text[400];
	memset(local, 'a', 65);
	local[65] = '\0';
	snprintf(text, sizeof(text), "<%s@x.org>", local);
	assert_bad_path(text, false);
	local[64] = '\0';
	snprintf(text, sizeof(text), "<%s@x.org>", local);
	text[strlen(text) - 1] = '\0';
	char expect[400];
	strcpy(expect, text + 1);
	strcat(text, ">");
	assert_path(text, false, false, false, expect, "");
	/* a 64-octet label is too long */
	char label[70];
	memset(label, 'b', 64);
	label[64] = '\0';
	snprintf(text, sizeof(text), "<a@%s.org>", label);
	assert_bad_path(text, false);
	/* null path refused when not allowed; UTF-8 refused without SMTPUTF8 */
	struct mail_addr a;
	const char *p = "<>", *why;
	assert_false(mail_addr_parse_path(&p, false, false, false, &a, &why));
	p = "<j\xc3\xb6rg@x.org>";
	assert_false(mail_addr_parse_path(&p, false, false, false, &a, &why));
	p = "<j\xc3@x.org>"; /* truncated UTF-8 */
	assert_false(mail_addr_parse_path(&p, false, false, true, &a, &why));
}

/* ---- parameters -------------------------------------------------------------------- */

static void test_params(void **state)
{
	(void)state;
	struct smtpd_param params[SMTPD_PARAMS_MAX];
	size_t n;
	const char *why;
	char ok1[] = " SIZE=100 BODY=8BITMIME SMTPUTF8";
	assert_true(smtpd_parse_params(ok1, params, &n, &why));
	assert_int_equal(n, 3);
	assert_string_equal(params[0].keyword, "SIZE");
	assert_string_equal(params[0].value, "100");
	assert_null(params[2].value);
	char empty[] = "";
	assert_true(smtpd_parse_params(empty, params, &n, &why));
	assert_int_equal(n, 0);
	char nospace[] = "SIZE=1";
	assert_false(smtpd_parse_params(nospace, params, &n, &why));
	char dup[] = " SIZE=1 size=2";
	assert_false(smtpd_parse_params(dup, params, &n, &why));
	char badkw[] = " -X=1";
	assert_false(smtpd_parse_params(badkw, params, &n, &why));
	char badval[] = " X=a=b";
	assert_false(smtpd_parse_params(badval, params, &n, &why));
	char emptyval[] = " X=";
	assert_false(smtpd_parse_params(emptyval, params, &n, &why));
}

static void test_dsn_values(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	assert_true(smtpd_xtext_decode("a+2Bb+3D", &b));
	assert_string_equal(buf_cstr(&b), "a+b=");
	buf_reset(&b);
	assert_false(smtpd_xtext_decode("a+2b", &b)); /* hex must be upper case */
	assert_false(smtpd_xtext_decode("a=b", &b));
	assert_false(smtpd_xtext_decode("a+2", &b));
	assert_false(smtpd_xtext_valid(""));
	assert_false(smtpd_xtext_valid("a+00"));
	buf_reset(&b);
	assert_true(smtpd_parse_notify("success,Delay", &b));
	assert_string_equal(buf_cstr(&b), "SUCCESS,DELAY");
	buf_reset(&b);
	assert_true(smtpd_parse_notify("never", &b));
	assert_string_equal(buf_cstr(&b), "NEVER");
	buf_reset(&b);
	assert_false(smtpd_parse_notify("NEVER,SUCCESS", &b));
	buf_reset(&b);
	assert_false(smtpd_parse_notify("SUCCESS,SUCCESS", &b));
	buf_reset(&b);
	assert_false(smtpd_parse_notify("SUCCESS,", &b));
	buf_reset(&b);
	assert_true(smtpd_parse_orcpt("rfc822;a+40b.org", &b));
	buf_reset(&b);
	assert_true(smtpd_parse_orcpt("UTF-8;a@b.org", &b));
	buf_reset(&b);
	assert_false(smtpd_parse_orcpt("x400;a", &b));
	assert_false(smtpd_parse_orcpt("rfc822;", &b));
	assert_false(smtpd_parse_orcpt("rfc822", &b));
	buf_free(&b);
}

static void test_base64(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	assert_true(smtpd_base64_decode("AGFsaWNlAHNlY3JldA==", 20, &b));
	assert_int_equal(b.len, 13);
	assert_memory_equal(b.data, "\0alice\0secret", 13);
	buf_reset(&b);
	assert_true(smtpd_base64_decode("", 0, &b));
	assert_int_equal(b.len, 0);
	const char *bad[] = {
	    "AGFsaWNl=", "AGF", "A===", "AG=A", "AG$=", "QQ==QQ==", "Q===",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		buf_reset(&b);
		if (smtpd_base64_decode(bad[i], strlen(bad[i]), &b))
			fail_msg("accepted %s", bad[i]);
	}
	for (size_t len = 0; len < 8; len++) {
		struct buf enc = BUF_INIT;
		smtpd_base64_encode("abcdefgh", len, &enc);
		buf_reset(&b);
		assert_true(smtpd_base64_decode(enc.data ? enc.data : "", enc.len, &b));
		assert_int_equal(b.len, len);
		assert_memory_equal(b.data ? b.data : "", "abcdefgh", len);
		buf_free(&enc);
	}
	buf_free(&b);
}

static void test_domain_patterns(void **state)
{
	(void)state;
	assert_true(smtpd_domain_match("*", "anything.org"));
	assert_true(smtpd_domain_match("example.com", "EXAMPLE.com"));
	assert_false(smtpd_domain_match("example.com", "sub.example.com"));
	assert_true(smtpd_domain_match("*.example.com", "sub.example.com"));
	assert_false(smtpd_domain_match("*.example.com", "example.com"));
	assert_false(smtpd_domain_match("*.example.com", "badexample.com"));
	assert_true(smtpd_domain_match("[*.]example.com", "example.com"));
	assert_true(smtpd_domain_match("[*.]example.com", "a.b.example.com"));
	assert_true(smtpd_domain_match("[10/8]", "[10.1.2.3]"));
	assert_false(smtpd_domain_match("[10/8]", "[11.1.2.3]"));
	assert_false(smtpd_domain_match("[10/8]", "10.1.2.3"));
	assert_true(smtpd_domain_match("[::1]", "[IPv6:::1]"));
}

static void test_log_safe(void **state)
{
	(void)state;
	struct buf b = BUF_INIT;
	smtpd_log_safe("a\nb\x1b[31mc\x7f", 100, &b);
	assert_string_equal(buf_cstr(&b), "a?b?[31mc?");
	buf_reset(&b);
	smtpd_log_safe("abcdef", 3, &b);
	assert_string_equal(buf_cstr(&b), "abc...");
	buf_free(&b);
}

/* ---- the end-of-data scanner ----------------------------------------------------------- */

struct scan_out {
	enum smtpd_scan_result result;
	size_t consumed; /* of the whole input */
	struct buf text;
	bool too_long;
};

/* Feeds input in pieces of at most step octets, as reads would. */
static struct scan_out scan(const char *in, size_t len, size_t step)
{
	struct scan_out o = {SMTPD_SCAN_MORE, 0, BUF_INIT, false};
	struct smtpd_scan s;
	smtpd_scan_init(&s);
	while (o.consumed < len) {
		size_t n = len - o.consumed < step ? len - o.consumed : step, used;
		o.result = smtpd_scan_data(&s, in + o.consumed, n, &used, &o.text);
		o.consumed += used;
		if (o.result != SMTPD_SCAN_MORE)
			break;
		assert_int_equal(used, n);
	}
	o.too_long = s.line_too_long;
	return o;
}

static void assert_scan(const char *in, enum smtpd_scan_result result, const char *text, size_t consumed)
{
	for (size_t step = 1; step <= strlen(in); step++) {
		struct scan_out o = scan(in, strlen(in), step);
		if (o.result != result)
			fail_msg("%s (step %zu): result %d, expected %d", in, step, o.result, result);
		if (text)
			assert_string_equal(buf_cstr(&o.text), text);
		if (consumed != (size_t)-1 && o.consumed != consumed)
			fail_msg("%s (step %zu): consumed %zu, expected %zu", in, step, o.consumed, consumed);
		buf_free(&o.text);
	}
}

static void test_scan_end_and_unstuffing(void **state)
{
	(void)state;
	assert_scan(".\r\n", SMTPD_SCAN_END, "", 3);
	assert_scan("a\r\n.\r\nMAIL", SMTPD_SCAN_END, "a\r\n", 6);
	assert_scan("..a\r\n..\r\n.\r\n", SMTPD_SCAN_END, ".a\r\n.\r\n", 12);
	assert_scan("a.\r\n.b\r\n\r\n.\r\n", SMTPD_SCAN_END, "a.\r\nb\r\n\r\n", 13);
	assert_scan("a\r\n. \r\n.\r\n", SMTPD_SCAN_END, "a\r\n \r\n", 10);
	assert_scan("a\r\nb", SMTPD_SCAN_MORE, "a\r\nb", 4);
	assert_scan("a\r\n.", SMTPD_SCAN_MORE, "a\r\n", 4);
}

static void test_scan_smuggling(void **state)
{
	(void)state;
	assert_scan("a\n.\n", SMTPD_SCAN_BARE_LF, NULL, (size_t)-1);
	assert_scan("a\r\n.\n", SMTPD_SCAN_BARE_LF, NULL, (size_t)-1);
	assert_scan("a\n.\r\n", SMTPD_SCAN_BARE_LF, NULL, (size_t)-1);
	assert_scan("a\r.\r", SMTPD_SCAN_BARE_CR, NULL, (size_t)-1);
	assert_scan("a\r\n.\r", SMTPD_SCAN_MORE, NULL, (size_t)-1);
	assert_scan("a\r\n.\rX", SMTPD_SCAN_BARE_CR, NULL, (size_t)-1);
	assert_scan("a\rb\r\n", SMTPD_SCAN_BARE_CR, NULL, (size_t)-1);
	assert_scan("\n", SMTPD_SCAN_BARE_LF, NULL, (size_t)-1);
	assert_scan("a\r\r\n", SMTPD_SCAN_BARE_CR, NULL, (size_t)-1);
}

static void test_scan_line_length(void **state)
{
	(void)state;
	char in[2100];
	memset(in, 'x', 998);
	strcpy(in + 998, "\r\n.\r\n");
	struct scan_out o = scan(in, strlen(in), 4096);
	assert_int_equal(o.result, SMTPD_SCAN_END);
	assert_false(o.too_long);
	buf_free(&o.text);
	memset(in, 'x', 999);
	strcpy(in + 999, "\r\n.\r\n");
	o = scan(in, strlen(in), 7);
	assert_int_equal(o.result, SMTPD_SCAN_END);
	assert_true(o.too_long);
	buf_free(&o.text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good_paths),
	    cmocka_unit_test(test_bad_paths),
	    cmocka_unit_test(test_path_limits),
	    cmocka_unit_test(test_path_ending_inside_the_local_part),
	    cmocka_unit_test(test_params),
	    cmocka_unit_test(test_dsn_values),
	    cmocka_unit_test(test_base64),
	    cmocka_unit_test(test_domain_patterns),
	    cmocka_unit_test(test_scan_end_and_unstuffing),
	    cmocka_unit_test(test_scan_smuggling),
	    cmocka_unit_test(test_log_safe),
	    cmocka_unit_test(test_scan_line_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
