/*
 * test_peer.c - the mutual-TLS peer mesh (src/repl/peer.c), independent
 * of the replication engine: the tests drive meshes with small hooks of
 * their own (a "tnode": counters, a strict in-order checker, a sender).
 *
 * Without arguments (ctest unit_test_peer): certificates made here with
 * OpenSSL (EC P-256, CN cloister-node-<id>), meshes on 127.0.0.1 port 0:
 *   - certificate names, configuration errors, send() return codes;
 *   - 3 nodes, every node sends N messages (up to REPL_MAX_MSG) to every
 *     other: all arrive, in order, exactly once, byte-identical;
 *   - a node destroyed and created again with a higher epoch reconnects
 *     and traffic resumes; one with a lower epoch is refused;
 *   - a certificate from a foreign CA, an expired one, and one naming
 *     node 2 used by a node claiming id 3 are refused, both ways;
 *   - frame checks with a hand-driven TLS client: welcome, sequence gaps,
 *     oversized frames, a first frame that is not a hello, replaced
 *     connections, plaintext junk, no client certificate;
 *   - throughput: 100k small messages in one loop (msgs/s and system
 *     calls printed; few syscalls asserted) and ping-pong round trips.
 *
 * Other modes, for tests/blackbox/test_mitm_proxy.py:
 *   test_peer pki DIR N      writes DIR/ca.crt, DIR/node-<i>.crt|.key, i = 1..N
 *   test_peer serve --id I --epoch E --listen HOST:PORT --certs DIR
 *                   --peer J=HOST:PORT ... [--rate MSGS_PER_S]
 *       runs one node: sends numbered, checksummed messages to every peer
 *       at the rate, checks what it receives, prints "LISTENING port=P"
 *       and then a "STATUS key=value ..." line every 100 ms on stdout,
 *       until SIGTERM/SIGINT (exit 0).
 *
 * Payload of a test message (little-endian):
 *   u32 from | u64 k | u64 epoch | u32 len | filler | u64 FNV-1a(all before)
 * k counts the messages one node sent another (1, 2, ...; per incarnation);
 * the filler is a function of (from, k), so the receiver re-derives every
 * byte and anything forged, mixed or replayed is caught.
 */
#include "../harness.h"

#include "repl/peer.h"
#include "common/err.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
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

