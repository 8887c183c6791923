/*
 * native.c - the node's side of native functions: pools of pre-forked,
 * confined worker processes (src/worker/, build/cloister-native), one
 * pool per deployed native function.  native.h has the design, the
 * protocol and the confinement policy; this file's invariants:
 *
 *   - A worker slot is used by one invocation at a time (busy, under the
 *     pool mutex); everything else about the slot is touched only by the
 *     thread that holds it busy (or by create/destroy, when no
 *     invocation runs).
 *   - The region is untrusted: every field the worker writes is loaded
 *     once (__atomic loads into locals) and validated before use; the
 *     node's own sequence counters live in the slot, not in the region.
 *   - Every wait has a deadline: the invocation's, or start_timeout_ms
 *     while a worker starts.  A worker that misses it is killed.
 *   - A worker that died, timed out or broke the protocol is killed,
 *     reaped (through its pidfd, so no other waitpid can steal or
 *     confuse it) and replaced before its slot is released.
 *
 * Host calls are served by the host functions of host.c, found in
 * rt_imports[] by name and checked against the signatures below when a
 * pool is created, so one implementation serves WebAssembly and native
 * functions alike.
 *
 * Called by rt.c (deploy, invoke, remove) and tests/unit/runtime/test_native.c.
 */
#include "native.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cloister/function.h>

#include "../common/err.h"
#include "../common/log.h"
#include "host.h"

#define NATIVE_DEFAULT_WORKERS 2
#define NATIVE_MAX_WORKERS 64
#define NATIVE_DEFAULT_IO (4u << 20)
#define NATIVE_MAX_IO ((size_t)1 << 30)
#define NATIVE_TRIM_BYTES (1u << 20)   /* larger areas are given back after use */

/* ---- host calls -------------------------------------------------------------- */

/* The C shapes of the host functions we call (wasm2c's types: u32 for
 * i32, u64 for i64, the unused instance pointer first). */
typedef uint32_t (*fn_ii_i)(void *, uint32_t, uint32_t);
typedef uint32_t (*fn_iii_i)(void *, uint32_t, uint32_t, uint32_t);
typedef uint32_t (*fn_iiii_i)(void *, uint32_t, uint32_t, uint32_t, uint32_t);
typedef uint32_t (*fn_iiIii_i)(void *, uint32_t, uint32_t, uint64_t, uint32_t, uint32_t);
typedef uint32_t (*fn_iiIi_i)(void *, uint32_t, uint32_t, uint64_t, uint32_t);
typedef uint64_t (*fn_iiiii_I)(void *, uint32_t, uint32_t, uint32_t, uint32_t, uint32_t);
typedef void (*fn_ii_)(void *, uint32_t, uint32_t);

static const struct native_op_def {
    const char *name;       /* import name in module "cloister" */
    const char *signature;  /* must match rt_imports[] */
} native_ops[NATIVE_OP_COUNT] = {
    [NATIVE_OP_KV_GET] = {"kv_get", "iiiii:I"},
    [NATIVE_OP_KV_SET] = {"kv_set", "iiii:i"},
    [NATIVE_OP_KV_DELETE] = {"kv_delete", "ii:i"},
    [NATIVE_OP_KV_CAS] = {"kv_cas", "iiIii:i"},
    [NATIVE_OP_KV_INCR] = {"kv_incr", "iiIi:i"},
    [NATIVE_OP_KV_GET_MANY] = {"kv_get_many", "iiiii:I"},
    [NATIVE_OP_LOCK] = {"lock", "iii:i"},
    [NATIVE_OP_UNLOCK] = {"unlock", "ii:i"},
    [NATIVE_OP_LOG] = {"log", "ii:"},
};

/* The parameters of each signature that are i64 (the rest must fit u32). */
static int param_is_i64(const char *sig, int i)
{
    for (int k = 0; sig[k] && sig[k] != ':'; k++)
        if (k == i)
            return sig[k] == 'I';
    return 0;
}

static int param_count(const char *sig) { return (int)(strchr(sig, ':') - sig); }

