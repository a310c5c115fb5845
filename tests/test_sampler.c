/* tests/test_sampler.c — token sampling against a double-precision
 * reference: greedy and its ties, which tokens each filter may return, the
 * frequencies of many draws, seeds, NaN and infinite logits, bad settings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"
#include "support/testutil.h"

/* ---- the reference ---- */

static const float *g_order_z;

/* More likely first; equal logits by lower id. */
static int by_logit_then_id(const void *pa, const void *pb)
{
    int a = *(const int *)pa, b = *(const int *)pb;
    if (g_order_z[a] != g_order_z[b]) return g_order_z[a] > g_order_z[b] ? -1 : 1;
    return a - b;
}

/* The distribution the sampler should draw from, in double: softmax(z / T)
 * over the tokens that are neither NaN nor -inf, then top-k, top-p on what
 * is left (renormalised), then min-p relative to the most likely token.
 * p[vocab] gets the renormalised result; returns how many tokens it keeps. */
static int reference(const float *z, int vocab, double T, int top_k, double top_p, double min_p, double *p)
{
    int *order = malloc(sizeof(int) * vocab), n = 0;
    double *q = malloc(sizeof(double) * vocab);
    for (int i = 0; i < vocab; i++) {
        p[i] = 0;
        if (z[i] > -INFINITY) order[n++] = i;
    }
    g_order_z = z;
    qsort(order, n, sizeof(int), by_logit_then_id);
    if (n > 0) {
        double m = z[order[0]];
        for (int j = 0; j < n; j++) q[j] = exp(((double)z[order[j]] - m) / T);
        if (top_k > 0 && top_k < n) n = top_k;
        if (top_p > 0 && top_p < 1) {
            double total = 0, cum = 0;
            for (int j = 0; j < n; j++) total += q[j];
            int kept = 0;
            while (kept < n && (kept == 0 || cum < top_p * total)) cum += q[kept++];
            n = kept;
        }
        if (min_p > 0) {
            int kept = 0;
            while (kept < n && q[kept] >= min_p * q[0]) kept++;
            n = kept;
        }
        double total = 0;
        for (int j = 0; j < n; j++) total += q[j];
        for (int j = 0; j < n; j++) p[order[j]] = q[j] / total;
    }
    free(order), free(q);
    return n;
}

/* The first of the largest logits (NaN never), 0 when none is above -inf. */
static int reference_argmax(const float *z, int vocab)
{
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (z[i] > z[best] || (isnan(z[best]) && !isnan(z[i]))) best = i;
    return z[best] > -INFINITY ? best : 0;
}

static moe_sampler *make(float T, int top_k, float top_p, float min_p, uint64_t seed, int vocab)
{
    moe_sampler_config c = { .temperature = T, .top_k = top_k, .top_p = top_p, .min_p = min_p, .seed = seed };
    moe_sampler *s = NULL;
    assert_int_equal(moe_sampler_create(&c, vocab, &s), MOE_OK);
    assert_non_null(s);
    return s;
}

/* Random logits in [lo, hi) with a few copies of the maximum placed after
 * its first occurrence, so that greedy ties are exercised. */
static void logits_with_ties(uint64_t *rng, float *z, int vocab, double lo, double hi)
{
    test_rand_floats(rng, z, (size_t)vocab, lo, hi);
    int first = reference_argmax(z, vocab);
    for (int c = 0; c < 3; c++) {
        int at = (int)(test_rand_u64(rng) % (uint64_t)vocab);
        z[at] = z[first];
    }
}

/* ---- greedy ---- */

