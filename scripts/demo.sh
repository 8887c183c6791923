#!/usr/bin/env bash
# make demo:
#   - one node against the operator: cloisterd on loopback (memcached over
#     TLS with a throwaway CA), a standard memcached client (pymemcache),
#     and the adversary tampering with and rolling back the untrusted arena
#     file: both detected;
#   - a 3-node cluster (`cloister up`): an attested coordinator and three
#     attested nodes; the examples deployed with the `cloister` CLI through
#     one node and invoked through all three, state kept across invocations
#     and nodes; a native .so; what is refused and what fails alone; then
#     node 2 killed (SIGKILL) while the others keep serving, restarted: it
#     re-attests, copies the state from a majority, and serves every value
#     written while it was down.
# Everything lives in a temp dir removed at exit; every daemon is stopped by
# PID on exit, whatever happens.
# Called by `make demo` (after `make build`).
#   scripts/demo.sh [BUILD_DIR]     (default: build)
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
daemon="$build/cloisterd"
cli="$build/cloister"
ex="$build/examples"
for f in "$daemon" "$cli" "$ex/hello.wasm" "$ex/counter.wasm" "$ex/wordcount.wasm" \
         "$ex/bank.wasm" "$ex/hello.so"; do
  [ -e "$f" ] || { echo "demo: $f not found; run 'make build' first" >&2; exit 1; }
done

work=$(mktemp -d /tmp/cloister-demo.XXXXXX)
cluster="$work/cluster"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  fi
  if [ -f "$cluster/cluster.json" ]; then
    "$cli" down --dir "$cluster" >/dev/null 2>&1 || true
    for p in $(/usr/bin/python3 -c 'import json,sys; c=json.load(open(sys.argv[1]));
print(" ".join(str(n["pid"]) for n in c["nodes"] + [c["coordinator"]] if n.get("pid")))' \
               "$cluster/cluster.json" 2>/dev/null); do
      kill -KILL "$p" 2>/dev/null || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A throwaway CA and a server certificate for 127.0.0.1"
"$root/scripts/gen-certs.sh" "$work/certs" >/dev/null
ls "$work/certs"

step "2. Start cloisterd: memcached over TLS 1.3 and the HTTPS gateway, free loopback ports"
"$daemon" --listen 127.0.0.1:0 --http 127.0.0.1:0 --state-dir "$work/state" \
    --tls-cert "$work/certs/server.crt" --tls-key "$work/certs/server.key" \
    --arena-file "$work/arena.bin" --memory 16 --threads 2 --fn-threads 2 --fn-timeout 1000 \
    --ready-file "$work/ready.json" 2> "$work/cloisterd.log" &
pid=$!
for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.05; done
[ -s "$work/ready.json" ] || { echo "demo: cloisterd did not start:"; cat "$work/cloisterd.log"; exit 1; }
cat "$work/ready.json"
ready() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/ready.json" "$1"; }
addr=$(ready memcached)
http=$(ready http)

step "3. The store: a standard memcached client (pymemcache) over TLS, then the adversary"
/usr/bin/python3 - "$addr" "$work/certs/ca.crt" "$work/arena.bin" <<'PY'
import ssl, sys
from pymemcache.client.base import Client

addr, ca, arena_path = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
tls = ssl.create_default_context(cafile=ca)
tls.minimum_version = ssl.TLSVersion.TLSv1_3
# default_noreply=False: each set waits for the node's reply, so the arena
# file read right after it already holds the write.
c = Client((host, int(port)), tls_context=tls, timeout=5, default_noreply=False)

def arena():
    with open(arena_path, "rb") as f:
        return bytearray(f.read())

print(f"connected to {addr} over {c.version().decode()} (TLS 1.3, verified against the demo CA)")
c.set("greeting", b"hello, confidential world")
c.set("balance:alice", b"100")
c.set("balance:bob", b"250")
for k in ("greeting", "balance:alice", "balance:bob"):
    print(f"  get {k:14} -> {c.get(k).decode()}")
print("  incr balance:bob 5 ->", c.incr("balance:bob", 5))

raw = arena()
print("\nThe operator reads the arena file: is any value or key in clear text?")
for needle in (b"hello, confidential world", b"balance", b"greeting"):
    print(f"  {needle.decode()!r:30} {'FOUND (bad!)' if needle in raw else 'not found: values are sealed, keys never leave trusted memory'}")

print("\nThe operator flips one bit of the sealed greeting in the arena file ...")
before = arena()
c.set("greeting", b"hello, confidential world")   # rewrite: its new ciphertext is what changes
after = arena()
where = [i for i in range(len(after)) if after[i] != before[i]]
pos = where[len(where) // 2]
with open(arena_path, "r+b") as f:
    f.seek(pos); b = f.read(1); f.seek(pos); f.write(bytes([b[0] ^ 0x01]))
try:
    print("  get greeting ->", c.get("greeting"), "(NOT DETECTED: this is a bug)")
    sys.exit(1)
except Exception as e:
    print(f"  get greeting -> refused: {e}")
print("  get balance:alice ->", c.get("balance:alice").decode(), "(untouched keys still read)")

print("... and rolls back bob's balance to an older copy of the whole arena")
old = arena()
c.set("balance:bob", b"0")
with open(arena_path, "r+b") as f:
    f.write(old)
try:
    print("  get balance:bob ->", c.get("balance:bob"), "(NOT DETECTED: this is a bug)")
    sys.exit(1)
except Exception as e:
    print(f"  get balance:bob -> refused: {e}")
print("stats: integrity_failures =", int(c.stats()[b"integrity_failures"]))
c.set("greeting", b"rewritten after the attack")
print("a fresh write heals the key: get greeting ->", c.get("greeting").decode())
c.close()
PY

step "4. Stop the single node (SIGTERM)"
kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?; pid=""
echo "cloisterd exited with status $rc"
[ "$rc" -eq 0 ] || exit "$rc"

step "5. A 3-node cluster: coordinator + 3 nodes, each attested before it gets a certificate"
"$cli" up --nodes 3 --dir "$cluster" --memory 32
node_http() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][int(sys.argv[2])-1]["http"])' "$cluster/cluster.json" "$1"; }
node_mc() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"][int(sys.argv[2])-1]["memcached"])' "$cluster/cluster.json" "$1"; }
"$cli" status --dir "$cluster"

