/* layers/switchglu.c — the Mixture-of-Experts expert layer.
 *
 *   y[t] = Σ_j score[t,j] · Wdown_e · ( silu(Wgate_e·x[t]) ⊙ (Wup_e·x[t]) ),  e = idx[t,j]
 *
 * Token–expert pairs are gathered into groups that share an expert: one group
 * per pair when pairs are few (as mlx-lm's gather_mm), one group per expert
 * when pairs are many (sorted: each expert's weights stream once for all its
 * tokens). A group of a few pairs runs matrix-vector kernels straight on the
 * packed weights; a larger one dequantizes two panels at a time and runs a
 * register-tiled GEMM over its tokens.
 *
 * Threads split output rows (hidden rows for gate/up, model rows for down),
 * never pairs, so the down projection accumulates each pair's weighted output
 * straight into y with no [T, k, D] buffer and no two threads on one row.
 *
 * Fused: gate panel p and up panel p sit side by side; one pass computes both
 * and writes only silu(g)·u. Unfused: gate pass, up pass, SwiGLU pass. Both
 * run the same kernels on the same panels in the same order, so their results
 * are bitwise equal.
 *
 * A layer whose config names a GPU keeps here only its shape, formats and
 * which experts are loaded, for the checks both devices share; its weights
 * and its calls are the device layer's (backend/device_layer.h). */
#include "moe/switchglu.h"

#include <string.h>
#include <time.h>

#include "backend/device_layer.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/threadpool.h"
#include "layers/switchglu_internal.h"

/* Gate/up panel slots for the fused (interleaved) or unfused (stacked) order. */
static void layout_slots(int hidden, int panels, int fused, size_t *gate_slot, size_t *up_slot)
{
    for (int p = 0; p < panels; p++) {
        size_t start = (size_t)p * MOE_PANEL;
        if (fused) {
            gate_slot[p] = 2 * start;
            up_slot[p] = 2 * start + (size_t)panel_rows(hidden, p);
        } else {
            gate_slot[p] = start;
            up_slot[p] = (size_t)hidden + start;
        }
    }
}

moe_switchglu_config moe_switchglu_default_config(int num_experts, int dim, int hidden)
{
    moe_switchglu_config c = { num_experts, dim, hidden, 1, 0, 0, MOE_DEVICE_CPU };
    return c;
}

static moe_status same_format(const moe_expert_weights *a, const moe_expert_weights *b)
{
    if (a->dtype != b->dtype || a->bits != b->bits || (a->bits && a->group_size != b->group_size))
        return moe_error_set(MOE_ERR_DTYPE, "gate and up weights differ in format "
                             "(dtype %s/%s, bits %d/%d, group %d/%d)", moe_dtype_name(a->dtype),
                             moe_dtype_name(b->dtype), a->bits, b->bits, a->group_size, b->group_size);
    return MOE_OK;
}

/* The layer on the GPU (with MOE_DEVICE_AUTO: where there is one, else on
 * the CPU). Formats already checked: gf and df are gate/up's and down's. */
static moe_status create_on_device(const moe_switchglu_config *cfg, const moe_expert_weights *gate_fmt,
                                   const moe_expert_weights *up_fmt, const moe_expert_weights *down_fmt,
                                   const moe_panel_format *gf, const moe_panel_format *df, moe_switchglu **out);

