# modes: plain tls
# timeout: 180
"""test_meta_protocol.py - memcached's meta commands (mg ms md ma mn me).

Flags per memcached 1.6's doc/protocol.txt: mg v f c s t k O q h l u T N R
(with the W/Z reply flags, one winner across connections), base64 keys (b),
ms modes (MS ME MR MA MP), C compare-and-swap, I invalidation (md I, ms I;
X/W/Z), ma incr/decr/vivify (N J D M T),
quiet mode closed by mn, and the shape of me's debug line.  Replies are
compared byte for byte, except values the server chooses (CAS ids, TTLs
counting down, seconds since last access), which are parsed and bounded.
Reply flags are expected in the order the request gave them, as protocol.txt
and memcached do.

Run: /usr/bin/python3 tests/blackbox/test_meta_protocol.py --build build [--mode tls]
"""

import base64
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
from harness import check, eq  # noqa: E402

suite = H.Suite("meta protocol")


def ttl_line(c, request, pattern, lo, hi):
    """Sends request, matches the reply line against pattern (whose first
    group is a TTL or age) and checks lo <= value <= hi.  Returns the match."""
    line = c.request(request)
    m = re.match(pattern, line)
    check(m, "reply to %r: %r does not match %r" % (request, line, pattern))
    check(lo <= int(m.group(1)) <= hi, "reply to %r: %r, expected %d..%d" % (request, line, lo, hi))
    return m


def number(c, key):
    """The decimal number stored under key (protocol.txt lets a decremented
    number keep trailing spaces)."""
    got = c.get(key)
    check(got is not None and got[1].rstrip(b" ").isdigit(), "get %r: %r" % (key, got))
    return int(got[1])


@suite.test
def mg_basic_flags(env):
    c = env.server().connect()
    k, miss = env.key("k"), env.key("miss")
    c.must_set(k, b"bar", flags=5)
    cas = c.gets(k)[2]
    c.call(b"mg %s\r\n" % k, b"HD\r\n", "mg without flags")
    c.call(b"mg %s v\r\n" % k, b"VA 3\r\nbar\r\n")
    c.call(b"mg %s s v f\r\n" % k, b"VA 3 s3 f5\r\nbar\r\n")
    c.call(b"mg %s v f c s t k Oabc\r\n" % k, b"VA 3 f5 c%d s3 t-1 k%s Oabc\r\nbar\r\n" % (cas, k))
    c.call(b"mg %s c f\r\n" % k, b"HD c%d f5\r\n" % cas, "metadata without the value")
    c.call(b"mg %s k Oopaque123\r\n" % k, b"HD k%s Oopaque123\r\n" % k)
    c.call(b"mg %s v Pproxyhint Lroute\r\n" % k, b"VA 3\r\nbar\r\n", "P and L tokens are ignored")
    c.call(b"mg %s v\r\n" % miss, b"EN\r\n")
    c.call(b"mg %s s f t c\r\n" % miss, b"EN\r\n")
    # Binary-safe value through mg.
    val = bytes(range(256))
    c.must_set(k, val)
    c.call(b"mg %s v s\r\n" % k, b"VA 256 s256\r\n" + val + b"\r\n")


@suite.test
def mg_opaque_on_miss(env):
    """memcached copies O (and k) back on an EN miss, so pipelined clients
    can match misses to requests."""
    c = env.server().connect()
    miss = env.key("miss")
    c.call(b"mg %s v O42\r\n" % miss, b"EN O42\r\n")
    c.call(b"mg %s v k Oa1 s\r\n" % miss, b"EN k%s Oa1\r\n" % miss)


