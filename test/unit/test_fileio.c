/* test_fileio.c: unit tests of the file helpers: a file of zeros written
 * ahead (in pieces, each written back before the next) has exactly the
 * size asked for and nothing but zeros, and a descriptor that cannot be
 * written is reported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

static int temp_file(char *path, size_t size)
{
	snprintf(path, size, "/tmp/tern-fileio-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	return fd;
}

/* The whole file reads as size zeros. */
static void assert_zeros(int fd, uint64_t size)
{
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal((uint64_t)st.st_size, size);
	static unsigned char block[256 * 1024];
	uint64_t seen = 0;
	for (;;) {
		ssize_t n = pread(fd, block, sizeof(block), (off_t)seen);
		assert_true(n >= 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (block[i] != 0)
				fail_msg("byte %llu is %u", (unsigned long long)(seen + (uint64_t)i), block[i]);
		seen += (uint64_t)n;
	}
	assert_int_equal(seen, size);
}

static void test_write_zeros_sizes(void **state)
{
	(void)state;
	/* none, under one write, across writes, across pieces of 1 MB, and
	 * a piece and a bit */
	const uint64_t sizes[] = {0, 1, 65536 + 1, 3u * 1024 * 1024, 1024u * 1024 + 4097};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		char path[64];
		int fd = temp_file(path, sizeof(path));
		assert_true(fileio_write_zeros(fd, sizes[i]));
		assert_zeros(fd, sizes[i]);
		close(fd);
		unlink(path);
	}
}

static void test_write_zeros_over_old_bytes(void **state)
{
	(void)state;
	char path[64];
	int fd = temp_file(path, sizeof(path));
	static char junk[2 * 1024 * 1024];
	memset(junk, 'x', sizeof(junk));
	assert_true(fileio_write_all(fd, junk, sizeof(junk)));
	assert_true(fileio_write_zeros(fd, sizeof(junk)));
	assert_zeros(fd, sizeof(junk));
	close(fd);
	unlink(path);
}

static void test_write_zeros_unwritable(void **state)
{
	(void)state;
	char path[64];
	int fd = temp_file(path, sizeof(path));
	close(fd);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	errno = 0;
	assert_false(fileio_write_zeros(fd, 4096));
	assert_int_equal(errno, EBADF);
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_write_zeros_sizes),
	    cmocka_unit_test(test_write_zeros_over_old_bytes),
	    cmocka_unit_test(test_write_zeros_unwritable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
