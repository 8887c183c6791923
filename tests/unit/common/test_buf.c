/* test_buf.c - growable buffers and the error table. */
#include "../harness.h"
#include "../../../src/common/buf.h"
#include "../../../src/common/err.h"

static void test_append_consume(void)
{
    cl_buf b;
    cl_buf_init(&b);
    for (int i = 0; i < 1000; i++)
        CHECK_EQ(cl_buf_printf(&b, "%d,", i), CL_OK);
    CHECK(b.len > 1000);
    CHECK_MEM(b.data, "0,1,2,", 6);
    size_t before = b.len;
    cl_buf_consume(&b, 2);
    CHECK_EQ(b.len, before - 2);
    CHECK_MEM(b.data, "1,2,", 4);
    uint8_t *p = cl_buf_extend(&b, 3);
    REQUIRE(p != NULL);
    memcpy(p, "xyz", 3);
    CHECK_MEM(b.data + b.len - 3, "xyz", 3);
    cl_buf_truncate(&b, 1);
    CHECK_EQ(b.len, 1);
    cl_buf_consume(&b, 5);
    CHECK_EQ(b.len, 0);
    cl_buf_shrink(&b, 0);
    CHECK(b.data == NULL);
    CHECK_EQ(cl_buf_reserve(&b, SIZE_MAX), CL_ENOMEM);
    cl_buf_fini(&b, 1);
}

static void test_long_printf(void)
{
    cl_buf b;
    cl_buf_init(&b);
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK_EQ(cl_buf_printf(&b, "<%s>", big), CL_OK);
    CHECK_EQ(b.len, 1001);
    CHECK_EQ(b.data[1000], '>');
    cl_buf_fini(&b, 0);
}

static void test_strerror(void)
{
    CHECK(strcmp(cl_strerror(CL_OK), "success") == 0);
    CHECK(strstr(cl_strerror(CL_EINTEGRITY), "integrity") != NULL);
    CHECK(strcmp(cl_errname(CL_ENOTFOUND), "CL_ENOTFOUND") == 0);
    CHECK(strcmp(cl_strerror(-9999), "unknown error") == 0);
}

int main(void)
{
    RUN(test_append_consume);
    RUN(test_long_printf);
    RUN(test_strerror);
    return th_done();
}
