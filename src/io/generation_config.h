/* io/generation_config.h — what a checkpoint's generation_config.json says
 * about stopping: its eos_token_id (one id or a list), which transformers
 * and mlx-lm stop at together with config.json's. */
#ifndef MOE_IO_GENERATION_CONFIG_H
#define MOE_IO_GENERATION_CONFIG_H

#include "moe/status.h"

enum { MOE_GENCFG_MAX_EOS = 16 };

typedef struct {
    int found;                       /* the file exists */
    int num_eos;
    int eos_ids[MOE_GENCFG_MAX_EOS];
} moe_generation_config;

/* DIR/generation_config.json; a directory without one is MOE_OK with
 * found 0. Errors name the file and the field: not JSON, eos_token_id
 * neither a token id nor a list of them, too many ids. */
moe_status moe_generation_config_load_dir(const char *dir, moe_generation_config *out);

/* The same from JSON text; `origin` names it in messages. */
moe_status moe_generation_config_parse(const char *json, const char *origin, moe_generation_config *out);

/* Adds `id` to the set ids[0..*n) unless it is there; MOE_ERR_RANGE when
 * the set already holds `cap` ids. */
moe_status moe_token_set_add(int *ids, int *n, int cap, int id);

#endif
