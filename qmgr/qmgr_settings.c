/* qmgr_settings.c: where qmgr's settings come from.  The one function
 * here is the only place qmgr reads configuration, so that moving from
 * command-line stand-ins to the configuration library (conf/) changes
 * nothing else. */
#include "qmgr.h"

#include <stdlib.h>
#include <string.h>

#include "mem.h"

#define DEFAULT_SPOOL TERN_LOCALSTATEDIR "/spool/tern"

bool qmgr_settings_load(struct qmgr_settings *s, const char *config_path, const char *spool_override, bool no_sync,
                        struct buf *err)
{
	memset(s, 0, sizeof(*s));
	/* Until conf/ lands: spool and sync-msg-create have their
	 * PowerMTA defaults unless the command line says otherwise. */
	s->spool = mem_strdup(spool_override ? spool_override : DEFAULT_SPOOL);
	s->sync_msg_create = !no_sync;
	return true;
}

void qmgr_settings_free(struct qmgr_settings *s)
{
	free(s->spool);
	memset(s, 0, sizeof(*s));
}
