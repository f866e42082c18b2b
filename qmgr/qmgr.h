/* qmgr.h: the private interfaces between the files of the queue manager.
 *
 *   qmgr_settings.c  where qmgr's settings come from (one function)
 *   qmgr_record.c    stored records: keys, encoding, strict decoding
 *   qmgr_store.c     the Berkeley DB environment and every write to it
 *   qmgr_bodies.c    message bodies in append-only segment files
 *   qmgr_flush.c     group commit: the thread that makes commits durable
 *   qmgr_enqueue.c   the enqueue server on <spool>/private/qmgr
 *   qmgr_sched.c     the scheduler: when a queue gets a job, applying results
 *   qmgr_smtp.c      the client of the job protocol (smtp, local)
 *   qmgr_local.c     which agent a queue's jobs go to (type file: local)
 *   qmgr_bounce.c    DSNs and bounce categories
 *   qmgr_backoff.c   backoff mode: smtp-pattern-list, backoff-* settings
 *   qmgr_outbox.c    the client that hands accounting records to acctd
 *   qmgr_control.c   control requests relayed by master (ternctl)
 *   qmgr_main.c      the daemon and its offline modes (-C, -L, -B)
 *
 * doc/queue.md describes the schema and the protocol. */
#ifndef TERN_QMGR_H
#define TERN_QMGR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "buf.h"
#include "ipc.h"
#include "value.h"

struct event_base;
struct conf;

/* ---- the log's next file, made ahead (qmgr_logahead.c) ----------------- */

struct qmgr_logahead;
/* The number of the log file being written and how far it is written;
 * false when unknown. */
typedef bool (*qmgr_log_file_fn)(void *ctx, uint32_t *number, uint64_t *offset);
/* The path of the queue log's file `number` in dir (to free). */
char *qmgr_log_file_path(const char *dir, uint32_t number);
/* Keeps log file number current() + 1 in dir ready, file_bytes of zeros,
 * once the current one is a quarter written (an idle queue writes none). */
struct qmgr_logahead *qmgr_logahead_start(const char *dir, uint64_t file_bytes, qmgr_log_file_fn current, void *ctx,
                                          struct buf *err);
/* Stops the thread; NULL is allowed.  A file made ahead stays for later. */
void qmgr_logahead_stop(struct qmgr_logahead *la);

/* ---- settings (qmgr_settings.c) ----------------------------------------- */

struct qmgr_settings {
	char *spool;           /* <spool>: the queue lives in <spool>/queue */
	bool sync_msg_create;  /* flush the log before acknowledging */
	struct conf *conf;     /* the whole configuration: queues resolve theirs */
	unsigned acct_records; /* record types some <acct-file> holds: bit 1u << enum acct_type */
};

/* Fills settings from the configuration file (spool, sync-msg-create).
 * false with the file's first error in err. */
bool qmgr_settings_load(struct qmgr_settings *s, const char *config_path, struct buf *err);
void qmgr_settings_free(struct qmgr_settings *s);

/* ---- queue IDs ---------------------------------------------------------- */

/* 16 upper-case hex digits: microseconds since the epoch, bumped past the
 * last ID issued so they stay unique and sort by arrival. */
#define QMGR_QID_LEN 16
#define QMGR_QID_SIZE (QMGR_QID_LEN + 1)

void qmgr_qid_format(uint64_t value, char qid[QMGR_QID_SIZE]);
bool qmgr_qid_valid(const char *qid);

/* ---- records (qmgr_record.c) -------------------------------------------- */

enum qmgr_rcpt_state {
	QMGR_RCPT_PENDING,
	QMGR_RCPT_DEFERRED,
	QMGR_RCPT_DELIVERED,
	QMGR_RCPT_BOUNCED,
};

const char *qmgr_rcpt_state_name(enum qmgr_rcpt_state state);
bool qmgr_rcpt_state_parse(const char *name, enum qmgr_rcpt_state *state);

/* One recipient of a message and where it stands. */
struct qmgr_rcpt {
	char *address;
	char *orcpt;  /* NULL when not given */
	char *notify; /* NULL when not given */
	char *queue;  /* "domain/vmta" */
	enum qmgr_rcpt_state state;
	int64_t attempts;
	int64_t next_attempt;  /* unix seconds; the due time while pending or deferred */
	char *last_result;     /* NULL until the first attempt */
	int64_t delay_notices; /* delay DSNs sent (NOTIFY=DELAY) */
	int64_t in_flight;     /* the job it was handed to, 0 when none */
	bool dsn_pending;      /* bounced; its DSN is not queued yet */
	char *dsn_status;      /* bounced: the status and the server for */
	char *remote_host;     /* its DSN (NULL when unknown) */
	bool in_message;       /* as read: kept inside its message's record */
};

void qmgr_rcpt_free(struct qmgr_rcpt *r);

/* The attributes of a message's envelope, as the enqueue protocol carries
 * them and the messages table stores them.  X(attr, presence in the
 * enqueue request). */
#define QMGR_ENVELOPE_ATTRS(X)                                                                                         \
	X(SENDER, IPC_REQUIRED)                                                                                        \
	X(ENVID, IPC_OPTIONAL)                                                                                         \
	X(RET, IPC_OPTIONAL)                                                                                           \
	X(SIZE, IPC_OPTIONAL)                                                                                          \
	X(BODY_TYPE, IPC_OPTIONAL)                                                                                     \
	X(SMTPUTF8, IPC_OPTIONAL)                                                                                      \
	X(CLIENT_IP, IPC_OPTIONAL)                                                                                     \
	X(CLIENT_NAME, IPC_OPTIONAL)                                                                                   \
	X(HELO, IPC_OPTIONAL)                                                                                          \
	X(SRC_TYPE, IPC_OPTIONAL)                                                                                      \
	X(LISTENER, IPC_OPTIONAL)                                                                                      \
	X(AUTH_USER, IPC_OPTIONAL)                                                                                     \
	X(VMTA, IPC_OPTIONAL)                                                                                          \
	X(MAIL_JOB, IPC_OPTIONAL)

/* Decodes the "enqueue" request that opens a message (strict). */
bool qmgr_envelope_decode(const void *payload, size_t len, struct ipc_msg *envelope, struct buf *err);
/* Checks what the decoder cannot: values the queue depends on. */
bool qmgr_envelope_check(const struct ipc_msg *envelope, struct buf *err);
/* The queue a recipient goes to: lower-cased domain + "/" + vmta or
 * "{default}".  false when the address has no domain. */
