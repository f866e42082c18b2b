/* qmgr_store.c: the queue's Berkeley DB environment under <spool>/queue
 * and every transaction on it.  qmgr is the only process that opens it,
 * so the environment is private to the process (DB_PRIVATE: no region
 * files that a crash could leave stale) and recovery runs at every start.
 * Commits write their log records to the operating system but do not
 * fsync them (DB_TXN_WRITE_NOSYNC); durability comes from
 * qmgr_store_flush, which the event loop calls once for many commits
 * (or, on a slow disk, qmgr_store_flush_files on the flush thread).  Only
 * the thread that opened the store calls Berkeley DB, which therefore
 * runs without mutexes.  Writing at commit time means a full disk fails the commit
 * itself, before anything is promised.  Bodies live in segment files
 * (qmgr_bodies.c): bodies.db holds a reference to each, or, for bodies
 * the sweep moved back and for older queues, the body in chunks.
 * doc/queue.md describes the tables. */
#include "qmgr.h"

#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "acct_fields.h"
#include "log.h"
#include "mem.h"

/* Version 2: outbox.db entries hold a transaction's records together
 * (OUTBOX_BATCH_MARK).  Version 3: a new message's record holds its
 * body's reference, and bodies.db none (it keeps those of older
 * messages, and bodies in chunks).  Version 4: a new message of one
 * recipient holds that recipient's record too (rcpt_inline), and
 * recipients.db none for it.  An older queue is read as it is and
 * marked 4, so that an older qmgr does not misread what this one writes. */
#define SCHEMA_VERSION 4
#define SCHEMA_VERSION_OLDEST 1
/* outbox.db values that refer to records in a body segment start with a
 * mark that no stored record starts with.  0xB0: one record, then the
 * reference (queues of schema 1).  0xB1: the records one transaction
 * made, under the last one's sequence number: the first still there (u64;
 * those before it are confirmed), how many the segment holds (u32), then
 * the reference to them, each as a u32 length and the record. */
#define OUTBOX_REF_MARK 0xB0
#define OUTBOX_REF_SIZE (1 + QMGR_BODY_REF_SIZE)
#define OUTBOX_BATCH_MARK 0xB1
#define OUTBOX_BATCH_SIZE (1 + 8 + 4 + QMGR_BODY_REF_SIZE)
#define OUTBOX_LENGTH_BYTES 4
/* Queues known to have their queues.db row (rows are never removed): a
 * direct-mapped cache of this many slots (a power of two). */
#define KNOWN_QUEUE_SLOTS 1024

/* Done prefixes remembered (see struct done_hint): a cache of this many
 * slots (a power of two), a queue ID looked for in DONE_HINT_WAYS of them. */
#define DONE_HINT_SLOTS 8192
#define DONE_HINT_WAYS 4
/* Queue IDs are microseconds; meta.db reserves this many ahead. */
#define QID_RESERVE_MICROS UINT64_C(10000000)
/* The sweep logs a damaged body once, not at every pass (the last so
 * many are remembered). */
#define DAMAGED_REMEMBERED 64
#define CACHE_BYTES (32u * 1024 * 1024)
/* A checkpoint is due once the log has grown by this many files (of
 * LOG_FILE_BYTES) since the last one, whatever the time: it bounds the
 * log's disk space and what recovery replays after a crash (at full
 * load the log grows by some 70 MB a second). */
#define CHECKPOINT_LOG_FILES 64
/* New tables' pages (an existing table keeps its own).  The keys of a
 * queue only grow: pages fill at one end and empty at the other, and
 * every split or free logs whole pages.  16 KB pages do that a quarter
 * as often as the file system's 4 KB: 14 % less log per message, 7 %
 * less of qmgr's CPU in the benchmark. */
#define TABLE_PAGE_BYTES (16u * 1024)
/* Commits write the buffer out, so it only needs to hold a transaction's
 * records comfortably.  Berkeley DB wants log files at least four times
 * the buffer. */
#define LOG_BUFFER_BYTES (2u * 1024 * 1024)
#define LOG_FILE_BYTES (8u * 1024 * 1024)
/* Bodies are stored in chunks so that delivery can stream them. */
#define BODY_CHUNK (64u * 1024)
/* The sweep moves bodies back into bodies.db this many a transaction. */
#define SWEEP_BATCH 64

#define RECOVER_HINT "run `ternctl queue recover` (catastrophic recovery) and restart"

static const char *const table_files[QMGR_TABLE_COUNT] = {
    [QMGR_TABLE_META] = "meta.db",        [QMGR_TABLE_MESSAGES] = "messages.db", [QMGR_TABLE_BODIES] = "bodies.db",
    [QMGR_TABLE_RCPTS] = "recipients.db", [QMGR_TABLE_DUE] = "due.db",           [QMGR_TABLE_QUEUES] = "queues.db",
    [QMGR_TABLE_OUTBOX] = "outbox.db",    [QMGR_TABLE_DSNS] = "dsns.db",
};

static const char META_SCHEMA[] = "schema";
static const char META_LAST_QID[] = "last_qid";
static const char META_OUTBOX_NEXT[] = "outbox_next";
static const char META_JOB_GEN[] = "job_gen";

/* How far a message's recipients are known to be done (delivered or
 * bounced, no DSN pending) by a committed transaction: every one below
 * prefix.  Such a recipient never changes again, so whether the message
 * is done is read from there on: a bulk message's thousand results each
 * read a recipient or two, not the whole list. */
struct done_hint {
	char qid[QMGR_QID_SIZE]; /* "" for an empty slot */
	size_t prefix;
};

struct qmgr_store {
	DB_ENV *env;
	DB *db[QMGR_TABLE_COUNT];
	int lock_fd;
	char *dir;
	uint64_t last_qid;
	uint64_t qid_reserved;   /* last_qid in meta.db: no ID up to it is given */
	uint64_t outbox_next;    /* the next outbox sequence number */
	uint64_t outbox_saved;   /* outbox_next in meta.db */
	unsigned records_wanted; /* record types to make: bit 1u << enum acct_type */
	bool broken;
	bool txn_open;            /* a write transaction runs: no second one may begin */
	uint32_t checkpoint_file; /* the log's file when the last checkpoint began */
	struct qmgr_bodies *bodies;
	struct qmgr_logahead *logahead; /* the daemon's: NULL in tools and tests */
	struct buf sweep_resume;        /* where the sweep's scan of bodies.db goes on */
	struct buf sweep_resume_msgs;   /* and its scan of messages.db */
	/* bodies the sweep found damaged and logged: not logged again */
	char damaged[DAMAGED_REMEMBERED][QMGR_QID_SIZE];
	size_t ndamaged_seen;
	struct done_hint *done_hints; /* DONE_HINT_SLOTS, made when first needed */
	/* queue names whose row exists, or will once the open transaction
	 * commits (forgotten when it aborts); KNOWN_QUEUE_SLOTS, made when
	 * first needed */
	char **known_queues;
	/* The log's end as the event loop last read it, for the threads
	 * that may not call Berkeley DB: the file number in the high half,
	 * the offset in it in the low half; 0 until read. */
	_Atomic uint64_t log_end;
	/* The first log file that may hold commits not yet synced: the one
	 * the last flush ended in, by the loop or by the flush thread. */
	_Atomic uint32_t unsynced_from;
	int log_fd; /* the flush thread's, open on log file log_fd_number, or -1 */
	uint32_t log_fd_number;
};

/* ---- queues known to have their row --------------------------------------- */

/* The cache slot for a queue's name. */
static char **known_queue_slot(struct qmgr_store *st, const char *name)
{
	if (st->known_queues == NULL)
		st->known_queues = mem_calloc(KNOWN_QUEUE_SLOTS, sizeof(*st->known_queues));
	return &st->known_queues[qmgr_name_hash(name) & (KNOWN_QUEUE_SLOTS - 1)];
}

static void forget_known_queues(struct qmgr_store *st)
{
	for (size_t i = 0; st->known_queues && i < KNOWN_QUEUE_SLOTS; i++) {
		free(st->known_queues[i]);
		st->known_queues[i] = NULL;
	}
}

/* ---- errors ------------------------------------------------------------- */

static void on_db_error(const DB_ENV *env, const char *prefix, const char *msg)
{
	log_warning("queue database: %s", msg);
}

/* Turns a Berkeley DB return code into a status, noting a panic. */
static enum qmgr_store_status db_status(struct qmgr_store *st, int ret)
{
	if (ret == 0)
		return QMGR_STORE_OK;
	if (ret == DB_RUNRECOVERY)
		st->broken = true;
	return ret == ENOSPC || ret == EDQUOT ? QMGR_STORE_NOSPACE : QMGR_STORE_FAILED;
}

static enum qmgr_store_status db_fail(struct qmgr_store *st, int ret, struct buf *err, const char *what)
{
	buf_printf(err, "%s: %s", what, db_strerror(ret));
	return db_status(st, ret);
}

bool qmgr_store_broken(const struct qmgr_store *st)
{
	return st->broken;
}

static void corrupt(struct buf *err, enum qmgr_table t, const DBT *key, const struct buf *why)
{
	buf_printf(err, "corrupt record in %s, key ", table_files[t]);
	qmgr_key_describe(err, key->data, key->size);
	buf_printf(err, ": %s", buf_cstr(why));
}

/* ---- opening ------------------------------------------------------------ */

static bool make_dir(const char *dir, struct buf *err)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		buf_printf(err, "cannot create %s: %s", dir, strerror(errno));
		return false;
	}
	return true;
}

/* One qmgr per queue: recovery beside a running qmgr would wreck it. */
static int lock_dir(const char *dir, struct buf *err)
{
	char *path = mem_asprintf("%s/qmgr.lock", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		buf_printf(err, "cannot open %s: %s", path, strerror(errno));
	else if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		buf_printf(err, "the queue in %s is in use by another process (%s)", dir,
		           errno == EWOULDBLOCK ? "a running qmgr?" : strerror(errno));
		close(fd);
		fd = -1;
	}
	free(path);
	return fd;
}

static int configure_env(DB_ENV *env)
{
	int ret;
	env->set_errcall(env, on_db_error);
	if ((ret = env->set_flags(env, DB_TXN_WRITE_NOSYNC, 1)) != 0 ||
	    (ret = env->set_cachesize(env, 0, CACHE_BYTES, 1)) != 0 ||
	    (ret = env->set_lg_bsize(env, LOG_BUFFER_BYTES)) != 0 || (ret = env->set_lg_max(env, LOG_FILE_BYTES)) != 0)
		return ret;
	/* Log files are not zero-filled by Berkeley DB (DB_LOG_ZERO): it
	 * would write lg_max bytes of zeros with pwrite in the committing
	 * thread, the event loop, each time a file fills: a third of qmgr's
	 * CPU and its worst latencies.  The daemon makes the next file ahead
	 * in a thread of its own instead (qmgr_logahead.c).  Old log files
	 * are removed by checkpoints (qmgr_store_checkpoint), not
	 * DB_LOG_AUTO_REMOVE: the log holds segment writes until the
	 * segments are synced. */
	return qmgr_seglog_configure(env);
}

static int open_env(struct qmgr_store *st, enum qmgr_open_mode mode)
{
	struct buf why = BUF_INIT;
	if (!qmgr_loghash_check(&why))
		log_warning("%s", buf_cstr(&why));
	buf_free(&why);
	int ret = db_env_create(&st->env, 0);
	if (ret != 0)
		return ret;
	if ((ret = configure_env(st->env)) != 0)
		return ret;
	/* No lock subsystem (DB_INIT_LOCK) and no mutexes (DB_THREAD): the
	 * queue is private to this process (DB_PRIVATE, and the lock file),
	 * and only the event loop calls Berkeley DB: its reads and writes,
	 * its flushes, and the Berkeley DB steps of checkpoints.  Its write
	 * transactions never overlap (begin() refuses a second one).  The
	 * threads beside it sync files by their own descriptors (the flush
	 * thread, the checkpoint's segment sync) and learn the log's end from
	 * what the loop last read (qmgr_store_note_log_end).  Locking cost
	 * qmgr about 7 % of its CPU, the mutexes about as much again. */
	uint32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_MPOOL | DB_PRIVATE;
	flags |= mode == QMGR_OPEN_CATASTROPHIC ? DB_RECOVER_FATAL : DB_RECOVER;
	return st->env->open(st->env, st->dir, flags, 0600);
}

static int open_tables(struct qmgr_store *st)
{
	for (int t = 0; t < QMGR_TABLE_COUNT; t++) {
		int ret = db_create(&st->db[t], st->env, 0);
		if (ret != 0)
			return ret;
		if ((ret = st->db[t]->set_pagesize(st->db[t], TABLE_PAGE_BYTES)) != 0)
			return ret;
		ret =
		    st->db[t]->open(st->db[t], NULL, table_files[t], NULL, DB_BTREE, DB_CREATE | DB_AUTO_COMMIT, 0600);
		if (ret != 0)
			return ret;
	}
	return 0;
}

/* meta values are 64-bit big-endian numbers. */
static int meta_get(struct qmgr_store *st, DB_TXN *txn, const char *name, uint64_t *value, bool *found, struct buf *err)
{
	DBT key = {.data = (void *)name, .size = (u_int32_t)strlen(name)};
	/* The environment is free-threaded, so Berkeley DB insists that
	 * returned data goes to memory we own. */
	unsigned char bytes[8];
	DBT val = {.data = bytes, .ulen = sizeof(bytes), .flags = DB_DBT_USERMEM};
	int ret = st->db[QMGR_TABLE_META]->get(st->db[QMGR_TABLE_META], txn, &key, &val, 0);
	*found = ret == 0;
	*value = 0;
	if (ret == DB_NOTFOUND)
		return 0;
	if (ret != 0 && ret != DB_BUFFER_SMALL) {
		buf_printf(err, "cannot read %s: %s", name, db_strerror(ret));
		return ret;
	}
	if (ret == DB_BUFFER_SMALL || val.size != 8) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "value of %u bytes, expected 8", val.size);
		corrupt(err, QMGR_TABLE_META, &key, &why);
		buf_free(&why);
		return EINVAL;
	}
	*value = qmgr_key_seq_value(val.data, val.size);
	return 0;
}

