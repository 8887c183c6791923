/*
 * repl.pml - a Promela model of Cloister's STRONG replication protocol
 * (src/repl/repl.h, strong.c, replica.c, recover.c): ABD reads and blind
 * writes plus CASPaxos read-modify-writes on one key replicated on 3
 * nodes, driven by 2 proposers over a network that loses, duplicates,
 * delays and reorders messages, with a replica that may crash and recover.
 * Spin checks, over every interleaving, that the history the proposers
 * produce is linearizable.  How to run it, state counts, times and what
 * it found: spec/README.md.  ctest runs it (tests/blackbox/
 * test_spin_model.py) with the correct protocol (no error allowed) and
 * with each BUG_ switch (an error required).
 *
 * What is modelled, and how it maps to the protocol
 *   - Replicas r = 0..2 hold, for the key, acc[r] = the version (ts) of
 *     the accepted value and prom[r] = the promise, recovery floor
 *     included.  The rules are repl.h's (QUERY, WRITE, PREPARE, ACCEPT):
 *     inline replica().
 *   - Versions and ballots share one space ts = (epoch, counter, id),
 *     compared lexicographically, encoded in one byte TS(e, n, id).  Ids 1
 *     and 2 are the two proposers, ts 0 is the initial value.  repl.h's
 *     versions are hlc << 8 | node_id; the counter is the node's clock
 *     (Prop.seen: never behind anything the node saw), and the epoch
 *     stands for "above every version made before the crash", which is
 *     what recovery's FENCE (largest known + fence_ms) provides.
 *   - Values are abstracted by their ts.  Every ts is created once (C1), by
 *     a blind write (BLIND: a value of the writer's choice), by an RMW that
 *     applies its function (APPLY: f(value at base), base = the newest
 *     accepted ts among its promises), or by an RMW round that re-proposes
 *     the value it found (IDENT: a keep with differing promises, a retry
 *     burying an earlier attempt, a read whose write-back was refused).
 *     So the ts a read returns names its value, and `base` names what f
 *     was applied to.  made[] lists them; it is also where the history
 *     clock lives (below).  RMW functions are abstract: after its promises
 *     an RMW either writes (incr, a cas that matches) or keeps the value
 *     (REPL_RMW_KEEP: a cas that does not match, add on a present key);
 *     both are explored.
 *   - History clock (repl.h): a value's vector holds, per node, the
 *     largest ballot of that node whose change (APPLY) it includes; APPLY
 *     sets its own entry, everything else inherits from the value it came
 *     from (a blind write: the newest reply to its QUERY).  history() walks
 *     made[] to read it.  A retrying RMW whose promises' newest value has
 *     entry(self) >= its first ballot completes with that attempt's result.
 *     Correction (BUG_BLIND_MASKS_ATTEMPT is repl.h as it is): otherwise,
 *     if an earlier attempt of the RMW sent an APPLY and a blind write
 *     newer than that attempt is among the values the newest one descends
 *     from, the attempt may have been chosen and then overwritten by that
 *     write, which does not carry it in its vector: the outcome is unknown
 *     (CL_ETIMEDOUT); applying f again (or keeping) may apply it twice.
 *     Values then need one more field: the newest blind write they descend
 *     from (a blind write sets it to its version; everything else inherits).
 *   - Proposers (the nodes clients talk to; one write per key per node at
 *     a time) run a script of at most two operations, one at a time
 *     (SCENARIO below).  While it waits, an operation may time out: a read
 *     or blind write then fails (outcome unknown for a write), an RMW
 *     retries with a new ballot or gives up (outcome unknown).  At most
 *     TRIES attempts per operation and counters up to CMAX bound the
 *     state space (the operation fails beyond them).  A proposer's node is
 *     not special (repl.h applies its own replica locally, without a
 *     message): that is one of the delivery orders.
 *   - Network: the request a proposer waits on can reach every replica
 *     whose reply it has not received, any number of times (duplication,
 *     retransmission), and each reply is received or lost.  A request the
 *     proposer has moved past stays in flight (at most K per proposer;
 *     beyond that the network loses it) and may reach, late, every replica
 *     that never answered it.  Replies name their round (repl.h: request
 *     ids), so a late reply is ignored: a delayed reply is the same as a
 *     lost one.  A request that cannot change a replica now never will
 *     (promises and versions only grow, a recovered replica is fenced), so
 *     such deliveries are left out (tidy()).
 *   - Crash (scenarios with `crash`): one replica may crash at any moment
 *     and loses its state.  It answers nothing until it has read both
 *     other replicas (a majority of its peers; one message each, at any
 *     moments); each read first raises that peer's floor to FENCE (recover.c
 *     COPY), then copies its version and promise; it rejoins with the
 *     largest of each and a floor of FENCE.
 *
 * Known bugs, switched on with spin -DBUG_...=1.  All 0 is the protocol of
 * repl.h with two corrections: a WRITE respects the recovery floor too, and
 * a retrying RMW whose attempt a blind write may have overwritten reports
 * an unknown outcome (History clock, above).  Each must make spin report
 * an error:
 *   BUG_WRITE_IGNORES_FENCE     repl.h/replica.c as they are: a WRITE is
 *                               checked against the key's promise only, not
 *                               the recovery floor.  Broken: a write then
 *                               completes on the vote of the crashed
 *                               replica's old incarnation plus the vote of
 *                               a peer given after recovery copied that
 *                               peer, and the recovered replica lacks it.
 *                               (A refused write-back is no loss: the read
 *                               finishes as a CASPaxos round, as repl.h says.)
 *   BUG_ACCEPT_IGNORES_PROMISE  replica accepts without checking its promise
 *   BUG_READ_NO_WRITEBACK       read returns the newest of differing replies
 *   BUG_WRITER_IGNORES_NACK     blind writer counts a NACK as an ACK
 *   BUG_WRITE_RETRY_PARTIAL     blind write retries after a NACK majority
 *                               (repl.h: only when all NACKed, none holds it)
 *   BUG_NO_HISTORY_CLOCK        RMW retry applies f again without looking
 *                               for an earlier attempt of its own
 *   BUG_KEEP_NO_ACCEPT          a keep completes after differing promises
 *   BUG_NO_BURY                 a keep after identical promises completes
 *                               although an earlier attempt wrote
 *   BUG_RECOVERY_NO_FENCE       recovery copies without raising floors
 *   BUG_WRITE_TS_FROM_QUERY     a blind write's counter from its QUERY
 *                               replies only, not the node's clock
 *   BUG_BLIND_MASKS_ATTEMPT     repl.h as it is: a retrying RMW trusts the
 *                               history clock even when a blind write may
 *                               have overwritten its attempt
 *
 * The property, checked at the end of every complete run (inline check()):
 * the history is linearizable in ts order.  L = the ts that are part of
 * the history: 0, the result of every completed operation, and, closed
 * downwards, the base of every APPLY and IDENT in L.  Then
 *   C1 no ts is created twice (asserted at creation);
 *   C2 real time: a completed operation's result is >= the newest result
 *      completed before it started, and every ts in L is > that of the
 *      operation that made it;
 *   C3 every APPLY or IDENT in L derives from its immediate predecessor:
 *      no ts of L lies strictly between its base and it (no lost update);
 *   C4 an operation takes effect at most once and as reported: at most one
 *      of its BLIND/APPLY ts is in L, and if it completed, that is its
 *      result (a keep or read has none in L).
 * With only increments, C3 and C4 say the counter equals the increments
 * that took effect, each reported once; C2 says no read goes back in
 * time, on any proposer, after a completed write, RMW or read.  (C4 is
 * slightly stricter than needed for a blind write repeated with nothing
 * between; the protocol must hold it anyway.)
 *
 * Not modelled: value bytes and their integrity (BROKEN copies, repair),
 * several keys (a promise slot shared by keys that hash alike only rejects
 * more), eventual mode, locks and leases, the coordinator and attestation,
 * a proposer's own crash (the same as waiting forever), liveness.
 */

