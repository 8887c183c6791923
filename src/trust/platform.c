/*
 * platform.c - the simulated platform's persistent root key (see
 * platform.h for what simulation mode means) and HKDF derivation.
 *
 * Creation is race-free across processes: the key is written to a
 * private temporary file (mkstemp: 0600), synced, then link()ed to its
 * final name, which fails if another process got there first; the loser
 * discards its key and reads the winner's.  An existing file is read
 * through O_NOFOLLOW and checked (regular, exactly 32 bytes, no group or
 * other permissions) before it is trusted as a key.
 */
#include "platform.h"
#include "../common/err.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PLATFORM_HKDF_SALT "cloister platform v1"

void platform_key_wipe(void *key, size_t len)
{
    OPENSSL_cleanse(key, len);
}

/* Reads exactly n bytes; CL_OK, or CL_ECONFIG if the file is shorter. */
static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return CL_EIO;
        if (r == 0)
            return CL_ECONFIG;
        p += r;
        n -= (size_t)r;
    }
    return CL_OK;
}

static int write_full(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CL_EIO;
        p += w;
        n -= (size_t)w;
    }
    return CL_OK;
}

/* Opens and checks an existing key file.  CL_ENOTFOUND if it is absent. */
static int key_read(const char *path, uint8_t key[PLATFORM_KEY_LEN])
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? CL_ENOTFOUND : CL_EIO;
    struct stat st;
    int rc = CL_EIO;
    if (fstat(fd, &st) != 0)
        goto out;
    rc = CL_ECONFIG;
    if (!S_ISREG(st.st_mode)) {
        cl_log_error("platform", "%s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & 077) {
        cl_log_error("platform", "%s is accessible by other users (mode %04o); "
                     "run chmod 600 on it", path, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size != PLATFORM_KEY_LEN) {
        cl_log_error("platform", "%s has %lld bytes, expected %d: the file is damaged",
                     path, (long long)st.st_size, PLATFORM_KEY_LEN);
        goto out;
    }
    rc = read_full(fd, key, PLATFORM_KEY_LEN);
    if (rc == CL_ECONFIG)
        cl_log_error("platform", "%s shrank while being read", path);
out:
    close(fd);
    return rc;
}

/* Creates the key file; CL_EEXISTS if another process created it first. */
static int key_create(const char *dir, const char *path)
{
    char tmp[PATH_MAX];
    uint8_t key[PLATFORM_KEY_LEN];
    int rc, fd;
    if (snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, PLATFORM_KEY_FILE) >= (int)sizeof tmp)
        return CL_EINVAL;
    fd = mkstemp(tmp);   /* mode 0600 */
    if (fd < 0) {
        cl_log_error("platform", "cannot create a file in %s: %s", dir, strerror(errno));
        return CL_EIO;
    }
    rc = CL_ECRYPTO;
    if (RAND_priv_bytes(key, sizeof key) != 1)
        goto out;
    rc = write_full(fd, key, sizeof key);
    if (rc == CL_OK && fsync(fd) != 0)
        rc = CL_EIO;
    if (rc != CL_OK)
        goto out;
    if (link(tmp, path) != 0) {
        rc = errno == EEXIST ? CL_EEXISTS : CL_EIO;
        goto out;
    }
    /* Make the new name durable; failing here only risks a new key after
     * a crash, which invalidates caches but loses nothing else. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    rc = CL_OK;
out:
    platform_key_wipe(key, sizeof key);
    close(fd);
    unlink(tmp);
    return rc;
}

int platform_key_load(const char *state_dir, uint8_t key[PLATFORM_KEY_LEN])
{
    char path[PATH_MAX];
    int rc;
    if (!state_dir ||
        snprintf(path, sizeof path, "%s/%s", state_dir, PLATFORM_KEY_FILE) >= (int)sizeof path) {
        rc = CL_EINVAL;
        goto fail;
    }
    rc = key_read(path, key);
    if (rc == CL_ENOTFOUND) {
        rc = key_create(state_dir, path);
        if (rc == CL_OK || rc == CL_EEXISTS) {
            if (rc == CL_OK)
                cl_log_info("platform", "created a new platform key in %s "
                            "(simulation mode: the file is the root of trust)", path);
            rc = key_read(path, key);   /* ours or the winner's: one key for all */
        }
    }
    if (rc == CL_OK)
        return CL_OK;
fail:
    platform_key_wipe(key, PLATFORM_KEY_LEN);
    return rc;
}

int platform_derive(const uint8_t root[PLATFORM_KEY_LEN], const char *label,
                    uint8_t out[PLATFORM_KEY_LEN])
{
    int rc = CL_ECRYPTO;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!kctx || !label)
        goto out;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)root, PLATFORM_KEY_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)PLATFORM_HKDF_SALT,
                                          sizeof PLATFORM_HKDF_SALT - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_KDF_derive(kctx, out, PLATFORM_KEY_LEN, params) == 1)
        rc = CL_OK;
out:
    if (rc != CL_OK)
        platform_key_wipe(out, PLATFORM_KEY_LEN);
    EVP_KDF_CTX_free(kctx);   /* cleanses its copy of the key */
    EVP_KDF_free(kdf);
    return rc;
}
