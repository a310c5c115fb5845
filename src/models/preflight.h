/* models/preflight.h — the memory estimate of moe_model_estimate_memory
 * (moe/model.h) from a config already read: the fuzz target of config.json
 * runs it on every config that parses. */
#ifndef MOE_MODELS_PREFLIGHT_H
#define MOE_MODELS_PREFLIGHT_H

#include "io/model_config.h"
#include "moe/model.h"

/* Fills *out from the config, the weights' resident bytes, the cache's
 * element size, the context and the chunk, and the memory `available` (0:
 * unknown) on `device` (a moe_device, CPU or CUDA: whose memory that is).
 * Pure: whether the model fits is decided here from these numbers alone. */
void model_memory_estimate(const moe_model_config *c, size_t weights, moe_dtype kv_dtype, int max_tokens,
                           int max_chunk, int device, size_t available, moe_model_memory *out);

#endif
