/* local_format.c: the text local delivery writes, as pure functions (unit
 * tested): the mbox "From " line, the mbox form of a message (Return-Path,
 * Delivered-To, LF line ends, ">From " quoting, a closing blank line), the
 * Delivered-To loop check, and the macros of file-destination. */
#include "local.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

void local_format_from_line(struct buf *out, const char *sender, time_t when)
{
	struct tm tm;
	char date[64];
	localtime_r(&when, &tm);
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
	buf_printf(out, "From %s %s\n", *sender ? sender : "MAILER-DAEMON", date);
}

/* The end of the line starting at p (at the LF, or at end). */
static const char *line_end(const char *p, const char *end)
{
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	return nl ? nl : end;
}

void local_format_mbox_body(struct buf *out, const char *sender, const char *delivered_to, const char *body,
                            size_t len)
{
	buf_printf(out, "Return-Path: <%s>\n", sender);
	buf_printf(out, "Delivered-To: %s\n", delivered_to);
	const char *p = body, *end = body + len;
	while (p < end) {
		const char *e = line_end(p, end);
		size_t n = (size_t)(e - p);
		if (n && p[n - 1] == '\r')
			n--;
		if (n >= 5 && memcmp(p, "From ", 5) == 0)
			buf_putc(out, '>');
		buf_append(out, p, n);
		buf_putc(out, '\n');
		p = e < end ? e + 1 : end;
	}
	buf_putc(out, '\n');
}

static bool header_is(const char *line, size_t n, const char *name)
{
	size_t l = strlen(name);
	return n > l && strncasecmp(line, name, l) == 0 && line[l] == ':';
}

bool local_format_has_delivered_to(const char *body, size_t len, const char *address)
{
	const char *p = body, *end = body + len;
	size_t alen = strlen(address);
	while (p < end) {
		const char *e = line_end(p, end);
		size_t n = (size_t)(e - p);
		if (n && p[n - 1] == '\r')
			n--;
		if (n == 0)
			return false; /* end of the header section */
		if (header_is(p, n, "Delivered-To")) {
			const char *v = p + 13, *ve = p + n;
			while (v < ve && isspace((unsigned char)*v))
				v++;
			while (ve > v && isspace((unsigned char)ve[-1]))
				ve--;
			if ((size_t)(ve - v) == alen && strncasecmp(v, address, alen) == 0)
				return true;
		}
		p = e < end ? e + 1 : end;
	}
	return false;
}

static bool safe_component(const char *value, const char *macro, struct buf *err)
{
	if (*value == '\0' || *value == '.' || strchr(value, '/') != NULL) {
		buf_printf(err, "$%s \"%s\" cannot be used in a path", macro, value);
		return false;
	}
	return true;
}

/* The macro name at p ("$user", "${user}"); its length in *used. */
static bool macro_name(const char *p, char *name, size_t size, size_t *used)
{
	bool braced = p[1] == '{';
	const char *s = p + 1 + braced;
	size_t n = 0;
	while (isalnum((unsigned char)s[n]) || s[n] == '_')
		n++;
	if (n == 0 || n >= size || (braced && s[n] != '}'))
		return false;
	memcpy(name, s, n);
	name[n] = '\0';
	*used = 1 + braced + n + braced;
	return true;
}

bool local_format_path(const char *tmpl, const char *user, const char *domain, struct buf *out, struct buf *err)
{
	buf_reset(out);
	for (const char *p = tmpl; *p;) {
		if (*p != '$') {
			buf_putc(out, *p++);
			continue;
		}
		char name[32];
		size_t used;
		if (!macro_name(p, name, sizeof(name), &used)) {
			buf_printf(err, "bad macro in file-destination \"%s\"", tmpl);
			return false;
		}
		const char *value = strcmp(name, "user") == 0 ? user : strcmp(name, "domain") == 0 ? domain : NULL;
		if (value == NULL) {
			buf_printf(err, "$%s cannot be used in file-destination (only $user and $domain)", name);
			return false;
		}
		if (!safe_component(value, name, err))
			return false;
		buf_puts(out, value);
		p += used;
	}
	if (out->len == 0 || out->data[0] != '/') {
		buf_printf(err, "file-destination \"%s\" is not an absolute path", tmpl);
		return false;
	}
	return true;
}
