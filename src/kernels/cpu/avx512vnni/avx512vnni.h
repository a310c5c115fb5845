/* kernels/cpu/avx512vnni/avx512vnni.h — the AVX-512 VNNI kernels' entry
 * points (int8 dot products, vpdpbusd). Call them only where
 * moe_kernels_by_name("avx512vnni") is non-NULL. */
#ifndef MOE_KERNELS_AVX512VNNI_H
#define MOE_KERNELS_AVX512VNNI_H

#include "kernels/kernels.h"

/* Tokens one panel_gemm_i8 call takes: 12 integer accumulators and 12
 * float results, plus the code word, its two nibble halves and the mask,
 * fill 28 of the 32 zmm registers. */
enum { MOE_AVX512VNNI_MR_I8 = 12 };

void moe_avx512vnni_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                                  const float *d, const float *s, float *const *out);

/* int8x2 activations, the digits joined (gemm_i8x2.c): a tile of up to
 * MOE_AVX512VNNI_MR_I8 tokens, or up to MOE_GEMV_MAX_M rows. */
void moe_avx512vnni_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                                    const float *d, const float *s, float *const *out);
void moe_avx512vnni_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                    const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                                    float *const *out);

void moe_avx512vnni_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx,
                                    float *xsum, int8_t *xr);

/* The peak probe of `moe bench-layer`: MOE_AVX512VNNI_PEAK_CHAINS independent
 * chains of 512-bit vpdpbusd on registers, `reps` steps of every chain (each
 * vpdpbusd is 64 int8 multiply-adds). Returns a value that depends on all
 * sums, to keep them alive. */
enum { MOE_AVX512VNNI_PEAK_CHAINS = 12 };
int32_t moe_avx512vnni_dot_peak(long reps);

#endif
