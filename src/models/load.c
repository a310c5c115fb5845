/* models/load.c — a checkpoint directory of any family into the model.
 *
 * Two layouts, one model (mlx-lm's `sanitize` step, done while loading):
 *   Hugging Face: model.layers.N.BLOCK.experts.E.{gate,up,down}.weight,
 *                 one tensor per expert, float;
 *   MLX:          model.layers.N.BLOCK.switch_mlp.{gate,up,down}_proj.{weight,
 *                 scales,biases}, experts stacked, optionally quantized;
 * with the family's names for BLOCK and the three projections (family.h).
 * Any projection or the embedding may be quantized (weight U32 + scales +
 * biases, bits and group size from config.json's "quantization" block and
 * its per-module overrides). Every tensor is checked for dtype and shape
 * before use and copied straight into the kernels' packed layout; its file
 * pages are then dropped, so memory while loading stays near the final
 * resident size. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "io/safetensors.h"
#include "kernels/attention.h"
#include "kernels/kernels.h"
#include "models/family.h"
#include "models/transformer.h"
#include "models/transformer.h"
#include "quant/dtype.h"

typedef struct {
    moe_model *m;
    moe_st_set *set;
    const char *dir;
    const moe_family_names *names;
    int mlx;                   /* stacked experts (MLX layout) */
} loader;

enum { NAME_MAX_LEN = 256 };

static const moe_st_tensor *find(const loader *ld, const char *name)
{
    return moe_st_set_find(ld->set, name);
}

static moe_status missing(const loader *ld, const char *name)
{
    return moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s' is missing from the checkpoint", ld->dir, name);
}

static void shape_str(const moe_st_tensor *t, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* t must be [lead?, rows, cols] (lead 0: no leading dim) of dtype `dtype`
 * (MOE_DTYPE_COUNT: any float dtype). */
static moe_status check_tensor(const loader *ld, const moe_st_tensor *t, int lead, int64_t rows, int64_t cols,
                               moe_dtype dtype)
{
    int is_float = t->dtype == MOE_DTYPE_F32 || t->dtype == MOE_DTYPE_F16 || t->dtype == MOE_DTYPE_BF16;
    if (dtype == MOE_DTYPE_COUNT ? !is_float : t->dtype != dtype)
        return moe_error_set(MOE_ERR_DTYPE, "%s: tensor '%s' has dtype %s, expected %s", ld->dir, t->name,
                             t->dtype_name, dtype == MOE_DTYPE_COUNT ? "F32, F16 or BF16" : moe_dtype_name(dtype));
    int64_t want[3] = { lead, rows, cols };
    int nd = lead ? 3 : (rows ? 2 : 1);
    const int64_t *w = lead ? want : rows ? want + 1 : want + 2;
    int ok = t->ndim == nd;
    for (int i = 0; ok && i < nd; i++) ok = t->shape[i] == w[i];
    if (!ok) {
        char got[128];
        shape_str(t, got, sizeof got);
        if (nd == 3)
            return moe_error_set(MOE_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected [%lld, %lld, %lld]", ld->dir,
                                 t->name, got, (long long)w[0], (long long)w[1], (long long)w[2]);
        if (nd == 2)
            return moe_error_set(MOE_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected [%lld, %lld]", ld->dir,
                                 t->name, got, (long long)w[0], (long long)w[1]);
        return moe_error_set(MOE_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected [%lld]", ld->dir, t->name, got,
                             (long long)w[0]);
    }
    return MOE_OK;
}

/* The tensors of module `path` ([lead?, rows, cols] weights), float or
 * quantized, as a moe_expert_weights over the file's bytes. */
typedef struct {
    moe_expert_weights w;
    const moe_st_tensor *t[3];  /* weight, scales, biases (NULL for float) */
} module_tensors;

static moe_status module(const loader *ld, const char *path, int lead, int rows, int cols, module_tensors *mt)
{
    char name[NAME_MAX_LEN];
    memset(mt, 0, sizeof *mt);
    snprintf(name, sizeof name, "%s.weight", path);
    const moe_st_tensor *w = find(ld, name);
    if (!w) return missing(ld, name);
    snprintf(name, sizeof name, "%s.scales", path);
    const moe_st_tensor *s = find(ld, name);
    mt->t[0] = w;
    mt->w.weight = w->data;
    moe_status st;
    if (!s) {
        if (w->dtype == MOE_DTYPE_U32)
            return moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s' holds packed codes but '%s' is missing", ld->dir,
                                 w->name, name);
        if ((st = check_tensor(ld, w, lead, rows, cols, MOE_DTYPE_COUNT)) != MOE_OK) return st;
        mt->w.dtype = w->dtype;
        return MOE_OK;
    }
    int bits, group;
    moe_config_module_quant(&ld->m->cfg, path, &bits, &group);
    if (!bits)
        return moe_error_set(MOE_ERR_FORMAT, "%s: '%s' is quantized but config.json's \"quantization\" block does "
                             "not cover module '%s'", ld->dir, name, path);
    if (bits != 4 && bits != 8)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: module '%s' is quantized to %d bits; moe runs 4 and 8",
                             ld->dir, path, bits);
    if (cols % group)
        return moe_error_set(MOE_ERR_SHAPE, "%s: module '%s' has %d inputs, not a multiple of its group size %d",
                             ld->dir, path, cols, group);
    snprintf(name, sizeof name, "%s.biases", path);
    const moe_st_tensor *b = find(ld, name);
    if (!b) return missing(ld, name);
    if ((st = check_tensor(ld, w, lead, rows, (int64_t)cols * bits / 32, MOE_DTYPE_U32)) != MOE_OK ||
        (st = check_tensor(ld, s, lead, rows, cols / group, MOE_DTYPE_COUNT)) != MOE_OK ||
        (st = check_tensor(ld, b, lead, rows, cols / group, s->dtype)) != MOE_OK)
        return st;
    mt->t[1] = s;
    mt->t[2] = b;
    mt->w = (moe_expert_weights){ s->dtype, bits, group, w->data, s->data, b->data };
    return MOE_OK;
}

