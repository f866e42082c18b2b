/* pickup_file.c: taking one file of the pickup directory.  The file is
 * untrusted: it is opened without following links, must be a regular file
 * with one link, no larger than max-message-size allows, and well-formed.
 * A good file is handed to qmgr and removed only once qmgr said 250 (the
 * message is durable); when qmgr is down or refuses for now, the file
 * stays for the next scan.  A bad file is renamed, under its own name,
 * into the bad directory, with one log line saying why: nothing is lost
 * and nothing else is held up. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"
#include "pickup.h"

/* How long qmgr may take to make a message durable. */
#define ENQUEUE_TIMEOUT_MS (120 * 1000)
/* The envelope lines that may come before max-message-size octets of
 * message; a bigger file is refused before it is read. */
#define ENVELOPE_SLACK (1024 * 1024)

/* A file name made safe for a log line. */
static void safe_name(const char *name, struct buf *out)
{
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		buf_putc(out, *p < 0x20 || *p == 0x7f ? '?' : (char)*p);
}

static enum pickup_outcome move_bad(const struct pickup_conf *c, int dir_fd, const char *name, const char *why)
{
	struct buf shown = BUF_INIT;
	safe_name(name, &shown);
	char *target = mem_asprintf("%s/%s", c->bad_dir, name);
	if (renameat(dir_fd, name, AT_FDCWD, target) == 0)
		log_warning("pickup file %s moved to %s: %s", buf_cstr(&shown), c->bad_dir, why);
	else if (errno != ENOENT)
		log_error("pickup file %s is bad (%s) but cannot be moved to %s: %s", buf_cstr(&shown), why, c->bad_dir,
		          strerror(errno));
	free(target);
	buf_free(&shown);
	return PICKUP_DONE;
}

/* ---- reading ---------------------------------------------------------------------- */

/* Reads the whole file; false with the reason. */
static bool read_file(int fd, size_t size, struct buf *out, struct buf *why)
{
	buf_reserve(out, size);
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n == 0)
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			buf_printf(why, "cannot read it: %s", strerror(errno));
			return false;
		}
		if (out->len + (size_t)n > size + ENVELOPE_SLACK) {
			buf_puts(why, "it grew while being read");
			return false;
		}
		buf_append(out, chunk, (size_t)n);
	}
}

/* What fstat says of an opened file: false with the reason when it is
 * not one we may take. */
static bool check_opened(const struct pickup_conf *c, int fd, struct stat *st, struct buf *why)
{
	if (fstat(fd, st) < 0)
		buf_printf(why, "cannot look at it: %s", strerror(errno));
	else if (!S_ISREG(st->st_mode))
		buf_puts(why, "not a regular file");
	else if (st->st_nlink != 1)
		buf_puts(why, "a file with more than one link");
	else if ((uint64_t)st->st_size > c->max_message_size + ENVELOPE_SLACK)
		buf_printf(why, "larger than max-message-size (%llu octets)", (unsigned long long)c->max_message_size);
	return why->len == 0;
}

/* Opens and reads the file; false with the reason when it is not one we
 * may take.  *gone: it disappeared (another pickup took it). */
static bool open_file(const struct pickup_conf *c, int dir_fd, const char *name, struct buf *data, uid_t *owner,
                      bool *gone, struct buf *why)
{
	struct stat st = {0};
	/* a device or a FIFO is not even opened: opening one can have effects */
	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
		buf_puts(why, "not a regular file");
		return false;
	}
	int fd = openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		*gone = errno == ENOENT;
		if (errno == ELOOP)
			buf_puts(why, "a symbolic link, not a file");
		else
			buf_printf(why, "cannot open it: %s", strerror(errno));
		return false;
	}
	bool ok = check_opened(c, fd, &st, why) && read_file(fd, (size_t)st.st_size, data, why);
	*owner = st.st_uid;
	close(fd);
	return ok;
}

/* ---- the message ------------------------------------------------------------------- */

/* The current time as RFC 5322 writes it. */
static void put_date(struct buf *out)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", localtime_r(&now, &tm));
	buf_puts(out, date);
}

/* Received: by HOST (tern pickup, from userid UID (NAME)); DATE */
static void add_received(const struct pickup_conf *c, uid_t owner, struct buf *out)
{
	const struct passwd *pw = getpwuid(owner);
	buf_printf(out, "Received: by %s (tern pickup, from userid %lu", c->hostname, (unsigned long)owner);
	if (pw && pw->pw_name)
		buf_printf(out, " (%s)", pw->pw_name);
	buf_puts(out, ");\r\n\t");
	put_date(out);
	buf_puts(out, "\r\n");
}

