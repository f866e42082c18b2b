/* test_qmgr_store.c: unit tests of qmgr's queue store on a Berkeley DB
 * environment in a temporary directory: messages, bodies, recipient
 * states, the due index, the outbox's gap-free sequence across reopens,
 * strict decoding of corrupt records, recovery after a crash (a child
 * that writes and _exit()s without closing), log removal after
 * checkpoints (whole and in steps), the flush by the log's files, the clear error on a damaged queue, and bodies in segment
 * files: round trip, damage, freeing, counts rebuilt at open, the sweep
 * back into bodies.db. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <db.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "buf.h"
#include "fileio.h"
#include "ipc.h"
#include "log.h"
#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

#define NOW 1800000000

struct fixture {
	char *dir;
	struct qmgr_store *st;
};

static struct qmgr_store *open_store(const char *dir)
{
	struct buf err = BUF_INIT;
	struct qmgr_store *st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	if (st == NULL)
		fprintf(stderr, "open: %s\n", buf_cstr(&err));
	assert_non_null(st);
	buf_free(&err);
	return st;
}

static int setup(void **state)
{
	struct fixture *f = mem_zalloc(sizeof(*f));
	f->dir = testutil_tmpdir();
	f->st = open_store(f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	qmgr_store_close(f->st);
	testutil_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

/* Builds a message the way the enqueue server does: the envelope from an
 * encoded request, recipients, a body. */
static void make_incoming(struct qmgr_incoming *in, const char *sender, const char *vmta, size_t nrcpt, size_t body_len)
{
	memset(in, 0, sizeof(*in));
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, sender);
	ipc_put_str(&w, IPC_ATTR_CLIENT_IP, "192.0.2.1");
	ipc_put_str(&w, IPC_ATTR_ENVID, "env-1");
	ipc_put_int(&w, IPC_ATTR_SMTPUTF8, 1);
	if (vmta)
		ipc_put_str(&w, IPC_ATTR_VMTA, vmta);
	assert_true(ipc_write_end(&w, &err));
	assert_true(
	    qmgr_envelope_decode(frame.data + IPC_FRAME_HEADER, frame.len - IPC_FRAME_HEADER, &in->envelope, &err));
	in->rcpts = mem_calloc(nrcpt, sizeof(*in->rcpts));
	in->nrcpt = nrcpt;
	for (size_t i = 0; i < nrcpt; i++) {
		in->rcpts[i].address = mem_asprintf("user%zu@Dom%zu.example", i, i % 2);
		in->rcpts[i].orcpt = i == 0 ? mem_strdup("rfc822;user0@dom0.example") : NULL;
		in->rcpts[i].notify = i == 0 ? mem_strdup("SUCCESS,FAILURE") : NULL;
	}
	for (size_t i = 0; i < body_len; i++)
		buf_putc(&in->body, (char)('a' + i % 26));
	buf_free(&frame);
	buf_free(&err);
}

static void add(struct qmgr_store *st, size_t nrcpt, size_t body_len, char qid[QMGR_QID_SIZE])
{
	struct qmgr_incoming in;
	struct buf err = BUF_INIT;
	make_incoming(&in, "sender@example.org", NULL, nrcpt, body_len);
	assert_int_equal(qmgr_store_add_message(st, &in, NOW, qid, &err), QMGR_STORE_OK);
	assert_true(qmgr_qid_valid(qid));
	qmgr_incoming_free(&in);
	buf_free(&err);
}

static void test_message_round_trip(void **state)
{
	struct fixture *f = *state;
	struct qmgr_incoming in;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, body = BUF_INIT;
	bool found;
	/* Over two body chunks, to see them put back together in order. */
	make_incoming(&in, "", "vmta-a", 3, 150000);
	assert_int_equal(qmgr_store_add_message(f->st, &in, NOW, qid, &err), QMGR_STORE_OK);
	assert_true(qmgr_store_flush(f->st, &err));

	struct ipc_msg msg;
	assert_true(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_QUEUE_ID), qid);
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_SENDER), "");
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_CLIENT_IP), "192.0.2.1");
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_VMTA), "vmta-a");
	assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_SMTPUTF8), 1);
	assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_RCPT_COUNT), 3);
	assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_BODY_SIZE), 150000);
	assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_RECEIVED), NOW);
	assert_false(ipc_msg_has(&msg, IPC_ATTR_AUTH_USER));
	ipc_msg_free(&msg);

	assert_true(qmgr_store_read_body(f->st, qid, &body, &err));
	assert_int_equal(body.len, in.body.len);
	assert_memory_equal(body.data, in.body.data, body.len);

	struct qmgr_rcpt r;
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_string_equal(r.address, "user0@Dom0.example");
	assert_string_equal(r.orcpt, "rfc822;user0@dom0.example");
	assert_string_equal(r.notify, "SUCCESS,FAILURE");
	assert_string_equal(r.queue, "dom0.example/vmta-a");
	assert_int_equal(r.state, QMGR_RCPT_PENDING);
	assert_int_equal(r.next_attempt, NOW);
	assert_null(r.last_result);
	qmgr_rcpt_free(&r);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 1, &r, &found, &err));
	assert_string_equal(r.queue, "dom1.example/vmta-a");
	assert_null(r.orcpt);
	qmgr_rcpt_free(&r);
	assert_false(qmgr_store_get_rcpt(f->st, qid, 3, &r, &found, &err));
	assert_false(found);

	struct qmgr_queue_state q;
	assert_true(qmgr_store_get_queue(f->st, "dom0.example/vmta-a", &q, &found, &err));
	assert_false(q.paused);
	assert_false(q.backoff);
	assert_false(qmgr_store_get_queue(f->st, "dom0.example/{default}", &q, &found, &err));
	assert_false(found);

	qmgr_incoming_free(&in);
	buf_free(&body);
	buf_free(&err);
}

static void test_queue_ids_increase(void **state)
{
	struct fixture *f = *state;
	char a[QMGR_QID_SIZE], b[QMGR_QID_SIZE];
	add(f->st, 1, 10, a);
	add(f->st, 1, 10, b);
	assert_true(strcmp(a, b) < 0);
	/* across a restart, past the reservation in meta.db */
	char c[QMGR_QID_SIZE], d[QMGR_QID_SIZE];
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 1, 10, c);
	assert_true(strcmp(b, c) < 0);
	/* a clock set back: IDs still go on from the reservation */
	unsigned char ahead[8];
	uint64_t future = UINT64_C(0x0F00000000000000);
	for (int i = 7; i >= 0; i--, future >>= 8)
		ahead[i] = (unsigned char)future;
	struct buf err = BUF_INIT;
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "last_qid", 8, ahead, 8, &err));
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 1, 10, d);
	assert_string_equal(d, "0F00000000000001");
	buf_free(&err);
	assert_true(qmgr_qid_valid("0123456789ABCDEF"));
	assert_false(qmgr_qid_valid("0123456789abcdef"));
	assert_false(qmgr_qid_valid("0123"));
}

struct due_list {
	size_t n;
	char qid[8][QMGR_QID_SIZE];
	size_t index[8];
};

static bool collect_due(void *ctx, const char *qid, size_t index, int64_t due)
{
	struct due_list *d = ctx;
	memcpy(d->qid[d->n], qid, QMGR_QID_SIZE);
	d->index[d->n++] = index;
	return d->n < 8;
}

static size_t count_due(struct qmgr_store *st, const char *queue, int64_t until)
{
	struct due_list d = {0};
	struct buf err = BUF_INIT;
	assert_true(qmgr_store_walk_due(st, queue, until, collect_due, &d, &err));
	buf_free(&err);
	return d.n;
}

struct outbox_list {
	size_t n;
	uint64_t seq[64];
	char type[64];
};

static bool collect_outbox(void *ctx, uint64_t seq, const struct ipc_msg *rec)
{
	struct outbox_list *o = ctx;
	o->seq[o->n] = seq;
	o->type[o->n++] = ipc_msg_str(rec, IPC_ATTR_RECORD_TYPE)[0];
	return o->n < 64;
}

static void read_outbox(struct qmgr_store *st, struct outbox_list *o)
{
	struct buf err = BUF_INIT;
	memset(o, 0, sizeof(*o));
	assert_true(qmgr_store_walk_outbox(st, collect_outbox, o, &err));
	buf_free(&err);
}

static void test_recipient_states(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct qmgr_rcpt r;
	bool found;
	add(f->st, 3, 100, qid); /* recipients 0 and 2 go to dom0.example */
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW), 2);
	assert_int_equal(count_due(f->st, "dom1.example/{default}", NOW), 1);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW - 1), 0);

	assert_int_equal(
	    qmgr_store_update_rcpt(f->st, qid, 0, QMGR_RCPT_DEFERRED, NOW + 600, "451 4.7.1 try later", 0, NOW, &err),
	    QMGR_STORE_OK);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.state, QMGR_RCPT_DEFERRED);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(r.next_attempt, NOW + 600);
	assert_string_equal(r.last_result, "451 4.7.1 try later");
	qmgr_rcpt_free(&r);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW), 1);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 600), 2);

	assert_int_equal(qmgr_store_update_rcpt(f->st, qid, 0, QMGR_RCPT_DELIVERED, 0, "250 ok", 'd', NOW, &err),
	                 QMGR_STORE_OK);
	assert_int_equal(
	    qmgr_store_update_rcpt(f->st, qid, 1, QMGR_RCPT_BOUNCED, 0, "550 no such user", 'b', NOW, &err),
	    QMGR_STORE_OK);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.state, QMGR_RCPT_DELIVERED);
	assert_int_equal(r.attempts, 2);
	qmgr_rcpt_free(&r);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 600), 1);
	assert_int_equal(count_due(f->st, "dom1.example/{default}", NOW + 600), 0);

	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 5);
	assert_memory_equal(o.type, "rrrdb", 5);

	assert_int_equal(qmgr_store_update_rcpt(f->st, qid, 7, QMGR_RCPT_DELIVERED, 0, "250", 'd', NOW, &err),
	                 QMGR_STORE_FAILED);
	assert_true(testutil_contains(buf_cstr(&err), "no recipient 7"));
	buf_free(&err);
}

