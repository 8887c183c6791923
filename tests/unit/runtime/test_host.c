/*
 * test_host.c - the host functions (host.c) driven directly, as wasm2c's
 * output calls them, with a fake invocation (rt_call) whose guest memory
 * is a byte array, a real store, a real lock table and real logs.
 *
 * Covers every import and its error paths: pointers outside the guest's
 * memory (EFAULT, nothing changed), empty and too long keys, the output
 * limit, not found, cas conflicts and add-if-absent, incr vivify / decr
 * floor / clamping / non-numbers, the batch get layout of function.h,
 * integrity failures through a tampered arena file, tenant isolation
 * (two namespaces, same key, different values), locks through the ABI
 * (time-outs, the invocation deadline, release at the end), and the WASI
 * subset (fd_write to the log with iovecs and line buffering, fdstat,
 * clocks, random, empty args/environ, poll_oneoff, proc_exit), plus the
 * import table itself.
 */
#include "../harness.h"
#include "../../../src/runtime/trap.h"
#include <pthread.h>

#include <fcntl.h>
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasm-rt.h>

#include <cloister/function.h>

#include "common/buf.h"
#include "common/err.h"
#include "runtime/call.h"
#include "runtime/fnlog.h"
#include "runtime/host.h"
#include "runtime/locks.h"
#include "runtime/runtime.h"
#include "store/store.h"

/* The imports, as the generated code declares them. */
struct Z_cloister_instance_t;
struct Z_wasi_snapshot_preview1_instance_t;
typedef struct Z_cloister_instance_t ci;
typedef struct Z_wasi_snapshot_preview1_instance_t wi;
uint32_t Z_cloisterZ_input(ci *, uint32_t, uint32_t);
uint32_t Z_cloisterZ_output(ci *, uint32_t, uint32_t);
uint64_t Z_cloisterZ_kv_get(ci *, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);
uint32_t Z_cloisterZ_kv_set(ci *, uint32_t, uint32_t, uint32_t, uint32_t);
uint32_t Z_cloisterZ_kv_delete(ci *, uint32_t, uint32_t);
uint32_t Z_cloisterZ_kv_cas(ci *, uint32_t, uint32_t, uint64_t, uint32_t, uint32_t);
uint32_t Z_cloisterZ_kv_incr(ci *, uint32_t, uint32_t, uint64_t, uint32_t);
uint64_t Z_cloisterZ_kv_get_many(ci *, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);
uint32_t Z_cloisterZ_lock(ci *, uint32_t, uint32_t, uint32_t);
uint32_t Z_cloisterZ_unlock(ci *, uint32_t, uint32_t);
void Z_cloisterZ_log(ci *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_write(wi *, uint32_t, uint32_t, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_read(wi *, uint32_t, uint32_t, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_close(wi *, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_seek(wi *, uint32_t, uint64_t, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_tell(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_fdstat_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_fdstat_set_flags(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_prestat_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_fd_prestat_dir_name(wi *, uint32_t, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_path_open(wi *, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t,
                                             uint64_t, uint64_t, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_args_sizes_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_args_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_environ_sizes_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_environ_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_clock_time_get(wi *, uint32_t, uint64_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_clock_res_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_random_get(wi *, uint32_t, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_poll_oneoff(wi *, uint32_t, uint32_t, uint32_t, uint32_t);
void Z_wasi_snapshot_preview1Z_proc_exit(wi *, uint32_t);
uint32_t Z_wasi_snapshot_preview1Z_sched_yield(wi *);

#define MEM_SIZE 65536u
#define MS 1000000ull
enum { KEY = 1000, KEY2 = 1400, VAL = 2000, BUF = 8000, OUT = 16000, IOV = 30000 };

static store *S;
static store_thread *ST;
static kv_thread KV;            /* ST as the host calls see it (single node) */
static rt_locks *LOCKS;
static uint8_t *mem;        /* the guest memory of the current fake call */
static uint64_t next_owner = 1;

typedef struct fake {
    rt_call call;
    uint8_t mem[MEM_SIZE];
    cl_buf out;
    rt_fnlog *log;
} fake;

/* A new invocation of tenant's function, made current. */
static fake *fake_open(const char *tenant, const char *input)
{
    fake *f = calloc(1, sizeof *f);
    REQUIRE(f != NULL);
    REQUIRE(rt_fnlog_create(0, &f->log) == CL_OK);
    cl_buf_init(&f->out);
    rt_call *c = &f->call;
    c->mem_base = f->mem;
    c->mem_size = MEM_SIZE;
    c->input = (const uint8_t *)input;
    c->input_len = input ? strlen(input) : 0;
    c->output = &f->out;
    c->max_output = 100;
    c->kv = &KV;
    c->ns_len = (size_t)snprintf((char *)c->ns, sizeof c->ns, "%ct%s/", RT_RESERVED_KEY_BYTE, tenant);
    c->max_value = store_max_value(S);
    c->locks = LOCKS;
    c->owner = next_owner++;
    c->log = f->log;
    rt_current_call = c;
    mem = f->mem;
    return f;
}

static void fake_use(fake *f)
{
    rt_current_call = &f->call;
    mem = f->mem;
}

static void fake_close(fake *f)
{
    rt_host_call_end(&f->call);
    rt_current_call = NULL;
    rt_fnlog_destroy(f->log);
    cl_buf_fini(&f->out, 0);
    free(f);
}

/* Puts bytes into guest memory at off; returns off. */
static uint32_t g(uint32_t off, const void *p, size_t n)
{
    memcpy(mem + off, p, n);
    return off;
}
static uint32_t gs(uint32_t off, const char *s) { return g(off, s, strlen(s)); }

static int64_t i64(uint64_t v) { return (int64_t)v; }
static int32_t i32(uint32_t v) { return (int32_t)v; }

static uint64_t rd64(uint32_t off)
{
    uint64_t v;
    memcpy(&v, mem + off, 8);
    return v;
}
static uint32_t rd32(uint32_t off)
{
    uint32_t v;
    memcpy(&v, mem + off, 4);
    return v;
}

/* Guest-level helpers over the imports. */
static int32_t set(const char *k, const char *v)
{
    return i32(Z_cloisterZ_kv_set(NULL, gs(KEY, k), (uint32_t)strlen(k), gs(VAL, v), (uint32_t)strlen(v)));
}
static int64_t get(const char *k, uint32_t cap)
{
    memset(mem + BUF, 0, 300);
    return i64(Z_cloisterZ_kv_get(NULL, gs(KEY, k), (uint32_t)strlen(k), BUF, cap, 0));
}
static int holds(const char *k, const char *v)
{
    size_t n = strlen(v);
    return get(k, 300) == (int64_t)n && memcmp(mem + BUF, v, n) == 0;
}

/* The log as a string (malloc()ed). */
static char *log_text(fake *f)
{
    cl_buf b;
    cl_buf_init(&b);
    REQUIRE(rt_fnlog_read(f->log, &b) == CL_OK);
    char *s = malloc(b.len + 1);
    REQUIRE(s != NULL);
    if (b.len)
        memcpy(s, b.data, b.len);
    s[b.len] = 0;
    cl_buf_fini(&b, 0);
    return s;
}

/* Log line i (0-based) without its timestamp, into out. */
static int log_line(fake *f, int i, char *out, size_t cap)
{
    char *s = log_text(f), *p = s;
    for (int k = 0; k < i && p; k++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    int ok = p && *p && strlen(p) > 25;
    if (ok) {
        p += 25;
        size_t n = strcspn(p, "\n");
        if (n >= cap)
            n = cap - 1;
        memcpy(out, p, n);
        out[n] = 0;
    } else {
        out[0] = 0;
    }
    free(s);
    return ok;
}

static uint64_t lines_of(fake *f)
{
    uint64_t n;
    rt_fnlog_counts(f->log, &n, NULL);
    return n;
}

/* ---- cloister ------------------------------------------------------------------ */

static void test_input(void)
{
    fake *f = fake_open("A", "hello");
    memset(mem + BUF, '.', 10);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, BUF, 0)), 5);
    CHECK_EQ(mem[BUF], '.');
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, BUF, 3)), 5);
    CHECK_MEM(mem + BUF, "hel.", 4);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, BUF, 100)), 5);
    CHECK_MEM(mem + BUF, "hello.", 6);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, MEM_SIZE, 0)), 5);              /* empty at the end: fine */
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, MEM_SIZE - 2, 3)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, MEM_SIZE + 1, 0)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, 0xffffffffu, 2)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, 16, 0xfffffff0u)), CLOISTER_EFAULT);
    fake_close(f);
}