static int meta_put(struct qmgr_store *st, DB_TXN *txn, const char *name, uint64_t value)
{
	struct buf v = BUF_INIT;
	qmgr_key_seq(&v, value);
	DBT key = {.data = (void *)name, .size = (u_int32_t)strlen(name)};
	DBT val = {.data = v.data, .size = (u_int32_t)v.len};
	int ret = st->db[QMGR_TABLE_META]->put(st->db[QMGR_TABLE_META], txn, &key, &val, 0);
	buf_free(&v);
	return ret;
}

/* A new queue gets the schema version; an old one must have ours. */
static bool check_schema(struct qmgr_store *st, struct buf *err)
{
	uint64_t version, last_qid;
	bool found, qid_found;
	if (meta_get(st, NULL, META_SCHEMA, &version, &found, err) != 0)
		return false;
	if (!found) {
		int ret = meta_put(st, NULL, META_SCHEMA, SCHEMA_VERSION);
		if (ret != 0) {
			buf_printf(err, "cannot write the schema version: %s", db_strerror(ret));
			return false;
		}
	} else if (version < SCHEMA_VERSION_OLDEST || version > SCHEMA_VERSION) {
		buf_printf(err, "the queue in %s has schema version %llu; this qmgr knows versions %d to %d", st->dir,
		           (unsigned long long)version, SCHEMA_VERSION_OLDEST, SCHEMA_VERSION);
		return false;
	} else if (version < SCHEMA_VERSION) {
		int ret = meta_put(st, NULL, META_SCHEMA, SCHEMA_VERSION);
		if (ret != 0) {
			buf_printf(err, "cannot write the schema version: %s", db_strerror(ret));
			return false;
		}
	}
	if (meta_get(st, NULL, META_LAST_QID, &last_qid, &qid_found, err) != 0)
		return false;
	st->last_qid = st->qid_reserved = last_qid;
	return true;
}

/* The numbering goes on after the last record in the outbox or, when
 * confirmations emptied it, from outbox_next in meta.db, which each
 * confirming transaction brings up to date (confirm_in). */
static bool load_outbox_next(struct qmgr_store *st, struct buf *err)
{
	bool found;
	uint64_t saved;
	if (meta_get(st, NULL, META_OUTBOX_NEXT, &saved, &found, err) != 0)
		return false;
	st->outbox_saved = found ? saved : 0;
	st->outbox_next = found ? saved : 1;
	DBC *cur;
	DB *db = st->db[QMGR_TABLE_OUTBOX];
	int ret = db->cursor(db, NULL, &cur, 0);
	if (ret != 0) {
		buf_printf(err, "cannot read the outbox: %s", db_strerror(ret));
		return false;
	}
	DBT key = {.flags = DB_DBT_MALLOC}, val = {.flags = DB_DBT_MALLOC | DB_DBT_PARTIAL};
	ret = cur->get(cur, &key, &val, DB_LAST);
	if (ret == 0 && qmgr_key_seq_value(key.data, key.size) >= st->outbox_next)
		st->outbox_next = qmgr_key_seq_value(key.data, key.size) + 1;
	free(key.data);
	free(val.data);
	cur->close(cur);
	if (ret != 0 && ret != DB_NOTFOUND) {
		buf_printf(err, "cannot read the outbox: %s", db_strerror(ret));
		return false;
	}
	return true;
}

static bool is_ref_key(const DBT *key)
{
	return key->size == QMGR_QID_LEN + 4 &&
	       qmgr_key_seq_value((const char *)key->data + QMGR_QID_LEN, 4) == QMGR_BODY_REF_CHUNK;
}

/* Moves a cursor on bodies.db to the next reference record, from key on
 * (DB_SET_RANGE) or after the current one (DB_NEXT): a message's chunks
 * are skipped whole, and only the start of each value is read. */
static int next_ref(DBC *cur, DBT *key, DBT *val, uint32_t how)
{
	int ret = cur->get(cur, key, val, how);
	while (ret == 0 && !is_ref_key(key)) {
		if (key->size != QMGR_QID_LEN + 4) /* not ours: step over it */
			ret = cur->get(cur, key, val, DB_NEXT);
		else {
			struct buf k = BUF_INIT;
			char qid[QMGR_QID_SIZE];
			memcpy(qid, key->data, QMGR_QID_LEN);
			qid[QMGR_QID_LEN] = '\0';
			qmgr_key_body(&k, qid, QMGR_BODY_REF_CHUNK);
			free(key->data);
			key->data = buf_detach(&k);
			key->size = QMGR_QID_LEN + 4;
			ret = cur->get(cur, key, val, DB_SET_RANGE);
		}
	}
	return ret;
}

typedef bool (*ref_fn)(void *ctx, const DBT *key, const struct qmgr_body_ref *ref);

/* A table that holds body references: how many bytes at the start of a
 * value hold one, how a cursor steps to the next record that may, and
 * how the reference is read from those bytes. */
struct ref_source {
	enum qmgr_table table;
	uint32_t head;
	int (*step)(DBC *cur, DBT *key, DBT *val, uint32_t how);
	bool (*ref_of)(const void *v, size_t len, struct qmgr_body_ref *ref);
};

static int next_record(DBC *cur, DBT *key, DBT *val, uint32_t how)
{
	return cur->get(cur, key, val, how);
}

/* bodies.db's reference records (older queues' messages), and the
 * records of messages.db that start with one. */
static const struct ref_source bodies_refs = {QMGR_TABLE_BODIES, QMGR_BODY_REF_SIZE, next_ref, qmgr_body_ref_decode};
static const struct ref_source message_refs = {QMGR_TABLE_MESSAGES, QMGR_MESSAGE_REF_LEN, next_record,
                                               qmgr_record_message_ref};

/* Calls fn for each reference of src's table, from key from on (all of
 * them when from is empty), until fn returns false; only the first bytes
 * of each value are read.  stopped_at, when not NULL, gets the key fn
 * stopped at, or nothing at the table's end. */
static bool walk_refs(struct qmgr_store *st, const struct ref_source *src, const struct buf *from, ref_fn fn,
                      void *ctx, struct buf *stopped_at, struct buf *err)
{
	DB *db = st->db[src->table];
	DBC *cur;
	int ret = db->cursor(db, NULL, &cur, 0);
	if (ret != 0) {
		db_fail(st, ret, err, "cannot read the body references");
		return false;
	}
	DBT key = {.flags = DB_DBT_REALLOC}, val = {.flags = DB_DBT_REALLOC | DB_DBT_PARTIAL, .dlen = src->head};
	uint32_t how = DB_FIRST;
	if (from && from->len > 0) {
		key.data = mem_memdup(from->data, from->len);
		key.size = (u_int32_t)from->len;
		how = DB_SET_RANGE;
	}
	struct qmgr_body_ref ref;
	for (ret = src->step(cur, &key, &val, how); ret == 0; ret = src->step(cur, &key, &val, DB_NEXT))
		if (src->ref_of(val.data, val.size, &ref) && !fn(ctx, &key, &ref))
			break;
	if (stopped_at) {
		buf_reset(stopped_at);
		if (ret == 0)
			buf_append(stopped_at, key.data, key.size);
	}
	free(key.data);
	free(val.data);
	cur->close(cur);
	if (ret != 0 && ret != DB_NOTFOUND) {
		db_fail(st, ret, err, "cannot read the body references");
		return false;
	}
	return true;
}

static bool count_ref(void *ctx, const DBT *key, const struct qmgr_body_ref *ref)
{
	struct qmgr_store *st = ctx;
	qmgr_bodies_count(st->bodies, ref->segment);
	return true;
}

/* Cursor walks share this: fn gets each key and value in order from
 * start (NULL: the first record) until it returns false. */
typedef bool (*walk_fn)(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed);
static bool walk(struct qmgr_store *st, enum qmgr_table t, const struct buf *start, walk_fn fn, void *ctx,
                 struct buf *err);
static bool outbox_ref(uint64_t last, const DBT *val, struct qmgr_body_ref *ref);

static bool count_outbox_ref(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct qmgr_store *st = ctx;
	struct qmgr_body_ref ref;
	if (outbox_ref(qmgr_key_seq_value(key->data, key->size), val, &ref))
		qmgr_bodies_count(st->bodies, ref.segment);
	return true;
}

/* Counts the references of each segment, bodies' and accounting
 * records' (qmgr_bodies_scan then removes the segment files that nothing
 * names, left by a crash). */
static bool count_refs(struct qmgr_store *st, struct buf *err)
{
	return walk_refs(st, &bodies_refs, NULL, count_ref, st, NULL, err) &&
	       walk_refs(st, &message_refs, NULL, count_ref, st, NULL, err) &&
	       walk(st, QMGR_TABLE_OUTBOX, NULL, count_outbox_ref, st, err);
}

/* A segment write goes into the log too; false with errno set. */
static bool log_segment_write(void *ctx, uint64_t segment, uint64_t offset, const void *data, size_t len,
                              struct buf *err)
{
	struct qmgr_store *st = ctx;
	int ret = qmgr_seglog_write(st->env, segment, offset, data, len);
	if (ret == 0)
		return true;
	db_fail(st, ret, err, "cannot log a body segment write");
	errno = ret > 0 ? ret : EIO;
	return false;
}

/* After the scan: what a crash lost of the segment writes the log holds
 * is written back before anything reads a segment. */
static bool open_bodies(struct qmgr_store *st, struct buf *err)
{
	st->bodies = qmgr_bodies_new(st->dir, err);
	if (!st->bodies || !count_refs(st, err) || !qmgr_bodies_scan(st->bodies, time(NULL), err))
		return false;
	int ret = qmgr_seglog_restore(st->env, st->bodies, err);
	if (ret != 0) {
		if (err->len == 0)
			db_fail(st, ret, err, "cannot restore the body segments from the queue log");
		return false;
	}
	qmgr_bodies_set_log(st->bodies, log_segment_write, st);
	return true;
}

/* ---- the log's end, for the threads beside the loop ---------------------- */

void qmgr_store_note_log_end(struct qmgr_store *st)
{
	DB_LSN end;
	if (qmgr_seglog_end(st->env, &end) == 0)
		atomic_store_explicit(&st->log_end, (uint64_t)end.file << 32 | end.offset, memory_order_release);
}

static bool noted_log_end(struct qmgr_store *st, uint32_t *number, uint64_t *offset)
{
	uint64_t end = atomic_load_explicit(&st->log_end, memory_order_acquire);
	*number = (uint32_t)(end >> 32);
	*offset = end & UINT32_MAX;
	return end != 0;
}

/* The log file of the noted end (0 before the first note). */
static uint32_t noted_log_file(struct qmgr_store *st)
{
	return (uint32_t)(atomic_load_explicit(&st->log_end, memory_order_acquire) >> 32);
}

struct qmgr_store *qmgr_store_open(const char *dir, enum qmgr_open_mode mode, struct buf *err)
{
	if (!make_dir(dir, err))
		return NULL;
	struct qmgr_store *st = mem_zalloc(sizeof(*st));
	st->records_wanted = ~0u;
	st->log_fd = -1;
	st->dir = mem_strdup(dir);
	if ((st->lock_fd = lock_dir(dir, err)) < 0) {
		free(st->dir);
		free(st);
		return NULL;
	}
	int ret = open_env(st, mode);
	if (ret == 0)
		ret = open_tables(st);
	if (ret != 0) {
		buf_printf(err, "cannot open the queue in %s: %s; if it is damaged, " RECOVER_HINT, dir,
		           db_strerror(ret));
		qmgr_store_close(st);
		return NULL;
	}
	if (!check_schema(st, err) || !load_outbox_next(st, err)) {
		buf_puts(err, "; if the queue is damaged, " RECOVER_HINT);
		qmgr_store_close(st);
		return NULL;
	}
	if (!open_bodies(st, err)) {
		qmgr_store_close(st);
		return NULL;
	}
	qmgr_store_note_log_end(st);
	atomic_store(&st->unsynced_from, noted_log_file(st));
	return st;
}

void qmgr_store_close(struct qmgr_store *st)
{
	if (st == NULL)
		return;
	qmgr_logahead_stop(st->logahead);
	if (st->env && !st->broken) {
		struct buf err = BUF_INIT;
		/* an empty active segment goes once the checkpoint is durable */
		if (st->bodies)
			qmgr_bodies_retire(st->bodies, time(NULL));
		if (!qmgr_store_checkpoint(st, &err))
			log_warning("closing the queue: %s", buf_cstr(&err));
		buf_free(&err);
	}
	for (int t = 0; t < QMGR_TABLE_COUNT; t++) {
		if (st->db[t])
			st->db[t]->close(st->db[t], 0);
	}
	if (st->env)
		st->env->close(st->env, 0);
	if (st->lock_fd >= 0)
		close(st->lock_fd);
	if (st->log_fd >= 0)
		close(st->log_fd);
	qmgr_bodies_free(st->bodies);
	buf_free(&st->sweep_resume);
	buf_free(&st->sweep_resume_msgs);
	free(st->done_hints);
	forget_known_queues(st);
	free(st->known_queues);
	free(st->dir);
	free(st);
}

/* Bodies before the references to them: a small segment write is in
 * the log ahead of its commit, a bigger one makes this flush sync the
 * segments first, so a durable commit never names a body only the page
 * cache holds.  Segments freed before the flush started are unlinked
 * after it: the commits that freed them are durable by then. */
bool qmgr_store_flush(struct qmgr_store *st, struct buf *err)
{
	uint64_t freed = 0;
	if (st->bodies && !qmgr_bodies_sync(st->bodies, false, &freed, err))
		return false;
	int ret = st->env->log_flush(st->env, NULL);
	if (ret != 0) {
		db_fail(st, ret, err, "cannot flush the queue log");
		return false;
	}
	qmgr_store_note_log_end(st);
	atomic_store_explicit(&st->unsynced_from, noted_log_file(st), memory_order_relaxed);
	if (st->bodies)
		qmgr_bodies_unlink_freed(st->bodies, freed);
	return true;
}

/* ---- the log's files synced without Berkeley DB ------------------------- */

/* Log file `number`: the one kept open (the newest), or opened for this
 * sync alone.  A file older than last that is gone was removed after a
 * checkpoint, which flushed the whole log first: nothing to do. */
