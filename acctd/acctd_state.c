/* acctd_state.c: the state file, the one place that says how far every
 * accounting file is valid and which sequence number it holds up to.
 * It is small and replaced whole by rename(2), so after a crash it is
 * either the old state or the new one, never a mix:
 *
 *   tern-acctd-state 1
 *   seq 12345
 *   file STARTED DEV INODE SIZE PATH
 *
 * The device and inode find the file again after logrotate or a rotation
 * renamed it; PATH comes last so it may hold blanks. */
#include "acctd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"

#define STATE_MAGIC "tern-acctd-state 1"

static void mark_add(struct acctd_state *st, const struct acctd_file_mark *m)
{
	st->marks = mem_reallocarray(st->marks, st->count + 1, sizeof(*st->marks));
	st->marks[st->count] = *m;
	st->marks[st->count].path = mem_strdup(m->path);
	st->count++;
}

static bool parse_line(struct acctd_state *st, const char *line, bool *seen_magic)
{
	if (!*seen_magic) {
		*seen_magic = strcmp(line, STATE_MAGIC) == 0;
		return *seen_magic;
	}
	unsigned long long seq, dev, ino, size;
	long long started;
	int used = 0;
	if (sscanf(line, "seq %llu%n", &seq, &used) == 1 && line[used] == '\0') {
		st->seq = seq;
		return true;
	}
	if (sscanf(line, "file %lld %llu %llu %llu %n", &started, &dev, &ino, &size, &used) == 4 && used > 0 &&
	    line[used] != '\0') {
		struct acctd_file_mark m = {(char *)line + used, (dev_t)dev, (ino_t)ino, (off_t)size, started};
		mark_add(st, &m);
		return true;
	}
	return false;
}

bool acctd_state_load(const char *path, struct acctd_state *st, struct buf *err)
{
	memset(st, 0, sizeof(*st));
	FILE *fp = fopen(path, "re");
	if (fp == NULL) {
		if (errno == ENOENT)
			return true;
		buf_printf(err, "cannot read %s: %s", path, strerror(errno));
		return false;
	}
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	bool ok = true, seen_magic = false;
	unsigned number = 0;
	while (ok && (n = getline(&line, &cap, fp)) > 0) {
		number++;
		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (!parse_line(st, line, &seen_magic)) {
			buf_printf(err,
			           "%s:%u: damaged state file (remove it to start afresh, at the risk of duplicate "
			           "records)",
			           path, number);
			ok = false;
		}
	}
	free(line);
	fclose(fp);
	if (!ok)
		acctd_state_free(st);
	return ok;
}

static void format_state(const struct acctd_state *st, struct buf *out)
{
	buf_printf(out, "%s\nseq %llu\n", STATE_MAGIC, (unsigned long long)st->seq);
	for (size_t i = 0; i < st->count; i++) {
		const struct acctd_file_mark *m = &st->marks[i];
		buf_printf(out, "file %lld %llu %llu %llu %s\n", (long long)m->started, (unsigned long long)m->dev,
		           (unsigned long long)m->ino, (unsigned long long)m->size, m->path);
	}
}

bool acctd_state_save(const char *path, const struct acctd_state *st, bool durable, struct buf *err)
{
	struct buf text = BUF_INIT;
	format_state(st, &text);
	char *tmp = mem_asprintf("%s.new", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && fileio_write_all(fd, text.data, text.len) && (!durable || fsync(fd) == 0);
	int saved = errno;
	if (fd >= 0 && close(fd) < 0 && ok) {
		ok = false;
		saved = errno;
	}
	if (ok && rename(tmp, path) < 0) {
		ok = false;
		saved = errno;
	}
	/* the rename is durable only once its directory entry is */
	if (ok && durable && !fileio_sync_parent(path)) {
		ok = false;
		saved = errno;
	}
	if (!ok) {
		buf_printf(err, "cannot write the state file %s: %s", path, strerror(saved));
		unlink(tmp);
	}
	free(tmp);
	buf_free(&text);
	return ok;
}

const struct acctd_file_mark *acctd_state_find(const struct acctd_state *st, const char *path)
{
	for (size_t i = 0; i < st->count; i++)
		if (strcmp(st->marks[i].path, path) == 0)
			return &st->marks[i];
	return NULL;
}

void acctd_state_free(struct acctd_state *st)
{
	for (size_t i = 0; i < st->count; i++)
		free(st->marks[i].path);
	free(st->marks);
	memset(st, 0, sizeof(*st));
}
