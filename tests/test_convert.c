/* tests/test_convert.c — `moe convert` and `moe inspect` through their API
 * (moe/checkpoint.h), and the streaming safetensors writer under them.
 *
 *  - the committed fixtures converted: gqa_tied (BF16, sharded, tied, routers
 *    at 8 bits) gives gqa_tied-q4 byte for byte; base (F32) at --dtype f32
 *    gives base-q4's and base-q8's codes and norms byte for byte and scales
 *    and biases that round to theirs (the fixture script stored bf16 scales
 *    of float32 weights, a mix mlx-lm never writes: it casts the model to the
 *    dtype first, then quantizes the cast weights; --dtype bf16 does that);
 *    the converted models' logits match transformers' within 1e-3;
 *  - Qwen3-MoE and Mixtral checkpoints written here: the tensors mlx-lm
 *    writes in its order (per-head QK norms, a dense layer's gate/down/up,
 *    Mixtral's w1/w3/w2 as gate/up/down), codes of the sources quantized
 *    here, routers at the family's bits (Qwen3's quant_predicate: 8, group
 *    64) or --router-bits, the config blocks as mlx-lm writes them; each
 *    loads and computes as its dequantized twin; the family fixtures convert
 *    with every weight near its source, and mlx-lm's own conversions inspect
 *    with their routers and dense layers;
 *  - hand-checked groups (codes, packing, scales, biases, 4 and 8 bits);
 *  - a projection whose input dim does not divide by the group size stays
 *    float, and the mixed model loads and computes as its dequantized twin;
 *  - sharding as mlx-lm shards, tokenizer files, the config blocks;
 *  - an existing --out refused, replaced with force, never a directory that
 *    holds the source; the source never changes;
 *  - a conversion killed mid-way (SIGKILL from inside, or from outside while
 *    the moe command runs) leaves no --out; SIGINT cleans up;
 *  - peak memory while converting stays far under the largest tensor;
 *  - inspect: layouts, groups, QK-norm, dense layers, parameters, resident
 *    bytes equal to what the loaded model holds, for every family;
 *  - bad input: errors that name the fault, nothing left behind. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "io/model_config.h"
#include "io/output_dir.h"
#include "io/safetensors.h"
#include "io/safetensors_write.h"
#include "moe/checkpoint.h"
#include "moe/model.h"
#include "quant/affine.h"
#include "quant/dtype.h"
#include "support/testutil.h"

#define FIX MOE_SOURCE_DIR "/tests/fixtures/olmoe/"
#define FAMFIX MOE_SOURCE_DIR "/tests/fixtures/families/"

/* ---- helpers ---- */

static char *temp_dir(void)
{
    char *d = strdup("/tmp/moe-test-convert-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static char *path2(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

static int exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

/* Entries of dir whose names start with prefix. */
static int count_prefixed(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

static moe_convert_options opts(const char *src, const char *out, int bits, int group, moe_dtype dtype)
{
    moe_convert_options o = moe_convert_default_options();
    o.model_dir = src, o.out_dir = out, o.bits = bits, o.group_size = group, o.dtype = dtype;
    return o;
}

static void convert_ok(const moe_convert_options *o, moe_convert_result *r)
{
    moe_convert_result local;
    if (moe_checkpoint_convert(o, r ? r : &local) != MOE_OK) fail_msg("convert %s: %s", o->model_dir, moe_last_error());
}

static void convert_fails(const moe_convert_options *o, moe_status want, const char *needle)
{
    moe_status st = moe_checkpoint_convert(o, NULL);
    if (st != want) fail_msg("convert %s: status %d, want %d (%s)", o->model_dir, st, want, moe_last_error());
    if (!strstr(moe_last_error(), needle)) fail_msg("message \"%s\" does not name \"%s\"", moe_last_error(), needle);
}

static moe_st_set *open_set(const char *dir)
{
    moe_st_set *s;
    if (moe_st_set_open(dir, &s) != MOE_OK) fail_msg("%s", moe_last_error());
    return s;
}

static const moe_st_tensor *must_find(const moe_st_set *s, const char *name)
{
    const moe_st_tensor *t = moe_st_set_find(s, name);
    if (!t) fail_msg("tensor '%s' is missing", name);
    return t;
}

static float *logits_of(const char *dir, const int32_t *ids, int n, int *vocab)
{
    moe_model_options mo = moe_model_default_options();
    mo.activations = MOE_ACT_FLOAT;
    moe_model *m;
    if (moe_model_load(dir, &mo, &m) != MOE_OK) fail_msg("load %s: %s", dir, moe_last_error());
    *vocab = moe_model_get_info(m).vocab_size;
    float *out = malloc(sizeof(float) * (size_t)n * (size_t)*vocab);
    moe_context *c;
    assert_int_equal(moe_context_create(m, n, n, &c), MOE_OK);
    assert_int_equal(moe_context_eval(c, ids, n, out, 1), MOE_OK);
    moe_context_free(c);
    moe_model_free(m);
    return out;
}

/* Every row of got within tol of want, relative to the row's largest |want|. */
static double check_rows(const char *what, const float *got, const float *want, int rows, int cols, double tol)
{
    double worst = 0;
    for (int r = 0; r < rows; r++) {
        double scale = 0;
        for (int c = 0; c < cols; c++) scale = fmax(scale, fabs(want[(size_t)r * cols + c]));
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * cols + c;
            double err = fabs((double)got[i] - want[i]) / scale;
            if (!(err <= tol)) fail_msg("%s: [%d][%d] = %.7g, want %.7g (%.2g of the row's largest)", what, r, c, got[i],
                                        want[i], err);
            worst = fmax(worst, err);
        }
    }
    printf("  %-40s largest error %.2e (limit %.0e)\n", what, worst, tol);
    return worst;
}

/* The converted model's logits against transformers' on the fixture. */
static void matches_reference(const char *dir, const char *fixture, double tol)
{
    char path[1024];
    snprintf(path, sizeof path, FIX "%s.reference.safetensors", fixture);
    moe_st_file *f;
    assert_int_equal(moe_st_open(path, &f), MOE_OK);
    const moe_st_tensor *t = moe_st_find(f, "tokens"), *l = moe_st_find(f, "logits");
    int n = (int)t->shape[0], vocab;
    float *got = logits_of(dir, t->data, n, &vocab);
    assert_int_equal(vocab, l->shape[1]);
    char what[128];
    snprintf(what, sizeof what, "converted %s vs transformers", fixture);
    check_rows(what, got, l->data, n, vocab, tol);
    free(got);
    moe_st_close(f);
}

static const moe_checkpoint_group *group_named(const moe_checkpoint_info *in, const char *pattern)
{
    for (int i = 0; i < in->num_groups; i++)
        if (!strcmp(in->groups[i].pattern, pattern)) return &in->groups[i];
    fail_msg("no module group '%s'", pattern);
    return NULL;
}

static moe_checkpoint_info *inspect_ok(const char *dir)
{
    moe_checkpoint_info *in;
    if (moe_checkpoint_inspect(dir, &in) != MOE_OK) fail_msg("inspect %s: %s", dir, moe_last_error());
    return in;
}

/* inspect's resident bytes are what the loaded model holds. */
static void resident_as_loaded(const char *dir, const moe_checkpoint_info *in)
{
    moe_model *m;
    if (moe_model_load(dir, NULL, &m) != MOE_OK) fail_msg("load %s: %s", dir, moe_last_error());
    assert_int_equal(in->resident_bytes, moe_model_get_info(m).weight_bytes);
    moe_model_free(m);
}

static uint64_t file_sum(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint64_t h = 1469598103934665603ull;
    for (int c; (c = fgetc(f)) != EOF;) h = (h ^ (unsigned)c) * 1099511628211ull;
    fclose(f);
    return h;
}

/* ---- a checkpoint written here ---- */

typedef struct {
    moe_arch arch;             /* the family (default OLMoE) */
    int D, L, H, KV, HD, E, K, I, V, tied;
    int DI, dense;             /* Qwen3-MoE: a dense layer's hidden size, and a bit per
                                  layer in mlp_only_layers */
    int bf16;                  /* weights in BF16, else F32 */
    const char *drop;          /* leave this tensor out */
    const char *extra;         /* add this tensor, unknown to OLMoE */
    const char *reshape;       /* give this tensor one row fewer */
    /* optional: fills a tensor's values instead of the seeded random ones */
    void (*fill)(const char *name, float *w, int64_t rows, int64_t cols);
} ckpt;

enum { MAX_T = 512 };

typedef struct {
    char names[MAX_T][96];
    moe_st_out_tensor t[MAX_T];
    int norm[MAX_T];
    int n;
} tlist;

static void tl_add(tlist *tl, const char *name, int64_t rows, int64_t cols, int norm, int bf16)
{
    int i = tl->n++;
    assert_true(i < MAX_T);
    snprintf(tl->names[i], sizeof tl->names[i], "%s", name);
    moe_st_out_tensor *t = &tl->t[i];
    *t = (moe_st_out_tensor){ .name = tl->names[i], .dtype = bf16 ? "BF16" : "F32", .ndim = rows ? 2 : 1,
                              .shape = { rows ? rows : cols, cols } };
    t->nbytes = (size_t)(rows ? rows : 1) * (size_t)cols * (bf16 ? 2 : 4);
    tl->norm[i] = norm;
}

static uint64_t name_seed(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* The value a ckpt's tensor holds at index i, before rounding to its dtype. */
static void ckpt_values(const ckpt *c, const char *name, int norm, float *w, int64_t rows, int64_t cols)
{
    uint64_t rng = name_seed(name);
    size_t n = (size_t)(rows ? rows : 1) * (size_t)cols;
    for (size_t i = 0; i < n; i++)
        w[i] = norm ? 1.0f + 0.25f * (float)test_rand_uniform(&rng, -1, 1) : (float)test_rand_uniform(&rng, -0.3, 0.3);
    if (c->fill) c->fill(name, w, rows, cols);
}

/* config.json as each family's Hugging Face checkpoints write it
 * (transformers 4's names) */
static void write_ckpt_config(const char *dir, const ckpt *c)
{
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"%s\", \"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
               " \"num_key_value_heads\": %d, \"head_dim\": %d, \"num_experts_per_tok\": %d, \"vocab_size\": %d,"
               " \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, \"torch_dtype\": \"%s\","
               " \"_name_or_path\": \"somewhere\", \"eos_token_id\": 1, \"max_position_embeddings\": 512, ",
            moe_arch_name(c->arch), c->D, c->L, c->H, c->KV, c->HD, c->K, c->V, c->tied ? "true" : "false",
            c->bf16 ? "bfloat16" : "float32");
    if (c->arch == MOE_ARCH_QWEN3_MOE) {
        fprintf(f, "\"moe_intermediate_size\": %d, \"intermediate_size\": %d, \"num_experts\": %d, "
                   "\"decoder_sparse_step\": 1, \"norm_topk_prob\": true, \"mlp_only_layers\": [", c->I, c->DI, c->E);
        for (int l = 0, k = 0; l < c->L; l++)
            if (c->dense >> l & 1) fprintf(f, "%s%d", k++ ? ", " : "", l);
        fprintf(f, "]}\n");
    } else {
        fprintf(f, "\"intermediate_size\": %d, \"%s\": %d}\n", c->I,
                c->arch == MOE_ARCH_MIXTRAL ? "num_local_experts" : "num_experts", c->E);
    }
    fclose(f);
}

/* The hand-written names of each family's Hugging Face checkpoint. */
static void write_ckpt(const char *dir, const ckpt *c)
{
    char p[600], n[96];
    write_ckpt_config(dir, c);
    int mixtral = c->arch == MOE_ARCH_MIXTRAL, qwen3 = c->arch == MOE_ARCH_QWEN3_MOE;
    const char *block = mixtral ? "block_sparse_moe" : "mlp";
    static const char *const HUB[3] = { "gate_proj", "up_proj", "down_proj" }, *const W[3] = { "w1", "w3", "w2" };
    static tlist tl;
    tl.n = 0;
    tl_add(&tl, "model.embed_tokens.weight", c->V, c->D, 0, c->bf16);
    for (int l = 0; l < c->L; l++) {
#define NAME(fmt, ...) (snprintf(n, sizeof n, "model.layers.%d." fmt, l, ##__VA_ARGS__), n)
        tl_add(&tl, NAME("input_layernorm.weight"), 0, c->D, 1, c->bf16);
        tl_add(&tl, NAME("post_attention_layernorm.weight"), 0, c->D, 1, c->bf16);
        tl_add(&tl, NAME("self_attn.q_proj.weight"), c->H * c->HD, c->D, 0, c->bf16);
        tl_add(&tl, NAME("self_attn.k_proj.weight"), c->KV * c->HD, c->D, 0, c->bf16);
        tl_add(&tl, NAME("self_attn.v_proj.weight"), c->KV * c->HD, c->D, 0, c->bf16);
        tl_add(&tl, NAME("self_attn.o_proj.weight"), c->D, c->H * c->HD, 0, c->bf16);
        if (!mixtral) { /* OLMoE's over the whole projection, Qwen3's per head */
            tl_add(&tl, NAME("self_attn.q_norm.weight"), 0, qwen3 ? c->HD : c->H * c->HD, 1, c->bf16);
            tl_add(&tl, NAME("self_attn.k_norm.weight"), 0, qwen3 ? c->HD : c->KV * c->HD, 1, c->bf16);
        }
        if (c->dense >> l & 1) {
            tl_add(&tl, NAME("mlp.gate_proj.weight"), c->DI, c->D, 0, c->bf16);
            tl_add(&tl, NAME("mlp.up_proj.weight"), c->DI, c->D, 0, c->bf16);
            tl_add(&tl, NAME("mlp.down_proj.weight"), c->D, c->DI, 0, c->bf16);
            continue;
        }
        tl_add(&tl, NAME("%s.gate.weight", block), c->E, c->D, 0, c->bf16);
        for (int e = 0; e < c->E; e++)
            for (int i = 0; i < 3; i++)
                tl_add(&tl, NAME("%s.experts.%d.%s.weight", block, e, mixtral ? W[i] : HUB[i]), i < 2 ? c->I : c->D,
                       i < 2 ? c->D : c->I, 0, c->bf16);
#undef NAME
    }
    tl_add(&tl, "model.norm.weight", 0, c->D, 1, c->bf16);
    if (!c->tied) tl_add(&tl, "lm_head.weight", c->V, c->D, 0, c->bf16);
    if (c->extra) tl_add(&tl, c->extra, 0, 4, 0, c->bf16);
    /* damage, then write tensor by tensor through the stream */
    moe_st_out_tensor specs[MAX_T];
    int idx[MAX_T], k = 0;
    for (int i = 0; i < tl.n; i++) {
        if (c->drop && !strcmp(tl.names[i], c->drop)) continue;
        if (c->reshape && !strcmp(tl.names[i], c->reshape)) {
            tl.t[i].nbytes = tl.t[i].nbytes / (size_t)tl.t[i].shape[0] * (size_t)(tl.t[i].shape[0] - 1);
            tl.t[i].shape[0]--;
        }
        idx[k] = i;
        specs[k++] = tl.t[i];
    }
    moe_st_stream *s;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(moe_st_stream_open(p, specs, k, NULL, 0, &s), MOE_OK);
    for (int j = 0; j < k; j++) {
        const moe_st_out_tensor *t = &specs[j];
        int64_t rows = t->ndim == 2 ? t->shape[0] : 0, cols = t->shape[t->ndim - 1];
        size_t count = (size_t)(rows ? rows : 1) * (size_t)cols;
        float *w = malloc(sizeof(float) * count);
        ckpt_values(c, t->name, tl.norm[idx[j]], w, rows, cols);
        void *bytes = w;
        if (c->bf16) {
            bytes = malloc(2 * count);
            moe_dtype_traits_of(MOE_DTYPE_BF16)->from_f32(w, bytes, count);
        }
        assert_int_equal(moe_st_stream_append(s, j, bytes, t->nbytes), MOE_OK);
        if (bytes != w) free(bytes);
        free(w);
    }
    assert_int_equal(moe_st_stream_close(s, 1), MOE_OK);
}

static const ckpt TINY = { .D = 64, .L = 2, .H = 2, .KV = 1, .HD = 32, .E = 4, .K = 2, .I = 32, .V = 16 };

/* ---- the streaming writer ---- */

static void stream_writes_what_write_writes(void **state)
{
    (void)state;
    char *dir = temp_dir(), *a = path2(dir, "a.safetensors"), *b = path2(dir, "b.safetensors");
    float f[6] = { 1, -2, 3.5f, 4, 5, 6 };
    uint16_t h[5] = { 0x3f80, 0x4000, 0xbf80, 1, 2 };
    uint32_t u[4] = { 0xdeadbeef, 1, 2, 3 };
    const moe_st_out_tensor t[3] = {
        { "h", "BF16", 1, { 5 }, h, sizeof h }, { "f", "F32", 2, { 2, 3 }, f, sizeof f }, { "u", "U32", 1, { 4 }, u, sizeof u } };
    const char *meta[2] = { "format", "mlx" };
    assert_int_equal(moe_st_write(a, t, 3, meta, 1), MOE_OK);
    /* pieces of every tensor, interleaved */
    moe_st_stream *s;
    assert_int_equal(moe_st_stream_open(b, t, 3, meta, 1, &s), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 2, u, 4), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 0, h, 6), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 1, f, 12), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 2, u + 1, 12), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 0, h + 3, 4), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 1, f + 3, 12), MOE_OK);
    assert_false(exists(b)); /* only the temporary file until it is complete */
    assert_int_equal(moe_st_stream_close(s, 1), MOE_OK);
    assert_int_equal(file_sum(a), file_sum(b));
    moe_st_file *rf;
    assert_int_equal(moe_st_open(b, &rf), MOE_OK);
    assert_memory_equal(moe_st_find(rf, "f")->data, f, sizeof f);
    assert_int_equal((uintptr_t)moe_st_find(rf, "f")->data % 4, 0);
    moe_st_close(rf);
    unlink(a), unlink(b);

    /* an incomplete tensor: no file, the message names it */
    assert_int_equal(moe_st_stream_open(b, t, 3, NULL, 0, &s), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 0, h, sizeof h), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 1, f, 8), MOE_OK);
    assert_int_equal(moe_st_stream_append(s, 1, f, sizeof f), MOE_ERR_INVALID_ARG); /* past its end */
    assert_non_null(strstr(moe_last_error(), "tensor 'f' given 8 bytes more than its 24"));
    assert_int_equal(moe_st_stream_close(s, 1), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "tensor 'f' has 8 of its 24 bytes"));
    assert_false(exists(b));
    assert_int_equal(count_prefixed(dir, "b.safetensors"), 0);
    /* a size that does not fit the shape */
    moe_st_out_tensor bad = { "x", "F32", 2, { 2, 2 }, NULL, 12 };
    assert_int_equal(moe_st_stream_open(b, &bad, 1, NULL, 0, &s), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "tensor 'x' is given 12 bytes; its dtype and shape need 16"));
    free(a), free(b);
    rmdir(dir);
    free(dir);
}

