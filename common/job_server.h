/* job_server.h: the agent side of the job protocol's connections
 * (common/job_proto.h), shared by the delivery agents (smtp, local).  It
 * accepts qmgr's connections on the agent's service socket, takes frames
 * out of each, decodes them strictly and hands each to the agent's
 * handler for its verb.  A frame that cannot be trusted is answered with
 * "error" and the connection closes once that is written.  The agent
 * keeps its own state per connection (its jobs, results not yet
 * confirmed) behind an opaque pointer. */
#ifndef TERN_JOB_SERVER_H
#define TERN_JOB_SERVER_H

#include <stdbool.h>

#include <event2/event.h>

#include "buf.h"
#include "ipc.h"
#include "job_proto.h"

struct job_conn;

struct job_agent {
	/* One handler per verb, given the connection's state; false (reason
	 * in err) breaks the connection. */
	bool (*handlers[JOB_VERB_COUNT])(void *state, const struct ipc_msg *m, struct buf *err);
	/* A new connection from qmgr: its state. */
	void *(*open)(struct job_conn *conn);
	/* The connection stops counting (qmgr closed it, a frame broke it,
	 * or the agent is stopping): the agent lets go of its jobs and frees
	 * the state.  Nothing is sent on the connection after this. */
	void (*close)(void *state, bool qmgr_closed);
	/* Optional, when the agent stops: last frames for a live connection
	 * (they are written out before it closes). */
	void (*stopping)(void *state);
};

/* Watches the listening socket fd with agent's callbacks. */
bool job_server_listen(struct event_base *base, int fd, const struct job_agent *agent, struct buf *err);
/* Stops listening, gives each live connection agent->stopping, writes
 * out what is queued and closes every connection. */
void job_server_shutdown(void);

/* Queues bytes (whole frames) to qmgr on the connection: they are written
 * once the callback that made them returns. */
void job_conn_write(struct job_conn *conn, const void *data, size_t len);

/* How long frames queued with job_conn_write_soon() may wait. */
#define JOB_CONN_SOON_MS 5
/* Queues frames that may wait a little (a delivery's result): they go
 * with the next frame queued with job_conn_write(), or JOB_CONN_SOON_MS
 * after the first of them at the latest.  qmgr then reads and commits a
 * job's results together instead of one at a time. */
void job_conn_write_soon(struct job_conn *conn, const void *data, size_t len);

#endif