bool qmgr_queue_name(const char *address, const char *vmta, struct buf *name, struct buf *err);

/* Copies the attributes of list that msg holds into a frame being
 * written. */
void qmgr_record_copy(struct ipc_writer *w, const struct ipc_msg *msg, const enum ipc_attr *list, size_t n);
extern const enum ipc_attr qmgr_envelope_attrs[];
extern const size_t qmgr_envelope_attr_count;

/* Stored values are attribute lists (the IPC encoding without the length
 * prefix), so the strict IPC decoder guards every read.  A message whose
 * body is in a segment holds the body's reference (body_ref, NULL for
 * none), first: qmgr_record_message_ref finds it in the record's first
 * QMGR_MESSAGE_REF_LEN bytes without decoding the rest, and
 * qmgr_message_body_ref in a decoded record.  (Queues of schema 2 and
 * before keep it in bodies.db instead.) */
struct qmgr_body_ref;
#define QMGR_MESSAGE_REF_HEAD 14 /* type, name length, the name (8 bytes), value length */
#define QMGR_MESSAGE_REF_LEN (QMGR_MESSAGE_REF_HEAD + QMGR_BODY_REF_SIZE)
/* inline_rcpt: the record (qmgr_record_rcpt) of a message's one
 * recipient, kept inside the message's record (rcpt_inline, schema 4),
 * or NULL when its recipients have records of their own. */
void qmgr_record_message(struct buf *out, const char *qid, int64_t received, int64_t body_size, size_t nrcpt,
                         const struct ipc_msg *envelope, const struct qmgr_body_ref *body_ref,
                         const struct buf *inline_rcpt);
bool qmgr_record_message_decode(const void *v, size_t len, struct ipc_msg *msg, struct buf *err);
bool qmgr_record_message_ref(const void *v, size_t len, struct qmgr_body_ref *ref);
bool qmgr_message_body_ref(const struct ipc_msg *msg, struct qmgr_body_ref *ref);
void qmgr_record_rcpt(struct buf *out, const struct qmgr_rcpt *r);
bool qmgr_record_rcpt_decode(const void *v, size_t len, struct qmgr_rcpt *r, struct buf *err);

/* A queue's stored state. */
struct qmgr_queue_state {
	bool paused;
	bool backoff; /* mode: backoff instead of normal */
	int64_t connections;
	int64_t next_retry;    /* after a queue-level failure: no job before then */
	int64_t backoff_until; /* backoff mode ends then; 0: not by time */
};

void qmgr_record_queue(struct buf *out, const struct qmgr_queue_state *q);
bool qmgr_record_queue_decode(const void *v, size_t len, struct qmgr_queue_state *q, struct buf *err);

/* An accounting record waiting in the outbox for acctd. */
/* type is "r", "d", "b", "t" or "tq"; envelope, r and detail (smtp's
 * result frame: connection facts) may be NULL ("tq" has no recipient). */
void qmgr_record_outbox(struct buf *out, const char *type, const char *qid, size_t index, int64_t when,
                        const struct ipc_msg *envelope, const struct qmgr_rcpt *r, const struct ipc_msg *detail);
/* A "tq" record: a queue-level failure (no connection could be made). */
void qmgr_record_queue_failure(struct buf *out, const char *queue, const char *reason, int64_t when,
                               const struct ipc_msg *detail);
bool qmgr_record_outbox_decode(const void *v, size_t len, struct ipc_msg *msg, struct buf *err);

/* Keys.  Numbers are big-endian so that byte order is numeric order. */
void qmgr_key_rcpt(struct buf *key, const char *qid, size_t index);
void qmgr_key_body(struct buf *key, const char *qid, uint32_t chunk);
void qmgr_key_due(struct buf *key, const char *queue, int64_t due, const char *qid, size_t index);
void qmgr_key_seq(struct buf *key, uint64_t seq);
uint64_t qmgr_key_seq_value(const void *key, size_t len);

/* A key in printable form, for error messages about corrupt records. */
void qmgr_key_describe(struct buf *out, const void *key, size_t len);
/* Numbers as big-endian bytes (keys, references, log records), of
 * 1 to 8 bytes. */
void qmgr_be_put(unsigned char *out, uint64_t v, int bytes);
uint64_t qmgr_be_get(const unsigned char *in, int bytes);
/* A queue name's (or any string's) 32-bit FNV-1a hash, for tables in memory. */
uint32_t qmgr_name_hash(const char *s);

/* ---- the store (qmgr_store.c) ------------------------------------------- */

struct qmgr_store;

enum qmgr_open_mode {
	QMGR_OPEN_RECOVER,      /* normal recovery: every start */
	QMGR_OPEN_CATASTROPHIC, /* replay every log file: `ternctl queue recover` */
};

enum qmgr_store_status {
	QMGR_STORE_OK,
	QMGR_STORE_NOSPACE, /* the disk is full: try again later */
	QMGR_STORE_FAILED,  /* another database error: try again later */
};

/* Opens (creating if needed) the environment in dir, running recovery.
 * Takes an exclusive lock on dir, so a second qmgr (or an offline -L)
 * cannot open the queue beside a running one.  NULL with the reason in
 * err; a damaged environment names `ternctl queue recover`. */
struct qmgr_store *qmgr_store_open(const char *dir, enum qmgr_open_mode mode, struct buf *err);
/* Checkpoints and closes; NULL is allowed. */
void qmgr_store_close(struct qmgr_store *st);

/* Only the thread that opened the store may call its functions, except
 * those marked "any thread", which touch no Berkeley DB handle. */

/* Makes every transaction committed so far durable (one fsync of the
 * log, through Berkeley DB). */
bool qmgr_store_flush(struct qmgr_store *st, struct buf *err);
/* The same from a thread of its own (any thread, one at a time): the
 * segments, then the log files from the first that may hold commits not
 * yet synced this way up to the newest one qmgr_store_note_log_end saw.
 * Makes durable every transaction committed before that note. */
bool qmgr_store_flush_files(struct qmgr_store *st, struct buf *err);
/* Reads the log's end for qmgr_store_flush_files and the log file made
 * ahead (qmgr_store_flush and checkpoints note it too). */
void qmgr_store_note_log_end(struct qmgr_store *st);
/* Syncs every segment, logs that, writes the dirty pages and a
 * checkpoint record, and removes the segments freed before and the log
 * files no longer needed.  In four steps for a caller that does the
 * slow ones on a thread: begin, sync (any thread), end, remove (any
 * thread). */
