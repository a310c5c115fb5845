/* checkpoint/plan.h — a float checkpoint's modules as the converter writes
 * them, for any family: every module in the order mlx-lm's model lists its
 * parameters, each with its source tensors (checked for presence, float
 * dtype and shape), whether MLX would quantize it (a Linear or an
 * Embedding) and whether it is a router, and the family's own quantization
 * of its routers (mlx-lm's quant_predicate). checkpoint/convert.c turns a
 * plan into MLX-layout files. */
#ifndef MOE_CHECKPOINT_PLAN_H
#define MOE_CHECKPOINT_PLAN_H

#include <stdint.h>

#include "io/model_config.h"
#include "io/safetensors.h"

enum { CONV_PATH_MAX = 192 };

typedef struct {
    char path[CONV_PATH_MAX];  /* module path; the output tensors are path.weight (+ .scales, .biases) */
    int quantizable;           /* a Linear or an Embedding (MLX's to_quantized) */
    int router;                /* a router (BLOCK.gate) */
    int experts;               /* 0, or E for a stacked [E, rows, cols] module */
    int64_t rows, cols;        /* one expert's weight [rows, cols]; rows 0: a vector [cols] */
    int n_src;                 /* 1, or E per-expert tensors stacked in order */
    const moe_st_tensor **src; /* [n_src]; the first is [E, rows, cols] when stacked already */
} conv_module;

typedef struct {
    const char *layout;        /* "hub" or "mlx" */
    /* what the family's quant_predicate gives its routers: bits and group
     * size (0: nothing of its own, they are quantized as the rest) */
    int router_bits, router_group_size;
    conv_module *mods;
    int n;
} conv_plan;

/* The plan for the family cfg describes, over an open checkpoint of either
 * float layout (told by the first MoE layer, as the loader tells it). A
 * tensor the plan does not use (other than a tied lm_head) is an error
 * naming it. */
moe_status conv_plan_make(const moe_model_config *cfg, const moe_st_set *set, const char *dir, conv_plan *plan);

void conv_plan_free(conv_plan *plan);

#endif
