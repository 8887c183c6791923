/*
 * transport.h - how the replication engine (repl.h) talks to its peers.
 *
 * The engine is a single-threaded state machine.  Everything that drives
 * it -- a message from a peer, a timer tick, a wake-up after a local
 * submission, a peer coming up or going down -- runs on one thread, the
 * *repl thread*, which belongs to the transport:
 *
 *   - peer.c (production): an epoll loop over mutual-TLS connections to
 *     every other node, with certificates issued by the coordinator after
 *     attestation (trust/attest.h);
 *   - tests/unit/repl/simnet.h (tests): a deterministic in-process network
 *     that loses, duplicates, delays and reorders messages on purpose.
 *
 * The transport moves opaque engine messages.  It guarantees that a
 * message delivered to the engine was sent by the attested node it names
 * (peer.c: the TLS peer certificate names the node; the frame header
 * carries the sender's epoch, and frames of an older incarnation or
 * out of sequence are dropped before the engine sees them).  It does not
 * guarantee delivery: a message may be lost (connection reset, peer
 * down), and the engine retries what it needs.  Between one pair of nodes,
 * messages that are delivered arrive in the order sent (per connection);
 * the engine must not rely on that across reconnections.
 *
 * Frames on the wire (peer.c; all integers little-endian):
 *   hello   (first frame, dialer -> listener):
 *           u32 len | u32 magic "CLP1" | u32 from_id | u64 epoch
 *   welcome (the listener's answer): u32 len | "CLPW" | u32 id | u64 epoch
 *   data:   u32 len | u64 seq | payload (one engine message)
 *   len counts the bytes after itself; seq starts at 1 and increases by
 *   one per frame on that connection.  Each node dials every peer and sends
 *   only on the connection it dialled, so each connection carries messages
 *   one way (no dial races); after its welcome the listener only reads.
 */
#ifndef CLOISTER_REPL_TRANSPORT_H
#define CLOISTER_REPL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#define REPL_MAX_NODES 7          /* node ids are 1..n, n <= REPL_MAX_NODES */
#define REPL_MAX_MSG (4u << 20)   /* largest engine message, bytes */

/* What the engine calls.  All from the repl thread, except wake(). */
typedef struct repl_transport {
    void *ctx;
    /* Queues one message to node `to` (never self).  Never blocks; the
     * bytes are copied.  CL_OK, or CL_ECLOSED when the peer is not
     * connected now (the message is dropped; the engine treats it as
     * lost), CL_ETOOBIG past REPL_MAX_MSG. */
    int (*send)(void *ctx, int to, const uint8_t *msg, size_t len);
    /* Pushes out what send() queued (the engine calls it at the end of
     * each step, so a burst of messages to one peer leaves in one write). */
    void (*flush)(void *ctx);
    /* Makes the repl thread call repl_on_wake() soon.  Any thread;
     * async-signal-unsafe but cheap (an eventfd write). */
    void (*wake)(void *ctx);
    /* Monotonic microseconds, the clock of every engine time-out. */
    uint64_t (*now_us)(void *ctx);
} repl_transport;

/* What the transport calls, on the repl thread (implemented in repl.c).
 * The engine pointer is opaque to the transport. */
typedef struct repl_engine_hooks {
    void *engine;
    /* One message from attested node `from` (its incarnation `epoch`). */
    void (*on_message)(void *engine, int from, uint64_t epoch,
                       const uint8_t *msg, size_t len);
    /* About every millisecond, and after each batch of messages. */
    void (*on_tick)(void *engine, uint64_t now_us);
    /* After wake(). */
    void (*on_wake)(void *engine);
    /* A peer became reachable (up = 1) or was lost (up = 0). */
    void (*on_peer)(void *engine, int node, int up);
} repl_engine_hooks;

#endif