/* A result that arrives twice is applied once; the last final recipient
 * takes its message and body with it. */
static void test_final_results_apply_once(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, body = BUF_INIT;
	struct ipc_msg msg;
	bool changed, found;
	add(f->st, 2, 100000, qid);
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "smtp;250 ok", .rtype = "d"};
	struct qmgr_outcome bounced = {.state = QMGR_RCPT_BOUNCED, .result = "smtp;550 5.1.1 no", .rtype = "b"};
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &bounced, NOW, &changed, &err), QMGR_STORE_OK);
	assert_false(changed);
	assert_true(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	ipc_msg_free(&msg);
	assert_int_equal(qmgr_store_apply(f->st, qid, 1, &bounced, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	buf_reset(&err);
	assert_false(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_false(found);
	assert_true(qmgr_store_read_body(f->st, qid, &body, &err));
	assert_int_equal(body.len, 0);
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 4);
	assert_memory_equal(o.type, "rrdb", 4);
	buf_free(&body);
	buf_free(&err);
}

/* Outcomes applied together: all in one transaction, each applied once;
 * a batch with one unknown recipient applies nothing. */
static void test_outcomes_applied_together(void **state)
{
	struct fixture *f = *state;
	char one[QMGR_QID_SIZE], two[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct ipc_msg msg;
	bool found;
	add(f->st, 1, 2000, one);
	add(f->st, 2, 2000, two);
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "smtp;250 ok", .rtype = "d"};
	struct qmgr_apply_item bad[] = {{one, 0, &delivered, false}, {two, 7, &delivered, false}};
	assert_int_not_equal(qmgr_store_apply_many(f->st, bad, 2, NOW, &err), QMGR_STORE_OK);
	assert_non_null(strstr(buf_cstr(&err), "no recipient 7"));
	buf_reset(&err);
	assert_true(qmgr_store_get_message(f->st, one, &msg, &found, &err));
	assert_true(found);
	ipc_msg_free(&msg);

	struct qmgr_apply_item items[] = {{one, 0, &delivered, false},
	                                  {two, 0, &delivered, false},
	                                  {two, 0, &delivered, false},
	                                  {two, 1, &delivered, false}};
	assert_int_equal(qmgr_store_apply_many(f->st, items, 4, NOW, &err), QMGR_STORE_OK);
	assert_true(items[0].changed);
	assert_true(items[1].changed);
	assert_false(items[2].changed); /* the same result twice counts once */
	assert_true(items[3].changed);
	assert_false(qmgr_store_get_message(f->st, one, &msg, &found, &err));
	assert_false(found);
	assert_false(qmgr_store_get_message(f->st, two, &msg, &found, &err));
	assert_false(found);
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 6);
	assert_memory_equal(o.type, "rrrddd", 6);
	buf_free(&err);
}

/* Whether a message is done is read from the recipients not yet known
 * to be done, a prefix that only a committed transaction moves: results
 * in any order, a deferral among them and a batch that fails half-way
 * leave the message until its last recipient is done. */
static void test_message_done_after_results_in_any_order(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct ipc_msg msg;
	bool changed, found;
	add(f->st, 5, 2000, qid);
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "smtp;250 ok", .rtype = "d"};
	struct qmgr_outcome deferred = {
	    .state = QMGR_RCPT_DEFERRED, .result = "smtp;451 later", .next_attempt = NOW + 60, .rtype = "t"};
	assert_int_equal(qmgr_store_apply(f->st, qid, 1, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_int_equal(qmgr_store_apply(f->st, qid, 3, &deferred, NOW, &changed, &err), QMGR_STORE_OK);

	/* 2 and 3 delivered, then an unknown recipient: none of it happened */
	struct qmgr_apply_item bad[] = {
	    {qid, 2, &delivered, false}, {qid, 3, &delivered, false}, {qid, 9, &delivered, false}};
	assert_int_not_equal(qmgr_store_apply_many(f->st, bad, 3, NOW, &err), QMGR_STORE_OK);
	buf_reset(&err);

	/* 4 delivered: 2 is pending and 3 deferred, the message stays */
	assert_int_equal(qmgr_store_apply(f->st, qid, 4, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_true(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_true(found);
	ipc_msg_free(&msg);
	assert_int_equal(qmgr_store_apply(f->st, qid, 3, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_true(found);
	ipc_msg_free(&msg);
	assert_int_equal(qmgr_store_apply(f->st, qid, 2, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_false(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_false(found);
	buf_free(&err);
}

static bool count_queue(void *ctx, const char *name, const struct qmgr_queue_state *q)
{
	(*(int *)ctx)++;
	return true;
}

/* A recipient handed to a job waits until the grace time; a replayed
 * result counts only for the job it is in flight for, and only once. */
static void test_in_flight_and_replay(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct qmgr_rcpt r;
	bool changed, found;
	add(f->st, 2, 100, qid);
	struct qmgr_rcpt_ref refs[2];
	for (size_t i = 0; i < 2; i++) {
		memcpy(refs[i].qid, qid, QMGR_QID_SIZE);
		refs[i].index = i;
	}
	int64_t job = ((int64_t)3 << 32) + 7;
	/* the records read here (as the scheduler hands them over), or read by
	 * the store itself */
	assert_int_equal(qmgr_store_mark_in_flight(f->st, refs, NULL, 2, job - 1, NOW + 300, NOW, &err), QMGR_STORE_OK);
	struct qmgr_rcpt stored[2];
	for (size_t i = 0; i < 2; i++) {
		assert_true(qmgr_store_get_rcpt(f->st, qid, i, &stored[i], &found, &err));
		assert_int_equal(stored[i].in_flight, job - 1);
	}
	/* in flight: no longer due, until a hold for another job changes nothing */
	assert_int_equal(count_due(f->st, "dom0.example/{default}", INT64_MAX), 0);
	assert_int_equal(qmgr_store_hold(f->st, refs, 2, job + 5, NOW, &err), QMGR_STORE_OK);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", INT64_MAX), 0);
	/* the job ends without results: due at the end of its grace */
	assert_int_equal(qmgr_store_hold(f->st, refs, 2, job - 1, NOW, &err), QMGR_STORE_OK);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 299), 0);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 300), 1);
	assert_int_equal(count_due(f->st, "dom1.example/{default}", NOW + 300), 1);
	/* taken by the next job: its due entry goes again */
	assert_int_equal(qmgr_store_mark_in_flight(f->st, refs, stored, 2, job, NOW + 600, NOW, &err), QMGR_STORE_OK);
	for (size_t i = 0; i < 2; i++)
		qmgr_rcpt_free(&stored[i]);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.in_flight, job);
	assert_int_equal(r.next_attempt, NOW + 600);
	qmgr_rcpt_free(&r);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", INT64_MAX), 0);
	assert_int_equal(count_due(f->st, "dom1.example/{default}", INT64_MAX), 0);
	/* a start after it finds them held by an earlier start's job */
	struct buf from = BUF_INIT;
	size_t held;
	bool done;
	int64_t this_start = (int64_t)3 << 32;
	assert_int_equal(qmgr_store_hold_earlier(f->st, this_start, &from, 100, &held, &done, &err), QMGR_STORE_OK);
	assert_int_equal(held, 0); /* job is this start's */
	assert_false(done);        /* recipients.db read; the messages' records next */
	assert_int_equal(qmgr_store_hold_earlier(f->st, this_start, &from, 100, &held, &done, &err), QMGR_STORE_OK);
	assert_int_equal(held, 0);
	assert_true(done);
	buf_reset(&from);
	this_start = (int64_t)4 << 32;
	assert_int_equal(qmgr_store_hold_earlier(f->st, this_start, &from, 1, &held, &done, &err), QMGR_STORE_OK);
	assert_int_equal(held, 1);
	assert_false(done); /* one record a step */
	assert_int_equal(qmgr_store_hold_earlier(f->st, this_start, &from, 1, &held, &done, &err), QMGR_STORE_OK);
	assert_int_equal(held, 1);
	assert_false(done); /* the messages' records next, for recipients inside them */
	assert_int_equal(qmgr_store_hold_earlier(f->st, this_start, &from, 1, &held, &done, &err), QMGR_STORE_OK);
	assert_int_equal(held, 0);
	assert_true(done);
	buf_free(&from);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 599), 0);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", NOW + 600), 1);
	assert_int_equal(count_due(f->st, "dom1.example/{default}", NOW + 600), 1);

	struct qmgr_outcome other = {.state = QMGR_RCPT_DELIVERED, .result = "250", .rtype = "d", .job_id = job + 1};
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &other, NOW, &changed, &err), QMGR_STORE_OK);
	assert_false(changed);
	struct qmgr_outcome mine = other;
	mine.job_id = job;
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &mine, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	struct qmgr_outcome back = {
	    .state = QMGR_RCPT_PENDING, .next_attempt = NOW, .job_id = job, .not_attempted = true};
	assert_int_equal(qmgr_store_apply(f->st, qid, 1, &back, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_int_equal(qmgr_store_apply(f->st, qid, 1, &back, NOW, &changed, &err), QMGR_STORE_OK);
	assert_false(changed);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 1, &r, &found, &err));
	assert_int_equal(r.in_flight, 0);
	assert_int_equal(r.attempts, 0);
	assert_int_equal(r.next_attempt, NOW);
	qmgr_rcpt_free(&r);

	uint64_t g1, g2;
	assert_int_equal(qmgr_store_next_job_gen(f->st, &g1, &err), QMGR_STORE_OK);
	assert_int_equal(qmgr_store_next_job_gen(f->st, &g2, &err), QMGR_STORE_OK);
	assert_int_equal(g2, g1 + 1);
	buf_free(&err);
}

static void test_reschedule_and_queue_state(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, frame = BUF_INIT;
	const char *queue = "dom0.example/{default}";
	add(f->st, 1, 10, qid);
	assert_int_equal(
	    qmgr_store_update_rcpt(f->st, qid, 0, QMGR_RCPT_DEFERRED, NOW + 600, "451 later", 't', NOW, &err),
	    QMGR_STORE_OK);
	int64_t due;
	bool found;
	assert_true(qmgr_store_first_due(f->st, queue, &due, &found, &err));
	assert_true(found);
	assert_int_equal(due, NOW + 600);
	size_t moved;
	assert_int_equal(qmgr_store_reschedule(f->st, queue, NOW, &moved, &err), QMGR_STORE_OK);
	assert_int_equal(moved, 1);
	assert_int_equal(count_due(f->st, queue, NOW), 1);

	struct ipc_writer w;
	struct ipc_msg detail;
	static const struct ipc_spec spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}, {IPC_ATTR_REMOTE_IP, IPC_OPTIONAL}};
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "done");
	ipc_put_str(&w, IPC_ATTR_REMOTE_IP, "192.0.2.9");
	assert_true(ipc_write_end(&w, &err));
	assert_true(ipc_decode(frame.data + IPC_FRAME_HEADER, frame.len - IPC_FRAME_HEADER, spec, 2, &detail, &err));
	struct qmgr_queue_state q = {.paused = true, .backoff = true, .next_retry = NOW + 60};
	assert_int_equal(qmgr_store_put_queue(f->st, queue, &q, &detail, "connection refused", NOW, &err),
	                 QMGR_STORE_OK);
	ipc_msg_free(&detail);
	struct qmgr_queue_state back;
	assert_true(qmgr_store_get_queue(f->st, queue, &back, &found, &err));
	assert_true(back.paused && back.backoff);
	assert_int_equal(back.next_retry, NOW + 60);
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 3); /* r, t, tq */
	assert_int_equal(o.type[2], 't');
	int queues = 0;
	assert_true(qmgr_store_walk_queues(f->st, count_queue, &queues, &err));
	assert_int_equal(queues, 1);
	uint64_t first;
	assert_true(qmgr_store_outbox_first(f->st, &first, &found, &err));
	assert_true(found);
	assert_int_equal(first, 1);
	buf_free(&frame);
	buf_free(&err);
}

