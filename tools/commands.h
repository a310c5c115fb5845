/* tools/commands.h — the subcommands beside `bench-layer`: `logits`,
 * `generate`, `chat`, `serve` and `bench` run a model; `tokenize` runs a checkpoint's
 * tokenizer; `convert` and `inspect` write and describe checkpoints. Each
 * returns the process exit status (0 done, 1 a moe call failed, 2 a bad
 * option) and has a usage text. */
#ifndef MOE_TOOLS_COMMANDS_H
#define MOE_TOOLS_COMMANDS_H

#include <stdio.h>

int logits_main(int argc, char **argv);
void logits_usage(FILE *f);
int generate_main(int argc, char **argv);
void generate_usage(FILE *f);
int bench_main(int argc, char **argv);
void bench_usage(FILE *f);
int tokenize_main(int argc, char **argv);
void tokenize_usage(FILE *f);
int convert_main(int argc, char **argv);
void convert_usage(FILE *f);
int inspect_main(int argc, char **argv);
void inspect_usage(FILE *f);
int chat_main(int argc, char **argv);
void chat_usage(FILE *f);
int serve_main(int argc, char **argv);
void serve_usage(FILE *f);

#endif
