/* smtp_main.c: the smtp delivery agent's start-up.  As root (pre-init) it
 * loads the configuration, takes its service socket - inherited from
 * master in TERN_SERVICE_FD, or created at <spool>/private/smtp when run
 * by hand - and builds the TLS client contexts whose keys only root may
 * read; after the privilege drop it starts the resolver and serves qmgr.
 * SIGHUP loads the configuration again for the jobs that start after it. */
#include "smtp.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "listen.h"
#include "log.h"
#include "mem.h"
#include "server.h"

#define SERVICE_NAME "smtp"

struct smtp_daemon {
	char *config_path;
	struct smtp_conf *conf;
	int service_fd;
	struct event_base *base;
};

static struct smtp_daemon daemon_state = {.service_fd = -1};

/* ---- configuration ------------------------------------------------------------------- */

struct smtp_conf *smtp_conf_current(void)
{
	return daemon_state.conf;
}

struct smtp_conf *smtp_conf_ref(struct smtp_conf *c)
{
	c->refs++;
	return c;
}

void smtp_conf_unref(struct smtp_conf *c)
{
	if (c && --c->refs == 0) {
		conf_free(c->conf);
		free(c);
	}
}

static void set_conf(struct conf *conf)
{
	struct smtp_conf *c = mem_zalloc(sizeof *c);
	c->conf = conf;
	c->refs = 1;
	smtp_conf_unref(daemon_state.conf);
	daemon_state.conf = c;
}

struct event_base *smtp_event_base(void)
{
	return daemon_state.base;
}

/* ---- the service socket ----------------------------------------------------------------- */

/* ---- daemon callbacks ---------------------------------------------------------------------- */

static bool smtp_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	struct smtp_daemon *d = ctx;
	struct conf *conf = conf_load_checked(opts->config_path, "; ", err);
	if (conf == NULL)
		return false;
	d->config_path = mem_strdup(opts->config_path);
	set_conf(conf);
	d->service_fd = server_inherited_fd("TERN_SERVICE_FD", err);
	if (d->service_fd == -2)
		return false;
	if (d->service_fd < 0)
		d->service_fd = listen_private_socket(conf_spool(conf), SERVICE_NAME, opts->user, err);
	if (d->service_fd < 0)
		return false;
	smtp_tls_preload(conf);
	return true;
}

/* name-server lines, global and in <dns> blocks. */
static void collect_name_servers(const struct conf *conf, struct conf_list *out)
{
	const struct conf_settings *scopes[8];
	size_t nscopes = 0;
	scopes[nscopes++] = conf_global(conf);
	for (size_t i = 0; i < conf_block_count(conf, CONF_DNS) && nscopes < 8; i++) {
		const struct conf_settings *s = conf_block_settings(conf_block_at(conf, CONF_DNS, i));
		if (s)
			scopes[nscopes++] = s;
	}
	for (size_t i = 0; i < nscopes; i++) {
		for (const struct conf_setting *s = conf_get_setting(scopes[i], "name-server"); s; s = s->next) {
			if (s->value.unset || !s->value.string)
				continue;
			out->items = mem_reallocarray(out->items, out->count + 1, sizeof *out->items);
			out->items[out->count++] = mem_strdup(s->value.string);
		}
	}
}

static bool smtp_init(void *ctx, struct event_base *base, struct buf *err)
{
	struct smtp_daemon *d = ctx;
	d->base = base;
	struct conf_list servers = {0, NULL};
	collect_name_servers(d->conf->conf, &servers);
	bool ok = smtp_dns_init(base, &servers, err);
	for (size_t i = 0; i < servers.count; i++)
		free(servers.items[i]);
	free(servers.items);
	if (!ok)
		return false;
	if (!smtp_job_listen(base, d->service_fd, conf_spool(d->conf->conf), err))
		return false;
	d->service_fd = -1; /* the listener owns it */
	server_set_title("smtp");
	return true;
}

static void smtp_stop(void *ctx)
{
	struct smtp_daemon *d = ctx;
	smtp_job_shutdown();
	smtp_session_shutdown();
	smtp_dns_shutdown();
	smtp_tls_shutdown();
	smtp_conf_unref(d->conf);
	d->conf = NULL;
	free(d->config_path);
	d->config_path = NULL;
}

static void smtp_reload(void *ctx)
{
	struct smtp_daemon *d = ctx;
	struct conf *conf = conf_reload(d->config_path);
	if (conf) {
		set_conf(conf);
		log_info("configuration reloaded");
	}
}

int main(int argc, char **argv, char **envp)
{
	static const struct server_daemon daemon = {
	    .name = "smtp",
	    .ctx = &daemon_state,
	    .pre_init = smtp_pre_init,
	    .init = smtp_init,
	    .stop = smtp_stop,
	    .reload = smtp_reload,
	};
	return server_main(&daemon, argc, argv, envp);
}
