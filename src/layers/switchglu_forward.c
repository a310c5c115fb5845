/* layers/switchglu_forward.c — the forward pass of the expert layer: group
 * pairs by expert, gate-up (fused or not), SwiGLU, down with the weighted sum.
 * See switchglu.c for the plan. */
#include <string.h>

#include "backend/device_layer.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/threadpool.h"
#include "layers/switchglu_internal.h"
#include "moe/runtime.h"

typedef struct {
    moe_switchglu *l;
    const moe_cpu_kernels *kern;
    const float *x;
    float *y;
    const float *scores;
    int tokens, top_k, groups;
    int need_xsum, need_hsum;   /* group sums of x / h (quantized GEMV) */
    int i8_x, i8_h;             /* int8 activations of x / h (GEMV) */
    int x2;                     /* with int8: a residual digit too (MOE_ACT_INT8X2) */
    int chunk;                  /* vectors a matrix-vector call takes: MOE_GEMV_MAX_M, half with x2
                                 * as two rows (no panel_gemv_i8x2) */
    int rows_joined;            /* x2 rows joined once (xa, ha) for panel_gemv_i8x2_joined */
    /* every group on the matrix-vector kernels (a few tokens: decode):
     * panels are handed out from counters, so that a thread slowed by
     * another process does not hold the others up; larger groups keep
     * their even shares (each thread packs a group's tokens once) */
    int dynamic;
    moe_work hidden_items;      /* (group, HIDDEN_CHUNK hidden panels) */
    moe_work dim_items;         /* model-dimension panels */
} forward_ctx;

/* On the dynamic path gate-up's items are (group, HIDDEN_CHUNK hidden
 * panels), about 150 KB of 4-bit gate and up weights at D 2048; a thread
 * walks its own share of them in order (an expert's panels are contiguous)
 * and takes one at a time from the others'. Down takes DIM_OWN model
 * panels at a time from its own share, every group's rows of them in turn
 * (each expert's 300 KB read as one stream), and DIM_STEAL from others'. */
enum { HIDDEN_CHUNK = 4, DIM_OWN = 16, DIM_STEAL = 2 };

/* The matrix-vector inputs of up to MOE_GEMV_MAX_M vectors: floats, group
 * sums, and int8 activations with their scales when those are in use. */
typedef struct {
    const float *v[MOE_GEMV_MAX_M], *sum[MOE_GEMV_MAX_M], *d[MOE_GEMV_MAX_M], *dr[MOE_GEMV_MAX_M];
    const float *zero[MOE_GEMV_MAX_M];
    const int8_t *q[MOE_GEMV_MAX_M], *qr[MOE_GEMV_MAX_M];
    const int16_t *joined[MOE_GEMV_MAX_M];
    int m, i8, x2;
} gemv_args;

/* Vector `row` of the x (down = 0) or h (down = 1) side into slot i. */
static void gemv_arg(const forward_ctx *c, gemv_args *a, int i, int down, int row)
{
    const moe_switchglu *l = c->l;
    int K = down ? l->hidden : l->dim;
    int G = down ? l->down.fmt.group_size : l->gate_up.fmt.group_size;
    a->v[i] = (down ? l->ws->h : c->x) + (size_t)row * K;
    a->sum[i] = (down ? c->need_hsum : c->need_xsum) ? (down ? l->ws->hsum : l->ws->xsum) + (size_t)row * (K / G) : NULL;
    a->i8 = down ? c->i8_h : c->i8_x;
    if (a->i8) {
        a->q[i] = (down ? l->ws->hq : l->ws->xq) + (size_t)row * K;
        a->d[i] = (down ? l->ws->hd : l->ws->xd) + (size_t)row * (K / G);
    }
    a->x2 = a->i8 && c->x2;
    if (a->x2) {
        a->qr[i] = (down ? l->ws->hqr : l->ws->xqr) + (size_t)row * K;
        a->dr[i] = (down ? l->ws->hdr : l->ws->xdr) + (size_t)row * (K / G);
        a->zero[i] = l->ws->zsum;
        if (c->rows_joined) a->joined[i] = (down ? l->ws->ha : l->ws->xa) + (size_t)row * K;
    }
}

/* out[i][0..nr) += extra[i][0..nr): a residual digit's share. */
static void add_rows(int m, int nr, float *const *out, float (*extra)[MOE_PANEL])
{
    for (int i = 0; i < m; i++)
        for (int r = 0; r < nr; r++) out[i][r] += extra[i][r];
}

static void run_gemv(const forward_ctx *c, const moe_panel_format *f, const moe_panel *p, const gemv_args *a,
                     float *const *out)
{
    if (!a->i8) {
        c->kern->panel_gemv(f, p, a->m, a->v, a->sum, out);
        return;
    }
    if (!a->x2) {
        c->kern->panel_gemv_i8(f, p, a->m, a->q, a->d, a->sum, out);
        return;
    }
    if (c->rows_joined) {
        c->kern->panel_gemv_i8x2_joined(f, p, a->m, a->joined, a->d, a->sum, out);
        return;
    }
    if (c->kern->panel_gemv_i8x2) {
        /* both digits in one call, the codes split once */
        c->kern->panel_gemv_i8x2(f, p, a->m, a->q, a->qr, a->d, a->sum, out);
        return;
    }
    /* each vector's two digits as two rows of one call (codes split once
     * for both); the residual row's result is then added */
    const int8_t *q[MOE_GEMV_MAX_M];
    const float *d[MOE_GEMV_MAX_M], *s[MOE_GEMV_MAX_M];
    float extra[MOE_GEMV_MAX_M][MOE_PANEL], *o[MOE_GEMV_MAX_M], *eo[MOE_GEMV_MAX_M];
    for (int i = 0; i < a->m; i++) {
        q[2 * i] = a->q[i], d[2 * i] = a->d[i], s[2 * i] = a->sum[i], o[2 * i] = out[i];
        q[2 * i + 1] = a->qr[i], d[2 * i + 1] = a->dr[i], s[2 * i + 1] = a->zero[i], o[2 * i + 1] = extra[i];
        eo[i] = out[i];
    }
    c->kern->panel_gemv_i8(f, p, 2 * a->m, q, d, s, o);
    add_rows(a->m, p->nr, eo, extra);
}

