/* server/request.c — see request.h. Each field is read by a helper that
 * knows its type and range and names the field when it is wrong, so that
 * every bad body gets a message a client's author can act on. */
#include "request.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

void moe_api_error_set(moe_api_error *e, int status, const char *type, const char *code, const char *param,
                       const char *fmt, ...)
{
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

#define BAD(e, param, ...) (moe_api_error_set((e), 400, "invalid_request_error", NULL, (param), __VA_ARGS__), -1)

static const char *type_name(json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_double: return "a number";
    case json_type_int: return "an integer";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    case json_type_string: return "a string";
    }
    return "?";
}

/* The field, or NULL when it is absent or null (the API reads both as
 * "not given"). */
static json_object *field(json_object *o, const char *name)
{
    json_object *v;
    return json_object_object_get_ex(o, name, &v) && !json_object_is_type(v, json_type_null) ? v : NULL;
}

static int get_bool(json_object *o, const char *name, int *out, moe_api_error *e)
{
    json_object *v = field(o, name);
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_boolean)) return BAD(e, name, "'%s' must be a boolean, not %s", name, type_name(v));
    *out = json_object_get_boolean(v);
    return 0;
}

static int get_number(json_object *o, const char *name, double lo, double hi, float *out, moe_api_error *e)
{
    json_object *v = field(o, name);
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return BAD(e, name, "'%s' must be a number, not %s", name, type_name(v));
    double d = json_object_get_double(v);
    if (!(d >= lo && d <= hi)) return BAD(e, name, "'%s' is %g; it must be between %g and %g", name, d, lo, hi);
    *out = (float)d;
    return 0;
}

/* An integer in [lo, hi]; json-c saturates larger literals at INT64's ends,
 * which the range then refuses. */
static int get_int(json_object *o, const char *name, int64_t lo, int64_t hi, int64_t *out, moe_api_error *e)
{
    json_object *v = field(o, name);
    if (!v) return 0;
    if (!json_object_is_type(v, json_type_int))
        return BAD(e, name, "'%s' must be an integer, not %s", name, type_name(v));
    int64_t x = json_object_get_int64(v);
    if (x < lo || x > hi)
        return BAD(e, name, "'%s' is %lld; it must be between %lld and %lld", name, (long long)x, (long long)lo,
                   (long long)hi);
    *out = x;
    return 0;
}

static char *dup_string(json_object *v)
{
    size_t n = (size_t)json_object_get_string_len(v);
    char *s = malloc(n + 1);
    if (s) memcpy(s, json_object_get_string(v), n), s[n] = '\0';
    return s;
}

/* A request's strings go on as C strings (a prompt, a stop sequence): one
 * that holds a NUL (\u0000) would be cut there without a word, so it is
 * refused, naming the field. */
static int holds_nul(json_object *v) { return strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v); }

/* The string v of field `param` copied into *out; -1 (a 400) when it holds a NUL. */
static int take_string(json_object *v, const char *param, char **out, moe_api_error *e)
{
    if (holds_nul(v)) return BAD(e, param, "'%s' holds a NUL character (\\u0000), which this server does not take", param);
    return (*out = dup_string(v)) ? 0 : BAD(e, param, "out of memory");
}

/* A message's content: a string, or an array of {"type": "text", "text":
 * ...} parts joined (as the API's text-only models read them); null for an
 * assistant message that has none. */
static int read_content(json_object *v, int i, char **out, moe_api_error *e)
{
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (!v) return (*out = strdup("")) ? 0 : BAD(e, param, "out of memory");
    if (json_object_is_type(v, json_type_string)) return take_string(v, param, out, e);
    if (!json_object_is_type(v, json_type_array))
        return BAD(e, param, "'%s' must be a string or an array of text parts, not %s", param, type_name(v));
    size_t n = json_object_array_length(v), len = 0;
    for (size_t k = 0; k < n; k++) {
        json_object *part = json_object_array_get_idx(v, k), *t = NULL, *text = NULL;
        if (!json_object_is_type(part, json_type_object) || !json_object_object_get_ex(part, "type", &t) ||
            !json_object_is_type(t, json_type_string))
            return BAD(e, param, "'%s[%zu]' must be an object with a \"type\"", param, k);
        if (strcmp(json_object_get_string(t), "text") != 0)
            return BAD(e, param, "'%s[%zu]' is of type '%s'; this model reads text parts only", param, k,
                       json_object_get_string(t));
        if (!json_object_object_get_ex(part, "text", &text) || !json_object_is_type(text, json_type_string))
            return BAD(e, param, "'%s[%zu].text' must be a string", param, k);
        if (holds_nul(text))
            return BAD(e, param, "'%s[%zu].text' holds a NUL character (\\u0000), which this server does not take",
                       param, k);
        len += (size_t)json_object_get_string_len(text);
    }
    char *s = malloc(len + 1), *w = s;
    if (!s) return BAD(e, param, "out of memory");
    for (size_t k = 0; k < n; k++) {
        json_object *text;
        json_object_object_get_ex(json_object_array_get_idx(v, k), "text", &text);
        memcpy(w, json_object_get_string(text), (size_t)json_object_get_string_len(text));
        w += json_object_get_string_len(text);
    }
    *w = '\0';
    *out = s;
    return 0;
}

