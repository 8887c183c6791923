/*
 * counter_locked - a counter incremented with plain get + set under a lock.
 *
 * Commands (request body, surrounding whitespace ignored):
 *
 *     ""  or "incr"   lock, read, add 1, write, unlock; reply the new value
 *     "get"           reply with the value (0 if never counted)
 *     "reset"         set the value to 0 (under the lock); reply 0
 *
 * Replies are the decimal value and a newline; errors answer "error: ..."
 * with a non-zero return (HTTP 500).
 *
 * Why the lock: get-then-set is two store operations, so two invocations
 * running at once could both read 41 and both write 42, losing one
 * increment.  Holding lock "counter_locked" from before the read until
 * after the write makes the read-modify-write a critical section; the
 * lock is release-consistent, so the value written before unlock is what
 * the next holder reads, on any node.  1,000 concurrent "incr"s end at
 * exactly 1,000.  (examples/counter.c gets the same effect with one atomic
 * cloister_kv_incr and no lock, which is what a real function would use.)
 *
 * The value lives under key "counter_locked" (not counter.c's "count":
 * functions of one tenant share its namespace).  If the lock cannot be
 * had within LOCK_TIMEOUT_MS the invocation fails and changes nothing.  A
 * lock still held when handle returns (e.g. after a trap) is released by
 * the node, so a failed invocation cannot wedge the counter.
 */
#include <cloister/function.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t KEY[] = "counter_locked";
#define KEY_LEN ((uint32_t)sizeof KEY - 1)
static const uint8_t LOCK[] = "counter_locked";
#define LOCK_LEN ((uint32_t)sizeof LOCK - 1)
#define LOCK_TIMEOUT_MS 10000

static int32_t reply_value(int64_t v)
{
    char out[32];
    int len = snprintf(out, sizeof out, "%lld\n", (long long)v);
    return cloister_output((const uint8_t *)out, (uint32_t)len) == 0 ? 0 : 1;
}

static int32_t reply_error(const char *msg, int64_t code)
{
    char out[128];
    int len = snprintf(out, sizeof out, "error: %s (%lld)\n", msg, (long long)code);
    cloister_output((const uint8_t *)out, (uint32_t)len);
    return 1;
}

/* The stored value: 0 if absent, or a negative CLOISTER_E* code. */
static int64_t read_value(void)
{
    char val[32];
    int64_t n = cloister_kv_get(KEY, KEY_LEN, (uint8_t *)val, sizeof val - 1, NULL);
    if (n == CLOISTER_ENOTFOUND)
        return 0;
    if (n < 0)
        return n;
    if (n > (int64_t)sizeof val - 1)
        return CLOISTER_ENOTNUMBER;
    val[n] = '\0';
    char *end;
    long long v = strtoll(val, &end, 10);
    return (end == val || *end != '\0' || v < 0) ? CLOISTER_ENOTNUMBER : v;
}

static int32_t write_value(int64_t v)
{
    char val[32];
    int len = snprintf(val, sizeof val, "%lld", (long long)v);
    return cloister_kv_set(KEY, KEY_LEN, (const uint8_t *)val, (uint32_t)len);
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char body[16];
    int32_t n = cloister_input((uint8_t *)body, sizeof body - 1);
    if (n < 0)
        n = 0;
    if (n > (int32_t)sizeof body - 1)
        n = sizeof body - 1;
    body[n] = '\0';
    char *cmd = body + strspn(body, " \t\r\n");
    cmd[strcspn(cmd, " \t\r\n")] = '\0';

    if (strcmp(cmd, "get") == 0) {
        int64_t v = read_value();
        return v < 0 ? reply_error("cannot read the counter", v) : reply_value(v);
    }
    int reset = strcmp(cmd, "reset") == 0;
    if (!reset && cmd[0] != '\0' && strcmp(cmd, "incr") != 0)
        return reply_error("unknown command; use incr, get or reset", CLOISTER_EINVAL);

    int32_t rc = cloister_lock(LOCK, LOCK_LEN, LOCK_TIMEOUT_MS);
    if (rc != 0)
        return reply_error("lock not acquired", rc);
    int64_t v = reset ? 0 : read_value();        /* the critical section */
    if (v >= 0 && !reset)
        v += 1;
    if (v >= 0) {
        rc = write_value(v);
        if (rc != 0)
            v = rc;
    }
    cloister_unlock(LOCK, LOCK_LEN);
    return v < 0 ? reply_error("cannot update the counter", v) : reply_value(v);
}
