/* ctl_acct.c: the accounting commands.  They go to acctd through master's
 * relay (requests "acctd.VERB"): reopen acct (after logrotate), rotate
 * acct [FILE], and acct tail, which follows the records as acctd writes
 * them and can resume from a sequence number after a disconnect. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acct_fields.h"
#include "ctl_internal.h"
#include "ipc.h"
#include "json.h"
#include "mem.h"
#include "value.h"

#define RELAY_MAX_FRAME (1024 * 1024)
#define REPLY_TIMEOUT_MS 30000

static const struct ipc_spec reply_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_STATUS, IPC_REQUIRED},
    {IPC_ATTR_REASON, IPC_REQUIRED},
    {IPC_ATTR_SEQ, IPC_OPTIONAL},
};

/* A connection to master carrying one relayed request. */
struct acct_link {
	int fd;
	struct buf in, payload;
};

static bool link_open(const struct ctl_options *opts, struct acct_link *l, struct ipc_writer *w, struct buf *frame)
{
	struct buf err = BUF_INIT;
	char *path = ctl_control_socket_path(opts);
	l->fd = ipc_connect(path, &err);
	buf_init(&l->in);
	buf_init(&l->payload);
	bool ok = l->fd >= 0 && ipc_write_end(w, &err) && ipc_send(l->fd, frame, REPLY_TIMEOUT_MS, &err);
	if (!ok) {
		if (l->fd < 0 && (errno == ENOENT || errno == ECONNREFUSED))
			ctl_fail("tern is not running (no master on %s)", path);
		else
			ctl_fail("%s", buf_cstr(&err));
	}
	free(path);
	buf_free(&err);
	return ok;
}

static void link_close(struct acct_link *l)
{
	if (l->fd >= 0)
		close(l->fd);
	buf_free(&l->in);
	buf_free(&l->payload);
}

/* Reads the next frame and its verb; timeout_ms -1 waits for ever. */
static bool link_next(struct acct_link *l, int timeout_ms, struct buf *verb)
{
	struct buf err = BUF_INIT;
	buf_reset(verb);
	bool ok = ipc_receive(l->fd, &l->in, RELAY_MAX_FRAME, timeout_ms, &l->payload, &err) &&
	          ipc_peek_request(l->payload.data, l->payload.len, verb, &err);
	if (!ok)
		ctl_fail("%s", buf_cstr(&err));
	buf_free(&err);
	return ok;
}

/* Reads the "reply" frame; returns the exit status, the reason in reason
 * and acctd's sequence number in *seq. */
static int read_reply(struct acct_link *l, struct buf *reason, int64_t *seq)
{
	struct buf verb = BUF_INIT, err = BUF_INIT;
	int status = CTL_EXIT_FAIL;
	if (link_next(l, REPLY_TIMEOUT_MS, &verb)) {
		struct ipc_msg msg;
		if (strcmp(buf_cstr(&verb), "reply") == 0 &&
		    ipc_decode(l->payload.data, l->payload.len, reply_spec, IPC_SPEC_COUNT(reply_spec), &msg, &err)) {
			buf_puts(reason, ipc_msg_str(&msg, IPC_ATTR_REASON));
			if (seq)
				*seq = ipc_msg_int(&msg, IPC_ATTR_SEQ);
			status = ipc_msg_int(&msg, IPC_ATTR_STATUS) == 0 ? CTL_EXIT_OK : CTL_EXIT_FAIL;
			if (status != CTL_EXIT_OK)
				ctl_fail("%s", buf_cstr(reason));
		} else {
			ctl_fail("unexpected answer \"%s\" %s", buf_cstr(&verb), buf_cstr(&err));
		}
		ipc_msg_free(&msg);
	}
	buf_free(&verb);
	buf_free(&err);
	return status;
}

/* A request with an optional file, answered by one reply and "end". */
static int simple_request(const struct ctl_options *opts, const char *verb, const char *file, const char *done)
{
	struct buf frame = BUF_INIT, reason = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, RELAY_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, verb);
	if (file)
		ipc_put_str(&w, IPC_ATTR_ACCT_FILE, file);
	struct acct_link l;
	int status = link_open(opts, &l, &w, &frame) ? read_reply(&l, &reason, NULL) : CTL_EXIT_FAIL;
	if (status == CTL_EXIT_OK) {
		if (opts->json) {
			struct buf out = BUF_INIT;
			buf_puts(&out, "{\"ok\":true,\"message\":");
			json_append_string(&out, done);
			buf_puts(&out, "}\n");
			fputs(buf_cstr(&out), stdout);
			buf_free(&out);
		} else {
			printf("%s\n", done);
		}
	}
	link_close(&l);
	buf_free(&frame);
	buf_free(&reason);
	return status;
}

int ctl_reopen_acct(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc != 0)
		return ctl_usage_error("reopen acct takes no arguments");
	return simple_request(opts, "acctd.reopen", NULL, "Accounting files reopened.");
}

int ctl_rotate_acct(const struct ctl_options *opts, int argc, char **argv)
{
	if (argc > 1)
		return ctl_usage_error("usage: ternctl rotate acct [FILE]");
	return simple_request(opts, "acctd.rotate", argc ? argv[0] : NULL, "Accounting file rotated.");
}

/* ---- acct tail ------------------------------------------------------------------ */

struct tail_options {
	int64_t since; /* -1: only new records */
	char *types;   /* "d,b" or NULL for all */
	char *fields;  /* "*,dlvTlsProtocol" or NULL for "*" */
};

