/*
 * test_attest.c - attestation without the network: measurements, the
 * simulated platform, quotes (round trip, every refusal and its reason),
 * the cluster CA (creation, sealed reload, issuance) and attested
 * certificates (attest_verify_peer; expired and foreign certificates
 * refused by OpenSSL's chain verification, the same X509_verify_cert the
 * TLS handshake runs - tests/unit/coord/test_ratls.c does real handshakes).
 */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/trust/attest.h"
#include "../../../src/trust/ca.h"
#include "../../../src/trust/cert.h"

#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char root[64];           /* mkdtemp */
static char plat_a[96], plat_b[96], state[96], state_foreign[96];

static uint8_t M_GOOD[ATTEST_HASH_LEN], M_OTHER[ATTEST_HASH_LEN];

static void fill(uint8_t *p, size_t n, uint8_t v)
{
    memset(p, v, n);
}

static void make_quote(attest_platform *p, EVP_PKEY *key, const uint8_t nonce[32], attest_quote *q)
{
    uint8_t h[ATTEST_HASH_LEN];
    REQUIRE(attest_pubkey_hash(key, h) == CL_OK);
    REQUIRE(attest_quote_create(p, h, nonce, q) == CL_OK);
}

static void policy_for(attest_policy *pol, const uint8_t *m, attest_platform *p)
{
    attest_policy_init(pol);
    pol->allowed = "allowed by the manifest";
    REQUIRE(attest_policy_add_measurement(pol, m) == CL_OK);
    REQUIRE(attest_policy_add_platform_key(pol, attest_platform_key(p)) == CL_OK);
}