/* An MLX float checkpoint of the converted one's dequantized weights. */
static void write_dequantized(const char *qdir, const char *fdir)
{
    moe_st_set *s = open_set(qdir);
    moe_model_config cfg;
    char *cp = path2(qdir, "config.json");
    assert_int_equal(moe_config_load(cp, &cfg), MOE_OK);
    moe_st_out_tensor t[MAX_T];
    void *bufs[MAX_T];
    char names[MAX_T][96];
    int n = 0;
    for (int i = 0; i < moe_st_set_count(s); i++) {
        const moe_st_tensor *x = moe_st_set_at(s, i);
        size_t len = strlen(x->name);
        if (len > 7 && (!strcmp(x->name + len - 7, ".scales") || !strcmp(x->name + len - 7, ".biases"))) continue;
        snprintf(names[n], sizeof names[n], "%s", x->name);
        t[n] = (moe_st_out_tensor){ .name = names[n], .dtype = x->dtype_name, .ndim = x->ndim };
        memcpy(t[n].shape, x->shape, sizeof t[n].shape);
        if (x->dtype != MOE_DTYPE_U32) {
            bufs[n] = malloc(x->nbytes);
            memcpy(bufs[n], x->data, x->nbytes);
            t[n].nbytes = x->nbytes;
        } else {
            char mod[96], sn[110], bn[110];
            snprintf(mod, sizeof mod, "%.*s", (int)(len - 7), x->name);
            snprintf(sn, sizeof sn, "%s.scales", mod), snprintf(bn, sizeof bn, "%s.biases", mod);
            const moe_st_tensor *sc = must_find(s, sn), *bi = must_find(s, bn);
            int bits, group;
            moe_config_module_quant(&cfg, mod, &bits, &group);
            int cols = (int)sc->shape[sc->ndim - 1] * group, rows = 1;
            for (int d = 0; d < x->ndim - 1; d++) rows *= (int)x->shape[d];
            moe_affine_format f = { bits, group, sc->dtype };
            bufs[n] = malloc(sizeof(float) * (size_t)rows * cols);
            assert_int_equal(moe_affine_dequantize(&f, x->data, sc->data, bi->data, rows, cols, bufs[n]), MOE_OK);
            t[n].dtype = "F32";
            t[n].shape[x->ndim - 1] = cols;
            t[n].nbytes = sizeof(float) * (size_t)rows * cols;
        }
        t[n].data = bufs[n];
        n++;
    }
    mkdir(fdir, 0755);
    char *mp = path2(fdir, "model.safetensors");
    assert_int_equal(moe_st_write(mp, t, n, NULL, 0), MOE_OK);
    for (int i = 0; i < n; i++) free(bufs[i]);
    /* the config without its quantization blocks */
    json_object *j = json_object_from_file(cp);
    json_object_object_del(j, "quantization");
    json_object_object_del(j, "quantization_config");
    char *fp = path2(fdir, "config.json");
    assert_int_equal(json_object_to_file(fp, j), 0);
    json_object_put(j);
    moe_config_free(&cfg);
    moe_st_set_close(s);
    free(cp), free(mp), free(fp);
}

/* The converted model computes what its dequantized twin (float weights,
 * the same values) computes: its tensors are read as they were meant. */
static void matches_dequantized(const char *qdir, const char *scratch, const char *what)
{
    static const int32_t ids[] = { 1, 15, 7, 7, 0, 3, 12, 9 };
    int vocab;
    write_dequantized(qdir, scratch);
    float *a = logits_of(qdir, ids, 8, &vocab), *b = logits_of(scratch, ids, 8, &vocab);
    check_rows(what, a, b, 8, vocab, 1e-5);
    free(a), free(b);
    moe_remove_tree(scratch);
}

/* ---- the fixtures ---- */

