/* tools/cmd_serve.c — `moe serve`: the OpenAI-compatible HTTP server
 * (src/server) over a checkpoint, or over a synthetic model (token ids
 * only) for benchmarks. This file reads options and opens the model; the
 * server does the rest. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "commands.h"
#include "moe/chat_template.h"
#include "moe/text.h"
#include "moe/tokenizer.h"
#include "server/server.h"

static const char *CMD = "serve";

void serve_usage(FILE *f)
{
    fprintf(f, "usage: moe serve --model DIR [--host 127.0.0.1] [--port 8080] [--parallel N] [--max-context N]\n"
               "                 [--api-key KEY] [options]\n\n"
               "Serves the model over the OpenAI HTTP API: POST /v1/chat/completions (the checkpoint's chat\n"
               "template), POST /v1/completions (a prompt as text or token ids), GET /v1/models, GET /health and\n"
               "GET /metrics (Prometheus). Streaming as server-sent events. N requests run together, each step\n"
               "one forward over all of them; a request that extends the conversation held in a slot's cache\n"
               "reuses it. Ctrl-C stops taking requests, finishes those in flight and exits (twice: at once).\n\n"
               "  --model DIR              checkpoint directory (config.json, safetensors; tokenizer.json for\n"
               "                           text; tokenizer_config.json's chat_template for chat). Without it, a\n"
               "                           synthetic model (--arch, --synthetic-bits, --layers) serves token ids\n"
               "  --host ADDR              address to listen on (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
               "  --port N                 TCP port (default 8080; 0: any free port, named in the log)\n"
               "  --parallel N             requests run together, each with its own KV cache (default 4)\n"
               "  --queue N                requests that may wait for a slot; more get 503 (default 16)\n"
               "  --max-context N          tokens a request's prompt and answer share (default: the model's\n"
               "                           max_position_embeddings, at most 4096, or what N slots fit in memory)\n"
               "  --batch-tokens N         tokens a step runs at most: every running request's next token,\n"
               "                           then prompt chunks (default 64)\n"
               "  --api-key KEY            require \"Authorization: Bearer KEY\" (default: $MOE_API_KEY if set)\n"
               "  --alias NAME             the model's name in the API (default: DIR's last component)\n"
               "  --max-body BYTES         largest request body (default 8388608); larger ones get 413\n"
               "  --chat-template NAME     instead of the checkpoint's template: " MOE_CHAT_FORMAT_NAMES "\n"
               "  --no-think               Qwen3: answer without reasoning\n");
    cli_usage_runtime(f);
}

typedef struct {
    const char *host, *api_key, *alias;
    int port, parallel, queue, batch_tokens;
    long long max_body;
} serve_opts;

static int parse_num(const char *flag, const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = v && *v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "moe %s: bad value '%s' for '%s' (%lld to %lld)\n(see moe %s --help)\n", CMD, v ? v : "", flag,
                lo, hi, CMD);
        return 2;
    }
    *out = x;
    return 0;
}

/* The server's own options out of argv (the rest, for cli_parse, kept in
 * order in rest/n_rest). 0 or 2. */
static int parse_serve(int argc, char **argv, serve_opts *s, char **rest, int *n_rest)
{
    *s = (serve_opts){ .host = "127.0.0.1", .port = 8080, .parallel = 4, .queue = 16, .batch_tokens = 64,
                       .max_body = 8 << 20, .api_key = getenv("MOE_API_KEY") };
    *n_rest = 0;
    rest[(*n_rest)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        static const char *const OWN[] = { "--host", "--port", "--parallel", "--queue", "--batch-tokens", "--api-key",
                                           "--alias", "--max-body", NULL };
        int k = 0;
        while (OWN[k] && strcmp(OWN[k], a)) k++;
        if (!OWN[k]) {
            rest[(*n_rest)++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) return fprintf(stderr, "moe %s: '%s' needs a value\n(see moe %s --help)\n", CMD, a, CMD), 2;
        const char *v = argv[++i];
        long long x = 0;
        int rc = 0;
        switch (k) {
        case 0: s->host = v; break;
        case 1: rc = parse_num(a, v, 0, 65535, &x), s->port = (int)x; break;
        case 2: rc = parse_num(a, v, 1, 256, &x), s->parallel = (int)x; break;
        case 3: rc = parse_num(a, v, 0, 1 << 20, &x), s->queue = (int)x; break;
        case 4: rc = parse_num(a, v, 1, 1 << 16, &x), s->batch_tokens = (int)x; break;
        case 5: s->api_key = v; break;
        case 6: s->alias = v; break;
        case 7: rc = parse_num(a, v, 1, 1LL << 32, &s->max_body); break;
        }
        if (rc) return rc;
    }
    if (s->api_key && !*s->api_key) s->api_key = NULL;
    return 0;
}

/* DIR's last component, for the model's name. */
static const char *base_name(const char *dir)
{
    static char name[256];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') b--;
    snprintf(name, sizeof name, "%.*s", (int)(n - b), dir + b);
    return name;
}

/* The tokenizer and chat template of --model DIR, when it has them: a
 * missing tokenizer.json means token ids only, a missing template no chat
 * (each said on stderr); a broken one is an error. 0 or 1. */
static int open_text(const cli_opts *o, const moe_model_info *info, const moe_stop_ids *stop, moe_tokenizer **tok,
                     moe_chat_template **tpl)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", o->model);
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "moe %s: note: %s has no tokenizer.json: prompts as token ids only\n", CMD, o->model);
        return 0;
    }
    if (moe_tokenizer_load_dir(o->model, tok) != MOE_OK) return cli_fail(CMD);
    moe_chat_format f = (moe_chat_format)-1;
    if (o->chat_template && moe_chat_format_from_name(o->chat_template, &f) != MOE_OK)
        return fprintf(stderr, "moe %s: --chat-template: %s\n", CMD, moe_last_error()), 1;
    moe_status st = moe_chat_template_load_dir(o->model, (int)f, *tok, info->bos_id, stop->n ? stop->ids[0] : -1, tpl);
    if (st == MOE_ERR_FORMAT && !o->chat_template) {
        fprintf(stderr, "moe %s: note: %s; /v1/chat/completions is off (--chat-template NAME turns it on)\n", CMD,
                moe_last_error());
        return 0;
    }
    if (st != MOE_OK) return cli_fail(CMD);
    (*tpl)->no_think = o->no_think;
    if (o->no_think && (*tpl)->format != MOE_CHAT_QWEN3)
        return fprintf(stderr, "moe %s: --no-think: the %s chat template has no switch for thinking\n", CMD,
                       moe_chat_format_name((*tpl)->format)), 1;
    return 0;
}

