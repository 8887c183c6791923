/*
 * cmd_fn.c - the function commands of `cloister`: deploy, invoke, ls,
 * rm, logs (cli.h).  Each resolves the node, makes one API call
 * (client/api.h) and prints the result: data on stdout, messages and
 * progress on stderr.
 */
#include "cli.h"

#include "../common/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_FILE_BYTES ((size_t)1 << 30)

/* Reads a whole file ("-" = stdin) into out.  0, or -1 with a message. */
static int read_file(const char *path, cl_buf *out, const char *cmd)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cloister %s: cannot open '%s': %s\n", cmd, path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (;;) {
        if (cl_buf_reserve(out, 65536) != CL_OK) {
            fprintf(stderr, "cloister %s: out of memory reading '%s'\n", cmd, path);
            rc = -1;
            break;
        }
        size_t n = fread(out->data + out->len, 1, 65536, f);
        out->len += n;
        if (out->len > MAX_FILE_BYTES) {
            fprintf(stderr, "cloister %s: '%s' is larger than 1 GiB\n", cmd, path);
            rc = -1;
            break;
        }
        if (n < 65536) {
            if (ferror(f)) {
                fprintf(stderr, "cloister %s: cannot read '%s': %s\n", cmd, path, strerror(errno));
                rc = -1;
            }
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    return rc;
}

static int name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return 0;
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int check_names(const char *cmd, const char *name, const cli_opts *o)
{
    if (name && !name_valid(name))
        return cli_usage_error(cmd, "'%s' is not a function name: 1 to 64 of A-Z a-z 0-9 _ . -",
                               name);
    if (o->tenant && !name_valid(o->tenant))
        return cli_usage_error(cmd, "'%s' is not a tenant name: 1 to 64 of A-Z a-z 0-9 _ . -",
                               o->tenant);
    return CLI_OK;
}

/* ---- deploy --------------------------------------------------------------- */

typedef struct progress_state {
    int tty;
    char stage[32];
    int shown;              /* a progress line is on the terminal */
} progress_state;

static void show_progress(void *arg, const char *stage, int pct)
{
    progress_state *p = arg;
    if (p->tty) {
        char bar[21];
        int filled = pct < 0 ? 0 : pct > 100 ? 20 : pct / 5;
        for (int i = 0; i < 20; i++)
            bar[i] = i < filled ? '#' : ' ';
        bar[20] = '\0';
        if (pct >= 0)
            fprintf(stderr, "\r\033[K  %-10s [%s] %3d%%", stage, bar, pct);
        else
            fprintf(stderr, "\r\033[K  %-10s ...", stage);
        p->shown = 1;
    } else if (strcmp(p->stage, stage) != 0) {
        fprintf(stderr, "  %s...\n", stage);
    }
    snprintf(p->stage, sizeof p->stage, "%s", stage);
    fflush(stderr);
}

/* The default function name: FILE's base name without its extension. */
static void name_from_file(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
}

int cmd_deploy(const cli_opts *o)
{
    const char *file = o->argv[0];
    char defname[256];
    const char *name = o->name;
    if (!name) {
        name_from_file(file, defname, sizeof defname);
        if (!name_valid(defname))
            return cli_usage_error("deploy", "cannot make a function name of '%s': give --name NAME",
                                   file);
        name = defname;
    }
    int rc = check_names("deploy", name, o);
    if (rc != CLI_OK)
        return rc;
    cli_target t;
    if ((rc = cli_target_resolve(o, &t)) != CLI_OK)
        return rc;
    cl_buf mod;
    cl_buf_init(&mod);
    if (read_file(file, &mod, "deploy") != 0) {
        cl_buf_fini(&mod, 0);
        return CLI_FAIL;
    }
    if (mod.len == 0) {
        fprintf(stderr, "cloister deploy: '%s' is empty\n", file);
        cl_buf_fini(&mod, 0);
        return CLI_FAIL;
    }
    client_node n;
    cli_target_node(&t, o, &n);
    progress_state ps = { .tty = isatty(2) };
    fprintf(stderr, "deploying %s as %s%s%s (%zu bytes) to %s\n", file, o->tenant ? o->tenant : "",
            o->tenant ? "/" : "", name, mod.len, t.http);
    client_fn fn;
    int status = 0;
    char err[1024] = "";
    int crc = client_deploy(&n, o->tenant, name, mod.data, mod.len, show_progress, &ps, &fn,
                            &status, err, sizeof err);
    cl_buf_fini(&mod, 0);
    if (ps.shown)
        fprintf(stderr, "\r\033[K");
    if (crc != CL_OK) {
        if (status) {
            fprintf(stderr, "cloister deploy: %s refused (HTTP %d): %s\n", name, status, err);
            return CLI_FAIL;
        }
        return cli_report(&t, "deploy", crc, err, 0);
    }
    printf("deployed %s%s%s: %s, sha256 %.*s, %llu bytes%s\n", fn.tenant, fn.tenant[0] ? "/" : "",
           fn.name, fn.kind[0] ? fn.kind : "?", 16, fn.sha256, (unsigned long long)fn.size,
           fn.cached == 1 ? " (compiled code reused from the cache)" : "");
    return CLI_OK;
}

