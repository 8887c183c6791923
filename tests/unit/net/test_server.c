/*
 * test_server.c - the event loop (net/server.c) driven through the echo
 * protocol of nettest.h, first over plaintext, then the same cases over
 * TLS 1.3: request/response, pipelining, requests split into tiny writes,
 * a 1 MiB request, many concurrent clients, thousands of idle clients,
 * clients that vanish mid-request, end of stream, quit, backpressure,
 * max_pending, the even spread of connections over the workers (also after
 * closes and reopens), stopping with clients connected, and bind errors.
 * TLS-only behaviour (versions, client certificates, bad files) is in
 * test_tls.c.
 */
#include "nettest.h"

#include <malloc.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static test_pki pki;
static SSL_CTX *g_sctx;     /* server TLS context; NULL in the plaintext pass */
static SSL_CTX *g_cctx;     /* client TLS context; NULL in the plaintext pass */
static net_server *g_srv;   /* the shared server of the current pass */
static int g_port;
static atomic_int bg_failures; /* failed checks in helper threads */

#define BG_CHECK(cond)                                                        \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "FAIL (thread) %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            atomic_fetch_add(&bg_failures, 1);                                \
        }                                                                     \
    } while (0)

static net_stats stats(net_server *s)
{
    net_stats st;
    net_server_get_stats(s, &st);
    return st;
}

/* The buffer gauge settles right after the server's last write. */
static uint64_t wait_buffer_bytes_at_most(net_server *s, uint64_t max, double seconds)
{
    double end = now_sec() + seconds;
    uint64_t b;
    while ((b = stats(s).buffer_bytes) > max && now_sec() < end)
        sleep_ms(2);
    return b;
}

/* ---- cases --------------------------------------------------------------- */

static void test_request_response(void)
{
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    char line[64];
    for (int i = 0; i < 200; i++) {
        snprintf(line, sizeof line, "hello %d\n", i);
        CHECK(tc_echo(c, line) == 0);
    }
    CHECK(tc_echo(c, "\n") == 0); /* an empty line is a request too */
    tc_close(c);
}

static void test_pipelined(void)
{
    enum { N = 3000 };
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    cl_buf b;
    cl_buf_init(&b);
    for (int i = 0; i < N; i++)
        MUST(cl_buf_printf(&b, "pipelined request %d\n", i) == CL_OK);
    MUST(cl_buf_printf(&b, "BIG 5\nabcdeafter big\n") == CL_OK);
    CHECK(tc_write(c, b.data, b.len) == 0);
    char want[64], got[64];
    int in_order = 1;
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "pipelined request %d\n", i);
        if (tc_read_line(c, got, sizeof got) < 0 || strcmp(got, want) != 0) {
            in_order = 0;
            break;
        }
    }
    CHECK(in_order);
    snprintf(want, sizeof want, "BIG 5 %08x\n", fnv1a((const uint8_t *)"abcde", 5));
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, want) == 0);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "after big\n") == 0);
    cl_buf_fini(&b, 0);
    tc_close(c);
}

static void test_split_writes(void)
{
    enum { SIZE = 3000 };
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    uint8_t msg[64 + SIZE];
    size_t n = (size_t)snprintf((char *)msg, sizeof msg, "BIG %d\n", SIZE);
    for (int i = 0; i < SIZE; i++)
        msg[n + (size_t)i] = (uint8_t)('a' + i % 26);
    uint32_t h = fnv1a(msg + n, SIZE);
    n += SIZE;
    memcpy(msg + n, "split line\n", 11);
    n += 11;
    int ok = 1;
    for (size_t i = 0; i < n && ok; i++)
        ok = tc_write(c, msg + i, 1) == 0;
    CHECK(ok);
    char want[64], got[64];
    snprintf(want, sizeof want, "BIG %d %08x\n", SIZE, h);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, want) == 0);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "split line\n") == 0);
    tc_close(c);
}

static void big_request(tconn *c, size_t size, size_t chunk)
{
    uint8_t *msg = malloc(size + 64);
    size_t n = (size_t)snprintf((char *)msg, 64, "BIG %zu\n", size);
    for (size_t i = 0; i < size; i++)
        msg[n + i] = (uint8_t)(i * 7 + (i >> 10));
    uint32_t h = fnv1a(msg + n, size);
    n += size;
    int ok = 1;
    for (size_t off = 0; off < n && ok; off += chunk)
        ok = tc_write(c, msg + off, n - off < chunk ? n - off : chunk) == 0;
    CHECK(ok);
    char want[64], got[64];
    snprintf(want, sizeof want, "BIG %zu %08x\n", size, h);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, want) == 0);
    free(msg);
}

