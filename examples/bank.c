/*
 * bank - accounts and transfers that conserve money under concurrency.
 *
 * Commands (the request body; words separated by spaces):
 *
 *     open NAME AMOUNT          create account NAME holding AMOUNT (>= 0);
 *                               refused if it exists
 *     balance NAME              the balance of NAME
 *     transfer FROM TO AMOUNT   move AMOUNT (> 0) from FROM to TO; refused,
 *                               changing nothing, if FROM holds less
 *     audit NAME...             a consistent snapshot of up to 8 accounts
 *                               and their total
 *
 * Replies: "NAME BALANCE" lines (transfer: both accounts after the move;
 * audit: each account, then "total SUM").  A refused transfer answers
 * "refused: ..." and an error "error: ..."; both return non-zero (HTTP
 * 500) and change nothing.  Amounts are integers (say, cents); names are
 * 1..32 of [A-Za-z0-9_-].  Account NAME is key "bank:NAME".
 *
 * Concurrency.  A transfer reads two balances and writes two balances;
 * without mutual exclusion two transfers from the same account could both
 * see enough money and overdraw it, or one could overwrite the other's
 * write and create or destroy money.  So each account has a lock (named
 * like its key) and a transfer holds the locks of both accounts from its
 * first read to its last write.  Deadlock is avoided the classic way: every
 * invocation that takes several locks takes them in one global order (by
 * name, bytewise), so no two can each hold a lock the other is waiting for
 * ("a -> b" and "b -> a" both lock a first).  audit takes all its accounts'
 * locks in the same order, so while it holds them no transfer touching
 * those accounts is half done: the total it reports is always the true
 * total.  Locks are release-consistent: what a holder wrote before unlock
 * is what the next holder reads, on any node.  A lock not acquired within
 * LOCK_TIMEOUT_MS fails the invocation (nothing changed); locks still held
 * when handle returns are released by the node.
 *
 * If the second write of a transfer fails (e.g. the store is full), the
 * first is undone before the locks are released.
 */
#include <cloister/function.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 10
#define MAX_AUDIT 8
#define NAME_MAX_LEN 32
#define LOCK_TIMEOUT_MS 10000

typedef struct account {
    char name[NAME_MAX_LEN + 1];
    uint8_t key[5 + NAME_MAX_LEN];      /* "bank:" NAME: both the key and the lock name */
    uint32_t klen;
    int64_t balance;
    int locked;
} account;

/* ---- replies ------------------------------------------------------------ */

static char reply_buf[1024];
static size_t reply_len;

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(reply_buf + reply_len, sizeof reply_buf - reply_len, fmt, ap);
    va_end(ap);
    if (n > 0)
        reply_len += (size_t)n < sizeof reply_buf - reply_len ? (size_t)n
                                                              : sizeof reply_buf - reply_len - 1;
}

/* ---- accounts ----------------------------------------------------------- */

static int account_init(account *a, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > NAME_MAX_LEN || strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                   "0123456789_-") != n) {
        say("error: bad account name (1..%d of A-Z a-z 0-9 _ -)\n", NAME_MAX_LEN);
        return -1;
    }
    memset(a, 0, sizeof *a);
    memcpy(a->name, name, n);
    memcpy(a->key, "bank:", 5);
    memcpy(a->key + 5, name, n);
    a->klen = (uint32_t)(5 + n);
    return 0;
}

/* Reads a->balance.  0, or -1 with the reason said. */
static int account_read(account *a)
{
    char val[24];
    int64_t n = cloister_kv_get(a->key, a->klen, (uint8_t *)val, sizeof val - 1, NULL);
    if (n == CLOISTER_ENOTFOUND) {
        say("error: no account %s\n", a->name);
        return -1;
    }
    if (n < 0 || n > (int64_t)sizeof val - 1) {
        say("error: cannot read account %s (%lld)\n", a->name, (long long)n);
        return -1;
    }
    val[n] = '\0';
    a->balance = strtoll(val, NULL, 10);
    return 0;
}

static int32_t account_write(const account *a, int64_t balance)
{
    char val[24];
    int len = snprintf(val, sizeof val, "%lld", (long long)balance);
    return cloister_kv_set(a->key, a->klen, (const uint8_t *)val, (uint32_t)len);
}

static int by_key(const void *x, const void *y)
{
    const account *a = *(account *const *)x, *b = *(account *const *)y;
    size_t n = a->klen < b->klen ? a->klen : b->klen;
    int c = memcmp(a->key, b->key, n);
    return c ? c : (a->klen > b->klen) - (a->klen < b->klen);
}

/* Locks the n accounts (distinct) in the global order: sorted by key. */
static int lock_all(account **acc, size_t n)
{
    account *order[MAX_AUDIT];
    memcpy(order, acc, n * sizeof *acc);
    qsort(order, n, sizeof *order, by_key);
    for (size_t i = 0; i < n; i++) {
        int32_t rc = cloister_lock(order[i]->key, order[i]->klen, LOCK_TIMEOUT_MS);
        if (rc != 0) {
            say("error: account %s is busy (%d)\n", order[i]->name, (int)rc);
            return -1;
        }
        order[i]->locked = 1;
    }
    return 0;
}

static void unlock_all(account **acc, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (acc[i]->locked) {
            cloister_unlock(acc[i]->key, acc[i]->klen);
            acc[i]->locked = 0;
        }
}

