/* tests/test_switchglu.c — the SwitchGLU layer against a double-precision
 * reference, for every weight format, every CPU kernel set this machine runs,
 * 1 and 2 threads, sorted and unsorted pairs, fused and unfused (which must
 * agree bit for bit), at odd sizes; with int8 activations also sorted against
 * unsorted (GEMM tiles against matrix-vector, which must agree to float
 * rounding); plus every bad-input error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moe/runtime.h"
#include "kernels/kernels.h"
#include "moe/switchglu.h"
#include "support/testutil.h"

typedef enum { ROUTE_RANDOM, ROUTE_SAME, ROUTE_FEW } routing;

typedef struct {
    const char *name;
    int experts, dim, hidden, tokens, top_k;
    int bits;
    moe_dtype dtype;
    int group_size;
    routing route;
    int int8;      /* int8 activations for quantized GEMV */
} layer_case;

/* k distinct experts per token: uniformly at random, all tokens the same
 * first k experts, or drawn from the first k+1 only (the rest never used). */
static void make_routing(uint64_t *rng, const layer_case *c, int32_t *idx, float *scores)
{
    int pool = c->route == ROUTE_FEW ? (c->top_k + 1 < c->experts ? c->top_k + 1 : c->experts) : c->experts;
    for (int t = 0; t < c->tokens; t++) {
        for (int j = 0; j < c->top_k; j++) {
            int e;
            if (c->route == ROUTE_SAME) e = j;
            else {
                int fresh;
                do {
                    e = (int)(test_rand_u64(rng) % (uint64_t)pool);
                    fresh = 1;
                    for (int q = 0; q < j; q++) fresh &= idx[t * c->top_k + q] != e;
                } while (!fresh);
            }
            idx[t * c->top_k + j] = e;
            scores[t * c->top_k + j] = (float)test_rand_uniform(rng, 0.05, 1.0);
        }
    }
}

static size_t expected_bytes(const layer_case *c)
{
    size_t weights = (size_t)c->experts * c->hidden * c->dim; /* per projection */
    if (!c->bits) return 3 * weights * moe_dtype_size(c->dtype);
    return 3 * (weights * c->bits / 8 + 2 * weights / c->group_size * moe_dtype_size(c->dtype));
}

/* y against ref within rel·bound (+ a floor for exact zeros). */
static void check_within(const layer_case *c, const char *what, const float *y, const double *ref,
                         const double *bound, double rel)
{
    for (size_t i = 0; i < (size_t)c->tokens * c->dim; i++) {
        double err = fabs((double)y[i] - ref[i]), tol = rel * bound[i] + 1e-7;
        if (!(err <= tol)) {
            print_error("%s (%s): y[%zu] = %.9g, reference %.9g, error %.3g > %.3g\n", c->name, what, i,
                        (double)y[i], ref[i], err, tol);
            fail();
        }
    }
}

static void check_close(const layer_case *c, const char *what, const float *y, const double *ref,
                        const double *bound)
{
    /* int8 activations: each input is off by up to half a step of
     * max|group|/127, i.e. under 1% of the absolute sum, twice over; with
     * the residual digit, half a step of that step over 254 */
    check_within(c, what, y, ref, bound, c->int8 == MOE_ACT_INT8 ? 2e-2 : c->int8 == MOE_ACT_INT8X2 ? 1e-4 : 2e-5);
}

