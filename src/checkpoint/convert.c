/* checkpoint/convert.c — moe_checkpoint_convert (moe/checkpoint.h): a
 * family's plan (checkpoint/plan.h) written out in the MLX layout.
 *
 * The steps, in the order they run:
 *   1. read config.json and open the source; refuse a quantized one;
 *   2. decide each module's output (MLX's predicate: quantize a Linear or
 *      Embedding whose input dim divides by the group size; a router at
 *      --router-bits, else at what the family's quant_predicate gives it),
 *      its dtype and its shard (mlx-lm's make_shards: in model order, a new
 *      shard when the next tensor would pass the limit);
 *   3. create the temporary directory and every shard file with its header
 *      (sizes are known, so each tensor's place in its file is too);
 *   4. per module, a few rows at a time: source dtype → float32 → the output
 *      dtype (mlx-lm casts before it quantizes), quantize, write each piece
 *      at its place, drop the source pages already read;
 *   5. model.safetensors.index.json, config.json, the tokenizer files;
 *   6. rename the directory into place. */
#include <dirent.h>
#include <fnmatch.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "checkpoint/plan.h"
#include "core/error.h"
#include "core/memory.h"
#include "io/atomic_file.h"
#include "io/output_dir.h"
#include "io/safetensors_write.h"
#include "moe/checkpoint.h"
#include "quant/affine.h"
#include "quant/dtype.h"

#define DEFAULT_SHARD_BYTES (5ull << 30)   /* mlx-lm's MAX_FILE_SIZE_GB << 30 */
enum { CHUNK_ELEMS = 1 << 20 };            /* values converted at a time */

moe_convert_options moe_convert_default_options(void)
{
    return (moe_convert_options){ .bits = 4, .group_size = 64, .dtype = MOE_DTYPE_COUNT };
}

/* One output tensor: its header entry and where it goes. */
typedef struct {
    char name[CONV_PATH_MAX + 8];
    moe_st_out_tensor spec;
    int shard, index;          /* shard number, position in that shard */
} out_tensor;

/* Working memory: one chunk of rows in float32, cast, quantized. */
typedef struct {
    float *f;
    void *cast;
    uint32_t *codes;
    void *scales, *biases;
} buffers;

/* What one module becomes. */
typedef struct {
    int bits, group_size;      /* bits 0: float */
    moe_dtype dtype;           /* of the float weight, or of scales and biases */
    int entry;                 /* its own entry in the quantization block: ENTRY_* */
    int out[3];                /* weight, scales, biases: indices into the outputs */
} module_out;

/* A module quantized unlike the default gets an entry in config.json's
 * quantization block, as mlx-lm writes it: the dict its predicate returned,
 * {group_size, bits, mode} for --router-bits (as mlx-lm's recipes return
 * it), {group_size, bits} for the family's own (as qwen3_moe's does). */
enum { ENTRY_NONE, ENTRY_WITH_MODE, ENTRY_FAMILY };

typedef struct {
    const moe_convert_options *o;
    moe_model_config cfg;
    json_object *config;       /* the source's config.json */
    moe_st_set *set;
    conv_plan plan;
    module_out *mo;            /* [plan.n] */
    out_tensor *outs;
    int n_outs, n_shards;
    moe_st_stream **streams;   /* [n_shards] */
    moe_outdir od;
    buffers buf;
    uint64_t total_bytes, done_bytes;
    int64_t params;
} converter;

/* ---- step 1: the source ---- */