static void release(const module_tensors *mt)
{
    for (int i = 0; i < 3; i++) moe_st_tensor_release(mt->t[i]);
}

/* One dense projection named `name` of n modules' rows one after the
 * other (rows[i] of mt[i], all of one format), cols inputs. */
static moe_status make_linear(const loader *ld, const char *name, int n, const module_tensors *mt, const int *rows,
                              int cols, moe_bk_linear **out)
{
    moe_backend *B = ld->m->be;
    int total = 0;
    for (int i = 0; i < n; i++) total += rows[i];
    moe_status st = B->linear_create(B, total, cols, &mt[0].w, name, ld->m->act, out);
    for (int i = 0, row0 = 0; i < n && st == MOE_OK; row0 += rows[i], i++)
        st = B->linear_load_rows(B, *out, row0, rows[i], &mt[i].w);
    return st;
}

/* A dense projection [rows, cols] from module `path`. */
static moe_status load_linear(const loader *ld, const char *path, int rows, int cols, moe_bk_linear **out)
{
    module_tensors mt;
    moe_status st = module(ld, path, 0, rows, cols, &mt);
    if (st == MOE_OK) st = make_linear(ld, path, 1, &mt, &rows, cols, out);
    release(&mt);
    return st;
}

/* q, k and v: stacked into one projection when they share a format and
 * each fills whole 16-row panels, else three projections. */