@suite.test
def mg_hit_last_access_and_no_bump(env):
    c = env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    # u: neither marks the item fetched nor bumps it.
    c.call(b"mg %s u h\r\n" % k, b"HD h0\r\n")
    c.call(b"mg %s u h\r\n" % k, b"HD h0\r\n", "second mg with u")
    ttl_line(c, b"mg %s h l\r\n" % k, rb"HD h0 l(\d+)\r\n$", 0, 2)
    c.call(b"mg %s h\r\n" % k, b"HD h1\r\n", "h after a fetch")
    ttl_line(c, b"mg %s v l h\r\n" % k, rb"VA 1 l(\d+) h1\r\n$", 0, 2)
    c.expect(b"x\r\n")


@suite.test
def mg_ttl_and_touch(env):
    c = env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    c.call(b"mg %s t\r\n" % k, b"HD t-1\r\n", "no expiry")
    c.call(b"mg %s T100 t\r\n" % k, b"HD t100\r\n", "T updates the TTL")
    ttl_line(c, b"mg %s t\r\n" % k, rb"HD t(\d+)\r\n$", 98, 100)
    c.must_set(k, b"y", exptime=50)
    ttl_line(c, b"mg %s t v\r\n" % k, rb"VA 1 t(\d+)\r\n$", 48, 50)
    c.expect(b"y\r\n")
    c.call(b"mg %s T-1\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v\r\n" % k, b"EN\r\n", "after T-1")


@suite.test
def mg_quiet(env):
    c = env.server().connect()
    hit, m1, m2 = env.key("hit"), env.key("m1"), env.key("m2")
    c.must_set(hit, b"val")
    # q hides EN (misses) only; hits and HD are still sent.
    c.call(b"mg %s v q\r\nmg %s v q O1\r\nmg %s v q k\r\nmg %s q\r\nmn\r\n" % (m1, hit, m2, hit),
           b"VA 3 O1\r\nval\r\nHD\r\nMN\r\n")
    c.call(b"mg %s q\r\nmn\r\n" % m1, b"MN\r\n")


@suite.test
def mg_vivify(env):
    c = env.server().connect()
    k = env.key("k")
    # N on a miss creates an empty item and tells this client it won (W)...
    ttl_line(c, b"mg %s N30 v t\r\n" % k, rb"VA 0 t(\d+) W\r\n$", 28, 30)
    c.expect(b"\r\n")
    c.call(b"mg %s s v\r\n" % k, b"VA 0 s0 Z\r\n\r\n", "the vivified item")
    # A real write ends the recache.
    c.call(b"ms %s 3 T0\r\nnew\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v N30\r\n" % k, b"VA 3\r\nnew\r\n")


@suite.test
def mg_vivify_later_clients_see_z(env):
    """protocol.txt: after N created the item for one client (W), "further
    requests will see a 'Z' flag" until it is written."""
    c = env.server().connect()
    k = env.key("k")
    c.call(b"mg %s N30 s\r\n" % k, b"HD s0 W\r\n")
    c.call(b"mg %s N30 v\r\n" % k, b"VA 0 Z\r\n\r\n")
    c.call(b"mg %s s\r\n" % k, b"HD s0 Z\r\n")
    c.call(b"ms %s 1\r\nx\r\n" % k, b"HD\r\n")
    c.call(b"mg %s s\r\n" % k, b"HD s1\r\n", "no Z once the item was written")
    # Across connections: one winner, everyone else is told; text get is plain.
    k2 = env.key("k2")
    c1, c2 = env.server().connect(), env.server().connect()
    c1.call(b"mg %s N30 s O1\r\n" % k2, b"HD s0 O1 W\r\n")
    c2.call(b"mg %s N30 s O2\r\n" % k2, b"HD s0 O2 Z\r\n", "a second client")
    c2.call(b"get %s\r\n" % k2, b"VALUE %s 0 0\r\n\r\nEND\r\n" % k2)
    # After a delete the next N client wins again.
    c2.call(b"md %s\r\nmg %s N30 s\r\n" % (k2, k2), b"HD\r\nHD s0 W\r\n")
    c1.call(b"mg %s N30 s\r\n" % k2, b"HD s0 Z\r\n")


