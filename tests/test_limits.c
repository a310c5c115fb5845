/* tests/test_limits.c — sizes that cannot overflow, files that cannot hang,
 * and the memory a model will take known before it is loaded:
 *   - the checked arithmetic of core/checked.h at the edges of size_t;
 *   - numbers that would make moe allocate without bound — a safetensors
 *     file claiming 2^60 bytes, a shape whose product overflows, a config of
 *     2^31 tokens or 2^20 layers, heads × head_dim past int, a tokenizer id
 *     of 2^31 — refused with the field named and before any allocation
 *     (the peak RSS does not move);
 *   - the small-file reader on a FIFO (refused at once, not waited on), a
 *     directory, a device, a symlink loop, and files at and over its limit;
 *   - the memory estimate: exact arithmetic on a known config, saturation
 *     on an absurd one, and on every fixture the weights and KV cache a
 *     loaded model and its context really hold. */
#include <errno.h>
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

#include "core/checked.h"
#include "core/file.h"
#include "core/memory.h"
#include "io/model_config.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "models/preflight.h"
#include "moe/tokenizer.h"
#include "support/model_fixtures.h"
#include "support/testfile.h"

static char g_dir[64];

static int make_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/moe-limits.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    return moe_remove_tree(g_dir);
}

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void expect_error(moe_status got, moe_status want, const char *needle)
{
    if (got != want || !strstr(moe_last_error(), needle)) {
        print_error("status %d, message \"%s\"; wanted %d with \"%s\"\n", got, moe_last_error(), want, needle);
        fail();
    }
}

/* Refusing must not cost memory: the peak RSS grows by less than this. */
enum { SMALL_GROWTH = 32 << 20 };

static void expect_small_growth(size_t before)
{
    size_t after = moe_peak_rss_bytes();
    if (before && after > before + SMALL_GROWTH) {
        print_error("peak RSS grew from %zu to %zu bytes\n", before, after);
        fail();
    }
}

/* ---- checked arithmetic ---- */

static void checked_arithmetic(void **state)
{
    (void)state;
    size_t r;
    assert_true(moe_size_mul(1u << 20, 1u << 20, &r) && r == (size_t)1 << 40);
    assert_false(moe_size_mul((size_t)1 << 33, (size_t)1 << 31, &r));
    assert_true(r == SIZE_MAX);
    assert_true(moe_size_mul(SIZE_MAX, 1, &r) && r == SIZE_MAX);
    assert_true(moe_size_mul(0, SIZE_MAX, &r) && r == 0);
    assert_true(moe_size_add(SIZE_MAX - 1, 1, &r) && r == SIZE_MAX);
    assert_false(moe_size_add(SIZE_MAX, 1, &r));
    const int64_t ok[] = { 1 << 20, 1 << 20, 1 << 20 }, over[] = { 1 << 30, 1 << 30, 1 << 30 }, neg[] = { 4, -1 };
    assert_true(moe_size_product(ok, 3, &r) && r == (size_t)1 << 60);
    assert_false(moe_size_product(over, 3, &r));
    assert_false(moe_size_product(neg, 2, &r));
    assert_true(moe_size_product(NULL, 0, &r) && r == 1);
    int i;
    assert_true(moe_int_mul(46340, 46340, &i) && i == 2147395600);
    assert_false(moe_int_mul(46341, 46341, &i));
    assert_false(moe_int_mul(-65536, 65536, &i));
}

/* ---- safetensors: 2^60 bytes, overflowing shapes ---- */