static void test_outbox_sequence_across_reopen(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	add(f->st, 2, 10, qid);
	add(f->st, 1, 10, qid);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 3, 10, qid);

	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 6);
	for (size_t i = 0; i < o.n; i++)
		assert_int_equal(o.seq[i], i + 1);

	/* acctd confirmed the first four: the numbering goes on. */
	assert_int_equal(qmgr_store_outbox_confirm(f->st, 4, &err), QMGR_STORE_OK);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 1, 10, qid);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seq[0], 5);
	assert_int_equal(o.seq[2], 7);
	uint64_t next;
	assert_true(qmgr_store_outbox_next(f->st, &next, &err));
	assert_int_equal(next, 8);

	/* Every record confirmed, the outbox empty: the numbering still goes
	 * on, across a reopen, and no number is given twice. */
	assert_int_equal(qmgr_store_outbox_confirm(f->st, 7, &err), QMGR_STORE_OK);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 0);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_true(qmgr_store_outbox_next(f->st, &next, &err));
	assert_int_equal(next, 8);
	add(f->st, 1, 10, qid);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 1);
	assert_int_equal(o.seq[0], 8);
	buf_free(&err);
}

static bool count_message(void *ctx, const char *qid, const struct ipc_msg *msg)
{
	(*(int *)ctx)++;
	return true;
}

/* A new queue's tables have 16 KB pages. */
struct outbox_from {
	struct outbox_list list;
	uint64_t stop_after; /* 0: read on to the end */
};

static bool collect_outbox_until(void *ctx, uint64_t seq, const struct ipc_msg *rec)
{
	struct outbox_from *o = ctx;
	collect_outbox(&o->list, seq, rec);
	return o->stop_after == 0 || seq < o->stop_after;
}

static void read_outbox_from(struct qmgr_store *st, uint64_t seq, uint64_t stop_after, struct outbox_list *out)
{
	struct buf err = BUF_INIT;
	struct outbox_from o = {.stop_after = stop_after};
	assert_true(qmgr_store_walk_outbox_from(st, seq, collect_outbox_until, &o, &err));
	*out = o.list;
	buf_free(&err);
}

static uint64_t outbox_first(struct qmgr_store *st)
{
	uint64_t first;
	bool found;
	struct buf err = BUF_INIT;
	assert_true(qmgr_store_outbox_first(st, &first, &found, &err));
	buf_free(&err);
	return found ? first : 0;
}

/* A transaction's records share one outbox entry: a walk may start or
 * stop inside it, and a confirmation that ends inside it keeps the
 * records after its end, across a reopen too. */
static void test_outbox_batch_read_and_confirmed_in_part(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	add(f->st, 5, 10, qid); /* records 1-5, one entry */
	add(f->st, 2, 10, qid); /* records 6-7 */

	struct outbox_list o;
	read_outbox_from(f->st, 3, 0, &o);
	assert_int_equal(o.n, 5);
	assert_int_equal(o.seq[0], 3);
	assert_int_equal(o.seq[4], 7);
	read_outbox_from(f->st, 2, 4, &o); /* the walk stops after 4 */
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seq[2], 4);

	assert_int_equal(qmgr_store_outbox_confirm(f->st, 2, &err), QMGR_STORE_OK);
	assert_int_equal(outbox_first(f->st), 3);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 5);
	assert_int_equal(o.seq[0], 3);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_int_equal(outbox_first(f->st), 3);
	uint64_t next;
	assert_true(qmgr_store_outbox_next(f->st, &next, &err));
	assert_int_equal(next, 8);

	/* the first entry goes whole, the second in part */
	assert_int_equal(qmgr_store_outbox_confirm(f->st, 6, &err), QMGR_STORE_OK);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 1);
	assert_int_equal(o.seq[0], 7);
	assert_int_equal(qmgr_store_outbox_confirm(f->st, 7, &err), QMGR_STORE_OK);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 0);
	assert_int_equal(outbox_first(f->st), 0);
	buf_free(&err);
}

/* An entry whose numbers do not fit its key, or whose records do not
 * fit its count, is an error that names outbox.db and the key. */
static void test_outbox_batch_damaged(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, key = BUF_INIT;
	add(f->st, 3, 10, qid); /* records 1-3 under key 3 */
	struct buf stored = BUF_INIT;
	qmgr_key_seq(&key, 3);
	assert_true(qmgr_store_get_raw(f->st, QMGR_TABLE_OUTBOX, key.data, key.len, &stored, &err));
	assert_int_equal(stored.len, 45);
	unsigned char *entry = (unsigned char *)stored.data;

	/* a count larger than the records held */
	qmgr_be_put(entry + 9, 4, 4);
	qmgr_key_seq(&key, 4);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_OUTBOX, key.data, key.len, entry, stored.len, &err));
	struct outbox_list o;
	memset(&o, 0, sizeof(o));
	assert_false(qmgr_store_walk_outbox_from(f->st, 4, collect_outbox, &o, &err));
	assert_true(testutil_contains(buf_cstr(&err), "corrupt record in outbox.db"));
	assert_true(testutil_contains(buf_cstr(&err), "is missing from its batch"));

	/* a first record past the entry's last */
	buf_reset(&err);
	qmgr_be_put(entry + 1, 9, 8);
	qmgr_be_put(entry + 9, 3, 4);
	qmgr_key_seq(&key, 5);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_OUTBOX, key.data, key.len, entry, stored.len, &err));
	assert_false(qmgr_store_walk_outbox_from(f->st, 5, collect_outbox, &o, &err));
	assert_true(testutil_contains(buf_cstr(&err), "does not end at 5"));
	buf_free(&stored);
	buf_free(&key);
	buf_free(&err);
}

/* Whether table holds a record under key (which is freed). */
static bool raw_record_exists(struct qmgr_store *st, enum qmgr_table table, struct buf *key)
{
	struct buf val = BUF_INIT, err = BUF_INIT;
	bool found = qmgr_store_get_raw(st, table, key->data, key->len, &val, &err);
	buf_free(key);
	buf_free(&val);
	buf_free(&err);
	return found;
}

static bool rcpt_record_exists(struct qmgr_store *st, const char *qid, size_t index)
{
	struct buf key = BUF_INIT;
	qmgr_key_rcpt(&key, qid, index);
	return raw_record_exists(st, QMGR_TABLE_RCPTS, &key);
}

/* A message's one recipient lives inside the message's record, through
 * every change a recipient goes through, until the message goes. */
