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

#endif