/* REQUIRE evaluates twice; MUST once (for calls with side effects). */
#define MUST(cond)                                                            \
    do {                                                                      \
        int must_ok_ = !!(cond);                                              \
        th_check(must_ok_, __FILE__, __LINE__, #cond);                        \
        if (!must_ok_) {                                                      \
            fprintf(stderr, "%lu passed, %lu failed\n", th_passed, th_failed);\
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define NMAX (REPL_MAX_NODES + 1)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polls cond every 2 ms for up to ms milliseconds; the value of cond. */
#define WAIT_UNTIL(cond, ms)                                                  \
    ({                                                                        \
        uint64_t wu_end_ = now_ms() + (ms);                                   \
        int wu_ok_;                                                           \
        while (!(wu_ok_ = !!(cond)) && now_ms() < wu_end_)                    \
            usleep(2000);                                                     \
        wu_ok_;                                                               \
    })

static inline void put32(uint8_t *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put64(uint8_t *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }

/* ---- certificates ------------------------------------------------------------ */

static EVP_PKEY *pki_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    MUST(k != NULL);
    return k;
}

/* A certificate for key, valid from now+nb to now+na seconds; self-signed
 * when issuer is NULL.  cn may be NULL (no CN) or "a,b" (two CNs). */
static X509 *pki_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                      int ca, long nb, long na)
{
    static long serial = 1;
    X509 *x = X509_new();
    MUST(x != NULL);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), nb);
    X509_gmtime_adj(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    if (cn) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", cn);
        for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ","))
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)tok, -1, -1, 0);
    } else {
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"cloister", -1, -1, 0);
    }
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    const char *exts[][2] = {
        { "basicConstraints", ca ? "critical,CA:TRUE" : "CA:FALSE" },
        { "keyUsage", ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature" },
        { "extendedKeyUsage", ca ? NULL : "serverAuth,clientAuth" },
    };
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
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

#define DAY (24L * 3600)

typedef struct identity {
    X509 *cert;
    EVP_PKEY *key;
} identity;

static struct {
    EVP_PKEY *ca_key, *rogue_key;
    X509 *ca, *rogue;
    identity node[NMAX];       /* cloister-node-<i>, good */
    identity foreign2;         /* cloister-node-2 issued by the rogue CA */
    identity expired2;         /* cloister-node-2, expired yesterday */
} pki;

static identity pki_node(const char *cn, X509 *ca, EVP_PKEY *ca_key, long nb, long na)
{
    identity id = { NULL, pki_key() };
    id.cert = pki_cert(cn, id.key, ca, ca_key, 0, nb, na);
    return id;
}

static void pki_create(int n)
{
    pki.ca_key = pki_key();
    pki.ca = pki_cert("cloister cluster CA", pki.ca_key, NULL, NULL, 1, -3600, 30 * DAY);
    pki.rogue_key = pki_key();
    pki.rogue = pki_cert("cloister cluster CA", pki.rogue_key, NULL, NULL, 1, -3600, 30 * DAY);
    for (int i = 1; i <= n; i++) {
        char cn[32];
        snprintf(cn, sizeof cn, "cloister-node-%d", i);
        pki.node[i] = pki_node(cn, pki.ca, pki.ca_key, -3600, 30 * DAY);
    }
    pki.foreign2 = pki_node("cloister-node-2", pki.rogue, pki.rogue_key, -3600, 30 * DAY);
    pki.expired2 = pki_node("cloister-node-2", pki.ca, pki.ca_key, -2 * DAY, -DAY);
}

static void identity_free(identity *id)
{
    X509_free(id->cert);
    EVP_PKEY_free(id->key);
    id->cert = NULL;
    id->key = NULL;
}

static void pki_destroy(void)
{
    for (int i = 0; i < NMAX; i++)
        identity_free(&pki.node[i]);
    identity_free(&pki.foreign2);
    identity_free(&pki.expired2);
    X509_free(pki.ca);
    X509_free(pki.rogue);
    EVP_PKEY_free(pki.ca_key);
    EVP_PKEY_free(pki.rogue_key);
}

/* ---- test messages ------------------------------------------------------------- */

#define PL_MIN 32 /* header (24) + checksum (8) */

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

enum { SIZES_MIXED = 0, SIZES_SMALL = 1, SIZES_SERVE = 2 };

/* The length of message k: mixed has a REPL_MAX_MSG one every 1000 and
 * record-spanning ones every 97. */
static size_t pl_len(uint64_t k, int sizes)
{
    switch (sizes) {
    case SIZES_SMALL:
        return 48;
    case SIZES_SERVE:
        return k % 53 == 0 ? 20000 + k % 3000 : 40 + (k * 7919) % 400;
    default:
        if (k % 1000 == 500)
            return REPL_MAX_MSG;
        if (k % 97 == 0)
            return 20000 + k % 5000;
        return 40 + (k * 7919) % 300;
    }
}

static inline uint8_t pl_byte(int from, uint64_t k, size_t i)
{
    return (uint8_t)((unsigned)from * 131u + (unsigned)k * 31u + (unsigned)i * 7u);
}

static void pl_fill(uint8_t *p, size_t len, int from, uint64_t k, uint64_t epoch)
{
    put32(p, (uint32_t)from);
    put64(p + 4, k);
    put64(p + 12, epoch);
    put32(p + 20, (uint32_t)len);
    for (size_t i = 24; i < len - 8; i++)
        p[i] = pl_byte(from, k, i);
    put64(p + len - 8, fnv1a(p, len - 8));
}

/* k of a valid message from `from` at `epoch`, or 0. */
static uint64_t pl_check(const uint8_t *p, size_t len, int from, uint64_t epoch, int sizes)
{
    if (len < PL_MIN || get32(p) != (uint32_t)from || get64(p + 12) != epoch ||
        get32(p + 20) != len)
        return 0;
    uint64_t k = get64(p + 4);
    if (k == 0 || pl_len(k, sizes) != len || get64(p + len - 8) != fnv1a(p, len - 8))
        return 0;
    for (size_t i = 24; i < len - 8; i++)
        if (p[i] != pl_byte(from, k, i))
            return 0;
    return k;
}

/* ---- a test node: a mesh and hooks of our own ---------------------------------------- */

typedef struct tnode {
    int id;
    uint64_t epoch;
    int sizes;                 /* SIZES_* of what it sends and expects */
    int echo;                  /* send every message back (ping-pong responder) */
    int pinger;                /* ping-pong initiator */
    long long burst;           /* sends per step per peer */
    long long rate;            /* serve: messages per second per peer (0: as targets say) */
    peer_mesh *m;
    repl_transport tr;
    uint8_t *buf;              /* REPL_MAX_MSG bytes, repl thread only */
    /* written on the repl thread, read by the main thread */
    atomic_int up[NMAX];
    atomic_llong ups, downs, wakes;
    atomic_llong recv[NMAX];   /* valid messages received from each node */
    atomic_llong last[NMAX];   /* the last k received from each node */
    atomic_ullong ep[NMAX];    /* the epoch of the last message from each node */
    atomic_llong gaps[NMAX];   /* k jumped forward (allowed across connections) */
    atomic_llong bad;          /* not a message anybody sent */
    atomic_llong disorder;     /* duplicate, reordered, replayed or older incarnation */
    atomic_llong sent[NMAX];   /* messages accepted by send() */
    atomic_llong send_closed;  /* send() said CL_ECLOSED */
    atomic_llong pongs;
    /* set by the main thread */
    atomic_llong target[NMAX]; /* send until sent[] reaches this */
    atomic_int ping_go;
    /* repl thread only */
    uint64_t last_tick_us;
    double credit[NMAX];
} tnode;

static void tn_pump(tnode *t, uint64_t now_us)
{
    double dt = t->last_tick_us ? (double)(now_us - t->last_tick_us) / 1e6 : 0;
    t->last_tick_us = now_us;
    int any = 0;
    for (int p = 1; p < NMAX; p++) {
        if (p == t->id || !atomic_load(&t->up[p]))
            continue;
        long long n = atomic_load(&t->sent[p]);
        long long limit = atomic_load(&t->target[p]);
        if (t->rate) {
            t->credit[p] += dt * (double)t->rate;
            if (t->credit[p] > (double)t->rate / 10)
                t->credit[p] = (double)t->rate / 10;
            limit = n + (long long)t->credit[p];
        }
        if (limit > n + t->burst)
            limit = n + t->burst;
        long long start = n;
        for (; n < limit; n++) {
            size_t len = pl_len((uint64_t)n + 1, t->sizes);
            pl_fill(t->buf, len, t->id, (uint64_t)n + 1, t->epoch);
            if (t->tr.send(t->tr.ctx, p, t->buf, len) != CL_OK) {
                atomic_fetch_add(&t->send_closed, 1);
                break;
            }
        }
        if (t->rate)
            t->credit[p] -= (double)(n - start);
        if (n != start) {
            atomic_store(&t->sent[p], n);
            any = 1;
        }
    }
    if (any)
        t->tr.flush(t->tr.ctx);
}

static void tn_on_message(void *engine, int from, uint64_t epoch, const uint8_t *msg, size_t len)
{
    tnode *t = engine;
    if (from < 1 || from >= NMAX || from == t->id) {
        atomic_fetch_add(&t->bad, 1);
        return;
    }
    if (t->echo) {
        if (t->tr.send(t->tr.ctx, from, msg, len) != CL_OK)
            atomic_fetch_add(&t->send_closed, 1);
        return;
    }
    if (t->pinger) {
        atomic_fetch_add(&t->pongs, 1);
        if (atomic_load(&t->ping_go) && t->tr.send(t->tr.ctx, from, msg, len) != CL_OK)
            atomic_fetch_add(&t->send_closed, 1);
        return;
    }
    uint64_t k = pl_check(msg, len, from, epoch, t->sizes);
    if (!k) {
        atomic_fetch_add(&t->bad, 1);
        return;
    }
    uint64_t ep = atomic_load(&t->ep[from]);
    long long last = atomic_load(&t->last[from]);
    if (epoch < ep) {
        atomic_fetch_add(&t->disorder, 1);
        return;
    }
    if (epoch > ep) {
        atomic_store(&t->ep[from], epoch);
        last = 0;
    }
    if ((long long)k <= last) {
        atomic_fetch_add(&t->disorder, 1);
        return;
    }
    if ((long long)k != last + 1)
        atomic_fetch_add(&t->gaps[from], 1);
    atomic_store(&t->last[from], (long long)k);
    atomic_fetch_add(&t->recv[from], 1);
}

static void tn_on_tick(void *engine, uint64_t now_us)
{
    tn_pump(engine, now_us);
}

static void tn_on_wake(void *engine)
{
    tnode *t = engine;
    atomic_fetch_add(&t->wakes, 1);
    if (t->pinger && atomic_load(&t->ping_go) == 1) {
        atomic_store(&t->ping_go, 2);
        uint8_t ping[16] = { 0 };
        for (int p = 1; p < NMAX; p++)
            if (p != t->id && atomic_load(&t->up[p]))
                t->tr.send(t->tr.ctx, p, ping, sizeof ping);
    }
    tn_pump(t, t->tr.now_us(t->tr.ctx));
}

static void tn_on_peer(void *engine, int node, int up)
{
    tnode *t = engine;
    if (node < 1 || node >= NMAX) {
        atomic_fetch_add(&t->bad, 1);
        return;
    }
    atomic_store(&t->up[node], up);
    atomic_fetch_add(up ? &t->ups : &t->downs, 1);
}

/* Creates (not starts) a node.  peer_ports[i] = 0: address set later. */
static tnode *tn_create_with(int id, uint64_t epoch, int port, const identity *me,
                             const int *peer_ids, const int *peer_ports, int n_peers, int *rc_out)
{
    tnode *t = calloc(1, sizeof *t);
    MUST(t != NULL);
    t->id = id;
    t->epoch = epoch;
    t->burst = 5000;
    t->buf = malloc(REPL_MAX_MSG);
    MUST(t->buf != NULL);
    char listen[64], addrs[REPL_MAX_NODES][64];
    peer_node peers[REPL_MAX_NODES];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    for (int i = 0; i < n_peers; i++) {
        snprintf(addrs[i], sizeof addrs[i], "127.0.0.1:%d", peer_ports[i]);
        peers[i] = (peer_node){ .id = peer_ids[i], .addr = peer_ports[i] ? addrs[i] : NULL };
    }
    peer_config cfg = {
        .self = id, .epoch = epoch, .listen = listen, .peers = peers, .n_peers = (size_t)n_peers,
        .cert = me->cert, .key = me->key, .ca = pki.ca,
        .hooks = { .engine = t, .on_message = tn_on_message, .on_tick = tn_on_tick,
                   .on_wake = tn_on_wake, .on_peer = tn_on_peer },
        .reconnect_min_ms = 20, .reconnect_max_ms = 200,
    };
    int rc = peer_mesh_create(&cfg, &t->m);
    if (rc_out)
        *rc_out = rc;
    if (rc != CL_OK) {
        free(t->buf);
        free(t);
        return NULL;
    }
    t->tr = peer_mesh_transport(t->m);
    return t;
}

static tnode *tn_create(int id, uint64_t epoch, int port, const identity *me,
                        const int *peer_ids, const int *peer_ports, int n_peers)
{
    tnode *t = tn_create_with(id, epoch, port, me, peer_ids, peer_ports, n_peers, NULL);
    MUST(t != NULL);
    return t;
}

static void tn_start(tnode *t) { MUST(peer_mesh_start(t->m) == CL_OK); }

static void tn_destroy(tnode *t)
{
    if (!t)
        return;
    peer_mesh_destroy(t->m);
    free(t->buf);
    free(t);
}

static peer_stats tn_stats(tnode *t)
{
    peer_stats s;
    peer_mesh_get_stats(t->m, &s);
    return s;
}

/* Asks t to send n more messages to node p. */
static void tn_send_more(tnode *t, int p, long long n)
{
    atomic_fetch_add(&t->target[p], n);
    t->tr.wake(t->tr.ctx);
}

/* n nodes 1..n on fresh ports, each a peer of every other: created on
 * port 0, then told each other's ports, then started. */
static void cluster_create(tnode **nodes, int n, uint64_t epoch, int sizes)
{
    int ids[REPL_MAX_NODES], zeros[REPL_MAX_NODES] = { 0 };
    for (int i = 1; i <= n; i++) {
        int k = 0;
        for (int j = 1; j <= n; j++)
            if (j != i)
                ids[k++] = j;
        nodes[i] = tn_create(i, epoch, 0, &pki.node[i], ids, zeros, n - 1);
        nodes[i]->sizes = sizes;
    }
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= n; j++) {
            if (i == j)
                continue;
            char addr[64];
            snprintf(addr, sizeof addr, "127.0.0.1:%d", peer_mesh_port(nodes[j]->m));
            MUST(peer_mesh_set_peer_addr(nodes[i]->m, j, addr) == CL_OK);
        }
    for (int i = 1; i <= n; i++)
        tn_start(nodes[i]);
}

