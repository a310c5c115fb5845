/* tools/bench_streams.c — `moe bench --streams N`: N sequences, each with
 * its own seeded prompt and KV cache, decode G tokens together through
 * moe_context_eval_batch (one forward a step for all of them), against
 * sequence 0 decoding alone through moe_context_eval. The two alternate
 * `--repeat` times on the same model, each after the prompts are evaluated
 * afresh (not timed), and the medians are reported with their ratio: the
 * gain that batching gives a server's aggregate throughput. Greedy tokens;
 * --profile adds the time by kind of operation of one batched step. */
#include <stdlib.h>
#include <string.h>

#include "bench_probe.h"
#include "bench_profile.h"
#include "bench_streams.h"
#include "moe/runtime.h"

static const char *CMD = "bench";

typedef struct {
    int n, vocab, prompt_tokens, step;
    moe_context **ctx;
    int32_t **prompt;     /* [n][prompt_tokens] */
    float *logits;        /* [n][vocab] */
    int32_t *next;        /* [n] */
    moe_batch_item *items;
} streams;

static void streams_free(streams *s)
{
    for (int i = 0; s->ctx && i < s->n; i++) moe_context_free(s->ctx[i]);
    for (int i = 0; s->prompt && i < s->n; i++) free(s->prompt[i]);
    free(s->ctx), free(s->prompt), free(s->logits), free(s->next), free(s->items);
}

static int streams_init(streams *s, const cli_opts *o, moe_model *m)
{
    memset(s, 0, sizeof *s);
    s->n = o->streams;
    s->vocab = moe_model_get_info(m).vocab_size;
    s->prompt_tokens = o->prompt_tokens;
    s->step = o->prefill_step;
    s->ctx = calloc((size_t)s->n, sizeof *s->ctx);
    s->prompt = calloc((size_t)s->n, sizeof *s->prompt);
    s->logits = malloc(sizeof(float) * (size_t)s->n * (size_t)s->vocab);
    s->next = malloc(sizeof(int32_t) * (size_t)s->n);
    s->items = calloc((size_t)s->n, sizeof *s->items);
    if (!s->ctx || !s->prompt || !s->logits || !s->next || !s->items)
        return fprintf(stderr, "moe %s: out of memory for %d streams\n", CMD, s->n), 1;
    for (int i = 0; i < s->n; i++) {
        if (!(s->prompt[i] = malloc(sizeof(int32_t) * (size_t)o->prompt_tokens)))
            return fprintf(stderr, "moe %s: out of memory for %d streams\n", CMD, s->n), 1;
        /* a seeded random prompt a stream, stream 0's as the plain bench's */
        uint64_t x = (o->seed + (uint64_t)i * 7919u) * 0x9e3779b97f4a7c15ull + 1;
        for (int t = 0; t < o->prompt_tokens; t++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s->prompt[i][t] = (int32_t)(x % (uint64_t)s->vocab);
        }
        if (moe_context_create(m, o->prompt_tokens + o->gen_tokens, o->prefill_step, &s->ctx[i]) != MOE_OK)
            return cli_fail(CMD);
    }
    return 0;
}

static int32_t argmax(const float *l, int n)
{
    int32_t best = 0;
    for (int v = 1; v < n; v++)
        if (l[v] > l[best]) best = v;
    return best;
}

/* Streams [0, n) reset and their prompts evaluated, next tokens chosen. */
static int prefill(streams *s, int n)
{
    for (int i = 0; i < n; i++) {
        moe_context_reset(s->ctx[i]);
        float *l = s->logits + (size_t)i * s->vocab;
        for (int t = 0; t < s->prompt_tokens; t += s->step) {
            int k = s->prompt_tokens - t < s->step ? s->prompt_tokens - t : s->step;
            if (moe_context_eval(s->ctx[i], s->prompt[i] + t, k, l, 0) != MOE_OK) return cli_fail(CMD);
        }
        s->next[i] = argmax(l, s->vocab);
    }
    return 0;
}

/* `steps` greedy decode steps of streams [0, n): one batched forward a
 * step (or a plain eval when n = 1); tok/s over all n streams. */
