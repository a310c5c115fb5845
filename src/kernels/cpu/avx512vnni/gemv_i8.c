/* kernels/cpu/avx512vnni/gemv_i8.c — quantized panels times int8 activations
 * with vpdpbusd (unsigned codes × signed activations, four products summed
 * into each 32-bit lane), and the table that adds it to the AVX-512 kernels.
 *
 * Per 64 bytes of 4-bit codes (16 rows × 8 inputs) this is 2 logic ops and
 * 2 vpdpbusd instead of 8 shift+permute+FMA triples: decode becomes a stream
 * over memory rather than over the vector units. The integer sums are exact;
 * each group's sum is scaled once by scale·dx, and bias·Σx is added. */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx512/avx512.h"
#include "kernels/cpu/avx512/avx512_util.h"
#include "kernels/cpu/avx512vnni/avx512vnni.h"

/* Four int8 activations as one broadcast dword. */
static inline __m512i bcast4(const int8_t *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* m is a compile-time constant at every call (see AVX512_WITH_M). */
static inline __attribute__((always_inline)) void gemv_i8(int bits, moe_dtype st, const moe_panel_format *f,
                                                          const moe_panel *p, int m, const int8_t *const *xq,
                                                          const float *const *dx, const float *const *xsum,
                                                          float *const *out)
{
    const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, epw = 32 / bits, gs = f->group_size, words_per_group = gs / epw;
    /* independent dot-product chains per token (exact integer sums, so
     * their number does not change the result) */
    enum { CH = 2 };
    __m512 res[MOE_GEMV_MAX_M];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) res[i] = _mm512_setzero_ps();
    for (int g = 0; g < f->K / gs; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g); /* this group's block */
        __m512i acc[MOE_GEMV_MAX_M][CH];
        for (int i = 0; i < MOE_GEMV_MAX_M; i++)
            for (int j = 0; j < CH; j++) acc[i][j] = _mm512_setzero_si512();
        /* words two at a time, one chain each (a group has an even
         * number of words: at least 32 inputs, at most 8 a word), so the
         * chains are registers, not a run-time-indexed array */
        for (int c = 0; c < words_per_group; c += 2) {
            int k = (g * words_per_group + c) * epw;
            for (int ch = 0; ch < CH; ch++) {
                __m512i w = _mm512_maskz_loadu_epi32(mk, codes + (size_t)(c + ch) * nr);
                int kk = k + ch * epw;
                if (bits == 4) {
                    __m512i lo = _mm512_and_si512(w, nib), hi = _mm512_and_si512(_mm512_srli_epi32(w, 4), nib);
#pragma GCC unroll 4
                    for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                        if (i < m) {
                            acc[i][ch] = _mm512_dpbusd_epi32(acc[i][ch], lo, bcast4(xq[i] + kk));
                            acc[i][ch] = _mm512_dpbusd_epi32(acc[i][ch], hi, bcast4(xq[i] + kk + 4));
                        }
                } else {
#pragma GCC unroll 4
                    for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                        if (i < m) acc[i][ch] = _mm512_dpbusd_epi32(acc[i][ch], w, bcast4(xq[i] + kk));
                }
            }
        }
        __m512 s = avx512_load_dtype(st, moe_panel_group(p, p->scales, g), 0, mk);
        __m512 b = avx512_load_dtype(st, moe_panel_group(p, p->biases, g), 0, mk);
        for (int i = 0; i < m; i++) {
            __m512i sum = _mm512_add_epi32(acc[i][0], acc[i][1]);
            __m512 sd = _mm512_mul_ps(s, _mm512_set1_ps(dx[i][g]));
            res[i] = _mm512_fmadd_ps(sd, _mm512_cvtepi32_ps(sum), res[i]);
            res[i] = _mm512_fmadd_ps(b, _mm512_set1_ps(xsum[i][g]), res[i]);
        }
    }
    for (int i = 0; i < m; i++) _mm512_mask_storeu_ps(out[i], mk, res[i]);
}

#define DEFINE_GEMV_I8(name, bits, st)                                                              \
    static void name(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq, \
                     const float *const *dx, const float *const *xsum, float *const *out)           \
    {                                                                                               \
        AVX512_WITH_M(gemv_i8(bits, st, f, p, m, xq, dx, xsum, out))                                \
    }
DEFINE_GEMV_I8(gemv_q4_f32, 4, MOE_DTYPE_F32)
DEFINE_GEMV_I8(gemv_q4_f16, 4, MOE_DTYPE_F16)
DEFINE_GEMV_I8(gemv_q4_bf16, 4, MOE_DTYPE_BF16)
DEFINE_GEMV_I8(gemv_q8_f32, 8, MOE_DTYPE_F32)
DEFINE_GEMV_I8(gemv_q8_f16, 8, MOE_DTYPE_F16)
DEFINE_GEMV_I8(gemv_q8_bf16, 8, MOE_DTYPE_BF16)

static void panel_gemv_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                          const float *const *dx, const float *const *xsum, float *const *out)
{
    int s = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    if (f->fmt == MOE_WF_Q4) (s == 2 ? gemv_q4_bf16 : s == 1 ? gemv_q4_f16 : gemv_q4_f32)(f, p, m, xq, dx, xsum, out);
    else if (f->fmt == MOE_WF_Q8) (s == 2 ? gemv_q8_bf16 : s == 1 ? gemv_q8_f16 : gemv_q8_f32)(f, p, m, xq, dx, xsum, out);
}

const moe_cpu_kernels moe_kernels_avx512vnni = {
    .name = "avx512vnni",
    .panel_gemv = moe_avx512_panel_gemv,
    .panel_unpack = moe_avx512_panel_unpack,
    .gemm_tile = moe_avx512_gemm_tile,
    .mr = MOE_AVX512_MR,
    .swiglu = moe_avx512_swiglu,
    .attn_tile = moe_avx512_attn_tile,
    .attn_rows = moe_avx512_attn_rows,
    .f32_to_f16 = moe_avx512_f32_to_f16,
    .f16_to_f32 = moe_avx512_f16_to_f32,
    .kv_q8_store = moe_avx512_kv_q8_store,
    .kv_q8_widen = moe_avx512_kv_q8_widen,
    .panel_gemv_i8 = panel_gemv_i8,
    .panel_gemm_i8 = moe_avx512vnni_panel_gemm_i8,
    .mr_i8 = MOE_AVX512VNNI_MR_I8,
    .panel_gemv_i8x2 = moe_avx512vnni_panel_gemv_i8x2,
    .panel_gemm_i8x2 = moe_avx512vnni_panel_gemm_i8x2,
    .quantize_act_i8 = moe_avx512vnni_quantize_act_i8,
    .pack_act_i8x2 = moe_avx2_pack_act_i8x2,
};
