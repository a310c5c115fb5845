/* kernels/cpu/avx2/attention.c — flash-attention steps with AVX2 (see
 * attn_tile and attn_rows in kernels.h), laid out as the AVX-512 ones:
 * attn_tile holds its 16 queries in the lanes of two ymm (broadcast key and
 * value elements, no sums across lanes); attn_rows holds head_dim in the
 * lanes, walks the cache row by row, sums 8 queries' dot products across
 * lanes together, and masks the head_dim tail. Both leave the scores with
 * queries in lanes, for one vertical softmax. */
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"

enum { L = MOE_ATTN_LANES, KR = 4, DR = 6 };

/* ---- attn_tile: queries in lanes ---- */

/* s[r][·] = Σ_d k_r[d]·qt[d][·] for nr (a constant) keys from k. */
static inline __attribute__((always_inline)) void tile_scores(int D, int nr, const float *qt, const float *k,
                                                              size_t stride, float *s)
{
    const float *row[KR];
    __m256 acc[KR][2];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
        row[r] = k + (size_t)r * stride, acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m256 q0 = _mm256_loadu_ps(qt + (size_t)d * L), q1 = _mm256_loadu_ps(qt + (size_t)d * L + 8);
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            __m256 kr = _mm256_broadcast_ss(row[r] + d);
            acc[r][0] = _mm256_fmadd_ps(kr, q0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(kr, q1, acc[r][1]);
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

void moe_avx2_attn_tile(int D, int nk, const float *qt, const float *k, const float *v, size_t stride,
                        const int *lim, float *m, float *l, float *ot)
{
    _Alignas(32) float s[MOE_ATTN_MAX_KEYS * L];

    int j = 0;
    for (; j + KR <= nk; j += KR) tile_scores(D, KR, qt, k + (size_t)j * stride, stride, s + j * L);
    if (nk - j >= 2) tile_scores(D, 2, qt, k + (size_t)j * stride, stride, s + j * L), j += 2;
    if (nk - j >= 1) tile_scores(D, 1, qt, k + (size_t)j * stride, stride, s + j * L);

    __m256 a0 = tile_softmax(nk, s, lim, m, l), a1 = tile_softmax(nk, s + 8, lim + 8, m + 8, l + 8);

    int d = 0;
    for (; d + DR <= D; d += DR) tile_values(nk, DR, s, v + d, stride, a0, a1, ot + (size_t)d * L);
    if (D - d >= 4) tile_values(nk, 4, s, v + d, stride, a0, a1, ot + (size_t)d * L), d += 4;
    if (D - d >= 2) tile_values(nk, 2, s, v + d, stride, a0, a1, ot + (size_t)d * L), d += 2;
    if (D - d >= 1) tile_values(nk, 1, s, v + d, stride, a0, a1, ot + (size_t)d * L);
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

void moe_avx2_attn_rows(int D, int nq, int qpk, int nk, const float *q, const float *k, const float *v,
                        size_t stride, const int *lim, float *m, float *l, float *o)
{
    _Alignas(32) float s[MOE_ATTN_MAX_KEYS * L], mv[L], lv[L], av[L];
    _Alignas(32) int limv[L];
    const float *qi[L];
    size_t col[L];
    int nmax = 0, halves = nq > 8 ? 2 : 1;
    (void)nk; /* keys from max(lim) on are seen by no query */
    for (int i = 0; i < L; i++) { /* lanes past nq repeat the last query; their results are dropped */
        int r = i < nq ? i : nq - 1;
        qi[i] = q + (size_t)r * D, col[i] = (size_t)(r / qpk) * D;
        mv[i] = m[r], lv[i] = l[r], limv[i] = lim[r];
        nmax = lim[r] > nmax ? lim[r] : nmax;
    }

    /* scores of the keys any query sees, a cache row at a time, 8 queries at a time */
    __m256i tail = avx2_lanes(D % 8);
    for (int j = 0; j < nmax; j++) {
        const float *kj = k + (size_t)j * stride;
        for (int h = 0; h < 2; h++) {
            if (h >= halves) { _mm256_storeu_ps(s + j * L + 8, _mm256_setzero_ps()); continue; }
            const float *const *qh = qi + 8 * h;
            const size_t *ch = col + 8 * h;
            __m256 acc[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
            int d = 0;
            for (; d + 8 <= D; d += 8)
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(qh[i] + d), _mm256_loadu_ps(kj + ch[i] + d), acc[i]);
            if (d < D)
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    acc[i] = _mm256_fmadd_ps(_mm256_maskload_ps(qh[i] + d, tail), _mm256_maskload_ps(kj + ch[i] + d, tail),
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

    /* values, a cache row at a time; each query's o stays in L1 */
    for (int j = 0; j < nmax; j++) {
        const float *vj = v + (size_t)j * stride, *pj = s + j * L;
        for (int i = 0; i < nq; i++) {
            if (pj[i] == 0.0f) continue; /* masked, or too small to count */
            __m256 p = _mm256_set1_ps(pj[i]);
            const float *vi = vj + col[i];
            float *oi = o + (size_t)i * D;
            int d = 0;
            for (; d + 8 <= D; d += 8)
                _mm256_storeu_ps(oi + d, _mm256_fmadd_ps(p, _mm256_loadu_ps(vi + d), _mm256_loadu_ps(oi + d)));
            if (d < D)
                _mm256_maskstore_ps(oi + d, tail,
                                    _mm256_fmadd_ps(p, _mm256_maskload_ps(vi + d, tail), _mm256_maskload_ps(oi + d, tail)));
        }
    }
}
