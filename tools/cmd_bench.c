/* tools/cmd_bench.c — `moe bench`: the end-to-end benchmark. A seeded
 * random prompt of P tokens, greedy generation of G tokens (EOS ignored),
 * on a checkpoint or on a built-in synthetic model (OLMoE-1B-7B,
 * Qwen3-30B-A3B or Mixtral-8x7B shapes); time to first
 * token, prompt and decode tokens/s, peak RSS, and decode's memory traffic
 * against the read bandwidth probed right after each run. With
 * --fuse-gate-up both, fused and unfused runs alternate on the same model
 * (fusion is switched in place) so the two are compared under the same
 * conditions. */
#include <stdlib.h>
#include <string.h>

#include "bench_probe.h"
#include "bench_profile.h"
#include "bench_streams.h"
#include "cli_common.h"
#include "commands.h"
#include "core/memory.h"
#include "moe/runtime.h"

static const char *CMD = "bench";
enum { MAX_RUNS = 1000 };
static const size_t PROBE_BYTES = (size_t)256 << 20;

void bench_usage(FILE *f)
{
    fprintf(f, "usage: moe bench [--model DIR] [options]\n\n"
               "End-to-end prompt processing and generation. Without --model it builds a synthetic\n"
               "model (a published model's exact shapes, seeded random weights, MLX 4-bit layout) in memory.\n\n"
               "  --model DIR              checkpoint directory (default: the synthetic model)\n"
               "  --arch NAME              synthetic model: olmoe (OLMoE-1B-7B, default), qwen3_moe\n"
               "                           (Qwen3-30B-A3B), mixtral (Mixtral-8x7B)\n"
               "  --synthetic-bits 4|8|16  synthetic weights: 4/8-bit affine or bf16 (default 4)\n"
               "  --layers N               synthetic model depth (default: the model's own;\n"
               "                           --synthetic-layers is the same)\n"
               "  --prompt-tokens P        prompt length (default 512)\n"
               "  --gen-tokens G           tokens to generate (default 64)\n"
               "  --prefill-step S         prompt tokens per forward chunk (default 2048)\n"
               "  --fuse-gate-up on|off|both   both: alternate fused and unfused runs (default on)\n"
               "  --repeat N               runs per setting; medians are reported (default 1)\n"
               "  --seed S                 seed of the prompt and the synthetic weights (default 0)\n"
               "  --profile                after the runs, one more that times each kind of operation:\n"
               "                           ms a prefill and ms a decode token, and each one's share\n"
               "  --streams N              N sequences decoding together (one batched forward a step, as\n"
               "                           moe serve runs them) against one alone: aggregate decode tok/s\n"
               "                           and the ratio; each stream its own seeded prompt of P tokens\n"
               "  --json                   one JSON object\n");
    cli_usage_runtime(f);
}

typedef struct {
    moe_gen_metrics mt;
    double bw_gbps;        /* read bandwidth probed right after the run */
    int fused;
} run_result;

typedef struct {
    const cli_opts *o;
    double t_start;
} progress_state;

static void on_progress(void *user, moe_gen_phase phase, int done, int total, double elapsed)
{
    (void)user;
    if (phase == MOE_PHASE_PREFILL)
        cli_progress("prefill %d/%d tokens, %.1f tok/s", done, total, done / (elapsed > 0 ? elapsed : 1e-9));
    else cli_progress("decode %d/%d tokens", done, total);
}

static double median_of(const run_result *r, int n, int fused, size_t field)
{
    double v[MAX_RUNS];
    int k = 0;
    for (int i = 0; i < n; i++)
        if (r[i].fused == fused) v[k++] = *(const double *)((const char *)&r[i] + field);
    return k ? bench_median(v, k) : 0;
}

/* Medians over the runs of one setting, as a metrics struct. */
static moe_gen_metrics medians(const run_result *r, int n, int fused, double *bw)
{
    moe_gen_metrics m = { 0 };
    for (int i = 0; i < n; i++)
        if (r[i].fused == fused) {
            m.prompt_tokens = r[i].mt.prompt_tokens;
            m.gen_tokens = r[i].mt.gen_tokens;
            if (r[i].mt.peak_rss_bytes > m.peak_rss_bytes) m.peak_rss_bytes = r[i].mt.peak_rss_bytes;
        }
#define MED(f) median_of(r, n, fused, offsetof(run_result, mt) + offsetof(moe_gen_metrics, f))
    m.ttft_s = MED(ttft_s);
    m.total_s = MED(total_s);
    m.prefill_tps = MED(prefill_tps);
    m.prompt_gen_tps = MED(prompt_gen_tps);
    m.decode_tps = MED(decode_tps);
#undef MED
    *bw = median_of(r, n, fused, offsetof(run_result, bw_gbps));
    return m;
}

