/* smtp_deliver.c: a job from its route to its last result.  The targets
 * (MX hosts or static routes, resolved to addresses) are tried in order:
 * a connection failure or a refusing greeting moves on to the next one
 * (RFC 5321 5.1), a failed opportunistic handshake retries the same one in
 * clear, max-msg-per-connection opens a fresh connection for the rest.
 * Whatever the targets could not take is deferred with the last reason. */
#include "smtp.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Enhanced codes of queue-level outcomes (RFC 3463). */
#define ENH_NO_ANSWER "4.4.1"      /* no answer from host */
#define ENH_BAD_CONNECTION "4.4.2" /* bad connection */
#define ENH_DNS_TEMP "4.4.3"       /* directory server failure */
#define ENH_BAD_ROUTE "4.3.5"      /* system incorrectly configured */
#define ENH_BAD_DOMAIN "5.1.2"     /* bad destination system address */
#define ENH_NO_ROUTE "5.4.4"       /* unable to route */
#define ENH_NULL_MX "5.1.10"       /* RFC 7505 */

static void on_session_done(struct smtp_job *job, enum smtp_session_end end, const char *why);
static void resolve(struct smtp_job *job);

static void try_target(struct smtp_job *job, size_t index, bool in_clear)
{
	smtp_session_start(job, &job->targets.items[index], in_clear, on_session_done);
}

static void defer_rest(struct smtp_job *job, const char *enhanced, const char *outcome)
{
	if (job->orphaned) {
		smtp_job_return_rest(job);
		return;
	}
	const char *why = job->last_error.len ? buf_cstr(&job->last_error) : "no host to deliver to";
	smtp_job_fail_pending(job, SMTP_RCPT_DEFERRED, enhanced, why, NULL);
	smtp_job_finish(job, outcome, why, 0);
}

static void try_next_target(struct smtp_job *job)
{
	if (job->next_target >= job->targets.count) {
		defer_rest(job, ENH_NO_ANSWER, "connect-failed");
		return;
	}
	try_target(job, job->next_target++, false);
}

static bool all_done(const struct smtp_job *job)
{
	return job->next_msg >= job->nmsgs;
}

static void on_session_done(struct smtp_job *job, enum smtp_session_end end, const char *why)
{
	if (why) {
		buf_reset(&job->last_error);
		buf_puts(&job->last_error, why);
		log_info("%s: %s", job->queue, why);
	}
	/* A job that began on an idle connection has not looked its
	 * targets up yet: anything but the end needs them now. */
	if (job->targets.count == 0 &&
	    (end == SMTP_END_NEXT_TARGET || end == SMTP_END_CONNECTION_CAP || end == SMTP_END_RETRY_CLEAR)) {
		resolve(job);
		return;
	}
	switch (end) {
	case SMTP_END_DONE:
		if (!all_done(job))
			defer_rest(job, ENH_BAD_CONNECTION, "failed");
		else
			smtp_job_finish(job, "done", NULL, 0);
		break;
	case SMTP_END_NEXT_TARGET:
		try_next_target(job);
		break;
	case SMTP_END_RETRY_CLEAR:
		try_target(job, job->next_target - 1, true);
		break;
	case SMTP_END_CONNECTION_CAP:
		/* The host that just took mail is the one to go on with. */
		try_target(job, job->next_target - 1, false);
		break;
	case SMTP_END_BROKEN:
		defer_rest(job, ENH_BAD_CONNECTION, "failed");
		break;
	}
}

static void on_targets(void *arg, enum smtp_dns_outcome outcome, const char *why, struct smtp_targets *targets)
{
	struct smtp_job *job = arg;
	job->lookup = NULL;
	switch (outcome) {
	case SMTP_DNS_OK:
		job->targets = *targets;
		memset(targets, 0, sizeof *targets);
		job->next_target = 0;
		try_next_target(job);
		return;
	case SMTP_DNS_TEMPFAIL:
		smtp_job_fail_pending(job, SMTP_RCPT_DEFERRED, ENH_DNS_TEMP, why, NULL);
		smtp_job_finish(job, "dns-failed", why, job->policy.retry_after_dns_error);
		return;
	case SMTP_DNS_NXDOMAIN:
		smtp_job_fail_pending(job, SMTP_RCPT_BOUNCED, ENH_BAD_DOMAIN, why, NULL);
		break;
	case SMTP_DNS_NO_MX:
		smtp_job_fail_pending(job, SMTP_RCPT_BOUNCED, ENH_NO_ROUTE, why, NULL);
		break;
	case SMTP_DNS_NULL_MX:
		smtp_job_fail_pending(job, SMTP_RCPT_BOUNCED, ENH_NULL_MX, why, NULL);
		break;
	}
	smtp_job_finish(job, "bounced", why, 0);
}

static void resolve(struct smtp_job *job)
{
	const struct smtp_route *route = job->policy.have_route ? &job->policy.route : NULL;
	job->lookup = smtp_dns_targets(job->domain, route, job->policy.default_port, job->policy.bounce_upon_no_mx,
	                               on_targets, job);
}

void smtp_deliver_start(struct smtp_job *job)
{
	if (job->policy.route_error) {
		struct buf why = BUF_INIT;
		buf_printf(&why, "bad smtp-hosts or route for %s: %s", job->domain, job->policy.route_error);
		smtp_job_fail_pending(job, SMTP_RCPT_DEFERRED, ENH_BAD_ROUTE, buf_cstr(&why), NULL);
		smtp_job_finish(job, "failed", buf_cstr(&why), 0);
		buf_free(&why);
		return;
	}
	if (smtp_session_adopt(job, on_session_done))
		return;
	resolve(job);
}

void smtp_deliver_orphaned(struct smtp_job *job)
{
	job->orphaned = true;
	if (smtp_session_delivering(job->session))
		return;
	smtp_deliver_abort(job);
	smtp_job_return_rest(job);
}

void smtp_deliver_abort(struct smtp_job *job)
{
	if (job->lookup) {
		smtp_dns_cancel(job->lookup);
		job->lookup = NULL;
	}
	smtp_session_abort(job->session);
}
