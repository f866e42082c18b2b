/* testutil.c: helpers shared by the unit tests (see testutil.h). */
#include "testutil.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mem.h"

char *testutil_tmpdir(void)
{
	const char *base = getenv("TMPDIR");
	char *path = mem_asprintf("%s/tern-test.XXXXXX", base && *base ? base : "/tmp");
	if (mkdtemp(path) == NULL)
		log_fatal("mkdtemp %s failed", path);
	return path;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

void testutil_rmtree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *testutil_path(const char *dir, const char *name)
{
	return mem_asprintf("%s/%s", dir, name);
}

bool testutil_contains(const char *haystack, const char *needle)
{
	if (haystack && strstr(haystack, needle))
		return true;
	fprintf(stderr, "expected \"%s\" in \"%s\"\n", needle, haystack ? haystack : "(null)");
	return false;
}

const char design_conf[] = "# outbound: opportunistic STARTTLS for every domain\n"
                           "<domain *>\n"
                           "    use-starttls yes\n"
                           "    require-starttls no\n"
                           "</domain>\n"
                           "\n"
                           "# outbound: a B2B partner that demands TLS and our client certificate\n"
                           "<domain super-secure-server.com>\n"
                           "    smtp-client-certificate /etc/tern/partner-client.pem \"key password\"\n"
                           "    use-starttls yes\n"
                           "    require-starttls yes          # no TLS, no delivery (4xx, retried)\n"
                           "</domain>\n"
                           "\n"
                           "# accounting: prove that delivery was encrypted\n"
                           "<acct-file /var/log/tern/acct.csv>\n"
                           "    records d, b\n"
                           "    record-fields d *, dlvTlsProtocol, dlvTlsCipher\n"
                           "    record-fields b *, dlvTlsProtocol, dlvTlsCipher\n"
                           "</acct-file>\n"
                           "\n"
                           "# inbound: implicit TLS on 465, STARTTLS elsewhere, per-source rules\n"
                           "smtp-listener 0/0:25\n"
                           "smtp-listener 1.2.3.4:465 tls=yes\n"
                           "smtp-server-tls-certificate /etc/tern/smtp-cert.pem \"YourPasswordHere\"\n"
                           "smtp-server-tls-ciphers \"HIGH:MEDIUM:!ADH:@STRENGTH\"\n"
                           "smtp-server-tls-ca-file /etc/tern/client-ca.pem   # verify client chains\n"
                           "<source 0/0>                      # matches all\n"
                           "    allow-starttls yes\n"
                           "    require-starttls-before-auth yes\n"
                           "    allow-unencrypted-plain-auth no\n"
                           "</source>\n";
