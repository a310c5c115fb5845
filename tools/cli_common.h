/* tools/cli_common.h — what the model-running subcommands (logits,
 * generate, bench) share: their options, opening the model they name, and
 * progress on a terminal. */
#ifndef MOE_TOOLS_CLI_COMMON_H
#define MOE_TOOLS_CLI_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "moe/generate.h"
#include "moe/model.h"

typedef struct {
    const char *model;          /* --model DIR */
    const char *device;         /* --device cuda|cpu|auto */
    int threads;                /* --threads N (0: all cores) */
    const char *isa;            /* --isa NAME */
    int fuse_gate_up;           /* --fuse-gate-up on|off */
    int activations;            /* --activations auto|float|int8|int8x2: -1 or a moe_act_mode */
    int kv_dtype;               /* --kv-cache auto|f32|f16|q8: -1 or a moe_dtype */
    int json;                   /* --json */
    const char *tokens;         /* --tokens 1,2,3 */
    const char *out;            /* --out FILE */
    int n_new;                  /* -n N */
    float temp, top_p, min_p;   /* --temp, --top-p, --min-p */
    int top_k;                  /* --top-k */
    uint64_t seed;              /* --seed */
    int prefill_step;           /* --prefill-step */
    int prompt_tokens, gen_tokens;   /* --prompt-tokens, --gen-tokens */
    int synthetic_bits;         /* --synthetic-bits 4|8|16 */
    int synthetic_layers;       /* --synthetic-layers N or --layers N (0: the model's own) */
    const char *arch;           /* --arch olmoe|qwen3_moe|mixtral: the synthetic model */
    int repeat;                 /* --repeat N */
    int ignore_eos;             /* --ignore-eos */
    int n_given;                /* -n was given */
    const char *prompt;         /* --prompt TEXT */
    const char *chat_template;  /* --chat-template NAME */
    const char *system;         /* --system TEXT */
    int no_think;               /* --no-think */
    int max_context;            /* --max-context N (0: not given) */
    int profile;                /* --profile */
    int streams;                /* --streams N (bench: 0, one sequence) */
} cli_opts;

/* Defaults, then argv[1..] parsed; `allowed` lists the long options this
 * subcommand takes, space-separated without dashes ("model threads json").
 * Returns 0, or 2 after printing what is wrong (unknown option, missing or
 * bad value) on stderr. `cmd` names the subcommand in messages. */
int cli_parse(const char *cmd, int argc, char **argv, const char *allowed, cli_opts *o);

/* argv[1] is --help or -h: usage printed to stdout, 1; else 0. */
int cli_help(int argc, char **argv, void (*usage)(FILE *));

/* --device and --threads and --isa applied; 0, or 2 with a message. */
int cli_setup_runtime(const char *cmd, const cli_opts *o);

/* The checkpoint named by --model, with a progress line on a terminal
 * (unless --json); NULL after printing the error. */
moe_model *cli_open_model(const char *cmd, const cli_opts *o);

/* Before --model is loaded: the memory it takes (weights, a KV cache of
 * *context tokens, one --prefill-step chunk's activations) against what
 * the device it loads on has: the machine's available memory, or on the
 * CUDA backend the GPU's free memory. *context 0: the largest context that
 * fits, up to the model's trained one, is chosen (a note says so when that
 * is less). Returns 0, or 1 after printing a refusal that names both
 * numbers, the device and the options that lower the need. Not checked for
 * a synthetic model (it checks its own), a GPU whose memory cannot be read,
 * or a checkpoint that cannot be read (the load then says why). */
int cli_check_memory(const char *cmd, const cli_opts *o, int *context);

/* --device's value as a moe_device; -2 when it names none. */
int cli_device(const char *name);

/* Whose memory an estimate was held to, for a message: "the memory
 * available", or "GPU 0's free memory". */
const char *cli_memory_name(const moe_model_memory *m);

/* --tokens "1,2,3" → ids (malloc'd); NULL after printing what is wrong. */
int32_t *cli_parse_tokens(const char *cmd, const char *list, int *n);

/* A note on stderr (unless --json) when n tokens run past the context the
 * model was trained for: RoPE goes on, but quality is the model's risk. */
void cli_note_context(const cli_opts *o, const moe_model_info *info, int n);

/* Prints moe_last_error() under the subcommand's name; returns 1. */
int cli_fail(const char *cmd);

/* Progress on stderr when it is a terminal and the output is not --json:
 * one line rewritten in place; cli_progress_done clears it. */
void cli_progress_init(const cli_opts *o);
void cli_progress_set(int on);   /* on or off, whatever the options say */
void cli_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_progress_done(void);

/* The metrics as JSON fields of `obj`, and as one human line on stderr. */
void cli_metrics_json(json_object *obj, const moe_gen_metrics *mt);
void cli_metrics_print(FILE *f, const moe_gen_metrics *mt);

/* A sampler from --temp/--top-k/--top-p/--min-p/--seed; NULL after printing. */
moe_sampler *cli_make_sampler(const char *cmd, const cli_opts *o, int vocab);

/* "float", "int8", "int8x2" for a mode. */
const char *cli_act_name(moe_act_mode m);

/* "f32", "f16", "q8" for a KV cache's dtype (--kv-cache's names). */
const char *cli_kv_name(moe_dtype t);

/* What a smaller --kv-cache would be, as ", or use --kv-cache ..." for a
 * message about memory ("" for q8, the smallest). */
const char *cli_kv_smaller_hint(moe_dtype t);

/* Options shared by every model-running subcommand, for usage texts. */
void cli_usage_runtime(FILE *f);

#endif
