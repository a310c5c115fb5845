/* backend/device_layer.c — the public expert layer on a GPU (see
 * device_layer.h): a moe_bk_experts of the device's backend and the device
 * buffers its host inputs are staged in.
 *
 * Each layer has a backend of its own (a stream and a small workspace):
 * layers made one by one through the public API have no model to share one
 * with, and the weights, by far the larger part, are the layer's anyway. */
#include "backend/device_layer.h"

#include <stdio.h>

#include "core/error.h"
#include "core/memory.h"

struct moe_device_layer {
    moe_backend *b;
    moe_bk_experts *x;
    int dim;
    /* staged: x [tokens, dim], routings [routings, tokens, top_k]; y the output */
    int tokens, top_k, routings;
    float *dx, *dy, *dw;
    int32_t *di;
    size_t dx_cap, dy_cap, dw_cap, di_cap;   /* their elements */
};

moe_status moe_device_layer_create_on(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                      const moe_expert_weights *up, const moe_expert_weights *down,
                                      moe_device_layer **out)
{
    *out = NULL;
    moe_device_layer *d = moe_calloc(sizeof *d, "device layer");
    if (!d) {
        b->destroy(b);
        return MOE_ERR_NOMEM;
    }
    d->b = b;
    d->dim = cfg->dim;
    moe_status st = b->experts_create(b, cfg, gate, up, down, &d->x);
    if (st != MOE_OK) {
        moe_device_layer_free(d);
        return st;
    }
    *out = d;
    return MOE_OK;
}

moe_status moe_device_layer_create(const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                   const moe_expert_weights *up, const moe_expert_weights *down,
                                   moe_device_layer **out)
{
    *out = NULL;
    moe_backend *b = moe_backend_cuda_create();
    if (!b) {   /* the backend's reason, after what was asked */
        char why[512];
        snprintf(why, sizeof why, "%s", moe_last_error());
        return moe_error_set(MOE_ERR_UNSUPPORTED, "switchglu: device cuda is not available: %s", why);
    }
    return moe_device_layer_create_on(b, cfg, gate, up, down, out);
}

moe_status moe_device_layer_load(moe_device_layer *d, int expert, const moe_expert_weights *gate,
                                 const moe_expert_weights *up, const moe_expert_weights *down)
{
    return d->b->experts_load(d->b, d->x, expert, gate, up, down);
}

moe_status moe_device_layer_set_fused(moe_device_layer *d, int fused)
{
    return d->b->experts_set_fused(d->b, d->x, fused);
}

size_t moe_device_layer_bytes(const moe_device_layer *d) { return d->b->experts_bytes(d->x); }

void moe_device_layer_free(moe_device_layer *d)
{
    if (!d) return;
    moe_backend *b = d->b;
    if (b) {
        b->free(b, d->dx), b->free(b, d->dy), b->free(b, d->dw), b->free(b, d->di);
        if (d->x) b->experts_free(b, d->x);
        b->destroy(b);
    }
    moe_free(d);
}

/* A device buffer of at least `need` elements of `size` bytes. */
static moe_status grow(moe_backend *b, void **p, size_t *cap, size_t need, size_t size, const char *what)
{
    if (need <= *cap && *p) return MOE_OK;
    b->free(b, *p);
    *p = NULL;
    *cap = 0;
    if (!(*p = b->alloc(b, (need ? need : 1) * size, what))) return MOE_ERR_NOMEM;
    *cap = need;
    return MOE_OK;
}

moe_status moe_device_layer_stage(moe_device_layer *d, const float *x, int tokens, const int32_t *idx,
                                  const float *scores, int top_k, int routings)
{
    moe_backend *b = d->b;
    size_t nx = (size_t)tokens * d->dim, pairs = (size_t)tokens * top_k * routings;
    moe_status st;
    if ((st = grow(b, (void **)&d->dx, &d->dx_cap, nx, sizeof(float), "layer input x")) != MOE_OK ||
        (st = grow(b, (void **)&d->dy, &d->dy_cap, nx, sizeof(float), "layer output y")) != MOE_OK ||
        (st = grow(b, (void **)&d->di, &d->di_cap, pairs, sizeof(int32_t), "layer expert indices")) != MOE_OK ||
        (st = grow(b, (void **)&d->dw, &d->dw_cap, pairs, sizeof(float), "layer scores")) != MOE_OK) {
        d->tokens = 0;
        return st;
    }
    d->tokens = tokens, d->top_k = top_k, d->routings = routings;
    if ((st = b->upload(b, d->dx, x, sizeof(float) * nx)) != MOE_OK ||
        (st = b->upload(b, d->di, idx, sizeof(int32_t) * pairs)) != MOE_OK ||
        (st = b->upload(b, d->dw, scores, sizeof(float) * pairs)) != MOE_OK)
        return st;
    return MOE_OK;
}

moe_status moe_device_layer_run(moe_device_layer *d, int q)
{
    size_t at = (size_t)(q % d->routings) * (size_t)d->tokens * d->top_k;
    return d->b->experts(d->b, d->x, d->dx, d->tokens, d->di + at, d->dw + at, d->top_k, d->dy);
}

moe_status moe_device_layer_sync(moe_device_layer *d) { return d->b->sync(d->b); }

moe_status moe_device_layer_fetch(moe_device_layer *d, float *y)
{
    return d->b->download(d->b, y, d->dy, sizeof(float) * (size_t)d->tokens * d->dim);
}

moe_status moe_device_layer_forward(moe_device_layer *d, const float *x, int tokens, const int32_t *idx,
                                    const float *scores, int top_k, float *y)
{
    moe_status st;
    if ((st = moe_device_layer_stage(d, x, tokens, idx, scores, top_k, 1)) != MOE_OK ||
        (st = moe_device_layer_run(d, 0)) != MOE_OK)
        return st;
    return moe_device_layer_fetch(d, y);
}
