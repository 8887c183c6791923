/*
 * fuzz_repl.c - libFuzzer target for the replication engine's message
 * handling: wire decoding (src/repl/wire.c) and everything a peer's
 * message can reach (replica rules, replies, pushes, anti-entropy,
 * recovery copies).
 *
 * One engine (node 1 of 3, an eventual namespace "ev:") over a small
 * store lives for the whole run, behind a transport that drops what it
 * sends.  Each input is one message: the first byte picks the sender
 * (node 2 or 3), the rest is the payload; then the engine ticks.  Every
 * 64 inputs an operation is submitted, so replies can meet live rounds.
 * Beyond "no crash, no leak, no sanitizer report" nothing is checked:
 * the transport authenticates peers, so a message may legitimately
 * change the replica's state.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "repl/repl.h"
#include "store/store.h"

static store *fz_store;
static repl *fz_repl;
static repl_engine_hooks fz_hooks;
static uint64_t fz_now;
static unsigned fz_count;

static int fz_send(void *ctx, int to, const uint8_t *msg, size_t len)
{
    (void)ctx;
    (void)to;
    (void)msg;
    return len > REPL_MAX_MSG ? CL_ETOOBIG : CL_OK;
}

static void fz_flush(void *ctx) { (void)ctx; }
static void fz_wake(void *ctx) { (void)ctx; }
static uint64_t fz_clock(void *ctx)
{
    (void)ctx;
    return fz_now;
}

static void fz_done(void *arg, const repl_result *res)
{
    (void)arg;
    (void)res;
}

static void fz_init(void)
{
    static const repl_namespace ns[] = { { "ev:", REPL_EVENTUAL } };
    store_config sc = { .memory_bytes = 2u << 20, .max_value = 4096 };
    if (store_create(&sc, &fz_store) != CL_OK)
        abort();
    repl_config c = { .self = 1, .n = 3, .epoch = 1, .st = fz_store, .ns = ns, .n_ns = 1,
                      .seed = 1 };
    if (repl_create(&c, &fz_repl) != CL_OK)
        abort();
    repl_transport tr = { NULL, fz_send, fz_flush, fz_wake, fz_clock };
    repl_attach(fz_repl, &tr);
    fz_hooks = repl_hooks(fz_repl);
    fz_hooks.on_peer(fz_hooks.engine, 2, 1);
    fz_hooks.on_peer(fz_hooks.engine, 3, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_repl)
        fz_init();
    if (size < 1)
        return 0;
    int from = 2 + (data[0] & 1);
    if (++fz_count % 64 == 0) { /* something in flight for replies to meet */
        static const repl_val v = { .present = 1, .data = (const uint8_t *)"v", .len = 1 };
        (void)repl_put(fz_repl, (const uint8_t *)"k", 1, &v, fz_done, NULL);
        (void)repl_get(fz_repl, (const uint8_t *)"ev:k", 4, fz_done, NULL);
        fz_hooks.on_wake(fz_hooks.engine);
    }
    fz_hooks.on_message(fz_hooks.engine, from, 1, data + 1, size - 1);
    fz_now += 1000;
    fz_hooks.on_tick(fz_hooks.engine, fz_now);
    return 0;
}
