/* kernels/tile_gemm.c — see tile_gemm.h. */
#include "kernels/tile_gemm.h"

void moe_tile_gemm(const moe_cpu_kernels *k, int m, int K, const float *A, const float *B0, const float *B1,
                   float *C)
{
    int mr = k->mr, tiles = (m + mr - 1) / mr;
    for (int k0 = 0; k0 < K; k0 += MOE_GEMM_KC) {
        int kc = K - k0 < MOE_GEMM_KC ? K - k0 : MOE_GEMM_KC;
        for (int t = 0; t < tiles; t++)
            k->gemm_tile(kc, A + ((size_t)t * K + k0) * mr, B0 + (size_t)k0 * MOE_PANEL, B1 + (size_t)k0 * MOE_PANEL,
                         C + (size_t)t * mr * MOE_TILE_N, k0 > 0);
    }
}
