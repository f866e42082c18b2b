/* addr.c: parsing, matching and formatting of IP addresses, CIDR ranges and
 * IP:PORT endpoints (see addr.h).  PowerMTA writes IPv4 ranges in a short
 * form where missing trailing octets are zero ("10/8" is 10.0.0.0/8), so
 * the IPv4 parser here accepts one to four octets when a mask follows. */
#include "addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void set_why(const char **why, const char *reason)
{
	if (why)
		*why = reason;
}

static size_t ip_length(int family)
{
	return family == AF_INET ? 4 : 16;
}

static unsigned max_prefix(int family)
{
	return family == AF_INET ? 32 : 128;
}

bool addr_parse_ip(const char *text, struct addr_ip *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (strchr(text, ':')) {
		if (inet_pton(AF_INET6, text, out->bytes) == 1) {
			out->family = AF_INET6;
			return true;
		}
		set_why(why, "not a valid IPv6 address");
		return false;
	}
	if (inet_pton(AF_INET, text, out->bytes) == 1) {
		out->family = AF_INET;
		return true;
	}
	set_why(why, "not a valid IPv4 address");
	return false;
}

/* Parses one to four dotted decimal octets ("10", "173.194", "1.2.3.4"). */
static bool parse_short_ipv4(const char *text, struct addr_ip *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	out->family = AF_INET;
	const char *p = text;
	for (int octet = 0; octet < 4; octet++) {
		if (!isdigit((unsigned char)*p)) {
			set_why(why, "not a valid IPv4 address");
			return false;
		}
		unsigned value = 0;
		int digits = 0;
		while (isdigit((unsigned char)*p)) {
			value = value * 10 + (unsigned)(*p++ - '0');
			if (++digits > 3 || value > 255) {
				set_why(why, "IPv4 octet out of range (0-255)");
				return false;
			}
		}
		out->bytes[octet] = (uint8_t)value;
		if (*p == '\0')
			return true;
		if (*p++ != '.' || octet == 3) {
			set_why(why, "not a valid IPv4 address");
			return false;
		}
	}
	set_why(why, "not a valid IPv4 address");
	return false;
}

static bool parse_prefix(const char *text, unsigned limit, unsigned *out, const char **why)
{
	if (*text == '\0' || strlen(text) > 3) {
		set_why(why, "bad network mask length");
		return false;
	}
	unsigned value = 0;
	for (const char *p = text; *p; p++) {
		if (!isdigit((unsigned char)*p)) {
			set_why(why, "bad network mask length");
			return false;
		}
		value = value * 10 + (unsigned)(*p - '0');
	}
	if (value > limit) {
		set_why(why, limit == 32 ? "IPv4 mask length over 32" : "IPv6 mask length over 128");
		return false;
	}
	*out = value;
	return true;
}

static bool host_bits_clear(const struct addr_ip *ip, unsigned prefix)
{
	size_t len = ip_length(ip->family);
	for (size_t i = 0; i < len; i++) {
		unsigned bit_start = (unsigned)i * 8;
		uint8_t mask;
		if (bit_start + 8 <= prefix)
			mask = 0;
		else if (bit_start >= prefix)
			mask = 0xff;
		else
			mask = (uint8_t)(0xff >> (prefix - bit_start));
		if (ip->bytes[i] & mask)
			return false;
	}
	return true;
}

bool addr_parse_cidr(const char *text, struct addr_cidr *out, const char **why)
{
	char host[ADDR_CIDR_STRLEN];
	const char *slash = strchr(text, '/');
	size_t host_len = slash ? (size_t)(slash - text) : strlen(text);
	if (host_len == 0 || host_len >= sizeof(host)) {
		set_why(why, host_len ? "address too long" : "missing address");
		return false;
	}
	memcpy(host, text, host_len);
	host[host_len] = '\0';
	memset(out, 0, sizeof(*out));

	bool ok =
	    (slash && !strchr(host, ':')) ? parse_short_ipv4(host, &out->ip, why) : addr_parse_ip(host, &out->ip, why);
	if (!ok)
		return false;
	unsigned limit = max_prefix(out->ip.family);
	if (!slash) {
		out->prefix = limit;
		return true;
	}
	if (!parse_prefix(slash + 1, limit, &out->prefix, why))
		return false;
	if (!host_bits_clear(&out->ip, out->prefix)) {
		set_why(why, "address has bits set beyond the network mask");
		return false;
	}
	return true;
}