static int parse_tail_options(int argc, char **argv, struct tail_options *t)
{
	t->since = -1;
	t->types = t->fields = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *value = strchr(a, '=');
		if (value == NULL && i + 1 < argc)
			value = argv[i + 1];
		size_t name_len = strchr(a, '=') ? (size_t)(strchr(a, '=') - a) : strlen(a);
		bool inline_value = strchr(a, '=') != NULL;
		if (value && inline_value)
			value++;
		if (value == NULL)
			return ctl_usage_error("%s needs a value", a);
		uint64_t n;
		const char *why = NULL;
		if (strncmp(a, "--since", name_len) == 0 && name_len == 7) {
			if (!value_parse_uint(value, &n, &why))
				return ctl_usage_error("--since: %s", why);
			t->since = (int64_t)n;
		} else if (strncmp(a, "--type", name_len) == 0 && name_len == 6) {
			t->types = (char *)value;
		} else if (strncmp(a, "--fields", name_len) == 0 && name_len == 8) {
			t->fields = (char *)value;
		} else {
			return ctl_usage_error("unknown option \"%s\" for acct tail", a);
		}
		if (!inline_value)
			i++;
	}
	return CTL_EXIT_OK;
}

/* Splits a comma list into trimmed items (the strings point into copy). */
static size_t split_list(char *copy, char **items, size_t max)
{
	size_t n = 0;
	for (char *tok = strtok(copy, ","); tok && n < max; tok = strtok(NULL, ",")) {
		while (*tok == ' ')
			tok++;
		items[n++] = tok;
	}
	return n;
}

/* The columns to show: every requested type with the requested fields. */
static bool build_layout(const struct tail_options *t, struct acct_layout *l)
{
	static const char *const all_types = "d,b,t,tq,r";
	char *types = mem_strdup(t->types ? t->types : all_types);
	char *fields = mem_strdup(t->fields ? t->fields : "*");
	char *type_items[16], *field_items[64];
	size_t ntypes = split_list(types, type_items, 16), nfields = split_list(fields, field_items, 64);
	struct buf err = BUF_INIT;
	bool ok = ntypes > 0;
	acct_layout_init(l);
	for (size_t i = 0; ok && i < ntypes; i++) {
		enum acct_type type;
		if (!acct_type_parse(type_items[i], &type)) {
			ctl_usage_error("unknown record type \"%s\"", type_items[i]);
			ok = false;
		} else if (!acct_layout_add_type(l, type, (const char *const *)field_items, nfields, &err)) {
			ctl_usage_error("%s", buf_cstr(&err));
			ok = false;
		}
	}
	free(types);
	free(fields);
	buf_free(&err);
	return ok;
}

/* Prints one record frame; false when the frame is not a record. */
static bool print_record(const struct acct_link *l, const struct acct_layout *layout, bool json, struct buf *out)
{
	struct ipc_msg rec;
	struct buf err = BUF_INIT;
	bool ok = ipc_decode(l->payload.data, l->payload.len, acct_record_spec, acct_record_spec_count, &rec, &err);
	enum acct_type type;
	if (ok && acct_type_parse(ipc_msg_str(&rec, IPC_ATTR_RECORD_TYPE), &type) && acct_layout_holds(layout, type)) {
		struct acct_format fmt = {.iso_times = true, .user_string = NULL};
		buf_reset(out);
		if (json)
			acct_layout_json(layout, type, &rec, &fmt, out);
		else
			acct_layout_row(layout, type, &rec, &fmt, out);
		fwrite(out->data, 1, out->len, stdout);
		fflush(stdout);
	} else if (!ok) {
		ctl_fail("bad record from acctd: %s", buf_cstr(&err));
	}
	ipc_msg_free(&rec);
	buf_free(&err);
	return ok;
}

int ctl_acct_tail(const struct ctl_options *opts, int argc, char **argv)
{
	struct tail_options t;
	int status = parse_tail_options(argc, argv, &t);
	if (status != CTL_EXIT_OK)
		return status;
	struct acct_layout layout;
	if (!build_layout(&t, &layout)) {
		acct_layout_free(&layout);
		return CTL_EXIT_USAGE;
	}
	struct buf frame = BUF_INIT, reason = BUF_INIT, verb = BUF_INIT, out = BUF_INIT;
	struct ipc_writer w;
	ipc_write_begin(&w, &frame, RELAY_MAX_FRAME);
	ipc_put_str(&w, IPC_ATTR_REQUEST, "acctd.tail");
	if (t.since >= 0)
		ipc_put_int(&w, IPC_ATTR_SEQ, t.since);
	struct acct_link l;
	int64_t seq = 0;
	status = link_open(opts, &l, &w, &frame) ? read_reply(&l, &reason, &seq) : CTL_EXIT_FAIL;
	if (status == CTL_EXIT_OK) {
		/* The reason tells about records only found in the files now. */
		if (reason.len)
			fprintf(stderr, "ternctl: %s\n", buf_cstr(&reason));
		if (!opts->json) {
			acct_layout_header(&layout, &out);
			fwrite(out.data, 1, out.len, stdout);
			fflush(stdout);
		}
		while (link_next(&l, -1, &verb) && strcmp(buf_cstr(&verb), "record") == 0 &&
		       print_record(&l, &layout, opts->json, &out))
			;
		status = CTL_EXIT_FAIL; /* the stream only ends when acctd goes away */
	}
	link_close(&l);
	acct_layout_free(&layout);
	buf_free(&frame);
	buf_free(&reason);
	buf_free(&verb);
	buf_free(&out);
	return status;
}