static void default_config_is_greedy(void **state)
{
    (void)state;
    moe_sampler_config c = moe_sampler_default_config();
    assert_true(c.temperature == 0.0f);
    assert_int_equal(c.top_k, 0);
    assert_true(c.top_p == 1.0f);
    assert_true(c.min_p == 0.0f);
    assert_int_equal(c.seed, 0);
    /* the greedy rule, for a config and for a sampler made from one */
    assert_true(moe_sampler_config_is_greedy(&c));
    moe_sampler *s = NULL;
    assert_int_equal(moe_sampler_create(&c, 7, &s), MOE_OK);
    assert_true(moe_sampler_is_greedy(s));
    moe_sampler_free(s);
    c.temperature = 0.7f;
    assert_false(moe_sampler_config_is_greedy(&c));
    assert_int_equal(moe_sampler_create(&c, 7, &s), MOE_OK);
    assert_false(moe_sampler_is_greedy(s));
    moe_sampler_free(s);
    assert_false(moe_sampler_config_is_greedy(NULL));
    assert_false(moe_sampler_is_greedy(NULL));
}

static void greedy_is_argmax_lowest_id_on_ties(void **state)
{
    (void)state;
    uint64_t rng = 0x5a3e1;
    const int V = 1001;
    float *z = malloc(sizeof(float) * V);
    moe_sampler_config def = moe_sampler_default_config();
    moe_sampler *plain = NULL;
    assert_int_equal(moe_sampler_create(&def, V, &plain), MOE_OK);
    /* Temperature 0 wins over every filter. */
    moe_sampler *filtered = make(0.0f, 5, 0.3f, 0.5f, 7, V);
    for (int trial = 0; trial < 200; trial++) {
        logits_with_ties(&rng, z, V, -5, 5);
        int want = reference_argmax(z, V);
        assert_int_equal(moe_sampler_sample(plain, z), want);
        assert_int_equal(moe_sampler_sample(filtered, z), want);
    }
    /* An exact tie at the top between ids 3, 4 and 900. */
    for (int i = 0; i < V; i++) z[i] = (float)(i % 7) * 0.1f;
    z[900] = z[4] = z[3] = 2.0f;
    assert_int_equal(moe_sampler_sample(plain, z), 3);
    moe_sampler_free(plain);
    moe_sampler_free(filtered);
    free(z);
}

static void top_k_one_is_greedy_at_any_temperature(void **state)
{
    (void)state;
    uint64_t rng = 0x70b1;
    const int V = 1001;
    static const float Ts[] = { 0.05f, 0.7f, 1.0f, 2.0f, 100.0f };
    float *z = malloc(sizeof(float) * V);
    for (size_t a = 0; a < sizeof Ts / sizeof Ts[0]; a++) {
        moe_sampler *s = make(Ts[a], 1, 1.0f, 0.0f, 11 + a, V);
        for (int trial = 0; trial < 100; trial++) {
            logits_with_ties(&rng, z, V, -3, 3);
            assert_int_equal(moe_sampler_sample(s, z), reference_argmax(z, V));
        }
        moe_sampler_free(s);
    }
    free(z);
}

static void tiny_top_p_is_greedy(void **state)
{
    (void)state;
    uint64_t rng = 0x70b2;
    const int V = 1001;
    static const float Ts[] = { 0.5f, 1.0f, 3.0f };
    float *z = malloc(sizeof(float) * V);
    for (size_t a = 0; a < sizeof Ts / sizeof Ts[0]; a++)
        for (int top_k = 0; top_k <= 20; top_k += 20) {  /* the widening search and the top-k path */
            moe_sampler *s = make(Ts[a], top_k, 1e-6f, 0.0f, 21 + a, V);
            for (int trial = 0; trial < 100; trial++) {
                logits_with_ties(&rng, z, V, -3, 3);
                assert_int_equal(moe_sampler_sample(s, z), reference_argmax(z, V));
            }
            moe_sampler_free(s);
        }
    free(z);
}

static void tiny_temperature_is_greedy(void **state)
{
    (void)state;
    uint64_t rng = 0x70b3;
    const int V = 1001;
    float *z = malloc(sizeof(float) * V);
    /* 1/T overflows float: the top token must still get weight 1, not NaN. */
    moe_sampler *s = make(1e-38f, 0, 1.0f, 0.0f, 3, V);
    for (int trial = 0; trial < 100; trial++) {
        test_rand_floats(&rng, z, (size_t)V, -3, 3);
        assert_int_equal(moe_sampler_sample(s, z), reference_argmax(z, V));
    }
    moe_sampler_free(s);
    free(z);
}

