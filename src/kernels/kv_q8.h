/* kernels/kv_q8.h — the 8-bit KV cache (MOE_DTYPE_Q8, `--kv-cache q8`):
 * its layout, and the scalar quantization every kernel set reproduces bit
 * for bit.
 *
 * Format: symmetric int8 in groups of 32 along head_dim, one scale a group
 * (as llama.cpp's q8_0). Each kv head's vector of a position is a head
 * block: its D codes, then its ceil(D/32) scales as bf16; a cache row (one
 * position, all kv heads) is the heads' blocks one after another, so
 * decode reads a row whole and in order. At head_dim 128 a head is 136
 * bytes: 1.0625 bytes an element, 53% of a half cache.
 *
 * Why this one: groups along head_dim keep an outlier channel (RoPE's
 * low-frequency pairs, a few large value channels) from coarsening more
 * than its own 32 elements; symmetric codes make a dot product one scale a
 * group (no bias term, as MLX's affine groups would need); a group never
 * straddles two heads, so a head's block is read alone (GQA: each query
 * reads its kv head's block). The scale is bf16 — half the bytes of f32
 * with f32's exponent range, so no group overflows or underflows it — and
 * is rounded up, so no code needs clamping for finite input: a code is
 * round(x / scale), |x − code·scale| ≤ scale/2, scale ≤ max|x|/127·(1+2⁻⁷).
 * code·scale is exact in float32 (8 by 8 significant bits), so the
 * kernels' arithmetic is that of a float32 cache holding the dequantized
 * values, up to rounding order.
 *
 * Rules (every kernel set gives the same bits): s = max|x| / 127 in float32
 * (a NaN element does not count toward the max), rounded up to bf16 (the
 * smallest positive bf16 where that division underflows to 0 with max|x|
 * > 0); code = x / s rounded to nearest even, clamped to ±127 (0 for an
 * all-zero group: divided by 1); a NaN element stores −127. Infinite
 * inputs give an infinite scale and NaN values: no model of ours stores
 * them. */
#ifndef MOE_KERNELS_KV_Q8_H
#define MOE_KERNELS_KV_Q8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { MOE_KV_Q8_GROUP = 32 };

/* Groups and bytes of one head block of D elements. */
static inline int moe_kv_q8_groups(int D) { return (D + MOE_KV_Q8_GROUP - 1) / MOE_KV_Q8_GROUP; }
static inline size_t moe_kv_q8_head_bytes(int D) { return (size_t)D + 2 * (size_t)moe_kv_q8_groups(D); }

/* A bf16 scale's bits as the float it is. */
static inline float moe_kv_q8_scale_value(uint16_t bits)
{
    uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Scale g of the head block at h (D elements). */
static inline float moe_kv_q8_scale(const void *h, int D, int g)
{
    uint16_t b;
    memcpy(&b, (const unsigned char *)h + D + 2 * (size_t)g, sizeof b);
    return moe_kv_q8_scale_value(b);
}

/* The scale's bits for a group whose largest |x| is amax (≥ 0, not NaN). */
static inline uint16_t moe_kv_q8_scale_bits(float amax)
{
    float s = amax / 127.0f;
    uint32_t u;
    memcpy(&u, &s, sizeof u);
    if (u & 0xffffu) u += 0x10000u; /* round up (s ≥ 0): no code past 127 */
    if (!(u >> 16) && amax > 0.0f) u = 0x10000u; /* underflow: the smallest bf16 */
    return (uint16_t)(u >> 16);
}

/* One code: x / d rounded to nearest even within ±127 (a NaN: −127); d the
 * group's scale, or 1 where it is 0. */
static inline int8_t moe_kv_q8_code(float x, float d)
{
    float v = fminf(fmaxf(x / d, -127.0f), 127.0f); /* fmaxf(NaN, −127) = −127 */
    return (int8_t)lrintf(v);
}

/* The reference: n head vectors of D floats from src into n head blocks
 * at dst. */
static inline void moe_kv_q8_store_ref(size_t n, int D, const float *src, void *dst)
{
    unsigned char *h = dst;
    for (size_t i = 0; i < n; i++, src += D, h += moe_kv_q8_head_bytes(D))
        for (int g = 0, d0 = 0; d0 < D; g++, d0 += MOE_KV_Q8_GROUP) {
            int d1 = d0 + MOE_KV_Q8_GROUP < D ? d0 + MOE_KV_Q8_GROUP : D;
            float amax = 0.0f;
            for (int d = d0; d < d1; d++) amax = fmaxf(amax, fabsf(src[d])); /* fmaxf drops a NaN */
            uint16_t bits = moe_kv_q8_scale_bits(amax);
            float s = moe_kv_q8_scale_value(bits), div = s > 0.0f ? s : 1.0f;
            for (int d = d0; d < d1; d++) h[d] = (unsigned char)moe_kv_q8_code(src[d], div);
            memcpy(h + D + 2 * (size_t)g, &bits, sizeof bits);
        }
}

/* Element d of the head block at h (D elements), as the float it stands for. */
static inline float moe_kv_q8_value(const void *h, int D, int d)
{
    return (float)((const int8_t *)h)[d] * moe_kv_q8_scale(h, D, d / MOE_KV_Q8_GROUP);
}

#endif
