/* local_alias.c: alias expansion.  A local part is looked up (lower-cased)
 * in the compiled aliases database; its targets are expanded in turn:
 * names recursively (a name already being expanded on the same path is
 * the user's own mailbox, or dropped when there is no such user: loops
 * end), addresses in other domains become remote destinations, /paths
 * files, :include: files are read at expansion time, |commands fail.  The
 * depth and the size of an expansion are bounded and duplicates removed.
 * Files named by an alias are written with the identity of the file that
 * named them (the database or the :include: file; nobody for root). */
#include "local.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alias.h"
#include "log.h"
#include "mem.h"

#define MAX_DEPTH 20
#define MAX_DESTS 1000
#define MAX_INCLUDE_SIZE (1024 * 1024)

static struct {
	struct alias_db *db;
	char *source, *path;
	struct stat st;      /* of the database when opened */
	bool warned_missing; /* logged once until it appears */
	time_t warned_stale; /* the database mtime last warned about */
} aliases;

/* ---- the database ----------------------------------------------------------------- */

static void close_db(void)
{
	alias_db_close(aliases.db);
	aliases.db = NULL;
}

static void warn_if_stale(const struct stat *db)
{
	struct stat src;
	if (stat(aliases.source, &src) == 0 && src.st_mtime > db->st_mtime && aliases.warned_stale != db->st_mtime) {
		log_warning("%s is older than %s: run newaliases", aliases.path, aliases.source);
		aliases.warned_stale = db->st_mtime;
	}
}

void local_alias_setup(const char *alias_file)
{
	if (aliases.source == NULL || strcmp(aliases.source, alias_file) != 0) {
		close_db();
		free(aliases.source);
		free(aliases.path);
		aliases.source = mem_strdup(alias_file);
		aliases.path = mem_asprintf("%s.db", alias_file);
		aliases.warned_missing = false;
	}
	struct stat st;
	if (stat(aliases.path, &st) < 0) {
		close_db();
		if (!aliases.warned_missing)
			log_info("no aliases: %s does not exist (run newaliases)", aliases.path);
		aliases.warned_missing = true;
		return;
	}
	aliases.warned_missing = false;
	warn_if_stale(&st);
	if (aliases.db && st.st_ino == aliases.st.st_ino && st.st_mtime == aliases.st.st_mtime &&
	    st.st_size == aliases.st.st_size)
		return;
	close_db();
	bool missing;
	struct buf err = BUF_INIT;
	aliases.db = alias_db_open(aliases.path, &missing, &err);
	if (aliases.db == NULL)
		log_error("aliases not used: %s", buf_cstr(&err));
	aliases.st = st;
	buf_free(&err);
}

void local_alias_shutdown(void)
{
	close_db();
	free(aliases.source);
	free(aliases.path);
	memset(&aliases, 0, sizeof(aliases));
}

/* ---- destinations ------------------------------------------------------------------- */

void local_dests_free(struct local_dests *d)
{
	for (size_t i = 0; i < d->count; i++) {
		free(d->items[i].name);
		free(d->items[i].via);
		local_result_free(&d->items[i].fail);
	}
	free(d->items);
	d->items = NULL;
	d->count = 0;
}

struct expand {
	local_domain_fn is_local;
	void *ctx;
	struct local_dests *out;
	const char *chain[MAX_DEPTH + 2];
	size_t depth;
	bool overflow;
};

static struct local_dest *push(struct expand *e, enum local_dest_kind kind, const char *name, const char *via)
{
	for (size_t i = 0; kind != LOCAL_DEST_FAILED && i < e->out->count; i++)
		if (e->out->items[i].kind == kind && strcmp(e->out->items[i].name, name) == 0)
			return NULL;
	if (e->out->count >= MAX_DESTS) {
		e->overflow = true;
		return NULL;
	}
	e->out->items = mem_reallocarray(e->out->items, e->out->count + 1, sizeof(*e->out->items));
	struct local_dest *d = &e->out->items[e->out->count++];
	memset(d, 0, sizeof(*d));
	d->kind = kind;
	d->name = mem_strdup(name);
	d->via = via ? mem_strdup(via) : NULL;
	local_result_init(&d->fail);
	return d;
}

