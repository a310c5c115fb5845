/* kernels/cuda/elementwise.cu — the per-token steps of the forward around
 * the matrix work: RMSNorm, RoPE and its angles, clipping, residual adds,
 * splitting a stacked projection's output, and the KV cache's half store.
 * Each rounds as its CPU counterpart in kernels/norm_rope.c does (products
 * and sums one at a time, never fused), so most give the CPU's bits. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

enum { NORM_THREADS = 256 };

/* one block a row: the mean square in double (as the CPU sums it), then
 * y = w · (x · inv) */
__global__ void __launch_bounds__(NORM_THREADS) rmsnorm_rows(int n, const float *x, const float *w, float eps, float *y)
{
    __shared__ double part[NORM_THREADS / 32];
    __shared__ float inv_s;
    const float *xr = x + (size_t)blockIdx.x * n;
    float *yr = y + (size_t)blockIdx.x * n;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += NORM_THREADS) ss += (double)xr[i] * xr[i];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0.0;
        for (int i = 0; i < NORM_THREADS / 32; i++) s += part[i];
        inv_s = (float)(1.0 / sqrt(s / n + (double)eps));
    }
    __syncthreads();
    float inv = inv_s;
    for (int i = threadIdx.x; i < n; i += NORM_THREADS) yr[i] = __fmul_rn(w[i], __fmul_rn(xr[i], inv));
}

struct split_parts {
    int n, row;
    int start[MOE_CUDA_SPLIT_MAX + 1];
    float *dst[MOE_CUDA_SPLIT_MAX];
};

__global__ void split_cols_kernel(const float *src, size_t total, split_parts s)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    size_t t = i / s.row;
    int c = (int)(i % s.row), p = 0;
    while (c >= s.start[p + 1]) p++;
    int width = s.start[p + 1] - s.start[p];
    s.dst[p][t * width + (c - s.start[p])] = src[i];
}

__global__ void clip_kernel(size_t n, float *x, float limit)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        x[i] = v > limit ? limit : v < -limit ? -limit : v;
    }
}

/* Grid-stride over groups of 4 (16-byte loads where both are aligned), then
 * the tail one by one. */
unsigned vec_blocks(size_t n) { size_t b = blocks_for(n / 4 + 1, 256); return (unsigned)(b < 4096 ? b : 4096); }

__global__ void add_kernel(size_t n, float *x, const float *y)
{
    size_t stride = (size_t)gridDim.x * blockDim.x, i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = ((uintptr_t)x | (uintptr_t)y) % 16 ? 0 : n / 4;
    for (size_t i = i0; i < nv; i += stride) {
        float4 a = ((float4 *)x)[i], b = ((const float4 *)y)[i];
        a.x = __fadd_rn(a.x, b.x), a.y = __fadd_rn(a.y, b.y), a.z = __fadd_rn(a.z, b.z), a.w = __fadd_rn(a.w, b.w);
        ((float4 *)x)[i] = a;
    }
    for (size_t i = 4 * nv + i0; i < n; i += stride) x[i] = __fadd_rn(x[i], y[i]);
}

__global__ void rope_angles_kernel(int T, int half, const float *inv_freq, int pos, float *c, float *s)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * half) return;
    float angle = __fmul_rn((float)(pos + i / half), inv_freq[i % half]);
    c[i] = (float)cos((double)angle);
    s[i] = (float)sin((double)angle);
}

__global__ void rope_kernel(int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t)
{
    int half = hd / 2;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * heads * half) return;
    int j = (int)(i % half);
    size_t row = i / half, t = row / heads;
    float *h = x + row * hd;
    float c = cos_t[t * half + j], s = sin_t[t * half + j], a = h[j], b = h[j + half];
    h[j] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    h[j + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

__global__ void store_f16_kernel(const float *src, __half *dst, size_t n)
{
    size_t stride = (size_t)gridDim.x * blockDim.x, i0 = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t nv = (uintptr_t)src % 16 || (uintptr_t)dst % 8 ? 0 : n / 4;
    for (size_t i = i0; i < nv; i += stride) {
        float4 a = ((const float4 *)src)[i];
        __half2 lo = __halves2half2(__float2half_rn(a.x), __float2half_rn(a.y));
        __half2 hi = __halves2half2(__float2half_rn(a.z), __float2half_rn(a.w));
        uint2 u;
        u.x = *(unsigned *)&lo, u.y = *(unsigned *)&hi;
        ((uint2 *)dst)[i] = u;
    }
    for (size_t i = 4 * nv + i0; i < n; i += stride) dst[i] = __float2half_rn(src[i]);
}

}  // namespace

extern "C" {

cudaError_t moe_cuda_rmsnorm(int rows, int n, const float *x, const float *w, float eps, float *y, cudaStream_t stream)
{
    if (rows <= 0) return cudaSuccess;
    rmsnorm_rows<<<rows, NORM_THREADS, 0, stream>>>(n, x, w, eps, y);
    return cudaGetLastError();
}

cudaError_t moe_cuda_split_cols(const float *src, int T, int n, const int *widths, float *const *dst,
                                cudaStream_t stream)
{
    if (n < 1 || n > MOE_CUDA_SPLIT_MAX) return cudaErrorInvalidValue;
    split_parts s;
    s.n = n;
    s.start[0] = 0;
    for (int i = 0; i < n; i++) {
        s.start[i + 1] = s.start[i] + widths[i];
        s.dst[i] = dst[i];
    }
    s.row = s.start[n];
    size_t total = (size_t)T * s.row;
    if (!total) return cudaSuccess;
    split_cols_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(src, total, s);
    return cudaGetLastError();
}

cudaError_t moe_cuda_clip(size_t n, float *x, float limit, cudaStream_t stream)
{
    if (!n) return cudaSuccess;
    clip_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(n, x, limit);
    return cudaGetLastError();
}

cudaError_t moe_cuda_add(size_t n, float *x, const float *y, cudaStream_t stream)
{
    if (!n) return cudaSuccess;
    add_kernel<<<vec_blocks(n), 256, 0, stream>>>(n, x, y);
    return cudaGetLastError();
}

cudaError_t moe_cuda_rope_angles(int T, int half, const float *inv_freq, int pos, float *cos_out, float *sin_out,
                                 cudaStream_t stream)
{
    if (T <= 0 || half <= 0) return cudaSuccess;
    rope_angles_kernel<<<blocks_for((size_t)T * half, 256), 256, 0, stream>>>(T, half, inv_freq, pos, cos_out,
                                                                              sin_out);
    return cudaGetLastError();
}

cudaError_t moe_cuda_rope(int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t,
                          cudaStream_t stream)
{
    size_t n = (size_t)T * heads * (hd / 2);
    if (!n) return cudaSuccess;
    rope_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(T, heads, hd, x, cos_t, sin_t);
    return cudaGetLastError();
}

cudaError_t moe_cuda_store_f16(const float *src, void *dst, size_t n, cudaStream_t stream)
{
    if (!n) return cudaSuccess;
    store_f16_kernel<<<vec_blocks(n), 256, 0, stream>>>(src, (__half *)dst, n);
    return cudaGetLastError();
}

}  // extern "C"
