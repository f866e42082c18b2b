/* test_conf_resolve.c: unit tests of domain and source resolution: which
 * blocks apply, in which order they merge whatever their order in the
 * file, and where each resolved value comes from. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "testutil.h"

static struct conf *load(const char *text)
{
	struct conf *conf = conf_load_buffer("r.conf", text, strlen(text), 0);
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity == CONF_ERROR)
			fail_msg("%s:%u: %s", d->file, d->line, d->message);
	}
	return conf;
}

/* The value of a directive for a domain, as explain writes it. */
static char *domain_value(const struct conf *conf, const char *domain, const char *vmta, const char *directive,
                          unsigned *line)
{
	struct conf_settings *s = conf_resolve_domain(conf, domain, vmta);
	assert_non_null(s);
	const struct conf_setting *setting = conf_get_setting(s, directive);
	struct buf out = BUF_INIT;
	conf_setting_format_value(setting, &out);
	if (line)
		*line = setting->line;
	conf_settings_free(s);
	return buf_detach(&out);
}

static void assert_domain(const struct conf *conf, const char *domain, const char *vmta, const char *directive,
                          const char *expected)
{
	char *v = domain_value(conf, domain, vmta, directive, NULL);
	if (strcmp(v, expected) != 0)
		fail_msg("%s%s%s %s: got %s, expected %s", domain, vmta ? "/" : "", vmta ? vmta : "", directive, v,
		         expected);
	free(v);
}

static void assert_source(const struct conf *conf, const char *ip_text, const char *name, const char *directive,
                          const char *expected, const char *origin)
{
	struct addr_ip ip;
	assert_true(addr_parse_ip(ip_text, &ip, NULL));
	struct conf_settings *s = conf_resolve_source(conf, &ip, name);
	assert_non_null(s);
	const struct conf_setting *setting = conf_get_setting(s, directive);
	struct buf out = BUF_INIT;
	conf_setting_format_value(setting, &out);
	if (strcmp(buf_cstr(&out), expected) != 0)
		fail_msg("source %s %s: got %s, expected %s", ip_text, directive, buf_cstr(&out), expected);
	buf_reset(&out);
	conf_setting_format_origin(setting, &out);
	if (origin)
		assert_string_equal(buf_cstr(&out), origin);
	buf_free(&out);
	conf_settings_free(s);
}

/* ---- the DESIGN.md configuration ------------------------------------------------------ */

static void test_design_partner_domain(void **state)
{
	(void)state;
	struct conf *conf = load(design_conf);
	struct conf_settings *s = conf_resolve_domain(conf, "super-secure-server.com", NULL);
	const struct conf_setting *req = conf_get_setting(s, "require-starttls");
	assert_true(req->value.boolean);
	assert_string_equal(req->file, "r.conf");
	assert_int_equal(req->line, 11);
	const struct conf_setting *use = conf_get_setting(s, "use-starttls");
	assert_int_equal(use->line, 10); /* the specific block wins */
	const struct conf_setting *cert = conf_get_setting(s, "smtp-client-certificate");
	assert_int_equal(cert->line, 9);
	assert_string_equal(cert->value.string, "/etc/tern/partner-client.pem");
	assert_string_equal(cert->value.secret, "key password");
	struct buf out = BUF_INIT;
	conf_setting_format_value(cert, &out);
	assert_string_equal(buf_cstr(&out), "/etc/tern/partner-client.pem \"********\"");
	buf_reset(&out);
	conf_setting_format_value(req, &out);
	assert_string_equal(buf_cstr(&out), "yes");
	buf_reset(&out);
	conf_setting_format_origin(req, &out);
	assert_string_equal(buf_cstr(&out), "r.conf:11");
	buf_free(&out);
	conf_settings_free(s);
	conf_free(conf);
}

static void test_design_other_domain(void **state)
{
	(void)state;
	struct conf *conf = load(design_conf);
	struct conf_settings *s = conf_resolve_domain(conf, "gmail.com", NULL);
	assert_int_equal(conf_get_setting(s, "use-starttls")->line, 3);
	assert_int_equal(conf_get_setting(s, "require-starttls")->line, 4);
	assert_false(conf_get_bool(s, "require-starttls"));
	const struct conf_setting *cert = conf_get_setting(s, "smtp-client-certificate");
	assert_null(cert->file);
	assert_true(cert->value.unset);
	const struct conf_setting *out = conf_get_setting(s, "max-smtp-out");
	assert_null(out->file);
	assert_int_equal(out->value.number, 20);
	assert_int_equal(conf_get_interval(s, "bounce-after"), 4 * 86400 + 12 * 3600);
	conf_settings_free(s);
	conf_free(conf);
}

