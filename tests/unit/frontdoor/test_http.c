/*
 * test_http.c - the HTTP gateway driven directly (no sockets): framing,
 * keep-alive, pipelining under every split of the input, bodies
 * (Content-Length, chunked), limits (413, 431), malformed requests (400),
 * routing (404, 405, names, tenants), every invoke outcome, deploy (plain
 * and with streamed progress), list/info/logs/remove, and /metrics parsed
 * back.  Responses are compared byte for byte (the Date value, which
 * changes, is checked for its format and replaced by "X").
 *
 * The runtime is the fake of test_http_fake.h.  Sessions have no
 * connection, so invocations are waited for on the calling thread; the
 * asynchronous path through the event loop is tested in
 * test_http_server.c.
 */
#include "../harness.h"
#include "test_http_fake.h"

#include <ctype.h>
#include <jansson.h>

typedef struct hf {
    store *st;
    http_context ctx;
    http_thread *thr;
    http_session *s;
    cl_buf in, out;
    int closed;
} hf;

static void hf_open_ctx(hf *f, size_t max_body)
{
    memset(f, 0, sizeof *f);
    store_config cfg = { .memory_bytes = 4u << 20 };
    int rc = store_create(&cfg, &f->st);
    REQUIRE(rc == CL_OK);
    rc = http_context_init(&f->ctx);
    REQUIRE(rc == CL_OK);
    f->ctx.ops = &fake_ops;
    f->ctx.store = f->st;
    f->ctx.version = "9.9.9-test";
    if (max_body) {
        f->ctx.max_body_bytes = max_body;
        f->ctx.max_module_bytes = max_body;
    }
    rc = http_thread_create(&f->ctx, &f->thr);
    REQUIRE(rc == CL_OK);
    rc = http_session_create(f->thr, NULL, &f->s);
    REQUIRE(rc == CL_OK);
    cl_buf_init(&f->in);
    cl_buf_init(&f->out);
    fake_reset();
}

static void hf_open(hf *f) { hf_open_ctx(f, 0); }

static void hf_close(hf *f)
{
    http_session_destroy(f->s);
    http_thread_destroy(f->thr);
    http_context_fini(&f->ctx);
    store_destroy(f->st);
    cl_buf_fini(&f->in, 0);
    cl_buf_fini(&f->out, 0);
}

/* Feeds bytes the way the event loop does: process until no progress. */
static void hf_feed(hf *f, const void *p, size_t n)
{
    if (f->closed)
        return;
    REQUIRE(cl_buf_append(&f->in, p, n) == CL_OK);
    for (;;) {
        int close = 0;
        size_t used = http_session_process(f->s, f->in.data, f->in.len, &f->out, &close);
        REQUIRE(used <= f->in.len);
        cl_buf_consume(&f->in, used);
        if (close) {
            f->closed = 1;
            f->in.len = 0;
            return;
        }
        if (used == 0 || f->in.len == 0)
            return;
    }
}

/* The output since the last call, NUL-terminated, with every Date value
 * checked and replaced by "X".  Owned by the caller. */
static char *hf_take(hf *f)
{
    char *r = malloc(f->out.len + 1);
    REQUIRE(r != NULL);
    size_t k = 0;
    for (size_t i = 0; i < f->out.len;) {
        static const char d[] = "\r\nDate: ";
        if (f->out.len - i >= sizeof d - 1 && memcmp(f->out.data + i, d, sizeof d - 1) == 0) {
            memcpy(r + k, d, sizeof d - 1);
            k += sizeof d - 1;
            i += sizeof d - 1;
            /* "Sun, 06 Nov 1994 08:49:37 GMT" */
            CHECK(f->out.len - i >= 29 && memcmp(f->out.data + i + 25, " GMT\r\n", 6) == 0 &&
                  f->out.data[i + 3] == ',');
            r[k++] = 'X';
            i += 29;
            continue;
        }
        r[k++] = (char)f->out.data[i++];
    }
    r[k] = '\0';
    f->out.len = 0;
    return r;
}

