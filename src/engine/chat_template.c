/* engine/chat_template.c — see chat_template.h. Each family's rendering
 * follows its Jinja source statement by statement (the source is quoted in
 * comments); recognition looks for the expressions that decide what a
 * template writes in its source with the whitespace between Jinja tokens
 * taken out (normalize). */
#include "engine/chat_template.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static const char *const NAMES[] = { "tulu", "chatml", "llama3", "qwen3", "llama2", "mistral", "mistral-v1",
                                     "mistral-v3", "mistral-v3-tekken", "mistral-v7" };
enum { NUM_FORMATS = (int)(sizeof NAMES / sizeof NAMES[0]) };
_Static_assert(NUM_FORMATS == MOE_CHAT_MISTRAL_V7 + 1, "a name for every format");

moe_status moe_chat_format_from_name(const char *name, moe_chat_format *out)
{
    for (int i = 0; i < NUM_FORMATS; i++)
        if (name && !strcmp(name, NAMES[i])) return *out = (moe_chat_format)i, MOE_OK;
    return moe_error_set(MOE_ERR_INVALID_ARG, "unknown chat template '%s' (known: " MOE_CHAT_FORMAT_NAMES ")",
                         name ? name : "(null)");
}

const char *moe_chat_format_name(moe_chat_format f) { return (unsigned)f < NUM_FORMATS ? NAMES[f] : "?"; }

int moe_chat_format_default_bos(moe_chat_format f) { return f != MOE_CHAT_CHATML && f != MOE_CHAT_QWEN3; }

/* ---- recognising a template ---- */

/* The template with comments dropped, whitespace outside string literals
 * dropped (in tags and in the text between them), Jinja's whitespace
 * control (the - of {{- and -}}) dropped, double-quoted literals written
 * with single quotes unless they hold one, and a newline or tab typed into
 * a literal written as its escape: two spellings of one expression become
 * one string. NULL when out of memory. */
static char *normalize(const char *j)
{
    char *o = malloc(2 * strlen(j) + 1), *w = o;  /* an escape doubles a character at most */
    if (!o) return NULL;
    int in_tag = 0;
    for (const char *p = j; *p;) {
        if (!in_tag && p[0] == '{' && p[1] == '#') {
            const char *e = strstr(p + 2, "#}");
            p = e ? e + 2 : p + strlen(p);
        } else if (!in_tag && p[0] == '{' && (p[1] == '{' || p[1] == '%')) {
            *w++ = *p++;
            *w++ = *p++;
            if (*p == '-') p++;
            in_tag = 1;
        } else if (in_tag && (p[0] == '}' || p[0] == '%') && p[1] == '}') {
            if (w > o && w[-1] == '-') w--;
            *w++ = *p++;
            *w++ = *p++;
            in_tag = 0;
        } else if (in_tag && (*p == '\'' || *p == '"')) {
            char q = *p++;
            const char *body = p;
            int has_single = 0;
            while (*p && *p != q) {
                has_single |= *p == '\'';
                p += p[0] == '\\' && p[1] ? 2 : 1;
            }
            char oq = q == '"' && has_single ? '"' : '\'';
            *w++ = oq;
            for (const char *r = body; r < p; r++) {
                if (*r == '\n') *w++ = '\\', *w++ = 'n';
                else if (*r == '\t') *w++ = '\\', *w++ = 't';
                else if (*r == '\\' && r + 1 < p) {
                    if (!(q == '"' && oq == '\'' && r[1] == '"')) *w++ = '\\';
                    *w++ = *++r;
                } else *w++ = *r;
            }
            *w++ = oq;
            if (*p) p++;
        } else if (isspace((unsigned char)*p)) {
            p++;
        } else {
            *w++ = *p++;
        }
    }
    *w = '\0';
    return o;
}

/* Whether the normalized template holds every one of the NULL-ended list. */
static int has_all(const char *norm, const char *const *exprs)
{
    for (; *exprs; exprs++)
        if (!strstr(norm, *exprs)) return 0;
    return 1;
}

#define HAS(norm, ...) has_all(norm, (const char *const[]){ __VA_ARGS__, NULL })

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

