/* alias.c: the aliases file's syntax, the split of a right-hand side into
 * targets, and the compiled Berkeley DB hash that newaliases writes and
 * the local agent reads (see alias.h for the forms). */
#include "alias.h"

#include <ctype.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "mem.h"

/* ---- the file ------------------------------------------------------------------ */

struct parse {
	const char *file;
	alias_entry_fn fn;
	void *ctx;
	struct buf name, value;
	unsigned line; /* where the open entry starts; 0: none */
};

static void trim(struct buf *b)
{
	size_t start = 0;
	while (start < b->len && isspace((unsigned char)b->data[start]))
		start++;
	buf_consume(b, start);
	size_t len = b->len;
	while (len && isspace((unsigned char)b->data[len - 1]))
		len--;
	buf_truncate(b, len);
}

/* Hands the open entry to the callback after checking its targets. */
static bool flush_entry(struct parse *p, struct buf *err)
{
	if (p->line == 0)
		return true;
	unsigned line = p->line;
	p->line = 0;
	trim(&p->value);
	if (p->value.len == 0) {
		buf_printf(err, "%s:%u: alias \"%s\" has no target", p->file, line, buf_cstr(&p->name));
		return false;
	}
	struct alias_targets t = {0};
	struct buf why = BUF_INIT;
	bool ok = alias_split(buf_cstr(&p->value), &t, &why);
	alias_targets_free(&t);
	if (!ok)
		buf_printf(err, "%s:%u: alias \"%s\": %s", p->file, line, buf_cstr(&p->name), buf_cstr(&why));
	buf_free(&why);
	if (ok && !p->fn(p->ctx, buf_cstr(&p->name), buf_cstr(&p->value), line, &why)) {
		buf_printf(err, "%s:%u: %s", p->file, line, buf_cstr(&why));
		ok = false;
	}
	buf_free(&why);
	return ok;
}

/* "name: value" or "\"quoted name\": value" at the start of a line. */
static bool start_entry(struct parse *p, const char *s, size_t len, unsigned line, struct buf *err)
{
	size_t i = 0;
	buf_reset(&p->name);
	buf_reset(&p->value);
	if (s[0] == '"') {
		for (i = 1; i < len && s[i] != '"'; i++)
			buf_putc(&p->name, s[i]);
		if (i == len) {
			buf_printf(err, "%s:%u: unterminated quoted name", p->file, line);
			return false;
		}
		i++;
		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
	} else {
		for (; i < len && s[i] != ':'; i++)
			buf_putc(&p->name, s[i]);
		trim(&p->name);
	}
	if (i >= len || s[i] != ':') {
		buf_printf(err, "%s:%u: missing ':' after the alias name", p->file, line);
		return false;
	}
	if (p->name.len == 0 || strchr(buf_cstr(&p->name), '@') != NULL ||
	    (s[0] != '"' && strpbrk(buf_cstr(&p->name), " \t") != NULL)) {
		buf_printf(err, "%s:%u: bad alias name \"%s\" (a local name, without @; blanks only when quoted)", p->file,
		           line, buf_cstr(&p->name));
		return false;
	}
	buf_append(&p->value, s + i + 1, len - i - 1);
	p->line = line;
	return true;
}

static bool blank_or_comment(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && isspace((unsigned char)s[i]))
		i++;
	return i == len || s[i] == '#';
}

static bool parse_line(struct parse *p, const char *s, size_t len, unsigned line, struct buf *err)
{
	if (blank_or_comment(s, len))
		return true;
	if (s[0] == ' ' || s[0] == '\t') {
		if (p->line == 0) {
			buf_printf(err, "%s:%u: continuation line without an alias before it", p->file, line);
			return false;
		}
		buf_putc(&p->value, ' ');
		buf_append(&p->value, s, len);
		return true;
	}
	return flush_entry(p, err) && start_entry(p, s, len, line, err);
}

bool alias_parse_text(const char *text, size_t len, const char *file, alias_entry_fn fn, void *ctx, struct buf *err)
{
	struct parse p = {.file = file, .fn = fn, .ctx = ctx, .name = BUF_INIT, .value = BUF_INIT};
	bool ok = true;
	unsigned line = 0;
	for (size_t pos = 0; ok && pos < len;) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		size_t l = end - pos;
		if (l && text[pos + l - 1] == '\r')
			l--;
		line++;
		if (memchr(text + pos, '\0', l)) {
			buf_printf(err, "%s:%u: NUL byte in the line", file, line);
			ok = false;
		} else {
			ok = parse_line(&p, text + pos, l, line, err);
		}
		pos = end + 1;
	}
	if (ok)
		ok = flush_entry(&p, err);
	buf_free(&p.name);
	buf_free(&p.value);
	return ok;
}

