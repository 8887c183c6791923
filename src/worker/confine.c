/*
 * confine.c - what a native function may do: Landlock and seccomp.
 *
 * Two seccomp filters, both built before any of the function's code runs
 * (building allocates, loading only needs the seccomp syscall):
 *
 *   load  installed before dlopen: the run list below, plus what glibc's
 *         dynamic loader needs to map the .so (openat read-only, read,
 *         pread64, fstat, newfstatat, lseek, close, mmap and mprotect
 *         with any protection) and seccomp itself (to add the run
 *         filter; a filter can only ever take permissions away).
 *   run   installed after dlopen, before `init`: exactly
 *           exit exit_group futex write(fd == NATIVE_FD_NOTIFY)
 *           clock_gettime clock_getres gettimeofday time nanosleep
 *           clock_nanosleep getrandom brk
 *           mmap(no PROT_EXEC, MAP_ANONYMOUS) mprotect(no PROT_EXEC)
 *           munmap mremap madvise rt_sigreturn rt_sigprocmask
 *           sched_yield restart_syscall getpid gettid getppid
 *           tgkill(tgid == own pid) sigaltstack(ss == NULL: query only)
 *
 * Any other system call kills the process (SECCOMP_RET_KILL_PROCESS,
 * seen by the node as death by SIGSYS); so does a call from another
 * architecture's ABI.  Filters stack, so even a constructor that
 * sabotaged the run filter's installation stays under the load filter:
 * no socket, connect, clone/fork, execve, ptrace, ... ever.
 *
 * Landlock (Linux >= 5.13) handles every file-system right it knows and
 * grants none, before the load filter, so the loader's read-only openat
 * cannot reach any file: the .so is opened through /proc/self/fd/4, a
 * memfd, which is outside every hierarchy.  Without Landlock the .so's
 * constructors could read files the node's user can read; the node logs
 * that (native_stats.landlock) once per pool.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "worker.h"

static scmp_filter_ctx load_filter, run_filter;

#define ALLOW(ctx, name) seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(name), 0)
/* Argument n == v (spelt out: libseccomp's SCMP_An(SCMP_CMP_EQ, v) leaves
 * a field to the compiler, which -Wextra reports). */
#define ARG_EQ(n, v) ((struct scmp_arg_cmp){ .arg = (n), .op = SCMP_CMP_EQ, .datum_a = (v), .datum_b = 0 })

static int add_run_rules(scmp_filter_ctx ctx, int loader)
{
    int rc = 0;
    rc |= ALLOW(ctx, exit);
    rc |= ALLOW(ctx, exit_group);
    rc |= ALLOW(ctx, futex);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(write), 1,
                           ARG_EQ(0, NATIVE_FD_NOTIFY));
    rc |= ALLOW(ctx, clock_gettime);
    rc |= ALLOW(ctx, clock_getres);
    rc |= ALLOW(ctx, gettimeofday);
    rc |= ALLOW(ctx, time);
    rc |= ALLOW(ctx, nanosleep);
    rc |= ALLOW(ctx, clock_nanosleep);
    rc |= ALLOW(ctx, getrandom);
    rc |= ALLOW(ctx, brk);
    if (loader) {
        rc |= ALLOW(ctx, mmap);
        rc |= ALLOW(ctx, mprotect);
    } else {
        rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 2,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0),
                               SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, MAP_ANONYMOUS));
        rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    }
    rc |= ALLOW(ctx, munmap);
    rc |= ALLOW(ctx, mremap);
    rc |= ALLOW(ctx, madvise);
    rc |= ALLOW(ctx, rt_sigreturn);
    rc |= ALLOW(ctx, rt_sigprocmask);
    rc |= ALLOW(ctx, sched_yield);
    rc |= ALLOW(ctx, restart_syscall);
    rc |= ALLOW(ctx, getpid);
    rc |= ALLOW(ctx, gettid);
    rc |= ALLOW(ctx, getppid);
    /* Only the query form (new stack NULL): sanitizer runtimes ask where the
     * alternate stack is whenever code longjmps (e.g. dlopen's errors). */
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(sigaltstack), 1, ARG_EQ(0, 0));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                           ARG_EQ(0, (scmp_datum_t)wk.pid));
    return rc;
}

