/* master_listeners.c: the set of open listening sockets, kept across
 * reloads.  A listener whose name (its IP:PORT as configured) survives a
 * reload keeps its sockets, so no connection attempt is refused while the
 * smtpd workers are replaced; new ones are opened before anything is
 * changed, so a reload that cannot bind a port changes nothing.
 * Each listener has one copy of its sockets per smtpd process, bound with
 * SO_REUSEPORT: the kernel hashes each new connection to one copy, so the
 * processes share the sessions instead of the first to wake taking a
 * whole burst of them. */
#include "master.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static struct master_listener *find(struct master_listeners *l, const char *name)
{
	for (size_t i = 0; l && i < l->count; i++)
		if (l->items[i].name && strcasecmp(l->items[i].name, name) == 0)
			return &l->items[i];
	return NULL;
}

static void keep_copies(struct master_listener *l, const struct master_listener *kept, size_t copies)
{
	l->copy_count = kept->copy_count;
	l->copies = mem_calloc(kept->copy_count > copies ? kept->copy_count : copies, sizeof(*l->copies));
	for (size_t c = 0; c < kept->copy_count; c++) {
		l->copies[c].count = kept->copies[c].count;
		l->copies[c].fds = mem_memdup(kept->copies[c].fds, kept->copies[c].count * sizeof(int));
	}
}

/* Gives l its sockets: the kept ones, then new copies up to `copies`. */
static bool open_listener(struct master_listener *l, const struct master_listener *kept, size_t copies, struct buf *err)
{
	if (kept) {
		keep_copies(l, kept, copies);
	} else {
		l->copies = mem_calloc(copies, sizeof(*l->copies));
		if (!listen_open(&l->endpoint, &l->copies[0], err))
			return false;
		l->copy_count = 1;
	}
	while (l->copy_count < copies) {
		if (!listen_open_copy(&l->copies[0], &l->copies[l->copy_count], err))
			return false;
		l->copy_count++;
	}
	return true;
}

bool master_listeners_open(const struct conf *conf, struct master_listeners *old, size_t copies,
                           struct master_listeners *out, struct buf *err)
{
	size_t n = conf_block_count(conf, CONF_LISTENER);
	out->items = mem_calloc(n, sizeof(*out->items));
	out->count = 0;
	if (copies == 0)
		copies = 1;
	for (size_t i = 0; i < n; i++) {
		const struct conf_block *block = conf_block_at(conf, CONF_LISTENER, i);
		struct master_listener *l = &out->items[out->count++];
		l->name = mem_strdup(conf_block_name(block));
		l->endpoint = *conf_listener_endpoint(block);
		if (!open_listener(l, find(old, l->name), copies, err)) {
			master_listeners_retire(out, old);
			return false;
		}
	}
	return true;
}

static bool fd_in(const struct master_listeners *l, int fd)
{
	for (size_t i = 0; l && i < l->count; i++)
		for (size_t c = 0; c < l->items[i].copy_count; c++)
			for (size_t j = 0; j < l->items[i].copies[c].count; j++)
				if (l->items[i].copies[c].fds[j] == fd)
					return true;
	return false;
}

/* Closes the sockets of s that next does not have; true if any was. */
static bool close_unkept(struct listen_sockets *s, const struct master_listeners *next)
{
	size_t kept = 0;
	for (size_t j = 0; j < s->count; j++) {
		if (fd_in(next, s->fds[j]))
			continue;
		s->fds[kept++] = s->fds[j];
	}
	s->count = kept;
	listen_close(s);
	return kept > 0;
}

void master_listeners_retire(struct master_listeners *old, const struct master_listeners *next)
{
	for (size_t i = 0; i < old->count; i++) {
		bool closed = false;
		for (size_t c = 0; c < old->items[i].copy_count; c++)
			closed |= close_unkept(&old->items[i].copies[c], next);
		if (closed)
			log_info("closing listener %s", old->items[i].name);
	}
	master_listeners_free(old);
}

void master_listeners_free(struct master_listeners *l)
{
	for (size_t i = 0; i < l->count; i++) {
		free(l->items[i].name);
		for (size_t c = 0; c < l->items[i].copy_count; c++)
			free(l->items[i].copies[c].fds);
		free(l->items[i].copies);
	}
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

static bool copy_is_for(size_t copy, unsigned slot, unsigned workers)
{
	return copy % workers == slot;
}

size_t master_listeners_fd_count(const struct master_listeners *l)
{
	size_t n = 0;
	for (size_t i = 0; i < l->count; i++)
		for (size_t c = 0; c < l->items[i].copy_count; c++)
			n += l->items[i].copies[c].count;
	return n;
}

void master_listeners_for_worker(const struct master_listeners *l, unsigned slot, unsigned workers, int *fds,
                                 size_t *count)
{
	for (size_t i = 0; i < l->count; i++)
		for (size_t c = 0; c < l->items[i].copy_count; c++)
			for (size_t j = 0; copy_is_for(c, slot, workers) && j < l->items[i].copies[c].count; j++)
				fds[(*count)++] = l->items[i].copies[c].fds[j];
}

void master_listeners_describe(const struct master_listeners *l, unsigned slot, unsigned workers, int first_fd,
                               struct buf *out)
{
	int fd = first_fd;
	for (size_t i = 0; i < l->count; i++)
		for (size_t c = 0; c < l->items[i].copy_count; c++)
			for (size_t j = 0; copy_is_for(c, slot, workers) && j < l->items[i].copies[c].count; j++) {
				buf_printf(out, "%s%d=%s", fd == first_fd ? "" : ",", fd, l->items[i].name);
				fd++;
			}
}
