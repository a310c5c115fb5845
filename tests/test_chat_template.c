/* tests/test_chat_template.c — the chat templates moe renders without a
 * Jinja engine, against what their Jinja source renders.
 *
 * Every family against jinja2: tests/fixtures/text/chat_renderings.json holds
 * what jinja2 (as transformers' apply_chat_template(..., tokenize=False) runs
 * it) renders from the templates of tests/fixtures/text/tokenizer_config_*.json
 * for many conversations, with and without the generation prompt, Qwen3's
 * with enable_thinking undefined, false and true (or the error the template
 * raises), and the texts of a KV-cached chat's turns
 * (scripts/fixtures/make_text_fixtures.py). Each template file is recognised
 * here as the format the fixture names, then every case is rendered and
 * compared byte for byte.
 *
 * Besides, by hand, from the templates' source (tests/fixtures/text/
 * tokenizer_config_{tulu,chatml,llama3}.json: OLMoE-1B-7B-0924-Instruct's
 * Tulu template, the ChatML template, Meta-Llama-3-8B-Instruct's template):
 *
 *   tulu    {{ bos_token }}{% for message in messages %}
 *             {% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}
 *             {% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}
 *             {% elif message['role'] == 'assistant' %}{% if not loop.last %}
 *               {{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}
 *             {% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}
 *             {% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}
 *   chatml  {% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']
 *             + '<|im_end|>' + '\n'}}{% endfor %}
 *             {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
 *   llama3  {% set loop_messages = messages %}{% for message in loop_messages %}
 *             {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'
 *               + message['content'] | trim + '<|eot_id|>' %}
 *             {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}
 *             {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
 *
 * (the whitespace between tags above is layout here, not in the templates).
 * Also: recognising templates (and refusing look-alikes and variants moe
 * does not render), the turn-by-turn texts a KV-cached chat prefills adding
 * up to the whole rendering (or, where a template re-renders history,
 * keeping what was cached), and the readers of tokenizer_config.json and
 * generation_config.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/chat_template.h"
#include "engine/text.h"
#include "io/generation_config.h"
#include "io/tokenizer_config.h"

#define TEXTFIX MOE_SOURCE_DIR "/tests/fixtures/text"

static const moe_chat_template TULU = { .format = MOE_CHAT_TULU, .with_bos = 1, .bos_token = "<|endoftext|>",
                                        .eos_token = "<|endoftext|>" };
static const moe_chat_template CHATML = { .format = MOE_CHAT_CHATML, .bos_token = "", .eos_token = "<|im_end|>" };
static const moe_chat_template LLAMA3 = { .format = MOE_CHAT_LLAMA3, .with_bos = 1, .bos_token = "<|begin_of_text|>",
                                          .eos_token = "<|eot_id|>" };

static void expect_render(const moe_chat_template *t, const moe_chat_message *m, int n, int gen, const char *want)
{
    char *got = NULL;
    assert_int_equal(moe_chat_template_render(t, m, n, gen, &got), MOE_OK);
    assert_string_equal(got, want);
    free(got);
}

/* ---- rendering ---- */

static void tulu_renders_as_its_jinja(void **state)
{
    (void)state;
    moe_chat_message one[] = { { "user", "Hi" } };
    expect_render(&TULU, one, 1, 1, "<|endoftext|><|user|>\nHi\n<|assistant|>\n");
    expect_render(&TULU, one, 1, 0, "<|endoftext|><|user|>\nHi\n");
    moe_chat_message conv[] = { { "system", "Be brief." }, { "user", "Hi" }, { "assistant", "Hello!" }, { "user", "Bye" } };
    expect_render(&TULU, conv, 4, 1,
                  "<|endoftext|><|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>\n"
                  "<|user|>\nBye\n<|assistant|>\n");
    // an assistant message that is last: eos_token and no newline (then the generation prompt, if asked)
    expect_render(&TULU, conv + 1, 2, 0, "<|endoftext|><|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>");
    expect_render(&TULU, conv + 1, 2, 1, "<|endoftext|><|user|>\nHi\n<|assistant|>\nHello!<|endoftext|><|assistant|>\n");
    // content as it is (no trim); an empty conversation is bos_token alone (the prompt is inside the loop)
    moe_chat_message padded[] = { { "user", "  two  words \n" } };
    expect_render(&TULU, padded, 1, 1, "<|endoftext|><|user|>\n  two  words \n\n<|assistant|>\n");
    expect_render(&TULU, NULL, 0, 1, "<|endoftext|>");
    // a role the template does not name writes nothing, but loop.last still adds the prompt
    moe_chat_message tool[] = { { "user", "Hi" }, { "tool", "42" } };
    expect_render(&TULU, tool, 2, 1, "<|endoftext|><|user|>\nHi\n<|assistant|>\n");
    // a checkpoint whose template does not write bos_token, and another eos_token
    moe_chat_template plain = { .format = MOE_CHAT_TULU, .bos_token = "<|endoftext|>", .eos_token = "|||IP_ADDRESS|||" };
    expect_render(&plain, conv + 1, 3, 1, "<|user|>\nHi\n<|assistant|>\nHello!|||IP_ADDRESS|||\n<|user|>\nBye\n<|assistant|>\n");
}

