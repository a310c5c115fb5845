/* tests/test_cuda_backend.c — the CUDA backend against the CPU backend and
 * the committed reference fixtures.
 *
 * Without CUDA in the build or a GPU in the machine every test reports
 * itself skipped (cmocka's skip(), and exit code 77, which ctest counts as
 * skipped), never passed. With one:
 *  - each operation of backend.h on random inputs at odd sizes against the
 *    CPU backend: the element-wise steps (embedding rows, split, clip, add,
 *    RoPE, the KV cache's f16 and 8-bit stores, in a captured step too)
 *    bit for bit; RMSNorm and the RoPE
 *    angles within an ulp or two; projections and the expert layer within
 *    float32 rounding of a float64 reference (2e-5 of the sum of |terms|)
 *    and of the CPU, or from 64 tokens (the tensor cores' bfloat16 inputs)
 *    within 4e-3 (a projection) and 1e-2 (the expert layer); attention
 *    within 1e-5 (decode with the cache split across blocks, prefill tiles
 *    of queries, GQA groups, long caches, and the fallback kernel's
 *    shapes), or from 64 queries of head_dim 64 or 128 (half precision on
 *    the tensor cores) within 4e-3, over float32, half and 8-bit caches
 *    (against the CPU's attention over the same 8-bit bytes); the router's
 *    choices equal;
 *  - fused and unfused gate-up give the same bits (bound: 0), and int8
 *    activation modes, a CPU matter, change nothing on the GPU;
 *  - the public expert layer made for the GPU (moe_switchglu_config.device)
 *    within the same tolerances of its CPU twin, fused and unfused the same
 *    bits, moe_switchglu_time giving its forward's output; the GPU's
 *    bandwidth probe a plausible number;
 *  - faults found on the device (a non-finite router logit, an expert index
 *    outside the layer) come back as errors naming them;
 *  - whole models: every fixture of tests/fixtures/olmoe and families
 *    against its transformers logits with the CPU's tolerances (float32
 *    accumulation), greedy continuations equal, chunked prefill (chunks of
 *    1, 4, 7) within 2e-5 of the single pass, one-token steps replayed as
 *    CUDA graphs the same bits as launched one by one, unfused the same
 *    bits; with an 8-bit cache, the CPU's Q8 rules (model_fixtures_q8). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "kernels/attention.h"
#include "kernels/norm_rope.h"
#include "moe/model.h"
#include "moe/runtime.h"
#include "quant/dtype.h"
#include "support/model_fixtures.h"
#include "support/testutil.h"

static moe_backend *gpu, *cpu;

/* From this many tokens the projections and the expert layer run on the
 * tensor cores (kernels/cuda/matmul.cu): activations and weights rounded to
 * bfloat16, products summed in float32. Each rounding is within 2^-9, so a
 * product within 2^-8 of its value: a projection is held to 4e-3 of its
 * sum of |terms|, the expert layer (two projections, the second over the
 * first's rounded results) to 1e-2 of its error bound. */
#define MMA_MIN_TOKENS 64
#define BF16_LINEAR_TOL 4e-3
#define BF16_EXPERTS_TOL 1e-2
/* Attention of as many queries with head_dim 64 or 128 runs there too, on
 * halves: queries, keys, values and the softmax's weights rounded to 11
 * bits, scores and sums in float32; held to 4e-3 (values in [-1, 1]). */
#define F16_ATTENTION_TOL 4e-3f
static int have_gpu;
static char skip_reason[512];

#define NEED_GPU()                                           \
    do {                                                     \
        if (!gpu) {                                          \
            print_message("skipped: %s\n", skip_reason);     \
            skip();                                          \
        }                                                    \
    } while (0)

#define OK(call)                                                              \
    do {                                                                      \
        moe_status ok_st_ = (call);                                           \
        if (ok_st_ != MOE_OK) fail_msg("%s: %s", #call, moe_last_error());    \
    } while (0)

/* ---- device buffers ---- */

static void *dev_alloc(size_t bytes)
{
    void *p = gpu->alloc(gpu, bytes, "test buffer");
    if (!p) fail_msg("device alloc of %zu bytes: %s", bytes, moe_last_error());
    return p;
}

static void *dev_from(const void *host, size_t bytes)
{
    void *p = dev_alloc(bytes);
    OK(gpu->upload(gpu, p, host, bytes));
    return p;
}

static void to_host(void *host, const void *dev, size_t bytes) { OK(gpu->download(gpu, host, dev, bytes)); }

/* A device buffer of n floats, filled with NaN so that unwritten outputs show. */
static float *dev_poisoned(size_t n)
{
    float *h = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = dev_from(h, sizeof(float) * n);
    free(h);
    return d;
}

static float *rand_floats(uint64_t *rng, size_t n, double lo, double hi)
{
    float *x = malloc(sizeof(float) * n);
    test_rand_floats(rng, x, n, lo, hi);
    return x;
}

static void expect_bitwise(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (test_bits_of_float(got[i]) != test_bits_of_float(want[i]) && !(isnan(got[i]) && isnan(want[i])))
            fail_msg("%s: [%zu] = %.9g, CPU %.9g", what, i, (double)got[i], (double)want[i]);
}

/* |got − want| ≤ ulps units in the last place of want */
static void expect_ulps(const char *what, const float *got, const float *want, size_t n, int ulps)
{
    for (size_t i = 0; i < n; i++) {
        double tol = ulps * (double)nextafterf(fabsf(want[i]), INFINITY) - ulps * (double)fabsf(want[i]);
        if (!(fabs((double)got[i] - want[i]) <= tol))
            fail_msg("%s: [%zu] = %.9g, CPU %.9g (more than %d ulps)", what, i, (double)got[i], (double)want[i], ulps);
    }
}

/* ---- RMSNorm ---- */

static void rmsnorm_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 11;
    static const int SIZES[][2] = { { 1, 1 }, { 7, 129 }, { 3, 2050 }, { 65, 24 } };
    for (size_t c = 0; c < sizeof SIZES / sizeof SIZES[0]; c++) {
        int rows = SIZES[c][0], n = SIZES[c][1];
        size_t len = (size_t)rows * n;
        float *x = rand_floats(&rng, len, -3, 3), *w = rand_floats(&rng, (size_t)n, 0.5, 1.5);
        float *want = malloc(sizeof(float) * len), *got = malloc(sizeof(float) * len);
        moe_rmsnorm_rows(rows, n, x, w, 1e-6f, want);
        float *dx = dev_from(x, sizeof(float) * len), *dw = dev_from(w, sizeof(float) * n), *dy = dev_poisoned(len);
        OK(gpu->rmsnorm(gpu, rows, n, dx, dw, 1e-6f, dy));
        to_host(got, dy, sizeof(float) * len);
        expect_ulps("rmsnorm", got, want, len, 2);
        /* in place */
        OK(gpu->rmsnorm(gpu, rows, n, dx, dw, 1e-6f, dx));
        to_host(got, dx, sizeof(float) * len);
        expect_ulps("rmsnorm in place", got, want, len, 2);
        gpu->free(gpu, dx), gpu->free(gpu, dw), gpu->free(gpu, dy);
        free(x), free(w), free(want), free(got);
    }
}

/* ---- projections and the embedding ---- */

typedef struct {
    int bits;
    moe_dtype dtype;   /* values (float) or scales and biases (quantized) */
    int group;
} format_case;

static const format_case FORMATS[] = {
    { 0, MOE_DTYPE_F32, 0 },  { 0, MOE_DTYPE_F16, 0 },  { 0, MOE_DTYPE_BF16, 0 },
    { 4, MOE_DTYPE_BF16, 64 }, { 4, MOE_DTYPE_F16, 32 }, { 4, MOE_DTYPE_F32, 128 },
    { 8, MOE_DTYPE_BF16, 64 }, { 8, MOE_DTYPE_F32, 32 }, { 8, MOE_DTYPE_F16, 128 },
};
enum { NFORMATS = sizeof FORMATS / sizeof FORMATS[0] };

