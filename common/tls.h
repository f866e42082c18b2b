/* tls.h: building OpenSSL server and client contexts from tern's TLS
 * settings, and the few facts about a finished handshake that tern logs
 * and accounts (protocol, cipher, peer certificate, verify result).
 *
 * Peer certificates are verified against the CA file when one is given,
 * but a failed or missing certificate never aborts the handshake: SMTP
 * policy (a <source> that demands a valid client certificate, a <domain>
 * that demands a verified server) is decided by the caller afterwards,
 * from tls_peer_verified() and tls_verify_text(). */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <stdbool.h>

#include <openssl/ssl.h>

#include "buf.h"

#define TLS_SETTINGS_DEFAULT_CIPHERS "HIGH:!ADH:@STRENGTH"
#define TLS_SETTINGS_DEFAULT_CIPHERSUITES                                                                              \
	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_128_CCM_SHA256:"           \
	"TLS_AES_128_CCM_8_SHA256"

struct tls_settings {
	/* PEM file with the certificate chain (own certificate first or
	 * anywhere: the one matching the key is used) and the private key.
	 * Required for servers, optional for clients. */
	const char *cert_file;
	const char *key_password; /* NULL when the key is not encrypted */
	const char *ciphers;      /* TLS 1.2 and older, OpenSSL syntax */
	const char *ciphersuites; /* TLS 1.3 */
	/* Allowed protocol versions.  TLS 1.0 and 1.1 also need a cipher list
	 * that lowers OpenSSL's security level ("...:@SECLEVEL=0"). */
	bool tls10, tls11, tls12, tls13;
	const char *ca_file; /* verify peers against it; NULL: no verification */
};

/* Defaults: the cipher settings above, TLS 1.2 and 1.3, no files. */
void tls_settings_init(struct tls_settings *s);

/* Each returns a new context, or NULL with a sentence naming the file and
 * the problem in err. */
SSL_CTX *tls_server_ctx_new(const struct tls_settings *s, struct buf *err);
SSL_CTX *tls_client_ctx_new(const struct tls_settings *s, struct buf *err);

/* After the handshake. */
const char *tls_protocol_name(const SSL *ssl); /* "TLSv1.3" */
const char *tls_cipher_name(const SSL *ssl);   /* "TLS_AES_256_GCM_SHA384" */
/* One-line subject and issuer of the peer's certificate ("CN = x, O = y");
 * false (and nothing appended) when the peer sent none. */
bool tls_peer_subject(const SSL *ssl, struct buf *out);
bool tls_peer_issuer(const SSL *ssl, struct buf *out);
/* The peer sent a certificate and its chain verified. */
bool tls_peer_verified(const SSL *ssl);
/* "ok", "no peer certificate", or OpenSSL's reason ("certificate has
 * expired"). */
const char *tls_verify_text(const SSL *ssl);
/* Appends and clears OpenSSL's error queue ("; "-separated), for callers
 * reporting a failed handshake or I/O. */
void tls_append_errors(struct buf *err);

#endif
