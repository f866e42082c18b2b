/* test_bev_write.c: unit tests of bev_write_now(): output reaches the
 * peer without a turn of the loop, the write event is armed only for what
 * the socket could not take, the rest still goes out through libevent,
 * and the write callback runs from the loop as it would after libevent's
 * own write; and of bev_read_waiting(): one read callback gets all that
 * waits, in order, within the read high-water mark, and the end of stream
 * still comes after it; and of tern's evbuffer_read(): libevent's reads
 * are bound to it, and it keeps libevent's contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "bev_write.h"
#include "log.h"

struct pair {
	struct event_base *base;
	struct bufferevent *bev;
	int peer;
	int write_callbacks;
	int read_callbacks;
	bool eof;
};

static void on_write(struct bufferevent *bev, void *arg)
{
	struct pair *p = arg;
	p->write_callbacks++;
}

static void pair_open(struct pair *p, int sndbuf)
{
	int fds[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	if (sndbuf > 0)
		assert_int_equal(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	evutil_make_socket_nonblocking(fds[0]);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	struct event_config *cfg = event_config_new();
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	p->base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	p->bev = bufferevent_socket_new(p->base, fds[0], BEV_OPT_CLOSE_ON_FREE);
	p->peer = fds[1];
	p->write_callbacks = 0;
	bufferevent_setcb(p->bev, NULL, on_write, NULL, p);
	bufferevent_enable(p->bev, EV_READ | EV_WRITE);
}

static void pair_close(struct pair *p)
{
	bufferevent_free(p->bev);
	event_base_free(p->base);
	close(p->peer);
}

/* Everything the peer can read now, without waiting. */
static size_t drain_peer(struct pair *p, char *into, size_t cap)
{
	size_t got = 0;
	for (;;) {
		ssize_t n = read(p->peer, into ? into + got : (char[65536]){0}, into ? cap - got : 65536);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return got;
}

static void test_output_reaches_the_peer_before_the_loop_runs(void **state)
{
	struct pair p;
	pair_open(&p, 0);
	bufferevent_write(p.bev, "250 ok\r\n", 8);
	bev_write_now(p.bev);
	char got[32] = {0};
	assert_int_equal(drain_peer(&p, got, sizeof(got)), 8);
	assert_string_equal(got, "250 ok\r\n");
	assert_int_equal(evbuffer_get_length(bufferevent_get_output(p.bev)), 0);
	assert_false(bufferevent_get_enabled(p.bev) & EV_WRITE);
	assert_true(bufferevent_get_enabled(p.bev) & EV_READ);
	/* the callback is not run from inside the caller's stack */
	assert_int_equal(p.write_callbacks, 0);
	event_base_loop(p.base, EVLOOP_NONBLOCK);
	assert_int_equal(p.write_callbacks, 1);
	pair_close(&p);
}

static void test_nothing_to_write_changes_nothing(void **state)
{
	struct pair p;
	pair_open(&p, 0);
	bev_write_now(p.bev);
	assert_true(bufferevent_get_enabled(p.bev) & EV_WRITE);
	assert_int_equal(p.write_callbacks, 0);
	assert_int_equal(drain_peer(&p, NULL, 0), 0);
	pair_close(&p);
}

/* A socket that cannot take it all: the rest waits in the buffer with
 * EV_WRITE armed, and libevent sends it once the peer reads. */
static void test_what_the_socket_cannot_take_goes_out_later(void **state)
{
	struct pair p;
	pair_open(&p, 4096);
	static char big[1 << 20];
	memset(big, 'x', sizeof(big));
	bufferevent_write(p.bev, big, sizeof(big));
	bev_write_now(p.bev);
	size_t left = evbuffer_get_length(bufferevent_get_output(p.bev));
	assert_true(left > 0 && left < sizeof(big));
	assert_true(bufferevent_get_enabled(p.bev) & EV_WRITE);
	size_t got = 0;
	for (int turns = 0; got < sizeof(big) && turns < 100000; turns++) {
		got += drain_peer(&p, NULL, 0);
		event_base_loop(p.base, EVLOOP_NONBLOCK);
	}
	got += drain_peer(&p, NULL, 0);
	assert_int_equal(got, sizeof(big));
	assert_int_equal(evbuffer_get_length(bufferevent_get_output(p.bev)), 0);
	assert_true(p.write_callbacks >= 1);
	pair_close(&p);
}

/* After a write that emptied the buffer, output added later without
 * bev_write_now() needs EV_WRITE enabled again, as the header says. */
static void test_a_later_enable_sends_output_added_without_it(void **state)
{
	struct pair p;
	pair_open(&p, 0);
	bufferevent_write(p.bev, "a", 1);
	bev_write_now(p.bev);
	assert_int_equal(drain_peer(&p, NULL, 0), 1);
	bufferevent_write(p.bev, "bc", 2);
	bufferevent_enable(p.bev, EV_WRITE);
	event_base_loop(p.base, EVLOOP_NONBLOCK);
	assert_int_equal(drain_peer(&p, NULL, 0), 2);
	pair_close(&p);
}

/* ---- bev_read_waiting ---------------------------------------------------- */

static void on_read_waiting(struct bufferevent *bev, void *arg)
{
	struct pair *p = arg;
	p->read_callbacks++;
	bev_read_waiting(bev);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct pair *p = arg;
	if (what & BEV_EVENT_EOF)
		p->eof = true;
}

/* The peer writes len octets numbered 0, 1, 2 ... (mod 251) and maybe
 * closes; bev reads with bev_read_waiting() in its callback. */
static void pair_with_waiting_input(struct pair *p, size_t len, bool close_peer)
{
	pair_open(p, 0);
	int size = 1 << 20;
	setsockopt(p->peer, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	bufferevent_setcb(p->bev, on_read_waiting, NULL, on_event, p);
	p->read_callbacks = 0;
	p->eof = false;
	static unsigned char data[200 * 1024];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i % 251);
	assert_true(len <= sizeof(data));
	assert_int_equal(write(p->peer, data, len), (ssize_t)len);
	if (close_peer)
		shutdown(p->peer, SHUT_WR);
}

static void assert_numbered(struct evbuffer *in, size_t len)
{
	unsigned char *got = evbuffer_pullup(in, -1);
	for (size_t i = 0; i < len; i++)
		if (got[i] != (unsigned char)(i % 251))
			fail_msg("octet %zu is %u", i, got[i]);
}

static void test_one_callback_reads_all_that_waits(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 150 * 1024, false);
	event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	struct evbuffer *in = bufferevent_get_input(p.bev);
	assert_int_equal(p.read_callbacks, 1);
	assert_int_equal(evbuffer_get_length(in), 150 * 1024);
	assert_numbered(in, 150 * 1024);
	pair_close(&p);
}

