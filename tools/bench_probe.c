/* tools/bench_probe.c — the machine floors of `moe bench-layer`.
 *
 * Bandwidth: all threads sum disjoint slices of a buffer far larger than the
 * caches, so every byte comes from DRAM, the way a decode step's expert
 * weights do. Peak compute: all threads run twelve independent multiply-add
 * chains on vectors held in registers, so neither latency nor memory limits
 * the rate.
 *
 * Both are plain C that gcc vectorises; no intrinsics (those belong in
 * src/kernels/cpu/<isa>/). The tools are built for baseline x86-64, so the
 * peak probe's AVX2/AVX-512 variants carry a `target` attribute and use
 * fmaf(), which the compiler turns into vector FMA instructions (the
 * project's -ffp-contract=off forbids fusing a*b+c written out). Which
 * variant runs follows the kernel set in use, so the peak matches the
 * instructions the layer can use.
 *
 * Peak int8 rate: the same timing around twelve chains of 512-bit vpdpbusd
 * (64 int8 multiply-adds each), the instruction of the avx512vnni set's
 * quantized kernels with int8 activations. gcc does not turn plain C into
 * vpdpbusd chains, so that loop lives with the other intrinsics, in
 * src/kernels/cpu/avx512vnni/peak.c; only the threads and the clock are here. */
#include "bench_probe.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/memory.h"
#include "core/threadpool.h"
#include "kernels/cpu/avx512vnni/avx512vnni.h"
#include "kernels/kernels.h"

enum { MAX_THREADS = 256, CHAINS = 12 };

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- memory read bandwidth ---------------------------------------------- */

typedef struct {
    float *buf;
    size_t n;                    /* floats in buf */
    float sink[MAX_THREADS];     /* keeps the sums alive */
} bw_ctx;

/* Thread t's slice [*lo, *hi), cut at multiples of 16 floats (one line). */
static void slice(size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    size_t lines = n / 16;
    *lo = lines * (size_t)t / (size_t)nt * 16;
    *hi = t == nt - 1 ? n : lines * (size_t)(t + 1) / (size_t)nt * 16;
}

/* Each thread first-touches its own slice, so pages are placed the way the
 * read pass will use them. */
static void bw_fill(void *arg, int t, int nt)
{
    bw_ctx *c = arg;
    size_t lo, hi;
    slice(c->n, t, nt, &lo, &hi);
    for (size_t i = lo; i < hi; i++) c->buf[i] = (float)(i & 1023) * 1e-3f;
}

/* Sixteen partial sums, as four chains of four lanes: a float sum may not be
 * reordered, so one accumulator would be one dependent chain; and written
 * this way (a lane loop of one SSE vector per chain) gcc keeps the sums in
 * registers instead of storing and reloading them for every 64 bytes. */
static float sum_floats(const float *p, size_t n)
{
    float acc[4][4] = { { 0 } };
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 4; j++) {
            acc[0][j] += p[i + j];
            acc[1][j] += p[i + 4 + j];
            acc[2][j] += p[i + 8 + j];
            acc[3][j] += p[i + 12 + j];
        }
    float s = 0.0f;
    for (int c = 0; c < 4; c++)
        for (int j = 0; j < 4; j++) s += acc[c][j];
    for (; i < n; i++) s += p[i];
    return s;
}

static void bw_read(void *arg, int t, int nt)
{
    bw_ctx *c = arg;
    size_t lo, hi;
    slice(c->n, t, nt, &lo, &hi);
    if (t < MAX_THREADS) c->sink[t] = sum_floats(c->buf + lo, hi - lo);
}

double bench_probe_bandwidth_gbps(size_t bytes, int passes)
{
    static bw_ctx c;   /* large sink array: keep it off the stack */
    c.n = bytes / sizeof(float);
    c.buf = moe_alloc(c.n * sizeof(float), "bandwidth probe buffer");
    if (!c.buf) return -1.0;
    moe_parallel_run(bw_fill, &c);
    moe_parallel_run(bw_read, &c);   /* one untimed pass: page tables, clocks */
    double times[64];
    if (passes > 64) passes = 64;
    if (passes < 1) passes = 1;
    for (int p = 0; p < passes; p++) {
        double t0 = bench_now_s();
        moe_parallel_run(bw_read, &c);
        times[p] = bench_now_s() - t0;
    }
    moe_free(c.buf);
    c.buf = NULL;
    return (double)(c.n * sizeof(float)) / bench_median(times, passes) / 1e9;
}

/* ---- peak fp32 multiply-add rate ----------------------------------------- */

