/* tests/test_server_request.c — the OpenAI request bodies `moe serve`
 * reads: every field in its accepted forms, and a table of bad bodies,
 * each answered 400 naming the field at fault, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/request.h"

static moe_api_request parse_ok(moe_api_kind kind, const char *body)
{
    moe_api_request r;
    moe_api_error e;
    if (moe_api_request_parse(body, strlen(body), kind, &r, &e)) fail_msg("%s\n-> %d %s", body, e.status, e.message);
    return r;
}

static void chat_fields(void **state)
{
    (void)state;
    moe_api_request r = parse_ok(MOE_API_CHAT,
                                 "{\"model\":\"m\",\"messages\":[{\"role\":\"developer\",\"content\":\"Be brief.\"},"
                                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hel\"},{\"type\":\"text\","
                                 "\"text\":\"lo\"}]},{\"role\":\"assistant\",\"content\":null},{\"role\":\"user\","
                                 "\"content\":\"caf\\u00e9\"}],\"max_completion_tokens\":7,\"temperature\":0.5,"
                                 "\"top_p\":0.9,\"top_k\":-1,\"min_p\":0.05,\"seed\":-3,\"stop\":[\"\\n\\n\",\"\",\"END\"],"
                                 "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"n\":1,\"user\":\"x\","
                                 "\"presence_penalty\":0,\"logprobs\":false,\"tools\":[],\"response_format\":{\"type\":\"text\"}}");
    assert_string_equal(r.model, "m");
    assert_int_equal(r.n_messages, 4);
    assert_string_equal(r.messages[0].role, "system");   /* developer is system */
    assert_string_equal(r.messages[1].content, "Hello"); /* text parts joined */
    assert_string_equal(r.messages[2].content, "");      /* null content */
    assert_string_equal(r.messages[3].content, "caf\xc3\xa9");
    assert_int_equal(r.max_tokens, 7);
    assert_true(r.temperature == 0.5f && r.top_p == 0.9f && r.min_p == 0.05f);
    assert_int_equal(r.top_k, 0);
    assert_true(r.has_seed && r.seed == (uint64_t)-3);
    assert_int_equal(r.n_stop, 2);   /* the empty sequence dropped */
    assert_string_equal(r.stop[0], "\n\n");
    assert_string_equal(r.stop[1], "END");
    assert_true(r.stream && r.include_usage);
    moe_api_request_free(&r);
    moe_api_request_free(&r);   /* twice is harmless */
}

static void defaults(void **state)
{
    (void)state;
    moe_api_request r = parse_ok(MOE_API_CHAT, " {\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\r\n");
    assert_null(r.model);
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.temperature == 1.0f && r.top_p == 1.0f && r.min_p == 0.0f);
    assert_false(r.has_seed || r.stream || r.ignore_eos || r.return_token_ids || r.n_stop);
    moe_api_request_free(&r);
    /* null is "not given" */
    r = parse_ok(MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":null,\"stop\":null,"
                               "\"temperature\":null}");
    assert_int_equal(r.max_tokens, -1);
    assert_true(r.temperature == 1.0f);
    moe_api_request_free(&r);
}

static void prompts(void **state)
{
    (void)state;
    moe_api_request r = parse_ok(MOE_API_COMPLETION, "{\"prompt\":\"Hello\",\"stop\":\"x\",\"ignore_eos\":true,"
                                                     "\"return_token_ids\":true,\"max_tokens\":99999999999}");
    assert_string_equal(r.prompt_text, "Hello");
    assert_null(r.prompt_ids);
    assert_int_equal(r.n_stop, 1);
    assert_true(r.ignore_eos && r.return_token_ids);
    assert_int_equal(r.max_tokens, INT32_MAX);   /* huge: the context check refuses it later */
    moe_api_request_free(&r);
    r = parse_ok(MOE_API_COMPLETION, "{\"prompt\":[5,0,2147483647]}");
    assert_int_equal(r.n_prompt_ids, 3);
    assert_int_equal(r.prompt_ids[2], INT32_MAX);
    moe_api_request_free(&r);
    r = parse_ok(MOE_API_COMPLETION, "{\"prompt\":[[7,8]]}");
    assert_int_equal(r.n_prompt_ids, 2);
    assert_int_equal(r.prompt_ids[1], 8);
    moe_api_request_free(&r);
    r = parse_ok(MOE_API_COMPLETION, "{\"prompt\":[\"one\"]}");
    assert_string_equal(r.prompt_text, "one");
    moe_api_request_free(&r);
    /* UTF-8 at the edges of what is well-formed: U+0080, U+07FF, U+E000, U+FFFF, U+10000, U+10FFFF */
    static const char EDGES[] = "\xc2\x80\xdf\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf";
    char body[64];
    snprintf(body, sizeof body, "{\"prompt\":\"%s\"}", EDGES);
    r = parse_ok(MOE_API_COMPLETION, body);
    assert_string_equal(r.prompt_text, EDGES);
    moe_api_request_free(&r);
}

