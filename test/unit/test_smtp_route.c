/* test_smtp_route.c: unit tests of static routes (smtp-hosts and route):
 * entries, preference levels, ports, literals, lookup-mx, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "smtp/smtp.h"

static void assert_hop(const char *text, const char *host, bool literal, bool lookup_mx, unsigned port)
{
	struct smtp_hop hop;
	struct buf err = BUF_INIT;
	if (!smtp_hop_parse(text, &hop, &err))
		fail_msg("%s: %s", text, buf_cstr(&err));
	assert_string_equal(hop.host, host);
	assert_int_equal(hop.literal, literal);
	assert_int_equal(hop.lookup_mx, lookup_mx);
	assert_int_equal(hop.port, port);
	free(hop.host);
	buf_free(&err);
}

static void assert_bad_hop(const char *text, const char *why)
{
	struct smtp_hop hop;
	struct buf err = BUF_INIT;
	assert_false(smtp_hop_parse(text, &hop, &err));
	if (!strstr(buf_cstr(&err), why))
		fail_msg("%s: \"%s\" does not say \"%s\"", text, buf_cstr(&err), why);
	free(hop.host);
	buf_free(&err);
}

static void test_hops(void **state)
{
	(void)state;
	assert_hop("[127.0.0.1]:2526", "127.0.0.1", true, false, 2526);
	assert_hop("[127.0.0.1]", "127.0.0.1", true, false, 0);
	assert_hop("[IPv6:2001:db8::1]:25", "2001:db8::1", true, false, 25);
	assert_hop("[::1]", "::1", true, false, 0);
	assert_hop("mx.example.com", "mx.example.com", false, false, 0);
	assert_hop("mx.example.com:2525", "mx.example.com", false, false, 2525);
	assert_hop("lookup-mx:other.example", "other.example", false, true, 0);
	assert_bad_hop("[127.0.0.1", "missing ]");
	assert_bad_hop("[300.0.0.1]", "bad address");
	assert_bad_hop("[127.0.0.1]:0", "bad port");
	assert_bad_hop("[127.0.0.1]x", "unexpected text");
	assert_bad_hop("host:99999", "bad port");
	assert_bad_hop("lookup-mx:", "missing domain");
	assert_bad_hop(":25", "missing host");
}

static void test_route_text_levels(void **state)
{
	(void)state;
	struct smtp_route route;
	struct buf err = BUF_INIT;
	assert_true(smtp_route_from_text("a.example, [10.0.0.1]:26 ; b.example;", &route, &err));
	assert_int_equal(route.nlevels, 2);
	assert_int_equal(route.counts[0], 2);
	assert_int_equal(route.counts[1], 1);
	assert_string_equal(route.levels[0][0].host, "a.example");
	assert_int_equal(route.levels[0][1].port, 26);
	assert_string_equal(route.levels[1][0].host, "b.example");
	smtp_route_free(&route);

	assert_false(smtp_route_from_text("a.example; [bad]", &route, &err));
	assert_non_null(strstr(buf_cstr(&err), "bad address"));
	buf_free(&err);
}

static void test_route_from_conf_levels(void **state)
{
	(void)state;
	char *first[] = {"[127.0.0.1]:2526", "mx.example"};
	char *second[] = {"lookup-mx:other.example"};
	struct conf_list levels[] = {{2, first}, {1, second}};
	struct smtp_route route;
	struct buf err = BUF_INIT;
	assert_true(smtp_route_from_levels(levels, 2, &route, &err));
	assert_int_equal(route.nlevels, 2);
	assert_true(route.levels[0][0].literal);
	assert_true(route.levels[1][0].lookup_mx);
	smtp_route_free(&route);
	buf_free(&err);
}

static void test_targets_are_unique(void **state)
{
	(void)state;
	struct smtp_targets t = {0};
	struct addr_ip a, b;
	addr_parse_ip("127.0.0.1", &a, NULL);
	addr_parse_ip("127.0.0.2", &b, NULL);
	smtp_targets_add(&t, "mx1", &a, 25);
	smtp_targets_add(&t, "mx2", &a, 25); /* same address: tried once */
	smtp_targets_add(&t, "mx2", &a, 26);
	smtp_targets_add(&t, "mx3", &b, 25);
	assert_int_equal(t.count, 3);
	assert_string_equal(t.items[0].mx, "mx1");
	smtp_targets_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hops),
	    cmocka_unit_test(test_route_text_levels),
	    cmocka_unit_test(test_route_from_conf_levels),
	    cmocka_unit_test(test_targets_are_unique),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
