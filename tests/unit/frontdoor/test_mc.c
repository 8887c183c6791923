/*
 * test_mc.c - the memcached front door as a whole: the net_proto vtable the
 * event loop uses, stats and stats settings, and what a client sees when
 * the untrusted arena is tampered with (CL_EINTEGRITY).
 */
#include "test_mc_fixture.h"

#include <fcntl.h>
#include <inttypes.h>

#include "common/log.h"

static void test_net_proto(void)
{
    store_config cfg = { .memory_bytes = 4u << 20, .max_value = 100000 };
    store *st;
    int rc = store_create(&cfg, &st);
    REQUIRE(rc == CL_OK);
    mc_context ctx = { .store = st, .version = "1.2.3" };
    const net_proto *p = &mc_net_proto;
    CHECK(strcmp(p->name, "memcached") == 0);
    CHECK(p->session_size >= sizeof(mc_session));
    CHECK(p->max_pending >= mc_max_pending(&ctx));
    CHECK(mc_max_pending(&ctx) >= 100000 + MC_LINE_MAX_GET);

    void *ts = p->thread_init(&ctx, 0);
    REQUIRE(ts != NULL);
    void *sess = calloc(1, p->session_size);
    REQUIRE(sess != NULL);
    p->session_init(sess, ts);
    cl_buf out;
    cl_buf_init(&out);
    int close = 0;
    size_t want = 0;
    static const char in[] = "set k 0 0 1\r\nv\r\nget k\r\nversion\r\nset p 0 0 5\r\nab";
    size_t used = p->process(sess, ts, (const uint8_t *)in, sizeof in - 1, &out, &close, &want);
    CHECK_EQ(used, sizeof in - 1 - 15);   /* the pending set stays */
    CHECK_EQ(want, 13 + 5 + 2);
    CHECK(!close);
    static const char rep[] = "STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\nVERSION 1.2.3\r\n";
    CHECK(out.len == sizeof rep - 1 && memcmp(out.data, rep, out.len) == 0);
    out.len = 0;
    used = p->process(sess, ts, (const uint8_t *)"quit\r\nget k\r\n", 13, &out, &close, &want);
    CHECK_EQ(used, 6);
    CHECK(close);
    CHECK_EQ(out.len, 0);
    p->session_fini(sess, ts);
    free(sess);
    p->thread_fini(ts);
    cl_buf_fini(&out, 0);
    store_destroy(st);
}

/* A pipeline of big gets is answered in batches the loop can write out. */
static void test_output_batches(void)
{
    mcf f;
    mcf_open(&f);
    char line[64];
    snprintf(line, sizeof line, "set v 0 0 %u\r\n", MCF_MAX_VALUE);
    mcf_feed_str(&f, line);
    char *val = malloc(MCF_MAX_VALUE);
    REQUIRE(val != NULL);
    memset(val, 'v', MCF_MAX_VALUE);
    mcf_feed(&f, val, MCF_MAX_VALUE);
    free(val);
    MCF_EXPECT(&f, "\r\n", "STORED\r\n");

    static const char gets[] = "get v\r\nget v\r\nget v\r\nget v\r\nget v\r\nget v\r\nmn\r\n";
    cl_buf out;
    cl_buf_init(&out);
    int close = 0;
    size_t want = 0, done = 0, calls = 0;
    while (done < sizeof gets - 1) {
        size_t used = mc_session_process(&f.sess, (const uint8_t *)gets + done,
                                         sizeof gets - 1 - done, &out, &close, &want);
        REQUIRE(used > 0);
        if (done + used < sizeof gets - 1)
            CHECK(out.len >= MC_OUT_BATCH * (calls + 1));  /* stopped only after a batch */
        done += used;
        calls++;
    }
    CHECK(calls >= 2);
    size_t one = 17 + MCF_MAX_VALUE + 2 + 5;   /* "VALUE v 0 65536\r\n" ... "END\r\n" */
    CHECK_EQ(out.len, 6 * one + 4);
    CHECK(memcmp(out.data + out.len - 4, "MN\r\n", 4) == 0);
    cl_buf_fini(&out, 0);
    mcf_close(&f);
}

static void conn_stats(void *arg, uint64_t *curr, uint64_t *total)
{
    *curr = 3;
    *total = *(uint64_t *)arg;
}