/* ---- configuration ------------------------------------------------------ */
#define N       3           /* replicas */
#define MAJ     2           /* majority of N */
#define NCL     2           /* proposers */
#define NOPS    2           /* most operations per proposer */
#define MAXTRY  2           /* most attempts per operation */
#define G       (NOPS * MAXTRY)   /* most ts one proposer creates */
#define K       2           /* requests in flight per proposer, besides the current one */
#ifndef GIVEUP
#define GIVEUP  1           /* operations may time out */
#endif
#ifndef SYM
#define SYM     1           /* symmetry reduction over replicas (0: readable trails) */
#endif

/* Scenarios: each proposer's operations, whether a replica may crash
 * (once), the attempts per operation, and whether a CASPaxos ACCEPT round
 * that times out may retry (repl.h: "a lost round retries"; otherwise only
 * a NACK majority retries), packed in `script`.  Without -DSCEN=k or
 * -DSCRIPT=SC(...), init tries each of scenarios 0..9 (a nondeterministic
 * choice, smallest first), so one run checks them all; 10..15 are larger
 * (spec/README.md). */
#define OR  1               /* ABD read (get) */
#define OW  2               /* ABD blind write (set, delete) */
#define OM  3               /* CASPaxos read-modify-write */
#define SC(p0a, p0b, p1a, p1b, crash, tries, tretry) \
    ((p0a) + (p0b) * 4 + (p1a) * 16 + (p1b) * 64 + (crash) * 256 + (tries) * 512 + \
     (tretry) * 2048)
