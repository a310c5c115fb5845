/* tests/test_server_engine.c — the engine behind `moe serve` on the tiny
 * OLMoE fixture: requests run together give the greedy ids each gives
 * alone (moe_generate, one sequence), a prompt that extends a slot's cache
 * reuses it with the same result, a long prompt is prefilled in chunks
 * while the running streams go on, a short request gets its first token
 * within two steps, cancelled requests free their slot, and a full server
 * answers 503. Every wait is bounded. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "moe/generate.h"
#include "moe/model.h"
#include "server/engine.h"

enum { MAX_CONTEXT = 256, BATCH = 16 };

static moe_model *model;
static moe_stop_ids eos = { 1, { 250 } };

static int setup(void **state)
{
    (void)state;
    moe_model_options o = moe_model_default_options();
    o.activations = MOE_ACT_FLOAT;
    if (moe_model_load(MOE_SOURCE_DIR "/tests/fixtures/olmoe/base", &o, &model) != MOE_OK)
        fail_msg("%s", moe_last_error());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    moe_model_free(model);
    return 0;
}

static moe_engine *engine(int parallel, int queue, int delay_ms)
{
    moe_engine_config c = { .model = model, .eos = &eos, .parallel = parallel, .max_context = MAX_CONTEXT,
                            .batch_tokens = BATCH, .queue = queue, .step_delay_ms = delay_ms };
    moe_engine *e;
    assert_int_equal(moe_engine_create(&c, &e), MOE_OK);
    return e;
}

static void prompt_of(int32_t *p, int n, int seed)
{
    for (int i = 0; i < n; i++) p[i] = (int32_t)((seed * 31 + i * 17 + 5) % 250);
}

static moe_job *job(const int32_t *prompt, int n, int max_tokens)
{
    moe_job *j = moe_job_new();
    assert_non_null(j);
    j->kind = MOE_API_COMPLETION;
    j->prompt = malloc(sizeof(int32_t) * (size_t)n);
    memcpy(j->prompt, prompt, sizeof(int32_t) * (size_t)n);
    j->n_prompt = n;
    j->max_tokens = max_tokens;
    j->sampling = moe_sampler_default_config();   /* greedy */
    j->ignore_eos = 1;
    j->keep_ids = 1;
    j->t_arrival = moe_engine_now();
    return j;
}

static void submit(moe_engine *e, moe_job *j)
{
    moe_api_error err;
    if (moe_engine_submit(e, j, &err)) fail_msg("refused: %s", err.message);
}

/* Waits for pred(j) under j->mu, 30 s at most. */
static void wait_for(moe_job *j, int (*pred)(const moe_job *))
{
    double end = moe_engine_now() + 30;
    pthread_mutex_lock(&j->mu);
    while (!pred(j)) {
        if (moe_engine_now() > end) fail_msg("timed out waiting for job %lld", j->serial);
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += 5000000;
        if (t.tv_nsec >= 1000000000) t.tv_sec++, t.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&j->cv, &j->mu, &t);
    }
    pthread_mutex_unlock(&j->mu);
}

static int is_done(const moe_job *j) { return j->done; }
static int has_token(const moe_job *j) { return j->n_gen > 0 || j->done; }

/* The greedy continuation of one sequence alone, as moe generate runs it. */
static void alone(const int32_t *prompt, int n, int max_tokens, int32_t *out)
{
    moe_context *c;
    moe_sampler *s;
    assert_int_equal(moe_context_create(model, MAX_CONTEXT, BATCH, &c), MOE_OK);
    moe_sampler_config sc = moe_sampler_default_config();
    assert_int_equal(moe_sampler_create(&sc, moe_model_get_info(model).vocab_size, &s), MOE_OK);
    moe_gen_request r = { .max_new_tokens = max_tokens, .prefill_step = BATCH, .sampler = s };
    int n_out;
    assert_int_equal(moe_generate(c, prompt, n, &r, out, &n_out, NULL), MOE_OK);
    assert_int_equal(n_out, max_tokens);
    moe_sampler_free(s);
    moe_context_free(c);
}

static void expect_ids(const moe_job *j, const int32_t *want, int n)
{
    assert_int_equal(j->n_ids, n);
    for (int i = 0; i < n; i++)
        if (j->ids[i] != want[i]) fail_msg("job %lld: token %d is %d, alone %d", j->serial, i, j->ids[i], want[i]);
}

/* Four requests with prompts of different lengths (one over a step's
 * budget) run together: each one's ids are those it makes alone. */
