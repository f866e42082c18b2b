/* job_server.c: qmgr's connections to a delivery agent (job_server.h).
 * Each connection lives until qmgr closes it, a frame breaks it, or the
 * agent stops; the agent's state for it is closed exactly once, at the
 * first of these. */
#include "job_server.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "bev_write.h"
#include "ipc_evbuffer.h"
#include "log.h"
#include "mem.h"

struct job_conn {
	struct bufferevent *bev;
	struct event *flush; /* writes the queued frames: at once, or when its timer ends */
	void *state;         /* the agent's; NULL once closed for it */
	bool closing;        /* the error frame is being written */
	struct job_conn *prev, *next;
};

static const struct job_agent *agent;
static struct evconnlistener *listener;
static struct job_conn *conns;

/* Frames are written together, after the callback that made them. */
void job_conn_write(struct job_conn *conn, const void *data, size_t len)
{
	bufferevent_write(conn->bev, data, len);
	event_active(conn->flush, EV_WRITE, 0);
}

void job_conn_write_soon(struct job_conn *conn, const void *data, size_t len)
{
	bufferevent_write(conn->bev, data, len);
	if (!event_pending(conn->flush, EV_TIMEOUT, NULL)) {
		struct timeval tv = {0, JOB_CONN_SOON_MS * 1000};
		event_add(conn->flush, &tv);
	}
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
	struct job_conn *conn = arg;
	/* what is written now needs no timer any more */
	event_del(conn->flush);
	if (!conn->closing)
		bev_write_now(conn->bev);
}

/* The agent lets go of the connection's jobs. */
static void release(struct job_conn *conn, bool qmgr_closed)
{
	void *state = conn->state;
	conn->state = NULL;
	if (state)
		agent->close(state, qmgr_closed);
}

static void conn_free(struct job_conn *conn, bool qmgr_closed)
{
	release(conn, qmgr_closed);
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	event_free(conn->flush);
	bufferevent_free(conn->bev);
	free(conn);
}

/* The stream cannot be trusted: say why, then close once it is written. */
static void conn_fail(struct job_conn *conn, const char *why)
{
	log_warning("qmgr connection: %s", why);
	struct buf frame = BUF_INIT;
	job_proto_put_error(&frame, -1, why);
	bufferevent_write(conn->bev, frame.data, frame.len);
	bufferevent_enable(conn->bev, EV_WRITE); /* on_write closes once it is out */
	buf_free(&frame);
	conn->closing = true;
	bufferevent_disable(conn->bev, EV_READ);
	release(conn, false);
}

/* One frame to the agent's handler for its verb. */
static bool dispatch(struct job_conn *conn, const struct buf *payload, struct buf *err)
{
	enum job_verb verb;
	struct ipc_msg m;
	bool ok = job_proto_decode(payload->data, payload->len, &verb, &m, err) &&
	          agent->handlers[verb](conn->state, &m, err);
	ipc_msg_free(&m);
	return ok;
}

static void on_read(struct bufferevent *bev, void *arg)
{
	struct job_conn *conn = arg;
	struct evbuffer *input = bufferevent_get_input(bev);
	struct buf payload = BUF_INIT, err = BUF_INIT;
	bev_read_waiting(bev);
	while (!conn->closing) {
		enum ipc_frame_status st = ipc_frame_take_evbuffer(input, IPC_FRAME_MAX_DEFAULT, &payload, &err);
		if (st == IPC_FRAME_PARTIAL)
			break;
		if (st == IPC_FRAME_ERROR || !dispatch(conn, &payload, &err)) {
			conn_fail(conn, buf_cstr(&err));
			break;
		}
	}
	buf_free(&payload);
	buf_free(&err);
}

/* Also run after bev_write_now(): the error frame may still be on its
 * way then. */
static void on_write(struct bufferevent *bev, void *arg)
{
	struct job_conn *conn = arg;
	if (conn->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		conn_free(conn, false);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(arg, true);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int socklen, void *arg)
{
	struct job_conn *conn = mem_zalloc(sizeof(*conn));
	conn->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
	conn->flush = event_new(evconnlistener_get_base(l), -1, 0, on_flush, conn);
	if (conn->bev == NULL || conn->flush == NULL)
		log_fatal("cannot create a qmgr connection's events");
	bufferevent_setcb(conn->bev, on_read, on_write, on_event, conn);
	/* the write event only for what bev_write_now() leaves (a new
	 * bufferevent has it on): frames queued "soon" must not go out with
	 * libevent's next write */
	bufferevent_disable(conn->bev, EV_WRITE);
	bufferevent_enable(conn->bev, EV_READ);
	conn->next = conns;
	if (conns)
		conns->prev = conn;
	conns = conn;
	conn->state = agent->open(conn);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
	log_error("accepting a qmgr connection: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

bool job_server_listen(struct event_base *base, int fd, const struct job_agent *a, struct buf *err)
{
	agent = a;
	evutil_make_socket_nonblocking(fd);
	/* backlog 0: the socket listens already, with its own backlog */
	listener = evconnlistener_new(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (listener == NULL) {
		buf_puts(err, "cannot watch the service socket");
		return false;
	}
	evconnlistener_set_error_cb(listener, on_accept_error);
	return true;
}

void job_server_shutdown(void)
{
	if (listener) {
		evconnlistener_free(listener);
		listener = NULL;
	}
	for (struct job_conn *conn = conns; conn; conn = conn->next) {
		if (conn->closing)
			continue;
		if (agent->stopping && conn->state)
			agent->stopping(conn->state);
		bev_write_now(conn->bev);
	}
	while (conns)
		conn_free(conns, false);
}