static void safetensors_absurd_sizes(void **state)
{
    (void)state;
    const char *p = tpath("absurd.safetensors");
    moe_st_file *f;
    size_t before = (moe_reset_peak_rss(), moe_peak_rss_bytes());
    /* the header's length field says 2^60 */
    test_write_file(p, "\0\0\0\0\0\0\0\x10{}      ", 16);
    expect_error(moe_st_open(p, &f), MOE_ERR_FORMAT, "header length 1152921504606846976 is absurd");
    /* a tensor whose data_offsets end 2^60 bytes in */
    char file[256];
    const char *h = "{\"w\":{\"dtype\":\"U8\",\"shape\":[1152921504606846976],\"data_offsets\":[0,1152921504606846976]}}";
    size_t hl = strlen(h);
    memcpy(file, (uint64_t[]){ hl }, 8);
    memcpy(file + 8, h, hl);
    memcpy(file + 8 + hl, "abcd", 4);
    test_write_file(p, file, 8 + hl + 4);
    expect_error(moe_st_open(p, &f), MOE_ERR_FORMAT, "run past the data buffer (4 bytes)");
    /* a shape whose product overflows 64 bits */
    h = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}";
    hl = strlen(h);
    memcpy(file, (uint64_t[]){ hl }, 8);
    memcpy(file + 8, h, hl);
    memcpy(file + 8 + hl, "abcd", 4);
    test_write_file(p, file, 8 + hl + 4);
    expect_error(moe_st_open(p, &f), MOE_ERR_FORMAT, "tensor 'w': 4 bytes in data_offsets, but its shape of F32");
    assert_non_null(strstr(moe_last_error(), "needs more than 18446744073709551615"));
    expect_small_growth(before);
}

/* ---- config.json ---- */

/* A valid Qwen3-MoE config with `field` set to `value` (written last: of a
 * key given twice, json-c keeps the last). */
static const char *config_with(const char *field, const char *value)
{
    static char buf[2048];
    snprintf(buf, sizeof buf,
             "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 4, "
             "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 16, \"intermediate_size\": 96, "
             "\"moe_intermediate_size\": 32, \"num_experts\": 6, \"num_experts_per_tok\": 2, \"vocab_size\": 256, "
             "\"%s\": %s}", field, value);
    return buf;
}

static void config_absurd_sizes(void **state)
{
    (void)state;
    moe_model_config c;
    size_t before = (moe_reset_peak_rss(), moe_peak_rss_bytes());
    assert_int_equal(moe_config_parse(config_with("max_position_embeddings", "128"), "config.json", &c), MOE_OK);
    moe_config_free(&c);
    static const struct {
        const char *field, *value, *needle;
    } cases[] = {
        { "vocab_size", "2147483648", "field 'vocab_size' is 2147483648, outside 1..2147483647" },
        { "num_hidden_layers", "1048576", "field 'num_hidden_layers' is 1048576, more than the 65536 layers" },
        { "num_experts", "1048576", "field 'num_experts' is 1048576, more than the 65536 experts" },
        { "head_dim", "1073741824", "'head_dim' 1073741824 make projections wider than 2147483647 rows" },
        { "num_attention_heads", "2147483646", "'num_attention_heads' 2147483646, 'num_key_value_heads' 2 and" },
        { "hidden_size", "1e300", "field 'hidden_size' must be an integer" },
        { "num_key_value_heads", "-1", "field 'num_key_value_heads' is -1, outside 1..2147483647" },
        /* layers and experts at their limits parse: tensors then decide */
        { "num_hidden_layers", "65536", NULL },
        { "num_experts", "65536", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_status s = moe_config_parse(config_with(cases[i].field, cases[i].value), "config.json", &c);
        if (!cases[i].needle) {
            assert_int_equal(s, MOE_OK);
            moe_config_free(&c);
            continue;
        }
        expect_error(s, MOE_ERR_FORMAT, cases[i].needle);
    }
    expect_small_growth(before);
}

/* ---- tokenizer.json ---- */

static void tokenizer_absurd_ids(void **state)
{
    (void)state;
    moe_tokenizer *t;
    size_t before = (moe_reset_peak_rss(), moe_peak_rss_bytes());
    static const struct {
        const char *json, *needle;
    } cases[] = {
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 2147483648}, \"merges\": []}}",
          "the id of vocab entry 'a' is 2147483648, not a token id (moe takes ids up to 16777215)" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777216}, \"merges\": []}}",
          "the id of vocab entry 'a' is 16777216, not a token id" },
        { "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
          "\"added_tokens\": [{\"id\": 1073741823, \"content\": \"<x>\"}]}",
          "added_tokens[0].id is 1073741823, not a token id" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(moe_tokenizer_load_json(cases[i].json, strlen(cases[i].json), "tokenizer.json", &t),
                     MOE_ERR_FORMAT, cases[i].needle);
    /* the largest id taken */
    const char *ok = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777215}, \"merges\": []}}";
    assert_int_equal(moe_tokenizer_load_json(ok, strlen(ok), "tokenizer.json", &t), MOE_OK);
    assert_int_equal(moe_tokenizer_vocab_size(t), 1 << 24);
    moe_tokenizer_free(t);
    before = (moe_reset_peak_rss(), moe_peak_rss_bytes());
    for (size_t i = 0; i < 2; i++)
        expect_error(moe_tokenizer_load_json(cases[i].json, strlen(cases[i].json), "tokenizer.json", &t),
                     MOE_ERR_FORMAT, "not a token id");
    expect_small_growth(before);
}

