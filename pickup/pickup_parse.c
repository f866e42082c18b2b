/* pickup_parse.c: the pure parsers of pickup.  A pickup file is untrusted
 * input (anyone may run tern-sendmail, anything may write the directory
 * when it is configured elsewhere): every line is checked, addresses go
 * through the same RFC 5321 parser as smtpd's, and the first problem is
 * the reason the file is refused. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailaddr.h"
#include "mem.h"
#include "pickup.h"

/* ---- lines -------------------------------------------------------------------- */

/* The line at pos: its text without LF (and without a CR before the LF);
 * returns where the next line starts. */
static size_t next_line(const char *data, size_t len, size_t pos, const char **text, size_t *text_len)
{
	const char *nl = memchr(data + pos, '\n', len - pos);
	size_t end = nl ? (size_t)(nl - data) : len;
	*text = data + pos;
	*text_len = end - pos;
	if (nl && *text_len > 0 && data[end - 1] == '\r')
		(*text_len)--;
	return nl ? end + 1 : len;
}

static bool is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static bool has_control(const char *text, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (is_control((unsigned char)text[i]))
			return true;
	return false;
}

/* ---- addresses ------------------------------------------------------------------ */

static void trim(const char **text, size_t *len)
{
	while (*len > 0 && (**text == ' ' || **text == '\t')) {
		(*text)++;
		(*len)--;
	}
	while (*len > 0 && ((*text)[*len - 1] == ' ' || (*text)[*len - 1] == '\t'))
		(*len)--;
}

bool pickup_parse_address(const char *text, bool allow_null, const char *hostname, struct buf *out, bool *utf8,
                          const char **why)
{
	size_t len = strlen(text);
	trim(&text, &len);
	if (len >= 2 && text[0] == '<' && text[len - 1] == '>') {
		text++;
		len -= 2;
	}
	buf_reset(out);
	if (len == 0) {
		*why = allow_null ? NULL : "an empty address is not allowed here";
		return allow_null;
	}
	if (len > MAIL_PATH_MAX) {
		*why = "the address is too long";
		return false;
	}
	/* "root": ours, as Postfix's myorigin */
	bool local_only = memchr(text, '@', len) == NULL;
	char *path =
	    local_only ? mem_asprintf("<%.*s@%s>", (int)len, text, hostname) : mem_asprintf("<%.*s>", (int)len, text);
	const char *p = path;
	struct mail_addr a;
	bool ok = mail_addr_parse_path(&p, false, false, true, &a, why);
	if (ok && *p != '\0') {
		*why = "unexpected text after the address";
		mail_addr_free(&a);
		ok = false;
	}
	if (ok) {
		buf_puts(out, a.mailbox);
		*utf8 = *utf8 || a.utf8;
		mail_addr_free(&a);
	}
	free(path);
	return ok;
}

/* ---- the envelope ---------------------------------------------------------------- */

enum pseudo { PSEUDO_NONE, PSEUDO_SENDER, PSEUDO_RECEIVER, PSEUDO_ENVID, PSEUDO_VMTA };

static enum pseudo pseudo_header(const char *line, size_t len, const char **value, size_t *value_len)
{
	static const struct {
		const char *name;
		enum pseudo kind;
	} names[] = {{"x-sender", PSEUDO_SENDER},
	             {"x-receiver", PSEUDO_RECEIVER},
	             {"x-envid", PSEUDO_ENVID},
	             {"x-virtual-mta", PSEUDO_VMTA}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		size_t n = strlen(names[i].name);
		if (len > n && line[n] == ':' && strncasecmp(line, names[i].name, n) == 0) {
			*value = line + n + 1;
			*value_len = len - n - 1;
			trim(value, value_len);
			return names[i].kind;
		}
	}
	return PSEUDO_NONE;
}

/* A virtual MTA name becomes part of queue names: no '/', nothing odd. */
static bool vmta_name_ok(const char *v, size_t len)
{
	if (len == 0 || len > PICKUP_VMTA_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c <= 0x20 || c >= 0x7f || c == '/')
			return false;
	}
	return true;
}