static int is_qwen3(const char *norm)
{
    return HAS(norm, "{%ifmessages[0].role=='system'%}{{'<|im_start|>system\\n'+messages[0].content+'<|im_end|>\\n'}}",
               ".startswith('<tool_response>')", ".endswith('</tool_response>')",
               "{%if(message.role=='user')or(message.role=='system'andnotloop.first)%}",
               ".split('</think>')[-1].lstrip('\\n')",
               ".split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n')",
               "{%ifloop.index0>ns.last_query_index%}{%ifloop.lastor(notloop.lastandreasoning_content)%}"
               "{{'<|im_start|>'+message.role+'\\n<think>\\n'+reasoning_content.strip('\\n')+'\\n</think>\\n\\n'"
               "+content.lstrip('\\n')}}{%else%}{{'<|im_start|>'+message.role+'\\n'+content}}",
               "{%ifloop.firstor(messages[loop.index0-1].role!='tool')%}{{'<|im_start|>user'}}",
               "{{'\\n<tool_response>\\n'}}{{message.content}}{{'\\n</tool_response>'}}"
               "{%ifloop.lastor(messages[loop.index0+1].role!='tool')%}{{'<|im_end|>\\n'}}",
               "{%ifadd_generation_prompt%}{{'<|im_start|>assistant\\n'}}"
               "{%ifenable_thinkingisdefinedandenable_thinkingisfalse%}{{'<think>\\n\\n</think>\\n\\n'}}");
}

/* The default system messages moe knows (Qwen1.5 / Qwen2's, Qwen2.5's). */
static const char *const DEFAULT_SYSTEMS[] = { "You are a helpful assistant",
                                               "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." };

/* A ChatML template's default system message: a literal
 * '<|im_start|>system\nTEXT<|im_end|>\n'. *out NULL when it writes none;
 * 0 when it writes one moe does not know. */
static int chatml_default_system(const char *norm, const char **out)
{
    static const char lead[] = "'<|im_start|>system\\n";
    *out = NULL;
    for (const char *p = strstr(norm, lead); p; p = strstr(p + 1, lead)) {
        const char *text = p + strlen(lead);
        if (*text == '\'') continue;  /* the literal ends: content follows it */
        for (size_t i = 0; i < sizeof DEFAULT_SYSTEMS / sizeof DEFAULT_SYSTEMS[0]; i++) {
            size_t n = strlen(DEFAULT_SYSTEMS[i]);
            if (!strncmp(text, DEFAULT_SYSTEMS[i], n) && !strncmp(text + n, "<|im_end|>\\n'", 13)) {
                *out = DEFAULT_SYSTEMS[i];
                break;
            }
        }
        if (!*out) return 0;
    }
    return 1;
}

/* What every template that splits off messages[0] as the system message says. */
#define SPLIT_SYSTEM "{%ifmessages[0]['role']=='system'%}{%setsystem_message=messages[0]['content']%}" \
                     "{%setloop_messages=messages[1:]%}{%else%}{%setloop_messages=messages%}{%endif%}"
#define ALTERNATE_INLINE "{%if(message['role']=='user')!=(loop.index0%2==0)%}"
#define ALTERNATE_SKIPPING_TOOLS                                                                \
    "{%ifnot(message.role=='tool'ormessage.role=='tool_results'or(message.tool_callsisdefined" \
    "andmessage.tool_callsisnotnone))%}{%if(message['role']=='user')!=(ns.index%2==0)%}"

