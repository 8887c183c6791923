/* test_repair.c - a value that fails its integrity check on one replica
 * (the adversary flips bytes in that node's arena file) is read
 * correctly from a quorum and the bad copy is repaired: strong reads
 * through the tampered node, read-modify-writes through it, two of
 * three copies tampered, and an eventual-mode read. */
#include "simnet.h"

#include <fcntl.h>

#define OK(x) CHECK_EQ((x), CL_OK)

static uint8_t *snap(const char *path, size_t n)
{
    uint8_t *b = malloc(n);
    REQUIRE(b != NULL);
    int fd = open(path, O_RDONLY);
    REQUIRE(fd >= 0);
    REQUIRE(pread(fd, b, n, 0) == (ssize_t)n);
    close(fd);
    return b;
}

/* Runs `write` (which must change exactly one value of node's arena) and
 * returns the offset of the first byte it changed there. */
static size_t changed_at(sim *s, int node, const uint8_t *before)
{
    uint8_t *after = snap(s->node[node].arena_path, s->arena_bytes);
    size_t at = SIZE_MAX;
    for (size_t i = 0; i < s->arena_bytes; i++)
        if (before[i] != after[i]) {
            at = i;
            break;
        }
    free(after);
    REQUIRE(at != SIZE_MAX);
    return at;
}

static void flip(sim *s, int node, size_t at)
{
    int fd = open(s->node[node].arena_path, O_RDWR);
    REQUIRE(fd >= 0);
    uint8_t b;
    REQUIRE(pread(fd, &b, 1, (off_t)at) == 1);
    b ^= 0x20;
    REQUIRE(pwrite(fd, &b, 1, (off_t)at) == 1);
    close(fd);
}

/* Writes key=val through node 1 and finds where node `victim` keeps it. */
static size_t put_and_locate(sim *s, int victim, const char *key, const char *val)
{
    uint8_t *before = snap(s->node[victim].arena_path, s->arena_bytes);
    sim_res r;
    CHECK_EQ(sim_put(s, 1, key, val, &r), CL_OK);
    sim_run_for(s, 10000);
    size_t at = changed_at(s, victim, before);
    free(before);
    return at;
}

static uint8_t *sink_buf(void *arg, const store_meta *m)
{
    (void)m;
    return arg;
}

/* CL_OK, or CL_EINTEGRITY when node's copy of key fails its check. */
static int local_check(sim *s, int node, const char *key)
{
    store_thread *t;
    REQUIRE(store_thread_create(s->node[node].st, &t) == CL_OK);
    static uint8_t buf[1 << 16];
    store_get_opts o = { .raw = 1, .want_value = 1 };
    store_meta m;
    int rc = store_get(t, (const uint8_t *)key, strlen(key), &o, sink_buf, buf, &m);
    store_thread_destroy(t);
    return rc;
}

static void setup(sim *s, uint64_t seed, const repl_config *base)
{
    sim_init(s, 3, seed, base);
    s->arena_files = 1;
    s->arena_bytes = 2u << 20;
    sim_start(s);
}

static void test_read_through_tampered_node(void)
{
    sim s;
    setup(&s, 8000, NULL);
    const char *val = "the quick brown fox jumps over the lazy dog, twice over";
    size_t at = put_and_locate(&s, 2, "k", val);
    flip(&s, 2, at + 10);
    CHECK_EQ(local_check(&s, 2, "k"), CL_EINTEGRITY);
    sim_res r;
    OK(sim_get(&s, 2, "k", &r));
    CHECK(sim_holds(&r, val));
    CHECK_EQ(local_check(&s, 2, "k"), CL_OK); /* repaired */
    repl_stats st = sim_stats(&s, 2);
    CHECK(st.integrity_failures >= 1);
    CHECK(st.repairs >= 1);
    OK(sim_get(&s, 2, "k", &r)); /* and read locally again in one round */
    CHECK(sim_holds(&r, val));
    sim_fini(&s);
}

/* The tampered copy is at a peer, read from another node: the peer
 * reports BROKEN when it must send its value (here: the reader's own
 * copy is older), and the write-back repairs it. */
