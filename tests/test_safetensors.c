/* tests/test_safetensors.c — the safetensors reader on files this test writes
 * itself into a fresh directory under /tmp: every dtype's bytes round trip,
 * shapes, lookups, metadata, thousands of tensors, sharded and single-file
 * checkpoints, every validation error (its message naming the file and the
 * tensor), and malformed files made by truncating and mutating a valid one,
 * which must open sanely or fail with a message — never crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "support/testutil.h"

/* ---- a scratch directory, removed at the end ---- */

static char g_dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/moe_st_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int remove_dir(void **state)
{
    (void)state;
    return nftw(g_dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct {
    char s[512];
} path_buf;

/* g_dir/name */
static path_buf tpath(const char *name)
{
    path_buf p;
    snprintf(p.s, sizeof p.s, "%s/%s", g_dir, name);
    return p;
}

static path_buf tsubdir(const char *name)
{
    path_buf p = tpath(name);
    assert_int_equal(mkdir(p.s, 0755), 0);
    return p;
}

static void write_bytes(const char *path, const void *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* ---- a growable string ---- */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
}

/* ---- writing safetensors files ---- */

/* 8-byte little-endian header length, the header (padded with spaces to a
 * multiple of 8 when `pad`, as the reference writer does), the data. */
static unsigned char *make_raw(const char *header, size_t hlen, int pad, const void *data, size_t n, size_t *len)
{
    size_t padded = pad ? (hlen + 7) / 8 * 8 : hlen;
    *len = 8 + padded + n;
    unsigned char *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, header, hlen);
    memset(b + 8 + hlen, ' ', padded - hlen);
    if (n) memcpy(b + 8 + padded, data, n);
    return b;
}

static void write_raw(const char *path, const char *header, const void *data, size_t n)
{
    size_t len;
    unsigned char *b = make_raw(header, strlen(header), 1, data, n, &len);
    write_bytes(path, b, len);
    free(b);
}

typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} tspec;

/* A whole file: the tensors laid out one after another in array order; the
 * header lists them in reverse when `reverse` (so header order != file order). */
static unsigned char *make_file(const tspec *t, int n, const char *meta_json, int reverse, int pad, size_t *len)
{
    sbuf h = { 0 };
    size_t *off = calloc((size_t)n + 1, sizeof *off);
    for (int i = 0; i < n; i++) off[i + 1] = off[i] + t[i].nbytes;
    sb_printf(&h, "{");
    if (meta_json) sb_printf(&h, "\"__metadata__\":%s", meta_json);
    for (int j = 0; j < n; j++) {
        int i = reverse ? n - 1 - j : j;
        sb_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", (j || meta_json) ? "," : "", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++) sb_printf(&h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%zu,%zu]}", off[i], off[i + 1]);
    }
    sb_printf(&h, "}");
    unsigned char *data = malloc(off[n] ? off[n] : 1);
    for (int i = 0; i < n; i++)
        if (t[i].nbytes) memcpy(data + off[i], t[i].data, t[i].nbytes);
    unsigned char *b = make_raw(h.s, h.len, pad, data, off[n], len);
    free(data);
    free(off);
    free(h.s);
    return b;
}

static void write_file(const char *path, const tspec *t, int n, const char *meta_json)
{
    size_t len;
    unsigned char *b = make_file(t, n, meta_json, 0, 1, &len);
    write_bytes(path, b, len);
    free(b);
}

static void expect_error(moe_status got, moe_status want, const char *needle)
{
    if (got != want) print_error("status %d, message \"%s\"\n", got, moe_last_error());
    assert_int_equal(got, want);
    if (!strstr(moe_last_error(), needle)) {
        print_error("message \"%s\" does not mention \"%s\"\n", moe_last_error(), needle);
        fail();
    }
}

static void check_tensor(const moe_st_tensor *t, const tspec *want, moe_dtype dtype)
{
    assert_non_null(t);
    assert_string_equal(t->name, want->name);
    assert_string_equal(t->dtype_name, want->dtype);
    assert_int_equal(t->dtype, dtype);
    assert_int_equal(t->ndim, want->ndim);
    for (int d = 0; d < want->ndim; d++) assert_int_equal(t->shape[d], want->shape[d]);
    assert_int_equal(t->nbytes, want->nbytes);
    if (want->nbytes) assert_memory_equal(t->data, want->data, want->nbytes);
}