/* Calls the host function of op with args a[] (validated by the caller). */
static int64_t host_dispatch(void (*fn)(void), const char *sig, const uint64_t *a)
{
    uint32_t u0 = (uint32_t)a[0], u1 = (uint32_t)a[1], u2 = (uint32_t)a[2];
    uint32_t u3 = (uint32_t)a[3], u4 = (uint32_t)a[4];
    if (strcmp(sig, "ii:i") == 0)
        return (int32_t)((fn_ii_i)fn)(NULL, u0, u1);
    if (strcmp(sig, "iii:i") == 0)
        return (int32_t)((fn_iii_i)fn)(NULL, u0, u1, u2);
    if (strcmp(sig, "iiii:i") == 0)
        return (int32_t)((fn_iiii_i)fn)(NULL, u0, u1, u2, u3);
    if (strcmp(sig, "iiIii:i") == 0)
        return (int32_t)((fn_iiIii_i)fn)(NULL, u0, u1, a[2], u3, u4);
    if (strcmp(sig, "iiIi:i") == 0)
        return (int32_t)((fn_iiIi_i)fn)(NULL, u0, u1, a[2], u3);
    if (strcmp(sig, "iiiii:I") == 0)
        return (int64_t)((fn_iiiii_I)fn)(NULL, u0, u1, u2, u3, u4);
    if (strcmp(sig, "ii:") == 0) {
        ((fn_ii_)fn)(NULL, u0, u1);
        return 0;
    }
    CL_ASSERT(!"native_ops has a signature host_dispatch does not know");
    return CLOISTER_EUNAVAILABLE;
}

/* ---- the pool ------------------------------------------------------------------ */

typedef struct native_worker {
    int busy;                 /* pool mutex */
    int live;                 /* a started process that has said READY (written by the
                                 slot's holder; __atomic so stats can read it) */
    pid_t pid;
    int pidfd, notify_fd;     /* -1 when not live */
    uint8_t *region;
    size_t region_size;
    native_ctl *ctl;
    uint32_t n2w_seq, w2n_seen;
} native_worker;

struct native_pool {
    native_config cfg;
    char *worker_path;
    int so_fd;                /* sealed memfd with the .so */
    void (*host[NATIVE_OP_COUNT])(void);
    size_t input_cap, output_cap, data_cap;   /* page multiples */
    size_t input_off, output_off, data_off, region_size;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* a worker became idle */
    uint64_t invocations, crashes, timeouts, spawns;   /* atomics */
    int landlock;             /* __atomic: what the last worker to start reported */
    int nworkers;
    native_worker w[];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

static void err_set(cl_buf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void err_set(cl_buf *err, const char *fmt, ...)
{
    if (!err)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cl_buf_append(err, msg, strlen(msg)) != CL_OK) {
        /* the message is lost; the error code still says what failed */
    }
}

/* ---- how a worker ended ------------------------------------------------------------- */

static const char *signal_words(int sig)
{
    switch (sig) {
    case SIGSYS:  return "forbidden system call";
    case SIGSEGV: return "segmentation fault";
    case SIGBUS:  return "bus error";
    case SIGFPE:  return "arithmetic exception";
    case SIGILL:  return "illegal instruction";
    case SIGABRT: return "aborted";
    case SIGTRAP: return "trap";
    case SIGKILL: return "killed";
    case SIGXCPU: return "CPU time limit";
    default:      return "signal";
    }
}

/* "crashed: SIGSEGV (segmentation fault)" / "exited with status 3";
 * `when` ("" or " while loading") goes after the verb. */
static void describe_exit(const siginfo_t *si, int known, const char *when, char *out, size_t n)
{
    if (!known) {
        snprintf(out, n, "exited%s (status unknown)", when);
    } else if (si->si_code == CLD_EXITED) {
        snprintf(out, n, "exited%s with status %d", when, si->si_status);
    } else {
        const char *abbrev = sigabbrev_np(si->si_status);
        snprintf(out, n, "crashed%s: SIG%s (%s)", when, abbrev ? abbrev : "?",
                 signal_words(si->si_status));
    }
}

/* ---- one worker ------------------------------------------------------------------ */

static void worker_clear(native_worker *w)
{
    if (w->pidfd >= 0)
        close(w->pidfd);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    if (w->region)
        munmap(w->region, w->region_size);
    w->pidfd = w->notify_fd = -1;
    w->region = NULL;
    w->ctl = NULL;
    w->pid = 0;
    __atomic_store_n(&w->live, 0, __ATOMIC_RELAXED);
}

/* Kills (if kill_it) and reaps the worker, describing how it ended in how
 * (if not NULL; see describe_exit), and releases its resources.  The
 * slot is then not live. */
static void worker_reap(native_worker *w, int kill_it, const char *when, char *how, size_t n)
{
    siginfo_t si;
    int known = 0;
    if (w->pidfd >= 0) {
        if (kill_it)
            (void)pidfd_send_signal(w->pidfd, SIGKILL, NULL, 0);
        memset(&si, 0, sizeof si);
        int rc;
        do {
            rc = waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED);
        } while (rc != 0 && errno == EINTR);
        known = rc == 0;
    }
    if (how)
        describe_exit(&si, known, when, how, n);
    worker_clear(w);
}

