/* conf_resolve.c: which <domain> and <source> blocks apply to a recipient
 * domain or a client IP, and in which order they are merged.
 *
 * Both are answered from indexes built at load time: domain patterns are
 * sorted by their domain part, so a domain with N labels costs N binary
 * searches; sources are sorted by prefix length and address, so an IP
 * costs one binary search per distinct prefix length. */
#include "conf_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"

/* ---- the domain index ------------------------------------------------------------ */

static void push_pattern(struct conf_pattern **arr, size_t *n, const struct conf_pattern *p)
{
	*arr = mem_reallocarray(*arr, *n + 1, sizeof **arr);
	(*arr)[(*n)++] = *p;
}

static int pattern_cmp(const void *a, const void *b)
{
	const struct conf_pattern *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c)
		return c;
	return x->order < y->order ? -1 : x->order > y->order;
}

static int literal_cmp(const void *a, const void *b)
{
	const struct conf_pattern *x = a, *y = b;
	if (x->cidr.prefix != y->cidr.prefix)
		return x->cidr.prefix < y->cidr.prefix ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static void index_pattern(struct conf_domain_index *index, struct conf_pattern *p)
{
	if (p->kind == CONF_PAT_ALL)
		push_pattern(&index->all, &index->nall, p);
	else if (p->kind == CONF_PAT_CIDR)
		push_pattern(&index->literals, &index->nliterals, p);
	else
		push_pattern(&index->patterns, &index->count, p);
	index->total++;
}

static void index_block(struct conf *conf, struct conf_domain_index *index, struct conf_block *b)
{
	struct conf_list texts = {0, NULL};
	struct buf err = BUF_INIT;
	bool expanded;
	if (!conf_macro_expand(conf, b->name, &texts, &expanded, &err)) {
		conf_error(conf, b->file, b->line, "%s", buf_cstr(&err));
		buf_free(&err);
		return;
	}
	for (size_t i = 0; i < texts.count; i++) {
		struct conf_pattern p;
		buf_reset(&err);
		if (!conf_pattern_parse(texts.items[i], &p, &err)) {
			conf_error(conf, b->file, b->line, "%s (from the macros in <domain %s>)", buf_cstr(&err),
			           b->name);
			continue;
		}
		p.from_macro = expanded;
		p.block = b;
		p.order = b->order;
		index_pattern(index, &p);
	}
	conf_list_free(&texts);
	buf_free(&err);
}

void conf_domain_index_build(struct conf *conf, struct conf_domain_index *index, struct conf_block *context)
{
	const struct conf_vec *domains = &conf->blocks[CONF_DOMAIN];
	for (size_t i = 0; i < domains->count; i++) {
		struct conf_block *b = domains->items[i];
		if (b->parent == context)
			index_block(conf, index, b);
	}
	if (index->count)
		qsort(index->patterns, index->count, sizeof *index->patterns, pattern_cmp);
	if (index->nliterals)
		qsort(index->literals, index->nliterals, sizeof *index->literals, literal_cmp);
}

static void free_patterns(struct conf_pattern *arr, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(arr[i].key);
	free(arr);
}

void conf_domain_index_free(struct conf_domain_index *index)
{
	free_patterns(index->patterns, index->count);
	free_patterns(index->literals, index->nliterals);
	free_patterns(index->all, index->nall);
	memset(index, 0, sizeof *index);
}

/* ---- domain resolution ------------------------------------------------------------ */

struct match {
	unsigned rank;
	size_t order;
	const struct conf_block *block;
};

struct matches {
	struct match *items;
	size_t count;
};

static void add_match(struct matches *m, unsigned rank, const struct conf_pattern *p)
{
	m->items = mem_reallocarray(m->items, m->count + 1, sizeof *m->items);
	m->items[m->count].rank = rank;
	m->items[m->count].order = p->order;
	m->items[m->count].block = p->block;
	m->count++;
}

/* General before specific: deeper suffixes rank higher, then at the same
 * depth [*.]x, *.x, exact; an explicitly written pattern beats the same
 * pattern produced by a macro. */
static unsigned pattern_rank(const struct conf_pattern *p)
{
	static const unsigned kind_rank[] = {[CONF_PAT_BRACKET] = 1, [CONF_PAT_SUB] = 2, [CONF_PAT_EXACT] = 3};
	return (p->depth + 1) * 8 + kind_rank[p->kind] * 2 + !p->from_macro;
}

static const struct conf_pattern *lower_bound(const struct conf_domain_index *index, const char *key)
{
	size_t lo = 0, hi = index->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(index->patterns[mid].key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return index->patterns + lo;
}

static void match_name(const struct conf_domain_index *index, const char *domain, struct matches *m)
{
	if (index->count == 0)
		return;
	const struct conf_pattern *end = index->patterns + index->count;
	for (const char *suffix = domain; suffix; suffix = strchr(suffix, '.') ? strchr(suffix, '.') + 1 : NULL) {
		bool whole = suffix == domain;
		for (const struct conf_pattern *p = lower_bound(index, suffix); p < end && !strcmp(p->key, suffix);
		     p++) {
			if ((p->kind == CONF_PAT_EXACT && whole) || (p->kind == CONF_PAT_SUB && !whole) ||
			    p->kind == CONF_PAT_BRACKET)
				add_match(m, pattern_rank(p), p);
		}
	}
}

/* "[10.1.2.3]" or "[IPv6:2001:db8::1]" */
static void match_literal(const struct conf_domain_index *index, const char *domain, struct matches *m)
{
	size_t len = strlen(domain);
	if (len < 3 || domain[len - 1] != ']')
		return;
	char *inner = mem_strndup(domain + 1, len - 2);
	const char *text = strncasecmp(inner, "ipv6:", 5) == 0 ? inner + 5 : inner;
	struct addr_ip ip;
	if (addr_parse_ip(text, &ip, NULL)) {
		addr_ip_unmap(&ip);
		for (size_t i = 0; i < index->nliterals; i++)
			if (addr_cidr_contains(&index->literals[i].cidr, &ip))
				add_match(m, 8 + index->literals[i].cidr.prefix * 2 + !index->literals[i].from_macro,
				          &index->literals[i]);
	}
	free(inner);
}

static int match_cmp(const void *a, const void *b)
{
	const struct match *x = a, *y = b;
	if (x->rank != y->rank)
		return x->rank < y->rank ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

static void apply_index(struct conf_settings *s, const struct conf_domain_index *index, const char *domain)
{
	struct matches m = {NULL, 0};
	for (size_t i = 0; i < index->nall; i++)
		add_match(&m, 0, &index->all[i]);
	if (domain[0] == '[')
		match_literal(index, domain, &m);
	else
		match_name(index, domain, &m);
	if (m.count)
		qsort(m.items, m.count, sizeof *m.items, match_cmp);
	for (size_t i = 0; i < m.count; i++)
		conf_settings_apply(s, m.items[i].block);
	free(m.items);
}

struct conf_settings *conf_resolve_domain(const struct conf *conf, const char *domain, const char *vmta)
{
	const struct conf_block *vmta_block = NULL, *pool = NULL;
	if (vmta) {
		vmta_block = conf_block_find(conf, CONF_VMTA, vmta);
		pool = vmta_block ? NULL : conf_block_find(conf, CONF_VMTA_POOL, vmta);
		if (!vmta_block && !pool)
			return NULL;
	}
	char *name = conf_domain_normalize(domain);
	struct conf_settings *s = conf_settings_new(conf, CONF_DOMAIN);
	apply_index(s, &conf->domains, name);
	if (pool) {
		apply_index(s, pool->domains, name);
	} else if (vmta_block) {
		/* A pool's <domain> blocks apply to its members, under the
		 * member's own. */
		const struct conf_vec *pools = &conf->blocks[CONF_VMTA_POOL];
		for (size_t i = 0; i < pools->count; i++) {
			const struct conf_block *p = pools->items[i];
			if (p->domains->total && conf_pool_has_member(p, vmta_block->name))
				apply_index(s, p->domains, name);
		}
		apply_index(s, vmta_block->domains, name);
	}
	free(name);
	return s;
}

/* ---- sources ------------------------------------------------------------------------ */

static size_t ip_len(const struct addr_ip *ip)
{
	return ip->family == AF_INET ? 4 : 16;
}

static int source_cmp(const void *a, const void *b)
{
	const struct conf_block *x = *(struct conf_block *const *)a, *y = *(struct conf_block *const *)b;
	if (x->cidr.ip.family != y->cidr.ip.family)
		return x->cidr.ip.family < y->cidr.ip.family ? -1 : 1;
	if (x->cidr.prefix != y->cidr.prefix)
		return x->cidr.prefix < y->cidr.prefix ? -1 : 1;
	return memcmp(x->cidr.ip.bytes, y->cidr.ip.bytes, ip_len(&x->cidr.ip));
}

void conf_source_index_build(struct conf *conf)
{
	const struct conf_vec *v = &conf->blocks[CONF_SOURCE];
	conf->sources = mem_calloc(v->count, sizeof *conf->sources);
	for (size_t i = 0; i < v->count; i++) {
		struct conf_block *b = v->items[i];
		if (!b->named)
			conf->sources[conf->nsources++] = b;
	}
	qsort(conf->sources, conf->nsources, sizeof *conf->sources, source_cmp);
}

static void mask(struct addr_ip *ip, unsigned prefix)
{
	for (size_t i = 0; i < ip_len(ip); i++) {
		unsigned bits = prefix > i * 8 ? prefix - (unsigned)i * 8 : 0;
		if (bits < 8)
			ip->bytes[i] &= (uint8_t)(0xff00u >> bits);
	}
}

/* The source of [from, to) (one family and prefix) equal to the masked ip. */
static const struct conf_block *find_in_group(struct conf_block *const *from, size_t n, const struct addr_ip *ip)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = memcmp(from[mid]->cidr.ip.bytes, ip->bytes, ip_len(ip));
		if (c == 0)
			return from[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct conf_settings *conf_resolve_source(const struct conf *conf, const struct addr_ip *client,
                                          const char *source_name)
{
	const struct conf_block *named = NULL;
	if (source_name) {
		named = conf_block_find(conf, CONF_SOURCE, source_name);
		if (!named || !named->named)
			return NULL;
	}
	struct addr_ip ip = *client;
	addr_ip_unmap(&ip);
	struct conf_settings *s = conf_settings_new(conf, CONF_SOURCE);
	/* Groups come broadest first, so narrower ranges are applied later
	 * and win. */
	for (size_t i = 0; i < conf->nsources;) {
		const struct addr_cidr *c = &conf->sources[i]->cidr;
		size_t j = i;
		while (j < conf->nsources && conf->sources[j]->cidr.ip.family == c->ip.family &&
		       conf->sources[j]->cidr.prefix == c->prefix)
			j++;
		if (c->ip.family == ip.family) {
			struct addr_ip masked = ip;
			mask(&masked, c->prefix);
			const struct conf_block *b = find_in_group(conf->sources + i, j - i, &masked);
			if (b)
				conf_settings_apply(s, b);
		}
		i = j;
	}
	if (named)
		conf_settings_apply(s, named);
	return s;
}