/* ---- one file ---- */

static void round_trip(void **state)
{
    (void)state;
    float f32[6] = { 1.5f, -2.25f, 3e-38f, -0.0f, 1e30f, 7.0f };
    uint16_t f16[4] = { 0x3c00, 0xc000, 0x7c00, 0x0001 };
    uint16_t bf16[3] = { 0x3f80, 0xff80, 0x7fc0 };
    uint32_t u32[8] = { 0, 1, 0xffffffffu, 0x12345678u, 0x80000000u, 7, 8, 9 };
    int64_t i64[2] = { -1, INT64_MAX };
    float scalar = 42.0f;
    unsigned char f4[3] = { 0xab, 0xcd, 0xef };
    const tspec t[] = {
        { "model.embed", "F32", 2, { 2, 3 }, f32, sizeof f32 },
        { "h.f16", "F16", 1, { 4 }, f16, sizeof f16 },
        { "h.bf16", "BF16", 3, { 1, 3, 1 }, bf16, sizeof bf16 },
        { "q.weight", "U32", 2, { 2, 4 }, u32, sizeof u32 },
        { "empty", "F16", 2, { 0, 3 }, NULL, 0 },
        { "position_ids", "I64", 2, { 1, 2 }, i64, sizeof i64 },
        { "scalar", "F32", 0, { 0 }, &scalar, sizeof scalar },
        { "packed", "F4", 1, { 6 }, f4, sizeof f4 }, /* sizes of unknown dtypes are not checked */
    };
    const moe_dtype dt[] = { MOE_DTYPE_F32, MOE_DTYPE_F16,   MOE_DTYPE_BF16,  MOE_DTYPE_U32,
                             MOE_DTYPE_F16, MOE_DTYPE_COUNT, MOE_DTYPE_F32,   MOE_DTYPE_COUNT };
    const int n = (int)(sizeof t / sizeof t[0]);
    path_buf p = tpath("round_trip.safetensors");
    size_t len;
    unsigned char *bytes = make_file(t, n, "{\"format\":\"pt\",\"note\":\"caf\\u00e9\"}", 1, 1, &len);
    write_bytes(p.s, bytes, len);
    struct stat before, after;
    assert_int_equal(stat(p.s, &before), 0);
    assert_int_equal(chmod(p.s, 0444), 0); /* reading needs no write permission */

    moe_st_file *f = NULL;
    assert_int_equal(moe_st_open(p.s, &f), MOE_OK);
    assert_string_equal(moe_st_path(f), p.s);
    assert_int_equal(moe_st_count(f), n);
    for (int i = 0; i < n; i++) {
        /* file order, whatever the header's order */
        check_tensor(moe_st_at(f, i), &t[i], dt[i]);
        assert_ptr_equal(moe_st_find(f, t[i].name), moe_st_at(f, i));
    }
    assert_null(moe_st_at(f, n));
    assert_null(moe_st_at(f, -1));
    assert_null(moe_st_find(f, "absent"));
    assert_null(moe_st_find(f, "model.embe"));
    assert_null(moe_st_find(f, "__metadata__"));
    assert_null(moe_st_find(f, NULL));
    assert_int_equal(((const uintptr_t)moe_st_find(f, "model.embed")->data) % 8, 0); /* padded header */
    assert_string_equal(moe_st_metadata(f, "format"), "pt");
    assert_string_equal(moe_st_metadata(f, "note"), "caf\xc3\xa9");
    assert_null(moe_st_metadata(f, "absent"));
    assert_null(moe_st_metadata(f, NULL));
    moe_st_close(f);
    moe_st_close(NULL);

    /* the file is untouched */
    assert_int_equal(stat(p.s, &after), 0);
    assert_int_equal(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
    assert_int_equal(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
    assert_int_equal(after.st_size, before.st_size);
    size_t len2;
    unsigned char *again = read_bytes(p.s, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(again, bytes, len);
    free(again);
    free(bytes);

    /* an unpadded header, no metadata: still fine (data merely unaligned) */
    path_buf q = tpath("unpadded.safetensors");
    bytes = make_file(t, n, NULL, 0, 0, &len);
    write_bytes(q.s, bytes, len);
    free(bytes);
    assert_int_equal(moe_st_open(q.s, &f), MOE_OK);
    assert_int_equal(moe_st_count(f), n);
    for (int i = 0; i < n; i++) check_tensor(moe_st_find(f, t[i].name), &t[i], dt[i]);
    assert_null(moe_st_metadata(f, "format"));
    moe_st_close(f);

    /* no tensors at all, other keys in an entry, whitespace around the JSON */
    path_buf e = tpath("empty.safetensors");
    write_raw(e.s, "\n{ \"__metadata__\" : {} }\t", NULL, 0);
    assert_int_equal(moe_st_open(e.s, &f), MOE_OK);
    assert_int_equal(moe_st_count(f), 0);
    assert_null(moe_st_at(f, 0));
    assert_null(moe_st_find(f, "x"));
    moe_st_close(f);
    uint32_t one = 5;
    write_raw(e.s, "{\"x\":{\"dtype\":\"U32\",\"shape\":[],\"data_offsets\":[0,4],\"extra\":[1,{}]}}", &one, 4);
    assert_int_equal(moe_st_open(e.s, &f), MOE_OK);
    assert_int_equal(*(const uint32_t *)moe_st_find(f, "x")->data, 5);
    moe_st_close(f);
}

static void many_tensors(void **state)
{
    (void)state;
    enum { N = 3000 };
    tspec *t = calloc(N, sizeof *t);
    char (*names)[64] = calloc(N, sizeof *names);
    int32_t(*vals)[2] = calloc(N, sizeof *vals);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.experts.%d.down_proj.weight", i / 64, i % 64);
        vals[i][0] = i, vals[i][1] = -i;
        t[i] = (tspec){ names[i], "U32", 1, { 2 }, vals[i], 8 };
    }
    path_buf p = tpath("many.safetensors");
    size_t len;
    unsigned char *b = make_file(t, N, NULL, 1, 1, &len);
    write_bytes(p.s, b, len);
    free(b);
    moe_st_file *f;
    assert_int_equal(moe_st_open(p.s, &f), MOE_OK);
    assert_int_equal(moe_st_count(f), N);
    for (int i = N - 1; i >= 0; i--) {
        const moe_st_tensor *x = moe_st_find(f, names[i]);
        assert_non_null(x);
        assert_ptr_equal(x, moe_st_at(f, i));
        assert_memory_equal(x->data, vals[i], 8);
    }
    assert_null(moe_st_find(f, "model.layers.0.mlp.experts.64.down_proj.weight"));
    moe_st_close(f);
    free(t), free(names), free(vals);
}

typedef struct {
    const char *header;
    size_t data_len;
    moe_status status;
    const char *needle, *needle2;
} bad_case;

static void validation_errors(void **state)
{
    (void)state;
    static const unsigned char zeros[64];
    static const bad_case cases[] = {
        { "{\"a\": ", 0, MOE_ERR_FORMAT, "not valid JSON", "end of data" },
        { "", 0, MOE_ERR_FORMAT, "not valid JSON", "header" },
        { "{} x", 0, MOE_ERR_FORMAT, "not valid JSON", "follows the value" },
        { "{\"a\":{},}", 0, MOE_ERR_FORMAT, "not valid JSON", "header" }, /* strict: no trailing comma */
        { "{\"a\":01}", 0, MOE_ERR_FORMAT, "not valid JSON", "header" }, /* strict: no leading zero */
        { "{\"\xff\":1}", 0, MOE_ERR_FORMAT, "not valid JSON", "header" }, /* not UTF-8 */
        { "[1, 2]", 0, MOE_ERR_FORMAT, "a JSON array, not an object", "header" },
        { "{\"w\": 5}", 0, MOE_ERR_FORMAT, "tensor 'w'", "not an object" },
        { "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w' has no \"dtype\"", "" },
        { "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w' has no \"shape\"", "" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, MOE_ERR_FORMAT, "tensor 'w' has no \"data_offsets\"", "" },
        { "{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'", "not a string" },
        { "{\"w\":{\"dtype\":\"\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'", "empty" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "\"shape\" is a JSON string, not an array" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "shape entry 1 is -1, negative" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "shape entry 0 (2.5) is not an integer" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "shape entry 0" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,true],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "shape entry 1" },
        { "{\"w\":{\"dtype\":\"U8\",\"shape\":[18446744073709551615],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT,
          "tensor 'w'", "not an integer in [0, 2^63)" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT,
          "tensor 'w' has 9 dimensions, more than 8", "" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "\"data_offsets\" is not an array of two integers" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "data_offsets" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{\"a\":0}}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "data_offsets" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "not two non-negative integers" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "not two non-negative integers" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "not two non-negative integers" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, MOE_ERR_FORMAT, "tensor 'w'",
          "[8, 4] end before they begin" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "run past the data buffer (4 bytes)" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, MOE_ERR_FORMAT, "tensor 'w'",
          "8 bytes in data_offsets, but its shape of F32 [ 3 ] needs 12" },
        { "{\"w\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'", "needs 2" },
        { "{\"w\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,8]}}", 8, MOE_ERR_FORMAT, "tensor 'w'", "needs 0" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8, MOE_ERR_FORMAT,
          "tensor 'w'", "needs more than" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8, MOE_ERR_FORMAT,
          "tensor 'w'", "needs more than" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
          12, MOE_ERR_FORMAT, "tensors 'a' [0, 8) and 'b' [4, 12) overlap", "" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
          "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
          8, MOE_ERR_FORMAT, "tensors 'a' [0, 8) and 'z' [4, 4) overlap", "" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
          12, MOE_ERR_FORMAT, "bytes [4, 8) of the data buffer, before tensor 'b', belong to no tensor", "" },
        { "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, MOE_ERR_FORMAT,
          "bytes [0, 4) of the data buffer, before tensor 'b'", "" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 12, MOE_ERR_FORMAT,
          "8 bytes follow the end of the last tensor 'a'", "" },
        { "{}", 4, MOE_ERR_FORMAT, "4 bytes but no tensor", "" },
        /* json-c keeps the last of a repeated name; the first one's bytes are then a hole */
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
          8, MOE_ERR_FORMAT, "before tensor 'a', belong to no tensor", "given twice" },
        { "{\"__metadata__\":[\"x\"]}", 0, MOE_ERR_FORMAT, "\"__metadata__\" is a JSON array, not an object", "" },
        { "{\"__metadata__\":{\"ok\":\"1\",\"k\":1}}", 0, MOE_ERR_FORMAT, "metadata 'k' is a JSON int", "" },
        { "{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, MOE_ERR_FORMAT, "metadata 'k'", "NUL" },
        { "{\"w\":{\"dtype\":\"F32\\u0000\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, MOE_ERR_FORMAT, "tensor 'w'",
          "NUL" },
        { "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, MOE_ERR_FORMAT, "not valid JSON", "" },
    };
    path_buf p = tpath("bad.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bad_case *c = &cases[i];
        write_raw(p.s, c->header, zeros, c->data_len);
        moe_st_file *f = (moe_st_file *)&f; /* must be reset to NULL */
        moe_status s = moe_st_open(p.s, &f);
        if (s != c->status || !strstr(moe_last_error(), c->needle) || !strstr(moe_last_error(), c->needle2) ||
            !strstr(moe_last_error(), p.s)) {
            print_error("case %zu (%s): status %d, message \"%s\"; wanted \"%s\" and \"%s\"\n", i, c->header, s,
                        moe_last_error(), c->needle, c->needle2);
            fail();
        }
        assert_null(f);
    }

    /* the header length itself */
    moe_st_file *f;
    write_bytes(p.s, "\x10\0\0\0\0", 5);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "5 bytes, too short for the 8-byte header length");
    write_bytes(p.s, "", 0);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "0 bytes, too short");
    write_bytes(p.s, "\xe8\x03\0\0\0\0\0\0{}      ", 16);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "header length 1000 runs past the end of the file (8 bytes follow it)");
    write_bytes(p.s, "\0\xc2\xeb\x0b\0\0\0\0{}      ", 16); /* 200,000,000 */
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "header length 200000000 is absurd");
    write_bytes(p.s, "\xff\xff\xff\xff\xff\xff\xff\xff{}      ", 16);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "is absurd");
    /* a NUL inside the header: the bytes after it are not whitespace */
    write_bytes(p.s, "\x08\0\0\0\0\0\0\0{}\0     ", 16);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "not valid JSON");
    write_bytes(p.s, "\x08\0\0\0\0\0\0\0{\"a\0\":1}", 16);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "not valid JSON");
    /* NUL padding is not whitespace either */
    write_bytes(p.s, "\x08\0\0\0\0\0\0\0{}\0\0\0\0\0\0", 16);
    expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "byte 2 (0x00) follows the value");
}

