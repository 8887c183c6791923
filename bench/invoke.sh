#!/usr/bin/env bash
# bench/invoke.sh - the invocation benchmark (issue 3, item 8 except
# compute), one command:
#     bench/invoke.sh BUILD_DIR          (e.g. bench/invoke.sh build)
#
# 1. Latency in process: BUILD_DIR/bench/invoke_bench (bench/invoke/
#    invoke_bench.c) links the runtime and times warm calls, instances
#    restored from the memory template, rt_sandbox_call, rt_invoke_wait
#    (from main: on an executor; from a pthread: inline), and deploy +
#    first call with a fresh state dir vs a cached one.
# 2. Memory: the same tool makes INVOKE_INSTANCES (1000) instances of 10
#    modules (hello and 9 variants of examples/hello.c, built here with
#    clang-14 --target=wasm32-wasi: different bytes, so different code and
#    templates), calls each once, resets it and reads smaps_rollup.
# 3. HTTPS: wrk (--latency, POST, same settings) against cloisterd's
#    gateway invoking hello (reply "Hello, world!\n") and against nginx
#    returning the same 14 bytes, TLS 1.3, same certificate, same number
#    of server threads/worker processes (INVOKE_THREADS, 2).  nginx runs
#    with a private config in a temp dir, access log off (cloisterd logs
#    no requests either), error log in the temp dir.
#
# Each server and process started here is stopped by PID on every exit
# path.  Output: a table on stdout, JSON lines in
# bench/results/invoke-<timestamp>.jsonl.  Exits non-zero when a step fails.
# Knobs: INVOKE_ITERS (10000), INVOKE_DEPLOYS (3), INVOKE_INSTANCES (1000),
# INVOKE_DURATION (10s), INVOKE_CONNS (50), INVOKE_WRK_THREADS (2),
# INVOKE_THREADS (2).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-}
if [ -z "$build" ]; then
  echo "usage: bench/invoke.sh BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$build" && pwd)
iters=${INVOKE_ITERS:-10000}
deploys=${INVOKE_DEPLOYS:-3}
instances=${INVOKE_INSTANCES:-1000}
duration=${INVOKE_DURATION:-10s}
conns=${INVOKE_CONNS:-50}
wrk_threads=${INVOKE_WRK_THREADS:-2}
threads=${INVOKE_THREADS:-2}

for f in "$build/bench/invoke_bench" "$build/cloisterd" "$build/examples/hello.wasm"; do
  [ -e "$f" ] || { echo "invoke.sh: missing $f (build the invoke_bench, cloisterd and example targets)" >&2; exit 1; }
done
for t in wrk nginx clang-14 curl python3 openssl; do
  command -v "$t" >/dev/null || { echo "invoke.sh: $t not found (scripts/install-deps.sh bench)" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/cloister-invoke-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ts=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$root/bench/results"
out="$root/bench/results/invoke-$ts.jsonl"
: > "$out"
log() { echo "invoke.sh: $*" >&2; }

# ---- 1 + 2: in process --------------------------------------------------------
log "building 9 variants of hello"
variants=()
for i in 1 2 3 4 5 6 7 8 9; do
  sed "s/Hello, %s!/Hello, %s! (v$i)/" "$root/examples/hello.c" > "$tmp/hello$i.c"
  clang-14 --target=wasm32-wasi -O2 -mexec-model=reactor -I"$root/include" \
    -o "$tmp/hello$i.wasm" "$tmp/hello$i.c"
  variants+=(--variant "$tmp/hello$i.wasm")
done
log "in-process latency and memory ($iters iterations, $instances instances, $deploys fresh deploys)"
"$build/bench/invoke_bench" --hello "$build/examples/hello.wasm" "${variants[@]}" \
  --state "$tmp/inproc" --iters "$iters" --deploys "$deploys" --instances "$instances" \
  2> "$tmp/invoke_bench.log" >> "$out" || { cat "$tmp/invoke_bench.log" >&2; exit 1; }

# ---- 3: HTTPS ------------------------------------------------------------------
"$root/scripts/gen-certs.sh" "$tmp/certs"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "starting cloisterd"
"$build/cloisterd" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --tls-cert "$tmp/certs/server.crt" --tls-key "$tmp/certs/server.key" \
  --threads "$threads" --fn-threads "$threads" --state-dir "$tmp/state" \
  --ready-file "$tmp/ready.json" --log-level warn 2> "$tmp/cloisterd.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/ready.json" ] && break; sleep 0.1; done
[ -s "$tmp/ready.json" ] || { cat "$tmp/cloisterd.log" >&2; log "cloisterd did not start"; exit 1; }
chttp=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["http"])' "$tmp/ready.json")
chttp=${chttp##*:}
curl -sS --fail --cacert "$tmp/certs/ca.crt" -X POST --data-binary @"$build/examples/hello.wasm" \
  "https://127.0.0.1:$chttp/system/functions?name=hello" > "$tmp/deploy.out" \
  || { cat "$tmp/deploy.out" "$tmp/cloisterd.log" >&2; log "deploy failed"; exit 1; }
reply=$(curl -sS --fail --cacert "$tmp/certs/ca.crt" -X POST --data-binary '' "https://127.0.0.1:$chttp/function/hello")
[ "$reply" = "Hello, world!" ] || { log "cloisterd replied '$reply'"; exit 1; }

log "starting nginx"
nport=$(free_port)
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx/nginx.conf" <<EOF
daemon off;
worker_processes $threads;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$nport ssl;
    ssl_certificate $tmp/certs/server.crt;
    ssl_certificate_key $tmp/certs/server.key;
    ssl_protocols TLSv1.3;
    default_type text/plain;
    location / { return 200 "Hello, world!\n"; }
  }
}
EOF
nginx -p "$tmp/nginx" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" &
pids+=($!)
for _ in $(seq 50); do
  curl -s --cacert "$tmp/certs/ca.crt" -o /dev/null "https://127.0.0.1:$nport/" && break; sleep 0.1
