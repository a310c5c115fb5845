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
 *   static __m256i i8x2_half(__m256i acc, const __m256i v[4], const __m256i b[4]);
 *     acc + Σ_j v[j]·b[j] as int16 pairs summed into int32 (vpmaddwd), for
 *     the two-digit kernels below (v: code pairs, b: activation pairs);
 * each dot returning acc + Σ code·activation over the step in every row's
 * lane, exactly (for any int8 activations); I8_MR, the most tokens a tile
 * call takes (the table's mr_i8, up to MOE_TILE_MAX_M); I8_MR_REG (≤ 12),
 * the tokens whose single-digit sums stay in registers, a tile of more
 * taken in parts of that many; and I8_NAME(x), the set's name for x:
 * I8_NAME(panel_gemv_i8) and I8_NAME(panel_gemm_i8) are the table's entries
 * defined here.
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

/* gcc's -O3 unroll-and-jam runs two steps of a token loop at once: twice
 * the code vectors, more than the registers, read from the stack for every
 * token (the two-digit kernel lost a fifth of its speed to that). */
#pragma GCC optimize("no-loop-unroll-and-jam")

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
 * moe_pack_act_i8 (32-byte chunk k/32 of token i at ((k/32)·stride + i)·32,
 * stride the tile's token count). A step's bytes never cross a chunk (steps
 * start at multiples of 16). */
static inline __attribute__((always_inline)) const int8_t *i8_token_at(int tile, const int8_t *const *xq,
                                                                      const int8_t *q, int stride, int i, int k)
{
    return tile ? q + (((size_t)(k >> 5) * stride + i) << 5) + (k & 31) : xq[i] + k;
}

/* out[i][0..16) for i < m, all compile-time constants but the data; a
 * tile's tokens i of stride (q, d and s at the first of them). */
static inline __attribute__((always_inline)) void i8_panel(int bits, moe_dtype st, int tile, const int m, int stride,
                                                           const moe_panel_format *f, const moe_panel *p,
                                                           const int8_t *const *xq, const float *const *dx,
                                                           const float *const *xsum, const int8_t *q,
                                                           const float *d, const float *s, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs, words = gs * bits / 32, step_k = 4 * 32 / bits;
    __m256 res[I8_MR_REG][2];
#pragma GCC unroll 16
    for (int i = 0; i < I8_MR_REG; i++) res[i][0] = res[i][1] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        for (int h = 0; h < 2; h++) {
            __m256i acc[I8_MR_REG];
#pragma GCC unroll 16
            for (int i = 0; i < I8_MR_REG; i++) acc[i] = _mm256_setzero_si256();
            for (int c = 0, k = g * gs; c < words; c += 4, k += step_k) {
                __m256i w[4], u[8];
                for (int j = 0; j < 4; j++)
                    w[j] = _mm256_loadu_si256((const __m256i *)(codes + (size_t)(c + j) * MOE_PANEL + 8 * h));
                if (bits == 4) i8_prep_q4(w, u);
                else i8_prep_q8(w, u);
#pragma GCC unroll 16
                for (int i = 0; i < I8_MR_REG; i++)
                    if (i < m) {
                        const int8_t *x = i8_token_at(tile, xq, q, stride, i, k);
                        acc[i] = bits == 4 ? i8_dot_q4(acc[i], u, x) : i8_dot_q8(acc[i], u, x);
                    }
            }
            __m256 sc = avx2_load_dtype(st, moe_panel_group(p, p->scales, g), (size_t)8 * h);
            __m256 b = avx2_load_dtype(st, moe_panel_group(p, p->biases, g), (size_t)8 * h);
#pragma GCC unroll 16
            for (int i = 0; i < I8_MR_REG; i++)
                if (i < m) {
                    float di = tile ? d[(size_t)g * stride + i] : dx[i][g], si = tile ? s[(size_t)g * stride + i] : xsum[i][g];
                    __m256 sd = _mm256_mul_ps(sc, _mm256_set1_ps(di));
                    res[i][h] = _mm256_fmadd_ps(sd, _mm256_cvtepi32_ps(acc[i]), res[i][h]);
                    res[i][h] = _mm256_fmadd_ps(b, _mm256_set1_ps(si), res[i][h]);
                }
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < I8_MR_REG; i++)
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
_Static_assert(MOE_GEMV_MAX_M == 4 && I8_MR_REG >= 4 && I8_MR_REG <= 12, "I8_WITH_M4/M12 list the token counts");
_Static_assert(I8_MR >= I8_MR_REG && (int)I8_MR <= (int)MOE_TILE_MAX_M, "a tile is taken in parts of I8_MR_REG tokens");

#define I8_DEFINE(bits, st, sfx)                                                                                 \
    static void I8_NAME(gemv_##sfx)(const moe_panel_format *f, const moe_panel *p, int m,                        \
                                    const int8_t *const *xq, const float *const *dx, const float *const *xsum,    \
                                    float *const *out)                                                           \
    {                                                                                                            \
        I8_WITH_M4(i8_panel(bits, st, 0, m, 0, f, p, xq, dx, xsum, NULL, NULL, NULL, out))                        \
    }                                                                                                            \
    static void I8_NAME(gemm_##sfx)(const moe_panel_format *f, const moe_panel *p, int mt, const int8_t *q,      \
                                    const float *d, const float *s, float *const *out)                           \
    {                                                                                                            \
        for (int i0 = 0; i0 < mt && mt <= I8_MR; i0 += I8_MR_REG) {                                              \
            int m = mt - i0 < I8_MR_REG ? mt - i0 : I8_MR_REG;                                                   \
            I8_WITH_M12(i8_panel(bits, st, 1, m, mt, f, p, NULL, NULL, NULL, q + 32 * i0, d + i0, s + i0,        \
                                 out + i0))                                                                      \
        }                                                                                                        \
    }
I8_DEFINE(4, MOE_DTYPE_F32, q4_f32)
I8_DEFINE(4, MOE_DTYPE_F16, q4_f16)
I8_DEFINE(4, MOE_DTYPE_BF16, q4_bf16)
I8_DEFINE(8, MOE_DTYPE_F32, q8_f32)
I8_DEFINE(8, MOE_DTYPE_F16, q8_f16)
I8_DEFINE(8, MOE_DTYPE_BF16, q8_bf16)

/* The kernel for a panel: 0..2 Q4, 3..5 Q8, by scale dtype F32, F16, BF16;
 * -1 where the portable one serves: a partial panel, or a group that is no
 * multiple of 32 or larger than max_group. */
static int i8_variant(const moe_panel_format *f, const moe_panel *p, int max_group)
{
    if (p->nr != MOE_PANEL || f->group_size % 32 || f->group_size > max_group) return -1;
    int s = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    return (f->fmt == MOE_WF_Q8 ? 3 : 0) + s;
}

/* Single digits: a group's sum is below 128·255·group, int32 for any
 * group a checkpoint has. */
enum { I8_MAX_GROUP = 4096 };

void I8_NAME(panel_gemv_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                   const float *const *dx, const float *const *xsum, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *const *,
                       const float *const *, const float *const *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemv_q4_f32), I8_NAME(gemv_q4_f16), I8_NAME(gemv_q4_bf16),
                                      I8_NAME(gemv_q8_f32), I8_NAME(gemv_q8_f16), I8_NAME(gemv_q8_bf16) };
    int v = i8_variant(f, p, I8_MAX_GROUP);
    if (v < 0) moe_portable_panel_gemv_i8(f, p, m, xq, dx, xsum, out);
    else by_variant[v](f, p, m, xq, dx, xsum, out);
}

void I8_NAME(panel_gemm_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                   const float *d, const float *s, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *, const float *,
                       const float *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemm_q4_f32), I8_NAME(gemm_q4_f16), I8_NAME(gemm_q4_bf16),
                                      I8_NAME(gemm_q8_f32), I8_NAME(gemm_q8_f16), I8_NAME(gemm_q8_bf16) };
    int v = i8_variant(f, p, I8_MAX_GROUP);
    if (v < 0) moe_portable_panel_gemm_i8(f, p, m, q, d, s, out);
    else by_variant[v](f, p, m, q, d, s, out);
}

