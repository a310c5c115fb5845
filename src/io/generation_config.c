/* io/generation_config.c — see generation_config.h. */
#include "io/generation_config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/json_file.h"

moe_status moe_token_set_add(int *ids, int *n, int cap, int id)
{
    for (int i = 0; i < *n; i++)
        if (ids[i] == id) return MOE_OK;
    if (*n >= cap) return moe_error_set(MOE_ERR_RANGE, "more than %d stop token ids", cap);
    ids[(*n)++] = id;
    return MOE_OK;
}

static int token_id_value(json_object *v, int *out)
{
    if (!json_object_is_type(v, json_type_int)) return 0;
    int64_t x = json_object_get_int64(v);
    if (x < 0 || x > INT32_MAX) return 0;
    *out = (int)x;
    return 1;
}

static moe_status read_eos(json_object *root, const char *origin, void *out)
{
    moe_generation_config *g = out;
    json_object *v;
    int id;
    if (!json_object_object_get_ex(root, "eos_token_id", &v) || json_object_is_type(v, json_type_null)) return MOE_OK;
    if (token_id_value(v, &id)) {
        g->eos_ids[g->num_eos++] = id;
        return MOE_OK;
    }
    if (!json_object_is_type(v, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field 'eos_token_id' must be a token id or a list of token ids (got %s)",
                             origin, moe_json_text(v));
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n; i++) {
        if (!token_id_value(json_object_array_get_idx(v, i), &id))
            return moe_error_set(MOE_ERR_FORMAT, "%s: field 'eos_token_id': element %zu (%s) is not a token id", origin,
                                 i, moe_json_text(json_object_array_get_idx(v, i)));
        if (moe_token_set_add(g->eos_ids, &g->num_eos, MOE_GENCFG_MAX_EOS, id) != MOE_OK)
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: field 'eos_token_id' lists more than %d ids", origin,
                                 MOE_GENCFG_MAX_EOS);
    }
    return MOE_OK;
}

moe_status moe_generation_config_parse(const char *json, const char *origin, moe_generation_config *out)
{
    memset(out, 0, sizeof *out);
    return moe_json_visit(NULL, NULL, json, origin, read_eos, out, &out->found);
}

moe_status moe_generation_config_load_dir(const char *dir, moe_generation_config *out)
{
    memset(out, 0, sizeof *out);
    return moe_json_visit(dir, "generation_config.json", NULL, NULL, read_eos, out, &out->found);
}
