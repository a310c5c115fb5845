/* tools/cmd_chat.c — `moe chat`: a conversation on stdin and stdout. Each
 * line read is a user turn; the answer streams out as it is generated. The
 * KV cache is kept between turns (moe/chat.h), so a turn costs only its
 * own tokens. The chat template is the checkpoint's (tokenizer_config.json)
 * or the one --chat-template names. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "moe/chat.h"
#include "moe/tokenizer.h"

static const char *CMD = "chat";

void chat_usage(FILE *f)
{
    fprintf(f, "usage: moe chat --model DIR [--chat-template NAME] [--system TEXT] [--no-think] [options]\n\n"
               "Chats with an instruction-tuned model: each line read from stdin is a user turn (piped input\n"
               "works too; the chat ends at end of input), and the answer streams to stdout, ending at the\n"
               "model's EOS or the template's end-of-turn token. The conversation stays in the KV cache.\n\n"
               "  --model DIR              checkpoint directory (config.json, safetensors, tokenizer.json and\n"
               "                           tokenizer_config.json with its chat_template)\n"
               "  --chat-template NAME     instead of recognising the checkpoint's template: tulu (OLMoE / OLMo-2 /\n"
               "                           Tulu instruct), chatml, llama3, qwen3, llama2, mistral (Mixtral-8x7B's\n"
               "                           first), mistral-v1 (its later one), mistral-v3, mistral-v3-tekken (Nemo)\n"
               "                           or mistral-v7\n"
               "  --system TEXT            a system message first\n"
               "  --no-think               Qwen3: answer without reasoning (the template's enable_thinking=false,\n"
               "                           as chat-template kwargs give it in llama.cpp and vLLM)\n"
               "  -n N                     tokens an answer has at most (default, or 0: until the model stops or\n"
               "                           the context is full)\n"
               "  --max-context N          the conversation's context in tokens (default: the model's\n"
               "                           max_position_embeddings, or less when its KV cache would not fit in\n"
               "                           the memory available); a turn that does not fit ends the chat\n"
               "  --temp T                 temperature (default 0: greedy)\n"
               "  --top-k K, --top-p P, --min-p P   sampling filters (default off)\n"
               "  --seed S                 sampling seed (default 0)\n"
               "  --prefill-step N         prompt tokens per forward chunk (default 2048)\n"
               "  --json                   one JSON object a turn instead of the text: ids, text, the turn's\n"
               "                           figures (prompt_tokens: the tokens it prefilled) and context_tokens\n");
    cli_usage_runtime(f);
}

static const char *TEMPLATE_HINT = "choose one with --chat-template NAME (" MOE_CHAT_FORMAT_NAMES ")";

/* The template: --chat-template's family, or the checkpoint's recognised,
 * with the checkpoint's bos/eos strings; and --no-think. 0, or 1/2 after
 * printing why. */
static int choose_template(const cli_opts *o, const moe_tokenizer *tok, const moe_model_info *info,
                           const moe_stop_ids *stop, moe_chat_template **t)
{
    moe_chat_format f = (moe_chat_format)-1;
    if (o->chat_template && moe_chat_format_from_name(o->chat_template, &f) != MOE_OK)
        return fprintf(stderr, "moe %s: --chat-template: %s\n", CMD, moe_last_error()), 2;
    moe_status st = moe_chat_template_load_dir(o->model, (int)f, tok, info->bos_id, stop->n ? stop->ids[0] : -1, t);
    if (st == MOE_ERR_FORMAT || st == MOE_ERR_UNSUPPORTED)
        return fprintf(stderr, "moe %s: %s; %s\n", CMD, moe_last_error(), TEMPLATE_HINT), 1;
    if (st != MOE_OK) return cli_fail(CMD);
    (*t)->no_think = o->no_think;
    if (o->no_think && (*t)->format != MOE_CHAT_QWEN3)
        return fprintf(stderr, "moe %s: --no-think: the %s chat template has no switch for thinking (qwen3's has)\n",
                       CMD, moe_chat_format_name((*t)->format)), 2;
    return 0;
}

static void on_text(void *user, const char *text, size_t len)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void print_turn_json(int turn, const int32_t *ids, int n, const moe_text_streamer *text,
                            const moe_gen_metrics *mt, int position)
{
    json_object *obj = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(obj, "turn", json_object_new_int(turn));
    for (int i = 0; i < n; i++) json_object_array_add(arr, json_object_new_int(ids[i]));
    json_object_object_add(obj, "ids", arr);
    json_object_object_add(obj, "text", json_object_new_string_len(text->text, (int)text->len));
    cli_metrics_json(obj, mt);
    json_object_object_add(obj, "context_tokens", json_object_new_int(position));
    printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    fflush(stdout);
    json_object_put(obj);
}

