/*
 * wire.h - the replication engine's messages: compact binary, all
 * integers little-endian, every length checked when decoding.
 *
 * One transport message (transport.h: one frame) is
 *     u8 WIRE_VERSION | record*
 *     record = u8 type | u32 body_len | body
 * so a step's requests and replies to one peer travel in one frame.
 * Every request body starts with the proposer's epoch and a request id;
 * every reply echoes both (the proposer drops a reply whose epoch is not
 * its own or whose id is not the current round of a live operation).
 *
 *   type          body (after u64 epoch | u64 rid)
 *   QUERY    1    u8 flags | u64 known_ts | key
 *   WRITE    2    u8 flags | key | rec
 *   PREPARE  3    u64 ballot | u64 known_ts | key
 *   ACCEPT   4    key | rec                  (rec.version = the ballot)
 *   PUSH     5    u8 flags | u32 n | n x (key | rec)     (rid 0: no reply)
 *   SYNC     6    u64 cursor | u64 fence | u32 max_bytes
 *   DIGEST   7    u32 n | n x u64
 *   REPLY   64    u8 for_type | u8 status | u64 ts | u64 promise |
 *                 u8 has_rec [rec] | u8 has_vec [vec]
 *   SYNCED  65    u64 next_cursor | u64 max_promise | u32 n | n x (key | rec)
 *   DIFF    66    u32 n | ceil(n/8) bytes of bitmap (buckets that differ)
 *
 *   key = u8 klen (1..250) | klen bytes
 *   rec = u64 version | u32 flags | i64 exptime | u8 kind | u8 xbit |
 *         u32 len | len bytes (the stored blob)
 *   vec = u8 n (<= 7) | n x (u8 node | u64 ballot)
 *
 * kind: REC_NONE (no record), REC_VALUE, REC_TOMB (deletion).  xbit: the
 * blob starts with a vec (the register's history clock, repl.c), then the
 * value bytes.  Flags: QUERY QF_VALUE (send rec when ts != known_ts),
 * QF_VEC (send the current value's vec), QF_ANY (answer even while
 * recovering: lock catch-up); WRITE WF_REPAIR (a broken copy at the same
 * version is rewritten); PUSH PF_ACK (reply once all entries applied).
 * REPLY status: WS_OK, WS_NACK (promise = the replica's max(promise,
 * accepted ts)), WS_BROKEN (the replica's copy failed its integrity
 * check; ts is its version), WS_NOTREADY (recovering: not a vote),
 * WS_FAIL (the replica could not store it).
 *
 * Decoding never reads past the end of a message; a malformed record
 * makes the rest of the message ignored (wire_rd.bad).
 */
#ifndef CLOISTER_REPL_WIRE_H
#define CLOISTER_REPL_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "../common/buf.h"
#include "transport.h"

#define WIRE_VERSION 1
#define WIRE_KEY_MAX 250
#define WIRE_REC_HDR (8 + 4 + 8 + 1 + 1 + 4)
/* History clock slots: node ids 1..REPL_MAX_NODES, then two more. */
#define VEC_BLIND (REPL_MAX_NODES + 1)   /* newest blind write the value descends from */
#define VEC_ORIGIN (REPL_MAX_NODES + 2)  /* version of the value's last change (CAS id) */
#define VEC_SLOTS (REPL_MAX_NODES + 3)
#define WIRE_VEC_MAX (1 + (VEC_SLOTS - 1) * 9)

enum wire_type {
    W_QUERY = 1, W_WRITE = 2, W_PREPARE = 3, W_ACCEPT = 4, W_PUSH = 5, W_SYNC = 6,
    W_DIGEST = 7,
    W_REPLY = 64, W_SYNCED = 65, W_DIFF = 66,
};
enum { QF_VALUE = 1, QF_VEC = 2, QF_ANY = 4 };
enum { WF_REPAIR = 1 };
enum { PF_ACK = 1 };
enum wire_status { WS_OK = 0, WS_NACK = 1, WS_BROKEN = 2, WS_NOTREADY = 3, WS_FAIL = 4 };
enum rec_kind { REC_NONE = 0, REC_VALUE = 1, REC_TOMB = 2 };

