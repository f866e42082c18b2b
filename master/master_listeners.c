/* master_listeners.c: the set of open listening sockets, kept across
 * reloads.  A listener whose name (its IP:PORT as configured) survives a
 * reload keeps its socket, so no connection attempt is refused while the
 * smtpd workers are replaced; new ones are opened before anything is
 * changed, so a reload that cannot bind a port changes nothing. */
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

bool master_listeners_open(const struct conf *conf, struct master_listeners *old, struct master_listeners *out,
                           struct buf *err)
{
	size_t n = conf_block_count(conf, CONF_LISTENER);
	out->items = mem_calloc(n, sizeof(*out->items));
	out->count = 0;
	for (size_t i = 0; i < n; i++) {
		const struct conf_block *block = conf_block_at(conf, CONF_LISTENER, i);
		struct master_listener *l = &out->items[out->count];
		l->name = mem_strdup(conf_block_name(block));
		l->endpoint = *conf_listener_endpoint(block);
		struct master_listener *kept = find(old, l->name);
		if (kept) {
			l->sockets.fds = mem_memdup(kept->sockets.fds, kept->sockets.count * sizeof(int));
			l->sockets.count = kept->sockets.count;
		} else if (!listen_open(&l->endpoint, &l->sockets, err)) {
			free(l->name);
			master_listeners_retire(out, old);
			return false;
		}
		out->count++;
	}
	return true;
}

static bool fd_in(const struct master_listeners *l, int fd)
{
	for (size_t i = 0; l && i < l->count; i++)
		for (size_t j = 0; j < l->items[i].sockets.count; j++)
			if (l->items[i].sockets.fds[j] == fd)
				return true;
	return false;
}

void master_listeners_retire(struct master_listeners *old, const struct master_listeners *next)
{
	for (size_t i = 0; i < old->count; i++) {
		struct listen_sockets *s = &old->items[i].sockets;
		size_t kept = 0;
		for (size_t j = 0; j < s->count; j++) {
			if (fd_in(next, s->fds[j]))
				continue;
			s->fds[kept++] = s->fds[j];
		}
		s->count = kept;
		if (kept > 0)
			log_info("closing listener %s", old->items[i].name);
		listen_close(s);
	}
	master_listeners_free(old);
}

void master_listeners_free(struct master_listeners *l)
{
	for (size_t i = 0; i < l->count; i++) {
		free(l->items[i].name);
		free(l->items[i].sockets.fds);
	}
	free(l->items);
	l->items = NULL;
	l->count = 0;
}

size_t master_listeners_fd_count(const struct master_listeners *l)
{
	size_t n = 0;
	for (size_t i = 0; i < l->count; i++)
		n += l->items[i].sockets.count;
	return n;
}

void master_listeners_describe(const struct master_listeners *l, int first_fd, struct buf *out)
{
	int fd = first_fd;
	for (size_t i = 0; i < l->count; i++) {
		for (size_t j = 0; j < l->items[i].sockets.count; j++) {
			buf_printf(out, "%s%d=%s", fd == first_fd ? "" : ",", fd, l->items[i].name);
			fd++;
		}
	}
}
