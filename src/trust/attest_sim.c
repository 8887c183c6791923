/*
 * attest_sim.c - the simulated attestation backend: measuring the binary
 * and signing quotes with the simulated platform key (attest.h).
 *
 * This is what TEE hardware does in a real deployment (the CPU measures
 * the enclave as it loads it and signs reports with a key only it holds).
 * Here the measurement is SHA-256 of /proc/self/exe, read when the
 * platform is opened, and the signing key is Ed25519 derived from the
 * platform root key (platform.h) with the label "attestation".  A hardware
 * backend replaces this file; attest.c (formats, verification) stays.
 *
 * The Ed25519 private key lives only inside the attest_platform object
 * (OpenSSL's EVP_PKEY, which cleanses it when freed); the root key and the
 * derived seed are wiped as soon as the key object exists.
 */
#include "attest.h"
#include "platform.h"

#include "../common/err.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char MOD[] = "attest";

#define ATTEST_PUB_FILE "attestation.pub"

struct attest_platform {
    EVP_PKEY *key;                                  /* Ed25519, private */
    uint8_t pub[ATTEST_PLATFORM_KEY_LEN];
    uint8_t measurement[ATTEST_HASH_LEN];
};

int attest_measure_file(const char *path, uint8_t out[ATTEST_HASH_LEN])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return CL_EIO;
    int rc = CL_ECRYPTO;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto out;
    uint8_t buf[1 << 16];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = CL_EIO;
            goto out;
        }
        if (r == 0)
            break;
        if (EVP_DigestUpdate(md, buf, (size_t)r) != 1)
            goto out;
    }
    unsigned len = 0;
    if (EVP_DigestFinal_ex(md, out, &len) == 1 && len == ATTEST_HASH_LEN)
        rc = CL_OK;
out:
    {
        int saved = errno;
        EVP_MD_CTX_free(md);
        close(fd);
        errno = saved;
    }
    return rc;
}

int attest_measure_self(uint8_t out[ATTEST_HASH_LEN])
{
    int rc = attest_measure_file("/proc/self/exe", out);
    if (rc == CL_EIO)
        cl_log_error(MOD, "cannot measure this binary (/proc/self/exe): %s", strerror(errno));
    return rc;
}

/* Writes the public key, in hex, to dir/attestation.pub unless it is
 * there already with that content.  Best effort: the file is a
 * convenience for `cloister attest --platform-key FILE`. */
static void write_public_key(const char *dir, const uint8_t pub[ATTEST_PLATFORM_KEY_LEN])
{
    char path[PATH_MAX], tmp[PATH_MAX], hex[2 * ATTEST_PLATFORM_KEY_LEN + 2];
    attest_hex(pub, ATTEST_PLATFORM_KEY_LEN, hex);
    if (snprintf(path, sizeof path, "%s/%s", dir, ATTEST_PUB_FILE) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.%s.%ld", dir, ATTEST_PUB_FILE, (long)getpid()) >=
            (int)sizeof tmp)
        return;
    char old[sizeof hex + 8] = "";
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(old, sizeof old, f))
            old[0] = '\0';
        fclose(f);
        old[strcspn(old, "\n")] = '\0';
        if (strcmp(old, hex) == 0)
            return;
    }
    strcat(hex, "\n");
    f = fopen(tmp, "w");
    if (!f)
        return;
    int ok = fputs(hex, f) >= 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        unlink(tmp);
}

int attest_platform_open(const char *platform_dir, const uint8_t *measurement,
                         attest_platform **out)
{
    *out = NULL;
    uint8_t root[PLATFORM_KEY_LEN], seed[PLATFORM_KEY_LEN];
    attest_platform *p = calloc(1, sizeof *p);
    if (!p)
        return CL_ENOMEM;
    int rc;
    if (mkdir(platform_dir, 0700) != 0 && errno != EEXIST) {
        cl_log_error(MOD, "cannot create the platform directory %s: %s", platform_dir,
                     strerror(errno));
        rc = CL_EIO;
        goto fail;
    }
    if (measurement)
        memcpy(p->measurement, measurement, ATTEST_HASH_LEN);
    else if ((rc = attest_measure_self(p->measurement)) != CL_OK)
        goto fail;
    if ((rc = platform_key_load(platform_dir, root)) != CL_OK)
        goto fail;
    rc = platform_derive(root, "attestation", seed);
    platform_key_wipe(root, sizeof root);
    if (rc != CL_OK)
        goto fail;
    p->key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof seed);
    platform_key_wipe(seed, sizeof seed);
    size_t publen = sizeof p->pub;
    rc = CL_ECRYPTO;
    if (!p->key || EVP_PKEY_get_raw_public_key(p->key, p->pub, &publen) != 1 ||
        publen != sizeof p->pub)
        goto fail;
    write_public_key(platform_dir, p->pub);
    *out = p;
    return CL_OK;
fail:
    attest_platform_close(p);
    return rc;
}

void attest_platform_close(attest_platform *p)
{
    if (!p)
        return;
    EVP_PKEY_free(p->key);   /* cleanses the private key */
    platform_key_wipe(p, sizeof *p);
    free(p);
}

const uint8_t *attest_platform_key(const attest_platform *p)
{
    return p->pub;
}

const uint8_t *attest_platform_measurement(const attest_platform *p)
{
    return p->measurement;
}

int attest_quote_create(const attest_platform *p, const uint8_t pubkey_hash[ATTEST_HASH_LEN],
                        const uint8_t nonce[ATTEST_NONCE_LEN], attest_quote *out)
{
    memset(out, 0, sizeof *out);
    out->version = ATTEST_QUOTE_VERSION;
    memcpy(out->measurement, p->measurement, ATTEST_HASH_LEN);
    memcpy(out->pubkey_hash, pubkey_hash, ATTEST_HASH_LEN);
    memcpy(out->nonce, nonce, ATTEST_NONCE_LEN);
    memcpy(out->platform_key, p->pub, ATTEST_PLATFORM_KEY_LEN);

    uint8_t msg[ATTEST_QUOTE_LEN];
    attest_quote_encode(out, msg);   /* signature bytes still zero: only 0..135 are signed */
    int rc = CL_ECRYPTO;
    size_t siglen = ATTEST_SIG_LEN;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md && EVP_DigestSignInit(md, NULL, NULL, NULL, p->key) == 1 &&
        EVP_DigestSign(md, out->signature, &siglen, msg, ATTEST_QUOTE_SIGNED_LEN) == 1 &&
        siglen == ATTEST_SIG_LEN)
        rc = CL_OK;
    EVP_MD_CTX_free(md);
    return rc;
}
