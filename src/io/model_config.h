/* io/model_config.h — a checkpoint's config.json, read into the numbers the
 * model needs (OLMoE for now), in both the Hugging Face form and the MLX
 * form (with its "quantization" block and per-module overrides). */
#ifndef MOE_IO_MODEL_CONFIG_H
#define MOE_IO_MODEL_CONFIG_H

#include "moe/status.h"

enum { MOE_CONFIG_MAX_EOS = 8 };

/* A module quantized differently from the default (or not at all: bits 0). */
typedef struct {
    char *module;          /* module path, e.g. "model.layers.0.mlp.gate" */
    int bits, group_size;
} moe_quant_override;

typedef struct {
    char model_type[32];
    int hidden_size;       /* D */
    int num_layers;
    int num_heads, num_kv_heads, head_dim;
    int expert_hidden;     /* intermediate_size: I of each expert */
    int num_experts, top_k;
    int norm_topk_prob;    /* renormalise the top-k router weights */
    int vocab_size;
    int max_position;
    int tie_word_embeddings;
    double rms_norm_eps;
    double rope_theta;
    double clip_qkv;       /* 0: no clipping */
    /* MLX affine quantization; bits 0 when the checkpoint is not quantized */
    int quant_bits, quant_group_size;
    int num_overrides;
    moe_quant_override *overrides;
    int bos_id;            /* -1 when absent */
    int num_eos;
    int eos_ids[MOE_CONFIG_MAX_EOS];
} moe_model_config;

/* Reads and checks `path` (a config.json). Missing fields that have no
 * default, values of the wrong type or out of range, and architectures moe
 * does not run are errors naming the field. */
moe_status moe_config_load(const char *path, moe_model_config *cfg);

/* The same from JSON text; `origin` names it in messages. */
moe_status moe_config_parse(const char *json, const char *origin, moe_model_config *cfg);

void moe_config_free(moe_model_config *cfg);

/* The quantization of one module: its override if the config has one, else
 * the default (bits 0: keep it in float). */
void moe_config_module_quant(const moe_model_config *cfg, const char *module, int *bits, int *group_size);

#endif
