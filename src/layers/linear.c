/* layers/linear.c — a dense projection on panel-packed weights.
 *
 * The work splits like the expert layer's: threads own output panels (16
 * rows each), never tokens, so each y element has one writer. Per call:
 *   1. the token side is prepared once, shared by all threads: group sums
 *      and int8 activations (matrix-vector paths), or tokens packed into the
 *      GEMM's register tiles;
 *   2. each thread runs its panels — matrix-vector kernels on the packed
 *      weights for a few tokens (a panel stays in L1 while they pass over
 *      it), else token blocks × dequantized panel pairs through the GEMM. */
#include "layers/linear.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "core/threadpool.h"
#include "kernels/tile_gemm.h"
#include "layers/expert_store.h"
#include "moe/runtime.h"
#include "quant/dtype.h"

enum {
    MAX_THREADS = 256,
    /* output panels a thread takes at a time from its own share, and from
     * another's once its own is done (at 4 bits and K 2048, 18 KB a panel) */
    OWN_PANELS = 8, STEAL_PANELS = 2
};
/* Weights up to this size run on the calling thread alone (moe_linear_forward). */
static const size_t ALONE_BYTES = (size_t)512 << 10;

typedef struct {
    float *b;            /* two unpacked panels [2][K][16] */
    float *c;            /* a token block's tile results [block][32] */
    size_t b_floats, c_floats;
} linear_scratch;

/* Token-side buffers, grown on demand; projections that never run at the
 * same time share one (moe_linear_share_workspace). */
typedef struct {
    int refs;
    float *apack, *xsum, *xd, *ad, *as;
    int8_t *xq, *aq;
    size_t apack_floats, xsum_floats, xd_floats, xq_bytes, ad_floats, as_floats, aq_bytes;
    linear_scratch scratch[MAX_THREADS];
} linear_workspace;

struct moe_linear {
    char name[96];
    int out, in, panels;
    moe_act_mode act;
    moe_expert_store w;          /* one "expert" of `out` row slots */
    unsigned char *loaded;       /* per panel */
    linear_workspace *ws;
};

static int min_int(int a, int b) { return a < b ? a : b; }

static int panel_nr(const moe_linear *l, int p) { return min_int(MOE_PANEL, l->out - p * MOE_PANEL); }

static moe_panel panel_at(const moe_linear *l, int p)
{
    return moe_expert_store_panel(&l->w, 0, (size_t)p * MOE_PANEL, panel_nr(l, p));
}

moe_status moe_linear_create(int out, int in, const moe_expert_weights *fmt, const char *name,
                             moe_linear **result)
{
    if (!result) return moe_error_set(MOE_ERR_INVALID_ARG, "linear create: output pointer is NULL");
    *result = NULL;
    if (!name) name = "linear";
    if (out < 1 || in < 1)
        return moe_error_set(MOE_ERR_SHAPE, "%s: shape [%d, %d] must be positive", name, out, in);
    moe_panel_format f;
    moe_status st = moe_expert_format_check(fmt, in, name, &f);
    if (st != MOE_OK) return st;
    moe_linear *l = moe_calloc(sizeof *l, name);
    if (!l) return MOE_ERR_NOMEM;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->out = out;
    l->in = in;
    l->panels = (out + MOE_PANEL - 1) / MOE_PANEL;
    l->loaded = moe_calloc((size_t)l->panels, "panel flags");
    l->ws = moe_calloc(sizeof *l->ws, "projection workspace");
    if (l->ws) l->ws->refs = 1;
    if (!l->loaded || !l->ws || (st = moe_expert_store_init(&l->w, &f, 1, (size_t)out, name)) != MOE_OK) {
        moe_linear_free(l);
        return st != MOE_OK ? st : MOE_ERR_NOMEM;
    }
    *result = l;
    return MOE_OK;
}

