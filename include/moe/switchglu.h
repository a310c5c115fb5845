/* moe/switchglu.h — the Mixture-of-Experts expert layer (mlx-lm's SwitchGLU).
 *
 * For tokens x [T, dim], each routed to top_k of num_experts experts with the
 * router's scores:
 *     y[t] = Σ_j scores[t,j] · down_e( silu(gate_e(x[t])) ⊙ up_e(x[t]) ),  e = indices[t,j]
 * with gate/up [E, hidden, dim] and down [E, dim, hidden] (rows = outputs).
 *
 * The layer owns its weights, repacked at creation into a kernel-friendly
 * layout of the same size in bytes. With fuse_gate_up on (the default) gate
 * and up rows are interleaved so one pass computes both and applies SwiGLU
 * before writing; off, they are two gathered matmuls and SwiGLU a third step.
 * Either way the resident weight bytes are the same.
 *
 * A layer lives on one device (config.device): the host's CPU (the
 * default) or the first GPU, where its weights are held in device memory
 * and its forward runs as the CUDA backend's expert layer, the one a model
 * on that GPU runs. The calls below take host pointers on either device. */
#ifndef MOE_SWITCHGLU_H
#define MOE_SWITCHGLU_H

#include <stddef.h>
#include <stdint.h>

#include "moe/device.h"
#include "moe/dtype.h"
#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One projection's weights for all experts, in the stacked layout.
 *  float (bits == 0): weight [E, out, in] of dtype F32, F16 or BF16.
 *  quantized (bits 4 or 8, MLX affine): weight uint32 [E, out, in*bits/32],
 *    element 0 in the lowest bits; scales and biases [E, out, in/group_size]
 *    of dtype (F32, F16 or BF16); w = scale·q + bias. */
typedef struct {
    moe_dtype dtype;
    int bits;
    int group_size;
    const void *weight;
    const void *scales;
    const void *biases;
} moe_expert_weights;

/* How activations meet quantized weights.
 *  MOE_ACT_FLOAT: exact float32 activations (the reference path).
 *  MOE_ACT_INT8:  activations quantized to int8 per weight group, int8 dot
 *                 products where the CPU has them (llama.cpp's approach;
 *                 about 0.5% error per product).
 *  MOE_ACT_INT8X2: the same plus a second int8 digit for the residual, so
 *                 activations carry about 15 bits: two int8 dot products on
 *                 codes split once, close to float accuracy. */
typedef enum { MOE_ACT_FLOAT = 0, MOE_ACT_INT8 = 1, MOE_ACT_INT8X2 = 2 } moe_act_mode;

typedef struct {
    int num_experts;
    int dim;          /* model dimension D: input of gate/up, output of down */
    int hidden;       /* expert hidden size I */
    int fuse_gate_up; /* 1 (default): fused gate-up with SwiGLU epilogue */
    /* Pairs (tokens × top_k) at or above which pairs are grouped by expert
     * before the matmuls; 0 means mlx-lm's 64. */
    int sort_threshold;
    /* A moe_act_mode for quantized experts: MOE_ACT_FLOAT (0, the
     * default: exact float activations), MOE_ACT_INT8 (1) or
     * MOE_ACT_INT8X2 (2); the int8 modes run int8 dot products where the
     * CPU has them, float otherwise (on a GPU always float). */
    int int8_activations;
    /* A moe_device: MOE_DEVICE_CPU (0, the default), MOE_DEVICE_CUDA (the
     * first GPU; creation fails, saying why, where the build has no CUDA
     * or the machine no such GPU) or MOE_DEVICE_AUTO (the GPU where
     * there is one, else the CPU). */
    int device;
} moe_switchglu_config;

typedef struct moe_switchglu moe_switchglu;

/* A config with defaults (fused on, sort threshold 64, on the CPU). */
moe_switchglu_config moe_switchglu_default_config(int num_experts, int dim, int hidden);

/* Allocates the layer for weights of these formats; no weights loaded yet.
 * gate and up must have the same format. The format structs' pointers are
 * ignored here. */
moe_status moe_switchglu_create(const moe_switchglu_config *cfg,
                                const moe_expert_weights *gate_fmt,
                                const moe_expert_weights *up_fmt,
                                const moe_expert_weights *down_fmt,
                                moe_switchglu **out);

/* Copies one expert's three projections (pointers at that expert's slice:
 * weight [out, in…], scales/biases [out, in/group]) into the layer's layout.
 * Lets loaders fill a layer expert by expert without a second full copy. */
moe_status moe_switchglu_load_expert(moe_switchglu *layer, int expert,
                                     const moe_expert_weights *gate,
                                     const moe_expert_weights *up,
                                     const moe_expert_weights *down);

/* create + load_expert for every expert from stacked [E, …] tensors. */
moe_status moe_switchglu_create_stacked(const moe_switchglu_config *cfg,
                                        const moe_expert_weights *gate,
                                        const moe_expert_weights *up,
                                        const moe_expert_weights *down,
                                        moe_switchglu **out);

/* y [T, dim] = the layer applied to x [T, dim]; indices and scores [T, top_k].
 * y may not alias x. Fails (and leaves y unspecified) on an index outside
 * [0, num_experts) or a layer with experts never loaded. Uses all threads
 * (moe_set_num_threads) and the layer's own workspace: one call at a time
 * per layer. On a GPU x, indices and scores are copied to the device, the
 * layer runs there, and y is copied back before the call returns. */
moe_status moe_switchglu_forward(moe_switchglu *layer, const float *x, int tokens,
                                 const int32_t *indices, const float *scores, int top_k,
                                 float *y);

/* The time of one forward, for benchmarks: `iters` calls back to back, call
 * i on routing i % routings of indices and scores [routings, tokens, top_k]
 * (several routings, so that a small layer is not read from a cache no real
 * sequence of tokens would find warm), *seconds their mean. On a GPU the
 * inputs are copied to the device before the clock starts and the output
 * back after it stops: the clock covers the calls' launches and the wait
 * for the last to finish. Every call is timed, the layer's first included
 * (which grows its workspace): warm up with a call first. y [tokens, dim]
 * gets the last call's output, as moe_switchglu_forward gives it. Each
 * routing is checked as the forward checks it before any call runs. */
moe_status moe_switchglu_time(moe_switchglu *layer, const float *x, int tokens, const int32_t *indices,
                              const float *scores, int top_k, int routings, int iters, float *y,
                              double *seconds);

/* Where the layer lives: MOE_DEVICE_CPU or MOE_DEVICE_CUDA (what
 * MOE_DEVICE_AUTO chose). */
moe_device moe_switchglu_device(const moe_switchglu *layer);

/* Switch fusion after creation: the weights are rearranged in place, so the
 * resident bytes do not change (on a GPU both read the same layout: a flag). */
moe_status moe_switchglu_set_fused(moe_switchglu *layer, int fuse_gate_up);
int moe_switchglu_fused(const moe_switchglu *layer);

/* From now on l works in `with`'s workspace (activation buffers, grown on
 * demand) instead of its own: for layers that never run at the same time,
 * such as the layers of one model, so the buffers are held once. Layers on
 * a GPU keep their own (both there: MOE_OK, nothing shared); a layer on
 * the CPU and one on a GPU cannot share (MOE_ERR_INVALID_ARG). */
moe_status moe_switchglu_share_workspace(moe_switchglu *l, moe_switchglu *with);

/* Bytes of expert weights (codes, scales, biases) the layer holds. */
size_t moe_switchglu_weight_bytes(const moe_switchglu *layer);

void moe_switchglu_free(moe_switchglu *layer);

#ifdef __cplusplus
}
#endif

#endif
