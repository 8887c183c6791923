/* test_repl_threads.c - the engine with real threads, as the daemon runs
 * it: each node's engine on its own repl thread (a small in-memory
 * transport with the threading of peer.c: messages and wake-ups arrive
 * through a queue and an event, ticks every millisecond), and client
 * threads using the blocking helpers (repl_*_sync) concurrently:
 * increments end exact, and read-then-write sequences under a lock are
 * exact in both modes - in eventual mode only because the lock carries
 * the release set (release consistency). */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/repl/ops.h"
#include "../../../src/repl/repl.h"
#include "../../../src/store/store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N 3
#define CLIENTS 4

struct tmsg {
    struct tmsg *next;
    int from;
    uint64_t epoch;
    size_t len;
    uint8_t data[];
};

struct tnode {
    int id;
    pthread_t th;
    store *st;
    repl *r;
    repl_engine_hooks h;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct tmsg *head, *tail;
    int wake, stop;
};

static struct tnode nodes[N + 1];

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static int t_send(void *ctx, int to, const uint8_t *msg, size_t len)
{
    struct tnode *self = ctx, *dst = &nodes[to];
    struct tmsg *m = malloc(sizeof *m + len);
    if (!m)
        return CL_ENOMEM;
    m->next = NULL;
    m->from = self->id;
    m->epoch = 1;
    m->len = len;
    memcpy(m->data, msg, len);
    pthread_mutex_lock(&dst->mu);
    if (dst->tail)
        dst->tail->next = m;
    else
        dst->head = m;
    dst->tail = m;
    pthread_cond_signal(&dst->cv);
    pthread_mutex_unlock(&dst->mu);
    return CL_OK;
}

static void t_flush(void *ctx) { (void)ctx; }

static void t_wake(void *ctx)
{
    struct tnode *nd = ctx;
    pthread_mutex_lock(&nd->mu);
    nd->wake = 1;
    pthread_cond_signal(&nd->cv);
    pthread_mutex_unlock(&nd->mu);
}

static uint64_t t_now(void *ctx)
{
    (void)ctx;
    return mono_us();
}

/* The repl thread of one node. */
static void *node_main(void *arg)
{
    struct tnode *nd = arg;
    uint64_t last_tick = 0;
    pthread_mutex_lock(&nd->mu);
    while (!nd->stop) {
        if (!nd->head && !nd->wake) {
            struct timespec dl;
            clock_gettime(CLOCK_REALTIME, &dl);
            dl.tv_nsec += 1000000;
            if (dl.tv_nsec >= 1000000000) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&nd->cv, &nd->mu, &dl);
        }
        struct tmsg *m = nd->head;
        nd->head = nd->tail = NULL;
        int wake = nd->wake;
        nd->wake = 0;
        pthread_mutex_unlock(&nd->mu);
        int got = m != NULL;
        while (m) {
            struct tmsg *next = m->next;
            nd->h.on_message(nd->h.engine, m->from, m->epoch, m->data, m->len);
            free(m);
            m = next;
        }
        if (wake)
            nd->h.on_wake(nd->h.engine);
        uint64_t now = mono_us();
        if (got || now - last_tick >= 1000) {
            nd->h.on_tick(nd->h.engine, now);
            last_tick = now;
        }
        pthread_mutex_lock(&nd->mu);
    }
    pthread_mutex_unlock(&nd->mu);
    return NULL;
}

static void cluster_start(void)
{
    static const repl_namespace ns[] = { { "ev:", REPL_EVENTUAL } };
    for (int i = 1; i <= N; i++) {
        struct tnode *nd = &nodes[i];
        memset(nd, 0, sizeof *nd);
        nd->id = i;
        pthread_mutex_init(&nd->mu, NULL);
        pthread_cond_init(&nd->cv, NULL);
        store_config sc = { .memory_bytes = 8u << 20, .max_value = 64u << 10 };
        REQUIRE(store_create(&sc, &nd->st) == CL_OK);
        repl_config c = { .self = i, .n = N, .epoch = 1, .st = nd->st, .ns = ns, .n_ns = 1,
                          .op_timeout_ms = 10000, .antientropy_ms = 100000 };
        REQUIRE(repl_create(&c, &nd->r) == CL_OK);
        repl_transport tr = { nd, t_send, t_flush, t_wake, t_now };
        repl_attach(nd->r, &tr);
        nd->h = repl_hooks(nd->r);
    }
    for (int i = 1; i <= N; i++)
        for (int j = 1; j <= N; j++)
            if (i != j)
                nodes[i].h.on_peer(nodes[i].h.engine, j, 1);
    for (int i = 1; i <= N; i++)
        REQUIRE(pthread_create(&nodes[i].th, NULL, node_main, &nodes[i]) == 0);
}

static void cluster_stop(void)
{
    for (int i = 1; i <= N; i++) {
        pthread_mutex_lock(&nodes[i].mu);
        nodes[i].stop = 1;
        pthread_cond_signal(&nodes[i].cv);
        pthread_mutex_unlock(&nodes[i].mu);
        pthread_join(nodes[i].th, NULL);
    }
    for (int i = 1; i <= N; i++) {
        repl_destroy(nodes[i].r);
        store_destroy(nodes[i].st);
        for (struct tmsg *m = nodes[i].head, *n; m; m = n) {
            n = m->next;
            free(m);
        }
        pthread_mutex_destroy(&nodes[i].mu);
        pthread_cond_destroy(&nodes[i].cv);
    }
}

/* ---- clients ---------------------------------------------------------------- */

enum { INCRS = 150, LOCKED = 40 };

