/* backend/bandwidth.c — moe_device_bandwidth (moe/device.h): how fast a
 * GPU's memory streams, measured through its backend's add, for the
 * bandwidth floor of a benchmark on that GPU.
 *
 * An add (y += x) reads two buffers and writes one, as a device-to-device
 * copy reads one and writes one: a plain stream, what a kernel reading
 * weights at full speed approaches. Each timed pass queues several adds
 * and waits once, so the wait's latency is a small part of the time. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/memory.h"
#include "moe/device.h"

enum { ADDS_PER_PASS = 8, MAX_PASSES = 101 };

static const size_t MIN_BYTES = (size_t)8 << 20, ZERO_CHUNK = (size_t)4 << 20;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Both buffers zeroed, so the adds stay on ordinary numbers. */
static moe_status zero(moe_backend *b, void *dst, size_t bytes, const void *zeros)
{
    moe_status st = MOE_OK;
    for (size_t at = 0; at < bytes && st == MOE_OK; at += ZERO_CHUNK)
        st = b->upload(b, (char *)dst + at, zeros, bytes - at < ZERO_CHUNK ? bytes - at : ZERO_CHUNK);
    return st;
}

static moe_status measure(moe_backend *b, size_t n, int passes, double *gbps)
{
    float *x = b->alloc(b, n * sizeof(float), "bandwidth probe x");
    float *y = x ? b->alloc(b, n * sizeof(float), "bandwidth probe y") : NULL;
    void *zeros = moe_calloc(ZERO_CHUNK, "bandwidth probe zeros");
    double rate[MAX_PASSES];
    moe_status st = x && y && zeros ? MOE_OK : MOE_ERR_NOMEM;
    if (st == MOE_OK && (st = zero(b, x, n * sizeof(float), zeros)) == MOE_OK)
        st = zero(b, y, n * sizeof(float), zeros);
    if (st == MOE_OK && (st = b->add(b, n, y, x)) == MOE_OK)   /* untimed: the kernel loaded, clocks up */
        st = b->sync(b);
    for (int p = 0; p < passes && st == MOE_OK; p++) {
        double t0 = now_s();
        for (int i = 0; i < ADDS_PER_PASS && st == MOE_OK; i++) st = b->add(b, n, y, x);
        if (st == MOE_OK) st = b->sync(b);
        rate[p] = 3.0 * sizeof(float) * (double)n * ADDS_PER_PASS / (now_s() - t0) / 1e9;
    }
    if (st == MOE_OK) {   /* the median */
        for (int i = 1; i < passes; i++)
            for (int j = i; j > 0 && rate[j - 1] > rate[j]; j--) {
                double t = rate[j];
                rate[j] = rate[j - 1];
                rate[j - 1] = t;
            }
        *gbps = passes % 2 ? rate[passes / 2] : 0.5 * (rate[passes / 2 - 1] + rate[passes / 2]);
    }
    b->free(b, x), b->free(b, y);
    moe_free(zeros);
    return st;
}

moe_status moe_device_bandwidth(moe_device d, size_t bytes, int passes, double *gbps)
{
    if (!gbps) return moe_error_set(MOE_ERR_INVALID_ARG, "device bandwidth: gbps is NULL");
    *gbps = 0;
    if (d == MOE_DEVICE_CPU)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "device bandwidth: only a GPU is probed (device cuda); the host's "
                             "memory needs all its threads reading, not a device's add");
    if (d != MOE_DEVICE_CUDA)
        return moe_error_set(MOE_ERR_INVALID_ARG, "device bandwidth: device %d is not a GPU device (cuda %d)", (int)d,
                             MOE_DEVICE_CUDA);
    if (bytes < MIN_BYTES)
        return moe_error_set(MOE_ERR_INVALID_ARG, "device bandwidth: %zu bytes would measure caches, not memory "
                             "(at least %zu)", bytes, MIN_BYTES);
    if (passes < 1 || passes > MAX_PASSES)
        return moe_error_set(MOE_ERR_INVALID_ARG, "device bandwidth: %d passes is outside 1..%d", passes, MAX_PASSES);
    moe_backend *b = moe_backend_cuda_create();
    if (!b) {
        char why[512];
        snprintf(why, sizeof why, "%s", moe_last_error());
        return moe_error_set(MOE_ERR_UNSUPPORTED, "device bandwidth: device cuda is not available: %s", why);
    }
    moe_status st = measure(b, bytes / 2 / sizeof(float), passes, gbps);
    b->destroy(b);
    return st;
}
