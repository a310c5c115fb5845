/* tests/test_server_response.c — what `moe serve` answers with: the
 * OpenAI objects read back as JSON (every field a client reads), SSE
 * framing, the error object, the Prometheus text, and the stop-sequence
 * scan against a plain reference on random texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>

#include "server/response.h"

static json_object *parse(const char *s)
{
    assert_non_null(s);
    json_object *o = json_tokener_parse(s);
    if (!o) fail_msg("not JSON: %s", s);
    return o;
}

/* The value at a path of keys and [indices], "choices.0.message.content". */
static json_object *at(json_object *o, const char *path)
{
    char buf[256], *save, *k;
    snprintf(buf, sizeof buf, "%s", path);
    for (k = strtok_r(buf, ".", &save); k && o; k = strtok_r(NULL, ".", &save)) {
        if (k[0] >= '0' && k[0] <= '9') o = json_object_array_get_idx(o, (size_t)atoi(k));
        else if (!json_object_object_get_ex(o, k, &o)) return NULL;
    }
    return o;
}

static const char *str_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    if (!v || !json_object_is_type(v, json_type_string)) fail_msg("%s is not a string", path);
    return json_object_get_string(v);
}

static int int_at(json_object *o, const char *path)
{
    json_object *v = at(o, path);
    if (!v || !json_object_is_type(v, json_type_int)) fail_msg("%s is not an integer", path);
    return json_object_get_int(v);
}

static void is_null_at(json_object *o, const char *path)
{
    json_object *v;
    const char *dot = strrchr(path, '.');
    char parent[256];
    snprintf(parent, sizeof parent, "%.*s", (int)(dot - path), path);
    assert_true(json_object_object_get_ex(at(o, parent), dot + 1, &v));
    assert_null(v);
}

static const moe_api_usage USAGE = { .prompt_tokens = 12, .completion_tokens = 5, .cached_tokens = 4 };

static void whole_answers(void **state)
{
    (void)state;
    moe_api_meta chat = { MOE_API_CHAT, "chatcmpl-1", 1700000000, "tiny" };
    /* text with quotes, a newline, a control character and UTF-8 */
    static const char TEXT[] = "say \"hi\"\n\x01 caf\xc3\xa9 </s>";
    char *s = moe_api_response_json(&chat, TEXT, sizeof TEXT - 1, "stop", &USAGE, NULL, 0);
    json_object *o = parse(s);
    assert_string_equal(str_at(o, "id"), "chatcmpl-1");
    assert_string_equal(str_at(o, "object"), "chat.completion");
    assert_int_equal(int_at(o, "created"), 1700000000);
    assert_string_equal(str_at(o, "model"), "tiny");
    assert_string_equal(str_at(o, "choices.0.message.role"), "assistant");
    assert_string_equal(str_at(o, "choices.0.message.content"), TEXT);
    assert_string_equal(str_at(o, "choices.0.finish_reason"), "stop");
    assert_int_equal(int_at(o, "choices.0.index"), 0);
    is_null_at(o, "choices.0.logprobs");
    assert_null(at(o, "choices.0.token_ids"));
    assert_int_equal(int_at(o, "usage.prompt_tokens"), 12);
    assert_int_equal(int_at(o, "usage.completion_tokens"), 5);
    assert_int_equal(int_at(o, "usage.total_tokens"), 17);
    assert_int_equal(int_at(o, "usage.prompt_tokens_details.cached_tokens"), 4);
    assert_null(strchr(s, '\n'));   /* one line */
    json_object_put(o);
    free(s);

    moe_api_meta cmpl = { MOE_API_COMPLETION, "cmpl-2", 1, "tiny" };
    int32_t ids[] = { 7, 0, 250 };
    s = moe_api_response_json(&cmpl, "abc", 3, "length", &USAGE, ids, 3);
    o = parse(s);
    assert_string_equal(str_at(o, "object"), "text_completion");
    assert_string_equal(str_at(o, "choices.0.text"), "abc");
    assert_string_equal(str_at(o, "choices.0.finish_reason"), "length");
    assert_int_equal(json_object_array_length(at(o, "choices.0.token_ids")), 3);
    assert_int_equal(int_at(o, "choices.0.token_ids.2"), 250);
    json_object_put(o);
    free(s);
}

