/* smtp_conn.c: one outbound TCP connection on the event loop: a
 * non-blocking connect (from a chosen source address), buffered writes,
 * reads handed to the owner, a timer for whatever the owner waits for, and
 * non-blocking OpenSSL once STARTTLS has been agreed.  The owner may close
 * the connection from inside any of its callbacks. */
#include "smtp.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>

#include "listen.h"
#include "mem.h"

#define READ_CHUNK 16384

enum conn_state { CONN_CONNECTING, CONN_OPEN, CONN_HANDSHAKE, CONN_FAILED };

struct smtp_conn {
	struct event_base *base;
	int fd;
	SSL *ssl;
	enum conn_state state;
	struct buf in, out;
	struct event *ev_connect, *ev_read, *ev_write, *timer;
	int64_t timeout;
	char *early_error; /* a failure found before the loop was involved */
	const struct smtp_conn_events *events;
	void *arg;
	char local_ip[ADDR_IP_STRLEN];
	char peer[ADDR_IP_STRLEN + 10];
	/* Callbacks in progress, and a close asked for during one: the
	 * memory goes when the outermost callback returns. */
	unsigned busy;
	bool closed;
};

static void conn_free(struct smtp_conn *c)
{
	event_free(c->ev_connect);
	event_free(c->ev_read);
	event_free(c->ev_write);
	event_free(c->timer);
	free(c->early_error);
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

static void enter(struct smtp_conn *c)
{
	c->busy++;
}

/* Returns false when the connection is gone (do not touch it). */
static bool leave(struct smtp_conn *c)
{
	if (--c->busy == 0 && c->closed) {
		conn_free(c);
		return false;
	}
	return !c->closed;
}

static void fail(struct smtp_conn *c, const char *why)
{
	if (c->closed || c->state == CONN_FAILED)
		return;
	c->state = CONN_FAILED;
	event_del(c->ev_connect);
	event_del(c->ev_read);
	event_del(c->ev_write);
	event_del(c->timer);
	c->events->failed(c->arg, why);
}

static void fail_errno(struct smtp_conn *c, const char *what, int err)
{
	struct buf why = BUF_INIT;
	buf_printf(&why, "%s %s: %s", what, c->peer, strerror(err));
	fail(c, buf_cstr(&why));
	buf_free(&why);
}

static void fail_tls(struct smtp_conn *c, const char *what)
{
	struct buf why = BUF_INIT;
	buf_printf(&why, "%s with %s", what, c->peer);
	size_t mark = why.len;
	buf_puts(&why, ": ");
	tls_append_errors(&why);
	if (why.len == mark + 2)
		buf_truncate(&why, mark);
	fail(c, buf_cstr(&why));
	buf_free(&why);
}

static void arm_timer(struct smtp_conn *c)
{
	if (c->timeout <= 0) {
		event_del(c->timer);
		return;
	}
	struct timeval tv = {.tv_sec = (time_t)c->timeout};
	event_add(c->timer, &tv);
}

void smtp_conn_set_timeout(struct smtp_conn *c, int64_t seconds)
{
	c->timeout = seconds;
	arm_timer(c);
}

/* ---- I/O ---------------------------------------------------------------------- */

static void want_write(struct smtp_conn *c, bool on)
{
	if (on)
		event_add(c->ev_write, NULL);
	else
		event_del(c->ev_write);
}

/* Writes what it can; false after a failure. */
static bool flush(struct smtp_conn *c)
{
	while (c->out.len > 0) {
		ssize_t n;
		if (c->ssl) {
			ERR_clear_error();
			int r = SSL_write(c->ssl, c->out.data, (int)(c->out.len > INT32_MAX ? INT32_MAX : c->out.len));
			if (r <= 0) {
				int e = SSL_get_error(c->ssl, r);
				if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
					want_write(c, e == SSL_ERROR_WANT_WRITE);
					return true;
				}
				fail_tls(c, "TLS write failed");
				return false;
			}
			n = r;
		} else {
			n = write(c->fd, c->out.data, c->out.len);
			if (n < 0) {
				if (errno == EAGAIN || errno == EINTR) {
					want_write(c, true);
					return true;
				}
				fail_errno(c, "write to", errno);
				return false;
			}
		}
		buf_consume(&c->out, (size_t)n);
		arm_timer(c); /* progress restarts the clock */
		if (c->out.len == 0 && c->events->drained) {
			want_write(c, false);
			c->events->drained(c->arg);
			return !c->closed && c->state == CONN_OPEN;
		}
	}
	want_write(c, false);
	return true;
}

