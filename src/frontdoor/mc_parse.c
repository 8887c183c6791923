/*
 * mc_parse.c - the small parsers of the memcached front door (numbers,
 * keys, base64 keys) and the mapping from store error codes to the reply
 * lines clients see.
 *
 * Keys: text keys never contain control bytes; a base64 key may be any
 * bytes except a first byte RT_RESERVED_KEY_BYTE (0x01), which marks the
 * function runtime's namespaces (runtime.h).
 *
 * Numbers are strict: the whole token must be decimal digits (an optional
 * leading '-' for signed fields), and overflow is an error, never a wrap.
 * Callers pass tokens straight from the network; nothing here trusts a
 * length or assumes NUL termination.
 */
#include "mc_int.h"

#include <openssl/evp.h>
#include <string.h>

#include "../common/err.h"
#include "../runtime/runtime.h"   /* RT_RESERVED_KEY_BYTE */

int mc_tok_eq(const mc_token *t, const char *s)
{
    size_t n = strlen(s);
    return t->n == n && memcmp(t->p, s, n) == 0;
}

int mc_parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

int mc_parse_u32(const uint8_t *p, size_t n, uint32_t *out)
{
    uint64_t v;
    if (!mc_parse_u64(p, n, &v) || v > UINT32_MAX)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

int mc_parse_i64(const uint8_t *p, size_t n, int64_t *out)
{
    int neg = n > 0 && p[0] == '-';
    uint64_t v;
    if (!mc_parse_u64(p + neg, n - (size_t)neg, &v))
        return 0;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return 0;
        *out = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > INT64_MAX)
            return 0;
        *out = (int64_t)v;
    }
    return 1;
}

int mc_key_ok(const uint8_t *p, size_t n)
{
    if (n == 0 || n > STORE_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == 0x7f)
            return 0;
    return 1;
}

static int mc_b64_char(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

int mc_b64_decode_key(const uint8_t *p, size_t n, uint8_t *out)
{
    if (n == 0 || n % 4 || n > MC_B64_KEY_MAX)
        return -1;
    size_t pad = 0;
    if (p[n - 1] == '=')
        pad = p[n - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++)
        if (!mc_b64_char(p[i]))
            return -1;
    /* EVP_DecodeBlock decodes whole quanta, padding included as zero bytes. */
    int m = EVP_DecodeBlock(out, p, (int)n);
    if (m < 0 || (size_t)m < pad)
        return -1;
    m -= (int)pad;
    if (m == 0 || m > STORE_KEY_MAX)
        return -1;
    /* Keys starting with this byte belong to the function runtime's
     * tenant namespaces: no memcached client may name them. */
    if (out[0] == RT_RESERVED_KEY_BYTE)
        return -1;
    return m;
}

size_t mc_max_value(const mc_req *r) { return store_max_value(r->thr->ctx->store); }

void mc_count(uint64_t *counter) { __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED); }

int64_t mc_ttl_left(int64_t exptime, int64_t now)
{
    if (exptime == 0)
        return -1;
    return exptime > now ? exptime - now : 0;
}

const char *mc_store_error_text(int rc)
{
    switch (rc) {
    case CL_OK:          return "STORED";
    case CL_ENOTFOUND:   return "NOT_FOUND";
    case CL_EEXISTS:     return "EXISTS";
    case CL_ENOTSTORED:  return "NOT_STORED";
    case CL_ETOOBIG:     return MC_ERR_TOO_LARGE;
    case CL_EFULL:       return "SERVER_ERROR out of memory storing object";
    case CL_EINTEGRITY:  return MC_ERR_INTEGRITY;
    case CL_ENONNUMERIC: return "CLIENT_ERROR cannot increment or decrement non-numeric value";
    case CL_EBADKEY:     return MC_ERR_FORMAT;
    case CL_ENOMEM:      return "SERVER_ERROR out of memory";
    case CL_EUNSUPPORTED: return "SERVER_ERROR not supported on a replicated store";
    case CL_ETIMEDOUT:
    case CL_ENOQUORUM:   return "SERVER_ERROR no quorum: too few replicas answered in time";
    default:             return "SERVER_ERROR internal error";
    }
}
