/* test_qmgr_traffic.c: the traffic rings behind `ternctl show status`:
 * the running sum an add returns is always the ring's sum over its last
 * 60 units, across new units, gaps longer than the ring and a clock that
 * goes back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qmgr/qmgr.h"

static void test_counts_within_one_unit(void **state)
{
	struct qmgr_traffic_ring r = {.unit = 1};
	assert_int_equal(qmgr_traffic_add(&r, 1000, QMGR_IN_MSGS, 3), 3);
	assert_int_equal(qmgr_traffic_add(&r, 1000, QMGR_IN_MSGS, 2), 5);
	assert_int_equal(qmgr_traffic_add(&r, 1000, QMGR_IN_RCPTS, 7), 7);
	assert_int_equal(qmgr_traffic_sum(&r, 1000, QMGR_IN_MSGS), 5);
	assert_int_equal(qmgr_traffic_sum(&r, 1000, QMGR_OUT_RCPTS), 0);
}

static void test_old_units_leave_the_sum(void **state)
{
	struct qmgr_traffic_ring r = {.unit = 60};
	qmgr_traffic_add(&r, 60 * 100, QMGR_OUT_RCPTS, 10);
	assert_int_equal(qmgr_traffic_add(&r, 60 * 159, QMGR_OUT_RCPTS, 1), 11); /* unit 100 still in */
	assert_int_equal(qmgr_traffic_add(&r, 60 * 160, QMGR_OUT_RCPTS, 1), 2);  /* unit 100 gone */
	assert_int_equal(qmgr_traffic_add(&r, 60 * 400, QMGR_OUT_RCPTS, 4), 4);  /* a gap longer than the ring */
}

/* Random adds, the clock mostly forward, sometimes back: the sum an add
 * returns equals the ring's sum computed afresh. */
static void test_running_sum_matches_the_ring(void **state)
{
	struct qmgr_traffic_ring r = {.unit = 1};
	int64_t now = 50000;
	srandom(7);
	for (int i = 0; i < 20000; i++) {
		long step = random() % 100;
		if (step < 60)
			now += 0;
		else if (step < 95)
			now += random() % 3;
		else if (step < 98)
			now += random() % 90;
		else
			now -= random() % 5;
		enum qmgr_traffic_kind kind = (enum qmgr_traffic_kind)(random() % QMGR_TRAFFIC_KINDS);
		uint64_t n = (uint64_t)(random() % 4);
		uint64_t running = qmgr_traffic_add(&r, now, kind, n);
		assert_int_equal(running, qmgr_traffic_sum(&r, now, kind));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counts_within_one_unit),
	    cmocka_unit_test(test_old_units_leave_the_sum),
	    cmocka_unit_test(test_running_sum_matches_the_ring),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
