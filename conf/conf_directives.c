/* conf_directives.c: the language itself: every directive tern knows (the
 * PowerMTA directives it is compatible with), the block tags, the record
 * types and fields of <acct-file>, and the lookups and "did you mean"
 * suggestions over them.
 *
 * The directive table is sorted by name (a unit test checks it), so that a
 * lookup is a binary search and listings come out in alphabetical order.
 * Defaults are written as a user would write them and are parsed by the
 * same code as user values.  CONF_SUPPORTED marks what something in tern
 * acts on today; CONF_PENDING what is recognised but not yet acted on. */
#include "conf_internal.h"

#include "acct_fields.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define G CONF_SCOPE(CONF_GLOBAL)
#define S CONF_SCOPE(CONF_SOURCE)
#define D CONF_SCOPE(CONF_DOMAIN)
#define V CONF_SCOPE(CONF_VMTA)
#define P CONF_SCOPE(CONF_VMTA_POOL)
#define L CONF_SCOPE(CONF_LISTENER)
#define U CONF_SCOPE(CONF_SMTP_USER)
#define A CONF_SCOPE(CONF_ACCT_FILE)
#define SP CONF_SCOPE(CONF_SPOOL)
#define DNS CONF_SCOPE(CONF_DNS)
#define BC CONF_SCOPE(CONF_BOUNCE_CATEGORIES)
#define SPL CONF_SCOPE(CONF_SMTP_PATTERN_LIST)
#define PL CONF_SCOPE(CONF_PATTERN_LIST)
#define ANYWHERE (CONF_SCOPE(CONF_KIND_COUNT) - 1)

static const char *const dh_lengths[] = {"1024", "2048", "4096", NULL};
static const char *const auth_methods[] = {"password", "system", "certificate", NULL};
static const char *const add_date[] = {"no", "yes", "override", NULL};
static const char *const date_times[] = {"reception", "delivery", NULL};
static const char *const dsn_returns[] = {"headers", "full", "system", NULL};
static const char *const delivery_types[] = {"smtp", "pipe", "file", "discard", "http-delivery", NULL};
static const char *const dkim_signs[] = {"no", "yes", "if-x-dkim-options-present", NULL};
static const char *const dkim_algorithms[] = {"rsa-sha256", "rsa-sha1", "ed25519-sha256", NULL};
static const char *const canons[] = {"relaxed", "simple", NULL};
static const char *const dsn_formats[] = {"standard", "plain-text", NULL};
static const char *const file_formats[] = {"newfile-plain", "newfile-pickup", "append-mbox", NULL};