static void test_output(void)
{
    fake *f = fake_open("A", NULL);
    gs(OUT, "0123456789");
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 10)), 0);
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 0)), 0);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 10)), 0);
    CHECK_EQ(f->out.len, 90);
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 11)), CLOISTER_ETOOBIG);  /* 101 > 100 */
    CHECK_EQ(f->out.len, 90);                                            /* nothing appended */
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 10)), 0);                 /* exactly 100 */
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, OUT, 1)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_output(NULL, 0xfffffff0u, 0x20)), CLOISTER_EFAULT);
    CHECK_EQ(f->out.len, 100);
    CHECK_MEM(f->out.data + 90, "0123456789", 10);
    fake_close(f);
}

static void test_kv_basic(void)
{
    fake *f = fake_open("A", NULL);
    rt_call *c = &f->call;
    CHECK_EQ(get("k", 300), CLOISTER_ENOTFOUND);
    CHECK_EQ(set("k", "value-1"), 0);
    CHECK(holds("k", "value-1"));
    /* version: written when asked, changes on every write */
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, gs(KEY, "k"), 1, BUF, 300, OUT)), 7);
    uint64_t v1 = rd64(OUT);
    CHECK(v1 != 0);
    CHECK_EQ(set("k", "value-22"), 0);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, gs(KEY, "k"), 1, BUF, 300, OUT)), 8);
    CHECK(rd64(OUT) > v1);
    /* a short buffer gets the first cap bytes, the result is the full length */
    memset(mem + BUF, '.', 8);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, gs(KEY, "k"), 1, BUF, 3, 0)), 8);
    CHECK_MEM(mem + BUF, "val.", 4);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, gs(KEY, "k"), 1, BUF, 0, 0)), 8);
    /* the store holds it under the tenant's namespace */
    uint8_t full[STORE_KEY_MAX];
    memcpy(full, c->ns, c->ns_len);
    full[c->ns_len] = 'k';
    store_meta m;
    CHECK_EQ(store_get(ST, full, c->ns_len + 1, &(store_get_opts){0}, NULL, NULL, &m), CL_OK);
    CHECK_EQ(m.len, 8);
    CHECK_EQ(store_get(ST, (const uint8_t *)"k", 1, &(store_get_opts){0}, NULL, NULL, &m), CL_ENOTFOUND);
    /* a memcached client's key "plain" is not the function's "plain" */
    store_write w = {.mode = STORE_SET};
    CHECK_EQ(store_set(ST, (const uint8_t *)"plain", 5, (const uint8_t *)"x", 1, &w, NULL), CL_OK);
    CHECK_EQ(get("plain", 300), CLOISTER_ENOTFOUND);
    /* empty values */
    CHECK_EQ(set("empty", ""), 0);
    CHECK_EQ(get("empty", 300), 0);
    /* delete */
    CHECK_EQ(i32(Z_cloisterZ_kv_delete(NULL, gs(KEY, "k"), 1)), 0);
    CHECK_EQ(get("k", 300), CLOISTER_ENOTFOUND);
    CHECK_EQ(i32(Z_cloisterZ_kv_delete(NULL, gs(KEY, "k"), 1)), CLOISTER_ENOTFOUND);
    /* binary keys are fine */
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, g(KEY, "\x00\x01\n", 3), 3, gs(VAL, "bin"), 3)), 0);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, g(KEY, "\x00\x01\n", 3), 3, BUF, 10, 0)), 3);
    fake_close(f);
}

