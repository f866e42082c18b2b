/* test_smtp_reply.c: unit tests of the smtp agent's pure text handling:
 * taking (multi-line) replies out of received bytes, enhanced status
 * codes, EHLO keywords, the wire form of a message (CRLF, dot-stuffing)
 * and xtext. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

static void feed(struct buf *in, const char *text)
{
	buf_reset(in);
	buf_puts(in, text);
}

static void test_single_and_multiline_replies(void **state)
{
	(void)state;
	struct buf in = BUF_INIT;
	struct smtp_reply r;
	smtp_reply_init(&r);

	feed(&in, "250 2.1.5 Ok\r\n354 go ahead\r\n");
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_COMPLETE);
	assert_int_equal(r.code, 250);
	assert_string_equal(r.enhanced, "2.1.5");
	assert_string_equal(buf_cstr(&r.text), "2.1.5 Ok");
	assert_string_equal(buf_cstr(&in), "354 go ahead\r\n"); /* the next one stays */
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_COMPLETE);
	assert_int_equal(r.code, 354);
	assert_string_equal(r.enhanced, "");

	feed(&in, "250-sink.test hello\r\n250-PIPELINING\r\n250 SIZE 1000");
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_PARTIAL);
	buf_puts(&in, "\r\n");
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_COMPLETE);
	assert_string_equal(buf_cstr(&r.text), "sink.test hello\nPIPELINING\nSIZE 1000");
	struct buf line = BUF_INIT;
	smtp_reply_format(&r, &line);
	assert_string_equal(buf_cstr(&line), "250 sink.test hello PIPELINING SIZE 1000");

	/* bare LF, a code alone */
	feed(&in, "220\n");
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_COMPLETE);
	assert_int_equal(r.code, 220);
	buf_reset(&line);
	smtp_reply_format(&r, &line);
	assert_string_equal(buf_cstr(&line), "220");

	buf_free(&line);
	buf_free(&in);
	smtp_reply_free(&r);
}

static void test_bad_replies(void **state)
{
	(void)state;
	struct buf in = BUF_INIT;
	struct smtp_reply r;
	smtp_reply_init(&r);
	const char *bad[] = {"hello\r\n", "25\r\n", "250x\r\n", "250-a\r\n251 b\r\n", "650 no\r\n"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		feed(&in, bad[i]);
		assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_BAD);
	}
	/* an endless line is refused, not buffered forever */
	buf_reset(&in);
	for (int i = 0; i < 70000; i++)
		buf_putc(&in, 'x');
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_BAD);
	buf_free(&in);
	smtp_reply_free(&r);
}

static void test_enhanced_codes(void **state)
{
	(void)state;
	struct buf in = BUF_INIT;
	struct smtp_reply r;
	smtp_reply_init(&r);
	feed(&in, "550 5.1.10 null MX\r\n");
	smtp_reply_take(&in, &r);
	assert_string_equal(r.enhanced, "5.1.10");
	/* the class must match the reply's */
	feed(&in, "450 5.1.1 confused\r\n");
	smtp_reply_take(&in, &r);
	assert_string_equal(r.enhanced, "");
	feed(&in, "250 2.0.0x\r\n");
	smtp_reply_take(&in, &r);
	assert_string_equal(r.enhanced, "");
	assert_string_equal(smtp_reply_default_enhanced(451), "4.0.0");
	assert_string_equal(smtp_reply_default_enhanced(554), "5.0.0");
	buf_free(&in);
	smtp_reply_free(&r);
}

static void test_ehlo_keywords(void **state)
{
	(void)state;
	struct buf in = BUF_INIT;
	struct smtp_reply r;
	smtp_reply_init(&r);
	feed(&in, "250-mx.example PIPELINING says hi\r\n250-pipelining\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
	          "250-DSN\r\n250-STARTTLS\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n");
	assert_int_equal(smtp_reply_take(&in, &r), SMTP_LINE_COMPLETE);
	struct smtp_ehlo e;
	smtp_ehlo_parse(&r, &e);
	assert_true(e.pipelining && e.size && e.eightbitmime && e.dsn && e.starttls && e.smtputf8 && e.chunking);
	assert_int_equal(e.size_limit, 52428800);
	assert_string_equal(e.keywords, "PIPELINING,SIZE,8BITMIME,DSN,STARTTLS,CHUNKING,SMTPUTF8");

	feed(&in, "250 mx.example STARTTLS\r\n"); /* the greeting line is no keyword */
	smtp_reply_take(&in, &r);
	smtp_ehlo_parse(&r, &e);
	assert_false(e.starttls);
	assert_false(e.chunking);
	assert_string_equal(e.keywords, "");
	buf_free(&in);
	smtp_reply_free(&r);
}

static void assert_encoded(const char *body, const char *content)
{
	struct buf out = BUF_INIT;
	buf_puts(&out, "kept");
	assert_int_equal(smtp_body_encode(body, strlen(body), &out), strlen(content));
	assert_string_equal(buf_cstr(&out) + 4, content);
	buf_free(&out);
}

static void test_body_encoding(void **state)
{
	(void)state;
	assert_encoded("a\nb\n", "a\r\nb\r\n");
	assert_encoded("a\r\nb\r\n", "a\r\nb\r\n");
	assert_encoded("no end", "no end\r\n");
	assert_encoded(".\n..\n.x\nx.\n", ".\r\n..\r\n.x\r\nx.\r\n"); /* BDAT: no stuffing */
	assert_encoded("", "");
	assert_encoded("\n\n", "\r\n\r\n");
	/* a lone CR inside a line is text, not a line end */
	assert_encoded("a\rb\n", "a\rb\r\n");
}

struct pieces {
	struct buf all;
	int calls;
};

static void collect(void *arg, const void *data, size_t len)
{
	struct pieces *p = arg;
	buf_append(&p->all, data, len);
	p->calls++;
}

static void assert_stuffed(const char *content, const char *wire, int calls)
{
	struct pieces p = {BUF_INIT, 0};
	smtp_body_dot_stuff(content, strlen(content), collect, &p);
	assert_string_equal(buf_cstr(&p.all), wire);
	assert_int_equal(p.calls, calls);
	buf_free(&p.all);
}

static void test_dot_stuffing(void **state)
{
	(void)state;
	/* no line begins with a dot: the content in one piece */
	assert_stuffed("a\r\nb.\r\n", "a\r\nb.\r\n", 1);
	assert_stuffed(".\r\n..\r\n.x\r\nx.\r\n", "..\r\n...\r\n..x\r\nx.\r\n", 7);
	assert_stuffed("a\r\n.\r\n", "a\r\n..\r\n", 3);
	assert_stuffed("", "", 1);
	/* a dot after a lone CR is inside a line */
	assert_stuffed("a\r.b\r\n", "a\r.b\r\n", 1);
}

static void test_xtext(void **state)
{
	(void)state;
	struct buf out = BUF_INIT;
	smtp_xtext_append(&out, "a+b=c d@x");
	assert_string_equal(buf_cstr(&out), "a+2Bb+3Dc+20d@x");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_and_multiline_replies),
	    cmocka_unit_test(test_bad_replies),
	    cmocka_unit_test(test_enhanced_codes),
	    cmocka_unit_test(test_ehlo_keywords),
	    cmocka_unit_test(test_body_encoding),
	    cmocka_unit_test(test_dot_stuffing),
	    cmocka_unit_test(test_xtext),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
