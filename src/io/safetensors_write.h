/* io/safetensors_write.h — writing one safetensors file: a JSON header
 * padded with spaces to a multiple of 8 bytes, then the tensors' bytes,
 * wider elements first (as the reference writer orders them), so every
 * tensor starts aligned to its element size.
 *
 * Two ways in: moe_st_write takes every tensor's bytes at once; the stream
 * (moe_st_stream_*) takes the tensors' names, dtypes and shapes first, writes
 * the header, then receives each tensor's bytes in pieces, in any order of
 * tensors — so a converter holds one piece at a time, never the file. */
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
    const void *data;         /* moe_st_write only; the stream ignores it */
    size_t nbytes;
} moe_st_out_tensor;

/* Writes `path` through a temporary file beside it, renamed into place once
 * complete (a failure leaves no partial file under `path`). metadata: NULL
 * or n_meta key/value string pairs for "__metadata__". */
moe_status moe_st_write(const char *path, const moe_st_out_tensor *tensors, int n, const char *const *metadata,
                        int n_meta);

/* ---- streaming ---- */
typedef struct moe_st_stream moe_st_stream;

/* Lays the tensors out as moe_st_write does (their `data` is ignored; names
 * and dtypes are copied), creates the temporary file beside `path`, reserves
 * the file's whole size where the file system can (so a full disk fails
 * here, not at the end) and writes the header. */
moe_status moe_st_stream_open(const char *path, const moe_st_out_tensor *tensors, int n, const char *const *metadata,
                              int n_meta, moe_st_stream **out);

/* The next nbytes of tensor i (its bytes arrive front to back; tensors may
 * be interleaved). More bytes than the tensor holds is an error. */
moe_status moe_st_stream_append(moe_st_stream *s, int i, const void *data, size_t nbytes);

/* Bytes of the whole file, header included. */
uint64_t moe_st_stream_file_bytes(const moe_st_stream *s);

/* ok: every tensor must be complete; the file is synced to disk and renamed
 * into place. !ok (or an incomplete tensor, or a failed write): the
 * temporary file is removed and `path` is left as it was. Frees s either
 * way; NULL is fine. */
moe_status moe_st_stream_close(moe_st_stream *s, int ok);

#endif
