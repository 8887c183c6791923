/*
 * ca.c - the cluster CA: creation, sealed storage and issuance (ca.h).
 *
 * Extensions are built as OpenSSL objects, never from configuration
 * strings, so a host name that came from the network cannot smuggle in
 * extra subjectAltNames or other extensions.
 */
#include "ca.h"
#include "cert.h"
#include "platform.h"

#include "../common/err.h"
#include "../common/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char MOD[] = "ca";

#define CA_VALIDITY_S (10LL * 365 * 86400)
#define CA_MAX_CN 64   /* X.520 ub-common-name */

struct cluster_ca {
    X509 *cert;
    EVP_PKEY *key;
};

__attribute__((format(printf, 4, 5)))
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    ERR_clear_error();
    return rc;
}

X509 *ca_cert(const cluster_ca *ca)
{
    return ca->cert;
}

void ca_destroy(cluster_ca *ca)
{
    if (!ca)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca);
}

/* ---- building certificates ------------------------------------------------------- */

static int set_serial(X509 *x)
{
    uint8_t raw[20];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return 0;
    raw[0] &= 0x7f;            /* positive, at most 20 octets (RFC 5280 4.1.2.2) */
    raw[0] |= 0x01;            /* and never zero */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok;
}

static int set_cn(X509_NAME *name, const char *cn)
{
    return X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                      (const unsigned char *)cn, -1, -1, 0) == 1;
}

static int add_ext(X509 *x, int nid, int critical, void *value)
{
    return value && X509_add1_ext_i2d(x, nid, value, critical, X509V3_ADD_DEFAULT) == 1;
}

/* A DNS name we are willing to certify: LDH labels, dots, <= 253 bytes. */
static int dns_name_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > 253 || h[0] == '.' || h[0] == '-')
        return 0;
    return strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == n;
}

static GENERAL_NAMES *make_sans(const char *const *hosts, size_t n)
{
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    if (!names)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        GENERAL_NAME *g = GENERAL_NAME_new();
        uint8_t ip[16];
        int iplen = inet_pton(AF_INET, hosts[i], ip) == 1 ? 4
                    : inet_pton(AF_INET6, hosts[i], ip) == 1 ? 16 : 0;
        int ok = g != NULL;
        if (ok && iplen) {
            ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();
            ok = s && ASN1_OCTET_STRING_set(s, ip, iplen);
            if (ok)
                GENERAL_NAME_set0_value(g, GEN_IPADD, s);
            else
                ASN1_OCTET_STRING_free(s);
        } else if (ok && dns_name_ok(hosts[i])) {
            ASN1_IA5STRING *s = ASN1_IA5STRING_new();
            ok = s && ASN1_STRING_set(s, hosts[i], -1);
            if (ok)
                GENERAL_NAME_set0_value(g, GEN_DNS, s);
            else
                ASN1_IA5STRING_free(s);
        } else {
            ok = 0;
        }
        if (!ok || !sk_GENERAL_NAME_push(names, g)) {
            GENERAL_NAME_free(g);
            GENERAL_NAMES_free(names);
            return NULL;
        }
    }
    return names;
}

/* The extensions every certificate gets: key identifiers (the subject's
 * from its key, the authority's from the issuer's certificate). */
static int add_key_ids(X509 *x, X509 *issuer)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *ski = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
    int ok = ski && X509_add_ext(x, ski, -1) == 1;
    X509_EXTENSION_free(ski);
    if (ok && issuer) {
        X509_EXTENSION *aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier,
                                                  "keyid:always");
        ok = aki && X509_add_ext(x, aki, -1) == 1;
        X509_EXTENSION_free(aki);
    }
    return ok;
}

static int set_validity(X509 *x, int64_t not_before, int64_t not_after)
{
    ASN1_TIME *nb = ASN1_TIME_set(NULL, (time_t)not_before);
    ASN1_TIME *na = ASN1_TIME_set(NULL, (time_t)not_after);
    int ok = nb && na && X509_set1_notBefore(x, nb) && X509_set1_notAfter(x, na);
    ASN1_TIME_free(nb);
    ASN1_TIME_free(na);
    return ok;
}

static X509 *make_ca_cert(EVP_PKEY *key, const char *cn)
{
    X509 *x = X509_new();
    int64_t now = (int64_t)time(NULL);
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    int ok = x && bc && ku && X509_set_version(x, X509_VERSION_3) && set_serial(x) &&
             set_cn(X509_get_subject_name(x), cn) &&
             X509_set_issuer_name(x, X509_get_subject_name(x)) &&
             set_validity(x, now - 60, now + CA_VALIDITY_S) && X509_set_pubkey(x, key);
    if (ok) {
        bc->ca = 1;
        bc->pathlen = ASN1_INTEGER_new();
        ok = bc->pathlen && ASN1_INTEGER_set(bc->pathlen, 0) &&
             ASN1_BIT_STRING_set_bit(ku, 5, 1) &&   /* keyCertSign */
             ASN1_BIT_STRING_set_bit(ku, 6, 1) &&   /* cRLSign */
             add_ext(x, NID_basic_constraints, 1, bc) && add_ext(x, NID_key_usage, 1, ku) &&
             add_key_ids(x, NULL) && X509_sign(x, key, EVP_sha256()) > 0;
    }
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    if (!ok) {
        X509_free(x);
        x = NULL;
    }
    ERR_clear_error();
    return x;
}

