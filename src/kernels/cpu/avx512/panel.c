/* kernels/cpu/avx512/panel.c — panel matrix-vector products and unpacking
 * with AVX-512: one zmm holds a panel's 16 rows at one input index.
 *
 * 4-bit codes become floats with one vpermps: its index is the low 4 bits of
 * each lane, so shifting the packed word right by 4·j and permuting a table
 * {0,1,…,15} yields code j of every lane — no mask, no int→float convert.
 * Quantized dot products sum q·x over a group first and apply the group's
 * scale once: Σ (s·q + b)·x = s·Σ q·x + b·Σ x (Σ x per group is precomputed). */
#include <immintrin.h>

#include "kernels/cpu/avx512/avx512.h"
#include "kernels/cpu/avx512/avx512_util.h"

static inline __m512 hsum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    return _mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d));
}

/* ---- float weights ---- */

/* m is a compile-time constant at every call (see with_m), so the
 * accumulators stay in registers. */
static inline __attribute__((always_inline)) void gemv_float(moe_dtype t, const moe_panel_format *f,
                                                             const moe_panel *p, int m, const float *const *x,
                                                             float *const *out)
{
    __mmask16 mk = avx512_lanes(p->nr);
    int K = f->K, nr = p->nr;
    __m512 acc[MOE_GEMV_MAX_M][4];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 4 <= K; k += 4) {
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m512 w = avx512_load_dtype(t, p->w, (size_t)(k + j) * nr, mk);
#pragma GCC unroll 4
            for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                if (i < m) acc[i][j] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[i][k + j]), acc[i][j]);
        }
    }
    for (; k < K; k++) {
        __m512 w = avx512_load_dtype(t, p->w, (size_t)k * nr, mk);
        for (int i = 0; i < m; i++) acc[i][0] = _mm512_fmadd_ps(w, _mm512_set1_ps(x[i][k]), acc[i][0]);
    }
    for (int i = 0; i < m; i++)
        _mm512_mask_storeu_ps(out[i], mk, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
}

/* ---- quantized weights ---- */

/* Codes j = 0..epw-1 of each lane's word, as floats. */
static inline __m512 q4_code(__m512i w, int j, __m512 table)
{
    return _mm512_permutexvar_ps(_mm512_srli_epi32(w, 4 * j), table);
}
static inline __m512 q8_code(__m512i w, int j)
{
    __m512i v = _mm512_srli_epi32(w, 8 * j);
    if (j < 3) v = _mm512_and_si512(v, _mm512_set1_epi32(0xFF));
    return _mm512_cvtepi32_ps(v);
}

static inline __attribute__((always_inline)) void gemv_quant(int bits, moe_dtype st, const moe_panel_format *f,
                                                             const moe_panel *p, int m, const float *const *x,
                                                             const float *const *xsum, float *const *out)
{
    const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, epw = 32 / bits, gs = f->group_size, words_per_group = gs / epw;
    /* independent FMA chains: 4 per token hide the FMA latency for one
     * token; with 3-4 tokens, 2 each keep everything in registers */
    const int ph = m >= 3 ? 2 : 4;
    __m512 res[MOE_GEMV_MAX_M];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) res[i] = _mm512_setzero_ps();
    for (int g = 0; g < f->K / gs; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g); /* this group's block */
        __m512 acc[MOE_GEMV_MAX_M][4];
        for (int i = 0; i < MOE_GEMV_MAX_M; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
        for (int c = g * words_per_group; c < (g + 1) * words_per_group; c++) {
            __m512i w = _mm512_maskz_loadu_epi32(mk, codes + (size_t)(c - g * words_per_group) * nr);
            int k = c * epw;
            if (bits == 4) {
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) {
                    __m512 q = q4_code(w, j, table);
#pragma GCC unroll 4
                    for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                        if (i < m) acc[i][j % ph] = _mm512_fmadd_ps(q, _mm512_set1_ps(x[i][k + j]), acc[i][j % ph]);
                }
            } else {
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    __m512 q = q8_code(w, j);
#pragma GCC unroll 4
                    for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                        if (i < m) acc[i][j % ph] = _mm512_fmadd_ps(q, _mm512_set1_ps(x[i][k + j]), acc[i][j % ph]);
                }
            }
        }
        __m512 s = avx512_load_dtype(st, moe_panel_group(p, p->scales, g), 0, mk);
        __m512 b = avx512_load_dtype(st, moe_panel_group(p, p->biases, g), 0, mk);
        for (int i = 0; i < m; i++) {
            res[i] = _mm512_fmadd_ps(s, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]), res[i]);
            res[i] = _mm512_fmadd_ps(b, _mm512_set1_ps(xsum[i][g]), res[i]);
        }
    }
    for (int i = 0; i < m; i++) _mm512_mask_storeu_ps(out[i], mk, res[i]);
}

#define DEFINE_GEMV_FLOAT(name, t)                                                            \
    static void name(const moe_panel_format *f, const moe_panel *p, int m, const float *const *x, \
                     float *const *out)                                                       \
    {                                                                                         \
        AVX512_WITH_M(gemv_float(t, f, p, m, x, out))                                                \
    }