/* A register's record: version and metadata, and the stored blob. */
typedef struct wire_rec {
    uint64_t version;
    uint32_t flags;
    int64_t exptime;
    uint8_t kind;
    uint8_t xbit;
    const uint8_t *blob;
    uint32_t blen;
} wire_rec;

/* A history clock: per node id, the largest ballot of that node whose
 * change is part of the value (0: none); b[VEC_BLIND], the version of
 * the newest blind write the value descends from (0: the value has no
 * vector and is itself a blind write, or there was none); b[VEC_ORIGIN],
 * the version of the value's last real change when a re-proposal gave
 * the unchanged value a newer version (0: the value's own version).
 * Only non-zero slots travel. */
typedef struct rvec {
    uint64_t b[VEC_SLOTS];
} rvec;

/* ---- reading -------------------------------------------------------------- */

typedef struct wire_rd {
    const uint8_t *p, *end;
    int bad;
} wire_rd;

static inline void wire_rd_init(wire_rd *r, const uint8_t *p, size_t n)
{
    r->p = p;
    r->end = p + n;
    r->bad = 0;
}
static inline size_t wire_rd_left(const wire_rd *r) { return (size_t)(r->end - r->p); }

uint8_t wire_u8(wire_rd *r);
uint32_t wire_u32(wire_rd *r);
uint64_t wire_u64(wire_rd *r);
/* n bytes in place (NULL and bad if fewer remain). */
const uint8_t *wire_bytes(wire_rd *r, size_t n);
/* key: 1..250 bytes. */
int wire_key(wire_rd *r, const uint8_t **key, uint8_t *klen);
int wire_rec_get(wire_rd *r, wire_rec *rec);
int wire_vec_get(wire_rd *r, rvec *v);

/* Next record of a message: its type and a reader over its body.
 * 1 when one was read, 0 at the end or on a malformed frame. */
int wire_next(wire_rd *msg, uint8_t *type, wire_rd *body);

/* A decoded REPLY. */
typedef struct wire_reply {
    uint64_t epoch, rid;
    uint8_t for_type, status;
    uint64_t ts, promise;
    int has_rec;
    wire_rec rec;
    int has_vec;
    rvec vec;
} wire_reply;
int wire_reply_get(wire_rd *body, wire_reply *out);

/* ---- writing ------------------------------------------------------------- */

/* Room for one record of body_len bytes at the end of b (the version
 * byte first if b is empty).  Returns where the body goes, or NULL
 * (CL_ENOMEM: the message is treated as lost). */
uint8_t *wire_open(cl_buf *b, uint8_t type, size_t body_len);
/* A record whose length is known only at the end: wire_open_var returns
 * its offset (or SIZE_MAX); append the body with cl_buf_*; wire_close
 * patches the length. */
size_t wire_open_var(cl_buf *b, uint8_t type);
void wire_close(cl_buf *b, size_t at);

static inline uint8_t *wire_put_u8(uint8_t *p, uint8_t v) { *p = v; return p + 1; }
static inline uint8_t *wire_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}
static inline uint8_t *wire_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}
static inline uint8_t *wire_put_bytes(uint8_t *p, const void *s, size_t n)
{
    if (n)
        memcpy(p, s, n);
    return p + n;
}
static inline uint8_t *wire_put_key(uint8_t *p, const uint8_t *key, uint8_t klen)
{
    *p++ = klen;
    return wire_put_bytes(p, key, klen);
}
static inline size_t wire_rec_size(const wire_rec *r) { return WIRE_REC_HDR + r->blen; }
uint8_t *wire_put_rec(uint8_t *p, const wire_rec *r);
size_t wire_vec_size(const rvec *v);
uint8_t *wire_put_vec(uint8_t *p, const rvec *v);

/* Appends a REPLY.  CL_OK or CL_ENOMEM. */
int wire_reply_put(cl_buf *b, uint64_t epoch, uint64_t rid, uint8_t for_type, uint8_t status,
                   uint64_t ts, uint64_t promise, const wire_rec *rec, const rvec *vec);

/* ---- blobs: the stored form of a strong register's value --------------------
 *
 * blob = vec | value bytes when xbit is set, else just the value bytes.
 * blob_split() checks and parses; 0 on a malformed blob. */
int blob_split(const uint8_t *blob, size_t blen, int xbit, rvec *vec,
               const uint8_t **data, size_t *dlen);

#endif
