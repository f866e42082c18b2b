/* conf_parse.c: reads configuration files line by line into blocks of
 * directive occurrences: follows includes (with globs, relative to the
 * including file, cycles refused), checks that tags nest and balance, that
 * each directive is known and allowed where it stands, and parses its
 * value.  Every problem is recorded with its FILE:LINE and reading goes on,
 * so that one run shows all the errors of a file. */
#include "conf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

struct frame {
	struct conf_block *block; /* NULL inside a block whose contents are skipped */
	char *tag;
	char *arg;
	const char *file;
	unsigned line;
};

struct file_ref {
	char *real; /* for cycle detection */
	const char *name;
};

struct parser {
	struct conf *conf;
	unsigned flags;
	struct frame stack[CONF_MAX_BLOCK_DEPTH + 1];
	size_t depth;
	struct file_ref chain[CONF_MAX_INCLUDE_DEPTH + 1];
	size_t nchain;
};

/* ---- blocks ------------------------------------------------------------------ */

/* Blocks are found again by (kind, parent, key) through a hash table, so
 * that a file with tens of thousands of <domain> blocks loads in linear
 * time. */
static size_t block_hash(enum conf_kind kind, const struct conf_block *parent, const char *key)
{
	uint64_t h = 14695981039346656037ull ^ (uint64_t)kind ^ (uint64_t)(uintptr_t)parent;
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return (size_t)(h ^ (h >> 29));
}

static void hash_insert(struct conf *conf, struct conf_block *b)
{
	size_t mask = conf->nhash - 1;
	size_t i = block_hash(b->kind, b->parent, b->key) & mask;
	while (conf->hash[i])
		i = (i + 1) & mask;
	conf->hash[i] = b;
}

static void hash_add(struct conf *conf, struct conf_block *b)
{
	if (2 * (conf->nhashed + 1) > conf->nhash) {
		struct conf_block **old = conf->hash;
		size_t nold = conf->nhash;
		conf->nhash = nold ? nold * 2 : 64;
		conf->hash = mem_calloc(conf->nhash, sizeof *conf->hash);
		for (size_t i = 0; i < nold; i++)
			if (old[i])
				hash_insert(conf, old[i]);
		free(old);
	}
	hash_insert(conf, b);
	conf->nhashed++;
}

struct conf_block *conf_block_new(struct conf *conf, const struct conf_blockdef *def, const char *name, const char *key,
                                  const char *file, unsigned line, struct conf_block *parent)
{
	struct conf_block *b = mem_zalloc(sizeof *b);
	b->kind = def->kind;
	b->def = def;
	b->name = mem_strdup(name);
	b->key = mem_strdup(key);
	b->file = file;
	b->line = line;
	b->parent = parent;
	b->order = conf->next_order++;
	conf_vec_push(&conf->blocks[def->kind], b);
	hash_add(conf, b);
	return b;
}

void conf_block_add(struct conf_block *block, struct conf_setting *setting)
{
	block->items = mem_reallocarray(block->items, block->nitems + 1, sizeof *block->items);
	block->items[block->nitems++] = setting;
}

struct conf_block *conf_block_lookup(const struct conf *conf, enum conf_kind kind, const char *key,
                                     const struct conf_block *parent)
{
	if (!conf->nhash)
		return NULL;
	size_t mask = conf->nhash - 1;
	for (size_t i = block_hash(kind, parent, key) & mask; conf->hash[i]; i = (i + 1) & mask) {
		struct conf_block *b = conf->hash[i];
		if (b->kind == kind && b->parent == parent && strcmp(b->key, key) == 0)
			return b;
	}
	return NULL;
}

static struct frame *top(struct parser *p)
{
	return &p->stack[p->depth - 1];
}

static void push(struct parser *p, struct conf_block *block, const char *tag, const char *arg, const char *file,
                 unsigned line)
{
	struct frame *f = &p->stack[p->depth++];
	f->block = block;
	f->tag = mem_strdup(tag);
	f->arg = mem_strdup(arg);
	f->file = file;
	f->line = line;
}

