/* kernels/cuda/weights.cuh — reading weights in the checkpoint's format on
 * the device: eight consecutive values of a row at a time, dequantized on
 * the way (never a dequantized copy in memory), and a warp's dot products
 * of rows with float32 activations. Shared by the projection, embedding and
 * expert kernels. */
#ifndef MOE_KERNELS_CUDA_WEIGHTS_CUH
#define MOE_KERNELS_CUDA_WEIGHTS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "kernels/cuda/codes.cuh"
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
            for (int i = 0; i < 8; i++) out[i] = __fadd_rn(__fmul_rn(scale, code_of<4>(word, i)), bias);
        } else {
            uint2 words = ((const uint2 *)row)[k / 8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                out[i] = __fadd_rn(__fmul_rn(scale, code_of<8>(words.x, i)), bias);
                out[4 + i] = __fadd_rn(__fmul_rn(scale, code_of<8>(words.y, i)), bias);
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
__device__ inline void warp_dots8(const wrows &m, int r, const float *x, size_t ldx, int tokens, float acc[M])
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
}

/* ---- quantized rows, 8 values a lane a step ----
 * Decode reads each weight once, so its speed is how many bytes are in
 * flight and what it costs to meet them with the activations. A step is 256
 * values of a row: lane l takes values 8l..8l+7 (one 32-bit word of 4-bit
 * codes, two of 8-bit ones), so the warp's code loads are one contiguous
 * stretch and so are its loads of x (1 KB a step, float4 a lane: 4 cache
 * wavefronts an instruction; when a lane took 32 values of its own, each
 * float4 of x touched 32 lines, and those wavefronts, counted, came to about
 * the time the kernels took on an H100). A warp issues the loads of 8 steps
 * (2048 values) of every row before it uses any. 8 values lie in one group
 * (groups are 32, 64 or 128 values, aligned), so a step needs one scale and
 * one bias:
 * Σ (s·q + b)·x = s·Σ q·x + b·Σ x. Activation rows must be 16-byte aligned
 * (float4 reads), which rows of K % 32 == 0 floats from the backend's
 * allocations are. */
enum { QROW_SPAN = 256, QROW_STEPS = 8 };   /* a warp's step; steps in flight */

/* code v (0 ≤ v < 8) of a lane's 8 values: Q4 one word, Q8 two */
template <int F>
__device__ inline float q_code(uint2 w, int v)
{
    if (F == MOE_CUDA_W_Q4) return code_of<4>(w.x, v);
    return code_of<8>(v < 4 ? w.x : w.y, v % 4);
}

/* The dot products of R rows (matrix m[i], row r[i]) with M activation rows
 * x + t·ldx, by one warp, every lane getting the results; all R rows'
 * loads of a stretch of 2048 values are issued before any is used. Each
 * row's codes are turned to floats once for all M activation rows. Float
 * rows take warp_dots8 row by row. */
template <int F, int M, int R>
__device__ inline void warp_dots(const wrows (&m)[R], const int (&r)[R], const float *x, size_t ldx, int tokens,
                                 float (&acc)[R][M])
{
    if (F != MOE_CUDA_W_Q4 && F != MOE_CUDA_W_Q8) {
#pragma unroll
        for (int i = 0; i < R; i++) warp_dots8<F, M>(m[i], r[i], x, ldx, tokens, acc[i]);
    } else {
        int lane = threadIdx.x & 31, K = m[0].K;
#pragma unroll
        for (int i = 0; i < R; i++)
#pragma unroll
            for (int t = 0; t < M; t++) acc[i][t] = 0.0f;
        for (int base = 0; base < K; base += QROW_SPAN * QROW_STEPS) {
            uint2 u[R][QROW_STEPS];
            float sc[R][QROW_STEPS], bi[R][QROW_STEPS];
#pragma unroll
            for (int s = 0; s < QROW_STEPS; s++) {
                int k = base + s * QROW_SPAN + lane * 8;
#pragma unroll
                for (int i = 0; i < R; i++) {
                    u[i][s] = make_uint2(0, 0), sc[i][s] = bi[i][s] = 0.0f;
                    if (k >= K) continue;
                    const unsigned char *row = m[i].w + (size_t)r[i] * m[i].w_row;
                    if (F == MOE_CUDA_W_Q4) u[i][s].x = __ldcs((const unsigned *)(row + (size_t)k / 2));
                    else u[i][s] = __ldcs((const uint2 *)(row + (size_t)k));
                    size_t g = (size_t)r[i] * (size_t)(K / m[i].group) + (size_t)(k / m[i].group);
                    sc[i][s] = scale_at(m[i].s, m[i].sdtype, g);
                    bi[i][s] = scale_at(m[i].b, m[i].sdtype, g);
                }
            }
#pragma unroll
            for (int s = 0; s < QROW_STEPS; s++) {
                int k = base + s * QROW_SPAN + lane * 8;
                if (k >= K) continue;
                float qv[R][8];
#pragma unroll
                for (int i = 0; i < R; i++)
#pragma unroll
                    for (int v = 0; v < 8; v++) qv[i][v] = q_code<F>(u[i][s], v);
#pragma unroll
                for (int t = 0; t < M; t++) {
                    if (t >= tokens) break;
                    /* per activation row: Σx and each weight row's Σq·x,
                     * two sums each, value by value in order v = 0, 1, … */
                    float xv[8];
                    load_x8(x + (size_t)t * ldx, k, K, 1, xv);
                    float sx[2] = { 0.0f, 0.0f }, sq[R][2];
#pragma unroll
                    for (int i = 0; i < R; i++) sq[i][0] = sq[i][1] = 0.0f;
#pragma unroll
                    for (int v = 0; v < 8; v++) {
                        sx[v & 1] = __fadd_rn(sx[v & 1], xv[v]);
#pragma unroll
                        for (int i = 0; i < R; i++) sq[i][v & 1] = __fmaf_rn(qv[i][v], xv[v], sq[i][v & 1]);
                    }
                    float xs = __fadd_rn(sx[0], sx[1]);
#pragma unroll
                    for (int i = 0; i < R; i++) {
                        float qs = __fadd_rn(sq[i][0], sq[i][1]);
                        acc[i][t] = __fmaf_rn(bi[i][s], xs, __fmaf_rn(sc[i][s], qs, acc[i][t]));
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++)
#pragma unroll
        for (int t = 0; t < M; t++) acc[i][t] = warp_sum(acc[i][t]);
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