static int min_int(int a, int b) { return a < b ? a : b; }

/* A group of m pairs runs the float GEMM (dequantized panels, register
 * tiles) when it has more pairs than one matrix-vector call takes, except
 * with int8 activations: those stay on int8 dot products, through the
 * kernel set's panel GEMM (tiles of mr_i8 tokens) where it has one, else
 * the matrix-vector kernel a few tokens at a time. */
static int group_uses_gemm(const forward_ctx *c, int down, int m)
{
    return m > MOE_GEMV_MAX_M && !(down ? c->i8_h : c->i8_x);
}

static int group_uses_gemm_i8(const forward_ctx *c, int down, int m)
{
    return m > MOE_GEMV_MAX_M && (down ? c->i8_h : c->i8_x) && c->kern->panel_gemm_i8;
}

/* The panel as float [K][16]: straight from the store when it already is,
 * else unpacked into dst. */
static const float *panel_as_f32(const forward_ctx *c, const moe_expert_store *s,
                                 const moe_panel *p, float *dst)
{
    if (s->fmt.fmt == MOE_WF_F32 && p->nr == MOE_PANEL) return p->w;
    c->kern->panel_unpack(&s->fmt, p, dst);
    return dst;
}

/* Packs the group's input rows (x of each pair's token, or h of each pair)
 * into mr-token tiles. */
static void pack_group(const forward_ctx *c, thread_scratch *sc, const int32_t *pairs, int m,
                       const float *rows, int K, int by_token)
{
    int mr = c->kern->mr;
    for (int t0 = 0; t0 < m; t0 += mr) {
        const float *src[MOE_TILE_MAX_M];
        int mm = min_int(mr, m - t0);
        for (int i = 0; i < mm; i++) {
            int row = by_token ? pairs[t0 + i] / c->top_k : pairs[t0 + i];
            src[i] = rows + (size_t)row * K;
        }
        moe_pack_a(K, mm, mr, src, sc->apack + (size_t)(t0 / mr) * K * mr);
    }
}

/* With the residual digit, one call takes both (panel_gemm_i8x2) from a
 * tile that joins them, packed once for all the panels that read it. */
static int joined_x2(const forward_ctx *c) { return c->x2 && c->kern->panel_gemm_i8x2; }

/* Packs the group's int8 activations (x of each pair's token, or h of each
 * pair), their scales and group sums into tiles of mr_i8 tokens. */
static void pack_group_i8(const forward_ctx *c, thread_scratch *sc, int down, const int32_t *pairs, int m)
{
    const moe_switchglu *l = c->l;
    int mr = c->kern->mr_i8, K = down ? l->hidden : l->dim;
    int G = K / (down ? l->down.fmt.group_size : l->gate_up.fmt.group_size);
    moe_wformat f = down ? l->down.fmt.fmt : l->gate_up.fmt.fmt;
    for (int t0 = 0; t0 < m; t0 += mr) {
        const int8_t *q[MOE_TILE_MAX_M];
        const float *d[MOE_TILE_MAX_M], *s[MOE_TILE_MAX_M];
        int mm = min_int(mr, m - t0);
        for (int i = 0; i < mm; i++) {
            size_t row = (size_t)(down ? pairs[t0 + i] : pairs[t0 + i] / c->top_k);
            q[i] = (down ? l->ws->hq : l->ws->xq) + row * K;
            d[i] = (down ? l->ws->hd : l->ws->xd) + row * G;
            s[i] = (down ? l->ws->hsum : l->ws->xsum) + row * G;
        }
        if (joined_x2(c)) {
            const int8_t *r[MOE_TILE_MAX_M];
            for (int i = 0; i < mm; i++)
                r[i] = (down ? l->ws->hqr : l->ws->xqr) + (size_t)(down ? pairs[t0 + i] : pairs[t0 + i] / c->top_k) * K;
            (c->kern->pack_act_i8x2 ? c->kern->pack_act_i8x2 : moe_pack_act_i8x2)(
                f, K, K / G, mm, q, r, d, s, (int16_t *)sc->aq + (size_t)t0 * K, sc->ad + (size_t)t0 * G,
                sc->as + (size_t)t0 * G);
            continue;
        }
        moe_pack_act_i8(K, K / G, mm, q, d, s, sc->aq + (size_t)t0 * K, sc->ad + (size_t)t0 * G,
                        sc->as + (size_t)t0 * G);
        if (!c->x2) continue;
        for (int i = 0; i < mm; i++) {
            size_t row = (size_t)(down ? pairs[t0 + i] : pairs[t0 + i] / c->top_k);
            q[i] = (down ? l->ws->hqr : l->ws->xqr) + row * K;
            d[i] = (down ? l->ws->hdr : l->ws->xdr) + row * G;
            s[i] = l->ws->zsum;
        }
        moe_pack_act_i8(K, K / G, mm, q, d, s, sc->aqr + (size_t)t0 * K, sc->adr + (size_t)t0 * G,
                        sc->asr + (size_t)t0 * G);
    }
}

