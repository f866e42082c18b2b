/* mailq.h: mailq (tern-sendmail -bp): the queue listed as Postfix's
 * mailq lists it. */
#ifndef TERN_MAILQ_H
#define TERN_MAILQ_H

struct conf;

/* Prints the queue (qmgr's, through master's control socket) and the
 * files still waiting in the pickup directory on standard output; returns
 * the exit status (sysexits.h). */
int mailq_run(const struct conf *conf);

#endif
