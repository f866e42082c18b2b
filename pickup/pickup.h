/* pickup.h: the private header of pickup, the service that takes the
 * files tern-sendmail (or any program writing PowerMTA's pickup format)
 * drops into the pickup directory and hands them to qmgr.
 *
 * One process, running as the tern user.  The files:
 *   pickup_main.c    daemon skeleton callbacks, inotify and the
 *                    periodic rescan
 *   pickup_conf.c    the directories and the <source {pickup}> settings
 *   pickup_file.c    one file: opened safely, checked, handed to qmgr,
 *                    removed only once qmgr has it, or moved to the bad
 *                    directory with the reason logged
 *   pickup_parse.c   pure parsers: the x-sender / x-receiver envelope,
 *                    the message's header section and line ends (unit
 *                    tested) */
#ifndef TERN_PICKUP_H
#define TERN_PICKUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "enqueue.h"

/* Recipients one file may name (qmgr's own limit per message). */
#define PICKUP_RCPT_MAX 10000
/* Largest file taken whatever max-message-size says (qmgr's limit). */
#define PICKUP_SIZE_MAX (64u * 1024 * 1024)
/* Longest envelope line (x-receiver: <address>). */
#define PICKUP_LINE_MAX 1000
#define PICKUP_ENVID_MAX 100
#define PICKUP_VMTA_MAX 255
#define PICKUP_JOB_MAX 255

/* ---- pure parsers (pickup_parse.c) ----------------------------------------- */

/* The envelope a file carries in its leading pseudo-headers:
 *   x-sender: ADDRESS       exactly one; <> or empty for the null sender
 *   x-receiver: ADDRESS     one per recipient, at least one
 *   x-envid: TEXT           optional (DSN envelope id)
 *   x-virtual-mta: NAME     optional
 * Names are case-insensitive; lines end with LF or CRLF.  Addresses may be
 * written with or without <>; one without a domain is qualified with
 * the local host name. */
struct pickup_envelope {
	char *sender; /* "" for <> */
	char **rcpts;
	size_t nrcpts;
	char *envid;           /* NULL when absent */
	char *vmta;            /* NULL when absent */
	bool utf8;             /* some address holds UTF-8 */
	size_t message_offset; /* where the message starts in the file */
};

/* Parses the envelope of a file.  false with the reason in why (one line,
 * safe to log) when the file is not well-formed. */
bool pickup_parse_envelope(const char *data, size_t len, const char *hostname, struct pickup_envelope *out,
                           struct buf *why);
void pickup_envelope_free(struct pickup_envelope *e);

/* One address of an x-sender or x-receiver line: the mailbox in out
 * ("" for the null sender).  false with the reason in why. */
bool pickup_parse_address(const char *text, bool allow_null, const char *hostname, struct buf *out, bool *utf8,
                          const char **why);

/* The message as qmgr stores it: CRLF line ends (LF alone becomes CRLF),
 * and with remove_dot a leading "." of a line is dropped (the file was
 * dot-stuffed: pickup-remove-dot).  The header section must be header
 * fields (or continuation lines) up to the first empty line; a message
 * that starts with text that is no header gets an empty line first, so
 * the text stays body.  false with the reason in why for a NUL byte, a
 * bare CR, or control characters in the header section. */
bool pickup_normalize_message(const char *data, size_t len, bool remove_dot, struct buf *out, struct buf *why);

/* What <source {pickup}> says about the message's header fields, as
 * smtpd applies it to SMTP submissions. */
struct pickup_header_rules {
	bool process_x_vmta, retain_x_vmta; /* X-Virtual-MTA */
	bool process_x_job, retain_x_job;   /* the job header */
	const char *jobid_header;           /* NULL: X-Job */
	bool drop_date;                     /* add-date-header override */
	const char *const *remove;          /* remove-header */
	size_t nremove;
};

/* What the header section held. */
struct pickup_headers {
	char *vmta, *job; /* taken from X-Virtual-MTA and the job header, NULL */
	bool has_date, has_message_id;
};

/* Applies the rules to the header section of a normalised message (CRLF
 * line ends), writing the message with the fields kept to out.  false
 * with the reason when an X-Virtual-MTA or job header cannot be used
 * (too long, or a virtual MTA name with '/'). */
bool pickup_filter_headers(const char *msg, size_t len, const struct pickup_header_rules *rules, struct buf *out,
                           struct pickup_headers *found, struct buf *why);
void pickup_headers_free(struct pickup_headers *h);

/* ---- the service (pickup_main.c, pickup_file.c) ------------------------------- */

struct conf;

/* What the configuration says, resolved once per load. */
struct pickup_conf {
	struct conf *conf;
	char *dir, *bad_dir;
	char *hostname;
	char *qmgr_socket;
	bool remove_dot;           /* pickup-remove-dot */
	uint64_t max_message_size; /* <source {pickup}>; at most PICKUP_SIZE_MAX */
	uint64_t max_rcpt;         /* <source {pickup}> max-rcpt-per-message; 0: none */
	bool add_received_header;
	bool add_message_id_header, add_date_header;
	bool reject_invalid_vmta;
	struct pickup_header_rules headers;
	char *default_vmta; /* <source {pickup}> default-virtual-mta, NULL */
};

/* Loads the file; NULL with the reason in err. */
struct pickup_conf *pickup_conf_load(const char *path, struct buf *err);
void pickup_conf_free(struct pickup_conf *c);
/* True when name is a configured <virtual-mta> or <virtual-mta-pool>. */
bool pickup_conf_vmta_known(const struct pickup_conf *c, const char *name);

enum pickup_outcome {
	PICKUP_DONE,  /* queued and removed, moved to the bad directory, or gone */
	PICKUP_HELD,  /* qmgr did not take it now (4xx, broke off): the file
	               * stays, the other files may go on */
	PICKUP_RETRY, /* qmgr cannot be reached: the file stays, and so do all */
};

/* Takes one file NAME of the pickup directory (dir_fd). conn is the
 * connection to qmgr, opened when needed and closed on failure. */
enum pickup_outcome pickup_file_take(const struct pickup_conf *c, int dir_fd, const char *name,
                                     struct enqueue_conn *conn);

#endif
