/*
 * mc_stats.c - the "stats" command: general statistics ("stats") and
 * settings ("stats settings"), as "STAT <name> <value>\r\n" lines ended by
 * "END\r\n" (what memcstat and every client's stats call parse).
 *
 * Names and meanings follow memcached 1.6's protocol.txt where a figure
 * exists here; Cloister adds its own: trusted_bytes / trusted_limit
 * (index and metadata in trusted memory), untrusted_bytes (sealed arena
 * in use), integrity_failures, out_of_memory (writes refused because the
 * store is full), client_errors, tls.  Store figures come from
 * store_get_stats (summed over threads, may lag a few operations);
 * connection figures from the daemon's callback in mc_context.
 *
 * Other subcommands (items, slabs, sizes, conns, detail, reset, ...) are
 * not kept by this server and get "ERROR", as memcached answers an
 * unknown one.
 */
#include "mc_int.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../common/log.h"
#include "../repl/hlc.h"
#include "../repl/repl.h"

static void stat_str(mc_req *r, const char *name, const char *v)
{
    mc_put(r, "STAT ", 5);
    mc_put_str(r, name);
    mc_put(r, " ", 1);
    mc_put_str(r, v ? v : "NULL");
    mc_put(r, "\r\n", 2);
}

static void stat_u64(mc_req *r, const char *name, uint64_t v)
{
    mc_put(r, "STAT ", 5);
    mc_put_str(r, name);
    mc_put(r, " ", 1);
    mc_put_u64(r, v);
    mc_put(r, "\r\n", 2);
}

