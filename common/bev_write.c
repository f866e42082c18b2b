/* bev_write.c: output of a plain socket bufferevent written at once (see
 * bev_write.h). */
#include "bev_write.h"

#include <stdbool.h>

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
