/* test_acctd_fields.c: unit tests of the accounting CSV code acctd and
 * ternctl share: RFC 4180 quoting, record types, the `*` defaults, field
 * selection (extra, !removed, header_), the union of a file's columns,
 * rows with the columns a type does not have left empty, times and
 * header values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acct_fields.h"
#include "buf.h"
#include "csv.h"
#include "ipc.h"

#define DBT_HEADER                                                                                                     \
	"type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,srcType,srcMta,"      \
	"dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,envId,queue,vmtaPool"

static void assert_field(const char *value, const char *expected)
{
	struct buf out = BUF_INIT;
	csv_put_field(&out, true, value, strlen(value));
	assert_string_equal(buf_cstr(&out), expected);
	buf_free(&out);
}

static void test_quoting(void **state)
{
	(void)state;
	assert_field("plain", "plain");
	assert_field("", "");
	assert_field("a,b", "\"a,b\"");
	assert_field("say \"hi\"", "\"say \"\"hi\"\"\"");
	assert_field("two\r\nlines", "\"two\r\nlines\"");
	assert_field("lf\nonly", "\"lf\nonly\"");
	assert_field("cr\ronly", "\"cr\ronly\"");
	assert_field(" spaces stay ", " spaces stay ");
	struct buf row = BUF_INIT;
	csv_put_field(&row, true, "a", 1);
	csv_put_field(&row, false, "", 0);
	csv_put_field(&row, false, "c,d", 3);
	csv_end_row(&row);
	assert_string_equal(buf_cstr(&row), "a,,\"c,d\"\r\n");
	buf_free(&row);
}

static void test_types(void **state)
{
	(void)state;
	enum acct_type t;
	assert_true(acct_type_parse("d", &t) && t == ACCT_D);
	assert_true(acct_type_parse("Delivery", &t) && t == ACCT_D);
	assert_true(acct_type_parse("transient-queue", &t) && t == ACCT_TQ);
	assert_true(acct_type_parse("receipt", &t) && t == ACCT_R);
	assert_false(acct_type_parse("x", &t));
	assert_string_equal(acct_type_name(ACCT_TQ), "tq");
	char *names[] = {"d", "receipt", "nonsense", "TQ"};
	assert_int_equal(acct_type_mask(names, 4), (1u << ACCT_D) | (1u << ACCT_R) | (1u << ACCT_TQ));
	assert_int_equal(acct_type_mask(names, 0), 0);
	assert_string_equal(acct_field_canonical("DLVTLSPROTOCOL"), "dlvTlsProtocol");
	assert_null(acct_field_canonical("dlvTlsProtocl"));
	assert_true(acct_field_is_header("header_X-Job"));
	assert_false(acct_field_is_header("header_"));
	assert_false(acct_field_is_header("header_a:b"));
}

/* The header line of a layout built from (type, items...) groups. */
static char *header_of(struct acct_layout *l)
{
	struct buf out = BUF_INIT;
	acct_layout_header(l, &out);
	assert_true(out.len >= 2 && strcmp(out.data + out.len - 2, "\r\n") == 0);
	buf_truncate(&out, out.len - 2);
	return buf_detach(&out);
}

static void add(struct acct_layout *l, enum acct_type type, const char *const *items, size_t n)
{
	struct buf err = BUF_INIT;
	if (!acct_layout_add_type(l, type, items, n, &err))
		fail_msg("%s", buf_cstr(&err));
	buf_free(&err);
}

static void test_defaults(void **state)
{
	(void)state;
	struct acct_layout l;
	acct_layout_init(&l);
	add(&l, ACCT_D, NULL, 0);
	add(&l, ACCT_B, NULL, 0);
	char *h = header_of(&l);
	assert_string_equal(h, DBT_HEADER);
	free(h);
	acct_layout_free(&l);

	/* The DESIGN.md file. */
	static const char *const tls[] = {"*", "dlvTlsProtocol", "dlvTlsCipher"};
	acct_layout_init(&l);
	add(&l, ACCT_D, tls, 3);
	add(&l, ACCT_B, tls, 3);
	h = header_of(&l);
	assert_string_equal(h, DBT_HEADER ",dlvTlsProtocol,dlvTlsCipher");
	free(h);
	acct_layout_free(&l);

	acct_layout_init(&l);
	add(&l, ACCT_T, NULL, 0);
	add(&l, ACCT_TQ, NULL, 0);
	add(&l, ACCT_R, NULL, 0);
	h = header_of(&l);
	assert_string_equal(h, DBT_HEADER ",rcvSourceIp,rcvSmtpUser");
	free(h);
	acct_layout_free(&l);
}

static void test_selection_and_union(void **state)
{
	(void)state;
	/* The guide's example. */
	static const char *const d[] = {"timeLogged", "orig", "rcpt", "dlvSourceIp"};
	static const char *const b[] = {"timeLogged", "orig", "rcpt", "bounceCat"};
	struct acct_layout l;
	acct_layout_init(&l);
	add(&l, ACCT_D, d, 4);
	add(&l, ACCT_B, b, 4);
	char *h = header_of(&l);
	assert_string_equal(h, "type,timeLogged,orig,rcpt,dlvSourceIp,bounceCat");
	free(h);
	acct_layout_free(&l);

	/* Order as listed, duplicates once, removal, type always first,
	 * names in tern's spelling, headers as written. */
	static const char *const r[] = {"jobId", "DSNDIAG", "*", "!rcpt", "!orcpt", "jobid", "HEADER_X-Job", "type"};
	acct_layout_init(&l);
	add(&l, ACCT_R, r, 8);
	h = header_of(&l);
	assert_string_equal(h, "type,jobId,dsnDiag,timeLogged,orig,srcType,srcMta,rcvSourceIp,rcvSmtpUser,vmta,"
	                       "envId,header_X-Job");
	free(h);
	struct buf names = BUF_INIT;
	acct_layout_header_names(&l, &names);
	assert_string_equal(buf_cstr(&names), "X-Job");
	buf_free(&names);
	acct_layout_free(&l);
}