static bool has_8bit(const struct buf *b)
{
	for (size_t i = 0; i < b->len; i++)
		if ((unsigned char)b->data[i] >= 0x80)
			return true;
	return false;
}

static void add_message_id(const struct pickup_conf *c, struct buf *out)
{
	static unsigned long counter;
	buf_printf(out, "Message-Id: <%lld.%ld.%lu@%s>\r\n", (long long)time(NULL), (long)getpid(), ++counter,
	           c->hostname);
}

static void add_date(struct buf *out)
{
	buf_puts(out, "Date: ");
	put_date(out);
	buf_puts(out, "\r\n");
}

/* Checks what the configuration limits; false with the reason. */
static bool check_limits(const struct pickup_conf *c, const struct pickup_envelope *env, size_t message_len,
                         struct buf *why)
{
	if (message_len > c->max_message_size)
		buf_printf(why, "the message is larger than max-message-size (%llu octets)",
		           (unsigned long long)c->max_message_size);
	else if (c->max_rcpt && env->nrcpts > c->max_rcpt)
		buf_printf(why, "more than max-rcpt-per-message (%llu) recipients", (unsigned long long)c->max_rcpt);
	return why->len == 0;
}

/* The virtual MTA: x-virtual-mta, else an X-Virtual-MTA header (with
 * process-x-virtual-mta), else default-virtual-mta (env->vmta NULL).  An
 * unknown name refuses the file with reject-invalid-virtual-mta, else it
 * is ignored. */
static bool choose_vmta(const struct pickup_conf *c, struct pickup_envelope *env, struct pickup_headers *found,
                        struct buf *why)
{
	if (env->vmta == NULL) {
		env->vmta = found->vmta;
		found->vmta = NULL;
	}
	if (env->vmta == NULL || pickup_conf_vmta_known(c, env->vmta))
		return true;
	if (c->reject_invalid_vmta) {
		buf_printf(why, "the virtual MTA %s is not configured (<virtual-mta> or <virtual-mta-pool>)",
		           env->vmta);
		return false;
	}
	free(env->vmta);
	env->vmta = NULL;
	return true;
}

/* The header fields pickup adds, then the message as kept. */
static void compose(const struct pickup_conf *c, uid_t owner, const struct pickup_headers *found,
                    const struct buf *kept, struct buf *body)
{
	if (c->add_received_header)
		add_received(c, owner, body);
	if (c->add_message_id_header && !found->has_message_id)
		add_message_id(c, body);
	if (c->add_date_header && !found->has_date)
		add_date(body);
	buf_append(body, buf_cstr(kept), kept->len);
}

/* Parses and checks the file into its envelope and the message as qmgr
 * stores it; false with the reason. */
static bool build_message(const struct pickup_conf *c, const struct buf *data, uid_t owner, struct pickup_envelope *env,
                          struct pickup_headers *found, struct buf *body, struct buf *why)
{
	if (!pickup_parse_envelope(buf_cstr(data), data->len, c->hostname, env, why))
		return false;
	size_t message_len = data->len - env->message_offset;
	if (!check_limits(c, env, message_len, why))
		return false;
	struct buf norm = BUF_INIT, kept = BUF_INIT;
	bool ok =
	    pickup_normalize_message(buf_cstr(data) + env->message_offset, message_len, c->remove_dot, &norm, why) &&
	    pickup_filter_headers(buf_cstr(&norm), norm.len, &c->headers, &kept, found, why) &&
	    choose_vmta(c, env, found, why);
	if (ok)
		compose(c, owner, found, &kept, body);
	buf_free(&norm);
	buf_free(&kept);
	return ok;
}

/* ---- qmgr ---------------------------------------------------------------------------- */

/* A file qmgr broke off on this many times in a row, without answering,
 * is taken for one qmgr cannot swallow (it would otherwise be offered
 * forever): it goes to the bad directory. */
#define STRIKES_MAX 5
#define STRIKES_TRACKED 64

static struct strike {
	char *name;
	unsigned count;
} strikes[STRIKES_TRACKED];

/* Counts one more failure of the file; returns how many so far. */
static unsigned strike(const char *name)
{
	struct strike *free_slot = NULL;
	for (size_t i = 0; i < STRIKES_TRACKED; i++) {
		if (strikes[i].name && strcmp(strikes[i].name, name) == 0)
			return ++strikes[i].count;
		if (!strikes[i].name && !free_slot)
			free_slot = &strikes[i];
	}
	if (free_slot) {
		free_slot->name = mem_strdup(name);
		free_slot->count = 1;
	}
	return 1;
}

