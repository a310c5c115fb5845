/* tools/bench_layer.c — `moe bench-layer`: the SwitchGLU layer, fused and
 * unfused, on synthetic experts, against this machine's floors.
 *
 * Each case (shape × dtype) builds one layer expert by expert from a
 * one-expert scratch buffer of seeded random weights (a whole stacked copy
 * of the 128-expert f32 case would be another 9.7 GB), then times the same
 * layer fused and unfused, switching in place with moe_switchglu_set_fused.
 * The two variants are timed in alternating blocks (U F | F U | U F ...),
 * so drift in the machine (clock, neighbours) hits both alike, and the
 * median of all samples of a variant is reported. Switching costs a pass
 * over the weights (about 1 s for 9 GB), paid between blocks, not timed.
 *
 * Each timed iteration takes the next of ROUTINGS seeded routings: with one
 * routing repeated, a decode step would read the same 8 experts every time
 * and, for small experts, find them in L3 — a speed no real decode sees,
 * since every layer and step routes elsewhere.
 *
 * Floors: bytes = the distinct experts a routing uses × their bytes, plus
 * activations; flops = 2·T·k·3·D·I. Bandwidth is probed right after each
 * case is measured (its neighbours on a shared machine come and go within
 * seconds, so a probe per shape group, minutes earlier, was seen to bound
 * a case at half what it then reached). Peak compute is probed at start and
 * before each shape group, keeping the highest, since a busy neighbour can
 * only lower it; with the avx512vnni set, so is the int8 dot-product
 * (vpdpbusd) peak, printed beside it as the yardstick of the -a8 rows.
 *
 * With --device cuda the layer lives on the GPU (moe_switchglu_config.
 * device): the same weights, the same kernels a model there runs, fused and
 * unfused over the same bytes. A GPU call returns before its work is done,
 * so a block there is timed whole (moe_switchglu_time: the calls queued
 * back to back and waited for once) and its mean is one sample; on the CPU
 * each forward is a sample. The bandwidth floor there is the GPU's
 * (moe_device_bandwidth, probed after each case as on the CPU); there is no
 * compute floor unless --peak-gflops gives the GPU's peak, and no -a8 row:
 * the CUDA backend runs float activations, so one would be its q4 or q8
 * row again under another name.
 * See bench/RESULTS.md. */
#include "bench_layer.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_probe.h"
#include "cli_common.h"
#include "core/memory.h"
#include "moe/device.h"
#include "moe/runtime.h"
#include "moe/switchglu.h"
#include "quant/dtype.h"

/* ---- the cases ----------------------------------------------------------- */

typedef struct {
    const char *name;
    int tokens, dim, experts, hidden, top_k;
} shape_def;

static const shape_def SHAPES[] = {
    { "decode-4096", 1, 4096, 128, 1536, 8 },
    { "prefill-1024", 512, 1024, 16, 2048, 2 },
    { "olmoe-decode", 1, 2048, 64, 1024, 8 },
    { "olmoe-prefill", 2048, 2048, 64, 1024, 8 },
    /* Qwen3-30B-A3B's expert layer */
    { "qwen3-decode", 1, 2048, 128, 768, 8 },
    { "qwen3-prefill", 2048, 2048, 128, 768, 8 },
};

/* bits 0: float weights of `dtype`; 4/8: MLX affine codes with scales and
 * biases of `dtype`. int8: the layer's activation mode for quantized weights
 * (a moe_act_mode: the -a8 rows int8, the -a8x2 rows int8 with a residual
 * digit; exact float activations otherwise). */
typedef struct {
    const char *name;
    moe_dtype dtype;
    int bits;
    int int8;
} dtype_def;

static const dtype_def DTYPES[] = {
    { "f32", MOE_DTYPE_F32, 0, 0 },
    { "bf16", MOE_DTYPE_BF16, 0, 0 },
    { "q4", MOE_DTYPE_BF16, 4, 0 },
    { "q8", MOE_DTYPE_BF16, 8, 0 },
    { "q4-a8", MOE_DTYPE_BF16, 4, 1 },
    { "q8-a8", MOE_DTYPE_BF16, 8, 1 },
    { "q4-a8x2", MOE_DTYPE_BF16, 4, 2 },
    { "q8-a8x2", MOE_DTYPE_BF16, 8, 2 },
};

enum {
    NSHAPES = sizeof SHAPES / sizeof SHAPES[0],
    NDTYPES = sizeof DTYPES / sizeof DTYPES[0],
    GROUP = 64,          /* quantization group size */
    ROUTINGS = 8,        /* routings cycled through by the timed iterations */
    ROUNDS_QUICK = 3,    /* timed blocks per variant with --quick */
    ROUNDS_FULL = 7,     /* and without: the machine's speed drifts over a
                          * second or so, and more, shorter blocks spread that
                          * drift over both variants more evenly */
    MAX_ITERS = 200,     /* per block, when chosen automatically */
    MAX_ITERS_GPU = 2000, /* on a GPU, where a block is one sample */
    UNFUSED = 0,
    FUSED = 1,
};

static const size_t PROBE_BYTES = (size_t)1 << 30;

/* ---- options -------------------------------------------------------------- */

