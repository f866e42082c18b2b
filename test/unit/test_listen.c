/* test_listen.c: unit tests of opening listening sockets for endpoints,
 * wildcard and range forms included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "listen.h"

static struct addr_endpoint endpoint(const char *text)
{
	struct addr_endpoint ep;
	const char *why = NULL;
	if (!addr_parse_endpoint(text, &ep, &why))
		fail_msg("%s: %s", text, why);
	return ep;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	struct addr_ip ip;
	uint16_t port = 0;
	assert_true(addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip, &port));
	return port;
}

static void test_single_address(void **state)
{
	(void)state;
	struct addr_endpoint ep = endpoint("127.0.0.1:1");
	ep.port = 0; /* any free port */
	struct listen_sockets s;
	struct buf err = BUF_INIT;
	assert_true(listen_open(&ep, &s, &err));
	assert_int_equal(s.count, 1);
	assert_true(fcntl(s.fds[0], F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(s.fds[0], F_GETFL) & O_NONBLOCK);
	assert_int_not_equal(bound_port(s.fds[0]), 0);
	listen_close(&s);
	assert_int_equal(s.count, 0);
	buf_free(&err);
}

static void test_port_in_use_is_an_error(void **state)
{
	(void)state;
	struct addr_endpoint ep = endpoint("127.0.0.1:1");
	ep.port = 0;
	struct listen_sockets first, second;
	struct buf err = BUF_INIT;
	assert_true(listen_open(&ep, &first, &err));
	ep.port = bound_port(first.fds[0]);
	assert_false(listen_open(&ep, &second, &err));
	assert_non_null(strstr(buf_cstr(&err), "cannot listen on 127.0.0.1:"));
	assert_non_null(strstr(buf_cstr(&err), "Address already in use"));
	assert_int_equal(second.count, 0);
	listen_close(&first);
	buf_free(&err);
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

static int accept_all(int listener)
{
	int n = 0, fd;
	while ((fd = accept(listener, NULL, NULL)) >= 0) {
		close(fd);
		n++;
	}
	return n;
}

/* A copy listens on the same address, and the kernel hands each copy a
 * share of the connections (32 all on one would be a 1 in 2^31 chance). */
static void test_copies_share_the_connections(void **state)
{
	(void)state;
	struct addr_endpoint ep = endpoint("127.0.0.1:1");
	ep.port = 0;
	struct listen_sockets first, copy;
	struct buf err = BUF_INIT;
	assert_true(listen_open(&ep, &first, &err));
	assert_true(listen_open_copy(&first, &copy, &err));
	assert_int_equal(copy.count, 1);
	uint16_t port = bound_port(first.fds[0]);
	assert_int_equal(bound_port(copy.fds[0]), port);
	assert_true(fcntl(copy.fds[0], F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(copy.fds[0], F_GETFL) & O_NONBLOCK);

	int clients[32];
	for (int i = 0; i < 32; i++)
		clients[i] = connect_to(port);
	int on_first = accept_all(first.fds[0]), on_copy = accept_all(copy.fds[0]);
	assert_int_equal(on_first + on_copy, 32);
	assert_true(on_first > 0 && on_copy > 0);
	for (int i = 0; i < 32; i++)
		close(clients[i]);

	/* The port is still ours alone: another listen_open fails. */
	ep.port = port;
	struct listen_sockets other;
	assert_false(listen_open(&ep, &other, &err));
	assert_non_null(strstr(buf_cstr(&err), "Address already in use"));
	listen_close(&copy);
	listen_close(&first);
	buf_free(&err);
}

static void test_range_binds_local_addresses_inside(void **state)
{
	(void)state;
	struct addr_endpoint ep = endpoint("127/8:1");
	ep.port = 0;
	struct listen_sockets s;
	struct buf err = BUF_INIT;
	if (!listen_open(&ep, &s, &err))
		fail_msg("%s", buf_cstr(&err));
	assert_true(s.count >= 1); /* at least 127.0.0.1 on lo */
	listen_close(&s);

	ep = endpoint("203.0.113.0/24:1"); /* TEST-NET-3: no local address there */
	ep.port = 0;
	assert_false(listen_open(&ep, &s, &err));
	assert_string_equal(buf_cstr(&err), "no local address inside 203.0.113.0/24 to listen on");
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_address),
	    cmocka_unit_test(test_port_in_use_is_an_error),
	    cmocka_unit_test(test_copies_share_the_connections),
	    cmocka_unit_test(test_range_binds_local_addresses_inside),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
