/* kernels/cpu/avx2/quant_i8.c — int8 activations, their residual digits and
 * group sums in one AVX2 pass over a vector (the per-token and per-pair
 * preparation of the int8 kernels; the scalar functions call fmaxf and
 * lrintf per element).
 *
 * Bit for bit moe_quantize_act_i8 and moe_quantize_act_i8_residual: a
 * group's max |x| is exact in any order, d = max/127, 1/d and 254/d are the
 * same scalar divisions, x·(1/d) and x − d·q the same operations (no fused
 * multiply-add), and vcvtps2dq rounds half to even as lrintf does in the
 * default rounding mode. The group sum is added 8 lanes at a time, so it may
 * differ from moe_group_sums in the last bits. */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"

/* 32 int32 in [-128, 127] (four vectors of 8) as 32 bytes in order. */
static inline __m256i narrow32(const __m256i v[4])
{
    /* vpackssdw / vpacksswb work within 128-bit halves: bytes come out as
     * dwords v0[0..3] v1[0..3] v2[0..3] v3[0..3] | v0[4..7] v1[4..7] ... */
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

static inline float hmax8(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void moe_avx2_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx,
                              float *xsum, int8_t *xr)
{
    if (group % 32) {
        /* not a layout the int8 kernels use: the scalar functions */
        moe_quantize_act_i8(f, K, group, x, xq, dx);
        moe_group_sums(K, group, x, xsum);
        if (xr) moe_quantize_act_i8_residual(f, K, group, x, xq, dx, xr);
        return;
    }
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256i lim = _mm256_set1_epi32(127), neg_lim = _mm256_set1_epi32(-127), lo = _mm256_set1_epi32(-128);
    /* Q4 order: in each run of 8 inputs, the 4 even ones, then the 4 odd */
    const __m256i q4_order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    for (int g = 0; g < K / group; g++) {
        const float *xg = x + (size_t)g * group;
        __m256 mx = _mm256_setzero_ps(), sum = _mm256_setzero_ps();
        for (int k = 0; k < group; k += 8) {
            __m256 v = _mm256_loadu_ps(xg + k);
            mx = _mm256_max_ps(mx, _mm256_and_ps(v, abs_mask));
            sum = _mm256_add_ps(sum, v);
        }
        float amax = hmax8(mx);
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        dx[g] = d;
        xsum[g] = hsum8(sum);
        __m256 vinv = _mm256_set1_ps(inv), vd = _mm256_set1_ps(d);
        __m256 vinv_r = _mm256_set1_ps(d > 0.0f ? MOE_I8_RESIDUAL_STEPS / d : 0.0f);
        for (int k = 0; k < group; k += 32) {
            __m256i q[4], r[4];
            for (int j = 0; j < 4; j++) {
                __m256 v = _mm256_loadu_ps(xg + k + 8 * j);
                __m256i qj = _mm256_cvtps_epi32(_mm256_mul_ps(v, vinv));
                /* saturated as the narrowing will, before the residual uses it */
                qj = _mm256_max_epi32(_mm256_min_epi32(qj, lim), lo);
                if (xr) {
                    __m256 rv = _mm256_sub_ps(v, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(qj)));
                    __m256i rj = _mm256_cvtps_epi32(_mm256_mul_ps(rv, vinv_r));
                    rj = _mm256_max_epi32(_mm256_min_epi32(rj, lim), neg_lim);
                    r[j] = f == MOE_WF_Q4 ? _mm256_permutevar8x32_epi32(rj, q4_order) : rj;
                }
                q[j] = f == MOE_WF_Q4 ? _mm256_permutevar8x32_epi32(qj, q4_order) : qj;
            }
            _mm256_storeu_si256((__m256i *)(xq + (size_t)g * group + k), narrow32(q));
            if (xr) _mm256_storeu_si256((__m256i *)(xr + (size_t)g * group + k), narrow32(r));
        }
    }
}

/* moe_pack_act_i8x2, 16 inputs (two runs) a step: one shuffle puts each
 * digit's bytes in the runs' order (moe_act_i8x2_pos), then vpmaddubsw of
 * the bytes (254, 1) with the two digits interleaved gives 254·q + r
 * (|·| ≤ 254·128 + 127 = 32639: no saturation). The scalar version moves
 * an element at a time and was a sixth of the int8x2 expert layer. The next
 * token's rows are fetched ahead: a group's tokens are rows scattered over
 * all the prompt's, cold by the time the group runs. */
void moe_avx2_pack_act_i8x2(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                            const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s)
{
    const __m128i ord = f == MOE_WF_Q4 ? _mm_setr_epi8(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15)
                                       : _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15);
    const __m256i w = _mm256_set1_epi16((short)(1 << 8 | MOE_I8_RESIDUAL_STEPS));   /* bytes 254, 1 */
    for (int i = 0; i < m; i++) {
        for (int k = 0; k < K; k += 16) {
            if (i + 1 < m && k % 64 == 0) {
                _mm_prefetch((const char *)(xq[i + 1] + k), _MM_HINT_T0);
                _mm_prefetch((const char *)(xr[i + 1] + k), _MM_HINT_T0);
            }
            __m128i q = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xq[i] + k)), ord);
            __m128i r = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(xr[i] + k)), ord);
            __m256i v = _mm256_maddubs_epi16(w, _mm256_setr_m128i(_mm_unpacklo_epi8(q, r), _mm_unpackhi_epi8(q, r)));
            int16_t *run = a + ((size_t)(k / 8) * m + i) * 8;
            _mm_storeu_si128((__m128i *)run, _mm256_castsi256_si128(v));
            _mm_storeu_si128((__m128i *)(run + (size_t)m * 8), _mm256_extracti128_si256(v, 1));
        }
        for (int g = 0; d && g < K / group; g++) {
            d[(size_t)g * m + i] = dx[i][g];
            s[(size_t)g * m + i] = xsum[i][g];
        }
    }
}
