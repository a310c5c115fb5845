/* models/synthetic.c — a published model's exact shapes with seeded random
 * weights, built in memory: what the benchmarks run when no checkpoint is
 * given. OLMoE-1B-7B, Qwen3-30B-A3B and Mixtral-8x7B, as their config.json
 * files give them. Quantized (4 or 8 bits): every projection and the
 * embedding in the MLX affine layout (group 64, bf16 scales and biases),
 * random codes with scales that give weights of about ±0.035 (the spread of
 * a trained model's init); bf16 (16): the same spread as float values. Norm
 * weights are 1. Each tensor passes through the same packing as a
 * checkpoint's, a block of rows at a time, so the synthetic model runs
 * exactly the loaded paths. Before anything is built the resident size is
 * compared with the memory the machine has available. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "kernels/kernels.h"
#include "models/transformer.h"
#include "quant/dtype.h"

enum { GROUP = 64, BLOCK_ROWS = 1024 };
static const float SPREAD = 0.035f;

static uint64_t next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float uniform(uint64_t *s) { return (float)(next(s) >> 40) * (1.0f / 16777216.0f); } /* [0, 1) */

typedef struct {
    int bits;
    uint64_t rng;
    void *weight, *scales, *biases;   /* one block of rows */
} synth;

/* Random rows [rows, cols] of this format into the block buffers. */
static moe_expert_weights fill_rows(synth *s, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    if (s->bits == 16) {
        uint16_t *w = s->weight;
        for (size_t i = 0; i < n; i++) w[i] = moe_f32_to_bf16((2 * uniform(&s->rng) - 1) * SPREAD);
        return (moe_expert_weights){ MOE_DTYPE_BF16, 0, 0, s->weight, NULL, NULL };
    }
    uint64_t *codes = s->weight;
    for (size_t i = 0; i < n * s->bits / 64; i++) codes[i] = next(&s->rng);
    uint16_t *sc = s->scales, *bi = s->biases;
    float levels = (float)((1 << s->bits) - 1);
    for (size_t g = 0; g < n / GROUP; g++) {
        float scale = 2 * SPREAD / levels * (0.75f + 0.5f * uniform(&s->rng));
        sc[g] = moe_f32_to_bf16(scale);
        bi[g] = moe_f32_to_bf16(-0.5f * levels * scale);
    }
    return (moe_expert_weights){ MOE_DTYPE_BF16, s->bits, GROUP, s->weight, s->scales, s->biases };
}

static moe_expert_weights format_of(const synth *s)
{
    return s->bits == 16 ? (moe_expert_weights){ MOE_DTYPE_BF16, 0, 0, NULL, NULL, NULL }
                         : (moe_expert_weights){ MOE_DTYPE_BF16, s->bits, GROUP, NULL, NULL, NULL };
}

static moe_status make_linear(synth *s, moe_backend *B, int rows, int cols, const char *name, moe_act_mode act,
                              moe_bk_linear **out)
{
    moe_expert_weights f = format_of(s);
    moe_status st = B->linear_create(B, rows, cols, &f, name, act, out);
    for (int r0 = 0; r0 < rows && st == MOE_OK; r0 += BLOCK_ROWS) {
        int n = rows - r0 < BLOCK_ROWS ? rows - r0 : BLOCK_ROWS;
        moe_expert_weights w = fill_rows(s, n, cols);
        st = B->linear_load_rows(B, *out, r0, n, &w);
    }
    return st;
}

/* A norm weight vector of ones, in the backend's memory. */
static moe_status make_ones(moe_backend *B, int n, float **out)
{
    float *host = moe_alloc(sizeof(float) * (size_t)n, "norm weights");
    if (!host || !(*out = B->alloc(B, sizeof(float) * (size_t)n, "norm weights"))) {
        moe_free(host);
        return MOE_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) host[i] = 1.0f;
    moe_status st = B->upload(B, *out, host, sizeof(float) * (size_t)n);
    moe_free(host);
    return st;
}

