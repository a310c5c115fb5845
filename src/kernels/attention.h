/* kernels/attention.h — causal multi-head attention over a float32 KV cache,
 * for chunked prefill (T queries) and decode (T = 1), with grouped-query
 * heads (several query heads share one kv head). */
#ifndef MOE_KERNELS_ATTENTION_H
#define MOE_KERNELS_ATTENTION_H

#include <stddef.h>

enum { MOE_ATTENTION_MAX_HEAD_DIM = 1024 };

/* out[t][h][:] = Σ_j softmax_j(q[t][h]·k[j][kvh] · scale) · v[j][kvh] over j ≤ pos0 + t,
 * kvh = h / (heads / kv_heads), for t < T queries at positions pos0..pos0+T-1.
 * q [T][heads][head_dim] (already normalised and rotated), out the same shape (may not alias q).
 * k, v: the cache, row j at k + j*kv_stride floats, holding kv_heads*head_dim floats
 * (rows 0 .. pos0+T-1 valid). Threads: all (moe_parallel_run), split over (token, head) work items.
 *
 * Preconditions (not checked): T ≥ 0, pos0 ≥ 0, kv_heads ≥ 1 divides heads,
 * 1 ≤ head_dim ≤ MOE_ATTENTION_MAX_HEAD_DIM, kv_stride ≥ kv_heads·head_dim.
 * Flash-style: softmax online over blocks of keys, no [T, keys] matrix;
 * the inner products are the table's attn_tile and attn_rows (kernels.h). */
void moe_attention_causal(int T, int pos0, int heads, int kv_heads, int head_dim, float scale,
                          const float *q, const float *k, const float *v, size_t kv_stride, float *out);

#endif
