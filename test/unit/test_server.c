/* test_server.c: unit tests of the daemon skeleton: option parsing, the
 * privilege drop (really performed when the tests run as root, in forked
 * children) and a whole server life cycle driven by signals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <pwd.h>

#include "buf.h"
#include "server.h"
#include "testutil.h"

#define DROP_USER "nobody"

/* Child exit codes, so the parent can tell which check failed. */
enum { CHILD_OK, CHILD_DROP_FAILED, CHILD_WRONG_IDS, CHILD_REGAINED_ROOT, CHILD_NOT_SKIPPED, CHILD_WRONG_ERROR };

/* After a privilege drop the process is not dumpable, and the leak
 * checker, which attaches to the process, would fail at exit. */
static void child_exit(int code)
{
	prctl(PR_SET_DUMPABLE, 1);
	exit(code);
}

static int wait_child(pid_t pid)
{
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static int drop_in_child(void)
{
	struct passwd *pw = getpwnam(DROP_USER);
	if (pw == NULL)
		return CHILD_DROP_FAILED;
	uid_t uid = pw->pw_uid;
	gid_t gid = pw->pw_gid;
	struct buf err = BUF_INIT;
	if (!server_drop_privileges(DROP_USER, &err)) {
		fprintf(stderr, "drop: %s\n", buf_cstr(&err));
		return CHILD_DROP_FAILED;
	}
	uid_t ruid, euid, suid;
	gid_t rgid, egid, sgid;
	getresuid(&ruid, &euid, &suid);
	getresgid(&rgid, &egid, &sgid);
	if (ruid != uid || euid != uid || suid != uid || rgid != gid || egid != gid || sgid != gid)
		return CHILD_WRONG_IDS;
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
		return CHILD_REGAINED_ROOT;
	/* No longer root: a second drop, even to a user that does not
	 * exist, is skipped. */
	if (!server_drop_privileges("no-such-user-tern", &err) || err.len != 0 || getuid() != uid)
		return CHILD_NOT_SKIPPED;
	buf_free(&err);
	return CHILD_OK;
}

static void test_drop_privileges(void **state)
{
	if (getuid() != 0) {
		/* An ordinary user keeps running as itself. */
		uid_t uid = getuid();
		struct buf err = BUF_INIT;
		assert_true(server_drop_privileges("no-such-user-tern", &err));
		assert_int_equal(err.len, 0);
		assert_int_equal(getuid(), uid);
		buf_free(&err);
		return;
	}
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(drop_in_child());
	assert_int_equal(wait_child(pid), CHILD_OK);
}

static int bad_drop_in_child(const char *user, const char *why)
{
	struct buf err = BUF_INIT;
	if (server_drop_privileges(user, &err))
		return CHILD_DROP_FAILED;
	int rc = testutil_contains(buf_cstr(&err), why) && getuid() == 0 ? CHILD_OK : CHILD_WRONG_ERROR;
	buf_free(&err);
	return rc;
}

static void test_drop_privileges_errors(void **state)
{
	if (getuid() != 0)
		skip();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(bad_drop_in_child("no-such-user-tern", "unknown user no-such-user-tern"));
	assert_int_equal(wait_child(pid), CHILD_OK);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		child_exit(bad_drop_in_child("root", "user root is root: refusing"));
	assert_int_equal(wait_child(pid), CHILD_OK);
}

static void test_parse_options(void **state)
{
	char a0[] = "smtpd", a1[] = "-f", a2[] = "-c", a3[] = "/tmp/x.conf", a4[] = "-u", a5[] = "mail";
	char *argv[] = {a0, a1, a2, a3, a4, a5, NULL};
	struct server_options opts;
	struct buf err = BUF_INIT;
	assert_true(server_parse_options(6, argv, &opts, &err));
	assert_true(opts.foreground);
	assert_string_equal(opts.config_path, "/tmp/x.conf");
	assert_string_equal(opts.user, "mail");
	server_options_free(&opts);

	assert_true(server_parse_options(1, argv, &opts, &err));
	assert_false(opts.foreground);
	assert_non_null(strstr(opts.config_path, "/tern/config"));
	server_options_free(&opts);

	char b1[] = "-x";
	char *bad[] = {a0, b1, NULL};
	assert_false(server_parse_options(2, bad, &opts, &err));
	assert_true(testutil_contains(buf_cstr(&err), "unknown option -x"));
	assert_true(testutil_contains(buf_cstr(&err), "usage:"));

	char c1[] = "stray";
	char *stray[] = {a0, c1, NULL};
	buf_reset(&err);
	assert_false(server_parse_options(2, stray, &opts, &err));
	assert_true(testutil_contains(buf_cstr(&err), "unexpected argument \"stray\""));

	char *missing[] = {a0, a2, NULL};
	buf_reset(&err);
	assert_false(server_parse_options(2, missing, &opts, &err));
	assert_true(testutil_contains(buf_cstr(&err), "missing argument"));
	buf_free(&err);
}

/* ---- a whole life cycle --------------------------------------------------- */

/* The child reports each callback as a line on a pipe. */
static int report_fd = -1;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	char line[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (write(report_fd, line, (size_t)n) != n)
		child_exit(90);
}

static bool test_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	report("pre_init uid=%ld user=%s\n", (long)geteuid(), opts->user);
	return true;
}

