/* kernels/cpu/avxvnni/panel_i8.c — quantized panels times int8 activations
 * with AVX-VNNI's 256-bit vpdpbusd (unsigned code bytes × signed activation
 * bytes, four products summed into each int32 lane, exactly: no int16
 * saturation as with AVX2's vpmaddubsw, so 8-bit codes need no split), and
 * the table: the AVX2 set with these int8 kernels. The loops and the
 * epilogue are avx2/panel_i8.h's, shared with the AVX2 set.
 *
 * Per 4 words of one half (8 rows), per token: Q4 8 vpdpbusd, Q8 4, in two
 * chains (a single token's steps would otherwise wait on one chain's
 * latency). */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"
#include "kernels/cpu/avxvnni/avxvnni.h"

#define I8_MR MOE_AVXVNNI_MR_I8
#define I8_MR_REG 8
#define I8_NAME(x) moe_avxvnni_##x

/* 8-bit codes as they are: u[c] = word c (u[4..8) unused). */
static inline __attribute__((always_inline)) void i8_prep_q8(const __m256i w[4], __m256i u[8])
{
    for (int c = 0; c < 4; c++) u[c] = w[c];
}

static inline __attribute__((always_inline)) __m256i i8_dot_q4(__m256i acc, const __m256i u[8], const int8_t *x)
{
    __m256i b = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        acc = _mm256_dpbusd_avx_epi32(acc, u[2 * c], avx2_bcast4_i8(x + 8 * c));
        b = _mm256_dpbusd_avx_epi32(b, u[2 * c + 1], avx2_bcast4_i8(x + 8 * c + 4));
    }
    return _mm256_add_epi32(acc, b);
}

static inline __attribute__((always_inline)) __m256i i8_dot_q8(__m256i acc, const __m256i u[8], const int8_t *x)
{
    __m256i b = _mm256_setzero_si256();
    for (int c = 0; c < 4; c += 2) {
        acc = _mm256_dpbusd_avx_epi32(acc, u[c], avx2_bcast4_i8(x + 4 * c));
        b = _mm256_dpbusd_avx_epi32(b, u[c + 1], avx2_bcast4_i8(x + 4 * c + 4));
    }
    return _mm256_add_epi32(acc, b);
}

/* Two digits as int16 (panel_i8.h): vpdpwssd, vpmaddwd and the add in one,
 * in two chains. */
static inline __attribute__((always_inline)) __m256i i8x2_half(__m256i acc, const __m256i v[4], const __m256i b[4])
{
    __m256i s = _mm256_dpwssd_avx_epi32(_mm256_dpwssd_avx_epi32(acc, v[0], b[0]), v[2], b[2]);
    __m256i t = _mm256_dpwssd_avx_epi32(_mm256_dpwssd_avx_epi32(_mm256_setzero_si256(), v[1], b[1]), v[3], b[3]);
    return _mm256_add_epi32(s, t);
}

#include "kernels/cpu/avx2/panel_i8.h"

const moe_cpu_kernels moe_kernels_avxvnni = {
    .name = "avxvnni",
    .panel_gemv = moe_avx2_panel_gemv,
    .panel_unpack = moe_avx2_panel_unpack,
    .gemm_tile = moe_avx2_gemm_tile,
    .mr = MOE_AVX2_MR,
    .swiglu = moe_avx2_swiglu,
    .attn_tile = moe_avx2_attn_tile,
    .attn_rows = moe_avx2_attn_rows,
    .f32_to_f16 = moe_avx2_f32_to_f16,
    .f16_to_f32 = moe_avx2_f16_to_f32,
    .kv_q8_store = moe_avx2_kv_q8_store,
    .kv_q8_widen = moe_avx2_kv_q8_widen,
    .panel_gemv_i8 = moe_avxvnni_panel_gemv_i8,
    .panel_gemm_i8 = moe_avxvnni_panel_gemm_i8,
    .mr_i8 = MOE_AVXVNNI_MR_I8,
    .panel_gemv_i8x2 = moe_avxvnni_panel_gemv_i8x2,
    .panel_gemv_i8x2_joined = moe_avxvnni_panel_gemv_i8x2_joined,
    .panel_gemm_i8x2 = moe_avxvnni_panel_gemm_i8x2,
    .quantize_act_i8 = moe_avx2_quantize_act_i8,
    .pack_act_i8x2 = moe_avx2_pack_act_i8x2,
};
