/*
 * test_mc_meta.c - the memcached front door's meta commands (mg ms md ma mn
 * me) through mc_session_process over a real store: flags and their order,
 * quiet mode with mn, opaque, base64 keys, ms modes, ma vivify, me output,
 * the anti-stampede flags (mg N/R with W/Z, md I and ms I with X), and the
 * error strings of memcached 1.6.18.  Expected bytes were checked against
 * the real 1.6.18 server.
 */
#include "test_mc_fixture.h"

#include <inttypes.h>

#include "common/log.h"

/* The number after " c" in the last reply (0 if none). */
static uint64_t reply_cas(mcf *f)
{
    char *s = mcf_take(f);
    char *c = strstr(s, " c");
    uint64_t cas = c ? strtoull(c + 2, NULL, 10) : 0;
    free(s);
    return cas;
}

static void test_mg_flags(void)
{
    mcf f;
    mcf_open(&f);
    mcf_feed_str(&f, "ms m1 2 T0 F5 c\r\nhi\r\n");
    uint64_t cas = reply_cas(&f);
    CHECK(cas != 0);
    char want[200];
    snprintf(want, sizeof want, "VA 2 c%" PRIu64 " f5 s2 t-1 km1 O9 h0 l0\r\nhi\r\n", cas);
    MCF_EXPECT(&f, "mg m1 v c f s t k O9 h l\r\n", want);
    /* flags come back in request order; h reports the earlier fetch */
    snprintf(want, sizeof want, "HD O9 h1 s2 f5 c%" PRIu64 "\r\n", cas);
    MCF_EXPECT(&f, "mg m1 O9 h s f c\r\n", want);
    MCF_EXPECT(&f, "mg m1\r\n", "HD\r\n");
    MCF_EXPECT(&f, "mg m1 v\r\n", "VA 2\r\nhi\r\n");
    MCF_EXPECT(&f, "mg m1 O k\r\n", "HD O km1\r\n");   /* empty opaque is echoed */
    MCF_EXPECT(&f, "mg m1 P/x Lroute v\r\n", "VA 2\r\nhi\r\n");
    MCF_EXPECT(&f, "mg  m1   s  \r\n", "HD s2\r\n");
    MCF_EXPECT(&f, "mg m1 C5 F5 I MS D5 J5 s\r\n", "HD s2\r\n");   /* known, unused by mg */
    /* misses reflect only O and k */
    MCF_EXPECT(&f, "mg nope v\r\n", "EN\r\n");
    MCF_EXPECT(&f, "mg nope s v O5 k c\r\n", "EN O5 knope\r\n");
    /* T touches, t reports the new TTL; T-1 expires */
    MCF_EXPECT(&f, "mg m1 T30 t v\r\nmg m1 t\r\n", "VA 2 t30\r\nhi\r\nHD t30\r\n");
    MCF_EXPECT(&f, "mg m1 T-1 v\r\nmg m1 v\r\n", "VA 2\r\nhi\r\nEN\r\n");
    mcf_close(&f);
}

static void test_mg_quiet(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "ms a 1 q\r\nA\r\nms b 1 q\r\nB\r\n", "");
    /* q hides misses only; hits still answer; mn closes the batch */
    MCF_EXPECT(&f, "mg a v q k\r\nmg x v q k\r\nmg b v q O2\r\nmg y q\r\nmn\r\n",
               "VA 1 ka\r\nA\r\nVA 1 O2\r\nB\r\nMN\r\n");
    MCF_EXPECT(&f, "mg a q s\r\nmn\r\n", "HD s1\r\nMN\r\n");
    /* errors are never hidden */
    MCF_EXPECT(&f, "mg a q zz\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n");
    MCF_EXPECT(&f, "mn\r\nmn extra tokens\r\n", "MN\r\nMN\r\n");
    mcf_close(&f);
}

