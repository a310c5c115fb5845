/* kernels/cpu/avx512/attention.c — flash-attention steps with AVX-512 (see
 * attn_tile and attn_rows in kernels.h). Both leave a block's scores in a
 * [nk][16] buffer on the stack, queries in lanes, so the online softmax is
 * one vertical pass for both (a lane's max, exponentials and sum).
 *
 * attn_tile (prefill) holds 16 queries in the lanes of a zmm: a score is one
 * FMA of a broadcast key element with a vector of 16 queries' elements, and
 * the weighted values likewise, so nothing is summed across lanes and every
 * key and value element read serves 16 queries.
 *
 * attn_rows (decode) holds head_dim in the lanes and walks the cache row by
 * row: for each key, 16 queries' dot products (each with its own kv head's
 * slice of the row) are accumulated in 16 zmm and summed across lanes
 * together by a transposing reduction; then each query's sums take the
 * weighted value row (o in L1). head_dim tails use masked loads and stores.
 *
 * The cache is float32 or half (kv): each body is written once and inlined
 * for both, half vectors widened with vcvtph2ps as they are loaded, the
 * arithmetic the same in the same order, so a half cache gives the bits of
 * a float32 cache holding the same values. attn_rows loads vectors of the
 * cache directly. attn_tile broadcasts single elements from memory into
 * its FMAs, so there each 16 elements of a key (a value column) are widened
 * into a small buffer in L1 and broadcast from there; the caller mostly
 * widens a block once for all the tiles that read it instead (see
 * kernels/attention.c), which leaves this for large head_dim.
 *
 * attn_rows also reads an 8-bit cache (kernels/kv_q8.h): each 16 codes
 * sign-extended, converted and multiplied by their group's scale as they
 * are loaded (a 16-lane vector lies within one group of 32), the rest as
 * for float32; its quantization (kv_q8_store) and the widening of a block
 * for the tiles (kv_q8_widen) are here too. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/avx512/avx512.h"
#include "kernels/cpu/avx512/avx512_util.h"
#include "kernels/kv_q8.h"

enum { L = MOE_ATTN_LANES, KR = 8, DR = 16 };

/* Element i of a cache of dtype kv (Q8: byte i). */
static inline const void *kv_at(moe_dtype kv, const void *p, size_t i)
{
    return (const char *)p + i * (kv == MOE_DTYPE_F16 ? sizeof(uint16_t) : kv == MOE_DTYPE_Q8 ? 1 : sizeof(float));
}

static inline __mmask16 tail_mask(int n) { return n >= 16 ? (__mmask16)0xFFFF : n > 0 ? avx512_lanes(n) : 0; }

/* A bf16 scale at p, broadcast as a float. */
static inline __m512 q8_scale(const unsigned char *p)
{
    uint16_t b;
    memcpy(&b, p, sizeof b);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_set1_epi16((short)b), 16));
}

/* Elements d .. d+16 (lanes past the mask zero) of the kv head whose
 * column starts at element (Q8: byte) col of a row at p, D long. */
static inline __attribute__((always_inline)) __m512 kv_load16(moe_dtype kv, const void *p, size_t col, int d, int D,
                                                              __mmask16 mk)
{
    if (kv != MOE_DTYPE_Q8) return avx512_load_dtype(kv, p, col + d, mk);
    const unsigned char *h = (const unsigned char *)p + col;
    __m512 c = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mk, h + d)));
    return _mm512_mul_ps(c, q8_scale(h + D + 2 * (d / MOE_KV_Q8_GROUP)));
}

/* The online-softmax update of 16 lanes from scores s [nk][16]: keys from
 * lim on are masked; s becomes the weights e^(s − m'); m and l are updated;
 * returns a = e^(m − m'). */
