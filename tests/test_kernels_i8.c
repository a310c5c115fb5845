/* tests/test_kernels_i8.c — the int8-activation kernels at the edges of
 * their integer ranges, every kernel table this machine runs: codes all 0,
 * all at their maximum (15, 255), alternating, random; activations all -128,
 * all 127, alternating signs, random over -128..127. Those are the operands
 * at which an int16 intermediate saturates or wraps (vpmaddubsw sums two
 * u8·s8 products into int16: 2·255·128 > 32767 with whole 8-bit codes), so
 * each output is checked against an exact product computed here (integer
 * sums in 64 bits, the float epilogue in double) to a few float roundings of
 * its terms' magnitude: a saturated sum is off by thousands of steps.
 *   panel_gemv_i8  m = 1..4 tokens;
 *   panel_gemm_i8  tiles of m = 1..mr_i8 tokens packed by moe_pack_act_i8,
 *                  and the same bits as the table's panel_gemv_i8;
 *   panel_gemv_i8x2 / panel_gemm_i8x2  (where a table has them, and the
 *                  portable reference functions) the two digits of int8x2
 *                  activations in one call, digits and residuals both at
 *                  the extremes: Σ q·(254·xq + xr) reaches 255·32639 a term;
 *                  a table's pack_act_i8x2 gives moe_pack_act_i8x2's bytes;
 *   panel_gemv_i8x2_joined  (where a table has it, and the reference) on
 *                  each row joined alone, the bits of panel_gemv_i8x2;
 * for Q4 and Q8, scales F32/F16/BF16, groups 32/64/128, 1..3 groups, full
 * and partial panels (nr 16 and 11), and nothing written past nr or m.
 * Panels are laid out here from a code matrix as kernels.h describes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/portable/portable.h"
#include "kernels/kernels.h"
#include "support/testutil.h"

enum { OUT_LEN = MOE_PANEL + 8, MT = MOE_TILE_MAX_M };

static long n_checked;

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static const float CANARY = -27182.818f;

/* A random scale or bias of dtype t stored at base[i] (magnitude 2^lo ..
 * 2^(hi+1), either sign); returns its exact value. */
static double rand_scalar(uint64_t *rng, moe_dtype t, void *base, size_t i, int lo, int hi)
{
    uint64_t r = test_rand_u64(rng);
    int e = lo + (int)(r % (uint64_t)(hi - lo + 1));
    unsigned sign = (unsigned)(r >> 8) & 1, mant = (unsigned)(r >> 9);
    if (t == MOE_DTYPE_F16) {
        uint16_t h = (uint16_t)(sign << 15 | (unsigned)(e + 15) << 10 | (mant & 1023));
        ((uint16_t *)base)[i] = h;
        double v = ldexp(1024 + (h & 1023), e - 10);
        return sign ? -v : v;
    }
    if (t == MOE_DTYPE_BF16) {
        uint16_t h = (uint16_t)(sign << 15 | (unsigned)(e + 127) << 7 | (mant & 127));
        ((uint16_t *)base)[i] = h;
        double v = ldexp(128 + (h & 127), e - 7);
        return sign ? -v : v;
    }
    float f = (float)((sign ? -1.0 : 1.0) * ldexp(1.0 + (double)(mant & 0x7FFFFF) / 8388608.0, e));
    ((float *)base)[i] = f;
    return f;
}

/* Code patterns and activation patterns. */
enum { CODES_RANDOM, CODES_MAX, CODES_ZERO, CODES_ALTERNATE, CODE_KINDS };
enum { ACT_RANDOM, ACT_MIN, ACT_MAX, ACT_ALTERNATE, ACT_KINDS };
static const char *const code_name[] = { "random", "max", "zero", "alternating" };
static const char *const act_name[] = { "random", "all -128", "all 127", "alternating -128/127" };

