/* testcert.h: certificates made at test time with the OpenSSL API, so
 * tests need no openssl command and no files checked into the tree: a CA,
 * certificates it issues (valid, expired, for servers or clients), and PEM
 * files combining them in any order, with plain or encrypted keys. */
#ifndef TERN_TESTCERT_H
#define TERN_TESTCERT_H

#include <openssl/evp.h>
#include <openssl/x509.h>

struct testcert {
	X509 *cert;
	EVP_PKEY *key;
};

/* A self-signed CA certificate with subject "CN = cn, O = tern tests". */
struct testcert *testcert_new_ca(const char *cn);
/* A certificate issued by ca (a DNS name cn as subjectAltName), valid from
 * now + from_days to now + to_days (negative: in the past). */
struct testcert *testcert_new(const struct testcert *ca, const char *cn, int from_days, int to_days);
void testcert_free(struct testcert *tc);

/* Append one PEM block to path (created if needed). */
void testcert_append_cert(const char *path, const struct testcert *tc);
/* password NULL: plain PKCS#8; otherwise encrypted with AES-256-CBC. */
void testcert_append_key(const char *path, const struct testcert *tc, const char *password);
/* The usual server file: certificate, issuer's certificate, key. */
void testcert_write_bundle(const char *path, const struct testcert *tc, const struct testcert *ca,
                           const char *password);

#endif
