/* qmgr_record.c: what the queue stores and how.  Values are attribute
 * lists in the IPC encoding (without the frame's length prefix): the names
 * are declared once in ipc_attr.h, new fields can be added without a
 * format version, and the strict IPC decoder turns a damaged record into
 * an error instead of a guess.  Keys put numbers big-endian so that
 * Berkeley DB's byte order is their numeric order. */
#include "qmgr.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

const enum ipc_attr qmgr_envelope_attrs[] = {
#define QMGR_ATTR_ID(attr, presence) IPC_ATTR_##attr,
    QMGR_ENVELOPE_ATTRS(QMGR_ATTR_ID)
#undef QMGR_ATTR_ID
};
const size_t qmgr_envelope_attr_count = sizeof(qmgr_envelope_attrs) / sizeof(qmgr_envelope_attrs[0]);

#define QMGR_SPEC_ENTRY(attr, presence) {IPC_ATTR_##attr, presence},
#define QMGR_STORED_ENTRY(attr, presence) {IPC_ATTR_##attr, IPC_OPTIONAL},

static const struct ipc_spec envelope_spec[] = {{IPC_ATTR_REQUEST, IPC_REQUIRED}, QMGR_ENVELOPE_ATTRS(QMGR_SPEC_ENTRY)};

/* The sender is required in a stored message as in a request. */
static const struct ipc_spec message_spec[] = {{IPC_ATTR_BODY_REF, IPC_OPTIONAL},
                                               {IPC_ATTR_QUEUE_ID, IPC_REQUIRED},
                                               {IPC_ATTR_RECEIVED, IPC_REQUIRED},
                                               {IPC_ATTR_BODY_SIZE, IPC_REQUIRED},
                                               {IPC_ATTR_RCPT_COUNT, IPC_REQUIRED},
                                               {IPC_ATTR_RCPT_INLINE, IPC_OPTIONAL},
                                               QMGR_ENVELOPE_ATTRS(QMGR_SPEC_ENTRY)};

static const struct ipc_spec rcpt_spec[] = {
    {IPC_ATTR_RECIPIENT, IPC_REQUIRED},    {IPC_ATTR_ORCPT, IPC_OPTIONAL},       {IPC_ATTR_NOTIFY, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE, IPC_REQUIRED},        {IPC_ATTR_RCPT_STATE, IPC_REQUIRED},  {IPC_ATTR_ATTEMPTS, IPC_REQUIRED},
    {IPC_ATTR_NEXT_ATTEMPT, IPC_REQUIRED}, {IPC_ATTR_LAST_RESULT, IPC_OPTIONAL}, {IPC_ATTR_DELAY_NOTICES, IPC_OPTIONAL},
    {IPC_ATTR_IN_FLIGHT, IPC_OPTIONAL},    {IPC_ATTR_DSN_PENDING, IPC_OPTIONAL}, {IPC_ATTR_DSN_STATUS, IPC_OPTIONAL},
    {IPC_ATTR_REMOTE_HOST, IPC_OPTIONAL},
};

static const struct ipc_spec queue_spec[] = {
    {IPC_ATTR_QUEUE_MODE, IPC_REQUIRED}, {IPC_ATTR_PAUSED, IPC_REQUIRED},        {IPC_ATTR_CONNECTIONS, IPC_REQUIRED},
    {IPC_ATTR_NEXT_RETRY, IPC_REQUIRED}, {IPC_ATTR_BACKOFF_UNTIL, IPC_OPTIONAL},
};

static const struct ipc_spec outbox_spec[] = {
    /* a "tq" record is about a queue: no message, no recipient */
    {IPC_ATTR_RECORD_TYPE, IPC_REQUIRED},   {IPC_ATTR_QUEUE_ID, IPC_OPTIONAL},    {IPC_ATTR_RCPT_INDEX, IPC_OPTIONAL},
    {IPC_ATTR_TIME_LOGGED, IPC_REQUIRED},   {IPC_ATTR_RECIPIENT, IPC_OPTIONAL},   {IPC_ATTR_ORCPT, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE, IPC_OPTIONAL},         {IPC_ATTR_RCPT_STATE, IPC_OPTIONAL},  {IPC_ATTR_LAST_RESULT, IPC_OPTIONAL},
    {IPC_ATTR_DSN_STATUS, IPC_OPTIONAL},    {IPC_ATTR_REMOTE_HOST, IPC_OPTIONAL}, {IPC_ATTR_REMOTE_IP, IPC_OPTIONAL},
    {IPC_ATTR_LOCAL_IP, IPC_OPTIONAL},      {IPC_ATTR_ESMTP, IPC_OPTIONAL},       {IPC_ATTR_TLS_PROTOCOL, IPC_OPTIONAL},
    {IPC_ATTR_TLS_CIPHER, IPC_OPTIONAL},    {IPC_ATTR_BODY_SIZE, IPC_OPTIONAL},   {IPC_ATTR_RECEIVED, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_TYPE, IPC_OPTIONAL}, /* from the local agent: "file" */
    QMGR_ENVELOPE_ATTRS(QMGR_STORED_ENTRY)};