static void test_mg_vivify(void)
{
    mcf f;
    mcf_open(&f);
    mcf_feed_str(&f, "mg v1 N30 v c t\r\n");
    char *s = mcf_take(&f);
    uint64_t cas = 0;
    char tail[64] = "";
    CHECK(sscanf(s, "VA 0 c%" SCNu64 " t30 %63[^\r]", &cas, tail) == 2);
    CHECK(strcmp(tail, "W") == 0);     /* this client created it: it won */
    CHECK(strcmp(s + strlen(s) - 4, "\r\n\r\n") == 0);
    free(s);
    /* exists now: someone else won (the TTL may have ticked since) */
    char want[100], want2[100];
    snprintf(want, sizeof want, "VA 0 c%" PRIu64 " t30 Z\r\n\r\n", cas);
    snprintf(want2, sizeof want2, "VA 0 c%" PRIu64 " t29 Z\r\n\r\n", cas);
    mcf_feed_str(&f, "mg v1 N30 v c t\r\n");
    s = mcf_take(&f);
    CHECK(strcmp(s, want) == 0 || strcmp(s, want2) == 0);
    free(s);
    /* every mg says so, with or without N or R, quiet or not; get does not */
    MCF_EXPECT(&f, "mg v1 R30 s\r\nmg v1 s k q O1\r\nmg v1 h\r\n",
               "HD s0 Z\r\nHD s0 kv1 O1 Z\r\nHD h1 Z\r\n");
    MCF_EXPECT(&f, "get v1\r\n", "VALUE v1 0 0\r\n\r\nEND\r\n");
    /* a write ends it */
    MCF_EXPECT(&f, "ms v1 3\r\nnew\r\nmg v1 N30 v\r\n", "HD\r\nVA 3\r\nnew\r\n");
    /* after a delete the next N client wins again; N0: no expiry */
    MCF_EXPECT(&f, "md v1\r\nmg v1 N0 s t k\r\nmg v1 N0 s\r\n", "HD\r\nHD s0 t-1 kv1 W\r\nHD s0 Z\r\n");
    /* T given with N sets the TTL (whatever the order) */
    MCF_EXPECT(&f, "mg v2 N30 T100 t\r\nmg v3 T100 N30 t\r\n", "HD t100 W\r\nHD t100 W\r\n");
    /* a text set or append also ends it */
    MCF_EXPECT(&f, "set v2 0 0 1\r\na\r\nmg v2 s\r\n", "STORED\r\nHD s1\r\n");
    MCF_EXPECT(&f, "append v3 0 0 1\r\na\r\nmg v3 s\r\n", "STORED\r\nHD s1\r\n");
    /* N with a TTL already past: nothing is created */
    MCF_EXPECT(&f, "mg v4 N-1 s\r\nmg v4 s\r\n", "EN\r\nEN\r\n");
    MCF_EXPECT(&f, "mg v1 N\r\nmg v1 Nx\r\nmg v1 R\r\n",
               "CLIENT_ERROR bad token in command line format\r\n"
               "CLIENT_ERROR bad token in command line format\r\n"
               "CLIENT_ERROR bad token in command line format\r\n");
    mcf_close(&f);
}

static void test_mg_recache(void)
{
    mcf f;
    mcf_open(&f);
    /* 10 s left, below 30: the first client wins, later ones are told */
    MCF_EXPECT(&f, "ms r 1 T10\r\nx\r\nmg r R30 v\r\nmg r R30 v\r\nmg r v\r\n",
               "HD\r\nVA 1 W\r\nx\r\nVA 1 Z\r\nx\r\nVA 1 Z\r\nx\r\n");
    MCF_EXPECT(&f, "mg r R5 s\r\n", "HD s1 Z\r\n");
    /* touch keeps the token out; a set hands it back */
    MCF_EXPECT(&f, "touch r 8\r\nmg r R30 s\r\n", "TOUCHED\r\nHD s1 Z\r\n");
    MCF_EXPECT(&f, "ms r 1 T10\r\ny\r\nmg r R30 s\r\n", "HD\r\nHD s1 W\r\n");
    /* enough TTL left, or no TTL, or R0: no token */
    MCF_EXPECT(&f, "ms long 1 T100\r\nx\r\nmg long R30 s\r\nmg long R0 s\r\n",
               "HD\r\nHD s1\r\nHD s1\r\n");
    MCF_EXPECT(&f, "ms never 1\r\nx\r\nmg never R30 s\r\n", "HD\r\nHD s1\r\n");
    /* a text get does not take the token */
    mcf_feed_str(&f, "ms g 1 T10\r\nx\r\nget g\r\ngets g\r\nmg g R30 s\r\n");
    char *s = mcf_take(&f);
    const char *head = "HD\r\nVALUE g 0 1\r\nx\r\nEND\r\nVALUE g 0 1 ";
    CHECK(strncmp(s, head, strlen(head)) == 0);
    CHECK(strstr(s, "\r\nx\r\nEND\r\nHD s1 W\r\n") != NULL);
    free(s);
    /* R judges the TTL before this request's T */
    MCF_EXPECT(&f, "ms r2 1 T10\r\nx\r\nmg r2 T100 R30 t\r\n", "HD\r\nHD t100 W\r\n");
    mcf_close(&f);
}