static void test_lone_recipient_inside_its_message(void **state)
{
	struct fixture *f = *state;
	const char *queue = "dom0.example/{default}";
	char qid[QMGR_QID_SIZE], pair[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct qmgr_rcpt r;
	bool found, changed;
	add(f->st, 1, 100, qid);
	add(f->st, 2, 100, pair);
	assert_false(rcpt_record_exists(f->st, qid, 0));
	assert_true(rcpt_record_exists(f->st, pair, 0) && rcpt_record_exists(f->st, pair, 1));
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_true(r.in_message);
	assert_string_equal(r.address, "user0@Dom0.example");
	assert_int_equal(r.state, QMGR_RCPT_PENDING);
	qmgr_rcpt_free(&r);
	assert_false(qmgr_store_get_rcpt(f->st, qid, 1, &r, &found, &err));
	assert_false(found);
	assert_int_equal(count_due(f->st, queue, NOW), 2); /* qid's and pair's first */

	/* deferred: written back inside, due again later */
	assert_int_equal(
	    qmgr_store_update_rcpt(f->st, qid, 0, QMGR_RCPT_DEFERRED, NOW + 600, "451 later", 't', NOW, &err),
	    QMGR_STORE_OK);
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.state, QMGR_RCPT_DEFERRED);
	assert_int_equal(r.attempts, 1);
	assert_string_equal(r.last_result, "451 later");
	assert_false(rcpt_record_exists(f->st, qid, 0));
	assert_int_equal(count_due(f->st, queue, NOW + 600), 2);

	/* taken by a job (as the scheduler read it), held when the job ends */
	struct qmgr_rcpt_ref ref = {.index = 0};
	memcpy(ref.qid, qid, QMGR_QID_SIZE);
	int64_t job = ((int64_t)3 << 32) + 1;
	assert_int_equal(qmgr_store_mark_in_flight(f->st, &ref, &r, 1, job, NOW + 300, NOW, &err), QMGR_STORE_OK);
	qmgr_rcpt_free(&r);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 1); /* pair's */
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.in_flight, job);
	qmgr_rcpt_free(&r);
	/* a later start finds it in flight for an earlier one, in the messages' records */
	struct buf from = BUF_INIT;
	size_t held = 0, step;
	bool done = false;
	while (!done) {
		assert_int_equal(qmgr_store_hold_earlier(f->st, (int64_t)4 << 32, &from, 1, &step, &done, &err),
		                 QMGR_STORE_OK);
		held += step;
	}
	buf_free(&from);
	assert_int_equal(held, 1);
	assert_int_equal(count_due(f->st, queue, NOW + 299), 1);
	assert_int_equal(count_due(f->st, queue, NOW + 300), 2);

	/* bounced with its DSN pending: the message stays until the DSN is queued */
	struct qmgr_outcome bounced = {
	    .state = QMGR_RCPT_BOUNCED, .result = "550 no", .rtype = "b", .dsn = true, .job_id = job};
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &bounced, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &bounced, NOW, &changed, &err), QMGR_STORE_OK);
	assert_false(changed); /* applied once */
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.state, QMGR_RCPT_BOUNCED);
	assert_true(r.dsn_pending);
	qmgr_rcpt_free(&r);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 1);
	char dsn_qid[QMGR_QID_SIZE];
	assert_int_equal(qmgr_store_dsn_sent(f->st, qid, NULL, NOW, dsn_qid, &err), QMGR_STORE_OK);
	struct ipc_msg msg;
	assert_false(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_false(found);
	assert_false(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_false(found);
	assert_true(qmgr_store_get_message(f->st, pair, &msg, &found, &err));
	ipc_msg_free(&msg);
	buf_free(&err);
}

/* A message of one recipient from a queue of schema 3 keeps its
 * recipient in recipients.db: read, changed and removed there. */
static void test_lone_recipient_of_an_older_queue(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, key = BUF_INIT, rec = BUF_INIT;
	struct qmgr_rcpt r;
	struct ipc_msg env;
	bool found, changed;
	add(f->st, 1, 100, qid);
	/* the old layout, by hand: the recipient's own record, none inside */
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	qmgr_record_rcpt(&rec, &r);
	qmgr_rcpt_free(&r);
	qmgr_key_rcpt(&key, qid, 0);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_RCPTS, key.data, key.len, rec.data, rec.len, &err));
	assert_true(qmgr_store_get_message(f->st, qid, &env, &found, &err));
	struct qmgr_body_ref ref;
	assert_true(qmgr_message_body_ref(&env, &ref));
	qmgr_record_message(&rec, qid, ipc_msg_int(&env, IPC_ATTR_RECEIVED), ipc_msg_int(&env, IPC_ATTR_BODY_SIZE), 1,
	                    &env, &ref, NULL);
	ipc_msg_free(&env);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_MESSAGES, qid, QMGR_QID_LEN, rec.data, rec.len, &err));

	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_false(r.in_message);
	qmgr_rcpt_free(&r);
	assert_int_equal(
	    qmgr_store_update_rcpt(f->st, qid, 0, QMGR_RCPT_DEFERRED, NOW + 600, "451 later", 't', NOW, &err),
	    QMGR_STORE_OK);
	assert_true(rcpt_record_exists(f->st, qid, 0));
	assert_true(qmgr_store_get_message(f->st, qid, &env, &found, &err));
	assert_false(ipc_msg_has(&env, IPC_ATTR_RCPT_INLINE));
	ipc_msg_free(&env);
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "250", .rtype = "d"};
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_false(rcpt_record_exists(f->st, qid, 0));
	assert_false(qmgr_store_get_message(f->st, qid, &env, &found, &err));
	assert_false(found);
	assert_int_equal(count_due(f->st, "dom0.example/{default}", INT64_MAX), 0);
	buf_free(&key);
	buf_free(&rec);
	buf_free(&err);
}

/* A queue of schema 1, 2 or 3 opens and is marked 4; a newer one is refused. */
static void test_schema_upgrade(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	unsigned char version[8];
	qmgr_be_put(version, 1, 8);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "schema", 6, version, 8, &err));
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	struct buf stored = BUF_INIT;
	assert_true(qmgr_store_get_raw(f->st, QMGR_TABLE_META, "schema", 6, &stored, &err));
	assert_int_equal(stored.len, 8);
	assert_int_equal(qmgr_be_get((const unsigned char *)stored.data, 8), 4);
	buf_reset(&stored);
	qmgr_be_put(version, 2, 8);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "schema", 6, version, 8, &err));
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_true(qmgr_store_get_raw(f->st, QMGR_TABLE_META, "schema", 6, &stored, &err));
	assert_int_equal(qmgr_be_get((const unsigned char *)stored.data, 8), 4);
	buf_free(&stored);

	qmgr_be_put(version, 5, 8);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "schema", 6, version, 8, &err));
	qmgr_store_close(f->st);
	f->st = qmgr_store_open(f->dir, QMGR_OPEN_RECOVER, &err);
	assert_null(f->st);
	assert_true(testutil_contains(buf_cstr(&err), "has schema version 5; this qmgr knows versions 1 to 4"));
	buf_free(&err);
}

/* A queue's row is made by its first message and kept as it is after:
 * later messages, in the same store or after a reopen, leave the state
 * written since alone. */
static void test_queue_row_made_once(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	const char *queue = "dom0.example/{default}";
	add(f->st, 1, 10, qid);
	struct qmgr_queue_state q = {.paused = true};
	assert_int_equal(qmgr_store_put_queue(f->st, queue, &q, NULL, NULL, NOW, &err), QMGR_STORE_OK);
	add(f->st, 1, 10, qid);
	struct qmgr_queue_state back;
	bool found;
	assert_true(qmgr_store_get_queue(f->st, queue, &back, &found, &err));
	assert_true(found && back.paused);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 1, 10, qid);
	assert_true(qmgr_store_get_queue(f->st, queue, &back, &found, &err));
	assert_true(found && back.paused);
	buf_free(&err);
}

/* A queue's row made by a batch that is then refused is not there, and
 * the next message to the queue makes it. */
static void test_queue_row_after_refused_batch(void **state)
{
	struct fixture *f = *state;
	const char *queue = "dom0.example/pool-a";
	struct qmgr_incoming in[2];
	struct qmgr_new_message msgs[2];
	struct qmgr_queue_state back;
	struct buf err = BUF_INIT;
	bool found;
	make_incoming(&in[0], "sender@example.org", "pool-a", 1, 10);
	memset(&in[1], 0, sizeof(in[1])); /* no recipients: refused */
	for (int i = 0; i < 2; i++)
		msgs[i] = (struct qmgr_new_message){.in = &in[i]};
	assert_int_equal(qmgr_store_add_messages(f->st, msgs, 2, NOW, &err), QMGR_STORE_FAILED);
	assert_false(qmgr_store_get_queue(f->st, queue, &back, &found, &err));
	assert_false(found);
	assert_int_equal(qmgr_store_add_messages(f->st, msgs, 1, NOW, &err), QMGR_STORE_OK);
	assert_true(qmgr_store_get_queue(f->st, queue, &back, &found, &err));
	assert_true(found);
	qmgr_incoming_free(&in[0]);
	buf_free(&err);
}

/* A result from a running job: the recipient in flight for it has no
 * due entry to remove; one held for another job keeps the way to its
 * due entry, which goes. */
static void test_result_of_running_job(void **state)
{
	struct fixture *f = *state;
	const char *queue = "dom0.example/{default}";
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	bool changed;
	add(f->st, 3, 100, qid); /* recipients 0 and 2 in dom0 */
	struct qmgr_rcpt_ref refs[3];
	for (size_t i = 0; i < 3; i++) {
		memcpy(refs[i].qid, qid, QMGR_QID_SIZE);
		refs[i].index = i;
	}
	int64_t job = ((int64_t)3 << 32) + 1, other = job + 1;
	assert_int_equal(qmgr_store_mark_in_flight(f->st, refs, NULL, 3, job, NOW + 300, NOW, &err), QMGR_STORE_OK);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 0);
	struct qmgr_outcome later = {
	    .state = QMGR_RCPT_DEFERRED, .next_attempt = NOW + 900, .result = "451 later", .running_job = job};
	assert_int_equal(qmgr_store_apply(f->st, qid, 0, &later, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 1);
	/* recipient 2's job ended without its result: held, due after the grace */
	assert_int_equal(qmgr_store_hold(f->st, &refs[2], 1, job, NOW, &err), QMGR_STORE_OK);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 2);
	struct qmgr_outcome delivered = {.state = QMGR_RCPT_DELIVERED, .result = "250", .running_job = other};
	assert_int_equal(qmgr_store_apply(f->st, qid, 2, &delivered, NOW, &changed, &err), QMGR_STORE_OK);
	assert_true(changed);
	assert_int_equal(count_due(f->st, queue, INT64_MAX), 1);
	struct qmgr_rcpt r;
	bool found;
	assert_true(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_int_equal(r.state, QMGR_RCPT_DEFERRED);
	assert_int_equal(r.in_flight, 0);
	assert_int_equal(r.next_attempt, NOW + 900);
	qmgr_rcpt_free(&r);
	buf_free(&err);
}

