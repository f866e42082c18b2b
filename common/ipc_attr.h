/* ipc_attr.h: the one list of IPC attribute names.
 * Every attribute that any tern process sends to another is declared here,
 * once, with its wire name, its type and the longest value a decoder
 * accepts.  Code refers to attributes only by their enum id (IPC_ATTR_...);
 * the wire name appears nowhere else, so two processes built from the same
 * tree can never disagree about a spelling.
 *
 * Adding an attribute: append a line (the order does not matter on the
 * wire, names do).  Later modules (qmgr records, acctd fields, ternctl
 * commands) add theirs here rather than inventing names locally. */
#ifndef TERN_IPC_ATTR_H
#define TERN_IPC_ATTR_H

/* Value types, as written in the type byte on the wire. */
enum ipc_type {
	IPC_TYPE_INT = 'i',  /* int64, 8 bytes big-endian two's complement */
	IPC_TYPE_STR = 's',  /* text without NUL bytes */
	IPC_TYPE_DATA = 'd', /* arbitrary bytes */
};

/* Longest mail address we pass around: a whole SMTP command line. */
#define IPC_ADDR_MAX 1000
/* Longest DNS name. */
#define IPC_HOST_MAX 255
/* Largest body chunk in one "data" attribute; senders split bigger bodies. */
#define IPC_DATA_MAX (256 * 1024)

