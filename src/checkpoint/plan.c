/* checkpoint/plan.c — every family's modules for the converter, in the order
 * mlx-lm's Model lists its parameters (that order fills the shards):
 *   the embedding;
 *   per layer: the attention projections, the QK norms (over the whole
 *     projection, per head, or none), the two norms and the MLP in the
 *     family's order, the MLP being either the router and the stacked
 *     experts or, in a dense layer, gate/down/up projections of its own;
 *   the final norm; the head unless tied.
 * Experts come from either float layout (mlx-lm's `sanitize`):
 *   Hugging Face: model.layers.N.BLOCK.experts.E.{gate,up,down} (the
 *                 family's names, models/family.h), stacked here in expert
 *                 order;
 *   MLX (float):  model.layers.N.BLOCK.switch_mlp.{gate,up,down}_proj.
 * Linear and Embedding modules are quantizable; norms are not. What else
 * sets the families apart is config.json's (io/model_config.h) or a line
 * of the table below. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/plan.h"
#include "core/error.h"
#include "models/family.h"

/* Where mlx-lm's model classes differ in what the converter writes. */
typedef struct {
    int norms_first;           /* the layer's two norms before its MLP (Qwen3MoeDecoderLayer
                                  declares them first; OLMoE and Mixtral after) */
    int dense_order[3];        /* a dense MLP's projections as its class declares them
                                  (indices into MOE_SWITCH_PROJ) */
    int router_bits, router_group_size; /* the family's quant_predicate for BLOCK.gate;
                                           0: none (quantized as the rest) */
} family_plan;

static const family_plan FAMILY[MOE_ARCH_COUNT] = {
    [MOE_ARCH_OLMOE] = { 0, { 0, 1, 2 }, 0, 0 },
    /* Qwen3-MoE's MLP declares gate, down, up; its quant_predicate puts
     * every path ending in "mlp.gate" at 8 bits, group 64 */
    [MOE_ARCH_QWEN3_MOE] = { 1, { 0, 2, 1 }, 8, 64 },
    [MOE_ARCH_MIXTRAL] = { 0, { 0, 1, 2 }, 0, 0 },
};

typedef struct {
    const moe_model_config *c;
    const moe_family_names *names;
    const family_plan *fam;
    const moe_st_set *set;
    const char *dir;
    conv_plan *plan;
    int cap;
    int mlx;                   /* experts stacked in the source */
    unsigned char *used;       /* [tensors of the set] */
} planner;

