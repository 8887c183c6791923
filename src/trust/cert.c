/*
 * cert.c - in-memory keys and certificates, PEM in and out (cert.h).
 */
#include "cert.h"

#include "../common/err.h"

#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

int cert_key_generate(EVP_PKEY **out)
{
    *out = EVP_EC_gen("P-256");
    ERR_clear_error();
    return *out ? CL_OK : CL_ECRYPTO;
}

/* Copies a memory BIO's contents into a NUL-terminated malloc'd string;
 * frees the BIO (cleansing its buffer when `secret`). */
static int bio_to_string(BIO *b, int ok, int secret, char **out)
{
    *out = NULL;
    int rc = CL_ECRYPTO;
    char *data;
    long len = b ? BIO_get_mem_data(b, &data) : 0;
    if (ok && len > 0) {
        rc = CL_ENOMEM;
        char *s = malloc((size_t)len + 1);
        if (s) {
            memcpy(s, data, (size_t)len);
            s[len] = '\0';
            *out = s;
            rc = CL_OK;
        }
    }
    if (b && secret && len > 0)
        OPENSSL_cleanse(data, (size_t)len);
    BIO_free(b);
    ERR_clear_error();
    return rc;
}

int cert_to_pem(X509 *cert, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    return bio_to_string(b, b && PEM_write_bio_X509(b, cert) == 1, 0, out);
}

int cert_pubkey_to_pem(EVP_PKEY *key, char **out)
{
    BIO *b = BIO_new(BIO_s_mem());
    return bio_to_string(b, b && PEM_write_bio_PUBKEY(b, key) == 1, 0, out);
}

int cert_privkey_to_pem(EVP_PKEY *key, char **out)
{
    BIO *b = BIO_new(BIO_s_secmem());
    return bio_to_string(b, b && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1,
                         1, out);
}

void cert_pem_free_secret(char *pem)
{
    if (!pem)
        return;
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
}

int cert_from_pem(const char *pem, X509 **out)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    *out = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return *out ? CL_OK : CL_EINVAL;
}

int cert_pubkey_from_pem(const char *pem, EVP_PKEY **out)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    *out = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ERR_clear_error();
    return *out ? CL_OK : CL_EINVAL;
}

int cert_issued_by(X509 *cert, X509 *ca)
{
    EVP_PKEY *pub = X509_get0_pubkey(ca);
    int ok = pub && X509_check_issued(ca, cert) == X509_V_OK && X509_verify(cert, pub) == 1;
    ERR_clear_error();
    return ok;
}
