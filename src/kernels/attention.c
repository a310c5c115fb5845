/* kernels/attention.c — causal attention over the KV cache: work items,
 * blocking and the online softmax's start and end, written once; the inner
 * products are the table's attn_tile and attn_rows.
 *
 * The queries of one kv head are its lanes: query (t, h) for the heads h
 * that share it, t outer. A work item is a run of lanes, for a group of kv
 * heads, over a segment of the keys:
 *  - prefill (more than 16 lanes a kv head): one kv head, up to ITEM_TILES
 *    tiles of 16 lanes (queries transposed into [head_dim][16], pre-scaled)
 *    for attn_tile, all keys. Key blocks outer, tiles inner, so each block of
 *    K and V comes from memory once for the item and from cache for its other
 *    tiles. A tile stops at its last query's position, and only blocks that
 *    cross a lane's position are masked.
 *  - decode (up to 16 lanes a kv head: T = 1, or a few tokens): all lanes,
 *    a group of kv heads, a segment of the keys. With up to ROWS_LANES lanes
 *    the queries are rows for attn_rows, one call taking up to 16 of them
 *    across kv heads, so the cache is read a whole row at a time and in
 *    order: one head's slice of each row (a few hundred bytes, rows kilobytes
 *    apart) streams from memory at a fraction of the speed. Segments keep
 *    every thread busy when heads are few; each leaves its partial softmax
 *    state (o, m, l), and the caller merges them.
 * Items are handed out one at a time from a shared counter, kv head (group)
 * after kv head, so that its K and V stay in cache from one item to the next
 * (the threads share them), and within a head the latest queries (the most
 * keys) first, so that threads finish together on causal prefill. Each
 * thread's state lives on its stack (SCRATCH_FLOATS, about 260 KB, and
 * 128 KB more for a half cache's widened block).
 *
 * The cache holds float32, half or 8-bit elements (strides here count
 * elements; an 8-bit row's, bytes: kernels/kv_q8.h). attn_rows widens each
 * half vector, or dequantizes each 8-bit one, as it loads it (decode reads
 * each element once). A tile item's block of keys and values is read by up
 * to ITEM_TILES attn_tile calls, so with a half cache it is widened once
 * into a float32 copy on the thread's stack (WIDE_FLOATS, head_dim up to
 * WIDE_HEAD_DIM) and the calls read that: the tile kernel's own widening
 * (for larger head_dim) would convert each element once a tile. An 8-bit
 * block is always dequantized so (kv_q8_widen; blocks of fewer keys where
 * head_dim is over WIDE_HEAD_DIM). Either way the arithmetic is that of a
 * float32 cache of the same values. */
#include "kernels/attention.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "kernels/kernels.h"
#include "kernels/kv_q8.h"
#include "moe/runtime.h"

enum {
    L = MOE_ATTN_LANES,
    ROWS_LANES = 4,     /* decode lanes a kv head up to which queries are rows */
    PREFILL_KEYS = 128, /* keys a tile takes at a time: its scores [128][16] stay in L1 */
    DECODE_KEYS = 64,   /* keys a decode call takes at a time */
    MIN_SEGMENT_KEYS = 64, /* least keys of a decode segment */
    ITEM_TILES = 16,    /* most tiles of a prefill item: 16 uses of each K and V block */
    /* one item's state: 16 tiles' queries and sums at head_dim 128, with m and l */
    SCRATCH_FLOATS = ITEM_TILES * L * (2 * 128 + 2),
    WIDE_HEAD_DIM = 128,                       /* largest head_dim whose half blocks are widened here */
    WIDE_FLOATS = PREFILL_KEYS * WIDE_HEAD_DIM /* a block of K (or V), widened: 64 KB */
};

_Static_assert(L * (2 * MOE_ATTENTION_MAX_HEAD_DIM + 2) <= SCRATCH_FLOATS, "one tile fits the scratch at any head_dim");
_Static_assert((int)PREFILL_KEYS <= (int)MOE_ATTN_MAX_KEYS && (int)DECODE_KEYS <= (int)MOE_ATTN_MAX_KEYS,
               "blocks within the kernels' limit");
_Static_assert((int)ROWS_LANES <= (int)MOE_ATTN_MAX_ROWS, "a kv head's rows fit one attn_rows call");
_Static_assert((int)MOE_ATTN_MAX_ROWS >= (int)L, "lim holds a tile's lanes");
_Static_assert((int)DECODE_KEYS <= (int)PREFILL_KEYS, "any block fits the widened copy");