static void batched_equals_alone(void **state)
{
    (void)state;
    enum { N = 4, GEN = 24 };
    static const int LEN[N] = { 3, 40, 9, 17 };
    int32_t prompts[N][40], want[N][GEN];
    for (int k = 0; k < N; k++) {
        prompt_of(prompts[k], LEN[k], k);
        alone(prompts[k], LEN[k], GEN, want[k]);
    }
    moe_engine *e = engine(N, 0, 5);
    moe_job *jobs[N];
    for (int k = 0; k < N; k++) submit(e, jobs[k] = job(prompts[k], LEN[k], GEN));
    for (int k = 0; k < N; k++) {
        wait_for(jobs[k], is_done);
        assert_string_equal(jobs[k]->finish_reason, "length");
        assert_int_equal(jobs[k]->n_gen, GEN);
        expect_ids(jobs[k], want[k], GEN);
        moe_job_release(e, jobs[k]);
    }
    moe_server_stats st;
    moe_engine_stats(e, &st);
    assert_int_equal(st.max_batch, N);   /* they did run together */
    assert_int_equal(st.requests_ok, N);
    assert_int_equal(st.generated_tokens, N * GEN);
    assert_int_equal(moe_engine_in_flight(e), 0);
    moe_engine_free(e);
}

/* A job of prompt[0..n) for gen tokens, run to its end: it reused
 * want_cached tokens and answers as it would alone. */
static moe_job *run_cached(moe_engine *e, const int32_t *prompt, int n, int gen, int want_cached)
{
    int32_t want[8];
    assert_true(gen <= 8);
    moe_job *j = job(prompt, n, gen);
    submit(e, j);
    wait_for(j, is_done);
    assert_int_equal(j->n_cached, want_cached);
    alone(prompt, n, gen, want);
    expect_ids(j, want, gen);
    return j;
}

/* A request whose prompt begins with a slot's cache (the last request's
 * prompt and all its tokens but the last, which was never fed) computes
 * only the rest, and answers as it would from nothing; a prompt equal to
 * the cache reuses the kept logits too; a prompt that parts from the cache
 * keeps their common prefix (the cache cut back to it), and a prompt the
 * cache holds whole, with nothing kept of what follows it, feeds its last
 * token again; a greedy job finds the greedy choice kept, another sampler
 * needs the logits, which greedy steps do not bring back. */
static void prompt_cache(void **state)
{
    (void)state;
    enum { P = 10, GEN = 6, EXTRA = 3 };
    int32_t first[P], longer[P + GEN + EXTRA];
    prompt_of(first, P, 7);
    moe_engine *e = engine(2, 0, 0);
    moe_job *a = run_cached(e, first, P, GEN, 0);
    memcpy(longer, first, sizeof first);
    memcpy(longer + P, a->ids, sizeof(int32_t) * GEN);
    prompt_of(longer + P + GEN, EXTRA, 3);
    // exactly the cache: P prompt tokens and GEN - 1 generated ones
    moe_job *b = run_cached(e, longer, P + GEN - 1, 4, P + GEN - 1);
    assert_int_equal(b->ids[0], a->ids[GEN - 1]);   /* the token A stopped at */
    // the cache now ends 3 tokens into B's answer: C's prompt parts from it
    // there or before, and keeps what they share
    int32_t cache[P + GEN + 2];
    memcpy(cache, longer, sizeof(int32_t) * (P + GEN - 1));
    memcpy(cache + P + GEN - 1, b->ids, sizeof(int32_t) * 3);
    int common = 0;
    while (common < P + GEN + 2 && cache[common] == longer[common]) common++;
    assert_true(common >= P + GEN && common < P + GEN + 2);   /* B's first token is longer's too */
    moe_job *c = run_cached(e, longer, P + GEN + EXTRA, 5, common);
    // a prompt the cache holds whole, nothing kept of what follows it: all but its last token reused
    moe_job *d = run_cached(e, longer, P + 2, 3, P + 1);
    // D's cache exactly, greedily: the greedy choice kept with it, nothing fed
    int32_t again[P + 5];
    memcpy(again, longer, sizeof(int32_t) * (P + 2));
    memcpy(again + P + 2, d->ids, sizeof(int32_t) * 2);
    moe_job *g = run_cached(e, again, P + 4, 2, P + 4);
    assert_int_equal(g->ids[0], d->ids[2]);
    // G's cache exactly, sampled at a temperature: no logits were kept, so its last token is fed again
    again[P + 4] = g->ids[0];
    moe_job *f = job(again, P + 5, 1);
    f->sampling.temperature = 0.7f;
    submit(e, f);
    wait_for(f, is_done);
    assert_int_equal(f->n_cached, P + 4);
    moe_server_stats st;
    moe_engine_stats(e, &st);
    assert_int_equal(st.cached_tokens, P + GEN - 1 + common + P + 1 + 2 * (P + 4));
    moe_job_release(e, a), moe_job_release(e, b), moe_job_release(e, c), moe_job_release(e, d);
    moe_job_release(e, g), moe_job_release(e, f);
    moe_engine_free(e);
}

