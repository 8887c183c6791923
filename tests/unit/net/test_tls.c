/*
 * test_tls.c - the TLS side of the network layer (net/tls.c and the
 * handshake path of net/server.c): context creation and its error
 * messages, TLS 1.3 only, what a failed handshake does to the server
 * (nothing beyond that connection), and mandatory client certificates.
 * Data-path behaviour over TLS is covered by test_server.c's TLS pass.
 */
#include "nettest.h"

static test_pki pki;

static int ctx_error(const char *cert, const char *key, const char *ca, char *err, size_t cap)
{
    net_tls_config cfg = { .cert_file = cert, .key_file = key, .ca_file = ca };
    SSL_CTX *ctx = (SSL_CTX *)1;
    int rc = net_tls_server_ctx_create(&cfg, &ctx, err, cap);
    if (rc == CL_OK)
        SSL_CTX_free(ctx);
    else
        CHECK(ctx == NULL);
    CHECK_EQ(ERR_peek_error(), 0); /* the error queue is left empty */
    return rc;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    MUST(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_ctx_errors(void)
{
    char err[512], missing[160], garbage[160];
    snprintf(missing, sizeof missing, "%s/does-not-exist.pem", pki.dir);
    snprintf(garbage, sizeof garbage, "%s/garbage.pem", pki.dir);
    write_file(garbage, "this is not a certificate\n");

    CHECK_EQ(ctx_error(pki.server_cert, pki.server_key, NULL, err, sizeof err), CL_OK);
    CHECK_EQ(ctx_error(pki.server_cert, pki.server_key, pki.ca, err, sizeof err), CL_OK);

    CHECK_EQ(ctx_error(missing, pki.server_key, NULL, err, sizeof err), CL_EIO);
    CHECK(strstr(err, "certificate") && strstr(err, missing) && strstr(err, "No such file"));
    CHECK_EQ(ctx_error(pki.server_cert, missing, NULL, err, sizeof err), CL_EIO);
    CHECK(strstr(err, "private key") && strstr(err, missing));
    CHECK_EQ(ctx_error(pki.server_cert, pki.server_key, missing, err, sizeof err), CL_EIO);
    CHECK(strstr(err, "CA") && strstr(err, missing));

    CHECK_EQ(ctx_error(garbage, pki.server_key, NULL, err, sizeof err), CL_ETLS);
    CHECK(strstr(err, garbage) != NULL);
    CHECK(strlen(err) > strlen(garbage) + 40); /* OpenSSL's reason is appended */
    printf("     e.g.: %s\n", err);
    CHECK_EQ(ctx_error(pki.server_cert, garbage, NULL, err, sizeof err), CL_ETLS);
    CHECK(strstr(err, garbage) != NULL);
    CHECK_EQ(ctx_error(pki.server_cert, pki.client_key, NULL, err, sizeof err), CL_ETLS);
    CHECK(strstr(err, "does not match") != NULL);
    CHECK_EQ(ctx_error(pki.server_cert, pki.server_key, garbage, err, sizeof err), CL_ETLS);
    CHECK(strstr(err, garbage) != NULL);
    CHECK_EQ(ctx_error(pki.server_cert, NULL, NULL, err, sizeof err), CL_EINVAL);
    CHECK(err[0] != '\0');
    unlink(garbage);
}

static uint64_t hs_failures(net_server *s)
{
    net_stats st;
    net_server_get_stats(s, &st);
    return st.tls_handshake_failures;
}

static uint64_t wait_hs_failures(net_server *s, uint64_t want)
{
    double end = now_sec() + 5.0;
    while (hs_failures(s) < want && now_sec() < end)
        sleep_ms(2);
    return hs_failures(s);
}

static void test_versions_and_bad_clients(void)
{
    SSL_CTX *sctx = pki_server_ctx(&pki, 0);
    SSL_CTX *good = pki_client_ctx(&pki, NULL, 0);
    SSL_CTX *tls12 = pki_client_ctx(&pki, NULL, TLS1_2_VERSION);
    int port;
    net_server *s = server_start(&echo_proto, NULL, sctx, 2, &port);

    tconn *c = tc_connect(port, good);
    MUST(c != NULL);
    CHECK(strcmp(SSL_get_version(c->ssl), "TLSv1.3") == 0);
    CHECK(tc_echo(c, "over TLS 1.3\n") == 0);

    uint64_t f0 = hs_failures(s);
    tconn *old = tc_connect(port, tls12); /* refused during the handshake */
    CHECK(old == NULL);
    tc_close(old);
    CHECK_EQ(wait_hs_failures(s, f0 + 1), f0 + 1);

    /* A plaintext client on the TLS port is closed, not answered. */
    tconn *plain = tc_connect(port, NULL);
    MUST(plain != NULL);
    CHECK(tc_puts(plain, "get foo\r\n") == 0);
    CHECK(tc_closed_by_peer(plain));
    tc_close(plain);
    CHECK_EQ(wait_hs_failures(s, f0 + 2), f0 + 2);

    /* Half a ClientHello, then gone: freed like any other connection. */
    tconn *half = tc_connect(port, NULL);
    MUST(half != NULL);
    static const uint8_t hello_start[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01 };
    CHECK(tc_write(half, hello_start, sizeof hello_start) == 0);
    sleep_ms(20);
    tc_close(half);

    /* A client that connects and never speaks holds nothing but its slot. */
    tconn *mute = tc_connect(port, NULL);
    MUST(mute != NULL);
    CHECK_EQ(wait_curr_connections(s, 2, 5.0), 2); /* c and mute */

    CHECK(tc_echo(c, "the good client is unaffected\n") == 0);
    tc_close(mute);
    tc_close(c);
    CHECK_EQ(wait_curr_connections(s, 0, 5.0), 0);
    CHECK_EQ(wait_atomic_int(&echo_sessions_alive, 0, 5.0), 0);
    net_server_destroy(s);
    SSL_CTX_free(sctx); /* the server held its own reference until now */
    SSL_CTX_free(good);
    SSL_CTX_free(tls12);
}

/* With TLS 1.3 the client finishes its side of the handshake before the
 * server has judged the client certificate, so a refusal shows on the
 * first exchange, not necessarily in SSL_connect. */
static int client_cert_accepted(int port, SSL_CTX *cctx)
{
    tconn *c = tc_connect(port, cctx);
    if (!c)
        return 0;
    int ok = tc_echo(c, "with a client certificate\n") == 0;
    tc_close(c);
    return ok;
}

static void test_client_certificates(void)
{
    SSL_CTX *sctx = pki_server_ctx(&pki, 1);
    SSL_CTX *none = pki_client_ctx(&pki, NULL, 0);
    SSL_CTX *client = pki_client_ctx(&pki, "client", 0);
    SSL_CTX *rogue = pki_client_ctx(&pki, "rogue", 0);
    int port;
    net_server *s = server_start(&echo_proto, NULL, sctx, 2, &port);

    uint64_t f0 = hs_failures(s);
    CHECK(client_cert_accepted(port, client));
    CHECK(!client_cert_accepted(port, none));
    CHECK(!client_cert_accepted(port, rogue));
    CHECK(client_cert_accepted(port, client));
    CHECK_EQ(wait_hs_failures(s, f0 + 2), f0 + 2);

    CHECK_EQ(wait_curr_connections(s, 0, 5.0), 0);
    net_server_destroy(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(none);
    SSL_CTX_free(client);
    SSL_CTX_free(rogue);
}

int main(void)
{
    cl_log_set_level(getenv("NET_TEST_DEBUG") ? CL_LOG_DEBUG : CL_LOG_ERROR);
    pki_create(&pki);
    RUN(test_ctx_errors);
    RUN(test_versions_and_bad_clients);
    RUN(test_client_certificates);
    pki_destroy(&pki);
    CHECK_EQ(atomic_load(&echo_threads_alive), 0);
    return th_done();
}
