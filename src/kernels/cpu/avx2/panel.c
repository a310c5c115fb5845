/* kernels/cpu/avx2/panel.c — panel matrix-vector products and unpacking with
 * AVX2/FMA: a panel's 16 rows are two ymm halves. The last, partial panel of
 * a projection (fewer than 16 rows) goes to the portable kernel, since AVX2
 * has no masked 16-bit loads. */
#include <immintrin.h>

#include "kernels/cpu/avx2/avx2.h"
#include "kernels/cpu/avx2/avx2_util.h"
#include "kernels/cpu/portable/portable.h"

static inline __attribute__((always_inline)) void gemv_float(moe_dtype t, const moe_panel_format *f,
                                                             const moe_panel *p, int m, const float *const *x,
                                                             float *const *out)
{
    __m256 acc[MOE_GEMV_MAX_M][2];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int k = 0; k < f->K; k++) {
        __m256 w0 = avx2_load_dtype(t, p->w, (size_t)k * MOE_PANEL);
        __m256 w1 = avx2_load_dtype(t, p->w, (size_t)k * MOE_PANEL + 8);
#pragma GCC unroll 4
        for (int i = 0; i < MOE_GEMV_MAX_M; i++)
            if (i < m) {
                __m256 xi = _mm256_set1_ps(x[i][k]);
                acc[i][0] = _mm256_fmadd_ps(w0, xi, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(w1, xi, acc[i][1]);
            }
    }
    for (int i = 0; i < m; i++) {
        _mm256_storeu_ps(out[i], acc[i][0]);
        _mm256_storeu_ps(out[i] + 8, acc[i][1]);
    }
}

static inline __m256 code8(__m256i w, int bits, int j)
{
    __m256i v = _mm256_srli_epi32(w, bits * j);
    if (bits * (j + 1) < 32) v = _mm256_and_si256(v, _mm256_set1_epi32((1 << bits) - 1));
    return _mm256_cvtepi32_ps(v);
}

static inline __attribute__((always_inline)) void gemv_quant(int bits, moe_dtype st, const moe_panel_format *f,
                                                             const moe_panel *p, int m, const float *const *x,
                                                             const float *const *xsum, float *const *out)
{
    int epw = 32 / bits, gs = f->group_size, words_per_group = gs / epw;
    __m256 res[MOE_GEMV_MAX_M][2];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) res[i][0] = res[i][1] = _mm256_setzero_ps();
    for (int g = 0; g < f->K / gs; g++) {
        const int32_t *codes = moe_panel_group(p, p->w, g); /* this group's block */
        __m256 acc[MOE_GEMV_MAX_M][2];
        for (int i = 0; i < MOE_GEMV_MAX_M; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
        for (int c = g * words_per_group; c < (g + 1) * words_per_group; c++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)(c - g * words_per_group) * MOE_PANEL));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(codes + (size_t)(c - g * words_per_group) * MOE_PANEL + 8));
            int k = c * epw;
            for (int j = 0; j < epw; j++) {
                __m256 q0 = code8(w0, bits, j), q1 = code8(w1, bits, j);
#pragma GCC unroll 4
                for (int i = 0; i < MOE_GEMV_MAX_M; i++)
                    if (i < m) {
                        __m256 xi = _mm256_set1_ps(x[i][k + j]);
                        acc[i][0] = _mm256_fmadd_ps(q0, xi, acc[i][0]);
                        acc[i][1] = _mm256_fmadd_ps(q1, xi, acc[i][1]);
                    }
            }
        }
        for (int h = 0; h < 2; h++) {
            __m256 s = avx2_load_dtype(st, moe_panel_group(p, p->scales, g), (size_t)8 * h);
            __m256 b = avx2_load_dtype(st, moe_panel_group(p, p->biases, g), (size_t)8 * h);
            for (int i = 0; i < m; i++) {
                res[i][h] = _mm256_fmadd_ps(s, acc[i][h], res[i][h]);
                res[i][h] = _mm256_fmadd_ps(b, _mm256_set1_ps(xsum[i][g]), res[i][h]);
            }
        }
    }
    for (int i = 0; i < m; i++) {
        _mm256_storeu_ps(out[i], res[i][0]);
        _mm256_storeu_ps(out[i] + 8, res[i][1]);
    }
}

