/* tests/test_model_errors.c — checkpoints written by the test itself: the
 * Hugging Face per-expert layout and the MLX stacked layout of the same
 * float weights give the same logits; then every kind of bad checkpoint
 * and bad request gets a clear error that names what is wrong (a missing
 * tensor, a wrong shape or dtype, a truncated file, quantized tensors the
 * config does not describe, an unsupported architecture, token ids outside
 * the vocabulary, more tokens than the cache holds). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/safetensors_write.h"
#include "quant/dtype.h"
#include "moe/model.h"
#include "support/testutil.h"

enum { D = 32, H = 2, KVH = 1, HD = 16, E = 4, K = 2, I = 24, V = 37, L = 2 };
enum { MAX_TENSORS = 128 };

typedef struct {
    const char *drop;            /* leave this tensor out */
    const char *reshape;         /* give this tensor one more row */
    const char *retype;          /* write this tensor's dtype as I64 */
    const char *model_type;      /* config's model_type (default olmoe) */
    int add_scales;              /* an extra q_proj.scales tensor */
    int truncate;                /* cut the file's last bytes */
    /* v_proj values rounded to bf16, and stored as BF16 (so q, k and v no
     * longer share a format and load as three projections) */
    int v_rounded, v_bf16;
} damage;

typedef struct {
    moe_st_out_tensor t[MAX_TENSORS];
    float *bufs[MAX_TENSORS];
    char names[MAX_TENSORS][96];
    int n;
} tensor_list;

/* ones: 1 norm-like values near 1, 0 small random weights, -1 left unset
 * (the caller fills it; the random stream is not advanced). */
static void add(tensor_list *tl, uint64_t *rng, const char *name, int64_t d0, int64_t d1, int64_t d2, int ones)
{
    int nd = d2 ? 3 : d1 ? 2 : 1;
    size_t count = (size_t)d0 * (d1 ? d1 : 1) * (d2 ? d2 : 1);
    float *buf = malloc(sizeof(float) * count);
    for (size_t i = 0; ones >= 0 && i < count; i++) buf[i] = ones ? 1.0f + 0.25f * (float)test_rand_uniform(rng, -1, 1)
                                                     : (float)test_rand_uniform(rng, -0.3, 0.3);
    moe_st_out_tensor *t = &tl->t[tl->n];
    snprintf(tl->names[tl->n], sizeof tl->names[0], "%s", name);
    *t = (moe_st_out_tensor){ tl->names[tl->n], "F32", nd, { d0, d1, d2 }, buf, sizeof(float) * count };
    tl->bufs[tl->n++] = buf;
}

/* The same weights in either layout (the random stream is consumed in the
 * same order: expert by expert). */
static void make_tensors(tensor_list *tl, int mlx)
{
    uint64_t rng = 42;
    char n[96];
    tl->n = 0;
    add(tl, &rng, "model.embed_tokens.weight", V, D, 0, 0);
    for (int l = 0; l < L; l++) {
#define NAME(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        add(tl, &rng, NAME("input_layernorm.weight"), D, 0, 0, 1);
        add(tl, &rng, NAME("self_attn.q_proj.weight"), H * HD, D, 0, 0);
        add(tl, &rng, NAME("self_attn.k_proj.weight"), KVH * HD, D, 0, 0);
        add(tl, &rng, NAME("self_attn.v_proj.weight"), KVH * HD, D, 0, 0);
        add(tl, &rng, NAME("self_attn.o_proj.weight"), D, H * HD, 0, 0);
        add(tl, &rng, NAME("self_attn.q_norm.weight"), H * HD, 0, 0, 1);
        add(tl, &rng, NAME("self_attn.k_norm.weight"), KVH * HD, 0, 0, 1);
        add(tl, &rng, NAME("post_attention_layernorm.weight"), D, 0, 0, 1);
        add(tl, &rng, NAME("mlp.gate.weight"), E, D, 0, 0);
        if (mlx) {
            /* stacked: generate expert by expert, then interleave */
            tensor_list tmp = { .n = 0 };
            for (int e = 0; e < E; e++) {
                add(&tmp, &rng, "g", I, D, 0, 0);
                add(&tmp, &rng, "u", I, D, 0, 0);
                add(&tmp, &rng, "d", D, I, 0, 0);
            }
            static const char *P[3] = { "gate_proj", "up_proj", "down_proj" };
            for (int p = 0; p < 3; p++) {
                snprintf(n, sizeof n, "model.layers.%d.mlp.switch_mlp.%s.weight", l, P[p]);
                add(tl, &rng, n, E, p < 2 ? I : D, p < 2 ? D : I, -1);
                size_t per = tmp.t[p].nbytes;
                for (int e = 0; e < E; e++) memcpy((char *)tl->bufs[tl->n - 1] + per * e, tmp.bufs[3 * e + p], per);
            }
            for (int i = 0; i < tmp.n; i++) free(tmp.bufs[i]);
        } else {
            for (int e = 0; e < E; e++) {
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
                add(tl, &rng, n, I, D, 0, 0);
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
                add(tl, &rng, n, I, D, 0, 0);
                snprintf(n, sizeof n, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
                add(tl, &rng, n, D, I, 0, 0);
            }
        }
#undef NAME
    }
    add(tl, &rng, "model.norm.weight", D, 0, 0, 1);
    add(tl, &rng, "lm_head.weight", V, D, 0, 0);
}

static char *make_dir(void)
{
    char *dir = strdup("/tmp/moe-test-ckpt-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void remove_dir(char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", dir), unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir), unlink(p);
    rmdir(dir);
    free(dir);
}

