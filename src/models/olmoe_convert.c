/* models/olmoe_convert.c — OLMoE's modules for the converter, in the order
 * mlx-lm's Model lists its parameters (embedding; per layer the attention
 * projections and QK norms, the router, the stacked experts, the two norms;
 * the final norm; the head unless tied), with their source tensors:
 *   Hugging Face: model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight,
 *                 stacked here in expert order (mlx-lm's `sanitize`);
 *   MLX (float):  model.layers.N.mlp.switch_mlp.{gate,up,down}_proj.weight.
 * Linear and Embedding modules are quantizable; norms are not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "models/convert.h"

typedef struct {
    const moe_model_config *c;
    const moe_st_set *set;
    const char *dir;
    conv_plan *plan;
    int cap;
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

/* One module with one source tensor, path.weight. */
static moe_status single(planner *pl, const char *path, int quantizable, int64_t rows, int64_t cols)
{
    char name[CONV_PATH_MAX + 8];
    snprintf(name, sizeof name, "%s.weight", path);
    conv_module *m = add(pl, path, quantizable, 0, rows, cols, 1);
    if (!m) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory planning the conversion", pl->dir);
    return take(pl, name, 0, rows, cols, &m->src[0]);
}

static moe_status experts(planner *pl, int l, int mlx)
{
    const moe_model_config *c = pl->c;
    static const char *const PROJ[3] = { "gate_proj", "up_proj", "down_proj" };
    int E = c->num_experts;
    for (int p = 0; p < 3; p++) {
        int64_t rows = p < 2 ? c->expert_hidden : c->hidden_size, cols = p < 2 ? c->hidden_size : c->expert_hidden;
        char path[CONV_PATH_MAX], name[CONV_PATH_MAX + 32];
        snprintf(path, sizeof path, "model.layers.%d.mlp.switch_mlp.%s", l, PROJ[p]);
        conv_module *m = add(pl, path, 1, E, rows, cols, mlx ? 1 : E);
        if (!m) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory planning the conversion", pl->dir);
        moe_status st;
        if (mlx) {
            snprintf(name, sizeof name, "%s.weight", path);
            if ((st = take(pl, name, E, rows, cols, &m->src[0])) != MOE_OK) return st;
            continue;
        }
        for (int e = 0; e < E; e++) {
            snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, PROJ[p]);
            if ((st = take(pl, name, 0, rows, cols, &m->src[e])) != MOE_OK) return st;
        }
    }
    return MOE_OK;
}

static moe_status layer(planner *pl, int l, int mlx)
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
    MODULE("self_attn.q_norm", 0, 0, qdim);
    MODULE("self_attn.k_norm", 0, 0, kvdim);
    MODULE("mlp.gate", 1, c->num_experts, D);
    pl->plan->mods[pl->plan->n - 1].router = 1;
    if ((st = experts(pl, l, mlx)) != MOE_OK) return st;
    MODULE("input_layernorm", 0, 0, D);
    MODULE("post_attention_layernorm", 0, 0, D);
#undef MODULE
    return MOE_OK;
}

moe_status olmoe_convert_plan(const moe_model_config *c, const moe_st_set *set, const char *dir, conv_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    int mlx = moe_st_set_find(set, "model.layers.0.mlp.switch_mlp.gate_proj.weight") != NULL;
    if (!mlx && !moe_st_set_find(set, "model.layers.0.mlp.experts.0.gate_proj.weight"))
        return moe_error_set(MOE_ERR_FORMAT, "%s: neither 'model.layers.0.mlp.switch_mlp.gate_proj.weight' (MLX "
                             "layout) nor 'model.layers.0.mlp.experts.0.gate_proj.weight' (Hugging Face layout) "
                             "is in the checkpoint", dir);
    plan->layout = mlx ? "mlx" : "hub";
    int n = moe_st_set_count(set);
    planner pl = { .c = c, .set = set, .dir = dir, .plan = plan, .used = calloc(n > 0 ? (size_t)n : 1, 1) };
    if (!pl.used) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory planning the conversion", dir);
    moe_status st = single(&pl, "model.embed_tokens", 1, c->vocab_size, c->hidden_size);
    for (int l = 0; l < c->num_layers && st == MOE_OK; l++) st = layer(&pl, l, mlx);
    if (st == MOE_OK) st = single(&pl, "model.norm", 0, 0, c->hidden_size);
    if (st == MOE_OK && !c->tie_word_embeddings) st = single(&pl, "lm_head", 1, c->vocab_size, c->hidden_size);
    /* nothing may be lost silently; a tied head duplicates the embedding */
    for (int i = 0; i < n && st == MOE_OK; i++) {
        const char *name = moe_st_set_at(set, i)->name;
        if (!pl.used[i] && !(c->tie_word_embeddings && !strcmp(name, "lm_head.weight")))
            st = moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s' is not part of an OLMoE model as moe converts it "
                               "(it would be dropped)", dir, name);
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
