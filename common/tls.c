/* tls.c: OpenSSL contexts from tern's TLS settings (see tls.h).
 * Most of the code is about saying precisely what is wrong with a
 * certificate file, because an operator who pasted a chain, a key and a
 * password into a configuration deserves better than "SSL error". */
#include "tls.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "fileio.h"
#include "mem.h"

/* Identifies tern's sessions in the server's cache; without it, resuming a
 * session that carried a client certificate fails. */
static const unsigned char session_context[] = "tern";

void tls_settings_init(struct tls_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->ciphers = TLS_SETTINGS_DEFAULT_CIPHERS;
	s->ciphersuites = TLS_SETTINGS_DEFAULT_CIPHERSUITES;
	s->tls12 = true;
	s->tls13 = true;
}

void tls_append_errors(struct buf *err)
{
	unsigned long e;
	bool first = true;
	while ((e = ERR_get_error()) != 0) {
		char text[256];
		ERR_error_string_n(e, text, sizeof(text));
		buf_printf(err, "%s%s", first ? "" : "; ", text);
		first = false;
	}
}

/* ---- reading a certificate file ------------------------------------------ */

/* What a PEM file holds: every certificate in order, and whether (and
 * how) it holds a private key. */
struct pem_contents {
	STACK_OF(X509) * certs;
	int keys;
	bool key_encrypted;
};

static bool is_key_block(const char *name)
{
	size_t len = strlen(name), suffix = strlen("PRIVATE KEY");
	return len >= suffix && strcmp(name + len - suffix, "PRIVATE KEY") == 0;
}

static bool note_pem_block(struct pem_contents *pc, const char *name, const char *header, const unsigned char *der,
                           long der_len)
{
	if (is_key_block(name)) {
		pc->keys++;
		/* PKCS#8 says so in its name, the legacy format in a header. */
		if (strcmp(name, "ENCRYPTED PRIVATE KEY") == 0 || strstr(header, "ENCRYPTED") != NULL)
			pc->key_encrypted = true;
		return true;
	}
	if (strcmp(name, PEM_STRING_X509) != 0 && strcmp(name, PEM_STRING_X509_OLD) != 0)
		return true; /* parameters and the like: not ours to judge */
	X509 *cert = d2i_X509(NULL, &der, der_len);
	if (cert == NULL)
		return false;
	sk_X509_push(pc->certs, cert);
	return true;
}

static bool scan_pem(const char *path, const struct buf *data, struct pem_contents *pc, struct buf *err)
{
	BIO *bio = BIO_new_mem_buf(data->data, (int)data->len);
	bool ok = true;
	for (;;) {
		char *name = NULL, *header = NULL;
		unsigned char *der = NULL;
		long der_len = 0;
		if (!PEM_read_bio(bio, &name, &header, &der, &der_len)) {
			/* Running out of blocks is the normal way to stop. */
			unsigned long e = ERR_peek_last_error();
			if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
				ERR_clear_error();
			else
				ok = false;
			break;
		}
		ok = note_pem_block(pc, name, header, der, der_len);
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(der);
		if (!ok)
			break;
	}
	BIO_free(bio);
	if (!ok) {
		buf_printf(err, "cannot parse the PEM data in %s: ", path);
		tls_append_errors(err);
	}
	return ok;
}

static int password_cb(char *out, int size, int rwflag, void *arg)
{
	const char *password = arg;
	if (password == NULL)
		return -1; /* never prompt on a terminal */
	size_t len = strlen(password);
	if (len > (size_t)size)
		return -1;
	memcpy(out, password, len);
	return (int)len;
}

static EVP_PKEY *read_key(const char *path, const struct buf *data, const struct pem_contents *pc, const char *password,
                          struct buf *err)
{
	BIO *bio = BIO_new_mem_buf(data->data, (int)data->len);
	EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, password_cb, (void *)password);
	BIO_free(bio);
	if (key != NULL)
		return key;
	if (pc->key_encrypted && password == NULL) {
		buf_printf(err, "the private key in %s is encrypted and no password was given", path);
	} else if (pc->key_encrypted) {
		buf_printf(err, "wrong password for the private key in %s", path);
	} else {
		buf_printf(err, "cannot parse the private key in %s: ", path);
		tls_append_errors(err);
	}
	ERR_clear_error();
	return NULL;
}

/* The certificate the key belongs to, wherever the file has it. */
static int find_leaf(STACK_OF(X509) * certs, EVP_PKEY *key)
{
	for (int i = 0; i < sk_X509_num(certs); i++) {
		if (X509_check_private_key(sk_X509_value(certs, i), key))
			return i;
	}
	ERR_clear_error();
	return -1;
}

