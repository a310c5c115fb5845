/* tools/bench_streams.h — `moe bench --streams N`: decode throughput of N
 * sequences advancing together (one batched forward a step, as `moe serve`
 * runs them) against one sequence alone, on the same model in one sitting. */
#ifndef MOE_TOOLS_BENCH_STREAMS_H
#define MOE_TOOLS_BENCH_STREAMS_H

#include "cli_common.h"
#include "moe/model.h"

/* Runs the comparison and prints it (or one JSON object with --json);
 * 0, or non-zero after printing the error. */
int bench_streams(const cli_opts *o, moe_model *m);

#endif