/* 1 if the worker process has ended (its pidfd is readable). */
static int worker_dead(const native_worker *w)
{
    struct pollfd pf = { .fd = w->pidfd, .events = POLLIN };
    return poll(&pf, 1, 0) == 1;
}

static void worker_post(native_worker *w, uint32_t msg)
{
    __atomic_store_n(&w->ctl->n2w_msg, msg, __ATOMIC_RELAXED);
    __atomic_store_n(&w->ctl->n2w_seq, ++w->n2w_seq, __ATOMIC_RELEASE);
    syscall(SYS_futex, &w->ctl->n2w_seq, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* A message from the worker, copied out of the region once. */
typedef struct worker_msg {
    uint32_t type, op;
    uint64_t arg[NATIVE_NARGS];
    int32_t code;
    uint32_t output_len, landlock;
    char err[NATIVE_ERR_MAX];
} worker_msg;

enum { W_MSG, W_DEAD, W_TIMEOUT };

static void msg_copy(const native_ctl *c, worker_msg *m)
{
    m->type = __atomic_load_n(&c->w2n_msg, __ATOMIC_RELAXED);
    m->op = __atomic_load_n(&c->op, __ATOMIC_RELAXED);
    for (int i = 0; i < NATIVE_NARGS; i++)
        m->arg[i] = __atomic_load_n(&c->arg[i], __ATOMIC_RELAXED);
    m->code = __atomic_load_n(&c->code, __ATOMIC_RELAXED);
    m->output_len = __atomic_load_n(&c->output_len, __ATOMIC_RELAXED);
    m->landlock = __atomic_load_n(&c->landlock, __ATOMIC_RELAXED);
    if (m->type == NATIVE_MSG_FAIL) {
        /* Printable ASCII only, always terminated: it ends up in replies. */
        size_t i;
        for (i = 0; i < sizeof m->err - 1; i++) {
            char ch = __atomic_load_n(&c->err[i], __ATOMIC_RELAXED);
            if (ch == '\0')
                break;
            m->err[i] = ch >= 0x20 && ch < 0x7f ? ch : '?';
        }
        m->err[i] = '\0';
    }
}

/* Waits for the worker's next message until deadline_ns: W_MSG (*m
 * filled), W_DEAD (the process ended without one), W_TIMEOUT.  The
 * deadline comes first, so a worker that keeps the node busy with host
 * calls still stops there. */
static int worker_wait(native_worker *w, uint64_t deadline_ns, worker_msg *m)
{
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline_ns)
            return W_TIMEOUT;
        uint32_t seq = __atomic_load_n(&w->ctl->w2n_seq, __ATOMIC_ACQUIRE);
        if (seq != w->w2n_seen) {
            w->w2n_seen = seq;
            msg_copy(w->ctl, m);
            return W_MSG;
        }
        uint64_t left = deadline_ns - now;
        struct timespec ts = { (time_t)(left / 1000000000u), (long)(left % 1000000000u) };
        struct pollfd pf[2] = { { .fd = w->pidfd, .events = POLLIN },
                                { .fd = w->notify_fd, .events = POLLIN } };
        int n = ppoll(pf, 2, &ts, NULL);
        if (n < 0 && errno != EINTR)
            return W_DEAD;   /* cannot watch it: treat as lost (it is killed) */
        if (n > 0 && (pf[1].revents & POLLIN)) {
            uint64_t v;
            if (read(w->notify_fd, &v, sizeof v) < 0) {
                /* EAGAIN: another wake-up consumed it; the sequence decides */
            }
        }
        if (n > 0 && (pf[0].revents & POLLIN)) {
            seq = __atomic_load_n(&w->ctl->w2n_seq, __ATOMIC_ACQUIRE);
            if (seq != w->w2n_seen)
                continue;   /* its last words first */
            return W_DEAD;
        }
    }
}