static void io_errors(void **state)
{
    (void)state;
    moe_st_file *f = (moe_st_file *)&f;
    path_buf p = tpath("does-not-exist.safetensors");
    expect_error(moe_st_open(p.s, &f), MOE_ERR_IO, "No such file or directory");
    assert_non_null(strstr(moe_last_error(), p.s));
    assert_null(f);
    expect_error(moe_st_open(g_dir, &f), MOE_ERR_IO, "not a regular file");
    assert_non_null(strstr(moe_last_error(), g_dir));
    path_buf fifo = tpath("fifo.safetensors"); /* opening it must not block */
    assert_int_equal(mkfifo(fifo.s, 0644), 0);
    expect_error(moe_st_open(fifo.s, &f), MOE_ERR_IO, "not a regular file");
    expect_error(moe_st_open(NULL, &f), MOE_ERR_INVALID_ARG, "path");
    expect_error(moe_st_open(p.s, NULL), MOE_ERR_INVALID_ARG, "output");
    assert_int_equal(moe_st_count(NULL), 0);
    assert_null(moe_st_at(NULL, 0));
    assert_null(moe_st_find(NULL, "x"));
    assert_null(moe_st_metadata(NULL, "x"));
    if (geteuid() != 0) { /* root reads anything */
        path_buf q = tpath("unreadable.safetensors");
        write_raw(q.s, "{}", NULL, 0);
        assert_int_equal(chmod(q.s, 0), 0);
        expect_error(moe_st_open(q.s, &f), MOE_ERR_IO, "Permission denied");
    }
}