/* ---- queue IDs and names ------------------------------------------------- */

void qmgr_qid_format(uint64_t value, char qid[QMGR_QID_SIZE])
{
	static const char hex[] = "0123456789ABCDEF";
	for (int i = QMGR_QID_LEN - 1; i >= 0; i--, value >>= 4)
		qid[i] = hex[value & 0xf];
	qid[QMGR_QID_LEN] = '\0';
}

bool qmgr_qid_valid(const char *qid)
{
	if (strlen(qid) != QMGR_QID_LEN)
		return false;
	for (size_t i = 0; i < QMGR_QID_LEN; i++) {
		if (!isxdigit((unsigned char)qid[i]) || islower((unsigned char)qid[i]))
			return false;
	}
	return true;
}

static const char *const state_names[] = {
    [QMGR_RCPT_PENDING] = "pending",
    [QMGR_RCPT_DEFERRED] = "deferred",
    [QMGR_RCPT_DELIVERED] = "delivered",
    [QMGR_RCPT_BOUNCED] = "bounced",
};

const char *qmgr_rcpt_state_name(enum qmgr_rcpt_state state)
{
	return state_names[state];
}

bool qmgr_rcpt_state_parse(const char *name, enum qmgr_rcpt_state *state)
{
	for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]); i++) {
		if (strcmp(name, state_names[i]) == 0) {
			*state = (enum qmgr_rcpt_state)i;
			return true;
		}
	}
	return false;
}

void qmgr_rcpt_free(struct qmgr_rcpt *r)
{
	free(r->address);
	free(r->orcpt);
	free(r->notify);
	free(r->queue);
	free(r->last_result);
	free(r->dsn_status);
	free(r->remote_host);
	memset(r, 0, sizeof(*r));
}

bool qmgr_queue_name(const char *address, const char *vmta, struct buf *name, struct buf *err)
{
	const char *at = strrchr(address, '@');
	if (at == NULL || at[1] == '\0') {
		buf_printf(err, "recipient %s has no domain", address);
		return false;
	}
	buf_reset(name);
	for (const char *p = at + 1; *p; p++)
		buf_putc(name, (char)tolower((unsigned char)*p));
	buf_putc(name, '/');
	buf_puts(name, vmta && *vmta ? vmta : "{default}");
	return true;
}

/* ---- the envelope ------------------------------------------------------ */

void qmgr_incoming_free(struct qmgr_incoming *in)
{
	ipc_msg_free(&in->envelope);
	for (size_t i = 0; i < in->nrcpt; i++)
		qmgr_rcpt_free(&in->rcpts[i]);
	free(in->rcpts);
	buf_free(&in->body);
	memset(in, 0, sizeof(*in));
}

bool qmgr_envelope_decode(const void *payload, size_t len, struct ipc_msg *envelope, struct buf *err)
{
	return ipc_decode(payload, len, envelope_spec, IPC_SPEC_COUNT(envelope_spec), envelope, err);
}

bool qmgr_envelope_check(const struct ipc_msg *envelope, struct buf *err)
{
	const char *vmta = ipc_msg_str(envelope, IPC_ATTR_VMTA);
	/* The vmta is part of queue names, where '/' separates it. */
	if (vmta && (*vmta == '\0' || strchr(vmta, '/'))) {
		buf_printf(err, "bad virtual MTA name \"%s\"", vmta);
		return false;
	}
	if (ipc_msg_has(envelope, IPC_ATTR_SIZE) && ipc_msg_int(envelope, IPC_ATTR_SIZE) < 0) {
		buf_puts(err, "negative message size");
		return false;
	}
	return true;
}