/* One panel times the packed tile of the group's tokens from t0 on. */
static void run_gemm_i8(const forward_ctx *c, const thread_scratch *sc, const moe_panel_format *f,
                        const moe_panel *p, int m, int t0, float *const *out)
{
    int G = f->K / f->group_size, mm = min_int(c->kern->mr_i8, m - t0);
    if (joined_x2(c)) {
        c->kern->panel_gemm_i8x2(f, p, mm, (const int16_t *)sc->aq + (size_t)t0 * f->K, sc->ad + (size_t)t0 * G,
                                 sc->as + (size_t)t0 * G, out);
        return;
    }
    c->kern->panel_gemm_i8(f, p, mm, sc->aq + (size_t)t0 * f->K, sc->ad + (size_t)t0 * G, sc->as + (size_t)t0 * G, out);
    if (c->x2) {
        /* the residual digits over the same panel, still in L1 */
        float extra[MOE_TILE_MAX_M][MOE_PANEL], *eo[MOE_TILE_MAX_M];
        for (int i = 0; i < mm; i++) eo[i] = extra[i];
        c->kern->panel_gemm_i8(f, p, mm, sc->aqr + (size_t)t0 * f->K, sc->adr + (size_t)t0 * G,
                               sc->asr + (size_t)t0 * G, eo);
        add_rows(mm, p->nr, out, extra);
    }
}

/* Input block length for the GEMM: the two unpacked panels' block (KC × 32
 * floats, 16 KiB) stays in L1 while every token tile of the group runs over it. */
enum { KC = 128 };

/* sc->c tiles [ceil(m/mr)][mr][32] = packed token tiles · (B0 ‖ B1). */
static void gemm_group(const forward_ctx *c, thread_scratch *sc, int m, int K, const float *B0, const float *B1)
{
    int mr = c->kern->mr, tiles = (m + mr - 1) / mr;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = min_int(KC, K - k0);
        for (int t = 0; t < tiles; t++)
            c->kern->gemm_tile(kc, sc->apack + ((size_t)t * K + k0) * mr, B0 + (size_t)k0 * MOE_PANEL,
                               B1 + (size_t)k0 * MOE_PANEL, sc->c + (size_t)t * mr * MOE_TILE_N, k0 > 0);
    }
}

/* ---- gate and up ------------------------------------------------------ */

typedef struct {
    const forward_ctx *c;
    int e, m;
    const int32_t *pairs;
    int p0, p1;          /* this thread's hidden panels */
} gate_up_job;

static moe_panel hidden_panel(const moe_switchglu *l, int e, const size_t *slots, int p)
{
    return moe_expert_store_panel(&l->gate_up, e, slots[p], panel_rows(l->hidden, p));
}

/* The matrix-vector inputs of up to MOE_GEMV_MAX_M of a group's m pairs,
 * from pair c0 on: each pair's token of x (gate/up) or its own h (down). */
static gemv_args chunk_args(const forward_ctx *c, int down, const int32_t *pairs, int m, int c0)
{
    gemv_args a = { .m = min_int(c->chunk, m - c0) };
    for (int i = 0; i < a.m; i++) gemv_arg(c, &a, i, down, down ? pairs[c0 + i] : pairs[c0 + i] / c->top_k);
    return a;
}

/* One gate or up panel times the group's pairs from c0 on (as many as a
 * call takes): the int8 panel GEMM on the packed tile there (tiled), or the
 * matrix-vector kernel on the pairs' own rows. */
static void gate_up_chunk(const forward_ctx *c, const thread_scratch *sc, int tiled, const moe_panel *p,
                          const int32_t *pairs, int m, int c0, float *const *out)
{
    if (tiled) {
        run_gemm_i8(c, sc, &c->l->gate_up.fmt, p, m, c0, out);
        return;
    }
    gemv_args a = chunk_args(c, 0, pairs, m, c0);
    run_gemv(c, &c->l->gate_up.fmt, p, &a, out);
}

/* Panel by panel, the group's pairs a call's worth at a time: a few for
 * the matrix-vector kernel, or a tile of mr_i8 for the int8 panel GEMM
 * (tiled; its activations packed beforehand). A panel stays in L1 while the
 * pairs pass over it. Fused and unfused cut the group into the same calls. */