moe_status moe_switchglu_create(const moe_switchglu_config *cfg, const moe_expert_weights *gate_fmt,
                                const moe_expert_weights *up_fmt, const moe_expert_weights *down_fmt,
                                moe_switchglu **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu create: output pointer is NULL");
    *out = NULL;
    if (!cfg) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu create: config is NULL");
    if (cfg->num_experts < 1 || cfg->dim < 1 || cfg->hidden < 1)
        return moe_error_set(MOE_ERR_SHAPE, "switchglu: experts %d, dim %d, hidden %d must all be positive",
                             cfg->num_experts, cfg->dim, cfg->hidden);
    if (cfg->int8_activations < MOE_ACT_FLOAT || cfg->int8_activations > MOE_ACT_INT8X2)
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu: activation mode %d is not a moe_act_mode",
                             cfg->int8_activations);
    if (cfg->sort_threshold < 0)
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu: sort threshold %d is negative", cfg->sort_threshold);
    if (cfg->device != MOE_DEVICE_AUTO && cfg->device != MOE_DEVICE_CPU && cfg->device != MOE_DEVICE_CUDA)
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu: device %d is not a moe_device (cpu %d, cuda %d, auto %d)",
                             cfg->device, MOE_DEVICE_CPU, MOE_DEVICE_CUDA, MOE_DEVICE_AUTO);
    moe_panel_format gf, uf, df;
    moe_status st;
    if ((st = moe_expert_format_check(gate_fmt, cfg->dim, "gate", &gf)) != MOE_OK ||
        (st = moe_expert_format_check(up_fmt, cfg->dim, "up", &uf)) != MOE_OK ||
        (st = moe_expert_format_check(down_fmt, cfg->hidden, "down", &df)) != MOE_OK ||
        (st = same_format(gate_fmt, up_fmt)) != MOE_OK)
        return st;
    if (cfg->device != MOE_DEVICE_CPU) return create_on_device(cfg, gate_fmt, up_fmt, down_fmt, &gf, &df, out);

    moe_switchglu *l = moe_calloc(sizeof *l, "switchglu layer");
    if (!l) return MOE_ERR_NOMEM;
    l->experts = cfg->num_experts;
    l->dim = cfg->dim;
    l->hidden = cfg->hidden;
    l->fused = cfg->fuse_gate_up != 0;
    l->int8_activations = cfg->int8_activations;
    l->sort_threshold = cfg->sort_threshold ? cfg->sort_threshold : 64;
    l->panels_hidden = (cfg->hidden + MOE_PANEL - 1) / MOE_PANEL;
    l->panels_dim = (cfg->dim + MOE_PANEL - 1) / MOE_PANEL;
    l->gate_slot = moe_alloc(sizeof(size_t) * (size_t)l->panels_hidden, "gate panel slots");
    l->up_slot = moe_alloc(sizeof(size_t) * (size_t)l->panels_hidden, "up panel slots");
    l->loaded = moe_calloc((size_t)l->experts, "expert flags");
    l->ws = moe_calloc(sizeof *l->ws, "layer workspace");
    if (l->ws) l->ws->refs = 1;
    if (!l->gate_slot || !l->up_slot || !l->loaded || !l->ws ||
        (st = moe_expert_store_init(&l->gate_up, &gf, l->experts, 2 * (size_t)l->hidden, "gate/up weights")) != MOE_OK ||
        (st = moe_expert_store_init(&l->down, &df, l->experts, (size_t)l->dim, "down weights")) != MOE_OK) {
        moe_switchglu_free(l);
        return st != MOE_OK ? st : MOE_ERR_NOMEM;
    }
    layout_slots(l->hidden, l->panels_hidden, l->fused, l->gate_slot, l->up_slot);
    *out = l;
    return MOE_OK;
}