#define DEFINE_GEMV_QUANT(name, bits, st)                                                     \
    static void name(const moe_panel_format *f, const moe_panel *p, int m, const float *const *x, \
                     const float *const *xsum, float *const *out)                             \
    {                                                                                         \
        AVX512_WITH_M(gemv_quant(bits, st, f, p, m, x, xsum, out))                                   \
    }
DEFINE_GEMV_FLOAT(gemv_f32, MOE_DTYPE_F32)
DEFINE_GEMV_FLOAT(gemv_f16, MOE_DTYPE_F16)
DEFINE_GEMV_FLOAT(gemv_bf16, MOE_DTYPE_BF16)
DEFINE_GEMV_QUANT(gemv_q4_f32, 4, MOE_DTYPE_F32)
DEFINE_GEMV_QUANT(gemv_q4_f16, 4, MOE_DTYPE_F16)
DEFINE_GEMV_QUANT(gemv_q4_bf16, 4, MOE_DTYPE_BF16)
DEFINE_GEMV_QUANT(gemv_q8_f32, 8, MOE_DTYPE_F32)
DEFINE_GEMV_QUANT(gemv_q8_f16, 8, MOE_DTYPE_F16)
DEFINE_GEMV_QUANT(gemv_q8_bf16, 8, MOE_DTYPE_BF16)

void moe_avx512_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                           const float *const *x, const float *const *xsum, float *const *out)
{
    int s = f->sdtype == MOE_DTYPE_BF16 ? 2 : f->sdtype == MOE_DTYPE_F16 ? 1 : 0;
    switch (f->fmt) {
    case MOE_WF_F32: gemv_f32(f, p, m, x, out); return;
    case MOE_WF_F16: gemv_f16(f, p, m, x, out); return;
    case MOE_WF_BF16: gemv_bf16(f, p, m, x, out); return;
    case MOE_WF_Q4: (s == 2 ? gemv_q4_bf16 : s == 1 ? gemv_q4_f16 : gemv_q4_f32)(f, p, m, x, xsum, out); return;
    case MOE_WF_Q8: (s == 2 ? gemv_q8_bf16 : s == 1 ? gemv_q8_f16 : gemv_q8_f32)(f, p, m, x, xsum, out); return;
    default: return;
    }
}

/* ---- unpack to float [K][16] ---- */

static inline __attribute__((always_inline)) void unpack_quant(int bits, moe_dtype st, const moe_panel_format *f,
                                                               const moe_panel *p, float *dst)
{
    const __m512 table = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __mmask16 mk = avx512_lanes(p->nr);
    int nr = p->nr, epw = 32 / bits, gs = f->group_size, words_per_group = gs / epw;
    for (int g = 0; g < f->K / gs; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g); /* this group's block */
        __m512 s = avx512_load_dtype(st, moe_panel_group(p, p->scales, g), 0, mk);
        __m512 b = avx512_load_dtype(st, moe_panel_group(p, p->biases, g), 0, mk);
        for (int c = g * words_per_group; c < (g + 1) * words_per_group; c++) {
            __m512i w = _mm512_maskz_loadu_epi32(mk, codes + (size_t)(c - g * words_per_group) * nr);
            float *d = dst + (size_t)c * epw * MOE_PANEL;
            if (bits == 4) {
#pragma GCC unroll 8
                for (int j = 0; j < 8; j++) _mm512_storeu_ps(d + j * MOE_PANEL, _mm512_fmadd_ps(s, q4_code(w, j, table), b));
            } else {
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) _mm512_storeu_ps(d + j * MOE_PANEL, _mm512_fmadd_ps(s, q8_code(w, j), b));
            }
        }
    }
}

static inline __attribute__((always_inline)) void unpack_float(moe_dtype t, const moe_panel_format *f,
                                                               const moe_panel *p, float *dst)
{
    __mmask16 mk = avx512_lanes(p->nr);
    for (int k = 0; k < f->K; k++)
        _mm512_storeu_ps(dst + (size_t)k * MOE_PANEL, avx512_load_dtype(t, p->w, (size_t)k * p->nr, mk));
}

void moe_avx512_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst)
{
    switch (f->fmt) {
    case MOE_WF_F32: unpack_float(MOE_DTYPE_F32, f, p, dst); return;
    case MOE_WF_F16: unpack_float(MOE_DTYPE_F16, f, p, dst); return;
    case MOE_WF_BF16: unpack_float(MOE_DTYPE_BF16, f, p, dst); return;
    case MOE_WF_Q4:
        if (f->sdtype == MOE_DTYPE_BF16) unpack_quant(4, MOE_DTYPE_BF16, f, p, dst);
        else if (f->sdtype == MOE_DTYPE_F16) unpack_quant(4, MOE_DTYPE_F16, f, p, dst);
        else unpack_quant(4, MOE_DTYPE_F32, f, p, dst);
        return;
    case MOE_WF_Q8:
        if (f->sdtype == MOE_DTYPE_BF16) unpack_quant(8, MOE_DTYPE_BF16, f, p, dst);
        else if (f->sdtype == MOE_DTYPE_F16) unpack_quant(8, MOE_DTYPE_F16, f, p, dst);
        else unpack_quant(8, MOE_DTYPE_F32, f, p, dst);
        return;
    default: return;
    }
}
