/* quant/dtype.c — float32 <-> bf16/f16 conversions in portable C and the
 * dtype traits table behind moe_dtype_size/moe_dtype_name.
 *
 * All conversions work on bit patterns with integer arithmetic so that the
 * result does not depend on the compiler, the FPU rounding mode or the
 * presence of hardware half-precision support. */
#include "quant/dtype.h"

#include <string.h>

/* Bit casts through memcpy: the only aliasing-safe way in C11. */
static uint32_t moe_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float moe_f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Adds one to the kept part when the dropped low `shift` bits are above
 * half, or exactly half with the kept part odd: round to nearest even.
 * A carry out of the mantissa correctly bumps the exponent (and turns the
 * largest finite value into inf), since the fields are adjacent. */
static uint32_t moe_round_shift_even(uint32_t v, unsigned shift)
{
    uint32_t kept = v >> shift;
    uint32_t rest = v & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (kept & 1u)))
        kept++;
    return kept;
}

/* ---- bfloat16 ---- */

float moe_bf16_to_f32(uint16_t h)
{
    return moe_f32_from_bits((uint32_t)h << 16);
}

uint16_t moe_f32_to_bf16(float f)
{
    uint32_t u = moe_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        /* NaN: truncate and set the quiet bit, because rounding the
         * payload could carry into (or drop to) the inf pattern. */
        return (uint16_t)((u >> 16) | 0x0040u);
    }
    return (uint16_t)moe_round_shift_even(u, 16);
}

/* ---- IEEE half ---- */

float moe_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;

    if (exp == 0x1fu) /* inf or NaN: same payload, max exponent */
        return moe_f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return moe_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0)
        return moe_f32_from_bits(sign);

    /* Subnormal half = mant * 2^-24: normalise so the leading one becomes
     * the implicit bit of a float32 normal. */
    exp = 113u; /* biased float exponent of 2^-14 */
    while (!(mant & 0x400u)) {
        mant <<= 1;
        exp--;
    }
    return moe_f32_from_bits(sign | (exp << 23) | ((mant & 0x3ffu) << 13));
}

/* |f| below the smallest half normal (2^-14): the result is k * 2^-24. */
static uint16_t moe_f32_to_f16_small(uint32_t sign, uint32_t exp, uint32_t mant)
{
    /* value = (2^23 + mant) * 2^(exp-150) = k * 2^-24 with
     * k = (2^23 + mant) >> (126 - exp) before rounding. */
    uint32_t shift = 126u - exp;
    if (exp == 0 || shift > 24u) /* below half the smallest subnormal */
        return (uint16_t)sign;
    /* A round-up to 0x400 is the smallest normal, encoded correctly. */
    return (uint16_t)(sign | moe_round_shift_even(mant | 0x800000u, shift));
}

uint16_t moe_f32_to_f16(float f)
{
    uint32_t u = moe_f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t exp = (u >> 23) & 0xffu;
    uint32_t mant = u & 0x7fffffu;

    if (exp == 0xffu) {
        if (mant == 0)
            return (uint16_t)(sign | 0x7c00u);
        /* Keep the top payload bits; the quiet bit keeps it non-zero. */
        return (uint16_t)(sign | 0x7e00u | (mant >> 13));
    }
    if (exp >= 143u) /* >= 2^16: beyond even rounding range */
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 112u)
        return moe_f32_to_f16_small(sign, exp, mant);

    /* Normal: rebias 127 -> 15 and round the 13 dropped mantissa bits;
     * a carry may reach exponent 31, which is exactly inf. */
    return (uint16_t)(sign | moe_round_shift_even(((exp - 112u) << 23) | mant, 13));
}

/* ---- array converters used by the traits table ---- */

static void moe_f32_copy_to_f32(const void *src, float *dst, size_t n)
{
    memmove(dst, src, n * sizeof(float));
}

static void moe_f32_copy_from_f32(const float *src, void *dst, size_t n)
{
    memmove(dst, src, n * sizeof(float));
}

/* Halves are read and written through memcpy so that src/dst need no
 * particular alignment (tensors inside files may be packed). */
static void moe_f16_array_to_f32(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = moe_f16_to_f32(h);
    }
}

static void moe_f16_array_from_f32(const float *src, void *dst, size_t n)
{
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = moe_f32_to_f16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

static void moe_bf16_array_to_f32(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + 2 * i, 2);
        dst[i] = moe_bf16_to_f32(h);
    }
}

static void moe_bf16_array_from_f32(const float *src, void *dst, size_t n)
{
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = moe_f32_to_bf16(src[i]);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* ---- the table ---- */

static const moe_dtype_traits moe_dtype_table[MOE_DTYPE_COUNT] = {
    [MOE_DTYPE_F32] = {MOE_DTYPE_F32, "F32", 4, moe_f32_copy_to_f32, moe_f32_copy_from_f32},
    [MOE_DTYPE_F16] = {MOE_DTYPE_F16, "F16", 2, moe_f16_array_to_f32, moe_f16_array_from_f32},
    [MOE_DTYPE_BF16] = {MOE_DTYPE_BF16, "BF16", 2, moe_bf16_array_to_f32, moe_bf16_array_from_f32},
    [MOE_DTYPE_U32] = {MOE_DTYPE_U32, "U32", 4, NULL, NULL},
};

const moe_dtype_traits *moe_dtype_traits_of(moe_dtype t)
{
    /* The cast also rejects negative values an enum may hold. */
    if ((unsigned)t >= (unsigned)MOE_DTYPE_COUNT)
        return NULL;
    return &moe_dtype_table[t];
}

size_t moe_dtype_size(moe_dtype t)
{
    const moe_dtype_traits *tr = moe_dtype_traits_of(t);
    return tr ? tr->size : t == MOE_DTYPE_Q8 ? 1 : 0; /* Q8: a KV cache code's byte */
}

const char *moe_dtype_name(moe_dtype t)
{
    /* Never NULL, so callers can print the name of a bad value safely. */
    const moe_dtype_traits *tr = moe_dtype_traits_of(t);
    return tr ? tr->name : t == MOE_DTYPE_Q8 ? "Q8" : "INVALID";
}
