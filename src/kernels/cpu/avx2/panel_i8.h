/* kernels/cpu/avx2/panel_i8.h — quantized panels times int8 activations on
 * 256-bit vectors, written once for two kernel sets: AVX2 (vpmaddubsw and
 * vpmaddwd, avx2/panel_i8.c) and AVX-VNNI (256-bit vpdpbusd,
 * avxvnni/panel_i8.c). Here are the loops, the data layout and the float
 * epilogue; the including file supplies the integer dot products of a step.
 *
 * A group's block holds its code words [words][16] (kernels.h): rows 0..7 of
 * a word are one ymm (a "half"), rows 8..15 the next. Each dword lane is one
 * row's word, so a step that multiplies a word's bytes with four activation
 * bytes broadcast to every lane, four products summed a lane, needs no
 * horizontal sums. A step takes 4 words of one half, split by
 * i8_prep_q4 / i8_prep_q8 into 8 vectors of unsigned bytes (once for all
 * tokens of the call), then each token's activations of those words:
 *   Q4: 4 words = 32 inputs. u[2c] holds the low nibbles of word c (its
 *       inputs 0,2,4,6, one per byte), u[2c+1] the high nibbles (1,3,5,7):
 *       matched with the token's bytes 8c..8c+3 and 8c+4..8c+7, the order
 *       moe_quantize_act_i8 writes for Q4.
 *   Q8: 4 words = 16 inputs, matched with the token's bytes 4c..4c+3; what
 *       u holds is the includer's (see its i8_prep_q8).
 * The includer defines, before including this file:
 *   static void i8_prep_q8(const __m256i w[4], __m256i u[8]);
 *   static __m256i i8_dot_q4(__m256i acc, const __m256i u[8], const int8_t *x);  x: 32 bytes
 *   static __m256i i8_dot_q8(__m256i acc, const __m256i u[8], const int8_t *x);  x: 16 bytes
 * each dot returning acc + Σ code·activation over the step in every row's
 * lane, exactly (for any int8 activations); I8_MR, the most tokens a tile
 * call takes; and I8_NAME(x), the set's name for x: I8_NAME(panel_gemv_i8)
 * and I8_NAME(panel_gemm_i8) are the table's entries defined here.
 *
 * Per group and half, each token's integer sum is exact; then
 * res += (scale·dx)·float(sum) and res += bias·xsum, as two FMAs: the
 * avx512vnni kernels' epilogue, the same for the matrix-vector call and the
 * tile, so a token gets the same bits from both. A partial panel (nr < 16,
 * the last of a projection) goes to the portable kernels, as the float AVX2
 * kernels do: AVX2 has no masked 16-bit loads for its scales. */
#ifndef MOE_KERNELS_AVX2_PANEL_I8_H
#define MOE_KERNELS_AVX2_PANEL_I8_H

#include <immintrin.h>

#include "kernels/cpu/avx2/avx2_util.h"
#include "kernels/cpu/portable/portable.h"

/* The low and high nibbles of 4 words of 4-bit codes, as bytes 0..15. */
static inline __attribute__((always_inline)) void i8_prep_q4(const __m256i w[4], __m256i u[8])
{
    const __m256i nib = _mm256_set1_epi8(0x0F);
    for (int c = 0; c < 4; c++) {
        u[2 * c] = _mm256_and_si256(w[c], nib);
        u[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(w[c], 4), nib);
    }
}

/* Token i's activation byte for input k (in moe_quantize_act_i8's order):
 * from its own row (matrix-vector: xq[i] + k), or from the tile packed by
 * moe_pack_act_i8 (32-byte chunk k/32 of token i at ((k/32)·m + i)·32).
 * A step's bytes never cross a chunk (steps start at multiples of 16). */
static inline __attribute__((always_inline)) const int8_t *i8_token_at(int tile, const int8_t *const *xq,
                                                                      const int8_t *q, int m, int i, int k)
{
    return tile ? q + (((size_t)(k >> 5) * m + i) << 5) + (k & 31) : xq[i] + k;
}

