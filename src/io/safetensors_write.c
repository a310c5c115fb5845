/* io/safetensors_write.c — see safetensors_write.h. One layout rule for
 * both ways in: moe_st_write is the stream fed each tensor whole. */
#include "io/safetensors_write.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    moe_st_stream *s;
    moe_status st = moe_st_stream_open(path, tensors, n, metadata, n_meta, &s);
    for (int i = 0; st == MOE_OK && i < n; i++) st = moe_st_stream_append(s, i, tensors[i].data, tensors[i].nbytes);
    if (st != MOE_OK) {
        moe_st_stream_close(s, 0);
        return st;
    }
    return moe_st_stream_close(s, 1);
}

/* ---- streaming ---- */

struct moe_st_stream {
    moe_atomic_file af;
    int fd, n, failed;
    uint64_t data_start, file_bytes;
    char **names;                /* [n], for messages */
    uint64_t *offset, *size, *filled; /* [n], offsets from data_start */
};

static void stream_free(moe_st_stream *s)
{
    for (int i = 0; s->names && i < s->n; i++) free(s->names[i]);
    free(s->names), free(s->offset), free(s->size), free(s->filled);
    free(s);
}

/* Checks every tensor's byte count against its dtype and shape. */
static moe_status check_sizes(const char *path, const moe_st_out_tensor *t, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t want = (uint64_t)elem_bytes(t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > 8)
            return moe_error_set(MOE_ERR_INVALID_ARG, "%s: tensor '%s' has %d dimensions", path, t[i].name, t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++) want *= (uint64_t)t[i].shape[d];
        if (want != t[i].nbytes)
            return moe_error_set(MOE_ERR_INVALID_ARG, "%s: tensor '%s' is given %zu bytes; its dtype and shape need %llu",
                                 path, t[i].name, t[i].nbytes, (unsigned long long)want);
    }
    return MOE_OK;
}

moe_status moe_st_stream_open(const char *path, const moe_st_out_tensor *tensors, int n, const char *const *metadata,
                              int n_meta, moe_st_stream **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "safetensors stream: the output pointer is NULL");
    *out = NULL;
    if (!path || (n > 0 && !tensors) || n < 0)
        return moe_error_set(MOE_ERR_INVALID_ARG, "safetensors stream: bad arguments");
    moe_status st = check_sizes(path, tensors, n);
    if (st != MOE_OK) return st;
    size_t cnt = (size_t)(n > 0 ? n : 1);
    moe_st_stream *s = calloc(1, sizeof *s);
    int *order = malloc(sizeof(int) * cnt);
    if (s) {
        s->n = n;
        s->names = calloc(cnt, sizeof *s->names);
        s->offset = calloc(cnt, sizeof *s->offset);
        s->size = calloc(cnt, sizeof *s->size);
        s->filled = calloc(cnt, sizeof *s->filled);
    }
    if (!s || !order || !s->names || !s->offset || !s->size || !s->filled) {
        if (s) stream_free(s);
        free(order);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    byte_order(tensors, n, order);
    uint64_t off = 0;
    for (int j = 0; j < n; j++) {
        int i = order[j];
        s->offset[i] = off;
        s->size[i] = tensors[i].nbytes;
        off += tensors[i].nbytes;
        if (!(s->names[i] = strdup(tensors[i].name))) st = MOE_ERR_NOMEM;
    }
    json_object *root = header_json(tensors, order, n, metadata, n_meta);
    free(order);
    if (st != MOE_OK || !root) {
        json_object_put(root);
        stream_free(s);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory for the header", path);
    }
    const char *js = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    size_t len = strlen(js), padded = (len + 7) / 8 * 8;
    s->data_start = 8 + padded;
    s->file_bytes = s->data_start + off;
    if ((st = moe_atomic_open(path, &s->af)) != MOE_OK) {
        json_object_put(root);
        stream_free(s);
        return st;
    }
    s->fd = fileno(s->af.f);
    /* Reserve the space now: a disk too small fails before any work is done
     * (file systems without fallocate simply skip this). */
    int err = fallocate(s->fd, 0, 0, (off_t)s->file_bytes) == 0 ? 0 : errno;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int ok = err != ENOSPC && err != EFBIG;
    ok = ok && fwrite(lenbuf, 1, 8, s->af.f) == 8 && fwrite(js, 1, len, s->af.f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', s->af.f) != EOF;
    ok = ok && fflush(s->af.f) == 0;
    if (!ok) err = err ? err : errno;
    json_object_put(root);
    if (!ok) {
        moe_atomic_close(&s->af, 0);
        stream_free(s);
        return moe_error_set(MOE_ERR_IO, "%s: cannot write %llu bytes (%s)", path, (unsigned long long)s->file_bytes,
                             strerror(err));
    }
    *out = s;
    return MOE_OK;
}

moe_status moe_st_stream_append(moe_st_stream *s, int i, const void *data, size_t nbytes)
{
    if (!s || i < 0 || i >= s->n || (nbytes && !data))
        return moe_error_set(MOE_ERR_INVALID_ARG, "safetensors stream: bad append (tensor %d)", i);
    if (s->failed) return moe_error_set(MOE_ERR_IO, "%s: an earlier write failed", s->af.path);
    if (nbytes > s->size[i] - s->filled[i])
        return moe_error_set(MOE_ERR_INVALID_ARG, "%s: tensor '%s' given %llu bytes more than its %llu", s->af.path,
                             s->names[i], (unsigned long long)(s->filled[i] + nbytes - s->size[i]),
                             (unsigned long long)s->size[i]);
    const char *p = data;
    uint64_t at = s->data_start + s->offset[i] + s->filled[i];
    while (nbytes > 0) {
        ssize_t w = pwrite(s->fd, p, nbytes, (off_t)at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            s->failed = 1;
            return moe_error_set(MOE_ERR_IO, "%s: writing tensor '%s' failed (%s)", s->af.path, s->names[i],
                                 w < 0 ? strerror(errno) : "nothing written");
        }
        p += w, at += (uint64_t)w, nbytes -= (size_t)w;
        s->filled[i] += (uint64_t)w;
    }
    return MOE_OK;
}

uint64_t moe_st_stream_file_bytes(const moe_st_stream *s) { return s ? s->file_bytes : 0; }

moe_status moe_st_stream_close(moe_st_stream *s, int ok)
{
    if (!s) return MOE_OK;
    moe_status st = MOE_OK;
    if (ok && s->failed) {
        ok = 0;
        st = moe_error_set(MOE_ERR_IO, "%s: not written, an earlier write failed", s->af.path);
    }
    for (int i = 0; ok && i < s->n; i++)
        if (s->filled[i] != s->size[i]) {
            ok = 0;
            st = moe_error_set(MOE_ERR_INVALID_ARG, "%s: tensor '%s' has %llu of its %llu bytes; the file is not written",
                               s->af.path, s->names[i], (unsigned long long)s->filled[i],
                               (unsigned long long)s->size[i]);
        }
    /* on disk before the name points at it */
    if (ok && fsync(s->fd) != 0) {
        ok = 0;
        st = moe_error_set(MOE_ERR_IO, "%s: sync failed (%s)", s->af.path, strerror(errno));
    }
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", moe_last_error());
    moe_status closed = moe_atomic_close(&s->af, ok);
    stream_free(s);
    if (st != MOE_OK) return moe_error_set(st, "%s", msg); /* the first failure's message */
    return closed;
}
