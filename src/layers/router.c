/* layers/router.c — softmax and top-k selection of experts. */
#include "layers/router.h"

#include <math.h>
#include <stddef.h>

#include "core/error.h"

/* Inserts expert e with probability p into the descending list (idx, val)
 * of length *n ≤ k; earlier (lower) experts win ties. */
static void insert_topk(int32_t *idx, float *val, int *n, int k, int32_t e, float p)
{
    int pos = *n;
    while (pos > 0 && val[pos - 1] < p) pos--;
    if (pos >= k) return;
    int last = *n < k ? *n : k - 1;
    for (int i = last; i > pos; i--) {
        idx[i] = idx[i - 1];
        val[i] = val[i - 1];
    }
    idx[pos] = e;
    val[pos] = p;
    if (*n < k) (*n)++;
}

moe_status moe_router_topk(const float *logits, int tokens, int experts, int top_k, int norm_topk_prob,
                           int32_t *indices, float *scores)
{
    if (!logits || !indices || !scores)
        return moe_error_set(MOE_ERR_INVALID_ARG, "router: logits, indices and scores must not be NULL");
    if (tokens < 0 || experts < 1)
        return moe_error_set(MOE_ERR_SHAPE, "router: %d tokens over %d experts", tokens, experts);
    if (top_k < 1 || top_k > experts)
        return moe_error_set(MOE_ERR_SHAPE, "router: top_k %d is outside 1..%d (experts)", top_k, experts);
    for (int t = 0; t < tokens; t++) {
        const float *z = logits + (size_t)t * experts;
        float zmax = z[0];
        for (int e = 0; e < experts; e++) {
            if (!isfinite(z[e]))
                return moe_error_set(MOE_ERR_RANGE, "router: token %d, expert %d: logit %g is not finite", t, e,
                                     (double)z[e]);
            zmax = fmaxf(zmax, z[e]);
        }
        float sum = 0.0f;
        for (int e = 0; e < experts; e++) sum += expf(z[e] - zmax);
        int32_t *idx = indices + (size_t)t * top_k;
        float *val = scores + (size_t)t * top_k;
        int n = 0;
        for (int e = 0; e < experts; e++) insert_topk(idx, val, &n, top_k, e, expf(z[e] - zmax) / sum);
        if (norm_topk_prob) {
            float s = 0.0f;
            for (int j = 0; j < top_k; j++) s += val[j];
            for (int j = 0; j < top_k; j++) val[j] /= s;
        }
    }
    return MOE_OK;
}
