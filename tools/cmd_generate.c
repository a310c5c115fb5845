/* tools/cmd_generate.c — `moe generate`: token ids in, generated ids out
 * (streamed as they come), with the run's figures. Text in and out comes
 * with the tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"

static const char *CMD = "generate";

void generate_usage(FILE *f)
{
    fprintf(f, "usage: moe generate --model DIR --tokens 1,2,3 [-n N] [options]\n\n"
               "Generates up to N token ids after the prompt (stopping at the model's EOS ids).\n\n"
               "  --model DIR              checkpoint directory (config.json + safetensors)\n"
               "  --tokens IDS             the prompt, comma-separated token ids\n"
               "  -n N                     tokens to generate at most (default 32)\n"
               "  --temp T                 temperature (default 0: greedy)\n"
               "  --top-k K, --top-p P, --min-p P   sampling filters (default off)\n"
               "  --seed S                 sampling seed (default 0)\n"
               "  --ignore-eos             do not stop at EOS ids\n"
               "  --prefill-step N         prompt tokens per forward chunk (default 2048)\n"
               "  --json                   one JSON object: ids (generated only) and the run's figures\n");
    cli_usage_runtime(f);
}

typedef struct {
    int json, count;
} stream_state;

static void on_token(void *user, int32_t id)
{
    stream_state *s = user;
    if (s->json) return;
    printf("%s%d", s->count++ ? " " : "", (int)id);
    fflush(stdout);
}

int generate_main(int argc, char **argv)
{
    if (cli_help(argc, argv, generate_usage)) return 0;
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv,
                       "model tokens n temp top-k top-p min-p seed ignore-eos prefill-step json device threads isa "
                       "fuse-gate-up activations", &o);
    if (rc) return rc;
    if (!o.model) return fprintf(stderr, "moe generate: --model DIR is required\n"), 2;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    int n;
    int32_t *ids = cli_parse_tokens(CMD, o.tokens, &n);
    if (!ids) return 2;
    cli_progress_init(&o);
    moe_model *m = cli_open_model(CMD, &o);
    if (!m) return free(ids), 1;
    moe_model_info info = moe_model_get_info(m);
    moe_sampler *sampler = cli_make_sampler(CMD, &o, info.vocab_size);
    cli_note_context(&o, &info, n + o.n_new);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(o.n_new + 1));
    moe_context *c = NULL;
    stream_state ss = { .json = o.json };
    moe_gen_request req = { .max_new_tokens = o.n_new, .prefill_step = o.prefill_step,
                            .stop_ids = o.ignore_eos ? NULL : info.eos_ids, .num_stop = o.ignore_eos ? 0 : info.num_eos,
                            .sampler = sampler, .on_token = on_token, .user = &ss };
    moe_gen_metrics mt;
    int n_out = 0;
    rc = !sampler || !out;
    if (!rc && moe_context_create(m, n + o.n_new, o.prefill_step, &c) != MOE_OK) rc = cli_fail(CMD);
    if (!rc && moe_generate(c, ids, n, &req, out, &n_out, &mt) != MOE_OK) rc = cli_fail(CMD);
    if (!rc && o.json) {
        json_object *obj = json_object_new_object(), *arr = json_object_new_array();
        for (int i = 0; i < n_out; i++) json_object_array_add(arr, json_object_new_int(out[i]));
        json_object_object_add(obj, "ids", arr);
        cli_metrics_json(obj, &mt);
        json_object_object_add(obj, "fuse_gate_up", json_object_new_boolean(info.fused));
        json_object_object_add(obj, "activations", json_object_new_string(cli_act_name(info.activations)));
        printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
        json_object_put(obj);
    } else if (!rc) {
        printf("\n");
        cli_metrics_print(stderr, &mt);
    }
    moe_context_free(c);
    moe_sampler_free(sampler);
    moe_model_free(m);
    free(out);
    free(ids);
    return rc;
}
