/* tools/cmd_logits.c — `moe logits`: the logits at every position of the
 * given tokens, as a float32 .npy [n_tokens, vocab]. With --prefill-step
 * smaller than the token count the pass runs in chunks over the KV cache;
 * the result is the same. */
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "io/npy.h"

static const char *CMD = "logits";

void logits_usage(FILE *f)
{
    fprintf(f, "usage: moe logits --model DIR --tokens 1,2,3 --out FILE.npy [options]\n\n"
               "Writes the logits at every position of one forward pass, float32 [n_tokens, vocab].\n\n"
               "  --model DIR              checkpoint directory (config.json + safetensors)\n"
               "  --tokens IDS             comma-separated token ids\n"
               "  --out FILE               .npy file to write (replaced only when complete)\n"
               "  --prefill-step N         tokens per forward chunk (default 2048)\n");
    cli_usage_runtime(f);
}

int logits_main(int argc, char **argv)
{
    if (cli_help(argc, argv, logits_usage)) return 0;
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv, "model tokens out prefill-step device threads isa fuse-gate-up activations kv-cache", &o);
    if (rc) return rc;
    if (!o.model) return fprintf(stderr, "moe logits: --model DIR is required\n"), 2;
    if (!o.out) return fprintf(stderr, "moe logits: --out FILE is required\n"), 2;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    int n;
    int32_t *ids = cli_parse_tokens(CMD, o.tokens, &n);
    if (!ids) return 2;
    int context = n;
    if (cli_check_memory(CMD, &o, &context)) return free(ids), 1;
    cli_progress_init(&o);
    moe_model *m = cli_open_model(CMD, &o);
    if (!m) return free(ids), 1;
    int vocab = moe_model_get_info(m).vocab_size, step = o.prefill_step < n ? o.prefill_step : n;
    float *logits = malloc(sizeof(float) * (size_t)n * vocab);
    moe_context *c = NULL;
    rc = 0;
    if (!logits) {
        fprintf(stderr, "moe logits: out of memory for %d x %d logits\n", n, vocab);
        rc = 1;
    }
    if (!rc && moe_context_create(m, n, step, &c) != MOE_OK) rc = cli_fail(CMD);
    for (int done = 0; !rc && done < n; done += step) {
        int k = n - done < step ? n - done : step;
        if (moe_context_eval(c, ids + done, k, logits + (size_t)done * vocab, 1) != MOE_OK) rc = cli_fail(CMD);
    }
    int64_t shape[2] = { n, vocab };
    if (!rc && moe_npy_write_f32(o.out, logits, 2, shape) != MOE_OK) rc = cli_fail(CMD);
    moe_context_free(c);
    moe_model_free(m);
    free(logits);
    free(ids);
    return rc;
}
