#!/usr/bin/env bash
# bench/run.sh - the store benchmark: Cloister (cloisterd) against Debian's
# memcached 1.6, YCSB workloads A, B, C and F with bench/ycsb, both over TLS
# and both in plaintext, in the same run.  `make bench` calls it as
#     bench/run.sh BUILD_DIR
#
# For each mode it starts both servers (same thread count, same memory
# limit, same certificate) and loads the same records into each.  Then, per
# workload and repetition, one ycsb process drives both servers in turn, in
# time slices (BENCH_SLICE, 0.5 s), so both see the same machine noise, the
# same client and the same request stream; which server goes first
# alternates.  It reports per server the median over BENCH_REPS repetitions,
# and the Cloister/memcached ratios as the median of the per-repetition
# ratios.  Any verification failure, miss or error reported by ycsb stops the
# run with a non-zero status.  Servers are stopped by PID on every exit path.
#
# Output: a table on stdout, progress on stderr, JSON lines in
# bench/results/ycsb-<timestamp>.jsonl, a chart in bench/results/ycsb-<timestamp>.png,
# copied to bench/results/ycsb.png.
#
# Knobs (environment): BENCH_DURATION measured seconds per server and run
# (20), BENCH_WARMUP (2), BENCH_REPS (3), BENCH_SLICE (0.5), BENCH_MODES
# ("tls plain"), BENCH_WORKLOADS ("A B C F"), BENCH_RECORDS (100000),
# BENCH_THREADS (2: server threads and client threads), BENCH_CONNS (25 per
# client thread and server), BENCH_SEED (1).  BENCH_FAKE_CLOISTER=1 runs a
# second memcached in cloisterd's place: a self-test of this script, whose
# ratios should be close to 1.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-}
report=${BENCH_REPORT:-}
if [ -z "$build" ] && [ -z "$report" ]; then
  echo "usage: bench/run.sh BUILD_DIR             (e.g. bench/run.sh build)" >&2
  echo "       BENCH_REPORT=FILE.jsonl bench/run.sh   (table and chart of an earlier run)" >&2
  exit 2
fi

duration=${BENCH_DURATION:-20}
warmup=${BENCH_WARMUP:-2}
reps=${BENCH_REPS:-3}
modes=${BENCH_MODES:-tls plain}
workloads=${BENCH_WORKLOADS:-A B C F}
records=${BENCH_RECORDS:-100000}
threads=${BENCH_THREADS:-2}
conns=${BENCH_CONNS:-25}
seed=${BENCH_SEED:-1}
slice=${BENCH_SLICE:-0.5}
fake=${BENCH_FAKE_CLOISTER:-0}
value_size=1000
memory_mb=1024

results=$root/bench/results

say() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# ---- servers: started here, stopped by PID on exit ----------------------------
tmp=$(mktemp -d /tmp/cloister-bench.XXXXXX)
pids=()
# pids: every process this script started and has not reaped yet.
# stop_pid stops one (TERM, then KILL after 5 s) and forgets it, so that a
# recycled PID is never signalled later.
forget_pid() {
  local p keep=()
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}
stop_pid() {
  local pid=$1 i
  forget_pid "$pid"
  kill "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  for i in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  while [ ${#pids[@]} -gt 0 ]; do stop_pid "${pids[0]}"; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A throwaway CA and a server certificate for 127.0.0.1, shared by both servers.
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

# True once PID listens on 127.0.0.1:PORT (never mistake someone else's server for ours).
listening() { ss -Hltnp "sport = :$2" 2>/dev/null | grep -q "pid=$1,"; }

# Starts memcached for MODE on a free port; sets MC_PID and MC_PORT.
start_memcached() {
  local mode=$1 tag=$2 attempt port i
  local args=(-l 127.0.0.1 -t "$threads" -m "$memory_mb" -U 0 -c 4096)
  [ "$(id -u)" = 0 ] && args+=(-u root)
  [ "$mode" = tls ] && args+=(-Z -o "ssl_chain_cert=$tmp/server.crt,ssl_key=$tmp/server.key")
  for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    ss -Hltn "sport = :$port" | grep -q . && continue
    memcached "${args[@]}" -p "$port" >"$tmp/$tag-$mode.log" 2>&1 &
    MC_PID=$!
    pids+=("$MC_PID")
    for i in $(seq 100); do
      listening "$MC_PID" "$port" && { MC_PORT=$port; return 0; }
      kill -0 "$MC_PID" 2>/dev/null || break
      sleep 0.05
    done
    stop_pid "$MC_PID"
  done
  cat "$tmp/$tag-$mode.log" >&2
  die "could not start memcached ($mode)"
}

# Starts cloisterd for MODE; sets CL_PID and CL_PORT from its ready file.
start_cloister() {
  local mode=$1
  if [ "$fake" = 1 ]; then
    start_memcached "$mode" fake-cloister
    CL_PID=$MC_PID CL_PORT=$MC_PORT
    return 0
  fi
  local ready=$tmp/cloisterd-$mode.ready log=$tmp/cloisterd-$mode.log i
  local args=(--listen 127.0.0.1:0 --threads "$threads" --memory "$memory_mb" --ready-file "$ready")
  if [ "$mode" = tls ]; then
    args+=(--tls-cert "$tmp/server.crt" --tls-key "$tmp/server.key")
  else
    args+=(--plaintext)
  fi
  "$cloisterd" "${args[@]}" >"$log" 2>&1 &
  CL_PID=$!
  pids+=("$CL_PID")
  CL_PORT=
  for i in $(seq 200); do
    if [ -s "$ready" ]; then
      CL_PORT=$(sed -n 's/.*"memcached" *: *"[^"]*:\([0-9][0-9]*\)".*/\1/p' "$ready")
      [ -n "$CL_PORT" ] && listening "$CL_PID" "$CL_PORT" && return 0
    fi
    kill -0 "$CL_PID" 2>/dev/null || break
    sleep 0.05
  done
  cat "$log" >&2
  if kill -0 "$CL_PID" 2>/dev/null; then
    die "cloisterd ($mode) did not report a listening port in $ready within 10 s"
  fi
  die "cloisterd ($mode) exited before it was ready: $cloisterd ${args[*]}"
}

# ---- one ycsb invocation, both servers ----------------------------------------------
# run_ycsb MODE REP FIRST YCSB-ARGS...: runs ycsb against both servers, FIRST
# (memcached or cloister) served first in each round of slices; appends its
# JSON lines, tagged with mode and repetition, to $out and keeps each
# server's line in LINE_memcached / LINE_cloister.  Stops everything if ycsb
# reports a failure.
run_ycsb() {
  local mode=$1 rep=$2 first=$3 line lines server
  shift 3
  local second=cloister
  [ "$first" = cloister ] && second=memcached
  local ports=(--port "$(port_of "$first")" --name "$first" --port "$(port_of "$second")" --name "$second")
  local args=(--host 127.0.0.1 "${ports[@]}" --slice "$slice" --records "$records"
              --value-size "$value_size" --threads "$threads" --conns "$conns" --json)
  [ "$mode" = tls ] && args+=(--tls --ca "$tmp/ca.crt")
  # In the background, so that a signal to this script is handled at once
  # (bash runs traps only between foreground commands) and stops ycsb too.
  "$ycsb" "${args[@]}" "$@" >"$tmp/ycsb.out" 2>"$tmp/ycsb.err" &
  local pid=$! rc=0
  pids+=("$pid")
  wait "$pid" || rc=$?
  forget_pid "$pid"
  if [ "$rc" != 0 ]; then
    cat "$tmp/ycsb.err" >&2
    die "ycsb failed ($mode): $ycsb ${args[*]} $*"
  fi
  lines=$(cat "$tmp/ycsb.out")
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    printf '{"type":"result","mode":"%s","rep":%d,%s\n' "$mode" "$rep" "${line#\{}" >> "$out"
    server=$(field "$line" server)
    printf -v "LINE_$server" '%s' "$line"
  done <<< "$lines"
}

port_of() { if [ "$1" = memcached ]; then echo "$port_memcached"; else echo "$port_cloister"; fi; }
field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<< "$1"; }
brief() { printf '%8.0f ops/s  p50 %7.1f us  p99 %7.1f us' \
            "$(field "$1" ops_per_sec)" "$(field "$1" p50_us)" "$(field "$1" p99_us)"; }

