/* tern-sendmail.c: the sendmail-compatible front end (/usr/sbin/sendmail,
 * mailq, newaliases).  It takes the options scripts pass to sendmail,
 * reads the message from standard input and drops it, with its envelope,
 * into the pickup directory as one file in PowerMTA's pickup format
 * (x-sender: and x-receiver: lines, then the message).  It talks to no
 * daemon, so mail is queued even while tern is stopped; the pickup service
 * takes the files from there.
 *
 * As mailq (or with -bp) it lists the queue instead (mailq.c).
 *
 * The file appears atomically: it is written as NAME.tmp, synced and
 * renamed to NAME.msg, so a reader never sees half a message.
 *
 * Installed setgid to the drop group (Postfix's postdrop): the pickup
 * directory is 1730 tern:DROP-GROUP, so we may create files there but not
 * list or read anyone else's.  The group is used for nothing else: the
 * configuration is read with the caller's own rights, and a caller who
 * names another configuration (-C) loses the group for good. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <bsd/stdlib.h>

#include "alias.h"
#include "buf.h"
#include "conf.h"
#include "fileio.h"
#include "log.h"
#include "mailq.h"
#include "mem.h"
#include "sendmail.h"

#define DEFAULT_CONFIG TERN_SYSCONFDIR "/tern/config"

enum mode { MODE_DELIVER, MODE_SMTP, MODE_MAILQ, MODE_NEWALIASES, MODE_FLUSH, MODE_UNSUPPORTED };

struct addresses {
	size_t count;
	char **items;
};

struct options {
	enum mode mode;
	const char *unsupported; /* the option, for MODE_UNSUPPORTED */
	bool extract;            /* -t: recipients from To:, Cc:, Bcc: */
	bool dot_ends;           /* a line "." ends the message (no -i) */
	const char *sender;      /* -f / -r */
	const char *full_name;   /* -F */
	const char *config;      /* -C */
	struct addresses rcpts;
};

static void addresses_add(struct addresses *a, const char *addr)
{
	a->items = mem_reallocarray(a->items, a->count + 1, sizeof *a->items);
	a->items[a->count++] = mem_strdup(addr);
}

static void addresses_free(struct addresses *a)
{
	for (size_t i = 0; i < a->count; i++)
		free(a->items[i]);
	free(a->items);
}

static void __attribute__((noreturn)) fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(status);
}

/* ---- options -------------------------------------------------------------------- */

/* Options that take a value, attached (-fuser) or as the next argument.
 * -o and -b carry theirs attached (-oi, -bs); -q only ever attached. */
static const char options_with_value[] = "ABCFLNORVXfhpre";

static const char *option_value(const char *arg, int *i, int argc, char **argv)
{
	if (arg[2] != '\0')
		return arg + 2;
	if (*i + 1 >= argc)
		fail(EX_USAGE, "option %s needs a value", arg);
	return argv[++*i];
}

static void take_mode(struct options *o, const char *arg, const char *value)
{
	switch (value[0]) {
	case 'm':
		o->mode = MODE_DELIVER;
		return;
	case 'p':
		o->mode = MODE_MAILQ;
		return;
	case 'i':
		o->mode = MODE_NEWALIASES;
		return;
	case 's':
		o->mode = MODE_SMTP;
		return;
	default:
		o->mode = MODE_UNSUPPORTED;
		o->unsupported = arg;
	}
}

static void take_option(struct options *o, const char *arg, int *i, int argc, char **argv)
{
	char letter = arg[1];
	if (letter == 'o') {
		/* -oi as -i; -oem, -odb and the other sendmail options mean nothing here */
		const char *value = option_value(arg, i, argc, argv);
		if (strcmp(value, "i") == 0)
			o->dot_ends = false;
		return;
	}
	if (letter == 'b') {
		take_mode(o, arg, option_value(arg, i, argc, argv));
		return;
	}
	if (letter == 'q') {
		o->mode = MODE_FLUSH;
		return;
	}
	if (letter == 't' || letter == 'i') {
		/* flags may be grouped: -ti */
		for (const char *p = arg + 1; *p; p++)
			if (*p == 't')
				o->extract = true;
			else if (*p == 'i')
				o->dot_ends = false;
		return;
	}
	if (strchr(options_with_value, letter) == NULL)
		return; /* unknown or meaningless here: ignored, as Postfix does */
	const char *value = option_value(arg, i, argc, argv);
	if (letter == 'f' || letter == 'r')
		o->sender = value;
	else if (letter == 'F')
		o->full_name = value;
	else if (letter == 'C')
		o->config = value;
}

static void parse_options(struct options *o, int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (strcmp(name, "mailq") == 0)
		o->mode = MODE_MAILQ;
	else if (strcmp(name, "newaliases") == 0)
		o->mode = MODE_NEWALIASES;
	int i = 1;
	for (; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		take_option(o, argv[i], &i, argc, argv);
	}
	for (; i < argc; i++)
		addresses_add(&o->rcpts, argv[i]);
}

