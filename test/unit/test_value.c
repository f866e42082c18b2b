/* test_value.c: unit tests of the configuration value parsers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "value.h"

static void assert_size(const char *text, uint64_t expected)
{
	uint64_t v = 0;
	const char *why = NULL;
	if (!value_parse_size(text, &v, &why))
		fail_msg("size %s: %s", text, why);
	assert_true(v == expected);
}

/* why is passed by address: it is read only after the parser ran. */
static void assert_bad(bool ok, const char *const *why, const char *expected_why)
{
	assert_false(ok);
	assert_string_equal(*why, expected_why);
}

static void assert_interval(const char *text, int64_t expected)
{
	int64_t v = -1;
	const char *why = NULL;
	if (!value_parse_interval(text, &v, &why))
		fail_msg("interval %s: %s", text, why);
	assert_true(v == expected);
}

static void test_bool(void **state)
{
	(void)state;
	bool b;
	const char *why = NULL;
	assert_true(value_parse_bool("yes", &b, &why) && b);
	assert_true(value_parse_bool("TRUE", &b, &why) && b);
	assert_true(value_parse_bool("no", &b, &why) && !b);
	assert_true(value_parse_bool("false", &b, &why) && !b);
	assert_bad(value_parse_bool("maybe", &b, &why), &why, "expected yes or no");
	assert_bad(value_parse_bool("", &b, &why), &why, "expected yes or no");
}

static void test_size(void **state)
{
	(void)state;
	const char *why = NULL;
	uint64_t v;
	assert_size("0", 0);
	assert_size("1024", 1024);
	assert_size("10b", 10);
	assert_size("40K", 40 * 1024);
	assert_size("50M", 50ULL << 20);
	assert_size("50mb", 50ULL << 20);
	assert_size("1G", 1ULL << 30);
	assert_size("2t", 2ULL << 40);
	assert_size("unlimited", VALUE_UNLIMITED);
	assert_bad(value_parse_size("50X", &v, &why), &why, "expected a size such as 512k, 50M, 1G or unlimited");
	assert_bad(value_parse_size("1.5G", &v, &why), &why, "expected a size such as 512k, 50M, 1G or unlimited");
	assert_bad(value_parse_size("-1", &v, &why), &why, "expected a number");
	assert_bad(value_parse_size("", &v, &why), &why, "expected a number");
	assert_bad(value_parse_size("99999999999999999999", &v, &why), &why, "number too large");
	assert_bad(value_parse_size("9999999999t", &v, &why), &why, "value too large");
}

static void test_interval(void **state)
{
	(void)state;
	const char *why = NULL;
	int64_t v;
	assert_interval("300s", 300);
	assert_interval("300", 300);
	assert_interval("10m", 600);
	assert_interval("4d12h", 4 * 86400 + 12 * 3600);
	assert_interval("1w2d12h", 7 * 86400 + 2 * 86400 + 12 * 3600);
	assert_interval("0", 0);
	assert_interval("never", VALUE_NEVER);
	assert_interval("NEVER", VALUE_NEVER);
	assert_bad(value_parse_interval("10x", &v, &why), &why, "unknown time unit (use w, d, h, m or s)");
	assert_bad(value_parse_interval("1h30", &v, &why), &why, "unknown time unit (use w, d, h, m or s)");
	assert_bad(value_parse_interval("30m1h", &v, &why), &why,
	           "time units must each appear once, largest first (as in 1w2d12h)");
	assert_bad(value_parse_interval("1h1h", &v, &why), &why,
	           "time units must each appear once, largest first (as in 1w2d12h)");
	assert_bad(value_parse_interval("", &v, &why), &why, "expected a time interval such as 30s, 10m, 4h or 1w2d");
	assert_bad(value_parse_interval("soon", &v, &why), &why, "expected a number");
	assert_bad(value_parse_interval("99999999999999w", &v, &why), &why, "value too large");
}