static int all_up(tnode **nodes, int n)
{
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= n; j++)
            if (i != j && (!nodes[i] || !atomic_load(&nodes[i]->up[j])))
                return 0;
    return 1;
}

static int all_received(tnode **nodes, int n, long long want)
{
    for (int i = 1; i <= n; i++)
        for (int j = 1; j <= n; j++)
            if (i != j && atomic_load(&nodes[i]->recv[j]) < want)
                return 0;
    return 1;
}

/* ---- tests ------------------------------------------------------------------------ */

static int cn_id(const char *cn)
{
    EVP_PKEY *k = pki_key();
    X509 *x = pki_cert(cn, k, pki.ca, pki.ca_key, 0, -60, DAY);
    char why[128] = "";
    int id = -1;
    int rc = peer_cert_node_id(x, &id, why, sizeof why);
    X509_free(x);
    EVP_PKEY_free(k);
    if (rc != CL_OK) {
        CHECK_EQ(rc, CL_EATTEST);
        CHECK(why[0] != '\0');
        return -1;
    }
    return id;
}

static void test_cert_names(void)
{
    CHECK_EQ(cn_id("cloister-node-1"), 1);
    CHECK_EQ(cn_id("cloister-node-3"), 3);
    CHECK_EQ(cn_id("cloister-node-7"), REPL_MAX_NODES);
    CHECK_EQ(cn_id("cloister-node-0"), -1);
    CHECK_EQ(cn_id("cloister-node-8"), -1);
    CHECK_EQ(cn_id("cloister-node-03"), -1);
    CHECK_EQ(cn_id("cloister-node-+3"), -1);
    CHECK_EQ(cn_id("cloister-node-3x"), -1);
    CHECK_EQ(cn_id("cloister-node-"), -1);
    CHECK_EQ(cn_id("node-3"), -1);
    CHECK_EQ(cn_id("xcloister-node-3"), -1);
    CHECK_EQ(cn_id(NULL), -1);
    CHECK_EQ(cn_id("cloister-node-2,cloister-node-3"), -1);
}