static void test_invalidate(void)
{
    mcf f;
    mcf_open(&f);
    mcf_feed_str(&f, "ms s 1 c T0\r\nx\r\n");
    uint64_t c1 = reply_cas(&f);
    /* md I keeps the item, stale, under a new CAS; T sets its TTL */
    MCF_EXPECT(&f, "md s I T30 k O1\r\n", "HD ks O1\r\n");
    mcf_feed_str(&f, "mg s v c t\r\n");
    char *s = mcf_take(&f);
    uint64_t c2 = 0;
    int ttl = 0;
    char tail[32] = "";
    CHECK(sscanf(s, "VA 1 c%" SCNu64 " t%d %31[^\r]", &c2, &ttl, tail) == 3);
    CHECK(c2 > c1);
    CHECK(ttl == 30 || ttl == 29);
    CHECK(strcmp(tail, "X W") == 0);                /* the first client wins */
    CHECK(strcmp(s + strlen(s) - 5, "\r\nx\r\n") == 0);
    free(s);
    char cmd[200], want[200];
    snprintf(want, sizeof want, "VA 1 c%" PRIu64 " Z X\r\nx\r\n", c2);
    MCF_EXPECT(&f, "mg s v c\r\n", want);        /* later ones are told */
    MCF_EXPECT(&f, "mg s q k\r\nget s\r\n", "HD ks Z X\r\nVALUE s 0 1\r\nx\r\nEND\r\n");
    /* a writer holding the old CAS: EX, or with I stored but still stale */
    snprintf(cmd, sizeof cmd, "ms s 1 C%" PRIu64 "\r\ny\r\n", c1);
    MCF_EXPECT(&f, cmd, "EX\r\n");
    snprintf(cmd, sizeof cmd, "ms s 1 C%" PRIu64 " I T0 F3\r\ny\r\nmg s v f\r\n", c1);
    MCF_EXPECT(&f, cmd, "HD\r\nVA 1 f3 Z X\r\ny\r\n");
    mcf_feed_str(&f, "mg s t\r\n");                 /* the old TTL stays, not T0 */
    s = mcf_take(&f);
    CHECK(strcmp(s, "HD t30 Z X\r\n") == 0 || strcmp(s, "HD t29 Z X\r\n") == 0);
    free(s);
    /* a newer CAS is EX even with I; ME ignores C; MA is not a stale store */
    snprintf(cmd, sizeof cmd, "ms s 1 C%" PRIu64 " I\r\nz\r\n", c2 + 1000);
    MCF_EXPECT(&f, cmd, "EX\r\n");
    snprintf(cmd, sizeof cmd, "ms s 1 C%" PRIu64 " I ME\r\nz\r\nms s 1 C%" PRIu64 " I MA\r\nz\r\n",
             c1, c1);
    MCF_EXPECT(&f, cmd, "NS\r\nEX\r\n");
    /* the winner's store with the current CAS: fresh again */
    mcf_feed_str(&f, "mg s c\r\n");
    uint64_t c3 = reply_cas(&f);
    snprintf(cmd, sizeof cmd, "ms s 1 C%" PRIu64 " I\r\nz\r\nmg s v\r\n", c3);
    MCF_EXPECT(&f, cmd, "HD\r\nVA 1\r\nz\r\n");
    /* md I again hands the token out again; q hides its HD */
    MCF_EXPECT(&f, "md s I q\r\nmg s s\r\nmd s I\r\nmg s s\r\nmg s s\r\n",
               "HD s1 X W\r\nHD\r\nHD s1 X W\r\nHD s1 Z X\r\n");
    /* ma keeps the state (memcached's in-place incr); a text set clears it */
    MCF_EXPECT(&f, "ms n 2\r\n10\r\nmd n I\r\nma n v\r\nmg n s v\r\n",
               "HD\r\nHD\r\nVA 2\r\n11\r\nVA 2 s2 X W\r\n11\r\n");
    MCF_EXPECT(&f, "set n 0 0 1\r\n5\r\nmg n v\r\n", "STORED\r\nVA 1\r\n5\r\n");
    /* md I with C, on a missing key; md T without I is a plain delete */
    snprintf(cmd, sizeof cmd, "md s I C%" PRIu64 " k\r\n", c1);
    MCF_EXPECT(&f, cmd, "EX ks\r\n");
    MCF_EXPECT(&f, "md nope I\r\nmd nope I q O2\r\n", "NF\r\nNF O2\r\n");
    MCF_EXPECT(&f, "md s T30\r\nmg s v\r\n", "HD\r\nEN\r\n");
    mcf_close(&f);
}

