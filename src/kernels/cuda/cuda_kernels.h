/* kernels/cuda/cuda_kernels.h — the CUDA kernels' launchers, callable from C
 * (backend/cuda.c). Each launches its kernel(s) on `stream` and returns the
 * launch's cudaError_t (cudaSuccess, or the first error of a launch or of an
 * earlier asynchronous failure that the launch reported). Pointers are device
 * addresses unless a comment says otherwise.
 *
 * Weights stay in the checkpoint's own format and are dequantized inside the
 * kernels as they are read: float32, float16 or bfloat16 values [rows, K],
 * or MLX affine codes (uint32 words [rows, K·bits/32], element 0 in the
 * lowest bits) with scales and biases [rows, K/group] (w = scale·q + bias,
 * rounded as the CPU's moe_linear_row rounds it: the product, then the sum).
 * Activations are float32 and every product is accumulated in float32. */
#ifndef MOE_KERNELS_CUDA_CUDA_KERNELS_H
#define MOE_KERNELS_CUDA_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether a prompt's projections, expert layers and attention take the
 * tensor cores (bfloat16/half inputs, float32 sums) from 64 tokens: yes,
 * unless MOE_CUDA_TENSOR_CORES=0 is in the environment (read once), which
 * runs every size on the float32 kernels. */
int moe_cuda_tensor_cores(void);

/* The weight formats (the value dtype, or the code width). */
enum { MOE_CUDA_W_F32 = 0, MOE_CUDA_W_F16, MOE_CUDA_W_BF16, MOE_CUDA_W_Q4, MOE_CUDA_W_Q8 };

/* One projection's weights for one or several experts: matrix e of
 * [rows, K] starts at w + e·w_matrix (and s/b + e·s_matrix). */
typedef struct {
    int fmt;              /* MOE_CUDA_W_* */
    int sdtype;           /* scales and biases: a moe_dtype (F32, F16, BF16) */
    int group;            /* quantized: values sharing a scale and a bias */
    int rows, K;
    const void *w;        /* values or codes */
    const void *s, *b;    /* scales, biases (quantized only) */
    size_t w_row, s_row;  /* bytes of one row of w and of s (and of b) */
    size_t w_matrix, s_matrix;
} moe_cuda_weights;

/* Failures found on the device (an operation cannot return them at once
 * without waiting for the device): the first is kept in a fault record
 * [4] ints {code, a, b, c} that the backend reads back and clears. */
enum {
    MOE_CUDA_FAULT_NONE = 0,
    MOE_CUDA_FAULT_ROUTER_LOGIT = 1,   /* a = token, b = expert, c = the logit's bits */
    MOE_CUDA_FAULT_EXPERT_INDEX = 2,   /* a = token, b = choice j, c = the index */
};

/* x [T, K] = rows tokens[t] of the table, dequantized. */
cudaError_t moe_cuda_embed(const moe_cuda_weights *table, const int32_t *tokens, int T, float *x,
                           cudaStream_t stream);

/* y [T, rows] = x [T, K] · Wᵀ. */
cudaError_t moe_cuda_linear(const moe_cuda_weights *W, const float *x, int T, float *y, cudaStream_t stream);

/* y [rows, n] = w ⊙ x / rms(x) row by row (the mean square in double, as on
 * the CPU); y may alias x. */
cudaError_t moe_cuda_rmsnorm(int rows, int n, const float *x, const float *w, float eps, float *y,
                             cudaStream_t stream);

enum { MOE_CUDA_SPLIT_MAX = 8 };
/* src [T, Σ widths] split into n ≤ MOE_CUDA_SPLIT_MAX parts dst[i] [T, widths[i]]
 * (widths and dst are host arrays of device pointers). */
cudaError_t moe_cuda_split_cols(const float *src, int T, int n, const int *widths, float *const *dst,
                                cudaStream_t stream);

/* x clamped to [-limit, limit] (NaN stays NaN). */
cudaError_t moe_cuda_clip(size_t n, float *x, float limit, cudaStream_t stream);

/* x += y */
cudaError_t moe_cuda_add(size_t n, float *x, const float *y, cudaStream_t stream);

/* cos, sin [T, half] of positions pos..pos+T-1 (pos = *dpos when dpos is
 * not NULL: a captured step's position, read on the device): angle =
 * (float)p · inv_freq[i] in float32 (inv_freq [half] computed on the host as
 * the CPU does), its cosine and sine in double rounded to float. */
cudaError_t moe_cuda_rope_angles(int T, int half, const float *inv_freq, int pos, const int32_t *dpos, float *cos_out,
                                 float *sin_out, cudaStream_t stream);

/* Rotate-half RoPE on every head of x [T, heads, hd] in place. */
cudaError_t moe_cuda_rope(int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t,
                          cudaStream_t stream);

/* The KV cache's formats: float32, IEEE half, or 8-bit head blocks
 * (kernels/kv_q8.h: a head's hd codes, then its ⌈hd/32⌉ bf16 scales). */
enum { MOE_CUDA_KV_F32 = 0, MOE_CUDA_KV_F16 = 1, MOE_CUDA_KV_Q8 = 2 };

/* n floats into a cache of format kv at dst: floats, halves (round to
 * nearest even), or n / hd head blocks quantized with the bits of
 * moe_kv_q8_store_ref (n a multiple of hd; hd matters to Q8 only); moved a
 * row further — the bytes n floats take in that format — for each
 * position that *dpos is past pos0 when dpos is not NULL (one token's row
 * of a captured step, whose position is read on the device). */