static void test_kv_errors(void)
{
    fake *f = fake_open("A", NULL);
    rt_call *c = &f->call;
    uint32_t kmax = (uint32_t)(STORE_KEY_MAX - c->ns_len);   /* the effective key limit */
    CHECK(kmax >= STORE_KEY_MAX - RT_NS_MAX);
    memset(mem + KEY, 'k', kmax + 1);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, kmax, gs(VAL, "v"), 1)), 0);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, kmax, BUF, 10, 0)), 1);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, kmax + 1, VAL, 1)), CLOISTER_ETOOBIG);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, kmax + 1, BUF, 10, 0)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_kv_delete(NULL, KEY, kmax + 1)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_kv_incr(NULL, KEY, kmax + 1, 1, 0)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, KEY, kmax + 1, 0, VAL, 1)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, KEY, kmax + 1, 0)), CLOISTER_ETOOBIG);
    /* empty keys */
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 0, VAL, 1)), CLOISTER_EINVAL);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, 0, BUF, 10, 0)), CLOISTER_EINVAL);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, KEY, 0, 0)), CLOISTER_EINVAL);
    /* pointers outside the guest's memory; nothing is written */
    gs(KEY, "key");
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, MEM_SIZE - 1, 3, VAL, 1)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 3, MEM_SIZE - 10, 11)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 3, 0xffffffffu, 0xffffffffu)), CLOISTER_EFAULT);
    CHECK_EQ(get("key", 300), CLOISTER_ENOTFOUND);
    CHECK_EQ(set("key", "v"), 0);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, 3, MEM_SIZE - 1, 2, 0)), CLOISTER_EFAULT);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, 3, BUF, 10, MEM_SIZE - 7)), CLOISTER_EFAULT);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, KEY, 3, BUF, 10, MEM_SIZE - 8)), 1);   /* last 8 bytes: fine */
    CHECK_EQ(i32(Z_cloisterZ_kv_delete(NULL, 0xfffffffeu, 3)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, KEY, 3, 0, MEM_SIZE, 1)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_kv_incr(NULL, 0xfffffffeu, 3, 1, 0)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, 0xfffffffeu, 3, 0)), CLOISTER_EFAULT);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, 0xfffffffeu, 3)), CLOISTER_EFAULT);
    CHECK(holds("key", "v"));
    /* values larger than the limit */
    c->max_value = 16;
    memset(mem + VAL, 'v', 17);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 3, VAL, 17)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, KEY, 3, 0, VAL, 17)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 3, VAL, 16)), 0);
    c->max_value = 0;   /* then the store's own limit applies */
    CHECK_EQ(i32(Z_cloisterZ_kv_set(NULL, KEY, 3, 0, (uint32_t)store_max_value(S) + 1)), CLOISTER_ETOOBIG);
    fake_close(f);
}

static void test_kv_cas(void)
{
    fake *f = fake_open("A", NULL);
    uint32_t k = gs(KEY, "c");
    /* expected 0: only if absent */
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, k, 1, 0, gs(VAL, "first"), 5)), 0);
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, k, 1, 0, gs(VAL, "again"), 5)), CLOISTER_ECONFLICT);
    CHECK(holds("c", "first"));
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, k, 1, BUF, 10, OUT)), 5);
    uint64_t ver = rd64(OUT);
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, k, 1, ver, gs(VAL, "second"), 6)), 0);
    CHECK(holds("c", "second"));
    /* the old version no longer matches */
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, k, 1, ver, gs(VAL, "stale"), 5)), CLOISTER_ECONFLICT);
    CHECK(holds("c", "second"));
    /* a version for a key that does not exist: conflict */
    CHECK_EQ(i32(Z_cloisterZ_kv_cas(NULL, gs(KEY, "nokey"), 5, ver, gs(VAL, "x"), 1)), CLOISTER_ECONFLICT);
    CHECK_EQ(get("nokey", 10), CLOISTER_ENOTFOUND);
    fake_close(f);
}

static int64_t incr(const char *k, int64_t delta)
{
    memset(mem + OUT, 0xee, 8);
    int32_t rc = i32(Z_cloisterZ_kv_incr(NULL, gs(KEY, k), (uint32_t)strlen(k), (uint64_t)delta, OUT));
    return rc == 0 ? (int64_t)rd64(OUT) : rc - 1000000;   /* errors well apart from results */
}

static void test_kv_incr(void)
{
    fake *f = fake_open("A", NULL);
    CHECK_EQ(incr("n", 5), 5);              /* a missing key counts as 0 */
    CHECK(holds("n", "5"));
    CHECK_EQ(incr("n", 10), 15);
    CHECK_EQ(incr("n", -4), 11);
    CHECK_EQ(incr("n", -100), 0);           /* clamped at 0 */
    CHECK(holds("n", "0"));
    CHECK_EQ(incr("m", -3), 0);             /* a missing key, decremented */
    CHECK(holds("m", "0"));
    CHECK_EQ(incr("n", 0), 0);
    /* no result pointer */
    CHECK_EQ(i32(Z_cloisterZ_kv_incr(NULL, gs(KEY, "n"), 1, 7, 0)), 0);
    CHECK(holds("n", "7"));
    /* a bad result pointer changes nothing */
    CHECK_EQ(i32(Z_cloisterZ_kv_incr(NULL, gs(KEY, "n"), 1, 7, MEM_SIZE - 4)), CLOISTER_EFAULT);
    CHECK(holds("n", "7"));
    /* clamped at 2^63-1 */
    CHECK_EQ(set("big", "9223372036854775800"), 0);
    CHECK_EQ(incr("big", 100), INT64_MAX);
    CHECK(holds("big", "9223372036854775807"));
    CHECK_EQ(incr("big", INT64_MAX), INT64_MAX);
    CHECK_EQ(incr("big", -7), INT64_MAX - 7);
    CHECK_EQ(incr("big", INT64_MIN), 0);
    /* a number stored by kv_set beyond the range: clamped too, even if the add wraps */
    CHECK_EQ(set("huge", "18446744073709551615"), 0);
    CHECK_EQ(incr("huge", 5), INT64_MAX);
    CHECK(holds("huge", "9223372036854775807"));
    CHECK_EQ(set("huge", "10000000000000000000"), 0);
    CHECK_EQ(incr("huge", 1), INT64_MAX);
    /* not numbers */
    CHECK_EQ(set("s", "abc"), 0);
    CHECK_EQ(incr("s", 1), CLOISTER_ENOTNUMBER - 1000000);
    CHECK_EQ(set("s", "-5"), 0);
    CHECK_EQ(incr("s", 1), CLOISTER_ENOTNUMBER - 1000000);
    CHECK(holds("s", "-5"));
    fake_close(f);
}

