/*
 * ops.c - memcached's read-modify-write commands as pure functions of the
 * current value (ops.h).  Same rules as the single-node store (store.c):
 * incr/decr take a decimal of at most 20 digits below 2^64 and store the
 * result without padding; append/prepend keep flags and expiry.
 */
#include "ops.h"
#include "../common/err.h"
#include "../store/store.h"

#include <string.h>

void repl_op_init(repl_op *op, repl_op_kind kind)
{
    memset(op, 0, sizeof *op);
    op->kind = kind;
    cl_buf_init(&op->out);
}

void repl_op_fini(repl_op *op) { cl_buf_fini(&op->out, 1); }

static int set_out(repl_op *op, repl_val *next, const uint8_t *a, size_t al, const uint8_t *b,
                   size_t bl)
{
    if (op->max_len && al + bl > op->max_len)
        return CL_ETOOBIG;
    op->out.len = 0;
    uint8_t *p = cl_buf_extend(&op->out, al + bl + 1);
    if (!p)
        return CL_ENOMEM;
    op->out.len = al + bl;
    if (al)
        memcpy(p, a, al);
    if (bl)
        memcpy(p + al, b, bl);
    next->present = 1;
    next->data = op->out.data;
    next->len = al + bl;
    return REPL_RMW_WRITE;
}

static int arith(repl_op *op, const repl_val *cur, repl_val *next)
{
    uint64_t v;
    if (!cur->present) {
        if (!op->vivify)
            return CL_ENOTFOUND;
        v = op->initial;
        next->flags = 0;
        next->exptime = op->vivify_exptime;
    } else {
        uint64_t n;
        if (!store_parse_u64(cur->data, cur->len, &n))
            return CL_ENONNUMERIC;
        if (op->kind == REPL_OP_INCR)
            v = n + op->delta; /* wraps, as memcached */
        else
            v = n > op->delta ? n - op->delta : 0;
        next->flags = cur->flags;
        next->exptime = cur->exptime;
    }
    if (op->touch)
        next->exptime = op->touch_exptime;
    op->number = v;
    uint8_t digits[STORE_U64_DIGITS];
    return set_out(op, next, digits, store_format_u64(v, digits), NULL, 0);
}

int repl_op_fn(void *arg, const repl_val *cur, repl_val *next)
{
    repl_op *op = arg;
    if (op->cas && op->kind != REPL_OP_KVCAS) {
        if (!cur->present)
            return CL_ENOTFOUND;
        if (cur->version != op->cas)
            return CL_EEXISTS;
    }
    switch (op->kind) {
    case REPL_OP_ADD:
        if (cur->present)
            return CL_ENOTSTORED;
        break;
    case REPL_OP_REPLACE:
        if (!cur->present)
            return CL_ENOTSTORED;
        break;
    case REPL_OP_CAS:
        if (!cur->present)
            return CL_ENOTFOUND;
        if (cur->version != op->cas)
            return CL_EEXISTS;
        break;
    case REPL_OP_APPEND:
    case REPL_OP_PREPEND:
        if (!cur->present)
            return CL_ENOTSTORED;
        next->flags = cur->flags;
        next->exptime = cur->exptime;
        return op->kind == REPL_OP_APPEND
                   ? set_out(op, next, cur->data, cur->len, op->data, op->len)
                   : set_out(op, next, op->data, op->len, cur->data, cur->len);
    case REPL_OP_INCR:
    case REPL_OP_DECR:
        return arith(op, cur, next);
    case REPL_OP_TOUCH:
        if (!cur->present)
            return CL_ENOTFOUND;
        next->flags = cur->flags;
        next->exptime = op->exptime;
        return set_out(op, next, cur->data, cur->len, NULL, 0);
    case REPL_OP_DELETE:
        if (!cur->present)
            return CL_ENOTFOUND;
        next->present = 0;
        next->len = 0;
        return REPL_RMW_WRITE;
    case REPL_OP_KVCAS:
        if (op->cas ? !cur->present || cur->version != op->cas : cur->present)
            return CL_ECONFLICT;
        break;
    default:
        return CL_EINVAL;
    }
    next->flags = op->flags;
    next->exptime = op->exptime;
    return set_out(op, next, op->data, op->len, NULL, 0);
}
