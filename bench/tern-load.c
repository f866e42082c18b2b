/* tern-load: the benchmark's SMTP load generator.  Drives one server with
 * many concurrent sessions (each reusing its connection for many messages,
 * optionally after STARTTLS), pipelines the envelope, and measures the
 * "." -> 250 latency of every message (and the envelope's round trip, from
 * MAIL to the 354), its own CPU and the whole machine's over the run; or
 * holds many idle connections open. */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

enum phase { P_GREETING, P_EHLO, P_STARTTLS, P_EHLO_TLS, P_ENVELOPE, P_BODY, P_QUIT, P_IDLE };

struct opts {
	const char *host;
	int port;
	unsigned conc;      /* concurrent sessions */
	unsigned long msgs; /* messages to send in all */
	size_t size;        /* body size in bytes */
	bool tls;           /* STARTTLS before the first message */
	unsigned rcpts;     /* recipients per message */
	unsigned domains;   /* recipient domains rotate over this many */
	const char *domain; /* recipients are u<N>@d<M>.<domain> */
	unsigned per_conn;  /* messages per connection (0: no limit) */
	unsigned idle;      /* idle mode: hold this many connections */
	unsigned timeout;   /* seconds before giving up */
};

struct session {
	struct bufferevent *bev;
	enum phase phase;
	unsigned replies_due; /* replies still expected in this phase */
	bool failed;          /* a reply in this phase was not a success */
	unsigned sent;        /* messages on this connection */
	double t_dot;         /* when the body's last byte left */
	double t_envelope;    /* when the envelope was queued for sending */
};

/* Latencies in seconds, one per message. */
struct series {
	double *values;
	size_t n;
};

static struct opts opt = {
    .host = "127.0.0.1", .conc = 20, .msgs = 1000, .size = 2048, .rcpts = 1, .domains = 1, .domain = "bench.test", .timeout = 120};
static struct event_base *base;
static SSL_CTX *ssl_ctx;
static char *body;
static size_t body_len;
static unsigned long claimed, accepted, rejected, rcpt_seq;
static unsigned open_sessions, connecting, idle_ready, failures;
static struct series dot_latency, envelope_latency;
static double t_start, t_last;
static double busy_start; /* the machine's busy CPU seconds at t_start */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds all of the machine's CPUs have been busy since boot (not
 * idle, not waiting for I/O), by /proc/stat; -1 when unreadable. */
static double machine_busy_seconds(void)
{
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[8] = {0};
	int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
	                   &v[6], &v[7])
	          : 0;
	if (f)
		fclose(f);
	if (n < 5)
		return -1;
	unsigned long long busy = 0;
	for (int i = 0; i < n; i++)
		if (i != 3 && i != 4)
			busy += v[i];
	return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static void usage(void)
{
	fprintf(stderr, "usage: tern-load -p PORT [-H HOST] [-c SESSIONS] [-n MESSAGES] [-s SIZE] [-t]\n"
	                "                 [-r RCPTS] [-D DOMAINS] [-d DOMAIN] [-m PER-CONN] [-i IDLE] [-T SECONDS]\n");
	exit(2);
}

/* A message of about opt.size bytes: a few headers and 76-column lines. */
static void build_body(void)
{
	const char *hdr = "From: <load@bench.test>\r\nTo: <rcpt@bench.test>\r\nSubject: tern benchmark\r\n"
	                  "Message-ID: <bench@load.test>\r\n\r\n";
	size_t cap = opt.size + 256;
	body = malloc(cap);
	if (body == NULL)
		exit(1);
	body_len = (size_t)snprintf(body, cap, "%s", hdr);
	while (body_len + 78 <= opt.size) {
		memset(body + body_len, 'x', 76);
		memcpy(body + body_len + 76, "\r\n", 2);
		body_len += 78;
	}
	memcpy(body + body_len, ".\r\n", 3);
	body_len += 3;
}

static void session_start(void);
static void session_read(struct bufferevent *bev, void *arg);
static void session_write(struct bufferevent *bev, void *arg);
static void session_event(struct bufferevent *bev, short what, void *arg);

static void session_free(struct session *s)
{
	bool failed = s->failed;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	free(s);
	open_sessions--;
	if (claimed < opt.msgs && opt.idle == 0 && !failed)
		session_start();
	else if (open_sessions == 0)
		event_base_loopexit(base, NULL);
}

static void expect(struct session *s, enum phase p, unsigned replies)
{
	s->phase = p;
	s->replies_due = replies;
	s->failed = false;
}

static void send_envelope(struct session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	evbuffer_add_printf(out, "MAIL FROM:<load@bench.test>\r\n");
	for (unsigned i = 0; i < opt.rcpts; i++) {
		unsigned long n = rcpt_seq++;
		evbuffer_add_printf(out, "RCPT TO:<u%lu@d%lu.%s>\r\n", n, n % opt.domains, opt.domain);
	}
	evbuffer_add(out, "DATA\r\n", 6);
	expect(s, P_ENVELOPE, opt.rcpts + 2);
	s->t_envelope = now();
}

