/* tests/test_router.c — softmax top-k expert selection against a
 * double-precision reference: order, ties, renormalisation, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "layers/router.h"
#include "support/testutil.h"

/* The reference: probabilities in double, then repeatedly the largest not
 * yet taken (lowest index on ties). */
static void reference(const float *z, int E, int k, int norm, int32_t *idx, double *val)
{
    double m = z[0], s = 0, p[256];
    for (int e = 1; e < E; e++) m = fmax(m, z[e]);
    for (int e = 0; e < E; e++) s += exp((double)z[e] - m);
    for (int e = 0; e < E; e++) p[e] = exp((double)z[e] - m) / s;
    char taken[256] = { 0 };
    double tot = 0;
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
        taken[best] = 1;
        idx[j] = best;
        val[j] = p[best];
        tot += p[best];
    }
    if (norm)
        for (int j = 0; j < k; j++) val[j] /= tot;
}

static void matches_reference(void **state)
{
    (void)state;
    uint64_t rng = 0x70e7e4;
    static const int Es[] = { 1, 3, 8, 64, 129 };
    for (size_t a = 0; a < sizeof Es / sizeof Es[0]; a++)
        for (int k = 1; k <= Es[a] && k <= 9; k += (k < 3 ? 1 : 3))
            for (int norm = 0; norm <= 1; norm++) {
                int E = Es[a], T = 7;
                float *z = malloc(sizeof(float) * T * E), *sc = malloc(sizeof(float) * T * k);
                int32_t *idx = malloc(sizeof(int32_t) * T * k), ridx[16];
                double rval[16];
                test_rand_floats(&rng, z, (size_t)T * E, -4, 4);
                assert_int_equal(moe_router_topk(z, T, E, k, norm, idx, sc), MOE_OK);
                for (int t = 0; t < T; t++) {
                    reference(z + t * E, E, k, norm, ridx, rval);
                    for (int j = 0; j < k; j++) {
                        assert_int_equal(idx[t * k + j], ridx[j]);
                        assert_true(fabs(sc[t * k + j] - rval[j]) <= 1e-6 * rval[j] + 1e-9);
                    }
                }
                free(z), free(sc), free(idx);
            }
}

static void ties_take_the_lower_expert(void **state)
{
    (void)state;
    float z[6] = { 1, 3, 3, 0, 3, 2 };
    int32_t idx[4];
    float sc[4];
    assert_int_equal(moe_router_topk(z, 1, 6, 4, 1, idx, sc), MOE_OK);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 4);
    assert_int_equal(idx[3], 5);
    assert_true(fabsf(sc[0] - sc[1]) == 0.0f);
    assert_true(fabs(sc[0] + sc[1] + sc[2] + sc[3] - 1.0) < 1e-6);
}

static void errors(void **state)
{
    (void)state;
    float z[4] = { 0, 1, 2, 3 }, sc[4];
    int32_t idx[4];
    assert_int_equal(moe_router_topk(z, 1, 4, 5, 0, idx, sc), MOE_ERR_SHAPE);
    assert_non_null(strstr(moe_last_error(), "top_k 5"));
    assert_int_equal(moe_router_topk(z, 1, 4, 0, 0, idx, sc), MOE_ERR_SHAPE);
    assert_int_equal(moe_router_topk(NULL, 1, 4, 2, 0, idx, sc), MOE_ERR_INVALID_ARG);
    z[2] = NAN;
    assert_int_equal(moe_router_topk(z, 1, 4, 2, 0, idx, sc), MOE_ERR_RANGE);
    assert_non_null(strstr(moe_last_error(), "expert 2"));
    z[2] = INFINITY;
    assert_int_equal(moe_router_topk(z, 1, 4, 2, 0, idx, sc), MOE_ERR_RANGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches_reference),
        cmocka_unit_test(ties_take_the_lower_expert),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
