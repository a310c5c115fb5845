/* kernels/cpu/avx2/attention.c — flash-attention steps with AVX2 (see
 * attn_tile and attn_rows in kernels.h), laid out as the AVX-512 ones:
 * attn_tile holds its 16 queries in the lanes of two ymm (broadcast key and
 * value elements, no sums across lanes); attn_rows holds head_dim in the
 * lanes, walks the cache row by row, sums 8 queries' dot products across
 * lanes together, and masks the head_dim tail. Both leave the scores with
 * queries in lanes, for one vertical softmax.
 *
 * The cache is float32 or half (kv), as in the AVX-512 kernels: one body
 * inlined for both, half vectors widened with vcvtph2ps as they are loaded
 * (attn_tile widens 8 elements of a key, a column of value elements, into
 * a small buffer in L1 to broadcast from; mostly the caller widens a whole
 * block for it instead), the same arithmetic in the same order.
 *
 * attn_rows also reads an 8-bit cache (kernels/kv_q8.h): each 8 codes
 * sign-extended, converted and multiplied by their group's scale as they
 * are loaded; its quantization (kv_q8_store) and the widening of a block
 * for the tiles (kv_q8_widen) are here too. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"
#include "kernels/kv_q8.h"

enum { L = MOE_ATTN_LANES, KR = 4, DR = 6 };

/* Element i of a cache of dtype kv (Q8: byte i). */
static inline const void *kv_at(moe_dtype kv, const void *p, size_t i)
{
    return (const char *)p + i * (kv == MOE_DTYPE_F16 ? sizeof(uint16_t) : kv == MOE_DTYPE_Q8 ? 1 : sizeof(float));
}

/* The first n (≤ 8) halves from p as floats, lanes from n on zero. */
static inline __m256 load_f16(const uint16_t *p, int n)
{
    if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    uint16_t h[8] = { 0 };
    memcpy(h, p, sizeof(uint16_t) * (size_t)n);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* Elements d .. d+n (n ≤ 8; lanes from n on zero) of the kv head whose
 * column starts at element (Q8: byte) col of a row at p, D long; tail =
 * avx2_lanes(n) where n < 8. A Q8 vector: 8 codes times their group's
 * scale (8 lanes lie within one group of 32). */
static inline __attribute__((always_inline)) __m256 kv_load8(moe_dtype kv, const void *p, size_t col, int d, int D,
                                                             int n, __m256i tail)
{
    size_t i = col + (size_t)d;
    if (kv == MOE_DTYPE_F16) return load_f16((const uint16_t *)p + i, n);
    if (kv == MOE_DTYPE_Q8) {
        const unsigned char *h = (const unsigned char *)p + col;
        __m128i c;
        if (n >= 8) c = _mm_loadl_epi64((const __m128i *)(h + d));
        else {
            unsigned char b[16] = { 0 };
            memcpy(b, h + d, (size_t)n);
            c = _mm_loadu_si128((const __m128i *)b);
        }
        return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c)),
                             _mm256_set1_ps(moe_kv_q8_scale(h, D, d / MOE_KV_Q8_GROUP)));
    }
    return n >= 8 ? _mm256_loadu_ps((const float *)p + i) : _mm256_maskload_ps((const float *)p + i, tail);
}

