/* tern-fastsink: the benchmark's SMTP sink.  One event loop accepts any
 * number of sessions, answers every command at once (PIPELINING, CHUNKING,
 * optional STARTTLS), throws the messages away and counts them; the count,
 * the CLOCK_MONOTONIC time at which the last message was taken and the
 * sink's own CPU seconds then, go to a status file that the benchmark
 * driver polls. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/ssl.h>

struct conn {
	struct bufferevent *bev;
	bool in_data;      /* reading a message body */
	bool data_start;   /* nothing of the body read yet */
	bool in_chunk;     /* reading a BDAT chunk */
	bool chunk_last;   /* ... the message's last */
	size_t chunk_left; /* ... octets of it still to come */
	bool tls_next;     /* switch to TLS once the 220 has left */
	bool tls_active;   /* STARTTLS done */
};

static struct event_base *base;
static SSL_CTX *ssl_ctx; /* NULL: no STARTTLS */
static unsigned long messages, written = ~0UL;
static struct timespec last_taken; /* when messages last grew */
static int status_fd = -1;

static void conn_read(struct bufferevent *bev, void *arg);
static void conn_write(struct bufferevent *bev, void *arg);
static void conn_event(struct bufferevent *bev, short what, void *arg);

static void conn_free(struct conn *c)
{
	bufferevent_free(c->bev);
	free(c);
}

static void reply(struct conn *c, const char *text)
{
	bufferevent_write(c->bev, text, strlen(text));
}

static void ehlo(struct conn *c)
{
	reply(c, "250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n250-CHUNKING\r\n");
	if (ssl_ctx != NULL && !c->tls_active)
		reply(c, "250-STARTTLS\r\n");
	reply(c, "250 ENHANCEDSTATUSCODES\r\n");
}

/* One command line (without its CRLF); false to end the session. */
static bool command(struct conn *c, const char *line, size_t len)
{
	if (len >= 4 && (strncasecmp(line, "EHLO", 4) == 0 || strncasecmp(line, "HELO", 4) == 0)) {
		ehlo(c);
	} else if (len >= 4 && strncasecmp(line, "DATA", 4) == 0) {
		reply(c, "354 go ahead\r\n");
		c->in_data = true;
		c->data_start = true;
	} else if (len >= 5 && strncasecmp(line, "BDAT ", 5) == 0) {
		char *end;
		c->chunk_left = strtoul(line + 5, &end, 10);
		c->chunk_last = strncasecmp(end, " LAST", 5) == 0;
		c->in_chunk = true;
	} else if (len >= 4 && strncasecmp(line, "QUIT", 4) == 0) {
		reply(c, "221 2.0.0 bye\r\n");
		return false;
	} else if (len >= 8 && strncasecmp(line, "STARTTLS", 8) == 0 && ssl_ctx != NULL && !c->tls_active) {
		reply(c, "220 2.0.0 ready\r\n");
		c->tls_next = true;
	} else {
		reply(c, "250 2.0.0 ok\r\n");
	}
	return true;
}

/* Consumes body bytes up to the end-of-data line; true when it was seen. */
static bool body(struct conn *c, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	if (c->data_start && len < 3)
		return false;
	if (c->data_start) {
		c->data_start = false;
		unsigned char head[3];
		evbuffer_copyout(in, head, 3);
		if (memcmp(head, ".\r\n", 3) == 0) {
			evbuffer_drain(in, 3);
			return true;
		}
	}
	struct evbuffer_ptr p = evbuffer_search(in, "\r\n.\r\n", 5, NULL);
	if (p.pos >= 0) {
		evbuffer_drain(in, (size_t)p.pos + 5);
		return true;
	}
	/* keep the tail: the terminator may be split across reads, and a
	 * tail of "\r\n" must not be mistaken for the start of a body */
	if (len > 4)
		evbuffer_drain(in, len - 4);
	return false;
}

/* Consumes chunk octets; true when the whole chunk was seen. */
static bool chunk(struct conn *c, struct evbuffer *in)
{
	size_t len = evbuffer_get_length(in);
	size_t take = len < c->chunk_left ? len : c->chunk_left;
	evbuffer_drain(in, take);
	c->chunk_left -= take;
	return c->chunk_left == 0;
}

