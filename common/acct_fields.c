/* acct_fields.c: record types, the field table and file layouts (see
 * acct_fields.h).  The default lists of d, b and t are PowerMTA's (checked
 * against real files); tq and r follow the fields seen in real PowerMTA
 * headers, in the order documented in doc/accounting.md. */
#include "acct_fields.h"
#include "json.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <time.h>

#include "csv.h"
#include "mem.h"

/* ---- record types ------------------------------------------------------------ */

static const char *const type_names[ACCT_TYPE_COUNT][2] = {
    [ACCT_D] = {"d", "delivery"},          [ACCT_B] = {"b", "bounce"},          [ACCT_T] = {"t", "transient"},
    [ACCT_TQ] = {"tq", "transient-queue"}, [ACCT_R] = {"r", "receipt"},         [ACCT_F] = {"f", "feedback-loop"},
    [ACCT_RB] = {"rb", "remote-bounce"},   [ACCT_RS] = {"rs", "remote-status"},
};

/* Names compared from their first letter on only when it matches: qmgr
 * asks for every record it makes. */
static bool same_name(const char *name, const char *known)
{
	return tolower((unsigned char)name[0]) == known[0] && strcasecmp(name, known) == 0;
}

bool acct_type_parse(const char *name, enum acct_type *type)
{
	for (int t = 0; t < ACCT_TYPE_COUNT; t++) {
		if (same_name(name, type_names[t][0]) || same_name(name, type_names[t][1])) {
			*type = (enum acct_type)t;
			return true;
		}
	}
	return false;
}

const char *acct_type_name(enum acct_type type)
{
	return type_names[type][0];
}

unsigned acct_type_mask(char *const *names, size_t count)
{
	unsigned bits = 0;
	for (size_t i = 0; i < count; i++) {
		enum acct_type t;
		if (acct_type_parse(names[i], &t))
			bits |= 1u << t;
	}
	return bits;
}

/* ---- fields ---------------------------------------------------------------------- */

/* How a column gets its value. */
enum field_source {
	FROM_TEXT,           /* a string attribute */
	FROM_NUMBER,         /* an integer attribute */
	FROM_TIME,           /* an integer attribute holding Unix seconds */
	FROM_TYPE,           /* the record type */
	FROM_USER_STRING,    /* the file's user-string */
	FROM_SECONDS_QUEUED, /* the attribute, else timeLogged - timeQueued */
	FROM_NOTHING,        /* a field tern never fills (legacy or f/rb/rs only) */
};

struct field {
	const char *name;
	enum field_source source;
	int attr; /* enum ipc_attr, or -1 */
};

#define NO_ATTR (-1)

