/* kernels/cpu/avx512/gemm.c — the AVX-512 GEMM micro-kernel (12 tokens × 32
 * rows in 24 zmm accumulators, one broadcast feeding two FMAs) and SwiGLU
 * with a vectorised exp. */
#include <immintrin.h>

#include "kernels/cpu/avx512/avx512.h"
#include "kernels/cpu/avx512/avx512_util.h"

enum { MR = MOE_AVX512_MR };

void moe_avx512_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate)
{
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        c0[i] = accumulate ? _mm512_loadu_ps(C + i * MOE_TILE_N) : _mm512_setzero_ps();
        c1[i] = accumulate ? _mm512_loadu_ps(C + i * MOE_TILE_N + MOE_PANEL) : _mm512_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(B0 + (size_t)k * MOE_PANEL);
        __m512 b1 = _mm512_loadu_ps(B1 + (size_t)k * MOE_PANEL);
        const float *a = A + (size_t)k * MR;
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < MR; i++) {
        _mm512_storeu_ps(C + i * MOE_TILE_N, c0[i]);
        _mm512_storeu_ps(C + i * MOE_TILE_N + MOE_PANEL, c1[i]);
    }
}

void moe_avx512_swiglu(int n, const float *g, const float *u, float *h)
{
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + j), uv = _mm512_maskz_loadu_ps(m, u + j);
        __m512 e = avx512_exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 silu = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(h + j, m, _mm512_mul_ps(silu, uv));
    }
}

const moe_cpu_kernels moe_kernels_avx512 = {
    .name = "avx512",
    .panel_gemv = moe_avx512_panel_gemv,
    .panel_unpack = moe_avx512_panel_unpack,
    .gemm_tile = moe_avx512_gemm_tile,
    .mr = MR,
    .swiglu = moe_avx512_swiglu,
    .attn_tile = moe_avx512_attn_tile,
    .attn_rows = moe_avx512_attn_rows,
    .f32_to_f16 = moe_avx512_f32_to_f16,
    .f16_to_f32 = moe_avx512_f16_to_f32,
    .kv_q8_store = moe_avx512_kv_q8_store,
    .kv_q8_widen = moe_avx512_kv_q8_widen,
};