# The CLI, shown as typed (--dir elided) and run against the cluster over
# HTTPS with the cluster's CA and client certificate; `on N` picks node N.
# Its stderr (deploy progress, error messages) is shown in line.
show() {
  local a line="[node $target] \$ cloister"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then line+=" $a"; else line+=" '$a'"; fi
  done
  printf '\033[2m%s\033[0m\n' "$line"
}
target=1
on() { target=$1; }
cloister() {
  show "$@"
  "$cli" --dir "$cluster" --node "$(node_http "$target")" "$@" 2>&1
}
# The same for a command expected to fail: show its error message (stderr;
# the reply body it repeats is dropped) and exit status, and go on.
cloister_fails() {
  local rc=0
  show "$@"
  "$cli" --dir "$cluster" --node "$(node_http "$target")" "$@" 2>&1 >/dev/null || rc=$?
  [ "$rc" -ne 0 ] || { echo "demo: expected this command to fail" >&2; exit 1; }
  echo "(exit status $rc)"
}

step "6. Functions: deploy the examples through node 1 (validated, wasm2c, cc; replicated)"
echo "every cloister command below also gets: --dir $cluster --node <node's HTTPS address>"
for fn in hello counter wordcount bank; do
  cloister deploy "$ex/$fn.wasm" --name "$fn"
done

step "7. Invoke them through all three nodes; state lives in the replicated store"
on 1; cloister invoke hello --data Ada
on 2; cloister invoke counter
on 3; cloister invoke counter
on 1; cloister invoke counter
on 2; cloister invoke counter --data 'add 10'
on 3; cloister invoke wordcount --data 'the cat saw the other cat. The end'
on 1; cloister invoke wordcount --data 'and the cat sat'
on 2; cloister invoke bank --data 'open alice 100'
on 3; cloister invoke bank --data 'open bob 0'
on 1; cloister invoke bank --data 'transfer alice bob 30'
on 2; cloister_fails invoke bank --data 'transfer bob alice 31'
on 3; cloister invoke bank --data 'audit alice bob'

step "8. A native function: the same hello.c built as a .so, run in a seccomp-confined worker"
on 1; cloister deploy "$ex/hello.so" --name hello-native
on 2; cloister invoke hello-native --data 'native world'

step "9. What is refused, and what fails alone"
on 1
printf 'this is a text file, not a module\n' > "$work/notes.wasm"
cloister_fails deploy "$work/notes.wasm" --name notes
bad_import="$build/tests/modules/bad_import_fork.wasm"
if [ -e "$bad_import" ]; then
  cloister_fails deploy "$bad_import" --name forker
fi
traps="$build/tests/modules/sb_traps.wasm"
if [ -e "$traps" ]; then
  # sb_traps picks its behaviour from the body's first 4 bytes (little-endian):
  # 4 = unreachable, 11 = an infinite loop (stopped at the node's --fn-timeout).
  printf '\004\000\000\000' > "$work/unreachable.bin"
  printf '\013\000\000\000' > "$work/loop.bin"
  cloister deploy "$traps" --name traps
  on 3; cloister_fails invoke traps --data-file "$work/unreachable.bin"
  on 3; cloister_fails invoke traps --data-file "$work/loop.bin"
fi
cloister_fails invoke nosuchfunction
echo "the nodes keep serving:"
on 2; cloister invoke hello --data 'still here'
on 3; cloister invoke counter --data get

step "10. cloister ls and cloister logs (per node: node 1 ran these)"
on 1; cloister ls
cloister logs hello

step "11. Node 2 crashes (SIGKILL); nodes 1 and 3 are a majority and keep serving"
"$cli" node stop 2 --kill --dir "$cluster"
"$cli" status --dir "$cluster"
on 1; cloister invoke counter
on 3; cloister invoke counter --data 'add 100'
on 1; cloister invoke bank --data 'transfer bob alice 5'
on 3; show kv set while-2-was-down "written by node 3"
"$cli" --dir "$cluster" --memcached "$(node_mc 3)" kv set while-2-was-down "written by node 3"

step "12. Node 2 comes back: it re-attests, copies the state from a majority, then votes"
"$cli" node start 2 --dir "$cluster"
for _ in $(seq 100); do     # until node 2 reports ready (it serves while recovering, but does not vote)
  "$cli" status --dir "$cluster" --json | /usr/bin/python3 -c 'import json,sys
sys.exit(0 if json.load(sys.stdin)["nodes"][1].get("state") == "ready" else 1)' && break
  sleep 0.1
done
"$cli" status --dir "$cluster"
echo "reads through node 2 see everything written while it was down:"
on 2; cloister invoke counter --data get
cloister invoke bank --data 'audit alice bob'
on 2; show kv get while-2-was-down
"$cli" --dir "$cluster" --memcached "$(node_mc 2)" kv get while-2-was-down; echo
grep -h 'recover\|attested' "$cluster/node-2/cloisterd.log" | tail -n 3 | sed 's/^/  /'

step "13. Stop the cluster"
"$cli" down --dir "$cluster"
