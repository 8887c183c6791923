/* test_platform.c - the simulated platform key: created once (0600,
 * 32 bytes), reloaded unchanged, refused when damaged or exposed, one key
 * for concurrent first users; HKDF derivation pinned by a known answer. */
#include "../harness.h"
#include "../../../src/common/err.h"
#include "../../../src/trust/platform.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void key_path(const char *d, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", d, PLATFORM_KEY_FILE);
}

static void rm_dir(const char *d)
{
    char p[128];
    key_path(d, p, sizeof p);
    unlink(p);
    rmdir(d);
}

static void test_create_and_reload(void)
{
    uint8_t k1[PLATFORM_KEY_LEN], k2[PLATFORM_KEY_LEN], zero[PLATFORM_KEY_LEN] = { 0 };
    char p[128];
    struct stat st;
    key_path(dir, p, sizeof p);
    CHECK(stat(p, &st) != 0);
    CHECK_EQ(platform_key_load(dir, k1), CL_OK);
    CHECK(memcmp(k1, zero, sizeof zero) != 0);
    REQUIRE(stat(p, &st) == 0);
    CHECK_EQ(st.st_mode & 07777, 0600);
    CHECK_EQ(st.st_size, PLATFORM_KEY_LEN);
    CHECK_EQ(platform_key_load(dir, k2), CL_OK);
    CHECK_MEM(k1, k2, sizeof k1);

    /* the file holds exactly the key */
    uint8_t raw[PLATFORM_KEY_LEN + 1];
    int fd = open(p, O_RDONLY);
    REQUIRE(fd >= 0);
    CHECK_EQ(read(fd, raw, sizeof raw), PLATFORM_KEY_LEN);
    close(fd);
    CHECK_MEM(raw, k1, PLATFORM_KEY_LEN);

    /* no temporary files left behind */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "test $(ls -A %s | wc -l) -eq 1", dir);
    CHECK_EQ(system(cmd), 0);
}

static void test_other_dir_other_key(void)
{
    char d2[] = "/tmp/cl-platform-XXXXXX";
    REQUIRE(mkdtemp(d2));
    uint8_t k1[PLATFORM_KEY_LEN], k2[PLATFORM_KEY_LEN];
    CHECK_EQ(platform_key_load(dir, k1), CL_OK);
    CHECK_EQ(platform_key_load(d2, k2), CL_OK);
    CHECK(memcmp(k1, k2, sizeof k1) != 0);
    rm_dir(d2);
}

static void test_refuses_damaged_or_exposed(void)
{
    char d2[] = "/tmp/cl-platform-XXXXXX";
    char p[128];
    uint8_t k[PLATFORM_KEY_LEN], zero[PLATFORM_KEY_LEN] = { 0 };
    REQUIRE(mkdtemp(d2));
    key_path(d2, p, sizeof p);

    /* too short */
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    CHECK_EQ(write(fd, "short", 5), 5);
    close(fd);
    memset(k, 0xAA, sizeof k);
    CHECK_EQ(platform_key_load(d2, k), CL_ECONFIG);
    CHECK_MEM(k, zero, sizeof k);   /* nothing half-loaded */

    /* right size but readable by others */
    fd = open(p, O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    CHECK_EQ(write(fd, zero, sizeof zero), (long)sizeof zero);
    close(fd);
    REQUIRE(chmod(p, 0644) == 0);
    CHECK_EQ(platform_key_load(d2, k), CL_ECONFIG);
    REQUIRE(chmod(p, 0600) == 0);
    CHECK_EQ(platform_key_load(d2, k), CL_OK);

    /* a symlink is not followed */
    unlink(p);
    REQUIRE(symlink("/etc/hostname", p) == 0);
    CHECK(platform_key_load(d2, k) != CL_OK);
    unlink(p);

    /* a missing state dir is an error, not a crash */
    CHECK(platform_key_load("/nonexistent/cloister/state", k) != CL_OK);
    rm_dir(d2);
}

#define RACERS 8
static char race_dir[64];
static uint8_t race_keys[RACERS][PLATFORM_KEY_LEN];
static int race_rc[RACERS];

static void *racer(void *arg)
{
    long i = (long)arg;
    race_rc[i] = platform_key_load(race_dir, race_keys[i]);
    return NULL;
}

static void test_concurrent_first_use(void)
{
    strcpy(race_dir, "/tmp/cl-platform-XXXXXX");
    REQUIRE(mkdtemp(race_dir));
    pthread_t t[RACERS];
    for (long i = 0; i < RACERS; i++)
        REQUIRE(pthread_create(&t[i], NULL, racer, (void *)i) == 0);
    for (int i = 0; i < RACERS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < RACERS; i++) {
        CHECK_EQ(race_rc[i], CL_OK);
        CHECK_MEM(race_keys[i], race_keys[0], PLATFORM_KEY_LEN);
    }
    rm_dir(race_dir);
}

static void test_derive(void)
{
    uint8_t root[PLATFORM_KEY_LEN], a[PLATFORM_KEY_LEN], b[PLATFORM_KEY_LEN], c[PLATFORM_KEY_LEN];
    for (int i = 0; i < PLATFORM_KEY_LEN; i++)
        root[i] = (uint8_t)i;
    /* Known answer, computed independently with:
     *   openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt hexkey:0001..1f
     *     -kdfopt salt:"cloister platform v1" -kdfopt info:compile-cache HKDF
     * Changing the construction must be deliberate: it invalidates every
     * key derived on every node. */
    static const uint8_t kat[PLATFORM_KEY_LEN] = {
        0x52, 0x76, 0xF4, 0x41, 0x74, 0x4B, 0x0A, 0xB0, 0x13, 0xB8, 0x48, 0x92, 0x3B, 0x3F, 0x59, 0x35,
        0x8F, 0xD7, 0x16, 0x18, 0xA7, 0x63, 0xA2, 0xC1, 0x6F, 0x2D, 0x51, 0xE1, 0x29, 0xBC, 0xC8, 0x9E,
    };
    CHECK_EQ(platform_derive(root, "compile-cache", a), CL_OK);
    CHECK_MEM(a, kat, sizeof kat);
    CHECK_EQ(platform_derive(root, "compile-cache", b), CL_OK);
    CHECK_MEM(a, b, sizeof a);
    CHECK_EQ(platform_derive(root, "other-purpose", c), CL_OK);
    CHECK(memcmp(a, c, sizeof a) != 0);
    root[0] ^= 1;
    CHECK_EQ(platform_derive(root, "compile-cache", c), CL_OK);
    CHECK(memcmp(a, c, sizeof a) != 0);

    platform_key_wipe(a, sizeof a);
    uint8_t zero[PLATFORM_KEY_LEN] = { 0 };
    CHECK_MEM(a, zero, sizeof a);
}

int main(void)
{
    strcpy(dir, "/tmp/cl-platform-XXXXXX");
    REQUIRE(mkdtemp(dir));
    RUN(test_create_and_reload);
    RUN(test_other_dir_other_key);
    RUN(test_refuses_damaged_or_exposed);
    RUN(test_concurrent_first_use);
    RUN(test_derive);
    rm_dir(dir);
    return th_done();
}
