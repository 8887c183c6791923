/*
 * fnlog.h - one function's log: a bounded ring of timestamped lines.
 *
 * Every deployed function owns one rt_fnlog (the registry creates it with
 * the function and destroys it with the function), so lines of different
 * functions can never mix.  Lines come from cloister_log() and from the
 * guest's stdout/stderr (WASI fd_write, cut into lines by host.c), and
 * from the runtime itself (e.g. a trap's name).  `cloister logs NAME`
 * reads them back through rt_logs() -> rt_fnlog_read().
 *
 * Invariants: the ring never holds more than its capacity in bytes (line
 * bytes plus a 12-byte header each); when a new line does not fit, the
 * oldest lines are dropped and counted.  A line is at most
 * RT_FNLOG_LINE_MAX bytes (longer ones are cut); control bytes other than
 * TAB are stored as '?', so a log read on a terminal cannot inject escape
 * sequences.  Thread-safe: appends from concurrent invocations of the
 * same function and reads interleave whole lines.
 */
#ifndef CLOISTER_RUNTIME_FNLOG_H
#define CLOISTER_RUNTIME_FNLOG_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "call.h"           /* typedef struct rt_fnlog rt_fnlog */

#define RT_FNLOG_DEFAULT_BYTES (64u * 1024)
#define RT_FNLOG_LINE_MAX RT_LOG_LINE_MAX

/* Creates an empty log holding at most cap_bytes (0 = the default; at
 * least 4 KiB).  CL_OK or CL_ENOMEM. */
int rt_fnlog_create(size_t cap_bytes, rt_fnlog **out) __attribute__((warn_unused_result));
void rt_fnlog_destroy(rt_fnlog *l);

/* Appends one line (a trailing "\n" or "\r\n" is removed; len 0 is an
 * empty line), stamped with the current time.  Never fails: a full ring
 * drops its oldest lines. */
void rt_fnlog_append(rt_fnlog *l, const uint8_t *msg, size_t len);

/* Appends the lines to out, oldest first, each as
 * "2024-01-02T03:04:05.678Z message\n"; when lines were dropped, a first
 * line "(N older lines dropped)" says so.  CL_OK or CL_ENOMEM. */
int rt_fnlog_read(rt_fnlog *l, cl_buf *out) __attribute__((warn_unused_result));

/* Lines currently held, and lines dropped since creation. */
void rt_fnlog_counts(rt_fnlog *l, uint64_t *lines, uint64_t *dropped);

#endif
