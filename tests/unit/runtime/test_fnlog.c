/*
 * test_fnlog.c - the per-function log ring: line format and order,
 * trailing newline handling, control bytes, long lines, the byte bound
 * with dropped-line counting, separate logs never mixing, and concurrent
 * appenders losing or tearing no line.
 */
#include "../harness.h"

#include <pthread.h>

#include "common/buf.h"
#include "common/err.h"
#include "runtime/fnlog.h"

/* Reads the log into a NUL-terminated malloc()ed string. */
static char *read_all(rt_fnlog *l)
{
    cl_buf b;
    cl_buf_init(&b);
    REQUIRE(rt_fnlog_read(l, &b) == CL_OK);
    char *s = malloc(b.len + 1);
    REQUIRE(s != NULL);
    if (b.len)
        memcpy(s, b.data, b.len);
    s[b.len] = 0;
    cl_buf_fini(&b, 0);
    return s;
}

/* Number of lines in s. */
static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_format(void)
{
    rt_fnlog *l;
    REQUIRE(rt_fnlog_create(0, &l) == CL_OK);
    char *s = read_all(l);
    CHECK_EQ(strlen(s), 0);
    free(s);

    rt_fnlog_append(l, (const uint8_t *)"hello", 5);
    rt_fnlog_append(l, (const uint8_t *)"two\r\n", 5);
    rt_fnlog_append(l, (const uint8_t *)"", 0);
    rt_fnlog_append(l, (const uint8_t *)"a\x1b[31m\tb\nc\x7f", 11);
    s = read_all(l);
    /* "2024-01-02T03:04:05.678Z " is 25 bytes */
    CHECK_EQ(count_lines(s), 4);
    CHECK(strlen(s) > 25 && s[4] == '-' && s[10] == 'T' && s[19] == '.' && s[23] == 'Z' && s[24] == ' ');
    CHECK(strncmp(s + 25, "hello\n", 6) == 0);
    char *second = strchr(s, '\n') + 1;
    CHECK(strncmp(second + 25, "two\n", 4) == 0);
    char *third = strchr(second, '\n') + 1;
    CHECK(strncmp(third + 25, "\n", 1) == 0);
    char *fourth = strchr(third, '\n') + 1;
    CHECK(strcmp(fourth + 25, "a?[31m\tb?c?\n") == 0);
    free(s);

    uint64_t lines, dropped;
    rt_fnlog_counts(l, &lines, &dropped);
    CHECK_EQ(lines, 4);
    CHECK_EQ(dropped, 0);
    rt_fnlog_destroy(l);
}

static void test_long_line_cut(void)
{
    rt_fnlog *l;
    REQUIRE(rt_fnlog_create(0, &l) == CL_OK);
    uint8_t big[3000];
    memset(big, 'x', sizeof big);
    rt_fnlog_append(l, big, sizeof big);
    char *s = read_all(l);
    CHECK_EQ(strlen(s), 25 + RT_FNLOG_LINE_MAX + 1);
    free(s);
    rt_fnlog_destroy(l);
}

/* The ring keeps the newest lines within its bound and counts the rest;
 * records wrap around the end of the array intact. */
static void test_bound_and_drop(void)
{
    rt_fnlog *l;
    REQUIRE(rt_fnlog_create(4096, &l) == CL_OK);
    char line[64];
    int total = 1000;
    for (int i = 0; i < total; i++) {
        int n = snprintf(line, sizeof line, "line %04d %.*s", i, i % 37, "....................................");
        rt_fnlog_append(l, (const uint8_t *)line, (size_t)n);
    }
    uint64_t lines, dropped;
    rt_fnlog_counts(l, &lines, &dropped);
    CHECK_EQ(lines + dropped, (uint64_t)total);
    CHECK(dropped > 0);
    CHECK(lines > 50);   /* ~12 + 30 bytes per record in 4 KiB */
    char *s = read_all(l);
    char want[64];
    snprintf(want, sizeof want, "(%llu older lines dropped)\n", (unsigned long long)dropped);
    CHECK(strncmp(s, want, strlen(want)) == 0);
    CHECK_EQ(count_lines(s), lines + 1);
    /* the kept lines are the newest, in order, each intact */
    char *p = strchr(s, '\n') + 1;
    for (uint64_t i = 0; i < lines; i++) {
        int idx = (int)(dropped + i);
        int n = snprintf(want, sizeof want, "line %04d %.*s\n", idx, idx % 37, "....................................");
        CHECK(strncmp(p + 25, want, (size_t)n) == 0);
        p = strchr(p, '\n') + 1;
    }
    free(s);
    rt_fnlog_destroy(l);
}

static void test_logs_do_not_mix(void)
{
    rt_fnlog *a, *b;
    REQUIRE(rt_fnlog_create(0, &a) == CL_OK);
    REQUIRE(rt_fnlog_create(0, &b) == CL_OK);
    rt_fnlog_append(a, (const uint8_t *)"from a", 6);
    rt_fnlog_append(b, (const uint8_t *)"from b", 6);
    char *sa = read_all(a), *sb = read_all(b);
    CHECK(strstr(sa, "from a") && !strstr(sa, "from b"));
    CHECK(strstr(sb, "from b") && !strstr(sb, "from a"));
    free(sa);
    free(sb);
    rt_fnlog_destroy(a);
    rt_fnlog_destroy(b);
}

#define WRITERS 4
#define PER_WRITER 2000

static void *writer(void *arg)
{
    rt_fnlog *l = arg;
    char line[64];
    for (int i = 0; i < PER_WRITER; i++) {
        int n = snprintf(line, sizeof line, "w%p-%d-end", (void *)&line, i);
        rt_fnlog_append(l, (const uint8_t *)line, (size_t)n);
    }
    return NULL;
}

static void test_concurrent(void)
{
    rt_fnlog *l;
    REQUIRE(rt_fnlog_create(8192, &l) == CL_OK);
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&t[i], NULL, writer, l);
    for (int r = 0; r < 50; r++) {   /* reads interleave with appends */
        char *s = read_all(l);
        free(s);
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    uint64_t lines, dropped;
    rt_fnlog_counts(l, &lines, &dropped);
    CHECK_EQ(lines + dropped, WRITERS * PER_WRITER);
    char *s = read_all(l);
    CHECK_EQ(count_lines(s), lines + 1);
    /* every kept line is whole */
    char *p = strchr(s, '\n') + 1;
    int whole = 1;
    for (uint64_t i = 0; i < lines; i++) {
        char *nl = strchr(p, '\n');
        whole &= p[25] == 'w' && nl - p > 4 && strncmp(nl - 4, "-end", 4) == 0;
        p = nl + 1;
    }
    CHECK(whole);
    free(s);
    rt_fnlog_destroy(l);
}

int main(void)
{
    RUN(test_format);
    RUN(test_long_line_cut);
    RUN(test_bound_and_drop);
    RUN(test_logs_do_not_mix);
    RUN(test_concurrent);
    return th_done();
}
