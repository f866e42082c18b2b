/* smtp_dns.c: where to deliver, from DNS.  libunbound answers
 * asynchronously through ub_fd, which the event loop watches; its cache
 * keeps every answer for its TTL, so the many jobs of a busy domain cost
 * one lookup per TTL, not one each.
 *
 * A lookup runs in two phases: first the MX records (of the domain, or of
 * the lookup-mx: entries of a static route), giving an ordered list of
 * host names; then the A and AAAA records of all those hosts at once.
 * The targets come out in preference order, equal preferences shuffled
 * (RFC 5321 5.1), IPv4 before IPv6 for each host. */
#include "smtp.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>
#include <unbound.h>

#include "log.h"
#include "mem.h"

#define TYPE_A 1
#define TYPE_MX 15
#define TYPE_AAAA 28
#define CLASS_IN 1

static struct ub_ctx *resolver;
static struct event *resolver_event;
static struct event_base *loop;

/* A host to resolve (phase two), in the order its addresses are tried. */
struct host {
	char *name;
	bool literal;
	uint16_t port;
	struct addr_ip *addrs;
	size_t naddrs;
	bool temp_error;
};

/* An MX lookup (phase one) whose hosts take the place of entry `slot`. */
struct mx_query {
	char *domain;
	bool implicit_ok; /* no MX: the domain itself (RFC 5321 5.1) */
	uint16_t port;
	struct host *hosts;
	size_t nhosts;
};

struct query {
	struct smtp_lookup *lookup;
	int async_id;
	bool active;
	int type;
	size_t index; /* mx query or host */
};

struct smtp_lookup {
	smtp_targets_cb cb;
	void *arg;
	char *domain;
	uint16_t default_port;
	bool bounce_upon_no_mx;
	/* phase one */
	struct mx_query *mxq; /* one per route entry; an entry without MX
	                         lookup has a single fixed host */
	size_t nmxq;
	/* phase two */
	struct host *hosts;
	size_t nhosts;
	struct query **queries;
	size_t nqueries, pending;
	/* the end */
	enum smtp_dns_outcome outcome;
	struct buf why;
	bool finished;
	struct event *report; /* delivers the answer from the loop */
};

/* ---- the resolver ----------------------------------------------------------------- */

static void on_resolver_readable(evutil_socket_t fd, short what, void *arg)
{
	int err = ub_process(resolver);
	if (err != 0)
		log_error("DNS resolver: %s", ub_strerror(err));
}

/* "IP", "IP:PORT", "[IPv6]:PORT" into unbound's "IP@PORT". */
static bool forwarder(const char *text, struct buf *out, struct buf *err)
{
	struct addr_ip ip;
	struct addr_endpoint ep;
	char addr[ADDR_IP_STRLEN];
	if (addr_parse_ip(text, &ip, NULL)) {
		addr_ip_format(&ip, addr);
		buf_puts(out, addr);
		return true;
	}
	if (addr_parse_endpoint(text, &ep, NULL) && ep.range.prefix == (ep.range.ip.family == AF_INET ? 32u : 128u)) {
		addr_ip_format(&ep.range.ip, addr);
		buf_printf(out, "%s@%u", addr, (unsigned)ep.port);
		return true;
	}
	buf_printf(err, "name-server \"%s\": expected IP or IP:PORT", text);
	return false;
}

bool smtp_dns_init(struct event_base *base, const struct conf_list *name_servers, struct buf *err)
{
	loop = base;
	resolver = ub_ctx_create();
	if (resolver == NULL) {
		buf_puts(err, "cannot create the DNS resolver");
		return false;
	}
	/* Threads, not a forked helper: the helper would outlive a crash. */
	ub_ctx_async(resolver, 1);
	/* Local resolvers (127.0.0.53, a test server) are the usual case. */
	ub_ctx_set_option(resolver, "do-not-query-localhost:", "no");
	int rc = 0;
	if (name_servers && name_servers->count > 0) {
		for (size_t i = 0; i < name_servers->count && rc == 0; i++) {
			struct buf fwd = BUF_INIT;
			if (!forwarder(name_servers->items[i], &fwd, err)) {
				buf_free(&fwd);
				return false;
			}
			rc = ub_ctx_set_fwd(resolver, buf_cstr(&fwd));
			buf_free(&fwd);
		}
	} else {
		rc = ub_ctx_resolvconf(resolver, NULL);
		if (rc == 0)
			rc = ub_ctx_hosts(resolver, NULL);
	}
	if (rc != 0) {
		buf_printf(err, "DNS resolver set-up: %s", ub_strerror(rc));
		return false;
	}
	resolver_event = event_new(base, ub_fd(resolver), EV_READ | EV_PERSIST, on_resolver_readable, NULL);
	event_add(resolver_event, NULL);
	return true;
}

