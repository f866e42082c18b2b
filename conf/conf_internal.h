/* conf_internal.h: what the files of libternconf share and nobody else
 * sees: the directive and block tables, the lexer's line, the loaded
 * blocks and the indexes built for resolution. */
#ifndef TERN_CONF_INTERNAL_H
#define TERN_CONF_INTERNAL_H

#include "conf.h"

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* Limits on what the loader accepts, so that garbage fails fast. */
#define CONF_MAX_LINE 8192
#define CONF_MAX_FILE (16u << 20)
#define CONF_MAX_INCLUDE_DEPTH 16
#define CONF_MAX_BLOCK_DEPTH 8
#define CONF_MAX_ERRORS 100
#define CONF_MAX_WARNINGS 1000
#define CONF_MAX_MACRO_EXPANSION 10000

/* ---- the tables (conf_directives.c) ---------------------------------------- */

#define CONF_SCOPE(kind) (1u << (kind))

/* Directive flags.  Exactly one of SUPPORTED / PENDING per entry, so that a
 * daemon taking a directive over is a one-word change in the table. */
#define CONF_SUPPORTED 0x1u
#define CONF_PENDING 0x0u /* recognised, not yet supported */
#define CONF_MULTI 0x2u   /* repeatable: every occurrence counts */
#define CONF_ONCE 0x4u    /* at most once per block */

struct conf_directive {
	const char *name;
	enum conf_type type;
	unsigned scopes;
	const char *def; /* default as written in a file; NULL for none */
	unsigned flags;
	const char *const *words; /* the words of an enum */
	uint64_t max;             /* largest number allowed, 0 for no bound */
	/* A global directive whose explicit value is this one's default
	 * (<smtp-listener> tls-certificate <- smtp-server-tls-certificate). */
	const char *inherit;
	unsigned min_args, max_args; /* CONF_T_WORDS only */
};

struct conf_blockdef {
	const char *tag;
	enum conf_kind kind;
	unsigned parents; /* scopes the block may be opened in */
	bool needs_arg;   /* <tag ARG>; otherwise the argument is optional */
	bool merge;       /* a repeated <tag ARG> continues the first one */
	bool allows_include;
};

extern const struct conf_directive conf_directives[];
extern const size_t conf_directive_total;

const struct conf_directive *conf_directive_lookup(const char *name);
size_t conf_directive_index(const struct conf_directive *d);
/* The closest known directive name, or NULL when nothing is close. */
const char *conf_directive_suggest(const char *name);
const struct conf_blockdef *conf_blockdef_lookup(const char *tag);
const char *conf_blockdef_suggest(const char *tag);
const struct conf_blockdef *conf_blockdef_of(enum conf_kind kind);
/* The record types of <acct-file> records: returns the short name ("d")
 * for a short or long name, NULL when unknown. */
const char *conf_record_type(const char *name);
bool conf_record_field_known(const char *name, const char **suggestion);
/* Writes where a scope mask allows a directive: "in <domain> or
 * <virtual-mta>", "at global level or in <virtual-mta>". */
void conf_scopes_format(unsigned scopes, struct buf *out);
/* Edit distance, bounded by limit (returns limit + 1 beyond it). */
size_t conf_edit_distance(const char *a, const char *b, size_t limit);

/* ---- the lexer (conf_lex.c) ---------------------------------------------------- */

enum conf_line_kind { CONF_LINE_EMPTY, CONF_LINE_DIRECTIVE, CONF_LINE_OPEN, CONF_LINE_CLOSE };

/* Regex lines of <bounce-category-patterns> ("/re/ category") have this
 * name, so that the table can say where they belong. */
#define CONF_REGEX_LINE "/regex/"

struct conf_line {
	enum conf_line_kind kind;
	char *name;            /* keyword or tag, lower case */
	struct conf_list args; /* unquoted arguments */
	char *rest;            /* the raw text after the name, comment removed */
};

/* Splits one line (without its newline).  On failure writes the reason to
 * err and returns false. */
bool conf_lex_line(const char *text, size_t len, struct conf_line *out, struct buf *err);
void conf_line_free(struct conf_line *line);
/* Quotes a word for a configuration file when it needs it. */
void conf_quote(const char *word, struct buf *out);

/* ---- lists and values (conf_value.c) -------------------------------------------- */

void conf_list_add(struct conf_list *list, const char *item);
void conf_list_free(struct conf_list *list);
/* Splits "a, b,c" (the arguments joined by blanks) at commas. */
bool conf_list_split(const struct conf_list *args, char sep, struct conf_list *out, struct buf *err);

/* Parses the arguments of a line into a typed value; on failure writes the
 * message (without FILE:LINE) to err. */
bool conf_value_parse(const struct conf_directive *d, const struct conf_line *line, struct conf_value *out,
                      struct buf *err);
void conf_value_free(struct conf_value *value);

/* ---- domain patterns and macros (conf_macro.c) ------------------------------------ */

enum conf_pattern_kind {
	CONF_PAT_ALL,     /* * */
	CONF_PAT_BRACKET, /* [*.]example.com */
	CONF_PAT_SUB,     /* *.example.com */
	CONF_PAT_EXACT,   /* example.com */
	CONF_PAT_CIDR,    /* [10.0.0.0/8] */
};

