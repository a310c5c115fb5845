/* kernels/tile_gemm.h — the blocking around gemm_tile, written once: a block
 * of packed token tiles times two float panels, K cut into blocks so the two
 * panels' block (KC × 32 floats, 16 KiB) stays in L1 while every token tile
 * runs over it. */
#ifndef MOE_KERNELS_TILE_GEMM_H
#define MOE_KERNELS_TILE_GEMM_H

#include "kernels/kernels.h"

enum { MOE_GEMM_KC = 128 };

/* C [ceil(m/mr)][mr][32] = A · (B0 ‖ B1): A holds ceil(m/mr) tiles packed
 * [K][mr] one after the other (moe_pack_a), B0/B1 [K][16]. */
void moe_tile_gemm(const moe_cpu_kernels *k, int m, int K, const float *A, const float *B0, const float *B1,
                   float *C);

#endif
