/* tests/test_affine.c — MLX affine quantization: code packing against an
 * independent bit-by-bit reference, hand-derived groups for the quantizer,
 * quantize→dequantize error bounds over every format, and argument errors. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "moe/status.h"
#include "quant/affine.h"
#include "quant/dtype.h"

static const int all_bits[] = {2, 3, 4, 5, 6, 8};
static const int all_groups[] = {32, 64, 128};
static const moe_dtype all_dtypes[] = {MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_BF16};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*: seeded, so every run sees the same data. */
static uint64_t rng_state = 1;

static uint32_t rng_u32(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545f4914f6cdd1dull) >> 32);
}

/* Uniform in [-1, 1). */
static float rng_unit(void)
{
    return (float)((double)rng_u32() / 2147483648.0 - 1.0);
}

/* ---- independent bit-stream reference ----
 * Element i's bit b is bit (i*bits + b) of the row's little-endian byte
 * stream; words are assembled from bytes explicitly, so this does not share
 * the word arithmetic of the code under test. */
static void ref_pack(const uint32_t *codes, int n, int bits, uint32_t *words, size_t nwords)
{
    unsigned char bytes[1024];
    assert_true(nwords * 4 <= sizeof bytes);
    memset(bytes, 0, sizeof bytes);
    for (int i = 0; i < n; i++) {
        for (int b = 0; b < bits; b++) {
            long pos = (long)i * bits + b;
            if ((codes[i] >> b) & 1u)
                bytes[pos / 8] |= (unsigned char)(1u << (pos % 8));
        }
    }
    for (size_t k = 0; k < nwords; k++)
        words[k] = (uint32_t)bytes[4 * k] | (uint32_t)bytes[4 * k + 1] << 8 |
                   (uint32_t)bytes[4 * k + 2] << 16 | (uint32_t)bytes[4 * k + 3] << 24;
}

static uint32_t ref_get(const uint32_t *words, int bits, int i)
{
    uint32_t q = 0;
    for (int b = 0; b < bits; b++) {
        long pos = (long)i * bits + b;
        uint32_t byte = (words[pos / 32] >> (8 * ((pos / 8) % 4))) & 0xffu;
        q |= ((byte >> (pos % 8)) & 1u) << b;
    }
    return q;
}

static float ref_param(moe_dtype t, const void *base, size_t i)
{
    if (t == MOE_DTYPE_F32)
        return ((const float *)base)[i];
    uint16_t h = ((const uint16_t *)base)[i];
    return t == MOE_DTYPE_F16 ? moe_f16_to_f32(h) : moe_bf16_to_f32(h);
}

/* ---- packing ---- */

static void test_pack_positions(void **state)
{
    (void)state;
    uint32_t w[4] = {0};
    for (int i = 0; i < 16; i++)
        moe_affine_set_code(w, 4, i, (uint32_t)i);
    assert_int_equal(w[0], 0x76543210u); /* element 0 in bits 0-3 ... 7 in 28-31 */
    assert_int_equal(w[1], 0xfedcba98u);

    memset(w, 0, sizeof w);
    for (int i = 0; i < 8; i++)
        moe_affine_set_code(w, 8, i, (uint32_t)(i * 0x11));
    assert_int_equal(w[0], 0x33221100u);
    assert_int_equal(w[1], 0x77665544u);

    memset(w, 0, sizeof w);
    for (int i = 0; i < 16; i++)
        moe_affine_set_code(w, 2, i, (uint32_t)(i % 4));
    assert_int_equal(w[0], 0xe4e4e4e4u);

    const uint32_t known4[1] = {0xa0000005u};
    assert_int_equal(moe_affine_get_code(known4, 4, 0), 0x5);
    assert_int_equal(moe_affine_get_code(known4, 4, 7), 0xa);

    /* 3 bits: codes 0..7 fill 24 bits as 0xFAC688; element 10 spans the
     * top two bits of word 0 and bit 0 of word 1. */
    memset(w, 0, sizeof w);
    for (int i = 0; i < 8; i++)
        moe_affine_set_code(w, 3, i, (uint32_t)i);
    assert_int_equal(w[0], 0x00fac688u);
    moe_affine_set_code(w, 3, 10, 0x5); /* 0b101 */
    assert_int_equal(w[0] >> 30, 0x1);
    assert_int_equal(w[1] & 1u, 0x1);
    assert_int_equal(moe_affine_get_code(w, 3, 10), 0x5);
    /* 6 bits: element 5 occupies bits 30-35. */
    memset(w, 0, sizeof w);
    moe_affine_set_code(w, 6, 5, 0x2d); /* 0b101101 */
    assert_int_equal(w[0], 0x40000000u);
    assert_int_equal(w[1], 0x0000000bu);
}

