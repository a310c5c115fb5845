/* tests/test_chat.c — text in, text out on a real (tiny) model: the tiny
 * OLMoE fixture (vocabulary 251) with the text fixture's tokenizer, which
 * fits it. A prompt's ids follow the tokenizer's post-processor as the
 * reference frameworks use it (BOS kept, an appended EOS not); ids the model
 * does not have are refused; generated ids stream back as text; and a chat
 * keeps its KV cache between turns — each turn prefills only its own tokens
 * and answers exactly as a fresh context given the whole conversation does,
 * in every template family — refusing a turn that does not fit without
 * touching the conversation, and a system message the template refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/sampler.h"
#include "engine/text.h"
#include "moe/model.h"
#include "moe/tokenizer.h"

#define TEXTFIX MOE_SOURCE_DIR "/tests/fixtures/text"
#define TOKFIX MOE_SOURCE_DIR "/tests/fixtures/tokenizers"
#define MODEL MOE_SOURCE_DIR "/tests/fixtures/olmoe/base"

static moe_tokenizer *load_tok(const char *path)
{
    moe_tokenizer *t = NULL;
    assert_int_equal(moe_tokenizer_load(path, &t), MOE_OK);
    return t;
}

static void expect_ids(const int32_t *got, int n, const int32_t *want, int n_want)
{
    assert_int_equal(n, n_want);
    for (int i = 0; i < n; i++) assert_int_equal(got[i], want[i]);
}

/* ---- prompts ---- */

static void prompt_keeps_bos_and_drops_an_appended_eos(void **state)
{
    (void)state;
    int32_t *ids, *bare;
    int n, nb;
    // OLMoE-style: the post-processor appends <|endoftext|>; a prompt is the text alone
    moe_tokenizer *t = load_tok(TEXTFIX "/tokenizer.json");
    assert_int_equal(moe_tokenizer_encode(t, "Hello world", 11, 1, &bare, &nb), MOE_OK);
    assert_int_equal(bare[nb - 1], 250);
    free(bare);
    assert_int_equal(moe_text_prompt_ids(t, "Hello world", 11, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 132, 2, 242 }, 3);
    free(ids);
    // invalid UTF-8 is read as U+FFFD, as the tokenizer reads it (the fixture has a token for it)
    assert_int_equal(moe_text_prompt_ids(t, "a\xff" "b", 3, &ids, &n), MOE_OK);
    assert_int_equal(moe_tokenizer_encode(t, "a\xef\xbf\xbd" "b", 5, 0, &bare, &nb), MOE_OK);
    expect_ids(ids, n, bare, nb);
    expect_ids(ids, n, (int32_t[]){ 67, 103, 68 }, 3);
    free(ids);
    free(bare);
    assert_int_equal(moe_text_prompt_ids(t, "", 0, &ids, &n), MOE_OK);
    assert_int_equal(n, 0);
    free(ids);
    moe_tokenizer_free(t);
    // Llama-3: BOS first, once, even when the text writes it
    t = load_tok(TOKFIX "/llama3.json");
    assert_int_equal(moe_text_prompt_ids(t, "Hello world", 11, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 0, 806, 807 }, 3);
    free(ids);
    assert_int_equal(moe_text_prompt_ids(t, "<|begin_of_text|>Hello world", 28, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 0, 806, 807 }, 3);
    free(ids);
    assert_int_equal(moe_text_prompt_ids(t, "", 0, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 0 }, 1);
    free(ids);
    moe_tokenizer_free(t);
    // RoBERTa's <s> A </s>: <s> kept, </s> not
    t = load_tok(TOKFIX "/roberta.json");
    assert_int_equal(moe_text_prompt_ids(t, "Hello world", 11, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 0, 224, 43, 72, 79, 341, 320, 275, 512 }, 9);
    free(ids);
    moe_tokenizer_free(t);
    // GPT-2: nothing added
    t = load_tok(TOKFIX "/gpt2.json");
    assert_int_equal(moe_text_prompt_ids(t, "Hello world", 11, &ids, &n), MOE_OK);
    expect_ids(ids, n, (int32_t[]){ 700 }, 1);
    free(ids);
    moe_tokenizer_free(t);
}

