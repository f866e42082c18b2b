/* smtp_replay.c: results that qmgr never confirmed go back to it.
 *
 * qmgr answers a job's "done" with "ack" once the job's results are
 * committed.  When the connection to qmgr breaks first (qmgr was killed,
 * restarted, or the connection dropped), the results smtp sent or had
 * yet to send may never have been applied.  They are kept here and
 * replayed on qmgr's enqueue socket (<spool>/private/qmgr): the same
 * "result" frames, then "replay-end", which qmgr answers with status 250
 * once they are durable.  Until then they are kept and tried again every
 * second.  qmgr applies a replayed result only while the recipient is
 * still in flight for that job, so a result replayed twice, or one that
 * qmgr had applied after all, changes nothing. */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "ipc.h"
#include "ipc_evbuffer.h"
#include "log.h"
#include "mem.h"

#define RETRY_SECS 1
/* Results nobody takes (no qmgr ever comes back) are not kept forever. */
#define GIVE_UP_SECS (24 * 3600)

struct held {
	int64_t job_id;
	int64_t since;
	struct buf frames;
	struct held *next;
};

static struct event_base *replay_base;
static char *qmgr_path;
static struct held *pool;       /* waiting to be replayed */
static struct held *in_transit; /* sent on the current replay connection */
static struct bufferevent *bev;
static struct event *timer;
static bool warned;

static const struct ipc_spec reply_spec[] = {
    {IPC_ATTR_STATUS, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_OPTIONAL},
};

static void held_free_list(struct held *h)
{
	while (h) {
		struct held *next = h->next;
		buf_free(&h->frames);
		free(h);
		h = next;
	}
}

/* in_transit goes back to the front of the pool. */
static void requeue(void)
{
	struct held **tail = &in_transit;
	while (*tail)
		tail = &(*tail)->next;
	*tail = pool;
	pool = in_transit;
	in_transit = NULL;
}

static void arm(int secs)
{
	if (timer == NULL || pool == NULL || bev != NULL)
		return;
	struct timeval tv = {secs, 0};
	evtimer_add(timer, &tv);
}

static void close_replay(bool confirmed)
{
	if (bev) {
		bufferevent_free(bev);
		bev = NULL;
	}
	if (confirmed) {
		held_free_list(in_transit);
		in_transit = NULL;
	} else {
		requeue();
	}
	arm(RETRY_SECS);
}

static void on_reply(struct bufferevent *b, void *arg)
{
	struct buf err = BUF_INIT, payload = BUF_INIT;
	enum ipc_frame_status st = ipc_frame_take_evbuffer(bufferevent_get_input(b), 0, &payload, &err);
	if (st == IPC_FRAME_PARTIAL) {
		buf_free(&err);
		return;
	}
	bool confirmed = false;
	if (st == IPC_FRAME_COMPLETE) {
		struct ipc_msg m;
		if (ipc_decode(payload.data, payload.len, reply_spec, IPC_SPEC_COUNT(reply_spec), &m, &err)) {
			confirmed = ipc_msg_int(&m, IPC_ATTR_STATUS) == 250;
			if (!confirmed)
				log_warning("qmgr refused replayed results: %s", ipc_msg_str(&m, IPC_ATTR_REASON));
		}
		ipc_msg_free(&m);
	}
	if (err.len)
		log_warning("replaying results to qmgr: %s", buf_cstr(&err));
	if (confirmed)
		log_info("qmgr took the results of the jobs it had lost");
	buf_free(&err);
	buf_free(&payload);
	close_replay(confirmed);
}

static void on_event(struct bufferevent *b, short what, void *arg)
{
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		close_replay(false);
}

static void drop_stale(int64_t now)
{
	for (struct held **p = &pool; *p;) {
		struct held *h = *p;
		if (now - h->since < GIVE_UP_SECS) {
			p = &h->next;
			continue;
		}
		log_error("job %lld: results never confirmed by qmgr, given up after %ds", (long long)h->job_id,
		          GIVE_UP_SECS);
		*p = h->next;
		h->next = NULL;
		held_free_list(h);
	}
}

static void append_end(struct evbuffer *out)
{
	struct buf frame = BUF_INIT, err = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "replay-end");
	if (!ipc_write_end(&w, &err))
		log_panic("cannot encode replay-end: %s", buf_cstr(&err));
	evbuffer_add(out, frame.data, frame.len);
	buf_free(&frame);
	buf_free(&err);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
	drop_stale(time(NULL));
	if (pool == NULL || bev != NULL)
		return;
	struct buf err = BUF_INIT;
	int qfd = ipc_connect(qmgr_path, &err);
	if (qfd < 0) {
		if (!warned)
			log_warning("cannot reach qmgr to replay results: %s; trying every %ds", buf_cstr(&err),
			            RETRY_SECS);
		warned = true;
		buf_free(&err);
		arm(RETRY_SECS);
		return;
	}
	buf_free(&err);
	warned = false;
	evutil_make_socket_nonblocking(qfd);
	bev = bufferevent_socket_new(replay_base, qfd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, on_reply, NULL, on_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	in_transit = pool;
	pool = NULL;
	struct evbuffer *out = bufferevent_get_output(bev);
	size_t jobs = 0;
	for (struct held *h = in_transit; h; h = h->next, jobs++)
		evbuffer_add(out, h->frames.data, h->frames.len);
	append_end(out);
	log_info("replaying the results of %zu jobs to qmgr", jobs);
}

void smtp_replay_init(struct event_base *base, const char *spool)
{
	replay_base = base;
	qmgr_path = mem_asprintf("%s/private/qmgr", spool);
	timer = evtimer_new(base, on_timer, NULL);
}

void smtp_replay_add(int64_t job_id, struct buf *frames)
{
	if (frames->len == 0)
		return;
	struct held *h = mem_zalloc(sizeof *h);
	h->job_id = job_id;
	h->since = time(NULL);
	h->frames = *frames;
	buf_init(frames);
	struct held **tail = &pool;
	while (*tail)
		tail = &(*tail)->next;
	*tail = h;
	arm(0);
}

bool smtp_replay_pending(void)
{
	return pool != NULL || in_transit != NULL;
}

void smtp_replay_shutdown(void)
{
	if (pool || in_transit)
		log_warning("stopping with results qmgr has not confirmed; qmgr sends those recipients again after "
		            "in-flight-grace");
	if (bev) {
		bufferevent_free(bev);
		bev = NULL;
	}
	held_free_list(pool);
	held_free_list(in_transit);
	pool = in_transit = NULL;
	if (timer) {
		event_free(timer);
		timer = NULL;
	}
	free(qmgr_path);
	qmgr_path = NULL;
}