typedef struct {
    int quick, json;
    int threads;          /* 0: the library's default */
    int iters;            /* timed iterations per block; 0: chosen from a warm-up */
    const char *isa;      /* NULL: the library's choice */
    uint64_t seed;
    double peak_gflops;   /* 0: measure (on the CPU) */
    unsigned shapes, dtypes;   /* bit masks of SHAPES, DTYPES; 0: default */
    int device;           /* MOE_DEVICE_CPU or MOE_DEVICE_CUDA */
} bench_opts;

void bench_layer_usage(FILE *f)
{
    fprintf(f,
        "usage: moe bench-layer [options]\n"
        "Benchmarks the SwitchGLU layer, fused and unfused, on seeded random experts\n"
        "and routing, against measured memory-bandwidth and compute floors.\n"
        "\n"
        "  --quick            a subset with fewer iterations (under a minute):\n"
        "                     olmoe-decode and prefill-1024, bf16, q4 and q4-a8\n"
        "  --json             one JSON object per line per case and variant\n"
        "  --shape NAME[,..]  decode-4096, prefill-1024, olmoe-decode, olmoe-prefill,\n"
        "                     qwen3-decode, qwen3-prefill (Qwen3-30B-A3B: dim 2048,\n"
        "                     128 experts of 768, top 8)\n"
        "                     (repeatable; default all)\n"
        "  --dtype NAME[,..]  f32, bf16, q4, q8, q4-a8, q8-a8, q4-a8x2, q8-a8x2 (-a8: int8\n"
        "                     activations, -a8x2: with a residual digit; repeatable;\n"
        "                     default all)\n"
        "  --device NAME      cpu (default) or cuda: where the layer lives and runs;\n"
        "                     on cuda the floor is the GPU's bandwidth (no compute\n"
        "                     floor without --peak-gflops) and -a8 rows are not run\n"
        "                     (the GPU runs float activations)\n"
        "  --threads N        worker threads (default: one per physical core)\n"
        "  --iters N          timed iterations per block (default: from a warm-up)\n"
        "  --isa NAME         CPU kernel set (moe_cpu_select_isa: avx512vnni, avx512,\n"
        "                     avxvnni, avx2, portable; default: the best this CPU runs)\n"
        "  --seed N           seed of weights, inputs and routing (default 1)\n"
        "  --peak-gflops N    fp32 peak for the compute floor (default: measured on the\n"
        "                     CPU; none on cuda)\n"
        "  --help             this text\n");
}

static int bad_option(const char *fmt, const char *what)
{
    fprintf(stderr, "moe bench-layer: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(see moe bench-layer --help)\n");
    return 2;
}

/* Whole-string parses: "12x", "", "-3" for an unsigned are errors. */
static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-' || *s == '+') return 0;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end) return 0;
    *out = (uint64_t)v;
    return 1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    uint64_t v;
    if (!parse_u64(s, &v) || v < (uint64_t)lo || v > (uint64_t)hi) return 0;
    *out = (int)v;
    return 1;
}

static int parse_positive_double(const char *s, double *out)
{
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v <= 0) return 0;
    *out = v;
    return 1;
}

/* Index of `name` among `count` names spaced `stride` bytes apart; -1 if none. */
static int find_name(const char *name, size_t len, const void *table, size_t stride, int count)
{
    for (int i = 0; i < count; i++) {
        const char *n = *(const char *const *)((const char *)table + (size_t)i * stride);
        if (strlen(n) == len && strncmp(n, name, len) == 0) return i;
    }
    return -1;
}

/* Adds each name of a comma list to *mask; 2 (after a message) on an
 * unknown or empty name. */
static int add_names(const char *list, const void *table, size_t stride, int count,
                     unsigned *mask, const char *what)
{
    const char *p = list;
    for (;;) {
        size_t len = strcspn(p, ",");
        int i = find_name(p, len, table, stride, count);
        if (i < 0) {
            fprintf(stderr, "moe bench-layer: unknown %s '%.*s' in '%s'\n(see moe bench-layer --help)\n",
                    what, (int)len, p, list);
            return 2;
        }
        *mask |= 1u << i;
        if (p[len] == '\0') return 0;
        p += len + 1;
    }
}

/* One option `flag` with its value v; 0, or 2 after a message. */
static int parse_valued(bench_opts *o, const char *flag, const char *v)
{
    if (!strcmp(flag, "--shape"))
        return add_names(v, SHAPES, sizeof SHAPES[0], NSHAPES, &o->shapes, "shape");
    if (!strcmp(flag, "--dtype"))
        return add_names(v, DTYPES, sizeof DTYPES[0], NDTYPES, &o->dtypes, "dtype");
    if (!strcmp(flag, "--isa")) {   /* checked by moe_cpu_select_isa, which knows the sets */
        o->isa = v;
        return 0;
    }
    if (!strcmp(flag, "--device")) {   /* one device: auto would leave the reader guessing */
        o->device = !strcmp(v, "cpu") ? MOE_DEVICE_CPU : !strcmp(v, "cuda") ? MOE_DEVICE_CUDA : -2;
        if (o->device != -2) return 0;
        fprintf(stderr, "moe bench-layer: unknown device '%s' (choose cpu or cuda)\n(see moe bench-layer --help)\n", v);
        return 2;
    }
    int seed = !strcmp(flag, "--seed"), peak = !strcmp(flag, "--peak-gflops");
    int ok = !strcmp(flag, "--threads") ? parse_int(v, 1, 1 << 20, &o->threads)
           : !strcmp(flag, "--iters") ? parse_int(v, 1, 1000000, &o->iters)
           : seed ? parse_u64(v, &o->seed)
           : parse_positive_double(v, &o->peak_gflops);
    if (!ok) {
        fprintf(stderr, "moe bench-layer: %s needs %s, not '%s'\n(see moe bench-layer --help)\n", flag,
                seed ? "a whole number >= 0" : peak ? "a number > 0" : "a whole number >= 1", v);
        return 2;
    }
    return 0;
}