void smtp_dns_shutdown(void)
{
	if (resolver_event)
		event_free(resolver_event);
	resolver_event = NULL;
	if (resolver)
		ub_ctx_delete(resolver);
	resolver = NULL;
}

/* ---- answers ------------------------------------------------------------------------ */

/* A wire-format name (as in MX rdata) to text; "" for the root. */
static bool wire_name(const unsigned char *p, size_t len, struct buf *out)
{
	size_t pos = 0;
	while (pos < len) {
		size_t label = p[pos++];
		if (label == 0)
			return true;
		if (label > 63 || pos + label > len)
			return false;
		if (out->len > 0)
			buf_putc(out, '.');
		buf_append(out, p + pos, label);
		pos += label;
	}
	return false;
}

struct mx_record {
	unsigned pref;
	char *name;
	unsigned shuffle;
};

static int mx_compare(const void *a, const void *b)
{
	const struct mx_record *x = a, *y = b;
	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->shuffle < y->shuffle ? -1 : x->shuffle > y->shuffle;
}

static void add_host(struct host **hosts, size_t *count, const char *name, bool literal, uint16_t port)
{
	*hosts = mem_reallocarray(*hosts, *count + 1, sizeof **hosts);
	struct host *h = &(*hosts)[(*count)++];
	memset(h, 0, sizeof *h);
	h->name = mem_strdup(name);
	h->literal = literal;
	h->port = port;
	if (literal) {
		h->addrs = mem_zalloc(sizeof *h->addrs);
		addr_parse_ip(name, &h->addrs[0], NULL);
		h->naddrs = 1;
	}
}

static void fail_lookup(struct smtp_lookup *l, enum smtp_dns_outcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_lookup(struct smtp_lookup *l, enum smtp_dns_outcome outcome, const char *fmt, ...)
{
	if (l->outcome != SMTP_DNS_OK)
		return; /* the first reason stands */
	l->outcome = outcome;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&l->why, fmt, ap);
	va_end(ap);
}

static const char *rcode_text(const struct ub_result *r, int err)
{
	if (err != 0)
		return ub_strerror(err);
	switch (r->rcode) {
	case 2:
		return "SERVFAIL";
	case 5:
		return "REFUSED";
	default:
		return "no answer";
	}
}

/* Fills q's hosts from an MX answer, or sets the lookup's outcome when
 * it cannot go on. */
static void take_mx_answer(struct smtp_lookup *l, struct mx_query *q, int err, struct ub_result *r)
{
	if (err != 0 || (r->rcode != 0 && !r->nxdomain)) {
		fail_lookup(l, SMTP_DNS_TEMPFAIL, "DNS error looking up MX of %s: %s", q->domain, rcode_text(r, err));
		return;
	}
	if (r->nxdomain) {
		fail_lookup(l, SMTP_DNS_NXDOMAIN, "domain %s does not exist (NXDOMAIN)", q->domain);
		return;
	}
	if (!r->havedata) {
		if (!q->implicit_ok) {
			fail_lookup(l, SMTP_DNS_NO_MX, "no MX record for %s", q->domain);
			return;
		}
		add_host(&q->hosts, &q->nhosts, q->domain, false, q->port);
		return;
	}
	size_t count = 0, nulls = 0;
	while (r->data[count])
		count++;
	struct mx_record *mx = mem_calloc(count, sizeof *mx);
	size_t n = 0;
	for (size_t i = 0; i < count; i++) {
		const unsigned char *p = (const unsigned char *)r->data[i];
		struct buf name = BUF_INIT;
		if (r->len[i] < 3 || !wire_name(p + 2, (size_t)r->len[i] - 2, &name)) {
			buf_free(&name);
			continue;
		}
		if (name.len == 0) {
			nulls++;
			buf_free(&name);
			continue;
		}
		mx[n].pref = (unsigned)(p[0] << 8 | p[1]);
		mx[n].shuffle = arc4random();
		mx[n].name = buf_detach(&name);
		n++;
		buf_free(&name);
	}
	if (n == 0 && nulls > 0)
		fail_lookup(l, SMTP_DNS_NULL_MX, "domain %s accepts no mail (null MX, RFC 7505)", q->domain);
	else if (n == 0)
		fail_lookup(l, SMTP_DNS_TEMPFAIL, "unusable MX records for %s", q->domain);
	qsort(mx, n, sizeof *mx, mx_compare);
	for (size_t i = 0; i < n; i++) {
		add_host(&q->hosts, &q->nhosts, mx[i].name, false, q->port);
		free(mx[i].name);
	}
	free(mx);
}

