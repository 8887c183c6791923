/*
 * log.h - leveled logging to stderr.
 *
 * Lines are "<ISO time> <level> [<module>] message".  Never pass secrets
 * (keys, values, sealing keys, tenant key names) to these functions: log a
 * keyed fingerprint (see cl_log_fingerprint) when an item must be named.
 * Thread-safe; each call writes one line with one write(2).
 */
#ifndef CLOISTER_COMMON_LOG_H
#define CLOISTER_COMMON_LOG_H

#include <stddef.h>
#include <stdint.h>

enum cl_log_level { CL_LOG_ERROR = 0, CL_LOG_WARN = 1, CL_LOG_INFO = 2, CL_LOG_DEBUG = 3 };

/* Messages above this level are dropped.  Default CL_LOG_INFO. */
void cl_log_set_level(int level);
int  cl_log_get_level(void);

void cl_log(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cl_log_error(mod, ...) cl_log(CL_LOG_ERROR, mod, __VA_ARGS__)
#define cl_log_warn(mod, ...)  cl_log(CL_LOG_WARN, mod, __VA_ARGS__)
#define cl_log_info(mod, ...)  cl_log(CL_LOG_INFO, mod, __VA_ARGS__)
#define cl_log_debug(mod, ...) cl_log(CL_LOG_DEBUG, mod, __VA_ARGS__)

/* Internal invariant: abort with file and line.  Never for bad input. */
#define CL_ASSERT(cond)                                                       \
    do {                                                                      \
        if (__builtin_expect(!(cond), 0))                                     \
            cl_assert_fail(#cond, __FILE__, __LINE__);                        \
    } while (0)
__attribute__((noreturn)) void cl_assert_fail(const char *expr, const char *file, int line);

#endif