static void ids_outside_the_model_are_refused(void **state)
{
    (void)state;
    moe_tokenizer *t = load_tok(TOKFIX "/neox.json");
    int32_t *ids;
    int n;
    assert_int_equal(moe_text_prompt_ids(t, "Hello world", 11, &ids, &n), MOE_OK);
    assert_int_equal(moe_text_check_ids(t, ids, n, 808), MOE_OK);
    assert_int_equal(moe_text_check_ids(t, ids, n, 251), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(),
                        "the tokenizer gave token id 339 ('lo', token 3 of the text), outside the model's vocabulary "
                        "0..250: the tokenizer has 808 ids and the model 251, so this tokenizer.json does not belong "
                        "to this model");
    free(ids);
    moe_tokenizer_free(t);
}

/* ---- streaming ---- */

typedef struct {
    char text[1024];
    int calls;
} gathered;

static void gather(void *user, const char *text, size_t len)
{
    gathered *g = user;
    strncat(g->text, text, len);
    g->calls++;
}

static void streamed_text_is_the_decoding(void **state)
{
    (void)state;
    moe_tokenizer *t = load_tok(TEXTFIX "/tokenizer.json");
    int32_t *ids;
    int n;
    const char *s = "What is the capital of France? \xef\xbf\xbd Paris.";
    assert_int_equal(moe_tokenizer_encode(t, s, strlen(s), 0, &ids, &n), MOE_OK);
    moe_stop_ids stop = { 1, { 250 } };
    moe_text_streamer st;
    gathered g = { "", 0 };
    assert_int_equal(moe_text_streamer_init(&st, t, &stop, gather, &g), MOE_OK);
    for (int i = 0; i < n; i++) moe_text_streamer_put(&st, ids[i]);
    moe_text_streamer_put(&st, 250);  /* the stop id adds nothing */
    assert_int_equal(moe_text_streamer_flush(&st), MOE_OK);
    assert_string_equal(st.text, s);
    assert_string_equal(g.text, s);
    assert_int_equal(g.calls, n);
    // a character split across tokens comes out whole, once complete (the byte symbols of U+FFFD)
    moe_text_streamer_clear(&st);
    g.text[0] = '\0';
    int32_t i_sym = moe_tokenizer_token_id(t, "\xc3\xaf"), q_sym = moe_tokenizer_token_id(t, "\xc2\xbf"),
            h_sym = moe_tokenizer_token_id(t, "\xc2\xbd");
    moe_text_streamer_put(&st, i_sym);
    moe_text_streamer_put(&st, q_sym);
    assert_int_equal(st.len, 0);
    moe_text_streamer_put(&st, h_sym);
    assert_string_equal(st.text, "\xef\xbf\xbd");
    moe_text_streamer_free(&st);
    free(ids);
    moe_tokenizer_free(t);
}

/* ---- chat ---- */

typedef struct {
    moe_model *m;
    moe_tokenizer *tok;
    moe_sampler *greedy;
} rig;

static int rig_setup(void **state)
{
    rig *r = calloc(1, sizeof *r);
    moe_model_options mo = moe_model_default_options();
    assert_int_equal(moe_model_load(MODEL, &mo, &r->m), MOE_OK);
    r->tok = load_tok(TEXTFIX "/tokenizer.json");
    moe_sampler_config sc = moe_sampler_default_config();
    assert_int_equal(moe_sampler_create(&sc, 251, &r->greedy), MOE_OK);
    *state = r;
    return 0;
}

static int rig_teardown(void **state)
{
    rig *r = *state;
    moe_sampler_free(r->greedy);
    moe_tokenizer_free(r->tok);
    moe_model_free(r->m);
    free(r);
    return 0;
}

static const moe_chat_template TULU = { .format = MOE_CHAT_TULU, .with_bos = 1, .bos_token = "<|endoftext|>",
                                        .eos_token = "<|endoftext|>" };

static int32_t *encode_all(moe_tokenizer *t, const char *s, int *n)
{
    int32_t *ids;
    assert_int_equal(moe_tokenizer_encode(t, s, strlen(s), 0, &ids, n), MOE_OK);
    return ids;
}

