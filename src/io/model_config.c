/* io/model_config.c — config.json → moe_model_config, with json-c: the
 * fields every family shares, then what its model_type implies. */
#include "io/model_config.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "core/error.h"
#include "core/file.h"

/* ---- typed field access, every failure naming the field ---- */

static moe_status field_int(json_object *o, const char *origin, const char *name, int has_default, int def,
                            int min, int *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || json_object_is_type(v, json_type_null)) {
        if (has_default) {
            *out = def;
            return MOE_OK;
        }
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' is missing", origin, name);
    }
    if (!json_object_is_type(v, json_type_int))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' must be an integer (got %s)", origin, name,
                             json_object_to_json_string(v));
    int64_t x = json_object_get_int64(v);
    if (x < min || x > INT32_MAX)
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' is %lld, outside %d..%d", origin, name, (long long)x,
                             min, INT32_MAX);
    *out = (int)x;
    return MOE_OK;
}

static moe_status field_double(json_object *o, const char *origin, const char *name, double def, double *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || json_object_is_type(v, json_type_null)) {
        *out = def;
        return MOE_OK;
    }
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' must be a number (got %s)", origin, name,
                             json_object_to_json_string(v));
    *out = json_object_get_double(v);
    return MOE_OK;
}

static moe_status field_bool(json_object *o, const char *origin, const char *name, int def, int *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, name, &v) || json_object_is_type(v, json_type_null)) {
        *out = def;
        return MOE_OK;
    }
    if (!json_object_is_type(v, json_type_boolean))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' must be true or false (got %s)", origin, name,
                             json_object_to_json_string(v));
    *out = json_object_get_boolean(v);
    return MOE_OK;
}

/* ---- the parts of the config ---- */

static const char *const ARCH_NAMES[MOE_ARCH_COUNT] = { "olmoe", "qwen3_moe", "mixtral" };

const char *moe_arch_name(moe_arch arch) { return arch >= 0 && arch < MOE_ARCH_COUNT ? ARCH_NAMES[arch] : "?"; }

static moe_status read_architecture(json_object *root, const char *origin, moe_model_config *c)
{
    json_object *v;
    if (!json_object_object_get_ex(root, "model_type", &v) || !json_object_is_type(v, json_type_string))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field 'model_type' is missing or not a string", origin);
    snprintf(c->model_type, sizeof c->model_type, "%s", json_object_get_string(v));
    int a = 0;
    while (a < MOE_ARCH_COUNT && strcmp(c->model_type, ARCH_NAMES[a]) != 0) a++;
    if (a == MOE_ARCH_COUNT)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: model_type '%s' is not supported (moe runs: olmoe, qwen3_moe, "
                             "mixtral)", origin, json_object_get_string(v));
    c->arch = (moe_arch)a;
    /* the family's fixed choices: what its modeling code does regardless
     * of config.json */
    static const moe_qk_norm QK_NORM[MOE_ARCH_COUNT] = { MOE_QK_NORM_WHOLE, MOE_QK_NORM_PER_HEAD, MOE_QK_NORM_NONE };
    c->qk_norm = QK_NORM[a];
    return MOE_OK;
}

/* Transformers 4 names the expert count num_experts (OLMoE, Qwen3-MoE),
 * transformers 5 and Mixtral num_local_experts: either is read. */
static const char *experts_field(json_object *root)
{
    json_object *v;
    if (json_object_object_get_ex(root, "num_local_experts", &v) && !json_object_is_type(v, json_type_null))
        return "num_local_experts";
    return "num_experts";
}

/* Qwen3-MoE's dense layers: those in mlp_only_layers, and those whose
 * index + 1 is not a multiple of decoder_sparse_step. */