# ---- summary: medians, ratios, table, chart -------------------------------------------
# summarize JSONL PNG: prints the table of a run's results and draws its chart.
summarize() {
  local out=$1 png=$2 meta term
  meta=$(head -1 "$out")
  local records value_size threads conns reps duration
  records=$(field "$meta" records) value_size=$(field "$meta" value_size)
  threads=$(field "$meta" threads) conns=$(field "$meta" conns_per_thread)
  reps=$(field "$meta" reps) duration=$(field "$meta" duration_s)
  local dat=$tmp/ycsb.dat
  rm -f "$dat"
  awk -v dat="$dat" -v modes="$modes" -v wls="$workloads" '
  function num(line, key,   s) {
    if (!match(line, "\"" key "\":[^,}]*")) return "";
    s = substr(line, RSTART, RLENGTH); sub(/^[^:]*:/, "", s); gsub(/"/, "", s);
    return s;
  }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ");
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t; }
    if (n == 0) return 0;
    return (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) + 0;
  }
  /"type":"result"/ && /"phase":"run"/ {
    k = num($0, "mode") SUBSEP num($0, "workload"); s = num($0, "server"); r = num($0, "rep");
    tput[k, s] = tput[k, s] " " num($0, "ops_per_sec");
    p50[k, s] = p50[k, s] " " num($0, "p50_us");
    p99[k, s] = p99[k, s] " " num($0, "p99_us");
    v[k, s, r, "t"] = num($0, "ops_per_sec"); v[k, s, r, "p"] = num($0, "p99_us");
    if (!((k, r) in seen)) { seen[k, r] = 1; reps[k] = reps[k] " " r; }
  }
  END {
    printf "\n%-5s %-2s %12s %12s %7s %19s %19s %8s\n", "mode", "wl", "memcached", "cloister",
           "ratio", "memcached p50/p99", "cloister p50/p99", "p99";
    printf "%-5s %-2s %12s %12s %7s %19s %19s %8s\n", "", "", "ops/s", "ops/s", "cl/mc",
           "(us)", "(us)", "cl/mc";
    nm = split(modes, M, " "); nw = split(wls, W, " ");
    for (i = 1; i <= nm; i++) for (j = 1; j <= nw; j++) {
      k = M[i] SUBSEP W[j];
      if (!((k, "memcached") in tput)) continue;
      tr = ""; pr = ""; n = split(reps[k], R, " ");
      for (x = 1; x <= n; x++) {
        r = R[x]; mt = v[k, "memcached", r, "t"] + 0; mp = v[k, "memcached", r, "p"] + 0;
        if (mt > 0) tr = tr " " v[k, "cloister", r, "t"] / mt;
        if (mp > 0) pr = pr " " v[k, "cloister", r, "p"] / mp;
      }
      mt = median(tput[k, "memcached"]); ct = median(tput[k, "cloister"]);
      ratio = median(tr); p99r = median(pr);
      printf "%-5s %-2s %12.0f %12.0f %6.2fx %9.1f/%-9.1f %9.1f/%-9.1f %7.2fx\n", M[i], W[j], mt, ct,
             ratio, median(p50[k, "memcached"]), median(p99[k, "memcached"]),
             median(p50[k, "cloister"]), median(p99[k, "cloister"]), p99r;
      printf "%s\t%.0f\t%.0f\t%.1f\t%.1f\t%.3f\n", W[j] "/" M[i], mt, ct,
             median(p99[k, "memcached"]), median(p99[k, "cloister"]), ratio > dat;
      if (W[j] == "A" || W[j] == "C") {
        goal = M[i] == "tls" ? 1.0 : 0.9;
        t = sprintf("  %s %s: throughput %.2fx (target >= %.1fx) %s, p99 %.2fx (target <= 1.00x) %s",
                    W[j], M[i], ratio, goal, ratio >= goal ? "met" : "MISSED",
                    p99r, p99r <= 1.0 ? "met" : "MISSED");
        targets = targets t "\n";
      }
    }
    if (targets != "") printf "\nTargets (ratios: medians over repetitions of interleaved runs):\n%s", targets;
  }' "$out"

  if [ ! -s "$dat" ]; then
    say "no run results in $out: no chart"
  elif ! command -v gnuplot >/dev/null; then
    say "gnuplot not installed (make deps-bench): no chart"
  else
    term="pngcairo size 1000,700 font 'sans,10'"
    gnuplot -e "set terminal pngcairo" >/dev/null 2>&1 || term="png size 1000,700"
    if gnuplot 2>"$tmp/gnuplot.err" <<EOF
set terminal $term
set output '$png'
set datafile separator '\t'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set grid ytics
set xtics nomirror
set multiplot layout 2,1 title "YCSB, $records x ${value_size} B records, zipfian 0.99, ${threads} server threads, ${threads}x${conns} client conns, medians of $reps x ${duration}s"
set ylabel 'throughput (ops/s)'
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
plot '$dat' using 2:xtic(1) title 'memcached 1.6' lc rgb '#7f7f7f', \
     '' using 3 title 'Cloister' lc rgb '#1f77b4', \
     '' using 0:(\$3):(sprintf('%.2fx', \$6)) with labels offset 3,0.7 notitle
