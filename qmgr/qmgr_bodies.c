/* qmgr_bodies.c: message bodies in append-only segment files under
 * <queue>/bodies, so that a body is written once instead of going
 * through Berkeley DB's log twice (insert, then undo data on delete) and
 * into bodies.db as well.  The database holds only a reference (segment,
 * offset, length, checksum); qmgr_store.c writes it in the message's
 * transaction, after the body was appended here.
 *
 * A write of at most LOGGED_WRITE_MAX bytes (what one transaction
 * appended, under load a few small bodies and accounting records) also
 * goes into the queue's log, through the store's log function, before
 * the commit that names it: the group commit's log flush then makes it
 * durable with the commit, and the segment itself is synced only at the
 * next checkpoint; after a crash the store writes the logged bytes back
 * (qmgr_bodies_restore).  A bigger write is not logged, and the next
 * group commit syncs the segments before it flushes the log.
 *
 * Two threads meet here.  The event loop appends, reads and counts
 * references (the segment table is its own).  The group-commit thread
 * makes segments durable (before it flushes the log when a write was not
 * logged, and before each checkpoint in any case), and unlinks freed
 * segments after a log flush that started once they were freed.  What
 * they share (fds to sync, segments to unlink) is under mu.
 *
 * In the daemon a third thread keeps a spare segment ready: a file of
 * SEGMENT_MAX_BYTES of zeros, already on disk, that the next segment
 * is renamed from.  Appending inside a file's written extent leaves the
 * group commit's fdatasync only the data to write, not the file's new
 * size and blocks as well (half the time, on ext4).  A freed segment
 * becomes a spare instead of being unlinked, so a busy queue rarely
 * writes zeros.  doc/queue.md explains the ordering. */
#include "qmgr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "mem.h"

/* A new segment once the active one is this big or this old. */
#define SEGMENT_MAX_BYTES (16u * 1024 * 1024)
#define SEGMENT_MAX_SECS 60
#define SEGMENT_NAME_LEN 16
/* Spare segments kept at most (freed segments beyond are unlinked), and
 * how many the preparing thread keeps ready. */
#define SPARES_MAX 2
#define SPARES_READY 1
#define SPARE_PREFIX "spare-"
/* After a spare could not be made (a full disk), before trying again. */
#define SPARE_RETRY_SECS 30
/* The active segment's last bytes kept in memory: the scheduler reads a
 * body, and the outbox a record, soon after they were written. */
#define TAIL_BYTES (4u * 1024 * 1024)
/* Segment writes up to this size go into the log as well (above).
 * Bigger ones would cost the log more than the segment sync they save:
 * the log's files are written twice (zeros ahead, then records). */
#define LOGGED_WRITE_MAX (64u * 1024)

/* A file ready to become the next segment: open, its blocks written. */
struct spare {
	int fd;
	char *path;
};

struct segment {
	uint64_t number;
	uint64_t refs;     /* committed references to it */
	int64_t closed_at; /* 0 while active */
};

struct qmgr_bodies {
	char *dir;

	/* The event loop's own. */
	struct segment *segs; /* sorted by number */
	size_t nsegs;
	uint64_t next_number;
	bool have_active;
	uint64_t active;
	int active_fd;
	uint64_t active_size;
	int64_t active_started;
	unsigned char *tail; /* bytes [tail_start, active_size) of the active segment */
	uint64_t tail_start;
	uint64_t written; /* of the active segment, on its way to disk; the rest is in the tail */
	qmgr_bodies_log_fn log_write; /* NULL: no write is logged */
	void *log_ctx;

	/* Writing logged bytes back after a crash (qmgr_bodies_restore). */
	struct restoring {
		uint64_t segment;
		int fd; /* -1: none open */
		bool changed;
		uint64_t bytes, segments;
	} restoring;

	/* Syncs take turns (a group commit's and a checkpoint's): one that
	 * returns leaves nothing written before it began unsynced, even
	 * what another sync had taken over and was still syncing. */
	pthread_mutex_t sync_mu;