static void pop(struct parser *p)
{
	struct frame *f = &p->stack[--p->depth];
	free(f->tag);
	free(f->arg);
}

/* The key by which repeated blocks are recognised: the normalised domain
 * pattern, the canonical CIDR or endpoint, or the name. */
bool conf_block_key(const struct conf_blockdef *def, const char *arg, char **key, struct addr_cidr *cidr,
                    struct addr_endpoint *endpoint, struct buf *err)
{
	const char *why = NULL;
	char text[ADDR_CIDR_STRLEN];
	struct conf_pattern pattern;
	switch (def->kind) {
	case CONF_DOMAIN:
		if (!strchr(arg, '$')) {
			if (!conf_pattern_parse(arg, &pattern, err))
				return false;
			free(pattern.key);
		}
		*key = conf_domain_normalize(arg);
		return true;
	case CONF_SOURCE:
		if (addr_parse_cidr(arg, cidr, &why)) {
			addr_cidr_format(cidr, text);
			*key = mem_strdup(text);
			return true;
		}
		/* Digits, dots, colons and slashes can only be a bad address. */
		if (strspn(arg, "0123456789abcdefABCDEF.:/") == strlen(arg) && strpbrk(arg, "0123456789")) {
			buf_printf(err, "bad address in <source %s>: %s", arg,
			           why ? why : "not an IP address or range");
			return false;
		}
		memset(cidr, 0, sizeof *cidr); /* a named source */
		*key = conf_domain_normalize(arg);
		return true;
	case CONF_LISTENER:
		if (!addr_parse_endpoint(arg, endpoint, &why)) {
			buf_printf(err, "<smtp-listener> expects IP:PORT, got \"%s\" (%s)", arg,
			           why ? why : "bad endpoint");
			return false;
		}
		addr_cidr_format(&endpoint->range, text);
		*key = mem_asprintf("%s:%u", text, endpoint->port);
		return true;
	case CONF_ACCT_FILE:
	case CONF_SPOOL:
		*key = mem_strdup(arg);
		return true;
	default:
		*key = conf_domain_normalize(arg);
		return true;
	}
}

static struct conf_block *open_block(struct parser *p, const struct conf_blockdef *def, const char *arg,
                                     const char *file, unsigned line)
{
	struct conf_block *parent = top(p)->block;
	struct buf err = BUF_INIT;
	struct addr_cidr cidr = {0};
	struct addr_endpoint endpoint = {0};
	char *key = NULL;
	struct conf_block *b = NULL;
	if (!conf_block_key(def, arg, &key, &cidr, &endpoint, &err)) {
		conf_error(p->conf, file, line, "%s", buf_cstr(&err));
		buf_free(&err);
		return NULL;
	}
	buf_free(&err);
	b = conf_block_lookup(p->conf, def->kind, key, parent);
	if (b && !def->merge) {
		conf_error(p->conf, file, line, "<%s %s> is already defined at %s:%u", def->tag, arg, b->file, b->line);
		b = NULL;
	} else if (!b) {
		b = conf_block_new(p->conf, def, arg, key, file, line, parent);
		b->cidr = cidr;
		b->endpoint = endpoint;
		b->named = def->kind == CONF_SOURCE && strcmp(key, "") != 0 && cidr.ip.family == 0;
	}
	free(key);
	return b;
}

