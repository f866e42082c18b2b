/* conf_settings.c: a resolved set of settings (one per directive of a
 * scope, each remembering where it came from), the typed getters the
 * daemons use, and the formatting of values back into configuration
 * text for ternctl explain. */
#include "conf_internal.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

struct conf_settings {
	const struct conf *conf;
	enum conf_kind kind;
	const struct conf_setting *by_dir[]; /* conf_directive_total entries */
};

struct conf_settings *conf_settings_new(const struct conf *conf, enum conf_kind kind)
{
	struct conf_settings *s = mem_zalloc(sizeof *s + conf_directive_total * sizeof s->by_dir[0]);
	s->conf = conf;
	s->kind = kind;
	for (size_t i = 0; i < conf_directive_total; i++)
		s->by_dir[i] = &conf->defaults[i];
	return s;
}

void conf_settings_free(struct conf_settings *settings)
{
	free(settings);
}

void conf_settings_set(struct conf_settings *s, size_t dir, const struct conf_setting *setting)
{
	s->by_dir[dir] = setting;
}

const struct conf_setting *conf_settings_lookup(const struct conf_settings *s, size_t dir)
{
	return s->by_dir[dir];
}

void conf_settings_apply(struct conf_settings *s, const struct conf_block *block)
{
	for (size_t i = 0; i < block->nheads; i++)
		s->by_dir[block->heads[i].dir] = block->heads[i].first;
}

/* ---- getters ------------------------------------------------------------------- */

static const struct conf_directive *checked(const struct conf_settings *s, const char *name)
{
	const struct conf_directive *d = conf_directive_lookup(name);
	if (!d)
		log_panic("conf: no directive named \"%s\"", name);
	if (!(d->scopes & CONF_SCOPE(s->kind)))
		log_panic("conf: \"%s\" is not valid in %s", name, conf_kind_name(s->kind));
	return d;
}

static const struct conf_value *typed(const struct conf_settings *s, const char *name, const enum conf_type *types,
                                      size_t ntypes)
{
	const struct conf_directive *d = checked(s, name);
	for (size_t i = 0; i < ntypes; i++)
		if (d->type == types[i])
			return &s->by_dir[conf_directive_index(d)]->value;
	log_panic("conf: \"%s\" is not of the type asked for", name);
}

const struct conf_setting *conf_get_setting(const struct conf_settings *s, const char *name)
{
	return s->by_dir[conf_directive_index(checked(s, name))];
}

const struct conf_value *conf_get_value(const struct conf_settings *s, const char *name)
{
	return &conf_get_setting(s, name)->value;
}

bool conf_get_bool(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_BOOL, CONF_T_BOOL_OR_INTERVAL};
	return typed(s, name, types, 2)->boolean;
}

uint64_t conf_get_uint(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_UINT, CONF_T_COUNT, CONF_T_UINT_OR_AUTO, CONF_T_SIZE};
	return typed(s, name, types, 4)->number;
}

int64_t conf_get_interval(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_INTERVAL, CONF_T_INTERVAL_NEVER, CONF_T_BOOL_OR_INTERVAL};
	return typed(s, name, types, 3)->seconds;
}

struct value_rate conf_get_rate(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_RATE, CONF_T_VOLUME_RATE};
	return typed(s, name, types, 2)->rate;
}

const char *conf_get_string(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_STRING, CONF_T_SECRET, CONF_T_PATH, CONF_T_ENUM};
	const struct conf_value *v = typed(s, name, types, 4);
	if (v->unset)
		return NULL;
	return v->type == CONF_T_SECRET ? v->secret : v->string;
}

const struct conf_list *conf_get_list(const struct conf_settings *s, const char *name)
{
	static const enum conf_type types[] = {CONF_T_LIST, CONF_T_RECORDS, CONF_T_DOMAIN_LIST, CONF_T_RATE_LIST};
	return &typed(s, name, types, 4)->list;
}

void conf_settings_each(const struct conf_settings *s,
                        void (*fn)(const char *name, const struct conf_setting *setting, void *arg), void *arg)
{
	for (size_t i = 0; i < conf_directive_total; i++) {
		const struct conf_directive *d = &conf_directives[i];
		/* include and domain-macro shape the text; they are no setting. */
		if (!(d->scopes & CONF_SCOPE(s->kind)) || d->type == CONF_T_INCLUDE || d->type == CONF_T_MACRO)
			continue;
		fn(d->name, s->by_dir[i], arg);
	}
}

/* ---- formatting ------------------------------------------------------------------ */

static const char MASK[] = "\"********\"";

static void format_args(const struct conf_list *args, struct buf *out)
{
	for (size_t i = 0; i < args->count; i++) {
		if (i)
			buf_putc(out, ' ');
		conf_quote(args->items[i], out);
	}
}

static void format_list(const struct conf_list *list, const char *sep, struct buf *out)
{
	for (size_t i = 0; i < list->count; i++) {
		if (i)
			buf_puts(out, sep);
		conf_quote(list->items[i], out);
	}
}

static void format_rule(const struct conf_value *v, const char *name, struct buf *out)
{
	if (strcmp(name, "header") == 0)
		buf_printf(out, "%s ", v->string);
	if (v->regex)
		buf_printf(out, "/%s/", v->regex);
	if (v->type == CONF_T_REGEX_CATEGORY) {
		buf_printf(out, " %s", v->string);
		return;
	}
	if (v->regex)
		buf_putc(out, ' ');
	format_list(&v->list, ",", out);
}

void conf_setting_format_value(const struct conf_setting *setting, struct buf *out)
{
	const struct conf_value *v = &setting->value;
	if (v->unset) {
		buf_puts(out, "\"\"");
		return;
	}
	switch (v->type) {
	case CONF_T_BOOL:
		buf_puts(out, v->boolean ? "yes" : "no");
		break;
	case CONF_T_BOOL_OR_INTERVAL:
		if (value_parse_bool(v->args.items[0], &(bool){false}, NULL))
			buf_puts(out, v->boolean ? "yes" : "no");
		else
			format_args(&v->args, out);
		break;
	case CONF_T_ENUM:
		buf_puts(out, v->string);
		break;
	case CONF_T_SECRET:
		buf_puts(out, MASK);
		break;
	case CONF_T_CERT:
		conf_quote(v->string, out);
		if (v->secret)
			buf_printf(out, " %s", MASK);
		break;
	case CONF_T_PRIVACY:
		buf_puts(out, v->string);
		if (v->secret && v->word == 1) {
			buf_putc(out, ' ');
			conf_quote(v->secret, out);
		} else if (v->secret) {
			buf_printf(out, " %s", MASK);
		}
		break;
	case CONF_T_REGEX_CATEGORY:
	case CONF_T_REPLY_RULE:
	case CONF_T_PATTERN_RULE:
		format_rule(v, setting->name, out);
		break;
	case CONF_T_ADDRESS_OR_REGEX:
		if (v->regex)
			buf_printf(out, "/%s/", v->regex);
		else
			conf_quote(v->string, out);
		break;
	default:
		format_args(&v->args, out);
		break;
	}
}

void conf_setting_format_origin(const struct conf_setting *setting, struct buf *out)
{
	if (setting->file)
		buf_printf(out, "%s:%u", setting->file, setting->line);
	else
		buf_puts(out, "default");
}