/* The [INST] family: which of its forms, or -1. */
static int inst_form(const char *norm)
{
    if (HAS(norm, "{%ifmessages[0]['role']=='system'%}{%setloop_messages=messages[1:]%}"
                  "{%setsystem_message=messages[0]['content']%}{%else%}{%setloop_messages=messages%}"
                  "{%setsystem_message=false%}{%endif%}",
            ALTERNATE_INLINE,
            "{%ifloop.index0==0andsystem_message!=false%}"
            "{%setcontent='<<SYS>>\\n'+system_message+'\\n<</SYS>>\\n\\n'+message['content']%}",
            "{{bos_token+'[INST] '+content.strip()+' [/INST]'}}", "{{' '+content.strip()+' '+eos_token}}"))
        return MOE_CHAT_LLAMA2;
    if (!strstr(norm, "system_message") &&
        HAS(norm, ALTERNATE_INLINE, "{{'[INST] '+message['content']+' [/INST]'}}", "{{message['content']+eos_token}}"))
        return MOE_CHAT_MISTRAL;
    if (HAS(norm, SPLIT_SYSTEM, ALTERNATE_INLINE,
            "{%ifloop.firstandsystem_messageisdefined%}{{' [INST] '+system_message+'\\n\\n'+message['content']"
            "+' [/INST]'}}{%else%}{{' [INST] '+message['content']+' [/INST]'}}",
            "{{' '+message['content']+eos_token}}"))
        return MOE_CHAT_MISTRAL_V1;
    if (HAS(norm, SPLIT_SYSTEM, ALTERNATE_SKIPPING_TOOLS,
            "{%ifloop.lastandsystem_messageisdefined%}{{'[INST] '+system_message+'\\n\\n'+message['content']"
            "+'[/INST]'}}{%else%}{{'[INST] '+message['content']+'[/INST]'}}",
            "{{' '+message['content']|trim+eos_token}}"))
        return MOE_CHAT_MISTRAL_V3;
    if (HAS(norm, SPLIT_SYSTEM, ALTERNATE_SKIPPING_TOOLS,
            "{%ifloop.lastandsystem_messageisdefined%}{{'[INST]'+system_message+'\\n\\n'+message['content']"
            "+'[/INST]'}}{%else%}{{'[INST]'+message['content']+'[/INST]'}}",
            "{{message['content']+eos_token}}"))
        return MOE_CHAT_MISTRAL_V3_TEKKEN;
    if (!strstr(norm, "system_message") && !strstr(norm, "%2") &&
        HAS(norm, "{{'[INST] '+message['content']+'[/INST]'}}",
            "{%elifmessage['role']=='system'%}{{'[SYSTEM_PROMPT] '+message['content']+'[/SYSTEM_PROMPT]'}}",
            "{{' '+message['content']+eos_token}}"))
        return MOE_CHAT_MISTRAL_V7;
    return -1;
}

static moe_status unknown(const char *what)
{
    return moe_error_set(MOE_ERR_UNSUPPORTED, "the chat template is none that moe knows (%s)", what);
}

moe_status moe_chat_template_detect(const char *jinja, moe_chat_template *t)
{
    if (!jinja || !t) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: no template text");
    char *norm = normalize(jinja);
    if (!norm) return moe_error_set(MOE_ERR_NOMEM, "chat template: out of memory");
    moe_status st = MOE_OK;
    const char *default_system = NULL;
    int form;
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>") && strstr(jinja, "<|eot_id|>"))
        t->format = MOE_CHAT_LLAMA3;
    else if (strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>")) {
        if (is_qwen3(norm)) t->format = MOE_CHAT_QWEN3;
        else if (strstr(jinja, "<think>"))
            st = unknown("a ChatML template that writes <think>, but not as Qwen3's does");
        else if (!chatml_default_system(norm, &default_system))
            st = unknown("a ChatML template with a default system message moe does not know; say it with --system");
        else t->format = MOE_CHAT_CHATML;
    } else if (is_tulu(jinja))
        t->format = MOE_CHAT_TULU;
    else if (strstr(jinja, "[INST]") && strstr(jinja, "[/INST]") && (form = inst_form(norm)) >= 0)
        t->format = (moe_chat_format)form;
    else if (strstr(jinja, "[INST]") && strstr(jinja, "[/INST]"))
        st = unknown("an [INST] template unlike Llama-2-chat's and Mistral's mistral, v1, v3, v3-tekken and v7 ones");
    else
        st = unknown("it recognises the Tulu / OLMoE instruct, ChatML, Qwen3, Llama-2, Llama-3 and Mistral "
                     "[INST] templates");
    free(norm);
    if (st != MOE_OK) return st;
    t->with_bos = strstr(jinja, "bos_token") != NULL;
    t->default_system = default_system;
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

/* ---- Python's string methods, on a part of a string ---- */

typedef struct {
    const char *s;
    size_t n;
} span;

static span whole(const char *s) { return (span){ s, strlen(s) }; }

static void put_span(sbuf *b, span x) { put_n(b, x.s, x.n); }

/* Where needle first (last) occurs in x, or NULL. */
static const char *find_first(span x, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= x.n; i++)
        if (!memcmp(x.s + i, needle, k)) return x.s + i;
    return NULL;
}

