/* mailaddr.c: the RFC 5321 path parser (RFC 6531 for UTF-8), shared by
 * every program that takes an envelope address from outside: smtpd for
 * MAIL FROM and RCPT TO, pickup for x-sender and x-receiver.  Strict on
 * purpose: an address we accept must mean the same thing to every MTA
 * after us. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "buf.h"
#include "mailaddr.h"
#include "mem.h"

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

void mail_addr_free(struct mail_addr *a)
{
	free(a->mailbox);
	free(a->local);
	free(a->domain);
	memset(a, 0, sizeof(*a));
}

bool mail_addr_parse_path(const char **p, bool allow_null, bool allow_postmaster, bool allow_utf8,
                          struct mail_addr *out, const char **why)
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
	if (local_len > MAIL_LOCAL_PART_MAX) {
		pp.why = "the local part is longer than 64 octets";
		goto bad;
	}
	if (domain_len > MAIL_DOMAIN_MAX || (size_t)(pp.p - open) + 1 > MAIL_PATH_MAX) {
		pp.why = "the address is too long";
		goto bad;
	}
	out->local = mem_strndup((const char *)local, local_len);
	out->domain = mem_strndup((const char *)domain, domain_len);
	struct buf mailbox = BUF_INIT;
	buf_concat(&mailbox, out->local, "@", out->domain, NULL);
	out->mailbox = buf_detach(&mailbox);
	out->utf8 = pp.utf8_seen;
	*p = (const char *)pp.p + 1;
	return true;
bad:
	*why = pp.why ? pp.why : "bad address syntax";
	mail_addr_free(out);
	return false;
}