static void on_open(struct parser *p, const struct conf_line *line, const char *file, unsigned lineno)
{
	const char *arg = line->args.count ? line->args.items[0] : "";
	struct conf_block *block = NULL;
	if (p->depth > CONF_MAX_BLOCK_DEPTH) {
		conf_error(p->conf, file, lineno, "blocks are nested too deeply");
		p->conf->stopped = true;
		return;
	}
	if (top(p)->block == NULL) { /* inside skipped contents */
		push(p, NULL, line->name, arg, file, lineno);
		return;
	}
	const struct conf_blockdef *def = conf_blockdef_lookup(line->name);
	enum conf_kind where = top(p)->block->kind;
	if (!def) {
		const char *s = conf_blockdef_suggest(line->name);
		if (s)
			conf_error(p->conf, file, lineno, "unknown block <%s>; did you mean <%s>?", line->name, s);
		else
			conf_error(p->conf, file, lineno, "unknown block <%s>", line->name);
	} else if (!(def->parents & CONF_SCOPE(where))) {
		conf_error(p->conf, file, lineno, "<%s> is not allowed %s %s", def->tag,
		           where == CONF_GLOBAL ? "at" : "in", conf_kind_name(where));
	} else if (def->needs_arg && (line->args.count != 1 || !*arg)) {
		conf_error(p->conf, file, lineno, "<%s> needs one argument, as in <%s NAME>", def->tag, def->tag);
	} else if (line->args.count > 1) {
		conf_error(p->conf, file, lineno, "<%s> takes at most one argument", def->tag);
	} else {
		block = open_block(p, def, arg, file, lineno);
		if (block && def->kind == CONF_OPAQUE)
			conf_warning(p->conf, file, lineno,
			             "<%s> is recognised, not yet supported; its contents are not checked", def->tag);
	}
	/* A block in error is still pushed so that its closing tag matches
	 * and its contents do not produce a cascade of errors. */
	if (block && block->kind == CONF_OPAQUE)
		block = NULL;
	push(p, block, line->name, arg, file, lineno);
}

static void on_close(struct parser *p, const struct conf_line *line, size_t base, const char *file, unsigned lineno)
{
	if (p->depth > base && strcmp(top(p)->tag, line->name) == 0) {
		pop(p);
		return;
	}
	size_t match = p->depth;
	while (match > base && strcmp(p->stack[match - 1].tag, line->name) != 0)
		match--;
	if (match == base) {
		conf_error(p->conf, file, lineno, "</%s> without an opening <%s>", line->name, line->name);
		return;
	}
	const struct frame *f = top(p);
	conf_error(p->conf, file, lineno, "</%s> does not match <%s%s%s> opened at %s:%u", line->name, f->tag,
	           *f->arg ? " " : "", f->arg, f->file, f->line);
	while (p->depth >= match)
		pop(p);
}

/* ---- directives ----------------------------------------------------------------- */

static void parse_file(struct parser *p, const char *path, const char *display, const char *from_file,
                       unsigned from_line);

static char *dir_of(const char *file)
{
	char *copy = mem_strdup(file);
	char *dir = mem_strdup(dirname(copy));
	free(copy);
	return dir;
}

static void on_include(struct parser *p, const struct conf_value *value, const char *file, unsigned lineno)
{
	if (p->flags & CONF_NO_INCLUDE) {
		conf_error(p->conf, file, lineno, "include is disabled here");
		return;
	}
	const char *pattern = value->string;
	char *full;
	if (pattern[0] == '/' || !strchr(file, '/')) {
		/* Absolute, or relative to a file in the current directory. */
		full = mem_strdup(pattern);
	} else {
		char *dir = dir_of(file);
		full = mem_asprintf("%s/%s", dir, pattern);
		free(dir);
	}
	glob_t g;
	/* glob sorts its result, so the order of included files does not
	 * depend on the directory. */
	int rc = glob(full, GLOB_BRACE, NULL, &g);
	bool wildcard = strpbrk(pattern, "*?[{") != NULL;
	if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
		if (wildcard)
			conf_warning(p->conf, file, lineno, "include \"%s\" matches no file", pattern);
		else
			conf_error(p->conf, file, lineno, "cannot read \"%s\": %s", full, strerror(ENOENT));
	} else if (rc != 0) {
		conf_error(p->conf, file, lineno, "cannot read the files of include \"%s\"", pattern);
	} else {
		for (size_t i = 0; i < g.gl_pathc && !p->conf->stopped; i++)
			parse_file(p, g.gl_pathv[i], g.gl_pathv[i], file, lineno);
	}
	if (rc == 0)
		globfree(&g);
	free(full);
}

