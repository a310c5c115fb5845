/* tests/test_dtype.c — bf16/f16 scalar conversions (hand-picked values,
 * exhaustive round trips, random values against an independent
 * double-precision rounding) and the dtype traits table. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "moe/dtype.h"
#include "quant/dtype.h"
#include "support/testutil.h"

/* ---- helpers ---- */

/* xorshift64*: a small seeded generator so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* Reference rounding done in double, by a different route than the code
 * under test: scale |x| to units of the target ulp, round with nearbyint
 * (ties to even in the default mode), scale back, then apply overflow. */
static float ref_round(float x, int mant_bits, int emin, double max_finite)
{
    double a = fabs((double)x);
    if (a == 0.0)
        return x;
    int ex;
    (void)frexp(a, &ex); /* a = m * 2^ex, m in [0.5, 1) */
    int e = ex - 1;
    if (e < emin)
        e = emin; /* subnormal range: fixed ulp */
    double ulp = ldexp(1.0, e - mant_bits);
    double r = nearbyint(a / ulp) * ulp;
    float out = r > max_finite ? INFINITY : (float)r;
    return signbit(x) ? -out : out;
}

static float ref_f16(float x)
{
    return ref_round(x, 10, -14, 65504.0);
}

static float ref_bf16(float x)
{
    return ref_round(x, 7, -126, ldexp(255.0, 120)); /* 0x7F7F */
}

static void assert_same_float(float got, float want, uint32_t input)
{
    if (test_bits_of_float(got) != test_bits_of_float(want))
        fail_msg("input 0x%08x: got 0x%08x want 0x%08x", (unsigned)input,
                 (unsigned)test_bits_of_float(got), (unsigned)test_bits_of_float(want));
}

/* ---- bf16 hand-picked ---- */

static void test_bf16_exact(void **state)
{
    (void)state;
    assert_int_equal(moe_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(moe_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(moe_f32_to_bf16(0.5f), 0x3f00);
    assert_int_equal(moe_f32_to_bf16(0.0f), 0x0000);
    assert_true(moe_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(moe_bf16_to_f32(0xc040) == -3.0f);
    assert_true(moe_bf16_to_f32(0x0001) == ldexpf(1.0f, -133)); /* subnormal */
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    /* Exactly halfway: to even, downward then upward. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f808000)), 0x3f80);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f818000)), 0x3f82);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0xbf818000)), 0xbf82);
    /* Just above / just below halfway. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f808001)), 0x3f81);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f807fff)), 0x3f80);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f818001)), 0x3f82);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3f817fff)), 0x3f81);
    /* A carry through the mantissa into the exponent. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x3fffc000)), 0x4000);
    /* Float subnormal halfway to the smallest bf16 subnormal: even is 0. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x00008000)), 0x0000);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x00008001)), 0x0001);
}

static void test_bf16_limits(void **state)
{
    (void)state;
    assert_true(moe_bf16_to_f32(0x7f7f) == ldexpf(255.0f, 120)); /* max finite */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7f7f7fff)), 0x7f7f);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7f7f8000)), 0x7f80); /* odd tie -> inf */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7f7fffff)), 0x7f80); /* FLT_MAX */
    assert_int_equal(moe_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(moe_f32_to_bf16(-INFINITY), 0xff80);
    assert_true(isinf(moe_bf16_to_f32(0x7f80)) && moe_bf16_to_f32(0x7f80) > 0);
    assert_true(isinf(moe_bf16_to_f32(0xff80)) && moe_bf16_to_f32(0xff80) < 0);
    /* Negative zero keeps its sign both ways. */
    assert_int_equal(moe_f32_to_bf16(-0.0f), 0x8000);
    assert_true(moe_bf16_to_f32(0x8000) == 0.0f && signbit(moe_bf16_to_f32(0x8000)));
}

static void test_bf16_nan(void **state)
{
    (void)state;
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7fc00000)), 0x7fc0);
    /* Payload only in the low half: plain rounding would give inf. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7f800001)), 0x7fc0);
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0xff800001)), 0xffc0);
    /* All-ones payload: plain rounding would carry into the sign. */
    assert_int_equal(moe_f32_to_bf16(test_float_from_bits(0x7fffffff)), 0x7fff);
    assert_true(isnan(moe_bf16_to_f32(0x7f81)));
    assert_true(isnan(moe_bf16_to_f32(moe_f32_to_bf16(NAN))));
}

/* ---- f16 hand-picked ---- */