/* ---- addresses ------------------------------------------------------------------ */

/* An envelope address goes on a line of its own: no control characters. */
static void check_address(const char *addr, const char *what)
{
	for (const unsigned char *p = (const unsigned char *)addr; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			fail(EX_DATAERR, "%s contains a control character", what);
}

static void finish_address(struct buf *cur, struct addresses *out)
{
	if (cur->len > 0)
		addresses_add(out, buf_cstr(cur));
	buf_reset(cur);
}

/* Takes the addresses out of an address-list header value (RFC 5322):
 * "Name" <a@b>, c@d (comment), group: e@f; */
static void parse_address_list(const char *value, struct addresses *out)
{
	struct buf cur = BUF_INIT;
	bool quoted = false, angle = false, closed = false;
	int comment = 0;
	for (const char *p = value; *p; p++) {
		char c = *p;
		if (quoted) {
			if (c == '\\' && p[1])
				buf_putc(&cur, *p++);
			else if (c == '"')
				quoted = false;
			buf_putc(&cur, *p);
		} else if (comment > 0 || c == '(') {
			comment += c == '(' ? 1 : c == ')' ? -1 : 0;
		} else if (c == '"') {
			quoted = true;
			buf_putc(&cur, c);
		} else if (c == '<') {
			buf_reset(&cur);
			angle = true;
		} else if (c == '>') {
			angle = false;
			closed = true;
		} else if (c == ':' && !angle) {
			buf_reset(&cur); /* a group's name */
		} else if ((c == ',' || c == ';') && !angle) {
			finish_address(&cur, out);
			closed = false;
		} else if (c != ' ' && c != '\t' && c != '\r' && c != '\n' && !closed) {
			buf_putc(&cur, c);
		}
	}
	finish_address(&cur, out);
	buf_free(&cur);
}

static const char *login_name(void)
{
	const struct passwd *pw = getpwuid(getuid());
	return pw ? pw->pw_name : "nobody";
}

/* ---- the message ---------------------------------------------------------------- */

static void read_message(struct buf *msg)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(STDIN_FILENO, chunk, sizeof chunk);
		if (n == 0)
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail(EX_IOERR, "cannot read the message: %s", strerror(errno));
		buf_append(msg, chunk, (size_t)n);
	}
}

/* Without -i, a line holding only "." ends the message (traditional
 * sendmail); what follows it is not read. */
static void cut_at_dot(struct buf *msg)
{
	const char *data = buf_cstr(msg);
	for (size_t pos = 0; pos < msg->len;) {
		const char *nl = memchr(data + pos, '\n', msg->len - pos);
		size_t end = nl ? (size_t)(nl - data) : msg->len;
		size_t len = end - pos;
		if (len > 0 && data[end - 1] == '\r')
			len--;
		if (len == 1 && data[pos] == '.') {
			buf_truncate(msg, pos);
			return;
		}
		pos = end + 1;
	}
}

static bool header_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* Walks the header section: collects the recipients of To:, Cc: and Bcc:
 * when extract is set, drops Bcc: (with its continuation lines) from the
 * message, and tells whether there is a From: line.  Writes the message as
 * it is to be queued to out; returns false when it has no header at all. */
static bool scan_headers(const struct buf *in, bool extract, struct addresses *rcpts, bool *has_from, struct buf *out)
{
	const char *data = buf_cstr(in);
	size_t pos = 0;
	bool dropping = false, headers = false;
	struct buf value = BUF_INIT;
	*has_from = false;
	while (pos < in->len) {
		const char *nl = memchr(data + pos, '\n', in->len - pos);
		size_t end = nl ? (size_t)(nl - data) + 1 : in->len;
		const char *line = data + pos;
		size_t len = end - pos;
		size_t text = nl ? len - 1 : len;
		if (text > 0 && line[text - 1] == '\r')
			text--;
		if (text == 0)
			break; /* the blank line before the body */
		bool continuation = line[0] == ' ' || line[0] == '\t';
		if (!continuation) {
			if (value.len > 0)
				parse_address_list(buf_cstr(&value), rcpts);
			buf_reset(&value);
			if (memchr(line, ':', text) == NULL)
				break; /* not a header: the body starts without a blank line */
			headers = true;
			bool recipients =
			    header_is(line, text, "to") || header_is(line, text, "cc") || header_is(line, text, "bcc");
			dropping = header_is(line, text, "bcc");
			*has_from = *has_from || header_is(line, text, "from");
			if (extract && recipients) {
				const char *colon = memchr(line, ':', text);
				buf_append(&value, colon + 1, text - (size_t)(colon + 1 - line));
			}
		} else if (value.len > 0) {
			buf_putc(&value, ' ');
			buf_append(&value, line, text);
		}
		if (!dropping)
			buf_append(out, line, len);
		pos = end;
	}
	if (value.len > 0)
		parse_address_list(buf_cstr(&value), rcpts);
	buf_free(&value);
	buf_append(out, data + pos, in->len - pos);
	return headers;
}

