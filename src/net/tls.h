/*
 * tls.h - the server side TLS configuration (OpenSSL 3).
 *
 * Builds the SSL_CTX a listener uses: TLS 1.3 only, a certificate chain
 * and key from PEM files, and, with a CA file, mandatory client
 * certificates verified against that CA.  The context carries the modes
 * the event loop relies on (partial writes, moving write buffers, released
 * idle buffers, read-ahead); net/server.c does the per-connection work.
 *
 * Called once at startup by the daemon (and by tests); the returned
 * SSL_CTX is reference counted by OpenSSL: the caller owns one reference
 * and frees it with SSL_CTX_free() after the server that uses it is
 * destroyed.
 *
 * Attested nodes (trust/attest.h) build their contexts from keys and
 * certificates held in memory instead of files: net_tls_ctx_new, then
 * net_tls_ctx_use_identity and net_tls_ctx_trust.  The three steps are
 * separate so that a daemon can bind its listeners with a context first
 * and install the certificate the coordinator issued afterwards (before
 * net_server_start: a context must not change once connections use it).
 */
#ifndef CLOISTER_NET_TLS_H
#define CLOISTER_NET_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

typedef struct net_tls_config {
    const char *cert_file; /* PEM: the server certificate, then any chain */
    const char *key_file;  /* PEM: its private key */
    const char *ca_file;   /* PEM CA bundle; non-NULL = require client certs */
} net_tls_config;

/*
 * Creates a server SSL_CTX.  Returns CL_OK, CL_EINVAL (cert or key
 * missing), CL_EIO (a file cannot be opened) or CL_ETLS (OpenSSL refused
 * a file, or the key does not match the certificate).  On failure,
 * errbuf (if non-NULL) receives one line naming the file and the reason,
 * fit for the user; OpenSSL's error queue is left empty.
 */
int net_tls_server_ctx_create(const net_tls_config *cfg, SSL_CTX **out,
                              char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- contexts from in-memory keys and certificates ------------------------ */

typedef enum net_tls_role { NET_TLS_SERVER = 0, NET_TLS_CLIENT = 1 } net_tls_role;

/*
 * Creates a context with the settings every Cloister TLS endpoint uses
 * (TLS 1.3 only, the event loop's modes) and neither identity nor trust:
 * a server presents no certificate until use_identity, a client verifies
 * nothing until trust (a caller that connects without trust must
 * authenticate the peer some other way, as the coordinator client does
 * with a quote).  CL_OK or CL_ETLS (errbuf says why).
 */
int net_tls_ctx_new(net_tls_role role, SSL_CTX **out, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Presents cert (then chain, which may be NULL) with its private key.
 * The context takes its own references.  CL_OK or CL_ETLS (e.g. the key
 * does not match the certificate). */
int net_tls_ctx_use_identity(SSL_CTX *ctx, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key,
                             char *errbuf, size_t errlen) __attribute__((warn_unused_result));

/* Verifies the peer against `ca` (a trust anchor; the context takes a
 * reference): a server then requires a client certificate issued by it,
 * a client a server certificate chaining to it (the host name is checked
 * per connection, by the caller).  CL_OK or CL_ETLS. */
int net_tls_ctx_trust(SSL_CTX *ctx, X509 *ca, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* The same with the CA certificates of a PEM file.  CL_OK, CL_EIO (cannot
 * open the file), CL_ETLS. */
int net_tls_ctx_trust_file(SSL_CTX *ctx, const char *ca_file, char *errbuf, size_t errlen)
    __attribute__((warn_unused_result));

/* Appends OpenSSL's queued error reasons to buf (after a ": ") and empties
 * the calling thread's error queue.  Used for log lines. */
void net_tls_drain_errors(char *buf, size_t cap);

#endif