/* ---- targets ----------------------------------------------------------------------- */

void alias_fold(char *name)
{
	for (; *name; name++)
		*name = (char)tolower((unsigned char)*name);
}

void alias_targets_free(struct alias_targets *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->items[i].text);
	free(t->items);
	t->items = NULL;
	t->count = 0;
}

static void add_target(struct alias_targets *t, enum alias_target_kind kind, const char *text, bool verbatim)
{
	t->items = mem_reallocarray(t->items, t->count + 1, sizeof(*t->items));
	t->items[t->count++] = (struct alias_target){kind, mem_strdup(text), verbatim};
}

/* One target, quotes already removed. */
static bool classify(struct alias_targets *t, struct buf *tok, bool quoted, struct buf *err)
{
	const char *s = buf_cstr(tok);
	if (s[0] == '|') {
		add_target(t, ALIAS_COMMAND, s + 1, false);
		return true;
	}
	if (strncasecmp(s, ":include:", 9) == 0) {
		const char *path = s + 9;
		while (*path == ' ' || *path == '\t')
			path++;
		if (*path != '/') {
			buf_printf(err, "\"%s\": an :include: needs an absolute path", s);
			return false;
		}
		add_target(t, ALIAS_INCLUDE, path, false);
		return true;
	}
	if (s[0] == '/') {
		add_target(t, ALIAS_FILE, s, false);
		return true;
	}
	bool verbatim = s[0] == '\\';
	if (verbatim)
		s++;
	const char *lt = strchr(s, '<');
	char *addr = lt && strchr(lt, '>') ? mem_strndup(lt + 1, (size_t)(strchr(lt, '>') - lt - 1)) : mem_strdup(s);
	bool ok = *addr && (quoted || strpbrk(addr, " \t") == NULL);
	if (!ok)
		buf_printf(err, "bad target \"%s\"", buf_cstr(tok));
	else
		add_target(t, ALIAS_ADDRESS, addr, verbatim);
	free(addr);
	return ok;
}

static bool finish_token(struct alias_targets *t, struct buf *tok, bool quoted, struct buf *err)
{
	trim(tok);
	bool ok = tok->len == 0 || classify(t, tok, quoted, err);
	buf_reset(tok);
	return ok;
}

bool alias_split(const char *value, struct alias_targets *out, struct buf *err)
{
	struct buf tok = BUF_INIT;
	bool in_quote = false, quoted = false, ok = true, line_start = true;
	for (const char *s = value; ok && *s; s++) {
		if (!in_quote && tok.len == 0 && (*s == ' ' || *s == '\t'))
			continue; /* leading blanks: trimmed anyway, and a comment may follow */
		if (line_start && !in_quote && tok.len == 0 && *s == '#') {
			while (s[1] && s[1] != '\n')
				s++;
			continue;
		}
		line_start = *s == '\n';
		if (in_quote && *s == '\\' && s[1]) {
			buf_putc(&tok, *++s);
		} else if (*s == '"') {
			in_quote = !in_quote;
			quoted = true;
		} else if (!in_quote && (*s == ',' || *s == '\n')) {
			ok = finish_token(out, &tok, quoted, err);
			quoted = false;
		} else if (!(quoted && !in_quote && (*s == ' ' || *s == '\t'))) {
			buf_putc(&tok, *s);
		}
	}
	if (ok && in_quote) {
		buf_puts(err, "unterminated quote");
		ok = false;
	}
	if (ok)
		ok = finish_token(out, &tok, quoted, err);
	buf_free(&tok);
	if (!ok)
		alias_targets_free(out);
	return ok;
}

/* ---- the compiled database ------------------------------------------------------------ */

struct alias_db {
	DB *db;
};

