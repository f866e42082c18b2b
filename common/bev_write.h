/* bev_write.h: output of a plain socket bufferevent written at once, and
 * its waiting input read at once.
 *
 * libevent writes a bufferevent's output only when the loop next finds
 * the socket writable: each reply costs two epoll_ctl calls (arming and
 * disarming the write event) and a turn of the loop.  bev_write_now()
 * writes straight away instead and arms the write event only for what
 * the socket could not take.  The event bases are made with libevent's
 * changelist, so an arm and a disarm in the same turn cost nothing. */
#ifndef TERN_BEV_WRITE_H
#define TERN_BEV_WRITE_H

#include <stddef.h>

#include <event2/bufferevent.h>

/* Writes what bev's output holds to its socket now.  Leaves EV_WRITE
 * enabled when some remains (libevent sends the rest), disabled when all
 * of it went: a caller that later adds output without calling this again
 * must enable EV_WRITE itself.  The write callback, if any, runs from the
 * loop as when libevent writes.  Only for bufferevent_socket_new()
 * bufferevents, never TLS ones. */
void bev_write_now(struct bufferevent *bev);

/* Adds data to bev's output and writes it now (bev_write_now). */
void bev_send(struct bufferevent *bev, const void *data, size_t len);

/* libevent 2.1 reads a socket at most 4 KB at a time (EVBUFFER_MAX_READ),
 * each read a turn of the loop: a 100 KB body took smtpd 27 reads, 27
 * FIONREAD ioctls and as many wake-ups.  Called from a read callback,
 * bev_read_waiting() reads, in one readv, what else the socket holds
 * (at most BEV_READ_WAITING_MAX, and never past the read high-water
 * mark) when the input already holds 4 KB or more; below that libevent
 * read all there was, and it costs nothing.  An end of stream or an
 * error is left for libevent's next read.  Only for
 * bufferevent_socket_new() bufferevents, never TLS ones. */
#define BEV_READ_WAITING_MAX (256 * 1024)
void bev_read_waiting(struct bufferevent *bev);
/* The same, reading at most max more: on qmgr's enqueue connections a
 * turn that read 256 KB of messages with 1,000 recipients each made
 * `ternctl show queues` right after a million recipients wait 1.3-2 s
 * (0.06-0.3 s without). */
void bev_read_waiting_at_most(struct bufferevent *bev, size_t max);

/* libevent's evbuffer_read() asks the kernel how much the socket holds
 * (an ioctl FIONREAD) before every read it makes for a bufferevent: 4.1
 * ioctls per message between smtpd and qmgr, about 4 % of tern's CPU on
 * a machine where a system call costs 2 µs.  This file defines
 * evbuffer_read() itself, with libevent's contract: it reads at most
 * howmuch octets (all of libevent's 4 KB when howmuch is negative or
 * more) straight into the buffer's free space, returns what it read, 0
 * at the end of stream and -1 on an error (errno set) or when the
 * buffer's end is frozen.  libevent calls evbuffer_read() through its
 * procedure linkage table, so the dynamic linker binds its bufferevents'
 * reads to this definition in every program that links this file; were
 * that ever not so, libevent's own would run, as before. */

#endif