static void format_name(const format_case *f, char *buf, size_t n)
{
    if (f->bits) snprintf(buf, n, "q%d/%s/g%d", f->bits, moe_dtype_name(f->dtype), f->group);
    else snprintf(buf, n, "%s", moe_dtype_name(f->dtype));
}

/* The rows of p (one expert) loaded in two blocks: [0, 16) and the rest. */
static void load_in_two(moe_backend *b, moe_bk_linear *l, const test_proj *p)
{
    int split = p->rows > 16 ? 16 : p->rows;
    OK(b->linear_load_rows(b, l, 0, split, &p->w));
    if (split == p->rows) return;
    moe_expert_weights rest = p->w;
    size_t wrow = p->w.bits ? (size_t)p->cols * p->w.bits / 8 : (size_t)p->cols * moe_dtype_size(p->w.dtype);
    rest.weight = (const char *)p->w.weight + split * wrow;
    if (p->w.bits) {
        size_t srow = (size_t)(p->cols / p->w.group_size) * moe_dtype_size(p->w.dtype);
        rest.scales = (const char *)p->w.scales + split * srow;
        rest.biases = (const char *)p->w.biases + split * srow;
    }
    OK(b->linear_load_rows(b, l, split, p->rows - split, &rest));
}

static void linear_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 21;
    static const int TOKENS[] = { 1, 3, 8, 9, 70 };
    for (int fi = 0; fi < NFORMATS; fi++) {
        const format_case *f = &FORMATS[fi];
        int K = f->bits ? 3 * 128 : 131, outs[2] = { 37, 1 };
        for (int oi = 0; oi < 2; oi++) {
            int N = outs[oi];
            char what[96];
            format_name(f, what, sizeof what);
            test_proj p;
            test_proj_make(&p, &rng, 1, N, K, f->bits, f->dtype, f->group);
            moe_bk_linear *lg, *lc, *l8;
            OK(gpu->linear_create(gpu, N, K, &p.w, "test.proj", MOE_ACT_FLOAT, &lg));
            OK(gpu->linear_create(gpu, N, K, &p.w, "test.proj.i8", MOE_ACT_INT8X2, &l8));
            OK(cpu->linear_create(cpu, N, K, &p.w, "test.proj", MOE_ACT_FLOAT, &lc));
            load_in_two(gpu, lg, &p);
            load_in_two(gpu, l8, &p);
            load_in_two(cpu, lc, &p);
            assert_int_equal(gpu->linear_bytes(lg), cpu->linear_bytes(lc));
            for (size_t ti = 0; ti < sizeof TOKENS / sizeof TOKENS[0]; ti++) {
                int T = TOKENS[ti];
                size_t ny = (size_t)T * N;
                float *x = rand_floats(&rng, (size_t)T * K, -2, 2);
                float *want = malloc(sizeof(float) * ny), *got = malloc(sizeof(float) * ny);
                float *got8 = malloc(sizeof(float) * ny);
                OK(cpu->linear(cpu, lc, x, T, want));
                float *dx = dev_from(x, sizeof(float) * T * K), *dy = dev_poisoned(ny);
                OK(gpu->linear(gpu, lg, dx, T, dy));
                to_host(got, dy, sizeof(float) * ny);
                OK(gpu->linear(gpu, l8, dx, T, dy));
                to_host(got8, dy, sizeof(float) * ny);
                expect_bitwise("int8 activations asked of the GPU", got8, got, ny);
                for (int t = 0; t < T; t++)
                    for (int r = 0; r < N; r++) {
                        double ref = 0, bound = 0;
                        for (int k = 0; k < K; k++) {
                            double term = p.value[(size_t)r * K + k] * x[(size_t)t * K + k];
                            ref += term, bound += fabs(term);
                        }
                        size_t i = (size_t)t * N + r;
                        double tol = (T >= MMA_MIN_TOKENS ? BF16_LINEAR_TOL : 2e-5) * bound + 1e-7;
                        if (!(fabs(got[i] - ref) <= tol && fabs(got[i] - want[i]) <= 2 * tol))
                            fail_msg("linear %s [%d, %d], %d tokens: y[%d][%d] = %.8g, float64 %.8g, CPU %.8g (tol %.2g)",
                                     what, N, K, T, t, r, (double)got[i], ref, (double)want[i], tol);
                    }
                gpu->free(gpu, dx), gpu->free(gpu, dy);
                free(x), free(want), free(got), free(got8);
            }
            gpu->linear_free(gpu, lg), gpu->linear_free(gpu, l8), cpu->linear_free(cpu, lc);
            test_proj_free(&p);
        }
    }
}

static void linear_errors(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 22;
    test_proj p;
    test_proj_make(&p, &rng, 1, 40, 64, 4, MOE_DTYPE_BF16, 32);
    moe_bk_linear *l;
    OK(gpu->linear_create(gpu, 40, 64, &p.w, "model.layers.0.self_attn.o_proj", MOE_ACT_FLOAT, &l));
    OK(gpu->linear_load_rows(gpu, l, 0, 16, &p.w));
    float *dx = dev_poisoned(64), *dy = dev_poisoned(40);
    assert_int_equal(gpu->linear(gpu, l, dx, 1, dy), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "o_proj: row 16 was never loaded"));
    assert_int_equal(gpu->linear_load_rows(gpu, l, 32, 16, &p.w), MOE_ERR_SHAPE);
    moe_expert_weights other = p.w;
    other.bits = 8;
    assert_int_equal(gpu->linear_load_rows(gpu, l, 16, 16, &other), MOE_ERR_DTYPE);
    other = p.w;
    other.group_size = 48;
    moe_bk_linear *bad;
    assert_int_equal(gpu->linear_create(gpu, 40, 64, &other, "bad", MOE_ACT_FLOAT, &bad), MOE_ERR_SHAPE);
    gpu->free(gpu, dx), gpu->free(gpu, dy);
    gpu->linear_free(gpu, l);
    test_proj_free(&p);
}

static void embed_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 31;
    int32_t tokens[] = { 0, 36, 5, 5, 17, 1, 35 };
    int T = sizeof tokens / sizeof tokens[0], V = 37;
    for (int fi = 0; fi < NFORMATS; fi++) {
        const format_case *f = &FORMATS[fi];
        int K = f->bits ? 256 : 133;
        char what[96];
        format_name(f, what, sizeof what);
        test_proj p;
        test_proj_make(&p, &rng, 1, V, K, f->bits, f->dtype, f->group);
        moe_bk_linear *lg, *lc;
        OK(gpu->linear_create(gpu, V, K, &p.w, "model.embed_tokens", MOE_ACT_FLOAT, &lg));
        OK(cpu->linear_create(cpu, V, K, &p.w, "model.embed_tokens", MOE_ACT_FLOAT, &lc));
        load_in_two(gpu, lg, &p);
        load_in_two(cpu, lc, &p);
        size_t n = (size_t)T * K;
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n), *dx = dev_poisoned(n);
        OK(cpu->embed(cpu, lc, tokens, T, want));
        OK(gpu->embed(gpu, lg, tokens, T, dx));
        to_host(got, dx, sizeof(float) * n);
        expect_bitwise(what, got, want, n);
        int32_t bad[] = { 3, 37 };
        assert_int_equal(gpu->embed(gpu, lg, bad, 2, dx), MOE_ERR_RANGE);
        assert_non_null(strstr(moe_last_error(), "token id 37 (at 1) is outside 0..36"));
        gpu->free(gpu, dx);
        free(want), free(got);
        gpu->linear_free(gpu, lg), cpu->linear_free(cpu, lc);
        test_proj_free(&p);
    }
}

/* ---- element-wise steps ---- */

