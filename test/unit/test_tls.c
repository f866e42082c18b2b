/* test_tls.c: unit tests of the TLS context helpers: every certificate
 * file and setting error with its message, and real in-memory handshakes
 * between server and client contexts (protocol, cipher, client
 * certificate verification). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "buf.h"
#include "mem.h"
#include "testcert.h"
#include "testutil.h"
#include "tls.h"

#define PASSWORD "key password"

/* Files made once for the whole group. */
static struct {
	char *dir;
	char *ca, *other_ca, *server, *server_enc, *server_key_first, *client, *other_client, *other_bare,
	    *expired_client;
	char *cert_only, *key_only, *mismatch, *garbage, *corrupt, *missing;
} f;

static char *file(const char *name)
{
	return testutil_path(f.dir, name);
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static int make_files(void **state)
{
	f.dir = testutil_tmpdir();
	struct testcert *ca = testcert_new_ca("Test CA");
	struct testcert *other_ca = testcert_new_ca("Other CA");
	struct testcert *server = testcert_new(ca, "mx.example.test", -1, 30);
	struct testcert *client = testcert_new(ca, "client.example.test", -1, 30);
	struct testcert *other_client = testcert_new(other_ca, "stranger.example.test", -1, 30);
	struct testcert *expired = testcert_new(ca, "expired.example.test", -30, -1);

	testcert_append_cert(f.ca = file("ca.pem"), ca);
	testcert_append_cert(f.other_ca = file("other-ca.pem"), other_ca);
	testcert_write_bundle(f.server = file("server.pem"), server, ca, NULL);
	testcert_write_bundle(f.server_enc = file("server-enc.pem"), server, ca, PASSWORD);
	/* Key first and the CA before the server's own certificate. */
	testcert_append_key(f.server_key_first = file("server-key-first.pem"), server, NULL);
	testcert_append_cert(f.server_key_first, ca);
	testcert_append_cert(f.server_key_first, server);
	testcert_write_bundle(f.client = file("client.pem"), client, ca, NULL);
	testcert_write_bundle(f.other_client = file("other-client.pem"), other_client, other_ca, NULL);
	testcert_write_bundle(f.other_bare = file("other-bare.pem"), other_client, NULL, NULL);
	testcert_write_bundle(f.expired_client = file("expired-client.pem"), expired, ca, NULL);
	testcert_append_cert(f.cert_only = file("cert-only.pem"), server);
	testcert_append_key(f.key_only = file("key-only.pem"), server, NULL);
	testcert_append_cert(f.mismatch = file("mismatch.pem"), server);
	testcert_append_key(f.mismatch, client, NULL);
	write_text(f.garbage = file("garbage.pem"), "this is not PEM\n");
	write_text(f.corrupt = file("corrupt.pem"),
	           "-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n");
	f.missing = file("missing.pem");

	testcert_free(ca);
	testcert_free(other_ca);
	testcert_free(server);
	testcert_free(client);
	testcert_free(other_client);
	testcert_free(expired);
	return 0;
}

static int remove_files(void **state)
{
	testutil_rmtree(f.dir);
	char **all[] = {
	    &f.dir,      &f.ca,           &f.other_ca,   &f.server,         &f.server_enc, &f.server_key_first,
	    &f.client,   &f.other_client, &f.other_bare, &f.expired_client, &f.cert_only,  &f.key_only,
	    &f.mismatch, &f.garbage,      &f.corrupt,    &f.missing};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		free(*all[i]);
	return 0;
}

/* Builds a server context from settings that must fail with why (and
 * the path, when given). */
static void expect_server_error(const struct tls_settings *s, const char *why, const char *path)
{
	struct buf err = BUF_INIT;
	SSL_CTX *ctx = tls_server_ctx_new(s, &err);
	assert_null(ctx);
	assert_true(testutil_contains(buf_cstr(&err), why));
	if (path)
		assert_true(testutil_contains(buf_cstr(&err), path));
	assert_int_equal(ERR_peek_error(), 0);
	buf_free(&err);
}

static void expect_cert_file_error(const char *path, const char *password, const char *why)
{
	struct tls_settings s;
	tls_settings_init(&s);
	s.cert_file = path;
	s.key_password = password;
	expect_server_error(&s, why, path);
}

static void test_cert_file_errors(void **state)
{
	expect_cert_file_error(f.missing, NULL, "cannot read certificate file");
	expect_cert_file_error(f.missing, NULL, "No such file or directory");
	expect_cert_file_error(f.dir, NULL, "Is a directory");
	expect_cert_file_error(f.garbage, NULL, "no certificate in");
	expect_cert_file_error(f.key_only, NULL, "no certificate in");
	expect_cert_file_error(f.corrupt, NULL, "cannot parse the PEM data in");
	expect_cert_file_error(f.cert_only, NULL, "no private key in");
	expect_cert_file_error(f.server_enc, NULL, "is encrypted and no password was given");
	expect_cert_file_error(f.server_enc, "not the password", "wrong password for the private key in");
	expect_cert_file_error(f.mismatch, NULL, "the private key does not match the certificate in");

	struct tls_settings s;
	tls_settings_init(&s);
	expect_server_error(&s, "a TLS server needs a certificate file", NULL);
}

static void expect_ok(const struct tls_settings *s, bool server)
{
	struct buf err = BUF_INIT;
	SSL_CTX *ctx = server ? tls_server_ctx_new(s, &err) : tls_client_ctx_new(s, &err);
	if (ctx == NULL)
		fprintf(stderr, "unexpected error: %s\n", buf_cstr(&err));
	assert_non_null(ctx);
	assert_int_equal(err.len, 0);
	SSL_CTX_free(ctx);
	buf_free(&err);
}

static void test_cert_files_accepted(void **state)
{
	struct tls_settings s;
	tls_settings_init(&s);
	s.cert_file = f.server;
	expect_ok(&s, true);
	s.cert_file = f.server_enc;
	s.key_password = PASSWORD;
	expect_ok(&s, true);
	s.cert_file = f.server_key_first;
	s.key_password = NULL;
	expect_ok(&s, true);
	/* A client needs no certificate; with one, the same checks apply. */
	tls_settings_init(&s);
	expect_ok(&s, false);
	s.cert_file = f.server_enc;
	s.key_password = "wrong";
	struct buf err = BUF_INIT;
	assert_null(tls_client_ctx_new(&s, &err));
	assert_true(testutil_contains(buf_cstr(&err), "wrong password for the private key in"));
	buf_free(&err);
}

static void test_setting_errors(void **state)
{
	struct tls_settings s;
	tls_settings_init(&s);
	s.cert_file = f.server;

	s.ciphers = "NO-SUCH-CIPHER";
	expect_server_error(&s, "bad cipher list \"NO-SUCH-CIPHER\": no cipher matches", NULL);
	s.ciphers = NULL;

	s.ciphersuites = "TLS_NOPE";
	expect_server_error(&s, "bad TLS 1.3 ciphersuites \"TLS_NOPE\"", NULL);
	s.ciphersuites = "TLS_AES_256_GCM_SHA384:TLS_AES_256_GCM_SHA385";
	expect_server_error(&s, "unknown TLS 1.3 ciphersuite \"TLS_AES_256_GCM_SHA385\"", NULL);
	s.ciphersuites = NULL;

	s.ca_file = f.missing;
	expect_server_error(&s, "cannot read CA file", f.missing);
	expect_server_error(&s, "No such file or directory", NULL);
	s.ca_file = f.garbage;
	expect_server_error(&s, "no usable CA certificate in", f.garbage);
	s.ca_file = NULL;

	s.tls12 = s.tls13 = false;
	expect_server_error(&s, "no TLS protocol version is allowed", NULL);
	struct buf err = BUF_INIT;
	assert_null(tls_client_ctx_new(&s, &err));
	assert_true(testutil_contains(buf_cstr(&err), "no TLS protocol version is allowed"));
	buf_free(&err);
}

static void test_default_settings(void **state)
{
	struct tls_settings s;
	tls_settings_init(&s);
	assert_string_equal(s.ciphers, "HIGH:!ADH:@STRENGTH");
	assert_string_equal(s.ciphersuites,
	                    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:"
	                    "TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256");
	assert_false(s.tls10);
	assert_false(s.tls11);
	assert_true(s.tls12);
	assert_true(s.tls13);
	assert_null(s.cert_file);
	assert_null(s.ca_file);
}

/* ---- handshakes ----------------------------------------------------------- */

struct session {
	SSL_CTX *server_ctx, *client_ctx;
	SSL *server, *client;
	bool done;
};

static SSL_CTX *must_ctx(const struct tls_settings *s, bool server)
{
	struct buf err = BUF_INIT;
	SSL_CTX *ctx = server ? tls_server_ctx_new(s, &err) : tls_client_ctx_new(s, &err);
	if (ctx == NULL)
		fprintf(stderr, "context: %s\n", buf_cstr(&err));
	assert_non_null(ctx);
	buf_free(&err);
	return ctx;
}

static bool step(SSL *ssl, bool *finished)
{
	if (*finished)
		return true;
	int rc = SSL_do_handshake(ssl);
	if (rc == 1) {
		*finished = true;
		return true;
	}
	int e = SSL_get_error(ssl, rc);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* Runs a handshake over a BIO pair; session.done tells whether it
 * completed on both sides. */
static void handshake(struct session *hs, const struct tls_settings *server, const struct tls_settings *client)
{
	memset(hs, 0, sizeof(*hs));
	hs->server_ctx = must_ctx(server, true);
	hs->client_ctx = must_ctx(client, false);
	hs->server = SSL_new(hs->server_ctx);
	hs->client = SSL_new(hs->client_ctx);
	BIO *server_bio, *client_bio;
	assert_int_equal(BIO_new_bio_pair(&server_bio, 0, &client_bio, 0), 1);
	SSL_set_bio(hs->server, server_bio, server_bio);
	SSL_set_bio(hs->client, client_bio, client_bio);
	SSL_set_accept_state(hs->server);
	SSL_set_connect_state(hs->client);
	bool server_done = false, client_done = false;
	for (int round = 0; round < 100 && !(server_done && client_done); round++) {
		if (!step(hs->client, &client_done) || !step(hs->server, &server_done))
			break;
	}
	hs->done = server_done && client_done;
	ERR_clear_error();
}

static void session_free(struct session *hs)
{
	SSL_free(hs->server);
	SSL_free(hs->client);
	SSL_CTX_free(hs->server_ctx);
	SSL_CTX_free(hs->client_ctx);
}

static void server_settings(struct tls_settings *s)
{
	tls_settings_init(s);
	s->cert_file = f.server_enc;
	s->key_password = PASSWORD;
	s->ca_file = f.ca;
}

static void client_settings(struct tls_settings *s, const char *cert_file)
{
	tls_settings_init(s);
	s->cert_file = cert_file;
	s->ca_file = f.ca;
}

static void test_handshake_tls13_client_cert_ok(void **state)
{
	struct tls_settings server, client;
	server_settings(&server);
	client_settings(&client, f.client);
	struct session hs;
	handshake(&hs, &server, &client);
	assert_true(hs.done);
	assert_string_equal(tls_protocol_name(hs.server), "TLSv1.3");
	assert_string_equal(tls_cipher_name(hs.server), "TLS_AES_256_GCM_SHA384");
	assert_string_equal(tls_cipher_name(hs.client), "TLS_AES_256_GCM_SHA384");

	assert_true(tls_peer_verified(hs.server));
	assert_string_equal(tls_verify_text(hs.server), "ok");
	struct buf text = BUF_INIT;
	assert_true(tls_peer_subject(hs.server, &text));
	assert_string_equal(buf_cstr(&text), "CN = client.example.test, O = tern tests");
	buf_reset(&text);
	assert_true(tls_peer_issuer(hs.server, &text));
	assert_string_equal(buf_cstr(&text), "CN = Test CA, O = tern tests");

	/* The client verified the server's chain too. */
	assert_true(tls_peer_verified(hs.client));
	buf_reset(&text);
	assert_true(tls_peer_subject(hs.client, &text));
	assert_string_equal(buf_cstr(&text), "CN = mx.example.test, O = tern tests");
	buf_free(&text);
	session_free(&hs);
}

static void expect_client_verdict(const char *client_file, const char *verdict)
{
	struct tls_settings server, client;
	server_settings(&server);
	client_settings(&client, client_file);
	struct session hs;
	handshake(&hs, &server, &client);
	/* The handshake goes through: policy is the caller's decision. */
	assert_true(hs.done);
	assert_false(tls_peer_verified(hs.server));
	assert_string_equal(tls_verify_text(hs.server), verdict);
	session_free(&hs);
}

static void test_handshake_client_cert_failures(void **state)
{
	/* The bundle carries its own (untrusted) root. */
	expect_client_verdict(f.other_client, "self-signed certificate in certificate chain");
	expect_client_verdict(f.other_bare, "unable to verify the first certificate");
	expect_client_verdict(f.expired_client, "certificate has expired");
	expect_client_verdict(NULL, "no peer certificate");

	struct tls_settings server, client;
	server_settings(&server);
	client_settings(&client, f.other_client);
	struct session hs;
	handshake(&hs, &server, &client);
	struct buf text = BUF_INIT;
	assert_true(tls_peer_subject(hs.server, &text));
	assert_string_equal(buf_cstr(&text), "CN = stranger.example.test, O = tern tests");
	buf_free(&text);
	session_free(&hs);
}

static void test_handshake_tls12_only(void **state)
{
	struct tls_settings server, client;
	server_settings(&server);
	server.tls13 = false;
	client_settings(&client, f.client);
	struct session hs;
	handshake(&hs, &server, &client);
	assert_true(hs.done);
	assert_string_equal(tls_protocol_name(hs.client), "TLSv1.2");
	assert_string_equal(tls_protocol_name(hs.server), "TLSv1.2");
	assert_string_equal(tls_cipher_name(hs.client), "ECDHE-ECDSA-AES256-GCM-SHA384");
	assert_true(tls_peer_verified(hs.server));
	session_free(&hs);

	/* No common version: no handshake. */
	client.tls12 = false;
	handshake(&hs, &server, &client);
	assert_false(hs.done);
	session_free(&hs);
}

static void test_handshake_chain_order(void **state)
{
	struct tls_settings server, client;
	server_settings(&server);
	server.cert_file = f.server_key_first;
	server.key_password = NULL;
	client_settings(&client, NULL);
	struct session hs;
	handshake(&hs, &server, &client);
	assert_true(hs.done);
	assert_true(tls_peer_verified(hs.client));
	session_free(&hs);
}

/* Without a CA file the server asks for no certificate. */
static void test_handshake_no_ca(void **state)
{
	struct tls_settings server, client;
	server_settings(&server);
	server.ca_file = NULL;
	client_settings(&client, f.client);
	struct session hs;
	handshake(&hs, &server, &client);
	assert_true(hs.done);
	assert_string_equal(tls_verify_text(hs.server), "no peer certificate");
	struct buf text = BUF_INIT;
	assert_false(tls_peer_subject(hs.server, &text));
	assert_int_equal(text.len, 0);
	buf_free(&text);
	session_free(&hs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_default_settings),
	    cmocka_unit_test(test_cert_file_errors),
	    cmocka_unit_test(test_cert_files_accepted),
	    cmocka_unit_test(test_setting_errors),
	    cmocka_unit_test(test_handshake_tls13_client_cert_ok),
	    cmocka_unit_test(test_handshake_client_cert_failures),
	    cmocka_unit_test(test_handshake_tls12_only),
	    cmocka_unit_test(test_handshake_chain_order),
	    cmocka_unit_test(test_handshake_no_ca),
	};
	return cmocka_run_group_tests(tests, make_files, remove_files);
}
