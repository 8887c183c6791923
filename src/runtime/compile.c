/*
 * compile.c - the compile cache: wasm2c + cc into a shared object, kept
 * under an HMAC on untrusted disk, handed out as a verified memfd.  See
 * compile.h for the contract and the threat model.
 *
 * A cache entry is one file, DIR/<key hex>.fn, installed by rename():
 *
 *     magic "CLFNSO1\n" (8) | object length, u64 LE (8) | MAC (32) | object
 *     MAC = HMAC-SHA256(mac_key, "cloister compile cache v1" || key || length || object)
 *
 * so a reader sees a whole entry or none, and an entry moved to another
 * key's name, cut short or altered fails verification.  Entries are not
 * fsync()ed: after a crash a torn entry fails its MAC and is rebuilt.
 *
 * The shim: wasm2c names everything after the module ("-n fn") and gives
 * Z_fn_instantiate one pointer argument per imported module, ordered by
 * module name (wabt keeps them in a sorted set: "cloister" before
 * "wasi_snapshot_preview1").  The generated shim.c casts each argument to
 * its exact struct type and cc runs with -Werror=incompatible-pointer-types,
 * so a wasm2c that ordered them otherwise fails loudly instead of
 * miscompiling.  The shim declares its struct from SHIM_FIELDS below,
 * whose layout is checked against shim.h's cl_fn_shim at compile time.
 *
 * Load barrier: wasm2c 1.0.32 ends every load with wasm_asm("" :: "r"(v)),
 * an empty asm that forces each loaded value into a register, so that a
 * load whose result is never used is still performed and an out-of-bounds
 * one still traps.  It also stops gcc from combining, hoisting or
 * vectorising loads (~10% of the compute benchmark's geomean; lu 1.5x ->
 * 1.2x native, stencil 2.9x -> 2.6x).  drop_load_barrier() empties that
 * macro in fn.c.  What changes: a load whose value is dead may be deleted
 * by the optimiser, and then an out-of-bounds address there does not trap
 * (the call goes on, as if the load had been in bounds).  What does not
 * change: isolation.  Every access the compiled code does perform is
 * still mem->data + (u64)u32 index + u32 offset, inside the memory's
 * 8 GiB reservation, and faults in it are traps (trap.c); no access is
 * created that the wasm did not ask for (compilers do not invent loads
 * from addresses not already accessed), and a load whose value the guest
 * uses (returns, stores, branches on, passes to the host) traps as before, so
 * the guest can neither read nor write anything outside its own memory.
 * Only WebAssembly's "every OOB load traps" determinism is relaxed, for
 * dead loads — the same trade-off wasm2c itself makes without __GNUC__.
 *
 * Memory base: wasm2c's load/store helpers take the memory
 * (i32_load(&instance->w2c_memory, addr) copies from mem->data + addr).
 * A store through a byte pointer may alias anything, the `data` field
 * included, so the compiler reloads instance->w2c_memory.data after every
 * store: the base never stays in a register and no loop that stores can
 * be vectorised (matmul and stencil ran at 2.4-2.9x native).
 * compile_rewrite_memory_base() starts every function that loads or
 * stores with `u8* const cl_mem_base = instance->w2c_memory.data;` (a
 * local whose address is never taken, so no store can change it) and
 * calls twins of the helpers that address cl_mem_base + addr.  Sound
 * because a memory never moves while its instance's code runs: wasm_rt.c
 * and the sandbox reserve the whole 8 GiB slot up front, memory.grow only
 * mprotects pages inside it (`data` unchanged), and `data` is written
 * only at instantiation (init_memories, before any guest function runs)
 * and when the sandbox writes an instance from its template
 * (template.c), never while a call runs.  A runtime that moved memory on
 * grow would make cached bases stale: test_compile.c grows memory in a
 * loop and in a callee and uses it from the caller, to catch that.
 * Isolation is unchanged: the twins compute the same addresses (base +
 * (u64)u32 index + u32 offset) with the same guard-page checks.  The
 * rewrite first checks that fn.c is what it was written for (the helpers'
 * definitions and bodies, functions ending at a column-0 brace); on any
 * difference the module is compiled without it, which is logged and
 * counted (compile_stats.unrewritten): slower, never wrong.
 *
 * Compiler: clang-14 when it is installed, else cc (configurable).  With
 * the base in a local, clang's loop vectoriser vectorises loops over
 * linear memory behind run-time checks (that the 32-bit index arithmetic
 * does not wrap, that the arrays do not overlap); gcc 12 does not (it
 * gives up on a zero-extended 32-bit induction variable that may wrap,
 * and at -O2 does not version loops for aliasing).  Compute benchmark,
 * CPU time, geomean over native: clang-14 -O2 1.21x, gcc -O2 1.33x
 * (stencil 1.4x vs 2.3x, matmul 1.7x vs 2.8x; gcc is ~10-15% ahead on lu
 * and hash); before the rewrite, gcc 1.41x.  The run-time checks only
 * choose between the vector and the scalar loop: both access exactly the
 * addresses the wasm asked for, so the isolation argument above holds
 * for either compiler.  -O3 was measured too (gcc no better, clang
 * worse), and -march=native would tie the cache to the CPU: neither is
 * used.
 */
#include "compile.h"
#include "shim.h"
#include "../common/err.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#ifndef CLOISTER_WASM2C
#define CLOISTER_WASM2C "wasm2c"
#endif
#ifndef CLOISTER_WASM_RT_INCLUDE
#define CLOISTER_WASM_RT_INCLUDE "/usr/include"
#endif

#define SHIM_GENERATOR_VERSION 3          /* bump when the generated shim or fn.c patch changes */
#define ENTRY_MAGIC "CLFNSO1\n"
#define ENTRY_HDR (8 + 8 + 32)
#define ENTRY_MAX_SO ((uint64_t)1 << 30)
#define MAC_CONTEXT "cloister compile cache v1"
#define TOOL_OUTPUT_MAX (64 * 1024)      /* captured output kept per tool run */
#define WORK_DIR_STALE_S 3600

/* The compiler flags (part of the cache key).  No sanitizer flags, ever:
 * the object is generated code, loaded into any build of the node. */
static const char *const cc_flags[] = {
    "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
    /* WebAssembly rounds every multiply and add: never fuse them into an
     * FMA (matters as soon as a -m flag makes FMA available; gcc's default
     * for GNU C is -ffp-contract=fast) */
    "-ffp-contract=off",
    /* a huge guest frame must not step over the stack's guard band */
    "-fstack-clash-protection",
    "-DWASM_RT_MEMCHECK_SIGNAL_HANDLER=1",
    "-Werror=incompatible-pointer-types", "-Werror=implicit-function-declaration",
};
#define N_CC_FLAGS (sizeof cc_flags / sizeof cc_flags[0])