/* ---- the small-file reader ---- */

static void file_reader(void **state)
{
    (void)state;
    char *text;
    size_t len;
    /* a FIFO nobody writes: refused at once (reading it would wait forever) */
    const char *fifo = tpath("fifo.json");
    assert_int_equal(mkfifo(fifo, 0600), 0);
    expect_error(moe_file_read(fifo, 1000, 0, &text, &len), MOE_ERR_IO, "fifo.json: not a regular file");
    expect_error(moe_config_load(fifo, &(moe_model_config){ 0 }), MOE_ERR_IO, "not a regular file");
    moe_tokenizer *t;
    expect_error(moe_tokenizer_load(fifo, &t), MOE_ERR_IO, "not a regular file");
    /* a directory, a device */
    expect_error(moe_file_read(g_dir, 1000, 0, &text, &len), MOE_ERR_IO, "is a directory, not a file");
    expect_error(moe_file_read("/dev/zero", 1000, 0, &text, &len), MOE_ERR_IO, "/dev/zero: not a regular file");
    /* a symlink loop, a missing file (optional or not) */
    const char *loop = tpath("loop.json");
    assert_int_equal(symlink("loop.json", loop), 0);
    expect_error(moe_file_read(loop, 1000, 0, &text, &len), MOE_ERR_IO, "cannot open (Too many levels of symbolic links)");
    expect_error(moe_file_read(tpath("none.json"), 1000, 0, &text, &len), MOE_ERR_IO,
                 "none.json: cannot open (No such file or directory)");
    assert_int_equal(moe_file_read(tpath("none.json"), 1000, 1, &text, &len), MOE_OK);
    assert_null(text);
    /* the limit: refused from the size, taken at exactly the limit, an empty file read */
    const char *p = tpath("sized.json");
    test_write_file(p, "0123456789", 10);
    expect_error(moe_file_read(p, 9, 0, &text, &len), MOE_ERR_FORMAT, "sized.json: 10 bytes, larger than the 9-byte limit");
    assert_int_equal(moe_file_read(p, 10, 0, &text, &len), MOE_OK);
    assert_int_equal(len, 10);
    assert_string_equal(text, "0123456789");
    free(text);
    test_write_file(p, "", 0);
    assert_int_equal(moe_file_read(p, 10, 0, &text, &len), MOE_OK);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
    /* a file that reads as empty by size but has content (a /proc file) is read to its end */
    assert_int_equal(moe_file_read("/proc/self/status", 1 << 20, 0, &text, &len), MOE_OK);
    assert_true(len > 0 && strstr(text, "VmRSS"));
    free(text);
    /* unreadable: no permission (not for root, who reads anything), and a read error */
    if (geteuid() != 0) {
        test_write_file(p, "{}", 2);
        assert_int_equal(chmod(p, 0), 0);
        expect_error(moe_file_read(p, 10, 0, &text, &len), MOE_ERR_IO, "cannot open (Permission denied)");
    }
    expect_error(moe_file_read("/proc/self/mem", 10, 0, &text, &len), MOE_ERR_IO,
                 "/proc/self/mem: read error (Input/output error)");
}

/* ---- the memory estimate ---- */

