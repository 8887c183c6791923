/*
 * mc_meta.c - memcached's meta commands: mg (get), ms (set), md (delete),
 * ma (arithmetic), mn (no-op), me (debug), as protocol.txt of memcached
 * 1.6.18 describes them; reply codes, flag letters and error strings were
 * checked against the real 1.6.18 server.
 *
 * Syntax: <cm> <key> [<datalen> (ms only)] <flag>*, a flag being one letter
 * with an optional token glued to it ("T30", "Oabc").  Return flags are
 * written in the order the request gave them; "k" is followed by " b" when
 * the key travelled in base64.  A miss or failure reflects only O and k.
 *
 * Every meta command accepts the flag letters memcached 1.6.18 knows,
 *   b c f h k l q s t u v C D F I J M N O P L R T,
 * validates their tokens, and ignores those that mean nothing to it (as
 * memcached does); any other letter, or a letter given twice, is an error.
 * The flags each command acts on (P and L, proxy hints, are always ignored):
 *   mg  b c f h k l O q s t u v N(ttl) R(ttl) T(ttl)
 *   ms  b c C(cas) F(flags) I k O q T(ttl) M(E|A|P|R|S); as memcached, ME
 *       ignores C, and MA/MP on an absent key are NS even with C
 *   md  b C(cas) I k O q T(ttl)
 *   ma  b C(cas) N(ttl) J(initial) D(delta) T(ttl) M(I|+|D|-) q t c v k O
 *   me  b (other tokens ignored)
 * q ("noreply semantics"): mg hides EN; ms and md hide HD; ma hides HD and
 * VA.  Errors are always sent.
 *
 * Anti-stampede ("stale-while-revalidate"), each decided inside one store
 * call under the item's lock (store.h, "Anti-stampede state"), so exactly
 * one client is told to recache:
 *   - mg N(ttl) on a miss creates an empty item with that TTL; that client
 *     gets W, every later mg gets Z until a write replaces the item.
 *   - mg R(ttl): if the item has a TTL below the token and no token is out,
 *     the client gets W; later clients get Z.
 *   - md I marks the item stale instead of deleting it (T also sets its
 *     TTL) and gives it a new CAS; every mg then returns X, the first also
 *     W, later ones Z.  ms I with a C older than the item's CAS (set and
 *     replace modes) stores the value but stale, keeping the old TTL and
 *     token state; a newer C is EX; a matching C is a plain compare-and-set.
 *     Other writes of a new value (ms in any mode, the text storage
 *     commands) clear the stale and token state; touches and ma keep it,
 *     as memcached's in-place incr does.
 *   - The extra reply flags follow the requested ones in memcached's order:
 *     Z, X, W.
 *   - ma T sets the TTL in the same store call as the arithmetic.
 *
 * Where the replies differ from memcached 1.6.18, which applies N, R, T
 * and t one by one in the order the flags were given:
 *   - T on a vivified item wins over N whatever the order; R compares with
 *     the TTL the item had before this request's T; t reports the TTL left
 *     after the whole request.
 *   - A vivified item counts as a get miss in stats (memcached: a hit).
 *   - The E (explicit CAS) and x (md: drop value, keep item) flags of later
 *     releases are refused as 1.6.18 does ("invalid flag").
 *   - me reports size= as key + value bytes (the sealed chunk's overhead
 *     is not exposed); exp=/la= are seconds relative to now as memcached.
 */
#include "mc_int.h"

#include <string.h>

#include "../common/err.h"

/* Bit of a flag letter in a 64-bit set: 'A'..'Z' -> 0..25, 'a'..'z' -> 26..51. */
static uint64_t mf_bit(uint8_t c)
{
    if (c >= 'A' && c <= 'Z')
        return 1ull << (c - 'A');
    if (c >= 'a' && c <= 'z')
        return 1ull << (26 + c - 'a');
    return 0;
}

static uint64_t mf_mask(const char *letters)
{
    uint64_t m = 0;
    for (; *letters; letters++)
        m |= mf_bit((uint8_t)*letters);
    return m;
}

/* The flag letters memcached 1.6.18 accepts on every meta command. */
#define MC_META_FLAGS "bcfhklqstuvCDFIJMNOPLRT"

typedef struct mc_meta_spec {
    const char *err_invalid;   /* unknown letter */
    const char *err_dup;       /* letter given twice */
    const char *err_token;     /* bad numeric token */
    const char *err_flags;     /* bad F token */
    const char *err_mode;      /* bad M mode */
    const char *modes;         /* valid M modes; NULL: M is ignored (any one byte) */
    const char *err_too_many;  /* more than MC_MAX_TOKENS tokens */
} mc_meta_spec;

