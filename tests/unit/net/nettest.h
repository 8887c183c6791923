/*
 * nettest.h - shared by the net unit tests (test_server.c, test_tls.c).
 *
 * Provides:
 *   - "echo", a tiny line protocol implementing net_proto: every line
 *     ("...\n") is echoed; "BIG n\n" followed by n bytes is answered
 *     "BIG n <fnv1a-32 hex>\n" (and sets *want while incomplete); "QUIT\n"
 *     is answered "BYE\n" and closes; "WHO\n" is answered "THREAD t\n",
 *     t the index of the worker serving the connection.  Counters of live
 *     thread states and sessions let tests see that the loop frees what it
 *     created.
 *   - a blocking test client (plain or TLS) with I/O timeouts, so a broken
 *     server fails a check instead of hanging the test;
 *   - certificates made with the OpenSSL API in a temp dir: a CA, a server
 *     certificate and a client certificate it signed, and a "rogue" CA
 *     with its own client certificate.
 * Checks from helper threads go through th_failures_bg (the harness
 * counters are not thread-safe); the main thread reports them.
 */
#ifndef CLOISTER_TEST_NETTEST_H
#define CLOISTER_TEST_NETTEST_H

#include "../harness.h"

#pragma GCC diagnostic ignored "-Wunused-function" /* each test uses a subset */

#include "net/addr.h"
#include "net/server.h"
#include "net/tls.h"
#include "common/err.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* REQUIRE of harness.h evaluates its condition twice; MUST evaluates once,
 * so it can wrap calls with side effects. */