static bool sync_log_file(struct qmgr_store *st, uint32_t number, uint32_t last, struct buf *err)
{
	int fd = number == st->log_fd_number ? st->log_fd : -1;
	if (fd < 0) {
		char *path = qmgr_log_file_path(st->dir, number);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 && !(errno == ENOENT && number < last))
			buf_printf(err, "cannot open %s: %s", path, strerror(errno));
		free(path);
		if (fd < 0)
			return err->len == 0;
		if (number == last) {
			if (st->log_fd >= 0)
				close(st->log_fd);
			st->log_fd = fd;
			st->log_fd_number = number;
		}
	}
	bool ok = fdatasync(fd) == 0;
	if (!ok)
		buf_printf(err, "cannot sync the queue log file %" PRIu32 ": %s", number, strerror(errno));
	if (fd != st->log_fd)
		close(fd);
	return ok;
}

bool qmgr_store_flush_files(struct qmgr_store *st, struct buf *err)
{
	uint64_t freed = 0;
	if (st->bodies && !qmgr_bodies_sync(st->bodies, false, &freed, err))
		return false;
	uint32_t last = noted_log_file(st);
	if (last == 0) {
		buf_puts(err, "the queue log's end is not known yet");
		return false;
	}
	uint32_t first = atomic_load_explicit(&st->unsynced_from, memory_order_relaxed);
	if (first == 0 || first > last)
		first = last;
	for (uint32_t n = first; n <= last; n++)
		if (!sync_log_file(st, n, last, err))
			return false;
	atomic_store_explicit(&st->unsynced_from, last, memory_order_relaxed);
	if (st->bodies)
		qmgr_bodies_unlink_freed(st->bodies, freed);
	return true;
}

/* A checkpoint flushes the log too, so it serves idle queues the same
 * way.  Every segment is synced first, and the log says so ("synced"
 * up to where the log ended before the sync began: seglog.c); log files
 * below that point and the checkpoint go.  The segments' sync, the long
 * part, touches no Berkeley DB handle, so the daemon runs it on a thread
 * between the loop's begin and end. */
bool qmgr_store_checkpoint_begin(struct qmgr_store *st, struct qmgr_checkpoint *ck, struct buf *err)
{
	DB_LSN end;
	int ret = qmgr_seglog_end(st->env, &end);
	if (ret != 0)
		return db_fail(st, ret, err, "cannot read the queue log's end") == QMGR_STORE_OK;
	ck->end_file = end.file;
	ck->end_offset = end.offset;
	ck->freed = 0;
	ck->synced = ck->made = false;
	ck->old_logs = NULL;
	buf_reset(&ck->err);
	return true;
}

void qmgr_store_checkpoint_sync(struct qmgr_store *st, struct qmgr_checkpoint *ck)
{
	ck->synced = st->bodies == NULL || qmgr_bodies_sync(st->bodies, true, &ck->freed, &ck->err);
}

bool qmgr_store_checkpoint_end(struct qmgr_store *st, struct qmgr_checkpoint *ck, struct buf *err)
{
	DB_LSN end = {.file = ck->end_file, .offset = ck->end_offset};
	int ret;
	if (!ck->synced)
		buf_append(err, ck->err.data, ck->err.len);
	if (ck->synced && (ret = qmgr_seglog_synced(st->env, &end)) != 0)
		return db_fail(st, ret, err, "cannot log the segments' sync") == QMGR_STORE_OK;
	ret = st->env->txn_checkpoint(st->env, 0, 0, 0);
	if (ret != 0) {
		buf_reset(err);
		db_fail(st, ret, err, "queue checkpoint failed");
		return false;
	}
	qmgr_store_note_log_end(st);
	if (!ck->synced)
		return false;
	st->checkpoint_file = end.file;
	ck->made = true;
	if ((ret = qmgr_seglog_old_files(st->env, end.file, &ck->old_logs)) != 0)
		return db_fail(st, ret, err, "cannot list the queue's old log files") == QMGR_STORE_OK;
	return true;
}

/* Unlinking old files takes a while: 64 log files of 8 MB took 100–260 ms
 * under load. */
void qmgr_store_checkpoint_remove(struct qmgr_store *st, struct qmgr_checkpoint *ck)
{
	if (ck->made && st->bodies)
		qmgr_bodies_unlink_freed(st->bodies, ck->freed);
	qmgr_seglog_remove(ck->old_logs);
	ck->old_logs = NULL;
	ck->made = false;
}

bool qmgr_store_checkpoint(struct qmgr_store *st, struct buf *err)
{
	struct qmgr_checkpoint ck = {.err = BUF_INIT};
	bool ok = qmgr_store_checkpoint_begin(st, &ck, err);
	if (ok) {
		qmgr_store_checkpoint_sync(st, &ck);
		ok = qmgr_store_checkpoint_end(st, &ck, err);
		qmgr_store_checkpoint_remove(st, &ck);
	}
	buf_free(&ck.err);
	return ok;
}

/* ---- writing ------------------------------------------------------------ */

static int put_buf(struct qmgr_store *st, DB_TXN *txn, enum qmgr_table t, const struct buf *k, const void *v,
                   size_t vlen)
{
	DBT key = {.data = k->data, .size = (u_int32_t)k->len};
	DBT val = {.data = (void *)v, .size = (u_int32_t)vlen};
	return st->db[t]->put(st->db[t], txn, &key, &val, 0);
}

static int del_buf(struct qmgr_store *st, DB_TXN *txn, enum qmgr_table t, const struct buf *k)
{
	DBT key = {.data = k->data, .size = (u_int32_t)k->len};
	int ret = st->db[t]->del(st->db[t], txn, &key, 0);
	return ret == DB_NOTFOUND ? 0 : ret;
}

/* Everything one transaction needs on the side. */
struct write_ctx {
	struct qmgr_store *st;
	DB_TXN *txn;
	struct buf key, val;
	uint64_t outbox_seq; /* the next outbox sequence number */
	/* the accounting records made so far, each a u32 length and the
	 * record: one outbox entry once the transaction ends */
	struct buf outbox_batch;
	uint32_t outbox_count;
	int64_t now;
	/* segments gaining or losing a reference, counted once committed */
	uint64_t *seg_added, *seg_removed;
	size_t nadded, nremoved;
	uint64_t qid_reserve; /* written to meta.db in this transaction (0: none) */
	uint64_t last_id;     /* the last queue ID given, in this transaction too */
	/* done prefixes read in this transaction, kept once it has committed */
	struct done_hint *hints;
	size_t nhints;
};

static void write_ctx_free(struct write_ctx *w)
{
	buf_free(&w->key);
	buf_free(&w->val);
	buf_free(&w->outbox_batch);
	free(w->seg_added);
	free(w->seg_removed);
	free(w->hints);
}

/* The slot that holds qid's done prefix; with make, one for it (taking
 * an empty slot among its ways, else the first: a cache may forget). */
static struct done_hint *done_hint(struct qmgr_store *st, const char *qid, bool make)
{
	if (st->done_hints == NULL) {
		if (!make)
			return NULL;
		st->done_hints = mem_zalloc(DONE_HINT_SLOTS * sizeof(*st->done_hints));
	}
	size_t home = qmgr_name_hash(qid) & (DONE_HINT_SLOTS - 1);
	struct done_hint *empty = NULL;
	for (size_t i = 0; i < DONE_HINT_WAYS; i++) {
		struct done_hint *d = &st->done_hints[(home + i) & (DONE_HINT_SLOTS - 1)];
		if (strcmp(d->qid, qid) == 0)
			return d;
		if (empty == NULL && d->qid[0] == '\0')
			empty = d;
	}
	if (!make)
		return NULL;
	struct done_hint *d = empty ? empty : &st->done_hints[home];
	snprintf(d->qid, sizeof(d->qid), "%s", qid);
	d->prefix = 0;
	return d;
}

static void keep_done_hints(struct write_ctx *w)
{
	for (size_t i = 0; i < w->nhints; i++) {
		struct done_hint *d = done_hint(w->st, w->hints[i].qid, true);
		if (w->hints[i].prefix > d->prefix)
			d->prefix = w->hints[i].prefix;
	}
}

static void note_segment(uint64_t **list, size_t *n, uint64_t segment)
{
	*list = mem_reallocarray(*list, *n + 1, sizeof(**list));
	(*list)[(*n)++] = segment;
}

static void count_segments(struct write_ctx *w)
{
	for (size_t i = 0; i < w->nadded; i++)
		qmgr_bodies_referenced(w->st->bodies, w->seg_added[i]);
	for (size_t i = 0; i < w->nremoved; i++)
		qmgr_bodies_released(w->st->bodies, w->seg_removed[i]);
}

static enum qmgr_store_status begin(struct write_ctx *w, struct buf *err)
{
	if (w->st->txn_open) {
		buf_puts(err, "internal error: a queue transaction began inside another");
		return QMGR_STORE_FAILED;
	}
	int ret = w->st->env->txn_begin(w->st->env, NULL, &w->txn, 0);
	if (ret != 0)
		return db_fail(w->st, ret, err, "cannot begin a queue transaction");
	w->st->txn_open = true;
	/* the event loop's transactions never overlap: the numbers are ours */
	w->outbox_seq = w->st->outbox_next;
	w->last_id = w->st->last_qid;
	return QMGR_STORE_OK;
}

static int put_outbox_batch(struct write_ctx *w);

/* Commits (not flushed) or, after a failed write, aborts (and then
 * forgets the queues known, whose rows the transaction may have made). */
static enum qmgr_store_status finish(struct write_ctx *w, int ret, struct buf *err)
{
	w->st->txn_open = false;
	if (ret == 0 && w->outbox_count > 0)
		ret = put_outbox_batch(w);
	/* what the transaction appended to a segment reaches the file
	 * before the commit's log records do */
	if (ret == 0 && w->st->bodies && !qmgr_bodies_write_pending(w->st->bodies, err))
		ret = errno ? errno : EIO;
	if (ret != 0) {
		if (err->len == 0)
			buf_printf(err, "queue write failed: %s", db_strerror(ret));
		w->txn->abort(w->txn);
		forget_known_queues(w->st);
		return db_status(w->st, ret);
	}
	ret = w->txn->commit(w->txn, 0);
	if (ret != 0)
		return db_fail(w->st, ret, err, "queue commit failed");
	w->st->outbox_next = w->outbox_seq;
	count_segments(w);
	keep_done_hints(w);
	return QMGR_STORE_OK;
}

void qmgr_store_want_records(struct qmgr_store *st, unsigned types)
{
	st->records_wanted = types;
}

static bool record_wanted(const struct qmgr_store *st, const char *type)
{
	enum acct_type t;
	return !acct_type_parse(type, &t) || (st->records_wanted & (1u << t)) != 0;
}

/* An accounting record gets its sequence number now and joins the
 * transaction's other records; a type no accounting file holds is not
 * made at all. */
static int append_outbox(struct write_ctx *w, const char *type, const char *qid, size_t index,
                         const struct ipc_msg *envelope, const struct qmgr_rcpt *r, const struct ipc_msg *detail)
{
	if (!record_wanted(w->st, type))
		return 0;
	qmgr_record_outbox(&w->val, type, qid, index, w->now, envelope, r, detail);
	unsigned char length[OUTBOX_LENGTH_BYTES];
	qmgr_be_put(length, w->val.len, OUTBOX_LENGTH_BYTES);
	buf_append(&w->outbox_batch, length, sizeof(length));
	buf_append(&w->outbox_batch, w->val.data, w->val.len);
	w->outbox_count++;
	w->outbox_seq++;
	return 0;
}

/* The transaction's records go into the active body segment together,
 * like a body, and outbox.db keeps one reference to them under the last
 * one's sequence number: one entry to add, read and delete for all of
 * them, and the log carries 45 bytes for them instead of the records,
 * twice (added, then deleted with its undo data). */
static int put_outbox_batch(struct write_ctx *w)
{
	struct qmgr_body_ref ref;
	struct buf err = BUF_INIT;
	bool appended =
	    qmgr_bodies_append(w->st->bodies, w->outbox_batch.data, w->outbox_batch.len, time(NULL), &ref, &err);
	int saved = errno;
	uint64_t last = w->outbox_seq - 1, first = w->outbox_seq - w->outbox_count;
	if (!appended)
		log_error("outbox records %" PRIu64 "-%" PRIu64 ": %s", first, last, buf_cstr(&err));
	buf_free(&err);
	if (!appended)
		return saved ? saved : EIO;
	unsigned char v[OUTBOX_BATCH_SIZE] = {OUTBOX_BATCH_MARK};
	qmgr_be_put(v + 1, first, 8);
	qmgr_be_put(v + 9, w->outbox_count, 4);
	qmgr_body_ref_encode(&ref, v + 13);
	qmgr_key_seq(&w->key, last);
	int ret = put_buf(w->st, w->txn, QMGR_TABLE_OUTBOX, &w->key, v, sizeof(v));
	if (ret == 0)
		note_segment(&w->seg_added, &w->nadded, ref.segment);
	return ret;
}

/* What an outbox.db entry under the sequence number last holds: the
 * records first .. last of a transaction (count in the segment, from
 * last - count + 1), one record in a segment, or (queues from before
 * segments held records, and "tq" records) the record itself, which
 * starts with an attribute's type letter.  False for the record itself:
 * there is no reference. */
struct outbox_entry {
	struct qmgr_body_ref ref;
	bool batch;
	uint64_t first;
	uint32_t count;
};

static bool outbox_entry(uint64_t last, const DBT *val, struct outbox_entry *e)
{
	const unsigned char *v = val->data;
	*e = (struct outbox_entry){.first = last, .count = 1};
	if (val->size == OUTBOX_REF_SIZE && v[0] == OUTBOX_REF_MARK)
		return qmgr_body_ref_decode(v + 1, val->size - 1, &e->ref);
	if (val->size != OUTBOX_BATCH_SIZE || v[0] != OUTBOX_BATCH_MARK)
		return false;
	e->batch = true;
	e->first = qmgr_be_get(v + 1, 8);
	e->count = (uint32_t)qmgr_be_get(v + 9, 4);
	return qmgr_body_ref_decode(v + 13, QMGR_BODY_REF_SIZE, &e->ref);
}

/* A batch's numbers fit its key: first within the count's range. */
static bool outbox_entry_sane(uint64_t last, const struct outbox_entry *e)
{
	return e->count >= 1 && e->count <= last && e->first > last - e->count && e->first <= last;
}

static bool outbox_ref(uint64_t last, const DBT *val, struct qmgr_body_ref *ref)
{
	struct outbox_entry e;
	if (!outbox_entry(last, val, &e))
		return false;
	*ref = e.ref;
	return true;
}

/* Creates the queue's row on its first recipient; a queue whose row is
 * known to exist costs no write. */