static void test_config(void)
{
    int ids[] = { 2, 3 }, ports[] = { 1, 2 }, rc = 0;
    tnode *t;

    t = tn_create_with(0, 1, 0, &pki.node[1], ids, ports, 2, &rc);
    CHECK(t == NULL && rc == CL_EINVAL);
    int self_ids[] = { 2, 1 };
    t = tn_create_with(1, 1, 0, &pki.node[1], self_ids, ports, 2, &rc);
    CHECK(t == NULL && rc == CL_EINVAL);
    int dup_ids[] = { 2, 2 };
    t = tn_create_with(1, 1, 0, &pki.node[1], dup_ids, ports, 2, &rc);
    CHECK(t == NULL && rc == CL_EINVAL);
    identity mismatched = { pki.node[1].cert, pki.node[2].key };
    t = tn_create_with(1, 1, 0, &mismatched, ids, ports, 2, &rc);
    CHECK(t == NULL && rc == CL_ETLS);
    CHECK_EQ(ERR_peek_error(), 0);

    t = tn_create(1, 1, 0, &pki.node[1], ids, ports, 2);
    int port = peer_mesh_port(t->m);
    CHECK(port > 0);
    char addr[64], want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK(strcmp(peer_mesh_listen_addr(t->m, addr, sizeof addr), want) == 0);
    /* The port is taken now. */
    tnode *t2 = tn_create_with(1, 1, port, &pki.node[1], ids, ports, 2, &rc);
    CHECK(t2 == NULL && rc == CL_EIO);
    CHECK_EQ(peer_mesh_set_peer_addr(t->m, 4, "127.0.0.1:1"), CL_EINVAL);
    CHECK_EQ(peer_mesh_set_peer_addr(t->m, 2, "not an address"), CL_EINVAL);
    CHECK_EQ(peer_mesh_set_peer_addr(t->m, 2, "127.0.0.1:3"), CL_OK);
    /* send() before anything is up: its checks, in order (no repl thread
     * runs yet, so calling from here is safe). */
    uint8_t b[8] = { 0 };
    CHECK_EQ(t->tr.send(t->tr.ctx, 2, b, (size_t)REPL_MAX_MSG + 1), CL_ETOOBIG);
    CHECK_EQ(t->tr.send(t->tr.ctx, 1, b, sizeof b), CL_EINVAL);
    CHECK_EQ(t->tr.send(t->tr.ctx, 5, b, sizeof b), CL_EINVAL);
    CHECK_EQ(t->tr.send(t->tr.ctx, 2, b, sizeof b), CL_ECLOSED);
    CHECK(t->tr.now_us(t->tr.ctx) > 0);
    tn_start(t);
    peer_mesh_stop(t->m);
    peer_mesh_stop(t->m); /* idempotent */
    tn_destroy(t);
}

/* Three nodes, N messages (sizes up to REPL_MAX_MSG) from every node to
 * every other: all arrive, in order, once. */
static void test_all_to_all(void)
{
    enum { N = 1500 };
    tnode *nodes[4] = { 0 };
    cluster_create(nodes, 3, 1, SIZES_MIXED);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 3), 10000));
    uint64_t t0 = now_ms();
    for (int i = 1; i <= 3; i++)
        for (int j = 1; j <= 3; j++)
            if (i != j)
                tn_send_more(nodes[i], j, N);
    CHECK(WAIT_UNTIL(all_received(nodes, 3, N), 60000));
    uint64_t dt = now_ms() - t0;
    usleep(50 * 1000); /* anything extra would show up now */
    long long bytes = 0;
    for (int i = 1; i <= 3; i++) {
        tnode *t = nodes[i];
        peer_stats s = tn_stats(t);
        for (int j = 1; j <= 3; j++) {
            if (i == j)
                continue;
            CHECK_EQ(atomic_load(&t->recv[j]), N);
            CHECK_EQ(atomic_load(&t->last[j]), N);
            CHECK_EQ(atomic_load(&t->gaps[j]), 0);
            CHECK_EQ(atomic_load(&t->ep[j]), 1);
            CHECK_EQ(atomic_load(&t->sent[j]), N);
        }
        CHECK_EQ(atomic_load(&t->bad), 0);
        CHECK_EQ(atomic_load(&t->disorder), 0);
        CHECK_EQ(atomic_load(&t->send_closed), 0);
        CHECK_EQ(atomic_load(&t->downs), 0);
        CHECK_EQ(s.msgs_received, 2 * N);
        CHECK_EQ(s.msgs_sent, 2 * N);
        CHECK_EQ(s.proto_errors + s.refused_cert + s.refused_id + s.refused_epoch + s.hs_failures, 0);
        CHECK_EQ(s.peers_up, 2);
        CHECK_EQ(s.hellos, 2);
        bytes += (long long)s.bytes_received;
    }
    printf("     all-to-all: 3 x 2 x %d messages (%.1f MB) in %llu ms\n", N, bytes / 1e6,
           (unsigned long long)dt);
    for (int i = 1; i <= 3; i++)
        tn_destroy(nodes[i]);
}

/* A node destroyed and created again (same port, higher epoch): the
 * others see it go and come back, and traffic resumes both ways. */