static void chatml_renders_as_its_jinja(void **state)
{
    (void)state;
    moe_chat_message conv[] = { { "system", "S" }, { "user", "Hi" }, { "assistant", "Hello!" }, { "user", "Bye" } };
    expect_render(&CHATML, conv, 2, 1,
                  "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    expect_render(&CHATML, conv + 1, 3, 0,
                  "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                  "<|im_start|>user\nBye<|im_end|>\n");
    expect_render(&CHATML, NULL, 0, 1, "<|im_start|>assistant\n");
    moe_chat_message any[] = { { "tool", " 42 " } };
    expect_render(&CHATML, any, 1, 0, "<|im_start|>tool\n 42 <|im_end|>\n");
}

static void llama3_renders_as_its_jinja(void **state)
{
    (void)state;
    moe_chat_message one[] = { { "user", "Hi" } };
    expect_render(&LLAMA3, one, 1, 1,
                  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    // content | trim: Python's whitespace (here U+3000 and U+00A0) off both ends, none inside
    moe_chat_message conv[] = { { "system", " Be brief.\n" }, { "user", "Hi  there" }, { "assistant", " Hello! " },
                                { "user", "\tBye\xe3\x80\x80\xc2\xa0" } };
    expect_render(&LLAMA3, conv, 4, 1,
                  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nHi  there<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\n");
    // bos_token only before the first message: an empty conversation has none
    expect_render(&LLAMA3, NULL, 0, 1, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    expect_render(&LLAMA3, NULL, 0, 0, "");
    moe_chat_message odd[] = { { "user", "   " }, { "user", "\xc3\xa9 \xe2\x80\x83" } };  /* é, EM SPACE */
    expect_render(&LLAMA3, odd, 2, 0,
                  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\n\xc3\xa9<|eot_id|>");
}

/* The texts a KV-cached chat prefills, turn after turn, joined with the
 * answers, are the rendering of the whole conversation. */
static void turns_add_up_to_the_rendering(void **state)
{
    (void)state;
    const moe_chat_template *all[] = { &TULU, &CHATML, &LLAMA3 };
    const char *users[] = { "first question", "second, with\nlines", "third" };
    const char *answers[] = { "one", "two\n\ntwo", "three" };
    for (int t = 0; t < 3; t++)
        for (int with_system = 0; with_system < 2; with_system++) {
            moe_chat_message msgs[8];
            int n = 0;
            if (with_system) msgs[n++] = (moe_chat_message){ "system", "You are terse." };
            char joined[4096] = "";
            for (int k = 0; k < 3; k++) {
                char *turn;
                assert_int_equal(moe_chat_template_turn(all[t], k == 0, with_system ? "You are terse." : NULL,
                                                        users[k], &turn), MOE_OK);
                strcat(joined, turn);
                free(turn);
                msgs[n++] = (moe_chat_message){ "user", users[k] };
                expect_render(all[t], msgs, n, 1, joined);
                strcat(joined, answers[k]);
                msgs[n++] = (moe_chat_message){ "assistant", answers[k] };
            }
        }
    assert_string_equal(moe_chat_template_end_of_turn(&TULU), "<|endoftext|>");
    assert_string_equal(moe_chat_template_end_of_turn(&CHATML), "<|im_end|>");
    assert_string_equal(moe_chat_template_end_of_turn(&LLAMA3), "<|eot_id|>");
}

/* ---- recognising templates ---- */

static void expect_detect(const char *jinja, moe_chat_format want, int want_bos)
{
    moe_chat_template t = { 0 };
    assert_int_equal(moe_chat_template_detect(jinja, &t), MOE_OK);
    assert_int_equal(t.format, want);
    assert_int_equal(t.with_bos, want_bos);
}

static void expect_unknown(const char *jinja, const char *why)
{
    moe_chat_template t = { 0 };
    assert_int_equal(moe_chat_template_detect(jinja, &t), MOE_ERR_UNSUPPORTED);
    assert_non_null(strstr(moe_last_error(), "the chat template is none that moe knows"));
    if (why && !strstr(moe_last_error(), why)) fail_msg("'%s' does not say '%s'", moe_last_error(), why);
}

static char *read_fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", TEXTFIX, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *text = calloc(1, 65536);
    size_t n = fread(text, 1, 65535, f);
    fclose(f);
    text[n] = '\0';
    return text;
}

static char *fixture_template(const char *name)
{
    char *text = read_fixture(name);
    moe_tokenizer_config tc;
    assert_int_equal(moe_tokenizer_config_parse(text, name, &tc), MOE_OK);
    char *tpl = strdup(tc.chat_template);
    moe_tokenizer_config_free(&tc);
    free(text);
    return tpl;
}

/* s with its one occurrence of `from` replaced by `to` (malloc'd). */
static char *replaced(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    if (!at || strstr(at + 1, from)) fail_msg("'%s' is not in the template once", from);
    size_t n = strlen(s) - strlen(from) + strlen(to);
    char *r = malloc(n + 1);
    snprintf(r, n + 1, "%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
    return r;
}

static void checkpoint_templates_are_recognised(void **state)
{
    (void)state;
    // (every template of chat_renderings.json is recognised there, as the format it names)
    char *tulu = fixture_template("tokenizer_config_tulu.json");
    char *zephyr = fixture_template("tokenizer_config_zephyr.json");
    // zephyr writes <|user|> and <|assistant|> too, but follows the user's content with eos_token
    expect_unknown(zephyr, "it recognises");
    // Tulu without {{ bos_token }} (as Falcon3 writes it)
    expect_detect(strstr(tulu, "{% for"), MOE_CHAT_TULU, 0);
    // Phi-3: <|user|> ... <|end|>
    expect_unknown("{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\n' + message['content'] "
                   "+ '<|end|>\n' + '<|assistant|>\n'}}{% endif %}{% endfor %}", NULL);
    expect_unknown("", NULL);
    // Llama-3.1's begins {{- bos_token }} and writes the same headers
    expect_detect("{{- bos_token }}\n{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}"
                  "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December "
                  "2023\\n\" }}{{- \"<|eot_id|>\" }}",
                  MOE_CHAT_LLAMA3, 1);
    free(tulu);
    free(zephyr);
}

/* The whitespace between Jinja tokens, the quotes of a literal and a
 * newline typed into one (or written \n) do not change what a template
 * writes, and do not change what moe recognises. */
static void recognition_ignores_layout(void **state)
{
    (void)state;
    // Qwen2's with newlines typed into its literals: ChatML, and its default system message
    moe_chat_template t = { 0 };
    assert_int_equal(moe_chat_template_detect(
                         "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                         "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
                         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                         "{% endfor %}", &t), MOE_OK);
    assert_int_equal(t.format, MOE_CHAT_CHATML);
    assert_string_equal(t.default_system, "You are a helpful assistant");
    // Mixtral's later template on one line, with double quotes, no whitespace control and a comment
    expect_detect("{# v1 #}{% if messages[0][\"role\"] == \"system\" %}"
                  "{% set system_message = messages[0][\"content\"] %}{% set loop_messages = messages[1:] %}"
                  "{% else %}{% set loop_messages = messages %}{% endif %}"
                  "{{ bos_token }}{% for message in loop_messages %}"
                  "{% if (message[\"role\"] == \"user\") != (loop.index0 % 2 == 0) %}{{ raise_exception(\"...\") }}"
                  "{% endif %}{% if message[\"role\"] == \"user\" %}{% if loop.first and system_message is defined %}"
                  "{{ \" [INST] \" + system_message + \"\\n\\n\" + message[\"content\"] + \" [/INST]\" }}{% else %}"
                  "{{ \" [INST] \" + message[\"content\"] + \" [/INST]\" }}{% endif %}"
                  "{% elif message[\"role\"] == \"assistant\" %}{{ \" \" + message[\"content\"] + eos_token }}"
                  "{% else %}{{ raise_exception(\"...\") }}{% endif %}{% endfor %}",
                  MOE_CHAT_MISTRAL_V1, 1);
}

/* Variants of the families that render otherwise are refused, not
 * rendered in a neighbour's form. */
static void variants_are_refused(void **state)
{
    (void)state;
    char *mixtral = fixture_template("tokenizer_config_mixtral.json");
    char *qwen3 = fixture_template("tokenizer_config_qwen3.json");
    char *qwen2 = fixture_template("tokenizer_config_qwen2.json");
    char *llama2 = fixture_template("tokenizer_config_llama2.json");
    char *v3 = fixture_template("tokenizer_config_mistral_v3.json");
    char *v7 = fixture_template("tokenizer_config_mistral_v7.json");
    char *v;
    // Mistral-7B-Instruct-v0.1's first template: a space after each eos_token
    expect_unknown(v = replaced(mixtral, "eos_token}}", "eos_token + ' ' }}"), "an [INST] template");
    free(v);
    // Mistral's [INST] without the alternation check
    expect_unknown("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
                   "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}"
                   "{% endfor %}", "an [INST] template");
    // the [INST] markers written as template text rather than literals
    expect_unknown("{% for message in messages %}[INST] {{ message['content'] }} [/INST]{% endfor %}",
                   "an [INST] template");
    // Llama-2's without the strip, Mistral v3's without the trim
    expect_unknown(v = replaced(llama2, "'[INST] ' + content.strip()", "'[INST] ' + content"), "an [INST] template");
    free(v);
    expect_unknown(v = replaced(v3, "message[\"content\"]|trim", "message[\"content\"]"), "an [INST] template");
    free(v);
    // v7 with a default system message of its own (Mistral Small 3's kind)
    char *dated = malloc(strlen(v7) + 128);
    sprintf(dated, "{%%- set default_system_message = \"You are Mistral Small 3.\" %%}%s", v7);
    expect_unknown(dated, "an [INST] template");
    free(dated);
    // a Qwen3 whose generation prompt opens the think block itself (Qwen3-2507 Thinking's kind), and one that
    // keeps every turn's reasoning: ChatML with <think>, but not Qwen3's
    expect_unknown(v = replaced(qwen3, "{{- '<|im_start|>assistant\\n' }}",
                                "{{- '<|im_start|>assistant\\n<think>\\n' }}"),
                   "writes <think>, but not as Qwen3's does");
    free(v);
    expect_unknown(v = replaced(qwen3, "loop.index0 > ns.last_query_index", "loop.index0 >= 0"),
                   "writes <think>, but not as Qwen3's does");
    free(v);
    // a default system message moe does not know
    expect_unknown(v = replaced(qwen2, "You are a helpful assistant", "You are a pirate"),
                   "a default system message moe does not know");
    free(v);
    free(mixtral);
    free(qwen3);
    free(qwen2);
    free(llama2);
    free(v3);
    free(v7);
}

static void names_choose_a_format(void **state)
{
    (void)state;
    moe_chat_format f;
    const char *names[] = { "tulu", "chatml", "llama3", "qwen3", "llama2", "mistral", "mistral-v1", "mistral-v3",
                            "mistral-v3-tekken", "mistral-v7" };
    char listed[256] = "";
    for (int i = 0; i < 10; i++) {
        assert_int_equal(moe_chat_format_from_name(names[i], &f), MOE_OK);
        assert_int_equal(f, i);
        assert_string_equal(moe_chat_format_name(f), names[i]);
        snprintf(listed + strlen(listed), sizeof listed - strlen(listed), "%s%s", i ? ", " : "", names[i]);
    }
    assert_string_equal(listed, MOE_CHAT_FORMAT_NAMES);
    assert_int_equal(moe_chat_format_from_name("vicuna", &f), MOE_ERR_INVALID_ARG);
    assert_string_equal(moe_last_error(), "unknown chat template 'vicuna' (known: " MOE_CHAT_FORMAT_NAMES ")");
    assert_int_equal(moe_chat_format_from_name("Mistral", &f), MOE_ERR_INVALID_ARG);
    assert_string_equal(moe_chat_format_name((moe_chat_format)10), "?");
    // the families' reference templates: only ChatML's and Qwen3's do not write bos_token
    for (int i = 0; i < 10; i++)
        assert_int_equal(moe_chat_format_default_bos((moe_chat_format)i), i != MOE_CHAT_CHATML && i != MOE_CHAT_QWEN3);
}

/* ---- every family against jinja2 ---- */

static json_object *renderings(void)
{
    static json_object *root;
    if (!root) root = json_object_from_file(TEXTFIX "/chat_renderings.json");
    assert_non_null(root);
    return root;
}

static json_object *field(json_object *o, const char *key)
{
    json_object *v = NULL;
    json_object_object_get_ex(o, key, &v);
    return v;
}

/* A string field; NULL when absent or null. */
static const char *text_field(json_object *o, const char *key)
{
    json_object *v = field(o, key);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* The template the fixture names, recognised from its tokenizer_config
 * file as the format the fixture says, with that file's bos and eos. */
static void load_template(const char *name, moe_chat_template *t, moe_tokenizer_config *tc)
{
    json_object *entry = field(field(renderings(), "templates"), name);
    assert_non_null(entry);
    const char *file = text_field(entry, "file");
    char *text = read_fixture(file);
    assert_int_equal(moe_tokenizer_config_parse(text, file, tc), MOE_OK);
    free(text);
    *t = (moe_chat_template){ 0 };
    if (moe_chat_template_detect(tc->chat_template, t) != MOE_OK) fail_msg("%s: %s", file, moe_last_error());
    moe_chat_format want;
    assert_int_equal(moe_chat_format_from_name(text_field(entry, "format"), &want), MOE_OK);
    if (t->format != want) fail_msg("%s is recognised as %s, not %s", file, moe_chat_format_name(t->format),
                                    moe_chat_format_name(want));
    assert_int_equal(t->with_bos, json_object_get_boolean(field(entry, "with_bos")));
    const char *system = text_field(entry, "default_system");
    if (system) assert_string_equal(t->default_system, system);
    else assert_null(t->default_system);
    t->bos_token = tc->bos_token ? tc->bos_token : "";
    t->eos_token = tc->eos_token ? tc->eos_token : "";
}

/* enable_thinking: false in the case → no_think. */
static int no_think(json_object *c)
{
    json_object *v = field(c, "enable_thinking");
    return v && !json_object_get_boolean(v);
}

static void fail_case(const char *what, int i, json_object *c, const char *got)
{
    fail_msg("%s %d: %s\nmoe: %s", what, i, json_object_to_json_string_ext(c, JSON_C_TO_STRING_NOSLASHESCAPE),
             got ? got : moe_last_error());
}

/* What the template refuses, moe refuses, with the template's message. */
static void expect_refusal(moe_status st, json_object *c, const char *what, int i)
{
    const char *error = text_field(c, "error");
    if (st != MOE_ERR_INVALID_ARG) fail_case(what, i, c, "(no error)");
    if (json_object_get_boolean(field(c, "raised")) && !strstr(moe_last_error(), error)) fail_case(what, i, c, NULL);
}

static void every_template_renders_as_jinja2(void **state)
{
    (void)state;
    json_object *cases = field(renderings(), "renderings");
    int n = (int)json_object_array_length(cases), texts = 0, errors = 0;
    const char *current = NULL;
    moe_chat_template t;
    moe_tokenizer_config tc = { 0 };
    for (int i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(cases, (size_t)i), *msgs = field(c, "messages");
        const char *name = text_field(c, "template");
        if (!current || strcmp(current, name)) {
            if (current) moe_tokenizer_config_free(&tc);
            load_template(current = name, &t, &tc);
        }
        t.no_think = no_think(c);
        moe_chat_message m[16];
        int nm = (int)json_object_array_length(msgs);
        assert_true(nm <= 16);
        for (int k = 0; k < nm; k++) {
            json_object *pair = json_object_array_get_idx(msgs, (size_t)k);
            m[k] = (moe_chat_message){ json_object_get_string(json_object_array_get_idx(pair, 0)),
                                       json_object_get_string(json_object_array_get_idx(pair, 1)) };
        }
        char *got = NULL;
        int gen = json_object_get_boolean(field(c, "add_generation_prompt"));
        moe_status st = moe_chat_template_render(&t, m, nm, gen, &got);
        const char *want = text_field(c, "text");
        if (want) {
            if (st != MOE_OK || strcmp(got, want)) fail_case("rendering", i, c, got);
            texts++;
        } else {
            expect_refusal(st, c, "rendering", i);
            assert_null(got);
            errors++;
        }
        free(got);
    }
    moe_tokenizer_config_free(&tc);
    assert_int_equal(texts + errors, n);
    assert_true(texts >= 500 && errors >= 80);
}

/* The texts of a KV-cached chat's turns: jinja2's, and joined with the
 * replies the rendering of the whole conversation, except where the
 * template re-renders history (the fixture's generator checks those differ
 * only as chat_template.h says). */
static void every_template_turns_as_jinja2(void **state)
{
    (void)state;
    json_object *cases = field(renderings(), "turns");
    int n = (int)json_object_array_length(cases), differ = 0;
    for (int i = 0; i < n; i++) {
        json_object *c = json_object_array_get_idx(cases, (size_t)i);
        moe_chat_template t;
        moe_tokenizer_config tc;
        load_template(text_field(c, "template"), &t, &tc);
        t.no_think = no_think(c);
        const char *system = text_field(c, "system"), *users[3], *contents[2], *replies[2];
        for (int k = 0; k < 3; k++)
            users[k] = json_object_get_string(json_object_array_get_idx(field(c, "users"), (size_t)k));
        for (int k = 0; k < 2; k++) {
            contents[k] = json_object_get_string(json_object_array_get_idx(field(c, "contents"), (size_t)k));
            replies[k] = json_object_get_string(json_object_array_get_idx(field(c, "replies"), (size_t)k));
        }
        char *text = NULL, joined[2048] = "";
        if (text_field(c, "error")) {
            expect_refusal(moe_chat_template_turn(&t, 1, system, users[0], &text), c, "turn", i);
            moe_tokenizer_config_free(&tc);
            continue;
        }
        for (int k = 0; k < 3; k++) {
            if (moe_chat_template_turn(&t, k == 0, system, users[k], &text) != MOE_OK) fail_case("turn", i, c, NULL);
            const char *want = json_object_get_string(json_object_array_get_idx(field(c, "texts"), (size_t)k));
            if (strcmp(text, want)) fail_case("turn", i, c, text);
            strcat(joined, text);
            if (k < 2) strcat(joined, replies[k]);
            free(text);
        }
        moe_chat_message m[6];
        int nm = 0;
        if (system) m[nm++] = (moe_chat_message){ "system", system };
        for (int k = 0; k < 3; k++) {
            m[nm++] = (moe_chat_message){ "user", users[k] };
            if (k < 2) m[nm++] = (moe_chat_message){ "assistant", contents[k] };
        }
        assert_int_equal(moe_chat_template_render(&t, m, nm, 1, &text), MOE_OK);
        assert_string_equal(text, text_field(c, "rendering"));
        if (json_object_get_boolean(field(c, "joined_is_rendering"))) assert_string_equal(joined, text);
        else assert_string_not_equal(joined, text), differ++;
        free(text);
        moe_tokenizer_config_free(&tc);
    }
    assert_true(n >= 30 && differ >= 6);
}

static char *joined_turns(const moe_chat_template *t, const char *system, const char *const *users,
                          const char *const *replies, int n)
{
    char *all = calloc(1, 4096), *text;
    for (int k = 0; k < n; k++) {
        assert_int_equal(moe_chat_template_turn(t, k == 0, system, users[k], &text), MOE_OK);
        strcat(all, text);
        free(text);
        if (k < n - 1) strcat(all, replies[k]);
    }
    return all;
}

/* Where a template renders the history otherwise once a message follows,
 * the cache keeps what it was given: Qwen3's earlier reasoning (and the
 * empty think block of enable_thinking=false), and Mistral v3's system
 * message before the first user message. */
static void kv_cache_keeps_what_the_template_rewrites(void **state)
{
    (void)state;
    moe_chat_template t;
    moe_tokenizer_config tc;
    char *cached, *rendered;
    const char *users[] = { "Q1", "Q2" }, *replies[] = { "<think>\nR1\n</think>\n\nA1" };
    load_template("qwen3", &t, &tc);
    cached = joined_turns(&t, NULL, users, replies, 2);
    assert_string_equal(cached, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n<think>\nR1\n</think>\n\nA1"
                                "<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
    moe_chat_message conv[] = { { "user", "Q1" }, { "assistant", replies[0] }, { "user", "Q2" } };
    assert_int_equal(moe_chat_template_render(&t, conv, 3, 1, &rendered), MOE_OK);
    assert_string_equal(rendered, "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                                  "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n");
    free(cached);
    free(rendered);
    t.no_think = 1;
    const char *plain[] = { "A1" };
    cached = joined_turns(&t, "S", users, plain, 2);
    assert_string_equal(cached, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n"
                                "<|im_start|>assistant\n<think>\n\n</think>\n\nA1<|im_end|>\n"
                                "<|im_start|>user\nQ2<|im_end|>\n"
                                "<|im_start|>assistant\n<think>\n\n</think>\n\n");
    free(cached);
    moe_tokenizer_config_free(&tc);
    load_template("mistral-v3", &t, &tc);
    const char *answer[] = { " A1" };
    cached = joined_turns(&t, "S", users, answer, 2);
    assert_string_equal(cached, "<s>[INST] S\n\nQ1[/INST] A1</s>[INST] Q2[/INST]");
    moe_chat_message sys_conv[] = { { "system", "S" }, { "user", "Q1" }, { "assistant", "A1" }, { "user", "Q2" } };
    assert_int_equal(moe_chat_template_render(&t, sys_conv, 4, 1, &rendered), MOE_OK);
    assert_string_equal(rendered, "<s>[INST] Q1[/INST] A1</s>[INST] S\n\nQ2[/INST]");
    free(cached);
    free(rendered);
    moe_tokenizer_config_free(&tc);
    // Mixtral's first template takes no system message: the first turn says so
    load_template("mixtral", &t, &tc);
    assert_int_equal(moe_chat_template_turn(&t, 1, "S", "Q1", &cached), MOE_ERR_INVALID_ARG);
    assert_string_equal(moe_last_error(), "the mistral chat template refuses message 0 (role 'system'): Conversation "
                                          "roles must alternate user/assistant/user/assistant/... (this template takes "
                                          "no system message)");
    assert_int_equal(moe_chat_template_turn(&t, 0, "S", "Q2", &cached), MOE_OK);  /* system: only when first */
    assert_string_equal(cached, "</s>[INST] Q2 [/INST]");
    free(cached);
    moe_tokenizer_config_free(&tc);
}

/* ---- tokenizer_config.json ---- */

static void tokenizer_config_fields(void **state)
{
    (void)state;
    moe_tokenizer_config tc;
    // bos_token as an AddedToken object (Llama-3's), eos_token as a string; a null bos_token
    assert_int_equal(moe_tokenizer_config_load_dir(TEXTFIX, &tc), MOE_OK);  /* no tokenizer_config.json there */
    assert_int_equal(tc.found, 0);
    char *text = read_fixture("tokenizer_config_llama3.json");
    assert_int_equal(moe_tokenizer_config_parse(text, "llama3.json", &tc), MOE_OK);
    assert_string_equal(tc.bos_token, "<|begin_of_text|>");
    assert_string_equal(tc.eos_token, "<|eot_id|>");
    moe_tokenizer_config_free(&tc);
    free(text);
    text = read_fixture("tokenizer_config_chatml.json");
    assert_int_equal(moe_tokenizer_config_parse(text, "chatml.json", &tc), MOE_OK);
    assert_null(tc.bos_token);
    assert_string_equal(tc.eos_token, "<|im_end|>");
    moe_tokenizer_config_free(&tc);
    free(text);
    assert_int_equal(moe_tokenizer_config_load_dir(MOE_SOURCE_DIR "/tests/fixtures/olmoe/base", &tc), MOE_OK);
    assert_int_equal(tc.found, 0);
    assert_null(tc.chat_template);
    moe_tokenizer_config_free(&tc);
    assert_int_equal(moe_tokenizer_config_parse("{\"bos_token\": {\"content\": \"<s>\", \"lstrip\": false}, "
                                                "\"eos_token\": \"</s>\", \"chat_template\": null}", "tc.json", &tc),
                     MOE_OK);
    assert_string_equal(tc.bos_token, "<s>");
    assert_string_equal(tc.eos_token, "</s>");
    assert_null(tc.chat_template);
    moe_tokenizer_config_free(&tc);
    // a list of named templates: the default one
    assert_int_equal(moe_tokenizer_config_parse("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, "
                                                "{\"name\": \"default\", \"template\": \"D\"}], \"bos_token\": null}",
                                                "tc.json", &tc), MOE_OK);
    assert_string_equal(tc.chat_template, "D");
    assert_string_equal(tc.template_origin, "tc.json");
    assert_null(tc.bos_token);
    moe_tokenizer_config_free(&tc);
    // errors name the file and the field
    assert_int_equal(moe_tokenizer_config_parse("{\"chat_template\": [{\"name\": \"x\", \"template\": \"T\"}]}",
                                                "tc.json", &tc), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(), "tc.json: field 'chat_template' lists templates but none named \"default\"");
    assert_int_equal(moe_tokenizer_config_parse("{\"chat_template\": 7}", "tc.json", &tc), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(), "tc.json: field 'chat_template' must be a string (got 7)");
    assert_int_equal(moe_tokenizer_config_parse("{\"eos_token\": 2}", "tc.json", &tc), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(), "tc.json: field 'eos_token' must be a string or {\"content\": string} (got 2)");
    assert_int_equal(moe_tokenizer_config_parse("{\"eos_token\": ", "tc.json", &tc), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "tc.json: not valid JSON"));
    assert_int_equal(moe_tokenizer_config_parse("[1]", "tc.json", &tc), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(), "tc.json: the top level is not a JSON object");
}

static char *make_dir(void)
{
    char *dir = strdup("/tmp/moe-test-chat-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void remove_dir(char *dir, const char *const *names)
{
    char path[512];
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
    free(dir);
}

/* chat_template.jinja (newer transformers write it beside the config) wins. */
static void jinja_file_is_the_template(void **state)
{
    (void)state;
    char *dir = make_dir();
    moe_tokenizer_config tc;
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": \"A\", \"eos_token\": \"E\"}");
    assert_int_equal(moe_tokenizer_config_load_dir(dir, &tc), MOE_OK);
    assert_string_equal(tc.chat_template, "A");
    assert_non_null(strstr(tc.template_origin, "/tokenizer_config.json"));
    moe_tokenizer_config_free(&tc);
    write_file(dir, "chat_template.jinja", "{{ '<|im_start|>' }}<|im_end|>\n");
    assert_int_equal(moe_tokenizer_config_load_dir(dir, &tc), MOE_OK);
    assert_string_equal(tc.chat_template, "{{ '<|im_start|>' }}<|im_end|>\n");
    assert_non_null(strstr(tc.template_origin, "/chat_template.jinja"));
    assert_string_equal(tc.eos_token, "E");
    moe_tokenizer_config_free(&tc);
    write_file(dir, "tokenizer_config.json", "{\"chat_template\": ");
    assert_int_equal(moe_tokenizer_config_load_dir(dir, &tc), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "/tokenizer_config.json: not valid JSON"));
    remove_dir(dir, (const char *const[]){ "tokenizer_config.json", "chat_template.jinja", NULL });
}

/* ---- generation_config.json and the stop ids ---- */

static void generation_config_eos(void **state)
{
    (void)state;
    moe_generation_config g;
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": 7}", "g.json", &g), MOE_OK);
    assert_int_equal(g.num_eos, 1);
    assert_int_equal(g.eos_ids[0], 7);
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": [128001, 128008, 128009, 128001]}", "g.json", &g),
                     MOE_OK);
    assert_int_equal(g.num_eos, 3);
    assert_int_equal(g.eos_ids[2], 128009);
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": null, \"bos_token_id\": 1}", "g.json", &g), MOE_OK);
    assert_int_equal(g.num_eos, 0);
    assert_int_equal(g.found, 1);
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": \"</s>\"}", "g.json", &g), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(),
                        "g.json: field 'eos_token_id' must be a token id or a list of token ids (got \"</s>\")");
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": [1, -2]}", "g.json", &g), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(), "g.json: field 'eos_token_id': element 1 (-2) is not a token id");
    assert_int_equal(moe_generation_config_parse("{\"eos_token_id\": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}",
                                                 "g.json", &g), MOE_ERR_UNSUPPORTED);
    assert_string_equal(moe_last_error(), "g.json: field 'eos_token_id' lists more than 16 ids");
    assert_int_equal(moe_generation_config_parse("{", "g.json", &g), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "g.json: not valid JSON"));
    // a directory without the file
    assert_int_equal(moe_generation_config_load_dir(MOE_SOURCE_DIR "/tests/fixtures/olmoe/base", &g), MOE_OK);
    assert_int_equal(g.found, 0);
}

