/* conf_load.c: the life of a struct conf (load, free), its diagnostics and
 * the accessors of its blocks. */
#include "conf_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "mem.h"

void conf_vec_push(struct conf_vec *v, void *item)
{
	if (v->count == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 8;
		v->items = mem_reallocarray(v->items, v->cap, sizeof *v->items);
	}
	v->items[v->count++] = item;
}

void conf_vec_free(struct conf_vec *v)
{
	free(v->items);
	memset(v, 0, sizeof *v);
}

const char *conf_file_name(struct conf *conf, const char *name)
{
	for (size_t i = 0; i < conf->files.count; i++)
		if (strcmp(conf->files.items[i], name) == 0)
			return conf->files.items[i];
	char *copy = mem_strdup(name);
	conf_vec_push(&conf->files, copy);
	return copy;
}

/* ---- diagnostics ------------------------------------------------------------- */

static void add_diag(struct conf *conf, enum conf_severity severity, const char *file, unsigned line, char *message)
{
	struct conf_diag *d = mem_zalloc(sizeof *d);
	d->severity = severity;
	d->file = file;
	d->line = line;
	d->message = message;
	conf_vec_push(&conf->diags, d);
}

void conf_error(struct conf *conf, const char *file, unsigned line, const char *fmt, ...)
{
	if (conf->stopped)
		return;
	struct buf msg = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	add_diag(conf, CONF_ERROR, file, line, buf_detach(&msg));
	if (++conf->nerrors == CONF_MAX_ERRORS) {
		add_diag(conf, CONF_ERROR, file, line,
		         mem_asprintf("too many errors (%d), stopping here", CONF_MAX_ERRORS));
		conf->stopped = true;
	}
}

void conf_warning(struct conf *conf, const char *file, unsigned line, const char *fmt, ...)
{
	if (conf->stopped || conf->nwarnings > CONF_MAX_WARNINGS)
		return;
	if (++conf->nwarnings > CONF_MAX_WARNINGS) {
		add_diag(conf, CONF_WARNING, file, line,
		         mem_asprintf("more than %d warnings, the others are not shown", CONF_MAX_WARNINGS));
		return;
	}
	struct buf msg = BUF_INIT;
	va_list ap;
	va_start(ap, fmt);
	buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	add_diag(conf, CONF_WARNING, file, line, buf_detach(&msg));
}

bool conf_ok(const struct conf *conf)
{
	return conf->nerrors == 0;
}

size_t conf_diag_count(const struct conf *conf)
{
	return conf->diags.count;
}

const struct conf_diag *conf_diag_at(const struct conf *conf, size_t i)
{
	return i < conf->diags.count ? conf->diags.items[i] : NULL;
}

void conf_diag_format(const struct conf_diag *diag, struct buf *out)
{
	if (diag->file && diag->line)
		buf_printf(out, "%s:%u: ", diag->file, diag->line);
	else if (diag->file)
		buf_printf(out, "%s: ", diag->file);
	if (diag->severity == CONF_WARNING)
		buf_puts(out, "warning: ");
	buf_puts(out, diag->message);
}

/* ---- load and free --------------------------------------------------------------- */

static struct conf *conf_new(void)
{
	struct conf *conf = mem_zalloc(sizeof *conf);
	conf->global = conf_block_new(conf, conf_blockdef_of(CONF_GLOBAL), "", "", NULL, 0, NULL);
	return conf;
}

struct conf *conf_load(const char *path)
{
	struct conf *conf = conf_new();
	conf_parse_file(conf, path, 0);
	conf_build(conf);
	return conf;
}

struct conf *conf_load_buffer(const char *name, const char *text, size_t len, unsigned flags)
{
	struct conf *conf = conf_new();
	conf_parse_buffer(conf, name, text, len, flags);
	conf_build(conf);
	return conf;
}

static void block_free(struct conf_block *b)
{
	for (size_t i = 0; i < b->nitems; i++)
		conf_setting_free(b->items[i]);
	free(b->items);
	free(b->heads);
	conf_settings_free(b->settings);
	if (b->domains) {
		conf_domain_index_free(b->domains);
		free(b->domains);
	}
	free(b->name);
	free(b->key);
	free(b);
}

void conf_free(struct conf *conf)
{
	if (!conf)
		return;
	for (size_t i = 0; i < conf->diags.count; i++) {
		struct conf_diag *d = conf->diags.items[i];
		free((char *)d->message);
		free(d);
	}
	conf_vec_free(&conf->diags);
	for (unsigned k = 0; k < CONF_KIND_COUNT; k++) {
		for (size_t i = 0; i < conf->blocks[k].count; i++)
			block_free(conf->blocks[k].items[i]);
		conf_vec_free(&conf->blocks[k]);
		free(conf->sorted[k]);
	}
	for (size_t i = 0; i < conf->macros.count; i++) {
		struct conf_macro *m = conf->macros.items[i];
		free(m->name);
		conf_list_free(&m->values);
		free(m);
	}
	conf_vec_free(&conf->macros);
	if (conf->defaults) {
		for (size_t i = 0; i < conf_directive_total; i++)
			conf_value_free(&conf->defaults[i].value);
		free(conf->defaults);
	}
	conf_settings_free(conf->global_settings);
	conf_domain_index_free(&conf->domains);
	free(conf->sources);
	free(conf->hash);
	for (size_t i = 0; i < conf->files.count; i++)
		free(conf->files.items[i]);
	conf_vec_free(&conf->files);
	free(conf);
}

