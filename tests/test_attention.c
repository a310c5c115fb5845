/* tests/test_attention.c — causal attention over a KV cache
 * (moe_attention_causal) against a plain double-precision reference on fresh
 * seeded random inputs, for every CPU kernel set this machine runs and 1 and
 * 2 threads:
 *   decode        T = 1 at pos0 = 0 (one key) and far positions (the keys
 *                 split in segments whose partial results are merged), MHA
 *                 and GQA (heads 6 over kv heads 1, 2, 3; 8 over 2; 12 over
 *                 1) — the rows kernel (≤ 4 queries a kv head, one call
 *                 spanning up to 16 queries of several kv heads, 20 kv heads
 *                 taking two calls) and the tile kernel;
 *   prefill       T > 1 from pos0 = 0 and from pos0 > 0 (a chunk after a
 *                 cached prefix), MHA and GQA, T = 2..4 (rows kernel) and
 *                 up to 16 queries a kv head over key segments, up to
 *                 hundreds of queries (several work items a kv head, a last
 *                 item of a few lanes);
 *   head_dim      odd and unaligned (1, 7, 13, 40, 130) and 128; key counts
 *                 that are no multiple of any block (1, 63, 65, 257, 300,
 *                 1000, ...); a kv_stride with padding between rows;
 *   chunked       T queries as two calls (the cache already holding the first
 *                 chunk's rows) agree with one call;
 * every output element checked against the reference within 1e-5 of the
 * largest |out| of the case. Inputs have their exact sizes (the cache exactly
 * pos0 + T rows) so that the sanitizers catch any read past them; out starts
 * as NaN so that any element left unwritten fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/kernels.h"
#include "moe/runtime.h"
#include "support/testutil.h"

enum { MAX_REPORTS = 25 };

static long n_fail, n_checked;
static double worst; /* largest error / tolerance seen */

static void begin(void) { n_fail = 0, n_checked = 0, worst = 0; }

static void mismatch(const char *fmt, ...)
{
    if (n_fail++ < MAX_REPORTS) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        print_error("%s\n", buf);
    }
}

