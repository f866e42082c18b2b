/* smtpd_parse.c: the pure parsers of smtpd - RFC 5321 paths, ESMTP
 * parameters, RFC 3461 xtext, NOTIFY and ORCPT, base64, domain patterns
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

/* ---- addresses (RFC 5321 section 4.1.2, RFC 6531 for UTF-8) ------------------ */

/* strchr finds the terminating NUL too: without the c != 0 test the end
 * of the line would count as atext and the parser would read past it. */
static bool is_atext(unsigned char c)
{
	return c != '\0' && (isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Length of one well-formed UTF-8 sequence at p (non-ASCII, no overlongs,
 * no surrogates), 0 if there is none. */
static size_t utf8_seq(const unsigned char *p)
{
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		return (p[1] & 0xc0) == 0x80 ? 2 : 0;
	if (p[0] >= 0xe0 && p[0] <= 0xef) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))
			return 0;
		return 3;
	}
	if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
			return 0;
		if ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))
			return 0;
		return 4;
	}
	return 0;
}

struct path_parser {
	const unsigned char *p;
	bool allow_utf8;
	bool utf8_seen;
	const char *why;
};

/* One character of atext or, with SMTPUTF8, a UTF-8 sequence. */
static size_t atext_len(struct path_parser *pp)
{
	if (is_atext(*pp->p))
		return 1;
	if (*pp->p >= 0x80 && pp->allow_utf8) {
		size_t n = utf8_seq(pp->p);
		if (n)
			pp->utf8_seen = true;
		return n;
	}
	return 0;
}

static bool parse_dot_string(struct path_parser *pp)
{
	for (;;) {
		size_t n, atom = 0;
		while ((n = atext_len(pp)) > 0) {
			pp->p += n;
			atom++;
		}
		if (atom == 0) {
			pp->why = "empty or invalid atom in the local part";
			return false;
		}
		if (*pp->p != '.')
			return true;
		pp->p++;
	}
}

static bool parse_quoted_string(struct path_parser *pp)
{
	pp->p++; /* the opening quote */
	for (;;) {
		unsigned char c = *pp->p;
		if (c == '"') {
			pp->p++;
			return true;
		}
		if (c == '\\') {
			if (pp->p[1] < 32 || pp->p[1] > 126) {
				pp->why = "bad quoted pair in the local part";
				return false;
			}
			pp->p += 2;
		} else if (c >= 32 && c <= 126) {
			pp->p++;
		} else if (c >= 0x80 && pp->allow_utf8 && utf8_seq(pp->p)) {
			pp->utf8_seen = true;
			pp->p += utf8_seq(pp->p);
		} else {
			pp->why = "bad character in the quoted local part";
			return false;
		}
	}
}

static bool is_let_dig(unsigned char c)
{
	return isalnum(c);
}

/* Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str];
 * a U-label may hold UTF-8 with SMTPUTF8.  A final dot is noted, not
 * accepted silently: the relay check refuses it. */
static bool parse_domain(struct path_parser *pp, bool *trailing_dot)
{
	*trailing_dot = false;
	for (;;) {
		const unsigned char *start = pp->p;
		unsigned char last = 0;
		for (;;) {
			size_t n = 0;
			if (is_let_dig(*pp->p) || *pp->p == '-')
				n = 1;
			else if (*pp->p >= 0x80 && pp->allow_utf8 && (n = utf8_seq(pp->p)) > 0)
				pp->utf8_seen = true;
			if (n == 0)
				break;
			last = *pp->p;
			pp->p += n;
		}
		if (pp->p == start) {
			if (start[-1] == '.' && !*trailing_dot && (*pp->p == '>' || *pp->p == ',' || *pp->p == ':')) {
				*trailing_dot = true;
				return true;
			}
			pp->why = "empty or invalid label in the domain";
			return false;
		}
		if (*start == '-' || last == '-' || pp->p - start > 63) {
			pp->why = "invalid label in the domain";
			return false;
		}
		if (*pp->p != '.')
			return true;
		pp->p++;
	}
}

static bool parse_ipv4(const char *text)
{
	struct addr_ip ip;
	int dots = 0;
	for (const char *c = text; *c; c++) {
		if (*c == '.')
			dots++;
		else if (!isdigit((unsigned char)*c))
			return false;
	}
	/* addr_parse_ip would accept short forms; a literal needs four parts. */
	return dots == 3 && addr_parse_ip(text, &ip, NULL) && ip.family == 2 /* AF_INET */;
}

/* address-literal = "[" ( IPv4 / "IPv6:" IPv6 / General ) "]"; tern
 * takes IPv4 and IPv6 only. */