/* set_code over garbage-filled words gives exactly the reference stream,
 * and get_code reads the reference stream back, for every width. */
static void test_pack_vs_reference(void **state)
{
    (void)state;
    rng_state = 77;
    for (size_t b = 0; b < COUNT(all_bits); b++) {
        int bits = all_bits[b];
        for (int n = 32; n <= 256; n += 32) {
            uint32_t codes[256], got[65], want[64];
            size_t nw = moe_affine_row_words(n, bits);
            assert_int_equal(nw, (size_t)n * (size_t)bits / 32);
            for (int i = 0; i < n; i++)
                codes[i] = rng_u32() & ((1u << bits) - 1u);
            memset(got, 0xff, sizeof got);
            for (int i = 0; i < n; i++)
                moe_affine_set_code(got, bits, i, codes[i]);
            ref_pack(codes, n, bits, want, nw);
            assert_memory_equal(got, want, nw * sizeof(uint32_t));
            assert_int_equal(got[nw], 0xffffffffu); /* nothing past the row */
            for (int i = 0; i < n; i++) {
                assert_int_equal(moe_affine_get_code(want, bits, i), codes[i]);
                assert_int_equal(ref_get(got, bits, i), codes[i]);
            }
        }
    }
}

/* Random overwrites in random order: each set changes only its own code. */
static void test_get_set_roundtrip(void **state)
{
    (void)state;
    rng_state = 99;
    for (size_t b = 0; b < COUNT(all_bits); b++) {
        int bits = all_bits[b];
        const int n = 128;
        uint32_t shadow[128] = {0}, w[32] = {0};
        for (int step = 0; step < 5000; step++) {
            int i = (int)(rng_u32() % (uint32_t)n);
            uint32_t q = rng_u32(); /* high bits must be ignored */
            moe_affine_set_code(w, bits, i, q);
            shadow[i] = q & ((1u << bits) - 1u);
        }
        for (int i = 0; i < n; i++)
            assert_int_equal(moe_affine_get_code(w, bits, i), shadow[i]);
        for (int i = 0; i < n; i++) {
            moe_affine_set_code(w, bits, i, (1u << bits) - 1u);
            assert_int_equal(moe_affine_get_code(w, bits, i), (1u << bits) - 1u);
        }
        for (size_t k = 0; k < moe_affine_row_words(n, bits); k++)
            assert_int_equal(w[k], 0xffffffffu);
    }
}

/* ---- hand-derived quantizer groups ---- */

typedef struct {
    float w[32];
    float scale, bias;
    uint32_t q[32];
} hand_group;

/* Quantizes one 32-wide group and compares with the hand-derived result;
 * the stored parameters are the float32 ones rounded to the dtype. */
static void check_hand_group(const hand_group *g, int bits, moe_dtype dtype)
{
    moe_affine_format f = {bits, 32, dtype};
    uint32_t codes[8];
    unsigned char sc[4], bi[4];
    assert_int_equal(moe_affine_quantize(&f, g->w, 1, 32, codes, sc, bi), MOE_OK);
    for (int i = 0; i < 32; i++)
        if (moe_affine_get_code(codes, bits, i) != g->q[i])
            fail_msg("bits %d element %d (w=%g): code %u, want %u", bits, i, (double)g->w[i],
                     (unsigned)moe_affine_get_code(codes, bits, i), (unsigned)g->q[i]);
    float want_s = g->scale, want_b = g->bias;
    if (dtype == MOE_DTYPE_F16) {
        want_s = moe_f16_to_f32(moe_f32_to_f16(want_s));
        want_b = moe_f16_to_f32(moe_f32_to_f16(want_b));
    } else if (dtype == MOE_DTYPE_BF16) {
        want_s = moe_bf16_to_f32(moe_f32_to_bf16(want_s));
        want_b = moe_bf16_to_f32(moe_f32_to_bf16(want_b));
    }
    assert_true(ref_param(dtype, sc, 0) == want_s);
    assert_true(ref_param(dtype, bi, 0) == want_b);
    assert_true(signbit(ref_param(dtype, sc, 0)) == signbit(want_s));
}