static void gate_up_chunked(const gate_up_job *j, const thread_scratch *sc, int tiled)
{
    const forward_ctx *c = j->c;
    const moe_switchglu *l = c->l;
    int I = l->hidden, step = tiled ? c->kern->mr_i8 : c->chunk;
    if (l->fused) {
        /* gate over a block of pairs, then up over the same block, then
         * SwiGLU, so only h is written. Tiled, the block is the whole group
         * (results in sc->c, [m][32]): each panel passes over every tile as
         * unfused's does, so fusing only removes the writes of g and u and
         * their SwiGLU pass. For the matrix-vector kernel a block is a few
         * calls, its results on the stack. */
        enum { GEMV_BLOCK = 8 * MOE_GEMV_MAX_M };
        float stack[2 * GEMV_BLOCK * MOE_PANEL];
        int block = tiled ? j->m : GEMV_BLOCK;
        float *gu = tiled ? sc->c : stack;   /* [block][32]: gate's 16, then up's */
        for (int p = j->p0; p < j->p1; p++) {
            moe_panel gp = hidden_panel(l, j->e, l->gate_slot, p), up = hidden_panel(l, j->e, l->up_slot, p);
            for (int b0 = 0; b0 < j->m; b0 += block) {
                int b1 = min_int(j->m, b0 + block);
                for (int which = 0; which < 2; which++)
                    for (int c0 = b0; c0 < b1; c0 += step) {
                        float *out[MOE_TILE_MAX_M];
                        for (int i = 0; i < min_int(step, b1 - c0); i++)
                            out[i] = gu + (size_t)(c0 - b0 + i) * MOE_TILE_N + which * MOE_PANEL;
                        gate_up_chunk(c, sc, tiled, which ? &up : &gp, j->pairs, j->m, c0, out);
                    }
                for (int i = b0; i < b1; i++) {
                    const float *r = gu + (size_t)(i - b0) * MOE_TILE_N;
                    c->kern->swiglu(gp.nr, r, r + MOE_PANEL, l->ws->h + (size_t)j->pairs[i] * I + (size_t)p * MOE_PANEL);
                }
            }
        }
        return;
    }
    for (int which = 0; which < 2; which++) {
        const size_t *slots = which ? l->up_slot : l->gate_slot;
        float *dst = which ? l->ws->u : l->ws->g;
        for (int p = j->p0; p < j->p1; p++) {
            moe_panel pp = hidden_panel(l, j->e, slots, p);
            for (int c0 = 0; c0 < j->m; c0 += step) {
                float *out[MOE_TILE_MAX_M];
                for (int i = 0; i < min_int(step, j->m - c0); i++)
                    out[i] = dst + (size_t)j->pairs[c0 + i] * I + (size_t)p * MOE_PANEL;
                gate_up_chunk(c, sc, tiled, &pp, j->pairs, j->m, c0, out);
            }
        }
    }
}

static void gate_up_gemm(const gate_up_job *j, thread_scratch *sc)
{
    const forward_ctx *c = j->c;
    const moe_switchglu *l = c->l;
    int D = l->dim, I = l->hidden;
    float *b0 = sc->b, *b1 = sc->b + (size_t)D * MOE_PANEL;
    pack_group(c, sc, j->pairs, j->m, c->x, D, 1);
    if (l->fused) {
        for (int p = j->p0; p < j->p1; p++) {
            moe_panel gp = hidden_panel(l, j->e, l->gate_slot, p), up = hidden_panel(l, j->e, l->up_slot, p);
            gemm_group(c, sc, j->m, D, panel_as_f32(c, &l->gate_up, &gp, b0), panel_as_f32(c, &l->gate_up, &up, b1));
            for (int i = 0; i < j->m; i++)
                c->kern->swiglu(gp.nr, sc->c + (size_t)i * MOE_TILE_N, sc->c + (size_t)i * MOE_TILE_N + MOE_PANEL,
                                l->ws->h + (size_t)j->pairs[i] * I + (size_t)p * MOE_PANEL);
        }
        return;
    }
    for (int which = 0; which < 2; which++) {
        const size_t *slots = which ? l->up_slot : l->gate_slot;
        float *dst = which ? l->ws->u : l->ws->g;
        for (int p = j->p0; p < j->p1; p += 2) {
            int two = p + 1 < j->p1;
            moe_panel pa = hidden_panel(l, j->e, slots, p);
            moe_panel pb = two ? hidden_panel(l, j->e, slots, p + 1) : pa;
            const float *B0 = panel_as_f32(c, &l->gate_up, &pa, b0);
            gemm_group(c, sc, j->m, D, B0, two ? panel_as_f32(c, &l->gate_up, &pb, b1) : B0);
            for (int i = 0; i < j->m; i++) {
                const float *ci = sc->c + (size_t)i * MOE_TILE_N;
                float *row = dst + (size_t)j->pairs[i] * I + (size_t)p * MOE_PANEL;
                memcpy(row, ci, sizeof(float) * (size_t)pa.nr);
                if (two) memcpy(row + MOE_PANEL, ci + MOE_PANEL, sizeof(float) * (size_t)pb.nr);
            }
        }
    }
}

/* ---- down, weighted into y ------------------------------------------- */

static void down_gemv(const forward_ctx *c, int e, const int32_t *pairs, int m, int q0, int q1)
{
    const moe_switchglu *l = c->l;
    int D = l->dim;
    float tmp[MOE_GEMV_MAX_M][MOE_PANEL], *out[MOE_GEMV_MAX_M];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) out[i] = tmp[i];
    for (int q = q0; q < q1; q++) {
        moe_panel dp = moe_expert_store_panel(&l->down, e, (size_t)q * MOE_PANEL, panel_rows(D, q));
        for (int c0 = 0; c0 < m; c0 += c->chunk) {
            gemv_args a = chunk_args(c, 1, pairs, m, c0);
            run_gemv(c, &l->down.fmt, &dp, &a, out);
            for (int i = 0; i < a.m; i++) {
                int pair = pairs[c0 + i];
                float s = c->scores[pair], *yrow = c->y + (size_t)(pair / c->top_k) * D + (size_t)q * MOE_PANEL;
                for (int r = 0; r < dp.nr; r++) yrow[r] += s * tmp[i][r];
            }
        }
    }
}

