/* kernels/cpu/avx2/avx2.h — the AVX2 kernels' entry points. */
#ifndef MOE_KERNELS_AVX2_H
#define MOE_KERNELS_AVX2_H

#include "kernels/kernels.h"

void moe_avx2_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                         const float *const *x, const float *const *xsum, float *const *out);
void moe_avx2_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst);
void moe_avx2_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v, size_t stride,
                        const int *lim, float *m, float *l, float *ot);
void moe_avx2_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k, const void *v,
                        size_t stride, const int *lim, float *m, float *l, float *o);
void moe_avx2_f32_to_f16(size_t n, const float *src, uint16_t *dst);
void moe_avx2_f16_to_f32(size_t n, const uint16_t *src, float *dst);
void moe_avx2_kv_q8_store(size_t n, int D, const float *src, void *dst);
void moe_avx2_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst);
/* gemm.c: the float tile (MOE_AVX2_MR tokens) and SwiGLU, shared with the
 * AVX-VNNI table. */
enum { MOE_AVX2_MR = 4 };
void moe_avx2_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate);
void moe_avx2_swiglu(int n, const float *g, const float *u, float *h);

/* int8 activations (panel_i8.c, quant_i8.c): vpmaddubsw/vpmaddwd on plain
 * AVX2. Tokens one panel_gemm_i8 or panel_gemm_i8x2 call takes. */
enum { MOE_AVX2_MR_I8 = 16 };
void moe_avx2_panel_gemv_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                            const float *const *dx, const float *const *xsum, float *const *out);
void moe_avx2_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                            const float *d, const float *s, float *const *out);
void moe_avx2_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                              const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                              float *const *out);
void moe_avx2_panel_gemv_i8x2_joined(const moe_panel_format *f, const moe_panel *p, int m,
                                     const int16_t *const *rows, const float *const *dx, const float *const *xsum,
                                     float *const *out);
void moe_avx2_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                              const float *d, const float *s, float *const *out);
void moe_avx2_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx,
                              float *xsum, int8_t *xr);
void moe_avx2_pack_act_i8x2(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                            const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s);

#endif
