/*
 * peer.c - the mutual-TLS mesh between nodes; see peer.h (API, frames)
 * and transport.h (the contract with the engine).
 *
 * Threads.  Everything here runs on the repl thread, except create,
 * start, stop, destroy, get_stats (the controlling thread) and the
 * transport's wake() (any thread: an atomic flag and, when it was clear,
 * one eventfd write).  The hooks run on the repl thread only, between
 * I/O steps, never nested inside another hook except through the engine's
 * own send()/flush() calls.
 *
 * Connections.
 *   out (one per peer, a struct that lives as long as the mesh):
 *     IDLE --dial--> CONNECTING --TCP up--> HANDSHAKE --TLS done, cert
 *     names the dialled node--> WELCOME (hello written, waiting for the
 *     listener's welcome) --welcome checked--> UP (on_peer(id, 1); send()
 *     accepts frames) --error, EOF, time-out--> IDLE (on_peer(id, 0) if it
 *     was UP; redial after a backoff of reconnect_min..max ms with
 *     jitter, reset once a connection has stayed up a second).
 *     Setting up (CONNECTING..WELCOME) must finish within
 *     PEER_SETUP_TIMEOUT_US.  A failure inside flush() only marks the
 *     connection broken; the loop closes it after the current step, so a
 *     hook never sees a connection vanish under it.
 *   in (accepted; at most PEER_MAX_INCOMING; freed after the epoll batch
 *     that closed it, so later events of the batch never touch freed
 *     memory):
 *     HANDSHAKE --TLS done, cert names a peer--> HELLO --hello checked,
 *     welcome written--> OPEN (data frames delivered) --error--> DEAD.
 *     A newer accepted hello of the same node closes its older incoming
 *     connections (the dialler keeps one; a new one means the old is
 *     gone), and a hello with a higher epoch also resets our outgoing
 *     connection to that node if it was set up with an older epoch (it
 *     talks to a dead incarnation, or to a proxy in front of one).
 *
 * Data path.  send() appends header + payload to the peer's output
 * buffer (amortised growth, no allocation per message); flush() hands the
 * whole buffer to SSL_write (partial-write mode: OpenSSL writes one
 * record, at most 16 KiB, per call and per write(2)); when the socket is
 * full the connection waits for EPOLLOUT and flush() does not retry
 * until then.  Reads go straight into the connection's input buffer
 * (OpenSSL read-ahead with a 64 KiB buffer, so one read(2) brings several
 * records); complete frames are delivered in place, the incomplete tail
 * moves to the front.  One connection reads at most PEER_READ_BUDGET per
 * event; if OpenSSL still holds input then (invisible to epoll), the loop
 * comes back to it without sleeping.
 *
 * Timer.  on_tick runs after every batch that delivered messages and
 * otherwise every PEER_TICK_US while anything happened in the last
 * PEER_ACTIVE_US (a message, a wake, a send), every PEER_IDLE_TICK_US
 * when idle.
 *
 * Never: log a payload or key material; block; deliver a frame before the
 * connection's certificate, hello and sequence have been checked.
 */
#include "peer.h"

#include "../common/buf.h"
#include "../common/err.h"
#include "../common/log.h"
#include "../net/addr.h"
#include "../net/tls.h"

#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define PEER_HDR              4                 /* u32 len */
#define PEER_HELLO_LEN        16                /* magic, id, epoch */
#define PEER_HELLO_FRAME      (PEER_HDR + PEER_HELLO_LEN)
#define PEER_DATA_HDR         (PEER_HDR + 8)    /* len, seq */
#define PEER_MAX_FRAME        (8 + (size_t)REPL_MAX_MSG)
#define PEER_READ_CHUNK       (32 * 1024)       /* least free input space per SSL_read */
#define PEER_READ_BUDGET      (1024 * 1024)     /* bytes per connection per event */
#define PEER_BUF_KEEP         (1024 * 1024)     /* larger idle buffers are freed */
#define PEER_TLS_RBUF         (64 * 1024)       /* OpenSSL read-ahead buffer */
#define PEER_MAX_INCOMING     64
#define PEER_DEFAULT_MAX_OUT  ((size_t)64 << 20)
#define PEER_SETUP_TIMEOUT_US (2 * 1000000ull)  /* connect + TLS + hello/welcome */
#define PEER_UP_STABLE_US     (1000000ull)      /* up this long: backoff starts over */
#define PEER_TICK_US          1000ull
#define PEER_IDLE_TICK_US     10000ull
#define PEER_ACTIVE_US        100000ull
#define PEER_EPOLL_EVENTS     64
#define PEER_LOG_PER_SEC      20

static const char MOD[] = "peer";
static const uint8_t MAGIC_HELLO[4] = { 'C', 'L', 'P', '1' };
static const uint8_t MAGIC_WELCOME[4] = { 'C', 'L', 'P', 'W' };

/* epoll_event.data.ptr points at an object whose first byte says what it is. */
enum { EP_LISTEN = 1, EP_WAKE = 2, EP_STOP = 3, EP_OUT = 4, EP_IN = 5 };
static const uint8_t listen_tag = EP_LISTEN, wake_tag = EP_WAKE, stop_tag = EP_STOP;

enum { OUT_IDLE = 0, OUT_CONNECTING, OUT_HANDSHAKE, OUT_WELCOME, OUT_UP };
enum { IN_HANDSHAKE = 0, IN_HELLO, IN_OPEN, IN_DEAD };

typedef struct peer_out {
    uint8_t kind;              /* EP_OUT; first */
    uint8_t state;             /* OUT_* */
    uint8_t hs_want_write;     /* the handshake waits for writability */
    uint8_t write_blocked;     /* SSL_write said WANT_WRITE: wait for EPOLLOUT */
    uint8_t write_wants_read;  /* SSL_write said WANT_READ */
    uint8_t read_wants_write;  /* SSL_read said WANT_WRITE */
    uint8_t broken;            /* a write failed inside a hook: close after the step */
    int id;
    int fd;
    SSL *ssl;
    uint32_t events;           /* registered epoll mask (0 when not registered) */
    char *addr_text;           /* where we dial; NULL: no address yet */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    /* A new address from peer_mesh_set_peer_addr (any thread), under the
     * mesh's addr_mu; taken at the next dial. */
    atomic_int addr_pending;
    char *new_text;
    struct sockaddr_storage new_addr;
    socklen_t new_len;
    cl_buf out;                /* frames; [out_off, out.len) not written yet */
    size_t out_off;
    uint64_t seq;              /* last data seq queued on this connection */
    uint8_t win[PEER_HELLO_FRAME]; /* the welcome, as it arrives */
    size_t win_len;
    uint64_t remote_epoch;     /* from the welcome */
    uint64_t next_attempt_us;  /* IDLE: when to dial */
    uint64_t backoff_us;       /* the next delay after a failure */
    uint64_t deadline_us;      /* CONNECTING..WELCOME: give up at */
    uint64_t up_since_us;
    char why[160];             /* broken: what failed */
} peer_out;

