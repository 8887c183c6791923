/*
 * trap.c - the trap boundary (see trap.h): signal handlers, the per-thread
 * signal stack, stack guard band and wall-time timer, and rt_trap_run.
 *
 * Process-wide state: the saved previous dispositions of SIGSEGV, SIGBUS
 * and the timer signal, installed once.  Everything else is per thread
 * (`ts` below, rt_guest_state) and touched only by its own thread and that
 * thread's signal handlers.
 *
 * Handlers must stay async-signal-safe: they read thread-locals, compare
 * addresses, and call only mprotect, signal, raise and siglongjmp (or the
 * handler that was installed before ours, for faults that are not ours).
 */
#include "trap.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "../common/err.h"
#include "../common/log.h"
#include "host.h"
#include "sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
#define RT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RT_ASAN 1
#endif
#endif

#ifdef RT_ASAN
#include <sanitizer/asan_interface.h>
/* The sandbox turns guest faults into traps with its own SIGSEGV handler;
 * AddressSanitizer must let it (and not install one of its own). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allow_user_segv_handler=1:handle_segv=0:handle_sigbus=0";
}
#endif

#define RT_TIMER_SIGNAL (SIGRTMIN + 5)
#define RT_TIMER_MAGIC  0x636c7472   /* "cltr": our timer's sigev_value */

_Static_assert(sizeof(jmp_buf) == sizeof(sigjmp_buf), "wasm-rt uses jmp_buf with sigsetjmp");

__thread rt_guest rt_guest_state;
__thread uintptr_t rt_host_stack_floor;

typedef struct trap_thread {
    int ready;
    uintptr_t band_lo, band_hi;   /* our guard band */
    uintptr_t band_top;           /* [band_lo, band_top) is PROT_NONE now (shrunk from band_hi) */
    uint8_t *alt;                 /* signal stack mapping (with a guard page) */
    size_t alt_len;
    stack_t old_alt;
    timer_t timer;
    int armed;
} trap_thread;

static __thread trap_thread ts;

static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static int install_err;
static struct sigaction old_segv, old_bus;

uint64_t rt_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static uintptr_t uc_pc(void *ucv)
{
    ucontext_t *uc = ucv;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;   /* unknown: never unwind asynchronously */
#endif
}

static int pc_in_guest(const rt_guest *g, void *ucv)
{
    uintptr_t pc = uc_pc(ucv);
    return pc >= g->code_lo && pc < g->code_hi;
}

__attribute__((noreturn)) static void land(rt_guest *g, jmp_buf *t, int code)
{
    g->target = NULL;
    siglongjmp(*t, code);
}

/* Makes the timer fire at `when` (CLOCK_MONOTONIC) and then every
 * RT_TIMER_RETRY_NS. */
static void timer_set(uint64_t when)
{
    struct itimerspec it = {
        .it_value = { (time_t)(when / 1000000000ull), (long)(when % 1000000000ull) },
        .it_interval = { 0, (long)RT_TIMER_RETRY_NS },
    };
    timer_settime(ts.timer, TIMER_ABSTIME, &it, NULL);
    ts.armed = 1;
}

static void timer_disarm(void)
{
    struct itimerspec it;
    memset(&it, 0, sizeof it);
    timer_settime(ts.timer, 0, &it, NULL);
    ts.armed = 0;
}

/* A fault that is not a guest trap: it goes to whoever handled the
 * signal before us; with no handler, the process dies of it. */
static void not_ours(int sig, siginfo_t *si, void *ucv)
{
    const struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;

    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
        old->sa_sigaction(sig, si, ucv);
        return;
    }
    if (!(old->sa_flags & SA_SIGINFO) && old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    signal(sig, SIG_DFL);
    if (si->si_code <= 0)     /* sent, not raised by an instruction: resend */
        raise(sig);
    /* else returning re-executes the instruction, which faults again */
}