/* Each bad body: 400, the field named (or none), words of the message. */
static const struct {
    moe_api_kind kind;
    const char *body, *param, *words;
} BAD[] = {
    { MOE_API_CHAT, "", "", "body is empty" },
    { MOE_API_CHAT, "{\"messages\":[", "", "not valid JSON (it ends too early)" },
    { MOE_API_CHAT, "{\"messages\":[1 2]}", "", "not valid JSON" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],}", "", "not valid JSON" },
    { MOE_API_CHAT, "{\"messages\":[]} {}", "", "not valid JSON" },
    { MOE_API_CHAT, "[1,2]", "", "must be a JSON object, not an array" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\"}]}", "", "invalid utf-8" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\"}]}", "", "invalid utf-8" },
    /* forms json-c's own check lets through: an overlong '/', an encoded
     * surrogate, a code point past U+10FFFF, and a lead byte cut off at the end */
    { MOE_API_COMPLETION, "{\"prompt\":\"\xc0\xaf\"}", "", "not valid JSON (invalid utf-8 string)" },
    { MOE_API_COMPLETION, "{\"prompt\":\"\xed\xa0\x80\"}", "", "invalid utf-8" },
    { MOE_API_COMPLETION, "{\"prompt\":\"\xf4\x90\x80\x80\"}", "", "invalid utf-8" },
    { MOE_API_COMPLETION, "{\"prompt\":\"\xe0\x9f\xbf\"}", "", "invalid utf-8" },
    { MOE_API_COMPLETION, "{\"prompt\":\"a\"}\xe2\x82", "", "invalid utf-8" },
    { MOE_API_CHAT, "{}", "messages", "'messages' is required" },
    { MOE_API_CHAT, "{\"messages\":[]}", "messages", "'messages' is empty" },
    { MOE_API_CHAT, "{\"messages\":{}}", "messages", "must be an array, not an object" },
    { MOE_API_CHAT, "{\"messages\":[\"hi\"]}", "messages[0]", "must be an object, not a string" },
    { MOE_API_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", "messages[0].role", "is required" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":1,\"content\":\"hi\"}]}", "messages[0].role", "must be a string" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content", "not an integer" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages[0].content",
      "of type 'image_url'" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", "messages[0].content",
      ".text' must be a string" },
    { MOE_API_CHAT, "{\"model\":3,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", "model", "must be a string" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":\"5\"}", "max_tokens",
      "must be an integer, not a string" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":0}", "max_tokens",
      "is 0; it must be between 1" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2.5}", "max_tokens",
      "must be an integer, not a number" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":3}", "temperature",
      "is 3; it must be between 0 and 2" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":true}", "temperature",
      "must be a number, not a boolean" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"top_p\":-0.1}", "top_p", "between 0 and 1" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"seed\":1.5}", "seed", "must be an integer" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":\"yes\"}", "stream",
      "must be a boolean" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream_options\":{\"include_usage\":true}}",
      "stream_options", "only allowed with \"stream\": true" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}",
      "stop", "at most 4" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[1]}", "stop",
      "must be a string or an array of strings" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"n\":2}", "n", "'n' must be 1" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"logprobs\":true}", "logprobs",
      "not supported" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\"}]}", "tools",
      "not supported" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"json_object\"}}",
      "response_format", "not supported" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"presence_penalty\":0.5}",
      "presence_penalty", "other than 0 is not supported" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{}]}]}", "messages[0].role",
      "has tool calls" },
    /* a NUL inside a string would cut it short where it goes on as a C string */
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[\"\\u0000x\"]}", "stop",
      "'stop' holds a NUL character (\\u0000)" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", "messages[0].content",
      "holds a NUL character" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"\\u0000\"}]}]}",
      "messages[0].content", "'messages[0].content[0].text' holds a NUL character" },
    { MOE_API_CHAT, "{\"messages\":[{\"role\":\"us\\u0000er\",\"content\":\"hi\"}]}", "messages[0].role",
      "holds a NUL character" },
    { MOE_API_COMPLETION, "{\"prompt\":\"x\\u0000\"}", "prompt", "'prompt' holds a NUL character" },
    { MOE_API_COMPLETION, "{\"model\":\"m\\u0000\",\"prompt\":\"x\"}", "model", "holds a NUL character" },
    { MOE_API_COMPLETION, "{}", "prompt", "'prompt' is required" },
    { MOE_API_COMPLETION, "{\"prompt\":5}", "prompt", "must be a string or an array of token ids, not an integer" },
    { MOE_API_COMPLETION, "{\"prompt\":[]}", "prompt", "an empty list of token ids" },
    { MOE_API_COMPLETION, "{\"prompt\":[1,-2]}", "prompt", "'prompt[1]' must be a token id" },
    { MOE_API_COMPLETION, "{\"prompt\":[1,2147483648]}", "prompt", "'prompt[1]' must be a token id" },
    { MOE_API_COMPLETION, "{\"prompt\":[1,\"a\"]}", "prompt", "'prompt[1]' must be a token id" },
    { MOE_API_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt", "holds 2 prompts" },
    { MOE_API_COMPLETION, "{\"prompt\":\"a\",\"echo\":true}", "echo", "not supported" },
    { MOE_API_COMPLETION, "{\"prompt\":\"a\",\"suffix\":\"b\"}", "suffix", "not supported" },
    { MOE_API_COMPLETION, "{\"prompt\":\"a\",\"best_of\":3}", "best_of", "must be 1" },
};

