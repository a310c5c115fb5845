/* layers/expert_store.c — repacking checkpoint rows into kernel panels. */
#include "layers/expert_store.h"

#include <string.h>

#include "core/error.h"
#include "core/memory.h"

static moe_status check_float_dtype(moe_dtype t, const char *what, const char *role)
{
    if (t == MOE_DTYPE_F32 || t == MOE_DTYPE_F16 || t == MOE_DTYPE_BF16) return MOE_OK;
    return moe_error_set(MOE_ERR_DTYPE, "%s %s dtype %s is not F32, F16 or BF16", what, role,
                         moe_dtype_name(t));
}

moe_status moe_expert_format_check(const moe_expert_weights *w, int K, const char *what,
                                   moe_panel_format *fmt)
{
    if (!w) return moe_error_set(MOE_ERR_INVALID_ARG, "%s weights are missing (NULL)", what);
    if ((unsigned)w->dtype >= MOE_DTYPE_COUNT)
        return moe_error_set(MOE_ERR_DTYPE, "%s dtype %d is not a moe_dtype", what, (int)w->dtype);
    memset(fmt, 0, sizeof *fmt);
    fmt->K = K;
    moe_status st;
    if (w->bits == 0) {
        if ((st = check_float_dtype(w->dtype, what, "weight")) != MOE_OK) return st;
        fmt->fmt = w->dtype == MOE_DTYPE_F32 ? MOE_WF_F32 : w->dtype == MOE_DTYPE_F16 ? MOE_WF_F16 : MOE_WF_BF16;
        return MOE_OK;
    }
    if (w->bits != 4 && w->bits != 8)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: %d-bit experts are not supported (use 4 or 8)",
                             what, w->bits);
    if ((st = check_float_dtype(w->dtype, what, "scales/biases")) != MOE_OK) return st;
    if (w->group_size != 32 && w->group_size != 64 && w->group_size != 128)
        return moe_error_set(MOE_ERR_SHAPE, "%s group size %d is not 32, 64 or 128", what, w->group_size);
    if (K % w->group_size != 0)
        return moe_error_set(MOE_ERR_SHAPE, "%s input dim %d is not a multiple of the group size %d",
                             what, K, w->group_size);
    fmt->fmt = w->bits == 4 ? MOE_WF_Q4 : MOE_WF_Q8;
    fmt->sdtype = w->dtype;
    fmt->group_size = w->group_size;
    return MOE_OK;
}

void moe_expert_store_describe(moe_expert_store *s, const moe_panel_format *fmt, int experts, size_t rows_per_expert)
{
    memset(s, 0, sizeof *s);
    s->fmt = *fmt;
    s->experts = experts;
    s->rows_per_expert = rows_per_expert;
    size_t K = (size_t)fmt->K;
    if (moe_wformat_is_quant(fmt->fmt)) {
        s->w_row_bytes = K * (size_t)moe_wformat_bits(fmt->fmt) / 8;
        s->s_row_bytes = K / (size_t)fmt->group_size * moe_dtype_size(fmt->sdtype);
    } else {
        s->w_row_bytes = K * moe_wformat_value_bytes(fmt->fmt);
    }
    s->row_bytes = s->w_row_bytes + 2 * s->s_row_bytes;
}

moe_status moe_expert_store_init(moe_expert_store *s, const moe_panel_format *fmt,
                                 int experts, size_t rows_per_expert, const char *what)
{
    moe_expert_store_describe(s, fmt, experts, rows_per_expert);
    s->data = moe_alloc((size_t)experts * rows_per_expert * s->row_bytes, what);
    return s->data ? MOE_OK : MOE_ERR_NOMEM;
}

void moe_expert_store_free(moe_expert_store *s)
{
    moe_free(s->data);
    s->data = NULL;
}

size_t moe_expert_store_bytes(const moe_expert_store *s)
{
    return (size_t)s->experts * s->rows_per_expert * s->row_bytes;
}

moe_panel moe_expert_store_panel(const moe_expert_store *s, int e, size_t slot, int nr)
{
    unsigned char *base = s->data + ((size_t)e * s->rows_per_expert + slot) * s->row_bytes;
    moe_panel p = { base, NULL, NULL, nr, 0 };
    if (s->s_row_bytes) {
        size_t ss = moe_dtype_size(s->fmt.sdtype), groups = s->s_row_bytes / ss;
        size_t codes = s->w_row_bytes / groups * (size_t)nr; /* one group's codes */
        p.scales = base + codes;
        p.biases = base + codes + (size_t)nr * ss;
        p.gstride = codes + 2 * (size_t)nr * ss;
    }
    return p;
}

/* dst[c][r] = src row r's unit c, for nr rows of `units` units of `size` bytes. */
static void transpose_rows(unsigned char *dst, const unsigned char *src, size_t src_row_bytes,
                           int nr, size_t units, size_t size)
{
    for (int r = 0; r < nr; r++) {
        const unsigned char *row = src + (size_t)r * src_row_bytes;
        for (size_t c = 0; c < units; c++)
            memcpy(dst + (c * (size_t)nr + (size_t)r) * size, row + c * size, size);
    }
}

void moe_expert_store_put_panel(moe_expert_store *s, int e, size_t slot,
                                const moe_expert_weights *src, size_t r0, int nr)
{
    moe_panel p = moe_expert_store_panel(s, e, slot, nr);
    if (!moe_wformat_is_quant(s->fmt.fmt)) {
        size_t unit = moe_wformat_value_bytes(s->fmt.fmt);
        transpose_rows((unsigned char *)p.w, (const unsigned char *)src->weight + r0 * s->w_row_bytes,
                       s->w_row_bytes, nr, s->w_row_bytes / unit, unit);
        return;
    }
    size_t ss = moe_dtype_size(s->fmt.sdtype), groups = s->s_row_bytes / ss, gw = s->w_row_bytes / groups;
    for (size_t g = 0; g < groups; g++) {
        /* group g's block: its codes, its scales, its biases */
        transpose_rows((unsigned char *)p.w + g * p.gstride,
                       (const unsigned char *)src->weight + r0 * s->w_row_bytes + g * gw, s->w_row_bytes, nr, gw / 4, 4);
        transpose_rows((unsigned char *)p.scales + g * p.gstride,
                       (const unsigned char *)src->scales + r0 * s->s_row_bytes + g * ss, s->s_row_bytes, nr, 1, ss);
        transpose_rows((unsigned char *)p.biases + g * p.gstride,
                       (const unsigned char *)src->biases + r0 * s->s_row_bytes + g * ss, s->s_row_bytes, nr, 1, ss);
    }
}

moe_status moe_expert_store_permute(moe_expert_store *s, const size_t *old_slot,
                                    const size_t *new_slot, const int *rows, int count)
{
    size_t expert_bytes = s->rows_per_expert * s->row_bytes;
    unsigned char *scratch = moe_alloc(expert_bytes, "panel rearrangement");
    if (!scratch) return MOE_ERR_NOMEM;
    for (int e = 0; e < s->experts; e++) {
        unsigned char *base = s->data + (size_t)e * expert_bytes;
        memcpy(scratch, base, expert_bytes);
        for (int i = 0; i < count; i++)
            memcpy(base + new_slot[i] * s->row_bytes, scratch + old_slot[i] * s->row_bytes,
                   (size_t)rows[i] * s->row_bytes);
    }
    moe_free(scratch);
    return MOE_OK;
}
