/* moe/generate.h — one request end to end: the prompt in chunks of
 * prefill_step tokens (bounded memory on long prompts), then one token at a
 * time until max_new_tokens or a stop id, with the figures the benchmark
 * reports. */
#ifndef MOE_GENERATE_H
#define MOE_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/sampler.h"
#include "moe/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MOE_PHASE_PREFILL, MOE_PHASE_DECODE } moe_gen_phase;

typedef struct {
    int max_new_tokens;
    int prefill_step;              /* tokens a prefill chunk (≤ the context's chunk size) */
    const int *stop_ids;           /* generation ends after emitting one of these */
    int num_stop;
    moe_sampler *sampler;
    /* Each generated id as soon as it is chosen (streaming); may be NULL. */
    void (*on_token)(void *user, int32_t id);
    /* Progress: `done` of `total` prompt tokens, or generated tokens. */
    void (*on_progress)(void *user, moe_gen_phase phase, int done, int total, double elapsed_s);
    void *user;
} moe_gen_request;

/* As mlx-lm's benchmark reports them: TTFT is the time from the start to the
 * first generated token (the whole prefill plus one sampling);
 * prompt_gen_tps = (prompt + generated) / total; decode_tps counts the tokens
 * made after the first, (generated − 1) / (total − TTFT). prefill_tps is
 * prompt / prefill time. peak_rss_bytes is the process's peak resident set
 * (weights and cache included). */
typedef struct {
    int prompt_tokens, gen_tokens;
    double ttft_s, total_s, prefill_tps, prompt_gen_tps, decode_tps;
    size_t peak_rss_bytes;
} moe_gen_metrics;

/* Runs the prompt on an empty or partly filled context and generates;
 * out_ids gets the generated ids (room for max_new_tokens), *n_out their
 * count. The last generated id is not fed back (nothing would read it). */
moe_status moe_generate(moe_context *ctx, const int32_t *prompt, int n_prompt, const moe_gen_request *req,
                        int32_t *out_ids, int *n_out, moe_gen_metrics *metrics);

double moe_now_s(void);

#ifdef __cplusplus
}
#endif

#endif
