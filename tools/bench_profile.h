/* tools/bench_profile.h — `moe bench --profile`'s report: the model's time
 * by kind of operation since the last reset, per token or per step, shared
 * by the plain benchmark and --streams. */
#ifndef MOE_TOOLS_BENCH_PROFILE_H
#define MOE_TOOLS_BENCH_PROFILE_H

#include <json-c/json.h>

#include "cli_common.h"
#include "moe/model.h"

/* Each kind's ms per `per` (tokens or steps: `unit` says which, "a token")
 * and its share: printed under "profile of WHAT", or with --json returned
 * as an object of ms by kind plus "total" (the caller owns it; NULL when
 * printed). */
json_object *bench_report_profile(const cli_opts *o, moe_model *m, const char *what, int per, const char *unit);

#endif