int ca_create_ephemeral(const char *common_name, cluster_ca **out)
{
    *out = NULL;
    cluster_ca *ca = calloc(1, sizeof *ca);
    if (!ca)
        return CL_ENOMEM;
    if (cert_key_generate(&ca->key) != CL_OK || !(ca->cert = make_ca_cert(ca->key, common_name))) {
        ca_destroy(ca);
        return CL_ECRYPTO;
    }
    *out = ca;
    return CL_OK;
}

int ca_issue(const cluster_ca *ca, const ca_request *req, X509 **out)
{
    *out = NULL;
    if (!req->key || !req->common_name || !req->common_name[0] ||
        strlen(req->common_name) > CA_MAX_CN || req->not_after <= req->not_before)
        return CL_EINVAL;
    GENERAL_NAMES *sans = NULL;
    if (req->n_hosts && !(sans = make_sans(req->hosts, req->n_hosts)))
        return CL_EINVAL;
    X509 *x = X509_new();
    BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();   /* CA:FALSE */
    ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
    EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
    int ok = x && bc && ku && eku && ASN1_BIT_STRING_set_bit(ku, 0, 1) && /* digitalSignature */
             (!(req->usage & CA_USAGE_SERVER) || sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth))) &&
             (!(req->usage & CA_USAGE_CLIENT) || sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth))) &&
             X509_set_version(x, X509_VERSION_3) && set_serial(x) &&
             set_cn(X509_get_subject_name(x), req->common_name) &&
             X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) &&
             set_validity(x, req->not_before, req->not_after) && X509_set_pubkey(x, req->key) &&
             add_ext(x, NID_basic_constraints, 1, bc) && add_ext(x, NID_key_usage, 1, ku) &&
             (!req->usage || add_ext(x, NID_ext_key_usage, 0, eku)) &&
             (!sans || add_ext(x, NID_subject_alt_name, 0, sans)) && add_key_ids(x, ca->cert) &&
             (!req->quote || attest_cert_add_quote(x, req->quote) == CL_OK) &&
             X509_sign(x, ca->key, EVP_sha256()) > 0;
    BASIC_CONSTRAINTS_free(bc);
    ASN1_BIT_STRING_free(ku);
    sk_ASN1_OBJECT_free(eku);   /* the objects are OpenSSL's static ones */
    GENERAL_NAMES_free(sans);
    ERR_clear_error();
    if (!ok) {
        X509_free(x);
        return CL_ECRYPTO;
    }
    *out = x;
    return CL_OK;
}

/* ---- storage ---------------------------------------------------------------------- */

/* The passphrase that seals ca.key: hex of HKDF(platform root, "cluster-ca"). */
static int seal_passphrase(const char *platform_dir, char pass[2 * PLATFORM_KEY_LEN + 1])
{
    uint8_t root[PLATFORM_KEY_LEN], k[PLATFORM_KEY_LEN];
    int rc = platform_key_load(platform_dir, root);
    if (rc == CL_OK)
        rc = platform_derive(root, "cluster-ca", k);
    if (rc == CL_OK)
        attest_hex(k, sizeof k, pass);
    platform_key_wipe(root, sizeof root);
    platform_key_wipe(k, sizeof k);
    return rc;
}

/* Writes PEM produced by `emit` to path through a 0600 temporary file and
 * rename(2), so a reader sees the old file or the complete new one. */
static int write_pem_file(const char *path, int (*emit)(BIO *, void *), void *arg)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
        return CL_EINVAL;
    int fd = mkstemp(tmp);
    if (fd < 0)
        return CL_EIO;
    FILE *f = fdopen(fd, "w");
    BIO *b = f ? BIO_new_fp(f, BIO_NOCLOSE) : NULL;
    int ok = b && emit(b, arg) && BIO_flush(b) == 1;
    BIO_free(b);
    if (f) {
        ok = fflush(f) == 0 && fsync(fd) == 0 && ok;
        ok = fclose(f) == 0 && ok;
    } else {
        close(fd);
    }
    ok = ok && rename(tmp, path) == 0;
    if (!ok)
        unlink(tmp);
    ERR_clear_error();
    return ok ? CL_OK : CL_EIO;
}