static int takes_value(const char *flag)
{
    static const char *const valued[] = { "--shape", "--dtype", "--threads", "--iters",
                                          "--isa", "--seed", "--peak-gflops", "--device" };
    for (size_t i = 0; i < sizeof valued / sizeof valued[0]; i++)
        if (!strcmp(flag, valued[i])) return 1;
    return 0;
}

/* 0: parsed; 2: bad option (message printed); -1: --help. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return -1;
        if (!strcmp(a, "--quick")) { o->quick = 1; continue; }
        if (!strcmp(a, "--json")) { o->json = 1; continue; }
        if (!takes_value(a)) return bad_option("unknown option '%s'", a);
        if (i + 1 >= argc) return bad_option("option '%s' needs a value", a);
        int rc = parse_valued(o, a, argv[++i]);
        if (rc) return rc;
    }
    return 0;
}

/* ---- random numbers: splitmix64, enough for synthetic data ---------------- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-r, r). */
static float rng_sym(uint64_t *s, float r)
{
    float u = (float)(rng_next(s) >> 40) * 0x1p-24f;
    return (2.0f * u - 1.0f) * r;
}

/* An independent stream per (purpose, a, b): a case's data depends only on
 * the seed and the case, not on which other cases ran before it. */
static uint64_t rng_stream(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b)
{
    uint64_t s = seed;
    s = rng_next(&s) ^ purpose;
    s = rng_next(&s) ^ a;
    s = rng_next(&s) ^ b;
    return rng_next(&s);
}

/* ---- routing and activations --------------------------------------------- */

typedef struct {
    int tokens, top_k;
    float *x, *y;                 /* [T, D] */
    int32_t *idx;                 /* [ROUTINGS][T, k] */
    float *scores;                /* [ROUTINGS][T, k] */
    double distinct;              /* distinct experts per routing, mean */
} routing;

static void routing_free(routing *r)
{
    moe_free(r->x);
    moe_free(r->y);
    moe_free(r->idx);
    moe_free(r->scores);
    memset(r, 0, sizeof *r);
}

/* One token: k distinct experts by a partial Fisher–Yates shuffle of `perm`,
 * and positive scores that sum to 1. */
static void route_token(uint64_t *rng, int experts, int k, int32_t *perm, int32_t *idx, float *sc)
{
    float sum = 0.0f;
    for (int j = 0; j < k; j++) {
        int pick = j + (int)(rng_next(rng) % (uint64_t)(experts - j));
        int32_t t = perm[j];
        perm[j] = perm[pick];
        perm[pick] = t;
        idx[j] = perm[j];
        sc[j] = 0.05f + rng_sym(rng, 0.5f) + 0.5f;
        sum += sc[j];
    }
    for (int j = 0; j < k; j++) sc[j] /= sum;
}

static int count_distinct(const int32_t *idx, int pairs, int experts, unsigned char *seen)
{
    memset(seen, 0, (size_t)experts);
    int n = 0;
    for (int p = 0; p < pairs; p++)
        if (!seen[idx[p]]) { seen[idx[p]] = 1; n++; }
    return n;
}

static moe_status routing_make(const shape_def *s, uint64_t seed, int shape_i, routing *r)
{
    size_t td = (size_t)s->tokens * s->dim, pairs = (size_t)s->tokens * s->top_k;
    memset(r, 0, sizeof *r);
    r->tokens = s->tokens;
    r->top_k = s->top_k;
    r->x = moe_alloc(td * sizeof(float), "bench input x");
    r->y = moe_alloc(td * sizeof(float), "bench output y");
    r->idx = moe_alloc(ROUTINGS * pairs * sizeof(int32_t), "bench routing indices");
    r->scores = moe_alloc(ROUTINGS * pairs * sizeof(float), "bench routing scores");
    int32_t *perm = moe_alloc((size_t)s->experts * sizeof(int32_t), "bench expert permutation");
    unsigned char *seen = moe_alloc((size_t)s->experts, "bench expert flags");
    if (!r->x || !r->y || !r->idx || !r->scores || !perm || !seen) {
        routing_free(r);
        moe_free(perm);
        moe_free(seen);
        return MOE_ERR_NOMEM;
    }
    uint64_t rng = rng_stream(seed, 1, (uint64_t)shape_i, 0);
    for (size_t i = 0; i < td; i++) r->x[i] = rng_sym(&rng, 1.0f);
    for (int e = 0; e < s->experts; e++) perm[e] = e;
    long total = 0;
    for (int q = 0; q < ROUTINGS; q++) {
        int32_t *idx = r->idx + (size_t)q * pairs;
        float *sc = r->scores + (size_t)q * pairs;
        for (int t = 0; t < s->tokens; t++)
            route_token(&rng, s->experts, s->top_k, perm, idx + (size_t)t * s->top_k, sc + (size_t)t * s->top_k);
        total += count_distinct(idx, (int)pairs, s->experts, seen);
    }
    r->distinct = (double)total / ROUTINGS;
    moe_free(perm);
    moe_free(seen);
    return MOE_OK;
}

