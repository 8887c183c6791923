#!/usr/bin/env bash
# bench/cluster.sh - the cluster benchmark (issue 4): a 3-replica Cloister
# cluster in strong mode and one in eventual mode, a single Cloister node and
# a 3-member etcd 3.4 cluster, all driven by the same YCSB driver
# (bench/ycsb.c) in one run, served in turn in time slices so that machine
# noise hits every system alike.  YCSB A and C, 1 KB values; prints
# throughput, p50 and p99 of each system and the ratios the issue's targets
# name; writes JSON lines and a gnuplot chart to bench/results/.
#
#   bench/cluster.sh BUILD_DIR                 (e.g. bench/cluster.sh build)
#   BENCH_REPORT=FILE.jsonl bench/cluster.sh   (table and chart of an earlier run)
#
# Knobs (environment): see bench/README.md, "Cluster benchmark".
#
# Invariants: every process this script starts (etcd members, cloisterd, the
# driver) is stopped by PID on exit, whatever happens; Cloister clusters are
# stopped with `cloister down` and then, if a node is still alive, by the PIDs
# their cluster.json lists.  No figure is ever made up: a system that is not
# available (`cloister up` not built yet) is reported as missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-}
report=${BENCH_REPORT:-}
if [ -z "$build" ] && [ -z "$report" ]; then
  echo "usage: bench/cluster.sh BUILD_DIR             (e.g. bench/cluster.sh build)" >&2
  echo "       BENCH_REPORT=FILE.jsonl bench/cluster.sh   (table and chart of an earlier run)" >&2
  exit 2
fi

duration=${BENCH_DURATION:-20}
warmup=${BENCH_WARMUP:-2}
reps=${BENCH_REPS:-3}
workloads=${BENCH_WORKLOADS:-A C}
systems=${BENCH_SYSTEMS:-strong eventual single etcd}
records=${BENCH_RECORDS:-100000}
threads=${BENCH_THREADS:-2}
conns=${BENCH_CONNS:-25}
seed=${BENCH_SEED:-1}
slice=${BENCH_SLICE:-1}
settle=${BENCH_SETTLE:-2}
up_args=${BENCH_UP_ARGS:-}
value_size=1000
memory_mb=1024

results=$root/bench/results
all_systems="strong eventual single etcd"

say() { echo "cluster-bench: $*" >&2; }
die() { echo "cluster-bench: error: $*" >&2; exit 1; }

# ---- processes: started here, stopped by PID on exit ---------------------------
tmp=$(mktemp -d /tmp/cloister-cluster-bench.XXXXXX)
etcd_root=${BENCH_ETCD_DIR:-$tmp}   # parent of the etcd members' data directories
pids=()          # every process this script started and has not reaped yet
clusters=()      # directories of Cloister clusters started with `cloister up`
etcd_dirs=()     # etcd data directories to remove at exit