struct qmgr_checkpoint {
	uint32_t end_file, end_offset; /* the log's end before the sync */
	uint64_t freed;                /* segments freed before it */
	bool synced;
	struct buf err;   /* why not */
	char **old_logs;  /* to remove once the checkpoint is made */
	bool made;        /* and the segments freed may go */
};
bool qmgr_store_checkpoint(struct qmgr_store *st, struct buf *err);
bool qmgr_store_checkpoint_begin(struct qmgr_store *st, struct qmgr_checkpoint *ck, struct buf *err);
void qmgr_store_checkpoint_sync(struct qmgr_store *st, struct qmgr_checkpoint *ck);
bool qmgr_store_checkpoint_end(struct qmgr_store *st, struct qmgr_checkpoint *ck, struct buf *err);
void qmgr_store_checkpoint_remove(struct qmgr_store *st, struct qmgr_checkpoint *ck);
/* The log has grown enough since the last checkpoint for another now. */
bool qmgr_store_checkpoint_due(struct qmgr_store *st);
/* The accounting record types to make (bit 1u << enum acct_type): those
 * some <acct-file> holds.  Records of other types are not written to the
 * outbox.  Until called, every type is made. */
void qmgr_store_want_records(struct qmgr_store *st, unsigned types);
/* true once Berkeley DB reported that the environment needs recovery:
 * the process must exit and be restarted. */
bool qmgr_store_broken(const struct qmgr_store *st);

/* A message as received: the decoded enqueue request, recipients
 * (address, orcpt, notify filled in) and body. */
struct qmgr_incoming {
	struct ipc_msg envelope;
	struct qmgr_rcpt *rcpts;
	size_t nrcpt;
	struct buf body;
};

void qmgr_incoming_free(struct qmgr_incoming *in);

/* Assigns a queue ID and writes the message, its body, its recipients
 * (pending, due now), their queues and one 'r' outbox record per
 * recipient (when wanted) in one transaction.  The commit is not flushed:
 * the caller makes it durable (qmgr_store_flush) before acknowledging it. */
enum qmgr_store_status qmgr_store_add_message(struct qmgr_store *st, const struct qmgr_incoming *in, int64_t now,
                                              char qid[QMGR_QID_SIZE], struct buf *err);

/* One message of qmgr_store_add_messages: in, and the ID it was given. */
struct qmgr_new_message {
	const struct qmgr_incoming *in;
	char qid[QMGR_QID_SIZE];
};
/* Several messages as qmgr_store_add_message writes one, in a single
 * transaction: all of them are kept or, on failure, none. */
enum qmgr_store_status qmgr_store_add_messages(struct qmgr_store *st, struct qmgr_new_message *msgs, size_t n,
                                               int64_t now, struct buf *err);

/* Records an attempt's outcome for one recipient: new state, next
 * attempt (deferred), last result, and an outbox record of type rtype
 * ('d', 'b', 't'; 0 for none), in one transaction. */
enum qmgr_store_status qmgr_store_update_rcpt(struct qmgr_store *st, const char *qid, size_t index,
                                              enum qmgr_rcpt_state state, int64_t next_attempt, const char *result,
                                              char rtype, int64_t now, struct buf *err);

/* An attempt's outcome for one recipient, with what its accounting
 * record says beyond the recipient's own fields. */
struct qmgr_outcome {
	enum qmgr_rcpt_state state;
	int64_t next_attempt;         /* deferred: the due time */
	const char *result;           /* the diagnostic, kept as last_result */
	const char *rtype;            /* "d", "b", "t" or NULL for no record */
	const struct ipc_msg *detail; /* smtp's result frame, or NULL */
	int64_t delay_notices;        /* deferred: the new count, 0 to keep it */
	int64_t job_id;               /* a replayed result: applied only while the
	                               * recipient is in flight for this job */
	int64_t running_job;          /* the job of this start, still running, that
	                               * reported it (0: none): a recipient in flight
	                               * for it has no due entry to remove */
	bool not_attempted;           /* smtp gave it back unsent: no attempt counted */
	bool dsn;                     /* bounced: a DSN is due; it stays pending (with
	                               * the message) until qmgr_store_dsn_sent */
};

/* Like qmgr_store_update_rcpt with an outcome.  A recipient already
 * delivered or bounced is left alone (*changed false): a result that
 * arrives twice is applied once.  When the last recipient of a message
 * is final the message and its body are removed in the same
 * transaction. */
enum qmgr_store_status qmgr_store_apply(struct qmgr_store *st, const char *qid, size_t index,
                                        const struct qmgr_outcome *o, int64_t now, bool *changed, struct buf *err);

/* One outcome of a batch: in, the recipient and its outcome; out, changed. */
struct qmgr_apply_item {
	const char *qid;
	size_t index;
	const struct qmgr_outcome *o;
	bool changed;
};

/* qmgr_store_apply for several outcomes in one transaction: all of them
 * or, on any failure, none (the caller may then apply them one by one). */
enum qmgr_store_status qmgr_store_apply_many(struct qmgr_store *st, struct qmgr_apply_item *items, size_t n,
                                             int64_t now, struct buf *err);

/* A recipient by its message and index. */
struct qmgr_rcpt_ref {
	char qid[QMGR_QID_SIZE];
	size_t index;
};

/* Marks recipients as handed to job_id, in one transaction (not
 * flushed): they leave due.db, and their due time becomes until, so that
 * should the job end without their results (or qmgr stop) they wait for
 * smtp's replayed results until then rather than being sent twice.
 * Final recipients are left alone.  stored (or NULL) holds each
 * recipient's record as read from the store in this turn of the loop,
 * which is then not read again. */
enum qmgr_store_status qmgr_store_mark_in_flight(struct qmgr_store *st, const struct qmgr_rcpt_ref *refs,
                                                 const struct qmgr_rcpt *stored, size_t n, int64_t job_id,
                                                 int64_t until, int64_t now, struct buf *err);
/* A job ended without the results of these recipients (its smtp
 * connection lost, or never handed over): those still in flight for
 * job_id (0: for any job) are due again at their due time, the end of
 * in-flight-grace, in one transaction. */
enum qmgr_store_status qmgr_store_hold(struct qmgr_store *st, const struct qmgr_rcpt_ref *refs, size_t n,
                                       int64_t job_id, int64_t now, struct buf *err);
