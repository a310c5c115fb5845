/* bench/panel_gemm_i8.c — the int8 panel GEMMs of every kernel set this CPU
 * runs, in multiply-adds a second on one core: one 16-row panel of 4- or
 * 8-bit codes times a tile of mr_i8 tokens, the panel and the tile in L1 (or,
 * with --panels and --tiles, that many of each, every panel over every tile
 * as the layers run them). Timed on the thread's CPU clock, so that a
 * neighbour's load on the other cores does not count; the figure is the best
 * of --rounds rounds of about 30 ms, with the median beside it.
 *
 *   panel_gemm_i8  one digit (int8 activations; int8x2 as two calls where a
 *                  set has no joined kernel)
 *   panel_gemm_i8x2  both digits in one call (int8x2, the default)
 * A multiply-add is one code times one token's activation: int8x2 counts
 * each once though it carries two digits.
 *
 * With --gemv M, the matrix-vector kernels of the default instead: the
 * panels times M tokens' own rows, as decode runs them (M ≤ 4), through
 * panel_gemv_i8x2 (the digits apart) and, where the set has it,
 * panel_gemv_i8x2_joined (each row's digits joined once, outside the
 * timing, as the layers do).
 *
 *   build-dir/bench_panel_gemm [--k 2048] [--group 64] [--bits 4|8]
 *       [--panels 1] [--tiles 1] [--gemv M] [--rounds 15] [--isa NAME] */
#define _ISOC11_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/kernels.h"

static double thread_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static int arg_int(const char *v, int lo, int hi, const char *name)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || x < lo || x > hi) {
        fprintf(stderr, "bench_panel_gemm: %s must be an integer in %d..%d (got '%s')\n", name, lo, hi, v);
        exit(2);
    }
    return (int)x;
}

/* 64-byte aligned, as the expert store and the layers' scratch are: a
 * vector load across two cache lines costs two. */
