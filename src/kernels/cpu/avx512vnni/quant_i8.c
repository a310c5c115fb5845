/* kernels/cpu/avx512vnni/quant_i8.c — int8 activations and their group sums
 * in one vector pass (the layer's per-token and per-pair preparation for
 * the int8 kernels; plain C took a tenth of a prefill layer).
 *
 * Bit for bit moe_quantize_act_i8: the group's max |x| is exact in any
 * order, d = max/127 and 1/d are the same scalar divisions, x·(1/d) the same
 * product, and vcvtps2dq rounds half to even as lrintf does in the default
 * rounding mode. The group sum is added 16 lanes at a time, so it may differ
 * from moe_group_sums in the last bits. */
#include <immintrin.h>

#include "kernels/cpu/avx512vnni/avx512vnni.h"

void moe_avx512vnni_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx,
                                    float *xsum, int8_t *xr)
{
    const __m512i lim = _mm512_set1_epi32(127), neg_lim = _mm512_set1_epi32(-127);
    /* Q4 order: in each run of 8 inputs, the 4 even ones, then the 4 odd */
    const __m512i q4_order = _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
    for (int g = 0; g < K / group; g++) {
        const float *xg = x + (size_t)g * group;
        int8_t *qg = xq + (size_t)g * group;
        __m512 mx = _mm512_setzero_ps(), sum = _mm512_setzero_ps();
        for (int k = 0; k < group; k += 16) {
            __m512 v = _mm512_loadu_ps(xg + k);
            mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
            sum = _mm512_add_ps(sum, v);
        }
        float amax = _mm512_reduce_max_ps(mx);
        float d = amax / 127.0f, inv = d > 0.0f ? 1.0f / d : 0.0f;
        dx[g] = d;
        xsum[g] = _mm512_reduce_add_ps(sum);
        __m512 vinv = _mm512_set1_ps(inv), vd = _mm512_set1_ps(d);
        /* the residual digit: as moe_quantize_act_i8_residual, the same
         * operations in the same order (no fused multiply-add) */
        __m512 vinv_r = _mm512_set1_ps(d > 0.0f ? MOE_I8_RESIDUAL_STEPS / d : 0.0f);
        for (int k = 0; k < group; k += 16) {
            __m512 v = _mm512_loadu_ps(xg + k);
            __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
            /* saturate as the narrowing below does, for the residual too */
            q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_set1_epi32(-128));
            if (xr) {
                __m512 r = _mm512_sub_ps(v, _mm512_mul_ps(vd, _mm512_cvtepi32_ps(q)));
                __m512i rq = _mm512_cvtps_epi32(_mm512_mul_ps(r, vinv_r));
                rq = _mm512_max_epi32(_mm512_min_epi32(rq, lim), neg_lim);
                if (f == MOE_WF_Q4) rq = _mm512_permutexvar_epi32(q4_order, rq);
                _mm_storeu_si128((__m128i *)(xr + (size_t)g * group + k), _mm512_cvtepi32_epi8(rq));
            }
            if (f == MOE_WF_Q4) q = _mm512_permutexvar_epi32(q4_order, q);
            _mm_storeu_si128((__m128i *)(qg + k), _mm512_cvtsepi32_epi8(q));
        }
    }
}
