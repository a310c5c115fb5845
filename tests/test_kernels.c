/* tests/test_kernels.c — every CPU kernel table this machine can run
 * (avx512, avx2, portable), each kernel checked element by element against a
 * plain double-precision reference computed here, on fresh seeded random
 * inputs:
 *   panel_gemv    F32/F16/BF16 panels (odd K, nr 16/15/9/1) and Q4/Q8 panels
 *                 (scales/biases F32/F16/BF16, groups 32/64/128, 1..3 groups,
 *                 nr 16/5), m = 1..4 tokens; lanes ≥ nr and tokens ≥ m untouched;
 *   panel_gemv_i8 / panel_gemm_i8  the quantized panels with int8
 *                 activations (moe_quantize_act_i8; for the GEMM, tiles of
 *                 1..16 tokens packed by moe_pack_act_i8), against the exact
 *                 product and, for the GEMM, the same table's GEMV bit for bit;
 *   quantize_act_i8  against moe_quantize_act_i8 bit for bit, its sums
 *                 against exact ones;
 *   panel_unpack  the same panels: weight values, exact zeros in lanes ≥ nr,
 *                 a canary after the [K][16] buffer;
 *   gemm_tile     all mr×32 outputs for odd K, a canary after C;
 *   swiglu        n = 1..40 and 1000, random and special gate values, exactly
 *                 n outputs written;
 *   moe_pack_a, moe_group_sums (the portable helpers) against plain loops;
 * and every SIMD table against the portable one within the same tolerances.
 * Panels are built here from row-major data by an independent transposition
 * of the layout in kernels.h (value or code word of row r at input chunk c at
 * index c·nr + r; scales and biases [K/group][nr]); 16-bit floats are
 * generated and decoded here from their bit patterns. Input buffers have
 * their exact sizes so that the sanitizers catch any read past them.
 * Mismatches are all listed (up to a limit) before a test fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "support/testutil.h"

/* ---- bookkeeping ---- */

enum { CANARY_N = 16 };

static long n_checked; /* output elements checked in the running test */

static void begin(void) { test_failures = 0, n_checked = 0; }

static void finish(const char *what)
{
    print_message("%s: %ld output elements checked, %ld mismatches\n", what, n_checked, test_failures);
    if (test_failures) {
        print_error("%s: %ld mismatches in all\n", what, test_failures);
        fail();
    }
}

/* The tables this CPU runs, and the portable one. */
static int tables(const moe_cpu_kernels **kt, const char **names)
{
    int n = test_supported_isas(names, TEST_MAX_ISAS);
    assert_true(n >= 1);
    for (int i = 0; i < n; i++) {
        kt[i] = moe_kernels_by_name(names[i]);
        assert_non_null(kt[i]);
        assert_string_equal(kt[i]->name, names[i]);
        assert_true(kt[i]->mr >= 1 && kt[i]->mr <= MOE_TILE_MAX_M);
    }
    return n;
}

static const moe_cpu_kernels *portable(void)
{
    const moe_cpu_kernels *p = moe_kernels_by_name("portable");
    assert_non_null(p);
    return p;
}

static const float CANARY = -31415.9265f;

static void fill_canary(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = CANARY;
}

/* Index of the first element of p[0..n) that is no longer the canary, or -1. */
static long canary_broken(const float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&p[i], &CANARY, sizeof(float)) != 0) return (long)i;
    return -1;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

/* ---- random numbers of every dtype, decoded here ---- */

static double f16_value(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return h >> 15 ? -v : v;
}

static double bf16_value(uint16_t h)
{
    int e = (h >> 7) & 255, m = h & 127;
    double v = e ? ldexp(128 + m, e - 134) : ldexp(m, -133);
    return h >> 15 ? -v : v;
}

/* Stores at base[i] a random value of dtype t, magnitude in [2^lo, 2^(hi+1))
 * with every mantissa bit random, negative half the time when `neg`; F16
 * exponents below -14 give subnormals. Returns the stored value exactly. */
static double rand_store(uint64_t *rng, moe_dtype t, void *base, size_t i, int lo, int hi, int neg)
{
    uint64_t r = test_rand_u64(rng);
    int e = lo + (int)(r % (uint64_t)(hi - lo + 1));
    r >>= 8;
    unsigned s = neg ? (unsigned)(r & 1) : 0;
    r >>= 1;
    switch (t) {
    case MOE_DTYPE_F16: {
        unsigned m = (unsigned)(r & 1023), ef = (unsigned)(e + 15);
        if (e < -14) ef = 0, m = m ? m : 1;
        uint16_t h = (uint16_t)(s << 15 | ef << 10 | m);
        ((uint16_t *)base)[i] = h;
        return f16_value(h);
    }
    case MOE_DTYPE_BF16: {
        uint16_t h = (uint16_t)(s << 15 | (unsigned)(e + 127) << 7 | (unsigned)(r & 127));
        ((uint16_t *)base)[i] = h;
        return bf16_value(h);
    }
    default: {
        uint32_t b = (uint32_t)s << 31 | (uint32_t)(e + 127) << 23 | (uint32_t)(r & 0x7FFFFF);
        float f;
        memcpy(&f, &b, sizeof f);
        ((float *)base)[i] = f;
        return f;
    }
    }
}

static size_t dtype_bytes(moe_dtype t) { return t == MOE_DTYPE_F32 ? 4 : 2; }

static moe_dtype value_dtype(moe_wformat f)
{
    return f == MOE_WF_F16 ? MOE_DTYPE_F16 : f == MOE_WF_BF16 ? MOE_DTYPE_BF16 : MOE_DTYPE_F32;
}

static const char *const fmt_name[] = { "F32", "F16", "BF16", "Q4", "Q8" };

static const char *dtype_name(moe_dtype t)
{
    return t == MOE_DTYPE_F16 ? "F16" : t == MOE_DTYPE_BF16 ? "BF16" : "F32";
}

/* dst[c·rows + r] = src[r·cols + c], elements of esz bytes. */
static void transpose(void *dst, const void *src, int rows, int cols, size_t esz)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            memcpy((char *)dst + ((size_t)c * rows + r) * esz, (const char *)src + ((size_t)r * cols + c) * esz, esz);
}

/* ---- panels ---- */

typedef struct {
    moe_panel_format f;
    moe_panel p;
    void *w;      /* the panel's bytes, as kernels.h lays them out */
    double *W;    /* [nr][K] exact weights */
    double *mag;  /* [nr][K] |w|, or |scale·q| + |bias| for quantized */
    char desc[96];
} panel_case;