void qmgr_record_copy(struct ipc_writer *w, const struct ipc_msg *msg, const enum ipc_attr *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		enum ipc_attr a = list[i];
		if (!ipc_msg_has(msg, a))
			continue;
		switch (ipc_attr_type(a)) {
		case IPC_TYPE_INT:
			ipc_put_int(w, a, ipc_msg_int(msg, a));
			break;
		case IPC_TYPE_STR:
			ipc_put_str(w, a, ipc_msg_str(msg, a));
			break;
		case IPC_TYPE_DATA: {
			size_t len;
			const void *p = ipc_msg_data(msg, a, &len);
			ipc_put_data(w, a, p, len);
			break;
		}
		}
	}
}

/* ---- encoding helpers -------------------------------------------------- */

/* Records are written from values that were decoded or built by qmgr, so
 * an encoding failure is a bug. */
static void record_begin(struct ipc_writer *w, struct buf *out)
{
	buf_reset(out);
	ipc_write_begin(w, out, 0);
}

static void record_end(struct ipc_writer *w, struct buf *out)
{
	struct buf err = BUF_INIT;
	if (!ipc_write_end(w, &err))
		log_panic("cannot encode a queue record: %s", buf_cstr(&err));
	buf_free(&err);
	buf_consume(out, IPC_FRAME_HEADER);
}

static void put_opt_str(struct ipc_writer *w, enum ipc_attr a, const char *s)
{
	if (s)
		ipc_put_str(w, a, s);
}

static char *dup_opt(const struct ipc_msg *m, enum ipc_attr a)
{
	const char *s = ipc_msg_str(m, a);
	return s ? mem_strdup(s) : NULL;
}

/* ---- messages ---------------------------------------------------------- */

/* The body's reference, when there is one, goes first: a record that
 * starts with the bytes the encoder writes ahead of a reference (its type,
 * name and length, taken once from the encoder itself) has one
 * (qmgr_record_message_ref), and a walk over the table reads no further. */
static unsigned char body_ref_head[QMGR_MESSAGE_REF_HEAD];
static pthread_once_t body_ref_head_once = PTHREAD_ONCE_INIT;

static void make_body_ref_head(void)
{
	struct buf frame = BUF_INIT;
	struct ipc_writer w;
	unsigned char zeros[QMGR_BODY_REF_SIZE] = {0};
	record_begin(&w, &frame);
	ipc_put_data(&w, IPC_ATTR_BODY_REF, zeros, sizeof(zeros));
	record_end(&w, &frame);
	if (frame.len != QMGR_MESSAGE_REF_LEN)
		log_panic("a body reference encodes in %zu bytes, not %d", frame.len, QMGR_MESSAGE_REF_LEN);
	memcpy(body_ref_head, frame.data, sizeof(body_ref_head));
	buf_free(&frame);
}

void qmgr_record_message(struct buf *out, const char *qid, int64_t received, int64_t body_size, size_t nrcpt,
                         const struct ipc_msg *envelope, const struct qmgr_body_ref *body_ref,
                         const struct buf *inline_rcpt)
{
	struct ipc_writer w;
	record_begin(&w, out);
	if (body_ref) {
		unsigned char v[QMGR_BODY_REF_SIZE];
		qmgr_body_ref_encode(body_ref, v);
		ipc_put_data(&w, IPC_ATTR_BODY_REF, v, sizeof(v));
	}
	ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
	ipc_put_int(&w, IPC_ATTR_RECEIVED, received);
	ipc_put_int(&w, IPC_ATTR_BODY_SIZE, body_size);
	ipc_put_int(&w, IPC_ATTR_RCPT_COUNT, (int64_t)nrcpt);
	if (inline_rcpt)
		ipc_put_data(&w, IPC_ATTR_RCPT_INLINE, inline_rcpt->data, inline_rcpt->len);
	qmgr_record_copy(&w, envelope, qmgr_envelope_attrs, qmgr_envelope_attr_count);
	record_end(&w, out);
}

bool qmgr_record_message_ref(const void *v, size_t len, struct qmgr_body_ref *ref)
{
	pthread_once(&body_ref_head_once, make_body_ref_head);
	return len >= QMGR_MESSAGE_REF_LEN && memcmp(v, body_ref_head, sizeof(body_ref_head)) == 0 &&
	       qmgr_body_ref_decode((const unsigned char *)v + sizeof(body_ref_head), QMGR_BODY_REF_SIZE, ref);
}

