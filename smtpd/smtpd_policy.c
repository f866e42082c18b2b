/* smtpd_policy.c: what the configuration says about a connection - the
 * global facts smtpd needs (host name, spool, session cap), the <source>
 * policy of a client, and the TLS context of a listener.  Policies are
 * copied into a small struct per session, so an idle session costs bytes,
 * not a resolved table of every directive. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ssl.h>

#include "conf.h"
#include "log.h"
#include "mem.h"
#include "smtpd.h"
#include "tls.h"

/* ---- the configuration ------------------------------------------------------------ */

struct smtpd_conf *smtpd_conf_ref(struct smtpd_conf *c)
{
	c->refs++;
	return c;
}

void smtpd_conf_unref(struct smtpd_conf *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	conf_free(c->conf);
	free(c->hostname);
	free(c->spool);
	free(c->qmgr_socket);
	free(c);
}

struct smtpd_conf *smtpd_conf_load(const char *path, struct buf *err)
{
	struct conf *conf = conf_load_checked(path, "; ", err);
	if (conf == NULL)
		return NULL;
	struct smtpd_conf *c = mem_zalloc(sizeof(*c));
	c->conf = conf;
	c->refs = 1;
	const struct conf_settings *g = conf_global(conf);
	c->hostname = conf_host_name(conf);
	c->spool = mem_strdup(conf_spool(conf));
	c->qmgr_socket = mem_asprintf("%s/private/qmgr", c->spool);
	c->max_sessions = conf_get_uint(g, "total-max-smtp-in");
	c->processes = conf_worker_processes(conf, "smtpd-processes");
	c->relay_debug = conf_get_bool(g, "relay-debug");
	return c;
}

/* ---- <source> policy ---------------------------------------------------------------- */

/* The name of the narrowest <source> range holding ip, for logs and the
 * Received header (conf merges the ranges but does not say which won). */
static const char *matched_source(const struct conf *conf, const struct addr_ip *ip)
{
	const char *best = NULL;
	unsigned best_prefix = 0;
	for (size_t i = 0; i < conf_block_count(conf, CONF_SOURCE); i++) {
		const char *name = conf_block_name(conf_block_at(conf, CONF_SOURCE, i));
		struct addr_cidr cidr;
		if (!addr_parse_cidr(name, &cidr, NULL) || !addr_cidr_contains(&cidr, ip))
			continue;
		if (best == NULL || cidr.prefix > best_prefix) {
			best = name;
			best_prefix = cidr.prefix;
		}
	}
	return best;
}

static int64_t positive_seconds(int64_t s)
{
	return s > 0 ? s : 600;
}