moe_status moe_linear_load_rows(moe_linear *l, int row0, int rows, const moe_expert_weights *w)
{
    if (!l) return moe_error_set(MOE_ERR_INVALID_ARG, "linear load: projection is NULL");
    if (row0 < 0 || rows < 1 || row0 + rows > l->out)
        return moe_error_set(MOE_ERR_SHAPE, "%s: rows [%d, %d) are outside its %d rows", l->name, row0,
                             row0 + rows, l->out);
    if (row0 % MOE_PANEL || (rows % MOE_PANEL && row0 + rows != l->out))
        return moe_error_set(MOE_ERR_SHAPE, "%s: rows [%d, %d) do not start and end on 16-row panels",
                             l->name, row0, row0 + rows);
    moe_panel_format f;
    moe_status st = moe_expert_format_check(w, l->in, l->name, &f);
    if (st != MOE_OK) return st;
    if (f.fmt != l->w.fmt.fmt || f.sdtype != l->w.fmt.sdtype || f.group_size != l->w.fmt.group_size)
        return moe_error_set(MOE_ERR_DTYPE, "%s: rows [%d, %d) differ in format from the projection's", l->name,
                             row0, row0 + rows);
    if (!w->weight || (moe_wformat_is_quant(f.fmt) && (!w->scales || !w->biases)))
        return moe_error_set(MOE_ERR_INVALID_ARG, "%s: weight, scales or biases pointer is NULL", l->name);
    for (int r = 0; r < rows; r += MOE_PANEL) {
        int p = (row0 + r) / MOE_PANEL;
        moe_expert_store_put_panel(&l->w, 0, (size_t)p * MOE_PANEL, w, (size_t)r, panel_nr(l, p));
        l->loaded[p] = 1;
    }
    return MOE_OK;
}

void moe_linear_row(const moe_linear *l, int r, float *dst)
{
    moe_panel p = panel_at(l, r / MOE_PANEL);
    int lane = r % MOE_PANEL, K = l->in;
    const moe_panel_format *f = &l->w.fmt;
    if (!moe_wformat_is_quant(f->fmt)) {
        const moe_dtype_traits *t = moe_dtype_traits_of(moe_wformat_value_dtype(f->fmt));
        for (int k = 0; k < K; k++)
            t->to_f32((const unsigned char *)p.w + ((size_t)k * p.nr + lane) * t->size, dst + k, 1);
        return;
    }
    const moe_dtype_traits *st = moe_dtype_traits_of(f->sdtype);
    int bits = moe_wformat_bits(f->fmt), epw = 32 / bits, G = f->group_size;
    uint32_t mask = (1u << bits) - 1;
    for (int g = 0; g < K / G; g++) {
        const uint32_t *codes = moe_panel_group(&p, p.w, g);
        float scale, bias;
        st->to_f32((const unsigned char *)moe_panel_group(&p, p.scales, g) + (size_t)lane * st->size, &scale, 1);
        st->to_f32((const unsigned char *)moe_panel_group(&p, p.biases, g) + (size_t)lane * st->size, &bias, 1);
        for (int i = 0; i < G; i++) {
            uint32_t word = codes[(size_t)(i / epw) * p.nr + lane];
            dst[g * G + i] = scale * (float)((word >> (i % epw * bits)) & mask) + bias;
        }
    }
}

void moe_linear_set_activations(moe_linear *l, moe_act_mode mode) { l->act = mode; }
int moe_linear_out(const moe_linear *l) { return l->out; }
const char *moe_linear_name(const moe_linear *l) { return l->name; }
int moe_linear_in(const moe_linear *l) { return l->in; }
size_t moe_linear_weight_bytes(const moe_linear *l) { return l ? moe_expert_store_bytes(&l->w) : 0; }

static void workspace_release(linear_workspace *w)
{
    if (!w || --w->refs > 0) return;
    moe_free(w->apack), moe_free(w->xsum), moe_free(w->xd), moe_free(w->xq);
    moe_free(w->aq), moe_free(w->ad), moe_free(w->as);
    for (int t = 0; t < MAX_THREADS; t++) moe_free(w->scratch[t].b), moe_free(w->scratch[t].c);
    moe_free(w);
}