static void split_clip_add_match(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 41;
    int T = 5, widths[3] = { 24, 8, 9 }, row = 41;
    size_t n = (size_t)T * row;
    float *src = rand_floats(&rng, n, -4, 4);
    src[3] = NAN, src[7] = INFINITY, src[9] = -INFINITY;
    float *dsrc = dev_from(src, sizeof(float) * n);
    float *want[3], *dparts[3], *got = malloc(sizeof(float) * n);
    for (int i = 0; i < 3; i++) {
        want[i] = malloc(sizeof(float) * T * widths[i]);
        dparts[i] = dev_poisoned((size_t)T * widths[i]);
    }
    OK(cpu->split_cols(cpu, src, T, 3, widths, want));
    OK(gpu->split_cols(gpu, dsrc, T, 3, widths, dparts));
    for (int i = 0; i < 3; i++) {
        to_host(got, dparts[i], sizeof(float) * T * widths[i]);
        expect_bitwise("split columns", got, want[i], (size_t)T * widths[i]);
    }
    /* clip (NaN stays NaN, infinities clamp) */
    float *c = malloc(sizeof(float) * n);
    memcpy(c, src, sizeof(float) * n);
    OK(cpu->clip(cpu, n, c, 2.5f));
    OK(gpu->clip(gpu, n, dsrc, 2.5f));
    to_host(got, dsrc, sizeof(float) * n);
    expect_bitwise("clip", got, c, n);
    /* add */
    float *y = rand_floats(&rng, n, -4, 4), *dy = dev_from(y, sizeof(float) * n);
    OK(cpu->add(cpu, n, c, y));
    OK(gpu->add(gpu, n, dsrc, dy));
    to_host(got, dsrc, sizeof(float) * n);
    expect_bitwise("add", got, c, n);
    /* rows not 16-byte aligned: the one-by-one path */
    OK(cpu->add(cpu, n - 3, c + 1, y + 2));
    OK(gpu->add(gpu, n - 3, dsrc + 1, dy + 2));
    to_host(got, dsrc, sizeof(float) * n);
    expect_bitwise("add, unaligned", got, c, n);
    for (int i = 0; i < 3; i++) free(want[i]), gpu->free(gpu, dparts[i]);
    gpu->free(gpu, dsrc), gpu->free(gpu, dy);
    free(src), free(got), free(c), free(y);
}

static void rope_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 51;
    static const struct { int hd; double theta; int pos; } CASES[] = {
        { 16, 10000.0, 0 }, { 128, 10000.0, 4097 }, { 24, 1e6, 100000 }, { 64, 500000.0, 131000 },
    };
    int T = 9;
    int exact = 0, total = 0;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        int hd = CASES[c].hd, half = hd / 2;
        size_t n = (size_t)T * half;
        float *wc = malloc(sizeof(float) * n), *ws = malloc(sizeof(float) * n);
        float *gc = malloc(sizeof(float) * n), *gs = malloc(sizeof(float) * n);
        OK(cpu->rope_angles(cpu, T, hd, CASES[c].theta, CASES[c].pos, wc, ws));
        float *dc = dev_poisoned(n), *ds = dev_poisoned(n);
        OK(gpu->rope_angles(gpu, T, hd, CASES[c].theta, CASES[c].pos, dc, ds));
        to_host(gc, dc, sizeof(float) * n);
        to_host(gs, ds, sizeof(float) * n);
        /* the same float32 angle; its cosine and sine within an ulp of libm's */
        expect_ulps("rope cos", gc, wc, n, 1);
        expect_ulps("rope sin", gs, ws, n, 1);
        for (size_t i = 0; i < n; i++) exact += (gc[i] == wc[i]) + (gs[i] == ws[i]), total += 2;
        /* the rotation itself on the CPU's angles: the same bits */
        int heads = 3;
        size_t nx = (size_t)T * heads * hd;
        float *x = rand_floats(&rng, nx, -2, 2), *gx = malloc(sizeof(float) * nx);
        float *dx = dev_from(x, sizeof(float) * nx);
        OK(gpu->upload(gpu, dc, wc, sizeof(float) * n));
        OK(gpu->upload(gpu, ds, ws, sizeof(float) * n));
        OK(cpu->rope(cpu, T, heads, hd, x, wc, ws));
        OK(gpu->rope(gpu, T, heads, hd, dx, dc, ds));
        to_host(gx, dx, sizeof(float) * nx);
        expect_bitwise("rope", gx, x, nx);
        gpu->free(gpu, dc), gpu->free(gpu, ds), gpu->free(gpu, dx);
        free(wc), free(ws), free(gc), free(gs), free(x), free(gx);
    }
    print_message("  rope angles: %d of %d values equal to the CPU's bits, the rest within an ulp\n", exact, total);
}

static void kv_store_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 61;
    size_t n = 1003;
    float *x = rand_floats(&rng, n, -70000, 70000);
    for (size_t i = 0; i < 200; i++) x[i] *= 1e-9f;   /* half subnormals and underflow */
    x[500] = 65520.0f, x[501] = -65519.0f, x[502] = INFINITY;
    float *dx = dev_from(x, sizeof(float) * n);
    uint16_t *want = malloc(2 * n), *got = malloc(2 * n);
    float *wantf = malloc(4 * n), *gotf = malloc(4 * n);
    void *dc = dev_alloc(4 * n);
    OK(cpu->kv_store(cpu, MOE_DTYPE_F16, x, want, n, 1));
    OK(gpu->kv_store(gpu, MOE_DTYPE_F16, dx, dc, n, 1));
    to_host(got, dc, 2 * n);
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) fail_msg("f16 store: [%zu] %.9g → %04x, CPU %04x", i, (double)x[i], got[i], want[i]);
    /* a destination not 8-byte aligned (a cache row at an odd offset) */
    OK(cpu->kv_store(cpu, MOE_DTYPE_F16, x, want + 1, n - 1, 1));
    OK(gpu->kv_store(gpu, MOE_DTYPE_F16, dx, (uint16_t *)dc + 1, n - 1, 1));
    to_host(got, dc, 2 * n);
    for (size_t i = 1; i < n; i++)
        if (got[i] != want[i]) fail_msg("f16 store at +1: [%zu] → %04x, CPU %04x", i, got[i], want[i]);
    OK(cpu->kv_store(cpu, MOE_DTYPE_F32, x, wantf, n, 1));
    OK(gpu->kv_store(gpu, MOE_DTYPE_F32, dx, dc, n, 1));
    to_host(gotf, dc, 4 * n);
    expect_bitwise("f32 store", gotf, wantf, n);
    assert_int_equal(gpu->kv_store(gpu, MOE_DTYPE_BF16, dx, dc, n, 1), MOE_ERR_DTYPE);
    gpu->free(gpu, dx), gpu->free(gpu, dc);
    free(x), free(want), free(got), free(wantf), free(gotf);
}

/* The first byte where an 8-bit cache's heads (blocks of hd) differ from the
 * CPU's, named by head and code or scale; the test fails there. */
static void expect_q8_bytes(const char *what, const unsigned char *got, const unsigned char *want, size_t heads, int hd)
{
    size_t head = moe_kv_row_bytes(MOE_DTYPE_Q8, 1, hd);
    for (size_t i = 0; i < heads * head; i++)
        if (got[i] != want[i]) {
            size_t h = i / head, at = i % head;
            if (at < (size_t)hd)
                fail_msg("%s: head %zu, code %zu is %d, CPU %d", what, h, at, (signed char)got[i], (signed char)want[i]);
            fail_msg("%s: head %zu, scale %zu, byte %zu is %02x, CPU %02x", what, h, (at - hd) / 2, (at - hd) % 2,
                     got[i], want[i]);
        }
}

/* The 8-bit cache's store (kernels/kv_q8.h) gives the CPU's bytes: head
 * dims 64, 100 (a part group at the end) and 128; a few heads (the chain)
 * and many (the store's own kernel); a group all zero, one with a NaN, one
 * of values so small that max/127 underflows, one of huge values; at an
 * odd address; and inside a captured step (float caches too), whose row
 * moves with the position read on the device. */