static void panel_make(panel_case *pc, uint64_t *rng, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr)
{
    memset(pc, 0, sizeof *pc);
    pc->f = (moe_panel_format){ fmt, sdtype, moe_wformat_is_quant(fmt) ? gs : 0, K };
    pc->W = xmalloc(sizeof(double) * nr * K);
    pc->mag = xmalloc(sizeof(double) * nr * K);
    if (!moe_wformat_is_quant(fmt)) {
        moe_dtype t = value_dtype(fmt);
        size_t vb = dtype_bytes(t);
        assert_int_equal(moe_wformat_value_bytes(fmt), vb);
        void *rows = xmalloc(vb * nr * K);
        for (int r = 0; r < nr; r++)
            for (int k = 0; k < K; k++) {
                size_t i = (size_t)r * K + k;
                pc->W[i] = rand_store(rng, t, rows, i, t == MOE_DTYPE_F16 ? -16 : -10, 0, 1);
                pc->mag[i] = fabs(pc->W[i]);
            }
        pc->w = xmalloc(vb * nr * K);
        transpose(pc->w, rows, nr, K, vb);
        free(rows);
        snprintf(pc->desc, sizeof pc->desc, "fmt %s K %d nr %d", fmt_name[fmt], K, nr);
    } else {
        int bits = fmt == MOE_WF_Q4 ? 4 : 8, epw = 32 / bits, words = K / epw, groups = K / gs;
        uint32_t qmax = (1u << bits) - 1;
        assert_int_equal(moe_wformat_bits(fmt), bits);
        size_t sb = dtype_bytes(sdtype);
        uint32_t *codes = xmalloc(sizeof(uint32_t) * nr * words);
        void *sc = xmalloc(sb * nr * groups), *bi = xmalloc(sb * nr * groups);
        memset(codes, 0, sizeof(uint32_t) * nr * words);
        for (int r = 0; r < nr; r++)
            for (int g = 0; g < groups; g++) {
                size_t gi = (size_t)r * groups + g;
                double s = rand_store(rng, sdtype, sc, gi, -9, -5, 1);
                double b = rand_store(rng, sdtype, bi, gi, -7, -2, 1);
                for (int k = g * gs; k < (g + 1) * gs; k++) {
                    uint64_t u = test_rand_u64(rng);
                    /* uniform codes, with the extremes 0 and qmax often */
                    uint32_t q = (u & 7) == 0 ? ((u >> 3) & 1 ? qmax : 0) : (uint32_t)((u >> 8) % (qmax + 1));
                    codes[(size_t)r * words + k / epw] |= q << ((k % epw) * bits);
                    pc->W[(size_t)r * K + k] = s * q + b;
                    pc->mag[(size_t)r * K + k] = fabs(s * q) + fabs(b);
                }
            }
        /* one block per group: its codes [wpg][nr], scales [nr], biases [nr] */
        size_t wpg = (size_t)gs / epw, block = wpg * nr * sizeof(uint32_t) + 2 * sb * nr;
        unsigned char *panel = xmalloc(block * groups);
        for (int g = 0; g < groups; g++) {
            unsigned char *b = panel + (size_t)g * block;
            uint32_t *cw = (uint32_t *)b;
            for (size_t c = 0; c < wpg; c++)
                for (int r = 0; r < nr; r++) cw[c * nr + r] = codes[(size_t)r * words + g * wpg + c];
            for (int r = 0; r < nr; r++) {
                memcpy(b + wpg * nr * 4 + (size_t)r * sb, (unsigned char *)sc + ((size_t)r * groups + g) * sb, sb);
                memcpy(b + wpg * nr * 4 + (size_t)(nr + r) * sb, (unsigned char *)bi + ((size_t)r * groups + g) * sb, sb);
            }
        }
        pc->w = panel;
        free(codes), free(sc), free(bi);
        snprintf(pc->desc, sizeof pc->desc, "fmt %s scales %s group %d K %d nr %d", fmt_name[fmt],
                 dtype_name(sdtype), gs, K, nr);
        pc->p = (moe_panel){ panel, panel + wpg * nr * 4, panel + wpg * nr * 4 + sb * nr, nr, block };
        return;
    }
    pc->p = (moe_panel){ pc->w, NULL, NULL, nr, 0 };
}

static void panel_free(panel_case *pc)
{
    free(pc->w), free(pc->W), free(pc->mag);
}

/* ---- panel_gemv ---- */

enum { OUT_LEN = MOE_PANEL + CANARY_N };

