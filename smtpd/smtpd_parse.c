/* smtpd_parse.c: the pure parsers of smtpd - ESMTP parameters, RFC 3461 xtext, NOTIFY and ORCPT, base64, domain patterns
 * and the end-of-data scanner.  Nothing here touches a socket or the
 * configuration, so all of it is unit tested and fuzzable.  The parsers
 * are strict on purpose: an address smtpd accepts must mean the same thing
 * to every MTA after it. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mem.h"
#include "smtpd.h"


/* ---- ESMTP parameters (RFC 5321 section 4.1.2) --------------------------------- */

static bool is_keyword(const char *k)
{
	if (!isalnum((unsigned char)*k))
		return false;
	for (k++; *k; k++)
		if (!isalnum((unsigned char)*k) && *k != '-')
			return false;
	return true;
}

/* esmtp-value = 1*(%d33-60 / %d62-126), and UTF-8 with SMTPUTF8 (which
 * the callers check per parameter). */
static bool is_value(const char *v)
{
	if (*v == '\0')
		return false;
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;
		if (c == '=' || (c < 33) || c == 127)
			return false;
	}
	return true;
}

bool smtpd_parse_params(char *text, struct smtpd_param *params, size_t *count, const char **why)
{
	*count = 0;
	if (*text != '\0' && *text != ' ') {
		*why = "parameters must be separated by a space";
		return false;
	}
	char *save = NULL;
	for (char *word = strtok_r(text, " ", &save); word; word = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(word, '=');
		if (eq)
			*eq = '\0';
		if (!is_keyword(word) || (eq && !is_value(eq + 1))) {
			*why = "bad parameter syntax";
			return false;
		}
		if (*count == SMTPD_PARAMS_MAX) {
			*why = "too many parameters";
			return false;
		}
		for (size_t i = 0; i < *count; i++)
			if (strcasecmp(params[i].keyword, word) == 0) {
				*why = "duplicate parameter";
				return false;
			}
		params[*count].keyword = word;
		params[*count].value = eq ? eq + 1 : NULL;
		(*count)++;
	}
	return true;
}

/* ---- RFC 3461 ------------------------------------------------------------------ */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool smtpd_xtext_decode(const char *in, struct buf *out)
{
	for (const char *p = in; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '+') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
			if (lo < 0)
				return false;
			buf_putc(out, (char)(hi * 16 + lo));
			p += 2;
		} else if (c >= 33 && c <= 126 && c != '=') {
			buf_putc(out, (char)c);
		} else {
			return false;
		}
	}
	return true;
}

bool smtpd_xtext_valid(const char *in)
{
	struct buf tmp = BUF_INIT;
	bool ok = *in != '\0' && smtpd_xtext_decode(in, &tmp) && memchr(tmp.data, '\0', tmp.len) == NULL;
	buf_free(&tmp);
	return ok;
}

bool smtpd_parse_notify(const char *value, struct buf *out)
{
	static const char *const words[] = {"SUCCESS", "FAILURE", "DELAY"};
	if (strcasecmp(value, "NEVER") == 0) {
		buf_puts(out, "NEVER");
		return true;
	}
	bool seen[3] = {false, false, false};
	const char *p = value;
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		size_t i;
		for (i = 0; i < 3; i++)
			if (strlen(words[i]) == n && strncasecmp(p, words[i], n) == 0)
				break;
		if (i == 3 || seen[i])
			return false;
		seen[i] = true;
		buf_printf(out, "%s%s", out->len ? "," : "", words[i]);
		if (comma == NULL)
			return true;
		p = comma + 1;
	}
}

bool smtpd_parse_orcpt(const char *value, struct buf *out)
{
	const char *semi = strchr(value, ';');
	if (semi == NULL || semi == value)
		return false;
	size_t typelen = (size_t)(semi - value);
	bool rfc822 = typelen == 6 && strncasecmp(value, "rfc822", 6) == 0;
	bool utf8 = typelen == 5 && strncasecmp(value, "utf-8", 5) == 0;
	if (!rfc822 && !utf8)
		return false;
	struct buf decoded = BUF_INIT;
	bool ok = semi[1] != '\0' && smtpd_xtext_decode(semi + 1, &decoded) && decoded.len <= MAIL_PATH_MAX &&
	          memchr(decoded.data, '\0', decoded.len) == NULL;
	buf_free(&decoded);
	if (ok)
		buf_puts(out, value); /* kept encoded, as DSNs carry it */
	return ok;
}

/* ---- base64 -------------------------------------------------------------------- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;
	return p ? (int)(p - b64chars) : -1;
}

bool smtpd_base64_decode(const char *in, size_t len, struct buf *out)
{
	if (len % 4 != 0)
		return false;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;
		for (int j = 0; j < 4; j++) {
			char c = in[i + j];
			if (c == '=' && i + 4 == len && j >= 2) {
				v[j] = 0;
				pad++;
			} else if (pad > 0 || (v[j] = b64val(c)) < 0) {
				return false;
			}
		}
		if (pad == 1 && in[i + 2] == '=')
			return false;
		unsigned n = (unsigned)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
		buf_putc(out, (char)(n >> 16));
		if (pad < 2)
			buf_putc(out, (char)(n >> 8 & 0xff));
		if (pad < 1)
			buf_putc(out, (char)(n & 0xff));
	}
	return true;
}

void smtpd_base64_encode(const void *in, size_t len, struct buf *out)
{
	const unsigned char *p = in;
	for (size_t i = 0; i < len; i += 3) {
		unsigned n = (unsigned)p[i] << 16;
		if (i + 1 < len)
			n |= (unsigned)p[i + 1] << 8;
		if (i + 2 < len)
			n |= p[i + 2];
		buf_putc(out, b64chars[n >> 18 & 63]);
		buf_putc(out, b64chars[n >> 12 & 63]);
		buf_putc(out, i + 1 < len ? b64chars[n >> 6 & 63] : '=');
		buf_putc(out, i + 2 < len ? b64chars[n & 63] : '=');
	}
}

/* ---- log text ------------------------------------------------------------------ */

