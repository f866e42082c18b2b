/* qmgr_local.c: the queues whose <domain> has "type file" are delivered
 * by the local agent (<spool>/private/local) instead of smtp; both speak
 * the same job protocol, so qmgr keeps one connection to each and every
 * job remembers which one it went to. */
#include "qmgr.h"

#include <string.h>

#include "conf.h"

bool qmgr_local_queue(const struct conf_settings *cs)
{
	const char *type = conf_get_string(cs, "type");
	return type != NULL && strcmp(type, "file") == 0;
}

struct qmgr_smtp *qmgr_local_new(struct event_base *base, const char *spool, struct qmgr_sched *sched)
{
	return qmgr_smtp_new_agent(base, spool, "local", sched);
}
