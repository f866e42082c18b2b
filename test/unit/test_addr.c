/* test_addr.c: unit tests of IP, CIDR and endpoint parsing and matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "addr.h"

static struct addr_cidr cidr(const char *text)
{
	struct addr_cidr c;
	const char *why = NULL;
	if (!addr_parse_cidr(text, &c, &why))
		fail_msg("cidr %s: %s", text, why);
	return c;
}

static struct addr_ip ip(const char *text)
{
	struct addr_ip a;
	const char *why = NULL;
	if (!addr_parse_ip(text, &a, &why))
		fail_msg("ip %s: %s", text, why);
	return a;
}

static void assert_cidr_text(const char *input, const char *expected)
{
	char out[ADDR_CIDR_STRLEN];
	struct addr_cidr c = cidr(input);
	addr_cidr_format(&c, out);
	assert_string_equal(out, expected);
}

static void assert_cidr_error(const char *input, const char *reason)
{
	struct addr_cidr c;
	const char *why = NULL;
	assert_false(addr_parse_cidr(input, &c, &why));
	assert_string_equal(why, reason);
}

static void test_short_forms(void **state)
{
	(void)state;
	assert_cidr_text("10/8", "10.0.0.0/8");
	assert_cidr_text("0/0", "0.0.0.0/0");
	assert_cidr_text("173.194/16", "173.194.0.0/16");
	assert_cidr_text("10.0.0.0/8", "10.0.0.0/8");
	assert_cidr_text("192.168.1.7", "192.168.1.7");
	assert_cidr_text("192.168.1.0/24", "192.168.1.0/24");
	assert_cidr_text("2001:db8::/32", "2001:db8::/32");
	assert_cidr_text("::1", "::1");
	assert_cidr_text("::/0", "::/0");
}

static void test_cidr_errors(void **state)
{
	(void)state;
	assert_cidr_error("10.1.2.3/8", "address has bits set beyond the network mask");
	assert_cidr_error("10/33", "IPv4 mask length over 32");
	assert_cidr_error("::/129", "IPv6 mask length over 128");
	assert_cidr_error("256/8", "IPv4 octet out of range (0-255)");
	assert_cidr_error("1.2.3.4.5/32", "not a valid IPv4 address");
	assert_cidr_error("10/", "bad network mask length");
	assert_cidr_error("10/x", "bad network mask length");
	assert_cidr_error("/8", "missing address");
	assert_cidr_error("1.2.3", "not a valid IPv4 address"); /* short form needs a mask */
	assert_cidr_error("example.com", "not a valid IPv4 address");
	assert_cidr_error("fe80::zz", "not a valid IPv6 address");
	assert_cidr_error("", "missing address");
}

static void test_contains(void **state)
{
	(void)state;
	struct addr_cidr all = cidr("0/0"), ten = cidr("10/8"), google = cidr("173.194/16");
	struct addr_cidr host = cidr("127.0.0.2"), v6 = cidr("2001:db8::/32"), odd = cidr("10.0.0.128/25");
	struct addr_ip a = ip("10.200.3.4"), b = ip("173.194.77.1"), c = ip("127.0.0.2"), d = ip("127.0.0.3");
	struct addr_ip e = ip("2001:db8:1::5"), mapped = ip("::ffff:10.1.1.1"), f = ip("10.0.0.200"),
	               g = ip("10.0.0.100");
	assert_true(addr_cidr_contains(&all, &a));
	assert_true(addr_cidr_contains(&ten, &a));
	assert_false(addr_cidr_contains(&ten, &b));
	assert_true(addr_cidr_contains(&google, &b));
	assert_true(addr_cidr_contains(&host, &c));
	assert_false(addr_cidr_contains(&host, &d));
	assert_true(addr_cidr_contains(&v6, &e));
	assert_false(addr_cidr_contains(&all, &e)); /* IPv4 0/0 does not hold IPv6 */
	assert_true(addr_cidr_contains(&ten, &mapped));
	assert_true(addr_cidr_contains(&odd, &f));
	assert_false(addr_cidr_contains(&odd, &g));
}

static void test_endpoints(void **state)
{
	(void)state;
	struct addr_endpoint ep;
	const char *why = NULL;
	char text[ADDR_CIDR_STRLEN];

	assert_true(addr_parse_endpoint("1.2.3.4:465", &ep, &why));
	addr_cidr_format(&ep.range, text);
	assert_string_equal(text, "1.2.3.4");
	assert_int_equal(ep.port, 465);

	assert_true(addr_parse_endpoint("0/0:2525", &ep, &why));
	addr_cidr_format(&ep.range, text);
	assert_string_equal(text, "0.0.0.0/0");
	assert_int_equal(ep.port, 2525);

	assert_true(addr_parse_endpoint("[::1]:25", &ep, &why));
	addr_cidr_format(&ep.range, text);
	assert_string_equal(text, "::1");
	assert_int_equal(ep.port, 25);

	assert_false(addr_parse_endpoint("1.2.3.4", &ep, &why));
	assert_string_equal(why, "missing :PORT");
	assert_false(addr_parse_endpoint("1.2.3.4:0", &ep, &why));
	assert_string_equal(why, "port out of range (1-65535)");
	assert_false(addr_parse_endpoint("1.2.3.4:65536", &ep, &why));
	assert_string_equal(why, "port out of range (1-65535)");
	assert_false(addr_parse_endpoint("1.2.3.4:2x", &ep, &why));
	assert_string_equal(why, "bad port number");
	assert_false(addr_parse_endpoint("::1:25", &ep, &why));
	assert_string_equal(why, "IPv6 addresses must be written [IPv6]:PORT");
	assert_false(addr_parse_endpoint("[::1]25", &ep, &why));
	assert_string_equal(why, "expected [IPv6]:PORT");
	assert_false(addr_parse_endpoint(":25", &ep, &why));
	assert_string_equal(why, "missing address");
}

static void test_sockaddr_round_trip(void **state)
{
	(void)state;
	struct sockaddr_storage ss;
	struct addr_ip in = ip("2001:db8::7"), out;
	uint16_t port = 0;
	socklen_t len = addr_ip_to_sockaddr(&in, 2525, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_true(addr_ip_from_sockaddr((struct sockaddr *)&ss, &out, &port));
	assert_true(addr_ip_equal(&in, &out));
	assert_int_equal(port, 2525);

	in = ip("127.0.0.3");
	len = addr_ip_to_sockaddr(&in, 25, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_true(addr_ip_from_sockaddr((struct sockaddr *)&ss, &out, &port));
	assert_true(addr_ip_equal(&in, &out));
	assert_int_equal(port, 25);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_short_forms),
	    cmocka_unit_test(test_cidr_errors),
	    cmocka_unit_test(test_contains),
	    cmocka_unit_test(test_endpoints),
	    cmocka_unit_test(test_sockaddr_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