static void fail(struct expand *e, const char *name, const char *via, enum local_status status, const char *dsn,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void fail(struct expand *e, const char *name, const char *via, enum local_status status, const char *dsn,
                 const char *fmt, ...)
{
	struct local_dest *d = push(e, LOCAL_DEST_FAILED, name, via);
	if (d == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	d->fail.status = status;
	snprintf(d->fail.dsn, sizeof(d->fail.dsn), "%s", dsn);
	buf_vprintf(&d->fail.reason, fmt, ap);
	va_end(ap);
}

static bool in_chain(const struct expand *e, const char *name)
{
	for (size_t i = 0; i < e->depth; i++)
		if (strcmp(e->chain[i], name) == 0)
			return true;
	return false;
}

/* 1 found, 0 not, -1 error (a failed destination was added). */
static int lookup(struct expand *e, const char *name, struct buf *value, const char *via)
{
	if (aliases.db == NULL)
		return 0;
	struct buf err = BUF_INIT;
	int rc = alias_db_get(aliases.db, name, value, &err);
	if (rc < 0)
		fail(e, name, via, LOCAL_DEFERRED, "4.3.0", "%s", buf_cstr(&err));
	buf_free(&err);
	return rc;
}

/* The name without its +extension, or NULL when it has none. */
static char *base_name(const char *name)
{
	const char *plus = strchr(name, '+');
	return plus && plus != name ? mem_strndup(name, (size_t)(plus - name)) : NULL;
}

/* owner: who owns the file that named the targets (the database or an
 * :include: file); files are written, and nested :include: files read,
 * with that owner's identity (nobody for root). */
static void expand_value(struct expand *e, const char *value, uid_t owner, const char *via);

static bool add_user(struct expand *e, const char *name, const char *folded, const char *via)
{
	struct local_ident id;
	if (!local_priv_user(name, &id) && !local_priv_user(folded, &id))
		return false;
	struct local_dest *d = push(e, LOCAL_DEST_USER, id.name, via);
	if (d)
		d->ident = id;
	return true;
}

/* An alias's value, with the name on the chain. */
static void expand_alias(struct expand *e, const char *folded, const char *value)
{
	e->chain[e->depth++] = folded;
	expand_value(e, value, aliases.st.st_uid, folded);
	e->depth--;
}

static void expand_name(struct expand *e, const char *name, bool verbatim, const char *via)
{
	char *folded = mem_strdup(name);
	alias_fold(folded);
	char *base = base_name(folded);
	struct buf value = BUF_INIT;
	int found = 0;
	if (e->depth > MAX_DEPTH) {
		fail(e, name, via, LOCAL_BOUNCED, "5.4.6", "alias expansion of %s is too deep (a loop?)", name);
		goto out;
	}
	bool looped = in_chain(e, folded);
	if (!verbatim && !looped) {
		const char *key = folded;
		found = lookup(e, key, &value, via);
		if (found == 0 && base && !in_chain(e, base) && !local_priv_user(folded, &(struct local_ident){0}))
			found = lookup(e, key = base, &value, via);
		if (found < 0)
			goto out;
		if (found > 0) {
			expand_alias(e, key, buf_cstr(&value));
			goto out;
		}
	}
	if (add_user(e, name, folded, via) || (base && add_user(e, base, base, via)))
		goto out;
	if (looped)
		log_info("alias loop through %s ended (no such user)", folded);
	else
		fail(e, name, via, LOCAL_BOUNCED, "5.1.1", "user unknown: %s", name);
out:
	buf_free(&value);
	free(base);
	free(folded);
}

static void expand_address(struct expand *e, const struct alias_target *t, const char *via)
{
	const char *at = strrchr(t->text, '@');
	if (at == NULL) {
		expand_name(e, t->text, t->verbatim, via);
	} else if (e->is_local(e->ctx, at + 1)) {
		char *local = mem_strndup(t->text, (size_t)(at - t->text));
		expand_name(e, local, t->verbatim, via);
		free(local);
	} else {
		push(e, LOCAL_DEST_REMOTE, t->text, via);
	}
}

static bool read_include(const char *path, struct buf *text, struct stat *st, struct buf *err)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 || fstat(fd, st) < 0) {
		buf_printf(err, "cannot open the include file %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	bool ok = S_ISREG(st->st_mode) && st->st_size <= MAX_INCLUDE_SIZE;
	if (!ok)
		buf_printf(err, "the include file %s is not a regular file of at most 1 MB", path);
	char chunk[8192];
	ssize_t n;
	while (ok && (n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			buf_printf(err, "cannot read the include file %s: %s", path, strerror(errno));
			ok = false;
		} else {
			buf_append(text, chunk, (size_t)n);
		}
	}
	close(fd);
	return ok;
}

/* An include file named by a file a user owns is read as that user, so
 * that it cannot name a file only root may read (its lines would come
 * back in bounces); named by root's files, it is read as root. */
static bool read_include_as(uid_t owner, const char *path, struct buf *text, struct stat *st, struct buf *err)
{
	if (owner == 0 || !local_priv_root())
		return read_include(path, text, st, err);
	struct local_ident id;
	local_priv_for_owner(owner, &id);
	if (!local_priv_become(&id, err))
		return false;
	bool ok = read_include(path, text, st, err);
	local_priv_restore();
	return ok;
}

static void expand_include(struct expand *e, const char *path, uid_t owner, const char *via)
{
	struct buf text = BUF_INIT, err = BUF_INIT;
	struct stat st;
	char *key = mem_asprintf(":include:%s", path);
	if (in_chain(e, key)) {
		log_info("include loop through %s ended", path);
	} else if (!read_include_as(owner, path, &text, &st, &err)) {
		fail(e, path, via, LOCAL_DEFERRED, "4.3.0", "%s", buf_cstr(&err));
	} else if (memchr(text.data ? text.data : "", '\0', text.len)) {
		fail(e, path, via, LOCAL_BOUNCED, "5.3.5", "the include file %s holds a NUL byte", path);
	} else {
		e->chain[e->depth++] = key;
		expand_value(e, text.data ? text.data : "", st.st_uid, via);
		e->depth--;
	}
	free(key);
	buf_free(&text);
	buf_free(&err);
}

static void expand_target(struct expand *e, const struct alias_target *t, uid_t owner, const char *via)
{
	struct local_dest *d;
	switch (t->kind) {
	case ALIAS_ADDRESS:
		expand_address(e, t, via);
		break;
	case ALIAS_FILE:
		if ((d = push(e, LOCAL_DEST_FILE, t->text, via)) != NULL)
			local_priv_for_owner(owner, &d->ident);
		break;
	case ALIAS_COMMAND:
		fail(e, t->text, via, LOCAL_BOUNCED, "5.7.1",
		     "alias %s: delivery to a command (\"|%s\") is not supported", via ? via : "?", t->text);
		break;
	case ALIAS_INCLUDE:
		if (e->depth > MAX_DEPTH)
			fail(e, t->text, via, LOCAL_BOUNCED, "5.4.6", "alias expansion is too deep at %s", t->text);
		else
			expand_include(e, t->text, owner, via);
		break;
	}
}

static void expand_value(struct expand *e, const char *value, uid_t owner, const char *via)
{
	struct alias_targets targets = {0};
	struct buf err = BUF_INIT;
	if (!alias_split(value, &targets, &err))
		fail(e, via, via, LOCAL_DEFERRED, "4.3.0", "alias %s: %s", via, buf_cstr(&err));
	for (size_t i = 0; i < targets.count && !e->overflow; i++)
		expand_target(e, &targets.items[i], owner, via);
	alias_targets_free(&targets);
	buf_free(&err);
}

void local_alias_expand(const char *local_part, const char *domain, local_domain_fn is_local, void *ctx,
                        struct local_dests *out)
{
	struct expand e = {.is_local = is_local, .ctx = ctx, .out = out};
	expand_name(&e, local_part, false, NULL);
	if (e.overflow) {
		local_dests_free(out);
		fail(&e, local_part, NULL, LOCAL_BOUNCED, "5.3.4", "alias expansion of %s has more than %d destinations",
		     local_part, MAX_DESTS);
	}
}