void smtpd_log_safe(const char *in, size_t max, struct buf *out)
{
	size_t n = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++, n++) {
		if (n == max) {
			buf_puts(out, "...");
			return;
		}
		buf_putc(out, *p < 32 || *p == 127 ? '?' : (char)*p);
	}
}

/* ---- domain patterns ----------------------------------------------------------- */

static bool suffix_of(const char *domain, const char *suffix)
{
	size_t dl = strlen(domain), sl = strlen(suffix);
	return dl > sl && domain[dl - sl - 1] == '.' && strcasecmp(domain + dl - sl, suffix) == 0;
}

bool smtpd_domain_match(const char *pattern, const char *domain)
{
	if (strcmp(pattern, "*") == 0)
		return true;
	if (strncmp(pattern, "[*.]", 4) == 0)
		return strcasecmp(domain, pattern + 4) == 0 || suffix_of(domain, pattern + 4);
	if (strncmp(pattern, "*.", 2) == 0)
		return suffix_of(domain, pattern + 2);
	if (pattern[0] == '[') {
		/* [ip/mask] matches address literals inside the range */
		size_t pl = strlen(pattern), dl = strlen(domain);
		if (pl < 3 || pattern[pl - 1] != ']' || dl < 3 || domain[0] != '[' || domain[dl - 1] != ']')
			return false;
		char *range = mem_strndup(pattern + 1, pl - 2);
		char *lit = mem_strndup(domain + 1, dl - 2);
		const char *ip_text = strncasecmp(lit, "IPv6:", 5) == 0 ? lit + 5 : lit;
		struct addr_cidr cidr;
		struct addr_ip ip;
		bool ok = addr_parse_cidr(range, &cidr, NULL) && addr_parse_ip(ip_text, &ip, NULL) &&
		          addr_cidr_contains(&cidr, &ip);
		free(range);
		free(lit);
		return ok;
	}
	return strcasecmp(pattern, domain) == 0;
}

/* ---- the end-of-data scanner ----------------------------------------------------- */

void smtpd_scan_init(struct smtpd_scan *s)
{
	memset(s, 0, sizeof(*s));
	s->state = SMTPD_SCAN_LINE_START;
}

static void count_octet(struct smtpd_scan *s)
{
	if (++s->line_len > SMTPD_TEXT_LINE_MAX - 2)
		s->line_too_long = true;
}

/* Octets before the first CR or LF: the bulk of a message is plain text,
 * which memchr crosses far faster than the state machine octet by octet. */
static size_t text_span(const char *p, size_t len)
{
	const char *cr = memchr(p, '\r', len);
	size_t limit = cr ? (size_t)(cr - p) : len;
	const char *lf = memchr(p, '\n', limit);
	return lf ? (size_t)(lf - p) : limit;
}

enum smtpd_scan_result smtpd_scan_data(struct smtpd_scan *s, const char *in, size_t len, size_t *consumed,
                                       struct buf *out)
{
	size_t i = 0, run = 0; /* run: plain text octets not yet copied, ending at i */
	enum smtpd_scan_result result = SMTPD_SCAN_MORE;
	for (; i < len; i++) {
		char c = in[i];
		switch (s->state) {
		case SMTPD_SCAN_TEXT: {
			size_t n = text_span(in + i, len - i);
			if (n == 0)
				break;
			s->line_len += n;
			if (s->line_len > SMTPD_TEXT_LINE_MAX - 2)
				s->line_too_long = true;
			run += n;
			i += n - 1; /* the loop steps over the last one */
			continue;
		}
		case SMTPD_SCAN_LINE_START:
			if (c == '.') {
				s->state = SMTPD_SCAN_DOT;
				count_octet(s);
				continue;
			}
			if (c == '\r' || c == '\n')
				break;
			count_octet(s);
			s->state = SMTPD_SCAN_TEXT;
			run++;
			continue;
		case SMTPD_SCAN_DOT:
			if (c == '\r') {
				s->state = SMTPD_SCAN_DOT_CR;
				continue;
			}
			if (c == '\n') {
				result = SMTPD_SCAN_BARE_LF;
				goto out;
			}
			/* dot-stuffing: the leading dot is dropped, the rest is text */
			count_octet(s);
			s->state = SMTPD_SCAN_TEXT;
			run++;
			continue;
		case SMTPD_SCAN_DOT_CR:
			if (c == '\n') {
				i++;
				result = SMTPD_SCAN_END;
				goto out;
			}
			result = SMTPD_SCAN_BARE_CR;
			goto out;
		case SMTPD_SCAN_CR:
			if (c == '\n') {
				buf_append(out, "\r\n", 2);
				s->state = SMTPD_SCAN_LINE_START;
				s->line_len = 0;
				continue;
			}
			result = SMTPD_SCAN_BARE_CR;
			goto out;
		}
		/* CR or LF in TEXT or at LINE_START: flush the text run first */
		buf_append(out, in + i - run, run);
		run = 0;
		if (c == '\n') {
			result = SMTPD_SCAN_BARE_LF;
			goto out;
		}
		s->state = SMTPD_SCAN_CR;
	}
out:
	if (run)
		buf_append(out, in + i - run, run);
	*consumed = i;
	return result;
}
