/* io/safetensors_write.h — writing one safetensors file: a JSON header
 * padded with spaces to a multiple of 8 bytes, then the tensors' bytes,
 * wider elements first (as the reference writer orders them), so every
 * tensor starts aligned to its element size. */
#ifndef MOE_IO_SAFETENSORS_WRITE_H
#define MOE_IO_SAFETENSORS_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/status.h"

typedef struct {
    const char *name;
    const char *dtype;        /* as written in the file: "F32", "BF16", "U32", "I32", ... */
    int ndim;
    int64_t shape[8];
    const void *data;
    size_t nbytes;
} moe_st_out_tensor;

/* Writes `path` through a temporary file beside it, renamed into place once
 * complete (a failure leaves no partial file under `path`). metadata: NULL
 * or n_meta key/value string pairs for "__metadata__". */
moe_status moe_st_write(const char *path, const moe_st_out_tensor *tensors, int n, const char *const *metadata,
                        int n_meta);

#endif
