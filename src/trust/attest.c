/*
 * attest.c - quote format, verification policy and attested certificates
 * (attest.h).  Backend-independent: attest_sim.c (or a hardware backend)
 * makes quotes; everything here only reads them.
 *
 * Invariants: a quote is decoded from exactly ATTEST_QUOTE_LEN bytes;
 * nothing in a quote is trusted before its signature verified under a
 * platform key the policy lists; hash comparisons use CRYPTO_memcmp.
 */
#include "attest.h"

#include "../common/err.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t QUOTE_MAGIC[4] = { 'C', 'L', 'Q', 'T' };

__attribute__((format(printf, 3, 4)))
static int refuse(char *why, size_t cap, const char *fmt, ...)
{
    if (why && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, cap, fmt, ap);
        va_end(ap);
    }
    return CL_EATTEST;
}

/* First 6 bytes of a hash as hex plus "..": enough to tell values apart
 * in a log line (these are public values, not secrets). */
static const char *short_hex(const uint8_t *p, char out[16])
{
    attest_hex(p, 6, out);
    strcat(out, "..");
    return out;
}

/* ---- helpers ------------------------------------------------------------------ */

void attest_hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int attest_unhex(const char *s, uint8_t *out, size_t n)
{
    if (!s || strlen(s) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int attest_pubkey_hash(EVP_PKEY *key, uint8_t out[ATTEST_HASH_LEN])
{
    unsigned char *der = NULL;
    int len = key ? i2d_PUBKEY(key, &der) : -1;
    int rc = CL_ECRYPTO;
    if (len > 0 && EVP_Digest(der, (size_t)len, out, NULL, EVP_sha256(), NULL) == 1)
        rc = CL_OK;
    OPENSSL_free(der);
    return rc;
}

/* ---- encoding ------------------------------------------------------------------ */

void attest_quote_encode(const attest_quote *q, uint8_t out[ATTEST_QUOTE_LEN])
{
    memcpy(out, QUOTE_MAGIC, 4);
    out[4] = (uint8_t)(q->version >> 8);
    out[5] = (uint8_t)q->version;
    out[6] = out[7] = 0;
    memcpy(out + 8, q->measurement, ATTEST_HASH_LEN);
    memcpy(out + 40, q->pubkey_hash, ATTEST_HASH_LEN);
    memcpy(out + 72, q->nonce, ATTEST_NONCE_LEN);
    memcpy(out + 104, q->platform_key, ATTEST_PLATFORM_KEY_LEN);
    memcpy(out + ATTEST_QUOTE_SIGNED_LEN, q->signature, ATTEST_SIG_LEN);
}

int attest_quote_decode(const uint8_t *in, size_t len, attest_quote *q, char *why, size_t cap)
{
    memset(q, 0, sizeof *q);
    if (len != ATTEST_QUOTE_LEN)
        return refuse(why, cap, "malformed quote: %zu bytes, expected %d", len, ATTEST_QUOTE_LEN);
    if (memcmp(in, QUOTE_MAGIC, 4) != 0)
        return refuse(why, cap, "malformed quote: bad magic (not a Cloister quote)");
    q->version = (uint16_t)(in[4] << 8 | in[5]);
    if (q->version != ATTEST_QUOTE_VERSION)
        return refuse(why, cap, "unsupported quote version %u (this build reads version %d)",
                      (unsigned)q->version, ATTEST_QUOTE_VERSION);
    if (in[6] || in[7])
        return refuse(why, cap, "malformed quote: reserved bytes are not zero");
    memcpy(q->measurement, in + 8, ATTEST_HASH_LEN);
    memcpy(q->pubkey_hash, in + 40, ATTEST_HASH_LEN);
    memcpy(q->nonce, in + 72, ATTEST_NONCE_LEN);
    memcpy(q->platform_key, in + 104, ATTEST_PLATFORM_KEY_LEN);
    memcpy(q->signature, in + ATTEST_QUOTE_SIGNED_LEN, ATTEST_SIG_LEN);
    return CL_OK;
}

/* ---- policy -------------------------------------------------------------------- */

void attest_policy_init(attest_policy *p)
{
    memset(p, 0, sizeof *p);
}

void attest_policy_fini(attest_policy *p)
{
    free(p->measurements);
    free(p->platform_keys);
    memset(p, 0, sizeof *p);
}

/* Appends a 32-byte entry to *arr (n entries) unless present. */
static int add32(uint8_t (**arr)[32], size_t *n, const uint8_t v[32])
{
    for (size_t i = 0; i < *n; i++)
        if (memcmp((*arr)[i], v, 32) == 0)
            return CL_OK;
    if (*n >= SIZE_MAX / 64)
        return CL_ENOMEM;
    uint8_t (*grown)[32] = realloc(*arr, (*n + 1) * 32);
    if (!grown)
        return CL_ENOMEM;
    memcpy(grown[*n], v, 32);
    *arr = grown;
    (*n)++;
    return CL_OK;
}

int attest_policy_add_measurement(attest_policy *p, const uint8_t m[ATTEST_HASH_LEN])
{
    return add32(&p->measurements, &p->n_measurements, m);
}

int attest_policy_add_platform_key(attest_policy *p, const uint8_t k[ATTEST_PLATFORM_KEY_LEN])
{
    return add32(&p->platform_keys, &p->n_platform_keys, k);
}

int attest_policy_copy(attest_policy *dst, const attest_policy *src)
{
    attest_policy_init(dst);
    dst->allowed = src->allowed;
    for (size_t i = 0; i < src->n_measurements; i++)
        if (attest_policy_add_measurement(dst, src->measurements[i]) != CL_OK)
            goto fail;
    for (size_t i = 0; i < src->n_platform_keys; i++)
        if (attest_policy_add_platform_key(dst, src->platform_keys[i]) != CL_OK)
            goto fail;
    return CL_OK;
fail:
    attest_policy_fini(dst);
    return CL_ENOMEM;
}

static int listed(const uint8_t (*arr)[32], size_t n, const uint8_t v[32])
{
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found |= CRYPTO_memcmp(arr[i], v, 32) == 0;
    return found;
}

/* ---- verification ---------------------------------------------------------------- */

static int signature_valid(const attest_quote *q)
{
    uint8_t msg[ATTEST_QUOTE_LEN];
    attest_quote_encode(q, msg);
    EVP_PKEY *pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, q->platform_key,
                                                ATTEST_PLATFORM_KEY_LEN);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = pub && md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pub) == 1 &&
             EVP_DigestVerify(md, q->signature, ATTEST_SIG_LEN, msg, ATTEST_QUOTE_SIGNED_LEN) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pub);
    ERR_clear_error();   /* a bad signature leaves an error queued */
    return ok;
}