static void down_gemm(const forward_ctx *c, thread_scratch *sc, int e, const int32_t *pairs, int m,
                      int q0, int q1)
{
    const moe_switchglu *l = c->l;
    int D = l->dim, I = l->hidden;
    float *b0 = sc->b, *b1 = sc->b + (size_t)I * MOE_PANEL;
    pack_group(c, sc, pairs, m, l->ws->h, I, 0);
    for (int q = q0; q < q1; q += 2) {
        int two = q + 1 < q1;
        moe_panel pa = moe_expert_store_panel(&l->down, e, (size_t)q * MOE_PANEL, panel_rows(D, q));
        moe_panel pb = two ? moe_expert_store_panel(&l->down, e, (size_t)(q + 1) * MOE_PANEL, panel_rows(D, q + 1)) : pa;
        const float *B0 = panel_as_f32(c, &l->down, &pa, b0);
        gemm_group(c, sc, m, I, B0, two ? panel_as_f32(c, &l->down, &pb, b1) : B0);
        int width = two ? MOE_PANEL + pb.nr : pa.nr;
        for (int i = 0; i < m; i++) {
            int pair = pairs[i];
            float s = c->scores[pair], *yrow = c->y + (size_t)(pair / c->top_k) * D + (size_t)q * MOE_PANEL;
            const float *ci = sc->c + (size_t)i * MOE_TILE_N;
            for (int r = 0; r < width; r++) yrow[r] += s * ci[r];
        }
    }
}

/* y[0..n) += s·v[0..n): n is 16 but in a projection's last panel; the
 * fixed-length loop vectorises. */
static void add_scaled(float *restrict y, const float *restrict v, float s, int n)
{
    if (n == MOE_PANEL)
        for (int r = 0; r < MOE_PANEL; r++) y[r] += s * v[r];
    else
        for (int r = 0; r < n; r++) y[r] += s * v[r];
}

/* Tile by tile: the tile's int8 activations (12 KiB at I 1024) stay in L1
 * while this thread's down panels pass over them from L2, and each pair's
 * row of y and score are looked up once a tile. */
static void down_gemm_i8(const forward_ctx *c, thread_scratch *sc, int e, const int32_t *pairs, int m,
                         int q0, int q1)
{
    const moe_switchglu *l = c->l;
    int D = l->dim, mr = c->kern->mr_i8;
    float tmp[MOE_TILE_MAX_M][MOE_PANEL], *out[MOE_TILE_MAX_M], *yrow[MOE_TILE_MAX_M], score[MOE_TILE_MAX_M];
    for (int i = 0; i < MOE_TILE_MAX_M; i++) out[i] = tmp[i];
    pack_group_i8(c, sc, 1, pairs, m);
    for (int t0 = 0; t0 < m; t0 += mr) {
        int mm = min_int(mr, m - t0);
        for (int i = 0; i < mm; i++) {
            int pair = pairs[t0 + i];
            score[i] = c->scores[pair];
            yrow[i] = c->y + (size_t)(pair / c->top_k) * D;
        }
        for (int q = q0; q < q1; q++) {
            moe_panel dp = moe_expert_store_panel(&l->down, e, (size_t)q * MOE_PANEL, panel_rows(D, q));
            run_gemm_i8(c, sc, &l->down.fmt, &dp, m, t0, out);
            for (int i = 0; i < mm; i++) add_scaled(yrow[i] + (size_t)q * MOE_PANEL, tmp[i], score[i], dp.nr);
        }
    }
}

/* ---- the parallel body ------------------------------------------------ */

/* A row's group sums, and with i8 its int8 activations and their scales:
 * in one pass where the kernel set has one; with rows_joined, the two
 * digits joined into a too. */
static void prepare_row(const forward_ctx *c, moe_wformat f, int i8, int K, int G, const float *row, float *sums,
                        int8_t *q, float *d, int8_t *qr, float *dr, int16_t *a)
{
    int x2 = i8 && c->x2;
    if (i8 && c->kern->quantize_act_i8) c->kern->quantize_act_i8(f, K, G, row, q, d, sums, x2 ? qr : NULL);
    else {
        moe_group_sums(K, G, row, sums);
        if (i8) moe_quantize_act_i8(f, K, G, row, q, d);
        if (x2) moe_quantize_act_i8_residual(f, K, G, row, q, d, qr);
    }
    if (!x2) return;
    for (int g = 0; g < K / G; g++) dr[g] = d[g] / (float)MOE_I8_RESIDUAL_STEPS;
    if (c->rows_joined) moe_join_row_i8x2(c->kern, f, K, G, q, qr, a);
}

/* Group gi's expert and pairs into job (its panels are the caller's). */
static void group_job(const forward_ctx *c, int gi, gate_up_job *job)
{
    const moe_switchglu *l = c->l;
    job->e = l->ws->group_expert[gi];
    job->pairs = l->ws->order + l->ws->group_start[gi];
    job->m = l->ws->group_start[gi + 1] - l->ws->group_start[gi];
}

/* Unfused: h = SwiGLU(g, u) over hidden panels [p0, p1) of n pairs' rows,
 * pairs[i] (or pair i where pairs is NULL). */
static void swiglu_rows(const forward_ctx *c, const int32_t *pairs, int n, int p0, int p1)
{
    const moe_switchglu *l = c->l;
    int I = l->hidden;
    for (int i = 0; i < n; i++)
        for (int p = p0; p < p1; p++) {
            size_t off = (size_t)(pairs ? pairs[i] : i) * I + (size_t)p * MOE_PANEL;
            c->kern->swiglu(panel_rows(I, p), l->ws->g + off, l->ws->u + off, l->ws->h + off);
        }
}

static void down_rows(const forward_ctx *c, thread_scratch *sc, int q0, int q1);