#define SCENARIO(k) \
    ((k) == 0  -> SC(OW, 0,  OR, OR, 0, 2, 0) :   /* write        | read, read */ \
    ((k) == 1  -> SC(OW, OW, OR, 0,  0, 2, 0) :   /* write, write | read */ \
    ((k) == 2  -> SC(OW, 0,  OR, OM, 0, 1, 0) :   /* write        | read, rmw; 1 try */ \
    ((k) == 3  -> SC(OW, 0,  OM, OR, 0, 1, 0) :   /* write        | rmw, read; 1 try */ \
    ((k) == 4  -> SC(OM, 0,  OR, 0,  0, 2, 1) :   /* rmw          | read */ \
    ((k) == 5  -> SC(OM, 0,  OM, 0,  1, 1, 0) :   /* rmw          | rmw; crash, 1 try */ \
    ((k) == 6  -> SC(OW, 0,  OR, OR, 1, 2, 0) :   /* write        | read, read; crash */ \
    ((k) == 7  -> SC(OW, 0,  OM, 0,  0, 2, 1) :   /* write        | rmw */ \
    ((k) == 8  -> SC(OM, 0,  OW, OR, 0, 2, 0) :   /* rmw          | write, read */ \
    ((k) == 9  -> SC(OM, 0,  OM, 0,  0, 2, 0) :   /* rmw          | rmw */ \
    /* larger, not in the default run: */ \
    ((k) == 10 -> SC(OM, 0,  OM, 0,  0, 2, 1) :   /* rmw          | rmw */ \
    ((k) == 11 -> SC(OW, 0,  OM, OR, 0, 2, 1) :   /* write        | rmw, read */ \
    ((k) == 12 -> SC(OW, 0,  OM, 0,  1, 2, 1) :   /* write        | rmw; crash */ \
    ((k) == 13 -> SC(OW, OR, OM, 0,  0, 2, 0) :   /* write, read  | rmw */ \
    ((k) == 14 -> SC(OM, 0,  OM, 0,  1, 2, 1) :   /* rmw          | rmw; crash */ \
                  SC(OW, OM, OR, OM, 0, 2, 0)))))))))))))))) /* 15: write, rmw | read, rmw */
unsigned script : 12;
#define OPOF(c, o)  ((script >> ((c) * 4 + (o) * 2)) & 3)
#define LEN(c)      ((OPOF(c, 0) != 0) + (OPOF(c, 1) != 0))
#define CRASHES     ((script >> 8) & 1)
#define TRIES       ((script >> 9) & 3)
#define TRETRY      (script >> 11)

/* Known-bug switches (spin -DBUG_...=1); all 0 is the correct protocol. */
#ifndef BUG_WRITE_IGNORES_FENCE
#define BUG_WRITE_IGNORES_FENCE 0
#endif
#ifndef BUG_ACCEPT_IGNORES_PROMISE
#define BUG_ACCEPT_IGNORES_PROMISE 0
#endif
#ifndef BUG_READ_NO_WRITEBACK
#define BUG_READ_NO_WRITEBACK 0
#endif
#ifndef BUG_WRITER_IGNORES_NACK
#define BUG_WRITER_IGNORES_NACK 0
#endif
#ifndef BUG_WRITE_RETRY_PARTIAL
#define BUG_WRITE_RETRY_PARTIAL 0
#endif
#ifndef BUG_NO_HISTORY_CLOCK
#define BUG_NO_HISTORY_CLOCK 0
#endif
#ifndef BUG_KEEP_NO_ACCEPT
#define BUG_KEEP_NO_ACCEPT 0
#endif
#ifndef BUG_NO_BURY
#define BUG_NO_BURY 0
#endif
#ifndef BUG_RECOVERY_NO_FENCE
#define BUG_RECOVERY_NO_FENCE 0
#endif
#ifndef BUG_WRITE_TS_FROM_QUERY
#define BUG_WRITE_TS_FROM_QUERY 0
#endif
#ifndef BUG_BLIND_MASKS_ATTEMPT
#define BUG_BLIND_MASKS_ATTEMPT 0
#endif

/* ---- timestamps ---------------------------------------------------------- */
#define EW      32                      /* ts values per epoch */
#define TSN     (EW * 2)                /* the ts space: epochs 0 and 1 */
#define CMAX    7                       /* largest counter */
#define TS(e, n, id)  ((e) * EW + (n) * 4 + (id))
#define EPOCH(t)      ((t) / EW)
#define CNT(t)        (((t) % EW) / 4)
#define CAN_NEXT(t)   (CNT(t) < CMAX)
#define NEXT(t, id)   TS(EPOCH(t), CNT(t) + 1, id)
#define MAX(a, b)     ((a) > (b) -> (a) : (b))
#define MIN(a, b)     ((a) < (b) -> (a) : (b))
#define NONE    255                     /* no result, no base */
#define ALLR    ((1 << N) - 1)          /* every replica, as a mask */
#define BIT(m, r)     (((m) >> (r)) & 1)

/* ---- replicas ------------------------------------------------------------ */
byte acc[N];                /* accepted ts (it names the value) */
byte prom[N];               /* promise; with the recovery floor folded in, */
byte flo[N];                /*   except with BUG_WRITE_IGNORES_FENCE: the floor */
bit  down[N];               /* crashed or recovering: answers nothing */
unsigned ncrash : 1;        /* crashes so far */
unsigned rmask : 3;         /* recovery: peers read so far, */
byte racc, rprom;           /*   the largest accepted ts and promise they had */
#define FENCE TS(ncrash, 0, 0)
#define PROM(r) MAX(prom[r], flo[r])    /* what PREPARE and ACCEPT respect */
#define WPROM(r) (BUG_WRITE_IGNORES_FENCE -> prom[r] : PROM(r))   /* ... and WRITE */

