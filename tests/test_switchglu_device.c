/* tests/test_switchglu_device.c — the public layer's device and timing
 * calls as any machine runs them: moe_switchglu_time (a positive time per
 * call, the output the forward gives for the last call's routing, every
 * routing checked before a call runs, bad counts refused); the config's
 * device (the CPU by default, an unknown device refused, cuda where the
 * build or the machine has none refused with MOE_ERR_UNSUPPORTED saying
 * why, auto taking the GPU where there is one and the CPU otherwise, the
 * layer the same either way); moe_device_bandwidth's refusals; and the
 * staging a layer on a GPU does (backend/device_layer.c: inputs copied
 * over, routings taken in turn, buffers grown, the output copied back)
 * run over the CPU backend, whose copies are plain memcpy.
 * tests/test_cuda_backend.c holds the same layer on a GPU against the CPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device_layer.h"
#include "layers/expert_store.h"
#include "moe/device.h"
#include "moe/switchglu.h"
#include "support/testutil.h"

#define OK(call)                                                              \
    do {                                                                      \
        moe_status ok_st_ = (call);                                           \
        if (ok_st_ != MOE_OK) fail_msg("%s: %s", #call, moe_last_error());    \
    } while (0)

enum { E = 6, D = 64, I = 32, K = 2, T = 5, ROUTINGS = 3 };

typedef struct {
    test_proj g, u, d;
    float x[T * D];
    int32_t idx[ROUTINGS * T * K];   /* [ROUTINGS, T, K] */
    float scores[ROUTINGS * T * K];
} layer_data;

static void data_make(layer_data *L, uint64_t seed)
{
    uint64_t rng = seed;
    test_proj_make(&L->g, &rng, E, I, D, 4, MOE_DTYPE_BF16, 32);
    test_proj_make(&L->u, &rng, E, I, D, 4, MOE_DTYPE_BF16, 32);
    test_proj_make(&L->d, &rng, E, D, I, 4, MOE_DTYPE_BF16, 32);
    test_rand_floats(&rng, L->x, T * D, -1, 1);
    for (int p = 0; p < ROUTINGS * T; p++) {   /* two distinct experts a token */
        int a = (int)(test_rand_u64(&rng) % E), b = (a + 1 + (int)(test_rand_u64(&rng) % (E - 1))) % E;
        L->idx[p * K] = a, L->idx[p * K + 1] = b;
        L->scores[p * K] = (float)test_rand_uniform(&rng, 0.05, 1);
        L->scores[p * K + 1] = (float)test_rand_uniform(&rng, 0.05, 1);
    }
}

static void data_free(layer_data *L) { test_proj_free(&L->g), test_proj_free(&L->u), test_proj_free(&L->d); }

static moe_status layer_make(const layer_data *L, int device, moe_switchglu **out)
{
    moe_switchglu_config cfg = moe_switchglu_default_config(E, D, I);
    cfg.device = device;
    return moe_switchglu_create_stacked(&cfg, &L->g.w, &L->u.w, &L->d.w, out);
}

/* The time call runs the forward it times: y is the forward's output for
 * the last call's routing, bit for bit, fused and unfused, and each call
 * takes a positive time. */
static void time_matches_forward(void **state)
{
    (void)state;
    layer_data L;
    data_make(&L, 11);
    moe_switchglu *l;
    OK(layer_make(&L, MOE_DEVICE_CPU, &l));
    assert_int_equal(moe_switchglu_device(l), MOE_DEVICE_CPU);
    for (int fused = 1; fused >= 0; fused--) {
        OK(moe_switchglu_set_fused(l, fused));
        static const int ITERS[] = { 1, 2, 5, 7 };
        for (size_t i = 0; i < sizeof ITERS / sizeof ITERS[0]; i++) {
            int iters = ITERS[i], last = (iters - 1) % ROUTINGS;
            float want[T * D], got[T * D];
            OK(moe_switchglu_forward(l, L.x, T, L.idx + last * T * K, L.scores + last * T * K, K, want));
            double s = -1;
            memset(got, 0xff, sizeof got);
            OK(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, ROUTINGS, iters, got, &s));
            assert_true(s > 0 && s < 10);
            if (memcmp(got, want, sizeof got) != 0)
                fail_msg("time, %d calls over %d routings, fused %d: y is not the forward's of routing %d", iters,
                         ROUTINGS, fused, last);
        }
    }
    /* one routing, one call: a single forward timed, as the benchmark's CPU samples are */
    float y[T * D], want[T * D];
    double s = 0;
    OK(moe_switchglu_time(l, L.x, T, L.idx + T * K, L.scores + T * K, K, 1, 1, y, &s));
    OK(moe_switchglu_forward(l, L.x, T, L.idx + T * K, L.scores + T * K, K, want));
    assert_true(s > 0);
    assert_memory_equal(y, want, sizeof y);
    /* no tokens: nothing to do, in no time to speak of */
    OK(moe_switchglu_time(l, L.x, 0, L.idx, L.scores, K, ROUTINGS, 3, y, &s));
    assert_true(s >= 0);
    moe_switchglu_free(l);
    data_free(&L);
}

