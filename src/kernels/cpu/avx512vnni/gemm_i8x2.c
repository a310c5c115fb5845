/* kernels/cpu/avx512vnni/gemm_i8x2.c — quantized panels times int8x2
 * activations with the two digits joined, a = 254·xq + xr as int16
 * (|a| ≤ 32639), and vpdpwssd: int16 code pairs times int16 activation
 * pairs, summed into each int32 lane, for a tile of tokens packed by
 * moe_pack_act_i8x2 (prefill). A few rows (decode) keep their digits apart:
 * each digit's group sum by vpdpbusd as panel_gemv_i8 takes it, then
 * 254·q + r in integers, exact, so the sum and the float epilogue after it
 * are the tile's and a token gets the same bits from either (joining the
 * rows' digits for every panel would cost as much as the products).
 *
 * Against the two int8 passes of panel_gemm_i8 (a digit a row, the residual
 * added after), the multiply count is the same (one 16-bit vpdpwssd does a
 * pair of both digits where vpdpbusd does four bytes of one digit), but a
 * token's group takes one integer-to-float epilogue instead of two and its
 * codes are split once for both digits: at groups of 64 the two epilogues
 * were a sixth of the tile's time.
 *
 * The code pairs are panel_i8.h's (AVX2): Q4, for each dword of 8 nibbles,
 * (n_j, n_j+4) = (w >> 4j) & 0x000F000F, j < 4, one word a step of 8 inputs;
 * Q8, (c0, c2) and (c1, c3) of each of two words. Token i's run of 8 joined
 * inputs holds the matching activation pairs as its dwords 0..3 (kernels.h,
 * moe_act_i8x2_pos), each taken as an embedded {1to16} broadcast. Exact:
 * a product is at most 255·32639 < 2^23 and a group (at most 128 inputs) sums
 * below 2^30. */
#include <immintrin.h>

#include "kernels/cpu/avx512/avx512_util.h"
#include "kernels/cpu/avx512vnni/avx512vnni.h"
#include "kernels/cpu/portable/portable.h"

enum { MR = MOE_AVX512VNNI_MR_I8, MAX_GROUP = 128 };

typedef int32_t __attribute__((may_alias, aligned(1))) dword;

/* acc + u · (the int16 pair at p, broadcast), pairs summed: vpdpwssd with an
 * embedded broadcast, which gcc does not form from the intrinsic. */
static inline __m512i dpwssd_bcast(__m512i acc, __m512i u, const int16_t *p)
{
    __asm__("vpdpwssd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*(const dword *)p));
    return acc;
}

/* The float epilogue of a group, the same for the tile and the rows: the
 * scales over 254 (one division for the m tokens, lane by lane the
 * quotients a scalar division gives), then res += (scale·dx/254)·sum and
 * res += bias·xsum, as panel_gemm_i8 does a digit. */
static inline __attribute__((always_inline)) void x2_epilogue(moe_dtype st, const moe_panel *p, __mmask16 mk, int g,
                                                              const int m, const float *dg, const float *sg,
                                                              const __m512i *acc, __m512 *res)
{
    float dr[16] __attribute__((aligned(64)));
    _mm512_store_ps(dr, _mm512_div_ps(_mm512_maskz_loadu_ps(avx512_lanes(m), dg),
                                      _mm512_set1_ps((float)MOE_I8_RESIDUAL_STEPS)));
    __m512 sc = avx512_load_dtype(st, moe_panel_group(p, p->scales, g), 0, mk);
    __m512 b = avx512_load_dtype(st, moe_panel_group(p, p->biases, g), 0, mk);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        if (i < m) {
            __m512 sd = _mm512_mul_ps(sc, _mm512_set1_ps(dr[i]));
            res[i] = _mm512_fmadd_ps(sd, _mm512_cvtepi32_ps(acc[i]), res[i]);
            res[i] = _mm512_fmadd_ps(b, _mm512_set1_ps(sg[i]), res[i]);
        }
}

/* out[i][0..nr) for i < m, m a compile-time constant, from the tile (a, d,
 * s as moe_pack_act_i8x2 packs them). */
static inline __attribute__((always_inline)) void x2_tile(int bits, moe_dtype st, const int m,
                                                          const moe_panel_format *f, const moe_panel *p,
                                                          const int16_t *a, const float *d, const float *s,
                                                          float *const *out)
{
    const __m512i m4 = _mm512_set1_epi32(0x000F000F), m8 = _mm512_set1_epi32(0x00FF00FF);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, gs = f->group_size, groups = f->K / gs;
    __m512 res[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) res[i] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        const int16_t *run = a + (size_t)g * gs * m;
        __m512i acc[MR];
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_si512();
        /* a step: 8 inputs of every token, its four pairs */
        for (int k = 0; k < gs; k += 8, run += 8 * m) {
            __m512i u[4];
            if (bits == 4) {
                __m512i w = _mm512_maskz_loadu_epi32(mk, codes);
                codes += nr;
                u[0] = _mm512_and_si512(w, m4);
                u[1] = _mm512_and_si512(_mm512_srli_epi32(w, 4), m4);
                u[2] = _mm512_and_si512(_mm512_srli_epi32(w, 8), m4);
                u[3] = _mm512_and_si512(_mm512_srli_epi32(w, 12), m4);
            } else {
                for (int c = 0; c < 2; c++, codes += nr) {
                    __m512i w = _mm512_maskz_loadu_epi32(mk, codes);
                    u[2 * c] = _mm512_and_si512(w, m8);
                    u[2 * c + 1] = _mm512_and_si512(_mm512_srli_epi32(w, 8), m8);
                }
            }
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++)
#pragma GCC unroll 16
                for (int i = 0; i < MR; i++)
                    if (i < m) acc[i] = dpwssd_bcast(acc[i], u[j], run + 8 * i + 2 * j);
        }
        x2_epilogue(st, p, mk, g, m, d + (size_t)g * m, s + (size_t)g * m, acc, res);
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
        if (i < m) _mm512_mask_storeu_ps(out[i], mk, res[i]);
}

