/* backend/backend.h — what a backend must provide for the forward pass.
 *
 * The forward (models/forward.c) is written once, for every family and every
 * device. It never touches a number itself: each step — embedding lookup,
 * RMSNorm, projection, RoPE, KV write, attention, router, expert layer,
 * residual add — is a call through the moe_backend below, on memory the
 * backend owns. The CPU backend (backend/cpu.c) runs them on the kernel table
 * (kernels/kernels.h) and the layers (layers/); a GPU backend runs them as
 * device kernels on device memory. The forward holds only pointers it got
 * from the backend and passes them back; it never dereferences them, so
 * they may be device addresses.
 *
 * A backend provides, in three groups:
 *  - memory: alloc/free of activation buffers, KV caches and norm weights,
 *    and upload/download between the host and that memory;
 *  - weights: dense projections (moe_bk_linear) and expert layers
 *    (moe_bk_experts), built at load time from a checkpoint's bytes (float or
 *    MLX-affine, moe_expert_weights) a block of rows or one expert at a time,
 *    repacked into the backend's own layout with no second copy kept;
 *  - operations: the steps of the forward, each returning MOE_OK or an error
 *    naming what failed. They may run asynchronously on a device: the
 *    results are defined once download returns.
 * Operations of one backend instance never run concurrently: a model's
 * projections and expert layers may share one workspace.
 *
 * Arguments follow the kernels they stand for: row-major float32
 * activations, [T, n] for T tokens; the KV cache rows of kv_dtype elements. */
#ifndef MOE_BACKEND_BACKEND_H
#define MOE_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/status.h"
#include "moe/switchglu.h"

typedef struct moe_backend moe_backend;
typedef struct moe_bk_linear moe_bk_linear;     /* a dense projection W [out, in] */
typedef struct moe_bk_experts moe_bk_experts;   /* a SwitchGLU layer: E experts' gate, up, down */

struct moe_backend {
    const char *name;           /* "cpu", "cuda" */
    int host_memory;            /* its memory is the host's: download may be skipped */
    int kv_q8;                  /* runs an 8-bit KV cache (MOE_DTYPE_Q8) */
    void *impl;                 /* the backend's own state */

    /* ---- memory ---- */
    /* NULL (error set, naming `what`) when out of memory */
    void *(*alloc)(moe_backend *b, size_t bytes, const char *what);
    void (*free)(moe_backend *b, void *p);
    moe_status (*upload)(moe_backend *b, void *dst, const void *host_src, size_t bytes);
    moe_status (*download)(moe_backend *b, void *host_dst, const void *src, size_t bytes);

    /* ---- weights ---- */
    /* [out, in] of fmt's format (its pointers ignored); `name` (copied)
     * names it in messages; act: how activations meet quantized weights */
    moe_status (*linear_create)(moe_backend *b, int out, int in, const moe_expert_weights *fmt, const char *name,
                                moe_act_mode act, moe_bk_linear **l);
    /* rows [row0, row0 + rows) from row-major source bytes (several
     * checkpoint tensors may fill one projection side by side) */
    moe_status (*linear_load_rows)(moe_backend *b, moe_bk_linear *l, int row0, int rows,
                                   const moe_expert_weights *w);
    size_t (*linear_bytes)(const moe_bk_linear *l);          /* resident weight bytes; 0 for NULL */
    const char *(*linear_name)(const moe_bk_linear *l);      /* the name given at creation */
    void (*linear_free)(moe_backend *b, moe_bk_linear *l);   /* NULL is a no-op */

    moe_status (*experts_create)(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                 const moe_expert_weights *up, const moe_expert_weights *down, moe_bk_experts **x);
    moe_status (*experts_load)(moe_backend *b, moe_bk_experts *x, int expert, const moe_expert_weights *gate,
                               const moe_expert_weights *up, const moe_expert_weights *down);
    /* gate-up fusion switched in place, over the same bytes */
    moe_status (*experts_set_fused)(moe_backend *b, moe_bk_experts *x, int fused);
    int (*experts_fused)(const moe_bk_experts *x);
    size_t (*experts_bytes)(const moe_bk_experts *x);
    void (*experts_free)(moe_backend *b, moe_bk_experts *x);

