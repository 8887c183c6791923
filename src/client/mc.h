/*
 * mc.h - the few memcached text-protocol requests the `cloister kv`
 * command makes (get, set, delete), over a client_conn (conn.h).
 *
 * Keys are checked here before anything is sent (1..250 bytes, no
 * spaces or control bytes), so a key can never smuggle a second command
 * onto the connection.  A SERVER_ERROR or CLIENT_ERROR reply becomes
 * CL_EPROTO with the server's own words in err.
 */
#ifndef CLOISTER_CLIENT_MC_H
#define CLOISTER_CLIENT_MC_H

#include <stddef.h>
#include <stdint.h>

#include "../common/buf.h"
#include "conn.h"

/* 1 if key is a key the text protocol can carry. */
int client_mc_key_valid(const char *key);

/* get: CL_OK (value replaces out's contents), CL_ENOTFOUND, CL_EINVAL
 * (bad key), CL_EPROTO (server error; err says it), CL_EIO/CL_ETLS/... */
int client_mc_get(client_conn *c, const char *key, cl_buf *out, char *err, size_t errlen);

/* set (flags 0, no expiry): CL_OK, CL_EINVAL, CL_EPROTO, ... */
int client_mc_set(client_conn *c, const char *key, const uint8_t *val, size_t len,
                  char *err, size_t errlen);

/* delete: CL_OK, CL_ENOTFOUND, CL_EINVAL, CL_EPROTO, ... */
int client_mc_delete(client_conn *c, const char *key, char *err, size_t errlen);

/* stats: calls fn(arg, name, value) for every STAT line.  CL_OK, CL_EPROTO,
 * CL_EIO/CL_ETLS/... */
typedef void (*client_mc_stat_fn)(void *arg, const char *name, const char *value);
int client_mc_stats(client_conn *c, client_mc_stat_fn fn, void *arg, char *err, size_t errlen);

#endif
