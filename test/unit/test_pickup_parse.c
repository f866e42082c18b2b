/* test_pickup_parse.c: unit tests of pickup's pure parsers - the
 * x-sender / x-receiver envelope of a pickup file (PowerMTA's format, as
 * tern-sendmail writes it), the message's normalisation (line ends,
 * pickup-remove-dot, the header section) and the <source {pickup}> header
 * rules (X-Virtual-MTA, the job header, Date, remove-header). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parsers are compiled in: they are pure functions. */
#include "pickup/pickup_parse.c"

#define HOST "host.test"

static void parse_ok(const char *text, struct pickup_envelope *e)
{
	struct buf why = BUF_INIT;
	if (!pickup_parse_envelope(text, strlen(text), HOST, e, &why))
		fail_msg("%s: %s", text, buf_cstr(&why));
	buf_free(&why);
}

/* The file is refused with a reason that contains words. */
static void parse_bad(const char *text, size_t len, const char *words)
{
	struct pickup_envelope e;
	struct buf why = BUF_INIT;
	if (pickup_parse_envelope(text, len, HOST, &e, &why))
		fail_msg("accepted %s", text);
	if (strstr(buf_cstr(&why), words) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", buf_cstr(&why), words);
	pickup_envelope_free(&e);
	buf_free(&why);
}

/* Literals may hold NUL bytes: their length is the array's. */
#define PARSE_BAD(text, words) parse_bad(text, sizeof(text) - 1, words)

static void test_envelope_as_tern_sendmail_writes_it(void **state)
{
	const char *text = "x-sender: cron@example.org\nx-receiver: a@example.net\nx-receiver: b@example.net\n"
	                   "From: cron@example.org\n\nbody\n";
	struct pickup_envelope e;
	parse_ok(text, &e);
	assert_string_equal(e.sender, "cron@example.org");
	assert_int_equal(e.nrcpts, 2);
	assert_string_equal(e.rcpts[0], "a@example.net");
	assert_string_equal(e.rcpts[1], "b@example.net");
	assert_null(e.envid);
	assert_null(e.vmta);
	assert_string_equal(text + e.message_offset, "From: cron@example.org\n\nbody\n");
	pickup_envelope_free(&e);
}

static void test_envelope_powermta_forms(void **state)
{
	const char *text = "X-Sender: <bounce@example.org>\r\nX-RECEIVER:  <a@example.net> \r\n"
	                   "x-envid: abc123\r\nX-Virtual-MTA: vmta-1\r\nSubject: x\r\n\r\nbody\r\n";
	struct pickup_envelope e;
	parse_ok(text, &e);
	assert_string_equal(e.sender, "bounce@example.org");
	assert_string_equal(e.rcpts[0], "a@example.net");
	assert_string_equal(e.envid, "abc123");
	assert_string_equal(e.vmta, "vmta-1");
	assert_string_equal(text + e.message_offset, "Subject: x\r\n\r\nbody\r\n");
	pickup_envelope_free(&e);
}

static void test_envelope_null_sender_and_local_parts(void **state)
{
	struct pickup_envelope e;
	parse_ok("x-sender: <>\nx-receiver: root\n\nx\n", &e);
	assert_string_equal(e.sender, "");
	assert_string_equal(e.rcpts[0], "root@" HOST);
	pickup_envelope_free(&e);
	parse_ok("x-sender:\nx-receiver: <postmaster>\n", &e);
	assert_string_equal(e.sender, "");
	assert_string_equal(e.rcpts[0], "postmaster@" HOST);
	assert_int_equal(e.message_offset, strlen("x-sender:\nx-receiver: <postmaster>\n"));
	pickup_envelope_free(&e);
	parse_ok("x-sender: cron\nx-receiver: \"a b\"@example.net\n", &e);
	assert_string_equal(e.sender, "cron@" HOST);
	assert_string_equal(e.rcpts[0], "\"a b\"@example.net");
	pickup_envelope_free(&e);
}

static void test_envelope_refusals(void **state)
{
	PARSE_BAD("x-sender: a@example.org\nSubject: x\n\nx\n", "no x-receiver line");
	PARSE_BAD("x-receiver: a@example.org\n\nx\n", "no x-sender line");
	PARSE_BAD("Subject: x\n\nx\n", "not a pickup file");
	PARSE_BAD("", "not a pickup file");
	parse_bad("\x01\x02\xff\xfe", 4, "not a pickup file");
	PARSE_BAD("x-sender: a@b.c\nx-sender: d@e.f\nx-receiver: g@h.i\n", "more than one x-sender");
	PARSE_BAD("x-sender: a@b.c\nx-receiver: not an address@@\n", "bad x-receiver address");
	PARSE_BAD("x-sender: a@b.c\nx-receiver: <>\n", "bad x-receiver address");
	PARSE_BAD("x-sender: a@@b\nx-receiver: a@b.c\n", "bad x-sender address");
	PARSE_BAD("x-sender: a@b.c\nx-receiver: a@b.c\x01\n", "control characters");
	PARSE_BAD("x-sender: a@b.c\nx-receiver: a@b.c\nx-virtual-mta: a/b\n", "bad x-virtual-mta");
	PARSE_BAD("x-sender: a@b.c\nx-receiver: a@b.c\nx-envid:\n", "bad x-envid");
	/* a NUL cut into an address is not the end of it */
	PARSE_BAD("x-sender: a@b.c\nx-receiver: a@b.c\0x\n", "x-receiver");
}

static void test_envelope_line_too_long(void **state)
{
	struct buf text = BUF_INIT;
	buf_puts(&text, "x-sender: a@b.c\nx-receiver: ");
	for (int i = 0; i < 1100; i++)
		buf_putc(&text, 'a');
	buf_puts(&text, "@b.c\n");
	parse_bad(text.data, text.len, "too long");
	buf_free(&text);
}

/* ---- the message ----------------------------------------------------------------- */

static void normalize_ok(const char *in, bool remove_dot, const char *want)
{
	struct buf out = BUF_INIT, why = BUF_INIT;
	if (!pickup_normalize_message(in, strlen(in), remove_dot, &out, &why))
		fail_msg("%s: %s", in, buf_cstr(&why));
	assert_string_equal(buf_cstr(&out), want);
	buf_free(&out);
	buf_free(&why);
}

static void normalize_bad(const char *in, size_t len, const char *words)
{
	struct buf out = BUF_INIT, why = BUF_INIT;
	if (pickup_normalize_message(in, len, false, &out, &why))
		fail_msg("accepted %s", in);
	if (strstr(buf_cstr(&why), words) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", buf_cstr(&why), words);
	buf_free(&out);
	buf_free(&why);
}

#define NORMALIZE_BAD(text, words) normalize_bad(text, sizeof(text) - 1, words)

static void test_message_line_ends(void **state)
{
	normalize_ok("Subject: x\n\nbody\n", false, "Subject: x\r\n\r\nbody\r\n");
	normalize_ok("Subject: x\r\n\r\nbody\r\n", false, "Subject: x\r\n\r\nbody\r\n");
	normalize_ok("Subject: x\n\nno final newline", false, "Subject: x\r\n\r\nno final newline\r\n");
	normalize_ok("Subject: a\n b\n\tc\n\nbody\n", false, "Subject: a\r\n b\r\n\tc\r\n\r\nbody\r\n");
	normalize_ok("", false, "");
}

static void test_message_remove_dot(void **state)
{
	normalize_ok("Subject: x\n\n..a\n.\nb\n", true, "Subject: x\r\n\r\n.a\r\n\r\nb\r\n");
	normalize_ok("Subject: x\n\n..a\n", false, "Subject: x\r\n\r\n..a\r\n");
}

static void test_message_without_header(void **state)
{
	normalize_ok("disk almost full\nreally\n", false, "\r\ndisk almost full\r\nreally\r\n");
	normalize_ok(" indented first\n", false, "\r\n indented first\r\n");
	/* text after headers but before a blank line starts the body */
	normalize_ok("Subject: x\nno header here\n", false, "Subject: x\r\n\r\nno header here\r\n");
	/* 8-bit text is allowed in the header section and the body */
	normalize_ok("Subject: \xc3\xa9t\xc3\xa9\n\n\xc3\xa9\n", false,
	             "Subject: \xc3\xa9t\xc3\xa9\r\n\r\n\xc3\xa9\r\n");
}

static void test_message_refusals(void **state)
{
	NORMALIZE_BAD("Subject: x\n\nbody\0more\n", "NUL");
	NORMALIZE_BAD("Subject: x\n\nbare\rcr\n", "bare CR");
	NORMALIZE_BAD("\x01\x02junk\n\nbody\n", "binary data where the header section should be");
	NORMALIZE_BAD("Subject: x\x1b[31m\n\nbody\n", "control characters in the header section");
	NORMALIZE_BAD("Subject: x\n\x01garbage\n\nbody\n", "binary data");
}

/* ---- header rules ------------------------------------------------------------------ */

static void filter(const char *in, const struct pickup_header_rules *r, const char *want, struct pickup_headers *found)
{
	struct buf out = BUF_INIT, why = BUF_INIT;
	if (!pickup_filter_headers(in, strlen(in), r, &out, found, &why))
		fail_msg("%s: %s", in, buf_cstr(&why));
	assert_string_equal(buf_cstr(&out), want);
	buf_free(&out);
	buf_free(&why);
}

static void test_headers_virtual_mta_and_job(void **state)
{
	const char *in = "X-Virtual-MTA: v1\r\nX-Job:\r\n  job-7 \r\nSubject: x\r\n\r\nX-Job: body\r\n";
	struct pickup_header_rules r = {.process_x_vmta = true, .process_x_job = true};
	struct pickup_headers found;
	filter(in, &r, "Subject: x\r\n\r\nX-Job: body\r\n", &found);
	assert_string_equal(found.vmta, "v1");
	assert_string_equal(found.job, "job-7");
	assert_false(found.has_date);
	pickup_headers_free(&found);
	/* retained, or not processed at all */
	r.retain_x_vmta = r.retain_x_job = true;
	filter(in, &r, in, &found);
	assert_string_equal(found.vmta, "v1");
	pickup_headers_free(&found);
	struct pickup_header_rules none = {0};
	filter(in, &none, in, &found);
	assert_null(found.vmta);
	assert_null(found.job);
	pickup_headers_free(&found);
	/* another job header name */
	struct pickup_header_rules mine = {.process_x_job = true, .jobid_header = "X-Campaign"};
	filter("X-Campaign: c1\r\nX-Job: j\r\n\r\n", &mine, "X-Job: j\r\n\r\n", &found);
	assert_string_equal(found.job, "c1");
	pickup_headers_free(&found);
}

static void test_headers_date_message_id_and_removal(void **state)
{
	const char *remove[] = {"X-Secret"};
	struct pickup_header_rules r = {.remove = remove, .nremove = 1};
	struct pickup_headers found;
	filter("Date: now\r\nMessage-ID: <a@b>\r\nx-secret: s\r\n\tmore\r\n\r\nbody\r\n", &r,
	       "Date: now\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n", &found);
	assert_true(found.has_date);
	assert_true(found.has_message_id);
	pickup_headers_free(&found);
	r.drop_date = true; /* add-date-header override */
	filter("Date: then\r\n\r\nbody\r\n", &r, "\r\nbody\r\n", &found);
	assert_false(found.has_date);
	pickup_headers_free(&found);
	/* a message without a header section is left alone */
	filter("\r\nDate: body\r\n", &r, "\r\nDate: body\r\n", &found);
	pickup_headers_free(&found);
}

static void test_headers_unusable(void **state)
{
	struct pickup_header_rules r = {.process_x_vmta = true};
	struct pickup_headers found;
	struct buf out = BUF_INIT, why = BUF_INIT;
	const char *in = "X-Virtual-MTA: a/b\r\n\r\n";
	assert_false(pickup_filter_headers(in, strlen(in), &r, &out, &found, &why));
	assert_non_null(strstr(buf_cstr(&why), "X-Virtual-MTA"));
	pickup_headers_free(&found);
	buf_free(&out);
	buf_free(&why);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_envelope_as_tern_sendmail_writes_it),
	    cmocka_unit_test(test_envelope_powermta_forms),
	    cmocka_unit_test(test_envelope_null_sender_and_local_parts),
	    cmocka_unit_test(test_envelope_refusals),
	    cmocka_unit_test(test_envelope_line_too_long),
	    cmocka_unit_test(test_message_line_ends),
	    cmocka_unit_test(test_message_remove_dot),
	    cmocka_unit_test(test_message_without_header),
	    cmocka_unit_test(test_message_refusals),
	    cmocka_unit_test(test_headers_virtual_mta_and_job),
	    cmocka_unit_test(test_headers_date_message_id_and_removal),
	    cmocka_unit_test(test_headers_unusable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