static void on_read_waiting_10000(struct bufferevent *bev, void *arg)
{
	struct pair *p = arg;
	p->read_callbacks++;
	bev_read_waiting_at_most(bev, 10000);
}

/* With a bound, a callback gets libevent's 4 KB and at most that more;
 * the rest waits in the socket for the next turn. */
static void test_a_bound_limits_what_one_callback_reads(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 150 * 1024, false);
	bufferevent_setcb(p.bev, on_read_waiting_10000, NULL, on_event, &p);
	event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	struct evbuffer *in = bufferevent_get_input(p.bev);
	assert_int_equal(p.read_callbacks, 1);
	assert_int_equal(evbuffer_get_length(in), 4096 + 10000);
	assert_numbered(in, 4096 + 10000);
	pair_close(&p);
}

/* Less than libevent's own 4 KB read: nothing more is tried. */
static void test_a_small_input_is_left_to_libevent(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 1000, false);
	event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(p.read_callbacks, 1);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(p.bev)), 1000);
	pair_close(&p);
}

/* A consumer that takes all it is given: no callback sees more than the
 * read high-water mark, and all of it arrives in order. */
struct draining {
	struct pair pair;
	size_t taken, most;
};

static void on_read_draining(struct bufferevent *bev, void *arg)
{
	struct draining *d = arg;
	bev_read_waiting(bev);
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	unsigned char *got = evbuffer_pullup(in, -1);
	for (size_t i = 0; i < len; i++)
		if (got[i] != (unsigned char)((d->taken + i) % 251))
			fail_msg("octet %zu is %u", d->taken + i, got[i]);
	if (len > d->most)
		d->most = len;
	d->taken += len;
	evbuffer_drain(in, len);
}