static int read_messages(json_object *o, moe_api_request *r, moe_api_error *e)
{
    json_object *v = field(o, "messages");
    if (!v) return BAD(e, "messages", "'messages' is required");
    if (!json_object_is_type(v, json_type_array))
        return BAD(e, "messages", "'messages' must be an array, not %s", type_name(v));
    int n = (int)json_object_array_length(v);
    if (n == 0) return BAD(e, "messages", "'messages' is empty; a chat needs at least one message");
    if (!(r->messages = calloc((size_t)n, sizeof *r->messages))) return BAD(e, "messages", "out of memory");
    for (int i = 0; i < n; i++) {
        json_object *m = json_object_array_get_idx(v, i), *role;
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!json_object_is_type(m, json_type_object)) return BAD(e, param, "'%s' must be an object, not %s", param, type_name(m));
        snprintf(param, sizeof param, "messages[%d].role", i);
        if (!(role = field(m, "role"))) return BAD(e, param, "'%s' is required", param);
        if (!json_object_is_type(role, json_type_string)) return BAD(e, param, "'%s' must be a string", param);
        if (field(m, "tool_calls") || field(m, "function_call"))
            return BAD(e, param, "messages[%d] has tool calls; this server has no tools", i);
        moe_chat_message *cm = &r->messages[r->n_messages++];
        char *role_s = NULL, *content = NULL;
        if (take_string(role, param, &role_s, e)) return -1;
        cm->role = role_s;
        /* "developer" is the newer name of "system" */
        if (!strcmp(role_s, "developer")) strcpy(role_s, "system");
        if (read_content(field(m, "content"), i, &content, e)) return -1;
        cm->content = content;
    }
    return 0;
}

/* One token id list: integers in [0, INT32_MAX]. */
static int read_ids(json_object *v, moe_api_request *r, moe_api_error *e)
{
    int n = (int)json_object_array_length(v);
    if (!(r->prompt_ids = malloc(sizeof(int32_t) * (size_t)(n ? n : 1)))) return BAD(e, "prompt", "out of memory");
    for (int i = 0; i < n; i++) {
        json_object *x = json_object_array_get_idx(v, i);
        if (!json_object_is_type(x, json_type_int) || json_object_get_int64(x) < 0 ||
            json_object_get_int64(x) > INT32_MAX)
            return BAD(e, "prompt", "'prompt[%d]' must be a token id (an integer >= 0)", i);
        r->prompt_ids[i] = (int32_t)json_object_get_int64(x);
    }
    r->n_prompt_ids = n;
    return 0;
}

/* A string, an array of token ids, or an array holding one of either (the
 * API's batch form, with one prompt). */
static int read_prompt(json_object *o, moe_api_request *r, moe_api_error *e)
{
    json_object *v = field(o, "prompt");
    if (!v) return BAD(e, "prompt", "'prompt' is required");
    if (json_object_is_type(v, json_type_array) && json_object_array_length(v) >= 1) {
        json_object *first = json_object_array_get_idx(v, 0);
        if (json_object_is_type(first, json_type_string) || json_object_is_type(first, json_type_array)) {
            if (json_object_array_length(v) > 1)
                return BAD(e, "prompt", "'prompt' holds %zu prompts; this server takes one a request",
                           json_object_array_length(v));
            v = first;
        }
    }
    if (json_object_is_type(v, json_type_string))
        return take_string(v, "prompt", &r->prompt_text, e);
    if (json_object_is_type(v, json_type_array)) {
        if (json_object_array_length(v) == 0) return BAD(e, "prompt", "'prompt' is an empty list of token ids");
        return read_ids(v, r, e);
    }
    return BAD(e, "prompt", "'prompt' must be a string or an array of token ids, not %s", type_name(v));
}