bool qmgr_message_body_ref(const struct ipc_msg *msg, struct qmgr_body_ref *ref)
{
	size_t len;
	const void *v = ipc_msg_has(msg, IPC_ATTR_BODY_REF) ? ipc_msg_data(msg, IPC_ATTR_BODY_REF, &len) : NULL;
	return v != NULL && qmgr_body_ref_decode(v, len, ref);
}

bool qmgr_record_message_decode(const void *v, size_t len, struct ipc_msg *msg, struct buf *err)
{
	if (!ipc_decode(v, len, message_spec, IPC_SPEC_COUNT(message_spec), msg, err))
		return false;
	if (!qmgr_qid_valid(ipc_msg_str(msg, IPC_ATTR_QUEUE_ID)) || ipc_msg_int(msg, IPC_ATTR_RCPT_COUNT) < 1 ||
	    ipc_msg_int(msg, IPC_ATTR_BODY_SIZE) < 0 ||
	    (ipc_msg_has(msg, IPC_ATTR_RCPT_INLINE) && ipc_msg_int(msg, IPC_ATTR_RCPT_COUNT) != 1)) {
		buf_puts(err, "bad queue id, recipient count (a recipient inside the record is the only one) or body size");
		ipc_msg_free(msg);
		return false;
	}
	return true;
}

/* ---- recipients -------------------------------------------------------- */

void qmgr_record_rcpt(struct buf *out, const struct qmgr_rcpt *r)
{
	struct ipc_writer w;
	record_begin(&w, out);
	ipc_put_str(&w, IPC_ATTR_RECIPIENT, r->address);
	put_opt_str(&w, IPC_ATTR_ORCPT, r->orcpt);
	put_opt_str(&w, IPC_ATTR_NOTIFY, r->notify);
	ipc_put_str(&w, IPC_ATTR_QUEUE, r->queue);
	ipc_put_str(&w, IPC_ATTR_RCPT_STATE, qmgr_rcpt_state_name(r->state));
	ipc_put_int(&w, IPC_ATTR_ATTEMPTS, r->attempts);
	ipc_put_int(&w, IPC_ATTR_NEXT_ATTEMPT, r->next_attempt);
	put_opt_str(&w, IPC_ATTR_LAST_RESULT, r->last_result);
	if (r->delay_notices > 0)
		ipc_put_int(&w, IPC_ATTR_DELAY_NOTICES, r->delay_notices);
	if (r->in_flight != 0)
		ipc_put_int(&w, IPC_ATTR_IN_FLIGHT, r->in_flight);
	if (r->dsn_pending)
		ipc_put_int(&w, IPC_ATTR_DSN_PENDING, 1);
	put_opt_str(&w, IPC_ATTR_DSN_STATUS, r->dsn_status);
	put_opt_str(&w, IPC_ATTR_REMOTE_HOST, r->remote_host);
	record_end(&w, out);
}

bool qmgr_record_rcpt_decode(const void *v, size_t len, struct qmgr_rcpt *r, struct buf *err)
{
	struct ipc_msg m;
	memset(r, 0, sizeof(*r));
	if (!ipc_decode(v, len, rcpt_spec, IPC_SPEC_COUNT(rcpt_spec), &m, err))
		return false;
	bool ok = qmgr_rcpt_state_parse(ipc_msg_str(&m, IPC_ATTR_RCPT_STATE), &r->state);
	if (!ok) {
		buf_printf(err, "unknown recipient state \"%s\"", ipc_msg_str(&m, IPC_ATTR_RCPT_STATE));
	} else {
		r->address = mem_strdup(ipc_msg_str(&m, IPC_ATTR_RECIPIENT));
		r->orcpt = dup_opt(&m, IPC_ATTR_ORCPT);
		r->notify = dup_opt(&m, IPC_ATTR_NOTIFY);
		r->queue = mem_strdup(ipc_msg_str(&m, IPC_ATTR_QUEUE));
		r->attempts = ipc_msg_int(&m, IPC_ATTR_ATTEMPTS);
		r->next_attempt = ipc_msg_int(&m, IPC_ATTR_NEXT_ATTEMPT);
		r->last_result = dup_opt(&m, IPC_ATTR_LAST_RESULT);
		r->delay_notices = ipc_msg_int(&m, IPC_ATTR_DELAY_NOTICES);
		r->in_flight = ipc_msg_int(&m, IPC_ATTR_IN_FLIGHT);
		r->dsn_pending = ipc_msg_int(&m, IPC_ATTR_DSN_PENDING) != 0;
		r->dsn_status = dup_opt(&m, IPC_ATTR_DSN_STATUS);
		r->remote_host = dup_opt(&m, IPC_ATTR_REMOTE_HOST);
	}
	ipc_msg_free(&m);
	return ok;
}