	/* Shared with the flushing threads, under mu. */
	pthread_mutex_t mu;
	bool active_dirty; /* written since the last sync */
	bool unlogged;     /* a write since the last sync is not in the log */
	int shared_active; /* the active fd, as the syncing side sees it */
	bool dir_dirty;    /* a segment was created since the last sync */
	int *rotated;      /* rotated out, to sync, then close */
	size_t nrotated;
	uint64_t *doomed; /* freed segments, to unlink after a log flush */
	size_t ndoomed;
	uint64_t doomed_total, unlinked_total;
	struct spare spares[SPARES_MAX];
	size_t nspares;
	uint64_t spare_names; /* the last spare-N name given */
	bool preparing;       /* the preparing thread runs (the daemon) */
	bool stopping;
	pthread_cond_t spare_wanted;
	pthread_t preparer;
};

/* ---- the checksum ---------------------------------------------------------- */

static uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	h *= UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	return h;
}

/* Eight bytes a step: multiply, rotate, xor.  Not cryptographic; it
 * catches damaged or misplaced bytes. */
uint64_t qmgr_body_checksum(const void *data, size_t len)
{
	const unsigned char *p = data;
	const uint64_t k1 = UINT64_C(0x9e3779b185ebca87), k2 = UINT64_C(0xc2b2ae3d27d4eb4f);
	uint64_t h = UINT64_C(0x27d4eb2f165667c5) ^ ((uint64_t)len * k1);
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h ^= rotl64(w * k2, 31) * k1;
		h = rotl64(h, 27) * k1 + UINT64_C(0x52dce729);
	}
	uint64_t tail = 0;
	for (size_t j = 0; i + j < len; j++)
		tail |= (uint64_t)p[i + j] << (8 * j);
	h ^= rotl64(tail * k2, 31) * k1;
	return mix64(h);
}

/* ---- references ---------------------------------------------------------------- */

void qmgr_body_ref_encode(const struct qmgr_body_ref *r, unsigned char out[QMGR_BODY_REF_SIZE])
{
	qmgr_be_put(out, r->segment, 8);
	qmgr_be_put(out + 8, r->offset, 8);
	qmgr_be_put(out + 16, r->length, 8);
	qmgr_be_put(out + 24, r->checksum, 8);
}

bool qmgr_body_ref_decode(const void *v, size_t len, struct qmgr_body_ref *r)
{
	if (len != QMGR_BODY_REF_SIZE)
		return false;
	const unsigned char *p = v;
	r->segment = qmgr_be_get(p, 8);
	r->offset = qmgr_be_get(p + 8, 8);
	r->length = qmgr_be_get(p + 16, 8);
	r->checksum = qmgr_be_get(p + 24, 8);
	return true;
}

/* ---- the segment table (event loop) ------------------------------------------ */

static char *segment_path(const struct qmgr_bodies *b, uint64_t number)
{
	return mem_asprintf("%s/%016" PRIX64, b->dir, number);
}

