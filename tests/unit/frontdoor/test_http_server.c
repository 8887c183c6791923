/*
 * test_http_server.c - the HTTP gateway end to end: http_net_proto served
 * by the real event loop (net/server.c) over loopback sockets, plaintext
 * and TLS, with the fake runtime of test_http_fake.h completing
 * invocations on its own executor threads (so an invocation suspends its
 * connection and is resumed from another thread), or, in one case, on the
 * calling thread as the runtime's inline runs do.
 *
 * Cases: keep-alive, an invocation answered asynchronously with pipelined
 * requests behind it (order kept), invocations completed before
 * rt_invoke returns among pipelined and suspended ones, a hundred
 * concurrent slow invocations, a client that resets the connection
 * during an invocation and during a
 * deploy (no crash, no leak; the server goes on), deploy progress
 * streamed while the deploy runs, 413 for an announced oversized body
 * before any of it is sent, the concurrent-deploy limit (503), and
 * http_context_fini waiting for a deploy whose client has gone.
 * Responses are compared byte for byte (Date replaced by "X").
 */
#include "../net/nettest.h"
#include "test_http_fake.h"

static test_pki g_pki;
static SSL_CTX *g_sctx, *g_cctx; /* NULL: plaintext run */

typedef struct gw {
    http_context ctx;
    net_server *srv;
    int port;
} gw;

static void gw_start(gw *g, int threads)
{
    memset(g, 0, sizeof *g);
    MUST(http_context_init(&g->ctx) == CL_OK);
    g->ctx.ops = &fake_ops;
    g->ctx.version = "9.9.9-test";
    fake_reset();
    g->srv = server_start(&http_net_proto, &g->ctx, g_sctx, threads, &g->port);
}

static void gw_stop(gw *g)
{
    net_server_destroy(g->srv);
    http_context_fini(&g->ctx);
    fake_drain();
}

/* ---- an HTTP client over tconn ------------------------------------------------ */

/* Reads one response (head, then a Content-Length or chunked body) and
 * returns it raw, with the Date value replaced by "X"; NULL on error or
 * timeout.  Responses to 1xx are returned alone. */
static char *http_read(tconn *c)
{
    cl_buf r;
    cl_buf_init(&r);
    char line[8192];
    long clen = -1;
    int chunked = 0;
    for (int first = 1;; first = 0) {
        ssize_t n = tc_read_line(c, line, sizeof line);
        if (n < 0)
            goto fail;
        if (strncasecmp(line, "Date: ", 6) == 0)
            strcpy(line, "Date: X\r\n");
        if (strncasecmp(line, "Content-Length: ", 16) == 0)
            clen = atol(line + 16);
        if (strcasecmp(line, "Transfer-Encoding: chunked\r\n") == 0)
            chunked = 1;
        MUST(cl_buf_append(&r, line, strlen(line)) == CL_OK);
        if (first && strncmp(line, "HTTP/1.1 1", 10) == 0)
            clen = 0;
        if (strcmp(line, "\r\n") == 0)
            break;
    }
    if (chunked) {
        for (;;) {
            if (tc_read_line(c, line, sizeof line) < 0)
                goto fail;
            MUST(cl_buf_append(&r, line, strlen(line)) == CL_OK);
            size_t n = strtoul(line, NULL, 16);
            uint8_t *p = cl_buf_extend(&r, n + 2);
            MUST(p != NULL);
            if (tc_read_exact(c, p, n + 2) < 0)
                goto fail;
            if (n == 0)
                break;
        }
    } else if (clen > 0) {
        uint8_t *p = cl_buf_extend(&r, (size_t)clen);
        MUST(p != NULL);
        if (tc_read_exact(c, p, (size_t)clen) < 0)
            goto fail;
    }
    MUST(cl_buf_append(&r, "", 1) == CL_OK);
    return (char *)r.data;
fail:
    cl_buf_fini(&r, 0);
    return NULL;
}

static int expect_at(tconn *c, const char *want, const char *file, int line)
{
    char *got = http_read(c);
    int ok = got && strcmp(got, want) == 0;
    th_check(ok, file, line, "response == expected");
    if (!ok)
        fprintf(stderr, "     got:\n%s\n     want:\n%s\n", got ? got : "(nothing)", want);
    free(got);
    return ok ? 0 : -1;
}
#define EXPECT(c, want) expect_at((c), (want), __FILE__, __LINE__)

