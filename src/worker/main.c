/*
 * main.c - cloister-native: runs one native function for the node.
 *
 * Started by src/runtime/native.c with posix_spawn and nothing but the
 * fds of native.h (3 region, 4 the .so, 5 notify), it maps its region,
 * gives up root if it has it, confines itself (confine.c), loads the
 * function, runs its `init`, says
 * READY and then runs `handle` once per RUN message until killed.  It
 * never exits on its own except when the node has gone away (its parent
 * changed) or the node broke the protocol.
 *
 * Invariant: after wk_confine_run_stage() the process can do nothing but
 * compute, allocate memory, tell time, and talk to the node through the
 * region; anything else kills it (the node then reports SIGSYS).
 */
#include <dlfcn.h>
#include <errno.h>
#include <grp.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

wk_state wk;

/* Under AddressSanitizer the function's faults must reach the kernel as
 * signals (the node names them), and the sanitizer's own reporting (which
 * writes to stderr and reads files) is impossible once confined. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_sigill=0:"
           "handle_abort=0:detect_leaks=0:allow_user_segv_handler=1";
}

/* ---- the mailbox ------------------------------------------------------------- */

void wk_post(uint32_t msg)
{
    wk.ctl->w2n_msg = msg;
    __atomic_store_n(&wk.ctl->w2n_seq, ++wk.w2n_seq, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(NATIVE_FD_NOTIFY, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, so the node is awake anyway. */
    }
}

uint32_t wk_wait(void)
{
    for (;;) {
        uint32_t s = __atomic_load_n(&wk.ctl->n2w_seq, __ATOMIC_ACQUIRE);
        if (s != wk.n2w_seen) {
            wk.n2w_seen = s;
            return __atomic_load_n(&wk.ctl->n2w_msg, __ATOMIC_RELAXED);
        }
        struct timespec ts = { 1, 0 };
        long r = syscall(SYS_futex, &wk.ctl->n2w_seq, FUTEX_WAIT, s, &ts, NULL, 0);
        if (r < 0 && errno == ETIMEDOUT && getppid() != wk.ppid)
            _exit(0);   /* the node is gone: nobody will ever send work */
    }
}

int64_t wk_call(uint32_t op, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4)
{
    native_ctl *c = wk.ctl;
    c->op = op;
    c->arg[0] = a0;
    c->arg[1] = a1;
    c->arg[2] = a2;
    c->arg[3] = a3;
    c->arg[4] = a4;
    wk_post(NATIVE_MSG_CALL);
    if (wk_wait() != NATIVE_MSG_REPLY)
        _exit(3);
    return __atomic_load_n(&c->ret, __ATOMIC_RELAXED);
}

/* ---- start-up ------------------------------------------------------------------ */

__attribute__((noreturn, format(printf, 1, 2)))
static void fail(const char *fmt, ...)
{
    if (wk.ctl) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(wk.ctl->err, sizeof wk.ctl->err, fmt, ap);
        va_end(ap);
        wk_post(NATIVE_MSG_FAIL);
    }
    _exit(1);
}

static void map_region(void)
{
    struct stat sb;
    if (fstat(NATIVE_FD_REGION, &sb) != 0 || (uint64_t)sb.st_size < NATIVE_CTL_SIZE)
        _exit(1);   /* not started by the node: nobody to tell */
    uint64_t size = (uint64_t)sb.st_size;
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, NATIVE_FD_REGION, 0);
    if (m == MAP_FAILED)
        _exit(1);
    close(NATIVE_FD_REGION);
    native_ctl *c = m;
    if (c->magic != NATIVE_MAGIC || c->abi != NATIVE_ABI)
        _exit(1);
    wk.ctl = c;
    if (c->input_off < NATIVE_CTL_SIZE || c->input_off > size || c->input_cap > size - c->input_off ||
        c->output_off > size || c->output_cap > size - c->output_off ||
        c->data_off > size || c->data_cap > size - c->data_off || c->data_cap > UINT32_MAX)
        fail("bad region layout");
    wk.input = (uint8_t *)m + c->input_off;
    wk.output = (uint8_t *)m + c->output_off;
    wk.data = (uint8_t *)m + c->data_off;
    wk.input_cap = c->input_cap;
    wk.output_cap = c->output_cap;
    wk.data_cap = c->data_cap;
}

/* A node running as root must not lend root to a function: the worker
 * becomes nobody (65534) before any of the function's code runs. */
static void drop_root(void)
{
    if (geteuid() != 0)
        return;
    if (setgroups(0, NULL) != 0 && errno != EPERM)   /* EPERM: a user namespace denies it */
        fail("cannot drop supplementary groups: %s", strerror(errno));
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0)
        fail("cannot give up root privileges: %s", strerror(errno));
}

/* dlerror() names the file "/proc/self/fd/4"; the user knows it as their
 * function. */
static const char *strip_path(const char *msg)
{
    static const char prefix[] = "/proc/self/fd/";
    if (msg && strncmp(msg, prefix, sizeof prefix - 1) == 0) {
        const char *colon = strstr(msg, ": ");
        if (colon)
            return colon + 2;
    }
    return msg ? msg : "unknown error";
}

int main(void)
{
    char err[NATIVE_ERR_MAX];
    int landlock = 0;

    wk.pid = getpid();
    wk.ppid = getppid();
    struct rlimit nocore = { 0, 0 };
    setrlimit(RLIMIT_CORE, &nocore);
    map_region();
    drop_root();
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail("prctl(PR_SET_DUMPABLE): %s", strerror(errno));

    /* What functions commonly link against, loaded while files can still
     * be opened (Landlock would refuse it later). */
    (void)dlopen("libm.so.6", RTLD_NOW | RTLD_GLOBAL);

    if (wk_stdio_install() != 0)
        fail("cannot replace stdout/stderr");
    if (wk_confine_prepare(err, sizeof err) != 0 ||
        wk_confine_landlock(&landlock, err, sizeof err) != 0 ||
        wk_confine_limits(wk.ctl->max_memory, err, sizeof err) != 0 ||
        wk_confine_load_stage(err, sizeof err) != 0)
        fail("%s", err);

    /* The .so's constructors run here, under the load filter. */
    void *so = dlopen("/proc/self/fd/4", RTLD_NOW | RTLD_LOCAL);
    if (!so)
        fail("cannot be loaded: %s", strip_path(dlerror()));
    int32_t (*handle)(void) = (int32_t (*)(void))dlsym(so, "handle");
    if (!handle)
        fail("does not export handle");
    void (*init)(void) = (void (*)(void))dlsym(so, "init");
    close(NATIVE_FD_SO);

    if (wk_confine_run_stage(err, sizeof err) != 0)
        fail("%s", err);

    if (init) {
        init();
        wk_stdio_flush();
    }
    wk.ctl->landlock = (uint32_t)landlock;
    wk_post(NATIVE_MSG_READY);

    for (;;) {
        uint32_t msg = wk_wait();
        if (msg != NATIVE_MSG_RUN)
            _exit(3);
        native_ctl *c = wk.ctl;
        uint32_t in = c->input_len, maxo = c->max_output;
        wk.input_len = in <= wk.input_cap ? in : (uint32_t)wk.input_cap;
        wk.max_output = maxo <= wk.output_cap ? maxo : (uint32_t)wk.output_cap;
        wk.out_len = 0;
        int32_t code = handle();
        wk_stdio_flush();
        c->code = code;
        c->output_len = wk.out_len;
        wk_post(NATIVE_MSG_DONE);
    }
}
