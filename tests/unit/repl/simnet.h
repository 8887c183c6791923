/*
 * simnet.h - a deterministic simulated network for the replication
 * engine's tests: it implements transport.h for up to 7 engines in one
 * thread, with simulated time and a seeded PRNG, so a failing run can be
 * replayed exactly.
 *
 * Faults: per-message loss and duplication probabilities, delay with
 * jitter (which reorders), partitions (messages across a cut are lost),
 * node crash (the engine and its store are destroyed; pending operations
 * fail with CL_ECLOSED; messages to and from the old incarnation are
 * dropped, as peer.c does) and restart (a new store and engine, the next
 * epoch, recover = 1).  Tests may also record delivered messages and
 * inject them again later (replays the real transport would refuse),
 * to show the engine itself is not fooled by them.
 *
 * Delivery: a message arrives at now + delay; the receiving engine's
 * on_tick runs right after each batch delivered at one instant (so its
 * replies leave, as with peer.c), and every engine ticks each simulated
 * millisecond.  The wall clock the engines see is simulated too.
 *
 * Helpers at the end run one operation to completion (sim_get, sim_put,
 * sim_rmw, sim_lock, ...) and keep its result in a sim_res.
 */
#ifndef CLOISTER_TEST_SIMNET_H
#define CLOISTER_TEST_SIMNET_H

#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/repl/ops.h"
#include "../../../src/repl/repl.h"
#include "../../../src/store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SIM_MAX REPL_MAX_NODES

typedef struct sim_msg {
    uint64_t at_us, seq;
    int from, to;
    uint64_t from_epoch, to_epoch;
    size_t len;
    uint8_t *data;
} sim_msg;

struct sim;

typedef struct sim_node {
    struct sim *sim;
    int id;
    int alive;
    uint64_t epoch;
    store *st;
    repl *r;
    repl_engine_hooks hooks;
    int wake_pending;
    int received;                 /* messages delivered since the last tick */
    char arena_path[160];
} sim_node;

typedef struct sim {
    int n;
    sim_node node[SIM_MAX + 1];
    uint64_t now_us;
    uint64_t rng;
    /* faults */
    unsigned loss_pct, dup_pct;   /* per message, percent */
    uint64_t delay_us, jitter_us;
    uint8_t cut[SIM_MAX + 1][SIM_MAX + 1];
    /* the queue: a binary heap ordered by (at_us, seq) */
    sim_msg **heap;
    size_t heap_n, heap_cap;
    uint64_t seq;
    uint64_t msgs_sent, msgs_delivered, msgs_lost;
    /* engines */
    repl_config base;             /* ns, timeouts; self/n/epoch/st filled per node */
    size_t arena_bytes;
    size_t max_value;
    int arena_files;              /* back each store with a file under dir */
    char dir[96];
    uint64_t wall_base_ms;
    uint64_t next_tick_us;
    /* recording (replay tests) */
    int record;
    sim_msg **log;
    size_t log_n, log_cap;
} sim;

