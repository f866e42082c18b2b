/* conf.h: the configuration language of tern (PowerMTA-compatible).
 *
 * conf_load() reads a file (and what it includes) into a struct conf that
 * holds the typed value of every directive and the diagnostics found on
 * the way.  Daemons never look at the text again: they ask for the
 * settings of a scope (global, a recipient domain, a client IP, a named
 * block) and read typed values from it.  Every value remembers where it
 * came from (FILE:LINE, or the built-in default), for ternctl explain and
 * for error messages that point at the right line.
 *
 * A struct conf is immutable after loading, so daemons may share one
 * between threads and readers. */
#ifndef TERN_CONF_H
#define TERN_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "buf.h"
#include "value.h"

struct conf;
struct conf_block;
struct conf_settings;

/* ---- loading and diagnostics -------------------------------------------- */

enum conf_severity { CONF_ERROR, CONF_WARNING };

struct conf_diag {
	enum conf_severity severity;
	const char *file; /* NULL for problems without a file */
	unsigned line;    /* 0 when the problem concerns the whole file */
	const char *message;
};

/* Flags of conf_load_buffer(). */
#define CONF_NO_INCLUDE 0x1u /* "include" is an error (fuzzing, untrusted text) */

/* Loads a configuration file.  Never returns NULL: a file with errors gives
 * a conf whose diagnostics say what is wrong (check conf_ok()). */
struct conf *conf_load(const char *path);
/* Loads configuration text held in memory; name stands for the file name
 * in diagnostics and relative includes. */
struct conf *conf_load_buffer(const char *name, const char *text, size_t len, unsigned flags);
void conf_free(struct conf *conf);

/* True when loading found no error (warnings are allowed). */
bool conf_ok(const struct conf *conf);
/* Diagnostics in the order they were found. */
size_t conf_diag_count(const struct conf *conf);
const struct conf_diag *conf_diag_at(const struct conf *conf, size_t i);
/* Writes "FILE:LINE: message" or "FILE:LINE: warning: message". */
void conf_diag_format(const struct conf_diag *diag, struct buf *out);
/* Appends every error of conf to out, separated by separator. */
void conf_format_errors(const struct conf *conf, const char *separator, struct buf *out);
/* Loads a file for a daemon: the conf, or NULL with every error in err
 * (separated by separator). */
struct conf *conf_load_checked(const char *path, const char *separator, struct buf *err);
/* SIGHUP in a daemon: the new configuration, or NULL after logging why
 * the running one stays. */
struct conf *conf_reload(const char *path);
/* The spool directory: the first spool line, or the built-in default.
 * Every program finds the others' sockets under it. */
const char *conf_spool(const struct conf *conf);
/* The pickup directory (tern-sendmail writes, the pickup service reads)
 * and its bad-mail directory: the arguments of "pickup", else
 * <spool>/pickup and <spool>/pickup-bad.  The caller frees them. */
char *conf_pickup_dir(const struct conf *conf);
/* host-name, else the machine's own name; the caller frees it. */
char *conf_host_name(const struct conf *conf);
/* How many workers a process count directive (smtpd-processes,
 * smtp-processes) asks for, at most 256.  0 is the automatic count: one
 * process per CPU.  Two smtpd processes on two CPUs moved 5-8 % more
 * mail end to end than one in clear and 9 % more with STARTTLS, at the
 * same CPU a message (doc/performance.md). */
unsigned conf_worker_processes(const struct conf *conf, const char *directive);
char *conf_pickup_bad_dir(const struct conf *conf);

/* ---- blocks --------------------------------------------------------------- */

/* The kinds of block, which are also the scopes a directive may appear in. */
enum conf_kind {
	CONF_GLOBAL,
	CONF_SOURCE,
	CONF_DOMAIN,
	CONF_VMTA,
	CONF_VMTA_POOL,
	CONF_LISTENER,
	CONF_SMTP_USER,
	CONF_ACCT_FILE,
	CONF_SPOOL,
	CONF_DNS,
	CONF_BOUNCE_CATEGORIES,
	CONF_SMTP_PATTERN_LIST,
	CONF_PATTERN_LIST,
	CONF_OPAQUE, /* recognised PowerMTA blocks whose contents are not read yet */
	CONF_KIND_COUNT
};

/* Blocks of one kind in file order; duplicates of a name that merges (such
 * as a repeated <domain x>) appear once.  For CONF_LISTENER this includes
 * the one-line smtp-listener form and, when no listener is configured, the
 * implicit 0.0.0.0:25 listener. */
size_t conf_block_count(const struct conf *conf, enum conf_kind kind);
const struct conf_block *conf_block_at(const struct conf *conf, enum conf_kind kind, size_t i);
/* Finds a top-level block by its argument (domains and names compare
 * case-insensitively, CIDRs and endpoints by value); NULL if none. */
