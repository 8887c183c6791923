# modes: plain tls
# timeout: 180
"""test_text_protocol.py - memcached's classic text commands, byte for byte.

Every command of memcached 1.6's protocol.txt text section against a fresh
server: retrieval (get/gets/gat/gats, multi-key), storage (set/add/replace/
append/prepend/cas with their failure paths), delete, incr/decr (wrap, floor,
errors), touch, flush_all (also delayed), version, verbosity, stats (shape
and counters), noreply on every command that has it, pipelining, large and
binary values, expiry and quit.  Replies are compared byte for byte where
the protocol defines them; where memcached may differ in a detail the
protocol leaves open (space padding after decr), the test says so.

Run: /usr/bin/python3 tests/blackbox/test_text_protocol.py --build build [--mode tls]
     [--server memcached] to check the tests themselves against memcached.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("text protocol")


@suite.test
def get_multi(env):
    c = env.server().connect()
    a, b, d = env.key("a"), env.key("b"), env.key("d")
    miss = env.key("missing")
    c.call(b"set %s 1 0 3\r\none\r\nset %s 4294967295 0 0\r\n\r\nset %s 77 0 5\r\nthree\r\n" % (a, b, d),
           b"STORED\r\n" * 3)
    c.call(b"get %s\r\n" % miss, b"END\r\n")
    c.call(b"get %s %s %s %s %s\r\n" % (a, b, miss, d, a),
           b"VALUE %s 1 3\r\none\r\nVALUE %s 4294967295 0\r\n\r\nVALUE %s 77 5\r\nthree\r\n"
           b"VALUE %s 1 3\r\none\r\nEND\r\n" % (a, b, d, a))
    # gets: the same, with a CAS unique per item that is stable between reads.
    c.send(b"gets %s %s %s %s\r\n" % (a, miss, d, a))
    items = c.read_values()
    eq([(k, f, v) for k, f, v, _ in items], [(a, 1, b"one"), (d, 77, b"three"), (a, 1, b"one")],
       "gets items")
    check(items[0][3] == items[2][3], "gets: same item, different CAS %r" % items)
    check(items[0][3] != items[1][3], "gets: two items share a CAS %r" % items)
    # A long request line (about 5 KB) with many keys is one command.
    keys = [env.key("long-%03d-%s" % (i, "x" * 30)) for i in range(100)]
    for i, k in enumerate(keys[::2]):
        c.must_set(k, b"v%d" % i)
    c.send(b"get " + b" ".join(keys) + b"\r\n")
    got = c.read_values("100-key get")
    eq([(k, v) for k, _, v, _ in got], [(k, b"v%d" % i) for i, k in enumerate(keys[::2])],
       "100-key get")


@suite.test
def gat_and_gats(env):
    c = env.server().connect()
    k, miss = env.key("k"), env.key("miss")
    c.must_set(k, b"hello", flags=3)
    cas = c.gets(k)[2]
    c.call(b"gat 100 %s %s\r\n" % (k, miss), b"VALUE %s 3 5\r\nhello\r\nEND\r\n" % k)
    c.call(b"gats 100 %s %s\r\n" % (miss, k), b"VALUE %s 3 5 %d\r\nhello\r\nEND\r\n" % (k, cas))
    # The touch really happens: a negative exptime expires the item.
    c.call(b"gat -1 %s\r\n" % k, b"VALUE %s 3 5\r\nhello\r\nEND\r\n" % k)
    c.call(b"get %s\r\n" % k, b"END\r\n")
    c.call(b"gat 10 %s\r\n" % k, b"END\r\n")


@suite.test
def storage_commands(env):
    c = env.server().connect()
    k, nx = env.key("k"), env.key("absent")
    c.call(b"add %s 5 0 2\r\nab\r\n" % k, b"STORED\r\n")
    c.call(b"add %s 6 0 2\r\nxx\r\n" % k, b"NOT_STORED\r\n")
    c.call(b"get %s\r\n" % k, b"VALUE %s 5 2\r\nab\r\nEND\r\n" % k)
    c.call(b"replace %s 6 0 3\r\nabc\r\n" % k, b"STORED\r\n")
    c.call(b"get %s\r\n" % k, b"VALUE %s 6 3\r\nabc\r\nEND\r\n" % k)
    # append/prepend keep the item's flags and ignore theirs.
    c.call(b"append %s 9 0 2\r\nde\r\n" % k, b"STORED\r\n")
    c.call(b"prepend %s 9 0 2\r\nzz\r\n" % k, b"STORED\r\n")
    c.call(b"get %s\r\n" % k, b"VALUE %s 6 7\r\nzzabcde\r\nEND\r\n" % k)
    for cmd in (b"replace", b"append", b"prepend"):
        c.call(b"%s %s 0 0 1\r\nx\r\n" % (cmd, nx), b"NOT_STORED\r\n", cmd.decode() + " on absent key")
    c.call(b"get %s\r\n" % nx, b"END\r\n")
    # set overwrites whatever is there, including with an empty value.
    c.call(b"set %s 0 0 0\r\n\r\n" % k, b"STORED\r\n")
    c.call(b"get %s\r\n" % k, b"VALUE %s 0 0\r\n\r\nEND\r\n" % k)


@suite.test
def cas_command(env):
    c = env.server().connect()
    k, nx = env.key("k"), env.key("absent")
    c.must_set(k, b"v1")
    _, _, cas1 = c.gets(k)
    c.call(b"cas %s 8 0 2 %d\r\nv2\r\n" % (k, cas1), b"STORED\r\n")
    flags, val, cas2 = c.gets(k)
    eq((flags, val), (8, b"v2"), "after cas")
    check(cas2 != cas1, "cas did not change the CAS unique (%d)" % cas1)
    c.call(b"cas %s 0 0 2 %d\r\nv3\r\n" % (k, cas1), b"EXISTS\r\n", "cas with a stale unique")
    c.call(b"get %s\r\n" % k, b"VALUE %s 8 2\r\nv2\r\nEND\r\n" % k)
    c.call(b"cas %s 0 0 2 %d\r\nv3\r\n" % (nx, cas2), b"NOT_FOUND\r\n", "cas on an absent key")
    c.call(b"get %s\r\n" % nx, b"END\r\n")
    # Every write makes a new unique, also append and incr.
    c.call(b"append %s 0 0 1\r\nx\r\n" % k, b"STORED\r\n")
    cas3 = c.gets(k)[2]
    check(cas3 not in (cas1, cas2), "append kept an old CAS unique")
    c.call(b"cas %s 0 0 1 %d\r\nx\r\n" % (k, cas2), b"EXISTS\r\n")


@suite.test
def delete_command(env):
    c = env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    c.call(b"delete %s\r\n" % k, b"DELETED\r\n")
    c.call(b"get %s\r\n" % k, b"END\r\n")
    c.call(b"delete %s\r\n" % k, b"NOT_FOUND\r\n")
    c.call(b"add %s 0 0 1\r\ny\r\n" % k, b"STORED\r\n", "add after delete")


@suite.test
def incr_decr(env):
    c = env.server().connect()
    n, s, nx = env.key("n"), env.key("s"), env.key("absent")
    c.must_set(n, b"10", flags=4)
    c.call(b"incr %s 5\r\n" % n, b"15\r\n")
    c.call(b"incr %s 00005\r\n" % n, b"20\r\n")
    c.call(b"decr %s 3\r\n" % n, b"17\r\n")
    c.call(b"decr %s 100\r\n" % n, b"0\r\n", "decr floors at 0")
    got = c.get(n)      # flags kept; protocol.txt allows space padding after decr
    check(got is not None and (got[0], got[1].rstrip(b" ")) == (4, b"0"), "get after decr: %r" % (got,))
    c.must_set(n, b"18446744073709551615")
    c.call(b"incr %s 2\r\n" % n, b"1\r\n", "incr wraps at 2^64")
    c.call(b"incr %s 18446744073709551615\r\n" % n, b"0\r\n")
    c.must_set(n, b"99")
    c.call(b"incr %s 1\r\n" % n, b"100\r\n")
    c.call(b"get %s\r\n" % n, b"VALUE %s 0 3\r\n100\r\nEND\r\n" % n, "incr that grows the value")
    c.call(b"decr %s 1\r\n" % n, b"99\r\n")
    # protocol.txt allows the shorter number to be space-padded.
    got = c.get(n)
    check(got is not None and got[1].rstrip(b" ") == b"99", "get after decr: %r" % (got,))
    c.call(b"incr %s 1\r\n" % nx, b"NOT_FOUND\r\n")
    c.call(b"decr %s 1\r\n" % nx, b"NOT_FOUND\r\n")
    for bad in (b"abc", b"-1", b"18446744073709551616"):
        c.call(b"incr %s %s\r\n" % (n, bad), b"CLIENT_ERROR invalid numeric delta argument\r\n",
               "incr by %r" % bad)
    for val in (b"abc", b"-10", b"", b"123456789012345678901", b"18446744073709551616"):
        c.must_set(s, val)
        c.call(b"incr %s 1\r\n" % s, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
               "incr on %r" % val)
        c.call(b"get %s\r\n" % s, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (s, len(val), val),
               "value left alone after a failed incr")


@suite.test
def touch_command(env):
    c = env.server().connect()
    k, nx = env.key("k"), env.key("absent")
    c.must_set(k, b"x", exptime=1000)
    c.call(b"touch %s 0\r\n" % k, b"TOUCHED\r\n")
    c.call(b"touch %s 10\r\n" % nx, b"NOT_FOUND\r\n")
    c.call(b"get %s\r\n" % k, b"VALUE %s 0 1\r\nx\r\nEND\r\n" % k)
    c.call(b"touch %s -1\r\n" % k, b"TOUCHED\r\n")
    c.call(b"get %s\r\n" % k, b"END\r\n", "after touch -1")


@suite.test
def flush_all_now(env):
    srv = env.start_server()
    c = srv.connect()
    keys = [b"f%d" % i for i in range(20)]
    for k in keys:
        c.must_set(k, k)
    c.call(b"flush_all\r\n", b"OK\r\n")
    c.send(b"get " + b" ".join(keys) + b"\r\n")
    eq(c.read_values(), [], "get after flush_all")
    # Written after the flush, even within the same second: visible.
    c.must_set(b"after", b"1")
    eq(c.get(b"after"), (0, b"1"), "item written after flush_all")
    c.call(b"flush_all 0\r\n", b"OK\r\n")
    eq(c.get(b"after"), None, "after flush_all 0")
    c.must_set(b"again", b"1")
    c.call(b"flush_all noreply\r\n", b"")
    c.sync()
    eq(c.get(b"again"), None, "after flush_all noreply")


@suite.test
def version_and_verbosity(env):
    c = env.server().connect()
    line = c.request(b"version\r\n")
    check(re.match(rb"VERSION [0-9][0-9A-Za-z.+~-]*\r\n$", line), "version reply %r" % line)
    c.call(b"verbosity 1\r\n", b"OK\r\n")
    c.call(b"verbosity 0\r\n", b"OK\r\n")
    c.call(b"verbosity 1 noreply\r\n", b"")
    c.sync()
    c.call(b"verbosity 0\r\n", b"OK\r\n")


STAT_INTS = ("pid", "uptime", "time", "curr_connections", "total_connections", "cmd_get",
             "cmd_set", "cmd_flush", "cmd_touch", "get_hits", "get_misses", "get_expired",
             "get_flushed", "delete_hits", "delete_misses", "incr_hits", "incr_misses",
             "decr_hits", "decr_misses", "cas_hits", "cas_misses", "cas_badval", "touch_hits",
             "touch_misses", "bytes", "curr_items", "total_items", "limit_maxbytes", "threads",
             "evictions")


@suite.test
def stats_command(env):
    srv = env.start_server(memory=32)
    c = srv.connect()
    s0 = c.stats()
    for name in STAT_INTS:
        check(name in s0, "stats has no %s" % name)
        check(re.match(r"\d+$", s0[name]), "stats %s is not a number: %r" % (name, s0[name]))
    eq(int(s0["pid"]), srv.pid, "stats pid")
    check(abs(int(s0["time"]) - time.time()) < 5, "stats time %s is not now" % s0["time"])
    version = c.request(b"version\r\n")[len(b"VERSION "):-2].decode()
    eq(s0.get("version"), version, "stats version")
    eq(int(s0["limit_maxbytes"]), 32 << 20, "limit_maxbytes with 32 MB")
    check(int(s0["curr_connections"]) >= 1, "curr_connections %s" % s0["curr_connections"])

    c.call(b"set a 0 0 1\r\n1\r\nset b 0 0 5\r\nhello\r\n", b"STORED\r\nSTORED\r\n")
    c.call(b"get a b nope\r\n", b"VALUE a 0 1\r\n1\r\nVALUE b 0 5\r\nhello\r\nEND\r\n")
    c.call(b"delete b\r\ndelete b\r\n", b"DELETED\r\nNOT_FOUND\r\n")
    c.call(b"incr a 1\r\nincr nope 1\r\ndecr a 1\r\ndecr nope 1\r\n", b"2\r\nNOT_FOUND\r\n1\r\nNOT_FOUND\r\n")
    c.call(b"touch a 0\r\ntouch nope 0\r\n", b"TOUCHED\r\nNOT_FOUND\r\n")
    cas = c.gets(b"a")[2]
    c.call(b"cas a 0 0 1 %d\r\n5\r\ncas a 0 0 1 %d\r\n6\r\ncas nope 0 0 1 1\r\n7\r\n" % (cas, cas),
           b"STORED\r\nEXISTS\r\nNOT_FOUND\r\n")
    other = srv.connect()
    other.sync()
    s1 = c.stats()
    want = {"cmd_get": 4, "get_hits": 3, "get_misses": 1, "cmd_set": 2 + 3, "curr_items": 1,
            "delete_hits": 1, "delete_misses": 1, "incr_hits": 1,
            "incr_misses": 1, "decr_hits": 1, "decr_misses": 1, "touch_hits": 1,
            "touch_misses": 1, "cmd_touch": 2, "cas_hits": 1, "cas_badval": 1, "cas_misses": 1,
            "curr_connections": 1}
    got = {k: int(s1[k]) - int(s0[k]) for k in want}
    eq(got, want, "stats counter deltas")
    # 2 sets and a cas stored items; whether incr/decr count as stores is
    # the server's choice (memcached: only when the number changes length).
    total = int(s1["total_items"]) - int(s0["total_items"])
    check(3 <= total <= 5, "total_items grew by %d" % total)
    check(int(s1["total_connections"]) > int(s0["total_connections"]), "total_connections did not grow")
    check(int(s1["bytes"]) > int(s0["bytes"]), "bytes did not grow with an item stored")
    c.call(b"flush_all\r\n", b"OK\r\n")
    eq(int(c.stats()["cmd_flush"]) - int(s1["cmd_flush"]), 1, "cmd_flush delta")
    other.close()
    deadline = time.monotonic() + 5
    while int(c.stats()["curr_connections"]) != int(s0["curr_connections"]):
        check(time.monotonic() < deadline, "curr_connections did not drop after a close")
        time.sleep(0.05)


@suite.test
def noreply_everywhere(env):
    c = env.server().connect()
    k, n, gone = env.key("k"), env.key("n"), env.key("gone")
    c.must_set(gone, b"x")
    c.must_set(n, b"5")
    cas = None
    c.send(b"set %s 1 0 1 noreply\r\na\r\n" % k)
    c.send(b"add %s 0 0 1 noreply\r\nX\r\n" % k)           # NOT_STORED, silently
    c.send(b"replace %s 2 0 1 noreply\r\nb\r\n" % k)
    c.send(b"append %s 0 0 1 noreply\r\nc\r\n" % k)
    c.send(b"prepend %s 0 0 1 noreply\r\nd\r\n" % k)
    c.send(b"incr %s 10 noreply\r\ndecr %s 3 noreply\r\n" % (n, n))
    c.send(b"touch %s 1000 noreply\r\n" % k)
    c.send(b"delete %s noreply\r\ndelete %s noreply\r\n" % (gone, gone))
    c.sync()
    c.call(b"get %s %s %s\r\n" % (k, n, gone), b"VALUE %s 2 3\r\ndbc\r\nVALUE %s 0 2\r\n12\r\nEND\r\n" % (k, n))
    cas = c.gets(k)[2]
    c.send(b"cas %s 0 0 1 %d noreply\r\nz\r\ncas %s 0 0 1 %d noreply\r\ny\r\n" % (k, cas, k, cas))
    c.sync()
    eq(c.get(k), (0, b"z"), "after cas noreply (second one must have failed)")


@suite.test
def pipelining(env):
    """Thousands of commands (about 60 KB, several TLS records) in a single
    send; replies in order."""
    c = env.server().connect()
    rng = env.rng
    req, want = [], []
    present = {}
    for i in range(2500):
        k = env.key("p%d" % rng.randrange(50))
        op = rng.choice(("set", "get", "delete", "incr", "mn"))
        if op == "set":
            v = b"%d" % rng.randrange(1000)
            req.append(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
            want.append(b"STORED\r\n")
            present[k] = v
        elif op == "get":
            req.append(b"get %s\r\n" % k)
            want.append((b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(present[k]), present[k]) if k in present else b"")
                        + b"END\r\n")
        elif op == "delete":
            req.append(b"delete %s\r\n" % k)
            want.append(b"DELETED\r\n" if present.pop(k, None) is not None else b"NOT_FOUND\r\n")
        elif op == "incr":
            req.append(b"incr %s 1\r\n" % k)
            if k in present:
                present[k] = b"%d" % (int(present[k]) + 1)
                want.append(present[k] + b"\r\n")
            else:
                want.append(b"NOT_FOUND\r\n")
        else:
            req.append(b"mn\r\n")
            want.append(b"MN\r\n")
    c.call(b"".join(req), b"".join(want), "2500 pipelined commands")


@suite.test
def large_value(env):
    c = env.server().connect()
    k = env.key("big")
    v = env.rng.randbytes((1 << 20) - 512)      # more than any single TCP/TLS read
    c.must_set(k, v, flags=12)
    eq(c.get(k), (12, v), "1 MiB - 512 value")
    # Two large reads back to back on one connection stay in sync.
    c.send(b"get %s %s\r\n" % (k, k))
    eq([d for _, _, d, _ in c.read_values()], [v, v], "two large values in one reply")
    c.sync()


@suite.test
def binary_safe_values(env):
    c = env.server().connect()
    every = bytes(range(256))
    tricky = b"\r\nEND\r\nVALUE x 0 1\r\n\0\r\n"
    for i, v in enumerate((every, every * 17, tricky, b"\r\n", b"\n", b"\0")):
        k = env.key("bin%d" % i)
        c.must_set(k, v, flags=i)
        eq(c.get(k), (i, v), "binary value %d" % i)
    c.sync()


@suite.test
def expiry(env):
    """Every time-dependent check, sharing one short sleep."""
    srv = env.start_server()
    c = srv.connect()
    now = int(time.time())
    c.must_set(b"ttl1", b"a", exptime=1)
    c.must_set(b"ttl2", b"b", exptime=2)
    c.must_set(b"keep", b"c", exptime=1000)
    c.must_set(b"gat", b"d")
    c.must_set(b"touch", b"e")
    c.must_set(b"abs_future", b"f", exptime=now + 1000)
    c.must_set(b"abs_past", b"g", exptime=now - 10)
    c.must_set(b"negative", b"h", exptime=-1)
    eq(c.get(b"abs_past"), None, "absolute exptime in the past")
    eq(c.get(b"negative"), None, "negative exptime")
    eq(c.get(b"ttl2"), (0, b"b"), "ttl 2 right after set")
    eq(c.get(b"abs_future"), (0, b"f"), "absolute exptime in the future")
    c.call(b"gat 1 gat\r\n", b"VALUE gat 0 1\r\nd\r\nEND\r\n")
    c.call(b"touch touch 1\r\n", b"TOUCHED\r\n")
    c.call(b"gat 0 keep\r\n", b"VALUE keep 0 1\r\nc\r\nEND\r\n")   # 0: never expires
    time.sleep(2.3)
    c.call(b"get ttl1 ttl2 gat touch abs_past negative\r\n", b"END\r\n", "expired items")
    c.call(b"get keep abs_future\r\n", b"VALUE keep 0 1\r\nc\r\nVALUE abs_future 0 1\r\nf\r\nEND\r\n")
    c.call(b"add ttl1 0 0 1\r\nz\r\n", b"STORED\r\n", "add over an expired item")
    # Delayed flush: items stay readable until the delay has passed.
    c.call(b"flush_all 3\r\n", b"OK\r\n")
    c.call(b"get keep\r\n", b"VALUE keep 0 1\r\nc\r\nEND\r\n", "right after flush_all 3")
    time.sleep(3.2)
    c.call(b"get keep abs_future ttl1\r\n", b"END\r\n", "3 s after flush_all 3")
    c.must_set(b"fresh", b"x")
    eq(c.get(b"fresh"), (0, b"x"), "item written after a delayed flush took effect")


@suite.test
def quit_closes(env):
    srv = env.server()
    c = srv.connect()
    k = env.key("k")
    # quit in the middle of a pipeline: earlier commands answered, later ones not.
    c.send(b"set %s 0 0 1\r\nq\r\nquit\r\nget %s\r\n" % (k, k))
    check(c.wait_closed(), "connection still open after quit")
    eq(c.buf, b"STORED\r\n", "bytes before close")
    c.close()
    c = srv.connect()
    c.send(b"quit\r\n")
    check(c.wait_closed(), "connection still open after quit")
    eq(c.buf, b"", "reply to quit")
    eq(srv.connect().get(k), (0, b"q"), "server still serves after quit")


if __name__ == "__main__":
    suite.main()
