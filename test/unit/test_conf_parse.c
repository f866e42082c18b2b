/* test_conf_parse.c: unit tests of loading whole configurations: the
 * DESIGN.md configuration and the stock PowerMTA sample load clean, and
 * each kind of mistake gives its exact message at its exact line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf.h"
#include "testutil.h"
#include "mem.h"

/* ---- helpers ------------------------------------------------------------------ */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
	(void)state;
	strcpy(tmpdir, "/tmp/test_conf_parse.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int remove_tmpdir(void **state)
{
	(void)state;
	return nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to tmpdir/name (creating one level of directory) and
 * returns the path (to free). */
static char *write_file(const char *name, const char *text)
{
	char *path = mem_asprintf("%s/%s", tmpdir, name);
	char *slash = strrchr(path, '/');
	*slash = '\0';
	mkdir(path, 0700);
	*slash = '/';
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static struct conf *load(const char *text)
{
	return conf_load_buffer("test.conf", text, strlen(text), 0);
}

static void print_diags(const struct conf *conf)
{
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		struct buf line = BUF_INIT;
		conf_diag_format(conf_diag_at(conf, i), &line);
		print_message("  %s\n", buf_cstr(&line));
		buf_free(&line);
	}
}

static size_t count(const struct conf *conf, enum conf_severity severity)
{
	size_t n = 0;
	for (size_t i = 0; i < conf_diag_count(conf); i++)
		n += conf_diag_at(conf, i)->severity == severity;
	return n;
}

/* Asserts that the diagnostics hold "FILE:LINE: message" (as formatted). */
static void assert_diag(const struct conf *conf, const char *expected)
{
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		struct buf line = BUF_INIT;
		conf_diag_format(conf_diag_at(conf, i), &line);
		bool same = strcmp(buf_cstr(&line), expected) == 0;
		buf_free(&line);
		if (same)
			return;
	}
	print_diags(conf);
	fail_msg("missing diagnostic: %s", expected);
}

/* Loads text that must have exactly one error, the one given. */
static void assert_only_error(const char *text, const char *expected)
{
	struct conf *conf = load(text);
	if (count(conf, CONF_ERROR) != 1) {
		print_diags(conf);
		fail_msg("expected one error: %s", expected);
	}
	assert_diag(conf, expected);
	conf_free(conf);
}

static void assert_clean(const struct conf *conf)
{
	if (!conf_ok(conf)) {
		print_diags(conf);
		fail_msg("configuration has errors");
	}
}

/* ---- configurations that must load ------------------------------------------------- */

static void test_design_config(void **state)
{
	(void)state;
	struct conf *conf = load(design_conf);
	assert_clean(conf);
	/* Every directive there is recognised; those no daemon acts on yet
	 * are reported with their line (the list shrinks as daemons take
	 * directives over, so only warnings, never errors, are counted). */
	assert_int_equal(count(conf, CONF_ERROR), 0);
	for (size_t i = 0; i < conf_diag_count(conf); i++)
		assert_non_null(strstr(conf_diag_at(conf, i)->message, "is recognised, not yet supported"));

	/* The one-line listeners are listener blocks. */
	assert_int_equal(conf_block_count(conf, CONF_LISTENER), 2);
	const struct conf_block *smtps = conf_block_find(conf, CONF_LISTENER, "1.2.3.4:465");
	assert_non_null(smtps);
	assert_true(conf_get_bool(conf_block_settings(smtps), "immediate-tls"));
	assert_false(
	    conf_get_bool(conf_block_settings(conf_block_find(conf, CONF_LISTENER, "0/0:25")), "immediate-tls"));
	/* The listener's certificate and CA file are the global ones. */
	const struct conf_setting *cert = conf_get_setting(conf_block_settings(smtps), "tls-certificate");
	assert_string_equal(cert->value.string, "/etc/tern/smtp-cert.pem");
	assert_string_equal(cert->value.secret, "YourPasswordHere");
	assert_int_equal(cert->line, 24);
	assert_string_equal(conf_get_string(conf_block_settings(smtps), "tls-ca-file"), "/etc/tern/client-ca.pem");
	assert_string_equal(conf_get_string(conf_block_settings(smtps), "tls-ciphers"), "HIGH:MEDIUM:!ADH:@STRENGTH");

	const struct conf_block *acct = conf_block_find(conf, CONF_ACCT_FILE, "/var/log/tern/acct.csv");
	assert_non_null(acct);
	const struct conf_list *records = conf_get_list(conf_block_settings(acct), "records");
	assert_int_equal(records->count, 2);
	assert_string_equal(records->items[0], "d");
	assert_string_equal(records->items[1], "b");
	const struct conf_setting *fields = conf_get_setting(conf_block_settings(acct), "record-fields");
	assert_string_equal(fields->value.string, "d");
	assert_int_equal(fields->value.list.count, 3);
	assert_string_equal(fields->value.list.items[2], "dlvTlsCipher");
	assert_non_null(fields->next);
	assert_string_equal(fields->next->value.string, "b");
	assert_null(fields->next->next);
	conf_free(conf);
}

static void test_design_config_with_curly_quotes(void **state)
{
	(void)state;
	struct buf text = BUF_INIT;
	/* Replace each pair of straight quotes by “ and ”. */
	bool open = true;
	for (const char *p = design_conf; *p; p++) {
		if (*p == '"') {
			buf_puts(&text, open ? "\xe2\x80\x9c" : "\xe2\x80\x9d");
			open = !open;
		} else {
			buf_putc(&text, *p);
		}
	}
	struct conf *conf = load(buf_cstr(&text));
	assert_clean(conf);
	struct conf_settings *s = conf_resolve_domain(conf, "super-secure-server.com", NULL);
	const struct conf_value *v = conf_get_value(s, "smtp-client-certificate");
	assert_string_equal(v->secret, "key password");
	conf_settings_free(s);
	conf_free(conf);
	buf_free(&text);
}

/* The shape of the stock PowerMTA sample (reference section 1.9). */
static const char stock_conf[] = "#postmaster you@your.domain\n"
                                 "smtp-listener 0/0:25 # listens on all local IPs\n"
                                 "<source 127.0.0.1>\n"
                                 "    always-allow-relaying yes   # allow feeding from 127.0.0.1\n"
                                 "    process-x-virtual-mta yes   # allow selection of a virtual MTA\n"
                                 "    max-message-size unlimited\n"
                                 "    smtp-service yes            # allow SMTP service\n"
                                 "</source>\n"
                                 "<source 0/0>\n"
                                 "    log-connections no\n"
                                 "    log-commands no\n"
                                 "    log-data no\n"
                                 "</source>\n"
                                 "#<smtp-user API>\n"
                                 "#    password \"changeme\"\n"
                                 "#</smtp-user>\n"
                                 "<domain *>\n"
                                 "    max-smtp-out 20\n"
                                 "    bounce-after 4d12h\n"
                                 "    retry-after 10m\n"
                                 "</domain>\n"
                                 "<domain test.port25.com>\n"
                                 "    max-smtp-out 1\n"
                                 "    log-commands yes\n"
                                 "</domain>\n"
                                 "<domain discard.port25.com>\n"
                                 "    max-smtp-out 800\n"
                                 "    route [192.168.0.2]:2525\n"
                                 "</domain>\n"
                                 "http-mgmt-port 8080\n"
                                 "http-access 127.0.0.1 monitor\n"
                                 "http-access ::1 monitor\n"
                                 "sync-msg-create false\n"
                                 "sync-msg-update false\n"
                                 "run-as-root no\n"
                                 "log-file /var/log/pmta/log   # logrotate is used for rotation\n"
                                 "log-rotate 10 # number of files; 0 disables rotation\n"
                                 "<acct-file /var/log/pmta/acct.csv>\n"
                                 "    move-interval 5m\n"
                                 "    max-size 50M\n"
                                 "    delete-after 8d\n"
                                 "</acct-file>\n"
                                 "<acct-file /var/log/pmta/diag.csv>\n"
                                 "    move-interval 1d\n"
                                 "    delete-after never\n"
                                 "    records t\n"
                                 "</acct-file>\n"
                                 "spool /var/spool/pmta\n"
                                 "<bounce-category-patterns>\n"
                                 "    /spam/ spam-related\n"
                                 "    /junk mail/ spam-related\n"
                                 "    /^[45]\\.1\\.1/ bad-mailbox\n"
                                 "    // other\n"
                                 "</bounce-category-patterns>\n";

static void test_stock_sample(void **state)
{
	(void)state;
	struct conf *conf = load(stock_conf);
	assert_clean(conf);
	const struct conf_settings *g = conf_global(conf);
	assert_int_equal(conf_get_uint(g, "http-mgmt-port"), 8080);
	assert_false(conf_get_bool(g, "sync-msg-create"));
	assert_int_equal(conf_get_uint(g, "log-rotate"), 10);
	const struct conf_setting *access = conf_get_setting(g, "http-access");
	assert_non_null(access->next);
	assert_int_equal(access->next->value.cidr.ip.family, AF_INET6);

	const struct conf_block *diag = conf_block_find(conf, CONF_ACCT_FILE, "/var/log/pmta/diag.csv");
	assert_int_equal(conf_get_interval(conf_block_settings(diag), "delete-after"), VALUE_NEVER);
	const struct conf_block *acct = conf_block_find(conf, CONF_ACCT_FILE, "/var/log/pmta/acct.csv");
	assert_int_equal(conf_get_uint(conf_block_settings(acct), "max-size"), 50u << 20);
	assert_int_equal(conf_get_interval(conf_block_settings(acct), "move-interval"), 300);
	assert_int_equal(conf_get_list(conf_block_settings(acct), "records")->count, 2); /* default d,b */

	const struct conf_block *cats = conf_block_at(conf, CONF_BOUNCE_CATEGORIES, 0);
	assert_int_equal(conf_block_setting_count(cats), 4);
	const struct conf_setting *junk = conf_block_setting_at(cats, 1);
	assert_string_equal(junk->value.regex, "junk mail");
	assert_string_equal(junk->value.string, "spam-related");
	assert_string_equal(conf_block_setting_at(cats, 2)->value.regex, "^[45]\\.1\\.1");
	assert_string_equal(conf_block_setting_at(cats, 3)->value.regex, "");
	conf_free(conf);
}

static void test_listener_forms_are_equivalent(void **state)
{
	(void)state;
	struct conf *a = load("<source submit>\n</source>\n"
	                      "smtp-listener 10.0.0.1:465 tls=yes source=submit\n");
	struct conf *b = load("<source submit>\n</source>\n"
	                      "<smtp-listener 10.0.0.1:465>\n    immediate-tls yes\n    source submit\n"
	                      "</smtp-listener>\n");
	assert_clean(a);
	assert_clean(b);
	const struct conf_settings *la = conf_block_settings(conf_block_find(a, CONF_LISTENER, "10.0.0.1:465"));
	const struct conf_settings *lb = conf_block_settings(conf_block_find(b, CONF_LISTENER, "10.0.0.1:465"));
	assert_true(conf_get_bool(la, "immediate-tls"));
	assert_true(conf_get_bool(lb, "immediate-tls"));
	assert_string_equal(conf_get_string(la, "source"), "submit");
	assert_string_equal(conf_get_string(lb, "source"), "submit");
	assert_int_equal(conf_listener_endpoint(conf_block_find(a, CONF_LISTENER, "10.0.0.1:465"))->port, 465);
	conf_free(a);
	conf_free(b);

	/* tls=no is accepted and means no implicit TLS. */
	a = load("smtp-listener 0/0:25 tls=no\n");
	assert_clean(a);
	assert_false(conf_get_bool(conf_block_settings(conf_block_at(a, CONF_LISTENER, 0)), "immediate-tls"));
	conf_free(a);
}

static void test_implicit_listener(void **state)
{
	(void)state;
	struct conf *conf = load("host-name mx.example\n");
	assert_clean(conf);
	assert_int_equal(conf_block_count(conf, CONF_LISTENER), 1);
	const struct conf_block *l = conf_block_at(conf, CONF_LISTENER, 0);
	assert_int_equal(conf_listener_endpoint(l)->port, 25);
	assert_null(conf_block_file(l));
	conf_free(conf);
}

static void test_smtp_user_and_new_directives(void **state)
{
	(void)state;
	struct conf *conf = load("<source {auth}>\n    require-client-certificate yes\n</source>\n"
	                         "<smtp-user api>\n    password \"s3cret\"\n"
	                         "    authentication-method certificate\n"
	                         "    tls-certificate /etc/tern/api-client.pem\n    source {auth}\n</smtp-user>\n");
	assert_clean(conf);
	const struct conf_settings *u = conf_block_settings(conf_block_find(conf, CONF_SMTP_USER, "api"));
	assert_string_equal(conf_get_string(u, "password"), "s3cret");
	assert_string_equal(conf_get_string(u, "authentication-method"), "certificate");
	assert_int_equal(conf_get_value(u, "authentication-method")->word, 2);
	struct buf out = BUF_INIT;
	conf_setting_format_value(conf_get_setting(u, "password"), &out);
	assert_string_equal(buf_cstr(&out), "\"********\"");
	buf_free(&out);
	conf_free(conf);
}

static void test_value_types(void **state)
{
	(void)state;
	struct conf *conf = load("<domain *>\n"
	                         "    retry-after 10m, 1h,4h\n"
	                         "    max-msg-rate 83/10m\n"
	                         "    max-data-volume-rate 10g/2h\n"
	                         "    bounce-upon-no-mx 1h\n"
	                         "    smtp-hosts a.example, b.example; [10.1.1.1]:2525\n"
	                         "    source-ip-max-smtp-out 10/8 5\n"
	                         "    dkim-sign true\n"
	                         "    backoff-notify \"\"\n"
	                         "</domain>\n"
	                         "<virtual-mta v1>\n    smtp-source-host 192.0.2.1 mta1.example\n</virtual-mta>\n");
	assert_clean(conf);
	struct conf_settings *s = conf_resolve_domain(conf, "x.example", NULL);
	const struct conf_value *retry = conf_get_value(s, "retry-after");
	assert_int_equal(retry->intervals->count, 3);
	assert_int_equal(retry->intervals->seconds[2], 4 * 3600);
	struct value_rate r = conf_get_rate(s, "max-msg-rate");
	assert_int_equal(r.count, 83);
	assert_int_equal(r.per_seconds, 600);
	assert_int_equal(conf_get_rate(s, "max-data-volume-rate").count, 10ull << 30);
	assert_true(conf_get_bool(s, "bounce-upon-no-mx"));
	assert_int_equal(conf_get_interval(s, "bounce-upon-no-mx"), 3600);
	const struct conf_value *hosts = conf_get_value(s, "smtp-hosts");
	assert_int_equal(hosts->host_levels, 2);
	assert_int_equal(hosts->hosts[0].count, 2);
	assert_string_equal(hosts->hosts[1].items[0], "[10.1.1.1]:2525");
	assert_int_equal(conf_get_value(s, "source-ip-max-smtp-out")->number, 5);
	assert_string_equal(conf_get_string(s, "dkim-sign"), "yes");
	assert_true(conf_get_value(s, "backoff-notify")->unset);
	conf_settings_free(s);
	const struct conf_setting *host =
	    conf_get_setting(conf_block_settings(conf_block_find(conf, CONF_VMTA, "v1")), "smtp-source-host");
	assert_string_equal(host->value.string, "mta1.example");
	conf_free(conf);
}

static void test_smtp_pattern_list(void **state)
{
	(void)state;
	struct conf *conf = load("<smtp-pattern-list blocks>\n"
	                         "    reply /generic block list/ mode=backoff, backoff-to-normal-after=1h\n"
	                         "    reply /^421 / disable-source-ip,reenable-after=30m\n"
	                         "</smtp-pattern-list>\n"
	                         "<pattern-list select>\n"
	                         "    mail-from /@news\\./ virtual-mta=v1\n"
	                         "    header X-Job /^bulk/ virtual-mta=v1\n"
	                         "    * virtual-mta=v1\n"
	                         "</pattern-list>\n"
	                         "<virtual-mta v1>\n</virtual-mta>\n"
	                         "<domain *>\n    smtp-pattern-list blocks\n</domain>\n"
	                         "<source 0/0>\n    pattern-list select\n</source>\n");
	assert_clean(conf);
	const struct conf_block *b = conf_block_find(conf, CONF_SMTP_PATTERN_LIST, "blocks");
	const struct conf_setting *rule = conf_block_setting_at(b, 0);
	assert_string_equal(rule->value.regex, "generic block list");
	assert_int_equal(rule->value.list.count, 2);
	const struct conf_block *pl = conf_block_find(conf, CONF_PATTERN_LIST, "select");
	assert_int_equal(conf_block_setting_count(pl), 3);
	assert_string_equal(conf_block_setting_at(pl, 1)->value.string, "X-Job");
	conf_free(conf);
}

static void test_duplicate_domain_blocks_merge(void **state)
{
	(void)state;
	struct conf *conf = load("<domain example.com>\n    max-smtp-out 3\n    log-commands yes\n</domain>\n"
	                         "<domain EXAMPLE.com.>\n    max-smtp-out 4\n</domain>\n");
	assert_clean(conf);
	assert_int_equal(conf_block_count(conf, CONF_DOMAIN), 1);
	struct conf_settings *s = conf_resolve_domain(conf, "example.com", NULL);
	assert_int_equal(conf_get_uint(s, "max-smtp-out"), 4);
	assert_true(conf_get_bool(s, "log-commands"));
	conf_settings_free(s);
	conf_free(conf);
}

/* ---- errors ------------------------------------------------------------------------- */

static void test_unknown_directive(void **state)
{
	(void)state;
	assert_only_error("<domain *>\n    use-startls yes\n</domain>\n",
	                  "test.conf:2: unknown directive \"use-startls\"; did you mean \"use-starttls\"?");
	assert_only_error("frobnicate-everything yes\n", "test.conf:1: unknown directive \"frobnicate-everything\"");
	assert_only_error("<virtual-mt x>\n</virtual-mt>\n", "test.conf:1: unknown block <virtual-mt>; did you mean "
	                                                     "<virtual-mta>?");
}

static void test_name_server_takes_an_address_with_or_without_port(void **state)
{
	(void)state;
	struct conf *conf = load("name-server 192.0.2.53\nname-server 127.0.0.1:5353\n"
	                         "<dns>\n    name-server [::1]:53\n</dns>\n");
	print_diags(conf);
	assert_int_equal(count(conf, CONF_ERROR), 0);
	const struct conf_setting *s = conf_get_setting(conf_global(conf), "name-server");
	assert_non_null(s);
	assert_string_equal(s->value.string, "192.0.2.53");
	assert_non_null(s->next);
	assert_string_equal(s->next->value.string, "127.0.0.1:5353");
	conf_free(conf);
}

static void test_bad_values(void **state)
{
	(void)state;
	assert_only_error("<domain *>\n    max-smtp-out lots\n</domain>\n",
	                  "test.conf:2: \"max-smtp-out\" expects a whole number, got \"lots\"");
	assert_only_error("<domain *>\n    use-starttls maybe\n</domain>\n",
	                  "test.conf:2: \"use-starttls\" expects yes or no, got \"maybe\"");
	assert_only_error("<source 0/0>\n    max-message-size 10X\n</source>\n",
	                  "test.conf:2: \"max-message-size\" expects a size such as 50M or unlimited, got \"10X\"");
	assert_only_error("<domain *>\n    bounce-after 4x\n</domain>\n",
	                  "test.conf:2: \"bounce-after\" expects a time interval such as 10m, got \"4x\" (unknown time "
	                  "unit (use w, d, h, m or s))");
	assert_only_error("<domain *>\n    bounce-after never\n</domain>\n",
	                  "test.conf:2: \"bounce-after\" expects a time interval such as 10m, got \"never\" (\"never\" "
	                  "is not allowed here)");
	assert_only_error("name-server ns1.example.net\n",
	                  "test.conf:1: \"name-server\" expects IP or IP:PORT, got \"ns1.example.net\"");
	assert_only_error("name-server 192.0.2.0/24\n",
	                  "test.conf:1: \"name-server\" expects IP or IP:PORT, got \"192.0.2.0/24\"");
	assert_only_error("<domain *>\n    max-msg-rate 100/fortnight\n</domain>\n",
	                  "test.conf:2: \"max-msg-rate\" expects a rate such as 100/h, got \"100/fortnight\"");
	assert_only_error("<domain *>\n    queue-priority 200\n</domain>\n",
	                  "test.conf:2: \"queue-priority\" expects a whole number from 0 to 100, got \"200\"");
	assert_only_error("<domain *>\n    type carrier-pigeon\n</domain>\n",
	                  "test.conf:2: \"type\" expects one of smtp, pipe, file, discard, http-delivery, got "
	                  "\"carrier-pigeon\"");
	assert_only_error("<domain *>\n    use-starttls \"\"\n</domain>\n",
	                  "test.conf:2: \"use-starttls\" cannot be empty");
	assert_only_error("smtp-listener 1.2.3.4:465 tls=perhaps\n",
	                  "test.conf:1: \"smtp-listener\" expects tls=yes or tls=no, got \"tls=perhaps\"");
	assert_only_error("smtp-listener 1.2.3.4:465 ssl=yes\n",
	                  "test.conf:1: \"smtp-listener\": unknown or repeated option \"ssl=yes\" (use tls=yes or "
	                  "source=NAME)");
	assert_only_error("<smtp-pattern-list p>\n    reply /x/ mode=backoff,mode=normal\n</smtp-pattern-list>\n",
	                  "test.conf:2: \"reply\": mode=backoff and mode=normal exclude each other");
}

static void test_argument_counts(void **state)
{
	(void)state;
	assert_only_error("<domain *>\n    max-smtp-out\n</domain>\n", "test.conf:2: \"max-smtp-out\" needs a value");
	assert_only_error("<domain *>\n    max-smtp-out 1 2\n</domain>\n",
	                  "test.conf:2: \"max-smtp-out\" takes one value, got 2 (quote a value that contains blanks)");
	assert_only_error("smtp-source-host 1.2.3.4\n", "test.conf:1: \"smtp-source-host\" needs 2 values, got 1");
	assert_only_error("<domain *>\n    smtp-client-certificate a b c\n</domain>\n",
	                  "test.conf:2: \"smtp-client-certificate\" takes at most 2 values, got 3");
}

static void test_wrong_block(void **state)
{
	(void)state;
	assert_only_error("<source 0/0>\n    use-starttls yes\n</source>\n",
	                  "test.conf:2: \"use-starttls\" is not allowed in <source>; it belongs in <domain>");
	assert_only_error("max-smtp-out 5\n", "test.conf:1: \"max-smtp-out\" is not allowed at global level; it "
	                                      "belongs in <domain>, <virtual-mta> or <virtual-mta-pool>");
	assert_only_error("<domain *>\n    host-name x\n</domain>\n",
	                  "test.conf:2: \"host-name\" is not allowed in <domain>; it belongs at global level or in "
	                  "<virtual-mta>");
	assert_only_error("<source 0/0>\n    <domain *>\n    </domain>\n</source>\n",
	                  "test.conf:2: <domain> is not allowed in <source>");
}

static void test_block_structure(void **state)
{
	(void)state;
	assert_only_error("<domain *>\n    max-smtp-out 1\n", "test.conf:1: <domain *> is not closed");
	assert_only_error("</domain>\n", "test.conf:1: </domain> without an opening <domain>");
	assert_only_error("<domain *>\n</source>\n</domain>\n", "test.conf:2: </source> without an opening <source>");
	assert_only_error("<virtual-mta v>\n<domain *>\n</virtual-mta>\n",
	                  "test.conf:3: </virtual-mta> does not match <domain *> opened at test.conf:2");
	assert_only_error("<domain>\n</domain>\n", "test.conf:1: <domain> needs one argument, as in <domain NAME>");
	assert_only_error("<acct-file /a>\n</acct-file>\n<acct-file /a>\n</acct-file>\n",
	                  "test.conf:3: <acct-file /a> is already defined at test.conf:1");
	assert_only_error("<source 10.1.2.3/8>\n</source>\n",
	                  "test.conf:1: bad address in <source 10.1.2.3/8>: address has bits set beyond the network "
	                  "mask");
	assert_only_error("<acct-file /a>\n    records d\n    records b\n</acct-file>\n",
	                  "test.conf:3: \"records\" may appear only once in <acct-file> (first at test.conf:2)");
}

static void test_record_fields_errors(void **state)
{
	(void)state;
	assert_only_error("<acct-file /a>\n    record-fields d *, dlvTlsProtocl\n</acct-file>\n",
	                  "test.conf:2: \"record-fields\": unknown field \"dlvTlsProtocl\"; did you mean "
	                  "\"dlvTlsProtocol\"?");
	assert_only_error(
	    "<acct-file /a>\n    record-fields x *\n</acct-file>\n",
	    "test.conf:2: \"record-fields\": unknown record type \"x\" (known: d, b, t, tq, r, f, rb, rs)");
	assert_only_error("<acct-file /a>\n    records d, bounce, delivery\n</acct-file>\n",
	                  "test.conf:2: \"records\": record type \"d\" is listed twice");
	struct conf *conf = load("<acct-file /a>\n    records delivery, rb\n"
	                         "    record-fields delivery jobId,dsnDiag,*,!rcpt,header_X-Job\n</acct-file>\n");
	assert_clean(conf);
	conf_free(conf);
}

static void test_garbage(void **state)
{
	(void)state;
	static const char text[] = "host-name a\n\x01\x02\x03\nhost-name \xff\xfe\nx\0y\n<domain *>\n</domain>\n";
	struct conf *conf = conf_load_buffer("test.conf", text, sizeof text - 1, 0);
	assert_int_equal(count(conf, CONF_ERROR), 3);
	assert_diag(conf, "test.conf:2: control character 0x01 in line");
	assert_diag(conf, "test.conf:3: invalid UTF-8 in line");
	assert_diag(conf, "test.conf:4: NUL byte in line");
	conf_free(conf);

	struct buf big = BUF_INIT;
	buf_puts(&big, "host-name ");
	for (int i = 0; i < 9000; i++)
		buf_putc(&big, 'a');
	buf_putc(&big, '\n');
	conf = load(buf_cstr(&big));
	assert_diag(conf, "test.conf:1: line is longer than 8192 bytes");
	conf_free(conf);
	buf_free(&big);
}

static void test_all_errors_are_collected_and_bounded(void **state)
{
	(void)state;
	struct conf *conf = load("max-smtp-out 5\n<domain *>\n    max-smtp-out lots\n    retry-after 10x\n"
	                         "</domain>\n<domain x.example>\n");
	assert_int_equal(count(conf, CONF_ERROR), 4);
	conf_free(conf);

	struct buf many = BUF_INIT;
	for (int i = 0; i < 500; i++)
		buf_puts(&many, "nonsense\n");
	conf = load(buf_cstr(&many));
	assert_int_equal(count(conf, CONF_ERROR), 101);
	assert_diag(conf, "test.conf:100: too many errors (100), stopping here");
	conf_free(conf);
	buf_free(&many);
}

static void test_undefined_references(void **state)
{
	(void)state;
	assert_only_error("smtp-listener 0/0:587 source=submission\n",
	                  "test.conf:1: no <source submission> is defined");
	assert_only_error("<virtual-mta-pool p>\n    virtual-mta nope\n</virtual-mta-pool>\n",
	                  "test.conf:2: no <virtual-mta nope> is defined");
	assert_only_error("<domain *>\n    smtp-pattern-list nope\n</domain>\n",
	                  "test.conf:2: no <smtp-pattern-list nope> is defined");
}

static void test_macros(void **state)
{
	(void)state;
	assert_only_error("domain-macro a x, $b\ndomain-macro b y.$a\n<domain m.$a>\n</domain>\n",
	                  "test.conf:3: domain-macro loop: $a -> $b -> $a");
	assert_only_error("<domain yahoo.$nothing>\n</domain>\n", "test.conf:1: unknown domain-macro \"$nothing\"");
	assert_only_error("domain-macro a com\ndomain-macro a de\n",
	                  "test.conf:2: domain-macro \"a\" is already defined at test.conf:1");
	struct conf *conf = load("domain-macro tld com, de\n<domain yahoo.$tld>\n    max-smtp-out 2\n</domain>\n");
	assert_clean(conf);
	conf_free(conf);
}

static void test_opaque_blocks(void **state)
{
	(void)state;
	struct conf *conf = load("<bounce-processor>\n    <address-list>\n        domain bounces.example\n"
	                         "    </address-list>\n    deliver-unmatched-email no\n</bounce-processor>\n");
	assert_clean(conf);
	assert_diag(conf, "test.conf:1: warning: <bounce-processor> is recognised, not yet supported; its contents "
	                  "are not checked");
	conf_free(conf);
}

static void test_delivery_types(void **state)
{
	(void)state;
	struct conf *conf = load("<domain localhost>\n    type file\n    file-format append-mbox\n"
	                         "    file-destination /var/mail/$user\n</domain>\n");
	assert_clean(conf);
	assert_int_equal(conf_diag_count(conf), 0);
	conf_free(conf);
	conf = load("<domain a.example>\n    type pipe\n</domain>\n");
	assert_clean(conf);
	assert_diag(conf, "test.conf:2: warning: \"type pipe\" is recognised, not yet supported: its mail goes by smtp");
	conf_free(conf);
}

/* ---- includes ------------------------------------------------------------------------- */

static void test_include_glob_relative(void **state)
{
	(void)state;
	free(write_file("conf.d/10-domains.conf", "<domain *>\n    max-smtp-out 7\n</domain>\n"));
	free(write_file("conf.d/20-more.conf", "<domain gmail.com>\n    max-smtp-out 9\n</domain>\n"));
	free(write_file("src.conf", "    log-commands yes\n"));
	char *main_path = write_file("main.conf", "include conf.d/*.conf\n<source 0/0>\n    include src.conf\n"
	                                          "</source>\ninclude empty.d/*.conf\n");
	struct conf *conf = conf_load(main_path);
	assert_clean(conf);
	struct buf expected = BUF_INIT;
	buf_printf(&expected, "%s:5: warning: include \"empty.d/*.conf\" matches no file", main_path);
	assert_diag(conf, buf_cstr(&expected));
	struct conf_settings *s = conf_resolve_domain(conf, "gmail.com", NULL);
	const struct conf_setting *out = conf_get_setting(s, "max-smtp-out");
	assert_int_equal(out->value.number, 9);
	assert_non_null(strstr(out->file, "/conf.d/20-more.conf"));
	conf_settings_free(s);
	struct addr_ip ip;
	assert_true(addr_parse_ip("192.0.2.1", &ip, NULL));
	s = conf_resolve_source(conf, &ip, NULL);
	assert_true(conf_get_bool(s, "log-commands"));
	conf_settings_free(s);
	conf_free(conf);
	buf_free(&expected);
	free(main_path);
}

static void test_include_errors(void **state)
{
	(void)state;
	free(write_file("a.conf", "include b.conf\n"));
	free(write_file("b.conf", "\ninclude a.conf\n"));
	char *a = mem_asprintf("%s/a.conf", tmpdir);
	struct conf *conf = conf_load(a);
	struct buf expected = BUF_INIT;
	buf_printf(&expected, "%s/b.conf:2: include cycle: %s/a.conf -> %s/b.conf -> %s/a.conf", tmpdir, tmpdir, tmpdir,
	           tmpdir);
	assert_diag(conf, buf_cstr(&expected));
	conf_free(conf);

	char *c = write_file("c.conf", "include missing.conf\n<acct-file /x>\n    include a.conf\n</acct-file>\n"
	                               "<domain *>\n");
	free(write_file("d.conf", "</domain>\n"));
	conf = conf_load(c);
	buf_reset(&expected);
	buf_printf(&expected, "%s:1: cannot read \"%s/missing.conf\": No such file or directory", c, tmpdir);
	assert_diag(conf, buf_cstr(&expected));
	buf_reset(&expected);
	buf_printf(&expected,
	           "%s:3: \"include\" is not allowed in <acct-file>; it belongs at global level or in "
	           "<source>, <domain>, <virtual-mta> or <smtp-pattern-list>",
	           c);
	assert_diag(conf, buf_cstr(&expected));
	conf_free(conf);

	char *missing = mem_asprintf("%s/nope.conf", tmpdir);
	conf = conf_load(missing);
	assert_int_equal(conf_diag_count(conf), 1);
	buf_reset(&expected);
	buf_printf(&expected, "%s: cannot read: No such file or directory", missing);
	assert_diag(conf, buf_cstr(&expected));
	conf_free(conf);

	conf = conf_load_buffer("x.conf", "include /etc/passwd\n", 20, CONF_NO_INCLUDE);
	assert_diag(conf, "x.conf:1: include is disabled here");
	conf_free(conf);
	free(missing);
	free(c);
	free(a);
	buf_free(&expected);
}

static void test_blocks_must_close_in_their_file(void **state)
{
	(void)state;
	free(write_file("open.conf", "<domain *>\n"));
	char *m = write_file("m.conf", "include open.conf\n</domain>\n");
	struct conf *conf = conf_load(m);
	struct buf expected = BUF_INIT;
	buf_printf(&expected, "%s/open.conf:1: <domain *> is not closed", tmpdir);
	assert_diag(conf, buf_cstr(&expected));
	buf_reset(&expected);
	buf_printf(&expected, "%s:2: </domain> without an opening <domain>", m);
	assert_diag(conf, buf_cstr(&expected));
	conf_free(conf);
	buf_free(&expected);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_design_config),
	    cmocka_unit_test(test_design_config_with_curly_quotes),
	    cmocka_unit_test(test_stock_sample),
	    cmocka_unit_test(test_listener_forms_are_equivalent),
	    cmocka_unit_test(test_implicit_listener),
	    cmocka_unit_test(test_smtp_user_and_new_directives),
	    cmocka_unit_test(test_value_types),
	    cmocka_unit_test(test_smtp_pattern_list),
	    cmocka_unit_test(test_duplicate_domain_blocks_merge),
	    cmocka_unit_test(test_unknown_directive),
	    cmocka_unit_test(test_bad_values),
	    cmocka_unit_test(test_argument_counts),
	    cmocka_unit_test(test_wrong_block),
	    cmocka_unit_test(test_block_structure),
	    cmocka_unit_test(test_record_fields_errors),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_all_errors_are_collected_and_bounded),
	    cmocka_unit_test(test_undefined_references),
	    cmocka_unit_test(test_macros),
	    cmocka_unit_test(test_opaque_blocks),
	    cmocka_unit_test(test_delivery_types),
	    cmocka_unit_test(test_include_glob_relative),
	    cmocka_unit_test(test_include_errors),
    cmocka_unit_test(test_name_server_takes_an_address_with_or_without_port),
	    cmocka_unit_test(test_blocks_must_close_in_their_file),
	};
	return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