static __m512 softmax16(int nk, float *s, const int *lim, float *m, float *l)
{
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    __m512i limv = _mm512_loadu_si512(lim);
    if (_mm512_cmplt_epi32_mask(limv, _mm512_set1_epi32(nk))) /* some lane stops short of the block's end */
        for (int j = 0; j < nk; j++) {
            __mmask16 seen = _mm512_cmpgt_epi32_mask(limv, _mm512_set1_epi32(j));
            _mm512_storeu_ps(s + j * L, _mm512_mask_mov_ps(ninf, seen, _mm512_loadu_ps(s + j * L)));
        }
    __m512 mx = ninf;
    for (int j = 0; j < nk; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j * L));
    __m512 mold = _mm512_loadu_ps(m), mnew = _mm512_max_ps(mold, mx);
    /* a lane that has seen no key yet keeps m = −∞ and a = 1 (its l and o are 0) */
    __mmask16 live = _mm512_cmp_ps_mask(mnew, ninf, _CMP_NEQ_OQ);
    __m512 a = _mm512_mask_blend_ps(live, _mm512_set1_ps(1.0f), avx512_exp_ps(_mm512_sub_ps(mold, mnew)));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < nk; j++) {
        __m512 sj = _mm512_loadu_ps(s + j * L);
        /* masked keys (s = −∞) get exactly 0 */
        __mmask16 seen = _mm512_cmp_ps_mask(sj, ninf, _CMP_NEQ_OQ);
        __m512 p = _mm512_maskz_mov_ps(seen, avx512_exp_ps(_mm512_sub_ps(sj, mnew)));
        _mm512_storeu_ps(s + j * L, p);
        sum = _mm512_add_ps(sum, p);
    }
    _mm512_storeu_ps(m, mnew);
    _mm512_storeu_ps(l, _mm512_fmadd_ps(_mm512_loadu_ps(l), a, sum));
    return a;
}

/* ---- attn_tile: queries in lanes ---- */

/* s[r][·] = Σ_d k_r[d]·qt[d][·] for nr (a constant) keys from k. */
static inline __attribute__((always_inline)) void tile_scores(int D, int nr, const float *qt, moe_dtype kv,
                                                              const void *k, size_t stride, float *s)
{
    __m512 acc[KR];
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) acc[r] = _mm512_setzero_ps();
    if (kv == MOE_DTYPE_F32) {
        const float *row[KR];
#pragma GCC unroll 8
        for (int r = 0; r < nr; r++) row[r] = (const float *)k + (size_t)r * stride;
        for (int d = 0; d < D; d++) {
            __m512 q = _mm512_loadu_ps(qt + (size_t)d * L);
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(row[r][d]), q, acc[r]);
        }
    } else {
        /* 16 elements of each key widened into kf, broadcast from there */
        _Alignas(64) float kf[KR][16];
        for (int d0 = 0; d0 < D; d0 += 16) {
            int nd = D - d0 < 16 ? D - d0 : 16;
#pragma GCC unroll 8
            for (int r = 0; r < nr; r++)
                _mm512_store_ps(kf[r], avx512_load_dtype(kv, k, (size_t)r * stride + d0, tail_mask(nd)));
            for (int d = 0; d < nd; d++) {
                __m512 q = _mm512_loadu_ps(qt + (size_t)(d0 + d) * L);
#pragma GCC unroll 8
                for (int r = 0; r < nr; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(kf[r][d]), q, acc[r]);
            }
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < nr; r++) _mm512_storeu_ps(s + r * L, acc[r]);
}

/* ot[r][·] = a·ot[r][·] + Σ_j v_j[r]·p[j][·] for nr (a constant) elements
 * from v and ot. */
static inline __attribute__((always_inline)) void tile_values(int nk, int nr, const float *p, const float *v,
                                                              size_t stride, __m512 a, float *ot)
{
    __m512 acc[DR];
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) acc[r] = _mm512_mul_ps(_mm512_loadu_ps(ot + r * L), a);
    for (int j = 0; j < nk; j++) {
        __m512 pj = _mm512_loadu_ps(p + j * L);
        const float *vj = v + (size_t)j * stride;
#pragma GCC unroll 16
        for (int r = 0; r < nr; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(vj[r]), pj, acc[r]);
    }
#pragma GCC unroll 16
    for (int r = 0; r < nr; r++) _mm512_storeu_ps(ot + r * L, acc[r]);
}

/* tile_values on elements d .. d+nr of the value rows: float32 ones in
 * place, half ones widened first into vf [nk][16]. */