bool smtpd_policy_resolve(const struct smtpd_conf *c, const struct addr_ip *ip, const char *source_name,
                          struct smtpd_policy *out)
{
	struct conf_settings *s = conf_resolve_source(c->conf, ip, source_name);
	if (s == NULL)
		return false;
	memset(out, 0, sizeof(*out));
	const char *matched = source_name ? source_name : matched_source(c->conf, ip);
	out->source = mem_strdup(matched ? matched : "none");
	out->smtp_service = conf_get_bool(s, "smtp-service");
	out->allow_starttls = conf_get_bool(s, "allow-starttls");
	out->require_starttls_before_auth = conf_get_bool(s, "require-starttls-before-auth");
	out->allow_unencrypted_plain_auth = conf_get_bool(s, "allow-unencrypted-plain-auth");
	out->allow_auth = conf_get_bool(s, "allow-auth");
	out->require_auth = conf_get_bool(s, "require-auth");
	out->always_allow_relaying = conf_get_bool(s, "always-allow-relaying");
	out->require_client_certificate = conf_get_bool(s, "require-client-certificate");
	out->allow_chunking = conf_get_bool(s, "allow-chunking");
	out->allow_smtputf8 = conf_get_bool(s, "allow-smtputf8");
	out->add_received_header = conf_get_bool(s, "add-received-header");
	out->hide_message_source = conf_get_bool(s, "hide-message-source");
	out->add_message_id_header = conf_get_bool(s, "add-message-id-header");
	const char *date = conf_get_string(s, "add-date-header");
	out->add_date_header = date == NULL || strcasecmp(date, "no") == 0 ? SMTPD_DATE_NO
	                       : strcasecmp(date, "override") == 0         ? SMTPD_DATE_OVERRIDE
	                                                                   : SMTPD_DATE_YES;
	out->process_x_virtual_mta = conf_get_bool(s, "process-x-virtual-mta");
	out->retain_x_virtual_mta = conf_get_bool(s, "retain-x-virtual-mta");
	out->reject_invalid_vmta = conf_get_bool(s, "reject-invalid-virtual-mta");
	out->process_x_job = conf_get_bool(s, "process-x-job");
	out->retain_x_job = conf_get_bool(s, "retain-x-job");
	out->process_x_envid = conf_get_bool(s, "process-x-envid");
	out->log_connections = conf_get_bool(s, "log-connections");
	out->log_commands = conf_get_bool(s, "log-commands");
	out->log_tls = conf_get_bool(s, "log-tls");
	out->max_message_size = conf_get_uint(s, "max-message-size");
	if (out->max_message_size == 0)
		out->max_message_size = VALUE_UNLIMITED;
	out->max_rcpt = conf_get_uint(s, "max-rcpt-per-message");
	if (out->max_rcpt == 0 || out->max_rcpt > SMTPD_RCPT_HARD_MAX)
		out->max_rcpt = SMTPD_RCPT_HARD_MAX;
	out->max_hops = conf_get_uint(s, "max-message-hops");
	out->command_timeout = positive_seconds(conf_get_interval(s, "smtp-command-timeout"));
	out->data_timeout = positive_seconds(conf_get_interval(s, "smtp-data-timeout"));
	out->auth_failure_rate = conf_get_rate(s, "smtp-max-auth-failure-rate");
	out->default_vmta = conf_get_string(s, "default-virtual-mta");
	out->jobid_header = conf_get_string(s, "jobid-header");
	const struct conf_list *rm = conf_get_list(s, "remove-header");
	if (rm) {
		out->remove_headers = (const char *const *)rm->items;
		out->nremove_headers = rm->count;
	}
	conf_settings_free(s);
	return true;
}

void smtpd_policy_free(struct smtpd_policy *p)
{
	free(p->source);
	p->source = NULL;
}

/* ---- listener TLS ----------------------------------------------------------------- */

bool smtpd_listener_tls(struct smtpd_listener *l, const struct smtpd_conf *c, struct buf *err)
{
	const struct conf_block *b = conf_block_find(c->conf, CONF_LISTENER, l->name);
	if (b == NULL) {
		buf_printf(err, "no smtp-listener %s in the configuration", l->name);
		return false;
	}
	const struct conf_settings *s = conf_block_settings(b);
	l->immediate_tls = conf_get_bool(s, "immediate-tls");
	l->await_slot = conf_get_bool(s, "await-slot");
	const char *src = conf_get_string(s, "source");
	free(l->source_name);
	l->source_name = src ? mem_strdup(src) : NULL;
	const struct conf_value *cert = conf_get_value(s, "tls-certificate");
	if (cert == NULL || cert->unset || cert->string == NULL) {
		if (l->immediate_tls) {
			buf_printf(err, "smtp-listener %s uses implicit TLS but no certificate is configured", l->name);
			return false;
		}
		return true;
	}
	struct tls_settings ts;
	tls_settings_init(&ts);
	ts.cert_file = cert->string;
	ts.key_password = cert->secret;
	ts.ciphers = conf_get_string(s, "tls-ciphers");
	ts.ciphersuites = conf_get_string(s, "tls-tlsv1.3-ciphersuites");
	ts.tls10 = conf_get_bool(s, "tls-allow-tlsv1");
	ts.tls11 = conf_get_bool(s, "tls-allow-tlsv1.1");
	ts.tls12 = conf_get_bool(s, "tls-allow-tlsv1.2");
	ts.tls13 = conf_get_bool(s, "tls-allow-tlsv1.3");
	ts.ca_file = conf_get_string(s, "tls-ca-file");
	if (ts.ciphers == NULL)
		ts.ciphers = TLS_SETTINGS_DEFAULT_CIPHERS;
	if (ts.ciphersuites == NULL)
		ts.ciphersuites = TLS_SETTINGS_DEFAULT_CIPHERSUITES;
	SSL_CTX *ctx = tls_server_ctx_new(&ts, err);
	if (ctx == NULL) {
		buf_printf(err, " (smtp-listener %s)", l->name);
		return false;
	}
	if (l->ssl_ctx)
		SSL_CTX_free(l->ssl_ctx);
	l->ssl_ctx = ctx;
	return true;
}