@suite.test
def mg_recache(env):
    """R(ttl): a client that finds less TTL left than the token wins (W),
    once; later clients see Z until the item is written again."""
    c1, c2 = env.server().connect(), env.server().connect()
    k, far, never = env.key("k"), env.key("far"), env.key("never")
    c1.call(b"ms %s 1 T10\r\nx\r\n" % k, b"HD\r\n")
    c1.call(b"mg %s R30 v\r\n" % k, b"VA 1 W\r\nx\r\n")
    c2.call(b"mg %s R30 v\r\n" % k, b"VA 1 Z\r\nx\r\n", "the second client")
    c2.call(b"mg %s s\r\n" % k, b"HD s1 Z\r\n", "without R")
    c2.call(b"touch %s 8\r\nmg %s R30 s\r\n" % (k, k), b"TOUCHED\r\nHD s1 Z\r\n", "after a touch")
    c1.call(b"ms %s 1 T10\r\ny\r\n" % k, b"HD\r\n")
    c2.call(b"mg %s R30 s\r\n" % k, b"HD s1 W\r\n", "after a write")
    c1.call(b"ms %s 1 T100\r\nx\r\nmg %s R30 s\r\n" % (far, far), b"HD\r\nHD s1\r\n")
    c1.call(b"ms %s 1\r\nx\r\nmg %s R30 s\r\n" % (never, never), b"HD\r\nHD s1\r\n")


@suite.test
def base64_keys(env):
    c = env.server().connect()
    raw = b"\x00\xff\x00bin\r\n " + env.key("k")        # not a legal text key
    b64 = base64.b64encode(raw)
    c.call(b"ms %s 2 b k\r\nhi\r\n" % b64, b"HD k%s b\r\n" % b64)
    c.call(b"mg %s b k v\r\n" % b64, b"VA 2 k%s b\r\nhi\r\n" % b64)
    c.call(b"ma %s b N0 J7 v\r\n" % base64.b64encode(raw + b"n"), b"VA 1\r\n7\r\n")
    me = c.request(b"me %s b\r\n" % b64)
    check(me.startswith(b"ME %s " % b64), "me with b: %r" % me)
    c.call(b"md %s b k\r\n" % b64, b"HD k%s b\r\n" % b64)
    c.call(b"mg %s b v\r\n" % b64, b"EN\r\n")
    # A plain key reached through its base64 form is the same item.
    plain = env.key("plain")
    c.must_set(plain, b"text")
    c.call(b"mg %s b v\r\n" % base64.b64encode(plain), b"VA 4\r\ntext\r\n")
    line = c.request(b"mg !!!notbase64 b v\r\n")
    check(line.startswith(b"CLIENT_ERROR"), "undecodable base64 key: %r" % line)
    c.sync()


@suite.test
def ms_flags(env):
    c = env.server().connect()
    k = env.key("k")
    line = c.request(b"ms %s 3 T0 F7 c k Oxx\r\nabc\r\n" % k)
    m = re.match(rb"HD c(\d+) k%s Oxx\r\n$" % re.escape(k), line)
    check(m, "ms with c k O: %r" % line)
    cas = int(m.group(1))
    c.call(b"mg %s c f v\r\n" % k, b"VA 3 c%d f7\r\nabc\r\n" % cas, "ms c returns the CAS mg sees")
    eq(c.gets(k)[2], cas, "gets CAS after ms")
    c.call(b"ms %s 1\r\nz\r\n" % k, b"HD\r\n")
    c.call(b"mg %s f v\r\n" % k, b"VA 1 f0\r\nz\r\n", "ms without F sets flags 0")
    c.call(b"ms %s 1 T100\r\nz\r\n" % k, b"HD\r\n")
    ttl_line(c, b"mg %s t\r\n" % k, rb"HD t(\d+)\r\n$", 98, 100)
    c.call(b"ms %s 1 T-1\r\nz\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v\r\n" % k, b"EN\r\n", "ms with a negative TTL")
    c.call(b"ms %s 0\r\n\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v s\r\n" % k, b"VA 0 s0\r\n\r\n", "empty value")
    # q: success is silent, failure is not.
    c.call(b"ms %s 2 q\r\nq1\r\nms %s 2 q ME\r\nq2\r\nmn\r\n" % (k, k), b"NS\r\nMN\r\n")
    c.call(b"mg %s v\r\n" % k, b"VA 2\r\nq1\r\n")


