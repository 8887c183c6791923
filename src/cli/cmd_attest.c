/*
 * cmd_attest.c - `cloister attest`: verify the cluster's coordinator by
 * its quote (coord/client.h) against the measurement the user expects and
 * the platform key the user trusts, then save the cluster CA, and, for a
 * tenant holding its token, a client certificate.
 *
 * What the user must bring from a trusted source: the expected
 * measurement (a hash, or the binary they built and reviewed) and the
 * platform's attestation public key.  Everything else - the CA, the
 * certificates - is accepted only over the connection the quote proved
 * to be the attested coordinator's.
 *
 * Files written (directory created 0700 if missing, each file written to
 * a temporary name and renamed): DIR/ca.pem; DIR/client.pem and
 * DIR/client.key (0600) with --tenant/--token.  The client key is made
 * here and never leaves this machine; only its public half is sent.
 */
#include "cli.h"

#include "../common/err.h"
#include "../coord/client.h"
#include "../trust/attest.h"
#include "../trust/cert.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --platform-key: 64 hex digits, or a file whose first line holds them. */
static int read_platform_key(const char *arg, uint8_t key[ATTEST_PLATFORM_KEY_LEN])
{
    if (attest_unhex(arg, key, ATTEST_PLATFORM_KEY_LEN) == 0)
        return 0;
    FILE *f = fopen(arg, "r");
    if (!f)
        return -1;
    char line[160] = "";
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    line[strcspn(line, "\r\n")] = '\0';
    return ok && attest_unhex(line, key, ATTEST_PLATFORM_KEY_LEN) == 0 ? 0 : -1;
}

/* Writes text to dir/name with `mode`, atomically.  0 or -1 (errno). */
static int save(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.%s.%ld", dir, name, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int ok = done == len && fsync(fd) == 0;
    int saved = errno;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return 0;
    saved = errno ? errno : saved;
    unlink(tmp);
    errno = saved;
    return -1;
}

/* Asks for a client certificate for the tenant and saves it with a key
 * made here. */
static int get_client_cert(coord_client *cc, const cli_opts *o)
{
    EVP_PKEY *key = NULL;
    char *pub = NULL, *key_pem = NULL, why[512];
    json_t *req = NULL, *reply = NULL;
    X509 *cert = NULL;
    int rc = CLI_FAIL;
    if (cert_key_generate(&key) != CL_OK || cert_pubkey_to_pem(key, &pub) != CL_OK ||
        cert_privkey_to_pem(key, &key_pem) != CL_OK ||
        !(req = json_pack("{s:s, s:s, s:s, s:s}", "op", "client_cert", "tenant", o->tenant,
                          "token", o->token, "public_key", pub))) {
        fprintf(stderr, "cloister attest: cannot make a client key\n");
        goto out;
    }
    if (coord_client_call(cc, req, &reply, why, sizeof why) != CL_OK) {
        fprintf(stderr, "cloister attest: no client certificate for tenant %s: %s\n", o->tenant, why);
        goto out;
    }
    const char *pem = json_string_value(json_object_get(reply, "certificate"));
    if (!pem || cert_from_pem(pem, &cert) != CL_OK || X509_check_private_key(cert, key) != 1 ||
        !cert_issued_by(cert, coord_client_ca(cc))) {
        fprintf(stderr, "cloister attest: the coordinator's client certificate is not for our key "
                        "or not from the cluster CA\n");
        goto out;
    }
    if (save(o->out, "client.key", key_pem, 0600) != 0 || save(o->out, "client.pem", pem, 0644) != 0) {
        fprintf(stderr, "cloister attest: cannot write the client certificate to %s: %s\n", o->out,
                strerror(errno));
        goto out;
    }
    printf("saved a client certificate for tenant %s: %s/client.pem, key %s/client.key\n",
           o->tenant, o->out, o->out);
    rc = CLI_OK;
out:
    X509_free(cert);
    json_decref(req);
    json_decref(reply);
    cert_pem_free_secret(key_pem);
    free(pub);
    EVP_PKEY_free(key);
    return rc;
}

int cmd_attest(const cli_opts *o)
{
    uint8_t expect[ATTEST_HASH_LEN], platform[ATTEST_PLATFORM_KEY_LEN];
    if (!o->coordinator)
        return cli_usage_error("attest", "--coordinator HOST:PORT is required");
    if (!o->expect == !o->expect_binary)
        return cli_usage_error("attest", "give the expected measurement: --expect HEX or "
                                         "--expect-binary FILE (one of them)");
    if (!o->platform_key)
        return cli_usage_error("attest", "--platform-key HEX|FILE is required: the platform "
                                         "attestation key you trust (the coordinator logs it; "
                                         "PLATFORM_DIR/attestation.pub holds it)");
    if (!o->out)
        return cli_usage_error("attest", "--out DIR is required (where ca.pem is saved)");
    if (!o->tenant != !o->token)
        return cli_usage_error("attest", "a client certificate needs both --tenant T and "
                                         "--token S");
    if (o->expect && attest_unhex(o->expect, expect, sizeof expect) != 0)
        return cli_usage_error("attest", "--expect '%s' is not a SHA-256: expected 64 hex digits",
                               o->expect);
    if (o->expect_binary && attest_measure_file(o->expect_binary, expect) != CL_OK) {
        fprintf(stderr, "cloister attest: cannot read %s: %s\n", o->expect_binary, strerror(errno));
        return CLI_FAIL;
    }
    if (read_platform_key(o->platform_key, platform) != 0)
        return cli_usage_error("attest", "--platform-key '%s' is neither 64 hex digits nor a "
                                         "readable file holding them", o->platform_key);

    attest_policy pol;
    attest_policy_init(&pol);
    pol.allowed = o->expect ? "the expected one (--expect)" : "the expected one (--expect-binary)";
    if (attest_policy_add_measurement(&pol, expect) != CL_OK ||
        attest_policy_add_platform_key(&pol, platform) != CL_OK) {
        fprintf(stderr, "cloister attest: out of memory\n");
        attest_policy_fini(&pol);
        return CLI_FAIL;
    }
    coord_client *cc = NULL;
    char why[1024], *ca_pem = NULL;
    int rc = CLI_FAIL;
    int timeout_ms = o->timeout_s > 0 ? o->timeout_s * 1000 : 10000;
    if (coord_client_open(o->coordinator, &pol, timeout_ms, &cc, why, sizeof why) != CL_OK) {
        fprintf(stderr, "cloister attest: %s\n", why);
        goto out;
    }
    if (mkdir(o->out, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "cloister attest: cannot create %s: %s\n", o->out, strerror(errno));
        goto out;
    }
    if (cert_to_pem(coord_client_ca(cc), &ca_pem) != CL_OK || save(o->out, "ca.pem", ca_pem, 0644)) {
        fprintf(stderr, "cloister attest: cannot write %s/ca.pem: %s\n", o->out, strerror(errno));
        goto out;
    }
    char mh[2 * ATTEST_HASH_LEN + 1];
    attest_hex(coord_client_quote(cc)->measurement, ATTEST_HASH_LEN, mh);
    printf("coordinator %s attested: measurement %s (simulation-mode platform)\n"
           "saved the cluster CA to %s/ca.pem\n", o->coordinator, mh, o->out);
    rc = o->tenant ? get_client_cert(cc, o) : CLI_OK;
out:
    free(ca_pem);
    coord_client_close(cc);
    attest_policy_fini(&pol);
    return rc;
}
