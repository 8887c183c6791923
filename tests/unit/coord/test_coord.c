/*
 * test_coord.c - the coordinator in-process, over real TLS on loopback:
 * nodes join (epochs grow per node id and survive a restart, recover is
 * set on a rejoin), a node whose measurement the manifest does not allow
 * is refused with the reason, a node refuses a coordinator with the wrong
 * measurement or from a foreign platform, replayed / forged / mismatched
 * joins are refused, client certificates need the tenant's token, status
 * lists the members, manifests and member files are checked.
 */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/coord/client.h"
#include "../../../src/coord/coord.h"
#include "../../../src/coord/join.h"
#include "../../../src/coord/members.h"
#include "../../../src/trust/cert.h"

#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char root[64], plat[96], plat_foreign[96], state[96], manifest[96], addr[64];
static uint8_t M_GOOD[32], M_BAD[32];
static char good_hex[65];
static coord *co;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    REQUIRE(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void write_manifest(void)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"measurements\": [\"%s\"],\n"
             " \"nodes\": [{\"id\": 1, \"peer\": \"127.0.0.1:7101\"}, {\"id\": 2}, {\"id\": 3}],\n"
             " \"tenants\": [{\"name\": \"default\", \"token\": \"sekrit-token-1\",\n"
             "                \"namespaces\": [{\"prefix\": \"\", \"mode\": \"strong\"},\n"
             "                               {\"prefix\": \"ev:\", \"mode\": \"eventual\"}]},\n"
             "               {\"name\": \"notoken\"}],\n"
             " \"cert_validity_s\": 3600}\n", good_hex);
    write_file(manifest, text);
}

static int start_coord(void)
{
    char err[512];
    coord_config cfg = { .listen = "127.0.0.1:0", .manifest_file = manifest, .state_dir = state,
                         .platform_dir = plat, .measurement = M_GOOD };
    int rc = coord_create(&cfg, &co, err, sizeof err);
    if (rc != CL_OK) {
        fprintf(stderr, "coord_create: %s\n", err);
        return rc;
    }
    REQUIRE(coord_start(co) == CL_OK);
    coord_listen_name(co, addr, sizeof addr);
    return CL_OK;
}

static int join(int id, const uint8_t *m, const char *platform_dir, const uint8_t *expect,
                const char *peer, coord_join_result *r, char *why, size_t cap)
{
    coord_join_config cfg = { .coordinator = addr, .node_id = id, .peer = peer,
                              .memcached = "127.0.0.1:7201", .platform_dir = platform_dir,
                              .measurement = m, .expect_coordinator = expect };
    return coord_join(&cfg, r, why, cap);
}