static void test_mg_errors(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "mg\r\n", "ERROR\r\n");
    MCF_EXPECT(&f, "mg a zz\r\nmg a E5\r\nmg a x\r\nmg a S\r\n",
               "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\n"
               "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\n");
    MCF_EXPECT(&f, "mg a v v\r\n", "CLIENT_ERROR duplicate flag\r\n");
    MCF_EXPECT(&f, "mg a T\r\nmg a Tabc\r\n",
               "CLIENT_ERROR bad token in command line format\r\n"
               "CLIENT_ERROR bad token in command line format\r\n");
    MCF_EXPECT(&f, "mg a Oabcdefghijabcdefghijabcdefghijab v\r\n",
               "CLIENT_ERROR opaque token too long\r\n");
    MCF_EXPECT(&f, "mg a Oabcdefghijabcdefghijabcdefghija v\r\n", "EN Oabcdefghijabcdefghijabcdefghija\r\n");
    MCF_EXPECT(&f, "mg a O0 O1 O2 O3 O4 O5 O6 O7 O8 O9 O10 O11 O12 O13 O14 O15 O16 O17 O18 O19 O20 O21 O22\r\n",
               "CLIENT_ERROR options flags are too long\r\n");
    char line[400];
    char key[252];
    memset(key, 'k', 251);
    key[251] = 0;
    snprintf(line, sizeof line, "mg %s v\r\n", key);
    MCF_EXPECT(&f, line, "CLIENT_ERROR bad command line format\r\n");
    MCF_EXPECT(&f, "mg a\x01 v\r\n", "CLIENT_ERROR bad command line format\r\n");
    mcf_close(&f);
}