static const struct field fields[] = {
    {"type", FROM_TYPE, NO_ATTR},
    {"timeLogged", FROM_TIME, IPC_ATTR_ACCT_TIME_LOGGED},
    {"timeQueued", FROM_TIME, IPC_ATTR_ACCT_TIME_QUEUED},
    {"timeFirstAttempt", FROM_TIME, IPC_ATTR_ACCT_TIME_FIRST_ATTEMPT},
    {"totalSecondsQueued", FROM_SECONDS_QUEUED, IPC_ATTR_ACCT_TOTAL_SECONDS_QUEUED},
    {"timeImprinted", FROM_NOTHING, NO_ATTR},
    {"orig", FROM_TEXT, IPC_ATTR_ACCT_ORIG},
    {"rcpt", FROM_TEXT, IPC_ATTR_ACCT_RCPT},
    {"orcpt", FROM_TEXT, IPC_ATTR_ORCPT},
    {"dsnAction", FROM_TEXT, IPC_ATTR_ACCT_DSN_ACTION},
    {"dsnStatus", FROM_TEXT, IPC_ATTR_ACCT_DSN_STATUS},
    {"dsnDiag", FROM_TEXT, IPC_ATTR_ACCT_DSN_DIAG},
    {"dsnMta", FROM_TEXT, IPC_ATTR_ACCT_DSN_MTA},
    {"dsnReportingMta", FROM_NOTHING, NO_ATTR},
    {"bounceCat", FROM_TEXT, IPC_ATTR_ACCT_BOUNCE_CAT},
    {"srcType", FROM_TEXT, IPC_ATTR_ACCT_SRC_TYPE},
    {"srcMta", FROM_TEXT, IPC_ATTR_ACCT_SRC_MTA},
    {"dlvType", FROM_TEXT, IPC_ATTR_ACCT_DLV_TYPE},
    {"dlvSourceIp", FROM_TEXT, IPC_ATTR_ACCT_DLV_SOURCE_IP},
    {"dlvDestinationIp", FROM_TEXT, IPC_ATTR_ACCT_DLV_DESTINATION_IP},
    {"dlvEsmtpAvailable", FROM_TEXT, IPC_ATTR_ACCT_DLV_ESMTP_AVAILABLE},
    {"dlvSize", FROM_NUMBER, IPC_ATTR_ACCT_DLV_SIZE},
    {"dlvTlsProtocol", FROM_TEXT, IPC_ATTR_ACCT_DLV_TLS_PROTOCOL},
    {"dlvTlsCipher", FROM_TEXT, IPC_ATTR_ACCT_DLV_TLS_CIPHER},
    {"vmta", FROM_TEXT, IPC_ATTR_VMTA},
    {"vmtaPool", FROM_TEXT, IPC_ATTR_ACCT_VMTA_POOL},
    {"jobId", FROM_TEXT, IPC_ATTR_ACCT_JOB_ID},
    {"envId", FROM_TEXT, IPC_ATTR_ACCT_ENV_ID},
    {"queue", FROM_TEXT, IPC_ATTR_QUEUE},
    {"userString", FROM_USER_STRING, NO_ATTR},
    {"rcvSourceIp", FROM_TEXT, IPC_ATTR_ACCT_RCV_SOURCE_IP},
    {"rcvSmtpUser", FROM_TEXT, IPC_ATTR_ACCT_RCV_SMTP_USER},
    {"format", FROM_NOTHING, NO_ATTR},
    {"feedbackType", FROM_NOTHING, NO_ATTR},
    {"userAgent", FROM_NOTHING, NO_ATTR},
    {"reportingMta", FROM_NOTHING, NO_ATTR},
    {"reportedDomain", FROM_NOTHING, NO_ATTR},
    {"repSourceIp", FROM_NOTHING, NO_ATTR},
};

#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

size_t acct_field_count(void)
{
	return NFIELDS;
}

const char *acct_field_name(size_t i)
{
	return i < NFIELDS ? fields[i].name : NULL;
}

static int field_index(const char *name)
{
	for (size_t i = 0; i < NFIELDS; i++)
		if (strcasecmp(name, fields[i].name) == 0)
			return (int)i;
	return -1;
}

const char *acct_field_canonical(const char *name)
{
	int i = field_index(name);
	return i < 0 ? NULL : fields[i].name;
}

