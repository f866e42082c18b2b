/* smtpd_relay.c: who may send to which recipient.  Mail is accepted for
 * the domains and addresses the configuration lists (relay-domain,
 * relay-address, host-name), and for any recipient from sources that
 * may relay (always-allow-relaying) and authenticated users.  For
 * everyone else, forms that could make some later MTA route the message
 * elsewhere are refused even when the domain looks local: the percent
 * hack, bang paths, quoted local parts holding @, source routes and
 * trailing dots. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "log.h"
#include "smtpd.h"

static bool listed_domain(const struct conf_settings *g, const char *domain)
{
	for (const struct conf_setting *st = conf_get_setting(g, "relay-domain"); st; st = st->next) {
		if (st->value.unset)
			continue;
		for (size_t i = 0; i < st->value.list.count; i++)
			if (smtpd_domain_match(st->value.list.items[i], domain))
				return true;
	}
	for (const struct conf_setting *st = conf_get_setting(g, "host-name"); st; st = st->next)
		if (!st->value.unset && st->value.string && strcasecmp(st->value.string, domain) == 0)
			return true;
	return false;
}

static bool regex_matches(const char *pattern, const char *text)
{
	regex_t re;
	if (regcomp(&re, pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB) != 0) {
		log_warning("relay-address /%s/ is not a valid regular expression", pattern);
		return false;
	}
	bool match = regexec(&re, text, 0, NULL, 0) == 0;
	regfree(&re);
	return match;
}

static bool listed_address(const struct conf_settings *g, const char *mailbox)
{
	for (const struct conf_setting *st = conf_get_setting(g, "relay-address"); st; st = st->next) {
		if (st->value.unset)
			continue;
		if (st->value.regex ? regex_matches(st->value.regex, mailbox)
		                    : st->value.string && strcasecmp(st->value.string, mailbox) == 0)
			return true;
	}
	return false;
}

/* Forms some MTAs read as routing instructions. */
static bool routing_form(const struct mail_addr *a)
{
	return a->route || a->trailing_dot || strpbrk(a->local, "%!@") != NULL;
}

const char *smtpd_relay_check(const struct smtpd_session *s, const struct mail_addr *rcpt)
{
	if (s->policy.always_allow_relaying || s->auth_user)
		return NULL;
	if (*rcpt->domain == '\0') /* <Postmaster> */
		return NULL;
	const struct conf_settings *g = conf_global(s->conf->conf);
	if (!routing_form(rcpt) && (listed_domain(g, rcpt->domain) || listed_address(g, rcpt->mailbox)))
		return NULL;
	return s->conf->relay_debug ? "450 4.7.1 Relaying denied" : "550 5.7.1 Relaying denied";
}
