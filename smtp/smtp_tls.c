/* smtp_tls.c: the TLS state an smtp process keeps between connections:
 * client contexts (one per distinct set of TLS settings, built once, since
 * loading a key is slow and needs its password), the hosts whose
 * opportunistic handshake failed recently, and saved sessions for
 * reuse-ssl-session. */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "mem.h"

/* How long a failed opportunistic handshake sends a host's mail in clear:
 * long enough that a queue does not pay for a failing handshake on every
 * connection, short enough that a repaired server gets TLS again soon. */
#define TLS_FAILURE_MEMORY_SECONDS 3600
/* Bounds on what is remembered per process. */
#define TLS_FAILURES_MAX 1024
#define TLS_SESSIONS_MAX 1024

struct tls_ctx_entry {
	char *key;
	SSL_CTX *ctx;
	struct tls_ctx_entry *next;
};

struct tls_host_entry {
	struct addr_ip ip;
	uint16_t port;
	time_t until;         /* failures */
	SSL_SESSION *session; /* sessions */
};

static struct tls_ctx_entry *contexts;
static struct tls_host_entry failures[TLS_FAILURES_MAX];
static size_t nfailures;
static struct tls_host_entry sessions[TLS_SESSIONS_MAX];
static size_t nsessions;

/* Everything that makes two contexts differ, as one string. */
static char *context_key(const struct tls_settings *t)
{
	return mem_asprintf("%s|%s|%s|%s|%s|%d%d%d%d", t->cert_file ? t->cert_file : "",
	                    t->key_password ? t->key_password : "", t->ciphers ? t->ciphers : "",
	                    t->ciphersuites ? t->ciphersuites : "", t->ca_file ? t->ca_file : "", t->tls10, t->tls11,
	                    t->tls12, t->tls13);
}

SSL_CTX *smtp_tls_context(const struct smtp_policy *policy, struct buf *err)
{
	char *key = context_key(&policy->tls);
	for (struct tls_ctx_entry *e = contexts; e; e = e->next) {
		if (strcmp(e->key, key) == 0) {
			mem_free_secret(key);
			return e->ctx;
		}
	}
	SSL_CTX *ctx = tls_client_ctx_new(&policy->tls, err);
	if (ctx == NULL) {
		mem_free_secret(key);
		return NULL;
	}
	/* Sessions are handed out by us (reuse-ssl-session), not by an
	 * internal cache that would grow for every server ever seen. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	struct tls_ctx_entry *e = mem_zalloc(sizeof *e);
	e->key = key;
	e->ctx = ctx;
	e->next = contexts;
	contexts = e;
	return ctx;
}

/* A domain name that the <domain> pattern matches, to resolve its
 * settings; NULL for patterns we cannot stand in for (macros). */
static char *example_domain(const char *pattern)
{
	if (strchr(pattern, '$'))
		return NULL;
	if (strcmp(pattern, "*") == 0)
		return mem_strdup("tern.invalid");
	if (strncmp(pattern, "[*.]", 4) == 0)
		return mem_strdup(pattern + 4);
	if (strncmp(pattern, "*.", 2) == 0)
		return mem_asprintf("tern-preload.%s", pattern + 2);
	if (pattern[0] == '[') {
		const char *slash = strchr(pattern, '/');
		if (slash)
			return mem_asprintf("%.*s]", (int)(slash - pattern), pattern);
	}
	return mem_strdup(pattern);
}

static void preload_domain(const struct conf *conf, const char *pattern, const char *vmta)
{
	char *domain = example_domain(pattern);
	if (domain == NULL)
		return;
	struct conf_settings *s = conf_resolve_domain(conf, domain, vmta);
	if (s) {
		struct smtp_policy policy;
		smtp_policy_load(&policy, conf, s, vmta);
		struct buf err = BUF_INIT;
		if (policy.tls_level != SMTP_TLS_NONE && smtp_tls_context(&policy, &err) == NULL)
			log_warning("TLS settings for domain %s: %s", domain, buf_cstr(&err));
		buf_free(&err);
		smtp_policy_free(&policy);
		conf_settings_free(s);
	}
	free(domain);
}

void smtp_tls_preload(const struct conf *conf)
{
	preload_domain(conf, "*", NULL);
	for (size_t i = 0; i < conf_block_count(conf, CONF_DOMAIN); i++)
		preload_domain(conf, conf_block_name(conf_block_at(conf, CONF_DOMAIN, i)), NULL);
	for (size_t v = 0; v < conf_block_count(conf, CONF_VMTA); v++) {
		const char *vmta = conf_block_name(conf_block_at(conf, CONF_VMTA, v));
		preload_domain(conf, "*", vmta);
		for (size_t i = 0; i < conf_block_count(conf, CONF_DOMAIN); i++)
			preload_domain(conf, conf_block_name(conf_block_at(conf, CONF_DOMAIN, i)), vmta);
	}
}

void smtp_tls_shutdown(void)
{
	while (contexts) {
		struct tls_ctx_entry *e = contexts;
		contexts = e->next;
		SSL_CTX_free(e->ctx);
		mem_free_secret(e->key);
		free(e);
	}
	for (size_t i = 0; i < nsessions; i++)
		SSL_SESSION_free(sessions[i].session);
	nsessions = 0;
	nfailures = 0;
}

/* ---- per host -------------------------------------------------------------------- */

static struct tls_host_entry *find_host(struct tls_host_entry *table, size_t count, const struct smtp_target *t)
{
	for (size_t i = 0; i < count; i++)
		if (table[i].port == t->port && addr_ip_equal(&table[i].ip, &t->ip))
			return &table[i];
	return NULL;
}

void smtp_tls_note_failure(const struct smtp_target *target)
{
	struct tls_host_entry *e = find_host(failures, nfailures, target);
	if (e == NULL) {
		/* Full: the oldest entry goes (entries are appended in time order). */
		if (nfailures == TLS_FAILURES_MAX)
			memmove(failures, failures + 1, --nfailures * sizeof failures[0]);
		e = &failures[nfailures++];
		e->ip = target->ip;
		e->port = target->port;
	}
	e->until = time(NULL) + TLS_FAILURE_MEMORY_SECONDS;
}

bool smtp_tls_recently_failed(const struct smtp_target *target)
{
	struct tls_host_entry *e = find_host(failures, nfailures, target);
	return e && e->until > time(NULL);
}

SSL_SESSION *smtp_tls_session_get(const struct smtp_target *target)
{
	struct tls_host_entry *e = find_host(sessions, nsessions, target);
	return e ? e->session : NULL;
}

void smtp_tls_session_put(const struct smtp_target *target, SSL_SESSION *session)
{
	struct tls_host_entry *e = find_host(sessions, nsessions, target);
	if (e) {
		SSL_SESSION_free(e->session);
	} else {
		if (nsessions == TLS_SESSIONS_MAX) {
			SSL_SESSION_free(sessions[0].session);
			memmove(sessions, sessions + 1, --nsessions * sizeof sessions[0]);
		}
		e = &sessions[nsessions++];
		e->ip = target->ip;
		e->port = target->port;
	}
	e->session = session;
}
