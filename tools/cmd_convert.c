/* tools/cmd_convert.c — `moe convert`: a float checkpoint into the MLX
 * layout, quantized (moe/checkpoint.h says what is written and how).
 *
 * Two environment variables exist for the tests only:
 *   MOE_CONVERT_SHARD_BYTES=N     shard at N bytes instead of 5 GiB, so the
 *                                 sharding shows on tiny checkpoints;
 *   MOE_CONVERT_TEST_KILL_AFTER=N the process sends itself SIGKILL after N
 *                                 source tensors, to show that a conversion
 *                                 killed mid-way leaves no partial output. */
#include <json-c/json.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_common.h"
#include "commands.h"
#include "core/memory.h"
#include "moe/checkpoint.h"

static const char *CMD = "convert";

void convert_usage(FILE *f)
{
    fprintf(f, "usage: moe convert --model DIR --out DIR [options]\n\n"
               "Quantizes a float checkpoint (olmoe, qwen3_moe or mixtral; Hugging Face layout, or MLX with\n"
               "stacked float experts) into the MLX layout, as mlx-lm's convert -q does: experts stacked,\n"
               "every linear and embedding whose input dim divides by the group size quantized (affine), norms\n"
               "in float, dense layers kept as they are, config.json with the quantization block, the tokenizer\n"
               "files copied. The output loads in moe and in mlx-lm.\n\n"
               "  --model DIR              float checkpoint (config.json + safetensors); only read\n"
               "  --out DIR                directory to create (written beside it, renamed when complete)\n"
               "  --bits 4|8               bits per weight (default 4)\n"
               "  --group-size 32|64|128   weights per scale and bias (default 64)\n"
               "  --dtype bf16|f16|f32     float tensors, scales and biases (default: the source's)\n"
               "  --router-bits 4|8        each layer's router at these bits (and --group-size) instead of\n"
               "                           the family's choice: qwen3_moe 8 bits group 64, as mlx-lm's\n"
               "                           predicate; olmoe and mixtral as everything else\n"
               "  --force                  replace --out if it exists (a model directory or an empty one)\n"
               "  --json                   print the result as one JSON object\n");
}

typedef struct {
    moe_convert_options c;
    int json;
} convert_args;

static int bad(const char *fmt, const char *what)
{
    fprintf(stderr, "moe convert: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(see moe convert --help)\n");
    return 2;
}

static int parse_choice(const char *v, const int *choices, int *out)
{
    char *end;
    long x = strtol(v, &end, 10);
    for (int i = 0; *v && !*end && choices[i]; i++)
        if (x == choices[i]) return *out = (int)x, 1;
    return 0;
}

static int parse_dtype(const char *v, moe_dtype *out)
{
    static const struct { const char *name; moe_dtype t; } T[] = {
        { "bf16", MOE_DTYPE_BF16 }, { "f16", MOE_DTYPE_F16 }, { "f32", MOE_DTYPE_F32 } };
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        if (!strcmp(v, T[i].name)) return *out = T[i].t, 1;
    return 0;
}

static int parse_args(int argc, char **argv, convert_args *a)
{
    static const int BITS[] = { 4, 8, 0 }, GROUPS[] = { 32, 64, 128, 0 };
    a->c = moe_convert_default_options();
    a->json = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "--force")) { a->c.force = 1; continue; }
        if (!strcmp(f, "--json")) { a->json = 1; continue; }
        static const char *const VALUED[] = { "--model", "--out", "--bits", "--group-size", "--dtype", "--router-bits", NULL };
        int known = 0;
        for (int k = 0; VALUED[k]; k++) known |= !strcmp(f, VALUED[k]);
        if (!known) return bad(f[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", f);
        if (i + 1 >= argc) return bad("'%s' needs a value", f);
        const char *v = argv[++i];
        int ok = 1;
        if (!strcmp(f, "--model")) a->c.model_dir = v;
        else if (!strcmp(f, "--out")) a->c.out_dir = v;
        else if (!strcmp(f, "--bits")) ok = parse_choice(v, BITS, &a->c.bits);
        else if (!strcmp(f, "--router-bits")) ok = parse_choice(v, BITS, &a->c.router_bits);
        else if (!strcmp(f, "--group-size")) ok = parse_choice(v, GROUPS, &a->c.group_size);
        else ok = parse_dtype(v, &a->c.dtype);
        if (!ok) {
            fprintf(stderr, "moe convert: bad value '%s' for '%s' (%s)\n", v, f,
                    !strcmp(f, "--group-size") ? "32, 64 or 128" : !strcmp(f, "--dtype") ? "bf16, f16 or f32" : "4 or 8");
            return 2;
        }
    }
    if (!a->c.model_dir) return bad("%s is required", "--model DIR");
    if (!a->c.out_dir) return bad("%s is required", "--out DIR");
    const char *shard = getenv("MOE_CONVERT_SHARD_BYTES");
    if (shard && *shard) a->c.max_shard_bytes = strtoull(shard, NULL, 10);
    return 0;
}