static int decode(streams *s, int n, int steps, double *tps)
{
    double t0 = bench_now_s();
    for (int g = 0; g < steps; g++) {
        for (int i = 0; i < n; i++)
            s->items[i] = (moe_batch_item){ .ctx = s->ctx[i], .tokens = &s->next[i], .n = 1,
                                            .logits = s->logits + (size_t)i * s->vocab };
        moe_status st = n == 1 ? moe_context_eval(s->ctx[0], &s->next[0], 1, s->logits, 0)
                               : moe_context_eval_batch(s->items, n);
        if (st != MOE_OK) return cli_fail(CMD);
        for (int i = 0; i < n; i++) s->next[i] = argmax(s->logits + (size_t)i * s->vocab, s->vocab);
    }
    double dt = bench_now_s() - t0;
    *tps = dt > 0 ? (double)n * steps / dt : 0;
    return 0;
}

int bench_streams(const cli_opts *o, moe_model *m)
{
    if (o->gen_tokens < 1) return fprintf(stderr, "moe %s: --streams needs --gen-tokens of at least 1\n", CMD), 2;
    streams s;
    int rc = streams_init(&s, o, m);
    double one[1000], many[1000];
    for (int r = 0; !rc && r < o->repeat; r++) {
        /* alternate which goes first, so drift over the sitting falls on both */
        for (int k = 0; !rc && k < 2; k++) {
            int batched = (r + k) % 2 == 0, n = batched ? s.n : 1;
            double *dst = batched ? &many[r] : &one[r];
            cli_progress("%s: prompts", batched ? "batched" : "alone");
            if (!(rc = prefill(&s, n))) {
                cli_progress("%s: decoding %d tokens a stream", batched ? "batched" : "alone", o->gen_tokens);
                rc = decode(&s, n, o->gen_tokens, dst);
            }
            cli_progress_done();
            if (!rc && !o->json)
                printf("run %d  %-8s %2d stream%s decode %7.2f tok/s\n", 2 * r + k + 1, batched ? "batched" : "alone", n,
                       n > 1 ? "s" : " ", *dst);
        }
    }
    if (!rc) {
        double a = bench_median(one, o->repeat), b = bench_median(many, o->repeat);
        if (o->json) {
            json_object *obj = json_object_new_object();
            json_object_object_add(obj, "streams", json_object_new_int(s.n));
            json_object_object_add(obj, "prompt_tokens", json_object_new_int(o->prompt_tokens));
            json_object_object_add(obj, "gen_tokens", json_object_new_int(o->gen_tokens));
            json_object_object_add(obj, "runs", json_object_new_int(o->repeat));
            json_object_object_add(obj, "one_stream_decode_tps", json_object_new_double(a));
            json_object_object_add(obj, "aggregate_decode_tps", json_object_new_double(b));
            json_object_object_add(obj, "ratio", json_object_new_double(a > 0 ? b / a : 0));
            json_object_object_add(obj, "device", json_object_new_string(moe_model_get_info(m).device));
            json_object_object_add(obj, "threads", json_object_new_int(moe_num_threads()));
            json_object_object_add(obj, "isa", json_object_new_string(moe_cpu_isa()));
            printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
            json_object_put(obj);
        } else
            printf("medians of %d run%s: one stream %.2f tok/s, %d streams %.2f tok/s aggregate (%.2f tok/s each), "
                   "%.2fx\n", o->repeat, o->repeat > 1 ? "s" : "", a, s.n, b, b / s.n, a > 0 ? b / a : 0);
    }
    if (!rc && o->profile && !o->json) {
        if (!(rc = prefill(&s, s.n))) {
            double tps;
            moe_model_profile_reset(m);
            if (!(rc = decode(&s, s.n, o->gen_tokens, &tps))) {
                char what[64];
                snprintf(what, sizeof what, "%d streams decoding together", s.n);
                bench_report_profile(o, m, what, o->gen_tokens, "a step");
            }
        }
    }
    streams_free(&s);
    return rc;
}