static void bad_bodies(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        moe_api_request r;
        moe_api_error e;
        memset(&e, 0, sizeof e);
        if (moe_api_request_parse(BAD[i].body, strlen(BAD[i].body), BAD[i].kind, &r, &e) == 0)
            fail_msg("accepted: %s", BAD[i].body);
        if (e.status != 400 || strcmp(e.param, BAD[i].param) || !strstr(e.message, BAD[i].words))
            fail_msg("%s\n-> %d [%s] %s\nwanted [%s] ...%s...", BAD[i].body, e.status, e.param, e.message, BAD[i].param,
                     BAD[i].words);
        assert_string_equal(e.type, "invalid_request_error");
        /* the request is left empty */
        assert_null(r.messages);
        assert_null(r.prompt_ids);
        moe_api_request_free(&r);
    }
}

/* Every prefix of a valid body (a client cut off mid-send), and bodies
 * with each byte changed, are refused or read without a crash or leak. */
static void truncated_and_mutated(void **state)
{
    (void)state;
    static const char BODY[] = "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"h\\u00e9\"}]}],"
                               "\"stop\":[\"a\"],\"max_tokens\":3,\"stream\":true,\"stream_options\":{}}";
    size_t n = strlen(BODY);
    char buf[sizeof BODY];
    for (size_t len = 0; len < n; len++) {
        moe_api_request r;
        moe_api_error e;
        assert_int_equal(moe_api_request_parse(BODY, len, MOE_API_CHAT, &r, &e), -1);
        assert_int_equal(e.status, 400);
    }
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 256; c += 37) {
            memcpy(buf, BODY, n);
            buf[i] = (char)c;
            moe_api_request r;
            moe_api_error e;
            if (moe_api_request_parse(buf, n, MOE_API_CHAT, &r, &e) == 0) moe_api_request_free(&r);
            else assert_int_equal(e.status, 400);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_fields),
        cmocka_unit_test(defaults),
        cmocka_unit_test(prompts),
        cmocka_unit_test(bad_bodies),
        cmocka_unit_test(truncated_and_mutated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
