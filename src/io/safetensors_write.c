/* io/safetensors_write.c — see safetensors_write.h. */
#include "io/safetensors_write.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "io/atomic_file.h"

static json_object *header_json(const moe_st_out_tensor *t, int n, const char *const *meta, int n_meta)
{
    json_object *root = json_object_new_object();
    if (n_meta > 0) {
        json_object *m = json_object_new_object();
        for (int i = 0; i < n_meta; i++) json_object_object_add(m, meta[2 * i], json_object_new_string(meta[2 * i + 1]));
        json_object_object_add(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        json_object *e = json_object_new_object(), *shape = json_object_new_array(), *offs = json_object_new_array();
        json_object_object_add(e, "dtype", json_object_new_string(t[i].dtype));
        for (int d = 0; d < t[i].ndim; d++) json_object_array_add(shape, json_object_new_int64(t[i].shape[d]));
        json_object_object_add(e, "shape", shape);
        json_object_array_add(offs, json_object_new_int64((int64_t)off));
        json_object_array_add(offs, json_object_new_int64((int64_t)(off + t[i].nbytes)));
        json_object_object_add(e, "data_offsets", offs);
        json_object_object_add(root, t[i].name, e);
        off += t[i].nbytes;
    }
    return root;
}

moe_status moe_st_write(const char *path, const moe_st_out_tensor *tensors, int n, const char *const *metadata,
                        int n_meta)
{
    if (!path || (n > 0 && !tensors) || n < 0)
        return moe_error_set(MOE_ERR_INVALID_ARG, "safetensors write: bad arguments");
    json_object *root = header_json(tensors, n, metadata, n_meta);
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    moe_atomic_file af;
    moe_status st = moe_atomic_open(path, &af);
    if (st != MOE_OK) {
        json_object_put(root);
        return st;
    }
    FILE *f = af.f;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(js, 1, len, f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++)
        ok = tensors[i].nbytes == 0 || fwrite(tensors[i].data, 1, tensors[i].nbytes, f) == tensors[i].nbytes;
    json_object_put(root);
    return moe_atomic_close(&af, ok);
}
