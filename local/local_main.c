/* local_main.c: the local delivery agent's start-up.  It loads the
 * configuration and takes its service socket - inherited from master in
 * TERN_SERVICE_FD, or created at <spool>/private/local when run by hand -
 * and serves qmgr.  Unlike the other workers it keeps root (master passes
 * -R for it): each delivery switches the effective identity to the
 * mailbox's user and back (local_priv.c).  Started by an ordinary user it
 * delivers as that user.  SIGHUP loads the configuration again. */
#include "local.h"

#include <errno.h>
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

#define SERVICE_NAME "local"

static struct {
	char *config_path;
	struct conf *conf;
	char *spool;
	int service_fd;
} daemon_state = {.service_fd = -1};

const struct conf *local_conf_current(void)
{
	return daemon_state.conf;
}

const char *local_spool(void)
{
	return daemon_state.spool;
}

static void set_conf(struct conf *conf)
{
	conf_free(daemon_state.conf);
	daemon_state.conf = conf;
	free(daemon_state.spool);
	daemon_state.spool = mem_strdup(conf_spool(conf));
}

static bool local_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	struct conf *conf = conf_load_checked(opts->config_path, "; ", err);
	if (conf == NULL)
		return false;
	daemon_state.config_path = mem_strdup(opts->config_path);
	set_conf(conf);
	daemon_state.service_fd = server_inherited_fd("TERN_SERVICE_FD", err);
	if (daemon_state.service_fd == -2)
		return false;
	if (daemon_state.service_fd < 0)
		daemon_state.service_fd = listen_private_socket(conf_spool(conf), SERVICE_NAME, opts->user, err);
	if (daemon_state.service_fd < 0)
		return false;
	if (geteuid() == 0 && !opts->stay_root)
		log_warning("started as root without -R: deliveries are written as %s only", opts->user);
	return true;
}

static bool local_init(void *ctx, struct event_base *base, struct buf *err)
{
	local_priv_init();
	if (!local_job_listen(base, daemon_state.service_fd, err))
		return false;
	daemon_state.service_fd = -1; /* the listener owns it */
	server_set_title("local");
	return true;
}

static void local_stop(void *ctx)
{
	local_job_shutdown();
	conf_free(daemon_state.conf);
	daemon_state.conf = NULL;
	free(daemon_state.spool);
	daemon_state.spool = NULL;
	free(daemon_state.config_path);
	daemon_state.config_path = NULL;
}

static void local_reload(void *ctx)
{
	struct conf *conf = conf_reload(daemon_state.config_path);
	if (conf) {
		set_conf(conf);
		log_info("configuration reloaded");
	}
}

int main(int argc, char **argv, char **envp)
{
	static const struct server_daemon daemon = {
	    .name = "local",
	    .pre_init = local_pre_init,
	    .init = local_init,
	    .stop = local_stop,
	    .reload = local_reload,
	    .keeps_root = true,
	};
	return server_main(&daemon, argc, argv, envp);
}
