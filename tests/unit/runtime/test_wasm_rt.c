/*
 * test_wasm_rt.c - Cloister's implementation of wasm-rt.h
 * (src/runtime/wasm_rt.c) on its own: the function-type registry (equal
 * signatures get equal indices, from many threads at once), trap names,
 * tables, memories allocated outside the sandbox, exceptions, and a trap
 * with no guest code running (an internal error: the process aborts).
 * Guest code and slot memories are covered by test_sandbox.c.
 */
#include "../harness.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wasm-rt.h>

#include "common/err.h"
#include "runtime/sandbox.h"

static void test_init(void)
{
    wasm_rt_init();
    CHECK(wasm_rt_is_initialized());
    wasm_rt_free();   /* keeps the registry: loaded modules hold indices */
    CHECK(wasm_rt_is_initialized());
}

static void test_strerror(void)
{
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_OOB), "out of bounds memory access") == 0);
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_UNREACHABLE), "unreachable") == 0);
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_DIV_BY_ZERO), "integer divide by zero") == 0);
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_INT_OVERFLOW), "integer overflow") == 0);
    CHECK(strcmp(wasm_rt_strerror(WASM_RT_TRAP_EXHAUSTION), "call stack exhausted") == 0);
    CHECK(strstr(wasm_rt_strerror(WASM_RT_TRAP_CALL_INDIRECT), "indirect call signature mismatch") != NULL);
}

/* 64 distinct signatures, registered in an order that depends on `seed`. */
#define NSIGS 64
static uint32_t reg(int k)
{
    switch (k % 4) {
    case 0: return wasm_rt_register_func_type((uint32_t)k / 4, 0, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32);
    case 1: return wasm_rt_register_func_type((uint32_t)k / 4, 1, WASM_RT_I64, WASM_RT_I64, WASM_RT_I64,
                                              WASM_RT_I64, WASM_RT_I64, WASM_RT_I64, WASM_RT_I64,
                                              WASM_RT_I64, WASM_RT_I64, WASM_RT_I64, WASM_RT_I64,
                                              WASM_RT_I64, WASM_RT_I64, WASM_RT_I64, WASM_RT_I64,
                                              WASM_RT_I64, WASM_RT_F32);
    case 2: return wasm_rt_register_func_type(1, (uint32_t)k / 4, WASM_RT_F64, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32, WASM_RT_I32, WASM_RT_I32,
                                              WASM_RT_I32, WASM_RT_I32);
    default: return wasm_rt_register_func_type(2, 1, WASM_RT_FUNCREF, (wasm_rt_type_t)(k / 4 % 6),
                                               WASM_RT_EXTERNREF);
    }
}

typedef struct reg_arg {
    int seed;
    uint32_t idx[NSIGS];
} reg_arg;

static void *reg_thread(void *p)
{
    reg_arg *a = p;
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < NSIGS; i++) {
            int k = (i * 7 + a->seed * 13 + round) % NSIGS;
            a->idx[k] = reg(k);
        }
    return NULL;
}

static void test_func_types(void)
{
    enum { NT = 4 };
    pthread_t t[NT];
    reg_arg args[NT];
    int i, k, distinct = 1;

    for (i = 0; i < NT; i++) {
        args[i].seed = i;
        REQUIRE(pthread_create(&t[i], NULL, reg_thread, &args[i]) == 0);
    }
    for (i = 0; i < NT; i++)
        pthread_join(t[i], NULL);
    /* equal signatures: equal indices in every thread, and again now */
    for (k = 0; k < NSIGS; k++) {
        for (i = 1; i < NT; i++)
            CHECK_EQ(args[i].idx[k], args[0].idx[k]);
        CHECK_EQ(reg(k), args[0].idx[k]);
        CHECK(args[0].idx[k] != 0);   /* 0 is the null funcref's type */
    }
    /* different signatures: different indices (k%4==3 repeats every 24) */
    for (k = 0; k < NSIGS; k++)
        for (i = 0; i < k; i++)
            if (args[0].idx[i] == args[0].idx[k] && !(k % 4 == 3 && i % 4 == 3 && (k / 4) % 6 == (i / 4) % 6))
                distinct = 0;
    CHECK(distinct);
    CHECK(wasm_rt_register_func_type(0, 0) == wasm_rt_register_func_type(0, 0));
    CHECK(wasm_rt_register_func_type(1, 0, WASM_RT_I32) != wasm_rt_register_func_type(0, 1, WASM_RT_I32));
}