moe_status moe_linear_share_workspace(moe_linear *l, moe_linear *with)
{
    if (!l || !with) return moe_error_set(MOE_ERR_INVALID_ARG, "linear share workspace: projection is NULL");
    if (l->ws == with->ws) return MOE_OK;
    workspace_release(l->ws);
    l->ws = with->ws;
    l->ws->refs++;
    return MOE_OK;
}

void moe_linear_free(moe_linear *l)
{
    if (!l) return;
    moe_expert_store_free(&l->w);
    moe_free(l->loaded);
    workspace_release(l->ws);
    moe_free(l);
}

/* ---- forward ---------------------------------------------------------- */

typedef enum { PATH_GEMV, PATH_GEMM, PATH_I8 } linear_path;

typedef struct {
    moe_linear *l;
    const moe_cpu_kernels *k;
    const float *x;
    float *y;
    int tokens;
    linear_path path;
    int quant;
    /* int8 paths: activation rows (a token's int8 digits; with the residual
     * digit each token is two rows, 2t and 2t + 1, whose results add) */
    int rows, x2, tile;     /* tile: rows a kernel call takes */
    /* x2 through the panel GEMM's joined-digit entry (panel_gemm_i8x2):
     * tiles of `tile` tokens, each input's two digits one int16 */
    int joined;
    /* x2 through the matrix-vector kernel's joined entry
     * (panel_gemv_i8x2_joined): each token's digits joined once, a row of
     * int16 for every panel */
    int rows_joined;
    moe_work *panels;       /* output panels handed out (int8 and matrix-vector paths) */
} linear_ctx;

/* Tokens of one GEMM block: eight register tiles, whose packed inputs
 * (block × K floats) stay in L2 while every panel pair passes over them. */
static int gemm_block(const moe_cpu_kernels *k) { return 8 * k->mr; }

/* int8 activations of tokens [lo, hi): digits, scales, group sums. */
static void quantize_tokens(const linear_ctx *c, int lo, int hi)
{
    moe_linear *l = c->l;
    int K = l->in, G = l->w.fmt.group_size, ng = K / G;
    moe_wformat f = l->w.fmt.fmt;
    for (int tok = lo; tok < hi; tok++) {
        const float *x = c->x + (size_t)tok * K;
        size_t row = (size_t)tok * (c->x2 ? 2 : 1);
        int8_t *q = l->ws->xq + row * K;
        float *d = l->ws->xd + row * ng, *s = l->ws->xsum + row * ng;
        if (c->k->quantize_act_i8) c->k->quantize_act_i8(f, K, G, x, q, d, s, c->x2 ? q + K : NULL);
        else {
            moe_quantize_act_i8(f, K, G, x, q, d);
            moe_group_sums(K, G, x, s);
            if (c->x2) moe_quantize_act_i8_residual(f, K, G, x, q, d, q + K);
        }
        if (!c->x2) continue;
        /* the residual digit: its own scale, no bias term */
        for (int g = 0; g < ng; g++) {
            d[ng + g] = d[g] / (float)MOE_I8_RESIDUAL_STEPS;
            s[ng + g] = 0.0f;
        }
    }
}

