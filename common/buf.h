/* buf.h: a growable, length-tracking byte buffer.
 * The data is always NUL-terminated so it can be used as a C string, but
 * its length is tracked, so it also holds binary data with NUL bytes. */
#ifndef TERN_BUF_H
#define TERN_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	char *data; /* NUL-terminated; NULL until the first append */
	size_t len;
	size_t cap;
};

#define BUF_INIT                                                                                                       \
	{                                                                                                              \
		NULL, 0, 0                                                                                             \
	}

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Empties the buffer but keeps its memory for reuse. */
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
/* Appends v in decimal: a number put with no format to parse. */
void buf_put_decimal(struct buf *b, uint64_t v);
/* Appends each string up to the NULL that ends the list: text put
 * together with no format to parse. */
void buf_concat(struct buf *b, const char *first, ...) __attribute__((sentinel));
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Removes the first n bytes (consumed input). */
void buf_consume(struct buf *b, size_t n);
void buf_truncate(struct buf *b, size_t len);
/* Always a valid C string, "" for an empty buffer. */
const char *buf_cstr(const struct buf *b);
/* Hands the memory to the caller (never NULL) and leaves the buffer empty. */
char *buf_detach(struct buf *b);

#endif