/* ---- proposers ----------------------------------------------------------- */
#define IDLE 0              /* phases */
#define RQ   1              /*   read: QUERY */
#define RWB  2              /*   read: WRITE back */
#define WQ   3              /*   blind write: QUERY */
#define WW   4              /*   blind write: WRITE */
#define PP   5              /*   CASPaxos round: PREPARE (rmw; read after a refused write-back) */
#define PA   6              /*   CASPaxos round: ACCEPT */
mtype = { QUERY, WRITE, PREPARE, ACCEPT, ACK, NACK };   /* requests, replies */
#define KIND(p) ((p) == RQ || (p) == WQ -> QUERY : ((p) == RWB || (p) == WW -> WRITE : \
                 ((p) == PP -> PREPARE : ACCEPT)))

typedef Prop {              /* (bytes: C bit-fields in structs would be padded) */
    byte op;                /* the current (or next) operation */
    byte ph;                /* its phase; IDLE between operations */
    byte mask;              /* replicas whose reply to the current request came */
    byte acks;
    byte nacks;
    byte tries;             /* attempts of the operation so far */
    byte nmade;             /* ts created so far (made[]) */
    byte ts;                /* ts or ballot of the current request */
    byte hi;                /* newest accepted ts in the replies (WW: in NACKs) */
    byte lo;                /* RQ, PP: oldest accepted ts in the replies */
    byte seen;              /* the node's clock: the largest ts it has seen or made */
    byte first;             /* rmw: the operation's first ballot */
    byte wrote;             /* rmw: an attempt of the operation sent an APPLY */
    byte ans;               /* PA: the result on success (NONE: the ballot) */
    byte incl;              /* PP with a majority: the earlier attempt of this rmw
                             * the newest promise includes (history clock), 0 if
                             * none, NONE if unknowable (History clock, top) */
    byte opmax;             /* BUG_WRITE_TS_FROM_QUERY: largest ts this operation saw */
};
Prop cl[NCL];

typedef Msg {               /* a request in flight nobody waits for */
    byte kind;              /* 0: free slot */
    byte reach;             /* replicas it may still reach */
    byte ts;
};
Msg fl[NCL * K];            /* proposer c's are fl[c * K ..] */

/* ---- made versions and the history (ghost, but for made[].base of BLIND
 * and kind, which stand for the history clock carried in values) -------- */
#define BLIND 1
#define APPLY 2
#define IDENT 3
typedef Made {              /* a ts a proposer created */
    byte ts;
    byte base;              /* APPLY, IDENT: the ts it derives from; BLIND: the
                             * ts whose history clock it inherits */
    byte op;                /* the operation that made it */
    byte kind;
};
Made made[NCL * G];         /* proposer c's are made[c * G ..] */
byte hwm;                   /* the newest result of a completed operation */
byte start[NCL * NOPS];     /* hwm when each operation started */
byte res[NCL * NOPS];       /* each operation's result ts; NONE: none */
unsigned ndone : 2;         /* proposers that finished their script */

hidden mtype rk;            /* the reply of the last replica step: ACK/NACK, */
hidden byte rv, ra;         /*   the ts it carries, the replica's accepted ts */
hidden mtype mk;            /* an in-flight request being delivered */
hidden byte mt;
hidden byte ix, jx, tx, ex, bx, wx, rx;    /* scratch of d_steps */
hidden byte inL[TSN];       /* check(): the ts in L */

/* Would request (k, tt) change replica r?  If not now, then never: promises
 * and accepted ts only grow, and a recovered replica is fenced. */
#define CHANGES(k, tt, r) \
    ((k) == WRITE -> ((tt) >= WPROM(r) && (tt) > acc[r]) : \
    ((k) == PREPARE -> ((tt) > PROM(r) && (tt) > acc[r]) : \
    ((k) == ACCEPT -> ((BUG_ACCEPT_IGNORES_PROMISE || (tt) >= PROM(r)) && (tt) > acc[r]) : 0)))

/* Replica r handles request (k, tt): the rules of repl.h. */
inline replica(r, k, tt) {
    if
    :: k == QUERY -> rk = ACK; rv = MAX(acc[r], PROM(r))
    :: k == WRITE ->
        if
        :: tt < WPROM(r) -> rk = NACK; rv = WPROM(r)
        :: else -> rk = ACK; rv = 0;
            if :: tt > acc[r] -> acc[r] = tt :: else fi
        fi
    :: k == PREPARE ->
        if
        :: tt > PROM(r) && tt > acc[r] -> rk = ACK; rv = acc[r]; prom[r] = tt
        :: else -> rk = NACK; rv = MAX(PROM(r), acc[r])
        fi
    :: k == ACCEPT ->       /* tt == acc[r]: the same proposal again */
        if
        :: (BUG_ACCEPT_IGNORES_PROMISE || tt >= PROM(r)) && tt >= acc[r] ->
            rk = ACK; rv = 0; acc[r] = tt
        :: else -> rk = NACK; rv = MAX(PROM(r), acc[r])
        fi
    fi;
    ra = acc[r];
    printf("  replica %d: %e %d -> %e %d (acc %d prom %d)\n", r, k, tt, rk, rv, acc[r], PROM(r))
}

/* ---- normal form of a state ------------------------------------------------ */
/* Two states that differ only in the order of a proposer's in-flight slots,
 * in requests that can no longer change anything, or in the names of the
 * replicas (they are interchangeable) are the same state: tidy() maps each
 * to one of them.  Nothing that can happen is lost; the state space shrinks
 * several-fold (the symmetry alone: about 5x). */