/* After a start: reads up to max recipients from the key in from (empty:
 * the first) and holds, as qmgr_store_hold does, those in flight for a
 * job of an earlier start (a job ID not this_start plus a 32-bit count).
 * from becomes the key to go on from; *done once the table is read. */
enum qmgr_store_status qmgr_store_hold_earlier(struct qmgr_store *st, int64_t this_start, struct buf *from, size_t max,
                                               size_t *held, bool *done, struct buf *err);
/* Counts one more start of qmgr and returns the count: job IDs made
 * from it are unique across restarts. */
enum qmgr_store_status qmgr_store_next_job_gen(struct qmgr_store *st, uint64_t *gen, struct buf *err);

/* The DSN for a message's pending bounces is queued (dsn, or NULL when
 * none is wanted: a null sender, NOTIFY): in one transaction the DSN is
 * added as a new message (its ID in dsn_qid), the recipients' pending
 * marks are cleared and the message is removed when it is done. */
enum qmgr_store_status qmgr_store_dsn_sent(struct qmgr_store *st, const char *qid, const struct qmgr_incoming *dsn,
                                           int64_t now, char dsn_qid[QMGR_QID_SIZE], struct buf *err);
/* The messages with a pending DSN, and when their first bounce was. */
typedef bool (*qmgr_dsn_fn)(void *ctx, const char *qid, int64_t since);
bool qmgr_store_walk_dsns(struct qmgr_store *st, qmgr_dsn_fn fn, void *ctx, struct buf *err);
/* Whether every recipient of the message is delivered or bounced. */
bool qmgr_store_message_final(struct qmgr_store *st, const char *qid, bool *final, struct buf *err);

/* Writes a queue's state, and a "tq" accounting record about it when
 * detail is given (a queue-level failure), in one transaction. */
enum qmgr_store_status qmgr_store_put_queue(struct qmgr_store *st, const char *name, const struct qmgr_queue_state *q,
                                            const struct ipc_msg *detail, const char *reason, int64_t now,
                                            struct buf *err);
/* Makes every recipient of the queue due now ("schedule"). */
enum qmgr_store_status qmgr_store_reschedule(struct qmgr_store *st, const char *queue, int64_t now, size_t *moved,
                                             struct buf *err);
typedef bool (*qmgr_queue_fn)(void *ctx, const char *name, const struct qmgr_queue_state *q);
bool qmgr_store_walk_queues(struct qmgr_store *st, qmgr_queue_fn fn, void *ctx, struct buf *err);
/* The earliest due time in a queue; *found false when nothing is due. */
bool qmgr_store_first_due(struct qmgr_store *st, const char *queue, int64_t *due, bool *found, struct buf *err);

/* Reads.  false with the reason (and the key, for a corrupt record) in
 * err; *found says whether a missing key is the reason. */
bool qmgr_store_get_message(struct qmgr_store *st, const char *qid, struct ipc_msg *msg, bool *found, struct buf *err);
bool qmgr_store_get_rcpt(struct qmgr_store *st, const char *qid, size_t index, struct qmgr_rcpt *r, bool *found,
                         struct buf *err);
bool qmgr_store_get_queue(struct qmgr_store *st, const char *name, struct qmgr_queue_state *q, bool *found,
                          struct buf *err);
bool qmgr_store_read_body(struct qmgr_store *st, const char *qid, struct buf *body, struct buf *err);

/* Walks: the callback returns false to stop early. */
typedef bool (*qmgr_message_fn)(void *ctx, const char *qid, const struct ipc_msg *msg);
bool qmgr_store_walk_messages(struct qmgr_store *st, qmgr_message_fn fn, void *ctx, struct buf *err);
typedef bool (*qmgr_outbox_fn)(void *ctx, uint64_t seq, const struct ipc_msg *rec);
bool qmgr_store_walk_outbox(struct qmgr_store *st, qmgr_outbox_fn fn, void *ctx, struct buf *err);
/* From sequence number seq on. */
bool qmgr_store_walk_outbox_from(struct qmgr_store *st, uint64_t seq, qmgr_outbox_fn fn, void *ctx, struct buf *err);
/* The oldest record still in the outbox; *found false when it is empty. */
bool qmgr_store_outbox_first(struct qmgr_store *st, uint64_t *first, bool *found, struct buf *err);
/* The recipients of queue due at or before until, in due order. */
typedef bool (*qmgr_due_fn)(void *ctx, const char *qid, size_t index, int64_t due);
bool qmgr_store_walk_due(struct qmgr_store *st, const char *queue, int64_t until, qmgr_due_fn fn, void *ctx,
                         struct buf *err);
/* Every due recipient of a queue (pending or deferred, in due order). */
bool qmgr_store_walk_queue(struct qmgr_store *st, const char *queue, qmgr_due_fn fn, void *ctx, struct buf *err);

/* The sequence number the next outbox record will get. */
bool qmgr_store_outbox_next(struct qmgr_store *st, uint64_t *next, struct buf *err);
/* Removes outbox records up to and including seq (acctd confirmed them). */
enum qmgr_store_status qmgr_store_outbox_confirm(struct qmgr_store *st, uint64_t seq, struct buf *err);

/* Moves the bodies still in segments closed at least min_age seconds
 * ago back into bodies.db (chunks), at most 64 messages a transaction
 * and max_messages in all (the rest waits for the next call); their
 * segments are freed once empty.  Also closes an active segment that is
 * due to be closed.  *moved: how many bodies moved. */
enum qmgr_store_status qmgr_store_sweep_bodies(struct qmgr_store *st, int64_t min_age, size_t max_messages,
                                               size_t *moved, struct buf *err);
/* The segment that holds a message's body; false when the body is in
 * chunks (or the message is gone). */
bool qmgr_store_body_segment(struct qmgr_store *st, const char *qid, uint64_t *segment);
/* <queue dir>/bodies/NUMBER (tests); the caller frees it. */
char *qmgr_store_segment_path(const struct qmgr_store *st, uint64_t segment);
/* The daemon's: spare segments of zeros for new ones (qmgr_bodies.c) and
 * the log's next file made ahead (qmgr_logahead.c), by threads that
 * qmgr_store_close stops. */
bool qmgr_store_prepare_files(struct qmgr_store *st, struct buf *err);
/* How many spare segments are ready (tests). */
size_t qmgr_store_spare_segments(struct qmgr_store *st);