/* ---- synthetic experts ------------------------------------------------------ */

/* Bytes of one projection [rows, cols] of one expert in dtype d. */
static size_t proj_bytes(const dtype_def *d, int rows, int cols)
{
    if (d->bits == 0) return (size_t)rows * cols * moe_dtype_size(d->dtype);
    size_t codes = (size_t)cols * d->bits / 8;
    size_t groups = (size_t)cols / GROUP;
    return (size_t)rows * (codes + 2 * groups * moe_dtype_size(d->dtype));
}

/* gate + up + down of one expert. */
static size_t expert_bytes(const shape_def *s, const dtype_def *d)
{
    return 2 * proj_bytes(d, s->hidden, s->dim) + proj_bytes(d, s->dim, s->hidden);
}

/* One projection of one expert, reused for every expert of a case. */
typedef struct {
    int rows, cols;
    moe_expert_weights w;   /* format, pointing at the buffers below */
    void *weight, *scales, *biases;
} proj_scratch;

static void proj_free(proj_scratch *p)
{
    moe_free(p->weight);
    moe_free(p->scales);
    moe_free(p->biases);
    memset(p, 0, sizeof *p);
}

static moe_status proj_alloc(proj_scratch *p, const dtype_def *d, int rows, int cols)
{
    memset(p, 0, sizeof *p);
    p->rows = rows;
    p->cols = cols;
    size_t n = (size_t)rows * cols;
    size_t wbytes = d->bits ? n * d->bits / 8 : n * moe_dtype_size(d->dtype);
    size_t sbytes = d->bits ? (size_t)rows * (cols / GROUP) * moe_dtype_size(d->dtype) : 0;
    p->weight = moe_alloc(wbytes, "bench expert scratch");
    if (sbytes) {
        p->scales = moe_alloc(sbytes, "bench expert scales");
        p->biases = moe_alloc(sbytes, "bench expert biases");
    }
    if (!p->weight || (sbytes && (!p->scales || !p->biases))) {
        proj_free(p);
        return MOE_ERR_NOMEM;
    }
    p->w = (moe_expert_weights){ d->dtype, d->bits, d->bits ? GROUP : 0, p->weight, p->scales, p->biases };
    return MOE_OK;
}

/* Float weights uniform in ±1/sqrt(cols), as a Kaiming-like init gives. */
static void fill_float(proj_scratch *p, uint64_t *rng)
{
    size_t n = (size_t)p->rows * p->cols;
    float r = 1.0f / sqrtf((float)p->cols);
    if (p->w.dtype == MOE_DTYPE_F32) {
        float *w = p->weight;
        for (size_t i = 0; i < n; i++) w[i] = rng_sym(rng, r);
    } else {
        uint16_t *w = p->weight;
        for (size_t i = 0; i < n; i++) w[i] = moe_f32_to_bf16(rng_sym(rng, r));
    }
}

/* Random codes and BF16 scales/biases: the kernels do the same work for any
 * bit pattern, so there is no need to run a quantizer. */
static void fill_quant(proj_scratch *p, uint64_t *rng)
{
    size_t words = (size_t)p->rows * p->cols * p->w.bits / 32;
    size_t groups = (size_t)p->rows * (p->cols / GROUP);
    float sr = 1.0f / (sqrtf((float)p->cols) * 8.0f);
    uint32_t *codes = p->weight;
    uint16_t *scales = p->scales, *biases = p->biases;
    for (size_t i = 0; i < words; i += 2) {
        uint64_t v = rng_next(rng);
        codes[i] = (uint32_t)v;
        if (i + 1 < words) codes[i + 1] = (uint32_t)(v >> 32);
    }
    for (size_t g = 0; g < groups; g++) {
        scales[g] = moe_f32_to_bf16(rng_sym(rng, sr));
        biases[g] = moe_f32_to_bf16(rng_sym(rng, sr));
    }
}

static void proj_fill(proj_scratch *p, uint64_t *rng)
{
    if (p->w.bits) fill_quant(p, rng);
    else fill_float(p, rng);
}

/* The case's layer on `device`, filled expert by expert from one expert of
 * scratch. */
static moe_status build_layer(const shape_def *s, const dtype_def *d, int device, uint64_t seed, int shape_i,
                              int dtype_i, moe_switchglu **out)
{
    proj_scratch gate, up, down;
    moe_status st;
    *out = NULL;
    if ((st = proj_alloc(&gate, d, s->hidden, s->dim)) != MOE_OK) return st;
    if ((st = proj_alloc(&up, d, s->hidden, s->dim)) != MOE_OK ||
        (st = proj_alloc(&down, d, s->dim, s->hidden)) != MOE_OK) {
        proj_free(&gate);
        proj_free(&up);
        return st;
    }
    moe_switchglu_config cfg = moe_switchglu_default_config(s->experts, s->dim, s->hidden);
    cfg.int8_activations = d->int8;
    cfg.device = device;
    st = moe_switchglu_create(&cfg, &gate.w, &up.w, &down.w, out);
    for (int e = 0; e < s->experts && st == MOE_OK; e++) {
        if (e % 4 == 0) cli_progress("building %s %s: expert %d/%d", s->name, d->name, e, s->experts);
        uint64_t rng = rng_stream(seed, 2, (uint64_t)shape_i * NDTYPES + (uint64_t)dtype_i, (uint64_t)e);
        proj_fill(&gate, &rng);
        proj_fill(&up, &rng);
        proj_fill(&down, &rng);
        st = moe_switchglu_load_expert(*out, e, &gate.w, &up.w, &down.w);
    }
    if (st != MOE_OK) {
        moe_switchglu_free(*out);
        *out = NULL;
    }
    proj_free(&gate);
    proj_free(&up);
    proj_free(&down);
    return st;
}

