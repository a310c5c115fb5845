/* moe/dtype.h — element types of tensors that moe reads and writes. */
#ifndef MOE_DTYPE_H
#define MOE_DTYPE_H

#include <stddef.h>

typedef enum {
    MOE_DTYPE_F32 = 0,
    MOE_DTYPE_F16,
    MOE_DTYPE_BF16,
    MOE_DTYPE_U32,        /* packed quantized codes */
    MOE_DTYPE_COUNT
} moe_dtype;

/* Bytes of one element, and the name used in files ("F32", "BF16", ...). */
size_t moe_dtype_size(moe_dtype t);
const char *moe_dtype_name(moe_dtype t);

#endif