static void test_design_source(void **state)
{
	(void)state;
	struct conf *conf = load(design_conf);
	assert_source(conf, "203.0.113.9", NULL, "allow-starttls", "yes", "r.conf:28");
	assert_source(conf, "203.0.113.9", NULL, "require-starttls-before-auth", "yes", "r.conf:29");
	assert_source(conf, "203.0.113.9", NULL, "allow-unencrypted-plain-auth", "no", "r.conf:30");
	assert_source(conf, "203.0.113.9", NULL, "always-allow-relaying", "no", "default");
	assert_source(conf, "203.0.113.9", NULL, "require-client-certificate", "no", "default");
	/* 0/0 is IPv4 only. */
	assert_source(conf, "2001:db8::1", NULL, "allow-starttls", "no", "default");
	conf_free(conf);
}

/* ---- domains ------------------------------------------------------------------------------ */

static const char *const pattern_blocks[] = {
    "<domain sub.example.com>\n    max-smtp-out 3\n</domain>\n",
    "<domain [*.]example.com>\n    max-smtp-out 7\n    max-msg-per-connection 9\n</domain>\n",
    "<domain *.example.com>\n    max-smtp-out 5\n</domain>\n",
    "<domain *>\n    max-smtp-out 11\n    connect-timeout 1m\n</domain>\n",
    "<domain [*.]b.example.com>\n    max-smtp-out 13\n</domain>\n",
};

static void check_patterns(const struct conf *conf)
{
	assert_domain(conf, "sub.example.com", NULL, "max-smtp-out", "3");
	assert_domain(conf, "sub.example.com", NULL, "max-msg-per-connection", "9");
	assert_domain(conf, "sub.example.com", NULL, "connect-timeout", "1m");
	assert_domain(conf, "other.example.com", NULL, "max-smtp-out", "5");
	assert_domain(conf, "example.com", NULL, "max-smtp-out", "7");
	assert_domain(conf, "example.org", NULL, "max-smtp-out", "11");
	/* A deeper suffix pattern is more specific than a shallower one. */
	assert_domain(conf, "b.example.com", NULL, "max-smtp-out", "13");
	assert_domain(conf, "a.b.example.com", NULL, "max-smtp-out", "13");
	assert_domain(conf, "a.b.example.com", NULL, "max-msg-per-connection", "9");
	/* Case and a trailing dot do not matter. */
	assert_domain(conf, "SUB.Example.COM.", NULL, "max-smtp-out", "3");
	/* Not a suffix match on a label boundary. */
	assert_domain(conf, "notexample.com", NULL, "max-smtp-out", "11");
}

static void test_precedence_does_not_depend_on_order(void **state)
{
	(void)state;
	/* The blocks in their order and in the reverse order. */
	for (int reverse = 0; reverse < 2; reverse++) {
		struct buf text = BUF_INIT;
		size_t n = sizeof pattern_blocks / sizeof pattern_blocks[0];
		for (size_t i = 0; i < n; i++)
			buf_puts(&text, pattern_blocks[reverse ? n - 1 - i : i]);
		struct conf *conf = load(buf_cstr(&text));
		check_patterns(conf);
		conf_free(conf);
		buf_free(&text);
	}
}

static void test_address_literals(void **state)
{
	(void)state;
	struct conf *conf = load("<domain [10.0.0.0/8]>\n    max-smtp-out 2\n</domain>\n"
	                         "<domain [10.1.2.3]>\n    max-smtp-out 4\n</domain>\n"
	                         "<domain [0/0]>\n    max-smtp-out 1\n    log-commands yes\n</domain>\n");
	assert_domain(conf, "[10.1.2.3]", NULL, "max-smtp-out", "4");
	assert_domain(conf, "[10.9.9.9]", NULL, "max-smtp-out", "2");
	assert_domain(conf, "[10.9.9.9]", NULL, "log-commands", "yes");
	assert_domain(conf, "[192.0.2.1]", NULL, "max-smtp-out", "1");
	assert_domain(conf, "example.com", NULL, "max-smtp-out", "20");
	conf_free(conf);
}