/* Reads turns until end of input; 0, or 1 after printing a failure. */
static int converse(const cli_opts *o, moe_chat *chat, moe_context *ctx, moe_sampler *sampler,
                    moe_text_streamer *text, int max_context)
{
    int interactive = isatty(STDIN_FILENO), turn = 0, rc = 0;
    char *line = NULL;
    size_t cap = 0;
    moe_gen_request req = { .max_new_tokens = o->n_given ? o->n_new : 0,
                            .prefill_step = o->prefill_step < max_context ? o->prefill_step : max_context,
                            .sampler = sampler, .on_token = moe_text_streamer_put, .user = text };
    for (;;) {
        if (interactive) fprintf(stderr, "> "), fflush(stderr);
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        int32_t *ids;
        int n;
        moe_gen_metrics mt;
        moe_text_streamer_clear(text);
        moe_status st = moe_chat_turn(chat, line, &req, &ids, &n, &mt);
        if (st != MOE_OK) {
            fflush(stdout);
            if (st == MOE_ERR_RANGE)
                fprintf(stderr, "moe %s: %s (--max-context %d)\n", CMD, moe_last_error(), max_context);
            else cli_fail(CMD);
            rc = 1;
            break;
        }
        turn++;
        if (moe_text_streamer_flush(text) != MOE_OK) rc = cli_fail(CMD);
        else if (o->json) print_turn_json(turn, ids, n, text, &mt, moe_context_position(ctx));
        else {
            printf("\n");
            fflush(stdout);
            if (interactive) cli_metrics_print(stderr, &mt);
        }
        free(ids);
        if (rc) break;
        if (moe_chat_room(chat) == 0 && !o->json)
            fprintf(stderr, "note: the %d-token context is full; the conversation cannot go on\n", max_context);
    }
    if (interactive && !rc) fprintf(stderr, "\n");
    free(line);
    return rc;
}

int chat_main(int argc, char **argv)
{
    if (cli_help(argc, argv, chat_usage)) return 0;
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv,
                       "model chat-template system no-think n max-context temp top-k top-p min-p seed prefill-step "
                       "json device threads isa fuse-gate-up activations kv-cache", &o);
    if (rc) return rc;
    if (!o.model) return fprintf(stderr, "moe %s: --model DIR is required\n", CMD), 2;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    moe_tokenizer *tok = NULL;
    moe_chat_template *tpl = NULL;
    if (moe_tokenizer_load_dir(o.model, &tok) != MOE_OK) return cli_fail(CMD);
    // the template checked before the model loads, then read again with the model's bos and eos ids
    if ((rc = choose_template(&o, tok, &(moe_model_info){ .bos_id = -1 }, &(moe_stop_ids){ 0 }, &tpl))) {
        moe_chat_template_free(tpl);
        moe_tokenizer_free(tok);
        return rc;
    }
    moe_chat_template_free(tpl);
    tpl = NULL;
    /* without --max-context: as long as the model was trained for, if that fits in memory */
    int max_context = o.max_context;
    if (cli_check_memory(CMD, &o, &max_context)) return moe_tokenizer_free(tok), 1;
    cli_progress_init(&o);
    moe_model *m = cli_open_model(CMD, &o);
    moe_model_info info = m ? moe_model_get_info(m) : (moe_model_info){ 0 };
    moe_stop_ids stop;
    moe_sampler *sampler = NULL;
    moe_context *ctx = NULL;
    moe_chat *chat = NULL;
    moe_text_streamer text = { 0 };
    if (!max_context) max_context = info.max_position > 0 ? info.max_position : 4096;
    rc = !m;
    if (!rc && moe_text_stop_ids(o.model, &info, &stop) != MOE_OK) rc = cli_fail(CMD);
    if (!rc) rc = choose_template(&o, tok, &info, &stop, &tpl);
    if (!rc) {
        moe_chat_config cc = { .tpl = *tpl, .system = o.system, .stop = &stop, .max_context = max_context };
        if (moe_context_create(m, max_context, o.prefill_step, &ctx) != MOE_OK ||
            moe_chat_create(ctx, tok, &cc, &chat) != MOE_OK)
            rc = cli_fail(CMD);
    }
    if (!rc && !(sampler = cli_make_sampler(CMD, &o, info.vocab_size))) rc = 1;
    if (!rc && moe_text_streamer_init(&text, tok, moe_chat_stop_ids(chat), o.json ? NULL : on_text, NULL) != MOE_OK)
        rc = cli_fail(CMD);
    if (!rc) rc = converse(&o, chat, ctx, sampler, &text, max_context);
    moe_text_streamer_free(&text);
    moe_chat_free(chat);
    moe_context_free(ctx);
    moe_sampler_free(sampler);
    moe_model_free(m);
    moe_chat_template_free(tpl);
    moe_tokenizer_free(tok);
    return rc;
}