static int32_t *turn_ids(moe_tokenizer *t, int first, const char *system, const char *user, int *n)
{
    char *text;
    assert_int_equal(moe_chat_template_turn(&TULU, first, system, user, &text), MOE_OK);
    int32_t *ids = encode_all(t, text, n);
    free(text);
    return ids;
}

/* Greedy ids after `prompt` on a fresh context. */
static int fresh_answer(rig *r, const int32_t *prompt, int n, int max_new, const moe_stop_ids *stop, int32_t *out)
{
    moe_context *c;
    assert_int_equal(moe_context_create(r->m, 256, 64, &c), MOE_OK);
    moe_gen_request req = { .max_new_tokens = max_new, .prefill_step = 64, .sampler = r->greedy,
                            .stop_ids = stop ? stop->ids : NULL, .num_stop = stop ? stop->n : 0 };
    int n_out;
    assert_int_equal(moe_generate(c, prompt, n, &req, out, &n_out, NULL), MOE_OK);
    moe_context_free(c);
    return n_out;
}

static void append(int32_t *dst, int *n, const int32_t *src, int k)
{
    memcpy(dst + *n, src, sizeof(int32_t) * (size_t)k);
    *n += k;
}

/* Three turns in template t, each prefilling only its own text (after the
 * last answer's last id when the budget cut it, which goes in with the next
 * turn; after nothing when the answer ended at a stop id, whose closing text
 * the next turn brings), each answering as a fresh context given the whole
 * conversation does. Returns how many answers the budget cut. */
static int converse_as_a_fresh_context_would(rig *r, const moe_chat_template *t, const char *system)
{
    moe_stop_ids eos = { 1, { 250 } };
    moe_context *ctx;
    assert_int_equal(moe_context_create(r->m, 256, 64, &ctx), MOE_OK);
    moe_chat_config cc = { .tpl = *t, .system = system, .stop = &eos, .max_context = 256 };
    moe_chat *chat;
    assert_int_equal(moe_chat_create(ctx, r->tok, &cc, &chat), MOE_OK);
    moe_gen_request req = { .max_new_tokens = 6, .prefill_step = 64, .sampler = r->greedy };
    const char *users[] = { "Hello there", "What is the capital of France?", "Thank you" };
    int32_t history[256];
    int nh = 0, pending = 0, cut = 0;
    for (int k = 0; k < 3; k++) {
        char *text;
        assert_int_equal(moe_chat_template_turn(t, k == 0, system, users[k], &text), MOE_OK);
        int nt;
        int32_t *text_ids = encode_all(r->tok, text, &nt);
        free(text);
        int before = moe_context_position(ctx);
        int32_t *ids;
        int n;
        moe_gen_metrics mt;
        assert_int_equal(moe_chat_turn(chat, users[k], &req, &ids, &n, &mt), MOE_OK);
        assert_int_equal(mt.prompt_tokens, nt + pending);
        assert_int_equal(moe_context_position(ctx), before + mt.prompt_tokens + n - 1);
        append(history, &nh, text_ids, nt);
        int32_t want[16];
        int nw = fresh_answer(r, history, nh, 6, moe_chat_stop_ids(chat), want);
        expect_ids(ids, n, want, nw);
        pending = !moe_stop_ids_has(moe_chat_stop_ids(chat), ids[n - 1]);
        cut += pending;
        append(history, &nh, ids, n - !pending);
        free(ids);
        free(text_ids);
    }
    moe_chat_free(chat);
    moe_context_free(ctx);
    return cut;
}

static void chat_prefills_only_the_new_turn(void **state)
{
    rig *r = *state;
    // the random model never says <|endoftext|> this soon: every answer is cut, its last id pending
    assert_int_equal(converse_as_a_fresh_context_would(r, &TULU, "Be brief."), 3);
}

/* An answer that ends at a stop id leaves nothing pending: the template's
 * closing text brings the end-of-turn token in again. */
