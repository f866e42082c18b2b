/* sendmail.h: what tern-sendmail's parts share: the pickup file (its
 * envelope lines and the atomic drop) and the -bs SMTP session. */
#ifndef TERN_SENDMAIL_H
#define TERN_SENDMAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"

/* "x-sender: S" and one "x-receiver: R" line each; "" is the null sender. */
void sendmail_build_envelope(const char *sender, const char *const *rcpts, size_t count, struct buf *env);
/* Writes envelope and message into dir as one new NAME.msg, atomically;
 * false with the reason in err. */
bool sendmail_drop_file(const char *dir, const struct buf *envelope, const struct buf *msg, struct buf *err);
/* -bs: an SMTP session on standard input and output; each message goes
 * into dir.  Returns the exit status. */
int sendmail_smtp_session(const char *dir, const char *host_name);

#endif