static void stat_timeval(mc_req *r, const char *name, struct timeval tv)
{
    char v[48];
    int n = snprintf(v, sizeof v, "%ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
    if (n > 0 && (size_t)n < sizeof v)
        stat_str(r, name, v);
}

static uint64_t load(const uint64_t *counter) { return __atomic_load_n(counter, __ATOMIC_RELAXED); }

static void mc_stats_general(mc_req *r)
{
    const mc_context *ctx = r->thr->ctx;
    store_stats st;
    store_get_stats(ctx->store, &st);
    int64_t now = store_now();
    uint64_t curr = 0, total = 0;
    if (ctx->conn_stats)
        ctx->conn_stats(ctx->conn_stats_arg, &curr, &total);
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    getrusage(RUSAGE_SELF, &ru);

    stat_u64(r, "pid", (uint64_t)getpid());
    stat_u64(r, "uptime", ctx->started > 0 && now > ctx->started ? (uint64_t)(now - ctx->started) : 0);
    stat_u64(r, "time", (uint64_t)now);
    stat_str(r, "version", ctx->version ? ctx->version : MC_VERSION_DEFAULT);
    stat_u64(r, "pointer_size", 8 * sizeof(void *));
    stat_timeval(r, "rusage_user", ru.ru_utime);
    stat_timeval(r, "rusage_system", ru.ru_stime);
    stat_u64(r, "curr_connections", curr);
    stat_u64(r, "total_connections", total);
    stat_u64(r, "cmd_get", st.cmd_get);
    stat_u64(r, "cmd_set", st.cmd_set);
    stat_u64(r, "cmd_flush", st.cmd_flush);
    stat_u64(r, "cmd_touch", st.cmd_touch);
    stat_u64(r, "get_hits", st.get_hits);
    stat_u64(r, "get_misses", st.get_misses);
    stat_u64(r, "get_expired", st.get_expired);
    stat_u64(r, "get_flushed", st.get_flushed);
    stat_u64(r, "delete_misses", st.delete_misses);
    stat_u64(r, "delete_hits", st.delete_hits);
    stat_u64(r, "incr_misses", st.incr_misses);
    stat_u64(r, "incr_hits", st.incr_hits);
    stat_u64(r, "decr_misses", st.decr_misses);
    stat_u64(r, "decr_hits", st.decr_hits);
    stat_u64(r, "cas_misses", st.cas_misses);
    stat_u64(r, "cas_hits", st.cas_hits);
    stat_u64(r, "cas_badval", st.cas_badval);
    stat_u64(r, "touch_hits", st.touch_hits);
    stat_u64(r, "touch_misses", st.touch_misses);
    stat_u64(r, "store_too_large", load(&ctx->counters.store_too_large));
    stat_u64(r, "store_no_memory", st.out_of_memory);
    stat_u64(r, "limit_maxbytes", st.limit_maxbytes);
    stat_u64(r, "threads", ctx->threads > 0 ? (uint64_t)ctx->threads : 0);
    stat_u64(r, "hash_power_level", st.hash_power_level);
    stat_u64(r, "hash_bytes", st.hash_bytes);
    stat_u64(r, "bytes", st.bytes);
    stat_u64(r, "curr_items", st.curr_items);
    stat_u64(r, "total_items", st.total_items);
    stat_u64(r, "expired_unfetched", st.expired_unfetched);
    stat_u64(r, "evicted_unfetched", st.evicted_unfetched);
    stat_u64(r, "evictions", st.evictions);
    stat_u64(r, "reclaimed", st.reclaimed);
    stat_u64(r, "trusted_bytes", st.trusted_bytes);
    stat_u64(r, "trusted_limit", st.trusted_limit);
    stat_u64(r, "untrusted_bytes", st.untrusted_bytes);
    stat_u64(r, "integrity_failures", st.integrity_failures);
    stat_u64(r, "out_of_memory", st.out_of_memory);
    stat_u64(r, "client_errors", load(&ctx->counters.client_errors));
    stat_u64(r, "tls", ctx->tls ? 1 : 0);
    if (ctx->repl) {
        repl_stats rs;
        repl_get_stats(ctx->repl, &rs);
        stat_u64(r, "repl_node_id", (uint64_t)rs.self);
        stat_u64(r, "repl_nodes", (uint64_t)rs.n);
        stat_u64(r, "repl_epoch", rs.epoch);
        stat_str(r, "repl_state", rs.ready ? "ready" : "recovering");
        stat_u64(r, "repl_peers_up", (uint64_t)rs.peers_up);
        stat_u64(r, "repl_gets", rs.gets);
        stat_u64(r, "repl_gets_one_round", rs.gets_one_round);
        stat_u64(r, "repl_writebacks", rs.writebacks);
        stat_u64(r, "repl_puts", rs.puts);
        stat_u64(r, "repl_rmws", rs.rmws);
        stat_u64(r, "repl_rmw_retries", rs.rmw_retries);
        stat_u64(r, "repl_nacks", rs.nacks);
        stat_u64(r, "repl_timeouts", rs.timeouts);
        stat_u64(r, "repl_repairs", rs.repairs);
        stat_u64(r, "repl_integrity_failures", rs.integrity_failures);
        stat_u64(r, "repl_pushed", rs.pushed);
        stat_u64(r, "repl_applied_remote", rs.applied_remote);
        stat_u64(r, "repl_antientropy_pulled", rs.antientropy_pulled);
        stat_u64(r, "repl_lock_grants", rs.lock_grants);
        stat_u64(r, "repl_replayed_dropped", rs.replayed_dropped);
        stat_u64(r, "repl_recovered_records", rs.recovered_records);
        stat_u64(r, "repl_msgs_in", rs.msgs_in);
        stat_u64(r, "repl_msgs_out", rs.msgs_out);
        /* wall-clock ms of the newest version stored here: nodes compare it (lag) */
        stat_u64(r, "repl_newest_ms",
                 rs.newest_version ? hlc_ms(version_hlc(rs.newest_version)) : 0);
    }
}

static void mc_stats_settings(mc_req *r)
{
    const mc_context *ctx = r->thr->ctx;
    store_stats st;
    store_get_stats(ctx->store, &st);
    int lvl = cl_log_get_level();
    stat_u64(r, "maxbytes", st.limit_maxbytes);
    stat_str(r, "inter", ctx->listen);
    stat_u64(r, "verbosity", lvl <= CL_LOG_WARN ? 0 : lvl == CL_LOG_INFO ? 1 : 2);
    stat_str(r, "evictions", ctx->evict_lru ? "on" : "off");
    stat_u64(r, "num_threads", ctx->threads > 0 ? (uint64_t)ctx->threads : 0);
    stat_str(r, "cas_enabled", "yes");
    stat_str(r, "flush_enabled", "yes");
    stat_u64(r, "item_size_max", store_max_value(ctx->store));
    stat_str(r, "binding_protocol", "ascii");
    stat_str(r, "ssl_enabled", ctx->tls ? "yes" : "no");
    stat_u64(r, "trusted_limit", st.trusted_limit);
    stat_str(r, "arena_file", ctx->arena_file);
    stat_str(r, "value_sealing", "aes-256-gcm");
}

int mc_cmd_stats(mc_req *r)
{
    if (r->ntok == 1)
        mc_stats_general(r);
    else if (r->ntok == 2 && mc_tok_eq(&r->tok[1], "settings"))
        mc_stats_settings(r);
    else {
        mc_reply_client_error(r, "ERROR");
        return MC_DONE;
    }
    mc_put(r, "END\r\n", 5);
    return MC_DONE;
}
