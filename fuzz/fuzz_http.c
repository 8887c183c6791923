/*
 * fuzz_http.c - libFuzzer target for the HTTP gateway (parser, router,
 * handlers, response framing) over the fake runtime of
 * tests/unit/frontdoor/test_http_fake.h (invocations complete on the
 * calling thread; deploys run inline).
 *
 * Each input is one connection: its bytes are fed to a fresh session in
 * chunks whose sizes come from the input itself (the first byte seeds
 * them), the way the event loop would deliver them.  Limits are small
 * (4 KiB heads, 16 KiB bodies) so the 413/431 paths are reached.  Beyond
 * "no crash, no leak, no sanitizer report", it checks the process()
 * contract - it never consumes more than it was given, and it leaves
 * input unconsumed only after a full batch of responses - and that
 * everything it wrote is a well-formed stream of HTTP responses (parsed
 * back with http_parser as HTTP_RESPONSE).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "../tests/unit/frontdoor/test_http_fake.h"

static store *fz_store;
static http_context fz_ctx;
static http_thread *fz_thr;
static cl_buf fz_in, fz_out;
static http_parser fz_resp;
static const http_parser_settings fz_resp_settings; /* no callbacks: syntax only */

static void fz_init(void)
{
    store_config cfg = { .memory_bytes = 2u << 20, .max_value = 4096 };
    cl_log_set_level(CL_LOG_ERROR);
    if (store_create(&cfg, &fz_store) != CL_OK || http_context_init(&fz_ctx) != CL_OK)
        abort();
    fz_ctx.ops = &fake_ops;
    fz_ctx.store = fz_store;
    fz_ctx.version = "fuzz";
    fz_ctx.max_header_bytes = 4096;
    fz_ctx.max_body_bytes = 16384;
    fz_ctx.max_module_bytes = 16384;
    if (http_thread_create(&fz_ctx, &fz_thr) != CL_OK)
        abort();
    cl_buf_init(&fz_in);
    cl_buf_init(&fz_out);
}

/* Checks and drops the output produced so far. */
static void fz_check_output(void)
{
    if (fz_out.len == 0)
        return;
    size_t n = http_parser_execute(&fz_resp, &fz_resp_settings, (const char *)fz_out.data,
                                   fz_out.len);
    if (n != fz_out.len || HTTP_PARSER_ERRNO(&fz_resp) != HPE_OK)
        abort(); /* the gateway wrote something that is not HTTP */
    fz_out.len = 0;
}

/* Returns 0 once the session asked to close. */
static int fz_feed(http_session *s, const uint8_t *p, size_t n)
{
    if (cl_buf_append(&fz_in, p, n) != CL_OK)
        abort();
    for (;;) {
        int close = 0;
        size_t out0 = fz_out.len;
        size_t used = http_session_process(s, fz_in.data, fz_in.len, &fz_out, &close);
        if (used > fz_in.len)
            abort();
        if (!close && used < fz_in.len && fz_out.len - out0 < HTTP_OUT_BATCH)
            abort(); /* held input back without a reason */
        cl_buf_consume(&fz_in, used);
        fz_check_output();
        if (close)
            return 0;
        if (used == 0 || fz_in.len == 0)
            return 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    if (!inited) {
        fz_init();
        inited = 1;
    }
    fake_reset();
    http_parser_init(&fz_resp, HTTP_RESPONSE);
    http_session *s;
    if (http_session_create(fz_thr, NULL, &s) != CL_OK)
        abort();
    fz_in.len = fz_out.len = 0;

    uint32_t seed = size ? data[0] : 0;
    size_t i = size ? 1 : 0;
    while (i < size) {
        seed = seed * 1103515245u + 12345u;
        size_t chunk = 1 + (seed >> 16) % 512;
        if (chunk > size - i)
            chunk = size - i;
        if (!fz_feed(s, data + i, chunk))
            break;
        i += chunk;
    }
    http_session_destroy(s);
    /* Keep the buffers from growing across inputs without bound. */
    cl_buf_shrink(&fz_in, 64 * 1024);
    cl_buf_shrink(&fz_out, 64 * 1024);
    return 0;
}
