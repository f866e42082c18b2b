/* pickup_conf.c: what pickup takes from the configuration: the two
 * directories (shared rule with tern-sendmail: conf_pickup_dir), the host
 * name that qualifies bare local parts, and the settings of
 * <source {pickup}>, PowerMTA's reserved source for pickup submissions.
 * Sources matched by IP address do not apply: a file has no client IP. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf.h"
#include "mem.h"
#include "pickup.h"
#include "value.h"

#define PICKUP_SOURCE "{pickup}"

/* The header rules; the strings point into the configuration. */
static void take_header_rules(struct pickup_header_rules *r, const struct conf_settings *s, bool override_date)
{
	r->process_x_vmta = conf_get_bool(s, "process-x-virtual-mta");
	r->retain_x_vmta = conf_get_bool(s, "retain-x-virtual-mta");
	r->process_x_job = conf_get_bool(s, "process-x-job");
	r->retain_x_job = conf_get_bool(s, "retain-x-job");
	r->jobid_header = conf_get_string(s, "jobid-header");
	r->drop_date = override_date;
	const struct conf_list *rm = conf_get_list(s, "remove-header");
	r->remove = rm ? (const char *const *)rm->items : NULL;
	r->nremove = rm ? rm->count : 0;
}

/* The settings of <source {pickup}> over the defaults of every source. */
static void take_source(struct pickup_conf *c)
{
	const struct addr_ip none = {0};
	bool named = conf_block_find(c->conf, CONF_SOURCE, PICKUP_SOURCE) != NULL;
	struct conf_settings *s = conf_resolve_source(c->conf, &none, named ? PICKUP_SOURCE : NULL);
	uint64_t max = conf_get_uint(s, "max-message-size");
	c->max_message_size = max == 0 || max == VALUE_UNLIMITED || max > PICKUP_SIZE_MAX ? PICKUP_SIZE_MAX : max;
	c->max_rcpt = conf_get_uint(s, "max-rcpt-per-message");
	c->add_received_header = conf_get_bool(s, "add-received-header");
	c->add_message_id_header = conf_get_bool(s, "add-message-id-header");
	const char *date = conf_get_string(s, "add-date-header");
	c->add_date_header = date && strcasecmp(date, "no") != 0;
	c->reject_invalid_vmta = conf_get_bool(s, "reject-invalid-virtual-mta");
	take_header_rules(&c->headers, s, date && strcasecmp(date, "override") == 0);
	const char *vmta = conf_get_string(s, "default-virtual-mta");
	/* "by-smtp-source-ip" is a rule for the delivery side, not a name */
	if (vmta && *vmta && strcasecmp(vmta, "by-smtp-source-ip") != 0)
		c->default_vmta = mem_strdup(vmta);
	conf_settings_free(s);
}

struct pickup_conf *pickup_conf_load(const char *path, struct buf *err)
{
	struct conf *conf = conf_load_checked(path, "; ", err);
	if (conf == NULL)
		return NULL;
	struct pickup_conf *c = mem_zalloc(sizeof(*c));
	c->conf = conf;
	const struct conf_settings *g = conf_global(conf);
	c->hostname = conf_host_name(conf);
	c->dir = conf_pickup_dir(conf);
	c->bad_dir = conf_pickup_bad_dir(conf);
	c->qmgr_socket = mem_asprintf("%s/private/qmgr", conf_spool(conf));
	c->remove_dot = conf_get_bool(g, "pickup-remove-dot");
	take_source(c);
	return c;
}

bool pickup_conf_vmta_known(const struct pickup_conf *c, const char *name)
{
	return conf_block_find(c->conf, CONF_VMTA, name) != NULL ||
	       conf_block_find(c->conf, CONF_VMTA_POOL, name) != NULL;
}

void pickup_conf_free(struct pickup_conf *c)
{
	if (c == NULL)
		return;
	conf_free(c->conf);
	free(c->dir);
	free(c->bad_dir);
	free(c->hostname);
	free(c->qmgr_socket);
	free(c->default_vmta);
	free(c);
}
