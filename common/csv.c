/* csv.c: RFC 4180 field quoting (see csv.h). */
#include "csv.h"

#include <string.h>

bool csv_needs_quotes(const char *value, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = value[i];
		if (c == ',' || c == '"' || c == '\r' || c == '\n')
			return true;
	}
	return false;
}

void csv_put_field(struct buf *out, bool first, const char *value, size_t len)
{
	if (!first)
		buf_putc(out, ',');
	if (!csv_needs_quotes(value, len)) {
		buf_append(out, value, len);
		return;
	}
	buf_putc(out, '"');
	for (size_t i = 0; i < len; i++) {
		if (value[i] == '"')
			buf_putc(out, '"');
		buf_putc(out, value[i]);
	}
	buf_putc(out, '"');
}

void csv_end_row(struct buf *out)
{
	buf_append(out, "\r\n", 2);
}
