/*
 * tls.c - server SSL_CTX construction; see tls.h.
 *
 * Choices and why:
 *  - TLS 1.3 only: the brief asks for it, and it removes renegotiation, so
 *    the event loop's WANT_READ/WANT_WRITE handling stays simple.
 *  - SSL_MODE_ENABLE_PARTIAL_WRITE + ACCEPT_MOVING_WRITE_BUFFER: the loop
 *    writes a connection's output buffer in pieces and may retry from a
 *    buffer that was reallocated meanwhile.
 *  - SSL_MODE_RELEASE_BUFFERS: an idle connection keeps no 16 KiB record
 *    buffers, so thousands of idle TLS clients stay cheap.
 *  - read-ahead: one read(2) can bring in several records; the loop then
 *    drains them with SSL_has_pending() before it goes back to epoll.
 *  - SSL_OP_IGNORE_UNEXPECTED_EOF: a client that closes without
 *    close_notify is an ordinary end of stream, not an error to log.
 * Every context, from files (net_tls_server_ctx_create) or from memory
 * (net_tls_ctx_new + use_identity + trust), gets these from
 * net_tls_ctx_new, so the two kinds cannot drift apart.
 */
#include "tls.h"

#include "../common/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

void net_tls_drain_errors(char *buf, size_t cap)
{
    size_t len = strlen(buf);
    unsigned long e;
    const char *sep = ": ";

    while ((e = ERR_get_error()) != 0) {
        char one[256];
        ERR_error_string_n(e, one, sizeof one);
        /* OpenSSL's line is "error:0A000086:SSL routines::certificate
         * verify failed"; the reason after the last ':' is what a user
         * needs, but keep the library for context. */
        const char *reason = ERR_reason_error_string(e);
        const char *lib = ERR_lib_error_string(e);
        if (reason && lib)
            snprintf(one, sizeof one, "%s (%s)", reason, lib);
        if (len + 1 < cap) {
            int n = snprintf(buf + len, cap - len, "%s%s", sep, one);
            if (n > 0)
                len = (size_t)n < cap - len ? len + (size_t)n : cap - 1;
        }
        sep = "; ";
    }
}

__attribute__((format(printf, 4, 5)))
static int fail(char *errbuf, size_t errlen, int code, const char *fmt, ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
        net_tls_drain_errors(errbuf, errlen);
    } else {
        ERR_clear_error();
    }
    return code;
}

/* fopen first, so that "no such file" and "permission denied" read as
 * such rather than as an OpenSSL "system lib" error. */
static int check_readable(const char *what, const char *file, char *errbuf, size_t errlen)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "cannot open %s file '%s': %s", what, file, strerror(errno));
        return CL_EIO;
    }
    fclose(f);
    return CL_OK;
}

/* Server contexts verify clients with SSL_VERIFY_FAIL_IF_NO_PEER_CERT; a
 * client context has no such notion. */
static int is_server(SSL_CTX *ctx)
{
    return SSL_CTX_get_ssl_method(ctx) == TLS_server_method();
}

static void require_peer(SSL_CTX *ctx)
{
    SSL_CTX_set_verify(ctx, is_server(ctx) ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                           : SSL_VERIFY_PEER, NULL);
}

static int trust_file(SSL_CTX *ctx, const char *ca_file, char *errbuf, size_t errlen)
{
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
        return fail(errbuf, errlen, CL_ETLS, "cannot load CA file '%s'", ca_file);
    if (is_server(ctx)) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca_file);
        if (!names)
            return fail(errbuf, errlen, CL_ETLS, "no CA certificate found in '%s'", ca_file);
        SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
    }
    require_peer(ctx);
    return CL_OK;
}

