/* tools/bench_layer.h — the `moe bench-layer` subcommand. */
#ifndef MOE_TOOLS_BENCH_LAYER_H
#define MOE_TOOLS_BENCH_LAYER_H

#include <stdio.h>

/* Runs `moe bench-layer`; argv[0] is "bench-layer", the rest its options.
 * Returns the process exit status: 0 done, 1 a moe call failed (or the
 * fused/unfused weight sizes differ), 2 a bad option. */
int bench_layer_main(int argc, char **argv);

/* Prints the subcommand's option summary to f. */
void bench_layer_usage(FILE *f);

#endif