/* ---- progress, interruption ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct {
    long kill_after, calls;
    double last;
} progress_state;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int progress(void *user, uint64_t done, uint64_t total, const char *module)
{
    progress_state *p = user;
    if (p->kill_after > 0 && ++p->calls >= p->kill_after) raise(SIGKILL); /* the test knob */
    double t = now_s();
    if (t - p->last >= 0.1 || done == total) {
        p->last = t;
        cli_progress("converting %3.0f%% (%.1f of %.1f MB) %s", total ? 100.0 * (double)done / (double)total : 100.0,
                     (double)done / 1e6, (double)total / 1e6, module);
    }
    return interrupted;
}

static const char *dtype_label(moe_dtype t) { return t == MOE_DTYPE_COUNT ? "mixed" : moe_dtype_name(t); }

static void print_result(const convert_args *a, const moe_convert_result *r, double seconds)
{
    size_t rss = moe_peak_rss_bytes();
    if (r->stale_removed)
        fprintf(stderr, "moe convert: removed %d director%s %s.tmp.* left by a killed conversion\n", r->stale_removed,
                r->stale_removed == 1 ? "y" : "ies", a->c.out_dir);
    if (a->json) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "out", json_object_new_string(a->c.out_dir));
        json_object_object_add(o, "bits", json_object_new_int(a->c.bits));
        json_object_object_add(o, "group_size", json_object_new_int(a->c.group_size));
        json_object_object_add(o, "router_bits", r->router_bits ? json_object_new_int(r->router_bits) : NULL);
        json_object_object_add(o, "router_group_size",
                               r->router_bits ? json_object_new_int(r->router_group_size) : NULL);
        json_object_object_add(o, "dtype", json_object_new_string(dtype_label(r->dtype)));
        json_object_object_add(o, "tensors", json_object_new_int(r->tensors));
        json_object_object_add(o, "shards", json_object_new_int(r->shards));
        json_object_object_add(o, "quantized_modules", json_object_new_int(r->quantized_modules));
        json_object_object_add(o, "float_modules", json_object_new_int(r->float_modules));
        json_object_object_add(o, "tensor_bytes", json_object_new_int64((int64_t)r->tensor_bytes));
        json_object_object_add(o, "parameters", json_object_new_int64(r->parameters));
        char secs[32];
        snprintf(secs, sizeof secs, "%.3f", seconds);
        json_object_object_add(o, "seconds", json_object_new_double_s(seconds, secs));
        json_object_object_add(o, "peak_rss_bytes", json_object_new_int64((int64_t)rss));
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        return;
    }
    printf("wrote %s: %d tensors in %d file%s, %.1f MB, %lld parameters; %d modules %d-bit group %d", a->c.out_dir,
           r->tensors, r->shards, r->shards == 1 ? "" : "s", (double)r->tensor_bytes / 1e6, (long long)r->parameters,
           r->quantized_modules, a->c.bits, a->c.group_size);
    if (r->router_bits) printf(" (routers %d-bit group %d)", r->router_bits, r->router_group_size);
    printf(", %d in float; %s float values and scales; %.1f s, peak RSS %.1f MB\n", r->float_modules,
           dtype_label(r->dtype), seconds, (double)rss / 1e6);
}

int convert_main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        convert_usage(stdout);
        return 0;
    }
    convert_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    const char *kill_after = getenv("MOE_CONVERT_TEST_KILL_AFTER");
    progress_state ps = { .kill_after = kill_after ? atol(kill_after) : 0 };
    a.c.progress = progress;
    a.c.progress_user = &ps;
    cli_opts po = { .json = a.json };
    cli_progress_init(&po);
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    double t0 = now_s();
    moe_convert_result r;
    if (moe_checkpoint_convert(&a.c, &r) != MOE_OK) return cli_fail(CMD);
    cli_progress_done();
    print_result(&a, &r, now_s() - t0);
    return 0;
}
