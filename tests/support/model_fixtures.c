/* tests/support/model_fixtures.c — see model_fixtures.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/generate.h"
#include "model_fixtures.h"

const test_fixture TEST_FIXTURES[] = {
    { "olmoe/base", 1e-4 },     { "olmoe/gqa_tied", 1e-4 },    { "olmoe/clip", 1e-4 },
    { "olmoe/base-q4", 1e-3 },  { "olmoe/base-q8", 1e-3 },     { "olmoe/gqa_tied-q4", 1e-3 },
    /* Qwen3-MoE and Mixtral (tests/fixtures/families/README.md) */
    { "families/qwen3_bf16", 1e-4 },       { "families/qwen3_f32_tf4", 1e-4 },
    { "families/mixtral_bf16_tf4", 1e-4 }, { "families/mixtral_f32_hd", 1e-4 },
    { "families/qwen3_q4", 1e-3 },         { "families/qwen3_q8", 1e-3 },
    { "families/mixtral_q4", 1e-3 },       { "families/mixtral_q8", 1e-3 },
    { "families/hf5_qwen3_bf16", 1e-4 },   { "families/hf5_qwen3_q8", 1e-3 },
    { "families/hf5_mixtral_bf16", 1e-4 }, { "families/hf5_mixtral_q4", 1e-3 },
};
const size_t TEST_NUM_FIXTURES = sizeof TEST_FIXTURES / sizeof TEST_FIXTURES[0];

void test_fixture_path(char *buf, size_t n, const char *name, const char *suffix)
{
    const char *root = getenv("MOE_SOURCE_DIR");
    snprintf(buf, n, "%s/tests/fixtures/%s%s", root && *root ? root : MOE_SOURCE_DIR, name, suffix);
}

void test_reference_load(const char *name, test_reference *r)
{
    char path[1024];
    test_fixture_path(path, sizeof path, name, ".reference.safetensors");
    if (moe_st_open(path, &r->file) != MOE_OK) fail_msg("%s", moe_last_error());
    const moe_st_tensor *t = moe_st_find(r->file, "tokens"), *l = moe_st_find(r->file, "logits"),
                        *g = moe_st_find(r->file, "greedy");
    assert_non_null(t), assert_non_null(l), assert_non_null(g);
    assert_string_equal(t->dtype_name, "I32");
    assert_string_equal(g->dtype_name, "I32");
    assert_int_equal(l->dtype, MOE_DTYPE_F32);
    r->tokens = t->data, r->greedy = g->data, r->logits = l->data;
    r->n = (int)t->shape[0], r->g = (int)g->shape[0], r->vocab = (int)l->shape[1];
    assert_int_equal(l->shape[0], r->n);
}

moe_model *test_fixture_model(const char *name, const moe_model_options *o)
{
    char dir[1024];
    test_fixture_path(dir, sizeof dir, name, "");
    moe_model *m = NULL;
    if (moe_model_load(dir, o, &m) != MOE_OK) fail_msg("%s: %s", name, moe_last_error());
    return m;
}

float *test_run_logits(moe_model *m, const test_reference *r, int step)
{
    float *out = malloc(sizeof(float) * (size_t)r->n * r->vocab);
    moe_context *c;
    assert_int_equal(moe_context_create(m, r->n, step, &c), MOE_OK);
    for (int i = 0; i < r->n; i += step) {
        int k = r->n - i < step ? r->n - i : step;
        if (moe_context_eval(c, r->tokens + i, k, out + (size_t)i * r->vocab, 1) != MOE_OK)
            fail_msg("%s", moe_last_error());
    }
    moe_context_free(c);
    return out;
}

double test_check_logits(const char *what, const test_reference *r, const float *got, const float *want, double tol)
{
    double worst = 0;
    for (int t = 0; t < r->n; t++) {
        double scale = 0;
        for (int v = 0; v < r->vocab; v++) scale = fmax(scale, fabs(want[(size_t)t * r->vocab + v]));
        for (int v = 0; v < r->vocab; v++) {
            size_t i = (size_t)t * r->vocab + v;
            double err = fabs((double)got[i] - want[i]) / scale;
            if (!(err <= tol))
                fail_msg("%s: logits[%d][%d] = %.7g, reference %.7g (error %.3g of the row's largest, limit %.1g)", what,
                         t, v, got[i], want[i], err, tol);
            worst = fmax(worst, err);
        }
    }
    return worst;
}