typedef struct key_emit {
    EVP_PKEY *key;
    const char *pass;
} key_emit;

static int emit_key(BIO *b, void *arg)
{
    const key_emit *k = arg;
    return PEM_write_bio_PKCS8PrivateKey(b, k->key, EVP_aes_256_cbc(), NULL, 0, NULL,
                                         (void *)k->pass) == 1;
}

static int emit_cert(BIO *b, void *arg)
{
    return PEM_write_bio_X509(b, arg) == 1;
}

static int ca_create_files(cluster_ca *ca, const char *cert_path, const char *key_path,
                           const char *pass, char *err, size_t errlen)
{
    if (cert_key_generate(&ca->key) != CL_OK || !(ca->cert = make_ca_cert(ca->key, CA_COMMON_NAME)))
        return fail(err, errlen, CL_ECRYPTO, "cannot create the cluster CA key");
    key_emit k = { ca->key, pass };
    if (write_pem_file(key_path, emit_key, &k) != CL_OK ||
        write_pem_file(cert_path, emit_cert, ca->cert) != CL_OK) {
        int saved = errno;
        unlink(key_path);
        return fail(err, errlen, CL_EIO, "cannot write the cluster CA to %s: %s", cert_path,
                    strerror(saved));
    }
    cl_log_info(MOD, "created the cluster CA in %s (key sealed to the platform in %s)",
                cert_path, key_path);
    return CL_OK;
}

static int ca_load_files(cluster_ca *ca, const char *cert_path, const char *key_path,
                         const char *pass, char *err, size_t errlen)
{
    struct stat st;
    if (stat(key_path, &st) != 0)
        return fail(err, errlen, CL_EIO, "cannot read %s: %s", key_path, strerror(errno));
    if (st.st_mode & 077)
        return fail(err, errlen, CL_ECONFIG, "%s is accessible by other users (mode %04o); run "
                    "chmod 600 on it", key_path, (unsigned)(st.st_mode & 07777));
    FILE *f = fopen(cert_path, "r");
    if (!f)
        return fail(err, errlen, CL_EIO, "cannot read %s: %s", cert_path, strerror(errno));
    ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!ca->cert)
        return fail(err, errlen, CL_ECONFIG, "%s holds no PEM certificate", cert_path);
    if (!(f = fopen(key_path, "r")))
        return fail(err, errlen, CL_EIO, "cannot read %s: %s", key_path, strerror(errno));
    ca->key = PEM_read_PrivateKey(f, NULL, NULL, (void *)pass);
    fclose(f);
    if (!ca->key)
        return fail(err, errlen, CL_ECONFIG, "%s does not open with this platform's key (damaged, "
                    "or sealed on another platform: give the original --platform-dir)", key_path);
    if (X509_check_private_key(ca->cert, ca->key) != 1)
        return fail(err, errlen, CL_ECONFIG, "%s does not match the certificate %s", key_path,
                    cert_path);
    ERR_clear_error();
    return CL_OK;
}

int ca_open(const char *state_dir, const char *platform_dir, cluster_ca **out,
            char *err, size_t errlen)
{
    *out = NULL;
    char cert_path[PATH_MAX], key_path[PATH_MAX], pass[2 * PLATFORM_KEY_LEN + 1];
    if (snprintf(cert_path, sizeof cert_path, "%s/%s", state_dir, CA_CERT_FILE) >= PATH_MAX ||
        snprintf(key_path, sizeof key_path, "%s/%s", state_dir, CA_KEY_FILE) >= PATH_MAX)
        return fail(err, errlen, CL_EINVAL, "state directory path too long");
    cluster_ca *ca = calloc(1, sizeof *ca);
    if (!ca)
        return fail(err, errlen, CL_ENOMEM, "out of memory");
    int rc = seal_passphrase(platform_dir, pass);
    if (rc != CL_OK) {
        fail(err, errlen, rc, "cannot load the platform key in %s (see the log line above)",
             platform_dir);
        goto out;
    }
    int have_cert = access(cert_path, F_OK) == 0, have_key = access(key_path, F_OK) == 0;
    if (!have_cert && !have_key)
        rc = ca_create_files(ca, cert_path, key_path, pass, err, errlen);
    else if (have_cert != have_key)
        rc = fail(err, errlen, CL_ECONFIG, "%s exists but %s does not: restore the missing file, "
                  "or remove both to create a new cluster CA (every issued certificate then "
                  "becomes invalid)", have_cert ? cert_path : key_path,
                  have_cert ? key_path : cert_path);
    else
        rc = ca_load_files(ca, cert_path, key_path, pass, err, errlen);
out:
    OPENSSL_cleanse(pass, sizeof pass);
    if (rc != CL_OK) {
        ca_destroy(ca);
        return rc;
    }
    *out = ca;
    return CL_OK;
}
