/*
 * wordcount - counts the words of the request body, like `wc` with a
 * frequency table; keeps a running total of every word it has seen.
 *
 *     $ cloister invoke wordcount --data 'the cat saw the other cat. The end'
 *     lines: 0
 *     words: 8
 *     bytes: 34
 *     distinct: 5
 *     total words seen: 8
 *     top:
 *     3 the
 *     2 cat
 *     1 end
 *     1 other
 *     1 saw
 *
 * A word is a maximal run of ASCII letters, digits, apostrophes and bytes
 * >= 0x80 (so UTF-8 words stay whole), with ASCII letters lowercased and
 * apostrophes at either end dropped.  "lines" counts newline bytes, as wc
 * does.  The table lists the TOP most frequent words, most frequent first,
 * ties in byte order.  "total words seen" is a counter in the store (key
 * "wordcount:words"), advanced atomically by each invocation's count.
 *
 * The point of this example is that ordinary C runs unchanged: malloc and
 * realloc (a growing hash table), qsort, snprintf and printf all come from
 * wasi-libc in the WebAssembly build and from glibc in the native one.
 * printf writes to stdout, which is the function's log; stdout is fully
 * buffered, hence the fflush.
 */
#include <cloister/function.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOP 10

static const uint8_t TOTAL_KEY[] = "wordcount:words";

typedef struct word {
    const char *text;       /* points into the body (lowercased in place) */
    size_t len;
    size_t count;
} word;

/* Open-addressing hash table (linear probing); cap is a power of two and
 * stays at least twice the number of words in it. */
typedef struct table {
    word *slots;
    size_t cap, used;
} table;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;        /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int table_grow(table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    word *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        word *w = &t->slots[i];
        if (!w->text)
            continue;
        size_t j = hash_bytes(w->text, w->len) & (cap - 1);
        while (slots[j].text)
            j = (j + 1) & (cap - 1);
        slots[j] = *w;
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    return 0;
}

static int table_add(table *t, const char *s, size_t n)
{
    if (2 * (t->used + 1) > t->cap && table_grow(t) != 0)
        return -1;
    size_t j = hash_bytes(s, n) & (t->cap - 1);
    for (;;) {
        word *w = &t->slots[j];
        if (!w->text) {
            *w = (word){ s, n, 1 };
            t->used++;
            return 0;
        }
        if (w->len == n && memcmp(w->text, s, n) == 0) {
            w->count++;
            return 0;
        }
        j = (j + 1) & (t->cap - 1);
    }
}

static int by_count_then_bytes(const void *a, const void *b)
{
    const word *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->text, y->text, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '\'' || c >= 0x80;
}

/* Appends printf-formatted text to a growing malloc'd buffer. */
typedef struct out {
    char *buf;
    size_t len, cap;
    int failed;
} out;

__attribute__((format(printf, 2, 3)))
static void out_printf(out *o, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->buf ? o->buf + o->len : NULL, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = (o->cap + (size_t)n + 1) * 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->failed = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

CLOISTER_EXPORT("handle")
int32_t handle(void)
{
    int32_t ret = 1;
    table t = { 0 };
    out o = { 0 };
    int32_t len = cloister_input(NULL, 0);
    char *text = malloc(len > 0 ? (size_t)len : 1);
    if (!text || len < 0)
        goto done;
    cloister_input((uint8_t *)text, (uint32_t)len);

    size_t words = 0, lines = 0;
    for (size_t i = 0; i < (size_t)len;) {
        if (text[i] == '\n')
            lines++;
        if (!is_word_byte((unsigned char)text[i])) {
            i++;
            continue;
        }
        size_t start = i;
        for (; i < (size_t)len && is_word_byte((unsigned char)text[i]); i++)
            if (text[i] >= 'A' && text[i] <= 'Z')
                text[i] = (char)(text[i] - 'A' + 'a');
        size_t end = i;
        while (start < end && text[start] == '\'')
            start++;
        while (end > start && text[end - 1] == '\'')
            end--;
        if (start == end)
            continue;
        if (table_add(&t, text + start, end - start) != 0)
            goto done;
        words++;
    }

    int64_t seen = 0;
    int32_t rc = cloister_kv_incr(TOTAL_KEY, sizeof TOTAL_KEY - 1, (int64_t)words, &seen);
    if (rc != 0) {
        out_printf(&o, "error: cannot update the running total (%d)\n", (int)rc);
        goto done;
    }

    /* Compact the table's occupied slots to its front, then sort them. */
    size_t distinct = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.slots[i].text)
            t.slots[distinct++] = t.slots[i];
    if (distinct > 1)
        qsort(t.slots, distinct, sizeof *t.slots, by_count_then_bytes);

    out_printf(&o, "lines: %zu\nwords: %zu\nbytes: %d\ndistinct: %zu\n"
                   "total words seen: %lld\ntop:\n",
               lines, words, (int)len, distinct, (long long)seen);
    for (size_t i = 0; i < distinct && i < TOP; i++)
        out_printf(&o, "%zu %.*s\n", t.slots[i].count, (int)t.slots[i].len, t.slots[i].text);
    if (!o.failed)
        ret = 0;

    printf("wordcount: %zu words, %zu distinct, %lld seen in all\n",
           words, distinct, (long long)seen);
    fflush(stdout);

done:
    if (ret != 0 && o.len == 0)
        out_printf(&o, "error: out of memory\n");
    if (o.len)
        cloister_output((const uint8_t *)o.buf, (uint32_t)o.len);
    free(o.buf);
    free(t.slots);
    free(text);
    return ret;
}
