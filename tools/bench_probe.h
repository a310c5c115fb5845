/* tools/bench_probe.h — machine floors for `moe bench-layer`: how fast this
 * machine can read memory and how many fp32 FLOP/s (and int8 dot-product
 * operations/s) it can do, measured in the same run as the benchmark so that
 * the floors describe the same conditions (threads, clock, neighbours on the
 * host). */
#ifndef MOE_TOOLS_BENCH_PROBE_H
#define MOE_TOOLS_BENCH_PROBE_H

#include <stddef.h>

/* Read bandwidth in GB/s (1e9 bytes/s): every thread of moe_parallel_run sums
 * its slice of a `bytes` buffer; the median of `passes` timed passes. The
 * buffer is allocated, touched and freed inside the call. Returns a negative
 * value when the buffer cannot be allocated (moe_last_error() says why). */
double bench_probe_bandwidth_gbps(size_t bytes, int passes);

/* Peak fp32 GFLOP/s over all threads, best of a few runs of a probe with many
 * independent multiply-add chains. The variant is picked for the ISA name
 * (one starting "avx512" or "avx2": vector FMA of that width; anything else:
 * plain SSE multiply then add); *variant is set to what ran. */
double bench_probe_peak_gflops(const char *isa, const char **variant);

/* Peak int8 dot-product rate in G operations/s (a multiply-add counts 2),
 * over all threads, best of a few runs: chains of 512-bit vpdpbusd when the
 * ISA is "avx512vnni" (and this CPU runs it); 0 for any other ISA, with
 * *variant "none". *variant is set to what ran. */
double bench_probe_peak_i8_gops(const char *isa, const char **variant);

/* Monotonic seconds, and the median of v[0..n) (sorts v). */
double bench_now_s(void);
double bench_median(double *v, int n);

#endif