static void test_measure(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/abc", root);
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs("abc", f);
    fclose(f);
    uint8_t h[32];
    char hex[65];
    CHECK_EQ(attest_measure_file(path, h), CL_OK);
    attest_hex(h, 32, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
    uint8_t back[32];
    CHECK_EQ(attest_unhex(hex, back, 32), 0);
    CHECK_MEM(back, h, 32);
    CHECK_EQ(attest_unhex("abc", back, 32), -1);
    CHECK_EQ(attest_unhex("zz", back, 1), -1);
    unlink(path);
    CHECK_EQ(attest_measure_file(path, h), CL_EIO);

    uint8_t self[32], exe[32];
    CHECK_EQ(attest_measure_self(self), CL_OK);
    CHECK_EQ(attest_measure_file("/proc/self/exe", exe), CL_OK);
    CHECK_MEM(self, exe, 32);
}

static void test_platform_deterministic(void)
{
    attest_platform *a1, *a2, *b, *selfp;
    REQUIRE(attest_platform_open(plat_a, M_GOOD, &a1) == CL_OK);
    REQUIRE(attest_platform_open(plat_a, M_OTHER, &a2) == CL_OK);
    REQUIRE(attest_platform_open(plat_b, M_GOOD, &b) == CL_OK);
    CHECK_MEM(attest_platform_key(a1), attest_platform_key(a2), 32); /* same "CPU" */
    CHECK(memcmp(attest_platform_key(a1), attest_platform_key(b), 32) != 0);
    CHECK_MEM(attest_platform_measurement(a2), M_OTHER, 32);

    /* attestation.pub holds the public key in hex. */
    char path[160], line[80] = "", hex[65];
    snprintf(path, sizeof path, "%s/attestation.pub", plat_a);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    CHECK(fgets(line, sizeof line, f) != NULL);
    fclose(f);
    attest_hex(attest_platform_key(a1), 32, hex);
    CHECK(strncmp(line, hex, 64) == 0);

    /* NULL measurement = this binary. */
    uint8_t self[32];
    REQUIRE(attest_measure_self(self) == CL_OK);
    REQUIRE(attest_platform_open(plat_a, NULL, &selfp) == CL_OK);
    CHECK_MEM(attest_platform_measurement(selfp), self, 32);
    attest_platform_close(selfp);
    attest_platform_close(a1);
    attest_platform_close(a2);
    attest_platform_close(b);
}

static void test_quote_round_trip_and_refusals(void)
{
    attest_platform *p, *foreign;
    EVP_PKEY *key, *other_key;
    REQUIRE(attest_platform_open(plat_a, M_GOOD, &p) == CL_OK);
    REQUIRE(attest_platform_open(plat_b, M_GOOD, &foreign) == CL_OK);
    REQUIRE(cert_key_generate(&key) == CL_OK);
    REQUIRE(cert_key_generate(&other_key) == CL_OK);
    uint8_t nonce[32], nonce2[32], keyhash[32], otherhash[32];
    REQUIRE(RAND_bytes(nonce, 32) == 1 && RAND_bytes(nonce2, 32) == 1);
    REQUIRE(attest_pubkey_hash(key, keyhash) == CL_OK);
    REQUIRE(attest_pubkey_hash(other_key, otherhash) == CL_OK);
    CHECK(memcmp(keyhash, otherhash, 32) != 0);

    attest_quote q, d;
    make_quote(p, key, nonce, &q);
    uint8_t raw[ATTEST_QUOTE_LEN];
    attest_quote_encode(&q, raw);
    char why[ATTEST_WHY_LEN];
    REQUIRE(attest_quote_decode(raw, sizeof raw, &d, why, sizeof why) == CL_OK);
    CHECK_MEM(&d, &q, sizeof q);
    CHECK_MEM(d.measurement, M_GOOD, 32);
    CHECK_MEM(d.nonce, nonce, 32);
    CHECK_MEM(d.pubkey_hash, keyhash, 32);

    attest_policy pol;
    policy_for(&pol, M_GOOD, p);
    CHECK_EQ(attest_quote_verify(&d, &pol, keyhash, nonce, why, sizeof why), CL_OK);
    CHECK_EQ(attest_quote_verify(&d, &pol, keyhash, NULL, why, sizeof why), CL_OK);

    /* Malformed encodings. */
    CHECK_EQ(attest_quote_decode(raw, sizeof raw - 1, &d, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "199 bytes") != NULL);
    uint8_t bad[ATTEST_QUOTE_LEN];
    memcpy(bad, raw, sizeof bad);
    bad[0] ^= 1;
    CHECK_EQ(attest_quote_decode(bad, sizeof bad, &d, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "magic") != NULL);
    memcpy(bad, raw, sizeof bad);
    bad[5] = 9;
    CHECK_EQ(attest_quote_decode(bad, sizeof bad, &d, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "version 9") != NULL);
    memcpy(bad, raw, sizeof bad);
    bad[7] = 1;
    CHECK_EQ(attest_quote_decode(bad, sizeof bad, &d, why, sizeof why), CL_EATTEST);

    /* Forged: any signed byte changed after signing (here the measurement,
     * as a node lying about its code would), or the signature itself. */
    for (size_t off = 8; off < ATTEST_QUOTE_LEN; off += 37) {
        if (off >= 104 && off < 136)
            continue;                /* the platform key: see below */
        memcpy(bad, raw, sizeof bad);
        bad[off] ^= 0x40;
        REQUIRE(attest_quote_decode(bad, sizeof bad, &d, why, sizeof why) == CL_OK);
        CHECK_EQ(attest_quote_verify(&d, &pol, d.pubkey_hash, d.nonce, why, sizeof why),
                 CL_EATTEST);
        CHECK(strstr(why, "signature invalid") != NULL);
    }
    attest_quote lie = q;
    memcpy(lie.measurement, M_OTHER, 32);
    REQUIRE(attest_policy_add_measurement(&pol, M_OTHER) == CL_OK); /* even if allowed */
    CHECK_EQ(attest_quote_verify(&lie, &pol, keyhash, nonce, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "forged") != NULL);
    attest_policy_fini(&pol);
    policy_for(&pol, M_GOOD, p);

    /* Foreign platform: signed by a key the policy does not trust... */
    attest_quote fq;
    make_quote(foreign, key, nonce, &fq);
    CHECK_EQ(attest_quote_verify(&fq, &pol, keyhash, nonce, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "untrusted platform") != NULL);
    printf("     e.g.: %s\n", why);
    /* ...or claiming a trusted platform key with a foreign signature. */
    memcpy(fq.platform_key, attest_platform_key(p), 32);
    CHECK_EQ(attest_quote_verify(&fq, &pol, keyhash, nonce, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "signature invalid") != NULL);

    /* Wrong measurement: a genuine quote of code the manifest does not allow. */
    attest_platform *wrong;
    REQUIRE(attest_platform_open(plat_a, M_OTHER, &wrong) == CL_OK);
    attest_quote wq;
    make_quote(wrong, key, nonce, &wq);
    CHECK_EQ(attest_quote_verify(&wq, &pol, keyhash, nonce, why, sizeof why), CL_EATTEST);
    char mhex[65];
    attest_hex(M_OTHER, 6, mhex);
    CHECK(strstr(why, "not allowed by the manifest") != NULL && strstr(why, mhex) != NULL);
    printf("     e.g.: %s\n", why);
    attest_platform_close(wrong);

    /* A quote for another key, or over another nonce (a replay). */
    CHECK_EQ(attest_quote_verify(&q, &pol, otherhash, nonce, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "another TLS key") != NULL);
    CHECK_EQ(attest_quote_verify(&q, &pol, keyhash, nonce2, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "replayed") != NULL);

    /* Empty policy trusts nothing. */
    attest_policy empty;
    attest_policy_init(&empty);
    CHECK_EQ(attest_quote_verify(&q, &empty, keyhash, nonce, why, sizeof why), CL_EATTEST);
    attest_policy copy;
    REQUIRE(attest_policy_copy(&copy, &pol) == CL_OK);
    CHECK_EQ(attest_quote_verify(&q, &copy, keyhash, nonce, why, sizeof why), CL_OK);
    attest_policy_fini(&copy);

    attest_policy_fini(&pol);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other_key);
    attest_platform_close(p);
    attest_platform_close(foreign);
}

