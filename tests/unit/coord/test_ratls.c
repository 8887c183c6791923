/*
 * test_ratls.c - attested TLS between nodes, with real handshakes in one
 * process over socketpairs: contexts built from in-memory keys and
 * certificates (net/tls.h: net_tls_ctx_new, _use_identity, _trust) accept
 * the cluster CA's node certificates both ways and refuse expired
 * certificates, certificates from a foreign CA and missing client
 * certificates; a certificate that OpenSSL accepts but whose quote does
 * not verify (wrong measurement, no quote) is refused by
 * attest_verify_peer, which the peer transport calls after the handshake.
 * (Here rather than in tests/unit/trust: the trust layer links libcrypto
 * only, the TLS contexts live in net, which coord links.)
 */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/net/tls.h"
#include "../../../src/trust/attest.h"
#include "../../../src/trust/ca.h"
#include "../../../src/trust/cert.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char root[64], plat[96];
static uint8_t M_GOOD[32], M_BAD[32];
static cluster_ca *ca, *foreign_ca;
static attest_platform *good, *bad;
static attest_policy policy;

typedef struct ident {
    EVP_PKEY *key;
    X509 *cert;
} ident;

/* A node identity: fresh key, quote by platform p, certificate from
 * `issuer` valid over [now + from, now + to]. */
static ident node_ident(int id, attest_platform *p, cluster_ca *issuer, long from, long to)
{
    ident it;
    uint8_t h[32], nonce[32] = { 1 };
    attest_quote q;
    REQUIRE(cert_key_generate(&it.key) == CL_OK && attest_pubkey_hash(it.key, h) == CL_OK);
    REQUIRE(attest_quote_create(p, h, nonce, &q) == CL_OK);
    char cn[32];
    snprintf(cn, sizeof cn, "cloister-node-%d", id);
    const char *hosts[] = { "127.0.0.1" };
    int64_t now = (int64_t)time(NULL);
    ca_request r = { .key = it.key, .common_name = cn, .hosts = hosts, .n_hosts = 1, .quote = &q,
                     .usage = CA_USAGE_SERVER | CA_USAGE_CLIENT, .not_before = now + from,
                     .not_after = now + to };
    REQUIRE(ca_issue(issuer, &r, &it.cert) == CL_OK);
    return it;
}

static ident tenant_ident(void)
{
    ident it;
    REQUIRE(cert_key_generate(&it.key) == CL_OK);
    int64_t now = (int64_t)time(NULL);
    ca_request r = { .key = it.key, .common_name = "default", .usage = CA_USAGE_CLIENT,
                     .not_before = now - 60, .not_after = now + 3600 };
    REQUIRE(ca_issue(ca, &r, &it.cert) == CL_OK);
    return it;
}

static void ident_free(ident *it)
{
    X509_free(it->cert);
    EVP_PKEY_free(it->key);
}

/* A context of `role` presenting `it` (NULL: nothing) and trusting the
 * cluster CA. */
static SSL_CTX *ctx_for(net_tls_role role, const ident *it)
{
    SSL_CTX *ctx;
    char err[256];
    REQUIRE(net_tls_ctx_new(role, &ctx, err, sizeof err) == CL_OK);
    if (it)
        REQUIRE(net_tls_ctx_use_identity(ctx, it->cert, NULL, it->key, err, sizeof err) == CL_OK);
    REQUIRE(net_tls_ctx_trust(ctx, ca_cert(ca), err, sizeof err) == CL_OK);
    return ctx;
}

typedef struct hs {
    int server_ok, client_ok;
    long server_verify, client_verify;
    int server_peer_id, client_peer_id;   /* attest_verify_peer, -1 = refused */
    char server_why[ATTEST_WHY_LEN];
} hs;

/* Runs a handshake between the two contexts over a socketpair, both ends
 * non-blocking in this one thread.  The client checks the server's
 * address against check_ip (NULL: no check).  Afterwards each side that
 * completed attests its peer's certificate. */