/* The generated shim's struct: the same members as cl_fn_shim (shim.h). */
#define SHIM_FIELDS                                                           \
    uint32_t abi;                                                             \
    size_t instance_size;                                                     \
    void (*init_module)(void);                                                \
    void (*instantiate)(void *inst, void *cloister_host, void *wasi_host);    \
    void (*free_instance)(void *inst);                                        \
    wasm_rt_memory_t *(*memory)(void *inst);                                  \
    void (*initialize)(void *inst);                                           \
    void (*start)(void *inst);                                                \
    void (*init)(void *inst);                                                 \
    uint32_t (*handle)(void *inst);
struct shim_layout { SHIM_FIELDS };
#define SAME_FIELD(f) _Static_assert(offsetof(struct shim_layout, f) == offsetof(cl_fn_shim, f) && \
                                     sizeof(((struct shim_layout *)0)->f) == sizeof(((cl_fn_shim *)0)->f), \
                                     "SHIM_FIELDS differs from cl_fn_shim: " #f)
SAME_FIELD(abi); SAME_FIELD(instance_size); SAME_FIELD(init_module); SAME_FIELD(instantiate);
SAME_FIELD(free_instance); SAME_FIELD(memory); SAME_FIELD(initialize); SAME_FIELD(start);
SAME_FIELD(init); SAME_FIELD(handle);
_Static_assert(sizeof(struct shim_layout) == sizeof(cl_fn_shim), "SHIM_FIELDS differs from cl_fn_shim");
#define STRINGIFY_(...) #__VA_ARGS__
#define STRINGIFY(...) STRINGIFY_(__VA_ARGS__)

struct compile_cache {
    char *dir, *wasm2c, *cc;
    uint32_t translate_ms, compile_ms;
    uint8_t mac_key[COMPILE_KEY_LEN];
    uint8_t toolchain[32];       /* SHA-256 of everything in the key but the module */
    uint64_t compiles, hits, rejected, unrewritten;
};

/* ---- small helpers ------------------------------------------------------------- */

/* Appends a message for the user to err (if any); running out of memory
 * here only loses the message, the error code still says what happened. */
static void errf(cl_buf *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errf(cl_buf *err, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    if (!err)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n > 0 && cl_buf_append(err, msg, strnlen(msg, sizeof msg)) != CL_OK) {
        /* see above */
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return CL_EIO;
        p += w;
        n -= (size_t)w;
    }
    return CL_OK;
}

static int write_file(const char *path, const void *buf, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return CL_EIO;
    int rc = write_full(fd, buf, n);
    if (close(fd) != 0 && rc == CL_OK)
        rc = CL_EIO;
    return rc;
}

/* Reads a whole regular file (at most max bytes) into *out (malloc'd). */
static int read_file(const char *path, uint64_t max, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)   /* a symlink where a file belongs is damage, like any other */
        return errno == ENOENT ? CL_ENOTFOUND : errno == ELOOP ? CL_EINTEGRITY : CL_EIO;
    struct stat st;
    int rc = CL_EIO;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0)
        goto out;
    rc = CL_EINTEGRITY;
    if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size > max)
        goto out;
    rc = CL_ENOMEM;
    size_t n = (size_t)st.st_size, got = 0;
    if (!(buf = malloc(n ? n : 1)))
        goto out;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    rc = got == n ? CL_OK : CL_EINTEGRITY;   /* shrank under us */
    if (rc == CL_OK) {
        *out = buf;
        *len = n;
        buf = NULL;
    }
out:
    free(buf);
    close(fd);
    return rc;
}

/* flock(LOCK_EX), waiting as long as it takes (the holder's work is
 * bounded by the tools' time limits). */
static int lock_exclusive(int fd)
{
    int r;
    while ((r = flock(fd, LOCK_EX)) != 0 && errno == EINTR)
        ;
    return r;
}

/* Removes a flat directory and the files in it (work directories only). */
static void remove_work_dir(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
    }
    rmdir(path);
}

static int sha256_parts(const void *const *parts, const size_t *lens, size_t n, uint8_t out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = EVP_DigestUpdate(md, parts[i], lens[i]) == 1;
    ok = ok && EVP_DigestFinal_ex(md, out, NULL) == 1;
    EVP_MD_CTX_free(md);
    return ok ? CL_OK : CL_ECRYPTO;
}

/* HMAC-SHA256 over an entry's authenticated contents. */
static int entry_mac(const compile_cache *c, const uint8_t key[32], const uint8_t *so, size_t n,
                     uint8_t mac[32])
{
    uint8_t len8[8];
    size_t maclen = 0;
    put_le64(len8, n);
    EVP_MAC *alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = alg ? EVP_MAC_CTX_new(alg) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    int ok = ctx && EVP_MAC_init(ctx, c->mac_key, sizeof c->mac_key, params) == 1 &&
             EVP_MAC_update(ctx, (const uint8_t *)MAC_CONTEXT, sizeof MAC_CONTEXT - 1) == 1 &&
             EVP_MAC_update(ctx, key, 32) == 1 && EVP_MAC_update(ctx, len8, 8) == 1 &&
             EVP_MAC_update(ctx, so, n) == 1 && EVP_MAC_final(ctx, mac, &maclen, 32) == 1 &&
             maclen == 32;
    EVP_MAC_CTX_free(ctx);   /* cleanses the key schedule */
    EVP_MAC_free(alg);
    return ok ? CL_OK : CL_ECRYPTO;
}

/* ---- running the tools ---------------------------------------------------------------- */

typedef struct tool_run {
    const char *stage;            /* progress stage, or NULL for no progress */
    uint64_t expect_ms;           /* expected duration, for the percentage */
    rt_progress_fn progress;
    void *progress_arg;
    cl_buf output;                /* stdout + stderr, first TOOL_OUTPUT_MAX bytes */
    int status;                   /* waitpid status */
    int timed_out;
} tool_run;

/* Reads what the pipe has within wait_ms: 0 read something, -1 nothing
 * there, 1 end of file. */
static int drain(int fd, cl_buf *out, int wait_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char buf[4096];
    if (poll(&p, 1, wait_ms) <= 0)
        return -1;
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : 1;
    if (r == 0)
        return 1;
    size_t room = out->len < TOOL_OUTPUT_MAX ? TOOL_OUTPUT_MAX - out->len : 0;
    if (room && cl_buf_append(out, buf, (size_t)r < room ? (size_t)r : room) != CL_OK) {
        /* lose the output, keep waiting */
    }
    return 0;
}

static void report(tool_run *t, uint64_t start, uint64_t now, int *last_pct, uint64_t *last_at)
{
    if (!t->stage || !t->progress || now - *last_at < 250)
        return;
    uint64_t pct = (now - start) * 100 / (t->expect_ms ? t->expect_ms : 1);
    int p = pct > 95 ? 95 : (int)pct;
    if (p != *last_pct) {
        t->progress(t->progress_arg, t->stage, p);
        *last_pct = p;
        *last_at = now;
    }
}