int net_tls_ctx_new(net_tls_role role, SSL_CTX **out, char *errbuf, size_t errlen)
{
    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(role == NET_TLS_SERVER ? TLS_server_method() : TLS_client_method());
    if (!ctx)
        return fail(errbuf, errlen, CL_ETLS, "cannot create a TLS context");
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)) {
        SSL_CTX_free(ctx);
        return fail(errbuf, errlen, CL_ETLS, "cannot require TLS 1.3");
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_read_ahead(ctx, 1);
    if (role == NET_TLS_SERVER) {
        /* Needed for session resumption once peers are verified. */
        static const unsigned char sid_ctx[] = "cloister";
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    }
    *out = ctx;
    return CL_OK;
}

int net_tls_ctx_use_identity(SSL_CTX *ctx, X509 *cert, STACK_OF(X509) *chain, EVP_PKEY *key,
                             char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!cert || !key)
        return fail(errbuf, errlen, CL_ETLS, "TLS needs both a certificate and a private key");
    if (SSL_CTX_use_cert_and_key(ctx, cert, key, chain, 1) != 1)
        return fail(errbuf, errlen, CL_ETLS, "cannot use the certificate and key");
    if (SSL_CTX_check_private_key(ctx) != 1)
        return fail(errbuf, errlen, CL_ETLS, "the private key does not match the certificate");
    return CL_OK;
}

int net_tls_ctx_trust(SSL_CTX *ctx, X509 *ca, char *errbuf, size_t errlen)
{
    if (errbuf && errlen)
        errbuf[0] = '\0';
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    if (!ca || !store || X509_STORE_add_cert(store, ca) != 1)
        return fail(errbuf, errlen, CL_ETLS, "cannot trust the CA certificate");
    if (is_server(ctx) && SSL_CTX_add_client_CA(ctx, ca) != 1)
        return fail(errbuf, errlen, CL_ETLS, "cannot announce the CA to clients");
    require_peer(ctx);
    return CL_OK;
}

int net_tls_ctx_trust_file(SSL_CTX *ctx, const char *ca_file, char *errbuf, size_t errlen)
{
    int rc;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if ((rc = check_readable("CA", ca_file, errbuf, errlen)) != CL_OK)
        return rc;
    return trust_file(ctx, ca_file, errbuf, errlen);
}

int net_tls_server_ctx_create(const net_tls_config *cfg, SSL_CTX **out,
                              char *errbuf, size_t errlen)
{
    SSL_CTX *ctx = NULL;
    int rc;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!cfg->cert_file || !cfg->key_file) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "TLS needs both a certificate and a private key file");
        return CL_EINVAL;
    }
    if ((rc = check_readable("certificate", cfg->cert_file, errbuf, errlen)) != CL_OK ||
        (rc = check_readable("private key", cfg->key_file, errbuf, errlen)) != CL_OK ||
        (cfg->ca_file && (rc = check_readable("CA", cfg->ca_file, errbuf, errlen)) != CL_OK))
        return rc;

    if ((rc = net_tls_ctx_new(NET_TLS_SERVER, &ctx, errbuf, errlen)) != CL_OK)
        return rc;

    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert_file) != 1) {
        rc = fail(errbuf, errlen, CL_ETLS,
                  "cannot use certificate file '%s' (expected PEM: certificate, then chain)",
                  cfg->cert_file);
        goto err;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
            rc = fail(errbuf, errlen, CL_ETLS,
                      "private key file '%s' does not match the certificate in '%s'",
                      cfg->key_file, cfg->cert_file);
        else
            rc = fail(errbuf, errlen, CL_ETLS,
                      "cannot use private key file '%s' (expected an unencrypted PEM key)",
                      cfg->key_file);
        goto err;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        rc = fail(errbuf, errlen, CL_ETLS,
                  "private key file '%s' does not match the certificate in '%s'",
                  cfg->key_file, cfg->cert_file);
        goto err;
    }

    if (cfg->ca_file && (rc = trust_file(ctx, cfg->ca_file, errbuf, errlen)) != CL_OK)
        goto err;

    *out = ctx;
    return CL_OK;

err:
    SSL_CTX_free(ctx);
    return rc;
}