static void chat_after_a_stop_token(void **state)
{
    rig *r = *state;
    // which id the model says third after the first turn: make it a stop id
    int n1;
    int32_t *t1 = turn_ids(r->tok, 1, NULL, "Hello there", &n1), free_run[8];
    assert_int_equal(fresh_answer(r, t1, n1, 3, NULL, free_run), 3);
    moe_stop_ids stop = { 1, { free_run[2] } };
    moe_context *ctx;
    assert_int_equal(moe_context_create(r->m, 256, 64, &ctx), MOE_OK);
    moe_chat_config cc = { .tpl = TULU, .stop = &stop, .max_context = 256 };
    moe_chat *chat;
    assert_int_equal(moe_chat_create(ctx, r->tok, &cc, &chat), MOE_OK);
    assert_int_equal(moe_chat_stop_ids(chat)->n, 2);  /* and <|endoftext|>, tulu's end of turn */
    moe_gen_request req = { .max_new_tokens = 10, .prefill_step = 64, .sampler = r->greedy };
    int32_t *ids;
    int n;
    moe_gen_metrics mt;
    assert_int_equal(moe_chat_turn(chat, "Hello there", &req, &ids, &n, &mt), MOE_OK);
    expect_ids(ids, n, free_run, 3);
    free(ids);
    int n2;
    int32_t *t2 = turn_ids(r->tok, 0, NULL, "Thank you", &n2);
    assert_int_equal(moe_chat_turn(chat, "Thank you", &req, &ids, &n, &mt), MOE_OK);
    assert_int_equal(mt.prompt_tokens, n2);
    assert_int_equal(t2[0], 250);  /* the closing eos_token */
    // the same as a fresh context given: turn 1, the answer without its stop id, turn 2
    int32_t history[128], want[16];
    int nh = 0;
    append(history, &nh, t1, n1);
    append(history, &nh, free_run, 2);
    append(history, &nh, t2, n2);
    int nw = fresh_answer(r, history, nh, 10, moe_chat_stop_ids(chat), want);
    expect_ids(ids, n, want, nw);
    free(ids);
    free(t1);
    free(t2);
    moe_chat_free(chat);
    moe_context_free(ctx);
}

/* The other families. The tokenizer has no <s> or </s>: <|endoftext|>
 * stands in for them. */
static void chat_in_other_templates(void **state)
{
    rig *r = *state;
    moe_chat_template qwen3 = { .format = MOE_CHAT_QWEN3, .bos_token = "", .eos_token = "<|im_end|>", .no_think = 1 };
    converse_as_a_fresh_context_would(r, &qwen3, "Be brief.");
    qwen3.no_think = 0;
    converse_as_a_fresh_context_would(r, &qwen3, NULL);
    moe_chat_template inst = { .with_bos = 1, .bos_token = "<|endoftext|>", .eos_token = "<|endoftext|>" };
    moe_chat_format forms[] = { MOE_CHAT_LLAMA2, MOE_CHAT_MISTRAL, MOE_CHAT_MISTRAL_V1, MOE_CHAT_MISTRAL_V3,
                                MOE_CHAT_MISTRAL_V3_TEKKEN, MOE_CHAT_MISTRAL_V7 };
    for (int i = 0; i < 6; i++) {
        inst.format = forms[i];
        converse_as_a_fresh_context_would(r, &inst, forms[i] == MOE_CHAT_MISTRAL ? NULL : "Be brief.");
    }
    moe_chat_template qwen2 = { .format = MOE_CHAT_CHATML, .bos_token = "", .eos_token = "<|im_end|>",
                                .default_system = "You are a helpful assistant" };
    converse_as_a_fresh_context_would(r, &qwen2, NULL);
}

/* A system message the template refuses is refused when the chat is made. */
static void chat_refuses_a_system_message_the_template_refuses(void **state)
{
    rig *r = *state;
    moe_context *ctx;
    assert_int_equal(moe_context_create(r->m, 64, 64, &ctx), MOE_OK);
    moe_chat_config cc = { .tpl = { .format = MOE_CHAT_MISTRAL, .with_bos = 1, .bos_token = "<|endoftext|>",
                                    .eos_token = "<|endoftext|>" },
                           .system = "Be brief.", .max_context = 64 };
    moe_chat *chat = (moe_chat *)1;
    assert_int_equal(moe_chat_create(ctx, r->tok, &cc, &chat), MOE_ERR_INVALID_ARG);
    assert_null(chat);
    assert_non_null(strstr(moe_last_error(), "the mistral chat template refuses message 0 (role 'system')"));
    assert_non_null(strstr(moe_last_error(), "(this template takes no system message)"));
    cc.system = NULL;
    assert_int_equal(moe_chat_create(ctx, r->tok, &cc, &chat), MOE_OK);
    moe_chat_free(chat);
    moe_context_free(ctx);
}