/*
 * Runs argv[0] (PATH searched) in `cwd` with stdin /dev/null and stdout
 * and stderr captured, as the leader of its own process group, with the
 * signal mask cleared; kills the group at timeout_ms and once the tool
 * has exited (the group id is still held by the unreaped leader then, so
 * the kill cannot reach anyone else).  CL_OK when it ran (see status and
 * timed_out), CL_EIO (reason in err) when it could not be started.
 */
static int tool_run_wait(const char *const argv[], const char *cwd, uint32_t timeout_ms,
                         tool_run *t, cl_buf *err)
{
    int pipefd[2] = { -1, -1 }, e = 0;
    pid_t pid = -1;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dflt;
    cl_buf_init(&t->output);
    t->status = 0;
    t->timed_out = 0;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGCHLD);
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        errf(err, "cannot run %s: %s", argv[0], strerror(errno));
        return CL_EIO;
    }
    if ((e = posix_spawn_file_actions_init(&fa)) != 0)
        goto no_fa;
    if ((e = posix_spawnattr_init(&attr)) != 0)
        goto no_attr;
    if ((e = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) ||
        (e = posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1)) ||
        (e = posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2)) ||
        (cwd && (e = posix_spawn_file_actions_addchdir_np(&fa, cwd))) ||
        (e = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                             POSIX_SPAWN_SETSIGDEF)) ||
        (e = posix_spawnattr_setpgroup(&attr, 0)) ||
        (e = posix_spawnattr_setsigmask(&attr, &none)) ||
        (e = posix_spawnattr_setsigdefault(&attr, &dflt)))
        goto done;
    e = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, environ);
done:
    posix_spawnattr_destroy(&attr);
no_attr:
    posix_spawn_file_actions_destroy(&fa);
no_fa:
    close(pipefd[1]);
    if (e != 0) {
        errf(err, "cannot run %s: %s", argv[0], strerror(e));
        close(pipefd[0]);
        return CL_EIO;
    }

    uint64_t start = now_ms(), deadline = start + timeout_ms, last_at = 0;
    int last_pct = -1, eof = 0;
    if (t->stage && t->progress) {
        t->progress(t->progress_arg, t->stage, 0);
        last_pct = 0;
    }
    for (;;) {
        if (!eof)
            eof = drain(pipefd[0], &t->output, 100) == 1;
        else
            poll(NULL, 0, 20);
        siginfo_t si = { 0 };
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0 && errno != EINTR)
            break;                      /* not our child any more: reaped elsewhere */
        if (si.si_pid == pid)
            break;                      /* exited; still a zombie holding the group id */
        uint64_t now = now_ms();
        if (now >= deadline) {
            t->timed_out = 1;
            break;
        }
        report(t, start, now, &last_pct, &last_at);
    }
    kill(-pid, SIGKILL);                /* the tool at its limit, or what it left behind */
    while (waitpid(pid, &t->status, 0) < 0 && errno == EINTR)
        ;
    while (!eof && drain(pipefd[0], &t->output, 0) == 0)
        ;                               /* what it wrote just before exiting */
    close(pipefd[0]);
    return CL_OK;
}

/*
 * Appends the useful part of a tool's output to err: at most `max_lines`
 * non-empty lines joined by "; ", the input file's name (if `file`) dropped, wasm2c's
 * "0000034: error: X" turned into "X (byte 0x34)", control bytes
 * replaced, the whole cut at ~400 bytes.
 */
static void append_tool_output(cl_buf *err, const cl_buf *out, const char *file, int max_lines)
{
    if (!err || out->len == 0)
        return;
    const char *p = (const char *)out->data, *end = p + out->len;
    size_t flen = file ? strlen(file) : 0, start_len = err->len;
    int lines = 0;
    while (p < end && lines < max_lines && err->len - start_len < 400) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        p = nl ? nl + 1 : end;
        if (flen && (size_t)(le - s) > flen && memcmp(s, file, flen) == 0 && s[flen] == ':')
            s += flen + 1;
        while (s < le && (*s == ' ' || *s == '\t' || *s == '\r'))
            s++;
        if (s == le)
            continue;
        const char *msg = s, *where = NULL;
        size_t wlen = 0;
        const char *colon = memchr(s, ':', (size_t)(le - s));
        if (colon && colon - s >= 6 && colon - s <= 16 && strspn(s, "0123456789abcdef") == (size_t)(colon - s) &&
            (size_t)(le - colon) > 9 && memcmp(colon, ": error: ", 9) == 0) {
            where = s;
            wlen = (size_t)(colon - s);
            msg = colon + 9;
            while (wlen > 1 && *where == '0')
                where++, wlen--;
        }
        if (cl_buf_append(err, lines ? "; " : "", lines ? 2 : 0) != CL_OK)
            return;
        for (const char *q = msg; q < le && err->len - start_len < 400; q++) {
            char ch = (*q >= 0x20 && *q < 0x7F) ? *q : '?';
            if (cl_buf_append(err, &ch, 1) != CL_OK)
                return;
        }
        if (where && cl_buf_printf(err, " (byte 0x%.*s)", (int)wlen, where) != CL_OK)
            return;
        lines++;
    }
}

/* Describes a failed tool run in err: "<what> failed (exit status 1): output". */
static void describe_failure(cl_buf *err, const char *what, const tool_run *t, uint32_t timeout_ms,
                             const char *file)
{
    if (t->timed_out)
        errf(err, "%s took longer than %g s and was stopped", what, timeout_ms / 1000.0);
    else if (WIFSIGNALED(t->status))
        errf(err, "%s crashed (signal %d)", what, WTERMSIG(t->status));
    else
        errf(err, "%s failed (exit status %d)", what, WEXITSTATUS(t->status));
    if (!t->timed_out && t->output.len > 0) {
        errf(err, ": ");
        append_tool_output(err, &t->output, file, 3);
    }
}

static int tool_ok(const tool_run *t)
{
    return !t->timed_out && WIFEXITED(t->status) && WEXITSTATUS(t->status) == 0;
}

/* Runs `tool --version`; its output identifies the tool in the cache key. */
static int tool_version(const char *tool, cl_buf *version, cl_buf *err)
{
    const char *argv[] = { tool, "--version", NULL };
    tool_run t = { 0 };
    int rc = tool_run_wait(argv, NULL, 10000, &t, err);
    if (rc == CL_OK && !tool_ok(&t)) {
        describe_failure(err, tool, &t, 10000, NULL);
        rc = CL_ECONFIG;
    } else if (rc != CL_OK) {
        rc = CL_ECONFIG;
    }
    if (rc == CL_OK && cl_buf_append(version, t.output.data, t.output.len) != CL_OK)
        rc = CL_ENOMEM;
    cl_buf_fini(&t.output, 0);
    return rc;
}

