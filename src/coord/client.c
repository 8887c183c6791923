/*
 * client.c - an attested connection to the coordinator (client.h).
 *
 * Blocking socket; SO_RCVTIMEO/SO_SNDTIMEO bound every read and write, so
 * a silent coordinator costs at most the timeout.  Replies are read up to
 * the newline into a buffer of at most COORD_CLIENT_MAX_REPLY bytes.
 */
#include "client.h"
#include "coord.h"
#include "manifest.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../net/addr.h"
#include "../net/tls.h"
#include "../trust/cert.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define COORD_CLIENT_MAX_REPLY (1u << 20)

struct coord_client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    cl_buf in;                  /* bytes read past the last reply */
    X509 *ca;
    attest_quote quote;
    char addr[COORD_MAX_ADDR];
};

__attribute__((format(printf, 4, 5)))
static int fail(int rc, char *why, size_t cap, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return rc;
}

X509 *coord_client_ca(const coord_client *c)
{
    return c->ca;
}

const attest_quote *coord_client_quote(const coord_client *c)
{
    return &c->quote;
}

/* Connect within timeout_ms; the socket is left blocking with I/O
 * timeouts.  Returns the fd, or -1 with errno set. */
static int dial(const struct sockaddr_storage *ss, socklen_t len, int timeout_ms)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int r;
        do
            r = poll(&pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (r == 0)
            errno = ETIMEDOUT;
        else if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr)
            errno = soerr;
        if (r <= 0 || soerr)
            goto fail;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int io_error(coord_client *c, int r, const char *what, char *why, size_t cap)
{
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0))
        return fail(CL_ECLOSED, why, cap, "the coordinator at %s closed the connection", c->addr);
    if ((e == SSL_ERROR_SYSCALL || e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
        (errno == EAGAIN || errno == EWOULDBLOCK))
        return fail(CL_EAGAIN, why, cap, "the coordinator at %s did not answer in time", c->addr);
    char reason[160] = "";
    unsigned long err = ERR_peek_error();
    if (err)
        ERR_error_string_n(err, reason, sizeof reason);
    return fail(CL_ETLS, why, cap, "%s the coordinator at %s failed: %s", what, c->addr,
                reason[0] ? reason : strerror(errno));
}

/* Reads one line (without the newline) into a NUL-terminated malloc'd
 * string. */
static int read_line(coord_client *c, char **line, char *why, size_t cap)
{
    *line = NULL;
    for (;;) {
        uint8_t *nl = c->in.len ? memchr(c->in.data, '\n', c->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - c->in.data);
            char *s = malloc(n + 1);
            if (!s)
                return fail(CL_ENOMEM, why, cap, "out of memory");
            memcpy(s, c->in.data, n);
            s[n] = '\0';
            cl_buf_consume(&c->in, n + 1);
            *line = s;
            return CL_OK;
        }
        if (c->in.len >= COORD_CLIENT_MAX_REPLY)
            return fail(CL_EPROTO, why, cap, "the coordinator's reply is longer than %u bytes",
                        COORD_CLIENT_MAX_REPLY);
        if (cl_buf_reserve(&c->in, 16384) != CL_OK)
            return fail(CL_ENOMEM, why, cap, "out of memory");
        size_t got = 0;
        errno = 0;
        int r = SSL_read_ex(c->ssl, c->in.data + c->in.len, c->in.cap - c->in.len, &got);
        if (r != 1)
            return io_error(c, r, "reading from", why, cap);
        c->in.len += got;
    }
}

int coord_client_call(coord_client *c, json_t *req, json_t **reply, char *why, size_t cap)
{
    *reply = NULL;
    char *text = json_dumps(req, JSON_COMPACT);
    if (!text)
        return fail(CL_ENOMEM, why, cap, "out of memory");
    size_t len = strlen(text);
    text[len] = '\n';   /* json_dumps's NUL becomes the line end */
    size_t done = 0;
    errno = 0;
    int r = SSL_write_ex(c->ssl, text, len + 1, &done);
    free(text);
    if (r != 1)
        return io_error(c, r, "writing to", why, cap);
    char *line;
    int rc = read_line(c, &line, why, cap);
    if (rc != CL_OK)
        return rc;
    json_t *o = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
    free(line);
    if (!json_is_object(o)) {
        json_decref(o);
        return fail(CL_EPROTO, why, cap, "the coordinator at %s sent a malformed reply", c->addr);
    }
    const char *err = json_string_value(json_object_get(o, "error"));
    if (err) {
        json_int_t code = json_integer_value(json_object_get(o, "code"));
        rc = code < 0 && code > -1000 && strcmp(cl_errname((int)code), "CL_E?") != 0
                 ? (int)code : CL_EPROTO;
        fail(rc, why, cap, "the coordinator refused: %s", err);
        json_decref(o);
        return rc;
    }
    *reply = o;
    return CL_OK;
}