/* ---- timing -------------------------------------------------------------- */

/* One variant's timing state: samples and which routing comes next. */
typedef struct {
    double *ms;
    int count;
    int next_routing;
    size_t weight_bytes;
} variant_times;

/* One forward with the variant's next routing, in ms. */
static moe_status timed_forward(moe_switchglu *layer, const routing *r, variant_times *v, double *ms)
{
    size_t pairs = (size_t)r->tokens * r->top_k;
    size_t q = (size_t)(v->next_routing++ % ROUTINGS);
    double s = 0;
    moe_status st = moe_switchglu_time(layer, r->x, r->tokens, r->idx + q * pairs, r->scores + q * pairs, r->top_k,
                                       1, 1, r->y, &s);
    *ms = s * 1e3;
    return st;
}

/* Whether a block is timed whole (a GPU: its calls return before their
 * work is done) rather than forward by forward. */
static int timed_whole(const moe_switchglu *layer) { return moe_switchglu_device(layer) != MOE_DEVICE_CPU; }

/* Runs `iters` forwards of one variant, recording them when `record`: each
 * forward a sample, or on a GPU the block's mean one sample, all ROUTINGS
 * in turn. *last_ms: the last forward's time, or the block's mean. */
static moe_status run_block(moe_switchglu *layer, const routing *r, variant_times *v, int fused,
                            int iters, int record, double *last_ms)
{
    moe_status st = moe_switchglu_set_fused(layer, fused);
    if (st != MOE_OK) return st;
    v->weight_bytes = moe_switchglu_weight_bytes(layer);
    if (timed_whole(layer)) {
        double s = 0;
        st = moe_switchglu_time(layer, r->x, r->tokens, r->idx, r->scores, r->top_k, ROUTINGS, iters, r->y, &s);
        *last_ms = s * 1e3;
        if (record && st == MOE_OK) v->ms[v->count++] = *last_ms;
        return st;
    }
    for (int i = 0; i < iters && st == MOE_OK; i++) {
        st = timed_forward(layer, r, v, last_ms);
        if (record) v->ms[v->count++] = *last_ms;
    }
    return st;
}

typedef struct {
    double ms[2];           /* median, [UNFUSED] and [FUSED] */
    size_t bytes[2];        /* moe_switchglu_weight_bytes per variant */
    int rounds;             /* timed blocks per variant */
    int iters;              /* timed iterations per block */
} timing;

/* Iterations per block: enough for ~target seconds, judged from the slower
 * variant's last warm-up forward, at most max_iters. */
static int choose_iters(const bench_opts *o, double warm_ms, int max_iters)
{
    if (o->iters) return o->iters;
    double target_ms = o->quick ? 60.0 : 150.0;
    int min_iters = 2;
    double n = target_ms / (warm_ms > 1e-3 ? warm_ms : 1e-3);
    if (n > max_iters) n = max_iters;
    return n < min_iters ? min_iters : (int)n;
}

static moe_status measure(moe_switchglu *layer, const routing *r, const bench_opts *o, timing *t)
{
    variant_times v[2] = { { 0 }, { 0 } };
    double warm[2] = { 0, 0 };
    int warmups = o->quick ? 1 : 2, whole = timed_whole(layer);
    moe_status st = MOE_OK;
    /* warm-up: fused (as built), then unfused — the first timed block's; on
     * a GPU twice, judged by the second (the first grows the workspace) */
    for (int pass = 0; pass < (whole ? 2 : 1) && st == MOE_OK; pass++)
        if ((st = run_block(layer, r, &v[FUSED], FUSED, warmups, 0, &warm[FUSED])) == MOE_OK)
            st = run_block(layer, r, &v[UNFUSED], UNFUSED, warmups, 0, &warm[UNFUSED]);
    if (st != MOE_OK) return st;
    t->iters = choose_iters(o, warm[FUSED] > warm[UNFUSED] ? warm[FUSED] : warm[UNFUSED],
                            whole ? MAX_ITERS_GPU : MAX_ITERS);
    t->rounds = o->quick ? ROUNDS_QUICK : ROUNDS_FULL;
    for (int k = 0; k < 2; k++) {
        v[k].ms = moe_alloc(sizeof(double) * (size_t)t->rounds * (size_t)t->iters, "bench samples");
        v[k].next_routing = 0;
        if (!v[k].ms) st = MOE_ERR_NOMEM;
    }
    /* U F | F U | U F: each switch of layout happens between two blocks */
    for (int round = 0; round < t->rounds && st == MOE_OK; round++) {
        int first = round % 2 ? FUSED : UNFUSED;
        st = run_block(layer, r, &v[first], first, t->iters, 1, &warm[first]);
        if (st == MOE_OK) st = run_block(layer, r, &v[!first], !first, t->iters, 1, &warm[!first]);
    }
    for (int k = 0; k < 2; k++) {
        if (st == MOE_OK) t->ms[k] = bench_median(v[k].ms, v[k].count);
        t->bytes[k] = v[k].weight_bytes;
        moe_free(v[k].ms);
    }
    return st;
}