/* Stored tables, named for raw access by tests and repair tools. */
enum qmgr_table {
	QMGR_TABLE_META,
	QMGR_TABLE_MESSAGES,
	QMGR_TABLE_BODIES,
	QMGR_TABLE_RCPTS,
	QMGR_TABLE_DUE,
	QMGR_TABLE_QUEUES,
	QMGR_TABLE_OUTBOX,
	QMGR_TABLE_DSNS,
	QMGR_TABLE_COUNT
};

/* Overwrites one record with arbitrary bytes (tests of corrupt records). */
bool qmgr_store_put_raw(struct qmgr_store *st, enum qmgr_table table, const void *key, size_t klen, const void *val,
                        size_t vlen, struct buf *err);
/* One record's bytes as stored, into val (tests of the stored forms). */
bool qmgr_store_get_raw(struct qmgr_store *st, enum qmgr_table table, const void *key, size_t klen, struct buf *val,
                        struct buf *err);

/* ---- body segments (qmgr_bodies.c) --------------------------------------- */

/* A body in a segment file, as bodies.db stores it under the message's
 * queue ID + QMGR_BODY_REF_CHUNK: four big-endian 64-bit numbers. */
struct qmgr_body_ref {
	uint64_t segment, offset, length, checksum;
};
#define QMGR_BODY_REF_SIZE 32
#define QMGR_BODY_REF_CHUNK 0xFFFFFFFFu

uint64_t qmgr_body_checksum(const void *data, size_t len);
void qmgr_body_ref_encode(const struct qmgr_body_ref *r, unsigned char out[QMGR_BODY_REF_SIZE]);
bool qmgr_body_ref_decode(const void *v, size_t len, struct qmgr_body_ref *r);

/* Berkeley DB's log checksum (qmgr_loghash.c): h = h * 33 + byte from 0,
 * modulo 2^32, 64 bytes at a time.  The check compares it with Berkeley
 * DB's own on samples and, if they differ, says why and has the log use
 * Berkeley DB's. */
uint32_t qmgr_loghash(const void *data, size_t len);
bool qmgr_loghash_check(struct buf *why);

struct qmgr_bodies;

/* Creates <queue_dir>/bodies (0700) if missing.  Then, at open: count
 * every reference found in bodies.db, and scan, which removes the
 * segment files nothing names. */
struct qmgr_bodies *qmgr_bodies_new(const char *queue_dir, struct buf *err);
void qmgr_bodies_count(struct qmgr_bodies *b, uint64_t segment);
bool qmgr_bodies_scan(struct qmgr_bodies *b, int64_t now, struct buf *err);
/* Closes the fds (sync first: qmgr_bodies_sync). */
void qmgr_bodies_free(struct qmgr_bodies *b);
/* The daemon's: a thread keeps a spare segment of zeros ready for the
 * next one, and freed segments are kept as spares (up to two) instead
 * of being unlinked. */
bool qmgr_bodies_start_preparing(struct qmgr_bodies *b, struct buf *err);
size_t qmgr_bodies_spares(struct qmgr_bodies *b);

/* The event loop's side.  Append adds the body to the active segment (a
 * new one when it is 16 MB or 60 s old): into memory, and to the file by
 * write_pending, which the store calls before each commit, so that what a
 * transaction appended takes one pwrite (no fsync).  Both: false with
 * errno set.  Read checks length and checksum: a damaged body is an
 * error naming qid and the segment. */
bool qmgr_bodies_append(struct qmgr_bodies *b, const void *data, size_t len, int64_t now, struct qmgr_body_ref *ref,
                        struct buf *err);
bool qmgr_bodies_write_pending(struct qmgr_bodies *b, struct buf *err);
bool qmgr_bodies_read(struct qmgr_bodies *b, const char *qid, const struct qmgr_body_ref *ref, struct buf *body,
                      struct buf *err);
/* A committed transaction added or removed a reference.  A closed
 * segment left without one is unlinked after the next log flush. */
void qmgr_bodies_referenced(struct qmgr_bodies *b, uint64_t segment);
void qmgr_bodies_released(struct qmgr_bodies *b, uint64_t segment);
uint64_t qmgr_bodies_refs(struct qmgr_bodies *b, uint64_t segment);
/* Closes the active segment when it is due to (retire_old) or at once. */
void qmgr_bodies_retire_old(struct qmgr_bodies *b, int64_t now);
void qmgr_bodies_retire(struct qmgr_bodies *b, int64_t now);
/* A segment closed at least min_age seconds ago that is still named. */
bool qmgr_bodies_sweepable(struct qmgr_bodies *b, uint64_t segment, int64_t now, int64_t min_age);
bool qmgr_bodies_any_sweepable(struct qmgr_bodies *b, int64_t now, int64_t min_age);

/* Small segment writes also go into the queue log through fn (the
 * store's), which fails the write when it fails. */
typedef bool (*qmgr_bodies_log_fn)(void *ctx, uint64_t segment, uint64_t offset, const void *data, size_t len,
                                   struct buf *err);
void qmgr_bodies_set_log(struct qmgr_bodies *b, qmgr_bodies_log_fn fn, void *ctx);
/* After a crash, at open (after scan): restore writes logged bytes back
 * into a segment still named where the file differs; restore_end syncs
 * and says how much was written back. */
bool qmgr_bodies_restore(struct qmgr_bodies *b, uint64_t segment, uint64_t offset, const void *data, size_t len,
                         struct buf *err);
bool qmgr_bodies_restore_end(struct qmgr_bodies *b, uint64_t *bytes, uint64_t *segments, struct buf *err);

/* The flushing side, around a log flush: sync makes segments durable
 * (and closes rotated ones): all of them, or (!all, for a group commit)
 * only when a write since the last sync was not logged; and the
 * directory when a segment was made.  It notes in *mark the segments
 * freed so far; after the log flush, unlink_freed removes those. */
bool qmgr_bodies_sync(struct qmgr_bodies *b, bool all, uint64_t *mark, struct buf *err);
void qmgr_bodies_unlink_freed(struct qmgr_bodies *b, uint64_t mark);

/* ---- segment writes in the queue log (qmgr_seglog.c) --------------------- */

/* Berkeley DB's types (db.h), by their tags. */
struct __db_env;
struct __db_lsn;