/* ---- which tokens a filter may return ---- */

/* Draws `draws` tokens for each of `trials` random logit vectors and checks
 * each against the reference set, computed with the settings widened by a
 * hair so that float and double may disagree on a boundary token only in the
 * sampler's favour. With step > 0 the logits are rounded down to multiples
 * of it. Returns the most distinct tokens seen for one vector. */
static int draws_stay_in_set(uint64_t *rng, int V, double lo, double hi, double step, float T, int top_k,
                             float top_p, float min_p, int trials, int draws)
{
    float *z = malloc(sizeof(float) * V);
    double *p = malloc(sizeof(double) * V);
    char *seen = malloc((size_t)V);
    moe_sampler *s = make(T, top_k, top_p, min_p, test_rand_u64(rng), V);
    double wide_p = top_p > 0 && top_p < 1 ? fmin(top_p + 1e-4, 0.99999) : top_p;
    double wide_min_p = min_p > 0 ? min_p - 1e-4 : 0;
    int most = 0;
    for (int trial = 0; trial < trials; trial++) {
        test_rand_floats(rng, z, (size_t)V, lo, hi);
        if (step > 0)  /* few distinct values: ties decide the boundary */
            for (int i = 0; i < V; i++) z[i] = (float)(floor(z[i] / step) * step);
        reference(z, V, T, top_k, wide_p, wide_min_p, p);
        memset(seen, 0, (size_t)V);
        int distinct = 0;
        for (int d = 0; d < draws; d++) {
            int tok = moe_sampler_sample(s, z);
            assert_true(tok >= 0 && tok < V);
            assert_true(p[tok] > 0);
            if (!seen[tok]) seen[tok] = 1, distinct++;
        }
        if (distinct > most) most = distinct;
    }
    moe_sampler_free(s);
    free(z), free(p), free(seen);
    return most;
}

static void draws_stay_in_top_k(void **state)
{
    (void)state;
    uint64_t rng = 0x7e4;
    assert_int_equal(draws_stay_in_set(&rng, 1001, -2, 2, 0, 1.5f, 5, 1.0f, 0.0f, 200, 200), 5);
    assert_true(draws_stay_in_set(&rng, 1001, -2, 2, 0, 1.0f, 40, 1.0f, 0.0f, 50, 500) > 20);
}

static void draws_stay_in_nucleus(void **state)
{
    (void)state;
    uint64_t rng = 0x7e5;
    /* No top-k: nuclei of a handful of tokens and of hundreds. */
    assert_true(draws_stay_in_set(&rng, 1001, -8, 8, 0, 1.0f, 0, 0.5f, 0.0f, 100, 300) > 1);
    assert_true(draws_stay_in_set(&rng, 1001, -3, 3, 0, 1.0f, 0, 0.9f, 0.0f, 50, 1000) > 100);
    /* Logits in steps of 0.5: the nucleus ends inside a run of equal logits,
     * where the lower ids must be the ones kept. */
    assert_true(draws_stay_in_set(&rng, 1001, -3, 3, 0.5, 1.0f, 0, 0.5f, 0.0f, 100, 300) > 5);
    assert_true(draws_stay_in_set(&rng, 1001, -3, 3, 0.5, 1.0f, 100, 0.5f, 0.0f, 100, 300) > 5);
    assert_true(draws_stay_in_set(&rng, 1001, -3, 3, 0.5, 1.0f, 7, 1.0f, 0.0f, 100, 300) > 5);
    /* Within top-k. */
    assert_true(draws_stay_in_set(&rng, 1001, -3, 3, 0, 1.0f, 30, 0.6f, 0.0f, 100, 300) > 5);
    /* A flat distribution over a full vocabulary: the nucleus is most of it. */
    assert_true(draws_stay_in_set(&rng, 50304, -0.1, 0.1, 0, 1.0f, 0, 0.5f, 0.0f, 2, 500) > 400);
}