static void run_case(const layer_case *c, uint64_t seed)
{
    uint64_t rng = seed;
    test_proj gate, up, down;
    test_proj_make(&gate, &rng, c->experts, c->hidden, c->dim, c->bits, c->dtype, c->group_size);
    test_proj_make(&up, &rng, c->experts, c->hidden, c->dim, c->bits, c->dtype, c->group_size);
    test_proj_make(&down, &rng, c->experts, c->dim, c->hidden, c->bits, c->dtype, c->group_size);
    size_t ny = (size_t)c->tokens * c->dim;
    float *x = malloc(sizeof(float) * ny), *y = malloc(sizeof(float) * ny), *y2 = malloc(sizeof(float) * ny);
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)c->tokens * c->top_k);
    float *scores = malloc(sizeof(float) * (size_t)c->tokens * c->top_k);
    double *ref = malloc(sizeof(double) * ny), *bound = malloc(sizeof(double) * ny);
    double *y_unsorted = malloc(sizeof(double) * ny);
    test_rand_floats(&rng, x, ny, -1, 1);
    make_routing(&rng, c, idx, scores);
    test_switchglu_reference(&gate, &up, &down, x, c->tokens, idx, scores, c->top_k, ref, bound);

    const char *isas[TEST_MAX_ISAS];
    int nisa = test_supported_isas(isas, TEST_MAX_ISAS);
    for (int ii = 0; ii < nisa; ii++)
        for (int threads = 1; threads <= 2; threads++)
            for (int sorted = 0; sorted <= 1; sorted++) {
                char what[96];
                snprintf(what, sizeof what, "%s, %d thread%s, %s", isas[ii], threads, threads > 1 ? "s" : "",
                         sorted ? "sorted" : "unsorted");
                assert_int_equal(moe_cpu_select_isa(isas[ii]), MOE_OK);
                assert_int_equal(moe_set_num_threads(threads), MOE_OK);
                moe_switchglu_config cfg = moe_switchglu_default_config(c->experts, c->dim, c->hidden);
                cfg.sort_threshold = sorted ? 1 : 1 << 30;
                cfg.int8_activations = c->int8;
                moe_switchglu *l = NULL;
                assert_int_equal(moe_switchglu_create_stacked(&cfg, &gate.w, &up.w, &down.w, &l), MOE_OK);
                assert_int_equal(moe_switchglu_weight_bytes(l), expected_bytes(c));
                assert_int_equal(moe_switchglu_forward(l, x, c->tokens, idx, scores, c->top_k, y), MOE_OK);
                check_close(c, what, y, ref, bound);
                if (c->int8 && c->bits && moe_kernels_by_name(isas[ii])->panel_gemv_i8) {
                    /* int8 paths: the worst-case bound above is loose (the
                     * rounding of many activations mostly cancels), so also
                     * hold the sorted pass (prefill-sized groups: the int8
                     * panel GEMM, tile by tile) to the unsorted one (one pair a
                     * group: the matrix-vector kernel). Same int8 activations,
                     * the same sums for every pair; only the order in which a
                     * token's top_k outputs add into y differs. */
                    if (!sorted)
                        for (size_t i = 0; i < ny; i++) y_unsorted[i] = y[i];
                    else {
                        char vs[160];
                        snprintf(vs, sizeof vs, "%s, against unsorted", what);
                        check_within(c, vs, y, y_unsorted, bound, 2e-5);
                    }
                }
                if (c->int8 && c->bits && moe_kernels_by_name(isas[ii])->panel_gemv_i8) {
                    /* the int8 path really ran: it differs from exact floats */
                    moe_switchglu_config exact = cfg;
                    exact.int8_activations = 0;
                    moe_switchglu *le = NULL;
                    assert_int_equal(moe_switchglu_create_stacked(&exact, &gate.w, &up.w, &down.w, &le), MOE_OK);
                    assert_int_equal(moe_switchglu_forward(le, x, c->tokens, idx, scores, c->top_k, y2), MOE_OK);
                    assert_true(memcmp(y, y2, sizeof(float) * ny) != 0);
                    moe_switchglu_free(le);
                }

                /* unfused, rearranged in place: same bytes, same bits */
                assert_int_equal(moe_switchglu_set_fused(l, 0), MOE_OK);
                assert_int_equal(moe_switchglu_fused(l), 0);
                assert_int_equal(moe_switchglu_weight_bytes(l), expected_bytes(c));
                assert_int_equal(moe_switchglu_forward(l, x, c->tokens, idx, scores, c->top_k, y2), MOE_OK);
                if (memcmp(y, y2, sizeof(float) * ny) != 0) {
                    print_error("%s (%s): fused and unfused differ\n", c->name, what);
                    fail();
                }
                /* and back: the permutation is exact */
                assert_int_equal(moe_switchglu_set_fused(l, 1), MOE_OK);
                assert_int_equal(moe_switchglu_forward(l, x, c->tokens, idx, scores, c->top_k, y2), MOE_OK);
                assert_memory_equal(y, y2, sizeof(float) * ny);
                moe_switchglu_free(l);

                /* created unfused from the start: same bits again */
                cfg.fuse_gate_up = 0;
                assert_int_equal(moe_switchglu_create_stacked(&cfg, &gate.w, &up.w, &down.w, &l), MOE_OK);
                assert_int_equal(moe_switchglu_forward(l, x, c->tokens, idx, scores, c->top_k, y2), MOE_OK);
                assert_memory_equal(y, y2, sizeof(float) * ny);
                moe_switchglu_free(l);
            }
    free(x), free(y), free(y2), free(idx), free(scores), free(ref), free(bound), free(y_unsorted);
    test_proj_free(&gate), test_proj_free(&up), test_proj_free(&down);
}

