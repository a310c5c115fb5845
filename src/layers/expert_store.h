/* layers/expert_store.h — one projection's weights for all experts, held in
 * the kernels' panel layout (see kernels/kernels.h), same bytes as given.
 *
 * Rows of expert e live in `rows_per_expert` row slots of one buffer; a
 * panel of nr rows that starts at slot s occupies slots s..s+nr-1 whole,
 * laid out as kernels.h says (quantized: group by group, codes then scales
 * then biases — one sequential stream). Where each panel starts is the
 * caller's choice: that is how gate and up are interleaved for the fused
 * pass. */
#ifndef MOE_LAYERS_EXPERT_STORE_H
#define MOE_LAYERS_EXPERT_STORE_H

#include <stddef.h>

#include "kernels/kernels.h"
#include "moe/switchglu.h"

typedef struct {
    moe_panel_format fmt;
    int experts;
    size_t rows_per_expert;
    size_t w_row_bytes;   /* one row of values or codes */
    size_t s_row_bytes;   /* one row of scales (and of biases); 0 for float */
    size_t row_bytes;     /* a row slot: w_row_bytes + 2·s_row_bytes */
    unsigned char *data;  /* [experts][rows_per_expert] slots */
} moe_expert_store;

/* Checks a projection's format for input length K and fills `fmt`.
 * `what` names the projection in messages ("gate", "up", "down"). */
moe_status moe_expert_format_check(const moe_expert_weights *w, int K, const char *what,
                                   moe_panel_format *fmt);

/* The store's format and row sizes without its memory: what a layer whose
 * weights live elsewhere (on a GPU) needs to find an expert's rows in a
 * stacked source. */
void moe_expert_store_describe(moe_expert_store *s, const moe_panel_format *fmt, int experts, size_t rows_per_expert);

moe_status moe_expert_store_init(moe_expert_store *s, const moe_panel_format *fmt,
                                 int experts, size_t rows_per_expert, const char *what);
void moe_expert_store_free(moe_expert_store *s);
size_t moe_expert_store_bytes(const moe_expert_store *s);

/* Copies rows [r0, r0+nr) of a row-major source (one expert's slice) into the
 * panel at slot `slot` of expert e. */
void moe_expert_store_put_panel(moe_expert_store *s, int e, size_t slot,
                                const moe_expert_weights *src, size_t r0, int nr);

/* The panel of nr rows at slot `slot` of expert e. */
moe_panel moe_expert_store_panel(const moe_expert_store *s, int e, size_t slot, int nr);

/* Rearranges every expert's panels: block i (rows[i] rows at old_slot[i])
 * moves to new_slot[i]; the blocks must tile the expert's slots. Done in
 * place, expert by expert, through one expert's worth of scratch. */
moe_status moe_expert_store_permute(moe_expert_store *s, const size_t *old_slot,
                                    const size_t *new_slot, const int *rows, int count);

#endif
