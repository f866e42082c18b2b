/* qmgr_backoff.c: a queue's backoff mode (PowerMTA's "mode=backoff").
 *
 * A queue enters backoff mode when a rule of its <smtp-pattern-list>
 * with mode=backoff matches a reply smtp reported (the diagnostic of a
 * recipient's result, or the reason of a queue-level failure), or on
 * `ternctl set queue --mode=backoff`.  In backoff mode the backoff-*
 * settings replace the normal ones (qmgr_backoff_max_out and friends).
 * It returns to normal on a mode=normal rule, on `set queue
 * --mode=normal`, once backoff-to-normal-after has passed (or the
 * rule's own backoff-to-normal-after=T), or, with
 * backoff-to-normal-after-delivery, on the first delivery.  Entering and
 * leaving are mailed to backoff-notify.
 *
 * Rules are POSIX extended regular expressions, case-insensitive unless
 * they begin with (?-i), compiled once per configuration. */
#include "qmgr.h"

#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "conf.h"
#include "log.h"
#include "mem.h"

struct pattern_rule {
	regex_t re;
	enum qmgr_mode_action action;
	int64_t to_normal_after; /* from the rule; -1: the queue's setting */
};

struct qmgr_pattern_list {
	char *name;
	struct pattern_rule *rules;
	size_t nrules;
};

struct qmgr_patterns {
	struct qmgr_pattern_list *lists;
	size_t nlists;
};

/* ---- loading ----------------------------------------------------------------- */

static bool rule_actions(const struct conf_list *actions, struct pattern_rule *r)
{
	r->action = QMGR_MODE_NONE;
	r->to_normal_after = -1;
	for (size_t i = 0; i < actions->count; i++) {
		const char *a = actions->items[i];
		int64_t secs;
		if (strcasecmp(a, "mode=backoff") == 0)
			r->action = QMGR_MODE_BACKOFF;
		else if (strcasecmp(a, "mode=normal") == 0)
			r->action = QMGR_MODE_NORMAL;
		else if (strncasecmp(a, "backoff-to-normal-after=", 24) == 0 &&
		         value_parse_interval(a + 24, &secs, NULL))
			r->to_normal_after = secs;
		else
			log_warning("smtp-pattern-list action \"%s\" is not supported yet: ignored", a);
	}
	return r->action != QMGR_MODE_NONE;
}

static void add_rule(struct qmgr_pattern_list *l, const struct conf_value *v)
{
	struct pattern_rule r;
	if (!rule_actions(&v->list, &r))
		return; /* only actions tern does not act on (doc/queue.md) */
	const char *re = v->regex;
	int flags = REG_EXTENDED | REG_NOSUB | REG_ICASE;
	if (strncmp(re, "(?-i)", 5) == 0) {
		re += 5;
		flags &= ~REG_ICASE;
	}
	if (regcomp(&r.re, re, flags) != 0) {
		log_warning("<smtp-pattern-list %s>: /%s/ is not a valid regular expression: ignored", l->name,
		            v->regex);
		return;
	}
	l->rules = mem_reallocarray(l->rules, l->nrules + 1, sizeof(*l->rules));
	l->rules[l->nrules++] = r;
}

struct qmgr_patterns *qmgr_patterns_load(const struct conf *conf)
{
	struct qmgr_patterns *p = mem_zalloc(sizeof(*p));
	size_t n = conf_block_count(conf, CONF_SMTP_PATTERN_LIST);
	p->lists = mem_reallocarray(NULL, n ? n : 1, sizeof(*p->lists));
	for (size_t i = 0; i < n; i++) {
		const struct conf_block *block = conf_block_at(conf, CONF_SMTP_PATTERN_LIST, i);
		struct qmgr_pattern_list *l = &p->lists[p->nlists++];
		memset(l, 0, sizeof(*l));
		l->name = mem_strdup(conf_block_name(block));
		for (size_t k = 0; k < conf_block_setting_count(block); k++) {
			const struct conf_value *v = &conf_block_setting_at(block, k)->value;
			if (v->regex)
				add_rule(l, v);
		}
	}
	return p;
}

void qmgr_patterns_free(struct qmgr_patterns *p)
{
	if (p == NULL)
		return;
	for (size_t i = 0; i < p->nlists; i++) {
		for (size_t k = 0; k < p->lists[i].nrules; k++)
			regfree(&p->lists[i].rules[k].re);
		free(p->lists[i].rules);
		free(p->lists[i].name);
	}
	free(p->lists);
	free(p);
}

const struct qmgr_pattern_list *qmgr_patterns_find(const struct qmgr_patterns *p, const char *name)
{
	for (size_t i = 0; p && name && i < p->nlists; i++)
		if (strcasecmp(p->lists[i].name, name) == 0)
			return &p->lists[i];
	return NULL;
}

/* ---- matching ---------------------------------------------------------------- */

enum qmgr_mode_action qmgr_patterns_match(const struct qmgr_pattern_list *l, const char *reply,
                                          int64_t *to_normal_after)
{
	*to_normal_after = -1;
	if (l == NULL || reply == NULL)
		return QMGR_MODE_NONE;
	/* "smtp;450 4.7.0 ..." is the server's reply; match the reply itself */
	if (strncasecmp(reply, "smtp;", 5) == 0)
		reply += 5;
	for (size_t i = 0; i < l->nrules; i++) {
		if (regexec(&l->rules[i].re, reply, 0, NULL, 0) == 0) {
			*to_normal_after = l->rules[i].to_normal_after;
			return l->rules[i].action;
		}
	}
	return QMGR_MODE_NONE;
}

