/*
 * test_async.c - suspending and resuming connections (net_conn_suspend /
 * net_waker_resume in net/proto.h), plaintext and TLS.
 *
 * The protocol here, "wait", is line based: "WAIT ms\n" suspends the
 * connection and starts a completer thread that sleeps ms milliseconds,
 * records whether the connection was still alive (net_waker_alive) and
 * resumes it; the next process call answers "DONE ms\n".  "SYNC\n"
 * suspends and resumes at once, from inside process.  Any other line is
 * echoed.  Cases: resume from another thread after a delay with
 * pipelined requests held meanwhile, synchronous resume, a client that
 * resets the connection while suspended (the connection closes at once,
 * the late resume is a no-op), a client that half-closes while suspended
 * (answered, then closed), a thousand suspended connections at once, and
 * a server stopped with suspended connections.  Under ASan every one of
 * these must also be free of leaks and use after free.
 */
#include "nettest.h"

static test_pki g_pki;
static SSL_CTX *g_sctx, *g_cctx; /* NULL: plaintext run */

/* ---- the "wait" protocol ------------------------------------------------------ */

static atomic_int wait_sessions;      /* alive */
static atomic_int completers_running;
static atomic_int completed_alive;    /* completions that found the connection open */
static atomic_int completed_dead;     /* ... and closed */

typedef struct wait_session {
    net_conn *conn;
    int waiting_ms;                   /* -1: not waiting */
} wait_session;

typedef struct completer {
    net_waker *waker;
    int ms;
} completer;

static void *completer_main(void *arg)
{
    completer *c = arg;
    sleep_ms(c->ms);
    if (net_waker_alive(c->waker))
        atomic_fetch_add(&completed_alive, 1);
    else
        atomic_fetch_add(&completed_dead, 1);
    net_waker_resume(c->waker);
    free(c);
    atomic_fetch_sub(&completers_running, 1);
    return NULL;
}

static void wait_session_init(void *s, void *ts)
{
    wait_session *w = s;
    w->conn = net_session_conn(s);
    w->waiting_ms = -1;
    atomic_fetch_add(&wait_sessions, 1);
}

static void wait_session_fini(void *s, void *ts) { atomic_fetch_sub(&wait_sessions, 1); }

static size_t wait_process(void *s, void *ts, const uint8_t *in, size_t len, cl_buf *out,
                           int *close, size_t *want)
{
    wait_session *w = s;
    size_t done = 0;
    if (w->waiting_ms >= 0) { /* resumed */
        if (cl_buf_printf(out, "DONE %d\n", w->waiting_ms) != CL_OK)
            abort();
        w->waiting_ms = -1;
    }
    while (done < len) {
        const uint8_t *p = in + done;
        const uint8_t *nl = memchr(p, '\n', len - done);
        if (!nl)
            break;
        size_t line = (size_t)(nl - p) + 1;
        done += line;
        int ms;
        if (line == 5 && memcmp(p, "SYNC\n", 5) == 0) {
            net_waker *k = net_conn_suspend(w->conn);
            MUST(k != NULL);
            w->waiting_ms = 0;
            net_waker_resume(k); /* before process even returns */
            return done;
        }
        if (line > 5 && memcmp(p, "WAIT ", 5) == 0 && sscanf((const char *)p + 5, "%d", &ms) == 1) {
            completer *c = malloc(sizeof *c);
            MUST(c != NULL);
            c->waker = net_conn_suspend(w->conn);
            MUST(c->waker != NULL);
            c->ms = ms;
            w->waiting_ms = ms;
            atomic_fetch_add(&completers_running, 1);
            pthread_t t;
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_attr_setstacksize(&attr, 64 * 1024);
            MUST(pthread_create(&t, &attr, completer_main, c) == 0);
            pthread_attr_destroy(&attr);
            return done; /* the rest waits for the resume */
        }
        if (cl_buf_append(out, p, line) != CL_OK)
            abort();
    }
    return done;
}

static const net_proto wait_proto = {
    .name = "wait",
    .session_size = sizeof(wait_session),
    .session_init = wait_session_init,
    .session_fini = wait_session_fini,
    .process = wait_process,
    .max_pending = 1 << 20,
};

/* Waits for every completer thread to finish. */
static void completers_drain(void)
{
    CHECK_EQ(wait_atomic_int(&completers_running, 0, 20), 0);
}

static int expect_line(tconn *c, const char *want)
{
    char got[256];
    if (tc_read_line(c, got, sizeof got) < 0)
        return -1;
    if (strcmp(got, want) != 0) {
        fprintf(stderr, "     got \"%s\", want \"%s\"\n", got, want);
        return -1;
    }
    return 0;
}

/* ---- cases ------------------------------------------------------------------ */

static void test_resume_from_thread(void)
{
    int port;
    net_server *s = server_start(&wait_proto, NULL, g_sctx, 2, &port);
    tconn *c = tc_connect(port, g_cctx);
    MUST(c != NULL);
    double t0 = now_sec();
    /* Requests pipelined behind the suspended one wait, in order. */
    MUST(tc_puts(c, "one\nWAIT 100\ntwo\nWAIT 20\nthree\n") == 0);
    CHECK(expect_line(c, "one\n") == 0);
    CHECK(expect_line(c, "DONE 100\n") == 0);
    double t1 = now_sec();
    CHECK(t1 - t0 >= 0.095);
    CHECK(expect_line(c, "two\n") == 0);
    CHECK(expect_line(c, "DONE 20\n") == 0);
    CHECK(expect_line(c, "three\n") == 0);
    /* The connection keeps working afterwards, including a resume from
     * inside process. */
    CHECK(tc_echo(c, "four\n") == 0);
    MUST(tc_puts(c, "SYNC\nfive\n") == 0);
    CHECK(expect_line(c, "DONE 0\n") == 0);
    CHECK(expect_line(c, "five\n") == 0);
    tc_close(c);
    completers_drain();
    CHECK_EQ(wait_curr_connections(s, 0, 5), 0);
    net_server_destroy(s);
    CHECK_EQ(atomic_load(&wait_sessions), 0);
}