static moe_status make_experts(synth *s, const moe_model *m, moe_bk_experts **out)
{
    moe_backend *B = m->be;
    const moe_model_config *c = &m->cfg;
    int D = c->hidden_size, I = c->expert_hidden;
    moe_switchglu_config cfg = moe_switchglu_default_config(c->num_experts, D, I);
    cfg.fuse_gate_up = m->opt.fuse_gate_up;
    cfg.int8_activations = m->act;
    moe_expert_weights f = format_of(s);
    moe_status st = B->experts_create(B, &cfg, &f, &f, &f, out);
    /* one expert's three projections at a time: gate and up at the block's
     * start, down after them */
    size_t elems = (size_t)I * D, wbytes = s->bits == 16 ? 2 * elems : elems * s->bits / 8;
    size_t sbytes = s->bits == 16 ? 0 : elems / GROUP * 2;
    for (int e = 0; e < c->num_experts && st == MOE_OK; e++) {
        moe_expert_weights w[3];
        for (int i = 0; i < 3; i++) {
            synth part = *s;
            part.weight = (char *)s->weight + i * wbytes;
            part.scales = (char *)s->scales + i * sbytes;
            part.biases = (char *)s->biases + i * sbytes;
            w[i] = fill_rows(&part, i < 2 ? I : D, i < 2 ? D : I);
            s->rng = part.rng;
        }
        st = B->experts_load(B, *out, e, &w[0], &w[1], &w[2]);
    }
    return st;
}

/* The published config.json numbers of each family's benchmark model. */
static const struct {
    const char *name, *model;
    moe_model_config cfg;
} ARCHS[] = {
    { "olmoe", "OLMoE-1B-7B",   /* allenai/OLMoE-1B-7B-0924 */
      { .model_type = "olmoe", .arch = MOE_ARCH_OLMOE, .qk_norm = MOE_QK_NORM_WHOLE, .hidden_size = 2048,
        .num_layers = 16, .num_heads = 16, .num_kv_heads = 16, .head_dim = 128, .expert_hidden = 1024,
        .num_experts = 64, .top_k = 8, .vocab_size = 50304, .max_position = 4096, .rms_norm_eps = 1e-5,
        .rope_theta = 10000, .bos_id = -1, .num_eos = 1, .eos_ids = { 50279 } } },
    { "qwen3_moe", "Qwen3-30B-A3B",   /* Qwen/Qwen3-30B-A3B */
      { .model_type = "qwen3_moe", .arch = MOE_ARCH_QWEN3_MOE, .qk_norm = MOE_QK_NORM_PER_HEAD, .hidden_size = 2048,
        .num_layers = 48, .num_heads = 32, .num_kv_heads = 4, .head_dim = 128, .expert_hidden = 768,
        .num_experts = 128, .top_k = 8, .norm_topk_prob = 1, .vocab_size = 151936, .max_position = 40960,
        .rms_norm_eps = 1e-6, .rope_theta = 1e6, .bos_id = 151643, .num_eos = 1, .eos_ids = { 151645 } } },
    { "mixtral", "Mixtral-8x7B",   /* mistralai/Mixtral-8x7B-v0.1 */
      { .model_type = "mixtral", .arch = MOE_ARCH_MIXTRAL, .qk_norm = MOE_QK_NORM_NONE, .hidden_size = 4096,
        .num_layers = 32, .num_heads = 32, .num_kv_heads = 8, .head_dim = 128, .expert_hidden = 14336,
        .num_experts = 8, .top_k = 2, .norm_topk_prob = 1, .vocab_size = 32000, .max_position = 32768,
        .rms_norm_eps = 1e-5, .rope_theta = 1e6, .bos_id = 1, .num_eos = 1, .eos_ids = { 2 } } },
};

const char *model_synthetic_name(const char *arch)
{
    for (size_t i = 0; i < sizeof ARCHS / sizeof ARCHS[0]; i++)
        if (!strcmp(arch, ARCHS[i].name)) return ARCHS[i].model;
    return NULL;
}

/* Bytes of n weights in this format (codes plus a bf16 scale and bias per
 * group, or bf16 values). */
static double weight_bytes(double n, int bits) { return bits == 16 ? 2 * n : n * bits / 8 + n / GROUP * 4; }

/* What the model will hold, from its shapes. */
static double resident_bytes(const moe_model_config *c, int bits)
{
    double D = c->hidden_size, qdim = (double)c->num_heads * c->head_dim, kvdim = (double)c->num_kv_heads * c->head_dim;
    double layer = (qdim + 2 * kvdim) * D + D * qdim + (double)c->num_experts * D +
                   3.0 * c->num_experts * c->expert_hidden * D;
    return weight_bytes(2.0 * c->vocab_size * D + c->num_layers * layer, bits);
}

