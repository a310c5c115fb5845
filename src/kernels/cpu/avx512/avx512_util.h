/* kernels/cpu/avx512/avx512_util.h — small inline helpers shared by the
 * AVX-512 kernels (included only by files compiled for AVX-512). */
#ifndef MOE_KERNELS_AVX512_UTIL_H
#define MOE_KERNELS_AVX512_UTIL_H

#include <immintrin.h>

#include "kernels/kernels.h"

/* The first nr of 16 lanes. */
static inline __mmask16 avx512_lanes(int nr) { return (__mmask16)((1u << nr) - 1u); }

/* 16 values of dtype t at base[i..] as floats, lanes beyond the mask zero. */
static inline __attribute__((always_inline)) __m512 avx512_load_dtype(moe_dtype t, const void *base, size_t i,
                                                                     __mmask16 m)
{
    if (t == MOE_DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)base + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i);
    if (t == MOE_DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* e^v to about 2 ulp: v = n·ln2 + r, |r| ≤ ln2/2, e^r by its degree-6
 * Taylor polynomial, times 2^n with vscalefps (which also handles n large).
 * v is clamped to [-88, 88.5]: e^-inf gives about 6e-39, not 0. */
static inline __m512 avx512_exp_ps(__m512 v)
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

/* Runs `call` with m replaced by the constant 1, 2, 3 or 4, so that kernels
 * written for any token count keep their accumulators in registers. */
#define AVX512_WITH_M(call)                          \
    switch (m) {                                     \
    case 1: { enum { m = 1 }; call; } break;         \
    case 2: { enum { m = 2 }; call; } break;         \
    case 3: { enum { m = 3 }; call; } break;         \
    default: { enum { m = 4 }; call; } break;        \
    }

#endif
