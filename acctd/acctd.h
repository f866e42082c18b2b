/* acctd.h: the private header of acctd, the accounting daemon.
 * acctd takes sequence-numbered accounting records from qmgr's outbox
 * over <spool>/private/acctd and writes them, exactly once, into every
 * <acct-file> that selects them, as PowerMTA-style CSV; it rotates the
 * files by itself, on request and on SIGUSR1 (logrotate).  How exactly
 * once is kept across crashes is in doc/accounting.md: in short, rows are
 * appended, then a small state file saying "file F is valid up to offset
 * O and everything up to seq S is written" replaces the old one by an
 * atomic rename, and only then is S confirmed; at start every file is cut
 * back to its recorded offset. */
#ifndef TERN_ACCTD_H
#define TERN_ACCTD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "acct_fields.h"
#include "buf.h"
#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "mem.h"

struct event_base;
struct event;
struct acctd_client;

/* ---- one accounting file (acctd_file.c) ------------------------------------ */

struct acctd_file {
	/* from the configuration */
	char *path;    /* the live file */
	char *dir;     /* its directory */
	char *stem;    /* its name without ".csv": rotated files are STEM-YYYY-MM-DD-NNNN.csv */
	char *move_to; /* where rotated files go; NULL: beside the live file */
	int64_t move_interval;
	uint64_t max_size;    /* 0 or VALUE_UNLIMITED: no limit */
	int64_t delete_after; /* VALUE_NEVER: keep rotated files */
	bool world_readable;
	bool sync;
	char *user_string;
	struct acct_format format;
	struct acct_layout layout;
	struct buf header; /* the header line, CRLF included */

	/* the open live file */
	int fd;
	dev_t dev;
	ino_t ino;
	off_t size;                /* bytes written and recorded in the state */
	int64_t started;           /* when this file was begun: names it when rotated */
	int64_t next_move;         /* time-based rotation is due then (0: none) */
	int64_t retry_rotation_at; /* after a failed rotation, not before */
	struct buf pending;        /* rows of the batch not yet written */
};

/* What the state file remembers of a file. */
struct acctd_file_mark {
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t started;
};

/* Cuts the file back to what mark says was written (removing rows of a
 * batch that was never confirmed), then opens it. */
bool acctd_file_recover(struct acctd_file *f, const struct acctd_file_mark *mark, struct buf *err);
/* Opens (creating with the header line) the live file. */
bool acctd_file_open(struct acctd_file *f, struct buf *err);
void acctd_file_close(struct acctd_file *f);
/* Reopens when the live path no longer names the open file (logrotate
 * moved it); true when it did. */
bool acctd_file_follow(struct acctd_file *f, struct buf *err);
/* Appends the pending rows; on failure the file is cut back to its size. */
bool acctd_file_write_pending(struct acctd_file *f, struct buf *err);
void acctd_file_rollback(struct acctd_file *f);
/* Moves the live file to its dated name and starts a new one.  Does
 * nothing for a file without rows. */
bool acctd_file_rotate(struct acctd_file *f, struct buf *err);
/* Rotates when max-size or move-interval says so. */
bool acctd_file_rotation_due(const struct acctd_file *f, int64_t now);
/* Removes rotated files older than delete-after (without move-to). */
void acctd_file_expire(const struct acctd_file *f, int64_t now);
void acctd_file_free(struct acctd_file *f);

/* ---- the configuration (acctd_config.c) ----------------------------------------- */

/* Builds the files of every <acct-file> block; false with "FILE:LINE:
 * reason" in err. */
bool acctd_config_files(const struct conf *conf, struct acctd_file **files, size_t *count, struct buf *err);

/* ---- the state file (acctd_state.c) ------------------------------------------------ */

struct acctd_state {
	uint64_t seq; /* every record up to this one is written */
	struct acctd_file_mark *marks;
	size_t count;
};

/* A missing file is an empty state (seq 0). */
bool acctd_state_load(const char *path, struct acctd_state *st, struct buf *err);
/* Replaces the file atomically; durable adds fsync of the file and its
 * directory. */
bool acctd_state_save(const char *path, const struct acctd_state *st, bool durable, struct buf *err);
const struct acctd_file_mark *acctd_state_find(const struct acctd_state *st, const char *path);
void acctd_state_free(struct acctd_state *st);

/* ---- the live stream (acctd_tail.c) ------------------------------------------------ */