/* A client that resets while suspended: the server notices (EPOLLHUP /
 * EPOLLERR) and closes at once; the completion later finds the waker dead
 * and its resume is a no-op. */
static void test_client_resets_while_suspended(void)
{
    int port;
    net_server *s = server_start(&wait_proto, NULL, g_sctx, 1, &port);
    atomic_store(&completed_alive, 0);
    atomic_store(&completed_dead, 0);
    tconn *c = tc_connect(port, g_cctx);
    MUST(c != NULL);
    MUST(tc_puts(c, "WAIT 400\n") == 0);
    CHECK_EQ(wait_atomic_int(&wait_sessions, 1, 5), 1);
    sleep_ms(30); /* let it suspend */
    struct linger lg = { 1, 0 };
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    tc_close(c); /* RST */
    CHECK_EQ(wait_curr_connections(s, 0, 2), 0);
    CHECK_EQ(atomic_load(&wait_sessions), 0);
    CHECK_EQ(atomic_load(&completers_running), 1); /* closed before the work ended */
    completers_drain();
    CHECK_EQ(atomic_load(&completed_dead), 1);
    CHECK_EQ(atomic_load(&completed_alive), 0);

    /* The server still serves. */
    c = tc_connect(port, g_cctx);
    MUST(c != NULL);
    CHECK(tc_echo(c, "still here\n") == 0);
    tc_close(c);
    net_server_destroy(s);
}

/* A client that half-closes while suspended still gets its answer. */
static void test_client_half_closes_while_suspended(void)
{
    if (g_cctx)
        return; /* TLS has no half-close short of close_notify, which ends the session */
    int port;
    net_server *s = server_start(&wait_proto, NULL, NULL, 1, &port);
    tconn *c = tc_connect(port, NULL);
    MUST(c != NULL);
    MUST(tc_puts(c, "WAIT 50\nafter\n") == 0);
    shutdown(c->fd, SHUT_WR);
    CHECK(expect_line(c, "DONE 50\n") == 0);
    CHECK(expect_line(c, "after\n") == 0);
    CHECK(tc_closed_by_peer(c));
    tc_close(c);
    completers_drain();
    CHECK_EQ(wait_curr_connections(s, 0, 5), 0);
    net_server_destroy(s);
}

/* Many suspended connections at once, completing in any order. */
static void test_many_suspended(void)
{
    enum { N = 400 };
    int port;
    net_server *s = server_start(&wait_proto, NULL, g_sctx, 2, &port);
    static tconn *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = tc_connect(port, g_cctx);
        MUST(c[i] != NULL);
    }
    atomic_store(&completed_alive, 0);
    double t0 = now_sec();
    char line[64];
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "WAIT %d\nx%d\n", 200 + (i * 37) % 100, i);
        MUST(tc_puts(c[i], line) == 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        char want[64];
        snprintf(want, sizeof want, "DONE %d\n", 200 + (i * 37) % 100);
        snprintf(line, sizeof line, "x%d\n", i);
        ok += expect_line(c[i], want) == 0 && expect_line(c[i], line) == 0;
    }
    double t = now_sec() - t0;
    CHECK_EQ(ok, N);
    printf("     %d suspended connections answered in %.2f s\n", N, t);
    CHECK(t < 5.0); /* one at a time would take 100 s */
    CHECK_EQ(atomic_load(&completed_alive), N);
    for (int i = 0; i < N; i++)
        tc_close(c[i]);
    completers_drain();
    CHECK_EQ(wait_curr_connections(s, 0, 5), 0);
    net_server_destroy(s);
    CHECK_EQ(atomic_load(&wait_sessions), 0);
}

/* Stopping the server with suspended connections frees them; the late
 * completions are no-ops. */
static void test_stop_while_suspended(void)
{
    enum { N = 20 };
    int port;
    net_server *s = server_start(&wait_proto, NULL, g_sctx, 2, &port);
    tconn *c[N];
    atomic_store(&completed_dead, 0);
    for (int i = 0; i < N; i++) {
        c[i] = tc_connect(port, g_cctx);
        MUST(c[i] != NULL);
        MUST(tc_puts(c[i], "WAIT 300\n") == 0);
    }
    CHECK_EQ(wait_atomic_int(&completers_running, N, 5), N);
    net_server_stop(s);
    CHECK_EQ(atomic_load(&wait_sessions), 0);
    net_server_destroy(s); /* before the completions: they must not need it */
    completers_drain();
    CHECK_EQ(atomic_load(&completed_dead), N);
    for (int i = 0; i < N; i++)
        tc_close(c[i]);
}

static void run_all(const char *mode)
{
    printf("-- %s\n", mode);
    RUN(test_resume_from_thread);
    RUN(test_client_resets_while_suspended);
    RUN(test_client_half_closes_while_suspended);
    RUN(test_many_suspended);
    RUN(test_stop_while_suspended);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    run_all("plaintext");

    pki_create(&g_pki);
    g_sctx = pki_server_ctx(&g_pki, 0);
    g_cctx = pki_client_ctx(&g_pki, NULL, 0);
    run_all("TLS");
    SSL_CTX_free(g_sctx);
    SSL_CTX_free(g_cctx);
    pki_destroy(&g_pki);
    return th_done();
}