static void test_ms_modes(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "ms m 2 MA\r\nhi\r\nms m 2 MP\r\nhi\r\nms m 2 MR\r\nhi\r\n", "NS\r\nNS\r\nNS\r\n");
    MCF_EXPECT(&f, "ms m 2 ME F7\r\nhi\r\nms m 2 ME\r\nzz\r\n", "HD\r\nNS\r\n");
    MCF_EXPECT(&f, "ms m 2 MA F1\r\n!!\r\nms m 2 MP\r\n<<\r\nmg m v f\r\n",
               "HD\r\nHD\r\nVA 6 f7\r\n<<hi!!\r\n");
    MCF_EXPECT(&f, "ms m 3 MR F2\r\nnew\r\nmg m v f\r\n", "HD\r\nVA 3 f2\r\nnew\r\n");
    MCF_EXPECT(&f, "ms m 3 MS\r\nset\r\nms m 3\r\ndef\r\nmg m v f\r\n", "HD\r\nHD\r\nVA 3 f0\r\ndef\r\n");
    MCF_EXPECT(&f, "ms m 0\r\n\r\nmg m v s\r\n", "HD\r\nVA 0 s0\r\n\r\n");
    /* T sets the TTL; append keeps the old one */
    MCF_EXPECT(&f, "ms t 2 T100\r\nhi\r\nms t 2 MA T5000\r\nzz\r\nmg t t s\r\n",
               "HD\r\nHD\r\nHD t100 s4\r\n");
    MCF_EXPECT(&f, "ms t 2 T-1\r\nhi\r\nmg t v\r\n", "HD\r\nEN\r\n");
    /* C compares, c returns the new CAS (0 on failure); k and O reflect */
    mcf_feed_str(&f, "ms c 1 c\r\n1\r\n");
    uint64_t cas = reply_cas(&f);
    char cmd[200], want[200];
    snprintf(cmd, sizeof cmd, "ms c 1 C%" PRIu64 " c k O1\r\n2\r\n", cas + 99);
    MCF_EXPECT(&f, cmd, "EX c0 kc O1\r\n");
    snprintf(cmd, sizeof cmd, "ms c 1 C%" PRIu64 " c\r\n2\r\n", cas);
    mcf_feed(&f, cmd, strlen(cmd));
    uint64_t cas2 = reply_cas(&f);
    CHECK(cas2 != 0 && cas2 != cas);
    snprintf(want, sizeof want, "VA 1 c%" PRIu64 "\r\n2\r\n", cas2);
    MCF_EXPECT(&f, "mg c v c\r\n", want);
    MCF_EXPECT(&f, "ms nope 1 C5 k\r\nx\r\n", "NF knope\r\n");
    MCF_EXPECT(&f, "ms nope 2 MR c k O1\r\nhi\r\n", "NS c0 knope O1\r\n");
    /* I without C is a plain set; flags memcached knows but ms does not use
     * are accepted */
    MCF_EXPECT(&f, "ms c 1 I\r\n3\r\n", "HD\r\n");
    /* as memcached: ME ignores C; MA and MP on an absent key are NS even with C */
    MCF_EXPECT(&f, "ms e 1 C99 ME\r\n1\r\nms e 1 C99 ME\r\n1\r\nmg e v\r\n", "HD\r\nNS\r\nVA 1\r\n1\r\n");
    MCF_EXPECT(&f, "ms nx 1 C99 MA\r\n1\r\nms nx 1 C99 MP\r\n1\r\nms nx 1 C99 MR\r\n1\r\n",
               "NS\r\nNS\r\nNF\r\n");
    MCF_EXPECT(&f, "ms c 1 s v t f h l u N30 R5 D1 J1\r\n4\r\nmg c v\r\n", "HD\r\nVA 1\r\n4\r\n");
    MCF_EXPECT(&f, "ms c 1 Dx\r\n5\r\nms c 1 Nx\r\n5\r\n",
               "CLIENT_ERROR bad token in command line format\r\n"
               "CLIENT_ERROR bad token in command line format\r\n");
    /* q hides HD only */
    MCF_EXPECT(&f, "ms q 1 q\r\nx\r\nms q 1 q ME\r\nx\r\nmn\r\n", "NS\r\nMN\r\n");
    mcf_close(&f);
}