static unsigned code_of(uint64_t *rng, int kind, unsigned qmax, int r, int k)
{
    switch (kind) {
    case CODES_MAX: return qmax;
    case CODES_ZERO: return 0;
    case CODES_ALTERNATE: return (k + r) & 1 ? qmax : 0;
    default: return (unsigned)(test_rand_u64(rng) % (qmax + 1));
    }
}

static int8_t act_of(uint64_t *rng, int kind, int k)
{
    switch (kind) {
    case ACT_MIN: return -128;
    case ACT_MAX: return 127;
    case ACT_ALTERNATE: return k & 1 ? 127 : -128;
    default: return (int8_t)(test_rand_u64(rng) & 0xFF);
    }
}

/* One panel with its codes, scales and biases kept apart for the reference. */
typedef struct {
    moe_panel_format f;
    moe_panel p;
    unsigned char *bytes;
    unsigned *code;     /* [nr][K] */
    double *scale, *bias; /* [nr][groups] */
    char desc[128];
} i8_panel;

static void panel_build(i8_panel *pc, uint64_t *rng, moe_wformat fmt, moe_dtype sd, int gs, int K, int nr, int ck)
{
    int bits = moe_wformat_bits(fmt), epw = 32 / bits, groups = K / gs, wpg = gs / epw;
    unsigned qmax = (1u << bits) - 1;
    size_t sb = sd == MOE_DTYPE_F32 ? 4 : 2, block = (size_t)wpg * nr * 4 + 2 * sb * nr;
    pc->f = (moe_panel_format){ fmt, sd, gs, K };
    pc->bytes = xmalloc(block * groups);
    memset(pc->bytes, 0, block * groups);
    pc->code = xmalloc(sizeof(unsigned) * nr * K);
    pc->scale = xmalloc(sizeof(double) * nr * groups);
    pc->bias = xmalloc(sizeof(double) * nr * groups);
    for (int g = 0; g < groups; g++) {
        unsigned char *blk = pc->bytes + (size_t)g * block;
        uint32_t *words = (uint32_t *)blk;
        for (int r = 0; r < nr; r++) {
            for (int k = g * gs; k < (g + 1) * gs; k++) {
                unsigned q = code_of(rng, ck, qmax, r, k);
                pc->code[(size_t)r * K + k] = q;
                /* code word (k - g·gs)/epw of lane r, code k % epw within it */
                words[(size_t)((k - g * gs) / epw) * nr + r] |= q << ((k % epw) * bits);
            }
            pc->scale[(size_t)r * groups + g] = rand_scalar(rng, sd, blk + (size_t)wpg * nr * 4, (size_t)r, -9, -5);
            pc->bias[(size_t)r * groups + g] = rand_scalar(rng, sd, blk + (size_t)wpg * nr * 4 + sb * nr, (size_t)r, -7, -3);
        }
    }
    pc->p = (moe_panel){ pc->bytes, pc->bytes + (size_t)wpg * nr * 4, pc->bytes + (size_t)wpg * nr * 4 + sb * nr, nr, block };
    snprintf(pc->desc, sizeof pc->desc, "Q%d scales %s group %d K %d nr %d codes %s", bits,
             sd == MOE_DTYPE_F32 ? "F32" : sd == MOE_DTYPE_F16 ? "F16" : "BF16", gs, K, nr, code_name[ck]);
}

static void panel_release(i8_panel *pc)
{
    free(pc->bytes), free(pc->code), free(pc->scale), free(pc->bias);
}

/* Exact out[i][r] and the magnitude its float rounding is measured against. */
static void reference(const i8_panel *pc, int r, const int8_t *xq, const float *dx, const float *xsum, double *val,
                      double *mag)
{
    int K = pc->f.K, gs = pc->f.group_size, groups = K / gs;
    double sum = 0, m = 0;
    for (int g = 0; g < groups; g++) {
        long long dot = 0;
        for (int k = g * gs; k < (g + 1) * gs; k++)
            dot += (long long)pc->code[(size_t)r * K + k] * xq[moe_act_i8_index(pc->f.fmt, k)];
        double t1 = pc->scale[(size_t)r * groups + g] * (double)dx[g] * (double)dot;
        double t2 = pc->bias[(size_t)r * groups + g] * (double)xsum[g];
        sum += t1 + t2, m += fabs(t1) + fabs(t2);
    }
    *val = sum, *mag = m;
}

