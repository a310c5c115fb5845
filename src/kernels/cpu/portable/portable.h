/* kernels/cpu/portable/portable.h — the plain-C kernels, also used by the
 * SIMD tables for the rare shapes they do not specialise. */
#ifndef MOE_KERNELS_PORTABLE_H
#define MOE_KERNELS_PORTABLE_H

#include "kernels/kernels.h"

void moe_portable_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                             const float *const *x, const float *const *xsum, float *const *out);
void moe_portable_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst);
void moe_portable_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate);
void moe_portable_swiglu(int n, const float *g, const float *u, float *h);
void moe_portable_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v,
                            size_t stride, const int *lim, float *m, float *l, float *ot);
void moe_portable_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k,
                            const void *v, size_t stride, const int *lim, float *m, float *l, float *o);
void moe_portable_f32_to_f16(size_t n, const float *src, uint16_t *dst);
void moe_portable_f16_to_f32(size_t n, const uint16_t *src, float *dst);
void moe_portable_kv_q8_store(size_t n, int D, const float *src, void *dst);
void moe_portable_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst);
void moe_portable_panel_gemv_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                const float *const *dx, const float *const *xsum, float *const *out);
void moe_portable_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                const float *d, const float *s, float *const *out);
/* The two-digit kernels' reference (kernels.h: panel_gemv_i8x2,
 * panel_gemv_i8x2_joined and panel_gemm_i8x2), for the SIMD tables' partial
 * panels and for tests; the portable table itself passes residuals as rows
 * of their own. */
void moe_portable_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                  const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                                  float *const *out);
void moe_portable_panel_gemv_i8x2_joined(const moe_panel_format *f, const moe_panel *p, int m,
                                         const int16_t *const *rows, const float *const *dx,
                                         const float *const *xsum, float *const *out);
void moe_portable_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                                  const float *d, const float *s, float *const *out);
/* The dequantized (or converted) weight of input k in lane r. */
float moe_portable_weight_at(const moe_panel_format *f, const moe_panel *p, int k, int r);

#endif