static void shape_str(int nd, const int64_t *s, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)s[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* The float tensor `name` of shape [lead?, rows?, cols], marked used. */
static moe_status take(planner *pl, const char *name, int lead, int64_t rows, int64_t cols, const moe_st_tensor **out)
{
    const moe_st_tensor *t = moe_st_set_find(pl->set, name);
    if (!t) return moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s' is missing from the checkpoint", pl->dir, name);
    if (t->dtype != MOE_DTYPE_F32 && t->dtype != MOE_DTYPE_F16 && t->dtype != MOE_DTYPE_BF16)
        return moe_error_set(MOE_ERR_DTYPE, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", pl->dir, name,
                             t->dtype_name);
    int64_t want[3];
    int nd = 0;
    if (lead) want[nd++] = lead;
    if (rows) want[nd++] = rows;
    want[nd++] = cols;
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == want[i];
    if (!ok) {
        char got[160], exp[160];
        shape_str(t->ndim, t->shape, got, sizeof got);
        shape_str(nd, want, exp, sizeof exp);
        return moe_error_set(MOE_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", pl->dir, name, got, exp);
    }
    pl->used[t - moe_st_set_at(pl->set, 0)] = 1;
    *out = t;
    return MOE_OK;
}

/* A new module at the end of the plan, with room for n_src sources. */
static conv_module *add(planner *pl, const char *path, int quantizable, int experts, int64_t rows, int64_t cols,
                        int n_src)
{
    conv_plan *p = pl->plan;
    if (p->n == pl->cap) {
        int cap = pl->cap ? 2 * pl->cap : 64;
        conv_module *m = realloc(p->mods, sizeof *m * (size_t)cap);
        if (!m) return NULL;
        p->mods = m;
        pl->cap = cap;
    }
    conv_module *m = &p->mods[p->n];
    memset(m, 0, sizeof *m);
    if (!(m->src = calloc((size_t)n_src, sizeof *m->src))) return NULL;
    p->n++;
    snprintf(m->path, sizeof m->path, "%s", path);
    m->quantizable = quantizable;
    m->experts = experts;
    m->rows = rows;
    m->cols = cols;
    m->n_src = n_src;
    return m;
}

static moe_status no_memory(const planner *pl)
{
    return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory planning the conversion", pl->dir);
}

/* One module with one source tensor, path.weight. */
static moe_status single(planner *pl, const char *path, int quantizable, int64_t rows, int64_t cols)
{
    char name[CONV_PATH_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", path);
    conv_module *m = add(pl, path, quantizable, 0, rows, cols, 1);
    if (!m) return no_memory(pl);
    return take(pl, name, 0, rows, cols, &m->src[0]);
}

/* Layer l's router and experts, stacked: BLOCK.gate, then
 * BLOCK.switch_mlp.{gate,up,down}_proj [E, rows, cols]. */
static moe_status experts(planner *pl, int l)
{
    const moe_model_config *c = pl->c;
    const char *block = pl->names->moe_block;
    int E = c->num_experts;
    char path[CONV_PATH_MAX], name[CONV_PATH_MAX + 32];
    snprintf(path, sizeof path, "model.layers.%d.%s.gate", l, block);
    moe_status st = single(pl, path, 1, E, c->hidden_size);
    if (st != MOE_OK) return st;
    pl->plan->mods[pl->plan->n - 1].router = 1;
    for (int p = 0; p < 3; p++) {
        int64_t rows = p < 2 ? c->expert_hidden : c->hidden_size, cols = p < 2 ? c->hidden_size : c->expert_hidden;
        snprintf(path, sizeof path, "model.layers.%d.%s.switch_mlp.%s", l, block, MOE_SWITCH_PROJ[p]);
        conv_module *m = add(pl, path, 1, E, rows, cols, pl->mlx ? 1 : E);
        if (!m) return no_memory(pl);
        if (pl->mlx) {
            snprintf(name, sizeof name, "%s.weight", path);
            if ((st = take(pl, name, E, rows, cols, &m->src[0])) != MOE_OK) return st;
            continue;
        }
        for (int e = 0; e < E; e++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.experts.%d.%s.weight", l, block, e,
                     pl->names->expert_proj[p]);
            if ((st = take(pl, name, 0, rows, cols, &m->src[e])) != MOE_OK) return st;
        }
    }
    return MOE_OK;
}

/* Layer l's dense MLP: mlp.{gate,up,down}_proj in the family's order. */
static moe_status dense_mlp(planner *pl, int l)
{
    const moe_model_config *c = pl->c;
    for (int i = 0; i < 3; i++) {
        int p = pl->fam->dense_order[i];
        char path[CONV_PATH_MAX];
        snprintf(path, sizeof path, "model.layers.%d.mlp.%s", l, MOE_SWITCH_PROJ[p]);
        moe_status st = single(pl, path, 1, p < 2 ? c->dense_hidden : c->hidden_size,
                               p < 2 ? c->hidden_size : c->dense_hidden);
        if (st != MOE_OK) return st;
    }
    return MOE_OK;
}

static moe_status layer_norms(planner *pl, int l)
{
    char p[CONV_PATH_MAX];
    snprintf(p, sizeof p, "model.layers.%d.input_layernorm", l);
    moe_status st = single(pl, p, 0, 0, pl->c->hidden_size);
    if (st != MOE_OK) return st;
    snprintf(p, sizeof p, "model.layers.%d.post_attention_layernorm", l);
    return single(pl, p, 0, 0, pl->c->hidden_size);
}

static moe_status layer(planner *pl, int l)
{
    const moe_model_config *c = pl->c;
    int64_t D = c->hidden_size, qdim = (int64_t)c->num_heads * c->head_dim,
            kvdim = (int64_t)c->num_kv_heads * c->head_dim;
    char p[CONV_PATH_MAX];
    moe_status st;
#define MODULE(suffix, q, rows, cols)                                                                               \
    do {                                                                                                            \
        snprintf(p, sizeof p, "model.layers.%d.%s", l, suffix);                                                     \
        if ((st = single(pl, p, q, rows, cols)) != MOE_OK) return st;                                               \
    } while (0)
    MODULE("self_attn.q_proj", 1, qdim, D);
    MODULE("self_attn.k_proj", 1, kvdim, D);
    MODULE("self_attn.v_proj", 1, kvdim, D);
    MODULE("self_attn.o_proj", 1, D, qdim);
    if (c->qk_norm != MOE_QK_NORM_NONE) {
        /* one weight per element of the whole projection, or per head dim */
        int whole = c->qk_norm == MOE_QK_NORM_WHOLE;
        MODULE("self_attn.q_norm", 0, 0, whole ? qdim : c->head_dim);
        MODULE("self_attn.k_norm", 0, 0, whole ? kvdim : c->head_dim);
    }
    if (pl->fam->norms_first && (st = layer_norms(pl, l)) != MOE_OK) return st;
    if ((st = moe_config_layer_dense(c, l) ? dense_mlp(pl, l) : experts(pl, l)) != MOE_OK) return st;
    if (!pl->fam->norms_first && (st = layer_norms(pl, l)) != MOE_OK) return st;
#undef MODULE
    return MOE_OK;
}

/* Which float layout holds the experts, told by the first MoE layer's
 * gate projection (as the loader tells it). */
static moe_status detect_layout(planner *pl)
{
    const moe_model_config *c = pl->c;
    int l = 0;
    while (l < c->num_layers && moe_config_layer_dense(c, l)) l++;
    pl->plan->layout = "hub";
    if (l == c->num_layers) return MOE_OK; /* no experts: the layouts agree */
    char mlx[CONV_PATH_MAX], hub[CONV_PATH_MAX];
    snprintf(mlx, sizeof mlx, "model.layers.%d.%s.switch_mlp.%s.weight", l, pl->names->moe_block, MOE_SWITCH_PROJ[0]);
    snprintf(hub, sizeof hub, "model.layers.%d.%s.experts.0.%s.weight", l, pl->names->moe_block,
             pl->names->expert_proj[0]);
    if ((pl->mlx = moe_st_set_find(pl->set, mlx) != NULL)) pl->plan->layout = "mlx";
    else if (!moe_st_set_find(pl->set, hub))
        return moe_error_set(MOE_ERR_FORMAT, "%s: neither '%s' (MLX layout) nor '%s' (Hugging Face layout) is in the "
                             "checkpoint", pl->dir, mlx, hub);
    return MOE_OK;
}

moe_status conv_plan_make(const moe_model_config *c, const moe_st_set *set, const char *dir, conv_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    int n = moe_st_set_count(set);
    planner pl = { .c = c, .names = moe_family_names_of(c->arch), .fam = &FAMILY[c->arch], .set = set, .dir = dir,
                   .plan = plan, .used = calloc(n > 0 ? (size_t)n : 1, 1) };
    if (!pl.used) return no_memory(&pl);
    plan->router_bits = pl.fam->router_bits;
    plan->router_group_size = pl.fam->router_group_size;
    moe_status st = detect_layout(&pl);
    if (st == MOE_OK) st = single(&pl, "model.embed_tokens", 1, c->vocab_size, c->hidden_size);
    for (int l = 0; l < c->num_layers && st == MOE_OK; l++) st = layer(&pl, l);
    if (st == MOE_OK) st = single(&pl, "model.norm", 0, 0, c->hidden_size);
    if (st == MOE_OK && !c->tie_word_embeddings) st = single(&pl, "lm_head", 1, c->vocab_size, c->hidden_size);
    /* nothing may be lost silently; a tied head duplicates the embedding */
    for (int i = 0; i < n && st == MOE_OK; i++) {
        const char *name = moe_st_set_at(set, i)->name;
        if (!pl.used[i] && !(c->tie_word_embeddings && !strcmp(name, "lm_head.weight")))
            st = moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s' is not part of a model of type '%s' as moe "
                               "converts it (it would be dropped)", dir, name, c->model_type);
    }
    free(pl.used);
    if (st != MOE_OK) conv_plan_free(plan);
    return st;
}

void conv_plan_free(conv_plan *plan)
{
    for (int i = 0; i < plan->n; i++) free(plan->mods[i].src);
    free(plan->mods);
    memset(plan, 0, sizeof *plan);
}
