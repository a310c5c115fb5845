/* kernels/cpu/avx2/avx2_util.h — small inline helpers shared by the AVX2
 * kernels (included only by files compiled for AVX2). */
#ifndef MOE_KERNELS_AVX2_UTIL_H
#define MOE_KERNELS_AVX2_UTIL_H

#include <immintrin.h>
#include <stdint.h>

#include "moe/dtype.h"

/* 8 values of dtype t (F32, F16 or BF16) at base[i..] as floats. */
static inline __attribute__((always_inline)) __m256 avx2_load_dtype(moe_dtype t, const void *base, size_t i)
{
    if (t == MOE_DTYPE_F32) return _mm256_loadu_ps((const float *)base + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)base + i));
    if (t == MOE_DTYPE_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* Four int8 values at p as one dword broadcast to all 8 lanes. */
static inline __m256i avx2_bcast4_i8(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* e^v: v = n·ln2 + r, degree-6 polynomial for e^r, 2^n built in the exponent
 * bits (v clamped to [-87, 88] so n stays a normal exponent: e^-inf gives
 * about 1.6e-38, not 0). */
static inline __m256 avx2_exp_ps(__m256 v)
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

/* Lanes i < n of 8 as an all-ones mask for maskload/maskstore. */
static inline __m256i avx2_lanes(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#endif