static hs handshake(SSL_CTX *sctx, SSL_CTX *cctx, const char *check_ip)
{
    hs out = { 0 };
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    REQUIRE(s && c && SSL_set_fd(s, sv[0]) == 1 && SSL_set_fd(c, sv[1]) == 1);
    if (check_ip)
        REQUIRE(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c), check_ip) == 1);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int sdone = 0, cdone = 0, sfail = 0, cfail = 0;
    for (int i = 0; i < 200 && !((sdone || sfail) && (cdone || cfail)); i++) {
        if (!sdone && !sfail) {
            int r = SSL_do_handshake(s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(s, r) != SSL_ERROR_WANT_WRITE)
                sfail = 1;
        }
        if (!cdone && !cfail) {
            int r = SSL_do_handshake(c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(c, r) != SSL_ERROR_WANT_WRITE)
                cfail = 1;
        }
        if (sfail && !cdone)
            break;       /* the client waits for a server that gave up */
    }
    /* TLS 1.3: the client finishes before the server has checked the
     * client's certificate; the server's refusal would reach it on its
     * next read.  A connection the server refused is not up. */
    if (sfail)
        cdone = 0;
    out.server_ok = sdone;
    out.client_ok = cdone;
    out.server_verify = SSL_get_verify_result(s);
    out.client_verify = SSL_get_verify_result(c);
    char why[ATTEST_WHY_LEN];
    out.server_peer_id = out.client_peer_id = -1;
    if (sdone && attest_verify_peer(SSL_get0_peer_certificate(s), &policy, &out.server_peer_id,
                                    out.server_why, sizeof out.server_why) != CL_OK)
        out.server_peer_id = -1;
    if (cdone && attest_verify_peer(SSL_get0_peer_certificate(c), &policy, &out.client_peer_id,
                                    why, sizeof why) != CL_OK)
        out.client_peer_id = -1;
    SSL_free(s);
    SSL_free(c);
    close(sv[0]);
    close(sv[1]);
    ERR_clear_error();
    return out;
}

static void test_mutual_ok(void)
{
    ident n1 = node_ident(1, good, ca, -60, 3600), n2 = node_ident(2, good, ca, -60, 3600);
    SSL_CTX *s = ctx_for(NET_TLS_SERVER, &n1), *c = ctx_for(NET_TLS_CLIENT, &n2);
    hs h = handshake(s, c, "127.0.0.1");
    CHECK(h.server_ok && h.client_ok);
    CHECK_EQ(h.server_peer_id, 2);   /* the listener learns who dialled */
    CHECK_EQ(h.client_peer_id, 1);
    /* The node certificate names 127.0.0.1 only. */
    h = handshake(s, c, "10.1.2.3");
    CHECK(!h.client_ok);
    CHECK_EQ(h.client_verify, X509_V_ERR_IP_ADDRESS_MISMATCH);
    SSL_CTX_free(s);
    SSL_CTX_free(c);
    ident_free(&n1);
    ident_free(&n2);
}

