/* qmgr_settings.c: where qmgr's settings come from.  The one function
 * here is the only place qmgr reads its configuration (through conf/), so
 * the rest of qmgr sees plain values. */
#include "qmgr.h"

#include <stdlib.h>
#include <string.h>

#include "acct_fields.h"
#include "conf.h"
#include "mem.h"

/* The same default as master, which prepares the directories. */
#define DEFAULT_SPOOL TERN_LOCALSTATEDIR "/spool/tern"

static void first_error(const struct conf *conf, struct buf *err)
{
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity == CONF_ERROR) {
			conf_diag_format(d, err);
			return;
		}
	}
}

/* The union of the records lists of every <acct-file>: the record types
 * worth making at all. */
static unsigned acct_records_held(const struct conf *conf)
{
	unsigned held = 0;
	for (size_t i = 0; i < conf_block_count(conf, CONF_ACCT_FILE); i++) {
		const struct conf_list *types =
		    conf_get_list(conf_block_settings(conf_block_at(conf, CONF_ACCT_FILE, i)), "records");
		held |= acct_type_mask(types->items, types->count);
	}
	return held;
}

bool qmgr_settings_load(struct qmgr_settings *s, const char *config_path, struct buf *err)
{
	memset(s, 0, sizeof(*s));
	struct conf *conf = conf_load(config_path);
	bool ok = conf_ok(conf);
	if (ok) {
		const struct conf_settings *global = conf_global(conf);
		/* spool may be repeated (PowerMTA spreads over several): the
		 * queue lives in the first. */
		const char *spool = conf_get_string(global, "spool");
		s->spool = mem_strdup(spool && *spool ? spool : DEFAULT_SPOOL);
		s->sync_msg_create = conf_get_bool(global, "sync-msg-create");
		s->acct_records = acct_records_held(conf);
		s->conf = conf;
	} else {
		first_error(conf, err);
		conf_free(conf);
	}
	return ok;
}

void qmgr_settings_free(struct qmgr_settings *s)
{
	free(s->spool);
	conf_free(s->conf);
	memset(s, 0, sizeof(*s));
}