static void test_restart(void)
{
    enum { N = 300 };
    tnode *nodes[4] = { 0 };
    cluster_create(nodes, 3, 1, SIZES_SERVE);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 3), 10000));
    for (int i = 1; i <= 3; i++)
        for (int j = 1; j <= 3; j++)
            if (i != j)
                tn_send_more(nodes[i], j, N);
    REQUIRE(WAIT_UNTIL(all_received(nodes, 3, N), 20000));

    int port3 = peer_mesh_port(nodes[3]->m);
    tn_destroy(nodes[3]);
    nodes[3] = NULL;
    CHECK(WAIT_UNTIL(!atomic_load(&nodes[1]->up[3]) && !atomic_load(&nodes[2]->up[3]), 10000));
    CHECK_EQ(atomic_load(&nodes[1]->downs), 1);

    int ids[] = { 1, 2 };
    int ports[] = { peer_mesh_port(nodes[1]->m), peer_mesh_port(nodes[2]->m) };
    nodes[3] = tn_create(3, 2, port3, &pki.node[3], ids, ports, 2);
    nodes[3]->sizes = SIZES_SERVE;
    tn_start(nodes[3]);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 3), 10000));
    for (int i = 1; i <= 3; i++)
        for (int j = 1; j <= 3; j++)
            if (i != j)
                tn_send_more(nodes[i], j, N);
    /* 1 and 2 received N from each other before and N after; from the
     * new 3 (epoch 2) they receive its N; the new 3 receives N more
     * from each (their numbering goes on: one gap at the restart). */
    CHECK(WAIT_UNTIL(atomic_load(&nodes[1]->recv[2]) == 2 * N && atomic_load(&nodes[2]->recv[1]) == 2 * N &&
                     atomic_load(&nodes[1]->recv[3]) == 2 * N && atomic_load(&nodes[2]->recv[3]) == 2 * N &&
                     atomic_load(&nodes[3]->recv[1]) == N && atomic_load(&nodes[3]->recv[2]) == N,
                     20000));
    for (int i = 1; i <= 2; i++) {
        CHECK_EQ(atomic_load(&nodes[i]->ep[3]), 2);
        CHECK_EQ(atomic_load(&nodes[i]->last[3]), N); /* numbering restarted with the epoch */
        CHECK_EQ(atomic_load(&nodes[i]->gaps[3]), 0);
        CHECK_EQ(atomic_load(&nodes[3]->last[i]), 2 * N);
        CHECK_EQ(atomic_load(&nodes[3]->gaps[i]), 1);
    }
    for (int i = 1; i <= 3; i++) {
        CHECK_EQ(atomic_load(&nodes[i]->bad), 0);
        CHECK_EQ(atomic_load(&nodes[i]->disorder), 0);
        tn_destroy(nodes[i]);
    }
}

/* Node 1 and a hostile node X that uses identity `bad` and claims id
 * `xid`; node 1 knows X's address as node `as`.  Waits until node 1 has
 * refused X `refusals` times by `counter`, then checks nothing got
 * through either way. */
static void refusal_case(const identity *bad, int xid, int as, size_t counter, uint64_t refusals)
{
    tnode *x = NULL, *one = NULL;
    int one_ids[] = { 2, 3 }, one_ports[] = { 0, 0 }, x_ids[] = { 1 }, x_ports[1];
    one = tn_create(1, 1, 0, &pki.node[1], one_ids, one_ports, 2);
    x_ports[0] = peer_mesh_port(one->m);
    x = tn_create(xid, 7, 0, bad, x_ids, x_ports, 1);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", peer_mesh_port(x->m));
    MUST(peer_mesh_set_peer_addr(one->m, as, addr) == CL_OK);
    tn_start(one);
    tn_start(x);
    tn_send_more(x, 1, 1000000);
    tn_send_more(one, as, 1000000);
    peer_stats s;
    int ok = WAIT_UNTIL((peer_mesh_get_stats(one->m, &s),
                         *(const uint64_t *)((const char *)&s + counter) >= refusals), 15000);
    CHECK(ok);
    usleep(100 * 1000);
    s = tn_stats(one);
    peer_stats sx = tn_stats(x);
    CHECK_EQ(s.ups, 0);
    CHECK_EQ(s.hellos, 0);
    CHECK_EQ(s.msgs_received, 0);
    CHECK_EQ(sx.ups, 0);
    CHECK_EQ(sx.hellos, 0);
    CHECK_EQ(sx.msgs_received, 0);
    CHECK_EQ(atomic_load(&one->ups) + atomic_load(&x->ups), 0);
    CHECK_EQ(atomic_load(&one->sent[as]) + atomic_load(&x->sent[1]), 0);
    CHECK(s.dials > 0 && s.accepted > 0);
    tn_destroy(x);
    tn_destroy(one);
}

static void test_foreign_ca(void)
{
    /* node 1 refuses X's certificate as a server (incoming) and as a
     * client (its own dial): both are counted. */
    refusal_case(&pki.foreign2, 2, 2, offsetof(peer_stats, refused_cert), 2);
}

static void test_expired(void)
{
    refusal_case(&pki.expired2, 2, 2, offsetof(peer_stats, refused_cert), 2);
}

static void test_wrong_id(void)
{
    /* X claims to be node 3 with node 2's certificate: its hello is
     * refused (certificate names 2, hello says 3) and so is node 1's dial
     * to "node 3" (the listener's certificate names 2). */
    refusal_case(&pki.node[2], 3, 3, offsetof(peer_stats, refused_id), 2);
}

/* Node 2 comes back with a lower epoch than node 1 has seen: refused
 * both ways, nothing delivered; then with a higher one: accepted. */
static void test_old_epoch(void)
{
    tnode *nodes[3] = { 0 };
    int ids1[] = { 2 }, ids2[] = { 1 }, zero[] = { 0 };
    nodes[1] = tn_create(1, 1, 0, &pki.node[1], ids1, zero, 1);
    int p1[] = { peer_mesh_port(nodes[1]->m) };
    nodes[2] = tn_create(2, 5, 0, &pki.node[2], ids2, p1, 1);
    int port2 = peer_mesh_port(nodes[2]->m);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port2);
    MUST(peer_mesh_set_peer_addr(nodes[1]->m, 2, addr) == CL_OK);
    tn_start(nodes[1]);
    tn_start(nodes[2]);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 2), 10000));
    tn_destroy(nodes[2]);
    REQUIRE(WAIT_UNTIL(!atomic_load(&nodes[1]->up[2]), 10000));

    nodes[2] = tn_create(2, 3, port2, &pki.node[2], ids2, p1, 1);
    tn_start(nodes[2]);
    tn_send_more(nodes[2], 1, 1000000);
    peer_stats s;
    CHECK(WAIT_UNTIL((peer_mesh_get_stats(nodes[1]->m, &s), s.refused_epoch >= 2), 10000));
    usleep(100 * 1000);
    CHECK(!atomic_load(&nodes[1]->up[2]));
    CHECK_EQ(atomic_load(&nodes[2]->ups), 0);
    CHECK_EQ(atomic_load(&nodes[1]->recv[2]), 0);
    CHECK_EQ(tn_stats(nodes[1]).hellos, 1); /* only the epoch-5 one */
    tn_destroy(nodes[2]);

    nodes[2] = tn_create(2, 6, port2, &pki.node[2], ids2, p1, 1);
    tn_start(nodes[2]);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 2), 10000));
    tn_send_more(nodes[2], 1, 100);
    CHECK(WAIT_UNTIL(atomic_load(&nodes[1]->recv[2]) == 100, 10000));
    CHECK_EQ(atomic_load(&nodes[1]->ep[2]), 6);
    CHECK_EQ(atomic_load(&nodes[1]->bad) + atomic_load(&nodes[1]->disorder), 0);
    tn_destroy(nodes[2]);
    tn_destroy(nodes[1]);
}