static void gemv_case(uint64_t seed, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr)
{
    uint64_t rng = seed;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS], *port = portable();
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    panel_case pc;
    panel_make(&pc, &rng, fmt, sdtype, gs, K, nr);
    int quant = moe_wformat_is_quant(fmt), groups = quant ? K / gs : 0;

    float *x[MOE_GEMV_MAX_M], *xsum[MOE_GEMV_MAX_M];
    double ref[MOE_GEMV_MAX_M][MOE_PANEL], bound[MOE_GEMV_MAX_M][MOE_PANEL];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) {
        x[i] = xmalloc(sizeof(float) * K);
        test_rand_floats(&rng, x[i], (size_t)K, -1, 1);
        xsum[i] = NULL;
        if (quant) {
            xsum[i] = xmalloc(sizeof(float) * groups);
            for (int g = 0; g < groups; g++) {
                double s = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) s += x[i][k];
                xsum[i][g] = (float)s;
            }
        }
        for (int r = 0; r < nr; r++) {
            double s = 0, a = 0;
            for (int k = 0; k < K; k++) {
                s += pc.W[(size_t)r * K + k] * x[i][k];
                a += pc.mag[(size_t)r * K + k] * fabs((double)x[i][k]);
            }
            ref[i][r] = s;
            bound[i][r] = 1e-5 * a + 1e-6;
        }
    }

    float outbuf[MOE_GEMV_MAX_M][OUT_LEN], portbuf[MOE_GEMV_MAX_M][OUT_LEN];
    float *out[MOE_GEMV_MAX_M], *pout[MOE_GEMV_MAX_M];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) out[i] = outbuf[i], pout[i] = portbuf[i];
    for (int m = 1; m <= MOE_GEMV_MAX_M; m++) {
        fill_canary(&portbuf[0][0], sizeof portbuf / sizeof(float));
        port->panel_gemv(&pc.f, &pc.p, m, (const float *const *)x, quant ? (const float *const *)xsum : NULL, pout);
        for (int t = 0; t < nt; t++) {
            fill_canary(&outbuf[0][0], sizeof outbuf / sizeof(float));
            kt[t]->panel_gemv(&pc.f, &pc.p, m, (const float *const *)x, quant ? (const float *const *)xsum : NULL,
                              out);
            for (int i = 0; i < MOE_GEMV_MAX_M; i++) {
                if (i >= m) {
                    long b = canary_broken(out[i], OUT_LEN);
                    if (b >= 0) test_mismatch("panel_gemv [%s] %s m %d: wrote out[%d][%ld] (token beyond m)", names[t], pc.desc, m, i, b);
                    continue;
                }
                for (int r = 0; r < nr; r++) {
                    double got = out[i][r], err = fabs(got - ref[i][r]), perr = fabs(got - (double)pout[i][r]);
                    n_checked++;
                    if (!(err <= bound[i][r]))
                        test_mismatch("panel_gemv [%s] %s m %d: out[%d][%d] = %.9g, reference %.9g, error %.3g > %.3g",
                                 names[t], pc.desc, m, i, r, got, ref[i][r], err, bound[i][r]);
                    else if (!(perr <= bound[i][r]))
                        test_mismatch("panel_gemv [%s] %s m %d: out[%d][%d] = %.9g, portable %.9g, differ by %.3g > %.3g",
                                 names[t], pc.desc, m, i, r, got, (double)pout[i][r], perr, bound[i][r]);
                }
                long b = canary_broken(out[i] + nr, OUT_LEN - nr);
                if (b >= 0) test_mismatch("panel_gemv [%s] %s m %d: wrote out[%d][%ld], beyond nr", names[t], pc.desc, m, i, nr + b);
            }
        }
    }
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) free(x[i]), free(xsum[i]);
    panel_free(&pc);
}

/* int8 activations: each table's panel_gemv_i8 (where it has one) against
 * the exact double product — off by at most the activation rounding,
 * Σ |w|·dx/2 — and against the portable one, which sums the same integers. */
static void gemv_i8_case(uint64_t seed, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr)
{
    uint64_t rng = seed;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS], *port = portable();
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names), groups = K / gs;
    panel_case pc;
    panel_make(&pc, &rng, fmt, sdtype, gs, K, nr);
    float *x[MOE_GEMV_MAX_M], *xsum[MOE_GEMV_MAX_M], *dx[MOE_GEMV_MAX_M];
    int8_t *xq[MOE_GEMV_MAX_M];
    double ref[MOE_GEMV_MAX_M][MOE_PANEL], tol[MOE_GEMV_MAX_M][MOE_PANEL];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) {
        x[i] = xmalloc(sizeof(float) * K);
        xq[i] = xmalloc((size_t)K);
        xsum[i] = xmalloc(sizeof(float) * groups);
        dx[i] = xmalloc(sizeof(float) * groups);
        test_rand_floats(&rng, x[i], (size_t)K, -1, 1);
        moe_group_sums(K, gs, x[i], xsum[i]);
        moe_quantize_act_i8(fmt, K, gs, x[i], xq[i], dx[i]);
        for (int k = 0; k < K; k++) {
            /* the quantized activation is within half a step of x */
            double back = (double)dx[i][k / gs] * xq[i][moe_act_i8_index(fmt, k)];
            n_checked++;
            if (!(fabs(back - x[i][k]) <= 0.5001 * dx[i][k / gs]))
                test_mismatch("quantize_act_i8 %s: x[%d] = %.9g comes back as %.9g (step %.3g)", pc.desc, k, (double)x[i][k],
                         back, (double)dx[i][k / gs]);
        }
        for (int r = 0; r < nr; r++) {
            double sum = 0, err = 0, a = 0;
            for (int k = 0; k < K; k++) {
                sum += pc.W[(size_t)r * K + k] * x[i][k];
                err += pc.mag[(size_t)r * K + k] * 0.5 * dx[i][k / gs];
                a += pc.mag[(size_t)r * K + k] * fabs((double)x[i][k]);
            }
            ref[i][r] = sum;
            tol[i][r] = err + 1e-5 * a + 1e-6;
        }
    }
    float outbuf[MOE_GEMV_MAX_M][OUT_LEN], portbuf[MOE_GEMV_MAX_M][OUT_LEN];
    float *out[MOE_GEMV_MAX_M], *pout[MOE_GEMV_MAX_M];
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) out[i] = outbuf[i], pout[i] = portbuf[i];
    for (int m = 1; m <= MOE_GEMV_MAX_M; m++) {
        port->panel_gemv_i8(&pc.f, &pc.p, m, (const int8_t *const *)xq, (const float *const *)dx,
                            (const float *const *)xsum, pout);
        for (int t = 0; t < nt; t++) {
            if (!kt[t]->panel_gemv_i8) continue;
            fill_canary(&outbuf[0][0], sizeof outbuf / sizeof(float));
            kt[t]->panel_gemv_i8(&pc.f, &pc.p, m, (const int8_t *const *)xq, (const float *const *)dx,
                                 (const float *const *)xsum, out);
            for (int i = 0; i < m; i++) {
                for (int r = 0; r < nr; r++) {
                    double got = out[i][r], same = 1e-5 * fabs(ref[i][r]) + 1e-5 * tol[i][r];
                    n_checked++;
                    if (!(fabs(got - ref[i][r]) <= tol[i][r]))
                        test_mismatch("panel_gemv_i8 [%s] %s m %d: out[%d][%d] = %.9g, exact %.9g, error %.3g > %.3g",
                                 names[t], pc.desc, m, i, r, got, ref[i][r], fabs(got - ref[i][r]), tol[i][r]);
                    else if (!(fabs(got - pout[i][r]) <= same))
                        test_mismatch("panel_gemv_i8 [%s] %s m %d: out[%d][%d] = %.9g, portable %.9g", names[t], pc.desc, m,
                                 i, r, got, (double)pout[i][r]);
                }
                long b = canary_broken(out[i] + nr, OUT_LEN - nr);
                if (b >= 0) test_mismatch("panel_gemv_i8 [%s] %s m %d: wrote out[%d][%ld], beyond nr", names[t], pc.desc, m, i, nr + b);
            }
        }
    }
    for (int i = 0; i < MOE_GEMV_MAX_M; i++) free(x[i]), free(xq[i]), free(xsum[i]), free(dx[i]);
    panel_free(&pc);
}

