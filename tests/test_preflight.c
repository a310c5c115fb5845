/* tests/test_preflight.c — the memory check before loading, by device: a
 * model bound for the GPU is held up to the GPU's free memory, one for the
 * CPU to the host's available memory, unchanged.
 *   - the decision (model_memory_estimate) is the same arithmetic on either
 *     device's number: a model that fits the host may not fit a small GPU,
 *     and the largest context follows the GPU's free bytes exactly;
 *   - moe_model_estimate_memory picks the device as loading would (CPU by
 *     default and for --device cpu, CUDA for cuda, auto as the backend
 *     choice goes) and reads that device's memory: the host's is the test's
 *     MOE_MEMORY_AVAILABLE; the GPU's is cudaMemGetInfo, unknown (0, so no
 *     refusal) where there is none to ask;
 *   - the cache's element type follows the device: int8 activations (and so
 *     an f16 cache) are a CPU choice, quantized weights on a GPU get f32;
 *   - moe_cuda_memory_info without CUDA or a GPU is an error naming why,
 *     with both numbers 0; with a GPU, free within total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/backend.h"
#include "core/error.h"
#include "io/model_config.h"
#include "kernels/kernels.h"
#include "models/preflight.h"
#include "support/model_fixtures.h"

/* The host's memory as the tests see it (core/memory.c reads this first). */
enum { HOST_BYTES = 123456789 };

static int set_host_memory(void **state)
{
    (void)state;
    char v[32];
    snprintf(v, sizeof v, "%d", HOST_BYTES);
    return setenv("MOE_MEMORY_AVAILABLE", v, 1);
}

static void decision_on_gpu_bytes(void **state)
{
    (void)state;
    moe_model_config c = { .hidden_size = 64, .num_layers = 4, .num_heads = 4, .num_kv_heads = 2, .head_dim = 16,
                           .expert_hidden = 32, .num_experts = 6, .top_k = 2, .vocab_size = 256, .max_position = 4096 };
    moe_model_memory host, gpu;
    /* 1 GB of host memory holds it; 3 MB free on the GPU does not */
    model_memory_estimate(&c, 2000000, MOE_DTYPE_F32, 1000, 8, MOE_DEVICE_CPU, 1000000000, &host);
    model_memory_estimate(&c, 2000000, MOE_DTYPE_F32, 1000, 8, MOE_DEVICE_CUDA, 3000000, &gpu);
    assert_int_equal(host.device, MOE_DEVICE_CPU);
    assert_int_equal(gpu.device, MOE_DEVICE_CUDA);
    assert_true(host.fits);
    assert_false(gpu.fits);
    assert_int_equal(gpu.available, 3000000);
    /* the needs do not depend on whose memory they are held to */
    assert_int_equal(gpu.total, host.total);
    assert_int_equal(gpu.weights, host.weights);
    assert_int_equal(gpu.kv_cache, host.kv_cache);
    assert_int_equal(gpu.activations, host.activations);
    /* 2 × 4 layers × 32 × 4 bytes a position: what 90% of 3 MB holds beside the weights and activations */
    assert_int_equal(gpu.kv_bytes_per_token, 1024);
    assert_int_equal(gpu.max_context, (int)((2700000 - gpu.weights - gpu.activations) / 1024));
    assert_true(gpu.max_context > 0 && gpu.max_context < 1000);
    /* exactly that many positions fit, one more does not */
    model_memory_estimate(&c, 2000000, MOE_DTYPE_F32, gpu.max_context, 8, MOE_DEVICE_CUDA, 3000000, &gpu);
    assert_true(gpu.fits);
    model_memory_estimate(&c, 2000000, MOE_DTYPE_F32, gpu.max_context + 1, 8, MOE_DEVICE_CUDA, 3000000, &gpu);
    assert_false(gpu.fits);
    /* weights alone over the GPU: no context */
    model_memory_estimate(&c, 2800000, MOE_DTYPE_F32, 1, 8, MOE_DEVICE_CUDA, 3000000, &gpu);
    assert_false(gpu.fits);
    assert_int_equal(gpu.max_context, 0);
    /* a GPU whose memory cannot be read: unknown, never a refusal */
    model_memory_estimate(&c, 2800000, MOE_DTYPE_F32, 1000, 8, MOE_DEVICE_CUDA, 0, &gpu);
    assert_true(gpu.fits);
    assert_int_equal(gpu.max_context, INT32_MAX);
}

