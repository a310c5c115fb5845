/* models/model.c — the public model API (moe/model.h) over the families
 * moe runs: creation, facts, contexts. */
#include <stdint.h>
#include <string.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/memory.h"
#include "kernels/kernels.h"
#include "backend/backend.h"
#include "models/transformer.h"

moe_model_options moe_model_default_options(void)
{
    moe_model_options o = { .fuse_gate_up = 1, .activations = -1, .kv_dtype = -1 };
    return o;
}

/* The backend of a device: the one place the choice is made. */
static moe_backend *backend_for(int device)
{
    if (device == MOE_DEVICE_CPU) return moe_backend_cpu_create();
    moe_backend *b = moe_backend_cuda_create();
    return b || device == MOE_DEVICE_CUDA ? b : moe_backend_cpu_create();
}

moe_status moe_device_available(moe_device d)
{
    if (d != MOE_DEVICE_AUTO && d != MOE_DEVICE_CPU && d != MOE_DEVICE_CUDA)
        return moe_error_set(MOE_ERR_INVALID_ARG, "device %d is not a moe_device", (int)d);
    moe_backend *b = backend_for(d);
    if (!b) return d == MOE_DEVICE_CUDA ? MOE_ERR_UNSUPPORTED : MOE_ERR_NOMEM;
    b->destroy(b);
    return MOE_OK;
}

moe_status moe_device_memory(moe_device d, size_t *used_bytes, size_t *total_bytes)
{
    if (!used_bytes || !total_bytes) return moe_error_set(MOE_ERR_INVALID_ARG, "device memory: a result pointer is NULL");
    *used_bytes = *total_bytes = 0;
    if (d != MOE_DEVICE_CUDA)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "device memory: only a GPU's is read (device cuda); the host's is "
                             "the process's RSS");
    size_t free_bytes = 0;
    moe_status st = moe_cuda_memory_info(&free_bytes, total_bytes);
    if (st == MOE_OK) *used_bytes = *total_bytes - free_bytes;
    return st;
}

static moe_model *model_new(const moe_model_options *opt)
{
    moe_model *m = moe_calloc(sizeof *m, "model");
    if (!m) return NULL;
    m->opt = opt ? *opt : moe_model_default_options();
    m->be = backend_for(m->opt.device);
    if (m->be && m->opt.profile) m->be = moe_backend_profile_wrap(m->be);
    if (!m->be) {
        moe_free(m);
        return NULL;
    }
    return m;
}

static void workspace_free(moe_model *m);

static moe_status finish(moe_model *m, moe_status st, moe_model **out)
{
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
    /* int8 activations are the CPU kernels' way; a GPU takes floats */
    return quantized && m->be->host_memory && moe_kernels()->panel_gemv_i8 ? MOE_ACT_INT8X2 : MOE_ACT_FLOAT;
}

moe_dtype model_choose_kv_dtype(const moe_model *m)
{
    if (m->opt.kv_dtype >= 0) return (moe_dtype)m->opt.kv_dtype;
    /* a quantized model's approximate paths keep halves: the CPU's int8
     * activations, and a GPU, where a long context's decode is the cache's
     * bytes; float activations on the CPU keep the exact float32 cache */
    int approximate = m->act != MOE_ACT_FLOAT || !m->be->host_memory;
    return m->bits && approximate ? MOE_DTYPE_F16 : MOE_DTYPE_F32;
}

/* Options a caller can get wrong: an error naming the field. */
static moe_status check_options(const moe_model_options *opt)
{
    if (!opt) return MOE_OK;
    if (opt->activations < -1 || opt->activations > MOE_ACT_INT8X2)
        return moe_error_set(MOE_ERR_INVALID_ARG, "model options: activations %d is not a moe_act_mode", opt->activations);
    if (opt->kv_dtype != -1 && opt->kv_dtype != MOE_DTYPE_F32 && opt->kv_dtype != MOE_DTYPE_F16 &&
        opt->kv_dtype != MOE_DTYPE_Q8)
        return moe_error_set(MOE_ERR_INVALID_ARG, "model options: kv_dtype %d is not F32, F16 or Q8", opt->kv_dtype);
    if (opt->device < MOE_DEVICE_AUTO || opt->device > MOE_DEVICE_CUDA)
        return moe_error_set(MOE_ERR_INVALID_ARG, "model options: device %d is not a moe_device", opt->device);
    return MOE_OK;
}