static int ensure_queue(struct write_ctx *w, const char *name)
{
	char **known = known_queue_slot(w->st, name);
	if (*known && strcmp(*known, name) == 0)
		return 0;
	struct qmgr_queue_state fresh = {0};
	qmgr_record_queue(&w->val, &fresh);
	DBT key = {.data = (void *)name, .size = (u_int32_t)strlen(name)};
	DBT val = {.data = w->val.data, .size = (u_int32_t)w->val.len};
	DB *db = w->st->db[QMGR_TABLE_QUEUES];
	int ret = db->put(db, w->txn, &key, &val, DB_NOOVERWRITE);
	if (ret != 0 && ret != DB_KEYEXIST)
		return ret;
	free(*known);
	*known = mem_strdup(name);
	return 0;
}

static bool due_state(enum qmgr_rcpt_state s)
{
	return s == QMGR_RCPT_PENDING || s == QMGR_RCPT_DEFERRED;
}

/* A due entry is the scheduler's way to a waiting recipient.  One in
 * flight has none while its job runs: its result, or the job's end
 * without one (qmgr_store_hold), decides what comes next, and after a
 * restart qmgr_store_hold_earlier gives it one. */
static int put_due(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_rcpt *r)
{
	qmgr_key_due(&w->key, r->queue, r->next_attempt, qid, index);
	return put_buf(w->st, w->txn, QMGR_TABLE_DUE, &w->key, "", 0);
}

/* Writes a recipient's record, over the one the cursor found is on
 * when not NULL, and its due entry when it waits. */
static int put_rcpt_at(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_rcpt *r, DBC *found)
{
	qmgr_key_rcpt(&w->key, qid, index);
	qmgr_record_rcpt(&w->val, r);
	int ret;
	if (found) {
		DBT key = {0}, val = {.data = w->val.data, .size = (u_int32_t)w->val.len};
		ret = found->put(found, &key, &val, DB_CURRENT);
	} else
		ret = put_buf(w->st, w->txn, QMGR_TABLE_RCPTS, &w->key, w->val.data, w->val.len);
	if (ret == 0 && due_state(r->state) && r->in_flight == 0)
		ret = put_due(w, qid, index, r);
	return ret;
}

static int put_rcpt(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_rcpt *r)
{
	return put_rcpt_at(w, qid, index, r, NULL);
}

/* The old form, still read: the body itself in 64 KB chunks. */
static int put_body_chunks(struct write_ctx *w, const char *qid, const void *data, size_t len)
{
	uint32_t chunk = 0;
	for (size_t off = 0; off < len; off += BODY_CHUNK, chunk++) {
		size_t n = len - off < BODY_CHUNK ? len - off : BODY_CHUNK;
		qmgr_key_body(&w->key, qid, chunk);
		int ret = put_buf(w->st, w->txn, QMGR_TABLE_BODIES, &w->key, (const char *)data + off, n);
		if (ret != 0)
			return ret;
	}
	return 0;
}

/* The body goes to a segment first; the message's record, written in
 * the same transaction, stores where (*stored false: an empty body, none). */
static int put_body(struct write_ctx *w, const struct buf *body, struct qmgr_body_ref *ref, bool *stored,
                    struct buf *err)
{
	*stored = false;
	if (body->len == 0)
		return 0;
	if (!qmgr_bodies_append(w->st->bodies, body->data, body->len, time(NULL), ref, err))
		return errno ? errno : EIO;
	note_segment(&w->seg_added, &w->nadded, ref->segment);
	*stored = true;
	return 0;
}

static uint64_t now_micros(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Writes the recipients, their queues and 'r' records; fills queue names
 * into a copy of each recipient.  A message's one recipient goes into
 * inside, for its message's record, instead of a record of its own. */
static int put_new_rcpts(struct write_ctx *w, const char *qid, const struct qmgr_incoming *in, struct buf *inside,
                         struct buf *err)
{
	const char *vmta = ipc_msg_str(&in->envelope, IPC_ATTR_VMTA);
	struct buf queue = BUF_INIT;
	int ret = 0;
	for (size_t i = 0; ret == 0 && i < in->nrcpt; i++) {
		if (!qmgr_queue_name(in->rcpts[i].address, vmta, &queue, err)) {
			ret = EINVAL;
			break;
		}
		struct qmgr_rcpt r = in->rcpts[i];
		r.queue = queue.data;
		r.state = QMGR_RCPT_PENDING;
		r.attempts = 0;
		/* due now, unless a fresh job holds it (in_flight, with its
		 * next_attempt: qmgr_sched_fresh_claim) */
		if (r.in_flight == 0)
			r.next_attempt = w->now;
		r.last_result = NULL;
		if (in->nrcpt == 1) {
			qmgr_record_rcpt(inside, &r);
			if (due_state(r.state) && r.in_flight == 0)
				ret = put_due(w, qid, i, &r);
		} else {
			ret = put_rcpt(w, qid, i, &r);
		}
		if (ret == 0)
			ret = ensure_queue(w, r.queue);
		if (ret == 0)
			ret = append_outbox(w, "r", qid, i, &in->envelope, &r, NULL);
	}
	buf_free(&queue);
	return ret;
}

/* The IDs given in a transaction, once it committed. */
static void note_new_qids(struct qmgr_store *st, const struct write_ctx *w)
{
	st->last_qid = w->last_id;
	if (w->qid_reserve > st->qid_reserved)
		st->qid_reserved = w->qid_reserve;
}

/* The writes of a new message, inside w's transaction; its ID becomes
 * w->last_id, and last_qid once committed. */
static int add_message_in(struct write_ctx *w, const struct qmgr_incoming *in, char qid[QMGR_QID_SIZE], struct buf *err)
{
	if (in->nrcpt == 0) {
		buf_puts(err, "a message without recipients");
		return EINVAL;
	}
	/* Past the last ID even if the clock went back.  meta.db holds an
	 * ID reserved ahead (QID_RESERVE_MICROS), written once in a while
	 * instead of with every message: after a restart IDs go on past it. */
	uint64_t id = now_micros();
	if (id <= w->last_id)
		id = w->last_id + 1;
	w->last_id = id;
	qmgr_qid_format(id, qid);
	int ret = 0;
	uint64_t reserved = w->qid_reserve > w->st->qid_reserved ? w->qid_reserve : w->st->qid_reserved;
	if (id > reserved) {
		w->qid_reserve = id + QID_RESERVE_MICROS;
		ret = meta_put(w->st, w->txn, META_LAST_QID, w->qid_reserve);
	}
	struct qmgr_body_ref ref;
	bool has_ref = false;
	if (ret == 0)
		ret = put_body(w, &in->body, &ref, &has_ref, err);
	struct buf inside = BUF_INIT;
	if (ret == 0)
		ret = put_new_rcpts(w, qid, in, &inside, err);
	if (ret == 0) {
		buf_reset(&w->key);
		buf_puts(&w->key, qid);
		qmgr_record_message(&w->val, qid, w->now, (int64_t)in->body.len, in->nrcpt, &in->envelope,
		                    has_ref ? &ref : NULL, in->nrcpt == 1 ? &inside : NULL);
		ret = put_buf(w->st, w->txn, QMGR_TABLE_MESSAGES, &w->key, w->val.data, w->val.len);
	}
	buf_free(&inside);
	return ret;
}

enum qmgr_store_status qmgr_store_add_messages(struct qmgr_store *st, struct qmgr_new_message *msgs, size_t n,
                                               int64_t now, struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	int ret = 0;
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = add_message_in(&w, msgs[i].in, msgs[i].qid, err);
	status = finish(&w, ret, err);
	if (status == QMGR_STORE_OK)
		note_new_qids(st, &w);
	write_ctx_free(&w);
	return status;
}

enum qmgr_store_status qmgr_store_add_message(struct qmgr_store *st, const struct qmgr_incoming *in, int64_t now,
                                              char qid[QMGR_QID_SIZE], struct buf *err)
{
	struct qmgr_new_message one = {.in = in};
	enum qmgr_store_status status = qmgr_store_add_messages(st, &one, 1, now, err);
	memcpy(qid, one.qid, QMGR_QID_SIZE);
	return status;
}

/* ---- reading ------------------------------------------------------------ */

/* val->data is allocated for the caller (DB_DBT_MALLOC): free it. */
static int get_raw(struct qmgr_store *st, DB_TXN *txn, enum qmgr_table t, const struct buf *k, DBT *val)
{
	DBT key = {.data = k->data, .size = (u_int32_t)k->len};
	memset(val, 0, sizeof(*val));
	val->flags = DB_DBT_MALLOC;
	return st->db[t]->get(st->db[t], txn, &key, val, 0);
}

/* Decodes a stored record into out, or says in err why not. */
typedef bool (*decode_fn)(const void *v, size_t len, void *out, struct buf *err);

/* Reads and decodes the record under k, leaving *at on it (NULL when it
 * is not found or on an error), so that a change to it finds it without
 * a second search; ret is a DB error, EINVAL for a corrupt record (err
 * names the key) or DB_NOTFOUND.  The value is read in the cursor's own
 * memory (no DB_THREAD: nothing to free). */
static int get_decoded_at(struct qmgr_store *st, DB_TXN *txn, enum qmgr_table t, const struct buf *k, decode_fn decode,
                          void *out, DBC **at, struct buf *err)
{
	*at = NULL;
	DB *db = st->db[t];
	DBC *c = NULL;
	int ret = db->cursor(db, txn, &c, 0);
	DBT key = {.data = k->data, .size = (u_int32_t)k->len}, val = {0};
	if (ret == 0)
		ret = c->get(c, &key, &val, DB_SET);
	if (ret != 0 && ret != DB_NOTFOUND)
		buf_printf(err, "cannot read %s: %s", table_files[t], db_strerror(ret));
	struct buf why = BUF_INIT;
	if (ret == 0 && !decode(val.data, val.size, out, &why)) {
		corrupt(err, t, &key, &why);
		ret = EINVAL;
	}
	buf_free(&why);
	if (ret == 0)
		*at = c;
	else if (c)
		c->close(c);
	return ret;
}

static void close_cursor(DBC **c)
{
	if (*c)
		(*c)->close(*c);
	*c = NULL;
}

/* get_decoded_at for a record only read. */
static int get_decoded(struct qmgr_store *st, DB_TXN *txn, enum qmgr_table t, const struct buf *k, decode_fn decode,
                       void *out, struct buf *err)
{
	DBC *at;
	int ret = get_decoded_at(st, txn, t, k, decode, out, &at, err);
	close_cursor(&at);
	return ret;
}

static bool decode_message(const void *v, size_t len, void *out, struct buf *err)
{
	return qmgr_record_message_decode(v, len, out, err);
}

static bool decode_rcpt(const void *v, size_t len, void *out, struct buf *err)
{
	return qmgr_record_rcpt_decode(v, len, out, err);
}

/* ---- where a recipient's record is ---------------------------------------- */

/* A message of one recipient keeps that recipient's record inside its
 * own (rcpt_inline): one record to put, read and delete instead of two.
 * Other messages' recipients have records of their own in recipients.db.
 * Either way a reader gets the recipient and where it is, to write it
 * back there. */
struct rcpt_at {
	DBC *cursor;            /* on the record the recipient is in, or NULL */
	bool in_message;        /* that record is its message's */
	struct ipc_msg message; /* in_message: the message's record, decoded */
};

static void rcpt_at_close(struct rcpt_at *at)
{
	close_cursor(&at->cursor);
	if (at->in_message)
		ipc_msg_free(&at->message);
	at->in_message = false;
}

/* The recipient inside the decoded message record m (which has one);
 * a damaged one is reported under the record's key, its queue ID. */
static int inline_rcpt(const struct ipc_msg *m, struct qmgr_rcpt *r, struct buf *err)
{
	size_t len;
	const void *v = ipc_msg_data(m, IPC_ATTR_RCPT_INLINE, &len);
	struct buf why = BUF_INIT;
	int ret = 0;
	if (!qmgr_record_rcpt_decode(v, len, r, &why)) {
		const char *qid = ipc_msg_str(m, IPC_ATTR_QUEUE_ID);
		DBT k = {.data = (void *)qid, .size = (u_int32_t)strlen(qid)};
		buf_puts(&why, " (the recipient inside the record)");
		corrupt(err, QMGR_TABLE_MESSAGES, &k, &why);
		ret = EINVAL;
	}
	buf_free(&why);
	r->in_message = ret == 0;
	return ret;
}

/* Reads recipient index of message qid where it is, leaving at on its
 * record; ret as get_decoded (DB_NOTFOUND: no such recipient). */
static int read_rcpt(struct qmgr_store *st, DB_TXN *txn, const char *qid, size_t index, struct qmgr_rcpt *r,
                     struct rcpt_at *at, struct buf *err)
{
	memset(at, 0, sizeof(*at));
	struct buf k = BUF_INIT;
	qmgr_key_rcpt(&k, qid, index);
	int ret = get_decoded_at(st, txn, QMGR_TABLE_RCPTS, &k, decode_rcpt, r, &at->cursor, err);
	if (ret == DB_NOTFOUND && index == 0) {
		buf_reset(&k);
		buf_puts(&k, qid);
		ret = get_decoded_at(st, txn, QMGR_TABLE_MESSAGES, &k, decode_message, &at->message, &at->cursor, err);
		if (ret == 0) {
			at->in_message = true;
			ret = ipc_msg_has(&at->message, IPC_ATTR_RCPT_INLINE) ? inline_rcpt(&at->message, r, err)
			                                                      : DB_NOTFOUND;
			if (ret != 0)
				rcpt_at_close(at);
		}
	}
	buf_free(&k);
	return ret;
}

/* The message's record m again, with r as the recipient inside it. */
static void record_message_with(struct buf *out, const struct ipc_msg *m, const struct qmgr_rcpt *r)
{
	struct buf inside = BUF_INIT;
	qmgr_record_rcpt(&inside, r);
	struct qmgr_body_ref ref;
	bool has_ref = qmgr_message_body_ref(m, &ref);
	qmgr_record_message(out, ipc_msg_str(m, IPC_ATTR_QUEUE_ID), ipc_msg_int(m, IPC_ATTR_RECEIVED),
	                    ipc_msg_int(m, IPC_ATTR_BODY_SIZE), 1, m, has_ref ? &ref : NULL, &inside);
	buf_free(&inside);
}

/* Writes a recipient back where read_rcpt (or update_rcpt) found it,
 * with its due entry when it waits. */
static int write_rcpt(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_rcpt *r,
                      const struct rcpt_at *at)
{
	if (!at->in_message)
		return put_rcpt_at(w, qid, index, r, at->cursor);
	record_message_with(&w->val, &at->message, r);
	DBT key = {0}, val = {.data = w->val.data, .size = (u_int32_t)w->val.len};
	int ret = at->cursor->put(at->cursor, &key, &val, DB_CURRENT);
	if (ret == 0 && due_state(r->state) && r->in_flight == 0)
		ret = put_due(w, qid, index, r);
	return ret;
}

static bool decode_queue(const void *v, size_t len, void *out, struct buf *err)
{
	return qmgr_record_queue_decode(v, len, out, err);
}

static bool found_or_error(int ret, bool *found, const char *what, const char *name, struct buf *err)
{
	*found = ret != DB_NOTFOUND;
	if (ret == DB_NOTFOUND)
		buf_printf(err, "no %s %s in the queue", what, name);
	return ret == 0;
}

bool qmgr_store_get_message(struct qmgr_store *st, const char *qid, struct ipc_msg *msg, bool *found, struct buf *err)
{
	struct buf k = BUF_INIT;
	buf_puts(&k, qid);
	int ret = get_decoded(st, NULL, QMGR_TABLE_MESSAGES, &k, decode_message, msg, err);
	buf_free(&k);
	return found_or_error(ret, found, "message", qid, err);
}

bool qmgr_store_get_rcpt(struct qmgr_store *st, const char *qid, size_t index, struct qmgr_rcpt *r, bool *found,
                         struct buf *err)
{
	struct rcpt_at at;
	int ret = read_rcpt(st, NULL, qid, index, r, &at, err);
	if (ret == 0)
		rcpt_at_close(&at);
	return found_or_error(ret, found, "recipient of", qid, err);
}

bool qmgr_store_get_queue(struct qmgr_store *st, const char *name, struct qmgr_queue_state *q, bool *found,
                          struct buf *err)
{
	struct buf k = BUF_INIT;
	buf_puts(&k, name);
	int ret = get_decoded(st, NULL, QMGR_TABLE_QUEUES, &k, decode_queue, q, err);
	buf_free(&k);
	return found_or_error(ret, found, "queue", name, err);
}

static bool walk(struct qmgr_store *st, enum qmgr_table t, const struct buf *start, walk_fn fn, void *ctx,
                 struct buf *err)
{
	DBC *cur;
	int ret = st->db[t]->cursor(st->db[t], NULL, &cur, 0);
	if (ret != 0) {
		db_fail(st, ret, err, "cannot read the queue");
		return false;
	}
	DBT key = {.flags = DB_DBT_REALLOC}, val = {.flags = DB_DBT_REALLOC};
	if (start) {
		key.data = mem_memdup(start->data, start->len);
		key.size = (u_int32_t)start->len;
	}
	bool failed = false;
	ret = cur->get(cur, &key, &val, start ? DB_SET_RANGE : DB_FIRST);
	while (ret == 0 && fn(ctx, &key, &val, err, &failed))
		ret = cur->get(cur, &key, &val, DB_NEXT);
	free(key.data);
	free(val.data);
	if (ret != 0 && ret != DB_NOTFOUND) {
		db_fail(st, ret, err, "cannot read the queue");
		failed = true;
	}
	cur->close(cur);
	return !failed;
}

struct body_walk {
	const char *qid;
	uint32_t next_chunk;
	struct buf *body;
	bool in_segment;
	struct qmgr_body_ref ref;
};

static bool body_corrupt(const DBT *key, struct buf *err, bool *failed, const char *why_text)
{
	struct buf why = BUF_INIT;
	buf_puts(&why, why_text);
	corrupt(err, QMGR_TABLE_BODIES, key, &why);
	buf_free(&why);
	*failed = true;
	return false;
}

/* A body is either chunks 0, 1, ... or one reference, whose key sorts
 * after any chunk. */
static bool body_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct body_walk *b = ctx;
	if (key->size != QMGR_QID_LEN + 4 || memcmp(key->data, b->qid, QMGR_QID_LEN) != 0)
		return false;
	uint64_t chunk = qmgr_key_seq_value((const char *)key->data + QMGR_QID_LEN, 4);
	if (chunk == QMGR_BODY_REF_CHUNK) {
		if (b->next_chunk != 0)
			return body_corrupt(key, err, failed, "a body both in chunks and in a segment");
		if (!qmgr_body_ref_decode(val->data, val->size, &b->ref))
			return body_corrupt(key, err, failed, "a segment reference of the wrong size");
		b->in_segment = true;
		return false;
	}
	if (chunk != b->next_chunk) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "body chunk %u is missing", b->next_chunk);
		corrupt(err, QMGR_TABLE_BODIES, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	b->next_chunk++;
	buf_append(b->body, val->data, val->size);
	return true;
}

