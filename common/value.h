/* value.h: parsers for the value types of the configuration language and
 * of ternctl options: booleans, sizes, time intervals, interval lists and
 * rates.  They are pure functions; the caller adds FILE:LINE context.
 * Each returns true on success; on failure *why (when not NULL) points to
 * a static sentence saying what is wrong. */
#ifndef TERN_VALUE_H
#define TERN_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A size or count with no limit ("unlimited", or "0" where the caller
 * says so). */
#define VALUE_UNLIMITED UINT64_MAX
/* An interval that never elapses ("never"). */
#define VALUE_NEVER INT64_MAX

/* yes, no, true, false, on, off (any case). */
bool value_parse_bool(const char *text, bool *out, const char **why);
/* A non-negative decimal integer that fits in int64. */
bool value_parse_uint(const char *text, uint64_t *out, const char **why);
/* "50M", "1G", "40k", "1024", "10b", "unlimited".  Units b k m g t, any case,
 * powers of 1024.  "unlimited" yields VALUE_UNLIMITED; "0" yields 0 (the
 * caller decides whether 0 means no limit).  Overflow is an error. */
bool value_parse_size(const char *text, uint64_t *out, const char **why);
/* "1w2d12h", "300s", "10m", "0", "never" (VALUE_NEVER); the result is in
 * seconds.  A bare number is seconds.  Each unit at most once, in
 * descending order (w d h m s). */
bool value_parse_interval(const char *text, int64_t *seconds, const char **why);

#define VALUE_INTERVAL_LIST_MAX 32
struct value_interval_list {
	size_t count;
	int64_t seconds[VALUE_INTERVAL_LIST_MAX];
};
/* "10m,1h,4h" (spaces allowed after commas); "never" is not allowed inside
 * a list. */
bool value_parse_interval_list(const char *text, struct value_interval_list *out, const char **why);

struct value_rate {
	uint64_t count; /* VALUE_UNLIMITED for no limit */
	int64_t per_seconds;
};
/* "83/10m", "500/h", "100/15m", "10/min", "1000/d", "unlimited", "0"
 * (unlimited).  Units d day h hr m min s sec, optionally with a
 * multiplier (10m).  With allow_size the numerator may carry a size suffix
 * ("10g/2h"), for data-volume rates. */
bool value_parse_rate(const char *text, bool allow_size, struct value_rate *out, const char **why);

/* Formatting back, for ternctl explain and show settings. */
void value_format_size(uint64_t size, char *out, size_t outlen);
void value_format_interval(int64_t seconds, char *out, size_t outlen);

#endif