/* ---- queues ------------------------------------------------------------ */

void qmgr_record_queue(struct buf *out, const struct qmgr_queue_state *q)
{
	struct ipc_writer w;
	record_begin(&w, out);
	ipc_put_str(&w, IPC_ATTR_QUEUE_MODE, q->backoff ? "backoff" : "normal");
	ipc_put_int(&w, IPC_ATTR_PAUSED, q->paused);
	ipc_put_int(&w, IPC_ATTR_CONNECTIONS, q->connections);
	ipc_put_int(&w, IPC_ATTR_NEXT_RETRY, q->next_retry);
	if (q->backoff_until)
		ipc_put_int(&w, IPC_ATTR_BACKOFF_UNTIL, q->backoff_until);
	record_end(&w, out);
}

bool qmgr_record_queue_decode(const void *v, size_t len, struct qmgr_queue_state *q, struct buf *err)
{
	struct ipc_msg m;
	memset(q, 0, sizeof(*q));
	if (!ipc_decode(v, len, queue_spec, IPC_SPEC_COUNT(queue_spec), &m, err))
		return false;
	const char *mode = ipc_msg_str(&m, IPC_ATTR_QUEUE_MODE);
	bool ok = strcmp(mode, "normal") == 0 || strcmp(mode, "backoff") == 0;
	if (!ok)
		buf_printf(err, "unknown queue mode \"%s\"", mode);
	q->backoff = strcmp(mode, "backoff") == 0;
	q->paused = ipc_msg_int(&m, IPC_ATTR_PAUSED) != 0;
	q->connections = ipc_msg_int(&m, IPC_ATTR_CONNECTIONS);
	q->next_retry = ipc_msg_int(&m, IPC_ATTR_NEXT_RETRY);
	q->backoff_until = ipc_msg_int(&m, IPC_ATTR_BACKOFF_UNTIL);
	ipc_msg_free(&m);
	return ok;
}

/* ---- the outbox -------------------------------------------------------- */

/* Connection facts of a delivery attempt, as smtp reported them: they
 * go into the accounting record as they came. */
static const enum ipc_attr detail_attrs[] = {
    IPC_ATTR_DSN_STATUS, IPC_ATTR_REMOTE_HOST,  IPC_ATTR_REMOTE_IP,  IPC_ATTR_LOCAL_IP,
    IPC_ATTR_ESMTP,      IPC_ATTR_TLS_PROTOCOL, IPC_ATTR_TLS_CIPHER, IPC_ATTR_ACCT_DLV_TYPE,
};

void qmgr_record_outbox(struct buf *out, const char *type, const char *qid, size_t index, int64_t when,
                        const struct ipc_msg *envelope, const struct qmgr_rcpt *r, const struct ipc_msg *detail)
{
	struct ipc_writer w;
	record_begin(&w, out);
	ipc_put_str(&w, IPC_ATTR_RECORD_TYPE, type);
	ipc_put_int(&w, IPC_ATTR_TIME_LOGGED, when);
	if (r) {
		ipc_put_str(&w, IPC_ATTR_QUEUE_ID, qid);
		ipc_put_int(&w, IPC_ATTR_RCPT_INDEX, (int64_t)index);
		ipc_put_str(&w, IPC_ATTR_RECIPIENT, r->address);
		put_opt_str(&w, IPC_ATTR_ORCPT, r->orcpt);
		ipc_put_str(&w, IPC_ATTR_QUEUE, r->queue);
		ipc_put_str(&w, IPC_ATTR_RCPT_STATE, qmgr_rcpt_state_name(r->state));
		put_opt_str(&w, IPC_ATTR_LAST_RESULT, r->last_result);
	}
	if (envelope)
		qmgr_record_copy(&w, envelope, qmgr_envelope_attrs, qmgr_envelope_attr_count);
	/* the arrival time (timeQueued): the message may be gone when the
	 * record is sent */
	ipc_put_int(&w, IPC_ATTR_RECEIVED,
	            envelope && ipc_msg_has(envelope, IPC_ATTR_RECEIVED) ? ipc_msg_int(envelope, IPC_ATTR_RECEIVED)
	                                                                 : when);
	if (detail)
		qmgr_record_copy(&w, detail, detail_attrs, sizeof(detail_attrs) / sizeof(detail_attrs[0]));
	/* smtp's "size" is what went out; the envelope's is what MAIL FROM
	 * declared, so the delivered size is kept apart (dlvSize). */
	if (detail && ipc_msg_has(detail, IPC_ATTR_SIZE))
		ipc_put_int(&w, IPC_ATTR_BODY_SIZE, ipc_msg_int(detail, IPC_ATTR_SIZE));
	record_end(&w, out);
}