static void finish(const char *what)
{
    print_message("%s: %ld output elements checked, worst error %.3f of tolerance, %ld mismatches\n", what, n_checked,
                  worst, n_fail);
    if (n_fail) {
        print_error("%s: %ld mismatches in all\n", what, n_fail);
        fail();
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

typedef struct {
    int T, pos0, heads, kv_heads, D;
    int pad;        /* kv_stride = kv_heads·D + pad */
    double sharp;   /* scale = sharp / sqrt(D) */
} attn_case;

/* One case's inputs: q [T][heads][D], the cache [pos0+T][stride] for K and V. */
typedef struct {
    attn_case c;
    size_t stride;
    float scale;
    float *q, *k, *v;
    double *ref; /* [T][heads][D] */
    double tol;
} attn_data;

static void make_case(uint64_t *rng, const attn_case *c, attn_data *a)
{
    a->c = *c;
    a->stride = (size_t)c->kv_heads * c->D + c->pad;
    a->scale = (float)(c->sharp / sqrt(c->D));
    int keys = c->pos0 + c->T;
    size_t nq = (size_t)c->T * c->heads * c->D, nkv = (size_t)keys * a->stride;
    a->q = xmalloc(sizeof(float) * nq);
    a->k = xmalloc(sizeof(float) * nkv);
    a->v = xmalloc(sizeof(float) * nkv);
    a->ref = xmalloc(sizeof(double) * nq);
    /* unit-variance q and k, as after QK-norm */
    test_rand_floats(rng, a->q, nq, -1.7320508, 1.7320508);
    test_rand_floats(rng, a->k, nkv, -1.7320508, 1.7320508);
    test_rand_floats(rng, a->v, nkv, -1, 1);

    int G = c->heads / c->kv_heads;
    double *s = xmalloc(sizeof(double) * keys), amax = 0;
    for (int t = 0; t < c->T; t++)
        for (int h = 0; h < c->heads; h++) {
            const float *qh = a->q + ((size_t)t * c->heads + h) * c->D;
            size_t off = (size_t)(h / G) * c->D;
            int n = c->pos0 + t + 1;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                const float *kj = a->k + (size_t)j * a->stride + off;
                double d = 0;
                for (int e = 0; e < c->D; e++) d += (double)qh[e] * kj[e];
                s[j] = d * a->scale;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++) sum += s[j] = exp(s[j] - mx);
            double *r = a->ref + ((size_t)t * c->heads + h) * c->D;
            for (int e = 0; e < c->D; e++) {
                double o = 0;
                for (int j = 0; j < n; j++) o += s[j] * a->v[(size_t)j * a->stride + off + e];
                r[e] = o / sum;
                amax = fmax(amax, fabs(r[e]));
            }
        }
    a->tol = 1e-5 * amax;
    free(s);
}

static void free_case(attn_data *a) { free(a->q), free(a->k), free(a->v), free(a->ref); }

static void describe(const attn_case *c, const char *isa, int threads, char *buf, size_t n)
{
    snprintf(buf, n, "[%s, %d thread%s] T %d pos0 %d heads %d/%d D %d", isa, threads, threads > 1 ? "s" : "", c->T,
             c->pos0, c->heads, c->kv_heads, c->D);
}

/* out (T queries from query t0 on) against the reference, or against `other`
 * where given. */
static void check(const attn_data *a, int t0, int T, const float *out, const double *other, const char *what,
                  const char *label)
{
    const attn_case *c = &a->c;
    for (int t = 0; t < T; t++)
        for (int h = 0; h < c->heads; h++)
            for (int e = 0; e < c->D; e++) {
                size_t i = ((size_t)t * c->heads + h) * c->D + e;
                double got = out[i], want = other ? other[i] : a->ref[((size_t)(t0 + t) * c->heads + h) * c->D + e];
                double err = fabs(got - want);
                n_checked++;
                if (!(err <= a->tol))
                    mismatch("%s %s: out[%d][%d][%d] = %.9g, %s %.9g, error %.3g > %.3g", label, what, t0 + t, h, e,
                             got, other ? "single pass" : "reference", want, err, a->tol);
                else if (err / a->tol > worst)
                    worst = err / a->tol;
            }
}

static float *nan_buffer(size_t n)
{
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* One call over the whole case; then, if T > 1, the same queries in two
 * chunks, each call given the cache up to its own last query. */
static void run_case(const attn_data *a, const char *isa, int threads)
{
    const attn_case *c = &a->c;
    char label[160];
    describe(c, isa, threads, label, sizeof label);
    size_t row = (size_t)c->heads * c->D, nq = (size_t)c->T * row;
    float *out = nan_buffer(nq);
    moe_attention_causal(c->T, c->pos0, c->heads, c->kv_heads, c->D, a->scale, a->q, a->k, a->v, a->stride, out);
    check(a, 0, c->T, out, NULL, "one call", label);
    if (c->T > 1) {
        int T1 = c->T / 3 + 1, T2 = c->T - T1;
        float *o1 = nan_buffer((size_t)T1 * row), *o2 = nan_buffer((size_t)T2 * row);
        moe_attention_causal(T1, c->pos0, c->heads, c->kv_heads, c->D, a->scale, a->q, a->k, a->v, a->stride, o1);
        moe_attention_causal(T2, c->pos0 + T1, c->heads, c->kv_heads, c->D, a->scale, a->q + (size_t)T1 * row, a->k,
                             a->v, a->stride, o2);
        check(a, 0, T1, o1, NULL, "first chunk", label);
        check(a, T1, T2, o2, NULL, "second chunk", label);
        /* and chunked = single pass, element by element */
        double *one = xmalloc(sizeof(double) * nq);
        for (size_t i = 0; i < nq; i++) one[i] = out[i];
        check(a, 0, T1, o1, one, "first chunk", label);
        check(a, T1, T2, o2, one + (size_t)T1 * row, "second chunk", label);
        free(one), free(o1), free(o2);
    }
    free(out);
}

/* Every case for every kernel set and 1 and 2 threads, on the same inputs. */
static void run_cases(const attn_case *cases, size_t n, uint64_t seed, const char *what)
{
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    assert_true(nt >= 1);
    begin();
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        attn_data a;
        make_case(&rng, &cases[i], &a);
        for (int t = 0; t < nt; t++)
            for (int threads = 1; threads <= 2; threads++) {
                assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
                assert_int_equal(moe_set_num_threads(threads), MOE_OK);
                run_case(&a, names[t], threads);
            }
        free_case(&a);
    }
    assert_int_equal(moe_cpu_select_isa(names[0]), MOE_OK);
    finish(what);
}

static void decode(void **state)
{
    (void)state;
    static const attn_case cases[] = {
        /* T pos0 heads kv D pad sharp */
        { 1, 0, 4, 4, 128, 0, 1 },     /* one key */
        { 1, 1, 4, 4, 128, 0, 1 },
        { 1, 62, 2, 2, 13, 0, 1 },     /* 63 keys */
        { 1, 64, 3, 3, 40, 5, 1 },     /* 65 keys, padded rows */
        { 1, 256, 2, 2, 128, 0, 2 },   /* 257 keys: two blocks of rows */
        { 1, 299, 6, 2, 40, 0, 1 },    /* GQA 3 a kv head */
        { 1, 299, 6, 3, 13, 3, 1 },    /* GQA 2 */
        { 1, 120, 6, 1, 7, 0, 1 },     /* GQA 6: the tile kernel */
        { 1, 517, 8, 2, 130, 0, 1 },   /* GQA 4 */
        { 1, 999, 2, 2, 128, 0, 3 },   /* 1000 keys, sharp */
        { 1, 700, 1, 1, 1, 0, 1 },     /* head_dim 1 */
        { 1, 2500, 20, 20, 16, 0, 1 }, /* 20 kv heads: two attn_rows calls a block */
        { 1, 1300, 12, 1, 13, 0, 1 },  /* GQA 12: the tile kernel over key segments */
    };
    run_cases(cases, sizeof cases / sizeof cases[0], 0xa77e0001u, "decode");
}

static void prefill(void **state)
{
    (void)state;
    static const attn_case cases[] = {
        /* T pos0 heads kv D pad sharp */
        { 2, 0, 3, 3, 128, 0, 1 },     /* rows kernel, T > 1 */
        { 3, 10, 2, 2, 13, 0, 1 },
        { 4, 0, 1, 1, 40, 0, 1 },
        { 5, 3, 2, 2, 40, 0, 1 },      /* a part-filled tile */
        { 37, 0, 2, 2, 13, 0, 1 },
        { 100, 0, 3, 3, 40, 2, 1 },
        { 70, 130, 2, 2, 128, 0, 1 },  /* a chunk after a cached prefix */
        { 45, 0, 6, 2, 40, 0, 1 },     /* GQA */
        { 45, 50, 6, 2, 40, 0, 2 },
        { 33, 200, 6, 3, 13, 1, 1 },
        { 20, 7, 6, 1, 7, 0, 1 },
        { 131, 0, 1, 1, 16, 0, 1 },    /* several items, the last of a few lanes */
        { 259, 41, 2, 2, 130, 0, 1 },
        { 300, 700, 2, 2, 128, 0, 2 }, /* 1000 keys */
        { 64, 0, 2, 2, 1, 0, 1 },      /* head_dim 1 */
        { 4, 600, 5, 5, 13, 0, 1 },    /* rows, 4 a kv head: calls of 4 kv heads, then 1 */
        { 12, 900, 3, 3, 40, 0, 1 },   /* 12 lanes a kv head: tiles over key segments */
        { 2, 1500, 6, 2, 40, 0, 1 },   /* 6 lanes a kv head (GQA): the same */
    };
    run_cases(cases, sizeof cases / sizeof cases[0], 0xa77e0002u, "prefill");
}

static void tables_have_attention(void **state)
{
    (void)state;
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    for (int t = 0; t < nt; t++) {
        const moe_cpu_kernels *k = moe_kernels_by_name(names[t]);
        assert_non_null(k);
        assert_non_null(k->attn_tile);
        assert_non_null(k->attn_rows);
    }
}

/* T = 0 writes nothing and reads nothing. */
static void empty(void **state)
{
    (void)state;
    float out = 7.0f;
    moe_attention_causal(0, 5, 2, 2, 8, 1.0f, NULL, NULL, NULL, 16, &out);
    assert_true(out == 7.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tables_have_attention),
        cmocka_unit_test(empty),
        cmocka_unit_test(decode),
        cmocka_unit_test(prefill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