#define MUST(cond)                                                            \
    do {                                                                      \
        int must_ok_ = !!(cond);                                              \
        th_check(must_ok_, __FILE__, __LINE__, #cond);                        \
        if (!must_ok_) {                                                      \
            fprintf(stderr, "%lu passed, %lu failed\n", th_passed, th_failed);\
            exit(1);                                                          \
        }                                                                     \
    } while (0)

/* ---- the echo protocol --------------------------------------------------- */

#define ECHO_SESSION_MAGIC 0x5e55107u
#define ECHO_FAIL_THREAD_INIT ((void *)1) /* proto_arg: thread 1's init fails */

static atomic_int echo_threads_alive;
static atomic_int echo_sessions_alive;
static atomic_long echo_sessions_total;

typedef struct echo_thread {
    int index;
} echo_thread;

typedef struct echo_session {
    uint32_t magic;
    echo_thread *thr;
} echo_session;

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void *echo_thread_init(void *arg, int index)
{
    if (arg == ECHO_FAIL_THREAD_INIT && index == 1)
        return NULL;
    echo_thread *t = calloc(1, sizeof *t);
    t->index = index;
    atomic_fetch_add(&echo_threads_alive, 1);
    return t;
}

static void echo_thread_fini(void *ts)
{
    free(ts);
    atomic_fetch_sub(&echo_threads_alive, 1);
}

static void echo_session_init(void *s, void *ts)
{
    echo_session *e = s;
    if (e->magic != 0 || e->thr != NULL)
        abort(); /* the loop must hand out zeroed sessions */
    e->magic = ECHO_SESSION_MAGIC;
    e->thr = ts;
    atomic_fetch_add(&echo_sessions_alive, 1);
    atomic_fetch_add(&echo_sessions_total, 1);
}

static void echo_session_fini(void *s, void *ts)
{
    echo_session *e = s;
    if (e->magic != ECHO_SESSION_MAGIC || e->thr != ts)
        abort();
    e->magic = 0;
    atomic_fetch_sub(&echo_sessions_alive, 1);
}

static size_t echo_process(void *s, void *ts, const uint8_t *in, size_t len, cl_buf *out,
                           int *close, size_t *want)
{
    size_t done = 0;
    const echo_thread *thr = ts;
    (void)s;
    while (done < len) {
        const uint8_t *p = in + done;
        size_t n = len - done;
        const uint8_t *nl = memchr(p, '\n', n);
        if (!nl)
            break;
        size_t line = (size_t)(nl - p) + 1;
        if (line > 4 && memcmp(p, "BIG ", 4) == 0) {
            size_t size = 0;
            for (const uint8_t *d = p + 4; d < nl; d++)
                size = size * 10 + (size_t)(*d - '0');
            if (n - line < size) {
                *want = line + size;
                break;
            }
            if (cl_buf_printf(out, "BIG %zu %08x\n", size, fnv1a(p + line, size)) != CL_OK)
                abort();
            done += line + size;
            continue;
        }
        if (line == 5 && memcmp(p, "QUIT\n", 5) == 0) {
            if (cl_buf_append(out, "BYE\n", 4) != CL_OK)
                abort();
            *close = 1;
            return done + line;
        }
        if (line == 4 && memcmp(p, "WHO\n", 4) == 0) {
            if (cl_buf_printf(out, "THREAD %d\n", thr->index) != CL_OK)
                abort();
            done += line;
            continue;
        }
        if (cl_buf_append(out, p, line) != CL_OK)
            abort();
        done += line;
    }
    return done;
}

static const net_proto echo_proto = {
    .name = "echo",
    .thread_init = echo_thread_init,
    .thread_fini = echo_thread_fini,
    .session_size = sizeof(echo_session),
    .session_init = echo_session_init,
    .session_fini = echo_session_fini,
    .process = echo_process,
    .max_pending = 4u << 20,
};

/* ---- time and waiting ------------------------------------------------------- */

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Polls until *p == want (up to `seconds`); returns the last value. */
static int wait_atomic_int(atomic_int *p, int want, double seconds)
{
    double end = now_sec() + seconds;
    int v;
    while ((v = atomic_load(p)) != want && now_sec() < end)
        sleep_ms(2);
    return v;
}

static uint64_t wait_curr_connections(net_server *s, uint64_t want, double seconds)
{
    double end = now_sec() + seconds;
    net_stats st;
    for (;;) {
        net_server_get_stats(s, &st);
        if (st.curr_connections == want || now_sec() > end)
            return st.curr_connections;
        sleep_ms(2);
    }
}

/* ---- servers ------------------------------------------------------------ */

static net_server *server_start(const net_proto *p, void *arg, SSL_CTX *ctx, int threads, int *port)
{
    net_listener_config l = { .addr = "127.0.0.1:0", .proto = p, .proto_arg = arg, .ssl_ctx = ctx };
    net_server_config cfg = { .listeners = &l, .n_listeners = 1, .threads = threads };
    net_server *s = NULL;
    MUST(net_server_create(&cfg, &s) == CL_OK);
    MUST(net_server_start(s) == CL_OK);
    struct sockaddr_storage ss;
    socklen_t len;
    MUST(net_server_listener_addr(s, 0, &ss, &len) == CL_OK);
    *port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    MUST(*port > 0);
    return s;
}

/* ---- the test client ------------------------------------------------------ */

typedef struct tconn {
    int fd;
    SSL *ssl;
    uint8_t buf[16384];
    size_t off, len;   /* buffered input [off, len) */
} tconn;

static int tc_socket(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Connects (and, with cctx, completes a TLS handshake).  Returns a heap
 * tconn or NULL. */
static tconn *tc_connect(int port, SSL_CTX *cctx)
{
    tconn *c = calloc(1, sizeof *c);
    c->fd = tc_socket(port, 10000);
    if (c->fd < 0) {
        free(c);
        return NULL;
    }
    if (cctx) {
        c->ssl = SSL_new(cctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        if (SSL_connect(c->ssl) != 1) {
            ERR_clear_error();
            SSL_free(c->ssl);
            close(c->fd);
            free(c);
            return NULL;
        }
    }
    return c;
}

static void tc_close(tconn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        SSL_free(c->ssl);
        ERR_clear_error();
    }
    close(c->fd);
    free(c);
}

static int tc_write(tconn *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t r;
        if (c->ssl) {
            r = SSL_write(c->ssl, b, n > INT_MAX ? INT_MAX : (int)n);
            if (r <= 0) {
                ERR_clear_error();
                return -1;
            }
        } else {
            r = send(c->fd, b, n, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                return -1;
            }
        }
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

static int tc_puts(tconn *c, const char *s) { return tc_write(c, s, strlen(s)); }

/* Some bytes: > 0, 0 on EOF, -1 on error or timeout. */
static ssize_t tc_read_some(tconn *c, void *p, size_t n)
{
    if (c->off < c->len) {
        size_t k = c->len - c->off < n ? c->len - c->off : n;
        memcpy(p, c->buf + c->off, k);
        c->off += k;
        return (ssize_t)k;
    }
    if (c->ssl) {
        int r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        return r;
    }
}

static int tc_read_exact(tconn *c, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t r = tc_read_some(c, b, n);
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Reads one line including "\n" into line (NUL-terminated).  Returns its
 * length, or -1 (error, EOF, timeout, longer than cap - 1). */
static ssize_t tc_read_line(tconn *c, char *line, size_t cap)
{
    size_t n = 0;
    for (;;) {
        if (c->off == c->len) {
            c->off = 0;
            c->len = 0;
            ssize_t r = tc_read_some(c, c->buf, sizeof c->buf);
            if (r <= 0)
                return -1;
            c->len = (size_t)r;
        }
        uint8_t ch = c->buf[c->off++];
        if (n + 1 >= cap)
            return -1;
        line[n++] = (char)ch;
        if (ch == '\n') {
            line[n] = '\0';
            return (ssize_t)n;
        }
    }
}

/* The index of the worker serving c (echo's WHO), or -1. */
static int tc_thread(tconn *c)
{
    char got[64];
    int t;
    if (tc_puts(c, "WHO\n") != 0 || tc_read_line(c, got, sizeof got) < 0 ||
        sscanf(got, "THREAD %d\n", &t) != 1)
        return -1;
    return t;
}

/* Sends line and expects the same line back. */
static int tc_echo(tconn *c, const char *line)
{
    char got[4096];
    if (tc_puts(c, line) != 0)
        return -1;
    ssize_t n = tc_read_line(c, got, sizeof got);
    return n >= 0 && strcmp(got, line) == 0 ? 0 : -1;
}

/* 1 when the server closed the connection (EOF, reset or, for TLS, an
 * alert) before the read timeout; 0 on timeout.  Data before the end is
 * skipped. */
static int tc_closed_by_peer(tconn *c)
{
    uint8_t b[4096];
    c->off = c->len = 0;
    for (;;) {
        if (!c->ssl) {
            ssize_t r = recv(c->fd, b, sizeof b, 0);
            if (r == 0)
                return 1;
            if (r < 0 && errno != EINTR)
                return errno == ECONNRESET || errno == EPIPE;
            continue;
        }
        errno = 0;
        int r = SSL_read(c->ssl, b, sizeof b);
        if (r > 0)
            continue;
        int e = SSL_get_error(c->ssl, r);
        int timed_out = e == SSL_ERROR_WANT_READ ||
                        (e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK));
        ERR_clear_error();
        return !timed_out;
    }
}

/* ---- certificates -------------------------------------------------------- */

typedef struct test_pki {
    char dir[64];
    char ca[128], server_cert[128], server_key[128];
    char client_cert[128], client_key[128];
    char rogue_cert[128], rogue_key[128]; /* signed by a CA the server does not trust */
} test_pki;

static EVP_PKEY *pki_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    MUST(k != NULL);
    return k;
}

/* A certificate for key, named cn, signed by (issuer, issuer_key), or
 * self-signed when issuer is NULL. */
static X509 *pki_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, int ca)
{
    static long serial = 1;
    X509 *x = X509_new();
    MUST(x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);

    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    const char *exts[][2] = {
        { "basicConstraints", ca ? "critical,CA:TRUE" : "CA:FALSE" },
        { "keyUsage", ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature" },
        { "subjectAltName", ca ? NULL : "DNS:localhost,IP:127.0.0.1" },
    };
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
        if (!exts[i][1])
            continue;
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        MUST(e != NULL);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    MUST(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

static void pki_write(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    MUST(f != NULL);
    if (x)
        MUST(PEM_write_X509(f, x) == 1);
    if (k)
        MUST(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1);
    fclose(f);
}

static void pki_create(test_pki *p)
{
    snprintf(p->dir, sizeof p->dir, "/tmp/cl-nettest-XXXXXX");
    MUST(mkdtemp(p->dir) != NULL);
#define PKI_PATH(field, name) snprintf(p->field, sizeof p->field, "%s/%s", p->dir, name)
    PKI_PATH(ca, "ca.pem");
    PKI_PATH(server_cert, "server.pem");
    PKI_PATH(server_key, "server.key");
    PKI_PATH(client_cert, "client.pem");
    PKI_PATH(client_key, "client.key");
    PKI_PATH(rogue_cert, "rogue.pem");
    PKI_PATH(rogue_key, "rogue.key");
#undef PKI_PATH
    EVP_PKEY *cak = pki_key(), *sk = pki_key(), *ck = pki_key(), *rcak = pki_key(), *rk = pki_key();
    X509 *ca = pki_cert("cloister test CA", cak, NULL, NULL, 1);
    X509 *srv = pki_cert("localhost", sk, ca, cak, 0);
    X509 *cli = pki_cert("test client", ck, ca, cak, 0);
    X509 *rca = pki_cert("rogue CA", rcak, NULL, NULL, 1);
    X509 *rog = pki_cert("rogue client", rk, rca, rcak, 0);
    pki_write(p->ca, ca, NULL);
    /* The server file carries its chain: certificate, then the CA. */
    FILE *f = fopen(p->server_cert, "w");
    MUST(f && PEM_write_X509(f, srv) == 1 && PEM_write_X509(f, ca) == 1);
    fclose(f);
    pki_write(p->server_key, NULL, sk);
    pki_write(p->client_cert, cli, NULL);
    pki_write(p->client_key, NULL, ck);
    pki_write(p->rogue_cert, rog, NULL);
    pki_write(p->rogue_key, NULL, rk);
    X509 *xs[] = { ca, srv, cli, rca, rog };
    EVP_PKEY *ks[] = { cak, sk, ck, rcak, rk };
    for (int i = 0; i < 5; i++) {
        X509_free(xs[i]);
        EVP_PKEY_free(ks[i]);
    }
}

static void pki_destroy(test_pki *p)
{
    const char *files[] = { p->ca, p->server_cert, p->server_key, p->client_cert,
                            p->client_key, p->rogue_cert, p->rogue_key };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        unlink(files[i]);
    rmdir(p->dir);
}

static SSL_CTX *pki_server_ctx(const test_pki *p, int require_client_cert)
{
    net_tls_config cfg = { .cert_file = p->server_cert, .key_file = p->server_key,
                           .ca_file = require_client_cert ? p->ca : NULL };
    SSL_CTX *ctx = NULL;
    char err[512];
    int rc = net_tls_server_ctx_create(&cfg, &ctx, err, sizeof err);
    if (rc != CL_OK)
        fprintf(stderr, "server ctx: %s\n", err);
    MUST(rc == CL_OK);
    return ctx;
}

/* A client context that verifies the server against the test CA.
 * cert: NULL, "client" or "rogue".  max_version 0 = library default. */
static SSL_CTX *pki_client_ctx(const test_pki *p, const char *cert, int max_version)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    MUST(ctx != NULL);
    MUST(SSL_CTX_load_verify_locations(ctx, p->ca, NULL) == 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_version)
        MUST(SSL_CTX_set_max_proto_version(ctx, max_version) == 1);
    if (cert) {
        int rogue = strcmp(cert, "rogue") == 0;
        MUST(SSL_CTX_use_certificate_file(ctx, rogue ? p->rogue_cert : p->client_cert,
                                             SSL_FILETYPE_PEM) == 1);
        MUST(SSL_CTX_use_PrivateKey_file(ctx, rogue ? p->rogue_key : p->client_key,
                                            SSL_FILETYPE_PEM) == 1);
    }
    return ctx;
}

#endif
