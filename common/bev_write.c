/* bev_write.c: output of a plain socket bufferevent written at once, its
 * waiting input read at once, and libevent's socket read without its
 * FIONREAD (see bev_write.h). */
#include "bev_write.h"

#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/event.h>

void bev_write_now(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	evutil_socket_t fd = bufferevent_getfd(bev);
	if (fd < 0 || evbuffer_get_length(out) == 0)
		return;
	/* a bufferevent keeps its output's front frozen against everyone
	 * but its own write: this write is one of its own */
	bool wrote = false;
	evbuffer_unfreeze(out, 1);
	while (evbuffer_get_length(out) > 0 && evbuffer_write(out, fd) > 0)
		wrote = true;
	evbuffer_freeze(out, 1);
	/* an error is left for libevent's own write, which reports it */
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE);
	else
		bufferevent_disable(bev, EV_WRITE);
	/* the write callback runs as when libevent writes: from the loop,
	 * once the output is down to its low-water mark */
	if (wrote)
		bufferevent_trigger(bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
}

void bev_send(struct bufferevent *bev, const void *data, size_t len)
{
	bufferevent_write(bev, data, len);
	bev_write_now(bev);
}

/* What libevent 2.1 reads at most in one go (EVBUFFER_MAX_READ). */
#define LIBEVENT_READ_MAX 4096

/* Only the length of the vectors is trimmed, as evbuffer_commit_space
 * allows; got < 0 counts as nothing read. */
static void trim_to(struct evbuffer_iovec *v, int n, ssize_t got)
{
	size_t left = got > 0 ? (size_t)got : 0;
	for (int i = 0; i < n; i++) {
		if (v[i].iov_len > left)
			v[i].iov_len = left;
		left -= v[i].iov_len;
	}
}

int evbuffer_read(struct evbuffer *buf, evutil_socket_t fd, int howmuch)
{
	if (howmuch < 0 || howmuch > LIBEVENT_READ_MAX)
		howmuch = LIBEVENT_READ_MAX;
	struct evbuffer_iovec v[2];
	/* fails on a buffer whose end is frozen, as libevent's does */
	int n = evbuffer_reserve_space(buf, howmuch, v, 2);
	if (n <= 0)
		return -1;
	trim_to(v, n, howmuch);
	ssize_t got = readv(fd, v, n);
	if (got <= 0)
		return (int)got; /* nothing committed: the space stays free */
	trim_to(v, n, got);
	evbuffer_commit_space(buf, v, n);
	return (int)got;
}

/* How much more bev may read now: what the socket holds, within the
 * read high-water mark and max; 0 when nothing. */
static size_t readable_now(struct bufferevent *bev, evutil_socket_t fd, size_t have, size_t max)
{
	int waiting = 0;
	if (ioctl(fd, FIONREAD, &waiting) < 0 || waiting <= 0)
		return 0;
	size_t want = (size_t)waiting < max ? (size_t)waiting : max;
	size_t high = 0;
	bufferevent_getwatermark(bev, EV_READ, NULL, &high);
	if (high > 0)
		want = have >= high ? 0 : (want < high - have ? want : high - have);
	return want;
}

void bev_read_waiting(struct bufferevent *bev)
{
	bev_read_waiting_at_most(bev, BEV_READ_WAITING_MAX);
}

void bev_read_waiting_at_most(struct bufferevent *bev, size_t max)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	evutil_socket_t fd = bufferevent_getfd(bev);
	size_t have = evbuffer_get_length(in);
	if (fd < 0 || have < LIBEVENT_READ_MAX)
		return;
	size_t want = readable_now(bev, fd, have, max);
	if (want == 0)
		return;
	/* the bufferevent keeps its input's end frozen against all but its
	 * own read: this read is one of its own */
	evbuffer_unfreeze(in, 0);
	struct evbuffer_iovec v[2];
	int n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2);
	if (n > 0) {
		trim_to(v, n, (ssize_t)want);
		trim_to(v, n, readv(fd, v, n));
		evbuffer_commit_space(in, v, n);
	}
	evbuffer_freeze(in, 0);
}
