/*
 * harness.h - the in-tree unit-test harness.
 *
 * A test file defines static test functions and a main() that RUN()s them
 * and returns th_done().  Every CHECK that fails prints file:line and the
 * expression and makes the program exit non-zero; the last line printed is
 * "N passed, N failed" (counted per check).  ctest runs each file as its
 * own entry, so a failure names its module.
 */
#ifndef CLOISTER_TEST_HARNESS_H
#define CLOISTER_TEST_HARNESS_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long th_passed, th_failed;
static const char *th_current = "?";

static inline void th_check(int ok, const char *file, int line, const char *expr)
{
    if (ok) {
        th_passed++;
        return;
    }
    th_failed++;
    fprintf(stderr, "FAIL %s:%d in %s: %s\n", file, line, th_current, expr);
}

#define CHECK(cond) th_check(!!(cond), __FILE__, __LINE__, #cond)

#define CHECK_EQ(a, b)                                                        \
    do {                                                                      \
        long long th_a_ = (long long)(a), th_b_ = (long long)(b);             \
        th_check(th_a_ == th_b_, __FILE__, __LINE__, #a " == " #b);           \
        if (th_a_ != th_b_)                                                   \
            fprintf(stderr, "     %lld != %lld\n", th_a_, th_b_);             \
    } while (0)

#define CHECK_MEM(a, b, n) th_check(memcmp((a), (b), (n)) == 0, __FILE__, __LINE__, "memcmp(" #a ", " #b ", " #n ") == 0")

/* Stops the whole program: for failures after which nothing can be tested. */
#define REQUIRE(cond)                                                         \
    do {                                                                      \
        int th_ok_ = !!(cond);                                                \
        th_check(th_ok_, __FILE__, __LINE__, #cond);                          \
        if (!th_ok_) {                                                        \
            fprintf(stderr, "%lu passed, %lu failed\n", th_passed, th_failed);\
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define RUN(fn)                                                               \
    do {                                                                      \
        th_current = #fn;                                                     \
        unsigned long th_f0_ = th_failed;                                     \
        fn();                                                                 \
        printf("%s %s\n", th_failed == th_f0_ ? "ok  " : "FAIL", #fn);        \
        fflush(stdout);                                                       \
    } while (0)

static inline int th_done(void)
{
    printf("%lu passed, %lu failed\n", th_passed, th_failed);
    return th_failed ? 1 : (th_passed ? 0 : 1); /* a file that checked nothing fails */
}

#endif