static void write_checkpoint(const char *dir, int mlx, const damage *dm)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"%s\", \"hidden_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d,"
               " \"num_key_value_heads\": %d, \"intermediate_size\": %d, \"num_experts\": %d,"
               " \"num_experts_per_tok\": %d, \"vocab_size\": %d, \"max_position_embeddings\": 64,"
               " \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"norm_topk_prob\": false,"
               " \"tie_word_embeddings\": false, \"eos_token_id\": 3}\n",
            dm && dm->model_type ? dm->model_type : "olmoe", D, L, H, KVH, I, E, K, V);
    fclose(f);
    tensor_list tl;
    make_tensors(&tl, mlx);
    moe_st_out_tensor out[MAX_TENSORS];
    int n = 0;
    for (int i = 0; i < tl.n; i++) {
        moe_st_out_tensor t = tl.t[i];
        if (dm && dm->drop && !strcmp(t.name, dm->drop)) continue;
        if (dm && dm->reshape && !strcmp(t.name, dm->reshape)) {
            t.shape[0] -= 1; /* one row fewer, bytes to match */
            t.nbytes = t.nbytes / (size_t)(t.shape[0] + 1) * (size_t)t.shape[0];
        }
        if (dm && dm->retype && !strcmp(t.name, dm->retype)) {
            t.dtype = "I64";
            t.shape[0] /= 2;
            t.nbytes = (size_t)t.shape[0] * 8 * (t.ndim > 1 ? (size_t)t.shape[1] : 1);
        }
        if (dm && dm->v_rounded && strstr(t.name, "self_attn.v_proj.weight")) {
            float *w = (float *)t.data;
            size_t count = t.nbytes / sizeof(float);
            for (size_t i = 0; i < count; i++) w[i] = moe_bf16_to_f32(moe_f32_to_bf16(w[i]));
            if (dm->v_bf16) {
                uint16_t *h = (uint16_t *)t.data; /* in place: the halves fit in the front */
                for (size_t i = 0; i < count; i++) h[i] = moe_f32_to_bf16(w[i]);
                t.dtype = "BF16";
                t.nbytes = count * sizeof(uint16_t);
            }
        }
        out[n++] = t;
    }
    static float scales[H * HD];
    if (dm && dm->add_scales)
        out[n++] = (moe_st_out_tensor){ "model.layers.0.self_attn.q_proj.scales", "F32", 2, { H * HD, 1 }, scales,
                                        sizeof scales };
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(moe_st_write(path, out, n, NULL, 0), MOE_OK);
    if (dm && dm->truncate) assert_int_equal(truncate(path, 1000), 0);
    for (int i = 0; i < tl.n; i++) free(tl.bufs[i]);
}

static moe_model *load(const char *dir, moe_status want)
{
    moe_model *m = NULL;
    moe_status st = moe_model_load(dir, NULL, &m);
    if (st != want) fail_msg("load: status %d, want %d (%s)", st, want, moe_last_error());
    return m;
}

static float *logits_of(moe_model *m, const int32_t *ids, int n)
{
    moe_context *c;
    float *out = malloc(sizeof(float) * (size_t)n * V);
    assert_int_equal(moe_context_create(m, n, n, &c), MOE_OK);
    assert_int_equal(moe_context_eval(c, ids, n, out, 1), MOE_OK);
    moe_context_free(c);
    return out;
}

static void layouts_agree(void **state)
{
    (void)state;
    static const int32_t ids[] = { 5, 17, 36, 0, 22, 9, 9 };
    char *hf = make_dir(), *mlx = make_dir();
    write_checkpoint(hf, 0, NULL);
    write_checkpoint(mlx, 1, NULL);
    moe_model *a = load(hf, MOE_OK), *b = load(mlx, MOE_OK);
    float *la = logits_of(a, ids, 7), *lb = logits_of(b, ids, 7);
    for (int i = 0; i < 7 * V; i++) {
        assert_true(isfinite(la[i]));
        if (la[i] != lb[i]) fail_msg("logit %d: per-expert %.9g, stacked %.9g", i, la[i], lb[i]);
    }
    moe_model_info info = moe_model_get_info(a);
    assert_int_equal(info.vocab_size, V);
    assert_int_equal(info.num_kv_heads, KVH);
    assert_int_equal(info.num_eos, 1);
    assert_int_equal(info.eos_ids[0], 3);
    free(la), free(lb);
    moe_model_free(a), moe_model_free(b);
    remove_dir(hf), remove_dir(mlx);
}

/* q, k and v stacked into one projection (one format) and loaded as three
 * (v in another dtype): the same logits. */