/* X(id, wire name, type, max value length in bytes) */
#define IPC_ATTR_LIST(X)                                                                                               \
	/* every request: the verb, and replies: the outcome */                                                        \
	X(REQUEST, "request", IPC_TYPE_STR, 32)                                                                        \
	X(STATUS, "status", IPC_TYPE_INT, 8)                                                                           \
	X(REASON, "reason", IPC_TYPE_STR, 16384)                                                                       \
	X(SEQ, "seq", IPC_TYPE_INT, 8)                                                                                 \
	/* the message envelope (smtpd -> qmgr, qmgr -> smtp) */                                                       \
	X(QUEUE_ID, "queue_id", IPC_TYPE_STR, 32)                                                                      \
	X(SENDER, "sender", IPC_TYPE_STR, IPC_ADDR_MAX)                                                                \
	X(RECIPIENT, "recipient", IPC_TYPE_STR, IPC_ADDR_MAX)                                                          \
	X(ORCPT, "orcpt", IPC_TYPE_STR, IPC_ADDR_MAX)                                                                  \
	X(NOTIFY, "notify", IPC_TYPE_STR, 64)                                                                          \
	X(ENVID, "envid", IPC_TYPE_STR, 100)                                                                           \
	X(RET, "ret", IPC_TYPE_STR, 8)                                                                                 \
	X(SIZE, "size", IPC_TYPE_INT, 8)                                                                               \
	X(BODY_TYPE, "body_type", IPC_TYPE_STR, 16)                                                                    \
	X(SMTPUTF8, "smtputf8", IPC_TYPE_INT, 8)                                                                       \
	X(DATA, "data", IPC_TYPE_DATA, IPC_DATA_MAX)                                                                   \
	/* where the message came from */                                                                              \
	X(CLIENT_IP, "client_ip", IPC_TYPE_STR, 64)                                                                    \
	X(CLIENT_NAME, "client_name", IPC_TYPE_STR, IPC_HOST_MAX)                                                      \
	X(HELO, "helo", IPC_TYPE_STR, 512)                                                                             \
	X(SRC_TYPE, "src_type", IPC_TYPE_STR, 16)                                                                      \
	X(LISTENER, "listener", IPC_TYPE_STR, 128)                                                                     \
	X(AUTH_USER, "auth_user", IPC_TYPE_STR, 512)                                                                   \
	/* the control channel (ternctl <-> master) */                                                                 \
	X(SERVICE, "service", IPC_TYPE_STR, 32)                                                                        \
	X(PIDS, "pids", IPC_TYPE_STR, 4096)                                                                            \
	X(STATE, "state", IPC_TYPE_STR, 32)                                                                            \
	X(RUNNING, "running", IPC_TYPE_INT, 8)                                                                         \
	X(READY, "ready", IPC_TYPE_INT, 8)                                                                             \
	X(WANTED, "wanted", IPC_TYPE_INT, 8)                                                                           \
	X(RESTARTS, "restarts", IPC_TYPE_INT, 8)                                                                       \
	X(THROTTLED, "throttled", IPC_TYPE_INT, 8)                                                                     \
	X(PID, "pid", IPC_TYPE_INT, 8)                                                                                 \
	X(UPTIME, "uptime", IPC_TYPE_INT, 8)                                                                           \
	X(RELOADS, "reloads", IPC_TYPE_INT, 8)                                                                         \
	X(VERSION, "version", IPC_TYPE_STR, 64)                                                                        \
	X(CONFIG, "config", IPC_TYPE_STR, 4096)                                                                        \
	/* added by master to requests it relays: "admin" or "reader" */                                               \
	X(ROLE, "role", IPC_TYPE_STR, 16)                                                                              \
	/* delivery jobs and their results (qmgr <-> smtp) */                                                          \
	X(VMTA, "vmta", IPC_TYPE_STR, IPC_HOST_MAX)                                                                    \
	X(JOB_ID, "job_id", IPC_TYPE_INT, 8)                                                                           \
	X(DSN_STATUS, "dsn_status", IPC_TYPE_STR, 16)                                                                  \
	X(REMOTE_IP, "remote_ip", IPC_TYPE_STR, 64)                                                                    \
	X(TLS_PROTOCOL, "tls_protocol", IPC_TYPE_STR, 32)                                                              \
	X(TLS_CIPHER, "tls_cipher", IPC_TYPE_STR, 128)                                                                 \
	X(ESMTP, "esmtp", IPC_TYPE_STR, 1000)                                                                          \
	X(OUTCOME, "outcome", IPC_TYPE_STR, 32)                                                                        \
	X(REMOTE_HOST, "remote_host", IPC_TYPE_STR, IPC_HOST_MAX)                                                      \
	X(LOCAL_IP, "local_ip", IPC_TYPE_STR, 64)                                                                      \
	X(RETRY_AFTER, "retry_after", IPC_TYPE_INT, 8)                                                                 \
	/* the queue's stored records (qmgr) and the PowerMTA job of a message */                                      \
	X(MAIL_JOB, "mail_job", IPC_TYPE_STR, 256)                                                                     \
	X(RECEIVED, "received", IPC_TYPE_INT, 8)                                                                       \
	X(BODY_SIZE, "body_size", IPC_TYPE_INT, 8)                                                                     \
	X(BODY_REF, "body_ref", IPC_TYPE_DATA, 32)                                                                     \
	X(RCPT_COUNT, "rcpt_count", IPC_TYPE_INT, 8)                                                                   \
	X(RCPT_INLINE, "rcpt_inline", IPC_TYPE_DATA, 65536)                                                            \
	X(RCPT_INDEX, "rcpt_index", IPC_TYPE_INT, 8)                                                                   \
	X(RCPT_STATE, "rcpt_state", IPC_TYPE_STR, 16)                                                                  \
	X(QUEUE, "queue", IPC_TYPE_STR, 512)                                                                           \
	X(ATTEMPTS, "attempts", IPC_TYPE_INT, 8)                                                                       \
	X(NEXT_ATTEMPT, "next_attempt", IPC_TYPE_INT, 8)                                                               \
	X(LAST_RESULT, "last_result", IPC_TYPE_STR, 2000)                                                              \
	X(QUEUE_MODE, "queue_mode", IPC_TYPE_STR, 16)                                                                  \
	X(PAUSED, "paused", IPC_TYPE_INT, 8)                                                                           \
	X(CONNECTIONS, "connections", IPC_TYPE_INT, 8)                                                                 \
	X(NEXT_RETRY, "next_retry", IPC_TYPE_INT, 8)                                                                   \
	X(RECORD_TYPE, "record_type", IPC_TYPE_STR, 4)                                                                 \
	X(TIME_LOGGED, "time_logged", IPC_TYPE_INT, 8)                                                                 \
	/* accounting records (qmgr -> acctd, see doc/accounting.md).  The record                                      \
	 * fields travel under their PowerMTA column names; orcpt and vmta above                                       \
	 * are the same fields, as are queue and record_type above (qmgr's). */                                        \
	X(ACCT_TIME_LOGGED, "timeLogged", IPC_TYPE_INT, 8)                                                             \
	X(ACCT_TIME_QUEUED, "timeQueued", IPC_TYPE_INT, 8)                                                             \
	X(ACCT_TIME_FIRST_ATTEMPT, "timeFirstAttempt", IPC_TYPE_INT, 8)                                                \
	X(ACCT_TOTAL_SECONDS_QUEUED, "totalSecondsQueued", IPC_TYPE_INT, 8)                                            \
	X(ACCT_ORIG, "orig", IPC_TYPE_STR, IPC_ADDR_MAX)                                                               \
	X(ACCT_RCPT, "rcpt", IPC_TYPE_STR, IPC_ADDR_MAX)                                                               \
	X(ACCT_DSN_ACTION, "dsnAction", IPC_TYPE_STR, 32)                                                              \
	X(ACCT_DSN_STATUS, "dsnStatus", IPC_TYPE_STR, 128)                                                             \
	X(ACCT_DSN_DIAG, "dsnDiag", IPC_TYPE_STR, 4096)                                                                \
	X(ACCT_DSN_MTA, "dsnMta", IPC_TYPE_STR, 512)                                                                   \
	X(ACCT_BOUNCE_CAT, "bounceCat", IPC_TYPE_STR, 64)                                                              \
	X(ACCT_SRC_TYPE, "srcType", IPC_TYPE_STR, 16)                                                                  \
	X(ACCT_SRC_MTA, "srcMta", IPC_TYPE_STR, 512)                                                                   \
	X(ACCT_DLV_TYPE, "dlvType", IPC_TYPE_STR, 16)                                                                  \
	X(ACCT_DLV_SOURCE_IP, "dlvSourceIp", IPC_TYPE_STR, 64)                                                         \
	X(ACCT_DLV_DESTINATION_IP, "dlvDestinationIp", IPC_TYPE_STR, 64)                                               \
	X(ACCT_DLV_ESMTP_AVAILABLE, "dlvEsmtpAvailable", IPC_TYPE_STR, 1000)                                           \
	X(ACCT_DLV_SIZE, "dlvSize", IPC_TYPE_INT, 8)                                                                   \
	X(ACCT_JOB_ID, "jobId", IPC_TYPE_STR, 256)                                                                     \
	X(ACCT_ENV_ID, "envId", IPC_TYPE_STR, 100)                                                                     \
	X(ACCT_VMTA_POOL, "vmtaPool", IPC_TYPE_STR, IPC_HOST_MAX)                                                      \
	X(ACCT_DLV_TLS_PROTOCOL, "dlvTlsProtocol", IPC_TYPE_STR, 32)                                                   \
	X(ACCT_DLV_TLS_CIPHER, "dlvTlsCipher", IPC_TYPE_STR, 128)                                                      \
	X(ACCT_RCV_SOURCE_IP, "rcvSourceIp", IPC_TYPE_STR, 64)                                                         \
	X(ACCT_RCV_SMTP_USER, "rcvSmtpUser", IPC_TYPE_STR, 512)                                                        \
	/* the message's header section ("Name: value" lines), for header_* */                                         \
	X(ACCT_HEADERS, "headers", IPC_TYPE_STR, 65536)                                                                \
	/* acctd requests: the acct-file a rotate is for; the header names acctd                                       \
	 * wants, so a client may send only those */                                                                   \
	X(ACCT_FILE, "acct_file", IPC_TYPE_STR, 4096)                                                                  \
	X(ACCT_HEADER_NAMES, "header_names", IPC_TYPE_STR, 4096)                                                       \
	/* hello: the number the client gives its next new record */                                                   \
	X(ACCT_NEXT_SEQ, "next_seq", IPC_TYPE_INT, 8)                                                                  \
	/* queue control (ternctl -> master -> qmgr): selections and counters */                                       \
	X(MAX_ITEMS, "max_items", IPC_TYPE_INT, 8)                                                                     \
	X(OLDER_THAN, "older_than", IPC_TYPE_INT, 8)                                                                   \
	X(NO_ACCOUNTING, "no_accounting", IPC_TYPE_INT, 8)                                                             \
	X(ERRORS, "errors", IPC_TYPE_INT, 8)                                                                           \
	X(RCPTS, "rcpts", IPC_TYPE_INT, 8)                                                                             \
	X(DOMAINS, "domains", IPC_TYPE_INT, 8)                                                                         \
	X(QUEUES, "queues", IPC_TYPE_INT, 8)                                                                           \
	X(DELIVERED, "delivered", IPC_TYPE_INT, 8)                                                                     \
	X(BOUNCED, "bounced", IPC_TYPE_INT, 8)                                                                         \
	X(DEFERRED, "deferred", IPC_TYPE_INT, 8)                                                                       \
	X(RECEIVED_MSGS, "received_msgs", IPC_TYPE_INT, 8)                                                             \
	X(RECEIVED_RCPTS, "received_rcpts", IPC_TYPE_INT, 8)                                                           \
	X(OUTBOX_PENDING, "outbox_pending", IPC_TYPE_INT, 8)                                                           \
	X(PRIORITY, "priority", IPC_TYPE_INT, 8)                                                                       \
	/* a recipient's record: delay notices sent so far (NOTIFY=DELAY) */                                           \
	X(DELAY_NOTICES, "delay_notices", IPC_TYPE_INT, 8)                                                             \
	/* a recipient's record: the job it was handed to and not yet answered */                                      \
	X(IN_FLIGHT, "in_flight", IPC_TYPE_INT, 8)                                                                     \
	/* a queue's record: when its backoff mode ends (0: not by time) */                                            \
	X(BACKOFF_UNTIL, "backoff_until", IPC_TYPE_INT, 8)                                                             \
	/* a recipient's record: bounced, its DSN not yet queued */                                                    \
	X(DSN_PENDING, "dsn_pending", IPC_TYPE_INT, 8)

enum ipc_attr {
#define IPC_ATTR_ENUM(id, name, type, max) IPC_ATTR_##id,
	IPC_ATTR_LIST(IPC_ATTR_ENUM)
#undef IPC_ATTR_ENUM
	    IPC_ATTR_COUNT
};

#endif