const struct conf_block *conf_block_find(const struct conf *conf, enum conf_kind kind, const char *name);

enum conf_kind conf_block_kind(const struct conf_block *block);
/* The argument of the tag as written ("" for blocks without one). */
const char *conf_block_name(const struct conf_block *block);
/* Where the block was (first) opened; file is NULL for implicit blocks. */
const char *conf_block_file(const struct conf_block *block);
unsigned conf_block_line(const struct conf_block *block);
/* The block's own directives over their defaults (listeners also inherit
 * the global smtp-server-* settings, virtual MTAs the global host-name and
 * smtp-source-host).  Not available for <domain> and <source> blocks,
 * whose settings come from conf_resolve_domain() and conf_resolve_source()
 * (NULL is returned for them). */
const struct conf_settings *conf_block_settings(const struct conf_block *block);
/* Every directive occurrence of the block in file order (for ordered rule
 * lists: <pattern-list>, <smtp-pattern-list>, <bounce-category-patterns>). */
size_t conf_block_setting_count(const struct conf_block *block);
const struct conf_setting *conf_block_setting_at(const struct conf_block *block, size_t i);
/* The endpoint of a listener block. */
const struct addr_endpoint *conf_listener_endpoint(const struct conf_block *listener);

/* ---- resolution ------------------------------------------------------------ */

/* The global settings. */
const struct conf_settings *conf_global(const struct conf *conf);
/* Settings for mail to a recipient domain ("example.com", "[10.1.2.3]"),
 * optionally as sent through a virtual MTA or pool (NULL for none).  Blocks
 * are merged from general to specific: * , [*.]x, *.x, exact (deeper
 * suffixes after shallower ones), then the pool's and the virtual MTA's
 * own <domain> blocks the same way.  Returns NULL when vmta names no
 * <virtual-mta> or <virtual-mta-pool>.  Free with conf_settings_free(). */
struct conf_settings *conf_resolve_domain(const struct conf *conf, const char *domain, const char *vmta);
/* Settings for a client IP: the <source> ranges containing it from the
 * broadest to the narrowest, then the named source (NULL for none) on top.
 * Returns NULL when source_name names no <source>. */
struct conf_settings *conf_resolve_source(const struct conf *conf, const struct addr_ip *ip, const char *source_name);
void conf_settings_free(struct conf_settings *settings);

/* ---- values ------------------------------------------------------------------ */

enum conf_type {
	CONF_T_BOOL,
	CONF_T_UINT,             /* number */
	CONF_T_COUNT,            /* number, "unlimited" = VALUE_UNLIMITED */
	CONF_T_UINT_OR_AUTO,     /* number, "auto" = VALUE_UNLIMITED */
	CONF_T_SIZE,             /* number of bytes, "unlimited" = VALUE_UNLIMITED */
	CONF_T_INTERVAL,         /* seconds */
	CONF_T_INTERVAL_NEVER,   /* seconds or VALUE_NEVER */
	CONF_T_BOOL_OR_INTERVAL, /* boolean, or seconds (then boolean is true) */
	CONF_T_INTERVAL_LIST,    /* intervals */
	CONF_T_RATE,             /* rate */
	CONF_T_VOLUME_RATE,      /* rate whose count is bytes */
	CONF_T_RATE_LIST,        /* list of rates, as text in list */
	CONF_T_STRING,           /* string */
	CONF_T_SECRET,           /* string, never shown */
	CONF_T_PATH,             /* string */
	CONF_T_ENUM,             /* string (the word) and word (its index) */
	CONF_T_LIST,             /* list */
	CONF_T_RECORDS,          /* list of short record type names (d, b, ...) */
	CONF_T_DOMAIN_LIST,      /* list of domain patterns */
	CONF_T_CIDR,             /* cidr */
	CONF_T_IP,               /* cidr with a full prefix */
	CONF_T_ENDPOINT,         /* endpoint */
	CONF_T_NAME_SERVER,      /* string: IP or IP:PORT of one address */
	CONF_T_CERT,             /* string = file, secret = password or NULL */
	CONF_T_HOST_NAME,        /* cidr + string (smtp-source-host IP HOSTNAME) */
	CONF_T_CIDR_COUNT,       /* cidr + number (ip-connection-limit CIDR N) */
	CONF_T_CIDR_RATE,        /* cidr + rate */
	CONF_T_CIDR_VOLUME_RATE, /* cidr + rate */
	CONF_T_PATTERN_COUNT,    /* string (MX pattern) + number */
	CONF_T_HTTP_ACCESS,      /* cidr + list (access levels) */
	CONF_T_DKIM_KEY,         /* list: selector, domain, file */
	CONF_T_SMTP_HOSTS,       /* hosts: preference levels of host lists */
	CONF_T_LISTEN,           /* smtp-listener: endpoint, list of option words */
	CONF_T_PICKUP,           /* list: pickup dir, bad-mail dir */
	CONF_T_WORDS,            /* list: the arguments as written */
	CONF_T_PRIVACY,          /* string = method, secret = key or text */
	CONF_T_ADDRESS_OR_REGEX, /* string, regex when written /.../ */
	CONF_T_REGEX_CATEGORY,   /* regex + string (category) */
	CONF_T_REPLY_RULE,       /* regex + list (actions) */
	CONF_T_PATTERN_RULE,     /* string (what to match), regex, list (results) */
	CONF_T_RECORD_FIELDS,    /* string (record type) + list (fields) */
	CONF_T_INCLUDE,          /* string */
	CONF_T_MACRO,            /* string (name) + list */
};