static void draws_respect_min_p(void **state)
{
    (void)state;
    uint64_t rng = 0x7e6;
    assert_true(draws_stay_in_set(&rng, 1001, -4, 4, 0, 1.0f, 0, 1.0f, 0.2f, 100, 300) > 5);
    assert_true(draws_stay_in_set(&rng, 1001, -4, 4, 0, 0.5f, 0, 1.0f, 0.05f, 100, 300) > 5);
    /* All three filters together. */
    assert_true(draws_stay_in_set(&rng, 1001, -4, 4, 0, 1.3f, 50, 0.7f, 0.1f, 100, 300) > 5);
}

/* ---- frequencies ---- */

static const float k_logits7[7] = { 1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f, 1.5f };

/* Counts `draws` samples from logits z[vocab] and compares each token's
 * frequency with the reference probability: within 5 standard errors, and
 * exactly zero for tokens the filters remove. A token that float and double
 * may disagree on (in the set only with top_p or min_p moved by 1e-4) is
 * not checked. Returns how many tokens the reference keeps. */
static int frequencies_match_on(const float *z, int vocab, int draws, float T, int top_k, float top_p,
                                float min_p, uint64_t seed)
{
    double *p = malloc(sizeof(double) * vocab), *wide = malloc(sizeof(double) * vocab);
    double *narrow = malloc(sizeof(double) * vocab);
    long *count = calloc((size_t)vocab, sizeof(long));
    int kept = reference(z, vocab, T, top_k, top_p, min_p, p);
    int on = top_p > 0 && top_p < 1;
    reference(z, vocab, T, top_k, on ? fmin(top_p + 1e-4, 0.99999) : top_p, min_p > 0 ? min_p - 1e-4 : 0, wide);
    reference(z, vocab, T, top_k, on ? top_p - 1e-4 : top_p, min_p > 0 ? min_p + 1e-4 : 0, narrow);
    moe_sampler *s = make(T, top_k, top_p, min_p, seed, vocab);
    for (int d = 0; d < draws; d++) {
        int tok = moe_sampler_sample(s, z);
        assert_true(tok >= 0 && tok < vocab);
        count[tok]++;
    }
    for (int i = 0; i < vocab; i++) {
        if (wide[i] == 0) {
            assert_int_equal(count[i], 0);
            continue;
        }
        if (narrow[i] == 0) continue;
        double f = (double)count[i] / draws, se = sqrt(p[i] * (1 - p[i]) / draws);
        if (fabs(f - p[i]) > 5 * se)
            fail_msg("T %g top_k %d top_p %g min_p %g: token %d drawn %.5f of the time, expected %.5f (se %.5f)",
                     (double)T, top_k, (double)top_p, (double)min_p, i, f, p[i], se);
    }
    moe_sampler_free(s);
    free(p), free(wide), free(narrow), free(count);
    return kept;
}

static int frequencies_match(float T, int top_k, float top_p, float min_p, uint64_t seed)
{
    return frequencies_match_on(k_logits7, 7, 200000, T, top_k, top_p, min_p, seed);
}

static void frequencies_match_softmax(void **state)
{
    (void)state;
    assert_int_equal(frequencies_match(0.7f, 0, 1.0f, 0.0f, 101), 7);
    assert_int_equal(frequencies_match(1.5f, 0, 1.0f, 0.0f, 102), 7);
    /* top_p 0 means off, as top_p 1 does. */
    assert_int_equal(frequencies_match(1.0f, 0, 0.0f, 0.0f, 103), 7);
}

