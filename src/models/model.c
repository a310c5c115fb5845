/* models/model.c — the public model API (moe/model.h) over the families
 * moe runs: creation, facts, contexts. */
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "kernels/kernels.h"
#include "models/transformer.h"

moe_model_options moe_model_default_options(void)
{
    moe_model_options o = { .fuse_gate_up = 1, .activations = -1, .kv_dtype = -1 };
    return o;
}

static moe_model *model_new(const moe_model_options *opt)
{
    moe_model *m = moe_calloc(sizeof *m, "model");
    if (m) m->opt = opt ? *opt : moe_model_default_options();
    return m;
}

/* The layers run one at a time: all projections share one workspace, all
 * expert layers another, so activation buffers are held once. */
static moe_status share_workspaces(moe_model *m)
{
    moe_status st = MOE_OK;
    if (m->lm_head != m->embed) st = moe_linear_share_workspace(m->lm_head, m->embed);
    for (int l = 0; l < m->cfg.num_layers && st == MOE_OK; l++) {
        model_layer *L = &m->layers[l];
        moe_linear *lin[6] = { L->wqkv, L->wq, L->wk, L->wv, L->wo, L->router };
        for (int i = 0; i < 6 && st == MOE_OK; i++)
            if (lin[i]) st = moe_linear_share_workspace(lin[i], m->embed);
        if (st == MOE_OK && l > 0) st = moe_switchglu_share_workspace(L->experts, m->layers[0].experts);
    }
    return st;
}

static moe_status finish(moe_model *m, moe_status st, moe_model **out)
{
    if (st == MOE_OK) st = share_workspaces(m);
    if (st != MOE_OK) {
        moe_model_free(m);
        return st;
    }
    *out = m;
    return MOE_OK;
}

moe_act_mode model_choose_activations(const moe_model *m, int quantized)
{
    if (m->opt.activations >= 0) return (moe_act_mode)m->opt.activations;
    return quantized && moe_kernels()->panel_gemv_i8 ? MOE_ACT_INT8X2 : MOE_ACT_FLOAT;
}

moe_dtype model_choose_kv_dtype(const moe_model *m)
{
    if (m->opt.kv_dtype >= 0) return (moe_dtype)m->opt.kv_dtype;
    return m->bits && m->act != MOE_ACT_FLOAT ? MOE_DTYPE_F16 : MOE_DTYPE_F32;
}

/* Options a caller can get wrong: an error naming the field. */
static moe_status check_options(const moe_model_options *opt)
{
    if (!opt) return MOE_OK;
    if (opt->activations < -1 || opt->activations > MOE_ACT_INT8X2)
        return moe_error_set(MOE_ERR_INVALID_ARG, "model options: activations %d is not a moe_act_mode", opt->activations);
    if (opt->kv_dtype != -1 && opt->kv_dtype != MOE_DTYPE_F32 && opt->kv_dtype != MOE_DTYPE_F16)
        return moe_error_set(MOE_ERR_INVALID_ARG, "model options: kv_dtype %d is not F32 or F16", opt->kv_dtype);
    return MOE_OK;
}

moe_status moe_model_load(const char *dir, const moe_model_options *opt, moe_model **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "model load: output pointer is NULL");
    *out = NULL;
    if (!dir) return moe_error_set(MOE_ERR_INVALID_ARG, "model load: no model directory given");
    moe_status st = check_options(opt);
    if (st != MOE_OK) return st;
    moe_model *m = model_new(opt);
    if (!m) return MOE_ERR_NOMEM;
    return finish(m, model_load_dir(m, dir), out);
}

moe_status moe_model_synthetic(const char *arch, int bits, int layers, uint64_t seed, const moe_model_options *opt,
                               moe_model **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "synthetic model: output pointer is NULL");
    *out = NULL;
    if (bits != 4 && bits != 8 && bits != 16)
        return moe_error_set(MOE_ERR_INVALID_ARG, "synthetic model: bits %d is not 4, 8 or 16", bits);
    if (layers < 0) return moe_error_set(MOE_ERR_INVALID_ARG, "synthetic model: layers %d is negative", layers);
    moe_status st = check_options(opt);
    if (st != MOE_OK) return st;
    moe_model *m = model_new(opt);
    if (!m) return MOE_ERR_NOMEM;
    m->cfg.num_layers = layers;
    return finish(m, model_synthetic(m, arch ? arch : "olmoe", bits, seed), out);
}

const char *moe_model_synthetic_name(const char *arch) { return model_synthetic_name(arch ? arch : "olmoe"); }

/* The QK-norm weights of one layer. */
static size_t qk_norm_floats(const moe_model_config *c)
{
    if (c->qk_norm == MOE_QK_NORM_WHOLE) return (size_t)(c->num_heads + c->num_kv_heads) * c->head_dim;
    return c->qk_norm == MOE_QK_NORM_PER_HEAD ? 2 * (size_t)c->head_dim : 0;
}

