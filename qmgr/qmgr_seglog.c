/* qmgr_seglog.c: segment writes in the queue's log.  A small write to a
 * body segment (qmgr_bodies.c) is also put into the Berkeley DB log, as
 * an application record, before the commit that names its bytes.  The
 * group commit's one log flush then makes the commit and the bytes
 * durable together, and the segment file needs no fdatasync of its own
 * until the next checkpoint.
 *
 * A checkpoint syncs every segment, then logs a "synced" record holding
 * the log's end as it was before that sync began: every segment write
 * logged before that point is on disk.  After a crash, restore finds the
 * last such record (reading the log backwards) and writes the segment
 * writes logged since then back into their files where they differ.
 * Log files are removed only below that point (not by Berkeley DB's
 * DB_LOG_AUTO_REMOVE), so the records a restore may need are never gone.
 *
 * The records carry no transaction (txnid 0): Berkeley DB's recovery
 * passes over them. */
#include "qmgr.h"

#include <db.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

enum seglog_type {
	SEGLOG_WRITE = DB_user_BEGIN + 1,  /* segment, offset, the bytes */
	SEGLOG_SYNCED = DB_user_BEGIN + 2, /* log file and offset: writes logged before are durable */
};

/* rectype and txnid (u32 each) and a previous LSN, as Berkeley DB reads
 * every record; then ours, big-endian. */
#define HEADER_BYTES (4 + 4 + 8)
#define WRITE_FIXED_BYTES (HEADER_BYTES + 8 + 8)
#define SYNCED_BYTES (HEADER_BYTES + 4 + 4)

static void put_header(unsigned char *out, uint32_t type)
{
	uint32_t txnid = 0;
	memcpy(out, &type, 4);
	memcpy(out + 4, &txnid, 4);
	memset(out + 8, 0, 8);
}

static uint32_t record_type(const DBT *rec)
{
	uint32_t type = 0;
	if (rec->size >= HEADER_BYTES)
		memcpy(&type, rec->data, 4);
	return type;
}

/* Recovery passes over records without a transaction; a reader that
 * does not (printing, verifying) finds nothing to do in ours. */
static int ignore_record(DB_ENV *env, DBT *rec, DB_LSN *lsn, db_recops op)
{
	return 0;
}

int qmgr_seglog_configure(struct __db_env *env)
{
	return env->set_app_dispatch(env, ignore_record);
}

/* Berkeley DB is told not to copy the record first (DB_LOG_NOCOPY): it
 * copies it into its log buffer in any case, and would change it only
 * to encrypt it, which the queue's environment never does. */
int qmgr_seglog_write(struct __db_env *env, uint64_t segment, uint64_t offset, const void *data, size_t len)
{
	unsigned char *rec = mem_alloc(WRITE_FIXED_BYTES + len);
	put_header(rec, SEGLOG_WRITE);
	qmgr_be_put(rec + HEADER_BYTES, segment, 8);
	qmgr_be_put(rec + HEADER_BYTES + 8, offset, 8);
	memcpy(rec + WRITE_FIXED_BYTES, data, len);
	DBT dbt = {.data = rec, .size = (u_int32_t)(WRITE_FIXED_BYTES + len)};
	DB_LSN lsn;
	int ret = env->log_put(env, &lsn, &dbt, DB_LOG_NOCOPY);
	free(rec);
	return ret;
}

int qmgr_seglog_end(struct __db_env *env, DB_LSN *end)
{
	DB_LOG_STAT *sp;
	int ret = env->log_stat(env, &sp, 0);
	if (ret != 0)
		return ret;
	end->file = sp->st_cur_file;
	end->offset = sp->st_cur_offset;
	free(sp);
	return 0;
}

int qmgr_seglog_synced(struct __db_env *env, const DB_LSN *before)
{
	unsigned char rec[SYNCED_BYTES];
	put_header(rec, SEGLOG_SYNCED);
	qmgr_be_put(rec + HEADER_BYTES, before->file, 4);
	qmgr_be_put(rec + HEADER_BYTES + 4, before->offset, 4);
	DBT dbt = {.data = rec, .size = sizeof(rec)};
	DB_LSN lsn;
	return env->log_put(env, &lsn, &dbt, 0);
}

/* ---- removing log files ---------------------------------------------------- */

