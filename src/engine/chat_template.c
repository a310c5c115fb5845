/* engine/chat_template.c — see chat_template.h. Each family's rendering
 * follows its Jinja source line by line; put_message is the loop body. */
#include "engine/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const char *const NAMES[] = { "tulu", "chatml", "llama3" };

moe_status moe_chat_format_from_name(const char *name, moe_chat_format *out)
{
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, NAMES[i])) return *out = (moe_chat_format)i, MOE_OK;
    return moe_error_set(MOE_ERR_INVALID_ARG, "unknown chat template '%s' (known: tulu, chatml, llama3)",
                         name ? name : "(null)");
}

const char *moe_chat_format_name(moe_chat_format f) { return (unsigned)f < 3 ? NAMES[f] : "?"; }

int moe_chat_format_default_bos(moe_chat_format f) { return f != MOE_CHAT_CHATML; }

/* Tulu writes the user's content followed by '\n' (zephyr, which looks the
 * same, follows it with eos_token; Phi-3 closes turns with <|end|>). */
static int is_tulu(const char *jinja)
{
    const char *u = strstr(jinja, "<|user|>");
    if (!u || !strstr(jinja, "<|assistant|>") || strstr(jinja, "<|end|>")) return 0;
    // the expression that writes the user's turn: up to its closing }}
    const char *end = strstr(u, "}}");
    const char *eos = strstr(u, "eos_token");
    return !(eos && (!end || eos < end));
}

