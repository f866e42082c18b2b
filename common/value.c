/* value.c: parsers for booleans, sizes, intervals, interval lists and rates
 * as PowerMTA writes them (see value.h).  All parsing is strict: trailing
 * garbage, signs, overflow and unknown units are errors with a reason. */
#include "value.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void set_why(const char **why, const char *reason)
{
	if (why)
		*why = reason;
}

bool value_parse_bool(const char *text, bool *out, const char **why)
{
	static const char *const yes[] = {"yes", "true", "on"};
	static const char *const no[] = {"no", "false", "off"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	set_why(why, "expected yes or no");
	return false;
}

/* Reads the decimal digits at *p into *out, advancing *p.  At least one
 * digit is required; the value must stay within INT64_MAX. */
static bool take_number(const char **p, uint64_t *out, const char **why)
{
	if (!isdigit((unsigned char)**p)) {
		set_why(why, "expected a number");
		return false;
	}
	uint64_t value = 0;
	while (isdigit((unsigned char)**p)) {
		unsigned digit = (unsigned)(**p - '0');
		if (value > ((uint64_t)INT64_MAX - digit) / 10) {
			set_why(why, "number too large");
			return false;
		}
		value = value * 10 + digit;
		(*p)++;
	}
	*out = value;
	return true;
}

bool value_parse_uint(const char *text, uint64_t *out, const char **why)
{
	const char *p = text;
	if (!take_number(&p, out, why))
		return false;
	if (*p != '\0') {
		set_why(why, "expected a whole number");
		return false;
	}
	return true;
}

static bool multiply(uint64_t value, uint64_t factor, uint64_t *out, const char **why)
{
	if (factor != 0 && value > (uint64_t)INT64_MAX / factor) {
		set_why(why, "value too large");
		return false;
	}
	*out = value * factor;
	return true;
}

/* The multiplier of a size suffix at p ("", "b", "k", "kb", "M", ...), or 0
 * when the suffix is not a size unit. */
static uint64_t size_unit(const char *p)
{
	static const char units[] = "bkmgt";
	if (*p == '\0')
		return 1;
	const char *u = strchr(units, tolower((unsigned char)*p));
	if (u == NULL)
		return 0;
	const char *rest = p + 1;
	if (*u != 'b' && (*rest == 'b' || *rest == 'B'))
		rest++;
	if (*rest != '\0')
		return 0;
	return (uint64_t)1 << (10 * (u - units));
}

bool value_parse_size(const char *text, uint64_t *out, const char **why)
{
	if (strcasecmp(text, "unlimited") == 0) {
		*out = VALUE_UNLIMITED;
		return true;
	}
	const char *p = text;
	uint64_t number;
	if (!take_number(&p, &number, why))
		return false;
	uint64_t unit = size_unit(p);
	if (unit == 0) {
		set_why(why, "expected a size such as 512k, 50M, 1G or unlimited");
		return false;
	}
	return multiply(number, unit, out, why);
}

static int64_t interval_unit(char c)
{
	switch (tolower((unsigned char)c)) {
	case 'w':
		return 7 * 86400;
	case 'd':
		return 86400;
	case 'h':
		return 3600;
	case 'm':
		return 60;
	case 's':
		return 1;
	default:
		return 0;
	}
}

bool value_parse_interval(const char *text, int64_t *seconds, const char **why)
{
	if (strcasecmp(text, "never") == 0) {
		*seconds = VALUE_NEVER;
		return true;
	}
	const char *p = text;
	uint64_t total = 0;
	int64_t previous_unit = INT64_MAX;
	if (*p == '\0') {
		set_why(why, "expected a time interval such as 30s, 10m, 4h or 1w2d");
		return false;
	}
	while (*p) {
		uint64_t number;
		if (!take_number(&p, &number, why))
			return false;
		int64_t unit = 1;
		if (*p != '\0' || total != 0 || previous_unit != INT64_MAX) {
			unit = interval_unit(*p);
			if (unit == 0) {
				set_why(why, "unknown time unit (use w, d, h, m or s)");
				return false;
			}
			p++;
		}
		if (unit >= previous_unit) {
			set_why(why, "time units must each appear once, largest first (as in 1w2d12h)");
			return false;
		}
		previous_unit = unit;
		uint64_t part;
		if (!multiply(number, (uint64_t)unit, &part, why))
			return false;
		if (part > (uint64_t)INT64_MAX - 1 - total) {
			set_why(why, "time interval too long");
			return false;
		}
		total += part;
	}
	*seconds = (int64_t)total;
	return true;
}

bool value_parse_interval_list(const char *text, struct value_interval_list *out, const char **why)
{
	out->count = 0;
	const char *p = text;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
			len--;
		char item[32];
		if (len == 0 || len >= sizeof(item)) {
			set_why(why, len ? "list item too long" : "empty item in list");
			return false;
		}
		if (out->count == VALUE_INTERVAL_LIST_MAX) {
			set_why(why, "too many intervals in list (at most 32)");
			return false;
		}
		memcpy(item, p, len);
		item[len] = '\0';
		int64_t seconds;
		if (!value_parse_interval(item, &seconds, why))
			return false;
		if (seconds == VALUE_NEVER) {
			set_why(why, "\"never\" is not allowed in an interval list");
			return false;
		}
		out->seconds[out->count++] = seconds;
		if (!end)
			return true;
		p = end + 1;
	}
}

