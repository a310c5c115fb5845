/* kernels/cpu/avxvnni/avxvnni.h — the AVX-VNNI kernel set: the AVX2 kernels
 * with the int8 dot products of 256-bit vpdpbusd (VEX-encoded, no AVX-512:
 * Intel Alder Lake and later, AMD Zen 5). Call them only where
 * moe_kernels_by_name("avxvnni") is non-NULL. */
#ifndef MOE_KERNELS_AVXVNNI_H
#define MOE_KERNELS_AVXVNNI_H

#include "kernels/kernels.h"

/* Tokens one panel_gemm_i8 call takes (the AVX2 set's tile). */
enum { MOE_AVXVNNI_MR_I8 = 8 };

void moe_avxvnni_panel_gemv_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                               const float *const *dx, const float *const *xsum, float *const *out);
void moe_avxvnni_panel_gemm_i8(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                               const float *d, const float *s, float *const *out);

void moe_avxvnni_panel_gemv_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                                 const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                                 float *const *out);
void moe_avxvnni_panel_gemv_i8x2_joined(const moe_panel_format *f, const moe_panel *p, int m,
                                        const int16_t *const *rows, const float *const *dx, const float *const *xsum,
                                        float *const *out);
void moe_avxvnni_panel_gemm_i8x2(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                                 const float *d, const float *s, float *const *out);

#endif
