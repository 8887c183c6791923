/*
 * mc_int.h - internals shared by the memcached front door's files:
 * the request being dispatched, the command table row, reply helpers and
 * the small parsers every command uses.
 *
 *   mc.c        framing (lines, data blocks, swallowing), dispatch table,
 *               sessions, threads, the net_proto vtable
 *   mc_parse.c  tokens, numbers, keys, base64, store error -> reply line
 *   mc_text.c   the classic text commands
 *   mc_meta.c   the meta commands (mg ms md ma mn me)
 *   mc_stats.c  stats, stats settings
 *
 * Not for use outside src/frontdoor/mc*.c.
 */
#ifndef CLOISTER_FRONTDOOR_MC_INT_H
#define CLOISTER_FRONTDOOR_MC_INT_H

#include <stddef.h>
#include <stdint.h>

#include "mc.h"
#include "../kv/kv.h"

/* Tokens per line examined (memcached's limit): the command, the key, and
 * for meta commands up to 22 more.  Retrieval commands read their keys
 * straight from the line, so they take any number. */
#define MC_MAX_TOKENS 24

/* A binary key in base64 (meta 'b') may be up to this long on the wire. */
#define MC_B64_KEY_MAX 336   /* 4 * ceil(STORE_KEY_MAX / 3) */

/* Largest reply a single retrieval command may build, unless max_value is
 * larger still (then 2 * max_value). */
#define MC_GET_REPLY_MAX (64u * 1024 * 1024)

struct mc_thread {
    mc_context *ctx;
    store_thread *st;
    kv_thread kv;               /* st, or the replicated store over it */
};

typedef struct mc_token {
    const uint8_t *p;
    size_t n;
} mc_token;

/* Handler results.  MC_SUSPENDED: the handler started a cluster get or
 * set and suspended the connection (net/proto.h), having written and
 * consumed nothing; the same request is dispatched again after the resume
 * and then takes the result from its session. */
enum { MC_DONE = 0, MC_NEED_MORE = 1, MC_BLOCK_READY = 2, MC_SUSPENDED = 3 };
enum { MC_PEND_GET = 1, MC_PEND_SET = 2 };

typedef struct mc_req {
    mc_session *sess;
    mc_thread *thr;
    kv_thread *kv;
    cl_buf *out;
    const uint8_t *line;         /* the command line, "\r\n" stripped */
    size_t linelen;
    const uint8_t *data;         /* input after the line's "\n" */
    size_t avail;                /* bytes at data */
    size_t used;                 /* out: bytes of data consumed (value + "\r\n") */
    size_t need;                 /* out (MC_NEED_MORE): bytes of data needed */
    mc_token tok[MC_MAX_TOKENS];
    int ntok;
    int more;                    /* the line has more than MC_MAX_TOKENS tokens */
    int noreply;                 /* suppress this command's reply */
    int close;                   /* out: close after flushing */
    int oom;                     /* out: a reply could not be buffered */
} mc_req;

typedef struct mc_cmd {
    const char *name;
    uint8_t namelen;
    uint8_t min_tokens;          /* including the command name */
    uint8_t max_tokens;          /* 0: any number */
    int (*handler)(mc_req *r);
} mc_cmd;

/* ---- handlers (one row each in mc.c's table) ------------------------------ */
int mc_cmd_get(mc_req *r);
int mc_cmd_gets(mc_req *r);
int mc_cmd_gat(mc_req *r);
int mc_cmd_gats(mc_req *r);
int mc_cmd_set(mc_req *r);
int mc_cmd_add(mc_req *r);
int mc_cmd_replace(mc_req *r);
int mc_cmd_append(mc_req *r);
int mc_cmd_prepend(mc_req *r);
int mc_cmd_cas(mc_req *r);
int mc_cmd_delete(mc_req *r);
int mc_cmd_incr(mc_req *r);
int mc_cmd_decr(mc_req *r);
int mc_cmd_touch(mc_req *r);
int mc_cmd_flush_all(mc_req *r);
int mc_cmd_version(mc_req *r);
int mc_cmd_verbosity(mc_req *r);
int mc_cmd_quit(mc_req *r);
int mc_cmd_stats(mc_req *r);
int mc_cmd_mg(mc_req *r);
int mc_cmd_ms(mc_req *r);
int mc_cmd_md(mc_req *r);
int mc_cmd_ma(mc_req *r);
int mc_cmd_mn(mc_req *r);
int mc_cmd_me(mc_req *r);