/* ---- floors and reporting --------------------------------------------------- */

typedef struct {
    int device;                /* MOE_DEVICE_CPU or MOE_DEVICE_CUDA */
    const char *isa;
    int threads;
    double peak_gflops;        /* 0: none (a GPU without --peak-gflops) */
    const char *peak_source;   /* "measured: ..." or "given" */
    double peak_i8_gops;       /* int8 dot products (-a8 rows' kernels); 0: none */
    const char *peak_i8_variant;
} machine;

typedef struct {
    const shape_def *s;
    const dtype_def *d;
    double distinct;           /* experts a routing touches, mean */
    double bytes, flops;       /* floors' numerators */
    double bw_gbps;            /* probed right after this case ran */
    timing t;
    size_t peak_rss;
} case_result;

static void case_floors(case_result *c)
{
    const shape_def *s = c->s;
    double act = (double)s->tokens * s->dim * 4 * 2             /* x read, y written */
               + (double)s->tokens * s->top_k * (4 + 4);        /* indices, scores */
    c->bytes = c->distinct * (double)expert_bytes(s, c->d) + act;
    c->flops = 2.0 * s->tokens * s->top_k * 3.0 * s->dim * s->hidden;
}

static double gbps(const case_result *c, double ms) { return c->bytes / (ms * 1e-3) / 1e9; }
static double gflops(const case_result *c, double ms) { return c->flops / (ms * 1e-3) / 1e9; }
static double mem_floor_ms(const case_result *c) { return c->bytes / (c->bw_gbps * 1e9) * 1e3; }
/* 0 without a peak: no compute floor */
static double cpu_floor_ms(const case_result *c, const machine *m)
{
    return m->peak_gflops > 0 ? c->flops / (m->peak_gflops * 1e9) * 1e3 : 0;
}

static int on_gpu(const machine *m) { return m->device != MOE_DEVICE_CPU; }

static double floor_ms(const case_result *c, const machine *m)
{
    double a = mem_floor_ms(c), b = cpu_floor_ms(c, m);
    return a > b ? a : b;
}

/* A number written with `decimals` decimals, as the table shows it (json-c
 * would otherwise print 17 significant digits: 4.4934000000000003). */
static json_object *jnum(double v, int decimals)
{
    char text[64];
    snprintf(text, sizeof text, "%.*f", decimals, v);
    return json_object_new_double_s(v, text);
}

static void print_json(const case_result *c, const machine *m, int fused)
{
    const shape_def *s = c->s;
    double ms = c->t.ms[fused];
    json_object *o = json_object_new_object();
    json_object_object_add(o, "shape", json_object_new_string(s->name));
    json_object_object_add(o, "device", json_object_new_string(on_gpu(m) ? "cuda" : "cpu"));
    json_object_object_add(o, "tokens", json_object_new_int(s->tokens));
    json_object_object_add(o, "dim", json_object_new_int(s->dim));
    json_object_object_add(o, "hidden", json_object_new_int(s->hidden));
    json_object_object_add(o, "experts", json_object_new_int(s->experts));
    json_object_object_add(o, "top_k", json_object_new_int(s->top_k));
    json_object_object_add(o, "dtype", json_object_new_string(c->d->name));
    json_object_object_add(o, "fused", json_object_new_boolean(fused));
    json_object_object_add(o, "median_ms", jnum(ms, 4));
    json_object_object_add(o, "rounds", json_object_new_int(c->t.rounds));
    json_object_object_add(o, "iters", json_object_new_int(c->t.rounds * c->t.iters));
    json_object_object_add(o, "weight_bytes", json_object_new_int64((int64_t)c->t.bytes[fused]));
    json_object_object_add(o, "peak_rss_bytes", json_object_new_int64((int64_t)c->peak_rss));
    json_object_object_add(o, "speedup", jnum(c->t.ms[UNFUSED] / c->t.ms[FUSED], 3));
    json_object_object_add(o, "distinct_experts", jnum(c->distinct, 2));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)c->bytes));
    json_object_object_add(o, "flops", json_object_new_int64((int64_t)c->flops));
    json_object_object_add(o, "gbps", jnum(gbps(c, ms), 2));
    json_object_object_add(o, "gflops", jnum(gflops(c, ms), 2));
    json_object_object_add(o, "bandwidth_gbps", jnum(c->bw_gbps, 2));
    /* null: no compute floor (a GPU without --peak-gflops) */
    json_object_object_add(o, "peak_gflops", m->peak_gflops > 0 ? jnum(m->peak_gflops, 1) : NULL);
    json_object_object_add(o, "peak_source", json_object_new_string(m->peak_source));
    if (!on_gpu(m)) json_object_object_add(o, "peak_i8_gops", jnum(m->peak_i8_gops, 1));
    json_object_object_add(o, "floor_ms", jnum(floor_ms(c, m), 4));
    if (!on_gpu(m)) {   /* the host's kernels: what ran the layer */
        json_object_object_add(o, "isa", json_object_new_string(m->isa));
        json_object_object_add(o, "threads", json_object_new_int(m->threads));
    }
    puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    fflush(stdout);
}

