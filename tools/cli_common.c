/* tools/cli_common.c — see cli_common.h. */
#include "cli_common.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/dtype.h"
#include "moe/runtime.h"

static int bad(const char *cmd, const char *fmt, const char *what)
{
    fprintf(stderr, "moe %s: ", cmd);
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\n(see moe %s --help)\n", cmd);
    return 2;
}

/* Whole-string parses: "12x", "", "-3" are errors. */
static int parse_long(const char *s, long lo, long hi, long *out)
{
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    long v;
    if (!parse_long(s, lo, hi, &v)) return 0;
    *out = (int)v;
    return 1;
}

static int parse_float(const char *s, double lo, double hi, float *out)
{
    if (!s || !*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < lo || v > hi) return 0;
    *out = (float)v;
    return 1;
}

static int parse_switch(const char *s, int allow_auto, int *out)
{
    if (!strcmp(s, "on")) *out = 1;
    else if (!strcmp(s, "off")) *out = 0;
    else if (allow_auto && !strcmp(s, "auto")) *out = -1;
    else return 0;
    return 1;
}

static const char *const ACT_NAMES[] = { "float", "int8", "int8x2" };

const char *cli_act_name(moe_act_mode m) { return (unsigned)m < 3 ? ACT_NAMES[m] : "?"; }

const char *cli_kv_name(moe_dtype t)
{
    return t == MOE_DTYPE_F32 ? "f32" : t == MOE_DTYPE_F16 ? "f16" : t == MOE_DTYPE_Q8 ? "q8" : "?";
}

const char *cli_kv_smaller_hint(moe_dtype t)
{
    return t == MOE_DTYPE_F32 ? ", or use --kv-cache f16 or q8" : t == MOE_DTYPE_F16 ? ", or use --kv-cache q8" : "";
}

static int parse_activations(const char *s, int *out)
{
    if (!strcmp(s, "auto")) return *out = -1, 1;
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, ACT_NAMES[i])) return *out = i, 1;
    return 0;
}

