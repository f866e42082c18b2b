/* master_control.c: the control socket that ternctl talks to.
 * One request per connection, as IPC frames (see ipc.h): the peer's
 * credentials decide what it may do -- root and the tern user may change
 * state, members of the tern group may only look, anyone else is refused.
 * A malformed or hostile request drops that client only.
 *
 * Replies are a "reply" frame (status 0 ok, 1 failed, 2 refused, with a
 * reason), then for "status" one "service" frame per service, then an
 * "end" frame. */
#include "master.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "config.h"
#include "ipc.h"
#include "ipc_evbuffer.h"
#include "listen.h"

#define CONTROL_MAX_FRAME (64 * 1024)
#define CONTROL_TIMEOUT_SECONDS 10
#define CONTROL_GROUPS_MAX 256

enum control_role { ROLE_NONE, ROLE_READER, ROLE_ADMIN };

enum control_status { CONTROL_OK = 0, CONTROL_FAILED = 1, CONTROL_REFUSED = 2 };

struct control_client {
	struct master *master;
	struct bufferevent *bev;
	enum control_role role;
	bool replied;
	struct relay *relay; /* a request passed on to qmgr or acctd */
};

static const struct ipc_spec request_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}};

/* ---- who is asking ------------------------------------------------------------ */

static bool peer_in_group(int fd, gid_t gid)
{
	gid_t groups[CONTROL_GROUPS_MAX];
	socklen_t len = sizeof(groups);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == gid)
			return true;
	return false;
}

static enum control_role peer_role(const struct master *m, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return ROLE_NONE;
	if (cred.uid == 0 || cred.uid == m->user_uid)
		return ROLE_ADMIN;
	if (cred.gid == m->user_gid || peer_in_group(fd, m->user_gid))
		return ROLE_READER;
	return ROLE_NONE;
}

/* ---- replies -------------------------------------------------------------------- */

static void send_frame(struct control_client *c, struct ipc_writer *w, struct buf *frame)
{
	struct buf err = BUF_INIT;
	if (ipc_write_end(w, &err))
		bufferevent_write(c->bev, frame->data, frame->len);
	else
		log_error("control: cannot encode a reply: %s", buf_cstr(&err));
	buf_free(&err);
}

static void reply_status_header(struct control_client *c, enum control_status status, const char *reason,
                                struct buf *frame, struct ipc_writer *w)
{
	ipc_write_begin(w, frame, CONTROL_MAX_FRAME);
	ipc_put_str(w, IPC_ATTR_REQUEST, "reply");
	ipc_put_int(w, IPC_ATTR_STATUS, status);
	ipc_put_str(w, IPC_ATTR_REASON, reason);
}

static void reply_end(struct control_client *c)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, CONTROL_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "end");
	send_frame(c, &w, &frame);
	buf_free(&frame);
	c->replied = true;
}

static void reply_simple(struct control_client *c, enum control_status status, const char *reason)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	reply_status_header(c, status, reason, &frame, &w);
	send_frame(c, &w, &frame);
	buf_free(&frame);
	reply_end(c);
}

static const char *service_state(const struct master *m, const struct master_service *s)
{
	if (m->stopping)
		return "stopping";
	if (master_throttle_is_throttled(&s->throttle))
		return "throttled";
	return master_service_ready(s) == s->wanted ? "running" : "starting";
}

static void reply_service(struct control_client *c, const struct master_service *s)
{
	struct buf frame = BUF_INIT, pids = BUF_INIT;
	struct ipc_writer w;
	master_service_pids(s, &pids);
	ipc_write_begin(&w, &frame, CONTROL_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "service");
	ipc_put_str(&w, IPC_ATTR_SERVICE, s->name);
	ipc_put_str(&w, IPC_ATTR_STATE, service_state(c->master, s));
	ipc_put_str(&w, IPC_ATTR_PIDS, buf_cstr(&pids));
	ipc_put_int(&w, IPC_ATTR_RUNNING, master_service_running(s));
	ipc_put_int(&w, IPC_ATTR_READY, master_service_ready(s));
	ipc_put_int(&w, IPC_ATTR_WANTED, s->wanted);
	ipc_put_int(&w, IPC_ATTR_RESTARTS, s->restarts);
	ipc_put_int(&w, IPC_ATTR_THROTTLED, master_throttle_is_throttled(&s->throttle));
	send_frame(c, &w, &frame);
	buf_free(&frame);
	buf_free(&pids);
}

static void reply_status(struct control_client *c)
{
	struct master *m = c->master;
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	reply_status_header(c, CONTROL_OK, m->stopping ? "stopping" : "running", &frame, &w);
	ipc_put_int(&w, IPC_ATTR_PID, getpid());
	ipc_put_int(&w, IPC_ATTR_UPTIME, time(NULL) - m->started);
	ipc_put_int(&w, IPC_ATTR_RELOADS, m->reloads);
	ipc_put_str(&w, IPC_ATTR_VERSION, PACKAGE_VERSION);
	ipc_put_str(&w, IPC_ATTR_CONFIG, m->config_path);
	send_frame(c, &w, &frame);
	buf_free(&frame);
	for (int i = 0; i < SERVICE_COUNT; i++)
		reply_service(c, &m->services[i]);
	reply_end(c);
}

/* ---- requests ----------------------------------------------------------------------- */