/* Options the chosen backend cannot run: refused before anything loads. */
static moe_status check_backend(const moe_model *m)
{
    if (m->opt.kv_dtype == MOE_DTYPE_Q8 && !m->be->kv_q8)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "model load: the %s backend has no 8-bit KV cache "
                             "(--kv-cache q8); use --kv-cache f16 or f32, or --device cpu", m->be->name);
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
    if ((st = check_backend(m)) != MOE_OK) return finish(m, st, out);
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
    if ((st = check_backend(m)) != MOE_OK) return finish(m, st, out);
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
    i.device = m->be->name;
    i.fused = c->num_layers > 0 ? m->be->experts_fused(m->layers[0].experts) : m->opt.fuse_gate_up;
    i.activations = m->bits ? m->act : MOE_ACT_FLOAT;
    i.kv_dtype = model_choose_kv_dtype(m);
    moe_backend *B = m->be;
    size_t head = B->linear_bytes(m->lm_head);
    size_t bytes = (m->lm_head != m->embed ? B->linear_bytes(m->embed) : 0) + head;
    size_t active = head + sizeof(float) * (size_t)c->hidden_size;
    for (int l = 0; l < c->num_layers; l++) {
        const model_layer *L = &m->layers[l];
        size_t dense = B->linear_bytes(L->wqkv) + B->linear_bytes(L->wq) + B->linear_bytes(L->wk) +
                       B->linear_bytes(L->wv) + B->linear_bytes(L->wo) + B->linear_bytes(L->router) +
                       sizeof(float) * (2 * (size_t)c->hidden_size + qk_norm_floats(c));
        size_t experts = B->experts_bytes(L->experts);
        bytes += dense + experts;
        /* a dense MLP is read whole each step; of the experts, top_k */
        active += dense + (L->router ? experts / (size_t)c->num_experts * (size_t)c->top_k : experts);
    }
    i.weight_bytes = bytes + sizeof(float) * (size_t)c->hidden_size;
    i.active_bytes_per_token = active;
    return i;
}

int moe_model_profile(const moe_model *m, moe_profile_entry *out, int max)
{
    double seconds[MOE_OP_COUNT];
    long calls[MOE_OP_COUNT];
    if (!m || !moe_backend_profile_read(m->be, seconds, calls)) return 0;
    int n = 0;
    for (int k = 0; k < MOE_OP_COUNT && n < max; k++)
        if (calls[k]) out[n++] = (moe_profile_entry){ moe_op_kind_name((moe_op_kind)k), seconds[k], calls[k] };
    return n;
}

void moe_model_profile_reset(moe_model *m)
{
    if (m) moe_backend_profile_reset(m->be);
}

moe_status moe_model_set_fused(moe_model *m, int fuse_gate_up)
{
    for (int l = 0; l < m->cfg.num_layers; l++) {
        moe_status st = m->be->experts_set_fused(m->be, m->layers[l].experts, fuse_gate_up);
        if (st != MOE_OK) return st;
    }
    m->opt.fuse_gate_up = fuse_gate_up != 0;
    return MOE_OK;
}

void model_free_weights(moe_model *m)
{
    moe_backend *B = m->be;
    if (!B) return;
    if (m->layers)
        for (int l = 0; l < m->cfg.num_layers; l++) {
            model_layer *L = &m->layers[l];
            B->free(B, L->attn_norm), B->free(B, L->q_norm), B->free(B, L->k_norm), B->free(B, L->mlp_norm);
            moe_bk_linear *lin[6] = { L->wqkv, L->wq, L->wk, L->wv, L->wo, L->router };
            for (int i = 0; i < 6; i++) B->linear_free(B, lin[i]);
            B->experts_free(B, L->experts);
        }
    moe_free(m->layers);
    if (m->lm_head != m->embed) B->linear_free(B, m->lm_head);
    B->linear_free(B, m->embed);
    B->free(B, m->final_norm);
    m->layers = NULL;
    m->embed = m->lm_head = NULL;
    m->final_norm = NULL;
}

void moe_model_free(moe_model *m)
{
    if (!m) return;
    if (m->be) workspace_free(m);
    model_free_weights(m);
    if (m->be) m->be->destroy(m->be);
    moe_config_free(&m->cfg);
    moe_free(m);
}

/* ---- the activations' workspace ---- */

enum { MAX_BUFFERS = 20 };

typedef struct {
    void **p;
    size_t bytes;
    const char *what;
} ws_buf;

