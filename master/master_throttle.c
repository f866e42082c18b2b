/* master_throttle.c: the crash throttle.  A worker that dies before it
 * reported itself ready (or within a second of starting) failed to do any
 * work; restarting it at once would only fork it again and again.  Each
 * such failure doubles the pause before the next start, up to a ceiling,
 * and one healthy run clears the record. */
#include "master.h"

#define THROTTLE_FIRST_PAUSE_MS 250
#define THROTTLE_MAX_PAUSE_MS 60000
#define THROTTLE_MIN_HEALTHY_MS 1000

void master_throttle_init(struct master_throttle *t)
{
	t->failures = 0;
	t->resume_at_ms = 0;
	t->logged = false;
}

bool master_throttle_exit(struct master_throttle *t, bool was_ready, int64_t started_ms, int64_t now_ms)
{
	if (was_ready && now_ms - started_ms >= THROTTLE_MIN_HEALTHY_MS) {
		master_throttle_init(t);
		return false;
	}
	t->failures++;
	int64_t pause = THROTTLE_FIRST_PAUSE_MS;
	for (unsigned i = 1; i < t->failures && pause < THROTTLE_MAX_PAUSE_MS; i++)
		pause *= 2;
	if (pause > THROTTLE_MAX_PAUSE_MS)
		pause = THROTTLE_MAX_PAUSE_MS;
	t->resume_at_ms = now_ms + pause;
	return true;
}

int64_t master_throttle_wait_ms(const struct master_throttle *t, int64_t now_ms)
{
	return t->resume_at_ms > now_ms ? t->resume_at_ms - now_ms : 0;
}

bool master_throttle_is_throttled(const struct master_throttle *t)
{
	return t->failures >= 2;
}