struct conf_list {
	size_t count;
	char **items;
};

/* A typed value.  Which members are meaningful depends on type (see the
 * comments of enum conf_type).  unset is true for a directive without a
 * default that was not configured, and for one cleared with "". */
struct conf_value {
	enum conf_type type;
	bool unset;
	struct conf_list args; /* the arguments as written, unquoted */
	bool boolean;
	uint64_t number;
	int64_t seconds;
	unsigned word;
	struct value_rate rate;
	struct value_interval_list *intervals;
	struct addr_cidr cidr;
	struct addr_endpoint endpoint;
	const char *string;
	const char *secret;
	const char *regex; /* the text between the slashes */
	struct conf_list list;
	struct conf_list *hosts; /* smtp-hosts: one list per preference level */
	size_t host_levels;
};

/* One occurrence of a directive, or its default. */
struct conf_setting {
	const char *name;
	struct conf_value value;
	const char *file; /* NULL for the built-in default */
	unsigned line;
	/* For repeatable directives (postmaster, smtp-source-host, reply, ...)
	 * the next occurrence from the same scope. */
	const struct conf_setting *next;
};

/* Typed getters.  The directive must be valid in the settings' scope and
 * of the getter's type; anything else is a bug in the caller (panic). */
const struct conf_setting *conf_get_setting(const struct conf_settings *s, const char *name);
const struct conf_value *conf_get_value(const struct conf_settings *s, const char *name);
bool conf_get_bool(const struct conf_settings *s, const char *name);
/* uint, count, uint-or-auto, size */
uint64_t conf_get_uint(const struct conf_settings *s, const char *name);
/* interval, interval-or-never */
int64_t conf_get_interval(const struct conf_settings *s, const char *name);
struct value_rate conf_get_rate(const struct conf_settings *s, const char *name);
/* string, secret, path, enum, include; NULL when unset */
const char *conf_get_string(const struct conf_settings *s, const char *name);
const struct conf_list *conf_get_list(const struct conf_settings *s, const char *name);

/* Calls fn for every directive valid in the scope of s, in alphabetical
 * order, with the setting in force (the first occurrence for repeatable
 * directives; follow ->next for the others).  name is the directive's;
 * setting->name differs when the value is inherited from another
 * directive (a listener's tls-certificate from smtp-server-tls-certificate). */
void conf_settings_each(const struct conf_settings *s,
                        void (*fn)(const char *name, const struct conf_setting *setting, void *arg), void *arg);

/* Writes the value as it would be written in a configuration file:
 * booleans as yes/no, arguments quoted when they contain blanks or are
 * empty, secrets as "********". */
void conf_setting_format_value(const struct conf_setting *setting, struct buf *out);
/* Writes "FILE:LINE" or "default". */
void conf_setting_format_origin(const struct conf_setting *setting, struct buf *out);

/* ---- the directive table, for tools ----------------------------------------- */

/* True when the configuration layer knows the directive name. */
bool conf_directive_known(const char *name);
/* True when something in tern acts on the directive; false when it is
 * only recognised ("recognised, not yet supported"). */
bool conf_directive_supported(const char *name);
/* True for directives whose every occurrence counts (postmaster, ...). */
bool conf_directive_repeatable(const char *name);
/* "<domain>", "global level", ... */
const char *conf_kind_name(enum conf_kind kind);

/* One entry of the directive table, for documentation (tern.conf(5) is
 * generated from it). */
struct conf_directive_info {
	const char *name;
	enum conf_type type;
	const char *def;          /* the default as written in a file; NULL for none */
	const char *const *words; /* the words of an enum; NULL otherwise */
	const char *inherit;      /* the global directive whose value is the default */
	bool supported;
	bool repeatable;
};
/* Entry i of the table, in alphabetical order; false past the end.  where
 * receives the places the directive may appear ("in <domain> or ..."). */
bool conf_directive_at(size_t i, struct conf_directive_info *info, struct buf *where);

#endif
