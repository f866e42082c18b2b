/* conf_build.c: what is done once the text is read: the defaults of the
 * table are parsed, each block's occurrences are folded into the setting
 * in force per directive, named blocks get their settings, the indexes for
 * domain and source resolution are built, and references between blocks
 * (source=NAME, pool members, pattern lists) are checked. */
#include "conf_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "mem.h"

void conf_setting_free(struct conf_setting *setting)
{
	conf_value_free(&setting->value);
	free(setting);
}

static void build_defaults(struct conf *conf)
{
	conf->defaults = mem_calloc(conf_directive_total, sizeof *conf->defaults);
	for (size_t i = 0; i < conf_directive_total; i++) {
		const struct conf_directive *d = &conf_directives[i];
		struct conf_setting *s = &conf->defaults[i];
		s->name = d->name;
		s->value.type = d->type;
		if (!d->def) {
			s->value.unset = true;
			continue;
		}
		char *text = mem_asprintf("%s %s", d->name, d->def);
		struct conf_line line;
		struct buf err = BUF_INIT;
		if (!conf_lex_line(text, strlen(text), &line, &err) || !conf_value_parse(d, &line, &s->value, &err))
			log_panic("default of %s: %s", d->name, buf_cstr(&err));
		conf_line_free(&line);
		buf_free(&err);
		free(text);
	}
}

/* Per directive, the last occurrence wins; repeatable directives keep all
 * their occurrences, linked in file order. */
static void fold_block(struct conf_block *b, struct conf_setting **first, struct conf_setting **last)
{
	size_t distinct = 0;
	for (size_t i = 0; i < b->nitems; i++) {
		struct conf_setting *s = b->items[i];
		const struct conf_directive *d = conf_directive_lookup(s->name);
		size_t dir = conf_directive_index(d);
		s->next = NULL;
		distinct += first[dir] == NULL;
		if ((d->flags & CONF_MULTI) && last[dir])
			last[dir]->next = s;
		else
			first[dir] = s;
		last[dir] = s;
	}
	b->heads = mem_calloc(distinct, sizeof *b->heads);
	for (size_t dir = 0; dir < conf_directive_total && b->nheads < distinct; dir++) {
		if (first[dir]) {
			b->heads[b->nheads].dir = dir;
			b->heads[b->nheads].first = first[dir];
			b->nheads++;
			first[dir] = last[dir] = NULL; /* ready for the next block */
		}
	}
}

static void add_implicit_listener(struct conf *conf)
{
	if (conf->blocks[CONF_LISTENER].count)
		return;
	const struct conf_blockdef *def = conf_blockdef_of(CONF_LISTENER);
	struct conf_block *b = conf_block_new(conf, def, "0.0.0.0:25", "", NULL, 0, conf->global);
	struct buf err = BUF_INIT;
	free(b->key);
	if (!conf_block_key(def, b->name, &b->key, &b->cidr, &b->endpoint, &err))
		log_panic("implicit listener: %s", buf_cstr(&err));
	buf_free(&err);
}

/* A named block's settings: its defaults, then what it inherits from the
 * global level, then its own directives. */
static struct conf_settings *named_settings(const struct conf *conf, const struct conf_block *b)
{
	struct conf_settings *s = conf_settings_new(conf, b->kind);
	const struct conf_settings *global = conf->global_settings;
	for (size_t i = 0; i < conf_directive_total; i++) {
		const struct conf_directive *d = &conf_directives[i];
		if (!(d->scopes & CONF_SCOPE(b->kind)))
			continue;
		size_t from = i;
		if (d->inherit)
			from = conf_directive_index(conf_directive_lookup(d->inherit));
		else if (!(d->scopes & CONF_SCOPE(CONF_GLOBAL)))
			continue;
		const struct conf_setting *g = conf_settings_lookup(global, from);
		if (g->file)
			conf_settings_set(s, i, g);
	}
	conf_settings_apply(s, b);
	return s;
}

static bool has_settings_of_its_own(enum conf_kind kind)
{
	return kind != CONF_GLOBAL && kind != CONF_SOURCE && kind != CONF_DOMAIN && kind != CONF_OPAQUE;
}

static int block_key_cmp(const void *a, const void *b)
{
	const struct conf_block *x = *(struct conf_block *const *)a, *y = *(struct conf_block *const *)b;
	return strcmp(x->key, y->key);
}

/* Top-level blocks of each kind sorted by key, for conf_block_find();
 * blocks nested in others (<domain> in <virtual-mta>) are not found by
 * name. */
static void sort_blocks(struct conf *conf)
{
	for (unsigned k = 0; k < CONF_KIND_COUNT; k++) {
		struct conf_vec *v = &conf->blocks[k];
		conf->sorted[k] = mem_calloc(v->count, sizeof *conf->sorted[k]);
		size_t n = 0;
		for (size_t i = 0; i < v->count; i++) {
			struct conf_block *b = v->items[i];
			if (b->parent == conf->global)
				conf->sorted[k][n++] = b;
		}
		qsort(conf->sorted[k], n, sizeof *conf->sorted[k], block_key_cmp);
		conf->nsorted[k] = n;
	}
}

/* ---- references ---------------------------------------------------------------- */

static bool is_named_source(const struct conf *conf, const char *name)
{
	const struct conf_block *b = conf_block_find(conf, CONF_SOURCE, name);
	return b && b->named;
}

