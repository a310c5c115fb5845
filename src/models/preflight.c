/* models/preflight.c — moe_model_estimate_memory (moe/model.h): what a
 * checkpoint will take in memory once loaded, from config.json and the
 * safetensors headers, before any weight is read.
 *
 *   weights      each tensor as the loader keeps it: matrices (float or
 *                quantized) as stored, norm vectors in float32; a tied
 *                head is the embedding, not a second copy (the rule of
 *                moe_checkpoint_inspect's resident_bytes)
 *   KV cache     2 (keys, values) × layers × positions × KV heads × head_dim
 *                × the cache's element size — reserved whole, so a long
 *                conversation cannot outgrow the memory checked here
 *   activations  a context's buffers for one chunk of T tokens (models/
 *                transformer.h: residual stream, q/k/v, attention, router),
 *                the expert layers' workspace (T·top_k pairs of gate, up and
 *                hidden rows, int8 copies) and a row of logits
 *
 * Every product is checked (core/checked.h) and saturates at SIZE_MAX, so a
 * config of absurd sizes gives an absurd estimate, never a wrapped small one.
 *
 * On the CUDA backend all three live in the GPU's memory, so they are held up
 * to the GPU's free memory (cudaMemGetInfo) instead of the host's. */
#include "models/preflight.h"

#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/memory.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"

static size_t mul(size_t a, size_t b)
{
    size_t r;
    moe_size_mul(a, b, &r);
    return r;
}

static size_t add(size_t a, size_t b)
{
    size_t r;
    moe_size_add(a, b, &r);
    return r;
}

void model_memory_estimate(const moe_model_config *c, size_t weights, moe_dtype kv_dtype, int max_tokens,
                           int max_chunk, int device, size_t available, moe_model_memory *out)
{
    memset(out, 0, sizeof *out);
    out->device = device;
    size_t T = (size_t)(max_chunk < max_tokens ? max_chunk : max_tokens), F = sizeof(float);
    size_t D = (size_t)c->hidden_size, hd = (size_t)c->head_dim, qdim = mul((size_t)c->num_heads, hd);
    size_t kvdim = mul((size_t)c->num_kv_heads, hd), K = (size_t)c->top_k;
    size_t I = (size_t)(c->dense_hidden > c->expert_hidden ? c->dense_hidden : c->expert_hidden);
    out->weights = weights;
    out->kv_dtype = kv_dtype;
    out->max_position = c->max_position;
    out->kv_bytes_per_token = mul(2 * (size_t)c->num_layers, moe_kv_row_bytes(kv_dtype, c->num_kv_heads, c->head_dim));
    out->kv_cache = mul(out->kv_bytes_per_token, (size_t)(max_tokens > 0 ? max_tokens : 0));
    /* per token of a chunk: x, xb, xb2; q, k, v; the stacked qkv; attention
     * output; router logits; expert choices and weights; dense choice and
     * weight; RoPE's cos and sin */
    size_t row = add(add(mul(3, D), mul(2, qdim)), add(mul(2, kvdim), add(qdim, mul(2, kvdim))));
    row = add(row, add(add(qdim, (size_t)c->num_experts), add(mul(2, K), add(2, mul(2, hd / 2 + 1)))));
    /* the expert layers' shared workspace: gate, up and hidden rows of each
     * pair (unfused), the pairs' inputs and int8 copies with residual digits */
    size_t pairs = mul(T, K > 0 ? K : 1);
    size_t experts = add(mul(mul(pairs, I), 3 * F + 2), mul(pairs, mul(D, F + 2)));
    out->activations = add(add(mul(mul(T, row), F), experts), mul((size_t)c->vocab_size, F));
    out->total = add(add(out->weights, out->kv_cache), out->activations);
    out->available = available;
    size_t usable = (size_t)((double)available * MOE_MEMORY_USABLE);
    out->fits = !available || out->total <= usable;
    size_t fixed = add(out->weights, out->activations);
    if (!available) out->max_context = INT32_MAX;
    else if (fixed >= usable || !out->kv_bytes_per_token) out->max_context = fixed >= usable ? 0 : INT32_MAX;
    else {
        size_t n = (usable - fixed) / out->kv_bytes_per_token;
        out->max_context = n > INT32_MAX ? INT32_MAX : (int)n;
    }
}

