/* kernels/cpu/portable/attention.c — the flash-attention steps in plain C
 * (see attn_tile and attn_rows in kernels.h): scores, then the online-softmax
 * update, then the weighted values. attn_tile keeps its 16 lanes innermost
 * (independent sums a compiler may vectorise); attn_rows takes one query at
 * a time. Each body is inlined for a float32 and a half cache (kv), a half
 * element widened with moe_f16_to_f32 where it is read, the arithmetic the
 * same for both. */
#include <math.h>

#include "kernels/cpu/portable/portable.h"
#include "quant/dtype.h"

enum { L = MOE_ATTN_LANES };

/* Element i of a cache of dtype kv, as a float. */
static inline __attribute__((always_inline)) float kv_elem(moe_dtype kv, const void *p, size_t i)
{
    return kv == MOE_DTYPE_F16 ? moe_f16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline __attribute__((always_inline)) void attn_tile(moe_dtype kv, int D, int nk, const float *qt,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *ot)
{
    float s[MOE_ATTN_MAX_KEYS][L], mnew[L], a[L];
    for (int i = 0; i < L; i++) mnew[i] = m[i];
    for (int j = 0; j < nk; j++) {
        for (int i = 0; i < L; i++) s[j][i] = 0.0f;
        for (int d = 0; d < D; d++) {
            float kjd = kv_elem(kv, k, (size_t)j * stride + d);
            for (int i = 0; i < L; i++) s[j][i] += kjd * qt[d * L + i];
        }
        for (int i = 0; i < L; i++)
            if (j < lim[i]) mnew[i] = fmaxf(mnew[i], s[j][i]);
    }
    for (int i = 0; i < L; i++) {
        /* a lane that has seen no key yet keeps m = −∞, l = 0, o = 0 */
        a[i] = mnew[i] == -INFINITY ? 1.0f : expf(m[i] - mnew[i]);
        float sum = 0.0f;
        for (int j = 0; j < nk; j++) sum += s[j][i] = j < lim[i] ? expf(s[j][i] - mnew[i]) : 0.0f;
        m[i] = mnew[i];
        l[i] = l[i] * a[i] + sum;
    }
    for (int d = 0; d < D; d++) {
        float *o = ot + (size_t)d * L;
        for (int i = 0; i < L; i++) o[i] *= a[i];
        for (int j = 0; j < nk; j++) {
            float vjd = kv_elem(kv, v, (size_t)j * stride + d);
            for (int i = 0; i < L; i++) o[i] += s[j][i] * vjd;
        }
    }
}

void moe_portable_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v,
                            size_t stride, const int *lim, float *m, float *l, float *ot)
{
    if (kv == MOE_DTYPE_F16) attn_tile(MOE_DTYPE_F16, D, nk, qt, k, v, stride, lim, m, l, ot);
    else attn_tile(MOE_DTYPE_F32, D, nk, qt, k, v, stride, lim, m, l, ot);
}

static inline __attribute__((always_inline)) void attn_rows(moe_dtype kv, int D, int nq, int qpk, const float *q,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *o)
{
    float p[MOE_ATTN_MAX_KEYS];
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * D;
        size_t col = (size_t)(i / qpk) * D;
        float *oi = o + (size_t)i * D, mnew = m[i];
        for (int j = 0; j < lim[i]; j++) {
            size_t kj = (size_t)j * stride + col;
            float s = 0.0f;
            for (int d = 0; d < D; d++) s += qi[d] * kv_elem(kv, k, kj + d);
            p[j] = s;
            mnew = fmaxf(mnew, s);
        }
        if (mnew == -INFINITY) continue; /* no key seen yet: nothing changes */
        float a = expf(m[i] - mnew), sum = 0.0f;
        for (int j = 0; j < lim[i]; j++) sum += p[j] = expf(p[j] - mnew);
        m[i] = mnew;
        l[i] = l[i] * a + sum;
        for (int d = 0; d < D; d++) oi[d] *= a;
        for (int j = 0; j < lim[i]; j++) {
            size_t vj = (size_t)j * stride + col;
            for (int d = 0; d < D; d++) oi[d] += p[j] * kv_elem(kv, v, vj + d);
        }
    }
}

void moe_portable_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k,
                            const void *v, size_t stride, const int *lim, float *m, float *l, float *o)
{
    (void)nk;
    if (kv == MOE_DTYPE_F16) attn_rows(MOE_DTYPE_F16, D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else attn_rows(MOE_DTYPE_F32, D, nq, qpk, q, k, v, stride, lim, m, l, o);
}

/* ---- a half cache's elements ---- */

void moe_portable_f32_to_f16(size_t n, const float *src, uint16_t *dst)
{
    for (size_t i = 0; i < n; i++) dst[i] = moe_f32_to_f16(src[i]);
}

void moe_portable_f16_to_f32(size_t n, const uint16_t *src, float *dst)
{
    for (size_t i = 0; i < n; i++) dst[i] = moe_f16_to_f32(src[i]);
}