/* The length in seconds of a rate's time unit ("h", "hr", "min", "10m"). */
static bool parse_rate_period(const char *p, int64_t *out, const char **why)
{
	static const struct {
		const char *name;
		int64_t seconds;
	} units[] = {{"s", 1},     {"sec", 1},     {"m", 60},    {"min", 60},   {"h", 3600},
	             {"hr", 3600}, {"hour", 3600}, {"d", 86400}, {"day", 86400}};
	uint64_t multiplier = 1;
	if (isdigit((unsigned char)*p) && !take_number(&p, &multiplier, why))
		return false;
	if (multiplier == 0) {
		set_why(why, "rate period must not be zero");
		return false;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(p, units[i].name) == 0) {
			uint64_t total;
			if (!multiply(multiplier, (uint64_t)units[i].seconds, &total, why))
				return false;
			*out = (int64_t)total;
			return true;
		}
	}
	set_why(why, "expected a rate such as 500/h, 83/10m or unlimited");
	return false;
}

bool value_parse_rate(const char *text, bool allow_size, struct value_rate *out, const char **why)
{
	if (strcasecmp(text, "unlimited") == 0 || strcmp(text, "0") == 0) {
		out->count = VALUE_UNLIMITED;
		out->per_seconds = 1;
		return true;
	}
	const char *slash = strchr(text, '/');
	char numerator[32];
	size_t len = slash ? (size_t)(slash - text) : 0;
	if (!slash || len == 0 || len >= sizeof(numerator)) {
		set_why(why, "expected a rate such as 500/h, 83/10m or unlimited");
		return false;
	}
	memcpy(numerator, text, len);
	numerator[len] = '\0';
	bool ok =
	    allow_size ? value_parse_size(numerator, &out->count, why) : value_parse_uint(numerator, &out->count, why);
	if (!ok)
		return false;
	if (out->count == VALUE_UNLIMITED) {
		set_why(why, "\"unlimited\" stands alone, without a period");
		return false;
	}
	return parse_rate_period(slash + 1, &out->per_seconds, why);
}

void value_format_size(uint64_t size, char *out, size_t outlen)
{
	static const char units[] = "KMGT";
	if (size == VALUE_UNLIMITED) {
		snprintf(out, outlen, "unlimited");
		return;
	}
	int unit = -1;
	while (unit < 3 && size != 0 && size % 1024 == 0) {
		size /= 1024;
		unit++;
	}
	if (unit < 0)
		snprintf(out, outlen, "%llu", (unsigned long long)size);
	else
		snprintf(out, outlen, "%llu%c", (unsigned long long)size, units[unit]);
}

void value_format_interval(int64_t seconds, char *out, size_t outlen)
{
	static const struct {
		char unit;
		int64_t seconds;
	} units[] = {{'w', 7 * 86400}, {'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
	if (seconds == VALUE_NEVER) {
		snprintf(out, outlen, "never");
		return;
	}
	if (seconds == 0) {
		snprintf(out, outlen, "0s");
		return;
	}
	size_t used = 0;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && used < outlen; i++) {
		if (seconds < units[i].seconds)
			continue;
		int n = snprintf(out + used, outlen - used, "%lld%c", (long long)(seconds / units[i].seconds),
		                 units[i].unit);
		if (n > 0)
			used += (size_t)n;
		seconds %= units[i].seconds;
	}
}