static void frequencies_match_top_k(void **state)
{
    (void)state;
    assert_int_equal(frequencies_match(1.0f, 3, 1.0f, 0.0f, 201), 3);
    assert_int_equal(frequencies_match(1.5f, 3, 1.0f, 0.0f, 202), 3);
    /* k at or past the vocabulary is no filter. */
    assert_int_equal(frequencies_match(1.0f, 7, 1.0f, 0.0f, 203), 7);
    assert_int_equal(frequencies_match(1.0f, 100, 1.0f, 0.0f, 204), 7);
}

static void frequencies_match_top_p(void **state)
{
    (void)state;
    /* Cumulative probabilities 0.53, 0.73, 0.85 at T = 1: three tokens. */
    assert_int_equal(frequencies_match(1.0f, 0, 0.8f, 0.0f, 301), 3);
    /* 0.39, 0.60, 0.74, 0.84 at T = 1.5: four. */
    assert_int_equal(frequencies_match(1.5f, 0, 0.8f, 0.0f, 302), 4);
}

static void frequencies_match_min_p_and_all_filters(void **state)
{
    (void)state;
    assert_int_equal(frequencies_match(1.5f, 0, 1.0f, 0.2f, 401), 4);
    /* top-k 5 leaves 0.43 0.22 0.16 0.11 0.08; top-p 0.9 keeps four of them
     * (0.81 < 0.9 ≤ 0.92); min-p 0.3 drops 0.11 < 0.3 · 0.43. */
    assert_int_equal(frequencies_match(1.5f, 5, 0.9f, 0.3f, 402), 3);
}

/* Hundreds of tokens in the set: every one of them is drawn about as often
 * as it should be, so no filter may keep too few either. */
static void frequencies_match_over_a_large_set(void **state)
{
    (void)state;
    enum { V = 1001 };
    uint64_t rng = 0xf4e9;
    float *z = malloc(sizeof(float) * V);
    test_rand_floats(&rng, z, V, -3, 3);
    assert_true(frequencies_match_on(z, V, 60000, 1.0f, 0, 0.9f, 0.0f, 501) > 300);
    assert_true(frequencies_match_on(z, V, 60000, 1.0f, 0, 1.0f, 0.1f, 502) > 200);
    assert_true(frequencies_match_on(z, V, 60000, 1.0f, 400, 0.8f, 0.0f, 503) > 200);
    free(z);
}

/* ---- seeds ---- */

static void seeds_repeat_and_differ(void **state)
{
    (void)state;
    enum { V = 1001, N = 2000 };
    uint64_t rng = 0x5eed;
    float *z = malloc(sizeof(float) * V);
    test_rand_floats(&rng, z, V, -2, 2);
    moe_sampler *a = make(1.0f, 50, 0.95f, 0.0f, 42, V), *b = make(1.0f, 50, 0.95f, 0.0f, 42, V);
    moe_sampler *c = make(1.0f, 50, 0.95f, 0.0f, 43, V), *d = make(1.0f, 50, 0.95f, 0.0f, 0, V);
    int differ_c = 0, differ_d = 0;
    for (int i = 0; i < N; i++) {
        int ta = moe_sampler_sample(a, z), tb = moe_sampler_sample(b, z);
        assert_int_equal(ta, tb);
        differ_c += moe_sampler_sample(c, z) != ta;
        differ_d += moe_sampler_sample(d, z) != ta;
    }
    assert_true(differ_c > N / 2);
    assert_true(differ_d > N / 2);
    /* The stream is fixed by the seed alone: a fresh sampler starts it over. */
    moe_sampler *e = make(1.0f, 0, 1.0f, 0.0f, 42, V);
    int first[8];
    for (int i = 0; i < 8; i++) first[i] = moe_sampler_sample(e, z);
    moe_sampler_free(e);
    e = make(1.0f, 0, 1.0f, 0.0f, 42, V);
    for (int i = 0; i < 8; i++) assert_int_equal(moe_sampler_sample(e, z), first[i]);
    moe_sampler_free(a), moe_sampler_free(b), moe_sampler_free(c), moe_sampler_free(d), moe_sampler_free(e);
    free(z);
}