/* ---- open / close ----------------------------------------------------------------------- */

/* The compiler when the configuration names none: the first of these
 * that runs (header comment, "Compiler"). */
static const char *const default_ccs[] = { "clang-14", "cc" };
#define N_DEFAULT_CCS (sizeof default_ccs / sizeof default_ccs[0])

/* Chooses the compiler (`configured`, or the first default that runs)
 * into *cc (malloc'd) and its `--version` output into version. */
static int pick_cc(const char *configured, char **cc, cl_buf *version, cl_buf *err)
{
    const char *name = configured;
    int rc;
    if (name) {
        rc = tool_version(name, version, err);
    } else {
        for (size_t i = 0;; i++) {     /* quietly, but for the last */
            int last = i + 1 == N_DEFAULT_CCS;
            name = default_ccs[i];
            version->len = 0;
            if ((rc = tool_version(name, version, last ? err : NULL)) == CL_OK || last)
                break;
        }
    }
    if (rc == CL_OK && !(*cc = strdup(name)))
        rc = CL_ENOMEM;
    return rc;
}

/* Removes work directories a crashed node left behind (old enough not to
 * belong to a compile still running in another process). */
static void remove_stale_work_dirs(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        char path[PATH_MAX];
        if (strncmp(e->d_name, "work-", 5) != 0 ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || now - st.st_mtime < WORK_DIR_STALE_S)
            continue;
        remove_work_dir(path);
    }
    closedir(d);
}