static void print_escaped(const char *label, const char *s)
{
    fprintf(stderr, "     %s: \"", label);
    for (; *s; s++) {
        if (*s == '\r')
            fputs("\\r", stderr);
        else if (*s == '\n')
            fputs("\\n\"\n       \"", stderr);
        else if (isprint((unsigned char)*s))
            fputc(*s, stderr);
        else
            fprintf(stderr, "\\x%02x", (unsigned char)*s);
    }
    fputs("\"\n", stderr);
}

static void hf_expect_at(hf *f, const char *want, const char *file, int line)
{
    char *got = hf_take(f);
    int ok = strcmp(got, want) == 0;
    th_check(ok, file, line, "response == expected");
    if (!ok) {
        print_escaped("got ", got);
        print_escaped("want", want);
    }
    free(got);
}

#define EXPECT(f, input, want)                                                \
    do {                                                                      \
        hf_feed((f), (input), strlen(input));                                 \
        hf_expect_at((f), (want), __FILE__, __LINE__);                        \
    } while (0)

#define EXPECT_BUF(f, b, want)                                                \
    do {                                                                      \
        hf_feed((f), (b)->data, (b)->len);                                    \
        hf_expect_at((f), (want), __FILE__, __LINE__);                        \
    } while (0)

#define TEXT "Content-Type: text/plain; charset=utf-8\r\n"
#define BIN  "Content-Type: application/octet-stream\r\n"
#define JSON "Content-Type: application/json\r\n"
#define OK200 "HTTP/1.1 200 OK\r\nDate: X\r\n"

/* ---- framing ------------------------------------------------------------- */

