/* kernels/cpu/avx512/avx512.h — the AVX-512 kernels' entry points. */
#ifndef MOE_KERNELS_AVX512_H
#define MOE_KERNELS_AVX512_H

#include "kernels/kernels.h"

void moe_avx512_panel_gemv(const moe_panel_format *f, const moe_panel *p, int m,
                           const float *const *x, const float *const *xsum, float *const *out);
void moe_avx512_panel_unpack(const moe_panel_format *f, const moe_panel *p, float *dst);
void moe_avx512_gemm_tile(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate);
void moe_avx512_swiglu(int n, const float *g, const float *u, float *h);
enum { MOE_AVX512_MR = 12 };

#endif