@suite.test
def ms_modes(env):
    c = env.server().connect()
    k, nx = env.key("k"), env.key("absent")
    c.call(b"ms %s 1 ME\r\na\r\n" % k, b"HD\r\n", "add to absent")
    c.call(b"ms %s 1 ME Oq1 k\r\nb\r\n" % k, b"NS Oq1 k%s\r\n" % k, "add to present")
    c.call(b"ms %s 1 MR\r\nb\r\n" % nx, b"NS\r\n", "replace absent")
    c.call(b"ms %s 1 MR F3\r\nc\r\n" % k, b"HD\r\n", "replace present")
    c.call(b"ms %s 2 MA\r\nde\r\n" % k, b"HD\r\n")
    c.call(b"ms %s 2 MP\r\nzz\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v f\r\n" % k, b"VA 5 f3\r\nzzcde\r\n", "after append and prepend")
    c.call(b"ms %s 1 MA\r\nx\r\nms %s 1 MP\r\nx\r\n" % (nx, nx), b"NS\r\nNS\r\n", "append/prepend to absent")
    c.call(b"ms %s 1 MS\r\ns\r\n" % k, b"HD\r\n")
    c.call(b"mg %s v\r\n" % k, b"VA 1\r\ns\r\n")
    c.call(b"mg %s v\r\n" % nx, b"EN\r\n")
    line = c.request(b"ms %s 1 MX\r\nx\r\n" % k)
    check(line.startswith(b"CLIENT_ERROR"), "ms with mode X: %r" % line)
    c.sync()    # the data block of the refused command was skipped
    c.call(b"mg %s v\r\n" % k, b"VA 1\r\ns\r\n", "value after a refused ms")


@suite.test
def ms_compare_cas(env):
    c = env.server().connect()
    k, nx = env.key("k"), env.key("absent")
    cas = int(re.match(rb"HD c(\d+)", c.request(b"ms %s 2 c\r\nv1\r\n" % k)).group(1))
    c.call(b"ms %s 2 C%d\r\nv2\r\n" % (k, cas + 1000), b"EX\r\n", "C with a wrong CAS")
    c.call(b"ms %s 2 C%d\r\nv2\r\n" % (nx, cas), b"NF\r\n", "C on an absent key")
    line = c.request(b"ms %s 2 C%d c\r\nv2\r\n" % (k, cas))
    m = re.match(rb"HD c(\d+)\r\n$", line)
    check(m and int(m.group(1)) != cas, "ms with the right C: %r" % line)
    cas2 = int(m.group(1))
    c.call(b"ms %s 2 C%d\r\nv3\r\n" % (k, cas), b"EX\r\n", "C with the previous CAS")
    c.call(b"ms %s 1 C%d MA\r\n!\r\n" % (k, cas2), b"HD\r\n", "append with the right CAS")
    c.call(b"mg %s v\r\n" % k, b"VA 3\r\nv2!\r\n")
    # The meta CAS is the text protocol's CAS unique.
    cas3 = c.gets(k)[2]
    c.call(b"mg %s c\r\n" % k, b"HD c%d\r\n" % cas3)
    c.call(b"cas %s 0 0 1 %d\r\nt\r\n" % (k, cas3), b"STORED\r\n")
    # As memcached: ME (add) ignores C; MA and MP on an absent key are NS even with C.
    nx2 = env.key("absent2")
    c.call(b"ms %s 1 C%d MA\r\nx\r\nms %s 1 C%d MP\r\nx\r\n" % (nx2, cas, nx2, cas),
           b"NS\r\nNS\r\n", "append/prepend with C to an absent key")
    c.call(b"ms %s 1 C%d ME\r\nx\r\n" % (nx2, cas + 1000), b"HD\r\n", "ME ignores C")
    c.call(b"ms %s 1 C%d ME\r\ny\r\n" % (nx2, cas3), b"NS\r\n", "ME on a present key")


