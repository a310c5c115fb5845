/* kernels/cpu/avx512/gemm.c — the AVX-512 GEMM micro-kernel (12 tokens × 32
 * rows in 24 zmm accumulators, one broadcast feeding two FMAs) and SwiGLU
 * with a vectorised exp. */
#include <immintrin.h>

#include "kernels/cpu/avx512/avx512.h"

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

/* e^v to about 2 ulp: v = n·ln2 + r, |r| ≤ ln2/2, e^r by its degree-6
 * Taylor polynomial, times 2^n with vscalefps (which also handles n large). */
static inline __m512 exp_ps(__m512 v)
{
    v = _mm512_max_ps(_mm512_min_ps(v, _mm512_set1_ps(88.5f)), _mm512_set1_ps(-88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(v, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), v);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

void moe_avx512_swiglu(int n, const float *g, const float *u, float *h)
{
    for (int j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + j), uv = _mm512_maskz_loadu_ps(m, u + j);
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
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
};
