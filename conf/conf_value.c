/* conf_value.c: turns the arguments of a directive into its typed value,
 * according to the directive's type in the table.  Messages name the
 * directive, what it expects and what it got; the caller adds FILE:LINE.
 * The same code parses the defaults of the table. */
#include "conf_internal.h"

#include <bsd/string.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"

/* ---- lists ------------------------------------------------------------------ */

void conf_list_add(struct conf_list *list, const char *item)
{
	list->items = mem_reallocarray(list->items, list->count + 1, sizeof *list->items);
	list->items[list->count++] = mem_strdup(item);
}

void conf_list_free(struct conf_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static void list_free_secret(struct conf_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		mem_free_secret(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static void join_words(const struct conf_list *args, size_t from, struct buf *out)
{
	for (size_t i = from; i < args->count; i++) {
		if (i > from)
			buf_putc(out, ' ');
		buf_puts(out, args->items[i]);
	}
}

static void split_text(const char *text, char sep, struct conf_list *out, bool *empty_item)
{
	*empty_item = false;
	for (const char *p = text;;) {
		const char *end = strchr(p, sep);
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *start = p;
		while (len && isspace((unsigned char)*start)) {
			start++;
			len--;
		}
		while (len && isspace((unsigned char)start[len - 1]))
			len--;
		if (len == 0)
			*empty_item = true;
		char *item = mem_strndup(start, len);
		conf_list_add(out, item);
		free(item);
		if (!end)
			return;
		p = end + 1;
	}
}

bool conf_list_split(const struct conf_list *args, char sep, struct conf_list *out, struct buf *err)
{
	struct buf text = BUF_INIT;
	join_words(args, 0, &text);
	bool empty_item;
	split_text(buf_cstr(&text), sep, out, &empty_item);
	buf_free(&text);
	if (empty_item) {
		buf_puts(err, "empty item in list");
		conf_list_free(out);
		return false;
	}
	return true;
}

/* ---- messages ------------------------------------------------------------------ */

static const char *type_description(enum conf_type type)
{
	switch (type) {
	case CONF_T_BOOL:
		return "yes or no";
	case CONF_T_UINT:
		return "a whole number";
	case CONF_T_COUNT:
		return "a whole number or unlimited";
	case CONF_T_UINT_OR_AUTO:
		return "a whole number or auto";
	case CONF_T_SIZE:
		return "a size such as 50M or unlimited";
	case CONF_T_INTERVAL:
		return "a time interval such as 10m";
	case CONF_T_INTERVAL_NEVER:
		return "a time interval such as 10m, or never";
	case CONF_T_BOOL_OR_INTERVAL:
		return "yes, no, a time interval or never";
	case CONF_T_INTERVAL_LIST:
		return "a list of time intervals such as 10m,1h";
	case CONF_T_RATE:
	case CONF_T_CIDR_RATE:
		return "a rate such as 100/h";
	case CONF_T_VOLUME_RATE:
	case CONF_T_CIDR_VOLUME_RATE:
		return "a data-volume rate such as 10g/2h";
	case CONF_T_RATE_LIST:
		return "a list of rates such as 100/d";
	case CONF_T_CIDR:
		return "an IP address or CIDR range";
	case CONF_T_IP:
		return "an IP address";
	case CONF_T_ENDPOINT:
	case CONF_T_LISTEN:
		return "IP:PORT";
	case CONF_T_NAME_SERVER:
		return "IP or IP:PORT";
	default:
		return "a value";
	}
}

/* One address, with or without a port: "192.0.2.53", "[::1]:5353". */
static bool is_one_address(const char *text)
{
	struct addr_ip ip;
	struct addr_endpoint ep;
	if (addr_parse_ip(text, &ip, NULL))
		return true;
	return addr_parse_endpoint(text, &ep, NULL) &&
	       ep.range.prefix == (ep.range.ip.family == AF_INET ? 32u : 128u);
}

/* "NAME" expects WHAT, got "TEXT"; the parser's reason is added when it
 * says more than the expectation already does. */
static bool expected(const struct conf_directive *d, const char *what, const char *got, const char *why,
                     struct buf *err)
{
	buf_printf(err, "\"%s\" expects %s, got \"%s\"", d->name, what, got);
	if (why && strncmp(why, "expected", 8) != 0)
		buf_printf(err, " (%s)", why);
	return false;
}

static bool count_args(const struct conf_directive *d, const struct conf_list *args, size_t min, size_t max,
                       struct buf *err)
{
	if (args->count == 0) {
		buf_printf(err, "\"%s\" needs a value", d->name);
		return false;
	}
	if (args->count < min) {
		buf_printf(err, "\"%s\" needs %zu values, got %zu", d->name, min, args->count);
		return false;
	}
	if (args->count > max) {
		if (max == 1)
			buf_printf(err, "\"%s\" takes one value, got %zu (quote a value that contains blanks)", d->name,
			           args->count);
		else
			buf_printf(err, "\"%s\" takes at most %zu values, got %zu", d->name, max, args->count);
		return false;
	}
	return true;
}

/* ---- scalar types ---------------------------------------------------------------- */

static bool parse_number(const struct conf_directive *d, const char *text, struct conf_value *out, struct buf *err)
{
	const char *why = NULL;
	if ((d->type == CONF_T_COUNT && strcasecmp(text, "unlimited") == 0) ||
	    (d->type == CONF_T_UINT_OR_AUTO && strcasecmp(text, "auto") == 0)) {
		out->number = VALUE_UNLIMITED;
		return true;
	}
	if (!value_parse_uint(text, &out->number, &why))
		return expected(d, type_description(d->type), text, why, err);
	if (d->max && out->number > d->max) {
		struct buf what = BUF_INIT;
		buf_printf(&what, "a whole number from 0 to %llu", (unsigned long long)d->max);
		expected(d, buf_cstr(&what), text, NULL, err);
		buf_free(&what);
		return false;
	}
	return true;
}

static bool parse_enum(const struct conf_directive *d, const char *text, struct conf_value *out, struct buf *err)
{
	/* An enum that includes yes and no also takes the other boolean
	 * spellings (true, off, ...). */
	bool b;
	const char *word = text;
	if (value_parse_bool(text, &b, NULL))
		word = b ? "yes" : "no";
	for (unsigned i = 0; d->words[i]; i++) {
		if (strcasecmp(word, d->words[i]) == 0) {
			out->word = i;
			out->string = mem_strdup(d->words[i]);
			return true;
		}
	}
	struct buf what = BUF_INIT;
	buf_puts(&what, "one of ");
	for (unsigned i = 0; d->words[i]; i++)
		buf_printf(&what, "%s%s", i ? ", " : "", d->words[i]);
	expected(d, buf_cstr(&what), text, NULL, err);
	buf_free(&what);
	return false;
}

static bool parse_interval(const struct conf_directive *d, const char *text, bool never_ok, struct conf_value *out,
                           struct buf *err)
{
	const char *why = NULL;
	if (!value_parse_interval(text, &out->seconds, &why))
		return expected(d, type_description(d->type), text, why, err);
	if (out->seconds == VALUE_NEVER && !never_ok)
		return expected(d, type_description(d->type), text, "\"never\" is not allowed here", err);
	if (d->max && out->seconds != VALUE_NEVER && (uint64_t)out->seconds > d->max) {
		buf_printf(err, "\"%s\" may be at most %llus, got \"%s\"", d->name, (unsigned long long)d->max, text);
		return false;
	}
	return true;
}

static bool parse_bool_or_interval(const struct conf_directive *d, const char *text, struct conf_value *out,
                                   struct buf *err)
{
	if (value_parse_bool(text, &out->boolean, NULL))
		return true;
	if (!parse_interval(d, text, true, out, err))
		return false;
	out->boolean = out->seconds != VALUE_NEVER;
	return true;
}

static bool parse_scalar(const struct conf_directive *d, const char *text, struct conf_value *out, struct buf *err)
{
	const char *why = NULL;
	switch (d->type) {
	case CONF_T_BOOL:
		if (!value_parse_bool(text, &out->boolean, &why))
			return expected(d, "yes or no", text, why, err);
		return true;
	case CONF_T_UINT:
	case CONF_T_COUNT:
	case CONF_T_UINT_OR_AUTO:
		return parse_number(d, text, out, err);
	case CONF_T_SIZE:
		if (!value_parse_size(text, &out->number, &why))
			return expected(d, type_description(d->type), text, why, err);
		return true;
	case CONF_T_INTERVAL:
		return parse_interval(d, text, false, out, err);
	case CONF_T_INTERVAL_NEVER:
		return parse_interval(d, text, true, out, err);
	case CONF_T_BOOL_OR_INTERVAL:
		return parse_bool_or_interval(d, text, out, err);
	case CONF_T_RATE:
	case CONF_T_VOLUME_RATE:
		if (!value_parse_rate(text, d->type == CONF_T_VOLUME_RATE, &out->rate, &why))
			return expected(d, type_description(d->type), text, why, err);
		return true;
	case CONF_T_ENUM:
		return parse_enum(d, text, out, err);
	case CONF_T_CIDR:
		if (!addr_parse_cidr(text, &out->cidr, &why))
			return expected(d, type_description(d->type), text, why, err);
		return true;
	case CONF_T_IP:
		if (!addr_parse_ip(text, &out->cidr.ip, &why))
			return expected(d, type_description(d->type), text, why, err);
		out->cidr.prefix = out->cidr.ip.family == AF_INET ? 32 : 128;
		return true;
	case CONF_T_ENDPOINT:
		if (!addr_parse_endpoint(text, &out->endpoint, &why))
			return expected(d, type_description(d->type), text, why, err);
		return true;
	case CONF_T_NAME_SERVER:
		if (!is_one_address(text))
			return expected(d, type_description(d->type), text, NULL, err);
		out->string = mem_strdup(text);
		return true;
	default: /* string, secret, path, include */
		if (d->type == CONF_T_SECRET)
			out->secret = mem_strdup(text);
		else
			out->string = mem_strdup(text);
		return true;
	}
}

/* ---- compound types ----------------------------------------------------------------- */

static bool parse_interval_list(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                                struct buf *err)
{
	struct buf text = BUF_INIT;
	join_words(args, 0, &text);
	const char *why = NULL;
	out->intervals = mem_zalloc(sizeof *out->intervals);
	bool ok = value_parse_interval_list(buf_cstr(&text), out->intervals, &why);
	if (!ok)
		expected(d, type_description(d->type), buf_cstr(&text), why, err);
	buf_free(&text);
	return ok;
}

static bool parse_rate_list(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                            struct buf *err)
{
	if (!conf_list_split(args, ',', &out->list, err))
		return false;
	for (size_t i = 0; i < out->list.count; i++) {
		const char *why = NULL;
		if (!value_parse_rate(out->list.items[i], false, &out->rate, &why))
			return expected(d, type_description(d->type), out->list.items[i], why, err);
	}
	return true;
}

static bool parse_records(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                          struct buf *err)
{
	struct conf_list written = {0, NULL};
	if (!conf_list_split(args, ',', &written, err))
		return false;
	bool ok = true;
	for (size_t i = 0; ok && i < written.count; i++) {
		const char *type = conf_record_type(written.items[i]);
		if (!type) {
			buf_printf(err, "\"%s\": unknown record type \"%s\" (known: d, b, t, tq, r, f, rb, rs)",
			           d->name, written.items[i]);
			ok = false;
			break;
		}
		for (size_t j = 0; j < out->list.count; j++) {
			if (strcmp(out->list.items[j], type) == 0) {
				buf_printf(err, "\"%s\": record type \"%s\" is listed twice", d->name, type);
				ok = false;
			}
		}
		conf_list_add(&out->list, type);
	}
	conf_list_free(&written);
	return ok;
}

static bool valid_header_name(const char *name)
{
	if (!*name)
		return false;
	for (const char *p = name; *p; p++)
		if (*p <= ' ' || *p == ':' || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

static bool check_record_field(const char *field, struct buf *err)
{
	const char *name = field[0] == '!' ? field + 1 : field;
	const char *suggestion;
	if (strcmp(field, "*") == 0)
		return true;
	if (strncasecmp(name, "header_", 7) == 0) {
		if (valid_header_name(name + 7))
			return true;
		buf_printf(err, "\"record-fields\": bad header name in \"%s\"", field);
		return false;
	}
	if (conf_record_field_known(name, &suggestion))
		return true;
	buf_printf(err, "\"record-fields\": unknown field \"%s\"", name);
	if (suggestion)
		buf_printf(err, "; did you mean \"%s\"?", suggestion);
	return false;
}

static bool parse_record_fields(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                                struct buf *err)
{
	if (!count_args(d, args, 2, SIZE_MAX, err))
		return false;
	const char *type = conf_record_type(args->items[0]);
	if (!type) {
		buf_printf(err, "\"%s\": unknown record type \"%s\" (known: d, b, t, tq, r, f, rb, rs)", d->name,
		           args->items[0]);
		return false;
	}
	out->string = mem_strdup(type);
	struct conf_list fields = {args->count - 1, args->items + 1};
	if (!conf_list_split(&fields, ',', &out->list, err))
		return false;
	for (size_t i = 0; i < out->list.count; i++)
		if (!check_record_field(out->list.items[i], err))
			return false;
	return true;
}

/* Reads "/regex/" at the start of text; *after points past it. */
static bool take_regex(const char *text, char **regex, const char **after, struct buf *err)
{
	if (*text != '/') {
		buf_printf(err, "expected a /regex/, got \"%s\"", text);
		return false;
	}
	const char *p = text + 1;
	while (*p && *p != '/') {
		if (*p == '\\' && p[1])
			p++;
		p++;
	}
	if (*p != '/') {
		buf_puts(err, "unterminated /regex/ (missing the closing /)");
		return false;
	}
	if (p[1] && p[1] != ' ' && p[1] != '\t') {
		buf_puts(err, "expected a blank after the closing / of the regex");
		return false;
	}
	*regex = mem_strndup(text + 1, (size_t)(p - text - 1));
	*after = p + 1;
	return true;
}

static void words_of(const char *text, struct conf_list *out)
{
	const char *p = text;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			return;
		const char *start = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		char *word = mem_strndup(start, (size_t)(p - start));
		conf_list_add(out, word);
		free(word);
	}
}

static bool parse_regex_category(const struct conf_directive *d, const char *rest, struct conf_value *out,
                                 struct buf *err)
{
	const char *after;
	char *regex;
	if (!take_regex(rest, &regex, &after, err))
		return false;
	out->regex = regex;
	struct conf_list words = {0, NULL};
	words_of(after, &words);
	bool ok = words.count == 1;
	if (ok)
		out->string = mem_strdup(words.items[0]);
	else
		buf_printf(err, "a /regex/ line needs exactly one bounce category after the regex, got %zu words",
		           words.count);
	conf_list_free(&words);
	return ok;
}

static const char *const reply_actions[] = {
    "mode=backoff", "mode=normal",       "backoff-to-normal-after=", "skip-mx",    "bounce-queue",
    "bounce-rcpt",  "disable-source-ip", "reenable-after=",          "defer-queue"};

static int reply_action(const char *action)
{
	for (size_t i = 0; i < sizeof reply_actions / sizeof reply_actions[0]; i++) {
		size_t n = strlen(reply_actions[i]);
		bool takes_value = reply_actions[i][n - 1] == '=';
		if (takes_value ? strncasecmp(action, reply_actions[i], n) == 0
		                : strcasecmp(action, reply_actions[i]) == 0)
			return (int)i;
	}
	return -1;
}

static bool check_reply_actions(const struct conf_list *actions, struct buf *err)
{
	bool seen[sizeof reply_actions / sizeof reply_actions[0]] = {false};
	for (size_t i = 0; i < actions->count; i++) {
		int a = reply_action(actions->items[i]);
		if (a < 0) {
			buf_printf(err, "\"reply\": unknown action \"%s\"", actions->items[i]);
			return false;
		}
		if (seen[a]) {
			buf_printf(err, "\"reply\": action \"%s\" is given twice", actions->items[i]);
			return false;
		}
		seen[a] = true;
		const char *eq = strchr(actions->items[i], '=');
		int64_t seconds;
		const char *why = NULL;
		if ((a == 2 || a == 7) && !value_parse_interval(eq + 1, &seconds, &why)) {
			buf_printf(err, "\"reply\": bad interval in \"%s\" (%s)", actions->items[i], why);
			return false;
		}
	}
	if (seen[0] && seen[1]) {
		buf_puts(err, "\"reply\": mode=backoff and mode=normal exclude each other");
		return false;
	}
	if (seen[3] && seen[4]) {
		buf_puts(err, "\"reply\": skip-mx and bounce-queue exclude each other");
		return false;
	}
	if (seen[7] && !seen[6]) {
		buf_puts(err, "\"reply\": reenable-after needs disable-source-ip");
		return false;
	}
	return true;
}

static bool parse_reply_rule(const char *rest, struct conf_value *out, struct buf *err)
{
	const char *after;
	char *regex;
	if (!take_regex(rest, &regex, &after, err))
		return false;
	out->regex = regex;
	struct conf_list words = {0, NULL};
	words_of(after, &words);
	bool ok = words.count > 0;
	if (!ok)
		buf_puts(err, "\"reply\" needs actions after the /regex/");
	else
		ok = conf_list_split(&words, ',', &out->list, err) && check_reply_actions(&out->list, err);
	conf_list_free(&words);
	return ok;
}

static bool check_pattern_results(const char *name, const struct conf_list *results, struct buf *err)
{
	for (size_t i = 0; i < results->count; i++) {
		const char *r = results->items[i];
		uint64_t priority;
		if (strncasecmp(r, "virtual-mta=", 12) == 0 && r[12])
			continue;
		if (strncasecmp(r, "recipient-priority=", 19) == 0 && value_parse_uint(r + 19, &priority, NULL) &&
		    priority <= 100)
			continue;
		if (strncasecmp(r, "call-to:", 8) == 0 && r[8])
			continue;
		buf_printf(err, "\"%s\": unknown result \"%s\" (use virtual-mta=NAME or recipient-priority=N)", name,
		           r);
		return false;
	}
	return true;
}

static bool parse_pattern_rule(const struct conf_directive *d, const char *rest, struct conf_value *out,
                               struct buf *err)
{
	const char *p = rest;
	if (strcmp(d->name, "header") == 0) {
		const char *start = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		out->string = mem_strndup(start, (size_t)(p - start));
		while (*p == ' ' || *p == '\t')
			p++;
		if (!valid_header_name(out->string)) {
			buf_puts(err, "\"header\" needs a header name, a /regex/ and a result");
			return false;
		}
	}
	if (strcmp(d->name, "*") != 0) {
		char *regex;
		if (!take_regex(p, &regex, &p, err))
			return false;
		out->regex = regex;
	}
	struct conf_list words = {0, NULL};
	words_of(p, &words);
	bool ok = words.count > 0;
	if (!ok)
		buf_printf(err, "\"%s\" needs a result such as virtual-mta=NAME", d->name);
	else
		ok = conf_list_split(&words, ',', &out->list, err) && check_pattern_results(d->name, &out->list, err);
	conf_list_free(&words);
	return ok;
}

static bool parse_cert(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                       struct buf *err)
{
	if (!count_args(d, args, 1, 2, err))
		return false;
	if (!*args->items[0]) {
		buf_printf(err, "\"%s\" needs a file name", d->name);
		return false;
	}
	out->string = mem_strdup(args->items[0]);
	if (args->count == 2)
		out->secret = mem_strdup(args->items[1]);
	return true;
}

static bool parse_pair(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                       struct buf *err)
{
	if (!count_args(d, args, 2, d->type == CONF_T_HTTP_ACCESS ? SIZE_MAX : 2, err))
		return false;
	const char *why = NULL;
	const char *first = args->items[0], *second = args->items[1];
	if (d->type == CONF_T_PATTERN_COUNT) {
		out->string = mem_strdup(first);
	} else if (!addr_parse_cidr(first, &out->cidr, &why)) {
		return expected(d, "an IP address or CIDR range first", first, why, err);
	}
	switch (d->type) {
	case CONF_T_HOST_NAME:
		out->string = mem_strdup(second);
		return true;
	case CONF_T_CIDR_COUNT:
	case CONF_T_PATTERN_COUNT:
		if (!value_parse_uint(second, &out->number, &why))
			return expected(d, "a whole number second", second, why, err);
		return true;
	case CONF_T_CIDR_RATE:
	case CONF_T_CIDR_VOLUME_RATE:
		if (!value_parse_rate(second, d->type == CONF_T_CIDR_VOLUME_RATE, &out->rate, &why))
			return expected(d, type_description(d->type), second, why, err);
		return true;
	default: { /* http-access CIDR LEVEL[,deny-logs] */
		struct conf_list levels = {args->count - 1, args->items + 1};
		if (!conf_list_split(&levels, ',', &out->list, err))
			return false;
		static const char *const known[] = {"none", "monitor", "deny-logs", "operator", "admin"};
		for (size_t i = 0; i < out->list.count; i++) {
			bool ok = false;
			for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
				ok = ok || strcasecmp(out->list.items[i], known[k]) == 0;
			if (!ok)
				return expected(d, "none, monitor, operator or admin", out->list.items[i], NULL, err);
		}
		return true;
	}
	}
}

static bool parse_smtp_hosts(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                             struct buf *err)
{
	struct conf_list levels = {0, NULL};
	if (!conf_list_split(args, ';', &levels, err))
		return false;
	out->hosts = mem_calloc(levels.count, sizeof *out->hosts);
	out->host_levels = levels.count;
	bool ok = true;
	for (size_t i = 0; ok && i < levels.count; i++) {
		struct conf_list one = {1, &levels.items[i]};
		ok = conf_list_split(&one, ',', &out->hosts[i], err);
	}
	conf_list_free(&levels);
	if (!ok)
		buf_printf(err, " in \"%s\"", d->name);
	return ok;
}

static bool parse_listen(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                         struct buf *err)
{
	const char *why = NULL;
	if (!count_args(d, args, 1, 3, err))
		return false;
	if (!addr_parse_endpoint(args->items[0], &out->endpoint, &why))
		return expected(d, "IP:PORT", args->items[0], why, err);
	bool seen_tls = false;
	for (size_t i = 1; i < args->count; i++) {
		const char *opt = args->items[i];
		conf_list_add(&out->list, opt);
		if (strncasecmp(opt, "tls=", 4) == 0 && !seen_tls) {
			seen_tls = true;
			if (!value_parse_bool(opt + 4, &out->boolean, &why))
				return expected(d, "tls=yes or tls=no", opt, NULL, err);
		} else if (strncasecmp(opt, "source=", 7) == 0 && opt[7] && !out->string) {
			out->string = mem_strdup(opt + 7);
		} else {
			buf_printf(err, "\"%s\": unknown or repeated option \"%s\" (use tls=yes or source=NAME)",
			           d->name, opt);
			return false;
		}
	}
	return true;
}

static bool parse_privacy(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                          struct buf *err)
{
	static const char *const methods[] = {"retain", "redact", "siphash", "siphash-hexkey", "hmac-sha256", NULL};
	struct conf_directive as_enum = *d;
	as_enum.words = methods;
	if (!count_args(d, args, 1, 2, err) || !parse_enum(&as_enum, args->items[0], out, err))
		return false;
	bool keyed = out->word >= 2;
	if (keyed && args->count != 2) {
		buf_printf(err, "\"%s %s\" needs a key", d->name, out->string);
		return false;
	}
	if (out->word == 0 && args->count != 1) {
		buf_printf(err, "\"%s retain\" takes no argument", d->name);
		return false;
	}
	if (args->count == 2)
		out->secret = mem_strdup(args->items[1]);
	return true;
}

static bool valid_macro_name(const char *name)
{
	if (!*name)
		return false;
	for (const char *p = name; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_')
			return false;
	return true;
}

static bool parse_macro(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                        struct buf *err)
{
	if (!count_args(d, args, 2, SIZE_MAX, err))
		return false;
	if (!valid_macro_name(args->items[0])) {
		buf_printf(err, "bad macro name \"%s\" (letters, digits and _ only)", args->items[0]);
		return false;
	}
	out->string = mem_strdup(args->items[0]);
	struct conf_list values = {args->count - 1, args->items + 1};
	return conf_list_split(&values, ',', &out->list, err);
}

static bool parse_domain_list(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                              struct buf *err)
{
	if (!conf_list_split(args, ',', &out->list, err))
		return false;
	for (size_t i = 0; i < out->list.count; i++) {
		struct conf_pattern pattern;
		/* Patterns with macros are checked once macros are known. */
		if (strchr(out->list.items[i], '$'))
			continue;
		if (!conf_pattern_parse(out->list.items[i], &pattern, err)) {
			buf_printf(err, " in \"%s\"", d->name);
			return false;
		}
		free(pattern.key);
	}
	return true;
}

static bool parse_dkim_key(const struct conf_directive *d, const struct conf_list *args, struct conf_value *out,
                           struct buf *err)
{
	if (!conf_list_split(args, ',', &out->list, err))
		return false;
	if (out->list.count != 3) {
		buf_printf(err, "\"%s\" expects SELECTOR,DOMAIN,FILE", d->name);
		return false;
	}
	return true;
}

static bool parse_address_or_regex(const struct conf_directive *d, const struct conf_line *line, struct conf_value *out,
                                   struct buf *err)
{
	if (line->rest[0] != '/')
		return count_args(d, &line->args, 1, 1, err) && parse_scalar(d, line->args.items[0], out, err);
	const char *after;
	char *regex;
	if (!take_regex(line->rest, &regex, &after, err))
		return false;
	out->regex = regex;
	if (*after) {
		buf_printf(err, "\"%s\" takes one /regex/ and nothing after it", d->name);
		return false;
	}
	return true;
}

/* ---- entry point ---------------------------------------------------------------------- */

static bool clearable(enum conf_type type)
{
	switch (type) {
	case CONF_T_STRING:
	case CONF_T_SECRET:
	case CONF_T_PATH:
	case CONF_T_LIST:
	case CONF_T_RECORDS:
	case CONF_T_DOMAIN_LIST:
	case CONF_T_SMTP_HOSTS:
		return true;
	default:
		return false;
	}
}

static bool parse_args(const struct conf_directive *d, const struct conf_line *line, struct conf_value *out,
                       struct buf *err)
{
	const struct conf_list *args = &line->args;
	switch (d->type) {
	case CONF_T_REGEX_CATEGORY:
		return parse_regex_category(d, line->rest, out, err);
	case CONF_T_REPLY_RULE:
		return parse_reply_rule(line->rest, out, err);
	case CONF_T_PATTERN_RULE:
		return parse_pattern_rule(d, line->rest, out, err);
	case CONF_T_ADDRESS_OR_REGEX:
		return parse_address_or_regex(d, line, out, err);
	default:
		break;
	}
	if (args->count == 0)
		return count_args(d, args, 1, 1, err);
	switch (d->type) {
	case CONF_T_INTERVAL_LIST:
		return parse_interval_list(d, args, out, err);
	case CONF_T_RATE_LIST:
		return parse_rate_list(d, args, out, err);
	case CONF_T_LIST:
		return conf_list_split(args, ',', &out->list, err);
	case CONF_T_RECORDS:
		return parse_records(d, args, out, err);
	case CONF_T_RECORD_FIELDS:
		return parse_record_fields(d, args, out, err);
	case CONF_T_DOMAIN_LIST:
		return parse_domain_list(d, args, out, err);
	case CONF_T_CERT:
		return parse_cert(d, args, out, err);
	case CONF_T_HOST_NAME:
	case CONF_T_CIDR_COUNT:
	case CONF_T_CIDR_RATE:
	case CONF_T_CIDR_VOLUME_RATE:
	case CONF_T_PATTERN_COUNT:
	case CONF_T_HTTP_ACCESS:
		return parse_pair(d, args, out, err);
	case CONF_T_DKIM_KEY:
		return parse_dkim_key(d, args, out, err);
	case CONF_T_SMTP_HOSTS:
		return parse_smtp_hosts(d, args, out, err);
	case CONF_T_LISTEN:
		return parse_listen(d, args, out, err);
	case CONF_T_PICKUP:
	case CONF_T_WORDS:
		if (!count_args(d, args, d->type == CONF_T_PICKUP ? 2 : d->min_args,
		                d->type == CONF_T_PICKUP ? 2 : d->max_args, err))
			return false;
		for (size_t i = 0; i < args->count; i++)
			conf_list_add(&out->list, args->items[i]);
		return true;
	case CONF_T_PRIVACY:
		return parse_privacy(d, args, out, err);
	case CONF_T_MACRO:
		return parse_macro(d, args, out, err);
	default:
		return count_args(d, args, 1, 1, err) && parse_scalar(d, args->items[0], out, err);
	}
}

bool conf_value_parse(const struct conf_directive *d, const struct conf_line *line, struct conf_value *out,
                      struct buf *err)
{
	memset(out, 0, sizeof *out);
	out->type = d->type;
	for (size_t i = 0; i < line->args.count; i++)
		conf_list_add(&out->args, line->args.items[i]);
	if (line->args.count == 1 && line->args.items[0][0] == '\0') {
		if (clearable(d->type)) {
			out->unset = true;
			return true;
		}
		buf_printf(err, "\"%s\" cannot be empty", d->name);
		return false;
	}
	return parse_args(d, line, out, err);
}

void conf_value_free(struct conf_value *value)
{
	bool secret = value->secret != NULL;
	if (secret)
		list_free_secret(&value->args);
	else
		conf_list_free(&value->args);
	conf_list_free(&value->list);
	free(value->intervals);
	free((char *)value->string);
	mem_free_secret((char *)value->secret);
	free((char *)value->regex);
	for (size_t i = 0; i < value->host_levels; i++)
		conf_list_free(&value->hosts[i]);
	free(value->hosts);
	memset(value, 0, sizeof *value);
}