/* Parses a decimal amount in [min, 2^62]. */
static int parse_amount(const char *s, int64_t min, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < min || v > (1ll << 62)) {
        say("error: bad amount '%s'\n", s);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- commands ----------------------------------------------------------- */

static int cmd_open(char **w)
{
    account a;
    int64_t amount;
    if (account_init(&a, w[1]) != 0 || parse_amount(w[2], 0, &amount) != 0)
        return 1;
    char val[24];
    int len = snprintf(val, sizeof val, "%lld", (long long)amount);
    /* Version 0 means "only if the key does not exist": no lock needed. */
    int32_t rc = cloister_kv_cas(a.key, a.klen, 0, (const uint8_t *)val, (uint32_t)len);
    if (rc == CLOISTER_ECONFLICT) {
        say("error: account %s exists\n", a.name);
        return 1;
    }
    if (rc != 0) {
        say("error: cannot open account %s (%d)\n", a.name, (int)rc);
        return 1;
    }
    say("%s %lld\n", a.name, (long long)amount);
    return 0;
}

static int cmd_balance(char **w)
{
    account a;
    if (account_init(&a, w[1]) != 0 || account_read(&a) != 0)
        return 1;
    say("%s %lld\n", a.name, (long long)a.balance);
    return 0;
}

static int cmd_transfer(char **w)
{
    account from, to;
    account *both[2] = { &from, &to };
    int64_t amount;
    if (account_init(&from, w[1]) != 0 || account_init(&to, w[2]) != 0 ||
        parse_amount(w[3], 1, &amount) != 0)
        return 1;
    if (strcmp(from.name, to.name) == 0) {
        say("error: transfer from %s to itself\n", from.name);
        return 1;
    }

    int ret = 1;
    if (lock_all(both, 2) != 0 || account_read(&from) != 0 || account_read(&to) != 0)
        goto out;
    if (from.balance < amount) {
        say("refused: %s holds %lld, cannot pay %lld\n", from.name,
            (long long)from.balance, (long long)amount);
        goto out;
    }
    if (to.balance > INT64_MAX - amount) {
        say("refused: %s would overflow\n", to.name);
        goto out;
    }
    int32_t rc = account_write(&from, from.balance - amount);
    if (rc == 0) {
        rc = account_write(&to, to.balance + amount);
        if (rc != 0 && account_write(&from, from.balance) != 0)
            say("error: %s could not be restored: the books need repair\n", from.name);
    }
    if (rc != 0) {
        say("error: transfer failed (%d); nothing moved\n", (int)rc);
        goto out;
    }
    say("%s %lld\n%s %lld\n", from.name, (long long)(from.balance - amount),
        to.name, (long long)(to.balance + amount));
    ret = 0;
out:
    unlock_all(both, 2);
    return ret;
}

static int cmd_audit(char **w, size_t nw)
{
    account acc[MAX_AUDIT];
    account *ptr[MAX_AUDIT];
    size_t n = 0;
    for (size_t i = 1; i < nw; i++) {
        if (n == MAX_AUDIT) {
            say("error: audit takes at most %d accounts\n", MAX_AUDIT);
            return 1;
        }
        if (account_init(&acc[n], w[i]) != 0)
            return 1;
        int dup = 0;
        for (size_t j = 0; j < n; j++)
            dup |= strcmp(acc[j].name, acc[n].name) == 0;
        if (!dup) {
            ptr[n] = &acc[n];
            n++;
        }
    }

    int ret = 1;
    int64_t total = 0;
    if (lock_all(ptr, n) != 0)
        goto out;
    for (size_t i = 0; i < n; i++)
        if (account_read(&acc[i]) != 0)
            goto out;
    for (size_t i = 0; i < n; i++) {
        say("%s %lld\n", acc[i].name, (long long)acc[i].balance);
        total += acc[i].balance;
    }
    say("total %lld\n", (long long)total);
    ret = 0;
out:
    unlock_all(ptr, n);
    return ret;
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    char body[512];
    char *w[MAX_WORDS];
    size_t nw = 0;
    int ret = 1;

    reply_len = 0;
    int32_t len = cloister_input((uint8_t *)body, sizeof body - 1);
    if (len < 0 || len > (int32_t)sizeof body - 1) {
        say("error: the command is too long\n");
        goto reply;
    }
    body[len] = '\0';
    for (char *save = NULL, *t = strtok_r(body, " \t\r\n", &save); t;
         t = strtok_r(NULL, " \t\r\n", &save)) {
        if (nw == MAX_WORDS) {
            say("error: too many words\n");
            goto reply;
        }
        w[nw++] = t;
    }

    if (nw == 3 && strcmp(w[0], "open") == 0)
        ret = cmd_open(w);
    else if (nw == 2 && strcmp(w[0], "balance") == 0)
        ret = cmd_balance(w);
    else if (nw == 4 && strcmp(w[0], "transfer") == 0)
        ret = cmd_transfer(w);
    else if (nw >= 2 && strcmp(w[0], "audit") == 0)
        ret = cmd_audit(w, nw);
    else
        say("error: use: open NAME AMOUNT | balance NAME | transfer FROM TO AMOUNT | "
            "audit NAME...\n");
reply:
    cloister_output((const uint8_t *)reply_buf, (uint32_t)reply_len);
    return ret;
}