static moe_status read_dense_layers(json_object *root, const char *origin, moe_model_config *c)
{
    int step;
    moe_status st = field_int(root, origin, "decoder_sparse_step", 1, 1, 1, &step);
    if (st != MOE_OK) return st;
    json_object *only = NULL;
    if (json_object_object_get_ex(root, "mlp_only_layers", &only) && !json_object_is_type(only, json_type_null)) {
        if (!json_object_is_type(only, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: field 'mlp_only_layers' must be a list of layer indices", origin);
    } else {
        only = NULL;
    }
    if (!(c->dense_layers = calloc((size_t)c->num_layers, 1)))
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory for the layer list", origin);
    int any = 0;
    for (int l = 0; l < c->num_layers; l++) any |= c->dense_layers[l] = (l + 1) % step != 0;
    size_t n = only ? json_object_array_length(only) : 0;
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(only, i);
        int64_t l = json_object_is_type(e, json_type_int) ? json_object_get_int64(e) : -1;
        if (l < 0 || l >= c->num_layers)
            return moe_error_set(MOE_ERR_FORMAT, "%s: mlp_only_layers[%zu] is %s, not a layer index 0..%d", origin, i,
                                 json_object_to_json_string(e), c->num_layers - 1);
        c->dense_layers[l] = 1;
        any = 1;
    }
    if (!any) {
        free(c->dense_layers);
        c->dense_layers = NULL;
        return MOE_OK;
    }
    return field_int(root, origin, "intermediate_size", 0, 0, 1, &c->dense_hidden);
}

/* Beyond these a config is refused by its field rather than by an
 * allocation that fails: the tables moe makes per layer and per expert
 * before any tensor is read stay small, and the projection widths the
 * loader and the forward compute as int (heads × head_dim, the stacked
 * q, k and v) fit it. The largest published models are far inside them. */
enum { MAX_LAYERS = 1 << 16, MAX_EXPERTS = 1 << 16 };

static moe_status check_sizes(json_object *root, const char *origin, const moe_model_config *c)
{
    if (c->num_layers > MAX_LAYERS)
        return moe_error_set(MOE_ERR_FORMAT, "%s: field 'num_hidden_layers' is %d, more than the %d layers moe takes",
                             origin, c->num_layers, MAX_LAYERS);
    if (c->num_experts > MAX_EXPERTS)
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' is %d, more than the %d experts moe takes", origin,
                             experts_field(root), c->num_experts, MAX_EXPERTS);
    int qdim, kvdim, kv2;
    if (!moe_int_mul(c->num_heads, c->head_dim, &qdim) || !moe_int_mul(c->num_kv_heads, c->head_dim, &kvdim) ||
        !moe_int_mul(kvdim, 2, &kv2) || qdim > INT32_MAX - kv2)
        return moe_error_set(MOE_ERR_FORMAT, "%s: fields 'num_attention_heads' %d, 'num_key_value_heads' %d and "
                             "'head_dim' %d make projections wider than %d rows", origin, c->num_heads,
                             c->num_kv_heads, c->head_dim, INT32_MAX);
    return MOE_OK;
}

