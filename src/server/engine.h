/* server/engine.h — continuous batching for `moe serve`.
 *
 * --parallel N slots, each a KV cache (moe_context) that holds one
 * sequence. One thread runs the model: each step is one forward
 * (moe_context_eval_batch) over every active slot's next token, with
 * chunks of the prompts of newly admitted requests in the same forward, so
 * that a long prompt adds a bounded number of tokens to each step instead
 * of stalling the streams already running. After the forward each slot
 * that produced logits samples its next token, and its request sees the
 * new text at once.
 *
 * Requests wait in a bounded queue when every slot is busy; beyond it they
 * are refused (503). A slot keeps the tokens of its last request in its
 * cache after the request ends: a new request whose prompt begins with
 * them (a conversation going on, a repeated system prompt) is given that
 * slot and computes only the rest. Of the free slots, the one whose cache
 * is the longest prefix of the prompt wins; among the rest the one used
 * least recently, so that other conversations' caches live longest.
 *
 * A request is a moe_job, shared by the HTTP thread that made it and the
 * engine; each side drops its reference when done with it. */
#ifndef MOE_SERVER_ENGINE_H
#define MOE_SERVER_ENGINE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "moe/model.h"
#include "moe/sampler.h"
#include "moe/text.h"
#include "moe/tokenizer.h"
#include "request.h"
#include "response.h"

typedef struct moe_engine moe_engine;

typedef struct moe_job {
    /* the request, set before moe_engine_submit and read-only after */
    moe_api_kind kind;
    long long serial;
    int32_t *prompt;           /* owned by the job */
    int n_prompt;
    int max_tokens;            /* ≥ 1; prompt + max_tokens fits the context */
    moe_sampler_config sampling;
    char *stop[MOE_API_MAX_STOPS];
    int n_stop;
    int ignore_eos, keep_ids;  /* keep_ids: gather the generated ids */
    int32_t end_of_turn;       /* chat: the template's end-of-turn id, a stop id too; else -1 */
    double t_arrival;          /* seconds, moe_engine_now */

    /* shared, under mu: what the engine has made so far */
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* signalled when text, ids or done change */
    char *text;                /* text released so far (stop sequences held back or cut) */
    size_t text_len, text_cap;
    int32_t *ids;
    int n_ids, cap_ids;
    int n_gen;                 /* tokens generated (the stop id included) */
    int n_cached;              /* prompt tokens found in the slot's cache */
    int done;                  /* finished: finish_reason or failed */
    const char *finish_reason; /* "stop", "length" */
    int failed;
    moe_api_error err;
    int cancelled;             /* the client went away, or the server stops */
    double t_first, t_done;
    int refs;
} moe_job;

typedef struct {
    moe_model *model;
    const moe_tokenizer *tok;  /* NULL: no text (token ids only) */
    const moe_stop_ids *eos;   /* the checkpoint's EOS ids */
    int parallel;              /* slots */
    int max_context;           /* tokens a slot's cache holds */
    int batch_tokens;          /* tokens a step runs at most (decode tokens first, then prefill chunks) */
    int queue;                 /* requests that may wait for a slot */
    int log;                   /* a line on stderr per finished request */
    int step_delay_ms;         /* tests only: a pause after each step, to hold requests in flight */
} moe_engine_config;

double moe_engine_now(void);

/* Contexts for every slot and the engine thread; MOE_OK or an error. */
moe_status moe_engine_create(const moe_engine_config *cfg, moe_engine **out);

/* A job with its request fields zeroed and one reference for the caller. */
moe_job *moe_job_new(void);

/* Hands the job to the engine (which takes its own reference). 0, or -1
 * with err set to 503 when every slot is busy and the queue is full, or the
 * server is draining. */
int moe_engine_submit(moe_engine *e, moe_job *j, moe_api_error *err);

/* The client is gone: the engine frees the job's slot at its next step. */
void moe_job_cancel(moe_engine *e, moe_job *j);

/* The caller's reference dropped (submitted or not); e may be NULL once
 * the engine is freed. */
void moe_job_release(moe_engine *e, moe_job *j);

/* Draining: new submissions are refused (503); cancel_all ends the jobs
 * that run or wait. */
void moe_engine_drain(moe_engine *e);
void moe_engine_cancel_all(moe_engine *e);

/* Jobs submitted whose callers still hold them. */
int moe_engine_in_flight(moe_engine *e);

void moe_engine_stats(moe_engine *e, moe_server_stats *out);

/* Stops the thread (jobs still running are cancelled) and frees. */
void moe_engine_free(moe_engine *e);

#endif