/* ---- blocks ------------------------------------------------------------------------ */

size_t conf_block_count(const struct conf *conf, enum conf_kind kind)
{
	return kind < CONF_KIND_COUNT ? conf->blocks[kind].count : 0;
}

const struct conf_block *conf_block_at(const struct conf *conf, enum conf_kind kind, size_t i)
{
	return i < conf_block_count(conf, kind) ? conf->blocks[kind].items[i] : NULL;
}

static int key_cmp(const void *key, const void *entry)
{
	return strcmp(key, (*(struct conf_block *const *)entry)->key);
}

const struct conf_block *conf_block_find(const struct conf *conf, enum conf_kind kind, const char *name)
{
	if (kind >= CONF_KIND_COUNT || !conf->sorted[kind])
		return NULL;
	char *key;
	struct addr_cidr cidr;
	struct addr_endpoint endpoint;
	struct buf err = BUF_INIT;
	bool ok = conf_block_key(conf_blockdef_of(kind), name, &key, &cidr, &endpoint, &err);
	buf_free(&err);
	if (!ok)
		return NULL;
	struct conf_block **found =
	    bsearch(key, conf->sorted[kind], conf->nsorted[kind], sizeof *conf->sorted[kind], key_cmp);
	free(key);
	return found ? *found : NULL;
}

enum conf_kind conf_block_kind(const struct conf_block *block)
{
	return block->kind;
}

const char *conf_block_name(const struct conf_block *block)
{
	return block->name;
}

const char *conf_block_file(const struct conf_block *block)
{
	return block->file;
}

unsigned conf_block_line(const struct conf_block *block)
{
	return block->line;
}

const struct conf_settings *conf_block_settings(const struct conf_block *block)
{
	return block->settings;
}

size_t conf_block_setting_count(const struct conf_block *block)
{
	return block->nitems;
}

const struct conf_setting *conf_block_setting_at(const struct conf_block *block, size_t i)
{
	return i < block->nitems ? block->items[i] : NULL;
}

const struct addr_endpoint *conf_listener_endpoint(const struct conf_block *listener)
{
	return listener->kind == CONF_LISTENER ? &listener->endpoint : NULL;
}

const struct conf_settings *conf_global(const struct conf *conf)
{
	return conf->global_settings;
}

void conf_format_errors(const struct conf *conf, const char *separator, struct buf *out)
{
	bool first = true;
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity != CONF_ERROR)
			continue;
		if (!first)
			buf_puts(out, separator);
		first = false;
		conf_diag_format(d, out);
	}
}

struct conf *conf_load_checked(const char *path, const char *separator, struct buf *err)
{
	struct conf *conf = conf_load(path);
	if (conf_ok(conf))
		return conf;
	conf_format_errors(conf, separator, err);
	conf_free(conf);
	return NULL;
}

struct conf *conf_reload(const char *path)
{
	struct buf err = BUF_INIT;
	struct conf *conf = conf_load_checked(path, "; ", &err);
	if (conf == NULL)
		log_error("reload refused, the running configuration stays: %s", buf_cstr(&err));
	buf_free(&err);
	return conf;
}

const char *conf_spool(const struct conf *conf)
{
	const char *spool = conf_get_string(conf_global(conf), "spool");
	return spool && *spool ? spool : TERN_LOCALSTATEDIR "/spool/tern";
}

/* The pickup directive's argument i, else <spool>/default_name. */
static char *pickup_path(const struct conf *conf, size_t i, const char *default_name)
{
	const struct conf_value *pickup = conf_get_value(conf_global(conf), "pickup");
	if (!pickup->unset && pickup->list.count > i)
		return mem_strdup(pickup->list.items[i]);
	return mem_asprintf("%s/%s", conf_spool(conf), default_name);
}

char *conf_host_name(const struct conf *conf)
{
	const char *host = conf_get_string(conf_global(conf), "host-name");
	return host && *host ? mem_strdup(host) : fileio_system_host_name();
}

unsigned conf_worker_processes(const struct conf *conf, const char *directive)
{
	uint64_t n = conf_get_uint(conf_global(conf), directive);
	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (uint64_t)cpus : 1;
	}
	return n > 256 ? 256 : (unsigned)n;
}

char *conf_pickup_dir(const struct conf *conf)
{
	return pickup_path(conf, 0, "pickup");
}

char *conf_pickup_bad_dir(const struct conf *conf)
{
	return pickup_path(conf, 1, "pickup-bad");
}
