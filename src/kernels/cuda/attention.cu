/* kernels/cuda/attention.cu — causal grouped-query attention over the KV
 * cache (float32 or half elements), kernels/attention.h's contract.
 *
 * The simple correct version: one block of 4 warps per (query, head); each
 * warp walks every 4th key, its lanes splitting the head's dimensions
 * (lane + 32·i) for the q·k sum and for its share of the output, with the
 * softmax kept online (running maximum and sum), then the four warps'
 * partial results are merged. Scores, softmax and sums are float32 whatever
 * the cache holds. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

enum { WARPS = 4 };

template <bool HALF>
__device__ inline float kv_at(const void *p, size_t i)
{
    if (HALF) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* NV = ⌈hd/32⌉ values of the head per lane */
template <int NV, bool HALF>
__global__ void __launch_bounds__(32 * WARPS)
attention_kernel(int T, int pos, int heads, int group, int hd, float scale, const float *q, const void *k,
                 const void *v, size_t kv_stride, float *out)
{
    __shared__ float part_m[WARPS], part_l[WARPS];
    extern __shared__ float part_acc[];   /* [WARPS][hd] */
    int t = blockIdx.x / heads, h = blockIdx.x % heads, kvh = h / group;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float *qh = q + ((size_t)t * heads + h) * hd;
    float qv[NV], acc[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int d = lane + 32 * i;
        qv[i] = d < hd ? qh[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    int keys = pos + t + 1;
    for (int j = warp; j < keys; j += WARPS) {
        size_t row = (size_t)j * kv_stride + (size_t)kvh * hd;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) s = __fmaf_rn(qv[i], kv_at<HALF>(k, row + d), s);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * corr + p * kv_at<HALF>(v, row + d);
        }
        m = m_new;
    }
    if (lane == 0) part_m[warp] = m, part_l[warp] = l;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int d = lane + 32 * i;
        if (d < hd) part_acc[warp * hd + d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, part_m[w]);
    float L = 0.0f, f[WARPS];
    for (int w = 0; w < WARPS; w++) {
        f[w] = part_l[w] > 0.0f ? expf(part_m[w] - M) : 0.0f;
        L += part_l[w] * f[w];
    }
    float *o = out + ((size_t)t * heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += 32 * WARPS) {
        float s = 0.0f;
        for (int w = 0; w < WARPS; w++) s += part_acc[w * hd + d] * f[w];
        o[d] = s / L;
    }
}

template <int NV>
cudaError_t launch(int T, int pos, int heads, int kv_heads, int hd, float scale, const float *q, int kv_f16,
                   const void *k, const void *v, size_t kv_stride, float *out, cudaStream_t stream)
{
    size_t smem = sizeof(float) * WARPS * (size_t)hd;
    unsigned blocks = (unsigned)((size_t)T * heads);
    if (kv_f16)
        attention_kernel<NV, true><<<blocks, 32 * WARPS, smem, stream>>>(T, pos, heads, heads / kv_heads, hd, scale, q,
                                                                          k, v, kv_stride, out);
    else
        attention_kernel<NV, false><<<blocks, 32 * WARPS, smem, stream>>>(T, pos, heads, heads / kv_heads, hd, scale,
                                                                           q, k, v, kv_stride, out);
    return cudaGetLastError();
}

}  // namespace

extern "C" cudaError_t moe_cuda_attention(int T, int pos, int heads, int kv_heads, int hd, float scale, const float *q,
                                          int kv_f16, const void *k, const void *v, size_t kv_stride, float *out,
                                          cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (hd < 1 || hd > 1024 || kv_heads < 1 || heads % kv_heads) return cudaErrorInvalidValue;
    if (hd <= 32) return launch<1>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 64) return launch<2>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 128) return launch<4>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 256) return launch<8>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 512) return launch<16>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    return launch<32>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
}
