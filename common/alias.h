/* alias.h: the aliases file (/etc/aliases) and its compiled form.
 *
 *   # comment
 *   postmaster: root
 *   "some name": user1, user2@example.org,
 *       user3                       (a line starting with blanks continues)
 *   list: :include:/etc/mail/list
 *   archive: /var/mail/archive
 *   prog: "|/usr/bin/command"        (parsed; refused at delivery)
 *
 * newaliases (tern-sendmail -bi) compiles the file into FILE.db, a
 * Berkeley DB hash: key = the lower-cased name, value = the right-hand
 * side as written (continuations joined).  The local agent reads it and
 * splits the right-hand side into targets when it expands. */
#ifndef TERN_ALIAS_H
#define TERN_ALIAS_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* ---- the file ----------------------------------------------------------- */

/* Called for each entry: name as written (unquoted), value trimmed; line
 * is where the entry starts.  Return false to stop (with a reason in
 * err). */
typedef bool (*alias_entry_fn)(void *ctx, const char *name, const char *value, unsigned line, struct buf *err);

/* Parses text (the contents of file, which names it in errors).  false
 * with "FILE:LINE: reason" in err on the first error. */
bool alias_parse_text(const char *text, size_t len, const char *file, alias_entry_fn fn, void *ctx, struct buf *err);

/* ---- targets -------------------------------------------------------------- */

enum alias_target_kind {
	ALIAS_ADDRESS, /* a name or name@domain */
	ALIAS_FILE,    /* /path: append to that file */
	ALIAS_COMMAND, /* |command */
	ALIAS_INCLUDE, /* :include:/path */
};

struct alias_target {
	enum alias_target_kind kind;
	char *text;    /* the address, path or command */
	bool verbatim; /* \name: the user's own mailbox, no further aliasing */
};

struct alias_targets {
	struct alias_target *items;
	size_t count;
};

/* Splits a right-hand side (or the lines of an :include: file, one or
 * more targets a line, # comments) at commas outside quotes.  false with
 * the reason in err on an empty target or an unterminated quote. */
bool alias_split(const char *value, struct alias_targets *out, struct buf *err);
void alias_targets_free(struct alias_targets *t);

/* Lower-cases a name for lookup (in place). */
void alias_fold(char *name);

/* ---- the compiled database ----------------------------------------------------- */

enum alias_compile_status {
	ALIAS_COMPILED,
	ALIAS_BAD_ENTRY, /* the file has an error: "FILE:LINE: reason" */
	ALIAS_IO_ERROR,  /* src could not be read or dst written */
};

/* Compiles the aliases file src into dst (a Berkeley DB hash), through
 * a temporary file renamed into place.  *count gets the entries written.
 * On failure err says why and dst is left as it was. */
enum alias_compile_status alias_compile(const char *src, const char *dst, size_t *count, struct buf *err);

struct alias_db;
/* Opens dst read-only; NULL with the reason in err (*missing true when
 * the file does not exist). */
struct alias_db *alias_db_open(const char *path, bool *missing, struct buf *err);
void alias_db_close(struct alias_db *db);
/* The value for a (folded) name: 1 found (value in out), 0 not found,
 * -1 error (reason in err). */
int alias_db_get(struct alias_db *db, const char *name, struct buf *out, struct buf *err);

#endif