/* Appends one key of the batch layout at *pos. */
static void many_key(uint32_t *pos, const char *k)
{
    uint32_t n = (uint32_t)strlen(k);
    g(*pos, &n, 4);
    g(*pos + 4, k, n);
    *pos += 4 + n;
}

static void test_kv_get_many(void)
{
    fake *f = fake_open("A", NULL);
    CHECK_EQ(set("a", "1"), 0);
    CHECK_EQ(set("b", "22"), 0);
    uint32_t pos = KEY;
    many_key(&pos, "a");
    many_key(&pos, "missing");
    many_key(&pos, "b");
    many_key(&pos, "");
    uint32_t klen = pos - KEY;
    /* the whole answer: [1]["1"] [-1] [2]["22"] [EINVAL] */
    memset(mem + BUF, '.', 64);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 4, BUF, 64)), 19);
    CHECK_EQ(i32(rd32(BUF)), 1);
    CHECK_EQ(mem[BUF + 4], '1');
    CHECK_EQ(i32(rd32(BUF + 5)), CLOISTER_ENOTFOUND);
    CHECK_EQ(i32(rd32(BUF + 9)), 2);
    CHECK_MEM(mem + BUF + 13, "22", 2);
    CHECK_EQ(i32(rd32(BUF + 15)), CLOISTER_EINVAL);
    CHECK_EQ(mem[BUF + 19], '.');
    /* a short buffer holds only the entries that fit whole */
    memset(mem + BUF, '.', 64);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 4, BUF, 8)), 19);
    CHECK_EQ(i32(rd32(BUF)), 1);
    CHECK_EQ(mem[BUF + 4], '1');
    CHECK_EQ(mem[BUF + 5], '.');
    memset(mem + BUF, '.', 64);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 4, BUF, 0)), 19);
    CHECK_EQ(mem[BUF], '.');
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 4, BUF, 14)), 19);  /* 3 entries need 15 */
    CHECK_EQ(i32(rd32(BUF + 5)), CLOISTER_ENOTFOUND);
    CHECK_EQ(mem[BUF + 9], '.');
    /* nothing asked */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, 0, 0, BUF, 64)), 0);
    /* malformed layouts */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 3, BUF, 64)), CLOISTER_EINVAL);  /* bytes left over */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 5, BUF, 64)), CLOISTER_EINVAL);  /* too few keys */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen - 1, 4, BUF, 64)), CLOISTER_EINVAL);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, 3, 1, BUF, 64)), CLOISTER_EINVAL);     /* short length */
    uint32_t huge = 0xfffffff0u;
    g(KEY2, &huge, 4);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY2, 8, 1, BUF, 64)), CLOISTER_EINVAL);    /* length past the end */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, 0, 0xffffffffu, BUF, 64)), CLOISTER_EINVAL);
    /* pointers */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, MEM_SIZE - 4, 8, 1, BUF, 64)), CLOISTER_EFAULT);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, klen, 4, MEM_SIZE - 4, 8)), CLOISTER_EFAULT);
    /* a key too long for the namespace is that entry's error */
    pos = KEY;
    uint32_t kmax = (uint32_t)(STORE_KEY_MAX - f->call.ns_len) + 1;
    g(pos, &kmax, 4);
    memset(mem + pos + 4, 'x', kmax);
    pos += 4 + kmax;
    many_key(&pos, "b");
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, pos - KEY, 2, BUF, 64)), 10);
    CHECK_EQ(i32(rd32(BUF)), CLOISTER_ETOOBIG);
    CHECK_EQ(i32(rd32(BUF + 4)), 2);
    /* a large batch stops at the invocation's deadline */
    pos = IOV;
    for (int i = 0; i < 600; i++)
        many_key(&pos, "a");
    f->call.deadline_ns = 1;   /* long past */
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, IOV, pos - IOV, 600, BUF, 64)), CLOISTER_ETIMEDOUT);
    f->call.deadline_ns = 0;
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, IOV, pos - IOV, 600, BUF, 64)), 600 * 5);
    fake_close(f);
}

/* Two tenants, the same key names, different values: neither sees nor
 * changes the other's; a guest key that spells another namespace's prefix
 * stays inside its own. */