static void test_f16_exact(void **state)
{
    (void)state;
    assert_int_equal(moe_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(moe_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(moe_f32_to_f16(0.5f), 0x3800);
    assert_int_equal(moe_f32_to_f16(1.0f / 3.0f), 0x3555);
    assert_int_equal(moe_f32_to_f16(0.0f), 0x0000);
    assert_true(moe_f16_to_f32(0x3c00) == 1.0f);
    assert_true(moe_f16_to_f32(0xc200) == -3.0f);
    assert_true(moe_f16_to_f32(0x3555) == 0.333251953125f);
}

static void test_f16_rounding(void **state)
{
    (void)state;
    /* 1 + 2^-11 is halfway between 0x3c00 (even) and 0x3c01. */
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f801000)), 0x3c00);
    /* 1 + 3*2^-11 is halfway between 0x3c01 (odd) and 0x3c02. */
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f803000)), 0x3c02);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0xbf803000)), 0xbc02);
    /* Just above / just below halfway. */
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f801001)), 0x3c01);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f800fff)), 0x3c00);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f803001)), 0x3c02);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x3f802fff)), 0x3c01);
    /* Carry into the exponent: 2 - 2^-12 rounds to 2. */
    assert_int_equal(moe_f32_to_f16(2.0f - ldexpf(1.0f, -12)), 0x4000);
}

static void test_f16_overflow(void **state)
{
    (void)state;
    assert_int_equal(moe_f32_to_f16(65504.0f), 0x7bff); /* max finite */
    assert_true(moe_f16_to_f32(0x7bff) == 65504.0f);
    assert_int_equal(moe_f32_to_f16(65519.996f), 0x7bff); /* just below the tie */
    assert_int_equal(moe_f32_to_f16(65520.0f), 0x7c00);   /* tie, odd -> inf */
    assert_int_equal(moe_f32_to_f16(65536.0f), 0x7c00);
    assert_int_equal(moe_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(moe_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x7f7fffff)), 0x7c00);
    assert_int_equal(moe_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(moe_f32_to_f16(-INFINITY), 0xfc00);
    assert_true(isinf(moe_f16_to_f32(0x7c00)) && moe_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(moe_f16_to_f32(0xfc00)) && moe_f16_to_f32(0xfc00) < 0);
}

static void test_f16_subnormal(void **state)
{
    (void)state;
    const float tiny = ldexpf(1.0f, -24); /* smallest subnormal */
    assert_true(moe_f16_to_f32(0x0001) == tiny);
    assert_true(moe_f16_to_f32(0x8001) == -tiny);
    assert_true(moe_f16_to_f32(0x03ff) == 1023.0f * tiny); /* largest subnormal */
    assert_true(moe_f16_to_f32(0x0400) == ldexpf(1.0f, -14)); /* smallest normal */
    assert_int_equal(moe_f32_to_f16(tiny), 0x0001);
    assert_int_equal(moe_f32_to_f16(-tiny), 0x8001);
    assert_int_equal(moe_f32_to_f16(1023.0f * tiny), 0x03ff);
    assert_int_equal(moe_f32_to_f16(37.0f * tiny), 0x0025);
    /* Ties among subnormals go to even. */
    assert_int_equal(moe_f32_to_f16(0.5f * tiny), 0x0000);
    assert_int_equal(moe_f32_to_f16(1.5f * tiny), 0x0002);
    assert_int_equal(moe_f32_to_f16(2.5f * tiny), 0x0002);
    assert_int_equal(moe_f32_to_f16(1023.5f * tiny), 0x0400); /* up into normals */
    /* Just above / below half the smallest subnormal. */
    assert_int_equal(moe_f32_to_f16(nextafterf(0.5f * tiny, 1.0f)), 0x0001);
    assert_int_equal(moe_f32_to_f16(nextafterf(0.5f * tiny, 0.0f)), 0x0000);
    assert_int_equal(moe_f32_to_f16(0.25f * tiny), 0x0000);
    /* Float subnormals underflow to a signed zero. */
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x00000001)), 0x0000);
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x80400000)), 0x8000);
}

static void test_f16_zero_nan(void **state)
{
    (void)state;
    assert_int_equal(moe_f32_to_f16(-0.0f), 0x8000);
    assert_true(moe_f16_to_f32(0x8000) == 0.0f && signbit(moe_f16_to_f32(0x8000)));
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0x7fc00000)), 0x7e00);
    uint16_t h = moe_f32_to_f16(test_float_from_bits(0x7f800001)); /* payload below f16's */
    assert_true((h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0 && (h & 0x0200));
    assert_int_equal(moe_f32_to_f16(test_float_from_bits(0xffffffff)) & 0xfe00, 0xfe00);
    assert_true(isnan(moe_f16_to_f32(0x7c01)));
    assert_true(isnan(moe_f16_to_f32(0xfe00)));
}

/* ---- exhaustive round trips ---- */

static int bf16_is_nan(uint16_t h)
{
    return (h & 0x7f80) == 0x7f80 && (h & 0x007f);
}

static int f16_is_nan(uint16_t h)
{
    return (h & 0x7c00) == 0x7c00 && (h & 0x03ff);
}

static void test_bf16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 65536; b++) {
        uint16_t h = (uint16_t)b;
        uint16_t back = moe_f32_to_bf16(moe_bf16_to_f32(h));
        if (bf16_is_nan(h)) {
            assert_true(bf16_is_nan(back));
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else if (back != h) {
            fail_msg("bf16 0x%04x came back as 0x%04x", (unsigned)h, (unsigned)back);
        }
    }
}