static void test_vmta_and_pool_domains(void **state)
{
	(void)state;
	struct conf *conf =
	    load("<domain *>\n    max-smtp-out 10\n    log-commands yes\n</domain>\n"
	         "<domain gmail.com>\n    max-smtp-out 20\n    max-msg-rate 100/h\n</domain>\n"
	         "<virtual-mta v1>\n"
	         "    <domain *>\n        max-smtp-out 2\n    </domain>\n"
	         "</virtual-mta>\n"
	         "<virtual-mta v2>\n</virtual-mta>\n"
	         "<virtual-mta-pool p>\n    virtual-mta v1\n    virtual-mta v2\n"
	         "    <domain gmail.com>\n        max-msg-rate 50/h\n        max-smtp-out 30\n    </domain>\n"
	         "</virtual-mta-pool>\n");
	/* The vmta's own <domain *> overrides even the global exact block. */
	assert_domain(conf, "gmail.com", "v1", "max-smtp-out", "2");
	assert_domain(conf, "gmail.com", "v1", "max-msg-rate", "50/h");
	assert_domain(conf, "gmail.com", "v1", "log-commands", "yes");
	assert_domain(conf, "gmail.com", "v2", "max-smtp-out", "30");
	assert_domain(conf, "gmail.com", "p", "max-smtp-out", "30");
	assert_domain(conf, "yahoo.com", "v1", "max-smtp-out", "2");
	assert_domain(conf, "yahoo.com", "v2", "max-smtp-out", "10");
	assert_domain(conf, "gmail.com", NULL, "max-smtp-out", "20");
	assert_null(conf_resolve_domain(conf, "gmail.com", "no-such-vmta"));
	conf_free(conf);
}

static void test_macros(void **state)
{
	(void)state;
	struct conf *conf = load("domain-macro tld com, de, co.uk\n"
	                         "domain-macro brands yahoo, ymail\n"
	                         "domain-macro all $brands.$tld\n"
	                         "<domain yahoo.de>\n    max-smtp-out 3\n</domain>\n"
	                         "<domain $all>\n    max-smtp-out 5\n    log-data yes\n</domain>\n");
	assert_domain(conf, "yahoo.com", NULL, "max-smtp-out", "5");
	assert_domain(conf, "ymail.co.uk", NULL, "max-smtp-out", "5");
	/* The explicitly listed domain beats the macro-expanded one, even
	 * though the macro block comes later. */
	assert_domain(conf, "yahoo.de", NULL, "max-smtp-out", "3");
	assert_domain(conf, "yahoo.de", NULL, "log-data", "yes");
	assert_domain(conf, "yahoo.fr", NULL, "max-smtp-out", "20");
	conf_free(conf);
}

/* ---- sources ------------------------------------------------------------------------------- */

static void test_source_precedence(void **state)
{
	(void)state;
	struct conf *conf = load("<source 10/8>\n    max-message-size 10M\n</source>\n"
	                         "<source 0/0>\n    log-commands yes\n    max-message-size 1M\n</source>\n"
	                         "<source 10.1.2.3>\n    max-message-size 30M\n</source>\n"
	                         "<source 10.1/16>\n    max-message-size 20M\n    allow-auth no\n</source>\n"
	                         "<source 2001:db8::/32>\n    max-message-size 40M\n</source>\n"
	                         "<source submission>\n    require-auth yes\n    max-message-size 50M\n</source>\n");
	assert_source(conf, "10.1.2.3", NULL, "max-message-size", "30M", "r.conf:9");
	assert_source(conf, "10.1.2.3", NULL, "allow-auth", "no", "r.conf:13");
	assert_source(conf, "10.1.9.9", NULL, "max-message-size", "20M", NULL);
	assert_source(conf, "10.2.2.3", NULL, "max-message-size", "10M", NULL);
	assert_source(conf, "192.0.2.1", NULL, "max-message-size", "1M", NULL);
	assert_source(conf, "10.1.2.3", NULL, "log-commands", "yes", "r.conf:5");
	assert_source(conf, "2001:db8::5", NULL, "max-message-size", "40M", NULL);
	/* A v4-mapped client is an IPv4 client. */
	assert_source(conf, "::ffff:10.1.2.3", NULL, "max-message-size", "30M", NULL);
	/* The named source overrides what the IP selects and keeps the rest. */
	assert_source(conf, "10.1.2.3", "submission", "max-message-size", "50M", "r.conf:20");
	assert_source(conf, "10.1.2.3", "submission", "allow-auth", "no", NULL);
	assert_source(conf, "10.1.2.3", "SUBMISSION", "require-auth", "yes", NULL);
	struct addr_ip ip;
	assert_true(addr_parse_ip("10.1.2.3", &ip, NULL));
	assert_null(conf_resolve_source(conf, &ip, "nope"));
	assert_null(conf_resolve_source(conf, &ip, "10.1.2.3"));
	conf_free(conf);
}