static void test_healthz_keepalive(void)
{
    hf f;
    hf_open(&f);
    EXPECT(&f, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    CHECK(!f.closed);
    EXPECT(&f, "HEAD /healthz HTTP/1.1\r\n\r\nHEAD /function/echo HTTP/1.1\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\n\r\n"
           "HTTP/1.1 405 Method Not Allowed\r\nDate: X\r\n" TEXT
           "Allow: POST\r\nContent-Length: 19\r\n\r\n");
    EXPECT(&f, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
    CHECK(f.closed);
    hf_close(&f);

    /* HTTP/1.0: closes unless asked to keep alive. */
    hf_open(&f);
    EXPECT(&f, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n");
    CHECK(!f.closed);
    EXPECT(&f, "GET /healthz HTTP/1.0\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
    CHECK(f.closed);
    hf_close(&f);
}

static const char pipeline_in[] =
    "POST /function/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    "GET /healthz HTTP/1.1\r\n\r\n"
    "POST /function/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n"
    "POST /function/trap HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    "GET /nowhere HTTP/1.1\r\n\r\n"
    "POST /function/echo HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"
    "GET /healthz HTTP/1.1\r\n\r\n"; /* after close: never answered */

static const char pipeline_out[] =
    OK200 BIN "Content-Length: 5\r\n\r\nhello"
    OK200 TEXT "Content-Length: 3\r\n\r\nok\n"
    OK200 BIN "Content-Length: 7\r\n\r\nabcdefg"
    "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" TEXT
    "Content-Length: 34\r\n\r\ntrap: out of bounds memory access\n"
    "HTTP/1.1 404 Not Found\r\nDate: X\r\n" TEXT "Content-Length: 10\r\n\r\nnot found\n"
    OK200 BIN "Content-Length: 0\r\n\r\n"
    OK200 TEXT "Content-Length: 3\r\nConnection: close\r\n\r\nok\n";

static void test_pipelining_any_split(void)
{
    hf f;
    hf_open(&f);
    EXPECT(&f, pipeline_in, pipeline_out);
    CHECK(f.closed);
    hf_close(&f);

    /* Byte by byte, and in every two-piece split: the same responses. */
    size_t n = sizeof pipeline_in - 1;
    hf_open(&f);
    for (size_t i = 0; i < n; i++)
        hf_feed(&f, pipeline_in + i, 1);
    hf_expect_at(&f, pipeline_out, __FILE__, __LINE__);
    hf_close(&f);
    for (size_t cut = 1; cut < n; cut += 7) {
        hf_open(&f);
        hf_feed(&f, pipeline_in, cut);
        hf_feed(&f, pipeline_in + cut, n - cut);
        char *got = hf_take(&f);
        CHECK(strcmp(got, pipeline_out) == 0);
        free(got);
        hf_close(&f);
    }
}

static void test_malformed(void)
{
    hf f;
    hf_open(&f);
    EXPECT(&f, "GET /healthz HTTP/1.1\r\n\r\nHELLO WORLD\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\n\r\nok\n"
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" TEXT
           "Content-Length: 33\r\nConnection: close\r\n\r\nbad request: invalid HTTP method\n");
    CHECK(f.closed);
    hf_close(&f);

    const char *bad[] = {
        "GET /healthz HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "GET /healthz HTTP/1.x\r\n\r\n",
        "POST /function/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
        "\x01\x02\x03",
        "GET /healthz HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hf_open(&f);
        hf_feed(&f, bad[i], strlen(bad[i]));
        char *got = hf_take(&f);
        CHECK(strncmp(got, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
        CHECK(strstr(got, "Connection: close\r\n") != NULL);
        if (strncmp(got, "HTTP/1.1 400", 12) != 0)
            fprintf(stderr, "     case %zu: %s\n", i, got);
        CHECK(f.closed);
        free(got);
        hf_close(&f);
    }

    /* CONNECT and an upgrade. */
    hf_open(&f);
    EXPECT(&f, "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" TEXT
           "Content-Length: 25\r\nConnection: close\r\n\r\nCONNECT is not supported\n");
    CHECK(f.closed);
    hf_close(&f);
    hf_open(&f);
    EXPECT(&f, "GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz",
           OK200 TEXT "Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
    CHECK(f.closed);
    hf_close(&f);
}

static void test_limits(void)
{
    hf f;
    hf_open_ctx(&f, 1000);
    /* Announced too large: refused before the body is read, then close. */
    EXPECT(&f, "POST /function/echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\nabc",
           "HTTP/1.1 413 Payload Too Large\r\nDate: X\r\n" TEXT
           "Content-Length: 23\r\nConnection: close\r\n\r\nrequest body too large\n");
    CHECK(f.closed);
    hf_close(&f);

    /* Exactly the limit is fine. */
    hf_open_ctx(&f, 1000);
    char req[1200];
    int n = snprintf(req, sizeof req, "POST /function/echo HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
    memset(req + n, 'z', 1000);
    hf_feed(&f, req, (size_t)n + 1000);
    char *got = hf_take(&f);
    static const char head[] = OK200 BIN "Content-Length: 1000\r\n\r\n";
    CHECK(strncmp(got, head, sizeof head - 1) == 0);
    CHECK(strlen(got) == sizeof head - 1 + 1000 && got[sizeof head - 1] == 'z');
    free(got);
    CHECK(!f.closed);
    hf_close(&f);
}

static void test_limits_chunked(void)
{
    hf f;
    hf_open_ctx(&f, 1000);
    static const char head[] = "POST /function/echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    hf_feed(&f, head, sizeof head - 1);
    char chunk[600];
    int n = snprintf(chunk, sizeof chunk, "1f4\r\n");
    memset(chunk + n, 'y', 500);
    memcpy(chunk + n + 500, "\r\n", 2);
    hf_feed(&f, chunk, (size_t)n + 502);
    hf_feed(&f, chunk, (size_t)n + 502); /* 1000 bytes: still fine */
    CHECK(f.out.len == 0);
    CHECK(!f.closed);
    hf_feed(&f, "1\r\nx\r\n", 6);
    hf_expect_at(&f,
                 "HTTP/1.1 413 Payload Too Large\r\nDate: X\r\n" TEXT
                 "Content-Length: 23\r\nConnection: close\r\n\r\nrequest body too large\n",
                 __FILE__, __LINE__);
    CHECK(f.closed);
    hf_close(&f);

    /* Head too large: 431. */
    hf_open(&f);
    cl_buf big;
    cl_buf_init(&big);
    REQUIRE(cl_buf_printf(&big, "GET /healthz HTTP/1.1\r\n") == CL_OK);
    for (int i = 0; i < 1000; i++)
        REQUIRE(cl_buf_printf(&big, "X-Filler-%d: 0123456789abcdef\r\n", i) == CL_OK);
    hf_feed(&f, big.data, big.len);
    hf_expect_at(&f,
                 "HTTP/1.1 431 Request Header Fields Too Large\r\nDate: X\r\n" TEXT
                 "Content-Length: 23\r\nConnection: close\r\n\r\nrequest head too large\n",
                 __FILE__, __LINE__);
    CHECK(f.closed);
    cl_buf_fini(&big, 0);
    hf_close(&f);
}

static void test_expect_continue(void)
{
    hf f;
    hf_open(&f);
    EXPECT(&f, "POST /function/echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
           "HTTP/1.1 100 Continue\r\n\r\n");
    EXPECT(&f, "hi", OK200 BIN "Content-Length: 2\r\n\r\nhi");
    /* Refused heads are answered at once instead, and the connection ends. */
    EXPECT(&f, "POST /nowhere HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" TEXT
           "Content-Length: 10\r\nConnection: close\r\n\r\nnot found\n");
    CHECK(f.closed);
    hf_close(&f);
}

/* ---- routing ---------------------------------------------------------------- */

static void test_routing_errors(void)
{
    hf f;
    hf_open(&f);
    /* A body sent to a refused request is read and dropped; the
     * connection goes on. */
    EXPECT(&f, "POST /healthz HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
           "HTTP/1.1 405 Method Not Allowed\r\nDate: X\r\n" TEXT
           "Allow: GET\r\nContent-Length: 19\r\n\r\nmethod not allowed\n");
    EXPECT(&f, "PUT /system/functions HTTP/1.1\r\n\r\n",
           "HTTP/1.1 405 Method Not Allowed\r\nDate: X\r\n" JSON
           "Allow: GET, POST, DELETE\r\nContent-Length: 31\r\n\r\n{\"error\":\"method not allowed\"}\n");
    EXPECT(&f, "GET /function/echo HTTP/1.1\r\n\r\n",
           "HTTP/1.1 405 Method Not Allowed\r\nDate: X\r\n" TEXT
           "Allow: POST\r\nContent-Length: 19\r\n\r\nmethod not allowed\n");
    EXPECT(&f, "GET /healthz/ HTTP/1.1\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" TEXT "Content-Length: 10\r\n\r\nnot found\n");
    EXPECT(&f, "POST /function/ HTTP/1.1\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" TEXT "Content-Length: 10\r\n\r\nnot found\n");
    EXPECT(&f, "POST /function/bad!name HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" TEXT
           "Content-Length: 54\r\n\r\ninvalid function name (expected [A-Za-z0-9_.-]{1,64})\n");
    char longname[200];
    snprintf(longname, sizeof longname, "POST /function/%065d HTTP/1.1\r\n\r\n", 0);
    hf_feed(&f, longname, strlen(longname));
    char *got = hf_take(&f);
    CHECK(strncmp(got, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    free(got);
    static const char noname[] = "POST /system/functions HTTP/1.1\r\nContent-Length: 4\r\n\r\n\0asm";
    hf_feed(&f, noname, sizeof noname - 1);
    hf_expect_at(&f, "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" JSON
           "Content-Length: 47\r\n\r\n{\"error\":\"missing function name (?name=NAME)\"}\n",
                 __FILE__, __LINE__);
    EXPECT(&f, "GET /healthz?x=%zz HTTP/1.1\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    EXPECT(&f, "POST /function/echo?tenant=a/b HTTP/1.1\r\n\r\n",
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" TEXT
           "Content-Length: 52\r\n\r\ninvalid tenant name (expected [A-Za-z0-9_.-]{1,64})\n");
    EXPECT(&f, "POST /function/echo HTTP/1.1\r\nX-Cloister-Tenant: \r\n\r\n",
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" TEXT
           "Content-Length: 52\r\n\r\ninvalid tenant name (expected [A-Za-z0-9_.-]{1,64})\n");
    /* Percent-encoded names decode; absolute-form targets route by path. */
    EXPECT(&f, "POST /function/ec%68o HTTP/1.1\r\nContent-Length: 1\r\n\r\nq",
           OK200 BIN "Content-Length: 1\r\n\r\nq");
    EXPECT(&f, "GET http://node:8080/healthz HTTP/1.1\r\n\r\n",
           OK200 TEXT "Content-Length: 3\r\n\r\nok\n");
    CHECK(!f.closed);
    hf_close(&f);
}

static void test_invoke_outcomes(void)
{
    hf f;
    hf_open(&f);
#define INV(name) "POST /function/" name " HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
    EXPECT(&f, INV("timeout"),
           "HTTP/1.1 504 Gateway Timeout\r\nDate: X\r\n" TEXT
           "Content-Length: 26\r\n\r\ntimeout: exceeded 5000 ms\n");
    EXPECT(&f, INV("fail"),
           "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" BIN
           "Content-Length: 9\r\n\r\nbad input");
    EXPECT(&f, INV("quiet"),
           "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" TEXT
           "Content-Length: 25\r\n\r\nerror: handle returned 7\n");
    EXPECT(&f, INV("crash"),
           "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" TEXT
           "Content-Length: 29\r\n\r\ncrash: worker died (SIGSEGV)\n");
    EXPECT(&f, INV("busy"),
           "HTTP/1.1 503 Service Unavailable\r\nDate: X\r\n" TEXT
           "Retry-After: 1\r\nContent-Length: 28\r\n\r\noverloaded: try again later\n");
    EXPECT(&f, INV("refuse"),
           "HTTP/1.1 503 Service Unavailable\r\nDate: X\r\n" TEXT
           "Retry-After: 1\r\nContent-Length: 28\r\n\r\noverloaded: try again later\n");
    EXPECT(&f, INV("toobig"),
           "HTTP/1.1 413 Payload Too Large\r\nDate: X\r\n" TEXT
           "Content-Length: 23\r\n\r\nrequest body too large\n");
    EXPECT(&f, INV("nosuch"),
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" TEXT
           "Content-Length: 28\r\n\r\nfunction 'nosuch' not found\n");
#undef INV
    /* A large output. */
    hf_feed(&f, "POST /function/big HTTP/1.1\r\n\r\n", 31);
    char *got = hf_take(&f);
    const char *body = strstr(got, "\r\n\r\n");
    CHECK(strstr(got, "Content-Length: 1048576\r\n") != NULL);
    CHECK(body && strlen(body + 4) == FAKE_BIG_OUTPUT && body[4] == 'a' && body[4 + 26] == 'a');
    free(got);
    CHECK(!f.closed);
    hf_close(&f);
}

/* ---- system routes ---------------------------------------------------------- */

static void deploy_req(cl_buf *b, const char *target, const char *extra_headers,
                       const void *module, size_t n)
{
    b->len = 0;
    REQUIRE(cl_buf_printf(b, "POST %s HTTP/1.1\r\n%sContent-Length: %zu\r\n\r\n", target,
                          extra_headers, n) == CL_OK);
    REQUIRE(cl_buf_append(b, module, n) == CL_OK);
}

/* The JSON body of a single response in text, or NULL. */
static json_t *body_json(const char *text)
{
    const char *b = strstr(text, "\r\n\r\n");
    if (!b)
        return NULL;
    return json_loads(b + 4, 0, NULL);
}

static const char MOD1[] = "\0asm\1\0\0\0module-one";
static const char MOD2[] = "\0asm\1\0\0\0module-two!";

static void test_deploy_list_remove(void)
{
    hf f;
    cl_buf req;
    cl_buf_init(&req);
    hf_open(&f);

    deploy_req(&req, "/system/functions?name=hello", "", MOD1, sizeof MOD1 - 1);
    hf_feed(&f, req.data, req.len);
    char *got = hf_take(&f);
    CHECK(strncmp(got, "HTTP/1.1 201 Created\r\nDate: X\r\n" JSON "Content-Length: ", 65) == 0);
    json_t *j = body_json(got);
    CHECK(j && json_is_object(j));
    CHECK(j && strcmp(json_string_value(json_object_get(j, "name")), "hello") == 0);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "tenant")), "default") == 0);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "kind")), "wasm") == 0);
    CHECK(j && json_integer_value(json_object_get(j, "size")) == (json_int_t)sizeof MOD1 - 1);
    CHECK(j && json_is_false(json_object_get(j, "cached")));
    const char *sha = j ? json_string_value(json_object_get(j, "sha256")) : NULL;
    uint8_t h[32];
    char hex[65];
    SHA256((const uint8_t *)MOD1, sizeof MOD1 - 1, h);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    CHECK(sha && strcmp(sha, hex) == 0);
    json_decref(j);
    free(got);

    /* The same module again (another name, tenant from the header): cached. */
    deploy_req(&req, "/system/functions?name=again", "X-Cloister-Tenant: acme\r\n", MOD1,
               sizeof MOD1 - 1);
    hf_feed(&f, req.data, req.len);
    got = hf_take(&f);
    j = body_json(got);
    CHECK(j && json_is_true(json_object_get(j, "cached")));
    CHECK(j && strcmp(json_string_value(json_object_get(j, "tenant")), "acme") == 0);
    json_decref(j);
    free(got);
    deploy_req(&req, "/system/functions?tenant=acme&name=zeta", "", MOD2, sizeof MOD2 - 1);
    hf_feed(&f, req.data, req.len);
    free(hf_take(&f));

    /* Refusals: JSON errors; nothing deployed changes. */
    deploy_req(&req, "/system/functions?name=hello", "", "garbage", 7);
    EXPECT_BUF(&f, &req,
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" JSON
           "Content-Length: 49\r\n\r\n{\"error\":\"not a WebAssembly module (bad magic)\"}\n");
    deploy_req(&req, "/system/functions?name=hello", "", "\0asmFAIL", 8);
    hf_feed(&f, req.data, req.len);
    got = hf_take(&f);
    CHECK(strcmp(got, "HTTP/1.1 500 Internal Server Error\r\nDate: X\r\n" JSON
                      "Content-Length: 35\r\n\r\n{\"error\":\"wasm2c: compile failed\"}\n") == 0);
    free(got);

    /* List: the tenant's functions, by name. */
    hf_feed(&f, "GET /system/functions?tenant=acme HTTP/1.1\r\n\r\n", 46);
    got = hf_take(&f);
    j = body_json(got);
    CHECK(j && json_is_array(j) && json_array_size(j) == 2);
    CHECK(j && strcmp(json_string_value(json_object_get(json_array_get(j, 0), "name")), "again") == 0);
    CHECK(j && strcmp(json_string_value(json_object_get(json_array_get(j, 1), "name")), "zeta") == 0);
    CHECK(j && json_integer_value(json_object_get(json_array_get(j, 1), "deployed_at")) == 1700000000);
    CHECK(j && json_object_size(json_array_get(j, 0)) == 8);
    json_decref(j);
    free(got);

    /* Info, invoke (a deployed function echoes), logs (both spellings). */
    EXPECT(&f, "GET /system/function/nope HTTP/1.1\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" JSON
           "Content-Length: 38\r\n\r\n{\"error\":\"function 'nope' not found\"}\n");
    hf_feed(&f, "GET /system/function/hello HTTP/1.1\r\n\r\n", 39);
    got = hf_take(&f);
    j = body_json(got);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "sha256")), hex) == 0);
    json_decref(j);
    free(got);
    EXPECT(&f, "POST /function/hello HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
           OK200 BIN "Content-Length: 2\r\n\r\nhi");
    EXPECT(&f, "GET /system/functions/hello/logs HTTP/1.1\r\n\r\n",
           OK200 TEXT "Content-Length: 36\r\n\r\nlog of default/hello: 1 invocations\n");
    EXPECT(&f, "GET /system/logs?name=zeta&tenant=acme HTTP/1.1\r\n\r\n",
           OK200 TEXT "Content-Length: 32\r\n\r\nlog of acme/zeta: 0 invocations\n");
    EXPECT(&f, "GET /system/logs?name=zeta HTTP/1.1\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" JSON
           "Content-Length: 38\r\n\r\n{\"error\":\"function 'zeta' not found\"}\n");

    /* Remove. */
    EXPECT(&f, "DELETE /system/functions?name=hello HTTP/1.1\r\n\r\n",
           "HTTP/1.1 204 No Content\r\nDate: X\r\n\r\n");
    EXPECT(&f, "DELETE /system/functions?name=hello HTTP/1.1\r\n\r\n",
           "HTTP/1.1 404 Not Found\r\nDate: X\r\n" JSON
           "Content-Length: 39\r\n\r\n{\"error\":\"function 'hello' not found\"}\n");
    EXPECT(&f, "GET /system/functions HTTP/1.1\r\n\r\n",
           OK200 JSON "Content-Length: 3\r\n\r\n[]\n");
    EXPECT(&f, "GET /system/info HTTP/1.1\r\n\r\n",
           OK200 JSON "Content-Length: 47\r\n\r\n{\"provider\":\"cloister\",\"version\":\"9.9.9-test\"}\n");
    CHECK(!f.closed);
    cl_buf_fini(&req, 0);
    hf_close(&f);
}

