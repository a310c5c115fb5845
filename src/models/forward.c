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
 * The T rows are the tokens of every sequence of a batch, one sequence after
 * another: each step runs over all of them at once, but for the KV cache and
 * attention, which each sequence does over its own cache. Each step is a
 * call to the model's backend (backend/backend.h), which owns every buffer
 * named here. */
#include <math.h>

#include "models/transformer.h"

#define TRY(call)                                  \
    do {                                           \
        moe_status try_st_ = (call);               \
        if (try_st_ != MOE_OK) return try_st_;     \
    } while (0)

/* q, k and v of T rows of normalised input: one stacked projection split
 * into its parts, or three projections. */
static moe_status qkv_projections(moe_model *m, const model_layer *L, int T, int qdim, int kvdim)
{
    moe_backend *B = m->be;
    model_workspace *w = &m->ws;
    if (!L->wqkv) {
        TRY(B->linear(B, L->wq, w->xb, T, w->q));
        TRY(B->linear(B, L->wk, w->xb, T, w->k));
        return B->linear(B, L->wv, w->xb, T, w->v);
    }
    TRY(B->linear(B, L->wqkv, w->xb, T, w->qkv));
    int widths[3] = { qdim, kvdim, kvdim };
    float *parts[3] = { w->q, w->k, w->v };
    return B->split_cols(B, w->qkv, T, 3, widths, parts);
}

/* Layer l's keys in context c's cache, from row 0. */
static char *key_cache(const moe_context *c, int l, size_t row_bytes)
{
    return (char *)c->key_cache + (size_t)l * c->max_tokens * row_bytes;
}

static char *value_cache(const moe_context *c, int l, size_t row_bytes)
{
    return (char *)c->value_cache + (size_t)l * c->max_tokens * row_bytes;
}

/* The classifier's rows: each sequence's last position, or all its
 * positions when asked, and the greedy choice at the last where asked. One
 * sequence writes its logits straight into its caller's buffer where the
 * backend's memory is the host's; otherwise the rows are gathered,
 * classified in one call and handed out — on a GPU the greedy choice is
 * made there, and only its id comes back. */
static moe_status classify(moe_model *m, const model_batch *b, float eps)
{
    moe_backend *B = m->be;
    model_workspace *w = &m->ws;
    int D = m->cfg.hidden_size, V = m->cfg.vocab_size, R = 0;
    for (int s = 0; s < b->count; s++) {
        const moe_batch_item *it = &b->items[s];
        int rows = model_item_logit_rows(it), first = it->n - rows;
        if (!rows) continue;
        TRY(B->rmsnorm(B, rows, D, w->x + (size_t)(b->row0[s] + first) * D, m->final_norm, eps,
                       w->xb + (size_t)R * D));
        R += rows;
    }
    if (R == 0) return MOE_OK;
    int direct = b->count == 1 && B->host_memory && b->items[0].logits;
    float *logits = direct ? b->items[0].logits : w->logits;
    TRY(B->linear(B, m->lm_head, w->xb, R, logits));
    for (int s = 0, r = 0; s < b->count; s++) {
        const moe_batch_item *it = &b->items[s];
        int rows = model_item_logit_rows(it);
        if (it->greedy) TRY(B->argmax_rows(B, logits + (size_t)(r + rows - 1) * V, 1, V, it->greedy));
        if (it->logits && !direct)
            TRY(B->download(B, it->logits, logits + (size_t)r * V, sizeof(float) * (size_t)rows * V));
        r += rows;
    }
    return MOE_OK;
}