static void message_taken(void)
{
	messages++;
	clock_gettime(CLOCK_MONOTONIC, &last_taken);
}

static void conn_read(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		if (c->tls_next)
			return; /* pipelined bytes after STARTTLS are ignored */
		if (c->in_data) {
			if (!body(c, in))
				return;
			c->in_data = false;
			message_taken();
			reply(c, "250 2.0.0 accepted\r\n");
			continue;
		}
		if (c->in_chunk) {
			if (!chunk(c, in))
				return;
			c->in_chunk = false;
			if (c->chunk_last)
				message_taken();
			reply(c, c->chunk_last ? "250 2.0.0 accepted\r\n" : "250 2.0.0 chunk received\r\n");
			continue;
		}
		size_t len;
		char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL)
			return;
		bool go_on = command(c, line, len);
		free(line);
		if (!go_on) {
			bufferevent_disable(bev, EV_READ); /* closing once the 221 left */
			return;
		}
	}
}

static void start_tls(struct conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	bufferevent_setfd(c->bev, -1);
	bufferevent_free(c->bev);
	c->tls_next = false;
	c->tls_active = true;
	c->bev = bufferevent_openssl_socket_new(base, fd, SSL_new(ssl_ctx), BUFFEREVENT_SSL_ACCEPTING,
	                                        BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, conn_read, conn_write, conn_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* Output drained: time for TLS after a 220, or to close after a 221. */
static void conn_write(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	if (c->tls_next)
		start_tls(c);
	else if (!(bufferevent_get_enabled(bev) & EV_READ))
		conn_free(c);
}

static void conn_event(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, conn_read, conn_write, conn_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	reply(c, "220 sink.bench.test ESMTP tern-fastsink\r\n");
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	if (status_fd < 0 || messages == written)
		return;
	/* its own CPU too, finer than /proc/PID/stat's ticks */
	struct rusage self;
	double cpu = getrusage(RUSAGE_SELF, &self) == 0
	                 ? (double)self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 + (double)self.ru_stime.tv_sec +
	                       self.ru_stime.tv_usec / 1e6
	                 : 0.0;
	char buf[96];
	int n = snprintf(buf, sizeof(buf), "%20lu %20lld.%09ld %16.6f\n", messages, (long long)last_taken.tv_sec,
	                 last_taken.tv_nsec, cpu);
	if (pwrite(status_fd, buf, (size_t)n, 0) == n)
		written = messages;
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
	event_base_loopbreak(base);
}

static SSL_CTX *load_tls(const char *pem)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, pem) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, pem, SSL_FILETYPE_PEM) != 1) {
		fprintf(stderr, "tern-fastsink: cannot load %s\n", pem);
		exit(1);
	}
	return ctx;
}

static void usage(void)
{
	fprintf(stderr, "usage: tern-fastsink -p PORT [-H HOST] [-C CERT+KEY.pem] [-s STATUS-FILE]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1", *status = NULL;
	int port = 0, ch;
	while ((ch = getopt(argc, argv, "H:p:C:s:")) != -1) {
		if (ch == 'H')
			host = optarg;
		else if (ch == 'p')
			port = atoi(optarg);
		else if (ch == 'C')
			ssl_ctx = load_tls(optarg);
		else if (ch == 's')
			status = optarg;
		else
			usage();
	}
	if (port <= 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (status != NULL && (status_fd = open(status, O_WRONLY | O_CREAT | O_TRUNC, 0644)) < 0) {
		perror(status);
		return 1;
	}
	base = event_base_new();
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &sin.sin_addr);
	struct evconnlistener *l =
	    evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 4096,
	                            (struct sockaddr *)&sin, sizeof(sin));
	if (l == NULL) {
		perror("tern-fastsink: listen");
		return 1;
	}
	struct timeval tick = {.tv_usec = 20000};
	event_add(event_new(base, -1, EV_PERSIST, on_tick, NULL), &tick);
	event_add(evsignal_new(base, SIGTERM, on_signal, NULL), NULL);
	event_add(evsignal_new(base, SIGINT, on_signal, NULL), NULL);
	on_tick(-1, 0, NULL);
	printf("ready %d\n", port);
	fflush(stdout);
	event_base_dispatch(base);
	on_tick(-1, 0, NULL);
	return 0;
}
