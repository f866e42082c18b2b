/* acct_fields.h: the accounting record types and fields of PowerMTA's CSV
 * files, and the column layout of a file: which fields `*` stands for, how
 * `record-fields` lists (extra fields, !removed, header_Name) select the
 * columns of a type, and the union of the columns of the types a file
 * holds.  Shared by acctd (which writes the files) and ternctl (which
 * shows the live stream), so both name and order columns the same way.
 *
 * A record is an IPC message (see ipc.h) whose fields travel under their
 * column names (ipc_attr.h); acct_record_spec decodes one. */
#ifndef TERN_ACCT_FIELDS_H
#define TERN_ACCT_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "ipc.h"

enum acct_type { ACCT_D, ACCT_B, ACCT_T, ACCT_TQ, ACCT_R, ACCT_F, ACCT_RB, ACCT_RS, ACCT_TYPE_COUNT };

/* Short (d) or long (delivery) name, any case. */
bool acct_type_parse(const char *name, enum acct_type *type);
/* The short name written in the type column. */
const char *acct_type_name(enum acct_type type);
/* The bits (1u << type) of the named record types; unknown names add none. */
unsigned acct_type_mask(char *const *names, size_t count);

/* The field's name as tern writes it ("dlvTlsProtocol" for "dlvtlsprotocol"),
 * or NULL when the field is unknown.  header_Name columns are not fields. */
const char *acct_field_canonical(const char *name);
/* The known fields, for listings and suggestions: field i's name. */
size_t acct_field_count(void);
const char *acct_field_name(size_t i);
/* True for "header_Name" with a valid header name. */
bool acct_field_is_header(const char *name);

/* The attributes a record frame may carry ("request" = "record", "seq",
 * "record_type" and the fields). */
extern const struct ipc_spec acct_record_spec[];
extern const size_t acct_record_spec_count;

struct acct_column {
	char *name; /* as in the header line */
	int field;  /* index in the field table; -1 for a header_ column */
};

struct acct_layout {
	struct acct_column *cols;
	size_t ncols;
	unsigned types;              /* bit (1u << type) for each type held */
	bool *used[ACCT_TYPE_COUNT]; /* used[t][i]: type t fills column i */
};

/* How values are written. */
struct acct_format {
	bool iso_times;          /* 2026-11-28 14:40:23+0000 rather than Unix seconds */
	const char *user_string; /* the userString column; NULL for empty */
};

void acct_layout_init(struct acct_layout *l);
void acct_layout_free(struct acct_layout *l);
/* Adds a type with its record-fields items (each "*", "name", "!name" or
 * "header_Name"; none means "*").  The type's columns are appended to the
 * union in their order; type is always the first column.  false (reason
 * in err) for an unknown field or a type added twice. */
bool acct_layout_add_type(struct acct_layout *l, enum acct_type type, const char *const *items, size_t nitems,
                          struct buf *err);
bool acct_layout_holds(const struct acct_layout *l, enum acct_type type);
/* The header line, CRLF included. */
void acct_layout_header(const struct acct_layout *l, struct buf *out);
/* One row for a record of a type the layout holds, CRLF included. */
void acct_layout_row(const struct acct_layout *l, enum acct_type type, const struct ipc_msg *rec,
                     const struct acct_format *fmt, struct buf *out);
/* The same record as one JSON object of the columns its type fills
 * (column name -> value as the files would write it), newline included. */
void acct_layout_json(const struct acct_layout *l, enum acct_type type, const struct ipc_msg *rec,
                      const struct acct_format *fmt, struct buf *out);
/* The header names (without "header_") the layout needs, comma-separated,
 * appended to out. */
void acct_layout_header_names(const struct acct_layout *l, struct buf *out);

/* A time as the files write it. */
void acct_format_time(int64_t seconds, bool iso, struct buf *out);
/* The unfolded value of the first header called name (any case) in a
 * header section of "Name: value" lines; false when there is none. */
bool acct_header_value(const char *headers, const char *name, struct buf *out);

#endif
