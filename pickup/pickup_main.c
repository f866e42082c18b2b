/* pickup_main.c: the pickup daemon - its directories, the inotify watch
 * that wakes it when a NAME.msg appears (tern-sendmail renames NAME.tmp to
 * NAME.msg, an other writer may just close it), and the rescans: one at
 * start, so that files dropped while tern was stopped are taken, one
 * every PICKUP_RESCAN_SECONDS in case an event was missed, and retries
 * with a growing pause while qmgr cannot take mail.
 *
 * A file is complete when an event said so (renamed into the directory,
 * or closed after writing).  One a scan finds without such an event may
 * still be being written in place: it is taken only once it has not
 * changed for PICKUP_SETTLE_SECONDS, so no message leaves half written. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "fileio.h"
#include "log.h"
#include "mem.h"
#include "pickup.h"
#include "server.h"

#define PICKUP_RESCAN_SECONDS 60
#define PICKUP_RETRY_FIRST_MS 500
#define PICKUP_RETRY_MAX_MS (30 * 1000)
/* Files taken per turn of the event loop, so a stop is not held up. */
#define PICKUP_BATCH 100
/* Quiet time of a file no event announced before it is taken. */
#define PICKUP_SETTLE_SECONDS 2
/* Names announced by events and not yet taken, at most. */
#define PICKUP_ANNOUNCED_MAX 10000

struct pickup {
	struct event_base *base;
	char *config_path;
	struct pickup_conf *conf;
	uid_t uid;
	gid_t gid;
	int dir_fd;
	int inotify_fd;
	struct event *inotify_ev;
	struct event *scan_ev;
	struct enqueue_conn conn;
	int retry_ms;     /* 0 while qmgr takes mail */
	char **announced; /* names events reported complete */
	size_t nannounced;
};

static struct pickup pickup = {.dir_fd = -1, .inotify_fd = -1, .conn = {.fd = -1}};

/* ---- directories ------------------------------------------------------------------ */

/* The drop group of tern-sendmail when it exists, else the daemon's. */
static gid_t drop_group(gid_t fallback)
{
	const struct group *gr = getgrnam(TERN_USER "drop");
	return gr ? gr->gr_gid : fallback;
}

/* The pickup and bad directories, made when missing (as make install
 * would) and given to the daemon's user. */
static bool make_dirs(const struct pickup *p, struct buf *err)
{
	return fileio_make_dirs(p->conf->dir, 01730, p->uid, drop_group(p->gid), err) &&
	       fileio_make_dirs(p->conf->bad_dir, 0700, p->uid, p->gid, err);
}

/* ---- scanning -------------------------------------------------------------------- */

static void schedule_scan(struct pickup *p, int ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(p->scan_ev, &tv);
}

