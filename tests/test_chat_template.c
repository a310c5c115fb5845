/* tests/test_chat_template.c — the chat templates moe renders without a
 * Jinja engine, against what their Jinja source renders. Every expected
 * string below was written out by hand from the templates' source, which
 * the fixtures carry as checkpoints do (tests/fixtures/text/
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
 * Also: recognising templates (and refusing look-alikes), the turn-by-turn
 * texts a KV-cached chat prefills adding up to the whole rendering, and the
 * readers of tokenizer_config.json and generation_config.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/chat_template.h"
#include "engine/text.h"
#include "io/generation_config.h"
#include "io/tokenizer_config.h"

#define TEXTFIX MOE_SOURCE_DIR "/tests/fixtures/text"

static const moe_chat_template TULU = { MOE_CHAT_TULU, 1, "<|endoftext|>", "<|endoftext|>" };
static const moe_chat_template CHATML = { MOE_CHAT_CHATML, 0, "", "<|im_end|>" };
static const moe_chat_template LLAMA3 = { MOE_CHAT_LLAMA3, 1, "<|begin_of_text|>", "<|eot_id|>" };

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
    moe_chat_template plain = { MOE_CHAT_TULU, 0, "<|endoftext|>", "|||IP_ADDRESS|||" };
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
    moe_chat_format f;
    int bos = -1;
    assert_int_equal(moe_chat_format_detect(jinja, &f, &bos), MOE_OK);
    assert_int_equal(f, want);
    assert_int_equal(bos, want_bos);
}

static void expect_unknown(const char *jinja)
{
    moe_chat_format f;
    int bos;
    assert_int_equal(moe_chat_format_detect(jinja, &f, &bos), MOE_ERR_UNSUPPORTED);
    assert_non_null(strstr(moe_last_error(), "none that moe knows"));
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

static void checkpoint_templates_are_recognised(void **state)
{
    (void)state;
    char *tulu = fixture_template("tokenizer_config_tulu.json"), *chatml = fixture_template("tokenizer_config_chatml.json"),
         *llama3 = fixture_template("tokenizer_config_llama3.json"), *zephyr = fixture_template("tokenizer_config_zephyr.json");
    expect_detect(tulu, MOE_CHAT_TULU, 1);
    expect_detect(chatml, MOE_CHAT_CHATML, 0);
    expect_detect(llama3, MOE_CHAT_LLAMA3, 1);
    // zephyr writes <|user|> and <|assistant|> too, but follows the user's content with eos_token
    expect_unknown(zephyr);
    // Tulu without {{ bos_token }} (as Falcon3 writes it)
    expect_detect(strstr(tulu, "{% for"), MOE_CHAT_TULU, 0);
    // Phi-3: <|user|> ... <|end|>
    expect_unknown("{% for message in messages %}{% if message['role'] == 'user' %}{{'<|user|>\n' + message['content'] "
                   "+ '<|end|>\n' + '<|assistant|>\n'}}{% endif %}{% endfor %}");
    // Mistral's [INST]
    expect_unknown("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
                   "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}");
    expect_unknown("");
    // Qwen-style ChatML with a default system message: ChatML (the default is not reproduced)
    expect_detect("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
                  "system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + "
                  "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}",
                  MOE_CHAT_CHATML, 0);
    // Llama-3.1's begins {{- bos_token }} and writes the same headers
    expect_detect("{{- bos_token }}\n{%- if custom_tools is defined %}{%- set tools = custom_tools %}{%- endif %}"
                  "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: December "
                  "2023\\n\" }}{{- \"<|eot_id|>\" }}",
                  MOE_CHAT_LLAMA3, 1);
    free(tulu);
    free(chatml);
    free(llama3);
    free(zephyr);
}

static void names_choose_a_format(void **state)
{
    (void)state;
    moe_chat_format f;
    assert_int_equal(moe_chat_format_from_name("tulu", &f), MOE_OK);
    assert_int_equal(f, MOE_CHAT_TULU);
    assert_int_equal(moe_chat_format_from_name("chatml", &f), MOE_OK);
    assert_int_equal(f, MOE_CHAT_CHATML);
    assert_int_equal(moe_chat_format_from_name("llama3", &f), MOE_OK);
    assert_int_equal(f, MOE_CHAT_LLAMA3);
    assert_int_equal(moe_chat_format_from_name("vicuna", &f), MOE_ERR_INVALID_ARG);
    assert_string_equal(moe_last_error(), "unknown chat template 'vicuna' (known: tulu, chatml, llama3)");
    assert_int_equal(moe_chat_format_default_bos(MOE_CHAT_TULU), 1);
    assert_int_equal(moe_chat_format_default_bos(MOE_CHAT_CHATML), 0);
    assert_int_equal(moe_chat_format_default_bos(MOE_CHAT_LLAMA3), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(moe_chat_format_from_name(moe_chat_format_name((moe_chat_format)i), &f), MOE_OK);
        assert_int_equal(f, i);
    }
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
        cmocka_unit_test(names_choose_a_format),
        cmocka_unit_test(tokenizer_config_fields),
        cmocka_unit_test(jinja_file_is_the_template),
        cmocka_unit_test(generation_config_eos),
        cmocka_unit_test(stop_ids_are_the_union),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
