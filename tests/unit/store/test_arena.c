/* test_arena.c - the untrusted arena's slab allocator: classes, alloc/free,
 * full arena, pages moving between classes, file backing, and allocator
 * metadata kept out of the arena. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/store/arena.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1u << 20)

/* Runs a call once and stops the test program if it fails. */
#define OK(call)                                                              \
    do {                                                                      \
        int ok_rc_ = (call);                                                  \
        REQUIRE(ok_rc_ == CL_OK);                                             \
    } while (0)

static char tmpdir[64];

static void test_classes(void)
{
    arena *a;
    OK(arena_create(4 * MiB, 64 * 1024, NULL, &a));
    int n = arena_class_count(a);
    CHECK(n > 30 && n < ARENA_MAX_CLASSES);
    CHECK_EQ(arena_page_size(a), MiB);
    CHECK_EQ(arena_chunk_size(a, 0), 64);
    CHECK_EQ(arena_chunk_size(a, n - 1), MiB);
    for (int i = 1; i < n - 1; i++) {
        size_t prev = arena_chunk_size(a, i - 1), cur = arena_chunk_size(a, i);
        CHECK(cur > prev && cur <= prev * 5 / 4 + 8 && cur % 8 == 0);
    }
    CHECK_EQ(arena_class_for(a, 0), 0);
    CHECK_EQ(arena_class_for(a, 1), 0);
    CHECK_EQ(arena_class_for(a, 64), 0);
    CHECK_EQ(arena_class_for(a, 65), 1);
    for (size_t len = 1; len <= MiB; len = len * 3 + 1) {
        int c = arena_class_for(a, len);
        CHECK(c >= 0 && arena_chunk_size(a, c) >= len);
        CHECK(c == 0 || arena_chunk_size(a, c - 1) < len); /* the smallest that fits */
    }
    CHECK_EQ(arena_class_for(a, MiB), n - 1);
    CHECK_EQ(arena_class_for(a, MiB + 1), -1);
    arena_destroy(a);

    /* a large max_value makes large pages */
    OK(arena_create(8 * MiB, 3 * MiB + 5, NULL, &a));
    CHECK_EQ(arena_page_size(a), 3 * MiB + 4096);
    CHECK(arena_class_for(a, 3 * MiB + 5) >= 0);
    CHECK_EQ(arena_pages_total(a), 2);
    arena_destroy(a);
}

static void test_bad_config(void)
{
    arena *a = NULL;
    CHECK_EQ(arena_create(MiB - 1, 1024, NULL, &a), CL_EINVAL); /* smaller than a page */
    CHECK_EQ(arena_create(4 * MiB, 0, NULL, &a), CL_EINVAL);
    CHECK_EQ(arena_create(4 * MiB, 8 * MiB, NULL, &a), CL_EINVAL); /* page > arena */
    CHECK_EQ(arena_create(4 * MiB, 1024, "/nonexistent-dir/arena", &a), CL_EIO);
    CHECK(a == NULL);
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void test_alloc_free_full(void)
{
    arena *a;
    OK(arena_create(2 * MiB, 64 * 1024, NULL, &a));
    int cls = arena_class_for(a, 1000);
    size_t cs = arena_chunk_size(a, cls);
    size_t per_page = MiB / cs;
    size_t total = 2 * per_page;
    uint64_t *offs = calloc(total + 1, sizeof *offs);
    REQUIRE(offs != NULL);

    size_t n = 0;
    while (n <= total && arena_alloc(a, cls, &offs[n]) == CL_OK)
        n++;
    CHECK_EQ(n, total);                       /* exactly two pages of chunks */
    CHECK_EQ(arena_alloc(a, cls, &offs[n]), CL_EFULL);
    uint64_t other;
    CHECK_EQ(arena_alloc(a, 0, &other), CL_EFULL); /* no page left for another class */
    CHECK_EQ(arena_pages_used(a), 2);
    CHECK_EQ(arena_bytes_used(a), total * cs);

    /* distinct, chunk aligned within their page, inside the arena */
    qsort(offs, n, sizeof *offs, cmp_u64);
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        ok &= (offs[i] % MiB) % cs == 0 && (offs[i] % MiB) + cs <= MiB && offs[i] < 2 * MiB;
        if (i)
            ok &= offs[i] != offs[i - 1];
    }
    CHECK(ok);

    /* a freed chunk is handed out again */
    arena_free(a, cls, offs[5]);
    CHECK_EQ(arena_bytes_used(a), (total - 1) * cs);
    uint64_t again;
    CHECK_EQ(arena_alloc(a, cls, &again), CL_OK);
    CHECK_EQ(again, offs[5]);

    /* emptying the first page returns it to the pool: another class gets it */
    for (size_t i = 0; i < per_page; i++)
        arena_free(a, cls, offs[i]);
    CHECK_EQ(arena_pages_used(a), 1);
    arena_class_stats cst;
    arena_class_stats_get(a, cls, &cst);
    CHECK_EQ(cst.pages, 1);
    CHECK_EQ(cst.used_chunks, per_page);
    CHECK_EQ(arena_alloc(a, 0, &other), CL_OK);
    CHECK(other < MiB);
    arena_class_stats_get(a, 0, &cst);
    CHECK_EQ(cst.pages, 1);
    CHECK_EQ(cst.used_chunks, 1);
    arena_free(a, 0, other);
    for (size_t i = per_page; i < n; i++)
        arena_free(a, cls, offs[i]);
    CHECK_EQ(arena_bytes_used(a), 0);
    CHECK_EQ(arena_pages_used(a), 0);
    free(offs);
    arena_destroy(a);
}