#define OK200 "HTTP/1.1 200 OK\r\nDate: X\r\n"
#define TEXT "Content-Type: text/plain; charset=utf-8\r\n"
#define BIN "Content-Type: application/octet-stream\r\n"

/* ---- cases ------------------------------------------------------------------------ */

static void test_keepalive_and_async_order(void)
{
    gw g;
    gw_start(&g, 2);
    fake.slow_ms = 100;
    tconn *c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
    EXPECT(c, OK200 TEXT "Content-Length: 3\r\n\r\nok\n");

    /* The slow invocation is answered first although the requests behind
     * it were ready long before. */
    double t0 = now_sec();
    MUST(tc_puts(c, "POST /function/slow HTTP/1.1\r\nContent-Length: 5\r\n\r\nfirst"
                    "POST /function/echo HTTP/1.1\r\nContent-Length: 6\r\n\r\nsecond"
                    "POST /function/trap HTTP/1.1\r\n\r\n"
                    "GET /healthz HTTP/1.1\r\n\r\n") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 5\r\n\r\nfirst");
    CHECK(now_sec() - t0 >= 0.095);
    EXPECT(c, OK200 BIN "Content-Length: 6\r\n\r\nsecond");
    EXPECT(c, "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" TEXT
              "Content-Length: 34\r\n\r\ntrap: out of bounds memory access\n");
    EXPECT(c, OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    /* A large output through the suspended path. */
    MUST(tc_puts(c, "POST /function/big HTTP/1.1\r\n\r\n") == 0);
    char *got = http_read(c);
    static const char head[] = OK200 BIN "Content-Length: 1048576\r\n\r\nabc";
    CHECK(got && strncmp(got, head, sizeof head - 1) == 0);
    CHECK(got && strlen(got) == sizeof head - 4 + FAKE_BIG_OUTPUT);
    free(got);
    tc_close(c);
    gw_stop(&g);
}

/* Invocations that complete before rt_invoke returns (the runtime runs
 * short functions inline on the network worker): answered within the same
 * process() call, in order with the pipelined requests around them, also
 * right after the connection was suspended and resumed, and before it is
 * suspended again. */
static void test_inline_completions(void)
{
    gw g;
    gw_start(&g, 2);
    fake.slow_ms = 50;
    tconn *c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "POST /function/slow HTTP/1.1\r\nContent-Length: 5\r\n\r\nfirst") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 5\r\n\r\nfirst");
    fake_drain();

    __atomic_store_n(&fake.async, 0, __ATOMIC_SEQ_CST);  /* done on the calling thread */
    MUST(tc_puts(c, "POST /function/echo HTTP/1.1\r\nContent-Length: 3\r\n\r\none"
                    "POST /function/trap HTTP/1.1\r\n\r\n"
                    "POST /function/echo HTTP/1.1\r\nContent-Length: 3\r\n\r\ntwo"
                    "POST /function/big HTTP/1.1\r\n\r\n"
                    "POST /function/echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nthree") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 3\r\n\r\none");
    EXPECT(c, "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" TEXT
              "Content-Length: 34\r\n\r\ntrap: out of bounds memory access\n");
    EXPECT(c, OK200 BIN "Content-Length: 3\r\n\r\ntwo");
    char *got = http_read(c);
    static const char head[] = OK200 BIN "Content-Length: 1048576\r\n\r\nabc";
    CHECK(got && strncmp(got, head, sizeof head - 1) == 0);
    CHECK(got && strlen(got) == sizeof head - 4 + FAKE_BIG_OUTPUT);
    free(got);
    EXPECT(c, OK200 BIN "Content-Length: 5\r\n\r\nthree");

    /* An inline answer, then a suspended one behind it in the same batch. */
    MUST(tc_puts(c, "POST /function/echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nfour") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 4\r\n\r\nfour");
    __atomic_store_n(&fake.async, 1, __ATOMIC_SEQ_CST);
    MUST(tc_puts(c, "POST /function/slow HTTP/1.1\r\nContent-Length: 4\r\n\r\nlast"
                    "GET /healthz HTTP/1.1\r\n\r\n") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 4\r\n\r\nlast");
    EXPECT(c, OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    tc_close(c);
    gw_stop(&g);
}

static void test_concurrent_invocations(void)
{
    enum { N = 100 };
    gw g;
    gw_start(&g, 2);
    fake.slow_ms = 200;
    static tconn *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = tc_connect(g.port, g_cctx);
        MUST(c[i] != NULL);
    }
    double t0 = now_sec();
    for (int i = 0; i < N; i++) {
        char req[128];
        snprintf(req, sizeof req, "POST /function/slow HTTP/1.1\r\nContent-Length: 4\r\n\r\n%04d", i);
        MUST(tc_puts(c[i], req) == 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        char want[128];
        snprintf(want, sizeof want, OK200 BIN "Content-Length: 4\r\n\r\n%04d", i);
        char *got = http_read(c[i]);
        ok += got && strcmp(got, want) == 0;
        free(got);
    }
    double t = now_sec() - t0;
    CHECK_EQ(ok, N);
    printf("     %d concurrent 200 ms invocations in %.2f s\n", N, t);
    CHECK(t < 200 * 0.2 / 2); /* far less than serial */
    for (int i = 0; i < N; i++)
        tc_close(c[i]);
    gw_stop(&g);
}

static void rst_close(tconn *c)
{
    struct linger lg = { 1, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tc_close(c);
}

static void test_client_vanishes(void)
{
    gw g;
    gw_start(&g, 1);
    fake.slow_ms = 300;
    fake.deploy_step_ms = 60;
    tconn *c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "POST /function/slow HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc") == 0);
    sleep_ms(50);
    rst_close(c);
    tconn *d = tc_connect(g.port, g_cctx);
    MUST(d != NULL);
    static const char deploy[] = "POST /system/functions?name=gone&progress=1 HTTP/1.1\r\n"
                                 "Content-Length: 6\r\n\r\n\0asmXY";
    MUST(tc_write(d, deploy, sizeof deploy - 1) == 0);
    sleep_ms(80);
    rst_close(d);
    CHECK_EQ(wait_curr_connections(g.srv, 0, 2), 0);

    /* The node goes on; the abandoned work completes into nothing. */
    c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "GET /healthz HTTP/1.1\r\n\r\n") == 0);
    EXPECT(c, OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    fake_drain();
    /* The deploy finished although nobody listened. */
    MUST(tc_puts(c, "GET /system/function/gone HTTP/1.1\r\n\r\n") == 0);
    char *got = NULL;
    for (int i = 0; i < 100; i++) {
        free(got);
        got = http_read(c);
        if (!got || strncmp(got, "HTTP/1.1 200", 12) == 0)
            break;
        sleep_ms(20);
        MUST(tc_puts(c, "GET /system/function/gone HTTP/1.1\r\n\r\n") == 0);
    }
    CHECK(got && strncmp(got, "HTTP/1.1 200", 12) == 0);
    free(got);
    tc_close(c);
    gw_stop(&g);
}

static void test_deploy_progress_streams(void)
{
    gw g;
    gw_start(&g, 1);
    fake.deploy_step_ms = 40;
    tconn *c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    static const char req[] = "POST /system/functions?name=p&progress=1 HTTP/1.1\r\n"
                              "Content-Length: 6\r\n\r\n\0asmXY";
    double t0 = now_sec();
    MUST(tc_write(c, req, sizeof req - 1) == 0);
    char line[256];
    /* The head and the first line arrive while the deploy still runs. */
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "HTTP/1.1 200 OK\r\n") == 0);
    do
        MUST(tc_read_line(c, line, sizeof line) > 0);
    while (strcmp(line, "\r\n") != 0);
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "b\r\n") == 0);
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "validate 0\n") == 0);
    CHECK(now_sec() - t0 < 0.15); /* the whole deploy takes 6 x 40 ms */
    const char *rest[] = { "\r\n", "d\r\n", "validate 100\n", "\r\n", "a\r\n", "compile 0\n",
                           "\r\n", "b\r\n", "compile 50\n", "\r\n", "c\r\n", "compile 100\n",
                           "\r\n", "9\r\n", "load 100\n", "\r\n" };
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) {
        MUST(tc_read_line(c, line, sizeof line) > 0);
        CHECK(strcmp(line, rest[i]) == 0);
    }
    MUST(tc_read_line(c, line, sizeof line) > 0); /* the result's chunk size */
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strstr(line, "\"status\":201") != NULL && strstr(line, "\"name\":\"p\"") != NULL);
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "\r\n") == 0);
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "0\r\n") == 0);
    MUST(tc_read_line(c, line, sizeof line) > 0);
    CHECK(strcmp(line, "\r\n") == 0);
    CHECK(now_sec() - t0 >= 0.2);

    /* The connection goes on. */
    MUST(tc_puts(c, "POST /function/p HTTP/1.1\r\nContent-Length: 2\r\n\r\nok") == 0);
    EXPECT(c, OK200 BIN "Content-Length: 2\r\n\r\nok");
    tc_close(c);
    gw_stop(&g);
}

