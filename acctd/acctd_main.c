/* acctd_main.c: the accounting daemon's start, signals and reload.
 * As root (pre-init) it reads the configuration, makes the directories it
 * will write in its own and binds its socket; as the tern user it cuts
 * every accounting file back to the last confirmed batch and serves.
 * SIGUSR1 reopens the files (logrotate's postrotate); SIGHUP reloads. */
#include "acctd.h"

#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bsd/libutil.h>
#include <event2/event.h>

#include "fileio.h"
#include "server.h"

#define TICK_SECONDS 1

static struct acctd acctd = {.listen_fd = -1};
static struct pidfh *pid_file;

/* ---- directories ------------------------------------------------------------------- */

static bool make_file_dirs(uid_t uid, gid_t gid, struct buf *err)
{
	for (size_t i = 0; i < acctd.nfiles; i++) {
		const struct acctd_file *f = &acctd.files[i];
		if (!fileio_make_dirs(f->dir, 0755, uid, gid, err) ||
		    (f->move_to && !fileio_make_dirs(f->move_to, 0755, uid, gid, err)))
			return false;
	}
	return true;
}

/* The state directory is ours alone, whoever made it. */
static bool make_state_dir(uid_t uid, gid_t gid, struct buf *err)
{
	char *dir = mem_asprintf("%s/" ACCTD_STATE_DIR, acctd.spool);
	bool ok = fileio_make_dirs(dir, 0700, uid, gid, err);
	if (ok && geteuid() == 0 && chown(dir, uid, gid) < 0) {
		buf_printf(err, "cannot set the owner of %s: %s", dir, strerror(errno));
		ok = false;
	}
	free(dir);
	return ok;
}

/* One acctd per spool: the lock is taken before the socket is replaced.
 * The file also tells logrotate's postrotate whom to signal. */
static bool lock_pid_file(struct buf *err)
{
	char *path = mem_asprintf("%s/" ACCTD_STATE_DIR "/acctd.pid", acctd.spool);
	pid_t other = 0;
	bool ok = false;
	pid_file = pidfile_open(path, 0644, &other);
	if (pid_file == NULL && errno == EEXIST)
		buf_printf(err, "another acctd (pid %ld) is running on %s", (long)other, acctd.spool);
	else if (pid_file == NULL || pidfile_write(pid_file) < 0)
		buf_printf(err, "cannot write %s: %s", path, strerror(errno));
	else
		ok = true;
	free(path);
	return ok;
}

static bool run_user(const struct server_options *opts, uid_t *uid, gid_t *gid, struct buf *err)
{
	*uid = getuid();
	*gid = getgid();
	if (geteuid() != 0 || opts->stay_root)
		return true;
	struct passwd *pw = getpwnam(opts->user);
	if (pw == NULL) {
		buf_printf(err, "unknown user %s", opts->user);
		return false;
	}
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return true;
}

/* ---- start ------------------------------------------------------------------------------ */

static bool load(const char *path, struct buf *err)
{
	acctd.conf = conf_load_checked(path, "; ", err);
	if (acctd.conf == NULL)
		return false;
	return acctd_config_files(acctd.conf, &acctd.files, &acctd.nfiles, err);
}

static bool pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	uid_t uid;
	gid_t gid;
	acctd.config_path = mem_strdup(opts->config_path);
	if (!load(opts->config_path, err) || !run_user(opts, &uid, &gid, err))
		return false;
	acctd.spool = mem_strdup(conf_spool(acctd.conf));
	acctd.socket_path = mem_asprintf("%s/" ACCTD_SOCKET, acctd.spool);
	acctd.state_path = mem_asprintf("%s/" ACCTD_STATE_DIR "/state", acctd.spool);
	char *private_dir = mem_asprintf("%s/private", acctd.spool);
	bool ok = fileio_make_dirs(private_dir, 0700, uid, gid, err) && make_state_dir(uid, gid, err) && lock_pid_file(err) &&
	          make_file_dirs(uid, gid, err) && acctd_server_bind(&acctd, uid, gid, err);
	free(private_dir);
	return ok;
}

