/* kernels/cpu/portable/gemm.c — the plain-C micro-kernel and activation. */
#include <math.h>

#include "kernels/cpu/portable/portable.h"

enum { MR = 4 };

void moe_portable_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate)
{
    float acc[MR][MOE_TILE_N];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < MOE_TILE_N; j++) acc[i][j] = accumulate ? C[i * MOE_TILE_N + j] : 0.0f;
    for (int k = 0; k < K; k++) {
        const float *b0 = B0 + (size_t)k * MOE_PANEL, *b1 = B1 + (size_t)k * MOE_PANEL;
        for (int i = 0; i < MR; i++) {
            float a = A[(size_t)k * MR + i];
            for (int j = 0; j < MOE_PANEL; j++) {
                acc[i][j] += a * b0[j];
                acc[i][MOE_PANEL + j] += a * b1[j];
            }
        }
    }
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < MOE_TILE_N; j++) C[i * MOE_TILE_N + j] = acc[i][j];
}

void moe_portable_swiglu(int n, const float *g, const float *u, float *h)
{
    for (int j = 0; j < n; j++) h[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
}

const moe_cpu_kernels moe_kernels_portable = {
    .name = "portable",
    .panel_gemv = moe_portable_panel_gemv,
    .panel_unpack = moe_portable_panel_unpack,
    .gemm_tile = moe_portable_gemm_tile,
    .mr = MR,
    .swiglu = moe_portable_swiglu,
    .attn_tile = moe_portable_attn_tile,
    .attn_rows = moe_portable_attn_rows,
    .f32_to_f16 = moe_portable_f32_to_f16,
    .f16_to_f32 = moe_portable_f16_to_f32,
    .kv_q8_store = moe_portable_kv_q8_store,
    .kv_q8_widen = moe_portable_kv_q8_widen,
    .panel_gemv_i8 = moe_portable_panel_gemv_i8,
    .panel_gemm_i8 = moe_portable_panel_gemm_i8,
    .mr_i8 = 8,   /* any m works; the layer's tile */
};
