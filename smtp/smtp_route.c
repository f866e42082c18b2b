/* smtp_route.c: static routes (smtp-hosts and the older route) and the
 * list of targets a delivery tries.  A route is preference levels ("a, b;
 * c": a and b first, in random order, then c); an entry is a host name, an
 * [IP] literal that needs no DNS, or lookup-mx:DOMAIN, which stands for the
 * MX hosts of another domain. */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"

static bool parse_port(const char *text, uint16_t *port, struct buf *err)
{
	const char *why = NULL;
	if (!addr_parse_port(text, port, &why)) {
		buf_printf(err, "bad port \"%s\" (%s)", text, why ? why : "1-65535");
		return false;
	}
	return true;
}

static bool parse_literal(const char *text, struct smtp_hop *hop, struct buf *err)
{
	const char *close = strchr(text, ']');
	if (close == NULL) {
		buf_printf(err, "missing ] in \"%s\"", text);
		return false;
	}
	const char *ip = text + 1;
	if (strncasecmp(ip, "IPv6:", 5) == 0)
		ip += 5;
	char *ip_text = mem_strndup(ip, (size_t)(close - ip));
	struct addr_ip parsed;
	const char *why = NULL;
	if (!addr_parse_ip(ip_text, &parsed, &why)) {
		buf_printf(err, "bad address \"%s\" in \"%s\"", ip_text, text);
		free(ip_text);
		return false;
	}
	hop->host = ip_text;
	hop->literal = true;
	if (close[1] == '\0')
		return true;
	if (close[1] != ':') {
		buf_printf(err, "unexpected text after ] in \"%s\"", text);
		return false;
	}
	return parse_port(close + 2, &hop->port, err);
}

bool smtp_hop_parse(const char *text, struct smtp_hop *hop, struct buf *err)
{
	memset(hop, 0, sizeof *hop);
	if (*text == '\0') {
		buf_puts(err, "empty host");
		return false;
	}
	if (text[0] == '[')
		return parse_literal(text, hop, err);
	if (strncasecmp(text, "lookup-mx:", 10) == 0) {
		if (text[10] == '\0') {
			buf_printf(err, "missing domain in \"%s\"", text);
			return false;
		}
		hop->host = mem_strdup(text + 10);
		hop->lookup_mx = true;
		return true;
	}
	const char *colon = strchr(text, ':');
	if (colon == NULL) {
		hop->host = mem_strdup(text);
		return true;
	}
	if (colon == text) {
		buf_printf(err, "missing host in \"%s\"", text);
		return false;
	}
	hop->host = mem_strndup(text, (size_t)(colon - text));
	return parse_port(colon + 1, &hop->port, err);
}

void smtp_route_free(struct smtp_route *route)
{
	for (size_t i = 0; i < route->nlevels; i++) {
		for (size_t k = 0; k < route->counts[i]; k++)
			free(route->levels[i][k].host);
		free(route->levels[i]);
	}
	free(route->levels);
	free(route->counts);
	memset(route, 0, sizeof *route);
}

/* Adds a level from its entries, trimmed of blanks. */
static bool add_level(struct smtp_route *route, char *const *items, size_t count, struct buf *err)
{
	size_t i = route->nlevels++;
	route->levels = mem_reallocarray(route->levels, route->nlevels, sizeof *route->levels);
	route->counts = mem_reallocarray(route->counts, route->nlevels, sizeof *route->counts);
	route->levels[i] = mem_calloc(count ? count : 1, sizeof **route->levels);
	route->counts[i] = 0;
	for (size_t k = 0; k < count; k++) {
		if (!smtp_hop_parse(items[k], &route->levels[i][k], err))
			return false;
		route->counts[i]++;
	}
	return true;
}

bool smtp_route_from_levels(const struct conf_list *levels, size_t nlevels, struct smtp_route *route, struct buf *err)
{
	memset(route, 0, sizeof *route);
	for (size_t i = 0; i < nlevels; i++) {
		if (!add_level(route, levels[i].items, levels[i].count, err)) {
			smtp_route_free(route);
			return false;
		}
	}
	return true;
}

static char *trimmed(const char *start, size_t len)
{
	while (len > 0 && (*start == ' ' || *start == '\t'))
		start++, len--;
	while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
		len--;
	return mem_strndup(start, len);
}

/* Splits text at sep into trimmed, non-empty pieces. */
static size_t split(const char *text, char sep, char ***out)
{
	size_t count = 0;
	*out = NULL;
	for (const char *p = text;;) {
		const char *end = strchr(p, sep);
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char *piece = trimmed(p, len);
		if (*piece) {
			*out = mem_reallocarray(*out, count + 1, sizeof **out);
			(*out)[count++] = piece;
		} else {
			free(piece);
		}
		if (!end)
			break;
		p = end + 1;
	}
	return count;
}

static void free_pieces(char **pieces, size_t count)
{
	for (size_t i = 0; i < count; i++)
		free(pieces[i]);
	free(pieces);
}

bool smtp_route_from_text(const char *text, struct smtp_route *route, struct buf *err)
{
	memset(route, 0, sizeof *route);
	char **levels;
	size_t nlevels = split(text, ';', &levels);
	bool ok = true;
	for (size_t i = 0; ok && i < nlevels; i++) {
		char **hosts;
		size_t nhosts = split(levels[i], ',', &hosts);
		ok = add_level(route, hosts, nhosts, err);
		free_pieces(hosts, nhosts);
	}
	free_pieces(levels, nlevels);
	if (!ok)
		smtp_route_free(route);
	return ok;
}

/* ---- targets ------------------------------------------------------------------- */

void smtp_targets_add(struct smtp_targets *t, const char *mx, const struct addr_ip *ip, uint16_t port)
{
	for (size_t i = 0; i < t->count; i++)
		if (t->items[i].port == port && addr_ip_equal(&t->items[i].ip, ip))
			return; /* one address reached through two names is tried once */
	if (t->count == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 8;
		t->items = mem_reallocarray(t->items, t->cap, sizeof *t->items);
	}
	struct smtp_target *item = &t->items[t->count++];
	item->mx = mem_strdup(mx);
	item->ip = *ip;
	item->port = port;
}

void smtp_targets_free(struct smtp_targets *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->items[i].mx);
	free(t->items);
	memset(t, 0, sizeof *t);
}