/* Every tensor of want in got with the same name, shape and bytes; where
 * got has F32 and want BF16, got rounded to bf16 equals want. */
static void same_tensors(const char *got_dir, const char *want_dir, int *exact, int *rounded)
{
    moe_st_set *g = open_set(got_dir), *w = open_set(want_dir);
    assert_int_equal(moe_st_set_count(g), moe_st_set_count(w));
    *exact = *rounded = 0;
    for (int i = 0; i < moe_st_set_count(w); i++) {
        const moe_st_tensor *b = moe_st_set_at(w, i), *a = must_find(g, b->name);
        assert_int_equal(a->ndim, b->ndim);
        for (int d = 0; d < a->ndim; d++) assert_int_equal(a->shape[d], b->shape[d]);
        if (!strcmp(a->dtype_name, b->dtype_name)) {
            if (memcmp(a->data, b->data, a->nbytes)) fail_msg("%s: bytes differ from %s", a->name, want_dir);
            (*exact)++;
            continue;
        }
        assert_string_equal(a->dtype_name, "F32");
        assert_string_equal(b->dtype_name, "BF16");
        const float *af = a->data;
        const uint16_t *bh = b->data;
        for (size_t k = 0; k < b->nbytes / 2; k++)
            if (moe_f32_to_bf16(af[k]) != bh[k]) fail_msg("%s[%zu]: bf16(%.9g) != 0x%04x", a->name, k, af[k], bh[k]);
        (*rounded)++;
    }
    moe_st_set_close(g), moe_st_set_close(w);
}

static void fixtures_byte_for_byte(void **state)
{
    (void)state;
    char *dir = temp_dir(), *out = path2(dir, "q");
    int exact, rounded;
    /* gqa_tied (BF16, two shards, tied head) with 8-bit routers: gqa_tied-q4 whole */
    moe_convert_options o = opts(FIX "gqa_tied", out, 4, 64, MOE_DTYPE_COUNT);
    o.router_bits = 8;
    moe_convert_result r;
    convert_ok(&o, &r);
    same_tensors(out, FIX "gqa_tied-q4", &exact, &rounded);
    assert_int_equal(exact, 60);
    assert_int_equal(rounded, 0);
    assert_int_equal(r.tensors, 60);
    assert_int_equal(r.shards, 1);
    assert_int_equal(r.dtype, MOE_DTYPE_BF16);
    assert_int_equal(r.parameters, 526720); /* what transformers' index says */
    /* the same logits as the fixture, bit for bit, and transformers' within 1e-3 */
    static const int32_t ids[] = { 3, 77, 200, 5, 5, 9, 141 };
    int vocab;
    float *a = logits_of(out, ids, 7, &vocab), *b = logits_of(FIX "gqa_tied-q4", ids, 7, &vocab);
    assert_memory_equal(a, b, sizeof(float) * 7 * (size_t)vocab);
    free(a), free(b);
    matches_reference(out, "gqa_tied-q4", 1e-3);
    /* the config as mlx-lm writes it, read back as the loader reads it */
    char *cfgp = path2(out, "config.json");
    moe_model_config cfg;
    assert_int_equal(moe_config_load(cfgp, &cfg), MOE_OK);
    assert_int_equal(cfg.quant_bits, 4);
    assert_int_equal(cfg.quant_group_size, 64);
    assert_int_equal(cfg.num_overrides, 2);
    int bits, group;
    moe_config_module_quant(&cfg, "model.layers.1.mlp.gate", &bits, &group);
    assert_int_equal(bits, 8);
    moe_config_free(&cfg);
    json_object *j = json_object_from_file(cfgp), *q, *v;
    assert_true(json_object_object_get_ex(j, "quantization_config", &q));
    assert_true(json_object_object_get_ex(q, "mode", &v));
    assert_string_equal(json_object_get_string(v), "affine");
    assert_true(json_object_object_get_ex(q, "model.layers.0.mlp.gate", &v));
    assert_string_equal(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                        "{\"group_size\":64,\"bits\":8,\"mode\":\"affine\"}");
    json_object_put(j);
    free(cfgp);
    moe_remove_tree(out);

    /* base (F32) at f32: base-q4's codes and norms, scales rounding to its.
     * transformers ran on the bf16-scaled weights; these keep the float32
     * scales the codes were made with, and on these sharp tiny models (router
     * gaps down to 1e-3) that alone moves logits by 3%: not base-q4's
     * reference, so the check is against the dequantized twin */
    char *twin = path2(dir, "twin");
    for (int bits8 = 0; bits8 <= 1; bits8++) {
        o = opts(FIX "base", out, bits8 ? 8 : 4, 64, MOE_DTYPE_F32);
        convert_ok(&o, &r);
        same_tensors(out, bits8 ? FIX "base-q8" : FIX "base-q4", &exact, &rounded);
        assert_int_equal(exact, 27);   /* 18 code tensors, 9 norms */
        assert_int_equal(rounded, 36); /* 18 scales, 18 biases */
        assert_int_equal(r.dtype, MOE_DTYPE_F32);
        matches_dequantized(out, twin, bits8 ? "converted base 8-bit vs dequantized" : "converted base 4-bit vs dequantized");
        moe_remove_tree(out);
    }
    free(out), free(twin);
    rmdir(dir);
    free(dir);
}

/* base at bf16: mlx-lm's order, the weights cast to bf16 and those quantized. */
static void cast_then_quantize(void **state)
{
    (void)state;
    char *dir = temp_dir(), *out = path2(dir, "q");
    moe_convert_options o = opts(FIX "base", out, 4, 64, MOE_DTYPE_BF16);
    convert_ok(&o, NULL);
    moe_st_set *src = open_set(FIX "base"), *got = open_set(out);
    /* a stacked expert module: expert 5 of layer 1 down_proj, computed here */
    const moe_st_tensor *w = must_find(src, "model.layers.1.mlp.experts.5.down_proj.weight");
    const moe_st_tensor *c = must_find(got, "model.layers.1.mlp.switch_mlp.down_proj.weight"),
                        *s = must_find(got, "model.layers.1.mlp.switch_mlp.down_proj.scales"),
                        *b = must_find(got, "model.layers.1.mlp.switch_mlp.down_proj.biases");
    assert_string_equal(s->dtype_name, "BF16");
    int rows = 128, cols = 64;
    float *v = malloc(sizeof(float) * (size_t)rows * cols);
    uint16_t *h = malloc(2 * (size_t)rows * cols);
    memcpy(v, w->data, w->nbytes);
    moe_dtype_traits_of(MOE_DTYPE_BF16)->from_f32(v, h, (size_t)rows * cols);
    moe_dtype_traits_of(MOE_DTYPE_BF16)->to_f32(h, v, (size_t)rows * cols);
    uint32_t codes[128 * 8];
    uint16_t sc[128], bi[128];
    moe_affine_format fmt = { 4, 64, MOE_DTYPE_BF16 };
    assert_int_equal(moe_affine_quantize(&fmt, v, rows, cols, codes, sc, bi), MOE_OK);
    assert_memory_equal((const char *)c->data + 5 * sizeof codes, codes, sizeof codes);
    assert_memory_equal((const char *)s->data + 5 * sizeof sc, sc, sizeof sc);
    assert_memory_equal((const char *)b->data + 5 * sizeof bi, bi, sizeof bi);
    /* norms cast too */
    const moe_st_tensor *n = must_find(got, "model.norm.weight"), *n0 = must_find(src, "model.norm.weight");
    assert_string_equal(n->dtype_name, "BF16");
    for (int i = 0; i < 128; i++) assert_int_equal(((const uint16_t *)n->data)[i], moe_f32_to_bf16(((const float *)n0->data)[i]));
    free(v), free(h);
    moe_st_set_close(src), moe_st_set_close(got);
    /* another quantized model than base-q4 (other codes where bf16 rounding
     * crossed a step), read as it was meant */
    char *twin = path2(dir, "twin");
    matches_dequantized(out, twin, "converted base bf16 vs dequantized");
    moe_remove_tree(out);
    free(out), free(twin);
    rmdir(dir);
    free(dir);
}

/* An MLX-layout float checkpoint (experts stacked) converts to the very
 * bytes its Hugging Face original converts to. */
static void stacked_float_input(void **state)
{
    (void)state;
    char *dir = temp_dir(), *mlx = path2(dir, "mlx"), *a = path2(dir, "a"), *b = path2(dir, "b");
    moe_st_set *hub = open_set(FIX "gqa_tied");
    moe_st_out_tensor t[MAX_T];
    char names[MAX_T][96];
    void *bufs[MAX_T] = { 0 };
    int n = 0;
    for (int i = 0; i < moe_st_set_count(hub); i++) { /* everything but the experts as it is */
        const moe_st_tensor *x = moe_st_set_at(hub, i);
        if (strstr(x->name, ".mlp.experts.")) continue;
        t[n] = (moe_st_out_tensor){ .name = x->name, .dtype = x->dtype_name, .ndim = x->ndim, .data = x->data,
                                    .nbytes = x->nbytes };
        memcpy(t[n].shape, x->shape, sizeof t[n].shape);
        n++;
    }
    static const char *const P[3] = { "gate_proj", "up_proj", "down_proj" };
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < 3; p++) { /* 8 experts of [64, 128] or [128, 64], BF16 */
            size_t per = 64 * 128 * 2;
            bufs[n] = malloc(8 * per);
            for (int e = 0; e < 8; e++) {
                char name[96];
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.%s.weight", l, e, P[p]);
                memcpy((char *)bufs[n] + e * per, must_find(hub, name)->data, per);
            }
            snprintf(names[n], sizeof names[n], "model.layers.%d.mlp.switch_mlp.%s.weight", l, P[p]);
            t[n] = (moe_st_out_tensor){ .name = names[n], .dtype = "BF16", .ndim = 3,
                                        .shape = { 8, p < 2 ? 64 : 128, p < 2 ? 128 : 64 }, .data = bufs[n], .nbytes = 8 * per };
            n++;
        }
    mkdir(mlx, 0755);
    char *mp = path2(mlx, "model.safetensors"), *cp = path2(mlx, "config.json");
    assert_int_equal(moe_st_write(mp, t, n, NULL, 0), MOE_OK);
    assert_int_equal(moe_copy_file(FIX "gqa_tied/config.json", cp), MOE_OK);
    for (int i = 0; i < n; i++) free(bufs[i]);
    moe_st_set_close(hub);
    moe_convert_options o = opts(FIX "gqa_tied", a, 8, 32, MOE_DTYPE_F16);
    convert_ok(&o, NULL);
    o.model_dir = mlx, o.out_dir = b;
    convert_ok(&o, NULL);
    int exact, rounded;
    same_tensors(b, a, &exact, &rounded);
    assert_int_equal(exact, 60);
    moe_remove_tree(mlx), moe_remove_tree(a), moe_remove_tree(b);
    free(mlx), free(a), free(b), free(mp), free(cp);
    rmdir(dir);
    free(dir);
}

/* ---- hand-checked groups ---- */

/* Embedding rows 0-3: groups whose codes, scales and biases follow from the
 * rule on paper. */
static void hand_rows(const char *name, float *w, int64_t rows, int64_t cols)
{
    (void)rows;
    if (strcmp(name, "model.embed_tokens.weight")) return;
    for (int j = 0; j < cols; j++) {
        w[j] = (float)(j % 16);                    /* 0..15: max is the edge */
        w[cols + j] = -0.5f * (float)(j % 16);     /* 0..-7.5: min is the edge */
        w[2 * cols + j] = 0.25f;                   /* constant */
        w[3 * cols + j] = 0.0f;                    /* zero */
    }
}