static void on_fault(int sig, siginfo_t *si, void *ucv)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf *t = g->target;

    if (t && si->si_code > 0) {
        uintptr_t a = (uintptr_t)si->si_addr;

        if (a >= g->mem_lo && a < g->mem_hi)
            land(g, t, WASM_RT_TRAP_OOB);
        if (sig == SIGSEGV && a >= ts.band_lo && a < ts.band_top) {
            uintptr_t page = a & ~(uintptr_t)4095;
            int saved = errno;

            /* A small non-guest frame (libc, wasm_rt) called by the guest
             * at the edge: give it the pages it touches, from the top,
             * while half the band is left; the guest traps on the rest. */
            if (!pc_in_guest(g, ucv) && page >= ts.band_lo + RT_STACK_GUARD / 2 &&
                mprotect((void *)page, ts.band_top - page, PROT_READ | PROT_WRITE) == 0) {
                ts.band_top = page;
                errno = saved;
                return;
            }
            land(g, t, WASM_RT_TRAP_EXHAUSTION);
        }
    }
    not_ours(sig, si, ucv);
}

static void on_timer(int sig, siginfo_t *si, void *ucv)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf *t = g->target;

    (void)sig;
    if (si->si_code != SI_TIMER || si->si_value.sival_int != RT_TIMER_MAGIC || !t)
        return;
    g->deadline_passed = 1;
    if (pc_in_guest(g, ucv))
        land(g, t, RT_TRAP_TIMEOUT);
}

static void install_handlers(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, RT_TIMER_SIGNAL);
    if (sigaction(SIGSEGV, &sa, &old_segv) != 0 || sigaction(SIGBUS, &sa, &old_bus) != 0) {
        install_err = errno;
        return;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_timer;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(RT_TIMER_SIGNAL, &sa, NULL) != 0)
        install_err = errno;
}

int rt_trap_thread_ready(void)
{
    return ts.ready;
}