static void test_tenant_isolation(void)
{
    fake *a = fake_open("alice", NULL);
    fake *b = fake_open("bob", NULL);
    fake_use(a);
    CHECK_EQ(set("k", "alice's"), 0);
    CHECK_EQ(incr("ctr", 1), 1);
    fake_use(b);
    CHECK_EQ(get("k", 300), CLOISTER_ENOTFOUND);
    CHECK_EQ(set("k", "bob's"), 0);
    CHECK_EQ(incr("ctr", 10), 10);
    CHECK(holds("k", "bob's"));
    fake_use(a);
    CHECK(holds("k", "alice's"));
    CHECK_EQ(incr("ctr", 1), 2);
    /* alice names bob's full store key: it is prefixed with hers */
    char spoof[32];
    int n = snprintf(spoof, sizeof spoof, "%ctbob/k", RT_RESERVED_KEY_BYTE);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, g(KEY, spoof, (size_t)n), (uint32_t)n, BUF, 300, 0)),
             CLOISTER_ENOTFOUND);
    /* batch get sees only alice's */
    uint32_t pos = KEY;
    many_key(&pos, "k");
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, pos - KEY, 1, BUF, 64)), 11);
    CHECK_MEM(mem + BUF + 4, "alice's", 7);
    /* deleting is per tenant too */
    CHECK_EQ(i32(Z_cloisterZ_kv_delete(NULL, gs(KEY, "k"), 1)), 0);
    fake_use(b);
    CHECK(holds("k", "bob's"));
    /* the same lock name in two tenants is two locks */
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    fake_use(a);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "L"), 1)), 0);
    fake_use(b);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "L"), 1)), 0);
    fake_close(a);
    fake_close(b);
}

static void test_locks(void)
{
    fake *a = fake_open("A", NULL);
    fake *b = fake_open("A", NULL);   /* same tenant, another invocation */
    fake_use(a);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);   /* already ours */
    fake_use(b);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), CLOISTER_ETIMEDOUT);
    uint64_t t0 = rt_locks_now_ns();
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 50)), CLOISTER_ETIMEDOUT);
    uint64_t waited = rt_locks_now_ns() - t0;
    CHECK(waited >= 50 * MS && waited < 3000 * MS);
    /* the invocation's deadline cuts a long wait short */
    b->call.deadline_ns = rt_locks_now_ns() + 40 * MS;
    t0 = rt_locks_now_ns();
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 60000)), CLOISTER_ETIMEDOUT);
    waited = rt_locks_now_ns() - t0;
    CHECK(waited >= 30 * MS && waited < 3000 * MS);
    b->call.deadline_ns = 0;
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "L"), 1)), CLOISTER_ENOTHELD);   /* not b's */
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "nope"), 4)), CLOISTER_ENOTHELD);
    fake_use(a);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "L"), 1)), 0);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "L"), 1)), CLOISTER_ENOTHELD);
    fake_use(b);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    /* the end of the invocation releases what it still holds */
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "M"), 1, 0)), 0);
    fake_close(b);
    fake_use(a);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "M"), 1, 0)), 0);
    /* no lock table: unavailable */
    a->call.locks = NULL;
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "N"), 1, 0)), CLOISTER_EUNAVAILABLE);
    CHECK_EQ(i32(Z_cloisterZ_unlock(NULL, gs(KEY, "N"), 1)), CLOISTER_ENOTHELD);
    a->call.locks = LOCKS;
    fake_close(a);
    fake *c = fake_open("A", NULL);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "L"), 1, 0)), 0);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, gs(KEY, "M"), 1, 0)), 0);
    fake_close(c);
}

static void test_log(void)
{
    fake *f = fake_open("A", NULL);
    char line[2048];
    Z_cloisterZ_log(NULL, gs(OUT, "hello log"), 9);
    Z_cloisterZ_log(NULL, OUT, 0);
    Z_cloisterZ_log(NULL, MEM_SIZE - 1, 2);
    CHECK_EQ(lines_of(f), 3);
    CHECK(log_line(f, 0, line, sizeof line) && strcmp(line, "hello log") == 0);
    CHECK(log_line(f, 2, line, sizeof line) && strstr(line, "outside") != NULL);
    f->call.log = NULL;   /* no log: dropped, no crash */
    Z_cloisterZ_log(NULL, OUT, 9);
    f->call.log = f->log;
    CHECK_EQ(lines_of(f), 3);
    fake_close(f);
}

/* Integrity failures reach the guest as CLOISTER_EINTEGRITY. */
static void test_integrity(void)
{
    char dir[] = "/tmp/cl-test-host-XXXXXX";
    REQUIRE(mkdtemp(dir) != NULL);
    char path[64];
    snprintf(path, sizeof path, "%s/arena", dir);
    store_config cfg = {.memory_bytes = 2u << 20, .max_value = 4096, .arena_file = path};
    store *s;
    store_thread *t;
    REQUIRE(store_create(&cfg, &s) == CL_OK);
    REQUIRE(store_thread_create(s, &t) == CL_OK);
    fake *f = fake_open("A", NULL);
    kv_thread kt;
    kv_thread_init(&kt, s, t, NULL);
    f->call.kv = &kt;
    CHECK_EQ(set("n", "12345678901234"), 0);
    /* the only value in the arena: flip every byte of it */
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    struct stat sb;
    REQUIRE(fstat(fd, &sb) == 0);
    uint8_t *a = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    REQUIRE(a != MAP_FAILED);
    size_t flipped = 0;
    for (size_t i = 0; i < (size_t)sb.st_size && flipped < 64; i++) {
        if (a[i]) {
            a[i] ^= 0x20;
            flipped++;
        }
    }
    munmap(a, (size_t)sb.st_size);
    close(fd);
    CHECK(flipped > 0);
    CHECK_EQ(get("n", 300), CLOISTER_EINTEGRITY);
    CHECK_EQ(incr("n", 1), CLOISTER_EINTEGRITY - 1000000);
    uint32_t pos = KEY;
    many_key(&pos, "n");
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, KEY, pos - KEY, 1, BUF, 64)), 4);
    CHECK_EQ(i32(rd32(BUF)), CLOISTER_EINTEGRITY);
    CHECK_EQ(set("n", "1"), 0);   /* a write heals it */
    CHECK(holds("n", "1"));
    fake_close(f);
    kv_thread_fini(&kt);
    store_thread_destroy(t);
    store_destroy(s);
    unlink(path);
    rmdir(dir);
}

/* ---- WASI ---------------------------------------------------------------------- */

