/* io/safetensors.c — the safetensors reader: map the file read-only, parse
 * the JSON header with json-c, check every entry against the file (see
 * safetensors.h for the rules), and keep only what lookups need: one array of
 * tensors in file order, one block of strings, a hash index of the names.
 * The parsed JSON is freed before open returns. Sharded checkpoints are a set
 * of such files tied together by model.safetensors.index.json. */
#include "io/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>

#include "core/error.h"

/* The reference implementation's limit on the header, also used for the
 * index file: anything larger is corruption, not a checkpoint. */
#define MAX_JSON_BYTES 100000000u

typedef unsigned long long ull;

/* ---- a hash index of tensor names (open addressing, linear probing) ---- */

typedef struct {
    int32_t *slots; /* tensor number, or -1 for an empty slot */
    size_t mask;
} name_index;

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static moe_status index_build(name_index *ix, const moe_st_tensor *t, int n, const char *what)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return moe_error_set(MOE_ERR_NOMEM, "out of memory indexing the tensor names of %s", what);
    memset(ix->slots, 0xff, cap * sizeof *ix->slots);
    ix->mask = cap - 1;
    for (int i = 0; i < n; i++) {
        size_t h = (size_t)hash_name(t[i].name) & ix->mask;
        while (ix->slots[h] >= 0) h = (h + 1) & ix->mask;
        ix->slots[h] = i;
    }
    return MOE_OK;
}

static const moe_st_tensor *index_find(const name_index *ix, const moe_st_tensor *t, const char *name)
{
    if (!ix->slots || !name) return NULL;
    for (size_t h = (size_t)hash_name(name) & ix->mask; ix->slots[h] >= 0; h = (h + 1) & ix->mask)
        if (strcmp(t[ix->slots[h]].name, name) == 0) return &t[ix->slots[h]];
    return NULL;
}

/* ---- JSON ---- */

static int is_json_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parses text[0..len) (with text[len] == '\0') as one strict JSON value
 * followed only by whitespace. `where` starts every error message. */
static moe_status parse_json(const char *text, size_t len, const char *where, json_object **out)
{
    *out = NULL;
    struct json_tokener *tok = json_tokener_new();
    if (!tok) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory creating a JSON parser", where);
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS | JSON_TOKENER_VALIDATE_UTF8);
    /* The length includes the terminating NUL: it tells json-c the input ends here. */
    json_object *obj = json_tokener_parse_ex(tok, text, (int)len + 1);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (err == json_tokener_continue) {
        json_object_put(obj);
        return moe_error_set(MOE_ERR_FORMAT, "%s is not valid JSON: it ends early", where);
    }
    if (err != json_tokener_success || !obj) {
        json_object_put(obj);
        return moe_error_set(MOE_ERR_FORMAT, "%s is not valid JSON: %s (near byte %zu)", where,
                             json_tokener_error_desc(err), end);
    }
    for (size_t i = end; i < len; i++) {
        if (!is_json_space((unsigned char)text[i])) {
            json_object_put(obj);
            return moe_error_set(MOE_ERR_FORMAT, "%s is not valid JSON: byte %zu (0x%02x) follows the value", where,
                                 i, (unsigned char)text[i]);
        }
    }
    *out = obj;
    return MOE_OK;
}

/* A JSON integer as a non-negative value no larger than INT64_MAX; 0 when
 * `v` is not one. */
static int get_count(json_object *v, uint64_t *out)
{
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) return 0;
    uint64_t u = json_object_get_uint64(v);
    if (u > (uint64_t)INT64_MAX) return 0;
    *out = u;
    return 1;
}

static const char *json_kind(json_object *v) { return json_type_to_name(json_object_get_type(v)); }

/* ---- one file ---- */

typedef struct {
    const char *key, *value;
} meta_pair;

struct moe_st_file {
    char *path;
    void *map;
    size_t map_len;
    moe_st_tensor *tensors; /* [count], in file order */
    int count;
    name_index index;
    meta_pair *meta; /* [nmeta] */
    int nmeta;
    char *strings; /* names, dtype names and metadata, one block */
};