static int allowed_flag(const char *allowed, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = allowed; (p = strstr(p, name)) != NULL; p += n)
        if ((p == allowed || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return 1;
    return 0;
}

static const char *const VALUELESS[] = { "json", "ignore-eos", "no-think", "profile", NULL };

/* One option with its value; 0 or 2. */
static int parse_one(const char *cmd, cli_opts *o, const char *name, const char *flag, const char *v)
{
    long l;
    int ok = 1;
    if (!strcmp(name, "model")) o->model = v;
    else if (!strcmp(name, "device")) o->device = v;
    else if (!strcmp(name, "threads")) ok = parse_int(v, 1, 4096, &o->threads);
    else if (!strcmp(name, "isa")) o->isa = v;
    else if (!strcmp(name, "fuse-gate-up"))
        ok = parse_switch(v, 0, &o->fuse_gate_up) || (!strcmp(cmd, "bench") && !strcmp(v, "both") && (o->fuse_gate_up = 2));
    else if (!strcmp(name, "activations")) ok = parse_activations(v, &o->activations);
    else if (!strcmp(name, "kv-cache"))
        ok = !strcmp(v, "auto") ? (o->kv_dtype = -1, 1) : !strcmp(v, "f32") ? (o->kv_dtype = MOE_DTYPE_F32, 1)
             : !strcmp(v, "f16") ? (o->kv_dtype = MOE_DTYPE_F16, 1) : !strcmp(v, "q8") ? (o->kv_dtype = MOE_DTYPE_Q8, 1)
             : 0;
    else if (!strcmp(name, "tokens")) o->tokens = v;
    else if (!strcmp(name, "out")) o->out = v;
    else if (!strcmp(name, "n")) ok = parse_int(v, 0, 1 << 24, &o->n_new) && (o->n_given = 1);
    else if (!strcmp(name, "prompt")) o->prompt = v;
    else if (!strcmp(name, "chat-template")) o->chat_template = v;
    else if (!strcmp(name, "system")) o->system = v;
    else if (!strcmp(name, "max-context")) ok = parse_int(v, 1, 1 << 30, &o->max_context);
    else if (!strcmp(name, "temp")) ok = parse_float(v, 0, 1e6, &o->temp);
    else if (!strcmp(name, "top-p")) ok = parse_float(v, 0, 1, &o->top_p);
    else if (!strcmp(name, "min-p")) ok = parse_float(v, 0, 0.999999, &o->min_p);
    else if (!strcmp(name, "top-k")) ok = parse_int(v, 0, 1 << 30, &o->top_k);
    else if (!strcmp(name, "seed")) ok = parse_long(v, 0, __LONG_MAX__, &l) && (o->seed = (uint64_t)l, 1);
    else if (!strcmp(name, "prefill-step")) ok = parse_int(v, 1, 1 << 24, &o->prefill_step);
    else if (!strcmp(name, "prompt-tokens")) ok = parse_int(v, 1, 1 << 24, &o->prompt_tokens);
    else if (!strcmp(name, "gen-tokens")) ok = parse_int(v, 0, 1 << 24, &o->gen_tokens);
    else if (!strcmp(name, "synthetic-bits")) ok = parse_int(v, 4, 16, &o->synthetic_bits) &&
                                                   (o->synthetic_bits == 4 || o->synthetic_bits == 8 || o->synthetic_bits == 16);
    else if (!strcmp(name, "synthetic-layers") || !strcmp(name, "layers")) ok = parse_int(v, 1, 1024, &o->synthetic_layers);
    else if (!strcmp(name, "arch")) ok = moe_model_synthetic_name(v) && (o->arch = v);
    else if (!strcmp(name, "repeat")) ok = parse_int(v, 1, 1000, &o->repeat);
    else if (!strcmp(name, "streams")) ok = parse_int(v, 1, 256, &o->streams);
    if (!ok) {
        fprintf(stderr, "moe %s: bad value '%s' for '%s'\n(see moe %s --help)\n", cmd, v, flag, cmd);
        return 2;
    }
    return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, const char *allowed, cli_opts *o)
{
    memset(o, 0, sizeof *o);
    o->device = "auto";
    o->fuse_gate_up = 1;
    o->activations = -1;
    o->kv_dtype = -1;
    o->n_new = 32;
    o->top_p = 1.0f;
    o->prefill_step = 2048;
    o->prompt_tokens = 512;
    o->gen_tokens = 64;
    o->synthetic_bits = 4;
    o->repeat = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *name;
        if (!strcmp(a, "-n")) name = "n";
        else if (a[0] == '-' && a[1] == '-' && a[2]) name = a + 2;
        else return bad(cmd, "unexpected argument '%s'", a);
        if (!allowed_flag(allowed, name)) return bad(cmd, "unknown option '%s'", a);
        int valueless = 0;
        for (int k = 0; VALUELESS[k]; k++) valueless |= !strcmp(VALUELESS[k], name);
        if (valueless) {
            if (!strcmp(name, "json")) o->json = 1;
            if (!strcmp(name, "ignore-eos")) o->ignore_eos = 1;
            if (!strcmp(name, "profile")) o->profile = 1;
            if (!strcmp(name, "no-think")) o->no_think = 1;
            continue;
        }
        if (i + 1 >= argc) return bad(cmd, "'%s' needs a value", a);
        int rc = parse_one(cmd, o, name, a, argv[++i]);
        if (rc) return rc;
    }
    return 0;
}

void cli_note_context(const cli_opts *o, const moe_model_info *info, int n)
{
    if (!o->json && info->max_position > 0 && n > info->max_position)
        fprintf(stderr, "note: %d tokens run past the %d-token context the model was trained for\n", n,
                info->max_position);
}

int cli_help(int argc, char **argv, void (*usage)(FILE *))
{
    if (argc < 2 || (strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0)) return 0;
    usage(stdout);
    return 1;
}

int cli_fail(const char *cmd)
{
    cli_progress_done();
    fprintf(stderr, "moe %s: %s\n", cmd, moe_last_error());
    return 1;
}

int cli_device(const char *name)
{
    return !strcmp(name, "auto") ? MOE_DEVICE_AUTO : !strcmp(name, "cpu") ? MOE_DEVICE_CPU
           : !strcmp(name, "cuda") ? MOE_DEVICE_CUDA : -2;
}

int cli_setup_runtime(const char *cmd, const cli_opts *o)
{
    int device = cli_device(o->device);
    if (device == -2) {
        fprintf(stderr, "moe %s: unknown device '%s' (choose cuda, cpu or auto)\n", cmd, o->device);
        return 2;
    }
    if (device == MOE_DEVICE_CUDA && moe_device_available(MOE_DEVICE_CUDA) != MOE_OK) {
        fprintf(stderr, "moe %s: --device cuda is not available: %s; use --device cpu\n", cmd, moe_last_error());
        return 2;
    }
    if (o->threads && moe_set_num_threads(o->threads) != MOE_OK) return cli_fail(cmd) + 1;
    if (o->isa && moe_cpu_select_isa(o->isa) != MOE_OK) return cli_fail(cmd) + 1;
    return 0;
}