static void test_new_tables_page_size(void **state)
{
	struct fixture *f = *state;
	qmgr_store_close(f->st);
	f->st = NULL;
	char *path = testutil_path(f->dir, "recipients.db");
	DB *db;
	assert_int_equal(db_create(&db, NULL, 0), 0);
	assert_int_equal(db->open(db, NULL, path, NULL, DB_UNKNOWN, DB_RDONLY, 0), 0);
	u_int32_t pagesize = 0;
	assert_int_equal(db->get_pagesize(db, &pagesize), 0);
	assert_int_equal(pagesize, 16384);
	db->close(db, 0);
	free(path);
	f->st = open_store(f->dir);
}

/* Messages added together: distinct IDs in order, every one kept, and the
 * numbering goes on after them; with one refused, none is kept. */
static void test_messages_added_together(void **state)
{
	struct fixture *f = *state;
	struct qmgr_incoming in[3];
	struct qmgr_new_message msgs[3];
	struct buf err = BUF_INIT;
	for (int i = 0; i < 3; i++) {
		make_incoming(&in[i], "sender@example.org", NULL, (size_t)i + 1, 100);
		msgs[i] = (struct qmgr_new_message){.in = &in[i]};
	}
	assert_int_equal(qmgr_store_add_messages(f->st, msgs, 3, NOW, &err), QMGR_STORE_OK);
	assert_true(strcmp(msgs[0].qid, msgs[1].qid) < 0 && strcmp(msgs[1].qid, msgs[2].qid) < 0);
	for (int i = 0; i < 3; i++) {
		struct ipc_msg msg;
		bool found;
		assert_true(qmgr_store_get_message(f->st, msgs[i].qid, &msg, &found, &err));
		assert_int_equal(ipc_msg_int(&msg, IPC_ATTR_RCPT_COUNT), i + 1);
		ipc_msg_free(&msg);
	}
	char next[QMGR_QID_SIZE];
	add(f->st, 1, 10, next);
	assert_true(strcmp(msgs[2].qid, next) < 0);

	int before = 0, after = 0;
	assert_true(qmgr_store_walk_messages(f->st, count_message, &before, &err));
	qmgr_incoming_free(&in[1]);
	memset(&in[1], 0, sizeof(in[1])); /* no recipients: refused */
	assert_int_equal(qmgr_store_add_messages(f->st, msgs, 3, NOW, &err), QMGR_STORE_FAILED);
	assert_non_null(strstr(buf_cstr(&err), "without recipients"));
	assert_true(qmgr_store_walk_messages(f->st, count_message, &after, &err));
	assert_int_equal(after, before);
	for (int i = 0; i < 3; i++)
		qmgr_incoming_free(&in[i]);
	buf_free(&err);
}

static void test_corrupt_records(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	struct ipc_msg msg;
	bool found;
	add(f->st, 1, 10, qid);

	/* Garbage where a message belongs: an error naming the key. */
	const char garbage[] = "\x73\x06sender\x00\x00\xff\xff";
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_MESSAGES, qid, QMGR_QID_LEN, garbage, sizeof(garbage), &err));
	assert_false(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	assert_true(found);
	assert_true(testutil_contains(buf_cstr(&err), "corrupt record in messages.db, key "));
	assert_true(testutil_contains(buf_cstr(&err), qid));
	buf_reset(&err);
	int n = 0;
	assert_false(qmgr_store_walk_messages(f->st, count_message, &n, &err));
	assert_true(testutil_contains(buf_cstr(&err), qid));

	/* Well-formed attributes with a value the queue does not know. */
	struct qmgr_rcpt r = {.address = "a@b.c", .queue = "b.c/{default}"};
	struct buf rec = BUF_INIT, key = BUF_INIT;
	qmgr_record_rcpt(&rec, &r);
	char *state_at = memmem(rec.data, rec.len, "pending", 7);
	assert_non_null(state_at);
	memcpy(state_at, "pendinG", 7);
	qmgr_key_rcpt(&key, qid, 0);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_RCPTS, key.data, key.len, rec.data, rec.len, &err));
	buf_reset(&err);
	assert_false(qmgr_store_get_rcpt(f->st, qid, 0, &r, &found, &err));
	assert_true(testutil_contains(buf_cstr(&err), "unknown recipient state \"pendinG\""));
	assert_true(testutil_contains(buf_cstr(&err), "recipients.db"));

	/* A meta value of the wrong length: the queue does not open. */
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "outbox_next", 11, "xyz", 3, &err));
	qmgr_store_close(f->st);
	buf_reset(&err);
	f->st = qmgr_store_open(f->dir, QMGR_OPEN_RECOVER, &err);
	assert_null(f->st);
	assert_true(testutil_contains(buf_cstr(&err), "corrupt record in meta.db, key outbox_next"));
	buf_free(&rec);
	buf_free(&key);
	buf_free(&err);
}

/* The child commits a message and makes it durable, commits a second one
 * without a flush, then dies without closing anything. */
static void crash_child(const char *dir, int report_fd)
{
	struct buf err = BUF_INIT;
	struct qmgr_store *st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	if (st == NULL)
		_exit(3);
	char qid[QMGR_QID_SIZE * 2];
	struct qmgr_incoming in;
	make_incoming(&in, "crash@example.org", NULL, 2, 70000);
	if (qmgr_store_add_message(st, &in, NOW, qid, &err) != QMGR_STORE_OK || !qmgr_store_flush(st, &err))
		_exit(4);
	if (qmgr_store_add_message(st, &in, NOW, qid + QMGR_QID_SIZE, &err) != QMGR_STORE_OK)
		_exit(5);
	if (write(report_fd, qid, sizeof(qid)) != (ssize_t)sizeof(qid))
		_exit(6);
	_exit(0);
}

/* Runs child(dir, fd) in a process of its own, which must exit 0; its
 * report is left in the returned fd. */
static int run_child(const char *dir, void (*child)(const char *dir, int report_fd))
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		child(dir, fds[1]);
	}
	close(fds[1]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	return fds[0];
}

static void test_recovery_after_crash(void **state)
{
	struct fixture *f = *state;
	char before[QMGR_QID_SIZE];
	add(f->st, 1, 10, before);
	qmgr_store_close(f->st);
	f->st = NULL;

	int report = run_child(f->dir, crash_child);
	char qids[QMGR_QID_SIZE * 2];
	assert_int_equal(read(report, qids, sizeof(qids)), sizeof(qids));
	close(report);

	f->st = open_store(f->dir);
	struct buf err = BUF_INIT, body = BUF_INIT;
	struct ipc_msg msg;
	bool found;
	assert_true(qmgr_store_get_message(f->st, before, &msg, &found, &err));
	ipc_msg_free(&msg);
	assert_true(qmgr_store_get_message(f->st, qids, &msg, &found, &err));
	assert_string_equal(ipc_msg_str(&msg, IPC_ATTR_SENDER), "crash@example.org");
	ipc_msg_free(&msg);
	assert_true(qmgr_store_read_body(f->st, qids, &body, &err));
	assert_int_equal(body.len, 70000);
	/* New IDs stay past everything issued before the crash. */
	char after[QMGR_QID_SIZE];
	add(f->st, 1, 10, after);
	assert_true(strcmp(after, qids) > 0);
	/* The outbox numbering survived the crash without a gap. */
	struct outbox_list o;
	read_outbox(f->st, &o);
	for (size_t i = 0; i < o.n; i++)
		assert_int_equal(o.seq[i], i + 1);
	assert_true(o.n == 4 || o.n == 6);
	buf_free(&body);
	buf_free(&err);
}

static bool log_file_exists(const char *dir, int number)
{
	char *name = mem_asprintf("log.%010d", number);
	char *path = testutil_path(dir, name);
	bool exists = access(path, F_OK) == 0;
	free(path);
	free(name);
	return exists;
}

/* Once a checkpoint is past a log file, Berkeley DB removes it. */
static void test_checkpoint_removes_old_logs(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	char qid[QMGR_QID_SIZE];
	assert_true(log_file_exists(f->dir, 1));
	/* bodies no longer go through the log: big meta values do */
	char *filler = mem_zalloc(1024 * 1024);
	for (int i = 0; i < 25 && !log_file_exists(f->dir, 3); i++)
		assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_META, "filler", 6, filler, 1024 * 1024, &err));
	free(filler);
	add(f->st, 1, 10, qid);
	assert_true(log_file_exists(f->dir, 3));
	assert_true(qmgr_store_checkpoint(f->st, &err));
	assert_true(qmgr_store_checkpoint(f->st, &err));
	assert_false(log_file_exists(f->dir, 1));
	buf_free(&err);
}

static void unlink_log_file(const char *dir, int number)
{
	char *name = mem_asprintf("log.%010d", number);
	char *path = testutil_path(dir, name);
	assert_int_equal(unlink(path), 0);
	free(path);
	free(name);
}

static void fill_log_to_file(struct qmgr_store *st, const char *dir, int number)
{
	struct buf err = BUF_INIT;
	char *filler = mem_zalloc(1024 * 1024);
	for (int i = 0; i < 50 && !log_file_exists(dir, number); i++)
		assert_true(qmgr_store_put_raw(st, QMGR_TABLE_META, "filler", 6, filler, 1024 * 1024, &err));
	free(filler);
	buf_free(&err);
	assert_true(log_file_exists(dir, number));
}