/* ---- NaN and infinite logits ---- */

static void nan_and_neg_inf_never_sampled(void **state)
{
    (void)state;
    enum { V = 101 };
    uint64_t rng = 0x9a9;
    float z[V];
    test_rand_floats(&rng, z, V, -1, 1);
    for (int i = 0; i < V; i += 3) z[i] = NAN;
    for (int i = 1; i < V; i += 7) z[i] = -INFINITY;
    z[50] = NAN;  /* where the maximum would be */
    moe_sampler *greedy = make(0.0f, 0, 1.0f, 0.0f, 0, V);
    assert_int_equal(moe_sampler_sample(greedy, z), reference_argmax(z, V));
    assert_false(isnan(z[moe_sampler_sample(greedy, z)]));
    moe_sampler *settings[] = {
        make(2.0f, 0, 1.0f, 0.0f, 1, V), make(2.0f, 10, 1.0f, 0.0f, 2, V),
        make(2.0f, 0, 0.9f, 0.0f, 3, V), make(2.0f, 0, 1.0f, 0.01f, 4, V),
    };
    for (size_t a = 0; a < sizeof settings / sizeof settings[0]; a++) {
        for (int d = 0; d < 20000; d++) {
            int tok = moe_sampler_sample(settings[a], z);
            assert_true(tok >= 0 && tok < V);
            assert_true(z[tok] > -INFINITY);
        }
        moe_sampler_free(settings[a]);
    }
    moe_sampler_free(greedy);
}

static void nothing_usable_gives_token_zero(void **state)
{
    (void)state;
    enum { V = 33 };
    float inf[V], nan[V], mix[V];
    for (int i = 0; i < V; i++) inf[i] = -INFINITY, nan[i] = NAN, mix[i] = i % 2 ? NAN : -INFINITY;
    moe_sampler *settings[] = {
        make(0.0f, 0, 1.0f, 0.0f, 1, V), make(1.0f, 0, 1.0f, 0.0f, 2, V),
        make(1.0f, 3, 0.5f, 0.5f, 3, V), make(1.0f, 0, 0.5f, 0.0f, 4, V),
    };
    for (size_t a = 0; a < sizeof settings / sizeof settings[0]; a++) {
        assert_int_equal(moe_sampler_sample(settings[a], inf), 0);
        assert_int_equal(moe_sampler_sample(settings[a], nan), 0);
        assert_int_equal(moe_sampler_sample(settings[a], mix), 0);
        moe_sampler_free(settings[a]);
    }
}

static void one_usable_token_is_always_chosen(void **state)
{
    (void)state;
    enum { V = 33 };
    float z[V];
    for (int i = 0; i < V; i++) z[i] = i % 2 ? NAN : -INFINITY;
    z[17] = -80.0f;  /* very unlikely in absolute terms, but the only one */
    moe_sampler *s = make(0.3f, 5, 0.5f, 0.5f, 9, V);
    for (int d = 0; d < 1000; d++) assert_int_equal(moe_sampler_sample(s, z), 17);
    moe_sampler_free(s);
    moe_sampler *one = make(1.0f, 0, 1.0f, 0.0f, 9, 1);
    float z1 = 0.25f;
    for (int d = 0; d < 100; d++) assert_int_equal(moe_sampler_sample(one, &z1), 0);
    moe_sampler_free(one);
}

static void positive_inf_wins(void **state)
{
    (void)state;
    enum { V = 50 };
    uint64_t rng = 0x1f;
    float z[V];
    test_rand_floats(&rng, z, V, -1, 1);
    z[30] = INFINITY;
    moe_sampler *s = make(1.0f, 0, 0.9f, 0.1f, 5, V);
    for (int d = 0; d < 1000; d++) assert_int_equal(moe_sampler_sample(s, z), 30);
    /* Two +inf logits share the draws; nothing else is chosen. */
    z[12] = INFINITY;
    moe_sampler *t = make(1.0f, 0, 1.0f, 0.0f, 6, V);
    int c12 = 0, c30 = 0;
    for (int d = 0; d < 10000; d++) {
        int tok = moe_sampler_sample(t, z);
        assert_true(tok == 12 || tok == 30);
        c12 += tok == 12, c30 += tok == 30;
    }
    assert_true(c12 > 4500 && c30 > 4500);
    moe_sampler_free(s), moe_sampler_free(t);
}