int rt_trap_thread_init(void)
{
    pthread_attr_t at;
    void *addr;
    size_t size, guard;
    uintptr_t lo, sp = (uintptr_t)__builtin_frame_address(0);
    struct sigevent sev;
    stack_t ss;
    sigset_t unblock;
    long page = sysconf(_SC_PAGESIZE);

    if (ts.ready)
        return CL_OK;
    if (getpid() == gettid()) {
        cl_log_error("sandbox", "guest code cannot run on the main thread (its stack has no fixed bottom)");
        return CL_EINVAL;
    }
    pthread_once(&install_once, install_handlers);
    if (install_err) {
        cl_log_error("sandbox", "cannot install signal handlers: %s", strerror(install_err));
        return CL_EINVAL;
    }

    if (pthread_getattr_np(pthread_self(), &at) != 0)
        return CL_EINVAL;
    int rc = pthread_attr_getstack(&at, &addr, &size) | pthread_attr_getguardsize(&at, &guard);
    pthread_attr_destroy(&at);
    if (rc != 0)
        return CL_EINVAL;
    lo = ((uintptr_t)addr + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    (void)guard;
    if (sp < lo + RT_STACK_GUARD + RT_HOST_STACK + 256 * 1024) {
        cl_log_error("sandbox", "thread stack too small for guest code (%zu bytes)", size);
        return CL_EINVAL;
    }
    ts.band_lo = lo;
    ts.band_hi = ts.band_top = ts.band_lo + RT_STACK_GUARD;

    ts.alt_len = RT_ALTSTACK_BYTES + (size_t)page;
    ts.alt = mmap(NULL, ts.alt_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ts.alt == MAP_FAILED)
        return CL_ENOMEM;
    if (mprotect(ts.alt, (size_t)page, PROT_NONE) != 0)   /* overflow of the handler faults */
        goto fail_alt;

    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = RT_TIMER_SIGNAL;
    sev.sigev_value.sival_int = RT_TIMER_MAGIC;
    sev._sigev_un._tid = gettid();
    if (timer_create(CLOCK_MONOTONIC, &sev, &ts.timer) != 0)
        goto fail_alt;

    if (mprotect((void *)ts.band_lo, RT_STACK_GUARD, PROT_NONE) != 0)
        goto fail_timer;

    memset(&ss, 0, sizeof ss);
    ss.ss_sp = ts.alt + page;
    ss.ss_size = RT_ALTSTACK_BYTES;
    if (sigaltstack(&ss, &ts.old_alt) != 0)
        goto fail_band;

    sigemptyset(&unblock);
    sigaddset(&unblock, SIGSEGV);
    sigaddset(&unblock, SIGBUS);
    sigaddset(&unblock, RT_TIMER_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);

    memset(&rt_guest_state, 0, sizeof rt_guest_state);
    rt_host_stack_floor = ts.band_hi + RT_HOST_STACK;
    ts.ready = 1;
    return CL_OK;

fail_band:
    mprotect((void *)ts.band_lo, RT_STACK_GUARD, PROT_READ | PROT_WRITE);
fail_timer:
    timer_delete(ts.timer);
fail_alt:
    munmap(ts.alt, ts.alt_len);
    return CL_ENOMEM;
}

void rt_trap_thread_fini(void)
{
    if (!ts.ready)
        return;
    timer_delete(ts.timer);
    sigaltstack(&ts.old_alt, NULL);
    munmap(ts.alt, ts.alt_len);
    /* the stack goes back to glibc's cache whole */
    mprotect((void *)ts.band_lo, RT_STACK_GUARD, PROT_READ | PROT_WRITE);
    memset(&ts, 0, sizeof ts);
    rt_host_stack_floor = 0;
}

int rt_trap_run(void (*fn)(void *arg), void *arg, uint64_t deadline_ns)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf jb;
    int code;

    CL_ASSERT(ts.ready && g->target == NULL);
    if (deadline_ns && rt_now_ns() >= deadline_ns) {
        g->deadline_passed = 1;
        return RT_TRAP_TIMEOUT;
    }
    g->deadline_passed = 0;

    code = sigsetjmp(jb, 1);
    if (code == 0) {
        g->unwind = &jb;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        g->target = &jb;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        if (deadline_ns)
            timer_set(deadline_ns);
        fn(arg);
    }
    g->target = NULL;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (ts.armed)
        timer_disarm();
    if (ts.band_top != ts.band_hi) {
        mprotect((void *)ts.band_top, ts.band_hi - ts.band_top, PROT_NONE);
        ts.band_top = ts.band_hi;
    }
    g->unwind = NULL;
#ifdef RT_ASAN
    if (code != 0) {
        /* Frames abandoned below us by a jump from a signal handler keep
         * their redzones; nothing lives below this frame now. */
        uintptr_t here = (uintptr_t)__builtin_frame_address(0) - 512;
        if (here > ts.band_hi)
            ASAN_UNPOISON_MEMORY_REGION((void *)ts.band_hi, here - ts.band_hi);
    }
#endif
    return code;
}

const char *rt_trap_name(int code)
{
    if (code == RT_TRAP_TIMEOUT)
        return "timeout";
    if (code == RT_TRAP_EXIT)
        return "exit";
    return wasm_rt_strerror((wasm_rt_trap_t)code);
}

void rt_sandbox_stack_exhausted(void)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf *t = g->target;

    if (t)
        land(g, t, WASM_RT_TRAP_EXHAUSTION);
}

/* host.c's WASI proc_exit: it has set rt_call.exited; unwind the guest
 * (the sandbox reports an exit, not a trap).  Overrides host.c's weak
 * fallback. */
void rt_sandbox_exit(void)
{
    rt_guest *g = &rt_guest_state;
    jmp_buf *t = g->target;

    if (!t) {
        cl_log_error("sandbox", "proc_exit outside guest code");
        abort();
    }
    land(g, t, RT_TRAP_EXIT);
}