static const char *find_last(span x, const char *needle)
{
    size_t k = strlen(needle);
    if (k > x.n) return NULL;
    for (size_t i = x.n - k + 1; i-- > 0;)
        if (!memcmp(x.s + i, needle, k)) return x.s + i;
    return NULL;
}

static span after(span x, const char *p, size_t skip) { return (span){ p + skip, (size_t)(x.s + x.n - p - skip) }; }

/* str.lstrip('\n'), str.rstrip('\n') */
static span lstrip_nl(span x)
{
    while (x.n && *x.s == '\n') x.s++, x.n--;
    return x;
}

static span rstrip_nl(span x)
{
    while (x.n && x.s[x.n - 1] == '\n') x.n--;
    return x;
}

/* Python's str.isspace, which str.strip() and Jinja's trim strip: the code
 * point of the UTF-8 sequence at s (n bytes long, *len set to its length). */
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

/* str.strip() and Jinja's trim: without leading and trailing whitespace. */
static span py_strip(span x)
{
    const unsigned char *s = (const unsigned char *)x.s, *e = s + x.n;
    size_t k;
    while (s < e && is_py_space(s, (size_t)(e - s), &k)) s += k;
    while (e > s) {
        const unsigned char *p = e - 1;
        while (p > s && (*p & 0xC0) == 0x80 && e - p < 3) p--;
        if (!is_py_space(p, (size_t)(e - p), &k) || p + k != e) break;
        e = p;
    }
    return (span){ (const char *)s, (size_t)(e - s) };
}

static int is(const moe_chat_message *m, const char *role) { return !strcmp(m->role, role); }

/* ---- errors the templates raise ---- */

static const char ALTERNATE[] = "Conversation roles must alternate user/assistant/user/assistant/...";
static const char ALTERNATE_AFTER_SYSTEM[] =
    "After the optional system message, conversation roles must alternate user/assistant/user/assistant/...";
static const char ONLY_USER_ASSISTANT_AFTER_SYSTEM[] =
    "Only user and assistant roles are supported, with the exception of an initial optional system message!";

/* raise_exception(why) at message i. */
static moe_status refuse(const moe_chat_template *t, int i, const moe_chat_message *m, const char *why)
{
    return moe_error_set(MOE_ERR_INVALID_ARG, "the %s chat template refuses message %d (role '%s'): %s%s",
                         NAMES[t->format], i, m->role, why,
                         t->format == MOE_CHAT_MISTRAL && !strcmp(m->role, "system")
                             ? " (this template takes no system message)" : "");
}

/* messages[0] of an empty conversation: jinja2's UndefinedError. */
static moe_status needs_a_message(const moe_chat_template *t)
{
    return moe_error_set(MOE_ERR_INVALID_ARG, "the %s chat template needs a message (it reads messages[0])",
                         NAMES[t->format]);
}

/* ---- the families ---- */

static void render_tulu(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n, int gen)
{
    if (t->with_bos) put(b, t->bos_token);  /* {{ bos_token }} */
    for (int i = 0; i < n; i++) {
        // {% if role == 'system' %}'<|system|>\n' + content + '\n' {% elif user %}'<|user|>\n' + content + '\n'
        // {% elif assistant %}'<|assistant|>\n' + content + eos_token (+ '\n' if not loop.last){% endif %}
        if (is(&m[i], "system") || is(&m[i], "user")) {
            put(b, is(&m[i], "system") ? "<|system|>\n" : "<|user|>\n");
            put(b, m[i].content);
            put(b, "\n");
        } else if (is(&m[i], "assistant")) {
            put(b, "<|assistant|>\n");
            put(b, m[i].content);
            put(b, t->eos_token);
            if (i < n - 1) put(b, "\n");
        }
        // {% if loop.last and add_generation_prompt %}'<|assistant|>\n'{% endif %} (inside the loop)
        if (i == n - 1 && gen) put(b, "<|assistant|>\n");
    }
}

