/* listen.c: opens the listening sockets of smtp-listener lines.
 * master opens them as root (port 25 and 465 are privileged) and hands the
 * descriptors to the smtpd workers.  A listener's address may be a range:
 * 0/0 (or ::/0) binds the wildcard address; any other range binds every
 * local address inside it, as PowerMTA does.  A delivery agent started
 * by hand makes its own UNIX service socket here too. */
#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "fileio.h"
#include "mem.h"

#define LISTEN_BACKLOG 1024

static void format_sockaddr(const struct sockaddr_storage *ss, char *out, size_t size)
{
	struct addr_ip ip;
	uint16_t port = 0;
	char text[ADDR_IP_STRLEN] = "?";
	if (addr_ip_from_sockaddr((const struct sockaddr *)ss, &ip, &port))
		addr_ip_format(&ip, text);
	bool v6 = ss->ss_family == AF_INET6;
	snprintf(out, size, "%s%s%s:%u", v6 ? "[" : "", text, v6 ? "]" : "", port);
}

/* err gets "WHAT ADDRESS: reason" for errno; fd, if open, is closed. */
static int socket_failed(int fd, const char *what, const struct sockaddr_storage *ss, struct buf *err)
{
	int saved = errno;
	char where[ADDR_IP_STRLEN + 16];
	format_sockaddr(ss, where, sizeof(where));
	buf_printf(err, "%s %s: %s", what, where, strerror(saved));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* A socket bound to ss.  With reuse_port, SO_REUSEPORT lets the copies of
 * a listener share the address, each in its own process. */
static int bind_socket(const struct sockaddr_storage *ss, socklen_t len, bool reuse_port, struct buf *err)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return socket_failed(-1, "socket for", ss, err);
	int on = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (reuse_port)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)ss, len) < 0)
		return socket_failed(fd, "cannot listen on", ss, err);
	return fd;
}

static int listen_on(int fd, const struct sockaddr_storage *ss, struct buf *err)
{
	if (listen(fd, LISTEN_BACKLOG) < 0)
		return socket_failed(fd, "cannot listen on", ss, err);
	return fd;
}

/* The first copy of a listener.  SO_REUSEPORT would let it share the port
 * with any other root process's listener, another MTA's or a second tern's,
 * each getting part of the connections; so the address is first bound
 * without it, which fails when anything else listens there. */
static int open_one(const struct addr_ip *ip, uint16_t port, struct buf *err)
{
	struct sockaddr_storage ss;
	socklen_t len = addr_ip_to_sockaddr(ip, port, &ss);
	int probe = bind_socket(&ss, len, false, err);
	if (probe < 0)
		return -1;
	close(probe);
	int fd = bind_socket(&ss, len, true, err);
	return fd < 0 ? -1 : listen_on(fd, &ss, err);
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

bool listen_open_copy(const struct listen_sockets *first, struct listen_sockets *out, struct buf *err)
{
	out->fds = NULL;
	out->count = 0;
	for (size_t i = 0; i < first->count; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getsockname(first->fds[i], (struct sockaddr *)&ss, &len) < 0) {
			buf_printf(err, "cannot read the address of a listening socket: %s", strerror(errno));
			listen_close(out);
			return false;
		}
		int fd = bind_socket(&ss, len, true, err);
		if (fd < 0 || listen_on(fd, &ss, err) < 0) {
			listen_close(out);
			return false;
		}
		add_fd(out, fd);
	}
	return true;
}

void listen_close(struct listen_sockets *s)
{
	for (size_t i = 0; i < s->count; i++)
		close(s->fds[i]);
	free(s->fds);
	s->fds = NULL;
	s->count = 0;
}

int listen_unix(const char *path, int backlog, mode_t mode, uid_t uid, gid_t gid, struct buf *err)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int n = snprintf(sun.sun_path, sizeof sun.sun_path, "%s.new", path);
	if (n < 0 || (size_t)n >= sizeof sun.sun_path) {
		buf_printf(err, "socket path %s is too long", path);
		return -1;
	}
	unlink(sun.sun_path);
	/* until chmod, the socket is its owner's alone */
	mode_t old_mask = umask(0177);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	bool bound = fd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	umask(old_mask);
	if (bound && listen(fd, backlog) == 0 && chmod(sun.sun_path, mode) == 0 &&
	    (geteuid() != 0 || chown(sun.sun_path, uid, gid) == 0) && rename(sun.sun_path, path) == 0)
		return fd;
	buf_printf(err, "cannot listen on %s: %s", path, strerror(errno));
	if (bound)
		unlink(sun.sun_path);
	if (fd >= 0)
		close(fd);
	return -1;
}

int listen_private_socket(const char *spool, const char *name, const char *user, struct buf *err)
{
	char *dir = mem_asprintf("%s/private", spool);
	struct passwd *pw = geteuid() == 0 ? getpwnam(user) : NULL;
	uid_t uid = pw ? pw->pw_uid : (uid_t)-1;
	gid_t gid = pw ? pw->pw_gid : (gid_t)-1;
	char *path = mem_asprintf("%s/%s", dir, name);
	int fd = fileio_make_dirs(dir, 0700, uid, gid, err) ? listen_unix(path, 128, 0600, uid, gid, err) : -1;
	free(dir);
	free(path);
	return fd;
}

void socket_no_delay(int fd)
{
	int one = 1;
	/* best effort: without it the connection works, only slower */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
