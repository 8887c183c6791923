#!/usr/bin/python3
"""compute.py - the compute benchmark: WebAssembly in Cloister vs the same C
compiled natively, and vs Node.js running the same .wasm.

    bench/compute.py [--build DIR] [--kernels matmul,fft] [--rounds 3] [--reps 3]

For each kernel in bench/kernels/ (matmul, stencil, lu, fft, sort, hash;
see bench/kernels/README.md) it builds, into DIR/bench/kernels/:
  NAME.wasm      clang-14 --target=wasm32-wasi -O2 -mexec-model=reactor
                 (the flags examples use; one module for both WASM runners)
  native-NAME    gcc -O2 (--native-cc), the kernel linked with
                 bench/kernels/native_runner.c
and then, `rounds` times, runs the three runners on it in turn (the order
rotates each round), each a fresh process timing `reps` calls of handle()
after `warmup` untimed ones:
  native    DIR/bench/kernels/native-NAME
  cloister  DIR/bench/cloister_runner NAME.wasm (in-process runtime: deploy,
            compile cache in DIR/bench/kernels/cloister-state, rt_invoke_wait)
  node      node bench/node_runner.js NAME.wasm
Every runner must print the same checksum line for a kernel; a mismatch or
a failed run stops the benchmark with exit status 1.

Reported per kernel: the median time of each runner over all timed runs;
cloister/native, node/cloister and node/native, each the median over
rounds of the ratio of the two runners' median times within that round
(they ran back to back, so noise from other work on the machine mostly
cancels); and their geometric means against the issue's targets
(cloister <= 1.3x native, node >= 2x cloister).  JSON lines go to bench/results/compute-<time>.jsonl:
one "meta" line, one "run" line per runner process, one "kernel" line per
kernel and one "summary" line.

If the runtime is not built yet (no DIR/bench/cloister_runner and no
cl_runtime library in DIR), the Cloister column says "pending" and only
native and Node.js run; if the runtime is built but the runner is not, that
is an error (build target cloister_runner).  Exit status: 0 when every run
succeeded and agreed (targets missed are reported, not failed), 1 on a
failed run or checksum mismatch, 2 on bad usage or a missing tool.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNEL_DIR = os.path.join(ROOT, "bench", "kernels")
KERNELS = ["matmul", "stencil", "lu", "fft", "sort", "hash"]
RUNNERS = ["native", "cloister", "node"]
TARGET_CL_NATIVE = 1.3      # cloister time / native time, geomean, at most
TARGET_NODE_CL = 2.0        # node time / cloister time, geomean, at least
RUN_TIMEOUT = 900           # seconds for one runner process


def say(msg):
    print("compute: " + msg, file=sys.stderr, flush=True)


def die(msg, status=2):
    say(msg)
    sys.exit(status)


def newer(target, sources):
    """True if target is missing or older than any source."""
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


def run_build(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        die("build failed: %s\n%s" % (" ".join(cmd), r.stdout.decode(errors="replace")))


def build_kernels(kernels, outdir, clang, native_cc):
    """Builds NAME.wasm and native-NAME for each kernel (when out of date;
    native-NAME.cc records which compiler built it)."""
    os.makedirs(outdir, exist_ok=True)
    include = os.path.join(ROOT, "include")
    common = [os.path.join(KERNEL_DIR, "kernel.h"),
              os.path.join(include, "cloister", "function.h")]
    for k in kernels:
        src = os.path.join(KERNEL_DIR, k + ".c")
        wasm = os.path.join(outdir, k + ".wasm")
        if newer(wasm, [src] + common):
            run_build([clang, "--target=wasm32-wasi", "-O2", "-mexec-model=reactor",
                       "-I" + include, "-o", wasm, src])
        native = os.path.join(outdir, "native-" + k)
        runner = os.path.join(KERNEL_DIR, "native_runner.c")
        stamp = native + ".cc"
        built_with = open(stamp).read() if os.path.exists(stamp) else ""
        if built_with != native_cc or newer(native, [src, runner] + common):
            run_build([native_cc, "-O2", "-I" + include, "-o", native, src, runner])
            with open(stamp, "w") as f:
                f.write(native_cc)


def find_cloister_runner(build, override):
    """(path, None) when the Cloister runner can run; (None, reason) when
    the runtime is not built yet.  Dies if the runtime is built but the
    runner is missing."""
    if override:
        if not os.access(override, os.X_OK):
            die("--cloister-runner %s is not an executable" % override)
        return override, None
    path = os.path.join(build, "bench", "cloister_runner")
    if os.access(path, os.X_OK):
        return path, None
    runtime_lib = os.path.join(build, "libcl_runtime.a")
    if os.path.exists(runtime_lib):
        die("the runtime is built (%s) but %s is not; build it: cmake --build %s --target "
            "cloister_runner" % (runtime_lib, path, build))
    return None, "the runtime is not built yet (no %s)" % path


def runner_cmd(runner, kernel, paths, reps, warmup):
    wasm = os.path.join(paths["out"], kernel + ".wasm")
    common = ["--reps", str(reps), "--warmup", str(warmup)]
    if runner == "native":
        return [os.path.join(paths["out"], "native-" + kernel)] + common
    if runner == "node":
        return [paths["node"], os.path.join(ROOT, "bench", "node_runner.js"), wasm] + common
    return [paths["cloister"], wasm, "--state", os.path.join(paths["out"], "cloister-state")] + common


def run_one(runner, kernel, paths, reps, warmup):
    """Runs one runner process; returns its parsed JSON line or dies."""
    cmd = runner_cmd(runner, kernel, paths, reps, warmup)
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        die("%s %s: no result after %d s: %s" % (runner, kernel, RUN_TIMEOUT, " ".join(cmd)), 1)
    err = r.stderr.decode(errors="replace").strip()
    if r.returncode != 0:
        die("%s %s failed (status %d): %s\n%s" % (runner, kernel, r.returncode,
                                                  " ".join(cmd), err[-2000:]), 1)
    lines = [ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.startswith("{")]
    try:
        res = json.loads(lines[-1])
        times = [float(t) for t in res["times_s"]]
        output = str(res["output"])
    except (IndexError, KeyError, TypeError, ValueError) as e:
        die("%s %s: unreadable result (%s): %r" % (runner, kernel, e, r.stdout[-500:]), 1)
    if len(times) != reps or not all(t > 0 for t in times):
        die("%s %s: expected %d positive times, got %r" % (runner, kernel, reps, times), 1)
    res["times_s"] = times
    res["output"] = output
    return res


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt(x, unit=""):
    return "pending" if x is None else ("%.3f%s" % (x, unit))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", default=os.environ.get("BENCH_BUILD", "build"),
                   help="build directory (default build)")
    p.add_argument("--kernels", default=os.environ.get("BENCH_KERNELS", ",".join(KERNELS)),
                   help="comma-separated kernels (default all)")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")),
                   help="runner processes per kernel and runner (default 3)")
    p.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")),
                   help="timed runs per process (default 3)")
    p.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", "1")),
                   help="untimed runs per process first (default 1)")
    p.add_argument("--native-cc", default=os.environ.get("BENCH_NATIVE_CC", "gcc"),
                   help="compiler of the native column, run with -O2 (default gcc)")
    p.add_argument("--cloister-runner", default=None,
                   help="path of the Cloister runner (default BUILD/bench/cloister_runner)")
    p.add_argument("--results", default=os.path.join(ROOT, "bench", "results"),
                   help="where the .jsonl goes (default bench/results)")
    opts = p.parse_args()

    kernels = [k for k in opts.kernels.split(",") if k]
    for k in kernels:
        if k not in KERNELS:
            die("unknown kernel '%s' (have: %s)" % (k, ", ".join(KERNELS)))
    if not kernels or opts.rounds < 1 or opts.reps < 1 or opts.warmup < 0:
        die("need at least one kernel, --rounds >= 1, --reps >= 1, --warmup >= 0")

    build = os.path.abspath(opts.build)
    clang = shutil.which("clang-14") or die("clang-14 is not installed (make deps)")
    gcc = shutil.which(opts.native_cc) or die("%s is not installed" % opts.native_cc)
    node = shutil.which("node") or shutil.which("nodejs") or \
        die("Node.js is not installed (make deps-bench installs Debian's nodejs)")
    node_version = subprocess.run([node, "--version"], stdout=subprocess.PIPE,
                                  universal_newlines=True).stdout.strip()
    cloister, pending = find_cloister_runner(build, opts.cloister_runner)
    paths = {"out": os.path.join(build, "bench", "kernels"), "node": node, "cloister": cloister}
    runners = [r for r in RUNNERS if r != "cloister" or cloister]

    build_kernels(kernels, paths["out"], clang, gcc)
    os.makedirs(opts.results, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = os.path.join(opts.results, "compute-%s.jsonl" % stamp)
    out = open(out_path, "w")

    def record(obj):
        out.write(json.dumps(obj, sort_keys=True) + "\n")
        out.flush()

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    record({"type": "meta", "time": datetime.datetime.utcnow().isoformat() + "Z",
            "machine": " ".join(platform.uname()[0:3] + (platform.machine(),)),
            "cpu": cpu, "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
            "node": node_version, "clang": "clang-14 --target=wasm32-wasi -O2",
            "native": "%s -O2" % opts.native_cc, "kernels": kernels, "rounds": opts.rounds,
            "reps": opts.reps, "warmup": opts.warmup,
            "cloister": cloister or ("pending: " + pending)})

    if pending:
        say("Cloister column pending: " + pending)
    say("%s; %d kernels x %d rounds x %d runners, %d timed runs each (+%d warm-up); results in %s"
        % (node_version, len(kernels), opts.rounds, len(runners), opts.reps, opts.warmup, out_path))

    times = {(k, r): [] for k in kernels for r in runners}
    round_med = {}                  # (kernel, runner, round) -> median time in that round
    outputs = {}
    for rnd in range(opts.rounds):
        for k in kernels:
            order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
            for r in order:
                res = run_one(r, k, paths, opts.reps, opts.warmup)
                record(dict(res, type="run", kernel=k, runner=r, round=rnd + 1))
                times[(k, r)] += res["times_s"]
                round_med[(k, r, rnd)] = statistics.median(res["times_s"])
                want = outputs.setdefault(k, (r, res["output"]))
                if res["output"] != want[1]:
                    die("checksum mismatch for %s: %s printed %r, %s printed %r"
                        % (k, want[0], want[1], r, res["output"]), 1)
                say("round %d/%d %-8s %-8s median %.3f s  %s" % (
                    rnd + 1, opts.rounds, k, r, statistics.median(res["times_s"]), res["output"]))

    med = {key: statistics.median(v) for key, v in times.items()}

    def ratio(k, a, b):
        """Median over rounds of a's time / b's time within the round: the
        runners of one round ran back to back, so a load burst on the
        machine mostly hits both sides of a ratio alike."""
        if a not in runners or b not in runners:
            return None
        return statistics.median(round_med[(k, a, i)] / round_med[(k, b, i)]
                                 for i in range(opts.rounds))

    rows = []
    for k in kernels:
        row = {"kernel": k, "native_s": med[(k, "native")], "cloister_s": med.get((k, "cloister")),
               "node_s": med[(k, "node")],
               "cloister_over_native": ratio(k, "cloister", "native"),
               "node_over_cloister": ratio(k, "node", "cloister"),
               "node_over_native": ratio(k, "node", "native"), "checksum": outputs[k][1]}
        rows.append(row)
        record(dict(row, type="kernel"))

    g_cl = geomean([r["cloister_over_native"] for r in rows])
    g_node_cl = geomean([r["node_over_cloister"] for r in rows])
    g_node_nat = geomean([r["node_over_native"] for r in rows])
    record({"type": "summary", "geomean_cloister_over_native": g_cl,
            "geomean_node_over_cloister": g_node_cl, "geomean_node_over_native": g_node_nat,
            "target_cloister_over_native": TARGET_CL_NATIVE,
            "target_node_over_cloister": TARGET_NODE_CL,
            "cloister_pending": bool(pending)})
    out.close()

    print("%-8s %9s %11s %9s %12s %10s %12s" % ("kernel", "native s", "cloister s", "node s",
                                                "cl/native", "node/cl", "node/native"))
    for r in rows:
        print("%-8s %9.3f %11s %9.3f %12s %10s %11.2fx" % (
            r["kernel"], r["native_s"], fmt(r["cloister_s"]), r["node_s"],
            fmt(r["cloister_over_native"], "x"), fmt(r["node_over_cloister"], "x"),
            r["node_over_native"]))
    print("%-8s %9s %11s %9s %12s %10s %11.2fx" % ("geomean", "", "", "", fmt(g_cl, "x"),
                                                   fmt(g_node_cl, "x"), g_node_nat))
    print("\ntimes: medians of %d timed runs (%d processes x %d) per kernel and runner; ratios: "
          "medians over the %d rounds of the ratio within each round; checksums agree"
          % (opts.rounds * opts.reps, opts.rounds, opts.reps, opts.rounds))
    if pending:
        print("Targets: pending (Cloister not built: %s)" % pending)
    else:
        print("Targets: cloister/native geomean %.2fx (target <= %.1fx) %s; "
              "node/cloister geomean %.2fx (target >= %.1fx) %s"
              % (g_cl, TARGET_CL_NATIVE, "met" if g_cl <= TARGET_CL_NATIVE else "MISSED",
                 g_node_cl, TARGET_NODE_CL, "met" if g_node_cl >= TARGET_NODE_CL else "MISSED"))
    print("results: " + out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