/* Every backend buffer of a workspace of `rows` rows with its size. */
static int workspace_buffers(moe_model *m, int rows, ws_buf *b)
{
    const moe_model_config *p = &m->cfg;
    model_workspace *w = &m->ws;
    size_t T = (size_t)rows, D = (size_t)p->hidden_size, qdim = (size_t)p->num_heads * p->head_dim;
    size_t kvdim = (size_t)p->num_kv_heads * p->head_dim, F = sizeof(float);
    int n = 0;
#define BUF(ptr, size, name) b[n++] = (ws_buf){ (void **)&(ptr), (size), (name) }
    BUF(w->x, F * T * D, "residual stream");
    BUF(w->xb, F * T * D, "normalised activations");
    BUF(w->xb2, F * T * D, "block output");
    BUF(w->q, F * T * qdim, "queries");
    BUF(w->k, F * T * kvdim, "keys");
    BUF(w->v, F * T * kvdim, "values");
    BUF(w->qkv, F * T * (qdim + 2 * kvdim), "q, k and v");
    BUF(w->att, F * T * qdim, "attention output");
    BUF(w->router_logits, F * T * p->num_experts, "router logits");
    BUF(w->expert_idx, sizeof(int32_t) * T * p->top_k, "expert choices");
    BUF(w->expert_w, F * T * p->top_k, "expert weights");
    BUF(w->dense_idx, sizeof(int32_t) * T, "dense expert choices");
    BUF(w->dense_w, F * T, "dense expert weights");
    BUF(w->rope_cos, F * T * (p->head_dim / 2 + 1), "rotation angles");
    BUF(w->rope_sin, F * T * (p->head_dim / 2 + 1), "rotation angles");
#undef BUF
    return n;
}

/* The token rows' buffers (not the classifier's rows). */
static void workspace_free_rows(moe_model *m)
{
    moe_backend *B = m->be;
    ws_buf bufs[MAX_BUFFERS];
    int n = workspace_buffers(m, 0, bufs);
    for (int i = 0; i < n; i++) {
        B->free(B, *bufs[i].p);
        *bufs[i].p = NULL;
    }
    moe_free(m->ws.tokens);
    m->ws.tokens = NULL;
    m->ws.rows = 0;
}

static void workspace_free(moe_model *m)
{
    workspace_free_rows(m);
    m->be->free(m->be, m->ws.logits);
    m->ws.logits = NULL;
    m->ws.logit_rows = 0;
}

/* Room for `rows` token rows and `logit_rows` classifier rows: grown (not
 * kept) when a batch needs more than the workspace holds. */
static moe_status workspace_reserve(moe_model *m, int rows, int logit_rows)
{
    moe_backend *B = m->be;
    model_workspace *w = &m->ws;
    if (logit_rows > w->logit_rows) {
        B->free(B, w->logits);
        size_t bytes = sizeof(float) * (size_t)logit_rows * m->cfg.vocab_size;
        if (!(w->logits = B->alloc(B, bytes, "logits"))) {
            w->logit_rows = 0;
            return MOE_ERR_NOMEM;
        }
        w->logit_rows = logit_rows;
    }
    if (rows <= w->rows) return MOE_OK;
    workspace_free_rows(m);
    ws_buf bufs[MAX_BUFFERS];
    int n = workspace_buffers(m, rows, bufs);
    for (int i = 0; i < n; i++)
        if (!(*bufs[i].p = B->alloc(B, bufs[i].bytes, bufs[i].what))) {
            workspace_free_rows(m);
            return MOE_ERR_NOMEM;
        }
    /* a dense MLP's one expert at weight 1 for every token */
    int32_t *zeros = moe_calloc(sizeof(int32_t) * (size_t)rows, "dense expert choices");
    float *ones = moe_alloc(sizeof(float) * (size_t)rows, "dense expert weights");
    w->tokens = moe_alloc(sizeof(int32_t) * (size_t)rows, "batch tokens");
    moe_status st = zeros && ones && w->tokens ? MOE_OK : MOE_ERR_NOMEM;
    for (int t = 0; ones && t < rows; t++) ones[t] = 1.0f;
    if (st == MOE_OK) st = B->upload(B, w->dense_idx, zeros, sizeof(int32_t) * (size_t)rows);
    if (st == MOE_OK) st = B->upload(B, w->dense_w, ones, sizeof(float) * (size_t)rows);
    moe_free(zeros), moe_free(ones);
    if (st != MOE_OK) {
        workspace_free_rows(m);
        return st;
    }
    w->rows = rows;
    return MOE_OK;
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
    c->kv_dtype = model_choose_kv_dtype(m);
    /* the cache is reserved whole but its pages are only touched as
     * positions fill, so resident memory follows the sequence's length */
    int64_t dims[3] = { p->num_layers, max_tokens, (int64_t)moe_kv_row_bytes(c->kv_dtype, p->num_kv_heads, p->head_dim) };
    size_t cache;
    if (!moe_size_product(dims, 3, &cache)) {
        moe_free(c);
        return moe_error_set(MOE_ERR_RANGE, "context create: a KV cache of %d tokens over %d layers does not fit in "
                             "memory's address range; ask for fewer tokens (--max-context)", max_tokens, p->num_layers);
    }
    moe_backend *B = m->be;
    if (!(c->key_cache = B->alloc(B, cache, "key cache")) || !(c->value_cache = B->alloc(B, cache, "value cache"))) {
        moe_context_free(c);
        return MOE_ERR_NOMEM;
    }
    *out = c;
    return MOE_OK;
}

