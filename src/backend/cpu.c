/* backend/cpu.c — the CPU backend: host memory, the layers (dense
 * projections and SwitchGLU in the kernels' panel layout) and the kernel
 * table this CPU runs. A moe_bk_linear is a moe_linear and a moe_bk_experts
 * a moe_switchglu.
 *
 * Every projection a backend instance creates shares the first one's
 * token-side workspace, and every expert layer the first expert layer's:
 * a model's layers run one at a time, so activation buffers are held once
 * and peak memory follows the weights. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/memory.h"
#include "kernels/argmax.h"
#include "kernels/attention.h"
#include "kernels/norm_rope.h"
#include "layers/linear.h"
#include "layers/router.h"

typedef struct {
    moe_linear *first_linear;        /* the projections' shared workspace */
    moe_switchglu *first_experts;    /* the expert layers' */
} cpu_state;

#define LIN(l) ((moe_linear *)(l))
#define EXP(x) ((moe_switchglu *)(x))

static void *cpu_alloc(moe_backend *b, size_t bytes, const char *what)
{
    (void)b;
    return moe_alloc(bytes, what);
}

static void cpu_free(moe_backend *b, void *p)
{
    (void)b;
    moe_free(p);
}

static moe_status cpu_copy(moe_backend *b, void *dst, const void *src, size_t bytes)
{
    (void)b;
    if (bytes) memcpy(dst, src, bytes);
    return MOE_OK;
}

/* ---- weights ---- */

static moe_status cpu_linear_create(moe_backend *b, int out, int in, const moe_expert_weights *fmt, const char *name,
                                    moe_act_mode act, moe_bk_linear **l)
{
    cpu_state *s = b->impl;
    moe_linear *lin;
    moe_status st = moe_linear_create(out, in, fmt, name, &lin);
    if (st != MOE_OK) return st;
    moe_linear_set_activations(lin, act);
    if (!s->first_linear) s->first_linear = lin;
    else if ((st = moe_linear_share_workspace(lin, s->first_linear)) != MOE_OK) {
        moe_linear_free(lin);
        return st;
    }
    *l = (moe_bk_linear *)lin;
    return MOE_OK;
}

static moe_status cpu_linear_load_rows(moe_backend *b, moe_bk_linear *l, int row0, int rows,
                                       const moe_expert_weights *w)
{
    (void)b;
    return moe_linear_load_rows(LIN(l), row0, rows, w);
}

static size_t cpu_linear_bytes(const moe_bk_linear *l) { return moe_linear_weight_bytes((const moe_linear *)l); }

static const char *cpu_linear_name(const moe_bk_linear *l) { return moe_linear_name((const moe_linear *)l); }

static moe_status cpu_sync(moe_backend *b)
{
    (void)b;   /* every operation has returned by the time it is called */
    return MOE_OK;
}

static void cpu_linear_free(moe_backend *b, moe_bk_linear *l)
{
    cpu_state *s = b->impl;
    if (LIN(l) == s->first_linear) s->first_linear = NULL;   /* its workspace lives on in the others */
    moe_linear_free(LIN(l));
}

static moe_status cpu_experts_create(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                     const moe_expert_weights *up, const moe_expert_weights *down, moe_bk_experts **x)
{
    cpu_state *s = b->impl;
    moe_switchglu *l;
    moe_status st = moe_switchglu_create(cfg, gate, up, down, &l);
    if (st != MOE_OK) return st;
    if (!s->first_experts) s->first_experts = l;
    else if ((st = moe_switchglu_share_workspace(l, s->first_experts)) != MOE_OK) {
        moe_switchglu_free(l);
        return st;
    }
    *x = (moe_bk_experts *)l;
    return MOE_OK;
}

static moe_status cpu_experts_load(moe_backend *b, moe_bk_experts *x, int e, const moe_expert_weights *gate,
                                   const moe_expert_weights *up, const moe_expert_weights *down)
{
    (void)b;
    return moe_switchglu_load_expert(EXP(x), e, gate, up, down);
}

static moe_status cpu_experts_set_fused(moe_backend *b, moe_bk_experts *x, int fused)
{
    (void)b;
    return moe_switchglu_set_fused(EXP(x), fused);
}

static int cpu_experts_fused(const moe_bk_experts *x) { return moe_switchglu_fused((const moe_switchglu *)x); }

static size_t cpu_experts_bytes(const moe_bk_experts *x)
{
    return x ? moe_switchglu_weight_bytes((const moe_switchglu *)x) : 0;
}

static void cpu_experts_free(moe_backend *b, moe_bk_experts *x)
{
    cpu_state *s = b->impl;
    if (EXP(x) == s->first_experts) s->first_experts = NULL;
    moe_switchglu_free(EXP(x));
}

/* ---- operations ---- */

static moe_status cpu_embed(moe_backend *b, const moe_bk_linear *table, const int32_t *tokens, int T, float *x)
{
    (void)b;
    const moe_linear *l = (const moe_linear *)table;
    size_t D = (size_t)moe_linear_in(l);
    for (int t = 0; t < T; t++) moe_linear_row(l, tokens[t], x + (size_t)t * D);
    return MOE_OK;
}