cudaError_t moe_cuda_store(const float *src, void *dst, size_t n, int kv, int hd, const int32_t *dpos, int pos0,
                           cudaStream_t stream);

/* out [T, D]: out[t] = Σ_j y[t·k + j] (y [T·k, D]), j in order. */
cudaError_t moe_cuda_combine(int T, int k, int D, const float *y, float *out, cudaStream_t stream);

/* A chain: a short list of the small steps above run in order by one block
 * (one launch for what would be a launch each), with the same bits as their
 * own kernels. Fields by kind (unnamed ones unused):
 *   RMSNORM  rows × n: out = in2 ⊙ in / rms(in), f = eps (out may be in)
 *   ADD      n: out += in            CLIP  n: out clamped to ±f
 *   COPY     n: out = in
 *   ANGLES   rows = T, n = half: out, out2 = cos, sin of positions pos0..
 *            (from *dpos when dev_pos), in = inverse frequencies
 *   ROPE     rows = T, n = heads, hd: out rotated by in, in2 (cos, sin)
 *   STORE    n: in into dst in format kv (Q8: heads of hd), moved as
 *            moe_cuda_store moves it when dev_pos
 *   COMBINE  rows = T, n = D, hd = k: out[t] = Σ_j in[t·k + j]
 * Every step's threads finish before the next step starts. */
enum {
    MOE_CUDA_OP_RMSNORM = 1, MOE_CUDA_OP_ADD, MOE_CUDA_OP_CLIP, MOE_CUDA_OP_COPY, MOE_CUDA_OP_ANGLES,
    MOE_CUDA_OP_ROPE, MOE_CUDA_OP_STORE, MOE_CUDA_OP_COMBINE,
};
enum { MOE_CUDA_CHAIN_MAX = 16 };
typedef struct {
    int kind, rows, n, hd, pos0, kv, dev_pos;
    float f;
    const float *in, *in2;
    float *out, *out2;
    void *dst;
} moe_cuda_step_op;
typedef struct {
    int n;
    const int32_t *dpos;     /* the step's position on the device (dev_pos steps), or NULL */
    moe_cuda_step_op op[MOE_CUDA_CHAIN_MAX];
} moe_cuda_chain;
cudaError_t moe_cuda_chain_run(const moe_cuda_chain *c, cudaStream_t stream);

/* Causal grouped-query attention (kernels/attention.h's contract): T
 * queries at pos.. over cache rows 0..pos+T-1 of format kv (MOE_CUDA_KV_*;
 * kv_stride in elements, or bytes for Q8, whose codes are read as they
 * lie, no widened copy); head_dim ≤ 1024. With dpos (not NULL) the position is
 * read on the device, *dpos, and the launch's shape does not depend on it
 * (a captured step: the cache's split across blocks is fixed, its segments'
 * length computed on the device; the same segments, so the same bits, as a
 * call with pos = *dpos). `work` holds moe_cuda_attention_workspace(...)
 * bytes for the same arguments (the partial results of a cache split
 * across blocks; 0 bytes: NULL will do; NULL where more was asked for: the
 * unsplit, slower kernel runs). */
size_t moe_cuda_attention_workspace(int T, int pos, int fixed_split, int heads, int kv_heads, int hd, int kv,
                                    const void *k, const void *v, size_t kv_stride);
cudaError_t moe_cuda_attention(int T, int pos, const int32_t *dpos, int heads, int kv_heads, int hd, float scale,
                               const float *q, int kv, const void *k, const void *v, size_t kv_stride, float *out,
                               void *work, cudaStream_t stream);

/* ids[r] = the index of the first of the largest values of row r of rows
 * [n, V] (NaN never chosen; 0 when none is above -inf): kernels/argmax.h's
 * rule, one block a row. */
cudaError_t moe_cuda_argmax_rows(const float *rows, int n, int V, int32_t *ids, cudaStream_t stream);

enum { MOE_CUDA_MAX_TOP_K = 64 };
/* logits [T, E] → idx, w [T, k]: softmax, the k largest (ties: the lower
 * expert), renormalised when norm. A non-finite logit is a fault. */
cudaError_t moe_cuda_router_topk(const float *logits, int T, int E, int k, int norm, int32_t *idx, float *w,
                                 int *fault, cudaStream_t stream);

/* The SwitchGLU layer: out [T, D] = Σ_j w[t,j] · down_e(silu(gate_e x) ⊙ up_e x),
 * e = idx[t,j]. gate and up [E, I, D], down [E, D, I]. fused: gate and up in
 * one pass with SwiGLU on the way out; else two passes and SwiGLU a third
 * (the same dot products: both give the same bits). An index outside
 * [0, E) is a fault. `work` holds moe_cuda_experts_workspace(...) bytes. */
typedef struct {
    moe_cuda_weights gate, up, down;
    int E, D, I;
    int fused;
    const float *x;
    int T, k;
    const int32_t *idx;
    const float *w;
    float *out;
    void *work;
    int *fault;
    int defer_combine;   /* leave out[t] = Σ_j y[t·k + j] to the caller: y at moe_cuda_experts_pairs */
} moe_cuda_experts_args;

size_t moe_cuda_experts_workspace(int T, int k, int E, int D, int I, int fused);
cudaError_t moe_cuda_experts(const moe_cuda_experts_args *a, cudaStream_t stream);
/* where the weighted pairs' rows y [T·k, D] lie in the workspace */
const float *moe_cuda_experts_pairs(const moe_cuda_experts_args *a);

#ifdef __cplusplus
}
#endif

#endif