int attest_quote_verify(const attest_quote *q, const attest_policy *pol,
                        const uint8_t expect_pubkey_hash[ATTEST_HASH_LEN],
                        const uint8_t *expect_nonce, char *why, size_t cap)
{
    char h[16];
    if (q->version != ATTEST_QUOTE_VERSION)
        return refuse(why, cap, "unsupported quote version %u", (unsigned)q->version);
    if (!listed((const uint8_t (*)[32])pol->platform_keys, pol->n_platform_keys, q->platform_key))
        return refuse(why, cap, "quote signed by an untrusted platform (platform key %s is not "
                      "trusted: a foreign platform)", short_hex(q->platform_key, h));
    if (!signature_valid(q))
        return refuse(why, cap, "quote signature invalid (forged or altered quote)");
    if (!listed((const uint8_t (*)[32])pol->measurements, pol->n_measurements, q->measurement))
        return refuse(why, cap, "measurement %s is not %s", short_hex(q->measurement, h),
                      pol->allowed ? pol->allowed : "allowed by the policy");
    if (CRYPTO_memcmp(q->pubkey_hash, expect_pubkey_hash, ATTEST_HASH_LEN) != 0)
        return refuse(why, cap, "quote is for another TLS key (public key hash mismatch)");
    if (expect_nonce && CRYPTO_memcmp(q->nonce, expect_nonce, ATTEST_NONCE_LEN) != 0)
        return refuse(why, cap, "quote nonce does not match this challenge (a replayed or stale "
                      "quote)");
    return CL_OK;
}

/* ---- attested certificates ------------------------------------------------------- */

