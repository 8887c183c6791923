# modes: plain
# timeout: 240
"""test_tamper.py - the test plays the adversary on cloisterd's value arena.

cloisterd runs with --arena-file, so the untrusted arena is a file this
process maps (MAP_SHARED, like the daemon) and changes behind the daemon's
back.  The brief's guarantee: every read of an affected key is an error or
a correct value - never altered, foreign or stale data.

How values are found: the arena starts zeroed and a set changes exactly
the bytes of that value's sealed copy, so diffing the file before and
after each set gives the key's region.  Then:
  (a) bit flips inside chosen regions, and random byte flips anywhere in
      the used part of the arena -> exactly the keys whose region was hit
      fail with "SERVER_ERROR ... integrity ...", all others read correctly,
      and stats integrity_failures counts the failures;
  (b) two equal-length sealed values swapped, or one copied over another
      -> both (resp. the overwritten one) fail, neither shows the other's
      value;
  (c) the whole arena snapshotted, keys overwritten (and deleted), the
      snapshot restored -> overwritten keys fail (never the old or new
      value), deleted keys stay deleted, untouched keys read correctly;
      and one value's old ciphertext replayed into its current place fails;
  (d) after a failure, writing the key again makes it readable again.
Plus: neither the plaintext of values nor the keys ever appear in the
arena file.  Cloister only (memcached has no sealed arena).

Run: /usr/bin/python3 tests/blackbox/test_tamper.py --build build [--seed N]
"""

import mmap
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq, fail  # noqa: E402

suite = H.Suite("tamper")
MEMORY_MB = 8
BLOCK = 4096


class Arena:
    """The arena file, mapped shared and read/write, with a diff of what
    the daemon changed since the last look (kept per 1 MiB page, so an
    unchanged page costs one memcmp)."""

    PAGE = 1 << 20

    def __init__(self, path):
        self.f = open(path, "r+b")
        self.size = os.fstat(self.f.fileno()).st_size
        check(self.size > 0, "arena file %s is empty" % path)
        self.mm = mmap.mmap(self.f.fileno(), 0)
        self.resync()

    def resync(self):
        """Takes the current contents as the base of the next diff."""
        self.pages = [self.mm[p:p + self.PAGE] for p in range(0, self.size, self.PAGE)]

    def changes(self):
        """[start, end) ranges that changed since the last call (ranges
        closer than 64 bytes are merged)."""
        ranges = []
        for i, p in enumerate(range(0, self.size, self.PAGE)):
            cur, old = self.mm[p:p + self.PAGE], self.pages[i]
            if cur == old:
                continue
            self.pages[i] = cur
            for q in range(0, len(cur), BLOCK):
                x, y = old[q:q + BLOCK], cur[q:q + BLOCK]
                if x == y:
                    continue
                lo, hi = p + q + first_diff(x, y), p + q + len(x) - first_diff(x[::-1], y[::-1])
                if ranges and lo - ranges[-1][1] < 64:
                    ranges[-1][1] = hi
                else:
                    ranges.append([lo, hi])
        return [tuple(r) for r in ranges]

    def read(self, start, end):
        return self.mm[start:end]

    def write(self, start, data):
        self.mm[start:start + len(data)] = data

    def flip_bit(self, off, bit):
        self.mm[off] ^= 1 << bit

    def snapshot(self):
        return self.mm[:]

    def restore(self, snap):
        self.mm[:] = snap
        self.resync()


def first_diff(x, y):
    """Index of the first byte where x and y (equal length, different) differ."""
    lo, hi = 0, len(x)          # x[:lo] == y[:lo], x[:hi] != y[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if x[:mid] == y[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def launch(env, **kw):
    path = os.path.join(env.tmp, "arena-%s.bin" % env._case)
    srv = env.start_server(memory=MEMORY_MB, arena_file=path, **kw)
    check(os.path.exists(path), "cloisterd did not create --arena-file %s" % path)
    return srv, srv.connect(), Arena(path)