static int record_ref(struct write_ctx *w, const char *qid, struct qmgr_body_ref *ref);

/* The body of a message whose record names it is read from its segment;
 * other bodies as bodies.db has them (a reference or chunks). */
bool qmgr_store_read_body(struct qmgr_store *st, const char *qid, struct buf *body, struct buf *err)
{
	buf_reset(body);
	struct write_ctx w = {.st = st};
	struct body_walk b = {.qid = qid, .body = body};
	int ret = record_ref(&w, qid, &b.ref);
	write_ctx_free(&w);
	if (ret == 0)
		return qmgr_bodies_read(st->bodies, qid, &b.ref, body, err);
	if (ret != DB_NOTFOUND) {
		db_fail(st, ret, err, "cannot read messages.db");
		return false;
	}
	struct buf start = BUF_INIT;
	qmgr_key_body(&start, qid, 0);
	bool ok = walk(st, QMGR_TABLE_BODIES, &start, body_step, &b, err);
	buf_free(&start);
	if (ok && b.in_segment)
		ok = qmgr_bodies_read(st->bodies, qid, &b.ref, body, err);
	return ok;
}

/* The reference record of a message, read in w's transaction (locked
 * for the update that follows); DB_NOTFOUND when its body is in chunks. */
static int get_ref(struct write_ctx *w, const char *qid, struct qmgr_body_ref *ref)
{
	DBT val;
	qmgr_key_body(&w->key, qid, QMGR_BODY_REF_CHUNK);
	int ret = get_raw(w->st, w->txn, QMGR_TABLE_BODIES, &w->key, &val);
	if (ret != 0)
		return ret;
	if (!qmgr_body_ref_decode(val.data, val.size, ref))
		ret = DB_NOTFOUND; /* read_body reports it */
	free(val.data);
	return ret;
}

/* The body reference a message's record holds; DB_NOTFOUND when it holds
 * none (or there is no such message). */
static int record_ref(struct write_ctx *w, const char *qid, struct qmgr_body_ref *ref)
{
	DBT val;
	buf_reset(&w->key);
	buf_puts(&w->key, qid);
	int ret = get_raw(w->st, w->txn, QMGR_TABLE_MESSAGES, &w->key, &val);
	if (ret != 0)
		return ret;
	bool held = qmgr_record_message_ref(val.data, val.size, ref);
	free(val.data);
	return held ? 0 : DB_NOTFOUND;
}

/* A message's body reference, wherever it is: in its record
 * (*in_record true) or, for messages of older queues, in bodies.db;
 * DB_NOTFOUND when there is none (no message, an empty body, or a body in
 * chunks). */
static int find_ref(struct write_ctx *w, const char *qid, struct qmgr_body_ref *ref, bool *in_record)
{
	int ret = record_ref(w, qid, ref);
	*in_record = ret == 0;
	return ret == DB_NOTFOUND ? get_ref(w, qid, ref) : ret;
}

bool qmgr_store_body_segment(struct qmgr_store *st, const char *qid, uint64_t *segment)
{
	struct write_ctx w = {.st = st};
	struct qmgr_body_ref ref;
	bool in_record;
	bool found = find_ref(&w, qid, &ref, &in_record) == 0;
	*segment = found ? ref.segment : 0;
	write_ctx_free(&w);
	return found;
}

char *qmgr_store_segment_path(const struct qmgr_store *st, uint64_t segment)
{
	return mem_asprintf("%s/bodies/%016" PRIX64, st->dir, segment);
}

static bool current_log_file(void *ctx, uint32_t *number, uint64_t *offset)
{
	return noted_log_end(ctx, number, offset);
}

bool qmgr_store_checkpoint_due(struct qmgr_store *st)
{
	DB_LSN end;
	return qmgr_seglog_end(st->env, &end) == 0 && end.file >= st->checkpoint_file + CHECKPOINT_LOG_FILES;
}

bool qmgr_store_prepare_files(struct qmgr_store *st, struct buf *err)
{
	if (!qmgr_bodies_start_preparing(st->bodies, err))
		return false;
	if (st->logahead == NULL)
		st->logahead = qmgr_logahead_start(st->dir, LOG_FILE_BYTES, current_log_file, st, err);
	return st->logahead != NULL;
}

size_t qmgr_store_spare_segments(struct qmgr_store *st)
{
	return qmgr_bodies_spares(st->bodies);
}

struct message_walk {
	qmgr_message_fn fn;
	void *ctx;
};

static bool message_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct message_walk *m = ctx;
	struct ipc_msg msg;
	struct buf why = BUF_INIT;
	bool ok = qmgr_record_message_decode(val->data, val->size, &msg, &why);
	if (ok && (key->size != QMGR_QID_LEN || memcmp(key->data, ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID), key->size))) {
		buf_puts(&why, "the key is not the record's queue id");
		ipc_msg_free(&msg);
		ok = false;
	}
	if (!ok) {
		corrupt(err, QMGR_TABLE_MESSAGES, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	bool more = m->fn(m->ctx, ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID), &msg);
	ipc_msg_free(&msg);
	return more;
}

bool qmgr_store_walk_messages(struct qmgr_store *st, qmgr_message_fn fn, void *ctx, struct buf *err)
{
	struct message_walk m = {fn, ctx};
	return walk(st, QMGR_TABLE_MESSAGES, NULL, message_step, &m, err);
}

struct outbox_walk {
	struct qmgr_store *st;
	uint64_t from; /* records before this one are passed over */
	qmgr_outbox_fn fn;
	void *ctx;
	struct buf records; /* read from their segment */
	bool more;          /* fn wants the next record */
};

/* Hands fn one stored record, decoded. */
static bool outbox_one(struct outbox_walk *o, uint64_t seq, const void *data, size_t len, struct buf *why)
{
	struct ipc_msg rec;
	if (!qmgr_record_outbox_decode(data, len, &rec, why))
		return false;
	o->more = o->fn(o->ctx, seq, &rec);
	ipc_msg_free(&rec);
	return true;
}

/* Hands fn a batch's records from o->from on, each a u32 length and the
 * record. */
static bool outbox_batch(struct outbox_walk *o, uint64_t last, const struct outbox_entry *e, struct buf *why)
{
	const unsigned char *p = (const unsigned char *)o->records.data;
	size_t at = 0, len = o->records.len;
	uint64_t seq = last - e->count + 1;
	for (; seq <= last && o->more; seq++) {
		if (len - at < OUTBOX_LENGTH_BYTES) {
			buf_printf(why, "record %" PRIu64 " is missing from its batch", seq);
			return false;
		}
		size_t n = (size_t)qmgr_be_get(p + at, OUTBOX_LENGTH_BYTES);
		at += OUTBOX_LENGTH_BYTES;
		if (n > len - at) {
			buf_printf(why, "record %" PRIu64 " is cut short in its batch", seq);
			return false;
		}
		if (seq >= e->first && seq >= o->from && !outbox_one(o, seq, p + at, n, why))
			return false;
		at += n;
	}
	if (o->more && at != len) {
		buf_puts(why, "the batch holds more than its count of records");
		return false;
	}
	return true;
}

/* Hands fn the records an entry holds or refers to. */
static bool outbox_records(struct outbox_walk *o, uint64_t last, const DBT *val, struct buf *why)
{
	struct outbox_entry e;
	if (!outbox_entry(last, val, &e))
		return outbox_one(o, last, val->data, val->size, why);
	if (e.batch && !outbox_entry_sane(last, &e)) {
		buf_printf(why, "a batch of %" PRIu32 " records from %" PRIu64 " does not end at %" PRIu64, e.count,
		           e.first, last);
		return false;
	}
	/* an error names the entry's key (corrupt()) */
	buf_reset(&o->records);
	if (!qmgr_bodies_read(o->st->bodies, "outbox record", &e.ref, &o->records, why))
		return false;
	if (!e.batch)
		return outbox_one(o, last, o->records.data, o->records.len, why);
	return outbox_batch(o, last, &e, why);
}