void test_check_greedy(const char *what, moe_model *m, const test_reference *r)
{
    moe_context *c;
    moe_sampler *s;
    moe_sampler_config sc = moe_sampler_default_config();
    assert_int_equal(moe_sampler_create(&sc, r->vocab, &s), MOE_OK);
    assert_int_equal(moe_context_create(m, r->n + r->g, 8, &c), MOE_OK);
    moe_gen_request req = { .max_new_tokens = r->g, .prefill_step = 8, .sampler = s };
    int32_t out[64];
    int n_out;
    assert_true(r->g <= 64);
    if (moe_generate(c, r->tokens, r->n, &req, out, &n_out, NULL) != MOE_OK) fail_msg("%s", moe_last_error());
    assert_int_equal(n_out, r->g);
    for (int i = 0; i < r->g; i++)
        if (out[i] != r->greedy[i]) fail_msg("%s: greedy token %d is %d, reference %d", what, i, out[i], r->greedy[i]);
    moe_context_free(c);
    moe_sampler_free(s);
}

/* ---- an 8-bit KV cache (kernels/kv_q8.h) ---- */

/* Logit error of a Q8 cache, relative to the row's largest logit. At the
 * first position attention returns v itself, so the error is the values'
 * rounding (up to 0.4% of a group's largest |v|) carried through layers of
 * random weights, which amplify it more than trained ones do; where it
 * tips one of these tiny models' routers past a near tie, a position's
 * logits jump (measured up to 0.56, mixtral_q8), as with one int8 digit
 * of activations. So: the median row within TEST_Q8_TYPICAL (measured:
 * 0.005 to 0.032), every row within TEST_Q8_MOST. */
const double TEST_Q8_TYPICAL = 5e-2, TEST_Q8_MOST = 1.0;
/* A near tie (the f16 logits' two best, relative to the largest) that the
 * Q8 cache's error may break the other way. */
const double TEST_Q8_TIE = 0.2;
/* Chunked against single-pass prefill: float rounding of k and v before
 * they are quantized moves a code by one step now and then (measured up to
 * 1.1e-3), beside the float caches' 2e-5. */
const double TEST_Q8_CHUNKS = 5e-3;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void test_check_q8_logits(const char *what, const test_reference *r, const float *got)
{
    double *e = malloc(sizeof(double) * r->n), most = 0;
    for (int t = 0; t < r->n; t++) {
        const float *g = got + (size_t)t * r->vocab, *w = r->logits + (size_t)t * r->vocab;
        double top = 0, err = 0;
        for (int v = 0; v < r->vocab; v++) top = fmax(top, fabs(w[v]));
        for (int v = 0; v < r->vocab; v++) err = fmax(err, fabs((double)g[v] - w[v]) / top);
        e[t] = isnan(err) ? INFINITY : err;
        most = fmax(most, e[t]);
    }
    qsort(e, (size_t)r->n, sizeof *e, cmp_double);
    double median = e[r->n / 2];
    free(e);
    printf("  %-40s error: median row %.2e (limit %.0e), largest %.2e (limit %.0e)\n", what, median, TEST_Q8_TYPICAL,
           most, TEST_Q8_MOST);
    if (!(median <= TEST_Q8_TYPICAL) || !(most <= TEST_Q8_MOST))
        fail_msg("%s: logits' error median %.3g, largest %.3g (limits %.1g, %.1g)", what, median, most,
                 TEST_Q8_TYPICAL, TEST_Q8_MOST);
}

static int argmax(const float *x, int n, float *second)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    *second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && x[i] > *second) *second = x[i];
    return best;
}

void test_check_greedy_q8(const char *what, moe_model *q8, moe_model *half, const test_reference *r)
{
    enum { NEW = 24 };
    int V = r->vocab, n = r->n;
    moe_context *cq, *ch;
    assert_int_equal(moe_context_create(q8, n + NEW, n, &cq), MOE_OK);
    assert_int_equal(moe_context_create(half, n + NEW, n, &ch), MOE_OK);
    float *lq = malloc(sizeof(float) * V), *lh = malloc(sizeof(float) * V);
    assert_int_equal(moe_context_eval(cq, r->tokens, n, lq, 0), MOE_OK);
    assert_int_equal(moe_context_eval(ch, r->tokens, n, lh, 0), MOE_OK);
    int same = 0;
    for (; same < NEW; same++) {
        float sq, sh;
        int tq = argmax(lq, V, &sq), th = argmax(lh, V, &sh);
        if (tq != th) {
            double top = 0;
            for (int v = 0; v < V; v++) top = fmax(top, fabs(lh[v]));
            double gap = (lh[th] - sh) / top;
            printf("  %-40s parts from f16 at step %d (%d, f16 %d): f16's two best %.2e apart\n", what, same, tq, th,
                   gap);
            if (!(gap <= TEST_Q8_TIE))
                fail_msg("%s: greedy token %d is %d, f16 gives %d, %.3g apart", what, same, tq, th, gap);
            break;
        }
        int32_t t = tq;
        assert_int_equal(moe_context_eval(cq, &t, 1, lq, 0), MOE_OK);
        assert_int_equal(moe_context_eval(ch, &t, 1, lh, 0), MOE_OK);
    }
    if (same == NEW) printf("  %-40s greedy equals f16's (%d tokens)\n", what, NEW);
    free(lq), free(lh);
    moe_context_free(cq), moe_context_free(ch);
}