static void print_gpu_header(const machine *m, const bench_opts *o)
{
    printf("moe bench-layer: device cuda (GPU 0), seed %llu%s\n", (unsigned long long)o->seed,
           o->quick ? ", quick" : "");
    if (m->peak_gflops > 0) printf("peak fp32 %s, %.1f GFLOP/s\n", m->peak_source, m->peak_gflops);
    else printf("no compute floor: no GPU peak is measured (--peak-gflops N gives one)\n");
    printf("times: a block of calls queued back to back and waited for once, its mean one sample;\n"
           "the median of the blocks. -a8 rows are not run: the GPU runs float activations\n");
    printf("bw GB/s: GPU memory bandwidth, a streaming add over 1 GiB right after the case (median of passes)\n"
           "GB/s, GFLOP/s and %% columns are for the fused layer; floor = max(bytes/bw, flops/peak);\n"
           "%%floor = floor/fused time; bound: which floor is larger (mem or gpu), n/a without a peak\n");
}

static void print_table_header(const machine *m, const bench_opts *o)
{
    if (on_gpu(m)) {
        print_gpu_header(m, o);
        return;
    }
    printf("moe bench-layer: isa %s, %d threads, seed %llu%s\n", m->isa, m->threads,
           (unsigned long long)o->seed, o->quick ? ", quick" : "");
    printf("peak fp32 %s (probed at start and before each shape group)\n", m->peak_source);
    if (m->peak_i8_gops > 0)
        printf("peak int8 measured: %s probe, highest so far, %.1f GOP/s (a multiply-add is 2 ops;\n"
               "the -a8 rows' instruction; %%peak and floors stay fp32)\n", m->peak_i8_variant, m->peak_i8_gops);
    printf("bw GB/s: read bandwidth, 1 GiB probe right after the case (median of passes)\n"
           "GB/s, GFLOP/s and %% columns are for the fused layer; floor = max(bytes/bw, flops/peak);\n"
           "%%floor = floor/fused time; bound: which floor is larger (mem or cpu)\n");
}

static void print_group_header(const shape_def *s, const routing *r, const machine *m)
{
    printf("\n%s: T=%d D=%d E=%d I=%d k=%d; %.1f distinct experts a routing (mean of %d)", s->name, s->tokens,
           s->dim, s->experts, s->hidden, s->top_k, r->distinct, ROUTINGS);
    if (m->peak_gflops > 0) printf("; peak %.1f GFLOP/s", m->peak_gflops);
    if (m->peak_i8_gops > 0) printf(", int8 %.1f GOP/s", m->peak_i8_gops);
    printf("\n");
    printf("%-13s %-5s %10s %10s %7s %7s %7s %5s %8s %6s %9s %6s %-5s %9s %9s\n", "shape", "dtype",
           "fused ms", "unfused ms", "speedup", "GB/s", "bw GB/s", "%bw", "GFLOP/s", "%peak",
           "floor ms", "%floor", "bound", "weightMiB", "RSS MiB");
}

static void print_row(const case_result *c, const machine *m)
{
    double f = c->t.ms[FUSED], u = c->t.ms[UNFUSED];
    const char *bound = m->peak_gflops <= 0 ? "n/a" : mem_floor_ms(c) >= cpu_floor_ms(c, m) ? "mem"
                        : on_gpu(m) ? "gpu" : "cpu";
    char peak[16] = "n/a";
    if (m->peak_gflops > 0) snprintf(peak, sizeof peak, "%.1f", 100.0 * gflops(c, f) / m->peak_gflops);
    printf("%-13s %-5s %10.3f %10.3f %7.3f %7.1f %7.1f %5.1f %8.1f %6s %9.3f %6.1f %-5s %9.1f %9.1f\n",
           c->s->name, c->d->name, f, u, u / f, gbps(c, f), c->bw_gbps, 100.0 * gbps(c, f) / c->bw_gbps,
           gflops(c, f), peak, floor_ms(c, m), 100.0 * floor_ms(c, m) / f, bound,
           (double)c->t.bytes[FUSED] / 1048576.0, (double)c->peak_rss / 1048576.0);
    fflush(stdout);
}

/* ---- driver ---------------------------------------------------------------- */

static int moe_failed(void)
{
    cli_progress_done();
    fprintf(stderr, "moe bench-layer: %s\n", moe_last_error());
    return 1;
}

/* Builds, measures and reports one case; 0 or the exit status. */
static int run_case(const bench_opts *o, const machine *m, const routing *r, int si, int di)
{
    case_result c = { .s = &SHAPES[si], .d = &DTYPES[di], .distinct = r->distinct };
    static int rss_warned;
    if (moe_reset_peak_rss() != 0 && !rss_warned++)
        fprintf(stderr, "moe bench-layer: cannot reset the peak RSS; figures are process-wide peaks\n");
    moe_switchglu *layer;
    if (build_layer(c.s, c.d, o->device, o->seed, si, di, &layer) != MOE_OK) return moe_failed();
    cli_progress("measuring %s %s", c.s->name, c.d->name);
    moe_status st = measure(layer, r, o, &c.t);
    c.peak_rss = moe_peak_rss_bytes();
    moe_switchglu_free(layer);   /* first: the probe's 1 GiB must fit beside nothing */
    if (st != MOE_OK) return moe_failed();
    cli_progress("probing memory bandwidth after %s %s", c.s->name, c.d->name);
    int passes = o->quick ? 3 : 5;
    if (on_gpu(m)) {
        if (moe_device_bandwidth(MOE_DEVICE_CUDA, PROBE_BYTES, passes, &c.bw_gbps) != MOE_OK) return moe_failed();
    } else {
        c.bw_gbps = bench_probe_bandwidth_gbps(PROBE_BYTES, passes);
    }
    cli_progress_done();
    if (c.bw_gbps <= 0) return moe_failed();
    if (c.t.bytes[FUSED] != c.t.bytes[UNFUSED]) {
        fprintf(stderr, "moe bench-layer: error: %s %s holds %zu weight bytes fused but %zu unfused\n",
                c.s->name, c.d->name, c.t.bytes[FUSED], c.t.bytes[UNFUSED]);
        return 1;
    }
    case_floors(&c);
    if (o->json) {
        print_json(&c, m, FUSED);
        print_json(&c, m, UNFUSED);
    } else {
        print_row(&c, m);
    }
    return 0;
}

