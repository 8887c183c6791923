/*
 * test_mc_fixture.h - a memcached front-door session over a small real
 * store, driven without sockets, for the test_mc*.c unit tests.
 *
 * mcf_feed() behaves like the event loop: it appends bytes to the pending
 * input, calls mc_session_process until it stops making progress, and
 * drops what was consumed.
 * MCF_EXPECT(f, input, reply) feeds the input and checks that the replies
 * produced (since the last check) are exactly `reply`, printing both
 * escaped when they differ.
 */
#ifndef TEST_MC_FIXTURE_H
#define TEST_MC_FIXTURE_H

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../harness.h"
#include "common/err.h"
#include "frontdoor/mc.h"

#define MCF_MAX_VALUE (64u * 1024)

typedef struct mcf {
    store *st;
    mc_context ctx;
    mc_thread *thr;
    mc_session sess;
    cl_buf in, out;
    int closed;
    size_t want;
} mcf;

static void mcf_open_cfg(mcf *f, size_t max_value, const char *arena_file)
{
    memset(f, 0, sizeof *f);
    store_config cfg = {
        .memory_bytes = 8u << 20,
        .max_value = max_value,
        .arena_file = arena_file,
    };
    int rc = store_create(&cfg, &f->st);  /* REQUIRE evaluates twice */
    REQUIRE(rc == CL_OK);
    f->ctx.store = f->st;
    f->ctx.version = "9.9.9-test";
    f->ctx.started = store_now() - 5;
    f->ctx.threads = 1;
    f->ctx.arena_file = arena_file;
    rc = mc_thread_create(&f->ctx, &f->thr);
    REQUIRE(rc == CL_OK);
    mc_session_init(&f->sess, f->thr);
    cl_buf_init(&f->in);
    cl_buf_init(&f->out);
}

static void mcf_open(mcf *f) { mcf_open_cfg(f, MCF_MAX_VALUE, NULL); }

static void mcf_close(mcf *f)
{
    mc_session_fini(&f->sess);
    mc_thread_destroy(f->thr);
    store_destroy(f->st);
    cl_buf_fini(&f->in, 0);
    cl_buf_fini(&f->out, 0);
}

/* A new connection on the same store. */
static inline void mcf_reconnect(mcf *f)
{
    mc_session_fini(&f->sess);
    mc_session_init(&f->sess, f->thr);
    f->in.len = 0;
    f->closed = 0;
    f->want = 0;
}

static void mcf_feed(mcf *f, const void *p, size_t n)
{
    if (f->closed)
        return;
    int rc = cl_buf_append(&f->in, p, n);
    REQUIRE(rc == CL_OK);
    /* like net/server.c: call again while it makes progress (it returns
     * early after MC_OUT_BATCH bytes of replies) */
    for (;;) {
        int close = 0;
        size_t want = 0;
        size_t used = mc_session_process(&f->sess, f->in.data, f->in.len, &f->out, &close, &want);
        REQUIRE(used <= f->in.len);
        cl_buf_consume(&f->in, used);
        f->want = want;
        if (want)
            CHECK(want > f->in.len);   /* asks for more than it has */
        if (close) {
            f->closed = 1;
            return;
        }
        if (used == 0 || f->in.len == 0)
            return;
    }
}

static inline void mcf_feed_str(mcf *f, const char *s) { mcf_feed(f, s, strlen(s)); }

static void mcf_print_escaped(const char *label, const uint8_t *p, size_t n)
{
    fprintf(stderr, "     %s (%zu): \"", label, n);
    for (size_t i = 0; i < n && i < 600; i++) {
        if (p[i] == '\r')
            fputs("\\r", stderr);
        else if (p[i] == '\n')
            fputs("\\n", stderr);
        else if (isprint(p[i]))
            fputc(p[i], stderr);
        else
            fprintf(stderr, "\\x%02x", p[i]);
    }
    fputs(n > 600 ? "...\"\n" : "\"\n", stderr);
}

/* Checks the replies so far equal want[0, wn) and clears them. */
static int mcf_check(mcf *f, const char *want, size_t wn, const char *file, int line)
{
    int ok = f->out.len == wn && (wn == 0 || memcmp(f->out.data, want, wn) == 0);
    th_check(ok, file, line, "reply matches");
    if (!ok) {
        mcf_print_escaped("got ", f->out.data, f->out.len);
        mcf_print_escaped("want", (const uint8_t *)want, wn);
    }
    f->out.len = 0;
    return ok;
}

#define MCF_EXPECT(f, input, reply)                                            \
    do {                                                                       \
        mcf_feed((f), (input), strlen(input));                                 \
        mcf_check((f), (reply), strlen(reply), __FILE__, __LINE__);            \
    } while (0)

/* The replies so far as a NUL-terminated copy (caller frees); clears them. */
static char *mcf_take(mcf *f)
{
    char *s = malloc(f->out.len + 1);
    REQUIRE(s != NULL);
    memcpy(s, f->out.data, f->out.len);
    s[f->out.len] = 0;
    f->out.len = 0;
    return s;
}

#endif
