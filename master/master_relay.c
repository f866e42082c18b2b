/* master_relay.c: passing control requests on to the daemon that owns
 * them.  A request "qmgr.VERB" goes to qmgr and "acctd.VERB" to acctd,
 * over their sockets in <spool>/private, with the caller's role added
 * ("admin" or "reader") so the daemon decides what the caller may do.
 * Reply frames come back unchanged until the daemon's "end" frame; a
 * request that follows a stream (acct tail) simply never ends, and the
 * relay lasts until either side closes. */
#include "master.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "ipc.h"

#define RELAY_MAX_FRAME (1024 * 1024)
#define RELAY_CONNECT_SECONDS 10

struct relay {
	struct bufferevent *client;  /* ternctl */
	struct bufferevent *service; /* qmgr or acctd */
	char *service_name;
	bool ended;
	void (*done)(void *arg, bool ok, const char *reason);
	void *done_arg;
};

static const char *const relayed_services[] = {"qmgr", "acctd"};

const char *master_relay_service(const char *verb)
{
	for (size_t i = 0; i < sizeof(relayed_services) / sizeof(relayed_services[0]); i++) {
		size_t len = strlen(relayed_services[i]);
		if (strncmp(verb, relayed_services[i], len) == 0 && verb[len] == '.' && verb[len + 1] != '\0')
			return relayed_services[i];
	}
	return NULL;
}

void master_relay_cancel(struct relay *r);

/* Ends the relay and tells the control client, which may free itself. */
static void relay_finish(struct relay *r, bool ok, const char *reason)
{
	void (*done)(void *, bool, const char *) = r->done;
	void *arg = r->done_arg;
	master_relay_cancel(r);
	done(arg, ok, reason);
}

/* Copies whole frames from the service to the client; stops after "end". */
static void on_service_read(struct bufferevent *bev, void *arg)
{
	struct relay *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct buf err = BUF_INIT, verb = BUF_INIT, payload = BUF_INIT;
	while (!r->ended) {
		unsigned char head[IPC_FRAME_HEADER];
		size_t avail = evbuffer_get_length(in), len = 0;
		evbuffer_copyout(in, head, avail < sizeof(head) ? avail : sizeof(head));
		enum ipc_frame_status st = ipc_frame_scan(head, avail, RELAY_MAX_FRAME, &len, &err);
		if (st == IPC_FRAME_PARTIAL)
			break;
		if (st == IPC_FRAME_ERROR) {
			log_warning("control: %s sent a bad reply: %s", r->service_name, buf_cstr(&err));
			relay_finish(r, false, "bad reply from the service");
			goto out;
		}
		buf_reset(&payload);
		buf_reserve(&payload, IPC_FRAME_HEADER + len);
		evbuffer_remove(in, payload.data, IPC_FRAME_HEADER + len);
		payload.len = IPC_FRAME_HEADER + len;
		buf_reset(&verb);
		if (ipc_peek_request(payload.data + IPC_FRAME_HEADER, len, &verb, &err) &&
		    strcmp(buf_cstr(&verb), "end") == 0)
			r->ended = true;
		bufferevent_write(r->client, payload.data, payload.len);
	}
	if (r->ended)
		relay_finish(r, true, NULL);
out:
	buf_free(&err);
	buf_free(&verb);
	buf_free(&payload);
}

static void on_service_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay *r = arg;
	if (what & BEV_EVENT_CONNECTED)
		return;
	struct buf reason = BUF_INIT;
	if (what & BEV_EVENT_TIMEOUT)
		buf_printf(&reason, "%s does not answer", r->service_name);
	else
		buf_printf(&reason, "%s is not running", r->service_name);
	relay_finish(r, false, buf_cstr(&reason));
	buf_free(&reason);
}

void master_relay_cancel(struct relay *r)
{
	if (r->service)
		bufferevent_free(r->service);
	free(r->service_name);
	free(r);
}

struct relay *master_relay_start(struct master *m, const char *service, struct bufferevent *client, const void *payload,
                                 size_t len, bool admin, void (*done)(void *arg, bool ok, const char *reason),
                                 void *arg)
{
	char *path = mem_asprintf("%s/private/%s", m->spool, service);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	bool fits = strlen(path) < sizeof(sun.sun_path);
	if (fits)
		strcpy(sun.sun_path, path);
	free(path);
	if (!fits)
		return NULL;

	struct relay *r = mem_zalloc(sizeof(*r));
	r->client = client;
	r->service_name = mem_strdup(service);
	r->done = done;
	r->done_arg = arg;
	r->service = bufferevent_socket_new(m->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(r->service, on_service_read, NULL, on_service_event, r);
	struct timeval connect_timeout = {RELAY_CONNECT_SECONDS, 0};
	bufferevent_set_timeouts(r->service, NULL, &connect_timeout);
	if (bufferevent_socket_connect(r->service, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		master_relay_cancel(r);
		return NULL;
	}
	/* The request as the client sent it, plus the role. */
	struct buf frame = BUF_INIT, role = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &role, RELAY_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_ROLE, admin ? "admin" : "reader");
	ipc_write_end(&w, &err);
	size_t total = len + role.len - IPC_FRAME_HEADER;
	unsigned char prefix[IPC_FRAME_HEADER] = {(unsigned char)(total >> 24), (unsigned char)(total >> 16),
	                                          (unsigned char)(total >> 8), (unsigned char)total};
	buf_append(&frame, prefix, sizeof(prefix));
	buf_append(&frame, payload, len);
	buf_append(&frame, role.data + IPC_FRAME_HEADER, role.len - IPC_FRAME_HEADER);
	bufferevent_write(r->service, frame.data, frame.len);
	bufferevent_enable(r->service, EV_READ | EV_WRITE);
	buf_free(&frame);
	buf_free(&role);
	buf_free(&err);
	return r;
}