static bool outbox_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct outbox_walk *o = ctx;
	struct buf why = BUF_INIT;
	bool ok = key->size == 8;
	if (!ok)
		buf_puts(&why, "the key is not a sequence number");
	else
		ok = outbox_records(o, qmgr_key_seq_value(key->data, key->size), val, &why);
	if (!ok) {
		corrupt(err, QMGR_TABLE_OUTBOX, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	return o->more;
}

bool qmgr_store_walk_outbox(struct qmgr_store *st, qmgr_outbox_fn fn, void *ctx, struct buf *err)
{
	return qmgr_store_walk_outbox_from(st, 0, fn, ctx, err);
}

/* The entry that holds seq is the first whose key (its last record) is
 * not below seq. */
bool qmgr_store_walk_outbox_from(struct qmgr_store *st, uint64_t seq, qmgr_outbox_fn fn, void *ctx, struct buf *err)
{
	struct outbox_walk o = {.st = st, .from = seq, .fn = fn, .ctx = ctx, .records = BUF_INIT, .more = true};
	struct buf start = BUF_INIT;
	qmgr_key_seq(&start, seq);
	bool ok = walk(st, QMGR_TABLE_OUTBOX, &start, outbox_step, &o, err);
	buf_free(&start);
	buf_free(&o.records);
	return ok;
}

/* The entry is enough: the records are not read. */
static bool first_seq(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct outbox_entry e;
	uint64_t last = qmgr_key_seq_value(key->data, key->size);
	outbox_entry(last, val, &e);
	*(uint64_t *)ctx = e.batch && !outbox_entry_sane(last, &e) ? last : e.first;
	return false;
}

bool qmgr_store_outbox_first(struct qmgr_store *st, uint64_t *first, bool *found, struct buf *err)
{
	*first = 0;
	bool ok = walk(st, QMGR_TABLE_OUTBOX, NULL, first_seq, first, err);
	*found = *first != 0;
	return ok;
}

struct due_walk {
	const char *queue;
	size_t queue_len; /* with its NUL */
	int64_t until;
	qmgr_due_fn fn;
	void *ctx;
};

static bool due_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct due_walk *d = ctx;
	const char *k = key->data;
	if (key->size < d->queue_len || memcmp(k, d->queue, d->queue_len) != 0)
		return false;
	if (key->size != d->queue_len + 8 + QMGR_QID_LEN + 4) {
		struct buf why = BUF_INIT;
		buf_puts(&why, "bad key length");
		corrupt(err, QMGR_TABLE_DUE, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	int64_t due = (int64_t)(qmgr_key_seq_value(k + d->queue_len, 8) ^ (UINT64_C(1) << 63));
	if (due > d->until)
		return false;
	char qid[QMGR_QID_SIZE];
	memcpy(qid, k + d->queue_len + 8, QMGR_QID_LEN);
	qid[QMGR_QID_LEN] = '\0';
	size_t index = (size_t)qmgr_key_seq_value(k + d->queue_len + 8 + QMGR_QID_LEN, 4);
	return d->fn(d->ctx, qid, index, due);
}

bool qmgr_store_walk_due(struct qmgr_store *st, const char *queue, int64_t until, qmgr_due_fn fn, void *ctx,
                         struct buf *err)
{
	struct buf start = BUF_INIT;
	buf_append(&start, queue, strlen(queue) + 1);
	struct due_walk d = {queue, strlen(queue) + 1, until, fn, ctx};
	bool ok = walk(st, QMGR_TABLE_DUE, &start, due_step, &d, err);
	buf_free(&start);
	return ok;
}

bool qmgr_store_outbox_next(struct qmgr_store *st, uint64_t *next, struct buf *err)
{
	*next = st->outbox_next;
	return true;
}

/* ---- state changes -------------------------------------------------------- */

static bool final_state(enum qmgr_rcpt_state s)
{
	return s == QMGR_RCPT_DELIVERED || s == QMGR_RCPT_BOUNCED;
}

/* Deletes every key of table t that starts with the queue ID. */
static int del_prefix(struct write_ctx *w, enum qmgr_table t, const char *qid)
{
	DBC *cur;
	DB *db = w->st->db[t];
	int ret = db->cursor(db, w->txn, &cur, 0);
	if (ret != 0)
		return ret;
	DBT key = {.flags = DB_DBT_REALLOC}, val = {.flags = DB_DBT_REALLOC | DB_DBT_PARTIAL};
	key.data = mem_memdup(qid, QMGR_QID_LEN);
	key.size = QMGR_QID_LEN;
	ret = cur->get(cur, &key, &val, DB_SET_RANGE);
	while (ret == 0 && key.size >= QMGR_QID_LEN && memcmp(key.data, qid, QMGR_QID_LEN) == 0) {
		if ((ret = cur->del(cur, 0)) == 0)
			ret = cur->get(cur, &key, &val, DB_NEXT);
	}
	free(key.data);
	free(val.data);
	cur->close(cur);
	return ret == DB_NOTFOUND ? 0 : ret;
}

/* Whether every recipient is delivered or bounced with no DSN pending
 * (a pending DSN needs the message).  known, when not NULL, is recipient
 * known_index as it is about to be written: it is not read again.  The
 * recipients below the message's done prefix (struct done_hint) are not
 * read either; how far this reading found them done is kept if the
 * transaction commits. */
static int message_done(struct write_ctx *w, const char *qid, const struct ipc_msg *envelope,
                        const struct qmgr_rcpt *known, size_t known_index, bool *done, struct buf *err)
{
	int64_t count = ipc_msg_int(envelope, IPC_ATTR_RCPT_COUNT);
	const struct done_hint *hint = count > 1 ? done_hint(w->st, qid, false) : NULL;
	int64_t from = hint && !(known && known_index < hint->prefix) ? (int64_t)hint->prefix : 0;
	struct buf k = BUF_INIT;
	int ret = 0;
	*done = true;
	int64_t i = from;
	for (; *done && ret == 0 && i < count; i++) {
		if (known && (size_t)i == known_index) {
			*done = final_state(known->state) && !known->dsn_pending;
			continue;
		}
		struct qmgr_rcpt r;
		struct rcpt_at at;
		ret = read_rcpt(w->st, w->txn, qid, (size_t)i, &r, &at, err);
		if (ret == 0) {
			*done = final_state(r.state) && !r.dsn_pending;
			qmgr_rcpt_free(&r);
			rcpt_at_close(&at);
		}
	}
	buf_free(&k);
	/* the loop stopped past the first recipient not done, or at count */
	int64_t prefix = *done ? count : i - 1;
	if (ret == 0 && count > 1 && prefix > from) {
		w->hints = mem_reallocarray(w->hints, w->nhints + 1, sizeof(*w->hints));
		struct done_hint *h = &w->hints[w->nhints++];
		snprintf(h->qid, sizeof(h->qid), "%s", qid);
		h->prefix = (size_t)prefix;
	}
	return ret;
}

/* The records of a message found for a change (get_decoded_at): the
 * cursors on its record and on one recipient's, or NULL (also when the
 * recipient is inside the message's record). */
struct found_records {
	DBC *message;
	DBC *rcpt;
	size_t rcpt_index;
};

/* Deletes the record under k, or the one found's cursor is on. */
static int del_found(struct write_ctx *w, enum qmgr_table t, const struct buf *k, DBC *found)
{
	return found ? found->del(found, 0) : del_buf(w->st, w->txn, t, k);
}

/* A done message leaves nothing on disk: its record (with its body's
 * reference), its recipients and, for messages of older queues, its
 * body's reference or its body in bodies.db.  The recipients 0 .. count-1
 * and such a reference are deleted by their keys (or where found's
 * cursors are); a body in chunks by its queue ID's prefix.  envelope is
 * the message's record. */
static int remove_message(struct write_ctx *w, const char *qid, const struct ipc_msg *envelope,
                          const struct found_records *found)
{
	static const struct found_records none = {0};
	if (found == NULL)
		found = &none;
	int64_t count = ipc_msg_int(envelope, IPC_ATTR_RCPT_COUNT);
	struct buf k = BUF_INIT;
	buf_puts(&k, qid);
	int ret = del_found(w, QMGR_TABLE_MESSAGES, &k, found->message);
	struct qmgr_body_ref ref;
	if (ret == 0 && qmgr_message_body_ref(envelope, &ref)) {
		note_segment(&w->seg_removed, &w->nremoved, ref.segment); /* nothing in bodies.db */
	} else if (ret == 0) {
		int has_ref = get_ref(w, qid, &ref);
		if (has_ref == 0) {
			note_segment(&w->seg_removed, &w->nremoved, ref.segment);
			ret = del_buf(w->st, w->txn, QMGR_TABLE_BODIES, &w->key); /* get_ref's key */
		} else
			ret = has_ref == DB_NOTFOUND ? del_prefix(w, QMGR_TABLE_BODIES, qid) : has_ref;
	}
	/* a recipient inside the message's record went with it */
	for (int64_t i = ipc_msg_has(envelope, IPC_ATTR_RCPT_INLINE) ? count : 0; ret == 0 && i < count; i++) {
		qmgr_key_rcpt(&k, qid, (size_t)i);
		ret = del_found(w, QMGR_TABLE_RCPTS, &k, (size_t)i == found->rcpt_index ? found->rcpt : NULL);
	}
	buf_free(&k);
	return ret;
}

static int remove_if_done(struct write_ctx *w, const char *qid, const struct ipc_msg *envelope, struct buf *err)
{
	bool done;
	int ret = message_done(w, qid, envelope, NULL, 0, &done, err);
	return ret == 0 && done ? remove_message(w, qid, envelope, NULL) : ret;
}

/* The bounce's DSN is pending: the recipient says so (with what the DSN
 * reports) and dsns.db lists the message, from its first bounce on. */
static int mark_dsn(struct write_ctx *w, const char *qid, struct qmgr_rcpt *r, const struct ipc_msg *detail)
{
	r->dsn_pending = true;
	const char *status = detail ? ipc_msg_str(detail, IPC_ATTR_DSN_STATUS) : NULL;
	const char *host = detail ? ipc_msg_str(detail, IPC_ATTR_REMOTE_HOST) : NULL;
	free(r->dsn_status);
	free(r->remote_host);
	r->dsn_status = status ? mem_strdup(status) : NULL;
	r->remote_host = host ? mem_strdup(host) : NULL;
	struct buf k = BUF_INIT, v = BUF_INIT;
	buf_puts(&k, qid);
	DBT key = {.data = k.data, .size = (u_int32_t)k.len};
	qmgr_key_seq(&v, (uint64_t)w->now);
	DBT val = {.data = v.data, .size = (u_int32_t)v.len};
	int ret = w->st->db[QMGR_TABLE_DSNS]->put(w->st->db[QMGR_TABLE_DSNS], w->txn, &key, &val, DB_NOOVERWRITE);
	buf_free(&k);
	buf_free(&v);
	return ret == DB_KEYEXIST ? 0 : ret;
}

/* Writes a changed recipient back where update_rcpt found it: its own
 * record, or its message's (envelope, as read). */
static int rewrite_found(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_rcpt *r,
                         const struct ipc_msg *envelope, const struct found_records *found)
{
	struct rcpt_at at = {.cursor = r->in_message ? found->message : found->rcpt, .in_message = r->in_message};
	if (r->in_message)
		at.message = *envelope; /* a shallow copy: write_rcpt only reads it */
	return write_rcpt(w, qid, index, r, &at);
}

/* update_rcpt's change to the recipient r of the message envelope,
 * whose records found's cursors are on. */
static int change_rcpt(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_outcome *o,
                       const struct ipc_msg *envelope, struct qmgr_rcpt *r, const struct found_records *found,
                       bool *changed, struct buf *err)
{
	/* A final state never changes; a replayed result counts only while
	 * the recipient is still in flight for the job it names. */
	if (final_state(r->state) || (o->job_id != 0 && r->in_flight != o->job_id))
		return 0;
	*changed = true;
	int ret = 0;
	/* a due entry, if it has one: it was waiting, or held after a job
	 * that ended without its result (qmgr_store_hold); one in flight
	 * for a running job has none */
	if (o->running_job == 0 || r->in_flight != o->running_job) {
		qmgr_key_due(&w->key, r->queue, r->next_attempt, qid, index);
		ret = del_buf(w->st, w->txn, QMGR_TABLE_DUE, &w->key);
	}
	r->state = o->state;
	if (!o->not_attempted)
		r->attempts++;
	r->in_flight = 0;
	r->next_attempt = due_state(o->state) ? o->next_attempt : 0;
	free(r->last_result);
	r->last_result = o->result ? mem_strdup(o->result) : NULL;
	if (ret == 0 && o->dsn && o->state == QMGR_RCPT_BOUNCED)
		ret = mark_dsn(w, qid, r, o->detail);
	if (o->delay_notices > 0)
		r->delay_notices = o->delay_notices;
	/* The last final recipient is not written, only removed with the
	 * rest of its message. */
	bool done = false;
	if (ret == 0 && final_state(r->state))
		ret = message_done(w, qid, envelope, r, index, &done, err);
	if (ret == 0)
		ret = done ? remove_message(w, qid, envelope, found) : rewrite_found(w, qid, index, r, envelope, found);
	if (ret == 0 && o->rtype)
		ret = append_outbox(w, o->rtype, qid, index, envelope, r, o->detail);
	return ret;
}

static int update_rcpt(struct write_ctx *w, const char *qid, size_t index, const struct qmgr_outcome *o, bool *changed,
                       struct buf *err)
{
	struct qmgr_rcpt r;
	struct ipc_msg envelope;
	struct found_records found = {.rcpt_index = index};
	struct buf k = BUF_INIT;
	*changed = false;
	buf_puts(&k, qid);
	int ret =
	    get_decoded_at(w->st, w->txn, QMGR_TABLE_MESSAGES, &k, decode_message, &envelope, &found.message, err);
	if (ret == 0) {
		if (ipc_msg_has(&envelope, IPC_ATTR_RCPT_INLINE)) {
			ret = index == 0 ? inline_rcpt(&envelope, &r, err) : DB_NOTFOUND;
		} else {
			qmgr_key_rcpt(&k, qid, index);
			ret = get_decoded_at(w->st, w->txn, QMGR_TABLE_RCPTS, &k, decode_rcpt, &r, &found.rcpt, err);
		}
		if (ret != 0) {
			ipc_msg_free(&envelope);
			close_cursor(&found.message);
		}
	}
	buf_free(&k);
	if (ret == DB_NOTFOUND)
		buf_printf(err, "%s: no recipient %zu in the queue", qid, index);
	if (ret != 0)
		return ret;
	ret = change_rcpt(w, qid, index, o, &envelope, &r, &found, changed, err);
	close_cursor(&found.rcpt);
	close_cursor(&found.message);
	qmgr_rcpt_free(&r);
	ipc_msg_free(&envelope);
	return ret;
}

enum qmgr_store_status qmgr_store_apply(struct qmgr_store *st, const char *qid, size_t index,
                                        const struct qmgr_outcome *o, int64_t now, bool *changed, struct buf *err)
{
	struct qmgr_apply_item item = {qid, index, o, false};
	enum qmgr_store_status status = qmgr_store_apply_many(st, &item, 1, now, err);
	*changed = item.changed;
	return status;
}

enum qmgr_store_status qmgr_store_apply_many(struct qmgr_store *st, struct qmgr_apply_item *items, size_t n,
                                             int64_t now, struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	int ret = 0;
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = update_rcpt(&w, items[i].qid, items[i].index, items[i].o, &items[i].changed, err);
	status = finish(&w, ret, err);
	write_ctx_free(&w);
	return status;
}

/* Holds one recipient for a job: its due entry goes, and its record
 * keeps until as the due time it gets should the job end without its
 * result (after a crash: qmgr_store_hold_earlier), so that it waits for
 * smtp's replayed result instead of being sent again at once. */
static int mark_one(struct write_ctx *w, const struct qmgr_rcpt_ref *ref, const struct qmgr_rcpt *stored,
                    int64_t job_id, int64_t until, struct buf *err)
{
	struct qmgr_rcpt r;
	struct rcpt_at at = {0};
	int ret = 0;
	/* one with a record of its own is written by its key; one inside its
	 * message's record is read with it, to write them back together */
	bool read = stored == NULL || stored->in_message;
	if (read) {
		ret = read_rcpt(w->st, w->txn, ref->qid, ref->index, &r, &at, err);
		if (ret != 0)
			return ret == DB_NOTFOUND ? 0 : ret;
	} else {
		r = *stored; /* a shallow copy: its strings stay the caller's */
	}
	if (due_state(r.state)) {
		qmgr_key_due(&w->key, r.queue, r.next_attempt, ref->qid, ref->index);
		ret = del_buf(w->st, w->txn, QMGR_TABLE_DUE, &w->key);
		r.next_attempt = until;
		r.in_flight = job_id;
		if (ret == 0)
			ret = write_rcpt(w, ref->qid, ref->index, &r, &at);
	}
	if (read) {
		qmgr_rcpt_free(&r);
		rcpt_at_close(&at);
	}
	return ret;
}

/* What a job's recipients get, one by one, in one transaction. */
struct job_rcpts {
	const struct qmgr_rcpt_ref *refs;
	const struct qmgr_rcpt *stored; /* or NULL: read them */
	int64_t job_id;
	int64_t until;
};

typedef int (*job_rcpt_fn)(struct write_ctx *w, const struct job_rcpts *j, size_t i, struct buf *err);

static enum qmgr_store_status each_job_rcpt(struct qmgr_store *st, const struct job_rcpts *j, size_t n, job_rcpt_fn fn,
                                            int64_t now, struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	int ret = 0;
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = fn(&w, j, i, err);
	status = finish(&w, ret, err);
	write_ctx_free(&w);
	return status;
}

static int mark_nth(struct write_ctx *w, const struct job_rcpts *j, size_t i, struct buf *err)
{
	return mark_one(w, &j->refs[i], j->stored ? &j->stored[i] : NULL, j->job_id, j->until, err);
}

enum qmgr_store_status qmgr_store_mark_in_flight(struct qmgr_store *st, const struct qmgr_rcpt_ref *refs,
                                                 const struct qmgr_rcpt *stored, size_t n, int64_t job_id,
                                                 int64_t until, int64_t now, struct buf *err)
{
	struct job_rcpts j = {refs, stored, job_id, until};
	return each_job_rcpt(st, &j, n, mark_nth, now, err);
}

/* A recipient held in flight gets its due entry at the end of its
 * in-flight-grace (its next_attempt), unless it has a result meanwhile. */
static int hold_nth(struct write_ctx *w, const struct job_rcpts *j, size_t i, struct buf *err)
{
	struct qmgr_rcpt r;
	struct rcpt_at at;
	const struct qmgr_rcpt_ref *ref = &j->refs[i];
	int ret = read_rcpt(w->st, w->txn, ref->qid, ref->index, &r, &at, err);
	if (ret != 0)
		return ret == DB_NOTFOUND ? 0 : ret;
	if (due_state(r.state) && r.in_flight != 0 && (j->job_id == 0 || r.in_flight == j->job_id))
		ret = put_due(w, ref->qid, ref->index, &r);
	qmgr_rcpt_free(&r);
	rcpt_at_close(&at);
	return ret;
}

enum qmgr_store_status qmgr_store_hold(struct qmgr_store *st, const struct qmgr_rcpt_ref *refs, size_t n,
                                       int64_t job_id, int64_t now, struct buf *err)
{
	struct job_rcpts j = {.refs = refs, .job_id = job_id};
	return each_job_rcpt(st, &j, n, hold_nth, now, err);
}

/* hold_earlier's resume key: a recipients.db key while it reads that
 * table, then this byte and a messages.db key (no recipients.db key
 * starts with it: queue IDs are hex digits). */
#define EARLIER_IN_MESSAGES 'M'

struct earlier_walk {
	int64_t this_start;      /* the job IDs of this start: this_start + a count */
	size_t left;             /* records still to read in this step */
	struct buf *next;        /* the key to go on from */
	struct qmgr_rcpt_ref *v; /* the recipients found held by an earlier start */
	size_t n;
	bool more;
};

/* A recipient (of the queue ID at qid) in flight for a job of an
 * earlier start is one to hold. */
static void note_if_earlier(struct earlier_walk *e, const void *qid, size_t index, const struct qmgr_rcpt *r)
{
	if (!due_state(r->state) || r->in_flight == 0 || (r->in_flight & ~(int64_t)UINT32_MAX) == e->this_start)
		return;
	e->v = mem_reallocarray(e->v, e->n + 1, sizeof(*e->v));
	memcpy(e->v[e->n].qid, qid, QMGR_QID_LEN);
	e->v[e->n].qid[QMGR_QID_LEN] = '\0';
	e->v[e->n++].index = index;
}

static bool earlier_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct earlier_walk *e = ctx;
	if (e->left == 0) {
		buf_reset(e->next);
		buf_append(e->next, key->data, key->size);
		e->more = true;
		return false;
	}
	e->left--;
	struct qmgr_rcpt r;
	struct buf why = BUF_INIT;
	if (key->size != QMGR_QID_LEN + 4 || !qmgr_record_rcpt_decode(val->data, val->size, &r, &why)) {
		if (why.len == 0)
			buf_puts(&why, "bad key length");
		corrupt(err, QMGR_TABLE_RCPTS, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	note_if_earlier(e, key->data, (size_t)qmgr_key_seq_value((const char *)key->data + QMGR_QID_LEN, 4), &r);
	qmgr_rcpt_free(&r);
	return true;
}

/* The same for the recipients inside their messages' records. */
static bool earlier_message_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct earlier_walk *e = ctx;
	if (e->left == 0) {
		buf_reset(e->next);
		buf_putc(e->next, EARLIER_IN_MESSAGES);
		buf_append(e->next, key->data, key->size);
		e->more = true;
		return false;
	}
	e->left--;
	struct ipc_msg m = {0};
	struct qmgr_rcpt r;
	struct buf why = BUF_INIT;
	bool ok = key->size == QMGR_QID_LEN && qmgr_record_message_decode(val->data, val->size, &m, &why);
	if (!ok) {
		if (why.len == 0)
			buf_puts(&why, "bad key length");
		corrupt(err, QMGR_TABLE_MESSAGES, key, &why);
	} else if (ipc_msg_has(&m, IPC_ATTR_RCPT_INLINE)) {
		ok = inline_rcpt(&m, &r, err) == 0;
		if (ok) {
			note_if_earlier(e, key->data, 0, &r);
			qmgr_rcpt_free(&r);
		}
	}
	ipc_msg_free(&m);
	buf_free(&why);
	*failed = !ok;
	return ok;
}

enum qmgr_store_status qmgr_store_hold_earlier(struct qmgr_store *st, int64_t this_start, struct buf *from, size_t max,
                                               size_t *held, bool *done, struct buf *err)
{
	struct earlier_walk e = {.this_start = this_start, .left = max, .next = from};
	*held = 0;
	*done = false;
	/* recipients.db first, then the messages' records (from says which) */
	bool in_messages = from->len > 0 && from->data[0] == EARLIER_IN_MESSAGES;
	bool walked;
	if (in_messages) {
		struct buf start = BUF_INIT;
		buf_append(&start, from->data + 1, from->len - 1);
		walked = walk(st, QMGR_TABLE_MESSAGES, start.len ? &start : NULL, earlier_message_step, &e, err);
		buf_free(&start);
	} else {
		walked = walk(st, QMGR_TABLE_RCPTS, from->len ? from : NULL, earlier_step, &e, err);
	}
	if (!walked) {
		free(e.v);
		return QMGR_STORE_FAILED;
	}
	if (!in_messages && !e.more) {
		buf_reset(from);
		buf_putc(from, EARLIER_IN_MESSAGES);
		e.more = true;
	}
	enum qmgr_store_status status = QMGR_STORE_OK;
	if (e.n > 0)
		status = qmgr_store_hold(st, e.v, e.n, 0, time(NULL), err);
	free(e.v);
	if (status == QMGR_STORE_OK) {
		*held = e.n;
		*done = !e.more;
	}
	return status;
}

enum qmgr_store_status qmgr_store_next_job_gen(struct qmgr_store *st, uint64_t *gen, struct buf *err)
{
	struct write_ctx w = {.st = st};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	bool found;
	int ret = meta_get(st, w.txn, META_JOB_GEN, gen, &found, err);
	if (ret == 0)
		ret = meta_put(st, w.txn, META_JOB_GEN, ++*gen);
	if (ret != 0 && err->len == 0)
		buf_printf(err, "cannot count the job generation: %s", db_strerror(ret));
	status = finish(&w, ret, err);
	write_ctx_free(&w);
	return status;
}

/* Clears the pending DSN marks of a message's recipients. */
static int clear_dsn_marks(struct write_ctx *w, const char *qid, int64_t count, struct buf *err)
{
	int ret = 0;
	for (int64_t i = 0; ret == 0 && i < count; i++) {
		struct qmgr_rcpt r;
		struct rcpt_at at;
		ret = read_rcpt(w->st, w->txn, qid, (size_t)i, &r, &at, err);
		if (ret == DB_NOTFOUND) {
			ret = 0;
			continue;
		}
		if (ret != 0)
			break;
		if (r.dsn_pending) {
			r.dsn_pending = false;
			ret = write_rcpt(w, qid, (size_t)i, &r, &at);
		}
		qmgr_rcpt_free(&r);
		rcpt_at_close(&at);
	}
	return ret;
}

enum qmgr_store_status qmgr_store_dsn_sent(struct qmgr_store *st, const char *qid, const struct qmgr_incoming *dsn,
                                           int64_t now, char dsn_qid[QMGR_QID_SIZE], struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	struct ipc_msg envelope;
	struct buf k = BUF_INIT;
	buf_puts(&k, qid);
	int ret = get_decoded(st, w.txn, QMGR_TABLE_MESSAGES, &k, decode_message, &envelope, err);
	if (ret == 0) {
		ret = clear_dsn_marks(&w, qid, ipc_msg_int(&envelope, IPC_ATTR_RCPT_COUNT), err);
		if (ret == 0)
			ret = remove_if_done(&w, qid, &envelope, err);
		ipc_msg_free(&envelope);
	} else if (ret == DB_NOTFOUND) {
		ret = 0; /* gone already: only the list entry is left */
	}
	if (ret == 0)
		ret = del_buf(st, w.txn, QMGR_TABLE_DSNS, &k);
	if (ret == 0 && dsn)
		ret = add_message_in(&w, dsn, dsn_qid, err);
	buf_free(&k);
	status = finish(&w, ret, err);
	if (status == QMGR_STORE_OK && dsn)
		note_new_qids(st, &w);
	write_ctx_free(&w);
	return status;
}

struct dsn_walk {
	qmgr_dsn_fn fn;
	void *ctx;
};

static bool dsn_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct dsn_walk *d = ctx;
	char qid[QMGR_QID_SIZE];
	if (key->size != QMGR_QID_LEN || val->size != 8) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "a key of %u and a value of %u bytes", key->size, val->size);
		corrupt(err, QMGR_TABLE_DSNS, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	memcpy(qid, key->data, QMGR_QID_LEN);
	qid[QMGR_QID_LEN] = '\0';
	return d->fn(d->ctx, qid, (int64_t)qmgr_key_seq_value(val->data, val->size));
}

bool qmgr_store_walk_dsns(struct qmgr_store *st, qmgr_dsn_fn fn, void *ctx, struct buf *err)
{
	struct dsn_walk d = {fn, ctx};
	return walk(st, QMGR_TABLE_DSNS, NULL, dsn_step, &d, err);
}

bool qmgr_store_message_final(struct qmgr_store *st, const char *qid, bool *final, struct buf *err)
{
	struct ipc_msg envelope;
	bool found;
	*final = true;
	if (!qmgr_store_get_message(st, qid, &envelope, &found, err)) {
		if (found)
			return false;
		buf_reset(err); /* gone: nothing waits */
		return true;
	}
	int64_t count = ipc_msg_int(&envelope, IPC_ATTR_RCPT_COUNT);
	ipc_msg_free(&envelope);
	bool ok = true;
	for (int64_t i = 0; ok && *final && i < count; i++) {
		struct qmgr_rcpt r;
		ok = qmgr_store_get_rcpt(st, qid, (size_t)i, &r, &found, err);
		if (ok) {
			*final = final_state(r.state);
			qmgr_rcpt_free(&r);
		}
	}
	return ok;
}

enum qmgr_store_status qmgr_store_update_rcpt(struct qmgr_store *st, const char *qid, size_t index,
                                              enum qmgr_rcpt_state state, int64_t next_attempt, const char *result,
                                              char rtype, int64_t now, struct buf *err)
{
	char type[2] = {rtype, '\0'};
	struct qmgr_outcome o = {
	    .state = state, .next_attempt = next_attempt, .result = result, .rtype = rtype ? type : NULL};
	bool changed;
	return qmgr_store_apply(st, qid, index, &o, now, &changed, err);
}

enum qmgr_store_status qmgr_store_put_queue(struct qmgr_store *st, const char *name, const struct qmgr_queue_state *q,
                                            const struct ipc_msg *detail, const char *reason, int64_t now,
                                            struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	buf_reset(&w.key);
	buf_puts(&w.key, name);
	qmgr_record_queue(&w.val, q);
	int ret = put_buf(st, w.txn, QMGR_TABLE_QUEUES, &w.key, w.val.data, w.val.len);
	if (ret == 0 && detail && record_wanted(st, "tq")) {
		qmgr_key_seq(&w.key, w.outbox_seq++);
		qmgr_record_queue_failure(&w.val, name, reason, now, detail);
		ret = put_buf(st, w.txn, QMGR_TABLE_OUTBOX, &w.key, w.val.data, w.val.len);
	}
	status = finish(&w, ret, err);
	write_ctx_free(&w);
	return status;
}

struct due_entry {
	char qid[QMGR_QID_SIZE];
	size_t index;
};

struct due_list {
	struct due_entry *v;
	size_t n;
	int64_t after;
};

static bool collect_later(void *ctx, const char *qid, size_t index, int64_t due)
{
	struct due_list *l = ctx;
	if (due <= l->after)
		return true;
	l->v = mem_reallocarray(l->v, l->n + 1, sizeof(*l->v));
	memcpy(l->v[l->n].qid, qid, QMGR_QID_SIZE);
	l->v[l->n++].index = index;
	return true;
}

static int make_due_now(struct write_ctx *w, const struct due_entry *e, struct buf *err)
{
	struct qmgr_rcpt r;
	struct rcpt_at at;
	int ret = read_rcpt(w->st, w->txn, e->qid, e->index, &r, &at, err);
	if (ret != 0)
		return ret == DB_NOTFOUND ? 0 : ret;
	/* a recipient in flight waits for its result, or in-flight-grace */
	if (due_state(r.state) && r.in_flight == 0) {
		qmgr_key_due(&w->key, r.queue, r.next_attempt, e->qid, e->index);
		ret = del_buf(w->st, w->txn, QMGR_TABLE_DUE, &w->key);
		r.next_attempt = w->now;
		if (ret == 0)
			ret = write_rcpt(w, e->qid, e->index, &r, &at);
	}
	qmgr_rcpt_free(&r);
	rcpt_at_close(&at);
	return ret;
}

enum qmgr_store_status qmgr_store_reschedule(struct qmgr_store *st, const char *queue, int64_t now, size_t *moved,
                                             struct buf *err)
{
	struct due_list l = {.after = now};
	*moved = 0;
	if (!qmgr_store_walk_due(st, queue, INT64_MAX, collect_later, &l, err))
		return QMGR_STORE_FAILED;
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status == QMGR_STORE_OK) {
		int ret = 0;
		for (size_t i = 0; ret == 0 && i < l.n; i++)
			ret = make_due_now(&w, &l.v[i], err);
		status = finish(&w, ret, err);
		write_ctx_free(&w);
	}
	if (status == QMGR_STORE_OK)
		*moved = l.n;
	free(l.v);
	return status;
}