typedef struct peer_in {
    uint8_t kind;              /* EP_IN; first */
    uint8_t state;             /* IN_* */
    uint8_t hs_want_write;
    uint8_t read_wants_write;
    uint8_t welcome_blocked;   /* the welcome waits for writability (or readability) */
    uint8_t welcome_wants_read;
    uint8_t more;              /* OpenSSL holds input the read budget left behind */
    int fd;
    SSL *ssl;
    uint32_t events;
    int node;                  /* from the certificate (HELLO, OPEN) */
    uint64_t epoch;            /* from the hello (OPEN) */
    uint64_t next_seq;         /* OPEN: the seq the next data frame must carry */
    cl_buf in;                 /* received, not yet consumed */
    size_t want;               /* size of the incomplete frame at the front, 0 unknown */
    uint8_t wout[PEER_HELLO_FRAME]; /* the welcome we send */
    size_t wout_off, wout_len;
    uint64_t deadline_us;      /* HANDSHAKE, HELLO: give up at */
    char addr[NET_ADDR_STRLEN];
    struct peer_in *prev, *next;
} peer_in;

enum { MESH_CREATED = 0, MESH_RUNNING = 1, MESH_STOPPED = 2 };

struct peer_mesh {
    int self;
    uint64_t epoch;
    repl_engine_hooks hooks;
    peer_verify_fn verify;
    void *verify_arg;
    size_t max_out;
    uint64_t backoff_min_us, backoff_max_us;
    SSL_CTX *sctx, *cctx;      /* listener side, dialler side */
    int listen_fd, epfd, wake_fd, stop_fd;
    struct sockaddr_storage bound;
    peer_out *out[REPL_MAX_NODES + 1];      /* by node id; NULL: self or not a peer */
    uint64_t seen_epoch[REPL_MAX_NODES + 1]; /* highest epoch seen (or min_epoch) */
    peer_in *ins;              /* live incoming connections */
    size_t n_in;
    peer_in *dead;             /* closed during this batch; freed after it */
    pthread_mutex_t addr_mu;   /* peer_out.new_*: a leaf lock, never held across I/O */
    pthread_t tid;
    int state;
    atomic_int wake_pending;
    uint64_t now;              /* the loop's clock, refreshed per batch */
    uint64_t last_tick, last_activity;
    uint64_t delivered;        /* messages delivered in this batch */
    uint64_t rng;
    uint64_t log_window;
    unsigned log_count, log_suppressed;
    uint8_t scratch[256];      /* reads of an outgoing connection (expects nothing) */
    peer_stats st;
};

/* ---- small helpers ---------------------------------------------------------- */