/* ---- checkpoint directories ---- */

static void write_index(const char *dir, const char *json)
{
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    write_bytes(p, json, strlen(json));
}

static void write_in(const char *dir, const char *name, const tspec *t, int n)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_file(p, t, n, "{\"format\":\"pt\"}");
}

static const float g_a[4] = { 1, 2, 3, 4 }, g_b[2] = { 5, 6 }, g_c[3] = { 7, 8, 9 }, g_d[1] = { 10 };
static const uint16_t g_e[2] = { 0x3f80, 0x4000 };
static const tspec g_shard1[] = { { "model.embed_tokens.weight", "F32", 2, { 2, 2 }, g_a, 16 },
                                  { "model.layers.0.attn.q.weight", "F32", 1, { 2 }, g_b, 8 } };
static const tspec g_shard2[] = { { "model.layers.0.mlp.gate.weight", "F32", 1, { 3 }, g_c, 12 },
                                  { "unlisted", "F32", 1, { 1 }, g_d, 4 },
                                  { "model.layers.0.input_layernorm.weight", "BF16", 1, { 2 }, g_e, 4 } };
static const tspec g_shard3[] = { { "lm_head.weight", "F32", 0, { 0 }, g_d, 4 } };
#define WEIGHT_MAP_OK                                                        \
    "\"lm_head.weight\": \"model-00003-of-00003.safetensors\","              \
    "\"model.layers.0.input_layernorm.weight\": \"model-00002-of-00003.safetensors\"," \
    "\"model.embed_tokens.weight\": \"model-00001-of-00003.safetensors\","   \
    "\"model.layers.0.mlp.gate.weight\": \"model-00002-of-00003.safetensors\"," \
    "\"model.layers.0.attn.q.weight\": \"model-00001-of-00003.safetensors\""

