/* kernels/cpu/avx2/gemm.c — the AVX2 GEMM micro-kernel (4 tokens × 32 rows,
 * one 16-row panel at a time in 8 ymm accumulators) and SwiGLU. */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"

enum { MR = 4 };

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

/* e^v: v = n·ln2 + r, degree-6 polynomial for e^r, 2^n built in the exponent
 * bits (v clamped so n stays a normal exponent). */
static inline __m256 exp_ps(__m256 v)
{
    v = _mm256_max_ps(_mm256_min_ps(v, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), v);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723212e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void moe_avx2_swiglu(int n, const float *g, const float *u, float *h)
{
    for (int j = 0; j < n; j += 8) {
        int left = n - j;
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        __m256 gv = _mm256_maskload_ps(g + j, m), uv = _mm256_maskload_ps(u + j, m);
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        _mm256_maskstore_ps(h + j, m, _mm256_mul_ps(silu, uv));
    }
}

const moe_cpu_kernels moe_kernels_avx2 = {
    .name = "avx2",
    .panel_gemv = moe_avx2_panel_gemv,
    .panel_unpack = moe_avx2_panel_unpack,
    .gemm_tile = moe_avx2_gemm_tile,
    .mr = MR,
    .swiglu = moe_avx2_swiglu,
};
