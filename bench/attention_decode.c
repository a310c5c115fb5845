/* bench/attention_decode.c — decode attention (one query token) over each KV
 * cache format against its floor: the bytes of K and V it must read over the
 * read bandwidth `moe bench-layer`'s probe measures in the same run.
 *
 * A decode step reads every layer's cache once, so the caches of `--layers`
 * layers are kept (far more than the last-level cache) and each timing runs
 * them one after another, as a step does. The formats take turns within
 * each round, so that a neighbour's load falls on all of them; the figure
 * is the median of the rounds.
 *
 *   build-dir/bench_attention [--keys 8192] [--layers 16] [--heads 16]
 *       [--kv-heads 16] [--head-dim 128] [--kv f16,q8] [--rounds 7]
 *       [--threads N] [--isa NAME]
 *
 * Defaults: OLMoE-1B-7B's attention at 8192 tokens of context. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_probe.h"
#include "kernels/attention.h"
#include "moe/dtype.h"
#include "moe/runtime.h"

enum { MAX_KINDS = 3, MAX_ROUNDS = 101 };

static int arg_int(const char *v, int lo, int hi, const char *name)
{
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < lo || x > hi) {
        fprintf(stderr, "bench_attention: %s %s is not in %d..%d\n", name, v, lo, hi);
        exit(2);
    }
    return (int)x;
}

int main(int argc, char **argv)
{
    int keys = 8192, layers = 16, heads = 16, kv_heads = 16, D = 128, rounds = 7;
    const char *kinds = "f16,q8";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return fprintf(stderr, "bench_attention: %s needs a value (see the file's header)\n", a), 2;
        i++;
        if (!strcmp(a, "--keys")) keys = arg_int(v, 1, 1 << 20, a);
        else if (!strcmp(a, "--layers")) layers = arg_int(v, 1, 256, a);
        else if (!strcmp(a, "--heads")) heads = arg_int(v, 1, 256, a);
        else if (!strcmp(a, "--kv-heads")) kv_heads = arg_int(v, 1, 256, a);
        else if (!strcmp(a, "--head-dim")) D = arg_int(v, 1, MOE_ATTENTION_MAX_HEAD_DIM, a);
        else if (!strcmp(a, "--rounds")) rounds = arg_int(v, 1, MAX_ROUNDS, a);
        else if (!strcmp(a, "--kv")) kinds = v;
        else if (!strcmp(a, "--threads")) {
            if (moe_set_num_threads(arg_int(v, 1, 4096, a)) != MOE_OK) return fprintf(stderr, "%s\n", moe_last_error()), 1;
        } else if (!strcmp(a, "--isa")) {
            if (moe_cpu_select_isa(v) != MOE_OK) return fprintf(stderr, "%s\n", moe_last_error()), 1;
        } else
            return fprintf(stderr, "bench_attention: unknown option %s (see the file's header)\n", a), 2;
    }
    if (heads % kv_heads) return fprintf(stderr, "bench_attention: %d heads over %d kv heads\n", heads, kv_heads), 2;

    moe_dtype kv[MAX_KINDS];
    int nk = 0;
    char list[64];
    snprintf(list, sizeof list, "%s", kinds);
    for (char *t = strtok(list, ","); t && nk < MAX_KINDS; t = strtok(NULL, ","))
        if (!strcmp(t, "f32") || !strcmp(t, "f16") || !strcmp(t, "q8"))
            kv[nk++] = !strcmp(t, "f32") ? MOE_DTYPE_F32 : !strcmp(t, "f16") ? MOE_DTYPE_F16 : MOE_DTYPE_Q8;
        else
            return fprintf(stderr, "bench_attention: --kv %s: each of f32, f16, q8\n", t), 2;

    /* the caches: every layer's K and V rows from one set of random rows */
    size_t n = (size_t)kv_heads * D, qn = (size_t)heads * D;
    float *src = malloc(sizeof(float) * n * keys), *q = malloc(sizeof(float) * qn), *out = malloc(sizeof(float) * qn);
    char **cache = calloc((size_t)MAX_KINDS * layers * 2, sizeof *cache);
    if (!src || !q || !out || !cache) return fprintf(stderr, "bench_attention: out of memory\n"), 1;
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < n * keys; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        src[i] = (float)(x >> 40) / (float)(1u << 24) * 3.4641f - 1.7320508f;
    }
    for (size_t i = 0; i < qn; i++) q[i] = src[i] / 16;
    for (int k = 0; k < nk; k++) {
        size_t row = moe_kv_row_bytes(kv[k], kv_heads, D);
        for (int c = 0; c < 2 * layers; c++) {
            char *p = cache[(size_t)k * layers * 2 + c] = malloc(row * keys);
            if (!p) return fprintf(stderr, "bench_attention: out of memory for the caches\n"), 1;
            for (int j = 0; j < keys; j++) moe_kv_store(kv[k], src + (size_t)j * n, p + (size_t)j * row, n, D);
        }
    }

    double bw0 = bench_probe_bandwidth_gbps((size_t)1 << 30, 5), t[MAX_KINDS][MAX_ROUNDS];
    for (int r = 0; r < rounds; r++)
        for (int k = 0; k < nk; k++) {
            size_t stride = moe_kv_row_bytes(kv[k], kv_heads, D) / moe_dtype_size(kv[k]);
            double t0 = bench_now_s();
            for (int l = 0; l < layers; l++)
                moe_attention_causal(1, keys - 1, heads, kv_heads, D, 0.0884f, q, kv[k], cache[((size_t)k * layers + l) * 2],
                                     cache[((size_t)k * layers + l) * 2 + 1], stride, out);
            t[k][r] = (bench_now_s() - t0) / layers;
        }
    double bw1 = bench_probe_bandwidth_gbps((size_t)1 << 30, 5), bw = bw0 > bw1 ? bw0 : bw1;

    printf("decode attention: %d keys, %d heads over %d kv heads of %d, %d layers, %d threads, %s kernels\n", keys, heads,
           kv_heads, D, layers, moe_num_threads(), moe_cpu_isa());
    printf("read bandwidth probed before and after: %.1f, %.1f GB/s (floors use the higher)\n", bw0, bw1);
    printf("%-5s %10s %10s %9s %8s %6s\n", "cache", "ms/layer", "floor ms", "MB read", "GB/s", "%bw");
    for (int k = 0; k < nk; k++) {
        double med = bench_median(t[k], rounds), bytes = 2.0 * (double)moe_kv_row_bytes(kv[k], kv_heads, D) * keys;
        printf("%-5s %10.3f %10.3f %9.1f %8.1f %6.1f\n", kv[k] == MOE_DTYPE_Q8 ? "q8" : kv[k] == MOE_DTYPE_F16 ? "f16" : "f32",
               med * 1e3, bytes / bw / 1e6, bytes / 1e6, bytes / med / 1e9, 100 * bytes / med / 1e9 / bw);
    }
    for (size_t c = 0; c < (size_t)MAX_KINDS * layers * 2; c++) free(cache[c]);
    free(cache), free(src), free(q), free(out);
    return 0;
}