/* "data: JSON\n\n": the JSON of one event. */
static json_object *event_json(const char *ev)
{
    assert_non_null(ev);
    assert_memory_equal(ev, "data: ", 6);
    size_t n = strlen(ev);
    assert_true(n > 8 && !strcmp(ev + n - 2, "\n\n"));
    assert_null(memchr(ev, '\n', n - 2));
    char *body = strndup(ev + 6, n - 8);
    json_object *o = parse(body);
    free(body);
    return o;
}

static void stream_events(void **state)
{
    (void)state;
    moe_api_meta chat = { MOE_API_CHAT, "chatcmpl-3", 5, "tiny" };
    char *ev = moe_api_chunk_event(&chat, "", 0, 1, NULL, NULL, 0);
    json_object *o = event_json(ev);
    assert_string_equal(str_at(o, "object"), "chat.completion.chunk");
    assert_string_equal(str_at(o, "choices.0.delta.role"), "assistant");
    assert_string_equal(str_at(o, "choices.0.delta.content"), "");
    is_null_at(o, "choices.0.finish_reason");
    json_object_put(o);
    free(ev);
    ev = moe_api_chunk_event(&chat, "x\ny", 3, 0, NULL, NULL, 0);
    o = event_json(ev);
    assert_null(at(o, "choices.0.delta.role"));
    assert_string_equal(str_at(o, "choices.0.delta.content"), "x\ny");
    json_object_put(o);
    free(ev);
    /* the last: no text, the reason */
    ev = moe_api_chunk_event(&chat, "", 0, 0, "length", NULL, 0);
    o = event_json(ev);
    assert_null(at(o, "choices.0.delta.content"));
    assert_string_equal(str_at(o, "choices.0.finish_reason"), "length");
    json_object_put(o);
    free(ev);
    ev = moe_api_usage_event(&chat, &USAGE);
    o = event_json(ev);
    assert_int_equal(json_object_array_length(at(o, "choices")), 0);
    assert_int_equal(int_at(o, "usage.total_tokens"), 17);
    json_object_put(o);
    free(ev);
    moe_api_meta cmpl = { MOE_API_COMPLETION, "cmpl-4", 5, "tiny" };
    int32_t id = 9;
    ev = moe_api_chunk_event(&cmpl, "z", 1, 1, NULL, &id, 1);
    o = event_json(ev);
    assert_string_equal(str_at(o, "object"), "text_completion");
    assert_string_equal(str_at(o, "choices.0.text"), "z");
    assert_int_equal(int_at(o, "choices.0.token_ids.0"), 9);
    json_object_put(o);
    free(ev);
}

static void errors_and_models(void **state)
{
    (void)state;
    moe_api_error e;
    moe_api_error_set(&e, 401, "invalid_request_error", "invalid_api_key", NULL, "wrong key %d", 7);
    char *s = moe_api_error_json(&e);
    json_object *o = parse(s);
    assert_string_equal(str_at(o, "error.message"), "wrong key 7");
    assert_string_equal(str_at(o, "error.type"), "invalid_request_error");
    assert_string_equal(str_at(o, "error.code"), "invalid_api_key");
    is_null_at(o, "error.param");
    json_object_put(o);
    free(s);
    moe_api_error_set(&e, 400, "invalid_request_error", NULL, "messages[0].role", "bad \"%s\"", "role");
    char *ev = moe_api_error_event(&e);
    o = event_json(ev);
    assert_string_equal(str_at(o, "error.param"), "messages[0].role");
    assert_string_equal(str_at(o, "error.message"), "bad \"role\"");
    is_null_at(o, "error.code");
    json_object_put(o);
    free(ev);
    s = moe_api_models_json("tiny", 42);
    o = parse(s);
    assert_string_equal(str_at(o, "object"), "list");
    assert_string_equal(str_at(o, "data.0.id"), "tiny");
    assert_string_equal(str_at(o, "data.0.object"), "model");
    assert_int_equal(int_at(o, "data.0.created"), 42);
    json_object_put(o);
    free(s);
}

/* Prometheus' text format: each sample "name{labels} value", each metric
 * with HELP and TYPE before it. */