#define KEY(r) (((((down[r] * 64 + acc[r]) * 64 + prom[r]) * 64 + flo[r]) * 128) + \
    BIT(cl[0].mask, r) * 64 + BIT(cl[1].mask, r) * 32 + BIT(fl[0].reach, r) * 16 + \
    BIT(fl[1].reach, r) * 8 + BIT(fl[2].reach, r) * 4 + BIT(fl[3].reach, r) * 2 + \
    BIT(rmask, r))
#define SWAPBITS(m, a, b) \
    if :: BIT(m, a) != BIT(m, b) -> m = m ^ ((1 << (a)) | (1 << (b))) :: else fi
inline order(a, b) {        /* put replicas a < b in KEY order */
    if
    :: SYM && KEY(a) > KEY(b) ->
        tx = acc[a]; acc[a] = acc[b]; acc[b] = tx;
        tx = prom[a]; prom[a] = prom[b]; prom[b] = tx;
        tx = flo[a]; flo[a] = flo[b]; flo[b] = tx;
        tx = down[a]; down[a] = down[b]; down[b] = tx;
        SWAPBITS(cl[0].mask, a, b); SWAPBITS(cl[1].mask, a, b);
        SWAPBITS(fl[0].reach, a, b); SWAPBITS(fl[1].reach, a, b);
        SWAPBITS(fl[2].reach, a, b); SWAPBITS(fl[3].reach, a, b);
        SWAPBITS(rmask, a, b)
    :: else
    fi
}
inline tidy() {
    ix = 0;
    do
    :: ix < NCL * K ->
        jx = 0;
        do
        :: jx < N ->
            if
            :: BIT(fl[ix].reach, jx) && !down[jx] && !CHANGES(fl[ix].kind, fl[ix].ts, jx) ->
                fl[ix].reach = fl[ix].reach & ~(1 << jx)
            :: else
            fi;
            jx++
        :: else -> break
        od;
        if :: fl[ix].reach == 0 -> fl[ix].kind = 0; fl[ix].ts = 0 :: else fi;
        ix++
    :: else -> break
    od;
    ix = 0;
    do
    :: ix < NCL * K ->      /* a proposer's two slots in (kind, ts, reach) order */
        if
        :: fl[ix].kind * 4096 + fl[ix].ts * 8 + fl[ix].reach >
           fl[ix + 1].kind * 4096 + fl[ix + 1].ts * 8 + fl[ix + 1].reach ->
            tx = fl[ix].kind; fl[ix].kind = fl[ix + 1].kind; fl[ix + 1].kind = tx;
            tx = fl[ix].ts; fl[ix].ts = fl[ix + 1].ts; fl[ix + 1].ts = tx;
            tx = fl[ix].reach; fl[ix].reach = fl[ix + 1].reach; fl[ix + 1].reach = tx
        :: else
        fi;
        ix = ix + K
    :: else -> break
    od;
    order(0, 1); order(1, 2); order(0, 1)
}

/* ---- proposers ------------------------------------------------------------- */
/* The current phase has every reply it waits for: a majority of ACKs, or
 * a majority of NACKs (a blind WRITE: a reply from every replica). */
#define CLOSED(c) (cl[c].acks >= MAJ || \
    (cl[c].ph == RQ || cl[c].ph == WQ -> 0 : \
     (cl[c].ph == WW -> \
        (cl[c].acks + cl[c].nacks == N || BUG_WRITE_RETRY_PARTIAL && cl[c].nacks > N - MAJ) : \
        cl[c].nacks > N - MAJ)))
/* A failed blind WRITE may be retried: every replica NACKed and none holds it. */
#define RETRY_OK(c) (BUG_WRITE_RETRY_PARTIAL || cl[c].nacks == N && cl[c].hi < cl[c].ts)
#define WAITING(c, r) (cl[c].ph != IDLE && !down[r] && !BIT(cl[c].mask, r))

/* The history of value v (strong.c reads it from the value): ex = the
 * history clock entry of proposer c, i.e. the newest APPLY of c that v
 * includes (0: none), and bx = the newest blind write among the values v
 * descends from (0: none). */
inline history(c, v) {
    tx = v; ex = 0; bx = 0;
    do
    :: tx == 0 -> break
    :: else ->
        jx = NONE; ix = 0;
        do :: ix < NCL * G -> if :: made[ix].ts == tx -> jx = ix :: else fi; ix++
           :: else -> break od;
        assert(jx != NONE);                    /* every accepted ts was created */
        if :: made[jx].kind == APPLY && jx / G == c && ex == 0 -> ex = tx :: else fi;
        if :: made[jx].kind == BLIND && bx == 0 -> bx = tx :: else fi;
        tx = made[jx].base
    od
}

/* wx = the oldest ballot with which the current rmw of c sent an APPLY
 * (NONE: none). */
inline oldest_apply(c) {
    wx = NONE; ix = c * G;
    do
    :: ix < c * G + G ->
        if
        :: made[ix].ts != 0 && made[ix].kind == APPLY && made[ix].op == cl[c].op ->
            wx = MIN(wx, made[ix].ts)
        :: else
        fi;
        ix++
    :: else -> break
    od
}