static void check_hand_all_dtypes(const hand_group *g, int bits)
{
    for (size_t d = 0; d < COUNT(all_dtypes); d++)
        check_hand_group(g, bits, all_dtypes[d]);
}

/* |min| > |max|: edge = min, scale stays positive, bias = min. */
static void test_hand_min_edge(void **state)
{
    (void)state;
    hand_group g;
    /* 4 bits, min -8, max 7: scale 15/15 = 1, q0 = -8, scale = -8/-8 = 1,
     * bias -8, so q = w + 8 with roundf ties away from zero. */
    const float w4[7] = {-8.0f, 7.0f, 0.0f, -7.5f, -5.5f, -6.5f, 3.25f};
    const uint32_t q4[7] = {0, 15, 8, 1, 3, 2, 11};
    for (int i = 0; i < 32; i++) {
        g.w[i] = i < 7 ? w4[i] : (float)(-8 + i % 16);
        g.q[i] = i < 7 ? q4[i] : (uint32_t)(i % 16);
    }
    g.scale = 1.0f;
    g.bias = -8.0f;
    check_hand_all_dtypes(&g, 4);

    /* 8 bits, min -128, max 127: scale 1, bias -128, q = w + 128. */
    const float w8[5] = {-128.0f, 127.0f, 0.0f, -127.5f, -125.5f};
    const uint32_t q8[5] = {0, 255, 128, 1, 3};
    for (int i = 0; i < 32; i++) {
        g.w[i] = i < 5 ? w8[i] : (float)(-128 + i * 7);
        g.q[i] = i < 5 ? q8[i] : (uint32_t)(i * 7);
    }
    g.scale = 1.0f;
    g.bias = -128.0f;
    check_hand_all_dtypes(&g, 8);

    /* 4 bits, min -1, max 0.5: scale = 1.5f/15 (0.1f), -1/0.1f rounds to
     * -10 exactly, so scale = -1/-10 = 0.1f and bias -1. */
    for (int i = 0; i < 32; i++) {
        g.w[i] = -1.0f;
        g.q[i] = 0;
    }
    g.w[1] = 0.5f;  g.q[1] = 15; /* 1.5/0.1 = 15 */
    g.w[2] = 0.0f;  g.q[2] = 10; /* 1.0/0.1 = 10 */
    g.w[3] = 0.3f;  g.q[3] = 13; /* 1.3/0.1 = 13 */
    g.w[4] = -0.62f; g.q[4] = 4; /* 0.38/0.1 = 3.8 */
    g.w[5] = -0.97f; g.q[5] = 0; /* 0.03/0.1 = 0.3 */
    assert_true(roundf(-1.0f / (1.5f / 15.0f)) == -10.0f);
    g.scale = -1.0f / -10.0f;
    g.bias = -1.0f;
    check_hand_all_dtypes(&g, 4);

    /* The edge lands on a tie: min -8.5, max 6.5, scale 15/15 = 1,
     * q0 = roundf(-8.5) = -9 (away from zero; rint would give -8), so
     * scale = -8.5/-9 ~ 0.9444 and the max, (6.5+8.5)/0.9444 ~ 15.9, is
     * clamped to 15. Others: 0 -> 9, -4 -> 4.76 -> 5, 3 -> 12.18 -> 12. */
    for (int i = 0; i < 32; i++) {
        g.w[i] = -8.5f;
        g.q[i] = 0;
    }
    g.w[1] = 6.5f;  g.q[1] = 15;
    g.w[2] = 0.0f;  g.q[2] = 9;
    g.w[3] = -4.0f; g.q[3] = 5;
    g.w[4] = 3.0f;  g.q[4] = 12;
    g.scale = -8.5f / -9.0f;
    g.bias = -8.5f;
    check_hand_all_dtypes(&g, 4);

    /* Same at 8 bits: min -128.5, max 126.5, q0 = -129, scale -128.5/-129,
     * max clamped to 255, 0 -> 129.0 -> 129. */
    for (int i = 0; i < 32; i++) {
        g.w[i] = -128.5f;
        g.q[i] = 0;
    }
    g.w[1] = 126.5f; g.q[1] = 255;
    g.w[2] = 0.0f;   g.q[2] = 129;
    g.scale = -128.5f / -129.0f;
    g.bias = -128.5f;
    check_hand_all_dtypes(&g, 8);
}

