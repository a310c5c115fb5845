/* tests/test_batch.c — several sequences in one forward pass
 * (moe_context_eval_batch): each sequence's logits equal those of running
 * it alone within float rounding, prefill and decode steps mixed in one
 * batch, greedy continuations equal; bad batches refused with nothing
 * moved. */
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

enum { SEQS = 3, STEPS = 6 };

static moe_model *open_model(const char *name)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/%s", MOE_SOURCE_DIR, name);
    moe_model_options o = moe_model_default_options();
    o.activations = MOE_ACT_FLOAT;
    moe_model *m = NULL;
    if (moe_model_load(dir, &o, &m) != MOE_OK) fail_msg("%s: %s", name, moe_last_error());
    return m;
}

/* Every element within tol of b, relative to b's largest magnitude. */
static void close_rows(const float *a, const float *b, int n, double tol, const char *what)
{
    double scale = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int i = 0; i < n; i++)
        if (!(fabs((double)a[i] - b[i]) <= tol * scale))
            fail_msg("%s: [%d] = %.7g, alone %.7g", what, i, a[i], b[i]);
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Prompts of different lengths in one batch, then decode steps in which
 * the sequences take turns being absent or taking two tokens: against the
 * same calls made one sequence at a time. */
static void batch_equals_alone(const char *name)
{
    moe_model *m = open_model(name);
    int V = moe_model_get_info(m).vocab_size;
    static const int LEN[SEQS] = { 5, 11, 1 };
    int32_t prompt[SEQS][16];
    for (int s = 0; s < SEQS; s++)
        for (int i = 0; i < LEN[s]; i++) prompt[s][i] = (int32_t)((37 * (s + 1) + 11 * i + 3) % V);

    moe_context *batched[SEQS], *alone[SEQS];
    for (int s = 0; s < SEQS; s++) {
        assert_int_equal(moe_context_create(m, 64, 16, &batched[s]), MOE_OK);
        assert_int_equal(moe_context_create(m, 64, 16, &alone[s]), MOE_OK);
    }
    float *lb = malloc(sizeof(float) * SEQS * 16 * (size_t)V), *la = malloc(sizeof(float) * 16 * (size_t)V);
    assert_non_null(lb), assert_non_null(la);

    /* prefill: all positions of sequence 1, the last of the others */
    moe_batch_item items[SEQS];
    int32_t chosen[SEQS];   /* the greedy choice asked beside the logits */
    for (int s = 0; s < SEQS; s++)
        items[s] = (moe_batch_item){ .ctx = batched[s], .tokens = prompt[s], .n = LEN[s],
                                     .logits = lb + (size_t)s * 16 * V, .all_positions = s == 1,
                                     .greedy = &chosen[s] };
    assert_int_equal(moe_context_eval_batch(items, SEQS), MOE_OK);
    int32_t next[SEQS];
    for (int s = 0; s < SEQS; s++) {
        assert_int_equal(moe_context_eval(alone[s], prompt[s], LEN[s], la, s == 1), MOE_OK);
        char what[96];
        snprintf(what, sizeof what, "%s prefill of sequence %d", name, s);
        close_rows(lb + (size_t)s * 16 * V, la, (s == 1 ? LEN[s] : 1) * V, 2e-5, what);
        const float *last = la + (s == 1 ? (size_t)(LEN[s] - 1) * V : 0);
        next[s] = argmax(last, V);
        assert_int_equal(argmax(lb + (size_t)s * 16 * V + (last - la), V), next[s]);
        assert_int_equal(chosen[s], next[s]);
        assert_int_equal(moe_context_position(batched[s]), LEN[s]);
    }

    /* decode: greedy, one token each, sequence (step % 3) sitting out */
    for (int step = 0; step < STEPS; step++) {
        int n = 0, who[SEQS];
        for (int s = 0; s < SEQS; s++)
            if (s != step % SEQS) {
                who[n] = s;
                items[n++] = (moe_batch_item){ .ctx = batched[s], .tokens = &next[s], .n = 1, .logits = lb + (size_t)s * 16 * V };
            }
        assert_int_equal(moe_context_eval_batch(items, n), MOE_OK);
        for (int i = 0; i < n; i++) {
            int s = who[i];
            assert_int_equal(moe_context_eval(alone[s], &next[s], 1, la, 0), MOE_OK);
            char what[96];
            snprintf(what, sizeof what, "%s decode step %d of sequence %d", name, step, s);
            close_rows(lb + (size_t)s * 16 * V, la, V, 2e-5, what);
            next[s] = argmax(la, V);
            assert_int_equal(argmax(lb + (size_t)s * 16 * V, V), next[s]);
            assert_int_equal(moe_context_position(batched[s]), moe_context_position(alone[s]));
        }
    }
    for (int s = 0; s < SEQS; s++) moe_context_free(batched[s]), moe_context_free(alone[s]);
    free(lb), free(la);
    moe_model_free(m);
}