/* All return Berkeley DB's codes.  configure (before the environment
 * opens) tells Berkeley DB the records are ours; write logs a segment write; end
 * gives the log's end; synced logs that the segment writes logged before
 * `before` are durable; old_files lists the log files Berkeley DB no
 * longer needs below file `below`, and remove (any thread) removes them;
 * restore (at open) writes back what
 * was logged since the last synced record. */
int qmgr_seglog_configure(struct __db_env *env);
int qmgr_seglog_write(struct __db_env *env, uint64_t segment, uint64_t offset, const void *data, size_t len);
int qmgr_seglog_end(struct __db_env *env, struct __db_lsn *end);
int qmgr_seglog_synced(struct __db_env *env, const struct __db_lsn *before);
int qmgr_seglog_old_files(struct __db_env *env, uint32_t below, char ***files);
void qmgr_seglog_remove(char **files);
int qmgr_seglog_restore(struct __db_env *env, struct qmgr_bodies *b, struct buf *err);

/* ---- group commit (qmgr_flush.c) ---------------------------------------- */

/* qmgr's event loop has two priorities; events are made at the lower
 * one unless set to QMGR_PRIORITY_FIRST. */
#define QMGR_PRIORITIES 2
#define QMGR_PRIORITY_FIRST 0

struct qmgr_flusher;

/* Starts the group commit: the event loop flushes the log itself at the
 * end of a turn while a flush takes under loop_flush_max_micros on
 * average (0: never), a thread when flushes are slower; another thread
 * checkpoints every checkpoint_secs. */
struct qmgr_flusher *qmgr_flusher_start(struct event_base *base, struct qmgr_store *st, int checkpoint_secs,
                                        int loop_flush_max_micros, struct buf *err);
/* Calls fn(ctx, ok, reason) in the event loop once every transaction
 * committed so far is durable (or its flush failed: !ok).  Commits that
 * arrive while a flush runs share the next one; the loop's own flush
 * comes after every callback ready in its turn. */
typedef void (*qmgr_durable_fn)(void *ctx, bool ok, const char *reason);
void qmgr_flusher_wait(struct qmgr_flusher *f, qmgr_durable_fn fn, void *ctx);
/* At the end of a callback: when a flush has ended since the loop last
 * took the outcomes, its replies go out right after this callback,
 * before the other ready ones.  One atomic read otherwise; f may be
 * NULL. */
void qmgr_flusher_notice(struct qmgr_flusher *f);
/* How many flushes there were, and how many of them the loop made. */
void qmgr_flusher_counts(struct qmgr_flusher *f, uint64_t *flushes, uint64_t *by_loop);
/* Stops the thread after a last flush (calling the waiting callbacks)
 * and logs how many commits shared each flush. */
void qmgr_flusher_stop(struct qmgr_flusher *f);
/* The pthread_cond_timedwait deadline millis from now, for qmgr's
 * threads (group commit, spare segments, log files made ahead). */
struct timespec qmgr_deadline_after(long millis);

/* ---- the enqueue server (qmgr_enqueue.c) --------------------------------- */

struct qmgr_enqueue;

/* Creates <spool>/private (0700) if missing and listens on
 * <spool>/private/qmgr.  As root: before the privilege drop.  Files are
 * given to owner (uid, gid) when they are not -1. */
int qmgr_enqueue_listen(const char *spool, uid_t uid, gid_t gid, struct buf *err);
struct qmgr_sched;
/* Control requests ("qmgr.VERB", relayed by master) arrive on the same
 * socket and go to sched. */
struct qmgr_enqueue *qmgr_enqueue_start(struct event_base *base, int listen_fd, struct qmgr_store *st,
                                        struct qmgr_flusher *flusher, bool sync, struct qmgr_sched *sched,
                                        struct buf *err);
/* Closes every connection and the listener. */
void qmgr_enqueue_stop(struct qmgr_enqueue *eq);

/* ---- the scheduler (qmgr_sched.c) ---------------------------------------- */

struct qmgr_sched;

/* ---- backoff mode (qmgr_backoff.c) --------------------------------------- */

enum qmgr_mode_action { QMGR_MODE_NONE, QMGR_MODE_BACKOFF, QMGR_MODE_NORMAL };

struct qmgr_patterns;     /* every <smtp-pattern-list>, compiled */
struct qmgr_pattern_list; /* one of them */

/* What replaces a queue's settings in backoff mode. */
struct qmgr_backoff_settings {
	uint64_t max_out;                         /* backoff-max-smtp-out */
	struct value_rate rate;                   /* backoff-max-msg-rate (else max-msg-rate) */
	struct value_interval_list retry;         /* backoff-retry-after */
	int64_t to_normal_after;                  /* backoff-to-normal-after, VALUE_NEVER */
	bool to_normal_on_delivery;               /* backoff-to-normal-after-delivery */
	char *notify;                             /* backoff-notify, comma-separated; NULL none */
	const struct qmgr_pattern_list *patterns; /* smtp-pattern-list */
};

struct qmgr_patterns *qmgr_patterns_load(const struct conf *conf);
void qmgr_patterns_free(struct qmgr_patterns *p);
const struct qmgr_pattern_list *qmgr_patterns_find(const struct qmgr_patterns *p, const char *name);
/* The mode action of the first rule matching a reply ("smtp;" stripped);
 * *to_normal_after: the rule's backoff-to-normal-after, else -1. */
enum qmgr_mode_action qmgr_patterns_match(const struct qmgr_pattern_list *l, const char *reply,
                                          int64_t *to_normal_after);

/* A queue as the scheduler holds it: state and resolved settings. */
struct qmgr_squeue {
	char *name; /* domain/vmta */
	struct qmgr_queue_state state;
	uint64_t failures; /* connection failures in a row: retry-after index */
	char *last_error;  /* the last queue-level failure, for show queues */
	/* settings from <domain> */
	uint64_t max_out;
	uint64_t priority;
	struct value_rate rate;
	struct value_interval_list retry;
	int64_t retry_rcpt;
	int64_t bounce_after;
	int64_t delay_every; /* notify-of-delay-every, VALUE_NEVER for none */
	bool local;          /* type file: jobs go to the local agent */
	struct qmgr_backoff_settings backoff;
	/* running */
	uint64_t jobs;    /* connections in use */
	int64_t next_due; /* cached earliest due time; 0 unknown, INT64_MAX none */
	int64_t rate_window;
	uint64_t rate_used;
	uint64_t rcpts; /* recipients waiting (pending or deferred) */
	uint64_t delivered, bounced, deferred;
	/* the enqueue batch (qmgr_sched_fresh_begin) that last asked for a
	 * fresh job here, and its answer: the job's slot, or none */
	uint64_t fresh_batch;
	size_t fresh_slot;
	bool fresh_refused;
	struct qmgr_squeue *next, *hash_next;
};