static void test_tampered_peer(void)
{
    sim s;
    setup(&s, 8100, NULL);
    sim_res r;
    OK(sim_put(&s, 1, "k", "old value, not the newest", &r));
    sim_run_for(&s, 10000);
    sim_isolate(&s, 3, 1);
    size_t at = put_and_locate(&s, 2, "k", "new value that node 3 missed");
    sim_heal(&s);
    flip(&s, 2, at + 3);
    OK(sim_get(&s, 3, "k", &r)); /* 3 has the old one: peers send theirs */
    CHECK(sim_holds(&r, "new value that node 3 missed"));
    sim_run_for(&s, 10000);
    CHECK_EQ(local_check(&s, 2, "k"), CL_OK);
    CHECK_EQ(local_check(&s, 3, "k"), CL_OK);
    sim_fini(&s);
}

/* An increment through the node whose counter was tampered. */
static void test_rmw_through_tampered_node(void)
{
    sim s;
    setup(&s, 8200, NULL);
    size_t at = put_and_locate(&s, 1, "ctr", "41");
    flip(&s, 1, at);
    CHECK_EQ(local_check(&s, 1, "ctr"), CL_EINTEGRITY);
    repl_op op;
    repl_op_init(&op, REPL_OP_INCR);
    op.delta = 1;
    sim_res r;
    OK(sim_rmw(&s, 1, "ctr", &op, &r));
    CHECK(sim_holds(&r, "42"));
    CHECK_EQ(local_check(&s, 1, "ctr"), CL_OK);
    OK(sim_get(&s, 3, "ctr", &r));
    CHECK(sim_holds(&r, "42"));
    repl_op_fini(&op);
    sim_fini(&s);
}

/* Two of three copies tampered: the third still serves the read and
 * both are repaired.  All three: the read fails (never wrong data). */
static void test_two_of_three(void)
{
    sim s;
    setup(&s, 8300, NULL);
    uint8_t *b1 = snap(s.node[1].arena_path, s.arena_bytes);
    uint8_t *b2 = snap(s.node[2].arena_path, s.arena_bytes);
    uint8_t *b3 = snap(s.node[3].arena_path, s.arena_bytes);
    sim_res r;
    OK(sim_put(&s, 3, "k", "precious", &r));
    sim_run_for(&s, 10000);
    size_t a1 = changed_at(&s, 1, b1), a2 = changed_at(&s, 2, b2), a3 = changed_at(&s, 3, b3);
    flip(&s, 1, a1);
    flip(&s, 2, a2);
    OK(sim_get(&s, 1, "k", &r));
    CHECK(sim_holds(&r, "precious"));
    sim_run_for(&s, 10000);
    CHECK_EQ(local_check(&s, 1, "k"), CL_OK);
    CHECK_EQ(local_check(&s, 2, "k"), CL_OK);
    /* now every copy (find them again: the repairs moved them) */
    free(b1);
    free(b2);
    free(b3);
    b1 = snap(s.node[1].arena_path, s.arena_bytes);
    b2 = snap(s.node[2].arena_path, s.arena_bytes);
    b3 = snap(s.node[3].arena_path, s.arena_bytes);
    OK(sim_put(&s, 2, "k", "doomed", &r));
    sim_run_for(&s, 10000);
    a1 = changed_at(&s, 1, b1);
    a2 = changed_at(&s, 2, b2);
    a3 = changed_at(&s, 3, b3);
    flip(&s, 1, a1);
    flip(&s, 2, a2);
    flip(&s, 3, a3);
    CHECK_EQ(sim_get(&s, 1, "k", &r), CL_EINTEGRITY);
    free(b1);
    free(b2);
    free(b3);
    sim_fini(&s);
}

static void test_eventual_repair(void)
{
    static const repl_namespace ns[] = { { "ev:", REPL_EVENTUAL } };
    repl_config base = { .ns = ns, .n_ns = 1 };
    sim s;
    setup(&s, 8400, &base);
    uint8_t *before = snap(s.node[2].arena_path, s.arena_bytes);
    sim_res r;
    OK(sim_put(&s, 1, "ev:k", "eventually consistent", &r));
    sim_run_for(&s, 20000); /* pushed */
    size_t at = changed_at(&s, 2, before);
    free(before);
    flip(&s, 2, at + 1);
    OK(sim_get(&s, 2, "ev:k", &r));
    CHECK(sim_holds(&r, "eventually consistent"));
    CHECK_EQ(local_check(&s, 2, "ev:k"), CL_OK);
    sim_fini(&s);
}

int main(void)
{
    RUN(test_read_through_tampered_node);
    RUN(test_tampered_peer);
    RUN(test_rmw_through_tampered_node);
    RUN(test_two_of_three);
    RUN(test_eventual_repair);
    return th_done();
}