static char *path_in(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static moe_status open_source(converter *cv)
{
    const char *dir = cv->o->model_dir;
    char *cfg_path = path_in(dir, "config.json");
    if (!cfg_path) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    moe_status st = moe_config_load(cfg_path, &cv->cfg);
    if (st == MOE_OK && !(cv->config = json_object_from_file(cfg_path)))
        st = moe_error_set(MOE_ERR_FORMAT, "%s: cannot read it again (%s)", cfg_path, json_util_get_last_err());
    free(cfg_path);
    if (st != MOE_OK) return st;
    if (cv->cfg.quant_bits)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s is already quantized (%d-bit, group %d, per config.json); moe "
                             "convert quantizes float checkpoints: convert the float original instead (quantizing "
                             "dequantized weights again only loses precision)", dir, cv->cfg.quant_bits,
                             cv->cfg.quant_group_size);
    if ((st = moe_st_set_open(dir, &cv->set)) != MOE_OK) return st;
    for (int i = 0; i < moe_st_set_count(cv->set); i++) {
        const moe_st_tensor *t = moe_st_set_at(cv->set, i);
        size_t n = strlen(t->name);
        if (t->dtype == MOE_DTYPE_U32 || (n > 7 && !strcmp(t->name + n - 7, ".scales")))
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s holds quantized tensors ('%s'); moe convert quantizes float "
                                 "checkpoints: convert the float original instead", dir, t->name);
    }
    return conv_plan_make(&cv->cfg, cv->set, dir, &cv->plan);
}

/* config.json's torch_dtype (or transformers 5's dtype), as mlx-lm's default;
 * MOE_DTYPE_COUNT when it names none of the three. */
static moe_dtype config_dtype(json_object *config)
{
    static const char *const KEYS[2] = { "torch_dtype", "dtype" };
    for (int k = 0; k < 2; k++) {
        json_object *v;
        if (!json_object_object_get_ex(config, KEYS[k], &v) || !json_object_is_type(v, json_type_string)) continue;
        const char *s = json_object_get_string(v);
        if (!strcmp(s, "float32")) return MOE_DTYPE_F32;
        if (!strcmp(s, "float16")) return MOE_DTYPE_F16;
        if (!strcmp(s, "bfloat16")) return MOE_DTYPE_BF16;
    }
    return MOE_DTYPE_COUNT;
}

/* ---- step 2: the outputs ---- */

static int add_output(converter *cv, const char *path, const char *suffix, const char *dtype, int nd,
                      const int64_t *shape)
{
    out_tensor *t = &cv->outs[cv->n_outs];
    snprintf(t->name, sizeof t->name, "%s.%s", path, suffix);
    uint64_t bytes = !strcmp(dtype, "F32") || !strcmp(dtype, "U32") ? 4 : 2;
    t->spec = (moe_st_out_tensor){ .name = t->name, .dtype = dtype, .ndim = nd };
    for (int d = 0; d < nd; d++) bytes *= (uint64_t)(t->spec.shape[d] = shape[d]);
    t->spec.nbytes = (size_t)bytes;
    cv->total_bytes += bytes;
    return cv->n_outs++;
}

/* How module m is quantized (mo->bits 0: kept in float): MLX quantizes a
 * Linear or Embedding whose input dim divides by the default group size,
 * at the default unless a predicate says otherwise for a router. */
static moe_status decide_quant(const converter *cv, const conv_module *m, module_out *mo)
{
    const moe_convert_options *o = cv->o;
    mo->bits = mo->group_size = 0;
    mo->entry = ENTRY_NONE;
    if (!m->quantizable || m->cols % o->group_size) return MOE_OK;
    mo->bits = o->bits, mo->group_size = o->group_size;
    if (!m->router) return MOE_OK;
    if (o->router_bits) {
        mo->bits = o->router_bits;
        mo->entry = ENTRY_WITH_MODE;
    } else if (cv->plan.router_bits) {
        mo->bits = cv->plan.router_bits, mo->group_size = cv->plan.router_group_size;
        mo->entry = ENTRY_FAMILY;
        if (m->cols % mo->group_size) /* mlx-lm's to_quantized would fail here */
            return moe_error_set(MOE_ERR_SHAPE, "%s: router '%s' has %lld inputs, not a multiple of group %d, at which "
                                 "%s's quantization puts routers (%d-bit); pass --router-bits to quantize them at "
                                 "--group-size", o->model_dir, m->path, (long long)m->cols, mo->group_size,
                                 cv->cfg.model_type, mo->bits);
    }
    return MOE_OK;
}