/* One step of all chains at lane j; S is FMA_STEP or MULADD_STEP. */
#define FOR_EACH_CHAIN(S) S(0) S(1) S(2) S(3) S(4) S(5) S(6) S(7) S(8) S(9) S(10) S(11)
#define FMA_STEP(c) acc[c][j] = fmaf(acc[c][j], m, a);
#define MULADD_STEP(c) acc[c][j] = acc[c][j] * m + a;

/* acc[CHAINS][W]: gcc vectorises the lane loop into one W-wide vector per
 * chain and keeps all chains in registers across the reps loop. With
 * m < 1 the values settle at a/(1-m) = 1: no overflow, no denormals. */
#define PEAK_KERNEL(NAME, W, STEP)                                      \
    static float NAME(long reps, float m, float a)                      \
    {                                                                   \
        float acc[CHAINS][W];                                           \
        for (int c = 0; c < CHAINS; c++)                                \
            for (int j = 0; j < W; j++) acc[c][j] = (float)(c + j);     \
        for (long r = 0; r < reps; r++)                                 \
            for (int j = 0; j < W; j++) { FOR_EACH_CHAIN(STEP) }        \
        float s = 0.0f;                                                 \
        for (int c = 0; c < CHAINS; c++)                                \
            for (int j = 0; j < W; j++) s += acc[c][j];                 \
        return s;                                                       \
    }

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f,fma"))) PEAK_KERNEL(peak_avx512, 16, FMA_STEP)
__attribute__((target("avx2,fma"))) PEAK_KERNEL(peak_avx2, 8, FMA_STEP)
#endif
PEAK_KERNEL(peak_baseline, 4, MULADD_STEP)

typedef float (*peak_fn)(long reps, float m, float a);

typedef struct {
    peak_fn fn;
    long reps;
    int team;                    /* threads that ran, as the pool reports */
    float sink[MAX_THREADS];
} peak_ctx;

static void peak_thread(void *arg, int t, int nt)
{
    peak_ctx *c = arg;
    if (t == 0) c->team = nt;
    float s = c->fn(c->reps, 0.9999f, 1e-4f);
    if (t < MAX_THREADS) c->sink[t] = s;
}

static double peak_run_s(peak_ctx *c)
{
    double t0 = bench_now_s();
    moe_parallel_run(peak_thread, c);
    return bench_now_s() - t0;
}

/* Operations a second (in 1e9) of fn over all threads, best of a few runs;
 * ops_per_rep: what one thread does in one rep. */
static double peak_rate(peak_fn fn, double ops_per_rep)
{
    static peak_ctx c;
    c.fn = fn;
    /* Grow the run until it lasts 50 ms, so start-up costs vanish. */
    c.reps = 1 << 14;
    double t = peak_run_s(&c);
    while (t < 0.05) {
        c.reps *= 2;
        t = peak_run_s(&c);
    }
    double best = t;
    for (int i = 0; i < 5; i++) {
        t = peak_run_s(&c);
        if (t < best) best = t;
    }
    return ops_per_rep * (double)c.reps * c.team / best / 1e9;
}

double bench_probe_peak_gflops(const char *isa, const char **variant)
{
    peak_fn fn = peak_baseline;
    int width = 4;
    *variant = "baseline SSE mul+add";
#if defined(__x86_64__) && defined(__GNUC__)
    /* by prefix: "avx512vnni" adds int8 dot products, not fp32 rate */
    if (isa && strncmp(isa, "avx512", 6) == 0) {
        fn = peak_avx512;
        width = 16;
        *variant = "AVX-512 FMA";
    } else if (isa && strncmp(isa, "avx2", 4) == 0) {
        fn = peak_avx2;
        width = 8;
        *variant = "AVX2 FMA";
    }
#endif
    return peak_rate(fn, 2.0 * CHAINS * width);
}

#if defined(__x86_64__) && defined(__GNUC__)
static float peak_vnni(long reps, float m, float a)
{
    (void)m, (void)a;
    return (float)moe_avx512vnni_dot_peak(reps);
}
#endif

double bench_probe_peak_i8_gops(const char *isa, const char **variant)
{
    *variant = "none";
#if defined(__x86_64__) && defined(__GNUC__)
    if (isa && strcmp(isa, "avx512vnni") == 0 && moe_kernels_by_name("avx512vnni")) {
        *variant = "AVX-512 VNNI vpdpbusd";
        /* 2 operations (multiply, add) × 64 byte pairs an instruction */
        return peak_rate(peak_vnni, 2.0 * 64 * MOE_AVX512VNNI_PEAK_CHAINS);
    }
#endif
    return 0.0;
}
