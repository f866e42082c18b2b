/* local_priv.c: the identity a delivery is written with.  The agent stays
 * root (master's keeps-root flag) so that it can write each mailbox as its
 * owner: per delivery it takes the user's uid as effective uid and the
 * mail group as effective gid (so that it may create FILE.lock and the
 * mailbox in a 2775 root:mail /var/mail, as Debian's tools do), and goes
 * back to root afterwards.  Not started as root, it writes as itself. */
#include "local.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static bool as_root;
static gid_t mail_gid;

void local_priv_init(void)
{
	as_root = geteuid() == 0;
	struct group *g = getgrnam("mail");
	mail_gid = g ? g->gr_gid : (gid_t)-1;
}

bool local_priv_root(void)
{
	return as_root;
}

static void self(struct local_ident *id)
{
	struct passwd *pw = getpwuid(geteuid());
	id->uid = geteuid();
	id->gid = getegid();
	snprintf(id->name, sizeof(id->name), "%s", pw ? pw->pw_name : "?");
}

bool local_priv_user(const char *name, struct local_ident *id)
{
	struct passwd *pw = getpwnam(name);
	if (pw == NULL)
		return false;
	/* not root: the user's name (for $user), our own identity */
	id->uid = as_root ? pw->pw_uid : geteuid();
	id->gid = as_root ? pw->pw_gid : getegid();
	snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
	id->check_owner = true;
	return true;
}

void local_priv_for_owner(uid_t owner, struct local_ident *id)
{
	struct passwd *pw = as_root ? getpwuid(owner) : NULL;
	if (pw && owner != 0) {
		id->uid = pw->pw_uid;
		id->gid = pw->pw_gid;
		snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
	} else if (as_root && (pw = getpwnam("nobody")) != NULL) {
		id->uid = pw->pw_uid;
		id->gid = pw->pw_gid;
		snprintf(id->name, sizeof(id->name), "%s", pw->pw_name);
	} else {
		self(id);
	}
	id->check_owner = false;
}

bool local_priv_become(const struct local_ident *id, struct buf *err)
{
	if (!as_root)
		return true;
	gid_t egid = mail_gid != (gid_t)-1 ? mail_gid : id->gid;
	gid_t groups[2] = {id->gid, egid};
	if (setgroups(2, groups) < 0 || setegid(egid) < 0 || seteuid(id->uid) < 0) {
		buf_printf(err, "cannot become %s: %s", id->name, strerror(errno));
		local_priv_restore();
		return false;
	}
	if (geteuid() != id->uid || getegid() != egid) {
		buf_printf(err, "the change to %s did not take", id->name);
		local_priv_restore();
		return false;
	}
	return true;
}

void local_priv_restore(void)
{
	if (!as_root)
		return;
	gid_t none[1] = {0};
	if (seteuid(0) < 0 || setegid(0) < 0 || setgroups(1, none) < 0)
		log_panic("cannot return to root after a delivery: %s", strerror(errno));
}