static moe_status load_qkv(const loader *ld, int l, model_layer *L)
{
    const moe_model_config *c = &ld->m->cfg;
    int D = c->hidden_size, rows[3] = { c->num_heads * c->head_dim, c->num_kv_heads * c->head_dim,
                                        c->num_kv_heads * c->head_dim };
    static const char *const NAMES[3] = { "q_proj", "k_proj", "v_proj" };
    char path[3][NAME_MAX_LEN];
    module_tensors mt[3];
    moe_status st = MOE_OK;
    int i = 0;
    for (; i < 3 && st == MOE_OK; i++) {
        snprintf(path[i], sizeof path[i], "model.layers.%d.self_attn.%s", l, NAMES[i]);
        st = module(ld, path[i], 0, rows[i], D, &mt[i]);
    }
    if (st != MOE_OK) return st;
    int stack = rows[0] % MOE_PANEL == 0 && rows[1] % MOE_PANEL == 0;
    for (i = 1; i < 3; i++)
        stack &= mt[i].w.dtype == mt[0].w.dtype && mt[i].w.bits == mt[0].w.bits &&
                 mt[i].w.group_size == mt[0].w.group_size;
    if (stack) {
        char name[NAME_MAX_LEN];
        snprintf(name, sizeof name, "model.layers.%d.self_attn.qkv", l);
        st = make_linear(ld, name, 3, mt, rows, D, &L->wqkv);
    } else {
        moe_bk_linear **dst[3] = { &L->wq, &L->wk, &L->wv };
        for (i = 0; i < 3 && st == MOE_OK; i++) st = make_linear(ld, path[i], 1, &mt[i], &rows[i], D, dst[i]);
    }
    for (i = 0; i < 3; i++) release(&mt[i]);
    return st;
}

/* A norm's weight vector [n] as float, in the backend's memory. */
static moe_status load_vector(const loader *ld, const char *name, int n, float **out)
{
    const moe_st_tensor *t = find(ld, name);
    if (!t) return missing(ld, name);
    moe_status st = check_tensor(ld, t, 0, 0, n, MOE_DTYPE_COUNT);
    if (st != MOE_OK) return st;
    float *host = moe_alloc(sizeof(float) * (size_t)n, name);
    moe_backend *B = ld->m->be;
    if (!host || !(*out = B->alloc(B, sizeof(float) * (size_t)n, name))) {
        moe_free(host);
        return MOE_ERR_NOMEM;
    }
    moe_dtype_traits_of(t->dtype)->to_f32(t->data, host, (size_t)n);
    st = B->upload(B, *out, host, sizeof(float) * (size_t)n);
    moe_free(host);
    moe_st_tensor_release(t);
    return st;
}

/* One expert's slice of a stacked [E, rows, …] module. */
static moe_expert_weights expert_slice(const module_tensors *mt, int e)
{
    moe_expert_weights w = mt->w;
    w.weight = (const char *)w.weight + mt->t[0]->nbytes / (size_t)mt->t[0]->shape[0] * (size_t)e;
    if (mt->t[1]) {
        w.scales = (const char *)w.scales + mt->t[1]->nbytes / (size_t)mt->t[1]->shape[0] * (size_t)e;
        w.biases = (const char *)w.biases + mt->t[2]->nbytes / (size_t)mt->t[2]->shape[0] * (size_t)e;
    }
    return w;
}

/* The three projections' module paths of layer l's experts (or of its
 * dense MLP), in the checkpoint's layout; e is the expert (hub layout). */
static void expert_paths(const loader *ld, int l, int dense, int e, char path[3][NAME_MAX_LEN])
{
    for (int i = 0; i < 3; i++) {
        if (dense)
            snprintf(path[i], NAME_MAX_LEN, "model.layers.%d.mlp.%s", l, MOE_SWITCH_PROJ[i]);
        else if (ld->mlx)
            snprintf(path[i], NAME_MAX_LEN, "model.layers.%d.%s.switch_mlp.%s", l, ld->names->moe_block,
                     MOE_SWITCH_PROJ[i]);
        else
            snprintf(path[i], NAME_MAX_LEN, "model.layers.%d.%s.experts.%d.%s", l, ld->names->moe_block, e,
                     ld->names->expert_proj[i]);
    }
}