static uint64_t sim_rand(sim *s)
{
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* ---- the queue -------------------------------------------------------------- */

static inline int sim_msg_before(const sim_msg *a, const sim_msg *b)
{
    return a->at_us < b->at_us || (a->at_us == b->at_us && a->seq < b->seq);
}

static inline void sim_heap_push(sim *s, sim_msg *m)
{
    if (s->heap_n == s->heap_cap) {
        s->heap_cap = s->heap_cap ? s->heap_cap * 2 : 1024;
        s->heap = realloc(s->heap, s->heap_cap * sizeof *s->heap);
        REQUIRE(s->heap != NULL);
    }
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!sim_msg_before(m, s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = m;
}

static inline sim_msg *sim_heap_pop(sim *s)
{
    sim_msg *top = s->heap[0];
    sim_msg *last = s->heap[--s->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->heap_n)
            break;
        if (c + 1 < s->heap_n && sim_msg_before(s->heap[c + 1], s->heap[c]))
            c++;
        if (!sim_msg_before(s->heap[c], last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->heap_n)
        s->heap[i] = last;
    return top;
}

static inline void sim_msg_free(sim_msg *m)
{
    free(m->data);
    free(m);
}

/* ---- transport.h ------------------------------------------------------------ */

static inline void sim_enqueue(sim *s, const sim_node *from, int to, const uint8_t *msg, size_t len)
{
    sim_msg *m = calloc(1, sizeof *m);
    REQUIRE(m != NULL);
    m->data = malloc(len ? len : 1);
    REQUIRE(m->data != NULL);
    memcpy(m->data, msg, len);
    m->len = len;
    m->from = from->id;
    m->to = to;
    m->from_epoch = from->epoch;
    m->to_epoch = s->node[to].epoch;
    m->at_us = s->now_us + s->delay_us + (s->jitter_us ? sim_rand(s) % s->jitter_us : 0);
    m->seq = ++s->seq;
    sim_heap_push(s, m);
}

static inline int sim_send(void *ctx, int to, const uint8_t *msg, size_t len)
{
    sim_node *nd = ctx;
    sim *s = nd->sim;
    if (!nd->alive || to < 1 || to > s->n || to == nd->id)
        return CL_EINVAL;
    if (!s->node[to].alive)
        return CL_ECLOSED;
    if (len > REPL_MAX_MSG)
        return CL_ETOOBIG;
    s->msgs_sent++;
    if (s->cut[nd->id][to] || (s->loss_pct && sim_rand(s) % 100 < s->loss_pct)) {
        s->msgs_lost++;
        return CL_OK;
    }
    sim_enqueue(s, nd, to, msg, len);
    if (s->dup_pct && sim_rand(s) % 100 < s->dup_pct)
        sim_enqueue(s, nd, to, msg, len);
    return CL_OK;
}

static inline void sim_flush(void *ctx) { (void)ctx; }
static inline void sim_wake(void *ctx) { ((sim_node *)ctx)->wake_pending = 1; }
static uint64_t sim_now(void *ctx) { return ((sim_node *)ctx)->sim->now_us; }
static uint64_t sim_wall(void *arg) { sim *s = arg; return s->wall_base_ms + s->now_us / 1000; }

/* ---- nodes ------------------------------------------------------------------- */

static inline void sim_node_start(sim *s, int id, int recover)
{
    sim_node *nd = &s->node[id];
    nd->sim = s;
    nd->id = id;
    nd->epoch++;
    store_config sc = { .memory_bytes = s->arena_bytes, .max_value = s->max_value };
    if (s->arena_files) {
        snprintf(nd->arena_path, sizeof nd->arena_path, "%s/arena-%d", s->dir, id);
        sc.arena_file = nd->arena_path;
    }
    REQUIRE(store_create(&sc, &nd->st) == CL_OK);
    repl_config c = s->base;
    c.self = id;
    c.n = s->n;
    c.epoch = nd->epoch;
    c.recover = recover;
    c.st = nd->st;
    c.wall_ms = sim_wall;
    c.wall_arg = s;
    c.seed = sim_rand(s) | 1;
    REQUIRE(repl_create(&c, &nd->r) == CL_OK);
    repl_transport tr = { nd, sim_send, sim_flush, sim_wake, sim_now };
    repl_attach(nd->r, &tr);
    nd->hooks = repl_hooks(nd->r);
    nd->alive = 1;
    nd->wake_pending = 0;
    for (int j = 1; j <= s->n; j++) {
        if (j == id || !s->node[j].alive)
            continue;
        nd->hooks.on_peer(nd->hooks.engine, j, 1);
        s->node[j].hooks.on_peer(s->node[j].hooks.engine, id, 1);
    }
}

/* n nodes, each a store of arena_mb MiB; faults off.  base: namespaces
 * and time-outs (NULL: defaults). */
static inline void sim_init(sim *s, int n, uint64_t seed, const repl_config *base)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->rng = seed | 1;
    s->delay_us = 100;
    s->jitter_us = 50;
    s->arena_bytes = 8u << 20;
    s->max_value = 64u << 10;
    s->wall_base_ms = 1767225600000ull; /* 2026-01-01 */
    if (base)
        s->base = *base;
    if (!s->base.op_timeout_ms)
        s->base.op_timeout_ms = 3000;
    if (!s->base.retry_ms)
        s->base.retry_ms = 20;
    if (!s->base.antientropy_ms)
        s->base.antientropy_ms = 200;
    if (!s->base.fence_ms)
        s->base.fence_ms = 500;
}

/* Starts every node (after sim_init and any option like arena_files). */
static inline void sim_start(sim *s)
{
    if (s->arena_files && !s->dir[0]) {
        snprintf(s->dir, sizeof s->dir, "/tmp/cl-simnet-XXXXXX");
        REQUIRE(mkdtemp(s->dir) != NULL);
    }
    for (int i = 1; i <= s->n; i++)
        sim_node_start(s, i, 0);
}

static inline void sim_crash(sim *s, int id)
{
    sim_node *nd = &s->node[id];
    if (!nd->alive)
        return;
    nd->alive = 0;
    for (int j = 1; j <= s->n; j++)
        if (j != id && s->node[j].alive)
            s->node[j].hooks.on_peer(s->node[j].hooks.engine, id, 0);
    repl_destroy(nd->r);
    nd->r = NULL;
    store_destroy(nd->st);
    nd->st = NULL;
    if (nd->arena_path[0])
        unlink(nd->arena_path);
}

static inline void sim_restart(sim *s, int id) { sim_node_start(s, id, 1); }

static inline void sim_fini(sim *s)
{
    for (int i = 1; i <= s->n; i++)
        sim_crash(s, i);
    while (s->heap_n)
        sim_msg_free(sim_heap_pop(s));
    free(s->heap);
    for (size_t i = 0; i < s->log_n; i++)
        sim_msg_free(s->log[i]);
    free(s->log);
    if (s->dir[0])
        rmdir(s->dir);
}

static inline void sim_partition(sim *s, int a, int b, int cut)
{
    s->cut[a][b] = s->cut[b][a] = (uint8_t)cut;
}

/* Cuts node a off from everyone (cut = 1) or heals it. */
static inline void sim_isolate(sim *s, int a, int cut)
{
    for (int j = 1; j <= s->n; j++)
        if (j != a)
            sim_partition(s, a, j, cut);
}

static inline void sim_heal(sim *s) { memset(s->cut, 0, sizeof s->cut); }

/* ---- running ------------------------------------------------------------------ */

static inline void sim_wakes(sim *s)
{
    for (int again = 1; again;) {
        again = 0;
        for (int i = 1; i <= s->n; i++) {
            sim_node *nd = &s->node[i];
            if (nd->alive && nd->wake_pending) {
                nd->wake_pending = 0;
                nd->hooks.on_wake(nd->hooks.engine);
                again = 1;
            }
        }
    }
}

/* One instant: wakes, the messages due, the ticks due. */
static inline void sim_step(sim *s)
{
    sim_wakes(s);
    uint64_t next = s->next_tick_us;
    if (s->heap_n && s->heap[0]->at_us < next)
        next = s->heap[0]->at_us;
    if (next > s->now_us)
        s->now_us = next;
    while (s->heap_n && s->heap[0]->at_us <= s->now_us) {
        sim_msg *m = sim_heap_pop(s);
        sim_node *dst = &s->node[m->to];
        sim_node *src = &s->node[m->from];
        /* peer.c drops frames of another incarnation of either end */
        if (dst->alive && dst->epoch == m->to_epoch && src->epoch == m->from_epoch) {
            s->msgs_delivered++;
            dst->received = 1;
            if (s->record) {
                if (s->log_n == s->log_cap) {
                    s->log_cap = s->log_cap ? s->log_cap * 2 : 1024;
                    s->log = realloc(s->log, s->log_cap * sizeof *s->log);
                    REQUIRE(s->log != NULL);
                }
                sim_msg *c = malloc(sizeof *c);
                REQUIRE(c != NULL);
                *c = *m;
                c->data = malloc(m->len ? m->len : 1);
                REQUIRE(c->data != NULL);
                memcpy(c->data, m->data, m->len);
                s->log[s->log_n++] = c;
            }
            dst->hooks.on_message(dst->hooks.engine, m->from, m->from_epoch, m->data, m->len);
        }
        sim_msg_free(m);
        sim_wakes(s);
    }
    int tick = s->now_us >= s->next_tick_us;
    if (tick)
        s->next_tick_us = s->now_us - s->now_us % 1000 + 1000;
    for (int i = 1; i <= s->n; i++) {
        sim_node *nd = &s->node[i];
        if (nd->alive && (tick || nd->received)) {
            nd->received = 0;
            nd->hooks.on_tick(nd->hooks.engine, s->now_us);
        }
    }
    sim_wakes(s);
}

static inline void sim_run_for(sim *s, uint64_t us)
{
    uint64_t end = s->now_us + us;
    while (s->now_us < end)
        sim_step(s);
}

/* Runs until *flag is nonzero or max_us of simulated time passed.
 * Returns *flag. */
static inline int sim_run_until(sim *s, const volatile int *flag, uint64_t max_us)
{
    uint64_t end = s->now_us + max_us;
    while (!*flag && s->now_us < end)
        sim_step(s);
    return *flag;
}

/* Delivers a recorded message again (a replay the transport would drop),
 * claiming the sender's current incarnation, or the one it was sent in
 * (as_sent). */
static inline void sim_inject_as(sim *s, const sim_msg *m, int as_sent)
{
    sim_node *dst = &s->node[m->to];
    if (!dst->alive)
        return;
    uint64_t epoch = as_sent ? m->from_epoch : s->node[m->from].epoch;
    dst->hooks.on_message(dst->hooks.engine, m->from, epoch, m->data, m->len);
    dst->hooks.on_tick(dst->hooks.engine, s->now_us);
    sim_wakes(s);
}

static inline void sim_inject(sim *s, const sim_msg *m) { sim_inject_as(s, m, 0); }

/* ---- operations ---------------------------------------------------------------- */

typedef struct sim_res {
    int done, rc;
    int present;
    uint32_t flags;
    int64_t exptime;
    uint64_t version, token;
    size_t len;
    uint8_t data[4096];
    uint64_t call_us, ret_us;     /* for histories */
} sim_res;

static inline void sim_res_cb(void *arg, const repl_result *res)
{
    sim_res *o = arg;
    o->done = 1;
    o->rc = res->rc;
    o->present = res->val.present;
    o->flags = res->val.flags;
    o->exptime = res->val.exptime;
    o->version = res->val.version;
    o->token = res->token;
    o->len = res->val.len;
    if (res->val.present && res->val.data && res->val.len <= sizeof o->data)
        memcpy(o->data, res->val.data, res->val.len);
}

static const uint8_t *sim_k(const char *s) { return (const uint8_t *)s; }

static inline int sim_wait(sim *s, sim_res *o)
{
    sim_run_until(s, &o->done, 60u * 1000 * 1000);
    REQUIRE(o->done);
    return o->rc;
}

/* Asynchronous starts (the op runs while the simulation does). */
static inline void sim_get_start(sim *s, int node, const char *key, sim_res *o)
{
    memset(o, 0, sizeof *o);
    o->call_us = s->now_us;
    REQUIRE(repl_get(s->node[node].r, sim_k(key), strlen(key), sim_res_cb, o) == CL_OK);
}

static inline void sim_put_start(sim *s, int node, const char *key, const char *val, sim_res *o)
{
    memset(o, 0, sizeof *o);
    o->call_us = s->now_us;
    repl_val v = { .present = val != NULL, .data = (const uint8_t *)val,
                   .len = val ? strlen(val) : 0 };
    REQUIRE(repl_put(s->node[node].r, sim_k(key), strlen(key), &v, sim_res_cb, o) == CL_OK);
}

static inline void sim_rmw_start(sim *s, int node, const char *key, repl_op *op, sim_res *o)
{
    memset(o, 0, sizeof *o);
    o->call_us = s->now_us;
    REQUIRE(repl_rmw(s->node[node].r, sim_k(key), strlen(key), repl_op_fn, op, sim_res_cb, o) ==
            CL_OK);
}

/* Synchronous forms: run the simulation until the op completes. */
static inline int sim_get(sim *s, int node, const char *key, sim_res *o)
{
    sim_get_start(s, node, key, o);
    return sim_wait(s, o);
}

static inline int sim_put(sim *s, int node, const char *key, const char *val, sim_res *o)
{
    sim_put_start(s, node, key, val, o);
    return sim_wait(s, o);
}

static inline int sim_rmw(sim *s, int node, const char *key, repl_op *op, sim_res *o)
{
    sim_rmw_start(s, node, key, op, o);
    return sim_wait(s, o);
}

/* 1 if res holds exactly the string val. */
static inline int sim_holds(const sim_res *o, const char *val)
{
    return o->rc == CL_OK && o->present && o->len == strlen(val) &&
           memcmp(o->data, val, o->len) == 0;
}

/* The local store's raw view of key on a node (version, tombstone). */
static inline int sim_local(sim *s, int node, const char *key, store_meta *m)
{
    store_thread *t;
    REQUIRE(store_thread_create(s->node[node].st, &t) == CL_OK);
    store_get_opts o = { .raw = 1 };
    int rc = store_get(t, sim_k(key), strlen(key), &o, NULL, NULL, m);
    store_thread_destroy(t);
    return rc;
}

static inline repl_stats sim_stats(sim *s, int node)
{
    repl_stats st;
    repl_get_stats(s->node[node].r, &st);
    return st;
}

#endif