int attest_cert_add_quote(X509 *cert, const attest_quote *q)
{
    uint8_t raw[ATTEST_QUOTE_LEN];
    attest_quote_encode(q, raw);
    int rc = CL_ECRYPTO;
    ASN1_OBJECT *oid = OBJ_txt2obj(ATTEST_QUOTE_OID, 1);
    ASN1_OCTET_STRING *inner = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    unsigned char *der = NULL;
    int derlen;
    if (!oid || !inner || !value || !ASN1_OCTET_STRING_set(inner, raw, sizeof raw))
        goto out;
    if ((derlen = i2d_ASN1_OCTET_STRING(inner, &der)) <= 0 ||
        !ASN1_OCTET_STRING_set(value, der, derlen))
        goto out;
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value);
    if (ext && X509_add_ext(cert, ext, -1) == 1)
        rc = CL_OK;
out:
    X509_EXTENSION_free(ext);
    OPENSSL_free(der);
    ASN1_OCTET_STRING_free(value);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(oid);
    ERR_clear_error();
    return rc;
}

int attest_cert_quote(X509 *cert, attest_quote *q, char *why, size_t cap)
{
    int rc;
    ASN1_OCTET_STRING *inner = NULL;
    ASN1_OBJECT *oid = OBJ_txt2obj(ATTEST_QUOTE_OID, 1);
    int idx = oid ? X509_get_ext_by_OBJ(cert, oid, -1) : -1;
    if (idx < 0) {
        rc = refuse(why, cap, "certificate carries no attestation quote (not an attested node "
                    "certificate)");
        goto out;
    }
    if (X509_get_ext_by_OBJ(cert, oid, idx) >= 0) {
        rc = refuse(why, cap, "certificate carries more than one attestation quote");
        goto out;
    }
    ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(X509_get_ext(cert, idx));
    const unsigned char *p = ASN1_STRING_get0_data(value);
    long len = ASN1_STRING_length(value);
    inner = d2i_ASN1_OCTET_STRING(NULL, &p, len);
    if (!inner || p != ASN1_STRING_get0_data(value) + len)
        rc = refuse(why, cap, "certificate's attestation quote extension is malformed");
    else
        rc = attest_quote_decode(ASN1_STRING_get0_data(inner), (size_t)ASN1_STRING_length(inner),
                                 q, why, cap);
out:
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(oid);
    ERR_clear_error();
    return rc;
}

/* Parses "cloister-node-<id>" from the subject's common name. */
static int node_id_of(X509 *cert, int *id)
{
    char cn[64];
    X509_NAME *name = X509_get_subject_name(cert);
    int first = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (first < 0 || X509_NAME_get_index_by_NID(name, NID_commonName, first) >= 0)
        return -1;                                  /* exactly one common name */
    int len = X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof cn);
    size_t plen = sizeof ATTEST_NODE_CN_PREFIX - 1;
    if (len <= (int)plen || (size_t)len != strlen(cn) ||
        strncmp(cn, ATTEST_NODE_CN_PREFIX, plen) != 0)
        return -1;
    const char *d = cn + plen;
    if (d[0] == '0' || strspn(d, "0123456789") != strlen(d) || strlen(d) > 5)
        return -1;
    long v = strtol(d, NULL, 10);
    if (v < 1 || v > 65535)
        return -1;
    *id = (int)v;
    return 0;
}

int attest_verify_peer(X509 *cert, const attest_policy *pol, int *node_id, char *why, size_t cap)
{
    attest_quote q;
    uint8_t keyhash[ATTEST_HASH_LEN];
    *node_id = 0;
    if (!cert)
        return refuse(why, cap, "the peer presented no certificate");
    int rc = attest_cert_quote(cert, &q, why, cap);
    if (rc != CL_OK)
        return rc;
    EVP_PKEY *key = X509_get0_pubkey(cert);
    if (attest_pubkey_hash(key, keyhash) != CL_OK)
        return refuse(why, cap, "cannot read the certificate's public key");
    if ((rc = attest_quote_verify(&q, pol, keyhash, NULL, why, cap)) != CL_OK)
        return rc;
    if (node_id_of(cert, node_id) != 0)
        return refuse(why, cap, "certificate subject is not a node (common name must be "
                      "\"%s<id>\")", ATTEST_NODE_CN_PREFIX);
    return CL_OK;
}
