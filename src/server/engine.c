/* server/engine.c — see engine.h. One thread owns the model and the slots;
 * the HTTP threads touch only the queue (under the engine's lock) and their
 * own jobs (under each job's lock). Lock order: engine, then job. */
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SLOT_FREE, SLOT_PREFILL, SLOT_DECODE, SLOT_SAMPLE };

typedef struct {
    moe_context *ctx;
    int32_t *cache;            /* [max_context] the tokens in ctx, in order */
    int n_cache;
    float *logits;             /* [vocab] after the cache's last token, when logits_valid */
    int logits_valid;
    int choice_valid;          /* choice is the greedy choice after the cache's last token */
    int state;
    moe_job *job;
    int fed;                   /* prompt tokens of the job in the cache */
    int32_t next;              /* SLOT_DECODE: the token to feed */
    moe_sampler *sampler;
    moe_tokenizer_stream *stream;
    char *gen;                 /* the job's text so far; [0, sent) released */
    size_t gen_len, gen_cap, sent;
    long long last_used;
    double t_admit;
    int got_logits;            /* this step: logits, or (a greedy sampler) the choice alone */
    int32_t choice;            /* a greedy choice, made where the logits are */
} slot;

struct moe_engine {
    moe_engine_config cfg;
    int vocab;
    slot *slots;
    moe_batch_item *items;
    int *item_slot;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    moe_job **queue;           /* ring of parallel + queue */
    int q_cap, q_head, q_len;
    int running, draining, quit, in_flight;
    long long clock;
    moe_server_stats st;
};

double moe_engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- jobs ---- */

moe_job *moe_job_new(void)
{
    moe_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->refs = 1;
    j->end_of_turn = -1;
    return j;
}

static void job_free(moe_job *j)
{
    free(j->prompt);
    for (int i = 0; i < j->n_stop; i++) free(j->stop[i]);
    free(j->text);
    free(j->ids);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static void job_unref(moe_job *j)
{
    pthread_mutex_lock(&j->mu);
    int left = --j->refs;
    pthread_mutex_unlock(&j->mu);
    if (!left) job_free(j);
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *g = realloc(*p, c * elem);
    if (!g) return -1;
    *p = g;
    *cap = c;
    return 0;
}

/* ---- slots ---- */

/* The text of [sent, upto) of the slot's generated text to its job. */
static void release_text(slot *s, size_t upto)
{
    moe_job *j = s->job;
    if (upto <= s->sent) return;
    size_t n = upto - s->sent;
    pthread_mutex_lock(&j->mu);
    if (grow((void **)&j->text, &j->text_cap, j->text_len + n + 1, 1) == 0) {
        memcpy(j->text + j->text_len, s->gen + s->sent, n);
        j->text[j->text_len += n] = '\0';
    } else if (!j->failed) {
        j->failed = 1;
        moe_api_error_set(&j->err, 500, "server_error", NULL, NULL, "out of memory");
    }
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    s->sent = upto;
}

/* Appends decoded text; releases what no stop sequence can claim. 1 when a
 * stop sequence ends the text. */
static int put_text(slot *s, const char *text, size_t len, int final)
{
    if (len) {
        size_t cap = s->gen_cap;
        if (grow((void **)&s->gen, &cap, s->gen_len + len + 1, 1)) return 0;
        s->gen_cap = cap;
        memcpy(s->gen + s->gen_len, text, len);
        s->gen_len += len;
    }
    int hit;
    size_t upto = moe_stop_scan(s->gen, s->gen_len, s->sent, s->job->stop, s->job->n_stop, &hit);
    release_text(s, hit || !final ? upto : s->gen_len);
    return hit;
}

static void log_job(const moe_job *j, const char *outcome)
{
    double ttft = j->t_first > 0 ? j->t_first - j->t_arrival : 0, total = j->t_done - j->t_arrival;
    double decode = j->n_gen > 1 && j->t_done > j->t_first ? (j->n_gen - 1) / (j->t_done - j->t_first) : 0;
    fprintf(stderr, "moe serve: request %lld %s: prompt %d tokens (%d cached), generated %d, TTFT %.3f s, "
            "decode %.2f tok/s, total %.3f s, %s\n",
            j->serial, j->kind == MOE_API_CHAT ? "chat" : "completion", j->n_prompt, j->n_cached, j->n_gen, ttft,
            decode, total, outcome);
}

/* The job ends: the engine's reference dropped. reason NULL when it failed
 * (err set) or was cancelled. */
static void finish_job(moe_engine *e, moe_job *j, const char *reason)
{
    /* the figures first, so that whoever sees the job done sees them counted */
    pthread_mutex_lock(&j->mu);
    j->t_done = moe_engine_now();
    int cancelled = j->cancelled, failed = j->failed;
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&e->mu);
    moe_server_stats *st = &e->st;
    if (cancelled) st->requests_cancelled++;
    else if (failed) st->requests_failed++;
    else st->requests_ok++;
    st->prompt_tokens += j->n_prompt;
    st->cached_tokens += j->n_cached;
    st->generated_tokens += j->n_gen;
    if (j->t_first > 0) st->ttft_sum_s += j->t_first - j->t_arrival, st->ttft_count++;
    st->request_sum_s += j->t_done - j->t_arrival;
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    if (reason && !j->failed) j->finish_reason = reason;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (e->cfg.log) log_job(j, cancelled ? "cancelled" : failed ? "failed" : reason ? reason : "?");
    job_unref(j);
}