set ylabel 'p99 latency (us)'
plot '$dat' using 4:xtic(1) title 'memcached 1.6' lc rgb '#7f7f7f', \
     '' using 5 title 'Cloister' lc rgb '#1f77b4'
unset multiplot
EOF
    then
      cp "$png" "$results/ycsb.png"
      say "chart: $png (and $results/ycsb.png)"
    else
      cat "$tmp/gnuplot.err" >&2
      say "gnuplot failed; no chart"
    fi
  fi
}

if [ -n "$report" ]; then
  [ -s "$report" ] || die "no results file '$report'"
  summarize "$report" "${report%.jsonl}.png"
  exit 0
fi

build=$(cd "$build" 2>/dev/null && pwd) || die "no build directory '$1'"
ycsb=$build/bench/ycsb
cloisterd=$build/cloisterd
[ -x "$ycsb" ] || die "$ycsb is missing; build it: cmake --build $build --target ycsb"
if [ "$fake" != 1 ] && [ ! -x "$cloisterd" ]; then
  die "$cloisterd is missing; build it first (make build, or cmake --build $build --target cloisterd)"
fi
command -v memcached >/dev/null || die "memcached is not installed (make deps-bench)"
command -v openssl >/dev/null || die "openssl is not installed"
command -v ss >/dev/null || die "ss (iproute2) is not installed"

# ---- the run ------------------------------------------------------------------------
mkdir -p "$results"
stamp=$(date +%Y%m%d-%H%M%S)
out=$results/ycsb-$stamp.jsonl
: > "$out"
make_certs

peer_version=$(memcached -V 2>/dev/null | head -1)
cl_name=cloisterd
[ "$fake" = 1 ] && cl_name="memcached (BENCH_FAKE_CLOISTER)"
printf '{"type":"meta","time":"%s","machine":"%s","cpus":%s,"cpu":"%s","peer":"%s","cloister":"%s","duration_s":%s,"warmup_s":%s,"slice_s":%s,"reps":%s,"records":%s,"value_size":%s,"threads":%s,"conns_per_thread":%s,"memory_mb":%s}\n' \
  "$(date -u +%FT%TZ)" "$(uname -srm)" "$(nproc)" \
  "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" "$peer_version" "$cl_name" \
  "$duration" "$warmup" "$slice" "$reps" "$records" "$value_size" "$threads" "$conns" "$memory_mb" >> "$out"

nw=$(wc -w <<< "$workloads")
say "$peer_version vs $cl_name: modes [$modes], workloads [$workloads], $reps x ${duration}s (+${warmup}s warm-up) each,"
say "$records records x $value_size B, $threads server threads, client $threads threads x $conns conns, $(nproc) CPUs shared"
say "about $(( $(wc -w <<< "$modes") * reps * nw * 2 * (duration + warmup) / 60 + 1 )) min; results in $out"

for mode in $modes; do
  start_memcached "$mode" memcached
  pid_memcached=$MC_PID port_memcached=$MC_PORT
  start_cloister "$mode"
  pid_cloister=$CL_PID port_cloister=$CL_PORT
  say "[$mode] memcached pid $pid_memcached port $port_memcached, $cl_name pid $pid_cloister port $port_cloister"
  run_ycsb "$mode" 0 memcached --load
  say "[$mode] loaded $records records: memcached $(field "$LINE_memcached" ops_per_sec) ops/s," \
      "cloister $(field "$LINE_cloister" ops_per_sec) ops/s"
  for rep in $(seq "$reps"); do
    i=0
    for wl in $workloads; do
      i=$((i + 1))
      # Alternate who is served first, across workloads and repetitions.
      if [ $(((rep + i) % 2)) = 0 ]; then first=memcached; else first=cloister; fi
      say "[$mode] rep $rep/$reps  workload $wl  (${duration}s each, in ${slice}s slices) ..."
      run_ycsb "$mode" "$rep" "$first" --workload "$wl" \
        --duration "$duration" --warmup "$warmup" --seed $((seed + rep - 1))
      for server in memcached cloister; do
        line_var=LINE_$server
        say "[$mode] rep $rep/$reps  workload $wl  $(printf '%-9s' "$server") $(brief "${!line_var}")"
      done
    done
  done
  stop_pid "$pid_memcached"
  stop_pid "$pid_cloister"
done


summarize "$out" "$results/ycsb-$stamp.png"
say "results: $out"