static json_object *setting_json(const moe_gen_metrics *m, double bw, double active_bytes, int fused)
{
    json_object *o = json_object_new_object();
    cli_metrics_json(o, m);
    json_object_object_add(o, "fuse_gate_up", json_object_new_boolean(fused));
    json_object_object_add(o, "bandwidth_gbps", json_object_new_double(bw));
    double gbps = m->decode_tps * active_bytes / 1e9;
    json_object_object_add(o, "decode_gbps", json_object_new_double(gbps));
    json_object_object_add(o, "decode_bw_share", json_object_new_double(bw > 0 ? gbps / bw : 0));
    return o;
}

static void print_setting(const char *label, const moe_gen_metrics *m, double bw, double active_bytes)
{
    double gbps = m->decode_tps * active_bytes / 1e9;
    printf("%-9s prefill %8.2f tok/s | TTFT %7.3f s | decode %6.2f tok/s = %5.1f GB/s, %3.0f%% of %5.1f GB/s "
           "probed | prompt+gen %7.2f tok/s | peak RSS %.2f GiB\n",
           label, m->prefill_tps, m->ttft_s, m->decode_tps, gbps, bw > 0 ? 100 * gbps / bw : 0, bw,
           m->prompt_gen_tps, (double)m->peak_rss_bytes / (1u << 30));
}

/* One more run with the profile read after the prompt and after decoding:
 * ms a prompt token and ms a decode token by kind of operation. */
static int profile_run(const cli_opts *o, moe_model *m, moe_context *c, const int32_t *prompt, json_object *out)
{
    int V = moe_model_get_info(m).vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!logits) return fprintf(stderr, "moe bench: out of memory\n"), 1;
    moe_context_reset(c);
    moe_model_profile_reset(m);
    for (int i = 0; i < o->prompt_tokens; i += o->prefill_step) {
        int n = o->prompt_tokens - i < o->prefill_step ? o->prompt_tokens - i : o->prefill_step;
        if (moe_context_eval(c, prompt + i, n, logits, 0) != MOE_OK) return free(logits), cli_fail(CMD);
    }
    json_object *pre = bench_report_profile(o, m, "the prompt", o->prompt_tokens, "a token");
    moe_model_profile_reset(m);
    /* the context holds prompt + gen tokens: the first generated token
     * comes from the prompt's logits, so gen - 1 decode steps fit */
    int steps = o->gen_tokens - 1;
    for (int g = 0; g < steps; g++) {
        int32_t next = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[next]) next = v;
        if (moe_context_eval(c, &next, 1, logits, 0) != MOE_OK) return free(logits), cli_fail(CMD);
    }
    json_object *dec = steps > 0 ? bench_report_profile(o, m, "decode", steps, "a token") : NULL;
    if (out) {
        json_object_object_add(out, "profile_prefill_ms_per_token", pre);
        if (dec) json_object_object_add(out, "profile_decode_ms_per_token", dec);
    }
    free(logits);
    return 0;
}

static int run_all(const cli_opts *o, moe_model *m, moe_context *c, const int32_t *prompt, run_result *res, int *nres)
{
    moe_model_info info = moe_model_get_info(m);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(o->gen_tokens + 1));
    moe_sampler *greedy = cli_make_sampler(CMD, o, info.vocab_size);
    if (!out || !greedy) return free(out), moe_sampler_free(greedy), 1;
    int settings = o->fuse_gate_up == 2 ? 2 : 1;
    for (int rep = 0; rep < o->repeat; rep++)
        for (int s = 0; s < settings; s++) {
            int fused = settings == 2 ? (rep + s) % 2 == 0 : o->fuse_gate_up;
            if (moe_model_set_fused(m, fused) != MOE_OK) return free(out), moe_sampler_free(greedy), cli_fail(CMD);
            moe_context_reset(c);
            moe_reset_peak_rss();
            moe_gen_request req = { .max_new_tokens = o->gen_tokens, .prefill_step = o->prefill_step,
                                    .sampler = greedy, .on_progress = on_progress };
            run_result *r = &res[(*nres)++];
            int n_out;
            r->fused = fused;
            if (moe_generate(c, prompt, o->prompt_tokens, &req, out, &n_out, &r->mt) != MOE_OK)
                return free(out), moe_sampler_free(greedy), cli_fail(CMD);
            cli_progress("probing memory bandwidth");
            /* the memory the run read: the GPU's where the model lives there */
            if (!strcmp(info.device, "cuda")) {
                if (moe_device_bandwidth(MOE_DEVICE_CUDA, PROBE_BYTES, 5, &r->bw_gbps) != MOE_OK) r->bw_gbps = -1;
            } else {
                r->bw_gbps = bench_probe_bandwidth_gbps(PROBE_BYTES, 5);
            }
            cli_progress_done();
            if (!o->json)
                printf("run %d  %-7s prefill %8.2f tok/s | TTFT %7.3f s | decode %6.2f tok/s | bandwidth %5.1f GB/s\n",
                       *nres, fused ? "fused" : "unfused", r->mt.prefill_tps, r->mt.ttft_s, r->mt.decode_tps, r->bw_gbps);
            fflush(stdout);
        }
    free(out);
    moe_sampler_free(greedy);
    return 0;
}

