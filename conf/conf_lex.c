/* conf_lex.c: splits one line of a configuration file into a directive
 * (keyword and arguments) or a block tag, after checking that the line is
 * text at all.  Quoting follows PowerMTA: double quotes group words,
 * backslash escapes " and \ inside them, and the curly quotes that web
 * pages and word processors produce count as ordinary quotes. */
#include "conf_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

/* UTF-8 of U+201C and U+201D. */
static const char LEFT_QUOTE[] = "\xe2\x80\x9c";
static const char RIGHT_QUOTE[] = "\xe2\x80\x9d";

/* Length of the quote character at p, or 0. */
static size_t quote_len(const char *p, const char *end)
{
	if (p < end && *p == '"')
		return 1;
	if (end - p >= 3 && (memcmp(p, LEFT_QUOTE, 3) == 0 || memcmp(p, RIGHT_QUOTE, 3) == 0))
		return 3;
	return 0;
}

/* Length of a valid UTF-8 sequence at p, or 0 (overlong forms,
 * surrogates and values past U+10FFFF are invalid). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
	size_t n;
	uint32_t cp;
	if (*p < 0x80)
		return 1;
	if ((*p & 0xe0) == 0xc0) {
		n = 2;
		cp = *p & 0x1f;
	} else if ((*p & 0xf0) == 0xe0) {
		n = 3;
		cp = *p & 0x0f;
	} else if ((*p & 0xf8) == 0xf0) {
		n = 4;
		cp = *p & 0x07;
	} else {
		return 0;
	}
	if ((size_t)(end - p) < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

static bool check_text(const char *text, size_t len, struct buf *err)
{
	const unsigned char *p = (const unsigned char *)text, *end = p + len;
	while (p < end) {
		if (*p == '\0') {
			buf_puts(err, "NUL byte in line");
			return false;
		}
		if ((*p < 0x20 && *p != '\t') || *p == 0x7f) {
			buf_printf(err, "control character 0x%02x in line", *p);
			return false;
		}
		size_t n = utf8_len(p, end);
		if (n == 0) {
			buf_puts(err, "invalid UTF-8 in line");
			return false;
		}
		p += n;
	}
	return true;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Scans one quoted word starting at *pp (on the opening quote). */
static bool scan_quoted(const char **pp, const char *end, struct buf *word, struct buf *err)
{
	const char *p = *pp + quote_len(*pp, end);
	for (;;) {
		if (p >= end) {
			buf_puts(err, "unterminated quoted string");
			return false;
		}
		size_t q = quote_len(p, end);
		if (q) {
			*pp = p + q;
			return true;
		}
		if (*p == '\\' && p + 1 < end && (p[1] == '"' || p[1] == '\\')) {
			buf_putc(word, p[1]);
			p += 2;
			continue;
		}
		buf_putc(word, *p++);
	}
}

/* Scans words up to the end, a comment, or (in a tag) the closing '>'.
 * *pp is left on the character that stopped the scan. */
static bool scan_words(const char **pp, const char *end, bool in_tag, struct conf_list *out, struct buf *err)
{
	const char *p = *pp;
	struct buf word = BUF_INIT;
	bool ok = true;
	for (;;) {
		while (p < end && is_blank(*p))
			p++;
		if (p >= end || *p == '#' || (in_tag && *p == '>'))
			break;
		buf_reset(&word);
		buf_puts(&word, "");
		if (quote_len(p, end)) {
			if (!scan_quoted(&p, end, &word, err)) {
				ok = false;
				break;
			}
			if (p < end && !is_blank(*p) && *p != '#' && !(in_tag && *p == '>')) {
				buf_puts(err, "unexpected text right after a closing quote");
				ok = false;
				break;
			}
		} else {
			while (p < end && !is_blank(*p) && *p != '#' && !(in_tag && *p == '>'))
				buf_putc(&word, *p++);
		}
		conf_list_add(out, buf_cstr(&word));
	}
	buf_free(&word);
	*pp = p;
	return ok;
}

