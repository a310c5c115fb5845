/* models/forward.c — the forward pass of every family over a chunk of T
 * tokens, written once; the families' differences are the config's choices.
 *
 *   x = embed[tokens]
 *   per layer:
 *     h = rmsnorm(x)
 *     q = h·Wqᵀ, k = h·Wkᵀ, v = h·Wvᵀ
 *     QK-norm: rmsnorm of q and k over the whole projection (OLMoE), over
 *     each head (Qwen3-MoE), or none (Mixtral); clipped to ±clip_qkv when
 *     the config asks; RoPE on q and k
 *     x += Wo · causal_softmax(q·kᵀ/√hd) · v        (keys of every position so far)
 *     h = rmsnorm(x)
 *     MoE layer:   (experts, weights) = top_k(softmax(h·Wrouterᵀ)),
 *                  renormalised if norm_topk_prob (Mixtral: always)
 *                  x += Σ_j weight_j · SwitchGLU_expert_j(h)
 *     dense layer: x += SwiGLU(h)                  (Qwen3-MoE's mlp_only_layers)
 *   logits = rmsnorm(x)·Wheadᵀ
 */
#include <math.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/norm_rope.h"
#include "layers/router.h"
#include "models/transformer.h"

#define TRY(call)                                  \
    do {                                           \
        moe_status try_st_ = (call);               \
        if (try_st_ != MOE_OK) return try_st_;     \
    } while (0)

static void clip_rows(size_t n, float *x, float limit)
{
    for (size_t i = 0; i < n; i++) x[i] = x[i] > limit ? limit : x[i] < -limit ? -limit : x[i];
}

/* q, k and v of T rows of normalised input: one stacked projection split
 * into its parts, or three projections. */
static moe_status qkv_projections(moe_context *c, const model_layer *L, int T, int qdim, int kvdim)
{
    if (!L->wqkv) {
        moe_status st = moe_linear_forward(L->wq, c->xb, T, c->q);
        if (st == MOE_OK) st = moe_linear_forward(L->wk, c->xb, T, c->k);
        if (st == MOE_OK) st = moe_linear_forward(L->wv, c->xb, T, c->v);
        return st;
    }
    moe_status st = moe_linear_forward(L->wqkv, c->xb, T, c->qkv);
    if (st != MOE_OK) return st;
    size_t row = (size_t)qdim + 2 * (size_t)kvdim;
    for (int t = 0; t < T; t++) {
        const float *src = c->qkv + (size_t)t * row;
        memcpy(c->q + (size_t)t * qdim, src, sizeof(float) * (size_t)qdim);
        memcpy(c->k + (size_t)t * kvdim, src + qdim, sizeof(float) * (size_t)kvdim);
        memcpy(c->v + (size_t)t * kvdim, src + qdim + kvdim, sizeof(float) * (size_t)kvdim);
    }
    return MOE_OK;
}

static void add_rows(size_t n, float *x, const float *y)
{
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

moe_status model_forward(moe_context *c, const int32_t *tokens, int T, float *logits, int all_positions)
{
    moe_model *m = c->m;
    const moe_model_config *p = &m->cfg;
    int D = p->hidden_size, H = p->num_heads, KV = p->num_kv_heads, hd = p->head_dim;
    int qdim = H * hd, kvdim = KV * hd, pos = c->pos;
    float eps = (float)p->rms_norm_eps;
    size_t layer_cache = (size_t)c->max_tokens * kvdim * moe_dtype_size(c->kv_dtype);

    // token embedding
    for (int t = 0; t < T; t++) moe_linear_row(m->embed, tokens[t], c->x + (size_t)t * D);
    // rotation angles of this chunk's positions
    for (int t = 0; t < T; t++)
        moe_rope_angles(hd, p->rope_theta, pos + t, c->rope_cos + (size_t)t * (hd / 2),
                        c->rope_sin + (size_t)t * (hd / 2));

    for (int l = 0; l < p->num_layers; l++) {
        model_layer *L = &m->layers[l];
        char *key_cache = (char *)c->key_cache + l * layer_cache, *value_cache = (char *)c->value_cache + l * layer_cache;
        size_t at = (size_t)pos * kvdim * moe_dtype_size(c->kv_dtype);
        float *k = c->k, *v = c->v;

        // attention rmsnorm
        moe_rmsnorm_rows(T, D, c->x, L->attn_norm, eps, c->xb);
        // q, k, v
        TRY(qkv_projections(c, L, T, qdim, kvdim));
        // QK-norm over the whole projection, or over each head's hd values
        if (p->qk_norm == MOE_QK_NORM_WHOLE) {
            moe_rmsnorm_rows(T, qdim, c->q, L->q_norm, eps, c->q);
            moe_rmsnorm_rows(T, kvdim, k, L->k_norm, eps, k);
        } else if (p->qk_norm == MOE_QK_NORM_PER_HEAD) {
            moe_rmsnorm_rows(T * H, hd, c->q, L->q_norm, eps, c->q);
            moe_rmsnorm_rows(T * KV, hd, k, L->k_norm, eps, k);
        }
        if (p->clip_qkv > 0) {
            clip_rows((size_t)T * qdim, c->q, (float)p->clip_qkv);
            clip_rows((size_t)T * kvdim, k, (float)p->clip_qkv);
            clip_rows((size_t)T * kvdim, v, (float)p->clip_qkv);
        }
        // RoPE (rotate-half) on every head of q and k
        moe_rope_rows(T, H, hd, c->q, c->rope_cos, c->rope_sin);
        moe_rope_rows(T, KV, hd, k, c->rope_cos, c->rope_sin);
        // k and v into the cache at this chunk's positions, in its dtype
        moe_kv_store(c->kv_dtype, k, key_cache + at, (size_t)T * kvdim);
        moe_kv_store(c->kv_dtype, v, value_cache + at, (size_t)T * kvdim);
        // causal attention over every position so far (grouped-query)
        moe_attention_causal(T, pos, H, KV, hd, 1.0f / sqrtf((float)hd), c->q, c->kv_dtype, key_cache, value_cache,
                             (size_t)kvdim, c->att);
        // output projection and residual connection
        TRY(moe_linear_forward(L->wo, c->att, T, c->xb2));
        add_rows((size_t)T * D, c->x, c->xb2);

        // mlp rmsnorm
        moe_rmsnorm_rows(T, D, c->x, L->mlp_norm, eps, c->xb);
        if (L->router) {
            // router: softmax over all experts, top-k
            TRY(moe_linear_forward(L->router, c->xb, T, c->router_logits));
            TRY(moe_router_topk(c->router_logits, T, p->num_experts, p->top_k, p->norm_topk_prob, c->expert_idx,
                                c->expert_w));
            // the chosen experts, weighted and summed
            TRY(moe_switchglu_forward(L->experts, c->xb, T, c->expert_idx, c->expert_w, p->top_k, c->xb2));
        } else {
            // a dense SwiGLU MLP: the one expert, weight 1, for every token
            TRY(moe_switchglu_forward(L->experts, c->xb, T, c->dense_idx, c->dense_w, 1, c->xb2));
        }
        // residual connection
        add_rows((size_t)T * D, c->x, c->xb2);
    }

    c->pos += T;
    if (!logits) return MOE_OK;
    // final rmsnorm and the classifier, at every position or the last only
    int first = all_positions ? 0 : T - 1, rows = T - first;
    moe_rmsnorm_rows(rows, D, c->x + (size_t)first * D, m->final_norm, eps, c->xb);
    return moe_linear_forward(m->lm_head, c->xb, rows, logits);
}
