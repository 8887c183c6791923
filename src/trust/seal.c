/*
 * seal.c - AES-256-GCM sealing across the trust boundary (simulation
 * backend).  See seal.h for the contract.
 *
 * Each seal_ctx keeps two EVP contexts with the key schedule already
 * loaded, so a seal or open costs one IV setup plus the GCM pass: no key
 * expansion and no allocation per value.
 */
#include "seal.h"
#include "../common/err.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

struct seal_key {
    uint8_t aead[SEAL_KEY_LEN];        /* AES-256-GCM key */
    uint8_t fingerprint[SEAL_KEY_LEN]; /* HMAC key for log fingerprints */
};

struct seal_ctx {
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
};

int seal_key_create(seal_key **out)
{
    seal_key *k = OPENSSL_secure_zalloc(sizeof *k);
    if (!k)
        k = OPENSSL_zalloc(sizeof *k);
    if (!k)
        return CL_ENOMEM;
    if (RAND_priv_bytes(k->aead, sizeof k->aead) != 1 ||
        RAND_priv_bytes(k->fingerprint, sizeof k->fingerprint) != 1) {
        seal_key_destroy(k);
        return CL_ECRYPTO;
    }
    *out = k;
    return CL_OK;
}

void seal_key_destroy(seal_key *k)
{
    if (!k)
        return;
    OPENSSL_cleanse(k, sizeof *k);
    if (CRYPTO_secure_allocated(k))
        OPENSSL_secure_free(k);
    else
        OPENSSL_free(k);
}

int seal_ctx_create(const seal_key *k, seal_ctx **out)
{
    seal_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return CL_ENOMEM;
    c->enc = EVP_CIPHER_CTX_new();
    c->dec = EVP_CIPHER_CTX_new();
    if (!c->enc || !c->dec ||
        EVP_EncryptInit_ex(c->enc, EVP_aes_256_gcm(), NULL, k->aead, NULL) != 1 ||
        EVP_DecryptInit_ex(c->dec, EVP_aes_256_gcm(), NULL, k->aead, NULL) != 1) {
        seal_ctx_destroy(c);
        return CL_ECRYPTO;
    }
    *out = c;
    return CL_OK;
}

void seal_ctx_destroy(seal_ctx *c)
{
    if (!c)
        return;
    EVP_CIPHER_CTX_free(c->enc); /* frees and cleanses the key schedule */
    EVP_CIPHER_CTX_free(c->dec);
    free(c);
}

static void make_nonce(uint8_t nonce[SEAL_NONCE_LEN], uint32_t domain, uint64_t seq)
{
    for (int i = 0; i < 4; i++)
        nonce[i] = (uint8_t)(domain >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
}

int seal_to_untrusted(seal_ctx *c, uint32_t domain, uint64_t seq,
                      const uint8_t *aad, size_t aadlen,
                      const uint8_t *pt, size_t len,
                      uint8_t *untrusted_dst, uint8_t tag[SEAL_TAG_LEN])
{
    uint8_t nonce[SEAL_NONCE_LEN];
    int outl;
    make_nonce(nonce, domain, seq);
    if (len > INT_MAX || aadlen > INT_MAX ||
        EVP_EncryptInit_ex(c->enc, NULL, NULL, NULL, nonce) != 1 ||
        (aadlen && EVP_EncryptUpdate(c->enc, NULL, &outl, aad, (int)aadlen) != 1) ||
        (len && EVP_EncryptUpdate(c->enc, untrusted_dst, &outl, pt, (int)len) != 1) ||
        EVP_EncryptFinal_ex(c->enc, untrusted_dst + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(c->enc, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, tag) != 1)
        return CL_ECRYPTO;
    return CL_OK;
}

int seal_open_from_untrusted(seal_ctx *c, uint32_t domain, uint64_t seq,
                             const uint8_t *aad, size_t aadlen,
                             const uint8_t *untrusted_src, size_t len,
                             const uint8_t tag[SEAL_TAG_LEN],
                             uint8_t *trusted_dst)
{
    uint8_t nonce[SEAL_NONCE_LEN];
    uint8_t tagcopy[SEAL_TAG_LEN];
    int outl;
    if (len > INT_MAX || aadlen > INT_MAX)
        return CL_EINVAL;
    /* Snapshot first: from here on only trusted bytes are examined. */
    memcpy(trusted_dst, untrusted_src, len);
    memcpy(tagcopy, tag, SEAL_TAG_LEN); /* OpenSSL's API takes a non-const tag */
    make_nonce(nonce, domain, seq);
    if (EVP_DecryptInit_ex(c->dec, NULL, NULL, NULL, nonce) != 1 ||
        (aadlen && EVP_DecryptUpdate(c->dec, NULL, &outl, aad, (int)aadlen) != 1) ||
        (len && EVP_DecryptUpdate(c->dec, trusted_dst, &outl, trusted_dst, (int)len) != 1) ||
        EVP_CIPHER_CTX_ctrl(c->dec, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tagcopy) != 1) {
        OPENSSL_cleanse(trusted_dst, len);
        return CL_ECRYPTO;
    }
    /* EVP_DecryptFinal_ex compares the tag in constant time. */
    if (EVP_DecryptFinal_ex(c->dec, trusted_dst + len, &outl) != 1) {
        OPENSSL_cleanse(trusted_dst, len);
        return CL_EINTEGRITY;
    }
    return CL_OK;
}

uint64_t seal_fingerprint(const seal_key *k, const uint8_t *data, size_t len)
{
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    uint64_t fp = 0;
    if (!HMAC(EVP_sha256(), k->fingerprint, sizeof k->fingerprint, data, len, md, &mdlen))
        return 0;
    for (int i = 0; i < 8; i++)
        fp = (fp << 8) | md[i];
    return fp;
}

int seal_memcmp_ct(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len);
}