static moe_status create_on_device(const moe_switchglu_config *cfg, const moe_expert_weights *gate_fmt,
                                   const moe_expert_weights *up_fmt, const moe_expert_weights *down_fmt,
                                   const moe_panel_format *gf, const moe_panel_format *df, moe_switchglu **out)
{
    moe_device_layer *d;
    moe_status st = moe_device_layer_create(cfg, gate_fmt, up_fmt, down_fmt, &d);
    if (st == MOE_ERR_UNSUPPORTED && cfg->device == MOE_DEVICE_AUTO) {   /* no GPU: the CPU's */
        moe_switchglu_config on_cpu = *cfg;
        on_cpu.device = MOE_DEVICE_CPU;
        return moe_switchglu_create(&on_cpu, gate_fmt, up_fmt, down_fmt, out);
    }
    if (st != MOE_OK) return st;
    moe_switchglu *l = moe_calloc(sizeof *l, "switchglu layer");
    if (l) l->loaded = moe_calloc((size_t)cfg->num_experts, "expert flags");
    if (!l || !l->loaded) {
        moe_free(l);
        moe_device_layer_free(d);
        return MOE_ERR_NOMEM;
    }
    l->experts = cfg->num_experts;
    l->dim = cfg->dim;
    l->hidden = cfg->hidden;
    l->fused = cfg->fuse_gate_up != 0;
    l->int8_activations = cfg->int8_activations;
    /* formats and row sizes only: load_expert's checks and the experts'
     * rows in a stacked source (create_stacked) */
    moe_expert_store_describe(&l->gate_up, gf, l->experts, 2 * (size_t)l->hidden);
    moe_expert_store_describe(&l->down, df, l->experts, (size_t)l->dim);
    l->device = MOE_DEVICE_CUDA;
    l->dev = d;
    *out = l;
    return MOE_OK;
}

static moe_status check_weights(const moe_expert_weights *w, const moe_expert_store *s, const char *what, int e)
{
    moe_panel_format f;
    moe_status st = moe_expert_format_check(w, s->fmt.K, what, &f);
    if (st != MOE_OK) return st;
    if (f.fmt != s->fmt.fmt || f.sdtype != s->fmt.sdtype || f.group_size != s->fmt.group_size)
        return moe_error_set(MOE_ERR_DTYPE, "expert %d %s weights differ in format from the layer's", e, what);
    if (!w->weight || (moe_wformat_is_quant(f.fmt) && (!w->scales || !w->biases)))
        return moe_error_set(MOE_ERR_INVALID_ARG, "expert %d %s: weight%s pointer is NULL", e, what,
                             moe_wformat_is_quant(f.fmt) ? ", scales or biases" : "");
    return MOE_OK;
}

moe_status moe_switchglu_load_expert(moe_switchglu *l, int e, const moe_expert_weights *gate,
                                     const moe_expert_weights *up, const moe_expert_weights *down)
{
    if (!l) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu load_expert: layer is NULL");
    if (e < 0 || e >= l->experts)
        return moe_error_set(MOE_ERR_RANGE, "expert %d is outside 0..%d", e, l->experts - 1);
    moe_status st;
    if ((st = check_weights(gate, &l->gate_up, "gate", e)) != MOE_OK ||
        (st = check_weights(up, &l->gate_up, "up", e)) != MOE_OK ||
        (st = check_weights(down, &l->down, "down", e)) != MOE_OK)
        return st;
    if (l->dev) {
        if ((st = moe_device_layer_load(l->dev, e, gate, up, down)) != MOE_OK) return st;
        l->loaded[e] = 1;
        return MOE_OK;
    }
    for (int p = 0; p < l->panels_hidden; p++) {
        size_t r0 = (size_t)p * MOE_PANEL;
        int nr = panel_rows(l->hidden, p);
        moe_expert_store_put_panel(&l->gate_up, e, l->gate_slot[p], gate, r0, nr);
        moe_expert_store_put_panel(&l->gate_up, e, l->up_slot[p], up, r0, nr);
    }
    for (int p = 0; p < l->panels_dim; p++)
        moe_expert_store_put_panel(&l->down, e, (size_t)p * MOE_PANEL, down, (size_t)p * MOE_PANEL,
                                   panel_rows(l->dim, p));
    l->loaded[e] = 1;
    return MOE_OK;
}

/* The slice of expert e in a stacked [E, rows, …] projection. */
static moe_expert_weights expert_slice(const moe_expert_weights *w, const moe_expert_store *s, int e)
{
    moe_expert_weights r = *w;
    size_t rows = s->rows_per_expert;
    r.weight = (const unsigned char *)w->weight + (size_t)e * rows * s->w_row_bytes;
    if (s->s_row_bytes) {
        r.scales = (const unsigned char *)w->scales + (size_t)e * rows * s->s_row_bytes;
        r.biases = (const unsigned char *)w->biases + (size_t)e * rows * s->s_row_bytes;
    }
    return r;
}

