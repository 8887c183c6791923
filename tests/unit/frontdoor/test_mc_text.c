/*
 * test_mc_text.c - the memcached front door's classic text commands, driven
 * through mc_session_process over a real store: every command, its error
 * replies, noreply, value swallowing, line limits and pipelining.  Expected
 * replies are memcached 1.6.18's (checked against the real server), except
 * where mc_text.c documents a deliberate difference.
 */
#include "test_mc_fixture.h"

#include <inttypes.h>

#include "common/log.h"

static uint64_t gets_cas(mcf *f, const char *key)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "gets %s\r\n", key);
    mcf_feed(f, cmd, strlen(cmd));
    char *s = mcf_take(f);
    unsigned flags, len;
    uint64_t cas = 0;
    char k[260];
    int n = sscanf(s, "VALUE %259s %u %u %" SCNu64, k, &flags, &len, &cas);
    CHECK(n == 4);
    free(s);
    return cas;
}

static void test_set_get(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "set a 5 0 3\r\nabc\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "get a\r\n", "VALUE a 5 3\r\nabc\r\nEND\r\n");
    MCF_EXPECT(&f, "get nope\r\n", "END\r\n");
    MCF_EXPECT(&f, "set b 4294967295 0 0\r\n\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "get nope a  b nope2\r\n",
               "VALUE a 5 3\r\nabc\r\nVALUE b 4294967295 0\r\n\r\nEND\r\n");
    MCF_EXPECT(&f, "get a a\r\n", "VALUE a 5 3\r\nabc\r\nVALUE a 5 3\r\nabc\r\nEND\r\n");
    /* binary-safe values, bare "\n" line endings accepted */
    static const char setbin[] = "set bin 0 0 6\n\r\n\0x\r\n\r\n";
    mcf_feed(&f, setbin, sizeof setbin - 1);
    mcf_check(&f, "STORED\r\n", 8, __FILE__, __LINE__);
    static const char getbin[] = "VALUE bin 0 6\r\n\r\n\0x\r\n\r\nEND\r\n";
    mcf_feed_str(&f, "get bin\n");
    mcf_check(&f, getbin, sizeof getbin - 1, __FILE__, __LINE__);
    uint64_t cas = gets_cas(&f, "a");
    CHECK(cas != 0);
    MCF_EXPECT(&f, "set a 0 0 1\r\nz\r\n", "STORED\r\n");
    CHECK(gets_cas(&f, "a") != cas);   /* every write changes the CAS id */
    /* a trailing token other than noreply is ignored, as memcached */
    MCF_EXPECT(&f, "set a 0 0 1 foo\r\nq\r\nget a\r\n", "STORED\r\nVALUE a 0 1\r\nq\r\nEND\r\n");
    /* 250-byte keys are fine */
    char line[600];
    char key[251];
    memset(key, 'k', 250);
    key[250] = 0;
    snprintf(line, sizeof line, "set %s 0 0 1\r\nv\r\nget %s\r\n", key, key);
    char want[600];
    snprintf(want, sizeof want, "STORED\r\nVALUE %s 0 1\r\nv\r\nEND\r\n", key);
    MCF_EXPECT(&f, line, want);
    mcf_close(&f);
}