/* The same for the two digits: Σ_g scale·(dx/254)·Σ q·(254·xq + xr) + bias·xsum. */
static void reference_x2(const i8_panel *pc, int r, const int8_t *xq, const int8_t *xr, const float *dx,
                         const float *xsum, double *val, double *mag)
{
    int K = pc->f.K, gs = pc->f.group_size, groups = K / gs;
    double sum = 0, m = 0;
    for (int g = 0; g < groups; g++) {
        long long dot = 0;
        for (int k = g * gs; k < (g + 1) * gs; k++) {
            int j = moe_act_i8_index(pc->f.fmt, k);
            dot += (long long)pc->code[(size_t)r * K + k] * (MOE_I8_RESIDUAL_STEPS * xq[j] + xr[j]);
        }
        double t1 = pc->scale[(size_t)r * groups + g] * (double)dx[g] / MOE_I8_RESIDUAL_STEPS * (double)dot;
        double t2 = pc->bias[(size_t)r * groups + g] * (double)xsum[g];
        sum += t1 + t2, m += fabs(t1) + fabs(t2);
    }
    *val = sum, *mag = m;
}

typedef void (*gemv_x2_fn)(const moe_panel_format *, const moe_panel *, int, const int8_t *const *,
                           const int8_t *const *, const float *const *, const float *const *, float *const *);
typedef void (*gemv_x2j_fn)(const moe_panel_format *, const moe_panel *, int, const int16_t *const *,
                            const float *const *, const float *const *, float *const *);
typedef void (*gemm_x2_fn)(const moe_panel_format *, const moe_panel *, int, const int16_t *, const float *,
                           const float *, float *const *);

static void check_out(const char *what, const char *isa, const i8_panel *pc, int m, int i, const float *got,
                      double ref, double mag, int r)
{
    n_checked++;
    if (!(fabs((double)got[r] - ref) <= 2e-6 * mag + 1e-30))
        test_mismatch("%s [%s] %s m %d: out[%d][%d] = %.9g, exact %.9g (error %.3g, allowed %.3g)", what, isa, pc->desc, m,
                 i, r, (double)got[r], ref, fabs((double)got[r] - ref), 2e-6 * mag);
}