/* ---- progress ---- */

static int progress_on;

void cli_progress_init(const cli_opts *o) { cli_progress_set(!o->json && isatty(STDERR_FILENO)); }
void cli_progress_set(int on) { progress_on = on; }

void cli_progress(const char *fmt, ...)
{
    if (!progress_on) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "\r\033[K");
    vfprintf(stderr, fmt, ap);
    fflush(stderr);
    va_end(ap);
}

void cli_progress_done(void)
{
    if (progress_on) fprintf(stderr, "\r\033[K");
}

static void load_progress(void *user, int done, int total, const char *what)
{
    (void)user;
    cli_progress("%s: layer %d/%d", what, done, total);
}

static moe_model_options model_options(const cli_opts *o)
{
    moe_model_options mo = moe_model_default_options();
    mo.fuse_gate_up = o->fuse_gate_up;
    mo.activations = o->activations;
    mo.kv_dtype = o->kv_dtype;
    mo.device = cli_device(o->device);
    mo.profile = o->profile;
    return mo;
}

/* "3.2 GB", "45.1 MB": sizes as people read them */
static const char *human_bytes(size_t b, char *buf, size_t n)
{
    if (b == SIZE_MAX) snprintf(buf, n, "more than %.0f EB", (double)SIZE_MAX / 1e18);
    else if (b >= 1000000000) snprintf(buf, n, "%.1f GB", (double)b / 1e9);
    else snprintf(buf, n, "%.1f MB", (double)b / 1e6);
    return buf;
}

const char *cli_memory_name(const moe_model_memory *m)
{
    return m->device == MOE_DEVICE_CUDA ? "GPU 0's free memory" : "the memory available";
}

int cli_check_memory(const char *cmd, const cli_opts *o, int *context)
{
    if (!o->model) return 0;
    moe_model_options mo = model_options(o);
    moe_model_memory mem;
    int asked = *context;
    /* a context to be chosen is sized from a full chunk's activations */
    if (moe_model_estimate_memory(o->model, &mo, asked > 0 ? asked : o->prefill_step, o->prefill_step, &mem) != MOE_OK)
        return 0;
    if (!asked) {
        int fit = mem.max_context < mem.max_position ? mem.max_context : mem.max_position;
        if (fit >= 1 && fit < mem.max_position && !o->json)
            fprintf(stderr, "note: a context of %d tokens, what fits in %s (the model was trained for %d; "
                    "--max-context sets it)\n", fit, cli_memory_name(&mem), mem.max_position);
        if (fit >= 1) {
            *context = fit;
            return 0;
        }
    } else if (mem.fits)
        return 0;
    char a[32], w[32], kv[32], act[32], have[32];
    int gpu = mem.device == MOE_DEVICE_CUDA;
    fprintf(stderr, "moe %s: the model needs %s (weights %s, KV cache %s for %d tokens in %s, activations %s for "
            "chunks of %d) and %s has %s %s; ", cmd, human_bytes(mem.total, a, sizeof a),
            human_bytes(mem.weights, w, sizeof w), human_bytes(mem.kv_cache, kv, sizeof kv),
            asked > 0 ? asked : o->prefill_step,
            moe_dtype_name(mem.kv_dtype), human_bytes(mem.activations, act, sizeof act), o->prefill_step,
            gpu ? "GPU 0" : "this machine", human_bytes(mem.available, have, sizeof have), gpu ? "free" : "available");
    if (mem.max_context >= 1)
        fprintf(stderr, "at most %d tokens of context fit: lower --max-context%s, or --prefill-step%s\n",
                mem.max_context, strcmp(cmd, "generate") ? "" : " or -n",
                cli_kv_smaller_hint(mem.kv_dtype));
    else
        fprintf(stderr, "the weights do not fit beside one chunk: lower --prefill-step, or use a smaller or more "
                "quantized checkpoint\n");
    return 1;
}

moe_model *cli_open_model(const char *cmd, const cli_opts *o)
{
    moe_model_options mo = model_options(o);
    mo.progress = load_progress;
    moe_model *m = NULL;
    moe_status st = o->model ? moe_model_load(o->model, &mo, &m)
                             : moe_model_synthetic(o->arch, o->synthetic_bits, o->synthetic_layers, o->seed, &mo, &m);
    cli_progress_done();
    if (st != MOE_OK) {
        cli_fail(cmd);
        return NULL;
    }
    return m;
}