/* max dominates: edge = max, scale negative, bias = max, codes count down
 * from the max. */
static void test_hand_max_edge(void **state)
{
    (void)state;
    hand_group g;
    /* 4 bits, min -2, max 13: scale -15/15 = -1, q0 = -13, scale = 13/-13,
     * bias 13, q = (w - 13) / -1 = 13 - w. */
    const float w4[5] = {13.0f, -2.0f, 0.0f, 12.5f, 10.5f};
    const uint32_t q4[5] = {0, 15, 13, 1, 3};
    for (int i = 0; i < 32; i++) {
        g.w[i] = i < 5 ? w4[i] : (float)(13 - i % 16);
        g.q[i] = i < 5 ? q4[i] : (uint32_t)(i % 16);
    }
    g.scale = -1.0f;
    g.bias = 13.0f;
    check_hand_all_dtypes(&g, 4);

    /* A group containing exactly 0 as its minimum: 0..15 -> scale -1,
     * bias 15, q = 15 - w, so 0 gets code 15 and dequantizes to 0. */
    for (int i = 0; i < 32; i++) {
        g.w[i] = (float)(i % 16);
        g.q[i] = (uint32_t)(15 - i % 16);
    }
    g.scale = -1.0f;
    g.bias = 15.0f;
    check_hand_all_dtypes(&g, 4);

    /* 8 bits, min -1, max 254: scale -1, bias 254, q = 254 - w. */
    const float w8[4] = {254.0f, -1.0f, 0.0f, 253.5f};
    const uint32_t q8[4] = {0, 255, 254, 1};
    for (int i = 0; i < 32; i++) {
        g.w[i] = i < 4 ? w8[i] : (float)(254 - i * 8);
        g.q[i] = i < 4 ? q8[i] : (uint32_t)(i * 8);
    }
    g.scale = -1.0f;
    g.bias = 254.0f;
    check_hand_all_dtypes(&g, 8);
}

/* All equal: range 0, so scale = eps = 1e-7 made negative (max is the edge
 * on a tie of magnitudes); q0 = round(0.75 / -1e-7) = -7500000; scale
 * becomes 0.75 / -7500000, bias 0.75 and every code 0. */
static void test_hand_all_equal(void **state)
{
    (void)state;
    for (int b = 0; b < 2; b++) {
        int bits = b == 0 ? 4 : 8;
        hand_group g;
        for (int i = 0; i < 32; i++) {
            g.w[i] = 0.75f;
            g.q[i] = 0;
        }
        assert_true(roundf(0.75f / -1e-7f) == -7500000.0f);
        g.scale = 0.75f / -7500000.0f;
        g.bias = 0.75f;
        check_hand_all_dtypes(&g, bits);

        /* Negative: |min| > |max| is false on a tie, so still edge = max
         * = -0.5 with scale -1e-7: q0 = 5000000, scale = -0.5/5000000. */
        for (int i = 0; i < 32; i++)
            g.w[i] = -0.5f;
        assert_true(roundf(-0.5f / -1e-7f) == 5000000.0f);
        g.scale = -0.5f / 5000000.0f;
        g.bias = -0.5f;
        check_hand_all_dtypes(&g, bits);
    }
}