static bool install_chain(SSL_CTX *ctx, const char *path, STACK_OF(X509) * certs, EVP_PKEY *key, struct buf *err)
{
	int leaf = find_leaf(certs, key);
	if (leaf < 0) {
		buf_printf(err, "the private key does not match the certificate in %s", path);
		return false;
	}
	bool ok = SSL_CTX_use_certificate(ctx, sk_X509_value(certs, leaf)) == 1 &&
	          SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_clear_chain_certs(ctx) == 1;
	for (int i = 0; ok && i < sk_X509_num(certs); i++) {
		if (i != leaf)
			ok = SSL_CTX_add1_chain_cert(ctx, sk_X509_value(certs, i)) == 1;
	}
	if (ok)
		ok = SSL_CTX_check_private_key(ctx) == 1;
	if (!ok) {
		buf_printf(err, "cannot use the certificate in %s: ", path);
		tls_append_errors(err);
	}
	return ok;
}

static bool load_cert_file(SSL_CTX *ctx, const char *path, const char *password, struct buf *err)
{
	struct buf data = BUF_INIT;
	struct pem_contents pc = {sk_X509_new_null(), 0, false};
	EVP_PKEY *key = NULL;
	struct buf why = BUF_INIT;
	bool ok = fileio_read_all(path, &data, &why);
	if (!ok)
		buf_printf(err, "cannot read certificate file %s", buf_cstr(&why));
	buf_free(&why);
	ok = ok && scan_pem(path, &data, &pc, err);
	if (ok && sk_X509_num(pc.certs) == 0) {
		buf_printf(err, "no certificate in %s", path);
		ok = false;
	}
	if (ok && pc.keys == 0) {
		buf_printf(err, "no private key in %s", path);
		ok = false;
	}
	if (ok)
		ok = (key = read_key(path, &data, &pc, password, err)) != NULL;
	if (ok)
		ok = install_chain(ctx, path, pc.certs, key, err);
	EVP_PKEY_free(key);
	sk_X509_pop_free(pc.certs, X509_free);
	/* The file held a private key: do not leave it lying in the heap. */
	if (data.data)
		OPENSSL_cleanse(data.data, data.len);
	buf_free(&data);
	return ok;
}

/* ---- protocol versions and ciphers ---------------------------------------- */

static const struct {
	int version;
	uint64_t disable;
	size_t setting; /* offset of the switch in struct tls_settings */
} versions[] = {
    {TLS1_VERSION, SSL_OP_NO_TLSv1, offsetof(struct tls_settings, tls10)},
    {TLS1_1_VERSION, SSL_OP_NO_TLSv1_1, offsetof(struct tls_settings, tls11)},
    {TLS1_2_VERSION, SSL_OP_NO_TLSv1_2, offsetof(struct tls_settings, tls12)},
    {TLS1_3_VERSION, SSL_OP_NO_TLSv1_3, offsetof(struct tls_settings, tls13)},
};

static bool version_allowed(const struct tls_settings *s, size_t i)
{
	return *(const bool *)((const char *)s + versions[i].setting);
}

/* The allowed versions need not be contiguous (1.0 and 1.2 but not 1.1):
 * the range covers them and the gaps are switched off one by one. */
static bool set_versions(SSL_CTX *ctx, const struct tls_settings *s, struct buf *err)
{
	int min = 0, max = 0;
	uint64_t disable = 0;
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		if (!version_allowed(s, i)) {
			disable |= versions[i].disable;
			continue;
		}
		if (min == 0)
			min = versions[i].version;
		max = versions[i].version;
	}
	if (min == 0) {
		buf_puts(err, "no TLS protocol version is allowed");
		return false;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, min) || !SSL_CTX_set_max_proto_version(ctx, max)) {
		buf_puts(err, "cannot set the TLS protocol versions: ");
		tls_append_errors(err);
		return false;
	}
	SSL_CTX_set_options(ctx, disable);
	return true;
}

static bool has_tls13_suite(SSL_CTX *ctx, const char *name, size_t len)
{
	STACK_OF(SSL_CIPHER) *list = SSL_CTX_get_ciphers(ctx);
	for (int i = 0; i < sk_SSL_CIPHER_num(list); i++) {
		const char *have = SSL_CIPHER_get_name(sk_SSL_CIPHER_value(list, i));
		if (strlen(have) == len && strncmp(have, name, len) == 0)
			return true;
	}
	return false;
}

/* OpenSSL quietly skips names it does not know as long as one is valid;
 * a typo in a ciphersuite list should not silently drop a suite. */
static bool check_ciphersuites(SSL_CTX *ctx, const char *list, struct buf *err)
{
	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ":");
		if (len > 0 && !has_tls13_suite(ctx, p, len)) {
			buf_printf(err, "unknown TLS 1.3 ciphersuite \"%.*s\" in \"%s\"", (int)len, p, list);
			return false;
		}
		p += len + (p[len] == ':');
	}
	return true;
}