static moe_status plan_outputs(converter *cv)
{
    const moe_convert_options *o = cv->o;
    moe_dtype def = o->dtype != MOE_DTYPE_COUNT ? o->dtype : config_dtype(cv->config);
    cv->mo = calloc((size_t)cv->plan.n, sizeof *cv->mo);
    cv->outs = calloc(3 * (size_t)cv->plan.n, sizeof *cv->outs);
    if (!cv->mo || !cv->outs) return moe_error_set(MOE_ERR_NOMEM, "out of memory planning the conversion");
    for (int i = 0; i < cv->plan.n; i++) {
        const conv_module *m = &cv->plan.mods[i];
        module_out *mo = &cv->mo[i];
        mo->dtype = def != MOE_DTYPE_COUNT ? def : m->src[0]->dtype;
        moe_status st = decide_quant(cv, m, mo);
        if (st != MOE_OK) return st;
        int64_t shape[3];
        int nd = 0;
        if (m->experts) shape[nd++] = m->experts;
        if (m->rows) shape[nd++] = m->rows;
        int64_t elems = (m->experts ? m->experts : 1) * (m->rows ? m->rows : 1) * m->cols;
        cv->params += elems;
        const char *dt = moe_dtype_name(mo->dtype);
        if (!mo->bits) {
            shape[nd] = m->cols;
            mo->out[0] = add_output(cv, m->path, "weight", dt, nd + 1, shape);
            mo->out[1] = mo->out[2] = -1;
            continue;
        }
        shape[nd] = m->cols * mo->bits / 32;
        mo->out[0] = add_output(cv, m->path, "weight", "U32", nd + 1, shape);
        shape[nd] = m->cols / mo->group_size;
        mo->out[1] = add_output(cv, m->path, "scales", dt, nd + 1, shape);
        mo->out[2] = add_output(cv, m->path, "biases", dt, nd + 1, shape);
    }
    /* mlx-lm's make_shards: in order, a new shard when the next tensor would
     * take this one past the limit */
    uint64_t limit = o->max_shard_bytes ? o->max_shard_bytes : DEFAULT_SHARD_BYTES, size = 0;
    int count = 0;
    for (int i = 0; i < cv->n_outs; i++) {
        out_tensor *t = &cv->outs[i];
        if (count > 0 && size + t->spec.nbytes > limit) {
            cv->n_shards++;
            size = 0;
            count = 0;
        }
        t->shard = cv->n_shards;
        t->index = count++;
        size += t->spec.nbytes;
    }
    cv->n_shards++;
    return MOE_OK;
}

/* ---- step 3: the files ---- */

static void shard_name(const converter *cv, int s, char *buf, size_t n)
{
    if (cv->n_shards == 1) snprintf(buf, n, "model.safetensors");
    else snprintf(buf, n, "model-%05d-of-%05d.safetensors", s + 1, cv->n_shards);
}

static moe_status check_space(const converter *cv)
{
    struct statvfs vfs;
    if (statvfs(cv->od.tmp, &vfs) != 0) return MOE_OK; /* cannot tell: the writes will */
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize, need = cv->total_bytes + (1u << 20);
    if (avail < need)
        return moe_error_set(MOE_ERR_IO, "%s: the output needs %.2f GB, %.2f GB are free there", cv->od.out,
                             (double)need / 1e9, (double)avail / 1e9);
    return MOE_OK;
}