static void hand_checked_groups(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *out = path2(dir, "q");
    mkdir(src, 0755);
    ckpt c = TINY;
    c.fill = hand_rows;
    write_ckpt(src, &c);
    for (int bits = 4; bits <= 8; bits += 4) {
        moe_convert_options o = opts(src, out, bits, 64, MOE_DTYPE_BF16);
        convert_ok(&o, NULL);
        moe_st_set *s = open_set(out);
        const moe_st_tensor *q = must_find(s, "model.embed_tokens.weight"), *sc = must_find(s, "model.embed_tokens.scales"),
                            *bi = must_find(s, "model.embed_tokens.biases");
        assert_string_equal(q->dtype_name, "U32");
        assert_int_equal(q->shape[1], 64 * bits / 32);
        const uint32_t *words = q->data;
        const uint16_t *scale = sc->data, *bias = bi->data;
        int wpr = 64 * bits / 32;
        if (bits == 4) {
            /* rows 0 and 1: code 15 - (j % 16), element 0 in the low nibble */
            for (int r = 0; r < 2; r++)
                for (int k = 0; k < wpr; k++) assert_int_equal(words[r * wpr + k], k % 2 ? 0x01234567u : 0x89ABCDEFu);
            /* row 0: the max 15 is the edge: scale -1, bias 15 */
            assert_int_equal(scale[0], 0xBF80), assert_int_equal(bias[0], 0x4170);
            /* row 1: the min -7.5 is the edge: scale 0.5, bias -7.5 */
            assert_int_equal(scale[1], 0x3F00), assert_int_equal(bias[1], 0xC0F0);
        } else {
            /* row 0: code (15 - j % 16) * 17, scale 15 / -255, bias 15 */
            for (int k = 0; k < wpr; k++) assert_int_equal(words[k], k % 4 == 0 ? 0xCCDDEEFFu : k % 4 == 1 ? 0x8899AABBu
                                                                   : k % 4 == 2 ? 0x44556677u : 0x00112233u);
            assert_int_equal(scale[0], moe_f32_to_bf16(15.0f / -255.0f));
            assert_int_equal(bias[0], 0x4170);
        }
        /* row 2, constant 0.25: range 0, so the scale is -1e-7 (the floor,
         * negated as the max is the edge), the bias the value, codes 0 */
        for (int k = 0; k < wpr; k++) assert_int_equal(words[2 * wpr + k], 0);
        assert_int_equal(scale[2], moe_f32_to_bf16(0.25f / -2500000.0f));
        assert_true(fabsf(moe_bf16_to_f32(scale[2]) + 1e-7f) < 1e-9f);
        assert_int_equal(bias[2], 0x3E80);
        /* row 3, zeros: q0 = 0 keeps the floor scale and a zero bias */
        for (int k = 0; k < wpr; k++) assert_int_equal(words[3 * wpr + k], 0);
        assert_int_equal(scale[3], moe_f32_to_bf16(-1e-7f));
        assert_int_equal(bias[3], 0);
        moe_st_set_close(s);
        moe_remove_tree(out);
    }
    moe_remove_tree(src);
    free(src), free(out);
    rmdir(dir);
    free(dir);
}

/* ---- what stays float ---- */

static void indivisible_stays_float(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *out = path2(dir, "q"), *deq = path2(dir, "deq");
    mkdir(src, 0755);
    write_ckpt(src, &TINY); /* expert hidden 32: down_proj's input dim does not divide by 64 */
    moe_convert_options o = opts(src, out, 4, 64, MOE_DTYPE_BF16);
    o.router_bits = 8;
    moe_convert_result r;
    convert_ok(&o, &r);
    assert_int_equal(r.quantized_modules, 1 + 2 * 7 + 1); /* embedding, per layer q k v o gate gate_proj up_proj, head */
    assert_int_equal(r.float_modules, 2 * 5 + 1);         /* per layer 4 norms and down_proj, the final norm */
    moe_st_set *s = open_set(out), *in = open_set(src);
    for (int l = 0; l < 2; l++) {
        char n[96];
        snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.down_proj.scales", l);
        assert_null(moe_st_set_find(s, n));
        snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.down_proj.weight", l);
        const moe_st_tensor *d = must_find(s, n);
        assert_string_equal(d->dtype_name, "BF16");
        assert_int_equal(d->ndim, 3);
        assert_int_equal(d->shape[0], 4), assert_int_equal(d->shape[1], 64), assert_int_equal(d->shape[2], 32);
        for (int e = 0; e < 4; e++) { /* expert e's weights, cast, at slot e */
            snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
            const float *x = must_find(in, n)->data;
            const uint16_t *y = (const uint16_t *)d->data + (size_t)e * 64 * 32;
            for (int i = 0; i < 64 * 32; i++) assert_int_equal(y[i], moe_f32_to_bf16(x[i]));
        }
        snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.up_proj.scales", l);
        must_find(s, n);
        snprintf(n, sizeof n, "model.layers.%d.mlp.gate.weight", l);
        assert_int_equal(must_find(s, n)->shape[1], 64 * 8 / 32); /* the router at 8 bits */
    }
    moe_st_set_close(s), moe_st_set_close(in);
    /* no entry for the float module in the config (mlx-lm writes none: its
     * loader, like moe's, goes by the presence of scales) */
    char *cp = path2(out, "config.json");
    json_object *j = json_object_from_file(cp), *q, *v;
    assert_true(json_object_object_get_ex(j, "quantization", &q));
    assert_false(json_object_object_get_ex(q, "model.layers.0.mlp.switch_mlp.down_proj", &v));
    assert_true(json_object_object_get_ex(q, "model.layers.0.mlp.gate", &v));
    assert_false(json_object_object_get_ex(j, "_name_or_path", &v));
    json_object_put(j);
    free(cp);
    /* the mixed model loads and computes what its dequantized twin does */
    matches_dequantized(out, deq, "quantized + float experts vs dequantized");
    moe_remove_tree(out);
    /* at group 32 it divides: everything but the norms quantized */
    o = opts(src, out, 4, 32, MOE_DTYPE_BF16);
    convert_ok(&o, &r);
    assert_int_equal(r.float_modules, 2 * 4 + 1);
    s = open_set(out);
    assert_int_equal(must_find(s, "model.layers.0.mlp.switch_mlp.down_proj.scales")->shape[2], 1);
    moe_st_set_close(s);
    moe_remove_tree(out), moe_remove_tree(src), moe_remove_tree(deq);
    free(out), free(src), free(deq);
    rmdir(dir);
    free(dir);
}

/* ---- Qwen3-MoE and Mixtral ---- */

/* Qwen3-MoE: per-head QK norms, head_dim 32 with 4 heads (q is 128 wide,
 * not the hidden 64), layer 1 dense (mlp_only_layers) with its own hidden
 * size. Mixtral: no QK norms, experts w1/w3/w2 under block_sparse_moe. */
static const ckpt QWEN3 = { .arch = MOE_ARCH_QWEN3_MOE, .D = 64, .L = 3, .H = 4, .KV = 2, .HD = 32, .E = 4, .K = 2,
                            .I = 64, .DI = 128, .dense = 2, .V = 16, .bf16 = 1 };
static const ckpt MIXTRAL = { .arch = MOE_ARCH_MIXTRAL, .D = 64, .L = 2, .H = 4, .KV = 2, .HD = 16, .E = 4, .K = 2,
                              .I = 64, .V = 16, .bf16 = 1 };

/* One output tensor as expected: name, dtype, shape. */
typedef struct {
    char name[112];
    const char *dtype;
    int nd;
    int64_t shape[3];
} want_tensor;

typedef struct {
    want_tensor t[MAX_T];
    int n;
} want_list;

/* Module `path` of [lead?, rows, cols] (rows 0: a vector), in float BF16 or
 * quantized to bits with bf16 scales (group 64, or 64 for group 0 too). */
static void want_module(want_list *w, const char *path, int64_t lead, int64_t rows, int64_t cols, int bits, int group)
{
    static const char *const SUFFIX[3] = { "weight", "scales", "biases" };
    for (int i = 0; i < (bits ? 3 : 1); i++) {
        want_tensor *t = &w->t[w->n++];
        assert_true(w->n <= MAX_T);
        snprintf(t->name, sizeof t->name, "%s.%s", path, SUFFIX[i]);
        t->dtype = bits && i == 0 ? "U32" : "BF16";
        t->nd = 0;
        if (lead) t->shape[t->nd++] = lead;
        if (rows) t->shape[t->nd++] = rows;
        t->shape[t->nd++] = !bits ? cols : i == 0 ? cols * bits / 32 : cols / group;
    }
}

/* What mlx-lm's model classes list, in their order, at 4 bits group 64:
 * Qwen3MoeDecoderLayer declares attention, the two norms, then the MLP (a
 * dense one's gate, down, up; or the router, 8-bit by its quant_predicate,
 * and the SwitchGLU's gate, up, down); Mixtral's layer attention, the MoE
 * block, the norms. */
static void want_family(want_list *w, const ckpt *c, int router_bits)
{
    int qwen3 = c->arch == MOE_ARCH_QWEN3_MOE;
    const char *block = qwen3 ? "mlp" : "block_sparse_moe";
    char p[96];
    w->n = 0;
    want_module(w, "model.embed_tokens", 0, c->V, c->D, 4, 64);
    for (int l = 0; l < c->L; l++) {
#define AT(fmt, ...) (snprintf(p, sizeof p, "model.layers.%d." fmt, l, ##__VA_ARGS__), p)
        want_module(w, AT("self_attn.q_proj"), 0, c->H * c->HD, c->D, 4, 64);
        want_module(w, AT("self_attn.k_proj"), 0, c->KV * c->HD, c->D, 4, 64);
        want_module(w, AT("self_attn.v_proj"), 0, c->KV * c->HD, c->D, 4, 64);
        want_module(w, AT("self_attn.o_proj"), 0, c->D, c->H * c->HD, 4, 64);
        if (qwen3) {
            want_module(w, AT("self_attn.q_norm"), 0, 0, c->HD, 0, 0);
            want_module(w, AT("self_attn.k_norm"), 0, 0, c->HD, 0, 0);
            want_module(w, AT("input_layernorm"), 0, 0, c->D, 0, 0);
            want_module(w, AT("post_attention_layernorm"), 0, 0, c->D, 0, 0);
        }
        if (c->dense >> l & 1) {
            want_module(w, AT("mlp.gate_proj"), 0, c->DI, c->D, 4, 64);
            want_module(w, AT("mlp.down_proj"), 0, c->D, c->DI, 4, 64);
            want_module(w, AT("mlp.up_proj"), 0, c->DI, c->D, 4, 64);
        } else {
            want_module(w, AT("%s.gate", block), 0, c->E, c->D, router_bits, 64);
            want_module(w, AT("%s.switch_mlp.gate_proj", block), c->E, c->I, c->D, 4, 64);
            want_module(w, AT("%s.switch_mlp.up_proj", block), c->E, c->I, c->D, 4, 64);
            want_module(w, AT("%s.switch_mlp.down_proj", block), c->E, c->D, c->I, 4, 64);
        }
        if (!qwen3) {
            want_module(w, AT("input_layernorm"), 0, 0, c->D, 0, 0);
            want_module(w, AT("post_attention_layernorm"), 0, 0, c->D, 0, 0);
        }
#undef AT
    }
    want_module(w, "model.norm", 0, 0, c->D, 0, 0);
    want_module(w, "lm_head", 0, c->V, c->D, 4, 64);
}