/* Proposer c receives replica r's reply (rk, rv, ra). */
inline receive(c, r) {
    cl[c].mask = cl[c].mask | (1 << (r));
    if
    :: rk == ACK || BUG_WRITER_IGNORES_NACK && cl[c].ph == WW -> cl[c].acks++
    :: else -> cl[c].nacks++
    fi;
    cl[c].seen = MAX(cl[c].seen, rv);
    if :: BUG_WRITE_TS_FROM_QUERY -> cl[c].opmax = MAX(cl[c].opmax, rv) :: else fi;
    if
    :: rk == ACK && (cl[c].ph == RQ || cl[c].ph == WQ || cl[c].ph == PP) ->
        cl[c].hi = MAX(cl[c].hi, ra); cl[c].lo = MIN(cl[c].lo, ra)
    :: rk == NACK && cl[c].ph == WW ->
        cl[c].hi = MAX(cl[c].hi, ra)
    :: else
    fi;
    if
    :: cl[c].ph == PP && cl[c].acks == MAJ && rk == ACK && !BUG_NO_HISTORY_CLOCK ->
        history(c, cl[c].hi);
        oldest_apply(c);
        if
        :: ex != 0 && ex >= cl[c].first -> cl[c].incl = ex
        :: else -> cl[c].incl = (!BUG_BLIND_MASKS_ATTEMPT && wx != NONE && bx > wx -> NONE : 0)
        fi
    :: else
    fi
}

/* Proposer c starts phase p with request ts tt; the request it leaves
 * stays in flight. */
inline phase(c, p, tt) {
    if
    :: cl[c].ph != IDLE && KIND(cl[c].ph) != QUERY && cl[c].mask != ALLR ->
        if
        :: fl[c * K].kind == 0 -> ix = c * K
        :: else -> ix = c * K + 1   /* if in use, the network loses the one there */
        fi;
        fl[ix].kind = KIND(cl[c].ph); fl[ix].ts = cl[c].ts; fl[ix].reach = ALLR & ~cl[c].mask
    :: else
    fi;
    cl[c].ph = p; cl[c].ts = tt; cl[c].mask = 0;
    cl[c].acks = 0; cl[c].nacks = 0; cl[c].hi = 0; cl[c].lo = (p == IDLE -> 0 : NONE);
    cl[c].incl = 0; cl[c].ans = 0;
    tidy()
}

/* The operation ends with result r (NONE: failed, or outcome unknown). */
inline finish(c, r) {
    printf("P%d op %d ends: %d\n", c, cl[c].op, r);
    res[c * NOPS + cl[c].op] = r;
    if :: r != NONE -> hwm = MAX(hwm, r) :: else fi;
    phase(c, IDLE, 0);
    cl[c].op++; cl[c].tries = 0; cl[c].opmax = 0;
    cl[c].first = 0; cl[c].wrote = 0; cl[c].ans = 0
}

/* Proposer c creates ts tt of kind k from b. */
inline create(c, tt, b, k) {
    ix = 0;
    do
    :: ix < NCL * G -> assert(made[ix].ts != tt); ix++      /* C1: ts unique */
    :: else -> break
    od;
    assert(cl[c].nmade < G);
    printf("P%d creates ts %d (kind %d) from %d\n", c, tt, k, b);
    made[c * G + cl[c].nmade].ts = tt;
    made[c * G + cl[c].nmade].base = b;
    made[c * G + cl[c].nmade].op = cl[c].op;
    made[c * G + cl[c].nmade].kind = k;
    cl[c].nmade++;
    cl[c].seen = MAX(cl[c].seen, tt)
}

/* Next attempt of a read or blind write (phase p), or fail. */
inline query(c, p) {
    if
    :: cl[c].tries < TRIES -> cl[c].tries++; phase(c, p, 0)
    :: else -> finish(c, NONE)
    fi
}

/* Next CASPaxos round with a new ballot, or give up. */
inline prepare(c) {
    if
    :: cl[c].tries < TRIES && CAN_NEXT(cl[c].seen) ->
        cl[c].tries++;
        phase(c, PP, NEXT(cl[c].seen, c + 1));
        cl[c].seen = cl[c].ts;
        if :: cl[c].first == 0 -> cl[c].first = cl[c].ts :: else fi
    :: else -> finish(c, NONE)
    fi
}

/* Promises agree and no attempt of this operation wrote: a keep needs no
 * ACCEPT (strong.c: `agree`). */
#define AGREE(c) (cl[c].lo == cl[c].hi && (!cl[c].wrote || BUG_NO_BURY))
#define DECIDE(c) (cl[c].ph == PP && cl[c].acks >= MAJ)