/* acc + the dword dot products of u (unsigned bytes) with the four signed
 * bytes at p, broadcast (as gemm_i8.c). */
static inline __m512i dpbusd_bcast(__m512i acc, __m512i u, const int8_t *p)
{
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*(const dword *)p));
    return acc;
}

/* The same for m ≤ MOE_GEMV_MAX_M rows, each digit's group sum apart (the
 * bytes as panel_gemv_i8 reads them), joined as 254·q + r after. */
static inline __attribute__((always_inline)) void x2_rows(int bits, moe_dtype st, const int m,
                                                          const moe_panel_format *f, const moe_panel *p,
                                                          const int8_t *const *xq, const int8_t *const *xr,
                                                          const float *const *dx, const float *const *xsum,
                                                          float *const *out)
{
    const __m512i nib = _mm512_set1_epi32(0x0F0F0F0F);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, gs = f->group_size, groups = f->K / gs, words = gs * bits / 32;
    __m512 res[MR];
    for (int i = 0; i < m; i++) res[i] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g);
        /* two chains a digit (a token's next word need not wait for the
         * last one's sum: one row is otherwise bound by the latency) */
        __m512i aq[MOE_GEMV_MAX_M][2], ar[MOE_GEMV_MAX_M][2], acc[MR];
        float dg[MOE_GEMV_MAX_M], sg[MOE_GEMV_MAX_M];
        for (int i = 0; i < m; i++) aq[i][0] = aq[i][1] = ar[i][0] = ar[i][1] = _mm512_setzero_si512();
        for (int c = 0; c < words; c++, codes += nr) {
            __m512i w = _mm512_maskz_loadu_epi32(mk, codes);
            if (bits == 4) {
                /* low nibbles: inputs 0,2,4,6 of the word, bytes 8c..8c+3;
                 * high: 1,3,5,7, bytes 8c+4..8c+7 */
                __m512i lo = _mm512_and_si512(w, nib), hi = _mm512_and_si512(_mm512_srli_epi32(w, 4), nib);
                size_t k = (size_t)g * gs + 8 * c;
                for (int i = 0; i < m; i++) {
                    aq[i][0] = dpbusd_bcast(aq[i][0], lo, xq[i] + k);
                    aq[i][1] = dpbusd_bcast(aq[i][1], hi, xq[i] + k + 4);
                    ar[i][0] = dpbusd_bcast(ar[i][0], lo, xr[i] + k);
                    ar[i][1] = dpbusd_bcast(ar[i][1], hi, xr[i] + k + 4);
                }
            } else {
                size_t k = (size_t)g * gs + 4 * c;
                for (int i = 0; i < m; i++) {
                    aq[i][c & 1] = dpbusd_bcast(aq[i][c & 1], w, xq[i] + k);
                    ar[i][c & 1] = dpbusd_bcast(ar[i][c & 1], w, xr[i] + k);
                }
            }
        }
        /* 254·q + r: |q's sum| ≤ 128·255·128 < 2^22, so exact in int32 */
        for (int i = 0; i < m; i++) {
            __m512i q = _mm512_add_epi32(aq[i][0], aq[i][1]), r = _mm512_add_epi32(ar[i][0], ar[i][1]);
            acc[i] = _mm512_add_epi32(_mm512_sub_epi32(_mm512_slli_epi32(q, 8), _mm512_slli_epi32(q, 1)), r);
            dg[i] = dx[i][g], sg[i] = xsum[i][g];
        }
        x2_epilogue(st, p, mk, g, m, dg, sg, acc, res);
    }
    for (int i = 0; i < m; i++) _mm512_mask_storeu_ps(out[i], mk, res[i]);
}