/* The attestation exchange: our nonce, its quote, checked. */
static int attest_coordinator(coord_client *c, const attest_policy *expect, char *why, size_t cap)
{
    uint8_t nonce[ATTEST_NONCE_LEN], raw[ATTEST_QUOTE_LEN], keyhash[ATTEST_HASH_LEN];
    char nonce_hex[2 * ATTEST_NONCE_LEN + 1], detail[ATTEST_WHY_LEN];
    if (RAND_bytes(nonce, sizeof nonce) != 1)
        return fail(CL_ECRYPTO, why, cap, "cannot draw a random nonce");
    attest_hex(nonce, sizeof nonce, nonce_hex);
    json_t *req = json_pack("{s:s, s:s}", "op", "quote", "nonce", nonce_hex), *reply = NULL;
    if (!req)
        return fail(CL_ENOMEM, why, cap, "out of memory");
    int rc = coord_client_call(c, req, &reply, why, cap);
    json_decref(req);
    if (rc != CL_OK)
        return rc;
    const char *qhex = json_string_value(json_object_get(reply, "quote"));
    const char *cert_pem = json_string_value(json_object_get(reply, "certificate"));
    const char *ca_pem = json_string_value(json_object_get(reply, "ca"));
    X509 *sent = NULL;
    X509 *presented = SSL_get0_peer_certificate(c->ssl);
    if (!qhex || !cert_pem || !ca_pem || attest_unhex(qhex, raw, sizeof raw) != 0 ||
        cert_from_pem(cert_pem, &sent) != CL_OK || cert_from_pem(ca_pem, &c->ca) != CL_OK) {
        rc = fail(CL_EPROTO, why, cap, "%s did not answer like a Cloister coordinator", c->addr);
    } else if (attest_quote_decode(raw, sizeof raw, &c->quote, detail, sizeof detail) != CL_OK ||
               !presented || attest_pubkey_hash(X509_get0_pubkey(presented), keyhash) != CL_OK ||
               attest_quote_verify(&c->quote, expect, keyhash, nonce, detail, sizeof detail) !=
                   CL_OK) {
        rc = fail(CL_EATTEST, why, cap, "the coordinator at %s failed attestation: %s", c->addr,
                  presented ? detail : "it presented no certificate");
    } else if (X509_cmp(sent, presented) != 0 || !cert_issued_by(presented, c->ca)) {
        rc = fail(CL_EATTEST, why, cap, "the coordinator at %s failed attestation: its "
                  "certificate was not issued by the CA it sent", c->addr);
    }
    X509_free(sent);
    json_decref(reply);
    return rc;
}

int coord_client_open(const char *addr, const attest_policy *expect, int timeout_ms,
                      coord_client **out, char *why, size_t cap)
{
    *out = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen;
    char host[COORD_MAX_ADDR];
    if (!addr || strlen(addr) >= COORD_MAX_ADDR || coord_addr_host(addr, host, sizeof host) != 0 ||
        net_addr_parse(addr, &ss, &sslen) != CL_OK)
        return fail(CL_EINVAL, why, cap, "'%s' is not a coordinator address: expected HOST:PORT",
                    addr ? addr : "");
    coord_client *c = calloc(1, sizeof *c);
    if (!c)
        return fail(CL_ENOMEM, why, cap, "out of memory");
    cl_buf_init(&c->in);
    c->fd = -1;
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    int rc;
    c->fd = dial(&ss, sslen, timeout_ms > 0 ? timeout_ms : 10000);
    if (c->fd < 0) {
        rc = fail(CL_EIO, why, cap, "cannot connect to the coordinator at %s: %s", addr,
                  strerror(errno));
        goto fail;
    }
    char err[256];
    if ((rc = net_tls_ctx_new(NET_TLS_CLIENT, &c->ctx, err, sizeof err)) != CL_OK) {
        fail(rc, why, cap, "TLS: %s", err);
        goto fail;
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        rc = fail(CL_ETLS, why, cap, "TLS: cannot create a connection");
        goto fail;
    }
    errno = 0;
    int r = SSL_connect(c->ssl);
    if (r != 1) {
        rc = io_error(c, r, "the TLS handshake with", why, cap);
        goto fail;
    }
    if ((rc = attest_coordinator(c, expect, why, cap)) != CL_OK)
        goto fail;
    *out = c;
    return CL_OK;
fail:
    coord_client_close(c);
    return rc;
}

void coord_client_close(coord_client *c)
{
    if (!c)
        return;
    if (c->ssl) {
        if (SSL_is_init_finished(c->ssl))
            SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    X509_free(c->ca);
    cl_buf_fini(&c->in, 0);
    free(c);
}
