/* mem.c: allocation helpers that exit on out-of-memory (see mem.h). */
#include "mem.h"

#include <bsd/string.h>
#include <bsd/stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void *mem_check(void *p, size_t size)
{
	if (p == NULL)
		log_fatal("out of memory allocating %zu bytes", size);
	return p;
}

void *mem_alloc(size_t size)
{
	return mem_check(malloc(size ? size : 1), size);
}

void *mem_zalloc(size_t size)
{
	return mem_check(calloc(1, size ? size : 1), size);
}

void *mem_calloc(size_t count, size_t size)
{
	if (count == 0 || size == 0)
		return mem_zalloc(1);
	return mem_check(calloc(count, size), count * size);
}

void *mem_realloc(void *ptr, size_t size)
{
	return mem_check(realloc(ptr, size ? size : 1), size);
}

void *mem_reallocarray(void *ptr, size_t count, size_t size)
{
	if (count == 0 || size == 0)
		return mem_realloc(ptr, 1);
	return mem_check(reallocarray(ptr, count, size), count * size);
}

char *mem_strdup(const char *s)
{
	return mem_memdup(s, strlen(s) + 1);
}

char *mem_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *copy = mem_alloc(len + 1);
	memcpy(copy, s, len);
	copy[len] = '\0';
	return copy;
}

void *mem_memdup(const void *p, size_t n)
{
	void *copy = mem_alloc(n);
	if (n)
		memcpy(copy, p, n);
	return copy;
}

char *mem_asprintf(const char *fmt, ...)
{
	va_list ap;
	char *out;
	va_start(ap, fmt);
	int n = vasprintf(&out, fmt, ap);
	va_end(ap);
	if (n < 0)
		log_fatal("out of memory formatting a string");
	return out;
}

void mem_free_secret(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}