/* While a request streams, a long prompt is prefilled BATCH - 1 tokens a
 * step beside it (the stream gains a token each of those steps), and a
 * short request's first token comes within two steps of its arrival. */
static void prefill_interleaved(void **state)
{
    (void)state;
    int32_t p[200];
    prompt_of(p, 200, 11);
    moe_engine *e = engine(3, 0, 10);
    moe_job *s = job(p, 4, 200);
    submit(e, s);
    wait_for(s, has_token);
    pthread_mutex_lock(&s->mu);
    int before = s->n_gen;
    pthread_mutex_unlock(&s->mu);
    moe_job *lng = job(p + 4, 150, 1);
    submit(e, lng);
    wait_for(lng, is_done);
    pthread_mutex_lock(&s->mu);
    int during = s->n_gen - before;
    pthread_mutex_unlock(&s->mu);
    if (during < 150 / (BATCH - 1)) fail_msg("the stream made %d tokens while 150 prompt tokens were prefilled", during);
    // a short request beside the stream
    struct timespec pause = { 0, 3000000 };
    moe_server_stats st;
    moe_engine_stats(e, &st);
    long long steps0 = st.steps;
    moe_job *q = job(p + 100, 5, 1);
    submit(e, q);
    wait_for(q, is_done);
    nanosleep(&pause, NULL);   /* the step that ended it is counted; the next waits 10 ms */
    moe_engine_stats(e, &st);
    if (st.steps - steps0 > 2) fail_msg("the first token took %lld steps", st.steps - steps0);
    moe_job_cancel(e, s);
    wait_for(s, is_done);
    assert_true(s->cancelled);
    moe_job_release(e, s), moe_job_release(e, lng), moe_job_release(e, q);
    moe_engine_free(e);
}

/* A cancelled request frees its slot; a full engine refuses with 503; a
 * cancelled queued request never runs; freeing the engine ends what runs. */
static void cancel_and_busy(void **state)
{
    (void)state;
    int32_t p[8];
    prompt_of(p, 8, 2);
    moe_engine *e = engine(1, 1, 2);
    moe_job *a = job(p, 8, 200), *b = job(p, 8, 200), *c = job(p, 8, 3);
    submit(e, a);
    submit(e, b);   /* waits in the queue */
    moe_api_error err;
    assert_int_equal(moe_engine_submit(e, c, &err), -1);
    assert_int_equal(err.status, 503);
    assert_string_equal(err.code, "server_busy");
    wait_for(a, has_token);
    moe_job_cancel(e, b);
    moe_job_cancel(e, a);
    wait_for(a, is_done);
    wait_for(b, is_done);
    assert_true(a->cancelled && a->n_gen < 200);
    assert_int_equal(b->n_gen, 0);
    submit(e, c);   /* the slot is free again */
    wait_for(c, is_done);
    assert_int_equal(c->n_gen, 3);
    moe_server_stats st;
    moe_engine_stats(e, &st);
    assert_int_equal(st.requests_cancelled, 2);
    assert_int_equal(st.requests_rejected, 1);
    assert_int_equal(st.running, 0);
    moe_job_release(e, a), moe_job_release(e, b), moe_job_release(e, c);
    // draining refuses; freeing cancels a request still running
    moe_job *d = job(p, 8, 200), *f = job(p, 8, 2);
    submit(e, d);
    moe_engine_drain(e);
    assert_int_equal(moe_engine_submit(e, f, &err), -1);
    assert_string_equal(err.code, "shutting_down");
    moe_job_release(e, f);
    moe_engine_free(e);
    assert_true(d->done && d->cancelled);
    moe_job_release(NULL, d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batched_equals_alone),
        cmocka_unit_test(prompt_cache),
        cmocka_unit_test(prefill_interleaved),
        cmocka_unit_test(cancel_and_busy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
