/* models/preflight.h — the memory estimate of moe_model_estimate_memory
 * (moe/model.h) from a config already read: the fuzz target of config.json
 * runs it on every config that parses. */
#ifndef MOE_MODELS_PREFLIGHT_H
#define MOE_MODELS_PREFLIGHT_H

#include "io/model_config.h"
#include "moe/model.h"

/* Fills *out from the config, the weights' resident bytes, the cache's
 * element size, the context and the chunk, and `available` (0: unknown). */
void model_memory_estimate(const moe_model_config *c, size_t weights, moe_dtype kv_dtype, int max_tokens,
                           int max_chunk, size_t available, moe_model_memory *out);

#endif