/* ---- a hand-driven TLS client, for the listener's frame checks ------------------ */

static SSL_CTX *raw_ctx(const identity *id)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    MUST(ctx != NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), pki.ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (id) {
        MUST(SSL_CTX_use_certificate(ctx, id->cert) == 1);
        MUST(SSL_CTX_use_PrivateKey(ctx, id->key) == 1);
    }
    return ctx;
}

static int raw_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    MUST(fd >= 0);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    MUST(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    return fd;
}

/* A TLS connection to the mesh on port; NULL if the handshake fails. */
static SSL *raw_connect(SSL_CTX *ctx, int port)
{
    int fd = raw_tcp(port);
    SSL *ssl = SSL_new(ctx);
    MUST(ssl != NULL);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        return NULL;
    }
    return ssl;
}

static void raw_close(SSL *ssl)
{
    if (!ssl)
        return;
    int fd = SSL_get_fd(ssl);
    SSL_free(ssl);
    close(fd);
    ERR_clear_error();
}

static void raw_write(SSL *ssl, const void *p, size_t n)
{
    MUST(SSL_write(ssl, p, (int)n) == (int)n);
}

static void raw_hello(SSL *ssl, int from, uint64_t epoch)
{
    uint8_t h[20];
    put32(h, 16);
    memcpy(h + 4, "CLP1", 4);
    put32(h + 8, (uint32_t)from);
    put64(h + 12, epoch);
    raw_write(ssl, h, sizeof h);
}

