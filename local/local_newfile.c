/* local_newfile.c: newfile-plain and newfile-pickup, one new file per
 * message in the destination directory.  The file is written under a
 * hidden temporary name, fsync'd and renamed, so whoever watches the
 * directory sees only whole messages.  newfile-plain holds the message as
 * stored (CRLF line ends); newfile-pickup puts "x-sender:" and
 * "x-receiver:" lines first, the form tern's own pickup directory reads. */
#include "local.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fileio.h"
#include "mem.h"

/* Writes head + body to dir/NAME through dir/.NAME.tmp; the final name in
 * final. */
static bool write_new(const char *dir, const struct buf *head, const struct buf *body, struct buf *final,
                      struct buf *err)
{
	static unsigned seq;
	char name[96];
	snprintf(name, sizeof(name), "%lld.%ld.%u.%08x", (long long)time(NULL), (long)getpid(), ++seq, arc4random());
	char *tmp = mem_asprintf("%s/.%s.tmp", dir, name);
	buf_printf(final, "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	bool ok = fd >= 0 && fileio_write_all(fd, head->data ? head->data : "", head->len) &&
	          fileio_write_all(fd, body->data ? body->data : "", body->len) && fsync(fd) == 0;
	if (!ok)
		buf_printf(err, "cannot write %s: %s", tmp, strerror(errno));
	if (fd >= 0 && close(fd) < 0 && ok) {
		buf_printf(err, "cannot write %s: %s", tmp, strerror(errno));
		ok = false;
	}
	if (ok && rename(tmp, buf_cstr(final)) < 0) {
		buf_printf(err, "cannot rename %s: %s", tmp, strerror(errno));
		ok = false;
	}
	if (!ok && fd >= 0)
		unlink(tmp);
	if (ok)
		fileio_sync_dir(dir);
	free(tmp);
	return ok;
}

void local_newfile_deliver(const char *dir, bool pickup, const struct local_ident *id, const struct local_msg *msg,
                           const char *recipient, struct local_result *r)
{
	struct buf head = BUF_INIT, final = BUF_INIT, err = BUF_INIT;
	if (pickup)
		buf_printf(&head, "x-sender: %s\nx-receiver: %s\n", *msg->sender ? msg->sender : "<>", recipient);
	if (!local_priv_become(id, &err)) {
		local_result_set(r, LOCAL_DEFERRED, "4.3.0", "%s", buf_cstr(&err));
	} else {
		bool ok = write_new(dir, &head, &msg->body, &final, &err);
		local_priv_restore();
		if (ok)
			local_result_set(r, LOCAL_DELIVERED, "2.0.0", "delivered to file %s", buf_cstr(&final));
		else
			local_result_set(r, LOCAL_DEFERRED, "4.2.0", "%s", buf_cstr(&err));
	}
	buf_free(&head);
	buf_free(&final);
	buf_free(&err);
}