/* Element sizes of the dtypes the format defines that have whole-byte
 * elements; only the first four are moe dtypes. A dtype string not listed
 * here is accepted without a size check. */
static const struct {
    const char *name;
    moe_dtype dtype;
    unsigned size;
} dtype_table[] = {
    { "F32", MOE_DTYPE_F32, 4 },        { "F16", MOE_DTYPE_F16, 2 },        { "BF16", MOE_DTYPE_BF16, 2 },
    { "U32", MOE_DTYPE_U32, 4 },        { "F64", MOE_DTYPE_COUNT, 8 },      { "I64", MOE_DTYPE_COUNT, 8 },
    { "U64", MOE_DTYPE_COUNT, 8 },      { "I32", MOE_DTYPE_COUNT, 4 },      { "I16", MOE_DTYPE_COUNT, 2 },
    { "U16", MOE_DTYPE_COUNT, 2 },      { "I8", MOE_DTYPE_COUNT, 1 },       { "U8", MOE_DTYPE_COUNT, 1 },
    { "BOOL", MOE_DTYPE_COUNT, 1 },     { "F8_E4M3", MOE_DTYPE_COUNT, 1 }, { "F8_E5M2", MOE_DTYPE_COUNT, 1 },
    { "F8_E8M0", MOE_DTYPE_COUNT, 1 },
};

/* A tensor while the header is checked: its offsets, and its strings still
 * inside the parsed JSON. */
typedef struct {
    uint64_t begin, end;
    moe_st_tensor t;
} entry;

static moe_status parse_entry(const char *path, const char *name, json_object *v, uint64_t data_len, entry *e)
{
    moe_st_tensor *t = &e->t;
    json_object *dtype, *shape, *offsets;
    t->name = name;
    if (!json_object_is_type(v, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': the entry is a JSON %s, not an object",
                             path, name, json_kind(v));
    if (!json_object_object_get_ex(v, "dtype", &dtype))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s' has no \"dtype\"", path, name);
    if (!json_object_object_get_ex(v, "shape", &shape))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s' has no \"shape\"", path, name);
    if (!json_object_object_get_ex(v, "data_offsets", &offsets))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s' has no \"data_offsets\"", path, name);

    /* dtype */
    if (!json_object_is_type(dtype, json_type_string))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': \"dtype\" is a JSON %s, not a string",
                             path, name, json_kind(dtype));
    const char *dname = json_object_get_string(dtype);
    size_t dlen = (size_t)json_object_get_string_len(dtype);
    if (dlen == 0 || strlen(dname) != dlen)
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': \"dtype\" is empty or holds a NUL",
                             path, name);
    t->dtype_name = dname;
    t->dtype = MOE_DTYPE_COUNT;
    unsigned esize = 0;
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (strcmp(dname, dtype_table[i].name) == 0) {
            t->dtype = dtype_table[i].dtype;
            esize = dtype_table[i].size;
            break;
        }
    }

    /* shape */
    if (!json_object_is_type(shape, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': \"shape\" is a JSON %s, not an array",
                             path, name, json_kind(shape));
    size_t ndim = json_object_array_length(shape);
    if (ndim > MOE_ST_MAX_DIMS)
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s' has %zu dimensions, more than %d",
                             path, name, ndim, MOE_ST_MAX_DIMS);
    t->ndim = (int)ndim;
    uint64_t elems = 1;
    int overflow = 0;
    for (size_t d = 0; d < ndim; d++) {
        json_object *dim = json_object_array_get_idx(shape, d);
        uint64_t n;
        if (!get_count(dim, &n)) {
            if (json_object_is_type(dim, json_type_int) && json_object_get_int64(dim) < 0)
                return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': shape entry %zu is %lld, negative",
                                     path, name, d, (long long)json_object_get_int64(dim));
            return moe_error_set(MOE_ERR_FORMAT,
                                 "safetensors file '%s': tensor '%s': shape entry %zu (%s) is not an integer in [0, 2^63)",
                                 path, name, d, json_object_to_json_string(dim));
        }
        t->shape[d] = (int64_t)n;
        if (n != 0 && elems > UINT64_MAX / n) overflow = 1;
        elems *= n;
    }
    for (size_t d = ndim; d < MOE_ST_MAX_DIMS; d++) t->shape[d] = 0;

    /* data_offsets */
    if (!json_object_is_type(offsets, json_type_array) || json_object_array_length(offsets) != 2)
        return moe_error_set(MOE_ERR_FORMAT,
                             "safetensors file '%s': tensor '%s': \"data_offsets\" is not an array of two integers",
                             path, name);
    if (!get_count(json_object_array_get_idx(offsets, 0), &e->begin) ||
        !get_count(json_object_array_get_idx(offsets, 1), &e->end))
        return moe_error_set(MOE_ERR_FORMAT,
                             "safetensors file '%s': tensor '%s': \"data_offsets\" %s are not two non-negative integers",
                             path, name, json_object_to_json_string(offsets));
    if (e->begin > e->end)
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': tensor '%s': data_offsets [%llu, %llu] end before they begin",
                             path, name, (ull)e->begin, (ull)e->end);
    if (e->end > data_len)
        return moe_error_set(MOE_ERR_FORMAT,
                             "safetensors file '%s': tensor '%s': data_offsets [%llu, %llu] run past the data buffer (%llu bytes)",
                             path, name, (ull)e->begin, (ull)e->end, (ull)data_len);
    uint64_t nbytes = e->end - e->begin;
    if (esize) {
        if (overflow || elems > UINT64_MAX / esize || elems * esize != nbytes)
            return moe_error_set(MOE_ERR_FORMAT,
                                 "safetensors file '%s': tensor '%s': %llu bytes in data_offsets, but its shape of %s %s needs %s%llu",
                                 path, name, (ull)nbytes, dname, json_object_to_json_string(shape),
                                 overflow || elems > UINT64_MAX / esize ? "more than " : "",
                                 overflow || elems > UINT64_MAX / esize ? (ull)UINT64_MAX : (ull)(elems * esize));
    }
    t->nbytes = (size_t)nbytes;
    return MOE_OK;
}