/* panel_gemm_i8 on tiles of m = 1..MOE_TILE_MAX_M tokens packed by
 * moe_pack_act_i8 (checked element by element), every table that has it for
 * m up to its mr_i8, the portable one for every m: against the exact double
 * product of the same int8 activations — integer sums are exact, so only the
 * float epilogue rounds, a few ulps of Σ_g |scale·dx·dot| + |bias·xsum| —
 * against the portable kernel, and bit for bit against the same table's
 * panel_gemv_i8 on each token (the layer may take either for a group). */
static void gemm_i8_case(uint64_t seed, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr)
{
    enum { MT = MOE_TILE_MAX_M };
    uint64_t rng = seed;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS], *port = portable();
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names), groups = K / gs, bits = fmt == MOE_WF_Q4 ? 4 : 8, epw = 32 / bits;
    panel_case pc;
    panel_make(&pc, &rng, fmt, sdtype, gs, K, nr);
    float *x[MT], *xsum[MT], *dx[MT];
    int8_t *xq[MT];
    double ref[MT][MOE_PANEL], tol[MT][MOE_PANEL];
    float gemv[TEST_MAX_ISAS][MT][MOE_PANEL];
    for (int i = 0; i < MT; i++) {
        x[i] = xmalloc(sizeof(float) * K);
        xq[i] = xmalloc((size_t)K);
        xsum[i] = xmalloc(sizeof(float) * groups);
        dx[i] = xmalloc(sizeof(float) * groups);
        test_rand_floats(&rng, x[i], (size_t)K, -1, 1);
        moe_group_sums(K, gs, x[i], xsum[i]);
        moe_quantize_act_i8(fmt, K, gs, x[i], xq[i], dx[i]);
    }
    /* the reference needs codes, scales and biases apart: read from the
     * panel's bytes and decoded here, each code checked against the exact
     * weight panel_make recorded */
    for (int i = 0; i < MT; i++)
        for (int r = 0; r < nr; r++) {
            double sum = 0, mag = 0;
            for (int g = 0; g < groups; g++) {
                const unsigned char *blk = (const unsigned char *)pc.w + (size_t)g * pc.p.gstride;
                size_t sb = dtype_bytes(sdtype), cb = (size_t)gs / epw * nr * 4;
                double sc, bi;
                if (sdtype == MOE_DTYPE_F32) {
                    float a, b;
                    memcpy(&a, blk + cb + (size_t)r * sb, 4), memcpy(&b, blk + cb + (size_t)(nr + r) * sb, 4);
                    sc = a, bi = b;
                } else {
                    uint16_t a, b;
                    memcpy(&a, blk + cb + (size_t)r * sb, 2), memcpy(&b, blk + cb + (size_t)(nr + r) * sb, 2);
                    sc = sdtype == MOE_DTYPE_F16 ? f16_value(a) : bf16_value(a);
                    bi = sdtype == MOE_DTYPE_F16 ? f16_value(b) : bf16_value(b);
                }
                long long dot = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) {
                    const uint32_t *cw = (const uint32_t *)(blk + (size_t)((k - g * gs) / epw) * nr * 4);
                    long long code = (cw[r] >> ((k % epw) * bits)) & ((1u << bits) - 1);
                    /* the code agrees with the exact weight panel_make recorded */
                    if (!(fabs(sc * (double)code + bi - pc.W[(size_t)r * K + k]) <= 1e-12))
                        test_mismatch("gemm_i8 test setup %s: code of lane %d input %d does not give its weight", pc.desc, r, k);
                    dot += code * xq[i][moe_act_i8_index(fmt, k)];
                }
                double t1 = sc * (double)dx[i][g] * (double)dot, t2 = bi * (double)xsum[i][g];
                sum += t1 + t2, mag += fabs(t1) + fabs(t2);
            }
            ref[i][r] = sum;
            tol[i][r] = 2e-6 * mag + 1e-30;
        }
    /* each table's matrix-vector kernel on every token, 4 at a time */
    for (int t = 0; t < nt; t++) {
        if (!kt[t]->panel_gemv_i8) continue;
        for (int i0 = 0; i0 < MT; i0 += MOE_GEMV_MAX_M) {
            float *o[MOE_GEMV_MAX_M];
            for (int i = 0; i < MOE_GEMV_MAX_M; i++) o[i] = gemv[t][i0 + i];
            kt[t]->panel_gemv_i8(&pc.f, &pc.p, MOE_GEMV_MAX_M, (const int8_t *const *)xq + i0,
                                 (const float *const *)dx + i0, (const float *const *)xsum + i0, o);
        }
    }
    float outbuf[MT][OUT_LEN], portbuf[MT][OUT_LEN];
    float *out[MT], *pout[MT];
    for (int i = 0; i < MT; i++) out[i] = outbuf[i], pout[i] = portbuf[i];
    for (int m = 1; m <= MT; m++) {
        /* the tile, in buffers of exactly its size */
        int8_t *q = xmalloc((size_t)K * m);
        float *d = xmalloc(sizeof(float) * groups * m), *sm = xmalloc(sizeof(float) * groups * m);
        moe_pack_act_i8(K, gs, m, (const int8_t *const *)xq, (const float *const *)dx, (const float *const *)xsum,
                        q, d, sm);
        for (int i = 0; i < m; i++) {
            for (int k = 0; k < K; k++) {
                n_checked++;
                if (q[((size_t)(k / 32) * m + i) * 32 + k % 32] != xq[i][k])
                    test_mismatch("moe_pack_act_i8 %s m %d: token %d byte %d misplaced", pc.desc, m, i, k);
            }
            for (int g = 0; g < groups; g++) {
                n_checked++;
                if (memcmp(&d[g * m + i], &dx[i][g], 4) != 0 || memcmp(&sm[g * m + i], &xsum[i][g], 4) != 0)
                    test_mismatch("moe_pack_act_i8 %s m %d: token %d group %d scale or sum misplaced", pc.desc, m, i, g);
            }
        }
        fill_canary(&portbuf[0][0], sizeof portbuf / sizeof(float));
        port->panel_gemm_i8(&pc.f, &pc.p, m, q, d, sm, pout);
        for (int t = 0; t < nt; t++) {
            if (!kt[t]->panel_gemm_i8 || m > kt[t]->mr_i8) continue;
            fill_canary(&outbuf[0][0], sizeof outbuf / sizeof(float));
            kt[t]->panel_gemm_i8(&pc.f, &pc.p, m, q, d, sm, out);
            for (int i = 0; i < MT; i++) {
                if (i >= m) {
                    long b = canary_broken(out[i], OUT_LEN);
                    if (b >= 0) test_mismatch("panel_gemm_i8 [%s] %s m %d: wrote out[%d][%ld] (token beyond m)", names[t], pc.desc, m, i, b);
                    continue;
                }
                for (int r = 0; r < nr; r++) {
                    double got = out[i][r];
                    n_checked++;
                    if (!(fabs(got - ref[i][r]) <= tol[i][r]))
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: out[%d][%d] = %.9g, exact %.9g, error %.3g > %.3g",
                                 names[t], pc.desc, m, i, r, got, ref[i][r], fabs(got - ref[i][r]), tol[i][r]);
                    else if (!(fabs(got - pout[i][r]) <= tol[i][r]))
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: out[%d][%d] = %.9g, portable %.9g", names[t], pc.desc, m,
                                 i, r, got, (double)pout[i][r]);
                    else if (kt[t]->panel_gemv_i8 && memcmp(&out[i][r], &gemv[t][i][r], sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: out[%d][%d] = %.9g, its panel_gemv_i8 %.9g (not the same bits)",
                                 names[t], pc.desc, m, i, r, got, (double)gemv[t][i][r]);
                }
                long b = canary_broken(out[i] + nr, OUT_LEN - nr);
                if (b >= 0) test_mismatch("panel_gemm_i8 [%s] %s m %d: wrote out[%d][%ld], beyond nr", names[t], pc.desc, m, i, nr + b);
            }
        }
        free(q), free(d), free(sm);
    }
    for (int i = 0; i < MT; i++) free(x[i]), free(xq[i]), free(xsum[i]), free(dx[i]);
    panel_free(&pc);
}