/* The edge rounds to q0 = 0: bias 0 and scale left at -eps. */
static void test_hand_zero_edge(void **state)
{
    (void)state;
    for (int b = 0; b < 2; b++) {
        int bits = b == 0 ? 4 : 8;
        hand_group g;
        /* All zero: edge 0, q0 = 0. */
        for (int i = 0; i < 32; i++) {
            g.w[i] = 0.0f;
            g.q[i] = 0;
        }
        g.scale = -1e-7f;
        g.bias = 0.0f;
        check_hand_all_dtypes(&g, bits);

        /* Tiny values: range/n < eps and edge/scale = 2e-8/-1e-7 = -0.2,
         * so q0 = 0; codes round((w - 0)/-1e-7) are <= 0, clamped to 0. */
        for (int i = 0; i < 32; i++)
            g.w[i] = (i % 2) ? 2e-8f : 1e-8f;
        check_hand_all_dtypes(&g, bits);
    }
}

/* Codes come from the float32 parameters whatever the stored dtype. */
static void test_codes_independent_of_dtype(void **state)
{
    (void)state;
    rng_state = 5;
    enum { R = 3, C = 256 };
    static float w[R * C];
    for (int i = 0; i < R * C; i++)
        w[i] = rng_unit() * 0.37f + 0.05f;
    for (size_t b = 0; b < COUNT(all_bits); b++) {
        uint32_t ref[R * C / 4], got[R * C / 4];
        float s32[R * 8], b32[R * 8];
        uint16_t s16[R * 8], b16[R * 8];
        moe_affine_format f = {all_bits[b], 32, MOE_DTYPE_F32};
        size_t nw = R * moe_affine_row_words(C, f.bits);
        assert_int_equal(moe_affine_quantize(&f, w, R, C, ref, s32, b32), MOE_OK);
        f.dtype = MOE_DTYPE_F16;
        assert_int_equal(moe_affine_quantize(&f, w, R, C, got, s16, b16), MOE_OK);
        assert_memory_equal(ref, got, nw * sizeof(uint32_t));
        for (int k = 0; k < R * 8; k++)
            assert_int_equal(s16[k], moe_f32_to_f16(s32[k]));
        f.dtype = MOE_DTYPE_BF16;
        assert_int_equal(moe_affine_quantize(&f, w, R, C, got, s16, b16), MOE_OK);
        assert_memory_equal(ref, got, nw * sizeof(uint32_t));
        for (int k = 0; k < R * 8; k++)
            assert_int_equal(b16[k], moe_f32_to_bf16(b32[k]));
    }
}

/* Codes of known value for 3/5/6 bits, packed by the quantizer, match the
 * reference stream: values -2^(b-1) .. 2^(b-1)-1 make scale 1 and
 * bias -2^(b-1), so code = w + 2^(b-1). */
static void test_quantize_stream_widths(void **state)
{
    (void)state;
    static const int widths[] = {3, 5, 6};
    rng_state = 31;
    for (size_t k = 0; k < COUNT(widths); k++) {
        int bits = widths[k], half = 1 << (bits - 1);
        moe_affine_format f = {bits, 64, MOE_DTYPE_F32};
        float w[128], sc[2], bi[2];
        uint32_t want_q[128], codes[32], want[32];
        for (int i = 0; i < 128; i++) {
            want_q[i] = i % 64 == 0 ? 0 : i % 64 == 1 ? (uint32_t)(2 * half - 1)
                                                   : rng_u32() % (uint32_t)(2 * half);
            w[i] = (float)((int)want_q[i] - half);
        }
        assert_int_equal(moe_affine_quantize(&f, w, 1, 128, codes, sc, bi), MOE_OK);
        ref_pack(want_q, 128, bits, want, moe_affine_row_words(128, bits));
        assert_memory_equal(codes, want, moe_affine_row_words(128, bits) * sizeof(uint32_t));
        assert_true(sc[0] == 1.0f && sc[1] == 1.0f);
        assert_true(bi[0] == (float)-half && bi[1] == (float)-half);
    }
}

/* ---- random round trips over every format ---- */

/* Relative half-ulp of the stored dtype, and an absolute floor for f16's
 * subnormals (tiny scales). */