/* Value of a STAT line, or NULL. */
static const char *stat_value(const char *s, const char *name, char *buf, size_t cap)
{
    char pat[80];
    snprintf(pat, sizeof pat, "STAT %s ", name);
    const char *p = strstr(s, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    size_t n = strcspn(p, "\r");
    if (n >= cap)
        return NULL;
    memcpy(buf, p, n);
    buf[n] = 0;
    return buf;
}

static int stats_well_formed(const char *s)
{
    size_t len = strlen(s);
    if (len < 5 || strcmp(s + len - 5, "END\r\n") != 0)
        return 0;
    for (const char *p = s; p < s + len - 5;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol || strncmp(p, "STAT ", 5) != 0)
            return 0;
        const char *sp = memchr(p + 5, ' ', (size_t)(eol - p - 5));
        if (!sp || sp == p + 5 || sp + 1 == eol || memchr(sp + 1, ' ', (size_t)(eol - sp - 1)))
            return 0;   /* exactly "STAT name value" */
        p = eol + 2;
    }
    return 1;
}

static void test_stats(void)
{
    mcf f;
    mcf_open(&f);
    uint64_t total = 42;
    f.ctx.conn_stats = conn_stats;
    f.ctx.conn_stats_arg = &total;
    f.ctx.tls = 1;
    f.ctx.threads = 4;
    MCF_EXPECT(&f, "set a 0 0 3\r\nabc\r\nset b 0 0 1\r\nx\r\nget a b c\r\n",
               "STORED\r\nSTORED\r\nVALUE a 0 3\r\nabc\r\nVALUE b 0 1\r\nx\r\nEND\r\n");
    MCF_EXPECT(&f, "delete b\r\ndelete b\r\nincr a 1\r\nbogus\r\n",
               "DELETED\r\nNOT_FOUND\r\n"
               "CLIENT_ERROR cannot increment or decrement non-numeric value\r\nERROR\r\n");
    char line[100];
    snprintf(line, sizeof line, "set big 0 0 %u noreply\r\n", MCF_MAX_VALUE + 1);
    MCF_EXPECT(&f, line, "");
    mcf_reconnect(&f);

    mcf_feed_str(&f, "stats\r\n");
    char *s = mcf_take(&f);
    CHECK(stats_well_formed(s));
    char v[64];
    struct { const char *name, *value; } want[] = {
        { "pid", NULL }, { "uptime", NULL }, { "time", NULL }, { "version", "9.9.9-test" },
        { "pointer_size", "64" }, { "rusage_user", NULL }, { "rusage_system", NULL },
        { "curr_connections", "3" }, { "total_connections", "42" },
        { "cmd_get", "3" }, { "cmd_set", NULL }, { "cmd_flush", "0" }, { "cmd_touch", "0" },
        { "get_hits", "2" }, { "get_misses", "1" }, { "get_expired", "0" }, { "get_flushed", "0" },
        { "delete_hits", "1" }, { "delete_misses", "1" }, { "incr_hits", "0" },
        { "incr_misses", NULL }, { "decr_hits", "0" }, { "decr_misses", "0" },
        { "cas_hits", "0" }, { "cas_misses", "0" }, { "cas_badval", "0" },
        { "touch_hits", "0" }, { "touch_misses", "0" }, { "store_too_large", "1" },
        { "bytes", "3" }, { "curr_items", "1" }, { "total_items", NULL },
        { "evictions", "0" }, { "reclaimed", NULL }, { "limit_maxbytes", "8388608" },
        { "threads", "4" }, { "trusted_bytes", NULL }, { "trusted_limit", NULL },
        { "untrusted_bytes", NULL }, { "integrity_failures", "0" }, { "out_of_memory", "0" },
        { "tls", "1" }, { "client_errors", "2" },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *got = stat_value(s, want[i].name, v, sizeof v);
        th_check(got != NULL, __FILE__, __LINE__, want[i].name);
        if (got && want[i].value && strcmp(got, want[i].value) != 0) {
            fprintf(stderr, "     STAT %s is %s, want %s\n", want[i].name, got, want[i].value);
            th_check(0, __FILE__, __LINE__, want[i].name);
        }
    }
    CHECK(stat_value(s, "uptime", v, sizeof v) && atoi(v) >= 5);
    CHECK(stat_value(s, "rusage_user", v, sizeof v) && strchr(v, '.') != NULL);
    CHECK(stat_value(s, "untrusted_bytes", v, sizeof v) && atoll(v) > 0);
    free(s);

    mcf_feed_str(&f, "stats settings\r\n");
    s = mcf_take(&f);
    CHECK(stats_well_formed(s));
    CHECK(stat_value(s, "item_size_max", v, sizeof v) && atoi(v) == MCF_MAX_VALUE);
    CHECK(stat_value(s, "maxbytes", v, sizeof v) && strcmp(v, "8388608") == 0);
    CHECK(stat_value(s, "evictions", v, sizeof v) && strcmp(v, "off") == 0);
    CHECK(stat_value(s, "ssl_enabled", v, sizeof v) && strcmp(v, "yes") == 0);
    CHECK(stat_value(s, "num_threads", v, sizeof v) && strcmp(v, "4") == 0);
    free(s);

    MCF_EXPECT(&f, "stats items\r\nstats settings x\r\nstats reset\r\n", "ERROR\r\nERROR\r\nERROR\r\n");
    MCF_EXPECT(&f, "flush_all\r\n", "OK\r\n");
    mcf_feed_str(&f, "stats\r\n");
    s = mcf_take(&f);
    CHECK(stat_value(s, "cmd_flush", v, sizeof v) && strcmp(v, "1") == 0);
    free(s);
    mcf_close(&f);
}