/* The converted directory holds exactly w's tensors, in w's order: converted
 * with one tensor a shard, shard i holds the i-th in model order (mlx-lm's
 * make_shards fills shards in that order). */
static void holds_in_order(const char *dir, const want_list *w)
{
    moe_st_set *s = open_set(dir);
    int n = moe_st_set_count(s);
    if (n != w->n) fail_msg("%s: %d tensors, want %d", dir, n, w->n);
    char *ip = path2(dir, "model.safetensors.index.json");
    json_object *idx = json_object_from_file(ip), *map, *v;
    assert_true(json_object_object_get_ex(idx, "weight_map", &map));
    for (int i = 0; i < n; i++) {
        const want_tensor *x = &w->t[i];
        const moe_st_tensor *t = must_find(s, x->name);
        char shard[64];
        snprintf(shard, sizeof shard, "model-%05d-of-%05d.safetensors", i + 1, n);
        assert_true(json_object_object_get_ex(map, x->name, &v));
        if (strcmp(json_object_get_string(v), shard))
            fail_msg("'%s' is in %s, want %s (place %d in model order)", x->name, json_object_get_string(v), shard, i);
        if (strcmp(t->dtype_name, x->dtype)) fail_msg("'%s' is %s, want %s", t->name, t->dtype_name, x->dtype);
        assert_int_equal(t->ndim, x->nd);
        for (int d = 0; d < x->nd; d++)
            if (t->shape[d] != x->shape[d]) fail_msg("'%s' dim %d is %lld, want %lld", t->name, d,
                                                      (long long)t->shape[d], (long long)x->shape[d]);
    }
    json_object_put(idx);
    free(ip);
    moe_st_set_close(s);
}

/* Slot `slot` of module `mod` in got (its codes, scales and biases) is
 * source tensor `src_name` of src quantized to bits, group 64, bf16. */
static void quantized_from(const moe_st_set *got, const char *mod, int slot, const moe_st_set *src,
                           const char *src_name, int bits)
{
    const moe_st_tensor *w = must_find(src, src_name);
    int rows = (int)w->shape[0], cols = (int)w->shape[1];
    size_t n = (size_t)rows * cols;
    float *v = malloc(sizeof(float) * n);
    moe_dtype_traits_of(w->dtype)->to_f32(w->data, v, n);
    size_t code_bytes = n * (size_t)bits / 8, param_bytes = n / 64 * 2;
    void *codes = malloc(code_bytes), *sc = malloc(param_bytes), *bi = malloc(param_bytes);
    moe_affine_format fmt = { bits, 64, MOE_DTYPE_BF16 };
    assert_int_equal(moe_affine_quantize(&fmt, v, rows, cols, codes, sc, bi), MOE_OK);
    static const char *const SUFFIX[3] = { "weight", "scales", "biases" };
    const void *want[3] = { codes, sc, bi };
    size_t bytes[3] = { code_bytes, param_bytes, param_bytes };
    for (int i = 0; i < 3; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s.%s", mod, SUFFIX[i]);
        const moe_st_tensor *t = must_find(got, name);
        assert_int_equal(t->nbytes % bytes[i], 0);
        if (memcmp((const char *)t->data + (size_t)slot * bytes[i], want[i], bytes[i]))
            fail_msg("%s slot %d is not %s quantized to %d bits", name, slot, src_name, bits);
    }
    free(v), free(codes), free(sc), free(bi);
}

/* config.json's quantization block, as one line. */
static char *quant_block(const char *dir)
{
    char *cp = path2(dir, "config.json");
    json_object *j = json_object_from_file(cp), *q;
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "quantization", &q));
    char *text = strdup(json_object_to_json_string_ext(q, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
    free(cp);
    return text;
}

static void families_convert(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *out = path2(dir, "q"), *twin = path2(dir, "twin"),
         *again = path2(dir, "again");
    for (int fam = 0; fam < 2; fam++) {
        const ckpt *c = fam ? &MIXTRAL : &QWEN3;
        int qwen3 = !fam;
        mkdir(src, 0755);
        write_ckpt(src, c);
        moe_convert_options o = opts(src, out, 4, 64, MOE_DTYPE_COUNT);
        o.max_shard_bytes = 1; /* a tensor a shard: the shards tell the order */
        moe_convert_result r;
        convert_ok(&o, &r);
        /* the tensors mlx-lm writes, in its order; Qwen3's routers at 8 bits
         * on their own, Mixtral's as the rest */
        want_list *w = calloc(1, sizeof *w);
        want_family(w, c, qwen3 ? 8 : 4);
        holds_in_order(out, w);
        free(w);
        assert_int_equal(r.router_bits, qwen3 ? 8 : 0);
        assert_int_equal(r.router_group_size, qwen3 ? 64 : 0);
        assert_int_equal(r.dtype, MOE_DTYPE_BF16);
        /* per layer: 4 attention projections and 3 MLP modules (dense) or a
         * router and 3 stacked experts; the embedding and head */
        int moe_layers = 0;
        for (int l = 0; l < c->L; l++) moe_layers += !(c->dense >> l & 1);
        assert_int_equal(r.quantized_modules, 2 + 7 * (c->L - moe_layers) + 8 * moe_layers);
        assert_int_equal(r.float_modules, 1 + c->L * (qwen3 ? 4 : 2));
        /* codes, scales and biases: the sources quantized here, each expert
         * at its slot, Mixtral's w1, w3, w2 as gate, up, down */
        moe_st_set *got = open_set(out), *in = open_set(src);
        if (qwen3) {
            quantized_from(got, "model.layers.0.mlp.gate", 0, in, "model.layers.0.mlp.gate.weight", 8);
            quantized_from(got, "model.layers.2.mlp.switch_mlp.up_proj", 3, in,
                           "model.layers.2.mlp.experts.3.up_proj.weight", 4);
            quantized_from(got, "model.layers.1.mlp.down_proj", 0, in, "model.layers.1.mlp.down_proj.weight", 4);
            quantized_from(got, "model.layers.1.mlp.gate_proj", 0, in, "model.layers.1.mlp.gate_proj.weight", 4);
            const moe_st_tensor *a = must_find(got, "model.layers.2.self_attn.k_norm.weight"),
                                *b = must_find(in, "model.layers.2.self_attn.k_norm.weight");
            assert_memory_equal(a->data, b->data, b->nbytes); /* BF16 as it was */
        } else {
            static const char *const P[3] = { "gate_proj", "up_proj", "down_proj" }, *const W[3] = { "w1", "w3", "w2" };
            for (int p = 0; p < 3; p++)
                for (int e = 0; e < c->E; e++) {
                    char mod[96], name[96];
                    snprintf(mod, sizeof mod, "model.layers.1.block_sparse_moe.switch_mlp.%s", P[p]);
                    snprintf(name, sizeof name, "model.layers.1.block_sparse_moe.experts.%d.%s.weight", e, W[p]);
                    quantized_from(got, mod, e, in, name, 4);
                }
            quantized_from(got, "model.layers.0.block_sparse_moe.gate", 0, in,
                           "model.layers.0.block_sparse_moe.gate.weight", 4);
        }
        moe_st_set_close(got), moe_st_set_close(in);
        /* config.json: the source's fields, the block as mlx-lm writes it
         * (qwen3_moe's predicate returns {group_size, bits}: no mode) */
        char *q = quant_block(out);
        assert_string_equal(q, qwen3 ? "{\"group_size\":64,\"bits\":4,\"mode\":\"affine\","
                                       "\"model.layers.0.mlp.gate\":{\"group_size\":64,\"bits\":8},"
                                       "\"model.layers.2.mlp.gate\":{\"group_size\":64,\"bits\":8}}"
                                     : "{\"group_size\":64,\"bits\":4,\"mode\":\"affine\"}");
        free(q);
        char *cp = path2(out, "config.json");
        json_object *j = json_object_from_file(cp), *v;
        assert_false(json_object_object_get_ex(j, "_name_or_path", &v));
        assert_true(json_object_object_get_ex(j, qwen3 ? "mlp_only_layers" : "num_local_experts", &v));
        assert_true(json_object_object_get_ex(j, "quantization_config", &v));
        json_object_put(j);
        free(cp);
        /* it loads and computes what its dequantized twin (an MLX float
         * checkpoint) computes */
        matches_dequantized(out, twin,
                            qwen3 ? "converted qwen3_moe vs dequantized" : "converted mixtral vs dequantized");
        /* that twin, stacked float experts, converts too: the same tensors */
        write_dequantized(out, twin);
        o = opts(twin, again, 4, 64, MOE_DTYPE_BF16);
        o.max_shard_bytes = 1;
        convert_ok(&o, NULL);
        w = calloc(1, sizeof *w);
        want_family(w, c, qwen3 ? 8 : 4);
        holds_in_order(again, w);
        free(w);
        moe_remove_tree(twin), moe_remove_tree(again), moe_remove_tree(out);

        /* --router-bits: every router at those bits and --group-size, its
         * entry with the mode (as mlx-lm's recipes write it) */
        o = opts(src, out, 4, 64, MOE_DTYPE_COUNT);
        o.router_bits = qwen3 ? 4 : 8;
        convert_ok(&o, &r);
        assert_int_equal(r.router_bits, qwen3 ? 4 : 8);
        q = quant_block(out);
        assert_string_equal(q, qwen3 ? "{\"group_size\":64,\"bits\":4,\"mode\":\"affine\","
                                       "\"model.layers.0.mlp.gate\":{\"group_size\":64,\"bits\":4,\"mode\":\"affine\"},"
                                       "\"model.layers.2.mlp.gate\":{\"group_size\":64,\"bits\":4,\"mode\":\"affine\"}}"
                                     : "{\"group_size\":64,\"bits\":4,\"mode\":\"affine\","
                                       "\"model.layers.0.block_sparse_moe.gate\":"
                                       "{\"group_size\":64,\"bits\":8,\"mode\":\"affine\"},"
                                       "\"model.layers.1.block_sparse_moe.gate\":"
                                       "{\"group_size\":64,\"bits\":8,\"mode\":\"affine\"}}");
        free(q);
        got = open_set(out);
        const char *router = qwen3 ? "model.layers.2.mlp.gate.weight" : "model.layers.1.block_sparse_moe.gate.weight";
        assert_int_equal(must_find(got, router)->shape[1], 64 * o.router_bits / 32);
        moe_st_set_close(got);
        moe_remove_tree(out);
        moe_remove_tree(src);
    }

    /* group 128 over hidden 64: MLX's predicate skips the routers before
     * qwen3_moe's is asked, so they stay float and get no entry */
    mkdir(src, 0755);
    write_ckpt(src, &QWEN3);
    moe_convert_options o = opts(src, out, 4, 128, MOE_DTYPE_COUNT);
    moe_convert_result r;
    convert_ok(&o, &r);
    assert_int_equal(r.router_bits, 0);
    char *q = quant_block(out);
    assert_string_equal(q, "{\"group_size\":128,\"bits\":4,\"mode\":\"affine\"}");
    free(q);
    moe_st_set *got = open_set(out);
    assert_string_equal(must_find(got, "model.layers.0.mlp.gate.weight")->dtype_name, "BF16");
    assert_null(moe_st_set_find(got, "model.layers.0.mlp.gate.scales"));
    assert_non_null(moe_st_set_find(got, "model.layers.1.mlp.down_proj.scales")); /* 128 inputs */
    moe_st_set_close(got);
    moe_remove_tree(out), moe_remove_tree(src);
    /* hidden 96 at group 32: the routers' group 64 does not divide it
     * (mlx-lm's to_quantized fails there); --router-bits is the way out */
    ckpt wide = QWEN3;
    wide.D = 96;
    mkdir(src, 0755);
    write_ckpt(src, &wide);
    o = opts(src, out, 4, 32, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_SHAPE, "router 'model.layers.0.mlp.gate' has 96 inputs, not a multiple of group 64");
    assert_false(exists(out));
    o.router_bits = 8;
    convert_ok(&o, &r);
    assert_int_equal(r.router_group_size, 32);
    moe_remove_tree(out), moe_remove_tree(src);
    free(src), free(out), free(twin), free(again);
    rmdir(dir);
    free(dir);
}

/* The float values of module `mod`'s weight in dir ([E?, rows, cols]),
 * dequantized when it is quantized; *n values. */
static float *weight_values(const moe_st_set *s, const moe_model_config *cfg, const char *mod, size_t *n)
{
    char name[176];
    snprintf(name, sizeof name, "%s.weight", mod);
    const moe_st_tensor *w = must_find(s, name);
    snprintf(name, sizeof name, "%s.scales", mod);
    const moe_st_tensor *sc = moe_st_set_find(s, name);
    size_t rows = 1;
    for (int d = 0; d < w->ndim - 1; d++) rows *= (size_t)w->shape[d];
    if (!sc) {
        *n = rows * (size_t)w->shape[w->ndim - 1];
        float *v = malloc(sizeof(float) * *n);
        moe_dtype_traits_of(w->dtype)->to_f32(w->data, v, *n);
        return v;
    }
    snprintf(name, sizeof name, "%s.biases", mod);
    const moe_st_tensor *bi = must_find(s, name);
    int bits, group;
    moe_config_module_quant(cfg, mod, &bits, &group);
    int cols = (int)sc->shape[sc->ndim - 1] * group;
    *n = rows * (size_t)cols;
    float *v = malloc(sizeof(float) * *n);
    moe_affine_format f = { bits, group, sc->dtype };
    assert_int_equal(moe_affine_dequantize(&f, w->data, sc->data, bi->data, (int)rows, cols, v), MOE_OK);
    return v;
}

/* Every weight of the converted qdir, dequantized, is near its Hugging Face
 * source in src (stacked experts from the per-expert tensors, Mixtral's w1,
 * w3, w2 as gate, up, down): relative RMS error within tol. A misplaced,
 * swapped or transposed tensor is off by about 1.4. Returns the worst. */
static double near_source(const char *qdir, const char *src, double tol)
{
    moe_st_set *q = open_set(qdir), *h = open_set(src);
    moe_model_config cfg;
    char *cp = path2(qdir, "config.json");
    assert_int_equal(moe_config_load(cp, &cfg), MOE_OK);
    free(cp);
    int mixtral = cfg.arch == MOE_ARCH_MIXTRAL;
    double worst = 0;
    for (int i = 0; i < moe_st_set_count(q); i++) {
        const char *name = moe_st_set_at(q, i)->name;
        size_t len = strlen(name);
        if (len < 8 || strcmp(name + len - 7, ".weight")) continue;
        char mod[160];
        snprintf(mod, sizeof mod, "%.*s", (int)(len - 7), name);
        size_t n;
        float *got = weight_values(q, &cfg, mod, &n);
        /* the source values, in the same order */
        float *want = malloc(sizeof(float) * n);
        const char *sw = strstr(mod, ".switch_mlp.");
        int experts = sw ? cfg.num_experts : 1;
        size_t per = n / (size_t)experts;
        for (int e = 0; e < experts; e++) {
            char sname[200];
            if (sw) {
                const char *proj = sw + strlen(".switch_mlp.");
                const char *hub = !mixtral                     ? proj
                                  : !strcmp(proj, "gate_proj") ? "w1"
                                  : !strcmp(proj, "up_proj")   ? "w3"
                                                               : "w2";
                snprintf(sname, sizeof sname, "%.*s.experts.%d.%s.weight", (int)(sw - mod), mod, e, hub);
            } else {
                snprintf(sname, sizeof sname, "%s.weight", mod);
            }
            const moe_st_tensor *t = must_find(h, sname);
            assert_int_equal(t->nbytes / moe_dtype_size(t->dtype), per);
            moe_dtype_traits_of(t->dtype)->to_f32(t->data, want + (size_t)e * per, per);
        }
        double err = 0, norm = 0;
        for (size_t k = 0; k < n; k++) {
            double d = (double)got[k] - want[k];
            err += d * d, norm += (double)want[k] * want[k];
        }
        double rel = sqrt(err / norm);
        if (!(rel <= tol)) fail_msg("%s: relative RMS error %.3g from its source (limit %.0e)", mod, rel, tol);
        worst = fmax(worst, rel);
        free(got), free(want);
    }
    moe_config_free(&cfg);
    moe_st_set_close(q), moe_st_set_close(h);
    return worst;
}

/* The float family fixtures (transformers' save_pretrained, both config
 * generations): each converts, every weight lands where its source says,
 * the result loads and computes what its dequantized twin computes; the
 * mlx-lm-made ones inspect as mlx-lm wrote them. */
static void family_fixtures(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int bits, group;
        double tol;            /* relative RMS error of the weights */
    } F[] = {
        { "qwen3_f32_tf4", 8, 32, 0.015 },    { "qwen3_bf16", 4, 64, 0.15 },     { "hf5_qwen3_bf16", 8, 64, 0.015 },
        { "mixtral_bf16_tf4", 8, 32, 0.015 }, { "mixtral_f32_hd", 4, 32, 0.15 }, { "hf5_mixtral_bf16", 4, 64, 0.15 },
    };
    char *dir = temp_dir(), *out = path2(dir, "q"), *twin = path2(dir, "twin");
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        char src[512], what[128];
        snprintf(src, sizeof src, FAMFIX "%s", F[i].name);
        moe_convert_options o = opts(src, out, F[i].bits, F[i].group, MOE_DTYPE_COUNT);
        moe_convert_result r;
        convert_ok(&o, &r);
        double worst = near_source(out, src, F[i].tol);
        printf("  %-40s weights within %.2e of the source's (limit %.0e)\n", F[i].name, worst, F[i].tol);
        snprintf(what, sizeof what, "converted %s %d-bit vs dequantized", F[i].name, F[i].bits);
        matches_dequantized(out, twin, what);
        moe_remove_tree(out);
    }
    /* mlx-lm's own conversions: routers, dense layers, QK-norm as written */
    static const struct {
        const char *name, *router;
        int router_bits, dense;
        const char *qk_norm;
    } M[] = {
        { "qwen3_q4", "model.layers.*.mlp.gate", 8, -1, "per_head" },
        { "qwen3_q8", "model.layers.*.mlp.gate", 8, 1, "per_head" },
        { "mixtral_q4", "model.layers.*.block_sparse_moe.gate", 4, -1, "none" },
    };
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
        char d[512];
        snprintf(d, sizeof d, FAMFIX "%s", M[i].name);
        moe_checkpoint_info *in = inspect_ok(d);
        assert_string_equal(in->layout, "mlx");
        assert_string_equal(in->qk_norm, M[i].qk_norm);
        const moe_checkpoint_group *g = group_named(in, M[i].router);
        assert_int_equal(g->bits, M[i].router_bits), assert_int_equal(g->group_size, 64);
        assert_int_equal(in->num_dense_layers, M[i].dense >= 0);
        if (M[i].dense >= 0) {
            assert_int_equal(in->dense_layers[0], M[i].dense);
            assert_int_equal(group_named(in, "model.layers.*.mlp.up_proj")->count, 1);
        }
        resident_as_loaded(d, in);
        moe_checkpoint_info_free(in);
    }
    free(out), free(twin);
    rmdir(dir);
    free(dir);
}

