/* test_qmgr_outbox.c: unit tests of qmgr's client of acctd
 * (qmgr_outbox.c) while acctd's socket is missing: an acctd that comes up
 * a moment after qmgr, as when master starts both, is reached without a
 * warning; one that stays away past the start-up grace is reported once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "buf.h"
#include "fileio.h"
#include "listen.h"
#include "log.h"
#include "mem.h"
#include "qmgr/qmgr.h"
#include "testutil.h"

#define UNREACHABLE_WARNING "cannot reach acctd"

struct fixture {
	char *dir;
	char *log_path;
	char *socket_path;
	struct qmgr_store *st;
	struct event_base *base;
	struct qmgr_outbox *outbox;
};

static int setup(void **state)
{
	struct fixture *f = mem_zalloc(sizeof(*f));
	struct buf err = BUF_INIT;
	f->dir = testutil_tmpdir();
	char *private_dir = testutil_path(f->dir, "private");
	assert_true(fileio_make_dirs(private_dir, 0700, (uid_t)-1, (gid_t)-1, &err));
	free(private_dir);
	f->socket_path = testutil_path(f->dir, "private/acctd");
	f->log_path = testutil_path(f->dir, "qmgr.log");
	assert_int_equal(log_open("tern/qmgr", LOG_TO_FILE, f->log_path), 0);
	char *queue = testutil_path(f->dir, "queue");
	f->st = qmgr_store_open(queue, QMGR_OPEN_RECOVER, &err);
	free(queue);
	assert_non_null(f->st);
	buf_free(&err);
	f->base = event_base_new();
	f->outbox = qmgr_outbox_start(f->base, f->st, f->dir, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	qmgr_outbox_stop(f->outbox);
	event_base_free(f->base);
	qmgr_store_close(f->st);
	log_close();
	testutil_rmtree(f->dir);
	free(f->dir);
	free(f->log_path);
	free(f->socket_path);
	free(f);
	return 0;
}

static void run_loop_for(struct fixture *f, int millis)
{
	struct timeval tv = {millis / 1000, (millis % 1000) * 1000};
	event_base_loopexit(f->base, &tv);
	event_base_dispatch(f->base);
}

/* The log so far; the caller frees it. */
static char *log_text(const struct fixture *f)
{
	struct buf text = BUF_INIT, err = BUF_INIT;
	assert_true(fileio_read_all(f->log_path, &text, &err));
	char *copy = mem_strdup(buf_cstr(&text));
	buf_free(&text);
	buf_free(&err);
	return copy;
}

/* acctd's socket appears a second after qmgr's first attempt. */
static void test_acctd_starting_late_is_not_reported(void **state)
{
	struct fixture *f = *state;
	run_loop_for(f, 1000);
	struct buf err = BUF_INIT;
	int listener = listen_unix(f->socket_path, 4, 0600, (uid_t)-1, (gid_t)-1, &err);
	assert_true(listener >= 0);
	buf_free(&err);
	run_loop_for(f, 1500);
	struct pollfd p = {.fd = listener, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 0), 1); /* qmgr has connected */
	close(listener);
	char *text = log_text(f);
	assert_null(strstr(text, UNREACHABLE_WARNING));
	free(text);
}

/* acctd stays away past the grace: one warning, not one per attempt. */
static void test_acctd_missing_past_the_grace_is_reported_once(void **state)
{
	struct fixture *f = *state;
	run_loop_for(f, 8500);
	char *text = log_text(f);
	char *first = strstr(text, UNREACHABLE_WARNING);
	assert_non_null(first);
	assert_null(strstr(first + 1, UNREACHABLE_WARNING));
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_acctd_starting_late_is_not_reported, setup, teardown),
		cmocka_unit_test_setup_teardown(test_acctd_missing_past_the_grace_is_reported_once, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
