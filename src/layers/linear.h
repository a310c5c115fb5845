/* layers/linear.h — a dense projection y = x·Wᵀ (attention q/k/v/o, the
 * router, the embedding table and lm_head), float or MLX-quantized.
 *
 * W [out, in] is held in the kernels' panel layout (kernels/kernels.h), the
 * same bytes as the checkpoint: it is the E = 1 case of the expert layer's
 * storage, and runs the same kernels — matrix-vector products straight on
 * the packed weights for a few tokens, a register-tiled GEMM on dequantized
 * panels for many, or int8 dot products when int8 activations are on. */
#ifndef MOE_LAYERS_LINEAR_H
#define MOE_LAYERS_LINEAR_H

#include <stddef.h>

#include "moe/switchglu.h"

typedef struct moe_linear moe_linear;

/* Allocates [out, in] weights of fmt's format (its pointers are ignored).
 * `name` (copied) names the projection in messages. */
moe_status moe_linear_create(int out, int in, const moe_expert_weights *fmt, const char *name,
                             moe_linear **result);

/* Copies rows [row0, row0 + rows) from a row-major source (weight
 * [rows, in…], scales/biases [rows, in/group]); row0 and rows must be
 * multiples of 16 unless the block ends the matrix. Fills several checkpoint
 * tensors into one projection (q, k and v side by side). */
moe_status moe_linear_load_rows(moe_linear *l, int row0, int rows, const moe_expert_weights *w);

/* y [T, out] = x [T, in] · Wᵀ. Every row must have been loaded. Uses all
 * threads; one call at a time per projection (it owns its workspace). */
moe_status moe_linear_forward(moe_linear *l, const float *x, int tokens, float *y);

/* Row r of W as float (an embedding lookup). */
void moe_linear_row(const moe_linear *l, int r, float *dst);

/* How activations meet quantized weights (float weights ignore it). */
void moe_linear_set_activations(moe_linear *l, moe_act_mode mode);

/* From now on l works in `with`'s token-side buffers: for projections that
 * never run at the same time (those of one model), held once. */
moe_status moe_linear_share_workspace(moe_linear *l, moe_linear *with);

int moe_linear_out(const moe_linear *l);
const char *moe_linear_name(const moe_linear *l);   /* as given at creation */
int moe_linear_in(const moe_linear *l);
size_t moe_linear_weight_bytes(const moe_linear *l);   /* 0 for NULL */
void moe_linear_free(moe_linear *l);

#endif