typedef void (*panel_case_fn)(uint64_t seed, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr);

/* fn on every quantized shape: Q4 and Q8 × scale dtype F32/F16/BF16 × group
 * 32/64/128 × 1..3 groups (every `group_step`-th) × lane counts nr[0], nr[1];
 * each with its own seed. */
static void each_quant_shape(uint64_t *seed, int group_step, const int nr[2], panel_case_fn fn)
{
    static const moe_dtype sd[] = { MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_BF16 };
    static const int gss[] = { 32, 64, 128 };
    for (int f = MOE_WF_Q4; f <= MOE_WF_Q8; f++)
        for (int s = 0; s < 3; s++)
            for (int g = 0; g < 3; g++)
                for (int ng = 1; ng <= 3; ng += group_step)
                    for (int n = 0; n < 2; n++)
                        fn((*seed)++ * 0x9E3779B97F4A7C15ull, (moe_wformat)f, sd[s], gss[g], ng * gss[g], nr[n]);
}

static void gemv_i8_formats(void **state)
{
    (void)state;
    static const int nrs[2] = { 16, 7 };
    begin();
    uint64_t seed = 0x18a70001u;
    each_quant_shape(&seed, 2, nrs, gemv_i8_case);
    finish("panel_gemv_i8");
}

static void gemm_i8_formats(void **state)
{
    (void)state;
    static const int nrs[2] = { 16, 7 };
    const moe_cpu_kernels *kt[TEST_MAX_ISAS];
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    for (int t = 0; t < nt; t++) {
        /* a table has both or neither, and a tile fits the layer's buffers */
        assert_true((kt[t]->panel_gemm_i8 != NULL) == (kt[t]->mr_i8 > 0));
        assert_true(kt[t]->mr_i8 <= MOE_TILE_MAX_M);
        if (kt[t]->panel_gemm_i8) assert_non_null(kt[t]->panel_gemv_i8);
        print_message("kernel table %s: panel_gemm_i8 %s (mr_i8 %d)\n", names[t], kt[t]->panel_gemm_i8 ? "yes" : "no",
                      kt[t]->mr_i8);
    }
    assert_non_null(portable()->panel_gemm_i8);
    begin();
    uint64_t seed = 0x6e3f2001u;
    each_quant_shape(&seed, 1, nrs, gemm_i8_case);
    finish("panel_gemm_i8");
}

/* Each table's quantize_act_i8 (where it has one): xq and dx bit for bit
 * those of moe_quantize_act_i8, xsum within float rounding of the exact
 * group sum; groups of zeros, one nonzero, halves that round to even
 * (|x| = k + 0.5 where max|x| = 127, so dx = 1), tiny and huge values. */