static void test_join_and_epochs(void)
{
    coord_join_result r;
    char why[512];
    REQUIRE(join(2, M_GOOD, plat, NULL, NULL, &r, why, sizeof why) == CL_OK);
    CHECK_EQ(r.self, 2);
    CHECK_EQ(r.n, 3);
    CHECK_EQ(r.epoch, 1);
    CHECK_EQ(r.recover, 0);
    CHECK_EQ(r.n_nodes, 3);
    CHECK(strcmp(r.nodes[0].peer, "127.0.0.1:7101") == 0);      /* from the manifest */
    CHECK(strcmp(r.nodes[1].memcached, "127.0.0.1:7201") == 0); /* as node 2 reported it */
    CHECK_MEM(r.coordinator_measurement, M_GOOD, 32);
    CHECK_EQ(r.policy.n_measurements, 1);
    CHECK_MEM(r.policy.measurements[0], M_GOOD, 32);
    CHECK_EQ(r.policy.n_platform_keys, 1);
    CHECK_MEM(r.policy.platform_keys[0], coord_platform_key(co), 32);
    CHECK_EQ(r.cert_validity_s, 3600);
    REQUIRE(r.n_ns == 3);     /* default's two, and notoken's default namespace */
    CHECK(strcmp(r.ns[0].tenant, "default") == 0 && strcmp(r.ns[0].prefix, "") == 0 &&
          r.ns[0].mode == REPL_STRONG);
    CHECK(strcmp(r.ns[1].prefix, "ev:") == 0 && r.ns[1].mode == REPL_EVENTUAL);
    CHECK(strcmp(r.ns[2].tenant, "notoken") == 0 && strcmp(r.ns[2].prefix, "") == 0 &&
          r.ns[2].mode == REPL_STRONG);
    /* The certificate: ours, from the CA, passes peer attestation, valid
     * for an hour, names loopback. */
    int id = 0;
    char peer_why[ATTEST_WHY_LEN];
    CHECK_EQ(attest_verify_peer(r.cert, &r.policy, &id, peer_why, sizeof peer_why), CL_OK);
    CHECK_EQ(id, 2);
    CHECK_EQ(X509_check_private_key(r.cert, r.key), 1);
    CHECK(cert_issued_by(r.cert, r.ca));
    CHECK_EQ(X509_check_ip_asc(r.cert, "127.0.0.1", 0), 1);
    int days = -1, secs = -1;
    REQUIRE(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(r.cert), X509_get0_notAfter(r.cert)));
    CHECK_EQ(days * 86400 + secs, 3600 + 60);
    coord_join_result_fini(&r);

    /* Every join of the same id is a new incarnation. */
    REQUIRE(join(2, M_GOOD, plat, NULL, NULL, &r, why, sizeof why) == CL_OK);
    CHECK_EQ(r.epoch, 2);
    CHECK_EQ(r.recover, 1);
    coord_join_result_fini(&r);
    REQUIRE(join(3, M_GOOD, plat, NULL, NULL, &r, why, sizeof why) == CL_OK);
    CHECK_EQ(r.epoch, 1);
    CHECK_EQ(r.recover, 0);
    coord_join_result_fini(&r);

    /* Node 1's peer address is fixed by the manifest. */
    CHECK_EQ(join(1, M_GOOD, plat, NULL, "127.0.0.1:9999", &r, why, sizeof why), CL_ECONFIG);
    CHECK(strstr(why, "manifest says 127.0.0.1:7101") != NULL);
    REQUIRE(join(1, M_GOOD, plat, NULL, "127.0.0.1:7101", &r, why, sizeof why) == CL_OK);
    CHECK_EQ(r.epoch, 1);
    coord_join_result_fini(&r);

    /* Unknown node id. */
    CHECK_EQ(join(7, M_GOOD, plat, NULL, NULL, &r, why, sizeof why), CL_ECONFIG);
    CHECK(strstr(why, "not a node of the manifest") != NULL);
}

static void test_wrong_measurement_refused(void)
{
    coord_join_result r;
    char why[512], prefix[16];
    CHECK_EQ(join(2, M_BAD, plat, M_GOOD, NULL, &r, why, sizeof why), CL_EATTEST);
    attest_hex(M_BAD, 6, prefix);
    CHECK(strstr(why, "not allowed by the manifest") != NULL && strstr(why, prefix) != NULL);
    printf("     e.g.: %s\n", why);
    CHECK(r.cert == NULL && r.key == NULL);
}

static void test_node_refuses_coordinator(void)
{
    coord_join_result r;
    char why[512];
    /* The node expects other code on the coordinator... */
    CHECK_EQ(join(2, M_GOOD, plat, M_BAD, NULL, &r, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "coordinator") && strstr(why, "failed attestation") &&
          strstr(why, "--expect-coordinator"));
    printf("     e.g.: %s\n", why);
    /* ...or runs on another platform, whose key signs nothing it trusts. */
    CHECK_EQ(join(2, M_GOOD, plat_foreign, NULL, NULL, &r, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "untrusted platform") != NULL);
}

/* A raw client: the coordinator attested, for hand-made requests. */
static coord_client *raw_client(attest_platform *p)
{
    attest_policy expect;
    attest_policy_init(&expect);
    REQUIRE(attest_policy_add_measurement(&expect, M_GOOD) == CL_OK);
    REQUIRE(attest_policy_add_platform_key(&expect, attest_platform_key(p)) == CL_OK);
    coord_client *c;
    char why[512];
    int rc = coord_client_open(addr, &expect, 5000, &c, why, sizeof why);
    if (rc != CL_OK)
        fprintf(stderr, "coord_client_open: %s\n", why);
    REQUIRE(rc == CL_OK);
    attest_policy_fini(&expect);
    return c;
}