/* ---- replies (mc.c) -------------------------------------------------------- */

/* Append raw bytes; on failure marks the request oom (the session then
 * closes the connection: a lost reply would desynchronise the client). */
void mc_put(mc_req *r, const void *p, size_t n);
void mc_put_str(mc_req *r, const char *s);
void mc_put_u64(mc_req *r, uint64_t v);
void mc_put_i64(mc_req *r, int64_t v);

/* A whole reply line ("\r\n" added), suppressed when r->noreply. */
void mc_reply(mc_req *r, const char *line);

/* An ERROR / CLIENT_ERROR line (counted), suppressed when r->noreply. */
void mc_reply_client_error(mc_req *r, const char *line);

/* The reply line for a store error code (see mc_parse.c). */
void mc_reply_store_error(mc_req *r, int rc);

/* Discards the next n bytes of input (a refused data block): what is
 * already here is consumed now, the rest as it arrives. */
void mc_swallow(mc_req *r, uint64_t n);

/* A storage command's data block of `bytes` bytes + "\r\n": MC_BLOCK_READY
 * when it is all there and well formed (r->used covers it; the value is
 * r->data[0, bytes)); otherwise the handler's result: MC_NEED_MORE, or
 * MC_DONE after replying (too large: swallowed; bad chunk). */
int mc_take_block(mc_req *r, uint64_t bytes);

/* ---- parsing (mc_parse.c) -------------------------------------------------- */

int mc_tok_eq(const mc_token *t, const char *s);
/* Decimal parsers: the whole token, no sign unless stated, no overflow.
 * Return 1 on success. */
int mc_parse_u64(const uint8_t *p, size_t n, uint64_t *out);
int mc_parse_u32(const uint8_t *p, size_t n, uint32_t *out);
int mc_parse_i64(const uint8_t *p, size_t n, int64_t *out);   /* optional '-' */
/* A text-protocol key: 1..250 bytes, no control bytes. */
int mc_key_ok(const uint8_t *p, size_t n);
/* Base64 (RFC 4648, padded) to bytes; out holds STORE_KEY_MAX + 3.
 * Returns the decoded length, or -1 if malformed or longer than
 * STORE_KEY_MAX. */
int mc_b64_decode_key(const uint8_t *p, size_t n, uint8_t *out);

/* Largest data block accepted (store_max_value). */
size_t mc_max_value(const mc_req *r);

/* Counts on the context's atomic counters. */
void mc_count(uint64_t *counter);

/* memcached's ttl report: -1 for "never", else seconds left (>= 0). */
int64_t mc_ttl_left(int64_t exptime, int64_t now);

/* The reply text for a store error code, e.g. "NOT_FOUND" or
 * "SERVER_ERROR out of memory storing object". */
const char *mc_store_error_text(int rc);

#define MC_ERR_FORMAT     "CLIENT_ERROR bad command line format"
#define MC_ERR_DATA_CHUNK "CLIENT_ERROR bad data chunk"
#define MC_ERR_TOO_LARGE  "SERVER_ERROR object too large for cache"
#define MC_ERR_INTEGRITY  "SERVER_ERROR integrity check failed: stored value was altered, moved or rolled back"
#define MC_ERR_NOMEM_GET  "SERVER_ERROR out of memory writing get response"
#define MC_ERR_EXPTIME    "CLIENT_ERROR invalid exptime argument"

#endif
