/* io/model_config.h — a checkpoint's config.json, read into the numbers and
 * choices the one forward pass needs. A family is data: its model_type
 * decides how q and k are normalised, how router weights are formed, which
 * layers have a dense MLP and which fields hold the sizes, and all of that
 * lands here as plain fields. Both the Hugging Face form (transformers 4's
 * and 5's field names) and the MLX form (with its "quantization" block and
 * per-module overrides) are read. */
#ifndef MOE_IO_MODEL_CONFIG_H
#define MOE_IO_MODEL_CONFIG_H

#include "moe/status.h"

enum { MOE_CONFIG_MAX_EOS = 8 };

/* A module quantized differently from the default (or not at all: bits 0). */
typedef struct {
    char *module;          /* module path, e.g. "model.layers.0.mlp.gate" */
    int bits, group_size;
} moe_quant_override;

/* The families moe runs (config.json's model_type). */
typedef enum { MOE_ARCH_OLMOE, MOE_ARCH_QWEN3_MOE, MOE_ARCH_MIXTRAL, MOE_ARCH_COUNT } moe_arch;

/* RMSNorm of q and k before RoPE: none, over the whole projection (all
 * heads at once, OLMoE), or over each head's head_dim (Qwen3). */
typedef enum { MOE_QK_NORM_NONE, MOE_QK_NORM_WHOLE, MOE_QK_NORM_PER_HEAD } moe_qk_norm;

typedef struct {
    char model_type[32];
    moe_arch arch;
    moe_qk_norm qk_norm;
    int hidden_size;       /* D */
    int num_layers;
    int num_heads, num_kv_heads, head_dim;
    int expert_hidden;     /* I of each expert (Qwen3: moe_intermediate_size) */
    int dense_hidden;      /* intermediate_size of a dense MLP layer; 0: none */
    unsigned char *dense_layers; /* [num_layers] 1 where the MLP is dense
                                    (Qwen3's mlp_only_layers, decoder_sparse_step);
                                    NULL when every layer is MoE */
    int num_experts, top_k;
    int norm_topk_prob;    /* renormalise the top-k router weights (Mixtral always) */
    int sliding_window;    /* 0: full attention; else keys this far back only */
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

/* Whether layer l's MLP is a dense SwiGLU (else the experts). */
int moe_config_layer_dense(const moe_model_config *cfg, int l);

/* The family's name ("olmoe", "qwen3_moe", "mixtral"). */
const char *moe_arch_name(moe_arch arch);

/* The quantization of one module: its override if the config has one, else
 * the default (bits 0: keep it in float). */
void moe_config_module_quant(const moe_model_config *cfg, const char *module, int *bits, int *group_size);

#endif
