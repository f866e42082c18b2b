/* ctl_config.c: the commands that read the configuration file without
 * talking to the daemons: "test config" checks it, "explain" shows the
 * settings that apply to a recipient domain or a client IP and the line
 * each one comes from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "buf.h"
#include "conf.h"
#include "ctl_internal.h"
#include "json.h"

static void print_diags(const struct conf *conf, enum conf_severity severity)
{
	struct buf line = BUF_INIT;
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity != severity)
			continue;
		buf_reset(&line);
		conf_diag_format(d, &line);
		fprintf(stderr, "%s\n", buf_cstr(&line));
	}
	buf_free(&line);
}

/* {"ok": BOOL, "errors": [...], "warnings": [...]}, each diagnostic as
 * {"file", "line", "message"}. */
static void print_diags_json(const struct conf *conf)
{
	struct buf out = BUF_INIT;
	buf_printf(&out, "{\"ok\": %s", conf_ok(conf) ? "true" : "false");
	static const struct {
		enum conf_severity severity;
		const char *key;
	} kinds[] = {{CONF_ERROR, "errors"}, {CONF_WARNING, "warnings"}};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		buf_printf(&out, ", \"%s\": [", kinds[k].key);
		bool first = true;
		for (size_t i = 0; i < conf_diag_count(conf); i++) {
			const struct conf_diag *d = conf_diag_at(conf, i);
			if (d->severity != kinds[k].severity)
				continue;
			buf_puts(&out, first ? "{\"file\": " : ", {\"file\": ");
			first = false;
			json_append_string(&out, d->file ? d->file : "");
			buf_printf(&out, ", \"line\": %u, \"message\": ", d->line);
			json_append_string(&out, d->message);
			buf_putc(&out, '}');
		}
		buf_putc(&out, ']');
	}
	buf_puts(&out, "}\n");
	fputs(buf_cstr(&out), stdout);
	buf_free(&out);
}

int ctl_test_config(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc > 0)
		return ctl_usage_error("test config takes no argument, got \"%s\"", argv[0]);
	struct conf *conf = conf_load(opts->config);
	int status = conf_ok(conf) ? CTL_EXIT_OK : CTL_EXIT_FAIL;
	if (opts->json) {
		print_diags_json(conf);
	} else if (status == CTL_EXIT_OK) {
		print_diags(conf, CONF_WARNING);
		printf("Configuration OK.\n");
	} else {
		/* Warnings would bury the errors that must be fixed first. */
		print_diags(conf, CONF_ERROR);
	}
	conf_free(conf);
	return status;
}

/* ---- explain ---------------------------------------------------------------------- */

struct explain_out {
	bool json;
	bool first;
	struct buf line;
};

static void json_setting(const struct conf_setting *s, struct buf *out)
{
	struct buf text = BUF_INIT;
	buf_puts(out, "{\"value\": ");
	conf_setting_format_value(s, &text);
	json_append_string(out, buf_cstr(&text));
	buf_reset(&text);
	buf_puts(out, ", \"from\": ");
	conf_setting_format_origin(s, &text);
	json_append_string(out, buf_cstr(&text));
	buf_putc(out, '}');
	buf_free(&text);
}

/* Repeatable directives become an array of occurrences in JSON (empty when
 * none is configured); the others one object. */
static void explain_json(const char *name, const struct conf_setting *s, struct explain_out *o)
{
	bool repeatable = conf_directive_repeatable(name);
	buf_puts(&o->line, o->first ? "{\n  " : ",\n  ");
	o->first = false;
	json_append_string(&o->line, name);
	buf_puts(&o->line, ": ");
	if (!repeatable) {
		json_setting(s, &o->line);
		return;
	}
	buf_putc(&o->line, '[');
	for (const struct conf_setting *one = s; one && !one->value.unset; one = one->next) {
		if (one != s)
			buf_puts(&o->line, ", ");
		json_setting(one, &o->line);
	}
	buf_putc(&o->line, ']');
}

static void explain_text(const char *name, const struct conf_setting *s, struct explain_out *o)
{
	for (const struct conf_setting *one = s; one; one = one->next) {
		buf_printf(&o->line, "%s ", name);
		conf_setting_format_value(one, &o->line);
		buf_puts(&o->line, "  # ");
		conf_setting_format_origin(one, &o->line);
		buf_putc(&o->line, '\n');
	}
}

static void explain_one(const char *name, const struct conf_setting *s, void *arg)
{
	struct explain_out *o = arg;
	if (o->json)
		explain_json(name, s, o);
	else
		explain_text(name, s, o);
}

static void print_settings(const struct conf_settings *s, bool json)
{
	struct explain_out o = {json, true, BUF_INIT};
	conf_settings_each(s, explain_one, &o);
	if (json)
		buf_puts(&o.line, o.first ? "{}\n" : "\n}\n");
	fputs(buf_cstr(&o.line), stdout);
	buf_free(&o.line);
}

/* One line: the first error, and how many more there are. */
static int bad_config(const struct conf *conf, const char *path)
{
	struct buf first = BUF_INIT;
	size_t errors = 0;
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity != CONF_ERROR)
			continue;
		if (errors++ == 0)
			conf_diag_format(d, &first);
	}
	int status;
	if (errors > 1)
		status = ctl_fail("%s (and %zu more errors; see ternctl test config -c %s)", buf_cstr(&first),
		                  errors - 1, path);
	else
		status = ctl_fail("%s", buf_cstr(&first));
	buf_free(&first);
	return status;
}

static int explain_domain(const struct conf *conf, const struct ctl_options *opts, int argc, char **argv)
{
	if (argc < 1 || argc > 2)
		return ctl_usage_error("usage: ternctl explain domain NAME [VMTA]");
	const char *vmta = argc == 2 ? argv[1] : NULL;
	struct conf_settings *s = conf_resolve_domain(conf, argv[0], vmta);
	if (!s)
		return ctl_fail("no <virtual-mta %s> or <virtual-mta-pool %s> in %s", vmta, vmta, opts->config);
	print_settings(s, opts->json);
	conf_settings_free(s);
	return CTL_EXIT_OK;
}

static int explain_source(const struct conf *conf, const struct ctl_options *opts, int argc, char **argv)
{
	if (argc < 1 || argc > 2)
		return ctl_usage_error("usage: ternctl explain source IP [SOURCE-NAME]");
	struct addr_ip ip;
	const char *why = NULL;
	if (!addr_parse_ip(argv[0], &ip, &why))
		return ctl_fail("bad IP address \"%s\": %s", argv[0], why ? why : "not an IP address");
	const char *name = argc == 2 ? argv[1] : NULL;
	struct conf_settings *s = conf_resolve_source(conf, &ip, name);
	if (!s)
		return ctl_fail("no named <source %s> in %s", name, opts->config);
	print_settings(s, opts->json);
	conf_settings_free(s);
	return CTL_EXIT_OK;
}

int ctl_explain(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc < 1 || (strcmp(argv[0], "domain") != 0 && strcmp(argv[0], "source") != 0))
		return ctl_usage_error("usage: ternctl explain domain NAME [VMTA] | source IP [SOURCE-NAME]");
	struct conf *conf = conf_load(opts->config);
	int status;
	if (!conf_ok(conf))
		status = bad_config(conf, opts->config);
	else if (strcmp(argv[0], "domain") == 0)
		status = explain_domain(conf, opts, argc - 1, argv + 1);
	else
		status = explain_source(conf, opts, argc - 1, argv + 1);
	conf_free(conf);
	return status;
}
