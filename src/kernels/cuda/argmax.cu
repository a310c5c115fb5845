/* kernels/cuda/argmax.cu — the greedy choice over rows of logits on the
 * device, so that only the chosen ids cross to the host: kernels/argmax.h's
 * rule (the first of the largest; NaN never chosen; 0 when none is above
 * -inf), one block of threads a row. */
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

enum { ARGMAX_THREADS = 1024 };

/* the better of two candidates: the larger value, or the lower index of
 * equal ones (no candidate: -inf at INT_MAX, which every real one beats) */
__device__ inline void better(float &v, int &at, float ov, int oat)
{
    if (ov > v || (ov == v && oat < at)) v = ov, at = oat;
}

__device__ inline void warp_best(float &v, int &at)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, v, o);
        int oat = __shfl_xor_sync(0xffffffffu, at, o);
        better(v, at, ov, oat);
    }
}

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_rows_kernel(const float *rows, int V, int32_t *ids)
{
    __shared__ float sv[ARGMAX_THREADS / 32];
    __shared__ int sat[ARGMAX_THREADS / 32];
    const float *z = rows + (size_t)blockIdx.x * V;
    /* each thread's first largest over its indices, which rise; NaN fails
     * every comparison, and -inf never beats the start */
    float v = -INFINITY;
    int at = INT_MAX;
    for (int i = threadIdx.x; i < V; i += ARGMAX_THREADS) {
        float x = z[i];
        if (x > v) v = x, at = i;
    }
    warp_best(v, at);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = v, sat[warp] = at;
    __syncthreads();
    if (warp == 0) {
        v = sv[lane], at = sat[lane];   /* ARGMAX_THREADS / 32 = 32 warps: one each */
        warp_best(v, at);
        if (lane == 0) ids[blockIdx.x] = at == INT_MAX ? 0 : at;
    }
}

}  // namespace

extern "C" cudaError_t moe_cuda_argmax_rows(const float *rows, int n, int V, int32_t *ids, cudaStream_t stream)
{
    if (n <= 0) return cudaSuccess;
    if (V < 1) return cudaErrorInvalidValue;
    argmax_rows_kernel<<<(unsigned)n, ARGMAX_THREADS, 0, stream>>>(rows, V, ids);
    return cudaGetLastError();
}