static moe_status open_shards(converter *cv)
{
    moe_status st = check_space(cv);
    if (st != MOE_OK) return st;
    cv->streams = calloc((size_t)cv->n_shards, sizeof *cv->streams);
    moe_st_out_tensor *specs = malloc(sizeof *specs * (size_t)(cv->n_outs ? cv->n_outs : 1));
    if (!cv->streams || !specs) {
        free(specs);
        return moe_error_set(MOE_ERR_NOMEM, "out of memory opening the output");
    }
    static const char *const META[2] = { "format", "mlx" };
    for (int s = 0, first = 0; s < cv->n_shards && st == MOE_OK; s++) {
        int n = 0;
        while (first + n < cv->n_outs && cv->outs[first + n].shard == s) specs[n] = cv->outs[first + n].spec, n++;
        first += n;
        char name[64];
        shard_name(cv, s, name, sizeof name);
        char *path = moe_outdir_file(&cv->od, name);
        st = path ? moe_st_stream_open(path, specs, n, META, 1, &cv->streams[s]) : MOE_ERR_NOMEM;
        free(path);
    }
    free(specs);
    return st;
}

static moe_status append(converter *cv, int out, const void *data, size_t nbytes)
{
    const out_tensor *t = &cv->outs[out];
    cv->done_bytes += nbytes;
    return moe_st_stream_append(cv->streams[t->shard], t->index, data, nbytes);
}

/* Completes every shard (st == MOE_OK) or removes them all, keeping the
 * message of the first failure. */
static moe_status close_shards(converter *cv, moe_status st)
{
    char why[1024] = "";
    if (st != MOE_OK) snprintf(why, sizeof why, "%s", moe_last_error());
    for (int s = 0; cv->streams && s < cv->n_shards; s++) {
        moe_status closed = moe_st_stream_close(cv->streams[s], st == MOE_OK);
        if (st == MOE_OK && closed != MOE_OK) {
            st = closed;
            snprintf(why, sizeof why, "%s", moe_last_error());
        }
    }
    return st == MOE_OK ? st : moe_error_set(st, "%s", why);
}

/* ---- step 4: the tensors ---- */

/* Rows a source tensor of the module has, and rows converted at a time. */
static size_t source_rows(const conv_module *m)
{
    size_t rows = (size_t)(m->rows ? m->rows : 1);
    return m->n_src == 1 && m->experts ? rows * (size_t)m->experts : rows;
}

static size_t chunk_rows(const conv_module *m)
{
    size_t chunk = CHUNK_ELEMS / (size_t)m->cols ? CHUNK_ELEMS / (size_t)m->cols : 1, rows = source_rows(m);
    return chunk < rows ? chunk : rows;
}

/* One set of buffers for the whole conversion, sized for its largest chunk
 * (scales need at most 2 bytes a group of at least 32 values, codes at most
 * 8 bits a value). */
static moe_status alloc_buffers(converter *cv)
{
    size_t most = 1;
    for (int i = 0; i < cv->plan.n; i++) {
        size_t n = chunk_rows(&cv->plan.mods[i]) * (size_t)cv->plan.mods[i].cols;
        if (n > most) most = n;
    }
    buffers *b = &cv->buf;
    b->f = moe_alloc(most * sizeof(float), "conversion buffer");
    b->cast = moe_alloc(most * sizeof(uint16_t), "conversion buffer");
    b->codes = moe_alloc(most, "conversion buffer");
    b->scales = moe_alloc(most / 8 + 4, "conversion buffer");
    b->biases = moe_alloc(most / 8 + 4, "conversion buffer");
    return b->f && b->cast && b->codes && b->scales && b->biases ? MOE_OK : MOE_ERR_NOMEM;
}

static void free_buffers(buffers *b)
{
    moe_free(b->f), moe_free(b->cast), moe_free(b->codes), moe_free(b->scales), moe_free(b->biases);
}