static bool is_vmta_or_pool(const struct conf *conf, const char *name)
{
	return conf_block_find(conf, CONF_VMTA, name) || conf_block_find(conf, CONF_VMTA_POOL, name);
}

static void check_reference(struct conf *conf, const struct conf_setting *s)
{
	const char *name = s->value.string;
	if (!name || s->value.unset)
		return;
	const char *d = s->name;
	if (strcmp(d, "source") == 0) {
		if (!is_named_source(conf, name))
			conf_error(conf, s->file, s->line, "no <source %s> is defined", name);
	} else if (strcmp(d, "virtual-mta") == 0) {
		if (!conf_block_find(conf, CONF_VMTA, name))
			conf_error(conf, s->file, s->line, "no <virtual-mta %s> is defined", name);
	} else if (strcmp(d, "default-virtual-mta") == 0 || strcmp(d, "reroute-to-virtual-mta") == 0 ||
	           strcmp(d, "backoff-reroute-to-virtual-mta") == 0) {
		if (strcasecmp(name, "by-smtp-source-ip") != 0 && !is_vmta_or_pool(conf, name))
			conf_error(conf, s->file, s->line, "no <virtual-mta %s> or <virtual-mta-pool %s> is defined",
			           name, name);
	} else if (strcmp(d, "pattern-list") == 0) {
		if (!conf_block_find(conf, CONF_PATTERN_LIST, name))
			conf_error(conf, s->file, s->line, "no <pattern-list %s> is defined", name);
	} else if (strcmp(d, "smtp-pattern-list") == 0) {
		if (!conf_block_find(conf, CONF_SMTP_PATTERN_LIST, name))
			conf_error(conf, s->file, s->line, "no <smtp-pattern-list %s> is defined", name);
	}
}

static void check_references(struct conf *conf)
{
	/* smtp-listener lines are checked through the source directive that
	 * their source= option adds to the listener block. */
	for (unsigned k = 0; k < CONF_KIND_COUNT; k++) {
		if (k == CONF_GLOBAL)
			continue;
		for (size_t i = 0; i < conf->blocks[k].count; i++) {
			const struct conf_block *b = conf->blocks[k].items[i];
			for (size_t j = 0; j < b->nitems; j++)
				check_reference(conf, b->items[j]);
		}
	}
}

/* A virtual MTA may belong to several pools, but only one of them may
 * give it <domain> blocks, or which one applies would be a guess. */
static void check_pool_domains(struct conf *conf)
{
	const struct conf_vec *pools = &conf->blocks[CONF_VMTA_POOL];
	for (size_t i = 0; i < pools->count; i++) {
		const struct conf_block *a = pools->items[i];
		if (!a->domains || !a->domains->total)
			continue;
		for (size_t j = i + 1; j < pools->count; j++) {
			const struct conf_block *b = pools->items[j];
			if (!b->domains || !b->domains->total)
				continue;
			for (size_t m = 0; m < b->nitems; m++) {
				const struct conf_setting *s = b->items[m];
				if (strcmp(s->name, "virtual-mta") == 0 && conf_pool_has_member(a, s->value.string))
					conf_error(conf, s->file, s->line,
					           "virtual MTA \"%s\" is already in <virtual-mta-pool %s> (%s:%u); "
					           "both pools "
					           "define <domain> blocks",
					           s->value.string, a->name, a->file, a->line);
			}
		}
	}
}

bool conf_pool_has_member(const struct conf_block *pool, const char *vmta)
{
	for (size_t i = 0; i < pool->nitems; i++) {
		const struct conf_setting *s = pool->items[i];
		if (strcmp(s->name, "virtual-mta") == 0 && strcasecmp(s->value.string, vmta) == 0)
			return true;
	}
	return false;
}

void conf_build(struct conf *conf)
{
	build_defaults(conf);
	add_implicit_listener(conf);
	/* Scratch arrays indexed by directive, shared by all blocks. */
	struct conf_setting **first = mem_calloc(conf_directive_total, sizeof *first);
	struct conf_setting **last = mem_calloc(conf_directive_total, sizeof *last);
	for (unsigned k = 0; k < CONF_KIND_COUNT; k++)
		for (size_t i = 0; i < conf->blocks[k].count; i++)
			fold_block(conf->blocks[k].items[i], first, last);
	free(first);
	free(last);
	conf->global_settings = conf_settings_new(conf, CONF_GLOBAL);
	conf_settings_apply(conf->global_settings, conf->global);
	sort_blocks(conf);
	for (unsigned k = 0; k < CONF_KIND_COUNT; k++) {
		if (!has_settings_of_its_own((enum conf_kind)k))
			continue;
		for (size_t i = 0; i < conf->blocks[k].count; i++) {
			struct conf_block *b = conf->blocks[k].items[i];
			b->settings = named_settings(conf, b);
		}
	}
	conf_domain_index_build(conf, &conf->domains, conf->global);
	for (unsigned k = CONF_VMTA; k <= CONF_VMTA_POOL; k++) {
		for (size_t i = 0; i < conf->blocks[k].count; i++) {
			struct conf_block *b = conf->blocks[k].items[i];
			b->domains = mem_zalloc(sizeof *b->domains);
			conf_domain_index_build(conf, b->domains, b);
		}
	}
	conf_source_index_build(conf);
	check_references(conf);
	check_pool_domains(conf);
}