static void make_shards(const char *dir)
{
    write_in(dir, "model-00001-of-00003.safetensors", g_shard1, 2);
    write_in(dir, "model-00002-of-00003.safetensors", g_shard2, 3);
    write_in(dir, "model-00003-of-00003.safetensors", g_shard3, 1);
}

static void set_sharded(void **state)
{
    (void)state;
    path_buf d = tsubdir("sharded");
    make_shards(d.s);
    write_index(d.s, "{\"metadata\": {\"total_size\": 44}, \"weight_map\": {" WEIGHT_MAP_OK "}}");
    moe_st_set *s = NULL;
    assert_int_equal(moe_st_set_open(d.s, &s), MOE_OK);
    /* shard by shard, each in file order; "unlisted" is not in the map */
    const tspec *order[] = { &g_shard1[0], &g_shard1[1], &g_shard2[0], &g_shard2[2], &g_shard3[0] };
    const moe_dtype dt[] = { MOE_DTYPE_F32, MOE_DTYPE_F32, MOE_DTYPE_F32, MOE_DTYPE_BF16, MOE_DTYPE_F32 };
    assert_int_equal(moe_st_set_count(s), 5);
    for (int i = 0; i < 5; i++) {
        check_tensor(moe_st_set_at(s, i), order[i], dt[i]);
        assert_ptr_equal(moe_st_set_find(s, order[i]->name), moe_st_set_at(s, i));
    }
    assert_null(moe_st_set_at(s, 5));
    assert_null(moe_st_set_at(s, -1));
    assert_null(moe_st_set_find(s, "unlisted"));
    assert_null(moe_st_set_find(s, "absent"));
    moe_st_set_close(s);
    moe_st_set_close(NULL);

    /* a trailing slash on the directory; an empty weight map */
    char slashed[600];
    snprintf(slashed, sizeof slashed, "%s/", d.s);
    write_index(d.s, "{\"weight_map\": {}}");
    assert_int_equal(moe_st_set_open(slashed, &s), MOE_OK);
    assert_int_equal(moe_st_set_count(s), 0);
    moe_st_set_close(s);
}