static void fail_job(moe_job *j, const char *fmt, const char *what)
{
    pthread_mutex_lock(&j->mu);
    j->failed = 1;
    moe_api_error_set(&j->err, 500, "server_error", NULL, NULL, fmt, what);
    pthread_mutex_unlock(&j->mu);
}

static void free_slot(moe_engine *e, slot *s, const char *reason)
{
    moe_job *j = s->job;
    if (reason && s->stream) {
        const char *t;
        size_t n;
        if (moe_tokenizer_stream_flush(s->stream, &t, &n) == MOE_OK) put_text(s, t, n, 1);
    }
    moe_sampler_free(s->sampler);
    moe_tokenizer_stream_free(s->stream);
    s->sampler = NULL;
    s->stream = NULL;
    s->gen_len = s->sent = 0;
    s->job = NULL;
    s->state = SLOT_FREE;
    pthread_mutex_lock(&e->mu);
    s->last_used = ++e->clock;
    e->running--;
    pthread_mutex_unlock(&e->mu);
    finish_job(e, j, reason);
}

/* How many of the prompt's tokens slot s can keep: the longest common
 * prefix of its cache and the prompt (the cache cut back to it, as
 * llama-server's cache_prompt does), the whole prompt only when the cache
 * is exactly the prompt and what comes next is known — the logits after
 * it, or for a greedy job the greedy choice — otherwise at least the
 * prompt's last token is fed again. */
static int reusable(const slot *s, const moe_job *j)
{
    int n = s->n_cache < j->n_prompt ? s->n_cache : j->n_prompt, common = 0;
    while (common < n && s->cache[common] == j->prompt[common]) common++;
    int next_known = s->logits_valid || (s->choice_valid && moe_sampler_config_is_greedy(&j->sampling));
    if (common == j->n_prompt && !(s->n_cache == j->n_prompt && next_known)) common--;
    return common > 0 ? common : 0;
}

/* The free slot for j: the longest reusable cache, else the least recently
 * used; -1 when none is free. */
static int choose_slot(const moe_engine *e, const moe_job *j, int *reuse)
{
    int best = -1;
    *reuse = 0;
    for (int i = 0; i < e->cfg.parallel; i++) {
        const slot *s = &e->slots[i];
        if (s->state != SLOT_FREE) continue;
        int r = reusable(s, j);
        if (best < 0 || r > *reuse || (r == *reuse && s->last_used < e->slots[best].last_used)) {
            best = i;
            *reuse = r;
        }
    }
    return best;
}

/* Puts j in slot s (under e->mu). */
static void start_job(moe_engine *e, slot *s, moe_job *j, int reuse)
{
    if (reuse < s->n_cache) {
        /* the common prefix kept, what follows it forgotten */
        if (!reuse || moe_context_truncate(s->ctx, reuse) != MOE_OK) {
            moe_context_reset(s->ctx);
            reuse = 0;
        }
        s->n_cache = reuse;
        s->logits_valid = s->choice_valid = 0;
    }
    s->job = j;
    s->fed = reuse;
    s->t_admit = moe_engine_now();
    s->state = reuse == j->n_prompt ? SLOT_SAMPLE : SLOT_PREFILL;
    e->running++;
    j->n_cached = reuse;
    if (moe_sampler_create(&j->sampling, e->vocab, &s->sampler) != MOE_OK ||
        (e->cfg.tok && moe_tokenizer_stream_create(e->cfg.tok, 0, &s->stream) != MOE_OK))
        fail_job(j, "%s", moe_last_error());
}

