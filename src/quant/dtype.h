/* quant/dtype.h — element types inside moe: scalar float conversions and a
 * traits table (size, name, array converters) indexed by moe_dtype, so that
 * code handling "any float dtype" looks the type up once instead of
 * switching on it everywhere. */
#ifndef MOE_QUANT_DTYPE_H
#define MOE_QUANT_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"

/* bfloat16: the top half of an IEEE float32. to_f32 is exact; from_f32
 * rounds to nearest even, keeps inf, and turns any NaN into a quiet NaN
 * (never into inf, which plain rounding of a NaN's low bits could do). */
float moe_bf16_to_f32(uint16_t h);
uint16_t moe_f32_to_bf16(float f);

/* IEEE binary16. to_f32 is exact (subnormals included); from_f32 rounds to
 * nearest even, overflows to inf, produces correctly rounded subnormals and
 * keeps NaN a (quiet) NaN with its sign and top payload bits. */
float moe_f16_to_f32(uint16_t h);
uint16_t moe_f32_to_f16(float f);

/* Per-dtype facts. to_f32/from_f32 convert n elements between the dtype's
 * storage and float32 (from_f32 rounds as above); they are NULL for U32,
 * which holds packed codes, not numbers. */
typedef struct {
    moe_dtype dtype;
    const char *name;
    size_t size;
    void (*to_f32)(const void *src, float *dst, size_t n);
    void (*from_f32)(const float *src, void *dst, size_t n);
} moe_dtype_traits;

/* The traits of t, or NULL when t is not a valid moe_dtype. */
const moe_dtype_traits *moe_dtype_traits_of(moe_dtype t);

#endif
