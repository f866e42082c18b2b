/* testcert.c: test certificates made with the OpenSSL API (see
 * testcert.h).  EC P-256 keys keep generation fast. */
#include "testcert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "mem.h"

static void check(int ok, const char *what)
{
	if (!ok)
		log_panic("test certificate: %s failed", what);
}

static void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	check(ext != NULL, value);
	check(X509_add_ext(cert, ext, -1), "X509_add_ext");
	X509_EXTENSION_free(ext);
}

static X509_NAME *make_name(const char *cn)
{
	X509_NAME *name = X509_NAME_new();
	check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0), "CN");
	check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"tern tests", -1, -1, 0),
	      "O");
	return name;
}

static struct testcert *make(const struct testcert *issuer, const char *cn, int from_days, int to_days)
{
	static long serial = 1;
	struct testcert *tc = mem_zalloc(sizeof(*tc));
	tc->key = EVP_EC_gen("P-256");
	check(tc->key != NULL, "EVP_EC_gen");
	tc->cert = X509_new();
	X509 *cert = tc->cert;
	check(X509_set_version(cert, X509_VERSION_3), "version");
	check(ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++), "serial");
	check(X509_gmtime_adj(X509_getm_notBefore(cert), (long)from_days * 86400) != NULL, "notBefore");
	check(X509_gmtime_adj(X509_getm_notAfter(cert), (long)to_days * 86400) != NULL, "notAfter");
	X509_NAME *name = make_name(cn);
	check(X509_set_subject_name(cert, name), "subject");
	X509_NAME_free(name);
	check(X509_set_issuer_name(cert, X509_get_subject_name(issuer ? issuer->cert : cert)), "issuer");
	check(X509_set_pubkey(cert, tc->key), "pubkey");
	X509 *issuer_cert = issuer ? issuer->cert : cert;
	add_ext(cert, issuer_cert, NID_subject_key_identifier, "hash");
	if (issuer == NULL) {
		add_ext(cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		char *san = mem_asprintf("DNS:%s", cn);
		add_ext(cert, issuer_cert, NID_basic_constraints, "CA:FALSE");
		add_ext(cert, issuer_cert, NID_authority_key_identifier, "keyid");
		add_ext(cert, issuer_cert, NID_subject_alt_name, san);
		free(san);
	}
	check(X509_sign(cert, issuer ? issuer->key : tc->key, EVP_sha256()) > 0, "X509_sign");
	return tc;
}

struct testcert *testcert_new_ca(const char *cn)
{
	return make(NULL, cn, -1, 365);
}

struct testcert *testcert_new(const struct testcert *ca, const char *cn, int from_days, int to_days)
{
	return make(ca, cn, from_days, to_days);
}

void testcert_free(struct testcert *tc)
{
	if (tc == NULL)
		return;
	X509_free(tc->cert);
	EVP_PKEY_free(tc->key);
	free(tc);
}

static FILE *open_append(const char *path)
{
	FILE *f = fopen(path, "a");
	if (f == NULL)
		log_panic("cannot write %s", path);
	return f;
}

void testcert_append_cert(const char *path, const struct testcert *tc)
{
	FILE *f = open_append(path);
	check(PEM_write_X509(f, tc->cert), "PEM_write_X509");
	fclose(f);
}

void testcert_append_key(const char *path, const struct testcert *tc, const char *password)
{
	FILE *f = open_append(path);
	const EVP_CIPHER *cipher = password ? EVP_aes_256_cbc() : NULL;
	check(PEM_write_PKCS8PrivateKey(f, tc->key, cipher, NULL, 0, NULL, (void *)password), "PEM_write key");
	fclose(f);
}

void testcert_write_bundle(const char *path, const struct testcert *tc, const struct testcert *ca, const char *password)
{
	remove(path);
	testcert_append_cert(path, tc);
	if (ca)
		testcert_append_cert(path, ca);
	testcert_append_key(path, tc, password);
}