typedef struct {
    const moe_cpu_kernels *kern;
    int pos0, heads, kv_heads, group, D;
    float scale;
    const float *q;
    moe_dtype kv;            /* the cache's elements */
    const char *k, *v;
    size_t esize, stride;    /* bytes of an element; elements from row to row */
    size_t head;             /* bytes of a kv head's column of a row (Q8: its block) */
    float *out;
    int lanes;               /* lanes of one kv head: T·group */
    int item_lanes, chunks;  /* lanes of an item; items along the lanes */
    int item_heads, hgroups; /* kv heads of an item; items along the heads */
    int seg_keys, segs;      /* keys of an item; items along the keys */
    int block;               /* keys a kernel call takes */
    int items;
    float *part;             /* segs > 1: [seg][kv head][lane] (o[D], m, l) */
    atomic_int next;
} attn_ctx;

/* Lane ℓ of kv head g is query (t, h): its q and out rows, and its position. */
static size_t lane_row(const attn_ctx *c, int g, int lane)
{
    int t = lane / c->group, h = g * c->group + lane % c->group;
    return ((size_t)t * c->heads + h) * c->D;
}

static int lane_pos(const attn_ctx *c, int lane) { return c->pos0 + lane / c->group; }

static int clamp(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

/* Floats of one kv head's state in an item of n lanes: queries and sums
 * ([n][D] as rows, or [tile][D][16]), then m and l. */
static size_t head_state(int n, int D)
{
    size_t w = n > ROWS_LANES ? (size_t)(n + L - 1) / L * L : (size_t)n;
    return 2 * w * D + 2 * w;
}

/* nb rows of one kv head's D halves (or Q8 block), from src (rows stride
 * elements apart), as float32 rows [nb][D] in dst. */
static void widen_rows(const attn_ctx *c, int nb, const char *src, float *dst)
{
    if (c->kv == MOE_DTYPE_Q8) {
        c->kern->kv_q8_widen(nb, c->D, src, c->stride, dst);
        return;
    }
    for (int j = 0; j < nb; j++)
        c->kern->f16_to_f32((size_t)c->D, (const uint16_t *)(src + (size_t)j * c->stride * c->esize),
                            dst + (size_t)j * c->D);
}

/* buf: the item's state (SCRATCH_FLOATS); wide: room for a widened block of
 * K and of V (2·WIDE_FLOATS). */
static void run_item(const attn_ctx *c, int chunk, int hg, int seg, float *buf, float *wide)
{
    int D = c->D, l0 = chunk * c->item_lanes, g0 = hg * c->item_heads;
    int n = c->lanes - l0 < c->item_lanes ? c->lanes - l0 : c->item_lanes;
    int ng = c->kv_heads - g0 < c->item_heads ? c->kv_heads - g0 : c->item_heads;
    int rows = n <= ROWS_LANES, ntiles = (n + L - 1) / L, w = rows ? n : ntiles * L;
    /* the state, head after head: queries, sums, m, l (as rows, the heads'
     * rows follow one another, so that one attn_rows call takes several) */
    float *qs = buf, *os = qs + (size_t)ng * w * D, *m = os + (size_t)ng * w * D, *l = m + (size_t)ng * w;
    int pos[ITEM_TILES * L], lim[MOE_ATTN_MAX_ROWS];

    /* each head's queries, pre-scaled (tiles transposed, lanes past n zero),
     * and a start of m = −∞, l = 0, o = 0 */
    for (int i = 0; i < w; i++) pos[i] = lane_pos(c, l0 + (i < n ? i : n - 1)); /* padding sees what the last lane sees */
    for (int gi = 0; gi < ng; gi++)
        for (int i = 0; i < w; i++) {
            const float *src = i < n ? c->q + lane_row(c, g0 + gi, l0 + i) : NULL;
            float *dst = qs + (size_t)gi * w * D + (rows ? (size_t)i * D : (size_t)(i / L) * L * D + i % L);
            size_t step = rows ? 1 : L;
            for (int d = 0; d < D; d++) dst[d * step] = src ? src[d] * c->scale : 0.0f;
            m[gi * w + i] = -INFINITY, l[gi * w + i] = 0.0f;
        }
    memset(os, 0, sizeof(float) * (size_t)ng * w * D);

    int kend = pos[w - 1] + 1, j0 = seg * c->seg_keys, j1 = j0 + c->seg_keys < kend ? j0 + c->seg_keys : kend;
    int call_heads = rows ? MOE_ATTN_MAX_ROWS / n : 1;
    for (int kb = j0; kb < j1; kb += c->block) {
        int nb = j1 - kb < c->block ? j1 - kb : c->block;
        size_t row = (size_t)kb * c->stride * c->esize + (size_t)g0 * c->head, head = c->head;
        const char *kr = c->k + row, *vr = c->v + row;
        if (rows) {
            for (int i = 0; i < call_heads * n; i++) lim[i] = clamp(pos[i % n] + 1 - kb, 0, nb);
            for (int gi = 0; gi < ng; gi += call_heads) {
                int nh = ng - gi < call_heads ? ng - gi : call_heads;
                size_t r = (size_t)gi * n;
                c->kern->attn_rows(D, nh * n, n, nb, qs + r * D, c->kv, kr + gi * head, vr + gi * head, c->stride,
                                   lim, m + r, l + r, os + r * D);
            }
            continue;
        }
        for (int gi = 0; gi < ng; gi++) {
            /* the block as the tiles read it: in the cache, or widened once
             * (the last tile reads all nb keys) */
            moe_dtype kv = c->kv;
            const void *kt = kr + gi * head, *vt = vr + gi * head;
            size_t stride = c->stride;
            if ((kv == MOE_DTYPE_F16 && D <= WIDE_HEAD_DIM) || kv == MOE_DTYPE_Q8) {
                widen_rows(c, nb, kt, wide);
                widen_rows(c, nb, vt, wide + WIDE_FLOATS);
                kv = MOE_DTYPE_F32, kt = wide, vt = wide + WIDE_FLOATS, stride = (size_t)D;
            }
            for (int tile = 0; tile < ntiles; tile++) {
                int last = pos[tile * L + L - 1]; /* lanes go up in position */
                if (last < kb) continue;
                int nk = last + 1 - kb < nb ? last + 1 - kb : nb;
                for (int i = 0; i < L; i++) lim[i] = clamp(pos[tile * L + i] + 1 - kb, 0, nk);
                size_t off = (size_t)gi * w * D + (size_t)tile * L * D, ml = (size_t)gi * w + (size_t)tile * L;
                c->kern->attn_tile(D, nk, qs + off, kv, kt, vt, stride, lim, m + ml, l + ml, os + off);
            }
        }
    }

    /* out = o / l, or the partial state for the caller to merge */
    for (int gi = 0; gi < ng; gi++)
        for (int i = 0; i < n; i++) {
            const float *o = os + (size_t)gi * w * D + (rows ? (size_t)i * D : (size_t)(i / L) * L * D + i % L);
            size_t step = rows ? 1 : L, si = (size_t)gi * w + i;
            if (c->segs == 1) {
                float inv = 1.0f / l[si], *dst = c->out + lane_row(c, g0 + gi, l0 + i);
                for (int d = 0; d < D; d++) dst[d] = o[d * step] * inv;
            } else {
                float *p = c->part + (((size_t)seg * c->kv_heads + g0 + gi) * c->lanes + l0 + i) * (D + 2);
                for (int d = 0; d < D; d++) p[d] = o[d * step];
                p[D] = m[si], p[D + 1] = l[si];
            }
        }
}

static void attn_thread(void *arg, int thread, int nthreads)
{
    (void)thread, (void)nthreads;
    attn_ctx *c = arg;
    _Alignas(64) float buf[SCRATCH_FLOATS], wide[2 * WIDE_FLOATS]; /* wide: for a half cache only */
    for (;;) {
        int i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
        if (i >= c->items) break;
        /* head group outer, then the latest queries first */
        int per_group = c->chunks * c->segs;
        int hg = i / per_group, chunk = c->chunks - 1 - i % per_group / c->segs, seg = i % c->segs;
        run_item(c, chunk, hg, seg, buf, wide);
    }
}

/* out = Σ_s e^(m_s − M)·o_s / Σ_s e^(m_s − M)·l_s over the segments. */
static void merge_segments(const attn_ctx *c)
{
    int D = c->D;
    size_t seg_stride = (size_t)c->kv_heads * c->lanes * (D + 2);
    for (int g = 0; g < c->kv_heads; g++)
        for (int i = 0; i < c->lanes; i++) {
            const float *p0 = c->part + ((size_t)g * c->lanes + i) * (D + 2);
            float M = -INFINITY, lsum = 0.0f, *dst = c->out + lane_row(c, g, i);
            for (int s = 0; s < c->segs; s++) M = fmaxf(M, p0[s * seg_stride + D]);
            for (int d = 0; d < D; d++) dst[d] = 0.0f;
            for (int s = 0; s < c->segs; s++) {
                const float *p = p0 + s * seg_stride;
                if (p[D] == -INFINITY) continue; /* a segment past this query */
                float a = expf(p[D] - M);
                lsum += a * p[D + 1];
                for (int d = 0; d < D; d++) dst[d] += a * p[d];
            }
            for (int d = 0; d < D; d++) dst[d] /= lsum;
        }
}

void moe_attention_causal(int T, int pos0, int heads, int kv_heads, int head_dim, float scale,
                          const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                          float *out)
{
    if (T <= 0) return;
    attn_ctx c = { .kern = moe_kernels(), .pos0 = pos0, .heads = heads, .kv_heads = kv_heads,
                   .group = heads / kv_heads, .D = head_dim, .scale = scale, .q = q, .kv = kv_dtype, .k = k,
                   .v = v, .esize = moe_dtype_size(kv_dtype), .stride = kv_stride, .out = out };
    c.head = kv_dtype == MOE_DTYPE_Q8 ? moe_kv_q8_head_bytes(head_dim) : (size_t)head_dim * c.esize;
    int threads = moe_num_threads(), keys = pos0 + T;
    c.lanes = T * c.group;
    /* kv heads (decode) or tiles (prefill) whose state fits the scratch */
    int fit = (int)(SCRATCH_FLOATS / head_state(c.lanes < L ? c.lanes : L, head_dim));
    if (c.lanes <= L) {
        /* decode: all lanes; as many kv heads an item as one attn_rows call
         * takes (its 16 lanes full: fewer heads would leave lanes computing
         * a repeated query), then the keys cut in segments, no shorter than
         * MIN_SEGMENT_KEYS, until every thread has several items */
        c.item_lanes = c.lanes, c.chunks = 1;
        c.block = DECODE_KEYS;
        int per_call = c.lanes <= ROWS_LANES ? MOE_ATTN_MAX_ROWS / c.lanes : 1;
        c.item_heads = per_call < kv_heads ? per_call : kv_heads;
        if (c.item_heads > fit) c.item_heads = fit > 0 ? fit : 1;
        c.hgroups = (kv_heads + c.item_heads - 1) / c.item_heads;
        c.segs = (4 * threads + c.hgroups - 1) / c.hgroups;
        int most = (keys + MIN_SEGMENT_KEYS - 1) / MIN_SEGMENT_KEYS;
        if (c.segs > most) c.segs = most;
        if (c.segs < 1) c.segs = 1;
        if (c.segs > 1) {
            c.part = malloc(sizeof(float) * (size_t)c.segs * kv_heads * c.lanes * (head_dim + 2));
            if (!c.part) c.segs = 1; /* no room for partial states: split the heads only */
        }
        c.seg_keys = (keys + c.segs - 1) / c.segs;
    } else {
        /* prefill: one kv head, as many tiles as fit (up to ITEM_TILES), but
         * items enough for every thread to take several */
        int tiles = (c.lanes + L - 1) / L, per_item = fit < ITEM_TILES ? fit : ITEM_TILES;
        int spread = (tiles * kv_heads + 4 * threads - 1) / (4 * threads);
        if (spread < per_item) per_item = spread > 1 ? spread : 1;
        c.item_lanes = per_item * L, c.chunks = (c.lanes + c.item_lanes - 1) / c.item_lanes;
        c.item_heads = 1, c.hgroups = kv_heads;
        c.segs = 1, c.seg_keys = keys;
        c.block = PREFILL_KEYS;
    }
    /* a Q8 block is dequantized whole for the tiles: no more keys than fit */
    if (kv_dtype == MOE_DTYPE_Q8 && c.block * head_dim > WIDE_FLOATS) c.block = WIDE_FLOATS / head_dim;
    c.items = c.chunks * c.hgroups * c.segs;
    atomic_init(&c.next, 0);
    moe_parallel_run(attn_thread, &c);
    if (c.segs > 1) merge_segments(&c);
    free(c.part);
}

void moe_kv_store(moe_dtype kv_dtype, const float *src, void *dst, size_t n, int head_dim)
{
    if (kv_dtype == MOE_DTYPE_F16) moe_kernels()->f32_to_f16(n, src, dst);
    else if (kv_dtype == MOE_DTYPE_Q8) moe_kernels()->kv_q8_store(n / (size_t)head_dim, head_dim, src, dst);
    else if (n) memcpy(dst, src, sizeof(float) * n);
}

size_t moe_kv_row_bytes(moe_dtype kv_dtype, int kv_heads, int head_dim)
{
    if (kv_heads < 1 || head_dim < 1) return 0;
    size_t head, row;
    if (kv_dtype == MOE_DTYPE_Q8) head = moe_kv_q8_head_bytes(head_dim);
    else if (kv_dtype == MOE_DTYPE_F32 || kv_dtype == MOE_DTYPE_F16) head = (size_t)head_dim * moe_dtype_size(kv_dtype);
    else return 0;
    return __builtin_mul_overflow(head, (size_t)kv_heads, &row) ? SIZE_MAX : row; /* saturates: refused as too large */
}