static bool log_file_number(const char *path, uint32_t *number)
{
	const char *name = strrchr(path, '/');
	name = name ? name + 1 : path;
	char *end;
	if (strncmp(name, "log.", 4) != 0)
		return false;
	unsigned long n = strtoul(name + 4, &end, 10);
	if (*end != '\0' || end == name + 4)
		return false;
	*number = (uint32_t)n;
	return true;
}

/* The log files Berkeley DB no longer needs, below file `below`: a
 * NULL-terminated array of their paths (qmgr_seglog_remove frees it). */
int qmgr_seglog_old_files(struct __db_env *env, uint32_t below, char ***files)
{
	char **list = NULL;
	*files = mem_zalloc(sizeof(**files));
	int ret = env->log_archive(env, &list, DB_ARCH_ABS);
	if (ret != 0 || list == NULL)
		return ret;
	size_t n = 0;
	for (char **p = list; *p; p++) {
		uint32_t number;
		if (log_file_number(*p, &number) && number < below) {
			*files = mem_reallocarray(*files, n + 2, sizeof(**files));
			(*files)[n++] = mem_strdup(*p);
			(*files)[n] = NULL;
		}
	}
	free(list);
	return 0;
}

void qmgr_seglog_remove(char **files)
{
	for (char **p = files; p && *p; p++) {
		if (unlink(*p) < 0 && errno != ENOENT)
			log_warning("cannot remove the queue log file %s: %s", *p, strerror(errno));
		free(*p);
	}
	free(files);
}

/* ---- after a crash ----------------------------------------------------------- */

/* Backwards from the log's end to the last "synced" record and on to
 * the point it names: *from is the first record at or after it (the
 * log's first without one).  *empty: the log holds no record. */
static int find_restore_start(DB_LOGC *cur, DB_LSN *from, bool *empty)
{
	DB_LSN lsn, bound = {0, 0};
	DBT rec = {.flags = DB_DBT_REALLOC};
	bool bounded = false;
	*empty = true;
	int ret;
	for (ret = cur->get(cur, &lsn, &rec, DB_LAST); ret == 0; ret = cur->get(cur, &lsn, &rec, DB_PREV)) {
		if (bounded && log_compare(&lsn, &bound) < 0)
			break;
		*from = lsn;
		*empty = false;
		if (!bounded && record_type(&rec) == SEGLOG_SYNCED && rec.size == SYNCED_BYTES) {
			const unsigned char *p = (const unsigned char *)rec.data + HEADER_BYTES;
			bound.file = (u_int32_t)qmgr_be_get(p, 4);
			bound.offset = (u_int32_t)qmgr_be_get(p + 4, 4);
			bounded = true;
			if (log_compare(&lsn, &bound) < 0)
				break;
		}
	}
	free(rec.data);
	return ret == DB_NOTFOUND ? 0 : ret;
}

static bool restore_record(struct qmgr_bodies *b, const DBT *rec, struct buf *err)
{
	if (rec->size < WRITE_FIXED_BYTES)
		return true;
	const unsigned char *p = (const unsigned char *)rec->data + HEADER_BYTES;
	return qmgr_bodies_restore(b, qmgr_be_get(p, 8), qmgr_be_get(p + 8, 8), p + 16, rec->size - WRITE_FIXED_BYTES,
	                           err);
}

int qmgr_seglog_restore(struct __db_env *env, struct qmgr_bodies *b, struct buf *err)
{
	DB_LOGC *cur;
	int ret = env->log_cursor(env, &cur, 0);
	if (ret != 0)
		return ret;
	DB_LSN lsn;
	bool empty;
	ret = find_restore_start(cur, &lsn, &empty);
	DBT rec = {.flags = DB_DBT_REALLOC};
	bool ok = true;
	if (ret == 0 && !empty) {
		for (ret = cur->get(cur, &lsn, &rec, DB_SET); ret == 0 && ok; ret = cur->get(cur, &lsn, &rec, DB_NEXT))
			if (record_type(&rec) == SEGLOG_WRITE)
				ok = restore_record(b, &rec, err);
		if (ret == DB_NOTFOUND)
			ret = 0;
	}
	free(rec.data);
	cur->close(cur, 0);
	uint64_t bytes, segments;
	if (!qmgr_bodies_restore_end(b, &bytes, &segments, err))
		ok = false;
	if (!ok && ret == 0)
		ret = EIO;
	else if (segments > 0)
		log_info("queue: %" PRIu64 " bytes of %" PRIu64 " body segment%s written back from the log", bytes,
		           segments, segments == 1 ? "" : "s");
	return ret;
}
