/* kernels/activations.c — preparing activation vectors for the kernels, the
 * same for every ISA: packing token tiles for the GEMM, group sums for
 * quantized weights, int8 quantization for the int8 dot products and the
 * packing of int8 token tiles (and of int8x2 ones, joined into int16). */
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"

void moe_pack_a(int K, int m, int mr, const float *const *x, float *dst)
{
    /* row by row: each source row is read once, in order */
    for (int i = 0; i < mr; i++)
        for (int k = 0; k < K; k++) dst[(size_t)k * mr + i] = i < m ? x[i][k] : 0.0f;
}

void moe_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx)
{
    for (int g = 0; g < K / group; g++) {
        float amax = 0.0f;
        for (int k = g * group; k < (g + 1) * group; k++) amax = fmaxf(amax, fabsf(x[k]));
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        dx[g] = d;
        for (int k = g * group; k < (g + 1) * group; k++)
            xq[moe_act_i8_index(f, k)] = (int8_t)lrintf(x[k] * inv);
    }
}

void moe_quantize_act_i8_residual(moe_wformat f, int K, int group, const float *x, const int8_t *xq,
                                  const float *dx, int8_t *xr)
{
    for (int g = 0; g < K / group; g++) {
        float inv = dx[g] > 0.0f ? MOE_I8_RESIDUAL_STEPS / dx[g] : 0.0f;
        for (int k = g * group; k < (g + 1) * group; k++) {
            int i = moe_act_i8_index(f, k);
            float r = x[k] - dx[g] * (float)xq[i];   /* within ±dx/2 (a little more after rounding) */
            long v = lrintf(r * inv);
            xr[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
    }
}

void moe_pack_act_i8(int K, int group, int m, const int8_t *const *xq, const float *const *dx,
                     const float *const *xsum, int8_t *q, float *d, float *s)
{
    /* token by token: each source row is read once, in order */
    for (int i = 0; i < m; i++) {
        for (int b = 0; b < K / 32; b++) memcpy(q + ((size_t)b * m + i) * 32, xq[i] + (size_t)b * 32, 32);
        for (int g = 0; g < K / group; g++) {
            d[(size_t)g * m + i] = dx[i][g];
            s[(size_t)g * m + i] = xsum[i][g];
        }
    }
}

/* Token i's runs of 8 joined digits, with perm[p] the input (within the
 * run, in moe_quantize_act_i8's order) that lands at position p: a constant
 * table per format, so the loop over a run unrolls into plain moves. */
static inline void pack_runs_i8x2(int K, int m, int i, const int8_t *xq, const int8_t *xr, const int perm[8],
                                  int16_t *a)
{
    for (int b = 0; b < K / 8; b++) {
        int16_t *run = a + ((size_t)b * m + i) * 8;
        const int8_t *q = xq + 8 * b, *r = xr + 8 * b;
#pragma GCC unroll 8
        for (int p = 0; p < 8; p++) run[p] = (int16_t)(MOE_I8_RESIDUAL_STEPS * q[perm[p]] + r[perm[p]]);
    }
}

void moe_pack_act_i8x2(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                       const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s)
{
    /* perm[moe_act_i8x2_pos(f, j)] = moe_act_i8_index(f, j) for j < 8 */
    static const int PERM_Q4[8] = { 0, 2, 4, 6, 1, 3, 5, 7 }, PERM_Q8[8] = { 0, 2, 1, 3, 4, 6, 5, 7 };
    for (int i = 0; i < m; i++) {
        if (f == MOE_WF_Q4) pack_runs_i8x2(K, m, i, xq[i], xr[i], PERM_Q4, a);
        else pack_runs_i8x2(K, m, i, xq[i], xr[i], PERM_Q8, a);
        for (int g = 0; d && g < K / group; g++) {
            d[(size_t)g * m + i] = dx[i][g];
            s[(size_t)g * m + i] = xsum[i][g];
        }
    }
}

void moe_join_row_i8x2(const moe_cpu_kernels *k, moe_wformat f, int K, int group, const int8_t *xq,
                       const int8_t *xr, int16_t *a)
{
    (k->pack_act_i8x2 ? k->pack_act_i8x2 : moe_pack_act_i8x2)(f, K, group, 1, &xq, &xr, NULL, NULL, a, NULL, NULL);
}

void moe_group_sums(int K, int group, const float *x, float *sums)
{
    for (int g = 0; g < K / group; g++) {
        float s = 0.0f;
        for (int k = g * group; k < (g + 1) * group; k++) s += x[k];
        sums[g] = s;
    }
}