static void test_file_backed(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/arena", tmpdir);
    arena *a;
    OK(arena_create(3 * MiB, 4096, path, &a));
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 3 * MiB && (st.st_mode & 0777) == 0600);

    uint64_t off;
    OK(arena_alloc(a, arena_class_for(a, 100), &off));
    memcpy(arena_ptr(a, off), "through the mapping", 19);
    int fd = open(path, O_RDWR);
    REQUIRE(fd >= 0);
    char buf[32] = { 0 };
    CHECK_EQ(pread(fd, buf, 19, (off_t)off), 19);
    CHECK_MEM(buf, "through the mapping", 19);
    /* and the other way: the adversary writes the file, the arena sees it */
    CHECK_EQ(pwrite(fd, "EVIL", 4, (off_t)off), 4);
    CHECK_MEM(arena_ptr(a, off), "EVIL", 4);
    close(fd);
    arena_destroy(a);

    /* recreating truncates the old contents */
    OK(arena_create(2 * MiB, 4096, path, &a));
    CHECK(stat(path, &st) == 0 && st.st_size == 2 * MiB);
    static const uint8_t zero[19];
    CHECK_MEM(arena_ptr(a, off), zero, 19);
    arena_destroy(a);
    unlink(path);
}

/* The adversary owns every arena byte: scribbling over all of them must not
 * change what the allocator hands out, because it never reads them. */
static void test_metadata_not_in_arena(void)
{
    arena *a;
    OK(arena_create(4 * MiB, 64 * 1024, NULL, &a));
    int c1 = arena_class_for(a, 200), c2 = arena_class_for(a, 5000);
    uint64_t o[64];
    for (int i = 0; i < 64; i++)
        OK(arena_alloc(a, i % 2 ? c1 : c2, &o[i]));
    for (int i = 0; i < 64; i += 4)
        arena_free(a, i % 2 ? c1 : c2, o[i]);
    uint64_t used = arena_bytes_used(a), pages = arena_pages_used(a);

    memset(arena_ptr(a, 0), 0xA5, arena_size(a));

    CHECK_EQ(arena_bytes_used(a), used);
    CHECK_EQ(arena_pages_used(a), pages);
    /* the freed chunks come back, and nothing still in use is handed out */
    int reused = 0, clash = 0;
    for (int i = 0; i < 64; i += 4) {
        uint64_t n;
        OK(arena_alloc(a, i % 2 ? c1 : c2, &n));
        for (int j = 0; j < 64; j++) {
            if (j % 4 && n == o[j])
                clash++;
            if (j % 4 == 0 && n == o[j])
                reused++;
        }
    }
    CHECK_EQ(clash, 0);
    CHECK_EQ(reused, 16);
    arena_destroy(a);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cl-arena-XXXXXX");
    char *dir = mkdtemp(tmpdir);
    REQUIRE(dir != NULL);
    RUN(test_classes);
    RUN(test_bad_config);
    RUN(test_alloc_free_full);
    RUN(test_file_backed);
    RUN(test_metadata_not_in_arena);
    rmdir(tmpdir);
    return th_done();
}