static void stacked_and_separate_qkv(void **state)
{
    (void)state;
    static const int32_t ids[] = { 3, 30, 11, 0, 36 };
    char *a = make_dir(), *b = make_dir();
    damage same = { .v_rounded = 1 }, mixed = { .v_rounded = 1, .v_bf16 = 1 };
    write_checkpoint(a, 0, &same);
    write_checkpoint(b, 0, &mixed);
    moe_model *ma = load(a, MOE_OK), *mb = load(b, MOE_OK);
    float *la = logits_of(ma, ids, 5), *lb = logits_of(mb, ids, 5);
    for (int i = 0; i < 5 * V; i++)
        if (fabsf(la[i] - lb[i]) > 1e-5f * (1 + fabsf(la[i])))
            fail_msg("logit %d: stacked %.9g, separate %.9g", i, la[i], lb[i]);
    free(la), free(lb);
    moe_model_free(ma), moe_model_free(mb);
    remove_dir(a), remove_dir(b);
}

/* Loading fails with `want` and a message containing `needle`. */
static void expect_bad(int mlx, const damage *dm, moe_status want, const char *needle)
{
    char *dir = make_dir();
    write_checkpoint(dir, mlx, dm);
    moe_model *m = load(dir, want);
    assert_null(m);
    if (!strstr(moe_last_error(), needle)) fail_msg("message \"%s\" does not name \"%s\"", moe_last_error(), needle);
    remove_dir(dir);
}

static void bad_checkpoints(void **state)
{
    (void)state;
    damage dm = { .drop = "model.layers.1.self_attn.k_norm.weight" };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "'model.layers.1.self_attn.k_norm.weight' is missing");
    dm = (damage){ .drop = "model.layers.0.mlp.experts.0.gate_proj.weight" };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "Hugging Face layout");
    dm = (damage){ .drop = "model.layers.1.mlp.experts.3.down_proj.weight" };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "experts.3.down_proj.weight' is missing");
    dm = (damage){ .drop = "lm_head.weight" };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "'lm_head.weight' is missing");
    dm = (damage){ .reshape = "model.layers.0.self_attn.v_proj.weight" };
    expect_bad(0, &dm, MOE_ERR_SHAPE, "'model.layers.0.self_attn.v_proj.weight' has shape [15, 32], expected [16, 32]");
    dm = (damage){ .reshape = "model.layers.1.mlp.switch_mlp.up_proj.weight" };
    expect_bad(1, &dm, MOE_ERR_SHAPE, "has shape [3, 24, 32], expected [4, 24, 32]");
    dm = (damage){ .retype = "model.norm.weight" };
    expect_bad(0, &dm, MOE_ERR_DTYPE, "'model.norm.weight' has dtype I64");
    dm = (damage){ .add_scales = 1 };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "does not cover module 'model.layers.0.self_attn.q_proj'");
    dm = (damage){ .model_type = "llama" };
    expect_bad(0, &dm, MOE_ERR_UNSUPPORTED, "model_type 'llama' is not supported");
    dm = (damage){ .truncate = 1 };
    expect_bad(0, &dm, MOE_ERR_FORMAT, "model.safetensors");
    moe_model *m = load("/nonexistent/moe-model", MOE_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(moe_last_error(), "/nonexistent/moe-model/config.json"));
}

static void bad_requests(void **state)
{
    (void)state;
    char *dir = make_dir();
    write_checkpoint(dir, 0, NULL);
    moe_model *m = load(dir, MOE_OK);
    moe_context *c;
    float logits[V];
    assert_int_equal(moe_context_create(m, 4, 2, &c), MOE_OK);
    int32_t ok[2] = { 1, 2 }, bad[2] = { 1, V }, neg[1] = { -1 };
    assert_int_equal(moe_context_eval(c, bad, 2, logits, 0), MOE_ERR_RANGE);
    assert_non_null(strstr(moe_last_error(), "token id 37 (at 1) is outside the vocabulary 0..36"));
    assert_int_equal(moe_context_eval(c, neg, 1, logits, 0), MOE_ERR_RANGE);
    assert_int_equal(moe_context_position(c), 0);
    assert_int_equal(moe_context_eval(c, ok, 2, logits, 0), MOE_OK);
    int32_t three[3] = { 1, 2, 3 };
    assert_int_equal(moe_context_eval(c, three, 3, logits, 0), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "exceed the chunk size 2"));
    assert_int_equal(moe_context_eval(c, ok, 2, logits, 0), MOE_OK);
    assert_int_equal(moe_context_eval(c, ok, 1, logits, 0), MOE_ERR_RANGE);
    assert_non_null(strstr(moe_last_error(), "do not fit the context of 4 tokens"));
    moe_context_reset(c);
    assert_int_equal(moe_context_eval(c, ok, 1, logits, 0), MOE_OK);
    moe_context *none;
    assert_int_equal(moe_context_create(m, 0, 1, &none), MOE_ERR_INVALID_ARG);
    assert_null(none);
    moe_context_free(c);
    moe_model_free(m);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(layouts_agree),
        cmocka_unit_test(stacked_and_separate_qkv),
        cmocka_unit_test(bad_checkpoints),
        cmocka_unit_test(bad_requests),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