/* Serves one host call of the worker for invocation c (or for start-up,
 * when c->ns_len is 0: only log is offered then).  Returns 0, or -1 if
 * the request breaks the protocol. */
static int serve_call(native_pool *p, native_worker *w, rt_call *c, const worker_msg *m,
                      int64_t *ret)
{
    if (m->op == 0 || m->op >= NATIVE_OP_COUNT)
        return -1;
    const char *sig = native_ops[m->op].signature;
    int np = param_count(sig);
    for (int i = 0; i < NATIVE_NARGS; i++)
        if ((i >= np && m->arg[i] != 0) || (!param_is_i64(sig, i) && m->arg[i] > UINT32_MAX))
            return -1;
    if (c->ns_len == 0 && m->op != NATIVE_OP_LOG) {
        *ret = CLOISTER_EUNAVAILABLE;   /* no invocation: no keys, no locks */
        return 0;
    }
    if (m->op == NATIVE_OP_LOG && !c->log) {
        *ret = 0;
        return 0;
    }
    c->mem_base = w->region + p->data_off;
    c->mem_size = p->data_cap;
    rt_call *prev = rt_current_call;
    rt_current_call = c;
    *ret = host_dispatch(p->host[m->op], sig, m->arg);
    rt_current_call = prev;
    return 0;
}

static void worker_reply(native_worker *w, int64_t ret)
{
    __atomic_store_n(&w->ctl->ret, ret, __ATOMIC_RELAXED);
    worker_post(w, NATIVE_MSG_REPLY);
}

/* Makes an fd number >= 10, so the child's dup2 to 3..5 cannot clobber
 * another source fd. */
static int fd_high(int fd)
{
    if (fd < 0 || fd >= 10)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return h;
}

