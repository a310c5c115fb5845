/* kernels/cuda/weights.cuh — reading weights in the checkpoint's format on
 * the device: eight consecutive values of a row at a time, dequantized on
 * the way (never a dequantized copy in memory), and a warp's dot product of
 * a row with float32 activations. Shared by the projection, embedding and
 * expert kernels. */
#ifndef MOE_KERNELS_CUDA_WEIGHTS_CUH
#define MOE_KERNELS_CUDA_WEIGHTS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "kernels/cuda/cuda_kernels.h"
#include "moe/dtype.h"

/* One matrix's rows, resolved for an expert. */
struct wrows {
    const unsigned char *w, *s, *b;
    size_t w_row, s_row;
    int K, group, sdtype;
    int vec;    /* K % 8 == 0: rows are read 16 bytes at a time */
};

__host__ __device__ inline wrows wrows_of(const moe_cuda_weights &W, int e)
{
    wrows r;
    r.w = (const unsigned char *)W.w + (size_t)e * W.w_matrix;
    r.s = W.s ? (const unsigned char *)W.s + (size_t)e * W.s_matrix : nullptr;
    r.b = W.b ? (const unsigned char *)W.b + (size_t)e * W.s_matrix : nullptr;
    r.w_row = W.w_row, r.s_row = W.s_row;
    r.K = W.K, r.group = W.group, r.sdtype = W.sdtype;
    r.vec = W.K % 8 == 0;
    return r;
}

__device__ inline float bf16_bits_to_f32(unsigned short h) { return __uint_as_float((unsigned)h << 16); }
__device__ inline float f16_bits_to_f32(unsigned short h) { return __half2float(__ushort_as_half(h)); }

__device__ inline float scale_at(const unsigned char *p, int sdtype, size_t i)
{
    if (sdtype == MOE_DTYPE_F32) return ((const float *)p)[i];
    unsigned short h = ((const unsigned short *)p)[i];
    return sdtype == MOE_DTYPE_F16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
}

/* One value of row r at column k (the scalar path, for float rows whose
 * length is not a multiple of 8). */
template <int F>
__device__ inline float value_at(const wrows &m, int r, int k)
{
    const unsigned char *row = m.w + (size_t)r * m.w_row;
    if (F == MOE_CUDA_W_F32) return ((const float *)row)[k];
    if (F == MOE_CUDA_W_F16) return f16_bits_to_f32(((const unsigned short *)row)[k]);
    return bf16_bits_to_f32(((const unsigned short *)row)[k]);
}

/* out[0..8) = row r's values k..k+7 (k a multiple of 8); zeros past K. */
template <int F>
__device__ inline void fetch8(const wrows &m, int r, int k, float out[8])
{
    const unsigned char *row = m.w + (size_t)r * m.w_row;
    if (F == MOE_CUDA_W_Q4 || F == MOE_CUDA_W_Q8) {
        /* quantized rows are whole groups of ≥ 32: always 8 at a time */
        size_t g = (size_t)r * (size_t)(m.K / m.group) + (size_t)(k / m.group);
        float scale = scale_at(m.s, m.sdtype, g), bias = scale_at(m.b, m.sdtype, g);
        if (F == MOE_CUDA_W_Q4) {
            uint32_t word = ((const uint32_t *)row)[k / 8];
#pragma unroll
            for (int i = 0; i < 8; i++) out[i] = __fadd_rn(__fmul_rn(scale, (float)((word >> (4 * i)) & 15u)), bias);
        } else {
            uint2 words = ((const uint2 *)row)[k / 8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                out[i] = __fadd_rn(__fmul_rn(scale, (float)((words.x >> (8 * i)) & 255u)), bias);
                out[4 + i] = __fadd_rn(__fmul_rn(scale, (float)((words.y >> (8 * i)) & 255u)), bias);
            }
        }
        return;
    }
    if (!m.vec) {
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = k + i < m.K ? value_at<F>(m, r, k + i) : 0.0f;
        return;
    }
    if (k >= m.K) {
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = 0.0f;
        return;
    }
    if (F == MOE_CUDA_W_F32) {
        float4 a = ((const float4 *)row)[k / 4], b = ((const float4 *)row)[k / 4 + 1];
        out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
        out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
        return;
    }
    uint4 u = ((const uint4 *)row)[k / 8];
    unsigned int words[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
    for (int i = 0; i < 4; i++) {
        unsigned short lo = (unsigned short)(words[i] & 0xffffu), hi = (unsigned short)(words[i] >> 16);
        out[2 * i] = F == MOE_CUDA_W_F16 ? f16_bits_to_f32(lo) : bf16_bits_to_f32(lo);
        out[2 * i + 1] = F == MOE_CUDA_W_F16 ? f16_bits_to_f32(hi) : bf16_bits_to_f32(hi);
    }
}

/* Eight activations x[k..k+8), zeros past K (vec: one 32-byte read). */
__device__ inline void load_x8(const float *x, int k, int K, int vec, float out[8])
{
    if (vec && k < K) {
        float4 a = ((const float4 *)(x + k))[0], b = ((const float4 *)(x + k))[1];
        out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
        out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
        return;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) out[i] = k + i < K ? x[k + i] : 0.0f;
}

__device__ inline float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* The dot products of row r with M activation rows x + t·ldx (t < M), by
 * one warp: lanes take 8 columns each in turn, then a butterfly sum (every
 * lane gets the results). The same order wherever it is called, so the
 * fused and unfused passes give the same bits. */
template <int F, int M>
__device__ inline void warp_dots(const wrows &m, int r, const float *x, size_t ldx, int tokens, float acc[M])
{
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int t = 0; t < M; t++) acc[t] = 0.0f;
    for (int k = lane * 8; k < m.K; k += 256) {
        float wv[8];
        fetch8<F>(m, r, k, wv);
#pragma unroll
        for (int t = 0; t < M; t++) {
            if (t >= tokens) break;
            float xv[8];
            load_x8(x + (size_t)t * ldx, k, m.K, m.vec, xv);
#pragma unroll
            for (int i = 0; i < 8; i++) acc[t] = __fmaf_rn(wv[i], xv[i], acc[t]);
        }
    }
#pragma unroll
    for (int t = 0; t < M; t++) acc[t] = warp_sum(acc[t]);
}

/* silu(g)·u, rounded step by step (the same bits in every kernel). */
__device__ inline float swiglu(float g, float u)
{
    return __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u);
}

/* Launches kern<F> for the weights' format: a switch in one place. */
#define MOE_CUDA_FORMAT_SWITCH(fmt, F, ...)                                       \
    switch (fmt) {                                                                \
    case MOE_CUDA_W_F32: { constexpr int F = MOE_CUDA_W_F32; __VA_ARGS__; } break; \
    case MOE_CUDA_W_F16: { constexpr int F = MOE_CUDA_W_F16; __VA_ARGS__; } break; \
    case MOE_CUDA_W_BF16: { constexpr int F = MOE_CUDA_W_BF16; __VA_ARGS__; } break; \
    case MOE_CUDA_W_Q4: { constexpr int F = MOE_CUDA_W_Q4; __VA_ARGS__; } break;   \
    default: { constexpr int F = MOE_CUDA_W_Q8; __VA_ARGS__; } break;              \
    }

#endif