moe_status model_synthetic(moe_model *m, const char *arch, int bits, uint64_t seed)
{
    int layers = m->cfg.num_layers;
    size_t a = 0;
    while (a < sizeof ARCHS / sizeof ARCHS[0] && strcmp(arch, ARCHS[a].name) != 0) a++;
    if (a == sizeof ARCHS / sizeof ARCHS[0])
        return moe_error_set(MOE_ERR_INVALID_ARG, "synthetic model: architecture '%s' is unknown (olmoe, qwen3_moe, "
                             "mixtral)", arch);
    m->cfg = ARCHS[a].cfg;
    if (layers) m->cfg.num_layers = layers;
    const moe_model_config *c = &m->cfg;
    double need = resident_bytes(c, bits), have = (double)moe_available_memory_bytes();
    if (have > 0 && need > 0.9 * have)
        return moe_error_set(MOE_ERR_NOMEM, "synthetic %s at %d bits, %d layers: its weights take %.1f GB and this "
                             "machine has %.1f GB available; build fewer layers (--layers N)",
                             ARCHS[a].model, bits, c->num_layers, need / 1e9, have / 1e9);
    if (bits != 16) {
        m->cfg.quant_bits = bits;
        m->cfg.quant_group_size = GROUP;
    }
    m->bits = bits == 16 ? 0 : bits;
    m->act = model_choose_activations(m, bits != 16);
    int D = c->hidden_size, qdim = c->num_heads * c->head_dim, kvdim = c->num_kv_heads * c->head_dim;
    int qk = c->qk_norm == MOE_QK_NORM_WHOLE ? qdim : c->head_dim, kk = c->qk_norm == MOE_QK_NORM_WHOLE ? kvdim : c->head_dim;
    /* block buffers: the larger of a row block of the embedding and one
     * expert's three projections */
    size_t elems = (size_t)BLOCK_ROWS * D;
    if ((size_t)3 * c->expert_hidden * D > elems) elems = (size_t)3 * c->expert_hidden * D;
    synth s = { .bits = bits, .rng = seed ^ 0x6a09e667f3bcc908ull };
    s.weight = moe_alloc(bits == 16 ? 2 * elems : elems * bits / 8 + 64, "synthetic weights");
    s.scales = moe_alloc(elems / GROUP * 2 + 64, "synthetic scales");
    s.biases = moe_alloc(elems / GROUP * 2 + 64, "synthetic biases");
    m->layers = moe_calloc(sizeof(model_layer) * (size_t)c->num_layers, "layers");
    moe_status st = s.weight && s.scales && s.biases && m->layers ? MOE_OK : MOE_ERR_NOMEM;
    moe_backend *B = m->be;
    if (st == MOE_OK) st = make_linear(&s, B, c->vocab_size, D, "model.embed_tokens", m->act, &m->embed);
    for (int l = 0; l < c->num_layers && st == MOE_OK; l++) {
        model_layer *L = &m->layers[l];
        if (m->opt.progress) m->opt.progress(m->opt.progress_user, l, c->num_layers, "building");
        if ((st = make_ones(B, D, &L->attn_norm)) != MOE_OK || (st = make_ones(B, D, &L->mlp_norm)) != MOE_OK ||
            (c->qk_norm != MOE_QK_NORM_NONE &&
             ((st = make_ones(B, qk, &L->q_norm)) != MOE_OK || (st = make_ones(B, kk, &L->k_norm)) != MOE_OK)) ||
            (st = make_linear(&s, B, qdim + 2 * kvdim, D, "qkv_proj", m->act, &L->wqkv)) != MOE_OK ||
            (st = make_linear(&s, B, D, qdim, "o_proj", m->act, &L->wo)) != MOE_OK ||
            (st = make_linear(&s, B, c->num_experts, D, "router", m->act, &L->router)) != MOE_OK)
            break;
        st = make_experts(&s, m, &L->experts);
    }
    if (m->opt.progress && st == MOE_OK) m->opt.progress(m->opt.progress_user, c->num_layers, c->num_layers, "building");
    if (st == MOE_OK) st = make_ones(B, D, &m->final_norm);
    if (st == MOE_OK) st = make_linear(&s, B, c->vocab_size, D, "lm_head", m->act, &m->lm_head);
    moe_free(s.weight), moe_free(s.scales), moe_free(s.biases);
    return st;
}