/* The next message on this connection, or QUIT when there is none. */
static void next_message(struct session *s)
{
	bool limit = opt.per_conn != 0 && s->sent >= opt.per_conn;
	if (claimed >= opt.msgs || limit) {
		bufferevent_write(s->bev, "QUIT\r\n", 6);
		expect(s, P_QUIT, 1);
		return;
	}
	claimed++;
	send_envelope(s);
}

static void start_tls(struct session *s)
{
	/* the plain bufferevent goes, the socket stays for the TLS one */
	evutil_socket_t fd = bufferevent_getfd(s->bev);
	bufferevent_setfd(s->bev, -1);
	bufferevent_free(s->bev);
	SSL *ssl = SSL_new(ssl_ctx);
	s->bev = bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, session_read, session_write, session_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	bufferevent_write(s->bev, "EHLO load.bench.test\r\n", 22);
	expect(s, P_EHLO_TLS, 1);
}

static void record_accept(struct session *s)
{
	double t = now();
	if (!s->failed) {
		dot_latency.values[dot_latency.n++] = t - s->t_dot;
		accepted++;
		t_last = t;
	} else {
		rejected++;
	}
	s->sent++;
}

/* Acts on a phase's last reply; false when the session should end. */
static bool phase_done(struct session *s)
{
	switch (s->phase) {
	case P_GREETING:
		if (s->failed)
			return false;
		if (opt.idle != 0) {
			s->phase = P_IDLE;
			connecting--;
			if (++idle_ready == opt.idle) {
				printf("idle_connections %u\n", idle_ready);
				fflush(stdout);
			}
			session_start();
			return true;
		}
		bufferevent_write(s->bev, "EHLO load.bench.test\r\n", 22);
		expect(s, P_EHLO, 1);
		return true;
	case P_EHLO:
		if (s->failed)
			return false;
		if (opt.tls) {
			bufferevent_write(s->bev, "STARTTLS\r\n", 10);
			expect(s, P_STARTTLS, 1);
		} else {
			next_message(s);
		}
		return true;
	case P_STARTTLS:
		if (s->failed)
			return false;
		start_tls(s);
		return true;
	case P_EHLO_TLS:
		if (s->failed)
			return false;
		next_message(s);
		return true;
	case P_ENVELOPE:
		if (s->failed) {
			/* DATA refused: the server expects no body */
			rejected++;
			return false;
		}
		envelope_latency.values[envelope_latency.n++] = now() - s->t_envelope;
		expect(s, P_BODY, 1);
		s->t_dot = 0;
		evbuffer_add_reference(bufferevent_get_output(s->bev), body, body_len, NULL, NULL);
		return true;
	case P_BODY:
		record_accept(s);
		next_message(s);
		return true;
	default:
		return false;
	}
}

/* Reads complete replies; a reply ends on a line whose fourth byte is a space. */
static void session_read(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;
	char *line;
	while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
		bool last = len < 4 || line[3] != '-';
		char code = line[0];
		bool data_go = s->phase == P_ENVELOPE && s->replies_due == 1;
		free(line);
		if (!last)
			continue;
		if (data_go ? code != '3' : code != '2')
			s->failed = true;
		if (s->phase == P_IDLE)
			continue;
		if (--s->replies_due > 0)
			continue;
		if (!phase_done(s)) {
			if (s->phase != P_QUIT)
				failures++;
			session_free(s);
			return;
		}
		if (s->bev != bev)
			return; /* replaced by the TLS bufferevent */
	}
}

static void session_write(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;
	if (s->phase == P_BODY && s->t_dot == 0)
		s->t_dot = now();
}

static void session_event(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		return;
	}
	if (s->phase != P_QUIT) {
		failures++;
		if (s->phase == P_GREETING && opt.idle != 0)
			connecting--;
		s->failed = true;
		if (failures <= 5) {
			unsigned long e = bufferevent_get_openssl_error(bev);
			fprintf(stderr, "tern-load: session lost in phase %d: %s\n", (int)s->phase,
			        e ? ERR_error_string(e, NULL) : strerror(EVUTIL_SOCKET_ERROR()));
		}
	}
	session_free(s);
}