static int entry_order(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* Copies s into the string block at *pos. */
static const char *keep(char *block, size_t *pos, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = block + *pos;
    memcpy(d, s, n);
    *pos += n;
    return d;
}

/* Checks the header and fills f's tables; f->map is the whole file. */
static moe_status parse_file(moe_st_file *f, json_object **root_out, entry **entries_out)
{
    const unsigned char *p = f->map;
    const char *path = f->path;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)p[i] << (8 * i);
    uint64_t after = (uint64_t)f->map_len - 8;
    if (hlen > MAX_JSON_BYTES)
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': header length %llu is absurd (over %u bytes)", path,
                             (ull)hlen, MAX_JSON_BYTES);
    if (hlen > after)
        return moe_error_set(MOE_ERR_FORMAT,
                             "safetensors file '%s': header length %llu runs past the end of the file (%llu bytes follow it)",
                             path, (ull)hlen, (ull)after);
    uint64_t data_len = after - hlen;
    const unsigned char *data = p + 8 + hlen;

    /* json-c wants the input to end in a NUL; the mapping's header does not. */
    char *text = malloc((size_t)hlen + 1);
    if (!text) return moe_error_set(MOE_ERR_NOMEM, "safetensors file '%s': out of memory for the header", path);
    memcpy(text, p + 8, (size_t)hlen);
    text[hlen] = '\0';
    char where[600];
    snprintf(where, sizeof where, "safetensors file '%s': the header", path);
    json_object *root;
    moe_status s = parse_json(text, (size_t)hlen, where, &root);
    free(text);
    if (s != MOE_OK) return s;
    *root_out = root;
    if (!json_object_is_type(root, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': the header is a JSON %s, not an object", path,
                             json_kind(root));

    /* Every tensor, checked on its own. */
    json_object *meta = NULL;
    int has_meta = json_object_object_get_ex(root, "__metadata__", &meta);
    int n = json_object_object_length(root) - has_meta;
    entry *es = calloc(n > 0 ? (size_t)n : 1, sizeof *es);
    if (!es) return moe_error_set(MOE_ERR_NOMEM, "safetensors file '%s': out of memory for %d tensors", path, n);
    *entries_out = es;
    size_t strbytes = 0;
    int k = 0;
    json_object_iter it;
    json_object_object_foreachC(root, it)
    {
        if (strcmp(it.key, "__metadata__") == 0) continue;
        s = parse_entry(path, it.key, it.val, data_len, &es[k]);
        if (s != MOE_OK) return s;
        strbytes += strlen(it.key) + 1 + strlen(es[k].t.dtype_name) + 1;
        k++;
    }

    /* Together they must tile the data buffer: no overlap, no hole. */
    qsort(es, (size_t)n, sizeof *es, entry_order);
    uint64_t pos = 0;
    for (int i = 0; i < n; i++) {
        if (es[i].begin < pos)
            return moe_error_set(MOE_ERR_FORMAT,
                                 "safetensors file '%s': tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap in the data buffer",
                                 path, es[i - 1].t.name, (ull)es[i - 1].begin, (ull)es[i - 1].end, es[i].t.name,
                                 (ull)es[i].begin, (ull)es[i].end);
        if (es[i].begin > pos)
            return moe_error_set(MOE_ERR_FORMAT,
                                 "safetensors file '%s': bytes [%llu, %llu) of the data buffer, before tensor '%s', belong to "
                                 "no tensor (holes are not allowed; a tensor name given twice in the header leaves one)",
                                 path, (ull)pos, (ull)es[i].begin, es[i].t.name);
        pos = es[i].end;
    }
    if (pos != data_len) {
        if (n == 0)
            return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': the data buffer has %llu bytes but no tensor", path,
                                 (ull)data_len);
        return moe_error_set(MOE_ERR_FORMAT,
                             "safetensors file '%s': %llu bytes follow the end of the last tensor '%s' in the data buffer",
                             path, (ull)(data_len - pos), es[n - 1].t.name);
    }

    /* Metadata: strings only. */
    int nmeta = 0;
    if (has_meta) {
        if (!json_object_is_type(meta, json_type_object))
            return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': \"__metadata__\" is a JSON %s, not an object", path,
                                 json_kind(meta));
        json_object_object_foreachC(meta, it)
        {
            if (!json_object_is_type(it.val, json_type_string) ||
                strlen(json_object_get_string(it.val)) != (size_t)json_object_get_string_len(it.val))
                return moe_error_set(MOE_ERR_FORMAT,
                                     "safetensors file '%s': metadata '%s' is a JSON %s, not a string without NULs", path,
                                     it.key, json_kind(it.val));
            strbytes += strlen(it.key) + 1 + strlen(json_object_get_string(it.val)) + 1;
            nmeta++;
        }
    }

    /* Keep what lookups need; the JSON goes when we return. */
    f->strings = malloc(strbytes ? strbytes : 1);
    f->tensors = malloc((n > 0 ? (size_t)n : 1) * sizeof *f->tensors);
    f->meta = malloc((nmeta > 0 ? (size_t)nmeta : 1) * sizeof *f->meta);
    if (!f->strings || !f->tensors || !f->meta)
        return moe_error_set(MOE_ERR_NOMEM, "safetensors file '%s': out of memory for %d tensor records", path, n);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        moe_st_tensor *t = &f->tensors[i];
        *t = es[i].t;
        t->name = keep(f->strings, &at, es[i].t.name);
        t->dtype_name = keep(f->strings, &at, es[i].t.dtype_name);
        t->data = data + es[i].begin;
    }
    f->count = n;
    if (has_meta) {
        json_object_object_foreachC(meta, it)
        {
            f->meta[f->nmeta].key = keep(f->strings, &at, it.key);
            f->meta[f->nmeta].value = keep(f->strings, &at, json_object_get_string(it.val));
            f->nmeta++;
        }
    }
    return index_build(&f->index, f->tensors, n, path);
}

