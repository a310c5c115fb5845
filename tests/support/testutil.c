/* tests/support/testutil.c — see testutil.h. */
#include "testutil.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moe/runtime.h"
#include "quant/affine.h"
#include "quant/dtype.h"

uint64_t test_rand_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double test_rand_uniform(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(test_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0);
}

void test_rand_floats(uint64_t *s, float *dst, size_t n, double lo, double hi)
{
    for (size_t i = 0; i < n; i++) dst[i] = (float)test_rand_uniform(s, lo, hi);
}

/* Rounds f to dtype t, stores it at dst[i] and returns the stored value. */
static double store_as(moe_dtype t, void *dst, size_t i, float f)
{
    const moe_dtype_traits *tr = moe_dtype_traits_of(t);
    unsigned char *slot = (unsigned char *)dst + i * tr->size;
    float back;
    tr->from_f32(&f, slot, 1);
    tr->to_f32(slot, &back, 1);
    return back;
}

void test_proj_make(test_proj *p, uint64_t *rng, int experts, int rows, int cols,
                    int bits, moe_dtype dtype, int group_size)
{
    memset(p, 0, sizeof *p);
    p->experts = experts, p->rows = rows, p->cols = cols;
    size_t n = (size_t)experts * rows * cols, nrows = (size_t)experts * rows;
    double amp = 1.0 / sqrt((double)cols);
    p->value = malloc(sizeof(double) * n);
    p->w = (moe_expert_weights){ dtype, bits, bits ? group_size : 0, NULL, NULL, NULL };
    if (!bits) {
        p->weight = malloc(n * moe_dtype_size(dtype));
        for (size_t i = 0; i < n; i++)
            p->value[i] = store_as(dtype, p->weight, i, (float)test_rand_uniform(rng, -amp, amp));
        p->w.weight = p->weight;
        return;
    }
    size_t words = moe_affine_row_words(cols, bits), groups = (size_t)cols / group_size;
    p->weight = calloc(nrows * words, sizeof(uint32_t));
    p->scales = malloc(nrows * groups * moe_dtype_size(dtype));
    p->biases = malloc(nrows * groups * moe_dtype_size(dtype));
    double qmax = (double)((1u << bits) - 1);
    for (size_t r = 0; r < nrows; r++)
        for (size_t g = 0; g < groups; g++) {
            /* scales of either sign, as MLX's rule produces */
            double s = store_as(dtype, p->scales, r * groups + g,
                                (float)(test_rand_uniform(rng, 0.5, 1.5) * 2 * amp / qmax *
                                        (test_rand_u64(rng) & 1 ? -1 : 1)));
            double b = store_as(dtype, p->biases, r * groups + g, (float)test_rand_uniform(rng, -amp, amp));
            for (size_t c = g * group_size; c < (g + 1) * group_size; c++) {
                uint32_t q = (uint32_t)(test_rand_u64(rng) % ((uint64_t)qmax + 1));
                moe_affine_set_code((uint32_t *)p->weight + r * words, bits, (int)c, q);
                p->value[r * cols + c] = s * q + b;
            }
        }
    p->w.weight = p->weight;
    p->w.scales = p->scales;
    p->w.biases = p->biases;
}

void test_proj_free(test_proj *p)
{
    free(p->weight);
    free(p->scales);
    free(p->biases);
    free(p->value);
    memset(p, 0, sizeof *p);
}

/* out[r] = Σ_c W[e][r][c]·in[c] and its absolute counterpart. */
static void matvec(const test_proj *p, int e, const double *in, const double *in_abs, double *out, double *out_abs)
{
    for (int r = 0; r < p->rows; r++) {
        const double *w = p->value + ((size_t)e * p->rows + r) * p->cols;
        double s = 0, a = 0;
        for (int c = 0; c < p->cols; c++) {
            s += w[c] * in[c];
            a += fabs(w[c]) * in_abs[c];
        }
        out[r] = s;
        out_abs[r] = a;
    }
}

void test_switchglu_reference(const test_proj *gate, const test_proj *up, const test_proj *down,
                              const float *x, int tokens, const int32_t *idx, const float *scores,
                              int top_k, double *y, double *bound)
{
    int D = gate->cols, I = gate->rows;
    double *xd = malloc(sizeof(double) * D), *xa = malloc(sizeof(double) * D);
    double *g = malloc(sizeof(double) * I), *ga = malloc(sizeof(double) * I);
    double *u = malloc(sizeof(double) * I), *ua = malloc(sizeof(double) * I);
    double *h = malloc(sizeof(double) * I), *ha = malloc(sizeof(double) * I);
    double *o = malloc(sizeof(double) * D), *oa = malloc(sizeof(double) * D);
    for (int t = 0; t < tokens; t++) {
        for (int c = 0; c < D; c++) {
            xd[c] = x[(size_t)t * D + c];
            xa[c] = fabs(xd[c]);
            y[(size_t)t * D + c] = bound[(size_t)t * D + c] = 0;
        }
        for (int j = 0; j < top_k; j++) {
            int e = idx[t * top_k + j];
            double s = scores[t * top_k + j];
            matvec(gate, e, xd, xa, g, ga);
            matvec(up, e, xd, xa, u, ua);
            for (int r = 0; r < I; r++) {
                h[r] = g[r] / (1 + exp(-g[r])) * u[r];
                ha[r] = (ga[r] + fabs(g[r])) * (ua[r] + fabs(u[r])) + 1e-30;
            }
            matvec(down, e, h, ha, o, oa);
            for (int c = 0; c < D; c++) {
                y[(size_t)t * D + c] += s * o[c];
                bound[(size_t)t * D + c] += fabs(s) * oa[c];
            }
        }
    }
    free(xd), free(xa), free(g), free(ga), free(u), free(ua), free(h), free(ha), free(o), free(oa);
}

int test_supported_isas(const char **names, int max)
{
    static const char *const all[] = { "avx512vnni", "avx512", "avxvnni", "avx2", "portable" };
    int n = 0;
    for (int i = 0; i < (int)(sizeof all / sizeof all[0]) && n < max; i++)
        if (moe_cpu_isa_supported(all[i])) names[n++] = all[i];
    return n;
}

long test_failures;

void test_mismatch(const char *fmt, ...)
{
    if (test_failures++ < TEST_MAX_REPORTS) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        print_error("%s\n", buf);
    }
}