static void dtype_rounding(moe_dtype t, double *rel, double *abs_floor)
{
    *rel = t == MOE_DTYPE_F32 ? 0.0 : t == MOE_DTYPE_F16 ? ldexp(1.0, -11) : ldexp(1.0, -8);
    *abs_floor = t == MOE_DTYPE_F16 ? ldexp(1.0, -25) : 0.0;
}

/* Random rows whose groups have their own centre and spread, so there are
 * all-positive, all-negative and mixed groups; never all zeros. */
static void fill_random(float *w, int rows, int cols, int group)
{
    int nz = 0;
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < cols / group; g++) {
            float centre = rng_unit() * 2.0f;
            float spread = 0.01f + 3.0f * fabsf(rng_unit());
            for (int j = 0; j < group; j++) {
                float v = centre + spread * rng_unit();
                w[(size_t)r * cols + g * group + j] = v;
                nz |= v != 0.0f;
            }
        }
    }
    assert_true(nz);
}

/* Checks one dequantized element. Interior codes are the rounding of
 * (w - bias)/scale, so the error is at most |scale|/2; only the top code can
 * be further away: MLX's q0 adjustment may shrink |scale| so the far extreme
 * lands up to one step past n and is clamped (error < |scale|). On top come
 * the rounding of scale and bias to the stored dtype and float slop. */
static void check_element(float w, float deq, float s, float b, uint32_t q, uint32_t n,
                          moe_dtype t)
{
    double rel, floor_abs;
    dtype_rounding(t, &rel, &floor_abs);
    double as = fabs((double)s), ab = fabs((double)b);
    double store = (q * (as * rel + floor_abs) + ab * rel + floor_abs) * (1.0 + 4.0 * rel);
    double slop = 8.0 * FLT_EPSILON * (fabs((double)w) + ab + as * n);
    double step = q == n ? 1.0 : 0.5;
    double bound = as * step * (1.0 + 4.0 * rel) + store + slop;
    double err = fabs((double)deq - (double)w);
    if (!(err <= bound))
        fail_msg("w=%.9g deq=%.9g scale=%g bias=%g q=%u: err %g > bound %g", (double)w,
                 (double)deq, (double)s, (double)b, (unsigned)q, err, bound);
}

static void check_roundtrip(int bits, int group, moe_dtype t, int rows, int cols)
{
    moe_affine_format f = {bits, group, t};
    size_t nw = moe_affine_row_words(cols, bits), ng = (size_t)(cols / group);
    size_t psize = moe_dtype_size(t);
    float *w = malloc((size_t)rows * cols * sizeof *w);
    float *d = malloc((size_t)rows * cols * sizeof *d);
    uint32_t *codes = malloc((size_t)rows * nw * sizeof *codes);
    unsigned char *sc = malloc((size_t)rows * ng * psize);
    unsigned char *bi = malloc((size_t)rows * ng * psize);
    assert_true(w && d && codes && sc && bi);
    fill_random(w, rows, cols, group);
    assert_int_equal(moe_affine_quantize(&f, w, rows, cols, codes, sc, bi), MOE_OK);
    assert_int_equal(moe_affine_dequantize(&f, codes, sc, bi, rows, cols, d), MOE_OK);
    uint32_t n = (1u << bits) - 1u;
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < cols; i++) {
            size_t gi = (size_t)r * ng + (size_t)(i / group);
            float s = ref_param(t, sc, gi), b = ref_param(t, bi, gi);
            uint32_t q = ref_get(codes + (size_t)r * nw, bits, i);
            float sq = s * (float)q;
            float want = sq + b; /* dequantize, recomputed independently */
            float got = d[(size_t)r * cols + i];
            assert_true(memcmp(&got, &want, sizeof got) == 0);
            check_element(w[(size_t)r * cols + i], got, s, b, q, n, t);
        }
    }
    free(w);
    free(d);
    free(codes);
    free(sc);
    free(bi);
}