#define CASE(fn, ...)                                      \
    static void fn(void **state)                           \
    {                                                      \
        (void)state;                                       \
        static const layer_case c = { #fn, __VA_ARGS__ };  \
        run_case(&c, 0x5eed0000u + __LINE__);              \
    }

/* name:          E   D    I   T   k  bits dtype           group route  int8 */
CASE(f32_odd,      3,  37, 23,  5, 2, 0, MOE_DTYPE_F32,   0,  ROUTE_RANDOM, 0)
CASE(f32_many,     4,  41, 35, 40, 2, 0, MOE_DTYPE_F32,   0,  ROUTE_RANDOM, 0)
CASE(bf16_odd,     4,  50, 45, 19, 3, 0, MOE_DTYPE_BF16,  0,  ROUTE_RANDOM, 0)
CASE(f16_k_eq_e,   5,  33, 17, 26, 5, 0, MOE_DTYPE_F16,   0,  ROUTE_RANDOM, 0)
CASE(f32_one_expert, 1, 19, 40, 13, 1, 0, MOE_DTYPE_F32,  0,  ROUTE_RANDOM, 0)
CASE(bf16_same,    6,  29, 31, 37, 2, 0, MOE_DTYPE_BF16,  0,  ROUTE_SAME, 0)
CASE(f32_unused,   9,  26, 18, 30, 2, 0, MOE_DTYPE_F32,   0,  ROUTE_FEW, 0)
CASE(q4_bf16_g64,  6, 192, 128, 23, 2, 4, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 0)
CASE(q4_f32_g32,   3,  96, 160, 3, 1, 4, MOE_DTYPE_F32,  32, ROUTE_RANDOM, 0)
CASE(q4_f16_g128,  4, 256, 128, 33, 3, 4, MOE_DTYPE_F16, 128, ROUTE_RANDOM, 0)
CASE(q4_same,      5, 128, 96, 45, 2, 4, MOE_DTYPE_BF16, 32, ROUTE_SAME, 0)
CASE(q8_bf16_g64,  6, 128, 192, 21, 2, 8, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 0)
CASE(q8_f16_g32,   1,  96, 64, 14, 1, 8, MOE_DTYPE_F16,  32, ROUTE_RANDOM, 0)
CASE(q8_f32_g128,  8, 128, 256, 9, 8, 8, MOE_DTYPE_F32, 128, ROUTE_FEW, 0)
CASE(q4_decode,   16, 256, 128, 1, 8, 4, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 0)
CASE(q8_few_tokens, 3, 64, 64, 6, 1, 8, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 0)
CASE(q4_int8_decode, 16, 256, 128, 1, 8, 4, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 1)
CASE(q4_int8_g32,  5, 96, 160, 7, 2, 4, MOE_DTYPE_F16, 32, ROUTE_RANDOM, 1)
CASE(q8_int8_g128, 4, 256, 128, 9, 3, 8, MOE_DTYPE_F32, 128, ROUTE_FEW, 1)
CASE(q4_int8_many,  4, 128, 96, 45, 2, 4, MOE_DTYPE_BF16, 32, ROUTE_SAME, 1)
CASE(q8_int8_many,  3, 64, 128, 70, 2, 8, MOE_DTYPE_F16, 64, ROUTE_RANDOM, 1)
CASE(f32_int8_ignored, 3, 37, 23, 5, 2, 0, MOE_DTYPE_F32, 0, ROUTE_RANDOM, 1)
/* prefill-sized groups, int8 activations: sorted, each group runs the int8
 * panel GEMM in tiles of mr_i8 tokens with a partial last tile (the
 * unsorted runs of the same cases take the matrix-vector kernel) */
CASE(q4_int8_prefill, 6, 192, 160, 160, 3, 4, MOE_DTYPE_F16, 32, ROUTE_RANDOM, 1)
CASE(q4_int8_prefill_same, 3, 128, 256, 101, 2, 4, MOE_DTYPE_BF16, 64, ROUTE_SAME, 1)
CASE(q8_int8_prefill, 5, 128, 192, 130, 2, 8, MOE_DTYPE_BF16, 64, ROUTE_FEW, 1)
CASE(q4_int8_prefill_g128, 4, 256, 128, 90, 4, 4, MOE_DTYPE_F32, 128, ROUTE_RANDOM, 1)
/* int8 with a residual digit (MOE_ACT_INT8X2): decode, small groups, prefill */
CASE(q4_x2_decode, 16, 256, 128, 1, 8, 4, MOE_DTYPE_BF16, 64, ROUTE_RANDOM, 2)
CASE(q8_x2_g32,  5, 96, 160, 7, 2, 8, MOE_DTYPE_F16, 32, ROUTE_RANDOM, 2)
CASE(q4_x2_prefill, 6, 192, 160, 160, 3, 4, MOE_DTYPE_F16, 32, ROUTE_RANDOM, 2)
CASE(q8_x2_prefill_same, 3, 128, 256, 101, 2, 8, MOE_DTYPE_BF16, 64, ROUTE_SAME, 2)
CASE(q4_x2_prefill_g128, 4, 256, 128, 90, 4, 4, MOE_DTYPE_F32, 128, ROUTE_FEW, 2)

/* ---- errors ---- */

static moe_expert_weights fw(moe_dtype t, const void *w)
{
    return (moe_expert_weights){ t, 0, 0, w, NULL, NULL };
}

static void expect_error(moe_status got, moe_status want, const char *needle)
{
    assert_int_equal(got, want);
    if (!strstr(moe_last_error(), needle)) {
        print_error("message \"%s\" does not mention \"%s\"\n", moe_last_error(), needle);
        fail();
    }
}

static void create_errors(void **state)
{
    (void)state;
    float buf[64] = { 0.5f };
    moe_switchglu *l = (moe_switchglu *)0x1;
    moe_expert_weights f = fw(MOE_DTYPE_F32, buf), u32 = fw(MOE_DTYPE_U32, buf);
    moe_switchglu_config cfg = moe_switchglu_default_config(2, 4, 4);
    expect_error(moe_switchglu_create(&cfg, &f, &f, &f, NULL), MOE_ERR_INVALID_ARG, "output");
    expect_error(moe_switchglu_create(NULL, &f, &f, &f, &l), MOE_ERR_INVALID_ARG, "config");
    assert_null(l);
    moe_switchglu_config bad = moe_switchglu_default_config(0, 4, 4);
    expect_error(moe_switchglu_create(&bad, &f, &f, &f, &l), MOE_ERR_SHAPE, "experts 0");
    bad = moe_switchglu_default_config(2, -3, 4);
    expect_error(moe_switchglu_create(&bad, &f, &f, &f, &l), MOE_ERR_SHAPE, "dim -3");
    expect_error(moe_switchglu_create(&cfg, &u32, &u32, &f, &l), MOE_ERR_DTYPE, "gate weight dtype U32");
    expect_error(moe_switchglu_create(&cfg, &f, NULL, &f, &l), MOE_ERR_INVALID_ARG, "up");
    moe_expert_weights b16 = fw(MOE_DTYPE_BF16, buf);
    expect_error(moe_switchglu_create(&cfg, &f, &b16, &f, &l), MOE_ERR_DTYPE, "gate and up");
    moe_expert_weights q3 = { MOE_DTYPE_BF16, 3, 64, buf, buf, buf };
    cfg = moe_switchglu_default_config(2, 128, 64);
    expect_error(moe_switchglu_create(&cfg, &q3, &q3, &q3, &l), MOE_ERR_UNSUPPORTED, "3-bit");
    moe_expert_weights q4g48 = { MOE_DTYPE_BF16, 4, 48, buf, buf, buf };
    expect_error(moe_switchglu_create(&cfg, &q4g48, &q4g48, &q4g48, &l), MOE_ERR_SHAPE, "group size 48");
    moe_expert_weights q4 = { MOE_DTYPE_BF16, 4, 64, buf, buf, buf };
    cfg = moe_switchglu_default_config(2, 96, 64);
    expect_error(moe_switchglu_create(&cfg, &q4, &q4, &q4, &l), MOE_ERR_SHAPE,
                 "gate input dim 96 is not a multiple of the group size 64");
    cfg = moe_switchglu_default_config(2, 128, 96);
    expect_error(moe_switchglu_create(&cfg, &q4, &q4, &q4, &l), MOE_ERR_SHAPE, "down input dim 96");
    moe_expert_weights q4f32 = q4;
    q4f32.dtype = MOE_DTYPE_U32;
    cfg = moe_switchglu_default_config(2, 128, 64);
    expect_error(moe_switchglu_create(&cfg, &q4f32, &q4f32, &q4, &l), MOE_ERR_DTYPE, "scales/biases");
}

/* Two layers sharing a workspace give what they give alone, interleaved and
 * at growing token counts; freeing them in either order is clean. */
static void shared_workspace(void **state)
{
    (void)state;
    uint64_t rng = 77;
    test_proj p[2][3];
    static const int E[2] = { 4, 3 }, DD[2] = { 64, 128 }, II[2] = { 96, 32 }, BITS[2] = { 4, 0 };
    for (int k = 0; k < 2; k++) {
        moe_dtype dt = BITS[k] ? MOE_DTYPE_BF16 : MOE_DTYPE_F32;
        int g = BITS[k] ? 32 : 0;
        test_proj_make(&p[k][0], &rng, E[k], II[k], DD[k], BITS[k], dt, g);
        test_proj_make(&p[k][1], &rng, E[k], II[k], DD[k], BITS[k], dt, g);
        test_proj_make(&p[k][2], &rng, E[k], DD[k], II[k], BITS[k], dt, g);
    }
    enum { T = 70, K = 2 };
    float *x = malloc(sizeof(float) * T * 128), *y1 = malloc(sizeof(float) * T * 128), *y2 = malloc(sizeof(float) * T * 128);
    int32_t idx[T * K];
    float sc[T * K];
    test_rand_floats(&rng, x, (size_t)T * 128, -1, 1);
    test_rand_floats(&rng, sc, T * K, 0, 1);
    for (int i = 0; i < T * K; i++) idx[i] = (i * 7 + i / K) % 3;
    for (int order = 0; order < 2; order++) {
        moe_switchglu *alone[2], *shared[2];
        for (int k = 0; k < 2; k++) {
            moe_switchglu_config cfg = moe_switchglu_default_config(E[k], DD[k], II[k]);
            cfg.int8_activations = BITS[k] ? MOE_ACT_INT8X2 : MOE_ACT_FLOAT;
            assert_int_equal(moe_switchglu_create_stacked(&cfg, &p[k][0].w, &p[k][1].w, &p[k][2].w, &alone[k]), MOE_OK);
            assert_int_equal(moe_switchglu_create_stacked(&cfg, &p[k][0].w, &p[k][1].w, &p[k][2].w, &shared[k]), MOE_OK);
        }
        assert_int_equal(moe_switchglu_share_workspace(shared[1], shared[0]), MOE_OK);
        for (int t = 1; t <= T; t += 23)
            for (int k = 0; k < 2; k++) {
                assert_int_equal(moe_switchglu_forward(alone[k], x, t, idx, sc, K, y1), MOE_OK);
                assert_int_equal(moe_switchglu_forward(shared[k], x, t, idx, sc, K, y2), MOE_OK);
                assert_memory_equal(y1, y2, sizeof(float) * (size_t)t * DD[k]);
            }
        for (int k = 0; k < 2; k++) moe_switchglu_free(alone[k]);
        moe_switchglu_free(shared[order]);
        moe_switchglu_free(shared[1 - order]);
    }
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++) test_proj_free(&p[k][j]);
    free(x), free(y1), free(y2);
}