#define E_INVALID   "CLIENT_ERROR invalid flag"
#define E_DUP       "CLIENT_ERROR duplicate flag"
#define E_TOKEN     "CLIENT_ERROR bad token in command line format"
#define E_INV_DUP   "CLIENT_ERROR invalid or duplicate flag"
#define E_TOO_LONG  "CLIENT_ERROR options flags are too long"

static const mc_meta_spec mg_spec = {
    .err_invalid = E_INVALID, .err_dup = E_DUP,
    .err_token = E_TOKEN, .err_flags = E_TOKEN, .err_mode = E_INVALID, .modes = NULL,
    .err_too_many = E_TOO_LONG,
};
static const mc_meta_spec ms_spec = {
    .err_invalid = E_INVALID, .err_dup = E_DUP,
    .err_token = E_TOKEN, .err_flags = MC_ERR_FORMAT,
    .err_mode = "CLIENT_ERROR invalid mode for ms M token", .modes = "EAPRS",
    .err_too_many = "CLIENT_ERROR options flags too long",   /* sic, as memcached */
};
static const mc_meta_spec md_spec = {
    .err_invalid = E_INV_DUP, .err_dup = E_INV_DUP,
    .err_token = E_INV_DUP, .err_flags = E_INV_DUP, .err_mode = E_INV_DUP, .modes = NULL,
    .err_too_many = E_TOO_LONG,
};
static const mc_meta_spec ma_spec = {
    .err_invalid = E_INV_DUP, .err_dup = E_INV_DUP,
    .err_token = E_INV_DUP, .err_flags = E_INV_DUP,
    .err_mode = "CLIENT_ERROR invalid mode for ma M token", .modes = "I+D-",
    .err_too_many = E_TOO_LONG,
};

/* A parsed meta request. */
typedef struct mc_meta {
    uint64_t seen;               /* mf_bit of every flag given */
    int first, last;             /* flag tokens are r->tok[first, last) */
    mc_token key_tok;            /* the key as sent (base64 when b) */
    const uint8_t *key;          /* the key to look up */
    size_t klen;
    uint8_t keybuf[STORE_KEY_MAX + 3];
    int b, q;
    uint64_t cas;                /* C */
    uint64_t delta;              /* D, default 1 */
    uint64_t initial;            /* J */
    int64_t vivify_ttl;          /* N */
    int64_t ttl;                 /* T */
    int64_t recache;             /* R */
    uint32_t flags;              /* F */
    uint8_t mode;                /* M, 0 if absent */
    mc_token opaque;             /* O */
} mc_meta;

#define HAS(m, c) (((m)->seen & mf_bit(c)) != 0)

static const char *mc_meta_parse(mc_req *r, int first, const mc_meta_spec *sp, mc_meta *m)
{
    memset(m, 0, sizeof *m);
    m->delta = 1;
    m->first = first;
    m->last = r->ntok;
    if (r->more)
        return sp->err_too_many;

    uint64_t allowed = mf_mask(MC_META_FLAGS);
    for (int i = first; i < r->ntok; i++) {
        const mc_token *t = &r->tok[i];
        uint8_t c = t->p[0];
        const uint8_t *v = t->p + 1;
        size_t vn = t->n - 1;
        uint64_t bit = mf_bit(c);
        if (!(allowed & bit))
            return sp->err_invalid;
        if (c == 'P' || c == 'L')
            continue;
        if (m->seen & bit)
            return sp->err_dup;
        m->seen |= bit;
        switch (c) {
        case 'b': m->b = 1; break;
        case 'q': m->q = 1; break;
        case 'C': if (!mc_parse_u64(v, vn, &m->cas)) return sp->err_token; break;
        case 'D': if (!mc_parse_u64(v, vn, &m->delta)) return sp->err_token; break;
        case 'J': if (!mc_parse_u64(v, vn, &m->initial)) return sp->err_token; break;
        case 'N': if (!mc_parse_i64(v, vn, &m->vivify_ttl)) return sp->err_token; break;
        case 'T': if (!mc_parse_i64(v, vn, &m->ttl)) return sp->err_token; break;
        case 'R': if (!mc_parse_i64(v, vn, &m->recache)) return sp->err_token; break;
        case 'F': if (!mc_parse_u32(v, vn, &m->flags)) return sp->err_flags; break;
        case 'M':
            if (vn != 1)
                return "CLIENT_ERROR incorrect length for M token";
            if (sp->modes && (!strchr(sp->modes, v[0]) || v[0] == 0))
                return sp->err_mode;
            m->mode = v[0];
            break;
        case 'O':
            if (t->n > 32)
                return "CLIENT_ERROR opaque token too long";
            m->opaque.p = v;
            m->opaque.n = vn;
            break;
        default: break; /* flags without a token; trailing bytes ignored as memcached */
        }
    }
    return NULL;
}