static void kv_store_q8_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 62;
    static const int HDS[] = { 64, 100, 128 }, HEADS[] = { 3, 200 };
    for (size_t hi = 0; hi < 3; hi++)
        for (size_t ni = 0; ni < 2; ni++) {
            int hd = HDS[hi], heads = HEADS[ni], G = (hd + 31) / 32;
            size_t n = (size_t)heads * hd, bytes = moe_kv_row_bytes(MOE_DTYPE_Q8, heads, hd);
            float *x = rand_floats(&rng, n, -3, 3);
            for (int d = 32; d < 64; d++) x[d] = 0.0f;                             /* head 0, group 1 */
            for (int d = 32 * (G - 1); d < hd; d++) x[hd + d] = 0.0f;             /* head 1, its last group */
            x[hd + 5] = NAN;                                                       /* head 1, group 0 */
            for (int d = 0; d < 32; d++) x[2 * (size_t)hd + d] *= 1e-44f;          /* head 2: underflow */
            for (int d = 32; d < 64; d++) x[2 * (size_t)hd + d] *= 1e30f;          /* and huge */
            unsigned char *want = malloc(bytes), *got = malloc(bytes);
            OK(cpu->kv_store(cpu, MOE_DTYPE_Q8, x, want, n, hd));
            float *dx = dev_from(x, sizeof(float) * n);
            unsigned char *dc = dev_alloc(bytes + 1);
            char what[96];
            snprintf(what, sizeof what, "q8 store, %d heads of %d", heads, hd);
            OK(gpu->kv_store(gpu, MOE_DTYPE_Q8, dx, dc, n, hd));
            to_host(got, dc, bytes);
            expect_q8_bytes(what, got, want, (size_t)heads, hd);
            snprintf(what + strlen(what), sizeof what - strlen(what), " at +1");
            OK(gpu->kv_store(gpu, MOE_DTYPE_Q8, dx, dc + 1, n, hd));
            to_host(got, dc + 1, bytes);
            expect_q8_bytes(what, got, want, (size_t)heads, hd);
            gpu->free(gpu, dx), gpu->free(gpu, dc);
            free(x), free(want), free(got);
        }
    /* a partial head is refused (its groups would not restart there) */
    float *dx = dev_poisoned(200);
    void *dc = dev_alloc(256);
    assert_int_equal(gpu->kv_store(gpu, MOE_DTYPE_Q8, dx, dc, 100, 64), MOE_ERR_SHAPE);
    gpu->free(gpu, dx), gpu->free(gpu, dc);

    /* one token a step (backend.h: step_begin): captured at position 0,
     * replayed at 1 and 2, where the store's row is found on the device;
     * 4 heads (the chain) and 160 (past it: the store's kernel) */
    static const moe_dtype KT[] = { MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_Q8 };
    static const int STEP_HEADS[] = { 4, 160 };
    enum { STEPS = 3 };
    static const char key = 0;
    for (size_t ki = 0; ki < 3; ki++)
        for (size_t ni = 0; ni < 2; ni++) {
            moe_dtype kt = KT[ki];
            int hd = 128, heads = STEP_HEADS[ni];
            size_t n = (size_t)heads * hd, row = moe_kv_row_bytes(kt, heads, hd);
            float *xs = rand_floats(&rng, STEPS * n, -2, 2);
            unsigned char *want = calloc(STEPS, row), *got = malloc(STEPS * row);
            float *dxs = dev_alloc(sizeof(float) * n);
            unsigned char *dcs = dev_alloc(STEPS * row);
            for (int pos = 0; pos < STEPS; pos++) {
                OK(cpu->kv_store(cpu, kt, xs + pos * n, want + pos * row, n, hd));
                OK(gpu->upload(gpu, dxs, xs + pos * n, sizeof(float) * n));
                OK(gpu->step_begin(gpu, &key, 1, pos));
                OK(gpu->kv_store(gpu, kt, dxs, dcs + pos * row, n, hd));
                OK(gpu->step_end(gpu));
            }
            to_host(got, dcs, STEPS * row);
            for (size_t i = 0; i < STEPS * row; i++)
                if (got[i] != want[i])
                    fail_msg("%s store in a captured step, %d heads: position %zu, byte %zu is %02x, CPU %02x",
                             moe_dtype_name(kt), heads, i / row, i % row, got[i], want[i]);
            gpu->free(gpu, dxs), gpu->free(gpu, dcs);
            free(xs), free(want), free(got);
        }
}

/* ---- attention ---- */

static void attention_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 71;
    float worst = 0.0f, worst_mma = 0.0f, worst_q8 = 0.0f, worst_q8_mma = 0.0f;
    static const moe_dtype KT[] = { MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_Q8 };
    static const struct { int T, pos, heads, kv_heads, hd, extra; } CASES[] = {
        { 1, 0, 4, 2, 16, 0 }, { 1, 37, 6, 3, 24, 0 }, { 5, 0, 4, 1, 64, 0 }, { 7, 11, 8, 2, 128, 8 },
        { 33, 40, 2, 2, 96, 0 }, { 3, 300, 4, 4, 256, 0 }, { 1, 2100, 16, 16, 128, 0 },
        /* the cache split across blocks (decode, and several queries), GQA
         * groups of 8, 6 and 4 query heads, head dims not a multiple of 32 */
        { 1, 1000, 32, 4, 128, 0 }, { 1, 5000, 12, 2, 64, 4 }, { 3, 900, 8, 2, 256, 0 }, { 40, 500, 4, 1, 128, 0 },
        { 200, 0, 2, 2, 64, 0 }, { 1, 777, 6, 6, 100, 0 }, { 2, 3000, 8, 1, 200, 0 },
        /* prefill tiles of 8 queries, a short last tile */
        { 300, 3, 16, 16, 128, 0 }, { 61, 17, 6, 2, 48, 0 },
        /* the tensor cores: blocks of 64 queries, a short last one, GQA, a cache before the prompt */
        { 130, 70, 8, 2, 128, 0 }, { 64, 1000, 4, 1, 64, 0 }, { 100, 5, 4, 2, 128, 2 },
        /* the fallback kernel: head dims that are not a multiple of 4, an odd stride, beyond 256 */
        { 4, 50, 4, 2, 30, 0 }, { 1, 600, 4, 4, 64, 1 }, { 2, 90, 2, 1, 512, 0 },
    };
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++)
        for (int f = 0; f < 3; f++) {
            int T = CASES[c].T, pos = CASES[c].pos, H = CASES[c].heads, KV = CASES[c].kv_heads, hd = CASES[c].hd;
            moe_dtype kt = KT[f];
            int q8 = kt == MOE_DTYPE_Q8;
            /* elements from row to row (Q8: bytes, `extra` of padding) */
            size_t stride = moe_kv_row_bytes(kt, KV, hd) / moe_dtype_size(kt) + CASES[c].extra, rows = (size_t)pos + T;
            size_t es = moe_dtype_size(kt), nq = (size_t)T * H * hd, nf = q8 ? rows * KV * hd : rows * stride;
            float *q = rand_floats(&rng, nq, -1, 1);
            float *kf = rand_floats(&rng, nf, -1, 1), *vf = rand_floats(&rng, nf, -1, 1);
            void *k = calloc(rows * stride, es), *v = calloc(rows * stride, es);
            if (q8)   /* a row's heads at a time: the padding between rows stays 0 */
                for (size_t j = 0; j < rows; j++) {
                    OK(cpu->kv_store(cpu, kt, kf + j * KV * hd, (char *)k + j * stride, (size_t)KV * hd, hd));
                    OK(cpu->kv_store(cpu, kt, vf + j * KV * hd, (char *)v + j * stride, (size_t)KV * hd, hd));
                }
            else {
                OK(cpu->kv_store(cpu, kt, kf, k, rows * stride, hd));
                OK(cpu->kv_store(cpu, kt, vf, v, rows * stride, hd));
            }
            float *want = malloc(sizeof(float) * nq), *got = malloc(sizeof(float) * nq);
            float scale = 1.0f / sqrtf((float)hd);
            OK(cpu->attention(cpu, T, pos, H, KV, hd, scale, q, kt, k, v, stride, want));
            float *dq = dev_from(q, sizeof(float) * nq), *dout = dev_poisoned(nq);
            void *dk = dev_from(k, es * rows * stride), *dv = dev_from(v, es * rows * stride);
            OK(gpu->attention(gpu, T, pos, H, KV, hd, scale, dq, kt, dk, dv, stride, dout));
            to_host(got, dout, sizeof(float) * nq);
            /* the tensor cores take rows of 4-element (Q8: 2-byte) steps */
            int mma = T >= MMA_MIN_TOKENS && (hd == 64 || hd == 128) && stride % (q8 ? 2 : 4) == 0;
            float tol = mma ? F16_ATTENTION_TOL : 1e-5f;
            float *w = q8 ? (mma ? &worst_q8_mma : &worst_q8) : (mma ? &worst_mma : &worst);
            for (size_t i = 0; i < nq; i++) {
                if (fabsf(got[i] - want[i]) > *w) *w = fabsf(got[i] - want[i]);
                if (!(fabsf(got[i] - want[i]) <= tol))
                    fail_msg("attention T %d pos %d heads %d/%d hd %d %s: [%zu] = %.8g, CPU %.8g", T, pos, H, KV, hd,
                             moe_dtype_name(kt), i, (double)got[i], (double)want[i]);
            }
            gpu->free(gpu, dq), gpu->free(gpu, dout), gpu->free(gpu, dk), gpu->free(gpu, dv);
            free(q), free(kf), free(vf), free(k), free(v), free(want), free(got);
        }
    print_message("  attention: largest error %.2e (limit 1e-05), on the tensor cores %.2e (limit %.0e)\n",
                  (double)worst, (double)worst_mma, (double)F16_ATTENTION_TOL);
    print_message("  attention over a q8 cache against the CPU's: largest error %.2e, on the tensor cores %.2e\n",
                  (double)worst_q8, (double)worst_q8_mma);
}

