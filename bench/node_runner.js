#!/usr/bin/env node
// node_runner.js - the Node.js column of the compute benchmark: runs a
// Cloister function's .wasm (the very file Cloister runs) in V8 and times
// its handle() export.
//
//     node bench/node_runner.js MODULE.wasm [--reps N] [--warmup N] [--data STR]
//
// Instantiates the module once, runs handle() `warmup` times untimed (V8
// compiles with its baseline tier first and tiers hot functions up to
// TurboFan; the warm-up lets that happen), then `reps` times timed with
// process.hrtime, and prints one JSON line:
//     {"runner":"node","node":"v20...","output":"matmul 1f...","times_s":[...]}
// Every run must return 0 and produce the same output, else it exits 1.
// Called by bench/compute.py; also handy to try a function without a node.
//
// Imports provided: module "cloister" as in include/cloister/function.h,
// with the request body from --data and an in-memory key-value map (no
// locks are ever contended: one caller); module "wasi_snapshot_preview1"
// through Node's own WASI (no arguments, no environment, no files) when
// the module imports it.  A reactor's _initialize runs once, as in
// Cloister; a module with an init export has it run once after that.
'use strict';

const fs = require('fs');

function usage(msg) {
  if (msg) process.stderr.write(`node_runner: ${msg}\n`);
  process.stderr.write('usage: node node_runner.js MODULE.wasm [--reps N] [--warmup N] [--data STR]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const o = { file: null, reps: 5, warmup: 1, data: '' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if ((a === '--reps' || a === '--warmup' || a === '--data') && i + 1 < argv.length) {
      const v = argv[++i];
      if (a === '--data') o.data = v;
      else o[a.slice(2)] = Number.parseInt(v, 10);
    } else if (!a.startsWith('--') && o.file === null) {
      o.file = a;
    } else {
      usage(`unexpected argument '${a}'`);
    }
  }
  if (o.file === null) usage('no module given');
  if (!(o.reps >= 1 && o.reps <= 1000 && o.warmup >= 0 && o.warmup <= 100))
    usage('--reps must be 1..1000 and --warmup 0..100');
  return o;
}

// CLOISTER_E* codes (function.h).
const ENOTFOUND = -1, ECONFLICT = -2, ETOOBIG = -3, ENOTHELD = -7, EINVAL = -8, EFAULT = -9,
  ENOTNUMBER = -10;
const MAX_OUTPUT = 4 << 20;

