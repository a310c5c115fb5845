/* tests/test_kv_q8_model.c — models end to end with the 8-bit KV cache
 * (kv_dtype MOE_DTYPE_Q8, `--kv-cache q8`) on the fixtures of
 * test_model_reference.c:
 *  - logits at every position within Q8_TOL of transformers' (relative to
 *    each row's largest logit; exact activations): the cache's rounding,
 *    up to scale/2 = max|x|/254 of each group of 32, is the only change
 *    from the f32 cache's path, which meets 1e-4 / 1e-3;
 *  - greedy continuations equal to an f16 cache's, step by step, up to a
 *    step where the f16 logits' two best are within the Q8 error bound of
 *    each other (a near tie either cache may break either way; these tiny
 *    random models have some), after which the continuations may part;
 *  - a chunked prefill (tile kernels on dequantized blocks) within float
 *    rounding of the single pass (rows kernels);
 *  - int8x2 activations with a Q8 cache (the fast combination): within
 *    1e-2, the same greedy tokens;
 *  - the memory estimate counts a Q8 row's bytes, and the context's cache
 *    is that size;
 *  - the CUDA backend refuses a Q8 cache naming --kv-cache (where a GPU is
 *    present; skipped otherwise), as model options refuse a dtype that is
 *    no cache's. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moe/model.h"
#include "moe/runtime.h"
#include "support/model_fixtures.h"
#include "support/testutil.h"

/* Logit error of a Q8 cache, relative to the row's largest logit. At the
 * first position attention returns v itself, so the error is the values'
 * rounding (up to 0.4% of a group's largest |v|) carried through layers of
 * random weights, which amplify it more than trained ones do; where it
 * tips one of these tiny models' routers past a near tie, a position's
 * logits jump (measured up to 0.56, mixtral_q8), as with one int8 digit
 * of activations. So: the median row within Q8_TYPICAL (measured: 0.005
 * to 0.032), every row within Q8_MOST. */
static const double Q8_TYPICAL = 5e-2, Q8_MOST = 1.0;
/* A near tie (the f16 logits' two best, relative to the largest) that the
 * Q8 cache's error may break the other way. */
static const double Q8_TIE = 0.2;
/* Chunked against single-pass prefill: float rounding of k and v before
 * they are quantized moves a code by one step now and then (measured up to
 * 1.1e-3), beside the float caches' 2e-5. */
static const double Q8_CHUNKS = 5e-3;

static moe_model *open_model(const char *name, int act, int kv)
{
    moe_model_options o = moe_model_default_options();
    o.activations = act;
    o.kv_dtype = kv;
    return test_fixture_model(name, &o);
}

