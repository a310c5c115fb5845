/* kernels/cpu/portable/attention.c — the flash-attention steps in plain C
 * (see attn_tile and attn_rows in kernels.h): scores, then the online-softmax
 * update, then the weighted values. attn_tile keeps its 16 lanes innermost
 * (independent sums a compiler may vectorise); attn_rows takes one query at
 * a time. */
#include <math.h>

#include "kernels/cpu/portable/portable.h"

enum { L = MOE_ATTN_LANES };

void moe_portable_attn_tile(int D, int nk, const float *qt, const float *k, const float *v, size_t stride,
                            const int *lim, float *m, float *l, float *ot)
{
    float s[MOE_ATTN_MAX_KEYS][L], mnew[L], a[L];
    for (int i = 0; i < L; i++) mnew[i] = m[i];
    for (int j = 0; j < nk; j++) {
        const float *kj = k + (size_t)j * stride;
        for (int i = 0; i < L; i++) s[j][i] = 0.0f;
        for (int d = 0; d < D; d++)
            for (int i = 0; i < L; i++) s[j][i] += kj[d] * qt[d * L + i];
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
        for (int j = 0; j < nk; j++)
            for (int i = 0; i < L; i++) o[i] += s[j][i] * v[(size_t)j * stride + d];
    }
}

void moe_portable_attn_rows(int D, int nq, int qpk, int nk, const float *q, const float *k, const float *v,
                            size_t stride, const int *lim, float *m, float *l, float *o)
{
    float p[MOE_ATTN_MAX_KEYS];
    (void)nk;
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * D, *ki = k + (size_t)(i / qpk) * D, *vi = v + (size_t)(i / qpk) * D;
        float *oi = o + (size_t)i * D, mnew = m[i];
        for (int j = 0; j < lim[i]; j++) {
            const float *kj = ki + (size_t)j * stride;
            float s = 0.0f;
            for (int d = 0; d < D; d++) s += qi[d] * kj[d];
            p[j] = s;
            mnew = fmaxf(mnew, s);
        }
        if (mnew == -INFINITY) continue; /* no key seen yet: nothing changes */
        float a = expf(m[i] - mnew), sum = 0.0f;
        for (int j = 0; j < lim[i]; j++) sum += p[j] = expf(p[j] - mnew);
        m[i] = mnew;
        l[i] = l[i] * a + sum;
        for (int d = 0; d < D; d++) oi[d] *= a;
        for (int j = 0; j < lim[i]; j++)
            for (int d = 0; d < D; d++) oi[d] += p[j] * vi[(size_t)j * stride + d];
    }
}
