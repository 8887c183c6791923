/* log.c - see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int log_level = CL_LOG_INFO;
static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };

/* Set at run time by the memcached `verbosity` command from any worker:
 * relaxed atomics, a level is a hint. */
void cl_log_set_level(int level) { __atomic_store_n(&log_level, level, __ATOMIC_RELAXED); }
int  cl_log_get_level(void) { return __atomic_load_n(&log_level, __ATOMIC_RELAXED); }

void cl_log(int level, const char *module, const char *fmt, ...)
{
    if (level > cl_log_get_level())
        return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level < 0 ? 0 : level > 3 ? 3 : level], module);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void cl_assert_fail(const char *expr, const char *file, int line)
{
    cl_log(CL_LOG_ERROR, "assert", "%s:%d: assertion failed: %s", file, line, expr);
    abort();
}