const struct conf_directive conf_directives[] = {
    {.name = "*", .type = CONF_T_PATTERN_RULE, .scopes = PL, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "/regex/", .type = CONF_T_REGEX_CATEGORY, .scopes = BC, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "accept-invalid-recipients", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "add-date-header",
     .type = CONF_T_ENUM,
     .scopes = S,
     .def = "no",
     .flags = CONF_SUPPORTED,
     .words = add_date},
    {.name = "add-message-id-header", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "add-received-header", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "alias-file", .type = CONF_T_PATH, .scopes = G, .def = "/etc/aliases", .flags = CONF_SUPPORTED},
    {.name = "allow-auth", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "allow-cancel-during-transfer", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_PENDING},
    {.name = "allow-chunking", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "allow-mailmerge", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "allow-priority-interruption", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_PENDING},
    {.name = "allow-priority-interruption-during-transfer",
     .type = CONF_T_BOOL,
     .scopes = D,
     .def = "no",
     .flags = CONF_PENDING},
    {.name = "allow-smtputf8", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "allow-starttls", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "allow-unencrypted-plain-auth", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "always-allow-api-submission", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "always-allow-relaying", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "assume-delivery-upon-data-termination-timeout",
     .type = CONF_T_BOOL,
     .scopes = D,
     .def = "no",
     .flags = CONF_PENDING},
    {.name = "auth-password", .type = CONF_T_SECRET, .scopes = D, .flags = CONF_PENDING},
    {.name = "auth-username", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "authentication-method",
     .type = CONF_T_ENUM,
     .scopes = U,
     .def = "password",
     .flags = CONF_SUPPORTED,
     .words = auth_methods},
    {.name = "auto-qualify-domain", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_PENDING},
    {.name = "await-slot",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "no",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-await-slot"},
    {.name = "backoff-max-connect-rate", .type = CONF_T_RATE, .scopes = D, .flags = CONF_PENDING},
    {.name = "backoff-max-data-volume-rate", .type = CONF_T_VOLUME_RATE, .scopes = D, .flags = CONF_PENDING},
    {.name = "backoff-max-msg-rate", .type = CONF_T_RATE, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "backoff-max-smtp-out", .type = CONF_T_UINT, .scopes = D, .def = "20", .flags = CONF_SUPPORTED},
    {.name = "backoff-notify", .type = CONF_T_LIST, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "backoff-reroute-to-virtual-mta", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "backoff-retry-after", .type = CONF_T_INTERVAL_LIST, .scopes = D, .def = "1h", .flags = CONF_SUPPORTED},
    {.name = "backoff-to-normal-after",
     .type = CONF_T_INTERVAL_NEVER,
     .scopes = D,
     .def = "never",
     .flags = CONF_SUPPORTED},
    {.name = "backoff-to-normal-after-delivery",
     .type = CONF_T_BOOL,
     .scopes = D,
     .def = "no",
     .flags = CONF_SUPPORTED},
    {.name = "backoff-upon-all-sources-disabled", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "bcc-upon-delivery", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "bounce-after", .type = CONF_T_INTERVAL, .scopes = D, .def = "4d12h", .flags = CONF_SUPPORTED},
    {.name = "bounce-upon-5xx-greeting", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "bounce-upon-no-mx", .type = CONF_T_BOOL_OR_INTERVAL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "bounce-upon-pix-transfer-failure", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "bounce-upon-transfer-failure", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "check-dkim-inbound", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "check-iprev-inbound", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "check-spf-inbound", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "check-spf-outbound", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "cold-virtual-mta", .type = CONF_T_BOOL, .scopes = V | P, .def = "no", .flags = CONF_PENDING},
    {.name = "command", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "connect-timeout", .type = CONF_T_INTERVAL, .scopes = D, .def = "2m", .flags = CONF_SUPPORTED},
    {.name = "connection-idle-timeout",
     .type = CONF_T_INTERVAL,
     .scopes = D,
     .def = "0",
     .flags = CONF_SUPPORTED,
     .max = 600},
    {.name = "count-moved-records", .type = CONF_T_BOOL, .scopes = A, .def = "no", .flags = CONF_PENDING},
    {.name = "data-send-timeout", .type = CONF_T_INTERVAL, .scopes = D, .def = "3m", .flags = CONF_SUPPORTED},
    {.name = "date-header-time",
     .type = CONF_T_ENUM,
     .scopes = S,
     .def = "reception",
     .flags = CONF_PENDING,
     .words = date_times},
    {.name = "default-smtp-port", .type = CONF_T_UINT, .scopes = D, .def = "25", .flags = CONF_SUPPORTED, .max = 65535},
    {.name = "default-virtual-mta", .type = CONF_T_STRING, .scopes = S, .flags = CONF_SUPPORTED},
    {.name = "delete-after", .type = CONF_T_INTERVAL_NEVER, .scopes = A, .def = "8d", .flags = CONF_SUPPORTED},
    {.name = "delete-file-holders", .type = CONF_T_BOOL, .scopes = SP, .def = "no", .flags = CONF_PENDING},
    {.name = "deliver-local-dsn", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_PENDING},
    {.name = "deliver-only", .type = CONF_T_BOOL, .scopes = SP, .def = "no", .flags = CONF_PENDING},
    {.name = "disable-acct-records", .type = CONF_T_RECORDS, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "disable-mx-rollup", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "disabled-source-ip-notify", .type = CONF_T_LIST, .scopes = D, .flags = CONF_PENDING},
    {.name = "discard-as-bounce", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "disconnect-on-transient-error", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "dkim-algorithm",
     .type = CONF_T_ENUM,
     .scopes = D,
     .def = "rsa-sha256",
     .flags = CONF_PENDING,
     .words = dkim_algorithms},
    {.name = "dkim-body-canon",
     .type = CONF_T_ENUM,
     .scopes = D,
     .def = "relaxed",
     .flags = CONF_PENDING,
     .words = canons},
    {.name = "dkim-expire-after", .type = CONF_T_INTERVAL_NEVER, .scopes = D, .def = "never", .flags = CONF_PENDING},
    {.name = "dkim-headers-canon",
     .type = CONF_T_ENUM,
     .scopes = D,
     .def = "relaxed",
     .flags = CONF_PENDING,
     .words = canons},
    {.name = "dkim-identity", .type = CONF_T_STRING, .scopes = D, .def = "sender-or-from", .flags = CONF_PENDING},
    {.name = "dkim-sign", .type = CONF_T_ENUM, .scopes = D, .def = "no", .flags = CONF_PENDING, .words = dkim_signs},
    {.name = "domain-key", .type = CONF_T_DKIM_KEY, .scopes = G | V | P, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "domain-macro", .type = CONF_T_MACRO, .scopes = G, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "domain-suffix", .type = CONF_T_STRING, .scopes = G, .flags = CONF_PENDING},
    {.name = "dsn-format",
     .type = CONF_T_ENUM,
     .scopes = D,
     .def = "standard",
     .flags = CONF_PENDING,
     .words = dsn_formats},
    {.name = "dsn-return-default",
     .type = CONF_T_ENUM,
     .scopes = S,
     .def = "system",
     .flags = CONF_SUPPORTED,
     .words = dsn_returns},
    {.name = "file-destination", .type = CONF_T_PATH, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "file-format",
     .type = CONF_T_ENUM,
     .scopes = D,
     .def = "newfile-plain",
     .flags = CONF_SUPPORTED,
     .words = file_formats},
    {.name = "header", .type = CONF_T_PATTERN_RULE, .scopes = PL, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "hide-message-source", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "host-id", .type = CONF_T_UINT, .scopes = G, .def = "0", .flags = CONF_PENDING},
    {.name = "host-name", .type = CONF_T_STRING, .scopes = G | V, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "http-access", .type = CONF_T_HTTP_ACCESS, .scopes = G, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "http-api-key", .type = CONF_T_SECRET, .scopes = G, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "http-csrf-protection", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_PENDING},
    {.name = "http-mgmt-port", .type = CONF_T_UINT, .scopes = G, .def = "8080", .flags = CONF_PENDING, .max = 65535},
    {.name = "http-redirect-to-https", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_PENDING},
    {.name = "http-webhook-ca-file", .type = CONF_T_PATH, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-certificate", .type = CONF_T_CERT, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-connect-timeout", .type = CONF_T_INTERVAL, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-extra-headers", .type = CONF_T_STRING, .scopes = A, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "http-webhook-io-timeout", .type = CONF_T_INTERVAL, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-log-verbose", .type = CONF_T_BOOL, .scopes = A, .def = "no", .flags = CONF_PENDING},
    {.name = "http-webhook-max-interval", .type = CONF_T_INTERVAL, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-transfer-encoding", .type = CONF_T_STRING, .scopes = A, .flags = CONF_PENDING},
    {.name = "http-webhook-url", .type = CONF_T_STRING, .scopes = A, .flags = CONF_PENDING},
    {.name = "ignore-8bitmime", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "ignore-chunking", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "ignore-dsn", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "ignore-pipelining", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "immediate-tls", .type = CONF_T_BOOL, .scopes = L, .def = "no", .flags = CONF_SUPPORTED},
    /* tern: how long qmgr holds the recipients of a job it handed to smtp
     * before it lost track of it (a restart, a broken connection) before
     * sending them again; longer than smtp's longest transaction */
    {.name = "in-flight-grace", .type = CONF_T_INTERVAL, .scopes = G, .def = "20m", .flags = CONF_SUPPORTED},
    {.name = "include", .type = CONF_T_INCLUDE, .scopes = G | S | D | V | SPL, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "include-headers-from", .type = CONF_T_LIST, .scopes = V | P, .flags = CONF_PENDING},
    {.name = "ip-connection-limit", .type = CONF_T_CIDR_COUNT, .scopes = G, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "iso-times", .type = CONF_T_BOOL, .scopes = A, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "jobid-header", .type = CONF_T_STRING, .scopes = S, .flags = CONF_SUPPORTED},
    {.name = "jobid-prefix", .type = CONF_T_STRING, .scopes = S, .flags = CONF_PENDING},
    {.name = "log-auto-rotation", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_PENDING},
    {.name = "log-commands", .type = CONF_T_BOOL, .scopes = S | D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "log-connections", .type = CONF_T_BOOL, .scopes = S | D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "log-data", .type = CONF_T_BOOL, .scopes = S | D, .def = "no", .flags = CONF_PENDING},
    {.name = "log-disabled-ips", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "log-file", .type = CONF_T_PATH, .scopes = G, .flags = CONF_SUPPORTED},
    {.name = "log-file-world-readable", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_PENDING},
    {.name = "log-resolution", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "log-rotate", .type = CONF_T_UINT, .scopes = G, .def = "8", .flags = CONF_PENDING},
    {.name = "log-tls", .type = CONF_T_BOOL, .scopes = S | D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "log-transfer-failures", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "macro-variables-preserve-case", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "mail-from", .type = CONF_T_PATTERN_RULE, .scopes = PL, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "map-header-to-field",
     .type = CONF_T_WORDS,
     .scopes = A,
     .flags = CONF_PENDING | CONF_MULTI,
     .min_args = 3,
     .max_args = 3},
    {.name = "max-cold-virtual-mta-msg",
     .type = CONF_T_RATE_LIST,
     .scopes = D | V | P,
     .def = "0/d",
     .flags = CONF_PENDING},
    {.name = "max-connect-rate", .type = CONF_T_RATE, .scopes = D, .def = "unlimited", .flags = CONF_PENDING},
    {.name = "max-data-volume-rate",
     .type = CONF_T_VOLUME_RATE,
     .scopes = D,
     .def = "unlimited",
     .flags = CONF_PENDING},
    {.name = "max-errors-per-connection", .type = CONF_T_COUNT, .scopes = D, .def = "unlimited", .flags = CONF_PENDING},
    {.name = "max-events-recorded", .type = CONF_T_UINT, .scopes = D, .def = "10", .flags = CONF_PENDING},
    {.name = "max-message-hops", .type = CONF_T_UINT, .scopes = S, .def = "100", .flags = CONF_SUPPORTED},
    {.name = "max-message-size", .type = CONF_T_SIZE, .scopes = S, .def = "unlimited", .flags = CONF_SUPPORTED},
    {.name = "max-msg-per-connection", .type = CONF_T_UINT, .scopes = D, .def = "0", .flags = CONF_SUPPORTED},
    {.name = "max-msg-rate", .type = CONF_T_RATE, .scopes = D, .def = "unlimited", .flags = CONF_SUPPORTED},
    {.name = "max-rcpt-per-message", .type = CONF_T_UINT, .scopes = S | D, .def = "0", .flags = CONF_SUPPORTED},
    {.name = "max-rcpt-per-transaction", .type = CONF_T_UINT, .scopes = D, .def = "1000", .flags = CONF_SUPPORTED},
    {.name = "max-size", .type = CONF_T_SIZE, .scopes = A, .def = "250M", .flags = CONF_SUPPORTED},
    {.name = "max-smtp-data-volume-rate",
     .type = CONF_T_VOLUME_RATE,
     .scopes = V | P,
     .def = "unlimited",
     .flags = CONF_PENDING},
    {.name = "max-smtp-msg-rate", .type = CONF_T_RATE, .scopes = V | P, .def = "unlimited", .flags = CONF_PENDING},
    {.name = "max-smtp-out", .type = CONF_T_UINT, .scopes = D | V | P, .def = "20", .flags = CONF_SUPPORTED},
    {.name = "min-free-space", .type = CONF_T_SIZE, .scopes = SP, .def = "0", .flags = CONF_PENDING},
    {.name = "move-interval", .type = CONF_T_INTERVAL, .scopes = A, .def = "1d", .flags = CONF_SUPPORTED},
    {.name = "move-to", .type = CONF_T_PATH, .scopes = A, .flags = CONF_SUPPORTED},
    {.name = "mx-connection-limit", .type = CONF_T_PATTERN_COUNT, .scopes = G, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "name-server", .type = CONF_T_NAME_SERVER, .scopes = G | DNS, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "notify-of-delay-every", .type = CONF_T_INTERVAL_NEVER, .scopes = D, .def = "4h", .flags = CONF_SUPPORTED},
    {.name = "password", .type = CONF_T_SECRET, .scopes = U, .flags = CONF_SUPPORTED},
    {.name = "pattern-list", .type = CONF_T_STRING, .scopes = S, .flags = CONF_PENDING},
    {.name = "pickup", .type = CONF_T_PICKUP, .scopes = G, .flags = CONF_SUPPORTED},
    {.name = "pickup-remove-dot", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "pix-bug-workaround", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_PENDING},
    {.name = "postmaster", .type = CONF_T_STRING, .scopes = G, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "priority", .type = CONF_T_UINT, .scopes = SP, .def = "1", .flags = CONF_PENDING, .max = 100},
    {.name = "privacy-policy", .type = CONF_T_PRIVACY, .scopes = A, .def = "retain", .flags = CONF_PENDING},
    {.name = "process-x-envid", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "process-x-job", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "process-x-virtual-mta", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "queue-filter", .type = CONF_T_LIST, .scopes = A, .flags = CONF_PENDING},
    {.name = "queue-priority", .type = CONF_T_UINT, .scopes = D, .def = "50", .flags = CONF_SUPPORTED, .max = 100},
    {.name = "queue-to", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "rcpt-to", .type = CONF_T_PATTERN_RULE, .scopes = PL, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "record-fields", .type = CONF_T_RECORD_FIELDS, .scopes = A, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "records", .type = CONF_T_RECORDS, .scopes = A, .def = "d,b", .flags = CONF_SUPPORTED | CONF_ONCE},
    {.name = "reenable-source-ip-after",
     .type = CONF_T_INTERVAL_NEVER,
     .scopes = D,
     .def = "never",
     .flags = CONF_PENDING},
    {.name = "reject-invalid-virtual-mta", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "relay-address", .type = CONF_T_ADDRESS_OR_REGEX, .scopes = G, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "relay-debug", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "relay-domain", .type = CONF_T_DOMAIN_LIST, .scopes = G, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "remove-header", .type = CONF_T_LIST, .scopes = S | D, .flags = CONF_SUPPORTED},
    {.name = "replace-smtp-421-service-response", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "reply", .type = CONF_T_REPLY_RULE, .scopes = SPL, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "require-auth", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "require-client-certificate", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "require-starttls", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "require-starttls-before-auth", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "reroute-to-virtual-mta", .type = CONF_T_STRING, .scopes = D, .flags = CONF_PENDING},
    {.name = "retain-x-job", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "retain-x-virtual-mta", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "retry-after", .type = CONF_T_INTERVAL_LIST, .scopes = D, .def = "10m", .flags = CONF_SUPPORTED},
    {.name = "retry-after-dns-error", .type = CONF_T_INTERVAL, .scopes = D, .def = "1m", .flags = CONF_SUPPORTED},
    {.name = "retry-interval", .type = CONF_T_INTERVAL, .scopes = A, .def = "5m", .flags = CONF_PENDING},
    {.name = "retry-recipients-after", .type = CONF_T_INTERVAL, .scopes = D, .def = "10m", .flags = CONF_SUPPORTED},
    {.name = "retry-upon-new-mail", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "reuse-ssl-session", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "rewrite-list", .type = CONF_T_STRING, .scopes = V, .flags = CONF_PENDING},
    {.name = "route", .type = CONF_T_STRING, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "run-as-root", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "smtp-421-means-mx-unavailable", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "smtp-553-means-invalid-mailbox", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_PENDING},
    {.name = "smtp-await-slot", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "smtp-client-certificate", .type = CONF_T_CERT, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "smtp-command-timeout", .type = CONF_T_INTERVAL, .scopes = S, .def = "10m", .flags = CONF_SUPPORTED},
    {.name = "smtp-data-termination-timeout",
     .type = CONF_T_INTERVAL,
     .scopes = D,
     .def = "10m",
     .flags = CONF_SUPPORTED},
    {.name = "smtp-data-timeout", .type = CONF_T_INTERVAL, .scopes = S, .def = "10m", .flags = CONF_SUPPORTED},
    {.name = "smtp-greeting-timeout", .type = CONF_T_INTERVAL, .scopes = D, .def = "5m", .flags = CONF_SUPPORTED},
    {.name = "smtp-hosts", .type = CONF_T_SMTP_HOSTS, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "smtp-ip", .type = CONF_T_IP, .scopes = G, .flags = CONF_PENDING},
    {.name = "smtp-listener", .type = CONF_T_LISTEN, .scopes = G, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "smtp-max-auth-failure-rate",
     .type = CONF_T_RATE,
     .scopes = S,
     .def = "unlimited",
     .flags = CONF_SUPPORTED},
    {.name = "smtp-out-rampup-interval", .type = CONF_T_INTERVAL, .scopes = D, .def = "0", .flags = CONF_PENDING},
    {.name = "smtp-pattern-list", .type = CONF_T_STRING, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "smtp-port", .type = CONF_T_UINT, .scopes = G, .flags = CONF_PENDING, .max = 65535},
    /* tern: smtp worker processes; 0 means one per CPU */
    {.name = "smtp-processes", .type = CONF_T_UINT, .scopes = G, .def = "0", .flags = CONF_SUPPORTED, .max = 256},
    {.name = "smtp-proxy-source-host",
     .type = CONF_T_WORDS,
     .scopes = V,
     .flags = CONF_PENDING | CONF_MULTI,
     .min_args = 1,
     .max_args = 2},
    {.name = "smtp-server-tls-allow-sslv3", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_PENDING},
    {.name = "smtp-server-tls-allow-tlsv1", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-allow-tlsv1.1", .type = CONF_T_BOOL, .scopes = G, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-allow-tlsv1.2", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-allow-tlsv1.3", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-ca-file", .type = CONF_T_PATH, .scopes = G, .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-certificate", .type = CONF_T_CERT, .scopes = G, .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-ciphers",
     .type = CONF_T_STRING,
     .scopes = G,
     .def = "HIGH:!ADH:@STRENGTH",
     .flags = CONF_SUPPORTED},
    {.name = "smtp-server-tls-dh-key-length",
     .type = CONF_T_ENUM,
     .scopes = G,
     .def = "1024",
     .flags = CONF_PENDING,
     .words = dh_lengths},
    {.name = "smtp-server-tls-v1.3-ciphersuites",
     .type = CONF_T_STRING,
     .scopes = G,
     .def = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_"
            "128_CCM_8_SHA256",
     .flags = CONF_SUPPORTED},
    {.name = "smtp-service", .type = CONF_T_BOOL, .scopes = S, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-source-host", .type = CONF_T_HOST_NAME, .scopes = G | V, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "smtp-tls-allow-tlsv1", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-allow-tlsv1.1", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-allow-tlsv1.2", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-allow-tlsv1.3", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-ca-file", .type = CONF_T_PATH, .scopes = D, .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-ciphers",
     .type = CONF_T_STRING,
     .scopes = D,
     .def = "HIGH:!ADH:@STRENGTH",
     .flags = CONF_SUPPORTED},
    {.name = "smtp-tls-tlsv1.3-ciphersuites",
     .type = CONF_T_STRING,
     .scopes = D,
     .def = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_"
            "128_CCM_8_SHA256",
     .flags = CONF_SUPPORTED},
    /* tern: smtpd worker processes; 0 means one per CPU */
    {.name = "smtpd-processes", .type = CONF_T_UINT, .scopes = G, .def = "0", .flags = CONF_SUPPORTED, .max = 256},
    {.name = "source", .type = CONF_T_STRING, .scopes = L | U, .flags = CONF_SUPPORTED},
    {.name = "source-ip-max-connect-rate", .type = CONF_T_CIDR_RATE, .scopes = D, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "source-ip-max-data-volume-rate",
     .type = CONF_T_CIDR_VOLUME_RATE,
     .scopes = D,
     .flags = CONF_PENDING | CONF_MULTI},
    {.name = "source-ip-max-msg-rate", .type = CONF_T_CIDR_RATE, .scopes = D, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "source-ip-max-smtp-out", .type = CONF_T_CIDR_COUNT, .scopes = D, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "spool", .type = CONF_T_PATH, .scopes = G, .flags = CONF_SUPPORTED | CONF_MULTI},
    {.name = "spool-max-recipients", .type = CONF_T_UINT_OR_AUTO, .scopes = G, .def = "auto", .flags = CONF_PENDING},
    {.name = "spool-min-free-space", .type = CONF_T_UINT, .scopes = G, .flags = CONF_PENDING},
    {.name = "suppress-local-dsn", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "sync", .type = CONF_T_BOOL, .scopes = A, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "sync-msg-create", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "sync-msg-update", .type = CONF_T_BOOL, .scopes = G, .def = "yes", .flags = CONF_PENDING},
    {.name = "tls-allow-sslv3",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "no",
     .flags = CONF_PENDING,
     .inherit = "smtp-server-tls-allow-sslv3"},
    {.name = "tls-allow-tlsv1",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "no",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-allow-tlsv1"},
    {.name = "tls-allow-tlsv1.1",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "no",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-allow-tlsv1.1"},
    {.name = "tls-allow-tlsv1.2",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "yes",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-allow-tlsv1.2"},
    {.name = "tls-allow-tlsv1.3",
     .type = CONF_T_BOOL,
     .scopes = L,
     .def = "yes",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-allow-tlsv1.3"},
    {.name = "tls-ca-file",
     .type = CONF_T_PATH,
     .scopes = L,
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-ca-file"},
    {.name = "tls-certificate",
     .type = CONF_T_CERT,
     .scopes = L | U,
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-certificate"},
    {.name = "tls-ciphers",
     .type = CONF_T_STRING,
     .scopes = L,
     .def = "HIGH:!ADH:@STRENGTH",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-ciphers"},
    {.name = "tls-dh-key-length",
     .type = CONF_T_ENUM,
     .scopes = L,
     .def = "1024",
     .flags = CONF_PENDING,
     .words = dh_lengths,
     .inherit = "smtp-server-tls-dh-key-length"},
    {.name = "tls-tlsv1.3-ciphersuites",
     .type = CONF_T_STRING,
     .scopes = L,
     .def = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:TLS_AES_"
            "128_CCM_8_SHA256",
     .flags = CONF_SUPPORTED,
     .inherit = "smtp-server-tls-v1.3-ciphersuites"},
    {.name = "total-max-smtp-in", .type = CONF_T_UINT, .scopes = G, .def = "100", .flags = CONF_SUPPORTED},
    {.name = "total-max-smtp-out", .type = CONF_T_UINT, .scopes = G, .def = "1200", .flags = CONF_SUPPORTED},
    {.name = "track-recipient-events", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "type", .type = CONF_T_ENUM, .scopes = D, .def = "smtp", .flags = CONF_SUPPORTED, .words = delivery_types},
    {.name = "use-dane", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "use-mta-sts", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "use-proxy", .type = CONF_T_STRING, .scopes = V, .flags = CONF_PENDING},
    {.name = "use-starttls", .type = CONF_T_BOOL, .scopes = D, .def = "yes", .flags = CONF_SUPPORTED},
    {.name = "use-unencrypted-plain-auth", .type = CONF_T_BOOL, .scopes = D, .def = "no", .flags = CONF_PENDING},
    {.name = "user-string", .type = CONF_T_STRING, .scopes = A, .flags = CONF_SUPPORTED},
    {.name = "verp-default", .type = CONF_T_BOOL, .scopes = S, .def = "no", .flags = CONF_PENDING},
    {.name = "virtual-mta", .type = CONF_T_STRING, .scopes = P, .flags = CONF_PENDING | CONF_MULTI},
    {.name = "world-readable", .type = CONF_T_BOOL, .scopes = A, .def = "no", .flags = CONF_SUPPORTED},
    {.name = "write-timeout", .type = CONF_T_INTERVAL, .scopes = A, .def = "1m", .flags = CONF_PENDING},
};

const size_t conf_directive_total = sizeof conf_directives / sizeof conf_directives[0];

static int directive_cmp(const void *key, const void *entry)
{
	return strcmp(key, ((const struct conf_directive *)entry)->name);
}

const struct conf_directive *conf_directive_lookup(const char *name)
{
	return bsearch(name, conf_directives, conf_directive_total, sizeof conf_directives[0], directive_cmp);
}

size_t conf_directive_index(const struct conf_directive *d)
{
	return (size_t)(d - conf_directives);
}

bool conf_directive_known(const char *name)
{
	return conf_directive_lookup(name) != NULL;
}

bool conf_directive_supported(const char *name)
{
	const struct conf_directive *d = conf_directive_lookup(name);
	return d && (d->flags & CONF_SUPPORTED);
}

bool conf_directive_repeatable(const char *name)
{
	const struct conf_directive *d = conf_directive_lookup(name);
	return d && (d->flags & CONF_MULTI);
}

bool conf_directive_at(size_t i, struct conf_directive_info *info, struct buf *where)
{
	if (i >= conf_directive_total)
		return false;
	const struct conf_directive *d = &conf_directives[i];
	*info = (struct conf_directive_info){.name = d->name,
	                                     .type = d->type,
	                                     .def = d->def,
	                                     .words = d->words,
	                                     .inherit = d->inherit,
	                                     .supported = d->flags & CONF_SUPPORTED,
	                                     .repeatable = d->flags & CONF_MULTI};
	conf_scopes_format(d->scopes, where);
	return true;
}

/* ---- blocks ------------------------------------------------------------------ */

static const struct conf_blockdef blockdefs[] = {
    {"global", CONF_GLOBAL, 0, false, false, true},
    {"source", CONF_SOURCE, G, true, true, true},
    {"domain", CONF_DOMAIN, G | V | P, true, true, true},
    {"virtual-mta", CONF_VMTA, G, true, true, true},
    {"virtual-mta-pool", CONF_VMTA_POOL, G, true, true, false},
    {"smtp-listener", CONF_LISTENER, G, true, true, false},
    {"smtp-user", CONF_SMTP_USER, G, true, true, false},
    /* Two blocks writing one file would interleave: a repeat is an error. */
    {"acct-file", CONF_ACCT_FILE, G, true, false, false},
    {"spool", CONF_SPOOL, G, true, false, false},
    {"dns", CONF_DNS, G, false, true, false},
    {"bounce-category-patterns", CONF_BOUNCE_CATEGORIES, G, false, true, false},
    /* Rule lists are ordered: merging two of them would hide mistakes. */
    {"smtp-pattern-list", CONF_SMTP_PATTERN_LIST, G, true, false, true},
    {"pattern-list", CONF_PATTERN_LIST, G | PL, true, false, false},
    /* PowerMTA blocks that tern recognises but does not read yet; their
     * contents are skipped (tags must still balance). */
    {"bounce-processor", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"feedback-loop-processor", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"address-list", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"email-patterns", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"source-group", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"rewrite-list", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"domain-key-list", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"transmissions-api", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"transmissions-api-listener", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"proxy", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"vault", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"mx-rollup-list", CONF_OPAQUE, ANYWHERE, false, false, false},
    {"signals", CONF_OPAQUE, ANYWHERE, false, false, false},
};

#define NBLOCKDEFS (sizeof blockdefs / sizeof blockdefs[0])

const struct conf_blockdef *conf_blockdef_lookup(const char *tag)
{
	/* "global" is not a tag one can write. */
	for (size_t i = 1; i < NBLOCKDEFS; i++)
		if (strcmp(blockdefs[i].tag, tag) == 0)
			return &blockdefs[i];
	return NULL;
}

const struct conf_blockdef *conf_blockdef_of(enum conf_kind kind)
{
	for (size_t i = 0; i < NBLOCKDEFS; i++)
		if (blockdefs[i].kind == kind)
			return &blockdefs[i];
	return NULL;
}

const char *conf_kind_name(enum conf_kind kind)
{
	static const char *const names[CONF_KIND_COUNT] = {
	    [CONF_GLOBAL] = "global level",
	    [CONF_SOURCE] = "<source>",
	    [CONF_DOMAIN] = "<domain>",
	    [CONF_VMTA] = "<virtual-mta>",
	    [CONF_VMTA_POOL] = "<virtual-mta-pool>",
	    [CONF_LISTENER] = "<smtp-listener>",
	    [CONF_SMTP_USER] = "<smtp-user>",
	    [CONF_ACCT_FILE] = "<acct-file>",
	    [CONF_SPOOL] = "<spool>",
	    [CONF_DNS] = "<dns>",
	    [CONF_BOUNCE_CATEGORIES] = "<bounce-category-patterns>",
	    [CONF_SMTP_PATTERN_LIST] = "<smtp-pattern-list>",
	    [CONF_PATTERN_LIST] = "<pattern-list>",
	    [CONF_OPAQUE] = "a block whose contents are not read",
	};
	return kind < CONF_KIND_COUNT ? names[kind] : "?";
}

void conf_scopes_format(unsigned scopes, struct buf *out)
{
	unsigned blocks = scopes & ~CONF_SCOPE(CONF_GLOBAL) & (CONF_SCOPE(CONF_OPAQUE) - 1);
	unsigned left = (unsigned)__builtin_popcount(blocks);
	if (scopes & CONF_SCOPE(CONF_GLOBAL))
		buf_puts(out, left ? "at global level or in " : "at global level");
	else
		buf_puts(out, "in ");
	for (unsigned k = 0; k < CONF_OPAQUE; k++) {
		if (!(blocks & CONF_SCOPE(k)))
			continue;
		left--;
		buf_printf(out, "%s%s", conf_kind_name((enum conf_kind)k), left > 1 ? ", " : left == 1 ? " or " : "");
	}
}

/* ---- accounting records ----------------------------------------------------------- */

static const char *const record_types[][2] = {
    {"d", "delivery"}, {"b", "bounce"},        {"t", "transient"},      {"tq", "transient-queue"},
    {"r", "receipt"},  {"f", "feedback-loop"}, {"rb", "remote-bounce"}, {"rs", "remote-status"},
};

const char *conf_record_type(const char *name)
{
	for (size_t i = 0; i < sizeof record_types / sizeof record_types[0]; i++)
		if (strcasecmp(name, record_types[i][0]) == 0 || strcasecmp(name, record_types[i][1]) == 0)
			return record_types[i][0];
	return NULL;
}

bool conf_record_field_known(const char *name, const char **suggestion)
{
	size_t best = 4;
	*suggestion = NULL;
	/* The fields are those acctd knows (common/acct_fields.c): one list. */
	for (size_t i = 0; i < acct_field_count(); i++) {
		const char *field = acct_field_name(i);
		if (strcasecmp(name, field) == 0)
			return true;
		size_t dist = conf_edit_distance(name, field, best - 1);
		if (dist < best) {
			best = dist;
			*suggestion = field;
		}
	}
	return false;
}

/* ---- suggestions -------------------------------------------------------------------- */

size_t conf_edit_distance(const char *a, const char *b, size_t limit)
{
	size_t la = strlen(a), lb = strlen(b);
	if ((la > lb ? la - lb : lb - la) > limit || lb > 256)
		return limit + 1;
	size_t row[257];
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0], smallest = row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t cost = diag + ((a[i - 1] | 0x20) != (b[j - 1] | 0x20));
			size_t best = up + 1 < row[j - 1] + 1 ? up + 1 : row[j - 1] + 1;
			row[j] = cost < best ? cost : best;
			diag = up;
			if (row[j] < smallest)
				smallest = row[j];
		}
		if (smallest > limit)
			return limit + 1;
	}
	return row[lb];
}

/* How different a name may be and still be suggested: a third of it, at
 * least one edit and at most three. */
static size_t suggest_limit(const char *name)
{
	size_t limit = strlen(name) / 3;
	return limit < 1 ? 1 : limit > 3 ? 3 : limit;
}

const char *conf_directive_suggest(const char *name)
{
	size_t limit = suggest_limit(name), best = limit + 1;
	const char *found = NULL;
	for (size_t i = 0; i < conf_directive_total; i++) {
		size_t dist = conf_edit_distance(name, conf_directives[i].name, best - 1);
		if (dist < best) {
			best = dist;
			found = conf_directives[i].name;
		}
	}
	return found;
}

const char *conf_blockdef_suggest(const char *tag)
{
	size_t limit = suggest_limit(tag), best = limit + 1;
	const char *found = NULL;
	for (size_t i = 1; i < NBLOCKDEFS; i++) {
		size_t dist = conf_edit_distance(tag, blockdefs[i].tag, best - 1);
		if (dist < best) {
			best = dist;
			found = blockdefs[i].tag;
		}
	}
	return found;
}