/* The index of number's entry, or where it would go. */
static size_t segment_slot(const struct qmgr_bodies *b, uint64_t number)
{
	size_t lo = 0, hi = b->nsegs;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (b->segs[mid].number < number)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct segment *segment_find(struct qmgr_bodies *b, uint64_t number)
{
	size_t i = segment_slot(b, number);
	return i < b->nsegs && b->segs[i].number == number ? &b->segs[i] : NULL;
}

static struct segment *segment_add(struct qmgr_bodies *b, uint64_t number, int64_t closed_at)
{
	size_t i = segment_slot(b, number);
	if (i < b->nsegs && b->segs[i].number == number)
		return &b->segs[i];
	b->segs = mem_reallocarray(b->segs, b->nsegs + 1, sizeof(*b->segs));
	memmove(b->segs + i + 1, b->segs + i, (b->nsegs - i) * sizeof(*b->segs));
	b->nsegs++;
	b->segs[i] = (struct segment){.number = number, .closed_at = closed_at};
	return &b->segs[i];
}

static void segment_drop(struct qmgr_bodies *b, struct segment *s)
{
	size_t i = (size_t)(s - b->segs);
	memmove(b->segs + i, b->segs + i + 1, (b->nsegs - i - 1) * sizeof(*b->segs));
	b->nsegs--;
}

/* A closed segment nothing names any more: unlinked once the commits
 * that removed its references are durable. */
static void doom(struct qmgr_bodies *b, struct segment *s)
{
	uint64_t number = s->number;
	segment_drop(b, s);
	pthread_mutex_lock(&b->mu);
	b->doomed = mem_reallocarray(b->doomed, b->ndoomed + 1, sizeof(*b->doomed));
	b->doomed[b->ndoomed++] = number;
	b->doomed_total++;
	pthread_mutex_unlock(&b->mu);
}

/* ---- opening ----------------------------------------------------------------------- */

struct qmgr_bodies *qmgr_bodies_new(const char *queue_dir, struct buf *err)
{
	char *dir = mem_asprintf("%s/bodies", queue_dir);
	bool made = mkdir(dir, 0700) == 0;
	if ((!made && errno != EEXIST) || (made && !fileio_sync_dir(queue_dir))) {
		buf_printf(err, "cannot create %s: %s", dir, strerror(errno));
		free(dir);
		return NULL;
	}
	struct qmgr_bodies *b = mem_zalloc(sizeof(*b));
	b->dir = dir;
	b->active_fd = -1;
	b->shared_active = -1;
	b->restoring.fd = -1;
	b->next_number = 1;
	pthread_mutex_init(&b->mu, NULL);
	pthread_mutex_init(&b->sync_mu, NULL);
	pthread_cond_init(&b->spare_wanted, NULL);
	return b;
}

void qmgr_bodies_set_log(struct qmgr_bodies *b, qmgr_bodies_log_fn fn, void *ctx)
{
	b->log_write = fn;
	b->log_ctx = ctx;
}

void qmgr_bodies_count(struct qmgr_bodies *b, uint64_t segment)
{
	segment_add(b, segment, 1)->refs++;
}

static bool parse_segment_name(const char *name, uint64_t *number)
{
	if (strlen(name) != SEGMENT_NAME_LEN || strspn(name, "0123456789ABCDEF") != SEGMENT_NAME_LEN)
		return false;
	*number = strtoull(name, NULL, 16);
	return true;
}

/* One file of the directory at open: kept when referenced, else an
 * orphan (a body whose transaction never committed, or a segment freed
 * before a crash) and removed. */
static void scan_one(struct qmgr_bodies *b, int dfd, const char *name, int64_t now)
{
	uint64_t number;
	if (strncmp(name, SPARE_PREFIX, strlen(SPARE_PREFIX)) == 0) {
		if (unlinkat(dfd, name, 0) < 0)
			log_warning("cannot remove the spare segment %s/%s: %s", b->dir, name, strerror(errno));
		return;
	}
	if (!parse_segment_name(name, &number))
		return;
	if (number >= b->next_number)
		b->next_number = number + 1;
	struct segment *s = segment_find(b, number);
	if (s == NULL) {
		if (unlinkat(dfd, name, 0) < 0)
			log_warning("cannot remove the unused body segment %s/%s: %s", b->dir, name, strerror(errno));
		return;
	}
	struct stat sb;
	s->closed_at = fstatat(dfd, name, &sb, 0) == 0 ? (int64_t)sb.st_mtime : now;
}

bool qmgr_bodies_scan(struct qmgr_bodies *b, int64_t now, struct buf *err)
{
	DIR *d = opendir(b->dir);
	if (d == NULL) {
		buf_printf(err, "cannot read %s: %s", b->dir, strerror(errno));
		return false;
	}
	/* referenced segments whose file is missing: reads will say so */
	for (size_t i = 0; i < b->nsegs; i++) {
		b->segs[i].closed_at = now;
		if (b->segs[i].number >= b->next_number)
			b->next_number = b->segs[i].number + 1;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		scan_one(b, dirfd(d), e->d_name, now);
	closedir(d);
	return true;
}

/* ---- appending (event loop) ------------------------------------------------------------ */

/* The active segment is closed: the syncing side syncs and closes its
 * fd; nothing names it any more, it can go. */
static void retire_active(struct qmgr_bodies *b, int64_t now)
{
	if (!b->have_active)
		return;
	struct buf err = BUF_INIT;
	if (!qmgr_bodies_write_pending(b, &err)) /* bytes of an aborted transaction */
		log_warning("%s", buf_cstr(&err));
	buf_free(&err);
	pthread_mutex_lock(&b->mu);
	b->rotated = mem_reallocarray(b->rotated, b->nrotated + 1, sizeof(*b->rotated));
	b->rotated[b->nrotated++] = b->active_fd;
	b->shared_active = -1;
	b->active_dirty = false; /* the rotated fd is synced in any case */
	pthread_mutex_unlock(&b->mu);
	b->have_active = false;
	b->active_fd = -1;
	struct segment *s = segment_find(b, b->active);
	if (s) {
		s->closed_at = now > 0 ? now : 1;
		if (s->refs == 0)
			doom(b, s);
	}
}

static int spare_take(struct qmgr_bodies *b, const char *path);

static bool start_segment(struct qmgr_bodies *b, int64_t now, struct buf *err)
{
	uint64_t number = b->next_number++;
	char *path = segment_path(b, number);
	int fd = spare_take(b, path);
	if (fd < 0)
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int saved = errno;
		buf_printf(err, "cannot create the body segment %s: %s", path, strerror(errno));
		free(path);
		errno = saved;
		return false;
	}
	free(path);
	segment_add(b, number, 0);
	b->have_active = true;
	b->active = number;
	b->active_fd = fd;
	b->active_size = 0;
	b->tail_start = 0;
	b->written = 0;
	b->active_started = now;
	pthread_mutex_lock(&b->mu);
	b->shared_active = fd;
	b->dir_dirty = true;
	pthread_mutex_unlock(&b->mu);
	return true;
}

static bool active_full(const struct qmgr_bodies *b, int64_t now)
{
	return b->active_size >= SEGMENT_MAX_BYTES || now - b->active_started >= SEGMENT_MAX_SECS;
}

/* A write to the active segment, which the next sync then covers; a
 * small one also goes into the log.  The order matters to checkpoints
 * (qmgr_store_checkpoint): the file, then the dirty mark, then the log
 * record, so that a record the log holds before a sync began was marked
 * before it too. */
static bool write_active(struct qmgr_bodies *b, const void *data, size_t len, uint64_t offset, struct buf *err)
{
	if (!fileio_pwrite_all(b->active_fd, data, len, offset)) {
		int saved = errno;
		buf_printf(err, "cannot write to the body segment %s/%016" PRIX64 ": %s", b->dir, b->active,
		           strerror(errno));
		errno = saved;
		return false;
	}
	bool logged = b->log_write != NULL && len <= LOGGED_WRITE_MAX;
	pthread_mutex_lock(&b->mu);
	b->active_dirty = true;
	if (!logged)
		b->unlogged = true;
	pthread_mutex_unlock(&b->mu);
	return !logged || b->log_write(b->log_ctx, b->active, offset, data, len, err);
}

/* The appended bytes not yet written go to the segment in one pwrite:
 * [written, active_size), all of it in the tail. */
bool qmgr_bodies_write_pending(struct qmgr_bodies *b, struct buf *err)
{
	if (!b->have_active || b->written == b->active_size)
		return true;
	size_t len = (size_t)(b->active_size - b->written);
	if (!write_active(b, b->tail + (b->written - b->tail_start), len, b->written, err))
		return false;
	b->written = b->active_size;
	return true;
}

/* Before active_size moves past data.  What does not fit starts the tail
 * afresh, once what the old one holds unwritten is written; a body bigger
 * than the tail is written at once and not kept. */
static bool keep_in_tail(struct qmgr_bodies *b, const void *data, size_t len, struct buf *err)
{
	if (b->tail == NULL)
		b->tail = mem_alloc(TAIL_BYTES);
	size_t kept = (size_t)(b->active_size - b->tail_start);
	if (kept + len > TAIL_BYTES) {
		if (!qmgr_bodies_write_pending(b, err))
			return false;
		b->tail_start = b->active_size;
		kept = 0;
	}
	if (len > TAIL_BYTES) {
		if (!write_active(b, data, len, b->active_size, err))
			return false;
		b->tail_start = b->written = b->active_size + len;
		return true;
	}
	memcpy(b->tail + kept, data, len);
	return true;
}

/* A read of the active segment's tail, from memory. */
static bool read_tail(const struct qmgr_bodies *b, const struct qmgr_body_ref *ref, void *out)
{
	if (b->tail == NULL || ref->offset < b->tail_start || ref->offset > b->active_size ||
	    ref->length > b->active_size - ref->offset)
		return false;
	memcpy(out, b->tail + (ref->offset - b->tail_start), (size_t)ref->length);
	return true;
}

bool qmgr_bodies_append(struct qmgr_bodies *b, const void *data, size_t len, int64_t now, struct qmgr_body_ref *ref,
                        struct buf *err)
{
	if (b->have_active && active_full(b, now))
		retire_active(b, now);
	if (!b->have_active && !start_segment(b, now, err))
		return false;
	if (!keep_in_tail(b, data, len, err))
		return false;
	*ref = (struct qmgr_body_ref){b->active, b->active_size, len, qmgr_body_checksum(data, len)};
	b->active_size += len;
	return true;
}

/* ---- spare segments ------------------------------------------------------------- */

static char *spare_name(struct qmgr_bodies *b)
{
	pthread_mutex_lock(&b->mu);
	uint64_t n = ++b->spare_names;
	pthread_mutex_unlock(&b->mu);
	return mem_asprintf("%s/" SPARE_PREFIX "%" PRIu64, b->dir, n);
}

/* Adds a spare unless there are enough; false leaves it to the caller. */
static bool spare_put(struct qmgr_bodies *b, int fd, char *path)
{
	pthread_mutex_lock(&b->mu);
	bool room = b->nspares < SPARES_MAX;
	if (room)
		b->spares[b->nspares++] = (struct spare){fd, path};
	pthread_mutex_unlock(&b->mu);
	return room;
}

/* The event loop: a spare renamed to path, its fd (-1: none ready, or
 * the rename failed and a fresh file will do). */
static int spare_take(struct qmgr_bodies *b, const char *path)
{
	pthread_mutex_lock(&b->mu);
	struct spare sp = {-1, NULL};
	if (b->nspares > 0)
		sp = b->spares[--b->nspares];
	pthread_cond_signal(&b->spare_wanted);
	pthread_mutex_unlock(&b->mu);
	if (sp.fd < 0)
		return -1;
	if (rename(sp.path, path) < 0) {
		log_warning("cannot use the spare segment %s: %s", sp.path, strerror(errno));
		close(sp.fd);
		unlink(sp.path);
		sp.fd = -1;
	}
	free(sp.path);
	return sp.fd;
}

/* Renames a freed segment to a spare and keeps it; true when path is
 * gone either way. */
static bool recycle(struct qmgr_bodies *b, const char *path)
{
	char *spare = spare_name(b);
	if (rename(path, spare) != 0) {
		free(spare);
		return false;
	}
	int fd = open(spare, O_RDWR | O_CLOEXEC);
	if (fd >= 0 && spare_put(b, fd, spare))
		return true;
	if (fd >= 0)
		close(fd);
	if (unlink(spare) < 0)
		log_warning("cannot remove the spare segment %s: %s", spare, strerror(errno));
	free(spare);
	return true;
}

/* A freed segment, durable as freed: kept as a spare when one is wanted
 * (its blocks are written already), else unlinked. */
static void recycle_or_unlink(struct qmgr_bodies *b, uint64_t number)
{
	char *path = segment_path(b, number);
	bool recycled = b->preparing && qmgr_bodies_spares(b) < SPARES_MAX && recycle(b, path);
	if (!recycled && unlink(path) < 0 && errno != ENOENT)
		log_warning("cannot remove the body segment %s: %s", path, strerror(errno));
	free(path);
}

/* SEGMENT_MAX_BYTES of zeros, on disk: the fd, or -1 (errno set). */
static int make_spare(struct qmgr_bodies *b, char **path_out)
{
	char *path = spare_name(b);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || !fileio_write_zeros(fd, SEGMENT_MAX_BYTES)) {
		int saved = errno;
		if (fd >= 0) {
			close(fd);
			unlink(path);
		}
		free(path);
		errno = saved;
		return -1;
	}
	*path_out = path;
	return fd;
}