static void one_case(uint64_t *rng, moe_wformat fmt, moe_dtype sd, int gs, int K, int nr, int ck, int ak)
{
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS), groups = K / gs;
    i8_panel pc;
    panel_build(&pc, rng, fmt, sd, gs, K, nr, ck);
    int8_t *xq[MT], *xr[MT];
    float *dx[MT], *xsum[MT];
    double ref[MT][MOE_PANEL], mag[MT][MOE_PANEL], ref2[MT][MOE_PANEL], mag2[MT][MOE_PANEL];
    for (int i = 0; i < MT; i++) {
        xq[i] = xmalloc((size_t)K);
        xr[i] = xmalloc((size_t)K);
        dx[i] = xmalloc(sizeof(float) * groups);
        xsum[i] = xmalloc(sizeof(float) * groups);
        /* token i of a tile: the pattern, or (odd tokens of a random
         * pattern) another draw, so tokens differ */
        for (int k = 0; k < K; k++) xq[i][k] = act_of(rng, ak, k + i), xr[i][k] = act_of(rng, ak, k + i + 1);
        for (int g = 0; g < groups; g++) {
            dx[i][g] = (float)test_rand_uniform(rng, 0.001, 0.02);
            xsum[i][g] = (float)test_rand_uniform(rng, -4, 4);
        }
        for (int r = 0; r < nr; r++) {
            reference(&pc, r, xq[i], dx[i], xsum[i], &ref[i][r], &mag[i][r]);
            reference_x2(&pc, r, xq[i], xr[i], dx[i], xsum[i], &ref2[i][r], &mag2[i][r]);
        }
    }
    char desc[192];
    snprintf(desc, sizeof desc, "%s, activations %s", pc.desc, act_name[ak]);
    float buf[MT][OUT_LEN], gemv[MT][OUT_LEN];
    float *out[MT], *gout[MT];
    for (int i = 0; i < MT; i++) out[i] = buf[i], gout[i] = gemv[i];
    for (int t = 0; t < nt; t++) {
        const moe_cpu_kernels *kt = moe_kernels_by_name(names[t]);
        assert_non_null(kt);
        if (!kt->panel_gemv_i8) continue;
        /* the matrix-vector kernel, 1..4 tokens at a time */
        for (int m = 1; m <= MOE_GEMV_MAX_M; m++)
            for (int i0 = 0; i0 + m <= MT; i0 += m) {
                for (int i = 0; i < MT; i++)
                    for (int r = 0; r < OUT_LEN; r++) gemv[i][r] = CANARY;
                kt->panel_gemv_i8(&pc.f, &pc.p, m, (const int8_t *const *)xq + i0, (const float *const *)dx + i0,
                                  (const float *const *)xsum + i0, gout + i0);
                for (int i = i0; i < i0 + m; i++) {
                    for (int r = 0; r < nr; r++) check_out("panel_gemv_i8", names[t], &pc, m, i, gemv[i], ref[i][r], mag[i][r], r);
                    for (int r = nr; r < OUT_LEN; r++)
                        if (memcmp(&gemv[i][r], &CANARY, sizeof(float)) != 0)
                            test_mismatch("panel_gemv_i8 [%s] %s: wrote out[%d][%d], beyond nr", names[t], desc, i, r);
                }
                for (int i = 0; i < MT; i++)
                    if ((i < i0 || i >= i0 + m) && memcmp(&gemv[i][0], &CANARY, sizeof(float)) != 0)
                        test_mismatch("panel_gemv_i8 [%s] %s: wrote token %d beyond the call's", names[t], desc, i);
            }
        /* every token once more, for the bitwise comparison below */
        for (int i0 = 0; i0 < MT; i0 += MOE_GEMV_MAX_M)
            kt->panel_gemv_i8(&pc.f, &pc.p, MOE_GEMV_MAX_M, (const int8_t *const *)xq + i0, (const float *const *)dx + i0,
                              (const float *const *)xsum + i0, gout + i0);
        for (int m = 1; kt->panel_gemm_i8 && m <= kt->mr_i8; m++) {
            int8_t *q = xmalloc((size_t)K * m);
            float *d = xmalloc(sizeof(float) * groups * m), *s = xmalloc(sizeof(float) * groups * m);
            moe_pack_act_i8(K, gs, m, (const int8_t *const *)xq, (const float *const *)dx, (const float *const *)xsum, q,
                            d, s);
            for (int i = 0; i < MT; i++)
                for (int r = 0; r < OUT_LEN; r++) buf[i][r] = CANARY;
            kt->panel_gemm_i8(&pc.f, &pc.p, m, q, d, s, out);
            for (int i = 0; i < MT; i++) {
                if (i >= m) {
                    if (memcmp(&buf[i][0], &CANARY, sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: wrote token %d", names[t], desc, m, i);
                    continue;
                }
                for (int r = 0; r < nr; r++) {
                    check_out("panel_gemm_i8", names[t], &pc, m, i, buf[i], ref[i][r], mag[i][r], r);
                    if (memcmp(&buf[i][r], &gemv[i][r], sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: out[%d][%d] = %.9g, its panel_gemv_i8 %.9g (other bits)",
                                 names[t], desc, m, i, r, (double)buf[i][r], (double)gemv[i][r]);
                }
                for (int r = nr; r < OUT_LEN; r++)
                    if (memcmp(&buf[i][r], &CANARY, sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8 [%s] %s m %d: wrote out[%d][%d], beyond nr", names[t], desc, m, i, r);
            }
            free(q), free(d), free(s);
        }
    }
    /* two digits a call: each table's kernels, then the portable reference */
    for (int t = 0; t <= nt; t++) {
        const moe_cpu_kernels *kt = t < nt ? moe_kernels_by_name(names[t]) : NULL;
        const char *isa = t < nt ? names[t] : "portable reference";
        gemv_x2_fn gv = kt ? kt->panel_gemv_i8x2 : moe_portable_panel_gemv_i8x2;
        gemm_x2_fn gm = kt ? kt->panel_gemm_i8x2 : moe_portable_panel_gemm_i8x2;
        int mr = kt ? kt->mr_i8 : MT;
        if (!gv) continue;
        if (kt) assert_true(gm != NULL && mr >= MOE_GEMV_MAX_M);
        for (int m = 1; m <= MOE_GEMV_MAX_M; m++)
            for (int i0 = 0; i0 + m <= MT; i0 += m) {
                for (int i = 0; i < MT; i++)
                    for (int r = 0; r < OUT_LEN; r++) gemv[i][r] = CANARY;
                gv(&pc.f, &pc.p, m, (const int8_t *const *)xq + i0, (const int8_t *const *)xr + i0,
                   (const float *const *)dx + i0, (const float *const *)xsum + i0, gout + i0);
                for (int i = 0; i < MT; i++) {
                    if (i < i0 || i >= i0 + m) {
                        if (memcmp(&gemv[i][0], &CANARY, sizeof(float)) != 0)
                            test_mismatch("panel_gemv_i8x2 [%s] %s: wrote token %d beyond the call's", isa, desc, i);
                        continue;
                    }
                    for (int r = 0; r < nr; r++) check_out("panel_gemv_i8x2", isa, &pc, m, i, gemv[i], ref2[i][r], mag2[i][r], r);
                    for (int r = nr; r < OUT_LEN; r++)
                        if (memcmp(&gemv[i][r], &CANARY, sizeof(float)) != 0)
                            test_mismatch("panel_gemv_i8x2 [%s] %s: wrote out[%d][%d], beyond nr", isa, desc, i, r);
                }
            }
        for (int i0 = 0; i0 < MT; i0 += MOE_GEMV_MAX_M)
            gv(&pc.f, &pc.p, MOE_GEMV_MAX_M, (const int8_t *const *)xq + i0, (const int8_t *const *)xr + i0,
               (const float *const *)dx + i0, (const float *const *)xsum + i0, gout + i0);
        gemv_x2j_fn gj = kt ? kt->panel_gemv_i8x2_joined : moe_portable_panel_gemv_i8x2_joined;
        if (gj) {
            /* each row joined alone (no scales packed), in a buffer of
             * exactly its size; then the joined rows m at a time */
            int16_t *rows[MT];
            for (int i = 0; i < MT; i++) {
                rows[i] = xmalloc(sizeof(int16_t) * (size_t)K);
                const int8_t *q = xq[i], *r = xr[i];
                (kt && kt->pack_act_i8x2 ? kt->pack_act_i8x2 : moe_pack_act_i8x2)(fmt, K, gs, 1, &q, &r, NULL, NULL,
                                                                                  rows[i], NULL, NULL);
                for (int k = 0; k < K; k++) {
                    int j = moe_act_i8_index(fmt, k);
                    n_checked++;
                    if (rows[i][(k / 8) * 8 + moe_act_i8x2_pos(fmt, k % 8)] != MOE_I8_RESIDUAL_STEPS * xq[i][j] + xr[i][j])
                        test_mismatch("pack_act_i8x2 [%s] %s: row %d alone, input %d misplaced", isa, desc, i, k);
                }
            }
            for (int m = 1; m <= MOE_GEMV_MAX_M; m++)
                for (int i0 = 0; i0 + m <= MT; i0 += m) {
                    for (int i = 0; i < MT; i++)
                        for (int r = 0; r < OUT_LEN; r++) buf[i][r] = CANARY;
                    gj(&pc.f, &pc.p, m, (const int16_t *const *)rows + i0, (const float *const *)dx + i0,
                       (const float *const *)xsum + i0, out + i0);
                    for (int i = 0; i < MT; i++) {
                        if (i < i0 || i >= i0 + m) {
                            if (memcmp(&buf[i][0], &CANARY, sizeof(float)) != 0)
                                test_mismatch("panel_gemv_i8x2_joined [%s] %s: wrote token %d beyond the call's", isa,
                                              desc, i);
                            continue;
                        }
                        for (int r = 0; r < nr; r++) {
                            check_out("panel_gemv_i8x2_joined", isa, &pc, m, i, buf[i], ref2[i][r], mag2[i][r], r);
                            if (memcmp(&buf[i][r], &gemv[i][r], sizeof(float)) != 0)
                                test_mismatch("panel_gemv_i8x2_joined [%s] %s m %d: out[%d][%d] = %.9g, "
                                              "panel_gemv_i8x2 %.9g (other bits)",
                                              isa, desc, m, i, r, (double)buf[i][r], (double)gemv[i][r]);
                        }
                        for (int r = nr; r < OUT_LEN; r++)
                            if (memcmp(&buf[i][r], &CANARY, sizeof(float)) != 0)
                                test_mismatch("panel_gemv_i8x2_joined [%s] %s: wrote out[%d][%d], beyond nr", isa,
                                              desc, i, r);
                    }
                }
            for (int i = 0; i < MT; i++) free(rows[i]);
        }
        for (int m = 1; m <= mr; m++) {
            /* the joined tile, in buffers of exactly its size, checked
             * against its definition in kernels.h */
            int16_t *a = xmalloc(sizeof(int16_t) * (size_t)K * m);
            float *d = xmalloc(sizeof(float) * groups * m), *s = xmalloc(sizeof(float) * groups * m);
            moe_pack_act_i8x2(fmt, K, gs, m, (const int8_t *const *)xq, (const int8_t *const *)xr,
                              (const float *const *)dx, (const float *const *)xsum, a, d, s);
            for (int i = 0; i < m; i++)
                for (int k = 0; k < K; k++) {
                    int j = moe_act_i8_index(fmt, k);
                    n_checked++;
                    if (a[((size_t)(k / 8) * m + i) * 8 + moe_act_i8x2_pos(fmt, k % 8)] != MOE_I8_RESIDUAL_STEPS * xq[i][j] + xr[i][j])
                        test_mismatch("moe_pack_act_i8x2 %s m %d: token %d input %d misplaced", desc, m, i, k);
                }
            if (kt && kt->pack_act_i8x2) {
                /* the table's packing: the same bytes, in buffers of exactly
                 * the tile's size (reads or writes past them fail under ASan) */
                int16_t *a2 = xmalloc(sizeof(int16_t) * (size_t)K * m);
                float *d2 = xmalloc(sizeof(float) * groups * m), *s2 = xmalloc(sizeof(float) * groups * m);
                kt->pack_act_i8x2(fmt, K, gs, m, (const int8_t *const *)xq, (const int8_t *const *)xr,
                                  (const float *const *)dx, (const float *const *)xsum, a2, d2, s2);
                n_checked++;
                if (memcmp(a, a2, sizeof(int16_t) * (size_t)K * m) || memcmp(d, d2, sizeof(float) * groups * m) ||
                    memcmp(s, s2, sizeof(float) * groups * m))
                    test_mismatch("pack_act_i8x2 [%s] %s m %d: not moe_pack_act_i8x2's bytes", isa, desc, m);
                free(a2), free(d2), free(s2);
            }
            for (int i = 0; i < MT; i++)
                for (int r = 0; r < OUT_LEN; r++) buf[i][r] = CANARY;
            gm(&pc.f, &pc.p, m, a, d, s, out);
            for (int i = 0; i < MT; i++) {
                if (i >= m) {
                    if (memcmp(&buf[i][0], &CANARY, sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8x2 [%s] %s m %d: wrote token %d", isa, desc, m, i);
                    continue;
                }
                for (int r = 0; r < nr; r++) {
                    check_out("panel_gemm_i8x2", isa, &pc, m, i, buf[i], ref2[i][r], mag2[i][r], r);
                    if (memcmp(&buf[i][r], &gemv[i][r], sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8x2 [%s] %s m %d: out[%d][%d] = %.9g, its panel_gemv_i8x2 %.9g (other bits)",
                                 isa, desc, m, i, r, (double)buf[i][r], (double)gemv[i][r]);
                }
                for (int r = nr; r < OUT_LEN; r++)
                    if (memcmp(&buf[i][r], &CANARY, sizeof(float)) != 0)
                        test_mismatch("panel_gemm_i8x2 [%s] %s m %d: wrote out[%d][%d], beyond nr", isa, desc, m, i, r);
            }
            free(a), free(d), free(s);
        }
    }
    for (int i = 0; i < MT; i++) free(xq[i]), free(xr[i]), free(dx[i]), free(xsum[i]);
    panel_release(&pc);
}

/* Every code pattern against every activation pattern, both code widths. */
static void extremes(void **state)
{
    (void)state;
    static const moe_dtype sds[] = { MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_BF16 };
    static const int gss[] = { 32, 64, 128 }, nrs[] = { 16, 11 };
    uint64_t rng = 0x1e8a70001u;
    test_failures = n_checked = 0;
    const char *names[TEST_MAX_ISAS];
    int nt = test_supported_isas(names, TEST_MAX_ISAS);
    for (int t = 0; t < nt; t++) {
        const moe_cpu_kernels *kt = moe_kernels_by_name(names[t]);
        print_message("kernel table %s: panel_gemv_i8 %s, panel_gemm_i8 %s (mr_i8 %d)\n", names[t],
                      kt->panel_gemv_i8 ? "yes" : "no", kt->panel_gemm_i8 ? "yes" : "no", kt->mr_i8);
    }
    for (int f = MOE_WF_Q4; f <= MOE_WF_Q8; f++)
        for (int ck = 0; ck < CODE_KINDS; ck++)
            for (int ak = 0; ak < ACT_KINDS; ak++) {
                /* a different scale dtype, group and length each time, all
                 * of them covered over the patterns */
                int v = ck * ACT_KINDS + ak;
                int gs = gss[v % 3], ng = 1 + (v / 3) % 3;
                one_case(&rng, (moe_wformat)f, sds[(v / 2) % 3], gs, ng * gs, nrs[v % 2], ck, ak);
            }
    print_message("int8 kernels at the extremes: %ld output elements checked, %ld mismatches\n", n_checked, test_failures);
    if (test_failures) fail();
}

/* The AVX2 set has the int8 kernels (so int8 activations are its default
 * too); where the CPU has AVX2 the test above ran them. */
static void avx2_has_int8(void **state)
{
    (void)state;
    const moe_cpu_kernels *k = moe_kernels_by_name("avx2");
    if (!k) {
        print_message("this CPU has no AVX2: nothing to check\n");
        return;
    }
    assert_non_null(k->panel_gemv_i8);
    assert_non_null(k->panel_gemm_i8);
    assert_non_null(k->quantize_act_i8);
    assert_non_null(k->panel_gemv_i8x2);
    assert_non_null(k->panel_gemm_i8x2);
    assert_non_null(k->pack_act_i8x2);
    assert_true(k->mr_i8 > MOE_GEMV_MAX_M && k->mr_i8 <= MOE_TILE_MAX_M);
    const moe_cpu_kernels *v = moe_kernels_by_name("avxvnni");
    print_message("AVX-VNNI kernels: %s\n", v ? "this CPU has them (tested above)" : "not on this CPU (compiled only)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(extremes),
        cmocka_unit_test(avx2_has_int8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