static void time_errors(void **state)
{
    (void)state;
    layer_data L;
    data_make(&L, 12);
    moe_switchglu *l;
    OK(layer_make(&L, MOE_DEVICE_CPU, &l));
    float y[T * D];
    double s = 1;
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, 0, 3, y, &s), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "0 routings and 3 calls (both must be at least 1)"));
    assert_true(s == 0);
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, 2, 0, y, &s), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, 2, 3, y, NULL), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "seconds is NULL"));
    assert_int_equal(moe_switchglu_time(NULL, L.x, T, L.idx, L.scores, K, 2, 3, y, &s), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, 2, 3, NULL, &s), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, 2, 3, (float *)L.x, &s), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_switchglu_time(l, L.x, -1, L.idx, L.scores, K, 2, 3, y, &s), MOE_ERR_SHAPE);
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, E + 1, 2, 3, y, &s), MOE_ERR_SHAPE);
    /* a bad index in the last routing is found before any call runs: y untouched */
    L.idx[ROUTINGS * T * K - 1] = E;
    for (size_t i = 0; i < T * D; i++) y[i] = 12345.0f;
    assert_int_equal(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, ROUTINGS, 1, y, &s), MOE_ERR_RANGE);
    assert_non_null(strstr(moe_last_error(), "expert index 6 at token 4, slot 1 is outside 0..5"));
    for (size_t i = 0; i < T * D; i++) assert_true(y[i] == 12345.0f);
    /* only the routings asked for are read */
    OK(moe_switchglu_time(l, L.x, T, L.idx, L.scores, K, ROUTINGS - 1, 4, y, &s));
    moe_switchglu_free(l);
    data_free(&L);
}

/* The device field: CPU by default, an unknown one refused, cuda refused
 * with the reason where this build or machine cannot run it. */
static void device_choice(void **state)
{
    (void)state;
    assert_int_equal(moe_switchglu_default_config(E, D, I).device, MOE_DEVICE_CPU);
    assert_int_equal(moe_switchglu_device(NULL), MOE_DEVICE_CPU);
    layer_data L;
    data_make(&L, 13);
    moe_switchglu *l = (moe_switchglu *)&L;   /* must be reset to NULL on failure */
    assert_int_equal(layer_make(&L, 7, &l), MOE_ERR_INVALID_ARG);
    assert_null(l);
    assert_non_null(strstr(moe_last_error(), "switchglu: device 7 is not a moe_device"));
    assert_int_equal(layer_make(&L, -2, &l), MOE_ERR_INVALID_ARG);

    int gpu = moe_device_available(MOE_DEVICE_CUDA) == MOE_OK;
    moe_status st = layer_make(&L, MOE_DEVICE_CUDA, &l);
    if (!gpu) {
        assert_int_equal(st, MOE_ERR_UNSUPPORTED);
        assert_null(l);
        /* what was asked, then why not: "built without CUDA" or "no CUDA device found" */
        const char *e = moe_last_error();
        assert_non_null(strstr(e, "switchglu: device cuda is not available: "));
        assert_true(strstr(e, "without CUDA") || strstr(e, "CUDA device"));
        print_message("  cuda refused: %s\n", e);
    } else {
        OK(st);
        assert_int_equal(moe_switchglu_device(l), MOE_DEVICE_CUDA);
        moe_switchglu_free(l);
    }

    /* auto: the GPU where there is one, else the CPU; the same layer either way */
    moe_switchglu *a, *c;
    OK(layer_make(&L, MOE_DEVICE_AUTO, &a));
    OK(layer_make(&L, MOE_DEVICE_CPU, &c));
    assert_int_equal(moe_switchglu_device(a), gpu ? MOE_DEVICE_CUDA : MOE_DEVICE_CPU);
    assert_int_equal(moe_switchglu_weight_bytes(a), moe_switchglu_weight_bytes(c));
    float ya[T * D], yc[T * D];
    OK(moe_switchglu_forward(a, L.x, T, L.idx, L.scores, K, ya));
    OK(moe_switchglu_forward(c, L.x, T, L.idx, L.scores, K, yc));
    for (size_t i = 0; i < T * D; i++)   /* bits on the CPU; float32 rounding on a GPU */
        if (!(fabsf(ya[i] - yc[i]) <= (gpu ? 1e-5f * (1 + fabsf(yc[i])) : 0.0f)))
            fail_msg("auto layer y[%zu] = %.9g, CPU layer %.9g", i, (double)ya[i], (double)yc[i]);
    moe_switchglu_free(a);
    moe_switchglu_free(c);
    data_free(&L);
}