static bool is_message_name(const char *name)
{
	size_t n = strlen(name);
	return name[0] != '.' && n > 4 && strcmp(name + n - 4, ".msg") == 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The NAME.msg files of the directory, oldest name (time first) first. */
static size_t list_files(struct pickup *p, char ***names)
{
	*names = NULL;
	int fd = dup(p->dir_fd);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	if (d == NULL) {
		log_error("cannot read the pickup directory %s: %s", p->conf->dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		return 0;
	}
	rewinddir(d);
	size_t n = 0;
	for (const struct dirent *de; (de = readdir(d)) != NULL;) {
		if (!is_message_name(de->d_name))
			continue;
		*names = mem_reallocarray(*names, n + 1, sizeof(char *));
		(*names)[n++] = mem_strdup(de->d_name);
	}
	closedir(d);
	if (n > 1)
		qsort(*names, n, sizeof(char *), compare_names);
	return n;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* ---- complete files ---------------------------------------------------------------- */

static void announce(struct pickup *p, const char *name)
{
	for (size_t i = 0; i < p->nannounced; i++)
		if (strcmp(p->announced[i], name) == 0)
			return;
	if (p->nannounced >= PICKUP_ANNOUNCED_MAX)
		return; /* taken once settled */
	p->announced = mem_reallocarray(p->announced, p->nannounced + 1, sizeof(char *));
	p->announced[p->nannounced++] = mem_strdup(name);
}

/* True (and forgotten) when an event announced the name. */
static bool take_announced(struct pickup *p, const char *name)
{
	for (size_t i = 0; i < p->nannounced; i++) {
		if (strcmp(p->announced[i], name) != 0)
			continue;
		free(p->announced[i]);
		p->announced[i] = p->announced[--p->nannounced];
		return true;
	}
	return false;
}

static void forget_announced(struct pickup *p)
{
	free_names(p->announced, p->nannounced);
	p->announced = NULL;
	p->nannounced = 0;
}

/* A file no event announced: unchanged for the settle time. */
static bool settled(const struct pickup *p, const char *name)
{
	struct stat st;
	time_t now = time(NULL);
	if (fstatat(p->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return true; /* pickup_file_take says what is wrong */
	return st.st_ctime > now || now - st.st_ctime >= PICKUP_SETTLE_SECONDS;
}

/* ---- scanning, continued ---------------------------------------------------------- */

/* What comes after a scan: a retry while qmgr cannot take mail (or held
 * some file back), the next batch, a look at files still settling, or the
 * periodic rescan. */
static void scan_done(struct pickup *p, bool retry, bool more, bool settling)
{
	if (retry) {
		p->retry_ms = p->retry_ms ? p->retry_ms * 2 : PICKUP_RETRY_FIRST_MS;
		if (p->retry_ms > PICKUP_RETRY_MAX_MS)
			p->retry_ms = PICKUP_RETRY_MAX_MS;
		schedule_scan(p, p->retry_ms);
		return;
	}
	p->retry_ms = 0;
	if (more) {
		schedule_scan(p, 0);
		return;
	}
	/* every file listed was seen: what is still announced is gone */
	forget_announced(p);
	schedule_scan(p, settling ? PICKUP_SETTLE_SECONDS * 1000 : PICKUP_RESCAN_SECONDS * 1000);
	/* idle connections to qmgr are not kept between scans */
	enqueue_close(&p->conn);
}

/* Takes up to a batch of files; schedules what comes next. */
static void scan(struct pickup *p)
{
	char **names;
	size_t n = list_files(p, &names), seen = 0, taken = 0;
	bool unreachable = false, held = false, settling = false;
	for (; seen < n && taken < PICKUP_BATCH && !unreachable; seen++) {
		if (!take_announced(p, names[seen]) && !settled(p, names[seen])) {
			settling = true;
			continue;
		}
		enum pickup_outcome o = pickup_file_take(p->conf, p->dir_fd, names[seen], &p->conn);
		if (o != PICKUP_DONE)
			announce(p, names[seen]); /* it was complete: no settling next time */
		unreachable = o == PICKUP_RETRY;
		held = held || o == PICKUP_HELD;
		taken++;
	}
	free_names(names, n);
	scan_done(p, unreachable || held, seen < n, settling);
}

static void on_scan(evutil_socket_t fd, short what, void *arg)
{
	scan(arg);
}

/* New files: scan now, unless waiting for qmgr. */
static void on_inotify(evutil_socket_t fd, short what, void *arg)
{
	struct pickup *p = arg;
	char events[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool wanted = false;
	ssize_t n;
	while ((n = read(fd, events, sizeof(events))) > 0)
		for (char *e = events; e < events + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)e;
			bool message = ev->len > 0 && is_message_name(ev->name);
			if (message)
				announce(p, ev->name);
			wanted = wanted || message || (ev->mask & IN_Q_OVERFLOW);
			e += sizeof(struct inotify_event) + ev->len;
		}
	if (wanted && p->retry_ms == 0)
		schedule_scan(p, 0);
}

/* ---- the watch ---------------------------------------------------------------------- */

static void close_dir(struct pickup *p)
{
	if (p->inotify_ev) {
		event_free(p->inotify_ev);
		p->inotify_ev = NULL;
	}
	if (p->inotify_fd >= 0)
		close(p->inotify_fd);
	if (p->dir_fd >= 0)
		close(p->dir_fd);
	p->inotify_fd = p->dir_fd = -1;
}

static bool open_dir(struct pickup *p, struct buf *err)
{
	p->dir_fd = open(p->conf->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (p->dir_fd < 0) {
		buf_printf(err, "cannot open the pickup directory %s: %s", p->conf->dir, strerror(errno));
		return false;
	}
	p->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (p->inotify_fd < 0 || inotify_add_watch(p->inotify_fd, p->conf->dir, IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
		/* the rescans still find every file, later */
		log_warning("cannot watch %s (%s): scanning every %d seconds only", p->conf->dir, strerror(errno),
		            PICKUP_RESCAN_SECONDS);
		return true;
	}
	p->inotify_ev = event_new(p->base, p->inotify_fd, EV_READ | EV_PERSIST, on_inotify, p);
	event_add(p->inotify_ev, NULL);
	return true;
}

/* ---- the daemon ------------------------------------------------------------------ */

static bool pickup_pre_init(void *ctx, const struct server_options *opts, struct buf *err)
{
	struct pickup *p = ctx;
	p->config_path = mem_strdup(opts->config_path);
	if ((p->conf = pickup_conf_load(p->config_path, err)) == NULL)
		return false;
	p->uid = geteuid();
	p->gid = getegid();
	const struct passwd *pw = geteuid() == 0 && opts->user ? getpwnam(opts->user) : NULL;
	if (pw) {
		p->uid = pw->pw_uid;
		p->gid = pw->pw_gid;
	}
	return make_dirs(p, err);
}

static bool pickup_init(void *ctx, struct event_base *base, struct buf *err)
{
	struct pickup *p = ctx;
	p->base = base;
	p->scan_ev = evtimer_new(base, on_scan, p);
	if (!open_dir(p, err))
		return false;
	log_info("watching %s (bad files go to %s)", p->conf->dir, p->conf->bad_dir);
	server_set_title("pickup %s", p->conf->dir);
	schedule_scan(p, 0);
	return true;
}

static void pickup_stop(void *ctx)
{
	struct pickup *p = ctx;
	close_dir(p);
	if (p->scan_ev) {
		event_free(p->scan_ev);
		p->scan_ev = NULL;
	}
	enqueue_close(&p->conn);
}

/* A new configuration may name other directories (made when missing only
 * if we still may: after the drop a missing one is an error, logged). */
static void pickup_reload(void *ctx)
{
	struct pickup *p = ctx;
	struct buf err = BUF_INIT;
	struct pickup_conf *c = pickup_conf_load(p->config_path, &err);
	if (c == NULL) {
		log_error("reload refused, keeping the old configuration: %s", buf_cstr(&err));
		buf_free(&err);
		return;
	}
	struct pickup_conf *old = p->conf;
	p->conf = c;
	if (strcmp(old->dir, c->dir) != 0 || strcmp(old->bad_dir, c->bad_dir) != 0) {
		close_dir(p);
		if (!make_dirs(p, &err) || !open_dir(p, &err))
			log_error("pickup directory after reload: %s", buf_cstr(&err));
		else
			log_info("watching %s (bad files go to %s)", c->dir, c->bad_dir);
	}
	enqueue_close(&p->conn); /* the spool, and so qmgr, may have moved */
	pickup_conf_free(old);
	log_info("configuration reloaded");
	p->retry_ms = 0;
	schedule_scan(p, 0);
	buf_free(&err);
}

int main(int argc, char **argv, char **envp)
{
	const struct server_daemon daemon = {
	    .name = "pickup",
	    .ctx = &pickup,
	    .pre_init = pickup_pre_init,
	    .init = pickup_init,
	    .stop = pickup_stop,
	    .reload = pickup_reload,
	};
	int rc = server_main(&daemon, argc, argv, envp);
	close_dir(&pickup);
	forget_announced(&pickup);
	pickup_conf_free(pickup.conf);
	free(pickup.config_path);
	return rc;
}
