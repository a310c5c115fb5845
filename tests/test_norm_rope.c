/* tests/test_norm_rope.c — RMSNorm and rotate-half RoPE against double
 * references at odd sizes and far positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include <string.h>

#include "kernels/norm_rope.h"
#include "moe/runtime.h"
#include "support/testutil.h"

static void rmsnorm_matches_reference(void **state)
{
    (void)state;
    uint64_t rng = 0x4e0f;
    static const int ns[] = { 1, 7, 33, 2048, 4099 };
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        int n = ns[a];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        test_rand_floats(&rng, x, (size_t)n, -3, 3);
        test_rand_floats(&rng, w, (size_t)n, 0.5, 1.5);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double inv = 1.0 / sqrt(ss / n + 1e-5);
        moe_rmsnorm(n, x, w, 1e-5f, y);
        for (int i = 0; i < n; i++) {
            double ref = (double)w[i] * x[i] * inv;
            assert_true(fabs(y[i] - ref) <= 1e-6 * fabs(ref) + 1e-7);
        }
        moe_rmsnorm(n, x, w, 1e-5f, x); /* in place */
        for (int i = 0; i < n; i++) assert_true(x[i] == y[i]);
        free(x), free(w), free(y);
    }
}

static void rope_matches_reference(void **state)
{
    (void)state;
    uint64_t rng = 0x20be;
    static const int dims[] = { 2, 6, 64, 128 };
    static const int positions[] = { 0, 1, 17, 1000, 4095, 50000 };
    static const double thetas[] = { 10000.0, 500000.0 };
    for (size_t d = 0; d < 4; d++)
        for (size_t p = 0; p < 6; p++)
            for (size_t t = 0; t < 2; t++) {
                int hd = dims[d], h = hd / 2, pos = positions[p];
                float x[128], y[128], c[64], s[64];
                test_rand_floats(&rng, x, (size_t)hd, -2, 2);
                for (int i = 0; i < hd; i++) y[i] = x[i];
                moe_rope_angles(hd, thetas[t], pos, c, s);
                moe_rope_apply(hd, y, c, s);
                for (int i = 0; i < h; i++) {
                    /* Hugging Face's angle: float32 inv_freq times the
                     * position in float32; then exact trigonometry */
                    float inv = 1.0f / powf((float)thetas[t], (float)(2 * i) / (float)hd);
                    double ang = (double)((float)pos * inv);
                    double r0 = x[i] * cos(ang) - x[i + h] * sin(ang), r1 = x[i + h] * cos(ang) + x[i] * sin(ang);
                    double tol = 1e-6 * (fabs(x[i]) + fabs(x[i + h])) * (1 + ang * 1e-1) + 1e-7;
                    assert_true(fabs(y[i] - r0) <= tol);
                    assert_true(fabs(y[i + h] - r1) <= tol);
                    /* and the true angle, within float32 rounding of the exponent
                     * (times ln θ) and of the product */
                    double exact = pos * pow(thetas[t], -2.0 * i / hd);
                    assert_true(fabs(ang - exact) <= 1e-6 * exact + 1e-12);
                }
                if (pos == 0)
                    for (int i = 0; i < hd; i++) assert_true(y[i] == x[i]);
            }
}

/* The row-parallel forms give the per-row results bit for bit, below and
 * above the row count where threads join, on 1 and 2 threads. */
static void rows_match_single(void **state)
{
    (void)state;
    uint64_t rng = 99;
    enum { N = 3 * 20, HD = 20 };
    static const int ROWS[] = { 1, 5, 40 };
    for (int threads = 1; threads <= 2; threads++) {
        assert_int_equal(moe_set_num_threads(threads), MOE_OK);
        for (size_t i = 0; i < sizeof ROWS / sizeof ROWS[0]; i++) {
            int rows = ROWS[i];
            float *x = malloc(sizeof(float) * rows * N), *want = malloc(sizeof(float) * rows * N);
            float *got = malloc(sizeof(float) * rows * N), w[N];
            float *c = malloc(sizeof(float) * rows * HD / 2), *s = malloc(sizeof(float) * rows * HD / 2);
            test_rand_floats(&rng, x, (size_t)rows * N, -2, 2);
            test_rand_floats(&rng, w, N, 0.5, 1.5);
            for (int r = 0; r < rows; r++) moe_rmsnorm(N, x + r * N, w, 1e-5f, want + r * N);
            moe_rmsnorm_rows(rows, N, x, w, 1e-5f, got);
            assert_memory_equal(got, want, sizeof(float) * rows * N);
            for (int r = 0; r < rows; r++) moe_rope_angles(HD, 10000.0, 7 * r + 3, c + r * HD / 2, s + r * HD / 2);
            memcpy(got, x, sizeof(float) * rows * N);
            memcpy(want, x, sizeof(float) * rows * N);
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < N / HD; h++) moe_rope_apply(HD, want + r * N + h * HD, c + r * HD / 2, s + r * HD / 2);
            moe_rope_rows(rows, N / HD, HD, got, c, s);
            assert_memory_equal(got, want, sizeof(float) * rows * N);
            free(x), free(want), free(got), free(c), free(s);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rmsnorm_matches_reference),
        cmocka_unit_test(rope_matches_reference),
        cmocka_unit_test(rows_match_single),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
