/* tests/test_linear.c — the dense projection against a double-precision
 * reference: every format, odd row counts (a partial last panel), token
 * counts on both sides of the matrix-vector / GEMM switch and across GEMM
 * blocks, 1 and 2 threads, every kernel set this CPU runs; rows loaded in
 * blocks; embedding-row lookup; bad input. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "layers/linear.h"
#include "moe/runtime.h"
#include "support/testutil.h"

typedef struct {
    int out, in, bits, group;
    moe_dtype dtype;
} lin_case;

static void check_case(const lin_case *lc, int tokens, moe_act_mode act)
{
    uint64_t rng = 0x1234567ull + (uint64_t)lc->out * 131 + (uint64_t)tokens * 7 + (uint64_t)act;
    test_proj w;
    test_proj_make(&w, &rng, 1, lc->out, lc->in, lc->bits, lc->dtype, lc->group);
    float *x = malloc(sizeof(float) * (size_t)tokens * lc->in);
    float *y = malloc(sizeof(float) * (size_t)tokens * lc->out);
    test_rand_floats(&rng, x, (size_t)tokens * lc->in, -1, 1);
    const char *isas[TEST_MAX_ISAS];
    int nisa = test_supported_isas(isas, TEST_MAX_ISAS);
    for (int ii = 0; ii < nisa; ii++)
        for (int threads = 1; threads <= 2; threads++) {
            assert_int_equal(moe_cpu_select_isa(isas[ii]), MOE_OK);
            assert_int_equal(moe_set_num_threads(threads), MOE_OK);
            moe_linear *l;
            assert_int_equal(moe_linear_create(lc->out, lc->in, &w.w, "proj", &l), MOE_OK);
            /* load in two blocks to exercise row offsets */
            int split = lc->out > 32 ? 32 : lc->out;
            assert_int_equal(moe_linear_load_rows(l, 0, split, &w.w), MOE_OK);
            if (split < lc->out) {
                size_t rb = w.w.bits ? (size_t)lc->in * w.w.bits / 8 : (size_t)lc->in * moe_dtype_size(lc->dtype);
                size_t sb = w.w.bits ? (size_t)lc->in / lc->group * moe_dtype_size(lc->dtype) : 0;
                moe_expert_weights rest = w.w;
                rest.weight = (const char *)w.w.weight + rb * split;
                if (sb) {
                    rest.scales = (const char *)w.w.scales + sb * split;
                    rest.biases = (const char *)w.w.biases + sb * split;
                }
                assert_int_equal(moe_linear_load_rows(l, split, lc->out - split, &rest), MOE_OK);
            }
            moe_linear_set_activations(l, act);
            memset(y, 0x7f, sizeof(float) * (size_t)tokens * lc->out);
            assert_int_equal(moe_linear_forward(l, x, tokens, y), MOE_OK);
            for (int t = 0; t < tokens; t++)
                for (int r = 0; r < lc->out; r++) {
                    double ref = 0, bound = 0;
                    for (int k = 0; k < lc->in; k++) {
                        double term = w.value[(size_t)r * lc->in + k] * x[(size_t)t * lc->in + k];
                        ref += term;
                        bound += fabs(term);
                    }
                    double got = y[(size_t)t * lc->out + r];
                    /* int8: half a step of max|x|/127 an input; with the
                     * residual digit, half a step of that over 254 */
                    double rel = !lc->bits || act == MOE_ACT_FLOAT ? 2e-5 : act == MOE_ACT_INT8 ? 2e-2 : 1e-4;
                    double tol = rel * bound + 1e-7;
                    if (!(fabs(got - ref) <= tol))
                        fail_msg("%s threads %d out %d in %d bits %d tokens %d: y[%d][%d] = %.9g, want %.9g", isas[ii],
                                 threads, lc->out, lc->in, lc->bits, tokens, t, r, got, ref);
                }
            /* row lookup: exact values */
            float *row = malloc(sizeof(float) * (size_t)lc->in);
            for (int r = 0; r < lc->out; r += 7) {
                moe_linear_row(l, r, row);
                for (int k = 0; k < lc->in; k++)
                    if (fabs(row[k] - w.value[(size_t)r * lc->in + k]) > 1e-6 * fabs(w.value[(size_t)r * lc->in + k]) + 1e-7)
                        fail_msg("row %d col %d: %.9g, want %.9g", r, k, row[k], w.value[(size_t)r * lc->in + k]);
            }
            free(row);
            moe_linear_free(l);
        }
    free(x), free(y);
    test_proj_free(&w);
}

static const lin_case CASES[] = {
    { 37, 29, 0, 0, MOE_DTYPE_F32 },   { 50, 33, 0, 0, MOE_DTYPE_BF16 }, { 21, 40, 0, 0, MOE_DTYPE_F16 },
    { 37, 192, 4, 64, MOE_DTYPE_BF16 }, { 45, 96, 4, 32, MOE_DTYPE_F32 }, { 19, 256, 8, 128, MOE_DTYPE_F16 },
    { 64, 128, 8, 64, MOE_DTYPE_BF16 },
    /* above the size a projection runs on the calling thread alone: split
     * over the team */
    { 1029, 160, 0, 0, MOE_DTYPE_F32 }, { 1041, 1024, 4, 64, MOE_DTYPE_BF16 },
};
static const int TOKENS[] = { 1, 2, 3, 4, 5, 13, 100 };

