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
 *
 * Each step is a call to the model's backend (backend/backend.h), which owns
 * every buffer named here. */
#include <math.h>

#include "models/transformer.h"

#define TRY(call)                                  \
    do {                                           \
        moe_status try_st_ = (call);               \
        if (try_st_ != MOE_OK) return try_st_;     \
    } while (0)

/* q, k and v of T rows of normalised input: one stacked projection split
 * into its parts, or three projections. */
static moe_status qkv_projections(moe_context *c, const model_layer *L, int T, int qdim, int kvdim)
{
    moe_backend *B = c->m->be;
    if (!L->wqkv) {
        TRY(B->linear(B, L->wq, c->xb, T, c->q));
        TRY(B->linear(B, L->wk, c->xb, T, c->k));
        return B->linear(B, L->wv, c->xb, T, c->v);
    }
    TRY(B->linear(B, L->wqkv, c->xb, T, c->qkv));
    int widths[3] = { qdim, kvdim, kvdim };
    float *parts[3] = { c->q, c->k, c->v };
    return B->split_cols(B, c->qkv, T, 3, widths, parts);
}

moe_status model_forward(moe_context *c, const int32_t *tokens, int T, float *logits, int all_positions)
{
    moe_model *m = c->m;
    moe_backend *B = m->be;
    const moe_model_config *p = &m->cfg;
    int D = p->hidden_size, H = p->num_heads, KV = p->num_kv_heads, hd = p->head_dim;
    int qdim = H * hd, kvdim = KV * hd, pos = c->pos;
    float eps = (float)p->rms_norm_eps;
    size_t layer_cache = (size_t)c->max_tokens * kvdim * moe_dtype_size(c->kv_dtype);

    // token embedding
    TRY(B->embed(B, m->embed, tokens, T, c->x));
    // rotation angles of this chunk's positions
    TRY(B->rope_angles(B, T, hd, p->rope_theta, pos, c->rope_cos, c->rope_sin));

    for (int l = 0; l < p->num_layers; l++) {
        model_layer *L = &m->layers[l];
        char *key_cache = (char *)c->key_cache + l * layer_cache, *value_cache = (char *)c->value_cache + l * layer_cache;
        size_t at = (size_t)pos * kvdim * moe_dtype_size(c->kv_dtype);

        // attention rmsnorm
        TRY(B->rmsnorm(B, T, D, c->x, L->attn_norm, eps, c->xb));
        // q, k, v
        TRY(qkv_projections(c, L, T, qdim, kvdim));
        // QK-norm over the whole projection, or over each head's hd values
        if (p->qk_norm == MOE_QK_NORM_WHOLE) {
            TRY(B->rmsnorm(B, T, qdim, c->q, L->q_norm, eps, c->q));
            TRY(B->rmsnorm(B, T, kvdim, c->k, L->k_norm, eps, c->k));
        } else if (p->qk_norm == MOE_QK_NORM_PER_HEAD) {
            TRY(B->rmsnorm(B, T * H, hd, c->q, L->q_norm, eps, c->q));
            TRY(B->rmsnorm(B, T * KV, hd, c->k, L->k_norm, eps, c->k));
        }
        if (p->clip_qkv > 0) {
            TRY(B->clip(B, (size_t)T * qdim, c->q, (float)p->clip_qkv));
            TRY(B->clip(B, (size_t)T * kvdim, c->k, (float)p->clip_qkv));
            TRY(B->clip(B, (size_t)T * kvdim, c->v, (float)p->clip_qkv));
        }
        // RoPE (rotate-half) on every head of q and k
        TRY(B->rope(B, T, H, hd, c->q, c->rope_cos, c->rope_sin));
        TRY(B->rope(B, T, KV, hd, c->k, c->rope_cos, c->rope_sin));
        // k and v into the cache at this chunk's positions, in its dtype
        TRY(B->kv_store(B, c->kv_dtype, c->k, key_cache + at, (size_t)T * kvdim));
        TRY(B->kv_store(B, c->kv_dtype, c->v, value_cache + at, (size_t)T * kvdim));
        // causal attention over every position so far (grouped-query)
        TRY(B->attention(B, T, pos, H, KV, hd, 1.0f / sqrtf((float)hd), c->q, c->kv_dtype, key_cache, value_cache,
                         (size_t)kvdim, c->att));
        // output projection and residual connection
        TRY(B->linear(B, L->wo, c->att, T, c->xb2));
        TRY(B->add(B, (size_t)T * D, c->x, c->xb2));

        // mlp rmsnorm
        TRY(B->rmsnorm(B, T, D, c->x, L->mlp_norm, eps, c->xb));
        if (L->router) {
            // router: softmax over all experts, top-k
            TRY(B->linear(B, L->router, c->xb, T, c->router_logits));
            TRY(B->router_topk(B, c->router_logits, T, p->num_experts, p->top_k, p->norm_topk_prob, c->expert_idx,
                               c->expert_w));
            // the chosen experts, weighted and summed
            TRY(B->experts(B, L->experts, c->xb, T, c->expert_idx, c->expert_w, p->top_k, c->xb2));
        } else {
            // a dense SwiGLU MLP: the one expert, weight 1, for every token
            TRY(B->experts(B, L->experts, c->xb, T, c->dense_idx, c->dense_w, 1, c->xb2));
        }
        // residual connection
        TRY(B->add(B, (size_t)T * D, c->x, c->xb2));
    }

    c->pos += T;
    if (!logits) return MOE_OK;
    // final rmsnorm and the classifier, at every position or the last only
    int first = all_positions ? 0 : T - 1, rows = T - first;
    TRY(B->rmsnorm(B, rows, D, c->x + (size_t)first * D, m->final_norm, eps, c->xb));
    if (B->host_memory) return B->linear(B, m->lm_head, c->xb, rows, logits);
    TRY(B->linear(B, m->lm_head, c->xb, rows, c->logits));
    return B->download(B, logits, c->logits, sizeof(float) * (size_t)rows * p->vocab_size);
}