@suite.test
def invalidate(env):
    """I (invalidate): md I marks an item stale and gives it a new CAS; mg
    then reports X, the first client also W, later ones Z; a write ends
    it.  ms I with an older CAS stores the value, but stale."""
    c, c2 = env.server().connect(), env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    cas0 = c.gets(k)[2]
    c.call(b"md %s I T30 k\r\n" % k, b"HD k%s\r\n" % k)
    line = c.request(b"mg %s v c t\r\n" % k)
    m = re.match(rb"VA 1 c(\d+) t(\d+) X W\r\n$", line)
    check(m and 28 <= int(m.group(2)) <= 30, "first mg of a stale item: %r" % line)
    c.expect(b"x\r\n")
    cas = int(m.group(1))
    check(cas != cas0, "md I gives a new CAS: %d, %d" % (cas0, cas))
    c2.call(b"mg %s v c\r\n" % k, b"VA 1 c%d Z X\r\nx\r\n" % cas, "second mg of a stale item")
    c2.call(b"get %s\r\n" % k, b"VALUE %s 0 1\r\nx\r\nEND\r\n" % k, "text get of a stale item")
    # The old CAS is refused; with I it stores, stale, keeping the TTL and the token.
    c2.call(b"ms %s 1 C%d\r\nz\r\n" % (k, cas0), b"EX\r\n", "ms with the pre-invalidation CAS")
    c2.call(b"ms %s 1 C%d I T0\r\nz\r\n" % (k, cas0), b"HD\r\n", "ms I with an older CAS")
    ttl_line(c2, b"mg %s v t\r\n" % k, rb"VA 1 t(\d+) Z X\r\n$", 27, 30)
    c2.expect(b"z\r\n")
    c2.call(b"ms %s 1 C%d I\r\nw\r\n" % (k, cas + 1000000), b"EX\r\n", "ms I with a newer CAS")
    # The winner stores with the current CAS: fresh again, TTL as given.
    cur = int(re.match(rb"HD c(\d+)", c.request(b"mg %s c\r\n" % k)).group(1))
    c.call(b"ms %s 1 C%d I T0\r\ny\r\n" % (k, cur), b"HD\r\n")
    c.call(b"mg %s v t\r\n" % k, b"VA 1 t-1\r\ny\r\n")
    # md I again: the token is handed out again; q hides HD.
    c.call(b"md %s I q\r\nmn\r\n" % k, b"MN\r\n")
    c2.call(b"mg %s s\r\n" % k, b"HD s1 X W\r\n")
    c.call(b"mg %s s\r\n" % k, b"HD s1 Z X\r\n")
    # A plain set ends it; md T without I is a plain delete.
    c.call(b"ms %s 1\r\nv\r\nmg %s s\r\n" % (k, k), b"HD\r\nHD s1\r\n")
    c.call(b"md %s T30\r\nmg %s v\r\n" % (k, k), b"HD\r\nEN\r\n")
    c.call(b"md %s I\r\n" % k, b"NF\r\n")


@suite.test
def md_command(env):
    c = env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    c.call(b"md %s k Oz\r\n" % k, b"HD k%s Oz\r\n" % k)
    c.call(b"md %s\r\n" % k, b"NF\r\n")
    c.call(b"mg %s v\r\n" % k, b"EN\r\n")
    c.must_set(k, b"x")
    cas = c.gets(k)[2]
    c.call(b"md %s C%d\r\n" % (k, cas + 1000), b"EX\r\n", "md with a wrong CAS")
    c.call(b"mg %s v\r\n" % k, b"VA 1\r\nx\r\n")
    c.call(b"md %s C%d\r\n" % (k, cas), b"HD\r\n", "md with the right CAS")
    c.must_set(k, b"x")
    c.call(b"md %s q\r\nmd %s q\r\nmn\r\n" % (k, k), b"NF\r\nMN\r\n", "md q hides HD only")