static void forward_thread(void *arg, int t, int nt)
{
    forward_ctx *c = arg;
    moe_switchglu *l = c->l;
    thread_scratch *sc = &l->ws->scratch[t];
    int D = l->dim, I = l->hidden, lo, hi;
    int pairs_total = c->tokens * c->top_k;

    if (c->need_xsum) {
        int G = l->gate_up.fmt.group_size;
        moe_parallel_split(c->tokens, t, nt, &lo, &hi);
        for (int tok = lo; tok < hi; tok++)
            prepare_row(c, l->gate_up.fmt.fmt, c->i8_x, D, G, c->x + (size_t)tok * D, l->ws->xsum + (size_t)tok * (D / G),
                        c->i8_x ? l->ws->xq + (size_t)tok * D : NULL, c->i8_x ? l->ws->xd + (size_t)tok * (D / G) : NULL,
                        c->x2 ? l->ws->xqr + (size_t)tok * D : NULL, c->x2 ? l->ws->xdr + (size_t)tok * (D / G) : NULL,
                        c->rows_joined && c->i8_x ? l->ws->xa + (size_t)tok * D : NULL);
        moe_parallel_barrier();
    }

    /* gate and up (and SwiGLU), this thread's hidden panels */
    gate_up_job job = { .c = c };
    if (c->dynamic) {
        int per = (l->panels_hidden + HIDDEN_CHUNK - 1) / HIDDEN_CHUNK, item, end;
        while (moe_work_next(&c->hidden_items, t, nt, c->groups * per, 1, 1, &item, &end)) {
            group_job(c, item / per, &job);
            job.p0 = item % per * HIDDEN_CHUNK;
            job.p1 = min_int(job.p0 + HIDDEN_CHUNK, l->panels_hidden);
            gate_up_chunked(&job, sc, 0);
            if (!l->fused) swiglu_rows(c, job.pairs, job.m, job.p0, job.p1);
        }
    } else {
        moe_parallel_split(l->panels_hidden, t, nt, &job.p0, &job.p1);
        for (int gi = 0; gi < c->groups; gi++) {
            group_job(c, gi, &job);
            if (group_uses_gemm(c, 0, job.m)) gate_up_gemm(&job, sc);
            else if (group_uses_gemm_i8(c, 0, job.m)) {
                pack_group_i8(c, sc, 0, job.pairs, job.m);
                gate_up_chunked(&job, sc, 1);
            } else gate_up_chunked(&job, sc, 0);
        }
        if (!l->fused) swiglu_rows(c, NULL, pairs_total, job.p0, job.p1);
    }
    moe_parallel_barrier();

    if (c->need_hsum) {
        int G = l->down.fmt.group_size;
        moe_parallel_split(pairs_total, t, nt, &lo, &hi);
        for (int pair = lo; pair < hi; pair++)
            prepare_row(c, l->down.fmt.fmt, c->i8_h, I, G, l->ws->h + (size_t)pair * I, l->ws->hsum + (size_t)pair * (I / G),
                        c->i8_h ? l->ws->hq + (size_t)pair * I : NULL, c->i8_h ? l->ws->hd + (size_t)pair * (I / G) : NULL,
                        c->x2 ? l->ws->hqr + (size_t)pair * I : NULL, c->x2 ? l->ws->hdr + (size_t)pair * (I / G) : NULL,
                        c->rows_joined && c->i8_h ? l->ws->ha + (size_t)pair * I : NULL);
        moe_parallel_barrier();
    }

    /* down projection, weighted and summed into y, this thread's model rows */
    int q0, q1;
    if (c->dynamic) {
        while (moe_work_next(&c->dim_items, t, nt, l->panels_dim, DIM_OWN, DIM_STEAL, &q0, &q1))
            down_rows(c, sc, q0, q1);
        return;
    }
    moe_parallel_split(l->panels_dim, t, nt, &q0, &q1);
    down_rows(c, sc, q0, q1);
}

/* Model rows of panels [q0, q1): zeroed, then every group's down projection
 * weighted into them. */
static void down_rows(const forward_ctx *c, thread_scratch *sc, int q0, int q1)
{
    const moe_switchglu *l = c->l;
    int D = l->dim;
    int r0 = q0 * MOE_PANEL, r1 = min_int(q1 * MOE_PANEL, D);
    for (int tok = 0; tok < c->tokens && r1 > r0; tok++)
        memset(c->y + (size_t)tok * D + r0, 0, sizeof(float) * (size_t)(r1 - r0));
    for (int gi = 0; gi < c->groups; gi++) {
        int e = l->ws->group_expert[gi], m = l->ws->group_start[gi + 1] - l->ws->group_start[gi];
        const int32_t *pairs = l->ws->order + l->ws->group_start[gi];
        if (group_uses_gemm(c, 1, m)) down_gemm(c, sc, e, pairs, m, q0, q1);
        else if (group_uses_gemm_i8(c, 1, m)) down_gemm_i8(c, sc, e, pairs, m, q0, q1);
        else down_gemv(c, e, pairs, m, q0, q1);
    }
}

/* ---- setup ------------------------------------------------------------ */

/* Fills order/group_start/group_expert; returns the number of groups. */
static int make_groups(moe_switchglu *l, const int32_t *idx, int pairs)
{
    if (pairs < l->sort_threshold) {
        for (int p = 0; p < pairs; p++) {
            l->ws->order[p] = p;
            l->ws->group_start[p] = p;
            l->ws->group_expert[p] = idx[p];
        }
        l->ws->group_start[pairs] = pairs;
        return pairs;
    }
    /* counting sort by expert, stable in pair order */
    memset(l->ws->count, 0, sizeof(int32_t) * (size_t)l->experts);
    for (int p = 0; p < pairs; p++) l->ws->count[idx[p]]++;
    int groups = 0, start = 0;
    for (int e = 0; e < l->experts; e++) {
        if (!l->ws->count[e]) continue;
        l->ws->group_expert[groups] = e;
        l->ws->group_start[groups++] = start;
        int n = l->ws->count[e];
        l->ws->count[e] = start; /* now the next free position of expert e */
        start += n;
    }
    l->ws->group_start[groups] = pairs;
    for (int p = 0; p < pairs; p++) l->ws->order[l->ws->count[idx[p]]++] = p;
    return groups;
}

