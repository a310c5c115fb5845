/* quant/affine.c — MLX affine quantization: format checks, code packing for
 * 2..8-bit widths, and the reference (scalar) quantizer and dequantizer.
 *
 * The quantizer follows MLX's rule step by step in float32 so that the codes
 * it produces are those of mx.quantize; the fast paths of the kernels only
 * ever dequantize, so this file favours clarity over speed. */
#include "quant/affine.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "quant/dtype.h"

/* ---- format ---- */

static int moe_affine_bits_ok(int bits)
{
    return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

static int moe_affine_group_ok(int group_size)
{
    return group_size == 32 || group_size == 64 || group_size == 128;
}

static int moe_affine_dtype_ok(moe_dtype t)
{
    return t == MOE_DTYPE_F32 || t == MOE_DTYPE_F16 || t == MOE_DTYPE_BF16;
}

moe_status moe_affine_check(const moe_affine_format *f, int cols)
{
    if (!f)
        return moe_error_set(MOE_ERR_INVALID_ARG, "affine: format is NULL");
    if (!moe_affine_bits_ok(f->bits))
        return moe_error_set(MOE_ERR_INVALID_ARG,
                             "affine: bits = %d, expected 2, 3, 4, 5, 6 or 8", f->bits);
    if (!moe_affine_group_ok(f->group_size))
        return moe_error_set(MOE_ERR_INVALID_ARG,
                             "affine: group_size = %d, expected 32, 64 or 128", f->group_size);
    if (!moe_affine_dtype_ok(f->dtype))
        return moe_error_set(MOE_ERR_DTYPE,
                             "affine: scales/biases dtype %s (%d), expected F32, F16 or BF16",
                             moe_dtype_name(f->dtype), (int)f->dtype);
    if (cols <= 0 || cols % f->group_size != 0)
        return moe_error_set(MOE_ERR_SHAPE,
                             "affine: cols = %d is not a positive multiple of group_size %d",
                             cols, f->group_size);
    return MOE_OK;
}

size_t moe_affine_row_words(int cols, int bits)
{
    if (cols <= 0 || bits <= 0)
        return 0;
    return ((size_t)cols * (size_t)bits + 31u) / 32u;
}

size_t moe_affine_bytes(const moe_affine_format *f, int rows, int cols)
{
    /* A size query must not leave an error message behind, so the format is
     * validated without moe_affine_check. */
    if (!f || rows < 0 || cols <= 0 || !moe_affine_bits_ok(f->bits) ||
        !moe_affine_group_ok(f->group_size) || !moe_affine_dtype_ok(f->dtype) ||
        cols % f->group_size != 0)
        return 0;
    size_t groups = (size_t)(cols / f->group_size);
    size_t per_row = moe_affine_row_words(cols, f->bits) * sizeof(uint32_t) +
                     2u * groups * moe_dtype_size(f->dtype);
    return (size_t)rows * per_row;
}

/* Rows and pointers shared by quantize and dequantize; pointers may be NULL
 * only when there is nothing to touch (rows == 0). */
static moe_status moe_affine_check_call(const moe_affine_format *f, int rows, int cols,
                                        const void *w, const void *codes, const void *scales,
                                        const void *biases)
{
    moe_status s = moe_affine_check(f, cols);
    if (s != MOE_OK)
        return s;
    if (rows < 0)
        return moe_error_set(MOE_ERR_SHAPE, "affine: rows = %d is negative", rows);
    if (rows == 0)
        return MOE_OK;
    if (!w)
        return moe_error_set(MOE_ERR_INVALID_ARG, "affine: w is NULL");
    if (!codes)
        return moe_error_set(MOE_ERR_INVALID_ARG, "affine: codes is NULL");
    if (!scales)
        return moe_error_set(MOE_ERR_INVALID_ARG, "affine: scales is NULL");
    if (!biases)
        return moe_error_set(MOE_ERR_INVALID_ARG, "affine: biases is NULL");
    return MOE_OK;
}

/* ---- code packing ---- */

/* Element i starts at bit i*bits of the row; for 3, 5 and 6 bits it may run
 * into the next word, so the high part is fetched/stored from there. */
uint32_t moe_affine_get_code(const uint32_t *row_codes, int bits, int i)
{
    size_t pos = (size_t)i * (size_t)bits;
    size_t word = pos / 32u;
    unsigned off = (unsigned)(pos % 32u);
    uint32_t mask = (1u << bits) - 1u;
    uint32_t v = row_codes[word] >> off;
    if (off + (unsigned)bits > 32u)
        v |= row_codes[word + 1] << (32u - off);
    return v & mask;
}

void moe_affine_set_code(uint32_t *row_codes, int bits, int i, uint32_t q)
{
    size_t pos = (size_t)i * (size_t)bits;
    size_t word = pos / 32u;
    unsigned off = (unsigned)(pos % 32u);
    uint32_t mask = (1u << bits) - 1u;
    q &= mask;
    row_codes[word] = (row_codes[word] & ~(mask << off)) | (q << off);
    if (off + (unsigned)bits > 32u) {
        unsigned low = 32u - off; /* bits that went into the first word */
        row_codes[word + 1] = (row_codes[word + 1] & ~(mask >> low)) | (q >> low);
    }
}

/* ---- quantize ---- */

typedef struct {
    float scale;
    float bias;
} moe_affine_params;

/* MLX's per-group rule, one float32 operation at a time. The edge (the
 * extreme of larger magnitude) is made exactly representable: its code is
 * 0 (bias = edge), which is why scale turns negative when the edge is the
 * maximum — codes then count down from the max. */
static moe_affine_params moe_affine_group_params(const float *w, int n_el, int bits)
{
    const float n_bins = (float)((1 << bits) - 1);
    const float eps = 1e-7f;
    float lo = w[0], hi = w[0];
    for (int j = 1; j < n_el; j++) {
        if (w[j] < lo)
            lo = w[j];
        if (w[j] > hi)
            hi = w[j];
    }

    float range = hi - lo;
    float scale = range / n_bins;
    if (scale < eps)
        scale = eps;
    float edge;
    if (fabsf(lo) > fabsf(hi)) {
        edge = lo;
    } else {
        edge = hi;
        scale = -scale;
    }

    float ratio = edge / scale;
    float q0 = roundf(ratio);
    moe_affine_params p = {scale, 0.0f};
    if (q0 != 0.0f) {
        p.scale = edge / q0;
        p.bias = edge;
    }
    return p;
}

/* Written so that a NaN (from NaN/inf weights) becomes code 0 rather than
 * an undefined float-to-integer conversion. */
static uint32_t moe_affine_code_of(float w, moe_affine_params p, float n_bins)
{
    float diff = w - p.bias;
    float q = roundf(diff / p.scale);
    if (!(q > 0.0f))
        return 0;
    if (q > n_bins)
        q = n_bins;
    return (uint32_t)q;
}

static void moe_affine_quantize_row(const moe_affine_format *f, const moe_dtype_traits *tr,
                                    const float *w, int cols, uint32_t *codes,
                                    unsigned char *scales, unsigned char *biases)
{
    const float n_bins = (float)((1 << f->bits) - 1);
    int groups = cols / f->group_size;
    memset(codes, 0, moe_affine_row_words(cols, f->bits) * sizeof(uint32_t));
    for (int g = 0; g < groups; g++) {
        const float *wg = w + (size_t)g * (size_t)f->group_size;
        moe_affine_params p = moe_affine_group_params(wg, f->group_size, f->bits);
        /* Codes use the float32 parameters; only the stored copy is rounded
         * to the dtype, as MLX does. */
        tr->from_f32(&p.scale, scales + (size_t)g * tr->size, 1);
        tr->from_f32(&p.bias, biases + (size_t)g * tr->size, 1);
        for (int j = 0; j < f->group_size; j++) {
            int i = g * f->group_size + j;
            moe_affine_set_code(codes, f->bits, i, moe_affine_code_of(w[i], p, n_bins));
        }
    }
}

moe_status moe_affine_quantize(const moe_affine_format *f, const float *w, int rows, int cols,
                               uint32_t *codes, void *scales, void *biases)
{
    moe_status s = moe_affine_check_call(f, rows, cols, w, codes, scales, biases);
    if (s != MOE_OK)
        return s;
    const moe_dtype_traits *tr = moe_dtype_traits_of(f->dtype);
    size_t words = moe_affine_row_words(cols, f->bits);
    size_t param_bytes = (size_t)(cols / f->group_size) * tr->size;
    for (int r = 0; r < rows; r++) {
        moe_affine_quantize_row(f, tr, w + (size_t)r * (size_t)cols, cols,
                                codes + (size_t)r * words,
                                (unsigned char *)scales + (size_t)r * param_bytes,
                                (unsigned char *)biases + (size_t)r * param_bytes);
    }
    return MOE_OK;
}

/* ---- dequantize ---- */

static void moe_affine_dequantize_row(const moe_affine_format *f, const moe_dtype_traits *tr,
                                      const uint32_t *codes, const unsigned char *scales,
                                      const unsigned char *biases, int cols, float *w)
{
    int groups = cols / f->group_size;
    for (int g = 0; g < groups; g++) {
        float scale, bias;
        tr->to_f32(scales + (size_t)g * tr->size, &scale, 1);
        tr->to_f32(biases + (size_t)g * tr->size, &bias, 1);
        for (int j = 0; j < f->group_size; j++) {
            int i = g * f->group_size + j;
            float q = (float)moe_affine_get_code(codes, f->bits, i);
            float sq = scale * q;
            w[i] = sq + bias;
        }
    }
}

moe_status moe_affine_dequantize(const moe_affine_format *f, const uint32_t *codes,
                                 const void *scales, const void *biases, int rows, int cols,
                                 float *w)
{
    moe_status s = moe_affine_check_call(f, rows, cols, w, codes, scales, biases);
    if (s != MOE_OK)
        return s;
    const moe_dtype_traits *tr = moe_dtype_traits_of(f->dtype);
    size_t words = moe_affine_row_words(cols, f->bits);
    size_t param_bytes = (size_t)(cols / f->group_size) * tr->size;
    for (int r = 0; r < rows; r++) {
        moe_affine_dequantize_row(f, tr, codes + (size_t)r * words,
                                  (const unsigned char *)scales + (size_t)r * param_bytes,
                                  (const unsigned char *)biases + (size_t)r * param_bytes, cols,
                                  w + (size_t)r * (size_t)cols);
    }
    return MOE_OK;
}
