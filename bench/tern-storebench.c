/* tern-storebench.c: qmgr's queue store alone, driven as the daemon
 * drives it under load, and the CPU each step takes a message.
 *
 * Batches of new single-recipient messages are committed together (one
 * turn of qmgr's loop), each batch's recipients in flight for a fresh
 * job of its own, every second batch is flushed (one group commit), each
 * batch is then delivered (smtp's results for its running job applied in
 * one transaction, with the delivery's accounting record),
 * and every fifty batches the accounting records are confirmed, as
 * acctd's acknowledgement does.  The store runs its own threads as in
 * the daemon (the log's next file made ahead, spare body segments); the
 * daemon's checkpoints (one every 512 MB of log or so) are left out.
 *
 * A whole pipeline's rate moves by a sixth from one minute to the next
 * on a shared machine; the store's CPU a message, timed here without
 * the network, the other processes or their waits, is steadier, and is
 * what a change to the store changes.  Prints `name value` lines:
 * microseconds of CPU a message for each step (the calling thread) and
 * for the store's threads, and their total (building the messages is
 * left out).
 *
 * Usage: tern-storebench [-n messages] [-s body bytes] [-d directory] */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acct_fields.h"
#include "buf.h"
#include "ipc.h"
#include "mem.h"
#include "qmgr/qmgr.h"

#define BATCH 5               /* messages a turn of the loop commits */
#define ADDS_PER_FLUSH 2      /* turns a group commit covers */
#define BATCHES_PER_CONFIRM 50 /* acctd's acknowledgement, every 20 ms or so */
#define WARM_MESSAGES 2000    /* not counted: the first log files, the first segment */
#define FIRST_JOB_ID (INT64_C(1) << 32) /* a start's first job, as qmgr numbers them */
#define IN_FLIGHT_GRACE 60    /* seconds, in-flight-grace's default */

enum step { STEP_ADD, STEP_FLUSH, STEP_DELIVER, STEP_CONFIRM, STEPS };
static const char *const step_names[STEPS] = {"add", "flush", "deliver", "confirm"};

struct options {
	long messages;
	long body_bytes;
	const char *dir;
};

/* CPU time of this thread or of the process, to the nanosecond
 * (getrusage's is apportioned by the clock tick). */
static double cpu_seconds(clockid_t which)
{
	struct timespec ts;
	clock_gettime(which, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct buf *err)
{
	fprintf(stderr, "tern-storebench: %s: %s\n", what, buf_cstr(err));
	exit(1);
}

/* A frame's attributes, as daemons decode them. */
typedef bool (*frame_decoder)(const void *payload, size_t len, struct ipc_msg *msg, struct buf *err);

/* Ends the frame w writes into frame and decodes it into msg. */
static void decode_frame(struct ipc_writer *w, struct buf *frame, frame_decoder decode, struct ipc_msg *msg,
                         const char *what)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err) ||
	    !decode(frame->data + IPC_FRAME_HEADER, frame->len - IPC_FRAME_HEADER, msg, &err))
		die(what, &err);
	buf_free(frame);
	buf_free(&err);
}

/* An envelope as smtpd's enqueue request carries it. */
static void make_envelope(struct ipc_msg *envelope)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "bounces@sender.bench.test");
	ipc_put_str(&w, IPC_ATTR_CLIENT_IP, "127.0.0.1");
	ipc_put_str(&w, IPC_ATTR_CLIENT_NAME, "load.bench.test");
	ipc_put_str(&w, IPC_ATTR_HELO, "load.bench.test");
	ipc_put_str(&w, IPC_ATTR_BODY_TYPE, "8BITMIME");
	decode_frame(&w, &frame, qmgr_envelope_decode, envelope, "cannot make the envelope");
}

/* smtp's result frame for a delivered recipient. */
static void make_result(struct ipc_msg *result)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "result");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, 1);
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, "0000000000000001");
	ipc_put_int(&w, IPC_ATTR_RCPT_INDEX, 0);
	ipc_put_str(&w, IPC_ATTR_OUTCOME, "delivered");
	ipc_put_str(&w, IPC_ATTR_DSN_STATUS, "2.0.0");
	ipc_put_str(&w, IPC_ATTR_REASON, "250 2.0.0 ok");
	ipc_put_str(&w, IPC_ATTR_REMOTE_HOST, "mx.d0.bench.test");
	ipc_put_str(&w, IPC_ATTR_REMOTE_IP, "127.0.0.1");
	ipc_put_str(&w, IPC_ATTR_LOCAL_IP, "127.0.0.1");
	ipc_put_str(&w, IPC_ATTR_ESMTP, "8BITMIME PIPELINING CHUNKING SIZE");
	decode_frame(&w, &frame, qmgr_smtp_decode_result, result, "cannot make the result");
}

/* A message of one recipient, taken by job at once (a fresh job). */
static void make_incoming(struct qmgr_incoming *in, long n, long body_bytes, int64_t job, int64_t now)
{
	memset(in, 0, sizeof(*in));
	make_envelope(&in->envelope);
	in->rcpts = mem_calloc(1, sizeof(*in->rcpts));
	in->nrcpt = 1;
	in->rcpts[0].address = mem_asprintf("u%ld@d0.bench.test", n);
	in->rcpts[0].in_flight = job;
	in->rcpts[0].next_attempt = now + IN_FLIGHT_GRACE;
	buf_reserve(&in->body, (size_t)body_bytes);
	for (long i = 0; i < body_bytes; i++)
		buf_putc(&in->body, i % 78 == 77 ? '\n' : (char)('a' + i % 26));
}