/* ---- settings by mode ---------------------------------------------------------- */

uint64_t qmgr_backoff_max_out(const struct qmgr_squeue *q)
{
	return q->state.backoff ? q->backoff.max_out : q->max_out;
}

const struct value_rate *qmgr_backoff_rate(const struct qmgr_squeue *q)
{
	return q->state.backoff ? &q->backoff.rate : &q->rate;
}

const struct value_interval_list *qmgr_backoff_retry(const struct qmgr_squeue *q)
{
	return q->state.backoff ? &q->backoff.retry : &q->retry;
}

/* backoff-max-msg-rate defaults to the normal value: unset, it is. */
void qmgr_backoff_configure(struct qmgr_squeue *q, const struct conf_settings *cs, const struct qmgr_patterns *p)
{
	struct qmgr_backoff_settings *b = &q->backoff;
	b->max_out = conf_get_uint(cs, "backoff-max-smtp-out");
	const struct conf_setting *rate = conf_get_setting(cs, "backoff-max-msg-rate");
	b->rate = rate && rate->file && !rate->value.unset ? rate->value.rate : q->rate;
	b->retry = *conf_get_value(cs, "backoff-retry-after")->intervals;
	if (b->retry.count == 0) {
		b->retry.count = 1;
		b->retry.seconds[0] = 3600;
	}
	b->to_normal_after = conf_get_interval(cs, "backoff-to-normal-after");
	b->to_normal_on_delivery = conf_get_bool(cs, "backoff-to-normal-after-delivery");
	free(b->notify);
	b->notify = NULL;
	const struct conf_value *notify = conf_get_value(cs, "backoff-notify");
	if (notify && !notify->unset && notify->list.count > 0) {
		struct buf all = BUF_INIT;
		for (size_t i = 0; i < notify->list.count; i++)
			if (notify->list.items[i][0])
				buf_printf(&all, "%s%s", all.len ? "," : "", notify->list.items[i]);
		b->notify = all.len ? mem_strdup(buf_cstr(&all)) : NULL;
		buf_free(&all);
	}
	const struct conf_value *list = conf_get_value(cs, "smtp-pattern-list");
	const char *name = list && !list->unset ? list->string : NULL;
	b->patterns = qmgr_patterns_find(p, name);
	if (name && b->patterns == NULL)
		log_warning("queue %s: no <smtp-pattern-list %s>", q->name, name);
}

/* ---- notices -------------------------------------------------------------------- */

static void notice_body(const char *host, const char *to, const char *queue, bool backoff, const char *why,
                        struct buf *out)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host);
	buf_printf(out, "To: %s\r\n", to);
	buf_printf(out, "Date: %s\r\n", date);
	buf_printf(out, "Subject: queue %s %s backoff mode\r\n", queue, backoff ? "entered" : "left");
	buf_puts(out, "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n");
	buf_printf(out, "The queue %s on %s is now in %s mode.\r\n", queue, host, backoff ? "backoff" : "normal");
	if (why)
		buf_printf(out, "\r\nReason: %s\r\n", why);
}

/* One message from <> to every address of backoff-notify. */
void qmgr_backoff_notify(struct qmgr_sched *s, const struct conf *conf, const struct qmgr_squeue *q, const char *why)
{
	if (q->backoff.notify == NULL)
		return;
	struct qmgr_incoming in = {0};
	struct buf frame = BUF_INIT, err = BUF_INIT, queue = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, 0);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "enqueue");
	ipc_put_str(&w, IPC_ATTR_SENDER, "");
	ipc_put_str(&w, IPC_ATTR_SRC_TYPE, "notice");
	bool ok = ipc_write_end(&w, &err) &&
	          qmgr_envelope_decode(frame.data + IPC_FRAME_HEADER, frame.len - IPC_FRAME_HEADER, &in.envelope, &err);
	char *list = mem_strdup(q->backoff.notify), *save = NULL;
	for (char *a = strtok_r(list, ",", &save); ok && a; a = strtok_r(NULL, ",", &save)) {
		while (*a == ' ')
			a++;
		in.rcpts = mem_reallocarray(in.rcpts, in.nrcpt + 1, sizeof(*in.rcpts));
		memset(&in.rcpts[in.nrcpt], 0, sizeof(in.rcpts[0]));
		in.rcpts[in.nrcpt++].address = mem_strdup(a);
	}
	const char *host = conf_get_string(conf_global(conf), "host-name");
	notice_body(host && *host ? host : "localhost", q->backoff.notify, q->name, q->state.backoff, why, &in.body);
	char qid[QMGR_QID_SIZE];
	if (ok && qmgr_store_add_message(qmgr_sched_store(s), &in, time(NULL), qid, &err) == QMGR_STORE_OK) {
		log_info("%s: backoff notice for queue %s to <%s>", qid, q->name, q->backoff.notify);
		for (size_t i = 0; i < in.nrcpt; i++) {
			buf_reset(&queue);
			if (qmgr_queue_name(in.rcpts[i].address, NULL, &queue, &err))
				qmgr_sched_queued(s, buf_cstr(&queue), 1);
		}
	} else {
		log_error("queue %s: cannot queue the backoff notice to <%s>: %s", q->name, q->backoff.notify,
		          buf_cstr(&err));
	}
	free(list);
	qmgr_incoming_free(&in);
	buf_free(&frame);
	buf_free(&err);
	buf_free(&queue);
}