/* One read (through TLS once it is on): bytes read, 0 when nothing more
 * is there now, -1 at the end of the stream or on an error, said in why. */
static ssize_t read_some(struct smtp_conn *c, struct buf *why)
{
	char *at = c->in.data + c->in.len;
	if (c->ssl == NULL) {
		ssize_t n = read(c->fd, at, READ_CHUNK);
		if (n > 0)
			return n;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		if (n < 0)
			buf_printf(why, "read from %s: %s", c->peer, strerror(errno));
		else
			buf_puts(why, "connection closed by the server");
		return -1;
	}
	ERR_clear_error();
	int r = SSL_read(c->ssl, at, READ_CHUNK);
	if (r > 0)
		return r;
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ)
		return 0;
	if (e == SSL_ERROR_WANT_WRITE) {
		want_write(c, true);
		return 0;
	}
	if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
		buf_puts(why, "connection closed by the server");
	} else {
		buf_printf(why, "TLS read failed with %s: ", c->peer);
		tls_append_errors(why);
	}
	return -1;
}

/* Reads what is there and hands it to the owner; then reports the end of
 * the stream, if it came: a server's last reply (a 421, the 220 to
 * STARTTLS before it hung up) is still seen first.  A short read means
 * the socket is empty for now (the read event comes back for an end of
 * stream behind it), unless TLS still holds bytes it has read ahead. */
static void fill(struct smtp_conn *c)
{
	size_t before = c->in.len;
	struct buf why = BUF_INIT;
	ssize_t n;
	do {
		buf_reserve(&c->in, READ_CHUNK);
		n = read_some(c, &why);
		if (n > 0) {
			c->in.len += (size_t)n;
			c->in.data[c->in.len] = '\0';
		}
	} while (n == READ_CHUNK || (n > 0 && c->ssl != NULL && SSL_has_pending(c->ssl)));
	if (c->in.len > before) {
		arm_timer(c);
		c->events->readable(c->arg, &c->in);
	}
	if (n < 0 && !c->closed && c->state == CONN_HANDSHAKE) {
		buf_reset(&why);
		buf_puts(&why, "TLS handshake failed: connection closed by the server");
	}
	if (n < 0 && !c->closed)
		fail(c, buf_cstr(&why));
	buf_free(&why);
}

static void handshake(struct smtp_conn *c)
{
	ERR_clear_error();
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->state = CONN_OPEN;
		want_write(c, false);
		c->events->tls_done(c->arg);
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ) {
		want_write(c, false);
		return;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		want_write(c, true);
		return;
	}
	if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
		fail(c, "TLS handshake failed: connection closed by the server");
	else
		fail_tls(c, "TLS handshake failed");
}

/* Everything that can move: one function for both directions, because
 * OpenSSL may need to read in order to write and the other way round.
 * In clear a socket is read only when it said it is readable: after a
 * write the reply is not there yet, and a read would only say so. */
static void pump(struct smtp_conn *c, short what)
{
	if (c->state == CONN_HANDSHAKE) {
		handshake(c);
		return;
	}
	if (c->state != CONN_OPEN)
		return;
	if (flush(c) && c->state == CONN_OPEN && !c->closed && (c->ssl != NULL || (what & EV_READ)))
		fill(c);
}

static void connected(struct smtp_conn *c)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err != 0) {
		fail_errno(c, "connect to", err);
		return;
	}
	struct sockaddr_storage local;
	socklen_t local_len = sizeof local;
	struct addr_ip ip;
	if (getsockname(c->fd, (struct sockaddr *)&local, &local_len) == 0 &&
	    addr_ip_from_sockaddr((struct sockaddr *)&local, &ip, NULL)) {
		addr_ip_unmap(&ip);
		addr_ip_format(&ip, c->local_ip);
	}
	c->state = CONN_OPEN;
	event_add(c->ev_read, NULL);
	c->events->connected(c->arg);
}