static int has_pointers(const moe_expert_weights *w)
{
    return w->weight && (!w->bits || (w->scales && w->biases));
}

moe_status moe_switchglu_create_stacked(const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                        const moe_expert_weights *up, const moe_expert_weights *down,
                                        moe_switchglu **out)
{
    moe_status st = moe_switchglu_create(cfg, gate, up, down, out);
    if (st != MOE_OK) return st;
    moe_switchglu *l = *out;
    if (!has_pointers(gate) || !has_pointers(up) || !has_pointers(down))
        st = moe_error_set(MOE_ERR_INVALID_ARG, "switchglu create_stacked: a weight, scales or biases pointer is NULL");
    /* gate and up each hold `hidden` rows an expert in the stacked file layout */
    moe_expert_store half = l->gate_up;
    half.rows_per_expert = (size_t)l->hidden;
    for (int e = 0; e < l->experts && st == MOE_OK; e++) {
        moe_expert_weights g = expert_slice(gate, &half, e), u = expert_slice(up, &half, e);
        moe_expert_weights d = expert_slice(down, &l->down, e);
        st = moe_switchglu_load_expert(l, e, &g, &u, &d);
    }
    if (st != MOE_OK) {
        moe_switchglu_free(l);
        *out = NULL;
    }
    return st;
}

moe_status moe_switchglu_set_fused(moe_switchglu *l, int fuse)
{
    if (!l) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu set_fused: layer is NULL");
    fuse = fuse != 0;
    if (fuse == l->fused) return MOE_OK;
    if (l->dev) {
        moe_status st = moe_device_layer_set_fused(l->dev, fuse);
        if (st == MOE_OK) l->fused = fuse;
        return st;
    }
    int n = 2 * l->panels_hidden;
    size_t *old_slot = moe_alloc(sizeof(size_t) * 2 * (size_t)n, "panel slots");
    int *rows = moe_alloc(sizeof(int) * (size_t)n, "panel rows");
    if (!old_slot || !rows) {
        moe_free(old_slot);
        moe_free(rows);
        return MOE_ERR_NOMEM;
    }
    size_t *new_slot = old_slot + n;
    for (int p = 0; p < l->panels_hidden; p++) {
        old_slot[2 * p] = l->gate_slot[p];
        old_slot[2 * p + 1] = l->up_slot[p];
        rows[2 * p] = rows[2 * p + 1] = panel_rows(l->hidden, p);
    }
    layout_slots(l->hidden, l->panels_hidden, fuse, l->gate_slot, l->up_slot);
    for (int p = 0; p < l->panels_hidden; p++) {
        new_slot[2 * p] = l->gate_slot[p];
        new_slot[2 * p + 1] = l->up_slot[p];
    }
    moe_status st = moe_expert_store_permute(&l->gate_up, old_slot, new_slot, rows, n);
    if (st == MOE_OK) l->fused = fuse;
    else /* nothing moved: restore the slot table */
        layout_slots(l->hidden, l->panels_hidden, l->fused, l->gate_slot, l->up_slot);
    moe_free(old_slot);
    moe_free(rows);
    return st;
}

int moe_switchglu_fused(const moe_switchglu *l) { return l ? l->fused : 0; }

size_t moe_switchglu_weight_bytes(const moe_switchglu *l)
{
    if (l && l->dev) return moe_device_layer_bytes(l->dev);
    return l ? moe_expert_store_bytes(&l->gate_up) + moe_expert_store_bytes(&l->down) : 0;
}