static void olmoe_quantized(void **state)
{
    (void)state;
    batch_equals_alone("olmoe/base-q4");
}

static void qwen3_dense_layers(void **state)
{
    (void)state;
    batch_equals_alone("families/qwen3_f32_tf4");
}

static void mixtral(void **state)
{
    (void)state;
    batch_equals_alone("families/mixtral_bf16_tf4");
}

static void expect_refused(const moe_batch_item *items, int n, moe_status want, const char *needle)
{
    moe_status st = moe_context_eval_batch(items, n);
    if (st != want || !strstr(moe_last_error(), needle))
        fail_msg("status %d, \"%s\" (wanted %d, \"%s\")", st, moe_last_error(), want, needle);
}

/* Refusals name the fault, and no context moves. */
static void bad_batches(void **state)
{
    (void)state;
    moe_model *m = open_model("olmoe/base"), *other = open_model("olmoe/base");
    moe_context *a, *b, *c;
    assert_int_equal(moe_context_create(m, 8, 4, &a), MOE_OK);
    assert_int_equal(moe_context_create(m, 8, 4, &b), MOE_OK);
    assert_int_equal(moe_context_create(other, 8, 4, &c), MOE_OK);
    int32_t ok[2] = { 1, 2 }, bad[2] = { 3, 100000 };
    moe_batch_item items[2] = { { .ctx = a, .tokens = ok, .n = 2 }, { .ctx = a, .tokens = ok, .n = 2 } };
    expect_refused(items, 2, MOE_ERR_INVALID_ARG, "sequences 0 and 1 share one context");
    items[1] = (moe_batch_item){ .ctx = c, .tokens = ok, .n = 2 };
    expect_refused(items, 2, MOE_ERR_INVALID_ARG, "sequence 1's context belongs to another model");
    items[1] = (moe_batch_item){ .ctx = b, .tokens = bad, .n = 2 };
    expect_refused(items, 2, MOE_ERR_RANGE, "token id 100000 (at 1)");
    items[1] = (moe_batch_item){ .ctx = b, .tokens = ok, .n = 0 };
    expect_refused(items, 2, MOE_ERR_INVALID_ARG, "token count 0");
    expect_refused(items, 0, MOE_ERR_INVALID_ARG, "at least one is needed");
    assert_int_equal(moe_context_position(a), 0);
    assert_int_equal(moe_context_position(b), 0);
    /* a context that is full refuses, and its neighbour does not move */
    int32_t four[4] = { 1, 2, 3, 4 };
    assert_int_equal(moe_context_eval(b, four, 4, NULL, 0), MOE_OK);
    assert_int_equal(moe_context_eval(b, four, 4, NULL, 0), MOE_OK);
    items[0] = (moe_batch_item){ .ctx = a, .tokens = ok, .n = 2 };
    items[1] = (moe_batch_item){ .ctx = b, .tokens = ok, .n = 1 };
    expect_refused(items, 2, MOE_ERR_RANGE, "do not fit the context of 8 tokens");
    assert_int_equal(moe_context_position(a), 0);
    moe_context_free(a), moe_context_free(b), moe_context_free(c);
    moe_model_free(m), moe_model_free(other);
}

/* The greedy choice made where the logits are (moe_context_eval_greedy,
 * and batch items asking for it without logits) is the first of the
 * largest logits, step after step. */