/* out[i][0..16) for i < m, all compile-time constants but the data. */
static inline __attribute__((always_inline)) void i8_panel(int bits, moe_dtype st, int tile, const int m,
                                                           const moe_panel_format *f, const moe_panel *p,
                                                           const int8_t *const *xq, const float *const *dx,
                                                           const float *const *xsum, const int8_t *q,
                                                           const float *d, const float *s, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs, words = gs * bits / 32, step_k = 4 * 32 / bits;
    __m256 res[I8_MR][2];
#pragma GCC unroll 16
    for (int i = 0; i < I8_MR; i++) res[i][0] = res[i][1] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        for (int h = 0; h < 2; h++) {
            __m256i acc[I8_MR];
#pragma GCC unroll 16
            for (int i = 0; i < I8_MR; i++) acc[i] = _mm256_setzero_si256();
            for (int c = 0, k = g * gs; c < words; c += 4, k += step_k) {
                __m256i w[4], u[8];
                for (int j = 0; j < 4; j++)
                    w[j] = _mm256_loadu_si256((const __m256i *)(codes + (size_t)(c + j) * MOE_PANEL + 8 * h));
                if (bits == 4) i8_prep_q4(w, u);
                else i8_prep_q8(w, u);
#pragma GCC unroll 16
                for (int i = 0; i < I8_MR; i++)
                    if (i < m) {
                        const int8_t *x = i8_token_at(tile, xq, q, m, i, k);
                        acc[i] = bits == 4 ? i8_dot_q4(acc[i], u, x) : i8_dot_q8(acc[i], u, x);
                    }
            }
            __m256 sc = avx2_load_dtype(st, moe_panel_group(p, p->scales, g), (size_t)8 * h);
            __m256 b = avx2_load_dtype(st, moe_panel_group(p, p->biases, g), (size_t)8 * h);
#pragma GCC unroll 16
            for (int i = 0; i < I8_MR; i++)
                if (i < m) {
                    float di = tile ? d[(size_t)g * m + i] : dx[i][g], si = tile ? s[(size_t)g * m + i] : xsum[i][g];
                    __m256 sd = _mm256_mul_ps(sc, _mm256_set1_ps(di));
                    res[i][h] = _mm256_fmadd_ps(sd, _mm256_cvtepi32_ps(acc[i]), res[i][h]);
                    res[i][h] = _mm256_fmadd_ps(b, _mm256_set1_ps(si), res[i][h]);
                }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < I8_MR; i++)
        if (i < m) {
            _mm256_storeu_ps(out[i], res[i][0]);
            _mm256_storeu_ps(out[i] + 8, res[i][1]);
        }
}

/* One function per code width and scale dtype, m made a constant. */
#define I8_CASE(M, call) \
    case M: { enum { m = M }; call; } break;
#define I8_WITH_M4(call) \
    switch (m) { I8_CASE(1, call) I8_CASE(2, call) I8_CASE(3, call) I8_CASE(4, call) default: break; }
#define I8_WITH_M12(call)                                                                                   \
    switch (m) {                                                                                            \
        I8_CASE(1, call) I8_CASE(2, call) I8_CASE(3, call) I8_CASE(4, call) I8_CASE(5, call) I8_CASE(6, call) \
        I8_CASE(7, call) I8_CASE(8, call) I8_CASE(9, call) I8_CASE(10, call) I8_CASE(11, call)             \
        I8_CASE(12, call) default: break;                                                                   \
    }
_Static_assert(MOE_GEMV_MAX_M == 4 && I8_MR >= 4 && I8_MR <= 12, "I8_WITH_M4/M12 list the token counts");

#define I8_DEFINE(bits, st, sfx)                                                                                 \
    static void I8_NAME(gemv_##sfx)(const moe_panel_format *f, const moe_panel *p, int m,                        \
                                    const int8_t *const *xq, const float *const *dx, const float *const *xsum,    \
                                    float *const *out)                                                           \
    {                                                                                                            \
        I8_WITH_M4(i8_panel(bits, st, 0, m, f, p, xq, dx, xsum, NULL, NULL, NULL, out))                           \
    }                                                                                                            \
    static void I8_NAME(gemm_##sfx)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,       \
                                    const float *d, const float *s, float *const *out)                           \
    {                                                                                                            \
        if (m <= I8_MR) I8_WITH_M12(i8_panel(bits, st, 1, m, f, p, NULL, NULL, NULL, q, d, s, out))              \
    }
I8_DEFINE(4, MOE_DTYPE_F32, q4_f32)
I8_DEFINE(4, MOE_DTYPE_F16, q4_f16)
I8_DEFINE(4, MOE_DTYPE_BF16, q4_bf16)
I8_DEFINE(8, MOE_DTYPE_F32, q8_f32)
I8_DEFINE(8, MOE_DTYPE_F16, q8_f16)
I8_DEFINE(8, MOE_DTYPE_BF16, q8_bf16)

/* The kernel for a panel format: 0 Q4, 1 Q8 by scale dtype F32, F16, BF16. */
static int i8_variant(const moe_panel_format *f)
{
    int s = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    return (f->fmt == MOE_WF_Q8 ? 3 : 0) + s;
}

void I8_NAME(panel_gemv_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                   const float *const *dx, const float *const *xsum, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *const *,
                       const float *const *, const float *const *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemv_q4_f32), I8_NAME(gemv_q4_f16), I8_NAME(gemv_q4_bf16),
                                      I8_NAME(gemv_q8_f32), I8_NAME(gemv_q8_f16), I8_NAME(gemv_q8_bf16) };
    if (p->nr != MOE_PANEL) moe_portable_panel_gemv_i8(f, p, m, xq, dx, xsum, out);
    else by_variant[i8_variant(f)](f, p, m, xq, dx, xsum, out);
}

void I8_NAME(panel_gemm_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                   const float *d, const float *s, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *, const float *,
                       const float *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemm_q4_f32), I8_NAME(gemm_q4_f16), I8_NAME(gemm_q4_bf16),
                                      I8_NAME(gemm_q8_f32), I8_NAME(gemm_q8_f16), I8_NAME(gemm_q8_bf16) };
    if (p->nr != MOE_PANEL) moe_portable_panel_gemm_i8(f, p, m, q, d, s, out);
    else by_variant[i8_variant(f)](f, p, m, q, d, s, out);
}

#endif
