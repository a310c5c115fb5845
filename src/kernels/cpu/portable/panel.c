/* kernels/cpu/portable/panel.c — panel matrix-vector products and unpacking
 * in plain C: the reference semantics every SIMD version must match, and the
 * fallback for CPUs without AVX2. */
#include "kernels/cpu/portable/portable.h"

#include "quant/dtype.h"

/* Element i of an array of dtype t, as float (through the dtype traits). */
static float scalar_at(moe_dtype t, const void *base, size_t i)
{
    const moe_dtype_traits *tr = moe_dtype_traits_of(t);
    float v;
    tr->to_f32((const unsigned char *)base + i * tr->size, &v, 1);
    return v;
}

/* Code q of input k in lane r of a quantized panel. */
static unsigned code_at(const moe_panel_format *f, const moe_panel *p, int k, int r)
{
    int bits = moe_wformat_bits(f->fmt), epw = 32 / bits, g = k / f->group_size;
    const uint32_t *codes = moe_panel_group(p, p->w, g);
    uint32_t word = codes[(size_t)(k / epw - g * (f->group_size / epw)) * p->nr + r];
    return (word >> ((k % epw) * bits)) & ((1u << bits) - 1);
}

float moe_portable_weight_at(const moe_panel_format *f, const moe_panel *p, int k, int r)
{
    if (!moe_wformat_is_quant(f->fmt))
        return scalar_at(moe_wformat_value_dtype(f->fmt), p->w, (size_t)k * p->nr + r);
    int g = k / f->group_size;
    return scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * (float)code_at(f, p, k, r)
         + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r);
}

static void gemv_float(const moe_panel_format *f, const moe_panel *p, int m,
                       const float *const *x, float *const *out)
{
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int k = 0; k < f->K; k++)
                acc += moe_portable_weight_at(f, p, k, r) * x[i][k];
            out[i][r] = acc;
        }
}

/* Σ_g scale·Σ_{k∈g} q·x + bias·Σ_{k∈g} x: codes times x, scaled once a group. */
static void gemv_quant(const moe_panel_format *f, const moe_panel *p, int m,
                       const float *const *x, const float *const *xsum, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                float dot = 0.0f;
                for (int k = g * gs; k < (g + 1) * gs; k++)
                    dot += (float)code_at(f, p, k, r) * x[i][k];
                acc += scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * dot
                     + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r) * xsum[i][g];
            }
            out[i][r] = acc;
        }
}

void moe_portable_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                             const float *const *x, const float *const *xsum, float *const *out)
{
    if (moe_wformat_is_quant(f->fmt)) gemv_quant(f, p, m, x, xsum, out);
    else gemv_float(f, p, m, x, out);
}

void moe_portable_panel_gemv_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                const float *const *dx, const float *const *xsum, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                int32_t dot = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++)
                    dot += (int32_t)code_at(f, p, k, r) * xq[i][moe_act_i8_index(f->fmt, k)];
                acc += scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * dx[i][g] * (float)dot
                     + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r) * xsum[i][g];
            }
            out[i][r] = acc;
        }
}

/* As panel_gemv_i8, token i's activations read from the packed tile. */
void moe_portable_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                const float *d, const float *s, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                int32_t dot = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) {
                    int j = moe_act_i8_index(f->fmt, k);
                    dot += (int32_t)code_at(f, p, k, r) * q[((size_t)(j / 32) * m + i) * 32 + j % 32];
                }
                acc += scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * d[(size_t)g * m + i] * (float)dot
                     + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r) * s[(size_t)g * m + i];
            }
            out[i][r] = acc;
        }
}

/* Two digits a call: Σ_g scale·(dx/254)·Σ q·(254·xq + xr) + bias·xsum. */
void moe_portable_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                  const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                                  float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                long long dot = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) {
                    int j = moe_act_i8_index(f->fmt, k);
                    dot += (long long)code_at(f, p, k, r) * (MOE_I8_RESIDUAL_STEPS * xq[i][j] + xr[i][j]);
                }
                float dr = dx[i][g] / (float)MOE_I8_RESIDUAL_STEPS;
                acc += scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * dr * (float)dot
                     + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r) * xsum[i][g];
            }
            out[i][r] = acc;
        }
}

/* From the int16 tile of moe_pack_act_i8x2: the same sums, the same float
 * steps as lane_i8x2. */
void moe_portable_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                                  const float *d, const float *s, float *const *out)
{
    int gs = f->group_size, groups = f->K / gs;
    for (int i = 0; i < m; i++)
        for (int r = 0; r < p->nr; r++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                long long dot = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++)
                    dot += (long long)code_at(f, p, k, r) * a[((size_t)(k / 8) * m + i) * 8 + moe_act_i8x2_pos(f->fmt, k % 8)];
                float dr = d[(size_t)g * m + i] / (float)MOE_I8_RESIDUAL_STEPS;
                acc += scalar_at(f->sdtype, moe_panel_group(p, p->scales, g), (size_t)r) * dr * (float)dot
                     + scalar_at(f->sdtype, moe_panel_group(p, p->biases, g), (size_t)r) * s[(size_t)g * m + i];
            }
            out[i][r] = acc;
        }
}

/* Rows joined alone are tiles of one token. */
void moe_portable_panel_gemv_i8x2_joined(const moe_panel_format *f, const moe_panel *p, int m,
                                         const int16_t *const *rows, const float *const *dx,
                                         const float *const *xsum, float *const *out)
{
    for (int i = 0; i < m; i++) moe_portable_panel_gemm_i8x2(f, p, 1, rows[i], dx[i], xsum[i], out + i);
}

void moe_portable_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst)
{
    for (int k = 0; k < f->K; k++)
        for (int r = 0; r < MOE_PANEL; r++)
            dst[(size_t)k * MOE_PANEL + r] = r < p->nr ? moe_portable_weight_at(f, p, k, r) : 0.0f;
}
