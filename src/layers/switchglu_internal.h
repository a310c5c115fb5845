/* layers/switchglu_internal.h — the layer's state, shared by its creation
 * (switchglu.c) and its forward pass (switchglu_forward.c). */
#ifndef MOE_LAYERS_SWITCHGLU_INTERNAL_H
#define MOE_LAYERS_SWITCHGLU_INTERNAL_H

#include "layers/expert_store.h"
#include "moe/switchglu.h"

enum { MOE_SWITCHGLU_MAX_THREADS = 256 };

typedef struct {
    float *apack;     /* [ceil(m/mr)][K][mr] tokens of the current group */
    float *b;         /* two unpacked panels [2][K][16] */
    float *c;         /* the group's tile results [ceil(m/mr)][mr][32] */
    size_t apack_floats, b_floats, c_floats;
    /* int8 activations of the current group in panel_gemm_i8 tiles of
     * mr_i8 tokens (moe_pack_act_i8), tile t at t·mr_i8·K bytes and
     * t·mr_i8·(K/group) floats */
    int8_t *aq;
    float *ad, *as;   /* their scales dx and group sums */
    size_t aq_bytes, ad_floats, as_floats;
    /* the same for the residual digits (MOE_ACT_INT8X2; sums all 0) */
    int8_t *aqr;
    float *adr, *asr;
    size_t aqr_bytes, adr_floats, asr_floats;
} thread_scratch;

/* Activation buffers, grown on demand. Layers that never run at the same
 * time (the layers of one model) can share one (moe_switchglu_share_workspace),
 * so the largest layer's needs are held once, not once a layer. */
typedef struct {
    int refs;
    float *h, *g, *u, *xsum, *hsum, *xd, *hd;
    int8_t *xq, *hq;
    size_t h_floats, g_floats, u_floats, xsum_floats, hsum_floats, xd_floats, hd_floats, xq_bytes, hq_bytes;
    /* residual digits and their scales (MOE_ACT_INT8X2), zero group sums */
    int8_t *xqr, *hqr;
    float *xdr, *hdr, *zsum;
    size_t xqr_bytes, hqr_bytes, xdr_floats, hdr_floats, zsum_floats;
    /* both digits joined, a row of int16 per token (x) and pair (h), for a
     * kernel set with panel_gemv_i8x2_joined when every group is small */
    int16_t *xa, *ha;
    size_t xa_count, ha_count;
    int32_t *order, *group_start, *group_expert, *count;
    size_t order_cap, group_start_cap, group_expert_cap, count_cap;
    thread_scratch scratch[MOE_SWITCHGLU_MAX_THREADS];
} switchglu_workspace;

struct moe_switchglu {
    int experts, dim, hidden;
    int fused;
    int int8_activations;
    int sort_threshold;
    int panels_hidden, panels_dim;   /* ceil(hidden/16), ceil(dim/16) */
    moe_expert_store gate_up;        /* 2·hidden row slots per expert */
    moe_expert_store down;           /* dim row slots per expert */
    size_t *gate_slot, *up_slot;     /* where hidden panel p of each starts */
    unsigned char *loaded;           /* per expert */
    switchglu_workspace *ws;         /* possibly shared with other layers */
    /* On a GPU (device MOE_DEVICE_CUDA) the weights and workspace are the
     * device layer's (backend/device_layer.h): the stores above hold only
     * their formats, for the checks the two devices share. */
    int device;
    struct moe_device_layer *dev;
};

/* The checks of a forward call (switchglu_forward.c), shared by
 * moe_switchglu_time: MOE_OK or the error naming the argument at fault. */
moe_status moe_switchglu_check_call(const moe_switchglu *l, const float *x, int tokens, const int32_t *idx,
                                    const float *scores, int top_k, const float *y);

/* Rows in panel p of a projection with `rows` outputs. */
static inline int panel_rows(int rows, int p)
{
    return rows - p * MOE_PANEL < MOE_PANEL ? rows - p * MOE_PANEL : MOE_PANEL;
}

#endif
