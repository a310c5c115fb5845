/* backend/profile.c — a backend that times another: every operation of the
 * forward is passed to the inner backend, waited for (sync), and its wall
 * time added to its kind (moe_op_kind). Memory and weight entries pass
 * through untimed. `moe bench --profile` reads it to show where a step's
 * time goes. Projections are told apart by the names the loader gives them
 * (q/k/v, o_proj, the router "gate", lm_head or a tied embedding). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/error.h"

typedef struct {
    moe_backend *inner;
    double seconds[MOE_OP_COUNT];
    long calls[MOE_OP_COUNT];
} profile_state;

static const char *const KIND_NAMES[MOE_OP_COUNT] = {
    [MOE_OP_EMBED] = "embedding",     [MOE_OP_NORM] = "rmsnorm",          [MOE_OP_QKV] = "qkv projection",
    [MOE_OP_ATTN_OUT] = "o projection", [MOE_OP_ROPE] = "rope",          [MOE_OP_KV_STORE] = "kv store",
    [MOE_OP_ATTENTION] = "attention", [MOE_OP_ROUTER] = "router",         [MOE_OP_EXPERTS] = "experts",
    [MOE_OP_LM_HEAD] = "lm_head",     [MOE_OP_OTHER] = "adds, splits, clips",
};

const char *moe_op_kind_name(moe_op_kind k) { return k >= 0 && k < MOE_OP_COUNT ? KIND_NAMES[k] : "?"; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && strcmp(s + n - m, tail) == 0;
}

/* The kind of a projection, from its name. */
static moe_op_kind linear_kind(const profile_state *s, const moe_bk_linear *l)
{
    const char *name = s->inner->linear_name ? s->inner->linear_name(l) : "";
    if (strstr(name, "o_proj")) return MOE_OP_ATTN_OUT;
    if (strstr(name, "qkv") || strstr(name, "q_proj") || strstr(name, "k_proj") || strstr(name, "v_proj"))
        return MOE_OP_QKV;
    if (ends_with(name, ".gate") || strstr(name, "router")) return MOE_OP_ROUTER;
    if (strstr(name, "lm_head") || strstr(name, "embed")) return MOE_OP_LM_HEAD;
    return MOE_OP_OTHER;
}

/* Runs `call` on the inner backend `in`, waits for it, and charges its time to `kind`. */
#define TIMED(kind, call)                                                  \
    do {                                                                   \
        profile_state *s_ = b->impl;                                       \
        moe_backend *in = s_->inner;                                       \
        double t0_ = now_s();                                              \
        moe_status st_ = (call);                                           \
        if (st_ == MOE_OK && in->sync) st_ = in->sync(in);                 \
        s_->seconds[kind] += now_s() - t0_;                                \
        s_->calls[kind]++;                                                 \
        return st_;                                                        \
    } while (0)

#define INNER(b) (((profile_state *)(b)->impl)->inner)

/* ---- passed through ---- */

static void *p_alloc(moe_backend *b, size_t bytes, const char *what) { return INNER(b)->alloc(INNER(b), bytes, what); }
static void p_free(moe_backend *b, void *p) { INNER(b)->free(INNER(b), p); }
static moe_status p_upload(moe_backend *b, void *dst, const void *src, size_t n)
{
    return INNER(b)->upload(INNER(b), dst, src, n);
}
static moe_status p_download(moe_backend *b, void *dst, const void *src, size_t n)
{
    return INNER(b)->download(INNER(b), dst, src, n);
}
static moe_status p_linear_create(moe_backend *b, int out, int in, const moe_expert_weights *fmt, const char *name,
                                  moe_act_mode act, moe_bk_linear **l)
{
    return INNER(b)->linear_create(INNER(b), out, in, fmt, name, act, l);
}
static moe_status p_linear_load_rows(moe_backend *b, moe_bk_linear *l, int row0, int rows,
                                     const moe_expert_weights *w)
{
    return INNER(b)->linear_load_rows(INNER(b), l, row0, rows, w);
}
static void p_linear_free(moe_backend *b, moe_bk_linear *l) { INNER(b)->linear_free(INNER(b), l); }
static moe_status p_experts_create(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *g,
                                   const moe_expert_weights *u, const moe_expert_weights *d, moe_bk_experts **x)
{
    return INNER(b)->experts_create(INNER(b), cfg, g, u, d, x);
}
static moe_status p_experts_load(moe_backend *b, moe_bk_experts *x, int e, const moe_expert_weights *g,
                                 const moe_expert_weights *u, const moe_expert_weights *d)
{
    return INNER(b)->experts_load(INNER(b), x, e, g, u, d);
}
static moe_status p_experts_set_fused(moe_backend *b, moe_bk_experts *x, int fused)
{
    return INNER(b)->experts_set_fused(INNER(b), x, fused);
}
static void p_experts_free(moe_backend *b, moe_bk_experts *x) { INNER(b)->experts_free(INNER(b), x); }
static moe_status p_sync(moe_backend *b) { return INNER(b)->sync ? INNER(b)->sync(INNER(b)) : MOE_OK; }

static void p_destroy(moe_backend *b)
{
    if (!b) return;
    INNER(b)->destroy(INNER(b));
    free(b->impl);
    free(b);
}

/* ---- timed ---- */