struct conf_settings;
/* The backoff-* settings and the pattern list, from the queue's <domain>
 * settings (after its normal ones). */
void qmgr_backoff_configure(struct qmgr_squeue *q, const struct conf_settings *cs, const struct qmgr_patterns *p);
/* The settings in force in the queue's mode. */
uint64_t qmgr_backoff_max_out(const struct qmgr_squeue *q);
const struct value_rate *qmgr_backoff_rate(const struct qmgr_squeue *q);
const struct value_interval_list *qmgr_backoff_retry(const struct qmgr_squeue *q);
struct qmgr_sched;
/* Mails backoff-notify that the queue entered or left backoff mode. */
void qmgr_backoff_notify(struct qmgr_sched *s, const struct conf *conf, const struct qmgr_squeue *q, const char *why);

/* Traffic over the last 60 units (seconds or minutes): a ring of
 * buckets, each stamped with the unit it counts. */
enum qmgr_traffic_kind { QMGR_IN_MSGS, QMGR_IN_RCPTS, QMGR_OUT_RCPTS, QMGR_TRAFFIC_KINDS };

struct qmgr_traffic_ring {
	int64_t unit; /* seconds per bucket */
	int64_t stamp[60];
	uint64_t count[60][QMGR_TRAFFIC_KINDS];
	/* the sums over the 60 units up to sum_unit, kept up by each add:
	 * summed afresh once per unit, not at every count */
	int64_t sum_unit;
	uint64_t sum[QMGR_TRAFFIC_KINDS];
};

/* Counts n and returns the kind's sum over the last 60 units, this one
 * included. */
uint64_t qmgr_traffic_add(struct qmgr_traffic_ring *r, int64_t now, enum qmgr_traffic_kind kind, uint64_t n);
/* The sum over the last 60 units. */
uint64_t qmgr_traffic_sum(const struct qmgr_traffic_ring *r, int64_t now, enum qmgr_traffic_kind kind);

struct qmgr_counters {
	struct qmgr_traffic_ring last_minute; /* by second */
	struct qmgr_traffic_ring last_hour;   /* by minute */
	uint64_t delivered, bounced, deferred, queue_failures, jobs;
	uint64_t received_msgs, received_rcpts; /* since start */
	/* the highest traffic of any hour and of any minute since start (the
	 * rings' sums as they stood after each count) */
	uint64_t top_hour[QMGR_TRAFFIC_KINDS], top_minute[QMGR_TRAFFIC_KINDS];
	int64_t started;
};

/* One recipient of a message that failed (or, for a delay notice, is
 * delayed): what its DSN reports. */
struct qmgr_failure {
	size_t index;
	const char *reason;
	const struct ipc_msg *detail; /* smtp's result frame, or NULL */
};

/* Called before recipients of one message are deferred with a delay
 * notice due (NOTIFY=DELAY), to queue one notice listing them all
 * (delayed true). */
typedef void (*qmgr_bounce_fn)(void *ctx, const char *qid, const struct qmgr_failure *failures, size_t n, bool delayed);
/* Queues the one DSN for a message's pending bounces. */
typedef void (*qmgr_dsn_flush_fn)(void *ctx, const char *qid);

struct qmgr_sched *qmgr_sched_start(struct event_base *base, struct qmgr_store *st, const struct conf *conf,
                                    const char *spool, struct buf *err);
void qmgr_sched_stop(struct qmgr_sched *s);
/* A reload: every queue's settings again from conf. */
void qmgr_sched_reload(struct qmgr_sched *s, const struct conf *conf);
/* n recipients of a new message went to this queue: due now. */
void qmgr_sched_queued(struct qmgr_sched *s, const char *queue, uint64_t n);
/* Recipients that left a queue without the scheduler (deleted). */
void qmgr_sched_removed(struct qmgr_sched *s, struct qmgr_squeue *q, uint64_t n);
/* Look for work at once (coalesced). */
void qmgr_sched_kick(struct qmgr_sched *s);
/* Stopping: no job starts any more; the running ones finish. */
void qmgr_sched_quiesce(struct qmgr_sched *s);
uint64_t qmgr_sched_jobs_running(const struct qmgr_sched *s);
struct qmgr_squeue *qmgr_sched_find(struct qmgr_sched *s, const char *name);
struct qmgr_squeue *qmgr_sched_first(struct qmgr_sched *s);
bool qmgr_sched_set_paused(struct qmgr_sched *s, struct qmgr_squeue *q, bool paused);
bool qmgr_sched_retry_now(struct qmgr_sched *s, struct qmgr_squeue *q);
/* Backoff or normal mode, by hand (ternctl set queue --mode). */
bool qmgr_sched_set_mode(struct qmgr_sched *s, struct qmgr_squeue *q, bool backoff, const char *why);
struct qmgr_counters *qmgr_sched_counters(struct qmgr_sched *s);
/* Counts traffic in the totals and the last minute and hour. */
void qmgr_sched_count(struct qmgr_sched *s, enum qmgr_traffic_kind kind, uint64_t n);
struct qmgr_store *qmgr_sched_store(struct qmgr_sched *s);
void qmgr_sched_set_bounce(struct qmgr_sched *s, qmgr_bounce_fn fn, qmgr_dsn_flush_fn flush, void *ctx);
/* From the smtp client: a recipient's result, a job's end (m NULL: the
 * connection was lost), every job lost at once.  A bounce's result frame
 * is taken over (m left empty): the job's bounces are applied together
 * at its end; their DSNs wait in the queue for the message's other
 * failures (qmgr_bounce_flush). */
void qmgr_sched_result(struct qmgr_sched *s, int64_t job_id, struct ipc_msg *m);
/* Results between begin and end are applied in one transaction at the
 * end (or before the next job end), their frames taken over; the smtp
 * client brackets each read with them. */
void qmgr_sched_results_begin(struct qmgr_sched *s);
void qmgr_sched_results_end(struct qmgr_sched *s);
void qmgr_sched_done(struct qmgr_sched *s, int64_t job_id, const struct ipc_msg *m);
struct qmgr_smtp;
/* The agent's connection is gone: its jobs end as lost (their recipients
 * are tried again); returns how many there were. */