static void test_roundtrip_all_formats(void **state)
{
    (void)state;
    static const int row_counts[] = {1, 3, 7};
    rng_state = 2024;
    for (size_t b = 0; b < COUNT(all_bits); b++)
        for (size_t g = 0; g < COUNT(all_groups); g++)
            for (size_t t = 0; t < COUNT(all_dtypes); t++)
                for (size_t r = 0; r < COUNT(row_counts); r++)
                    check_roundtrip(all_bits[b], all_groups[g], all_dtypes[t], row_counts[r],
                                    all_groups[g] * (int)(1 + r));
}

/* ---- sizes ---- */

static void test_sizes(void **state)
{
    (void)state;
    assert_int_equal(moe_affine_row_words(128, 4), 16);
    assert_int_equal(moe_affine_row_words(128, 3), 12);
    assert_int_equal(moe_affine_row_words(32, 5), 5);
    assert_int_equal(moe_affine_row_words(32, 6), 6);
    assert_int_equal(moe_affine_row_words(64, 2), 4);
    assert_int_equal(moe_affine_row_words(64, 8), 16);
    assert_int_equal(moe_affine_row_words(0, 4), 0);
    moe_affine_format f = {4, 64, MOE_DTYPE_BF16};
    assert_int_equal(moe_affine_bytes(&f, 3, 128), 3 * (64 + 2 * 2 * 2));
    moe_affine_format g = {3, 32, MOE_DTYPE_F32};
    assert_int_equal(moe_affine_bytes(&g, 5, 96), 5 * (36 + 2 * 3 * 4));
    assert_int_equal(moe_affine_bytes(&g, 0, 96), 0);
    assert_int_equal(moe_affine_bytes(&g, 1, 100), 0);
    assert_int_equal(moe_affine_bytes(NULL, 1, 96), 0);
    g.bits = 7;
    assert_int_equal(moe_affine_bytes(&g, 1, 96), 0);
}

/* ---- errors ---- */

static void expect_error(moe_status got, moe_status want, const char *needle)
{
    assert_int_equal(got, want);
    const char *msg = moe_last_error();
    assert_non_null(msg);
    if (!strstr(msg, needle))
        fail_msg("message \"%s\" does not mention \"%s\"", msg, needle);
}

static void test_check_errors(void **state)
{
    (void)state;
    static const int bad_bits[] = {-4, 0, 1, 7, 9, 16, 32};
    static const int bad_groups[] = {-32, 0, 16, 33, 96, 256};
    for (size_t i = 0; i < COUNT(bad_bits); i++) {
        moe_affine_format f = {bad_bits[i], 64, MOE_DTYPE_F16};
        expect_error(moe_affine_check(&f, 128), MOE_ERR_INVALID_ARG, "bits");
    }
    for (size_t i = 0; i < COUNT(bad_groups); i++) {
        moe_affine_format f = {4, bad_groups[i], MOE_DTYPE_F16};
        expect_error(moe_affine_check(&f, 256), MOE_ERR_INVALID_ARG, "group_size");
    }
    static const moe_dtype bad_dtypes[] = {MOE_DTYPE_U32, MOE_DTYPE_COUNT, (moe_dtype)-1,
                                           (moe_dtype)99};
    for (size_t i = 0; i < COUNT(bad_dtypes); i++) {
        moe_affine_format f = {4, 64, bad_dtypes[i]};
        expect_error(moe_affine_check(&f, 128), MOE_ERR_DTYPE, "dtype");
    }
    moe_affine_format f = {4, 64, MOE_DTYPE_F32};
    expect_error(moe_affine_check(&f, 96), MOE_ERR_SHAPE, "cols");
    expect_error(moe_affine_check(&f, 32), MOE_ERR_SHAPE, "cols");
    expect_error(moe_affine_check(&f, 0), MOE_ERR_SHAPE, "cols");
    expect_error(moe_affine_check(&f, -64), MOE_ERR_SHAPE, "cols");
    expect_error(moe_affine_check(NULL, 64), MOE_ERR_INVALID_ARG, "format");
    for (size_t b = 0; b < COUNT(all_bits); b++)
        for (size_t g = 0; g < COUNT(all_groups); g++)
            for (size_t t = 0; t < COUNT(all_dtypes); t++) {
                moe_affine_format ok = {all_bits[b], all_groups[g], all_dtypes[t]};
                assert_int_equal(moe_affine_check(&ok, 384), MOE_OK);
            }
}

