/* moe/dtype.h — element types of tensors that moe reads and writes. */
#ifndef MOE_DTYPE_H
#define MOE_DTYPE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MOE_DTYPE_F32 = 0,
    MOE_DTYPE_F16,
    MOE_DTYPE_BF16,
    MOE_DTYPE_U32,        /* packed quantized codes */
    MOE_DTYPE_COUNT,
    /* The KV cache's 8-bit format only, never a tensor's (so past COUNT):
     * int8 codes in groups of 32 along head_dim, each group with a bf16
     * scale (kernels/kv_q8.h). Its size is a code's byte: its rows are
     * addressed in bytes (moe_kv_row_bytes). */
    MOE_DTYPE_Q8
} moe_dtype;

/* Bytes of one element, and the name used in files ("F32", "BF16", ...). */
size_t moe_dtype_size(moe_dtype t);
const char *moe_dtype_name(moe_dtype t);

/* Bytes of one KV cache row — one position's keys (or values) of all
 * kv_heads heads of head_dim elements — in a cache of kv_dtype (F32, F16
 * or Q8); 0 for another dtype. */
size_t moe_kv_row_bytes(moe_dtype kv_dtype, int kv_heads, int head_dim);

#ifdef __cplusplus
}
#endif

#endif
