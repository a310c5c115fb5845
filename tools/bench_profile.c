/* tools/bench_profile.c — see bench_profile.h. */
#include "bench_profile.h"

#include <stdio.h>

json_object *bench_report_profile(const cli_opts *o, moe_model *m, const char *what, int per, const char *unit)
{
    moe_profile_entry e[32];
    int n = moe_model_profile(m, e, 32);
    double total = 0;
    for (int i = 0; i < n; i++) total += e[i].seconds;
    json_object *obj = o->json ? json_object_new_object() : NULL;
    if (!o->json) printf("profile of %s: %.3f ms %s\n", what, 1e3 * total / per, unit);
    for (int i = 0; i < n; i++) {
        double ms = 1e3 * e[i].seconds / per, share = total > 0 ? e[i].seconds / total : 0;
        if (obj) json_object_object_add(obj, e[i].name, json_object_new_double(ms));
        else printf("  %-22s %9.3f ms %5.1f%%  (%ld calls)\n", e[i].name, ms, 100 * share, e[i].calls);
    }
    if (obj) json_object_object_add(obj, "total", json_object_new_double(1e3 * total / per));
    return obj;
}
