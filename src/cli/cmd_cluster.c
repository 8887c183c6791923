/*
 * cmd_cluster.c - a local cluster on this machine: `cloister up`, `node
 * stop|start`, `down`, `status` (cli.h).
 *
 * `up` lays out DIR:
 *   DIR/manifest.json        the coordinator's manifest (allowed measurement =
 *                            SHA-256 of the cloisterd binary, the nodes and
 *                            their addresses, the default tenant and its token,
 *                            the consistency mode of its namespace)
 *   DIR/platform/            the simulated platform all processes share
 *                            (one machine = one "CPU")
 *   DIR/coordinator/         the coordinator's state dir and log
 *   DIR/node-N/              node N's state dir, log and ready file
 *   DIR/ca.pem, client.pem, client.key   from `cloister attest` (tenant default)
 *   DIR/cluster.json         what users and tools read (target.c): the CA, the
 *                            client certificate, and per node its id, pid and
 *                            addresses; kept current by node stop/start.
 * Ports are picked free on 127.0.0.1 when the cluster is created and kept
 * for its life, so a restarted node comes back at the same addresses.
 *
 * Processes: every daemon is started in its own session (setsid) with its
 * output appended to its log, so it outlives this command; it is stopped
 * by the pid recorded in cluster.json (SIGTERM, or SIGKILL with --kill),
 * and a pid is only signalled after checking that /proc/PID/exe is still
 * the recorded binary (a recycled pid is never killed).
 */
#include "cli.h"

#include "../client/mc.h"
#include "../common/err.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define UP_MAX_NODES 7
#define READY_TIMEOUT_MS 60000
#define STOP_TIMEOUT_MS 15000

typedef struct up_node {
    int id;
    long pid;
    char memcached[64], http[64], peer[64];
} up_node;

typedef struct up_cluster {
    char dir[PATH_MAX];
    char cloisterd[PATH_MAX];
    char coordinator[64];      /* HOST:PORT */
    long coordinator_pid;
    char consistency[16];
    char measurement[65];
    int memory_mb;             /* 0: the daemon's default */
    int n;
    up_node nodes[UP_MAX_NODES];
} up_cluster;

/* ---- small helpers -------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* The cloisterd next to this program, unless --cloisterd / CLOISTER_BIN says. */
static int find_cloisterd(const cli_opts *o, char *out, size_t cap)
{
    const char *env = getenv("CLOISTER_CLOISTERD");
    if (o->cloisterd || env) {
        if (!realpath(o->cloisterd ? o->cloisterd : env, out))
            return -1;
        return access(out, X_OK);
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return -1;
    *slash = 0;
    if ((size_t)snprintf(out, cap, "%s/cloisterd", self) >= cap)
        return -1;
    return access(out, X_OK);
}

/* SHA-256 of a file, as lowercase hex: the node measurement. */
static int sha256_file_hex(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    uint8_t buf[65536], dig[32];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = EVP_DigestUpdate(md, buf, n) == 1;
    unsigned dl = 0;
    ok = ok && !ferror(f) && EVP_DigestFinal_ex(md, dig, &dl) == 1 && dl == 32;
    EVP_MD_CTX_free(md);
    fclose(f);
    if (!ok)
        return -1;
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    return 0;
}

/* The lowest port the kernel hands out for bind(port 0) and outgoing
 * connections; 32768 when it cannot be read. */
static int ephemeral_low(void)
{
    int lo = 32768, hi;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(f);
    }
    return lo;
}

/* Picks `count` distinct free loopback ports, all bound at once and then
 * released.  They come from below the kernel's ephemeral range, at
 * random: a port the kernel chose could be handed to someone else's
 * outgoing connection before our node listens on it, and two clusters
 * started at once would otherwise be offered the same ports.  (The
 * window between release and listen remains; cmd_up retries.) */