static void test_big_request(void)
{
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    big_request(c, 1u << 20, 1u << 21); /* one write */
    big_request(c, 1u << 20, 1000);     /* many small writes */
    big_request(c, 3u << 20, 65536);    /* under max_pending (4 MiB) */
    CHECK(tc_echo(c, "still in sync\n") == 0);
    /* The connection is idle again: its megabyte buffers are gone. */
    CHECK(wait_buffer_bytes_at_most(g_srv, 0, 2.0) == 0);
    tc_close(c);
}

typedef struct many_arg {
    int id, conns, rounds;
} many_arg;

static void *many_thread(void *p)
{
    many_arg *a = p;
    tconn **c = calloc((size_t)a->conns, sizeof *c);
    for (int i = 0; i < a->conns; i++) {
        c[i] = tc_connect(g_port, g_cctx);
        BG_CHECK(c[i] != NULL);
        if (!c[i])
            goto out;
    }
    for (int r = 0; r < a->rounds; r++) {
        char line[64], got[64];
        for (int i = 0; i < a->conns; i++) {
            snprintf(line, sizeof line, "t%d c%d r%d\n", a->id, i, r);
            BG_CHECK(tc_puts(c[i], line) == 0);
        }
        for (int i = 0; i < a->conns; i++) {
            snprintf(line, sizeof line, "t%d c%d r%d\n", a->id, i, r);
            BG_CHECK(tc_read_line(c[i], got, sizeof got) > 0 && strcmp(got, line) == 0);
        }
    }
out:
    for (int i = 0; i < a->conns; i++)
        tc_close(c[i]);
    free(c);
    return NULL;
}

static void test_many_connections(void)
{
    enum { THREADS = 4 };
    pthread_t t[THREADS];
    many_arg a[THREADS];
    uint64_t total0 = stats(g_srv).total_connections;
    int f0 = atomic_load(&bg_failures);
    for (int i = 0; i < THREADS; i++) {
        a[i] = (many_arg){ .id = i, .conns = g_sctx ? 25 : 50, .rounds = 20 };
        MUST(pthread_create(&t[i], NULL, many_thread, &a[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(atomic_load(&bg_failures) - f0, 0);
    CHECK_EQ(stats(g_srv).total_connections - total0, THREADS * a[0].conns);
    CHECK_EQ(wait_curr_connections(g_srv, 0, 5.0), 0);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, 0, 5.0), 0);
}

static void test_idle_connections(void)
{
    int n = g_sctx ? 400 : 2000;
    tconn **idle = calloc((size_t)n, sizeof *idle);
    struct mallinfo2 m0 = mallinfo2();
    for (int i = 0; i < n; i++) {
        idle[i] = tc_connect(g_port, g_cctx);
        MUST(idle[i] != NULL);
    }
    CHECK_EQ(wait_curr_connections(g_srv, (uint64_t)n, 10.0), n);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, n, 5.0), n);
    /* Half of them made one request and went idle again. */
    for (int i = 0; i < n; i += 2)
        CHECK(tc_echo(idle[i], "one request, then idle\n") == 0);

    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    double t0 = now_sec();
    for (int i = 0; i < 200; i++)
        CHECK(tc_echo(c, "served among idle clients\n") == 0);
    double dt = now_sec() - t0;
    CHECK(dt < 5.0);
    /* Idle connections hold no buffers at all. */
    CHECK_EQ(wait_buffer_bytes_at_most(g_srv, 0, 2.0), 0);
#ifndef UNDER_ASAN
    if (!g_sctx) {
        /* Heap per plaintext idle connection, server side (the client's
         * tconn structs are subtracted): net_conn + session, no buffers. */
        struct mallinfo2 m1 = mallinfo2();
        long per = ((long)m1.uordblks - (long)m0.uordblks - (long)(n * sizeof(tconn))) / n;
        printf("     heap per idle plaintext connection: %ld bytes\n", per);
        CHECK(per < 1024);
    }
#else
    (void)m0;
#endif
    printf("     %d idle %s connections; 200 round trips beside them in %.3fs\n", n,
           g_sctx ? "TLS" : "plaintext", dt);
    tc_close(c);
    for (int i = 0; i < n; i++)
        tc_close(idle[i]);
    free(idle);
    CHECK_EQ(wait_curr_connections(g_srv, 0, 10.0), 0);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, 0, 5.0), 0);
}