static void test_storage_modes(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "add a 1 0 1\r\nx\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "add a 1 0 1\r\ny\r\n", "NOT_STORED\r\n");
    MCF_EXPECT(&f, "replace nope 0 0 1\r\ny\r\n", "NOT_STORED\r\n");
    MCF_EXPECT(&f, "replace a 2 0 1\r\ny\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "append a 9 0 2\r\nzz\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "prepend a 9 0 2\r\naa\r\n", "STORED\r\n");
    MCF_EXPECT(&f, "get a\r\n", "VALUE a 2 5\r\naayzz\r\nEND\r\n"); /* flags kept */
    MCF_EXPECT(&f, "append nope 0 0 1\r\nx\r\nprepend nope 0 0 1\r\nx\r\n",
               "NOT_STORED\r\nNOT_STORED\r\n");

    uint64_t cas = gets_cas(&f, "a");
    char cmd[200];
    snprintf(cmd, sizeof cmd, "cas a 7 0 3 %" PRIu64 "\r\nnew\r\n", cas + 1000);
    MCF_EXPECT(&f, cmd, "EXISTS\r\n");
    snprintf(cmd, sizeof cmd, "cas a 7 0 3 %" PRIu64 "\r\nnew\r\n", cas);
    MCF_EXPECT(&f, cmd, "STORED\r\n");
    MCF_EXPECT(&f, cmd, "EXISTS\r\n");  /* the CAS id moved on */
    MCF_EXPECT(&f, "get a\r\n", "VALUE a 7 3\r\nnew\r\nEND\r\n");
    MCF_EXPECT(&f, "cas nope 0 0 1 5\r\nx\r\n", "NOT_FOUND\r\n");
    MCF_EXPECT(&f, "cas a 0 0 1 0\r\nx\r\n", "EXISTS\r\n");     /* 0 never matches */
    MCF_EXPECT(&f, "cas nope 0 0 1 0\r\nx\r\n", "NOT_FOUND\r\n");
    MCF_EXPECT(&f, "cas a 0 0 1 abc\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "cas a 0 0 1\r\n", "ERROR\r\n");
    mcf_close(&f);
}

static void test_storage_errors(void)
{
    mcf f;
    mcf_open(&f);
    /* length unknown: the data line is read as a command (memcached too) */
    MCF_EXPECT(&f, "set a 0 0 -1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    MCF_EXPECT(&f, "set a 0 0 abc\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    MCF_EXPECT(&f, "set a 0 0 1.5\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    MCF_EXPECT(&f, "set a 0 0 99999999999999999999999\r\nx\r\n",
               "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    /* length known: the block is swallowed, even one that looks like a command */
    MCF_EXPECT(&f, "set a abc 0 9\r\nflush_all\r\nmn\r\n",
               "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "set a -1 0 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "set a 4294967296 0 1\r\nx\r\nmn\r\n",
               "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "set a 0 1x 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    char line[600];
    char key[252];
    memset(key, 'k', 251);
    key[251] = 0;
    snprintf(line, sizeof line, "set %s 0 0 1\r\nx\r\nmn\r\n", key);
    MCF_EXPECT(&f, line, "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "set a\x01z 0 0 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    MCF_EXPECT(&f, "set a\tz 0 0 1\r\nx\r\nmn\r\n", "CLIENT_ERROR bad command line format\r\nMN\r\n");
    /* bad data chunk: bytes + 2 are consumed, the rest is parsed (as memcached) */
    MCF_EXPECT(&f, "set a 0 0 1\r\nxy\r\nget a\r\n",
               "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n");
    MCF_EXPECT(&f, "set a 0 0 2\r\nxyz\r\nmn\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n");
    /* arity */
    MCF_EXPECT(&f, "set a 0 0\r\n", "ERROR\r\n");
    MCF_EXPECT(&f, "set a 0 0 1 noreply extra\r\nx\r\n", "ERROR\r\nERROR\r\n");
    MCF_EXPECT(&f, "get\r\n", "ERROR\r\n");
    MCF_EXPECT(&f, "get a\x02 b\r\n", "CLIENT_ERROR bad command line format\r\n");
    snprintf(line, sizeof line, "get a %s\r\n", key);
    MCF_EXPECT(&f, line, "CLIENT_ERROR bad command line format\r\n");
    mcf_close(&f);
}

static void test_too_large(void)
{
    mcf f;
    mcf_open(&f);
    size_t n = MCF_MAX_VALUE + 1;
    char line[100];
    snprintf(line, sizeof line, "set big 0 0 %zu\r\n", n);
    uint8_t *blob = malloc(n + 2);
    REQUIRE(blob != NULL);
    memset(blob, 'g', n);          /* "get" bytes: must never run as commands */
    memcpy(blob + n, "\r\n", 2);
    memcpy(blob, "get a\r\n", 7);

    /* the error comes at once; the block is swallowed as it arrives */
    MCF_EXPECT(&f, line, "SERVER_ERROR object too large for cache\r\n");
    CHECK_EQ(f.in.len, 0);
    for (size_t off = 0; off < n + 2; off += 4000) {
        size_t k = n + 2 - off < 4000 ? n + 2 - off : 4000;
        mcf_feed(&f, blob + off, k);
        CHECK_EQ(f.out.len, 0);
    }
    MCF_EXPECT(&f, "mn\r\n", "MN\r\n");
    MCF_EXPECT(&f, "get big\r\n", "END\r\n");

    /* all in one buffer, noreply, and exactly max_value is fine */
    snprintf(line, sizeof line, "set big 0 0 %zu noreply\r\n", n);
    mcf_feed(&f, line, strlen(line));
    mcf_feed(&f, blob, n + 2);
    MCF_EXPECT(&f, "mn\r\n", "MN\r\n");
    snprintf(line, sizeof line, "set big 0 0 %zu\r\n", n - 1);
    mcf_feed(&f, line, strlen(line));
    mcf_feed(&f, blob, n - 1);
    MCF_EXPECT(&f, "\r\n", "STORED\r\n");
    /* append beyond max_value is refused by the store */
    MCF_EXPECT(&f, "append big 0 0 1\r\nx\r\n", "SERVER_ERROR object too large for cache\r\n");
    free(blob);
    mcf_close(&f);
}

static void test_want(void)
{
    mcf f;
    mcf_open(&f);
    const char *line = "set w 0 0 10\r\n";
    mcf_feed(&f, line, strlen(line));
    CHECK_EQ(f.want, strlen(line) + 12);
    CHECK_EQ(f.in.len, strlen(line));       /* the line stays unconsumed */
    mcf_feed_str(&f, "01234");
    CHECK_EQ(f.want, strlen(line) + 12);
    CHECK_EQ(f.out.len, 0);
    MCF_EXPECT(&f, "56789\r", "");
    MCF_EXPECT(&f, "\n", "STORED\r\n");
    CHECK_EQ(f.want, 0);
    /* a partial line asks for nothing in particular */
    MCF_EXPECT(&f, "get w", "");
    CHECK_EQ(f.want, 0);
    MCF_EXPECT(&f, "\r\n", "VALUE w 0 10\r\n0123456789\r\nEND\r\n");
    mcf_close(&f);
}

static void test_noreply(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f,
               "set a 0 0 1 noreply\r\n1\r\n"
               "add a 0 0 1 noreply\r\n2\r\n"
               "add b 0 0 1 noreply\r\n2\r\n"
               "replace a 0 0 1 noreply\r\n3\r\n"
               "append a 0 0 1 noreply\r\n4\r\n"
               "prepend a 0 0 1 noreply\r\n5\r\n"
               "cas a 0 0 1 1 noreply\r\n6\r\n"
               "incr a 1 noreply\r\n"
               "decr a 2 noreply\r\n"
               "incr a x noreply\r\n"
               "touch a 100 noreply\r\n"
               "touch a x noreply\r\n"
               "delete b noreply\r\n"
               "delete b 0 noreply\r\n"
               "verbosity 1 noreply\r\n"
               "set a abc 0 1 noreply\r\nx\r\n"
               "mn\r\n",
               "MN\r\n");
    MCF_EXPECT(&f, "get a b\r\n", "VALUE a 0 3\r\n533\r\nEND\r\n");
    MCF_EXPECT(&f, "flush_all noreply\r\nget a\r\n", "END\r\n");
    MCF_EXPECT(&f, "flush_all 0 noreply\r\nmn\r\n", "MN\r\n");
    mcf_close(&f);
}

static void test_delete(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "set a 0 0 1\r\nx\r\ndelete a\r\ndelete a\r\nget a\r\n",
               "STORED\r\nDELETED\r\nNOT_FOUND\r\nEND\r\n");
    MCF_EXPECT(&f, "set a 0 0 1\r\nx\r\ndelete a 0\r\n", "STORED\r\nDELETED\r\n");
    MCF_EXPECT(&f, "delete a 5\r\n",
               "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    MCF_EXPECT(&f, "delete a 0 x\r\n",
               "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
    MCF_EXPECT(&f, "delete\r\ndelete a 0 noreply x\r\n", "ERROR\r\nERROR\r\n");
    mcf_close(&f);
}

static void test_incr_decr(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "incr n 1\r\ndecr n 1\r\n", "NOT_FOUND\r\nNOT_FOUND\r\n");
    MCF_EXPECT(&f, "set n 3 0 2\r\n10\r\nincr n 5\r\ndecr n 100\r\nincr n 18446744073709551615\r\n",
               "STORED\r\n15\r\n0\r\n18446744073709551615\r\n");
    MCF_EXPECT(&f, "incr n 2\r\n", "1\r\n");   /* wraps at 2^64 */
    MCF_EXPECT(&f, "get n\r\n", "VALUE n 3 1\r\n1\r\nEND\r\n");
    MCF_EXPECT(&f, "incr n abc\r\nincr n -1\r\nincr n 18446744073709551616\r\nincr n 1x\r\n",
               "CLIENT_ERROR invalid numeric delta argument\r\n"
               "CLIENT_ERROR invalid numeric delta argument\r\n"
               "CLIENT_ERROR invalid numeric delta argument\r\n"
               "CLIENT_ERROR invalid numeric delta argument\r\n");
    MCF_EXPECT(&f, "set s 0 0 2\r\nab\r\nincr s 1\r\ndecr s 1\r\n",
               "STORED\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
               "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    MCF_EXPECT(&f, "incr n\r\nincr n 1 noreply extra\r\n", "ERROR\r\nERROR\r\n");
    mcf_close(&f);
}

static void test_touch_gat(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "set t 1 0 2\r\nhi\r\ntouch t 100\r\ntouch nope 100\r\n",
               "STORED\r\nTOUCHED\r\nNOT_FOUND\r\n");
    MCF_EXPECT(&f, "touch t abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    MCF_EXPECT(&f, "gat 100 t nope\r\n", "VALUE t 1 2\r\nhi\r\nEND\r\n");
    uint64_t cas = gets_cas(&f, "t");
    char want[100];
    snprintf(want, sizeof want, "VALUE t 1 2 %" PRIu64 "\r\nhi\r\nEND\r\n", cas);
    MCF_EXPECT(&f, "gats 0 t\r\n", want);
    MCF_EXPECT(&f, "gat abc t\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    MCF_EXPECT(&f, "gat 10\r\ngat\r\n", "ERROR\r\nERROR\r\n");
    /* gat with a negative exptime returns the item and expires it */
    MCF_EXPECT(&f, "gat -1 t\r\nget t\r\n", "VALUE t 1 2\r\nhi\r\nEND\r\nEND\r\n");
    /* negative exptime on set: stored already expired */
    MCF_EXPECT(&f, "set e 0 -1 1\r\nx\r\nget e\r\n", "STORED\r\nEND\r\n");
    MCF_EXPECT(&f, "set e 0 0 1\r\nx\r\ntouch e -1\r\nget e\r\n", "STORED\r\nTOUCHED\r\nEND\r\n");
    mcf_close(&f);
}

static void test_flush_all(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\n", "STORED\r\nOK\r\nEND\r\n");
    MCF_EXPECT(&f, "set a 0 0 1\r\ny\r\nget a\r\n", "STORED\r\nVALUE a 0 1\r\ny\r\nEND\r\n");
    MCF_EXPECT(&f, "flush_all abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n");
    /* a delayed flush leaves items visible until it fires */
    MCF_EXPECT(&f, "flush_all 1000\r\nget a\r\n", "OK\r\nVALUE a 0 1\r\ny\r\nEND\r\n");
    MCF_EXPECT(&f, "flush_all 0\r\nget a\r\n", "OK\r\nEND\r\n");
    MCF_EXPECT(&f, "flush_all -1\r\nflush_all 0 0\r\n", "OK\r\nOK\r\n");
    MCF_EXPECT(&f, "flush_all 1 2 3\r\n", "ERROR\r\n");
    mcf_close(&f);
}

static void test_misc(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "version\r\n", "VERSION 9.9.9-test\r\n");
    f.ctx.version = NULL;
    MCF_EXPECT(&f, "version\r\n", "VERSION 1.6.18-cloister-" CLOISTER_VERSION "\r\n");
    int lvl = cl_log_get_level();
    MCF_EXPECT(&f, "verbosity 2\r\n", "OK\r\n");
    CHECK_EQ(cl_log_get_level(), CL_LOG_DEBUG);
    MCF_EXPECT(&f, "verbosity 0\r\n", "OK\r\n");
    CHECK_EQ(cl_log_get_level(), CL_LOG_WARN);
    MCF_EXPECT(&f, "verbosity\r\nverbosity abc\r\nverbosity 1 2 3\r\n",
               "ERROR\r\nCLIENT_ERROR bad command line format\r\nERROR\r\n");
    cl_log_set_level(lvl);
    MCF_EXPECT(&f, "foo\r\n\r\nGET a\r\nmq\r\n   \r\n", "ERROR\r\nERROR\r\nERROR\r\nERROR\r\nERROR\r\n");
    MCF_EXPECT(&f, "  get   a  \r\n", "END\r\n");   /* runs of spaces separate tokens */
    /* quit: nothing after it runs */
    MCF_EXPECT(&f, "mn\r\nquit\r\nset a 0 0 1\r\nx\r\n", "MN\r\n");
    CHECK(f.closed);
    mcf_reconnect(&f);
    MCF_EXPECT(&f, "get a\r\n", "END\r\n");
    MCF_EXPECT(&f, "quit extra\r\n", "");
    CHECK(f.closed);
    mcf_close(&f);
}

static void test_line_too_long(void)
{
    mcf f;
    mcf_open(&f);
    size_t n = 70000;
    char *big = malloc(n + 3);
    REQUIRE(big != NULL);

    /* 8 KiB without a newline: waits; more than that: error and close */
    memset(big, 'x', n);
    mcf_feed(&f, big, MC_LINE_MAX);
    CHECK(!f.closed);
    CHECK_EQ(f.out.len, 0);
    MCF_EXPECT(&f, "x", "CLIENT_ERROR line too long\r\n");
    CHECK(f.closed);

    /* the same line with its newline is still too long */
    mcf_reconnect(&f);
    memcpy(big, "set ", 4);
    memcpy(big + MC_LINE_MAX + 10, "\r\n", 2);
    mcf_feed(&f, big, MC_LINE_MAX + 12);
    mcf_check(&f, "CLIENT_ERROR line too long\r\n", 28, __FILE__, __LINE__);
    CHECK(f.closed);

    /* a long get line is fine up to MC_LINE_MAX_GET */
    mcf_reconnect(&f);
    MCF_EXPECT(&f, "set k 0 0 1\r\nv\r\n", "STORED\r\n");
    memcpy(big, "get", 3);
    size_t len = 3;
    while (len + 2 < 30000) {
        memcpy(big + len, " k", 2);
        len += 2;
    }
    memcpy(big + len, "\r\n", 2);
    mcf_feed(&f, big, len + 2);
    char *s = mcf_take(&f);
    size_t hits = 0;
    for (char *p = s; (p = strstr(p, "VALUE k 0 1\r\nv\r\n")); p++)
        hits++;
    CHECK_EQ(hits, (len - 3) / 2);
    CHECK(strcmp(s + strlen(s) - 5, "END\r\n") == 0);
    free(s);
    CHECK(!f.closed);

    /* but not beyond */
    while (len + 2 < n) {
        memcpy(big + len, " k", 2);
        len += 2;
    }
    mcf_feed(&f, big, len);
    mcf_check(&f, "CLIENT_ERROR line too long\r\n", 28, __FILE__, __LINE__);
    CHECK(f.closed);
    free(big);
    mcf_close(&f);
}

/* One multi-get may not build more than MC_GET_REPLY_MAX of reply. */
static void test_get_reply_cap(void)
{
    mcf f;
    mcf_open(&f);
    char line[100];
    snprintf(line, sizeof line, "set v 0 0 %u\r\n", MCF_MAX_VALUE);
    mcf_feed(&f, line, strlen(line));
    char *val = malloc(MCF_MAX_VALUE);
    REQUIRE(val != NULL);
    memset(val, 'v', MCF_MAX_VALUE);
    mcf_feed(&f, val, MCF_MAX_VALUE);
    free(val);
    MCF_EXPECT(&f, "\r\n", "STORED\r\n");
    size_t keys = (64u << 20) / MCF_MAX_VALUE + 1;
    char *get = malloc(4 + keys * 2 + 3);
    REQUIRE(get != NULL);
    size_t n = 0;
    memcpy(get, "get", 3);
    n = 3;
    for (size_t i = 0; i < keys; i++) {
        memcpy(get + n, " v", 2);
        n += 2;
    }
    memcpy(get + n, "\r\n", 3);
    MCF_EXPECT(&f, "mn\r\n", "MN\r\n");
    mcf_feed(&f, get, n + 2);
    MCF_EXPECT(&f, "", "SERVER_ERROR out of memory writing get response\r\n");
    CHECK(!f.closed);
    MCF_EXPECT(&f, "mn\r\n", "MN\r\n");
    free(get);
    mcf_close(&f);
}

/* A script touching most paths, with state-changing commands. */
static const char split_script[] =
    "set a 1 0 3\r\nabc\r\n"
    "get a b\r\n"
    "gets a\r\n"
    "add a 0 0 1\r\nz\r\n"
    "append a 0 0 2 noreply\r\nde\r\n"
    "set n 0 0 2\r\n41\r\nincr n 1\r\ndecr n 50\r\n"
    "set a abc 0 4\r\nset \r\n"
    "set big 0 0 70000\r\n@BIG@"
    "mn\r\n"
    "set x 0 0 1\r\nxyz\r\n"
    "ms m 2 T0 F3 c\r\nhi\r\n"
    "mg m v f s k O7 q\r\n"
    "mg nope v q\r\nmn\r\n"
    "ma cnt N0 J5 v\r\nma cnt MD D2 v\r\n"
    "md m q\r\nmd m\r\n"
    "mg bWFnaWM= b v k\r\n"
    "delete a\r\n"
    "touch n 100\r\n"
    "bogus\r\n"
    "stats settings extra\r\n"
    "flush_all\r\nget n\r\n"
    "version\r\n";

static void run_split(const uint8_t *in, size_t n, const size_t *cuts, size_t ncuts, char **reply)
{
    mcf f;
    mcf_open(&f);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : n;
        mcf_feed(&f, in + at, to - at);
        at = to;
    }
    CHECK_EQ(f.in.len, 0);
    *reply = mcf_take(&f);
    mcf_close(&f);
}

static void test_split_everywhere(void)
{
    /* the big value is swallowed: make the announced block real */
    const char *mark = strstr(split_script, "@BIG@");
    size_t before = (size_t)(mark - split_script), after = strlen(mark + 5);
    size_t n = before + 70002 + after;
    uint8_t *in = malloc(n);
    REQUIRE(in != NULL);
    memcpy(in, split_script, before);
    memset(in + before, 'g', 70000);
    memcpy(in + before, "get a\r\n", 7);
    memcpy(in + before + 70000, "\r\n", 2);
    memcpy(in + before + 70002, mark + 5, after);

    char *ref;
    run_split(in, n, NULL, 0, &ref);
    CHECK(strstr(ref, "STORED\r\nVALUE a 1 3\r\nabc\r\nEND\r\nVALUE a 1 3 ") == ref);
    CHECK(strstr(ref, "NOT_STORED\r\nSTORED\r\n42\r\n0\r\n"
                      "CLIENT_ERROR bad command line format\r\n"
                      "SERVER_ERROR object too large for cache\r\nMN\r\n"
                      "CLIENT_ERROR bad data chunk\r\nERROR\r\n") != NULL);
    CHECK(strstr(ref, "VA 2 f3 s2 km O7\r\nhi\r\nMN\r\nVA 1\r\n5\r\nVA 1\r\n3\r\nNF\r\n"
                      "EN kbWFnaWM= b\r\nDELETED\r\nTOUCHED\r\nERROR\r\nERROR\r\nOK\r\nEND\r\nVERSION 9.9.9-test\r\n") != NULL);

    /* every single cut point, across the line-ending and value boundaries */
    int all_same = 1;
    for (size_t cut = 1; cut < n; cut += cut < 600 || cut > n - 600 ? 1 : 997) {
        char *got;
        run_split(in, n, &cut, 1, &got);
        if (strcmp(got, ref) != 0) {
            fprintf(stderr, "     split at %zu differs\n", cut);
            all_same = 0;
        }
        free(got);
    }
    CHECK(all_same);

    /* byte by byte */
    size_t *cuts = malloc(n * sizeof *cuts);
    REQUIRE(cuts != NULL);
    for (size_t i = 0; i + 1 < n; i++)
        cuts[i] = i + 1;
    char *got;
    run_split(in, n, cuts, n - 1, &got);
    CHECK(strcmp(got, ref) == 0);
    free(got);
    free(cuts);
    free(ref);
    free(in);
}

static void test_pipelining(void)
{
    mcf f;
    mcf_open(&f);
    char buf[64 * 1024];
    size_t n = 0;
    char want[64 * 1024];
    size_t wn = 0;
    static const char v[] = "0123456789";
    for (int i = 0; i < 200; i++) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "set k%d %d 0 %d\r\n%.*s\r\n", i, i,
                              i % 10 + 1, i % 10 + 1, v);
        wn += (size_t)snprintf(want + wn, sizeof want - wn, "STORED\r\n");
    }
    for (int i = 0; i < 200; i += 7) {
        n += (size_t)snprintf(buf + n, sizeof buf - n, "get k%d k%d\r\n", i, i + 1000);
        wn += (size_t)snprintf(want + wn, sizeof want - wn, "VALUE k%d %d %d\r\n%.*s\r\nEND\r\n",
                               i, i, i % 10 + 1, i % 10 + 1, v);
    }
    buf[n] = 0;
    want[wn] = 0;
    MCF_EXPECT(&f, buf, want);
    mcf_close(&f);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    RUN(test_set_get);
    RUN(test_storage_modes);
    RUN(test_storage_errors);
    RUN(test_too_large);
    RUN(test_want);
    RUN(test_noreply);
    RUN(test_delete);
    RUN(test_incr_decr);
    RUN(test_touch_gat);
    RUN(test_flush_all);
    RUN(test_misc);
    RUN(test_line_too_long);
    RUN(test_get_reply_cap);
    RUN(test_pipelining);
    RUN(test_split_everywhere);
    return th_done();
}