/* Step 1: the token side, shared by all threads. */
static void prepare_tokens(const linear_ctx *c, int t, int nt)
{
    moe_linear *l = c->l;
    int K = l->in, G = l->w.fmt.group_size, lo, hi;
    if (c->path == PATH_GEMM) {
        int mr = c->k->mr, tiles = (c->tokens + mr - 1) / mr;
        moe_parallel_split(tiles, t, nt, &lo, &hi);
        for (int tile = lo; tile < hi; tile++) {
            const float *src[MOE_TILE_MAX_M];
            int m = min_int(mr, c->tokens - tile * mr);
            for (int i = 0; i < m; i++) src[i] = c->x + (size_t)(tile * mr + i) * K;
            moe_pack_a(K, m, mr, src, l->ws->apack + (size_t)tile * K * mr);
        }
        return;
    }
    if (c->path == PATH_I8) {
        moe_parallel_split(c->tokens, t, nt, &lo, &hi);
        quantize_tokens(c, lo, hi);
        for (int tok = lo; c->rows_joined && tok < hi; tok++) {
            const int8_t *q = l->ws->xq + (size_t)tok * 2 * K;   /* its residual digits follow */
            moe_join_row_i8x2(c->k, l->w.fmt.fmt, K, G, q, q + K, (int16_t *)l->ws->aq + (size_t)tok * K);
        }
        if (!c->k->panel_gemm_i8 || c->rows <= MOE_GEMV_MAX_M) return;
        /* int8 tiles for the panel GEMM, packed once for all threads */
        moe_parallel_barrier();
        int ng = K / G;
        if (c->joined) {
            int tiles = (c->tokens + c->tile - 1) / c->tile;
            moe_parallel_split(tiles, t, nt, &lo, &hi);
            for (int tile = lo; tile < hi; tile++) {
                const int8_t *q[MOE_TILE_MAX_M], *r[MOE_TILE_MAX_M];
                const float *d[MOE_TILE_MAX_M], *s[MOE_TILE_MAX_M];
                size_t t0 = (size_t)tile * c->tile;
                int m = min_int(c->tile, c->tokens - (int)t0);
                for (int i = 0; i < m; i++) {
                    size_t row = 2 * (t0 + i);   /* a token's digit row; its residual follows */
                    q[i] = l->ws->xq + row * K, r[i] = q[i] + K;
                    d[i] = l->ws->xd + row * ng, s[i] = l->ws->xsum + row * ng;
                }
                (c->k->pack_act_i8x2 ? c->k->pack_act_i8x2 : moe_pack_act_i8x2)(
                    l->w.fmt.fmt, K, G, m, q, r, d, s, (int16_t *)l->ws->aq + t0 * K, l->ws->ad + t0 * ng,
                    l->ws->as + t0 * ng);
            }
            return;
        }
        int tiles = (c->rows + c->tile - 1) / c->tile;
        moe_parallel_split(tiles, t, nt, &lo, &hi);
        for (int tile = lo; tile < hi; tile++) {
            const int8_t *q[MOE_TILE_MAX_M];
            const float *d[MOE_TILE_MAX_M], *s[MOE_TILE_MAX_M];
            size_t r0 = (size_t)tile * c->tile;
            int m = min_int(c->tile, c->rows - (int)r0);
            for (int i = 0; i < m; i++) {
                q[i] = l->ws->xq + (r0 + i) * K;
                d[i] = l->ws->xd + (r0 + i) * ng;
                s[i] = l->ws->xsum + (r0 + i) * ng;
            }
            moe_pack_act_i8(K, G, m, q, d, s, l->ws->aq + r0 * K, l->ws->ad + r0 * ng, l->ws->as + r0 * ng);
        }
        return;
    }
    if (!c->quant) return;
    moe_parallel_split(c->tokens, t, nt, &lo, &hi);
    for (int tok = lo; tok < hi; tok++) moe_group_sums(K, G, c->x + (size_t)tok * K, l->ws->xsum + (size_t)tok * (K / G));
}

/* Step 2, few tokens, exact: panel by panel, the tokens a few at a time. */
static void run_gemv(const linear_ctx *c, int p0, int p1)
{
    const moe_linear *l = c->l;
    int K = l->in, G = l->w.fmt.group_size;
    for (int p = p0; p < p1; p++) {
        moe_panel pn = panel_at(l, p);
        for (int t0 = 0; t0 < c->tokens; t0 += MOE_GEMV_MAX_M) {
            int m = min_int(MOE_GEMV_MAX_M, c->tokens - t0);
            const float *v[MOE_GEMV_MAX_M], *sum[MOE_GEMV_MAX_M] = { 0 };
            float *out[MOE_GEMV_MAX_M];
            for (int i = 0; i < m; i++) {
                size_t tok = (size_t)(t0 + i);
                v[i] = c->x + tok * K;
                if (c->quant) sum[i] = l->ws->xsum + tok * (K / G);
                out[i] = c->y + tok * l->out + (size_t)p * MOE_PANEL;
            }
            c->k->panel_gemv(&l->w.fmt, &pn, m, v, sum, out);
        }
    }
}

