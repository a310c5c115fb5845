/* models/family.c — each family's tensor names (see family.h). A new family
 * is a line here and its config.json choices in io/model_config.c. */
#include "models/family.h"

static const moe_family_names NAMES[MOE_ARCH_COUNT] = {
    [MOE_ARCH_OLMOE] = { "mlp", { "gate_proj", "up_proj", "down_proj" } },
    [MOE_ARCH_QWEN3_MOE] = { "mlp", { "gate_proj", "up_proj", "down_proj" } },
    /* Mixtral's w1 is the gate, w3 the up and w2 the down projection */
    [MOE_ARCH_MIXTRAL] = { "block_sparse_moe", { "w1", "w3", "w2" } },
};

const char *const MOE_SWITCH_PROJ[3] = { "gate_proj", "up_proj", "down_proj" };

const moe_family_names *moe_family_names_of(moe_arch arch) { return &NAMES[arch]; }