static int largest_group(const moe_switchglu *l, int groups)
{
    int largest = 0;
    for (int gi = 0; gi < groups; gi++) {
        int m = l->ws->group_start[gi + 1] - l->ws->group_start[gi];
        if (m > largest) largest = m;
    }
    return largest;
}

/* Activation buffers and per-thread scratch for this call's shapes. */
static moe_status prepare_workspace(moe_switchglu *l, const forward_ctx *c, int pairs)
{
    int D = l->dim, I = l->hidden, mr = c->kern->mr;
    size_t hf = (size_t)pairs * I;
    moe_status st;
    if ((st = MOE_GROW(l->ws->h, l->ws->h_floats, hf, "hidden activations")) != MOE_OK) return st;
    if (!l->fused) {
        if ((st = MOE_GROW(l->ws->g, l->ws->g_floats, hf, "gate activations")) != MOE_OK) return st;
        if ((st = MOE_GROW(l->ws->u, l->ws->u_floats, hf, "up activations")) != MOE_OK) return st;
    }
    size_t xf = (size_t)c->tokens * D;
    if (c->need_xsum &&
        (st = MOE_GROW(l->ws->xsum, l->ws->xsum_floats, xf / l->gate_up.fmt.group_size, "group sums")) != MOE_OK)
        return st;
    if (c->need_hsum &&
        (st = MOE_GROW(l->ws->hsum, l->ws->hsum_floats, hf / l->down.fmt.group_size, "group sums")) != MOE_OK)
        return st;
    if (c->i8_x && ((st = MOE_GROW(l->ws->xq, l->ws->xq_bytes, xf, "int8 activations")) != MOE_OK ||
                    (st = MOE_GROW(l->ws->xd, l->ws->xd_floats, xf / l->gate_up.fmt.group_size, "activation scales")) != MOE_OK))
        return st;
    if (c->i8_h && ((st = MOE_GROW(l->ws->hq, l->ws->hq_bytes, hf, "int8 activations")) != MOE_OK ||
                    (st = MOE_GROW(l->ws->hd, l->ws->hd_floats, hf / l->down.fmt.group_size, "activation scales")) != MOE_OK))
        return st;
    if (c->x2 && c->i8_x &&
        ((st = MOE_GROW(l->ws->xqr, l->ws->xqr_bytes, xf, "residual digits")) != MOE_OK ||
         (st = MOE_GROW(l->ws->xdr, l->ws->xdr_floats, xf / l->gate_up.fmt.group_size, "residual scales")) != MOE_OK))
        return st;
    if (c->x2 && c->i8_h &&
        ((st = MOE_GROW(l->ws->hqr, l->ws->hqr_bytes, hf, "residual digits")) != MOE_OK ||
         (st = MOE_GROW(l->ws->hdr, l->ws->hdr_floats, hf / l->down.fmt.group_size, "residual scales")) != MOE_OK))
        return st;
    if (c->rows_joined &&
        ((c->i8_x && (st = MOE_GROW(l->ws->xa, l->ws->xa_count, xf, "joined int8 digits")) != MOE_OK) ||
         (c->i8_h && (st = MOE_GROW(l->ws->ha, l->ws->ha_count, hf, "joined int8 digits")) != MOE_OK)))
        return st;
    if (c->x2) {
        size_t zs = (size_t)(D > I ? D : I) / 32 + 1; /* groups of a row at the smallest group size */
        if (zs > l->ws->zsum_floats) {
            if ((st = MOE_GROW(l->ws->zsum, l->ws->zsum_floats, zs, "zero sums")) != MOE_OK) return st;
            memset(l->ws->zsum, 0, sizeof(float) * zs);
        }
    }

    int largest = largest_group(l, c->groups);
    size_t K = (size_t)(D > I ? D : I);
    size_t apack = group_uses_gemm(c, 0, largest) || group_uses_gemm(c, 1, largest)
                       ? (size_t)((largest + mr - 1) / mr) * mr * K : 0;
    /* int8 tiles: the largest group's tokens, at the larger K of the sides
     * that use them, and the group count at the larger of K/group */
    size_t aq = 0, ag = 0;
    if (group_uses_gemm_i8(c, 0, largest)) {
        aq = (size_t)D;
        ag = (size_t)(D / l->gate_up.fmt.group_size);
    }
    if (group_uses_gemm_i8(c, 1, largest)) {
        if ((size_t)I > aq) aq = (size_t)I;
        if ((size_t)(I / l->down.fmt.group_size) > ag) ag = (size_t)(I / l->down.fmt.group_size);
    }
    aq *= (size_t)largest, ag *= (size_t)largest;
    int threads = moe_num_threads();
    if (threads > MOE_SWITCHGLU_MAX_THREADS) threads = MOE_SWITCHGLU_MAX_THREADS;
    for (int t = 0; t < threads; t++) {
        thread_scratch *sc = &l->ws->scratch[t];
        if ((st = MOE_GROW(sc->apack, sc->apack_floats, apack, "packed tokens")) != MOE_OK) return st;
        if ((st = MOE_GROW(sc->b, sc->b_floats, 2 * K * MOE_PANEL, "unpacked panels")) != MOE_OK) return st;
        /* tile results: the float GEMM's, or fused int8 tiles' gate and up */
        size_t cf = apack / K * MOE_TILE_N;
        if (l->fused && group_uses_gemm_i8(c, 0, largest) && (size_t)largest * MOE_TILE_N > cf)
            cf = (size_t)largest * MOE_TILE_N;
        if ((st = MOE_GROW(sc->c, sc->c_floats, cf, "tile results")) != MOE_OK) return st;
        /* joined digits: int16, twice the bytes */
        if ((st = MOE_GROW(sc->aq, sc->aq_bytes, joined_x2(c) ? 2 * aq : aq, "packed int8 tokens")) != MOE_OK ||
            (st = MOE_GROW(sc->ad, sc->ad_floats, ag, "packed activation scales")) != MOE_OK ||
            (st = MOE_GROW(sc->as, sc->as_floats, ag, "packed group sums")) != MOE_OK)
            return st;
        if (c->x2 && !joined_x2(c) &&
            ((st = MOE_GROW(sc->aqr, sc->aqr_bytes, aq, "packed residual digits")) != MOE_OK ||
             (st = MOE_GROW(sc->adr, sc->adr_floats, ag, "packed residual scales")) != MOE_OK ||
             (st = MOE_GROW(sc->asr, sc->asr_floats, ag, "packed zero sums")) != MOE_OK))
            return st;
    }
    return MOE_OK;
}