forget_pid() {
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
# True while PID runs (a child that exited but is not reaped yet does not).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ "$st" != Z* ]]
}
# stop_pids PID...: TERM to all at once (an etcd member waits for its peers
# when stopped alone), KILL what is left after 10 s; forgets them, so that a
# recycled PID is never signalled later.
stop_pids() {
  local p i left
  for p in "$@"; do forget_pid "$p"; kill "$p" 2>/dev/null || true; done
  for i in $(seq 100); do
    left=0
    for p in "$@"; do if alive "$p"; then left=1; fi; done
    [ "$left" = 1 ] || break
    sleep 0.1
  done
  for p in "$@"; do
    if alive "$p"; then kill -9 "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
  done
}
# Stops a Cloister cluster: `cloister down`, then its nodes by the PIDs in its
# cluster.json if any is still alive (`cloister up` started them for us).
stop_cluster() {
  local dir=$1 p i
  timeout 60 "$cloister" down --dir "$dir" >"$dir.down.log" 2>&1 ||
    say "'cloister down --dir $dir' failed; stopping its nodes by PID"
  for p in $(cluster_field "$dir" pids 2>/dev/null); do
    for i in $(seq 50); do alive "$p" || break; sleep 0.1; done
    if alive "$p"; then
      say "node pid $p still alive 5 s after 'cloister down': killing it"
      kill -9 "$p" 2>/dev/null || true
    fi
  done
  return 0
}
cleanup() {
  local d
  for d in "${clusters[@]}"; do stop_cluster "$d"; done
  [ ${#pids[@]} -gt 0 ] && stop_pids "${pids[@]}"
  for d in "${etcd_dirs[@]}"; do rm -rf "$d"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True once PID listens on 127.0.0.1:PORT (never mistake someone else's server for ours).
# (No "| grep -q" or "| head" in this script: with pipefail, their early exit
# can fail a pipeline with SIGPIPE.)
listening() { [[ "$(ss -Hltnp "sport = :$2" 2>/dev/null)" == *"pid=$1,"* ]]; }

# N distinct loopback ports nobody listens on now (the servers' own binds
# catch a race; callers retry).
free_ports() {
  local n=$1 got=() p
  while [ ${#got[@]} -lt "$n" ]; do
    p=$((20000 + RANDOM % 40000))
    [[ " ${got[*]} " == *" $p "* ]] && continue
    [ -z "$(ss -Hltn "sport = :$p")" ] || continue
    got+=("$p")
  done
  echo "${got[@]}"
}

# A throwaway CA and a server certificate for 127.0.0.1 (the single node).
make_certs() {
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" -days 2 \
    -subj "/CN=cloister bench CA" 2>/dev/null
  openssl req "${ec[@]}" -keyout "$tmp/server.key" -out "$tmp/server.csr" \
    -subj "/CN=localhost" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" > "$tmp/server.ext"
  openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
    -CAcreateserial -days 2 -extfile "$tmp/server.ext" -out "$tmp/server.crt" 2>/dev/null
}

# ---- etcd: 3 members on loopback, etcd's default durability (fsync per commit) --------
# Sets etcd_pids, etcd_addrs (client HOST:PORT of each member), etcd_dir.
start_etcd() {
  local attempt i ports init token dir
  for attempt in 1 2 3; do
    read -r -a ports <<< "$(free_ports 6)"
    init="" token=cloister-bench-$$-$attempt
    for i in 0 1 2; do init+="${init:+,}m$i=http://127.0.0.1:${ports[$((3 + i))]}"; done
    etcd_dir=$(mktemp -d "$etcd_root/etcd-data.XXXXXX")
    etcd_dirs+=("$etcd_dir")
    etcd_pids=() etcd_addrs=()
    for i in 0 1 2; do
      dir=$etcd_dir/m$i
      etcd --name "m$i" --data-dir "$dir" \
        --listen-client-urls "http://127.0.0.1:${ports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${ports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${ports[$((3 + i))]}" \
        --initial-cluster "$init" --initial-cluster-state new --initial-cluster-token "$token" \
        --logger zap --log-level warn >"$tmp/etcd-m$i.log" 2>&1 &
      etcd_pids+=($!)
      pids+=($!)
      etcd_addrs+=("127.0.0.1:${ports[$i]}")
    done
    etcd_wait && return 0
    stop_pids "${etcd_pids[@]}"
    say "etcd cluster did not come up (attempt $attempt of 3)"
  done
  tail -n 5 "$tmp"/etcd-m*.log >&2
  die "could not start a 3-member etcd cluster"
}

# True once every member listens and the cluster answers health checks (30 s at most).
etcd_wait() {
  local i k endpoints
  endpoints=$(printf 'http://%s,' "${etcd_addrs[@]}")
  for i in $(seq 150); do
    for k in 0 1 2; do alive "${etcd_pids[$k]}" || return 1; done
    if listening "${etcd_pids[0]}" "${etcd_addrs[0]##*:}" &&
       listening "${etcd_pids[1]}" "${etcd_addrs[1]##*:}" &&
       listening "${etcd_pids[2]}" "${etcd_addrs[2]##*:}" &&
       etcdctl --endpoints="${endpoints%,}" --command-timeout=2s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# Prints one histogram of every member's /metrics as "count mean_ms p99_ms"
# (p99: upper bound of its bucket), summed over the members.
etcd_histogram() {
  local name=$1 a fd
  for a in "${etcd_addrs[@]}"; do
    exec {fd}<>"/dev/tcp/${a%:*}/${a##*:}" || continue
    printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$a" >&"$fd"
    timeout 5 cat <&"$fd" || true
    exec {fd}>&-
  done | awk -v n="$name" '
    index($0, n "_bucket{le=\"") == 1 {
      le = $0; sub(/.*le="/, "", le); sub(/".*/, "", le);
      if (le != "+Inf") { b[le + 0] += $2; les[le + 0] = 1 }
    }
    index($0, n "_sum ") == 1 { sum += $2 }
    index($0, n "_count ") == 1 { count += $2 }
    END {
      if (count == 0) { print "0 0 0"; exit }
      m = 0; for (l in les) k[++m] = l + 0;
      for (i = 2; i <= m; i++) { t = k[i]; for (j = i - 1; j >= 1 && k[j] > t; j--) k[j + 1] = k[j]; k[j + 1] = t }
      p99 = "inf"; for (i = 1; i <= m; i++) if (b[k[i]] >= 0.99 * count) { p99 = k[i] * 1000; break }
      printf "%d %.2f %s\n", count, sum / count * 1000, p99
    }'
}

# ---- Cloister: the single node, and clusters through `cloister up` -----------------
# Starts cloisterd over TLS as bench/run.sh does; sets single_pid, single_addr.
start_single() {
  local ready=$tmp/single.ready log=$tmp/single.log i port
  local args=(--listen 127.0.0.1:0 --http 127.0.0.1:0 --threads "$threads" --memory "$memory_mb"
              --state-dir "$tmp/single-state" --ready-file "$ready"
              --tls-cert "$tmp/server.crt" --tls-key "$tmp/server.key")
  "$cloisterd" "${args[@]}" >"$log" 2>&1 &
  single_pid=$!
  pids+=("$single_pid")
  for i in $(seq 200); do
    if [ -s "$ready" ]; then
      port=$(sed -n 's/.*"memcached" *: *"[^"]*:\([0-9][0-9]*\)".*/\1/p' "$ready")
      if [ -n "$port" ] && listening "$single_pid" "$port"; then
        single_addr=127.0.0.1:$port
        return 0
      fi
    fi
    alive "$single_pid" || break
    sleep 0.05
  done
  cat "$log" >&2
  die "cloisterd did not become ready: $cloisterd ${args[*]}"
}

# cluster_field DIR ca|cert|key|addrs|pids: one field of DIR/cluster.json
# (relative paths resolved against DIR).
cluster_field() {
  python3 - "$1/cluster.json" "$2" <<'EOF'
import json, os, sys
path, what = sys.argv[1], sys.argv[2]
c = json.load(open(path))
where = lambda p: os.path.join(os.path.dirname(path), p)
if what in ("ca", "cert", "key"):
    print(where(c[{"ca": "ca", "cert": "client_cert", "key": "client_key"}[what]]))
elif what == "addrs":
    print(" ".join(n["memcached"] for n in c["nodes"]))
else:
    print(" ".join(str(n["pid"]) for n in c["nodes"]))
EOF
}

# Starts a 3-node cluster in MODE; sets spec[MODE], its ycsb target.
start_cluster() {
  local mode=$1 dir=$tmp/cluster-$1 t a f v
  clusters+=("$dir")
  # shellcheck disable=SC2086  # BENCH_UP_ARGS is a word list on purpose
  if ! timeout 120 "$cloister" up --nodes 3 --dir "$dir" --consistency "$mode" $up_args \
       >"$tmp/up-$mode.log" 2>&1; then
    cat "$tmp/up-$mode.log" >&2
    die "'cloister up --nodes 3 --dir $dir --consistency $mode $up_args' failed"
  fi
  [ -s "$dir/cluster.json" ] || die "'cloister up' wrote no $dir/cluster.json"
  t="name=$mode"
  for f in ca cert key; do
    v=$(cluster_field "$dir" $f)
    [[ "$v" != *,* ]] || die "$dir/cluster.json: '$v' contains a comma, which ycsb --target cannot take"
    t+=",$f=$v"
  done
  for a in $(cluster_field "$dir" addrs); do t+=",addr=$a"; done
  [[ "$t" == *,addr=* ]] || die "$dir/cluster.json lists no nodes"
  spec[$mode]=$t
}

# ---- one ycsb invocation, every system ------------------------------------------------
# run_ycsb REP ORDER YCSB-ARGS...: ORDER is the systems in the order their
# slices come; appends the JSON lines, tagged with the repetition, to $out and
# keeps each system's line in LINE_<system>.
# CPU time (clock ticks, user + system) the processes PIDS have used so far.
cpu_ticks() {
  local t=0 p rest
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    rest=$(< "/proc/$p/stat") || continue
    rest=${rest##*) }                       # the fields after "(comm) "
    local -a f
    read -r -a f <<< "$rest"
    t=$((t + f[11] + f[12]))               # utime, stime (fields 14 and 15)
  done
  echo "$t"
}

run_ycsb() {
  local rep=$1 order=$2 line s
  shift 2
  # Server CPU used during the run, per system: with every system on the
  # same cores, CPU per operation is what bounds the ratios.
  declare -A cpu0=()
  for s in $order; do cpu0[$s]=$(cpu_ticks ${server_pids[$s]:-}); done
  local args=(--slice "$slice" --records "$records" --value-size "$value_size"
              --threads "$threads" --conns "$conns" --json)
  for s in $order; do args+=(--target "${spec[$s]}"); done
  "$ycsb" "${args[@]}" "$@" >"$tmp/ycsb.out" 2>"$tmp/ycsb.err" &
  local pid=$! rc=0
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  if [ "$rc" != 0 ]; then
    cat "$tmp/ycsb.err" >&2
    die "ycsb failed: $ycsb ${args[*]} $*"
  fi
  local hz cpu
  hz=$(getconf CLK_TCK)
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    s=$(field "$line" server)
    cpu=$(awk -v a="${cpu0[$s]:-0}" -v b="$(cpu_ticks ${server_pids[$s]:-})" -v hz="$hz" \
          'BEGIN { printf "%.2f", (b - a) / hz }')
    printf '{"type":"result","rep":%d,"order":"%s","server_cpu_s":%s,%s\n' "$rep" "$order" \
      "$cpu" "${line#\{}" >> "$out"
    printf -v "LINE_$s" '%s' "$line"
  done < "$tmp/ycsb.out"
}

field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<< "$1"; }
brief() { printf '%8.0f ops/s  p50 %8.1f us  p99 %8.1f us' \
            "$(field "$1" ops_per_sec)" "$(field "$1" p50_us)" "$(field "$1" p99_us)"; }

# ---- summary: medians, ratios, targets, chart ------------------------------------------
summarize() {
  local out=$1 png=$2 meta dat=$tmp/cluster.dat term
  meta=$(head -1 "$out")
  rm -f "$dat"
  awk -v dat="$dat" -v wls="$(field "$meta" workloads)" -v all="$all_systems" \
      -v dur="$(field "$meta" duration_s)" -v warm="$(field "$meta" warmup_s)" '
  function num(line, key,   s) {
    if (!match(line, "\"" key "\":[^,}]*")) return "";
    s = substr(line, RSTART, RLENGTH); sub(/^[^:]*:/, "", s); gsub(/"/, "", s);
    return s;
  }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ");
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t; }
    if (n == 0) return "";
    return (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) + 0;
  }
  # The median over repetitions of the per-run ratio of systems a and b (kind t or p).
  function ratio(w, a, b, kind,   x, n, R, l) {
    n = split(reps[w], R, " "); l = "";
    for (x = 1; x <= n; x++)
      if (((w, a, R[x], kind) in v) && ((w, b, R[x], kind) in v) && v[w, b, R[x], kind] > 0)
        l = l " " v[w, a, R[x], kind] / v[w, b, R[x], kind];
    return median(l);
  }
  # One ratio line; goal "" = no target for this workload.
  function check(w, a, b, kind, op, goal, what,   r) {
    r = ratio(w, a, b, kind);
    if (r == "")
      printf "  %-40s not measured (%s missing)\n", what, ((w, a) in have) ? b : a;
    else if (goal == "")
      printf "  %-40s %8.3fx\n", what, r;
    else
      printf "  %-40s %8.3fx  (target %s %gx)  %s\n", what, r, op, goal,
             (op == ">=" ? r >= goal : r <= goal) ? "met" : "MISSED";
  }
  /"type":"result"/ && /"phase":"run"/ {
    w = num($0, "workload"); s = num($0, "server"); r = num($0, "rep");
    have[w, s] = 1;
    tput[w, s] = tput[w, s] " " num($0, "ops_per_sec");
    p50[w, s] = p50[w, s] " " num($0, "p50_us");
    p99[w, s] = p99[w, s] " " num($0, "p99_us");
    v[w, s, r, "t"] = num($0, "ops_per_sec"); v[w, s, r, "p"] = num($0, "p99_us");
    # server CPU per operation: the run includes the warm-up, the ops do not
    if (num($0, "server_cpu_s") != "" && num($0, "ops") > 0)
      cpu[w, s] = cpu[w, s] " " num($0, "server_cpu_s") * 1e6 * dur / (dur + warm) / num($0, "ops");
    if (!((w, r) in seen)) { seen[w, r] = 1; reps[w] = reps[w] " " r; }
  }
  END {
    ns = split(all, S, " "); nw = split(wls, W, " ");
    printf "\n%-3s %-9s %12s %12s %12s %14s\n", "wl", "system", "ops/s", "p50 (us)", "p99 (us)",
           "server CPU/op";
    for (j = 1; j <= nw; j++) {
      x = (j - 1) * (ns + 1);
      for (i = 1; i <= ns; i++) {
        w = W[j]; s = S[i]; x++;
        if (!((w, s) in have)) { printf "%-3s %-9s %12s\n", w, s, "missing"; continue }
        c = "-";
        if ((w, s) in cpu) c = sprintf("%.1f", median(cpu[w, s]));
        printf "%-3s %-9s %12.0f %12.1f %12.1f %11s us\n", w, s, median(tput[w, s]),
               median(p50[w, s]), median(p99[w, s]), c;
        printf "%d\t%d\t%s\t%.1f\t%.1f\n", x, i, w, median(tput[w, s]), median(p99[w, s]) > dat;
      }
    }
    printf "\nRatios (medians over repetitions of the ratio within each interleaved run;\n";
    printf "targets are the issue'"'"'s, for YCSB-A):\n";
    for (j = 1; j <= nw; j++) {
      w = W[j]; a = w == "A";
      check(w, "strong", "etcd", "t", ">=", a ? 10 : "", w "  strong throughput / etcd");
      check(w, "strong", "etcd", "p", "<=", a ? 0.2 : "", w "  strong p99 / etcd p99");
      check(w, "strong", "single", "t", ">=", a ? 0.5 : "", w "  strong throughput / single node");
      check(w, "eventual", "single", "t", ">=", a ? 0.8 : "", w "  eventual throughput / single node");
      check(w, "single", "etcd", "t", "", "", w "  single node throughput / etcd");
      check(w, "single", "etcd", "p", "", "", w "  single node p99 / etcd p99");
    }
  }' "$out"
  local disk
  disk=$(grep '"type":"etcd_disk"' "$out" | tail -1)
  [ -z "$disk" ] || printf '\netcd disk (%s), all members, whole run: %s WAL fsyncs, mean %s ms, p99 <= %s ms;\n%s backend commits, mean %s ms, p99 <= %s ms\n' \
    "$(field "$disk" data_fs)" "$(field "$disk" wal_fsyncs)" "$(field "$disk" wal_fsync_mean_ms)" \
    "$(field "$disk" wal_fsync_p99_ms)" "$(field "$disk" backend_commits)" \
    "$(field "$disk" backend_commit_mean_ms)" "$(field "$disk" backend_commit_p99_ms)"
  local note
  note=$(field "$meta" cluster_note)
  [ -z "$note" ] || printf '\nThe Cloister cluster rows are missing: %s.\n' "$note"

  if [ ! -s "$dat" ]; then
    say "no run results in $out: no chart"
    return 0
  fi
  if ! command -v gnuplot >/dev/null; then
    say "gnuplot not installed (make deps-bench): no chart"
    return 0
  fi
  term="pngcairo size 1000,700 font 'sans,10'"
  gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || term="png size 1000,700"
  local xt="" j=0 w ns nw s t titles=""
  ns=$(wc -w <<< "$all_systems")
  nw=$(field "$meta" workloads | wc -w)
  for s in $all_systems; do
    case $s in
      strong) t="Cloister, 3 replicas, strong" ;;
      eventual) t="Cloister, 3 replicas, eventual" ;;
      single) t="Cloister, single node" ;;
      etcd) t="etcd $(field "$meta" etcd), 3 members" ;;
    esac
    grep -q "\"server\":\"$s\",\"phase\":\"run\"" "$out" || t+=" (not measured)"
    titles+="${titles:+, }\"$t\""
  done
  for w in $(field "$meta" workloads); do
    xt+="${xt:+, }\"YCSB-$w\" $(awk -v j=$j -v n="$ns" 'BEGIN { print j * (n + 1) + (n + 1) / 2 }')"
    j=$((j + 1))
  done
  if gnuplot 2>"$tmp/gnuplot.err" <<EOF
set terminal $term
set output '$png'
set datafile separator '\t'
set style fill solid 0.8 border -1
set boxwidth 0.9
set key above
set grid ytics
set logscale y
set xtics ($xt) nomirror
set xrange [0.4:$((nw * (ns + 1) - 1)).6]
array names = [$titles]
colors = "#1f77b4 #2ca02c #9467bd #7f7f7f"
set multiplot layout 2,1 title "$(field "$meta" records) x $(field "$meta" value_size) B records, zipfian 0.99, $(field "$meta" threads)x$(field "$meta" conns_per_thread) conns per system, medians of $(field "$meta" reps) x $(field "$meta" duration_s)s (log scales)"
set ylabel 'throughput (ops/s)'
plot for [s=1:4] '$dat' using (\$2 == s ? \$1 : NaN):4 with boxes lc rgb word(colors, s) title names[s], \
     '' using 1:4:(sprintf('%.0f', \$4)) with labels offset 0,0.6 font ',8' notitle
set ylabel 'p99 latency (us)'
plot for [s=1:4] '$dat' using (\$2 == s ? \$1 : NaN):5 with boxes lc rgb word(colors, s) notitle, \
     '' using 1:5:(sprintf('%.0f', \$5)) with labels offset 0,0.6 font ',8' notitle
unset multiplot
EOF
  then
    cp "$png" "$results/cluster.png"
    say "chart: $png (and $results/cluster.png)"
  else
    cat "$tmp/gnuplot.err" >&2
    say "gnuplot failed; no chart"
  fi
}

if [ -n "$report" ]; then
  [ -s "$report" ] || die "no results file '$report'"
  summarize "$report" "${report%.jsonl}.png"
  exit 0
fi

# ---- checks -------------------------------------------------------------------------
build=$(cd "$build" 2>/dev/null && pwd) || die "no build directory '$1'"
ycsb=$build/bench/ycsb
cloisterd=$build/cloisterd
cloister=$build/cloister
[ -x "$ycsb" ] || die "$ycsb is missing; build it: cmake --build $build --target ycsb"
for s in $systems; do
  [[ " $all_systems " == *" $s "* ]] || die "BENCH_SYSTEMS: unknown system '$s' (known: $all_systems)"
done
want() { [[ " $systems " == *" $1 "* ]]; }
command -v openssl >/dev/null || die "openssl is not installed"
command -v ss >/dev/null || die "ss (iproute2) is not installed"
if want etcd; then
  if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    die "etcd is not installed (make deps-bench: etcd-server, etcd-client)"
  fi
fi
if want single; then
  [ -x "$cloisterd" ] || die "$cloisterd is missing; build it (cmake --build $build --target cloisterd)"
fi
cluster_note=""
if want strong || want eventual; then
  if [ ! -x "$cloister" ] || ! "$cloister" up --help >/dev/null 2>&1; then
    cluster_note="'$cloister up' is not available yet: the 3-replica strong and eventual rows were not measured"
    say "NOTE: $cluster_note; running the other systems only"
    systems=$(tr ' ' '\n' <<< "$systems" | grep -vx -e strong -e eventual | xargs)
  else
    command -v python3 >/dev/null || die "python3 is needed to read cluster.json"
  fi
fi
[ -n "$systems" ] || die "nothing to measure"

# ---- start everything -------------------------------------------------------------------
mkdir -p "$results"
stamp=$(date +%Y%m%d-%H%M%S)
out=$results/cluster-$stamp.jsonl
: > "$out"
declare -A spec server_pids
if want single; then
  make_certs
  start_single
  spec[single]="name=single,ca=$tmp/ca.crt,addr=$single_addr"
  server_pids[single]=$single_pid
  say "single node: cloisterd pid $single_pid at $single_addr (TLS, $threads threads)"
fi
if want etcd; then
  start_etcd
  spec[etcd]="name=etcd,proto=etcd$(printf ',addr=%s' "${etcd_addrs[@]}")"
  server_pids[etcd]="${etcd_pids[*]}"
  say "etcd: members pids ${etcd_pids[*]} at ${etcd_addrs[*]}, data in $etcd_dir"
fi
for mode in strong eventual; do
  want "$mode" || continue
  start_cluster "$mode"
  server_pids[$mode]=$(cluster_field "$tmp/cluster-$mode" pids)
  say "$mode: Cloister cluster at $(cluster_field "$tmp/cluster-$mode" addrs)," \
      "pids $(cluster_field "$tmp/cluster-$mode" pids)"
done

etcd_version=$(etcd --version 2>/dev/null | sed -n '1s/.*: //p')
etcd_fs="-"
want etcd && etcd_fs=$(df -PT "$etcd_dir" | awk 'NR == 2 { print $2 " on " $1 }')
printf '{"type":"meta","time":"%s","machine":"%s","cpus":%s,"cpu":"%s","etcd":"%s","etcd_data_fs":"%s","cloister_commit":"%s","systems":"%s","cluster_note":"%s","workloads":"%s","duration_s":%s,"warmup_s":%s,"slice_s":%s,"reps":%s,"records":%s,"value_size":%s,"threads":%s,"conns_per_thread":%s,"settle_s":%s}\n' \
  "$(date -u +%FT%TZ)" "$(uname -srm)" "$(nproc)" \
  "$(sed -n '/^model name/{s/^model name[[:space:]]*: //p;q}' /proc/cpuinfo)" "$etcd_version" "$etcd_fs" \
  "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)" "$systems" "$cluster_note" \
  "$workloads" "$duration" "$warmup" "$slice" "$reps" "$records" "$value_size" "$threads" "$conns" \
  "$settle" >> "$out"

ns=$(wc -w <<< "$systems") nw=$(wc -w <<< "$workloads")
say "systems [$systems], workloads [$workloads], $reps x ${duration}s (+${warmup}s warm-up) each, ${slice}s slices"
say "$records records x $value_size B; client $threads threads x $conns conns per system; $(nproc) CPUs shared"
minutes=$(awk -v r="$reps" -v w="$nw" -v s="$ns" -v d="$duration" -v u="$warmup" \
  'BEGIN { print int(r * w * s * (d + u) / 60) + 1 }')
say "about $minutes min after loading; results in $out"

# ---- load, then the interleaved runs ---------------------------------------------------
run_ycsb 0 "$systems" --load
for s in $systems; do
  line_var=LINE_$s
  say "loaded $records records into $(printf '%-8s' "$s") at $(field "${!line_var}" ops_per_sec) ops/s"
done
want eventual && { say "waiting ${settle}s for the eventual cluster to converge"; sleep "$settle"; }
if want etcd; then
  read -r n mean p99 <<< "$(etcd_histogram etcd_disk_wal_fsync_duration_seconds)"
  say "etcd WAL fsync while loading: $n fsyncs, mean $mean ms, p99 <= $p99 ms"
fi

read -r -a sys_list <<< "$systems"
for rep in $(seq "$reps"); do
  i=0
  for wl in $workloads; do
    # Rotate the order of the slices across workloads and repetitions, so
    # that no system always follows the same one.
    k=$((rep - 1 + i))
    order="${sys_list[*]:$((k % ns))} ${sys_list[*]:0:$((k % ns))}"
    order=$(xargs <<< "$order")
    i=$((i + 1))
    say "rep $rep/$reps  workload $wl  order [$order] (${duration}s each, ${slice}s slices) ..."
    run_ycsb "$rep" "$order" --workload "$wl" --duration "$duration" --warmup "$warmup" \
      --seed $((seed + rep - 1))
    for s in $systems; do
      line_var=LINE_$s
      say "rep $rep/$reps  workload $wl  $(printf '%-9s' "$s") $(brief "${!line_var}")"
    done
  done
done

if want etcd; then
  read -r n mean p99 <<< "$(etcd_histogram etcd_disk_wal_fsync_duration_seconds)"
  read -r bn bmean bp99 <<< "$(etcd_histogram etcd_disk_backend_commit_duration_seconds)"
  printf '{"type":"etcd_disk","data_fs":"%s","wal_fsyncs":%s,"wal_fsync_mean_ms":%s,"wal_fsync_p99_ms":"%s","backend_commits":%s,"backend_commit_mean_ms":%s,"backend_commit_p99_ms":"%s"}\n' \
    "$etcd_fs" "$n" "$mean" "$p99" "$bn" "$bmean" "$bp99" >> "$out"
  say "etcd disk ($etcd_fs), all members, whole run: $n WAL fsyncs, mean $mean ms, p99 <= $p99 ms;" \
      "$bn backend commits, mean $bmean ms, p99 <= $bp99 ms"
fi

summarize "$out" "$results/cluster-$stamp.png"
say "results: $out"