static void *preparer_thread(void *arg)
{
	struct qmgr_bodies *b = arg;
	bool warned = false;
	pthread_mutex_lock(&b->mu);
	while (!b->stopping) {
		if (b->nspares >= SPARES_READY) {
			pthread_cond_wait(&b->spare_wanted, &b->mu);
			continue;
		}
		pthread_mutex_unlock(&b->mu);
		char *path;
		int fd = make_spare(b, &path);
		if (fd >= 0 && !spare_put(b, fd, path)) {
			close(fd);
			unlink(path);
			free(path);
		}
		if (fd < 0 && !warned)
			log_warning("cannot prepare a spare body segment in %s (new segments grow as they fill): %s",
			            b->dir, strerror(errno));
		warned = fd < 0;
		pthread_mutex_lock(&b->mu);
		if (fd < 0 && !b->stopping) {
			struct timespec until = qmgr_deadline_after(SPARE_RETRY_SECS * 1000L);
			pthread_cond_timedwait(&b->spare_wanted, &b->mu, &until);
		}
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

bool qmgr_bodies_start_preparing(struct qmgr_bodies *b, struct buf *err)
{
	if (b->preparing)
		return true;
	int rc = pthread_create(&b->preparer, NULL, preparer_thread, b);
	if (rc != 0) {
		buf_printf(err, "cannot start the spare segment thread: %s", strerror(rc));
		return false;
	}
	b->preparing = true;
	return true;
}

size_t qmgr_bodies_spares(struct qmgr_bodies *b)
{
	pthread_mutex_lock(&b->mu);
	size_t n = b->nspares;
	pthread_mutex_unlock(&b->mu);
	return n;
}

static void stop_preparing(struct qmgr_bodies *b)
{
	if (b->preparing) {
		pthread_mutex_lock(&b->mu);
		b->stopping = true;
		pthread_cond_broadcast(&b->spare_wanted);
		pthread_mutex_unlock(&b->mu);
		pthread_join(b->preparer, NULL);
		b->preparing = false;
	}
	for (size_t i = 0; i < b->nspares; i++) {
		close(b->spares[i].fd);
		unlink(b->spares[i].path);
		free(b->spares[i].path);
	}
	b->nspares = 0;
}

/* ---- reading (event loop) --------------------------------------------------------------- */

static bool pread_all(int fd, void *data, size_t len, uint64_t offset, size_t *got)
{
	char *p = data;
	*got = 0;
	while (*got < len) {
		ssize_t n = pread(fd, p + *got, len - *got, (off_t)(offset + *got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return false;
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return true;
}

static void damaged(const struct qmgr_bodies *b, const char *qid, const struct qmgr_body_ref *ref, struct buf *err,
                    const char *why)
{
	buf_printf(err, "%s: damaged body in segment %s/%016" PRIX64 " (offset %" PRIu64 ", %" PRIu64 " bytes): %s",
	           qid, b->dir, ref->segment, ref->offset, ref->length, why);
}

/* The body read into body's spare room: kept when its checksum holds. */
static bool checked(const struct qmgr_bodies *b, const char *qid, const struct qmgr_body_ref *ref, struct buf *body,
                    struct buf *err)
{
	size_t len = (size_t)ref->length;
	bool ok = qmgr_body_checksum(body->data + body->len, len) == ref->checksum;
	if (ok)
		body->len += len;
	else
		damaged(b, qid, ref, err, "checksum mismatch");
	body->data[body->len] = '\0';
	return ok;
}

bool qmgr_bodies_read(struct qmgr_bodies *b, const char *qid, const struct qmgr_body_ref *ref, struct buf *body,
                      struct buf *err)
{
	bool active = b->have_active && ref->segment == b->active;
	if (active && ref->length <= SIZE_MAX / 2) {
		buf_reserve(body, (size_t)ref->length);
		if (read_tail(b, ref, body->data + body->len))
			return checked(b, qid, ref, body, err);
	}
	int fd = active ? b->active_fd : -1;
	if (!active) {
		char *path = segment_path(b, ref->segment);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		free(path);
		if (fd < 0) {
			damaged(b, qid, ref, err, strerror(errno));
			return false;
		}
	}
	if (ref->length > SIZE_MAX / 2) {
		damaged(b, qid, ref, err, "impossible length");
		if (!active)
			close(fd);
		return false;
	}
	size_t len = (size_t)ref->length, got;
	buf_reserve(body, len);
	bool ok = pread_all(fd, body->data + body->len, len, ref->offset, &got);
	int saved = errno;
	if (!active)
		close(fd);
	if (!ok)
		damaged(b, qid, ref, err, strerror(saved));
	else if (got < len)
		damaged(b, qid, ref, err, "the segment is too short");
	else
		return checked(b, qid, ref, body, err);
	body->data[body->len] = '\0';
	return false;
}

/* ---- after a crash: logged writes back into their segments ------------------------------ */

/* The segment being restored is done: synced if it changed, closed. */
static bool restore_close(struct qmgr_bodies *b, struct buf *err)
{
	struct restoring *r = &b->restoring;
	if (r->fd < 0)
		return true;
	bool ok = !r->changed || fdatasync(r->fd) == 0;
	if (!ok)
		buf_printf(err, "cannot sync the body segment %s/%016" PRIX64 ": %s", b->dir, r->segment, strerror(errno));
	if (r->changed)
		r->segments++;
	close(r->fd);
	r->fd = -1;
	r->changed = false;
	return ok;
}

static bool restore_open(struct qmgr_bodies *b, uint64_t segment, struct buf *err)
{
	struct restoring *r = &b->restoring;
	if (r->fd >= 0 && r->segment == segment)
		return true;
	if (!restore_close(b, err))
		return false;
	char *path = segment_path(b, segment);
	r->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (r->fd < 0)
		buf_printf(err, "cannot open the body segment %s: %s", path, strerror(errno));
	free(path);
	r->segment = segment;
	return r->fd >= 0;
}

/* Bytes the log holds for a segment: written again where the file does
 * not hold them (a crash lost them with the page cache).  Segments
 * nothing names are left alone: the scan removed their files. */
bool qmgr_bodies_restore(struct qmgr_bodies *b, uint64_t segment, uint64_t offset, const void *data, size_t len,
                         struct buf *err)
{
	if (segment_find(b, segment) == NULL)
		return true;
	if (!restore_open(b, segment, err))
		return false;
	struct restoring *r = &b->restoring;
	unsigned char *have = mem_alloc(len ? len : 1);
	size_t got = 0;
	bool same = pread_all(r->fd, have, len, offset, &got) && got == len && memcmp(have, data, len) == 0;
	free(have);
	if (same)
		return true;
	if (!fileio_pwrite_all(r->fd, data, len, offset)) {
		buf_printf(err, "cannot write to the body segment %s/%016" PRIX64 ": %s", b->dir, segment,
		           strerror(errno));
		return false;
	}
	r->changed = true;
	r->bytes += len;
	return true;
}

bool qmgr_bodies_restore_end(struct qmgr_bodies *b, uint64_t *bytes, uint64_t *segments, struct buf *err)
{
	bool ok = restore_close(b, err);
	*bytes = b->restoring.bytes;
	*segments = b->restoring.segments;
	return ok;
}

/* ---- references come and go (event loop, after commits) --------------------------------- */

void qmgr_bodies_referenced(struct qmgr_bodies *b, uint64_t segment)
{
	struct segment *s = segment_find(b, segment);
	if (s)
		s->refs++;
}

void qmgr_bodies_released(struct qmgr_bodies *b, uint64_t segment)
{
	struct segment *s = segment_find(b, segment);
	if (s == NULL || s->refs == 0)
		return;
	if (--s->refs == 0 && !(b->have_active && b->active == segment))
		doom(b, s);
}

void qmgr_bodies_retire_old(struct qmgr_bodies *b, int64_t now)
{
	if (b->have_active && active_full(b, now))
		retire_active(b, now);
}

void qmgr_bodies_retire(struct qmgr_bodies *b, int64_t now)
{
	retire_active(b, now);
}

bool qmgr_bodies_sweepable(struct qmgr_bodies *b, uint64_t segment, int64_t now, int64_t min_age)
{
	struct segment *s = segment_find(b, segment);
	return s && s->closed_at != 0 && s->refs > 0 && now - s->closed_at >= min_age;
}

bool qmgr_bodies_any_sweepable(struct qmgr_bodies *b, int64_t now, int64_t min_age)
{
	for (size_t i = 0; i < b->nsegs; i++)
		if (qmgr_bodies_sweepable(b, b->segs[i].number, now, min_age))
			return true;
	return false;
}

uint64_t qmgr_bodies_refs(struct qmgr_bodies *b, uint64_t segment)
{
	struct segment *s = segment_find(b, segment);
	return s ? s->refs : 0;
}

/* ---- durability (the flushing side) --------------------------------------------------------- */

/* What one sync takes over, under mu, before it starts. */
struct sync_batch {
	int active_fd; /* -1: nothing to sync */
	int *rotated;
	size_t nrotated;
	bool dir;
};

/* The segments' data when every write is wanted (all) or some write
 * was not logged; the directory whenever a segment was made. */
static void take_batch(struct qmgr_bodies *b, bool all, struct sync_batch *batch, uint64_t *doomed_mark)
{
	pthread_mutex_lock(&b->mu);
	*batch = (struct sync_batch){.active_fd = -1};
	if (all || b->unlogged) {
		batch->active_fd = b->active_dirty ? b->shared_active : -1;
		b->active_dirty = false;
		b->unlogged = false;
		batch->rotated = b->rotated;
		batch->nrotated = b->nrotated;
		b->rotated = NULL;
		b->nrotated = 0;
	}
	batch->dir = b->dir_dirty;
	b->dir_dirty = false;
	*doomed_mark = b->doomed_total;
	pthread_mutex_unlock(&b->mu);
}

static bool sync_fd(const struct qmgr_bodies *b, int fd, struct buf *err)
{
	if (fdatasync(fd) == 0)
		return true;
	if (err->len == 0)
		buf_printf(err, "cannot sync a body segment in %s: %s", b->dir, strerror(errno));
	return false;
}

bool qmgr_bodies_sync(struct qmgr_bodies *b, bool all, uint64_t *doomed_mark, struct buf *err)
{
	struct sync_batch batch;
	pthread_mutex_lock(&b->sync_mu);
	take_batch(b, all, &batch, doomed_mark);
	bool ok = true;
	if (batch.active_fd >= 0)
		ok = sync_fd(b, batch.active_fd, err);
	/* a rotated fd is closed only once synced */
	for (size_t i = 0; i < batch.nrotated; i++) {
		if (!sync_fd(b, batch.rotated[i], err))
			ok = false;
		close(batch.rotated[i]);
	}
	free(batch.rotated);
	if (batch.dir && !fileio_sync_dir(b->dir)) {
		if (err->len == 0)
			buf_printf(err, "cannot sync %s: %s", b->dir, strerror(errno));
		ok = false;
	}
	pthread_mutex_unlock(&b->sync_mu);
	return ok;
}

void qmgr_bodies_unlink_freed(struct qmgr_bodies *b, uint64_t doomed_mark)
{
	pthread_mutex_lock(&b->mu);
	while (b->unlinked_total < doomed_mark && b->ndoomed > 0) {
		uint64_t number = b->doomed[0];
		memmove(b->doomed, b->doomed + 1, (b->ndoomed - 1) * sizeof(*b->doomed));
		b->ndoomed--;
		b->unlinked_total++;
		pthread_mutex_unlock(&b->mu);
		recycle_or_unlink(b, number);
		pthread_mutex_lock(&b->mu);
	}
	pthread_mutex_unlock(&b->mu);
}

void qmgr_bodies_free(struct qmgr_bodies *b)
{
	if (b == NULL)
		return;
	stop_preparing(b);
	free(b->tail);
	if (b->active_fd >= 0)
		close(b->active_fd);
	if (b->restoring.fd >= 0)
		close(b->restoring.fd);
	for (size_t i = 0; i < b->nrotated; i++)
		close(b->rotated[i]);
	pthread_cond_destroy(&b->spare_wanted);
	pthread_mutex_destroy(&b->mu);
	pthread_mutex_destroy(&b->sync_mu);
	free(b->rotated);
	free(b->doomed);
	free(b->segs);
	free(b->dir);
	free(b);
}