static bool test_init(void *ctx, struct event_base *base, struct buf *err)
{
	report("init uid=%ld\nready\n", (long)geteuid());
	return true;
}

static void test_stop(void *ctx)
{
	report("stop\n");
}

static void test_reload(void *ctx)
{
	report("reload\n");
}

/* user_option is what -u says; as_user, when set, is who the child is
 * before server_main runs (an ordinary user starting a daemon). */
static void run_server_child(int fd, const char *user_option, const char *as_user)
{
	report_fd = fd;
	struct buf err = BUF_INIT;
	if (as_user && !server_drop_privileges(as_user, &err))
		child_exit(91);
	buf_free(&err);
	static const struct server_daemon daemon = {
	    .name = "testd",
	    .pre_init = test_pre_init,
	    .init = test_init,
	    .stop = test_stop,
	    .reload = test_reload,
	};
	char a0[] = "testd", a1[] = "-f", a2[] = "-u";
	char *a3 = strdup(user_option);
	char *argv[] = {a0, a1, a2, a3, NULL};
	extern char **environ;
	int rc = server_main(&daemon, 4, argv, environ);
	free(a3);
	child_exit(rc);
}

/* Reads from the pipe until text has arrived (or the child is gone). */
static void read_until(int fd, struct buf *got, const char *text)
{
	while (strstr(buf_cstr(got), text) == NULL) {
		char chunk[256];
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n <= 0)
			break;
		buf_append(got, chunk, (size_t)n);
	}
}

/* Runs a server in a child through start, SIGHUP and SIGTERM and checks
 * the callbacks ran in order, each with the expected uid. */
static void run_life_cycle(const char *user_option, const char *as_user, long pre_uid, long init_uid)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		run_server_child(fds[1], user_option, as_user);
	}
	close(fds[1]);
	struct buf got = BUF_INIT;
	read_until(fds[0], &got, "ready\n");
	kill(pid, SIGHUP);
	read_until(fds[0], &got, "reload\n");
	kill(pid, SIGTERM);
	read_until(fds[0], &got, "stop\n");
	assert_int_equal(wait_child(pid), 0);
	close(fds[0]);

	struct buf want = BUF_INIT;
	buf_printf(&want, "pre_init uid=%ld user=%s\ninit uid=%ld\nready\nreload\nstop\n", pre_uid, user_option,
	           init_uid);
	assert_string_equal(buf_cstr(&got), buf_cstr(&want));
	buf_free(&got);
	buf_free(&want);
}

static void test_server_life_cycle(void **state)
{
	long me = (long)getuid();
	long nobody = (long)getpwnam(DROP_USER)->pw_uid;
	run_life_cycle(DROP_USER, NULL, me, me == 0 ? nobody : me);
}

/* Started by an ordinary user, the daemon skips the drop, whatever -u
 * says. */
static void test_server_life_cycle_unprivileged(void **state)
{
	if (getuid() != 0) {
		long me = (long)getuid();
		run_life_cycle("no-such-user-tern", NULL, me, me);
		return;
	}
	long nobody = (long)getpwnam(DROP_USER)->pw_uid;
	run_life_cycle("no-such-user-tern", DROP_USER, nobody, nobody);
}

static void test_set_title(void **state)
{
	/* Without setproctitle_init (not a daemon) it must be harmless. */
	server_set_title("%s: %d sessions", "smtpd", 12);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_options),
	    cmocka_unit_test(test_drop_privileges),
	    cmocka_unit_test(test_drop_privileges_errors),
	    cmocka_unit_test(test_server_life_cycle),
	    cmocka_unit_test(test_server_life_cycle_unprivileged),
	    cmocka_unit_test(test_set_title),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