/* Queued jobs into free slots; cancelled ones dropped (under e->mu). */
static void admit(moe_engine *e)
{
    while (e->q_len > 0) {
        moe_job *j = e->queue[e->q_head];
        pthread_mutex_lock(&j->mu);
        int cancelled = j->cancelled;
        pthread_mutex_unlock(&j->mu);
        int reuse = 0, i = cancelled ? -1 : choose_slot(e, j, &reuse);
        if (!cancelled && i < 0) return;
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
        if (cancelled) {
            pthread_mutex_unlock(&e->mu);
            finish_job(e, j, NULL);
            pthread_mutex_lock(&e->mu);
        } else {
            start_job(e, &e->slots[i], j, reuse);
        }
    }
}

static int is_stop_id(const moe_engine *e, const moe_job *j, int32_t id)
{
    if (j->ignore_eos) return 0;
    return id == j->end_of_turn || moe_stop_ids_has(e->cfg.eos, id);
}

/* The slot's next token from its logits: kept, turned into text, and the
 * job ended where a stop id, a stop sequence, max_tokens or the context
 * says so. */
static void sample(moe_engine *e, slot *s)
{
    moe_job *j = s->job;
    /* a greedy job's choice, made this step or kept with the cache it reuses
     * whole; otherwise the logits are there */
    int chosen = s->choice_valid && moe_sampler_is_greedy(s->sampler);
    int32_t id = chosen ? s->choice : moe_sampler_sample(s->sampler, s->logits);
    pthread_mutex_lock(&j->mu);
    j->n_gen++;
    if (j->n_gen == 1) j->t_first = moe_engine_now();
    if (j->keep_ids) {
        size_t cap = (size_t)j->cap_ids;
        if (grow((void **)&j->ids, &cap, (size_t)j->n_ids + 1, sizeof(int32_t)) == 0) {
            j->cap_ids = (int)cap;
            j->ids[j->n_ids++] = id;
        }
    }
    int n_gen = j->n_gen;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    if (is_stop_id(e, j, id)) return free_slot(e, s, "stop");
    if (s->stream) {
        const char *t;
        size_t n;
        if (moe_tokenizer_stream_put(s->stream, id, &t, &n) != MOE_OK) {
            fail_job(j, "decoding the output: %s", moe_last_error());
            return free_slot(e, s, NULL);
        }
        if (put_text(s, t, n, 0)) return free_slot(e, s, "stop");
    }
    if (n_gen >= j->max_tokens || s->n_cache >= e->cfg.max_context) return free_slot(e, s, "length");
    s->next = id;
    s->state = SLOT_DECODE;
}

/* What slot s needs after this step's tokens for its next one: a greedy
 * sampler only the choice (on a GPU the logits then stay there; the cache
 * keeps the choice for a later greedy request of exactly this prompt, and
 * one that samples otherwise feeds the last token again), others the
 * logits. */
static void wants_next(moe_batch_item *it, slot *s)
{
    if (moe_sampler_is_greedy(s->sampler)) it->greedy = &s->choice;
    else it->logits = s->logits;
}

static int by_serial(const void *a, const void *b)
{
    const slot *x = *(slot *const *)a, *y = *(slot *const *)b;
    return (x->job->serial > y->job->serial) - (x->job->serial < y->job->serial);
}

