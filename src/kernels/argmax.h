/* kernels/argmax.h — the greedy choice over a row of logits, one rule for
 * the sampler and for every backend (the CUDA kernel in kernels/cuda/
 * follows it too). */
#ifndef MOE_KERNELS_ARGMAX_H
#define MOE_KERNELS_ARGMAX_H

/* The index of the first of the largest of z[0..n): NaN is never chosen,
 * and 0 is returned when no value is above -inf. */
int moe_argmax_f32(const float *z, int n);

#endif