/* Whether case (shape si, dtype di) runs. Quick's default leaves out the
 * large shapes (decode-4096 alone is 9.7 GB in f32 and slow to build) and
 * keeps one float and one quantized dtype. */
static int selected(const bench_opts *o, int si, int di)
{
    unsigned quick_shapes = 1u << 1 | 1u << 2, quick_dtypes = 1u << 1 | 1u << 2 | 1u << 4;
    unsigned shapes = o->shapes ? o->shapes : o->quick ? quick_shapes : ~0u;
    unsigned dtypes = o->dtypes ? o->dtypes : o->quick ? quick_dtypes : ~0u;
    int runs_here = o->device == MOE_DEVICE_CPU || DTYPES[di].int8 == MOE_ACT_FLOAT;
    return (shapes >> si & 1) && (dtypes >> di & 1) && runs_here;
}

/* The -a8 dtypes asked for by name that a GPU leaves out, said once. */
static void note_skipped(const bench_opts *o)
{
    if (o->device == MOE_DEVICE_CPU) return;
    for (int di = 0; di < NDTYPES; di++)
        if ((o->dtypes >> di & 1) && DTYPES[di].int8 != MOE_ACT_FLOAT)
            fprintf(stderr, "moe bench-layer: %s is not run on cuda: the GPU runs float activations, so it would be "
                    "the %.2s row again\n", DTYPES[di].name, DTYPES[di].name);
}

/* Peak compute (fp32 unless given, and int8): kept at the highest probe
 * so far. */
static void probe_peak(const bench_opts *o, machine *m)
{
    static char source[96];
    const char *variant;
    if (o->device != MOE_DEVICE_CPU) {   /* the CPU's peaks bound nothing on a GPU */
        m->peak_gflops = o->peak_gflops;
        m->peak_source = o->peak_gflops > 0 ? "given by --peak-gflops" : "none";
        return;
    }
    cli_progress("measuring peak compute");
    double i8 = bench_probe_peak_i8_gops(m->isa, &m->peak_i8_variant);
    if (i8 > m->peak_i8_gops) m->peak_i8_gops = i8;
    if (o->peak_gflops > 0) {
        m->peak_gflops = o->peak_gflops;
        m->peak_source = "given by --peak-gflops";
        return;
    }
    double g = bench_probe_peak_gflops(m->isa, &variant);
    if (g > m->peak_gflops) m->peak_gflops = g;
    snprintf(source, sizeof source, "measured: %s probe, highest so far", variant);
    m->peak_source = source;
}

static int run_shape(const bench_opts *o, machine *m, int si)
{
    probe_peak(o, m);
    routing r;
    if (routing_make(&SHAPES[si], o->seed, si, &r) != MOE_OK) return moe_failed();
    cli_progress_done();
    if (!o->json) print_group_header(&SHAPES[si], &r, m);
    int rc = 0;
    for (int di = 0; di < NDTYPES && rc == 0; di++)
        if (selected(o, si, di)) rc = run_case(o, m, &r, si, di);
    routing_free(&r);
    return rc;
}

/* Threads and ISA first: both probes must run as the layer will. */
static int setup_machine(const bench_opts *o, machine *m)
{
    m->device = o->device;
    if (o->device == MOE_DEVICE_CUDA && moe_device_available(MOE_DEVICE_CUDA) != MOE_OK) {
        fprintf(stderr, "moe bench-layer: --device cuda is not available: %s; use --device cpu\n", moe_last_error());
        return 2;
    }
    if (o->threads && moe_set_num_threads(o->threads) != MOE_OK) return moe_failed();
    if (o->isa && moe_cpu_select_isa(o->isa) != MOE_OK) return moe_failed();
    m->isa = moe_cpu_isa();
    m->threads = moe_num_threads();
    probe_peak(o, m);
    return 0;
}

int bench_layer_main(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc < 0) {
        bench_layer_usage(stdout);
        return 0;
    }
    if (rc) return rc;
    cli_progress_set(!o.json && isatty(STDERR_FILENO));
    machine m = { 0 };
    if ((rc = setup_machine(&o, &m)) != 0) return rc;
    cli_progress_done();
    note_skipped(&o);
    if (!o.json) print_table_header(&m, &o);
    for (int si = 0; si < NSHAPES && rc == 0; si++) {
        int any = 0;
        for (int di = 0; di < NDTYPES; di++) any |= selected(&o, si, di);
        if (any) rc = run_shape(&o, &m, si);
    }
    return rc;
}
