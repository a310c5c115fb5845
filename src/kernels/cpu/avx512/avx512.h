/* kernels/cpu/avx512/avx512.h — the AVX-512 kernels' entry points. */
#ifndef MOE_KERNELS_AVX512_H
#define MOE_KERNELS_AVX512_H

#include "kernels/kernels.h"

void moe_avx512_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                           const float *const *x, const float *const *xsum, float *const *out);
void moe_avx512_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst);
void moe_avx512_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate);
void moe_avx512_swiglu(int n, const float *g, const float *u, float *h);
void moe_avx512_attn_tile(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v, size_t stride,
                          const int *lim, float *m, float *l, float *ot);
void moe_avx512_attn_rows(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k, const void *v,
                          size_t stride, const int *lim, float *m, float *l, float *o);
void moe_avx512_f32_to_f16(size_t n, const float *src, uint16_t *dst);
void moe_avx512_f16_to_f32(size_t n, const uint16_t *src, float *dst);
void moe_avx512_kv_q8_store(size_t n, int D, const float *src, void *dst);
void moe_avx512_kv_q8_widen(int nb, int D, const void *src, size_t stride, float *dst);
enum { MOE_AVX512_MR = 12 };

#endif