static int read_stop(json_object *o, moe_api_request *r, moe_api_error *e)
{
    json_object *v = field(o, "stop");
    if (!v) return 0;
    json_object *one[1] = { v };
    json_object **items = one;
    size_t n = 1;
    if (json_object_is_type(v, json_type_array)) {
        n = json_object_array_length(v);
        if (n > MOE_API_MAX_STOPS) return BAD(e, "stop", "'stop' has %zu sequences; at most %d", n, MOE_API_MAX_STOPS);
        items = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *s = items ? items[i] : json_object_array_get_idx(v, i);
        if (!json_object_is_type(s, json_type_string))
            return BAD(e, "stop", "'stop' must be a string or an array of strings, not %s", type_name(s));
        if (json_object_get_string_len(s) == 0) continue;   /* an empty sequence stops nothing */
        if (take_string(s, "stop", &r->stop[r->n_stop], e)) return -1;
        r->n_stop++;
    }
    return 0;
}

/* Fields whose meaning moe cannot honour: refused when set to anything but
 * their neutral value. */
static int refuse_unsupported(json_object *o, moe_api_error *e)
{
    static const char *const TRUTHY[] = { "logprobs", "echo", NULL };
    static const char *const PRESENT[] = { "tools", "functions", "tool_choice", "function_call", "suffix",
                                           "top_logprobs", "logit_bias", "audio", "prediction", NULL };
    for (int i = 0; TRUTHY[i]; i++) {
        json_object *v = field(o, TRUTHY[i]);
        if (v && json_object_get_boolean(v)) return BAD(e, TRUTHY[i], "'%s' is not supported by this server", TRUTHY[i]);
    }
    for (int i = 0; PRESENT[i]; i++) {
        json_object *v = field(o, PRESENT[i]);
        int empty = v && ((json_object_is_type(v, json_type_array) && json_object_array_length(v) == 0) ||
                          (json_object_is_type(v, json_type_object) && json_object_object_length(v) == 0));
        if (v && !empty) return BAD(e, PRESENT[i], "'%s' is not supported by this server", PRESENT[i]);
    }
    json_object *rf = field(o, "response_format"), *t;
    if (rf && !(json_object_is_type(rf, json_type_object) && json_object_object_get_ex(rf, "type", &t) &&
                json_object_is_type(t, json_type_string) && !strcmp(json_object_get_string(t), "text")))
        return BAD(e, "response_format", "'response_format' other than {\"type\": \"text\"} is not supported");
    int64_t n = 1;
    if (get_int(o, "n", 1, 1, &n, e)) return BAD(e, "n", "'n' must be 1: this server makes one choice a request");
    if (get_int(o, "best_of", 1, 1, &n, e)) return BAD(e, "best_of", "'best_of' must be 1");
    static const char *const PENALTIES[] = { "presence_penalty", "frequency_penalty" };
    float pen = 0;
    for (int i = 0; i < 2; i++)
        if (get_number(o, PENALTIES[i], 0, 0, &pen, e))
            return BAD(e, PENALTIES[i], "'%s' other than 0 is not supported by this server", PENALTIES[i]);
    return 0;
}