/* ---- shards, files ---- */

static void shards_and_files(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *one = path2(dir, "one"), *many = path2(dir, "many");
    /* the fixture plus tokenizer files, and one file that is not copied */
    mkdir(src, 0755);
    static const char *const LINK[] = { "config.json", "model.safetensors" };
    static const char *const TOK[] = { "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                       "generation_config.json", "merges.txt", "spm.model", "chat_template.jinja" };
    for (int i = 0; i < 2; i++) {
        char *from = path2(FIX "base", LINK[i]), *to = path2(src, LINK[i]);
        assert_int_equal(symlink(from, to), 0);
        free(from), free(to);
    }
    for (int i = 0; i < 7; i++) {
        char *p = path2(src, TOK[i]);
        FILE *f = fopen(p, "w");
        fprintf(f, "{\"file\": \"%s\"}\n", TOK[i]);
        fclose(f);
        free(p);
    }
    char *readme = path2(src, "README.md");
    FILE *f = fopen(readme, "w");
    fputs("a model card\n", f);
    fclose(f);
    free(readme);

    moe_convert_options o = opts(src, one, 4, 64, MOE_DTYPE_COUNT);
    moe_convert_result r1, r2;
    convert_ok(&o, &r1);
    assert_int_equal(r1.shards, 1);
    assert_int_equal(r1.dtype, MOE_DTYPE_F32); /* the source's */
    for (int i = 0; i < 7; i++) {
        char *a = path2(src, TOK[i]), *b = path2(one, TOK[i]);
        assert_true(exists(b));
        assert_int_equal(file_sum(a), file_sum(b));
        free(a), free(b);
    }
    char *p = path2(one, "README.md");
    assert_false(exists(p));
    free(p);
    /* mlx-lm writes the index for one shard too */
    p = path2(one, "model.safetensors.index.json");
    assert_true(exists(p));
    free(p);

    /* 60 kB shards: filled in model order, a new one when the next tensor
     * would pass the limit (one larger than the limit sits alone) */
    const uint64_t LIMIT = 60000;
    o = opts(src, many, 4, 64, MOE_DTYPE_COUNT);
    o.max_shard_bytes = LIMIT;
    convert_ok(&o, &r2);
    assert_true(r2.shards > 3);
    assert_int_equal(r2.tensors, r1.tensors);
    assert_int_equal(r2.tensor_bytes, r1.tensor_bytes);
    char *ip = path2(many, "model.safetensors.index.json");
    json_object *idx = json_object_from_file(ip), *meta, *map, *v;
    assert_true(json_object_object_get_ex(idx, "metadata", &meta));
    assert_true(json_object_object_get_ex(meta, "total_size", &v));
    assert_int_equal(json_object_get_int64(v), (int64_t)r2.tensor_bytes);
    assert_true(json_object_object_get_ex(meta, "total_parameters", &v));
    assert_int_equal(json_object_get_int64(v), r2.parameters);
    assert_true(json_object_object_get_ex(idx, "weight_map", &map));
    assert_int_equal(json_object_object_length(map), r2.tensors);
    const char *prev = "";
    json_object_object_foreach(map, name, shard) { /* sorted by name */
        assert_true(strcmp(prev, name) < 0);
        prev = name;
        char want[64];
        int k;
        assert_int_equal(sscanf(json_object_get_string(shard), "model-%05d-of-%*05d.safetensors", &k), 1);
        snprintf(want, sizeof want, "model-%05d-of-%05d.safetensors", k, r2.shards);
        assert_string_equal(json_object_get_string(shard), want);
    }
    for (int k = 1; k <= r2.shards; k++) {
        char name[64];
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k, r2.shards);
        char *sp = path2(many, name);
        moe_st_file *sf;
        assert_int_equal(moe_st_open(sp, &sf), MOE_OK);
        assert_string_equal(moe_st_metadata(sf, "format"), "mlx");
        uint64_t bytes = 0;
        for (int i = 0; i < moe_st_count(sf); i++) bytes += moe_st_at(sf, i)->nbytes;
        assert_true(bytes <= LIMIT || moe_st_count(sf) == 1);
        moe_st_close(sf);
        free(sp);
    }
    json_object_put(idx);
    free(ip);
    /* the sharded model is the same model */
    static const int32_t ids[] = { 51, 130, 212, 151, 205 };
    int vocab;
    float *a = logits_of(one, ids, 5, &vocab), *b = logits_of(many, ids, 5, &vocab);
    assert_memory_equal(a, b, sizeof(float) * 5 * (size_t)vocab);
    free(a), free(b);
    moe_remove_tree(src), moe_remove_tree(one), moe_remove_tree(many);
    free(src), free(one), free(many);
    rmdir(dir);
    free(dir);
}

