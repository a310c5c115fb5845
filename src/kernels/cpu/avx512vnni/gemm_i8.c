/* kernels/cpu/avx512vnni/gemm_i8.c — a quantized panel times a tile of up to
 * MOE_AVX512VNNI_MR_I8 tokens' int8 activations (prefill), with vpdpbusd.
 *
 * The matrix-vector kernel (gemv_i8.c) splits each 4-bit code word into its
 * low and high nibbles once per 4 tokens; here once per tile of up to 12.
 * Per 64-byte word of 4-bit codes (16 rows × 8 inputs): one load, three
 * logic ops, then two vpdpbusd per token, each taking its token's four
 * activations as an embedded {1to16} broadcast from the packed tile
 * (moe_pack_act_i8: one pointer, the tokens at fixed offsets from it, which
 * a 32-byte chunk of every token, 4 words, keeps constant). 8-bit codes
 * need no split: one vpdpbusd per token and word.
 *
 * Each group's integer sums are exact; the group's epilogue (scale·dx, the
 * float sum, bias·Σx) is the matrix-vector kernel's, op for op, so both
 * kernels give the same bits for a token. */
#include <immintrin.h>

#include "kernels/cpu/avx512/avx512_util.h"
#include "kernels/cpu/avx512vnni/avx512vnni.h"

enum { MR = MOE_AVX512VNNI_MR_I8 };

/* acc + the dword dot products of u (unsigned bytes) with the four signed
 * bytes at p, broadcast: vpdpbusd with an embedded {1to16} memory operand,
 * which gcc does not form from the intrinsic (it emits a separate
 * vpbroadcastd into a register for each token, and runs out of them). */
typedef int32_t __attribute__((may_alias, aligned(1))) quad;
static inline __m512i dpbusd_bcast(__m512i acc, __m512i u, const int8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*(const quad *)p));
    return acc;
}

/* m is a compile-time constant at every call (see WITH_M below), so the
 * token loops unroll and the accumulators live in registers. */
static inline __attribute__((always_inline)) void gemm_i8(int bits, moe_dtype st, const moe_panel_format *f,
                                                          const moe_panel *p, const int m, const int8_t *q,
                                                          const float *d, const float *s, float *const *out)
{
    const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, gs = f->group_size, groups = f->K / gs;
    __m512 res[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) res[i] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++, d += m, s += m) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        __m512i acc[MR];
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_si512();
        /* one 32-byte chunk of every token at a time: 4 words of 4-bit
         * codes or 8 of 8-bit; token i's part of the chunk at q + 32·i */
        for (int b = 0; b < gs / 32; b++, q += 32 * m) {
            if (bits == 4) {
#pragma GCC unroll 4
                for (int c = 0; c < 4; c++, codes += nr) {
                    /* low nibbles: inputs 0,2,4,6 of the word; high: 1,3,5,7
                     * (moe_quantize_act_i8 order: bytes 8c..8c+3, 8c+4..8c+7) */
                    __m512i w = _mm512_maskz_loadu_epi32(mk, codes);
                    __m512i lo = _mm512_and_si512(w, nib), hi = _mm512_and_si512(_mm512_srli_epi32(w, 4), nib);
#pragma GCC unroll 16
                    for (int i = 0; i < MR; i++)
                        if (i < m) acc[i] = dpbusd_bcast(acc[i], lo, q + 32 * i + 8 * c);
#pragma GCC unroll 16
                    for (int i = 0; i < MR; i++)
                        if (i < m) acc[i] = dpbusd_bcast(acc[i], hi, q + 32 * i + 8 * c + 4);
                }
            } else {
#pragma GCC unroll 8
                for (int c = 0; c < 8; c++, codes += nr) {
                    __m512i w = _mm512_maskz_loadu_epi32(mk, codes);
#pragma GCC unroll 16
                    for (int i = 0; i < MR; i++)
                        if (i < m) acc[i] = dpbusd_bcast(acc[i], w, q + 32 * i + 4 * c);
                }
            }
        }
        __m512 sc = avx512_load_dtype(st, moe_panel_group(p, p->scales, g), 0, mk);
        __m512 b = avx512_load_dtype(st, moe_panel_group(p, p->biases, g), 0, mk);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++)
            if (i < m) {
                __m512 sd = _mm512_mul_ps(sc, _mm512_set1_ps(d[i]));
                res[i] = _mm512_fmadd_ps(sd, _mm512_cvtepi32_ps(acc[i]), res[i]);
                res[i] = _mm512_fmadd_ps(b, _mm512_set1_ps(s[i]), res[i]);
            }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        if (i < m) _mm512_mask_storeu_ps(out[i], mk, res[i]);
}

#define CASE_M(M, bits, st) \
    case M: gemm_i8(bits, st, f, p, M, q, d, s, out); break;
#define WITH_M(bits, st)                                                                               \
    switch (m) {                                                                                       \
        CASE_M(1, bits, st) CASE_M(2, bits, st) CASE_M(3, bits, st) CASE_M(4, bits, st)                \
        CASE_M(5, bits, st) CASE_M(6, bits, st) CASE_M(7, bits, st) CASE_M(8, bits, st)                \
        CASE_M(9, bits, st) CASE_M(10, bits, st) CASE_M(11, bits, st) CASE_M(12, bits, st)             \
    default: break;                                                                                    \
    }
_Static_assert(MR == 12, "WITH_M lists the tile sizes 1..MR");

#define DEFINE_GEMM_I8(name, bits, st)                                                                     \
    static void name(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q, const float *d, \
                     const float *s, float *const *out)                                                    \
    {                                                                                                      \
        WITH_M(bits, st)                                                                                   \
    }
DEFINE_GEMM_I8(gemm_q4_f32, 4, MOE_DTYPE_F32)
DEFINE_GEMM_I8(gemm_q4_f16, 4, MOE_DTYPE_F16)
DEFINE_GEMM_I8(gemm_q4_bf16, 4, MOE_DTYPE_BF16)
DEFINE_GEMM_I8(gemm_q8_f32, 8, MOE_DTYPE_F32)
DEFINE_GEMM_I8(gemm_q8_f16, 8, MOE_DTYPE_F16)
DEFINE_GEMM_I8(gemm_q8_bf16, 8, MOE_DTYPE_BF16)

void moe_avx512vnni_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                  const float *d, const float *s, float *const *out)
{
    int sd = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    if (f->fmt == MOE_WF_Q4) (sd == 2 ? gemm_q4_bf16 : sd == 1 ? gemm_q4_f16 : gemm_q4_f32)(f, p, m, q, d, s, out);
    else if (f->fmt == MOE_WF_Q8) (sd == 2 ? gemm_q8_bf16 : sd == 1 ? gemm_q8_f16 : gemm_q8_f32)(f, p, m, q, d, s, out);
}
