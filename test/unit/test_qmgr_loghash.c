/* test_qmgr_loghash.c: unit tests of qmgr's Berkeley DB log checksum
 * (qmgr_loghash.c): the same sum as a byte-at-a-time reference and as
 * the linked Berkeley DB's own __ham_func4, at every length up to many of
 * its 64-byte blocks and at random lengths and contents; the start-up
 * check that chooses it; and a log written under it that Berkeley DB
 * recovers and reads back, checking every record's sum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <db.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

typedef uint32_t (*db_hash_fn)(void *db, const void *key, uint32_t len);

#define SAMPLE_BYTES (256 * 1024)

static unsigned char *random_bytes(size_t n, uint32_t seed)
{
	unsigned char *p = malloc(n);
	assert_non_null(p);
	for (size_t i = 0; i < n; i++) {
		seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
		p[i] = (unsigned char)(seed >> 7);
	}
	return p;
}

static uint32_t reference_sum(const unsigned char *p, size_t len)
{
	uint32_t h = 0;
	for (size_t i = 0; i < len; i++)
		h = (h << 5) + h + p[i];
	return h;
}

static db_hash_fn berkeley_db_own(void)
{
	db_hash_fn f = (db_hash_fn)dlsym(RTLD_NEXT, "__ham_func4");
	assert_non_null(f);
	return f;
}

static void test_every_short_length_and_offset(void **state)
{
	(void)state;
	unsigned char *p = random_bytes(4096, 1);
	db_hash_fn theirs = berkeley_db_own();
	for (size_t len = 0; len <= 2100; len++) {
		size_t off = len % 13;
		uint32_t want = reference_sum(p + off, len);
		assert_int_equal(qmgr_loghash(p + off, len), want);
		assert_int_equal(theirs(NULL, p + off, (uint32_t)len), want);
	}
	free(p);
}

static void test_random_lengths_and_contents(void **state)
{
	(void)state;
	unsigned char *p = random_bytes(SAMPLE_BYTES, 7);
	db_hash_fn theirs = berkeley_db_own();
	uint32_t x = 12345;
	for (int round = 0; round < 400; round++) {
		x ^= x << 13, x ^= x >> 17, x ^= x << 5;
		size_t len = x % SAMPLE_BYTES;
		size_t off = (x >> 20) % (SAMPLE_BYTES - len + 1);
		assert_int_equal(qmgr_loghash(p + off, len), theirs(NULL, p + off, (uint32_t)len));
	}
	free(p);
}

static void test_all_ones_and_all_zeros(void **state)
{
	(void)state;
	unsigned char *p = malloc(SAMPLE_BYTES);
	assert_non_null(p);
	db_hash_fn theirs = berkeley_db_own();
	const size_t lengths[] = {255, 256, 257, 4096, 65535, SAMPLE_BYTES};
	for (int fill = 0; fill < 2; fill++) {
		memset(p, fill ? 0xff : 0, SAMPLE_BYTES);
		for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
			assert_int_equal(qmgr_loghash(p, lengths[i]), theirs(NULL, p, (uint32_t)lengths[i]));
	}
	free(p);
}

static void test_check_agrees_and_binds(void **state)
{
	(void)state;
	struct buf why = BUF_INIT;
	assert_true(qmgr_loghash_check(&why));
	assert_int_equal(why.len, 0);
	buf_free(&why);
	/* Berkeley DB's calls come to this program's definition. */
	db_hash_fn bound = (db_hash_fn)dlsym(RTLD_DEFAULT, "__ham_func4");
	assert_non_null(bound);
	assert_ptr_not_equal(bound, berkeley_db_own());
	unsigned char *p = random_bytes(3000, 99);
	assert_int_equal(bound(NULL, p, 3000), reference_sum(p, 3000));
	free(p);
}

#define LOG_RECORDS 200

static DB_ENV *open_logging_env(const char *dir, uint32_t extra_flags)
{
	DB_ENV *env = NULL;
	assert_int_equal(db_env_create(&env, 0), 0);
	assert_int_equal(env->set_lg_max(env, 1024 * 1024), 0);
	uint32_t flags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_MPOOL | DB_PRIVATE | extra_flags;
	assert_int_equal(env->open(env, dir, flags, 0600), 0);
	return env;
}

/* Records of many sizes (from one byte: Berkeley DB cannot recover an
 * empty one; most of many blocks) are written
 * and flushed, the environment reopened with recovery, and a log cursor
 * reads them back: Berkeley DB checks each record's sum as it reads. */
static void test_log_written_and_read_back(void **state)
{
	(void)state;
	struct buf why = BUF_INIT;
	assert_true(qmgr_loghash_check(&why));
	buf_free(&why);
	char *dir = testutil_tmpdir();
	unsigned char *p = random_bytes(70000, 3);
	DB_ENV *env = open_logging_env(dir, 0);
	for (uint32_t i = 0; i < LOG_RECORDS; i++) {
		DBT rec = {.data = p + i, .size = 1 + (i * 347) % 70000};
		DB_LSN lsn;
		assert_int_equal(env->log_put(env, &lsn, &rec, 0), 0);
	}
	assert_int_equal(env->log_flush(env, NULL), 0);
	assert_int_equal(env->close(env, 0), 0);

	env = open_logging_env(dir, DB_RECOVER);
	DB_LOGC *cursor = NULL;
	assert_int_equal(env->log_cursor(env, &cursor, 0), 0);
	DB_LSN lsn;
	DBT rec = {.flags = DB_DBT_REALLOC};
	uint32_t found = 0;
	int ret;
	while ((ret = cursor->get(cursor, &lsn, &rec, DB_NEXT)) == 0) {
		uint32_t want = 1 + (found * 347) % 70000;
		if (rec.size == want && memcmp(rec.data, p + found, want) == 0)
			found++;
	}
	assert_int_equal(ret, DB_NOTFOUND);
	assert_int_equal(found, LOG_RECORDS);
	free(rec.data);
	assert_int_equal(cursor->close(cursor, 0), 0);
	assert_int_equal(env->close(env, 0), 0);
	free(p);
	testutil_rmtree(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_short_length_and_offset),
		cmocka_unit_test(test_random_lengths_and_contents),
		cmocka_unit_test(test_all_ones_and_all_zeros),
		cmocka_unit_test(test_check_agrees_and_binds),
		cmocka_unit_test(test_log_written_and_read_back),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