static void test_deploy_progress(void)
{
    hf f;
    cl_buf req;
    cl_buf_init(&req);
    hf_open(&f);
    deploy_req(&req, "/system/functions?name=p&progress=1", "", "\0asmXY", 6);
    hf_feed(&f, req.data, req.len);
    char *got = hf_take(&f);
    const char *want_head = OK200 "Content-Type: text/plain; charset=utf-8\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "b\r\nvalidate 0\n\r\n" "d\r\nvalidate 100\n\r\n"
                                  "a\r\ncompile 0\n\r\n" "b\r\ncompile 50\n\r\n"
                                  "c\r\ncompile 100\n\r\n" "9\r\nload 100\n\r\n";
    CHECK(strncmp(got, want_head, strlen(want_head)) == 0);
    const char *last = got + strlen(want_head);
    size_t clen = strtoul(last, NULL, 16);
    const char *line = strstr(last, "\r\n");
    CHECK(line != NULL);
    if (line) {
        json_t *j = json_loadb(line + 2, clen, 0, NULL);
        CHECK(j && json_integer_value(json_object_get(j, "status")) == 201);
        CHECK(j && strcmp(json_string_value(json_object_get(j, "name")), "p") == 0);
        json_decref(j);
        CHECK(strcmp(line + 2 + clen, "\r\n0\r\n\r\n") == 0);
    }
    free(got);

    /* A failure, as server-sent events. */
    deploy_req(&req, "/system/functions?name=p", "Accept: text/html, text/event-stream\r\n", "nope", 4);
    EXPECT_BUF(&f, &req,
           OK200 "Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           "22\r\nevent: progress\ndata: validate 0\n\n\r\n"
           "53\r\nevent: result\ndata: {\"error\":\"not a WebAssembly module (bad magic)\",\"status\":400}\n\n\r\n"
           "0\r\n\r\n");
    /* HTTP/1.0 clients get no stream. */
    deploy_req(&req, "/system/functions?name=p&progress=1", "", "nope", 4);
    memcpy(req.data + strlen("POST /system/functions?name=p&progress=1 HTTP/1."), "0", 1);
    EXPECT_BUF(&f, &req,
           "HTTP/1.1 400 Bad Request\r\nDate: X\r\n" JSON
           "Content-Length: 49\r\nConnection: close\r\n\r\n{\"error\":\"not a WebAssembly module (bad magic)\"}\n");
    cl_buf_fini(&req, 0);
    hf_close(&f);
}