/* A checkpoint in its four steps: the log files it frees are still there
 * when the loop's last step ends, and gone once the remove step ran. */
static void test_checkpoint_in_steps_removes_last(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	fill_log_to_file(f->st, f->dir, 3);
	struct qmgr_checkpoint ck = {.err = BUF_INIT};
	assert_true(qmgr_store_checkpoint_begin(f->st, &ck, &err));
	qmgr_store_checkpoint_sync(f->st, &ck);
	assert_true(ck.synced);
	assert_true(qmgr_store_checkpoint_end(f->st, &ck, &err));
	assert_true(log_file_exists(f->dir, 1));
	assert_non_null(ck.old_logs);
	assert_non_null(ck.old_logs[0]);
	qmgr_store_checkpoint_remove(f->st, &ck);
	assert_null(ck.old_logs);
	assert_false(log_file_exists(f->dir, 1));
	assert_false(log_file_exists(f->dir, 2));
	assert_true(log_file_exists(f->dir, 3));
	buf_free(&ck.err);
	buf_free(&err);
}

/* The flush thread's flush syncs the log by its files, from the one the
 * last flush ended in to the newest the loop noted: a file between them
 * that is gone (a checkpoint removed it) is passed over; a newest file
 * that is gone is an error. */
static void test_flush_by_files_follows_the_log(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	assert_true(qmgr_store_flush(f->st, &err)); /* it ended in file 1 */
	fill_log_to_file(f->st, f->dir, 3);
	qmgr_store_note_log_end(f->st);
	unlink_log_file(f->dir, 2);
	assert_true(qmgr_store_flush_files(f->st, &err));
	assert_int_equal(err.len, 0);
	fill_log_to_file(f->st, f->dir, 4);
	qmgr_store_note_log_end(f->st);
	unlink_log_file(f->dir, 4);
	assert_false(qmgr_store_flush_files(f->st, &err));
	assert_true(testutil_contains(buf_cstr(&err), "log.0000000004"));
	buf_free(&err);
}

static void test_second_open_refused(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	assert_null(qmgr_store_open(f->dir, QMGR_OPEN_RECOVER, &err));
	assert_true(testutil_contains(buf_cstr(&err), "in use by another process"));
	buf_free(&err);
}

static void test_damaged_queue_names_recover(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	add(f->st, 1, 10, qid);
	qmgr_store_close(f->st);
	f->st = NULL;
	/* Scribble over the first page of the messages table. */
	char *path = testutil_path(f->dir, "messages.db");
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	char junk[4096];
	memset(junk, 0x5a, sizeof(junk));
	assert_int_equal(write(fd, junk, sizeof(junk)), sizeof(junk));
	close(fd);
	free(path);
	struct buf err = BUF_INIT;
	assert_null(qmgr_store_open(f->dir, QMGR_OPEN_RECOVER, &err));
	assert_true(testutil_contains(buf_cstr(&err), "ternctl queue recover"));
	buf_free(&err);
}

static void test_catastrophic_recovery_keeps_messages(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	add(f->st, 2, 1000, qid);
	qmgr_store_close(f->st);
	struct buf err = BUF_INIT;
	f->st = qmgr_store_open(f->dir, QMGR_OPEN_CATASTROPHIC, &err);
	assert_non_null(f->st);
	struct ipc_msg msg;
	bool found;
	assert_true(qmgr_store_get_message(f->st, qid, &msg, &found, &err));
	ipc_msg_free(&msg);
	buf_free(&err);
}

static void test_names_and_envelope_checks(void **state)
{
	struct buf name = BUF_INIT, err = BUF_INIT;
	assert_true(qmgr_queue_name("Bob@Mail.Example.COM", NULL, &name, &err));
	assert_string_equal(buf_cstr(&name), "mail.example.com/{default}");
	assert_true(qmgr_queue_name("bob@x.org", "pool1", &name, &err));
	assert_string_equal(buf_cstr(&name), "x.org/pool1");
	assert_false(qmgr_queue_name("postmaster", NULL, &name, &err));
	assert_false(qmgr_queue_name("bob@", NULL, &name, &err));

	/* Strict: an attribute the enqueue request does not take. */
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	struct ipc_msg env;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "a@b.c");
	ipc_put_int(&w, IPC_ATTR_JOB_ID, 3);
	assert_true(ipc_write_end(&w, &err));
	buf_reset(&err);
	assert_false(qmgr_envelope_decode(frame.data + 4, frame.len - 4, &env, &err));
	assert_true(testutil_contains(buf_cstr(&err), "unexpected attribute job_id"));

	buf_reset(&frame);
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "a@b.c");
	ipc_put_str(&w, IPC_ATTR_VMTA, "a/b");
	assert_true(ipc_write_end(&w, &err));
	assert_true(qmgr_envelope_decode(frame.data + 4, frame.len - 4, &env, &err));
	buf_reset(&err);
	assert_false(qmgr_envelope_check(&env, &err));
	assert_true(testutil_contains(buf_cstr(&err), "bad virtual MTA name"));
	ipc_msg_free(&env);
	buf_free(&frame);
	buf_free(&name);
	buf_free(&err);
}

/* ---- bodies in segment files ------------------------------------------------ */

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static char *segment_of(struct qmgr_store *st, const char *qid)
{
	uint64_t segment;
	assert_true(qmgr_store_body_segment(st, qid, &segment));
	return qmgr_store_segment_path(st, segment);
}

/* acctd confirms every record so far. */
static void confirm_all(struct qmgr_store *st)
{
	struct buf err = BUF_INIT;
	assert_int_equal(qmgr_store_outbox_confirm(st, UINT64_MAX, &err), QMGR_STORE_OK);
	buf_free(&err);
}

/* Delivers the recipients, and acctd confirms the records: the message's
 * segment then holds nothing that is needed. */
static void deliver_all(struct qmgr_store *st, const char *qid, size_t nrcpt)
{
	struct buf err = BUF_INIT;
	for (size_t i = 0; i < nrcpt; i++)
		assert_int_equal(qmgr_store_update_rcpt(st, qid, i, QMGR_RCPT_DELIVERED, 0, "250 ok", 'd', NOW, &err),
		                 QMGR_STORE_OK);
	confirm_all(st);
	buf_free(&err);
}

static void assert_body(struct qmgr_store *st, const char *qid, size_t len)
{
	struct qmgr_incoming in;
	struct buf body = BUF_INIT, err = BUF_INIT;
	make_incoming(&in, "x@example.org", NULL, 1, len);
	if (!qmgr_store_read_body(st, qid, &body, &err))
		fprintf(stderr, "read_body: %s\n", buf_cstr(&err));
	assert_int_equal(body.len, len);
	assert_memory_equal(body.data, in.body.data, len);
	qmgr_incoming_free(&in);
	buf_free(&body);
	buf_free(&err);
}

static void test_body_in_segment(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE], empty[QMGR_QID_SIZE];
	add(f->st, 1, 150000, qid);
	char *path = segment_of(f->st, qid);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size >= 150000);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_body(f->st, qid, 150000);
	/* an empty body needs no segment */
	add(f->st, 1, 0, empty);
	uint64_t segment;
	assert_false(qmgr_store_body_segment(f->st, empty, &segment));
	assert_body(f->st, empty, 0);
	/* after a restart the body is read from the closed segment */
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_body(f->st, qid, 150000);
	free(path);
}

static bool in_bodies_db(struct qmgr_store *st, const char *qid)
{
	struct buf key = BUF_INIT;
	qmgr_key_body(&key, qid, QMGR_BODY_REF_CHUNK);
	return raw_record_exists(st, QMGR_TABLE_BODIES, &key);
}

/* A new message's record holds its body's reference, and bodies.db
 * nothing; the segment is counted at open from the record, and freed
 * once the message is delivered. */
static void test_body_reference_in_message_record(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	add(f->st, 1, 3000, qid);
	assert_false(in_bodies_db(f->st, qid));
	struct buf rec = BUF_INIT, err = BUF_INIT;
	assert_true(qmgr_store_get_raw(f->st, QMGR_TABLE_MESSAGES, qid, QMGR_QID_LEN, &rec, &err));
	struct qmgr_body_ref ref;
	assert_true(qmgr_record_message_ref(rec.data, rec.len, &ref));
	assert_int_equal(ref.length, 3000);
	uint64_t segment;
	assert_true(qmgr_store_body_segment(f->st, qid, &segment));
	assert_true(segment == ref.segment);
	char *path = qmgr_store_segment_path(f->st, segment);
	/* counted from the record at open: the segment stays, the body reads */
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_true(file_exists(path));
	assert_body(f->st, qid, 3000);
	deliver_all(f->st, qid, 1);
	assert_false(qmgr_store_body_segment(f->st, qid, &segment));
	free(path);
	buf_free(&rec);
	buf_free(&err);
}

/* A message of a queue of schema 2: its record without the reference,
 * the reference in bodies.db.  It is read, counted at open and removed
 * as before. */
static void test_body_reference_in_bodies_db_still_read(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	add(f->st, 2, 4000, qid);
	struct buf rec = BUF_INIT, err = BUF_INIT, key = BUF_INIT;
	struct ipc_msg env;
	bool found;
	assert_true(qmgr_store_get_message(f->st, qid, &env, &found, &err));
	struct qmgr_body_ref ref;
	assert_true(qmgr_message_body_ref(&env, &ref));
	/* the old layout, by hand */
	qmgr_record_message(&rec, qid, ipc_msg_int(&env, IPC_ATTR_RECEIVED), ipc_msg_int(&env, IPC_ATTR_BODY_SIZE), 2,
	                    &env, NULL, NULL);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_MESSAGES, qid, QMGR_QID_LEN, rec.data, rec.len, &err));
	unsigned char v[QMGR_BODY_REF_SIZE];
	qmgr_body_ref_encode(&ref, v);
	qmgr_key_body(&key, qid, QMGR_BODY_REF_CHUNK);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_BODIES, key.data, key.len, v, sizeof(v), &err));
	ipc_msg_free(&env);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_body(f->st, qid, 4000);
	uint64_t segment;
	assert_true(qmgr_store_body_segment(f->st, qid, &segment));
	assert_true(segment == ref.segment);
	deliver_all(f->st, qid, 2);
	assert_false(in_bodies_db(f->st, qid));
	assert_false(qmgr_store_body_segment(f->st, qid, &segment));
	buf_free(&rec);
	buf_free(&err);
	buf_free(&key);
}

