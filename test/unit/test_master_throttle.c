/* test_master_throttle.c: unit tests of the crash throttle's arithmetic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../master/master.h"

static void test_healthy_exit_restarts_at_once(void **state)
{
	(void)state;
	struct master_throttle t;
	master_throttle_init(&t);
	assert_false(master_throttle_exit(&t, true, 0, 5000));
	assert_int_equal(master_throttle_wait_ms(&t, 5000), 0);
	assert_false(master_throttle_is_throttled(&t));
}

static void test_failed_starts_double_the_pause(void **state)
{
	(void)state;
	struct master_throttle t;
	master_throttle_init(&t);
	int64_t now = 1000, expected[] = {250, 500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
	for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
		assert_true(master_throttle_exit(&t, false, now - 10, now));
		assert_int_equal(master_throttle_wait_ms(&t, now), expected[i]);
		assert_int_equal(master_throttle_is_throttled(&t), i >= 1);
		now += expected[i];
		assert_int_equal(master_throttle_wait_ms(&t, now), 0);
	}
}

static void test_ready_but_short_lived_counts_as_failure(void **state)
{
	(void)state;
	struct master_throttle t;
	master_throttle_init(&t);
	assert_true(master_throttle_exit(&t, true, 1000, 1500));
	assert_true(master_throttle_exit(&t, true, 2000, 2100));
	assert_true(master_throttle_is_throttled(&t));
	/* one healthy run clears the record */
	assert_false(master_throttle_exit(&t, true, 3000, 9000));
	assert_false(master_throttle_is_throttled(&t));
	assert_int_equal(master_throttle_wait_ms(&t, 9000), 0);
}

static void test_restarts_in_ten_seconds_are_bounded(void **state)
{
	(void)state;
	struct master_throttle t;
	master_throttle_init(&t);
	int64_t now = 0;
	int starts = 0;
	while (now < 10000) {
		starts++;
		master_throttle_exit(&t, false, now, now + 5); /* dies 5 ms after start */
		now += 5 + master_throttle_wait_ms(&t, now + 5);
	}
	assert_true(starts <= 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_healthy_exit_restarts_at_once),
	    cmocka_unit_test(test_failed_starts_double_the_pause),
	    cmocka_unit_test(test_ready_but_short_lived_counts_as_failure),
	    cmocka_unit_test(test_restarts_in_ten_seconds_are_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