moe_model_info moe_model_get_info(const moe_model *m)
{
    const moe_model_config *c = &m->cfg;
    moe_model_info i = {
        .architecture = moe_arch_name(c->arch), .vocab_size = c->vocab_size, .hidden_size = c->hidden_size,
        .num_layers = c->num_layers, .num_heads = c->num_heads, .num_kv_heads = c->num_kv_heads,
        .head_dim = c->head_dim, .num_experts = c->num_experts, .top_k = c->top_k,
        .expert_hidden = c->expert_hidden, .max_position = c->max_position, .bos_id = c->bos_id,
        .num_eos = c->num_eos, .eos_ids = c->eos_ids, .bits = m->bits,
    };
    if (c->sliding_window > 0 && c->sliding_window < i.max_position) i.max_position = c->sliding_window;
    i.fused = c->num_layers > 0 ? moe_switchglu_fused(m->layers[0].experts) : m->opt.fuse_gate_up;
    i.activations = m->bits ? m->act : MOE_ACT_FLOAT;
    i.kv_dtype = model_choose_kv_dtype(m);
    size_t head = moe_linear_weight_bytes(m->lm_head);
    size_t bytes = (m->lm_head != m->embed ? moe_linear_weight_bytes(m->embed) : 0) + head;
    size_t active = head + sizeof(float) * (size_t)c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        const model_layer *L = &m->layers[l];
        size_t dense = (L->wqkv ? moe_linear_weight_bytes(L->wqkv)
                                : moe_linear_weight_bytes(L->wq) + moe_linear_weight_bytes(L->wk) +
                                      moe_linear_weight_bytes(L->wv)) +
                       moe_linear_weight_bytes(L->wo) + moe_linear_weight_bytes(L->router) +
                       sizeof(float) * (2 * (size_t)c->hidden_size + qk_norm_floats(c));
        size_t experts = moe_switchglu_weight_bytes(L->experts);
        bytes += dense + experts;
        /* a dense MLP is read whole each step; of the experts, top_k */
        active += dense + (L->router ? experts / (size_t)c->num_experts * (size_t)c->top_k : experts);
    }
    i.weight_bytes = bytes + sizeof(float) * (size_t)c->hidden_size;
    i.active_bytes_per_token = active;
    return i;
}

moe_status moe_model_set_fused(moe_model *m, int fuse_gate_up)
{
    for (int l = 0; l < m->cfg.num_layers; l++) {
        moe_status st = moe_switchglu_set_fused(m->layers[l].experts, fuse_gate_up);
        if (st != MOE_OK) return st;
    }
    m->opt.fuse_gate_up = fuse_gate_up != 0;
    return MOE_OK;
}

void model_free_weights(moe_model *m)
{
    if (m->layers)
        for (int l = 0; l < m->cfg.num_layers; l++) {
            model_layer *L = &m->layers[l];
            moe_free(L->attn_norm), moe_free(L->q_norm), moe_free(L->k_norm), moe_free(L->mlp_norm);
            moe_linear_free(L->wqkv), moe_linear_free(L->wq), moe_linear_free(L->wk), moe_linear_free(L->wv);
            moe_linear_free(L->wo);
            moe_linear_free(L->router);
            moe_switchglu_free(L->experts);
        }
    moe_free(m->layers);
    if (m->lm_head != m->embed) moe_linear_free(m->lm_head);
    moe_linear_free(m->embed);
    moe_free(m->final_norm);
    m->layers = NULL;
    m->embed = m->lm_head = NULL;
    m->final_norm = NULL;
}

void moe_model_free(moe_model *m)
{
    if (!m) return;
    model_free_weights(m);
    moe_config_free(&m->cfg);
    moe_free(m);
}

/* ---- contexts ---- */