/* ---- metrics ------------------------------------------------------------------- */

/* Finds "name value" (name including labels) among the sample lines. */
static double metric(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    return -1;
}

static void test_metrics(void)
{
    hf f;
    hf_open(&f);
    const char *calls = "POST /function/echo HTTP/1.1\r\n\r\n"
                        "POST /function/trap HTTP/1.1\r\n\r\n"
                        "POST /function/timeout HTTP/1.1\r\n\r\n"
                        "POST /function/fail HTTP/1.1\r\n\r\n"
                        "GET /nowhere HTTP/1.1\r\n\r\n";
    hf_feed(&f, calls, strlen(calls));
    free(hf_take(&f));
    hf_feed(&f, "GET /metrics HTTP/1.1\r\n\r\n", 25);
    char *got = hf_take(&f);
    CHECK(strncmp(got, OK200 "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", 82) == 0);
    const char *body = strstr(got, "\r\n\r\n");
    REQUIRE(body != NULL);
    body += 4;

    /* Every line is a comment (HELP/TYPE) or `name[{labels}] number`. */
    int samples = 0;
    for (const char *p = body; *p;) {
        const char *nl = strchr(p, '\n');
        REQUIRE(nl != NULL);
        if (*p == '#') {
            CHECK(strncmp(p, "# HELP cloister_", 16) == 0 || strncmp(p, "# TYPE cloister_", 16) == 0);
        } else {
            const char *q = p;
            while (isalnum((unsigned char)*q) || *q == '_')
                q++;
            CHECK(q > p && strncmp(p, "cloister_", 9) == 0);
            if (*q == '{') {
                q = memchr(q, '}', (size_t)(nl - q));
                CHECK(q != NULL);
                q = q ? q + 1 : nl;
            }
            CHECK(*q == ' ');
            char *end;
            strtod(q + 1, &end);
            CHECK(end == nl && end > q + 1);
            samples++;
        }
        p = nl + 1;
    }
    CHECK(samples > 40);

    CHECK(metric(body, "cloister_invocations_total") == 4);
    CHECK(metric(body, "cloister_invocation_errors_total{kind=\"trap\"}") == 1);
    CHECK(metric(body, "cloister_invocation_errors_total{kind=\"timeout\"}") == 1);
    CHECK(metric(body, "cloister_invocation_errors_total{kind=\"crash\"}") == 0);
    CHECK(metric(body, "cloister_invocation_errors_total{kind=\"fn_error\"}") == 1);
    CHECK(metric(body, "cloister_invocation_duration_seconds_bucket{le=\"0.00001\"}") == 0);
    CHECK(metric(body, "cloister_invocation_duration_seconds_bucket{le=\"0.00004\"}") == 3);
    CHECK(metric(body, "cloister_invocation_duration_seconds_bucket{le=\"0.16384\"}") == 3);
    CHECK(metric(body, "cloister_invocation_duration_seconds_bucket{le=\"+Inf\"}") == 4);
    CHECK(metric(body, "cloister_invocation_duration_seconds_count") == 4);
    CHECK(metric(body, "cloister_invocation_duration_seconds_sum") > 5.000074 &&
          metric(body, "cloister_invocation_duration_seconds_sum") < 5.000076);
    CHECK(metric(body, "cloister_instances_from_template_total") == 4);
    CHECK(metric(body, "cloister_build_info{version=\"9.9.9-test\"}") == 1);
    CHECK(metric(body, "cloister_store_items") == 0);
    CHECK(metric(body, "cloister_store_integrity_failures_total") == 0);
    CHECK(metric(body, "cloister_http_requests_total{code=\"2xx\"}") == 1);
    CHECK(metric(body, "cloister_http_requests_total{code=\"4xx\"}") == 1);
    CHECK(metric(body, "cloister_http_requests_total{code=\"5xx\"}") == 3);
    CHECK(strstr(body, "# TYPE cloister_invocation_duration_seconds histogram\n") != NULL);
    free(got);
    hf_close(&f);
}

