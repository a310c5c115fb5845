/* kernels/cpu/portable/attention.c — the flash-attention steps in plain C
 * (see attn_tile and attn_rows in kernels.h): scores, then the online-softmax
 * update, then the weighted values. attn_tile keeps its 16 lanes innermost
 * (independent sums a compiler may vectorise); attn_rows takes one query at
 * a time. Each body is inlined for a float32 and a half cache (kv), a half
 * element widened with moe_f16_to_f32 where it is read, the arithmetic the
 * same for both; attn_rows also for an 8-bit cache (code times its group's
 * scale: kernels/kv_q8.h), whose reference quantization is here too. */
#include <math.h>

#include "kernels/cpu/portable/portable.h"
#include "kernels/kv_q8.h"
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

/* Element d of a kv head's column (Q8: block) at h, D long, as a float. */
static inline __attribute__((always_inline)) float head_elem(moe_dtype kv, const char *h, int D, int d)
{
    return kv == MOE_DTYPE_Q8 ? moe_kv_q8_value(h, D, d) : kv_elem(kv, h, (size_t)d);
}

static inline __attribute__((always_inline)) void attn_rows(moe_dtype kv, int D, int nq, int qpk, const float *q,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *o)
{
    float p[MOE_ATTN_MAX_KEYS];
    size_t esize = kv == MOE_DTYPE_F32 ? sizeof(float) : kv == MOE_DTYPE_F16 ? sizeof(uint16_t) : 1;
    size_t head = kv == MOE_DTYPE_Q8 ? moe_kv_q8_head_bytes(D) : (size_t)D * esize;
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * D;
        size_t col = (size_t)(i / qpk) * head;
        float *oi = o + (size_t)i * D, mnew = m[i];
        for (int j = 0; j < lim[i]; j++) {
            const char *kj = (const char *)k + (size_t)j * stride * esize + col;
            float s = 0.0f;
            for (int d = 0; d < D; d++) s += qi[d] * head_elem(kv, kj, D, d);
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
            const char *vj = (const char *)v + (size_t)j * stride * esize + col;
            for (int d = 0; d < D; d++) oi[d] += p[j] * head_elem(kv, vj, D, d);
        }
    }
}

void moe_portable_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k,
                            const void *v, size_t stride, const int *lim, float *m, float *l, float *o)
{
    (void)nk;
    if (kv == MOE_DTYPE_F16) attn_rows(MOE_DTYPE_F16, D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else if (kv == MOE_DTYPE_Q8) attn_rows(MOE_DTYPE_Q8, D, nq, qpk, q, k, v, stride, lim, m, l, o);
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

/* ---- an 8-bit cache's elements (kernels/kv_q8.h) ---- */

void moe_portable_kv_q8_store(size_t n, int D, const float *src, void *dst) { moe_kv_q8_store_ref(n, D, src, dst); }

void moe_portable_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst)
{
    for (int j = 0; j < nb; j++) {
        const char *h = (const char *)src + (size_t)j * stride;
        for (int d = 0; d < D; d++) dst[(size_t)j * D + d] = moe_kv_q8_value(h, D, d);
    }
}
