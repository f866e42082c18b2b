/* local_deliver.c: one recipient of a message.  Its local part is
 * expanded (aliases, users), each destination gets its delivery, remote
 * ones one forwarded copy together, and the outcomes fold into the one
 * result qmgr gets for the recipient: deferred when any destination was
 * (the whole recipient is tried again), else bounced when any failed for
 * good, else delivered. */
#include "local.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mem.h"

#define DEFAULT_MBOX "/var/mail/$user"

void local_result_init(struct local_result *r)
{
	r->status = LOCAL_DELIVERED;
	snprintf(r->dsn, sizeof(r->dsn), "2.0.0");
	buf_init(&r->reason);
}

void local_result_free(struct local_result *r)
{
	buf_free(&r->reason);
}

void local_result_set(struct local_result *r, enum local_status status, const char *dsn, const char *fmt, ...)
{
	va_list ap;
	r->status = status;
	snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
	buf_reset(&r->reason);
	va_start(ap, fmt);
	buf_vprintf(&r->reason, fmt, ap);
	va_end(ap);
}

static bool domain_is_local(void *arg, const char *domain)
{
	const struct local_context *ctx = arg;
	struct conf_settings *cs = conf_resolve_domain(ctx->conf, domain, NULL);
	const char *type = cs ? conf_get_string(cs, "type") : NULL;
	bool local = type && strcmp(type, "file") == 0;
	conf_settings_free(cs);
	return local;
}

/* A user's delivery in the queue's format. */
static void deliver_user(const struct local_settings *s, const struct local_msg *msg, const struct local_dest *d,
                         const char *rcpt, struct local_result *r)
{
	const char *tmpl = s->destination;
	if (tmpl == NULL && s->format == LOCAL_APPEND_MBOX)
		tmpl = DEFAULT_MBOX;
	struct buf path = BUF_INIT, err = BUF_INIT;
	if (tmpl == NULL)
		local_result_set(r, LOCAL_DEFERRED, "4.3.5", "no file-destination for %s", s->domain);
	else if (!local_format_path(tmpl, d->name, s->domain, &path, &err))
		local_result_set(r, LOCAL_DEFERRED, "4.3.5", "%s", buf_cstr(&err));
	else if (s->format == LOCAL_APPEND_MBOX)
		local_mbox_deliver(buf_cstr(&path), &d->ident, msg, rcpt, r);
	else
		local_newfile_deliver(buf_cstr(&path), s->format == LOCAL_NEWFILE_PICKUP, &d->ident, msg, rcpt, r);
	buf_free(&path);
	buf_free(&err);
}

/* Keeps the result that matters most: deferred, then bounced, then delivered. */
static void fold(struct local_result *total, const struct local_result *one, size_t *delivered)
{
	if (one->status == LOCAL_DELIVERED) {
		if ((*delivered)++ == 0 && total->status == LOCAL_DELIVERED)
			local_result_set(total, LOCAL_DELIVERED, one->dsn, "%s", buf_cstr(&one->reason));
		return;
	}
	if (total->status == LOCAL_DEFERRED || (total->status == LOCAL_BOUNCED && one->status == LOCAL_BOUNCED))
		return;
	local_result_set(total, one->status, one->dsn, "%s", buf_cstr(&one->reason));
}

static void deliver_dest(const struct local_settings *s, const struct local_msg *msg, const struct local_dest *d,
                         const char *rcpt, struct local_result *r)
{
	switch (d->kind) {
	case LOCAL_DEST_USER:
		deliver_user(s, msg, d, rcpt, r);
		break;
	case LOCAL_DEST_FILE:
		local_mbox_deliver(d->name, &d->ident, msg, rcpt, r);
		break;
	case LOCAL_DEST_FAILED:
		local_result_set(r, d->fail.status, d->fail.dsn, "%s", buf_cstr(&d->fail.reason));
		break;
	case LOCAL_DEST_REMOTE:
		break;
	}
	if (d->kind != LOCAL_DEST_REMOTE)
		log_info("%s: to=<%s>%s%s dest=%s status=%s (%s)", msg->queue_id, rcpt, d->via ? " alias=" : "",
		         d->via ? d->via : "", d->name, r->dsn, buf_cstr(&r->reason));
}

static void forward_remote(const struct local_context *ctx, const struct local_msg *msg,
                           const struct local_dests *dests, const char *rcpt, struct local_result *total,
                           size_t *delivered)
{
	const char **addrs = mem_calloc(dests->count, sizeof(*addrs));
	size_t n = 0;
	for (size_t i = 0; i < dests->count; i++)
		if (dests->items[i].kind == LOCAL_DEST_REMOTE)
			addrs[n++] = dests->items[i].name;
	if (n > 0) {
		struct local_result r;
		local_result_init(&r);
		local_forward(ctx->spool, msg, rcpt, addrs, n, &r);
		log_info("%s: to=<%s> forward to %zu address%s: %s (%s)", msg->queue_id, rcpt, n, n == 1 ? "" : "es",
		         r.dsn, buf_cstr(&r.reason));
		fold(total, &r, delivered);
		local_result_free(&r);
	}
	free(addrs);
}

void local_deliver_rcpt(const struct local_context *ctx, const struct local_settings *s, const struct local_msg *msg,
                        const struct local_rcpt *rcpt, struct local_result *r)
{
	char *address = mem_strdup(rcpt->address);
	for (char *p = strrchr(address, '@'); p && *p; p++)
		*p = (char)tolower((unsigned char)*p);
	char *at = strrchr(address, '@');
	char *local = at ? mem_strndup(address, (size_t)(at - address)) : mem_strdup(address);
	if (local_format_has_delivered_to(msg->body.data ? msg->body.data : "", msg->body.len, address)) {
		local_result_set(r, LOCAL_BOUNCED, "5.4.6", "mail forwarding loop for %s", address);
	} else {
		struct local_dests dests = {0};
		size_t delivered = 0;
		local_alias_expand(local, s->domain, domain_is_local, (void *)ctx, &dests);
		for (size_t i = 0; i < dests.count; i++) {
			struct local_result one;
			local_result_init(&one);
			deliver_dest(s, msg, &dests.items[i], address, &one);
			if (dests.items[i].kind != LOCAL_DEST_REMOTE)
				fold(r, &one, &delivered);
			local_result_free(&one);
		}
		forward_remote(ctx, msg, &dests, address, r, &delivered);
		if (delivered == 0 && r->status == LOCAL_DELIVERED)
			local_result_set(r, LOCAL_BOUNCED, "5.4.6", "alias expansion of %s gives no destination (a loop)",
			                 local);
		else if (delivered > 1 && r->status == LOCAL_DELIVERED)
			local_result_set(r, LOCAL_DELIVERED, "2.0.0", "delivered to %zu destinations", delivered);
		local_dests_free(&dests);
	}
	free(local);
	free(address);
}
