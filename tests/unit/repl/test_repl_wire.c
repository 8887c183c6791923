/* test_repl_wire.c - the engine's message format (wire.h): round trips of
 * records, replies, history clocks and blobs; and hostile input: every
 * truncation, random bit flips and random garbage of real messages fed
 * to live engines, which must neither crash nor stop working (run under
 * ASan/UBSan by make asan). */
#include "simnet.h"
#include "../../../src/repl/wire.h"

#define OK(x) CHECK_EQ((x), CL_OK)

static void test_reply_roundtrip(void)
{
    cl_buf b;
    cl_buf_init(&b);
    uint8_t blob[40];
    rvec v;
    memset(&v, 0, sizeof v);
    v.b[2] = 0x1122334455667788ull;
    v.b[7] = 9;
    uint8_t *p = wire_put_vec(blob, &v);
    memcpy(p, "hello", 5);
    size_t blen = (size_t)(p - blob) + 5;
    wire_rec rec = { 0xabcdef01, 77, -5, REC_VALUE, 1, blob, (uint32_t)blen };
    OK(wire_reply_put(&b, 3, 99, W_PREPARE, WS_OK, 1234, 5678, &rec, &v));
    OK(wire_reply_put(&b, 3, 100, W_QUERY, WS_BROKEN, 1, 2, NULL, NULL));
    CHECK_EQ(b.data[0], WIRE_VERSION);
    wire_rd m;
    wire_rd_init(&m, b.data + 1, b.len - 1);
    uint8_t type;
    wire_rd body;
    REQUIRE(wire_next(&m, &type, &body));
    CHECK_EQ(type, W_REPLY);
    wire_reply rp;
    REQUIRE(wire_reply_get(&body, &rp));
    CHECK_EQ(rp.epoch, 3);
    CHECK_EQ(rp.rid, 99);
    CHECK_EQ(rp.for_type, W_PREPARE);
    CHECK_EQ(rp.ts, 1234);
    CHECK_EQ(rp.promise, 5678);
    CHECK(rp.has_rec && rp.has_vec);
    CHECK_EQ(rp.rec.version, 0xabcdef01);
    CHECK_EQ(rp.rec.flags, 77);
    CHECK_EQ(rp.rec.exptime, -5);
    CHECK_EQ(rp.vec.b[2], 0x1122334455667788ull);
    CHECK_EQ(rp.vec.b[7], 9);
    rvec v2;
    const uint8_t *d;
    size_t dl;
    REQUIRE(blob_split(rp.rec.blob, rp.rec.blen, rp.rec.xbit, &v2, &d, &dl));
    CHECK(dl == 5 && memcmp(d, "hello", 5) == 0);
    CHECK_EQ(v2.b[2], v.b[2]);
    REQUIRE(wire_next(&m, &type, &body));
    REQUIRE(wire_reply_get(&body, &rp));
    CHECK_EQ(rp.status, WS_BROKEN);
    CHECK(!rp.has_rec && !rp.has_vec);
    CHECK(!wire_next(&m, &type, &body));
    /* malformed pieces are refused */
    uint8_t bad_vec[] = { 8 }; /* more entries than nodes */
    CHECK(!blob_split(bad_vec, 1, 1, &v2, &d, &dl));
    uint8_t bad_node[] = { 1, 0, 1, 2, 3, 4, 5, 6, 7, 8 }; /* node id 0 */
    CHECK(!blob_split(bad_node, sizeof bad_node, 1, &v2, &d, &dl));
    uint8_t short_vec[] = { 1, 3, 1, 2 };
    CHECK(!blob_split(short_vec, sizeof short_vec, 1, &v2, &d, &dl));
    for (size_t cut = 1; cut < b.len; cut++) { /* every truncation of the message */
        wire_rd_init(&m, b.data + 1, cut - 1);
        int ok = 1;
        while (wire_next(&m, &type, &body))
            ok &= wire_reply_get(&body, &rp) || 1;
        CHECK(ok);
    }
    cl_buf_fini(&b, 0);
}