/* ---- two digits in one call (panel_gemv_i8x2, panel_gemm_i8x2) --------
 *
 * The two int8 digits of an activation make one int16, a = 254·xq + xr
 * (|a| ≤ 254·128 + 127 = 32639), and codes widened to int16 pairs meet
 * those with vpmaddwd: c·a summed in pairs into int32, one instruction per
 * 16 multiply-adds of both digits, where two int8 passes take vpmaddubsw
 * and vpmaddwd twice over (Q4: 20 multiplier instructions per 256
 * multiply-adds against 16; Q8, whose codes vpmaddubsw cannot take whole:
 * 40 against 16). Exact: a product is at most 255·32639 < 2^23, a group's
 * sum (at most 128 inputs) < 2^30.
 *
 * The digits are joined into int16 pairs in the codes' order, for a tile
 * once for all its panels (moe_pack_act_i8x2; joined here for each panel,
 * that was a quarter of the kernel's time), for a matrix-vector call's rows
 * by the caller once for every panel they meet (moe_pack_act_i8x2 of each
 * row alone, for panel_gemv_i8x2_joined), or here, a group at a time
 * (i8x2_widen, for panel_gemv_i8x2, whose callers hold the digits apart):
 *   Q4: a word's nibbles j and j+4 are one dword's two halves, so the
 *       codes' pairs are (n0,n4) (n1,n5) (n2,n6) (n3,n7), one mask and a
 *       shift each, and the activations' (a0,a4) (a1,a5) (a2,a6) (a3,a7);
 *   Q8: (c0,c2) (c1,c3) of a word's 4 bytes, (a0,a2) (a1,a3).
 * A step is 8 inputs of both halves (Q4 one word, Q8 two): 8 vectors of
 * code pairs in registers for all tokens, then per token 4 broadcasts and
 * 8 vpmaddwd, in the includer's i8x2_half. */