void qmgr_record_queue_failure(struct buf *out, const char *queue, const char *reason, int64_t when,
                               const struct ipc_msg *detail)
{
	static const enum ipc_attr facts[] = {IPC_ATTR_DSN_STATUS, IPC_ATTR_REMOTE_HOST, IPC_ATTR_REMOTE_IP,
	                                      IPC_ATTR_LOCAL_IP};
	struct ipc_writer w;
	record_begin(&w, out);
	ipc_put_str(&w, IPC_ATTR_RECORD_TYPE, "tq");
	ipc_put_int(&w, IPC_ATTR_TIME_LOGGED, when);
	ipc_put_str(&w, IPC_ATTR_QUEUE, queue);
	put_opt_str(&w, IPC_ATTR_LAST_RESULT, reason);
	qmgr_record_copy(&w, detail, facts, sizeof(facts) / sizeof(facts[0]));
	record_end(&w, out);
}

bool qmgr_record_outbox_decode(const void *v, size_t len, struct ipc_msg *msg, struct buf *err)
{
	if (!ipc_decode(v, len, outbox_spec, IPC_SPEC_COUNT(outbox_spec), msg, err))
		return false;
	size_t tlen = strlen(ipc_msg_str(msg, IPC_ATTR_RECORD_TYPE));
	if (tlen < 1 || tlen > 2) {
		buf_puts(err, "record type is not one or two letters");
		ipc_msg_free(msg);
		return false;
	}
	return true;
}

/* ---- keys -------------------------------------------------------------- */

void qmgr_be_put(unsigned char *out, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		out[i] = (unsigned char)v;
}

uint64_t qmgr_be_get(const unsigned char *in, int bytes)
{
	uint64_t v = 0;
	for (int i = 0; i < bytes; i++)
		v = v << 8 | in[i];
	return v;
}

uint32_t qmgr_name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static void put_be(struct buf *key, uint64_t v, int bytes)
{
	unsigned char be[8];
	qmgr_be_put(be, v, bytes);
	buf_append(key, be, (size_t)bytes);
}

void qmgr_key_rcpt(struct buf *key, const char *qid, size_t index)
{
	buf_reset(key);
	buf_append(key, qid, QMGR_QID_LEN);
	put_be(key, index, 4);
}

void qmgr_key_body(struct buf *key, const char *qid, uint32_t chunk)
{
	buf_reset(key);
	buf_append(key, qid, QMGR_QID_LEN);
	put_be(key, chunk, 4);
}

/* Due times are unix seconds, never negative once checked: the sign bit
 * is flipped anyway so that any int64 sorts right. */
void qmgr_key_due(struct buf *key, const char *queue, int64_t due, const char *qid, size_t index)
{
	buf_reset(key);
	buf_append(key, queue, strlen(queue) + 1);
	put_be(key, (uint64_t)due ^ (UINT64_C(1) << 63), 8);
	buf_append(key, qid, QMGR_QID_LEN);
	put_be(key, index, 4);
}

void qmgr_key_seq(struct buf *key, uint64_t seq)
{
	buf_reset(key);
	put_be(key, seq, 8);
}

uint64_t qmgr_key_seq_value(const void *key, size_t len)
{
	return qmgr_be_get(key, len < 8 ? (int)len : 8);
}

void qmgr_key_describe(struct buf *out, const void *key, size_t len)
{
	const unsigned char *p = key;
	for (size_t i = 0; i < len; i++) {
		if (p[i] >= 0x21 && p[i] < 0x7f && p[i] != '\\')
			buf_putc(out, (char)p[i]);
		else
			buf_printf(out, "\\x%02x", p[i]);
	}
}
