/*
 * http_rt.c - http_rt_ops: the gateway's runtime table bound to the real
 * runtime (runtime/runtime.h).
 *
 * It is its own file so that only programs that use it (cloisterd) pull
 * the runtime's code in; the gateway's tests and fuzzer run against fake
 * tables and never reference these symbols.
 */
#include "http.h"

const http_runtime_ops http_rt_ops = {
    .deploy = rt_deploy,
    .remove = rt_remove,
    .list = rt_list,
    .logs = rt_logs,
    .invoke = rt_invoke,
    .get_metrics = rt_get_metrics,
};