/* Only the repl thread writes a counter; readers use relaxed loads. */
static inline void stat_add(uint64_t *p, uint64_t d) { __atomic_store_n(p, *p + d, __ATOMIC_RELAXED); }
static inline uint64_t stat_get(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

static uint64_t mesh_random(peer_mesh *m)
{
    uint64_t x = m->rng; /* xorshift64: jitter only */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return m->rng = x;
}

/* Logs at most PEER_LOG_PER_SEC lines a second, so a peer (or a man in
 * the middle) that fails connections in a loop cannot flood the log. */
__attribute__((format(printf, 3, 4)))
static void mesh_log(peer_mesh *m, int level, const char *fmt, ...)
{
    if (level > cl_log_get_level())
        return;
    uint64_t now = mono_us();
    if (now - m->log_window >= 1000000) {
        if (m->log_suppressed)
            cl_log_warn(MOD, "node %d: %u more peer log lines suppressed", m->self,
                        m->log_suppressed);
        m->log_window = now;
        m->log_count = m->log_suppressed = 0;
    }
    if (m->log_count >= PEER_LOG_PER_SEC) {
        m->log_suppressed++;
        return;
    }
    m->log_count++;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl_log(level, MOD, "node %d: %s", m->self, msg);
}

/* One line about the last TLS failure: the refused certificate, OpenSSL's
 * queued reasons, or the socket error.  Empties the thread's error queue. */
static void tls_reason(SSL *ssl, int ssl_err, char *buf, size_t cap)
{
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        snprintf(buf, cap, "certificate refused: %s", X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    if (ssl_err == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, cap, "closed by the peer");
    else if (ssl_err == SSL_ERROR_SYSCALL)
        snprintf(buf, cap, "%s", errno ? strerror(errno) : "connection closed");
    else
        snprintf(buf, cap, "TLS failure");
    net_tls_drain_errors(buf, cap); /* appends ": <reason (library)>" for each */
}

static void sock_tune(int fd)
{
    int one = 1, idle = 5, intvl = 2, cnt = 3;
    unsigned timeout_ms = 10000; /* unacknowledged data this long: the peer is gone */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
}

/* Registers (or changes) what fd waits for.  0, or -1 (epoll refused). */
static int ep_set(peer_mesh *m, int fd, void *obj, uint32_t *cur, uint32_t want)
{
    if (*cur == want)
        return 0;
    struct epoll_event ev = { .events = want, .data.ptr = obj };
    if (epoll_ctl(m->epfd, *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0)
        return -1;
    *cur = want;
    return 0;
}

static void frame_hello(uint8_t *p, const uint8_t magic[4], int id, uint64_t epoch)
{
    put32(p, PEER_HELLO_LEN);
    memcpy(p + 4, magic, 4);
    put32(p + 8, (uint32_t)id);
    put64(p + 12, epoch);
}

/* ---- identity ----------------------------------------------------------------- */

int peer_cert_node_id(X509 *cert, int *node_id_out, char *why, size_t cap)
{
    static const char prefix[] = "cloister-node-";
    X509_NAME *name = cert ? X509_get_subject_name(cert) : NULL;
    int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (i < 0) {
        snprintf(why, cap, "the certificate has no subject CN");
        return CL_EATTEST;
    }
    if (X509_NAME_get_index_by_NID(name, NID_commonName, i) >= 0) {
        snprintf(why, cap, "the certificate has more than one subject CN");
        return CL_EATTEST;
    }
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    const unsigned char *d = ASN1_STRING_get0_data(s);
    int len = ASN1_STRING_length(s);
    size_t plen = sizeof prefix - 1;
    if (len <= (int)plen || len > (int)plen + 2 || memcmp(d, prefix, plen) != 0)
        goto bad;
    int id = 0;
    for (int k = (int)plen; k < len; k++) {
        if (d[k] < '0' || d[k] > '9' || (k == (int)plen && d[k] == '0'))
            goto bad;
        id = id * 10 + (d[k] - '0');
    }
    if (id < 1 || id > REPL_MAX_NODES)
        goto bad;
    *node_id_out = id;
    return CL_OK;
bad:
    snprintf(why, cap, "the certificate's CN is not cloister-node-<1..%d>", REPL_MAX_NODES);
    return CL_EATTEST;
}

/*
 * After a completed handshake: the node the peer's certificate names.
 * OpenSSL has verified the chain against the cluster CA (the handshake
 * fails otherwise; checked again here).  CL_OK, or CL_EATTEST with the
 * reason in why, counted as refused_cert or refused_id.
 */
static int mesh_identify(peer_mesh *m, SSL *ssl, int *id, char *why, size_t cap)
{
    long vr = SSL_get_verify_result(ssl);
    X509 *cert = SSL_get0_peer_certificate(ssl);
    if (vr != X509_V_OK || !cert || SSL_version(ssl) != TLS1_3_VERSION) {
        snprintf(why, cap, "certificate refused: %s",
                 vr != X509_V_OK ? X509_verify_cert_error_string(vr)
                 : !cert ? "no certificate" : "not TLS 1.3");
        stat_add(&m->st.refused_cert, 1);
        return CL_EATTEST;
    }
    why[0] = '\0';
    int rc = m->verify ? m->verify(m->verify_arg, cert, id, why, cap)
                       : peer_cert_node_id(cert, id, why, cap);
    if (rc != CL_OK) {
        if (!why[0])
            snprintf(why, cap, "%s", cl_strerror(rc));
        stat_add(&m->st.refused_cert, 1);
        return CL_EATTEST;
    }
    if (*id < 1 || *id > REPL_MAX_NODES || !m->out[*id]) {
        snprintf(why, cap, "the certificate names node %d, which is not a peer of node %d",
                 *id, m->self);
        stat_add(&m->st.refused_id, 1);
        return CL_EATTEST;
    }
    return CL_OK;
}

static void in_close(peer_mesh *m, peer_in *c, int level, const char *why);
static void out_fail(peer_mesh *m, peer_out *o, int level, const char *why);

/* A hello or welcome proved node `id` runs incarnation `epoch` (already
 * checked >= seen_epoch[id]).  Connections to or from an older one are
 * dead ends: close them. */
static void mesh_saw_epoch(peer_mesh *m, int id, uint64_t epoch)
{
    if (epoch <= m->seen_epoch[id])
        return;
    m->seen_epoch[id] = epoch;
    for (peer_in *c = m->ins, *next; c; c = next) {
        next = c->next;
        if (c->node == id && c->state == IN_OPEN && c->epoch < epoch)
            in_close(m, c, CL_LOG_INFO, "node restarted (newer epoch seen)");
    }
    peer_out *o = m->out[id];
    if (o->state == OUT_UP && o->remote_epoch < epoch)
        out_fail(m, o, CL_LOG_INFO, "node restarted (newer epoch seen)");
}

/* ---- outgoing connections -------------------------------------------------------- */

static void out_hook_peer(peer_mesh *m, int id, int up)
{
    if (m->hooks.on_peer)
        m->hooks.on_peer(m->hooks.engine, id, up);
}

/* Closes the socket and forgets the connection's state (not its buffer
 * capacity).  No hook. */
static void out_reset(peer_mesh *m, peer_out *o)
{
    if (o->ssl) {
        SSL_free(o->ssl);
        o->ssl = NULL;
    }
    if (o->fd >= 0) {
        (void)epoll_ctl(m->epfd, EPOLL_CTL_DEL, o->fd, NULL);
        close(o->fd);
        o->fd = -1;
    }
    ERR_clear_error();
    o->events = 0;
    o->state = OUT_IDLE;
    o->hs_want_write = o->write_blocked = o->write_wants_read = o->read_wants_write = 0;
    o->broken = 0;
    o->out.len = o->out_off = 0;
    if (o->out.cap > PEER_BUF_KEEP)
        cl_buf_fini(&o->out, 0);
    o->seq = 0;
    o->win_len = 0;
    o->remote_epoch = 0;
}

/* The connection is lost (or never came up): close it, tell the engine
 * if it had been up, and schedule the next dial. */
static void out_fail(peer_mesh *m, peer_out *o, int level, const char *why)
{
    int was_up = o->state == OUT_UP;
    uint64_t now = mono_us();
    if (was_up && now - o->up_since_us >= PEER_UP_STABLE_US)
        o->backoff_us = m->backoff_min_us;
    mesh_log(m, level, "connection to node %d (%s) %s: %s", o->id, o->addr_text,
             was_up ? "lost" : "failed", why);
    out_reset(m, o);
    /* delay = backoff * [0.75, 1.25), then the backoff doubles up to its cap */
    uint64_t d = o->backoff_us * 3 / 4 + mesh_random(m) % (o->backoff_us / 2 + 1);
    o->next_attempt_us = now + d;
    o->backoff_us = o->backoff_us * 2 > m->backoff_max_us ? m->backoff_max_us : o->backoff_us * 2;
    if (was_up) {
        stat_add(&m->st.downs, 1);
        __atomic_store_n(&m->st.peers_up, m->st.peers_up - 1, __ATOMIC_RELAXED);
        out_hook_peer(m, o->id, 0);
    }
}

static uint32_t out_mask(const peer_out *o)
{
    switch (o->state) {
    case OUT_CONNECTING:
        return EPOLLOUT;
    case OUT_HANDSHAKE:
        return o->hs_want_write ? EPOLLOUT : EPOLLIN;
    default:
        return EPOLLIN | (o->write_blocked || o->read_wants_write ? EPOLLOUT : 0);
    }
}

/* 0, or -1 after failing the connection. */
static int out_rearm(peer_mesh *m, peer_out *o)
{
    if (ep_set(m, o->fd, o, &o->events, out_mask(o)) == 0)
        return 0;
    char why[96];
    snprintf(why, sizeof why, "epoll_ctl: %s", strerror(errno));
    out_fail(m, o, CL_LOG_WARN, why);
    return -1;
}

/*
 * Writes queued frames.  1: all written; 0: the socket (or TLS) cannot take
 * more now (write_blocked or write_wants_read set); -1: failed (reason in
 * o->why).  Never closes: callers decide when that is safe.
 */
static int out_write(peer_mesh *m, peer_out *o)
{
    while (o->out_off < o->out.len) {
        size_t n = o->out.len - o->out_off;
        int r = SSL_write(o->ssl, o->out.data + o->out_off, n > INT_MAX ? INT_MAX : (int)n);
        if (r <= 0) {
            int e = SSL_get_error(o->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) {
                o->write_blocked = 1;
                return 0;
            }
            if (e == SSL_ERROR_WANT_READ) {
                o->write_wants_read = 1;
                return 0;
            }
            char reason[128];
            tls_reason(o->ssl, e, reason, sizeof reason);
            snprintf(o->why, sizeof o->why, "write failed: %s", reason);
            return -1;
        }
        o->out_off += (size_t)r;
        stat_add(&m->st.ssl_writes, 1);
        stat_add(&m->st.bytes_sent, (uint64_t)r);
    }
    o->out.len = o->out_off = 0;
    o->write_blocked = o->write_wants_read = 0;
    if (o->out.cap > PEER_BUF_KEEP)
        cl_buf_fini(&o->out, 0);
    return 1;
}

/* Writes what is queued on an established connection, unless it waits
 * for readiness anyway.  Marks it broken on failure (closed later). */
static void out_push(peer_mesh *m, peer_out *o)
{
    if (o->broken || o->out_off == o->out.len || o->write_blocked || o->write_wants_read ||
        (o->state != OUT_UP && o->state != OUT_WELCOME))
        return;
    if (out_write(m, o) < 0) {
        o->broken = 1;
        return;
    }
    if (ep_set(m, o->fd, o, &o->events, out_mask(o)) != 0) {
        snprintf(o->why, sizeof o->why, "epoll_ctl: %s", strerror(errno));
        o->broken = 1;
    }
}

static void out_handshake(peer_mesh *m, peer_out *o);

/* Takes an address handed over by peer_mesh_set_peer_addr. */
static void out_take_addr(peer_mesh *m, peer_out *o)
{
    pthread_mutex_lock(&m->addr_mu);
    free(o->addr_text);
    o->addr_text = o->new_text;
    o->new_text = NULL;
    o->addr = o->new_addr;
    o->addr_len = o->new_len;
    atomic_store(&o->addr_pending, 0);
    pthread_mutex_unlock(&m->addr_mu);
}

static void out_dial(peer_mesh *m, peer_out *o)
{
    char why[160];
    if (atomic_load_explicit(&o->addr_pending, memory_order_acquire))
        out_take_addr(m, o);
    if (!o->addr_text) { /* nowhere to dial yet: look again in a while */
        o->next_attempt_us = m->now + m->backoff_max_us;
        return;
    }
    stat_add(&m->st.dials, 1);
    o->deadline_us = m->now + PEER_SETUP_TIMEOUT_US;
    o->fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (o->fd < 0)
        goto fail;
    sock_tune(o->fd);
    int r;
    do {
        r = connect(o->fd, (struct sockaddr *)&o->addr, o->addr_len);
    } while (r != 0 && errno == EINTR);
    if (r != 0 && errno != EINPROGRESS)
        goto fail;
    o->state = OUT_CONNECTING;
    if (out_rearm(m, o) < 0)
        return;
    if (r == 0) /* connected at once: go on as if EPOLLOUT had come */
        out_handshake(m, o);
    return;

fail:
    snprintf(why, sizeof why, "connect: %s", strerror(errno));
    o->state = OUT_CONNECTING; /* so that the failure is reported as a dial */
    out_fail(m, o, CL_LOG_DEBUG, why);
}

/* TCP is up (CONNECTING) or the handshake made progress (HANDSHAKE). */
static void out_handshake(peer_mesh *m, peer_out *o)
{
    char why[256];
    if (o->state == OUT_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(o->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err) {
            snprintf(why, sizeof why, "connect: %s", strerror(err));
            out_fail(m, o, CL_LOG_DEBUG, why);
            return;
        }
        o->ssl = SSL_new(m->cctx);
        if (!o->ssl || SSL_set_fd(o->ssl, o->fd) != 1) {
            out_fail(m, o, CL_LOG_WARN, "cannot create a TLS connection (out of memory?)");
            return;
        }
        SSL_set_connect_state(o->ssl);
        o->state = OUT_HANDSHAKE;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(o->ssl);
    if (r != 1) {
        int e = SSL_get_error(o->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            o->hs_want_write = e == SSL_ERROR_WANT_WRITE;
            out_rearm(m, o);
            return;
        }
        char reason[200];
        tls_reason(o->ssl, e, reason, sizeof reason);
        if (SSL_get_verify_result(o->ssl) != X509_V_OK)
            stat_add(&m->st.refused_cert, 1);
        else
            stat_add(&m->st.hs_failures, 1);
        snprintf(why, sizeof why, "handshake: %s", reason);
        out_fail(m, o, CL_LOG_WARN, why);
        return;
    }
    int id = 0;
    if (mesh_identify(m, o->ssl, &id, why, sizeof why) != CL_OK) {
        out_fail(m, o, CL_LOG_WARN, why);
        return;
    }
    if (id != o->id) {
        stat_add(&m->st.refused_id, 1);
        snprintf(why, sizeof why, "the listener's certificate names node %d, not %d", id, o->id);
        out_fail(m, o, CL_LOG_WARN, why);
        return;
    }
    /* The hello is the first frame; data waits for the welcome. */
    uint8_t *p = cl_buf_extend(&o->out, PEER_HELLO_FRAME);
    if (!p) {
        out_fail(m, o, CL_LOG_WARN, "out of memory");
        return;
    }
    frame_hello(p, MAGIC_HELLO, m->self, m->epoch);
    o->state = OUT_WELCOME;
    o->hs_want_write = 0;
    if (out_write(m, o) < 0) {
        out_fail(m, o, CL_LOG_INFO, o->why);
        return;
    }
    out_rearm(m, o);
}

/* Checks the welcome in o->win; the connection becomes UP.  0, or -1
 * after failing it. */
static int out_welcome(peer_mesh *m, peer_out *o)
{
    char why[200];
    const uint8_t *w = o->win;
    uint32_t from = get32(w + 8);
    uint64_t epoch = get64(w + 12);
    if (get32(w) != PEER_HELLO_LEN || memcmp(w + 4, MAGIC_WELCOME, 4) != 0) {
        stat_add(&m->st.proto_errors, 1);
        out_fail(m, o, CL_LOG_WARN, "the listener's first frame is not a welcome");
        return -1;
    }
    if (from != (uint32_t)o->id) {
        stat_add(&m->st.refused_id, 1);
        snprintf(why, sizeof why, "the certificate names node %d but the welcome claims %u",
                 o->id, from);
        out_fail(m, o, CL_LOG_WARN, why);
        return -1;
    }
    if (epoch < m->seen_epoch[o->id]) {
        stat_add(&m->st.refused_epoch, 1);
        snprintf(why, sizeof why,
                 "welcome with epoch %llu, older than epoch %llu already seen: an old "
                 "incarnation, refused", (unsigned long long)epoch,
                 (unsigned long long)m->seen_epoch[o->id]);
        out_fail(m, o, CL_LOG_WARN, why);
        return -1;
    }
    o->remote_epoch = epoch;
    mesh_saw_epoch(m, o->id, epoch);
    o->state = OUT_UP;
    o->up_since_us = mono_us();
    stat_add(&m->st.ups, 1);
    __atomic_store_n(&m->st.peers_up, m->st.peers_up + 1, __ATOMIC_RELAXED);
    mesh_log(m, CL_LOG_INFO, "connected to node %d (epoch %llu) at %s", o->id,
             (unsigned long long)epoch, o->addr_text);
    out_hook_peer(m, o->id, 1);
    return 0;
}

/* Readable: the welcome (WELCOME), else nothing is expected but the end. */
static void out_read(peer_mesh *m, peer_out *o)
{
    o->read_wants_write = 0;
    while (o->state == OUT_WELCOME || o->state == OUT_UP) {
        int r;
        if (o->state == OUT_WELCOME)
            r = SSL_read(o->ssl, o->win + o->win_len, (int)(sizeof o->win - o->win_len));
        else
            r = SSL_read(o->ssl, m->scratch, (int)sizeof m->scratch);
        if (r > 0) {
            stat_add(&m->st.ssl_reads, 1);
            stat_add(&m->st.bytes_received, (uint64_t)r);
            if (o->state == OUT_UP) {
                stat_add(&m->st.proto_errors, 1);
                out_fail(m, o, CL_LOG_WARN, "the listener sent data after its welcome");
                return;
            }
            o->win_len += (size_t)r;
            if (o->win_len == sizeof o->win && out_welcome(m, o) < 0)
                return;
            continue;
        }
        int e = SSL_get_error(o->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            o->read_wants_write = 1;
            break;
        }
        char why[200];
        if (e == SSL_ERROR_ZERO_RETURN) {
            snprintf(why, sizeof why, "closed by the peer");
            ERR_clear_error();
        } else {
            tls_reason(o->ssl, e, why, sizeof why);
        }
        out_fail(m, o, CL_LOG_INFO, why);
        return;
    }
}

static void out_on_event(peer_mesh *m, peer_out *o, uint32_t ev)
{
    switch (o->state) {
    case OUT_IDLE:
        return; /* failed earlier in this batch */
    case OUT_CONNECTING:
    case OUT_HANDSHAKE:
        out_handshake(m, o);
        return;
    default:
        break;
    }
    if ((ev & EPOLLOUT) || (o->write_wants_read && (ev & EPOLLIN))) {
        o->write_blocked = o->write_wants_read = 0;
        if (o->out_off < o->out.len && out_write(m, o) < 0) {
            out_fail(m, o, CL_LOG_INFO, o->why);
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR) || o->read_wants_write)
        out_read(m, o);
    if (o->state == OUT_WELCOME || o->state == OUT_UP)
        out_rearm(m, o);
}

/* ---- incoming connections --------------------------------------------------------- */

static void in_close(peer_mesh *m, peer_in *c, int level, const char *why)
{
    if (c->state == IN_DEAD)
        return;
    if (why) {
        if (c->node)
            mesh_log(m, level, "connection from node %d (%s) closed: %s", c->node, c->addr, why);
        else
            mesh_log(m, level, "connection from %s closed: %s", c->addr, why);
    }
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    ERR_clear_error();
    (void)epoll_ctl(m->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    cl_buf_fini(&c->in, 0);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->ins = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->n_in--;
    c->state = IN_DEAD;
    c->prev = NULL;
    c->next = m->dead; /* freed after the batch: later events may name it */
    m->dead = c;
}

static uint32_t in_mask(const peer_in *c)
{
    if (c->state == IN_HANDSHAKE)
        return c->hs_want_write ? EPOLLOUT : EPOLLIN;
    return EPOLLIN | ((c->welcome_blocked || c->read_wants_write) ? EPOLLOUT : 0);
}

/* 0, or -1 after closing. */
static int in_rearm(peer_mesh *m, peer_in *c)
{
    if (ep_set(m, c->fd, c, &c->events, in_mask(c)) == 0)
        return 0;
    in_close(m, c, CL_LOG_WARN, "epoll_ctl failed");
    return -1;
}

/* Writes (the rest of) the welcome.  0, or -1 after closing. */
static int in_send_welcome(peer_mesh *m, peer_in *c)
{
    c->welcome_blocked = c->welcome_wants_read = 0;
    while (c->wout_off < c->wout_len) {
        int r = SSL_write(c->ssl, c->wout + c->wout_off, (int)(c->wout_len - c->wout_off));
        if (r > 0) {
            c->wout_off += (size_t)r;
            stat_add(&m->st.ssl_writes, 1);
            stat_add(&m->st.bytes_sent, (uint64_t)r);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->welcome_blocked = e == SSL_ERROR_WANT_WRITE;
            c->welcome_wants_read = e == SSL_ERROR_WANT_READ;
            return 0;
        }
        char why[200];
        tls_reason(c->ssl, e, why, sizeof why);
        in_close(m, c, CL_LOG_INFO, why);
        return -1;
    }
    return 0;
}

/* The hello at h (16 bytes after the length).  0, or -1 after closing. */
static int in_hello(peer_mesh *m, peer_in *c, const uint8_t *h)
{
    char why[200];
    uint32_t from = get32(h + 4);
    uint64_t epoch = get64(h + 8);
    if (memcmp(h, MAGIC_HELLO, 4) != 0) {
        stat_add(&m->st.proto_errors, 1);
        in_close(m, c, CL_LOG_WARN, "the first frame is not a hello");
        return -1;
    }
    if (from != (uint32_t)c->node) {
        stat_add(&m->st.refused_id, 1);
        snprintf(why, sizeof why, "the certificate names node %d but the hello claims %u",
                 c->node, from);
        in_close(m, c, CL_LOG_WARN, why);
        return -1;
    }
    if (epoch < m->seen_epoch[from]) {
        stat_add(&m->st.refused_epoch, 1);
        snprintf(why, sizeof why,
                 "hello with epoch %llu, older than epoch %llu already seen: an old "
                 "incarnation, refused", (unsigned long long)epoch,
                 (unsigned long long)m->seen_epoch[from]);
        in_close(m, c, CL_LOG_WARN, why);
        return -1;
    }
    /* The dialler keeps one connection: any other from it is stale. */
    for (peer_in *o = m->ins, *next; o; o = next) {
        next = o->next;
        if (o != c && o->node == c->node && o->state != IN_HANDSHAKE)
            in_close(m, o, CL_LOG_DEBUG, "replaced by a newer connection");
    }
    mesh_saw_epoch(m, (int)from, epoch);
    c->epoch = epoch;
    c->state = IN_OPEN;
    c->next_seq = 1;
    stat_add(&m->st.hellos, 1);
    mesh_log(m, CL_LOG_INFO, "node %d (epoch %llu) connected from %s", c->node,
             (unsigned long long)epoch, c->addr);
    frame_hello(c->wout, MAGIC_WELCOME, m->self, m->epoch);
    c->wout_len = PEER_HELLO_FRAME;
    c->wout_off = 0;
    return in_send_welcome(m, c);
}

/* Consumes every complete frame in c->in.  0, or -1 after closing. */
static int in_parse(peer_mesh *m, peer_in *c)
{
    char why[160];
    const uint8_t *b = c->in.data;
    size_t len = c->in.len, off = 0;

    c->want = 0;
    while (len - off >= PEER_HDR) {
        size_t flen = get32(b + off);
        if (c->state == IN_HELLO) {
            if (flen != PEER_HELLO_LEN) {
                stat_add(&m->st.proto_errors, 1);
                in_close(m, c, CL_LOG_WARN, "the first frame is not a hello");
                return -1;
            }
            if (len - off < PEER_HELLO_FRAME)
                break;
            if (in_hello(m, c, b + off + PEER_HDR) < 0)
                return -1;
            off += PEER_HELLO_FRAME;
            continue;
        }
        if (flen < 8 || flen > PEER_MAX_FRAME) {
            stat_add(&m->st.proto_errors, 1);
            snprintf(why, sizeof why, "data frame of %zu bytes (limit %zu)", flen, PEER_MAX_FRAME);
            in_close(m, c, CL_LOG_WARN, why);
            return -1;
        }
        if (len - off < PEER_HDR + flen) {
            c->want = PEER_HDR + flen;
            break;
        }
        uint64_t seq = get64(b + off + PEER_HDR);
        if (seq != c->next_seq) {
            stat_add(&m->st.proto_errors, 1);
            snprintf(why, sizeof why, "frame out of sequence (expected %llu, got %llu)",
                     (unsigned long long)c->next_seq, (unsigned long long)seq);
            in_close(m, c, CL_LOG_WARN, why);
            return -1;
        }
        c->next_seq++;
        m->delivered++;
        stat_add(&m->st.msgs_received, 1);
        /* The hook cannot close c: it may only send and flush, which touch
         * outgoing connections. */
        m->hooks.on_message(m->hooks.engine, c->node, c->epoch, b + off + PEER_DATA_HDR, flen - 8);
        off += PEER_HDR + flen;
    }
    if (off)
        cl_buf_consume(&c->in, off);
    return 0;
}

/* Reads and delivers until OpenSSL has nothing more, or the budget is
 * spent.  0, or -1 after closing. */
static int in_read(peer_mesh *m, peer_in *c)
{
    size_t budget = PEER_READ_BUDGET;
    c->read_wants_write = 0;
    c->more = 0;
    for (;;) {
        size_t need = PEER_READ_CHUNK;
        if (c->want > c->in.len && c->want - c->in.len > need)
            need = c->want - c->in.len;
        if (cl_buf_reserve(&c->in, need) != CL_OK) {
            in_close(m, c, CL_LOG_WARN, "out of memory");
            return -1;
        }
        size_t room = c->in.cap - c->in.len;
        int r = SSL_read(c->ssl, c->in.data + c->in.len, room > INT_MAX ? INT_MAX : (int)room);
        if (r > 0) {
            c->in.len += (size_t)r;
            stat_add(&m->st.ssl_reads, 1);
            stat_add(&m->st.bytes_received, (uint64_t)r);
            if (in_parse(m, c) < 0)
                return -1;
            if ((size_t)r >= budget) {
                c->more = SSL_has_pending(c->ssl) != 0;
                break;
            }
            budget -= (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->read_wants_write = 1;
            break;
        }
        char why[200];
        if (e == SSL_ERROR_ZERO_RETURN) {
            in_close(m, c, CL_LOG_DEBUG, "closed by the peer");
        } else {
            tls_reason(c->ssl, e, why, sizeof why);
            in_close(m, c, CL_LOG_INFO, why);
        }
        return -1;
    }
    if (c->in.len == 0 && c->in.cap > PEER_BUF_KEEP)
        cl_buf_fini(&c->in, 0);
    return 0;
}

static void in_handshake(peer_mesh *m, peer_in *c)
{
    char why[256];
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->hs_want_write = e == SSL_ERROR_WANT_WRITE;
            in_rearm(m, c);
            return;
        }
        char reason[200];
        tls_reason(c->ssl, e, reason, sizeof reason);
        if (SSL_get_verify_result(c->ssl) != X509_V_OK)
            stat_add(&m->st.refused_cert, 1);
        else
            stat_add(&m->st.hs_failures, 1);
        snprintf(why, sizeof why, "handshake: %s", reason);
        in_close(m, c, CL_LOG_WARN, why);
        return;
    }
    int id = 0;
    if (mesh_identify(m, c->ssl, &id, why, sizeof why) != CL_OK) {
        in_close(m, c, CL_LOG_WARN, why);
        return;
    }
    c->node = id;
    c->state = IN_HELLO;
    c->hs_want_write = 0;
    if (in_read(m, c) == 0) /* the hello may have come with the handshake */
        in_rearm(m, c);
}

static void in_on_event(peer_mesh *m, peer_in *c, uint32_t ev)
{
    if (c->state == IN_DEAD)
        return;
    if (c->state == IN_HANDSHAKE) {
        in_handshake(m, c);
        return;
    }
    if (c->wout_off < c->wout_len && (c->welcome_blocked || c->welcome_wants_read) &&
        in_send_welcome(m, c) < 0)
        return;
    if (in_read(m, c) == 0)
        in_rearm(m, c);
}

static void in_accept(peer_mesh *m)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(m->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                mesh_log(m, CL_LOG_WARN, "accept: %s", strerror(errno));
            return;
        }
        stat_add(&m->st.accepted, 1);
        char addr[NET_ADDR_STRLEN];
        net_addr_format((struct sockaddr *)&ss, addr, sizeof addr);
        if (m->n_in >= PEER_MAX_INCOMING) {
            mesh_log(m, CL_LOG_WARN, "%d incoming connections already; refused %s",
                     PEER_MAX_INCOMING, addr);
            close(fd);
            continue;
        }
        peer_in *c = calloc(1, sizeof *c);
        if (!c || !(c->ssl = SSL_new(m->sctx)) || SSL_set_fd(c->ssl, fd) != 1) {
            mesh_log(m, CL_LOG_WARN, "out of memory; refused %s", addr);
            if (c)
                SSL_free(c->ssl);
            free(c);
            close(fd);
            continue;
        }
        sock_tune(fd);
        SSL_set_accept_state(c->ssl);
        c->kind = EP_IN;
        c->fd = fd;
        c->state = IN_HANDSHAKE;
        c->deadline_us = m->now + PEER_SETUP_TIMEOUT_US;
        memcpy(c->addr, addr, sizeof addr);
        cl_buf_init(&c->in);
        c->next = m->ins;
        if (m->ins)
            m->ins->prev = c;
        m->ins = c;
        m->n_in++;
        (void)in_rearm(m, c); /* on failure it has closed c */
    }
}

/* ---- the transport (what the engine calls) --------------------------------------- */

static int tr_send(void *ctx, int to, const uint8_t *msg, size_t len)
{
    peer_mesh *m = ctx;
    if (len > REPL_MAX_MSG)
        return CL_ETOOBIG;
    if (to < 1 || to > REPL_MAX_NODES || !m->out[to])
        return CL_EINVAL;
    peer_out *o = m->out[to];
    if (o->state != OUT_UP || o->broken) {
        stat_add(&m->st.dropped_down, 1);
        return CL_ECLOSED;
    }
    size_t need = PEER_DATA_HDR + len;
    if (o->out.len - o->out_off + need > m->max_out) {
        stat_add(&m->st.dropped_full, 1);
        return CL_ECLOSED;
    }
    if (o->out_off && o->out.cap - o->out.len < need) {
        /* Reuse the written front.  OpenSSL may be retrying a record from
         * here (WANT_WRITE); ACCEPT_MOVING_WRITE_BUFFER allows the move. */
        cl_buf_consume(&o->out, o->out_off);
        o->out_off = 0;
    }
    uint8_t *p = cl_buf_extend(&o->out, need);
    if (!p) {
        stat_add(&m->st.dropped_full, 1);
        return CL_ECLOSED;
    }
    put32(p, (uint32_t)(8 + len));
    put64(p + PEER_HDR, ++o->seq);
    if (len)
        memcpy(p + PEER_DATA_HDR, msg, len);
    stat_add(&m->st.msgs_sent, 1);
    m->last_activity = m->now;
    return CL_OK;
}

static void tr_flush(void *ctx)
{
    peer_mesh *m = ctx;
    for (int id = 1; id <= REPL_MAX_NODES; id++)
        if (m->out[id])
            out_push(m, m->out[id]);
}

static void tr_wake(void *ctx)
{
    peer_mesh *m = ctx;
    if (atomic_exchange_explicit(&m->wake_pending, 1, memory_order_acq_rel) == 0) {
        uint64_t one = 1;
        ssize_t r = write(m->wake_fd, &one, sizeof one);
        (void)r; /* EAGAIN only when the counter is full: a wake is pending anyway */
    }
}

static uint64_t tr_now_us(void *ctx)
{
    (void)ctx;
    return mono_us();
}

repl_transport peer_mesh_transport(peer_mesh *m)
{
    return (repl_transport){ .ctx = m, .send = tr_send, .flush = tr_flush,
                             .wake = tr_wake, .now_us = tr_now_us };
}

/* ---- the repl thread --------------------------------------------------------------- */

static void mesh_on_wake(peer_mesh *m)
{
    uint64_t v;
    ssize_t r = read(m->wake_fd, &v, sizeof v);
    (void)r;
    /* Cleared after the read and before the hook: a wake() that saw the
     * flag set has queued its work before, so the hook finds it; one that
     * comes later writes the eventfd again. */
    atomic_exchange_explicit(&m->wake_pending, 0, memory_order_acq_rel);
    stat_add(&m->st.wakes, 1);
    m->last_activity = m->now;
    if (m->hooks.on_wake)
        m->hooks.on_wake(m->hooks.engine);
}

/* Closes connections whose writes failed inside a hook. */
static void mesh_reap(peer_mesh *m)
{
    for (int id = 1; id <= REPL_MAX_NODES; id++) {
        peer_out *o = m->out[id];
        if (o && o->broken)
            out_fail(m, o, CL_LOG_INFO, o->why);
    }
}

/* Dials what is due, gives up on set-ups that took too long, and returns
 * the epoll time-out (ms) until the next thing to do. */
static int mesh_timers(peer_mesh *m)
{
    uint64_t now = m->now = mono_us();
    uint64_t period = now - m->last_activity < PEER_ACTIVE_US ? PEER_TICK_US : PEER_IDLE_TICK_US;
    uint64_t next = m->last_tick + period;

    for (int id = 1; id <= REPL_MAX_NODES; id++) {
        peer_out *o = m->out[id];
        if (!o)
            continue;
        if (o->state == OUT_IDLE &&
            (now >= o->next_attempt_us ||
             (!o->addr_text && atomic_load_explicit(&o->addr_pending, memory_order_relaxed))))
            out_dial(m, o);
        if (o->state >= OUT_CONNECTING && o->state <= OUT_WELCOME && now >= o->deadline_us)
            out_fail(m, o, CL_LOG_INFO, "timed out setting up the connection");
        uint64_t t = o->state == OUT_IDLE ? o->next_attempt_us
                   : o->state == OUT_UP ? UINT64_MAX : o->deadline_us;
        if (t < next)
            next = t;
    }
    int busy = 0;
    for (peer_in *c = m->ins, *nx; c; c = nx) {
        nx = c->next;
        if (c->more)
            busy = 1;
        if (c->state == IN_OPEN)
            continue;
        if (now >= c->deadline_us) {
            in_close(m, c, CL_LOG_INFO, "no hello within the set-up time");
            continue;
        }
        if (c->deadline_us < next)
            next = c->deadline_us;
    }
    if (busy || next <= now)
        return 0;
    uint64_t ms = (next - now + 999) / 1000;
    return ms > 1000 ? 1000 : (int)ms;
}

/* Connections whose read budget ran out while OpenSSL held more input. */
static void mesh_serve_more(peer_mesh *m)
{
    peer_in *todo[PEER_MAX_INCOMING];
    size_t n = 0;
    for (peer_in *c = m->ins; c && n < PEER_MAX_INCOMING; c = c->next)
        if (c->more)
            todo[n++] = c;
    for (size_t i = 0; i < n; i++) /* dead ones stay allocated until the batch ends */
        if (todo[i]->state != IN_DEAD && in_read(m, todo[i]) == 0)
            in_rearm(m, todo[i]);
}

static void mesh_free_dead(peer_mesh *m)
{
    while (m->dead) {
        peer_in *c = m->dead;
        m->dead = c->next;
        free(c);
    }
}

static void mesh_close_all(peer_mesh *m)
{
    for (int id = 1; id <= REPL_MAX_NODES; id++) {
        peer_out *o = m->out[id];
        if (o && o->state != OUT_IDLE) {
            if (o->state == OUT_UP)
                __atomic_store_n(&m->st.peers_up, m->st.peers_up - 1, __ATOMIC_RELAXED);
            out_reset(m, o);
        }
    }
    while (m->ins)
        in_close(m, m->ins, CL_LOG_DEBUG, NULL);
    mesh_free_dead(m);
}

static void *mesh_main(void *arg)
{
    peer_mesh *m = arg;
    struct epoll_event ev[PEER_EPOLL_EVENTS];
    char name[16];
    snprintf(name, sizeof name, "cl-repl-%d", m->self);
    pthread_setname_np(pthread_self(), name);

    m->now = m->last_tick = m->last_activity = mono_us();
    for (int id = 1; id <= REPL_MAX_NODES; id++)
        if (m->out[id])
            m->out[id]->next_attempt_us = m->now;

    for (;;) {
        int timeout = mesh_timers(m);
        int n = epoll_wait(m->epfd, ev, PEER_EPOLL_EVENTS, timeout);
        if (n < 0) {
            CL_ASSERT(errno == EINTR);
            n = 0;
        }
        m->now = mono_us();
        m->delivered = 0;
        for (int i = 0; i < n; i++) {
            switch (*(const uint8_t *)ev[i].data.ptr) {
            case EP_STOP:
                goto out;
            case EP_WAKE:
                mesh_on_wake(m);
                break;
            case EP_LISTEN:
                in_accept(m);
                break;
            case EP_OUT:
                out_on_event(m, ev[i].data.ptr, ev[i].events);
                break;
            case EP_IN:
                in_on_event(m, ev[i].data.ptr, ev[i].events);
                break;
            default:
                CL_ASSERT(!"unknown epoll tag");
            }
        }
        mesh_serve_more(m);
        mesh_free_dead(m);
        mesh_reap(m);
        if (m->delivered)
            m->last_activity = m->now;
        uint64_t period = m->now - m->last_activity < PEER_ACTIVE_US ? PEER_TICK_US
                                                                     : PEER_IDLE_TICK_US;
        if (m->delivered || m->now - m->last_tick >= period) {
            m->now = mono_us();
            m->last_tick = m->now;
            stat_add(&m->st.ticks, 1);
            if (m->hooks.on_tick)
                m->hooks.on_tick(m->hooks.engine, m->now);
        }
        tr_flush(m);
        mesh_reap(m);
    }
out:
    mesh_close_all(m);
    ERR_clear_error();
    return NULL;
}

/* ---- creation ------------------------------------------------------------------------ */

/* The listener's (NET_TLS_SERVER) or the dialler's context: net/tls.c's
 * common settings (TLS 1.3, partial writes, read-ahead), this node's
 * identity, the cluster CA as the only trust anchor with peer
 * certificates required both ways, then what suits a mesh link: busy and
 * long-lived, so OpenSSL keeps its record buffers (no RELEASE_BUFFERS)
 * and reads 64 KiB at a time; no session tickets or cache (the listener
 * must send nothing unasked, and a reconnection re-verifies in full). */
static int mesh_tls_ctx(const peer_config *cfg, net_tls_role role, SSL_CTX **out)
{
    char err[256] = "";
    SSL_CTX *ctx = NULL;
    int rc = net_tls_ctx_new(role, &ctx, err, sizeof err);
    if (rc == CL_OK)
        rc = net_tls_ctx_use_identity(ctx, cfg->cert, cfg->chain, cfg->key, err, sizeof err);
    if (rc == CL_OK)
        rc = net_tls_ctx_trust(ctx, cfg->ca, err, sizeof err);
    if (rc == CL_OK) {
        SSL_CTX_clear_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_default_read_buffer_len(ctx, PEER_TLS_RBUF);
        if (!SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
            (role == NET_TLS_SERVER && !SSL_CTX_set_num_tickets(ctx, 0))) {
            snprintf(err, sizeof err, "cannot restrict the context");
            net_tls_drain_errors(err, sizeof err);
            rc = CL_ETLS;
        }
    }
    if (rc != CL_OK) {
        cl_log_error(MOD, "node %d: %s TLS context: %s", cfg->self,
                     role == NET_TLS_SERVER ? "listener" : "dialler", err);
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
    *out = ctx;
    return rc;
}

static int mesh_check_config(const peer_config *cfg)
{
    const char *why = NULL;
    if (!cfg)
        return CL_EINVAL;
    if (cfg->self < 1 || cfg->self > REPL_MAX_NODES)
        why = "self id out of range";
    else if (!cfg->listen)
        why = "no listen address";
    else if (!cfg->cert || !cfg->key || !cfg->ca)
        why = "certificate, key and cluster CA are all required";
    else if (!cfg->hooks.on_message)
        why = "no on_message hook";
    else if (cfg->n_peers > REPL_MAX_NODES - 1 || (cfg->n_peers && !cfg->peers))
        why = "too many peers";
    else if (cfg->max_out && cfg->max_out < PEER_DATA_HDR + (size_t)REPL_MAX_MSG)
        why = "max_out is smaller than one largest message";
    for (size_t i = 0; !why && i < cfg->n_peers; i++) {
        const peer_node *p = &cfg->peers[i];
        if (p->id < 1 || p->id > REPL_MAX_NODES || p->id == cfg->self)
            why = "a peer id is out of range or is this node's own";
        for (size_t j = 0; !why && j < i; j++)
            if (cfg->peers[j].id == p->id)
                why = "a peer id appears twice";
    }
    if (why) {
        cl_log_error(MOD, "bad mesh configuration: %s", why);
        return CL_EINVAL;
    }
    return CL_OK;
}

static int mesh_listen(peer_mesh *m, const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_addr_parse(addr, &ss, &len) != CL_OK) {
        cl_log_error(MOD, "cannot parse peer listen address '%s' (expected HOST:PORT)", addr);
        return CL_EINVAL;
    }
    int one = 1;
    m->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t blen = sizeof m->bound;
    if (m->listen_fd < 0 ||
        setsockopt(m->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(m->listen_fd, (struct sockaddr *)&ss, len) != 0 || listen(m->listen_fd, 64) != 0 ||
        getsockname(m->listen_fd, (struct sockaddr *)&m->bound, &blen) != 0) {
        cl_log_error(MOD, "cannot listen for peers on %s: %s", addr, strerror(errno));
        return CL_EIO;
    }
    return CL_OK;
}

int peer_mesh_create(const peer_config *cfg, peer_mesh **out)
{
    *out = NULL;
    int rc = mesh_check_config(cfg);
    if (rc != CL_OK)
        return rc;
    signal(SIGPIPE, SIG_IGN); /* OpenSSL writes with write(2) */

    peer_mesh *m = calloc(1, sizeof *m);
    if (!m)
        return CL_ENOMEM;
    m->listen_fd = m->epfd = m->wake_fd = m->stop_fd = -1;
    pthread_mutex_init(&m->addr_mu, NULL);
    m->self = cfg->self;
    m->epoch = cfg->epoch;
    m->hooks = cfg->hooks;
    m->verify = cfg->verify_peer;
    m->verify_arg = cfg->verify_arg;
    m->max_out = cfg->max_out ? cfg->max_out : PEER_DEFAULT_MAX_OUT;
    m->backoff_min_us = (uint64_t)(cfg->reconnect_min_ms ? cfg->reconnect_min_ms : 50) * 1000;
    m->backoff_max_us = (uint64_t)(cfg->reconnect_max_ms ? cfg->reconnect_max_ms : 1000) * 1000;
    if (m->backoff_max_us < m->backoff_min_us)
        m->backoff_max_us = m->backoff_min_us;
    m->rng = mono_us() * 0x9e3779b97f4a7c15ull + (uint64_t)cfg->self;
    if (!m->rng)
        m->rng = 1;
    atomic_init(&m->wake_pending, 0);

    for (size_t i = 0; i < cfg->n_peers; i++) {
        const peer_node *p = &cfg->peers[i];
        peer_out *o = calloc(1, sizeof *o);
        rc = CL_ENOMEM;
        if (!o)
            goto fail;
        m->out[p->id] = o;
        o->kind = EP_OUT;
        o->id = p->id;
        o->fd = -1;
        o->backoff_us = m->backoff_min_us;
        cl_buf_init(&o->out);
        m->seen_epoch[p->id] = p->min_epoch;
        atomic_init(&o->addr_pending, 0);
        if (!p->addr)
            continue;
        if (!(o->addr_text = strdup(p->addr)))
            goto fail;
        if (net_addr_parse(p->addr, &o->addr, &o->addr_len) != CL_OK) {
            cl_log_error(MOD, "cannot parse the address '%s' of node %d (expected HOST:PORT)",
                         p->addr, p->id);
            rc = CL_EINVAL;
            goto fail;
        }
    }
    if ((rc = mesh_tls_ctx(cfg, NET_TLS_SERVER, &m->sctx)) != CL_OK ||
        (rc = mesh_tls_ctx(cfg, NET_TLS_CLIENT, &m->cctx)) != CL_OK)
        goto fail;
    if ((rc = mesh_listen(m, cfg->listen)) != CL_OK)
        goto fail;

    rc = CL_EIO;
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    m->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint32_t e1 = 0, e2 = 0, e3 = 0;
    if (m->epfd < 0 || m->wake_fd < 0 || m->stop_fd < 0 ||
        ep_set(m, m->listen_fd, (void *)&listen_tag, &e1, EPOLLIN) != 0 ||
        ep_set(m, m->wake_fd, (void *)&wake_tag, &e2, EPOLLIN) != 0 ||
        ep_set(m, m->stop_fd, (void *)&stop_tag, &e3, EPOLLIN) != 0) {
        cl_log_error(MOD, "epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    *out = m;
    return CL_OK;

fail:
    peer_mesh_destroy(m);
    return rc;
}

int peer_mesh_start(peer_mesh *m)
{
    if (m->state != MESH_CREATED)
        return CL_EINVAL;
    if (pthread_create(&m->tid, NULL, mesh_main, m) != 0) {
        cl_log_error(MOD, "cannot start the repl thread: %s", strerror(errno));
        return CL_ENOMEM;
    }
    m->state = MESH_RUNNING;
    return CL_OK;
}

void peer_mesh_stop(peer_mesh *m)
{
    if (!m || m->state != MESH_RUNNING)
        return;
    uint64_t one = 1;
    ssize_t r = write(m->stop_fd, &one, sizeof one);
    CL_ASSERT(r == (ssize_t)sizeof one);
    pthread_join(m->tid, NULL);
    m->state = MESH_STOPPED;
}

void peer_mesh_destroy(peer_mesh *m)
{
    if (!m)
        return;
    peer_mesh_stop(m);
    mesh_close_all(m); /* a mesh that never ran may still hold nothing; harmless */
    for (int id = 1; id <= REPL_MAX_NODES; id++) {
        peer_out *o = m->out[id];
        if (!o)
            continue;
        cl_buf_fini(&o->out, 0);
        free(o->addr_text);
        free(o->new_text);
        free(o);
    }
    int fds[] = { m->listen_fd, m->epfd, m->wake_fd, m->stop_fd };
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    SSL_CTX_free(m->sctx);
    SSL_CTX_free(m->cctx);
    pthread_mutex_destroy(&m->addr_mu);
    free(m);
}

int peer_mesh_set_peer_addr(peer_mesh *m, int id, const char *addr)
{
    if (id < 1 || id > REPL_MAX_NODES || !m->out[id] || !addr)
        return CL_EINVAL;
    struct sockaddr_storage ss;
    socklen_t len;
    if (net_addr_parse(addr, &ss, &len) != CL_OK)
        return CL_EINVAL;
    char *text = strdup(addr);
    if (!text)
        return CL_ENOMEM;
    peer_out *o = m->out[id];
    pthread_mutex_lock(&m->addr_mu);
    free(o->new_text);
    o->new_text = text;
    o->new_addr = ss;
    o->new_len = len;
    atomic_store_explicit(&o->addr_pending, 1, memory_order_release);
    pthread_mutex_unlock(&m->addr_mu);
    return CL_OK;
}

int peer_mesh_port(const peer_mesh *m)
{
    if (m->bound.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&m->bound)->sin_port);
    if (m->bound.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&m->bound)->sin6_port);
    return 0;
}

char *peer_mesh_listen_addr(const peer_mesh *m, char *buf, size_t cap)
{
    return net_addr_format((const struct sockaddr *)&m->bound, buf, cap);
}

_Static_assert(sizeof(peer_stats) % sizeof(uint64_t) == 0, "peer_stats holds only uint64_t");

void peer_mesh_get_stats(const peer_mesh *m, peer_stats *out)
{
    const uint64_t *src = (const uint64_t *)&m->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        dst[i] = stat_get(&src[i]);
}