/* Rows [r0, r0 + nr) of source tensor `src` (cols each) into the module's outputs. */
static moe_status write_rows(converter *cv, const conv_module *m, const module_out *mo, const moe_st_tensor *src,
                             size_t r0, size_t nr, buffers *b)
{
    const moe_dtype_traits *in = moe_dtype_traits_of(src->dtype), *out = moe_dtype_traits_of(mo->dtype);
    size_t cols = (size_t)m->cols, n = nr * cols;
    const unsigned char *p = (const unsigned char *)src->data + r0 * cols * in->size;
    moe_status st;
    if (!mo->bits && src->dtype == mo->dtype) {
        st = append(cv, mo->out[0], p, n * in->size); /* the very bytes */
    } else {
        in->to_f32(p, b->f, n);
        if (mo->dtype != MOE_DTYPE_F32 && mo->dtype != src->dtype) out->from_f32(b->f, b->cast, n);
        if (!mo->bits) {
            st = append(cv, mo->out[0], mo->dtype == MOE_DTYPE_F32 ? (void *)b->f : b->cast, n * out->size);
        } else {
            /* the values cast to the output dtype are what gets quantized */
            if (mo->dtype != MOE_DTYPE_F32 && mo->dtype != src->dtype) out->to_f32(b->cast, b->f, n);
            moe_affine_format fmt = { mo->bits, mo->group_size, mo->dtype };
            size_t words = moe_affine_row_words((int)cols, mo->bits) * nr;
            size_t params = cols / (size_t)fmt.group_size * nr * out->size;
            st = moe_affine_quantize(&fmt, b->f, (int)nr, (int)cols, b->codes, b->scales, b->biases);
            if (st == MOE_OK) st = append(cv, mo->out[0], b->codes, words * sizeof(uint32_t));
            if (st == MOE_OK) st = append(cv, mo->out[1], b->scales, params);
            if (st == MOE_OK) st = append(cv, mo->out[2], b->biases, params);
        }
    }
    /* these source pages are done with: out of this process's memory */
    moe_st_tensor piece = *src;
    piece.data = p;
    piece.nbytes = n * in->size;
    moe_st_tensor_release(&piece);
    return st;
}

static moe_status write_module(converter *cv, const conv_module *m, const module_out *mo)
{
    size_t rows = source_rows(m), chunk = chunk_rows(m);
    moe_status st = MOE_OK;
    for (int s = 0; s < m->n_src && st == MOE_OK; s++) {
        for (size_t r0 = 0; r0 < rows && st == MOE_OK; r0 += chunk)
            st = write_rows(cv, m, mo, m->src[s], r0, rows - r0 < chunk ? rows - r0 : chunk, &cv->buf);
        if (st == MOE_OK && cv->o->progress &&
            cv->o->progress(cv->o->progress_user, cv->done_bytes, cv->total_bytes, m->path))
            st = moe_error_set(MOE_ERR_IO, "conversion interrupted; '%s' is left as it was", cv->o->out_dir);
    }
    return st;
}

/* ---- step 5: the other files ---- */

static moe_status write_json(const converter *cv, const char *name, json_object *obj)
{
    char *path = moe_outdir_file(&cv->od, name);
    if (!path) return MOE_ERR_NOMEM;
    const char *text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);
    moe_atomic_file af;
    moe_status st = moe_atomic_open(path, &af);
    if (st == MOE_OK) st = moe_atomic_close(&af, fputs(text, af.f) >= 0 && fputc('\n', af.f) != EOF);
    free(path);
    return st;
}

static int cmp_out_name(const void *a, const void *b)
{
    return strcmp((*(const out_tensor *const *)a)->name, (*(const out_tensor *const *)b)->name);
}

