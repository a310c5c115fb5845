/* kernels/cpu/avx2/panel_i8.c — quantized panels times int8 activations on
 * plain AVX2: vpmaddubsw (unsigned bytes × signed bytes, adjacent pairs
 * summed into int16) then vpmaddwd with ones (adjacent int16 pairs summed
 * into int32), the two steps of one AVX-512 VNNI vpdpbusd. The loops and the
 * epilogue are panel_i8.h's.
 *
 * vpmaddubsw saturates its int16 sums, so the operands are kept small
 * enough that no sum can reach ±32767 (activations are any int8, -128..127):
 *   - a code × activation pair sum: with codes 0..15, |c0·x0 + c1·x1| ≤
 *     2·15·128 = 3840. With 8-bit codes 0..255 taken whole it could be
 *     2·255·128 = 65280 (> 32767: wrong sums), so 8-bit codes are split into
 *     their nibbles, c = 16·hi + lo, both 0..15, and multiplied apart:
 *     Σ c·x = 16·Σ hi·x + Σ lo·x.
 *   - those int16 sums are added (vpaddw, which wraps) before widening: at
 *     most 8 per sum, ≤ 8·3840 = 30720 < 32767. Q4: the 8 nibble vectors of
 *     a step (4 words), one sum; Q8: the 4 low and the 4 high nibble
 *     vectors of a step, two sums (≤ 15360 each).
 *   - vpmaddwd then sums pairs into int32 (Q8's high sum times 16 there):
 *     exact, and a group's total, ≤ 128·255·128 < 2^22, fits int32.
 * So the integer sums are exact for any codes and activations; the tests
 * run the extremes (codes 0 and 15/255, activations -128 and 127).
 *
 * Cost per 4 words of one half (8 rows), per token: Q4 (32 inputs) 8
 * vpmaddubsw, 7 vpaddw, 1 vpmaddwd, 1 vpaddd, 8 broadcasts; Q8 (16 inputs)
 * 8 vpmaddubsw, 6 vpaddw, 2 vpmaddwd, 2 vpaddd, 4 broadcasts. The nibble
 * split (2 logic ops and a shift a word) is done once for all tokens of a
 * call. */
#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"

#define I8_MR MOE_AVX2_MR_I8
#define I8_MR_REG 8
#define I8_NAME(x) moe_avx2_##x

/* 8-bit codes: the low nibbles of word c in u[2c], the high ones in u[2c+1]. */
static inline __attribute__((always_inline)) void i8_prep_q8(const __m256i w[4], __m256i u[8])
{
    const __m256i nib = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        u[2 * c] = _mm256_and_si256(w[c], nib);
        u[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(w[c], 4), nib);
    }
}

static inline __attribute__((always_inline)) __m256i i8_dot_q4(__m256i acc, const __m256i u[8], const int8_t *x)
{
    __m256i t[4];
    for (int c = 0; c < 4; c++)
        t[c] = _mm256_add_epi16(_mm256_maddubs_epi16(u[2 * c], avx2_bcast4_i8(x + 8 * c)),
                                _mm256_maddubs_epi16(u[2 * c + 1], avx2_bcast4_i8(x + 8 * c + 4)));
    __m256i sum = _mm256_add_epi16(_mm256_add_epi16(t[0], t[1]), _mm256_add_epi16(t[2], t[3]));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(sum, _mm256_set1_epi16(1)));
}

static inline __attribute__((always_inline)) __m256i i8_dot_q8(__m256i acc, const __m256i u[8], const int8_t *x)
{
    __m256i lo[4], hi[4];
    for (int c = 0; c < 4; c++) {
        __m256i xc = avx2_bcast4_i8(x + 4 * c);
        lo[c] = _mm256_maddubs_epi16(u[2 * c], xc);
        hi[c] = _mm256_maddubs_epi16(u[2 * c + 1], xc);
    }
    __m256i l = _mm256_add_epi16(_mm256_add_epi16(lo[0], lo[1]), _mm256_add_epi16(lo[2], lo[3]));
    __m256i h = _mm256_add_epi16(_mm256_add_epi16(hi[0], hi[1]), _mm256_add_epi16(hi[2], hi[3]));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(l, _mm256_set1_epi16(1)));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(h, _mm256_set1_epi16(16)));
}

/* Two digits as int16 (panel_i8.h): vpmaddwd, the 8 products of a half
 * summed in int32 (exact, see there). */
static inline __attribute__((always_inline)) __m256i i8x2_half(__m256i acc, const __m256i v[4], const __m256i b[4])
{
    __m256i t = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(v[0], b[0]), _mm256_madd_epi16(v[1], b[1])),
                                 _mm256_add_epi32(_mm256_madd_epi16(v[2], b[2]), _mm256_madd_epi16(v[3], b[3])));
    return _mm256_add_epi32(acc, t);
}

#include "kernels/cpu/avx2/panel_i8.h"
