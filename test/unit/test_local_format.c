/* test_local_format.c: unit tests of the local agent's pure text: the
 * mbox From line, the mbox form of a message (Return-Path, Delivered-To,
 * LF line ends, >From quoting, the closing blank line), the Delivered-To
 * loop check and the file-destination macros. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "local/local.h"

static void test_from_line(void **state)
{
	(void)state;
	struct buf out = BUF_INIT;
	setenv("TZ", "UTC", 1);
	local_format_from_line(&out, "a@example.org", 0);
	assert_string_equal(buf_cstr(&out), "From a@example.org Thu Jan  1 00:00:00 1970\n");
	buf_reset(&out);
	local_format_from_line(&out, "", 86400 * 10);
	assert_string_equal(buf_cstr(&out), "From MAILER-DAEMON Sun Jan 11 00:00:00 1970\n");
	buf_free(&out);
}

static void test_mbox_body_quotes_and_ends_with_a_blank_line(void **state)
{
	(void)state;
	struct buf out = BUF_INIT;
	const char *body = "Subject: x\r\n\r\nFrom here\r\n>From there\r\nFromage\r\n From indented\r\nno newline";
	local_format_mbox_body(&out, "s@example.org", "u@local", body, strlen(body));
	assert_string_equal(buf_cstr(&out), "Return-Path: <s@example.org>\nDelivered-To: u@local\nSubject: x\n\n"
	                                    ">From here\n>From there\nFromage\n From indented\nno newline\n\n");
	buf_reset(&out);
	local_format_mbox_body(&out, "", "u@local", "", 0);
	assert_string_equal(buf_cstr(&out), "Return-Path: <>\nDelivered-To: u@local\n\n");
	buf_free(&out);
}

static void test_delivered_to_loop_check(void **state)
{
	(void)state;
	const char *body = "Received: x\r\nDelivered-To:  User@Local \r\nSubject: y\r\n\r\nDelivered-To: other@local\r\n";
	assert_true(local_format_has_delivered_to(body, strlen(body), "user@local"));
	assert_false(local_format_has_delivered_to(body, strlen(body), "other@local")); /* in the body */
	assert_false(local_format_has_delivered_to(body, strlen(body), "user@localhost"));
}

static void test_path_macros(void **state)
{
	(void)state;
	struct buf out = BUF_INIT, err = BUF_INIT;
	assert_true(local_format_path("/var/mail/$user", "root", "example.org", &out, &err));
	assert_string_equal(buf_cstr(&out), "/var/mail/root");
	assert_true(local_format_path("/srv/${domain}/$user.d/in", "bob", "example.org", &out, &err));
	assert_string_equal(buf_cstr(&out), "/srv/example.org/bob.d/in");
	assert_false(local_format_path("/var/mail/$from", "root", "d", &out, &err));
	assert_non_null(strstr(buf_cstr(&err), "only $user and $domain"));
	buf_reset(&err);
	assert_false(local_format_path("/var/mail/$user", "../etc", "d", &out, &err));
	assert_false(local_format_path("/var/mail/$user", "a/b", "d", &out, &err));
	assert_false(local_format_path("relative/$user", "a", "d", &out, &err));
	assert_false(local_format_path("/x/${user", "a", "d", &out, &err));
	buf_free(&out);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_from_line),
	    cmocka_unit_test(test_mbox_body_quotes_and_ends_with_a_blank_line),
	    cmocka_unit_test(test_delivered_to_loop_check),
	    cmocka_unit_test(test_path_macros),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