/* mlx-lm's index: always written, even for one shard. */
static moe_status write_index(const converter *cv)
{
    const out_tensor **sorted = malloc(sizeof *sorted * (size_t)(cv->n_outs ? cv->n_outs : 1));
    if (!sorted) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    for (int i = 0; i < cv->n_outs; i++) sorted[i] = &cv->outs[i];
    qsort(sorted, (size_t)cv->n_outs, sizeof *sorted, cmp_out_name);
    json_object *root = json_object_new_object(), *meta = json_object_new_object(), *map = json_object_new_object();
    json_object_object_add(meta, "total_size", json_object_new_int64((int64_t)cv->total_bytes));
    json_object_object_add(meta, "total_parameters", json_object_new_int64(cv->params));
    json_object_object_add(root, "metadata", meta);
    for (int i = 0; i < cv->n_outs; i++) {
        char name[64];
        shard_name(cv, sorted[i]->shard, name, sizeof name);
        json_object_object_add(map, sorted[i]->name, json_object_new_string(name));
    }
    json_object_object_add(root, "weight_map", map);
    moe_status st = write_json(cv, "model.safetensors.index.json", root);
    json_object_put(root);
    free(sorted);
    return st;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The source's config with the quantization blocks, keys sorted as mlx-lm's
 * save_config sorts them. */
static moe_status write_config(const converter *cv)
{
    const moe_convert_options *o = cv->o;
    json_object *q = json_object_new_object();
    json_object_object_add(q, "group_size", json_object_new_int(o->group_size));
    json_object_object_add(q, "bits", json_object_new_int(o->bits));
    json_object_object_add(q, "mode", json_object_new_string("affine"));
    for (int i = 0; i < cv->plan.n; i++) {
        const module_out *mo = &cv->mo[i];
        if (mo->entry == ENTRY_NONE) continue;
        json_object *e = json_object_new_object();
        json_object_object_add(e, "group_size", json_object_new_int(mo->group_size));
        json_object_object_add(e, "bits", json_object_new_int(mo->bits));
        if (mo->entry == ENTRY_WITH_MODE) json_object_object_add(e, "mode", json_object_new_string("affine"));
        json_object_object_add(q, cv->plan.mods[i].path, e);
    }
    static const char *const DROP[] = { "_name_or_path", "vision_config", "quantization", "quantization_config" };
    for (size_t i = 0; i < sizeof DROP / sizeof DROP[0]; i++) json_object_object_del(cv->config, DROP[i]);
    json_object *copy = NULL;
    json_object_deep_copy(q, &copy, NULL);
    json_object_object_add(cv->config, "quantization", q);
    json_object_object_add(cv->config, "quantization_config", copy);
    int n = json_object_object_length(cv->config), k = 0;
    const char **keys = malloc(sizeof *keys * (size_t)n);
    if (!keys) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    json_object_object_foreach(cv->config, key, val) {
        (void)val;
        keys[k++] = key;
    }
    qsort(keys, (size_t)n, sizeof *keys, cmp_str);
    json_object *sorted = json_object_new_object();
    for (int i = 0; i < n; i++)
        json_object_object_add(sorted, keys[i], json_object_get(json_object_object_get(cv->config, keys[i])));
    moe_status st = write_json(cv, "config.json", sorted);
    json_object_put(sorted);
    free(keys);
    return st;
}

/* What a tokenizer and generation need, as the hub names them. */
static int is_tokenizer_file(const char *name)
{
    static const char *const PATTERNS[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                            "generation_config.json", "added_tokens.json", "vocab.json",
                                            "chat_template.json", "*.jinja", "*.txt", "*.model", "*.tiktoken" };
    for (size_t i = 0; i < sizeof PATTERNS / sizeof PATTERNS[0]; i++)
        if (fnmatch(PATTERNS[i], name, FNM_PERIOD) == 0) return 1;
    return 0;
}

static moe_status copy_tokenizer(const converter *cv)
{
    DIR *d = opendir(cv->o->model_dir);
    if (!d) return moe_error_set(MOE_ERR_IO, "%s: cannot list it", cv->o->model_dir);
    moe_status st = MOE_OK;
    for (struct dirent *e; st == MOE_OK && (e = readdir(d)) != NULL;) {
        if (!is_tokenizer_file(e->d_name)) continue;
        char *from = path_in(cv->o->model_dir, e->d_name), *to = moe_outdir_file(&cv->od, e->d_name);
        struct stat sb;
        if (!from || !to) st = moe_error_set(MOE_ERR_NOMEM, "out of memory");
        else if (stat(from, &sb) == 0 && S_ISREG(sb.st_mode)) st = moe_copy_file(from, to);
        free(from), free(to);
    }
    closedir(d);
    return st;
}

/* ---- the whole ---- */

static moe_status check_options(const moe_convert_options *o)
{
    if (!o || !o->model_dir || !o->out_dir)
        return moe_error_set(MOE_ERR_INVALID_ARG, "convert: the source and output directories are required");
    if (o->bits != 4 && o->bits != 8)
        return moe_error_set(MOE_ERR_INVALID_ARG, "convert: bits %d is not 4 or 8 (the widths moe runs)", o->bits);
    if (o->router_bits && o->router_bits != 4 && o->router_bits != 8)
        return moe_error_set(MOE_ERR_INVALID_ARG, "convert: router bits %d is not 4 or 8 (the widths moe runs)",
                             o->router_bits);
    if (o->group_size != 32 && o->group_size != 64 && o->group_size != 128)
        return moe_error_set(MOE_ERR_INVALID_ARG, "convert: group size %d is not 32, 64 or 128", o->group_size);
    if (o->dtype != MOE_DTYPE_F32 && o->dtype != MOE_DTYPE_F16 && o->dtype != MOE_DTYPE_BF16 &&
        o->dtype != MOE_DTYPE_COUNT)
        return moe_error_set(MOE_ERR_INVALID_ARG, "convert: dtype %d is not F32, F16 or BF16", (int)o->dtype);
    return MOE_OK;
}

static void fill_result(const converter *cv, moe_convert_result *r)
{
    memset(r, 0, sizeof *r);
    r->tensors = cv->n_outs;
    r->shards = cv->n_shards;
    r->tensor_bytes = cv->total_bytes;
    r->parameters = cv->params;
    r->dtype = cv->plan.n ? cv->mo[0].dtype : MOE_DTYPE_COUNT;
    for (int i = 0; i < cv->plan.n; i++) {
        if (cv->mo[i].bits) r->quantized_modules++;
        else r->float_modules++;
        if (cv->mo[i].entry != ENTRY_NONE) /* only routers get entries */
            r->router_bits = cv->mo[i].bits, r->router_group_size = cv->mo[i].group_size;
        if (cv->mo[i].dtype != r->dtype) r->dtype = MOE_DTYPE_COUNT;
    }
}

moe_status moe_checkpoint_convert(const moe_convert_options *o, moe_convert_result *result)
{
    moe_status st = check_options(o);
    if (st != MOE_OK) return st;
    converter cv = { .o = o };
    int begun = 0;
    if ((st = open_source(&cv)) == MOE_OK && (st = plan_outputs(&cv)) == MOE_OK &&
        (st = moe_outdir_begin(o->out_dir, o->force, o->model_dir, &cv.od)) == MOE_OK) {
        begun = 1;
        st = open_shards(&cv);
        if (st == MOE_OK) st = alloc_buffers(&cv);
        for (int i = 0; i < cv.plan.n && st == MOE_OK; i++) st = write_module(&cv, &cv.plan.mods[i], &cv.mo[i]);
        st = close_shards(&cv, st);
        if (st == MOE_OK) st = write_index(&cv);
        if (st == MOE_OK) st = write_config(&cv);
        if (st == MOE_OK) st = copy_tokenizer(&cv);
    }
    if (st == MOE_OK && result) fill_result(&cv, result), result->stale_removed = cv.od.stale_removed;
    if (begun) {
        if (st == MOE_OK) st = moe_outdir_commit(&cv.od);
        else moe_outdir_abort(&cv.od);
    }
    free_buffers(&cv.buf);
    free(cv.streams);
    free(cv.outs);
    free(cv.mo);
    conv_plan_free(&cv.plan);
    moe_st_set_close(cv.set);
    json_object_put(cv.config);
    moe_config_free(&cv.cfg);
    return st;
}
