/*
 * conn.c - client connections: TCP with a connect timeout, then a
 * verified TLS 1.3 handshake (conn.h).
 *
 * The socket is blocking after connect; SO_RCVTIMEO/SO_SNDTIMEO bound
 * every read and write, and OpenSSL reports a timed-out read as
 * SSL_ERROR_SYSCALL/SSL_ERROR_WANT_READ with errno EAGAIN, which is
 * mapped to CL_EAGAIN.
 */
#include "conn.h"

#include "../common/err.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct client_conn {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    char addr[300];
};

int client_fail(int rc, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* The reason of OpenSSL's first queued error (and empties the queue). */
static const char *ssl_reason(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (!e)
        snprintf(buf, cap, "unexpected end of stream");
    else
        ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

int client_split_addr(const char *addr, char *host, size_t hostcap, char *port, size_t portcap)
{
    const char *p;
    size_t hlen;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            return -1;
        hlen = (size_t)(close - addr - 1);
        if (hlen >= hostcap)
            return -1;
        memcpy(host, addr + 1, hlen);
        p = close + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || strchr(addr, ':') != colon)
            return -1;
        hlen = (size_t)(colon - addr);
        if (hlen >= hostcap)
            return -1;
        memcpy(host, addr, hlen);
        p = colon + 1;
    }
    host[hlen] = '\0';
    if (hlen == 0 || *p == '\0' || strlen(p) >= portcap || strspn(p, "0123456789") != strlen(p))
        return -1;
    long n = strtol(p, NULL, 10);
    if (n <= 0 || n > 65535)
        return -1;
    snprintf(port, portcap, "%s", p);
    return 0;
}

void client_conn_set_timeout(client_conn *c, int timeout_ms)
{
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Non-blocking connect bounded by timeout_ms; the socket is left
 * blocking.  Returns the fd or -1 with errno set. */
static int connect_timeout(const struct addrinfo *ai, int timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        int r;
        do
            r = poll(&pfd, 1, timeout_ms);
        while (r < 0 && errno == EINTR);
        if (r == 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            goto fail;
        if (soerr) {
            errno = soerr;
            goto fail;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int tls_setup(client_conn *c, const char *host, const client_tls *tls, char *err,
                     size_t errlen)
{
    char why[256];
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx)
        return client_fail(CL_ETLS, err, errlen, "TLS: %s", ssl_reason(why, sizeof why));
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (tls->ca_file) {
        if (SSL_CTX_load_verify_locations(c->ctx, tls->ca_file, NULL) != 1)
            return client_fail(CL_ECONFIG, err, errlen, "cannot use the CA file '%s': %s", tls->ca_file,
                        ssl_reason(why, sizeof why));
    } else if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
        return client_fail(CL_ECONFIG, err, errlen, "cannot load the system's CA certificates: %s",
                    ssl_reason(why, sizeof why));
    }
    if (tls->cert_file || tls->key_file) {
        if (!tls->cert_file || !tls->key_file)
            return client_fail(CL_ECONFIG, err, errlen,
                        "a client certificate needs both --cert FILE and --key FILE");
        if (SSL_CTX_use_certificate_chain_file(c->ctx, tls->cert_file) != 1)
            return client_fail(CL_ECONFIG, err, errlen, "cannot use the client certificate '%s': %s",
                        tls->cert_file, ssl_reason(why, sizeof why));
        if (SSL_CTX_use_PrivateKey_file(c->ctx, tls->key_file, SSL_FILETYPE_PEM) != 1)
            return client_fail(CL_ECONFIG, err, errlen, "cannot use the client key '%s': %s",
                        tls->key_file, ssl_reason(why, sizeof why));
        if (SSL_CTX_check_private_key(c->ctx) != 1)
            return client_fail(CL_ECONFIG, err, errlen, "the key '%s' does not match the certificate '%s'",
                        tls->key_file, tls->cert_file);
    }
    c->ssl = SSL_new(c->ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
        return client_fail(CL_ETLS, err, errlen, "TLS: %s", ssl_reason(why, sizeof why));

    /* Verify the name that was dialled: an IP address against the
     * certificate's IP SANs, a host name against its DNS names (and SNI). */
    unsigned char ipbuf[16];
    int is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) != 1)
            return client_fail(CL_ETLS, err, errlen, "TLS: cannot check address %s", host);
    } else {
        SSL_set_tlsext_host_name(c->ssl, host);
        if (SSL_set1_host(c->ssl, host) != 1)
            return client_fail(CL_ETLS, err, errlen, "TLS: cannot check host name %s", host);
    }
    if (SSL_connect(c->ssl) != 1) {
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK)
            return client_fail(CL_ETLS, err, errlen,
                        "TLS handshake with %s failed: the node's certificate is not trusted "
                        "(%s)%s", c->addr, X509_verify_cert_error_string(vr),
                        tls->ca_file ? "" : "; pass the cluster CA with --ca FILE");
        return client_fail(CL_ETLS, err, errlen,
                    "TLS handshake with %s failed: %s (does the node serve TLS? use --plaintext "
                    "for a node started with --plaintext)", c->addr, ssl_reason(why, sizeof why));
    }
    return CL_OK;
}