    /* ---- operations of the forward pass ---- */
    /* x [T, in] = rows tokens[t] (host ids, checked) of the table */
    moe_status (*embed)(moe_backend *b, const moe_bk_linear *table, const int32_t *tokens, int T, float *x);
    /* y [rows, n] = w ⊙ x / rms(x) row by row; y may alias x */
    moe_status (*rmsnorm)(moe_backend *b, int rows, int n, const float *x, const float *w, float eps, float *y);
    /* y [T, out] = x [T, in] · Wᵀ */
    moe_status (*linear)(moe_backend *b, moe_bk_linear *l, const float *x, int T, float *y);
    /* the columns of src [T, Σ widths] into n parts dst[i] [T, widths[i]] */
    moe_status (*split_cols)(moe_backend *b, const float *src, int T, int n, const int *widths, float *const *dst);
    /* x clamped to [-limit, limit] */
    moe_status (*clip)(moe_backend *b, size_t n, float *x, float limit);
    /* cos, sin [T, hd/2] of positions pos..pos+T-1, as transformers computes them */
    moe_status (*rope_angles)(moe_backend *b, int T, int hd, double theta, int pos, float *cos_out, float *sin_out);
    /* rotate-half RoPE on every head of x [T, heads, hd] in place */
    moe_status (*rope)(moe_backend *b, int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t);
    /* n floats (heads of hd) into a cache of kv_dtype at dst */
    moe_status (*kv_store)(moe_backend *b, moe_dtype kv_dtype, const float *src, void *dst, size_t n, int hd);
    /* causal grouped-query attention of T queries at pos.. over cache rows
     * 0..pos+T-1 (kernels/attention.h's contract) */
    moe_status (*attention)(moe_backend *b, int T, int pos, int heads, int kv_heads, int hd, float scale,
                            const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                            float *out);
    /* x += y */
    moe_status (*add)(moe_backend *b, size_t n, float *x, const float *y);
    /* logits [T, E] → the top k experts [T, k] and their weights (softmax,
     * renormalised when norm) */
    moe_status (*router_topk)(moe_backend *b, const float *logits, int T, int E, int k, int norm, int32_t *idx,
                              float *w);
    /* y [T, D] = Σ_j w[t, j] · expert_idx[t, j](x[t]) */
    moe_status (*experts)(moe_backend *b, moe_bk_experts *x, const float *in, int T, const int32_t *idx,
                          const float *w, int k, float *out);
    /* host_ids[r] = moe_argmax_f32 of row r of rows [n, V] (kernels/argmax.h),
     * into host memory: a greedy choice that brings back only the ids */
    moe_status (*argmax_rows)(moe_backend *b, const float *rows, int n, int V, int32_t *host_ids);

    /* ---- a step (optional: NULL where every operation simply runs) ----
     * The forward brackets the operations of one sequence's step, from the
     * embedding to the last layer, with step_begin(b, key, T, pos) and
     * step_end(b): T rows at positions pos.. of the sequence whose context
     * is `key`. A backend may then record the step's operations once and
     * replay the recording for later steps of the same key, T and
     * operations (the CUDA backend's graphs, for T = 1). A replayed step may
     * differ from the recorded one only in pos and the token ids: the
     * rotation angles' positions, attention's pos and the KV store's
     * destination, which moves one row (n elements) a position. Operations
     * may run or merely be noted until step_end, which returns once the
     * step's work is queued; memory entries (alloc, free, upload, download,
     * sync) inside a step end its recording early. A step left without
     * step_end (an operation failed) is dropped by the next step_begin. */
    moe_status (*step_begin)(moe_backend *b, const void *key, int T, int pos);
    moe_status (*step_end)(moe_backend *b);

    /* returns once every operation issued so far has finished (timing) */
    moe_status (*sync)(moe_backend *b);
    void (*destroy)(moe_backend *b);
};

/* The CPU backend (backend/cpu.c): host memory, the kernel table this CPU
 * runs. NULL when out of memory. */
moe_backend *moe_backend_cpu_create(void);

/* The CUDA backend (backend/cuda.c, built with -DMOE_CUDA=ON): device
 * memory on the first GPU, the kernels of kernels/cuda/. NULL, with the
 * reason as the error (no CUDA in this build, no GPU, a GPU older than
 * compute capability 9.0), when it cannot run. */
moe_backend *moe_backend_cuda_create(void);

/* The first GPU's free and total memory in bytes (cudaMemGetInfo), for the
 * memory check before a model loads there; an error, both 0, when there
 * is none to ask (no CUDA in this build, no GPU). */
moe_status moe_cuda_memory_info(size_t *free_bytes, size_t *total_bytes);

/* The operations of the forward grouped by what they compute, for a
 * profile of where a step's time goes (backend/profile.c). */
typedef enum {
    MOE_OP_EMBED, MOE_OP_NORM, MOE_OP_QKV, MOE_OP_ATTN_OUT, MOE_OP_ROPE, MOE_OP_KV_STORE, MOE_OP_ATTENTION,
    MOE_OP_ROUTER, MOE_OP_EXPERTS, MOE_OP_LM_HEAD, MOE_OP_OTHER, MOE_OP_COUNT
} moe_op_kind;

/* Wraps `inner` (taking ownership) so that every operation is timed,
 * waiting for it to finish (sync) before the clock stops; NULL when out of
 * memory (inner destroyed). */
moe_backend *moe_backend_profile_wrap(moe_backend *inner);

/* Seconds and calls of each kind since the last reset; 0 when b does not
 * profile. */
int moe_backend_profile_read(const moe_backend *b, double seconds[MOE_OP_COUNT], long calls[MOE_OP_COUNT]);
void moe_backend_profile_reset(moe_backend *b);
const char *moe_op_kind_name(moe_op_kind k);

#endif
