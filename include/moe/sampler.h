/* moe/sampler.h — choosing the next token from the model's logits.
 *
 * The settings mean what they mean in mlx-lm and llama.cpp. Temperature 0 is
 * greedy decoding (argmax, the lowest id on ties) whatever else is set.
 * Otherwise the probabilities are softmax(logits / temperature); top-k keeps
 * the k most likely tokens, top-p then keeps the smallest set of the most
 * likely remaining tokens whose (renormalised) probability reaches top_p, and
 * min-p then drops tokens less likely than min_p times the most likely one.
 * One token is drawn from what is left, renormalised.
 *
 * Equal logits are ordered by id (lower first), so every filter is
 * deterministic. A NaN logit counts as -inf: it is never chosen; when every
 * logit is NaN or -inf the answer is token 0. A +inf logit wins outright
 * (several +inf logits share the probability equally).
 *
 * The draws come from the sampler's own seeded generator (xoshiro256**
 * seeded through splitmix64): a seed gives the same sequence of tokens on
 * every machine. Each non-greedy call takes exactly one number from it. */
#ifndef MOE_SAMPLER_H
#define MOE_SAMPLER_H

#include <stdint.h>

#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float temperature;  /* 0: greedy (argmax; ties → lowest id) */
    int top_k;          /* 0: off; else keep the k most likely tokens */
    float top_p;        /* 1 (or 0): off; else nucleus: the smallest set of most likely tokens whose probability sum ≥ top_p */
    float min_p;        /* 0: off; else drop tokens whose prob < min_p · max prob (mlx-lm / llama.cpp min-p) */
    uint64_t seed;
} moe_sampler_config;

typedef struct moe_sampler moe_sampler;

/* Greedy, top_k 0, top_p 1, min_p 0, seed 0. */
moe_sampler_config moe_sampler_default_config(void);

/* A sampler over `vocab` tokens; its scratch is allocated here, once, so that
 * sampling allocates nothing. Errors name the field at fault: temperature
 * < 0 or not finite, top_k < 0, top_p outside [0, 1], min_p outside [0, 1),
 * vocab < 1. */
moe_status moe_sampler_create(const moe_sampler_config *cfg, int vocab, moe_sampler **out);

/* logits [vocab] → a token id in [0, vocab); -1 (with moe_last_error) only
 * when s or logits is NULL. */
int moe_sampler_sample(moe_sampler *s, const float *logits);

/* 1 when s picks the largest logit (temperature 0): its choice is then
 * moe_context_eval_greedy's, which needs no logits brought back. */
int moe_sampler_is_greedy(const moe_sampler *s);
/* The same for a config, before a sampler is made from it. */
int moe_sampler_config_is_greedy(const moe_sampler_config *cfg);

void moe_sampler_free(moe_sampler *s);

#ifdef __cplusplus
}
#endif

#endif