def store(c, arena, key, value, flags=0):
    """Sets key and returns the arena region its sealed value occupies."""
    c.must_set(key, value, flags)
    ranges = arena.changes()
    check(ranges, "set of %d bytes under %r changed nothing in the arena file" % (len(value), key))
    start, end = max(ranges, key=lambda r: r[1] - r[0])
    n = end - start
    check(len(value) - 8 <= n <= len(value) + 64,
          "set of %d bytes under %r changed %d bytes in %d ranges %r"
          % (len(value), key, n, len(ranges), ranges[:4]))
    return start, end


def populate(env, c, arena, n, lengths, prefix=b"k"):
    """n keys with random values of lengths drawn from `lengths`."""
    items = {}
    for i in range(n):
        k = b"%s%04d" % (prefix, i)
        v = env.rng.randbytes(env.rng.choice(lengths))
        items[k] = [v, store(c, arena, k, v, flags=i)]
    return items


def read_key(c, key, cmd=b"get"):
    """("value", flags, data) | ("miss",) | ("error", line) for one key."""
    c.send(b"%s %s\r\n" % (cmd, key))
    line = c.read_line("%s %r" % (cmd.decode(), key))
    if line.startswith(b"SERVER_ERROR"):
        return ("error", line)
    if line == b"END\r\n":
        return ("miss",)
    m = re.match(rb"VALUE (\S+) (\d+) (\d+)( \d+)?\r\n$", line)
    check(m and m.group(1) == key, "%s %r: unexpected line %r" % (cmd.decode(), key, line))
    data = c.read_exact(int(m.group(3)) + 2)[:-2]
    c.expect(b"END\r\n", "END after the value of %r" % key)
    return ("value", int(m.group(2)), data)


def expect_integrity_error(c, key, what):
    for cmd in (b"get", b"gets"):
        r = read_key(c, key, cmd)
        if r[0] == "value":
            fail("%s: %s %r returned %d bytes of data instead of an error" % (what, cmd.decode(), key, len(r[2])))
        check(r[0] == "error" and b"integrity" in r[1].lower(),
              "%s: %s %r -> %r (want SERVER_ERROR mentioning integrity)" % (what, cmd.decode(), key, r))
    line = c.request(b"mg %s v f\r\n" % key)
    check(line.startswith(b"SERVER_ERROR") and b"integrity" in line.lower(),
          "%s: mg %r v -> %r" % (what, key, line))
    c.sync()        # a single error line, nothing after it


def expect_value(c, key, value, flags, what):
    r = read_key(c, key)
    check(r == ("value", flags, value), "%s: get %r -> %s, expected its %d-byte value"
          % (what, key, H.short(r), len(value)))


def integrity_failures(c):
    s = c.stats()
    check("integrity_failures" in s, "stats has no integrity_failures")
    return int(s["integrity_failures"])