#define CASE_M(M, call) \
    case M: { enum { m = M }; call; } break;
#define WITH_M12(call)                                                                                     \
    switch (m) {                                                                                           \
        CASE_M(1, call) CASE_M(2, call) CASE_M(3, call) CASE_M(4, call) CASE_M(5, call) CASE_M(6, call)    \
        CASE_M(7, call) CASE_M(8, call) CASE_M(9, call) CASE_M(10, call) CASE_M(11, call) CASE_M(12, call) \
    default: break;                                                                                        \
    }
#define WITH_M4(call) \
    switch (m) { CASE_M(1, call) CASE_M(2, call) CASE_M(3, call) CASE_M(4, call) default: break; }
_Static_assert(MR == 12 && MOE_GEMV_MAX_M == 4, "WITH_M12 and WITH_M4 list the token counts");

#define DEFINE_X2(bits, st, sfx)                                                                                   \
    static void gemm_##sfx(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a, const float *d, \
                           const float *s, float *const *out)                                                    \
    {                                                                                                            \
        WITH_M12(x2_tile(bits, st, m, f, p, a, d, s, out))                                                       \
    }                                                                                                            \
    static void gemv_##sfx(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,        \
                           const int8_t *const *xr, const float *const *dx, const float *const *xsum,            \
                           float *const *out)                                                                    \
    {                                                                                                            \
        WITH_M4(x2_rows(bits, st, m, f, p, xq, xr, dx, xsum, out))                                               \
    }
DEFINE_X2(4, MOE_DTYPE_F32, q4_f32)
DEFINE_X2(4, MOE_DTYPE_F16, q4_f16)
DEFINE_X2(4, MOE_DTYPE_BF16, q4_bf16)
DEFINE_X2(8, MOE_DTYPE_F32, q8_f32)
DEFINE_X2(8, MOE_DTYPE_F16, q8_f16)
DEFINE_X2(8, MOE_DTYPE_BF16, q8_bf16)

/* 0..2 Q4, 3..5 Q8 by scale dtype F32, F16, BF16; -1 where the portable
 * kernel serves (a group that is no multiple of 16 or above MAX_GROUP). */
static int variant(const moe_panel_format *f)
{
    if (f->group_size % 16 || f->group_size > MAX_GROUP || (f->fmt != MOE_WF_Q4 && f->fmt != MOE_WF_Q8)) return -1;
    int sd = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    return (f->fmt == MOE_WF_Q8 ? 3 : 0) + sd;
}

void moe_avx512vnni_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                                    const float *d, const float *s, float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int16_t *, const float *,
                       const float *, float *const *);
    static const fn by_variant[6] = { gemm_q4_f32, gemm_q4_f16, gemm_q4_bf16, gemm_q8_f32, gemm_q8_f16, gemm_q8_bf16 };
    int v = variant(f);
    if (v < 0 || m > MR) moe_portable_panel_gemm_i8x2(f, p, m, a, d, s, out);
    else by_variant[v](f, p, m, a, d, s, out);
}

void moe_avx512vnni_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                    const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                                    float *const *out)
{
    typedef void (*fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *const *, const int8_t *const *,
                       const float *const *, const float *const *, float *const *);
    static const fn by_variant[6] = { gemv_q4_f32, gemv_q4_f16, gemv_q4_bf16, gemv_q8_f32, gemv_q8_f16, gemv_q8_bf16 };
    int v = variant(f);
    if (v < 0 || m > MOE_GEMV_MAX_M) moe_portable_panel_gemv_i8x2(f, p, m, xq, xr, dx, xsum, out);
    else by_variant[v](f, p, m, xq, xr, dx, xsum, out);
}
