/*
 * cmd_kv.c - `cloister kv get|set|delete KEY [VALUE]`: one memcached
 * text-protocol request to the node's store (client/mc.h), over TLS
 * like every other connection unless --plaintext.
 */
#include "cli.h"

#include "../client/mc.h"
#include "../common/err.h"

#include <stdio.h>
#include <string.h>

int cmd_kv(const cli_opts *o)
{
    const char *op = o->argv[0], *key = o->argv[1];
    int want = strcmp(op, "set") == 0 ? 3 : 2;
    if (strcmp(op, "get") != 0 && strcmp(op, "set") != 0 && strcmp(op, "delete") != 0)
        return cli_usage_error("kv", "unknown kv operation '%s' (get, set or delete)", op);
    if (o->argc != want)
        return cli_usage_error("kv", "usage: cloister kv %s KEY%s", op, want == 3 ? " VALUE" : "");
    if (!client_mc_key_valid(key))
        return cli_usage_error("kv", "'%s' is not a usable key: 1 to 250 bytes, no spaces or "
                                     "control characters", key);
    cli_target t;
    int rc = cli_target_resolve(o, &t);
    if (rc != CLI_OK)
        return rc;
    client_tls tls;
    cli_target_tls(&t, &tls);
    char err[1024] = "";
    char what[300];
    snprintf(what, sizeof what, "kv %s", op);
    client_conn *c;
    int crc = client_conn_open(t.memcached, &tls, 5000, &c, err, sizeof err);
    if (crc != CL_OK)
        return cli_report(&t, what, crc, err, 1);
    client_conn_set_timeout(c, o->timeout_s > 0 ? o->timeout_s * 1000 : 60000);

    rc = CLI_OK;
    if (strcmp(op, "get") == 0) {
        cl_buf v;
        cl_buf_init(&v);
        crc = client_mc_get(c, key, &v, err, sizeof err);
        if (crc == CL_OK) {
            fwrite(v.data, 1, v.len, stdout);
            fflush(stdout);
        }
        cl_buf_fini(&v, 1);
    } else if (strcmp(op, "set") == 0) {
        const char *val = o->argv[2];
        crc = client_mc_set(c, key, (const uint8_t *)val, strlen(val), err, sizeof err);
    } else {
        crc = client_mc_delete(c, key, err, sizeof err);
    }
    client_conn_close(c);
    if (crc == CL_ENOTFOUND) {
        fprintf(stderr, "cloister %s: %s: not found\n", what, key);
        rc = CLI_FAIL;
    } else if (crc != CL_OK) {
        rc = cli_report(&t, what, crc, err, 1);
    }
    return rc;
}