size_t qmgr_sched_lost(struct qmgr_sched *s, const struct qmgr_smtp *agent);
/* A result smtp replays (on the enqueue socket) for a job it ran before
 * qmgr restarted or lost the connection. */
void qmgr_sched_replay(struct qmgr_sched *s, struct ipc_msg *m);

/* Fresh jobs: the new recipients of an enqueue batch whose queue can send
 * at once (room for a job, nothing older due, no rate limit) are written
 * in flight for a job by the batch's own transaction, and the job is
 * built from the messages in memory once it has committed: they are not
 * read back from the queue nor marked in flight by a transaction of
 * their own.  The rest are due now and wait for a scheduling pass.
 *   fresh = qmgr_sched_fresh_begin(s, now);
 *   qmgr_sched_fresh_claim() for each recipient (before the commit);
 *   then qmgr_sched_fresh_start() once committed, or
 *   qmgr_sched_fresh_cancel() (the claims undone) when not. */
struct qmgr_fresh;
struct qmgr_fresh *qmgr_sched_fresh_begin(struct qmgr_sched *s, int64_t now);
/* Recipient r of message (its index in the batch), going to queue: when a
 * fresh job takes it, r->in_flight and r->next_attempt say so and are
 * written with it. */
void qmgr_sched_fresh_claim(struct qmgr_fresh *f, size_t message, const char *queue, size_t body_len,
                            struct qmgr_rcpt *r);
/* The batch committed (msgs as given to qmgr_store_add_messages, with
 * their queue IDs): the fresh jobs go to smtp.  Frees f. */
void qmgr_sched_fresh_start(struct qmgr_fresh *f, const struct qmgr_new_message *msgs, size_t n);
/* The batch did not commit: the claimed recipients (msgs) are due now
 * again, as if never claimed.  Frees f. */
void qmgr_sched_fresh_cancel(struct qmgr_fresh *f, const struct qmgr_new_message *msgs, size_t n);

/* ---- the smtp client (qmgr_smtp.c) ----------------------------------------- */

struct qmgr_smtp;
struct qmgr_job_builder;

struct qmgr_smtp *qmgr_smtp_new(struct event_base *base, const char *spool, struct qmgr_sched *sched);
/* The same protocol with another agent, on <spool>/private/NAME. */
struct qmgr_smtp *qmgr_smtp_new_agent(struct event_base *base, const char *spool, const char *name,
                                      struct qmgr_sched *sched);
void qmgr_smtp_free(struct qmgr_smtp *c);
/* Connected, or a connection attempt may be made now. */
bool qmgr_smtp_available(struct qmgr_smtp *c);
/* A job is built frame by frame and sent by qmgr_smtp_run (send false:
 * dropped unsent).  false from run when smtp cannot be reached. */
struct qmgr_job_builder *qmgr_smtp_begin(struct qmgr_smtp *c, int64_t job_id, const char *queue);
/* The message's body (read beforehand, so that a message whose body
 * cannot be read stays out of the job) is taken over, body left empty. */
bool qmgr_smtp_add_message(struct qmgr_job_builder *b, const char *qid, const struct ipc_msg *envelope,
                           struct buf *body, struct buf *err);
/* r is the recipient's stored record. */
bool qmgr_smtp_add_rcpt(struct qmgr_job_builder *b, size_t index, const struct qmgr_rcpt *r);
void qmgr_smtp_end_message(struct qmgr_job_builder *b);
bool qmgr_smtp_run(struct qmgr_job_builder *b, bool send);
/* The job was built without error and smtp is connected. */
bool qmgr_smtp_can_run(const struct qmgr_job_builder *b);
/* Decodes smtp's "result" frame (strict). */
bool qmgr_smtp_decode_result(const void *payload, size_t len, struct ipc_msg *m, struct buf *err);

/* ---- the local agent (qmgr_local.c) ----------------------------------------- */

struct conf_settings;
/* Do a queue's jobs (resolved settings cs) go to the local agent? */
bool qmgr_local_queue(const struct conf_settings *cs);
/* The connection to <spool>/private/local. */
struct qmgr_smtp *qmgr_local_new(struct event_base *base, const char *spool, struct qmgr_sched *sched);

/* ---- bounces (qmgr_bounce.c) ------------------------------------------------ */

/* Loads the bounce categories and hooks DSNs into the scheduler (sched
 * may be NULL: categories only). */
struct qmgr_bounce *qmgr_bounce_new(struct qmgr_store *st, struct qmgr_sched *sched, const struct conf *conf);
void qmgr_bounce_free(struct qmgr_bounce *b);
/* A reload: categories and host name from conf. */
void qmgr_bounce_reload(struct qmgr_bounce *b, const struct conf *conf);
/* Queues the DSN for the message's pending bounces (qmgr_store_dsn_sent). */
void qmgr_bounce_flush(struct qmgr_bounce *b, const char *qid);
/* bounceCat of a failure: the first rule matching the status or the
 * diagnostic. */
void qmgr_bounce_category(const struct qmgr_bounce *b, const char *status, const char *diag, struct buf *out);

/* ---- the accounting outbox's client (qmgr_outbox.c) --------------------------- */

struct qmgr_outbox;

/* Feeds outbox records to acctd on <spool>/private/acctd in order,
 * deleting them once acctd confirms; reconnects with a back-off. */
struct qmgr_bounce;
struct qmgr_outbox *qmgr_outbox_start(struct event_base *base, struct qmgr_store *st, const char *spool,
                                      const struct qmgr_bounce *bounce);
void qmgr_outbox_stop(struct qmgr_outbox *o);
/* Records not yet confirmed by acctd. */
uint64_t qmgr_outbox_pending(struct qmgr_outbox *o);
bool qmgr_outbox_connected(struct qmgr_outbox *o);

/* ---- control requests (qmgr_control.c) -------------------------------------- */

struct qmgr_control;

struct qmgr_control *qmgr_control_new(struct qmgr_sched *sched, struct qmgr_outbox *outbox);
void qmgr_control_free(struct qmgr_control *ctl);
/* Answers one "qmgr.VERB" request: the reply, data and end frames are
 * appended to out. */
void qmgr_control_handle(struct qmgr_control *ctl, const char *verb, const void *payload, size_t len, struct buf *out);
/* Control requests on the enqueue socket go to ctl. */
void qmgr_enqueue_set_control(struct qmgr_enqueue *eq, struct qmgr_control *ctl);

#endif