// The "cloister" import module.  getMemory() is the instance's memory
// (known only after instantiation).  Keys are kept as latin1 strings.
function cloisterImports(getMemory, input, state) {
  const bytes = () => new Uint8Array(getMemory().buffer);
  const view = () => new DataView(getMemory().buffer);
  const inRange = (ptr, len) => ptr >>> 0 === ptr && len >= 0 && ptr + len <= getMemory().buffer.byteLength;
  const key = (ptr, len) => Buffer.from(bytes().subarray(ptr, ptr + len)).toString('latin1');
  const store = (k, v) => state.kv.set(k, { value: Buffer.from(v), version: ++state.version });
  return {
    input(buf, cap) {
      buf >>>= 0; cap >>>= 0;
      const n = Math.min(cap, input.length);
      if (!inRange(buf, n)) return EFAULT;
      bytes().set(input.subarray(0, n), buf);
      return input.length;
    },
    output(buf, len) {
      buf >>>= 0; len >>>= 0;
      if (!inRange(buf, len)) return EFAULT;
      if (state.outLen + len > MAX_OUTPUT) return ETOOBIG;
      state.out.push(Buffer.from(bytes().subarray(buf, buf + len)));
      state.outLen += len;
      return 0;
    },
    kv_get(k, klen, buf, cap, versionPtr) {
      k >>>= 0; klen >>>= 0; buf >>>= 0; cap >>>= 0; versionPtr >>>= 0;
      if (!inRange(k, klen) || !inRange(buf, cap) || (versionPtr && !inRange(versionPtr, 8)))
        return BigInt(EFAULT);
      if (klen === 0) return BigInt(EINVAL);
      const e = state.kv.get(key(k, klen));
      if (!e) return BigInt(ENOTFOUND);
      bytes().set(e.value.subarray(0, Math.min(cap, e.value.length)), buf);
      if (versionPtr) view().setBigUint64(versionPtr, BigInt(e.version), true);
      return BigInt(e.value.length);
    },
    kv_set(k, klen, v, vlen) {
      k >>>= 0; klen >>>= 0; v >>>= 0; vlen >>>= 0;
      if (!inRange(k, klen) || !inRange(v, vlen)) return EFAULT;
      if (klen === 0) return EINVAL;
      store(key(k, klen), bytes().subarray(v, v + vlen));
      return 0;
    },
    kv_delete(k, klen) {
      k >>>= 0; klen >>>= 0;
      if (!inRange(k, klen)) return EFAULT;
      return state.kv.delete(key(k, klen)) ? 0 : ENOTFOUND;
    },
    kv_cas(k, klen, expected, v, vlen) {
      k >>>= 0; klen >>>= 0; v >>>= 0; vlen >>>= 0;
      if (!inRange(k, klen) || !inRange(v, vlen)) return EFAULT;
      const e = state.kv.get(key(k, klen));
      const have = e ? BigInt(e.version) : 0n;
      if (BigInt.asUintN(64, expected) !== have) return ECONFLICT;
      store(key(k, klen), bytes().subarray(v, v + vlen));
      return 0;
    },
    kv_incr(k, klen, delta, resultPtr) {
      k >>>= 0; klen >>>= 0; resultPtr >>>= 0;
      if (!inRange(k, klen) || (resultPtr && !inRange(resultPtr, 8))) return EFAULT;
      const name = key(k, klen);
      const e = state.kv.get(name);
      const text = e ? e.value.toString('latin1') : '0';
      if (!/^[0-9]+$/.test(text)) return ENOTNUMBER;
      let v = BigInt(text) + delta;
      if (v < 0n) v = 0n;
      if (v > 2n ** 63n - 1n) v = 2n ** 63n - 1n;
      store(name, Buffer.from(v.toString(), 'latin1'));
      if (resultPtr) view().setBigInt64(resultPtr, v, true);
      return 0;
    },
    kv_get_many() { return BigInt(EINVAL); },
    lock(name, nlen) {
      name >>>= 0; nlen >>>= 0;
      if (!inRange(name, nlen)) return EFAULT;
      state.locks.add(key(name, nlen));
      return 0;
    },
    unlock(name, nlen) {
      name >>>= 0; nlen >>>= 0;
      if (!inRange(name, nlen)) return EFAULT;
      return state.locks.delete(key(name, nlen)) ? 0 : ENOTHELD;
    },
    log(msg, len) {
      msg >>>= 0; len >>>= 0;
      if (inRange(msg, len))
        process.stderr.write(Buffer.from(bytes().subarray(msg, msg + len)).toString() + '\n');
    },
  };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const module = await WebAssembly.compile(fs.readFileSync(opts.file));
  const importNames = new Set(WebAssembly.Module.imports(module).map((i) => i.module));
  const state = { kv: new Map(), version: 0, locks: new Set(), out: [], outLen: 0 };
  let instance = null;
  const imports = {
    cloister: cloisterImports(() => instance.exports.memory, Buffer.from(opts.data), state),
  };
  let wasi = null;
  if (importNames.has('wasi_snapshot_preview1')) {
    const { WASI } = require('wasi');
    // stdout and stderr of the function go to our stderr: stdout carries the JSON.
    wasi = new WASI({ version: 'preview1', args: [], env: {}, stdout: 2, stderr: 2 });
    imports.wasi_snapshot_preview1 = wasi.wasiImport;
  }
  for (const m of importNames)
    if (!(m in imports)) usage(`the module imports from '${m}', which no Cloister node offers`);
  instance = await WebAssembly.instantiate(module, imports);
  const ex = instance.exports;
  if (typeof ex.handle !== 'function' || !(ex.memory instanceof WebAssembly.Memory))
    usage('the module must export handle and memory');
  if (wasi) wasi.initialize(instance);                // runs _initialize if present
  else if (typeof ex._initialize === 'function') ex._initialize();
  if (typeof ex.init === 'function') ex.init();

  const times = [];
  let first = null;
  for (let r = 0; r < opts.warmup + opts.reps; r++) {
    state.out = [];
    state.outLen = 0;
    const t0 = process.hrtime.bigint();
    const rc = ex.handle();
    const t1 = process.hrtime.bigint();
    state.locks.clear();                                // released when the invocation ends
    const out = Buffer.concat(state.out).toString('latin1');
    if (rc !== 0) {
      process.stderr.write(`node_runner: handle returned ${rc}: ${out}\n`);
      process.exit(1);
    }
    if (first === null) first = out;
    else if (out !== first) {
      process.stderr.write(`node_runner: run ${r + 1} output ${JSON.stringify(out)} differs from run 1's ${JSON.stringify(first)}\n`);
      process.exit(1);
    }
    if (r >= opts.warmup) times.push(Number(t1 - t0) / 1e9);
  }
  process.stdout.write(JSON.stringify({
    runner: 'node', node: process.version, output: first.replace(/\n+$/, ''),
    times_s: times.map((t) => Number(t.toFixed(6))),
  }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`node_runner: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