static void check_logits(const char *what, const test_reference *r, const float *got, const float *want, double tol)
{
    printf("  %-40s largest error %.2e (limit %.0e)\n", what, test_check_logits(what, r, got, want, tol), tol);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Against the reference: each row's largest error relative to its largest
 * |logit|; their median within Q8_TYPICAL, every one within Q8_MOST. */
static void check_q8_logits(const char *what, const test_reference *r, const float *got)
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
    printf("  %-40s error: median row %.2e (limit %.0e), largest %.2e (limit %.0e)\n", what, median, Q8_TYPICAL, most,
           Q8_MOST);
    if (!(median <= Q8_TYPICAL) || !(most <= Q8_MOST))
        fail_msg("%s: logits' error median %.3g, largest %.3g (limits %.1g, %.1g)", what, median, most, Q8_TYPICAL,
                 Q8_MOST);
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

/* Greedy continuations of the prompt with a Q8 cache (q8) and an f16 one
 * (half), one token a step, equal up to a near tie of the f16 logits. */
static void greedy_as_f16(const char *what, moe_model *q8, moe_model *half, const test_reference *r)
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
            if (!(gap <= Q8_TIE)) fail_msg("%s: greedy token %d is %d, f16 gives %d, %.3g apart", what, same, tq, th, gap);
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

static void check_fixture(const test_fixture *fx)
{
    char what[128];
    test_reference r;
    test_reference_load(fx->name, &r);
    moe_model *m = open_model(fx->name, MOE_ACT_FLOAT, MOE_DTYPE_Q8);
    assert_int_equal(moe_model_get_info(m).kv_dtype, MOE_DTYPE_Q8);
    float *single = test_run_logits(m, &r, r.n);
    snprintf(what, sizeof what, "%s q8 cache", fx->name);
    check_q8_logits(what, &r, single);
    static const int STEPS[] = { 1, 5 };
    for (size_t i = 0; i < sizeof STEPS / sizeof STEPS[0]; i++) {
        float *chunked = test_run_logits(m, &r, STEPS[i]);
        snprintf(what, sizeof what, "%s q8 cache, chunks of %d", fx->name, STEPS[i]);
        check_logits(what, &r, chunked, single, Q8_CHUNKS);
        free(chunked);
    }
    free(single);

    moe_model *half = open_model(fx->name, MOE_ACT_FLOAT, MOE_DTYPE_F16);
    snprintf(what, sizeof what, "%s q8 cache", fx->name);
    greedy_as_f16(what, m, half, &r);
    moe_model_free(half);
    moe_model_free(m);

    if (fx->tol > 1e-4) {
        m = open_model(fx->name, MOE_ACT_INT8X2, MOE_DTYPE_Q8);
        float *x2 = test_run_logits(m, &r, r.n);
        snprintf(what, sizeof what, "%s q8 cache, int8x2", fx->name);
        check_q8_logits(what, &r, x2);
        free(x2);
        moe_model_free(m);
    }
    moe_st_close(r.file);
}

static void every_fixture(void **state)
{
    (void)state;
    for (size_t i = 0; i < TEST_NUM_FIXTURES; i++) check_fixture(&TEST_FIXTURES[i]);
}

/* One GQA fixture and one of another family with each kernel set. */
static void every_kernel_set(void **state)
{
    (void)state;
    const char *names[TEST_MAX_ISAS];
    for (int t = 0, nt = test_supported_isas(names, TEST_MAX_ISAS); t < nt; t++) {
        assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
        printf(" %s:\n", names[t]);
        check_fixture(&TEST_FIXTURES[1]); /* olmoe/gqa_tied */
        check_fixture(&TEST_FIXTURES[7]); /* families/qwen3_f32_tf4 */
    }
}

/* The estimate and the context hold a Q8 row's bytes: 16 kv heads of
 * head_dim 128 are 16·136 bytes a row, two rows (K, V) a layer. */
static void memory(void **state)
{
    (void)state;
    char dir[512];
    test_fixture_path(dir, sizeof dir, TEST_FIXTURES[1].name, "");
    moe_model_options o = moe_model_default_options();
    o.kv_dtype = MOE_DTYPE_Q8;
    moe_model_memory mem;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &mem), MOE_OK);
    moe_model *m = test_fixture_model(TEST_FIXTURES[1].name, &o);
    moe_model_info info = moe_model_get_info(m);
    size_t row = moe_kv_row_bytes(MOE_DTYPE_Q8, info.num_kv_heads, info.head_dim);
    assert_int_equal(mem.kv_dtype, MOE_DTYPE_Q8);
    assert_int_equal(mem.kv_bytes_per_token, 2 * (size_t)info.num_layers * row);
    assert_int_equal(mem.kv_cache, 100 * mem.kv_bytes_per_token);
    o.kv_dtype = MOE_DTYPE_F16;
    moe_model_memory half;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, &half), MOE_OK);
    assert_true(mem.kv_bytes_per_token < half.kv_bytes_per_token);
    moe_model_free(m);
}

/* A dtype no cache holds is refused by name; a Q8 cache where the
 * backend has none (CUDA), naming --kv-cache. */
static void refusals(void **state)
{
    (void)state;
    moe_model_options o = moe_model_default_options();
    moe_model *m = NULL;
    o.kv_dtype = MOE_DTYPE_BF16;
    assert_int_equal(moe_model_synthetic("olmoe", 4, 1, 1, &o, &m), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "kv_dtype"));
    assert_null(m);
    if (moe_device_available(MOE_DEVICE_CUDA) != MOE_OK) {
        print_message("no CUDA device: the CUDA refusal is not checked here\n");
        return;
    }
    o.kv_dtype = MOE_DTYPE_Q8;
    o.device = MOE_DEVICE_CUDA;
    assert_int_equal(moe_model_synthetic("olmoe", 4, 1, 1, &o, &m), MOE_ERR_UNSUPPORTED);
    print_message("CUDA with a Q8 cache: %s\n", moe_last_error());
    assert_non_null(strstr(moe_last_error(), "--kv-cache"));
    assert_null(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refusals),
        cmocka_unit_test(memory),
        cmocka_unit_test(every_fixture),
        cmocka_unit_test(every_kernel_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