struct conf_pattern {
	enum conf_pattern_kind kind;
	char *key;             /* the domain part, lower case, no trailing dot */
	unsigned depth;        /* labels in key */
	struct addr_cidr cidr; /* CONF_PAT_CIDR */
	bool from_macro;
	struct conf_block *block;
	size_t order; /* file order of the block, the last tie-breaker */
};

/* Parses one domain pattern (no macros left in it). */
bool conf_pattern_parse(const char *text, struct conf_pattern *out, struct buf *err);
/* Lower-cases a domain and drops a trailing dot. */
char *conf_domain_normalize(const char *domain);
/* Expands $NAME references; the result holds one or more patterns.  Errors
 * name unknown macros and loops. */
bool conf_macro_expand(const struct conf *conf, const char *text, struct conf_list *out, bool *expanded,
                       struct buf *err);

/* ---- the loaded configuration ------------------------------------------------------- */

struct conf_setting_head {
	size_t dir;
	const struct conf_setting *first;
};

struct conf_block {
	enum conf_kind kind;
	const struct conf_blockdef *def;
	char *name;
	char *key; /* what duplicates are recognised by */
	const char *file;
	unsigned line;
	size_t order;
	struct conf_block *parent;
	/* Occurrences in file order while loading. */
	struct conf_setting **items;
	size_t nitems;
	/* After loading: per directive, the occurrence in force, by dir. */
	struct conf_setting_head *heads;
	size_t nheads;
	struct conf_settings *settings;    /* named blocks */
	struct addr_endpoint endpoint;     /* listeners */
	struct addr_cidr cidr;             /* <source CIDR> */
	bool named;                        /* <source NAME> */
	struct conf_domain_index *domains; /* <virtual-mta>, <virtual-mta-pool> */
};

/* The <domain> blocks of one context (global, a VMTA or a pool), sorted by
 * key so that each suffix of a domain is one binary search. */
struct conf_domain_index {
	struct conf_pattern *patterns; /* by key, then kind */
	size_t count;
	struct conf_pattern *literals; /* CONF_PAT_CIDR, by prefix */
	size_t nliterals;
	struct conf_pattern *all; /* the "*" blocks, in file order */
	size_t nall;
	size_t total;
};

struct conf_macro {
	char *name;
	struct conf_list values;
	const char *file;
	unsigned line;
};

struct conf_vec {
	void **items;
	size_t count;
	size_t cap;
};

struct conf {
	struct conf_vec diags; /* struct conf_diag * */
	size_t nerrors, nwarnings;
	bool stopped;                                /* too many errors */
	struct conf_vec files;                       /* char *, every file name used in diagnostics */
	struct conf_vec blocks[CONF_KIND_COUNT];     /* struct conf_block * */
	struct conf_block **sorted[CONF_KIND_COUNT]; /* top-level ones by key */
	size_t nsorted[CONF_KIND_COUNT];
	struct conf_block *global;
	struct conf_vec macros;        /* struct conf_macro * */
	struct conf_setting *defaults; /* one per directive */
	struct conf_settings *global_settings;
	struct conf_domain_index domains;
	/* <source CIDR> blocks by family, then prefix, then address. */
	struct conf_block **sources;
	size_t nsources;
	size_t next_order;
	struct conf_block **hash; /* by kind, parent and key; see conf_parse.c */
	size_t nhash, nhashed;
};

void conf_vec_push(struct conf_vec *v, void *item);
void conf_vec_free(struct conf_vec *v);

/* Records a diagnostic; file may be NULL. */
void conf_error(struct conf *conf, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void conf_warning(struct conf *conf, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Interns a file name for the lifetime of the conf. */
const char *conf_file_name(struct conf *conf, const char *name);

/* conf_parse.c: reads the text into blocks. */
void conf_parse_file(struct conf *conf, const char *path, unsigned flags);
void conf_parse_buffer(struct conf *conf, const char *name, const char *text, size_t len, unsigned flags);
struct conf_block *conf_block_new(struct conf *conf, const struct conf_blockdef *def, const char *name, const char *key,
                                  const char *file, unsigned line, struct conf_block *parent);
void conf_block_add(struct conf_block *block, struct conf_setting *setting);
/* The key by which repeated blocks are recognised: the normalised domain
 * pattern, the canonical CIDR or endpoint (also returned), or the name. */
bool conf_block_key(const struct conf_blockdef *def, const char *arg, char **key, struct addr_cidr *cidr,
                    struct addr_endpoint *endpoint, struct buf *err);
struct conf_block *conf_block_lookup(const struct conf *conf, enum conf_kind kind, const char *key,
                                     const struct conf_block *parent);

/* conf_build.c: everything done once the text is read. */
void conf_build(struct conf *conf);
bool conf_pool_has_member(const struct conf_block *pool, const char *vmta);
void conf_setting_free(struct conf_setting *setting);

/* conf_resolve.c */
void conf_domain_index_build(struct conf *conf, struct conf_domain_index *index, struct conf_block *context);
void conf_domain_index_free(struct conf_domain_index *index);
void conf_source_index_build(struct conf *conf);

/* conf_settings.c */
struct conf_settings *conf_settings_new(const struct conf *conf, enum conf_kind kind);
void conf_settings_apply(struct conf_settings *s, const struct conf_block *block);
void conf_settings_set(struct conf_settings *s, size_t dir, const struct conf_setting *setting);
const struct conf_setting *conf_settings_lookup(const struct conf_settings *s, size_t dir);

#endif