/* device_layer.c over the CPU backend: every step the GPU's layer takes,
 * giving the CPU layer's bits. */
static void device_layer_staging(void **state)
{
    (void)state;
    layer_data L;
    data_make(&L, 14);
    moe_switchglu *c;
    OK(layer_make(&L, MOE_DEVICE_CPU, &c));
    moe_switchglu_config cfg = moe_switchglu_default_config(E, D, I);
    moe_backend *b = moe_backend_cpu_create();
    assert_non_null(b);
    moe_device_layer *d;
    OK(moe_device_layer_create_on(b, &cfg, &L.g.w, &L.u.w, &L.d.w, &d));
    /* experts missing: the backend's layer refuses */
    float y[T * D], want[T * D];
    assert_int_equal(moe_device_layer_forward(d, L.x, T, L.idx, L.scores, K, y), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "was never loaded"));
    for (int e = 0; e < E; e++) {   /* one expert's slices of the stacked tensors */
        moe_expert_weights s[3];
        const test_proj *ps[3] = { &L.g, &L.u, &L.d };
        for (int i = 0; i < 3; i++) {
            const test_proj *p = ps[i];
            size_t wrow = (size_t)p->cols * p->w.bits / 8;
            size_t srow = (size_t)(p->cols / p->w.group_size) * moe_dtype_size(p->w.dtype);
            s[i] = p->w;
            s[i].weight = (const char *)p->w.weight + (size_t)e * p->rows * wrow;
            s[i].scales = (const char *)p->w.scales + (size_t)e * p->rows * srow;
            s[i].biases = (const char *)p->w.biases + (size_t)e * p->rows * srow;
        }
        OK(moe_device_layer_load(d, e, &s[0], &s[1], &s[2]));
    }
    assert_int_equal(moe_device_layer_bytes(d), moe_switchglu_weight_bytes(c));
    for (int fused = 1; fused >= 0; fused--) {
        OK(moe_device_layer_set_fused(d, fused));
        OK(moe_switchglu_set_fused(c, fused));
        /* tokens 2, then all (the buffers grow), then 1 (they are kept) */
        static const int TOKENS[] = { 2, T, 1 };
        for (size_t ti = 0; ti < 3; ti++) {
            int n = TOKENS[ti];
            int32_t idx[ROUTINGS * T * K];
            float sc[ROUTINGS * T * K];
            for (int q = 0; q < ROUTINGS; q++) {   /* the first n tokens of each routing */
                memcpy(idx + q * n * K, L.idx + q * T * K, sizeof(int32_t) * (size_t)(n * K));
                memcpy(sc + q * n * K, L.scores + q * T * K, sizeof(float) * (size_t)(n * K));
            }
            OK(moe_device_layer_forward(d, L.x, n, idx, sc, K, y));
            OK(moe_switchglu_forward(c, L.x, n, idx, sc, K, want));
            assert_memory_equal(y, want, sizeof(float) * (size_t)(n * D));
            /* five runs over three routings: the output is routing 1's */
            OK(moe_device_layer_stage(d, L.x, n, idx, sc, K, ROUTINGS));
            OK(moe_device_layer_sync(d));
            for (int q = 0; q < 5; q++) OK(moe_device_layer_run(d, q));
            OK(moe_device_layer_sync(d));
            memset(y, 0, sizeof y);
            OK(moe_device_layer_fetch(d, y));
            OK(moe_switchglu_forward(c, L.x, n, idx + n * K, sc + n * K, K, want));
            assert_memory_equal(y, want, sizeof(float) * (size_t)(n * D));
        }
    }
    moe_device_layer_free(d);
    moe_switchglu_free(c);
    data_free(&L);
}