enum { I8X2_MAX_GROUP = 128 };

/* 16 inputs of one token, digits q and residuals r in moe_quantize_act_i8's
 * order, as 16 int16 254·q + r in moe_act_i8x2_pos order (two runs of 8):
 * what moe_pack_act_i8x2 writes for a tile, here for a row of its own. */
static inline void i8x2_widen(int bits, const int8_t *q, const int8_t *r, int16_t *dst)
{
    /* Q4: j = 0,4,1,5,2,6,3,7 of a word lie at 0,2,4,6,1,3,5,7 in memory */
    const __m128i o4 = _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    const __m128i o8 = _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
    __m128i vq = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)q), bits == 4 ? o4 : o8);
    __m128i vr = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)r), bits == 4 ? o4 : o8);
    __m256i a = _mm256_add_epi16(_mm256_mullo_epi16(_mm256_cvtepi8_epi16(vq), _mm256_set1_epi16(MOE_I8_RESIDUAL_STEPS)),
                                 _mm256_cvtepi8_epi16(vr));
    _mm256_storeu_si256((__m256i *)dst, a);
}

/* The step's code pairs: codes at its first word, rows 0..7 (the next half
 * 8 int32 on, the next word MOE_PANEL); u[4h..4h+4) for half h. */
static inline __attribute__((always_inline)) void i8x2_prep(int bits, const int32_t *codes, __m256i u[8])
{
    for (int h = 0; h < 2; h++)
        if (bits == 4) {
            const __m256i m4 = _mm256_set1_epi32(0x000F000F);
            __m256i w = _mm256_loadu_si256((const __m256i *)(codes + 8 * h));
            for (int j = 0; j < 3; j++) u[4 * h + j] = _mm256_and_si256(_mm256_srli_epi32(w, 4 * j), m4);
            /* the top nibble of each int16 needs no mask */
            u[4 * h + 3] = _mm256_srli_epi16(w, 12);
        } else {
            const __m256i m8 = _mm256_set1_epi32(0x00FF00FF);
            for (int c = 0; c < 2; c++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(codes + MOE_PANEL * c + 8 * h));
                u[4 * h + 2 * c] = _mm256_and_si256(w, m8);
                u[4 * h + 2 * c + 1] = _mm256_and_si256(_mm256_srli_epi32(w, 8), m8);
            }
        }
}

/* One token's 8 inputs (its run, 4 int16 pairs) times the step's code pairs. */
static inline __attribute__((always_inline)) void i8x2_token(__m256i *a0, __m256i *a1, const __m256i u[8],
                                                             const int16_t *run)
{
    const int8_t *x = (const int8_t *)run;
    __m256i b[4] = { avx2_bcast4_i8(x), avx2_bcast4_i8(x + 4), avx2_bcast4_i8(x + 8), avx2_bcast4_i8(x + 12) };
    *a0 = i8x2_half(*a0, u, b);
    *a1 = i8x2_half(*a1, u + 4, b);
}