static void render_chatml(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n, int gen)
{
    if (t->with_bos) put(b, t->bos_token);
    // Qwen's: {% if loop.first and messages[0]['role'] != 'system' %}'<|im_start|>system\nDEFAULT<|im_end|>\n'
    if (t->default_system && n > 0 && !is(&m[0], "system")) {
        put(b, "<|im_start|>system\n");
        put(b, t->default_system);
        put(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        // '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'
        put(b, "<|im_start|>");
        put(b, m[i].role);
        put(b, "\n");
        put(b, m[i].content);
        put(b, "<|im_end|>\n");
    }
    if (gen) put(b, "<|im_start|>assistant\n");
}

static void render_llama3(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n, int gen)
{
    for (int i = 0; i < n; i++) {
        // content = '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>',
        // with bos_token before it when loop.index0 == 0
        if (i == 0 && t->with_bos) put(b, t->bos_token);
        put(b, "<|start_header_id|>");
        put(b, m[i].role);
        put(b, "<|end_header_id|>\n\n");
        put_span(b, py_strip(whole(m[i].content)));
        put(b, "<|eot_id|>");
    }
    if (gen) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* message.content.startswith('<tool_response>') and ...endswith('</tool_response>') */
static int is_tool_response(const char *content)
{
    size_t n = strlen(content);
    return n >= 15 && !memcmp(content, "<tool_response>", 15) && n >= 16 &&
           !memcmp(content + n - 16, "</tool_response>", 16);
}

static moe_status render_qwen3(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n, int gen)
{
    if (n == 0) return needs_a_message(t);
    // {%- if messages[0].role == 'system' %}'<|im_start|>system\n' + messages[0].content + '<|im_end|>\n'
    if (is(&m[0], "system")) {
        put(b, "<|im_start|>system\n");
        put(b, m[0].content);
        put(b, "<|im_end|>\n");
    }
    // ns.last_query_index: the last user message that is not a tool response (else the last message)
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--)
        if (is(&m[i], "user") && !is_tool_response(m[i].content)) {
            last_query = i;
            break;
        }
    for (int i = 0; i < n; i++) {
        if (is(&m[i], "user") || (is(&m[i], "system") && i > 0)) {
            put(b, "<|im_start|>");
            put(b, m[i].role);
            put(b, "\n");
            put(b, m[i].content);
            put(b, "<|im_end|>\n");
        } else if (is(&m[i], "assistant")) {
            // {%- if '</think>' in message.content %}
            //   content = message.content.split('</think>')[-1].lstrip('\n')
            //   reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n')
            span content = whole(m[i].content), reasoning = { "", 0 };
            const char *close = find_first(content, "</think>");
            if (close) {
                span before = rstrip_nl((span){ content.s, (size_t)(close - content.s) });
                const char *open = find_last(before, "<think>");
                reasoning = lstrip_nl(open ? after(before, open, 7) : before);
                content = lstrip_nl(after(content, find_last(content, "</think>"), 8));
            }
            // after the last query: with the think block when loop.last or there is reasoning
            put(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || reasoning.n > 0)) {
                put(b, "<think>\n");
                put_span(b, lstrip_nl(rstrip_nl(reasoning)));
                put(b, "\n</think>\n\n");
                put_span(b, lstrip_nl(content));
            } else {
                put_span(b, content);
            }
            put(b, "<|im_end|>\n");
        } else if (is(&m[i], "tool")) {
            // consecutive tool messages share one user turn
            if (i == 0 || !is(&m[i - 1], "tool")) put(b, "<|im_start|>user");
            put(b, "\n<tool_response>\n");
            put(b, m[i].content);
            put(b, "\n</tool_response>");
            if (i == n - 1 || !is(&m[i + 1], "tool")) put(b, "<|im_end|>\n");
        }
    }
    if (gen) {
        put(b, "<|im_start|>assistant\n");
        // {%- if enable_thinking is defined and enable_thinking is false %}
        if (t->no_think) put(b, "<think>\n\n</think>\n\n");
    }
    return MOE_OK;
}

static moe_status render_llama2(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n)
{
    if (n == 0) return needs_a_message(t);
    // a first system message is split off: loop_messages = messages[1:]
    int first = is(&m[0], "system");
    for (int i = first; i < n; i++) {
        int j = i - first;  /* loop.index0 */
        if (is(&m[i], "user") != (j % 2 == 0)) return refuse(t, i, &m[i], ALTERNATE);
        // content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] when loop.index0 == 0
        sbuf content = { 0 };
        if (j == 0 && first) {
            put(&content, "<<SYS>>\n");
            put(&content, m[0].content);
            put(&content, "\n<</SYS>>\n\n");
        }
        put(&content, m[i].content);
        if (content.failed) b->failed = 1;
        span stripped = py_strip((span){ content.s ? content.s : "", content.len });
        if (is(&m[i], "user")) {
            // bos_token + '[INST] ' + content.strip() + ' [/INST]'
            if (t->with_bos) put(b, t->bos_token);
            put(b, "[INST] ");
            put_span(b, stripped);
            put(b, " [/INST]");
        } else if (is(&m[i], "assistant")) {
            // ' '  + content.strip() + ' ' + eos_token
            put(b, " ");
            put_span(b, stripped);
            put(b, " ");
            put(b, t->eos_token);
        }
        free(content.s);
    }
    return MOE_OK;
}