static void on_macro(struct parser *p, struct conf_value *value, const char *file, unsigned lineno)
{
	for (size_t i = 0; i < p->conf->macros.count; i++) {
		const struct conf_macro *m = p->conf->macros.items[i];
		if (strcasecmp(m->name, value->string) == 0) {
			conf_error(p->conf, file, lineno, "domain-macro \"%s\" is already defined at %s:%u", m->name,
			           m->file, m->line);
			return;
		}
	}
	struct conf_macro *m = mem_zalloc(sizeof *m);
	m->name = mem_strdup(value->string);
	m->values = value->list;
	value->list.items = NULL;
	value->list.count = 0;
	m->file = file;
	m->line = lineno;
	conf_vec_push(&p->conf->macros, m);
}

static struct conf_setting *new_setting(const struct conf_directive *d, struct conf_value *value, const char *file,
                                        unsigned line)
{
	struct conf_setting *s = mem_zalloc(sizeof *s);
	s->name = d->name;
	s->value = *value;
	s->file = file;
	s->line = line;
	return s;
}

/* Adds a directive to a block as if it had been written there, from the
 * text of its value (the one-line smtp-listener options). */
static void add_synthetic(struct conf_block *block, const char *name, const char *text, const char *file, unsigned line)
{
	const struct conf_directive *d = conf_directive_lookup(name);
	struct conf_line l = {.kind = CONF_LINE_DIRECTIVE};
	struct buf err = BUF_INIT;
	struct conf_value value;
	conf_list_add(&l.args, text);
	l.rest = mem_strdup(text);
	if (!conf_value_parse(d, &l, &value, &err))
		log_panic("synthetic %s %s: %s", name, text, buf_cstr(&err));
	conf_block_add(block, new_setting(d, &value, file, line));
	conf_line_free(&l);
	buf_free(&err);
}

/* smtp-listener IP:PORT [tls=yes] [source=NAME] is the one-line form of
 * <smtp-listener IP:PORT> immediate-tls yes; source NAME </smtp-listener>. */
static void on_listener(struct parser *p, const struct conf_value *value, const char *file, unsigned lineno)
{
	const struct conf_blockdef *def = conf_blockdef_of(CONF_LISTENER);
	struct conf_block *b = open_block(p, def, value->args.items[0], file, lineno);
	if (!b)
		return;
	for (size_t i = 0; i < value->list.count; i++) {
		const char *opt = value->list.items[i];
		if (strncasecmp(opt, "tls=", 4) == 0)
			add_synthetic(b, "immediate-tls", value->boolean ? "yes" : "no", file, lineno);
		else
			add_synthetic(b, "source", value->string, file, lineno);
	}
}

static bool check_once(struct parser *p, const struct conf_directive *d, const struct conf_block *b, const char *file,
                       unsigned lineno)
{
	if (!(d->flags & CONF_ONCE))
		return true;
	for (size_t i = 0; i < b->nitems; i++) {
		if (b->items[i]->name == d->name) {
			conf_error(p->conf, file, lineno, "\"%s\" may appear only once in %s (first at %s:%u)", d->name,
			           conf_kind_name(b->kind), b->items[i]->file, b->items[i]->line);
			return false;
		}
	}
	return true;
}

static void not_allowed(struct parser *p, const struct conf_directive *d, enum conf_kind where, const char *file,
                        unsigned lineno)
{
	struct buf allowed = BUF_INIT;
	conf_scopes_format(d->scopes, &allowed);
	conf_error(p->conf, file, lineno, "\"%s\" is not allowed %s %s; it belongs %s", d->name,
	           where == CONF_GLOBAL ? "at" : "in", conf_kind_name(where), buf_cstr(&allowed));
	buf_free(&allowed);
}