static void take_address_answer(struct host *h, int type, int err, struct ub_result *r)
{
	if (err != 0 || (r->rcode != 0 && !r->nxdomain)) {
		h->temp_error = true;
		return;
	}
	if (!r->havedata)
		return;
	size_t want = type == TYPE_A ? 4 : 16;
	for (size_t i = 0; r->data[i]; i++) {
		if ((size_t)r->len[i] != want)
			continue;
		struct addr_ip ip = {.family = type == TYPE_A ? AF_INET : AF_INET6};
		memcpy(ip.bytes, r->data[i], want);
		h->addrs = mem_reallocarray(h->addrs, h->naddrs + 1, sizeof *h->addrs);
		h->addrs[h->naddrs++] = ip;
	}
}

/* ---- the lookup ------------------------------------------------------------------------- */

static void lookup_free(struct smtp_lookup *l)
{
	for (size_t i = 0; i < l->nqueries; i++) {
		if (l->queries[i]->active) {
			ub_cancel(resolver, l->queries[i]->async_id);
		}
		free(l->queries[i]);
	}
	free(l->queries);
	for (size_t i = 0; i < l->nmxq; i++) {
		for (size_t k = 0; k < l->mxq[i].nhosts; k++) {
			free(l->mxq[i].hosts[k].name);
			free(l->mxq[i].hosts[k].addrs);
		}
		free(l->mxq[i].hosts);
		free(l->mxq[i].domain);
	}
	free(l->mxq);
	for (size_t i = 0; i < l->nhosts; i++) {
		free(l->hosts[i].name);
		free(l->hosts[i].addrs);
	}
	free(l->hosts);
	if (l->report)
		event_free(l->report);
	buf_free(&l->why);
	free(l->domain);
	free(l);
}

static void on_report(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_lookup *l = arg;
	struct smtp_targets targets = {0};
	if (l->outcome == SMTP_DNS_OK) {
		bool temp = false;
		for (size_t i = 0; i < l->nhosts; i++) {
			const struct host *h = &l->hosts[i];
			temp = temp || h->temp_error;
			for (size_t a = 0; a < h->naddrs; a++)
				smtp_targets_add(&targets, h->name, &h->addrs[a], h->port ? h->port : l->default_port);
		}
		if (targets.count == 0 && temp)
			fail_lookup(l, SMTP_DNS_TEMPFAIL, "DNS error looking up the addresses of the hosts for %s",
			            l->domain);
		else if (targets.count == 0)
			fail_lookup(l, SMTP_DNS_TEMPFAIL, "no address for any host of %s", l->domain);
	}
	smtp_targets_cb cb = l->cb;
	void *cb_arg = l->arg;
	enum smtp_dns_outcome outcome = l->outcome;
	char *why = buf_detach(&l->why);
	lookup_free(l);
	cb(cb_arg, outcome, why, &targets);
	smtp_targets_free(&targets);
	free(why);
}

static void report_soon(struct smtp_lookup *l)
{
	if (l->finished)
		return;
	l->finished = true;
	struct timeval now = {0, 0};
	l->report = event_new(loop, -1, 0, on_report, l);
	event_add(l->report, &now);
}

static void on_answer(void *arg, int err, struct ub_result *result);

static void start_query(struct smtp_lookup *l, const char *name, int type, size_t index)
{
	struct query *q = mem_zalloc(sizeof *q);
	q->lookup = l;
	q->type = type;
	q->index = index;
	l->queries = mem_reallocarray(l->queries, l->nqueries + 1, sizeof *l->queries);
	l->queries[l->nqueries++] = q;
	int rc = ub_resolve_async(resolver, name, type, CLASS_IN, q, on_answer, &q->async_id);
	if (rc != 0) {
		fail_lookup(l, SMTP_DNS_TEMPFAIL, "DNS query for %s: %s", name, ub_strerror(rc));
		return;
	}
	q->active = true;
	l->pending++;
}