/* Reads exactly n bytes; 0, or -1 on end/error/time-out. */
static int raw_read(SSL *ssl, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        int r = SSL_read(ssl, p + got, (int)(n - got));
        if (r <= 0) {
            ERR_clear_error();
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* 1 if the mesh closes the connection within 10 s (and sends nothing). */
static int raw_closed(SSL *ssl)
{
    uint8_t b[64];
    int r = SSL_read(ssl, b, sizeof b);
    int e = SSL_get_error(ssl, r);
    ERR_clear_error();
    return r <= 0 && (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL || e == SSL_ERROR_SSL) &&
           !(e == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void raw_data(SSL *ssl, uint64_t seq, int from, uint64_t k, uint64_t epoch)
{
    uint8_t f[12 + 512];
    size_t len = pl_len(k, SIZES_SERVE);
    MUST(len <= sizeof f - 12);
    put32(f, (uint32_t)(8 + len));
    put64(f + 4, seq);
    pl_fill(f + 12, len, from, k, epoch);
    raw_write(ssl, f, 12 + len);
}

static void test_frames(void)
{
    int ids[] = { 2, 3 }, zero[] = { 0, 0 };
    tnode *one = tn_create(1, 9, 0, &pki.node[1], ids, zero, 2);
    one->sizes = SIZES_SERVE;
    tn_start(one);
    int port = peer_mesh_port(one->m);
    SSL_CTX *ctx2 = raw_ctx(&pki.node[2]);
    uint8_t w[20];

    /* hello -> welcome naming node 1 and its epoch; data in sequence is
     * delivered; a skipped sequence number closes the connection. */
    SSL *a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_hello(a, 2, 4);
    REQUIRE(raw_read(a, w, sizeof w) == 0);
    CHECK_EQ(get32(w), 16);
    CHECK(memcmp(w + 4, "CLPW", 4) == 0);
    CHECK_EQ(get32(w + 8), 1);
    CHECK_EQ(get64(w + 12), 9);
    raw_data(a, 1, 2, 1, 4);
    raw_data(a, 2, 2, 2, 4);
    CHECK(WAIT_UNTIL(atomic_load(&one->recv[2]) == 2, 5000));
    CHECK_EQ(atomic_load(&one->ep[2]), 4);
    raw_data(a, 4, 2, 3, 4);
    CHECK(raw_closed(a));
    raw_close(a);
    CHECK_EQ(tn_stats(one).proto_errors, 1);
    CHECK_EQ(atomic_load(&one->recv[2]), 2);

    /* A frame header over the limit closes at once (no waiting for the
     * 4 MiB body). */
    a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_hello(a, 2, 4);
    REQUIRE(raw_read(a, w, sizeof w) == 0);
    uint8_t big[12];
    put32(big, 8 + REPL_MAX_MSG + 1);
    put64(big + 4, 1);
    raw_write(a, big, sizeof big);
    CHECK(raw_closed(a));
    raw_close(a);
    CHECK_EQ(tn_stats(one).proto_errors, 2);

    /* The first frame must be a hello. */
    a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_data(a, 1, 2, 3, 4);
    CHECK(raw_closed(a));
    raw_close(a);
    CHECK_EQ(tn_stats(one).proto_errors, 3);

    /* A hello claiming another node than the certificate names. */
    a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_hello(a, 3, 4);
    CHECK(raw_closed(a));
    raw_close(a);
    CHECK_EQ(tn_stats(one).refused_id, 1);

    /* An older incarnation than seen (4). */
    a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_hello(a, 2, 3);
    CHECK(raw_closed(a));
    raw_close(a);
    CHECK_EQ(tn_stats(one).refused_epoch, 1);

    /* The same epoch again is fine (a reconnection); a second connection
     * of node 2 replaces the first. */
    a = raw_connect(ctx2, port);
    REQUIRE(a != NULL);
    raw_hello(a, 2, 4);
    REQUIRE(raw_read(a, w, sizeof w) == 0);
    raw_data(a, 1, 2, 3, 4);
    CHECK(WAIT_UNTIL(atomic_load(&one->recv[2]) == 3, 5000));
    SSL *b = raw_connect(ctx2, port);
    REQUIRE(b != NULL);
    raw_hello(b, 2, 5);
    REQUIRE(raw_read(b, w, sizeof w) == 0);
    CHECK(raw_closed(a));
    raw_close(a);
    raw_data(b, 1, 2, 1, 5);
    CHECK(WAIT_UNTIL(atomic_load(&one->recv[2]) == 4, 5000));
    CHECK_EQ(atomic_load(&one->ep[2]), 5);
    raw_close(b);

    /* No client certificate; not TLS at all. */
    SSL_CTX *anon = raw_ctx(NULL);
    uint64_t hs0 = tn_stats(one).hs_failures;
    a = raw_connect(anon, port);
    if (a) { /* TLS 1.3: the client may finish before the server refuses */
        CHECK(raw_closed(a));
        raw_close(a);
    }
    int fd = raw_tcp(port);
    const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    CHECK(write(fd, junk, sizeof junk - 1) == (ssize_t)(sizeof junk - 1));
    char rb[64];
    CHECK(read(fd, rb, sizeof rb) >= 0); /* an alert, or the end */
    close(fd);
    CHECK(WAIT_UNTIL(tn_stats(one).hs_failures >= hs0 + 2, 5000));

    peer_stats s = tn_stats(one);
    CHECK_EQ(s.hellos, 4); /* a, the oversized frame's, a again, b */
    CHECK_EQ(s.msgs_received, 4);
    CHECK_EQ(atomic_load(&one->bad) + atomic_load(&one->disorder), 0);
    SSL_CTX_free(anon);
    SSL_CTX_free(ctx2);
    tn_destroy(one);
}

/* ---- throughput ---------------------------------------------------------------------- */

static void proc_io(unsigned long long *r, unsigned long long *w)
{
    *r = *w = 0;
    FILE *f = fopen("/proc/self/io", "r");
    if (!f)
        return;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "syscr: %llu", r);
        sscanf(line, "syscw: %llu", w);
    }
    fclose(f);
}

static void test_throughput(void)
{
    enum { N = 100000 };
    tnode *nodes[3] = { 0 };
    cluster_create(nodes, 2, 1, SIZES_SMALL);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 2), 10000));
    nodes[1]->burst = N; /* one loop of N send() calls, then one flush */
    peer_stats s0 = tn_stats(nodes[1]), r0 = tn_stats(nodes[2]);
    unsigned long long cr0, cw0, cr1, cw1;
    proc_io(&cr0, &cw0);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    tn_send_more(nodes[1], 2, N);
    CHECK(WAIT_UNTIL(atomic_load(&nodes[2]->recv[1]) == N, 30000));
    clock_gettime(CLOCK_MONOTONIC, &b);
    proc_io(&cr1, &cw1);
    double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    peer_stats s1 = tn_stats(nodes[1]), r1 = tn_stats(nodes[2]);
    unsigned long long writes = cw1 - cw0, reads = cr1 - cr0;
    printf("     %d x 48-byte messages: %.0f msgs/s (%.3f s), %.1f MB/s payload; "
           "%llu SSL_write, %llu SSL_read, %llu write(2)-family and %llu read(2)-family calls "
           "in the process\n",
           N, N / secs, secs, N * 48 / secs / 1e6, (unsigned long long)(s1.ssl_writes - s0.ssl_writes),
           (unsigned long long)(r1.ssl_reads - r0.ssl_reads), writes, reads);
    CHECK_EQ(atomic_load(&nodes[2]->gaps[1]) + atomic_load(&nodes[2]->disorder) +
                 atomic_load(&nodes[2]->bad), 0);
    CHECK(s1.ssl_writes - s0.ssl_writes <= N / 200);  /* ~300 messages per 16 KiB record */
    CHECK(writes > 0 && writes <= N / 100);           /* the wake-ups and eventfds included */
    CHECK(reads <= N / 50);                           /* a wake-up may find one record */

    /* Ping-pong: one message in flight, node 2 echoes (latency bound). */
    tn_destroy(nodes[1]);
    tn_destroy(nodes[2]);
    cluster_create(nodes, 2, 1, SIZES_SMALL);
    REQUIRE(WAIT_UNTIL(all_up(nodes, 2), 10000));
    nodes[1]->pinger = 1;
    nodes[2]->echo = 1;
    atomic_store(&nodes[1]->ping_go, 1);
    nodes[1]->tr.wake(nodes[1]->tr.ctx);
    usleep(100 * 1000);
    long long p0 = atomic_load(&nodes[1]->pongs);
    uint64_t t0 = now_ms();
    usleep(1000 * 1000);
    long long p1 = atomic_load(&nodes[1]->pongs);
    double rtps = (double)(p1 - p0) * 1000.0 / (double)(now_ms() - t0);
    atomic_store(&nodes[1]->ping_go, 0);
    printf("     ping-pong: %.0f round trips/s (%.1f us each)\n", rtps, rtps > 0 ? 1e6 / rtps : 0);
    CHECK(rtps > 200);
    CHECK_EQ(atomic_load(&nodes[1]->send_closed) + atomic_load(&nodes[2]->send_closed), 0);
    tn_destroy(nodes[1]);
    tn_destroy(nodes[2]);
}

/* ---- modes for the black-box test ------------------------------------------------------- */

static int write_pem(const char *dir, const char *name, X509 *x, EVP_PKEY *k)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = x ? PEM_write_X509(f, x) == 1
               : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    if (!x)
        chmod(path, 0600);
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int mode_pki(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s pki DIR N\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[3]);
    if (n < 1 || n > REPL_MAX_NODES) {
        fprintf(stderr, "N must be 1..%d\n", REPL_MAX_NODES);
        return 2;
    }
    pki_create(n);
    int rc = write_pem(argv[2], "ca.crt", pki.ca, NULL);
    for (int i = 1; i <= n && rc == 0; i++) {
        char c[32], k[32];
        snprintf(c, sizeof c, "node-%d.crt", i);
        snprintf(k, sizeof k, "node-%d.key", i);
        rc = write_pem(argv[2], c, pki.node[i].cert, NULL) | write_pem(argv[2], k, NULL, pki.node[i].key);
    }
    pki_destroy();
    if (rc != 0)
        fprintf(stderr, "cannot write certificates to %s: %s\n", argv[2], strerror(errno));
    return rc ? 1 : 0;
}

