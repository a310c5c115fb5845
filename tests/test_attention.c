/* tests/test_attention.c — causal attention over a KV cache
 * (moe_attention_causal) against a plain double-precision reference on fresh
 * seeded random inputs, for every CPU kernel set this machine runs, 1 and 2
 * threads, and a float32, a half (f16) and an 8-bit (Q8) cache:
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
 *   half cache    the same cases with the keys and values stored by
 *                 moe_kv_store as f16, against the reference computed from
 *                 the f16-rounded values (so the tolerance stays the same),
 *                 and bit for bit what a float32 cache holding those rounded
 *                 values gives;
 *   8-bit cache   the same cases stored as Q8 (kernels/kv_q8.h; rows padded
 *                 in bytes), against the reference computed from the
 *                 DEQUANTIZED values, so that again only float rounding
 *                 differs (the same tolerance): the rows kernel dequantizing
 *                 as it loads, the tile kernel on blocks dequantized by
 *                 kv_q8_widen (fewer keys a block past head_dim 128); its
 *                 quantization below;
 * every output element checked against the reference within 1e-5 of the
 * largest |out| of the case. Inputs have their exact sizes (the cache exactly
 * pos0 + T rows) so that the sanitizers catch any read past them; out starts
 * as NaN so that any element left unwritten fails. And a half cache's
 * element conversions:
 *   kv_store      moe_kv_store to f16 gives moe_f32_to_f16's bits for every
 *                 kernel set (F16C where it has it): random floats of every
 *                 magnitude, f16 subnormals and the ties around them, f32
 *                 subnormals, overflow to inf, inf, NaN payloads, signed
 *                 zeros; lengths off every vector width, nothing written past
 *                 n; to f32 it copies the bits;
 *   f16_to_f32    the table's widening of a half cache block gives
 *                 moe_f16_to_f32's value for every one of the 65536 halves
 *                 (NaNs: a NaN of the same sign), nothing written past n.
 * And an 8-bit cache's (kernels/kv_q8.h):
 *   q8 round trip moe_kv_store to Q8 and each table's kv_q8_store give the
 *                 bits of the scalar reference (moe_kv_q8_store_ref) on
 *                 random vectors with outlier channels, all-equal, all-zero
 *                 and one-element groups, values near float's extremes
 *                 (huge, subnormal), NaNs; nothing written past the
 *                 blocks; every finite element within scale/2 of its value
 *                 (and the 2⁻²⁴·127 of x / scale's rounding), the scale
 *                 within 2⁻⁷ above max|x|/127 (0 for a zero group), no NaN
 *                 from finite input; head_dim 1 .. 130 (groups of 32 and a
 *                 part group), one head and many in one call; kv_q8_widen
 *                 gives moe_kv_q8_value's floats (rows with bytes between
 *                 them); moe_kv_row_bytes of each cache dtype. */
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
#include "kernels/kv_q8.h"
#include "moe/runtime.h"
#include "quant/dtype.h"
#include "support/testutil.h"


static long n_checked;
static double worst; /* largest error / tolerance seen */

static void begin(void) { test_failures = 0, n_checked = 0, worst = 0; }