int32_t *cli_parse_tokens(const char *cmd, const char *list, int *n)
{
    *n = 0;
    if (!list || !*list) {
        fprintf(stderr, "moe %s: --tokens is required (comma-separated token ids, e.g. --tokens 1,2,3)\n", cmd);
        return NULL;
    }
    int cap = 1;
    for (const char *p = list; *p; p++) cap += *p == ',';
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) {
        fprintf(stderr, "moe %s: out of memory\n", cmd);
        return NULL;
    }
    const char *p = list;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end != ',' && *end != '\0')) {
            fprintf(stderr, "moe %s: --tokens: '%.*s' at position %d is not a token id\n", cmd,
                    (int)strcspn(p, ","), p, *n);
            free(ids);
            return NULL;
        }
        ids[(*n)++] = (int32_t)v;
        if (*end == '\0') break;
        p = end + 1;
    }
    return ids;
}

void cli_usage_runtime(FILE *f)
{
    fprintf(f, "  --device cuda|cpu|auto   where to run (auto, the default: cuda when moe was built with CUDA\n"
               "                           and a GPU is present, else cpu)\n"
               "  --threads N              threads (default: one per physical core)\n"
               "  --isa NAME               CPU kernel set: avx512vnni, avx512, avxvnni, avx2, portable (default: best)\n"
               "  --fuse-gate-up on|off    fused gate-up expert projection (default on)\n"
               "  --activations auto|float|int8|int8x2\n"
               "                           how activations meet quantized weights: float (exact), int8 (per\n"
               "                           weight group, int8 dot products, ~0.5%% error a product), int8x2\n"
               "                           (int8 plus a residual digit: near-float accuracy); auto (default):\n"
               "                           int8x2 where the CPU has int8 dot products, else float\n"
               "  --kv-cache auto|f32|f16|q8\n"
               "                           the KV cache's element type (auto: f16 for quantized weights\n"
               "                           with int8 activations or on a GPU, f32 on the exact paths); q8:\n"
               "                           8-bit codes in groups of 32 with a scale each, 53%% of f16's\n"
               "                           bytes (faster decode at long context, ~0.4%% error an element)\n");
}

/* ---- results ---- */

static json_object *jnum(double v, int decimals)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return json_object_new_double_s(v, buf);
}

void cli_metrics_json(json_object *obj, const moe_gen_metrics *mt)
{
    json_object_object_add(obj, "prompt_tokens", json_object_new_int(mt->prompt_tokens));
    json_object_object_add(obj, "gen_tokens", json_object_new_int(mt->gen_tokens));
    json_object_object_add(obj, "ttft_s", jnum(mt->ttft_s, 4));
    json_object_object_add(obj, "total_s", jnum(mt->total_s, 4));
    json_object_object_add(obj, "prefill_tps", jnum(mt->prefill_tps, 2));
    json_object_object_add(obj, "prompt_gen_tps", jnum(mt->prompt_gen_tps, 2));
    json_object_object_add(obj, "decode_tps", jnum(mt->decode_tps, 2));
    json_object_object_add(obj, "peak_rss_bytes", json_object_new_int64((int64_t)mt->peak_rss_bytes));
}

void cli_metrics_print(FILE *f, const moe_gen_metrics *mt)
{
    fprintf(f, "prompt %d tokens: %.2f tok/s | generated %d: decode %.2f tok/s | TTFT %.3f s | total %.3f s "
               "(%.2f tok/s prompt+generation) | peak RSS %.2f GiB\n",
            mt->prompt_tokens, mt->prefill_tps, mt->gen_tokens, mt->decode_tps, mt->ttft_s, mt->total_s,
            mt->prompt_gen_tps, (double)mt->peak_rss_bytes / (1u << 30));
}

moe_sampler *cli_make_sampler(const char *cmd, const cli_opts *o, int vocab)
{
    moe_sampler_config sc = moe_sampler_default_config();
    sc.temperature = o->temp;
    sc.top_k = o->top_k;
    sc.top_p = o->top_p;
    sc.min_p = o->min_p;
    sc.seed = o->seed;
    moe_sampler *s = NULL;
    if (moe_sampler_create(&sc, vocab, &s) != MOE_OK) cli_fail(cmd);
    return s;
}
