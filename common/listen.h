/* listen.h: listening TCP sockets for an IP:PORT or CIDR:PORT endpoint,
 * and listening UNIX sockets (see listen.c).  The sockets are non-blocking
 * and close-on-exec; whoever hands them to a worker clears close-on-exec
 * on the copies it passes. */
#ifndef TERN_LISTEN_H
#define TERN_LISTEN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "addr.h"
#include "buf.h"

struct listen_sockets {
	int *fds;
	size_t count;
};

/* Opens one socket for a single address or the wildcard (0/0, ::/0), or
 * one per local address inside any other range.  On failure nothing stays
 * open and err says which address could not be used and why: an address
 * another socket listens on is an error.  The sockets have SO_REUSEPORT
 * set, so that listen_open_copy can add more. */
bool listen_open(const struct addr_endpoint *ep, struct listen_sockets *out, struct buf *err);
/* Opens one more socket on each address of first (from listen_open), in the
 * same order.  The kernel spreads new connections over the copies of an
 * address, so each worker process can accept from its own copy. */
bool listen_open_copy(const struct listen_sockets *first, struct listen_sockets *out, struct buf *err);
void listen_close(struct listen_sockets *s);

/* An SMTP connection, either way, sends each write at once (TCP_NODELAY):
 * our writes are whole replies, commands or TLS records, and Nagle's
 * algorithm would hold the last record of a message until the peer's
 * delayed ACK, 40 ms later. */
void socket_no_delay(int fd);

/* A UNIX stream socket listening at path with mode, owned by uid:gid when
 * we run as root ((uid_t)-1 or (gid_t)-1 keeps that part).  It is bound
 * under a temporary name beside path and renamed into place once it
 * listens with its final mode and owner, so whoever finds path can connect
 * to it; a socket left at path by an earlier run is replaced.  The
 * listening descriptor, or -1 with the reason in err. */
int listen_unix(const char *path, int backlog, mode_t mode, uid_t uid, gid_t gid, struct buf *err);

/* A delivery agent started by hand (tests, development) makes its own
 * service socket, <spool>/private/NAME (mode 0600; the directory 0700),
 * owned by user when we run as root.  The listening descriptor, or -1
 * with the reason in err. */
int listen_private_socket(const char *spool, const char *name, const char *user, struct buf *err);

#endif
