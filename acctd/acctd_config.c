/* acctd_config.c: the <acct-file> blocks of the configuration turned into
 * acctd_file structures: the column layout of each file (record types,
 * record-fields), its rotation rules and how values are written.  Problems
 * the configuration layer cannot see (a field tern does not know for the
 * type, a pipe destination) are reported as FILE:LINE like its own. */
#include "acctd.h"

#include <stdlib.h>
#include <string.h>

static void where(struct buf *err, const char *file, unsigned line)
{
	buf_printf(err, "%s:%u: ", file ? file : "(default)", line);
}

/* The record-fields items of one type, over every record-fields line. */
static void items_of_type(const struct conf_settings *s, const char *type, struct conf_list *items,
                          const struct conf_setting **first)
{
	*first = NULL;
	for (const struct conf_setting *set = conf_get_setting(s, "record-fields"); set; set = set->next) {
		if (set->value.unset || set->value.string == NULL || strcmp(set->value.string, type) != 0)
			continue;
		if (*first == NULL)
			*first = set;
		for (size_t i = 0; i < set->value.list.count; i++) {
			items->items = mem_reallocarray(items->items, items->count + 1, sizeof(char *));
			items->items[items->count++] = set->value.list.items[i];
		}
	}
}

/* record-fields for a type the file does not hold changes nothing: say so,
 * since it usually means a forgotten entry in records. */
static void warn_unused_fields(const struct conf_settings *s)
{
	const struct conf_list *types = conf_get_list(s, "records");
	for (const struct conf_setting *set = conf_get_setting(s, "record-fields"); set; set = set->next) {
		if (set->value.unset || set->value.string == NULL)
			continue;
		bool held = false;
		for (size_t i = 0; i < types->count; i++)
			held = held || strcmp(types->items[i], set->value.string) == 0;
		if (!held)
			log_warning("%s:%u: record-fields %s: this file does not hold %s records (see \"records\")",
			            set->file ? set->file : "(default)", set->line, set->value.string,
			            set->value.string);
	}
}

static bool build_layout(struct acctd_file *f, const struct conf_block *block, const struct conf_settings *s,
                         struct buf *err)
{
	const struct conf_setting *records = conf_get_setting(s, "records");
	const struct conf_list *types = &records->value.list;
	for (size_t i = 0; i < types->count; i++) {
		enum acct_type type;
		if (!acct_type_parse(types->items[i], &type)) {
			where(err, records->file, records->line);
			buf_printf(err, "unknown record type \"%s\"", types->items[i]);
			return false;
		}
		struct conf_list items = {0, NULL};
		const struct conf_setting *first;
		items_of_type(s, types->items[i], &items, &first);
		struct buf why = BUF_INIT;
		bool ok = acct_layout_add_type(&f->layout, type, (const char *const *)items.items, items.count, &why);
		free(items.items);
		if (!ok) {
			const struct conf_setting *at = first ? first : records;
			where(err, at->file ? at->file : conf_block_file(block),
			      at->file ? at->line : conf_block_line(block));
			buf_puts(err, buf_cstr(&why));
		}
		buf_free(&why);
		if (!ok)
			return false;
	}
	warn_unused_fields(s);
	acct_layout_header(&f->layout, &f->header);
	return true;
}

static bool set_paths(struct acctd_file *f, const struct conf_block *block, const struct conf_settings *s,
                      struct buf *err)
{
	const char *path = conf_block_name(block);
	if (path[0] != '/' || strchr(path, '\n') || path[strlen(path) - 1] == '/') {
		where(err, conf_block_file(block), conf_block_line(block));
		buf_printf(err, "<acct-file %s>: %s", path,
		           path[0] == '|' ? "piping records into a program is not supported"
		                          : "the accounting file must be an absolute file path");
		return false;
	}
	f->path = mem_strdup(path);
	const char *slash = strrchr(path, '/');
	f->dir = slash == path ? mem_strdup("/") : mem_strndup(path, (size_t)(slash - path));
	const char *name = slash + 1;
	size_t len = strlen(name);
	f->stem = len > 4 && strcmp(name + len - 4, ".csv") == 0 ? mem_strndup(name, len - 4) : mem_strdup(name);
	const char *move_to = conf_get_string(s, "move-to");
	if (move_to && *move_to) {
		size_t mlen = strlen(move_to);
		while (mlen > 1 && move_to[mlen - 1] == '/')
			mlen--;
		f->move_to = mem_strndup(move_to, mlen);
	}
	return true;
}

static bool build_file(struct acctd_file *f, const struct conf_block *block, struct buf *err)
{
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	acct_layout_init(&f->layout);
	const struct conf_settings *s = conf_block_settings(block);
	if (!set_paths(f, block, s, err) || !build_layout(f, block, s, err))
		return false;
	f->move_interval = conf_get_interval(s, "move-interval");
	f->max_size = conf_get_uint(s, "max-size");
	f->delete_after = conf_get_interval(s, "delete-after");
	f->world_readable = conf_get_bool(s, "world-readable");
	f->sync = conf_get_bool(s, "sync");
	const char *user_string = conf_get_string(s, "user-string");
	f->user_string = user_string ? mem_strdup(user_string) : NULL;
	f->format.iso_times = conf_get_bool(s, "iso-times");
	f->format.user_string = f->user_string;
	return true;
}

bool acctd_config_files(const struct conf *conf, struct acctd_file **files, size_t *count, struct buf *err)
{
	size_t n = conf_block_count(conf, CONF_ACCT_FILE);
	struct acctd_file *out = mem_calloc(n ? n : 1, sizeof(*out));
	for (size_t i = 0; i < n; i++) {
		if (!build_file(&out[i], conf_block_at(conf, CONF_ACCT_FILE, i), err)) {
			for (size_t j = 0; j <= i; j++)
				acctd_file_free(&out[j]);
			free(out);
			return false;
		}
	}
	*files = out;
	*count = n;
	return true;
}