static void test_client_vanishes(void)
{
    static uint8_t junk[100000];
    memset(junk, 'j', sizeof junk);
    for (int mode = 0; mode < 4; mode++) {
        tconn *c = tc_connect(g_port, g_cctx);
        MUST(c != NULL);
        switch (mode) {
        case 0: /* in the middle of a big value */
            CHECK(tc_puts(c, "BIG 500000\n") == 0);
            CHECK(tc_write(c, junk, sizeof junk) == 0);
            break;
        case 1: /* in the middle of a line */
            CHECK(tc_puts(c, "no newline yet") == 0);
            break;
        case 2: { /* with a reset instead of a FIN */
            CHECK(tc_puts(c, "BIG 500000\n") == 0);
            CHECK(tc_write(c, junk, 5000) == 0);
            struct linger lg = { 1, 0 };
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            break;
        }
        case 3: /* with replies it never reads */
            for (int i = 0; i < 20; i++)
                CHECK(tc_write(c, junk, sizeof junk) == 0 && tc_puts(c, "\n") == 0);
            break;
        }
        sleep_ms(20); /* let the server take the bytes in */
        tc_close(c);
    }
    CHECK_EQ(wait_curr_connections(g_srv, 0, 5.0), 0);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, 0, 5.0), 0);
    CHECK_EQ(wait_buffer_bytes_at_most(g_srv, 0, 2.0), 0);
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    CHECK(tc_echo(c, "others are unaffected\n") == 0);
    tc_close(c);
}

static void test_end_of_stream_answered(void)
{
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    CHECK(tc_puts(c, "first\nsecond\nincompl") == 0);
    if (c->ssl)
        CHECK(SSL_shutdown(c->ssl) >= 0); /* close_notify: TLS's half-close */
    else
        CHECK(shutdown(c->fd, SHUT_WR) == 0);
    char got[64];
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "first\n") == 0);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "second\n") == 0);
    CHECK(tc_closed_by_peer(c));
    tc_close(c);
}

static void test_quit(void)
{
    tconn *c = tc_connect(g_port, g_cctx);
    MUST(c != NULL);
    CHECK(tc_puts(c, "before\nQUIT\nafter\n") == 0);
    char got[64];
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "before\n") == 0);
    CHECK(tc_read_line(c, got, sizeof got) > 0 && strcmp(got, "BYE\n") == 0);
    CHECK(tc_closed_by_peer(c)); /* "after" is never answered */
    tc_close(c);
}

/* ---- backpressure ---------------------------------------------------------- */

enum { BP_LINE = 1024, BP_LINES = 40000 }; /* ~40 MiB each way */

typedef struct bp_sender {
    tconn *c;
    atomic_long sent;  /* lines written */
    int failed;
} bp_sender;

static void bp_line(char *buf, long i)
{
    memset(buf, 'p', BP_LINE);
    snprintf(buf, 16, "%010ld", i);
    buf[10] = ':';
    buf[BP_LINE - 1] = '\n';
}

static void *bp_send(void *p)
{
    bp_sender *s = p;
    char line[BP_LINE * 16];
    for (long i = 0; i < BP_LINES; i += 16) {
        for (int k = 0; k < 16; k++)
            bp_line(line + k * BP_LINE, i + k);
        if (tc_write(s->c, line, sizeof line) != 0) {
            s->failed = 1;
            return NULL;
        }
        atomic_store(&s->sent, i + 16);
    }
    return NULL;
}