static void on_usr1(evutil_socket_t sig, short what, void *arg)
{
	struct buf err = BUF_INIT;
	if (acctd_reopen(&acctd, &err))
		log_info("accounting files reopened");
	else
		log_error("reopening the accounting files: %s", buf_cstr(&err));
	buf_free(&err);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	acctd_housekeeping(&acctd);
}

static bool init(void *ctx, struct event_base *base, struct buf *err)
{
	acctd.base = base;
	/* Past a file size limit, write(2) must fail (and be retried), not kill us. */
	signal(SIGXFSZ, SIG_IGN);
	acctd.filter = acctd_filter_new(acctd.conf);
	if (!acctd_files_start(&acctd, err) || !acctd_server_start(&acctd, err))
		return false;
	acctd.usr1_ev = evsignal_new(base, SIGUSR1, on_usr1, NULL);
	acctd.tick_ev = event_new(base, -1, EV_PERSIST, on_tick, NULL);
	struct timeval tick = {TICK_SECONDS, 0};
	if (acctd.usr1_ev == NULL || acctd.tick_ev == NULL || event_add(acctd.usr1_ev, NULL) < 0 ||
	    event_add(acctd.tick_ev, &tick) < 0) {
		buf_puts(err, "cannot set up the signal and timer events");
		return false;
	}
	log_info("writing %zu accounting file%s, records up to seq %llu are written", acctd.nfiles,
	         acctd.nfiles == 1 ? "" : "s", (unsigned long long)acctd.seq);
	return true;
}

static void free_files(void)
{
	for (size_t i = 0; i < acctd.nfiles; i++)
		acctd_file_free(&acctd.files[i]);
	free(acctd.files);
	acctd.files = NULL;
	acctd.nfiles = 0;
}

static void stop(void *ctx)
{
	acctd_server_stop(&acctd);
	if (acctd.usr1_ev)
		event_free(acctd.usr1_ev);
	if (acctd.tick_ev)
		event_free(acctd.tick_ev);
	acctd.usr1_ev = acctd.tick_ev = NULL;
}

/* ---- reload --------------------------------------------------------------------------------- */

static void reload(void *ctx)
{
	struct buf err = BUF_INIT;
	struct conf *conf = conf_load_checked(acctd.config_path, "; ", &err);
	struct acctd_file *files = NULL;
	size_t nfiles = 0;
	if (conf == NULL || !acctd_config_files(conf, &files, &nfiles, &err)) {
		log_error("reload refused, the old configuration stays: %s", buf_cstr(&err));
		conf_free(conf);
		buf_free(&err);
		return;
	}
	if (strcmp(conf_spool(conf), acctd.spool) != 0)
		log_warning("a new spool directory takes effect at the next start");
	/* Rows of an unwritten batch were formatted for the old columns: the
	 * client sends them again. */
	if (acctd.retrying)
		acctd_server_drop_feeder(&acctd);
	free_files();
	acctd_filter_free(acctd.filter);
	conf_free(acctd.conf);
	acctd.conf = conf;
	acctd.files = files;
	acctd.nfiles = nfiles;
	acctd.filter = acctd_filter_new(conf);
	if (!acctd_files_start(&acctd, &err))
		log_error("after reload: %s", buf_cstr(&err));
	else
		log_info("configuration reloaded: %zu accounting file%s", nfiles, nfiles == 1 ? "" : "s");
	buf_free(&err);
}

int main(int argc, char **argv, char **envp)
{
	static const struct server_daemon daemon = {
	    .name = "acctd", .pre_init = pre_init, .init = init, .stop = stop, .reload = reload};
	/* A logrotate run during start-up must not kill us; the event loop
	 * takes SIGUSR1 over once it runs. */
	signal(SIGUSR1, SIG_IGN);
	int rc = server_main(&daemon, argc, argv, envp);
	if (pid_file)
		pidfile_remove(pid_file);
	free_files();
	acctd_filter_free(acctd.filter);
	acctd_tail_free(&acctd.tail);
	conf_free(acctd.conf);
	free(acctd.config_path);
	free(acctd.spool);
	free(acctd.socket_path);
	free(acctd.state_path);
	return rc;
}
