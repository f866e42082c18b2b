/* test_job_server.c: unit tests of the writes of job_server: frames
 * queued with job_conn_write() reach qmgr's end in the same turn of the
 * loop; frames queued "soon" wait for the next of those, or for
 * JOB_CONN_SOON_MS at most. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "job_server.h"
#include "log.h"

static struct job_conn *opened;

static void *on_open(struct job_conn *conn)
{
	opened = conn;
	return conn;
}

static void on_close(void *state, bool qmgr_closed)
{
	opened = NULL;
}

static const struct job_agent test_agent = {.open = on_open, .close = on_close};

struct server {
	struct event_base *base;
	int qmgr; /* qmgr's end of the connection */
};

/* A job server on an abstract UNIX socket, and qmgr's connection to it,
 * accepted. */
static void server_start(struct server *s)
{
	s->base = event_base_new();
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	static int servers;
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "tern-test-job-server-%d-%d", (int)getpid(), ++servers);
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
	assert_int_equal(bind(l, (struct sockaddr *)&sa, len), 0);
	assert_int_equal(listen(l, 4), 0);
	struct buf err = BUF_INIT;
	assert_true(job_server_listen(s->base, l, &test_agent, &err));
	buf_free(&err);
	s->qmgr = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(s->qmgr, (struct sockaddr *)&sa, len), 0);
	fcntl(s->qmgr, F_SETFL, O_NONBLOCK);
	opened = NULL;
	for (int turns = 0; opened == NULL && turns < 100; turns++)
		event_base_loop(s->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_non_null(opened);
}

/* The loop runs once more: libevent finishes freeing the connection's
 * bufferevent from it. */
static void server_free(struct server *s)
{
	event_base_loop(s->base, EVLOOP_NONBLOCK);
	close(s->qmgr);
	event_base_free(s->base);
}

static void server_stop(struct server *s)
{
	job_server_shutdown();
	server_free(s);
}

/* What qmgr's end can read now, as a string. */
static void read_now(struct server *s, char *out, size_t cap)
{
	ssize_t n = read(s->qmgr, out, cap - 1);
	out[n > 0 ? n : 0] = '\0';
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_a_frame_goes_out_in_the_same_turn(void **state)
{
	struct server s;
	server_start(&s);
	job_conn_write(opened, "done", 4);
	event_base_loop(s.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	char got[64];
	read_now(&s, got, sizeof(got));
	assert_string_equal(got, "done");
	server_stop(&s);
}

static void test_soon_frames_go_with_the_next_frame(void **state)
{
	struct server s;
	server_start(&s);
	job_conn_write_soon(opened, "r1,", 3);
	job_conn_write_soon(opened, "r2,", 3);
	event_base_loop(s.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	char got[64];
	read_now(&s, got, sizeof(got));
	assert_string_equal(got, "");
	job_conn_write(opened, "done", 4);
	event_base_loop(s.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	read_now(&s, got, sizeof(got));
	assert_string_equal(got, "r1,r2,done");
	server_stop(&s);
}

static void test_soon_frames_wait_no_longer_than_the_limit(void **state)
{
	struct server s;
	server_start(&s);
	double start = now_ms();
	job_conn_write_soon(opened, "r1", 2);
	char got[64] = "";
	while (got[0] == '\0' && now_ms() - start < 1000) {
		event_base_loop(s.base, EVLOOP_ONCE);
		read_now(&s, got, sizeof(got));
	}
	assert_string_equal(got, "r1");
	double waited = now_ms() - start;
	assert_true(waited >= JOB_CONN_SOON_MS - 1);
	assert_true(waited < 500);
	/* the timer is spent: a later soon frame waits afresh */
	job_conn_write_soon(opened, "r2", 2);
	event_base_loop(s.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	read_now(&s, got, sizeof(got));
	assert_string_equal(got, "");
	server_stop(&s);
}

/* Stopping writes out what waits. */
static void test_shutdown_writes_soon_frames(void **state)
{
	struct server s;
	server_start(&s);
	job_conn_write_soon(opened, "r1", 2);
	job_server_shutdown();
	char got[64];
	read_now(&s, got, sizeof(got));
	assert_string_equal(got, "r1");
	server_free(&s);
}

int main(void)
{
	log_open("test_job_server", LOG_TO_STDERR, NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_a_frame_goes_out_in_the_same_turn),
	    cmocka_unit_test(test_soon_frames_go_with_the_next_frame),
	    cmocka_unit_test(test_soon_frames_wait_no_longer_than_the_limit),
	    cmocka_unit_test(test_shutdown_writes_soon_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