static void chat_refuses_a_turn_that_does_not_fit(void **state)
{
    rig *r = *state;
    moe_stop_ids eos = { 1, { 250 } };
    int n1;
    int32_t *t1 = turn_ids(r->tok, 1, NULL, "Hello there", &n1);
    int cap = n1 + 4;
    moe_context *ctx;
    assert_int_equal(moe_context_create(r->m, cap, 64, &ctx), MOE_OK);
    moe_chat_config cc = { .tpl = TULU, .stop = &eos, .max_context = cap };
    moe_chat *chat;
    assert_int_equal(moe_chat_create(ctx, r->tok, &cc, &chat), MOE_OK);
    // no budget: the answer runs until the context is full
    moe_gen_request req = { .prefill_step = 64, .sampler = r->greedy };
    int32_t *ids;
    int n;
    moe_gen_metrics mt;
    assert_int_equal(moe_chat_turn(chat, "Hello there", &req, &ids, &n, &mt), MOE_OK);
    assert_int_equal(n, 4);
    assert_int_equal(moe_chat_room(chat), 1);  /* the last id is not in the cache yet */
    free(ids);
    int pos = moe_context_position(ctx);
    assert_int_equal(moe_chat_turn(chat, "Thank you", &req, &ids, &n, &mt), MOE_ERR_RANGE);
    char want[256];
    int n2;
    int32_t *t2 = turn_ids(r->tok, 0, NULL, "Thank you", &n2);
    snprintf(want, sizeof want, "the conversation is full: this turn's %d tokens and its answer do not fit in the "
             "1 token left of the %d-token context", n2 + 1, cap);
    assert_string_equal(moe_last_error(), want);
    assert_null(ids);
    assert_int_equal(moe_context_position(ctx), pos);
    free(t1);
    free(t2);
    moe_chat_free(chat);
    moe_context_free(ctx);
}

static void end_of_turn_must_be_a_token(void **state)
{
    rig *r = *state;
    moe_tokenizer *gpt2 = load_tok(TOKFIX "/gpt2.json");
    moe_context *ctx;
    assert_int_equal(moe_context_create(r->m, 16, 16, &ctx), MOE_OK);
    moe_chat_config cc = { .tpl = { .format = MOE_CHAT_CHATML, .bos_token = "", .eos_token = "<|endoftext|>" },
                           .max_context = 16 };
    moe_chat *chat;
    assert_int_equal(moe_chat_create(ctx, gpt2, &cc, &chat), MOE_ERR_FORMAT);
    assert_string_equal(moe_last_error(),
                        "the chatml chat template ends a turn with '<|im_end|>', which is not a token of the tokenizer");
    assert_null(chat);
    // the chat refuses text ids the model does not have, and nothing changes
    cc.tpl = TULU;
    assert_int_equal(moe_chat_create(ctx, gpt2, &cc, &chat), MOE_OK);
    moe_gen_request req = { .prefill_step = 16, .sampler = r->greedy };
    int32_t *ids;
    int n;
    assert_int_equal(moe_chat_turn(chat, "Hello world", &req, &ids, &n, NULL), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "outside the model's vocabulary 0..250"));
    assert_int_equal(moe_context_position(ctx), 0);
    moe_chat_free(chat);
    moe_context_free(ctx);
    moe_tokenizer_free(gpt2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prompt_keeps_bos_and_drops_an_appended_eos),
        cmocka_unit_test(ids_outside_the_model_are_refused),
        cmocka_unit_test(streamed_text_is_the_decoding),
        cmocka_unit_test_setup_teardown(chat_prefills_only_the_new_turn, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(chat_after_a_stop_token, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(chat_in_other_templates, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(chat_refuses_a_system_message_the_template_refuses, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(chat_refuses_a_turn_that_does_not_fit, rig_setup, rig_teardown),
        cmocka_unit_test_setup_teardown(end_of_turn_must_be_a_token, rig_setup, rig_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