static void forgive(const char *name)
{
	for (size_t i = 0; i < STRIKES_TRACKED; i++) {
		if (strikes[i].name && strcmp(strikes[i].name, name) == 0) {
			free(strikes[i].name);
			strikes[i].name = NULL;
		}
	}
}

/* What qmgr's answer means for the file. */
static enum pickup_outcome answered(const struct pickup_conf *c, int dir_fd, const char *name, const char *shown,
                                    uid_t owner, const struct pickup_envelope *env, const struct enqueue_reply *reply)
{
	const char *reason = reply->reason ? reply->reason : "";
	if (reply->code == 250) {
		log_info("%s: pickup file %s, from=<%s>, nrcpt=%zu, uid=%lu", reply->queue_id, shown, env->sender,
		         env->nrcpts, (unsigned long)owner);
		if (unlinkat(dir_fd, name, 0) < 0 && errno != ENOENT)
			log_error("%s: cannot remove pickup file %s (it may be queued twice): %s", reply->queue_id,
			          shown, strerror(errno));
		return PICKUP_DONE;
	}
	if (reply->code >= 500) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "qmgr refused it: %d %s", reply->code, reason);
		move_bad(c, dir_fd, name, buf_cstr(&why));
		buf_free(&why);
		return PICKUP_DONE;
	}
	log_warning("pickup file %s waits: qmgr answered %d %s", shown, reply->code, reason);
	return PICKUP_HELD;
}

/* qmgr took the message but broke off before answering. */
static enum pickup_outcome broke_off(const struct pickup_conf *c, int dir_fd, const char *name, const char *shown,
                                     const char *err)
{
	unsigned n = strike(name);
	if (n < STRIKES_MAX) {
		log_warning("pickup file %s waits: qmgr: %s", shown, err);
		return PICKUP_HELD;
	}
	struct buf why = BUF_INIT;
	buf_printf(&why, "qmgr broke off %u times in a row while taking it (last: %s)", n, err);
	move_bad(c, dir_fd, name, buf_cstr(&why));
	buf_free(&why);
	return PICKUP_DONE;
}

static enum pickup_outcome hand_over(const struct pickup_conf *c, int dir_fd, const char *name, uid_t owner,
                                     const struct pickup_envelope *env, const char *job, const struct buf *body,
                                     struct enqueue_conn *conn)
{
	struct buf err = BUF_INIT, shown = BUF_INIT;
	safe_name(name, &shown);
	const struct enqueue_envelope e = {
	    .sender = env->sender,
	    .envid = env->envid,
	    .body_type = has_8bit(body) ? "8BITMIME" : NULL,
	    .smtputf8 = env->utf8,
	    .src_type = "pickup",
	    .vmta = env->vmta ? env->vmta : c->default_vmta,
	    .mail_job = job,
	};
	struct enqueue_reply reply = {0};
	enum pickup_outcome outcome = PICKUP_RETRY;
	if (conn->fd < 0 && !enqueue_connect(conn, c->qmgr_socket, &err))
		log_warning("pickup file %s waits: qmgr is not reachable: %s", buf_cstr(&shown), buf_cstr(&err));
	else if (!enqueue_message(conn, &e, (const char *const *)env->rcpts, env->nrcpts, body->data, body->len,
	                          ENQUEUE_TIMEOUT_MS, &reply, &err))
		outcome = broke_off(c, dir_fd, name, buf_cstr(&shown), buf_cstr(&err));
	else
		outcome = answered(c, dir_fd, name, buf_cstr(&shown), owner, env, &reply);
	if (outcome == PICKUP_DONE)
		forgive(name);
	enqueue_reply_free(&reply);
	buf_free(&err);
	buf_free(&shown);
	return outcome;
}

enum pickup_outcome pickup_file_take(const struct pickup_conf *c, int dir_fd, const char *name,
                                     struct enqueue_conn *conn)
{
	struct buf data = BUF_INIT, body = BUF_INIT, why = BUF_INIT;
	struct pickup_envelope env = {0};
	struct pickup_headers found = {0};
	uid_t owner = (uid_t)-1;
	bool gone = false;
	enum pickup_outcome outcome = PICKUP_DONE;
	if (!open_file(c, dir_fd, name, &data, &owner, &gone, &why)) {
		if (!gone)
			outcome = move_bad(c, dir_fd, name, buf_cstr(&why));
	} else if (!build_message(c, &data, owner, &env, &found, &body, &why)) {
		outcome = move_bad(c, dir_fd, name, buf_cstr(&why));
	} else {
		outcome = hand_over(c, dir_fd, name, owner, &env, found.job, &body, conn);
	}
	pickup_envelope_free(&env);
	pickup_headers_free(&found);
	buf_free(&data);
	buf_free(&body);
	buf_free(&why);
	return outcome;
}
