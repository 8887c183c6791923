# timeout: 600
"""test_spin_model.py - model-checks the replication protocol with spin.

spec/repl.pml models the STRONG mode of src/repl (ABD reads and writes,
CASPaxos read-modify-writes; 3 replicas, 2 proposers, a lossy duplicating
reordering network, a replica crash and recovery) and asserts that every
history is linearizable.  This test, in a temporary directory:

  correct   spin -a, gcc, pan: the correct protocol over all default
            scenarios, exhaustively; it must report 0 errors, with no
            search limit hit, and explore at least MIN_STATES states
  BUG_*     the same with one known bug switched on (a broken replica rule,
            a read without write-back, a rule of repl.h undone, and two
            rules of repl.h as they stand, which the model shows wrong:
            BUG_WRITE_IGNORES_FENCE, BUG_BLIND_MASKS_ATTEMPT); pan must
            report a violation of one of the properties C1-C4

Runs one after the other on one core, one to two minutes in all (each
case compiles its own pan, which is most of the time), at most ~0.8 GB.
--build is accepted for the uniform ctest command line and unused:
nothing of the build is needed, only spin and gcc (scripts/install-deps.sh
test installs spin).  Standard library only.  See spec/README.md for what
the model covers and what it found.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SPEC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     "..", "..", "spec", "repl.pml"))

# pan: safety properties (assertions, invalid end states); -O0 because
# compiling pan.c dominates and -O0 compiles 3x faster for a 1.4x slower
# search; MEMLIM (MB) turns runaway memory into a failed search.
CFLAGS = ["-O0", "-w", "-DSAFETY", "-DMEMLIM=2048"]
PAN_ARGS = ["-m10000", "-w22"]   # depth bound (runs are ~60 deep), 4M hash slots
MIN_STATES = 3000000            # the default scenarios have ~4.3M (spec/README.md)

# (name, spin -D flags, an error expected)
CASES = [("correct", [], False)] + [
    ("BUG_" + b, ["-DBUG_%s=1" % b], True) for b in (
        "WRITE_IGNORES_FENCE",      # repl.h/src/repl today: see spec/README.md
        "BLIND_MASKS_ATTEMPT",      # repl.h/src/repl today: see spec/README.md
        "ACCEPT_IGNORES_PROMISE",
        "READ_NO_WRITEBACK",
        "WRITER_IGNORES_NACK",
        "WRITE_RETRY_PARTIAL",
        "NO_HISTORY_CLOCK",
        "KEEP_NO_ACCEPT",
        "NO_BURY",
        "RECOVERY_NO_FENCE",
        "WRITE_TS_FROM_QUERY",
    )]

# What pan prints for each property of spec/repl.pml (a piece of the
# asserted expression) -> its name there.  A bug must break one of these,
# not a sanity assertion of the model itself.
PROPERTIES = [
    ("(made[ix].ts!=tx)", "C1 ts created twice"),
    ("(res[ix]>=start[ix])", "C2 stale result"),
    ("(made[ix].ts>start[", "C2 version older than a completed op"),
    ("!(inL[tx])", "C3 lost update"),
    ("==made[ix].ts))", "C4 took effect but reported otherwise"),
    ("(jx==ix)", "C4 took effect twice"),
]


class Failure(Exception):
    pass


def run(cmd, cwd, timeout):
    """Runs cmd; returns its output; raises Failure on a non-zero exit
    (pan exits 0 even when it finds errors)."""
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, universal_newlines=True)
    if p.returncode != 0:
        raise Failure("%s exited %d:\n%s" % (" ".join(cmd), p.returncode, p.stdout[-3000:]))
    return p.stdout


def check_case(workdir, name, defines, want_error, verbose):
    """Builds and runs pan for one case; returns a one-line summary."""
    d = os.path.join(workdir, name)
    os.mkdir(d)
    shutil.copy(SPEC, d)
    run(["spin"] + defines + ["-a", "repl.pml"], d, 120)
    run(["gcc"] + CFLAGS + ["-o", "pan", "pan.c"], d, 300)
    out = run(["./pan"] + PAN_ARGS, d, 400)
    if verbose:
        print(out)
    m = re.search(r"errors: (\d+)", out)
    states = re.search(r"([0-9.e+]+) states, stored", out)
    if not m or not states:
        raise Failure("cannot read pan's report:\n" + out[-3000:])
    errors, nstates = int(m.group(1)), int(float(states.group(1)))
    violated = [l.strip() for l in out.splitlines() if "violated" in l or "invalid end state" in l]
    summary = "%d states, %d errors" % (nstates, errors)
    if want_error:
        if errors < 1:
            raise Failure("the bug went unnoticed: " + summary)
        names = [n for text, n in PROPERTIES if violated and text in violated[0]]
        if not names:
            raise Failure("%s, but not of a linearizability property: %s"
                          % (summary, violated[0] if violated else "?"))
        return "%s (%s)" % (summary, names[0])
    if errors != 0:
        raise Failure("%s\n%s\nreplay: spin -t -DSYM=0 repl.pml after building pan with "
                      "-DSYM=0 (spec/README.md)" % (summary, "\n".join(violated)))
    for limit in ("max search depth too small", "out of memory", "Search not completed"):
        if limit in out:
            raise Failure("search incomplete (%s):\n%s" % (limit, out[-3000:]))
    if nstates < MIN_STATES:
        raise Failure("only %d states: the model no longer explores its scenarios" % nstates)
    return summary


def main():
    p = argparse.ArgumentParser(description="spin model check of spec/repl.pml")
    p.add_argument("--build", default="build", help="unused (uniform ctest command line)")
    p.add_argument("-k", dest="only", default=None, help="run cases whose name contains this")
    p.add_argument("-v", dest="verbose", action="store_true", help="print pan's reports")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = p.parse_args()

    passed = failed = 0
    missing = [t for t in ("spin", "gcc") if shutil.which(t) is None]
    if missing:
        print("FAIL setup: %s not found (scripts/install-deps.sh test installs spin)"
              % ", ".join(missing))
        print("0 passed, 1 failed")
        sys.exit(1)

    workdir = tempfile.mkdtemp(prefix="cloister-spin-")
    print("spin model: %s in %s" % (SPEC, workdir), flush=True)
    try:
        for name, defines, want_error in CASES:
            if opts.only and opts.only not in name:
                continue
            t0 = time.monotonic()
            try:
                summary = check_case(workdir, name, defines, want_error, opts.verbose)
                passed += 1
                print("ok   %s (%.1fs): %s" % (name, time.monotonic() - t0, summary), flush=True)
            except (Failure, subprocess.TimeoutExpired, OSError) as e:
                failed += 1
                print("FAIL %s (%.1fs)\n    %s" % (name, time.monotonic() - t0,
                                                 str(e).replace("\n", "\n    ")), flush=True)
    finally:
        if opts.keep:
            print("kept " + workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