/* The weights as the loader keeps them (see the top of this file). */
static size_t resident_weights(const moe_model_config *c, const moe_st_set *set)
{
    size_t total = 0;
    for (int i = 0; i < moe_st_set_count(set); i++) {
        const moe_st_tensor *t = moe_st_set_at(set, i);
        if (c->tie_word_embeddings && !strcmp(t->name, "lm_head.weight")) continue;
        int is_vector = t->ndim == 1 && t->dtype != MOE_DTYPE_U32 && t->dtype != MOE_DTYPE_COUNT;
        total = add(total, is_vector ? mul((size_t)t->shape[0], sizeof(float)) : t->nbytes);
    }
    return total;
}

/* The device loading with `opt` places the model on (models/model.c's
 * rule): AUTO is CUDA where a GPU can run it, else the CPU. */
static int device_for(const moe_model_options *opt)
{
    int device = opt ? opt->device : MOE_DEVICE_CPU;
    if (device == MOE_DEVICE_AUTO)
        device = moe_device_available(MOE_DEVICE_CUDA) == MOE_OK ? MOE_DEVICE_CUDA : MOE_DEVICE_CPU;
    return device;
}

/* The cache's element type loading with `opt` on `device` gives (models/
 * model.c's rule): the option's, else f16 where quantized weights meet int8
 * activations (the default on CPUs with int8 dot products), else f32. */
static moe_dtype kv_dtype_for(const moe_model_config *c, const moe_model_options *opt, int device)
{
    if (opt && opt->kv_dtype >= 0) return (moe_dtype)opt->kv_dtype;
    int act = opt ? opt->activations : -1;
    if (act < 0)
        act = c->quant_bits && device == MOE_DEVICE_CPU && moe_kernels()->panel_gemv_i8 ? MOE_ACT_INT8X2
                                                                                         : MOE_ACT_FLOAT;
    /* as model_choose_kv_dtype: halves on a quantized model's approximate
     * paths (int8 activations, or a GPU) */
    return c->quant_bits && (act != MOE_ACT_FLOAT || device == MOE_DEVICE_CUDA) ? MOE_DTYPE_F16 : MOE_DTYPE_F32;
}

/* The memory of `device` free for the model: the GPU's free memory (0,
 * unknown, when it cannot be asked), or the host's available memory. */
static size_t memory_available(int device)
{
    if (device != MOE_DEVICE_CUDA) return moe_available_memory_bytes();
    size_t free_bytes, total_bytes;
    return moe_cuda_memory_info(&free_bytes, &total_bytes) == MOE_OK ? free_bytes : 0;
}

moe_status moe_model_estimate_memory(const char *dir, const moe_model_options *opt, int max_tokens, int max_chunk,
                                     moe_model_memory *out)
{
    if (!dir || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "memory estimate: NULL argument");
    if (max_tokens < 1 || max_chunk < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "memory estimate: max tokens %d and chunk %d must be positive",
                             max_tokens, max_chunk);
    size_t n = strlen(dir);
    char *path = malloc(n + sizeof "/config.json");
    if (!path) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    memcpy(path, dir, n);
    memcpy(path + n, "/config.json", sizeof "/config.json");
    moe_model_config c;
    moe_status st = moe_config_load(path, &c);
    free(path);
    if (st != MOE_OK) return st;
    moe_st_set *set = NULL;
    if ((st = moe_st_set_open(dir, &set)) == MOE_OK) {
        int device = device_for(opt);
        model_memory_estimate(&c, resident_weights(&c, set), kv_dtype_for(&c, opt, device), max_tokens, max_chunk,
                              device, memory_available(device), out);
    }
    moe_st_set_close(set);
    moe_config_free(&c);
    return st;
}
