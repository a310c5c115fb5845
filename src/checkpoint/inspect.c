/* checkpoint/inspect.c — moe_checkpoint_inspect (moe/checkpoint.h): a
 * checkpoint of any family (its shape, QK-norm and dense layers as
 * config.json gives them), its tensors gathered into modules (path.weight
 * with its .scales and .biases), each described as stored — float dtype, or
 * bits, group size and scale dtype from config.json's quantization block,
 * as the loader reads them — and modules alike but for their layer and
 * expert numbers grouped.
 * Parameters count codes unpacked (as mlx-lm counts them); resident bytes are
 * what the loader keeps: matrices as stored, norm vectors in float32. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "moe/checkpoint.h"

typedef struct {
    char path[200];
    const moe_st_tensor *t[3]; /* weight (or the tensor itself), scales, biases */
    int n_other;               /* further tensors of the module (a bias) */
    uint64_t other_bytes;
} module;

/* Names compared with digit runs as numbers: layer 2 before layer 10. */
static int natural_cmp(const char *a, const char *b)
{
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            char *ea, *eb;
            unsigned long long x = strtoull(a, &ea, 10), y = strtoull(b, &eb, 10);
            if (x != y) return x < y ? -1 : 1;
            a = ea, b = eb;
            continue;
        }
        if (*a != *b) return (unsigned char)*a - (unsigned char)*b;
        a++, b++;
    }
    return (unsigned char)*a - (unsigned char)*b;
}

/* The module a tensor belongs to, and its role (0 weight, 1 scales, 2
 * biases, 3 anything else: the tensor is its own module). */
static int split_name(const char *name, char *path, size_t n)
{
    static const char *const ROLE[4] = { ".weight", ".scales", ".biases", ".bias" };
    size_t len = strlen(name);
    for (int r = 0; r < 4; r++) {
        size_t k = strlen(ROLE[r]);
        if (len > k && !strcmp(name + len - k, ROLE[r])) {
            snprintf(path, n, "%.*s", (int)(len - k), name);
            return r;
        }
    }
    snprintf(path, n, "%s", name);
    return 0;
}

/* Every digit-only component of a dotted path as '*'. */
static char *pattern_of(const char *path)
{
    char *p = malloc(strlen(path) + 1), *o = p;
    if (!p) return NULL;
    for (const char *s = path; *s;) {
        const char *e = s;
        while (isdigit((unsigned char)*e)) e++;
        if (e > s && (s == path || s[-1] == '.') && (*e == '.' || *e == '\0')) {
            *o++ = '*';
            s = e;
        } else {
            *o++ = *s++;
        }
    }
    *o = '\0';
    return p;
}

typedef struct {
    char path[200];
    int role;
    const moe_st_tensor *t;
} entry;

static int cmp_entry(const void *x, const void *y) { return natural_cmp(((const entry *)x)->path, ((const entry *)y)->path); }

static moe_status gather_modules(const moe_st_set *set, const char *dir, module **out, int *count)
{
    int n = moe_st_set_count(set), k = 0;
    entry *e = calloc(n > 0 ? (size_t)n : 1, sizeof *e);
    module *m = calloc(n > 0 ? (size_t)n : 1, sizeof *m);
    if (!e || !m) {
        free(e), free(m);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", dir);
    }
    /* one entry per tensor, sorted by module, then merged */
    for (int i = 0; i < n; i++) {
        e[i].t = moe_st_set_at(set, i);
        e[i].role = split_name(e[i].t->name, e[i].path, sizeof e[i].path);
    }
    qsort(e, (size_t)n, sizeof *e, cmp_entry);
    for (int i = 0; i < n; i++) {
        if (k == 0 || strcmp(m[k - 1].path, e[i].path)) snprintf(m[k++].path, sizeof m->path, "%s", e[i].path);
        module *d = &m[k - 1];
        if (e[i].role < 3) d->t[e[i].role] = e[i].t;
        else d->n_other++, d->other_bytes += e[i].t->nbytes;
    }
    free(e);
    *out = m;
    *count = k;
    return MOE_OK;
}

/* One module described as a group of one. */
static moe_status describe(const moe_model_config *cfg, const char *dir, const module *m, moe_checkpoint_group *g)
{
    const moe_st_tensor *w = m->t[0], *s = m->t[1], *b = m->t[2];
    if (!w) return moe_error_set(MOE_ERR_FORMAT, "%s: module '%s' has scales or a bias but no weight", dir, m->path);
    memset(g, 0, sizeof *g);
    g->count = 1;
    g->ndim = w->ndim;
    memcpy(g->shape, w->shape, sizeof g->shape);
    g->bytes = w->nbytes + m->other_bytes;
    snprintf(g->dtype, sizeof g->dtype, "%s", w->dtype_name);
    if (s) {
        int bits, group;
        moe_config_module_quant(cfg, m->path, &bits, &group);
        if (!bits)
            return moe_error_set(MOE_ERR_FORMAT, "%s: '%s.scales' is quantized but config.json's \"quantization\" "
                                 "block does not cover module '%s'", dir, m->path, m->path);
        if (!b) return moe_error_set(MOE_ERR_FORMAT, "%s: tensor '%s.biases' is missing", dir, m->path);
        int64_t cols = s->ndim ? s->shape[s->ndim - 1] * group : 0;
        if (w->ndim < 1 || s->ndim != w->ndim || w->shape[w->ndim - 1] * 32 != cols * bits)
            return moe_error_set(MOE_ERR_SHAPE, "%s: module '%s': %lld code words a row do not hold %lld %d-bit "
                                 "values (%lld groups of %d)", dir, m->path,
                                 (long long)(w->ndim ? w->shape[w->ndim - 1] : 0), (long long)cols, bits,
                                 (long long)(s->ndim ? s->shape[s->ndim - 1] : 0), group);
        g->bits = bits;
        g->group_size = group;
        g->shape[g->ndim - 1] = cols;
        g->bytes += s->nbytes + b->nbytes;
        snprintf(g->dtype, sizeof g->dtype, "%s", s->dtype_name);
    }
    g->parameters = 1;
    for (int d = 0; d < g->ndim; d++) g->parameters *= g->shape[d];
    return MOE_OK;
}