struct queue_walk {
	qmgr_queue_fn fn;
	void *ctx;
};

static bool queue_step(void *ctx, const DBT *key, const DBT *val, struct buf *err, bool *failed)
{
	struct queue_walk *q = ctx;
	struct qmgr_queue_state state;
	struct buf why = BUF_INIT;
	if (!qmgr_record_queue_decode(val->data, val->size, &state, &why)) {
		corrupt(err, QMGR_TABLE_QUEUES, key, &why);
		buf_free(&why);
		*failed = true;
		return false;
	}
	char *name = mem_strndup(key->data, key->size);
	bool more = q->fn(q->ctx, name, &state);
	free(name);
	return more;
}

bool qmgr_store_walk_queues(struct qmgr_store *st, qmgr_queue_fn fn, void *ctx, struct buf *err)
{
	struct queue_walk q = {fn, ctx};
	return walk(st, QMGR_TABLE_QUEUES, NULL, queue_step, &q, err);
}

static bool first_due_step(void *ctx, const char *qid, size_t index, int64_t due)
{
	*(int64_t *)ctx = due;
	return false;
}

bool qmgr_store_first_due(struct qmgr_store *st, const char *queue, int64_t *due, bool *found, struct buf *err)
{
	*due = INT64_MAX;
	bool ok = qmgr_store_walk_due(st, queue, INT64_MAX, first_due_step, due, err);
	*found = *due != INT64_MAX;
	return ok;
}