bool addr_parse_port(const char *text, uint16_t *out, const char **why)
{
	if (*text == '\0' || strlen(text) > 5) {
		set_why(why, "bad port number");
		return false;
	}
	unsigned value = 0;
	for (const char *p = text; *p; p++) {
		if (!isdigit((unsigned char)*p)) {
			set_why(why, "bad port number");
			return false;
		}
		value = value * 10 + (unsigned)(*p - '0');
	}
	if (value == 0 || value > 65535) {
		set_why(why, "port out of range (1-65535)");
		return false;
	}
	*out = (uint16_t)value;
	return true;
}

bool addr_parse_endpoint(const char *text, struct addr_endpoint *out, const char **why)
{
	char host[ADDR_CIDR_STRLEN];
	const char *port;
	size_t host_len;
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':') {
			set_why(why, "expected [IPv6]:PORT");
			return false;
		}
		host_len = (size_t)(close - text - 1);
		text++;
		port = close + 2;
	} else {
		const char *colon = strrchr(text, ':');
		if (!colon) {
			set_why(why, "missing :PORT");
			return false;
		}
		if (memchr(text, ':', (size_t)(colon - text))) {
			set_why(why, "IPv6 addresses must be written [IPv6]:PORT");
			return false;
		}
		host_len = (size_t)(colon - text);
		port = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof(host)) {
		set_why(why, host_len ? "address too long" : "missing address");
		return false;
	}
	memcpy(host, text, host_len);
	host[host_len] = '\0';
	return addr_parse_cidr(host, &out->range, why) && addr_parse_port(port, &out->port, why);
}

bool addr_ip_equal(const struct addr_ip *a, const struct addr_ip *b)
{
	return a->family == b->family && memcmp(a->bytes, b->bytes, ip_length(a->family)) == 0;
}

void addr_ip_unmap(struct addr_ip *ip)
{
	static const uint8_t mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (ip->family != AF_INET6 || memcmp(ip->bytes, mapped_prefix, sizeof(mapped_prefix)) != 0)
		return;
	memmove(ip->bytes, ip->bytes + 12, 4);
	memset(ip->bytes + 4, 0, 12);
	ip->family = AF_INET;
}

bool addr_cidr_contains(const struct addr_cidr *range, const struct addr_ip *ip)
{
	struct addr_ip candidate = *ip;
	addr_ip_unmap(&candidate);
	if (candidate.family != range->ip.family)
		return false;
	unsigned full_bytes = range->prefix / 8;
	unsigned rest_bits = range->prefix % 8;
	if (memcmp(candidate.bytes, range->ip.bytes, full_bytes) != 0)
		return false;
	if (rest_bits == 0)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - rest_bits));
	return (candidate.bytes[full_bytes] & mask) == (range->ip.bytes[full_bytes] & mask);
}

void addr_ip_format(const struct addr_ip *ip, char out[ADDR_IP_STRLEN])
{
	if (!inet_ntop(ip->family, ip->bytes, out, ADDR_IP_STRLEN))
		snprintf(out, ADDR_IP_STRLEN, "?");
}

void addr_cidr_format(const struct addr_cidr *range, char out[ADDR_CIDR_STRLEN])
{
	char ip[ADDR_IP_STRLEN];
	addr_ip_format(&range->ip, ip);
	if (range->prefix == max_prefix(range->ip.family))
		snprintf(out, ADDR_CIDR_STRLEN, "%s", ip);
	else
		snprintf(out, ADDR_CIDR_STRLEN, "%s/%u", ip, range->prefix);
}

bool addr_ip_from_sockaddr(const struct sockaddr *sa, struct addr_ip *out, uint16_t *port)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		out->family = AF_INET;
		memcpy(out->bytes, &sin->sin_addr, 4);
		if (port)
			*port = ntohs(sin->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		out->family = AF_INET6;
		memcpy(out->bytes, &sin6->sin6_addr, 16);
		if (port)
			*port = ntohs(sin6->sin6_port);
		return true;
	}
	return false;
}

socklen_t addr_ip_to_sockaddr(const struct addr_ip *ip, uint16_t port, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (ip->family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)out;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, ip->bytes, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	memcpy(&sin6->sin6_addr, ip->bytes, 16);
	return sizeof(*sin6);
}