/* Layer l's experts, or its dense MLP as a SwitchGLU of one expert. */
static moe_status load_experts(const loader *ld, int layer, moe_bk_experts **out)
{
    moe_backend *B = ld->m->be;
    const moe_model_config *c = &ld->m->cfg;
    int dense = moe_config_layer_dense(c, layer);
    int E = dense ? 1 : c->num_experts, D = c->hidden_size, I = dense ? c->dense_hidden : c->expert_hidden;
    moe_switchglu_config cfg = moe_switchglu_default_config(E, D, I);
    cfg.fuse_gate_up = ld->m->opt.fuse_gate_up;
    cfg.int8_activations = ld->m->act;
    char path[3][NAME_MAX_LEN];
    module_tensors mt[3];
    moe_status st = MOE_OK;
    if (ld->mlx && !dense) {
        expert_paths(ld, layer, 0, 0, path);
        for (int i = 0; i < 3 && st == MOE_OK; i++)
            st = module(ld, path[i], E, i < 2 ? I : D, i < 2 ? D : I, &mt[i]);
        if (st == MOE_OK) st = B->experts_create(B, &cfg, &mt[0].w, &mt[1].w, &mt[2].w, out);
        for (int e = 0; e < E && st == MOE_OK; e++) {
            moe_expert_weights g = expert_slice(&mt[0], e), u = expert_slice(&mt[1], e), d = expert_slice(&mt[2], e);
            st = B->experts_load(B, *out, e, &g, &u, &d);
        }
        for (int i = 0; i < 3 && st == MOE_OK; i++) release(&mt[i]);
        return st;
    }
    for (int e = 0; e < E && st == MOE_OK; e++) {
        expert_paths(ld, layer, dense, e, path);
        for (int i = 0; i < 3 && st == MOE_OK; i++) st = module(ld, path[i], 0, i < 2 ? I : D, i < 2 ? D : I, &mt[i]);
        if (st == MOE_OK && e == 0) st = B->experts_create(B, &cfg, &mt[0].w, &mt[1].w, &mt[2].w, out);
        if (st == MOE_OK) st = B->experts_load(B, *out, e, &mt[0].w, &mt[1].w, &mt[2].w);
        for (int i = 0; i < 3 && st == MOE_OK; i++) release(&mt[i]);
    }
    return st;
}

static moe_status load_layer(const loader *ld, int l)
{
    const moe_model_config *c = &ld->m->cfg;
    model_layer *L = &ld->m->layers[l];
    int D = c->hidden_size, qdim = c->num_heads * c->head_dim, kvdim = c->num_kv_heads * c->head_dim;
    char p[NAME_MAX_LEN], q[NAME_MAX_LEN];
    moe_status st;
#define LAYER_NAME(buf, suffix) snprintf(buf, sizeof buf, "model.layers.%d.%s", l, suffix)
    LAYER_NAME(p, "input_layernorm.weight");
    if ((st = load_vector(ld, p, D, &L->attn_norm)) != MOE_OK) return st;
    if ((st = load_qkv(ld, l, L)) != MOE_OK) return st;
    LAYER_NAME(p, "self_attn.o_proj");
    if ((st = load_linear(ld, p, D, qdim, &L->wo)) != MOE_OK) return st;
    if (c->qk_norm != MOE_QK_NORM_NONE) {
        /* one weight per element of the whole projection, or per head dim */
        int whole = c->qk_norm == MOE_QK_NORM_WHOLE;
        LAYER_NAME(p, "self_attn.q_norm.weight");
        LAYER_NAME(q, "self_attn.k_norm.weight");
        if ((st = load_vector(ld, p, whole ? qdim : c->head_dim, &L->q_norm)) != MOE_OK ||
            (st = load_vector(ld, q, whole ? kvdim : c->head_dim, &L->k_norm)) != MOE_OK)
            return st;
    }
    LAYER_NAME(p, "post_attention_layernorm.weight");
    if ((st = load_vector(ld, p, D, &L->mlp_norm)) != MOE_OK) return st;
#undef LAYER_NAME
    if (!moe_config_layer_dense(c, l)) {
        snprintf(p, sizeof p, "model.layers.%d.%s.gate", l, ld->names->moe_block);
        if ((st = load_linear(ld, p, c->num_experts, D, &L->router)) != MOE_OK) return st;
    }
    return load_experts(ld, l, &L->experts);
}