static void workspace_release(switchglu_workspace *w)
{
    if (!w || --w->refs > 0) return;
    moe_free(w->h), moe_free(w->g), moe_free(w->u), moe_free(w->xsum), moe_free(w->hsum);
    moe_free(w->xq), moe_free(w->hq), moe_free(w->xd), moe_free(w->hd);
    moe_free(w->xqr), moe_free(w->hqr), moe_free(w->xdr), moe_free(w->hdr), moe_free(w->zsum);
    moe_free(w->xa), moe_free(w->ha);
    moe_free(w->order), moe_free(w->group_start), moe_free(w->group_expert), moe_free(w->count);
    for (int t = 0; t < MOE_SWITCHGLU_MAX_THREADS; t++) {
        thread_scratch *sc = &w->scratch[t];
        moe_free(sc->apack), moe_free(sc->b), moe_free(sc->c);
        moe_free(sc->aq), moe_free(sc->ad), moe_free(sc->as);
        moe_free(sc->aqr), moe_free(sc->adr), moe_free(sc->asr);
    }
    moe_free(w);
}

moe_status moe_switchglu_share_workspace(moe_switchglu *l, moe_switchglu *with)
{
    if (!l || !with) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu share workspace: layer is NULL");
    if ((l->dev != NULL) != (with->dev != NULL))
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu share workspace: a layer on the CPU and one on a GPU "
                             "cannot share a workspace");
    if (l->dev || l->ws == with->ws) return MOE_OK;   /* GPU layers keep their own */
    workspace_release(l->ws);
    l->ws = with->ws;
    l->ws->refs++;
    return MOE_OK;
}

void moe_switchglu_free(moe_switchglu *l)
{
    if (!l) return;
    moe_expert_store_free(&l->gate_up);
    moe_expert_store_free(&l->down);
    moe_free(l->gate_slot);
    moe_free(l->up_slot);
    moe_free(l->loaded);
    workspace_release(l->ws);
    moe_device_layer_free(l->dev);
    moe_free(l);
}

moe_device moe_switchglu_device(const moe_switchglu *l) { return l ? (moe_device)l->device : MOE_DEVICE_CPU; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* On a GPU the calls are queued back to back and waited for once: a wait
 * after each would add its latency to every call, which a model's forward,
 * queueing layer after layer, does not pay. */
moe_status moe_switchglu_time(moe_switchglu *l, const float *x, int tokens, const int32_t *idx, const float *scores,
                              int top_k, int routings, int iters, float *y, double *seconds)
{
    if (!seconds) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu time: seconds is NULL");
    *seconds = 0;
    if (routings < 1 || iters < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu time: %d routings and %d calls (both must be at least 1)",
                             routings, iters);
    moe_status st = moe_switchglu_check_call(l, x, tokens, idx, scores, top_k, y);
    size_t pairs = st == MOE_OK ? (size_t)tokens * top_k : 0;
    for (int q = 1; q < routings && st == MOE_OK; q++)
        st = moe_switchglu_check_call(l, x, tokens, idx + q * pairs, scores + q * pairs, top_k, y);
    if (st != MOE_OK) return st;
    if (l->dev) {
        if ((st = moe_device_layer_stage(l->dev, x, tokens, idx, scores, top_k, routings)) != MOE_OK ||
            (st = moe_device_layer_sync(l->dev)) != MOE_OK)
            return st;
        double t0 = now_s();
        for (int i = 0; i < iters && st == MOE_OK; i++) st = moe_device_layer_run(l->dev, i % routings);
        if (st == MOE_OK) st = moe_device_layer_sync(l->dev);
        double t = now_s() - t0;
        if (st == MOE_OK) st = moe_device_layer_fetch(l->dev, y);
        if (st == MOE_OK) *seconds = t / iters;
        return st;
    }
    double t0 = now_s();
    for (int i = 0; i < iters && st == MOE_OK; i++) {
        size_t at = (size_t)(i % routings) * pairs;
        st = moe_switchglu_forward(l, x, tokens, idx + at, scores + at, top_k, y);
    }
    if (st == MOE_OK) *seconds = (now_s() - t0) / iters;
    return st;
}
