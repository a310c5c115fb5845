/* kernels/cpu/avx2/gemm.c — the AVX2 GEMM micro-kernel (4 tokens × 32 rows,
 * one 16-row panel at a time in 8 ymm accumulators) and SwiGLU. */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"

enum { MR = MOE_AVX2_MR };

static inline void tile_half(int K, const float *A, const float *B, float *C, int accumulate)
{
    __m256 c[MR][2];
    for (int i = 0; i < MR; i++) {
        c[i][0] = accumulate ? _mm256_loadu_ps(C + i * MOE_TILE_N) : _mm256_setzero_ps();
        c[i][1] = accumulate ? _mm256_loadu_ps(C + i * MOE_TILE_N + 8) : _mm256_setzero_ps();
    }
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(B + (size_t)k * MOE_PANEL), b1 = _mm256_loadu_ps(B + (size_t)k * MOE_PANEL + 8);
#pragma GCC unroll 4
        for (int i = 0; i < MR; i++) {
            __m256 a = _mm256_set1_ps(A[(size_t)k * MR + i]);
            c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(C + i * MOE_TILE_N, c[i][0]);
        _mm256_storeu_ps(C + i * MOE_TILE_N + 8, c[i][1]);
    }
}

void moe_avx2_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate)
{
    tile_half(K, A, B0, C, accumulate);
    tile_half(K, A, B1, C + MOE_PANEL, accumulate);
}

static inline __m256 swiglu8(__m256 gv, __m256 uv)
{
    __m256 e = avx2_exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    return _mm256_mul_ps(silu, uv);
}

void moe_avx2_swiglu(int n, const float *g, const float *u, float *h)
{
    int j = 0;
    /* whole vectors with plain loads and stores: vmaskmovps stores are
     * microcoded and slow on AMD Zen (the fused layer calls this on every
     * 16-row panel of every pair) */
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(h + j, swiglu8(_mm256_loadu_ps(g + j), _mm256_loadu_ps(u + j)));
    if (j < n) {
        __m256i m = avx2_lanes(n - j);
        _mm256_maskstore_ps(h + j, m, swiglu8(_mm256_maskload_ps(g + j, m), _mm256_maskload_ps(u + j, m)));
    }
}

const moe_cpu_kernels moe_kernels_avx2 = {
    .name = "avx2",
    .panel_gemv = moe_avx2_panel_gemv,
    .panel_unpack = moe_avx2_panel_unpack,
    .gemm_tile = moe_avx2_gemm_tile,
    .mr = MR,
    .swiglu = moe_avx2_swiglu,
    .attn_tile = moe_avx2_attn_tile,
    .attn_rows = moe_avx2_attn_rows,
    .f32_to_f16 = moe_avx2_f32_to_f16,
    .f16_to_f32 = moe_avx2_f16_to_f32,
    .kv_q8_store = moe_avx2_kv_q8_store,
    .kv_q8_widen = moe_avx2_kv_q8_widen,
    .panel_gemv_i8 = moe_avx2_panel_gemv_i8,
    .panel_gemm_i8 = moe_avx2_panel_gemm_i8,
    .mr_i8 = MOE_AVX2_MR_I8,
    .panel_gemv_i8x2 = moe_avx2_panel_gemv_i8x2,
    .panel_gemv_i8x2_joined = moe_avx2_panel_gemv_i8x2_joined,
    .panel_gemm_i8x2 = moe_avx2_panel_gemm_i8x2,
    .quantize_act_i8 = moe_avx2_quantize_act_i8,
    .pack_act_i8x2 = moe_avx2_pack_act_i8x2,
};