static void dummy(void) {}

static void test_tables(void)
{
    wasm_rt_funcref_table_t t;
    wasm_rt_externref_table_t e;
    wasm_rt_funcref_t f = { 3, dummy, &t };
    uint32_t i;

    wasm_rt_allocate_funcref_table(&t, 2, 5);
    CHECK(t.size == 2 && t.max_size == 5 && t.data != NULL);
    CHECK(t.data[0].func == NULL && t.data[1].func == NULL);
    CHECK_EQ(wasm_rt_grow_funcref_table(&t, 3, f), 2);
    CHECK_EQ(t.size, 5);
    for (i = 2; i < 5; i++)
        CHECK(t.data[i].func == dummy && t.data[i].func_type == 3 && t.data[i].module_instance == &t);
    CHECK_EQ(wasm_rt_grow_funcref_table(&t, 1, f), UINT32_MAX);    /* over max */
    CHECK_EQ(wasm_rt_grow_funcref_table(&t, 0, f), 5);
    wasm_rt_free_funcref_table(&t);
    CHECK(t.data == NULL);

    wasm_rt_allocate_externref_table(&e, 0, UINT32_MAX);
    CHECK(e.size == 0);
    CHECK_EQ(wasm_rt_grow_externref_table(&e, 4, (void *)&e), 0);
    CHECK(e.size == 4 && e.data[3] == (void *)&e);
    CHECK_EQ(wasm_rt_grow_externref_table(&e, UINT32_MAX - 10, NULL), UINT32_MAX);  /* hostile size */
    CHECK_EQ(e.size, 4);
    wasm_rt_free_externref_table(&e);
}

static void test_standalone_memory(void)
{
    wasm_rt_memory_t m;
    uint32_t i;

    wasm_rt_allocate_memory(&m, 1, 4);
    CHECK(m.data != NULL && m.pages == 1 && m.size == 65536 && m.max_pages == 4);
    m.data[0] = 1;
    CHECK_EQ(wasm_rt_grow_memory(&m, 3), 1);
    CHECK(m.pages == 4 && m.size == 4 * 65536);
    for (i = 0; i < m.size; i += 4096)
        CHECK_EQ(m.data[i + 5], 0);   /* new pages read as zero ... */
    m.data[m.size - 1] = 7;           /* ... and are writable */
    CHECK_EQ(wasm_rt_grow_memory(&m, 1), UINT32_MAX);   /* over max */
    CHECK_EQ(wasm_rt_grow_memory(&m, 0), 4);
    CHECK_EQ(m.data[0], 1);
    wasm_rt_free_memory(&m);
    CHECK(m.data == NULL);

    wasm_rt_allocate_memory(&m, 0, UINT32_MAX);
    CHECK_EQ(wasm_rt_grow_memory(&m, 65536), UINT32_MAX);   /* 4 GiB does not fit a 32-bit size */
    CHECK_EQ(wasm_rt_grow_memory(&m, 2), 0);
    wasm_rt_free_memory(&m);
}

static void test_exceptions(void)
{
    uint32_t a = wasm_rt_register_tag(4), b = wasm_rt_register_tag(8);
    uint64_t v = 0x1122334455667788ull, got;

    CHECK(a != b);
    wasm_rt_load_exception(b, sizeof v, &v);
    CHECK_EQ(wasm_rt_exception_tag(), b);
    CHECK_EQ(wasm_rt_exception_size(), 8);
    memcpy(&got, wasm_rt_exception(), 8);
    CHECK(got == v);
    CHECK(wasm_rt_get_unwind_target() == NULL);   /* no guest code runs here */
}

static void test_trap_outside_guest(void)
{
    pid_t pid = fork();
    int st = 0;

    if (pid == 0) {
        close(2);   /* the abort message is expected */
        wasm_rt_trap(WASM_RT_TRAP_OOB);
    }
    REQUIRE(pid > 0);
    waitpid(pid, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT);
}

int main(void)
{
    RUN(test_init);
    RUN(test_strerror);
    RUN(test_func_types);
    RUN(test_tables);
    RUN(test_standalone_memory);
    RUN(test_exceptions);
    RUN(test_trap_outside_guest);
    return th_done();
}
