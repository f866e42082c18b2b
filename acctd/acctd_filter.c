/* acctd_filter.c: disable-acct-records, a <domain> setting: records of
 * the listed types are not written for mail to that domain.  Resolving a
 * domain's settings merges several blocks, so the answer (a bit per type)
 * is kept per domain/virtual-MTA pair; the table is emptied when it fills,
 * which bounds its memory whatever the mix of domains. */
#include "acctd.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define FILTER_SLOTS 4096 /* power of two */
#define FILTER_MAX_USED (FILTER_SLOTS / 2)

struct filter_slot {
	char *key;         /* "domain/vmta", lower case; NULL: empty */
	unsigned disabled; /* bit (1u << type) */
};

struct acctd_filter {
	const struct conf *conf;
	struct filter_slot slots[FILTER_SLOTS];
	size_t used;
};

struct acctd_filter *acctd_filter_new(const struct conf *conf)
{
	struct acctd_filter *flt = mem_zalloc(sizeof(*flt));
	flt->conf = conf;
	return flt;
}

static void filter_clear(struct acctd_filter *flt)
{
	for (size_t i = 0; i < FILTER_SLOTS; i++) {
		free(flt->slots[i].key);
		flt->slots[i].key = NULL;
	}
	flt->used = 0;
}

void acctd_filter_free(struct acctd_filter *flt)
{
	if (flt == NULL)
		return;
	filter_clear(flt);
	free(flt);
}

static unsigned resolve(const struct conf *conf, const char *domain, const char *vmta)
{
	struct conf_settings *s = conf_resolve_domain(conf, domain, vmta && *vmta ? vmta : NULL);
	if (s == NULL) /* a virtual MTA the configuration does not name */
		s = conf_resolve_domain(conf, domain, NULL);
	const struct conf_list *disabled = s ? conf_get_list(s, "disable-acct-records") : NULL;
	unsigned bits = disabled ? acct_type_mask(disabled->items, disabled->count) : 0;
	conf_settings_free(s);
	return bits;
}

static uint32_t hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* The recipient's domain, or for queue-level records the queue's. */
static void record_domain(const struct ipc_msg *rec, struct buf *out)
{
	const char *rcpt = ipc_msg_str(rec, IPC_ATTR_ACCT_RCPT);
	const char *queue = ipc_msg_str(rec, IPC_ATTR_QUEUE);
	const char *at = rcpt ? strrchr(rcpt, '@') : NULL;
	if (at)
		buf_puts(out, at + 1);
	else if (queue)
		buf_append(out, queue, strcspn(queue, "/"));
	for (size_t i = 0; i < out->len; i++)
		out->data[i] = (char)tolower((unsigned char)out->data[i]);
}

bool acctd_filter_disabled(struct acctd_filter *flt, enum acct_type type, const struct ipc_msg *rec)
{
	struct buf domain = BUF_INIT;
	record_domain(rec, &domain);
	if (domain.len == 0) {
		buf_free(&domain);
		return false;
	}
	const char *vmta = ipc_msg_str(rec, IPC_ATTR_VMTA);
	char *key = mem_asprintf("%s/%s", buf_cstr(&domain), vmta ? vmta : "");
	size_t i = hash(key) & (FILTER_SLOTS - 1);
	while (flt->slots[i].key && strcmp(flt->slots[i].key, key) != 0)
		i = (i + 1) & (FILTER_SLOTS - 1);
	if (flt->slots[i].key == NULL) {
		if (flt->used >= FILTER_MAX_USED) {
			filter_clear(flt);
			i = hash(key) & (FILTER_SLOTS - 1);
		}
		flt->slots[i].key = mem_strdup(key);
		flt->slots[i].disabled = resolve(flt->conf, buf_cstr(&domain), vmta);
		flt->used++;
	}
	bool disabled = (flt->slots[i].disabled & (1u << type)) != 0;
	free(key);
	buf_free(&domain);
	return disabled;
}