/* Step 2, int8: panel by panel, activation rows a tile at a time; a
 * residual row's result is added to its token's. */
static void run_i8(const linear_ctx *c, int p0, int p1)
{
    const moe_linear *l = c->l;
    int K = l->in, ng = K / l->w.fmt.group_size;
    int gemm = c->k->panel_gemm_i8 && c->rows > MOE_GEMV_MAX_M;
    for (int p = p0; p < p1; p++) {
        moe_panel pn = panel_at(l, p);
        for (int t0 = 0; c->joined && t0 < c->tokens; t0 += c->tile) {
            int m = min_int(c->tile, c->tokens - t0);
            float *out[MOE_TILE_MAX_M];
            for (int i = 0; i < m; i++) out[i] = c->y + (size_t)(t0 + i) * l->out + (size_t)p * MOE_PANEL;
            c->k->panel_gemm_i8x2(&l->w.fmt, &pn, m, (const int16_t *)l->ws->aq + (size_t)t0 * K,
                                  l->ws->ad + (size_t)t0 * ng, l->ws->as + (size_t)t0 * ng, out);
        }
        for (int r0 = 0; !c->joined && r0 < c->rows; r0 += c->tile) {
            int m = min_int(c->tile, c->rows - r0);
            float *out[MOE_TILE_MAX_M], extra[MOE_TILE_MAX_M][MOE_PANEL];
            for (int i = 0; i < m; i++) {
                int row = r0 + i, residual = c->x2 && (row & 1);
                out[i] = residual ? extra[i] : c->y + (size_t)(c->x2 ? row / 2 : row) * l->out + (size_t)p * MOE_PANEL;
            }
            if (gemm) {
                c->k->panel_gemm_i8(&l->w.fmt, &pn, m, l->ws->aq + (size_t)r0 * K, l->ws->ad + (size_t)r0 * ng,
                                    l->ws->as + (size_t)r0 * ng, out);
            } else if (c->x2 && c->k->panel_gemv_i8x2) {
                /* each token's two digits in one call, the codes split once */
                const int8_t *q[MOE_GEMV_MAX_M], *qr[MOE_GEMV_MAX_M];
                const int16_t *a[MOE_GEMV_MAX_M];
                const float *d[MOE_GEMV_MAX_M], *s[MOE_GEMV_MAX_M];
                float *o[MOE_GEMV_MAX_M];
                for (int i = 0; i < m / 2; i++) {
                    size_t row = (size_t)(r0 + 2 * i);
                    q[i] = l->ws->xq + row * K, qr[i] = l->ws->xq + (row + 1) * K;
                    a[i] = (const int16_t *)l->ws->aq + row / 2 * K;
                    d[i] = l->ws->xd + row * ng, s[i] = l->ws->xsum + row * ng;
                    o[i] = out[2 * i];
                }
                if (c->rows_joined) c->k->panel_gemv_i8x2_joined(&l->w.fmt, &pn, m / 2, a, d, s, o);
                else c->k->panel_gemv_i8x2(&l->w.fmt, &pn, m / 2, q, qr, d, s, o);
                continue;
            } else {
                const int8_t *q[MOE_GEMV_MAX_M];
                const float *d[MOE_GEMV_MAX_M], *s[MOE_GEMV_MAX_M];
                for (int i = 0; i < m; i++) {
                    q[i] = l->ws->xq + (size_t)(r0 + i) * K;
                    d[i] = l->ws->xd + (size_t)(r0 + i) * ng;
                    s[i] = l->ws->xsum + (size_t)(r0 + i) * ng;
                }
                c->k->panel_gemv_i8(&l->w.fmt, &pn, m, q, d, s, out);
            }
            for (int i = 0; i < m; i++)
                if (c->x2 && ((r0 + i) & 1)) {
                    float *yrow = c->y + (size_t)((r0 + i) / 2) * l->out + (size_t)p * MOE_PANEL;
                    for (int r = 0; r < pn.nr; r++) yrow[r] += extra[i][r];
                }
        }
    }
}