static moe_status read_shapes(json_object *root, const char *origin, moe_model_config *c)
{
    moe_status st;
    if ((st = field_int(root, origin, "hidden_size", 0, 0, 1, &c->hidden_size)) != MOE_OK ||
        (st = field_int(root, origin, "num_hidden_layers", 0, 0, 1, &c->num_layers)) != MOE_OK ||
        (st = field_int(root, origin, "num_attention_heads", 0, 0, 1, &c->num_heads)) != MOE_OK ||
        (st = field_int(root, origin, "num_key_value_heads", 1, c->num_heads, 1, &c->num_kv_heads)) != MOE_OK ||
        (st = field_int(root, origin, c->arch == MOE_ARCH_QWEN3_MOE ? "moe_intermediate_size" : "intermediate_size",
                        0, 0, 1, &c->expert_hidden)) != MOE_OK ||
        (st = field_int(root, origin, experts_field(root), 0, 0, 1, &c->num_experts)) != MOE_OK ||
        (st = field_int(root, origin, "num_experts_per_tok", 0, 0, 1, &c->top_k)) != MOE_OK ||
        (st = field_int(root, origin, "vocab_size", 0, 0, 1, &c->vocab_size)) != MOE_OK ||
        (st = field_int(root, origin, "max_position_embeddings", 1, 4096, 1, &c->max_position)) != MOE_OK)
        return st;
    if (c->num_heads % c->num_kv_heads != 0)
        return moe_error_set(MOE_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                             origin, c->num_heads, c->num_kv_heads);
    if (c->top_k > c->num_experts)
        return moe_error_set(MOE_ERR_FORMAT, "%s: num_experts_per_tok %d exceeds %s %d", origin, c->top_k,
                             experts_field(root), c->num_experts);
    json_object *v;
    if (!json_object_object_get_ex(root, "head_dim", &v) || json_object_is_type(v, json_type_null)) {
        if (c->hidden_size % c->num_heads != 0)
            return moe_error_set(MOE_ERR_FORMAT, "%s: head_dim is absent and hidden_size %d does not divide by "
                                 "num_attention_heads %d", origin, c->hidden_size, c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    } else if ((st = field_int(root, origin, "head_dim", 0, 0, 1, &c->head_dim)) != MOE_OK)
        return st;
    if ((st = check_sizes(root, origin, c)) != MOE_OK) return st;
    return c->arch == MOE_ARCH_QWEN3_MOE ? read_dense_layers(root, origin, c) : MOE_OK;
}

/* rope_theta at the top level (hub checkpoints) or in rope_parameters
 * (newer transformers); only the default (unscaled) RoPE is supported. */
static moe_status read_rope(json_object *root, const char *origin, moe_model_config *c)
{
    json_object *v, *params = NULL;
    if (json_object_object_get_ex(root, "rope_scaling", &v) && !json_object_is_type(v, json_type_null))
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: rope_scaling %s is not supported (only plain RoPE)", origin,
                             json_object_to_json_string(v));
    if (json_object_object_get_ex(root, "rope_parameters", &params) && !json_object_is_type(params, json_type_null)) {
        if (!json_object_is_type(params, json_type_object))
            return moe_error_set(MOE_ERR_FORMAT, "%s: field 'rope_parameters' must be an object", origin);
        json_object *type;
        if (json_object_object_get_ex(params, "rope_type", &type) &&
            (!json_object_is_type(type, json_type_string) || strcmp(json_object_get_string(type), "default") != 0))
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: rope_parameters.rope_type %s is not supported (only "
                                 "\"default\")", origin, json_object_to_json_string(type));
    } else {
        params = NULL;
    }
    /* transformers' default when neither form gives it */
    double def = c->arch == MOE_ARCH_MIXTRAL ? 1e6 : 10000.0;
    if (json_object_object_get_ex(root, "rope_theta", &v) && !json_object_is_type(v, json_type_null))
        return field_double(root, origin, "rope_theta", def, &c->rope_theta);
    if (params) return field_double(params, origin, "rope_theta", def, &c->rope_theta);
    c->rope_theta = def;
    return MOE_OK;
}

static int valid_bits(int b) { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }
static int valid_group(int g) { return g == 32 || g == 64 || g == 128; }

/* {"bits": b, "group_size": g} of the block `name` in `origin`. */
static moe_status read_bits_group(json_object *o, const char *origin, const char *name, int *bits, int *group)
{
    char where[256];
    snprintf(where, sizeof where, "%s: quantization of '%s'", origin, name);
    moe_status st;
    if ((st = field_int(o, where, "bits", 0, 0, 1, bits)) != MOE_OK ||
        (st = field_int(o, where, "group_size", 0, 0, 1, group)) != MOE_OK)
        return st;
    if (!valid_bits(*bits))
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: bits %d is not 2, 3, 4, 5, 6 or 8", where, *bits);
    if (!valid_group(*group))
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: group_size %d is not 32, 64 or 128", where, *group);
    return MOE_OK;
}

/* MLX's "quantization" block (or its "quantization_config" mirror): the
 * default bits and group size, and per-module entries that are either
 * their own {bits, group_size} or false (left in float). */