bool qmgr_store_walk_queue(struct qmgr_store *st, const char *queue, qmgr_due_fn fn, void *ctx, struct buf *err)
{
	return qmgr_store_walk_due(st, queue, INT64_MAX, fn, ctx, err);
}

/* A batch that seq confirms in part keeps the records after it. */
static int confirm_part(DBC *cur, const DBT *val, uint64_t last, uint64_t seq)
{
	struct outbox_entry e;
	if (!outbox_entry(last, val, &e) || !e.batch || !outbox_entry_sane(last, &e) || e.first > seq)
		return 0;
	unsigned char v[OUTBOX_BATCH_SIZE];
	memcpy(v, val->data, sizeof(v));
	qmgr_be_put(v + 1, seq + 1, 8);
	DBT nval = {.data = v, .size = sizeof(v)};
	return cur->put(cur, NULL, &nval, DB_CURRENT);
}

/* Deletes the records up to seq; the segments they were in lose a
 * reference once this commits. */
static int confirm_in(struct write_ctx *w, uint64_t seq)
{
	DBC *cur;
	int ret = w->st->db[QMGR_TABLE_OUTBOX]->cursor(w->st->db[QMGR_TABLE_OUTBOX], w->txn, &cur, 0);
	if (ret != 0)
		return ret;
	DBT key = {.flags = DB_DBT_REALLOC}, val = {.flags = DB_DBT_REALLOC};
	struct qmgr_body_ref ref;
	uint64_t last = 0;
	while ((ret = cur->get(cur, &key, &val, DB_FIRST)) == 0 &&
	       (last = qmgr_key_seq_value(key.data, key.size)) <= seq) {
		if ((ret = cur->del(cur, 0)) != 0)
			break;
		if (outbox_ref(last, &val, &ref))
			note_segment(&w->seg_removed, &w->nremoved, ref.segment);
	}
	/* stopped at an entry after seq: the outbox is not empty */
	if (ret == 0)
		ret = confirm_part(cur, &val, last, seq);
	cur->close(cur);
	free(key.data);
	free(val.data);
	if (ret != DB_NOTFOUND)
		return ret;
	/* what numbers the records still to come once these are gone */
	if (w->st->outbox_saved == w->outbox_seq)
		return 0;
	return meta_put(w->st, w->txn, META_OUTBOX_NEXT, w->outbox_seq);
}

enum qmgr_store_status qmgr_store_outbox_confirm(struct qmgr_store *st, uint64_t seq, struct buf *err)
{
	struct write_ctx w = {.st = st, .now = time(NULL)};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	int ret = confirm_in(&w, seq);
	if (ret != 0 && err->len == 0)
		buf_printf(err, "cannot remove confirmed outbox records: %s", db_strerror(ret));
	status = finish(&w, ret, err);
	if (status == QMGR_STORE_OK)
		st->outbox_saved = w.outbox_seq;
	write_ctx_free(&w);
	return status;
}

bool qmgr_store_put_raw(struct qmgr_store *st, enum qmgr_table table, const void *key, size_t klen, const void *val,
                        size_t vlen, struct buf *err)
{
	DBT k = {.data = (void *)key, .size = (u_int32_t)klen};
	DBT v = {.data = (void *)val, .size = (u_int32_t)vlen};
	int ret = st->db[table]->put(st->db[table], NULL, &k, &v, DB_AUTO_COMMIT);
	if (ret != 0)
		db_fail(st, ret, err, "raw write failed");
	return ret == 0;
}

bool qmgr_store_get_raw(struct qmgr_store *st, enum qmgr_table table, const void *key, size_t klen, struct buf *val,
                        struct buf *err)
{
	DBT k = {.data = (void *)key, .size = (u_int32_t)klen};
	DBT v = {.flags = DB_DBT_MALLOC};
	int ret = st->db[table]->get(st->db[table], NULL, &k, &v, 0);
	if (ret != 0) {
		buf_printf(err, "raw read failed: %s", db_strerror(ret));
		return false;
	}
	buf_reset(val);
	buf_append(val, v.data, v.size);
	free(v.data);
	return true;
}

/* ---- the sweep: bodies out of old segments ------------------------------------ */

struct sweep_pick {
	struct qmgr_store *st;
	int64_t now, min_age;
	char (*qids)[QMGR_QID_SIZE];
	size_t n, max;
};

static bool pick_one(void *ctx, const DBT *key, const struct qmgr_body_ref *ref)
{
	struct sweep_pick *p = ctx;
	if (p->n >= p->max)
		return false; /* the next scan starts here */
	if (qmgr_bodies_sweepable(p->st->bodies, ref->segment, p->now, p->min_age)) {
		memcpy(p->qids[p->n], key->data, QMGR_QID_LEN);
		p->qids[p->n++][QMGR_QID_LEN] = '\0';
	}
	return true;
}

/* Collects up to p->max messages whose body is in a sweepable segment,
 * scanning the references of bodies.db, then those of messages.db, each
 * from where its last scan stopped; *at_end once both scans reached their
 * table's end (the next ones start over). */
static bool pick_sweepable(struct qmgr_store *st, struct sweep_pick *p, bool *at_end, struct buf *err)
{
	struct buf from = BUF_INIT;
	buf_append(&from, st->sweep_resume.data, st->sweep_resume.len);
	bool ok = walk_refs(st, &bodies_refs, &from, pick_one, p, &st->sweep_resume, err);
	if (ok && st->sweep_resume.len == 0 && p->n < p->max) {
		buf_reset(&from);
		buf_append(&from, st->sweep_resume_msgs.data, st->sweep_resume_msgs.len);
		ok = walk_refs(st, &message_refs, &from, pick_one, p, &st->sweep_resume_msgs, err);
	}
	*at_end = st->sweep_resume.len == 0 && st->sweep_resume_msgs.len == 0;
	buf_free(&from);
	return ok;
}

/* True the first time the sweep meets this damaged body. */
static bool first_report(struct qmgr_store *st, const char *qid)
{
	size_t known = st->ndamaged_seen < DAMAGED_REMEMBERED ? st->ndamaged_seen : DAMAGED_REMEMBERED;
	for (size_t i = 0; i < known; i++)
		if (strcmp(st->damaged[i], qid) == 0)
			return false;
	memcpy(st->damaged[st->ndamaged_seen++ % DAMAGED_REMEMBERED], qid, QMGR_QID_SIZE);
	return true;
}

/* The message's record written again without its body's reference (its
 * body now in chunks). */
static int put_record_without_ref(struct write_ctx *w, const char *qid, struct buf *err)
{
	struct ipc_msg env;
	buf_reset(&w->key);
	buf_puts(&w->key, qid);
	int ret = get_decoded(w->st, w->txn, QMGR_TABLE_MESSAGES, &w->key, decode_message, &env, err);
	if (ret != 0)
		return ret;
	struct buf inside = BUF_INIT; /* the recipient inside it, kept */
	if (ipc_msg_has(&env, IPC_ATTR_RCPT_INLINE)) {
		size_t len;
		const void *v = ipc_msg_data(&env, IPC_ATTR_RCPT_INLINE, &len);
		buf_append(&inside, v, len);
	}
	qmgr_record_message(&w->val, qid, ipc_msg_int(&env, IPC_ATTR_RECEIVED), ipc_msg_int(&env, IPC_ATTR_BODY_SIZE),
	                    (size_t)ipc_msg_int(&env, IPC_ATTR_RCPT_COUNT), &env, NULL, inside.len ? &inside : NULL);
	buf_free(&inside);
	ipc_msg_free(&env);
	return put_buf(w->st, w->txn, QMGR_TABLE_MESSAGES, &w->key, w->val.data, w->val.len);
}

/* One body back into chunks, in w's transaction.  A body that cannot be
 * read stays where it is (and keeps its segment); it is logged once. */
static int move_body(struct write_ctx *w, const char *qid, int64_t now, int64_t min_age, bool *moved)
{
	struct qmgr_body_ref ref;
	bool in_record;
	*moved = false;
	int ret = find_ref(w, qid, &ref, &in_record);
	if (ret != 0)
		return ret == DB_NOTFOUND ? 0 : ret;
	if (!qmgr_bodies_sweepable(w->st->bodies, ref.segment, now, min_age))
		return 0;
	struct buf body = BUF_INIT, why = BUF_INIT;
	if (!qmgr_bodies_read(w->st->bodies, qid, &ref, &body, &why)) {
		if (first_report(w->st, qid))
			log_error("%s; it stays in its segment", buf_cstr(&why));
		buf_free(&why);
		buf_free(&body);
		return 0;
	}
	ret = put_body_chunks(w, qid, body.data, body.len);
	if (ret == 0 && in_record)
		ret = put_record_without_ref(w, qid, &why);
	else if (ret == 0) {
		qmgr_key_body(&w->key, qid, QMGR_BODY_REF_CHUNK);
		ret = del_buf(w->st, w->txn, QMGR_TABLE_BODIES, &w->key);
	}
	if (ret == 0) {
		note_segment(&w->seg_removed, &w->nremoved, ref.segment);
		*moved = true;
	}
	buf_free(&body);
	return ret;
}

static enum qmgr_store_status move_bodies(struct qmgr_store *st, const struct sweep_pick *p, int64_t now,
                                          int64_t min_age, size_t *moved, struct buf *err)
{
	struct write_ctx w = {.st = st, .now = now};
	enum qmgr_store_status status = begin(&w, err);
	if (status != QMGR_STORE_OK)
		return status;
	size_t n = 0;
	int ret = 0;
	for (size_t i = 0; ret == 0 && i < p->n; i++) {
		bool one;
		ret = move_body(&w, p->qids[i], now, min_age, &one);
		n += one;
	}
	status = finish(&w, ret, err);
	write_ctx_free(&w);
	if (status == QMGR_STORE_OK)
		*moved += n;
	return status;
}

enum qmgr_store_status qmgr_store_sweep_bodies(struct qmgr_store *st, int64_t min_age, size_t max_messages,
                                               size_t *moved, struct buf *err)
{
	int64_t now = time(NULL);
	*moved = 0;
	qmgr_bodies_retire_old(st->bodies, now);
	if (!qmgr_bodies_any_sweepable(st->bodies, now, min_age))
		return QMGR_STORE_OK;
	char qids[SWEEP_BATCH][QMGR_QID_SIZE];
	enum qmgr_store_status status = QMGR_STORE_OK;
	/* from where the last sweep stopped to the end, then once from the
	 * start */
	int passes = st->sweep_resume.len > 0 || st->sweep_resume_msgs.len > 0 ? 2 : 1;
	size_t done = 0;
	while (status == QMGR_STORE_OK && done < max_messages && passes > 0) {
		size_t left = max_messages - done;
		struct sweep_pick p = {.st = st,
		                       .now = now,
		                       .min_age = min_age,
		                       .qids = qids,
		                       .max = left < SWEEP_BATCH ? left : SWEEP_BATCH};
		bool at_end;
		if (!pick_sweepable(st, &p, &at_end, err))
			return QMGR_STORE_FAILED;
		if (p.n > 0)
			status = move_bodies(st, &p, now, min_age, moved, err);
		done += p.n;
		if (at_end)
			passes--;
	}
	return status;
}
