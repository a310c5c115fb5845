/* layers/router.h — the MoE router's selection step: from each token's
 * logits over the experts, the top k experts and their weights.
 *
 * As OLMoE (and mlx-lm) do it: softmax over all experts in float32, take
 * the k largest probabilities (ties: the lower expert index first), and
 * divide them by their sum only when norm_topk_prob is set. */
#ifndef MOE_LAYERS_ROUTER_H
#define MOE_LAYERS_ROUTER_H

#include <stdint.h>

#include "moe/status.h"

/* logits [T, E] → indices [T, k] (descending probability), scores [T, k]. */
moe_status moe_router_topk(const float *logits, int tokens, int experts, int top_k, int norm_topk_prob,
                           int32_t *indices, float *scores);

#endif
