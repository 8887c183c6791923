/*
 * wire.c - encoding and bounds-checked decoding of engine messages
 * (wire.h).  Decoders treat every byte as hostile: each read checks what
 * is left, lengths are validated before use, and a failed check marks
 * the reader bad so that callers stop at the first inconsistency.
 */
#include "wire.h"
#include "../common/err.h"

uint8_t wire_u8(wire_rd *r)
{
    if (r->bad || r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

uint32_t wire_u32(wire_rd *r)
{
    if (r->bad || wire_rd_left(r) < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)r->p[i] << (8 * i);
    r->p += 4;
    return v;
}

uint64_t wire_u64(wire_rd *r)
{
    if (r->bad || wire_rd_left(r) < 8) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    return v;
}

const uint8_t *wire_bytes(wire_rd *r, size_t n)
{
    if (r->bad || wire_rd_left(r) < n) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    return p;
}

int wire_key(wire_rd *r, const uint8_t **key, uint8_t *klen)
{
    uint8_t n = wire_u8(r);
    if (n == 0 || n > WIRE_KEY_MAX)
        r->bad = 1;
    *key = wire_bytes(r, n);
    *klen = n;
    return !r->bad;
}

int wire_rec_get(wire_rd *r, wire_rec *rec)
{
    rec->version = wire_u64(r);
    rec->flags = wire_u32(r);
    rec->exptime = (int64_t)wire_u64(r);
    rec->kind = wire_u8(r);
    rec->xbit = wire_u8(r);
    rec->blen = wire_u32(r);
    if (rec->kind > REC_TOMB || rec->xbit > 1 || rec->blen > REPL_MAX_MSG)
        r->bad = 1;
    rec->blob = wire_bytes(r, rec->blen);
    if (!r->bad && rec->xbit) { /* the vec must parse */
        rvec v;
        const uint8_t *d;
        size_t dl;
        if (!blob_split(rec->blob, rec->blen, 1, &v, &d, &dl))
            r->bad = 1;
    }
    return !r->bad;
}

int wire_vec_get(wire_rd *r, rvec *v)
{
    memset(v, 0, sizeof *v);
    uint8_t n = wire_u8(r);
    if (n > VEC_SLOTS - 1)
        r->bad = 1;
    for (unsigned i = 0; i < n && !r->bad; i++) {
        uint8_t node = wire_u8(r);
        uint64_t b = wire_u64(r);
        if (node < 1 || node >= VEC_SLOTS)
            r->bad = 1;
        else
            v->b[node] = b;
    }
    return !r->bad;
}

int wire_next(wire_rd *msg, uint8_t *type, wire_rd *body)
{
    if (msg->bad || wire_rd_left(msg) == 0)
        return 0;
    *type = wire_u8(msg);
    uint32_t len = wire_u32(msg);
    const uint8_t *p = wire_bytes(msg, len);
    if (msg->bad)
        return 0;
    wire_rd_init(body, p, len);
    return 1;
}

int wire_reply_get(wire_rd *b, wire_reply *out)
{
    out->epoch = wire_u64(b);
    out->rid = wire_u64(b);
    out->for_type = wire_u8(b);
    out->status = wire_u8(b);
    out->ts = wire_u64(b);
    out->promise = wire_u64(b);
    out->has_rec = wire_u8(b);
    if (out->status > WS_FAIL || out->has_rec > 1)
        b->bad = 1;
    if (out->has_rec && !b->bad)
        wire_rec_get(b, &out->rec);
    out->has_vec = wire_u8(b);
    if (out->has_vec > 1)
        b->bad = 1;
    if (out->has_vec && !b->bad)
        wire_vec_get(b, &out->vec);
    return !b->bad;
}

/* ---- writing --------------------------------------------------------------- */

uint8_t *wire_open(cl_buf *b, uint8_t type, size_t body_len)
{
    if (body_len > REPL_MAX_MSG)
        return NULL;
    size_t need = (b->len == 0) + 5 + body_len;
    if (cl_buf_reserve(b, need) != CL_OK)
        return NULL;
    uint8_t *p = b->data + b->len;
    if (b->len == 0)
        *p++ = WIRE_VERSION;
    *p++ = type;
    p = wire_put_u32(p, (uint32_t)body_len);
    b->len += need;
    return p;
}

size_t wire_open_var(cl_buf *b, uint8_t type)
{
    uint8_t *p = wire_open(b, type, 0);
    return p ? b->len - 5 : SIZE_MAX;
}

void wire_close(cl_buf *b, size_t at)
{
    wire_put_u32(b->data + at + 1, (uint32_t)(b->len - at - 5));
}

uint8_t *wire_put_rec(uint8_t *p, const wire_rec *r)
{
    p = wire_put_u64(p, r->version);
    p = wire_put_u32(p, r->flags);
    p = wire_put_u64(p, (uint64_t)r->exptime);
    p = wire_put_u8(p, r->kind);
    p = wire_put_u8(p, r->xbit);
    p = wire_put_u32(p, r->blen);
    return wire_put_bytes(p, r->blob, r->blen);
}

size_t wire_vec_size(const rvec *v)
{
    size_t n = 1;
    for (int i = 1; i < VEC_SLOTS; i++)
        n += v->b[i] ? 9 : 0;
    return n;
}

uint8_t *wire_put_vec(uint8_t *p, const rvec *v)
{
    uint8_t *count = p++;
    uint8_t n = 0;
    for (int i = 1; i < VEC_SLOTS; i++) {
        if (!v->b[i])
            continue;
        p = wire_put_u8(p, (uint8_t)i);
        p = wire_put_u64(p, v->b[i]);
        n++;
    }
    *count = n;
    return p;
}

int wire_reply_put(cl_buf *b, uint64_t epoch, uint64_t rid, uint8_t for_type, uint8_t status,
                   uint64_t ts, uint64_t promise, const wire_rec *rec, const rvec *vec)
{
    size_t len = 8 + 8 + 1 + 1 + 8 + 8 + 1 + (rec ? wire_rec_size(rec) : 0) + 1 +
                 (vec ? wire_vec_size(vec) : 0);
    uint8_t *p = wire_open(b, W_REPLY, len);
    if (!p)
        return CL_ENOMEM;
    p = wire_put_u64(p, epoch);
    p = wire_put_u64(p, rid);
    p = wire_put_u8(p, for_type);
    p = wire_put_u8(p, status);
    p = wire_put_u64(p, ts);
    p = wire_put_u64(p, promise);
    p = wire_put_u8(p, rec != NULL);
    if (rec)
        p = wire_put_rec(p, rec);
    p = wire_put_u8(p, vec != NULL);
    if (vec)
        wire_put_vec(p, vec);
    return CL_OK;
}

int blob_split(const uint8_t *blob, size_t blen, int xbit, rvec *vec,
               const uint8_t **data, size_t *dlen)
{
    if (!xbit) {
        memset(vec, 0, sizeof *vec);
        *data = blob;
        *dlen = blen;
        return 1;
    }
    wire_rd r;
    wire_rd_init(&r, blob, blen);
    if (!wire_vec_get(&r, vec))
        return 0;
    *data = r.p;
    *dlen = wire_rd_left(&r);
    return 1;
}