static void test_f16_all_patterns(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 65536; b++) {
        uint16_t h = (uint16_t)b;
        float f = moe_f16_to_f32(h);
        uint16_t back = moe_f32_to_f16(f);
        if (f16_is_nan(h)) {
            assert_true(isnan(f));
            assert_true(f16_is_nan(back));
            assert_int_equal(back & 0x8000, h & 0x8000);
        } else if (back != h) {
            fail_msg("f16 0x%04x came back as 0x%04x", (unsigned)h, (unsigned)back);
        }
    }
}

/* ---- random values against the double reference ---- */

static void check_random(float x, uint32_t u)
{
    assert_same_float(moe_bf16_to_f32(moe_f32_to_bf16(x)), ref_bf16(x), u);
    assert_same_float(moe_f16_to_f32(moe_f32_to_f16(x)), ref_f16(x), u);
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    rng_state = 12345;
    for (int i = 0; i < 1000000; i++) {
        /* Any float bit pattern: exercises bf16's whole range. */
        uint32_t u = rng_u32();
        if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu))
            continue; /* NaN: covered by the hand-picked tests */
        check_random(test_float_from_bits(u), u);
        /* Exponents around f16's range, subnormals and overflow included. */
        uint32_t exp = 127u - 27u + rng_u32() % 45u;
        uint32_t v = (rng_u32() & 0x807fffffu) | (exp << 23);
        check_random(test_float_from_bits(v), v);
        /* Near-ties: f16 halfway points and their neighbours. */
        uint32_t w = (v & ~0x1fffu) | 0x1000u;
        w += (rng_u32() % 3u) - 1u;
        check_random(test_float_from_bits(w), w);
    }
}

/* ---- traits ---- */

static void test_traits_table(void **state)
{
    (void)state;
    static const struct {
        moe_dtype t;
        const char *name;
        size_t size;
        int converts;
    } want[] = {
        {MOE_DTYPE_F32, "F32", 4, 1},
        {MOE_DTYPE_F16, "F16", 2, 1},
        {MOE_DTYPE_BF16, "BF16", 2, 1},
        {MOE_DTYPE_U32, "U32", 4, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const moe_dtype_traits *tr = moe_dtype_traits_of(want[i].t);
        assert_non_null(tr);
        assert_int_equal(tr->dtype, want[i].t);
        assert_string_equal(tr->name, want[i].name);
        assert_int_equal(tr->size, want[i].size);
        assert_int_equal(tr->to_f32 != NULL, want[i].converts);
        assert_int_equal(tr->from_f32 != NULL, want[i].converts);
        assert_string_equal(moe_dtype_name(want[i].t), want[i].name);
        assert_int_equal(moe_dtype_size(want[i].t), want[i].size);
    }
    assert_int_equal(MOE_DTYPE_COUNT, 4);
    assert_null(moe_dtype_traits_of(MOE_DTYPE_COUNT));
    assert_null(moe_dtype_traits_of((moe_dtype)-1));
    assert_null(moe_dtype_traits_of((moe_dtype)1000));
    assert_int_equal(moe_dtype_size(MOE_DTYPE_COUNT), 0);
    assert_non_null(moe_dtype_name((moe_dtype)-1));
}

/* Array converters agree with the scalar ones on odd lengths, starting at
 * an odd byte offset to prove no alignment is assumed. */
static void check_array_conv(moe_dtype t, size_t n)
{
    const moe_dtype_traits *tr = moe_dtype_traits_of(t);
    float src[37], back[37];
    unsigned char raw[1 + 37 * 4 + 8];
    unsigned char *mid = raw + 1;
    assert_true(n <= 37);
    for (size_t i = 0; i < n; i++)
        src[i] = ((float)(int)(rng_u32() % 20001u) - 10000.0f) / 777.0f;
    memset(raw, 0xab, sizeof raw);
    tr->from_f32(src, mid, n);
    assert_int_equal(mid[n * tr->size], 0xab); /* nothing written past n */
    tr->to_f32(mid, back, n);
    for (size_t i = 0; i < n; i++) {
        float want = src[i];
        if (t == MOE_DTYPE_F16)
            want = moe_f16_to_f32(moe_f32_to_f16(src[i]));
        else if (t == MOE_DTYPE_BF16)
            want = moe_bf16_to_f32(moe_f32_to_bf16(src[i]));
        assert_true(test_bits_of_float(back[i]) == test_bits_of_float(want));
    }
}

static void test_traits_arrays(void **state)
{
    (void)state;
    static const size_t lens[] = {1, 3, 7, 33, 37};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        check_array_conv(MOE_DTYPE_F32, lens[k]);
        check_array_conv(MOE_DTYPE_F16, lens[k]);
        check_array_conv(MOE_DTYPE_BF16, lens[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_exact),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_limits),
        cmocka_unit_test(test_bf16_nan),
        cmocka_unit_test(test_f16_exact),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_f16_overflow),
        cmocka_unit_test(test_f16_subnormal),
        cmocka_unit_test(test_f16_zero_nan),
        cmocka_unit_test(test_bf16_all_patterns),
        cmocka_unit_test(test_f16_all_patterns),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_traits_table),
        cmocka_unit_test(test_traits_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