done
reply=$(curl -sS --fail --cacert "$tmp/certs/ca.crt" -X POST --data-binary '' "https://127.0.0.1:$nport/")
[ "$reply" = "Hello, world!" ] || { cat "$tmp/nginx/error.log" >&2; log "nginx replied '$reply'"; exit 1; }

cat > "$tmp/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Length"] = "0"
EOF
# wrk SERVER URL: runs wrk, appends a JSON line.
run_wrk() {
  log "wrk $1: -t$wrk_threads -c$conns -d$duration"
  wrk -t"$wrk_threads" -c"$conns" -d"$duration" --latency -s "$tmp/post.lua" "$2" > "$tmp/wrk-$1.txt" 2>&1 \
    || { cat "$tmp/wrk-$1.txt" >&2; exit 1; }
  python3 - "$1" "$tmp/wrk-$1.txt" "$wrk_threads" "$conns" "$duration" >> "$out" <<'EOF'
import json, re, sys
server, path, t, c, d = sys.argv[1:]
text = open(path).read()
def us(v):
    m = re.match(r"([\d.]+)(us|ms|s)$", v)
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]
lat = {p: us(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
reqs = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errs = re.search(r"Socket errors: (.*)", text)
print(json.dumps({"bench": "invoke", "metric": "https_hello", "server": server,
                  "threads": int(t), "conns": int(c), "duration": d, "requests": reqs,
                  "rps": rps, "p50_us": lat.get("50"), "p99_us": lat.get("99"),
                  "non2xx": int(non2xx.group(1)) if non2xx else 0,
                  "socket_errors": errs.group(1) if errs else ""}))
EOF
}
run_wrk cloister "https://127.0.0.1:$chttp/function/hello"
run_wrk nginx "https://127.0.0.1:$nport/"

# ---- table ---------------------------------------------------------------------
python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["metric"] + ("/" + r["server"] if "server" in r else ""): r for r in rows}
def lat(name, label, target=None):
    r = by.get(name)
    if r:
        t = ""
        if target:
            t = "  target p99 < %g us: %s" % (target, "MET" if r["p99_us"] < target else "MISSED")
        print("  %-44s p50 %10.1f us  p99 %10.1f us  (n=%d)%s" % (label, r["p50_us"], r["p99_us"], r["n"], t))
print("Invocation latency, in process (hello.wasm)")
lat("warm_call", "warm call (existing instance)")
lat("reset", "reset instance to template")
lat("reset_call", "reset + first call", 100)
lat("create", "new instance from template (new slot)")
lat("create_call", "new instance from template + first call", 100)
lat("sandbox_call", "rt_sandbox_call (idle instance, call, restore)")
lat("invoke_wait", "rt_invoke_wait (executor thread)")
lat("invoke_inline", "rt_invoke_wait inline (caller's thread)")
lat("deploy_fresh", "deploy + first call, fresh state (wasm2c+cc)")
lat("deploy_cached", "deploy + first call, cached code")
lat("first_call_after_fresh_deploy", "first call after a fresh deploy")
lat("first_call_after_cached_deploy", "first call after a cached deploy")
m = by.get("idle_instance_rss")
if m:
    print("Memory: %d instances of %d functions" % (m["instances"], m["functions"]))
    print("  idle (called once, reset)     RSS %7.2f KiB/instance  PSS %7.2f KiB/instance  target < 100 KiB: %s"
          % (m["rss_kib_per_instance"], m["pss_kib_per_instance"],
             "MET" if m["rss_kib_per_instance"] < 100 else "MISSED"))
    print("  just after its call (dirty)   RSS %7.2f KiB/instance  PSS %7.2f KiB/instance"
          % (m["after_call_rss_kib_per_instance"], m["after_call_pss_kib_per_instance"]))
c, n = by.get("https_hello/cloister"), by.get("https_hello/nginx")
if c and n:
    print("HTTPS hello, wrk -t%d -c%d -d%s, POST, TLS 1.3" % (c["threads"], c["conns"], c["duration"]))
    for r in (c, n):
        print("  %-9s %10.0f req/s  p50 %8.0f us  p99 %8.0f us  non-2xx %d  %s"
              % (r["server"], r["rps"], r["p50_us"], r["p99_us"], r["non2xx"], r["socket_errors"]))
    ratio, p99r = c["rps"] / n["rps"], c["p99_us"] / n["p99_us"]
    print("  cloister/nginx throughput %.2fx (target >= 0.5x: %s), p99 %.2fx (target < 2x: %s)"
          % (ratio, "MET" if ratio >= 0.5 else "MISSED", p99r, "MET" if p99r < 2 else "MISSED"))
    print(json.dumps({"bench": "invoke", "metric": "https_ratio", "throughput_ratio": ratio,
                      "p99_ratio": p99r}), file=open(sys.argv[1], "a"))
print("results: " + sys.argv[1])
EOF
bad=$(python3 -c 'import json,sys; print(sum(json.loads(l).get("non2xx",0) for l in open(sys.argv[1])))' "$out")
[ "$bad" = 0 ] || { log "$bad non-2xx responses"; exit 1; }
