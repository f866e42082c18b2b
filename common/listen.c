/* listen.c: opens the listening sockets of smtp-listener lines.
 * master opens them as root (port 25 and 465 are privileged) and hands the
 * descriptors to the smtpd workers.  A listener's address may be a range:
 * 0/0 (or ::/0) binds the wildcard address; any other range binds every
 * local address inside it, as PowerMTA does. */
#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mem.h"

#define LISTEN_BACKLOG 1024

static int open_one(const struct addr_ip *ip, uint16_t port, struct buf *err)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_ip_to_sockaddr(ip, port, &ss);
	char text[ADDR_IP_STRLEN];
	addr_ip_format(ip, text);

	int fd = socket(ip->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		buf_printf(err, "socket for %s:%u: %s", text, port, strerror(errno));
		return -1;
	}
	int on = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (ip->family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		buf_printf(err, "cannot listen on %s%s%s:%u: %s", ip->family == AF_INET6 ? "[" : "", text,
		           ip->family == AF_INET6 ? "]" : "", port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void add_fd(struct listen_sockets *s, int fd)
{
	s->fds = mem_reallocarray(s->fds, s->count + 1, sizeof(int));
	s->fds[s->count++] = fd;
}

/* Binds every local interface address that falls inside the range. */
static bool open_range(const struct addr_endpoint *ep, struct listen_sockets *out, struct buf *err)
{
	struct ifaddrs *list;
	if (getifaddrs(&list) < 0) {
		buf_printf(err, "cannot list local addresses: %s", strerror(errno));
		return false;
	}
	bool ok = true;
	for (struct ifaddrs *ifa = list; ifa && ok; ifa = ifa->ifa_next) {
		struct addr_ip ip;
		if (!ifa->ifa_addr || !addr_ip_from_sockaddr(ifa->ifa_addr, &ip, NULL))
			continue;
		if (!addr_cidr_contains(&ep->range, &ip))
			continue;
		int fd = open_one(&ip, ep->port, err);
		if (fd < 0)
			ok = false;
		else
			add_fd(out, fd);
	}
	freeifaddrs(list);
	if (ok && out->count == 0) {
		char text[ADDR_CIDR_STRLEN];
		addr_cidr_format(&ep->range, text);
		buf_printf(err, "no local address inside %s to listen on", text);
		ok = false;
	}
	return ok;
}

bool listen_open(const struct addr_endpoint *ep, struct listen_sockets *out, struct buf *err)
{
	out->fds = NULL;
	out->count = 0;
	unsigned full = ep->range.ip.family == AF_INET ? 32 : 128;
	bool ok;
	if (ep->range.prefix == 0 || ep->range.prefix == full) {
		int fd = open_one(&ep->range.ip, ep->port, err);
		ok = fd >= 0;
		if (ok)
			add_fd(out, fd);
	} else {
		ok = open_range(ep, out, err);
	}
	if (!ok)
		listen_close(out);
	return ok;
}

void listen_close(struct listen_sockets *s)
{
	for (size_t i = 0; i < s->count; i++)
		close(s->fds[i]);
	free(s->fds);
	s->fds = NULL;
	s->count = 0;
}
