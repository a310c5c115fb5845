/* server/response.h — the bodies `moe serve` answers with: OpenAI's
 * chat.completion and text_completion objects, their streamed chunks as
 * server-sent events, the error object, the model list, and the
 * Prometheus text of GET /metrics. Each returns a malloc'd NUL-terminated
 * string (NULL when out of memory). Also the stop-sequence scan that
 * decides how much generated text may be sent. */
#ifndef MOE_SERVER_RESPONSE_H
#define MOE_SERVER_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "request.h"

char *moe_api_error_json(const moe_api_error *e);

/* What every object of one response shares. */
typedef struct {
    moe_api_kind kind;
    const char *id;        /* "chatcmpl-…", "cmpl-…" */
    long long created;     /* Unix seconds */
    const char *model;
} moe_api_meta;

typedef struct {
    int prompt_tokens, completion_tokens, cached_tokens;
} moe_api_usage;

/* The whole answer (not streamed). token_ids: NULL, or the generated ids
 * (the return_token_ids extension). */
char *moe_api_response_json(const moe_api_meta *m, const char *text, size_t len, const char *finish_reason,
                            const moe_api_usage *u, const int32_t *token_ids, int n_ids);

/* One streamed chunk as an SSE event ("data: {…}\n\n"): text (len bytes,
 * may be empty), the assistant role in a chat's first chunk (first), the
 * finish_reason in the last (NULL before), token ids as above. */
char *moe_api_chunk_event(const moe_api_meta *m, const char *text, size_t len, int first, const char *finish_reason,
                          const int32_t *token_ids, int n_ids);

/* The usage chunk stream_options.include_usage asks for: no choices. */
char *moe_api_usage_event(const moe_api_meta *m, const moe_api_usage *u);

/* An error in the middle of a stream: "data: {"error": …}\n\n". */
char *moe_api_error_event(const moe_api_error *e);

/* GET /v1/models: the one model served. */
char *moe_api_models_json(const char *model, long long created);

/* Counters since the server started, for GET /metrics. */
typedef struct {
    long long requests_ok, requests_failed, requests_cancelled, requests_rejected;
    long long prompt_tokens, cached_tokens, generated_tokens;
    long long steps, step_tokens;          /* forwards run, tokens in them */
    double ttft_sum_s, request_sum_s, step_sum_s;
    long long ttft_count;
    int running, queued, slots, max_batch;  /* now / the largest batch so far */
} moe_server_stats;

char *moe_server_metrics_text(const moe_server_stats *s);

/* Stop sequences over generated text: text[0..len) has been generated, of
 * which [0..sent) has been released. Returns how far text may be released:
 * with *hit set, the start of the first stop sequence found (the text ends
 * there); else len less the longest tail that could begin a stop sequence
 * (held back until the next tokens say). At least `sent`. */
size_t moe_stop_scan(const char *text, size_t len, size_t sent, char *const *stops, int n_stops, int *hit);

#endif