static void test_interval_list(void **state)
{
	(void)state;
	struct value_interval_list list;
	const char *why = NULL;
	assert_true(value_parse_interval_list("10m,10m,1h,4h,12h", &list, &why));
	assert_int_equal(list.count, 5);
	assert_true(list.seconds[0] == 600 && list.seconds[2] == 3600 && list.seconds[4] == 43200);
	assert_true(value_parse_interval_list("10m, 1h", &list, &why));
	assert_int_equal(list.count, 2);
	assert_true(value_parse_interval_list("1m", &list, &why));
	assert_int_equal(list.count, 1);
	assert_bad(value_parse_interval_list("10m,,1h", &list, &why), &why, "empty item in list");
	assert_bad(value_parse_interval_list("10m,", &list, &why), &why, "empty item in list");
	assert_bad(value_parse_interval_list("10m,never", &list, &why), &why,
	           "\"never\" is not allowed in an interval list");
	assert_bad(value_parse_interval_list("10m,1y", &list, &why), &why, "unknown time unit (use w, d, h, m or s)");
}

static void test_rate(void **state)
{
	(void)state;
	struct value_rate r;
	const char *why = NULL;
	assert_true(value_parse_rate("83/10m", false, &r, &why));
	assert_true(r.count == 83 && r.per_seconds == 600);
	assert_true(value_parse_rate("500/h", false, &r, &why));
	assert_true(r.count == 500 && r.per_seconds == 3600);
	assert_true(value_parse_rate("10/min", false, &r, &why));
	assert_true(r.count == 10 && r.per_seconds == 60);
	assert_true(value_parse_rate("1000/day", false, &r, &why));
	assert_true(r.count == 1000 && r.per_seconds == 86400);
	assert_true(value_parse_rate("5/sec", false, &r, &why));
	assert_true(r.count == 5 && r.per_seconds == 1);
	assert_true(value_parse_rate("unlimited", false, &r, &why));
	assert_true(r.count == VALUE_UNLIMITED);
	assert_true(value_parse_rate("0", false, &r, &why));
	assert_true(r.count == VALUE_UNLIMITED);
	assert_true(value_parse_rate("10g/2h", true, &r, &why));
	assert_true(r.count == (10ULL << 30) && r.per_seconds == 7200);
	assert_bad(value_parse_rate("10g/2h", false, &r, &why), &why, "expected a whole number");
	assert_bad(value_parse_rate("500", false, &r, &why), &why,
	           "expected a rate such as 500/h, 83/10m or unlimited");
	assert_bad(value_parse_rate("500/fortnight", false, &r, &why), &why,
	           "expected a rate such as 500/h, 83/10m or unlimited");
	assert_bad(value_parse_rate("500/0h", false, &r, &why), &why, "rate period must not be zero");
	assert_bad(value_parse_rate("/h", false, &r, &why), &why, "expected a rate such as 500/h, 83/10m or unlimited");
}

static void test_format(void **state)
{
	(void)state;
	char out[64];
	value_format_size(50ULL << 20, out, sizeof(out));
	assert_string_equal(out, "50M");
	value_format_size(1000, out, sizeof(out));
	assert_string_equal(out, "1000");
	value_format_size(VALUE_UNLIMITED, out, sizeof(out));
	assert_string_equal(out, "unlimited");
	value_format_interval(4 * 86400 + 12 * 3600, out, sizeof(out));
	assert_string_equal(out, "4d12h");
	value_format_interval(600, out, sizeof(out));
	assert_string_equal(out, "10m");
	value_format_interval(VALUE_NEVER, out, sizeof(out));
	assert_string_equal(out, "never");
	value_format_interval(0, out, sizeof(out));
	assert_string_equal(out, "0s");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bool),          cmocka_unit_test(test_size), cmocka_unit_test(test_interval),
	    cmocka_unit_test(test_interval_list), cmocka_unit_test(test_rate), cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