/* ---- router ---- */

static void router_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 81;
    static const int CASES[][3] = { { 13, 1, 0 }, { 13, 3, 1 }, { 64, 8, 0 }, { 64, 8, 1 },
                                    { 128, 8, 1 }, { 8, 2, 1 },  { 5, 5, 1 },  { 300, 16, 0 } };
    int T = 33;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        int E = CASES[c][0], k = CASES[c][1], norm = CASES[c][2];
        size_t n = (size_t)T * E, nk = (size_t)T * k;
        float *z = rand_floats(&rng, n, -4, 4);
        for (size_t i = 0; i < n; i++) z[i] = roundf(z[i] * 2) / 2;   /* plenty of ties */
        int32_t *wi = malloc(sizeof(int32_t) * nk), *gi = malloc(sizeof(int32_t) * nk);
        float *ww = malloc(sizeof(float) * nk), *gw = malloc(sizeof(float) * nk);
        OK(cpu->router_topk(cpu, z, T, E, k, norm, wi, ww));
        float *dz = dev_from(z, sizeof(float) * n), *dw = dev_poisoned(nk);
        int32_t *di = dev_alloc(sizeof(int32_t) * nk);
        OK(gpu->router_topk(gpu, dz, T, E, k, norm, di, dw));
        to_host(gi, di, sizeof(int32_t) * nk);
        to_host(gw, dw, sizeof(float) * nk);
        for (size_t i = 0; i < nk; i++)
            if (gi[i] != wi[i]) fail_msg("router E %d k %d: choice %zu is expert %d, CPU %d", E, k, i, gi[i], wi[i]);
        expect_ulps("router weights", gw, ww, nk, 2);
        /* a non-finite logit: reported at the next download */
        z[5 * E + 2] = NAN;
        OK(gpu->upload(gpu, dz, z, sizeof(float) * n));
        OK(gpu->router_topk(gpu, dz, T, E, k, norm, di, dw));
        assert_int_equal(gpu->download(gpu, gw, dw, sizeof(float) * nk), MOE_ERR_RANGE);
        assert_non_null(strstr(moe_last_error(), "router: token 5, expert 2: logit nan is not finite"));
        to_host(gw, dw, sizeof(float) * nk);   /* reported once */
        gpu->free(gpu, dz), gpu->free(gpu, dw), gpu->free(gpu, di);
        free(z), free(wi), free(gi), free(ww), free(gw);
    }
    assert_int_equal(gpu->router_topk(gpu, NULL, 1, 4, 5, 0, NULL, NULL), MOE_ERR_SHAPE);
}

/* The greedy choice on the device: the CPU's rule (the first of the
 * largest, NaN never, 0 when none is above -inf) on rows of odd lengths
 * with ties, NaN and infinities, the ids brought back alone. */
static void argmax_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 97;
    static const int LENS[] = { 1, 7, 33, 1025, 50304 };
    enum { ROWS = 9 };
    for (size_t c = 0; c < sizeof LENS / sizeof LENS[0]; c++) {
        int V = LENS[c];
        size_t n = (size_t)ROWS * V;
        float *z = rand_floats(&rng, n, -8, 8);
        for (size_t i = 0; i < n; i++) z[i] = roundf(z[i]);   /* ties everywhere */
        float *r;
        r = z + 1 * (size_t)V, r[V / 2] = NAN, r[V - 1] = 100;                  /* NaN beside the largest */
        r = z + 2 * (size_t)V, r[V - 1] = INFINITY, r[V / 3] = INFINITY;         /* two +inf: the first */
        r = z + 3 * (size_t)V;
        for (int i = 0; i < V; i++) r[i] = -INFINITY;                            /* none above -inf: 0 */
        r = z + 4 * (size_t)V;
        for (int i = 0; i < V; i++) r[i] = i % 2 ? NAN : -INFINITY;              /* NaN and -inf only: 0 */
        r = z + 5 * (size_t)V;
        for (int i = 0; i < V; i++) r[i] = 3.0f;                                 /* all equal: 0 */
        r = z + 6 * (size_t)V, r[V - 1] = 50;                                    /* the last */
        int32_t want[ROWS], got[ROWS];
        OK(cpu->argmax_rows(cpu, z, ROWS, V, want));
        float *dz = dev_from(z, sizeof(float) * n);
        for (int i = 0; i < ROWS; i++) got[i] = -7;
        OK(gpu->argmax_rows(gpu, dz, ROWS, V, got));
        for (int i = 0; i < ROWS; i++)
            if (got[i] != want[i]) fail_msg("argmax V %d row %d: %d, CPU %d", V, i, got[i], want[i]);
        assert_int_equal(want[3], 0), assert_int_equal(want[4], 0), assert_int_equal(want[5], 0);
        assert_int_equal(want[6], V - 1);
        gpu->free(gpu, dz);
        free(z);
    }
    int32_t id;
    assert_int_equal(gpu->argmax_rows(gpu, NULL, 1, 4, &id), MOE_ERR_INVALID_ARG);
    assert_int_equal(gpu->argmax_rows(gpu, NULL, 1, 0, &id), MOE_ERR_SHAPE);
}

/* ---- the expert layer ---- */

typedef struct {
    format_case f;
    int E, D, I;
} experts_case;

/* gate, up and down of a case's format and shape */
static void experts_make(const experts_case *xc, uint64_t *rng, test_proj *g, test_proj *u, test_proj *d)
{
    test_proj_make(g, rng, xc->E, xc->I, xc->D, xc->f.bits, xc->f.dtype, xc->f.group);
    test_proj_make(u, rng, xc->E, xc->I, xc->D, xc->f.bits, xc->f.dtype, xc->f.group);
    test_proj_make(d, rng, xc->E, xc->D, xc->I, xc->f.bits, xc->f.dtype, xc->f.group);
}

/* An expert layer's output for T tokens within float32 rounding of the
 * float64 reference, or the tensor cores' bfloat16 bound, and of the CPU. */