static void finish(const char *what)
{
    print_message("%s: %ld output elements checked, worst error %.3f of tolerance, %ld mismatches\n", what, n_checked,
                  worst, test_failures);
    if (test_failures) {
        print_error("%s: %ld mismatches in all\n", what, test_failures);
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
    int pad;        /* kv_stride = kv_heads·D + pad (Q8: its row's bytes + pad) */
    double sharp;   /* scale = sharp / sqrt(D) */
} attn_case;

/* One case's inputs: q [T][heads][D], the cache [pos0+T][stride] for K and V
 * in dtype kv (kc, vc, rows cstride elements apart: Q8 bytes), and its
 * values as floats (k, v: for a half or 8-bit cache, the values it holds). */
typedef struct {
    attn_case c;
    moe_dtype kv;
    size_t stride, cstride;
    float scale;
    float *q, *k, *v;
    void *kh, *vh; /* the half or 8-bit cache, or NULL */
    const void *kc, *vc;
    double *ref; /* [T][heads][D] */
    double tol;
} attn_data;

/* x's n values stored into a half cache by moe_kv_store; x becomes the
 * values the cache holds. */
static uint16_t *store_half(float *x, size_t n)
{
    uint16_t *h = xmalloc(sizeof(uint16_t) * n);
    moe_kv_store(MOE_DTYPE_F16, x, h, n, 1);
    for (size_t i = 0; i < n; i++) x[i] = moe_f16_to_f32(moe_f32_to_f16(x[i]));
    return h;
}

/* x's rows (kv_heads·D values, stride apart) stored into an 8-bit cache by
 * moe_kv_store, rows cstride bytes apart (padding bytes set but never
 * read); x becomes the values the cache holds. */
static unsigned char *store_q8(float *x, int rows, const attn_case *c, size_t stride, size_t cstride)
{
    unsigned char *q = xmalloc(cstride * rows);
    memset(q, 0x5a, cstride * rows);
    size_t n = (size_t)c->kv_heads * c->D, hb = moe_kv_q8_head_bytes(c->D);
    for (int j = 0; j < rows; j++) {
        float *row = x + (size_t)j * stride;
        unsigned char *dst = q + (size_t)j * cstride;
        moe_kv_store(MOE_DTYPE_Q8, row, dst, n, c->D);
        for (size_t i = 0; i < n; i++) row[i] = moe_kv_q8_value(dst + i / c->D * hb, c->D, (int)(i % c->D));
    }
    return q;
}

static void make_case(uint64_t *rng, const attn_case *c, moe_dtype kv, attn_data *a)
{
    a->c = *c;
    a->kv = kv;
    a->stride = (size_t)c->kv_heads * c->D + c->pad;
    a->cstride = kv == MOE_DTYPE_Q8 ? moe_kv_row_bytes(kv, c->kv_heads, c->D) + c->pad : a->stride;
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
    for (size_t i = 0; i < nkv; i++)
        if (i % a->stride % c->D == 5 % c->D) a->k[i] *= 4; /* a large key channel in every head (as RoPE's) */
    a->kh = kv == MOE_DTYPE_F16 ? (void *)store_half(a->k, nkv)
          : kv == MOE_DTYPE_Q8  ? (void *)store_q8(a->k, keys, c, a->stride, a->cstride) : NULL;
    a->vh = kv == MOE_DTYPE_F16 ? (void *)store_half(a->v, nkv)
          : kv == MOE_DTYPE_Q8  ? (void *)store_q8(a->v, keys, c, a->stride, a->cstride) : NULL;
    a->kc = a->kh ? (const void *)a->kh : a->k;
    a->vc = a->vh ? (const void *)a->vh : a->v;

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

static void free_case(attn_data *a) { free(a->q), free(a->k), free(a->v), free(a->kh), free(a->vh), free(a->ref); }

static void describe(const attn_data *a, const char *isa, int threads, char *buf, size_t n)
{
    const attn_case *c = &a->c;
    snprintf(buf, n, "[%s, %d thread%s, %s cache] T %d pos0 %d heads %d/%d D %d", isa, threads, threads > 1 ? "s" : "",
             moe_dtype_name(a->kv), c->T, c->pos0, c->heads, c->kv_heads, c->D);
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
                    test_mismatch("%s %s: out[%d][%d][%d] = %.9g, %s %.9g, error %.3g > %.3g", label, what, t0 + t, h, e,
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

/* Queries t0 .. t0+T of the case over its cache. */
static void attend(const attn_data *a, int t0, int T, float *out)
{
    const attn_case *c = &a->c;
    moe_attention_causal(T, c->pos0 + t0, c->heads, c->kv_heads, c->D, a->scale, a->q + (size_t)t0 * c->heads * c->D,
                         a->kv, a->kc, a->vc, a->cstride, out);
}

/* One call over the whole case; then, if T > 1, the same queries in two
 * chunks, each call given the cache up to its own last query. A half cache
 * also against a float32 one holding the same values, bit for bit. */
static void run_case(const attn_data *a, const char *isa, int threads)
{
    const attn_case *c = &a->c;
    char label[160];
    describe(a, isa, threads, label, sizeof label);
    size_t row = (size_t)c->heads * c->D, nq = (size_t)c->T * row;
    float *out = nan_buffer(nq);
    attend(a, 0, c->T, out);
    check(a, 0, c->T, out, NULL, "one call", label);
    if (a->kv == MOE_DTYPE_F16) {
        float *o32 = nan_buffer(nq);
        moe_attention_causal(c->T, c->pos0, c->heads, c->kv_heads, c->D, a->scale, a->q, MOE_DTYPE_F32, a->k, a->v,
                             a->stride, o32);
        for (size_t i = 0; i < nq; i++) {
            n_checked++;
            if (memcmp(&out[i], &o32[i], sizeof(float)))
                test_mismatch("%s: out[%zu] = %.9g, with a float32 cache of the same values %.9g (not the same bits)", label,
                         i, out[i], o32[i]);
        }
        free(o32);
    }
    if (c->T > 1) {
        int T1 = c->T / 3 + 1, T2 = c->T - T1;
        float *o1 = nan_buffer((size_t)T1 * row), *o2 = nan_buffer((size_t)T2 * row);
        attend(a, 0, T1, o1);
        attend(a, T1, T2, o2);
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

/* Every case for every kernel set and 1 and 2 threads, on the same inputs,
 * with a float32, a half and an 8-bit cache (the same values before
 * rounding). */
static void run_cases(const attn_case *cases, size_t n, uint64_t seed, const char *what)
{
    static const moe_dtype kvs[] = { MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_Q8 };
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    assert_true(nt >= 1);
    begin();
    for (size_t d = 0; d < sizeof kvs / sizeof kvs[0]; d++) {
        uint64_t rng = seed;
        for (size_t i = 0; i < n; i++) {
            attn_data a;
            make_case(&rng, &cases[i], kvs[d], &a);
            for (int t = 0; t < nt; t++)
                for (int threads = 1; threads <= 2; threads++) {
                    assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
                    assert_int_equal(moe_set_num_threads(threads), MOE_OK);
                    run_case(&a, names[t], threads);
                }
            free_case(&a);
        }
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
        { 1, 300, 8, 1, 136, 0, 1 },   /* GQA 8, head_dim > 128: the tile kernel widens a half cache itself */
        { 1, 999, 16, 16, 128, 0, 3 }, /* OLMoE's shape: one call spans the 16 kv heads; sharp */
        { 1, 64, 3, 3, 72, 5, 1 },     /* head_dim 72: a Q8 head of two groups and a half */
        { 1, 256, 2, 2, 100, 0, 2 },
        { 1, 1300, 12, 1, 72, 0, 1 },  /* GQA 12: the tile kernel over key segments */
        { 1, 90, 2, 2, 520, 1, 1 },    /* the rows kernel at head_dim 520 (Q8: blocks of 31 keys) */
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
        { 40, 20, 4, 2, 200, 3, 1 },   /* head_dim > 128: the tile kernel widens a half cache itself */
        { 5, 3, 2, 2, 72, 0, 1 },
        { 37, 0, 2, 2, 100, 2, 1 },
        { 20, 30, 2, 1, 520, 0, 1 },   /* head_dim 520 (Q8: tile blocks of 31 keys) */
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
        assert_non_null(k->f32_to_f16);
        assert_non_null(k->kv_q8_store);
        assert_non_null(k->kv_q8_widen);
    }
}

/* T = 0 writes nothing and reads nothing. */
static void empty(void **state)
{
    (void)state;
    float out = 7.0f;
    moe_attention_causal(0, 5, 2, 2, 8, 1.0f, NULL, MOE_DTYPE_F32, NULL, NULL, 16, &out);
    moe_attention_causal(0, 5, 2, 2, 8, 1.0f, NULL, MOE_DTYPE_F16, NULL, NULL, 16, &out);
    assert_true(out == 7.0f);
}

/* moe_kv_store to f16 against moe_f32_to_f16, bit for bit, for every kernel
 * set; to f32, a copy. Values: edge cases first, then at random: any bit
 * pattern (NaNs, infs and f32 subnormals among them), the f16 subnormal
 * range, exact ties between two halves (subnormal and normal, up to the tie
 * at 65520 that goes to inf), and floats around the f16 range. */
static void kv_store(void **state)
{
    (void)state;
    enum { N = 6000, CANARY = 8 };
    static const uint32_t edges[] = {
        0x00000000u, 0x80000000u,             /* ±0 */
        0x3f800000u, 0xbf800000u,             /* ±1 */
        0x3f801000u, 0x3f803000u, 0x3f802fffu, /* 1 + 2^-11 (tie to even: 1), 1 + 3·2^-11 (tie: up), just below */
        0x477fe000u, 0x477fefffu,             /* 65504 (largest half), just below the tie to inf */
        0x477ff000u, 0xc77ff000u, 0x47800000u, /* ±65520 (ties to inf), 65536 */
        0x7f7fffffu, 0xff7fffffu,             /* ±largest float */
        0x7f800000u, 0xff800000u,             /* ±inf */
        0x7fc00000u, 0xffc00000u, 0x7f800001u, /* quiet NaNs, a signalling NaN with a low payload */
        0x7fbfffffu, 0xff812345u, 0x7fffffffu, /* signalling NaN with a full payload, payloads */
        0x38800000u, 0x387fffffu,             /* 2^-14 (smallest normal half), just below */
        0x38000000u, 0x387f8000u, 0x387fc000u, /* 2^-15, 1023·2^-24 (largest subnormal), 2047·2^-25 (tie: up) */
        0x337fffffu, 0x33800000u, 0x33800001u, /* 2^-24 (smallest subnormal) just below, at, above */
        0x33000000u, 0x33000001u, 0xb3000000u, /* 2^-25 (tie to 0), just above (to 2^-24), −2^-25 */
        0x33c00000u, 0x34200000u,             /* 1.5·2^-24 (tie to 2·2^-24), 2.5·2^-24 (tie to 2·2^-24) */
        0x00000001u, 0x807fffffu, 0x00400000u, /* float subnormals */
    };
    float *src = xmalloc(sizeof(float) * N);
    uint64_t rng = 0xa77e0003u;
    size_t ne = sizeof edges / sizeof edges[0];
    for (size_t i = 0; i < N; i++) {
        uint64_t r = test_rand_u64(&rng);
        uint32_t sign = (uint32_t)(r >> 63) << 31;
        if (i < ne) {
            src[i] = test_float_from_bits(edges[i]);
        } else if (i % 5 == 0) {
            src[i] = test_float_from_bits((uint32_t)r); /* any bits */
        } else if (i % 5 == 1) {
            /* |x| in [2^-25, 2^-14): exponent field 102 .. 112, any mantissa */
            src[i] = test_float_from_bits(sign | (uint32_t)(102 + (r >> 23) % 11) << 23 | (uint32_t)(r & 0x7fffffu));
        } else if (i % 5 == 2) {
            /* a tie between subnormal halves k·2^-24 and (k+1)·2^-24 */
            src[i] = test_float_from_bits(sign | test_bits_of_float((float)ldexp((double)(2 * (r % 1024) + 1), -25)));
        } else if (i % 5 == 3) {
            /* a tie between normal halves m·2^(e-10) and (m+1)·2^(e-10) */
            int e = -14 + (int)(r % 30);
            double m = (double)(1024 + (r >> 8) % 1024);
            src[i] = test_float_from_bits(sign | test_bits_of_float((float)ldexp(2 * m + 1, e - 11)));
        } else {
            src[i] = (float)test_rand_uniform(&rng, -70000.0, 70000.0);
        }
    }
    uint16_t *want = xmalloc(sizeof(uint16_t) * N);
    for (size_t i = 0; i < N; i++) want[i] = moe_f32_to_f16(src[i]);

    static const size_t lens[] = { 0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, N - 5 };
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    begin();
    for (int t = 0; t < nt; t++) {
        assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t off = 0; off < 5 && off + lens[li] <= N; off += 2) { /* unaligned src and dst */
                size_t n = lens[li];
                uint16_t *h = xmalloc(sizeof(uint16_t) * (off + n + CANARY));
                for (size_t i = 0; i < off + n + CANARY; i++) h[i] = 0xa5a5u;
                moe_kv_store(MOE_DTYPE_F16, src + off, h + off, n, 1);
                for (size_t i = 0; i < off + n + CANARY; i++) {
                    int inside = i >= off && i < off + n;
                    uint16_t w = inside ? want[i] : 0xa5a5u;
                    n_checked++;
                    if (h[i] != w)
                        test_mismatch("[%s] moe_kv_store f16, n %zu from %zu: element %zu of %#010x is %#06x, %s %#06x",
                                 names[t], n, off, i, (unsigned)test_bits_of_float(src[i]), h[i],
                                 inside ? "moe_f32_to_f16 gives" : "written outside, was", w);
                }
                free(h);
                float *f = xmalloc(sizeof(float) * (n + 1));
                moe_kv_store(MOE_DTYPE_F32, src + off, f, n, 1);
                n_checked += (long)n;
                if (n && memcmp(f, src + off, sizeof(float) * n))
                    test_mismatch("[%s] moe_kv_store f32, n %zu from %zu: not a copy", names[t], n, off);
                free(f);
            }
    }
    assert_int_equal(moe_cpu_select_isa(names[0]), MOE_OK);
    free(src), free(want);
    finish("kv_store");
}

/* The table's f16_to_f32 against moe_f16_to_f32 on every half, for every
 * kernel set, at lengths and offsets off every vector width. */
static void f16_to_f32(void **state)
{
    (void)state;
    enum { N = 65536, CANARY = 8 };
    uint16_t *h = xmalloc(sizeof(uint16_t) * N);
    for (size_t i = 0; i < N; i++) h[i] = (uint16_t)(i * 40503u); /* every half once, in a scrambled order */
    static const size_t lens[] = { 0, 1, 7, 8, 9, 15, 16, 17, 130, N - 4 };
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    begin();
    for (int t = 0; t < nt; t++) {
        const moe_cpu_kernels *k = moe_kernels_by_name(names[t]);
        assert_non_null(k);
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (size_t off = 0; off < 4; off += 3) {
                size_t n = lens[li];
                float *f = xmalloc(sizeof(float) * (off + n + CANARY));
                for (size_t i = 0; i < off + n + CANARY; i++) f[i] = test_float_from_bits(0x7fa5a5a5u);
                k->f16_to_f32(n, h + off, f + off);
                for (size_t i = 0; i < off + n + CANARY; i++) {
                    int inside = i >= off && i < off + n;
                    float want = inside ? moe_f16_to_f32(h[i]) : test_float_from_bits(0x7fa5a5a5u);
                    int same = test_bits_of_float(f[i]) == test_bits_of_float(want) ||
                               (inside && isnan(want) && isnan(f[i]) && signbit(want) == signbit(f[i]));
                    n_checked++;
                    if (!same)
                        test_mismatch("[%s] f16_to_f32, n %zu from %zu: element %zu (%#06x) is %#010x, %s %#010x", names[t],
                                 n, off, i, h[i], (unsigned)test_bits_of_float(f[i]),
                                 inside ? "moe_f16_to_f32 gives" : "written outside, was", (unsigned)test_bits_of_float(want));
                }
                free(f);
            }
    }
    free(h);
    finish("f16_to_f32");
}

/* ---- an 8-bit cache's quantization ---- */

/* A Q8 head's and row's bytes, and the dtype's traits. */
static void q8_sizes(void **state)
{
    (void)state;
    assert_int_equal(moe_kv_q8_head_bytes(128), 136);
    assert_int_equal(moe_kv_q8_head_bytes(40), 44);
    assert_int_equal(moe_kv_row_bytes(MOE_DTYPE_Q8, 16, 128), 16 * 136);
    assert_int_equal(moe_kv_row_bytes(MOE_DTYPE_F16, 16, 128), 16 * 256);
    assert_int_equal(moe_kv_row_bytes(MOE_DTYPE_F32, 3, 40), 3 * 160);
    assert_int_equal(moe_kv_row_bytes(MOE_DTYPE_BF16, 3, 40), 0);
    assert_int_equal(moe_kv_row_bytes(MOE_DTYPE_Q8, 0, 40), 0);
    assert_string_equal(moe_dtype_name(MOE_DTYPE_Q8), "Q8");
    assert_int_equal(moe_dtype_size(MOE_DTYPE_Q8), 1);
}

/* n head vectors of D values of one kind (by v's index): random with a few
 * outlier channels, all equal, zero, tiny, huge, NaNs here and there. */
static void fill_vectors(uint64_t *rng, float *x, size_t n, int D, int with_nan)
{
    for (size_t i = 0; i < n; i++) {
        float *h = x + i * D;
        int kind = (int)(i % 8);
        double mag = kind == 4 ? 1e-41 : kind == 5 ? 1e36 : kind == 6 ? 3e-39 : 1.0; /* subnormal, huge */
        for (int d = 0; d < D; d++) {
            double r = test_rand_uniform(rng, -1.7320508, 1.7320508);
            if (d % 29 == 3 || d % 41 == 7) r *= 40; /* RoPE-like outlier channels */
            h[d] = kind == 1 ? 0.75f : kind == 2 ? 0.0f : kind == 3 ? -(float)(d % 5) : (float)(r * mag);
        }
        if (kind == 7 && D > 2) h[D / 2] = -0.0f, h[D - 1] = 1e-20f; /* a lone tiny value beside others */
        if (with_nan && kind == 0) h[(i / 8) % D] = NAN;
    }
}

static void check_round_trip(const char *isa, int D, size_t n, const float *x, const unsigned char *got, int with_nan)
{
    size_t hb = moe_kv_q8_head_bytes(D);
    for (size_t i = 0; i < n; i++) {
        const float *h = x + i * D;
        const unsigned char *b = got + i * hb;
        for (int g = 0; g * MOE_KV_Q8_GROUP < D; g++) {
            int d0 = g * MOE_KV_Q8_GROUP, d1 = d0 + MOE_KV_Q8_GROUP < D ? d0 + MOE_KV_Q8_GROUP : D;
            double amax = 0;
            for (int d = d0; d < d1; d++)
                if (!isnan(h[d])) amax = fmax(amax, fabs((double)h[d]));
            double s = moe_kv_q8_scale(b, D, g);
            n_checked++;
            if (!(s >= amax / 127 * (1 - 1e-6) && s <= amax / 127 * (1 + 1.0 / 128) + 1e-39) || (amax == 0 && s != 0))
                test_mismatch("[%s] D %d vector %zu group %d: scale %.9g for max|x| %.9g (want max/127 .. +2^-7)", isa,
                              D, i, g, s, amax);
            for (int d = d0; d < d1; d++) {
                float val = moe_kv_q8_value(b, D, d);
                n_checked++;
                if (isnan(h[d])) {
                    if (((const int8_t *)b)[d] != -127)
                        test_mismatch("[%s] D %d vector %zu: a NaN at %d stored code %d, not -127", isa, D, i, d,
                                      ((const int8_t *)b)[d]);
                    continue;
                }
                double err = fabs((double)val - h[d]);
                /* scale/2, and x / scale's own rounding (2^-24 of up to 127) */
                if (isnan(val) || !(err <= s * (0.5 + 8e-6)))
                    test_mismatch("[%s] D %d vector %zu element %d: %.9g stored as %.9g, error %.3g > scale/2 %.3g",
                                  isa, D, i, d, h[d], val, err, s / 2);
                else if (s > 0 && err / (s / 2) > worst) worst = err / (s / 2);
            }
        }
    }
    (void)with_nan;
}

/* Every kernel set's kv_q8_store (through moe_kv_store) against the
 * reference, bit for bit, and the round-trip bounds; kv_q8_widen against
 * moe_kv_q8_value. */
static void q8_round_trip(void **state)
{
    (void)state;
    enum { CANARY = 16 };
    static const int DIMS[] = { 1, 7, 16, 31, 32, 33, 40, 64, 72, 100, 128, 130 };
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    uint64_t rng = 0x9e8a0001u;
    begin();
    for (size_t di = 0; di < sizeof DIMS / sizeof DIMS[0]; di++)
        for (int with_nan = 0; with_nan <= 1; with_nan++) {
            int D = DIMS[di];
            size_t n = 40, hb = moe_kv_q8_head_bytes(D), bytes = n * hb;
            float *x = xmalloc(sizeof(float) * n * D);
            fill_vectors(&rng, x, n, D, with_nan);
            unsigned char *want = xmalloc(bytes), *got = xmalloc(bytes + CANARY);
            moe_kv_q8_store_ref(n, D, x, want);
            if (!with_nan) check_round_trip("reference", D, n, x, want, 0);
            for (int t = 0; t < nt; t++) {
                const moe_cpu_kernels *k = moe_kernels_by_name(names[t]);
                assert_int_equal(moe_cpu_select_isa(names[t]), MOE_OK);
                for (size_t len = 1; len <= n; len += n - 1) { /* one head, then all in one call */
                    memset(got, 0xa5, bytes + CANARY);
                    moe_kv_store(MOE_DTYPE_Q8, x, got, len * D, D);
                    for (size_t b = 0; b < len * hb + CANARY; b++) {
                        int inside = b < len * hb;
                        n_checked++;
                        if (got[b] != (inside ? want[b] : 0xa5)) {
                            test_mismatch("[%s] kv_q8_store D %d, %zu heads%s: byte %zu (head %zu, %s %zu) is %#04x, %s %#04x",
                                          names[t], D, len, with_nan ? " with NaNs" : "", b, b / hb,
                                          b % hb < (size_t)D ? "code" : "scale byte", b % hb < (size_t)D ? b % hb : b % hb - D,
                                          got[b], inside ? "the reference gives" : "written outside, was", inside ? want[b] : 0xa5);
                            break;
                        }
                    }
                }
                /* widening: rows of the blocks with 3 bytes between them */
                if (!with_nan) {
                    size_t stride = hb + 3;
                    unsigned char *rows = xmalloc(n * stride);
                    for (size_t i = 0; i < n; i++) memcpy(rows + i * stride, want + i * hb, hb);
                    float *w = xmalloc(sizeof(float) * (n * D + CANARY));
                    for (size_t i = 0; i < n * D + CANARY; i++) w[i] = -7.0f;
                    k->kv_q8_widen((int)n, D, rows, stride, w);
                    for (size_t i = 0; i < n * D + CANARY; i++) {
                        float e = i < n * D ? moe_kv_q8_value(want + i / D * hb, D, (int)(i % D)) : -7.0f;
                        n_checked++;
                        if (memcmp(&w[i], &e, sizeof e))
                            test_mismatch("[%s] kv_q8_widen D %d: element %zu is %.9g, want %.9g", names[t], D, i, w[i], e);
                    }
                    free(rows), free(w);
                }
            }
            free(x), free(want), free(got);
        }
    assert_int_equal(moe_cpu_select_isa(names[0]), MOE_OK);
    finish("q8_round_trip");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tables_have_attention),
        cmocka_unit_test(empty),
        cmocka_unit_test(kv_store),
        cmocka_unit_test(f16_to_f32),
        cmocka_unit_test(q8_sizes),
        cmocka_unit_test(q8_round_trip),
        cmocka_unit_test(decode),
        cmocka_unit_test(prefill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
