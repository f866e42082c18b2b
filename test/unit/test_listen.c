/* test_listen.c: unit tests of opening listening sockets for endpoints,
 * wildcard and range forms included, and listening UNIX sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "listen.h"
#include "testutil.h"

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

/* 0 when a client connected to path, else the connect's errno. */
static int connect_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	int rc = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0 ? 0 : errno;
	close(fd);
	return rc;
}

static void test_unix_socket_replaces_a_stale_one(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "svc");
	struct buf err = BUF_INIT;
	int stale = listen_unix(path, 8, 0600, (uid_t)-1, (gid_t)-1, &err);
	assert_true(stale >= 0);
	close(stale); /* a previous run's socket, left behind */
	assert_int_equal(connect_unix(path), ECONNREFUSED);

	int fd = listen_unix(path, 8, 0640, (uid_t)-1, (gid_t)-1, &err);
	if (fd < 0)
		fail_msg("%s", buf_cstr(&err));
	assert_int_equal(connect_unix(path), 0);
	int peer = accept(fd, NULL, NULL);
	assert_true(peer >= 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	char *temporary = testutil_path(dir, "svc.new");
	assert_int_equal(access(temporary, F_OK), -1); /* renamed, not left */
	close(peer);
	close(fd);
	free(temporary);
	free(path);
	testutil_rmtree(dir);
	free(dir);
	buf_free(&err);
}

static void test_unix_socket_errors_name_the_path(void **state)
{
	(void)state;
	char *dir = testutil_tmpdir();
	char *missing = testutil_path(dir, "no/such/dir/svc");
	struct buf err = BUF_INIT;
	assert_int_equal(listen_unix(missing, 8, 0600, (uid_t)-1, (gid_t)-1, &err), -1);
	assert_true(testutil_contains(buf_cstr(&err), "cannot listen on "));
	assert_true(testutil_contains(buf_cstr(&err), missing));
	assert_true(testutil_contains(buf_cstr(&err), "No such file or directory"));

	char long_path[120];
	memset(long_path, 'p', sizeof long_path - 1);
	long_path[sizeof long_path - 1] = '\0';
	buf_reset(&err);
	assert_int_equal(listen_unix(long_path, 8, 0600, (uid_t)-1, (gid_t)-1, &err), -1);
	assert_true(testutil_contains(buf_cstr(&err), "is too long"));
	free(missing);
	testutil_rmtree(dir);
	free(dir);
	buf_free(&err);
}

/* A client that connects the moment the path appears is never refused:
 * the socket listens before it has its name.  A child process spins on
 * connect while the parent makes the socket, many times over; after each
 * round the parent removes the socket and says "go" for the next. */
static void test_unix_socket_listens_before_its_path_appears(void **state)
{
	(void)state;
	enum { ROUNDS = 300 };
	char *dir = testutil_tmpdir();
	char *path = testutil_path(dir, "svc");
	int verdicts[2], go[2];
	assert_int_equal(pipe(verdicts), 0);
	assert_int_equal(pipe(go), 0);
	pid_t child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		char byte = 0;
		for (int round = 0; round < ROUNDS && (round == 0 || read(go[0], &byte, 1) == 1); round++) {
			int rc;
			while ((rc = connect_unix(path)) == ENOENT)
				;
			byte = rc == 0 ? 'y' : 'n';
			if (write(verdicts[1], &byte, 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	struct buf err = BUF_INIT;
	int refused = 0;
	for (int round = 0; round < ROUNDS; round++) {
		int fd = listen_unix(path, 8, 0600, (uid_t)-1, (gid_t)-1, &err);
		if (fd < 0)
			fail_msg("%s", buf_cstr(&err));
		char verdict = 0;
		assert_int_equal(read(verdicts[0], &verdict, 1), 1);
		refused += verdict != 'y';
		unlink(path);
		close(fd);
		assert_int_equal(write(go[1], "g", 1), 1);
	}
	int status;
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(refused, 0);
	for (int i = 0; i < 2; i++) {
		close(verdicts[i]);
		close(go[i]);
	}
	free(path);
	testutil_rmtree(dir);
	free(dir);
	buf_free(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_single_address),
	    cmocka_unit_test(test_port_in_use_is_an_error),
	    cmocka_unit_test(test_copies_share_the_connections),
	    cmocka_unit_test(test_range_binds_local_addresses_inside),
	    cmocka_unit_test(test_unix_socket_replaces_a_stale_one),
	    cmocka_unit_test(test_unix_socket_errors_name_the_path),
	    cmocka_unit_test(test_unix_socket_listens_before_its_path_appears),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