static void metrics_text(void **state)
{
    (void)state;
    moe_server_stats st = { .requests_ok = 3, .requests_failed = 1, .requests_cancelled = 2, .requests_rejected = 5,
                            .prompt_tokens = 100, .cached_tokens = 40, .generated_tokens = 77, .steps = 9,
                            .step_tokens = 120, .ttft_sum_s = 0.5, .ttft_count = 4, .running = 2, .queued = 1,
                            .slots = 4, .max_batch = 3 };
    char *s = moe_server_metrics_text(&st);
    assert_non_null(s);
    static const char *const WANT[] = { "moe_requests_total{outcome=\"ok\"} 3\n",
                                        "moe_requests_total{outcome=\"cancelled\"} 2\n",
                                        "moe_requests_total{outcome=\"rejected\"} 5\n",
                                        "# TYPE moe_prompt_tokens_total counter\nmoe_prompt_tokens_total 100\n",
                                        "moe_prompt_tokens_cached_total 40\n", "moe_generation_tokens_total 77\n",
                                        "moe_time_to_first_token_seconds_sum 0.5\n",
                                        "moe_time_to_first_token_seconds_count 4\n", "moe_requests_running 2\n",
                                        "moe_requests_queued 1\n", "moe_slots 4\n", "moe_batch_sequences_max 3\n" };
    for (size_t i = 0; i < sizeof WANT / sizeof WANT[0]; i++)
        if (!strstr(s, WANT[i])) fail_msg("no '%s' in\n%s", WANT[i], s);
    /* every line a comment or a sample of a metric declared above it */
    char *save, *copy = strdup(s);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') continue;
        char name[128];
        assert_int_equal(sscanf(line, "%127[a-z_]", name), 1);
        char decl[160];
        snprintf(decl, sizeof decl, "# TYPE %s ", name);
        if (!strstr(s, decl) && !strstr(s, "# TYPE moe_time_to_first_token_seconds summary"))
            fail_msg("'%s' has no TYPE line", line);
    }
    free(copy);
    free(s);
}

/* The reference: the earliest stop in text[sent..len); else hold back the
 * longest tail that is a proper prefix of a stop. */
static size_t naive_scan(const char *t, size_t len, size_t sent, char *const *stops, int n, int *hit)
{
    for (size_t p = sent; p < len; p++)
        for (int i = 0; i < n; i++)
            if (p + strlen(stops[i]) <= len && !strncmp(t + p, stops[i], strlen(stops[i]))) return *hit = 1, p;
    *hit = 0;
    for (size_t k = len - sent; k > 0; k--)
        for (int i = 0; i < n; i++)
            if (k < strlen(stops[i]) && !strncmp(t + len - k, stops[i], k)) return len - k;
    return len;
}

static void stop_scan(void **state)
{
    (void)state;
    char *stops[] = { "\n\n", "END", "E" };
    int hit;
    assert_int_equal(moe_stop_scan("abc\n", 4, 0, stops, 2, &hit), 3);   /* "\n" may begin "\n\n" */
    assert_false(hit);
    assert_int_equal(moe_stop_scan("abc\n\nx", 6, 0, stops, 2, &hit), 3);
    assert_true(hit);
    assert_int_equal(moe_stop_scan("xEN", 3, 1, stops, 2, &hit), 1);
    assert_int_equal(moe_stop_scan("xEN", 3, 1, stops, 3, &hit), 1);     /* "E" itself stops */
    assert_true(hit);
    assert_int_equal(moe_stop_scan("abc", 3, 0, stops, 0, &hit), 3);
    /* random texts over a small alphabet, so that stops and partial stops are common */
    unsigned seed = 12345;
    for (int trial = 0; trial < 20000; trial++) {
        char text[24], s1[5], s2[5], *st[2] = { s1, s2 };
        size_t len = (size_t)(rand_r(&seed) % 20);
        for (size_t i = 0; i < len; i++) text[i] = "abc"[rand_r(&seed) % 3];
        text[len] = '\0';
        for (int k = 0; k < 2; k++) {
            int n = 1 + rand_r(&seed) % 4;
            for (int i = 0; i < n; i++) st[k][i] = "abc"[rand_r(&seed) % 3];
            st[k][n] = '\0';
        }
        size_t sent = len ? (size_t)(rand_r(&seed) % (len + 1)) : 0;
        /* sent text never holds the start of a stop: the scan that released it held it back */
        int h0;
        if (naive_scan(text, sent, 0, st, 2, &h0) != sent || h0) continue;
        int hr, hm;
        size_t r = naive_scan(text, len, sent, st, 2, &hr), m = moe_stop_scan(text, len, sent, st, 2, &hm);
        if (r != m || hr != hm)
            fail_msg("'%s' sent %zu stops '%s' '%s': %zu/%d, reference %zu/%d", text, sent, s1, s2, m, hm, r, hr);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_answers),
        cmocka_unit_test(stream_events),
        cmocka_unit_test(errors_and_models),
        cmocka_unit_test(metrics_text),
        cmocka_unit_test(stop_scan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
