/* io/npy.h — writing float32 arrays as NumPy .npy files (format 1.0):
 * what `moe logits` hands to Python for comparison. */
#ifndef MOE_IO_NPY_H
#define MOE_IO_NPY_H

#include <stdint.h>

#include "moe/status.h"

/* Writes data [shape...] (C order, little-endian float32) to `path`: to a
 * temporary file beside it first, renamed into place when complete, so a
 * failed write never leaves a partial file under the name asked for. */
moe_status moe_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape);

#endif