/* ---- invoke ----------------------------------------------------------------- */

int cmd_invoke(const cli_opts *o)
{
    const char *name = o->argv[0];
    int rc = check_names("invoke", name, o);
    if (rc != CLI_OK)
        return rc;
    if (o->data && o->data_file)
        return cli_usage_error("invoke", "give --data or --data-file, not both");
    cli_target t;
    if ((rc = cli_target_resolve(o, &t)) != CLI_OK)
        return rc;
    cl_buf in;
    cl_buf_init(&in);
    if (o->data_file && read_file(o->data_file, &in, "invoke") != 0) {
        cl_buf_fini(&in, 0);
        return CLI_FAIL;
    }
    const uint8_t *body = o->data ? (const uint8_t *)o->data : in.data;
    size_t len = o->data ? strlen(o->data) : in.len;

    client_node n;
    cli_target_node(&t, o, &n);
    client_http_response resp;
    client_http_response_init(&resp);
    char err[1024] = "";
    int crc = client_invoke(&n, o->tenant, name, body, len, &resp, err, sizeof err);
    cl_buf_fini(&in, 0);
    if (crc != CL_OK) {
        client_http_response_fini(&resp);
        return cli_report(&t, "invoke", crc, err, 0);
    }
    rc = CLI_OK;
    int is_json_error = resp.status != 200 && strncmp(resp.content_type, "application/json", 16) == 0;
    if (!is_json_error && resp.body.len > 0) {
        fwrite(resp.body.data, 1, resp.body.len, stdout);
        fflush(stdout);
    }
    if (resp.status != 200) {
        char msg[512];
        client_error_message(&resp, msg, sizeof msg);
        const char *what = resp.status == 404 ? "no such function"
                         : resp.status == 413 ? "request body too large"
                         : resp.status == 504 ? "the function ran out of time"
                         : resp.status == 500 ? "the function failed"
                         : resp.status == 503 ? "the node is overloaded; try again"
                         : resp.reason;
        fprintf(stderr, "cloister invoke: %s: HTTP %d (%s): %s\n", name, resp.status, what, msg);
        rc = CLI_FAIL;
    }
    client_http_response_fini(&resp);
    return rc;
}

/* ---- ls ------------------------------------------------------------------------- */

static void human_size(uint64_t n, char *out, size_t cap)
{
    if (n < 1024)
        snprintf(out, cap, "%llu B", (unsigned long long)n);
    else if (n < 1024 * 1024)
        snprintf(out, cap, "%.1f KiB", (double)n / 1024);
    else
        snprintf(out, cap, "%.1f MiB", (double)n / (1024 * 1024));
}

static int fn_cmp(const void *a, const void *b)
{
    const client_fn *x = a, *y = b;
    int c = strcmp(x->tenant, y->tenant);
    return c ? c : strcmp(x->name, y->name);
}