moe_status model_forward(moe_model *m, const model_batch *b)
{
    moe_backend *B = m->be;
    model_workspace *w = &m->ws;
    const moe_model_config *p = &m->cfg;
    int D = p->hidden_size, H = p->num_heads, KV = p->num_kv_heads, hd = p->head_dim, T = b->T;
    int qdim = H * hd, kvdim = KV * hd;
    float eps = (float)p->rms_norm_eps;

    // one sequence's step may be recorded and replayed by the backend (backend.h)
    int stepped = b->count == 1 && B->step_begin;
    if (stepped) TRY(B->step_begin(B, b->items[0].ctx, T, b->items[0].ctx->pos));
    // token embedding
    TRY(B->embed(B, m->embed, w->tokens, T, w->x));
    // rotation angles of each row's position in its sequence
    for (int s = 0; s < b->count; s++)
        TRY(B->rope_angles(B, b->items[s].n, hd, p->rope_theta, b->items[s].ctx->pos,
                           w->rope_cos + (size_t)b->row0[s] * (hd / 2), w->rope_sin + (size_t)b->row0[s] * (hd / 2)));

    for (int l = 0; l < p->num_layers; l++) {
        model_layer *L = &m->layers[l];

        // attention rmsnorm
        TRY(B->rmsnorm(B, T, D, w->x, L->attn_norm, eps, w->xb));
        // q, k, v
        TRY(qkv_projections(m, L, T, qdim, kvdim));
        // QK-norm over the whole projection, or over each head's hd values
        if (p->qk_norm == MOE_QK_NORM_WHOLE) {
            TRY(B->rmsnorm(B, T, qdim, w->q, L->q_norm, eps, w->q));
            TRY(B->rmsnorm(B, T, kvdim, w->k, L->k_norm, eps, w->k));
        } else if (p->qk_norm == MOE_QK_NORM_PER_HEAD) {
            TRY(B->rmsnorm(B, T * H, hd, w->q, L->q_norm, eps, w->q));
            TRY(B->rmsnorm(B, T * KV, hd, w->k, L->k_norm, eps, w->k));
        }
        if (p->clip_qkv > 0) {
            TRY(B->clip(B, (size_t)T * qdim, w->q, (float)p->clip_qkv));
            TRY(B->clip(B, (size_t)T * kvdim, w->k, (float)p->clip_qkv));
            TRY(B->clip(B, (size_t)T * kvdim, w->v, (float)p->clip_qkv));
        }
        // RoPE (rotate-half) on every head of q and k
        TRY(B->rope(B, T, H, hd, w->q, w->rope_cos, w->rope_sin));
        TRY(B->rope(B, T, KV, hd, w->k, w->rope_cos, w->rope_sin));
        for (int s = 0; s < b->count; s++) {
            const moe_context *c = b->items[s].ctx;
            size_t r0 = (size_t)b->row0[s], n = (size_t)b->items[s].n, row = moe_kv_row_bytes(c->kv_dtype, KV, hd);
            size_t stride = row / moe_dtype_size(c->kv_dtype); /* elements (Q8: bytes) from row to row */
            char *kc = key_cache(c, l, row), *vc = value_cache(c, l, row);
            // this sequence's k and v into its cache at its positions, in its dtype
            TRY(B->kv_store(B, c->kv_dtype, w->k + r0 * kvdim, kc + (size_t)c->pos * row, n * kvdim, hd));
            TRY(B->kv_store(B, c->kv_dtype, w->v + r0 * kvdim, vc + (size_t)c->pos * row, n * kvdim, hd));
            // causal attention over every position of the sequence so far (grouped-query)
            TRY(B->attention(B, (int)n, c->pos, H, KV, hd, 1.0f / sqrtf((float)hd), w->q + r0 * qdim, c->kv_dtype,
                             kc, vc, stride, w->att + r0 * qdim));
        }
        // output projection and residual connection
        TRY(B->linear(B, L->wo, w->att, T, w->xb2));
        TRY(B->add(B, (size_t)T * D, w->x, w->xb2));

        // mlp rmsnorm
        TRY(B->rmsnorm(B, T, D, w->x, L->mlp_norm, eps, w->xb));
        if (L->router) {
            // router: softmax over all experts, top-k
            TRY(B->linear(B, L->router, w->xb, T, w->router_logits));
            TRY(B->router_topk(B, w->router_logits, T, p->num_experts, p->top_k, p->norm_topk_prob, w->expert_idx,
                               w->expert_w));
            // the chosen experts, weighted and summed
            TRY(B->experts(B, L->experts, w->xb, T, w->expert_idx, w->expert_w, p->top_k, w->xb2));
        } else {
            // a dense SwiGLU MLP: the one expert, weight 1, for every token
            TRY(B->experts(B, L->experts, w->xb, T, w->dense_idx, w->dense_w, 1, w->xb2));
        }
        // residual connection
        TRY(B->add(B, (size_t)T * D, w->x, w->xb2));
    }

    if (stepped) TRY(B->step_end(B));
    // final rmsnorm and the classifier
    TRY(classify(m, b, eps));
    for (int s = 0; s < b->count; s++) b->items[s].ctx->pos += b->items[s].n;
    return MOE_OK;
}