/* Resolves the key token (base64 when b).  NULL or an error line. */
static const char *mc_meta_key(const mc_token *kt, mc_meta *m)
{
    m->key_tok = *kt;
    if (m->b) {
        int n = mc_b64_decode_key(kt->p, kt->n, m->keybuf);
        if (n < 0)
            return "CLIENT_ERROR error decoding key";
        m->key = m->keybuf;
        m->klen = (size_t)n;
    } else {
        if (!mc_key_ok(kt->p, kt->n))
            return MC_ERR_FORMAT;
        m->key = kt->p;
        m->klen = kt->n;
    }
    return NULL;
}

/* Upper bound of the bytes mc_meta_flags_out can write. */
static size_t mc_meta_flags_bound(const mc_req *r, const mc_meta *m)
{
    return (size_t)(m->last - m->first) * 24 + m->key_tok.n + m->opaque.n + 8;
}

/*
 * Writes the return flags that `ret` lists, in request order.  sm is the
 * item's metadata (NULL on a miss: then only O and k are meaningful);
 * cas is the value for 'c'.
 */
static void mc_meta_flags_out(mc_req *r, const mc_meta *m, const char *ret,
                              const store_meta *sm, uint64_t cas, int64_t now)
{
    for (int i = m->first; i < m->last; i++) {
        uint8_t c = r->tok[i].p[0];
        if (!strchr(ret, c) || c == 0)
            continue;
        uint8_t hdr[2] = { ' ', c };
        switch (c) {
        case 'O':
            mc_put(r, hdr, 2);
            mc_put(r, m->opaque.p, m->opaque.n);
            break;
        case 'k':
            mc_put(r, hdr, 2);
            mc_put(r, m->key_tok.p, m->key_tok.n);
            if (m->b)
                mc_put(r, " b", 2);
            break;
        case 'c':
            mc_put(r, hdr, 2);
            mc_put_u64(r, cas);
            break;
        case 'f': if (sm) { mc_put(r, hdr, 2); mc_put_u64(r, sm->flags); } break;
        case 's': if (sm) { mc_put(r, hdr, 2); mc_put_u64(r, sm->len); } break;
        case 't': if (sm) { mc_put(r, hdr, 2); mc_put_i64(r, mc_ttl_left(sm->exptime, now)); } break;
        case 'h': if (sm) { mc_put(r, hdr, 2); mc_put(r, sm->fetched ? "1" : "0", 1); } break;
        case 'l':
            if (sm) {
                mc_put(r, hdr, 2);
                mc_put_i64(r, now > sm->last_access ? now - sm->last_access : 0);
            }
            break;
        default: break;
        }
    }
}

/* A status line with only O and k reflected (misses and failures). */
static void mc_meta_status(mc_req *r, const mc_meta *m, const char *code)
{
    mc_put_str(r, code);
    mc_meta_flags_out(r, m, "Ok", NULL, 0, 0);
    mc_put(r, "\r\n", 2);
}

/* Parses flags from token `first` and the key; on error replies. */
static int mc_meta_begin(mc_req *r, int first, const mc_meta_spec *sp, mc_meta *m)
{
    const char *err = mc_meta_parse(r, first, sp, m);
    if (!err)
        err = mc_meta_key(&r->tok[1], m);
    if (err) {
        mc_reply_client_error(r, err);
        return 0;
    }
    return 1;
}

/* ---- mg ------------------------------------------------------------------------------ */

typedef struct mg_sink {
    mc_req *r;
    const mc_meta *m;
    int64_t now;
    int failed;     /* returned NULL (the store accepts that for empty values) */
} mg_sink;

/* The reply line of a hit; the recache flags follow the requested ones in
 * memcached's order: Z (token already out), X (stale), W (won). */
static void mg_header(mc_req *r, const mc_meta *m, const store_meta *sm, int64_t now)
{
    if (HAS(m, 'v')) {
        mc_put(r, "VA ", 3);
        mc_put_u64(r, sm->len);
    } else {
        mc_put(r, "HD", 2);
    }
    mc_meta_flags_out(r, m, "cfhklOst", sm, sm->cas, now);
    if (sm->token_sent)
        mc_put(r, " Z", 2);
    if (sm->stale)
        mc_put(r, " X", 2);
    if (sm->won)
        mc_put(r, " W", 2);
    mc_put(r, "\r\n", 2);
}