static bool take_address(struct pickup_envelope *e, enum pseudo kind, const char *value, size_t len,
                         const char *hostname, struct buf *why)
{
	struct buf addr = BUF_INIT;
	const char *reason = NULL;
	char *text = mem_strndup(value, len);
	bool ok = pickup_parse_address(text, kind == PSEUDO_SENDER, hostname, &addr, &e->utf8, &reason);
	if (!ok)
		buf_printf(why, "bad %s address \"%s\": %s", kind == PSEUDO_SENDER ? "x-sender" : "x-receiver", text,
		           reason);
	else if (kind == PSEUDO_SENDER)
		e->sender = mem_strdup(buf_cstr(&addr));
	else if (e->nrcpts >= PICKUP_RCPT_MAX) {
		buf_printf(why, "more than %d x-receiver lines", PICKUP_RCPT_MAX);
		ok = false;
	} else {
		e->rcpts = mem_reallocarray(e->rcpts, e->nrcpts + 1, sizeof(*e->rcpts));
		e->rcpts[e->nrcpts++] = mem_strdup(buf_cstr(&addr));
	}
	free(text);
	buf_free(&addr);
	return ok;
}

static bool take_pseudo(struct pickup_envelope *e, enum pseudo kind, const char *value, size_t len,
                        const char *hostname, struct buf *why)
{
	switch (kind) {
	case PSEUDO_SENDER:
		if (e->sender) {
			buf_puts(why, "more than one x-sender line");
			return false;
		}
		return take_address(e, kind, value, len, hostname, why);
	case PSEUDO_RECEIVER:
		return take_address(e, kind, value, len, hostname, why);
	case PSEUDO_ENVID:
		if (e->envid || len == 0 || len > PICKUP_ENVID_MAX) {
			buf_puts(why, e->envid ? "more than one x-envid line" : "bad x-envid value");
			return false;
		}
		e->envid = mem_strndup(value, len);
		return true;
	case PSEUDO_VMTA:
		if (e->vmta || !vmta_name_ok(value, len)) {
			buf_puts(why, e->vmta ? "more than one x-virtual-mta line" : "bad x-virtual-mta name");
			return false;
		}
		e->vmta = mem_strndup(value, len);
		return true;
	default:
		return false;
	}
}

bool pickup_parse_envelope(const char *data, size_t len, const char *hostname, struct pickup_envelope *out,
                           struct buf *why)
{
	memset(out, 0, sizeof(*out));
	size_t pos = 0;
	while (pos < len) {
		const char *line, *value;
		size_t line_len, value_len;
		size_t next = next_line(data, len, pos, &line, &line_len);
		enum pseudo kind = pseudo_header(line, line_len, &value, &value_len);
		if (kind == PSEUDO_NONE)
			break;
		if (line_len > PICKUP_LINE_MAX || has_control(value, value_len) || memchr(line, '\0', line_len)) {
			buf_printf(why, "%s line %s", kind == PSEUDO_RECEIVER ? "an x-receiver" : "an envelope",
			           line_len > PICKUP_LINE_MAX ? "is too long" : "holds control characters");
			return false;
		}
		if (!take_pseudo(out, kind, value, value_len, hostname, why))
			return false;
		pos = next;
	}
	out->message_offset = pos;
	if (out->sender == NULL && out->nrcpts == 0)
		buf_puts(why, "not a pickup file: it does not start with x-sender: and x-receiver: lines");
	else if (out->sender == NULL)
		buf_puts(why, "no x-sender line");
	else if (out->nrcpts == 0)
		buf_puts(why, "no x-receiver line");
	return why->len == 0;
}

void pickup_envelope_free(struct pickup_envelope *e)
{
	free(e->sender);
	for (size_t i = 0; i < e->nrcpts; i++)
		free(e->rcpts[i]);
	free(e->rcpts);
	free(e->envid);
	free(e->vmta);
	memset(e, 0, sizeof(*e));
}

/* ---- the message ------------------------------------------------------------------ */

/* "Name:" with a name of printable ASCII other than ':' (RFC 5322 2.2). */
static bool is_header_field(const char *line, size_t len)
{
	size_t i = 0;
	while (i < len && line[i] != ':' && (unsigned char)line[i] > 0x20 && (unsigned char)line[i] < 0x7f)
		i++;
	return i > 0 && i < len && line[i] == ':';
}

struct message_state {
	bool in_header;
	bool first;
	unsigned lineno;
};

/* Checks one line of the header section; false with the reason. */
static bool header_line(struct message_state *st, const char *line, size_t len, struct buf *out, struct buf *why)
{
	bool continuation = len > 0 && (line[0] == ' ' || line[0] == '\t');
	if (len == 0) {
		st->in_header = false;
	} else if ((continuation && !st->first) || is_header_field(line, len)) {
		if (has_control(line, len)) {
			buf_printf(why, "control characters in the header section (message line %u)", st->lineno);
			return false;
		}
	} else if (has_control(line, len)) {
		buf_printf(why, "binary data where the header section should be (message line %u)", st->lineno);
		return false;
	} else {
		/* text without a header before it: keep it as body */
		buf_puts(out, "\r\n");
		st->in_header = false;
	}
	return true;
}