int client_conn_open(const char *addr, const client_tls *tls, int timeout_ms,
                     client_conn **out, char *err, size_t errlen)
{
    *out = NULL;
    char host[256], port[16];
    if (client_split_addr(addr, host, sizeof host, port, sizeof port) != 0)
        return client_fail(CL_EINVAL, err, errlen,
                    "'%s' is not an address: expected HOST:PORT, e.g. 127.0.0.1:8080", addr);
    client_conn *c = calloc(1, sizeof *c);
    if (!c)
        return client_fail(CL_ENOMEM, err, errlen, "out of memory");
    c->fd = -1;
    snprintf(c->addr, sizeof c->addr, "%s", addr);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        free(c);
        return client_fail(CL_EIO, err, errlen, "cannot connect to %s: %s", addr, gai_strerror(gai));
    }
    int saved = 0;
    for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
        c->fd = connect_timeout(ai, timeout_ms);
        if (c->fd < 0)
            saved = errno;
    }
    freeaddrinfo(res);
    if (c->fd < 0) {
        free(c);
        return client_fail(CL_EIO, err, errlen, "cannot connect to %s: %s", addr, strerror(saved));
    }
    client_conn_set_timeout(c, timeout_ms);
    if (!tls->plaintext) {
        int rc = tls_setup(c, host, tls, err, errlen);
        if (rc != CL_OK) {
            client_conn_close(c);
            return rc;
        }
    }
    *out = c;
    return CL_OK;
}

void client_conn_close(client_conn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

const char *client_conn_addr(const client_conn *c)
{
    return c->addr;
}

int client_conn_write(client_conn *c, const void *p, size_t n, char *err, size_t errlen)
{
    const uint8_t *b = p;
    char why[256];
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : n;
        if (c->ssl) {
            size_t done = 0;
            if (SSL_write_ex(c->ssl, b, chunk, &done) != 1)
                return client_fail(CL_ETLS, err, errlen, "sending to %s failed: %s", c->addr,
                            ssl_reason(why, sizeof why));
            b += done;
            n -= done;
        } else {
            ssize_t w = send(c->fd, b, chunk, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0)
                return client_fail(CL_EIO, err, errlen, "sending to %s failed: %s", c->addr,
                            errno == EAGAIN ? "timed out" : strerror(errno));
            b += w;
            n -= (size_t)w;
        }
    }
    return CL_OK;
}

int client_conn_read(client_conn *c, void *p, size_t cap, size_t *got, char *err, size_t errlen)
{
    *got = 0;
    char why[256];
    if (c->ssl) {
        size_t n = 0;
        errno = 0;
        if (SSL_read_ex(c->ssl, p, cap, &n) == 1) {
            *got = n;
            return CL_OK;
        }
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_ZERO_RETURN)
            return CL_OK;
        if ((e == SSL_ERROR_SYSCALL || e == SSL_ERROR_WANT_READ) &&
            (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ERR_clear_error();
            return client_fail(CL_EAGAIN, err, errlen, "%s did not answer in time", c->addr);
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
            return CL_OK;   /* the peer closed without close_notify: treat as end */
        return client_fail(CL_ETLS, err, errlen, "receiving from %s failed: %s", c->addr,
                    ssl_reason(why, sizeof why));
    }
    for (;;) {
        ssize_t r = recv(c->fd, p, cap, 0);
        if (r >= 0) {
            *got = (size_t)r;
            return CL_OK;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return client_fail(CL_EAGAIN, err, errlen, "%s did not answer in time", c->addr);
        if (errno == ECONNRESET)
            return CL_OK;
        return client_fail(CL_EIO, err, errlen, "receiving from %s failed: %s", c->addr, strerror(errno));
    }
}
