/* tools/cmd_generate.c — `moe generate`: a prompt in (text, encoded with the
 * checkpoint's tokenizer.json, or token ids), the continuation out, streamed
 * as it comes (text, or ids for an ids prompt), with the run's figures. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "moe/text.h"
#include "moe/tokenizer.h"

static const char *CMD = "generate";

void generate_usage(FILE *f)
{
    fprintf(f, "usage: moe generate --model DIR (--prompt TEXT | --tokens 1,2,3) [-n N] [options]\n\n"
               "Generates up to N tokens after the prompt, stopping at the checkpoint's EOS ids (config.json\n"
               "and generation_config.json). With --prompt the text streams out as it is generated; with\n"
               "--tokens the ids do.\n\n"
               "  --model DIR              checkpoint directory (config.json + safetensors; tokenizer.json for --prompt)\n"
               "  --prompt TEXT            the prompt as text, encoded with DIR/tokenizer.json: BOS first where its\n"
               "                           post-processor puts one (as transformers and mlx-lm encode a prompt), never\n"
               "                           the EOS some post-processors append (OLMoE's)\n"
               "  --tokens IDS             the prompt as comma-separated token ids\n"
               "  -n N                     tokens to generate at most (default 32)\n"
               "  --max-context N          the context (KV cache) size in tokens: a longer prompt is an error,\n"
               "                           generation stops when it is full (default: prompt + N)\n"
               "  --temp T                 temperature (default 0: greedy)\n"
               "  --top-k K, --top-p P, --min-p P   sampling filters (default off)\n"
               "  --seed S                 sampling seed (default 0)\n"
               "  --ignore-eos             do not stop at EOS ids\n"
               "  --prefill-step N         prompt tokens per forward chunk (default 2048)\n"
               "  --json                   one JSON object: ids (generated only), text (with --prompt) and the\n"
               "                           run's figures\n");
    cli_usage_runtime(f);
}

typedef struct {
    int json, count;
    moe_text_streamer *text;    /* --prompt: ids become text */
} stream_state;

static void on_text(void *user, const char *text, size_t len)
{
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
}

static void on_token(void *user, int32_t id)
{
    stream_state *s = user;
    if (s->text) moe_text_streamer_put(s->text, id);
    else if (!s->json) {
        printf("%s%d", s->count++ ? " " : "", (int)id);
        fflush(stdout);
    }
}

/* The prompt's ids: --tokens as given, or --prompt encoded with the
 * checkpoint's tokenizer (*tok set). NULL after printing why. */
static int32_t *prompt_ids(const cli_opts *o, moe_tokenizer **tok, int *n)
{
    *n = 0;
    if (!o->prompt) return cli_parse_tokens(CMD, o->tokens, n);
    int32_t *ids = NULL;
    if (moe_tokenizer_load_dir(o->model, tok) != MOE_OK ||
        moe_text_prompt_ids(*tok, o->prompt, strlen(o->prompt), &ids, n) != MOE_OK) {
        cli_fail(CMD);
        return NULL;
    }
    if (*n == 0) {
        fprintf(stderr, "moe %s: --prompt: the text encodes to no tokens; there is nothing to continue\n", CMD);
        free(ids);
        return NULL;
    }
    return ids;
}

static void print_json(const stream_state *ss, const int32_t *out, int n_out, const moe_gen_metrics *mt,
                       const moe_model_info *info)
{
    json_object *obj = json_object_new_object(), *arr = json_object_new_array();
    for (int i = 0; i < n_out; i++) json_object_array_add(arr, json_object_new_int(out[i]));
    json_object_object_add(obj, "ids", arr);
    if (ss->text) json_object_object_add(obj, "text", json_object_new_string_len(ss->text->text, (int)ss->text->len));
    cli_metrics_json(obj, mt);
    json_object_object_add(obj, "fuse_gate_up", json_object_new_boolean(info->fused));
    json_object_object_add(obj, "activations", json_object_new_string(cli_act_name(info->activations)));
    printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(obj);
}

int generate_main(int argc, char **argv)
{
    if (cli_help(argc, argv, generate_usage)) return 0;
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv,
                       "model tokens prompt n max-context temp top-k top-p min-p seed ignore-eos prefill-step json "
                       "device threads isa fuse-gate-up activations kv-cache", &o);
    if (rc) return rc;
    if (!o.model) return fprintf(stderr, "moe generate: --model DIR is required\n"), 2;
    if (!o.prompt == !o.tokens)
        return fprintf(stderr, "moe generate: give the prompt as one of --prompt TEXT or --tokens IDS\n"), 2;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    moe_tokenizer *tok = NULL;
    int n;
    int32_t *ids = prompt_ids(&o, &tok, &n);
    if (!ids) return moe_tokenizer_free(tok), o.prompt ? 1 : 2;
    if (o.max_context && n > o.max_context) {
        fprintf(stderr, "moe generate: the prompt is %d tokens, more than the %d-token context asked for "
                "(--max-context %d)\n", n, o.max_context, o.max_context);
        return free(ids), moe_tokenizer_free(tok), 1;
    }
    // the context holds the prompt and what is generated
    if (o.max_context && o.n_new > o.max_context - n) o.n_new = o.max_context - n;
    int context = o.max_context ? o.max_context : n + o.n_new;
    if (cli_check_memory(CMD, &o, &context)) return free(ids), moe_tokenizer_free(tok), 1;
    cli_progress_init(&o);
    moe_model *m = cli_open_model(CMD, &o);
    if (!m) return free(ids), moe_tokenizer_free(tok), 1;
    moe_model_info info = moe_model_get_info(m);
    moe_stop_ids stop = { 0 };
    rc = tok && moe_text_check_ids(tok, ids, n, info.vocab_size) != MOE_OK ? cli_fail(CMD) : 0;
    if (!rc && !o.ignore_eos && moe_text_stop_ids(o.model, &info, &stop) != MOE_OK) rc = cli_fail(CMD);
    moe_sampler *sampler = rc ? NULL : cli_make_sampler(CMD, &o, info.vocab_size);
    if (!rc) cli_note_context(&o, &info, n + o.n_new);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(o.n_new + 1));
    moe_context *c = NULL;
    moe_text_streamer text = { 0 };
    stream_state ss = { .json = o.json };
    if (!rc && tok) {
        if (moe_text_streamer_init(&text, tok, &stop, o.json ? NULL : on_text, NULL) != MOE_OK) rc = cli_fail(CMD);
        ss.text = &text;
    }
    moe_gen_request req = { .max_new_tokens = o.n_new, .prefill_step = o.prefill_step, .stop_ids = stop.ids,
                            .num_stop = stop.n, .sampler = sampler, .on_token = on_token, .user = &ss };
    moe_gen_metrics mt;
    int n_out = 0;
    if (!rc) rc = !sampler || !out;
    if (!rc && moe_context_create(m, context, o.prefill_step, &c) != MOE_OK)
        rc = cli_fail(CMD);
    if (!rc && moe_generate(c, ids, n, &req, out, &n_out, &mt) != MOE_OK) rc = cli_fail(CMD);
    if (!rc && ss.text && moe_text_streamer_flush(&text) != MOE_OK) rc = cli_fail(CMD);
    if (!rc && o.json) print_json(&ss, out, n_out, &mt, &info);
    else if (!rc) {
        printf("\n");
        fflush(stdout);
        cli_metrics_print(stderr, &mt);
    }
    moe_text_streamer_free(&text);
    moe_context_free(c);
    moe_sampler_free(sampler);
    moe_model_free(m);
    moe_tokenizer_free(tok);
    free(out);
    free(ids);
    return rc;
}