moe_status moe_chat_format_detect(const char *jinja, moe_chat_format *out, int *with_bos)
{
    if (!jinja) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: no template text");
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>") && strstr(jinja, "<|eot_id|>"))
        *out = MOE_CHAT_LLAMA3;
    else if (strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>"))
        *out = MOE_CHAT_CHATML;
    else if (is_tulu(jinja))
        *out = MOE_CHAT_TULU;
    else
        return moe_error_set(MOE_ERR_UNSUPPORTED, "the chat template is none that moe knows (it recognises the Tulu / "
                             "OLMoE instruct, ChatML and Llama-3 templates)");
    if (with_bos) *with_bos = strstr(jinja, "bos_token") != NULL;
    return MOE_OK;
}

/* ---- a growing string ---- */

typedef struct {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void put_n(sbuf *b, const char *s, size_t n)
{
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *g = realloc(b->s, cap);
        if (!g) {
            b->failed = 1;
            return;
        }
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void put(sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

static moe_status finish(sbuf *b, char **out)
{
    put_n(b, "", 0);  /* an empty result is "" too */
    if (b->failed) {
        free(b->s);
        *out = NULL;
        return moe_error_set(MOE_ERR_NOMEM, "chat template: out of memory");
    }
    *out = b->s;
    return MOE_OK;
}

/* Python's str.isspace, which Jinja's trim strips: the code point of the
 * UTF-8 sequence at s (n bytes long, *len set to its length). */
static int is_py_space(const unsigned char *s, size_t n, size_t *len)
{
    uint32_t c = s[0];
    *len = 1;
    if (c >= 0xC0 && c < 0xE0 && n >= 2) c = ((c & 0x1F) << 6) | (s[1] & 0x3F), *len = 2;
    else if (c >= 0xE0 && c < 0xF0 && n >= 3) c = ((c & 0x0F) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3F), *len = 3;
    else if (c >= 0x80) return 0;
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Jinja's `trim`: content without leading and trailing whitespace. */
static void put_trimmed(sbuf *b, const char *content)
{
    const unsigned char *s = (const unsigned char *)content, *e = s + strlen(content);
    size_t k;
    while (s < e && is_py_space(s, (size_t)(e - s), &k)) s += k;
    while (e > s) {
        const unsigned char *p = e - 1;
        while (p > s && (*p & 0xC0) == 0x80 && e - p < 3) p--;
        if (!is_py_space(p, (size_t)(e - p), &k) || p + k != e) break;
        e = p;
    }
    put_n(b, (const char *)s, (size_t)(e - s));
}

static void put_generation_prompt(sbuf *b, const moe_chat_template *t)
{
    switch (t->format) {
    case MOE_CHAT_TULU: put(b, "<|assistant|>\n"); break;
    case MOE_CHAT_CHATML: put(b, "<|im_start|>assistant\n"); break;
    case MOE_CHAT_LLAMA3: put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n"); break;
    }
}

/* The body of each template's `for message in messages` loop, for message
 * number `index`, `last` when loop.last. */
static void put_message(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int index, int last,
                        int add_generation_prompt)
{
    switch (t->format) {
    case MOE_CHAT_TULU:
        // {% if role == 'system' %}'<|system|>\n' + content + '\n' {% elif user %}'<|user|>\n' + content + '\n'
        // {% elif assistant %}'<|assistant|>\n' + content + eos_token (+ '\n' if not loop.last){% endif %}
        if (!strcmp(m->role, "system") || !strcmp(m->role, "user")) {
            put(b, m->role[0] == 's' ? "<|system|>\n" : "<|user|>\n");
            put(b, m->content);
            put(b, "\n");
        } else if (!strcmp(m->role, "assistant")) {
            put(b, "<|assistant|>\n");
            put(b, m->content);
            put(b, t->eos_token);
            if (!last) put(b, "\n");
        }
        // {% if loop.last and add_generation_prompt %}'<|assistant|>\n'{% endif %} (inside the loop)
        if (last && add_generation_prompt) put_generation_prompt(b, t);
        break;
    case MOE_CHAT_CHATML:
        // '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'
        put(b, "<|im_start|>");
        put(b, m->role);
        put(b, "\n");
        put(b, m->content);
        put(b, "<|im_end|>\n");
        break;
    case MOE_CHAT_LLAMA3:
        // content = '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>',
        // with bos_token before it when loop.index0 == 0
        if (index == 0 && t->with_bos) put(b, t->bos_token);
        put(b, "<|start_header_id|>");
        put(b, m->role);
        put(b, "<|end_header_id|>\n\n");
        put_trimmed(b, m->content);
        put(b, "<|eot_id|>");
        break;
    }
}

static moe_status check(const moe_chat_template *t)
{
    if (!t || (unsigned)t->format > MOE_CHAT_LLAMA3 || !t->bos_token || !t->eos_token)
        return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: format, bos_token and eos_token are required");
    return MOE_OK;
}

moe_status moe_chat_template_render(const moe_chat_template *t, const moe_chat_message *msgs, int n,
                                    int add_generation_prompt, char **out)
{
    moe_status st = check(t);
    if (st != MOE_OK) return st;
    if (n < 0 || (n > 0 && !msgs) || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: bad messages");
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: message %d has no role or content", i);
    sbuf b = { 0 };
    if (t->with_bos && t->format != MOE_CHAT_LLAMA3) put(&b, t->bos_token);
    for (int i = 0; i < n; i++) put_message(&b, t, &msgs[i], i, i == n - 1, add_generation_prompt);
    // tulu's generation prompt is inside its loop; the others' after it
    if (add_generation_prompt && t->format != MOE_CHAT_TULU) put_generation_prompt(&b, t);
    return finish(&b, out);
}

moe_status moe_chat_template_turn(const moe_chat_template *t, int first, const char *system, const char *user,
                                  char **out)
{
    moe_status st = check(t);
    if (st != MOE_OK) return st;
    if (!user || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: no user message");
    moe_chat_message msgs[2];
    int n = 0;
    if (first && system) msgs[n++] = (moe_chat_message){ "system", system };
    msgs[n++] = (moe_chat_message){ "user", user };
    if (first) return moe_chat_template_render(t, msgs, n, 1, out);
    sbuf b = { 0 };
    // what follows the previous assistant reply's content in the rendered history
    switch (t->format) {
    case MOE_CHAT_TULU: put(&b, t->eos_token), put(&b, "\n"); break;
    case MOE_CHAT_CHATML: put(&b, "<|im_end|>\n"); break;
    case MOE_CHAT_LLAMA3: put(&b, "<|eot_id|>"); break;
    }
    put_message(&b, t, &msgs[0], 2, 1, 1);  /* not the first message, and the last */
    if (t->format != MOE_CHAT_TULU) put_generation_prompt(&b, t);
    return finish(&b, out);
}

const char *moe_chat_template_end_of_turn(const moe_chat_template *t)
{
    switch (t->format) {
    case MOE_CHAT_CHATML: return "<|im_end|>";
    case MOE_CHAT_LLAMA3: return "<|eot_id|>";
    default: return t->eos_token;
    }
}
