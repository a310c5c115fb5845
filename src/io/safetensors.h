/* io/safetensors.h — reading safetensors checkpoints, single files and
 * sharded sets, without copying: each file is mapped read-only (MAP_PRIVATE)
 * and a tensor's `data` points into that mapping. Files are never written.
 *
 * The format: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON
 * mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]}
 * (plus an optional "__metadata__" object of string -> string), then the data
 * buffer; offsets count from the start of that buffer (byte 8 + N).
 *
 * What open checks (each failure is MOE_ERR_FORMAT naming the file and, where
 * there is one, the tensor; a missing or unreadable file is MOE_ERR_IO with
 * the system's reason):
 *   - the file holds the 8-byte length, the header fits in the file and is at
 *     most 100,000,000 bytes (the reference implementation's limit);
 *   - the header is one JSON object, parsed by json-c in its strict mode
 *     (which still takes 'single quotes' and NaN) with UTF-8 checked, and
 *     followed only by JSON whitespace (writers pad it with spaces);
 *   - each entry has a string "dtype", a "shape" of at most 8 non-negative
 *     integers and "data_offsets" of two integers with begin <= end <= the
 *     data buffer's length; other keys in an entry are ignored;
 *   - for every dtype whose element size is known, end - begin equals the
 *     product of the shape times the element size (shape [] is a scalar of
 *     one element; a 0 in the shape gives 0 bytes);
 *   - the tensors tile the data buffer exactly, as the reference reader
 *     requires: no two overlap, and there are no holes between them or bytes
 *     after the last. (Rejecting holes also catches the one kind of duplicated
 *     tensor name that matters: json-c keeps only the last entry of a repeated
 *     key, so the bytes of the earlier one would be left as a hole. A name
 *     repeated with the very same entry is not detected, and is harmless.)
 *   - "__metadata__" is an object whose values are strings.
 *
 * dtypes: "F32", "F16", "BF16" and "U32" become the matching moe_dtype. Any
 * other dtype string ("I64", "F64", "U8", "BOOL", "F8_E4M3", ...) is accepted,
 * so that a checkpoint carrying a tensor moe does not use still opens: the
 * tensor is listed with dtype == MOE_DTYPE_COUNT ("other"), and dtype_name
 * says which. Deciding that such a tensor cannot be used is the caller's job.
 *
 * Alignment: `data` is aligned to the element size when the writer padded the
 * header to a multiple of 8 and laid tensors out at multiples of their element
 * size, as the reference writer does; this reader does not demand it. */
#ifndef MOE_IO_SAFETENSORS_H
#define MOE_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/status.h"

enum { MOE_ST_MAX_DIMS = 8 };

typedef struct {
    const char *name;
    moe_dtype dtype;           /* MOE_DTYPE_COUNT: a dtype moe has no type for */
    const char *dtype_name;    /* as written in the file: "BF16", "I64", ... */
    int ndim;                  /* 0 for a scalar */
    int64_t shape[MOE_ST_MAX_DIMS];
    const void *data;          /* into the file's mapping; valid until close */
    size_t nbytes;
} moe_st_tensor;

/* ---- one file ---- */
typedef struct moe_st_file moe_st_file;

/* Maps and checks `path`; *out is NULL on failure. */
moe_status moe_st_open(const char *path, moe_st_file **out);
void moe_st_close(moe_st_file *f);   /* NULL is fine */

/* The path given to open. */
const char *moe_st_path(const moe_st_file *f);

/* Tensors in the order of their bytes in the file (ascending data offset),
 * so that walking them reads the file front to back. */
int moe_st_count(const moe_st_file *f);
const moe_st_tensor *moe_st_at(const moe_st_file *f, int i);      /* NULL if out of range */
const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name); /* NULL if absent */

/* A "__metadata__" value, or NULL when the key (or the whole object) is absent. */
const char *moe_st_metadata(const moe_st_file *f, const char *key);

/* Drops the tensor's pages from this process's resident memory (the file
 * is untouched; reading `data` again maps them back in). Loaders call it
 * once a tensor has been copied into its packed layout, so that loading a
 * checkpoint does not hold the file and the model in memory at once. */
void moe_st_tensor_release(const moe_st_tensor *t);

/* ---- a checkpoint directory, sharded or not ---- */
typedef struct moe_st_set moe_st_set;

/* If dir/model.safetensors.index.json exists, its "weight_map" (tensor name ->
 * shard file name, a plain name inside dir) decides the set: each distinct
 * shard is opened once, and every mapped tensor must be in its shard (else
 * MOE_ERR_FORMAT naming the tensor and the shard). The set holds exactly the
 * mapped tensors; a tensor a shard holds but the map does not list is not
 * part of the set. Otherwise dir/model.safetensors is opened and the set holds
 * all its tensors. With neither file present: MOE_ERR_IO naming both paths. */
moe_status moe_st_set_open(const char *dir, moe_st_set **out);
void moe_st_set_close(moe_st_set *s);   /* NULL is fine */

/* Tensors shard by shard (shards in file-name order), each shard's in file
 * order. The pointers stay valid until the set is closed. */
int moe_st_set_count(const moe_st_set *s);
const moe_st_tensor *moe_st_set_at(const moe_st_set *s, int i);
const moe_st_tensor *moe_st_set_find(const moe_st_set *s, const char *name);

#endif
