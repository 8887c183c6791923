/* test_seal.c - the sealing boundary: round trip, tamper, move, rollback. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/trust/seal.h"

static seal_key *key;
static seal_ctx *ctx;

static void test_round_trip(void)
{
    uint8_t pt[1000], ct[1000], out[1000], tag[SEAL_TAG_LEN];
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (uint8_t)(i * 7);
    const uint8_t aad[] = "key-1";
    CHECK_EQ(seal_to_untrusted(ctx, SEAL_DOMAIN_VALUE, 42, aad, 5, pt, sizeof pt, ct, tag), CL_OK);
    CHECK(memcmp(pt, ct, sizeof pt) != 0);
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 42, aad, 5, ct, sizeof ct, tag, out), CL_OK);
    CHECK_MEM(out, pt, sizeof pt);
    /* empty values seal too */
    CHECK_EQ(seal_to_untrusted(ctx, SEAL_DOMAIN_VALUE, 43, aad, 5, pt, 0, ct, tag), CL_OK);
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 43, aad, 5, ct, 0, tag, out), CL_OK);
}

static void test_every_bit_flip_detected(void)
{
    uint8_t pt[64], ct[64], out[64], tag[SEAL_TAG_LEN];
    memset(pt, 'v', sizeof pt);
    CHECK_EQ(seal_to_untrusted(ctx, SEAL_DOMAIN_VALUE, 7, (const uint8_t *)"k", 1, pt, sizeof pt, ct, tag), CL_OK);
    int detected = 0;
    for (size_t bit = 0; bit < sizeof ct * 8; bit++) {
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 7, (const uint8_t *)"k", 1, ct, sizeof ct, tag, out);
        if (rc == CL_EINTEGRITY) {
            uint8_t zero[64] = { 0 };
            detected += memcmp(out, zero, sizeof out) == 0; /* plaintext wiped */
        }
        ct[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    CHECK_EQ(detected, (int)(sizeof ct * 8));
    tag[3] ^= 0x10;
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 7, (const uint8_t *)"k", 1, ct, sizeof ct, tag, out), CL_EINTEGRITY);
}

static void test_context_binding(void)
{
    uint8_t pt[32], ct[32], out[32], tag[SEAL_TAG_LEN];
    memset(pt, 'x', sizeof pt);
    CHECK_EQ(seal_to_untrusted(ctx, SEAL_DOMAIN_VALUE, 100, (const uint8_t *)"alice", 5, pt, sizeof pt, ct, tag), CL_OK);
    /* moved to another key */
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 100, (const uint8_t *)"mallory", 7, ct, sizeof ct, tag, out), CL_EINTEGRITY);
    /* opened as another version (rollback) */
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 99, (const uint8_t *)"alice", 5, ct, sizeof ct, tag, out), CL_EINTEGRITY);
    /* another domain */
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_MODULE, 100, (const uint8_t *)"alice", 5, ct, sizeof ct, tag, out), CL_EINTEGRITY);
    /* truncated */
    CHECK_EQ(seal_open_from_untrusted(ctx, SEAL_DOMAIN_VALUE, 100, (const uint8_t *)"alice", 5, ct, sizeof ct - 1, tag, out), CL_EINTEGRITY);
}

static void test_keys_differ(void)
{
    seal_key *k2;
    seal_ctx *c2;
    REQUIRE(seal_key_create(&k2) == CL_OK);
    REQUIRE(seal_ctx_create(k2, &c2) == CL_OK);
    uint8_t pt[16] = "sixteen bytes!!", ct[16], out[16], tag[SEAL_TAG_LEN];
    CHECK_EQ(seal_to_untrusted(ctx, SEAL_DOMAIN_VALUE, 1, NULL, 0, pt, 16, ct, tag), CL_OK);
    CHECK_EQ(seal_open_from_untrusted(c2, SEAL_DOMAIN_VALUE, 1, NULL, 0, ct, 16, tag, out), CL_EINTEGRITY);
    CHECK(seal_fingerprint(key, pt, 16) != seal_fingerprint(k2, pt, 16));
    CHECK_EQ(seal_fingerprint(key, pt, 16), seal_fingerprint(key, pt, 16));
    seal_ctx_destroy(c2);
    seal_key_destroy(k2);
}

static void test_memcmp_ct(void)
{
    CHECK_EQ(seal_memcmp_ct("abcd", "abcd", 4), 0);
    CHECK(seal_memcmp_ct("abcd", "abce", 4) != 0);
}

int main(void)
{
    REQUIRE(seal_key_create(&key) == CL_OK);
    REQUIRE(seal_ctx_create(key, &ctx) == CL_OK);
    RUN(test_round_trip);
    RUN(test_every_bit_flip_detected);
    RUN(test_context_binding);
    RUN(test_keys_differ);
    RUN(test_memcmp_ct);
    seal_ctx_destroy(ctx);
    seal_key_destroy(key);
    return th_done();
}