static bool set_ciphers(SSL_CTX *ctx, const struct tls_settings *s, struct buf *err)
{
	const char *ciphers = s->ciphers ? s->ciphers : TLS_SETTINGS_DEFAULT_CIPHERS;
	const char *suites = s->ciphersuites ? s->ciphersuites : TLS_SETTINGS_DEFAULT_CIPHERSUITES;
	if (SSL_CTX_set_cipher_list(ctx, ciphers) != 1) {
		buf_printf(err, "bad cipher list \"%s\": no cipher matches", ciphers);
		ERR_clear_error();
		return false;
	}
	if (SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
		buf_printf(err, "bad TLS 1.3 ciphersuites \"%s\": no ciphersuite matches", suites);
		ERR_clear_error();
		return false;
	}
	return check_ciphersuites(ctx, suites, err);
}

/* ---- peer verification --------------------------------------------------- */

/* Lets the handshake go on whatever the verdict; the verdict itself stays
 * available through SSL_get_verify_result(). */
static int accept_any_peer(int preverify_ok, X509_STORE_CTX *store)
{
	return 1;
}

static bool load_ca_file(SSL_CTX *ctx, const char *path, bool server, struct buf *err)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		buf_printf(err, "cannot read CA file %s: %s", path, strerror(errno));
		return false;
	}
	fclose(f);
	if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
		buf_printf(err, "no usable CA certificate in %s: ", path);
		tls_append_errors(err);
		return false;
	}
	if (server) {
		/* Tell clients which CAs we accept, so they pick the right
		 * certificate. */
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(path);
		if (names != NULL)
			SSL_CTX_set_client_CA_list(ctx, names);
		ERR_clear_error();
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_any_peer);
	return true;
}

/* ---- contexts ------------------------------------------------------------ */

static SSL_CTX *ctx_new(const SSL_METHOD *method, const struct tls_settings *s, struct buf *err)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (ctx == NULL) {
		buf_puts(err, "cannot create a TLS context: ");
		tls_append_errors(err);
		return NULL;
	}
	if (set_versions(ctx, s, err) && set_ciphers(ctx, s, err))
		return ctx;
	SSL_CTX_free(ctx);
	return NULL;
}

static SSL_CTX *ctx_finish(SSL_CTX *ctx, bool ok)
{
	if (ok)
		return ctx;
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

SSL_CTX *tls_server_ctx_new(const struct tls_settings *s, struct buf *err)
{
	if (s->cert_file == NULL) {
		buf_puts(err, "a TLS server needs a certificate file");
		return NULL;
	}
	SSL_CTX *ctx = ctx_new(TLS_server_method(), s, err);
	if (ctx == NULL)
		return NULL;
	/* Renegotiation and compression only ever served attackers
	 * (CVE-2009-3555, CRIME); tickets are harmless and save handshakes. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_id_context(ctx, session_context, sizeof(session_context) - 1);
	bool ok = load_cert_file(ctx, s->cert_file, s->key_password, err);
	if (ok && s->ca_file)
		ok = load_ca_file(ctx, s->ca_file, true, err);
	return ctx_finish(ctx, ok);
}

SSL_CTX *tls_client_ctx_new(const struct tls_settings *s, struct buf *err)
{
	SSL_CTX *ctx = ctx_new(TLS_client_method(), s, err);
	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
	bool ok = true;
	if (s->cert_file)
		ok = load_cert_file(ctx, s->cert_file, s->key_password, err);
	if (ok && s->ca_file)
		ok = load_ca_file(ctx, s->ca_file, false, err);
	return ctx_finish(ctx, ok);
}

/* ---- after the handshake ------------------------------------------------- */

const char *tls_protocol_name(const SSL *ssl)
{
	return SSL_get_version(ssl);
}

const char *tls_cipher_name(const SSL *ssl)
{
	const char *name = SSL_get_cipher_name(ssl);
	return name ? name : "NONE";
}

static void append_name(const X509_NAME *name, struct buf *out)
{
	BIO *bio = BIO_new(BIO_s_mem());
	X509_NAME_print_ex(bio, name, 0, XN_FLAG_ONELINE);
	char *text = NULL;
	long len = BIO_get_mem_data(bio, &text);
	if (len > 0)
		buf_append(out, text, (size_t)len);
	BIO_free(bio);
}

bool tls_peer_subject(const SSL *ssl, struct buf *out)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL)
		return false;
	append_name(X509_get_subject_name(cert), out);
	return true;
}

bool tls_peer_issuer(const SSL *ssl, struct buf *out)
{
	X509 *cert = SSL_get0_peer_certificate(ssl);
	if (cert == NULL)
		return false;
	append_name(X509_get_issuer_name(cert), out);
	return true;
}

bool tls_peer_verified(const SSL *ssl)
{
	return SSL_get0_peer_certificate(ssl) != NULL && SSL_get_verify_result(ssl) == X509_V_OK;
}

const char *tls_verify_text(const SSL *ssl)
{
	if (SSL_get0_peer_certificate(ssl) == NULL)
		return "no peer certificate";
	long result = SSL_get_verify_result(ssl);
	return result == X509_V_OK ? "ok" : X509_verify_cert_error_string(result);
}
