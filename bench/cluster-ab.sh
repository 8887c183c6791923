#!/usr/bin/env bash
# bench/cluster-ab.sh - two builds of Cloister as 3-node clusters in the same
# run: the YCSB driver alternates 1 s slices between them, so both see the
# same machine load.  For judging a change to the cluster's speed on a shared
# machine, where absolute figures move by +-20% from run to run.
#
#   bench/cluster-ab.sh BASE_BUILD NEW_BUILD
#   (e.g. after `git worktree add /tmp/base HEAD~1` and building it there:
#    bench/cluster-ab.sh /tmp/base/build build)
#
# Environment: BENCH_MODE (strong|eventual, default strong), BENCH_WORKLOAD
# (A, default), BENCH_DURATION (10 s), BENCH_REPS (2), BENCH_RECORDS (50000).
# Prints each repetition's ops/s, p50 and p99 for both, and, when perf is
# installed, system calls, context switches and CPU time per operation of
# each cluster's nodes.  Everything listens on 127.0.0.1 and is stopped by
# PID at the end.
set -uo pipefail

say() { echo "cluster-ab: $*" >&2; }
die() { echo "cluster-ab: error: $*" >&2; exit 1; }

[ $# -eq 2 ] || { echo "usage: bench/cluster-ab.sh BASE_BUILD NEW_BUILD" >&2; exit 2; }
mode=${BENCH_MODE:-strong}
wl=${BENCH_WORKLOAD:-A}
duration=${BENCH_DURATION:-10}
reps=${BENCH_REPS:-2}
records=${BENCH_RECORDS:-50000}
declare -A build
build[base]=$(cd "$1" 2>/dev/null && pwd) || die "no build directory '$1'"
build[new]=$(cd "$2" 2>/dev/null && pwd) || die "no build directory '$2'"
for b in base new; do
  for f in cloister cloisterd bench/ycsb; do
    [ -x "${build[$b]}/$f" ] || die "${build[$b]}/$f is missing (build it first)"
  done
done
ycsb=${build[new]}/bench/ycsb
tmp=$(mktemp -d /tmp/cloister-cluster-ab.XXXXXX)

# The node pids (and the coordinator's) of the cluster in DIR.
cluster_pids() {
  python3 -c 'import json, sys
c = json.load(open(sys.argv[1]))
print(" ".join([str(n["pid"]) for n in c["nodes"]] + [str(c["coordinator"]["pid"])]))' "$1/cluster.json"
}

# The ycsb --target spec of the cluster in DIR, named NAME.
cluster_spec() {
  python3 -c 'import json, os, sys
d, name = sys.argv[1], sys.argv[2]
c = json.load(open(os.path.join(d, "cluster.json")))
s = "name=%s,ca=%s,cert=%s,key=%s" % (name, os.path.join(d, c["ca"]),
                                      os.path.join(d, c["client_cert"]), os.path.join(d, c["client_key"]))
print(s + "".join(",addr=" + n["memcached"] for n in c["nodes"]))' "$1" "$2"
}

cleanup() {
  local b p
  for b in base new; do
    [ -f "$tmp/$b/cluster.json" ] || continue
    timeout 60 "${build[$b]}/cloister" down --dir "$tmp/$b" >/dev/null 2>&1
    for p in $(cluster_pids "$tmp/$b" 2>/dev/null); do
      [ "$p" -gt 1 ] && grep -qs cloisterd "/proc/$p/cmdline" && kill -9 "$p" 2>/dev/null
    done
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

declare -A spec pids
for b in base new; do
  timeout 120 "${build[$b]}/cloister" up --nodes 3 --dir "$tmp/$b" --consistency "$mode" \
    --memory 256 --cloisterd "${build[$b]}/cloisterd" >"$tmp/up-$b.log" 2>&1 ||
    { cat "$tmp/up-$b.log" >&2; die "cloister up failed for $b"; }
  spec[$b]=$(cluster_spec "$tmp/$b" "$b")
  pids[$b]=$(cluster_pids "$tmp/$b")
  say "$b: ${build[$b]}, $mode cluster, pids ${pids[$b]}"
done

common=(--slice 1 --records "$records" --value-size 1000 --threads 2 --conns 25)
"$ycsb" "${common[@]}" --target "${spec[base]}" --target "${spec[new]}" --load >/dev/null 2>"$tmp/load.err" ||
  { cat "$tmp/load.err" >&2; die "loading failed"; }

declare -A perf_pid
if command -v perf >/dev/null; then
  for b in base new; do
    nodes=$(cut -d' ' -f1-3 <<< "${pids[$b]}" | tr ' ' ',')
    perf stat -x, -e 'raw_syscalls:sys_enter,context-switches,cpu-clock' -p "$nodes" \
      -o "$tmp/perf.$b" 2>/dev/null &
    perf_pid[$b]=$!
  done
fi

declare -A ops=([base]=0 [new]=0)
printf '%-4s %-5s %10s %10s %10s\n' rep build ops/s p50_us p99_us
for r in $(seq "$reps"); do
  # alternate which build goes first
  if [ $((r % 2)) = 1 ]; then order=(base new); else order=(new base); fi
  "$ycsb" "${common[@]}" --target "${spec[${order[0]}]}" --target "${spec[${order[1]}]}" \
    --workload "$wl" --duration "$duration" --warmup 2 --seed "$r" --json \
    >"$tmp/run.$r" 2>"$tmp/run.$r.err" || { cat "$tmp/run.$r.err" >&2; die "ycsb failed"; }
  while IFS= read -r line; do
    [[ "$line" == *'"phase":"run"'* ]] || continue
    b=$(sed -n 's/.*"server":"\([a-z]*\)".*/\1/p' <<< "$line")
    n=$(sed -n 's/.*"ops":\([0-9]*\).*/\1/p' <<< "$line")
    ops[$b]=$((ops[$b] + n))
    printf '%-4s %-5s %10s %10s %10s\n' "$r" "$b" \
      "$(sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p' <<< "$line")" \
      "$(sed -n 's/.*"p50_us":\([0-9.]*\).*/\1/p' <<< "$line")" \
      "$(sed -n 's/.*"p99_us":\([0-9.]*\).*/\1/p' <<< "$line")"
  done < "$tmp/run.$r"
done

if [ ${#perf_pid[@]} -gt 0 ]; then
  kill -INT "${perf_pid[base]}" "${perf_pid[new]}" 2>/dev/null
  wait "${perf_pid[base]}" "${perf_pid[new]}" 2>/dev/null
  for b in base new; do
    awk -F, -v b="$b" -v ops="${ops[$b]}" '
      $3 ~ /sys_enter/ { sc = $1 } $3 ~ /context-switches/ { cs = $1 } $3 ~ /cpu-clock/ { cpu = $1 }
      END { if (ops > 0) printf "%-5s per op (nodes, whole run incl. the other build'"'"'s slices): syscalls %.2f, context switches %.2f, CPU %.1f us\n", b, sc / ops, cs / ops, cpu * 1000 / ops }' \
      "$tmp/perf.$b"
  done
fi