static int gpu_present(void)
{
    size_t f, t;
    return moe_cuda_memory_info(&f, &t) == MOE_OK;
}

static void cuda_memory_info(void **state)
{
    (void)state;
    size_t f = 1, t = 1;
    moe_status st = moe_cuda_memory_info(&f, &t);
    if (st == MOE_OK) {
        assert_true(t > 0 && f <= t);
        return;
    }
    assert_int_equal(st, MOE_ERR_UNSUPPORTED);
    assert_true(strstr(moe_last_error(), "built without CUDA") || strstr(moe_last_error(), "no CUDA device"));
    assert_int_equal(f, 0);
    assert_int_equal(t, 0);
}

static void estimate(const char *fixture, int device, int kv, moe_model_memory *m)
{
    char dir[512];
    test_fixture_path(dir, sizeof dir, fixture, "");
    moe_model_options o = moe_model_default_options();
    o.device = device;
    o.kv_dtype = kv;
    assert_int_equal(moe_model_estimate_memory(dir, &o, 100, 16, m), MOE_OK);
}

static void device_memory(void **state)
{
    (void)state;
    char dir[512];
    test_fixture_path(dir, sizeof dir, "olmoe/base", "");
    /* the defaults, and --device cpu: the host's memory, as before */
    moe_model_memory def, cpu, cuda, autom;
    assert_int_equal(moe_model_estimate_memory(dir, NULL, 100, 16, &def), MOE_OK);
    estimate("olmoe/base", MOE_DEVICE_CPU, -1, &cpu);
    assert_int_equal(def.device, MOE_DEVICE_CPU);
    assert_int_equal(cpu.device, MOE_DEVICE_CPU);
    assert_int_equal(def.available, HOST_BYTES);
    assert_int_equal(cpu.available, HOST_BYTES);
    assert_int_equal(def.total, cpu.total);
    /* cuda: the GPU's free memory, never the host's */
    estimate("olmoe/base", MOE_DEVICE_CUDA, -1, &cuda);
    assert_int_equal(cuda.device, MOE_DEVICE_CUDA);
    assert_int_equal(cuda.total, cpu.total);
    if (gpu_present()) {
        assert_true(cuda.available > 0);
    } else {
        /* nothing to ask: unknown, so nothing is refused here (loading says why it cannot) */
        assert_int_equal(cuda.available, 0);
        assert_true(cuda.fits);
        assert_int_equal(cuda.max_context, INT32_MAX);
    }
    /* auto: wherever loading would put it */
    estimate("olmoe/base", MOE_DEVICE_AUTO, -1, &autom);
    assert_int_equal(autom.device, moe_device_available(MOE_DEVICE_CUDA) == MOE_OK ? MOE_DEVICE_CUDA : MOE_DEVICE_CPU);
    if (autom.device == MOE_DEVICE_CPU) assert_int_equal(autom.available, HOST_BYTES);
}

static void cache_type_by_device(void **state)
{
    (void)state;
    moe_model_memory cpu, cuda, asked;
    /* quantized weights: int8 activations and an f16 cache on a CPU that has
     * int8 dot products; float activations and an f16 cache on a GPU */
    estimate("olmoe/base-q4", MOE_DEVICE_CPU, -1, &cpu);
    estimate("olmoe/base-q4", MOE_DEVICE_CUDA, -1, &cuda);
    assert_int_equal(cpu.kv_dtype, moe_kernels()->panel_gemv_i8 ? MOE_DTYPE_F16 : MOE_DTYPE_F32);
    assert_int_equal(cuda.kv_dtype, MOE_DTYPE_F16);
    assert_int_equal(cpu.kv_cache, cuda.kv_cache * (cpu.kv_dtype == MOE_DTYPE_F16 ? 1 : 2));
    /* the option wins on either */
    estimate("olmoe/base-q4", MOE_DEVICE_CUDA, MOE_DTYPE_F32, &asked);
    assert_int_equal(asked.kv_dtype, MOE_DTYPE_F32);
    assert_int_equal(asked.kv_cache, 2 * cuda.kv_cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decision_on_gpu_bytes),
        cmocka_unit_test(cuda_memory_info),
        cmocka_unit_test(device_memory),
        cmocka_unit_test(cache_type_by_device),
    };
    return cmocka_run_group_tests(tests, set_host_memory, NULL);
}