static int region_create(native_pool *p, native_worker *w)
{
    int fd = fd_high(memfd_create("cloister-native-region", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd < 0)
        return CL_EIO;
    if (ftruncate(fd, (off_t)p->region_size) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        close(fd);
        return CL_EIO;
    }
    void *m = mmap(NULL, p->region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return CL_ENOMEM;
    }
    w->region = m;
    w->region_size = p->region_size;
    w->ctl = m;
    native_ctl *c = w->ctl;
    c->magic = NATIVE_MAGIC;
    c->abi = NATIVE_ABI;
    c->input_off = p->input_off;
    c->input_cap = p->input_cap;
    c->output_off = p->output_off;
    c->output_cap = p->output_cap;
    c->data_off = p->data_off;
    c->data_cap = p->data_cap;
    c->max_memory = p->cfg.max_memory;
    w->n2w_seq = w->w2n_seen = 0;
    return fd;   /* the caller passes it to the child, then closes it */
}

static int spawn_process(native_pool *p, native_worker *w, int region_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int rc = CL_EIO;
    char *argv[] = { (char *)"cloister-native", NULL };
    char *envp[] = { NULL };

    if (posix_spawn_file_actions_init(&fa) != 0)
        return CL_ENOMEM;
    if (posix_spawnattr_init(&at) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return CL_ENOMEM;
    }
    sigemptyset(&none);
    sigfillset(&all);
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, region_fd, NATIVE_FD_REGION) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, p->so_fd, NATIVE_FD_SO) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, w->notify_fd, NATIVE_FD_NOTIFY) != 0 ||
        posix_spawn_file_actions_addclosefrom_np(&fa, NATIVE_FD_NOTIFY + 1) != 0 ||
        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP) != 0 ||
        posix_spawnattr_setsigmask(&at, &none) != 0 ||
        posix_spawnattr_setsigdefault(&at, &all) != 0 ||
        posix_spawnattr_setpgroup(&at, 0) != 0)
        goto out;
    pid_t pid;
    int e = posix_spawn(&pid, p->worker_path, &fa, &at, argv, envp);
    if (e != 0) {
        errno = e;
        goto out;
    }
    w->pid = pid;
    w->pidfd = fd_high(pidfd_open(pid, 0));
    if (w->pidfd < 0) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        goto out;
    }
    rc = CL_OK;
out:
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/*
 * Starts the worker of slot w and waits until it is READY (serving its
 * log calls meanwhile).  On failure the slot is left not live and err
 * (may be NULL) says why.  CL_OK, CL_EINVAL (the function does not load),
 * CL_EIO, CL_ENOMEM.
 */
static int worker_start(native_pool *p, native_worker *w, cl_buf *err)
{
    char how[128];
    int rc;
    w->pidfd = w->notify_fd = -1;
    w->notify_fd = fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (w->notify_fd < 0) {
        err_set(err, "native function: cannot create an eventfd: %s", strerror(errno));
        return CL_EIO;
    }
    int region_fd = region_create(p, w);
    if (region_fd < 0) {
        err_set(err, "native function: cannot create the shared region: %s", strerror(errno));
        worker_clear(w);
        return region_fd;
    }
    rc = spawn_process(p, w, region_fd);
    close(region_fd);
    if (rc != CL_OK) {
        err_set(err, "native function: cannot start %s: %s", p->worker_path, strerror(errno));
        worker_clear(w);
        return rc;
    }
    __atomic_add_fetch(&p->spawns, 1, __ATOMIC_RELAXED);

    /* Start-up: only log calls (from constructors and init) until READY. */
    rt_call boot;
    memset(&boot, 0, sizeof boot);
    boot.log = p->cfg.log;
    uint64_t deadline = now_ns() + (uint64_t)p->cfg.start_timeout_ms * 1000000u;
    for (;;) {
        worker_msg m;
        int r = worker_wait(w, deadline, &m);
        if (r == W_TIMEOUT) {
            worker_reap(w, 1, "", NULL, 0);
            err_set(err, "native function did not start within %u ms", p->cfg.start_timeout_ms);
            return CL_EINVAL;
        }
        if (r == W_DEAD) {
            worker_reap(w, 1, " while loading", how, sizeof how);
            err_set(err, "native function %s", how);
            return CL_EINVAL;
        }
        if (m.type == NATIVE_MSG_READY) {
            __atomic_store_n(&p->landlock, m.landlock == 1, __ATOMIC_RELAXED);
            __atomic_store_n(&w->live, 1, __ATOMIC_RELAXED);
            return CL_OK;
        }
        if (m.type == NATIVE_MSG_FAIL) {
            worker_reap(w, 1, "", NULL, 0);
            err_set(err, "native function %s", m.err);
            return CL_EINVAL;
        }
        int64_t ret;
        if (m.type != NATIVE_MSG_CALL || serve_call(p, w, &boot, &m, &ret) != 0) {
            worker_reap(w, 1, "", NULL, 0);
            err_set(err, "native function broke the worker protocol while loading");
            return CL_EINVAL;
        }
        worker_reply(w, ret);
    }
}

/* ---- pool life ---------------------------------------------------------------------- */

