/*
 * members.h - what the coordinator remembers about the nodes that joined:
 * per node id its epoch (the incarnation counter the replication layer
 * uses for freshness), the measurement and addresses it joined with, and
 * when.  Kept in STATE_DIR/members.json and written before a join is
 * answered, so an epoch handed out is never handed out again, even if the
 * coordinator crashes right after.
 *
 * The file is authenticated with HMAC-SHA256 under a key derived from the
 * platform root key (label "coordinator-state"): a changed file is refused
 * at start-up.  SIMULATION MODE: the root key is a file on the same disk,
 * and nothing stops the operator from putting back an older, genuine
 * members.json (a rollback, which would hand out old epochs again); real
 * hardware would add a monotonic counter.  docs/ATTESTATION.md.
 *
 * Not thread-safe: coord.c serialises access with its own mutex.
 */
#ifndef CLOISTER_COORD_MEMBERS_H
#define CLOISTER_COORD_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

#include "manifest.h"

#define COORD_MEMBERS_FILE "members.json"

typedef struct coord_member {
    int id;                               /* 0: slot unused */
    uint64_t epoch;                       /* 1 after the first join, +1 per join */
    uint8_t measurement[ATTEST_HASH_LEN];
    char peer[COORD_MAX_ADDR];
    char memcached[COORD_MAX_ADDR];
    char http[COORD_MAX_ADDR];
    int64_t joined_at;                    /* Unix seconds of the last join */
} coord_member;

typedef struct coord_members {
    coord_member m[REPL_MAX_NODES + 1];   /* indexed by node id */
    char path[4096];
    uint8_t mac_key[32];
} coord_members;

/* Loads STATE_DIR/members.json (none yet: no members).  CL_OK, or
 * CL_ECONFIG (malformed or altered file: err says which and what to do),
 * CL_EIO, CL_ECRYPTO. */
int coord_members_load(coord_members *ms, const char *state_dir, const char *platform_dir,
                       char *err, size_t errlen) __attribute__((warn_unused_result));

/* Writes the file atomically and durably (temp, fsync, rename, fsync of
 * the directory).  CL_OK, CL_EIO, CL_ENOMEM. */
int coord_members_save(const coord_members *ms) __attribute__((warn_unused_result));

/* Wipes the MAC key. */
void coord_members_fini(coord_members *ms);

#endif