static void estimate_arithmetic(void **state)
{
    (void)state;
    moe_model_config c = { .hidden_size = 64, .num_layers = 4, .num_heads = 4, .num_kv_heads = 2, .head_dim = 16,
                           .expert_hidden = 32, .num_experts = 6, .top_k = 2, .vocab_size = 256, .max_position = 4096 };
    moe_model_memory m;
    model_memory_estimate(&c, 1000000, MOE_DTYPE_F16, 1000, 8, MOE_DEVICE_CPU, 0, &m);
    /* keys and values: 2 × 4 layers × 32 (2 heads of 16) × 2 bytes a position */
    assert_int_equal(m.kv_bytes_per_token, 2 * 4 * 32 * 2);
    assert_int_equal(m.kv_cache, 1000 * 512);
    assert_int_equal(m.total, m.weights + m.kv_cache + m.activations);
    assert_true(m.activations >= 8 * 64 * 4 * 3 + 256 * 4);
    assert_true(m.fits);
    assert_int_equal(m.max_context, INT32_MAX);
    assert_int_equal(m.max_position, 4096);
    /* with 10 MB available: 9 MB usable, the rest over 512 bytes a position */
    model_memory_estimate(&c, 1000000, MOE_DTYPE_F16, 1000, 8, MOE_DEVICE_CPU, 10000000, &m);
    assert_true(m.fits);
    assert_int_equal(m.max_context, (int)((9000000 - m.weights - m.activations) / 512));
    model_memory_estimate(&c, 1000000, MOE_DTYPE_F16, m.max_context + 1, 8, MOE_DEVICE_CPU, 10000000, &m);
    assert_false(m.fits);
    /* weights alone over the budget: no context fits */
    model_memory_estimate(&c, 9500000, MOE_DTYPE_F32, 1, 8, MOE_DEVICE_CPU, 10000000, &m);
    assert_false(m.fits);
    assert_int_equal(m.max_context, 0);
    /* absurd sizes saturate instead of wrapping to something small */
    moe_model_config big = c;
    big.num_layers = 65536, big.num_heads = big.num_kv_heads = 16384, big.head_dim = 32768;
    big.hidden_size = big.expert_hidden = big.vocab_size = INT32_MAX;
    model_memory_estimate(&big, 1000, MOE_DTYPE_F32, INT32_MAX, 1 << 24, MOE_DEVICE_CPU, (size_t)1 << 40, &m);
    assert_true(m.total == SIZE_MAX && m.kv_cache == SIZE_MAX);
    assert_false(m.fits);
    assert_int_equal(m.max_context, 0);
}

/* On each fixture: the estimate's weights are the loaded model's, and its
 * cache is what the context reserves. */
static void estimate_matches_loaded(void **state)
{
    (void)state;
    for (size_t i = 0; i < TEST_NUM_FIXTURES; i++) {
        char dir[512];
        test_fixture_path(dir, sizeof dir, TEST_FIXTURES[i].name, "");
        for (int kv = 0; kv < 2; kv++) {
            moe_model_options o = moe_model_default_options();
            o.kv_dtype = kv ? MOE_DTYPE_F16 : -1;
            moe_model_memory m;
            assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &m), MOE_OK);
            moe_model *model;
            assert_int_equal(moe_model_load(dir, &o, &model), MOE_OK);
            moe_model_info info = moe_model_get_info(model);
            if (m.weights != info.weight_bytes || m.kv_dtype != info.kv_dtype) {
                print_error("%s: estimated weights %zu (cache %s), loaded %zu (cache %s)\n", TEST_FIXTURES[i].name,
                            m.weights, moe_dtype_name(m.kv_dtype), info.weight_bytes, moe_dtype_name(info.kv_dtype));
                fail();
            }
            moe_context *ctx;
            assert_int_equal(moe_context_create(model, 100, 16, &ctx), MOE_OK);
            size_t cache = 2 * (size_t)info.num_layers * 100 * info.num_kv_heads * info.head_dim *
                           moe_dtype_size(info.kv_dtype);
            assert_int_equal(m.kv_cache, cache);
            assert_int_equal(m.max_position, info.max_position);
            moe_context_free(ctx);
            moe_model_free(model);
        }
    }
    moe_model_memory m;
    expect_error(moe_model_estimate_memory(tpath("none"), NULL, 1, 1, &m), MOE_ERR_IO, "none/config.json: cannot open");
    expect_error(moe_model_estimate_memory(g_dir, NULL, 0, 1, &m), MOE_ERR_INVALID_ARG, "must be positive");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checked_arithmetic),
        cmocka_unit_test(safetensors_absurd_sizes),
        cmocka_unit_test(config_absurd_sizes),
        cmocka_unit_test(tokenizer_absurd_ids),
        cmocka_unit_test(file_reader),
        cmocka_unit_test(estimate_arithmetic),
        cmocka_unit_test(estimate_matches_loaded),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