static void test_ms_errors(void)
{
    mcf f;
    mcf_open(&f);
    /* no usable length: the block is read as commands (memcached too) */
    MCF_EXPECT(&f, "ms m\r\nhi\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    MCF_EXPECT(&f, "ms m abc\r\nhi\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    MCF_EXPECT(&f, "ms m -1\r\nhi\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n");
    /* a known length: errors swallow the block */
    MCF_EXPECT(&f, "ms m 2 MX\r\nhi\r\nmn\r\n", "CLIENT_ERROR invalid mode for ms M token\r\nMN\r\n");
    MCF_EXPECT(&f, "ms m 2 Ms\r\nhi\r\n", "CLIENT_ERROR invalid mode for ms M token\r\n");
    MCF_EXPECT(&f, "ms m 2 M\r\nhi\r\nms m 2 MSS\r\nhi\r\n",
               "CLIENT_ERROR incorrect length for M token\r\n"
               "CLIENT_ERROR incorrect length for M token\r\n");
    MCF_EXPECT(&f, "ms m 2 Fabc\r\nhi\r\nms m 2 F\r\nhi\r\n",
               "CLIENT_ERROR bad command line format\r\nCLIENT_ERROR bad command line format\r\n");
    MCF_EXPECT(&f, "ms m 2 Tabc\r\nhi\r\nms m 2 C\r\nhi\r\n",
               "CLIENT_ERROR bad token in command line format\r\n"
               "CLIENT_ERROR bad token in command line format\r\n");
    MCF_EXPECT(&f, "ms m 2 S2\r\nhi\r\nms m 2 W\r\nhi\r\nms m 2 E5\r\nhi\r\n",
               "CLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid flag\r\n");
    MCF_EXPECT(&f, "ms m 2 T1 T2\r\nhi\r\n", "CLIENT_ERROR duplicate flag\r\n");
    MCF_EXPECT(&f, "ms m 2 b\r\nhi\r\n", "CLIENT_ERROR error decoding key\r\n");
    MCF_EXPECT(&f, "ms m 2 P0 P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 P11 P12 P13 P14 P15 P16 P17 P18 P19 P20 P21\r\nhi\r\nmn\r\n",
               "CLIENT_ERROR options flags too long\r\nMN\r\n");
    MCF_EXPECT(&f, "ms m 2\r\nhiX\r\nmn\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nMN\r\n");
    MCF_EXPECT(&f, "ms m 2\nhi\nmg m v\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\n");
    /* too large: refused at once, swallowed, stream in sync */
    char line[100];
    snprintf(line, sizeof line, "ms big %u T0\r\n", MCF_MAX_VALUE + 1);
    MCF_EXPECT(&f, line, "SERVER_ERROR object too large for cache\r\n");
    char *blob = malloc(MCF_MAX_VALUE + 3);
    REQUIRE(blob != NULL);
    memset(blob, 'm', MCF_MAX_VALUE + 1);
    memcpy(blob + MCF_MAX_VALUE + 1, "\r\n", 2);
    mcf_feed(&f, blob, MCF_MAX_VALUE + 3);
    free(blob);
    MCF_EXPECT(&f, "mn\r\n", "MN\r\n");
    mcf_close(&f);
}

static void test_md(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "ms d 1\r\nx\r\nmd d\r\nmd d\r\nmg d v\r\n", "HD\r\nHD\r\nNF\r\nEN\r\n");
    MCF_EXPECT(&f, "md d q\r\nmd d q k O5\r\nmn\r\n", "NF\r\nNF kd O5\r\nMN\r\n");
    MCF_EXPECT(&f, "ms d 1\r\nx\r\nmd d q\r\nmn\r\nmg d\r\n", "HD\r\nMN\r\nEN\r\n");
    mcf_feed_str(&f, "ms d 1 c\r\nx\r\n");
    uint64_t cas = reply_cas(&f);
    char cmd[100];
    snprintf(cmd, sizeof cmd, "md d C%" PRIu64 " k\r\n", cas + 1);
    MCF_EXPECT(&f, cmd, "EX kd\r\n");
    snprintf(cmd, sizeof cmd, "md d C%" PRIu64 " k O1\r\n", cas);
    MCF_EXPECT(&f, cmd, "HD kd O1\r\n");
    /* I marks stale instead (test_invalidate) */
    MCF_EXPECT(&f, "ms d 1\r\nx\r\nmd d I T30\r\nmg d v\r\n", "HD\r\nHD\r\nVA 1 X W\r\nx\r\n");
    MCF_EXPECT(&f, "md d C\r\nmd d Cabc\r\nmd d x\r\nmd d E5\r\nmd d k k\r\n",
               "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"
               "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"
               "CLIENT_ERROR invalid or duplicate flag\r\n");
    MCF_EXPECT(&f, "md\r\n", "ERROR\r\n");
    mcf_close(&f);
}

