# timeout: 240
"""test_daemon.py - cloisterd as a program: flags, config file, storage
semantics, memory statistics, threads and shutdown.

  - --help exits 0 and names every flag; without TLS and without
    --plaintext it refuses to start (naming --plaintext); bad flag values
    are usage errors (exit 2) that name the flag; --config sets the same
    options as the command line, which overrides it;
  - storage semantics: a full store refuses writes with "SERVER_ERROR out
    of memory" and every acknowledged key still reads back; deleting makes
    room again; --evict lru evicts instead and keeps accepting writes;
  - stats report trusted_bytes / untrusted_bytes (growing with data) and
    limit_maxbytes;
  - SIGTERM stops it promptly with exit status 0 while clients are
    connected, some in the middle of a request;
  - --threads 1 and 4 both serve concurrent clients correctly.
Flag and statistics cases are Cloister only; the storage, eviction,
shutdown and threads cases also run against memcached (-M, -m, -t).

Run: /usr/bin/python3 tests/blackbox/test_daemon.py --build build
"""

import os
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("daemon")

FLAGS = ("--listen", "--tls-cert", "--tls-key", "--tls-ca", "--plaintext", "--arena-file",
         "--memory", "--max-value", "--threads", "--evict", "--config", "--ready-file")


@suite.test(cloister_only=True)
def help_names_every_flag(env):
    rc, out, err = env.run_daemon(["--help"])
    eq(rc, 0, "--help exit status")
    for flag in FLAGS:
        check(re.search(re.escape(flag) + r"\b", out), "--help does not mention %s" % flag)
    rc, out, err = env.run_daemon(["--version"])
    eq(rc, 0, "--version exit status")
    check(re.search(r"\d+\.\d+", out), "--version printed %r" % out)


def expect_usage_error(env, args, must_mention, status=2):
    try:
        rc, out, err = env.run_daemon(args)
    except Exception as e:      # e.g. it started serving and never exited
        H.fail("cloisterd %s: %r" % (" ".join(args), e))
    eq(rc, status, "exit status of cloisterd %s (stderr: %s)" % (" ".join(args), err.strip()))
    for word in must_mention:
        check(word in err, "cloisterd %s: stderr does not mention %r: %r" % (" ".join(args), word, err))


@suite.test(cloister_only=True)
def refuses_to_start_without_tls(env):
    listen = ["--listen", "127.0.0.1:0"]
    rc, out, err = env.run_daemon(listen)
    check(rc != 0, "cloisterd started with neither TLS nor --plaintext")
    check("--plaintext" in err, "the refusal does not mention --plaintext: %r" % err)
    certs = env.certs
    rc, out, err = env.run_daemon(listen + ["--tls-cert", certs.server])
    check(rc != 0 and "--tls-key" in err, "--tls-cert without --tls-key: status %d, %r" % (rc, err))
    missing = os.path.join(env.tmp, "no-such-cert.pem")
    rc, out, err = env.run_daemon(listen + ["--tls-cert", missing, "--tls-key", certs.server_key])
    check(rc != 0 and "no-such-cert.pem" in err, "missing certificate file: status %d, %r" % (rc, err))
    rc, out, err = env.run_daemon(listen + ["--tls-cert", certs.server, "--tls-key", certs.rogue_client_key])
    check(rc != 0 and err.strip(), "certificate with a key that does not match: status %d, %r" % (rc, err))


