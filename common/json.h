/* json.h: the little JSON writing that --json output needs: strings are
 * escaped per RFC 8259; everything else is plain buf_printf. */
#ifndef TERN_JSON_H
#define TERN_JSON_H

#include "buf.h"

/* Appends s as a quoted JSON string. */
void json_append_string(struct buf *out, const char *s);

#endif