/* Mistral's [INST] templates differ in a handful of choices. */
enum { SYSTEM_REFUSED, SYSTEM_FIRST_USER, SYSTEM_LAST_USER, SYSTEM_IN_PLACE };
enum { ALTERNATION_NONE, ALTERNATION_INLINE, ALTERNATION_FIRST_SKIPPING_TOOLS };

typedef struct {
    const char *open, *close;   /* around a user message's content */
    const char *reply;          /* before an assistant message's content */
    int trim_reply;             /* the content | trim */
    int system;                 /* where a first system message goes */
    int alternation;            /* how the roles are checked */
    const char *alternate, *roles; /* what the template raises */
} inst_template;

static const inst_template INST[] = {
    [MOE_CHAT_MISTRAL] = { "[INST] ", " [/INST]", "", 0, SYSTEM_REFUSED, ALTERNATION_INLINE, ALTERNATE,
                           "Only user and assistant roles are supported!" },
    [MOE_CHAT_MISTRAL_V1] = { " [INST] ", " [/INST]", " ", 0, SYSTEM_FIRST_USER, ALTERNATION_INLINE,
                              ALTERNATE_AFTER_SYSTEM, ONLY_USER_ASSISTANT_AFTER_SYSTEM },
    [MOE_CHAT_MISTRAL_V3] = { "[INST] ", "[/INST]", " ", 1, SYSTEM_LAST_USER, ALTERNATION_FIRST_SKIPPING_TOOLS,
                              ALTERNATE_AFTER_SYSTEM, ONLY_USER_ASSISTANT_AFTER_SYSTEM },
    [MOE_CHAT_MISTRAL_V3_TEKKEN] = { "[INST]", "[/INST]", "", 0, SYSTEM_LAST_USER, ALTERNATION_FIRST_SKIPPING_TOOLS,
                                     ALTERNATE_AFTER_SYSTEM, ONLY_USER_ASSISTANT_AFTER_SYSTEM },
    [MOE_CHAT_MISTRAL_V7] = { "[INST] ", "[/INST]", " ", 0, SYSTEM_IN_PLACE, ALTERNATION_NONE, NULL,
                              "Only user, system and assistant roles are supported!" },
};

static moe_status render_inst(sbuf *b, const moe_chat_template *t, const moe_chat_message *m, int n)
{
    const inst_template *f = &INST[t->format];
    int first = 0;  /* messages[1:] when a first system message is split off */
    if (f->system == SYSTEM_FIRST_USER || f->system == SYSTEM_LAST_USER) {
        if (n == 0) return needs_a_message(t);
        first = is(&m[0], "system");
    }
    const char *system = first ? m[0].content : NULL;
    // v3: the roles checked in a loop of their own, before anything is written; tool messages skipped
    if (f->alternation == ALTERNATION_FIRST_SKIPPING_TOOLS)
        for (int i = first, k = 0; i < n; i++) {
            if (is(&m[i], "tool") || is(&m[i], "tool_results")) continue;
            if (is(&m[i], "user") != (k++ % 2 == 0)) return refuse(t, i, &m[i], f->alternate);
        }
    if (t->with_bos) put(b, t->bos_token);
    for (int i = first; i < n; i++) {
        if (f->alternation == ALTERNATION_INLINE && is(&m[i], "user") != ((i - first) % 2 == 0))
            return refuse(t, i, &m[i], f->alternate);
        if (is(&m[i], "user")) {
            put(b, f->open);
            if (system &&
                ((f->system == SYSTEM_FIRST_USER && i == first) || (f->system == SYSTEM_LAST_USER && i == n - 1))) {
                put(b, system);
                put(b, "\n\n");
            }
            put(b, m[i].content);
            put(b, f->close);
        } else if (is(&m[i], "system") && f->system == SYSTEM_IN_PLACE) {
            put(b, "[SYSTEM_PROMPT] ");
            put(b, m[i].content);
            put(b, "[/SYSTEM_PROMPT]");
        } else if (is(&m[i], "assistant")) {
            put(b, f->reply);
            put_span(b, f->trim_reply ? py_strip(whole(m[i].content)) : whole(m[i].content));
            put(b, t->eos_token);
        } else if (f->alternation == ALTERNATION_FIRST_SKIPPING_TOOLS &&
                   (is(&m[i], "tool") || is(&m[i], "tool_results"))) {
            // [TOOL_RESULTS] needs the message's tool_call_id, which moe's messages do not carry
            return refuse(t, i, &m[i], "Tool call IDs should be alphanumeric strings with length 9!");
        } else {
            return refuse(t, i, &m[i], f->roles);
        }
    }
    return MOE_OK;
}