static inline __attribute__((always_inline)) void tile_values_kv(int nk, int nr, const float *p, moe_dtype kv,
                                                                 const void *v, int d, size_t stride, __m512 a,
                                                                 float *vf, float *ot)
{
    if (kv == MOE_DTYPE_F32) {
        tile_values(nk, nr, p, (const float *)v + d, stride, a, ot);
        return;
    }
    for (int j = 0; j < nk; j++)
        _mm512_store_ps(vf + j * L, avx512_load_dtype(kv, v, (size_t)j * stride + d, avx512_lanes(nr)));
    tile_values(nk, nr, p, vf, L, a, ot);
}

static inline __attribute__((always_inline)) void attn_tile(moe_dtype kv, int D, int nk, const float *qt,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *vf, float *ot)
{
    _Alignas(64) float s[MOE_ATTN_MAX_KEYS * L];

    /* scores, KR keys at a time, then the tail by halves */
    int j = 0;
    for (; j + KR <= nk; j += KR) tile_scores(D, KR, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L);
    if (nk - j >= 4) tile_scores(D, 4, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L), j += 4;
    if (nk - j >= 2) tile_scores(D, 2, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L), j += 2;
    if (nk - j >= 1) tile_scores(D, 1, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L);

    __m512 a = softmax16(nk, s, lim, m, l);

    /* values, DR elements of head_dim at a time, then the tail by halves */
    int d = 0;
    for (; d + DR <= D; d += DR) tile_values_kv(nk, DR, s, kv, v, d, stride, a, vf, ot + (size_t)d * L);
    if (D - d >= 8) tile_values_kv(nk, 8, s, kv, v, d, stride, a, vf, ot + (size_t)d * L), d += 8;
    if (D - d >= 4) tile_values_kv(nk, 4, s, kv, v, d, stride, a, vf, ot + (size_t)d * L), d += 4;
    if (D - d >= 2) tile_values_kv(nk, 2, s, kv, v, d, stride, a, vf, ot + (size_t)d * L), d += 2;
    if (D - d >= 1) tile_values_kv(nk, 1, s, kv, v, d, stride, a, vf, ot + (size_t)d * L);
}

/* The half instance on its own, so that the float32 one below compiles as
 * if it were alone. */
static __attribute__((noinline)) void attn_tile_f16(int D, int nk, const float *qt, const void *k, const void *v,
                                                    size_t stride, const int *lim, float *m, float *l, float *ot)
{
    _Alignas(64) float vf[MOE_ATTN_MAX_KEYS * L]; /* a column of value elements, widened */
    attn_tile(MOE_DTYPE_F16, D, nk, qt, k, v, stride, lim, m, l, vf, ot);
}

void moe_avx512_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v, size_t stride,
                          const int *lim, float *m, float *l, float *ot)
{
    if (kv == MOE_DTYPE_F16) attn_tile_f16(D, nk, qt, k, v, stride, lim, m, l, ot);
    else attn_tile(MOE_DTYPE_F32, D, nk, qt, k, v, stride, lim, m, l, NULL, ot);
}

/* ---- attn_rows: head_dim in lanes ---- */

enum { KEYS_AHEAD = 4 }; /* rows of keys fetched ahead of the scores */

/* Bytes [a, b) from p into L1, a line at a time. */
static inline void prefetch_span(const char *p, size_t a, size_t b)
{
    for (size_t i = a & ~(size_t)63; i < b; i += 64) _mm_prefetch(p + i, _MM_HINT_T0);
}

/* 16 codes at p (lanes past the mask zero) as floats. */
static inline __attribute__((always_inline)) __m512 q8_codes(const unsigned char *p, __mmask16 mk)
{
    __m128i c = mk == 0xFFFF ? _mm_loadu_si128((const __m128i *)p) : _mm_maskz_loadu_epi8(mk, p);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(c));
}

/* A float vector at p, lanes past the mask zero. */
static inline __attribute__((always_inline)) __m512 load_ps(const float *p, __mmask16 mk)
{
    return mk == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(mk, p);
}

/* o[d..d+32) += Σ_r p[r]·(the Q8 group at element d of the kv head block
 * col bytes into row rows[r]) for nr (a constant) rows, key after key for
 * each element: the group's scale times p once. */