/* Before --model loads: the weights, --parallel caches of *context tokens
 * (memory a slot touches only as its positions fill: this is the most it
 * takes) and a step's activations against the memory available, or the
 * GPU's free memory when it loads there. *context 0: the model's trained context (4096 at most), or
 * less where that does not fit, with a note. 0, or 1 after a refusal that
 * names the numbers. */
static int check_memory(const cli_opts *o, const serve_opts *so, int *context)
{
    if (!o->model) return 0;
    moe_model_options mo = moe_model_default_options();
    mo.fuse_gate_up = o->fuse_gate_up;
    mo.activations = o->activations;
    mo.kv_dtype = o->kv_dtype;
    mo.device = cli_device(o->device);
    moe_model_memory mem;
    if (moe_model_estimate_memory(o->model, &mo, so->parallel, so->batch_tokens, &mem) != MOE_OK) return 0;
    int trained = mem.max_position > 0 && mem.max_position < 4096 ? mem.max_position : 4096;
    int fit = mem.max_context / so->parallel;   /* a slot's share of the positions that fit */
    if (!*context) {
        *context = fit < trained ? fit : trained;
        if (fit >= 1 && fit < trained)
            fprintf(stderr, "moe %s: note: a context of %d tokens a slot, what %d slots fit in %s (--max-context "
                    "and --parallel set them)\n", CMD, fit, so->parallel, cli_memory_name(&mem));
        if (fit >= 1) return 0;
    } else if (*context <= fit) {
        return 0;
    }
    if (mem.max_context < 1)
        return fprintf(stderr, "moe %s: the weights and a step's activations alone do not fit in %s: lower "
                       "--batch-tokens, or use a smaller or more quantized checkpoint\n", CMD, cli_memory_name(&mem)), 1;
    fprintf(stderr, "moe %s: %d slots of %d tokens do not fit in %s: at most %d tokens of KV cache fit beside the "
            "weights; lower --max-context or --parallel%s\n", CMD, so->parallel, *context, cli_memory_name(&mem),
            mem.max_context, cli_kv_smaller_hint(mem.kv_dtype));
    return 1;
}

int serve_main(int argc, char **argv)
{
    if (cli_help(argc, argv, serve_usage)) return 0;
    serve_opts so;
    char **rest = malloc(sizeof(char *) * (size_t)(argc + 1));
    int n_rest, rc;
    if (!rest) return 1;
    cli_opts o;
    rc = parse_serve(argc, argv, &so, rest, &n_rest);
    if (!rc)
        rc = cli_parse(CMD, n_rest, rest, "model max-context chat-template no-think arch synthetic-bits synthetic-layers "
                       "layers seed device threads isa fuse-gate-up activations kv-cache", &o);
    free(rest);
    if (rc) return rc;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    int max_context = o.max_context;
    if (check_memory(&o, &so, &max_context)) return 1;
    cli_progress_init(&o);
    moe_model *m = cli_open_model(CMD, &o);
    if (!m) return 1;
    moe_model_info info = moe_model_get_info(m);
    moe_stop_ids stop = { 0 };
    moe_tokenizer *tok = NULL;
    moe_chat_template *tpl = NULL;
    rc = o.model && moe_text_stop_ids(o.model, &info, &stop) != MOE_OK ? cli_fail(CMD) : 0;
    if (!rc && o.model) rc = open_text(&o, &info, &stop, &tok, &tpl);
    if (!rc && tok && moe_tokenizer_vocab_size(tok) > info.vocab_size)
        fprintf(stderr, "moe %s: note: the tokenizer has %d ids and the model %d; prompts with ids beyond are refused\n",
                CMD, moe_tokenizer_vocab_size(tok), info.vocab_size);
    if (!max_context) max_context = info.max_position > 0 && info.max_position < 4096 ? info.max_position : 4096;
    moe_server_config sc = { .host = so.host, .port = so.port, .api_key = so.api_key,
                             .model_id = so.alias ? so.alias : o.model ? base_name(o.model)
                                                                       : moe_model_synthetic_name(o.arch ? o.arch : "olmoe"),
                             .max_body = (size_t)so.max_body, .parallel = so.parallel, .max_context = max_context,
                             .batch_tokens = so.batch_tokens, .queue = so.queue, .model = m, .tok = tok, .tpl = tpl,
                             .eos = &stop };
    const char *delay = getenv("MOE_SERVE_TEST_STEP_MS");
    if (delay) sc.step_delay_ms = atoi(delay);
    if (!rc) rc = moe_server_run(&sc);
    moe_chat_template_free(tpl);
    moe_tokenizer_free(tok);
    moe_model_free(m);
    return rc;
}