static void handle_request(struct control_client *c, const char *verb)
{
	struct master *m = c->master;
	bool changes_state =
	    strcmp(verb, "reload") == 0 || strcmp(verb, "stop") == 0 || strcmp(verb, "reopen-log") == 0;
	if (changes_state && c->role != ROLE_ADMIN) {
		log_warning("control: refused \"%s\" from an unprivileged user", verb);
		reply_simple(c, CONTROL_REFUSED, "permission denied: only root and the tern user may do that");
		return;
	}
	if (strcmp(verb, "status") == 0) {
		reply_status(c);
	} else if (strcmp(verb, "version") == 0) {
		reply_simple(c, CONTROL_OK, "tern " PACKAGE_VERSION);
	} else if (strcmp(verb, "reload") == 0) {
		struct buf err = BUF_INIT;
		if (master_reload(m, &err))
			reply_simple(c, CONTROL_OK, "Configuration reloaded.");
		else
			reply_simple(c, CONTROL_FAILED, buf_cstr(&err));
		buf_free(&err);
	} else if (strcmp(verb, "reopen-log") == 0) {
		struct buf err = BUF_INIT;
		if (master_reopen_log(m, &err))
			reply_simple(c, CONTROL_OK, "Log file reopened.");
		else
			reply_simple(c, CONTROL_FAILED, buf_cstr(&err));
		buf_free(&err);
	} else if (strcmp(verb, "stop") == 0) {
		reply_simple(c, CONTROL_OK, "Stopping.");
		master_begin_stop(m);
	} else {
		reply_simple(c, CONTROL_FAILED, "unknown request");
	}
}

static void client_free(struct control_client *c)
{
	if (c->relay)
		master_relay_cancel(c->relay);
	bufferevent_free(c->bev);
	free(c);
}

static void on_relay_done(void *arg, bool ok, const char *reason)
{
	struct control_client *c = arg;
	c->relay = NULL;
	if (ok)
		c->replied = true;
	else
		reply_simple(c, CONTROL_FAILED, reason);
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		client_free(c);
}

/* Hands a request for another daemon on.  A relayed request may follow a
 * stream for as long as the caller likes, so the idle timeouts go. */
static void relay_request(struct control_client *c, const char *service, const void *payload, size_t len)
{
	c->relay =
	    master_relay_start(c->master, service, c->bev, payload, len, c->role == ROLE_ADMIN, on_relay_done, c);
	if (c->relay == NULL) {
		struct buf reason = BUF_INIT;
		buf_printf(&reason, "%s is not running", service);
		reply_simple(c, CONTROL_FAILED, buf_cstr(&reason));
		buf_free(&reason);
	} else {
		bufferevent_set_timeouts(c->bev, NULL, NULL);
	}
}

static void on_client_read(struct bufferevent *bev, void *arg)
{
	struct control_client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->replied) {
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	struct buf err = BUF_INIT, verb = BUF_INIT, frame = BUF_INIT;
	enum ipc_frame_status st = ipc_frame_take_evbuffer(in, CONTROL_MAX_FRAME, &frame, &err);
	if (st == IPC_FRAME_PARTIAL) {
		buf_free(&err);
		return;
	}
	if (st == IPC_FRAME_COMPLETE) {
		const unsigned char *payload = (const unsigned char *)frame.data;
		size_t len = frame.len;
		const char *service = NULL;
		if (ipc_peek_request(payload, len, &verb, &err) && (service = master_relay_service(buf_cstr(&verb)))) {
			relay_request(c, service, payload, len);
		} else if (verb.len) {
			struct ipc_msg msg;
			if (ipc_decode(payload, len, request_spec, IPC_SPEC_COUNT(request_spec), &msg, &err))
				handle_request(c, buf_cstr(&verb));
			ipc_msg_free(&msg);
		}
	}
	buf_free(&frame);
	if (!c->replied && !c->relay)
		log_warning("control: dropping a client that sent a bad request: %s", buf_cstr(&err));
	buf_free(&err);
	buf_free(&verb);
	if (!c->replied && !c->relay) {
		client_free(c);
		return;
	}
	bufferevent_disable(bev, EV_READ);
}

static void on_client_write(struct bufferevent *bev, void *arg)
{
	struct control_client *c = arg;
	if (c->replied && !c->relay && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_free(c);
}

static void on_client_event(struct bufferevent *bev, short what, void *arg)
{
	client_free(arg);
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct master *m = arg;
	int client = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (client < 0)
		return;
	enum control_role role = peer_role(m, client);
	if (role == ROLE_NONE) {
		log_warning("control: refused a connection from an unauthorised user");
		close(client);
		return;
	}
	struct control_client *c = mem_zalloc(sizeof(*c));
	c->master = m;
	c->role = role;
	c->bev = bufferevent_socket_new(m->base, client, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, on_client_read, on_client_write, on_client_event, c);
	struct timeval timeout = {CONTROL_TIMEOUT_SECONDS, 0};
	bufferevent_set_timeouts(c->bev, &timeout, &timeout);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CONTROL_MAX_FRAME + IPC_FRAME_HEADER);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* ---- the socket ------------------------------------------------------------------- */

static char *control_path(const struct master *m)
{
	return mem_asprintf("%s/" MASTER_CONTROL_SOCKET, m->spool);
}

bool master_control_open(struct master *m, struct buf *err)
{
	char *path = control_path(m);
	/* The pid file lock says no other master runs: what is there is stale. */
	int fd = listen_unix(path, 64, 0660, 0, m->user_gid, err);
	free(path);
	if (fd < 0)
		return false;
	m->control_fd = fd;
	m->control_ev = event_new(m->base, fd, EV_READ | EV_PERSIST, on_accept, m);
	event_add(m->control_ev, NULL);
	return true;
}

void master_control_close(struct master *m)
{
	if (m->control_ev)
		event_free(m->control_ev);
	m->control_ev = NULL;
	if (m->control_fd >= 0) {
		close(m->control_fd);
		char *path = control_path(m);
		unlink(path);
		free(path);
	}
	m->control_fd = -1;
}