static void test_key_limits(void)
{
    uint8_t buf[300];
    buf[0] = 0;
    wire_rd r;
    const uint8_t *k;
    uint8_t kl;
    wire_rd_init(&r, buf, 1);
    CHECK(!wire_key(&r, &k, &kl)); /* empty key */
    buf[0] = 251;
    memset(buf + 1, 'a', 251);
    wire_rd_init(&r, buf, 252);
    CHECK(!wire_key(&r, &k, &kl)); /* too long */
    buf[0] = 10;
    wire_rd_init(&r, buf, 5);
    CHECK(!wire_key(&r, &k, &kl)); /* truncated */
    buf[0] = 3;
    wire_rd_init(&r, buf, 4);
    CHECK(wire_key(&r, &k, &kl) && kl == 3);
}

/* Feeds mutated copies of recorded traffic to the engines. */
static void test_hostile_input(void)
{
    static const repl_namespace ns[] = { { "ev:", REPL_EVENTUAL } };
    repl_config base = { .ns = ns, .n_ns = 1, .antientropy_ms = 50 };
    sim s;
    sim_init(&s, 3, 11000, &base);
    sim_start(&s);
    s.record = 1;
    sim_res r;
    OK(sim_put(&s, 1, "k", "value one", &r));
    OK(sim_get(&s, 2, "k", &r));
    repl_op op;
    repl_op_init(&op, REPL_OP_APPEND);
    op.data = (const uint8_t *)"++";
    op.len = 2;
    OK(sim_rmw(&s, 3, "k", &op, &r));
    OK(sim_put(&s, 2, "ev:e", "eventual", &r));
    uint64_t tok;
    sim_res lr;
    memset(&lr, 0, sizeof lr);
    REQUIRE(repl_lock(s.node[1].r, sim_k("L"), 1, 5, 1000, 0, sim_res_cb, &lr) == CL_OK);
    OK(sim_wait(&s, &lr));
    tok = lr.token;
    (void)tok;
    sim_run_for(&s, 200000); /* anti-entropy digests too */
    s.record = 0;
    REQUIRE(s.log_n > 10);
    size_t n_msgs = s.log_n;
    uint64_t fed = 0;
    uint8_t *buf = malloc(1 << 20);
    REQUIRE(buf != NULL);
    for (size_t i = 0; i < n_msgs; i++) {
        sim_msg *m = s.log[i];
        sim_node *dst = &s.node[m->to];
        if (!dst->alive || m->len > (1 << 20))
            continue;
        /* every truncation */
        for (size_t cut = 0; cut < m->len; cut++) {
            dst->hooks.on_message(dst->hooks.engine, m->from, s.node[m->from].epoch, m->data, cut);
            fed++;
        }
        /* bit flips and byte changes */
        for (int k = 0; k < 200; k++) {
            memcpy(buf, m->data, m->len);
            int flips = 1 + (int)(sim_rand(&s) % 4);
            for (int f = 0; f < flips; f++) {
                size_t at = sim_rand(&s) % m->len;
                buf[at] ^= (uint8_t)(1u << (sim_rand(&s) % 8));
                if (sim_rand(&s) % 4 == 0)
                    buf[at] = (uint8_t)sim_rand(&s);
            }
            dst->hooks.on_message(dst->hooks.engine, m->from, s.node[m->from].epoch, buf, m->len);
            fed++;
        }
        dst->hooks.on_tick(dst->hooks.engine, s.now_us);
        sim_run_for(&s, 100);
    }
    /* garbage of every small length */
    for (int k = 0; k < 20000; k++) {
        size_t len = sim_rand(&s) % 512;
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)sim_rand(&s);
        if (len)
            buf[0] = WIRE_VERSION;
        int to = 1 + (int)(sim_rand(&s) % 3), from = 1 + (to % 3);
        s.node[to].hooks.on_message(s.node[to].hooks.engine, from, s.node[from].epoch, buf, len);
        fed++;
    }
    free(buf);
    printf("     %llu hostile messages fed\n", (unsigned long long)fed);
    /* still a working cluster */
    sim_run_for(&s, 1000000);
    OK(sim_put(&s, 2, "after", "fine", &r));
    for (int i = 1; i <= 3; i++) {
        OK(sim_get(&s, i, "after", &r));
        CHECK(sim_holds(&r, "fine"));
    }
    repl_op_fini(&op);
    sim_fini(&s);
}

int main(void)
{
    RUN(test_reply_roundtrip);
    RUN(test_key_limits);
    RUN(test_hostile_input);
    return th_done();
}