@suite.test
def ma_command(env):
    c = env.server().connect()
    n, nx, s = env.key("n"), env.key("absent"), env.key("s")
    c.call(b"ma %s\r\n" % nx, b"NF\r\n")
    c.call(b"ma %s v\r\n" % nx, b"NF\r\n")
    c.must_set(n, b"10")
    c.call(b"ma %s\r\n" % n, b"HD\r\n")
    c.call(b"ma %s v\r\n" % n, b"VA 2\r\n12\r\n")
    c.call(b"ma %s D100 v\r\n" % n, b"VA 3\r\n112\r\n")
    c.call(b"ma %s MD D12 v\r\n" % n, b"VA 3\r\n100\r\n")
    c.call(b"ma %s M- v\r\nma %s M+ D2 v\r\nma %s MI v\r\n" % (n, n, n),
           b"VA 2\r\n99\r\nVA 3\r\n101\r\nVA 3\r\n102\r\n", "mode aliases")
    c.call(b"ma %s MD D1000 v\r\n" % n, b"VA 1\r\n0\r\n", "decrement floors at 0")
    c.must_set(n, b"18446744073709551615")
    c.call(b"ma %s v\r\n" % n, b"VA 1\r\n0\r\n", "increment wraps")
    line = c.request(b"ma %s v t c\r\n" % n)
    m = re.match(rb"VA 1 t-1 c(\d+)\r\n$", line)
    check(m, "ma v t c: %r" % line)
    c.expect(b"1\r\n")
    cas = int(m.group(1))
    eq(c.gets(n)[2], cas, "CAS returned by ma c")
    c.call(b"ma %s C%d v\r\n" % (n, cas + 1000), b"EX\r\n", "ma with a wrong CAS")
    c.call(b"ma %s C%d v\r\n" % (n, cas), b"VA 1\r\n2\r\n", "ma with the right CAS")
    c.call(b"ma %s k O7 v\r\n" % n, b"VA 1 k%s O7\r\n3\r\n" % n)
    # Vivify: N creates the item with J (default 0) and returns it unchanged.
    v1, v2 = env.key("viv1"), env.key("viv2")
    c.call(b"ma %s N0 J13 v\r\n" % v1, b"VA 2\r\n13\r\n")
    c.call(b"ma %s N0 J13 v\r\n" % v1, b"VA 2\r\n14\r\n", "second vivify increments")
    c.call(b"ma %s N0 v\r\n" % v2, b"VA 1\r\n0\r\n", "vivify without J")
    m = ttl_line(c, b"ma %s N100 J5 v t\r\n" % env.key("viv3"), rb"VA 1 t(\d+)\r\n$", 98, 100)
    c.expect(b"5\r\n")
    c.call(b"ma %s T0 t v\r\n" % env.key("viv3"), b"VA 1 t-1\r\n6\r\n", "T on success")
    # q: HD hidden, NF shown.
    c.call(b"ma %s q\r\nma %s q\r\nmn\r\n" % (n, nx), b"NF\r\nMN\r\n")
    eq(number(c, n), 4, "after ma q")
    c.must_set(s, b"abc")
    c.call(b"ma %s\r\n" % s, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n")
    for bad in (b"D-1", b"Dabc", b"N0 Jabc", b"MX"):
        line = c.request(b"ma %s %s\r\n" % (n, bad))
        check(line.startswith(b"CLIENT_ERROR"), "ma with %r: %r" % (bad, line))
    eq(number(c, n), 4, "value after refused ma commands")


@suite.test
def mn_and_quiet_pipeline(env):
    c = env.server().connect()
    c.call(b"mn\r\n", b"MN\r\n")
    keys = [env.key("q%d" % i) for i in range(40)]
    req, want = [], []
    for i, k in enumerate(keys):
        req.append(b"ms %s 2 q\r\n%02d\r\n" % (k, i))          # silent
    for i, k in enumerate(keys):
        if i % 3 == 0:
            req.append(b"md %s q\r\n" % k)                     # silent
    for i, k in enumerate(keys):
        req.append(b"mg %s v q O%d\r\n" % (k, i))
        if i % 3:
            want.append(b"VA 2 O%d\r\n%02d\r\n" % (i, i))
    req.append(b"ma %s q\r\n" % keys[1])                        # silent
    req.append(b"ma %s q\r\n" % keys[0])                        # NF: shown
    want.append(b"NF\r\n")
    req.append(b"mn\r\n")
    want.append(b"MN\r\n")
    c.call(b"".join(req), b"".join(want), "quiet pipeline")
    eq(number(c, keys[1]), 2, "after a quiet ma")


@suite.test
def me_debug(env):
    c = env.server().connect()
    k = env.key("k")
    c.call(b"me %s\r\n" % k, b"EN\r\n")
    c.must_set(k, b"hello")
    cas = c.gets(k)[2]
    line = c.request(b"me %s\r\n" % k)
    m = re.match(rb"ME (\S+)((?: [a-z_]+=\S+)+)\r\n$", line)
    check(m, "me reply shape: %r" % line)
    eq(m.group(1), k, "me key")
    fields = dict(kv.split(b"=", 1) for kv in m.group(2).split())
    for name in (b"exp", b"la", b"cas", b"fetch", b"cls", b"size"):
        check(name in fields, "me reply has no %s: %r" % (name.decode(), line))
    eq(fields[b"exp"], b"-1", "me exp")
    eq(fields[b"cas"], b"%d" % cas, "me cas")
    eq(fields[b"fetch"], b"yes", "me fetch after gets")
    check(fields[b"la"].isdigit() and int(fields[b"la"]) <= 2, "me la: %r" % line)
    check(int(fields[b"size"]) >= 5, "me size: %r" % line)
    c.must_set(k, b"again", exptime=100)
    line = c.request(b"me %s\r\n" % k)
    m = re.search(rb" exp=(-?\d+) ", line)
    exp = int(m.group(1)) if m else None
    if env.memcached and exp is not None:
        exp = -exp      # memcached 1.6.18 prints the remaining TTL negated
    check(exp is not None and 98 <= exp <= 100, "me exp with a TTL of 100: %r" % line)


@suite.test
def meta_errors(env):
    c = env.server().connect()
    k = env.key("k")
    c.must_set(k, b"x")
    for req in (b"mg %s zz\r\n" % k, b"mg %s v v\r\n" % k, b"mg %s Tabc\r\n" % k,
                b"ms %s\r\n" % k, b"ms %s abc\r\n" % k, b"ms %s -1\r\n" % k,
                b"md %s Cabc\r\n" % k, b"mg %s v\r\n" % (b"a" * 251)):
        line = c.request(req)
        check(line.startswith(b"CLIENT_ERROR "), "reply to %s: %r" % (H.short(req, 60), line))
        c.sync()
    for req in (b"mg\r\n", b"ms\r\n", b"md\r\n", b"ma\r\n", b"mz %s\r\n" % k):
        c.call(req, b"ERROR\r\n", "reply to %r" % req)
    # A bad flag on a well-formed ms: the data block is skipped, not parsed as a command.
    line = c.request(b"ms %s 2 Fabc\r\nmn\r\n" % k)
    check(line.startswith(b"CLIENT_ERROR "), "ms with F not a number: %r" % line)
    c.sync()
    c.call(b"mg %s v\r\n" % k, b"VA 1\r\nx\r\n", "value after refused commands")


if __name__ == "__main__":
    suite.main()