static int pick_ports(int count, int *ports)
{
    int fds[3 * UP_MAX_NODES + 1];
    int low = ephemeral_low(), base = 20000;
    int range = low > base + 1000 ? low - base : 0;  /* 0: let the kernel choose */
    uint32_t seed;
    if (RAND_bytes((uint8_t *)&seed, sizeof seed) != 1)
        seed = (uint32_t)getpid() * 2654435761u;
    int rc = 0, i = 0, attempts = 0;
    while (i < count) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t al = sizeof a;
        seed = seed * 1664525u + 1013904223u;
        if (range && attempts++ < 64 * count)
            a.sin_port = htons((uint16_t)(base + (seed >> 8) % (uint32_t)range));
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) {
            rc = -1;
            break;
        }
        if (bind(fds[i], (struct sockaddr *)&a, sizeof a) != 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &al) != 0) {
            close(fds[i]);
            if (a.sin_port == 0) {      /* the kernel could not find one either */
                rc = -1;
                break;
            }
            continue;                   /* taken: draw again */
        }
        ports[i++] = ntohs(a.sin_port);
    }
    while (i-- > 0)
        close(fds[i]);
    return rc;
}

/* 1 while pid is a live (not zombie) process running `exe`. */
static int pid_alive(long pid, const char *exe)
{
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
        return 0;
    char path[64], buf[PATH_MAX], stat[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(stat, 1, sizeof stat - 1, f);
    fclose(f);
    stat[n] = 0;
    const char *rp = strrchr(stat, ')');
    if (!rp || rp[1] != ' ' || rp[2] == 'Z' || rp[2] == 'X')
        return 0;
    if (!exe)
        return 1;
    snprintf(path, sizeof path, "/proc/%ld/exe", pid);
    ssize_t l = readlink(path, buf, sizeof buf - 1);
    if (l <= 0)
        return 1;      /* not ours to read (other user): trust kill() */
    buf[l] = 0;
    /* A binary replaced since (a rebuild) shows as "PATH (deleted)". */
    size_t el = strlen(exe);
    return strncmp(buf, exe, el) == 0 && (buf[el] == 0 || strcmp(buf + el, " (deleted)") == 0);
}

/* ---- cluster.json ------------------------------------------------------------------ */

static int save_cluster(const up_cluster *c)
{
    json_t *nodes = json_array();
    for (int i = 0; i < c->n; i++) {
        const up_node *nd = &c->nodes[i];
        json_array_append_new(nodes, json_pack("{s:i, s:I, s:s, s:s, s:s, s:s}",
                                               "id", nd->id, "pid", (json_int_t)nd->pid,
                                               "memcached", nd->memcached, "http", nd->http,
                                               "peer", nd->peer, "state_dir", ""));
        char sd[PATH_MAX + 16];
        snprintf(sd, sizeof sd, "node-%d", nd->id);
        json_object_set_new(json_array_get(nodes, (size_t)i), "state_dir", json_string(sd));
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:{s:s, s:I}, s:o}",
                          "ca", "ca.pem", "client_cert", "client.pem", "client_key", "client.key",
                          "consistency", c->consistency, "measurement", c->measurement,
                          "cloisterd", c->cloisterd, "memory_mb", c->memory_mb,
                          "coordinator", "address", c->coordinator, "pid",
                          (json_int_t)c->coordinator_pid, "nodes", nodes);
    if (!o)
        return -1;
    char tmp[PATH_MAX + 32], path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cluster.json", c->dir);
    snprintf(tmp, sizeof tmp, "%s/.cluster.json.%ld", c->dir, (long)getpid());
    int rc = json_dump_file(o, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    if (rc != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int copy_str(char *dst, size_t cap, json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= cap)
        return -1;
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int load_cluster(const char *dir, up_cluster *c)
{
    memset(c, 0, sizeof *c);
    if (!realpath(dir, c->dir)) {
        fprintf(stderr, "cloister: %s: %s (no cluster there; start one with 'cloister up "
                        "--dir %s')\n", dir, strerror(errno), dir);
        return -1;
    }
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cluster.json", c->dir);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) {
        fprintf(stderr, "cloister: cannot read %s: %s\n", path, je.text);
        return -1;
    }
    json_t *coord = json_object_get(o, "coordinator");
    json_t *nodes = json_object_get(o, "nodes");
    int bad = copy_str(c->cloisterd, sizeof c->cloisterd, json_object_get(o, "cloisterd")) ||
              copy_str(c->consistency, sizeof c->consistency, json_object_get(o, "consistency")) ||
              copy_str(c->measurement, sizeof c->measurement, json_object_get(o, "measurement")) ||
              !json_is_object(coord) ||
              copy_str(c->coordinator, sizeof c->coordinator, json_object_get(coord, "address")) ||
              !json_is_array(nodes) || json_array_size(nodes) > UP_MAX_NODES;
    if (!bad) {
        c->coordinator_pid = (long)json_integer_value(json_object_get(coord, "pid"));
        c->memory_mb = (int)json_integer_value(json_object_get(o, "memory_mb"));
        c->n = (int)json_array_size(nodes);
        for (int i = 0; i < c->n && !bad; i++) {
            json_t *nd = json_array_get(nodes, (size_t)i);
            up_node *u = &c->nodes[i];
            u->id = (int)json_integer_value(json_object_get(nd, "id"));
            u->pid = (long)json_integer_value(json_object_get(nd, "pid"));
            bad = u->id != i + 1 ||
                  copy_str(u->memcached, sizeof u->memcached, json_object_get(nd, "memcached")) ||
                  copy_str(u->http, sizeof u->http, json_object_get(nd, "http")) ||
                  copy_str(u->peer, sizeof u->peer, json_object_get(nd, "peer"));
        }
    }
    json_decref(o);
    if (bad)
        fprintf(stderr, "cloister: %s was not written by 'cloister up' (missing or bad fields)\n",
                path);
    return bad ? -1 : 0;
}

/* ---- processes ------------------------------------------------------------------------ */

/* Starts argv[0] detached, output appended to log; returns its pid or -1. */
static long spawn_detached(char *const argv[], const char *log)
{
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return -1;
    }
    if (pid == 0) {
        setsid();
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        dprintf(2, "cloister: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fd);
    return pid;
}

/* Waits for a ready file to appear (the daemon writes it atomically once
 * it serves).  0, or -1 if the process died or time ran out. */
static int wait_ready(const char *ready, long pid, const char *what, const char *log)
{
    uint64_t deadline = now_ms() + READY_TIMEOUT_MS;
    while (now_ms() < deadline) {
        if (access(ready, R_OK) == 0)
            return 0;
        int st;
        if (waitpid((pid_t)pid, &st, WNOHANG) == (pid_t)pid || !pid_alive(pid, NULL)) {
            fprintf(stderr, "\ncloister: %s exited during start-up; its log (%s) ends with:\n",
                    what, log);
            char cmd[PATH_MAX + 32];
            snprintf(cmd, sizeof cmd, "tail -n 5 '%s' >&2", log);
            if (system(cmd) != 0) { /* best effort */ }
            return -1;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "\ncloister: %s did not become ready within %d s (log: %s)\n", what,
            READY_TIMEOUT_MS / 1000, log);
    return -1;
}

/* Sends sig and waits for the process to go.  0 when gone (or was). */
static int stop_pid(long pid, const char *exe, int sig)
{
    if (!pid_alive(pid, exe))
        return 0;
    if (kill((pid_t)pid, sig) != 0 && errno != ESRCH)
        return -1;
    uint64_t deadline = now_ms() + STOP_TIMEOUT_MS;
    while (now_ms() < deadline) {
        waitpid((pid_t)pid, NULL, WNOHANG);
        if (!pid_alive(pid, exe))
            return 0;
        sleep_ms(10);
    }
    if (sig != SIGKILL) {
        fprintf(stderr, "cloister: pid %ld did not stop within %d s; killing it\n", pid,
                STOP_TIMEOUT_MS / 1000);
        return stop_pid(pid, exe, SIGKILL);
    }
    return -1;
}

static int start_coordinator(up_cluster *c)
{
    char manifest[PATH_MAX + 32], sd[PATH_MAX + 32], pd[PATH_MAX + 32], ready[PATH_MAX + 48],
        log[PATH_MAX + 48];
    snprintf(manifest, sizeof manifest, "%s/manifest.json", c->dir);
    snprintf(sd, sizeof sd, "%s/coordinator", c->dir);
    snprintf(pd, sizeof pd, "%s/platform", c->dir);
    snprintf(ready, sizeof ready, "%s/ready.json", sd);
    snprintf(log, sizeof log, "%s/cloisterd.log", sd);
    if (mkdir_p(sd) != 0)
        return -1;
    unlink(ready);
    char *argv[] = {c->cloisterd, "--coordinator", "--manifest", manifest, "--listen",
                    c->coordinator, "--state-dir", sd, "--platform-dir", pd, "--ready-file",
                    ready, NULL};
    printf("cloister: starting the coordinator on %s ... ", c->coordinator);
    fflush(stdout);
    long pid = spawn_detached(argv, log);
    if (pid < 0 || wait_ready(ready, pid, "the coordinator", log) != 0)
        return -1;
    c->coordinator_pid = pid;
    printf("ok (pid %ld)\n", pid);
    return 0;
}

static int start_node(up_cluster *c, up_node *nd)
{
    char sd[PATH_MAX + 32], pd[PATH_MAX + 32], ready[PATH_MAX + 48], log[PATH_MAX + 48],
        id[16];
    snprintf(sd, sizeof sd, "%s/node-%d", c->dir, nd->id);
    snprintf(pd, sizeof pd, "%s/platform", c->dir);
    snprintf(ready, sizeof ready, "%s/ready.json", sd);
    snprintf(log, sizeof log, "%s/cloisterd.log", sd);
    snprintf(id, sizeof id, "%d", nd->id);
    if (mkdir_p(sd) != 0)
        return -1;
    unlink(ready);
    char mem[16];
    snprintf(mem, sizeof mem, "%d", c->memory_mb);
    char *argv[] = {c->cloisterd, "--join", c->coordinator, "--node-id", id,
                    "--peer", nd->peer, "--listen", nd->memcached, "--http", nd->http,
                    "--state-dir", sd, "--platform-dir", pd, "--ready-file", ready,
                    c->memory_mb ? "--memory" : NULL, mem, NULL};
    printf("cloister: starting node %d (memcached %s, http %s, peer %s) ... ", nd->id,
           nd->memcached, nd->http, nd->peer);
    fflush(stdout);
    char what[32];
    snprintf(what, sizeof what, "node %d", nd->id);
    long pid = spawn_detached(argv, log);
    if (pid < 0 || wait_ready(ready, pid, what, log) != 0)
        return -1;
    nd->pid = pid;
    printf("ok (pid %ld)\n", pid);
    return 0;
}

/* Runs `cloister attest` (this program) to fetch and check the CA and a
 * client certificate for the default tenant. */
static int attest_client(const up_cluster *c, const char *token)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return -1;
    self[n] = 0;
    char pub[PATH_MAX + 48];
    snprintf(pub, sizeof pub, "%s/platform/attestation.pub", c->dir);
    char *argv[] = {self, "attest", "--coordinator", (char *)c->coordinator, "--expect",
                    (char *)c->measurement, "--platform-key", pub, "--tenant", "default",
                    "--token", (char *)token, "--out", (char *)c->dir, NULL};
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0)
            dup2(nul, 1);
        execv(self, argv);
        _exit(127);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return -1;
    return 0;
}

static int write_manifest(const up_cluster *c, const char *token)
{
    json_t *nodes = json_array();
    for (int i = 0; i < c->n; i++)
        json_array_append_new(nodes, json_pack("{s:i, s:s, s:s, s:s}", "id", c->nodes[i].id,
                                               "peer", c->nodes[i].peer, "memcached",
                                               c->nodes[i].memcached, "http", c->nodes[i].http));
    json_t *m = json_pack("{s:[s], s:o, s:[{s:s, s:s, s:[{s:s, s:s}]}], s:i}",
                          "measurements", c->measurement, "nodes", nodes, "tenants", "name",
                          "default", "token", token, "namespaces", "prefix", "", "mode",
                          c->consistency, "cert_validity_s", 86400);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/manifest.json", c->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);  /* holds the token */
    int rc = m && fd >= 0 ? json_dumpfd(m, fd, JSON_INDENT(2)) : -1;
    if (fd >= 0)
        close(fd);
    json_decref(m);
    return rc;
}

/* ---- commands ------------------------------------------------------------------------------ */

/* Stops every node, then the coordinator.  A pid is forgotten only once
 * its process is gone; 0, or -1 if one could not be stopped. */
static int stop_everything(up_cluster *c)
{
    int rc = 0;
    for (int i = 0; i < c->n; i++) {
        if (stop_pid(c->nodes[i].pid, c->cloisterd, SIGTERM) == 0)
            c->nodes[i].pid = 0;
        else
            rc = -1;
    }
    if (stop_pid(c->coordinator_pid, c->cloisterd, SIGTERM) == 0)
        c->coordinator_pid = 0;
    else
        rc = -1;
    return rc;
}

/* 1 if the log at path says a listen failed because the port was taken. */
static int log_says_port_taken(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[1024];
    int taken = 0;
    while (!taken && fgets(line, sizeof line, f))
        taken = strstr(line, "Address already in use") != NULL;
    fclose(f);
    return taken;
}

#define UP_PORT_TAKEN 2

/* One attempt at starting the coordinator and every node on fresh ports:
 * 0, UP_PORT_TAKEN when a process could not listen because something
 * else took its port after we picked it, or -1. */
static int up_once(up_cluster *c, const char *token)
{
    int ports[3 * UP_MAX_NODES + 1];
    if (pick_ports(3 * c->n + 1, ports) != 0) {
        fprintf(stderr, "cloister up: cannot find free ports on 127.0.0.1\n");
        return -1;
    }
    snprintf(c->coordinator, sizeof c->coordinator, "127.0.0.1:%d", ports[0]);
    for (int i = 0; i < c->n; i++) {
        up_node *nd = &c->nodes[i];
        nd->id = i + 1;
        nd->pid = 0;
        snprintf(nd->memcached, sizeof nd->memcached, "127.0.0.1:%d", ports[1 + 3 * i]);
        snprintf(nd->http, sizeof nd->http, "127.0.0.1:%d", ports[2 + 3 * i]);
        snprintf(nd->peer, sizeof nd->peer, "127.0.0.1:%d", ports[3 + 3 * i]);
    }
    if (write_manifest(c, token) != 0 || save_cluster(c) != 0) {
        fprintf(stderr, "cloister up: cannot write to %s\n", c->dir);
        return -1;
    }
    char log[PATH_MAX + 48];
    if (start_coordinator(c) != 0) {
        snprintf(log, sizeof log, "%s/coordinator/cloisterd.log", c->dir);
        return log_says_port_taken(log) ? UP_PORT_TAKEN : -1;
    }
    save_cluster(c);
    if (attest_client(c, token) != 0) {
        fprintf(stderr, "cloister up: attesting the coordinator failed (see 'cloister attest "
                        "--coordinator %s --expect %s')\n", c->coordinator, c->measurement);
        return -1;
    }
    printf("cloister: coordinator attested; cluster CA and client certificate in %s\n", c->dir);
    for (int i = 0; i < c->n; i++) {
        if (start_node(c, &c->nodes[i]) != 0) {
            snprintf(log, sizeof log, "%s/node-%d/cloisterd.log", c->dir, c->nodes[i].id);
            return log_says_port_taken(log) ? UP_PORT_TAKEN : -1;
        }
        save_cluster(c);
    }
    return 0;
}

int cmd_up(const cli_opts *o)
{
    up_cluster c;
    memset(&c, 0, sizeof c);
    const char *dir = o->dir ? o->dir : "cloister-cluster";
    c.n = o->nodes ? o->nodes : 3;
    c.memory_mb = o->memory_mb;
    if (c.n != 1 && c.n != 3 && c.n != 5 && c.n != 7)
        return cli_usage_error("up", "--nodes must be 1, 3, 5 or 7 (an odd number, so a "
                                     "majority is well defined)");
    snprintf(c.consistency, sizeof c.consistency, "%s",
             o->consistency ? o->consistency : "strong");
    if (strcmp(c.consistency, "strong") != 0 && strcmp(c.consistency, "eventual") != 0)
        return cli_usage_error("up", "--consistency must be strong or eventual");
    if (find_cloisterd(o, c.cloisterd, sizeof c.cloisterd) != 0) {
        fprintf(stderr, "cloister up: cannot find an executable cloisterd (looked next to this "
                        "program; use --cloisterd PATH)\n");
        return CLI_FAIL;
    }
    if (mkdir_p(dir) != 0 || !realpath(dir, c.dir)) {
        fprintf(stderr, "cloister up: cannot create %s: %s\n", dir, strerror(errno));
        return CLI_FAIL;
    }
    char existing[PATH_MAX + 32];
    snprintf(existing, sizeof existing, "%s/cluster.json", c.dir);
    if (access(existing, F_OK) == 0) {
        up_cluster old;
        if (load_cluster(c.dir, &old) == 0) {
            for (int i = 0; i < old.n; i++)
                if (pid_alive(old.nodes[i].pid, old.cloisterd)) {
                    fprintf(stderr, "cloister up: a cluster is already running in %s (node %d, "
                                    "pid %ld); stop it first with 'cloister down --dir %s'\n",
                            c.dir, old.nodes[i].id, old.nodes[i].pid, dir);
                    return CLI_FAIL;
                }
        }
        fprintf(stderr, "cloister up: %s holds a stopped cluster; starting a new one in its "
                        "place (its state is discarded)\n", c.dir);
    }
    if (sha256_file_hex(c.cloisterd, c.measurement) != 0) {
        fprintf(stderr, "cloister up: cannot read %s\n", c.cloisterd);
        return CLI_FAIL;
    }
    uint8_t rnd[16];
    char token[33];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return CLI_FAIL;
    for (int i = 0; i < 16; i++)
        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
    printf("cloister: cluster of %d node%s in %s, %s consistency, measurement %.16s...\n", c.n,
           c.n == 1 ? "" : "s", c.dir, c.consistency, c.measurement);
    for (int attempt = 1;; attempt++) {
        int rc = up_once(&c, token);
        if (rc == 0)
            break;
        (void)stop_everything(&c);
        save_cluster(&c);
        if (rc != UP_PORT_TAKEN || attempt == 4)
            return CLI_FAIL;
        printf("cloister: a port was taken by another program meanwhile; "
               "trying again with new ports\n");
    }
    printf("cloister: cluster up.  Try:\n  cloister --dir %s status\n"
           "  cloister --dir %s kv set greeting hello\n", dir, dir);
    return CLI_OK;
}

int cmd_down(const cli_opts *o)
{
    up_cluster c;
    if (load_cluster(o->dir ? o->dir : "cloister-cluster", &c) != 0)
        return CLI_FAIL;
    int stopped = stop_everything(&c);
    if (save_cluster(&c) != 0 || stopped != 0) {
        fprintf(stderr, "cloister down: some processes of %s could not be stopped (their pids "
                        "stay in cluster.json)\n", c.dir);
        return CLI_FAIL;
    }
    printf("cloister: cluster in %s stopped (state kept in memory only is gone; the "
           "directory stays)\n", c.dir);
    return CLI_OK;
}

int cmd_node(const cli_opts *o)
{
    const char *verb = o->argv[0];
    char *end;
    long id = strtol(o->argv[1], &end, 10);
    up_cluster c;
    if (strcmp(verb, "stop") != 0 && strcmp(verb, "start") != 0)
        return cli_usage_error("node", "unknown action '%s' (stop or start)", verb);
    if (*end || id < 1 || id > UP_MAX_NODES)
        return cli_usage_error("node", "'%s' is not a node id", o->argv[1]);
    if (load_cluster(o->dir ? o->dir : "cloister-cluster", &c) != 0)
        return CLI_FAIL;
    if (id > c.n) {
        fprintf(stderr, "cloister node: the cluster in %s has nodes 1..%d\n", c.dir, c.n);
        return CLI_FAIL;
    }
    up_node *nd = &c.nodes[id - 1];
    if (strcmp(verb, "stop") == 0) {
        if (!pid_alive(nd->pid, c.cloisterd)) {
            printf("cloister: node %ld is not running\n", id);
        } else if (stop_pid(nd->pid, c.cloisterd, o->kill ? SIGKILL : SIGTERM) != 0) {
            fprintf(stderr, "cloister node: could not stop node %ld (pid %ld)\n", id, nd->pid);
            return CLI_FAIL;
        } else {
            printf("cloister: node %ld stopped%s\n", id, o->kill ? " (SIGKILL)" : "");
        }
        nd->pid = 0;
        return save_cluster(&c) == 0 ? CLI_OK : CLI_FAIL;
    }
    if (pid_alive(nd->pid, c.cloisterd)) {
        printf("cloister: node %ld is already running (pid %ld)\n", id, nd->pid);
        return CLI_OK;
    }
    if (!pid_alive(c.coordinator_pid, c.cloisterd)) {
        fprintf(stderr, "cloister node: the coordinator is not running; a node must attest to "
                        "join (restart the cluster with 'cloister up --dir %s')\n", c.dir);
        return CLI_FAIL;
    }
    if (start_node(&c, nd) != 0)
        return CLI_FAIL;
    return save_cluster(&c) == 0 ? CLI_OK : CLI_FAIL;
}

/* What a node says about itself (memcached `stats`, the repl_* lines). */
typedef struct node_report {
    int answered;
    char state[16];            /* ready / recovering */
    long peers_up;
    unsigned long long epoch, items, msgs_in, msgs_out, newest_ms;
    char measurement[65];      /* as the node attested it (its ready file) */
    char err[256];
} node_report;

static void take_stat(void *arg, const char *name, const char *value)
{
    node_report *r = arg;
    if (strcmp(name, "repl_state") == 0)
        snprintf(r->state, sizeof r->state, "%s", value);
    else if (strcmp(name, "repl_peers_up") == 0)
        r->peers_up = strtol(value, NULL, 10);
    else if (strcmp(name, "repl_epoch") == 0)
        r->epoch = strtoull(value, NULL, 10);
    else if (strcmp(name, "curr_items") == 0)
        r->items = strtoull(value, NULL, 10);
    else if (strcmp(name, "repl_msgs_in") == 0)
        r->msgs_in = strtoull(value, NULL, 10);
    else if (strcmp(name, "repl_msgs_out") == 0)
        r->msgs_out = strtoull(value, NULL, 10);
    else if (strcmp(name, "repl_newest_ms") == 0)
        r->newest_ms = strtoull(value, NULL, 10);
}

/* The measurement node nd attested with, from its ready file ("?" if none). */
static void node_measurement(const up_cluster *c, const up_node *nd, node_report *r)
{
    char path[PATH_MAX + 48];
    snprintf(path, sizeof path, "%s/node-%d/ready.json", c->dir, nd->id);
    snprintf(r->measurement, sizeof r->measurement, "?");
    json_t *j = json_load_file(path, 0, NULL);
    const char *m = j ? json_string_value(json_object_get(j, "measurement")) : NULL;
    if (m && strlen(m) == 64)
        snprintf(r->measurement, sizeof r->measurement, "%s", m);
    json_decref(j);
}

/* How far behind the node with the newest version a node's newest
 * version is, in ms of its hybrid clock (0 for the newest; -1 unknown).
 * Under steady writes this is the replication lag; a node that missed
 * writes while down shows how far it is behind until it catches up. */
static long long lag_ms(const node_report *rep, int n, int i)
{
    unsigned long long newest = 0;
    for (int k = 0; k < n; k++)
        if (rep[k].answered && rep[k].newest_ms > newest)
            newest = rep[k].newest_ms;
    if (!rep[i].answered)
        return -1;
    return (long long)(newest - (rep[i].newest_ms ? rep[i].newest_ms : newest));
}

static void ask_node(const up_cluster *c, const up_node *nd, node_report *r)
{
    char ca[PATH_MAX + 16], cert[PATH_MAX + 16], key[PATH_MAX + 16];
    snprintf(ca, sizeof ca, "%s/ca.pem", c->dir);
    snprintf(cert, sizeof cert, "%s/client.pem", c->dir);
    snprintf(key, sizeof key, "%s/client.key", c->dir);
    client_tls tls = {.ca_file = ca, .cert_file = cert, .key_file = key};
    client_conn *conn;
    memset(r, 0, sizeof *r);
    snprintf(r->state, sizeof r->state, "?");
    if (client_conn_open(nd->memcached, &tls, 2000, &conn, r->err, sizeof r->err) != CL_OK)
        return;
    client_conn_set_timeout(conn, 2000);
    r->answered = client_mc_stats(conn, take_stat, r, r->err, sizeof r->err) == CL_OK;
    client_conn_close(conn);
}

int cmd_status(const cli_opts *o)
{
    up_cluster c;
    if (load_cluster(o->dir ? o->dir : "cloister-cluster", &c) != 0)
        return CLI_FAIL;
    node_report rep[UP_MAX_NODES];
    int up = 0, ready = 0;
    for (int i = 0; i < c.n; i++) {
        memset(&rep[i], 0, sizeof rep[i]);
        if (pid_alive(c.nodes[i].pid, c.cloisterd)) {
            up++;
            ask_node(&c, &c.nodes[i], &rep[i]);
            node_measurement(&c, &c.nodes[i], &rep[i]);
            ready += rep[i].answered && strcmp(rep[i].state, "ready") == 0;
        }
    }
    int coord_up = pid_alive(c.coordinator_pid, c.cloisterd);
    if (o->json) {
        json_t *nodes = json_array();
        for (int i = 0; i < c.n; i++) {
            const up_node *nd = &c.nodes[i];
            int alive = pid_alive(nd->pid, c.cloisterd);
            json_t *j = json_pack("{s:i, s:I, s:s, s:s, s:s, s:b}", "id", nd->id, "pid",
                                  (json_int_t)(alive ? nd->pid : 0), "memcached", nd->memcached,
                                  "http", nd->http, "peer", nd->peer, "running", alive);
            if (rep[i].answered) {
                json_object_set_new(j, "state", json_string(rep[i].state));
                json_object_set_new(j, "epoch", json_integer((json_int_t)rep[i].epoch));
                json_object_set_new(j, "peers_up", json_integer(rep[i].peers_up));
                json_object_set_new(j, "items", json_integer((json_int_t)rep[i].items));
                json_object_set_new(j, "lag_ms", json_integer(lag_ms(rep, c.n, i)));
                json_object_set_new(j, "measurement", json_string(rep[i].measurement));
            }
            json_array_append_new(nodes, j);
        }
        json_t *out = json_pack("{s:s, s:s, s:s, s:{s:s, s:b}, s:o}", "dir", c.dir, "consistency",
                                c.consistency, "measurement", c.measurement, "coordinator",
                                "address", c.coordinator, "running", coord_up, "nodes", nodes);
        char *text = out ? json_dumps(out, JSON_INDENT(2)) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(out);
        return text ? CLI_OK : CLI_FAIL;
    }
    printf("cluster %s: %d node%s, %s consistency\nmeasurement %s (SHA-256 of %s)\n", c.dir,
           c.n, c.n == 1 ? "" : "s", c.consistency, c.measurement, c.cloisterd);
    printf("coordinator %s, %s\n", c.coordinator, coord_up ? "running" : "stopped");
    printf("%-3s %-8s %-21s %-21s %-11s %-6s %-6s %-8s %-8s %s\n", "id", "pid", "memcached",
           "peer", "state", "epoch", "peers", "items", "lag", "measurement");
    for (int i = 0; i < c.n; i++) {
        const up_node *nd = &c.nodes[i];
        const node_report *r = &rep[i];
        int alive = pid_alive(nd->pid, c.cloisterd);
        if (!alive)
            printf("%-3d %-8s %-21s %-21s %s\n", nd->id, "-", nd->memcached, nd->peer, "stopped");
        else if (!r->answered)
            printf("%-3d %-8ld %-21s %-21s %-11s (%s)\n", nd->id, nd->pid, nd->memcached,
                   nd->peer, "no answer", r->err);
        else {
            char lag[24];
            snprintf(lag, sizeof lag, "%lldms", lag_ms(rep, c.n, i));
            printf("%-3d %-8ld %-21s %-21s %-11s %-6llu %ld/%-4d %-8llu %-8s %.12s%s\n", nd->id,
                   nd->pid, nd->memcached, nd->peer, r->state, r->epoch, r->peers_up, c.n - 1,
                   r->items, lag, r->measurement,
                   strcmp(r->measurement, c.measurement) == 0 ? "" : " (differs from the cluster's)");
        }
    }
    printf("%d of %d nodes running, %d ready (serving as replicas); strong operations need "
           "%d\n", up, c.n, ready, c.n / 2 + 1);
    return CLI_OK;
}
