/* smtpd_main.c: the smtpd daemon - configuration, listening sockets
 * (inherited from master or opened here), accepting connections, the
 * session cap, reload, and the graceful stop that lets sessions in flight
 * finish. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "conf.h"
#include "listen.h"
#include "log.h"
#include "mem.h"
#include "server.h"
#include "smtpd.h"

/* How long sessions in flight may take to finish after SIGTERM. */
#define SMTPD_DRAIN_SECONDS 30
/* Connections taken per wake-up of a listener, so one busy listener cannot
 * starve the sessions already running. */
#define SMTPD_ACCEPT_BURST 64

static struct smtpd_server server;

/* ---- listeners ----------------------------------------------------------------- */

static struct smtpd_listener *add_listener(struct smtpd_server *srv, int fd, const char *name)
{
	srv->listeners = mem_reallocarray(srv->listeners, srv->nlisteners + 1, sizeof(*srv->listeners));
	struct smtpd_listener *l = &srv->listeners[srv->nlisteners++];
	memset(l, 0, sizeof(*l));
	l->server = srv;
	l->fd = fd;
	l->name = mem_strdup(name);
	return l;
}

/* TERN_LISTEN_FDS="3=127.0.0.1:2525,4=127.0.0.1:2465": descriptors master
 * opened for us, each named after its smtp-listener. */
static bool inherit_listeners(struct smtpd_server *srv, const char *spec, struct buf *err)
{
	char *copy = mem_strdup(spec), *save = NULL;
	bool ok = true;
	for (char *item = strtok_r(copy, ",", &save); item && ok; item = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(item, '='), *end;
		long fd = eq ? strtol(item, &end, 10) : -1;
		if (eq == NULL || end != eq || fd < 3 || fd > 65535 || eq[1] == '\0') {
			buf_printf(err, "bad TERN_LISTEN_FDS item \"%s\"", item);
			ok = false;
			break;
		}
		evutil_make_socket_nonblocking((int)fd);
		evutil_make_socket_closeonexec((int)fd);
		add_listener(srv, (int)fd, eq + 1);
	}
	free(copy);
	return ok;
}

static bool open_listeners(struct smtpd_server *srv, struct buf *err)
{
	const struct conf *conf = srv->conf->conf;
	for (size_t i = 0; i < conf_block_count(conf, CONF_LISTENER); i++) {
		const struct conf_block *b = conf_block_at(conf, CONF_LISTENER, i);
		struct listen_sockets socks;
		if (!listen_open(conf_listener_endpoint(b), &socks, err))
			return false;
		for (size_t j = 0; j < socks.count; j++)
			add_listener(srv, socks.fds[j], conf_block_name(b));
		free(socks.fds);
	}
	return true;
}

static void close_listeners(struct smtpd_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		if (l->ev) {
			event_free(l->ev);
			l->ev = NULL;
		}
		if (l->fd >= 0) {
			close(l->fd);
			l->fd = -1;
		}
	}
}

static void free_listeners(struct smtpd_server *srv)
{
	close_listeners(srv);
	for (size_t i = 0; i < srv->nlisteners; i++) {
		free(srv->listeners[i].name);
		free(srv->listeners[i].source_name);
		if (srv->listeners[i].ssl_ctx)
			SSL_CTX_free(srv->listeners[i].ssl_ctx);
	}
	free(srv->listeners);
	srv->listeners = NULL;
	srv->nlisteners = 0;
}

/* Beyond total-max-smtp-in a client gets one line and the door. */
static void refuse_busy(int fd)
{
	static const char busy[] = "421 4.7.0 Too many connections, try again later\r\n";
	ssize_t n = write(fd, busy, sizeof(busy) - 1);
	(void)n;
	close(fd);
}

/* total-max-smtp-in counts the connections of every smtpd worker: each of
 * the smtpd-processes workers master starts takes its share. */
static uint64_t session_cap(const struct smtpd_server *srv)
{
	uint64_t total = srv->conf->max_sessions, n = srv->from_master ? srv->conf->processes : 1;
	return (total + n - 1) / n;
}

/* await-slot: the listener stops accepting until a session ends, so
 * clients wait in the kernel's backlog instead of getting a 421. */
static void pause_listener(struct smtpd_listener *l)
{
	event_del(l->ev);
	l->paused = true;
}

static void resume_listeners(struct smtpd_server *srv)
{
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		if (l->paused && l->ev) {
			l->paused = false;
			event_add(l->ev, NULL);
		}
	}
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_listener *l = arg;
	struct smtpd_server *srv = l->server;
	for (int i = 0; i < SMTPD_ACCEPT_BURST && !srv->stopping; i++) {
		if (l->await_slot && srv->nsessions >= session_cap(srv)) {
			pause_listener(l);
			return;
		}
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		int c = accept4((int)fd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0) {
			/* EAGAIN ends a burst; a socket can also be shared (a worker
			 * replaced by a reload drains beside its successor), so losing
			 * the race is normal.  Running out of descriptors is not, but
			 * is no reason to stop serving the sessions we have. */
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept on %s: %s", l->name, strerror(errno));
			return;
		}
		struct addr_ip ip;
		uint16_t port;
		if (!addr_ip_from_sockaddr((struct sockaddr *)&ss, &ip, &port)) {
			close(c);
			continue;
		}
		addr_ip_unmap(&ip);
		if (srv->nsessions >= session_cap(srv)) {
			char text[ADDR_IP_STRLEN];
			addr_ip_format(&ip, text);
			log_warning("refusing [%s]: total-max-smtp-in %llu reached (%llu in this process)", text,
			            (unsigned long long)srv->conf->max_sessions, (unsigned long long)session_cap(srv));
			refuse_busy(c);
			continue;
		}
		socket_no_delay(c);
		smtpd_session_start(l, c, &ip, port);
	}
}