static bool put_entry(void *ctx, const char *name, const char *value, unsigned line, struct buf *err)
{
	struct alias_db *adb = ctx;
	char *key = mem_strdup(name);
	alias_fold(key);
	DBT k = {.data = key, .size = (u_int32_t)strlen(key)};
	DBT v = {.data = (void *)value, .size = (u_int32_t)strlen(value)};
	int rc = adb->db->put(adb->db, NULL, &k, &v, DB_NOOVERWRITE);
	if (rc == DB_KEYEXIST)
		buf_printf(err, "duplicate alias \"%s\"", name);
	else if (rc != 0)
		buf_printf(err, "cannot store alias \"%s\": %s", name, db_strerror(rc));
	free(key);
	return rc == 0;
}

/* The file's data reaches the disk before the rename makes it visible. */
static bool sync_file(const char *path, struct buf *err)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	bool ok = fd >= 0 && fsync(fd) == 0;
	if (!ok)
		buf_printf(err, "cannot sync %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return ok;
}

enum alias_compile_status alias_compile(const char *src, const char *dst, size_t *count, struct buf *err)
{
	struct buf text = BUF_INIT;
	struct buf why = BUF_INIT;
	if (!fileio_read_all(src, &text, &why)) {
		buf_printf(err, "cannot read %s", buf_cstr(&why));
		buf_free(&why);
		buf_free(&text);
		return ALIAS_IO_ERROR;
	}
	bool bad_entry = false;
	char *tmp = mem_asprintf("%s.tmp.%ld", dst, (long)getpid());
	unlink(tmp);
	struct alias_db adb = {0};
	int rc = db_create(&adb.db, NULL, 0);
	if (rc == 0)
		rc = adb.db->open(adb.db, NULL, tmp, NULL, DB_HASH, DB_CREATE | DB_EXCL, 0644);
	bool ok = rc == 0;
	if (!ok)
		buf_printf(err, "cannot create %s: %s", tmp, db_strerror(rc));
	if (ok)
		bad_entry = !(ok = alias_parse_text(text.data ? text.data : "", text.len, src, put_entry, &adb, err));
	DB_HASH_STAT *st = NULL;
	if (ok && adb.db->stat(adb.db, NULL, &st, 0) == 0) {
		*count = st->hash_nkeys;
		free(st);
	}
	if (adb.db && (rc = adb.db->close(adb.db, 0)) != 0 && ok) {
		buf_printf(err, "cannot write %s: %s", tmp, db_strerror(rc));
		ok = false;
	}
	if (ok && chmod(tmp, 0644) < 0) {
		buf_printf(err, "cannot set the mode of %s: %s", tmp, strerror(errno));
		ok = false;
	}
	if (ok)
		ok = sync_file(tmp, err);
	if (ok && rename(tmp, dst) < 0) {
		buf_printf(err, "cannot rename %s to %s: %s", tmp, dst, strerror(errno));
		ok = false;
	}
	if (!ok)
		unlink(tmp);
	free(tmp);
	buf_free(&text);
	return ok ? ALIAS_COMPILED : bad_entry ? ALIAS_BAD_ENTRY : ALIAS_IO_ERROR;
}

struct alias_db *alias_db_open(const char *path, bool *missing, struct buf *err)
{
	*missing = false;
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		*missing = true;
		buf_printf(err, "%s does not exist", path);
		return NULL;
	}
	DB *db = NULL;
	int rc = db_create(&db, NULL, 0);
	if (rc == 0)
		rc = db->open(db, NULL, path, NULL, DB_HASH, DB_RDONLY, 0);
	if (rc != 0) {
		buf_printf(err, "cannot open %s: %s", path, db_strerror(rc));
		if (db)
			db->close(db, 0);
		return NULL;
	}
	struct alias_db *adb = mem_zalloc(sizeof(*adb));
	adb->db = db;
	return adb;
}

void alias_db_close(struct alias_db *db)
{
	if (db == NULL)
		return;
	db->db->close(db->db, 0);
	free(db);
}

int alias_db_get(struct alias_db *db, const char *name, struct buf *out, struct buf *err)
{
	DBT k = {.data = (void *)name, .size = (u_int32_t)strlen(name)};
	DBT v = {.flags = DB_DBT_MALLOC};
	int rc = db->db->get(db->db, NULL, &k, &v, 0);
	if (rc == DB_NOTFOUND)
		return 0;
	if (rc != 0) {
		buf_printf(err, "alias lookup of %s: %s", name, db_strerror(rc));
		return -1;
	}
	buf_reset(out);
	buf_append(out, v.data, v.size);
	free(v.data);
	return 1;
}