/* ---- tampering ------------------------------------------------------------------- */

#define INTEGRITY "SERVER_ERROR integrity check failed: stored value was altered, moved or rolled back"

static uint8_t *file_read(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    off_t size = lseek(fd, 0, SEEK_END);
    REQUIRE(size > 0);
    uint8_t *p = malloc((size_t)size);
    REQUIRE(p != NULL);
    ssize_t r = pread(fd, p, (size_t)size, 0);
    REQUIRE(r == size);
    close(fd);
    *n = (size_t)size;
    return p;
}

/* Flips every byte that differs between two snapshots: exactly the sealed
 * chunk written in between. */
static size_t flip_changes(const char *path, const uint8_t *before, const uint8_t *after, size_t n)
{
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    size_t flipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (before[i] == after[i])
            continue;
        uint8_t b = (uint8_t)(after[i] ^ 0x5a);
        ssize_t w = pwrite(fd, &b, 1, (off_t)i);
        REQUIRE(w == 1);
        flipped++;
    }
    close(fd);
    return flipped;
}

static void test_integrity(void)
{
    char path[] = "/tmp/cloister-test-mc-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    mcf f;
    mcf_open_cfg(&f, MCF_MAX_VALUE, path);
    MCF_EXPECT(&f, "set good 3 0 5\r\nfine!\r\nset num 0 0 2\r\n41\r\n", "STORED\r\nSTORED\r\n");
    size_t n;
    uint8_t *before = file_read(path, &n);
    MCF_EXPECT(&f, "set bad 0 0 40\r\n0123456789012345678901234567890123456789\r\n", "STORED\r\n");
    size_t n2;
    uint8_t *after = file_read(path, &n2);
    REQUIRE(n == n2);
    /* each ciphertext byte equals the old byte with probability 1/256 */
    CHECK(flip_changes(path, before, after, n) >= 30);
    free(before);
    free(after);

    /* the whole multi-get answer is one error line: no partial VALUEs, no END */
    MCF_EXPECT(&f, "get good bad good\r\n", INTEGRITY "\r\n");
    MCF_EXPECT(&f, "gets bad\r\n", INTEGRITY "\r\n");
    MCF_EXPECT(&f, "get good nope\r\n", "VALUE good 3 5\r\nfine!\r\nEND\r\n");
    MCF_EXPECT(&f, "mg bad v\r\n", INTEGRITY "\r\n");
    MCF_EXPECT(&f, "mg bad s\r\n", "HD s40\r\n");   /* metadata is trusted: no decryption */
    MCF_EXPECT(&f, "append bad 0 0 1\r\nx\r\n", INTEGRITY "\r\n");
    MCF_EXPECT(&f, "ms bad 1 MP\r\nx\r\n", INTEGRITY "\r\n");
    MCF_EXPECT(&f, "get bad\r\n", INTEGRITY "\r\n");   /* nothing changed */
    MCF_EXPECT(&f, "incr num 1\r\n", "42\r\n");

    /* a sealed number tampered with: incr and ma fail the same way */
    before = file_read(path, &n);
    MCF_EXPECT(&f, "set num2 0 0 20\r\n00000000000000000010\r\n", "STORED\r\n");
    after = file_read(path, &n2);
    CHECK(flip_changes(path, before, after, n) >= 10);
    free(before);
    free(after);
    MCF_EXPECT(&f, "incr num2 1\r\nma num2 v\r\n", INTEGRITY "\r\n" INTEGRITY "\r\n");

    /* overwriting repairs the key; the counter recorded the failures */
    MCF_EXPECT(&f, "set bad 0 0 2\r\nok\r\nget bad\r\n", "STORED\r\nVALUE bad 0 2\r\nok\r\nEND\r\n");
    mcf_feed_str(&f, "stats\r\n");
    char *s = mcf_take(&f);
    const char *p = strstr(s, "STAT integrity_failures ");
    CHECK(p && atoi(p + 24) >= 1);
    free(s);
    mcf_close(&f);
    unlink(path);
}

int main(void)
{
    cl_log_set_level(-1);   /* integrity failures log at ERROR: keep the output clean */
    RUN(test_net_proto);
    RUN(test_output_batches);
    RUN(test_stats);
    RUN(test_integrity);
    return th_done();
}