int bench_main(int argc, char **argv)
{
    if (cli_help(argc, argv, bench_usage)) return 0;
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv,
                       "model arch layers synthetic-bits synthetic-layers prompt-tokens gen-tokens prefill-step fuse-gate-up "
                       "repeat seed json device threads isa activations kv-cache profile streams", &o);
    if (rc) return rc;
    if ((rc = cli_setup_runtime(CMD, &o))) return rc;
    if (o.repeat * (o.fuse_gate_up == 2 ? 2 : 1) > MAX_RUNS)
        return fprintf(stderr, "moe bench: at most %d runs\n", MAX_RUNS), 2;
    int context = (o.prompt_tokens + o.gen_tokens) * (o.streams ? o.streams : 1);   /* every stream's cache */
    if (cli_check_memory(CMD, &o, &context)) return 1;
    cli_progress_init(&o);
    /* the GPU's memory in use before the model, where there is a GPU: what
     * the run adds to it is its peak there (its buffers only grow) */
    size_t gpu_before = 0, gpu_total = 0;
    int gpu = cli_device(o.device) != MOE_DEVICE_CPU &&
              moe_device_memory(MOE_DEVICE_CUDA, &gpu_before, &gpu_total) == MOE_OK;
    double t0 = bench_now_s();
    moe_model *m = cli_open_model(CMD, &o);
    if (!m) return 1;
    double build_s = bench_now_s() - t0;
    moe_model_info info = moe_model_get_info(m);
    char synthetic[64];
    snprintf(synthetic, sizeof synthetic, "synthetic %s", moe_model_synthetic_name(o.arch));
    cli_note_context(&o, &info, o.prompt_tokens + o.gen_tokens);
    if (o.streams) {
        if (!o.json)
            printf("model %s: %d layers, %d experts top-%d, on %s, %d threads, %s kernels, %s activations, %s KV "
                   "cache; %d streams, prompts of %d tokens, %d generated each\n",
                   o.model ? o.model : synthetic, info.num_layers, info.num_experts, info.top_k, info.device,
                   moe_num_threads(), moe_cpu_isa(), cli_act_name(info.activations), cli_kv_name(info.kv_dtype),
                   o.streams, o.prompt_tokens, o.gen_tokens);
        rc = bench_streams(&o, m);
        moe_model_free(m);
        return rc;
    }

    /* a seeded random prompt */
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)o.prompt_tokens);
    uint64_t s = o.seed * 0x9e3779b97f4a7c15ull + 1;
    for (int i = 0; prompt && i < o.prompt_tokens; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        prompt[i] = (int32_t)(s % (uint64_t)info.vocab_size);
    }
    moe_context *c = NULL;
    run_result *res = calloc(MAX_RUNS, sizeof *res);
    int nres = 0;
    rc = !prompt || !res;
    if (!rc && moe_context_create(m, o.prompt_tokens + o.gen_tokens, o.prefill_step, &c) != MOE_OK) rc = cli_fail(CMD);
    if (!rc && !o.json)
        printf("model %s: %d layers, %d experts top-%d, %s weights %.2f GiB (%.3f GB read a decode token); "
               "on %s, %d threads, %s kernels, %s activations, %s KV cache; built in %.1f s\n"
               "decode traffic counts the active weights and the KV cache read (prompt + half the generated tokens)\n",
               o.model ? o.model : synthetic, info.num_layers, info.num_experts, info.top_k,
               info.bits ? (info.bits == 4 ? "4-bit" : "8-bit") : "float", (double)info.weight_bytes / (1u << 30),
               (double)info.active_bytes_per_token / 1e9, info.device, moe_num_threads(), moe_cpu_isa(),
               cli_act_name(info.activations), cli_kv_name(info.kv_dtype), build_s);
    if (!rc) rc = run_all(&o, m, c, prompt, res, &nres);
    if (!rc) {
        /* a decode step reads the active weights and the KV cache so far
         * (on average the prompt and half the generated tokens) */
        double kv_row = 2.0 * info.num_layers * (double)moe_kv_row_bytes(info.kv_dtype, info.num_kv_heads, info.head_dim);
        double kv_read = kv_row * (o.prompt_tokens + o.gen_tokens / 2.0);
        double active = (double)info.active_bytes_per_token + kv_read, bw_on, bw_off;
        int first = o.fuse_gate_up == 2 ? 1 : o.fuse_gate_up;
        moe_gen_metrics on = medians(res, nres, first, &bw_on);
        moe_gen_metrics off = medians(res, nres, 0, &bw_off);
        /* on a GPU: what the run holds there against what it must hold */
        size_t gpu_after = 0;
        gpu = gpu && !strcmp(info.device, "cuda") && moe_device_memory(MOE_DEVICE_CUDA, &gpu_after, &gpu_total) == MOE_OK;
        double gpu_held = gpu && gpu_after > gpu_before ? (double)(gpu_after - gpu_before) : 0;
        double kv_cache = kv_row * (o.prompt_tokens + o.gen_tokens);
        if (o.json) {
            json_object *obj = setting_json(&on, bw_on, active, first);
            json_object_object_add(obj, "model", json_object_new_string(o.model ? o.model : synthetic));
            json_object_object_add(obj, "arch", json_object_new_string(info.architecture));
            json_object_object_add(obj, "bits", json_object_new_int(info.bits));
            json_object_object_add(obj, "activations", json_object_new_string(cli_act_name(info.activations)));
            json_object_object_add(obj, "kv_cache", json_object_new_string(cli_kv_name(info.kv_dtype)));
            json_object_object_add(obj, "device", json_object_new_string(info.device));
            json_object_object_add(obj, "threads", json_object_new_int(moe_num_threads()));
            json_object_object_add(obj, "isa", json_object_new_string(moe_cpu_isa()));
            json_object_object_add(obj, "prefill_step", json_object_new_int(o.prefill_step));
            json_object_object_add(obj, "runs", json_object_new_int(nres));
            json_object_object_add(obj, "weight_bytes", json_object_new_int64((int64_t)info.weight_bytes));
            json_object_object_add(obj, "active_bytes_per_token", json_object_new_int64((int64_t)info.active_bytes_per_token));
            json_object_object_add(obj, "kv_bytes_per_decode_token", json_object_new_int64((int64_t)kv_read));
            if (gpu) {
                json_object_object_add(obj, "gpu_bytes_held", json_object_new_int64((int64_t)gpu_held));
                json_object_object_add(obj, "kv_cache_bytes", json_object_new_int64((int64_t)kv_cache));
            }
            if (o.fuse_gate_up == 2) json_object_object_add(obj, "unfused", setting_json(&off, bw_off, active, 0));
            if (o.profile) rc = profile_run(&o, m, c, prompt, obj);
            printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
            json_object_put(obj);
        } else {
            printf("medians of %d run%s:\n", o.repeat, o.repeat > 1 ? "s" : "");
            print_setting(first ? "fused" : "unfused", &on, bw_on, active);
            if (o.fuse_gate_up == 2) {
                print_setting("unfused", &off, bw_off, active);
                printf("fused/unfused speed: prefill %.3f, decode %.3f\n", on.prefill_tps / off.prefill_tps,
                       on.decode_tps / off.decode_tps);
            }
            if (gpu)
                printf("GPU memory held by the run: %.2f GiB (weights %.2f + KV cache %.2f = %.2f GiB; the rest "
                       "workspace); %.1f of %.1f GiB in use\n", gpu_held / (1u << 30),
                       (double)info.weight_bytes / (1u << 30), kv_cache / (1u << 30),
                       ((double)info.weight_bytes + kv_cache) / (1u << 30), (double)gpu_after / (1u << 30),
                       (double)gpu_total / (1u << 30));
            if (o.profile) rc = profile_run(&o, m, c, prompt, NULL);
        }
    }
    moe_context_free(c);
    moe_model_free(m);
    free(res);
    free(prompt);
    return rc;
}
