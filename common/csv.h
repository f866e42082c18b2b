/* csv.h: writing CSV as RFC 4180 and PowerMTA's accounting files want it:
 * a field is quoted when it holds a comma, a quote, CR or LF (a quote
 * inside is doubled), and a row ends with CRLF. */
#ifndef TERN_CSV_H
#define TERN_CSV_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* True when the value must be written between quotes. */
bool csv_needs_quotes(const char *value, size_t len);
/* Appends one field, preceded by a comma unless it is the first of the row. */
void csv_put_field(struct buf *out, bool first, const char *value, size_t len);
/* Ends the row. */
void csv_end_row(struct buf *out);

#endif