static void quantize_i8_all(void **state)
{
    (void)state;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS];
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    static const int gss[] = { 32, 64, 128 };
    begin();
    uint64_t rng = 0x9a480001u;
    for (int f = MOE_WF_Q4; f <= MOE_WF_Q8; f++)
        for (int a = 0; a < 3; a++)
            for (int ng = 1; ng <= 5; ng++)
                for (int kind = 0; kind < 4; kind++) {
                    int gs = gss[a], K = gs * ng;
                    float *x = xmalloc(sizeof(float) * K), *dx = xmalloc(sizeof(float) * ng),
                          *dxr = xmalloc(sizeof(float) * ng), *sum = xmalloc(sizeof(float) * ng);
                    int8_t *q = xmalloc((size_t)K), *qr = xmalloc((size_t)K);
                    int8_t *res = xmalloc((size_t)K), *resr = xmalloc((size_t)K);
                    double scale = kind == 2 ? 1e-30 : kind == 3 ? 1e30 : 1.0;
                    test_rand_floats(&rng, x, (size_t)K, -scale, scale);
                    if (kind == 1 || kind == 2)
                        for (int k = 0; k < gs; k++) x[k] = k == gs / 3 ? (float)(-0.75 * scale) : 0.0f;
                    if (kind == 1 && ng > 1)
                        for (int k = gs; k < 2 * gs; k++) x[k] = 0.0f;
                    if (kind == 0 && ng > 2)
                        for (int k = 2 * gs; k < 3 * gs; k++)
                            x[k] = k == 2 * gs ? 127.0f : (float)((double)(k % 127) + 0.5) * (k & 1 ? -1.0f : 1.0f);
                    moe_quantize_act_i8((moe_wformat)f, K, gs, x, qr, dxr);
                    moe_quantize_act_i8_residual((moe_wformat)f, K, gs, x, qr, dxr, resr);
                    for (int t = 0; t < nt; t++) {
                        if (!kt[t]->quantize_act_i8) continue;
                        memset(q, 0x55, (size_t)K);
                        memset(res, 0x55, (size_t)K);
                        /* with and without the residual digit: the same xq */
                        kt[t]->quantize_act_i8((moe_wformat)f, K, gs, x, q, dx, sum, res);
                        for (int k = 0; k < K; k++) {
                            n_checked += 2;
                            if (q[k] != qr[k])
                                test_mismatch("quantize_act_i8 [%s] %s group %d K %d kind %d: xq[%d] = %d, moe_quantize_act_i8 %d",
                                         names[t], fmt_name[f], gs, K, kind, k, q[k], qr[k]);
                            if (res[k] != resr[k])
                                test_mismatch("quantize_act_i8 [%s] %s group %d K %d kind %d: xr[%d] = %d, residual %d",
                                         names[t], fmt_name[f], gs, K, kind, k, res[k], resr[k]);
                        }
                        memset(q, 0x55, (size_t)K);
                        kt[t]->quantize_act_i8((moe_wformat)f, K, gs, x, q, dx, sum, NULL);
                        n_checked++;
                        if (memcmp(q, qr, (size_t)K) != 0)
                            test_mismatch("quantize_act_i8 [%s] without the residual: xq differs", names[t]);
                        for (int g = 0; g < ng; g++) {
                            double s = 0, abs_s = 0;
                            for (int k = g * gs; k < (g + 1) * gs; k++) s += x[k], abs_s += fabs((double)x[k]);
                            n_checked += 2;
                            if (memcmp(&dx[g], &dxr[g], sizeof(float)) != 0)
                                test_mismatch("quantize_act_i8 [%s] %s group %d K %d kind %d: dx[%d] = %.9g, moe_quantize_act_i8 %.9g",
                                         names[t], fmt_name[f], gs, K, kind, g, (double)dx[g], (double)dxr[g]);
                            if (!(fabs(sum[g] - s) <= 1e-6 * abs_s))
                                test_mismatch("quantize_act_i8 [%s] %s group %d K %d kind %d: xsum[%d] = %.9g, exact %.9g",
                                         names[t], fmt_name[f], gs, K, kind, g, (double)sum[g], s);
                        }
                    }
                    free(x), free(dx), free(dxr), free(sum), free(q), free(qr), free(res), free(resr);
                }
    finish("quantize_act_i8");
}

static void gemv_float_formats(void **state)
{
    (void)state;
    static const int Ks[] = { 1, 7, 37, 130 }, nrs[] = { 16, 15, 9, 1 };
    begin();
    uint64_t seed = 0x6e3f0001u;
    for (int f = MOE_WF_F32; f <= MOE_WF_BF16; f++)
        for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++)
            for (size_t b = 0; b < sizeof nrs / sizeof nrs[0]; b++)
                gemv_case(seed++ * 0x9E3779B97F4A7C15ull, (moe_wformat)f, MOE_DTYPE_F32, 0, Ks[a], nrs[b]);
    finish("panel_gemv, float formats");
}

static void gemv_quant_formats(void **state)
{
    (void)state;
    static const int nrs[2] = { 16, 5 };
    begin();
    uint64_t seed = 0x6e3f1001u;
    each_quant_shape(&seed, 1, nrs, gemv_case);
    finish("panel_gemv, quantized formats");
}

/* ---- panel_unpack ---- */

static void unpack_case(uint64_t seed, moe_wformat fmt, moe_dtype sdtype, int gs, int K, int nr)
{
    uint64_t rng = seed;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS], *port = portable();
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    panel_case pc;
    panel_make(&pc, &rng, fmt, sdtype, gs, K, nr);
    int quant = moe_wformat_is_quant(fmt);
    size_t n = (size_t)K * MOE_PANEL;
    float *dst = xmalloc(sizeof(float) * (n + CANARY_N)), *pdst = xmalloc(sizeof(float) * (n + CANARY_N));
    fill_canary(pdst, n + CANARY_N);
    port->panel_unpack(&pc.f, &pc.p, pdst);
    for (int t = 0; t < nt; t++) {
        fill_canary(dst, n + CANARY_N);
        kt[t]->panel_unpack(&pc.f, &pc.p, dst);
        for (int k = 0; k < K; k++)
            for (int r = 0; r < MOE_PANEL; r++) {
                float got = dst[(size_t)k * MOE_PANEL + r];
                n_checked++;
                if (r >= nr) {
                    if (!(got == 0.0f))
                        test_mismatch("panel_unpack [%s] %s: dst[%d][%d] = %.9g in an unused lane, not 0", names[t],
                                 pc.desc, k, r, (double)got);
                    continue;
                }
                double want = pc.W[(size_t)r * K + k];
                /* float formats convert exactly; s·q + b rounds once or twice */
                double tol = quant ? 1e-6 * pc.mag[(size_t)r * K + k] : 0.0;
                double err = fabs((double)got - want), perr = fabs((double)got - pdst[(size_t)k * MOE_PANEL + r]);
                if (!(err <= tol))
                    test_mismatch("panel_unpack [%s] %s: dst[%d][%d] = %.9g, weight %.9g, error %.3g > %.3g", names[t],
                             pc.desc, k, r, (double)got, want, err, tol);
                else if (!(perr <= tol))
                    test_mismatch("panel_unpack [%s] %s: dst[%d][%d] = %.9g, portable %.9g", names[t], pc.desc, k, r,
                             (double)got, (double)pdst[(size_t)k * MOE_PANEL + r]);
            }
        long b = canary_broken(dst + n, CANARY_N);
        if (b >= 0) test_mismatch("panel_unpack [%s] %s: wrote %ld floats past the [K][16] buffer", names[t], pc.desc, b + 1);
    }
    free(dst), free(pdst);
    panel_free(&pc);
}

static void unpack_all_formats(void **state)
{
    (void)state;
    static const int Ks[] = { 1, 7, 37, 130 }, nrs[] = { 16, 15, 9, 1 }, qnrs[2] = { 16, 5 };
    begin();
    uint64_t seed = 0x7a2c0001u;
    for (int f = MOE_WF_F32; f <= MOE_WF_BF16; f++)
        for (size_t a = 0; a < 4; a++)
            for (size_t b = 0; b < 4; b++)
                unpack_case(seed++ * 0x9E3779B97F4A7C15ull, (moe_wformat)f, MOE_DTYPE_F32, 0, Ks[a], nrs[b]);
    each_quant_shape(&seed, 1, qnrs, unpack_case);
    finish("panel_unpack");
}