static void test_ma(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "ma cnt\r\nma cnt k O1 q\r\n", "NF\r\nNF kcnt O1\r\n");
    MCF_EXPECT(&f, "ma cnt N0 J10 v\r\nma cnt v\r\nma cnt MD D3 v t\r\nma cnt M- D100 v\r\n",
               "VA 2\r\n10\r\nVA 2\r\n11\r\nVA 1 t-1\r\n8\r\nVA 1\r\n0\r\n");
    MCF_EXPECT(&f, "ma cnt MI D5\r\nma cnt M+ D5 v\r\nma cnt q\r\nma cnt q v\r\nmn\r\nmg cnt v\r\n",
               "HD\r\nVA 2\r\n10\r\nMN\r\nVA 2\r\n12\r\n");
    MCF_EXPECT(&f, "ma cnt D18446744073709551615 v\r\n", "VA 2\r\n11\r\n"); /* wraps */
    /* c reports the new CAS, which C must match */
    mcf_feed_str(&f, "ma cnt c\r\n");
    uint64_t cas = reply_cas(&f);
    CHECK(cas != 0);
    char cmd[100], want[100];
    snprintf(cmd, sizeof cmd, "ma cnt C%" PRIu64 " k O1 c v\r\n", cas + 1);
    MCF_EXPECT(&f, cmd, "EX kcnt O1\r\n");
    snprintf(cmd, sizeof cmd, "ma cnt C%" PRIu64 " v\r\n", cas);
    MCF_EXPECT(&f, cmd, "VA 2\r\n13\r\n");
    /* vivify with a TTL; T updates the TTL on success */
    MCF_EXPECT(&f, "ma v2 N50 J3 t k\r\n", "HD t50 kv2\r\n");
    MCF_EXPECT(&f, "ma v2 T100 t v\r\nmg v2 t v\r\n", "VA 1 t100\r\n4\r\nVA 1 t100\r\n4\r\n");
    snprintf(want, sizeof want, "VA 1 c");
    mcf_feed_str(&f, "ma v2 c v\r\n");
    char *s = mcf_take(&f);
    CHECK(strncmp(s, want, strlen(want)) == 0);
    CHECK(strcmp(s + strlen(s) - 5, "\r\n5\r\n") == 0);
    free(s);
    /* errors */
    MCF_EXPECT(&f, "ms s 2\r\nab\r\nma s\r\nma s N0\r\n",
               "HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
               "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    MCF_EXPECT(&f, "ma cnt Dabc\r\nma cnt D\r\nma cnt Nx\r\nma cnt J\r\nma cnt D18446744073709551616\r\n",
               "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"
               "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n"
               "CLIENT_ERROR invalid or duplicate flag\r\n");
    MCF_EXPECT(&f, "ma cnt MZ\r\nma cnt x\r\nma cnt W\r\n",
               "CLIENT_ERROR invalid mode for ma M token\r\n"
               "CLIENT_ERROR invalid or duplicate flag\r\nCLIENT_ERROR invalid or duplicate flag\r\n");
    mcf_close(&f);
}

