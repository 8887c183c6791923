/*
 * ops.h - memcached's read-modify-write commands (and the runtime's
 * kv_cas) as repl_rmw_fn functions, so that every command keeps its
 * meaning on a cluster: the front door fills a repl_op, calls
 * repl_rmw(r, key, klen, repl_op_fn, &op, done, arg) and maps the result.
 *
 *   kind             needs              completes with
 *   REPL_OP_ADD      data,flags,exptime CL_OK | CL_ENOTSTORED (present)
 *   REPL_OP_REPLACE  data,flags,exptime CL_OK | CL_ENOTSTORED (absent)
 *   REPL_OP_CAS      + cas              CL_OK | CL_ENOTFOUND | CL_EEXISTS
 *   REPL_OP_APPEND   data               CL_OK | CL_ENOTSTORED; flags, exptime kept
 *   REPL_OP_PREPEND  data               as append
 *   REPL_OP_INCR     delta              CL_OK (res->val: the decimal result,
 *   REPL_OP_DECR     delta                 op->number) | CL_ENOTFOUND |
 *                                          CL_ENONNUMERIC; incr wraps at 2^64,
 *                                          decr floors at 0; vivify: create
 *                                          with `initial` when absent
 *   REPL_OP_TOUCH    exptime            CL_OK | CL_ENOTFOUND
 *   REPL_OP_DELETE   (cas)              CL_OK (a tombstone) | CL_ENOTFOUND | CL_EEXISTS
 *   REPL_OP_KVCAS    data, cas          CL_OK | CL_ECONFLICT: writes iff the
 *                                          version is `cas` (0: absent)
 * A nonzero cas also guards ADD..PREPEND, INCR/DECR, TOUCH (meta C flag):
 * CL_ENOTFOUND when absent, CL_EEXISTS when the version differs.
 * max_len (0: none) refuses results longer than it with CL_ETOOBIG; set
 * it to what the store takes (store_max_value - REPL_OP_OVERHEAD).
 *
 * The function may run several times (retries); it writes only op->out
 * and op->number.  op->out holds the new value until repl_op_fini, so
 * the op must live until the completion callback has run.
 */
#ifndef CLOISTER_REPL_OPS_H
#define CLOISTER_REPL_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "repl.h"

#define REPL_OP_OVERHEAD 64   /* bytes a stored value may need besides the data */

typedef enum repl_op_kind {
    REPL_OP_ADD = 1,
    REPL_OP_REPLACE,
    REPL_OP_CAS,
    REPL_OP_APPEND,
    REPL_OP_PREPEND,
    REPL_OP_INCR,
    REPL_OP_DECR,
    REPL_OP_TOUCH,
    REPL_OP_DELETE,
    REPL_OP_KVCAS,
} repl_op_kind;

typedef struct repl_op {
    repl_op_kind kind;
    const uint8_t *data;   /* borrowed until completion */
    size_t len;
    uint32_t flags;
    int64_t exptime;       /* absolute Unix seconds; 0 = never */
    uint64_t cas;
    uint64_t delta;
    int vivify;            /* INCR/DECR: create when absent */
    uint64_t initial;
    int64_t vivify_exptime;
    int touch;             /* INCR/DECR: also set exptime to touch_exptime (meta ma T) */
    int64_t touch_exptime;
    size_t max_len;
    /* results */
    uint64_t number;       /* INCR/DECR */
    cl_buf out;
} repl_op;

void repl_op_init(repl_op *op, repl_op_kind kind);
void repl_op_fini(repl_op *op);
int repl_op_fn(void *arg, const repl_val *cur, repl_val *next);

#endif