static void get_nonce(coord_client *c, uint8_t nonce[32])
{
    json_t *req = json_pack("{s:s}", "op", "nonce"), *reply;
    char why[256];
    REQUIRE(coord_client_call(c, req, &reply, why, sizeof why) == CL_OK);
    REQUIRE(attest_unhex(json_string_value(json_object_get(reply, "nonce")), nonce, 32) == 0);
    json_decref(req);
    json_decref(reply);
}

/* Sends a join for `key` with `quote`; returns the code (reply freed). */
static int send_join(coord_client *c, int id, EVP_PKEY *key, const attest_quote *q, char *why,
                     size_t cap)
{
    char *pem, qhex[2 * ATTEST_QUOTE_LEN + 1];
    uint8_t raw[ATTEST_QUOTE_LEN];
    REQUIRE(cert_pubkey_to_pem(key, &pem) == CL_OK);
    attest_quote_encode(q, raw);
    attest_hex(raw, sizeof raw, qhex);
    json_t *req = json_pack("{s:s, s:i, s:s, s:s}", "op", "join", "node_id", id, "public_key",
                            pem, "quote", qhex), *reply = NULL;
    int rc = coord_client_call(c, req, &reply, why, cap);
    json_decref(req);
    json_decref(reply);
    free(pem);
    return rc;
}

static void test_replayed_forged_mismatched(void)
{
    attest_platform *p;
    EVP_PKEY *key, *other;
    REQUIRE(attest_platform_open(plat, M_GOOD, &p) == CL_OK);
    REQUIRE(cert_key_generate(&key) == CL_OK && cert_key_generate(&other) == CL_OK);
    uint8_t kh[32], na[32], nb[32];
    REQUIRE(attest_pubkey_hash(key, kh) == CL_OK);
    coord_client *a = raw_client(p), *b = raw_client(p);
    char why[512];
    attest_quote q;

    /* A quote over connection A's challenge, replayed on connection B. */
    get_nonce(a, na);
    get_nonce(b, nb);
    REQUIRE(attest_quote_create(p, kh, na, &q) == CL_OK);
    CHECK_EQ(send_join(b, 2, key, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "replayed") != NULL);
    printf("     e.g.: %s\n", why);
    /* B's challenge was used up by that attempt. */
    REQUIRE(attest_quote_create(p, kh, nb, &q) == CL_OK);
    CHECK_EQ(send_join(b, 2, key, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "no challenge") != NULL);

    /* On A, with A's challenge: accepted once, then the nonce is gone. */
    REQUIRE(attest_quote_create(p, kh, na, &q) == CL_OK);
    CHECK_EQ(send_join(a, 2, key, &q, why, sizeof why), CL_OK);
    CHECK_EQ(send_join(a, 2, key, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "no challenge") != NULL);

    /* Forged: the measurement edited after signing. */
    get_nonce(a, na);
    attest_platform *badp;
    REQUIRE(attest_platform_open(plat, M_BAD, &badp) == CL_OK);
    REQUIRE(attest_quote_create(badp, kh, na, &q) == CL_OK);
    memcpy(q.measurement, M_GOOD, 32);
    CHECK_EQ(send_join(a, 2, key, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "signature invalid") != NULL);
    attest_platform_close(badp);

    /* A genuine quote for one key, presented with another key. */
    get_nonce(a, na);
    REQUIRE(attest_quote_create(p, kh, na, &q) == CL_OK);
    CHECK_EQ(send_join(a, 2, other, &q, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "another TLS key") != NULL);

    /* Garbage requests are answered, and the connection stays usable. */
    json_t *req = json_pack("{s:s}", "op", "nope"), *reply = NULL;
    CHECK_EQ(coord_client_call(a, req, &reply, why, sizeof why), CL_EPROTO);
    CHECK(strstr(why, "unknown op") != NULL);
    json_decref(req);
    req = json_pack("{s:s, s:s}", "op", "join", "quote", "zz");
    CHECK_EQ(coord_client_call(a, req, &reply, why, sizeof why), CL_ECONFIG);
    json_decref(req);
    get_nonce(a, na);

    coord_client_close(a);
    coord_client_close(b);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
    attest_platform_close(p);
}