/* ---- gemm_tile ---- */

static void gemm_tile_all(void **state)
{
    (void)state;
    static const int Ks[] = { 1, 5, 129 };
    const moe_cpu_kernels *kt[TEST_MAX_ISAS], *port = portable();
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names), pmr = port->mr;
    begin();
    uint64_t rng = 0x9e770001u;
    for (int t = 0; t < nt; t++)
        for (size_t a = 0; a < sizeof Ks / sizeof Ks[0]; a++) {
            int K = Ks[a], mr = kt[t]->mr;
            float *A = xmalloc(sizeof(float) * K * mr), *B0 = xmalloc(sizeof(float) * K * MOE_PANEL),
                  *B1 = xmalloc(sizeof(float) * K * MOE_PANEL), *Ap = xmalloc(sizeof(float) * K * pmr);
            test_rand_floats(&rng, A, (size_t)K * mr, -1, 1);
            test_rand_floats(&rng, B0, (size_t)K * MOE_PANEL, -1, 1);
            test_rand_floats(&rng, B1, (size_t)K * MOE_PANEL, -1, 1);
            float C[MOE_TILE_MAX_M * MOE_TILE_N + CANARY_N], P[MOE_TILE_MAX_M * MOE_TILE_N + CANARY_N];
            fill_canary(C, sizeof C / sizeof C[0]);
            kt[t]->gemm_tile(K, A, B0, B1, C, 0);
            /* K in two blocks, the second accumulating: the same bits */
            if (K > 1) {
                float S[MOE_TILE_MAX_M * MOE_TILE_N];
                int k1 = K / 2;
                kt[t]->gemm_tile(k1, A, B0, B1, S, 0);
                kt[t]->gemm_tile(K - k1, A + (size_t)k1 * mr, B0 + (size_t)k1 * MOE_PANEL, B1 + (size_t)k1 * MOE_PANEL,
                                 S, 1);
                if (memcmp(S, C, sizeof(float) * (size_t)mr * MOE_TILE_N) != 0)
                    test_mismatch("gemm_tile [%s] K %d: split into %d + %d accumulated differs from one call", names[t], K,
                             k1, K - k1);
            }
            /* the portable tile, mr rows at a time, on the same rows */
            for (int i0 = 0; i0 < mr; i0 += pmr) {
                for (int k = 0; k < K; k++)
                    for (int i = 0; i < pmr; i++)
                        Ap[(size_t)k * pmr + i] = i0 + i < mr ? A[(size_t)k * mr + i0 + i] : 0.0f;
                float Q[MOE_TILE_MAX_M * MOE_TILE_N];
                port->gemm_tile(K, Ap, B0, B1, Q, 0);
                for (int i = 0; i < pmr && i0 + i < mr; i++)
                    memcpy(P + (i0 + i) * MOE_TILE_N, Q + i * MOE_TILE_N, sizeof(float) * MOE_TILE_N);
            }
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < MOE_TILE_N; j++) {
                    const float *B = j < MOE_PANEL ? B0 : B1;
                    int jj = j % MOE_PANEL;
                    double s = 0, abs_s = 0;
                    for (int k = 0; k < K; k++) {
                        double p = (double)A[(size_t)k * mr + i] * B[(size_t)k * MOE_PANEL + jj];
                        s += p, abs_s += fabs(p);
                    }
                    double tol = 1e-5 * abs_s + 1e-6, got = C[i * MOE_TILE_N + j];
                    n_checked++;
                    if (!(fabs(got - s) <= tol))
                        test_mismatch("gemm_tile [%s] K %d: C[%d][%d] = %.9g, reference %.9g, error %.3g > %.3g", names[t],
                                 K, i, j, got, s, fabs(got - s), tol);
                    else if (!(fabs(got - P[i * MOE_TILE_N + j]) <= tol))
                        test_mismatch("gemm_tile [%s] K %d: C[%d][%d] = %.9g, portable %.9g", names[t], K, i, j, got,
                                 (double)P[i * MOE_TILE_N + j]);
                }
            long b = canary_broken(C + mr * MOE_TILE_N, sizeof C / sizeof C[0] - (size_t)mr * MOE_TILE_N);
            if (b >= 0) test_mismatch("gemm_tile [%s] K %d: wrote C beyond its %d rows (float %ld after)", names[t], K, mr, b);
            free(A), free(B0), free(B1), free(Ap);
        }
    finish("gemm_tile");
}

/* ---- swiglu ---- */

static void swiglu_case(uint64_t *rng, int n, const moe_cpu_kernels *const *kt, const char *const *names, int nt)
{
    static const float special[] = { 0.0f, -0.0f, 88.0f, -88.0f, 100.0f, -100.0f, 1e-20f, -1e-20f, 1e-38f,
                                     -1e-38f, 1e-45f, -3e-39f, 87.5f, -87.5f, 89.0f, -89.0f, 30.0f, -30.0f,
                                     1e-7f, -1e-7f };
    const int nsp = (int)(sizeof special / sizeof special[0]);
    float *g = xmalloc(sizeof(float) * n), *u = xmalloc(sizeof(float) * n);
    float *h = xmalloc(sizeof(float) * (n + CANARY_N)), *ph = xmalloc(sizeof(float) * (n + CANARY_N));
    test_rand_floats(rng, g, (size_t)n, -30, 30);
    test_rand_floats(rng, u, (size_t)n, -3, 3);
    for (int j = 0; j < n; j++) {
        if (u[j] == 0.0f) u[j] = 0.5f;
        if (j % 3 == 1) g[j] = special[(j / 3 + n) % nsp]; /* specials at every offset mod 8 and 16 */
    }
    fill_canary(ph, (size_t)n + CANARY_N);
    portable()->swiglu(n, g, u, ph);
    for (int t = 0; t < nt; t++) {
        fill_canary(h, (size_t)n + CANARY_N);
        kt[t]->swiglu(n, g, u, h);
        for (int j = 0; j < n; j++) {
            double gd = g[j], want = gd / (1 + exp(-gd)) * u[j], got = h[j];
            double tol = 1e-6 * fabs(want) + 1e-30;
            n_checked++;
            if (!(fabs(got - want) <= tol))
                test_mismatch("swiglu [%s] n %d: h[%d] = %.9g for g %.9g u %.9g, reference %.9g, error %.3g > %.3g", names[t],
                         n, j, got, gd, (double)u[j], want, fabs(got - want), tol);
            else if (!(fabs(got - ph[j]) <= tol))
                test_mismatch("swiglu [%s] n %d: h[%d] = %.9g for g %.9g u %.9g, portable %.9g", names[t], n, j, got, gd,
                         (double)u[j], (double)ph[j]);
        }
        long b = canary_broken(h + n, CANARY_N);
        if (b >= 0) test_mismatch("swiglu [%s] n %d: wrote h[%ld], past n", names[t], n, n + b);
    }
    free(g), free(u), free(h), free(ph);
}