static void expect_experts_close(const char *what, int T, size_t n, const float *got, const double *ref,
                                 const double *bound, const float *want)
{
    for (size_t i = 0; i < n; i++) {
        double tol = (T >= MMA_MIN_TOKENS ? BF16_EXPERTS_TOL : 2e-5) * bound[i] + 1e-7;
        if (!(fabs(got[i] - ref[i]) <= tol && fabs(got[i] - want[i]) <= 2 * tol))
            fail_msg("%s: y[%zu] = %.8g, float64 %.8g, CPU %.8g (tol %.2g)", what, i, (double)got[i], ref[i],
                     (double)want[i], tol);
    }
}

static void experts_match(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 91;
    static const experts_case CASES[] = {
        { { 0, MOE_DTYPE_F32, 0 }, 5, 37, 45 },      { { 0, MOE_DTYPE_BF16, 0 }, 6, 64, 40 },
        { { 0, MOE_DTYPE_F16, 0 }, 4, 72, 24 },      { { 4, MOE_DTYPE_BF16, 32 }, 8, 96, 64 },
        { { 4, MOE_DTYPE_F16, 64 }, 5, 128, 192 },   { { 8, MOE_DTYPE_BF16, 64 }, 7, 128, 64 },
        { { 8, MOE_DTYPE_F32, 32 }, 3, 64, 96 },     { { 4, MOE_DTYPE_BF16, 128 }, 1, 128, 256 },
        { { 4, MOE_DTYPE_BF16, 32 }, 70, 64, 32 },   /* experts counted 32 at a step */
    };
    static const int TOKENS[] = { 1, 2, 5, 9, 70, 200 };
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const experts_case *xc = &CASES[c];
        int E = xc->E, D = xc->D, I = xc->I;
        char what[128], fmt[64];
        format_name(&xc->f, fmt, sizeof fmt);
        test_proj g, u, d;
        experts_make(xc, &rng, &g, &u, &d);
        moe_switchglu_config cfg = moe_switchglu_default_config(E, D, I);
        moe_bk_experts *xg, *xcpu;
        OK(gpu->experts_create(gpu, &cfg, &g.w, &u.w, &d.w, &xg));
        OK(cpu->experts_create(cpu, &cfg, &g.w, &u.w, &d.w, &xcpu));
        for (int e = 0; e < E; e++) {
            /* one expert's slices, as a hub-layout loader hands them over */
            moe_expert_weights s[3];
            const test_proj *ps[3] = { &g, &u, &d };
            for (int i = 0; i < 3; i++) {
                const test_proj *p = ps[i];
                size_t wrow = p->w.bits ? (size_t)p->cols * p->w.bits / 8 : (size_t)p->cols * moe_dtype_size(p->w.dtype);
                size_t srow = p->w.bits ? (size_t)(p->cols / p->w.group_size) * moe_dtype_size(p->w.dtype) : 0;
                s[i] = p->w;
                s[i].weight = (const char *)p->w.weight + (size_t)e * p->rows * wrow;
                if (p->w.bits) {
                    s[i].scales = (const char *)p->w.scales + (size_t)e * p->rows * srow;
                    s[i].biases = (const char *)p->w.biases + (size_t)e * p->rows * srow;
                }
            }
            if (e == 0) {   /* a layer with experts missing refuses to run */
                float *dx = dev_poisoned((size_t)D), *dy = dev_poisoned((size_t)D), *dw = dev_poisoned(1);
                int32_t *di = dev_alloc(sizeof(int32_t));
                assert_int_equal(gpu->experts(gpu, xg, dx, 1, di, dw, 1, dy), MOE_ERR_INVALID_ARG);
                assert_non_null(strstr(moe_last_error(), "expert 0 was never loaded"));
                gpu->free(gpu, dx), gpu->free(gpu, dy), gpu->free(gpu, dw), gpu->free(gpu, di);
            }
            OK(gpu->experts_load(gpu, xg, e, &s[0], &s[1], &s[2]));
            OK(cpu->experts_load(cpu, xcpu, e, &s[0], &s[1], &s[2]));
        }
        assert_int_equal(gpu->experts_bytes(xg), cpu->experts_bytes(xcpu));
        for (size_t ti = 0; ti < sizeof TOKENS / sizeof TOKENS[0]; ti++)
            for (int k = 1; k <= 3 && k <= E; k++) {
                int T = TOKENS[ti];
                size_t nx = (size_t)T * D, nk = (size_t)T * k;
                snprintf(what, sizeof what, "experts %s E %d D %d I %d, %d tokens top-%d", fmt, E, D, I, T, k);
                float *x = rand_floats(&rng, nx, -2, 2), *w = rand_floats(&rng, nk, 0.05, 1);
                int32_t *idx = malloc(sizeof(int32_t) * nk);
                for (int t = 0; t < T; t++)   /* k distinct experts a token */
                    for (int j = 0; j < k; j++) {
                        int e;
                        int again;
                        do {
                            e = (int)(test_rand_u64(&rng) % (uint64_t)E);
                            again = 0;
                            for (int i = 0; i < j; i++) again |= idx[t * k + i] == e;
                        } while (again);
                        idx[t * k + j] = e;
                    }
                double *ref = malloc(sizeof(double) * nx), *bound = malloc(sizeof(double) * nx);
                test_switchglu_reference(&g, &u, &d, x, T, idx, w, k, ref, bound);
                float *want = malloc(sizeof(float) * nx), *fused = malloc(sizeof(float) * nx);
                float *unfused = malloc(sizeof(float) * nx);
                OK(cpu->experts(cpu, xcpu, x, T, idx, w, k, want));
                float *dx = dev_from(x, sizeof(float) * nx), *dw = dev_from(w, sizeof(float) * nk);
                int32_t *di = dev_from(idx, sizeof(int32_t) * nk);
                float *dy = dev_poisoned(nx);
                OK(gpu->experts_set_fused(gpu, xg, 1));
                assert_true(gpu->experts_fused(xg));
                OK(gpu->experts(gpu, xg, dx, T, di, dw, k, dy));
                to_host(fused, dy, sizeof(float) * nx);
                OK(gpu->experts_set_fused(gpu, xg, 0));
                assert_false(gpu->experts_fused(xg));
                OK(gpu->experts(gpu, xg, dx, T, di, dw, k, dy));
                to_host(unfused, dy, sizeof(float) * nx);
                expect_experts_close(what, T, nx, fused, ref, bound, want);
                snprintf(what + strlen(what), sizeof what - strlen(what), ": fused vs unfused");
                expect_bitwise(what, unfused, fused, nx);
                /* an index outside the layer: an error at the next download */
                if (ti == 0 || ti == 4) {
                    idx[nk - 1] = E;
                    OK(gpu->upload(gpu, di, idx, sizeof(int32_t) * nk));
                    OK(gpu->experts(gpu, xg, dx, T, di, dw, k, dy));
                    assert_int_equal(gpu->download(gpu, unfused, dy, sizeof(float) * nx), MOE_ERR_RANGE);
                    assert_non_null(strstr(moe_last_error(), "expert index"));
                }
                gpu->free(gpu, dx), gpu->free(gpu, dw), gpu->free(gpu, di), gpu->free(gpu, dy);
                free(x), free(w), free(idx), free(ref), free(bound), free(want), free(fused), free(unfused);
            }
        gpu->experts_free(gpu, xg), cpu->experts_free(cpu, xcpu);
        test_proj_free(&g), test_proj_free(&u), test_proj_free(&d);
    }
}

/* ---- the public expert layer on the GPU (moe/switchglu.h, device cuda) ---- */

/* k distinct experts a token for T tokens, scores in [0.05, 1) */
static void route(uint64_t *rng, int T, int k, int E, int32_t *idx, float *w)
{
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, again;
            do {
                e = (int)(test_rand_u64(rng) % (uint64_t)E);
                again = 0;
                for (int i = 0; i < j; i++) again |= idx[t * k + i] == e;
            } while (again);
            idx[t * k + j] = e;
            w[t * k + j] = (float)test_rand_uniform(rng, 0.05, 1);
        }
}