static void test_status(void)
{
    attest_platform *p;
    REQUIRE(attest_platform_open(plat, M_GOOD, &p) == CL_OK);
    coord_client *c = raw_client(p);
    json_t *req = json_pack("{s:s}", "op", "status"), *reply = NULL;
    char why[256];
    REQUIRE(coord_client_call(c, req, &reply, why, sizeof why) == CL_OK);
    CHECK_EQ(json_integer_value(json_object_get(reply, "n")), 3);
    CHECK(strcmp(json_string_value(json_object_get(reply, "measurement")), good_hex) == 0);
    json_t *members = json_object_get(reply, "members");
    CHECK_EQ(json_array_size(members), 3);
    int seen = 0;
    size_t i;
    json_t *m;
    json_array_foreach(members, i, m) {
        json_int_t id = json_integer_value(json_object_get(m, "id"));
        json_int_t epoch = json_integer_value(json_object_get(m, "epoch"));
        if (id == 2)
            CHECK(epoch >= 3);  /* two joins via coord_join, one by hand */
        else
            CHECK_EQ(epoch, 1);
        CHECK(strcmp(json_string_value(json_object_get(m, "measurement")), good_hex) == 0);
        CHECK(json_integer_value(json_object_get(m, "joined")) > 0);
        seen |= 1 << id;
    }
    CHECK_EQ(seen, (1 << 1) | (1 << 2) | (1 << 3));
    json_decref(req);
    json_decref(reply);
    coord_client_close(c);
    attest_platform_close(p);
}

static int client_cert(coord_client *c, const char *tenant, const char *token, X509 **out,
                       char *why, size_t cap)
{
    EVP_PKEY *key;
    char *pem;
    REQUIRE(cert_key_generate(&key) == CL_OK && cert_pubkey_to_pem(key, &pem) == CL_OK);
    json_t *req = json_pack("{s:s, s:s, s:s, s:s}", "op", "client_cert", "tenant", tenant,
                            "token", token, "public_key", pem), *reply = NULL;
    int rc = coord_client_call(c, req, &reply, why, cap);
    *out = NULL;
    if (rc == CL_OK) {
        REQUIRE(cert_from_pem(json_string_value(json_object_get(reply, "certificate")), out) ==
                CL_OK);
        CHECK_EQ(X509_check_private_key(*out, key), 1);
    }
    json_decref(req);
    json_decref(reply);
    free(pem);
    EVP_PKEY_free(key);
    return rc;
}

static void test_client_certificates(void)
{
    attest_platform *p;
    REQUIRE(attest_platform_open(plat, M_GOOD, &p) == CL_OK);
    coord_client *c = raw_client(p);
    char why[256], cn[64];
    X509 *x;
    REQUIRE(client_cert(c, "default", "sekrit-token-1", &x, why, sizeof why) == CL_OK);
    CHECK(cert_issued_by(x, coord_client_ca(c)));
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    CHECK(strcmp(cn, "default") == 0);
    CHECK_EQ(X509_check_purpose(x, X509_PURPOSE_SSL_CLIENT, 0), 1);
    CHECK(X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0) != 1);
    X509_free(x);
    CHECK_EQ(client_cert(c, "default", "sekrit-token-2", &x, why, sizeof why), CL_EATTEST);
    CHECK(strstr(why, "unknown tenant or wrong token") != NULL);
    CHECK_EQ(client_cert(c, "nobody", "sekrit-token-1", &x, why, sizeof why), CL_EATTEST);
    CHECK_EQ(client_cert(c, "notoken", "", &x, why, sizeof why), CL_EATTEST);
    coord_client_close(c);
    attest_platform_close(p);
}