proctype Proposer(byte c) {
    do
    :: d_step { cl[c].ph == IDLE && cl[c].op < LEN(c) ->
        start[c * NOPS + cl[c].op] = hwm;
        if
        :: OPOF(c, cl[c].op) == OR -> query(c, RQ)
        :: OPOF(c, cl[c].op) == OW -> query(c, WQ)
        :: OPOF(c, cl[c].op) == OM -> prepare(c)
        fi }

    /* ABD read */
    :: d_step { cl[c].ph == RQ && CLOSED(c) ->
        if
        :: cl[c].lo == cl[c].hi || BUG_READ_NO_WRITEBACK -> finish(c, cl[c].hi)
        :: else -> phase(c, RWB, cl[c].hi)
        fi }
    :: d_step { cl[c].ph == RWB && CLOSED(c) ->
        if
        :: cl[c].acks >= MAJ -> finish(c, cl[c].ts)
        :: else -> prepare(c)      /* refused: a CASPaxos round re-proposes the newest */
        fi }

    /* ABD blind write */
    :: d_step { cl[c].ph == WQ && CLOSED(c) ->
        tx = (BUG_WRITE_TS_FROM_QUERY -> cl[c].opmax : cl[c].seen);
        if
        :: CAN_NEXT(tx) ->
            tx = NEXT(tx, c + 1);
            create(c, tx, cl[c].hi, BLIND);
            phase(c, WW, tx)
        :: else -> finish(c, NONE)
        fi }
    :: d_step { cl[c].ph == WW && CLOSED(c) ->
        if
        :: cl[c].acks >= MAJ -> finish(c, cl[c].ts)
        :: cl[c].acks < MAJ && RETRY_OK(c) -> query(c, WQ)
        :: else -> finish(c, NONE)              /* outcome unknown */
        fi }

    /* CASPaxos round (an rmw, or a read whose write-back was refused): the
     * promises are in; decide (strong.c rmw_decide). */
    :: d_step { DECIDE(c) && OPOF(c, cl[c].op) == OR ->     /* re-propose the newest */
        create(c, cl[c].ts, cl[c].hi, IDENT);
        phase(c, PA, cl[c].ts); cl[c].ans = NONE }
    :: d_step { DECIDE(c) && OPOF(c, cl[c].op) == OM && cl[c].incl == NONE ->
        finish(c, NONE) }                       /* an attempt may have been chosen and
                                                 * overwritten: outcome unknown */
    :: d_step { DECIDE(c) && OPOF(c, cl[c].op) == OM && cl[c].incl != 0 && cl[c].incl != NONE ->
        rx = cl[c].incl;                        /* an earlier attempt was chosen */
        create(c, cl[c].ts, cl[c].hi, IDENT);
        phase(c, PA, cl[c].ts); cl[c].ans = rx }
    :: d_step { DECIDE(c) && OPOF(c, cl[c].op) == OM && cl[c].incl == 0 ->     /* f writes */
        cl[c].wrote = 1;
        create(c, cl[c].ts, cl[c].hi, APPLY);
        phase(c, PA, cl[c].ts); cl[c].ans = NONE }
    :: d_step { DECIDE(c) && OPOF(c, cl[c].op) == OM && cl[c].incl == 0 ->     /* f keeps */
        if
        :: AGREE(c) || BUG_KEEP_NO_ACCEPT -> finish(c, cl[c].hi)
        :: else ->                              /* re-propose: make it chosen, bury */
            create(c, cl[c].ts, cl[c].hi, IDENT);
            phase(c, PA, cl[c].ts); cl[c].ans = NONE
        fi }
    :: d_step { cl[c].ph == PP && CLOSED(c) && cl[c].acks < MAJ -> prepare(c) }
    :: d_step { cl[c].ph == PA && CLOSED(c) ->
        if
        :: cl[c].acks >= MAJ -> rx = (cl[c].ans != NONE -> cl[c].ans : cl[c].ts); finish(c, rx)
        :: else -> prepare(c)                   /* a NACK majority: retry */
        fi }

    /* A time-out while waiting.  A read or blind write fails (outcome
     * unknown); a CASPaxos round retries or gives up.  Giving up the last
     * operation shows nothing that waiting forever would not. */
    :: d_step { GIVEUP && cl[c].ph != IDLE && !CLOSED(c) && cl[c].op + 1 < LEN(c) ->
        finish(c, NONE) }
    :: d_step { GIVEUP && TRETRY && cl[c].ph == PA && !CLOSED(c) -> prepare(c) }

    :: cl[c].ph == IDLE && cl[c].op == LEN(c) -> break
    od;
    ndone++
}

/* ---- the network ------------------------------------------------------------ */
/* Proposer c's current request reaches replica r; the reply comes back,
 * or is lost (after a query that changes nothing, so not for those). */
#define DELIVER(c, r) \
    :: d_step { WAITING(c, r) && !CLOSED(c) -> \
                replica(r, KIND(cl[c].ph), cl[c].ts); receive(c, r); tidy() } \
    :: d_step { WAITING(c, r) && CHANGES(KIND(cl[c].ph), cl[c].ts, r) -> \
                replica(r, KIND(cl[c].ph), cl[c].ts); tidy() }

/* In-flight request s reaches replica r (nobody waits for the reply). */
#define LATE(s, r) \
    :: d_step { BIT(fl[s].reach, r) && !down[r] -> \
                mk = fl[s].kind; mt = fl[s].ts; replica(r, mk, mt); \
                fl[s].reach = fl[s].reach & ~(1 << (r)); tidy() }

/* Replica r crashes; recovering, it reads peer p (raising p's floor to
 * FENCE first); it answers again with floor FENCE. */
#define RAISE(p) \
    if \
    :: BUG_RECOVERY_NO_FENCE -> skip \
    :: !BUG_RECOVERY_NO_FENCE && BUG_WRITE_IGNORES_FENCE -> flo[p] = MAX(flo[p], FENCE) \
    :: !BUG_RECOVERY_NO_FENCE && !BUG_WRITE_IGNORES_FENCE -> prom[p] = MAX(prom[p], FENCE) \
    fi