static void formats_exact(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (size_t t = 0; t < sizeof TOKENS / sizeof TOKENS[0]; t++) check_case(&CASES[c], TOKENS[t], MOE_ACT_FLOAT);
}

static void formats_int8(void **state)
{
    (void)state;
    for (size_t c = 3; c < sizeof CASES / sizeof CASES[0]; c++)
        for (size_t t = 0; t < sizeof TOKENS / sizeof TOKENS[0]; t++) check_case(&CASES[c], TOKENS[t], MOE_ACT_INT8);
}

static void formats_int8x2(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (size_t t = 0; t < sizeof TOKENS / sizeof TOKENS[0]; t++) check_case(&CASES[c], TOKENS[t], MOE_ACT_INT8X2);
}

static void errors(void **state)
{
    (void)state;
    moe_expert_weights f32 = { MOE_DTYPE_F32, 0, 0, NULL, NULL, NULL };
    moe_expert_weights q4 = { MOE_DTYPE_BF16, 4, 64, NULL, NULL, NULL };
    moe_linear *l;
    assert_int_equal(moe_linear_create(0, 8, &f32, "wq", &l), MOE_ERR_SHAPE);
    assert_non_null(strstr(moe_last_error(), "wq"));
    assert_int_equal(moe_linear_create(8, 100, &q4, "wk", &l), MOE_ERR_SHAPE);
    assert_non_null(strstr(moe_last_error(), "group size"));
    assert_int_equal(moe_linear_create(40, 8, &f32, "wv", &l), MOE_OK);
    float x[8] = { 0 }, y[40];
    assert_int_equal(moe_linear_forward(l, x, 1, y), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "never loaded"));
    float w[40 * 8] = { 0 };
    moe_expert_weights src = f32;
    src.weight = w;
    assert_int_equal(moe_linear_load_rows(l, 8, 16, &src), MOE_ERR_SHAPE);
    assert_int_equal(moe_linear_load_rows(l, 32, 16, &src), MOE_ERR_SHAPE);
    moe_expert_weights bf16 = src;
    bf16.dtype = MOE_DTYPE_BF16;
    assert_int_equal(moe_linear_load_rows(l, 0, 40, &bf16), MOE_ERR_DTYPE);
    assert_non_null(strstr(moe_last_error(), "differ in format"));
    assert_int_equal(moe_linear_load_rows(l, 0, 40, &src), MOE_OK);
    assert_int_equal(moe_linear_forward(l, x, 1, y), MOE_OK);
    assert_int_equal(moe_linear_forward(l, x, -1, y), MOE_ERR_SHAPE);
    moe_linear_free(l);
}

/* Projections sharing a workspace give what they give alone, interleaved
 * and at growing sizes; freeing them in either order is clean. */
static void shared_workspace(void **state)
{
    (void)state;
    uint64_t rng = 5;
    test_proj a, b;
    test_proj_make(&a, &rng, 1, 40, 128, 4, MOE_DTYPE_BF16, 64);
    test_proj_make(&b, &rng, 1, 24, 64, 0, MOE_DTYPE_F32, 0);
    float x[50 * 128], ya[50 * 40], yb[50 * 24], ya2[50 * 40], yb2[50 * 24];
    test_rand_floats(&rng, x, 50 * 128, -1, 1);
    for (int order = 0; order < 2; order++) {
        moe_linear *la, *lb, *sa, *sb;
        assert_int_equal(moe_linear_create(40, 128, &a.w, "a", &la), MOE_OK);
        assert_int_equal(moe_linear_create(24, 64, &b.w, "b", &lb), MOE_OK);
        assert_int_equal(moe_linear_create(40, 128, &a.w, "a", &sa), MOE_OK);
        assert_int_equal(moe_linear_create(24, 64, &b.w, "b", &sb), MOE_OK);
        assert_int_equal(moe_linear_load_rows(la, 0, 40, &a.w), MOE_OK);
        assert_int_equal(moe_linear_load_rows(sa, 0, 40, &a.w), MOE_OK);
        assert_int_equal(moe_linear_load_rows(lb, 0, 24, &b.w), MOE_OK);
        assert_int_equal(moe_linear_load_rows(sb, 0, 24, &b.w), MOE_OK);
        moe_linear_set_activations(la, MOE_ACT_INT8X2);
        moe_linear_set_activations(sa, MOE_ACT_INT8X2);
        assert_int_equal(moe_linear_share_workspace(sb, sa), MOE_OK);
        for (int t = 1; t <= 50; t += 7) {
            assert_int_equal(moe_linear_forward(la, x, t, ya), MOE_OK);
            assert_int_equal(moe_linear_forward(lb, x, t, yb), MOE_OK);
            assert_int_equal(moe_linear_forward(sa, x, t, ya2), MOE_OK);
            assert_int_equal(moe_linear_forward(sb, x, t, yb2), MOE_OK);
            assert_memory_equal(ya, ya2, sizeof(float) * (size_t)t * 40);
            assert_memory_equal(yb, yb2, sizeof(float) * (size_t)t * 24);
        }
        moe_linear_free(la), moe_linear_free(lb);
        if (order) moe_linear_free(sa), moe_linear_free(sb);
        else moe_linear_free(sb), moe_linear_free(sa);
    }
    test_proj_free(&a), test_proj_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(formats_exact),
        cmocka_unit_test(formats_int8),
        cmocka_unit_test(formats_int8x2),
        cmocka_unit_test(shared_workspace),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