static inline __attribute__((always_inline)) void values32(int D, int nr, const float *p,
                                                           const void *const *rows, size_t col, int d, __mmask16 m0,
                                                           __mmask16 m1, float *o)
{
    __m512 a0 = load_ps(o + d, m0), a1 = load_ps(o + d + 16, m1);
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        const unsigned char *h = (const unsigned char *)rows[r] + col;
        __m512 pv = _mm512_mul_ps(_mm512_set1_ps(p[r]), q8_scale(h + D + 2 * (d / MOE_KV_Q8_GROUP)));
        a0 = _mm512_fmadd_ps(pv, q8_codes(h + d, m0), a0);
        a1 = _mm512_fmadd_ps(pv, q8_codes(h + d + 16, m1), a1);
    }
    if (m0 == 0xFFFF && m1 == 0xFFFF) _mm512_storeu_ps(o + d, a0), _mm512_storeu_ps(o + d + 16, a1);
    else _mm512_mask_storeu_ps(o + d, m0, a0), _mm512_mask_storeu_ps(o + d + 16, m1, a1);
}

/* o[0..D) += the same over the whole head, group after group. */
static inline __attribute__((always_inline)) void values_rows(int D, int nr, const float *p,
                                                              const void *const *rows, size_t col, float *o)
{
    int d = 0;
    for (; d + 32 <= D; d += 32) values32(D, nr, p, rows, col, d, 0xFFFF, 0xFFFF, o);
    if (d < D) values32(D, nr, p, rows, col, d, tail_mask(D - d), tail_mask(D - d - 16), o);
}

/* acc[i] += scale·(q_i · codes) over the Q8 group at element d of query
 * i's kv head block (col[i] bytes into the row at kj). */
static inline __attribute__((always_inline)) void scores32(int D, const float *const *qi, const void *kj,
                                                           const size_t *col, int d, __mmask16 m0, __mmask16 m1,
                                                           __m512 *acc)
{
#pragma GCC unroll 16
    for (int i = 0; i < L; i++) {
        const unsigned char *h = (const unsigned char *)kj + col[i];
        __m512 t = _mm512_mul_ps(load_ps(qi[i] + d, m0), q8_codes(h + d, m0));
        t = _mm512_fmadd_ps(load_ps(qi[i] + d + 16, m1), q8_codes(h + d + 16, m1), t);
        acc[i] = _mm512_fmadd_ps(t, q8_scale(h + D + 2 * (d / MOE_KV_Q8_GROUP)), acc[i]);
    }
}

/* Lane r of the result = Σ of the lanes of x[r], for 16 vectors. */
static inline __m512 sum16(const __m512 *x)
{
    __m512 t[8], u[4], w[2];
    for (int i = 0; i < 8; i++) /* 128-bit blocks 0+2, 1+3: x[2i] in blocks 0-1, x[2i+1] in 2-3 */
        t[i] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0x44),
                             _mm512_shuffle_f32x4(x[2 * i], x[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++) /* block b: 4 partial sums of x[4i+b] */
        u[i] = _mm512_add_ps(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x88),
                             _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) /* block b: x[b], x[4+b], x[b], x[4+b] (+8i), halves of pairs */
        w[i] = _mm512_add_ps(_mm512_unpacklo_ps(u[2 * i], u[2 * i + 1]), _mm512_unpackhi_ps(u[2 * i], u[2 * i + 1]));
    /* block b: x[b], x[8+b], x[4+b], x[12+b] */
    __m512 r = _mm512_add_ps(_mm512_unpacklo_ps(w[0], w[1]), _mm512_unpackhi_ps(w[0], w[1]));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, r);
}

