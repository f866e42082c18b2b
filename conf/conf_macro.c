/* conf_macro.c: domain patterns (*, example.com, *.example.com,
 * [*.]example.com, [10.0.0.0/8]) and the domain-macro expansion that
 * produces them ("yahoo.$topLevel" with "domain-macro topLevel com, de"). */
#include "conf_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"

char *conf_domain_normalize(const char *domain)
{
	char *out = mem_strdup(domain);
	for (char *p = out; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	size_t len = strlen(out);
	if (len > 1 && out[len - 1] == '.')
		out[len - 1] = '\0';
	return out;
}

static bool check_domain(const char *domain, struct buf *err)
{
	const char *why = NULL;
	size_t label = 0;
	if (!*domain)
		why = "empty domain";
	for (const char *p = domain; !why && *p; p++) {
		if (*p == '.') {
			if (label == 0)
				why = "empty label";
			label = 0;
		} else if ((unsigned char)*p <= ' ' || strchr("*[]/$,\"#<>\\@", *p)) {
			why = "character not allowed in a domain";
		} else if (++label > 63) {
			why = "label longer than 63 characters";
		}
	}
	if (!why && label == 0)
		why = "empty label";
	if (!why && strlen(domain) > 253)
		why = "longer than 253 characters";
	if (why)
		buf_printf(err, "bad domain pattern \"%s\": %s", domain, why);
	return why == NULL;
}

static unsigned count_labels(const char *domain)
{
	unsigned n = 1;
	for (const char *p = domain; *p; p++)
		n += *p == '.';
	return n;
}

static bool parse_literal(char *inner, struct conf_pattern *out, struct buf *err)
{
	const char *why = NULL;
	const char *ip = strncmp(inner, "ipv6:", 5) == 0 ? inner + 5 : inner;
	if (!addr_parse_cidr(ip, &out->cidr, &why)) {
		buf_printf(err, "bad address literal \"[%s]\": %s", inner, why ? why : "not an address");
		return false;
	}
	out->kind = CONF_PAT_CIDR;
	out->key = mem_strdup(ip);
	return true;
}

bool conf_pattern_parse(const char *text, struct conf_pattern *out, struct buf *err)
{
	memset(out, 0, sizeof *out);
	char *norm = conf_domain_normalize(text);
	size_t len = strlen(norm);
	const char *domain = norm;
	bool ok = true;
	if (strcmp(norm, "*") == 0) {
		out->kind = CONF_PAT_ALL;
		out->key = mem_strdup("");
		free(norm);
		return true;
	}
	if (strncmp(norm, "[*.]", 4) == 0) {
		out->kind = CONF_PAT_BRACKET;
		domain += 4;
	} else if (strncmp(norm, "*.", 2) == 0) {
		out->kind = CONF_PAT_SUB;
		domain += 2;
	} else if (norm[0] == '[' && len > 2 && norm[len - 1] == ']') {
		norm[len - 1] = '\0';
		ok = parse_literal(norm + 1, out, err);
		free(norm);
		return ok;
	} else {
		out->kind = CONF_PAT_EXACT;
	}
	ok = check_domain(domain, err);
	if (ok) {
		out->key = mem_strdup(domain);
		out->depth = count_labels(domain);
	}
	free(norm);
	return ok;
}

/* ---- macros -------------------------------------------------------------------- */

static const struct conf_macro *find_macro(const struct conf *conf, const char *name, size_t len)
{
	for (size_t i = 0; i < conf->macros.count; i++) {
		const struct conf_macro *m = conf->macros.items[i];
		if (strlen(m->name) == len && strncasecmp(m->name, name, len) == 0)
			return m;
	}
	return NULL;
}

struct expansion {
	const struct conf *conf;
	const struct conf_macro *stack[CONF_MAX_INCLUDE_DEPTH];
	size_t depth;
	size_t produced;
	struct buf *err;
};

static void loop_message(struct expansion *x, const struct conf_macro *again)
{
	buf_puts(x->err, "domain-macro loop: ");
	for (size_t i = 0; i < x->depth; i++)
		buf_printf(x->err, "$%s -> ", x->stack[i]->name);
	buf_printf(x->err, "$%s", again->name);
}

static bool expand(struct expansion *x, const char *text, struct conf_list *out);

/* Expands the text of one macro value into its own list (values may
 * refer to macros themselves). */
static bool expand_macro(struct expansion *x, const struct conf_macro *m, struct conf_list *values)
{
	for (size_t i = 0; i < x->depth; i++) {
		if (x->stack[i] == m) {
			loop_message(x, m);
			return false;
		}
	}
	if (x->depth == CONF_MAX_INCLUDE_DEPTH) {
		buf_puts(x->err, "domain macros nested too deeply");
		return false;
	}
	x->stack[x->depth++] = m;
	bool ok = true;
	for (size_t i = 0; ok && i < m->values.count; i++)
		ok = expand(x, m->values.items[i], values);
	x->depth--;
	return ok;
}

static bool expand(struct expansion *x, const char *text, struct conf_list *out)
{
	const char *dollar = strchr(text, '$');
	if (!dollar) {
		if (++x->produced > CONF_MAX_MACRO_EXPANSION) {
			buf_printf(x->err, "domain macros expand to more than %d patterns", CONF_MAX_MACRO_EXPANSION);
			return false;
		}
		conf_list_add(out, text);
		return true;
	}
	const char *name = dollar + 1, *end = name;
	while (isalnum((unsigned char)*end) || *end == '_')
		end++;
	const struct conf_macro *m = find_macro(x->conf, name, (size_t)(end - name));
	if (!m) {
		buf_printf(x->err, "unknown domain-macro \"$%.*s\"", (int)(end - name), name);
		return false;
	}
	struct conf_list values = {0, NULL};
	bool ok = expand_macro(x, m, &values);
	struct buf whole = BUF_INIT;
	for (size_t i = 0; ok && i < values.count; i++) {
		buf_reset(&whole);
		buf_append(&whole, text, (size_t)(dollar - text));
		buf_puts(&whole, values.items[i]);
		buf_puts(&whole, end);
		ok = expand(x, buf_cstr(&whole), out);
	}
	buf_free(&whole);
	conf_list_free(&values);
	return ok;
}

bool conf_macro_expand(const struct conf *conf, const char *text, struct conf_list *out, bool *expanded,
                       struct buf *err)
{
	struct expansion x = {.conf = conf, .err = err};
	*expanded = strchr(text, '$') != NULL;
	if (expand(&x, text, out))
		return true;
	conf_list_free(out);
	return false;
}