static void test_duplicate_sources_merge(void **state)
{
	(void)state;
	struct conf *conf = load("<source 10/8>\n    log-data yes\n</source>\n"
	                         "<source 10.0.0.0/8>\n    log-commands yes\n</source>\n");
	assert_int_equal(conf_block_count(conf, CONF_SOURCE), 1);
	assert_source(conf, "10.9.8.7", NULL, "log-data", "yes", NULL);
	assert_source(conf, "10.9.8.7", NULL, "log-commands", "yes", NULL);
	conf_free(conf);
}

/* ---- named blocks and global settings --------------------------------------------------------- */

static void test_global_and_vmta_inheritance(void **state)
{
	(void)state;
	struct conf *conf = load("host-name mx.example\npostmaster a@example\npostmaster b@example\n"
	                         "<virtual-mta v1>\n    smtp-source-host 192.0.2.1 out1.example\n</virtual-mta>\n");
	const struct conf_settings *g = conf_global(conf);
	const struct conf_setting *pm = conf_get_setting(g, "postmaster");
	assert_string_equal(pm->value.string, "a@example");
	assert_string_equal(pm->next->value.string, "b@example");
	assert_null(pm->next->next);
	assert_int_equal(conf_get_uint(g, "total-max-smtp-in"), 100);
	const struct conf_settings *v = conf_block_settings(conf_block_find(conf, CONF_VMTA, "v1"));
	assert_string_equal(conf_get_string(v, "host-name"), "mx.example");
	assert_int_equal(conf_get_setting(v, "host-name")->line, 1);
	conf_free(conf);
}

/* 0 asks for the automatic count, one process per CPU; a number is taken
 * as it is, up to 256. */
static void test_worker_processes(void **state)
{
	(void)state;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned n = cpus > 0 ? (unsigned)cpus : 1;
	if (n > 256)
		n = 256;
	struct conf *conf = load("smtpd-processes 0\n");
	assert_int_equal(conf_worker_processes(conf, "smtp-processes"), n);
	assert_int_equal(conf_worker_processes(conf, "smtpd-processes"), n);
	conf_free(conf);
	conf = load("smtpd-processes 3\nsmtp-processes 256\n");
	assert_int_equal(conf_worker_processes(conf, "smtpd-processes"), 3);
	assert_int_equal(conf_worker_processes(conf, "smtp-processes"), 256);
	conf_free(conf);
}

static void count_one(const char *name, const struct conf_setting *setting, void *arg)
{
	(void)setting;
	assert_true(conf_directive_known(name));
	assert_true(strcmp(name, "include") != 0);
	++*(size_t *)arg;
}

static void test_each_lists_the_scope(void **state)
{
	(void)state;
	struct conf *conf = load(design_conf);
	struct conf_settings *s = conf_resolve_domain(conf, "x.example", NULL);
	size_t n = 0;
	conf_settings_each(s, count_one, &n);
	assert_true(n > 100);
	conf_settings_free(s);
	conf_free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_design_partner_domain),
	    cmocka_unit_test(test_design_other_domain),
	    cmocka_unit_test(test_design_source),
	    cmocka_unit_test(test_precedence_does_not_depend_on_order),
	    cmocka_unit_test(test_address_literals),
	    cmocka_unit_test(test_vmta_and_pool_domains),
	    cmocka_unit_test(test_macros),
	    cmocka_unit_test(test_source_precedence),
	    cmocka_unit_test(test_duplicate_sources_merge),
	    cmocka_unit_test(test_global_and_vmta_inheritance),
	    cmocka_unit_test(test_each_lists_the_scope),
	    cmocka_unit_test(test_worker_processes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