/* 8 codes at p as floats. */
static inline __m256 q8_codes8(const unsigned char *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* o[d0..D) += p·(elements d0.. of the kv head column col of the row at vj). */
static inline __attribute__((always_inline)) void values_row_from(moe_dtype kv, int D, int d0, float pw, const void *vj,
                                                                  size_t col, __m256i tail, float *o)
{
    __m256 p = _mm256_set1_ps(pw);
    int d = d0;
    for (; d + 8 <= D; d += 8)
        _mm256_storeu_ps(o + d, _mm256_fmadd_ps(p, kv_load8(kv, vj, col, d, D, 8, tail), _mm256_loadu_ps(o + d)));
    if (d < D)
        _mm256_maskstore_ps(o + d, tail,
                            _mm256_fmadd_ps(p, kv_load8(kv, vj, col, d, D, D - d, tail), _mm256_maskload_ps(o + d, tail)));
}

static inline __attribute__((always_inline)) void values_row(moe_dtype kv, int D, float pw, const void *vj, size_t col,
                                                             __m256i tail, float *o)
{
    values_row_from(kv, D, 0, pw, vj, col, tail, o);
}

/* ---- attn_tile: queries in lanes ---- */

/* s[r][·] = Σ_d k_r[d]·qt[d][·] for nr (a constant) keys from k. */
static inline __attribute__((always_inline)) void tile_scores(int D, int nr, const float *qt, moe_dtype kv,
                                                              const void *k, size_t stride, float *s)
{
    __m256 acc[KR][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    if (kv == MOE_DTYPE_F32) {
        const float *row[KR];
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) row[r] = (const float *)k + (size_t)r * stride;
        for (int d = 0; d < D; d++) {
            __m256 q0 = _mm256_loadu_ps(qt + (size_t)d * L), q1 = _mm256_loadu_ps(qt + (size_t)d * L + 8);
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++) {
                __m256 kr = _mm256_broadcast_ss(row[r] + d);
                acc[r][0] = _mm256_fmadd_ps(kr, q0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(kr, q1, acc[r][1]);
            }
        }
    } else {
        /* 8 elements of each key widened into kf, broadcast from there */
        _Alignas(32) float kf[KR][8];
        for (int d0 = 0; d0 < D; d0 += 8) {
            int nd = D - d0 < 8 ? D - d0 : 8;
#pragma GCC unroll 4
            for (int r = 0; r < nr; r++)
                _mm256_store_ps(kf[r], load_f16((const uint16_t *)k + (size_t)r * stride + d0, nd));
            for (int d = 0; d < nd; d++) {
                const float *qd = qt + (size_t)(d0 + d) * L;
                __m256 q0 = _mm256_loadu_ps(qd), q1 = _mm256_loadu_ps(qd + 8);
#pragma GCC unroll 4
                for (int r = 0; r < nr; r++) {
                    __m256 kr = _mm256_broadcast_ss(&kf[r][d]);
                    acc[r][0] = _mm256_fmadd_ps(kr, q0, acc[r][0]);
                    acc[r][1] = _mm256_fmadd_ps(kr, q1, acc[r][1]);
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) _mm256_storeu_ps(s + r * L, acc[r][0]), _mm256_storeu_ps(s + r * L + 8, acc[r][1]);
}

/* ot[r][·] = a·ot[r][·] + Σ_j v_j[r]·p[j][·] for nr (a constant) elements
 * from v and ot. */
static inline __attribute__((always_inline)) void tile_values(int nk, int nr, const float *p, const float *v,
                                                              size_t stride, __m256 a0, __m256 a1, float *ot)
{
    __m256 acc[DR][2];
#pragma GCC unroll 6
    for (int r = 0; r < nr; r++) {
        acc[r][0] = _mm256_mul_ps(_mm256_loadu_ps(ot + r * L), a0);
        acc[r][1] = _mm256_mul_ps(_mm256_loadu_ps(ot + r * L + 8), a1);
    }
    for (int j = 0; j < nk; j++) {
        __m256 p0 = _mm256_loadu_ps(p + j * L), p1 = _mm256_loadu_ps(p + j * L + 8);
        const float *vj = v + (size_t)j * stride;
#pragma GCC unroll 6
        for (int r = 0; r < nr; r++) {
            __m256 vr = _mm256_broadcast_ss(vj + r);
            acc[r][0] = _mm256_fmadd_ps(vr, p0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(vr, p1, acc[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < nr; r++) _mm256_storeu_ps(ot + r * L, acc[r][0]), _mm256_storeu_ps(ot + r * L + 8, acc[r][1]);
}

/* The online-softmax update of 8 lanes from scores s [nk][16] (from a lane
 * offset): keys from lim on are masked; s becomes the weights e^(s − m');
 * m and l are updated; returns a = e^(m − m'). */
static __m256 tile_softmax(int nk, float *s, const int *lim, float *m, float *l)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256i limv = _mm256_loadu_si256((const __m256i *)lim);
    __m256 mx = ninf;
    for (int j = 0; j < nk; j++) {
        /* keys from lim on are masked: s = −∞ */
        __m256 seen = _mm256_castsi256_ps(_mm256_cmpgt_epi32(limv, _mm256_set1_epi32(j)));
        __m256 sj = _mm256_blendv_ps(ninf, _mm256_loadu_ps(s + j * L), seen);
        _mm256_storeu_ps(s + j * L, sj);
        mx = _mm256_max_ps(mx, sj);
    }
    __m256 mold = _mm256_loadu_ps(m), mnew = _mm256_max_ps(mold, mx);
    /* a lane that has seen no key yet keeps m = −∞ and a = 1 (its l and ot are 0) */
    __m256 live = _mm256_cmp_ps(mnew, ninf, _CMP_NEQ_OQ);
    __m256 a = _mm256_blendv_ps(_mm256_set1_ps(1.0f), avx2_exp_ps(_mm256_sub_ps(mold, mnew)), live);
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < nk; j++) {
        __m256 sj = _mm256_loadu_ps(s + j * L);
        __m256 p = _mm256_and_ps(_mm256_cmp_ps(sj, ninf, _CMP_NEQ_OQ), avx2_exp_ps(_mm256_sub_ps(sj, mnew)));
        _mm256_storeu_ps(s + j * L, p);
        sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(m, mnew);
    _mm256_storeu_ps(l, _mm256_fmadd_ps(_mm256_loadu_ps(l), a, sum));
    return a;
}

/* tile_values on elements d .. d+nr of the value rows (D long): float32
 * ones in place, half ones widened first into vf [nk][8]. */
static inline __attribute__((always_inline)) void tile_values_kv(int D, int nk, int nr, const float *p, moe_dtype kv,
                                                                 const void *v, int d, size_t stride, __m256 a0,
                                                                 __m256 a1, float *vf, float *ot)
{
    if (kv == MOE_DTYPE_F32) {
        tile_values(nk, nr, p, (const float *)v + d, stride, a0, a1, ot);
        return;
    }
    int n = D - d < 8 ? D - d : 8;
    for (int j = 0; j < nk; j++)
        _mm256_store_ps(vf + j * 8, load_f16((const uint16_t *)v + (size_t)j * stride + d, n));
    tile_values(nk, nr, p, vf, 8, a0, a1, ot);
}

static inline __attribute__((always_inline)) void attn_tile(moe_dtype kv, int D, int nk, const float *qt,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *vf, float *ot)
{
    _Alignas(32) float s[MOE_ATTN_MAX_KEYS * L];

    int j = 0;
    for (; j + KR <= nk; j += KR) tile_scores(D, KR, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L);
    if (nk - j >= 2) tile_scores(D, 2, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L), j += 2;
    if (nk - j >= 1) tile_scores(D, 1, qt, kv, kv_at(kv, k, (size_t)j * stride), stride, s + j * L);

    __m256 a0 = tile_softmax(nk, s, lim, m, l), a1 = tile_softmax(nk, s + 8, lim + 8, m + 8, l + 8);

    int d = 0;
    for (; d + DR <= D; d += DR) tile_values_kv(D, nk, DR, s, kv, v, d, stride, a0, a1, vf, ot + (size_t)d * L);
    if (D - d >= 4) tile_values_kv(D, nk, 4, s, kv, v, d, stride, a0, a1, vf, ot + (size_t)d * L), d += 4;
    if (D - d >= 2) tile_values_kv(D, nk, 2, s, kv, v, d, stride, a0, a1, vf, ot + (size_t)d * L), d += 2;
    if (D - d >= 1) tile_values_kv(D, nk, 1, s, kv, v, d, stride, a0, a1, vf, ot + (size_t)d * L);
}

/* The half instance on its own, so that the float32 one below compiles as
 * if it were alone. */
static __attribute__((noinline)) void attn_tile_f16(int D, int nk, const float *qt, const void *k, const void *v,
                                                    size_t stride, const int *lim, float *m, float *l, float *ot)
{
    _Alignas(32) float vf[MOE_ATTN_MAX_KEYS * 8]; /* a column of value elements, widened */
    attn_tile(MOE_DTYPE_F16, D, nk, qt, k, v, stride, lim, m, l, vf, ot);
}

void moe_avx2_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v, size_t stride,
                        const int *lim, float *m, float *l, float *ot)
{
    if (kv == MOE_DTYPE_F16) attn_tile_f16(D, nk, qt, k, v, stride, lim, m, l, ot);
    else attn_tile(MOE_DTYPE_F32, D, nk, qt, k, v, stride, lim, m, l, NULL, ot);
}

/* ---- attn_rows: head_dim in lanes ---- */

/* Lane r of the result = Σ of the lanes of x[r], for 8 vectors. */
static inline __m256 sum8(const __m256 *x)
{
    __m256 t0 = _mm256_hadd_ps(x[0], x[1]), t1 = _mm256_hadd_ps(x[2], x[3]);
    __m256 t2 = _mm256_hadd_ps(x[4], x[5]), t3 = _mm256_hadd_ps(x[6], x[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3); /* halves of x[0..3], of x[4..7] */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

static inline __attribute__((always_inline)) void attn_rows(moe_dtype kv, int D, int nq, int qpk, const float *q,
                                                            const void *k, const void *v, size_t stride,
                                                            const int *lim, float *m, float *l, float *o)
{
    _Alignas(32) float s[MOE_ATTN_MAX_KEYS * L], mv[L], lv[L], av[L];
    _Alignas(32) int limv[L];
    const float *qi[L];
    size_t col[L], head = kv == MOE_DTYPE_Q8 ? moe_kv_q8_head_bytes(D) : (size_t)D;
    int nmax = 0, halves = nq > 8 ? 2 : 1;
    for (int i = 0; i < L; i++) { /* lanes past nq repeat the last query; their results are dropped */
        int r = i < nq ? i : nq - 1;
        qi[i] = q + (size_t)r * D, col[i] = (size_t)(r / qpk) * head;
        mv[i] = m[r], lv[i] = l[r], limv[i] = lim[r];
        nmax = lim[r] > nmax ? lim[r] : nmax;
    }

    /* scores of the keys any query sees, a cache row at a time, 8 queries at a time */
    __m256i tail = avx2_lanes(D % 8);
    for (int j = 0; j < nmax; j++) {
        const void *kj = kv_at(kv, k, (size_t)j * stride);
        for (int h = 0; h < 2; h++) {
            if (h >= halves) { _mm256_storeu_ps(s + j * L + 8, _mm256_setzero_ps()); continue; }
            const float *const *qh = qi + 8 * h;
            const size_t *ch = col + 8 * h;
            __m256 acc[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
            int d = 0;
            if (kv == MOE_DTYPE_Q8) /* whole groups: q·codes over the group, then times its scale */
                for (; d + MOE_KV_Q8_GROUP <= D; d += MOE_KV_Q8_GROUP)
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++) {
                        const unsigned char *hd = (const unsigned char *)kj + ch[i];
                        __m256 t = _mm256_mul_ps(_mm256_loadu_ps(qh[i] + d), q8_codes8(hd + d));
#pragma GCC unroll 3
                        for (int e = 8; e < MOE_KV_Q8_GROUP; e += 8)
                            t = _mm256_fmadd_ps(_mm256_loadu_ps(qh[i] + d + e), q8_codes8(hd + d + e), t);
                        acc[i] = _mm256_fmadd_ps(t, _mm256_set1_ps(moe_kv_q8_scale(hd, D, d / MOE_KV_Q8_GROUP)), acc[i]);
                    }
            for (; d + 8 <= D; d += 8)
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(qh[i] + d), kv_load8(kv, kj, ch[i], d, D, 8, tail), acc[i]);
            if (d < D)
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(qh[i] + d, tail), kv_load8(kv, kj, ch[i], d, D, D - d, tail),
                                             acc[i]);
            _mm256_storeu_ps(s + j * L + 8 * h, sum8(acc));
        }
    }

    _mm256_storeu_ps(av, tile_softmax(nmax, s, limv, mv, lv));
    _mm256_storeu_ps(av + 8, tile_softmax(nmax, s + 8, limv + 8, mv + 8, lv + 8));
    for (int i = 0; i < nq; i++) {
        m[i] = mv[i], l[i] = lv[i];
        __m256 a = _mm256_set1_ps(av[i]);
        float *oi = o + (size_t)i * D;
        int d = 0;
        for (; d + 8 <= D; d += 8) _mm256_storeu_ps(oi + d, _mm256_mul_ps(_mm256_loadu_ps(oi + d), a));
        if (d < D) _mm256_maskstore_ps(oi + d, tail, _mm256_mul_ps(_mm256_maskload_ps(oi + d, tail), a));
    }

    /* values, a cache row at a time; each query's o stays in L1. Q8: four
     * rows at a time where no weight is 0, each query's o read and written
     * once for the four, a group's scale times the weight once */
    int j = 0;
    if (kv == MOE_DTYPE_Q8)
        for (; j + 4 <= nmax; j += 4)
            for (int i = 0; i < nq; i++) {
                const float *pj = s + j * L + i;
                if (pj[0] == 0.0f || pj[L] == 0.0f || pj[2 * L] == 0.0f || pj[3 * L] == 0.0f) {
                    for (int r = 0; r < 4; r++)
                        if (pj[r * L] != 0.0f)
                            values_row(kv, D, pj[r * L], kv_at(kv, v, (size_t)(j + r) * stride), col[i], tail,
                                       o + (size_t)i * D);
                    continue;
                }
                const unsigned char *hr[4];
                for (int r = 0; r < 4; r++) hr[r] = (const unsigned char *)kv_at(kv, v, (size_t)(j + r) * stride) + col[i];
                float *oi = o + (size_t)i * D;
                int d = 0;
                for (; d + MOE_KV_Q8_GROUP <= D; d += MOE_KV_Q8_GROUP) {
                    __m256 pv[4], acc[4];
                    for (int r = 0; r < 4; r++) pv[r] = _mm256_set1_ps(pj[r * L] * moe_kv_q8_scale(hr[r], D, d / MOE_KV_Q8_GROUP));
#pragma GCC unroll 4
                    for (int e = 0; e < 4; e++) {
                        acc[e] = _mm256_loadu_ps(oi + d + 8 * e);
#pragma GCC unroll 4
                        for (int r = 0; r < 4; r++) acc[e] = _mm256_fmadd_ps(pv[r], q8_codes8(hr[r] + d + 8 * e), acc[e]);
                        _mm256_storeu_ps(oi + d + 8 * e, acc[e]);
                    }
                }
                if (d < D) /* the part group, row after row */
                    for (int r = 0; r < 4; r++) values_row_from(kv, D, d, pj[r * L], hr[r], 0, tail, oi);
            }
    for (; j < nmax; j++) {
        const void *vj = kv_at(kv, v, (size_t)j * stride);
        const float *pj = s + j * L;
        for (int i = 0; i < nq; i++) {
            if (pj[i] == 0.0f) continue; /* masked, or too small to count */
            __m256 p = _mm256_set1_ps(pj[i]);
            float *oi = o + (size_t)i * D;
            int d = 0;
            for (; d + 8 <= D; d += 8)
                _mm256_storeu_ps(oi + d,
                                 _mm256_fmadd_ps(p, kv_load8(kv, vj, col[i], d, D, 8, tail), _mm256_loadu_ps(oi + d)));
            if (d < D)
                _mm256_maskstore_ps(oi + d, tail,
                                    _mm256_fmadd_ps(p, kv_load8(kv, vj, col[i], d, D, D - d, tail),
                                                    _mm256_maskload_ps(oi + d, tail)));
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

void moe_avx2_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k, const void *v,
                        size_t stride, const int *lim, float *m, float *l, float *o)
{
    (void)nk; /* keys from max(lim) on are seen by no query */
    if (kv == MOE_DTYPE_F16) attn_rows_f16(D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else if (kv == MOE_DTYPE_Q8) attn_rows_q8(D, nq, qpk, q, k, v, stride, lim, m, l, o);
    else attn_rows(MOE_DTYPE_F32, D, nq, qpk, q, k, v, stride, lim, m, l, o);
}

/* ---- a half cache's elements ---- */

void moe_avx2_f32_to_f16(size_t n, const float *src, uint16_t *dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) { /* the tail through buffers, with the same instruction */
        float f[8] = { 0 };
        uint16_t h[8];
        memcpy(f, src + i, sizeof(float) * (n - i));
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(_mm256_loadu_ps(f), _MM_FROUND_TO_NEAREST_INT));
        memcpy(dst + i, h, sizeof(uint16_t) * (n - i));
    }
}

void moe_avx2_f16_to_f32(size_t n, const uint16_t *src, float *dst)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16(src + i, 8));
    if (i < n) _mm256_maskstore_ps(dst + i, avx2_lanes((int)(n - i)), load_f16(src + i, (int)(n - i)));
}

/* ---- an 8-bit cache's elements (kernels/kv_q8.h) ---- */

/* Lanes from n on of x zero (x loaded whole from a buffer). */
static inline __m256 load_part(const float *p, int n)
{
    if (n >= 8) return _mm256_loadu_ps(p);
    return n > 0 ? _mm256_maskload_ps(p, avx2_lanes(n)) : _mm256_setzero_ps();
}

void moe_avx2_kv_q8_store(size_t n, int D, const float *src, void *dst)
{
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256 mag = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    unsigned char *h = dst;
    for (size_t i = 0; i < n; i++, src += D, h += moe_kv_q8_head_bytes(D))
        for (int g = 0, d0 = 0; d0 < D; g++, d0 += MOE_KV_Q8_GROUP) {
            int nd = D - d0 < MOE_KV_Q8_GROUP ? D - d0 : MOE_KV_Q8_GROUP;
            __m256 x[4], a = _mm256_setzero_ps();
            for (int r = 0; r < 4; r++) {
                x[r] = load_part(src + d0 + 8 * r, nd - 8 * r);
                a = _mm256_max_ps(_mm256_and_ps(x[r], mag), a); /* a NaN lane keeps a (fmaxf drops it) */
            }
            __m128 a4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
            a4 = _mm_max_ps(a4, _mm_movehl_ps(a4, a4));
            a4 = _mm_max_ss(a4, _mm_shuffle_ps(a4, a4, 1));
            uint16_t bits = moe_kv_q8_scale_bits(_mm_cvtss_f32(a4));
            float s = moe_kv_q8_scale_value(bits);
            __m256 dv = _mm256_set1_ps(s > 0.0f ? s : 1.0f);
            /* x / d: a NaN lane becomes −127 (the second operand of max) */
            _Alignas(32) int32_t c[32];
            for (int r = 0; r < 4; r++)
                _mm256_store_si256((__m256i *)(c + 8 * r),
                                   _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(_mm256_div_ps(x[r], dv), lo), hi)));
            for (int d = 0; d < nd; d++) h[d0 + d] = (unsigned char)(int8_t)c[d];
            memcpy(h + D + 2 * (size_t)g, &bits, sizeof bits);
        }
}

void moe_avx2_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst)
{
    __m256i tail = avx2_lanes(D % 8);
    for (int j = 0; j < nb; j++, dst += D) {
        const void *row = (const char *)src + (size_t)j * stride;
        int d = 0;
        for (; d + 8 <= D; d += 8) _mm256_storeu_ps(dst + d, kv_load8(MOE_DTYPE_Q8, row, 0, d, D, 8, tail));
        if (d < D) _mm256_maskstore_ps(dst + d, tail, kv_load8(MOE_DTYPE_Q8, row, 0, d, D, D - d, tail));
    }
}
