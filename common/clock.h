/* clock.h: the one monotonic clock daemons measure deadlines and waits
 * with (never the wall clock, which an administrator may set back). */
#ifndef TERN_CLOCK_H
#define TERN_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC: only differences mean anything. */
int64_t clock_monotonic_ms(void);

#endif