/* order, group_start, group_expert and count sized for `pairs`. */
static moe_status prepare_groups(moe_switchglu *l, int pairs)
{
    size_t need = (size_t)pairs + 1;
    moe_status st;
    if ((st = MOE_GROW(l->ws->order, l->ws->order_cap, need, "pair order")) != MOE_OK ||
        (st = MOE_GROW(l->ws->group_start, l->ws->group_start_cap, need, "pair groups")) != MOE_OK ||
        (st = MOE_GROW(l->ws->group_expert, l->ws->group_expert_cap, need, "pair groups")) != MOE_OK ||
        (st = MOE_GROW(l->ws->count, l->ws->count_cap, (size_t)l->experts, "expert counts")) != MOE_OK)
        return st;
    return MOE_OK;
}

moe_status moe_switchglu_check_call(const moe_switchglu *l, const float *x, int tokens, const int32_t *idx,
                                    const float *scores, int top_k, const float *y)
{
    if (!l || !x || !idx || !scores || !y)
        return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu forward: layer, x, indices, scores and y must not be NULL");
    if (tokens < 0) return moe_error_set(MOE_ERR_SHAPE, "switchglu forward: token count %d is negative", tokens);
    if (top_k < 1 || top_k > l->experts)
        return moe_error_set(MOE_ERR_SHAPE, "switchglu forward: top_k %d is outside 1..%d (experts)", top_k, l->experts);
    if (x == y) return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu forward: y must not alias x");
    int pairs = tokens * top_k;
    for (int p = 0; p < pairs; p++) {
        if (idx[p] < 0 || idx[p] >= l->experts)
            return moe_error_set(MOE_ERR_RANGE, "switchglu forward: expert index %d at token %d, slot %d is outside 0..%d",
                                 idx[p], p / top_k, p % top_k, l->experts - 1);
        if (!l->loaded[idx[p]])
            return moe_error_set(MOE_ERR_INVALID_ARG, "switchglu forward: expert %d was never loaded", idx[p]);
    }
    return MOE_OK;
}

moe_status moe_switchglu_forward(moe_switchglu *l, const float *x, int tokens, const int32_t *idx,
                                 const float *scores, int top_k, float *y)
{
    moe_status st = moe_switchglu_check_call(l, x, tokens, idx, scores, top_k, y);
    if (st != MOE_OK) return st;
    if (l->dev) return moe_device_layer_forward(l->dev, x, tokens, idx, scores, top_k, y);
    if (tokens == 0) return MOE_OK;
    int pairs = tokens * top_k;

    forward_ctx c = { .l = l, .kern = moe_kernels(), .x = x, .y = y, .scores = scores,
                      .tokens = tokens, .top_k = top_k };
    if ((st = prepare_groups(l, pairs)) != MOE_OK) return st;
    c.groups = make_groups(l, idx, pairs);
    int i8 = l->int8_activations && c.kern->panel_gemv_i8;
    c.i8_x = i8 && moe_wformat_is_quant(l->gate_up.fmt.fmt);
    c.i8_h = i8 && moe_wformat_is_quant(l->down.fmt.fmt);
    c.x2 = i8 && l->int8_activations == MOE_ACT_INT8X2;
    c.chunk = c.x2 && !c.kern->panel_gemv_i8x2 ? MOE_GEMV_MAX_M / 2 : MOE_GEMV_MAX_M;
    c.dynamic = 1;
    for (int gi = 0; gi < c.groups; gi++) {
        int m = l->ws->group_start[gi + 1] - l->ws->group_start[gi];
        c.dynamic &= m <= MOE_GEMV_MAX_M;
        c.need_xsum |= !group_uses_gemm(&c, 0, m) && moe_wformat_is_quant(l->gate_up.fmt.fmt);
        c.need_hsum |= !group_uses_gemm(&c, 1, m) && moe_wformat_is_quant(l->down.fmt.fmt);
    }
    /* every group small (decode): each row's digits joined once for all
     * the panels it meets, where the kernel set reads them so */
    c.rows_joined = c.x2 && c.dynamic && c.kern->panel_gemv_i8x2 && c.kern->panel_gemv_i8x2_joined;
    if ((st = prepare_workspace(l, &c, pairs)) != MOE_OK) return st;
    moe_parallel_run(forward_thread, &c);
    return MOE_OK;
}
