/* kernels/norm_rope.h — RMSNorm and rotary position embedding, in plain C
 * (per token they are O(D), far below the matmuls; SIMD versions can join
 * the kernel table when a profile asks for them). */
#ifndef MOE_KERNELS_NORM_ROPE_H
#define MOE_KERNELS_NORM_ROPE_H

/* y[i] = w[i] · x[i] / sqrt(mean(x²) + eps); y may alias x. */
void moe_rmsnorm(int n, const float *x, const float *w, float eps, float *y);

/* cos/sin [head_dim/2] for one position, computed as Hugging Face does in
 * float32: inv_freq[i] = 1 / theta^(2i/head_dim), angle = pos · inv_freq. */
void moe_rope_angles(int head_dim, double theta, int pos, float *cos_out, float *sin_out);

/* Rotate-half RoPE on one head in place: for i < h = head_dim/2,
 * (x[i], x[i+h]) ← (x[i]·c − x[i+h]·s, x[i+h]·c + x[i]·s). */
void moe_rope_apply(int head_dim, float *x, const float *cos_t, const float *sin_t);

/* The same over `rows` rows of n (x, y [rows][n]; y may alias x), the rows
 * split across threads when there are enough of them to pay for it. */
void moe_rmsnorm_rows(int rows, int n, const float *x, const float *w, float eps, float *y);

/* RoPE on every head of `rows` rows of `heads` heads (x [rows][heads][hd]),
 * row r rotated by cos/sin [rows][hd/2]; threads as above. */
void moe_rope_rows(int rows, int heads, int head_dim, float *x, const float *cos_t, const float *sin_t);

#endif