/* ---- stopping ------------------------------------------------------------------ */

static void update_title(struct smtpd_server *srv)
{
	server_set_title("smtpd %zu session%s%s", srv->nsessions, srv->nsessions == 1 ? "" : "s",
	                 srv->stopping ? " (stopping)" : "");
}

static void finish_if_drained(struct smtpd_server *srv)
{
	if (!srv->stopping || srv->nsessions > 0)
		return;
	if (srv->drain_timer) {
		event_free(srv->drain_timer);
		srv->drain_timer = NULL;
	}
	smtpd_enqueue_pipe_close(srv);
	smtpd_enqueue_pool_clear(srv);
	event_base_loopexit(srv->base, NULL);
}

void smtpd_server_session_gone(struct smtpd_server *srv, struct smtpd_session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	srv->nsessions--;
	if (!srv->stopping && srv->nsessions < session_cap(srv))
		resume_listeners(srv);
	update_title(srv);
	finish_if_drained(srv);
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_server *srv = arg;
	log_info("drain deadline: closing %zu session%s", srv->nsessions, srv->nsessions == 1 ? "" : "s");
	while (srv->sessions)
		smtpd_session_abort(srv->sessions, "421 4.3.2 Service shutting down, closing connection");
	finish_if_drained(srv);
}

static void smtpd_stop(void *ctx)
{
	struct smtpd_server *srv = ctx;
	if (srv->stopping) {
		/* a second signal: do not wait any longer */
		on_drain_deadline(-1, 0, srv);
		return;
	}
	srv->stopping = true;
	close_listeners(srv);
	update_title(srv);
	log_info("no longer accepting; %zu session%s in flight", srv->nsessions, srv->nsessions == 1 ? "" : "s");
	for (struct smtpd_session *s = srv->sessions, *next; s; s = next) {
		next = s->next;
		smtpd_session_drain(s);
	}
	struct timeval deadline = {SMTPD_DRAIN_SECONDS, 0};
	srv->drain_timer = evtimer_new(srv->base, on_drain_deadline, srv);
	evtimer_add(srv->drain_timer, &deadline);
	finish_if_drained(srv);
}

/* ---- the daemon ---------------------------------------------------------------- */

static bool smtpd_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	struct smtpd_server *srv = ctx;
	srv->config_path = mem_strdup(opts->config_path);
	if ((srv->conf = smtpd_conf_load(srv->config_path, err)) == NULL)
		return false;
	const char *fds = getenv("TERN_LISTEN_FDS");
	srv->from_master = fds != NULL;
	if (fds ? !inherit_listeners(srv, fds, err) : !open_listeners(srv, err))
		return false;
	if (srv->nlisteners == 0) {
		buf_puts(err, "no listening socket");
		return false;
	}
	/* Keys may be readable by root only: contexts are built before the drop. */
	for (size_t i = 0; i < srv->nlisteners; i++)
		if (!smtpd_listener_tls(&srv->listeners[i], srv->conf, err))
			return false;
	return true;
}

static bool smtpd_init(void *ctx, struct event_base *base, struct buf *err)
{
	struct smtpd_server *srv = ctx;
	srv->base = base;
	for (size_t i = 0; i < srv->nlisteners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		l->ev = event_new(base, l->fd, EV_READ | EV_PERSIST, on_accept, l);
		if (l->ev == NULL || event_add(l->ev, NULL) < 0) {
			buf_printf(err, "cannot watch listener %s", l->name);
			return false;
		}
		log_info("listening on %s%s%s", l->name, l->immediate_tls ? " (implicit TLS)" : "",
		         l->ssl_ctx && !l->immediate_tls ? " (STARTTLS available)" : "");
	}
	update_title(srv);
	return true;
}

/* A reload takes a new configuration for new sessions; sessions in flight
 * keep the one they started with.  Listeners and their certificates stay
 * (they were opened as root): changing those needs a restart by master. */
static void smtpd_reload(void *ctx)
{
	struct smtpd_server *srv = ctx;
	struct buf err = BUF_INIT;
	struct smtpd_conf *c = smtpd_conf_load(srv->config_path, &err);
	if (c == NULL) {
		log_error("reload refused, keeping the old configuration: %s", buf_cstr(&err));
	} else {
		smtpd_conf_unref(srv->conf);
		srv->conf = c;
		smtpd_enqueue_pool_clear(srv); /* the spool, and so qmgr, may have moved */
		smtpd_enqueue_pipe_retire(srv);
		log_info("configuration reloaded");
	}
	buf_free(&err);
}

int main(int argc, char **argv, char **envp)
{
	const struct server_daemon daemon = {
	    .name = "smtpd",
	    .ctx = &server,
	    .pre_init = smtpd_pre_init,
	    .init = smtpd_init,
	    .stop = smtpd_stop,
	    .reload = smtpd_reload,
	    .drains = true,
	};
	int rc = server_main(&daemon, argc, argv, envp);
	free_listeners(&server);
	smtpd_conf_unref(server.conf);
	free(server.config_path);
	return rc;
}
