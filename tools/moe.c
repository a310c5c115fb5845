/* tools/moe.c — main of the `moe` command: picks the subcommand named by
 * argv[1] and hands it the rest. Each subcommand parses its own options and
 * prints its own output; nothing else happens here. */
#include <stdio.h>
#include <string.h>

#include "bench_layer.h"
#include "commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);   /* argv[0] is the subcommand's name */
    void (*usage)(FILE *f);
    const char *summary;
} subcommand;

static const subcommand COMMANDS[] = {
    { "generate", generate_main, generate_usage, "continue a prompt (text or token ids), streaming the result" },
    { "chat", chat_main, chat_usage, "chat with an instruct model on stdin/stdout (its chat template, KV cache kept)" },
    { "serve", serve_main, serve_usage, "an OpenAI-compatible HTTP server, requests batched together" },
    { "logits", logits_main, logits_usage, "write the logits of every position as a .npy file" },
    { "bench", bench_main, bench_usage, "end-to-end benchmark: TTFT, prompt and decode tok/s, peak memory" },
    { "tokenize", tokenize_main, tokenize_usage, "the token ids and pieces of a text (the checkpoint's tokenizer.json)" },
    { "bench-layer", bench_layer_main, bench_layer_usage,
      "benchmark the SwitchGLU layer, fused vs unfused, against machine floors" },
    { "convert", convert_main, convert_usage, "quantize a float checkpoint into the MLX layout (as mlx-lm convert -q)" },
    { "inspect", inspect_main, inspect_usage, "what a checkpoint holds: layout, dtypes, quantization, sizes" },
};

enum { NCOMMANDS = sizeof COMMANDS / sizeof COMMANDS[0] };

static void usage(FILE *f)
{
    fprintf(f, "usage: moe <subcommand> [options]\n\nsubcommands:\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-14s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "  %-14s %s\n", "help [NAME]", "this list, or NAME's options");
    fprintf(f, "\nRun 'moe <subcommand> --help' for its options.\n");
}

static const subcommand *find(const char *name)
{
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
    return NULL;
}

/* Missing or unknown subcommand: the list on stderr, exit status 2. */
static int unknown(const char *name)
{
    if (name) fprintf(stderr, "moe: unknown subcommand '%s'\n\n", name);
    else fprintf(stderr, "moe: no subcommand given\n\n");
    usage(stderr);
    return 2;
}

/* `moe help`, `moe --help`: the list on stdout (asked for, so not an error);
 * `moe help NAME`: NAME's options. */
static int help(const char *name)
{
    if (!name) {
        usage(stdout);
        return 0;
    }
    const subcommand *c = find(name);
    if (!c) return unknown(name);
    c->usage(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return unknown(NULL);
    const char *name = argv[1];
    if (!strcmp(name, "help") || !strcmp(name, "--help") || !strcmp(name, "-h"))
        return help(argc > 2 ? argv[2] : NULL);
    const subcommand *c = find(name);
    if (!c) return unknown(name);
    return c->run(argc - 1, argv + 1);
}