static void test_selection_errors(void **state)
{
	(void)state;
	static const char *const bad[] = {"*", "dlvTlsProtocl"};
	struct acct_layout l;
	struct buf err = BUF_INIT;
	acct_layout_init(&l);
	assert_false(acct_layout_add_type(&l, ACCT_D, bad, 2, &err));
	assert_string_equal(buf_cstr(&err), "unknown accounting field \"dlvTlsProtocl\"");
	buf_reset(&err);
	add(&l, ACCT_B, NULL, 0);
	assert_false(acct_layout_add_type(&l, ACCT_B, NULL, 0, &err));
	assert_string_equal(buf_cstr(&err), "record type b is listed twice");
	buf_free(&err);
	acct_layout_free(&l);
}

/* Decodes a record frame built with the writer, as acctd receives it. */
static void make_record(struct ipc_msg *msg, const char *type, const char *rcpt, const char *cat, int64_t logged)
{
	struct buf frame = BUF_INIT, payload = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "record");
	ipc_put_int(&w, IPC_ATTR_SEQ, 1);
	ipc_put_str(&w, IPC_ATTR_RECORD_TYPE, type);
	ipc_put_str(&w, IPC_ATTR_ACCT_RCPT, rcpt);
	ipc_put_str(&w, IPC_ATTR_ACCT_BOUNCE_CAT, cat);
	ipc_put_int(&w, IPC_ATTR_ACCT_TIME_LOGGED, logged);
	ipc_put_int(&w, IPC_ATTR_ACCT_TIME_QUEUED, logged - 90);
	ipc_put_str(&w, IPC_ATTR_ACCT_HEADERS, "Subject: hi,\r\n\tthere\r\nX-Job: 7\r\n");
	assert_true(ipc_write_end(&w, &err));
	assert_int_equal(ipc_frame_take(&frame, 0, &payload, &err), IPC_FRAME_COMPLETE);
	assert_true(ipc_decode(payload.data, payload.len, acct_record_spec, acct_record_spec_count, msg, &err));
	buf_free(&frame);
	buf_free(&payload);
	buf_free(&err);
}

static void test_rows(void **state)
{
	(void)state;
	static const char *const d[] = {"timeLogged", "rcpt", "totalSecondsQueued", "header_subject", "userString"};
	static const char *const b[] = {"timeLogged", "rcpt", "bounceCat"};
	struct acct_layout l;
	acct_layout_init(&l);
	add(&l, ACCT_D, d, 5);
	add(&l, ACCT_B, b, 3);
	struct ipc_msg rec;
	make_record(&rec, "d", "a@example.com", "ignored for d", 1795880000);
	struct acct_format unix_times = {false, "u, s"};
	struct buf out = BUF_INIT;
	acct_layout_row(&l, ACCT_D, &rec, &unix_times, &out);
	assert_string_equal(buf_cstr(&out), "d,1795880000,a@example.com,90,\"hi, there\",\"u, s\",\r\n");
	ipc_msg_free(&rec);

	buf_reset(&out);
	make_record(&rec, "b", "b@example.com", "bad-mailbox", 1795880000);
	acct_layout_row(&l, ACCT_B, &rec, &unix_times, &out);
	assert_string_equal(buf_cstr(&out), "b,1795880000,b@example.com,,,,bad-mailbox\r\n");
	ipc_msg_free(&rec);
	buf_free(&out);
	acct_layout_free(&l);
}

static void test_times(void **state)
{
	(void)state;
	setenv("TZ", "UTC", 1);
	tzset();
	struct buf out = BUF_INIT;
	acct_format_time(1795880000, true, &out);
	assert_string_equal(buf_cstr(&out), "2026-11-28 15:33:20+0000");
	buf_reset(&out);
	acct_format_time(1795880000, false, &out);
	assert_string_equal(buf_cstr(&out), "1795880000");
	/* Local time with its offset, as PowerMTA writes it. */
	setenv("TZ", "CET-1", 1);
	tzset();
	buf_reset(&out);
	acct_format_time(1795880000, true, &out);
	assert_string_equal(buf_cstr(&out), "2026-11-28 16:33:20+0100");
	setenv("TZ", "UTC", 1);
	tzset();
	buf_free(&out);
}

static void test_header_values(void **state)
{
	(void)state;
	const char *headers = "From: a@b\r\nSubject: one\r\n two\r\n\tthree\r\nX-Empty:\r\nsubject: second\r\n";
	struct buf out = BUF_INIT;
	assert_true(acct_header_value(headers, "SUBJECT", &out));
	assert_string_equal(buf_cstr(&out), "one two three");
	buf_reset(&out);
	assert_true(acct_header_value(headers, "X-Empty", &out));
	assert_string_equal(buf_cstr(&out), "");
	assert_false(acct_header_value(headers, "Subj", &out));
	assert_false(acct_header_value(headers, "To", &out));
	assert_true(acct_header_value("From: x\nTo: y", "To", &out));
	assert_string_equal(buf_cstr(&out), "y");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_quoting),
	    cmocka_unit_test(test_types),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_selection_and_union),
	    cmocka_unit_test(test_selection_errors),
	    cmocka_unit_test(test_rows),
	    cmocka_unit_test(test_times),
	    cmocka_unit_test(test_header_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
