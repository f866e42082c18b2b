/* mailaddr.h: RFC 5321 envelope addresses (reverse-path and
 * forward-path), parsed strictly; used by smtpd and pickup. */
#ifndef TERN_MAILADDR_H
#define TERN_MAILADDR_H

#include <stdbool.h>

/* Limits of RFC 5321 section 4.5.3.1. */
#define MAIL_LOCAL_PART_MAX 64
#define MAIL_DOMAIN_MAX 255
#define MAIL_PATH_MAX 256

/* A parsed reverse-path or forward-path. */
struct mail_addr {
	char *mailbox;     /* "local@domain", "" for <>, "Postmaster" */
	char *local;       /* the local part as written (quotes kept) */
	char *domain;      /* "" for <> and <Postmaster>; "[1.2.3.4]" for literals */
	bool null;         /* <> */
	bool route;        /* a source route (@a,@b:) was given and dropped */
	bool quoted;       /* the local part is a quoted string */
	bool literal;      /* the domain is an address literal */
	bool trailing_dot; /* the domain was written with a final dot (dropped) */
	bool utf8;         /* the address holds UTF-8 (needs SMTPUTF8) */
};

/* Parses "<path>" starting at *p (after "FROM:" or "TO:") and advances *p
 * past the closing ">".  allow_null accepts <>, allow_postmaster <Postmaster>,
 * allow_utf8 non-ASCII UTF-8 (SMTPUTF8).  On failure *why says what is
 * wrong. */
bool mail_addr_parse_path(const char **p, bool allow_null, bool allow_postmaster, bool allow_utf8,
                          struct mail_addr *out, const char **why);
void mail_addr_free(struct mail_addr *a);

#endif