static moe_status cpu_rmsnorm(moe_backend *b, int rows, int n, const float *x, const float *w, float eps, float *y)
{
    (void)b;
    moe_rmsnorm_rows(rows, n, x, w, eps, y);
    return MOE_OK;
}

static moe_status cpu_linear(moe_backend *b, moe_bk_linear *l, const float *x, int T, float *y)
{
    (void)b;
    return moe_linear_forward(LIN(l), x, T, y);
}

static moe_status cpu_split_cols(moe_backend *b, const float *src, int T, int n, const int *widths,
                                 float *const *dst)
{
    (void)b;
    size_t row = 0;
    for (int i = 0; i < n; i++) row += (size_t)widths[i];
    for (int t = 0; t < T; t++) {
        const float *s = src + (size_t)t * row;
        for (int i = 0; i < n; i++) {
            memcpy(dst[i] + (size_t)t * widths[i], s, sizeof(float) * (size_t)widths[i]);
            s += widths[i];
        }
    }
    return MOE_OK;
}

static moe_status cpu_clip(moe_backend *b, size_t n, float *x, float limit)
{
    (void)b;
    for (size_t i = 0; i < n; i++) x[i] = x[i] > limit ? limit : x[i] < -limit ? -limit : x[i];
    return MOE_OK;
}

static moe_status cpu_rope_angles(moe_backend *b, int T, int hd, double theta, int pos, float *cos_out,
                                  float *sin_out)
{
    (void)b;
    for (int t = 0; t < T; t++)
        moe_rope_angles(hd, theta, pos + t, cos_out + (size_t)t * (hd / 2), sin_out + (size_t)t * (hd / 2));
    return MOE_OK;
}

static moe_status cpu_rope(moe_backend *b, int T, int heads, int hd, float *x, const float *cos_t,
                           const float *sin_t)
{
    (void)b;
    moe_rope_rows(T, heads, hd, x, cos_t, sin_t);
    return MOE_OK;
}

static moe_status cpu_kv_store(moe_backend *b, moe_dtype kv_dtype, const float *src, void *dst, size_t n, int hd)
{
    (void)b;
    moe_kv_store(kv_dtype, src, dst, n, hd);
    return MOE_OK;
}

static moe_status cpu_attention(moe_backend *b, int T, int pos, int heads, int kv_heads, int hd, float scale,
                                const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                                float *out)
{
    (void)b;
    moe_attention_causal(T, pos, heads, kv_heads, hd, scale, q, kv_dtype, k, v, kv_stride, out);
    return MOE_OK;
}

static moe_status cpu_add(moe_backend *b, size_t n, float *x, const float *y)
{
    (void)b;
    for (size_t i = 0; i < n; i++) x[i] += y[i];
    return MOE_OK;
}

static moe_status cpu_argmax_rows(moe_backend *b, const float *rows, int n, int V, int32_t *host_ids)
{
    (void)b;
    for (int r = 0; r < n; r++) host_ids[r] = moe_argmax_f32(rows + (size_t)r * V, V);
    return MOE_OK;
}

static moe_status cpu_router_topk(moe_backend *b, const float *logits, int T, int E, int k, int norm, int32_t *idx,
                                  float *w)
{
    (void)b;
    return moe_router_topk(logits, T, E, k, norm, idx, w);
}

static moe_status cpu_experts(moe_backend *b, moe_bk_experts *x, const float *in, int T, const int32_t *idx,
                              const float *w, int k, float *out)
{
    (void)b;
    return moe_switchglu_forward(EXP(x), in, T, idx, w, k, out);
}

static void cpu_destroy(moe_backend *b)
{
    if (!b) return;
    free(b->impl);
    free(b);
}

moe_backend *moe_backend_cpu_create(void)
{
    moe_backend *b = calloc(1, sizeof *b);
    cpu_state *s = calloc(1, sizeof *s);
    if (!b || !s) {
        free(b), free(s);
        moe_error_set(MOE_ERR_NOMEM, "cpu backend: out of memory");
        return NULL;
    }
    *b = (moe_backend){
        .name = "cpu", .host_memory = 1, .kv_q8 = 1, .impl = s,
        .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_copy, .download = cpu_copy,
        .linear_create = cpu_linear_create, .linear_load_rows = cpu_linear_load_rows,
        .linear_bytes = cpu_linear_bytes, .linear_name = cpu_linear_name, .linear_free = cpu_linear_free,
        .experts_create = cpu_experts_create, .experts_load = cpu_experts_load,
        .experts_set_fused = cpu_experts_set_fused, .experts_fused = cpu_experts_fused,
        .experts_bytes = cpu_experts_bytes, .experts_free = cpu_experts_free,
        .embed = cpu_embed, .rmsnorm = cpu_rmsnorm, .linear = cpu_linear, .split_cols = cpu_split_cols,
        .clip = cpu_clip, .rope_angles = cpu_rope_angles, .rope = cpu_rope, .kv_store = cpu_kv_store,
        .attention = cpu_attention, .add = cpu_add, .router_topk = cpu_router_topk, .experts = cpu_experts,
        .argmax_rows = cpu_argmax_rows,
        .sync = cpu_sync, .destroy = cpu_destroy,
    };
    return b;
}
