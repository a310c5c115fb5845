/* tests/test_io_write.c — the writers: a safetensors file written by moe
 * reads back through moe's strict reader with every byte and field intact;
 * .npy files carry the header NumPy expects; a write that cannot complete
 * leaves nothing under the name asked for and an existing file untouched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/npy.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"

static char *temp_dir(void)
{
    char *d = strdup("/tmp/moe-test-io-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void safetensors_round_trip(void **state)
{
    (void)state;
    char *dir = temp_dir(), path[256];
    snprintf(path, sizeof path, "%s/t.safetensors", dir);
    float a[3 * 5];
    uint16_t b[7];
    uint32_t c[2 * 2 * 3];
    for (int i = 0; i < 15; i++) a[i] = (float)i * 0.5f - 3;
    for (int i = 0; i < 7; i++) b[i] = (uint16_t)(0x3f80 + i);
    for (int i = 0; i < 12; i++) c[i] = 0x9e3779b9u * (uint32_t)i;
    const moe_st_out_tensor t[] = {
        { "a.weight", "F32", 2, { 3, 5 }, a, sizeof a },
        { "b", "BF16", 1, { 7 }, b, sizeof b },
        { "c.codes", "U32", 3, { 2, 2, 3 }, c, sizeof c },
        { "empty", "F32", 2, { 0, 4 }, NULL, 0 },
    };
    const char *meta[] = { "format", "mlx" };
    assert_int_equal(moe_st_write(path, t, 4, meta, 1), MOE_OK);
    moe_st_file *f;
    assert_int_equal(moe_st_open(path, &f), MOE_OK);
    assert_int_equal(moe_st_count(f), 4);
    assert_string_equal(moe_st_metadata(f, "format"), "mlx");
    for (int i = 0; i < 4; i++) {
        const moe_st_tensor *r = moe_st_find(f, t[i].name);
        assert_non_null(r);
        assert_string_equal(r->dtype_name, t[i].dtype);
        assert_int_equal(r->ndim, t[i].ndim);
        for (int d = 0; d < r->ndim; d++) assert_int_equal(r->shape[d], t[i].shape[d]);
        assert_int_equal(r->nbytes, t[i].nbytes);
        if (t[i].nbytes) assert_memory_equal(r->data, t[i].data, t[i].nbytes);
        assert_int_equal((uintptr_t)r->data % 4, 0); /* header padded to 8 */
    }
    moe_st_close(f);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    mode_t mask = umask(0);
    umask(mask);
    assert_int_equal(st.st_mode & 0777, 0666 & ~mask); /* the usual mode, not mkstemp's 0600 */
    unlink(path);
    rmdir(dir);
    free(dir);
}

static void npy_header(void **state)
{
    (void)state;
    char *dir = temp_dir(), path[256];
    snprintf(path, sizeof path, "%s/x.npy", dir);
    float v[2 * 3] = { 1, 2, 3, 4, 5, -6.5f };
    int64_t shape[2] = { 2, 3 };
    assert_int_equal(moe_npy_write_f32(path, v, 2, shape), MOE_OK);
    FILE *f = fopen(path, "rb");
    unsigned char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    size_t hlen = buf[8] | (size_t)buf[9] << 8;
    assert_int_equal((10 + hlen) % 64, 0);
    assert_int_equal(n, 10 + hlen + sizeof v);
    assert_int_equal(buf[10 + hlen - 1], '\n');
    char *h = strndup((const char *)buf + 10, hlen);
    assert_non_null(strstr(h, "'descr': '<f4'"));
    assert_non_null(strstr(h, "'fortran_order': False"));
    assert_non_null(strstr(h, "'shape': (2, 3)"));
    assert_memory_equal(buf + 10 + hlen, v, sizeof v);
    free(h);
    /* one dimension: a tuple with a trailing comma */
    int64_t one[1] = { 6 };
    assert_int_equal(moe_npy_write_f32(path, v, 1, one), MOE_OK);
    f = fopen(path, "rb");
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_non_null(strstr((const char *)buf + 10, "'shape': (6,)"));
    unlink(path);
    rmdir(dir);
    free(dir);
}

static void failed_write_leaves_nothing(void **state)
{
    (void)state;
    float v[1] = { 1 };
    int64_t shape[1] = { 1 };
    assert_int_equal(moe_npy_write_f32("/nonexistent-dir/x.npy", v, 1, shape), MOE_ERR_IO);
    assert_non_null(strstr(moe_last_error(), "/nonexistent-dir/x.npy"));
    /* an existing file is replaced only by a complete one */
    char *dir = temp_dir(), path[256];
    snprintf(path, sizeof path, "%s/keep.npy", dir);
    FILE *f = fopen(path, "w");
    fputs("user data", f);
    fclose(f);
    assert_int_equal(chmod(dir, 0500), 0); /* no new files in the directory */
    if (access(dir, W_OK) != 0) {            /* (root ignores the mode) */
        assert_int_equal(moe_npy_write_f32(path, v, 1, shape), MOE_ERR_IO);
        f = fopen(path, "r");
        char got[32] = { 0 };
        assert_non_null(fgets(got, sizeof got, f));
        fclose(f);
        assert_string_equal(got, "user data");
    }
    chmod(dir, 0700);
    unlink(path);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(safetensors_round_trip),
        cmocka_unit_test(npy_header),
        cmocka_unit_test(failed_write_leaves_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