bool pickup_normalize_message(const char *data, size_t len, bool remove_dot, struct buf *out, struct buf *why)
{
	if (memchr(data, '\0', len)) {
		buf_puts(why, "a NUL byte in the message");
		return false;
	}
	struct message_state st = {.in_header = true, .first = true};
	for (size_t pos = 0; pos < len;) {
		const char *line;
		size_t line_len;
		pos = next_line(data, len, pos, &line, &line_len);
		st.lineno++;
		if (memchr(line, '\r', line_len)) {
			buf_printf(why, "a bare CR in the message (message line %u)", st.lineno);
			return false;
		}
		if (remove_dot && line_len > 0 && line[0] == '.') {
			line++;
			line_len--;
		}
		if (st.in_header && !header_line(&st, line, line_len, out, why))
			return false;
		st.first = false;
		buf_append(out, line, line_len);
		buf_puts(out, "\r\n");
	}
	return true;
}

/* ---- header fields ------------------------------------------------------------------ */

static bool field_is(const char *field, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && field[n] == ':' && strncasecmp(field, name, n) == 0;
}

/* The value of a field, unfolded and trimmed. */
static char *field_value(const char *field, size_t len)
{
	const char *colon = memchr(field, ':', len);
	struct buf v = BUF_INIT;
	for (const char *p = colon + 1; p < field + len; p++)
		if (*p != '\r' && *p != '\n')
			buf_putc(&v, *p == '\t' ? ' ' : *p);
	const char *text = buf_cstr(&v);
	size_t start = strspn(text, " "), n = v.len - start;
	while (n && text[start + n - 1] == ' ')
		n--;
	char *out = mem_strndup(text + start, n);
	buf_free(&v);
	return out;
}

/* Takes the value of a field that names something (a virtual MTA, a job):
 * the last one counts, as in smtpd. */
static bool take_name(char **slot, const char *field, size_t len, bool vmta, struct buf *why)
{
	free(*slot);
	*slot = field_value(field, len);
	if (strlen(*slot) > (vmta ? PICKUP_VMTA_MAX : PICKUP_JOB_MAX) ||
	    (vmta && (**slot == '\0' || strchr(*slot, '/'))))
		buf_printf(why, "unusable %s header", vmta ? "X-Virtual-MTA" : "job id");
	return why->len == 0;
}

/* One field (with its continuation lines): true keeps it. */
static bool filter_field(const char *f, size_t len, const struct pickup_header_rules *r, struct pickup_headers *found,
                         struct buf *why)
{
	const char *job = r->jobid_header ? r->jobid_header : "X-Job";
	if (field_is(f, len, "Message-Id"))
		found->has_message_id = true;
	if (r->process_x_vmta && field_is(f, len, "X-Virtual-MTA"))
		return take_name(&found->vmta, f, len, true, why) && r->retain_x_vmta;
	if (r->process_x_job && field_is(f, len, job))
		return take_name(&found->job, f, len, false, why) && r->retain_x_job;
	if (field_is(f, len, "Date")) {
		if (r->drop_date)
			return false;
		found->has_date = true;
	}
	for (size_t i = 0; i < r->nremove; i++)
		if (field_is(f, len, r->remove[i]))
			return false;
	return true;
}

/* Length of the field at f: its line and the continuation lines. */
static size_t field_length(const char *f, size_t left)
{
	size_t n = 0;
	do {
		const char *nl = memchr(f + n, '\n', left - n);
		n = nl ? (size_t)(nl - f) + 1 : left;
	} while (n < left && (f[n] == ' ' || f[n] == '\t'));
	return n;
}

bool pickup_filter_headers(const char *msg, size_t len, const struct pickup_header_rules *rules, struct buf *out,
                           struct pickup_headers *found, struct buf *why)
{
	memset(found, 0, sizeof(*found));
	size_t pos = 0;
	/* the header section ends at the empty line (or the end) */
	while (pos < len && !(msg[pos] == '\r' || msg[pos] == '\n')) {
		size_t n = field_length(msg + pos, len - pos);
		bool keep = filter_field(msg + pos, n, rules, found, why);
		if (why->len)
			return false;
		if (keep)
			buf_append(out, msg + pos, n);
		pos += n;
	}
	buf_append(out, msg + pos, len - pos);
	return true;
}

void pickup_headers_free(struct pickup_headers *h)
{
	free(h->vmta);
	free(h->job);
	memset(h, 0, sizeof(*h));
}