int cmd_ls(const cli_opts *o)
{
    int rc = check_names("ls", NULL, o);
    if (rc != CLI_OK)
        return rc;
    cli_target t;
    if ((rc = cli_target_resolve(o, &t)) != CLI_OK)
        return rc;
    client_node n;
    cli_target_node(&t, o, &n);
    client_fn *fns;
    size_t count;
    int status;
    char err[1024] = "";
    int crc = client_list(&n, o->tenant, &fns, &count, &status, err, sizeof err);
    if (crc != CL_OK) {
        if (status) {
            fprintf(stderr, "cloister ls: HTTP %d: %s\n", status, err);
            return CLI_FAIL;
        }
        return cli_report(&t, "ls", crc, err, 0);
    }
    qsort(fns, count, sizeof *fns, fn_cmp);
    if (o->json) {
        printf("[");
        for (size_t i = 0; i < count; i++)
            printf("%s\n {\"name\": \"%s\", \"tenant\": \"%s\", \"kind\": \"%s\", \"sha256\": \"%s\", "
                   "\"size\": %llu, \"deployed_at\": %lld, \"invocations\": %llu, \"errors\": %llu}",
                   i ? "," : "", fns[i].name, fns[i].tenant, fns[i].kind, fns[i].sha256,
                   (unsigned long long)fns[i].size, (long long)fns[i].deployed_at,
                   (unsigned long long)fns[i].invocations, (unsigned long long)fns[i].errors);
        printf("%s]\n", count ? "\n" : "");
        free(fns);
        return CLI_OK;
    }
    if (count == 0) {
        printf("no functions deployed%s%s\n", o->tenant ? " for tenant " : "",
               o->tenant ? o->tenant : "");
        free(fns);
        return CLI_OK;
    }
    int wn = 4, wt = 6;
    for (size_t i = 0; i < count; i++) {
        int a = (int)strlen(fns[i].name), b = (int)strlen(fns[i].tenant);
        wn = a > wn ? a : wn;
        wt = b > wt ? b : wt;
    }
    printf("%-*s  %-*s  %-6s  %-12s  %10s  %-19s  %11s  %6s\n", wn, "NAME", wt, "TENANT", "KIND",
           "SHA256", "SIZE", "DEPLOYED", "INVOCATIONS", "ERRORS");
    for (size_t i = 0; i < count; i++) {
        char size[32], when[32] = "?";
        human_size(fns[i].size, size, sizeof size);
        time_t at = (time_t)fns[i].deployed_at;
        struct tm tm;
        if (at > 0 && localtime_r(&at, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        printf("%-*s  %-*s  %-6s  %-12.12s  %10s  %-19s  %11llu  %6llu\n", wn, fns[i].name, wt,
               fns[i].tenant, fns[i].kind, fns[i].sha256, size, when,
               (unsigned long long)fns[i].invocations, (unsigned long long)fns[i].errors);
    }
    free(fns);
    return CLI_OK;
}

/* ---- rm, logs ------------------------------------------------------------------- */

/* The start of a command on one named function: check the names, find the
 * node.  CLI_OK or the exit status to return. */
static int named_target(const char *cmd, const cli_opts *o, cli_target *t, client_node *n)
{
    int rc = check_names(cmd, o->argv[0], o);
    if (rc == CLI_OK && (rc = cli_target_resolve(o, t)) == CLI_OK)
        cli_target_node(t, o, n);
    return rc;
}

/* A failed request: the node's answer if there was one, else why it could
 * not be reached. */
static int report_failure(const cli_target *t, const char *cmd, const char *name, int crc,
                          int status, const char *err)
{
    if (status) {
        fprintf(stderr, "cloister %s: %s: HTTP %d: %s\n", cmd, name, status, err);
        return CLI_FAIL;
    }
    return cli_report(t, cmd, crc, err, 0);
}

int cmd_rm(const cli_opts *o)
{
    const char *name = o->argv[0];
    cli_target t;
    client_node n;
    int rc = named_target("rm", o, &t, &n);
    if (rc != CLI_OK)
        return rc;
    int status = 0;
    char err[1024] = "";
    int crc = client_remove(&n, o->tenant, name, &status, err, sizeof err);
    if (crc != CL_OK)
        return report_failure(&t, "rm", name, crc, status, err);
    printf("removed %s%s%s\n", o->tenant ? o->tenant : "", o->tenant ? "/" : "", name);
    return CLI_OK;
}

int cmd_logs(const cli_opts *o)
{
    const char *name = o->argv[0];
    cli_target t;
    client_node n;
    int rc = named_target("logs", o, &t, &n);
    if (rc != CLI_OK)
        return rc;
    cl_buf text;
    cl_buf_init(&text);
    int status = 0;
    char err[1024] = "";
    int crc = client_logs(&n, o->tenant, name, &text, &status, err, sizeof err);
    if (crc == CL_OK)
        fwrite(text.data, 1, text.len, stdout);
    cl_buf_fini(&text, 0);
    return crc == CL_OK ? CLI_OK : report_failure(&t, "logs", name, crc, status, err);
}
