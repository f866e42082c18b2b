/* test_qmgr_backoff.c: <smtp-pattern-list> rules as qmgr reads them
 * (first match wins, case-insensitive unless (?-i), the "smtp;" prefix
 * of a diagnostic left out) and the settings a queue uses in each mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "qmgr/qmgr.h"

static const char text[] = "<smtp-pattern-list pl>\n"
                           "  reply /(?-i)^421 .*RBL/ mode=normal\n"
                           "  reply /^421 / mode=backoff, backoff-to-normal-after=30m\n"
                           "  reply /too many/ mode=backoff\n"
                           "  reply /no such user/ bounce-rcpt\n"
                           "</smtp-pattern-list>\n"
                           "<domain example.net>\n"
                           "  smtp-pattern-list pl\n"
                           "  max-smtp-out 7\n"
                           "  backoff-max-smtp-out 2\n"
                           "  max-msg-rate 100/h\n"
                           "  backoff-retry-after 5m,1h\n"
                           "  backoff-to-normal-after 2h\n"
                           "  backoff-notify ops@example.org, noc@example.org\n"
                           "</domain>\n";

static struct conf *load(void)
{
	struct conf *conf = conf_load_buffer("b.conf", text, strlen(text), 0);
	for (size_t i = 0; i < conf_diag_count(conf); i++) {
		const struct conf_diag *d = conf_diag_at(conf, i);
		if (d->severity == CONF_ERROR)
			fail_msg("%s:%u: %s", d->file, d->line, d->message);
	}
	return conf;
}

static void test_first_matching_rule_wins(void **state)
{
	struct conf *conf = load();
	struct qmgr_patterns *p = qmgr_patterns_load(conf);
	const struct qmgr_pattern_list *l = qmgr_patterns_find(p, "PL");
	assert_non_null(l);
	assert_null(qmgr_patterns_find(p, "other"));
	int64_t after;
	assert_int_equal(qmgr_patterns_match(l, "smtp;421 4.7.0 listed by RBL", &after), QMGR_MODE_NORMAL);
	assert_int_equal(qmgr_patterns_match(l, "smtp;421 4.7.0 listed by rbl", &after), QMGR_MODE_BACKOFF);
	assert_int_equal(after, 1800);
	assert_int_equal(qmgr_patterns_match(l, "450 4.7.1 TOO MANY connections", &after), QMGR_MODE_BACKOFF);
	assert_int_equal(after, -1);
	/* an action tern does not act on is no mode change */
	assert_int_equal(qmgr_patterns_match(l, "smtp;550 5.1.1 no such user", &after), QMGR_MODE_NONE);
	assert_int_equal(qmgr_patterns_match(l, "smtp;250 ok", &after), QMGR_MODE_NONE);
	assert_int_equal(qmgr_patterns_match(NULL, "smtp;421 x", &after), QMGR_MODE_NONE);
	qmgr_patterns_free(p);
	conf_free(conf);
}

static void test_settings_by_mode(void **state)
{
	struct conf *conf = load();
	struct qmgr_patterns *p = qmgr_patterns_load(conf);
	struct conf_settings *cs = conf_resolve_domain(conf, "example.net", NULL);
	struct qmgr_squeue q = {.name = "example.net/{default}", .max_out = 7};
	q.rate = conf_get_rate(cs, "max-msg-rate");
	q.retry.count = 1;
	q.retry.seconds[0] = 600;
	qmgr_backoff_configure(&q, cs, p);
	assert_int_equal(qmgr_backoff_max_out(&q), 7);
	assert_int_equal(qmgr_backoff_retry(&q)->seconds[0], 600);
	q.state.backoff = true;
	assert_int_equal(qmgr_backoff_max_out(&q), 2);
	assert_int_equal(qmgr_backoff_retry(&q)->count, 2);
	assert_int_equal(qmgr_backoff_retry(&q)->seconds[1], 3600);
	/* backoff-max-msg-rate unset: the normal rate */
	assert_int_equal(qmgr_backoff_rate(&q)->count, 100);
	assert_int_equal(q.backoff.to_normal_after, 7200);
	assert_string_equal(q.backoff.notify, "ops@example.org,noc@example.org");
	assert_ptr_equal(q.backoff.patterns, qmgr_patterns_find(p, "pl"));
	free(q.backoff.notify);
	conf_settings_free(cs);
	qmgr_patterns_free(p);
	conf_free(conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_matching_rule_wins),
	    cmocka_unit_test(test_settings_by_mode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