static void test_restart_keeps_epochs_and_ca(void)
{
    coord_join_result r;
    char why[512], err[512];
    REQUIRE(join(3, M_GOOD, plat, NULL, NULL, &r, why, sizeof why) == CL_OK);
    uint64_t before = r.epoch;
    X509 *ca = r.ca;
    X509_up_ref(ca);
    coord_join_result_fini(&r);
    coord_destroy(co);
    co = NULL;
    REQUIRE(start_coord() == CL_OK);
    REQUIRE(join(3, M_GOOD, plat, NULL, NULL, &r, why, sizeof why) == CL_OK);
    CHECK_EQ(r.epoch, before + 1);
    CHECK_EQ(r.recover, 1);
    CHECK_EQ(X509_cmp(r.ca, ca), 0);
    coord_join_result_fini(&r);
    X509_free(ca);

    /* An altered member table is refused at start-up. */
    coord_destroy(co);
    co = NULL;
    char path[160], orig[8192], text[8192];
    snprintf(path, sizeof path, "%s/%s", state, COORD_MEMBERS_FILE);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    size_t n = fread(orig, 1, sizeof orig - 1, f);
    fclose(f);
    orig[n] = '\0';
    memcpy(text, orig, n + 1);
    char *ep = strstr(text, "\"epoch\": ");
    REQUIRE(ep != NULL);
    ep[9] = ep[9] == '9' ? '8' : (char)(ep[9] + 1);   /* an operator rewinding/advancing an epoch */
    write_file(path, text);
    coord_config cfg = { .listen = "127.0.0.1:0", .manifest_file = manifest, .state_dir = state,
                         .platform_dir = plat, .measurement = M_GOOD };
    CHECK_EQ(coord_create(&cfg, &co, err, sizeof err), CL_ECONFIG);
    CHECK(strstr(err, "altered") != NULL);
    printf("     e.g.: %s\n", err);
    CHECK(co == NULL);
    /* The genuine file is accepted again. */
    write_file(path, orig);
    REQUIRE(start_coord() == CL_OK);
}

static void expect_bad_manifest(const char *text, const char *must_mention)
{
    char path[160], err[512];
    snprintf(path, sizeof path, "%s/bad.json", root);
    write_file(path, text);
    coord *c = NULL;
    coord_config cfg = { .listen = "127.0.0.1:0", .manifest_file = path, .state_dir = state,
                         .platform_dir = plat, .measurement = M_GOOD };
    int rc = coord_create(&cfg, &c, err, sizeof err);
    CHECK_EQ(rc, CL_ECONFIG);
    if (rc == CL_OK)
        coord_destroy(c);
    else if (!strstr(err, must_mention))
        fprintf(stderr, "     manifest error does not mention '%s': %s\n", must_mention, err);
    CHECK(rc != CL_OK && strstr(err, must_mention) != NULL);
}

static void test_bad_manifests(void)
{
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 1}], \"extra\": 1}",
                        "unknown field \"extra\"");
    expect_bad_manifest("{\"measurements\": [\"abcd\"], \"nodes\": [{\"id\": 1}]}",
                        "measurements[0]");
    expect_bad_manifest("{\"measurements\": [], \"nodes\": [{\"id\": 1}]}", "measurements");
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 9}]}", "nodes[0].id");
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 1}, {\"id\": 1}]}",
                        "listed twice");
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 1, \"peer\": \"x\"}]}",
                        "nodes[0].peer");
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 1}], \"tenants\": "
                        "[{\"name\": \"t\", \"namespaces\": [{\"prefix\": \"\", \"mode\": \"weird\"}]}]}",
                        "tenants[0].namespaces[0].mode");
    expect_bad_manifest("{\"measurements\": [\"self\"], \"nodes\": [{\"id\": 1}], "
                        "\"cert_validity_s\": 5}", "cert_validity_s");
    expect_bad_manifest("{\"measurements\": [\"self\"], ", "bad.json:");
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
    snprintf(root, sizeof root, "/tmp/cl-coord-XXXXXX");
    REQUIRE(mkdtemp(root) != NULL);
    snprintf(plat, sizeof plat, "%s/platform", root);
    snprintf(plat_foreign, sizeof plat_foreign, "%s/platform-foreign", root);
    snprintf(state, sizeof state, "%s/state", root);
    snprintf(manifest, sizeof manifest, "%s/manifest.json", root);
    memset(M_GOOD, 0x3f, 32);
    memset(M_BAD, 0xa1, 32);
    attest_hex(M_GOOD, 32, good_hex);
    write_manifest();
    REQUIRE(start_coord() == CL_OK);
    RUN(test_join_and_epochs);
    RUN(test_wrong_measurement_refused);
    RUN(test_node_refuses_coordinator);
    RUN(test_replayed_forged_mismatched);
    RUN(test_status);
    RUN(test_client_certificates);
    RUN(test_bad_manifests);
    RUN(test_restart_keeps_epochs_and_ca);
    coord_destroy(co);
    rm_rf(root);
    return th_done();
}