/* Writes iovecs over the given strings to fd; returns the errno, *n the count. */
static uint32_t wasi_write(uint32_t fd, const char **parts, int nparts, uint32_t *n)
{
    uint32_t data = IOV + 1024;
    for (int i = 0; i < nparts; i++) {
        uint32_t len = (uint32_t)strlen(parts[i]);
        uint32_t iov[2] = {data, len};
        g(IOV + 8 * (uint32_t)i, iov, 8);
        g(data, parts[i], len);
        data += len;
    }
    uint32_t err = Z_wasi_snapshot_preview1Z_fd_write(NULL, fd, IOV, (uint32_t)nparts, OUT);
    *n = rd32(OUT);
    return err;
}

static void test_wasi_fd_write(void)
{
    fake *f = fake_open("A", NULL);
    char line[2048];
    uint32_t n = 0;
    const char *p1[] = {"hel", "lo\nwor", "ld\n", "part"};
    CHECK_EQ(wasi_write(1, p1, 4, &n), 0);
    CHECK_EQ(n, 16);
    CHECK_EQ(lines_of(f), 2);
    CHECK(log_line(f, 0, line, sizeof line) && strcmp(line, "hello") == 0);
    CHECK(log_line(f, 1, line, sizeof line) && strcmp(line, "world") == 0);
    /* stderr has its own line buffer */
    const char *p2[] = {"err"};
    CHECK_EQ(wasi_write(2, p2, 1, &n), 0);
    const char *p3[] = {"ial\n"};
    CHECK_EQ(wasi_write(1, p3, 1, &n), 0);
    CHECK(log_line(f, 2, line, sizeof line) && strcmp(line, "partial") == 0);
    /* bad fds and pointers: nothing logged */
    CHECK_EQ(wasi_write(3, p3, 1, &n), 8);                      /* EBADF */
    CHECK_EQ(wasi_write(0, p3, 1, &n), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, MEM_SIZE - 4, 1, OUT), 21);  /* EFAULT */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, IOV, 1, MEM_SIZE - 2), 21);
    uint32_t bad[2] = {MEM_SIZE - 2, 4};
    g(IOV, bad, 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, IOV, 1, OUT), 21);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, IOV, 1025, OUT), 28);        /* EINVAL */
    CHECK_EQ(lines_of(f), 3);
    /* zero iovecs */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, IOV, 0, OUT), 0);
    CHECK_EQ(rd32(OUT), 0);
    /* a long line is logged in pieces of RT_LOG_LINE_MAX */
    uint32_t iov[2] = {BUF, 2500};
    g(IOV, iov, 8);
    memset(mem + BUF, 'x', 2500);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, IOV, 1, OUT), 0);
    CHECK_EQ(rd32(OUT), 2500);
    CHECK_EQ(lines_of(f), 5);
    CHECK(log_line(f, 3, line, sizeof line) && strlen(line) == RT_LOG_LINE_MAX);
    /* the end of the invocation logs what is left: stdout's 452 x, stderr's "err" */
    rt_host_call_end(&f->call);
    CHECK_EQ(lines_of(f), 7);
    CHECK(log_line(f, 5, line, sizeof line) && strlen(line) == 2500 - 2 * RT_LOG_LINE_MAX);
    CHECK(log_line(f, 6, line, sizeof line) && strcmp(line, "err") == 0);
    rt_host_call_end(&f->call);
    CHECK_EQ(lines_of(f), 7);
    /* a long line ended by a newline in the same write: pieces too; an
     * exactly full line is one line; empty lines are kept */
    memset(mem + BUF, 'y', 2100);
    mem[BUF + 2100] = '\n';
    memset(mem + BUF + 2101, 'z', RT_LOG_LINE_MAX);
    mem[BUF + 2101 + RT_LOG_LINE_MAX] = '\n';
    mem[BUF + 2102 + RT_LOG_LINE_MAX] = '\n';
    iov[1] = 2103 + RT_LOG_LINE_MAX;
    g(IOV, iov, 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 2, IOV, 1, OUT), 0);
    CHECK_EQ(lines_of(f), 12);
    CHECK(log_line(f, 7, line, sizeof line) && strlen(line) == RT_LOG_LINE_MAX && line[0] == 'y');
    CHECK(log_line(f, 9, line, sizeof line) && strlen(line) == 2100 - 2 * RT_LOG_LINE_MAX);
    CHECK(log_line(f, 10, line, sizeof line) && strlen(line) == RT_LOG_LINE_MAX && line[0] == 'z');
    CHECK(log_line(f, 11, line, sizeof line) && strlen(line) == 0);
    fake_close(f);
}

static void test_wasi_fds(void)
{
    fake *f = fake_open("A", NULL);
    /* stdio are character devices without seek/tell: wasi-libc sees a tty */
    for (uint32_t fd = 0; fd <= 2; fd++) {
        memset(mem + OUT, 0xee, 24);
        CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_get(NULL, fd, OUT), 0);
        CHECK_EQ(mem[OUT], 2);
        CHECK_EQ(mem[OUT + 2] | mem[OUT + 3], 0);
        uint64_t rights = rd64(OUT + 8);
        CHECK(rights & (fd == 0 ? 1u << 1 : 1u << 6));
        CHECK((rights & ((1u << 2) | (1u << 5))) == 0);   /* no FD_SEEK, FD_TELL */
        CHECK_EQ(rd64(OUT + 16), 0);
    }
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_get(NULL, 3, OUT), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_get(NULL, 1, MEM_SIZE - 23), 21);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_set_flags(NULL, 1, 0), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_set_flags(NULL, 1, 4), 58);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_fdstat_set_flags(NULL, 7, 0), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_prestat_get(NULL, 3, OUT), 8);  /* no preopens */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_prestat_dir_name(NULL, 3, OUT, 10), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_path_open(NULL, 3, 0, OUT, 1, 0, 0, 0, 0, OUT), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_seek(NULL, 1, 0, 1, OUT), 70);  /* ESPIPE */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_seek(NULL, 5, 0, 1, OUT), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_tell(NULL, 2, OUT), 70);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_close(NULL, 1), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_close(NULL, 9), 8);
    /* stdin: end of file */
    uint32_t iov[2] = {BUF, 100};
    g(IOV, iov, 8);
    memset(mem + OUT, 0xee, 4);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_read(NULL, 0, IOV, 1, OUT), 0);
    CHECK_EQ(rd32(OUT), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_read(NULL, 1, IOV, 1, OUT), 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_read(NULL, 0, IOV, 1, MEM_SIZE), 21);
    /* empty args and environment */
    memset(mem + OUT, 0xee, 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_args_sizes_get(NULL, OUT, OUT + 4), 0);
    CHECK_EQ(rd64(OUT), 0);
    memset(mem + OUT, 0xee, 8);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_environ_sizes_get(NULL, OUT, OUT + 4), 0);
    CHECK_EQ(rd64(OUT), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_args_sizes_get(NULL, OUT, MEM_SIZE - 3), 21);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_args_get(NULL, OUT, OUT + 8), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_environ_get(NULL, OUT, OUT + 8), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_sched_yield(NULL), 0);
    fake_close(f);
}