static void bandwidth_errors(void **state)
{
    (void)state;
    double g = 1;
    assert_int_equal(moe_device_bandwidth(MOE_DEVICE_CPU, 1 << 30, 3, &g), MOE_ERR_UNSUPPORTED);
    assert_non_null(strstr(moe_last_error(), "only a GPU is probed"));
    assert_true(g == 0);
    assert_int_equal(moe_device_bandwidth(MOE_DEVICE_AUTO, 1 << 30, 3, &g), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_device_bandwidth((moe_device)7, 1 << 30, 3, &g), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_device_bandwidth(MOE_DEVICE_CUDA, 1 << 30, 3, NULL), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_device_bandwidth(MOE_DEVICE_CUDA, 4096, 3, &g), MOE_ERR_INVALID_ARG);
    assert_non_null(strstr(moe_last_error(), "4096 bytes would measure caches, not memory"));
    assert_int_equal(moe_device_bandwidth(MOE_DEVICE_CUDA, 1 << 30, 0, &g), MOE_ERR_INVALID_ARG);
    if (moe_device_available(MOE_DEVICE_CUDA) != MOE_OK) {
        assert_int_equal(moe_device_bandwidth(MOE_DEVICE_CUDA, 1 << 30, 3, &g), MOE_ERR_UNSUPPORTED);
        assert_non_null(strstr(moe_last_error(), "device bandwidth: device cuda is not available: "));
    }
}

/* A store described without memory (a layer on a GPU) has the row sizes of
 * one that holds the weights: create_stacked finds each expert's rows by them. */
static void store_described_as_allocated(void **state)
{
    (void)state;
    static const moe_panel_format FORMATS[] = {
        { MOE_WF_F32, MOE_DTYPE_F32, 0, 37 },   { MOE_WF_BF16, MOE_DTYPE_BF16, 0, 45 },
        { MOE_WF_Q4, MOE_DTYPE_BF16, 32, 96 },  { MOE_WF_Q8, MOE_DTYPE_F16, 64, 192 },
    };
    for (size_t i = 0; i < sizeof FORMATS / sizeof FORMATS[0]; i++) {
        moe_expert_store held, described;
        assert_int_equal(moe_expert_store_init(&held, &FORMATS[i], 5, 90, "test store"), MOE_OK);
        moe_expert_store_describe(&described, &FORMATS[i], 5, 90);
        assert_null(described.data);
        assert_int_equal(described.rows_per_expert, held.rows_per_expert);
        assert_int_equal(described.w_row_bytes, held.w_row_bytes);
        assert_int_equal(described.s_row_bytes, held.s_row_bytes);
        assert_int_equal(described.row_bytes, held.row_bytes);
        assert_true(described.w_row_bytes > 0 && (FORMATS[i].group_size == 0) == (described.s_row_bytes == 0));
        moe_expert_store_free(&held);
    }
}

/* moe_device_memory: the GPU's bytes in use, or a refusal that names why */
static void memory_reads(void **state)
{
    (void)state;
    size_t used = 1, total = 1;
    assert_int_equal(moe_device_memory(MOE_DEVICE_CPU, &used, &total), MOE_ERR_UNSUPPORTED);
    assert_non_null(strstr(moe_last_error(), "only a GPU's is read"));
    assert_true(used == 0 && total == 0);
    assert_int_equal(moe_device_memory(MOE_DEVICE_CUDA, NULL, &total), MOE_ERR_INVALID_ARG);
    assert_int_equal(moe_device_memory(MOE_DEVICE_CUDA, &used, NULL), MOE_ERR_INVALID_ARG);
    moe_status st = moe_device_memory(MOE_DEVICE_CUDA, &used, &total);
    if (moe_device_available(MOE_DEVICE_CUDA) == MOE_OK) {
        assert_int_equal(st, MOE_OK);
        assert_true(total > 0 && used > 0 && used <= total);
    } else {
        assert_int_not_equal(st, MOE_OK);
        assert_true(used == 0 && total == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(time_matches_forward),
        cmocka_unit_test(time_errors),
        cmocka_unit_test(device_choice),
        cmocka_unit_test(device_layer_staging),
        cmocka_unit_test(bandwidth_errors),
        cmocka_unit_test(memory_reads),
        cmocka_unit_test(store_described_as_allocated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
