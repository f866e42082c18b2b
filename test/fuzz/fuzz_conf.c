/* fuzz_conf.c: libFuzzer target for the configuration loader.  The input
 * is loaded as a configuration file (includes disabled, so the fuzzer
 * cannot wander the file system), then resolved and formatted the way
 * ternctl explain does, so that every path a bad file can reach runs. */
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void format_one(const char *name, const struct conf_setting *setting, void *arg)
{
	struct buf *out = arg;
	for (const struct conf_setting *s = setting; s; s = s->next) {
		buf_printf(out, "%s ", name);
		conf_setting_format_value(s, out);
		buf_puts(out, "  # ");
		conf_setting_format_origin(s, out);
		buf_putc(out, '\n');
	}
}

static void explain(struct conf_settings *s, struct buf *out)
{
	if (s) {
		conf_settings_each(s, format_one, out);
		conf_settings_free(s);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *conf = conf_load_buffer("fuzz.conf", (const char *)data, size, CONF_NO_INCLUDE);
	struct buf out = BUF_INIT;
	for (size_t i = 0; i < conf_diag_count(conf); i++)
		conf_diag_format(conf_diag_at(conf, i), &out);
	explain(conf_resolve_domain(conf, "a.b.example.com", NULL), &out);
	explain(conf_resolve_domain(conf, "[10.1.2.3]", NULL), &out);
	for (size_t i = 0; i < conf_block_count(conf, CONF_VMTA); i++)
		explain(conf_resolve_domain(conf, "gmail.com", conf_block_name(conf_block_at(conf, CONF_VMTA, i))),
		        &out);
	struct addr_ip ip;
	if (addr_parse_ip("10.1.2.3", &ip, NULL))
		explain(conf_resolve_source(conf, &ip, NULL), &out);
	for (enum conf_kind k = CONF_GLOBAL; k < CONF_KIND_COUNT; k++) {
		for (size_t i = 0; i < conf_block_count(conf, k); i++) {
			const struct conf_settings *s = conf_block_settings(conf_block_at(conf, k, i));
			if (s)
				conf_settings_each(s, format_one, &out);
		}
	}
	conf_settings_each(conf_global(conf), format_one, &out);
	buf_free(&out);
	conf_free(conf);
	return 0;
}