static void on_connect(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;
	enter(c);
	connected(c);
	leave(c);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;
	enter(c);
	pump(c, what);
	leave(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_conn *c = arg;
	enter(c);
	fail(c, c->early_error ? c->early_error : "timed out");
	leave(c);
}

/* ---- the connection ------------------------------------------------------------- */

static bool bind_source(int fd, const struct addr_ip *source, int family)
{
	if (source == NULL || source->family != family)
		return true;
	struct sockaddr_storage sa;
	socklen_t len = addr_ip_to_sockaddr(source, 0, &sa);
	return bind(fd, (struct sockaddr *)&sa, len) == 0;
}

/* Reports a failure that happened before the loop got involved from the
 * loop, so that the owner never sees a callback before open returns. */
static void fail_later(struct smtp_conn *c, const char *what, int err)
{
	c->early_error = mem_asprintf("%s %s: %s", what, c->peer, strerror(err));
	struct timeval now = {0, 0};
	event_add(c->timer, &now);
}

struct smtp_conn *smtp_conn_open(struct event_base *base, const struct smtp_target *target,
                                 const struct addr_ip *source, int64_t timeout, const struct smtp_conn_events *events,
                                 void *arg)
{
	struct smtp_conn *c = mem_zalloc(sizeof *c);
	c->base = base;
	c->events = events;
	c->arg = arg;
	c->timeout = timeout;
	buf_init(&c->in);
	buf_init(&c->out);
	char ip[ADDR_IP_STRLEN];
	addr_ip_format(&target->ip, ip);
	snprintf(c->peer, sizeof c->peer, target->ip.family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip,
	         (unsigned)target->port);
	struct sockaddr_storage sa;
	socklen_t len = addr_ip_to_sockaddr(&target->ip, target->port, &sa);
	c->fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd >= 0)
		socket_no_delay(c->fd);
	c->ev_connect = event_new(base, c->fd, EV_WRITE, on_connect, c);
	c->ev_read = event_new(base, c->fd, EV_READ | EV_PERSIST, on_io, c);
	c->ev_write = event_new(base, c->fd, EV_WRITE | EV_PERSIST, on_io, c);
	c->timer = event_new(base, -1, 0, on_timer, c);
	c->state = CONN_CONNECTING;
	if (c->fd < 0)
		fail_later(c, "cannot create a socket for", errno);
	else if (!bind_source(c->fd, source, sa.ss_family))
		fail_later(c, "cannot bind the source address for", errno);
	else if (connect(c->fd, (struct sockaddr *)&sa, len) < 0 && errno != EINPROGRESS)
		fail_later(c, "connect to", errno);
	else {
		event_add(c->ev_connect, NULL);
		arm_timer(c);
	}
	return c;
}

size_t smtp_conn_unsent(const struct smtp_conn *c)
{
	return c->out.len;
}

void smtp_conn_write(struct smtp_conn *c, const void *data, size_t len)
{
	/* Sent from the loop, never from inside the caller: a write error
	 * then reaches the owner through its failed callback at a time
	 * when it expects callbacks. */
	buf_append(&c->out, data, len);
	/* ...but in this turn of the loop, with what else the owner writes
	 * now: the write event runs as if the socket had said it is
	 * writable, and is armed for real only if it is not. */
	if (c->state == CONN_OPEN)
		event_active(c->ev_write, EV_WRITE, 0);
}

void smtp_conn_start_tls(struct smtp_conn *c, SSL *ssl)
{
	/* Anything the server sent after its 220 to STARTTLS arrived in clear
	 * and could have been injected by anyone on the path. */
	buf_reset(&c->in);
	c->ssl = ssl;
	SSL_set_fd(ssl, c->fd);
	SSL_set_connect_state(ssl);
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* one read(2) takes what the socket has, not a record header and
	 * then its body */
	SSL_set_read_ahead(ssl, 1);
	c->state = CONN_HANDSHAKE;
	/* The handshake starts from the loop (see smtp_conn_write). */
	want_write(c, true);
}

SSL *smtp_conn_ssl(struct smtp_conn *c)
{
	return c->ssl;
}

const char *smtp_conn_local_ip(const struct smtp_conn *c)
{
	return c->local_ip;
}

void smtp_conn_close(struct smtp_conn *c)
{
	if (c == NULL || c->closed)
		return;
	c->closed = true;
	event_del(c->ev_connect);
	event_del(c->ev_read);
	event_del(c->ev_write);
	event_del(c->timer);
	if (c->ssl && c->state == CONN_OPEN) {
		/* A courtesy close_notify; we do not wait for the answer. */
		SSL_shutdown(c->ssl);
	}
	if (c->busy == 0)
		conn_free(c);
}