/* One forward over every active slot, then sampling. */
static void step(moe_engine *e)
{
    double t0 = moe_engine_now();
    int P = e->cfg.parallel, B = e->cfg.batch_tokens, n = 0, n_decode = 0, tokens = 0, n_prefill = 0;
    slot *prefill[P];
    for (int i = 0; i < P; i++) {
        slot *s = &e->slots[i];
        s->got_logits = 0;
        if (s->state == SLOT_FREE) continue;
        pthread_mutex_lock(&s->job->mu);
        int stop = s->job->cancelled || s->job->failed;
        pthread_mutex_unlock(&s->job->mu);
        if (stop) free_slot(e, s, NULL);
        else if (s->state == SLOT_DECODE) n_decode++;
        else if (s->state == SLOT_PREFILL) prefill[n_prefill++] = s;
    }
    // every decoding slot's token, then prompt chunks, oldest request first, in what the step has left
    for (int i = 0; i < P; i++) {
        slot *s = &e->slots[i];
        if (s->state != SLOT_DECODE) continue;
        e->items[n] = (moe_batch_item){ .ctx = s->ctx, .tokens = &s->next, .n = 1 };
        wants_next(&e->items[n], s);
        e->item_slot[n++] = i;
        tokens++;
    }
    int left = B - n_decode > B / 4 ? B - n_decode : (B / 4 > 0 ? B / 4 : 1);
    qsort(prefill, (size_t)n_prefill, sizeof *prefill, by_serial);
    for (int k = 0; k < n_prefill && left > 0; k++) {
        slot *s = prefill[k];
        int rest = s->job->n_prompt - s->fed, c = rest < left ? rest : left;
        e->items[n] = (moe_batch_item){ .ctx = s->ctx, .tokens = s->job->prompt + s->fed, .n = c };
        if (c == rest) wants_next(&e->items[n], s);
        e->item_slot[n++] = (int)(s - e->slots);
        left -= c;
        tokens += c;
    }
    if (n > 0 && moe_context_eval_batch(e->items, n) != MOE_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", moe_last_error());
        for (int k = 0; k < n; k++) {
            slot *s = &e->slots[e->item_slot[k]];
            moe_context_reset(s->ctx);
            s->n_cache = 0;
            s->logits_valid = s->choice_valid = 0;
            fail_job(s->job, "the forward pass failed: %s", why);
            free_slot(e, s, NULL);
        }
        return;
    }
    for (int k = 0; k < n; k++) {
        slot *s = &e->slots[e->item_slot[k]];
        const moe_batch_item *it = &e->items[k];
        memcpy(s->cache + s->n_cache, it->tokens, sizeof(int32_t) * (size_t)it->n);
        s->n_cache += it->n;
        if (s->state == SLOT_PREFILL) s->fed += it->n;
        s->logits_valid = it->logits != NULL;
        s->choice_valid = it->greedy != NULL;
        s->got_logits = s->logits_valid || s->choice_valid;
    }
    for (int i = 0; i < P; i++) {
        slot *s = &e->slots[i];
        if (s->state != SLOT_FREE && (s->got_logits || s->state == SLOT_SAMPLE)) sample(e, s);
    }
    pthread_mutex_lock(&e->mu);
    e->st.steps += n > 0;
    e->st.step_tokens += tokens;
    e->st.step_sum_s += moe_engine_now() - t0;
    if (n > e->st.max_batch) e->st.max_batch = n;
    pthread_mutex_unlock(&e->mu);
}

static void *engine_main(void *arg)
{
    moe_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->quit && e->q_len == 0 && e->running == 0) pthread_cond_wait(&e->cv, &e->mu);
        if (e->quit) {
            pthread_mutex_unlock(&e->mu);
            break;
        }
        admit(e);
        pthread_mutex_unlock(&e->mu);
        step(e);
        if (e->cfg.step_delay_ms > 0) {
            struct timespec d = { e->cfg.step_delay_ms / 1000, (long)(e->cfg.step_delay_ms % 1000) * 1000000L };
            nanosleep(&d, NULL);
        }
    }
    return NULL;
}

/* ---- the engine's interface ---- */

moe_status moe_engine_create(const moe_engine_config *cfg, moe_engine **out)
{
    *out = NULL;
    moe_engine *e = calloc(1, sizeof *e);
    if (!e) return MOE_ERR_NOMEM;
    e->cfg = *cfg;
    e->vocab = moe_model_get_info(cfg->model).vocab_size;
    e->q_cap = cfg->parallel + cfg->queue;
    e->slots = calloc((size_t)cfg->parallel, sizeof *e->slots);
    e->items = calloc((size_t)cfg->parallel, sizeof *e->items);
    e->item_slot = calloc((size_t)cfg->parallel, sizeof *e->item_slot);
    e->queue = calloc((size_t)e->q_cap, sizeof *e->queue);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    moe_status st = e->slots && e->items && e->item_slot && e->queue ? MOE_OK : MOE_ERR_NOMEM;
    for (int i = 0; i < cfg->parallel && st == MOE_OK; i++) {
        slot *s = &e->slots[i];
        st = moe_context_create(cfg->model, cfg->max_context, cfg->batch_tokens, &s->ctx);
        s->cache = malloc(sizeof(int32_t) * (size_t)cfg->max_context);
        s->logits = malloc(sizeof(float) * (size_t)e->vocab);
        if (st == MOE_OK && (!s->cache || !s->logits)) st = MOE_ERR_NOMEM;
    }
    if (st == MOE_OK && pthread_create(&e->thread, NULL, engine_main, e) != 0) st = MOE_ERR_NOMEM;
    if (st != MOE_OK) {
        moe_engine_free(e);
        return st;
    }
    e->started = 1;
    e->st.slots = cfg->parallel;
    *out = e;
    return MOE_OK;
}

