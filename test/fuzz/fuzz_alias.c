/* fuzz_alias.c: libFuzzer target for the aliases file syntax: the input is
 * parsed as an aliases file and every right-hand side is split into
 * targets, as newaliases and the local agent do (no database, no files). */
#include <stddef.h>
#include <stdint.h>

#include "alias.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool split_each(void *ctx, const char *name, const char *value, unsigned line, struct buf *err)
{
	struct alias_targets t = {0};
	if (alias_split(value, &t, err))
		alias_targets_free(&t);
	(*(size_t *)ctx)++;
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf err = BUF_INIT;
	size_t entries = 0;
	alias_parse_text((const char *)data, size, "fuzz", split_each, &entries, &err);
	buf_free(&err);
	/* the same bytes as an :include: file */
	struct buf text = BUF_INIT;
	buf_append(&text, data, size);
	struct alias_targets t = {0};
	if (alias_split(buf_cstr(&text), &t, &err))
		alias_targets_free(&t);
	buf_free(&text);
	buf_free(&err);
	return 0;
}