moe_status moe_st_open(const char *path, moe_st_file **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "moe_st_open: the output pointer is NULL");
    *out = NULL;
    if (!path) return moe_error_set(MOE_ERR_INVALID_ARG, "moe_st_open: the path is NULL");

    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return moe_error_set(MOE_ERR_IO, "safetensors file '%s': cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return moe_error_set(MOE_ERR_IO, "safetensors file '%s': cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return moe_error_set(MOE_ERR_IO, "safetensors file '%s': not a regular file", path);
    }
    if (st.st_size < 8) {
        close(fd);
        return moe_error_set(MOE_ERR_FORMAT, "safetensors file '%s': %lld bytes, too short for the 8-byte header length",
                             path, (long long)st.st_size);
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return moe_error_set(MOE_ERR_UNSUPPORTED, "safetensors file '%s': too large to map on this machine", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return moe_error_set(MOE_ERR_IO, "safetensors file '%s': cannot map: %s", path, strerror(map_errno));

    moe_st_file *f = calloc(1, sizeof *f);
    char *copy = strdup(path);
    if (!f || !copy) {
        free(f);
        free(copy);
        munmap(map, (size_t)st.st_size);
        return moe_error_set(MOE_ERR_NOMEM, "safetensors file '%s': out of memory", path);
    }
    f->path = copy;
    f->map = map;
    f->map_len = (size_t)st.st_size;

    json_object *root = NULL;
    entry *entries = NULL;
    moe_status s = parse_file(f, &root, &entries);
    json_object_put(root);
    free(entries);
    if (s != MOE_OK) {
        moe_st_close(f);
        return s;
    }
    *out = f;
    return MOE_OK;
}

void moe_st_close(moe_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    free(f->index.slots);
    free(f->tensors);
    free(f->meta);
    free(f->strings);
    free(f->path);
    free(f);
}

const char *moe_st_path(const moe_st_file *f) { return f ? f->path : NULL; }

int moe_st_count(const moe_st_file *f) { return f ? f->count : 0; }

const moe_st_tensor *moe_st_at(const moe_st_file *f, int i)
{
    return f && i >= 0 && i < f->count ? &f->tensors[i] : NULL;
}

const moe_st_tensor *moe_st_find(const moe_st_file *f, const char *name)
{
    return f ? index_find(&f->index, f->tensors, name) : NULL;
}

const char *moe_st_metadata(const moe_st_file *f, const char *key)
{
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

/* ---- a checkpoint directory ---- */

struct moe_st_set {
    moe_st_file **files; /* [nfiles], in file-name order */
    int nfiles;
    moe_st_tensor *tensors; /* [count], copies of the files' records */
    int count;
    name_index index;
};

static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = malloc(a + slash + b + 1);
    if (!p) return NULL;
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b + 1);
    return p;
}