/* ---- errors ---- */

static void expect_bad(moe_sampler_config c, int vocab, moe_status want, const char *field)
{
    moe_sampler *s = (moe_sampler *)&c;  /* anything non-NULL: it must be cleared */
    assert_int_equal(moe_sampler_create(&c, vocab, &s), want);
    assert_null(s);
    if (!strstr(moe_last_error(), field)) fail_msg("'%s' does not name %s", moe_last_error(), field);
}

static void bad_settings_name_their_field(void **state)
{
    (void)state;
    moe_sampler_config ok = moe_sampler_default_config(), c;
    c = ok, c.temperature = -0.1f;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "temperature");
    c = ok, c.temperature = NAN;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "temperature");
    c = ok, c.temperature = INFINITY;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "temperature");
    c = ok, c.top_k = -1;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "top_k");
    c = ok, c.top_p = -0.01f;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "top_p");
    c = ok, c.top_p = 1.5f;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "top_p");
    c = ok, c.top_p = NAN;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "top_p");
    c = ok, c.min_p = -0.01f;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "min_p");
    c = ok, c.min_p = 1.0f;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "min_p");
    c = ok, c.min_p = NAN;
    expect_bad(c, 10, MOE_ERR_INVALID_ARG, "min_p");
    expect_bad(ok, 0, MOE_ERR_SHAPE, "vocab");
    expect_bad(ok, -5, MOE_ERR_SHAPE, "vocab");

    moe_sampler *s = NULL;
    assert_int_equal(moe_sampler_create(NULL, 10, &s), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "cfg"));
    assert_int_equal(moe_sampler_create(&ok, 10, NULL), MOE_ERR_INVALID_ARG);
    /* The edges of the valid ranges are accepted. */
    c = ok, c.top_p = 0.0f, c.min_p = 0.999f, c.top_k = 1000;
    assert_int_equal(moe_sampler_create(&c, 10, &s), MOE_OK);
    float z[10] = { 0 };
    assert_int_equal(moe_sampler_sample(NULL, z), -1);
    assert_int_equal(moe_sampler_sample(s, NULL), -1);
    assert_non_null(strstr(moe_last_error(), "logits"));
    moe_sampler_free(s);
    moe_sampler_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_config_is_greedy),
        cmocka_unit_test(greedy_is_argmax_lowest_id_on_ties),
        cmocka_unit_test(top_k_one_is_greedy_at_any_temperature),
        cmocka_unit_test(tiny_top_p_is_greedy),
        cmocka_unit_test(tiny_temperature_is_greedy),
        cmocka_unit_test(draws_stay_in_top_k),
        cmocka_unit_test(draws_stay_in_nucleus),
        cmocka_unit_test(draws_respect_min_p),
        cmocka_unit_test(frequencies_match_softmax),
        cmocka_unit_test(frequencies_match_top_k),
        cmocka_unit_test(frequencies_match_top_p),
        cmocka_unit_test(frequencies_match_min_p_and_all_filters),
        cmocka_unit_test(frequencies_match_over_a_large_set),
        cmocka_unit_test(seeds_repeat_and_differ),
        cmocka_unit_test(nan_and_neg_inf_never_sampled),
        cmocka_unit_test(nothing_usable_gives_token_zero),
        cmocka_unit_test(one_usable_token_is_always_chosen),
        cmocka_unit_test(positive_inf_wins),
        cmocka_unit_test(bad_settings_name_their_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