static void set_single(void **state)
{
    (void)state;
    path_buf d = tsubdir("single");
    write_in(d.s, "model.safetensors", g_shard2, 3);
    moe_st_set *s;
    assert_int_equal(moe_st_set_open(d.s, &s), MOE_OK);
    assert_int_equal(moe_st_set_count(s), 3);
    for (int i = 0; i < 3; i++) {
        check_tensor(moe_st_set_find(s, g_shard2[i].name), &g_shard2[i], i == 2 ? MOE_DTYPE_BF16 : MOE_DTYPE_F32);
        assert_ptr_equal(moe_st_set_find(s, g_shard2[i].name), moe_st_set_at(s, i));
    }
    assert_null(moe_st_set_find(s, "lm_head.weight"));
    moe_st_set_close(s);
    assert_int_equal(moe_st_set_count(NULL), 0);
    assert_null(moe_st_set_at(NULL, 0));
    assert_null(moe_st_set_find(NULL, "x"));
}

static void set_errors(void **state)
{
    (void)state;
    moe_st_set *s = (moe_st_set *)&s;
    char want[1400];

    /* neither file */
    path_buf d = tsubdir("nothing");
    snprintf(want, sizeof want, "neither '%s/model.safetensors.index.json' nor '%s/model.safetensors' exists", d.s, d.s);
    expect_error(moe_st_set_open(d.s, &s), MOE_ERR_IO, want);
    assert_null(s);
    path_buf gone = tpath("no-such-dir");
    expect_error(moe_st_set_open(gone.s, &s), MOE_ERR_IO, "neither");
    expect_error(moe_st_set_open(NULL, &s), MOE_ERR_INVALID_ARG, "directory");
    expect_error(moe_st_set_open(d.s, NULL), MOE_ERR_INVALID_ARG, "output");

    /* a bad single file: the message is the file's */
    write_raw(tpath("nothing/model.safetensors").s, "{\"w\": 1}", NULL, 0);
    expect_error(moe_st_set_open(d.s, &s), MOE_ERR_FORMAT, "tensor 'w'");
    assert_non_null(strstr(moe_last_error(), "nothing/model.safetensors"));

    path_buf e = tsubdir("broken");
    make_shards(e.s);
    /* a mapped tensor its shard does not hold */
    write_index(e.s, "{\"weight_map\": {" WEIGHT_MAP_OK ", \"model.ghost\": \"model-00002-of-00003.safetensors\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT,
                 "tensor 'model.ghost' is mapped to shard 'model-00002-of-00003.safetensors', which does not hold it");
    assert_null(s);
    /* a tensor mapped to the wrong shard */
    write_index(e.s, "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00003.safetensors\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "tensor 'lm_head.weight' is mapped to shard 'model-00001");
    /* a shard that is not there */
    write_index(e.s, "{\"weight_map\": {" WEIGHT_MAP_OK ", \"x\": \"model-00004-of-00003.safetensors\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_IO, "model-00004-of-00003.safetensors");
    assert_non_null(strstr(moe_last_error(), "No such file or directory"));
    /* a broken shard: named, with its own reason */
    write_raw(tpath("broken/model-00009.safetensors").s, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", NULL, 0);
    write_index(e.s, "{\"weight_map\": {\"w\": \"model-00009.safetensors\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "tensor 'w' has no \"data_offsets\"");
    assert_non_null(strstr(moe_last_error(), "shard 'model-00009.safetensors'"));
    /* shard names that leave the directory, or are not names */
    write_index(e.s, "{\"weight_map\": {\"lm_head.weight\": \"../single/model.safetensors\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "tensor 'lm_head.weight' maps to \"..\\/single");
    write_index(e.s, "{\"weight_map\": {\"lm_head.weight\": \"..\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "not a file name");
    write_index(e.s, "{\"weight_map\": {\"lm_head.weight\": \"\"}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "not a file name");
    write_index(e.s, "{\"weight_map\": {\"lm_head.weight\": 3}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "tensor 'lm_head.weight' maps to 3");
    /* the index itself */
    write_index(e.s, "{\"weight_map\": {");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "model.safetensors.index.json' is not valid JSON");
    write_index(e.s, "{\"metadata\": {}}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "has no \"weight_map\"");
    write_index(e.s, "{\"weight_map\": [1]}");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "\"weight_map\" is a JSON array, not an object");
    write_index(e.s, "\"weight_map\"");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "a JSON string, not an object");
    write_index(e.s, "");
    expect_error(moe_st_set_open(e.s, &s), MOE_ERR_FORMAT, "not valid JSON");
    /* an index that is a directory */
    path_buf f = tsubdir("dirindex");
    assert_int_equal(mkdir(tpath("dirindex/model.safetensors.index.json").s, 0755), 0);
    expect_error(moe_st_set_open(f.s, &s), MOE_ERR_IO, "not a regular file");
    assert_null(s);
}

/* ---- malformed files: no crash, and a message on failure ---- */

static void check_sane(const moe_st_file *f, size_t file_len)
{
    size_t total = 0;
    unsigned sum = 0;
    for (int i = 0; i < moe_st_count(f); i++) {
        const moe_st_tensor *t = moe_st_at(f, i);
        assert_non_null(t);
        assert_non_null(t->name);
        assert_ptr_equal(moe_st_find(f, t->name), t);
        assert_true(t->dtype_name && *t->dtype_name);
        assert_true((unsigned)t->dtype <= (unsigned)MOE_DTYPE_COUNT);
        assert_true(t->ndim >= 0 && t->ndim <= MOE_ST_MAX_DIMS);
        uint64_t elems = 1;
        for (int d = 0; d < t->ndim; d++) {
            assert_true(t->shape[d] >= 0);
            elems *= (uint64_t)t->shape[d];
        }
        if (t->dtype != MOE_DTYPE_COUNT) assert_int_equal(t->nbytes, elems * moe_dtype_size(t->dtype));
        total += t->nbytes;
        assert_true(total <= file_len);
        for (size_t b = 0; b < t->nbytes; b++) sum += ((const unsigned char *)t->data)[b]; /* all mapped */
    }
    (void)sum;
}

static unsigned char *fuzz_base(size_t *len)
{
    static const float a[6] = { 1, 2, 3, 4, 5, 6 };
    static const uint16_t b[4] = { 1, 2, 3, 4 };
    static const uint32_t c[1] = { 7 };
    static const int64_t d[2] = { 8, 9 };
    static const tspec t[] = {
        { "w.f32", "F32", 2, { 2, 3 }, a, 24 }, { "w.bf16", "BF16", 1, { 4 }, b, 8 }, { "q", "U32", 0, { 0 }, c, 4 },
        { "ids", "I64", 2, { 1, 2 }, d, 16 },   { "z", "F16", 2, { 3, 0 }, NULL, 0 },
    };
    return make_file(t, 5, "{\"format\":\"pt\"}", 1, 1, len);
}

static void fuzz_truncate(void **state)
{
    (void)state;
    size_t len;
    unsigned char *base = fuzz_base(&len);
    path_buf p = tpath("fuzz.safetensors");
    moe_st_file *f;
    write_bytes(p.s, base, len);
    assert_int_equal(moe_st_open(p.s, &f), MOE_OK);
    check_sane(f, len);
    moe_st_close(f);
    /* every shorter file fails (the tensors no longer tile the data), and says why */
    for (size_t n = 0; n < len; n++) {
        write_bytes(p.s, base, n);
        moe_status s = moe_st_open(p.s, &f);
        if (s == MOE_OK || !strstr(moe_last_error(), p.s)) {
            print_error("truncated to %zu of %zu bytes: status %d, \"%s\"\n", n, len, s, moe_last_error());
            fail();
        }
        assert_null(f);
    }
    /* so does a longer one */
    unsigned char *longer = malloc(len + 9);
    memcpy(longer, base, len);
    memset(longer + len, 0, 9);
    for (size_t n = len + 1; n <= len + 9; n++) {
        write_bytes(p.s, longer, n);
        expect_error(moe_st_open(p.s, &f), MOE_ERR_FORMAT, "follow the end of the last tensor");
    }
    free(longer);
    free(base);
}

static void fuzz_mutate(void **state)
{
    (void)state;
    size_t len;
    unsigned char *base = fuzz_base(&len);
    unsigned char *buf = malloc(len);
    size_t hend = 8 + (size_t)base[0] + ((size_t)base[1] << 8); /* the header is short */
    static const char interesting[] = "{}[]\",:-0123456789.eE \\/tfnu\x01\x80\xff";
    uint64_t rng = 0x5eed5afe;
    path_buf p = tpath("fuzz.safetensors");
    int ok = 0, failed = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, base, len);
        int edits = 1 + (int)(test_rand_u64(&rng) % 3);
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)(test_rand_u64(&rng) % hend);
            uint64_t how = test_rand_u64(&rng);
            switch (how % 3) {
            case 0: buf[at] ^= (unsigned char)(1u << ((how >> 8) % 8)); break;           /* a bit flip */
            case 1: buf[at] = (unsigned char)(how >> 8); break;                          /* any byte */
            default: buf[at] = (unsigned char)interesting[(how >> 8) % (sizeof interesting - 1)]; /* JSON syntax */
            }
        }
        write_bytes(p.s, buf, len);
        moe_st_file *f = NULL;
        moe_status s = moe_st_open(p.s, &f);
        if (s == MOE_OK) {
            check_sane(f, len);
            moe_st_close(f);
            ok++;
        } else {
            assert_null(f);
            if (!strstr(moe_last_error(), p.s)) {
                print_error("iteration %d: status %d, message \"%s\" does not name the file\n", iter, s, moe_last_error());
                fail();
            }
            failed++;
        }
    }
    print_message("mutated headers: %d opened, %d rejected\n", ok, failed);
    assert_true(ok > 0 && failed > 0);
    free(buf);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),    cmocka_unit_test(many_tensors),  cmocka_unit_test(validation_errors),
        cmocka_unit_test(io_errors),     cmocka_unit_test(set_sharded),   cmocka_unit_test(set_single),
        cmocka_unit_test(set_errors),    cmocka_unit_test(fuzz_truncate), cmocka_unit_test(fuzz_mutate),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