static void greedy_without_logits(void **state)
{
    (void)state;
    moe_model *m = open_model("olmoe/base");
    int V = moe_model_get_info(m).vocab_size;
    moe_context *ref, *one, *pair[2];
    assert_int_equal(moe_context_create(m, 32, 8, &ref), MOE_OK);
    assert_int_equal(moe_context_create(m, 32, 8, &one), MOE_OK);
    for (int s = 0; s < 2; s++) assert_int_equal(moe_context_create(m, 32, 8, &pair[s]), MOE_OK);
    float *logits = malloc(sizeof(float) * (size_t)V);
    assert_non_null(logits);
    int32_t prompt[5] = { 7, 3, 91, 40, 12 }, want, got_one = -1, got_pair[2] = { -1, -1 };
    assert_int_equal(moe_context_eval(ref, prompt, 5, logits, 0), MOE_OK);
    want = argmax(logits, V);
    assert_int_equal(moe_context_eval_greedy(one, prompt, 5, &got_one), MOE_OK);
    moe_batch_item items[2];
    for (int s = 0; s < 2; s++) items[s] = (moe_batch_item){ .ctx = pair[s], .tokens = prompt, .n = 5, .greedy = &got_pair[s] };
    assert_int_equal(moe_context_eval_batch(items, 2), MOE_OK);
    for (int step = 0; step < 8; step++) {
        assert_int_equal(got_one, want);
        assert_int_equal(got_pair[0], want), assert_int_equal(got_pair[1], want);
        int32_t next = want;
        assert_int_equal(moe_context_eval(ref, &next, 1, logits, 0), MOE_OK);
        want = argmax(logits, V);
        assert_int_equal(moe_context_eval_greedy(one, &next, 1, &got_one), MOE_OK);
        for (int s = 0; s < 2; s++) items[s] = (moe_batch_item){ .ctx = pair[s], .tokens = &next, .n = 1, .greedy = &got_pair[s] };
        assert_int_equal(moe_context_eval_batch(items, 2), MOE_OK);
    }
    assert_int_equal(moe_context_eval_greedy(one, prompt, 1, NULL), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "must not be NULL"));
    free(logits);
    moe_context_free(ref), moe_context_free(one), moe_context_free(pair[0]), moe_context_free(pair[1]);
    moe_model_free(m);
}

/* A context cut back to a prefix goes on as if it had only ever held it. */
static void truncate_keeps_prefix(void **state)
{
    (void)state;
    moe_model *m = open_model("families/qwen3_q8");
    int V = moe_model_get_info(m).vocab_size;
    int32_t a[9] = { 5, 9, 13, 2, 7, 30, 41, 3, 8 }, b[3] = { 11, 12, 19 };
    moe_context *cut, *fresh;
    assert_int_equal(moe_context_create(m, 32, 16, &cut), MOE_OK);
    assert_int_equal(moe_context_create(m, 32, 16, &fresh), MOE_OK);
    float *lc = malloc(sizeof(float) * (size_t)V), *lf = malloc(sizeof(float) * (size_t)V);
    /* the prefix in its own call, so its cache rows take the same path as fresh's */
    assert_int_equal(moe_context_eval(cut, a, 4, lc, 0), MOE_OK);
    assert_int_equal(moe_context_eval(cut, a + 4, 5, lc, 0), MOE_OK);
    assert_int_equal(moe_context_truncate(cut, 4), MOE_OK);
    assert_int_equal(moe_context_position(cut), 4);
    assert_int_equal(moe_context_eval(cut, b, 3, lc, 0), MOE_OK);
    assert_int_equal(moe_context_eval(fresh, a, 4, lf, 0), MOE_OK);
    assert_int_equal(moe_context_eval(fresh, b, 3, lf, 0), MOE_OK);
    assert_memory_equal(lc, lf, sizeof(float) * (size_t)V);
    assert_int_equal(moe_context_truncate(cut, 8), MOE_ERR_RANGE);
    assert_int_equal(moe_context_truncate(cut, -1), MOE_ERR_RANGE);
    assert_int_equal(moe_context_truncate(cut, 0), MOE_OK);
    free(lc), free(lf);
    moe_context_free(cut), moe_context_free(fresh);
    moe_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(olmoe_quantized),
        cmocka_unit_test(qwen3_dense_layers),
        cmocka_unit_test(mixtral),
        cmocka_unit_test(bad_batches),
        cmocka_unit_test(greedy_without_logits),
        cmocka_unit_test(truncate_keeps_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