#define CRASHR(r) \
    :: d_step { ncrash < CRASHES && !down[0] && !down[1] && !down[2] -> \
                down[r] = 1; acc[r] = 0; prom[r] = 0; flo[r] = 0; ncrash++; \
                printf("  replica %d crashes\n", r); tidy() }
#define RECOVER_READ(r, p) \
    :: d_step { down[r] && !down[p] && !BIT(rmask, p) -> \
                RAISE(p); \
                racc = MAX(racc, acc[p]); rprom = MAX(rprom, prom[p]); \
                rmask = rmask | (1 << (p)); \
                printf("  replica %d recovering reads replica %d (acc %d prom %d)\n", \
                       r, p, acc[p], PROM(p)); tidy() }
#define REJOIN(r) \
    :: d_step { down[r] && rmask == (ALLR & ~(1 << (r))) -> \
                acc[r] = racc; prom[r] = rprom; RAISE(r); \
                down[r] = 0; rmask = 0; racc = 0; rprom = 0; \
                printf("  replica %d rejoins (acc %d prom %d)\n", r, acc[r], PROM(r)); tidy() }

active proctype Network() {
end:
    do
    DELIVER(0, 0) DELIVER(0, 1) DELIVER(0, 2)
    DELIVER(1, 0) DELIVER(1, 1) DELIVER(1, 2)
    LATE(0, 0) LATE(0, 1) LATE(0, 2) LATE(1, 0) LATE(1, 1) LATE(1, 2)
    LATE(2, 0) LATE(2, 1) LATE(2, 2) LATE(3, 0) LATE(3, 1) LATE(3, 2)
    CRASHR(0) CRASHR(1) CRASHR(2)
    RECOVER_READ(0, 1) RECOVER_READ(0, 2) REJOIN(0)
    RECOVER_READ(1, 0) RECOVER_READ(1, 2) REJOIN(1)
    RECOVER_READ(2, 0) RECOVER_READ(2, 1) REJOIN(2)
    od
}

/* ---- the check ---------------------------------------------------------------- */
inline check() {
    ix = 0;
    do :: ix < TSN -> inL[ix] = 0; ix++ :: else -> break od;
    inL[0] = 1;
    ix = 0;
    do
    :: ix < NCL * NOPS ->
        if
        :: res[ix] != NONE ->
            inL[res[ix]] = 1;
            assert(res[ix] >= start[ix]);       /* C2: no result older than a completed op */
        :: else
        fi;
        ix++
    :: else -> break
    od;
    /* close L under "an APPLY or IDENT in L derives from its base" (older) */
    tx = TSN - 1;
    do
    :: tx > 0 ->
        if
        :: inL[tx] ->
            jx = NONE; ix = 0;
            do :: ix < NCL * G -> if :: made[ix].ts == tx -> jx = ix :: else fi; ix++
               :: else -> break od;
            assert(jx != NONE);                 /* every ts in L was created */
            if :: made[jx].kind != BLIND -> inL[made[jx].base] = 1 :: else fi
        :: else
        fi;
        tx--
    :: else -> break
    od;
    ix = 0;
    do
    :: ix < NCL * G ->
        if
        :: made[ix].ts != 0 && inL[made[ix].ts] ->
            /* C2: later than every result completed before its operation began */
            assert(made[ix].ts > start[ix / G * NOPS + made[ix].op]);
            if
            :: made[ix].kind != BLIND ->
                tx = made[ix].base + 1;
                do
                :: tx < made[ix].ts -> assert(!inL[tx]); tx++    /* C3: no lost update */
                :: else -> break
                od
            :: else
            fi;
            if
            :: made[ix].kind != IDENT ->        /* C4: took effect once, as reported */
                assert(res[ix / G * NOPS + made[ix].op] == NONE ||
                       res[ix / G * NOPS + made[ix].op] == made[ix].ts);
                jx = 0;
                do
                :: jx < NCL * G ->
                    assert(jx == ix || made[jx].ts == 0 || !inL[made[jx].ts] ||
                           made[jx].kind == IDENT || jx / G != ix / G ||
                           made[jx].op != made[ix].op);
                    jx++
                :: else -> break
                od
            :: else
            fi
        :: else
        fi;
        ix++
    :: else -> break
    od
}

init {
    d_step {
        ix = 0;
        do :: ix < NCL * NOPS -> res[ix] = NONE; ix++ :: else -> break od
    };
#if defined(SCRIPT)
    script = SCRIPT;
#elif defined(SCEN)
    script = SCENARIO(SCEN);
#else
    if
    :: script = SCENARIO(0)
    :: script = SCENARIO(1)
    :: script = SCENARIO(2)
    :: script = SCENARIO(3)
    :: script = SCENARIO(4)
    :: script = SCENARIO(5)
    :: script = SCENARIO(6)
    :: script = SCENARIO(7)
    :: script = SCENARIO(8)
    :: script = SCENARIO(9)
    fi;
#endif
    atomic { run Proposer(0); run Proposer(1) };
    ndone == NCL;
    d_step { check() }
}
