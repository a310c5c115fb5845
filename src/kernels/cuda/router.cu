/* kernels/cuda/router.cu — the router's selection on the device: softmax
 * over each token's expert logits, the k largest (ties to the lower
 * expert), renormalised when asked; as layers/router.c does it, summing
 * in the same order, exp taken in double and rounded (the
 * correctly rounded expf that the CPU's libm gives, to within rare last-bit
 * cases). A non-finite logit is recorded as a fault for the backend to
 * report. One warp a token. */
#include <cuda_runtime.h>
#include <limits.h>
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

__device__ inline float exp_f(float x) { return (float)exp((double)x); }

enum { ROUTER_WARPS = 4 };

/* one warp a token: the exps in parallel into shared memory, their sum by
 * one lane in the CPU's order, then k rounds of a warp-wide arg-max (the
 * larger probability, or the lower expert on a tie) taking one choice each */
__global__ void __launch_bounds__(32 * ROUTER_WARPS)
router_kernel(const float *logits, int T, int E, int k, int norm, int32_t *idx_out, float *w_out, int *fault)
{
    extern __shared__ float probs[];   /* [ROUTER_WARPS][E] */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int t = blockIdx.x * ROUTER_WARPS + warp;
    if (t >= T) return;   /* whole warps: only __syncwarp below */
    float *p = probs + (size_t)warp * E;
    const float *z = logits + (size_t)t * E;
    float zmax = -INFINITY;
    int bad = INT_MAX;
    for (int e = lane; e < E; e += 32) {
        float v = z[e];
        if (!isfinite(v)) bad = min(bad, e);
        else zmax = fmaxf(zmax, v);
        p[e] = v;
    }
    for (int o = 16; o > 0; o >>= 1) {
        bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, o));
        zmax = fmaxf(zmax, __shfl_xor_sync(0xffffffffu, zmax, o));
    }
    if (bad != INT_MAX) {
        if (lane == 0 && atomicCAS(fault, 0, MOE_CUDA_FAULT_ROUTER_LOGIT) == 0)
            fault[1] = t, fault[2] = bad, fault[3] = __float_as_int(z[bad]);
        return;
    }
    for (int e = lane; e < E; e += 32) p[e] = exp_f(__fsub_rn(p[e], zmax));
    __syncwarp();
    float sum = 0.0f;
    if (lane == 0)
        for (int e = 0; e < E; e++) sum = __fadd_rn(sum, p[e]);
    sum = __shfl_sync(0xffffffffu, sum, 0);
    for (int e = lane; e < E; e += 32) p[e] = __fdiv_rn(p[e], sum);
    __syncwarp();
    int32_t *io = idx_out + (size_t)t * k;
    float *wo = w_out + (size_t)t * k;
    for (int j = 0; j < k; j++) {
        float bv = -2.0f;   /* below any probability, and below the -1 of a taken one */
        int bi = INT_MAX;
        for (int e = lane; e < E; e += 32)
            if (p[e] > bv) bv = p[e], bi = e;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
        }
        if (lane == 0) io[j] = bi, wo[j] = bv;
        if (lane == (bi & 31)) p[bi] = -1.0f;
        __syncwarp();
    }
    if (norm && lane == 0) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s = __fadd_rn(s, wo[j]);
        for (int j = 0; j < k; j++) wo[j] = __fdiv_rn(wo[j], s);
    }
}

}  // namespace

extern "C" cudaError_t moe_cuda_router_topk(const float *logits, int T, int E, int k, int norm, int32_t *idx, float *w,
                                            int *fault, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (E < 1 || k < 1 || k > E || k > MOE_CUDA_MAX_TOP_K) return cudaErrorInvalidValue;
    size_t smem = sizeof(float) * ROUTER_WARPS * (size_t)E;
    if (smem > 48 * 1024) return cudaErrorInvalidValue;
    router_kernel<<<(T + ROUTER_WARPS - 1) / ROUTER_WARPS, 32 * ROUTER_WARPS, smem, stream>>>(logits, T, E, k, norm,
                                                                                              idx, w, fault);
    return cudaGetLastError();
}
