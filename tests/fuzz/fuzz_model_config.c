/* tests/fuzz/fuzz_model_config.c — config.json of every family (olmoe,
 * qwen3_moe, mixtral; transformers 4's and 5's names; MLX's quantization
 * block). What parses must be a model moe can size: every count positive,
 * the heads grouping evenly, top-k within the experts, and the sizes the
 * loader and the KV cache compute from it without overflow. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "io/model_config.h"
#include "models/preflight.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    moe_model_config c;
    if (moe_config_parse(text, "config.json", &c) == MOE_OK) {
        fuzz_check(c.arch >= 0 && c.arch < MOE_ARCH_COUNT, "a known family");
        fuzz_check(c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0 && c.num_kv_heads > 0 && c.head_dim > 0,
                   "positive sizes");
        fuzz_check(c.num_heads % c.num_kv_heads == 0, "query heads group over the KV heads");
        fuzz_check(c.top_k >= 1 && c.top_k <= c.num_experts, "top-k within the experts");
        fuzz_check(c.vocab_size > 0 && c.max_position > 0, "a vocabulary and a context");
        fuzz_check(c.num_eos >= 0 && c.num_eos <= MOE_CONFIG_MAX_EOS, "eos ids within bounds");
        int dense = 0;
        for (int l = 0; l < c.num_layers; l++) dense += moe_config_layer_dense(&c, l);
        fuzz_check(!dense || c.dense_hidden > 0, "dense layers have a hidden size");
        /* the memory estimate saturates, never wraps */
        moe_model_memory mem;
        model_memory_estimate(&c, (size_t)1 << 40, MOE_DTYPE_F32, INT32_MAX, 1 << 24, MOE_DEVICE_CPU, (size_t)1 << 36,
                              &mem);
        fuzz_check(mem.total >= mem.kv_cache && mem.total >= mem.activations && mem.total >= mem.weights,
                   "the estimate's total holds its parts");
        fuzz_check(mem.kv_cache >= mem.kv_bytes_per_token, "the cache holds a token's keys and values");
        fuzz_check(mem.max_context >= 0, "a context that fits");
        int bits, group;
        moe_config_module_quant(&c, "model.layers.0.mlp.gate", &bits, &group);
        for (int i = 0; i < c.num_overrides; i++) fuzz_check(c.overrides[i].module != NULL, "overrides are named");
        moe_config_free(&c);
    }
    free(text);
    return 0;
}
