/* kernels/cuda/codes.cuh — packed 4- and 8-bit codes to floats without an
 * integer-to-float conversion. That conversion is a quarter-rate
 * instruction on the GPU: with one a value, the decode step's weight
 * reading was bound by conversions rather than by bytes. Here a code's bits
 * are masked where they sit in the word's low or high half, under the
 * exponent of 2^23: that float is 2^23 + q·2^shift exactly, and one fused
 * multiply-add by 2^-shift, less 2^23·2^-shift, leaves q. Exact, so every
 * sum over the codes has the bits that a conversion gives. */
#ifndef MOE_KERNELS_CUDA_CODES_CUH
#define MOE_KERNELS_CUDA_CODES_CUH

/* q − offset, for q the unsigned code i of a word of BITS-bit codes (from
 * the low bits up); i a constant after unrolling, so the shifts, masks and
 * constants are too */
template <int BITS, int OFFSET = 0>
__device__ inline float code_of(unsigned word, int i)
{
    constexpr int per_half = 16 / BITS;
    int shift = BITS * (i % per_half);
    unsigned half = i < per_half ? word : word >> 16;
    unsigned mask = ((1u << BITS) - 1u) << shift;
    float scaled = __uint_as_float((half & mask) | 0x4b000000u);
    float unit = __int_as_float((127 - shift) << 23);   /* 2^-shift */
    return __fmaf_rn(scaled, unit, -8388608.0f * unit - (float)OFFSET);
}

/* byte i of a word read as a signed 8-bit code: its top bit flipped, the
 * byte is q + 128 */
__device__ inline float signed_byte_of(unsigned word, int i)
{
    return code_of<8, 128>(word ^ 0x80808080u, i);
}

#endif
