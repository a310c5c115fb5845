/* tests/test_kv_q8_model.c — models end to end with the 8-bit KV cache
 * (kv_dtype MOE_DTYPE_Q8, `--kv-cache q8`) on the fixtures of
 * test_model_reference.c:
 *  - logits at every position within the Q8 bounds of transformers'
 *    (relative to each row's largest logit; exact activations): the cache's rounding,
 *    up to scale/2 = max|x|/254 of each group of 32, is the only change
 *    from the f32 cache's path, which meets 1e-4 / 1e-3;
 *  - greedy continuations equal to an f16 cache's, step by step, up to a
 *    step where the f16 logits' two best are within the Q8 error bound of
 *    each other (a near tie either cache may break either way; these tiny
 *    random models have some), after which the continuations may part;
 *  - a chunked prefill (tile kernels on dequantized blocks) within float
 *    rounding of the single pass (rows kernels);
 *  - int8x2 activations with a Q8 cache (the fast combination): within
 *    1e-2, the same greedy tokens;
 *  - the memory estimate counts a Q8 row's bytes, and the context's cache
 *    is that size;
 *  - model options refuse a dtype that is no cache's; a GPU, where there
 *    is one, takes a Q8 cache (test_cuda_backend checks its numbers).
 * The rules' bounds (TEST_Q8_*) are tests/support/model_fixtures.c's, which
 * test_cuda_backend holds the GPU's Q8 cache to as well. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moe/model.h"
#include "moe/runtime.h"
#include "support/model_fixtures.h"
#include "support/testutil.h"

static moe_model *open_model(const char *name, int act, int kv)
{
    moe_model_options o = moe_model_default_options();
    o.activations = act;
    o.kv_dtype = kv;
    return test_fixture_model(name, &o);
}

static void check_logits(const char *what, const test_reference *r, const float *got, const float *want, double tol)
{
    printf("  %-40s largest error %.2e (limit %.0e)\n", what, test_check_logits(what, r, got, want, tol), tol);
}

static void check_fixture(const test_fixture *fx)
{
    char what[128];
    test_reference r;
    test_reference_load(fx->name, &r);
    moe_model *m = open_model(fx->name, MOE_ACT_FLOAT, MOE_DTYPE_Q8);
    assert_int_equal(moe_model_get_info(m).kv_dtype, MOE_DTYPE_Q8);
    float *single = test_run_logits(m, &r, r.n);
    snprintf(what, sizeof what, "%s q8 cache", fx->name);
    test_check_q8_logits(what, &r, single);
    static const int STEPS[] = { 1, 5 };
    for (size_t i = 0; i < sizeof STEPS / sizeof STEPS[0]; i++) {
        float *chunked = test_run_logits(m, &r, STEPS[i]);
        snprintf(what, sizeof what, "%s q8 cache, chunks of %d", fx->name, STEPS[i]);
        check_logits(what, &r, chunked, single, TEST_Q8_CHUNKS);
        free(chunked);
    }
    free(single);

    moe_model *half = open_model(fx->name, MOE_ACT_FLOAT, MOE_DTYPE_F16);
    snprintf(what, sizeof what, "%s q8 cache", fx->name);
    test_check_greedy_q8(what, m, half, &r);
    moe_model_free(half);
    moe_model_free(m);

    if (fx->tol > 1e-4) {
        m = open_model(fx->name, MOE_ACT_INT8X2, MOE_DTYPE_Q8);
        float *x2 = test_run_logits(m, &r, r.n);
        snprintf(what, sizeof what, "%s q8 cache, int8x2", fx->name);
        test_check_q8_logits(what, &r, x2);
        free(x2);
        moe_model_free(m);
    }
    moe_st_close(r.file);
}

static void every_fixture(void **state)
{
    (void)state;
    for (size_t i = 0; i < TEST_NUM_FIXTURES; i++) check_fixture(&TEST_FIXTURES[i]);
}

/* One GQA fixture and one of another family with each kernel set. */
static void every_kernel_set(void **state)
{
    (void)state;
    const char *names[TEST_MAX_ISAS];
    for (int t = 0, nt = test_supported_isas(names, TEST_MAX_ISAS); t < nt; t++) {
        assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
        printf(" %s:\n", names[t]);
        check_fixture(&TEST_FIXTURES[1]); /* olmoe/gqa_tied */
        check_fixture(&TEST_FIXTURES[7]); /* families/qwen3_f32_tf4 */
    }
}

/* The estimate and the context hold a Q8 row's bytes: 16 kv heads of
 * head_dim 128 are 16·136 bytes a row, two rows (K, V) a layer. */
static void memory(void **state)
{
    (void)state;
    char dir[512];
    test_fixture_path(dir, sizeof dir, TEST_FIXTURES[1].name, "");
    moe_model_options o = moe_model_default_options();
    o.kv_dtype = MOE_DTYPE_Q8;
    moe_model_memory mem;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &mem), MOE_OK);
    moe_model *m = test_fixture_model(TEST_FIXTURES[1].name, &o);
    moe_model_info info = moe_model_get_info(m);
    size_t row = moe_kv_row_bytes(MOE_DTYPE_Q8, info.num_kv_heads, info.head_dim);
    assert_int_equal(mem.kv_dtype, MOE_DTYPE_Q8);
    assert_int_equal(mem.kv_bytes_per_token, 2 * (size_t)info.num_layers * row);
    assert_int_equal(mem.kv_cache, 100 * mem.kv_bytes_per_token);
    o.kv_dtype = MOE_DTYPE_F16;
    moe_model_memory half;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &half), MOE_OK);
    assert_true(mem.kv_bytes_per_token < half.kv_bytes_per_token);
    /* a GPU's estimate (its free memory, where there is one) holds the same rows */
    o.kv_dtype = MOE_DTYPE_Q8;
    o.device = MOE_DEVICE_CUDA;
    moe_model_memory gpu;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &gpu), MOE_OK);
    assert_int_equal(gpu.device, MOE_DEVICE_CUDA);
    assert_int_equal(gpu.kv_dtype, MOE_DTYPE_Q8);
    assert_int_equal(gpu.kv_cache, mem.kv_cache);
    moe_model_free(m);
}

/* A dtype no cache holds is refused by name; a GPU takes a Q8 cache. */
static void refusals(void **state)
{
    (void)state;
    moe_model_options o = moe_model_default_options();
    moe_model *m = NULL;
    o.kv_dtype = MOE_DTYPE_BF16;
    assert_int_equal(moe_model_synthetic("olmoe", 4, 1, 1, &o, &m), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "kv_dtype"));
    assert_null(m);
    if (moe_device_available(MOE_DEVICE_CUDA) != MOE_OK) {
        print_message("no CUDA device: a Q8 cache on the GPU is not checked here\n");
        return;
    }
    o.kv_dtype = MOE_DTYPE_Q8;
    o.device = MOE_DEVICE_CUDA;
    assert_int_equal(moe_model_synthetic("olmoe", 4, 1, 1, &o, &m), MOE_OK);
    assert_int_equal(moe_model_get_info(m).kv_dtype, MOE_DTYPE_Q8);
    moe_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refusals),
        cmocka_unit_test(memory),
        cmocka_unit_test(every_fixture),
        cmocka_unit_test(every_kernel_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
