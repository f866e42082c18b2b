/* acctd_tail.c: the live stream of committed records (`ternctl acct
 * tail`).  The frames of the last ACCTD_TAIL_KEEP written records are kept
 * in a ring, so a consumer that lost its connection resumes from the last
 * sequence number it saw instead of reading rotated files.  A record
 * enters the ring only once its batch is committed: what a consumer sees
 * is what the files hold. */
#include "acctd.h"

#include <stdlib.h>
#include <string.h>

static struct acctd_frame *ring_at(const struct acctd_tail *t, size_t i)
{
	return &t->ring[(t->first + i) % ACCTD_TAIL_KEEP];
}

/* A batch holds hundreds of records under load: its array grows by
 * doubling and is kept for the next batch, and each frame is allocated
 * once, at its size. */
void acctd_tail_hold(struct acctd_tail *t, uint64_t seq, const void *payload, size_t len)
{
	if (t->nbatch == t->batch_cap) {
		t->batch_cap = t->batch_cap ? 2 * t->batch_cap : 64;
		t->batch = mem_reallocarray(t->batch, t->batch_cap, sizeof(*t->batch));
	}
	struct acctd_frame *f = &t->batch[t->nbatch++];
	f->seq = seq;
	buf_init(&f->bytes);
	buf_reserve(&f->bytes, IPC_FRAME_HEADER + len);
	unsigned char head[IPC_FRAME_HEADER] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
	                                        (unsigned char)(len >> 8), (unsigned char)len};
	buf_append(&f->bytes, head, sizeof(head));
	buf_append(&f->bytes, payload, len);
}

void acctd_tail_drop_batch(struct acctd_tail *t)
{
	for (size_t i = 0; i < t->nbatch; i++)
		buf_free(&t->batch[i].bytes);
	t->nbatch = 0;
}

static void ring_push(struct acctd_tail *t, struct acctd_frame *f)
{
	if (t->ring == NULL)
		t->ring = mem_calloc(ACCTD_TAIL_KEEP, sizeof(*t->ring));
	if (t->count == ACCTD_TAIL_KEEP) {
		buf_free(&ring_at(t, 0)->bytes);
		t->first = (t->first + 1) % ACCTD_TAIL_KEEP;
		t->count--;
	}
	*ring_at(t, t->count++) = *f;
}

void acctd_tail_commit(struct acctd_tail *t)
{
	for (size_t i = 0; i < t->nbatch; i++)
		ring_push(t, &t->batch[i]);
	t->nbatch = 0; /* the frames are the ring's now; the array serves the next batch */
}

uint64_t acctd_tail_oldest(const struct acctd_tail *t)
{
	return t->count ? ring_at(t, 0)->seq : 0;
}

/* The ring position of the first record after seq (count when none):
 * sequence numbers grow along the ring, so a binary search finds it. */
static size_t first_after(const struct acctd_tail *t, uint64_t seq)
{
	size_t lo = 0, hi = t->count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ring_at(t, mid)->seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint64_t acctd_tail_each_after(const struct acctd_tail *t, uint64_t seq,
                               void (*fn)(const struct acctd_frame *frame, void *arg), void *arg)
{
	for (size_t i = first_after(t, seq); i < t->count; i++) {
		fn(ring_at(t, i), arg);
		seq = ring_at(t, i)->seq;
	}
	return seq;
}

void acctd_tail_free(struct acctd_tail *t)
{
	acctd_tail_drop_batch(t);
	free(t->batch);
	for (size_t i = 0; i < t->count; i++)
		buf_free(&ring_at(t, i)->bytes);
	free(t->ring);
	memset(t, 0, sizeof(*t));
}