@suite.test(cloister_only=True)
def bad_flag_values(env):
    base = ["--listen", "127.0.0.1:0", "--plaintext"]
    cases = ((["--memory", "abc"], ["--memory", "abc"]),
             (["--memory", "-5"], ["--memory"]),
             (["--evict", "bogus"], ["--evict", "bogus"]),
             (["--threads", "abc"], ["--threads"]),
             (["--max-value", "lots"], ["--max-value"]),
             (["--no-such-flag"], ["no-such-flag"]),
             (["--memory"], ["--memory"]))
    for extra, words in cases:
        expect_usage_error(env, base + extra, words)
    for listen in ("nonsense", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:port", ":"):
        expect_usage_error(env, ["--listen", listen, "--plaintext"], ["--listen"])


@suite.test(cloister_only=True)
def listen_port_in_use(env):
    srv = env.start_server()
    rc, out, err = env.run_daemon(["--listen", "127.0.0.1:%d" % srv.port, "--plaintext"])
    check(rc != 0, "a second daemon started on a port in use")
    check(str(srv.port) in err, "error for a port in use does not name it: %r" % err)
    srv.connect().sync()


@suite.test(cloister_only=True)
def config_file(env):
    path = os.path.join(env.tmp, "cloisterd.conf")
    with open(path, "w") as f:
        f.write("# test configuration\n"
                "listen = 127.0.0.1:0\n"
                "plaintext = yes\n"
                "memory = 3\n"
                "max-value = 2000\n"
                "threads = 2\n"
                "\n"
                "evict = none   \n")
    srv = env.start_server(minimal=True, config=path)
    c = srv.connect()
    s = c.stats()
    eq(int(s["limit_maxbytes"]), 3 << 20, "limit_maxbytes from the config file")
    eq(int(s["threads"]), 2, "threads from the config file")
    c.must_set(b"ok", b"x" * 2000)
    line = c.set(b"big", b"x" * 2001)
    check(line.startswith(b"SERVER_ERROR object too large"), "max-value from the config file: %r" % line)
    srv.stop()
    # The command line overrides the file.
    srv = env.start_server(minimal=True, config=path, extra=["--memory", "5", "--max-value", "4000"])
    c = srv.connect()
    eq(int(c.stats()["limit_maxbytes"]), 5 << 20, "--memory over the config file")
    c.must_set(b"big", b"x" * 2001)
    # A bad line is a usage error naming the file.
    bad = os.path.join(env.tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write("plaintext = yes\nmemory = lots\n")
    rc, out, err = env.run_daemon(["--config", bad, "--listen", "127.0.0.1:0"])
    eq(rc, 2, "exit status for a bad config value (stderr: %s)" % err.strip())
    check("bad.conf" in err and "memory" in err, "error for a bad config line: %r" % err)
    with open(bad, "w") as f:
        f.write("plaintext = yes\nno-such-setting = 1\n")
    rc, out, err = env.run_daemon(["--config", bad, "--listen", "127.0.0.1:0"])
    eq(rc, 2, "exit status for an unknown config setting (stderr: %s)" % err.strip())
    check("no-such-setting" in err, "error for an unknown setting: %r" % err)
    rc, out, err = env.run_daemon(["--config", os.path.join(env.tmp, "absent.conf"), "--plaintext"])
    check(rc != 0 and "absent.conf" in err, "missing config file: status %d, %r" % (rc, err))


def fill(c, prefix, size, limit, rng):
    """Sets size-byte values (pipelined, 50 at a time) until one is refused
    or `limit` are stored.  Returns ({key: value} acknowledged, first refusal)."""
    stored = {}
    i = 0
    while i < limit:
        batch = []
        for _ in range(50):
            k = b"%s%06d" % (prefix, i)
            batch.append((k, rng.randbytes(size)))
            i += 1
        c.send(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, size, v) for k, v in batch))
        refusal = None
        for k, v in batch:
            line = c.read_line("set %r" % k)
            if line == b"STORED\r\n":
                check(refusal is None, "a set succeeded after a refusal in the same batch"
                      " (sizes are equal): %r" % k)
                stored[k] = v
            else:
                refusal = refusal or line
        if refusal:
            return stored, refusal
    return stored, None


def check_all(c, items, what):
    keys = sorted(items)
    for i in range(0, len(keys), 100):
        batch = keys[i:i + 100]
        c.send(b"get " + b" ".join(batch) + b"\r\n")
        got = {k: v for k, _, v, _ in c.read_values(what)}
        for k in batch:
            check(k in got, "%s: acknowledged key %r is gone" % (what, k))
            check(got[k] == items[k], "%s: key %r has the wrong value" % (what, k))


