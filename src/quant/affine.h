/* quant/affine.h — MLX affine quantization, in the layout mlx-community
 * checkpoints store it.
 *
 * A row of `cols` inputs is cut into groups of group_size consecutive
 * elements; each group has a scale and a bias and each element a code q of
 * `bits` bits, with  w = scale·q + bias.
 *
 * Codes: a row occupies cols*bits/32 uint32 words and element i occupies
 * bits [i*bits, (i+1)*bits) counted from bit 0 of word 0 upward, bit 32 being
 * bit 0 of word 1. For 2, 4 and 8 bits no code straddles a word (4-bit:
 * element 0 in bits 0-3 of word 0, element 7 in bits 28-31); for 3, 5 and 6
 * bits this is MLX's little-endian byte stream read as little-endian words
 * (the file layout; moe assumes a little-endian host).
 * Scales and biases: [rows, cols/group_size] in F32, F16 or BF16. */
#ifndef MOE_QUANT_AFFINE_H
#define MOE_QUANT_AFFINE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/status.h"

typedef struct {
    int bits;        /* 2, 3, 4, 5, 6 or 8 */
    int group_size;  /* 32, 64 or 128 */
    moe_dtype dtype; /* of scales and biases: F32, F16 or BF16 */
} moe_affine_format;

/* MOE_OK when f is a supported format and cols (> 0) a multiple of its
 * group size; otherwise an error whose message names the field at fault. */
moe_status moe_affine_check(const moe_affine_format *f, int cols);

/* uint32 words of one packed row (rounded up; exact for valid cols). */
size_t moe_affine_row_words(int cols, int bits);

/* Bytes of codes + scales + biases for a [rows, cols] matrix; 0 when the
 * format, rows or cols are invalid. */
size_t moe_affine_bytes(const moe_affine_format *f, int rows, int cols);

/* Quantizes w [rows, cols] with MLX's rule (codes identical to MLX's), into
 * codes [rows, row_words], scales and biases [rows, cols/group_size]. */
moe_status moe_affine_quantize(const moe_affine_format *f, const float *w, int rows, int cols,
                               uint32_t *codes, void *scales, void *biases);

/* w [rows, cols] = scale·q + bias, computed in float32. */
moe_status moe_affine_dequantize(const moe_affine_format *f, const uint32_t *codes,
                                 const void *scales, const void *biases, int rows, int cols,
                                 float *w);

/* Code i of a packed row, for any of the six widths. No argument checks:
 * bits must be valid and i inside the row. */
uint32_t moe_affine_get_code(const uint32_t *row_codes, int bits, int i);

/* Stores the low `bits` bits of q as code i, leaving other codes intact. */
void moe_affine_set_code(uint32_t *row_codes, int bits, int i, uint32_t q);

#endif
