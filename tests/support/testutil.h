/* tests/support/testutil.h — seeded random data, expert weights in every
 * format with their exact values in double, and the SwitchGLU layer computed
 * plainly in double precision: the reference every kernel is checked against. */
#ifndef MOE_TESTS_TESTUTIL_H
#define MOE_TESTS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "moe/switchglu.h"

uint64_t test_rand_u64(uint64_t *state);
/* Uniform in [lo, hi). */
double test_rand_uniform(uint64_t *state, double lo, double hi);
void test_rand_floats(uint64_t *state, float *dst, size_t n, double lo, double hi);

/* One projection for E experts, [E, rows, cols], in the stacked checkpoint
 * layout, with each weight's exact value in `value` (double). Float formats
 * hold random values rounded to their dtype; quantized ones random codes and
 * random scales of both signs and random biases. */
typedef struct {
    moe_expert_weights w;
    int experts, rows, cols;
    void *weight, *scales, *biases;
    double *value;      /* [E, rows, cols] */
} test_proj;

void test_proj_make(test_proj *p, uint64_t *rng, int experts, int rows, int cols,
                    int bits, moe_dtype dtype, int group_size);
void test_proj_free(test_proj *p);

/* y[t] = Σ_j scores[t,j]·down(silu(gate x)⊙up x) in double; bound[t][c] is a
 * magnitude that bounds float rounding error (sums of absolute terms). */
void test_switchglu_reference(const test_proj *gate, const test_proj *up, const test_proj *down,
                              const float *x, int tokens, const int32_t *idx, const float *scores,
                              int top_k, double *y, double *bound);

/* A float's bits and back (exact, for bit-level checks). */
static inline float test_float_from_bits(uint32_t u)
{
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}
static inline uint32_t test_bits_of_float(float f)
{
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return u;
}

/* Mismatches found by the running check: test_mismatch counts one in
 * test_failures and prints the first TEST_MAX_REPORTS of them. */
enum { TEST_MAX_REPORTS = 25 };
extern long test_failures;
void test_mismatch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

enum { TEST_MAX_ISAS = 5 };

/* The CPU kernel sets this machine can run, best first; returns the count. */
int test_supported_isas(const char **names, int max);

#endif