static uint8_t *mg_value_to_reply(void *arg, const store_meta *sm)
{
    mg_sink *k = arg;
    size_t hdr = 16 + mc_meta_flags_bound(k->r, k->m);
    if (cl_buf_reserve(k->r->out, hdr + sm->len + 2) != CL_OK) {
        k->failed = 1;
        return NULL;
    }
    mg_header(k->r, k->m, sm, k->now);
    return cl_buf_extend(k->r->out, sm->len);
}

/* The lookup, with vivify (N) and the recache token in the same store
 * call; CL_OK with the reply written, or the store's error. */
static int mg_lookup(mc_req *r, const mc_meta *m)
{
    store_get_opts o = {
        .want_value = HAS(m, 'v'),
        .touch = HAS(m, 'T'),
        .exptime = HAS(m, 'T') ? store_exptime(m->ttl) : 0,
        .no_bump = HAS(m, 'u'),
        .recache = 1,
        .recache_before = HAS(m, 'R') ? store_exptime(m->recache) : 0,
        .vivify = HAS(m, 'N'),
        .vivify_exptime = HAS(m, 'N') ? store_exptime(m->vivify_ttl) : 0,
    };
    mg_sink k = { r, m, store_now(), 0 };
    store_meta sm;
    size_t start = r->out->len;
    int rc = kv_get(r->kv, m->key, m->klen, &o, mg_value_to_reply, &k, &sm);
    if (k.failed)
        rc = CL_ENOMEM;
    if (rc != CL_OK) {
        cl_buf_truncate(r->out, start);
        return rc;
    }
    if (o.want_value)
        mc_put(r, "\r\n", 2);
    else
        mg_header(r, m, &sm, k.now);
    return CL_OK;
}

int mc_cmd_mg(mc_req *r)
{
    mc_meta m;
    if (!mc_meta_begin(r, 2, &mg_spec, &m))
        return MC_DONE;
    int rc = mg_lookup(r, &m);
    if (rc == CL_ENOTFOUND) {
        if (!m.q)
            mc_meta_status(r, &m, "EN");
    } else if (rc == CL_ENOMEM) {
        mc_reply(r, MC_ERR_NOMEM_GET);
    } else if (rc != CL_OK) {
        mc_reply_store_error(r, rc);
    }
    return MC_DONE;
}

/* ---- ms ------------------------------------------------------------------------------ */

int mc_cmd_ms(mc_req *r)
{
    uint64_t bytes;
    if (r->ntok < 3 || !mc_parse_u64(r->tok[2].p, r->tok[2].n, &bytes) || bytes > INT32_MAX - 2) {
        mc_reply_client_error(r, MC_ERR_FORMAT); /* block length unknown: cannot swallow */
        return MC_DONE;
    }
    mc_meta m;
    if (!mc_meta_begin(r, 3, &ms_spec, &m)) {
        mc_swallow(r, bytes + 2);
        return MC_DONE;
    }
    int blk = mc_take_block(r, bytes);
    if (blk != MC_BLOCK_READY)
        return blk;

    store_write w = {
        .mode = m.mode == 'E' ? STORE_ADD
              : m.mode == 'A' ? STORE_APPEND
              : m.mode == 'P' ? STORE_PREPEND
              : m.mode == 'R' ? STORE_REPLACE : STORE_SET,
        .flags = m.flags,
        .exptime = HAS(&m, 'T') ? store_exptime(m.ttl) : 0,
        .cas = m.mode == 'E' ? 0 : m.cas,   /* add ignores C, as memcached */
        .stale_if_older = HAS(&m, 'I'),
    };
    uint64_t cas = 0;
    int rc = kv_set(r->kv, m.key, m.klen, r->data, (size_t)bytes, &w, &cas);
    int concat = w.mode == STORE_APPEND || w.mode == STORE_PREPEND;
    const char *code = rc == CL_OK ? "HD"
                     : rc == CL_ENOTSTORED ? "NS"
                     : rc == CL_EEXISTS ? "EX"
                     : rc == CL_ENOTFOUND ? (concat ? "NS" : "NF") /* as memcached */
                     : NULL;
    if (!code) {
        mc_reply_store_error(r, rc);
    } else if (!(rc == CL_OK && m.q)) {
        mc_put_str(r, code);
        mc_meta_flags_out(r, &m, "ckO", NULL, rc == CL_OK ? cas : 0, 0);
        mc_put(r, "\r\n", 2);
    }
    return MC_DONE;
}

/* ---- md ------------------------------------------------------------------------------ */