static void session_start(void)
{
	if (opt.idle != 0 && idle_ready + connecting >= opt.idle)
		return;
	struct session *s = calloc(1, sizeof(*s));
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
	inet_pton(AF_INET, opt.host, &sin.sin_addr);
	s->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(s->bev, session_read, session_write, session_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	expect(s, P_GREETING, 1);
	open_sessions++;
	connecting++;
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		fprintf(stderr, "tern-load: connect: %s\n", strerror(errno));
		exit(1);
	}
	if (opt.idle == 0)
		connecting--;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* In milliseconds, of a sorted series. */
static double percentile(const struct series *s, double p)
{
	if (s->n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
	return s->values[i] * 1000.0;
}

static double mean(const struct series *s)
{
	double sum = 0;
	for (size_t i = 0; i < s->n; i++)
		sum += s->values[i];
	return s->n ? sum / (double)s->n * 1000.0 : 0;
}

static void report(void)
{
	double elapsed = t_last > t_start ? t_last - t_start : 0;
	double busy_end = machine_busy_seconds(), span = now() - t_start;
	qsort(dot_latency.values, dot_latency.n, sizeof(double), cmp_double);
	qsort(envelope_latency.values, envelope_latency.n, sizeof(double), cmp_double);
	printf("messages %lu\n", accepted);
	printf("rejected %lu\n", rejected);
	printf("failures %u\n", failures);
	printf("started_mono_s %.6f\n", t_start);
	printf("elapsed_s %.4f\n", elapsed);
	printf("rate_msg_s %.1f\n", elapsed > 0 ? (double)accepted / elapsed : 0.0);
	printf("latency_p50_ms %.3f\n", percentile(&dot_latency, 0.50));
	printf("latency_p90_ms %.3f\n", percentile(&dot_latency, 0.90));
	printf("latency_p99_ms %.3f\n", percentile(&dot_latency, 0.99));
	printf("latency_p999_ms %.3f\n", percentile(&dot_latency, 0.999));
	printf("latency_max_ms %.3f\n", percentile(&dot_latency, 1.0));
	printf("latency_mean_ms %.3f\n", mean(&dot_latency));
	printf("envelope_p50_ms %.3f\n", percentile(&envelope_latency, 0.50));
	printf("envelope_mean_ms %.3f\n", mean(&envelope_latency));
	struct rusage self;
	if (getrusage(RUSAGE_SELF, &self) == 0)
		printf("generator_cpu_s %.4f\n", (double)self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 +
		                                       (double)self.ru_stime.tv_sec + self.ru_stime.tv_usec / 1e6);
	if (busy_start >= 0 && busy_end >= busy_start) {
		/* the whole machine (every process on it) from the first
		 * connection to now */
		printf("machine_busy_cpu_s %.3f\n", busy_end - busy_start);
		printf("machine_span_s %.4f\n", span);
	}
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
	fprintf(stderr, "tern-load: timed out\n");
	event_base_loopbreak(base);
}

/* Idle mode ends when the driver closes our standard input. */
static void on_stdin(evutil_socket_t fd, short what, void *arg)
{
	char buf[64];
	if (read(fd, buf, sizeof(buf)) <= 0)
		event_base_loopbreak(base);
}

static void parse_args(int argc, char **argv)
{
	int c;
	while ((c = getopt(argc, argv, "H:p:c:n:s:tr:D:d:m:i:T:")) != -1) {
		switch (c) {
		case 'H':
			opt.host = optarg;
			break;
		case 'p':
			opt.port = atoi(optarg);
			break;
		case 'c':
			opt.conc = (unsigned)atoi(optarg);
			break;
		case 'n':
			opt.msgs = strtoul(optarg, NULL, 10);
			break;
		case 's':
			opt.size = strtoul(optarg, NULL, 10);
			break;
		case 't':
			opt.tls = true;
			break;
		case 'r':
			opt.rcpts = (unsigned)atoi(optarg);
			break;
		case 'D':
			opt.domains = (unsigned)atoi(optarg);
			break;
		case 'd':
			opt.domain = optarg;
			break;
		case 'm':
			opt.per_conn = (unsigned)atoi(optarg);
			break;
		case 'i':
			opt.idle = (unsigned)atoi(optarg);
			break;
		case 'T':
			opt.timeout = (unsigned)atoi(optarg);
			break;
		default:
			usage();
		}
	}
	if (opt.port <= 0 || opt.conc == 0 || opt.rcpts == 0 || opt.domains == 0)
		usage();
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	build_body();
	dot_latency.values = calloc(opt.msgs + 1, sizeof(double));
	envelope_latency.values = calloc(opt.msgs + 1, sizeof(double));
	if (dot_latency.values == NULL || envelope_latency.values == NULL)
		exit(1);
	ssl_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_NONE, NULL);
	base = event_base_new();
	struct timeval tv = {.tv_sec = opt.timeout};
	event_add(evtimer_new(base, on_timeout, NULL), &tv);
	if (opt.idle != 0)
		event_add(event_new(base, 0, EV_READ | EV_PERSIST, on_stdin, NULL), NULL);
	t_start = now();
	busy_start = machine_busy_seconds();
	unsigned first = opt.idle != 0 ? (opt.conc < opt.idle ? opt.conc : opt.idle) : opt.conc;
	for (unsigned i = 0; i < first && (opt.idle != 0 || i < opt.msgs); i++)
		session_start();
	event_base_dispatch(base);
	if (opt.idle != 0)
		printf("idle_held %u\n", idle_ready);
	else
		report();
	return accepted == opt.msgs || opt.idle != 0 ? 0 : 1;
}