static void test_backpressure(void)
{
    bp_sender s = { .c = tc_connect(g_port, g_cctx) };
    MUST(s.c != NULL);
    pthread_t t;
    MUST(pthread_create(&t, NULL, bp_send, &s) == 0);

    /* The client reads nothing: the sender must stall once the kernel
     * buffers are full, because the server stops reading. */
    long last = -1, now;
    double still_since = now_sec();
    while ((now = atomic_load(&s.sent)) < BP_LINES && now_sec() - still_since < 0.3) {
        if (now != last) {
            last = now;
            still_since = now_sec();
        }
        sleep_ms(10);
    }
    CHECK(atomic_load(&s.sent) < BP_LINES);
    net_stats st = stats(g_srv);
    printf("     stalled after %ld KiB sent; server holds %" PRIu64 " KiB of buffers\n",
           atomic_load(&s.sent), st.buffer_bytes / 1024);
    CHECK(st.buffer_bytes < (2u << 20));

    /* Now read everything: every reply, in order. */
    char want[BP_LINE], got[BP_LINE + 1];
    int ok = 1;
    for (long i = 0; i < BP_LINES && ok; i++) {
        bp_line(want, i);
        ok = tc_read_exact(s.c, got, BP_LINE) == 0 && memcmp(got, want, BP_LINE) == 0;
    }
    CHECK(ok);
    pthread_join(t, NULL);
    CHECK(!s.failed);
    CHECK(tc_echo(s.c, "drained\n") == 0);
    tc_close(s.c);
    CHECK_EQ(wait_buffer_bytes_at_most(g_srv, 0, 2.0), 0);
}

/* ---- cases with a server of their own -------------------------------------- */

static void test_max_pending(void)
{
    net_proto small = echo_proto;
    small.max_pending = 8192;
    int port;
    net_server *s = server_start(&small, NULL, g_sctx, 2, &port);

    tconn *bystander = tc_connect(port, g_cctx);
    MUST(bystander != NULL);
    static char big[20001];
    memset(big, 'y', sizeof big - 1);

    tconn *c = tc_connect(port, g_cctx);
    MUST(c != NULL);
    big[7000] = '\n';
    CHECK(tc_write(c, big, 7001) == 0); /* under the limit: served */
    char *got = malloc(8192);
    CHECK(tc_read_line(c, got, 8192) == 7001);
    big[7000] = 'y';
    CHECK(tc_write(c, big, 20000) == 0); /* a line that never ends */
    CHECK(tc_closed_by_peer(c));
    tc_close(c);

    c = tc_connect(port, g_cctx); /* a value larger than the limit */
    MUST(c != NULL);
    CHECK(tc_puts(c, "BIG 100000\n") == 0);
    tc_write(c, big, 20000); /* may fail once the server has closed */
    CHECK(tc_closed_by_peer(c));
    tc_close(c);

    CHECK(tc_echo(bystander, "unaffected\n") == 0);
    tc_close(bystander);
    free(got);
    net_server_destroy(s);
    CHECK_EQ(atomic_load(&echo_sessions_alive), 0);
}

static void test_stop_with_connections(void)
{
    enum { N = 60 };
    int port;
    int threads0 = atomic_load(&echo_threads_alive);
    net_server *s = server_start(&echo_proto, NULL, g_sctx, 2, &port);
    CHECK_EQ(atomic_load(&echo_threads_alive) - threads0, 2);
    tconn *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = tc_connect(port, g_cctx);
        MUST(c[i] != NULL);
    }
    CHECK(tc_echo(c[0], "served\n") == 0);
    CHECK(tc_puts(c[1], "BIG 1000000\npartial") == 0); /* mid-request */
    static char blob[1 << 20];
    memset(blob, 'b', sizeof blob);
    blob[sizeof blob - 1] = '\n';
    for (int i = 0; i < 8; i++) /* a client with unread replies */
        CHECK(tc_write(c[2], blob, sizeof blob) == 0);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, N, 5.0), N);

    double t0 = now_sec();
    net_server_stop(s);
    double dt = now_sec() - t0;
    CHECK(dt < 1.0);
    CHECK_EQ(atomic_load(&echo_sessions_alive), 0);
    CHECK_EQ(atomic_load(&echo_threads_alive), threads0);
    CHECK(tc_closed_by_peer(c[0]));
    CHECK(tc_closed_by_peer(c[N - 1]));
    net_server_stop(s); /* idempotent */
    CHECK_EQ(tc_socket(port, 1000), -1); /* nobody listens any more */
    net_server_destroy(s);
    for (int i = 0; i < N; i++)
        tc_close(c[i]);
}

/* ---- connection balance ------------------------------------------------------ */