/* ---- an existing --out, the source ---- */

static void write_marker(const char *dir, const char *name)
{
    char *p = path2(dir, name);
    FILE *f = fopen(p, "w");
    fputs("user data\n", f);
    fclose(f);
    free(p);
}

static void refuse_force_and_keep_source(void **state)
{
    (void)state;
    static const char *const SRC[] = { FIX "base/config.json", FIX "base/model.safetensors" };
    uint64_t before[2];
    for (int i = 0; i < 2; i++) before[i] = file_sum(SRC[i]);
    char *dir = temp_dir(), *out = path2(dir, "q");
    mkdir(out, 0755);
    write_marker(out, "config.json");
    write_marker(out, "old-file");
    moe_convert_options o = opts(FIX "base", out, 4, 64, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_INVALID_ARG, "already exists; pass --force to replace it");
    char *old = path2(out, "old-file");
    assert_true(exists(old));
    assert_int_equal(count_prefixed(dir, "q."), 0);
    /* force: the new directory, and nothing of the old one */
    o.force = 1;
    convert_ok(&o, NULL);
    assert_false(exists(old));
    char *st = path2(out, "model.safetensors");
    assert_true(exists(st));
    assert_int_equal(count_prefixed(dir, "q."), 0);
    /* force twice over the converted one (the usual re-run) */
    convert_ok(&o, NULL);
    /* force never replaces what is not a model directory */
    moe_remove_tree(out);
    mkdir(out, 0755);
    write_marker(out, "notes.txt");
    convert_fails(&o, MOE_ERR_INVALID_ARG, "is not empty and holds no config.json");
    char *notes = path2(out, "notes.txt");
    assert_true(exists(notes));
    /* nor a file */
    moe_remove_tree(out);
    write_marker(dir, "q");
    convert_fails(&o, MOE_ERR_INVALID_ARG, "exists and is not a directory");
    unlink(out);
    /* nor the source, or a directory above it */
    char *copy = path2(dir, "copy"), *inner = path2(dir, "copy/src");
    mkdir(copy, 0755);
    write_marker(copy, "config.json");
    mkdir(inner, 0755);
    for (int i = 0; i < 2; i++) {
        char *to = path2(inner, i ? "model.safetensors" : "config.json");
        assert_int_equal(moe_copy_file(SRC[i], to), MOE_OK);
        free(to);
    }
    o = opts(inner, inner, 4, 64, MOE_DTYPE_COUNT);
    o.force = 1;
    convert_fails(&o, MOE_ERR_INVALID_ARG, "holds the source");
    o.out_dir = copy;
    convert_fails(&o, MOE_ERR_INVALID_ARG, "holds the source");
    char *inner_st = path2(inner, "model.safetensors");
    assert_int_equal(file_sum(inner_st), before[1]);
    for (int i = 0; i < 2; i++) assert_int_equal(file_sum(SRC[i]), before[i]);
    moe_remove_tree(copy);
    free(old), free(st), free(notes), free(copy), free(inner), free(inner_st), free(out);
    rmdir(dir);
    free(dir);
}

/* ---- interrupted ---- */

/* What a kill leaves: one temporary directory beside --out ("q"), removed here. */
static void remove_leftover(const char *dir)
{
    assert_int_equal(count_prefixed(dir, "q.tmp."), 1);
    DIR *d = opendir(dir);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (!strncmp(e->d_name, "q.tmp.", 6)) {
            char *t = path2(dir, e->d_name);
            moe_remove_tree(t);
            free(t);
        }
    closedir(d);
}

static int kill_at_third(void *user, uint64_t done, uint64_t total, const char *module)
{
    (void)user, (void)done, (void)total, (void)module;
    static int calls;
    if (++calls == 3) raise(SIGKILL);
    return 0;
}

static int stop_at_once(void *user, uint64_t done, uint64_t total, const char *module)
{
    (void)done, (void)total, (void)module;
    return ++*(int *)user >= 2;
}

static void killed_midway_leaves_no_out(void **state)
{
    (void)state;
    char *dir = temp_dir(), *out = path2(dir, "q");
    for (int replace = 0; replace <= 1; replace++) {
        if (replace) {
            mkdir(out, 0755);
            write_marker(out, "config.json");
        }
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            moe_convert_options o = opts(FIX "base", out, 4, 64, MOE_DTYPE_COUNT);
            o.force = 1;
            o.progress = kill_at_third;
            moe_checkpoint_convert(&o, NULL);
            _exit(0); /* not reached */
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        if (replace) { /* the old directory as it was */
            assert_int_equal(count_prefixed(out, ""), 3); /* ".", "..", config.json */
        } else {
            assert_false(exists(out));
        }
        remove_leftover(dir);
    }
    /* stopped by the progress callback: an error, nothing left at all */
    moe_remove_tree(out);
    int calls = 0;
    moe_convert_options o = opts(FIX "gqa_tied", out, 4, 64, MOE_DTYPE_COUNT);
    o.progress = stop_at_once;
    o.progress_user = &calls;
    convert_fails(&o, MOE_ERR_IO, "interrupted");
    assert_false(exists(out));
    assert_int_equal(count_prefixed(dir, "q"), 0);
    free(out);
    rmdir(dir);
    free(dir);
}

/* ---- the moe command on a larger checkpoint ---- */

/* 32 MB of BF16 embedding, the largest tensor; 90 MB in all. */
static const ckpt LARGE = { .D = 1024, .L = 2, .H = 8, .KV = 8, .HD = 128, .E = 8, .K = 2, .I = 512, .V = 16384, .bf16 = 1 };

static pid_t spawn_convert(const char *src, const char *out, int *stdout_fd)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]), close(fds[1]);
        execl(MOE_BINARY, "moe", "convert", "--model", src, "--out", out, "--json", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    *stdout_fd = fds[0];
    return pid;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Waits until the conversion has begun writing (its temporary directory
 * holds a shard), then sends sig. */
static void signal_midway(pid_t pid, const char *dir, int sig)
{
    for (int tries = 0; tries < 20000; tries++) {
        DIR *d = opendir(dir);
        int begun = 0;
        for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
            if (strncmp(e->d_name, "q.tmp.", 6)) continue;
            char *t = path2(dir, e->d_name);
            begun = count_prefixed(t, "model.safetensors") > 0;
            free(t);
        }
        if (d) closedir(d);
        if (begun) break;
        sleep_ms(1);
    }
    assert_int_equal(kill(pid, sig), 0);
}

static void command_killed_interrupted_and_small(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "large"), *out = path2(dir, "q");
    mkdir(src, 0755);
    write_ckpt(src, &LARGE);
    int fd, status;

    /* SIGKILL from outside while it writes: no --out */
    pid_t pid = spawn_convert(src, out, &fd);
    signal_midway(pid, dir, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fd);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    assert_false(exists(out));
    remove_leftover(dir);

    /* SIGINT: it stops, cleans up and says so */
    pid = spawn_convert(src, out, &fd);
    signal_midway(pid, dir, SIGINT);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    close(fd);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    assert_false(exists(out));
    assert_int_equal(count_prefixed(dir, "q"), 0);

    /* to the end: peak memory far under the largest tensor (32 MB) */
    pid = spawn_convert(src, out, &fd);
    char buf[4096] = { 0 };
    size_t got = 0;
    for (ssize_t n; got < sizeof buf - 1 && (n = read(fd, buf + got, sizeof buf - 1 - got)) > 0;) got += (size_t)n;
    close(fd);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    json_object *j = json_tokener_parse(buf), *v;
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "peak_rss_bytes", &v));
    int64_t rss = json_object_get_int64(v);
    assert_true(json_object_object_get_ex(j, "tensor_bytes", &v));
    struct stat sb;
    char *sp = path2(src, "model.safetensors");
    assert_int_equal(stat(sp, &sb), 0);
    free(sp);
    printf("  converting %.1f MB of BF16 (largest tensor %.1f MB) into %.1f MB: peak RSS %.1f MB\n",
           (double)sb.st_size / 1e6, (double)LARGE.V * LARGE.D * 2 / 1e6, json_object_get_int64(v) / 1e6, rss / 1e6);
    assert_true(rss > 0);
#ifndef __SANITIZE_ADDRESS__ /* AddressSanitizer's shadow memory and quarantine count too */
    assert_true(rss < 24000000);
#endif
    json_object_put(j);
    moe_remove_tree(out), moe_remove_tree(src);
    free(out), free(src);
    rmdir(dir);
    free(dir);
}

/* ---- inspect ---- */

static void inspect_fixtures(void **state)
{
    (void)state;
    static const struct {
        const char *name, *layout;
        int quantized;
        int64_t params;
    } F[] = { { "base", "hub", 0, 591744 }, { "base-q4", "mlx", 1, 591744 }, { "base-q8", "mlx", 1, 591744 },
              { "gqa_tied", "hub", 0, 526720 }, { "gqa_tied-q4", "mlx", 1, 526720 } };
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIX "%s", F[i].name);
        moe_checkpoint_info *in = inspect_ok(dir);
        assert_string_equal(in->architecture, "olmoe");
        assert_string_equal(in->layout, F[i].layout);
        assert_int_equal(in->quantized, F[i].quantized);
        assert_int_equal(in->parameters, F[i].params);
        assert_int_equal(in->num_layers, 2);
        resident_as_loaded(dir, in);
        uint64_t bytes = 0;
        int tensors = 0;
        for (int k = 0; k < in->num_dtypes; k++) bytes += in->dtypes[k].bytes, tensors += in->dtypes[k].tensors;
        assert_int_equal(bytes, in->tensor_bytes);
        assert_int_equal(tensors, in->tensors);
        printf("  %-12s %-3s %2d groups, %lld parameters, %llu bytes, %llu resident\n", F[i].name, in->layout,
               in->num_groups, (long long)in->parameters, (unsigned long long)in->tensor_bytes,
               (unsigned long long)in->resident_bytes);
        if (!strcmp(F[i].name, "gqa_tied-q4")) {
            const moe_checkpoint_group *g = group_named(in, "model.layers.*.mlp.gate");
            assert_int_equal(g->count, 2), assert_int_equal(g->bits, 8), assert_int_equal(g->group_size, 64);
            assert_string_equal(g->dtype, "BF16");
            g = group_named(in, "model.layers.*.mlp.switch_mlp.up_proj");
            assert_int_equal(g->bits, 4);
            assert_int_equal(g->ndim, 3);
            assert_int_equal(g->shape[0], 8), assert_int_equal(g->shape[1], 64), assert_int_equal(g->shape[2], 128);
            assert_int_equal(g->parameters, 2 * 8 * 64 * 128);
            assert_int_equal(g->bytes, 2 * (8 * 64 * 128 / 2 + 2 * 8 * 64 * 2 * 2));
            assert_int_equal(in->num_groups, 14);
        }
        if (!strcmp(F[i].name, "gqa_tied")) {
            const moe_checkpoint_group *g = group_named(in, "model.layers.*.mlp.experts.*.down_proj");
            assert_int_equal(g->count, 16), assert_int_equal(g->bits, 0);
            assert_string_equal(g->dtype, "BF16");
            assert_int_equal(in->num_dtypes, 1);
        }
        if (!strcmp(F[i].name, "base-q4")) {
            const moe_checkpoint_group *g = group_named(in, "model.layers.*.input_layernorm");
            assert_string_equal(g->dtype, "F32");
            assert_int_equal(g->bits, 0);
            assert_int_equal(group_named(in, "lm_head")->bits, 4);
        }
        moe_checkpoint_info_free(in);
    }
    moe_checkpoint_info *in;
    assert_int_equal(moe_checkpoint_inspect("/nonexistent/model", &in), MOE_ERR_IO);
    assert_non_null(strstr(moe_last_error(), "/nonexistent/model/config.json"));
    assert_null(in);
}