/* "From: Full Name <sender>" for a message without one, as Postfix's
 * cleanup adds it; the name is quoted.  A message that had no header at
 * all gets the blank line that separates the header from its body. */
static void add_from(struct buf *env, const char *sender, const char *full_name, bool then_blank)
{
	if (!full_name || !*full_name) {
		buf_printf(env, "From: %s\n", sender);
	} else {
		buf_puts(env, "From: \"");
		for (const char *p = full_name; *p; p++) {
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				continue;
			if (*p == '"' || *p == '\\')
				buf_putc(env, '\\');
			buf_putc(env, *p);
		}
		buf_printf(env, "\" <%s>\n", sender);
	}
	if (then_blank)
		buf_putc(env, '\n');
}

/* ---- the pickup directory --------------------------------------------------------- */

/* The pickup directory: the first argument of "pickup" in the
 * configuration, else <spool>/pickup; and host-name (for -bs), else the
 * system's name.  The file is read with the caller's own rights; a
 * configuration the caller may not read (0640 root:tern, as installed)
 * means the defaults. */
static char *pickup_dir(const char *config, bool named, char **host_name)
{
	bool readable = access(config, R_OK) == 0;
	if (!readable && named)
		fail(EX_CONFIG, "cannot read %s: %s", config, strerror(errno));
	struct conf *conf = readable ? conf_load(config) : conf_load_buffer("(defaults)", "", 0, CONF_NO_INCLUDE);
	if (!conf_ok(conf))
		fail(EX_CONFIG, "%s has errors (see \"ternctl test config\"): mail not queued", config);
	char *dir = conf_pickup_dir(conf);
	*host_name = conf_host_name(conf);
	conf_free(conf);
	return dir;
}

/* Writes NAME.tmp, syncs it and renames it to NAME.msg.  The name holds
 * the time, the pid and 64 random bits, so that no one guesses it. */
bool sendmail_drop_file(const char *dir, const struct buf *envelope, const struct buf *msg, struct buf *err)
{
	uint64_t rnd = ((uint64_t)arc4random() << 32) | arc4random();
	char *base =
	    mem_asprintf("%s/%lld.%ld.%016llx", dir, (long long)time(NULL), (long)getpid(), (unsigned long long)rnd);
	char *tmp = mem_asprintf("%s.tmp", base), *final = mem_asprintf("%s.msg", base);
	bool ok = false;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		buf_printf(err, "cannot create a file in the pickup directory %s: %s", dir, strerror(errno));
		goto out;
	}
	/* The pickup service reads it as the tern user, whatever our umask. */
	bool written = fchmod(fd, 0644) == 0 && fileio_write_all(fd, buf_cstr(envelope), envelope->len) &&
	               fileio_write_all(fd, buf_cstr(msg), msg->len) && fsync(fd) == 0;
	if (close(fd) < 0 || !written) {
		buf_printf(err, "cannot write %s: %s", tmp, strerror(errno));
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, final) < 0) {
		buf_printf(err, "cannot rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		goto out;
	}
	/* best effort: a 1730 directory cannot be opened for reading by
	 * the drop group, and the file itself is already synced */
	fileio_sync_dir(dir);
	ok = true;
out:
	free(base);
	free(tmp);
	free(final);
	return ok;
}

/* ---- main ---------------------------------------------------------------------------- */

/* The configuration for mailq and newaliases: the drop group is given up
 * first, so both run with the caller's own rights (the control socket
 * decides by the caller's groups; only who may write the directory of the
 * aliases file can replace its database).  An unreadable default
 * configuration means the defaults. */
static struct conf *load_config_as_caller(const struct options *o, const char *consequence)
{
	if (setresgid(getgid(), getgid(), getgid()) < 0)
		fail(EX_OSERR, "cannot give up the drop group: %s", strerror(errno));
	const char *config = o->config ? o->config : DEFAULT_CONFIG;
	bool readable = access(config, R_OK) == 0;
	if (!readable && o->config)
		fail(EX_CONFIG, "cannot read %s: %s", config, strerror(errno));
	struct conf *conf = readable ? conf_load(config) : conf_load_buffer("(defaults)", "", 0, CONF_NO_INCLUDE);
	if (!conf_ok(conf))
		fail(EX_CONFIG, "%s has errors (see \"ternctl test config\")%s", config, consequence);
	return conf;
}

static int run_mailq(const struct options *o)
{
	struct conf *conf = load_config_as_caller(o, "");
	int status = mailq_run(conf);
	conf_free(conf);
	return status;
}