static moe_status check(const moe_chat_template *t)
{
    if (!t || (unsigned)t->format >= NUM_FORMATS || !t->bos_token || !t->eos_token)
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
    switch (t->format) {
    case MOE_CHAT_TULU: render_tulu(&b, t, msgs, n, add_generation_prompt); break;
    case MOE_CHAT_CHATML: render_chatml(&b, t, msgs, n, add_generation_prompt); break;
    case MOE_CHAT_LLAMA3: render_llama3(&b, t, msgs, n, add_generation_prompt); break;
    case MOE_CHAT_QWEN3: st = render_qwen3(&b, t, msgs, n, add_generation_prompt); break;
    case MOE_CHAT_LLAMA2: st = render_llama2(&b, t, msgs, n); break;
    default: st = render_inst(&b, t, msgs, n); break;
    }
    if (st != MOE_OK) {
        free(b.s);
        *out = NULL;
        return st;
    }
    return finish(&b, out);
}

/* Stands for a reply's content when a later turn is rendered: no template
 * strips or splits it, and none of the template's strings holds it — a
 * checkpoint's bos_token may hold anything, so the first of
 * "\x01moe-reply-N\x01" that none of them holds is taken (the turn is cut
 * at the marker's first occurrence, and only those strings come before it). */
static void reply_marker(const moe_chat_template *t, char *buf, size_t n)
{
    const char *strings[3] = { t->bos_token, t->eos_token, t->default_system };
    for (unsigned k = 0;; k++) {
        snprintf(buf, n, "\x01moe-reply-%u\x01", k);
        int held = 0;
        for (int i = 0; i < 3; i++) held |= strings[i] && strstr(strings[i], buf) != NULL;
        if (!held) return;
    }
}

moe_status moe_chat_template_turn(const moe_chat_template *t, int first, const char *system, const char *user,
                                  char **out)
{
    moe_status st = check(t);
    if (st != MOE_OK) return st;
    if (!user || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: no user message");
    if (first) {
        moe_chat_message msgs[2];
        int n = 0;
        if (system) msgs[n++] = (moe_chat_message){ "system", system };
        msgs[n++] = (moe_chat_message){ "user", user };
        return moe_chat_template_render(t, msgs, n, 1, out);
    }
    // what the template writes after a reply's content, up to the end of the next generation prompt
    char reply[32];
    reply_marker(t, reply, sizeof reply);
    moe_chat_message msgs[3] = { { "user", "" }, { "assistant", reply }, { "user", user } };
    char *text;
    if ((st = moe_chat_template_render(t, msgs, 3, 1, &text)) != MOE_OK) return st;
    const char *cut = strstr(text, reply);
    if (!cut) {
        free(text);
        return moe_error_set(MOE_ERR_INVALID_ARG, "the %s chat template does not write an assistant's content",
                             NAMES[t->format]);
    }
    cut += strlen(reply);
    memmove(text, cut, strlen(cut) + 1);
    *out = text;
    return MOE_OK;
}

const char *moe_chat_template_end_of_turn(const moe_chat_template *t)
{
    switch (t->format) {
    case MOE_CHAT_CHATML:
    case MOE_CHAT_QWEN3: return "<|im_end|>";
    case MOE_CHAT_LLAMA3: return "<|eot_id|>";
    default: return t->eos_token;
    }
}