/* Phase two: every host of every entry, in order, A and AAAA. */
static void resolve_hosts(struct smtp_lookup *l)
{
	for (size_t i = 0; i < l->nmxq; i++) {
		for (size_t k = 0; k < l->mxq[i].nhosts; k++) {
			l->hosts = mem_reallocarray(l->hosts, l->nhosts + 1, sizeof *l->hosts);
			l->hosts[l->nhosts++] = l->mxq[i].hosts[k];
		}
	}
	/* The hosts moved to l->hosts, which now owns them. */
	for (size_t i = 0; i < l->nmxq; i++) {
		free(l->mxq[i].hosts);
		l->mxq[i].hosts = NULL;
		l->mxq[i].nhosts = 0;
	}
	for (size_t i = 0; i < l->nhosts && l->outcome == SMTP_DNS_OK; i++) {
		if (l->hosts[i].literal)
			continue;
		start_query(l, l->hosts[i].name, TYPE_A, i);
		start_query(l, l->hosts[i].name, TYPE_AAAA, i);
	}
}

static void on_answer(void *arg, int err, struct ub_result *result)
{
	struct query *q = arg;
	struct smtp_lookup *l = q->lookup;
	q->active = false;
	l->pending--;
	if (q->type == TYPE_MX)
		take_mx_answer(l, &l->mxq[q->index], err, result);
	else
		take_address_answer(&l->hosts[q->index], q->type, err, result);
	if (result)
		ub_resolve_free(result);
	if (l->pending > 0)
		return;
	if (q->type == TYPE_MX && l->outcome == SMTP_DNS_OK)
		resolve_hosts(l);
	if (l->pending == 0 || l->outcome != SMTP_DNS_OK)
		report_soon(l);
}

static struct mx_query *add_entry(struct smtp_lookup *l)
{
	l->mxq = mem_reallocarray(l->mxq, l->nmxq + 1, sizeof *l->mxq);
	struct mx_query *q = &l->mxq[l->nmxq++];
	memset(q, 0, sizeof *q);
	return q;
}

/* The entries of a static route, levels in order, shuffled within. */
static void add_route(struct smtp_lookup *l, const struct smtp_route *route)
{
	for (size_t level = 0; level < route->nlevels; level++) {
		size_t count = route->counts[level];
		size_t *order = mem_calloc(count ? count : 1, sizeof *order);
		for (size_t i = 0; i < count; i++)
			order[i] = i;
		for (size_t i = count; i > 1; i--) {
			size_t j = arc4random_uniform((uint32_t)i);
			size_t t = order[i - 1];
			order[i - 1] = order[j];
			order[j] = t;
		}
		for (size_t i = 0; i < count; i++) {
			const struct smtp_hop *hop = &route->levels[level][order[i]];
			struct mx_query *q = add_entry(l);
			q->port = hop->port;
			if (hop->lookup_mx) {
				q->domain = mem_strdup(hop->host);
				q->implicit_ok = true;
			} else {
				add_host(&q->hosts, &q->nhosts, hop->host, hop->literal, hop->port);
			}
		}
		free(order);
	}
}

struct smtp_lookup *smtp_dns_targets(const char *domain, const struct smtp_route *route, uint16_t default_port,
                                     bool bounce_upon_no_mx, smtp_targets_cb cb, void *arg)
{
	struct smtp_lookup *l = mem_zalloc(sizeof *l);
	l->cb = cb;
	l->arg = arg;
	l->domain = mem_strdup(domain);
	l->default_port = default_port;
	l->bounce_upon_no_mx = bounce_upon_no_mx;
	buf_init(&l->why);
	if (route) {
		add_route(l, route);
	} else {
		struct mx_query *q = add_entry(l);
		q->domain = mem_strdup(domain);
		q->implicit_ok = !bounce_upon_no_mx;
	}
	for (size_t i = 0; i < l->nmxq && l->outcome == SMTP_DNS_OK; i++)
		if (l->mxq[i].domain)
			start_query(l, l->mxq[i].domain, TYPE_MX, i);
	if (l->pending == 0 && l->outcome == SMTP_DNS_OK)
		resolve_hosts(l);
	if (l->pending == 0 || l->outcome != SMTP_DNS_OK)
		report_soon(l);
	return l;
}

void smtp_dns_cancel(struct smtp_lookup *lookup)
{
	if (lookup)
		lookup_free(lookup);
}