static void *xmalloc(size_t n)
{
    void *p = aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench_panel_gemm: out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Panel p of the P laid out from pb: G groups of `block` bytes, wpg code
 * words a group, then the group's scales and biases. */
static moe_panel panel_at(const unsigned char *pb, int p, int G, size_t block, int wpg)
{
    const unsigned char *base = pb + (size_t)p * G * block;
    size_t codes = (size_t)wpg * MOE_PANEL * 4;
    return (moe_panel){ base, base + codes, base + codes + 2 * MOE_PANEL, MOE_PANEL, block };
}

/* Seconds a call, best and median of `rounds` rounds of about 30 ms; a
 * batch runs some calls and returns how many (the clock is read once a
 * batch: reading it costs about a tenth of a small call). */
typedef long (*batch_fn)(void *arg);
static void time_calls(int rounds, batch_fn batch, void *arg, double *best, double *median)
{
    double sec[101];
    for (int r = 0; r < rounds; r++) {
        long calls = 0;
        double t0 = thread_seconds(), t;
        do {
            calls += batch(arg);
            t = thread_seconds() - t0;
        } while (t < 0.03);
        sec[r] = t / (double)calls;
    }
    qsort(sec, (size_t)rounds, sizeof *sec, cmp_double);
    *best = sec[0], *median = sec[rounds / 2];
}

/* panel_gemv_i8x2 over every panel 16 times, m tokens' own rows */
typedef struct {
    const moe_cpu_kernels *k;
    const moe_panel_format *f;
    const unsigned char *pb;
    size_t block;
    int P, G, wpg, m;
    const int8_t *const *xq, *const *xr;
    const int16_t *const *rows;   /* joined rows: panel_gemv_i8x2_joined */
    const float *const *dx, *const *xs;
    float *const *out;
} gemv_batch;

static long run_gemv_batch(void *arg)
{
    const gemv_batch *b = arg;
    for (int pass = 0; pass < 16 * b->P; pass++) {
        moe_panel pn = panel_at(b->pb, pass % b->P, b->G, b->block, b->wpg);
        if (b->rows) b->k->panel_gemv_i8x2_joined(b->f, &pn, b->m, b->rows, b->dx, b->xs, b->out);
        else b->k->panel_gemv_i8x2(b->f, &pn, b->m, b->xq, b->xr, b->dx, b->xs, b->out);
    }
    return 16L * b->P;
}

/* every panel over every tile 16 times, one digit or both joined */
typedef struct {
    const moe_cpu_kernels *k;
    const moe_panel_format *f;
    const unsigned char *pb;
    size_t block;
    int P, G, wpg, T, mr, joined;
    const int16_t *a;
    const float *d, *s;
    float *outb;
} gemm_batch;

static long run_gemm_batch(void *arg)
{
    const gemm_batch *b = arg;
    int K = b->f->K, mr = b->mr;
    for (int pass = 0; pass < 16 * b->P; pass++) {
        int p = pass % b->P;
        moe_panel pn = panel_at(b->pb, p, b->G, b->block, b->wpg);
        for (int t = 0; t < b->T; t++) {
            float *out[MOE_TILE_MAX_M];
            for (int i = 0; i < mr; i++) out[i] = b->outb + (((size_t)t * mr + i) * b->P + p) * MOE_PANEL;
            size_t ao = (size_t)t * K * mr, go = (size_t)t * b->G * mr;
            if (b->joined) b->k->panel_gemm_i8x2(b->f, &pn, mr, b->a + ao, b->d + go, b->s + go, out);
            else b->k->panel_gemm_i8(b->f, &pn, mr, (const int8_t *)b->a + ao, b->d + go, b->s + go, out);
        }
    }
    return 16L * b->P * b->T;
}

/* The panels (P of them, `block` bytes a group) times m tokens' own rows
 * with panel_gemv_i8x2, and panel_gemv_i8x2_joined where the set has it,
 * each panel once a pass. */
static void time_gemv(const moe_cpu_kernels *k, const char *name, const moe_panel_format *f, const unsigned char *pb,
                      size_t block, int P, int m, int rounds)
{
    int K = f->K, G = K / f->group_size, wpg = f->group_size * (f->fmt == MOE_WF_Q4 ? 4 : 8) / 32;
    int8_t *q = xmalloc((size_t)K * m), *r = xmalloc((size_t)K * m);
    float *dx = xmalloc(sizeof(float) * (size_t)G * m), *xs = xmalloc(sizeof(float) * (size_t)G * m);
    float out_b[MOE_GEMV_MAX_M][MOE_PANEL];
    const int8_t *xq[MOE_GEMV_MAX_M], *xr[MOE_GEMV_MAX_M];
    const float *dxp[MOE_GEMV_MAX_M], *xsp[MOE_GEMV_MAX_M];
    float *out[MOE_GEMV_MAX_M];
    for (size_t i = 0; i < (size_t)K * m; i++) q[i] = (int8_t)next_u64(), r[i] = (int8_t)next_u64();
    for (size_t i = 0; i < (size_t)G * m; i++) dx[i] = 1e-3f, xs[i] = 0.5f;
    for (int i = 0; i < m; i++)
        xq[i] = q + (size_t)i * K, xr[i] = r + (size_t)i * K, dxp[i] = dx + (size_t)i * G, xsp[i] = xs + (size_t)i * G,
        out[i] = out_b[i];
    int16_t *joined = xmalloc(sizeof(int16_t) * (size_t)K * m);
    const int16_t *rows[MOE_GEMV_MAX_M];
    for (int i = 0; i < m; i++) {
        rows[i] = joined + (size_t)i * K;
        moe_join_row_i8x2(k, f->fmt, K, f->group_size, xq[i], xr[i], joined + (size_t)i * K);
    }
    for (int j = 0; j < (k->panel_gemv_i8x2_joined ? 2 : 1); j++) {
        gemv_batch gb = { k, f, pb, block, P, G, wpg, m, xq, xr, j ? rows : NULL, dxp, xsp, out };
        double best, median;
        time_calls(rounds, run_gemv_batch, &gb, &best, &median);
        double macs = (double)MOE_PANEL * m * K, bytes = (double)block * G;
        printf("%-10s Q%d group %d K %d, %d token%s, %d panel%s: %-22s best %6.1f median %6.1f G multiply-adds/s "
               "a core (%.1f GB/s of codes, scales and biases)\n",
               name, f->fmt == MOE_WF_Q4 ? 4 : 8, f->group_size, K, m, m > 1 ? "s" : "", P, P > 1 ? "s" : "",
               j ? "panel_gemv_i8x2_joined" : "panel_gemv_i8x2", macs / best * 1e-9, macs / median * 1e-9,
               bytes / median * 1e-9);
    }
    free(q), free(r), free(dx), free(xs), free(joined);
}

int main(int argc, char **argv)
{
    int K = 2048, gs = 64, bits = 4, P = 1, T = 1, rounds = 15, gemv = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--k")) K = arg_int(v, 32, 1 << 16, "--k"), i++;
        else if (!strcmp(argv[i], "--group")) gs = arg_int(v, 32, 1 << 16, "--group"), i++;
        else if (!strcmp(argv[i], "--bits")) bits = arg_int(v, 4, 8, "--bits"), i++;
        else if (!strcmp(argv[i], "--panels")) P = arg_int(v, 1, 4096, "--panels"), i++;
        else if (!strcmp(argv[i], "--tiles")) T = arg_int(v, 1, 4096, "--tiles"), i++;
        else if (!strcmp(argv[i], "--gemv")) gemv = arg_int(v, 1, MOE_GEMV_MAX_M, "--gemv"), i++;
        else if (!strcmp(argv[i], "--rounds")) rounds = arg_int(v, 1, 101, "--rounds"), i++;
        else if (!strcmp(argv[i], "--isa")) only = v, i++;
        else {
            fprintf(stderr, "usage: bench_panel_gemm [--k K] [--group G] [--bits 4|8] [--panels P] [--tiles T] "
                            "[--gemv M] [--rounds R] [--isa NAME]\n");
            return 2;
        }
    }
    if ((bits != 4 && bits != 8) || K % gs || gs % 32) {
        fprintf(stderr, "bench_panel_gemm: --bits must be 4 or 8 and --k a multiple of --group, itself of 32\n");
        return 2;
    }
    /* panels as kernels.h lays them out: per group, codes [gs/epw][16] words,
     * then 16 BF16 scales near 1/64 and 16 BF16 biases */
    int G = K / gs, wpg = gs * bits / 32;
    size_t block = (size_t)wpg * MOE_PANEL * 4 + 2 * 2 * MOE_PANEL;
    unsigned char *pb = xmalloc(block * G * P);
    for (size_t i = 0; i < block * G * P; i++) pb[i] = (unsigned char)next_u64();
    for (int g = 0; g < G * P; g++) {
        uint16_t *sb = (uint16_t *)(pb + (size_t)g * block + (size_t)wpg * MOE_PANEL * 4);
        for (int r = 0; r < 2 * MOE_PANEL; r++) sb[r] = (uint16_t)(0x3C80 + (next_u64() & 63));
    }
    moe_panel_format f = { bits == 4 ? MOE_WF_Q4 : MOE_WF_Q8, MOE_DTYPE_BF16, gs, K };
    const char *sets[] = { "avx512vnni", "avxvnni", "avx2" };
    if (gemv) {
        for (size_t si = 0; si < sizeof sets / sizeof *sets; si++) {
            const moe_cpu_kernels *k = moe_kernels_by_name(sets[si]);
            if (!k || !k->panel_gemv_i8x2 || (only && strcmp(only, sets[si]))) continue;
            time_gemv(k, sets[si], &f, pb, block, P, gemv, rounds);
        }
        free(pb);
        return 0;
    }
    for (size_t si = 0; si < sizeof sets / sizeof *sets; si++) {
        const moe_cpu_kernels *k = moe_kernels_by_name(sets[si]);
        if (!k || !k->panel_gemm_i8 || (only && strcmp(only, sets[si]))) continue;
        int mr = k->mr_i8;
        /* any int16 of the joined range reads the same as real digits; the
         * int8 tile takes the same bytes */
        int16_t *a = xmalloc(sizeof(int16_t) * (size_t)K * mr * T);
        for (size_t i = 0; i < (size_t)K * mr * T; i++) a[i] = (int16_t)((int)(next_u64() % 65279) - 32639);
        float *d = xmalloc(sizeof(float) * (size_t)G * mr * T), *s = xmalloc(sizeof(float) * (size_t)G * mr * T);
        for (size_t i = 0; i < (size_t)G * mr * T; i++) d[i] = 1e-3f, s[i] = 0.5f;
        float *outb = xmalloc(sizeof(float) * MOE_PANEL * (size_t)mr * P * T);
        for (int joined = 0; joined < 2; joined++) {
            if (joined && !k->panel_gemm_i8x2) continue;
            gemm_batch gb = { k, &f, pb, block, P, G, wpg, T, mr, joined, a, d, s, outb };
            double best, median;
            time_calls(rounds, run_gemm_batch, &gb, &best, &median);
            double macs = (double)MOE_PANEL * mr * K;
            printf("%-10s Q%d group %d K %d, %d token%s, %d panel%s x %d tile%s: %-15s best %6.1f median %6.1f G "
                   "multiply-adds/s a core\n",
                   sets[si], bits, gs, K, mr, mr > 1 ? "s" : "", P, P > 1 ? "s" : "", T, T > 1 ? "s" : "",
                   joined ? "panel_gemm_i8x2" : "panel_gemm_i8", macs / best * 1e-9, macs / median * 1e-9);
        }
        free(a), free(d), free(s), free(outb);
    }
    free(pb);
    return 0;
}