/* Step 2, many tokens, exact: token blocks × pairs of this thread's panels. */
static void run_gemm(const linear_ctx *c, linear_scratch *sc, int p0, int p1)
{
    const moe_linear *l = c->l;
    int K = l->in, mr = c->k->mr, block = gemm_block(c->k);
    float *b0 = sc->b, *b1 = sc->b + (size_t)K * MOE_PANEL;
    int direct = l->w.fmt.fmt == MOE_WF_F32;
    for (int t0 = 0; t0 < c->tokens; t0 += block) {
        int m = min_int(block, c->tokens - t0);
        const float *A = l->ws->apack + (size_t)(t0 / mr) * K * mr;
        for (int p = p0; p < p1; p += 2) {
            int two = p + 1 < p1;
            moe_panel pa = panel_at(l, p), pb = two ? panel_at(l, p + 1) : pa;
            const float *B0 = direct && pa.nr == MOE_PANEL ? pa.w : (c->k->panel_unpack(&l->w.fmt, &pa, b0), b0);
            const float *B1 = !two ? B0
                              : direct && pb.nr == MOE_PANEL ? pb.w : (c->k->panel_unpack(&l->w.fmt, &pb, b1), b1);
            moe_tile_gemm(c->k, m, K, A, B0, B1, sc->c);
            int width = two ? MOE_PANEL + pb.nr : pa.nr;
            for (int i = 0; i < m; i++)
                memcpy(c->y + (size_t)(t0 + i) * l->out + (size_t)p * MOE_PANEL, sc->c + (size_t)i * MOE_TILE_N,
                       sizeof(float) * (size_t)width);
        }
    }
}

static void linear_thread(void *arg, int t, int nt)
{
    const linear_ctx *c = arg;
    if (c->path != PATH_GEMV || c->quant) {
        prepare_tokens(c, t, nt);
        moe_parallel_barrier();
    }
    int p0, p1;
    /* GEMM threads take panels in pairs, the micro-kernel's width */
    if (c->path == PATH_GEMM) {
        /* an even share: each token block is packed for all of a thread's
         * panels, and many tokens keep the threads busy alike */
        moe_parallel_split((c->l->panels + 1) / 2, t, nt, &p0, &p1);
        run_gemm(c, &c->l->ws->scratch[t], 2 * p0, min_int(2 * p1, c->l->panels));
        return;
    }
    while (moe_work_next(c->panels, t, nt, c->l->panels, OWN_PANELS, STEAL_PANELS, &p0, &p1)) {
        if (c->path == PATH_I8) run_i8(c, p0, p1);
        else run_gemv(c, p0, p1);
    }
}