static void test_wasi_clock_random(void)
{
    fake *f = fake_open("A", NULL);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 0, 1, OUT), 0);
    uint64_t real = rd64(OUT);
    uint64_t now = (uint64_t)time(NULL) * 1000000000ull;
    CHECK(real > now - 5000 * MS && real < now + 5000 * MS);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 1, 1, OUT), 0);
    uint64_t m1 = rd64(OUT);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 1, 1, OUT), 0);
    CHECK(rd64(OUT) >= m1 && m1 > 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 2, 1, OUT), 28);   /* process CPU time: no */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 0, 1, MEM_SIZE - 7), 21);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_res_get(NULL, 1, OUT), 0);
    CHECK(rd64(OUT) >= 1 && rd64(OUT) <= 1000000);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_res_get(NULL, 7, OUT), 28);
    /* random: filled, different each time, bounds checked */
    memset(mem + BUF, 0, 128);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_random_get(NULL, BUF, 64), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_random_get(NULL, BUF + 64, 64), 0);
    CHECK(memcmp(mem + BUF, mem + BUF + 64, 64) != 0);
    static const uint8_t zero[64];
    CHECK(memcmp(mem + BUF, zero, 64) != 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_random_get(NULL, BUF, 0), 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_random_get(NULL, MEM_SIZE - 10, 11), 21);
    fake_close(f);
}

/* One poll_oneoff subscription at in + 48 * i. */
static void sub_clock(uint32_t in, int i, uint64_t userdata, uint32_t clock, uint64_t timeout, uint16_t flags)
{
    uint8_t s[48] = {0};
    memcpy(s, &userdata, 8);
    s[8] = 0;
    memcpy(s + 16, &clock, 4);
    memcpy(s + 24, &timeout, 8);
    memcpy(s + 40, &flags, 2);
    g(in + 48 * (uint32_t)i, s, 48);
}

static void sub_fd(uint32_t in, int i, uint64_t userdata, uint8_t type, uint32_t fd)
{
    uint8_t s[48] = {0};
    memcpy(s, &userdata, 8);
    s[8] = type;
    memcpy(s + 16, &fd, 4);
    g(in + 48 * (uint32_t)i, s, 48);
}

static void test_wasi_poll(void)
{
    fake *f = fake_open("A", NULL);
    /* a 30 ms sleep (what nanosleep does) */
    sub_clock(KEY, 0, 77, 1, 30 * MS, 0);
    uint64_t t0 = rt_locks_now_ns();
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 1, OUT), 0);
    uint64_t slept = rt_locks_now_ns() - t0;
    CHECK(slept >= 30 * MS && slept < 3000 * MS);
    CHECK_EQ(rd32(OUT), 1);
    CHECK_EQ(rd64(BUF), 77);
    CHECK_EQ(mem[BUF + 8] | mem[BUF + 9], 0);   /* error */
    CHECK_EQ(mem[BUF + 10], 0);                 /* clock */
    /* an absolute realtime deadline in the past: at once */
    sub_clock(KEY, 0, 5, 0, 1000, 1);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 1, OUT), 0);
    CHECK_EQ(rd32(OUT), 1);
    /* fds are ready at once; a long clock beside them does not fire */
    sub_clock(KEY, 0, 1, 1, 60000 * MS, 0);
    sub_fd(KEY, 1, 2, 1, 0);     /* stdin readable (end of file) */
    sub_fd(KEY, 2, 3, 2, 1);     /* stdout writable */
    sub_fd(KEY, 3, 4, 1, 9);     /* fd 9: EBADF */
    t0 = rt_locks_now_ns();
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 4, OUT), 0);
    CHECK(rt_locks_now_ns() - t0 < 1000 * MS);
    CHECK_EQ(rd32(OUT), 3);
    CHECK_EQ(rd64(BUF), 2);
    CHECK_EQ(mem[BUF + 10], 1);
    CHECK_EQ(mem[BUF + 24], 1);                 /* hangup */
    CHECK_EQ(rd64(BUF + 32), 3);
    CHECK_EQ(rd64(BUF + 64), 4);
    CHECK_EQ(mem[BUF + 64 + 8], 8);             /* EBADF */
    /* the invocation's deadline ends a long sleep */
    f->call.deadline_ns = rt_locks_now_ns() + 40 * MS;
    sub_clock(KEY, 0, 1, 1, 60000 * MS, 0);
    t0 = rt_locks_now_ns();
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 1, OUT), 0);
    CHECK(rt_locks_now_ns() - t0 < 3000 * MS);
    CHECK_EQ(rd32(OUT), 0);
    f->call.deadline_ns = 0;
    /* bad input */
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 0, OUT), 28);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 100000, OUT), 28);
    sub_fd(KEY, 0, 1, 9, 0);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, BUF, 1, OUT), 28);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, MEM_SIZE - 40, BUF, 1, OUT), 21);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_poll_oneoff(NULL, KEY, MEM_SIZE - 31, 1, OUT), 21);
    fake_close(f);
}