static void progress(const loader *ld, int done, int total)
{
    if (ld->m->opt.progress) ld->m->opt.progress(ld->m->opt.progress_user, done, total, "loading");
}

static int has_quantized_tensors(const moe_st_set *set)
{
    for (int i = 0; i < moe_st_set_count(set); i++) {
        const char *n = moe_st_set_at(set, i)->name;
        size_t len = strlen(n);
        if (len > 7 && strcmp(n + len - 7, ".scales") == 0) return 1;
    }
    return 0;
}

/* The first layer with experts; -1 when every layer is dense. */
static int first_moe_layer(const moe_model_config *c)
{
    for (int l = 0; l < c->num_layers; l++)
        if (!moe_config_layer_dense(c, l)) return l;
    return -1;
}

/* Which layout the checkpoint holds: stacked experts (MLX) or one tensor
 * per expert (Hugging Face), told by the first MoE layer's gate. */
static moe_status detect_layout(loader *ld)
{
    int l = first_moe_layer(&ld->m->cfg);
    if (l < 0) return MOE_OK;
    char mlx[NAME_MAX_LEN], hub[NAME_MAX_LEN];
    snprintf(mlx, sizeof mlx, "model.layers.%d.%s.switch_mlp.%s.weight", l, ld->names->moe_block, MOE_SWITCH_PROJ[0]);
    snprintf(hub, sizeof hub, "model.layers.%d.%s.experts.0.%s.weight", l, ld->names->moe_block,
             ld->names->expert_proj[0]);
    if (find(ld, mlx)) ld->mlx = 1;
    else if (!find(ld, hub))
        return moe_error_set(MOE_ERR_FORMAT, "%s: neither '%s' (MLX layout) nor '%s' (Hugging Face layout) is in the "
                             "checkpoint", ld->dir, mlx, hub);
    return MOE_OK;
}

moe_status model_load_dir(moe_model *m, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    moe_status st = moe_config_load(path, &m->cfg);
    if (st != MOE_OK) return st;
    if (m->cfg.head_dim > MOE_ATTENTION_MAX_HEAD_DIM)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: head_dim %d is above the %d moe supports", path, m->cfg.head_dim,
                             MOE_ATTENTION_MAX_HEAD_DIM);
    loader ld = { .m = m, .dir = dir, .names = moe_family_names_of(m->cfg.arch) };
    if ((st = moe_st_set_open(dir, &ld.set)) != MOE_OK) return st;
    const moe_model_config *c = &m->cfg;
    if ((st = detect_layout(&ld)) != MOE_OK) {
        moe_st_set_close(ld.set);
        return st;
    }
    int quantized = has_quantized_tensors(ld.set);
    m->act = model_choose_activations(m, quantized);
    m->layers = moe_calloc(sizeof(model_layer) * (size_t)c->num_layers, "layers");
    if (!m->layers) st = MOE_ERR_NOMEM;
    int D = c->hidden_size;
    if (st == MOE_OK) st = load_linear(&ld, "model.embed_tokens", c->vocab_size, D, &m->embed);
    progress(&ld, 0, c->num_layers);
    for (int l = 0; l < c->num_layers && st == MOE_OK; l++) {
        st = load_layer(&ld, l);
        progress(&ld, l + 1, c->num_layers);
    }
    if (st == MOE_OK) st = load_vector(&ld, "model.norm.weight", D, &m->final_norm);
    if (st == MOE_OK) {
        if (c->tie_word_embeddings) m->lm_head = m->embed;
        else st = load_linear(&ld, "lm_head", c->vocab_size, D, &m->lm_head);
    }
    int l = first_moe_layer(c);
    if (st == MOE_OK && l >= 0) {
        /* experts' format decides the model's "bits" */
        module_tensors mt;
        char p[3][NAME_MAX_LEN];
        expert_paths(&ld, l, 0, 0, p);
        if (module(&ld, p[0], ld.mlx ? c->num_experts : 0, c->expert_hidden, D, &mt) == MOE_OK) m->bits = mt.w.bits;
    }
    moe_st_set_close(ld.set);
    return st;
}