static char *find_worker(void)
{
    char exe[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    static const char *const rel[] = { "/cloister-native", "/../cloister-native" };
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        snprintf(path, sizeof path, "%s%s", exe, rel[i]);
        if (access(path, X_OK) == 0)
            return realpath(path, NULL);
    }
    return NULL;
}

static int so_memfd(const uint8_t *so, size_t len)
{
    int fd = fd_high(memfd_create("cloister-native-fn", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, so + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)n;
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int native_validate(const uint8_t *so, size_t len, cl_buf *err)
{
#if defined(__x86_64__)
    const uint16_t machine = EM_X86_64;
#elif defined(__aarch64__)
    const uint16_t machine = EM_AARCH64;
#else
#error "native functions: unknown machine"
#endif
    Elf64_Ehdr eh;
    if (len < sizeof eh || memcmp(so, ELFMAG, SELFMAG) != 0) {
        err_set(err, "not an ELF file");
        return CL_EINVAL;
    }
    memcpy(&eh, so, sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB) {
        err_set(err, "native function must be a 64-bit little-endian ELF object");
        return CL_EINVAL;
    }
    if (eh.e_type != ET_DYN) {
        err_set(err, "native function must be a shared object (cc -shared -fPIC)");
        return CL_EINVAL;
    }
    if (eh.e_machine != machine) {
        err_set(err, "native function was built for another machine (ELF machine %u)", eh.e_machine);
        return CL_EINVAL;
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phoff > len ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > len - eh.e_phoff) {
        err_set(err, "native function is truncated or malformed (program headers)");
        return CL_EINVAL;
    }
    return CL_OK;
}

int native_pool_create(const native_config *cfg, const uint8_t *so, size_t len,
                       native_pool **out, cl_buf *err)
{
    native_config c;
    if (cfg)
        c = *cfg;
    else
        memset(&c, 0, sizeof c);
    if (c.workers <= 0)
        c.workers = NATIVE_DEFAULT_WORKERS;
    if (!c.max_input)
        c.max_input = NATIVE_DEFAULT_IO;
    if (!c.max_output)
        c.max_output = NATIVE_DEFAULT_IO;
    if (!c.max_value)
        c.max_value = STORE_DEFAULT_MAX_VALUE;
    if (!c.timeout_ms)
        c.timeout_ms = 5000;
    if (!c.start_timeout_ms)
        c.start_timeout_ms = 10000;
    if (c.workers > NATIVE_MAX_WORKERS || c.max_input > NATIVE_MAX_IO ||
        c.max_output > NATIVE_MAX_IO || c.max_value > NATIVE_MAX_IO) {
        err_set(err, "native function: bad pool configuration");
        return CL_EINVAL;
    }
    int rc = native_validate(so, len, err);
    if (rc != CL_OK)
        return rc;

    native_pool *p = calloc(1, sizeof *p + (size_t)c.workers * sizeof(native_worker));
    if (!p)
        return CL_ENOMEM;
    p->cfg = c;
    p->cfg.worker_path = NULL;
    p->so_fd = -1;
    p->nworkers = c.workers;
    for (int i = 0; i < p->nworkers; i++)
        p->w[i].pidfd = p->w[i].notify_fd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);

    for (int op = 1; op < NATIVE_OP_COUNT; op++) {
        const char *name = native_ops[op].name;
        const rt_import *im = rt_import_find("cloister", 8, name, strlen(name));
        if (!im || strcmp(im->signature, native_ops[op].signature) != 0) {
            err_set(err, "native functions: host import cloister.%s missing or changed", name);
            rc = CL_EINVAL;
            goto fail;
        }
        p->host[op] = im->fn;
    }

    p->input_cap = page_round(c.max_input);
    p->output_cap = page_round(c.max_output);
    p->data_cap = page_round(c.max_value + NATIVE_DATA_SLACK);
    p->input_off = NATIVE_CTL_SIZE;
    p->output_off = p->input_off + p->input_cap;
    p->data_off = p->output_off + p->output_cap;
    p->region_size = p->data_off + p->data_cap;

    p->worker_path = cfg && cfg->worker_path ? strdup(cfg->worker_path) : find_worker();
    if (!p->worker_path) {
        err_set(err, "native functions: cannot find the cloister-native worker program "
                     "next to this executable");
        rc = CL_EIO;
        goto fail;
    }
    p->so_fd = so_memfd(so, len);
    if (p->so_fd < 0) {
        err_set(err, "native function: cannot keep the module in memory: %s", strerror(errno));
        rc = CL_EIO;
        goto fail;
    }
    for (int i = 0; i < p->nworkers; i++) {
        rc = worker_start(p, &p->w[i], err);
        if (rc != CL_OK)
            goto fail;
    }
    if (!p->landlock)
        cl_log_warn("native", "Landlock is not available: constructors of native functions "
                              "may read files the node can read");
    *out = p;
    return CL_OK;
fail:
    native_pool_destroy(p);
    return rc;
}

void native_pool_destroy(native_pool *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->nworkers; i++)
        if (p->w[i].pidfd >= 0)
            worker_reap(&p->w[i], 1, "", NULL, 0);
    if (p->so_fd >= 0)
        close(p->so_fd);
    free(p->worker_path);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void native_pool_stats(native_pool *p, native_stats *out)
{
    memset(out, 0, sizeof *out);
    out->invocations = __atomic_load_n(&p->invocations, __ATOMIC_RELAXED);
    out->crashes = __atomic_load_n(&p->crashes, __ATOMIC_RELAXED);
    out->timeouts = __atomic_load_n(&p->timeouts, __ATOMIC_RELAXED);
    out->spawns = __atomic_load_n(&p->spawns, __ATOMIC_RELAXED);
    out->workers = p->nworkers;
    out->landlock = __atomic_load_n(&p->landlock, __ATOMIC_RELAXED);
    for (int i = 0; i < p->nworkers; i++)
        out->live += __atomic_load_n(&p->w[i].live, __ATOMIC_RELAXED);
}

/* ---- invocations ------------------------------------------------------------------- */

/* Takes an idle slot, waiting until deadline_ns.  NULL on time-out. */
static native_worker *pool_acquire(native_pool *p, uint64_t deadline_ns)
{
    struct timespec ts = { (time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u) };
    native_worker *w = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        for (int i = 0; i < p->nworkers && !w; i++) {
            if (!p->w[i].busy && p->w[i].live)
                w = &p->w[i];
        }
        for (int i = 0; i < p->nworkers && !w; i++) {
            if (!p->w[i].busy)
                w = &p->w[i];   /* dead: restarted by the caller */
        }
        if (w) {
            w->busy = 1;
            break;
        }
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&p->mu);
    return w;
}