/* Qwen3-MoE and Mixtral, hub and converted: the family's shape, QK-norm,
 * dense layers and module groups, resident bytes as loaded. */
static void families_inspect(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *out = path2(dir, "q");
    for (int fam = 0; fam < 2; fam++) {
        const ckpt *c = fam ? &MIXTRAL : &QWEN3;
        int qwen3 = !fam;
        mkdir(src, 0755);
        write_ckpt(src, c);
        moe_convert_options o = opts(src, out, 4, 64, MOE_DTYPE_COUNT);
        convert_ok(&o, NULL);
        for (int converted = 0; converted <= 1; converted++) {
            const char *d = converted ? out : src;
            moe_checkpoint_info *in = inspect_ok(d);
            assert_string_equal(in->architecture, qwen3 ? "qwen3_moe" : "mixtral");
            assert_string_equal(in->layout, converted ? "mlx" : "hub");
            assert_int_equal(in->quantized, converted);
            assert_string_equal(in->qk_norm, qwen3 ? "per_head" : "none");
            assert_int_equal(in->num_layers, c->L), assert_int_equal(in->head_dim, c->HD);
            assert_int_equal(in->num_experts, c->E), assert_int_equal(in->expert_hidden, c->I);
            if (qwen3) {
                assert_int_equal(in->num_dense_layers, 1);
                assert_int_equal(in->dense_layers[0], 1);
                assert_int_equal(in->dense_hidden, 128);
                const moe_checkpoint_group *g = group_named(in, "model.layers.*.self_attn.q_norm");
                assert_int_equal(g->count, 3), assert_int_equal(g->ndim, 1), assert_int_equal(g->shape[0], 32);
                g = group_named(in, "model.layers.*.mlp.down_proj"); /* the dense layer's */
                assert_int_equal(g->count, 1), assert_int_equal(g->shape[0], 64), assert_int_equal(g->shape[1], 128);
                assert_int_equal(g->bits, converted ? 4 : 0);
                g = group_named(in, "model.layers.*.mlp.gate");
                assert_int_equal(g->count, 2), assert_int_equal(g->bits, converted ? 8 : 0);
                assert_int_equal(g->group_size, converted ? 64 : 0);
            } else {
                assert_int_equal(in->num_dense_layers, 0);
                assert_null(in->dense_layers);
                assert_int_equal(group_named(in, "model.layers.*.block_sparse_moe.gate")->bits, converted ? 4 : 0);
            }
            const char *block = qwen3 ? "mlp" : "block_sparse_moe";
            char pat[96];
            if (converted) {
                snprintf(pat, sizeof pat, "model.layers.*.%s.switch_mlp.down_proj", block);
                const moe_checkpoint_group *g = group_named(in, pat);
                assert_int_equal(g->count, 2); /* Qwen3's layers 0 and 2, Mixtral's both */
                assert_int_equal(g->ndim, 3), assert_int_equal(g->shape[0], c->E);
                assert_int_equal(g->shape[1], c->D), assert_int_equal(g->shape[2], c->I);
            } else {
                snprintf(pat, sizeof pat, "model.layers.*.%s.experts.*.%s", block, qwen3 ? "up_proj" : "w3");
                const moe_checkpoint_group *g = group_named(in, pat);
                assert_int_equal(g->count, (c->L - (qwen3 ? 1 : 0)) * c->E);
                assert_int_equal(g->shape[0], c->I), assert_int_equal(g->shape[1], c->D);
            }
            resident_as_loaded(d, in);
            printf("  %-9s %-3s %2d groups, %lld parameters, %llu bytes, %llu resident\n", in->architecture,
                   in->layout, in->num_groups, (long long)in->parameters, (unsigned long long)in->tensor_bytes,
                   (unsigned long long)in->resident_bytes);
            moe_checkpoint_info_free(in);
        }
        moe_remove_tree(out), moe_remove_tree(src);
    }
    free(src), free(out);
    rmdir(dir);
    free(dir);
}

/* ---- bad input ---- */

static void bad_input(void **state)
{
    (void)state;
    char *dir = temp_dir(), *src = path2(dir, "src"), *out = path2(dir, "q");
    moe_convert_options o = opts(FIX "base", out, 3, 64, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_INVALID_ARG, "bits 3 is not 4 or 8");
    o = opts(FIX "base", out, 4, 48, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_INVALID_ARG, "group size 48");
    o = opts(FIX "base", out, 4, 64, MOE_DTYPE_U32);
    convert_fails(&o, MOE_ERR_INVALID_ARG, "dtype");
    o = opts(FIX "base", out, 4, 64, MOE_DTYPE_COUNT);
    o.router_bits = 2;
    convert_fails(&o, MOE_ERR_INVALID_ARG, "router bits 2");
    o = opts(dir, out, 4, 64, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_IO, "config.json: cannot open");
    o = opts(FIX "base-q4", out, 4, 64, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_UNSUPPORTED, "is already quantized (4-bit, group 64");
    char *deep = path2(dir, "no/such/dir");
    o = opts(FIX "base", deep, 4, 64, MOE_DTYPE_COUNT);
    convert_fails(&o, MOE_ERR_IO, "cannot create a directory beside");
    free(deep);
    /* damaged sources */
    static const struct {
        ckpt c;
        moe_status st;
        const char *needle;
    } BAD[] = {
        { { .drop = "model.layers.1.mlp.experts.3.up_proj.weight" }, MOE_ERR_FORMAT,
          "'model.layers.1.mlp.experts.3.up_proj.weight' is missing" },
        { { .drop = "model.layers.0.mlp.experts.0.gate_proj.weight" }, MOE_ERR_FORMAT, "Hugging Face layout" },
        { { .extra = "model.layers.0.self_attn.rotary_emb.inv_freq" }, MOE_ERR_FORMAT,
          "'model.layers.0.self_attn.rotary_emb.inv_freq' is not part of a model of type 'olmoe'" },
        { { .reshape = "model.layers.1.self_attn.k_proj.weight" }, MOE_ERR_SHAPE,
          "'model.layers.1.self_attn.k_proj.weight' has shape [31, 64], expected [32, 64]" },
        /* the other families: their own names, dense layers, per-head norms */
        { { .arch = MOE_ARCH_MIXTRAL, .drop = "model.layers.1.block_sparse_moe.experts.2.w3.weight" }, MOE_ERR_FORMAT,
          "'model.layers.1.block_sparse_moe.experts.2.w3.weight' is missing" },
        { { .arch = MOE_ARCH_MIXTRAL, .drop = "model.layers.0.block_sparse_moe.experts.0.w1.weight" }, MOE_ERR_FORMAT,
          "neither 'model.layers.0.block_sparse_moe.switch_mlp.gate_proj.weight' (MLX layout) nor "
          "'model.layers.0.block_sparse_moe.experts.0.w1.weight' (Hugging Face layout)" },
        { { .arch = MOE_ARCH_MIXTRAL, .extra = "model.layers.0.self_attn.q_norm.weight" }, MOE_ERR_FORMAT,
          "'model.layers.0.self_attn.q_norm.weight' is not part of a model of type 'mixtral'" },
        { { .arch = MOE_ARCH_QWEN3_MOE, .drop = "model.layers.1.mlp.up_proj.weight" }, MOE_ERR_FORMAT,
          "'model.layers.1.mlp.up_proj.weight' is missing" },
        { { .arch = MOE_ARCH_QWEN3_MOE, .drop = "model.layers.1.mlp.gate_proj.weight" }, MOE_ERR_FORMAT,
          "'model.layers.1.mlp.gate_proj.weight' is missing" },
        { { .arch = MOE_ARCH_QWEN3_MOE, .reshape = "model.layers.0.self_attn.q_norm.weight" }, MOE_ERR_SHAPE,
          "'model.layers.0.self_attn.q_norm.weight' has shape [31], expected [32]" },
        { { .arch = MOE_ARCH_QWEN3_MOE, .extra = "model.layers.1.mlp.gate.weight" }, MOE_ERR_FORMAT,
          "'model.layers.1.mlp.gate.weight' is not part of a model of type 'qwen3_moe'" },
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        ckpt c = BAD[i].c.arch == MOE_ARCH_QWEN3_MOE ? QWEN3 : BAD[i].c.arch == MOE_ARCH_MIXTRAL ? MIXTRAL : TINY;
        c.drop = BAD[i].c.drop, c.extra = BAD[i].c.extra, c.reshape = BAD[i].c.reshape;
        mkdir(src, 0755);
        write_ckpt(src, &c);
        o = opts(src, out, 4, 64, MOE_DTYPE_COUNT);
        convert_fails(&o, BAD[i].st, BAD[i].needle);
        assert_false(exists(out));
        assert_int_equal(count_prefixed(dir, "q"), 0);
        moe_remove_tree(src);
    }
    /* a tied checkpoint's redundant lm_head is dropped, not an error */
    ckpt c = TINY;
    c.tied = 1;
    c.extra = "lm_head.weight";
    mkdir(src, 0755);
    write_ckpt(src, &c);
    o = opts(src, out, 4, 64, MOE_DTYPE_COUNT);
    convert_ok(&o, NULL);
    moe_st_set *s = open_set(out);
    assert_null(moe_st_set_find(s, "lm_head.weight"));
    moe_st_set_close(s);
    moe_remove_tree(src), moe_remove_tree(out);
    free(src), free(out);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stream_writes_what_write_writes),
        cmocka_unit_test(killed_midway_leaves_no_out),
        cmocka_unit_test(fixtures_byte_for_byte),
        cmocka_unit_test(cast_then_quantize),
        cmocka_unit_test(stacked_float_input),
        cmocka_unit_test(hand_checked_groups),
        cmocka_unit_test(indivisible_stays_float),
        cmocka_unit_test(families_convert),
        cmocka_unit_test(family_fixtures),
        cmocka_unit_test(shards_and_files),
        cmocka_unit_test(refuse_force_and_keep_source),
        cmocka_unit_test(command_killed_interrupted_and_small),
        cmocka_unit_test(inspect_fixtures),
        cmocka_unit_test(families_inspect),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