@suite.test
def storage_semantics_when_full(env):
    srv = env.start_server(memory=2)
    c = srv.connect()
    stored, refusal = fill(c, b"full", 1000, 20000, env.rng)
    check(refusal is not None, "20000 values of 1000 bytes all stored in a 2 MB store")
    check(refusal.startswith(b"SERVER_ERROR out of memory"), "refusal when full: %r" % refusal)
    check(len(stored) > 500, "only %d values of 1000 bytes fit in 2 MB" % len(stored))
    for i in range(3):
        line = c.set(b"full-more%d" % i, b"y" * 1000)
        check(line.startswith(b"SERVER_ERROR out of memory"), "set into a full store: %r" % line)
        c.call(b"get full-more%d\r\n" % i, b"END\r\n", "a refused value is not stored")
    check_all(c, stored, "full store")
    s = c.stats()
    eq(int(s["evictions"]), 0, "evictions without --evict lru")
    # Deleting makes room for values of the same size.
    victims = sorted(stored)[:20]
    for k in victims:
        c.call(b"delete %s\r\n" % k, b"DELETED\r\n")
        del stored[k]
    for i in range(10):
        k = b"full-after%d" % i
        v = env.rng.randbytes(1000)
        c.must_set(k, v)
        stored[k] = v
    check_all(c, stored, "after deleting some")


@suite.test
def evict_lru_keeps_accepting(env):
    srv = env.start_server(memory=2, evict="lru")
    c = srv.connect()
    stored, refusal = fill(c, b"lru", 1000, 6000, env.rng)
    check(refusal is None, "with --evict lru a write was refused: %r" % refusal)
    eq(len(stored), 6000, "values acknowledged")
    s = c.stats()
    check(int(s["evictions"]) > 0, "no evictions after writing 6 MB into 2 MB")
    keys = sorted(stored)
    recent = keys[-200:]
    check_all(c, {k: stored[k] for k in recent}, "the 200 most recent values")
    present = 0
    for i in range(0, len(keys), 100):
        c.send(b"get " + b" ".join(keys[i:i + 100]) + b"\r\n")
        for k, _, v, _ in c.read_values("after eviction"):
            check(v == stored[k], "evicted store returned a wrong value for %r" % k)
            present += 1
    check(present < len(keys), "nothing was evicted")
    check(present + int(s["evictions"]) >= len(keys), "%d present + %s evicted < %d written"
          % (present, s["evictions"], len(keys)))


@suite.test(cloister_only=True)
def memory_statistics(env):
    srv = env.start_server(memory=16, threads=3)
    c = srv.connect()
    s0 = c.stats()
    for name in ("trusted_bytes", "untrusted_bytes", "limit_maxbytes", "integrity_failures"):
        check(re.match(r"\d+$", s0.get(name, "")), "stats %s: %r" % (name, s0.get(name)))
    eq(int(s0["limit_maxbytes"]), 16 << 20, "limit_maxbytes")
    eq(int(s0["threads"]), 3, "threads")
    eq(int(s0["integrity_failures"]), 0, "integrity_failures")
    values = {b"m%04d" % i: env.rng.randbytes(2000) for i in range(500)}
    for k, v in values.items():
        c.must_set(k, v)
    s1 = c.stats()
    grew_u = int(s1["untrusted_bytes"]) - int(s0["untrusted_bytes"])
    grew_t = int(s1["trusted_bytes"]) - int(s0["trusted_bytes"])
    check(grew_u >= 500 * 2000, "untrusted_bytes grew by %d for 1,000,000 bytes of values" % grew_u)
    check(grew_u <= 2 * 500 * 2000, "untrusted_bytes grew by %d for 1,000,000 bytes of values" % grew_u)
    check(grew_t >= 500 * 8, "trusted_bytes grew by %d for 500 keys" % grew_t)
    check(grew_t < 500 * 2000, "trusted_bytes grew by %d: are values in trusted memory?" % grew_t)
    check(int(s1["bytes"]) - int(s0["bytes"]) >= 500 * 2000, "bytes did not grow with the values")
    eq(int(s1["curr_items"]) - int(s0["curr_items"]), 500, "curr_items")
    for k in values:
        c.call(b"delete %s\r\n" % k, b"DELETED\r\n")
    s2 = c.stats()
    check(int(s2["untrusted_bytes"]) <= int(s0["untrusted_bytes"]) + 4096,
          "untrusted_bytes %s after deleting everything (was %s)" % (s2["untrusted_bytes"], s0["untrusted_bytes"]))


