/* engine/generate.c — see generate.h. */
#include "engine/generate.h"

#include <time.h>

#include "core/error.h"
#include "core/memory.h"

double moe_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int is_stop(const moe_gen_request *r, int32_t id)
{
    for (int i = 0; i < r->num_stop; i++)
        if (r->stop_ids[i] == id) return 1;
    return 0;
}

moe_status moe_generate(moe_context *ctx, const int32_t *prompt, int n_prompt, const moe_gen_request *req,
                        int32_t *out_ids, int *n_out, moe_gen_metrics *metrics)
{
    if (!ctx || !prompt || !req || !req->sampler || !out_ids || !n_out)
        return moe_error_set(MOE_ERR_INVALID_ARG, "generate: context, prompt, request, sampler and outputs are required");
    if (n_prompt < 1) return moe_error_set(MOE_ERR_INVALID_ARG, "generate: the prompt is empty");
    if (req->max_new_tokens < 0)
        return moe_error_set(MOE_ERR_INVALID_ARG, "generate: max new tokens %d is negative", req->max_new_tokens);
    if (req->prefill_step < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "generate: prefill step %d must be positive", req->prefill_step);
    *n_out = 0;
    moe_gen_metrics mt = { .prompt_tokens = n_prompt };
    int vocab = moe_model_get_info(moe_context_model(ctx)).vocab_size;
    float *logits = moe_alloc(sizeof(float) * (size_t)vocab, "logits");
    if (!logits) return MOE_ERR_NOMEM;
    double t0 = moe_now_s();
    moe_status st = MOE_OK;

    /* a greedy sampler's choice is made where the logits are (on a GPU
     * only the id comes back); others sample the logits here */
    int greedy = moe_sampler_is_greedy(req->sampler);
    int32_t next = 0;

    // prefill, a chunk at a time; logits of the last position only
    for (int done = 0; done < n_prompt && st == MOE_OK;) {
        int n = n_prompt - done < req->prefill_step ? n_prompt - done : req->prefill_step;
        int last = done + n == n_prompt;
        st = greedy && last ? moe_context_eval_greedy(ctx, prompt + done, n, &next)
                            : moe_context_eval(ctx, prompt + done, n, last ? logits : NULL, 0);
        done += n;
        if (st == MOE_OK && req->on_progress)
            req->on_progress(req->user, MOE_PHASE_PREFILL, done, n_prompt, moe_now_s() - t0);
    }
    double t_prefill = moe_now_s() - t0;

    // decode: sample, emit, feed back
    for (int i = 0; i < req->max_new_tokens && st == MOE_OK; i++) {
        if (i > 0)
            st = greedy ? moe_context_eval_greedy(ctx, &out_ids[i - 1], 1, &next)
                        : moe_context_eval(ctx, &out_ids[i - 1], 1, logits, 0);
        if (st != MOE_OK) break;
        int32_t id = greedy ? next : moe_sampler_sample(req->sampler, logits);
        if (i == 0) mt.ttft_s = moe_now_s() - t0;
        out_ids[(*n_out)++] = id;
        if (req->on_token) req->on_token(req->user, id);
        if (req->on_progress) req->on_progress(req->user, MOE_PHASE_DECODE, i + 1, req->max_new_tokens, moe_now_s() - t0);
        if (is_stop(req, id)) break;
    }
    moe_free(logits);
    if (st != MOE_OK) return st;

    mt.total_s = moe_now_s() - t0;
    if (*n_out == 0) mt.ttft_s = t_prefill;
    mt.gen_tokens = *n_out;
    mt.prefill_tps = t_prefill > 0 ? n_prompt / t_prefill : 0;
    mt.prompt_gen_tps = mt.total_s > 0 ? (n_prompt + mt.gen_tokens) / mt.total_s : 0;
    mt.decode_tps = mt.gen_tokens > 1 && mt.total_s > mt.ttft_s ? (mt.gen_tokens - 1) / (mt.total_s - mt.ttft_s) : 0;
    mt.peak_rss_bytes = moe_peak_rss_bytes();
    if (metrics) *metrics = mt;
    return MOE_OK;
}