/* The layer a program makes with config.device = MOE_DEVICE_CUDA against
 * the same layer on the CPU: the expert layer's tolerances (a float64
 * reference and the CPU), fused and unfused the same bits, the timing call
 * giving the forward's output, host-side checks and the device's faults as
 * errors; then the GPU bandwidth probe. */
static void public_layer_matches(void **state)
{
    (void)state;
    NEED_GPU();
    uint64_t rng = 93;
    static const experts_case CASES[] = {
        { { 0, MOE_DTYPE_F32, 0 }, 5, 37, 45 },    { { 0, MOE_DTYPE_BF16, 0 }, 6, 64, 40 },
        { { 4, MOE_DTYPE_BF16, 64 }, 8, 128, 64 }, { { 8, MOE_DTYPE_BF16, 64 }, 7, 128, 192 },
    };
    static const int TOKENS[] = { 1, 5, 70 };
    enum { ROUTINGS = 3 };
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const experts_case *xc = &CASES[c];
        int E = xc->E, D = xc->D, I = xc->I;
        char what[160], fmt[64];
        format_name(&xc->f, fmt, sizeof fmt);
        test_proj g, u, d;
        experts_make(xc, &rng, &g, &u, &d);
        moe_switchglu_config cfg = moe_switchglu_default_config(E, D, I);
        moe_switchglu *lc, *lg;
        OK(moe_switchglu_create_stacked(&cfg, &g.w, &u.w, &d.w, &lc));
        cfg.device = MOE_DEVICE_CUDA;
        OK(moe_switchglu_create_stacked(&cfg, &g.w, &u.w, &d.w, &lg));
        assert_int_equal(moe_switchglu_device(lg), MOE_DEVICE_CUDA);
        assert_int_equal(moe_switchglu_device(lc), MOE_DEVICE_CPU);
        assert_int_equal(moe_switchglu_weight_bytes(lg), moe_switchglu_weight_bytes(lc));
        assert_true(moe_switchglu_fused(lg));
        for (size_t ti = 0; ti < sizeof TOKENS / sizeof TOKENS[0]; ti++)
            for (int k = 1; k <= 3 && k <= E; k++) {
                int T = TOKENS[ti];
                size_t nx = (size_t)T * D, nk = (size_t)T * k;
                snprintf(what, sizeof what, "public layer %s E %d D %d I %d, %d tokens top-%d", fmt, E, D, I, T, k);
                float *x = rand_floats(&rng, nx, -2, 2), *w = malloc(sizeof(float) * nk * ROUTINGS);
                int32_t *idx = malloc(sizeof(int32_t) * nk * ROUTINGS);
                route(&rng, T * ROUTINGS, k, E, idx, w);
                double *ref = malloc(sizeof(double) * nx), *bound = malloc(sizeof(double) * nx);
                test_switchglu_reference(&g, &u, &d, x, T, idx, w, k, ref, bound);
                float *want = malloc(sizeof(float) * nx), *fused = malloc(sizeof(float) * nx);
                float *unfused = malloc(sizeof(float) * nx), *timed = malloc(sizeof(float) * nx);
                OK(moe_switchglu_forward(lc, x, T, idx, w, k, want));
                OK(moe_switchglu_set_fused(lg, 1));
                OK(moe_switchglu_forward(lg, x, T, idx, w, k, fused));
                expect_experts_close(what, T, nx, fused, ref, bound, want);
                OK(moe_switchglu_set_fused(lg, 0));
                assert_false(moe_switchglu_fused(lg));
                OK(moe_switchglu_forward(lg, x, T, idx, w, k, unfused));
                snprintf(what + strlen(what), sizeof what - strlen(what), ": unfused vs fused");
                expect_bitwise(what, unfused, fused, nx);
                /* the timing call, unfused: 4 calls over 3 routings end on routing 0 */
                double s = 0;
                OK(moe_switchglu_time(lg, x, T, idx, w, k, ROUTINGS, 4, timed, &s));
                assert_true(s > 0);
                snprintf(what + strlen(what), sizeof what - strlen(what), ", timed");
                expect_bitwise(what, timed, unfused, nx);
                OK(moe_switchglu_set_fused(lg, 1));
                /* an index outside the layer: refused on the host, as on the CPU */
                idx[nk - 1] = E;
                assert_int_equal(moe_switchglu_forward(lg, x, T, idx, w, k, fused), MOE_ERR_RANGE);
                assert_non_null(strstr(moe_last_error(), "is outside 0.."));
                assert_int_equal(moe_switchglu_time(lg, x, T, idx, w, k, ROUTINGS, 2, fused, &s), MOE_ERR_RANGE);
                free(x), free(w), free(idx), free(ref), free(bound), free(want), free(fused), free(unfused);
                free(timed);
            }
        /* layers on the GPU keep their own workspaces; one on each device cannot share */
        assert_int_equal(moe_switchglu_share_workspace(lg, lc), MOE_ERR_INVALID_ARG);
        assert_non_null(strstr(moe_last_error(), "a layer on the CPU and one on a GPU"));
        moe_switchglu *lg2;
        OK(moe_switchglu_create(&cfg, &g.w, &u.w, &d.w, &lg2));
        OK(moe_switchglu_share_workspace(lg2, lg));
        /* a layer with experts missing refuses to run */
        float x1[128] = { 0 }, y1[128], w1 = 1;
        int32_t i1 = 0;
        assert_int_equal(moe_switchglu_forward(lg2, x1, 1, &i1, &w1, 1, y1), MOE_ERR_INVALID_ARG);
        assert_non_null(strstr(moe_last_error(), "expert 0 was never loaded"));
        moe_switchglu_free(lg2);
        moe_switchglu_free(lg), moe_switchglu_free(lc);
        test_proj_free(&g), test_proj_free(&u), test_proj_free(&d);
    }
    /* the floor's bandwidth: a real GPU streams hundreds of GB/s at least */
    double gbps = 0;
    OK(moe_device_bandwidth(MOE_DEVICE_CUDA, (size_t)256 << 20, 3, &gbps));
    print_message("  GPU bandwidth probe (256 MiB): %.0f GB/s\n", gbps);
    assert_true(gbps > 100 && gbps < 100000);
}

/* ---- whole models on the reference fixtures ---- */

/* A fixture on the GPU: float activations (the CPU's exact path, for its
 * tolerances) and a cache of kv_dtype. */
static moe_model_options gpu_options(moe_dtype kv_dtype)
{
    moe_model_options o = moe_model_default_options();
    o.device = MOE_DEVICE_CUDA;
    o.activations = MOE_ACT_FLOAT;
    o.kv_dtype = kv_dtype;
    return o;
}

static void model_fixtures(void **state)
{
    (void)state;
    NEED_GPU();
    for (size_t f = 0; f < TEST_NUM_FIXTURES; f++) {
        const test_fixture *fx = &TEST_FIXTURES[f];
        test_reference r;
        test_reference_load(fx->name, &r);
        char what[160];
        moe_model_options o = gpu_options(MOE_DTYPE_F32);
        moe_model *m = test_fixture_model(fx->name, &o);
        moe_model_info info = moe_model_get_info(m);
        assert_string_equal(info.device, "cuda");
        assert_int_equal(info.vocab_size, r.vocab);

        float *single = test_run_logits(m, &r, r.n);
        snprintf(what, sizeof what, "%s on cuda", fx->name);
        double worst = test_check_logits(what, &r, single, r.logits, fx->tol);
        test_check_greedy(what, m, &r);
        /* chunked prefill: matrix-vector and tiled paths mixed, within float rounding */
        static const int STEPS[] = { 1, 4, 7 };
        double worst_chunked = 0;
        for (size_t i = 0; i < sizeof STEPS / sizeof STEPS[0]; i++) {
            float *chunked = test_run_logits(m, &r, STEPS[i]);
            snprintf(what, sizeof what, "%s on cuda, chunks of %d", fx->name, STEPS[i]);
            worst_chunked = fmax(worst_chunked, test_check_logits(what, &r, chunked, single, 2e-5));
            free(chunked);
        }
        /* one token a step is captured once as a CUDA graph and replayed:
         * the same bits as the same steps launched one by one */
        float *graphed = test_run_logits(m, &r, 1);
        setenv("MOE_CUDA_GRAPHS", "0", 1);
        moe_model *plain_m = test_fixture_model(fx->name, &o);
        unsetenv("MOE_CUDA_GRAPHS");
        float *plain = test_run_logits(plain_m, &r, 1);
        if (memcmp(graphed, plain, sizeof(float) * (size_t)r.n * r.vocab) != 0)
            fail_msg("%s: replayed steps and plain launches give different logits", fx->name);
        free(plain);
        moe_model_free(plain_m);
        /* unfused: the same sums in the same order (one token a step too:
         * the switch drops the captured step) */
        OK(moe_model_set_fused(m, 0));
        float *unfused = test_run_logits(m, &r, r.n), *unfused1 = test_run_logits(m, &r, 1);
        if (memcmp(unfused, single, sizeof(float) * (size_t)r.n * r.vocab) != 0 ||
            memcmp(unfused1, graphed, sizeof(float) * (size_t)r.n * r.vocab) != 0)
            fail_msg("%s: fused and unfused logits differ on cuda", fx->name);
        print_message("  %-28s largest error %.2e (limit %.0e), chunked vs single %.2e, graphs = plain, "
                      "fused = unfused\n", fx->name, worst, fx->tol, worst_chunked);
        free(unfused), free(unfused1), free(graphed);
        free(single);
        moe_model_free(m);
        moe_st_close(r.file);
    }
}