/* What was just appended is read back from memory: the scheduler does
 * not pay a read of the disk for a body it has just written. */
static void test_fresh_body_read_from_memory(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	add(f->st, 1, 5000, qid);
	char *path = segment_of(f->st, qid);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\xff\xff\xff\xff", 4, 100), 4);
	close(fd);
	assert_body(f->st, qid, 5000); /* as written, not as the file now is */
	free(path);
}

/* Two transactions' segment writes, each also in the log (without a
 * copy by Berkeley DB): bodies and records read back intact. */
static void test_consecutive_logged_writes_read_back(void **state)
{
	struct fixture *f = *state;
	char first[QMGR_QID_SIZE], second[QMGR_QID_SIZE];
	add(f->st, 1, 300, first);
	add(f->st, 1, 300, second);
	assert_body(f->st, first, 300);
	assert_body(f->st, second, 300);
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.type[0], 'r');
	assert_int_equal(o.type[1], 'r');
}

/* The child commits a message with a small body and flushes it: the body
 * is in the log, its segment written but not synced.  Then it dies. */
static void logged_write_child(const char *dir, int report_fd)
{
	struct buf err = BUF_INIT;
	struct qmgr_store *st = qmgr_store_open(dir, QMGR_OPEN_RECOVER, &err);
	if (st == NULL)
		_exit(3);
	char qid[QMGR_QID_SIZE];
	uint64_t segment;
	struct qmgr_incoming in;
	make_incoming(&in, "logged@example.org", NULL, 2, 5000);
	char second[QMGR_QID_SIZE]; /* logged in a transaction of its own, after the first */
	if (qmgr_store_add_message(st, &in, NOW, qid, &err) != QMGR_STORE_OK ||
	    qmgr_store_add_message(st, &in, NOW, second, &err) != QMGR_STORE_OK || !qmgr_store_flush(st, &err))
		_exit(4);
	if (!qmgr_store_body_segment(st, qid, &segment))
		_exit(5);
	if (write(report_fd, qid, sizeof(qid)) != (ssize_t)sizeof(qid) ||
	    write(report_fd, second, sizeof(second)) != (ssize_t)sizeof(second) ||
	    write(report_fd, &segment, sizeof(segment)) != (ssize_t)sizeof(segment))
		_exit(6);
	_exit(0);
}

/* A crash of the machine loses what the page cache held of a segment
 * (here: the whole file's content); the log has it, and the next open
 * writes it back before anything reads it. */
static void test_logged_segment_write_restored_after_crash(void **state)
{
	struct fixture *f = *state;
	qmgr_store_close(f->st);
	f->st = NULL;
	int report = run_child(f->dir, logged_write_child);
	char qid[QMGR_QID_SIZE], second[QMGR_QID_SIZE];
	uint64_t segment;
	assert_int_equal(read(report, qid, sizeof(qid)), sizeof(qid));
	assert_int_equal(read(report, second, sizeof(second)), sizeof(second));
	assert_int_equal(read(report, &segment, sizeof(segment)), sizeof(segment));
	close(report);

	char name[32];
	snprintf(name, sizeof(name), "bodies/%016llX", (unsigned long long)segment);
	char *path = testutil_path(f->dir, name);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size >= 5000);
	assert_int_equal(truncate(path, 0), 0);

	f->st = open_store(f->dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(sb.st_size >= 5000);
	assert_body(f->st, qid, 5000);
	assert_body(f->st, second, 5000);
	/* the accounting records went to the segment (and the log) too */
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 4);
	free(path);
}

static void test_damaged_segment_is_an_error(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, body = BUF_INIT;
	add(f->st, 1, 5000, qid);
	char *path = segment_of(f->st, qid);
	const char *name = strrchr(path, '/') + 1;
	/* the active segment's last bytes are read from memory, as written;
	 * after a restart the segment is read from the disk */
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	/* one byte flipped */
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	char c;
	assert_int_equal(pread(fd, &c, 1, 100), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, 100), 1);
	assert_false(qmgr_store_read_body(f->st, qid, &body, &err));
	assert_true(testutil_contains(buf_cstr(&err), qid));
	assert_true(testutil_contains(buf_cstr(&err), name));
	assert_true(testutil_contains(buf_cstr(&err), "checksum mismatch"));
	/* cut short */
	assert_int_equal(ftruncate(fd, 4000), 0);
	close(fd);
	buf_reset(&err);
	assert_false(qmgr_store_read_body(f->st, qid, &body, &err));
	assert_true(testutil_contains(buf_cstr(&err), qid));
	assert_true(testutil_contains(buf_cstr(&err), "too short"));
	/* gone */
	assert_int_equal(unlink(path), 0);
	buf_reset(&err);
	assert_false(qmgr_store_read_body(f->st, qid, &body, &err));
	assert_true(testutil_contains(buf_cstr(&err), name));
	free(path);
	buf_free(&body);
	buf_free(&err);
}