static inline __attribute__((always_inline)) void attn_rows(moe_dtype kv, int D, int nq, int qpk, const float *q,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *o)
{
    _Alignas(64) float s[MOE_ATTN_MAX_KEYS * L], mv[L], lv[L], av[L];
    _Alignas(64) int limv[L];
    const float *qi[L];
    size_t col[L], head = kv == MOE_DTYPE_Q8 ? moe_kv_q8_head_bytes(D) : (size_t)D;
    int nmax = 0;
    for (int i = 0; i < L; i++) { /* lanes past nq repeat the last query; their results are dropped */
        int r = i < nq ? i : nq - 1;
        qi[i] = q + (size_t)r * D, col[i] = (size_t)(r / qpk) * head;
        mv[i] = m[r], lv[i] = l[r], limv[i] = lim[r];
        nmax = lim[r] > nmax ? lim[r] : nmax;
    }

    /* the span of a row the queries read (their kv heads' columns) */
    size_t span0 = (size_t)((const char *)kv_at(kv, k, col[0]) - (const char *)k);
    size_t span1 = (size_t)((const char *)kv_at(kv, k, col[L - 1] + head) - (const char *)k);

    /* scores of the keys any query sees, a cache row at a time; meanwhile
     * the row's values are fetched for the pass below, and the keys a few
     * rows ahead (several rows' streams at once outrun the prefetchers) */
    for (int j = 0; j < nmax; j++) {
        const void *kj = kv_at(kv, k, (size_t)j * stride);
        if (kv == MOE_DTYPE_Q8) {
            prefetch_span((const char *)kv_at(kv, v, (size_t)j * stride), span0, span1);
            if (j + KEYS_AHEAD < nmax)
                prefetch_span((const char *)kv_at(kv, k, (size_t)(j + KEYS_AHEAD) * stride), span0, span1);
        }
        __m512 acc[L];
#pragma GCC unroll 16
        for (int i = 0; i < L; i++) acc[i] = _mm512_setzero_ps();
        if (kv == MOE_DTYPE_Q8) {
            /* a group of 32 at a time: q·codes over its two vectors, then
             * times its scale (one multiply a group, not a vector) */
            int d = 0;
            for (; d + 32 <= D; d += 32) scores32(D, qi, kj, col, d, 0xFFFF, 0xFFFF, acc);
            if (d < D) scores32(D, qi, kj, col, d, tail_mask(D - d), tail_mask(D - d - 16), acc);
        } else
            for (int d = 0; d < D; d += 16) {
                __mmask16 mk = tail_mask(D - d);
#pragma GCC unroll 16
                for (int i = 0; i < L; i++)
                    acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, qi[i] + d), kv_load16(kv, kj, col[i], d, D, mk),
                                             acc[i]);
            }
        _mm512_storeu_ps(s + j * L, sum16(acc));
    }

    _mm512_storeu_ps(av, softmax16(nmax, s, limv, mv, lv));
    for (int i = 0; i < nq; i++) {
        m[i] = mv[i], l[i] = lv[i];
        __m512 a = _mm512_set1_ps(av[i]);
        float *oi = o + (size_t)i * D;
        for (int d = 0; d < D; d += 16) {
            __mmask16 mk = tail_mask(D - d);
            _mm512_mask_storeu_ps(oi + d, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, oi + d), a));
        }
    }

    /* values: float caches a cache row at a time, in order (each query's o
     * stays in L1; read row by row the cache streams from memory best: four
     * rows at a time were slower at 8192 keys) */
    if (kv != MOE_DTYPE_Q8) {
        for (int j = 0; j < nmax; j++) {
            const void *vj = kv_at(kv, v, (size_t)j * stride);
            const float *pj = s + j * L;
            for (int i = 0; i < nq; i++) {
                if (pj[i] == 0.0f) continue; /* masked, or too small to count */
                __m512 p = _mm512_set1_ps(pj[i]);
                float *oi = o + (size_t)i * D;
                for (int d = 0; d < D; d += 16) {
                    __mmask16 mk = tail_mask(D - d);
                    _mm512_mask_storeu_ps(oi + d, mk,
                                          _mm512_fmadd_ps(p, kv_load16(kv, vj, col[i], d, D, mk),
                                                          _mm512_maskz_loadu_ps(mk, oi + d)));
                }
            }
        }
        return;
    }
    /* Q8 (its rows fetched during the scores above): 4 rows at a time, each
     * query's o read and written once for the 4, a group's scale times the
     * weight once; a key of weight 0 (masked) is skipped */
    for (int j0 = 0; j0 < nmax; j0 += 4) {
        int nr = nmax - j0 < 4 ? nmax - j0 : 4;
        const void *vr[4];
        for (int r = 0; r < nr; r++) vr[r] = kv_at(kv, v, (size_t)(j0 + r) * stride);
        for (int i = 0; i < nq; i++) {
            float p[4];
            int live = 0;
            for (int r = 0; r < nr; r++) p[r] = s[(j0 + r) * L + i], live += p[r] != 0.0f;
            float *oi = o + (size_t)i * D;
            if (live == 4) values_rows(D, 4, p, vr, col[i], oi);
            else if (live)
                for (int r = 0; r < nr; r++)
                    if (p[r] != 0.0f) values_rows(D, 1, p + r, vr + r, col[i], oi);
        }
    }
}