void moe_avx2_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                         const float *const *x, const float *const *xsum, float *const *out)
{
    if (p->nr != MOE_PANEL) {
        moe_portable_panel_gemv(f, p, m, x, xsum, out);
        return;
    }
    int bits = moe_wformat_bits(f->fmt);
    if (!bits) {
        moe_dtype t = moe_wformat_value_dtype(f->fmt);
        if (t == MOE_DTYPE_F32) gemv_float(MOE_DTYPE_F32, f, p, m, x, out);
        else if (t == MOE_DTYPE_F16) gemv_float(MOE_DTYPE_F16, f, p, m, x, out);
        else gemv_float(MOE_DTYPE_BF16, f, p, m, x, out);
    } else if (f->sdtype == MOE_DTYPE_BF16) {
        if (bits == 4) gemv_quant(4, MOE_DTYPE_BF16, f, p, m, x, xsum, out);
        else gemv_quant(8, MOE_DTYPE_BF16, f, p, m, x, xsum, out);
    } else if (f->sdtype == MOE_DTYPE_F16) {
        if (bits == 4) gemv_quant(4, MOE_DTYPE_F16, f, p, m, x, xsum, out);
        else gemv_quant(8, MOE_DTYPE_F16, f, p, m, x, xsum, out);
    } else {
        if (bits == 4) gemv_quant(4, MOE_DTYPE_F32, f, p, m, x, xsum, out);
        else gemv_quant(8, MOE_DTYPE_F32, f, p, m, x, xsum, out);
    }
}

static inline __attribute__((always_inline)) void unpack_quant(int bits, moe_dtype st, const moe_panel_format *f,
                                                               const moe_panel *p, float *dst)
{
    int epw = 32 / bits, gs = f->group_size, words_per_group = gs / epw;
    for (int g = 0; g < f->K / gs; g++)
        for (int h = 0; h < 2; h++) {
            const int32_t *codes = moe_panel_group(p, p->w, g);
            __m256 s = avx2_load_dtype(st, moe_panel_group(p, p->scales, g), (size_t)8 * h);
            __m256 b = avx2_load_dtype(st, moe_panel_group(p, p->biases, g), (size_t)8 * h);
            for (int c = g * words_per_group; c < (g + 1) * words_per_group; c++) {
                __m256i w = _mm256_loadu_si256((const __m256i *)(codes + (size_t)(c - g * words_per_group) * MOE_PANEL + 8 * h));
                for (int j = 0; j < epw; j++)
                    _mm256_storeu_ps(dst + (size_t)(c * epw + j) * MOE_PANEL + 8 * h,
                                     _mm256_fmadd_ps(s, code8(w, bits, j), b));
            }
        }
}

void moe_avx2_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst)
{
    if (p->nr != MOE_PANEL) {
        moe_portable_panel_unpack(f, p, dst);
        return;
    }
    int bits = moe_wformat_bits(f->fmt);
    if (!bits) {
        moe_dtype t = moe_wformat_value_dtype(f->fmt);
        for (int k = 0; k < f->K; k++)
            for (int h = 0; h < 2; h++) {
                size_t i = (size_t)k * MOE_PANEL + 8 * h;
                __m256 v = t == MOE_DTYPE_F32   ? avx2_load_dtype(MOE_DTYPE_F32, p->w, i)
                         : t == MOE_DTYPE_F16 ? avx2_load_dtype(MOE_DTYPE_F16, p->w, i)
                                              : avx2_load_dtype(MOE_DTYPE_BF16, p->w, i);
                _mm256_storeu_ps(dst + i, v);
            }
    } else if (f->sdtype == MOE_DTYPE_BF16) {
        if (bits == 4) unpack_quant(4, MOE_DTYPE_BF16, f, p, dst);
        else unpack_quant(8, MOE_DTYPE_BF16, f, p, dst);
    } else if (f->sdtype == MOE_DTYPE_F16) {
        if (bits == 4) unpack_quant(4, MOE_DTYPE_F16, f, p, dst);
        else unpack_quant(8, MOE_DTYPE_F16, f, p, dst);
    } else {
        if (bits == 4) unpack_quant(4, MOE_DTYPE_F32, f, p, dst);
        else unpack_quant(8, MOE_DTYPE_F32, f, p, dst);
    }
}