/* 1 if path exists, 0 if it (or a directory above it) does not, -1 (errno
 * set) if that cannot be told. */
static int path_exists(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0) return 1;
    return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
}

static moe_status read_whole(const char *path, char **text, size_t *len)
{
    *text = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return moe_error_set(MOE_ERR_IO, "index file '%s': cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return moe_error_set(MOE_ERR_IO, "index file '%s': cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return moe_error_set(MOE_ERR_IO, "index file '%s': not a regular file", path);
    }
    if ((uint64_t)st.st_size > MAX_JSON_BYTES) {
        close(fd);
        return moe_error_set(MOE_ERR_FORMAT, "index file '%s': %lld bytes, over the %u-byte limit", path,
                             (long long)st.st_size, MAX_JSON_BYTES);
    }
    size_t n = (size_t)st.st_size, got = 0;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return moe_error_set(MOE_ERR_NOMEM, "index file '%s': out of memory", path);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return moe_error_set(MOE_ERR_IO, "index file '%s': cannot read: %s", path, r < 0 ? strerror(e) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return MOE_OK;
}

static int cmp_str_ptr(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

typedef struct {
    int shard, pos;
} set_slot;

static int cmp_slot(const void *a, const void *b)
{
    const set_slot *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* Fills s from the index file: opens the shards, resolves the weight map. */
static moe_status open_indexed(moe_st_set *s, const char *dir, const char *index_path, json_object **root_out,
                               const char ***shards_out, set_slot **slots_out)
{
    char *text;
    size_t len = 0;
    moe_status st = read_whole(index_path, &text, &len);
    if (st != MOE_OK) return st;
    char where[600];
    snprintf(where, sizeof where, "index file '%s'", index_path);
    json_object *root;
    st = parse_json(text, len, where, &root);
    free(text);
    if (st != MOE_OK) return st;
    *root_out = root;
    json_object *map;
    if (!json_object_is_type(root, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "index file '%s': a JSON %s, not an object", index_path, json_kind(root));
    if (!json_object_object_get_ex(root, "weight_map", &map))
        return moe_error_set(MOE_ERR_FORMAT, "index file '%s' has no \"weight_map\"", index_path);
    if (!json_object_is_type(map, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "index file '%s': \"weight_map\" is a JSON %s, not an object", index_path,
                             json_kind(map));

    /* The distinct shard names, each a plain file name inside dir. */
    int n = json_object_object_length(map), nshards = 0;
    const char **shards = malloc((n > 0 ? (size_t)n : 1) * sizeof *shards);
    set_slot *slots = malloc((n > 0 ? (size_t)n : 1) * sizeof *slots);
    *shards_out = shards;
    *slots_out = slots;
    if (!shards || !slots) return moe_error_set(MOE_ERR_NOMEM, "index file '%s': out of memory", index_path);
    json_object_iter it;
    json_object_object_foreachC(map, it)
    {
        const char *sn = json_object_is_type(it.val, json_type_string) ? json_object_get_string(it.val) : NULL;
        if (!sn || !*sn || strlen(sn) != (size_t)json_object_get_string_len(it.val) || strchr(sn, '/') ||
            strcmp(sn, ".") == 0 || strcmp(sn, "..") == 0)
            return moe_error_set(MOE_ERR_FORMAT, "index file '%s': tensor '%s' maps to %s, not a file name in the directory",
                                 index_path, it.key, json_object_to_json_string(it.val));
        int j = nshards - 1;
        while (j >= 0 && strcmp(shards[j], sn) != 0) j--; /* usually the last one */
        if (j < 0) shards[nshards++] = sn;
    }
    qsort(shards, (size_t)nshards, sizeof *shards, cmp_str_ptr);

    s->files = calloc(nshards > 0 ? (size_t)nshards : 1, sizeof *s->files);
    if (!s->files) return moe_error_set(MOE_ERR_NOMEM, "index file '%s': out of memory", index_path);
    for (int i = 0; i < nshards; i++) {
        char *p = join_path(dir, shards[i]);
        if (!p) return moe_error_set(MOE_ERR_NOMEM, "index file '%s': out of memory", index_path);
        st = moe_st_open(p, &s->files[i]);
        free(p);
        if (st != MOE_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", moe_last_error());
            return moe_error_set(st, "%s (shard '%s' named in '%s')", why, shards[i], index_path);
        }
        s->nfiles++;
    }

    /* Every mapped tensor, found in its shard. */
    int k = 0;
    json_object_object_foreachC(map, it)
    {
        const char *name = it.key, *sn = json_object_get_string(it.val);
        const char **hit = bsearch(&sn, shards, (size_t)nshards, sizeof *shards, cmp_str_ptr);
        int si = (int)(hit - shards);
        const moe_st_tensor *t = moe_st_find(s->files[si], name);
        if (!t)
            return moe_error_set(MOE_ERR_FORMAT, "index file '%s': tensor '%s' is mapped to shard '%s', which does not hold it",
                                 index_path, name, sn);
        slots[k].shard = si;
        slots[k].pos = (int)(t - moe_st_at(s->files[si], 0));
        k++;
    }
    qsort(slots, (size_t)n, sizeof *slots, cmp_slot);
    s->tensors = malloc((n > 0 ? (size_t)n : 1) * sizeof *s->tensors);
    if (!s->tensors) return moe_error_set(MOE_ERR_NOMEM, "index file '%s': out of memory", index_path);
    for (int i = 0; i < n; i++) s->tensors[i] = *moe_st_at(s->files[slots[i].shard], slots[i].pos);
    s->count = n;
    return index_build(&s->index, s->tensors, n, index_path);
}

moe_status moe_st_set_open(const char *dir, moe_st_set **out)
{
    if (!out) return moe_error_set(MOE_ERR_INVALID_ARG, "moe_st_set_open: the output pointer is NULL");
    *out = NULL;
    if (!dir) return moe_error_set(MOE_ERR_INVALID_ARG, "moe_st_set_open: the directory is NULL");
    moe_st_set *s = calloc(1, sizeof *s);
    char *index_path = join_path(dir, "model.safetensors.index.json");
    char *single_path = join_path(dir, "model.safetensors");
    moe_status st;
    if (!s || !index_path || !single_path) {
        st = moe_error_set(MOE_ERR_NOMEM, "checkpoint '%s': out of memory", dir);
        goto done;
    }
    int has_index = path_exists(index_path);
    if (has_index < 0) {
        st = moe_error_set(MOE_ERR_IO, "index file '%s': cannot access: %s", index_path, strerror(errno));
        goto done;
    }
    if (has_index) {
        json_object *root = NULL;
        const char **shards = NULL;
        set_slot *slots = NULL;
        st = open_indexed(s, dir, index_path, &root, &shards, &slots);
        json_object_put(root);
        free(shards);
        free(slots);
        goto done;
    }
    int has_single = path_exists(single_path);
    if (has_single == 0) {
        st = moe_error_set(MOE_ERR_IO, "checkpoint '%s': neither '%s' nor '%s' exists", dir, index_path, single_path);
        goto done;
    }
    s->files = calloc(1, sizeof *s->files);
    if (!s->files) {
        st = moe_error_set(MOE_ERR_NOMEM, "checkpoint '%s': out of memory", dir);
        goto done;
    }
    st = moe_st_open(single_path, &s->files[0]);
    if (st != MOE_OK) goto done;
    s->nfiles = 1;
    int n = moe_st_count(s->files[0]);
    s->tensors = malloc((n > 0 ? (size_t)n : 1) * sizeof *s->tensors);
    if (!s->tensors) {
        st = moe_error_set(MOE_ERR_NOMEM, "checkpoint '%s': out of memory", dir);
        goto done;
    }
    for (int i = 0; i < n; i++) s->tensors[i] = *moe_st_at(s->files[0], i);
    s->count = n;
    st = index_build(&s->index, s->tensors, n, single_path);
done:
    free(index_path);
    free(single_path);
    if (st != MOE_OK) {
        moe_st_set_close(s);
        return st;
    }
    *out = s;
    return MOE_OK;
}

void moe_st_set_close(moe_st_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->nfiles; i++) moe_st_close(s->files[i]);
    free(s->files);
    free(s->tensors);
    free(s->index.slots);
    free(s);
}

int moe_st_set_count(const moe_st_set *s) { return s ? s->count : 0; }

const moe_st_tensor *moe_st_set_at(const moe_st_set *s, int i)
{
    return s && i >= 0 && i < s->count ? &s->tensors[i] : NULL;
}

const moe_st_tensor *moe_st_set_find(const moe_st_set *s, const char *name)
{
    return s ? index_find(&s->index, s->tensors, name) : NULL;
}

void moe_st_tensor_release(const moe_st_tensor *t)
{
    if (!t || !t->nbytes) return;
    /* whole pages inside the tensor only: a neighbour's pages stay */
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)t->data + page - 1) & ~(page - 1);
    uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(page - 1);
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}
