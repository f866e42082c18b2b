/* mem.h: allocation and string helpers that never return NULL.
 * Out of memory is not a condition any caller can handle sensibly, so these
 * log a fatal message and exit instead of returning NULL. */
#ifndef TERN_MEM_H
#define TERN_MEM_H

#include <stddef.h>

void *mem_alloc(size_t size);
void *mem_zalloc(size_t size);
void *mem_calloc(size_t count, size_t size);
void *mem_realloc(void *ptr, size_t size);
void *mem_reallocarray(void *ptr, size_t count, size_t size);
char *mem_strdup(const char *s);
char *mem_strndup(const char *s, size_t n);
void *mem_memdup(const void *p, size_t n);
char *mem_asprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Frees a buffer that held secrets (passwords, keys) after wiping it. */
void mem_free_secret(char *s);

#endif