static moe_status read_quantization(json_object *root, const char *origin, moe_model_config *c)
{
    json_object *q;
    const char *key = "quantization";
    if (!json_object_object_get_ex(root, key, &q) || json_object_is_type(q, json_type_null)) {
        key = "quantization_config";
        if (!json_object_object_get_ex(root, key, &q) || json_object_is_type(q, json_type_null)) return MOE_OK;
    }
    if (!json_object_is_type(q, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field '%s' must be an object", origin, key);
    moe_status st = read_bits_group(q, origin, key, &c->quant_bits, &c->quant_group_size);
    if (st != MOE_OK) return st;
    int n = 0;
    json_object_object_foreach(q, name, val) {
        (void)name;
        n += json_object_is_type(val, json_type_object) || json_object_is_type(val, json_type_boolean);
    }
    c->overrides = n ? calloc((size_t)n, sizeof *c->overrides) : NULL;
    if (n && !c->overrides) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory for quantization overrides", origin);
    json_object_object_foreach(q, mod, spec) {
        /* overrides is NULL when no entry is a module's: no pointer into it before one is */
        moe_quant_override *o = c->overrides ? &c->overrides[c->num_overrides] : NULL;
        if (!o) continue;
        if (json_object_is_type(spec, json_type_boolean)) {
            if (json_object_get_boolean(spec))
                return moe_error_set(MOE_ERR_FORMAT, "%s: %s entry '%s' is true; expected false or "
                                     "{\"bits\", \"group_size\"}", origin, key, mod);
            o->bits = o->group_size = 0;
        } else if (json_object_is_type(spec, json_type_object)) {
            if ((st = read_bits_group(spec, origin, mod, &o->bits, &o->group_size)) != MOE_OK) return st;
        } else {
            continue; /* the default's own bits / group_size, or unrelated keys (e.g. "mode") */
        }
        if (!(o->module = strdup(mod))) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", origin);
        c->num_overrides++;
    }
    return MOE_OK;
}

/* What a family's config may ask that moe does not run, refused by name;
 * the router rule and attention window each family reads. */
static moe_status read_family_rules(json_object *root, const char *origin, moe_model_config *c)
{
    json_object *v;
    if (json_object_object_get_ex(root, "hidden_act", &v) && !json_object_is_type(v, json_type_null) &&
        (!json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), "silu") != 0))
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: hidden_act %s is not supported (the experts are SwiGLU: \"silu\")",
                             origin, json_object_to_json_string(v));
    int flag;
    moe_status st = field_bool(root, origin, "attention_bias", 0, &flag);
    if (st != MOE_OK) return st;
    if (flag) return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: attention_bias true is not supported", origin);
    if (c->arch == MOE_ARCH_MIXTRAL) {
        c->norm_topk_prob = 1;   /* softmax over the top-k logits: the same as renormalising */
        return field_int(root, origin, "sliding_window", 1, 0, 0, &c->sliding_window);
    }
    if ((st = field_bool(root, origin, "norm_topk_prob", 0, &c->norm_topk_prob)) != MOE_OK) return st;
    if (c->arch == MOE_ARCH_QWEN3_MOE) {
        if ((st = field_bool(root, origin, "use_sliding_window", 0, &flag)) != MOE_OK) return st;
        if (flag) return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: use_sliding_window true is not supported", origin);
    }
    return MOE_OK;
}