int mc_cmd_md(mc_req *r)
{
    mc_meta m;
    if (!mc_meta_begin(r, 2, &md_spec, &m))
        return MC_DONE;
    int rc = HAS(&m, 'I')
                 ? kv_invalidate(r->kv, m.key, m.klen, m.cas, HAS(&m, 'T'),
                                    HAS(&m, 'T') ? store_exptime(m.ttl) : 0, NULL)
                 : kv_delete(r->kv, m.key, m.klen, m.cas);
    const char *code = rc == CL_OK ? "HD"
                     : rc == CL_ENOTFOUND ? "NF"
                     : rc == CL_EEXISTS ? "EX" : NULL;
    if (!code)
        mc_reply_store_error(r, rc);
    else if (!(rc == CL_OK && m.q))
        mc_meta_status(r, &m, code);
    return MC_DONE;
}

/* ---- ma ------------------------------------------------------------------------------ */

int mc_cmd_ma(mc_req *r)
{
    mc_meta m;
    if (!mc_meta_begin(r, 2, &ma_spec, &m))
        return MC_DONE;
    store_arith_op a = {
        .incr = !(m.mode == 'D' || m.mode == '-'),
        .delta = m.delta,
        .cas = m.cas,
        .vivify = HAS(&m, 'N'),
        .initial = m.initial,
        .exptime = HAS(&m, 'N') ? store_exptime(m.vivify_ttl) : 0,
        .touch = HAS(&m, 'T'),
        .touch_exptime = HAS(&m, 'T') ? store_exptime(m.ttl) : 0,
    };
    uint64_t value;
    store_meta sm;
    int rc = kv_arith(r->kv, m.key, m.klen, &a, &value, &sm);
    if (rc == CL_ENOTFOUND || rc == CL_EEXISTS) {
        mc_meta_status(r, &m, rc == CL_ENOTFOUND ? "NF" : "EX");
        return MC_DONE;
    }
    if (rc != CL_OK) {
        mc_reply_store_error(r, rc);
        return MC_DONE;
    }
    if (m.q)
        return MC_DONE;
    char num[20];
    size_t n = sizeof num;
    uint64_t v = value;
    do {
        num[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    if (HAS(&m, 'v')) {
        mc_put(r, "VA ", 3);
        mc_put_u64(r, sizeof num - n);
    } else {
        mc_put(r, "HD", 2);
    }
    mc_meta_flags_out(r, &m, "ctkO", &sm, sm.cas, store_now());
    mc_put(r, "\r\n", 2);
    if (HAS(&m, 'v')) {
        mc_put(r, num + n, sizeof num - n);
        mc_put(r, "\r\n", 2);
    }
    return MC_DONE;
}

/* ---- mn, me ------------------------------------------------------------------------- */

int mc_cmd_mn(mc_req *r)
{
    mc_put(r, "MN\r\n", 4);
    return MC_DONE;
}

int mc_cmd_me(mc_req *r)
{
    if (r->ntok < 2) {
        mc_reply_client_error(r, MC_ERR_FORMAT);
        return MC_DONE;
    }
    mc_meta m;
    memset(&m, 0, sizeof m);
    for (int i = 2; i < r->ntok; i++)
        if (mc_tok_eq(&r->tok[i], "b"))
            m.b = 1;
    const char *err = mc_meta_key(&r->tok[1], &m);
    if (err) {
        mc_reply_client_error(r, err);
        return MC_DONE;
    }
    store_get_opts o = { .want_value = 0, .no_bump = 1 };
    store_meta sm;
    int rc = kv_get(r->kv, m.key, m.klen, &o, NULL, NULL, &sm);
    if (rc == CL_ENOTFOUND) {
        mc_put(r, "EN\r\n", 4);
        return MC_DONE;
    }
    if (rc != CL_OK) {
        mc_reply_store_error(r, rc);
        return MC_DONE;
    }
    int64_t now = store_now();
    mc_put(r, "ME ", 3);
    mc_put(r, m.key_tok.p, m.key_tok.n);
    mc_put_str(r, " exp=");
    mc_put_i64(r, mc_ttl_left(sm.exptime, now));
    mc_put_str(r, " la=");
    mc_put_i64(r, now > sm.last_access ? now - sm.last_access : 0);
    mc_put_str(r, " cas=");
    mc_put_u64(r, sm.cas);
    mc_put_str(r, sm.fetched ? " fetch=yes" : " fetch=no");
    mc_put_str(r, " cls=");
    mc_put_i64(r, sm.slab_class);
    mc_put_str(r, " size=");
    mc_put_u64(r, (uint64_t)m.klen + sm.len);
    mc_put(r, "\r\n", 2);
    return MC_DONE;
}