static void test_the_read_high_water_mark_holds(void **state)
{
	struct draining d = {0};
	pair_with_waiting_input(&d.pair, 150 * 1024, false);
	bufferevent_setcb(d.pair.bev, on_read_draining, NULL, NULL, &d);
	bufferevent_setwatermark(d.pair.bev, EV_READ, 0, 10000);
	for (int turns = 0; d.taken < 150 * 1024 && turns < 1000; turns++)
		event_base_loop(d.pair.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(d.taken, 150 * 1024);
	assert_true(d.most <= 10000);
	assert_true(d.most > 4096);
	pair_close(&d.pair);
}

/* The end of stream is not swallowed: libevent's next read reports it. */
static void test_the_end_of_stream_still_comes(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 100 * 1024, true);
	for (int turns = 0; !p.eof && turns < 100; turns++)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(p.eof);
	struct evbuffer *in = bufferevent_get_input(p.bev);
	assert_int_equal(evbuffer_get_length(in), 100 * 1024);
	assert_numbered(in, 100 * 1024);
	pair_close(&p);
}

/* ---- evbuffer_read ------------------------------------------------------- */

/* libevent's calls look the name up as this does. */
static void test_libevent_reads_are_bound_to_ours(void **state)
{
	assert_ptr_equal(dlsym(RTLD_DEFAULT, "evbuffer_read"), (void *)evbuffer_read);
}

static void test_a_read_takes_what_waits_up_to_4_kb_or_howmuch(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 10000, false);
	struct evbuffer *buf = evbuffer_new();
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), 4096);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), 100000), 4096);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), 1000), 1000);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), 10000 - 9192);
	assert_int_equal(evbuffer_get_length(buf), 10000);
	assert_numbered(buf, 10000);
	/* nothing waits: the socket's EAGAIN, and the buffer unchanged */
	errno = 0;
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(evbuffer_get_length(buf), 10000);
	shutdown(p.peer, SHUT_WR);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), 0);
	assert_int_equal(evbuffer_get_length(buf), 10000);
	evbuffer_free(buf);
	pair_close(&p);
}

static void test_a_frozen_end_is_not_read_into(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 100, false);
	struct evbuffer *buf = evbuffer_new();
	evbuffer_freeze(buf, 0);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), -1);
	assert_int_equal(evbuffer_get_length(buf), 0);
	evbuffer_unfreeze(buf, 0);
	assert_int_equal(evbuffer_read(buf, bufferevent_getfd(p.bev), -1), 100);
	evbuffer_free(buf);
	pair_close(&p);
}

/* Through a bufferevent: its callback sees the data, its event callback
 * the end of stream. */
static void test_a_bufferevent_reads_through_it(void **state)
{
	struct pair p;
	pair_with_waiting_input(&p, 3000, true);
	bufferevent_setcb(p.bev, NULL, NULL, on_event, &p);
	for (int turns = 0; !p.eof && turns < 100; turns++)
		event_base_loop(p.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_true(p.eof);
	assert_int_equal(evbuffer_get_length(bufferevent_get_input(p.bev)), 3000);
	assert_numbered(bufferevent_get_input(p.bev), 3000);
	pair_close(&p);
}

int main(void)
{
	log_open("test_bev_write", LOG_TO_STDERR, NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_output_reaches_the_peer_before_the_loop_runs),
	    cmocka_unit_test(test_nothing_to_write_changes_nothing),
	    cmocka_unit_test(test_what_the_socket_cannot_take_goes_out_later),
	    cmocka_unit_test(test_a_later_enable_sends_output_added_without_it),
	    cmocka_unit_test(test_one_callback_reads_all_that_waits),
	    cmocka_unit_test(test_a_small_input_is_left_to_libevent),
	    cmocka_unit_test(test_a_bound_limits_what_one_callback_reads),
	    cmocka_unit_test(test_the_read_high_water_mark_holds),
	    cmocka_unit_test(test_the_end_of_stream_still_comes),
	    cmocka_unit_test(test_libevent_reads_are_bound_to_ours),
	    cmocka_unit_test(test_a_read_takes_what_waits_up_to_4_kb_or_howmuch),
	    cmocka_unit_test(test_a_frozen_end_is_not_read_into),
	    cmocka_unit_test(test_a_bufferevent_reads_through_it),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