static void forward_errors(void **state)
{
    (void)state;
    uint64_t rng = 42;
    test_proj g, u, d;
    test_proj_make(&g, &rng, 3, 8, 5, 0, MOE_DTYPE_F32, 0);
    test_proj_make(&u, &rng, 3, 8, 5, 0, MOE_DTYPE_F32, 0);
    test_proj_make(&d, &rng, 3, 5, 8, 0, MOE_DTYPE_F32, 0);
    moe_switchglu_config cfg = moe_switchglu_default_config(3, 5, 8);
    moe_switchglu *l;
    /* an expert never loaded */
    assert_int_equal(moe_switchglu_create(&cfg, &g.w, &u.w, &d.w, &l), MOE_OK);
    float x[10] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, y[10], s[4] = { 0.5f, 0.5f, 0.5f, 0.5f };
    int32_t idx[4] = { 0, 1, 2, 0 };
    expect_error(moe_switchglu_forward(l, x, 2, idx, s, 2, y), MOE_ERR_INVALID_ARG, "expert 0 was never loaded");
    expect_error(moe_switchglu_load_expert(l, 3, &g.w, &u.w, &d.w), MOE_ERR_RANGE, "expert 3");
    moe_expert_weights none = g.w;
    none.weight = NULL;
    expect_error(moe_switchglu_load_expert(l, 0, &none, &u.w, &d.w), MOE_ERR_INVALID_ARG, "gate");
    static uint32_t buf32[64 * 64];
    moe_expert_weights other = g.w;
    other.dtype = MOE_DTYPE_BF16;
    expect_error(moe_switchglu_load_expert(l, 0, &g.w, &other, &d.w), MOE_ERR_DTYPE, "up");
    moe_switchglu_free(l);

    moe_expert_weights no_scales = { MOE_DTYPE_BF16, 4, 32, buf32, NULL, buf32 };
    moe_switchglu_config qcfg = moe_switchglu_default_config(2, 64, 64);
    expect_error(moe_switchglu_create_stacked(&qcfg, &no_scales, &no_scales, &no_scales, &l), MOE_ERR_INVALID_ARG,
                 "scales or biases pointer is NULL");
    assert_null(l);

    assert_int_equal(moe_switchglu_create_stacked(&cfg, &g.w, &u.w, &d.w, &l), MOE_OK);
    assert_int_equal(moe_switchglu_forward(l, x, 2, idx, s, 2, y), MOE_OK);
    int32_t bad_hi[4] = { 0, 3, 1, 2 }, bad_lo[4] = { 0, 1, -1, 2 };
    expect_error(moe_switchglu_forward(l, x, 2, bad_hi, s, 2, y), MOE_ERR_RANGE, "index 3 at token 0, slot 1");
    expect_error(moe_switchglu_forward(l, x, 2, bad_lo, s, 2, y), MOE_ERR_RANGE, "index -1 at token 1, slot 0");
    expect_error(moe_switchglu_forward(l, x, 2, idx, s, 4, y), MOE_ERR_SHAPE, "top_k 4");
    expect_error(moe_switchglu_forward(l, x, 2, idx, s, 0, y), MOE_ERR_SHAPE, "top_k 0");
    expect_error(moe_switchglu_forward(l, x, -1, idx, s, 2, y), MOE_ERR_SHAPE, "token count -1");
    expect_error(moe_switchglu_forward(l, NULL, 2, idx, s, 2, y), MOE_ERR_INVALID_ARG, "NULL");
    expect_error(moe_switchglu_forward(l, x, 2, idx, s, 2, x), MOE_ERR_INVALID_ARG, "alias");
    assert_int_equal(moe_switchglu_forward(l, x, 0, idx, s, 2, y), MOE_OK);
    moe_switchglu_free(l);
    moe_switchglu_free(NULL);
    test_proj_free(&g), test_proj_free(&u), test_proj_free(&d);
}

