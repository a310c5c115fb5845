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

void moe_pack_act_i8x2(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                       const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s)
{
    for (int i = 0; i < m; i++) {
        for (int b = 0; b < K / 8; b++) {
            int16_t *run = a + ((size_t)b * m + i) * 8;
            for (int j = 0; j < 8; j++) {
                int at = moe_act_i8_index(f, 8 * b + j);
                run[moe_act_i8x2_pos(f, j)] = (int16_t)(MOE_I8_RESIDUAL_STEPS * xq[i][at] + xr[i][at]);
            }
        }
        for (int g = 0; g < K / group; g++) {
            d[(size_t)g * m + i] = dx[i][g];
            s[(size_t)g * m + i] = xsum[i][g];
        }
    }
}

void moe_group_sums(int K, int group, const float *x, float *sums)
{
    for (int g = 0; g < K / group; g++) {
        float s = 0.0f;
        for (int k = g * group; k < (g + 1) * group; k++) s += x[k];
        sums[g] = s;
    }
}