static moe_status read_token_ids(json_object *root, const char *origin, moe_model_config *c)
{
    json_object *v;
    c->bos_id = -1;
    moe_status st = field_int(root, origin, "bos_token_id", 1, -1, -1, &c->bos_id);
    if (st != MOE_OK) return st;
    if (!json_object_object_get_ex(root, "eos_token_id", &v) || json_object_is_type(v, json_type_null)) return MOE_OK;
    if (json_object_is_type(v, json_type_int)) return field_int(root, origin, "eos_token_id", 0, 0, 0, &c->eos_ids[c->num_eos++]);
    if (!json_object_is_type(v, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "%s: field 'eos_token_id' must be an integer or a list of integers",
                             origin);
    size_t n = json_object_array_length(v);
    for (size_t i = 0; i < n; i++) {
        json_object *e = json_object_array_get_idx(v, i);
        if (!json_object_is_type(e, json_type_int) || json_object_get_int64(e) < 0 || json_object_get_int64(e) > INT32_MAX)
            return moe_error_set(MOE_ERR_FORMAT, "%s: eos_token_id[%zu] is not a token id", origin, i);
        if (c->num_eos == MOE_CONFIG_MAX_EOS)
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: more than %d eos_token_id values", origin, MOE_CONFIG_MAX_EOS);
        c->eos_ids[c->num_eos++] = (int)json_object_get_int64(e);
    }
    return MOE_OK;
}

moe_status moe_config_parse(const char *json, const char *origin, moe_model_config *c)
{
    if (!json || !c) return moe_error_set(MOE_ERR_INVALID_ARG, "config parse: NULL argument");
    memset(c, 0, sizeof *c);
    enum json_tokener_error jerr;
    json_object *root = json_tokener_parse_verbose(json, &jerr);
    if (!root) return moe_error_set(MOE_ERR_FORMAT, "%s: not valid JSON (%s)", origin, json_tokener_error_desc(jerr));
    moe_status st;
    if (!json_object_is_type(root, json_type_object))
        st = moe_error_set(MOE_ERR_FORMAT, "%s: the top level is not a JSON object", origin);
    else if ((st = read_architecture(root, origin, c)) == MOE_OK && (st = read_shapes(root, origin, c)) == MOE_OK &&
             (st = read_rope(root, origin, c)) == MOE_OK &&
             (st = field_double(root, origin, "rms_norm_eps", c->arch == MOE_ARCH_QWEN3_MOE ? 1e-6 : 1e-5,
                                &c->rms_norm_eps)) == MOE_OK &&
             (c->arch != MOE_ARCH_OLMOE ||
              (st = field_double(root, origin, "clip_qkv", 0.0, &c->clip_qkv)) == MOE_OK) &&
             (st = read_family_rules(root, origin, c)) == MOE_OK &&
             (st = field_bool(root, origin, "tie_word_embeddings", 0, &c->tie_word_embeddings)) == MOE_OK &&
             (st = read_quantization(root, origin, c)) == MOE_OK)
        st = read_token_ids(root, origin, c);
    if (st == MOE_OK && !(c->rms_norm_eps > 0))
        st = moe_error_set(MOE_ERR_FORMAT, "%s: rms_norm_eps %g must be positive", origin, c->rms_norm_eps);
    if (st == MOE_OK && !(c->rope_theta > 0))
        st = moe_error_set(MOE_ERR_FORMAT, "%s: rope_theta %g must be positive", origin, c->rope_theta);
    json_object_put(root);
    if (st != MOE_OK) moe_config_free(c);
    return st;
}

moe_status moe_config_load(const char *path, moe_model_config *c)
{
    if (!path || !c) return moe_error_set(MOE_ERR_INVALID_ARG, "config load: NULL argument");
    char *text;
    size_t len;
    moe_status st = moe_file_read(path, 64u << 20, 0, &text, &len);
    if (st != MOE_OK) return st;
    st = moe_config_parse(text, path, c);
    free(text);
    return st;
}

void moe_config_free(moe_model_config *c)
{
    if (!c) return;
    for (int i = 0; i < c->num_overrides; i++) free(c->overrides[i].module);
    free(c->overrides);
    free(c->dense_layers);
    c->overrides = NULL;
    c->dense_layers = NULL;
    c->num_overrides = 0;
}

int moe_config_layer_dense(const moe_model_config *c, int l) { return c->dense_layers && c->dense_layers[l]; }

void moe_config_module_quant(const moe_model_config *c, const char *module, int *bits, int *group_size)
{
    for (int i = 0; i < c->num_overrides; i++)
        if (strcmp(c->overrides[i].module, module) == 0) {
            *bits = c->overrides[i].bits;
            *group_size = c->overrides[i].group_size;
            return;
        }
    *bits = c->quant_bits;
    *group_size = c->quant_group_size;
}