/* Max - min of the per-worker open connections.  Also checks that the
 * server's per-thread counts are what the clients see (echo's WHO): the
 * n connections of c (NULL entries skipped) and no others. */
static int balance_spread(net_server *s, tconn **c, int n, int threads)
{
    int seen[8] = { 0 };
    MUST(threads <= 8);
    for (int i = 0; i < n; i++) {
        if (!c[i])
            continue;
        int t = tc_thread(c[i]);
        MUST(t >= 0 && t < threads);
        seen[t]++;
    }
    int lo = INT_MAX, hi = 0;
    for (int t = 0; t < threads; t++) {
        net_stats st;
        MUST(net_server_get_thread_stats(s, t, &st) == CL_OK);
        CHECK_EQ(st.curr_connections, seen[t]);
        CHECK_EQ(st.threads, 1);
        lo = seen[t] < lo ? seen[t] : lo;
        hi = seen[t] > hi ? seen[t] : hi;
    }
    return hi - lo;
}

static void balance_reopen(tconn **c, int n, int port)
{
    for (int i = 0; i < n; i++) {
        if (!c[i]) {
            c[i] = tc_connect(port, g_cctx);
            MUST(c[i] != NULL);
        }
    }
}

/* New connections go to the worker with the fewest, in turn among equals,
 * whatever the kernel's hash of the client port would say. */
static void balance_case(int threads)
{
    enum { N = 50 };
    const int closed_on_0 = N / threads - 5;
    int port;
    net_server *s = server_start(&echo_proto, NULL, g_sctx, threads, &port);
    tconn *c[N];
    net_stats st;
    CHECK_EQ(net_server_get_thread_stats(s, threads, &st), CL_EINVAL);
    CHECK_EQ(net_server_get_thread_stats(s, -1, &st), CL_EINVAL);

    /* In plaintext the kernel completes these connects faster than the
     * acceptor takes them: a burst handed out in batches. */
    for (int i = 0; i < N; i++) {
        c[i] = tc_connect(port, g_cctx);
        MUST(c[i] != NULL);
    }
    int spread = balance_spread(s, c, N, threads);
    printf("     %d threads, %d connections: spread %d\n", threads, N, spread);
    CHECK(spread <= 1);

    /* Worker 0 loses connections: the next ones all go to it until it is
     * level again (a plain rotation would leave it short). */
    int closed = 0;
    for (int i = 0; i < N && closed < closed_on_0; i++) {
        if (tc_thread(c[i]) == 0) {
            tc_close(c[i]);
            c[i] = NULL;
            closed++;
        }
    }
    CHECK_EQ(closed, closed_on_0);
    CHECK_EQ(wait_curr_connections(s, (uint64_t)(N - closed), 5.0), N - closed);
    MUST(net_server_get_thread_stats(s, 0, &st) == CL_OK);
    CHECK_EQ(st.curr_connections, N / threads - closed_on_0 + (N % threads ? 1 : 0));
    balance_reopen(c, N, port);
    CHECK(balance_spread(s, c, N, threads) <= 1);

    /* Churn: a third closed at a time, wherever they were, and reopened. */
    for (int round = 0; round < 3; round++) {
        int k = 0;
        for (int i = round; i < N; i += 3, k++) {
            tc_close(c[i]);
            c[i] = NULL;
        }
        CHECK_EQ(wait_curr_connections(s, (uint64_t)(N - k), 5.0), N - k);
        balance_reopen(c, N, port);
        CHECK(balance_spread(s, c, N, threads) <= 1);
    }
    CHECK_EQ(stats(s).rejected_connections, 0);
    for (int i = 0; i < N; i++)
        tc_close(c[i]);
    CHECK_EQ(wait_curr_connections(s, 0, 5.0), 0);
    net_server_destroy(s);
}

static void test_balance(void)
{
    balance_case(2);
    if (!g_sctx)
        balance_case(3);
}

/* ---- plaintext-only cases ------------------------------------------------- */