static void serve_status(tnode *t, const char *tag)
{
    peer_stats s = tn_stats(t);
    char line[2048];
    int n = snprintf(line, sizeof line,
                     "%s id=%d epoch=%llu port=%d up=%llu bad=%lld disorder=%lld hellos=%llu "
                     "ups=%llu downs=%llu accepted=%llu hs_fail=%llu refused_cert=%llu "
                     "refused_id=%llu refused_epoch=%llu proto=%llu received=%llu",
                     tag, t->id, (unsigned long long)t->epoch, peer_mesh_port(t->m),
                     (unsigned long long)s.peers_up, atomic_load(&t->bad),
                     atomic_load(&t->disorder), (unsigned long long)s.hellos,
                     (unsigned long long)s.ups, (unsigned long long)s.downs,
                     (unsigned long long)s.accepted, (unsigned long long)s.hs_failures,
                     (unsigned long long)s.refused_cert, (unsigned long long)s.refused_id,
                     (unsigned long long)s.refused_epoch, (unsigned long long)s.proto_errors,
                     (unsigned long long)s.msgs_received);
    for (int p = 1; p < NMAX && n > 0 && (size_t)n < sizeof line; p++) {
        if (p == t->id)
            continue;
        n += snprintf(line + n, sizeof line - (size_t)n,
                      " sent.%d=%lld recv.%d=%lld last.%d=%lld gaps.%d=%lld ep.%d=%llu", p,
                      atomic_load(&t->sent[p]), p, atomic_load(&t->recv[p]), p,
                      atomic_load(&t->last[p]), p, atomic_load(&t->gaps[p]), p,
                      (unsigned long long)atomic_load(&t->ep[p]));
    }
    printf("%s\n", line);
    fflush(stdout);
}

static X509 *load_cert(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return x;
}

static EVP_PKEY *load_key(const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    return k;
}

static int mode_serve(int argc, char **argv)
{
    int id = 0, n_peers = 0;
    long long rate = 2000;
    uint64_t epoch = 1;
    const char *listen = "127.0.0.1:0", *certs = NULL;
    peer_node peers[REPL_MAX_NODES];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto usage;
        i++;
        if (!strcmp(a, "--id"))
            id = atoi(v);
        else if (!strcmp(a, "--epoch"))
            epoch = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--listen"))
            listen = v;
        else if (!strcmp(a, "--certs"))
            certs = v;
        else if (!strcmp(a, "--rate"))
            rate = atoll(v);
        else if (!strcmp(a, "--peer") && n_peers < REPL_MAX_NODES && strchr(v, '='))
            peers[n_peers++] = (peer_node){ .id = atoi(v), .addr = strchr(v, '=') + 1 };
        else
            goto usage;
    }
    if (id < 1 || id > REPL_MAX_NODES || !certs)
        goto usage;

    /* Signals go to sigtimedwait below, not to the repl thread. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    char cn[32], kn[32];
    snprintf(cn, sizeof cn, "node-%d.crt", id);
    snprintf(kn, sizeof kn, "node-%d.key", id);
    X509 *ca = load_cert(certs, "ca.crt"), *cert = load_cert(certs, cn);
    EVP_PKEY *key = load_key(certs, kn);
    if (!ca || !cert || !key) {
        fprintf(stderr, "cannot load ca.crt, %s and %s from %s\n", cn, kn, certs);
        return 1;
    }
    tnode *t = calloc(1, sizeof *t);
    t->buf = malloc(REPL_MAX_MSG);
    if (!t || !t->buf)
        return 1;
    t->id = id;
    t->epoch = epoch;
    t->sizes = SIZES_SERVE;
    t->rate = rate;
    t->burst = rate;
    for (int p = 0; p < NMAX; p++)
        atomic_store(&t->target[p], LLONG_MAX / 2);
    peer_config cfg = {
        .self = id, .epoch = epoch, .listen = listen, .peers = peers, .n_peers = (size_t)n_peers,
        .cert = cert, .key = key, .ca = ca,
        .hooks = { .engine = t, .on_message = tn_on_message, .on_tick = tn_on_tick,
                   .on_wake = tn_on_wake, .on_peer = tn_on_peer },
        .reconnect_min_ms = 20, .reconnect_max_ms = 250,
    };
    int rc = peer_mesh_create(&cfg, &t->m);
    X509_free(ca);
    X509_free(cert);
    EVP_PKEY_free(key);
    if (rc != CL_OK) {
        fprintf(stderr, "peer_mesh_create: %s\n", cl_strerror(rc));
        return 1;
    }
    t->tr = peer_mesh_transport(t->m);
    printf("LISTENING port=%d\n", peer_mesh_port(t->m));
    fflush(stdout);
    if (peer_mesh_start(t->m) != CL_OK)
        return 1;
    for (;;) {
        struct timespec ts = { .tv_nsec = 100 * 1000 * 1000 };
        int sig = sigtimedwait(&sigs, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT)
            break;
        serve_status(t, "STATUS");
    }
    peer_mesh_stop(t->m);
    serve_status(t, "FINAL");
    peer_mesh_destroy(t->m);
    free(t->buf);
    free(t);
    return 0;

usage:
    fprintf(stderr, "usage: %s serve --id I --epoch E --listen HOST:PORT --certs DIR "
                    "--peer J=HOST:PORT ... [--rate MSGS_PER_S]\n", argv[0]);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "pki"))
        return mode_pki(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "serve"))
        return mode_serve(argc, argv);
    if (argc > 1) {
        fprintf(stderr, "usage: %s [pki DIR N | serve ...]\n", argv[0]);
        return 2;
    }
    cl_log_set_level(getenv("PEER_TEST_VERBOSE") ? CL_LOG_DEBUG : CL_LOG_ERROR);
    pki_create(3);
    RUN(test_cert_names);
    RUN(test_config);
    RUN(test_all_to_all);
    RUN(test_restart);
    RUN(test_foreign_ca);
    RUN(test_expired);
    RUN(test_wrong_id);
    RUN(test_old_epoch);
    RUN(test_frames);
    RUN(test_throughput);
    pki_destroy();
    return th_done();
}