/* An item as moe_context_eval checks it; `s` names it in messages. */
static moe_status check_item(const moe_batch_item *it, int s)
{
    moe_context *c = it->ctx;
    if (!c || (!it->tokens && it->n > 0))
        return moe_error_set(MOE_ERR_INVALID_ARG, "eval: sequence %d: context and tokens must not be NULL", s);
    if (it->n < 1) return moe_error_set(MOE_ERR_INVALID_ARG, "eval: token count %d must be positive", it->n);
    if (it->n > c->max_chunk)
        return moe_error_set(MOE_ERR_INVALID_ARG, "eval: %d tokens exceed the chunk size %d", it->n, c->max_chunk);
    if (c->pos + it->n > c->max_tokens)
        return moe_error_set(MOE_ERR_RANGE, "eval: %d more tokens after %d do not fit the context of %d tokens", it->n,
                             c->pos, c->max_tokens);
    int V = c->m->cfg.vocab_size;
    for (int i = 0; i < it->n; i++)
        if (it->tokens[i] < 0 || it->tokens[i] >= V)
            return moe_error_set(MOE_ERR_RANGE, "eval: token id %d (at %d) is outside the vocabulary 0..%d",
                                 (int)it->tokens[i], i, V - 1);
    return MOE_OK;
}

moe_status moe_context_eval_batch(const moe_batch_item *items, int count)
{
    if (!items || count < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "eval batch: %d sequences given; at least one is needed", count);
    moe_model *m = items[0].ctx ? items[0].ctx->m : NULL;
    long total = 0, logit_rows = 0;
    for (int s = 0; s < count; s++) {
        moe_status st = check_item(&items[s], s);
        if (st != MOE_OK) return st;
        if (items[s].ctx->m != m)
            return moe_error_set(MOE_ERR_INVALID_ARG, "eval batch: sequence %d's context belongs to another model", s);
        for (int r = 0; r < s; r++)
            if (items[r].ctx == items[s].ctx)
                return moe_error_set(MOE_ERR_INVALID_ARG, "eval batch: sequences %d and %d share one context", r, s);
        total += items[s].n;
        logit_rows += model_item_logit_rows(&items[s]);
    }
    if (total > INT32_MAX / 2)
        return moe_error_set(MOE_ERR_RANGE, "eval batch: %ld tokens in one batch is too many", total);
    /* one sequence on host memory writes its logits straight to its caller */
    int direct = count == 1 && m->be->host_memory && items[0].logits;
    moe_status st = workspace_reserve(m, (int)total, direct ? 0 : (int)logit_rows);
    if (st != MOE_OK) return st;
    int *row0 = moe_alloc(sizeof(int) * (size_t)count, "batch rows");
    if (!row0) return MOE_ERR_NOMEM;
    for (int s = 0, r = 0; s < count; r += items[s].n, s++) {
        row0[s] = r;
        memcpy(m->ws.tokens + r, items[s].tokens, sizeof(int32_t) * (size_t)items[s].n);
    }
    model_batch b = { .items = items, .count = count, .T = (int)total, .row0 = row0 };
    st = model_forward(m, &b);
    moe_free(row0);
    return st;
}

moe_status moe_context_eval(moe_context *c, const int32_t *tokens, int n, float *logits, int all_positions)
{
    moe_batch_item it = { .ctx = c, .tokens = tokens, .n = n, .logits = logits, .all_positions = all_positions };
    return moe_context_eval_batch(&it, 1);
}

moe_status moe_context_eval_greedy(moe_context *c, const int32_t *tokens, int n, int32_t *id)
{
    if (!id) return moe_error_set(MOE_ERR_INVALID_ARG, "eval greedy: the id's destination must not be NULL");
    moe_batch_item it = { .ctx = c, .tokens = tokens, .n = n, .greedy = id };
    return moe_context_eval_batch(&it, 1);
}

int moe_context_position(const moe_context *c) { return c->pos; }
moe_model *moe_context_model(const moe_context *c) { return c->m; }
void moe_context_reset(moe_context *c) { c->pos = 0; }

moe_status moe_context_truncate(moe_context *c, int n)
{
    if (!c) return moe_error_set(MOE_ERR_INVALID_ARG, "context truncate: context is NULL");
    if (n < 0 || n > c->pos)
        return moe_error_set(MOE_ERR_RANGE, "context truncate: %d is outside the %d positions held", n, c->pos);
    c->pos = n;   /* later writes overwrite the forgotten rows; attention reads rows < pos only */
    return MOE_OK;
}

void moe_context_free(moe_context *c)
{
    if (!c) return;
    moe_backend *B = c->m->be;
    B->free(B, c->key_cache);
    B->free(B, c->value_cache);
    moe_free(c);
}