static void test_ca_storage(void)
{
    char err[256], path[160];
    cluster_ca *ca, *again, *wrong;
    REQUIRE(ca_open(state, plat_a, &ca, err, sizeof err) == CL_OK);
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", state, CA_KEY_FILE);
    REQUIRE(stat(path, &st) == 0);
    CHECK_EQ(st.st_mode & 077, 0);
    /* The key is stored encrypted, never as a plain PEM key. */
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char line[128] = "";
    CHECK(fgets(line, sizeof line, f) != NULL);
    fclose(f);
    CHECK(strstr(line, "ENCRYPTED PRIVATE KEY") != NULL);

    REQUIRE(ca_open(state, plat_a, &again, err, sizeof err) == CL_OK);
    CHECK_EQ(X509_cmp(ca_cert(ca), ca_cert(again)), 0);
    ca_destroy(again);

    /* Sealed to the platform: another platform cannot open it. */
    CHECK_EQ(ca_open(state, plat_b, &wrong, err, sizeof err), CL_ECONFIG);
    CHECK(strstr(err, "platform") != NULL);
    printf("     e.g.: %s\n", err);

    /* Exposed key file refused. */
    chmod(path, 0644);
    CHECK_EQ(ca_open(state, plat_a, &wrong, err, sizeof err), CL_ECONFIG);
    CHECK(strstr(err, "chmod 600") != NULL);
    chmod(path, 0600);
    ca_destroy(ca);
}

/* OpenSSL's chain verification (what a TLS handshake runs) of cert
 * against the anchor ca, as a TLS client checks a server. */
static int chain_verify(X509 *cert, X509 *anchor, int *err_out)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    REQUIRE(store && ctx && X509_STORE_add_cert(store, anchor) == 1);
    REQUIRE(X509_STORE_CTX_init(ctx, store, cert, NULL) == 1);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    int ok = X509_verify_cert(ctx);
    *err_out = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok == 1;
}