static void test_call_errors(void **state)
{
    (void)state;
    moe_affine_format f = {4, 32, MOE_DTYPE_F32};
    float w[64] = {1.0f}, d[64];
    uint32_t codes[8];
    float sc[2], bi[2];

    expect_error(moe_affine_quantize(NULL, w, 1, 64, codes, sc, bi), MOE_ERR_INVALID_ARG,
                 "format");
    expect_error(moe_affine_quantize(&f, NULL, 1, 64, codes, sc, bi), MOE_ERR_INVALID_ARG,
                 "w is NULL");
    expect_error(moe_affine_quantize(&f, w, 1, 64, NULL, sc, bi), MOE_ERR_INVALID_ARG,
                 "codes");
    expect_error(moe_affine_quantize(&f, w, 1, 64, codes, NULL, bi), MOE_ERR_INVALID_ARG,
                 "scales");
    expect_error(moe_affine_quantize(&f, w, 1, 64, codes, sc, NULL), MOE_ERR_INVALID_ARG,
                 "biases");
    expect_error(moe_affine_quantize(&f, w, -1, 64, codes, sc, bi), MOE_ERR_SHAPE, "rows");
    expect_error(moe_affine_quantize(&f, w, 1, 48, codes, sc, bi), MOE_ERR_SHAPE, "cols");

    expect_error(moe_affine_dequantize(NULL, codes, sc, bi, 1, 64, d), MOE_ERR_INVALID_ARG,
                 "format");
    expect_error(moe_affine_dequantize(&f, NULL, sc, bi, 1, 64, d), MOE_ERR_INVALID_ARG,
                 "codes");
    expect_error(moe_affine_dequantize(&f, codes, NULL, bi, 1, 64, d), MOE_ERR_INVALID_ARG,
                 "scales");
    expect_error(moe_affine_dequantize(&f, codes, sc, NULL, 1, 64, d), MOE_ERR_INVALID_ARG,
                 "biases");
    expect_error(moe_affine_dequantize(&f, codes, sc, bi, 1, 64, NULL), MOE_ERR_INVALID_ARG,
                 "w is NULL");
    expect_error(moe_affine_dequantize(&f, codes, sc, bi, -2, 64, d), MOE_ERR_SHAPE, "rows");

    f.bits = 7;
    expect_error(moe_affine_quantize(&f, w, 1, 64, codes, sc, bi), MOE_ERR_INVALID_ARG, "bits");
    expect_error(moe_affine_dequantize(&f, codes, sc, bi, 1, 64, d), MOE_ERR_INVALID_ARG,
                 "bits");
    f.bits = 4;
    f.group_size = 48;
    expect_error(moe_affine_quantize(&f, w, 1, 96, codes, sc, bi), MOE_ERR_INVALID_ARG,
                 "group_size");
    f.group_size = 32;
    f.dtype = MOE_DTYPE_U32;
    expect_error(moe_affine_dequantize(&f, codes, sc, bi, 1, 64, d), MOE_ERR_DTYPE, "dtype");

    /* Zero rows: nothing to touch, so no buffers are needed. */
    f.dtype = MOE_DTYPE_F32;
    assert_int_equal(moe_affine_quantize(&f, NULL, 0, 64, NULL, NULL, NULL), MOE_OK);
    assert_int_equal(moe_affine_dequantize(&f, NULL, NULL, NULL, 0, 64, NULL), MOE_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_positions),
        cmocka_unit_test(test_pack_vs_reference),
        cmocka_unit_test(test_get_set_roundtrip),
        cmocka_unit_test(test_hand_min_edge),
        cmocka_unit_test(test_hand_max_edge),
        cmocka_unit_test(test_hand_all_equal),
        cmocka_unit_test(test_hand_zero_edge),
        cmocka_unit_test(test_codes_independent_of_dtype),
        cmocka_unit_test(test_quantize_stream_widths),
        cmocka_unit_test(test_roundtrip_all_formats),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_check_errors),
        cmocka_unit_test(test_call_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