static char *lower_copy(const char *s, size_t n)
{
	char *out = mem_strndup(s, n);
	for (char *c = out; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	return out;
}

static char *trimmed_copy(const char *start, const char *end)
{
	while (start < end && is_blank(*start))
		start++;
	while (end > start && is_blank(end[-1]))
		end--;
	return mem_strndup(start, (size_t)(end - start));
}

/* Only blanks and a comment may follow the '>' of a tag. */
static bool check_tag_end(const char *p, const char *end, struct buf *err)
{
	while (p < end && is_blank(*p))
		p++;
	if (p < end && *p != '#') {
		buf_puts(err, "unexpected text after '>'");
		return false;
	}
	return true;
}

static bool lex_tag(const char *p, const char *end, struct conf_line *out, struct buf *err)
{
	p++; /* '<' */
	out->kind = CONF_LINE_OPEN;
	if (p < end && *p == '/') {
		out->kind = CONF_LINE_CLOSE;
		p++;
	}
	const char *name = p;
	while (p < end && !is_blank(*p) && *p != '>' && *p != '#')
		p++;
	if (p == name) {
		buf_puts(err, "missing tag name after '<'");
		return false;
	}
	out->name = lower_copy(name, (size_t)(p - name));
	if (!scan_words(&p, end, true, &out->args, err))
		return false;
	if (p >= end || *p != '>') {
		buf_printf(err, "missing '>' to end the tag <%s%s", out->kind == CONF_LINE_CLOSE ? "/" : "", out->name);
		return false;
	}
	if (out->kind == CONF_LINE_CLOSE && out->args.count) {
		buf_printf(err, "closing tag </%s> takes no argument", out->name);
		return false;
	}
	return check_tag_end(p + 1, end, err);
}

/* The end of the text before a comment, outside quotes. */
static const char *comment_start(const char *p, const char *end)
{
	bool quoted = false;
	while (p < end) {
		size_t q = quote_len(p, end);
		if (q) {
			quoted = !quoted;
			p += q;
		} else if (quoted && *p == '\\' && p + 1 < end) {
			p += 2;
		} else if (!quoted && *p == '#') {
			return p;
		} else {
			p++;
		}
	}
	return end;
}

static bool lex_directive(const char *p, const char *end, struct conf_line *out, struct buf *err)
{
	out->kind = CONF_LINE_DIRECTIVE;
	const char *stop = comment_start(p, end);
	if (*p == '/') {
		/* A regex line: the regex may hold blanks, so the value parser
		 * reads it from rest. */
		out->name = mem_strdup(CONF_REGEX_LINE);
		out->rest = trimmed_copy(p, stop);
		return true;
	}
	if (quote_len(p, end)) {
		buf_puts(err, "a directive name cannot be quoted");
		return false;
	}
	const char *name = p;
	while (p < end && !is_blank(*p) && *p != '#')
		p++;
	out->name = lower_copy(name, (size_t)(p - name));
	out->rest = trimmed_copy(p, stop > p ? stop : p);
	return scan_words(&p, end, false, &out->args, err);
}

bool conf_lex_line(const char *text, size_t len, struct conf_line *out, struct buf *err)
{
	memset(out, 0, sizeof *out);
	if (!check_text(text, len, err))
		return false;
	const char *p = text, *end = text + len;
	while (p < end && is_blank(*p))
		p++;
	if (p >= end || *p == '#') {
		out->kind = CONF_LINE_EMPTY;
		return true;
	}
	if (*p == '<')
		return lex_tag(p, end, out, err);
	return lex_directive(p, end, out, err);
}

void conf_line_free(struct conf_line *line)
{
	free(line->name);
	free(line->rest);
	conf_list_free(&line->args);
	memset(line, 0, sizeof *line);
}

static bool needs_quotes(const char *word)
{
	if (*word == '\0')
		return true;
	for (const char *p = word; *p; p++)
		if (is_blank(*p) || *p == '"' || *p == '#' || *p == '\\')
			return true;
	return false;
}

void conf_quote(const char *word, struct buf *out)
{
	if (!needs_quotes(word)) {
		buf_puts(out, word);
		return;
	}
	buf_putc(out, '"');
	for (const char *p = word; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_putc(out, '\\');
		buf_putc(out, *p);
	}
	buf_putc(out, '"');
}
