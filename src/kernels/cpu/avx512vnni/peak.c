/* kernels/cpu/avx512vnni/peak.c — the int8 dot-product rate of this machine,
 * for the compute floor of `moe bench-layer` (tools/bench_probe.c times it).
 *
 * Twelve independent accumulators each take one vpdpbusd a step, so neither
 * the instruction's latency (a few cycles) nor memory limits the rate: the
 * loop measures how many 512-bit vpdpbusd a core retires a cycle. The
 * operands stay in registers; the compiler cannot fold the chains, since
 * each step's result feeds the next. */
#include <immintrin.h>

#include "kernels/cpu/avx512vnni/avx512vnni.h"

int32_t moe_avx512vnni_dot_peak(long reps)
{
    enum { N = MOE_AVX512VNNI_PEAK_CHAINS };
    /* small operands: 4·15·3 per lane a step, no overflow for 2^31/180 steps
     * (wrap-around would not matter for timing either) */
    const __m512i u = _mm512_set1_epi8(15), v = _mm512_set1_epi8(3);
    __m512i acc[N];
    for (int c = 0; c < N; c++) acc[c] = _mm512_set1_epi32(c);
    for (long r = 0; r < reps; r++) {
#pragma GCC unroll 12
        for (int c = 0; c < N; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], u, v);
    }
    /* combined with xor, not +: the sums are large and only have to stay
     * live (signed overflow in a reduction is undefined behaviour) */
    __m512i s = acc[0];
    for (int c = 1; c < N; c++) s = _mm512_xor_si512(s, acc[c]);
    int32_t lanes[16], r = 0;
    _mm512_storeu_si512(lanes, s);
    for (int i = 0; i < 16; i++) r ^= lanes[i];
    return r;
}