static void on_directive(struct parser *p, const struct conf_line *line, const char *file, unsigned lineno)
{
	struct conf_block *block = top(p)->block;
	if (!block)
		return;
	const struct conf_directive *d = conf_directive_lookup(line->name);
	if (!d) {
		const char *s = conf_directive_suggest(line->name);
		if (s)
			conf_error(p->conf, file, lineno, "unknown directive \"%s\"; did you mean \"%s\"?", line->name,
			           s);
		else
			conf_error(p->conf, file, lineno, "unknown directive \"%s\"", line->name);
		return;
	}
	if (!(d->scopes & CONF_SCOPE(block->kind))) {
		not_allowed(p, d, block->kind, file, lineno);
		return;
	}
	struct conf_value value;
	struct buf err = BUF_INIT;
	bool ok = conf_value_parse(d, line, &value, &err);
	if (!ok)
		conf_error(p->conf, file, lineno, "%s", buf_cstr(&err));
	buf_free(&err);
	if (!ok) {
		conf_value_free(&value);
		return;
	}
	if (!check_once(p, d, block, file, lineno)) {
		conf_value_free(&value);
		return;
	}
	if (!(d->flags & CONF_SUPPORTED))
		conf_warning(p->conf, file, lineno, "\"%s\" is recognised, not yet supported", d->name);
	/* only smtp and file have a delivery agent so far */
	if (strcmp(d->name, "type") == 0 && value.string && strcmp(value.string, "smtp") != 0 &&
	    strcmp(value.string, "file") != 0)
		conf_warning(p->conf, file, lineno, "\"type %s\" is recognised, not yet supported: its mail goes by smtp",
		             value.string);
	if (d->type == CONF_T_INCLUDE || d->type == CONF_T_MACRO) {
		if (d->type == CONF_T_INCLUDE)
			on_include(p, &value, file, lineno);
		else
			on_macro(p, &value, file, lineno);
		conf_value_free(&value);
		return;
	}
	struct conf_setting *s = new_setting(d, &value, file, lineno);
	conf_block_add(block, s);
	if (d->type == CONF_T_LISTEN)
		on_listener(p, &s->value, file, lineno);
}

/* ---- files ------------------------------------------------------------------------ */

static void parse_line(struct parser *p, const char *text, size_t len, size_t base, const char *file, unsigned lineno)
{
	struct conf_line line = {0}; /* freed on every path, also when never lexed */
	struct buf err = BUF_INIT;
	if (len > CONF_MAX_LINE) {
		conf_error(p->conf, file, lineno, "line is longer than %d bytes", CONF_MAX_LINE);
	} else if (!conf_lex_line(text, len, &line, &err)) {
		conf_error(p->conf, file, lineno, "%s", buf_cstr(&err));
	} else if (line.kind == CONF_LINE_OPEN) {
		on_open(p, &line, file, lineno);
	} else if (line.kind == CONF_LINE_CLOSE) {
		on_close(p, &line, base, file, lineno);
	} else if (line.kind == CONF_LINE_DIRECTIVE) {
		on_directive(p, &line, file, lineno);
	}
	conf_line_free(&line);
	buf_free(&err);
}

static void parse_text(struct parser *p, const char *file, const char *text, size_t len)
{
	size_t base = p->depth;
	unsigned lineno = 0;
	const char *pos = text, *end = text + len;
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		pos += 3; /* a byte-order mark some editors write */
	while (pos < end && !p->conf->stopped) {
		const char *nl = memchr(pos, '\n', (size_t)(end - pos));
		const char *stop = nl ? nl : end;
		size_t n = (size_t)(stop - pos);
		if (n && pos[n - 1] == '\r')
			n--;
		parse_line(p, pos, n, base, file, ++lineno);
		pos = nl ? nl + 1 : end;
	}
	/* Blocks must close in the file that opened them. */
	while (p->depth > base) {
		const struct frame *f = top(p);
		if (!p->conf->stopped)
			conf_error(p->conf, f->file, f->line, "<%s%s%s> is not closed", f->tag, *f->arg ? " " : "",
			           f->arg);
		pop(p);
	}
}