static void pool_release(native_pool *p, native_worker *w)
{
    pthread_mutex_lock(&p->mu);
    w->busy = 0;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Replaces a failed worker (its process already reaped). */
static void worker_replace(native_pool *p, native_worker *w)
{
    cl_buf err;
    cl_buf_init(&err);
    if (worker_start(p, w, &err) != CL_OK)
        cl_log_warn("native", "cannot replace a native worker: %.*s", (int)err.len,
                    err.data ? (const char *)err.data : "");
    cl_buf_fini(&err, 0);
}

static void result_set(rt_result *res, rt_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void result_set(rt_result *res, rt_status st, const char *fmt, ...)
{
    res->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
}

/* Gives back the pages of areas a large invocation used (idle worker). */
static void trim_area(native_worker *w, size_t off, size_t used)
{
    if (used > NATIVE_TRIM_BYTES)
        (void)madvise(w->region + off, page_round(used), MADV_REMOVE);
}

/*
 * Runs invocation c on worker w (live, held): RUN, then host calls until
 * DONE.  Returns 0 when the worker answered (res set from its code, or
 * RT_INTERNAL), -1 when it failed (res says how; the worker is reaped).
 */
static int run_on_worker(native_pool *p, native_worker *w, rt_call *c, uint64_t t0,
                         uint64_t deadline, rt_result *res, uint32_t *out_len)
{
    char how[128];
    size_t max_output = c->max_output < p->output_cap ? c->max_output : p->output_cap;
    if (max_output > UINT32_MAX)
        max_output = UINT32_MAX;
    if (c->input_len)
        memcpy(w->region + p->input_off, c->input, c->input_len);
    w->ctl->input_len = (uint32_t)c->input_len;
    w->ctl->max_output = (uint32_t)max_output;
    worker_post(w, NATIVE_MSG_RUN);

    for (;;) {
        worker_msg m;
        int r = worker_wait(w, deadline, &m);
        if (r == W_TIMEOUT) {
            worker_reap(w, 1, "", NULL, 0);
            __atomic_add_fetch(&p->timeouts, 1, __ATOMIC_RELAXED);
            result_set(res, RT_TIMEOUT, "time limit of %llu ms exceeded",
                       (unsigned long long)((deadline - t0) / 1000000u));
            return -1;
        }
        if (r == W_DEAD) {
            worker_reap(w, 1, "", how, sizeof how);
            __atomic_add_fetch(&p->crashes, 1, __ATOMIC_RELAXED);
            result_set(res, RT_CRASH, "native function %s", how);
            return -1;
        }
        if (m.type == NATIVE_MSG_CALL) {
            int64_t ret;
            if (serve_call(p, w, c, &m, &ret) != 0)
                break;
            worker_reply(w, ret);
            continue;
        }
        if (m.type != NATIVE_MSG_DONE || m.output_len > max_output)
            break;
        *out_len = m.output_len;
        if (cl_buf_append(c->output, w->region + p->output_off, m.output_len) != CL_OK) {
            result_set(res, RT_INTERNAL, "out of memory for the function's output");
        } else {
            res->code = m.code;
            res->status = m.code == 0 ? RT_OK : RT_FN_ERROR;
        }
        return 0;
    }
    worker_reap(w, 1, "", NULL, 0);
    __atomic_add_fetch(&p->crashes, 1, __ATOMIC_RELAXED);
    result_set(res, RT_CRASH, "native function broke the worker protocol");
    return -1;
}

void native_invoke(native_pool *p, rt_call *c, rt_result *res)
{
    uint64_t t0 = now_ns();
    uint64_t deadline = c->deadline_ns ? c->deadline_ns : t0 + (uint64_t)p->cfg.timeout_ms * 1000000u;
    res->code = 0;
    res->detail[0] = '\0';
    res->from_template = 0;
    __atomic_add_fetch(&p->invocations, 1, __ATOMIC_RELAXED);

    native_worker *w = NULL;
    if (c->input_len > p->input_cap) {
        result_set(res, RT_TOO_LARGE, "request body of %zu bytes exceeds the limit of %zu",
                   c->input_len, p->input_cap);
        goto done;
    }
    w = pool_acquire(p, deadline);
    if (!w) {
        __atomic_add_fetch(&p->timeouts, 1, __ATOMIC_RELAXED);
        result_set(res, RT_TIMEOUT, "time limit exceeded waiting for a native worker");
        goto done;
    }
    if (w->live && worker_dead(w)) {
        char how[128];
        worker_reap(w, 0, "", how, sizeof how);
        cl_log_warn("native", "an idle native worker %s; replacing it", how);
    }
    if (!w->live)
        worker_replace(p, w);
    if (!w->live) {
        result_set(res, RT_INTERNAL, "native function: no worker could be started");
        goto done;
    }

    uint32_t out_len = 0;
    if (run_on_worker(p, w, c, t0, deadline, res, &out_len) != 0) {
        worker_replace(p, w);
    } else {
        trim_area(w, p->input_off, c->input_len);
        trim_area(w, p->output_off, out_len);
    }
done:
    c->mem_base = NULL;
    c->mem_size = 0;
    if (w)
        pool_release(p, w);
    res->duration_ns = now_ns() - t0;
}