static void test_create_errors(void)
{
    const char *bad[] = { "nonsense", "127.0.0.1", "127.0.0.1:99999", "[::1:5", ":80",
                          "127.0.0.1:", "::1:80", "no-such-host.invalid:80" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        net_listener_config l = { .addr = bad[i], .proto = &echo_proto };
        net_server_config cfg = { .listeners = &l, .n_listeners = 1, .threads = 2 };
        net_server *s = (net_server *)1;
        CHECK_EQ(net_server_create(&cfg, &s), CL_EINVAL);
        CHECK(s == NULL);
    }

    /* The port of a running server (a second one must not share it) and
     * a port taken by someone else. */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", g_port);
    net_listener_config l = { .addr = addr, .proto = &echo_proto };
    net_server_config cfg = { .listeners = &l, .n_listeners = 1, .threads = 2 };
    net_server *s = NULL;
    CHECK_EQ(net_server_create(&cfg, &s), CL_EIO);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    MUST(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0 && listen(fd, 1) == 0);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sin.sin_port));
    CHECK_EQ(net_server_create(&cfg, &s), CL_EIO);
    close(fd);

    /* A protocol whose per-thread setup fails: start fails cleanly. */
    int threads0 = atomic_load(&echo_threads_alive);
    l.addr = "127.0.0.1:0";
    l.proto_arg = ECHO_FAIL_THREAD_INIT;
    MUST(net_server_create(&cfg, &s) == CL_OK);
    CHECK(net_server_start(s) != CL_OK);
    CHECK_EQ(atomic_load(&echo_threads_alive), threads0);
    net_server_destroy(s);
}

static void test_ipv6_and_two_listeners(void)
{
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 probe = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int have_v6 = v6 >= 0 && bind(v6, (struct sockaddr *)&probe, sizeof probe) == 0;
    if (v6 >= 0)
        close(v6);
    if (!have_v6) {
        printf("     (no IPv6 loopback here; skipped)\n");
        CHECK(1);
        return;
    }
    net_listener_config l[2] = {
        { .addr = "127.0.0.1:0", .proto = &echo_proto },
        { .addr = "[::1]:0", .proto = &echo_proto },
    };
    net_server_config cfg = { .listeners = l, .n_listeners = 2, .threads = 2 };
    net_server *s = NULL;
    MUST(net_server_create(&cfg, &s) == CL_OK);
    MUST(net_server_start(s) == CL_OK);
    char name[NET_ADDR_STRLEN];
    net_server_listener_name(s, 1, name, sizeof name);
    CHECK(strncmp(name, "[::1]:", 6) == 0);
    struct sockaddr_storage ss;
    socklen_t len;
    MUST(net_server_listener_addr(s, 1, &ss, &len) == CL_OK);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    MUST(connect(fd, (struct sockaddr *)&ss, len) == 0);
    CHECK(send(fd, "over v6\n", 8, 0) == 8);
    char got[8] = { 0 };
    CHECK(recv(fd, got, sizeof got, MSG_WAITALL) == 8 && memcmp(got, "over v6\n", 8) == 0);
    close(fd);
    net_server_destroy(s);
}

/* ---- driver ---------------------------------------------------------------- */

static void run_pass(const char *name)
{
    printf("== %s ==\n", name);
    g_srv = server_start(&echo_proto, NULL, g_sctx, 2, &g_port);
    RUN(test_request_response);
    RUN(test_pipelined);
    RUN(test_split_writes);
    RUN(test_big_request);
    RUN(test_many_connections);
    RUN(test_idle_connections);
    RUN(test_client_vanishes);
    RUN(test_end_of_stream_answered);
    RUN(test_quit);
    RUN(test_backpressure);
    if (!g_sctx) {
        RUN(test_create_errors);
        RUN(test_ipv6_and_two_listeners);
    }
    RUN(test_max_pending);
    RUN(test_balance);
    RUN(test_stop_with_connections);
    net_server_destroy(g_srv);
    CHECK_EQ(atomic_load(&echo_sessions_alive), 0);
    CHECK_EQ(atomic_load(&echo_threads_alive), 0);
}

int main(void)
{
    cl_log_set_level(getenv("NET_TEST_DEBUG") ? CL_LOG_DEBUG : CL_LOG_ERROR);
    double t0 = now_sec();
    run_pass("plaintext");

    pki_create(&pki);
    g_sctx = pki_server_ctx(&pki, 0);
    g_cctx = pki_client_ctx(&pki, NULL, 0);
    run_pass("TLS 1.3");
    SSL_CTX_free(g_sctx);
    SSL_CTX_free(g_cctx);
    pki_destroy(&pki);
    printf("total %.1fs\n", now_sec() - t0);
    return th_done();
}
