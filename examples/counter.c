/*
 * counter - a stateful counter kept in the store.
 *
 * The request body is a command (surrounding whitespace ignored):
 *
 *     ""  or "incr"   add 1 to the counter; reply with the new value
 *     "add N"         add N (may be negative; the count never drops below 0)
 *     "get"           reply with the value, unchanged (0 if never counted)
 *     "reset"         set the counter to 0; reply 0
 *
 * The reply is the value in decimal followed by a newline.  An unknown
 * command answers "error: ..." with a non-zero return (HTTP 500).
 *
 * The count lives under key "count" in the tenant's namespace, so it
 * survives across invocations, instances and node restarts of the
 * function.  cloister_kv_incr() is a single atomic read-modify-write in
 * the store: any number of concurrent invocations each add exactly once,
 * with no lock.  (examples/counter_locked.c does the same with get + set
 * under a lock, for comparison.)
 */
#include <cloister/function.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t KEY[] = "count";
#define KEY_LEN ((uint32_t)sizeof KEY - 1)

static int reply_number(int64_t v)
{
    char out[32];
    int len = snprintf(out, sizeof out, "%lld\n", (long long)v);
    return cloister_output((const uint8_t *)out, (uint32_t)len) == 0 ? 0 : 1;
}

static int reply_error(const char *msg, int32_t code)
{
    char out[128];
    int len = snprintf(out, sizeof out, "error: %s (%d)\n", msg, (int)code);
    cloister_output((const uint8_t *)out, (uint32_t)len);
    return 1;
}

/* Reads the body into cmd (at most cap - 1 bytes), trimmed, NUL-terminated. */
static void read_command(char *cmd, size_t cap)
{
    int32_t n = cloister_input((uint8_t *)cmd, (uint32_t)(cap - 1));
    if (n < 0)
        n = 0;
    if ((size_t)n > cap - 1)
        n = (int32_t)(cap - 1);
    cmd[n] = '\0';
    while (n > 0 && strchr(" \t\r\n", cmd[n - 1]))
        cmd[--n] = '\0';
    size_t lead = strspn(cmd, " \t\r\n");
    memmove(cmd, cmd + lead, (size_t)n - lead + 1);
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char cmd[64];
    read_command(cmd, sizeof cmd);

    int64_t delta = 1;
    if (strcmp(cmd, "get") == 0) {
        char val[32];
        int64_t n = cloister_kv_get(KEY, KEY_LEN, (uint8_t *)val, sizeof val - 1, NULL);
        if (n == CLOISTER_ENOTFOUND)
            return reply_number(0);
        if (n < 0 || n > (int64_t)sizeof val - 1)
            return reply_error("cannot read the counter", (int32_t)n);
        val[n] = '\0';
        return reply_number(strtoll(val, NULL, 10));
    }
    if (strcmp(cmd, "reset") == 0) {
        int32_t rc = cloister_kv_set(KEY, KEY_LEN, (const uint8_t *)"0", 1);
        return rc == 0 ? reply_number(0) : reply_error("cannot reset the counter", rc);
    }
    if (strncmp(cmd, "add ", 4) == 0) {
        char *end;
        delta = strtoll(cmd + 4, &end, 10);
        if (end == cmd + 4 || *end != '\0')
            return reply_error("add needs an integer", CLOISTER_EINVAL);
    } else if (cmd[0] != '\0' && strcmp(cmd, "incr") != 0) {
        return reply_error("unknown command; use incr, add N, get or reset", CLOISTER_EINVAL);
    }

    int64_t value;
    int32_t rc = cloister_kv_incr(KEY, KEY_LEN, delta, &value);
    return rc == 0 ? reply_number(value) : reply_error("cannot increment the counter", rc);
}
