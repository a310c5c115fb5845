/* models/family.h — where each family keeps its tensors in a checkpoint.
 *
 * Everything else that sets the families apart is config.json's business
 * (io/model_config.h: QK-norm, router rule, dense layers, sizes); what is
 * left is names. Per layer N, with BLOCK the family's MoE block:
 *   router            model.layers.N.BLOCK.gate
 *   Hugging Face      model.layers.N.BLOCK.experts.E.{gate,up,down} (the
 *                     family's own names for the three, one tensor each)
 *   MLX (stacked)     model.layers.N.BLOCK.switch_mlp.{gate,up,down}_proj
 *   dense MLP layer   model.layers.N.mlp.{gate,up,down}_proj
 * and attention, norms, embedding and head under the names all three share
 * (self_attn.{q,k,v,o}_proj, self_attn.{q,k}_norm, input_layernorm,
 * post_attention_layernorm, model.embed_tokens, model.norm, lm_head). */
#ifndef MOE_MODELS_FAMILY_H
#define MOE_MODELS_FAMILY_H

#include "io/model_config.h"

typedef struct {
    const char *moe_block;      /* "mlp" (OLMoE, Qwen3-MoE) or "block_sparse_moe" (Mixtral) */
    const char *expert_proj[3]; /* Hugging Face per-expert names of gate, up, down */
} moe_family_names;

const moe_family_names *moe_family_names_of(moe_arch arch);

/* The MLX layout's (and a dense layer's) names of gate, up, down. */
extern const char *const MOE_SWITCH_PROJ[3];

#endif