/* Stop ids: config.json's EOS ids and generation_config.json's, each once. */
static void stop_ids_are_the_union(void **state)
{
    (void)state;
    char *dir = make_dir();
    int config_eos[] = { 250, 62 };
    moe_model_info info = { .num_eos = 2, .eos_ids = config_eos };
    moe_stop_ids s;
    assert_int_equal(moe_text_stop_ids(dir, &info, &s), MOE_OK);
    assert_int_equal(s.n, 2);
    write_file(dir, "generation_config.json", "{\"eos_token_id\": [245, 62]}");
    assert_int_equal(moe_text_stop_ids(dir, &info, &s), MOE_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.ids[0], 250);
    assert_int_equal(s.ids[1], 62);
    assert_int_equal(s.ids[2], 245);
    assert_true(moe_stop_ids_has(&s, 245));
    assert_false(moe_stop_ids_has(&s, 1));
    write_file(dir, "generation_config.json", "{\"eos_token_id\": {\"id\": 3}}");
    assert_int_equal(moe_text_stop_ids(dir, &info, &s), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "/generation_config.json: field 'eos_token_id' must be a token id"));
    remove_dir(dir, (const char *const[]){ "generation_config.json", NULL });
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tulu_renders_as_its_jinja),
        cmocka_unit_test(chatml_renders_as_its_jinja),
        cmocka_unit_test(llama3_renders_as_its_jinja),
        cmocka_unit_test(turns_add_up_to_the_rendering),
        cmocka_unit_test(checkpoint_templates_are_recognised),
        cmocka_unit_test(recognition_ignores_layout),
        cmocka_unit_test(variants_are_refused),
        cmocka_unit_test(names_choose_a_format),
        cmocka_unit_test(every_template_renders_as_jinja2),
        cmocka_unit_test(every_template_turns_as_jinja2),
        cmocka_unit_test(kv_cache_keeps_what_the_template_rewrites),
        cmocka_unit_test(tokenizer_config_fields),
        cmocka_unit_test(jinja_file_is_the_template),
        cmocka_unit_test(generation_config_eos),
        cmocka_unit_test(stop_ids_are_the_union),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
