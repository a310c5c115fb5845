/* tests/support/model_fixtures.h — the committed model fixtures
 * (tests/fixtures/olmoe, tests/fixtures/families) with their transformers
 * references, and the checks every backend's reference test runs on them:
 * logits at every position within a tolerance of each row's largest
 * reference logit, and the greedy continuation. */
#ifndef MOE_TESTS_MODEL_FIXTURES_H
#define MOE_TESTS_MODEL_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"
#include "moe/model.h"

typedef struct {
    const char *name;     /* folder under tests/fixtures/ */
    double tol;           /* exact (float32) activations */
} test_fixture;

/* Every fixture: OLMoE's, then Qwen3-MoE's and Mixtral's. */
extern const test_fixture TEST_FIXTURES[];
extern const size_t TEST_NUM_FIXTURES;

/* <name>.reference.safetensors: the prompt `tokens`, the reference `logits`
 * at every position, a `greedy` continuation. */
typedef struct {
    moe_st_file *file;
    const int32_t *tokens, *greedy;
    const float *logits;
    int n, vocab, g;
} test_reference;

/* tests/fixtures/<name><suffix> of this source tree (MOE_SOURCE_DIR, or the
 * environment's MOE_SOURCE_DIR: a build carried to another machine). */
void test_fixture_path(char *buf, size_t n, const char *name, const char *suffix);

/* Loads a reference (fails the test when it cannot). */
void test_reference_load(const char *name, test_reference *r);

/* The fixture's model with these options (fails the test when it cannot). */
moe_model *test_fixture_model(const char *name, const moe_model_options *o);

/* Logits at every position, fed in chunks of `step` tokens (malloc'd). */
float *test_run_logits(moe_model *m, const test_reference *r, int step);

/* Every row within tol · (its largest |want|), else the test fails; the
 * largest such error. */
double test_check_logits(const char *what, const test_reference *r, const float *got, const float *want, double tol);

/* The greedy continuation equals the reference's (prefill in chunks of 8). */
void test_check_greedy(const char *what, moe_model *m, const test_reference *r);

/* An 8-bit KV cache's rules (bounds explained in model_fixtures.c): logits
 * within TEST_Q8_TYPICAL of the reference at the median row (error
 * relative to the row's largest |logit|) and TEST_Q8_MOST at every row;
 * a chunked prefill within TEST_Q8_CHUNKS of the single pass. */
extern const double TEST_Q8_TYPICAL, TEST_Q8_MOST, TEST_Q8_TIE, TEST_Q8_CHUNKS;
void test_check_q8_logits(const char *what, const test_reference *r, const float *got);

/* Greedy continuations of the prompt with a Q8 cache (q8) and an f16 one
 * (half), one token a step, equal up to a step where the f16 logits' two
 * best are within TEST_Q8_TIE of each other (a near tie either cache may
 * break either way; these tiny random models have some), after which the
 * continuations may part. */
void test_check_greedy_q8(const char *what, moe_model *q8, moe_model *half, const test_reference *r);

#endif