/* newaliases, -bi: compiles alias-file (default /etc/aliases) into
 * alias-file.db for the local agent. */
static int newaliases(const struct options *o)
{
	struct conf *conf = load_config_as_caller(o, ": aliases not compiled");
	char *src = mem_strdup(conf_get_string(conf_global(conf), "alias-file"));
	conf_free(conf);
	if (access(src, F_OK) < 0 && errno == ENOENT) {
		/* package scripts run newaliases; no file is nothing to do */
		log_warning("%s does not exist: no aliases", src);
		free(src);
		return EX_OK;
	}
	char *dst = mem_asprintf("%s.db", src);
	struct buf err = BUF_INIT;
	size_t count = 0;
	enum alias_compile_status status = alias_compile(src, dst, &count, &err);
	if (status == ALIAS_BAD_ENTRY)
		fail(EX_DATAERR, "%s", buf_cstr(&err));
	if (status == ALIAS_IO_ERROR)
		fail(EX_CANTCREAT, "%s", buf_cstr(&err));
	printf("%s: %zu aliases\n", dst, count);
	buf_free(&err);
	free(src);
	free(dst);
	return EX_OK;
}

/* The modes other than delivery; returns the exit status. */
static int run_other_mode(const struct options *o)
{
	switch (o->mode) {
	case MODE_MAILQ:
		return run_mailq(o);
	case MODE_NEWALIASES:
		return newaliases(o);
	case MODE_FLUSH:
		return EX_OK; /* tern retries deferred mail by itself */
	default:
		log_error("%s is not supported: tern-sendmail queues a message, or speaks SMTP on standard input (-bs)",
		          o->unsupported);
		return EX_UNAVAILABLE;
	}
}

void sendmail_build_envelope(const char *sender, const char *const *rcpts, size_t count, struct buf *env)
{
	buf_printf(env, "x-sender: %s\n", *sender ? sender : "<>");
	for (size_t i = 0; i < count; i++)
		buf_printf(env, "x-receiver: %s\n", rcpts[i]);
}

int main(int argc, char **argv)
{
	log_open("tern-sendmail", LOG_TO_STDERR, NULL);
	struct options o = {.mode = MODE_DELIVER, .dot_ends = true};
	parse_options(&o, argc, argv);
	if (o.mode != MODE_DELIVER && o.mode != MODE_SMTP)
		return run_other_mode(&o);

	/* The configuration is read without the drop group; another one than
	 * the default costs the group for good. */
	gid_t drop_gid = getegid();
	if (o.config && getuid() != 0 && setresgid(getgid(), getgid(), getgid()) < 0)
		fail(EX_OSERR, "cannot give up the drop group: %s", strerror(errno));
	if (setegid(getgid()) < 0)
		fail(EX_OSERR, "cannot give up the drop group: %s", strerror(errno));
	char *host_name;
	char *dir = pickup_dir(o.config ? o.config : DEFAULT_CONFIG, o.config != NULL, &host_name);
	if (!o.config && setegid(drop_gid) < 0)
		fail(EX_OSERR, "cannot take the drop group back: %s", strerror(errno));
	if (o.mode == MODE_SMTP) {
		int status = sendmail_smtp_session(dir, host_name);
		free(dir);
		free(host_name);
		addresses_free(&o.rcpts);
		return status;
	}
	free(host_name);

	const char *sender = o.sender ? o.sender : login_name();
	if (strcmp(sender, "<>") == 0)
		sender = "";
	check_address(sender, "the sender");

	struct buf in = BUF_INIT, msg = BUF_INIT, env = BUF_INIT;
	read_message(&in);
	if (o.dot_ends)
		cut_at_dot(&in);
	bool has_from;
	bool has_headers = scan_headers(&in, o.extract, &o.rcpts, &has_from, &msg);
	if (o.rcpts.count == 0)
		fail(EX_USAGE, o.extract ? "no recipient addresses found in the message header"
		                         : "no recipients given (name them, or use -t)");
	for (size_t i = 0; i < o.rcpts.count; i++)
		check_address(o.rcpts.items[i], "a recipient");

	sendmail_build_envelope(sender, (const char *const *)o.rcpts.items, o.rcpts.count, &env);
	if (!has_from && *sender)
		add_from(&env, sender, o.full_name, !has_headers && msg.len > 0 && buf_cstr(&msg)[0] != '\n');
	struct buf err = BUF_INIT;
	if (!sendmail_drop_file(dir, &env, &msg, &err))
		fail(EX_TEMPFAIL, "%s", buf_cstr(&err));
	buf_free(&err);

	free(dir);
	buf_free(&in);
	buf_free(&msg);
	buf_free(&env);
	addresses_free(&o.rcpts);
	return EX_OK;
}
