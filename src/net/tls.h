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

/* Appends OpenSSL's queued error reasons to buf (after a ": ") and empties
 * the calling thread's error queue.  Used for log lines. */
void net_tls_drain_errors(char *buf, size_t cap);

#endif