/* Reads a whole regular file of bounded size. */
static bool read_file(const char *path, struct buf *out, struct buf *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		buf_puts(err, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	bool ok = false;
	if (!S_ISREG(st.st_mode)) {
		buf_puts(err, "not a regular file");
	} else if (st.st_size > (off_t)CONF_MAX_FILE) {
		buf_printf(err, "larger than %u MiB", CONF_MAX_FILE >> 20);
	} else {
		ok = true;
		char chunk[65536];
		ssize_t n;
		while (ok && (n = read(fd, chunk, sizeof chunk)) != 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 || out->len + (size_t)n > CONF_MAX_FILE) {
				buf_puts(err, n < 0 ? strerror(errno) : "file too large");
				ok = false;
			} else {
				buf_append(out, chunk, (size_t)n);
			}
		}
	}
	close(fd);
	return ok;
}

static bool enter_file(struct parser *p, const char *path, const char *name, const char *from_file, unsigned from_line)
{
	char *real = realpath(path, NULL);
	if (!real)
		real = mem_strdup(path);
	for (size_t i = 0; i < p->nchain; i++) {
		if (strcmp(p->chain[i].real, real) == 0) {
			struct buf cycle = BUF_INIT;
			for (size_t j = i; j < p->nchain; j++)
				buf_printf(&cycle, "%s -> ", p->chain[j].name);
			buf_puts(&cycle, name);
			conf_error(p->conf, from_file, from_line, "include cycle: %s", buf_cstr(&cycle));
			buf_free(&cycle);
			free(real);
			return false;
		}
	}
	if (p->nchain > CONF_MAX_INCLUDE_DEPTH) {
		conf_error(p->conf, from_file, from_line, "includes nested more than %d deep", CONF_MAX_INCLUDE_DEPTH);
		free(real);
		return false;
	}
	p->chain[p->nchain].real = real;
	p->chain[p->nchain].name = name;
	p->nchain++;
	return true;
}

static void leave_file(struct parser *p)
{
	free(p->chain[--p->nchain].real);
}

static void parse_file(struct parser *p, const char *path, const char *display, const char *from_file,
                       unsigned from_line)
{
	const char *name = conf_file_name(p->conf, display);
	if (!enter_file(p, path, name, from_file, from_line))
		return;
	struct buf text = BUF_INIT, err = BUF_INIT;
	if (read_file(path, &text, &err))
		parse_text(p, name, text.data ? text.data : "", text.len);
	else if (from_file)
		conf_error(p->conf, from_file, from_line, "cannot read \"%s\": %s", path, buf_cstr(&err));
	else
		conf_error(p->conf, name, 0, "cannot read: %s", buf_cstr(&err));
	buf_free(&text);
	buf_free(&err);
	leave_file(p);
}

static void parser_init(struct parser *p, struct conf *conf, unsigned flags)
{
	memset(p, 0, sizeof *p);
	p->conf = conf;
	p->flags = flags;
	push(p, conf->global, "", "", NULL, 0);
}

static void parser_done(struct parser *p)
{
	while (p->depth)
		pop(p);
	while (p->nchain)
		leave_file(p);
}

void conf_parse_file(struct conf *conf, const char *path, unsigned flags)
{
	struct parser p;
	parser_init(&p, conf, flags);
	parse_file(&p, path, path, NULL, 0);
	parser_done(&p);
}

void conf_parse_buffer(struct conf *conf, const char *name, const char *text, size_t len, unsigned flags)
{
	struct parser p;
	parser_init(&p, conf, flags);
	const char *file = conf_file_name(conf, name);
	if (enter_file(&p, name, file, NULL, 0)) {
		parse_text(&p, file, text, len);
		leave_file(&p);
	}
	parser_done(&p);
}