int compile_cache_open(const compile_config *cfg, compile_cache **out, cl_buf *err)
{
    compile_cache *c = NULL;
    cl_buf w2c_version, cc_version, header;
    int rc = CL_EINVAL;
    cl_buf_init(&w2c_version);
    cl_buf_init(&cc_version);
    cl_buf_init(&header);
    /* every path built below is the directory plus at most ~100 bytes */
    if (!cfg || !cfg->dir || !cfg->mac_key || strlen(cfg->dir) > PATH_MAX - 128)
        goto fail;
    rc = CL_ENOMEM;
    if (!(c = calloc(1, sizeof *c)))
        goto fail;
    const char *w2c = cfg->wasm2c ? cfg->wasm2c : CLOISTER_WASM2C;
    if (strstr(w2c, "NOTFOUND"))      /* CMake did not find it at configure time */
        w2c = "wasm2c";
    c->dir = strdup(cfg->dir);
    c->wasm2c = strdup(w2c);
    if (!c->dir || !c->wasm2c)
        goto fail;
    c->translate_ms = cfg->translate_timeout_ms ? cfg->translate_timeout_ms : 60000;
    c->compile_ms = cfg->compile_timeout_ms ? cfg->compile_timeout_ms : 300000;
    memcpy(c->mac_key, cfg->mac_key, COMPILE_KEY_LEN);

    rc = CL_EIO;
    if (mkdir(c->dir, 0700) != 0 && errno != EEXIST) {
        errf(err, "cannot create the compile cache %s: %s", c->dir, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (stat(c->dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        errf(err, "compile cache %s is not a directory", c->dir);
        goto fail;
    }
    remove_stale_work_dirs(c->dir);

    if ((rc = tool_version(c->wasm2c, &w2c_version, err)) != CL_OK ||
        (rc = pick_cc(cfg->cc, &c->cc, &cc_version, err)) != CL_OK) {
        if (rc == CL_ECONFIG)
            errf(err, " (the runtime needs wabt's wasm2c and a C compiler)");
        goto fail;
    }
    size_t hlen = 0;
    uint8_t *hdr = NULL;
    rc = read_file(CLOISTER_WASM_RT_INCLUDE "/wasm-rt.h", 16 << 20, &hdr, &hlen);
    if (rc != CL_OK) {
        errf(err, "cannot read %s/wasm-rt.h (install wabt)",
                          CLOISTER_WASM_RT_INCLUDE);
        rc = CL_ECONFIG;
        goto fail;
    }
    rc = cl_buf_append(&header, hdr, hlen);
    free(hdr);
    if (rc != CL_OK)
        goto fail;

    /* the toolchain part of every key */
    char abi[64];
    snprintf(abi, sizeof abi, "shim abi %d, generator %d", CL_FN_SHIM_ABI, SHIM_GENERATOR_VERSION);
    cl_buf flags;
    cl_buf_init(&flags);
    for (size_t i = 0; i < N_CC_FLAGS; i++)
        if ((rc = cl_buf_printf(&flags, "%s%c", cc_flags[i], 0)) != CL_OK)
            break;
    if (rc == CL_OK) {
        uint64_t lens8[4] = { w2c_version.len, cc_version.len, flags.len, header.len };
        const void *parts[] = { MAC_CONTEXT, abi, lens8, w2c_version.data, cc_version.data,
                                flags.data, header.data };
        size_t lens[] = { sizeof MAC_CONTEXT - 1, strlen(abi), sizeof lens8, w2c_version.len,
                          cc_version.len, flags.len, header.len };
        rc = sha256_parts(parts, lens, 7, c->toolchain);
    }
    cl_buf_fini(&flags, 0);
    if (rc != CL_OK)
        goto fail;
    cl_buf_fini(&w2c_version, 0);
    cl_buf_fini(&cc_version, 0);
    cl_buf_fini(&header, 0);
    *out = c;
    return CL_OK;
fail:
    cl_buf_fini(&w2c_version, 0);
    cl_buf_fini(&cc_version, 0);
    cl_buf_fini(&header, 0);
    compile_cache_close(c);
    return rc;
}

void compile_cache_close(compile_cache *c)
{
    if (!c)
        return;
    OPENSSL_cleanse(c->mac_key, sizeof c->mac_key);
    free(c->dir);
    free(c->wasm2c);
    free(c->cc);
    free(c);
}

void compile_cache_stats(compile_cache *c, compile_stats *out)
{
    out->compiles = __atomic_load_n(&c->compiles, __ATOMIC_RELAXED);
    out->hits = __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
    out->rejected = __atomic_load_n(&c->rejected, __ATOMIC_RELAXED);
    out->unrewritten = __atomic_load_n(&c->unrewritten, __ATOMIC_RELAXED);
}

void compile_artifact_path(const compile_artifact *a, char out[COMPILE_PATH_MAX])
{
    snprintf(out, COMPILE_PATH_MAX, "/proc/self/fd/%d", a->fd);
}

void compile_artifact_release(compile_artifact *a)
{
    if (a->fd >= 0)
        close(a->fd);
    a->fd = -1;
}

/* ---- entries ------------------------------------------------------------------------------ */

/* Copies verified bytes into a sealed memfd: nothing in this process can
 * change them between verification and dlopen. */
static int artifact_from_bytes(const uint8_t *so, size_t n, compile_artifact *a)
{
    int fd = memfd_create("cloister-fn", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return CL_EIO;
    if (write_full(fd, so, n) != CL_OK ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
        close(fd);
        return CL_EIO;
    }
    a->fd = fd;
    a->so_bytes = n;
    return CL_OK;
}

/*
 * Looks the entry up: CL_OK (artifact filled), CL_ENOTFOUND, or
 * CL_EINTEGRITY when an entry exists but fails verification (it has been
 * deleted and logged), CL_EIO/CL_ENOMEM/CL_ECRYPTO.
 */
static int entry_load(compile_cache *c, const uint8_t key[32], const char *path,
                      const char *module_hex, compile_artifact *a)
{
    uint8_t *buf = NULL, mac[32];
    size_t n = 0;
    int rc = read_file(path, ENTRY_HDR + ENTRY_MAX_SO, &buf, &n);
    if (rc == CL_OK) {
        uint64_t so_len = n >= ENTRY_HDR ? get_le64(buf + 8) : 0;
        if (n < ENTRY_HDR || memcmp(buf, ENTRY_MAGIC, 8) != 0 || so_len != n - ENTRY_HDR)
            rc = CL_EINTEGRITY;
        else if ((rc = entry_mac(c, key, buf + ENTRY_HDR, (size_t)so_len, mac)) == CL_OK &&
                 CRYPTO_memcmp(mac, buf + 16, 32) != 0)
            rc = CL_EINTEGRITY;
        if (rc == CL_OK)
            rc = artifact_from_bytes(buf + ENTRY_HDR, (size_t)so_len, a);
    }
    if (rc == CL_EINTEGRITY) {
        cl_log_warn("compile", "cached code for module %.16s failed verification (altered or "
                    "damaged on disk); deleted, it will be compiled again", module_hex);
        __atomic_add_fetch(&c->rejected, 1, __ATOMIC_RELAXED);
        unlink(path);
    }
    free(buf);
    return rc;
}

/* Writes entry (header + so) to tmp, then renames it to path. */
static int entry_install(compile_cache *c, const uint8_t key[32], const uint8_t *so, size_t n,
                         const char *tmp, const char *path)
{
    uint8_t hdr[ENTRY_HDR];
    memcpy(hdr, ENTRY_MAGIC, 8);
    put_le64(hdr + 8, n);
    int rc = entry_mac(c, key, so, n, hdr + 16);
    if (rc != CL_OK)
        return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return CL_EIO;
    rc = write_full(fd, hdr, sizeof hdr);
    if (rc == CL_OK)
        rc = write_full(fd, so, n);
    if (close(fd) != 0 && rc == CL_OK)
        rc = CL_EIO;
    if (rc == CL_OK && rename(tmp, path) != 0)
        rc = CL_EIO;
    return rc;
}

/* ---- the shim ---------------------------------------------------------------------------------- */

static int shim_source(const wasm_module_info *info, cl_buf *s)
{
    int rc = cl_buf_printf(s,
        "/* Generated by Cloister (src/runtime/compile.c): this module's cl_fn_shim\n"
        " * (src/runtime/shim.h), the one symbol the runtime looks up. */\n"
        "#include <stddef.h>\n#include <stdint.h>\n#include \"fn.h\"\n\n"
        "struct cl_fn_shim_layout { %s };\n\n"
        "static void shim_instantiate(void *inst, void *cloister_host, void *wasi_host)\n{\n"
        "    (void)cloister_host;\n    (void)wasi_host;\n"
        "    Z_fn_instantiate((Z_fn_instance_t *)inst%s%s);\n}\n"
        "static void shim_free(void *inst) { Z_fn_free((Z_fn_instance_t *)inst); }\n"
        "static wasm_rt_memory_t *shim_memory(void *inst) { return Z_fnZ_memory((Z_fn_instance_t *)inst); }\n"
        "static uint32_t shim_handle(void *inst) { return Z_fnZ_handle((Z_fn_instance_t *)inst); }\n",
        STRINGIFY(SHIM_FIELDS),
        info->imports_cloister ? ", (struct Z_cloister_instance_t *)cloister_host" : "",
        info->imports_wasi ? ", (struct Z_wasi_snapshot_preview1_instance_t *)wasi_host" : "");
    /* optional entry points; wasm2c mangles "_initialize" to Z_fnZ__initialize */
    if (rc == CL_OK && info->has_initialize)
        rc = cl_buf_printf(s, "static void shim_initialize(void *inst) { Z_fnZ__initialize((Z_fn_instance_t *)inst); }\n");
    if (rc == CL_OK && info->has_start)
        rc = cl_buf_printf(s, "static void shim_start(void *inst) { Z_fnZ__start((Z_fn_instance_t *)inst); }\n");
    if (rc == CL_OK && info->has_init)
        rc = cl_buf_printf(s, "static void shim_init(void *inst) { Z_fnZ_init((Z_fn_instance_t *)inst); }\n");
    if (rc == CL_OK)
        rc = cl_buf_printf(s,
            "\n__attribute__((visibility(\"default\")))\n"
            "const struct cl_fn_shim_layout " CL_FN_SHIM_SYMBOL " = {\n"
            "    .abi = %d,\n    .instance_size = sizeof(Z_fn_instance_t),\n"
            "    .init_module = Z_fn_init_module,\n    .instantiate = shim_instantiate,\n"
            "    .free_instance = shim_free,\n    .memory = shim_memory,\n"
            "    .initialize = %s,\n    .start = %s,\n    .init = %s,\n"
            "    .handle = shim_handle,\n};\n",
            CL_FN_SHIM_ABI, info->has_initialize ? "shim_initialize" : "NULL",
            info->has_start ? "shim_start" : "NULL", info->has_init ? "shim_init" : "NULL");
    return rc;
}

/* ---- patching the generated code ----------------------------------------------------- */

/*
 * Empties wasm2c's per-load compiler barrier (header comment, "Load
 * barrier").  wasm2c 1.0.32 writes, near the top of fn.c,
 *
 *     #ifdef __GNUC__
 *     #define wasm_asm __asm__
 *
 * and ends every load with wasm_asm("" ::"r"(result)).  The definition is
 * overwritten in place with one of the same length that makes the
 * statement empty.  A wasm2c that no longer writes that line leaves the
 * file as it is: the code is then slower, never less safe.
 */
static void drop_load_barrier(char *src, size_t len)
{
    static const char from[] = "\n#define wasm_asm __asm__\n";
    static const char to[]   = "\n#define wasm_asm(...)   \n";
    _Static_assert(sizeof from == sizeof to, "same length, patched in place");
    char *at = memmem(src, len < 8192 ? len : 8192, from, sizeof from - 1);
    if (at)
        memcpy(at, to, sizeof to - 1);
}

/* wasm2c 1.0.32's load and store helpers: the lines of fn.c that define
 * them, exactly.  Each gets a twin that takes the base address. */
static const char *const mem_helper_defs[] = {
    "DEFINE_LOAD(i32_load, u32, u32, u32)",     "DEFINE_LOAD(i64_load, u64, u64, u64)",
    "DEFINE_LOAD(f32_load, f32, f32, f32)",     "DEFINE_LOAD(f64_load, f64, f64, f64)",
    "DEFINE_LOAD(i32_load8_s, s8, s32, u32)",   "DEFINE_LOAD(i64_load8_s, s8, s64, u64)",
    "DEFINE_LOAD(i32_load8_u, u8, u32, u32)",   "DEFINE_LOAD(i64_load8_u, u8, u64, u64)",
    "DEFINE_LOAD(i32_load16_s, s16, s32, u32)", "DEFINE_LOAD(i64_load16_s, s16, s64, u64)",
    "DEFINE_LOAD(i32_load16_u, u16, u32, u32)", "DEFINE_LOAD(i64_load16_u, u16, u64, u64)",
    "DEFINE_LOAD(i64_load32_s, s32, s64, u64)", "DEFINE_LOAD(i64_load32_u, u32, u64, u64)",
    "DEFINE_STORE(i32_store, u32, u32)",        "DEFINE_STORE(i64_store, u64, u64)",
    "DEFINE_STORE(f32_store, f32, f32)",        "DEFINE_STORE(f64_store, f64, f64)",
    "DEFINE_STORE(i32_store8, u8, u32)",        "DEFINE_STORE(i32_store16, u16, u32)",
    "DEFINE_STORE(i64_store8, u8, u64)",        "DEFINE_STORE(i64_store16, u16, u64)",
    "DEFINE_STORE(i64_store32, u32, u64)",
};
#define N_MEM_HELPERS (sizeof mem_helper_defs / sizeof mem_helper_defs[0])

/* What the helpers do, as wasm2c 1.0.32 writes it (little-endian branch):
 * the twins below do the same through `base`. */
static const char *const mem_helper_shape[] = {
    "#define MEMCHECK(mem, a, t)\n",    /* no check: guard pages */
    "wasm_rt_memcpy(&result, &mem->data[addr], sizeof(t1));",
    "wasm_rt_memcpy(&mem->data[addr], &wrapped, sizeof(t1));",
};

static const char mem_twins[] =
    "\n/* Added by Cloister (src/runtime/compile.c, \"Memory base\"): the\n"
    " * helpers above, addressing the memory from a base address that each\n"
    " * function keeps in a local (the memory never moves during a call). */\n"
    "#if WABT_BIG_ENDIAN || !WASM_RT_MEMCHECK_SIGNAL_HANDLER\n"
    "#error \"the memory-base rewrite needs little-endian and guard-page bounds checks\"\n"
    "#endif\n"
    "#define CL_MEM_LOAD(name, t1, t2, t3)                   \\\n"
    "  static inline t3 cl_mem_##name(u8* base, u64 addr) { \\\n"
    "    t1 result;                                          \\\n"
    "    wasm_rt_memcpy(&result, base + addr, sizeof(t1));   \\\n"
    "    wasm_asm(\"\" ::\"r\"(result));                       \\\n"
    "    return (t3)(t2)result;                              \\\n"
    "  }\n"
    "#define CL_MEM_STORE(name, t1, t2)                                 \\\n"
    "  static inline void cl_mem_##name(u8* base, u64 addr, t2 value) { \\\n"
    "    t1 wrapped = (t1)value;                                        \\\n"
    "    wasm_rt_memcpy(base + addr, &wrapped, sizeof(t1));             \\\n"
    "  }\n";

#define MEM_SITE "(&instance->w2c_memory, "          /* a helper call's first argument */
#define MEM_BASE_DECL "  u8* const cl_mem_base = instance->w2c_memory.data;\n"
#define FN_PARAM "(Z_fn_instance_t* instance"      /* every function of module "fn" */

static int is_ident_char(char ch)
{
    return ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* 1 if an identifier in src starts with `prefix`. */
static int has_ident_prefix(const char *src, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    for (const char *p = src; (p = memmem(p, len - (size_t)(p - src), prefix, n)) != NULL; p++)
        if (p == src || !is_ident_char(p[-1]))
            return 1;
    return 0;
}

/* The helper whose name ends just before `site` (a MEM_SITE in src), or -1. */
static int site_helper(const char *src, const char *site, const char **name)
{
    const char *p = site;
    while (p > src && is_ident_char(p[-1]))
        p--;
    size_t n = (size_t)(site - p);
    for (size_t i = 0; i < N_MEM_HELPERS; i++) {
        const char *h = strchr(mem_helper_defs[i], '(') + 1;
        if (strncmp(h, p, n) == 0 && h[n] == ',') {
            *name = p;
            return (int)i;
        }
    }
    return -1;
}

/* A function definition's first line: "static u32 w2c_f(Z_fn_instance_t* instance, u32 w2c_p0) {". */
static int is_fn_header(const char *line, const char *eol)
{
    size_t n = (size_t)(eol - line);
    return n > 3 && ((line[0] >= 'a' && line[0] <= 'z') || (line[0] >= 'A' && line[0] <= 'Z')) &&
           memcmp(eol - 3, ") {", 3) == 0 && memmem(line, n, FN_PARAM, sizeof FN_PARAM - 1);
}

/* Appends [p, end) to out with every helper call site rewritten; counts them. */
static int emit_rewritten(cl_buf *out, const char *src, const char *p, const char *end,
                          size_t *sites)
{
    const char *site, *name;
    int rc = CL_OK;
    while (rc == CL_OK && (site = memmem(p, (size_t)(end - p), MEM_SITE, sizeof MEM_SITE - 1))) {
        const char *next = site + sizeof MEM_SITE - 1;
        if (site_helper(src, site, &name) < 0) {
            rc = cl_buf_append(out, p, (size_t)(next - p));
        } else if ((rc = cl_buf_append(out, p, (size_t)(name - p))) == CL_OK) {
            rc = cl_buf_printf(out, "cl_mem_%.*s(cl_mem_base, ", (int)(site - name), name);
            (*sites)++;
        }
        p = next;
    }
    return rc == CL_OK ? cl_buf_append(out, p, (size_t)(end - p)) : rc;
}

/*
 * The memory-base rewrite (header comment, "Memory base"); see compile.h.
 * Checks first that the code is what the rewrite was written for; any
 * difference and the code is left as it is (CL_EINVAL, *why).
 */
int compile_rewrite_memory_base(const char *src, size_t len, cl_buf *out, size_t *sites,
                                const char **why)
{
    const char *end = src + len, *after_defs = NULL, *p, *copied;
    size_t start_len = out->len;
    int rc;
    *sites = 0;
    *why = NULL;
    if (has_ident_prefix(src, len, "cl_mem") || has_ident_prefix(src, len, "CL_MEM")) {
        *why = "the names the rewrite adds are taken";
        return CL_EINVAL;
    }
    for (size_t i = 0; i < sizeof mem_helper_shape / sizeof mem_helper_shape[0]; i++)
        if (!memmem(src, len, mem_helper_shape[i], strlen(mem_helper_shape[i]))) {
            *why = "the load/store helpers are not the ones the rewrite knows";
            return CL_EINVAL;
        }
    for (size_t i = 0; i < N_MEM_HELPERS; i++) {
        char line[64];
        int n = snprintf(line, sizeof line, "\n%s\n", mem_helper_defs[i]);
        const char *at = memmem(src, len, line, (size_t)n);
        if (!at || memmem(at + 1, (size_t)(end - at - 1), line, (size_t)n)) {
            *why = "a load/store helper is missing or defined twice";
            return CL_EINVAL;
        }
        if (!after_defs || at + n > after_defs)
            after_defs = at + n;
    }

    /* the twins, after the last helper definition */
    if ((rc = cl_buf_append(out, src, (size_t)(after_defs - src))) != CL_OK ||
        (rc = cl_buf_append(out, mem_twins, sizeof mem_twins - 1)) != CL_OK)
        goto fail;
    for (size_t i = 0; i < N_MEM_HELPERS && rc == CL_OK; i++)
        rc = cl_buf_printf(out, "CL_MEM_%s\n", mem_helper_defs[i] + 7);   /* after "DEFINE_" */

    /* every function that uses a helper: the base in a local, the calls through it */
    p = copied = after_defs;
    while (rc == CL_OK && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if (!is_fn_header(p, eol)) {
            p = eol + 1;
            continue;
        }
        /* the body runs to the first "}" line; wasm2c indents everything in it */
        const char *close = memmem(eol, (size_t)(end - eol), "\n}\n", 3);
        long depth = 0;
        if (!close) {
            *why = "a function has no end";
            rc = CL_EINVAL;
            break;
        }
        for (const char *q = eol; q < close; q++)
            depth += (*q == '{') - (*q == '}');
        if (depth != 0) {
            *why = "a function's braces do not match";
            rc = CL_EINVAL;
            break;
        }
        const char *name;
        const char *site = memmem(eol, (size_t)(close - eol), MEM_SITE, sizeof MEM_SITE - 1);
        while (site && site_helper(src, site, &name) < 0)
            site = memmem(site + 1, (size_t)(close - site - 1), MEM_SITE, sizeof MEM_SITE - 1);
        /* A function that allocates or frees the memory would cache a
         * base before it exists (wasm2c's own init code; none calls a
         * helper, but that is not for the rewrite to assume). */
        if (site && !memmem(eol, (size_t)(close - eol), "wasm_rt_allocate_memory", 23) &&
            !memmem(eol, (size_t)(close - eol), "wasm_rt_free_memory", 19)) {
            if ((rc = cl_buf_append(out, copied, (size_t)(eol + 1 - copied))) != CL_OK ||
                (rc = cl_buf_append(out, MEM_BASE_DECL, sizeof MEM_BASE_DECL - 1)) != CL_OK ||
                (rc = emit_rewritten(out, src, eol + 1, close + 1, sites)) != CL_OK)
                break;
            copied = close + 1;
        }
        p = close + 1;
    }
    if (rc == CL_OK)
        rc = cl_buf_append(out, copied, (size_t)(end - copied));
    if (rc == CL_OK)
        return CL_OK;
fail:
    out->len = start_len;
    *sites = 0;
    return rc;
}

/*
 * Patches the generated fn.c at `path`: the load barrier, then the memory
 * base.  A rewrite that does not fit the code is skipped and logged;
 * *rewritten says whether the memory-base rewrite was applied.
 */
static int patch_generated(const char *path, const char *mhex, int *rewritten)
{
    char tmp[PATH_MAX];
    uint8_t *src = NULL;
    size_t len = 0, sites = 0;
    const char *why = NULL;
    cl_buf out;
    cl_buf_init(&out);
    *rewritten = 0;
    int rc = read_file(path, ENTRY_MAX_SO, &src, &len);
    if (rc != CL_OK)
        return rc == CL_ENOMEM ? rc : CL_EIO;
    drop_load_barrier((char *)src, len);
    rc = cl_buf_reserve(&out, len + len / 4 + 4096);
    if (rc == CL_OK)
        rc = compile_rewrite_memory_base((const char *)src, len, &out, &sites, &why);
    if (rc == CL_EINVAL) {
        cl_log_warn("compile", "module %.16s: %s; compiled without the memory-base rewrite "
                    "(slower code, same isolation)", mhex, why);
        rc = cl_buf_append(&out, src, len);
    } else if (rc == CL_OK) {
        *rewritten = 1;
    }
    if (rc == CL_OK && snprintf(tmp, sizeof tmp, "%s.new", path) >= (int)sizeof tmp)
        rc = CL_EIO;
    if (rc == CL_OK && ((rc = write_file(tmp, out.data, out.len)) != CL_OK || rename(tmp, path) != 0))
        rc = CL_EIO;
    cl_buf_fini(&out, 0);
    free(src);
    return rc;
}

/* ---- compile ------------------------------------------------------------------------------------- */

/* work + "/" + name; fits, as the cache directory's length was checked. */
static void work_path(char out[PATH_MAX], const char *work, const char *name)
{
    if (snprintf(out, PATH_MAX, "%s/%s", work, name) >= PATH_MAX)
        out[0] = '\0';
}

/* Translates and compiles in `work`; on CL_OK (*so, *n) hold the object. */
static int build(compile_cache *c, const char *work, const char *mhex, const uint8_t *wasm,
                 size_t len, const wasm_module_info *info, rt_progress_fn progress, void *arg,
                 uint8_t **so, size_t *n, cl_buf *err)
{
    char path[PATH_MAX];
    tool_run t = { .progress = progress, .progress_arg = arg };
    cl_buf shim;
    int rc, rewritten;
    cl_buf_init(&shim);

    work_path(path, work, "in.wasm");
    if ((rc = write_file(path, wasm, len)) != CL_OK)
        goto io_fail;

    /* wasm2c validates, then translates */
    const char *w2c_argv[] = { c->wasm2c, "-n", "fn", "in.wasm", "-o", "fn.c", NULL };
    t.stage = "translate";
    t.expect_ms = 200 + len / 2000;
    if ((rc = tool_run_wait(w2c_argv, work, c->translate_ms, &t, err)) != CL_OK)
        goto out;
    if (!tool_ok(&t)) {
        /* wasm2c exits 1 with "in.wasm:OFFSET: error: WHY" lines when the
         * module does not validate: that is the user's error, not ours */
        int validation = !t.timed_out && WIFEXITED(t.status) && WEXITSTATUS(t.status) == 1 &&
                         t.output.len > 0 && memmem(t.output.data, t.output.len, ": error: ", 9);
        if (validation) {
            rc = CL_EINVAL;
            errf(err, "module does not validate: ");
            append_tool_output(err, &t.output, "in.wasm", 3);
        } else {
            rc = CL_EIO;
            describe_failure(err, "translating the module (wasm2c)", &t, c->translate_ms, "in.wasm");
        }
        goto out;
    }
    if (progress)
        progress(arg, "translate", 100);
    cl_buf_fini(&t.output, 0);
    work_path(path, work, "fn.c");
    if ((rc = patch_generated(path, mhex, &rewritten)) != CL_OK)
        goto io_fail;
    if (!rewritten)
        __atomic_add_fetch(&c->unrewritten, 1, __ATOMIC_RELAXED);

    work_path(path, work, "shim.c");
    if ((rc = shim_source(info, &shim)) != CL_OK || (rc = write_file(path, shim.data, shim.len)) != CL_OK)
        goto io_fail;

    /* cc; the expected time scales with the C source (~250 KB/s at -O2) */
    struct stat st;
    work_path(path, work, "fn.c");
    uint64_t csize = stat(path, &st) == 0 ? (uint64_t)st.st_size : len * 3;
    const char *cc_argv[N_CC_FLAGS + 10];
    size_t k = 0;
    cc_argv[k++] = c->cc;
    for (size_t i = 0; i < N_CC_FLAGS; i++)
        cc_argv[k++] = cc_flags[i];
    cc_argv[k++] = "-I";
    cc_argv[k++] = CLOISTER_WASM_RT_INCLUDE;
    cc_argv[k++] = "-o";
    cc_argv[k++] = "fn.so";
    cc_argv[k++] = "fn.c";
    cc_argv[k++] = "shim.c";
    cc_argv[k] = NULL;
    t.stage = "compile";
    t.expect_ms = 500 + csize / 250;
    if ((rc = tool_run_wait(cc_argv, work, c->compile_ms, &t, err)) != CL_OK)
        goto out;
    if (!tool_ok(&t)) {
        rc = CL_EIO;
        describe_failure(err, "the C compiler", &t, c->compile_ms, NULL);
        goto out;
    }
    work_path(path, work, "fn.so");
    rc = read_file(path, ENTRY_MAX_SO, so, n);
    if (rc != CL_OK)
        goto io_fail;
    if (progress)
        progress(arg, "compile", 100);
    goto out;
io_fail:
    errf(err, "compile cache: cannot write or read %s: %s", path,
         rc == CL_ENOMEM ? "out of memory" : strerror(errno));
    if (rc != CL_ENOMEM)
        rc = CL_EIO;
out:
    cl_buf_fini(&t.output, 0);
    cl_buf_fini(&shim, 0);
    return rc;
}

/* With the key's lock held and no valid entry: builds in a fresh work
 * directory, installs the entry, and hands out the bytes just built. */
static int compile_and_install(compile_cache *c, const uint8_t key[32], const char *path,
                               const char *mhex, const uint8_t *wasm, size_t len,
                               const wasm_module_info *info, rt_progress_fn progress,
                               void *progress_arg, compile_artifact *out, cl_buf *err)
{
    char work[PATH_MAX], tmp[PATH_MAX];
    uint8_t *so = NULL;
    size_t n = 0;
    int rc;
    if (snprintf(work, sizeof work, "%s/work-XXXXXX", c->dir) >= (int)sizeof work || !mkdtemp(work)) {
        errf(err, "compile cache: cannot create a work directory in %s: %s", c->dir, strerror(errno));
        return CL_EIO;
    }
    rc = build(c, work, mhex, wasm, len, info, progress, progress_arg, &so, &n, err);
    if (rc == CL_OK) {
        work_path(tmp, work, "entry");
        if ((rc = entry_install(c, key, so, n, tmp, path)) != CL_OK)
            errf(err, "compile cache: cannot install %s: %s", path, strerror(errno));
    }
    /* Hand out the bytes in memory, not the file: that is already out of
     * our hands. */
    if (rc == CL_OK && (rc = artifact_from_bytes(so, n, out)) == CL_OK) {
        __atomic_add_fetch(&c->compiles, 1, __ATOMIC_RELAXED);
        cl_log_info("compile", "compiled module %.16s (%zu bytes of code)", mhex, n);
    }
    remove_work_dir(work);
    free(so);
    return rc;
}

int compile_module(compile_cache *c, const uint8_t hash[32], const uint8_t *wasm, size_t len,
                   const wasm_module_info *info, rt_progress_fn progress, void *progress_arg,
                   compile_artifact *out, cl_buf *err)
{
    uint8_t key[32], check[32];
    char khex[65], mhex[65], path[PATH_MAX], lock[PATH_MAX];
    int rc, lockfd;
    out->fd = -1;
    out->so_bytes = 0;
    out->cached = 0;

    const void *parts[] = { c->toolchain, hash };
    size_t lens[] = { sizeof c->toolchain, 32 };
    if ((rc = sha256_parts(parts, lens, 2, key)) != CL_OK)
        return rc;
    hex(key, 32, khex);
    hex(hash, 32, mhex);
    if (snprintf(path, sizeof path, "%s/%s.fn", c->dir, khex) >= (int)sizeof path ||
        snprintf(lock, sizeof lock, "%s/%s.lock", c->dir, khex) >= (int)sizeof lock)
        return CL_EINVAL;

    rc = entry_load(c, key, path, mhex, out);
    if (rc == CL_OK)
        goto hit;
    if (rc != CL_ENOTFOUND && rc != CL_EINTEGRITY)
        return rc;
    if (!wasm)
        return CL_ENOTFOUND;
    if (!info)
        return CL_EINVAL;
    const void *wparts[] = { wasm };
    size_t wlens[] = { len };
    if ((rc = sha256_parts(wparts, wlens, 1, check)) != CL_OK)
        return rc;
    if (memcmp(check, hash, 32) != 0) {
        errf(err, "internal error: module bytes do not match their hash");
        return CL_EINVAL;
    }

    /* One compile per key: whoever holds the lock compiles, the others
     * wait and then find the entry. */
    lockfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lockfd < 0 || lock_exclusive(lockfd) != 0) {
        errf(err, "compile cache: cannot lock %s: %s", lock, strerror(errno));
        if (lockfd >= 0)
            close(lockfd);
        return CL_EIO;
    }
    rc = entry_load(c, key, path, mhex, out);
    if (rc == CL_ENOTFOUND || rc == CL_EINTEGRITY)
        rc = compile_and_install(c, key, path, mhex, wasm, len, info, progress, progress_arg,
                                 out, err);
    else if (rc == CL_OK)
        out->cached = 1;
    close(lockfd);   /* releases the flock */
    if (rc != CL_OK || !out->cached)
        return rc;
hit:
    out->cached = 1;
    __atomic_add_fetch(&c->hits, 1, __ATOMIC_RELAXED);
    return CL_OK;
}
