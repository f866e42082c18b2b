/* acctd_batch.c: batches of records into the files, and the commit that
 * makes them count.  A commit appends each file's pending rows, then
 * replaces the state file (offsets and the highest sequence number); only
 * after that rename does the batch exist.  When anything fails (a full
 * disk), every file is cut back to its recorded size, nothing is
 * confirmed, and the same rows are tried again later.
 *
 * Rotation and reopening happen only between batches, so a batch never
 * straddles two files, and each of them saves the state at once, so the
 * state always names the live files. */
#include "acctd.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- state ------------------------------------------------------------------------- */

static void state_of_files(const struct acctd *a, bool with_pending, struct acctd_state *st)
{
	st->seq = with_pending ? a->batch_seq : a->seq;
	st->count = a->nfiles;
	st->marks = mem_calloc(a->nfiles ? a->nfiles : 1, sizeof(*st->marks));
	for (size_t i = 0; i < a->nfiles; i++) {
		const struct acctd_file *f = &a->files[i];
		st->marks[i] =
		    (struct acctd_file_mark){mem_strdup(f->path), f->dev, f->ino,
		                             f->size + (off_t)(with_pending ? f->pending.len : 0), f->started};
	}
}

static bool any_sync(const struct acctd *a)
{
	for (size_t i = 0; i < a->nfiles; i++)
		if (a->files[i].sync)
			return true;
	return false;
}

static bool save(struct acctd *a, bool with_pending, struct buf *err)
{
	struct acctd_state st;
	state_of_files(a, with_pending, &st);
	bool ok = acctd_state_save(a->state_path, &st, any_sync(a), err);
	acctd_state_free(&st);
	return ok;
}

bool acctd_save_state(struct acctd *a, struct buf *err)
{
	return save(a, false, err);
}

/* ---- records in ---------------------------------------------------------------------- */

void acctd_batch_add(struct acctd *a, uint64_t seq, enum acct_type type, const struct ipc_msg *rec, const void *payload,
                     size_t len)
{
	a->batch_seq = seq;
	a->batch_count++;
	if (acctd_filter_disabled(a->filter, type, rec))
		return;
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		if (acct_layout_holds(&f->layout, type))
			acct_layout_row(&f->layout, type, rec, &f->format, &f->pending);
	}
	acctd_tail_hold(&a->tail, seq, payload, len);
}

void acctd_batch_discard(struct acctd *a)
{
	for (size_t i = 0; i < a->nfiles; i++)
		buf_reset(&a->files[i].pending);
	acctd_tail_drop_batch(&a->tail);
	a->batch_seq = a->seq;
	a->batch_count = 0;
	a->retrying = false;
}

static void rollback(struct acctd *a)
{
	for (size_t i = 0; i < a->nfiles; i++)
		acctd_file_rollback(&a->files[i]);
}

static bool write_files(struct acctd *a, struct buf *err)
{
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		if (f->pending.len == 0)
			continue;
		/* logrotate may have moved the file since the last batch. */
		if (!acctd_file_follow(f, err) || !acctd_file_write_pending(f, err)) {
			rollback(a);
			return false;
		}
	}
	return true;
}

/* A rotation that failed (move-to unwritable) is not retried every tick. */
#define ROTATION_RETRY_SECONDS 60

static void rotate_due(struct acctd *a)
{
	int64_t now = time(NULL);
	bool rotated = false;
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		if (!acctd_file_rotation_due(f, now))
			continue;
		struct buf err = BUF_INIT;
		if (acctd_file_rotate(f, &err)) {
			rotated = true;
		} else {
			log_error("%s (trying again in a minute)", buf_cstr(&err));
			f->retry_rotation_at = now + ROTATION_RETRY_SECONDS;
		}
		acctd_file_expire(f, now);
		buf_free(&err);
	}
	struct buf err = BUF_INIT;
	if (rotated && !acctd_save_state(a, &err))
		log_error("%s", buf_cstr(&err));
	buf_free(&err);
}

bool acctd_batch_commit(struct acctd *a, struct buf *err)
{
	if (a->batch_seq <= a->seq)
		return true;
	if (!write_files(a, err) || !save(a, true, err)) {
		rollback(a);
		return false;
	}
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		f->size += (off_t)f->pending.len;
		buf_reset(&f->pending);
	}
	a->seq = a->batch_seq;
	a->batch_count = 0;
	acctd_tail_commit(&a->tail);
	if (a->retrying)
		log_info("records are written again (up to seq %llu)", (unsigned long long)a->seq);
	a->retrying = false;
	rotate_due(a);
	return true;
}

/* ---- whole-daemon operations --------------------------------------------------------- */

bool acctd_files_start(struct acctd *a, struct buf *err)
{
	struct acctd_state st;
	if (!acctd_state_load(a->state_path, &st, err))
		return false;
	a->seq = a->batch_seq = st.seq;
	bool ok = true;
	for (size_t i = 0; ok && i < a->nfiles; i++)
		ok = acctd_file_recover(&a->files[i], acctd_state_find(&st, a->files[i].path), err);
	acctd_state_free(&st);
	return ok && acctd_save_state(a, err);
}

bool acctd_reopen(struct acctd *a, struct buf *err)
{
	bool ok = true;
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		acctd_file_close(f);
		struct buf why = BUF_INIT;
		if (!acctd_file_open(f, &why)) {
			if (err->len)
				buf_puts(err, "; ");
			buf_puts(err, buf_cstr(&why));
			ok = false;
		}
		buf_free(&why);
	}
	struct buf why = BUF_INIT;
	if (!acctd_save_state(a, &why)) {
		buf_puts(err, buf_cstr(&why));
		ok = false;
	}
	buf_free(&why);
	return ok;
}

bool acctd_rotate(struct acctd *a, const char *path, struct buf *err)
{
	bool found = false, ok = true;
	for (size_t i = 0; i < a->nfiles; i++) {
		struct acctd_file *f = &a->files[i];
		if (path && *path && strcmp(path, f->path) != 0)
			continue;
		found = true;
		if (ok && !acctd_file_rotate(f, err))
			ok = false;
		acctd_file_expire(f, time(NULL));
	}
	if (!found) {
		buf_printf(err, "no <acct-file %s>", path);
		return false;
	}
	struct buf why = BUF_INIT;
	if (!acctd_save_state(a, &why) && ok) {
		buf_puts(err, buf_cstr(&why));
		ok = false;
	}
	buf_free(&why);
	return ok;
}

/* Old rotated files are looked for hourly: a directory scan is not free. */
#define EXPIRE_EVERY_SECONDS 3600

void acctd_housekeeping(struct acctd *a)
{
	if (a->retrying)
		return;
	rotate_due(a);
	int64_t now = time(NULL);
	if (now - a->last_expire < EXPIRE_EVERY_SECONDS)
		return;
	a->last_expire = now;
	for (size_t i = 0; i < a->nfiles; i++)
		acctd_file_expire(&a->files[i], now);
}