@suite.test(cloister_only=True)
def bit_flips(env):
    srv, c, arena = launch(env)
    eq(integrity_failures(c), 0, "integrity_failures at start")
    items = populate(env, c, arena, 300, [40, 100, 300, 700, 1000])
    numbers = {}
    for i in range(5):
        k = b"num%d" % i
        v = b"%d" % (1000000 + i)
        numbers[k] = [v, store(c, arena, k, v)]
    keys = sorted(items)
    victims = set(env.rng.sample(keys, 100))
    for k in victims:
        start, end = items[k][1]
        for _ in range(env.rng.randint(1, 3)):
            arena.flip_bit(env.rng.randrange(start, end), env.rng.randrange(8))
    for k in numbers:
        arena.flip_bit(numbers[k][1][0], 0)
    print("    flipped bits in %d of %d values (seed %d)" % (len(victims), len(keys), env.opts.seed))

    before = integrity_failures(c)
    failed_reads = 0
    for i, k in enumerate(keys):
        if k in victims:
            expect_integrity_error(c, k, "bit flip")
            failed_reads += 3
        else:
            expect_value(c, k, items[k][0], i, "untouched key beside bit flips")
    after = integrity_failures(c)
    check(len(victims) <= after - before <= failed_reads,
          "integrity_failures grew by %d for %d altered keys read %d times"
          % (after - before, len(victims), failed_reads))

    # A multi-key get with one altered key is one error line, no data.
    good1, good2 = [k for k in keys if k not in victims][:2]
    bad = sorted(victims)[0]
    line = c.request(b"get %s %s %s\r\n" % (good1, bad, good2))
    check(line.startswith(b"SERVER_ERROR") and b"integrity" in line.lower(),
          "multi-get with an altered key: %r" % line)
    c.sync()
    # Read-modify-write on an altered value fails too and changes nothing.
    for k, cmd in zip(sorted(victims)[1:4], (b"append %s 0 0 1\r\nx\r\n", b"prepend %s 0 0 1\r\nx\r\n",
                                             b"ms %s 1 MA\r\nx\r\n")):
        line = c.request(cmd.replace(b"%s", k))
        check(line.startswith(b"SERVER_ERROR"), "%r on an altered value: %r" % (cmd, line))
        expect_integrity_error(c, k, "after a refused append")
    for k in numbers:
        line = c.request(b"incr %s 1\r\n" % k)
        check(line.startswith(b"SERVER_ERROR") and b"integrity" in line.lower(),
              "incr of an altered number: %r" % line)
        line = c.request(b"ma %s v\r\n" % k)
        check(line.startswith(b"SERVER_ERROR"), "ma of an altered number: %r" % line)
        c.sync()

    # (d) Writing an altered key again heals it.
    arena.resync()
    for k in sorted(victims)[:50]:
        v = env.rng.randbytes(len(items[k][0]))
        c.must_set(k, v, 7)
        expect_value(c, k, v, 7, "rewritten after a failure")
    for k in sorted(victims)[50:60]:
        c.call(b"delete %s\r\n" % k, b"DELETED\r\n", "delete of an altered key")
        c.call(b"get %s\r\n" % k, b"END\r\n")
    for k in numbers:
        c.must_set(k, b"5")
        c.call(b"incr %s 1\r\n" % k, b"6\r\n", "incr after rewriting an altered number")
    settled = integrity_failures(c)
    for k in sorted(victims)[:50]:
        read_key(c, k)
    eq(integrity_failures(c), settled, "integrity_failures after reading healed keys")