/* Records kept for consumers that resume after a disconnect. */
#define ACCTD_TAIL_KEEP 10000

struct acctd_frame {
	uint64_t seq;
	struct buf bytes; /* the record's frame, length prefix included */
};

struct acctd_tail {
	struct acctd_frame *ring; /* ACCTD_TAIL_KEEP slots */
	size_t first, count;
	struct acctd_frame *batch; /* records of the batch not yet committed */
	size_t nbatch, batch_cap;
};

/* Keeps a record of the pending batch. */
void acctd_tail_hold(struct acctd_tail *t, uint64_t seq, const void *payload, size_t len);
void acctd_tail_drop_batch(struct acctd_tail *t);
/* The batch is written: its records join the ring. */
void acctd_tail_commit(struct acctd_tail *t);
/* The oldest sequence number kept (0: none). */
uint64_t acctd_tail_oldest(const struct acctd_tail *t);
/* Calls fn for every kept record after seq, in order; returns the last
 * sequence number handed over (seq when none). */
uint64_t acctd_tail_each_after(const struct acctd_tail *t, uint64_t seq,
                               void (*fn)(const struct acctd_frame *frame, void *arg), void *arg);
void acctd_tail_free(struct acctd_tail *t);

/* ---- the daemon --------------------------------------------------------------------- */

#define ACCTD_SOCKET "private/acctd"
#define ACCTD_STATE_DIR "acctd"

struct acctd_filter; /* disable-acct-records per domain (acctd_filter.c) */

struct acctd {
	char *config_path;
	struct conf *conf;
	char *spool;
	char *socket_path;
	char *state_path;
	struct acctd_file *files;
	size_t nfiles;
	struct acctd_filter *filter;

	uint64_t seq;       /* highest sequence number durably written */
	uint64_t batch_seq; /* highest one taken into the pending batch */
	size_t batch_count;
	bool retrying; /* the batch could not be written; retried by timer */
	bool ack_owed; /* records came in since the last ack */
	int64_t last_expire;

	struct event_base *base;
	int listen_fd;
	bool socket_inherited; /* from master (TERN_SERVICE_FD): master removes it */
	struct event *listen_ev, *usr1_ev, *tick_ev, *retry_ev;
	struct event *gather_ev; /* the batch is written when it fires */
	struct acctd_client *clients;
	struct acctd_client *feeder; /* the client whose records we take */
	struct acctd_tail tail;
};

/* acctd_batch.c: records in, rows out. */
/* Formats a record into the pending rows of every file that takes it. */
void acctd_batch_add(struct acctd *a, uint64_t seq, enum acct_type type, const struct ipc_msg *rec, const void *payload,
                     size_t len);
/* Writes the batch and records the new state; false (files cut back,
 * nothing confirmed, the batch kept for a retry) on failure. */
bool acctd_batch_commit(struct acctd *a, struct buf *err);
/* Forgets an unwritten batch (its sender is gone and will resend it). */
void acctd_batch_discard(struct acctd *a);
/* Writes the state file for the files as they are now. */
bool acctd_save_state(struct acctd *a, struct buf *err);
/* Reopens every file (SIGUSR1, "reopen"). */
bool acctd_reopen(struct acctd *a, struct buf *err);
/* Rotates one file (path) or all (NULL); false if path names none. */
bool acctd_rotate(struct acctd *a, const char *path, struct buf *err);
/* Timer work: time-based rotation, delete-after. */
void acctd_housekeeping(struct acctd *a);
/* Opens the files at start: cut back to the state, open, save. */
bool acctd_files_start(struct acctd *a, struct buf *err);

/* acctd_filter.c */
struct acctd_filter *acctd_filter_new(const struct conf *conf);
/* True when disable-acct-records for the record's domain names its type. */
bool acctd_filter_disabled(struct acctd_filter *flt, enum acct_type type, const struct ipc_msg *rec);
void acctd_filter_free(struct acctd_filter *flt);

/* acctd_server.c: the socket and its clients. */
bool acctd_server_bind(struct acctd *a, uid_t uid, gid_t gid, struct buf *err);
bool acctd_server_start(struct acctd *a, struct buf *err);
void acctd_server_stop(struct acctd *a);
/* The batch was written after a retry: confirm it and read on. */
void acctd_server_batch_done(struct acctd *a);
/* Drops the feeder (reload with an unwritten batch). */
void acctd_server_drop_feeder(struct acctd *a);

#endif
