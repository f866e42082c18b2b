/* addr.h: IPv4/IPv6 addresses, CIDR ranges (with PowerMTA's short forms
 * such as 10/8, 0/0 and 173.194/16) and IP:PORT endpoints.
 * Parsers return true on success; on failure *why (when not NULL) points to
 * a static sentence saying what is wrong. */
#ifndef TERN_ADDR_H
#define TERN_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct addr_ip {
	int family;        /* AF_INET or AF_INET6 */
	uint8_t bytes[16]; /* network order; 4 bytes used for AF_INET */
};

struct addr_cidr {
	struct addr_ip ip; /* host bits are cleared */
	unsigned prefix;   /* 0..32 or 0..128 */
};

struct addr_endpoint {
	struct addr_cidr range; /* a single address has the full prefix */
	uint16_t port;
};

/* Longest text form of an address, with room for the NUL. */
#define ADDR_IP_STRLEN 46
#define ADDR_CIDR_STRLEN (ADDR_IP_STRLEN + 4)

bool addr_parse_ip(const char *text, struct addr_ip *out, const char **why);
/* Accepts "1.2.3.4", "1.2.3.0/24", "10/8", "0/0", "173.194/16", "::1",
 * "2001:db8::/32".  A missing mask means a single address.  Host bits set
 * beyond the mask ("10.1.2.3/8") are an error. */
bool addr_parse_cidr(const char *text, struct addr_cidr *out, const char **why);
/* Accepts "IP:PORT", "CIDR:PORT" ("0/0:2525"), "[IPv6]:PORT",
 * "[IPv6/64]:PORT". */
bool addr_parse_endpoint(const char *text, struct addr_endpoint *out, const char **why);
/* Parses a decimal port 1..65535. */
bool addr_parse_port(const char *text, uint16_t *out, const char **why);

bool addr_cidr_contains(const struct addr_cidr *range, const struct addr_ip *ip);
bool addr_ip_equal(const struct addr_ip *a, const struct addr_ip *b);
/* An IPv4-mapped IPv6 address (::ffff:1.2.3.4) becomes plain IPv4, so that
 * IPv4 ranges match clients seen on dual-stack sockets. */
void addr_ip_unmap(struct addr_ip *ip);

void addr_ip_format(const struct addr_ip *ip, char out[ADDR_IP_STRLEN]);
void addr_cidr_format(const struct addr_cidr *range, char out[ADDR_CIDR_STRLEN]);

/* Conversions to and from socket addresses. */
bool addr_ip_from_sockaddr(const struct sockaddr *sa, struct addr_ip *out, uint16_t *port);
socklen_t addr_ip_to_sockaddr(const struct addr_ip *ip, uint16_t port, struct sockaddr_storage *out);

#endif
