/*
 * members.c - the coordinator's persistent member table (members.h).
 *
 * File: {"version": 1, "members": [...], "mac": "<hex HMAC-SHA256>"}; the
 * MAC covers the compact, key-sorted JSON text of the "members" array,
 * which jansson reproduces byte for byte from the parsed values.
 */
#include "members.h"

#include "../common/err.h"
#include "../common/log.h"
#include "../trust/platform.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MEMBERS_VERSION 1

static int mac_of(const coord_members *ms, const char *text, uint8_t out[32])
{
    unsigned len = 0;
    return HMAC(EVP_sha256(), ms->mac_key, sizeof ms->mac_key, (const unsigned char *)text,
                strlen(text), out, &len) && len == 32 ? CL_OK : CL_ECRYPTO;
}

static json_t *members_json(const coord_members *ms)
{
    json_t *arr = json_array();
    for (int id = 1; arr && id <= REPL_MAX_NODES; id++) {
        const coord_member *m = &ms->m[id];
        if (!m->id)
            continue;
        char hex[2 * ATTEST_HASH_LEN + 1];
        attest_hex(m->measurement, ATTEST_HASH_LEN, hex);
        json_t *o = json_pack("{s:i, s:I, s:s, s:s, s:s, s:s, s:I}", "id", m->id, "epoch",
                              (json_int_t)m->epoch, "measurement", hex, "peer", m->peer,
                              "memcached", m->memcached, "http", m->http, "joined",
                              (json_int_t)m->joined_at);
        if (!o || json_array_append_new(arr, o) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}

static int copy_str(json_t *o, const char *k, char *dst)
{
    const char *s = json_string_value(json_object_get(o, k));
    if (!s || strlen(s) >= COORD_MAX_ADDR)
        return -1;
    strcpy(dst, s);
    return 0;
}

static int parse_members(coord_members *ms, json_t *arr)
{
    size_t i;
    json_t *o;
    if (!json_is_array(arr))
        return -1;
    json_array_foreach(arr, i, o) {
        json_int_t id = json_integer_value(json_object_get(o, "id"));
        json_int_t epoch = json_integer_value(json_object_get(o, "epoch"));
        if (id < 1 || id > REPL_MAX_NODES || ms->m[id].id || epoch < 1)
            return -1;
        coord_member *m = &ms->m[id];
        m->id = (int)id;
        m->epoch = (uint64_t)epoch;
        m->joined_at = json_integer_value(json_object_get(o, "joined"));
        if (attest_unhex(json_string_value(json_object_get(o, "measurement")), m->measurement,
                         ATTEST_HASH_LEN) != 0 ||
            copy_str(o, "peer", m->peer) || copy_str(o, "memcached", m->memcached) ||
            copy_str(o, "http", m->http))
            return -1;
    }
    return 0;
}

int coord_members_load(coord_members *ms, const char *state_dir, const char *platform_dir,
                       char *err, size_t errlen)
{
    memset(ms, 0, sizeof *ms);
    if (snprintf(ms->path, sizeof ms->path, "%s/%s", state_dir, COORD_MEMBERS_FILE) >=
        (int)sizeof ms->path) {
        snprintf(err, errlen, "state directory path too long");
        return CL_EINVAL;
    }
    uint8_t root[PLATFORM_KEY_LEN];
    int rc = platform_key_load(platform_dir, root);
    if (rc == CL_OK)
        rc = platform_derive(root, "coordinator-state", ms->mac_key);
    platform_key_wipe(root, sizeof root);
    if (rc != CL_OK) {
        snprintf(err, errlen, "cannot load the platform key in %s (see the log line above)",
                 platform_dir);
        return rc;
    }
    if (access(ms->path, F_OK) != 0 && errno == ENOENT)
        return CL_OK;                               /* first start: nobody joined yet */

    json_error_t je;
    json_t *root_json = json_load_file(ms->path, JSON_REJECT_DUPLICATES, &je);
    json_t *arr = root_json ? json_object_get(root_json, "members") : NULL;
    const char *mac_hex = root_json ? json_string_value(json_object_get(root_json, "mac")) : NULL;
    char *text = arr ? json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    uint8_t want[32], got[32];
    rc = CL_ECONFIG;
    if (!root_json || !text || !mac_hex || attest_unhex(mac_hex, got, sizeof got) != 0 ||
        json_integer_value(json_object_get(root_json, "version")) != MEMBERS_VERSION) {
        snprintf(err, errlen, "%s is not a members file (%s); move it away to start with no "
                 "members (every node then restarts its epochs at 1)", ms->path,
                 root_json ? "fields missing" : je.text);
    } else if (mac_of(ms, text, want) != CL_OK || CRYPTO_memcmp(want, got, sizeof want) != 0) {
        snprintf(err, errlen, "%s was altered (its MAC does not verify under this platform's "
                 "key); refusing to trust its epochs", ms->path);
    } else if (parse_members(ms, arr) != 0) {
        snprintf(err, errlen, "%s holds malformed member records", ms->path);
    } else {
        rc = CL_OK;
    }
    free(text);
    json_decref(root_json);
    if (rc != CL_OK)
        memset(ms->m, 0, sizeof ms->m);
    return rc;
}

int coord_members_save(const coord_members *ms)
{
    int rc = CL_ENOMEM;
    char *text = NULL, *file = NULL, tmp[sizeof ms->path + 32];
    json_t *arr = members_json(ms), *root = NULL;
    uint8_t mac[32];
    char mac_hex[65];
    if (!arr || !(text = json_dumps(arr, JSON_COMPACT | JSON_SORT_KEYS)))
        goto out;
    if ((rc = mac_of(ms, text, mac)) != CL_OK)
        goto out;
    attest_hex(mac, sizeof mac, mac_hex);
    rc = CL_ENOMEM;
    root = json_pack("{s:i, s:O, s:s}", "version", MEMBERS_VERSION, "members", arr, "mac", mac_hex);
    if (!root || !(file = json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS)))
        goto out;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", ms->path, (long)getpid());
    rc = CL_EIO;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out;
    size_t len = strlen(file), done = 0;
    while (done < len) {
        ssize_t w = write(fd, file + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    int ok = done == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, ms->path) != 0) {
        cl_log_error("coord", "cannot write %s: %s", ms->path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    char dir[sizeof ms->path];
    snprintf(dir, sizeof dir, "%s", ms->path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
    }
    rc = CL_OK;
out:
    free(file);
    free(text);
    json_decref(root);
    json_decref(arr);
    return rc;
}

void coord_members_fini(coord_members *ms)
{
    OPENSSL_cleanse(ms->mac_key, sizeof ms->mac_key);
}