/* proc_exit unwinds the guest through the sandbox's trap path: run it as
 * guest code on a thread set up for that, as the executor threads are. */
static void call_proc_exit(void *arg)
{
    (void)arg;
    Z_wasi_snapshot_preview1Z_proc_exit(NULL, 3);
}

static void *proc_exit_thread(void *arg)
{
    fake *f = arg;
    rt_current_call = &f->call;
    if (rt_trap_thread_init() != CL_OK)
        return (void *)(intptr_t)-1;
    int code = rt_trap_run(call_proc_exit, NULL, 0);
    rt_trap_thread_fini();
    rt_current_call = NULL;
    return (void *)(intptr_t)code;
}

static void test_wasi_proc_exit(void)
{
    fake *f = fake_open("A", NULL);
    pthread_t th;
    void *ret = NULL;
    REQUIRE(pthread_create(&th, NULL, proc_exit_thread, f) == 0);
    pthread_join(th, &ret);
    CHECK_EQ((intptr_t)ret, RT_TRAP_EXIT);
    CHECK_EQ(f->call.exited, 1);
    CHECK_EQ(f->call.exit_code, 3);
    fake_close(f);
}

/* Guest code running outside an invocation gets errors, never a crash. */
static void test_no_call(void)
{
    rt_current_call = NULL;
    CHECK_EQ(i32(Z_cloisterZ_input(NULL, 0, 0)), CLOISTER_EUNAVAILABLE);
    CHECK_EQ(i64(Z_cloisterZ_kv_get(NULL, 0, 1, 0, 0, 0)), CLOISTER_EUNAVAILABLE);
    CHECK_EQ(i64(Z_cloisterZ_kv_get_many(NULL, 0, 0, 0, 0, 0)), CLOISTER_EUNAVAILABLE);
    CHECK_EQ(i32(Z_cloisterZ_lock(NULL, 0, 1, 0)), CLOISTER_EUNAVAILABLE);
    Z_cloisterZ_log(NULL, 0, 1);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_fd_write(NULL, 1, 0, 0, 0), 52);
    CHECK_EQ(Z_wasi_snapshot_preview1Z_clock_time_get(NULL, 0, 0, 0), 52);
}

static void test_import_table(void)
{
    const rt_import *im = rt_import_find("cloister", 8, "kv_get", 6);
    REQUIRE(im != NULL);
    CHECK(strcmp(im->signature, "iiiii:I") == 0);
    CHECK(im->fn == (void (*)(void))Z_cloisterZ_kv_get);
    im = rt_import_find("cloister_x", 8, "kv_getX", 6);   /* lengths, not NULs */
    CHECK(im != NULL);
    im = rt_import_find("wasi_snapshot_preview1", 22, "proc_exit", 9);
    REQUIRE(im != NULL);
    CHECK(strcmp(im->signature, "i:") == 0);
    CHECK(rt_import_find("cloister", 8, "fork", 4) == NULL);
    CHECK(rt_import_find("cloister", 8, "kv_ge", 5) == NULL);
    CHECK(rt_import_find("wasi_snapshot_preview1", 22, "sock_accept", 11) == NULL);
    CHECK(rt_import_find("wasi_unstable", 13, "fd_write", 8) == NULL);
    CHECK(rt_import_find("env", 3, "kv_get", 6) == NULL);
    /* every entry: known module, a function, a well-formed signature, unique */
    static const char *cl_names[] = {"input", "output", "kv_get", "kv_set", "kv_delete", "kv_cas",
                                     "kv_incr", "kv_get_many", "lock", "unlock", "log"};
    size_t ncl = 0;
    for (size_t i = 0; i < rt_nimports; i++) {
        const rt_import *e = &rt_imports[i];
        CHECK(strcmp(e->module, "cloister") == 0 || strcmp(e->module, "wasi_snapshot_preview1") == 0);
        CHECK(e->fn != NULL);
        CHECK(strspn(e->signature, "iIfF:") == strlen(e->signature) && strchr(e->signature, ':'));
        ncl += strcmp(e->module, "cloister") == 0;
        for (size_t j = i + 1; j < rt_nimports; j++)
            CHECK(strcmp(e->module, rt_imports[j].module) || strcmp(e->name, rt_imports[j].name));
        CHECK(rt_import_find(e->module, strlen(e->module), e->name, strlen(e->name)) == e);
    }
    CHECK_EQ(ncl, sizeof cl_names / sizeof cl_names[0]);
    for (size_t i = 0; i < sizeof cl_names / sizeof cl_names[0]; i++)
        CHECK(rt_import_find("cloister", 8, cl_names[i], strlen(cl_names[i])) != NULL);
}

int main(void)
{
    store_config cfg = {.memory_bytes = 4u << 20, .max_value = 16 * 1024};
    REQUIRE(store_create(&cfg, &S) == CL_OK);
    REQUIRE(store_thread_create(S, &ST) == CL_OK);
    kv_thread_init(&KV, S, ST, NULL);
    REQUIRE(rt_locks_create(0, &LOCKS) == CL_OK);

    RUN(test_input);
    RUN(test_output);
    RUN(test_kv_basic);
    RUN(test_kv_errors);
    RUN(test_kv_cas);
    RUN(test_kv_incr);
    RUN(test_kv_get_many);
    RUN(test_tenant_isolation);
    RUN(test_locks);
    RUN(test_log);
    RUN(test_integrity);
    RUN(test_wasi_fd_write);
    RUN(test_wasi_fds);
    RUN(test_wasi_clock_random);
    RUN(test_wasi_poll);
    RUN(test_wasi_proc_exit);
    RUN(test_no_call);
    RUN(test_import_table);

    rt_locks_destroy(LOCKS);
    kv_thread_fini(&KV);
    store_thread_destroy(ST);
    store_destroy(S);
    return th_done();
}
