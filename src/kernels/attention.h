/* kernels/attention.h — causal multi-head attention over a KV cache of
 * float32, IEEE half or 8-bit (kernels/kv_q8.h) elements, for chunked
 * prefill (T queries) and decode
 * (T = 1), with grouped-query heads (several query heads share one kv head);
 * and the store of new keys and values into such a cache. */
#ifndef MOE_KERNELS_ATTENTION_H
#define MOE_KERNELS_ATTENTION_H

#include <stddef.h>

#include "moe/dtype.h"

enum { MOE_ATTENTION_MAX_HEAD_DIM = 1024 };

/* out[t][h][:] = Σ_j softmax_j(q[t][h]·k[j][kvh] · scale) · v[j][kvh] over j ≤ pos0 + t,
 * kvh = h / (heads / kv_heads), for t < T queries at positions pos0..pos0+T-1.
 * q [T][heads][head_dim] (already normalised and rotated), out the same shape (may not alias q).
 * k, v: the cache, elements of kv_dtype (MOE_DTYPE_F32, MOE_DTYPE_F16 or MOE_DTYPE_Q8), row j
 * at k + j*kv_stride elements, holding kv_heads*head_dim elements (rows 0 .. pos0+T-1 valid);
 * a Q8 row is kv_heads head blocks (kernels/kv_q8.h) and kv_stride counts bytes (one a code).
 * Queries, outputs, softmax and sums are float32 whatever the cache holds: a half cache
 * gives the bits a float32 cache holding the same values gives (half the bytes read); a Q8
 * cache, within float rounding of a float32 cache holding its dequantized values.
 * Threads: all (moe_parallel_run), split over (token, head) work items.
 *
 * Preconditions (not checked): T ≥ 0, pos0 ≥ 0, kv_heads ≥ 1 divides heads,
 * 1 ≤ head_dim ≤ MOE_ATTENTION_MAX_HEAD_DIM, kv_stride ≥ kv_heads·head_dim
 * (Q8: ≥ moe_kv_row_bytes), kv_dtype F32, F16 or Q8.
 * Flash-style: softmax online over blocks of keys, no [T, keys] matrix;
 * the inner products are the table's attn_tile and attn_rows (kernels.h). */
void moe_attention_causal(int T, int pos0, int heads, int kv_heads, int head_dim, float scale,
                          const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                          float *out);

/* Writes n floats from src into a cache of kv_dtype at dst (n elements):
 * F32 copies them; F16 rounds each to nearest even (overflow to inf, NaN
 * kept a quiet NaN): the bits of moe_f32_to_f16, by the table's f32_to_f16
 * (the F16C instruction where the ISA has it); Q8 quantizes n / head_dim
 * head vectors into as many head blocks (n a multiple of head_dim; the bits
 * of moe_kv_q8_store_ref, by the table's kv_q8_store). head_dim matters to
 * Q8 only: its groups restart at each head. */
void moe_kv_store(moe_dtype kv_dtype, const float *src, void *dst, size_t n, int head_dim);

#endif