static int parse_fields(json_object *o, moe_api_kind kind, moe_api_request *r, moe_api_error *e)
{
    json_object *v;
    if ((v = field(o, "model"))) {
        if (!json_object_is_type(v, json_type_string)) return BAD(e, "model", "'model' must be a string, not %s", type_name(v));
        if (take_string(v, "model", &r->model, e)) return -1;
    }
    if (kind == MOE_API_CHAT ? read_messages(o, r, e) : read_prompt(o, r, e)) return -1;
    int64_t x;
    const char *mt = kind == MOE_API_CHAT && field(o, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if (field(o, mt)) {
        if (get_int(o, mt, 1, INT64_MAX, &x, e)) return -1;
        r->max_tokens = x > INT32_MAX ? INT32_MAX : (int)x;
    }
    if (get_number(o, "temperature", 0, 2, &r->temperature, e) || get_number(o, "top_p", 0, 1, &r->top_p, e) ||
        get_number(o, "min_p", 0, 0.999999, &r->min_p, e))
        return -1;
    if (field(o, "top_k")) {
        /* -1 is vLLM's "off" */
        if (get_int(o, "top_k", -1, INT32_MAX, &x, e)) return -1;
        r->top_k = x < 0 ? 0 : (int)x;
    }
    if (field(o, "seed")) {
        if (get_int(o, "seed", INT64_MIN, INT64_MAX, &x, e)) return -1;
        r->has_seed = 1;
        r->seed = (uint64_t)x;
    }
    if (read_stop(o, r, e) || get_bool(o, "stream", &r->stream, e) || get_bool(o, "ignore_eos", &r->ignore_eos, e) ||
        get_bool(o, "return_token_ids", &r->return_token_ids, e))
        return -1;
    if ((v = field(o, "stream_options"))) {
        if (!r->stream) return BAD(e, "stream_options", "'stream_options' is only allowed with \"stream\": true");
        if (!json_object_is_type(v, json_type_object))
            return BAD(e, "stream_options", "'stream_options' must be an object, not %s", type_name(v));
        if (get_bool(v, "include_usage", &r->include_usage, e)) return -1;
    }
    return refuse_unsupported(o, e);
}

/* The body is well-formed UTF-8 (Unicode's Table 3-7), as JSON must be
 * (RFC 8259). json-c's own check lets through overlong forms (C0 AF),
 * encoded surrogates (ED A0 80) and code points past U+10FFFF (F4 90 ..),
 * which would then reach the tokenizer as text; the reference tokenizers'
 * callers (Rust and Python strings) cannot even hold them. */
static int utf8_well_formed(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned b = s[i], lo = 0x80, hi = 0xBF;
        size_t more;
        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xC2 && b <= 0xDF) more = 1;
        else if (b >= 0xE0 && b <= 0xEF) more = 2, lo = b == 0xE0 ? 0xA0 : 0x80, hi = b == 0xED ? 0x9F : 0xBF;
        else if (b >= 0xF0 && b <= 0xF4) more = 3, lo = b == 0xF0 ? 0x90 : 0x80, hi = b == 0xF4 ? 0x8F : 0xBF;
        else return 0;
        if (n - i <= more) return 0;
        for (size_t k = 1; k <= more; k++, lo = 0x80, hi = 0xBF)
            if (s[i + k] < lo || s[i + k] > hi) return 0;
        i += more + 1;
    }
    return 1;
}

int moe_api_request_parse(const char *body, size_t len, moe_api_kind kind, moe_api_request *out, moe_api_error *e)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->max_tokens = -1;
    out->temperature = 1.0f;
    out->top_p = 1.0f;
    json_tokener *tk = json_tokener_new();
    if (!tk) return BAD(e, NULL, "out of memory");
    /* strict: one value and nothing after it but whitespace, no trailing commas */
    json_tokener_set_flags(tk, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = len ? json_tokener_parse_ex(tk, body, (int)len) : NULL;
    enum json_tokener_error je = json_tokener_get_error(tk);
    json_tokener_free(tk);
    int rc;
    if (!len) rc = BAD(e, NULL, "the request body is empty; send a JSON object");
    else if (!utf8_well_formed((const unsigned char *)body, len))
        rc = BAD(e, NULL, "the request body is not valid JSON (invalid utf-8 string)");
    else if (!o || je != json_tokener_success)
        rc = BAD(e, NULL, "the request body is not valid JSON (%s)",
                 je == json_tokener_continue ? "it ends too early" : json_tokener_error_desc(je));
    else if (!json_object_is_type(o, json_type_object))
        rc = BAD(e, NULL, "the request body must be a JSON object, not %s", type_name(o));
    else rc = parse_fields(o, kind, out, e);
    json_object_put(o);
    if (rc) moe_api_request_free(out);
    return rc;
}

void moe_api_request_free(moe_api_request *r)
{
    if (!r) return;
    free(r->model);
    for (int i = 0; i < r->n_messages; i++) {
        free((char *)r->messages[i].role);
        free((char *)r->messages[i].content);
    }
    free(r->messages);
    free(r->prompt_text);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    moe_api_kind kind = r->kind;
    memset(r, 0, sizeof *r);
    r->kind = kind;
}