/* The half instance on its own (see attn_tile_f16). */
static __attribute__((noinline)) void attn_rows_f16(int D, int nq, int qpk, const float *q, const void *k,
                                                    const void *v, size_t stride, const int *lim, float *m, float *l,
                                                    float *o)
{
    attn_rows(MOE_DTYPE_F16, D, nq, qpk, q, k, v, stride, lim, m, l, o);
}

static __attribute__((noinline)) void attn_rows_q8(int D, int nq, int qpk, const float *q, const void *k,
                                                   const void *v, size_t stride, const int *lim, float *m, float *l,
                                                   float *o)
{
    attn_rows(MOE_DTYPE_Q8, D, nq, qpk, q, k, v, stride, lim, m, l, o);
}

void moe_avx512_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k, const void *v,
                          size_t stride, const int *lim, float *m, float *l, float *o)
{
    (void)nk; /* keys from max(lim) on are seen by no query */
    if (kv == MOE_DTYPE_F16) attn_rows_f16(D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else if (kv == MOE_DTYPE_Q8) attn_rows_q8(D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else attn_rows(MOE_DTYPE_F32, D, nq, qpk, q, k, v, stride, lim, m, l, o);
}

/* ---- a half cache's elements ---- */

void moe_avx512_f32_to_f16(size_t n, const float *src, uint16_t *dst)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i < 16 ? (int)(n - i) : 16);
        __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(mk, src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_mask_storeu_epi16(dst + i, mk, h);
    }
}

void moe_avx512_f16_to_f32(size_t n, const uint16_t *src, float *dst)
{
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 mk = tail_mask(n - i < 16 ? (int)(n - i) : 16);
        _mm512_mask_storeu_ps(dst + i, mk, avx512_load_dtype(MOE_DTYPE_F16, src, i, mk));
    }
}

/* ---- an 8-bit cache's elements (kernels/kv_q8.h) ---- */

void moe_avx512_kv_q8_store(size_t n, int D, const float *src, void *dst)
{
    const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
    const __m512 mag = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    unsigned char *h = dst;
    for (size_t i = 0; i < n; i++, src += D, h += moe_kv_q8_head_bytes(D))
        for (int g = 0, d0 = 0; d0 < D; g++, d0 += MOE_KV_Q8_GROUP) {
            __mmask16 m0 = tail_mask(D - d0), m1 = tail_mask(D - d0 - 16);
            __m512 x0 = _mm512_maskz_loadu_ps(m0, src + d0), x1 = _mm512_maskz_loadu_ps(m1, src + d0 + 16);
            /* |x| first: a NaN lane gives the running max (as fmaxf drops it) */
            __m512 a = _mm512_max_ps(_mm512_and_ps(x0, mag), _mm512_setzero_ps());
            a = _mm512_max_ps(_mm512_and_ps(x1, mag), a);
            uint16_t bits = moe_kv_q8_scale_bits(_mm512_reduce_max_ps(a));
            float s = moe_kv_q8_scale_value(bits);
            __m512 dv = _mm512_set1_ps(s > 0.0f ? s : 1.0f);
            /* x / d: a NaN lane becomes −127 (the second operand of max) */
            __m512 c0 = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(x0, dv), lo), hi);
            __m512 c1 = _mm512_min_ps(_mm512_max_ps(_mm512_div_ps(x1, dv), lo), hi);
            _mm512_mask_cvtepi32_storeu_epi8(h + d0, m0, _mm512_cvtps_epi32(c0));
            if (m1) _mm512_mask_cvtepi32_storeu_epi8(h + d0 + 16, m1, _mm512_cvtps_epi32(c1));
            memcpy(h + D + 2 * (size_t)g, &bits, sizeof bits);
        }
}

void moe_avx512_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst)
{
    for (int j = 0; j < nb; j++, dst += D) {
        const void *row = (const char *)src + (size_t)j * stride;
        for (int d = 0; d < D; d += 16) {
            __mmask16 mk = tail_mask(D - d);
            _mm512_mask_storeu_ps(dst + d, mk, kv_load16(MOE_DTYPE_Q8, row, 0, d, D, mk));
        }
    }
}