int moe_engine_submit(moe_engine *e, moe_job *j, moe_api_error *err)
{
    pthread_mutex_lock(&e->mu);
    int rc = 0;
    if (e->draining) {
        moe_api_error_set(err, 503, "server_error", "shutting_down", NULL,
                          "the server is shutting down and takes no new requests");
        rc = -1;
    } else if (e->running + e->q_len >= e->q_cap) {
        moe_api_error_set(err, 503, "server_error", "server_busy",
                          NULL, "the server is busy: all %d slots are taken and %d request%s wait; try again later",
                          e->cfg.parallel, e->q_len, e->q_len == 1 ? "" : "s");
        rc = -1;
    }
    if (rc) {
        e->st.requests_rejected++;
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    pthread_mutex_lock(&j->mu);
    j->refs++;
    pthread_mutex_unlock(&j->mu);
    e->queue[(e->q_head + e->q_len++) % e->q_cap] = j;
    e->in_flight++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

void moe_job_cancel(moe_engine *e, moe_job *j)
{
    pthread_mutex_lock(&j->mu);
    if (!j->done) j->cancelled = 1;
    pthread_mutex_unlock(&j->mu);
    pthread_mutex_lock(&e->mu);
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void moe_job_release(moe_engine *e, moe_job *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    int submitted = j->refs > 1 || j->done;
    pthread_mutex_unlock(&j->mu);
    if (submitted && e) {
        pthread_mutex_lock(&e->mu);
        e->in_flight--;
        pthread_mutex_unlock(&e->mu);
    }
    job_unref(j);
}

void moe_engine_drain(moe_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->draining = 1;
    pthread_mutex_unlock(&e->mu);
}

void moe_engine_cancel_all(moe_engine *e)
{
    pthread_mutex_lock(&e->mu);
    for (int k = 0; k < e->q_len; k++) {
        moe_job *j = e->queue[(e->q_head + k) % e->q_cap];
        pthread_mutex_lock(&j->mu);
        j->cancelled = 1;
        pthread_mutex_unlock(&j->mu);
    }
    for (int i = 0; i < e->cfg.parallel; i++) {
        moe_job *j = e->slots[i].job;
        if (!j) continue;
        pthread_mutex_lock(&j->mu);
        j->cancelled = 1;
        pthread_mutex_unlock(&j->mu);
    }
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

int moe_engine_in_flight(moe_engine *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->in_flight;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void moe_engine_stats(moe_engine *e, moe_server_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->running = e->running;
    out->queued = e->q_len;
    pthread_mutex_unlock(&e->mu);
}

void moe_engine_free(moe_engine *e)
{
    if (!e) return;
    if (e->started) {
        moe_engine_cancel_all(e);
        /* the thread ends the cancelled jobs at its next step, then stops once idle */
        for (;;) {
            pthread_mutex_lock(&e->mu);
            int idle = e->q_len == 0 && e->running == 0;
            if (idle) e->quit = 1;
            pthread_cond_signal(&e->cv);
            pthread_mutex_unlock(&e->mu);
            if (idle) break;
            struct timespec d = { 0, 1000000 };
            nanosleep(&d, NULL);
        }
        pthread_join(e->thread, NULL);
    }
    for (int i = 0; e->slots && i < e->cfg.parallel; i++) {
        moe_context_free(e->slots[i].ctx);
        free(e->slots[i].cache);
        free(e->slots[i].logits);
        free(e->slots[i].gen);
    }
    free(e->slots);
    free(e->items);
    free(e->item_slot);
    free(e->queue);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}
