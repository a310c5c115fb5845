/* tools/cmd_inspect.c — `moe inspect`: what a checkpoint directory holds
 * (moe_checkpoint_inspect), as a table or one JSON object. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "commands.h"
#include "moe/checkpoint.h"

static const char *CMD = "inspect";

void inspect_usage(FILE *f)
{
    fprintf(f, "usage: moe inspect --model DIR [--json]\n\n"
               "Describes a checkpoint of any family moe runs (olmoe, qwen3_moe, mixtral): architecture (with\n"
               "its QK-norm and dense layers), layout (hub: one tensor per expert; mlx: experts stacked), dtypes,\n"
               "how each module is stored (modules alike but for layer and expert numbers grouped), parameter\n"
               "count, bytes in the files and bytes resident once moe has loaded it.\n\n"
               "  --model DIR              checkpoint directory (config.json + safetensors)\n"
               "  --json                   print one JSON object\n");
}

static void human_bytes(uint64_t b, char *buf, size_t n)
{
    static const char *const UNIT[] = { "B", "KB", "MB", "GB", "TB" };
    double v = (double)b;
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", v, UNIT[u]);
}

static void shape_text(const moe_checkpoint_group *g, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < g->ndim && used < n; d++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", d ? ", " : "", (long long)g->shape[d]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

static void stored_text(const moe_checkpoint_group *g, char *buf, size_t n)
{
    if (g->bits) snprintf(buf, n, "q%d g%d %s", g->bits, g->group_size, g->dtype);
    else snprintf(buf, n, "%s", g->dtype);
}

static const char *qk_norm_text(const char *qk_norm)
{
    if (!strcmp(qk_norm, "whole")) return "QK-norm over each projection";
    if (!strcmp(qk_norm, "per_head")) return "QK-norm per head";
    return "no QK-norm";
}

static void print_text(const char *dir, const moe_checkpoint_info *in)
{
    char a[32], b[32];
    printf("checkpoint    %s\n", dir);
    printf("architecture  %s: %d layers, hidden %d, %d heads (%d kv) of %d, %s, %d experts (top %d) of hidden %d, "
           "vocab %d, %s head\n", in->architecture, in->num_layers, in->hidden_size, in->num_heads, in->num_kv_heads,
           in->head_dim, qk_norm_text(in->qk_norm), in->num_experts, in->top_k, in->expert_hidden, in->vocab_size,
           in->tie_word_embeddings ? "tied" : "untied");
    if (in->num_dense_layers) {
        printf("dense layers  ");
        for (int i = 0; i < in->num_dense_layers; i++) printf("%s%d", i ? ", " : "", in->dense_layers[i]);
        printf(" (a dense MLP of hidden %d instead of the experts)\n", in->dense_hidden);
    }
    printf("layout        %s (%s), %s\n", in->layout,
           !strcmp(in->layout, "mlx") ? "experts stacked" : "one tensor per expert",
           in->quantized ? "quantized" : "float");
    printf("tensors       %d:", in->tensors);
    for (int i = 0; i < in->num_dtypes; i++) {
        human_bytes(in->dtypes[i].bytes, a, sizeof a);
        printf("%s %s %d (%s)", i ? "," : "", in->dtypes[i].dtype, in->dtypes[i].tensors, a);
    }
    human_bytes(in->tensor_bytes, a, sizeof a);
    human_bytes(in->resident_bytes, b, sizeof b);
    printf("\nparameters    %lld\n", (long long)in->parameters);
    printf("bytes         %s in the files, %s resident once loaded\n\n", a, b);
    int w = 6;
    for (int i = 0; i < in->num_groups; i++) {
        int len = (int)strlen(in->groups[i].pattern);
        if (len > w) w = len;
    }
    printf("%-*s  %5s  %-14s  %-16s  %12s  %9s\n", w, "module", "count", "stored", "shape", "parameters", "bytes");
    for (int i = 0; i < in->num_groups; i++) {
        const moe_checkpoint_group *g = &in->groups[i];
        char stored[48], shape[96];
        stored_text(g, stored, sizeof stored);
        shape_text(g, shape, sizeof shape);
        human_bytes(g->bytes, a, sizeof a);
        printf("%-*s  %5d  %-14s  %-16s  %12lld  %9s\n", w, g->pattern, g->count, stored, shape,
               (long long)g->parameters, a);
    }
}

static void print_json(const char *dir, const moe_checkpoint_info *in)
{
    json_object *o = json_object_new_object(), *c = json_object_new_object(), *dt = json_object_new_array(),
                *mods = json_object_new_array();
    json_object_object_add(o, "checkpoint", json_object_new_string(dir));
    json_object_object_add(o, "architecture", json_object_new_string(in->architecture));
    json_object_object_add(o, "layout", json_object_new_string(in->layout));
    json_object_object_add(o, "quantized", json_object_new_boolean(in->quantized));
    const struct { const char *k; int v; } F[] = {
        { "num_layers", in->num_layers },       { "hidden_size", in->hidden_size },
        { "num_heads", in->num_heads },         { "num_kv_heads", in->num_kv_heads },
        { "head_dim", in->head_dim },           { "num_experts", in->num_experts },
        { "top_k", in->top_k },                 { "expert_hidden", in->expert_hidden },
        { "vocab_size", in->vocab_size },       { "tie_word_embeddings", in->tie_word_embeddings },
    };
    for (size_t i = 0; i < sizeof F / sizeof F[0]; i++) json_object_object_add(c, F[i].k, json_object_new_int(F[i].v));
    json_object_object_add(c, "qk_norm", json_object_new_string(in->qk_norm));
    json_object *dense = json_object_new_array();
    for (int i = 0; i < in->num_dense_layers; i++)
        json_object_array_add(dense, json_object_new_int(in->dense_layers[i]));
    json_object_object_add(c, "dense_layers", dense);
    json_object_object_add(c, "dense_hidden", json_object_new_int(in->dense_hidden));
    json_object_object_add(o, "config", c);
    json_object_object_add(o, "tensors", json_object_new_int(in->tensors));
    for (int i = 0; i < in->num_dtypes; i++) {
        json_object *d = json_object_new_object();
        json_object_object_add(d, "dtype", json_object_new_string(in->dtypes[i].dtype));
        json_object_object_add(d, "tensors", json_object_new_int(in->dtypes[i].tensors));
        json_object_object_add(d, "bytes", json_object_new_int64((int64_t)in->dtypes[i].bytes));
        json_object_array_add(dt, d);
    }
    json_object_object_add(o, "dtypes", dt);
    for (int i = 0; i < in->num_groups; i++) {
        const moe_checkpoint_group *g = &in->groups[i];
        json_object *m = json_object_new_object(), *shape = json_object_new_array();
        json_object_object_add(m, "module", json_object_new_string(g->pattern));
        json_object_object_add(m, "count", json_object_new_int(g->count));
        json_object_object_add(m, "bits", json_object_new_int(g->bits));
        json_object_object_add(m, "group_size", json_object_new_int(g->group_size));
        json_object_object_add(m, "dtype", json_object_new_string(g->dtype));
        for (int d = 0; d < g->ndim; d++) json_object_array_add(shape, json_object_new_int64(g->shape[d]));
        json_object_object_add(m, "shape", shape);
        json_object_object_add(m, "parameters", json_object_new_int64(g->parameters));
        json_object_object_add(m, "bytes", json_object_new_int64((int64_t)g->bytes));
        json_object_array_add(mods, m);
    }
    json_object_object_add(o, "modules", mods);
    json_object_object_add(o, "parameters", json_object_new_int64(in->parameters));
    json_object_object_add(o, "tensor_bytes", json_object_new_int64((int64_t)in->tensor_bytes));
    json_object_object_add(o, "resident_bytes", json_object_new_int64((int64_t)in->resident_bytes));
    printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

int inspect_main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        inspect_usage(stdout);
        return 0;
    }
    cli_opts o;
    int rc = cli_parse(CMD, argc, argv, "model json", &o);
    if (rc) return rc;
    if (!o.model) return fprintf(stderr, "moe inspect: --model DIR is required\n"), 2;
    moe_checkpoint_info *info;
    if (moe_checkpoint_inspect(o.model, &info) != MOE_OK) return cli_fail(CMD);
    if (o.json) print_json(o.model, info);
    else print_text(o.model, info);
    moe_checkpoint_info_free(info);
    return 0;
}