static void test_bad_server_certificates(void)
{
    ident n2 = node_ident(2, good, ca, -60, 3600);
    SSL_CTX *c = ctx_for(NET_TLS_CLIENT, &n2);
    struct { ident it; long want; } cases[] = {
        { node_ident(1, good, ca, -7200, -3600), X509_V_ERR_CERT_HAS_EXPIRED },
        { node_ident(1, good, ca, 3600, 7200), X509_V_ERR_CERT_NOT_YET_VALID },
        { node_ident(1, good, foreign_ca, -60, 3600), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        SSL_CTX *s = ctx_for(NET_TLS_SERVER, &cases[i].it);
        hs h = handshake(s, c, NULL);
        CHECK(!h.client_ok);
        CHECK_EQ(h.client_verify, cases[i].want);
        SSL_CTX_free(s);
        ident_free(&cases[i].it);
    }
    SSL_CTX_free(c);
    ident_free(&n2);
}

static void test_bad_client_certificates(void)
{
    ident n1 = node_ident(1, good, ca, -60, 3600);
    SSL_CTX *s = ctx_for(NET_TLS_SERVER, &n1);
    ident expired = node_ident(2, good, ca, -7200, -3600);
    ident foreign = node_ident(2, good, foreign_ca, -60, 3600);
    SSL_CTX *c = ctx_for(NET_TLS_CLIENT, &expired);
    hs h = handshake(s, c, NULL);
    CHECK(!h.server_ok && !h.client_ok);
    CHECK_EQ(h.server_verify, X509_V_ERR_CERT_HAS_EXPIRED);
    SSL_CTX_free(c);
    c = ctx_for(NET_TLS_CLIENT, &foreign);
    h = handshake(s, c, NULL);
    CHECK(!h.server_ok && !h.client_ok);
    CHECK_EQ(h.server_verify, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    SSL_CTX_free(c);
    c = ctx_for(NET_TLS_CLIENT, NULL);      /* no certificate at all */
    h = handshake(s, c, NULL);
    CHECK(!h.server_ok && !h.client_ok);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
    ident_free(&n1);
    ident_free(&expired);
    ident_free(&foreign);
}

static void test_valid_chain_but_not_attested(void)
{
    /* Genuine CA, genuine platform, but code the manifest does not allow
     * (say, the manifest changed): TLS is happy, attestation is not. */
    ident n1 = node_ident(1, good, ca, -60, 3600);
    ident wrong = node_ident(2, bad, ca, -60, 3600);
    ident tenant = tenant_ident();
    SSL_CTX *s = ctx_for(NET_TLS_SERVER, &n1), *c = ctx_for(NET_TLS_CLIENT, &wrong);
    hs h = handshake(s, c, NULL);
    CHECK(h.server_ok && h.client_ok);
    CHECK_EQ(h.server_peer_id, -1);
    CHECK(strstr(h.server_why, "not allowed by the manifest") != NULL);
    SSL_CTX_free(c);
    /* A tenant's client certificate on a peer link: no quote, not a node. */
    c = ctx_for(NET_TLS_CLIENT, &tenant);
    h = handshake(s, c, NULL);
    CHECK(h.server_ok);
    CHECK_EQ(h.server_peer_id, -1);
    CHECK(strstr(h.server_why, "no attestation quote") != NULL);
    SSL_CTX_free(c);
    SSL_CTX_free(s);
    ident_free(&n1);
    ident_free(&wrong);
    ident_free(&tenant);
}

static void test_ctx_helpers(void)
{
    char err[256], path[160];
    ident n1 = node_ident(1, good, ca, -60, 3600), n2 = node_ident(2, good, ca, -60, 3600);
    SSL_CTX *ctx;
    REQUIRE(net_tls_ctx_new(NET_TLS_SERVER, &ctx, err, sizeof err) == CL_OK);
    CHECK_EQ(net_tls_ctx_use_identity(ctx, n1.cert, NULL, n2.key, err, sizeof err), CL_ETLS);
    CHECK(err[0] != '\0');
    CHECK_EQ(net_tls_ctx_use_identity(ctx, n1.cert, NULL, n1.key, err, sizeof err), CL_OK);
    snprintf(path, sizeof path, "%s/missing.pem", root);
    CHECK_EQ(net_tls_ctx_trust_file(ctx, path, err, sizeof err), CL_EIO);
    /* Trusting the CA from a PEM file works like the in-memory anchor. */
    snprintf(path, sizeof path, "%s/ca.pem", root);
    FILE *f = fopen(path, "w");
    REQUIRE(f && PEM_write_X509(f, ca_cert(ca)) == 1);
    fclose(f);
    CHECK_EQ(net_tls_ctx_trust_file(ctx, path, err, sizeof err), CL_OK);
    SSL_CTX *c = ctx_for(NET_TLS_CLIENT, &n2);
    hs h = handshake(ctx, c, "127.0.0.1");
    CHECK(h.server_ok && h.client_ok);
    CHECK_EQ(h.server_peer_id, 2);
    SSL_CTX_free(c);
    SSL_CTX_free(ctx);
    ident_free(&n1);
    ident_free(&n2);
}

int main(void)
{
    snprintf(root, sizeof root, "/tmp/cl-ratls-XXXXXX");
    REQUIRE(mkdtemp(root) != NULL);
    snprintf(plat, sizeof plat, "%s/platform", root);
    memset(M_GOOD, 0x3f, 32);
    memset(M_BAD, 0xa1, 32);
    REQUIRE(ca_create_ephemeral("Cloister cluster CA", &ca) == CL_OK);
    REQUIRE(ca_create_ephemeral("Rogue CA", &foreign_ca) == CL_OK);
    REQUIRE(attest_platform_open(plat, M_GOOD, &good) == CL_OK);
    REQUIRE(attest_platform_open(plat, M_BAD, &bad) == CL_OK);
    attest_policy_init(&policy);
    policy.allowed = "allowed by the manifest";
    REQUIRE(attest_policy_add_measurement(&policy, M_GOOD) == CL_OK);
    REQUIRE(attest_policy_add_platform_key(&policy, attest_platform_key(good)) == CL_OK);
    RUN(test_mutual_ok);
    RUN(test_bad_server_certificates);
    RUN(test_bad_client_certificates);
    RUN(test_valid_chain_but_not_attested);
    RUN(test_ctx_helpers);
    attest_policy_fini(&policy);
    attest_platform_close(good);
    attest_platform_close(bad);
    ca_destroy(ca);
    ca_destroy(foreign_ca);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", root);
    return th_done();
}
