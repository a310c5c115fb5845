/* server/response.c — see response.h. Objects are built with json-c, so
 * every string is escaped as JSON wants whatever the model wrote. */
#include "response.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* The object as compact JSON (malloc'd), and the object released. */
static char *finish(json_object *o)
{
    if (!o) return NULL;
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    char *r = s ? strdup(s) : NULL;
    json_object_put(o);
    return r;
}

/* "data: JSON\n\n" */
static char *event(char *json)
{
    if (!json) return NULL;
    size_t n = strlen(json);
    char *r = malloc(n + 9);
    if (r) memcpy(r, "data: ", 6), memcpy(r + 6, json, n), memcpy(r + 6 + n, "\n\n", 3);
    free(json);
    return r;
}

static json_object *str_or_null(const char *s) { return s && *s ? json_object_new_string(s) : NULL; }

static json_object *error_object(const moe_api_error *e)
{
    json_object *o = json_object_new_object(), *err = json_object_new_object();
    json_object_object_add(err, "message", json_object_new_string(e->message));
    json_object_object_add(err, "type", json_object_new_string(e->type ? e->type : "server_error"));
    json_object_object_add(err, "param", str_or_null(e->param));
    json_object_object_add(err, "code", str_or_null(e->code));
    json_object_object_add(o, "error", err);
    return o;
}

char *moe_api_error_json(const moe_api_error *e) { return finish(error_object(e)); }
char *moe_api_error_event(const moe_api_error *e) { return event(moe_api_error_json(e)); }

static json_object *header(const moe_api_meta *m, const char *object)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(m->id));
    json_object_object_add(o, "object", json_object_new_string(object));
    json_object_object_add(o, "created", json_object_new_int64(m->created));
    json_object_object_add(o, "model", json_object_new_string(m->model));
    return o;
}

static json_object *usage_object(const moe_api_usage *u)
{
    json_object *o = json_object_new_object(), *details = json_object_new_object();
    json_object_object_add(o, "prompt_tokens", json_object_new_int(u->prompt_tokens));
    json_object_object_add(o, "completion_tokens", json_object_new_int(u->completion_tokens));
    json_object_object_add(o, "total_tokens", json_object_new_int(u->prompt_tokens + u->completion_tokens));
    json_object_object_add(details, "cached_tokens", json_object_new_int(u->cached_tokens));
    json_object_object_add(o, "prompt_tokens_details", details);
    return o;
}

static json_object *ids_array(const int32_t *ids, int n)
{
    json_object *a = json_object_new_array_ext(n);
    for (int i = 0; i < n; i++) json_object_array_add(a, json_object_new_int(ids[i]));
    return a;
}

/* A choice: chat's message (or delta), completion's text. */
static json_object *choice(const moe_api_meta *m, int streamed, const char *text, size_t len, int first,
                           const char *finish_reason, const int32_t *ids, int n_ids)
{
    json_object *c = json_object_new_object();
    json_object_object_add(c, "index", json_object_new_int(0));
    json_object *content = json_object_new_string_len(text ? text : "", (int)len);
    if (m->kind == MOE_API_CHAT) {
        json_object *msg = json_object_new_object();
        if (!streamed || first) json_object_object_add(msg, "role", json_object_new_string("assistant"));
        if (!streamed || len || first) json_object_object_add(msg, "content", content);
        else json_object_put(content);
        json_object_object_add(c, streamed ? "delta" : "message", msg);
    } else {
        json_object_object_add(c, "text", content);
    }
    json_object_object_add(c, "logprobs", NULL);
    json_object_object_add(c, "finish_reason", finish_reason ? json_object_new_string(finish_reason) : NULL);
    if (ids) json_object_object_add(c, "token_ids", ids_array(ids, n_ids));
    return c;
}

static const char *object_name(const moe_api_meta *m, int streamed)
{
    if (m->kind == MOE_API_CHAT) return streamed ? "chat.completion.chunk" : "chat.completion";
    return "text_completion";
}

char *moe_api_response_json(const moe_api_meta *m, const char *text, size_t len, const char *finish_reason,
                            const moe_api_usage *u, const int32_t *token_ids, int n_ids)
{
    json_object *o = header(m, object_name(m, 0)), *choices = json_object_new_array();
    json_object_array_add(choices, choice(m, 0, text, len, 1, finish_reason, token_ids, n_ids));
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage", usage_object(u));
    return finish(o);
}

char *moe_api_chunk_event(const moe_api_meta *m, const char *text, size_t len, int first, const char *finish_reason,
                          const int32_t *token_ids, int n_ids)
{
    json_object *o = header(m, object_name(m, 1)), *choices = json_object_new_array();
    json_object_array_add(choices, choice(m, 1, text, len, first, finish_reason, token_ids, n_ids));
    json_object_object_add(o, "choices", choices);
    return event(finish(o));
}

