/* smtp_reply.c: the pure text handling of the SMTP client: taking replies
 * out of the received bytes, reading the EHLO keywords we use, and the
 * wire form of a message (CRLF line ends, dot-stuffing).  No I/O here, so
 * unit tests cover it directly. */
#include "smtp.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Longest reply we accept; a server sending more is broken or hostile. */
#define REPLY_MAX (64 * 1024)

void smtp_reply_init(struct smtp_reply *reply)
{
	memset(reply, 0, sizeof *reply);
	buf_init(&reply->text);
}

void smtp_reply_free(struct smtp_reply *reply)
{
	buf_free(&reply->text);
	memset(reply, 0, sizeof *reply);
}

static bool three_digits(const char *p)
{
	return p[0] >= '2' && p[0] <= '5' && isdigit((unsigned char)p[1]) && isdigit((unsigned char)p[2]);
}

/* "X.Y.Z" of RFC 3463 at the start of text, whose class matches the
 * reply's; its length, or 0. */
static size_t enhanced_length(const char *text, size_t len, char cls)
{
	if (len < 5 || text[0] != cls || text[1] != '.')
		return 0;
	size_t i = 2, digits = 0;
	while (i < len && isdigit((unsigned char)text[i]) && digits < 3)
		i++, digits++;
	if (digits == 0 || i >= len || text[i] != '.')
		return 0;
	i++;
	digits = 0;
	while (i < len && isdigit((unsigned char)text[i]) && digits < 3)
		i++, digits++;
	if (digits == 0 || (i < len && text[i] != ' '))
		return 0;
	return i;
}

enum smtp_line_status smtp_reply_take(struct buf *in, struct smtp_reply *reply)
{
	size_t pos = 0, nlines = 0;
	buf_reset(&reply->text);
	reply->enhanced[0] = '\0';
	reply->code = 0;
	while (pos < in->len) {
		const char *line = in->data + pos;
		const char *nl = memchr(line, '\n', in->len - pos);
		if (nl == NULL)
			break;
		size_t len = (size_t)(nl - line);
		size_t next = pos + len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len < 3 || !three_digits(line) || (len > 3 && line[3] != '-' && line[3] != ' '))
			return SMTP_LINE_BAD;
		int code = atoi((char[4]){line[0], line[1], line[2], '\0'});
		if (nlines > 0 && code != reply->code)
			return SMTP_LINE_BAD;
		reply->code = code;
		const char *text = len > 4 ? line + 4 : "";
		size_t tlen = len > 4 ? len - 4 : 0;
		if (nlines == 0) {
			size_t elen = enhanced_length(text, tlen, line[0]);
			if (elen > 0 && elen < sizeof reply->enhanced) {
				memcpy(reply->enhanced, text, elen);
				reply->enhanced[elen] = '\0';
			}
		}
		if (nlines > 0)
			buf_putc(&reply->text, '\n');
		buf_append(&reply->text, text, tlen);
		nlines++;
		pos = next;
		if (len == 3 || line[3] == ' ') {
			buf_consume(in, pos);
			return SMTP_LINE_COMPLETE;
		}
	}
	return in->len > REPLY_MAX ? SMTP_LINE_BAD : SMTP_LINE_PARTIAL;
}

void smtp_reply_format(const struct smtp_reply *reply, struct buf *out)
{
	buf_printf(out, "%d", reply->code);
	if (reply->text.len == 0)
		return;
	buf_putc(out, ' ');
	for (const char *p = buf_cstr(&reply->text); *p; p++)
		buf_putc(out, *p == '\n' ? ' ' : *p);
}

const char *smtp_reply_default_enhanced(int code)
{
	switch (code / 100) {
	case 2:
		return "2.0.0";
	case 4:
		return "4.0.0";
	default:
		return "5.0.0";
	}
}

/* ---- EHLO ------------------------------------------------------------------- */

static void add_keyword(struct smtp_ehlo *out, const char *word, size_t len)
{
	size_t used = strlen(out->keywords);
	if (used + len + 2 >= sizeof out->keywords)
		return;
	if (used > 0)
		out->keywords[used++] = ',';
	memcpy(out->keywords + used, word, len);
	out->keywords[used + len] = '\0';
}

static bool keyword_is(const char *word, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(word, name, len) == 0;
}

static void ehlo_line(struct smtp_ehlo *out, const char *line, size_t len)
{
	size_t wlen = 0;
	while (wlen < len && line[wlen] != ' ')
		wlen++;
	if (wlen == 0)
		return;
	char word[64];
	if (wlen >= sizeof word)
		return;
	for (size_t i = 0; i < wlen; i++)
		word[i] = (char)toupper((unsigned char)line[i]);
	add_keyword(out, word, wlen);
	if (keyword_is(word, wlen, "PIPELINING"))
		out->pipelining = true;
	else if (keyword_is(word, wlen, "8BITMIME"))
		out->eightbitmime = true;
	else if (keyword_is(word, wlen, "DSN"))
		out->dsn = true;
	else if (keyword_is(word, wlen, "SMTPUTF8"))
		out->smtputf8 = true;
	else if (keyword_is(word, wlen, "STARTTLS"))
		out->starttls = true;
	else if (keyword_is(word, wlen, "CHUNKING"))
		out->chunking = true;
	else if (keyword_is(word, wlen, "SIZE")) {
		out->size = true;
		if (wlen < len)
			out->size_limit = strtoull(line + wlen + 1, NULL, 10);
	}
}

void smtp_ehlo_parse(const struct smtp_reply *reply, struct smtp_ehlo *out)
{
	memset(out, 0, sizeof *out);
	const char *text = buf_cstr(&reply->text);
	/* The first line is the server's name and greeting, not a keyword. */
	const char *line = strchr(text, '\n');
	while (line) {
		line++;
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		ehlo_line(out, line, len);
		line = end;
	}
}

/* ---- the message on the wire ------------------------------------------------ */

size_t smtp_body_encode(const char *body, size_t len, struct buf *out)
{
	size_t pos = 0;
	if (len > 0)
		buf_reserve(out, out->len + len + len / 64 + 2);
	size_t start = out->len;
	while (pos < len) {
		const char *nl = memchr(body + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - body) : len;
		size_t line_len = end - pos;
		/* A CR before the LF belongs to the line end, not the text. */
		if (line_len > 0 && body[end - 1] == '\r' && nl)
			line_len--;
		buf_append(out, body + pos, line_len);
		buf_append(out, "\r\n", 2);
		pos = nl ? end + 1 : len;
	}
	return out->len - start;
}

void smtp_body_dot_stuff(const char *content, size_t len, smtp_emit_fn emit, void *arg)
{
	size_t from = 0; /* what is not emitted yet */
	for (size_t line = 0; line < len;) {
		if (content[line] == '.') {
			emit(arg, content + from, line - from);
			emit(arg, ".", 1);
			from = line; /* the line's own dot follows the added one */
		}
		const char *nl = memchr(content + line, '\n', len - line);
		line = nl ? (size_t)(nl - content) + 1 : len;
	}
	emit(arg, content + from, len - from);
}

void smtp_xtext_append(struct buf *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
			buf_printf(out, "+%02X", *p);
		else
			buf_putc(out, (char)*p);
	}
}
