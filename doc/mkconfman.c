/* mkconfman.c: prints the DIRECTIVES section of tern.conf(5) in roff,
 * straight from the configuration layer's directive table, so that the
 * manual and what tern accepts never drift apart.  The directives tern
 * acts on come first, then those it recognises but does not act on yet. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "conf.h"

/* What a value of each type looks like, as the reader writes it. */
static const char *type_words(enum conf_type type)
{
	switch (type) {
	case CONF_T_BOOL:
		return "yes|no";
	case CONF_T_UINT:
		return "NUMBER";
	case CONF_T_COUNT:
		return "NUMBER|unlimited";
	case CONF_T_UINT_OR_AUTO:
		return "NUMBER|auto";
	case CONF_T_SIZE:
		return "SIZE|unlimited";
	case CONF_T_INTERVAL:
		return "INTERVAL";
	case CONF_T_INTERVAL_NEVER:
		return "INTERVAL|never";
	case CONF_T_BOOL_OR_INTERVAL:
		return "yes|no|INTERVAL";
	case CONF_T_INTERVAL_LIST:
		return "INTERVAL[, INTERVAL...]";
	case CONF_T_RATE:
	case CONF_T_VOLUME_RATE:
		return "RATE|unlimited";
	case CONF_T_RATE_LIST:
		return "RATE[, RATE...]";
	case CONF_T_STRING:
	case CONF_T_SECRET:
		return "TEXT";
	case CONF_T_PATH:
		return "PATH";
	case CONF_T_ENUM:
		return NULL; /* the words themselves */
	case CONF_T_LIST:
		return "ITEM[, ITEM...]";
	case CONF_T_RECORDS:
		return "TYPE[, TYPE...]";
	case CONF_T_DOMAIN_LIST:
		return "DOMAIN[, DOMAIN...]";
	case CONF_T_CIDR:
		return "CIDR";
	case CONF_T_IP:
		return "IP";
	case CONF_T_ENDPOINT:
		return "IP:PORT";
	case CONF_T_NAME_SERVER:
		return "IP[:PORT]";
	case CONF_T_CERT:
		return "FILE [PASSWORD]";
	case CONF_T_HOST_NAME:
		return "IP HOSTNAME";
	case CONF_T_CIDR_COUNT:
		return "CIDR NUMBER";
	case CONF_T_CIDR_RATE:
	case CONF_T_CIDR_VOLUME_RATE:
		return "CIDR RATE";
	case CONF_T_PATTERN_COUNT:
		return "PATTERN NUMBER";
	case CONF_T_HTTP_ACCESS:
		return "CIDR LEVEL[, LEVEL...]";
	case CONF_T_DKIM_KEY:
		return "SELECTOR DOMAIN FILE";
	case CONF_T_SMTP_HOSTS:
		return "HOST[:PORT][, HOST[:PORT]...]";
	case CONF_T_LISTEN:
		return "IP:PORT [tls=yes]";
	case CONF_T_PICKUP:
		return "DIR BAD-DIR";
	case CONF_T_WORDS:
		return "WORD...";
	case CONF_T_PRIVACY:
		return "METHOD [KEY]";
	case CONF_T_ADDRESS_OR_REGEX:
		return "ADDRESS|/REGEX/";
	case CONF_T_REGEX_CATEGORY:
		return "CATEGORY";
	case CONF_T_REPLY_RULE:
		return "/REGEX/ ACTION[, ACTION...]";
	case CONF_T_PATTERN_RULE:
		return "/REGEX/ RESULT[, RESULT...]";
	case CONF_T_RECORD_FIELDS:
		return "TYPE FIELD[, FIELD...]";
	case CONF_T_INCLUDE:
		return "FILE";
	case CONF_T_MACRO:
		return "NAME DOMAIN[, DOMAIN...]";
	}
	return "VALUE";
}

/* Text in roff: backslashes escaped, a leading dot or quote neutralised. */
static void put_roff(const char *text)
{
	if (text[0] == '.' || text[0] == '\'')
		fputs("\\&", stdout);
	for (const char *p = text; *p; p++) {
		if (*p == '\\')
			fputs("\\e", stdout);
		else if (*p == '-')
			fputs("\\-", stdout);
		else if (*p == ':')
			fputs(":\\:", stdout); /* long cipher lists may break there */
		else
			putchar(*p);
	}
}

static void put_value_form(const struct conf_directive_info *d)
{
	if (d->type != CONF_T_ENUM) {
		put_roff(type_words(d->type));
		return;
	}
	for (size_t i = 0; d->words && d->words[i]; i++) {
		fputs(i ? "|" : "", stdout);
		put_roff(d->words[i]);
	}
}

static void put_directive(const struct conf_directive_info *d, const char *where)
{
	fputs(".TP\n.B ", stdout);
	put_roff(d->name);
	fputs("\n.I ", stdout);
	put_value_form(d);
	fputs("\n.br\n", stdout);
	put_roff(where);
	fputs(".", stdout);
	if (d->inherit) {
		fputs(" Default: the value of ", stdout);
		put_roff(d->inherit);
		if (d->def) {
			fputs(", else ", stdout);
			put_roff(d->def);
		}
		fputs(".", stdout);
	} else if (d->def) {
		fputs(" Default: ", stdout);
		put_roff(d->def);
		fputs(".", stdout);
	}
	if (d->repeatable)
		fputs(" May be repeated; every occurrence counts.", stdout);
	putchar('\n');
}

static void put_section(bool supported)
{
	struct conf_directive_info d;
	struct buf where = BUF_INIT;
	for (size_t i = 0; conf_directive_at(i, &d, &where); i++) {
		if (d.supported == supported)
			put_directive(&d, buf_cstr(&where));
		buf_reset(&where);
	}
	buf_free(&where);
}

int main(void)
{
	fputs(".SS Directives tern acts on\n", stdout);
	put_section(true);
	fputs(".SS Directives recognised, not yet acted on\n"
	      "These are accepted (\\fBternctl test config\\fR warns about each) but change nothing yet.\n",
	      stdout);
	put_section(false);
	return 0;
}
