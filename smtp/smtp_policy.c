/* smtp_policy.c: reads a queue's resolved <domain> settings (and the
 * <virtual-mta> or global identity) once, when a job starts, into a
 * typed struct the delivery code uses, so that the directive names appear
 * in this one file. */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "mem.h"

static void load_tls(struct smtp_policy *p, const struct conf_settings *s)
{
	if (conf_get_bool(s, "require-starttls"))
		p->tls_level = SMTP_TLS_REQUIRED;
	else if (conf_get_bool(s, "use-starttls"))
		p->tls_level = SMTP_TLS_OPPORTUNISTIC;
	else
		p->tls_level = SMTP_TLS_NONE;
	tls_settings_init(&p->tls);
	p->tls.ciphers = conf_get_string(s, "smtp-tls-ciphers");
	p->tls.ciphersuites = conf_get_string(s, "smtp-tls-tlsv1.3-ciphersuites");
	p->tls.tls10 = conf_get_bool(s, "smtp-tls-allow-tlsv1");
	p->tls.tls11 = conf_get_bool(s, "smtp-tls-allow-tlsv1.1");
	p->tls.tls12 = conf_get_bool(s, "smtp-tls-allow-tlsv1.2");
	p->tls.tls13 = conf_get_bool(s, "smtp-tls-allow-tlsv1.3");
	const struct conf_value *cert = conf_get_value(s, "smtp-client-certificate");
	if (!cert->unset && cert->string && *cert->string) {
		p->tls.cert_file = cert->string;
		p->tls.key_password = cert->secret;
	}
	const char *ca = conf_get_string(s, "smtp-tls-ca-file");
	if (ca && *ca) {
		p->tls.ca_file = ca;
		p->have_ca = true;
	}
	p->reuse_tls_session = conf_get_bool(s, "reuse-ssl-session");
}

static void load_route(struct smtp_policy *p, const struct conf_settings *s)
{
	struct buf err = BUF_INIT;
	const struct conf_value *hosts = conf_get_value(s, "smtp-hosts");
	const char *route = conf_get_string(s, "route");
	bool ok = true;
	if (!hosts->unset && hosts->host_levels > 0) {
		ok = smtp_route_from_levels(hosts->hosts, hosts->host_levels, &p->route, &err);
		p->have_route = ok;
	} else if (route && *route) {
		ok = smtp_route_from_text(route, &p->route, &err);
		p->have_route = ok;
	}
	if (!ok)
		p->route_error = buf_detach(&err);
	buf_free(&err);
}

static void load_limits(struct smtp_policy *p, const struct conf_settings *s)
{
	p->connect_timeout = conf_get_interval(s, "connect-timeout");
	p->greeting_timeout = conf_get_interval(s, "smtp-greeting-timeout");
	p->data_send_timeout = conf_get_interval(s, "data-send-timeout");
	p->data_termination_timeout = conf_get_interval(s, "smtp-data-termination-timeout");
	p->max_msg_per_connection = conf_get_uint(s, "max-msg-per-connection");
	p->connection_idle_timeout = conf_get_interval(s, "connection-idle-timeout");
	p->max_rcpt_per_transaction = conf_get_uint(s, "max-rcpt-per-transaction");
	if (p->max_rcpt_per_transaction == 0)
		p->max_rcpt_per_transaction = 1000;
	p->default_port = (uint16_t)conf_get_uint(s, "default-smtp-port");
	p->ignore_pipelining = conf_get_bool(s, "ignore-pipelining");
	p->ignore_chunking = conf_get_bool(s, "ignore-chunking");
	p->ignore_8bitmime = conf_get_bool(s, "ignore-8bitmime");
	p->ignore_dsn = conf_get_bool(s, "ignore-dsn");
	p->bounce_upon_5xx_greeting = conf_get_bool(s, "bounce-upon-5xx-greeting");
	const struct conf_value *no_mx = conf_get_value(s, "bounce-upon-no-mx");
	/* "yes" bounces now; an interval means "after that long", which only
	 * qmgr can judge (it knows the message's age): until then, the
	 * domain's own addresses are tried. */
	p->bounce_upon_no_mx = no_mx->boolean && no_mx->seconds == 0;
	p->retry_after_dns_error = conf_get_interval(s, "retry-after-dns-error");
}

/* smtp-source-host lines rotate (PowerMTA's round robin). */
static const struct conf_setting *next_source_host(const struct conf_settings *identity)
{
	static unsigned rotation;
	const struct conf_setting *first = conf_get_setting(identity, "smtp-source-host");
	if (first == NULL || first->value.unset)
		return NULL;
	size_t count = 0;
	for (const struct conf_setting *s = first; s; s = s->next)
		count++;
	const struct conf_setting *pick = first;
	for (size_t i = rotation++ % count; i > 0; i--)
		pick = pick->next;
	return pick;
}

static void load_identity(struct smtp_policy *p, const struct conf *conf, const char *vmta)
{
	const struct conf_settings *identity = conf_global(conf);
	const struct conf_block *block = vmta ? conf_block_find(conf, CONF_VMTA, vmta) : NULL;
	if (block && conf_block_settings(block))
		identity = conf_block_settings(block);
	const struct conf_setting *source = next_source_host(identity);
	if (source) {
		p->have_source = true;
		p->source_ip = source->value.cidr.ip;
		p->helo_name = mem_strdup(source->value.string);
		return;
	}
	const struct conf_setting *host_name = conf_get_setting(identity, "host-name");
	if (host_name && !host_name->value.unset && host_name->value.string && *host_name->value.string) {
		p->helo_name = mem_strdup(host_name->value.string);
		return;
	}
	p->helo_name = fileio_system_host_name();
}

void smtp_policy_load(struct smtp_policy *policy, const struct conf *conf, const struct conf_settings *settings,
                      const char *vmta)
{
	memset(policy, 0, sizeof *policy);
	load_tls(policy, settings);
	load_route(policy, settings);
	load_limits(policy, settings);
	load_identity(policy, conf, vmta);
}

void smtp_policy_free(struct smtp_policy *policy)
{
	if (policy->have_route)
		smtp_route_free(&policy->route);
	free(policy->route_error);
	free(policy->helo_name);
	memset(policy, 0, sizeof *policy);
}