static void swiglu_all(void **state)
{
    (void)state;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS];
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    begin();
    uint64_t rng = 0x5a1c0001u;
    for (int n = 1; n <= 40; n++) swiglu_case(&rng, n, kt, names, nt);
    swiglu_case(&rng, 1000, kt, names, nt);
    finish("swiglu");
}

/* ---- portable helpers ---- */

static void pack_a(void **state)
{
    (void)state;
    const moe_cpu_kernels *kt[TEST_MAX_ISAS];
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    int mrs[4 + TEST_MAX_ISAS] = { 1, 4, 12, MOE_TILE_MAX_M };
    int nmr = 4;
    for (int t = 0; t < nt; t++) mrs[nmr++] = kt[t]->mr;
    static const int Ks[] = { 1, 5, 37 };
    begin();
    uint64_t rng = 0x9ac40001u;
    for (int a = 0; a < nmr; a++)
        for (size_t b = 0; b < sizeof Ks / sizeof Ks[0]; b++)
            for (int m = 1; m <= mrs[a]; m++) {
                int K = Ks[b], mr = mrs[a];
                float *x[MOE_TILE_MAX_M];
                for (int i = 0; i < m; i++) {
                    x[i] = xmalloc(sizeof(float) * K);
                    test_rand_floats(&rng, x[i], (size_t)K, -1, 1);
                }
                size_t n = (size_t)K * mr;
                float *dst = xmalloc(sizeof(float) * (n + CANARY_N));
                fill_canary(dst, n + CANARY_N);
                moe_pack_a(K, m, mr, (const float *const *)x, dst);
                for (int k = 0; k < K; k++)
                    for (int i = 0; i < mr; i++) {
                        float got = dst[(size_t)k * mr + i], want = i < m ? x[i][k] : 0.0f;
                        n_checked++;
                        if (memcmp(&got, &want, sizeof got) != 0)
                            test_mismatch("moe_pack_a K %d m %d mr %d: dst[%d][%d] = %.9g, want %.9g", K, m, mr, k, i,
                                     (double)got, (double)want);
                    }
                long c = canary_broken(dst + n, CANARY_N);
                if (c >= 0) test_mismatch("moe_pack_a K %d m %d mr %d: wrote past [K][mr]", K, m, mr);
                for (int i = 0; i < m; i++) free(x[i]);
                free(dst);
            }
    finish("moe_pack_a");
}

static void group_sums(void **state)
{
    (void)state;
    static const int gss[] = { 32, 64, 128 }, Ks[] = { 1, 31, 32, 100, 128, 200, 384, 1000 };
    begin();
    uint64_t rng = 0x95a50001u;
    for (size_t a = 0; a < sizeof gss / sizeof gss[0]; a++)
        for (size_t b = 0; b < sizeof Ks / sizeof Ks[0]; b++) {
            int gs = gss[a], K = Ks[b], groups = K / gs;
            float *x = xmalloc(sizeof(float) * K), *sums = xmalloc(sizeof(float) * (groups + CANARY_N));
            test_rand_floats(&rng, x, (size_t)K, -2, 2);
            fill_canary(sums, (size_t)groups + CANARY_N);
            moe_group_sums(K, gs, x, sums);
            for (int g = 0; g < groups; g++) {
                double s = 0, abs_s = 0;
                for (int k = g * gs; k < (g + 1) * gs; k++) s += x[k], abs_s += fabs((double)x[k]);
                double tol = 1e-5 * abs_s + 1e-6;
                n_checked++;
                if (!(fabs(sums[g] - s) <= tol))
                    test_mismatch("moe_group_sums K %d group %d: sums[%d] = %.9g, reference %.9g", K, gs, g, (double)sums[g], s);
            }
            long c = canary_broken(sums + groups, CANARY_N);
            if (c >= 0) test_mismatch("moe_group_sums K %d group %d: wrote sums[%ld], past K/group", K, gs, groups + c);
            free(x), free(sums);
        }
    finish("moe_group_sums");
}

static void format_facts(void **state)
{
    (void)state;
    assert_int_equal(moe_wformat_bits(MOE_WF_F32), 0);
    assert_int_equal(moe_wformat_bits(MOE_WF_Q4), 4);
    assert_int_equal(moe_wformat_bits(MOE_WF_Q8), 8);
    assert_int_equal(moe_wformat_value_bytes(MOE_WF_F32), 4);
    assert_int_equal(moe_wformat_value_bytes(MOE_WF_F16), 2);
    assert_int_equal(moe_wformat_value_bytes(MOE_WF_BF16), 2);
    assert_false(moe_wformat_is_quant(MOE_WF_BF16));
    assert_true(moe_wformat_is_quant(MOE_WF_Q4) && moe_wformat_is_quant(MOE_WF_Q8));
    const moe_cpu_kernels *kt[TEST_MAX_ISAS];
    const char *names[TEST_MAX_ISAS];
    int nt = tables(kt, names);
    assert_string_equal(names[nt - 1], "portable");
    for (int t = 0; t < nt; t++) {
        assert_non_null(kt[t]->panel_gemv);
        assert_non_null(kt[t]->panel_unpack);
        assert_non_null(kt[t]->gemm_tile);
        assert_non_null(kt[t]->swiglu);
        print_message("kernel table %s (mr %d)\n", names[t], kt[t]->mr);
    }
    assert_null(moe_kernels_by_name("sse9"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(format_facts),      cmocka_unit_test(gemv_float_formats), cmocka_unit_test(gemv_quant_formats),
        cmocka_unit_test(unpack_all_formats), cmocka_unit_test(gemm_tile_all), cmocka_unit_test(gemv_i8_formats),
        cmocka_unit_test(gemm_i8_formats),   cmocka_unit_test(quantize_i8_all),     cmocka_unit_test(swiglu_all),
        cmocka_unit_test(pack_a),            cmocka_unit_test(group_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
