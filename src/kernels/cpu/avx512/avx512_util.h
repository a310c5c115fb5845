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