static moe_status prepare_workspace(moe_linear *l, const linear_ctx *c)
{
    int K = l->in, G = l->w.fmt.group_size;
    moe_status st;
    if (c->path == PATH_GEMM) {
        int mr = c->k->mr;
        size_t apack = (size_t)((c->tokens + mr - 1) / mr) * mr * K;
        if ((st = MOE_GROW(l->ws->apack, l->ws->apack_floats, apack, "packed tokens")) != MOE_OK) return st;
        int threads = min_int(moe_num_threads(), MAX_THREADS);
        for (int t = 0; t < threads; t++) {
            linear_scratch *sc = &l->ws->scratch[t];
            if ((st = MOE_GROW(sc->b, sc->b_floats, 2 * (size_t)K * MOE_PANEL, "unpacked panels")) != MOE_OK ||
                (st = MOE_GROW(sc->c, sc->c_floats, (size_t)gemm_block(c->k) * MOE_TILE_N, "tile results")) != MOE_OK)
                return st;
        }
        return MOE_OK;
    }
    size_t rows = c->path == PATH_I8 ? (size_t)c->rows : (size_t)c->tokens;
    if (c->quant && (st = MOE_GROW(l->ws->xsum, l->ws->xsum_floats, rows * K / G, "group sums")) != MOE_OK) return st;
    if (c->path != PATH_I8) return MOE_OK;
    if ((st = MOE_GROW(l->ws->xq, l->ws->xq_bytes, rows * K, "int8 activations")) != MOE_OK ||
        (st = MOE_GROW(l->ws->xd, l->ws->xd_floats, rows * K / G, "activation scales")) != MOE_OK)
        return st;
    if (c->rows_joined &&
        (st = MOE_GROW(l->ws->aq, l->ws->aq_bytes, (size_t)c->tokens * K * 2, "joined int8 digits")) != MOE_OK)
        return st;
    if (c->k->panel_gemm_i8 && rows > MOE_GEMV_MAX_M) {
        /* joined: tiles of tokens, two bytes an input */
        size_t tiled = c->joined ? (size_t)c->tokens : rows;
        size_t padded = (tiled + (size_t)c->tile - 1) / (size_t)c->tile * (size_t)c->tile;
        if ((st = MOE_GROW(l->ws->aq, l->ws->aq_bytes, padded * K * (c->joined ? 2 : 1), "int8 tiles")) != MOE_OK ||
            (st = MOE_GROW(l->ws->ad, l->ws->ad_floats, padded * K / G, "int8 tile scales")) != MOE_OK ||
            (st = MOE_GROW(l->ws->as, l->ws->as_floats, padded * K / G, "int8 tile sums")) != MOE_OK)
            return st;
    }
    return MOE_OK;
}

moe_status moe_linear_forward(moe_linear *l, const float *x, int tokens, float *y)
{
    if (!l || !x || !y) return moe_error_set(MOE_ERR_INVALID_ARG, "linear forward: projection, x and y must not be NULL");
    if (tokens < 0) return moe_error_set(MOE_ERR_SHAPE, "%s: token count %d is negative", l->name, tokens);
    if (x == y) return moe_error_set(MOE_ERR_INVALID_ARG, "%s: y must not alias x", l->name);
    for (int p = 0; p < l->panels; p++)
        if (!l->loaded[p])
            return moe_error_set(MOE_ERR_INVALID_ARG, "%s: rows from %d were never loaded", l->name, p * MOE_PANEL);
    if (tokens == 0) return MOE_OK;
    moe_work panels = { 0 };
    linear_ctx c = { .l = l, .k = moe_kernels(), .x = x, .y = y, .tokens = tokens, .panels = &panels };
    c.quant = moe_wformat_is_quant(l->w.fmt.fmt);
    if (c.quant && l->act != MOE_ACT_FLOAT && c.k->panel_gemv_i8) {
        c.path = PATH_I8;
        c.x2 = l->act == MOE_ACT_INT8X2;
        c.rows = tokens * (c.x2 ? 2 : 1);
        c.tile = c.k->panel_gemm_i8 && c.rows > MOE_GEMV_MAX_M ? c.k->mr_i8 : MOE_GEMV_MAX_M;
        c.joined = c.x2 && c.k->panel_gemm_i8x2 && c.rows > MOE_GEMV_MAX_M;
        c.rows_joined = c.x2 && !c.joined && c.rows <= MOE_GEMV_MAX_M && c.k->panel_gemv_i8x2 &&
                        c.k->panel_gemv_i8x2_joined;
    } else if (tokens > MOE_GEMV_MAX_M) c.path = PATH_GEMM;
    else c.path = PATH_GEMV;
    moe_status st = prepare_workspace(l, &c);
    if (st != MOE_OK) return st;
    /* a router's few rows stream in a few µs on one core: waking the team
     * and meeting at a barrier would cost more than it saves */
    if (c.path != PATH_GEMM && tokens <= MOE_GEMV_MAX_M && moe_expert_store_bytes(&l->w) <= ALONE_BYTES)
        moe_parallel_run_alone(linear_thread, &c);
    else
        moe_parallel_run(linear_thread, &c);
    return MOE_OK;
}