static int add_loader_rules(scmp_filter_ctx ctx)
{
    int rc = 0;
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1,
                           SCMP_A2(SCMP_CMP_MASKED_EQ, O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND, 0));
    rc |= ALLOW(ctx, read);
    rc |= ALLOW(ctx, pread64);
    rc |= ALLOW(ctx, fstat);
    rc |= ALLOW(ctx, newfstatat);
    rc |= ALLOW(ctx, lseek);
    rc |= ALLOW(ctx, close);
    rc |= ALLOW(ctx, seccomp);
    return rc;
}

static scmp_filter_ctx make_filter(int loader)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (!ctx)
        return NULL;
    /* No-new-privs is set once by wk_confine_landlock (libseccomp would
     * otherwise call prctl at load time, which the run filter forbids). */
    if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0) != 0 ||
        seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0 ||
        add_run_rules(ctx, loader) != 0 || (loader && add_loader_rules(ctx) != 0)) {
        seccomp_release(ctx);
        return NULL;
    }
    return ctx;
}

int wk_confine_prepare(char *err, size_t n)
{
    load_filter = make_filter(1);
    run_filter = make_filter(0);
    if (!load_filter || !run_filter) {
        snprintf(err, n, "cannot build the seccomp filters");
        return -1;
    }
    return 0;
}

/* Rights of each Landlock ABI version (the installed headers may be
 * older than the kernel, so the later bits are spelt out). */
static uint64_t landlock_fs_rights(int abi)
{
    uint64_t r = (1ull << 13) - 1;      /* v1: EXECUTE .. MAKE_SYM */
    if (abi >= 2)
        r |= 1ull << 13;                /* REFER */
    if (abi >= 3)
        r |= 1ull << 14;                /* TRUNCATE */
    if (abi >= 5)
        r |= 1ull << 15;                /* IOCTL_DEV */
    return r;
}

int wk_confine_landlock(int *applied, char *err, size_t n)
{
    *applied = 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(err, n, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
        return -1;
    }
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    if (abi < 1)
        return 0;   /* not in this kernel, or disabled: documented fallback */
    struct landlock_ruleset_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.handled_access_fs = landlock_fs_rights((int)abi);
    long fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0);
    if (fd < 0) {
        snprintf(err, n, "landlock_create_ruleset: %s", strerror(errno));
        return -1;
    }
    long rc = syscall(SYS_landlock_restrict_self, (int)fd, 0);
    int e = errno;
    close((int)fd);
    if (rc != 0) {
        snprintf(err, n, "landlock_restrict_self: %s", strerror(e));
        return -1;
    }
    *applied = 1;
    return 0;
}

int wk_confine_load_stage(char *err, size_t n)
{
    int rc = seccomp_load(load_filter);
    if (rc != 0) {
        snprintf(err, n, "cannot install the seccomp filter: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

#if defined(__SANITIZE_ADDRESS__)
#define WK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WK_ASAN 1
#endif
#endif

int wk_confine_limits(uint64_t max_memory, char *err, size_t n)
{
#ifndef WK_ASAN
    /* AddressSanitizer reserves terabytes of shadow memory, so a data
     * limit would only break it; sanitizer builds run without one. */
    if (max_memory) {
        struct rlimit rl = { (rlim_t)max_memory, (rlim_t)max_memory };
        if (setrlimit(RLIMIT_DATA, &rl) != 0) {
            snprintf(err, n, "setrlimit(RLIMIT_DATA): %s", strerror(errno));
            return -1;
        }
    }
#else
    (void)max_memory;
    (void)err;
    (void)n;
#endif
    return 0;
}

int wk_confine_run_stage(char *err, size_t n)
{
    int rc = seccomp_load(run_filter);
    if (rc != 0) {
        snprintf(err, n, "cannot install the seccomp filter: %s", strerror(-rc));
        return -1;
    }
    seccomp_release(load_filter);
    seccomp_release(run_filter);
    load_filter = run_filter = NULL;
    return 0;
}
