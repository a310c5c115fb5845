/* io/safetensors_write.c — see safetensors_write.h. */
#include "io/safetensors_write.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/atomic_file.h"

/* Element bytes of a dtype name (1 for anything byte-sized or unknown). */
static int elem_bytes(const char *dtype)
{
    static const char *const eight[] = { "F64", "I64", "U64", NULL }, *const four[] = { "F32", "I32", "U32", NULL },
                             *const two[] = { "F16", "BF16", "I16", "U16", NULL };
    for (int i = 0; eight[i]; i++) if (!strcmp(dtype, eight[i])) return 8;
    for (int i = 0; four[i]; i++) if (!strcmp(dtype, four[i])) return 4;
    for (int i = 0; two[i]; i++) if (!strcmp(dtype, two[i])) return 2;
    return 1;
}

/* The order of the tensors' bytes: wider elements first, given order within
 * a width, so that every tensor starts aligned to its element size (the
 * data buffer starts at a multiple of 8). */
static void byte_order(const moe_st_out_tensor *t, int n, int *order)
{
    int k = 0;
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < n; i++)
            if (elem_bytes(t[i].dtype) == w) order[k++] = i;
}

static json_object *header_json(const moe_st_out_tensor *t, const int *order, int n, const char *const *meta,
                                int n_meta)
{
    json_object *root = json_object_new_object();
    if (n_meta > 0) {
        json_object *m = json_object_new_object();
        for (int i = 0; i < n_meta; i++) json_object_object_add(m, meta[2 * i], json_object_new_string(meta[2 * i + 1]));
        json_object_object_add(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (int j = 0; j < n; j++) {
        int i = order[j];
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
    int *order = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
    if (!order) return moe_error_set(MOE_ERR_NOMEM, "safetensors write: out of memory");
    byte_order(tensors, n, order);
    json_object *root = header_json(tensors, order, n, metadata, n_meta);
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    moe_atomic_file af;
    moe_status st = moe_atomic_open(path, &af);
    if (st != MOE_OK) {
        json_object_put(root);
        free(order);
        return st;
    }
    FILE *f = af.f;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = fwrite(lenbuf, 1, 8, f) == 8 && fwrite(js, 1, len, f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int j = 0; ok && j < n; j++) {
        const moe_st_out_tensor *t = &tensors[order[j]];
        ok = t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, f) == t->nbytes;
    }
    json_object_put(root);
    free(order);
    return moe_atomic_close(&af, ok);
}