char *moe_api_usage_event(const moe_api_meta *m, const moe_api_usage *u)
{
    json_object *o = header(m, object_name(m, 1));
    json_object_object_add(o, "choices", json_object_new_array());
    json_object_object_add(o, "usage", usage_object(u));
    return event(finish(o));
}

char *moe_api_models_json(const char *model, long long created)
{
    json_object *o = json_object_new_object(), *data = json_object_new_array(), *m = json_object_new_object();
    json_object_object_add(m, "id", json_object_new_string(model));
    json_object_object_add(m, "object", json_object_new_string("model"));
    json_object_object_add(m, "created", json_object_new_int64(created));
    json_object_object_add(m, "owned_by", json_object_new_string("moe"));
    json_object_array_add(data, m);
    json_object_object_add(o, "object", json_object_new_string("list"));
    json_object_object_add(o, "data", data);
    return finish(o);
}

/* ---- Prometheus text ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(buf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->failed; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) break;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = 2 * (b->cap + (size_t)n);
        char *g = realloc(b->s, cap);
        if (!g) break;
        b->s = g;
        b->cap = cap;
    }
    b->failed = 1;
}

static void metric(buf *b, const char *name, const char *type, const char *help, double v)
{
    put(b, "# HELP moe_%s %s\n# TYPE moe_%s %s\nmoe_%s %.17g\n", name, help, name, type, name, v);
}

char *moe_server_metrics_text(const moe_server_stats *s)
{
    buf b = { .s = malloc(4096), .cap = 4096 };
    if (!b.s) return NULL;
    b.s[0] = '\0';
    put(&b, "# HELP moe_requests_total Requests answered, by outcome.\n# TYPE moe_requests_total counter\n");
    put(&b, "moe_requests_total{outcome=\"ok\"} %lld\n", s->requests_ok);
    put(&b, "moe_requests_total{outcome=\"failed\"} %lld\n", s->requests_failed);
    put(&b, "moe_requests_total{outcome=\"cancelled\"} %lld\n", s->requests_cancelled);
    put(&b, "moe_requests_total{outcome=\"rejected\"} %lld\n", s->requests_rejected);
    metric(&b, "prompt_tokens_total", "counter", "Prompt tokens of finished requests, cached ones included.",
           (double)s->prompt_tokens);
    metric(&b, "prompt_tokens_cached_total", "counter", "Prompt tokens found in a slot's cache, not computed again.",
           (double)s->cached_tokens);
    metric(&b, "generation_tokens_total", "counter", "Tokens generated.", (double)s->generated_tokens);
    metric(&b, "steps_total", "counter", "Forward passes run (each over every active sequence).", (double)s->steps);
    metric(&b, "step_tokens_total", "counter", "Tokens in those forward passes.", (double)s->step_tokens);
    metric(&b, "step_seconds_total", "counter", "Time in forward passes and sampling.", s->step_sum_s);
    put(&b, "# HELP moe_time_to_first_token_seconds From a request's arrival to its first token.\n"
            "# TYPE moe_time_to_first_token_seconds summary\n"
            "moe_time_to_first_token_seconds_sum %.17g\nmoe_time_to_first_token_seconds_count %lld\n",
        s->ttft_sum_s, s->ttft_count);
    metric(&b, "request_seconds_total", "counter", "Time from arrival to the last token, summed over requests.",
           s->request_sum_s);
    metric(&b, "requests_running", "gauge", "Requests in a slot now.", s->running);
    metric(&b, "requests_queued", "gauge", "Requests waiting for a slot now.", s->queued);
    metric(&b, "slots", "gauge", "Sequences that run together (--parallel).", s->slots);
    metric(&b, "batch_sequences_max", "gauge", "The most sequences one forward pass has run.", s->max_batch);
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* ---- stop sequences ---- */

size_t moe_stop_scan(const char *text, size_t len, size_t sent, char *const *stops, int n_stops, int *hit)
{
    *hit = 0;
    size_t best = len;
    for (int i = 0; i < n_stops; i++) {
        size_t n = strlen(stops[i]);
        for (size_t p = sent; p + n <= len && p < best; p++)
            if (!memcmp(text + p, stops[i], n)) {
                best = p;
                *hit = 1;
                break;
            }
    }
    if (*hit) return best;
    size_t hold = 0;
    for (int i = 0; i < n_stops; i++) {
        size_t n = strlen(stops[i]);
        for (size_t k = n - 1; k > hold; k--)
            if (k <= len - sent && !memcmp(text + len - k, stops[i], k)) {
                hold = k;
                break;
            }
    }
    return len - hold;
}