struct client {
    int id;
    pthread_t th;
    int failures;
};

static void *incr_main(void *arg)
{
    struct client *c = arg;
    for (int i = 0; i < INCRS; i++) {
        repl_op op;
        repl_op_init(&op, REPL_OP_INCR);
        op.delta = 1;
        uint8_t buf[32];
        repl_val v;
        repl *r = nodes[1 + (c->id + i) % N].r;
        if (repl_rmw_sync(r, (const uint8_t *)"ctr", 3, repl_op_fn, &op, buf, sizeof buf, &v) !=
            CL_OK)
            c->failures++;
        repl_op_fini(&op);
    }
    /* its own key: written, then read back through every node */
    char key[16], val[16];
    snprintf(key, sizeof key, "own%d", c->id);
    snprintf(val, sizeof val, "mine%d", c->id);
    repl_val pv = { .present = 1, .data = (const uint8_t *)val, .len = strlen(val) };
    uint64_t ver;
    if (repl_put_sync(nodes[1].r, (const uint8_t *)key, strlen(key), &pv, &ver) != CL_OK)
        c->failures++;
    for (int i = 1; i <= N; i++) {
        uint8_t buf[32];
        repl_val v;
        if (repl_get_sync(nodes[i].r, (const uint8_t *)key, strlen(key), buf, sizeof buf, &v) !=
                CL_OK ||
            v.len != strlen(val) || memcmp(buf, val, v.len) != 0 || v.version != ver)
            c->failures++;
    }
    return NULL;
}

/* get, then put (not atomic) under the lock; key in either mode */
static const char *locked_key;

static void *locked_main(void *arg)
{
    struct client *c = arg;
    size_t kl = strlen(locked_key);
    for (int i = 0; i < LOCKED; i++) {
        repl *r = nodes[1 + (c->id + i) % N].r;
        uint64_t owner = (uint64_t)c->id << 32 | (uint64_t)(i + 1), token;
        if (repl_lock_sync(r, (const uint8_t *)"lk", 2, owner, 10000, 20000, &token) != CL_OK) {
            c->failures++;
            continue;
        }
        uint8_t buf[32];
        repl_val v;
        uint64_t n = 0;
        int rc = repl_get_sync(r, (const uint8_t *)locked_key, kl, buf, sizeof buf - 1, &v);
        if (rc == CL_OK) {
            buf[v.len] = 0;
            n = strtoull((char *)buf, NULL, 10);
        } else if (rc != CL_ENOTFOUND) {
            c->failures++;
        }
        char out[32];
        snprintf(out, sizeof out, "%llu", (unsigned long long)(n + 1));
        repl_val pv = { .present = 1, .data = (const uint8_t *)out, .len = strlen(out) };
        uint64_t ver = 0;
        if (repl_put_sync(r, (const uint8_t *)locked_key, kl, &pv, &ver) != CL_OK)
            c->failures++;
        repl_wkey ws = { (const uint8_t *)locked_key, kl, ver };
        if (repl_unlock_sync(r, (const uint8_t *)"lk", 2, owner, token, &ws, 1) != CL_OK)
            c->failures++;
    }
    return NULL;
}

static uint64_t read_number(const char *key, int node)
{
    uint8_t buf[32];
    repl_val v;
    if (repl_get_sync(nodes[node].r, (const uint8_t *)key, strlen(key), buf, sizeof buf - 1, &v) !=
        CL_OK)
        return UINT64_MAX;
    buf[v.len] = 0;
    return strtoull((char *)buf, NULL, 10);
}

static void run_clients(void *(*fn)(void *))
{
    struct client cl[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        cl[i].id = i;
        cl[i].failures = 0;
        REQUIRE(pthread_create(&cl[i].th, NULL, fn, &cl[i]) == 0);
    }
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(cl[i].th, NULL);
        CHECK_EQ(cl[i].failures, 0);
    }
}

static void test_incr_sync(void)
{
    cluster_start();
    repl_val pv = { .present = 1, .data = (const uint8_t *)"0", .len = 1 };
    CHECK_EQ(repl_put_sync(nodes[2].r, (const uint8_t *)"ctr", 3, &pv, NULL), CL_OK);
    run_clients(incr_main);
    for (int i = 1; i <= N; i++)
        CHECK_EQ(read_number("ctr", i), CLIENTS * INCRS);
    /* a value larger than the caller's buffer */
    uint8_t small[2];
    repl_val v;
    CHECK_EQ(repl_get_sync(nodes[1].r, (const uint8_t *)"own0", 4, small, sizeof small, &v),
             CL_ETOOBIG);
    CHECK_EQ(v.len, 5);
    cluster_stop();
}

static void test_locked_strong(void)
{
    cluster_start();
    locked_key = "plain";
    run_clients(locked_main);
    for (int i = 1; i <= N; i++)
        CHECK_EQ(read_number("plain", i), CLIENTS * LOCKED);
    cluster_stop();
}

static void test_locked_eventual(void)
{
    cluster_start();
    locked_key = "ev:plain";
    run_clients(locked_main);
    /* the lock's last grant synced it on whichever node; take the max */
    uint64_t best = 0;
    for (int i = 1; i <= N; i++) {
        uint64_t v = read_number("ev:plain", i);
        if (v != UINT64_MAX && v > best)
            best = v;
    }
    CHECK_EQ(best, CLIENTS * LOCKED);
    cluster_stop();
}

int main(void)
{
    RUN(test_incr_sync);
    RUN(test_locked_strong);
    RUN(test_locked_eventual);
    return th_done();
}