static void isa_selection(void **state)
{
    (void)state;
    assert_int_equal(moe_cpu_select_isa("portable"), MOE_OK);
    assert_string_equal(moe_cpu_isa(), "portable");
    expect_error(moe_cpu_select_isa("sse9"), MOE_ERR_UNSUPPORTED, "sse9");
    expect_error(moe_set_num_threads(0), MOE_ERR_INVALID_ARG, "thread count 0");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f32_odd),        cmocka_unit_test(f32_many),     cmocka_unit_test(bf16_odd),
        cmocka_unit_test(f16_k_eq_e),     cmocka_unit_test(f32_one_expert), cmocka_unit_test(bf16_same),
        cmocka_unit_test(f32_unused),     cmocka_unit_test(q4_bf16_g64),  cmocka_unit_test(q4_f32_g32),
        cmocka_unit_test(q4_f16_g128),    cmocka_unit_test(q4_same),      cmocka_unit_test(q8_bf16_g64),
        cmocka_unit_test(q8_f16_g32),     cmocka_unit_test(q8_f32_g128),  cmocka_unit_test(q4_decode),
        cmocka_unit_test(q8_few_tokens),  cmocka_unit_test(q4_int8_decode), cmocka_unit_test(q4_int8_g32),
        cmocka_unit_test(q8_int8_g128),   cmocka_unit_test(q4_int8_many),  cmocka_unit_test(q8_int8_many),   cmocka_unit_test(f32_int8_ignored),
        cmocka_unit_test(q4_int8_prefill), cmocka_unit_test(q4_int8_prefill_same), cmocka_unit_test(q8_int8_prefill),
        cmocka_unit_test(q4_int8_prefill_g128),  cmocka_unit_test(q4_x2_decode), cmocka_unit_test(q8_x2_g32),
        cmocka_unit_test(q4_x2_prefill), cmocka_unit_test(q8_x2_prefill_same), cmocka_unit_test(q4_x2_prefill_g128),
        cmocka_unit_test(shared_workspace), cmocka_unit_test(create_errors), cmocka_unit_test(forward_errors),
        cmocka_unit_test(isa_selection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