static void test_base64_keys(void)
{
    mcf f;
    mcf_open(&f);
    /* "m1" is bTE= ; the plain and base64 names reach the same item */
    MCF_EXPECT(&f, "ms m1 2\r\nhi\r\nmg bTE= b v k\r\n", "HD\r\nVA 2 kbTE= b\r\nhi\r\n");
    MCF_EXPECT(&f, "ms bTE= 3 b k\r\nabc\r\nmg m1 v\r\n", "HD kbTE= b\r\nVA 3\r\nabc\r\n");
    MCF_EXPECT(&f, "mg bTE= k b\r\n", "HD kbTE= b\r\n");
    /* a binary key: bytes 00 01 20 0d 0a ff, base64 AAEgDQr/ */
    MCF_EXPECT(&f, "ms AAEgDQr/ 1 b\r\nx\r\nmg AAEgDQr/ b v s\r\n", "HD\r\nVA 1 s1\r\nx\r\n");
    MCF_EXPECT(&f, "ma AAEgDQr/ b N0 J7 v\r\n",
               "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    MCF_EXPECT(&f, "ma bnVt b N0 J7 v k\r\n", "VA 1 kbnVt b\r\n7\r\n");   /* "num" */
    MCF_EXPECT(&f, "get num\r\n", "VALUE num 0 1\r\n7\r\nEND\r\n");
    MCF_EXPECT(&f, "md AAEgDQr/ b k\r\nmg AAEgDQr/ b v\r\n", "HD kAAEgDQr/ b\r\nEN\r\n");
    /* malformed base64 */
    MCF_EXPECT(&f, "mg bTE b v\r\nmg !!!! b v\r\nmg b=E= b v\r\nmg ==== b\r\n",
               "CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\n"
               "CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\n");
    /* a 250-byte binary key works, 251 does not */
    char line[1000];
    char b64[400];
    memset(b64, 'A', 336);
    b64[336] = 0;  /* 252 zero bytes */
    snprintf(line, sizeof line, "mg %s b v\r\n", b64);
    MCF_EXPECT(&f, line, "CLIENT_ERROR error decoding key\r\n");
    memcpy(b64 + 332, "AA==", 5);   /* 250 zero bytes */
    snprintf(line, sizeof line, "ms %s 1 b\r\nz\r\nmg %s b v\r\n", b64, b64);
    MCF_EXPECT(&f, line, "HD\r\nVA 1\r\nz\r\n");
    /* a first byte 0x01 names the runtime's reserved namespaces: refused
     * for every command, the value swallowed ("AWs=" is 01 6b, "AA==" 00) */
    MCF_EXPECT(&f, "ms AWs= 1 b\r\nx\r\nmg AWs= b v\r\nmd AWs= b\r\nma AWs= b N0\r\n",
               "CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\n"
               "CLIENT_ERROR error decoding key\r\nCLIENT_ERROR error decoding key\r\n");
    MCF_EXPECT(&f, "mg AQ== b v\r\n", "CLIENT_ERROR error decoding key\r\n");
    MCF_EXPECT(&f, "ms AA== 1 b\r\ny\r\nmg AA== b v\r\n", "HD\r\nVA 1\r\ny\r\n");
    mcf_close(&f);
}

static void test_me(void)
{
    mcf f;
    mcf_open(&f);
    MCF_EXPECT(&f, "me nope\r\n", "EN\r\n");
    MCF_EXPECT(&f, "me\r\n", "CLIENT_ERROR bad command line format\r\n");
    mcf_feed_str(&f, "ms m1 5 c T0\r\nhello\r\n");
    uint64_t cas = reply_cas(&f);
    mcf_feed_str(&f, "me m1\r\n");
    char *s = mcf_take(&f);
    char want[120];
    snprintf(want, sizeof want, "ME m1 exp=-1 la=0 cas=%" PRIu64 " fetch=no cls=", cas);
    CHECK(strncmp(s, want, strlen(want)) == 0);
    CHECK(strstr(s, " size=7\r\n") != NULL);
    free(s);
    /* me does not count as a fetch; mg does */
    MCF_EXPECT(&f, "mg m1\r\n", "HD\r\n");
    mcf_feed_str(&f, "me bTE= b\r\n");
    s = mcf_take(&f);
    CHECK(strncmp(s, "ME bTE= exp=-1 la=0 ", 20) == 0);
    CHECK(strstr(s, "fetch=yes") != NULL);
    free(s);
    MCF_EXPECT(&f, "ms t 1 T100\r\nx\r\n", "HD\r\n");
    mcf_feed_str(&f, "me t\r\n");
    s = mcf_take(&f);
    CHECK(strncmp(s, "ME t exp=100 ", 13) == 0 || strncmp(s, "ME t exp=99 ", 12) == 0);
    free(s);
    mcf_close(&f);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    RUN(test_mg_flags);
    RUN(test_mg_quiet);
    RUN(test_mg_vivify);
    RUN(test_mg_recache);
    RUN(test_invalidate);
    RUN(test_mg_errors);
    RUN(test_ms_modes);
    RUN(test_ms_errors);
    RUN(test_md);
    RUN(test_ma);
    RUN(test_base64_keys);
    RUN(test_me);
    return th_done();
}
