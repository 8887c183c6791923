/*
 * fuzz_mc.c - libFuzzer target for the memcached front door.
 *
 * Each input is one connection: its bytes are fed to a fresh session in
 * chunks whose sizes come from the input itself (the first byte seeds
 * them), the way the event loop would deliver them, over one small store
 * shared by all inputs (4 KiB max_value so the too-large and swallow paths
 * are reached; a 2 MiB arena so the store fills up).  Beyond "no crash, no
 * leak, no sanitizer report", it checks the process() contract: it never
 * consumes more than it was given, *want asks for more than is pending,
 * pending input stays within mc_max_pending, and replies are whole lines.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "frontdoor/mc.h"

static store *fz_store;
static mc_context fz_ctx;
static mc_thread *fz_thr;
static cl_buf fz_in, fz_out;

static void fz_init(void)
{
    store_config cfg = { .memory_bytes = 2u << 20, .max_value = 4096 };
    if (store_create(&cfg, &fz_store) != CL_OK)
        abort();
    fz_ctx.store = fz_store;
    fz_ctx.started = store_now();
    fz_ctx.threads = 1;
    if (mc_thread_create(&fz_ctx, &fz_thr) != CL_OK)
        abort();
    cl_buf_init(&fz_in);
    cl_buf_init(&fz_out);
}

/* Returns 0 once the session asked to close. */
static int fz_feed(mc_session *s, const uint8_t *p, size_t n)
{
    if (cl_buf_append(&fz_in, p, n) != CL_OK)
        abort();
    for (;;) {
        int close = 0;
        size_t want = 0;
        size_t out0 = fz_out.len;
        size_t used = mc_session_process(s, fz_in.data, fz_in.len, &fz_out, &close, &want);
        if (used > fz_in.len)
            abort();
        cl_buf_consume(&fz_in, used);
        if (want && want <= fz_in.len)
            abort();
        if (fz_in.len > mc_max_pending(&fz_ctx))
            abort();
        if (fz_out.len > out0 && (fz_out.len - out0 < 2 || fz_out.data[fz_out.len - 2] != '\r' ||
                                  fz_out.data[fz_out.len - 1] != '\n'))
            abort();
        fz_out.len = 0;
        if (close)
            return 0;
        if (used == 0 || fz_in.len == 0)
            return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fz_store)
        fz_init();
    cl_log_set_level(CL_LOG_ERROR);   /* inputs may say "verbosity 9" */
    if (size == 0)
        return 0;
    uint32_t seed = data[0];
    data++;
    size--;

    mc_session s;
    mc_session_init(&s, fz_thr);
    fz_in.len = 0;
    size_t at = 0;
    while (at < size) {
        /* chunk sizes 1..64 (or the rest, when the seed says so) */
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 16) % 8 == 0 ? size - at : 1 + (seed >> 20) % 64;
        if (n > size - at)
            n = size - at;
        if (!fz_feed(&s, data + at, n))
            break;
        at += n;
    }
    mc_session_fini(&s);
    fz_in.len = 0;
    cl_buf_shrink(&fz_in, 1 << 16);
    cl_buf_shrink(&fz_out, 1 << 16);
    return 0;
}
