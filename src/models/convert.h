/* models/convert.h — what a checkpoint converter needs from an
 * architecture: the model's modules in mlx-lm's parameter order, each with
 * its source tensors (checked for presence, float dtype and shape), whether
 * MLX would quantize it (a Linear or an Embedding), and which are routers.
 * models/convert.c turns such a plan into MLX-layout files. */
#ifndef MOE_MODELS_CONVERT_H
#define MOE_MODELS_CONVERT_H

#include <stdint.h>

#include "io/model_config.h"
#include "io/safetensors.h"

enum { CONV_PATH_MAX = 192 };

typedef struct {
    char path[CONV_PATH_MAX];  /* module path; the output tensors are path.weight (+ .scales, .biases) */
    int quantizable;           /* a Linear or an Embedding (MLX's to_quantized) */
    int router;                /* a router (mlp.gate): gets router_bits */
    int experts;               /* 0, or E for a stacked [E, rows, cols] module */
    int64_t rows, cols;        /* one expert's weight [rows, cols]; rows 0: a vector [cols] */
    int n_src;                 /* 1, or E per-expert tensors stacked in order */
    const moe_st_tensor **src; /* [n_src]; the first is [E, rows, cols] when stacked already */
} conv_module;

typedef struct {
    const char *layout;        /* "hub" or "mlx" */
    conv_module *mods;
    int n;
} conv_plan;

/* OLMoE's plan over an open checkpoint of either float layout. A tensor the
 * plan does not use (other than a tied lm_head) is an error naming it. */
moe_status olmoe_convert_plan(const moe_model_config *cfg, const moe_st_set *set, const char *dir, conv_plan *plan);

void conv_plan_free(conv_plan *plan);

#endif