static void test_attested_certificates(void)
{
    char err[256], why[ATTEST_WHY_LEN];
    cluster_ca *ca, *foreign_ca;
    attest_platform *p, *wrongp;
    EVP_PKEY *key, *other;
    REQUIRE(ca_open(state, plat_a, &ca, err, sizeof err) == CL_OK);
    REQUIRE(ca_open(state_foreign, plat_a, &foreign_ca, err, sizeof err) == CL_OK);
    REQUIRE(attest_platform_open(plat_a, M_GOOD, &p) == CL_OK);
    REQUIRE(attest_platform_open(plat_a, M_OTHER, &wrongp) == CL_OK);
    REQUIRE(cert_key_generate(&key) == CL_OK && cert_key_generate(&other) == CL_OK);
    uint8_t nonce[32];
    fill(nonce, 32, 7);
    attest_quote q;
    make_quote(p, key, nonce, &q);
    attest_policy pol;
    policy_for(&pol, M_GOOD, p);

    int64_t now = (int64_t)time(NULL);
    const char *hosts[] = { "127.0.0.1", "localhost", "::1" };
    ca_request req = { .key = key, .common_name = "cloister-node-3", .hosts = hosts,
                       .n_hosts = 3, .quote = &q, .usage = CA_USAGE_SERVER | CA_USAGE_CLIENT,
                       .not_before = now - 60, .not_after = now + 3600 };
    X509 *cert;
    REQUIRE(ca_issue(ca, &req, &cert) == CL_OK);
    int id = -1, verr;
    CHECK_EQ(attest_verify_peer(cert, &pol, &id, why, sizeof why), CL_OK);
    CHECK_EQ(id, 3);
    CHECK(cert_issued_by(cert, ca_cert(ca)));
    CHECK(!cert_issued_by(cert, ca_cert(foreign_ca)));
    CHECK(chain_verify(cert, ca_cert(ca), &verr));
    CHECK_EQ(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
    CHECK_EQ(X509_check_ip_asc(cert, "::1", 0), 1);
    CHECK_EQ(X509_check_host(cert, "localhost", 0, 0, NULL), 1);
    CHECK_EQ(X509_check_ip_asc(cert, "10.0.0.1", 0), 0);

    /* PEM round trip keeps the quote. */
    char *pem;
    X509 *back;
    REQUIRE(cert_to_pem(cert, &pem) == CL_OK);
    REQUIRE(cert_from_pem(pem, &back) == CL_OK);
    CHECK_EQ(attest_verify_peer(back, &pol, &id, why, sizeof why), CL_OK);
    X509_free(back);
    free(pem);
    X509 *none;
    CHECK_EQ(cert_from_pem("not a certificate", &none), CL_EINVAL);

    /* Measurement no longer allowed (manifest changed): refused by peers. */
    attest_policy other_pol;
    policy_for(&other_pol, M_OTHER, p);
    CHECK_EQ(attest_verify_peer(cert, &other_pol, &id, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "not allowed") != NULL);
    attest_policy_fini(&other_pol);

    /* The quote of one key inside a certificate for another key. */
    X509 *swapped;
    req.key = other;
    REQUIRE(ca_issue(ca, &req, &swapped) == CL_OK);
    CHECK_EQ(attest_verify_peer(swapped, &pol, &id, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "another TLS key") != NULL);
    X509_free(swapped);
    req.key = key;

    /* A wrong-measurement node's genuine quote in a certificate. */
    attest_quote wq;
    make_quote(wrongp, key, nonce, &wq);
    X509 *wrongcert;
    req.quote = &wq;
    REQUIRE(ca_issue(ca, &req, &wrongcert) == CL_OK);
    CHECK_EQ(attest_verify_peer(wrongcert, &pol, &id, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "not allowed by the manifest") != NULL);
    X509_free(wrongcert);
    req.quote = &q;

    /* No quote (a tenant's client certificate), or not a node's name. */
    X509 *client;
    ca_request creq = { .key = key, .common_name = "default", .usage = CA_USAGE_CLIENT,
                        .not_before = now - 60, .not_after = now + 3600 };
    REQUIRE(ca_issue(ca, &creq, &client) == CL_OK);
    CHECK_EQ(attest_verify_peer(client, &pol, &id, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "no attestation quote") != NULL);
    CHECK(!chain_verify(client, ca_cert(ca), &verr));     /* not a server certificate */
    X509_free(client);
    X509 *named;
    req.common_name = "cloister-coordinator";
    REQUIRE(ca_issue(ca, &req, &named) == CL_OK);
    CHECK_EQ(attest_verify_peer(named, &pol, &id, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "not a node") != NULL);
    X509_free(named);
    req.common_name = "cloister-node-0";
    REQUIRE(ca_issue(ca, &req, &named) == CL_OK);
    CHECK_EQ(attest_verify_peer(named, &pol, &id, why, sizeof why), CL_EATTEST);
    X509_free(named);
    req.common_name = "cloister-node-3";      /* two common names: ambiguous, refused */
    REQUIRE(ca_issue(ca, &req, &named) == CL_OK);
    CHECK_EQ(attest_verify_peer(named, &pol, &id, why, sizeof why), CL_OK);
    REQUIRE(X509_NAME_add_entry_by_NID(X509_get_subject_name(named), NID_commonName, MBSTRING_UTF8,
                                       (const unsigned char *)"cloister-node-4", -1, -1, 0) == 1);
    CHECK_EQ(attest_verify_peer(named, &pol, &id, why, sizeof why), CL_EATTEST);
    X509_free(named);
    req.common_name = "cloister-node-3";

    /* Expired, not yet valid, and foreign-CA certificates fail the chain
     * verification that every handshake runs. */
    X509 *expired, *future, *foreign;
    req.not_before = now - 7200;
    req.not_after = now - 3600;
    REQUIRE(ca_issue(ca, &req, &expired) == CL_OK);
    CHECK(!chain_verify(expired, ca_cert(ca), &verr));
    CHECK_EQ(verr, X509_V_ERR_CERT_HAS_EXPIRED);
    req.not_before = now + 3600;
    req.not_after = now + 7200;
    REQUIRE(ca_issue(ca, &req, &future) == CL_OK);
    CHECK(!chain_verify(future, ca_cert(ca), &verr));
    CHECK_EQ(verr, X509_V_ERR_CERT_NOT_YET_VALID);
    req.not_before = now - 60;
    req.not_after = now + 3600;
    REQUIRE(ca_issue(foreign_ca, &req, &foreign) == CL_OK);
    CHECK(!chain_verify(foreign, ca_cert(ca), &verr));
    CHECK(verr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
          verr == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT);
    X509_free(expired);
    X509_free(future);
    X509_free(foreign);

    /* Requests refused: injected SANs, bad names, empty validity. */
    X509 *x;
    const char *evil[] = { "127.0.0.1,DNS:evil.example" };
    req.hosts = evil;
    req.n_hosts = 1;
    CHECK_EQ(ca_issue(ca, &req, &x), CL_EINVAL);
    req.hosts = hosts;
    req.n_hosts = 3;
    req.common_name = "";
    CHECK_EQ(ca_issue(ca, &req, &x), CL_EINVAL);
    req.common_name = "cloister-node-3";
    req.not_after = req.not_before;
    CHECK_EQ(ca_issue(ca, &req, &x), CL_EINVAL);

    X509_free(cert);
    attest_policy_fini(&pol);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    attest_platform_close(p);
    attest_platform_close(wrongp);
    ca_destroy(ca);
    ca_destroy(foreign_ca);
}

static void test_quote_extension_malformed(void)
{
    /* A certificate whose quote extension holds garbage is refused
     * (without crashing), and so is a truncated quote. */
    cluster_ca *ca;
    REQUIRE(ca_create_ephemeral("test CA", &ca) == CL_OK);
    EVP_PKEY *key;
    REQUIRE(cert_key_generate(&key) == CL_OK);
    int64_t now = (int64_t)time(NULL);
    ca_request req = { .key = key, .common_name = "cloister-node-1", .usage = CA_USAGE_SERVER,
                       .not_before = now - 60, .not_after = now + 60 };
    X509 *x;
    REQUIRE(ca_issue(ca, &req, &x) == CL_OK);
    ASN1_OBJECT *oid = OBJ_txt2obj(ATTEST_QUOTE_OID, 1);
    ASN1_OCTET_STRING *junk = ASN1_OCTET_STRING_new();
    REQUIRE(oid && junk && ASN1_OCTET_STRING_set(junk, (const unsigned char *)"\x04\x03" "abc", 5));
    X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, junk);
    REQUIRE(ext && X509_add_ext(x, ext, -1) == 1);
    attest_quote q;
    char why[ATTEST_WHY_LEN];
    CHECK_EQ(attest_cert_quote(x, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "malformed quote") != NULL);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_set(junk, (const unsigned char *)"\x30\x00", 2);
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, junk);
    X509_EXTENSION_free(X509_delete_ext(x, X509_get_ext_by_OBJ(x, oid, -1)));
    REQUIRE(ext && X509_add_ext(x, ext, -1) == 1);
    CHECK_EQ(attest_cert_quote(x, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "malformed") != NULL);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(junk);
    ASN1_OBJECT_free(oid);
    X509_free(x);
    EVP_PKEY_free(key);
    ca_destroy(ca);
}

static void rm_rf(const char *d)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", d);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/cl-attest-XXXXXX");
    REQUIRE(mkdtemp(root) != NULL);
    snprintf(plat_a, sizeof plat_a, "%s/platform-a", root);
    snprintf(plat_b, sizeof plat_b, "%s/platform-b", root);
    snprintf(state, sizeof state, "%s/state", root);
    snprintf(state_foreign, sizeof state_foreign, "%s/state-foreign", root);
    REQUIRE(mkdir(state, 0700) == 0 && mkdir(state_foreign, 0700) == 0);
    fill(M_GOOD, 32, 0x3f);
    fill(M_OTHER, 32, 0xa1);
    RUN(test_measure);
    RUN(test_platform_deterministic);
    RUN(test_quote_round_trip_and_refusals);
    RUN(test_ca_storage);
    RUN(test_attested_certificates);
    RUN(test_quote_extension_malformed);
    rm_rf(root);
    return th_done();
}