@suite.test(cloister_only=True)
def random_byte_flips(env):
    """Flips anywhere in the used part of the arena, including slack between
    values: exactly the keys whose bytes were hit fail."""
    srv, c, arena = launch(env)
    items = populate(env, c, arena, 250, [64, 200, 333, 900])
    # "Used" = every 4 KiB block holding part of a value (slack included).
    blocks = sorted({b for _, (s, e) in items.values() for b in range(s // BLOCK, (e - 1) // BLOCK + 1)})
    hits = set()
    for _ in range(150):
        off = env.rng.choice(blocks) * BLOCK + env.rng.randrange(BLOCK)
        arena.write(off, bytes([arena.read(off, off + 1)[0] ^ env.rng.randrange(1, 256)]))
        hits.add(off)
    affected = {k for k, (_, (s, e)) in items.items() if any(s <= h < e for h in hits)}
    print("    150 random byte flips in %d used blocks hit %d of %d values"
          % (len(blocks), len(affected), len(items)))
    check(affected, "no flip landed in a value (seed %d): widen the test" % env.opts.seed)
    for i, k in enumerate(sorted(items)):
        if k in affected:
            expect_integrity_error(c, k, "random byte flip")
        else:
            expect_value(c, k, items[k][0], i, "key whose bytes were not flipped")


@suite.test(cloister_only=True)
def swap_and_copy(env):
    srv, c, arena = launch(env)
    L = 512
    items = populate(env, c, arena, 80, [L])
    exact = sorted(k for k, (v, (s, e)) in items.items() if e - s == L)
    check(len(exact) >= 40, "only %d of 80 equal-length values have a clear %d-byte region"
          % (len(exact), L))
    env.rng.shuffle(exact)
    pairs = [(exact[2 * i], exact[2 * i + 1]) for i in range(10)]
    for a, b in pairs:
        (sa, ea), (sb, eb) = items[a][1], items[b][1]
        ca, cb = arena.read(sa, ea), arena.read(sb, eb)
        arena.write(sa, cb)
        arena.write(sb, ca)
    copies = [(exact[20 + 2 * i], exact[21 + 2 * i]) for i in range(5)]   # src, dst
    for src, dst in copies:
        (ss, es), dst_start = items[src][1], items[dst][1][0]
        arena.write(dst_start, arena.read(ss, es))
    for a, b in pairs:
        expect_integrity_error(c, a, "swapped with %r" % b)
        expect_integrity_error(c, b, "swapped with %r" % a)
    for src, dst in copies:
        expect_integrity_error(c, dst, "overwritten with the sealed value of %r" % src)
        expect_value(c, src, items[src][0], int(src[1:]), "source of a copy")
    # Swapping back restores both: the check binds bytes to key and version, not place.
    for a, b in pairs[:3]:
        (sa, ea), (sb, eb) = items[a][1], items[b][1]
        ca, cb = arena.read(sa, ea), arena.read(sb, eb)
        arena.write(sa, cb)
        arena.write(sb, ca)
        expect_value(c, a, items[a][0], int(a[1:]), "swapped back")
        expect_value(c, b, items[b][0], int(b[1:]), "swapped back")
    for a, b in pairs[3:]:
        for k in (a, b):
            v = env.rng.randbytes(L)
            c.must_set(k, v)
            expect_value(c, k, v, 0, "rewritten after a swap")


@suite.test(cloister_only=True)
def rollback(env):
    srv, c, arena = launch(env)
    items = populate(env, c, arena, 200, [128, 512, 800])
    snap = arena.snapshot()
    keys = sorted(items)
    env.rng.shuffle(keys)
    same_len, new_len, deleted = keys[:40], keys[40:60], keys[60:70]
    untouched = keys[70:]
    for k in same_len:
        c.must_set(k, env.rng.randbytes(len(items[k][0])))
    for k in new_len:
        c.must_set(k, env.rng.randbytes(len(items[k][0]) + 37), flags=3)
    for k in deleted:
        c.call(b"delete %s\r\n" % k, b"DELETED\r\n")
    arena.restore(snap)
    print("    arena rolled back: %d overwritten, %d deleted, %d untouched"
          % (len(same_len) + len(new_len), len(deleted), len(untouched)))
    for k in same_len + new_len:
        expect_integrity_error(c, k, "overwritten, then arena rolled back")
    for k in deleted:
        c.call(b"get %s\r\n" % k, b"END\r\n", "deleted, then arena rolled back")
    for k in untouched:
        expect_value(c, k, items[k][0], int(k[1:]), "untouched across the rollback")

    # One value replayed: its older ciphertext put back where it now lives.
    arena.resync()
    k = next(k for k in untouched if items[k][1][1] - items[k][1][0] == len(items[k][0]))
    old = arena.read(*items[k][1])
    for attempt in range(5):                   # until the new region is exact
        s2, e2 = store(c, arena, k, env.rng.randbytes(len(old)), flags=9)
        if e2 - s2 == len(old):
            break
    eq(e2 - s2, len(old), "length of the rewritten value's region")
    arena.write(s2, old)
    expect_integrity_error(c, k, "older ciphertext replayed")

    # (d) Rewriting heals every affected key.
    for k in same_len + new_len + [k]:
        v = env.rng.randbytes(100)
        c.must_set(k, v, flags=1)
        expect_value(c, k, v, 1, "rewritten after the rollback")


@suite.test(cloister_only=True)
def arena_holds_no_plaintext(env):
    srv, c, arena = launch(env)
    marker = b"PLAINTEXT-MARKER-" + env.rng.randbytes(8).hex().encode()
    keyname = b"secret-key-name-" + env.rng.randbytes(8).hex().encode()
    c.must_set(keyname, marker * 20)
    c.must_set(b"zeros", b"\0" * 4096)
    c.must_set(b"pattern", b"ABCD" * 1000)
    data = arena.snapshot()
    check(marker not in data, "a value's plaintext is in the arena file")
    check(keyname not in data, "a key is in the arena file")
    check(b"ABCDABCDABCDABCD" not in data, "a value's plaintext pattern is in the arena file")
    total = sum(e - s for s, e in arena.changes())
    want = len(marker) * 20 + 4096 + 4000
    check(want - 64 <= total, "only %d arena bytes changed for %d bytes of values" % (total, want))

if __name__ == "__main__":
    suite.main()