/* out[i][0..16) for i < m (≤ I8_MR for a tile, ≤ MOE_GEMV_MAX_M rows);
 * bits, st and tile are constants, and m too for rows. The tile (a) is read
 * as packed; rows are read as joined (rows, with joined) or their digits
 * (xq, xr) joined here a group at a time.
 * The token loop is not unrolled: the 8 code vectors stay in registers
 * while each token's two accumulators go through L1, which costs less than
 * the spills of 2·m accumulators kept "in registers". */
static inline __attribute__((always_inline)) void i8x2_panel(int bits, moe_dtype st, int tile, int joined, int m,
                                                             const moe_panel_format *f, const moe_panel *p,
                                                             const int8_t *const *xq, const int8_t *const *xr,
                                                             const int16_t *const *rows,
                                                             const float *const *dx, const float *const *xsum,
                                                             const int16_t *a, const float *d, const float *s,
                                                             float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    __m256i acc[I8_MR][2];
    __m256 res[I8_MR][2];
    float dr[(I8_MR + 7) & ~7] __attribute__((aligned(32)));
    int16_t wide[MOE_GEMV_MAX_M * I8X2_MAX_GROUP] __attribute__((aligned(32)));
    for (int i = 0; i < m; i++) res[i][0] = res[i][1] = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        if (tile) {
            /* the tile's scales over 254, eight tokens a division (the
             * quotients a scalar division gives, lane by lane) */
            const __m256 steps = _mm256_set1_ps((float)MOE_I8_RESIDUAL_STEPS);
            for (int i = 0; i < m; i += 8) {
                __m256i in = avx2_lanes(m - i);
                _mm256_store_ps(dr + i, _mm256_div_ps(_mm256_maskload_ps(d + (size_t)g * m + i, in), steps));
            }
        }
        for (int i = 0; !tile && i < m; i++) {
            acc[i][0] = acc[i][1] = _mm256_setzero_si256();
            dr[i] = dx[i][g] / (float)MOE_I8_RESIDUAL_STEPS;
            for (int k = 0; !joined && k < gs; k += 16)
                i8x2_widen(bits, xq[i] + g * gs + k, xr[i] + g * gs + k, wide + i * gs + k);
        }
        for (int k = 0; k < gs; k += 8) {
            __m256i u[8];
            i8x2_prep(bits, codes + (size_t)(k * bits / 32) * MOE_PANEL, u);
            /* the tokens' runs of these 8 inputs: tile runs m·8 apart, rows gs */
            if (tile) {
                const int16_t *run = a + (size_t)((g * gs + k) / 8) * m * 8;
                if (k == 0) {
                    /* a group's first step writes its sums: no zeroing, no add */
#pragma GCC unroll 1
                    for (int i = 0; i < m; i++, run += 8) {
                        __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
                        i8x2_token(&a0, &a1, u, run);
                        acc[i][0] = a0, acc[i][1] = a1;
                    }
                } else {
#pragma GCC unroll 1
                    for (int i = 0; i < m; i++, run += 8) i8x2_token(&acc[i][0], &acc[i][1], u, run);
                }
            } else {
                /* a few rows (m a constant): their accumulators stay in registers */
#pragma GCC unroll 4
                for (int i = 0; i < m; i++)
                    i8x2_token(&acc[i][0], &acc[i][1], u, joined ? rows[i] + g * gs + k : wide + i * gs + k);
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256 sc = avx2_load_dtype(st, moe_panel_group(p, p->scales, g), (size_t)8 * h);
            __m256 b = avx2_load_dtype(st, moe_panel_group(p, p->biases, g), (size_t)8 * h);
#pragma GCC unroll 1
            for (int i = 0; i < m; i++) {
                float si = tile ? s[(size_t)g * m + i] : xsum[i][g];
                __m256 sd = _mm256_mul_ps(sc, _mm256_set1_ps(dr[i]));
                res[i][h] = _mm256_fmadd_ps(sd, _mm256_cvtepi32_ps(acc[i][h]), res[i][h]);
                res[i][h] = _mm256_fmadd_ps(b, _mm256_set1_ps(si), res[i][h]);
            }
        }
    }
    for (int i = 0; i < m; i++) {
        _mm256_storeu_ps(out[i], res[i][0]);
        _mm256_storeu_ps(out[i] + 8, res[i][1]);
    }
}