@suite.test
def sigterm_with_clients_connected(env):
    srv = env.start_server()
    idle = [srv.connect() for _ in range(10)]
    busy = srv.connect()
    busy.must_set(b"big", b"z" * 500000)
    partial = srv.connect()
    partial.send(b"set half 0 0 1000\r\nonly some of it")
    reader = srv.connect()
    reader.send(b"get big big big big\r\n")      # a reply still being written
    for c in idle[:3]:
        c.sync()
    t0 = time.monotonic()
    srv.stop(check=True)         # SIGTERM; fails unless it exits 0
    elapsed = time.monotonic() - t0
    check(elapsed < 5.0, "took %.1fs to stop after SIGTERM" % elapsed)
    for c in idle + [busy, partial, reader]:
        c.close()


@suite.test(cloister_only=True)
def sigint_stops_cleanly(env):
    srv = env.start_server()
    srv.connect().sync()
    eq(srv.stop(check=True, sig=signal.SIGINT), 0, "exit status on SIGINT")


def hammer(srv, nthreads, ops):
    errors = []

    def worker(t):
        try:
            c = srv.connect()
            for i in range(ops):
                k = b"t%d-%d" % (t, i % 37)
                v = b"%d-%d-" % (t, i) + b"v" * (i % 300)
                c.must_set(k, v)
                got = c.get(k)
                if got != (0, v):
                    errors.append("thread %d: %r read back %r" % (t, k, H.short(got)))
                    return
            c.close()
        except Exception as e:          # reported below
            errors.append("thread %d: %s" % (t, e))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return errors


@suite.test
def threads_one_and_four(env):
    for n in (1, 4):
        srv = env.start_server(threads=n)
        c = srv.connect()
        eq(int(c.stats()["threads"]), n, "stats threads with --threads %d" % n)
        c.must_set(b"ctr", b"0")
        errors = hammer(srv, 8, 150)
        eq(errors, [], "errors with --threads %d" % n)
        # Concurrent increments are atomic.
        incr_errors = []

        def incr(t):
            try:
                cc = srv.connect()
                for _ in range(200):
                    line = cc.request(b"incr ctr 1\r\n")
                    if not re.match(rb"\d+\r\n$", line):
                        incr_errors.append(line)
                cc.close()
            except Exception as e:
                incr_errors.append(repr(e))
        ts = [threading.Thread(target=incr, args=(t,)) for t in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        eq(incr_errors, [], "incr replies")
        got = c.get(b"ctr")
        check(got is not None and got[1].rstrip(b" ") == b"1200",
              "counter after 6 x 200 concurrent incr with --threads %d: %r" % (n, got))
        srv.stop()


@suite.test(cloister_only=True)
def two_daemons_two_ports(env):
    a, b = env.start_server(), env.start_server()
    check(a.port != b.port, "two daemons with --listen 127.0.0.1:0 got the same port %d" % a.port)
    a.connect().must_set(b"k", b"a")
    b.connect().must_set(b"k", b"b")
    eq(a.connect().get(b"k"), (0, b"a"), "daemon a")
    eq(b.connect().get(b"k"), (0, b"b"), "daemon b")


if __name__ == "__main__":
    suite.main()