static void test_limits_and_deploy_slots(void)
{
    gw g;
    gw_start(&g, 2);
    g.ctx.max_deploys = 1;
    fake.deploy_step_ms = 50;
    /* Announced too large: answered before the body is sent. */
    tconn *c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "POST /function/echo HTTP/1.1\r\nContent-Length: 100000000\r\n\r\n") == 0);
    EXPECT(c, "HTTP/1.1 413 Payload Too Large\r\nDate: X\r\n" TEXT
              "Content-Length: 23\r\nConnection: close\r\n\r\nrequest body too large\n");
    CHECK(tc_closed_by_peer(c));
    tc_close(c);

    /* One deploy at a time: the second is refused while the first runs. */
    tconn *a = tc_connect(g.port, g_cctx), *b = tc_connect(g.port, g_cctx);
    MUST(a && b);
    static const char req[] = "POST /system/functions?name=one HTTP/1.1\r\n"
                              "Content-Length: 6\r\n\r\n\0asmXY";
    MUST(tc_write(a, req, sizeof req - 1) == 0);
    sleep_ms(60);
    MUST(tc_write(b, req, sizeof req - 1) == 0);
    EXPECT(b, "HTTP/1.1 503 Service Unavailable\r\nDate: X\r\nContent-Type: application/json\r\n"
              "Retry-After: 1\r\nContent-Length: 56\r\n\r\n"
              "{\"error\":\"too many deploys in progress (1); try again\"}\n");
    char *got = http_read(a);
    CHECK(got && strncmp(got, "HTTP/1.1 201 Created\r\n", 22) == 0);
    free(got);
    MUST(tc_write(b, req, sizeof req - 1) == 0);
    got = http_read(b);
    CHECK(got && strncmp(got, "HTTP/1.1 201 Created\r\n", 22) == 0 && strstr(got, "\"cached\":true"));
    free(got);
    tc_close(a);
    tc_close(b);

    /* A deploy whose client left holds the context until it ends.  Its
     * steps are long enough that it is still running after the server is
     * destroyed, however loaded the machine. */
    fake.deploy_step_ms = 400;
    c = tc_connect(g.port, g_cctx);
    MUST(c != NULL);
    MUST(tc_write(c, req, sizeof req - 1) == 0);
    sleep_ms(30);
    rst_close(c);
    CHECK_EQ(wait_curr_connections(g.srv, 0, 2), 0);
    net_server_destroy(g.srv);
    double t0 = now_sec();
    pthread_mutex_lock(&g.ctx.mu);
    int running = g.ctx.deploys_running;
    pthread_mutex_unlock(&g.ctx.mu);
    CHECK_EQ(running, 1);
    http_context_fini(&g.ctx);
    CHECK(now_sec() - t0 > 0.1);
    fake_drain();
}

static void run_all(const char *mode)
{
    printf("-- %s\n", mode);
    RUN(test_keepalive_and_async_order);
    RUN(test_inline_completions);
    RUN(test_concurrent_invocations);
    RUN(test_client_vanishes);
    RUN(test_deploy_progress_streams);
    RUN(test_limits_and_deploy_slots);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    fake_start_async();
    run_all("plaintext");

    pki_create(&g_pki);
    g_sctx = pki_server_ctx(&g_pki, 0);
    g_cctx = pki_client_ctx(&g_pki, NULL, 0);
    run_all("TLS");
    SSL_CTX_free(g_sctx);
    SSL_CTX_free(g_cctx);
    pki_destroy(&g_pki);
    fake_stop_async();
    return th_done();
}