/* Pipelined requests whose responses are large come back in batches: the
 * session stops after HTTP_OUT_BATCH bytes and takes the rest later. */
static void test_output_batches(void)
{
    hf f;
    hf_open(&f);
    cl_buf in;
    cl_buf_init(&in);
    for (int i = 0; i < 4; i++)
        REQUIRE(cl_buf_printf(&in, "POST /function/big HTTP/1.1\r\n\r\n") == CL_OK);
    int close = 0;
    size_t used = http_session_process(f.s, in.data, in.len, &f.out, &close);
    CHECK(used < in.len && used > 0);
    CHECK(f.out.len >= HTTP_OUT_BATCH && f.out.len < 2 * FAKE_BIG_OUTPUT);
    cl_buf_consume(&in, used);
    hf_feed(&f, in.data, in.len);
    size_t total = 0;
    char *got = hf_take(&f);
    for (const char *p = got; (p = strstr(p, "Content-Length: 1048576\r\n")); p++)
        total++;
    CHECK(total == 4);
    free(got);
    cl_buf_fini(&in, 0);
    hf_close(&f);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    RUN(test_healthz_keepalive);
    RUN(test_pipelining_any_split);
    RUN(test_malformed);
    RUN(test_limits);
    RUN(test_limits_chunked);
    RUN(test_expect_continue);
    RUN(test_routing_errors);
    RUN(test_invoke_outcomes);
    RUN(test_deploy_list_remove);
    RUN(test_deploy_progress);
    RUN(test_metrics);
    RUN(test_output_batches);
    return th_done();
}