static bool parse_literal(struct path_parser *pp)
{
	const char *start = (const char *)pp->p + 1;
	const char *end = strchr(start, ']');
	if (end == NULL || end - start > 64) {
		pp->why = "bad address literal";
		return false;
	}
	char text[66];
	memcpy(text, start, (size_t)(end - start));
	text[end - start] = '\0';
	struct addr_ip ip;
	bool ok;
	if (strncasecmp(text, "IPv6:", 5) == 0)
		ok = strchr(text + 5, ':') != NULL && addr_parse_ip(text + 5, &ip, NULL) && ip.family != 2;
	else
		ok = parse_ipv4(text);
	if (!ok) {
		pp->why = "bad address literal";
		return false;
	}
	pp->p = (const unsigned char *)end + 1;
	return true;
}

/* A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain */
static bool parse_route(struct path_parser *pp)
{
	for (;;) {
		bool dot;
		pp->p++; /* "@" */
		if (!parse_domain(pp, &dot) || dot) {
			pp->why = "bad source route";
			return false;
		}
		if (*pp->p == ':') {
			pp->p++;
			return true;
		}
		if (*pp->p != ',' || pp->p[1] != '@') {
			pp->why = "bad source route";
			return false;
		}
		pp->p++;
	}
}

void smtpd_addr_free(struct smtpd_addr *a)
{
	free(a->mailbox);
	free(a->local);
	free(a->domain);
	memset(a, 0, sizeof(*a));
}

bool smtpd_parse_path(const char **p, bool allow_null, bool allow_postmaster, bool allow_utf8, struct smtpd_addr *out,
                      const char **why)
{
	memset(out, 0, sizeof(*out));
	struct path_parser pp = {.p = (const unsigned char *)*p, .allow_utf8 = allow_utf8};
	if (*pp.p != '<') {
		*why = "the address must be enclosed in <>";
		return false;
	}
	const unsigned char *open = pp.p++;
	if (*pp.p == '>') {
		if (!allow_null) {
			*why = "an empty address is not allowed here";
			return false;
		}
		out->null = true;
		out->mailbox = mem_strdup("");
		out->local = mem_strdup("");
		out->domain = mem_strdup("");
		*p = (const char *)pp.p + 1;
		return true;
	}
	if (*pp.p == '@') {
		if (!parse_route(&pp))
			goto bad;
		out->route = true;
	}
	const unsigned char *local = pp.p;
	if (*pp.p == '"') {
		out->quoted = true;
		if (!parse_quoted_string(&pp))
			goto bad;
	} else if (!parse_dot_string(&pp)) {
		goto bad;
	}
	size_t local_len = (size_t)(pp.p - local);
	if (*pp.p == '>' && allow_postmaster && !out->route && local_len == 10 &&
	    strncasecmp((const char *)local, "postmaster", 10) == 0) {
		out->local = mem_strndup((const char *)local, local_len);
		out->mailbox = mem_strdup(out->local);
		out->domain = mem_strdup("");
		*p = (const char *)pp.p + 1;
		return true;
	}
	if (*pp.p != '@') {
		pp.why = "the address has no domain";
		goto bad;
	}
	pp.p++;
	const unsigned char *domain = pp.p;
	if (*pp.p == '[') {
		out->literal = true;
		if (!parse_literal(&pp))
			goto bad;
	} else if (!parse_domain(&pp, &out->trailing_dot)) {
		goto bad;
	}
	size_t domain_len = (size_t)(pp.p - domain) - (out->trailing_dot ? 1 : 0);
	if (*pp.p != '>') {
		pp.why = "unexpected character in the address";
		goto bad;
	}
	if (local_len > SMTPD_LOCAL_PART_MAX) {
		pp.why = "the local part is longer than 64 octets";
		goto bad;
	}
	if (domain_len > SMTPD_DOMAIN_MAX || (size_t)(pp.p - open) + 1 > SMTPD_PATH_MAX) {
		pp.why = "the address is too long";
		goto bad;
	}
	out->local = mem_strndup((const char *)local, local_len);
	out->domain = mem_strndup((const char *)domain, domain_len);
	out->mailbox = mem_asprintf("%s@%s", out->local, out->domain);
	out->utf8 = pp.utf8_seen;
	*p = (const char *)pp.p + 1;
	return true;
bad:
	*why = pp.why ? pp.why : "bad address syntax";
	smtpd_addr_free(out);
	return false;
}

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
	bool ok = semi[1] != '\0' && smtpd_xtext_decode(semi + 1, &decoded) && decoded.len <= SMTPD_PATH_MAX &&
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