#define I8X2_DEFINE(bits, st, sfx)                                                                                   \
    static void I8_NAME(gemv_x2_##sfx)(const moe_panel_format *f, const moe_panel *p, int m,                         \
                                       const int8_t *const *xq, const int8_t *const *xr, const float *const *dx,     \
                                       const float *const *xsum, float *const *out)                                  \
    {                                                                                                                \
        I8_WITH_M4(i8x2_panel(bits, st, 0, 0, m, f, p, xq, xr, NULL, dx, xsum, NULL, NULL, NULL, out))                  \
    }                                                                                                                \
    static void I8_NAME(gemv_x2j_##sfx)(const moe_panel_format *f, const moe_panel *p, int m,                        \
                                        const int16_t *const *rows, const float *const *dx,                          \
                                        const float *const *xsum, float *const *out)                                 \
    {                                                                                                                \
        I8_WITH_M4(i8x2_panel(bits, st, 0, 1, m, f, p, NULL, NULL, rows, dx, xsum, NULL, NULL, NULL, out))              \
    }                                                                                                                \
    static void I8_NAME(gemm_x2_##sfx)(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,       \
                                       const float *d, const float *s, float *const *out)                            \
    {                                                                                                                \
        i8x2_panel(bits, st, 1, 0, m, f, p, NULL, NULL, NULL, NULL, NULL, a, d, s, out);                                \
    }
I8X2_DEFINE(4, MOE_DTYPE_F32, q4_f32)
I8X2_DEFINE(4, MOE_DTYPE_F16, q4_f16)
I8X2_DEFINE(4, MOE_DTYPE_BF16, q4_bf16)
I8X2_DEFINE(8, MOE_DTYPE_F32, q8_f32)
I8X2_DEFINE(8, MOE_DTYPE_F16, q8_f16)
I8X2_DEFINE(8, MOE_DTYPE_BF16, q8_bf16)

void I8_NAME(panel_gemv_i8x2)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                              const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                              float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *const *, const int8_t *const *,
                       const float *const *, const float *const *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemv_x2_q4_f32), I8_NAME(gemv_x2_q4_f16), I8_NAME(gemv_x2_q4_bf16),
                                      I8_NAME(gemv_x2_q8_f32), I8_NAME(gemv_x2_q8_f16), I8_NAME(gemv_x2_q8_bf16) };
    int v = i8_variant(f, p, I8X2_MAX_GROUP);
    if (v < 0 || m > MOE_GEMV_MAX_M) moe_portable_panel_gemv_i8x2(f, p, m, xq, xr, dx, xsum, out);
    else by_variant[v](f, p, m, xq, xr, dx, xsum, out);
}

void I8_NAME(panel_gemv_i8x2_joined)(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *const *rows,
                                     const float *const *dx, const float *const *xsum, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int16_t *const *, const float *const *,
                       const float *const *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemv_x2j_q4_f32), I8_NAME(gemv_x2j_q4_f16), I8_NAME(gemv_x2j_q4_bf16),
                                      I8_NAME(gemv_x2j_q8_f32), I8_NAME(gemv_x2j_q8_f16), I8_NAME(gemv_x2j_q8_bf16) };
    int v = i8_variant(f, p, I8X2_MAX_GROUP);
    if (v < 0 || m > MOE_GEMV_MAX_M) moe_portable_panel_gemv_i8x2_joined(f, p, m, rows, dx, xsum, out);
    else by_variant[v](f, p, m, rows, dx, xsum, out);
}

void I8_NAME(panel_gemm_i8x2)(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                              const float *d, const float *s, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int16_t *, const float *,
                       const float *, float *const *);
    static const fn by_variant[6] = { I8_NAME(gemm_x2_q4_f32), I8_NAME(gemm_x2_q4_f16), I8_NAME(gemm_x2_q4_bf16),
                                      I8_NAME(gemm_x2_q8_f32), I8_NAME(gemm_x2_q8_f16), I8_NAME(gemm_x2_q8_bf16) };
    int v = i8_variant(f, p, I8X2_MAX_GROUP);
    if (v < 0 || m > I8_MR) moe_portable_panel_gemm_i8x2(f, p, m, a, d, s, out);
    else by_variant[v](f, p, m, a, d, s, out);
}

#endif
