/* kernels/cuda/router.cu — the router's selection on the device: softmax
 * over each token's expert logits, the k largest (ties to the lower
 * expert), renormalised when asked; as layers/router.c does it, one thread
 * a token summing in the same order, exp taken in double and rounded (the
 * correctly rounded expf that the CPU's libm gives, to within rare last-bit
 * cases). A non-finite logit is recorded as a fault for the backend to
 * report. */
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

__device__ inline float exp_f(float x) { return (float)exp((double)x); }

__global__ void router_kernel(const float *logits, int T, int E, int k, int norm, int32_t *idx_out, float *w_out,
                              int *fault)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= T) return;
    const float *z = logits + (size_t)t * E;
    float zmax = z[0];
    for (int e = 0; e < E; e++) {
        if (!isfinite(z[e])) {
            if (atomicCAS(fault, 0, MOE_CUDA_FAULT_ROUTER_LOGIT) == 0)
                fault[1] = t, fault[2] = e, fault[3] = __float_as_int(z[e]);
            return;
        }
        zmax = fmaxf(zmax, z[e]);
    }
    float sum = 0.0f;
    for (int e = 0; e < E; e++) sum = __fadd_rn(sum, exp_f(__fsub_rn(z[e], zmax)));
    int32_t idx[MOE_CUDA_MAX_TOP_K];
    float val[MOE_CUDA_MAX_TOP_K];
    int n = 0;
    for (int e = 0; e < E; e++) {
        float p = __fdiv_rn(exp_f(__fsub_rn(z[e], zmax)), sum);
        /* insert into the descending list; an equal value stays behind
         * the earlier (lower) expert */
        int at = n;
        while (at > 0 && val[at - 1] < p) at--;
        if (at >= k) continue;
        int last = n < k ? n : k - 1;
        for (int i = last; i > at; i--) idx[i] = idx[i - 1], val[i] = val[i - 1];
        idx[at] = e, val[at] = p;
        if (n < k) n++;
    }
    if (norm) {
        float s = 0.0f;
        for (int j = 0; j < k; j++) s = __fadd_rn(s, val[j]);
        for (int j = 0; j < k; j++) val[j] = __fdiv_rn(val[j], s);
    }
    for (int j = 0; j < k; j++) idx_out[(size_t)t * k + j] = idx[j], w_out[(size_t)t * k + j] = val[j];
}

}  // namespace

extern "C" cudaError_t moe_cuda_router_topk(const float *logits, int T, int E, int k, int norm, int32_t *idx, float *w,
                                            int *fault, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (E < 1 || k < 1 || k > E || k > MOE_CUDA_MAX_TOP_K) return cudaErrorInvalidValue;
    router_kernel<<<(T + 127) / 128, 128, 0, stream>>>(logits, T, E, k, norm, idx, w, fault);
    return cudaGetLastError();
}