static moe_status p_embed(moe_backend *b, const moe_bk_linear *t, const int32_t *tok, int T, float *x)
{
    TIMED(MOE_OP_EMBED, in->embed(in, t, tok, T, x));
}
static moe_status p_rmsnorm(moe_backend *b, int rows, int n, const float *x, const float *w, float eps, float *y)
{
    TIMED(MOE_OP_NORM, in->rmsnorm(in, rows, n, x, w, eps, y));
}
static moe_status p_linear(moe_backend *b, moe_bk_linear *l, const float *x, int T, float *y)
{
    TIMED(linear_kind(s_, l), in->linear(in, l, x, T, y));
}
static moe_status p_split_cols(moe_backend *b, const float *src, int T, int n, const int *w, float *const *dst)
{
    TIMED(MOE_OP_OTHER, in->split_cols(in, src, T, n, w, dst));
}
static moe_status p_clip(moe_backend *b, size_t n, float *x, float limit)
{
    TIMED(MOE_OP_OTHER, in->clip(in, n, x, limit));
}
static moe_status p_rope_angles(moe_backend *b, int T, int hd, double theta, int pos, float *c, float *s)
{
    TIMED(MOE_OP_ROPE, in->rope_angles(in, T, hd, theta, pos, c, s));
}
static moe_status p_rope(moe_backend *b, int T, int heads, int hd, float *x, const float *c, const float *s)
{
    TIMED(MOE_OP_ROPE, in->rope(in, T, heads, hd, x, c, s));
}
static moe_status p_kv_store(moe_backend *b, moe_dtype dt, const float *src, void *dst, size_t n, int hd)
{
    TIMED(MOE_OP_KV_STORE, in->kv_store(in, dt, src, dst, n, hd));
}
static moe_status p_attention(moe_backend *b, int T, int pos, int heads, int kv_heads, int hd, float scale,
                              const float *q, moe_dtype dt, const void *k, const void *v, size_t stride, float *out)
{
    TIMED(MOE_OP_ATTENTION, in->attention(in, T, pos, heads, kv_heads, hd, scale, q, dt, k, v, stride, out));
}
static moe_status p_add(moe_backend *b, size_t n, float *x, const float *y) { TIMED(MOE_OP_OTHER, in->add(in, n, x, y)); }
static moe_status p_router_topk(moe_backend *b, const float *logits, int T, int E, int k, int norm, int32_t *idx,
                                float *w)
{
    TIMED(MOE_OP_ROUTER, in->router_topk(in, logits, T, E, k, norm, idx, w));
}
static moe_status p_experts(moe_backend *b, moe_bk_experts *x, const float *xin, int T, const int32_t *idx,
                            const float *w, int k, float *out)
{
    TIMED(MOE_OP_EXPERTS, in->experts(in, x, xin, T, idx, w, k, out));
}
/* the greedy choice after the classifier: counted with it */
static moe_status p_argmax_rows(moe_backend *b, const float *rows, int n, int V, int32_t *host_ids)
{
    TIMED(MOE_OP_LM_HEAD, in->argmax_rows(in, rows, n, V, host_ids));
}

moe_backend *moe_backend_profile_wrap(moe_backend *inner)
{
    moe_backend *b = calloc(1, sizeof *b);
    profile_state *s = calloc(1, sizeof *s);
    if (!inner || !b || !s) {
        free(b), free(s);
        if (inner) inner->destroy(inner);
        moe_error_set(MOE_ERR_NOMEM, "profiling backend: out of memory");
        return NULL;
    }
    s->inner = inner;
    *b = *inner;   /* name, host_memory and the untimed queries as they are */
    b->impl = s;
    b->step_begin = NULL, b->step_end = NULL;   /* each operation runs (and is timed) as it comes */
    b->alloc = p_alloc, b->free = p_free, b->upload = p_upload, b->download = p_download;
    b->linear_create = p_linear_create, b->linear_load_rows = p_linear_load_rows, b->linear_free = p_linear_free;
    b->experts_create = p_experts_create, b->experts_load = p_experts_load;
    b->experts_set_fused = p_experts_set_fused, b->experts_free = p_experts_free;
    b->embed = p_embed, b->rmsnorm = p_rmsnorm, b->linear = p_linear, b->split_cols = p_split_cols;
    b->clip = p_clip, b->rope_angles = p_rope_angles, b->rope = p_rope, b->kv_store = p_kv_store;
    b->attention = p_attention, b->add = p_add, b->router_topk = p_router_topk, b->experts = p_experts;
    b->argmax_rows = p_argmax_rows;
    b->sync = p_sync, b->destroy = p_destroy;
    return b;
}

int moe_backend_profile_read(const moe_backend *b, double seconds[MOE_OP_COUNT], long calls[MOE_OP_COUNT])
{
    if (!b || b->destroy != p_destroy) return 0;
    const profile_state *s = b->impl;
    memcpy(seconds, s->seconds, sizeof s->seconds);
    memcpy(calls, s->calls, sizeof s->calls);
    return 1;
}

void moe_backend_profile_reset(moe_backend *b)
{
    if (!b || b->destroy != p_destroy) return;
    profile_state *s = b->impl;
    memset(s->seconds, 0, sizeof s->seconds);
    memset(s->calls, 0, sizeof s->calls);
}