struct run {
	struct qmgr_store *st;
	const struct ipc_msg *result;
	double step_cpu[STEPS];
};

/* step's CPU on this thread, added to the run's when counting */
static void timed(struct run *r, enum step step, bool counting, double started)
{
	if (counting)
		r->step_cpu[step] += cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - started;
}

static void one_batch(struct run *r, long first, long body_bytes, long batch_no, bool counting)
{
	struct qmgr_incoming in[BATCH];
	struct qmgr_new_message msgs[BATCH];
	int64_t now = (int64_t)time(NULL), job = FIRST_JOB_ID + batch_no;
	for (int i = 0; i < BATCH; i++) {
		make_incoming(&in[i], first + i, body_bytes, job, now);
		msgs[i].in = &in[i];
	}
	struct buf err = BUF_INIT;
	double t = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
	if (qmgr_store_add_messages(r->st, msgs, BATCH, now, &err) != QMGR_STORE_OK)
		die("cannot add messages", &err);
	timed(r, STEP_ADD, counting, t);
	if (batch_no % ADDS_PER_FLUSH == ADDS_PER_FLUSH - 1) {
		t = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
		if (!qmgr_store_flush(r->st, &err))
			die("cannot flush", &err);
		timed(r, STEP_FLUSH, counting, t);
	}
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "250 2.0.0 ok", .rtype = "d",
	                                 .detail = r->result, .running_job = job};
	struct qmgr_apply_item items[BATCH];
	for (int i = 0; i < BATCH; i++)
		items[i] = (struct qmgr_apply_item){msgs[i].qid, 0, &delivered, false};
	t = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
	if (qmgr_store_apply_many(r->st, items, BATCH, now, &err) != QMGR_STORE_OK)
		die("cannot apply the results", &err);
	timed(r, STEP_DELIVER, counting, t);
	if (batch_no % BATCHES_PER_CONFIRM == BATCHES_PER_CONFIRM - 1) {
		t = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
		uint64_t next;
		if (!qmgr_store_outbox_next(r->st, &next, &err))
			die("cannot read the outbox", &err);
		if (next > 0 && qmgr_store_outbox_confirm(r->st, next - 1, &err) != QMGR_STORE_OK)
			die("cannot confirm the outbox", &err);
		timed(r, STEP_CONFIRM, counting, t);
	}
	for (int i = 0; i < BATCH; i++)
		qmgr_incoming_free(&in[i]);
	buf_free(&err);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

static void usage(void)
{
	fprintf(stderr, "usage: tern-storebench [-n messages] [-s body bytes] [-d directory]\n");
	exit(2);
}

static struct options parse(int argc, char **argv)
{
	struct options o = {20000, 2048, NULL};
	int c;
	while ((c = getopt(argc, argv, "n:s:d:")) != -1) {
		char *end;
		long v = c == 'd' ? 0 : strtol(optarg, &end, 10);
		if (c != 'd' && (*end != '\0' || v <= 0))
			usage();
		if (c == 'n')
			o.messages = v;
		else if (c == 's')
			o.body_bytes = v;
		else if (c == 'd')
			o.dir = optarg;
		else
			usage();
	}
	return o;
}

int main(int argc, char **argv)
{
	struct options o = parse(argc, argv);
	const char *tmp = getenv("TMPDIR");
	char *made = mem_asprintf("%s/tern-storebench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	const char *dir = o.dir ? o.dir : mkdtemp(made);
	if (dir == NULL) {
		fprintf(stderr, "tern-storebench: cannot make a directory: %s\n", strerror(errno));
		return 1;
	}
	struct buf err = BUF_INIT;
	qmgr_loghash_check(&err); /* the daemon's checksum, as at its start */
	buf_reset(&err);
	struct run r = {0};
	r.st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	if (r.st == NULL || !qmgr_store_prepare_files(r.st, &err))
		die("cannot open the store", &err);
	/* the records the default <acct-file> holds */
	qmgr_store_want_records(r.st, 1u << ACCT_D | 1u << ACCT_B);
	struct ipc_msg result;
	make_result(&result);
	r.result = &result;
	long warm_batches = WARM_MESSAGES / BATCH, batches = o.messages / BATCH;
	double self_start = 0, thread_start = 0;
	for (long b = 0; b < warm_batches + batches; b++) {
		if (b == warm_batches) {
			self_start = cpu_seconds(CLOCK_PROCESS_CPUTIME_ID);
			thread_start = cpu_seconds(CLOCK_THREAD_CPUTIME_ID);
		}
		one_batch(&r, b * BATCH, o.body_bytes, b, b >= warm_batches);
	}
	/* the other threads: the process's CPU less this thread's */
	double threads = (cpu_seconds(CLOCK_PROCESS_CPUTIME_ID) - self_start) - (cpu_seconds(CLOCK_THREAD_CPUTIME_ID) - thread_start);
	if (!qmgr_store_flush(r.st, &err))
		die("cannot flush", &err);
	double per = 1e6 / (double)(batches * BATCH), total = threads;
	printf("store_messages %ld\n", batches * BATCH);
	for (int s = 0; s < STEPS; s++) {
		printf("store_cpu_us_per_msg_%s %.2f\n", step_names[s], r.step_cpu[s] * per);
		total += r.step_cpu[s];
	}
	printf("store_cpu_us_per_msg_threads %.2f\n", threads * per);
	printf("store_cpu_us_per_msg %.2f\n", total * per);
	ipc_msg_free(&result);
	qmgr_store_close(r.st);
	if (!o.dir && nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
		fprintf(stderr, "tern-storebench: cannot remove %s: %s\n", dir, strerror(errno));
	buf_free(&err);
	free(made);
	return 0;
}