moe_status moe_context_create(moe_model *m, int max_tokens, int max_chunk, moe_context **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "context create: output pointer is NULL");
    *out = NULL;
    if (!m) return moe_error_set(MOE_ERR_INVALID_ARG, "context create: model is NULL");
    if (max_tokens < 1 || max_chunk < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "context create: max tokens %d and chunk %d must be positive",
                             max_tokens, max_chunk);
    if (max_chunk > max_tokens) max_chunk = max_tokens;
    const moe_model_config *p = &m->cfg;
    /* within its window a sliding-window model attends to every key, as
     * full attention does; past it, keys would have to drop out */
    if (p->sliding_window > 0 && max_tokens > p->sliding_window)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "context create: %d tokens exceed the model's sliding_window of %d; "
                             "moe runs contexts up to the window (--max-context %d)", max_tokens, p->sliding_window,
                             p->sliding_window);
    moe_context *c = moe_calloc(sizeof *c, "context");
    if (!c) return MOE_ERR_NOMEM;
    c->m = m;
    c->max_tokens = max_tokens;
    c->max_chunk = max_chunk;
    size_t T = (size_t)max_chunk, D = (size_t)p->hidden_size, qdim = (size_t)p->num_heads * p->head_dim;
    size_t kvdim = (size_t)p->num_kv_heads * p->head_dim;
    c->kv_dtype = model_choose_kv_dtype(m);
    size_t cache = (size_t)p->num_layers * max_tokens * kvdim * moe_dtype_size(c->kv_dtype);
    /* the cache is reserved whole but its pages are only touched as
     * positions fill, so resident memory follows the sequence's length */
    c->key_cache = moe_alloc(cache, "key cache");
    c->value_cache = moe_alloc(cache, "value cache");
    c->k = moe_alloc(sizeof(float) * T * kvdim, "keys");
    c->qkv = moe_alloc(sizeof(float) * T * (qdim + 2 * kvdim), "q, k and v");
    c->v = moe_alloc(sizeof(float) * T * kvdim, "values");
    c->x = moe_alloc(sizeof(float) * T * D, "residual stream");
    c->xb = moe_alloc(sizeof(float) * T * D, "normalised activations");
    c->xb2 = moe_alloc(sizeof(float) * T * D, "block output");
    c->q = moe_alloc(sizeof(float) * T * qdim, "queries");
    c->att = moe_alloc(sizeof(float) * T * qdim, "attention output");
    c->router_logits = moe_alloc(sizeof(float) * T * p->num_experts, "router logits");
    c->expert_idx = moe_alloc(sizeof(int32_t) * T * p->top_k, "expert choices");
    c->expert_w = moe_alloc(sizeof(float) * T * p->top_k, "expert weights");
    c->dense_idx = moe_calloc(sizeof(int32_t) * T, "dense expert choices");
    c->dense_w = moe_alloc(sizeof(float) * T, "dense expert weights");
    for (size_t t = 0; c->dense_w && t < T; t++) c->dense_w[t] = 1.0f;
    c->rope_cos = moe_alloc(sizeof(float) * T * (p->head_dim / 2 + 1), "rotation angles");
    c->rope_sin = moe_alloc(sizeof(float) * T * (p->head_dim / 2 + 1), "rotation angles");
    if (!c->key_cache || !c->value_cache || !c->k || !c->v || !c->qkv || !c->x || !c->xb || !c->xb2 || !c->q || !c->att || !c->router_logits ||
        !c->expert_idx || !c->expert_w || !c->dense_idx || !c->dense_w || !c->rope_cos || !c->rope_sin) {
        moe_context_free(c);
        return MOE_ERR_NOMEM;
    }
    *out = c;
    return MOE_OK;
}

moe_status moe_context_eval(moe_context *c, const int32_t *tokens, int n, float *logits, int all_positions)
{
    if (!c || (!tokens && n > 0))
        return moe_error_set(MOE_ERR_INVALID_ARG, "eval: context and tokens must not be NULL");
    if (n < 1) return moe_error_set(MOE_ERR_INVALID_ARG, "eval: token count %d must be positive", n);
    if (n > c->max_chunk)
        return moe_error_set(MOE_ERR_INVALID_ARG, "eval: %d tokens exceed the chunk size %d", n, c->max_chunk);
    if (c->pos + n > c->max_tokens)
        return moe_error_set(MOE_ERR_RANGE, "eval: %d more tokens after %d do not fit the context of %d tokens", n,
                             c->pos, c->max_tokens);
    int V = c->m->cfg.vocab_size;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return moe_error_set(MOE_ERR_RANGE, "eval: token id %d (at %d) is outside the vocabulary 0..%d",
                                 (int)tokens[i], i, V - 1);
    return model_forward(c, tokens, n, logits, all_positions);
}

int moe_context_position(const moe_context *c) { return c->pos; }
moe_model *moe_context_model(const moe_context *c) { return c->m; }
void moe_context_reset(moe_context *c) { c->pos = 0; }

void moe_context_free(moe_context *c)
{
    if (!c) return;
    moe_free(c->key_cache), moe_free(c->value_cache), moe_free(c->k), moe_free(c->v), moe_free(c->qkv);
    moe_free(c->x), moe_free(c->xb), moe_free(c->xb2), moe_free(c->q), moe_free(c->att);
    moe_free(c->router_logits), moe_free(c->expert_idx), moe_free(c->expert_w);
    moe_free(c->dense_idx), moe_free(c->dense_w);
    moe_free(c->rope_cos), moe_free(c->rope_sin);
    moe_free(c);
}