/* Whole models with an 8-bit cache on the GPU, held to the CPU's Q8 rules
 * (tests/support/model_fixtures.c, test_kv_q8_model.c): logits against
 * transformers' (median and largest row), chunked prefill against the
 * single pass and the GPU against the CPU's own Q8 cache within
 * TEST_Q8_CHUNKS (float rounding before quantizing moves a code by a step
 * now and then), greedy equal to an f16 cache's on the GPU up to a near
 * tie; one-token steps replayed as CUDA graphs (the store's row and
 * attention's length read on the device) the same bits as plain launches. */
static void fixture_q8(const test_fixture *fx)
{
    test_reference r;
    test_reference_load(fx->name, &r);
    char what[160];
    size_t nl = (size_t)r.n * r.vocab;
    moe_model_options o = gpu_options(MOE_DTYPE_Q8);
    moe_model *m = test_fixture_model(fx->name, &o);
    moe_model_info info = moe_model_get_info(m);
    assert_string_equal(info.device, "cuda");
    assert_int_equal(info.kv_dtype, MOE_DTYPE_Q8);

    float *single = test_run_logits(m, &r, r.n);
    snprintf(what, sizeof what, "%s q8 cache on cuda", fx->name);
    test_check_q8_logits(what, &r, single);
    static const int STEPS[] = { 1, 5 };
    double worst_chunked = 0;
    float *graphed = NULL;
    for (size_t i = 0; i < sizeof STEPS / sizeof STEPS[0]; i++) {
        float *chunked = test_run_logits(m, &r, STEPS[i]);
        snprintf(what, sizeof what, "%s q8 cache on cuda, chunks of %d", fx->name, STEPS[i]);
        worst_chunked = fmax(worst_chunked, test_check_logits(what, &r, chunked, single, TEST_Q8_CHUNKS));
        if (STEPS[i] == 1) graphed = chunked;
        else free(chunked);
    }
    setenv("MOE_CUDA_GRAPHS", "0", 1);
    moe_model *plain_m = test_fixture_model(fx->name, &o);
    unsetenv("MOE_CUDA_GRAPHS");
    float *plain = test_run_logits(plain_m, &r, 1);
    if (memcmp(graphed, plain, sizeof(float) * nl) != 0)
        fail_msg("%s: with a q8 cache, replayed steps and plain launches give different logits", fx->name);
    free(plain), free(graphed);
    moe_model_free(plain_m);

    o.device = MOE_DEVICE_CPU;
    moe_model *cpu_m = test_fixture_model(fx->name, &o);
    float *on_cpu = test_run_logits(cpu_m, &r, r.n);
    snprintf(what, sizeof what, "%s q8 cache, cuda against cpu", fx->name);
    double worst_cpu = test_check_logits(what, &r, single, on_cpu, TEST_Q8_CHUNKS);
    free(on_cpu);
    moe_model_free(cpu_m);

    o.device = MOE_DEVICE_CUDA;
    o.kv_dtype = MOE_DTYPE_F16;
    moe_model *half = test_fixture_model(fx->name, &o);
    snprintf(what, sizeof what, "%s q8 cache on cuda", fx->name);
    test_check_greedy_q8(what, m, half, &r);
    moe_model_free(half);
    print_message("  %-28s q8: chunked vs single %.2e, cuda vs cpu %.2e (limit %.0e), graphs = plain\n", fx->name,
                  worst_chunked, worst_cpu, TEST_Q8_CHUNKS);
    free(single);
    moe_model_free(m);
    moe_st_close(r.file);
}

static void model_fixtures_q8(void **state)
{
    (void)state;
    NEED_GPU();
    for (size_t f = 0; f < TEST_NUM_FIXTURES; f++) fixture_q8(&TEST_FIXTURES[f]);
}

/* The default options stay on the CPU; auto and cuda take the GPU. */
static void device_choice(void **state)
{
    (void)state;
    NEED_GPU();
    assert_int_equal(moe_device_available(MOE_DEVICE_CUDA), MOE_OK);
    char dir[1024];
    test_fixture_path(dir, sizeof dir, "olmoe/base-q4", "");
    static const struct { int device; const char *name; } CASES[] = {
        { MOE_DEVICE_CPU, "cpu" }, { MOE_DEVICE_AUTO, "cuda" }, { MOE_DEVICE_CUDA, "cuda" },
    };
    for (size_t i = 0; i < 3; i++) {
        moe_model_options o = moe_model_default_options();
        o.device = CASES[i].device;
        moe_model *m;
        OK(moe_model_load(dir, &o, &m));
        moe_model_info info = moe_model_get_info(m);
        assert_string_equal(info.device, CASES[i].name);
        /* float activations on the GPU; a quantized model's cache in halves
         * there (a long context's decode is the cache's bytes) */
        if (o.device != MOE_DEVICE_CPU) {
            assert_int_equal(info.activations, MOE_ACT_FLOAT);
            assert_int_equal(info.kv_dtype, MOE_DTYPE_F16);
        }
        moe_model_free(m);
    }
    moe_model_options o = moe_model_default_options();
    o.device = 7;
    moe_model *m;
    assert_int_equal(moe_model_load(dir, &o, &m), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "device 7 is not a moe_device"));
}

static int setup(void **state)
{
    (void)state;
    cpu = moe_backend_cpu_create();
    gpu = moe_backend_cuda_create();
    have_gpu = gpu != NULL;
    if (!gpu) snprintf(skip_reason, sizeof skip_reason, "%s", moe_last_error());
    return cpu ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (gpu) gpu->destroy(gpu);
    if (cpu) cpu->destroy(cpu);
    gpu = cpu = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rmsnorm_matches),   cmocka_unit_test(linear_matches),  cmocka_unit_test(linear_errors),
        cmocka_unit_test(embed_matches),     cmocka_unit_test(split_clip_add_match), cmocka_unit_test(rope_matches),
        cmocka_unit_test(kv_store_matches),  cmocka_unit_test(kv_store_q8_matches), cmocka_unit_test(attention_matches),
        cmocka_unit_test(router_matches),    cmocka_unit_test(argmax_matches),      cmocka_unit_test(experts_match),       cmocka_unit_test(public_layer_matches),
        cmocka_unit_test(model_fixtures),    cmocka_unit_test(model_fixtures_q8),   cmocka_unit_test(device_choice),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    /* 77: ctest's skip (SKIP_RETURN_CODE) when nothing could run */
    if (!failed && !have_gpu) {
        printf("test_cuda_backend: skipped: %s\n", skip_reason);
        return 77;
    }
    return failed;
}