static int same_kind(const moe_checkpoint_group *a, const moe_checkpoint_group *b)
{
    return !strcmp(a->pattern, b->pattern) && a->bits == b->bits && a->group_size == b->group_size &&
           !strcmp(a->dtype, b->dtype) && a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof a->shape);
}

static void count_dtype(moe_checkpoint_info *info, const moe_st_tensor *t)
{
    int i = 0;
    while (i < info->num_dtypes && strcmp(info->dtypes[i].dtype, t->dtype_name)) i++;
    if (i == info->num_dtypes) {
        if (i == (int)(sizeof info->dtypes / sizeof info->dtypes[0])) return;
        snprintf(info->dtypes[i].dtype, sizeof info->dtypes[i].dtype, "%s", t->dtype_name);
        info->num_dtypes++;
    }
    info->dtypes[i].tensors++;
    info->dtypes[i].bytes += t->nbytes;
}

static moe_status fill(moe_checkpoint_info *info, const moe_model_config *cfg, const moe_st_set *set, const char *dir)
{
    snprintf(info->architecture, sizeof info->architecture, "%s", cfg->model_type);
    info->num_layers = cfg->num_layers, info->hidden_size = cfg->hidden_size;
    info->num_heads = cfg->num_heads, info->num_kv_heads = cfg->num_kv_heads, info->head_dim = cfg->head_dim;
    info->num_experts = cfg->num_experts, info->top_k = cfg->top_k, info->expert_hidden = cfg->expert_hidden;
    info->vocab_size = cfg->vocab_size, info->tie_word_embeddings = cfg->tie_word_embeddings;
    static const char *const QK_NORM[] = { [MOE_QK_NORM_NONE] = "none", [MOE_QK_NORM_WHOLE] = "whole",
                                           [MOE_QK_NORM_PER_HEAD] = "per_head" };
    info->qk_norm = QK_NORM[cfg->qk_norm];
    for (int l = 0; l < cfg->num_layers; l++) info->num_dense_layers += moe_config_layer_dense(cfg, l);
    if (info->num_dense_layers) {
        if (!(info->dense_layers = calloc((size_t)info->num_dense_layers, sizeof *info->dense_layers)))
            return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", dir);
        for (int l = 0, k = 0; l < cfg->num_layers; l++)
            if (moe_config_layer_dense(cfg, l)) info->dense_layers[k++] = l;
        info->dense_hidden = cfg->dense_hidden;
    }
    info->tensors = moe_st_set_count(set);
    info->layout = "hub";
    for (int i = 0; i < info->tensors; i++) {
        const moe_st_tensor *t = moe_st_set_at(set, i);
        if (strstr(t->name, ".switch_mlp.")) info->layout = "mlx";
        count_dtype(info, t);
        info->tensor_bytes += t->nbytes;
    }
    module *mods = NULL;
    int n = 0;
    moe_status st = gather_modules(set, dir, &mods, &n);
    if (st != MOE_OK) return st;
    info->groups = calloc(n > 0 ? (size_t)n : 1, sizeof *info->groups);
    if (!info->groups) st = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", dir);
    for (int i = 0; i < n && st == MOE_OK; i++) {
        moe_checkpoint_group g;
        if ((st = describe(cfg, dir, &mods[i], &g)) != MOE_OK) break;
        /* a tied head is the embedding: the loader does not read a copy */
        int unused = cfg->tie_word_embeddings && !strcmp(mods[i].path, "lm_head");
        if (!unused) {
            info->parameters += g.parameters;
            info->resident_bytes += g.ndim == 1 && !g.bits ? 4 * (uint64_t)g.parameters : g.bytes;
        }
        info->quantized |= g.bits != 0;
        if (!(g.pattern = pattern_of(mods[i].path))) {
            st = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        int j = 0;
        while (j < info->num_groups && !same_kind(&info->groups[j], &g)) j++;
        if (j == info->num_groups) {
            info->groups[info->num_groups++] = g;
            continue;
        }
        moe_checkpoint_group *d = &info->groups[j];
        d->count++;
        d->parameters += g.parameters;
        d->bytes += g.bytes;
        free(g.pattern);
    }
    free(mods);
    return st;
}

moe_status moe_checkpoint_inspect(const char *dir, moe_checkpoint_info **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "inspect: the output pointer is NULL");
    *out = NULL;
    if (!dir) return moe_error_set(MOE_ERR_INVALID_ARG, "inspect: no checkpoint directory given");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    moe_model_config cfg;
    moe_status st = moe_config_load(path, &cfg);
    if (st != MOE_OK) return st;
    moe_st_set *set = NULL;
    moe_checkpoint_info *info = calloc(1, sizeof *info);
    if (!info) st = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", dir);
    if (st == MOE_OK) st = moe_st_set_open(dir, &set);
    if (st == MOE_OK) st = fill(info, &cfg, set, dir);
    moe_st_set_close(set);
    moe_config_free(&cfg);
    if (st != MOE_OK) {
        moe_checkpoint_info_free(info);
        return st;
    }
    *out = info;
    return MOE_OK;
}

void moe_checkpoint_info_free(moe_checkpoint_info *info)
{
    if (!info) return;
    for (int i = 0; i < info->num_groups; i++) free(info->groups[i].pattern);
    free(info->groups);
    free(info->dense_layers);
    free(info);
}