bool acct_field_is_header(const char *name)
{
	if (strncasecmp(name, "header_", 7) != 0 || name[7] == '\0')
		return false;
	for (const char *p = name + 7; *p; p++)
		if (*p <= ' ' || *p == ':' || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

/* What "*" stands for, type by type. */
static const char *const dbt_defaults[] = {
    "type",
    "timeLogged",
    "timeQueued",
    "orig",
    "rcpt",
    "orcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "srcType",
    "srcMta",
    "dlvType",
    "dlvSourceIp",
    "dlvDestinationIp",
    "dlvEsmtpAvailable",
    "dlvSize",
    "vmta",
    "jobId",
    "envId",
    "queue",
    "vmtaPool",
    NULL,
};
static const char *const tq_defaults[] = {"type",        "timeLogged",       "dsnStatus", "dsnDiag", "dsnMta",
                                          "dlvSourceIp", "dlvDestinationIp", "vmta",      "queue",   NULL};
static const char *const r_defaults[] = {"type",        "timeLogged",  "orig", "rcpt",  "orcpt", "srcType", "srcMta",
                                         "rcvSourceIp", "rcvSmtpUser", "vmta", "jobId", "envId", NULL};
static const char *const f_defaults[] = {
    "type",           "timeLogged",  "format", "feedbackType", "userAgent", "reportingMta",
    "reportedDomain", "repSourceIp", "orig",   "rcpt",         NULL};
static const char *const remote_defaults[] = {
    "type",    "timeLogged", "orig",      "rcpt",    "dsnAction",       "dsnStatus",
    "dsnDiag", "dsnMta",     "bounceCat", "srcType", "dsnReportingMta", NULL};

static const char *const *const defaults[ACCT_TYPE_COUNT] = {
    [ACCT_D] = dbt_defaults, [ACCT_B] = dbt_defaults, [ACCT_T] = dbt_defaults,     [ACCT_TQ] = tq_defaults,
    [ACCT_R] = r_defaults,   [ACCT_F] = f_defaults,   [ACCT_RB] = remote_defaults, [ACCT_RS] = remote_defaults,
};

/* Every attribute a record may carry. */
const struct ipc_spec acct_record_spec[] = {
    {IPC_ATTR_REQUEST, IPC_REQUIRED},
    {IPC_ATTR_SEQ, IPC_REQUIRED},
    {IPC_ATTR_RECORD_TYPE, IPC_REQUIRED},
    {IPC_ATTR_ACCT_TIME_LOGGED, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_TIME_QUEUED, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_TIME_FIRST_ATTEMPT, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_TOTAL_SECONDS_QUEUED, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_ORIG, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_RCPT, IPC_OPTIONAL},
    {IPC_ATTR_ORCPT, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DSN_ACTION, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DSN_STATUS, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DSN_DIAG, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DSN_MTA, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_BOUNCE_CAT, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_SRC_TYPE, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_SRC_MTA, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_TYPE, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_SOURCE_IP, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_DESTINATION_IP, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_ESMTP_AVAILABLE, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_SIZE, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_TLS_PROTOCOL, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_DLV_TLS_CIPHER, IPC_OPTIONAL},
    {IPC_ATTR_VMTA, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_VMTA_POOL, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_JOB_ID, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_ENV_ID, IPC_OPTIONAL},
    {IPC_ATTR_QUEUE, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_RCV_SOURCE_IP, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_RCV_SMTP_USER, IPC_OPTIONAL},
    {IPC_ATTR_ACCT_HEADERS, IPC_OPTIONAL},
};
const size_t acct_record_spec_count = sizeof(acct_record_spec) / sizeof(acct_record_spec[0]);

/* ---- one type's columns --------------------------------------------------------- */

struct selection {
	struct acct_column *cols;
	size_t count;
};

static ssize_t selection_find(const struct selection *s, const char *name)
{
	for (size_t i = 0; i < s->count; i++)
		if (strcasecmp(s->cols[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static void selection_add(struct selection *s, const char *name, int field)
{
	if (selection_find(s, name) >= 0)
		return;
	s->cols = mem_reallocarray(s->cols, s->count + 1, sizeof(*s->cols));
	s->cols[s->count++] = (struct acct_column){mem_strdup(name), field};
}

static void selection_remove(struct selection *s, const char *name)
{
	ssize_t i = selection_find(s, name);
	if (i < 0)
		return;
	free(s->cols[i].name);
	memmove(&s->cols[i], &s->cols[i + 1], (s->count - (size_t)i - 1) * sizeof(*s->cols));
	s->count--;
}

static void selection_free(struct selection *s)
{
	for (size_t i = 0; i < s->count; i++)
		free(s->cols[i].name);
	free(s->cols);
}

/* "type" leads whatever the list says: PowerMTA does not let it move. */
static void selection_type_first(struct selection *s)
{
	selection_remove(s, "type");
	s->cols = mem_reallocarray(s->cols, s->count + 1, sizeof(*s->cols));
	memmove(&s->cols[1], &s->cols[0], s->count * sizeof(*s->cols));
	s->cols[0] = (struct acct_column){mem_strdup("type"), field_index("type")};
	s->count++;
}

static bool selection_apply(struct selection *s, enum acct_type type, const char *item, struct buf *err)
{
	if (strcmp(item, "*") == 0) {
		for (const char *const *d = defaults[type]; *d; d++)
			selection_add(s, *d, field_index(*d));
		return true;
	}
	bool remove = item[0] == '!';
	const char *name = remove ? item + 1 : item;
	int field = field_index(name);
	if (field < 0 && !acct_field_is_header(name)) {
		buf_printf(err, "unknown accounting field \"%s\"", name);
		return false;
	}
	/* Fields in tern's spelling; headers as written, after "header_". */
	char *written = field >= 0 ? mem_strdup(fields[field].name) : mem_asprintf("header_%s", name + 7);
	if (remove)
		selection_remove(s, written);
	else
		selection_add(s, written, field);
	free(written);
	return true;
}

static bool select_type(struct selection *s, enum acct_type type, const char *const *items, size_t nitems,
                        struct buf *err)
{
	static const char *const star[] = {"*"};
	if (nitems == 0) {
		items = star;
		nitems = 1;
	}
	for (size_t i = 0; i < nitems; i++)
		if (!selection_apply(s, type, items[i], err))
			return false;
	selection_type_first(s);
	return true;
}

/* ---- layouts ---------------------------------------------------------------------- */

void acct_layout_init(struct acct_layout *l)
{
	memset(l, 0, sizeof(*l));
}

void acct_layout_free(struct acct_layout *l)
{
	for (size_t i = 0; i < l->ncols; i++)
		free(l->cols[i].name);
	free(l->cols);
	for (int t = 0; t < ACCT_TYPE_COUNT; t++)
		free(l->used[t]);
	memset(l, 0, sizeof(*l));
}

bool acct_layout_holds(const struct acct_layout *l, enum acct_type type)
{
	return (l->types & (1u << type)) != 0;
}

static size_t layout_column(struct acct_layout *l, const struct acct_column *col)
{
	for (size_t i = 0; i < l->ncols; i++)
		if (strcasecmp(l->cols[i].name, col->name) == 0)
			return i;
	l->cols = mem_reallocarray(l->cols, l->ncols + 1, sizeof(*l->cols));
	l->cols[l->ncols] = (struct acct_column){mem_strdup(col->name), col->field};
	for (int t = 0; t < ACCT_TYPE_COUNT; t++) {
		if (l->used[t]) {
			l->used[t] = mem_reallocarray(l->used[t], l->ncols + 1, sizeof(bool));
			l->used[t][l->ncols] = false;
		}
	}
	return l->ncols++;
}

bool acct_layout_add_type(struct acct_layout *l, enum acct_type type, const char *const *items, size_t nitems,
                          struct buf *err)
{
	if (acct_layout_holds(l, type)) {
		buf_printf(err, "record type %s is listed twice", acct_type_name(type));
		return false;
	}
	struct selection s = {NULL, 0};
	if (!select_type(&s, type, items, nitems, err)) {
		selection_free(&s);
		return false;
	}
	size_t *at = mem_calloc(s.count, sizeof(size_t));
	for (size_t i = 0; i < s.count; i++)
		at[i] = layout_column(l, &s.cols[i]);
	/* Sized after the union grew, so it covers this type's new columns. */
	l->used[type] = mem_calloc(l->ncols, sizeof(bool));
	for (size_t i = 0; i < s.count; i++)
		l->used[type][at[i]] = true;
	free(at);
	l->types |= 1u << type;
	selection_free(&s);
	return true;
}

void acct_layout_header(const struct acct_layout *l, struct buf *out)
{
	for (size_t i = 0; i < l->ncols; i++)
		csv_put_field(out, i == 0, l->cols[i].name, strlen(l->cols[i].name));
	csv_end_row(out);
}

void acct_layout_header_names(const struct acct_layout *l, struct buf *out)
{
	for (size_t i = 0; i < l->ncols; i++) {
		if (l->cols[i].field >= 0)
			continue;
		if (out->len)
			buf_putc(out, ',');
		buf_puts(out, l->cols[i].name + 7);
	}
}

void acct_format_time(int64_t seconds, bool iso, struct buf *out)
{
	if (!iso) {
		buf_printf(out, "%lld", (long long)seconds);
		return;
	}
	time_t t = (time_t)seconds;
	struct tm tm;
	char text[64];
	if (localtime_r(&t, &tm) == NULL || strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S%z", &tm) == 0) {
		buf_printf(out, "%lld", (long long)seconds);
		return;
	}
	buf_puts(out, text);
}

/* The line after the one starting at p, or NULL at the end. */
static const char *next_line(const char *p)
{
	const char *nl = strchr(p, '\n');
	return nl ? nl + 1 : NULL;
}

static size_t line_length(const char *p)
{
	size_t n = strcspn(p, "\n");
	return n > 0 && p[n - 1] == '\r' ? n - 1 : n;
}

/* Appends a (continuation) line's text with its leading blanks squeezed
 * into one space, as RFC 5322 unfolding does. */
static void append_unfolded(struct buf *out, const char *p, size_t len, bool continuation)
{
	size_t skip = 0;
	while (skip < len && (p[skip] == ' ' || p[skip] == '\t'))
		skip++;
	if (continuation && out->len)
		buf_putc(out, ' ');
	buf_append(out, p + skip, len - skip);
}

bool acct_header_value(const char *headers, const char *name, struct buf *out)
{
	size_t name_len = strlen(name);
	for (const char *p = headers; p && *p; p = next_line(p)) {
		size_t len = line_length(p);
		if (len <= name_len || p[name_len] != ':' || strncasecmp(p, name, name_len) != 0)
			continue;
		append_unfolded(out, p + name_len + 1, len - name_len - 1, false);
		for (p = next_line(p); p && (*p == ' ' || *p == '\t'); p = next_line(p))
			append_unfolded(out, p, line_length(p), true);
		return true;
	}
	return false;
}

/* ---- rows ----------------------------------------------------------------------------- */

static void field_value(const struct field *f, enum acct_type type, const struct ipc_msg *rec,
                        const struct acct_format *fmt, struct buf *out)
{
	bool has = f->attr != NO_ATTR && ipc_msg_has(rec, (enum ipc_attr)f->attr);
	switch (f->source) {
	case FROM_TEXT:
		if (has)
			buf_puts(out, ipc_msg_str(rec, (enum ipc_attr)f->attr));
		break;
	case FROM_NUMBER:
		if (has)
			buf_printf(out, "%lld", (long long)ipc_msg_int(rec, (enum ipc_attr)f->attr));
		break;
	case FROM_TIME:
		if (has)
			acct_format_time(ipc_msg_int(rec, (enum ipc_attr)f->attr), fmt->iso_times, out);
		break;
	case FROM_TYPE:
		buf_puts(out, acct_type_name(type));
		break;
	case FROM_USER_STRING:
		if (fmt->user_string)
			buf_puts(out, fmt->user_string);
		break;
	case FROM_SECONDS_QUEUED:
		if (has)
			buf_printf(out, "%lld", (long long)ipc_msg_int(rec, (enum ipc_attr)f->attr));
		else if (ipc_msg_has(rec, IPC_ATTR_ACCT_TIME_LOGGED) && ipc_msg_has(rec, IPC_ATTR_ACCT_TIME_QUEUED))
			buf_printf(out, "%lld",
			           (long long)(ipc_msg_int(rec, IPC_ATTR_ACCT_TIME_LOGGED) -
			                       ipc_msg_int(rec, IPC_ATTR_ACCT_TIME_QUEUED)));
		break;
	case FROM_NOTHING:
		break;
	}
}

static void column_value(const struct acct_column *col, enum acct_type type, const struct ipc_msg *rec,
                         const struct acct_format *fmt, struct buf *out)
{
	if (col->field >= 0) {
		field_value(&fields[col->field], type, rec, fmt, out);
		return;
	}
	const char *headers = ipc_msg_str(rec, IPC_ATTR_ACCT_HEADERS);
	if (headers)
		acct_header_value(headers, col->name + 7, out);
}

void acct_layout_json(const struct acct_layout *l, enum acct_type type, const struct ipc_msg *rec,
                      const struct acct_format *fmt, struct buf *out)
{
	struct buf value = BUF_INIT;
	buf_putc(out, '{');
	bool first = true;
	for (size_t i = 0; i < l->ncols; i++) {
		if (!l->used[type] || !l->used[type][i])
			continue;
		buf_reset(&value);
		column_value(&l->cols[i], type, rec, fmt, &value);
		if (!first)
			buf_putc(out, ',');
		first = false;
		json_append_string(out, l->cols[i].name);
		buf_putc(out, ':');
		json_append_string(out, buf_cstr(&value));
	}
	buf_puts(out, "}\n");
	buf_free(&value);
}

void acct_layout_row(const struct acct_layout *l, enum acct_type type, const struct ipc_msg *rec,
                     const struct acct_format *fmt, struct buf *out)
{
	struct buf value = BUF_INIT;
	for (size_t i = 0; i < l->ncols; i++) {
		buf_reset(&value);
		if (l->used[type] && l->used[type][i])
			column_value(&l->cols[i], type, rec, fmt, &value);
		csv_put_field(out, i == 0, buf_cstr(&value), value.len);
	}
	csv_end_row(out);
	buf_free(&value);
}