static void test_freed_segment_is_unlinked_after_flush(void **state)
{
	struct fixture *f = *state;
	char a[QMGR_QID_SIZE], b[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	add(f->st, 2, 3000, a);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	char *old = segment_of(f->st, a);
	add(f->st, 1, 3000, b);
	char *active = segment_of(f->st, b);
	assert_string_not_equal(old, active);

	/* one of two recipients: the message and its segment stay */
	assert_int_equal(qmgr_store_update_rcpt(f->st, a, 0, QMGR_RCPT_DELIVERED, 0, "250 ok", 'd', NOW, &err),
	                 QMGR_STORE_OK);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_true(file_exists(old));
	/* the message goes; its records keep the segment until acctd has
	 * them, and then only until the log was flushed */
	assert_int_equal(qmgr_store_update_rcpt(f->st, a, 1, QMGR_RCPT_DELIVERED, 0, "250 ok", 'd', NOW, &err),
	                 QMGR_STORE_OK);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_true(file_exists(old));
	confirm_all(f->st);
	assert_true(file_exists(old));
	assert_true(qmgr_store_flush(f->st, &err));
	assert_false(file_exists(old));
	/* the active segment stays, even empty */
	deliver_all(f->st, b, 1);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_true(file_exists(active));
	/* and goes at close */
	qmgr_store_close(f->st);
	assert_false(file_exists(active));
	f->st = open_store(f->dir);
	free(old);
	free(active);
	buf_free(&err);
}

static void test_reopen_counts_and_removes_orphans(void **state)
{
	struct fixture *f = *state;
	char a[QMGR_QID_SIZE], b[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	add(f->st, 1, 70000, a);
	add(f->st, 1, 70000, b);
	char *path = segment_of(f->st, a);
	qmgr_store_close(f->st);
	f->st = NULL;
	/* a segment no reference names, as a crash leaves one */
	char *bodies = testutil_path(f->dir, "bodies");
	char *orphan = testutil_path(bodies, "00000000000000AB");
	int fd = open(orphan, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "junk", 4), 4);
	close(fd);
	char *not_a_segment = testutil_path(bodies, "README");
	fd = open(not_a_segment, O_WRONLY | O_CREAT, 0600);
	close(fd);

	f->st = open_store(f->dir);
	assert_false(file_exists(orphan));
	assert_true(file_exists(not_a_segment));
	assert_true(file_exists(path));
	assert_body(f->st, a, 70000);
	/* two references were counted: the segment goes with the second */
	deliver_all(f->st, a, 1);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_true(file_exists(path));
	deliver_all(f->st, b, 1);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_false(file_exists(path));
	/* new segments are numbered past every one seen */
	char c[QMGR_QID_SIZE];
	add(f->st, 1, 10, c);
	uint64_t segment;
	assert_true(qmgr_store_body_segment(f->st, c, &segment));
	assert_true(segment > 0xAB);
	free(not_a_segment);
	free(orphan);
	free(bodies);
	free(path);
	buf_free(&err);
}

static void test_sweep_moves_bodies_back(void **state)
{
	struct fixture *f = *state;
	char a[QMGR_QID_SIZE], b[QMGR_QID_SIZE], c[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	size_t moved;
	add(f->st, 2, 150000, a);
	add(f->st, 1, 20, b);
	char *path = segment_of(f->st, a);
	/* the active segment is not swept */
	assert_int_equal(qmgr_store_sweep_bodies(f->st, 0, 100, &moved, &err), QMGR_STORE_OK);
	assert_int_equal(moved, 0);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	add(f->st, 1, 30, c);
	/* too young */
	assert_int_equal(qmgr_store_sweep_bodies(f->st, 3600, 100, &moved, &err), QMGR_STORE_OK);
	assert_int_equal(moved, 0);
	assert_int_equal(qmgr_store_sweep_bodies(f->st, 0, 100, &moved, &err), QMGR_STORE_OK);
	assert_int_equal(moved, 2);
	uint64_t segment;
	assert_false(qmgr_store_body_segment(f->st, a, &segment));
	assert_false(qmgr_store_body_segment(f->st, b, &segment));
	assert_true(qmgr_store_body_segment(f->st, c, &segment));
	assert_body(f->st, a, 150000);
	assert_body(f->st, b, 20);
	assert_true(file_exists(path));
	/* the messages' 'r' records are in it too: acctd confirms them */
	assert_true(qmgr_store_flush(f->st, &err));
	assert_true(file_exists(path));
	confirm_all(f->st);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_false(file_exists(path));
	/* chunks are removed with the message as before */
	deliver_all(f->st, a, 2);
	struct ipc_msg msg;
	bool found;
	assert_false(qmgr_store_get_message(f->st, a, &msg, &found, &err));
	assert_false(found);
	struct buf body = BUF_INIT;
	assert_true(qmgr_store_read_body(f->st, a, &body, &err));
	assert_int_equal(body.len, 0);
	assert_body(f->st, b, 20);
	buf_free(&body);
	free(path);
	buf_free(&err);
}

/* At 16 MB a new segment starts; the full one is closed, kept while
 * named, and unlinked once its last message is gone. */
static void test_segment_rotates_at_16_mb(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	enum { N = 17 };
	char qids[N][QMGR_QID_SIZE];
	for (int i = 0; i < N; i++)
		add(f->st, 1, 1024 * 1024, qids[i]);
	char *first = segment_of(f->st, qids[0]);
	char *last = segment_of(f->st, qids[N - 1]);
	assert_string_not_equal(first, last);
	char *second_last = segment_of(f->st, qids[N - 2]);
	assert_string_equal(first, second_last);
	assert_body(f->st, qids[3], 1024 * 1024);
	for (int i = 0; i < N - 1; i++) {
		deliver_all(f->st, qids[i], 1);
		assert_true(qmgr_store_flush(f->st, &err));
		assert_true(file_exists(first) == (i < N - 2));
	}
	assert_true(file_exists(last));
	assert_body(f->st, qids[N - 1], 1024 * 1024);
	free(first);
	free(second_last);
	free(last);
	buf_free(&err);
}

/* Accounting records live in the body segments, outbox.db names them:
 * they outlive their message until acctd confirms them, across a
 * restart too; a record stored whole (older queues) is still read. */
static void test_outbox_records_in_segments(void **state)
{
	struct fixture *f = *state;
	char a[QMGR_QID_SIZE];
	struct buf err = BUF_INIT;
	add(f->st, 1, 3000, a);
	char *path = segment_of(f->st, a);
	assert_int_equal(qmgr_store_update_rcpt(f->st, a, 0, QMGR_RCPT_DELIVERED, 0, "250 ok", 'd', NOW, &err),
	                 QMGR_STORE_OK);
	assert_true(qmgr_store_flush(f->st, &err));
	struct ipc_msg msg;
	bool found;
	assert_false(qmgr_store_get_message(f->st, a, &msg, &found, &err));
	assert_false(found);
	assert_true(file_exists(path)); /* the 'r' and 'd' records are in it */

	/* counted at open: the segment is no orphan */
	qmgr_store_close(f->st);
	f->st = open_store(f->dir);
	assert_true(file_exists(path));
	struct outbox_list o;
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.type[0], 'r');
	assert_int_equal(o.type[1], 'd');

	/* a record stored whole, as before segments held them */
	struct qmgr_incoming in;
	make_incoming(&in, "old@example.org", NULL, 1, 10);
	struct qmgr_rcpt r = in.rcpts[0];
	r.queue = "example.net/{default}";
	r.state = QMGR_RCPT_BOUNCED;
	struct buf key = BUF_INIT, val = BUF_INIT;
	qmgr_record_outbox(&val, "b", "0000000000000ABC", 0, NOW, &in.envelope, &r, NULL);
	qmgr_key_seq(&key, 100);
	assert_true(qmgr_store_put_raw(f->st, QMGR_TABLE_OUTBOX, key.data, key.len, val.data, val.len, &err));
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seq[2], 100);
	assert_int_equal(o.type[2], 'b');
	uint64_t first;
	assert_true(qmgr_store_outbox_first(f->st, &first, &found, &err));
	assert_true(found);
	assert_int_equal(first, 1);

	/* confirmed: the records go, and the segment after the next flush */
	confirm_all(f->st);
	read_outbox(f->st, &o);
	assert_int_equal(o.n, 0);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_false(file_exists(path));
	qmgr_incoming_free(&in);
	buf_free(&key);
	buf_free(&val);
	free(path);
	buf_free(&err);
}

/* A damaged body the sweep cannot move is logged once, not at every
 * sweep; it stays where it is. */
static void test_sweep_logs_a_damaged_body_once(void **state)
{
	struct fixture *f = *state;
	char qid[QMGR_QID_SIZE];
	struct buf err = BUF_INIT, text = BUF_INIT;
	add(f->st, 1, 5000, qid);
	char *path = segment_of(f->st, qid);
	qmgr_store_close(f->st);
	f->st = open_store(f->dir); /* the segment is closed now */
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "\xff", 1, 100), 1);
	close(fd);
	char *log_path = testutil_path(f->dir, "sweep.log");
	assert_int_equal(log_open("test_qmgr_store", LOG_TO_FILE, log_path), 0);
	size_t moved;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(qmgr_store_sweep_bodies(f->st, 0, 100, &moved, &err), QMGR_STORE_OK);
		assert_int_equal(moved, 0);
	}
	log_open("test_qmgr_store", LOG_TO_STDERR, NULL);
	assert_true(fileio_read_all(log_path, &text, &err));
	const char *first = strstr(buf_cstr(&text), "damaged body");
	assert_non_null(first);
	assert_null(strstr(first + 1, "damaged body"));
	assert_true(testutil_contains(buf_cstr(&text), qid));
	assert_true(file_exists(path));
	free(log_path);
	free(path);
	buf_free(&text);
	buf_free(&err);
}

/* The spare files in bodies/ and the size of the largest. */
static size_t count_spares(const char *dir, off_t *largest)
{
	char *bodies = testutil_path(dir, "bodies");
	DIR *d = opendir(bodies);
	assert_non_null(d);
	size_t n = 0;
	*largest = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "spare-", 6) != 0)
			continue;
		struct stat sb;
		char *path = testutil_path(bodies, e->d_name);
		assert_int_equal(stat(path, &sb), 0);
		free(path);
		if (sb.st_size > *largest)
			*largest = sb.st_size;
		n++;
	}
	closedir(d);
	free(bodies);
	return n;
}

/* Waits (at most 10 s) for a spare of 16 MB of zeros, ready. */
static void wait_for_spare(struct qmgr_store *st, const char *dir)
{
	off_t largest = 0;
	for (int i = 0; i < 1000 && qmgr_store_spare_segments(st) == 0; i++)
		usleep(10000);
	assert_true(qmgr_store_spare_segments(st) > 0);
	assert_true(count_spares(dir, &largest) > 0);
	assert_true(largest >= 16 * 1024 * 1024);
}

static void test_spare_segments_prepared_and_recycled(void **state)
{
	struct fixture *f = *state;
	struct buf err = BUF_INIT;
	off_t largest;
	assert_true(qmgr_store_prepare_files(f->st, &err));
	wait_for_spare(f->st, f->dir);

	/* the first segment is the spare, renamed: already 16 MB of zeros */
	char a[QMGR_QID_SIZE], b[QMGR_QID_SIZE];
	add(f->st, 1, 3000, a);
	char *first = segment_of(f->st, a);
	struct stat sb;
	assert_int_equal(stat(first, &sb), 0);
	assert_true(sb.st_size >= 16 * 1024 * 1024);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_body(f->st, a, 3000);
	wait_for_spare(f->st, f->dir); /* another one, for the next segment */

	/* a freed segment becomes a spare instead of going */
	qmgr_store_close(f->st);
	assert_int_equal(count_spares(f->dir, &largest), 0); /* spares go at close */
	f->st = open_store(f->dir);
	assert_true(qmgr_store_prepare_files(f->st, &err));
	add(f->st, 1, 3000, b);
	char *second = segment_of(f->st, b);
	assert_string_not_equal(first, second);
	wait_for_spare(f->st, f->dir);
	size_t before = count_spares(f->dir, &largest);
	deliver_all(f->st, a, 1);
	assert_true(qmgr_store_flush(f->st, &err));
	assert_false(file_exists(first));
	assert_int_equal(count_spares(f->dir, &largest), before + 1);
	assert_body(f->st, b, 3000);
	/* at most two are kept */
	assert_true(before + 1 <= 2);
	free(first);
	free(second);
	buf_free(&err);
}

int main(void)
{
	log_open("test_qmgr_store", LOG_TO_STDERR, NULL);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_message_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_ids_increase, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_messages_added_together, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_tables_page_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recipient_states, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_final_results_apply_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outcomes_applied_together, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_message_done_after_results_in_any_order, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_in_flight_and_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lone_recipient_inside_its_message, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lone_recipient_of_an_older_queue, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reschedule_and_queue_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_sequence_across_reopen, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_batch_read_and_confirmed_in_part, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_batch_damaged, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_schema_upgrade, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_reference_in_message_record, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_reference_in_bodies_db_still_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_row_made_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_queue_row_after_refused_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_result_of_running_job, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_corrupt_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_recovery_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_logged_segment_write_restored_after_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_consecutive_logged_writes_read_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_removes_old_logs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_in_steps_removes_last, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flush_by_files_follows_the_log, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_second_open_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_queue_names_recover, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_catastrophic_recovery_keeps_messages, setup, teardown),
	    cmocka_unit_test(test_names_and_envelope_checks),
	    cmocka_unit_test_setup_teardown(test_body_in_segment, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_segment_is_an_error, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fresh_body_read_from_memory, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_freed_segment_is_unlinked_after_flush, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_counts_and_removes_orphans, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_moves_bodies_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_logs_a_damaged_body_once, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_segment_rotates_at_16_mb, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spare_segments_prepared_and_recycled, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outbox_records_in_segments, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
