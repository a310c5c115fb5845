/* tests/fuzz/fuzz_checkpoint.c — a checkpoint directory as `moe convert`,
 * `moe inspect` and the loader read it: config.json, model.safetensors or
 * model.safetensors.index.json with its shards, and what else is there.
 * Input: files separated by "\n====\n" lines, each "NAME\nCONTENT" (NAME a
 * plain file name). The directory is inspected, planned for conversion
 * (every module's tensors present, float, of the family's shapes) and
 * converted when the plan holds; what converts must also load. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/plan.h"
#include "fuzz.h"
#include "io/json_file.h"
#include "moe/checkpoint.h"
#include "moe/model.h"

enum { MAX_FILES = 8, MAX_NAME = 64 };

static int plain_name(const uint8_t *s, size_t n)
{
    if (n == 0 || n > MAX_NAME || (n <= 2 && s[0] == '.' && (n == 1 || s[1] == '.'))) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* The plan over the directory, as convert makes it. */
static moe_status plan(const char *dir)
{
    char *path = moe_path_join(dir, "config.json");
    moe_model_config cfg;
    moe_status st = moe_config_load(path, &cfg);
    free(path);
    if (st != MOE_OK) return st;
    moe_st_set *set = NULL;
    conv_plan p;
    if ((st = moe_st_set_open(dir, &set)) == MOE_OK && (st = conv_plan_make(&cfg, set, dir, &p)) == MOE_OK) {
        for (int i = 0; i < p.n; i++) {
            const conv_module *m = &p.mods[i];
            fuzz_check(m->n_src >= 1 && m->cols > 0, "a module has sources and columns");
            for (int k = 0; k < m->n_src; k++) fuzz_check(m->src[k] != NULL, "every source tensor is there");
        }
        conv_plan_free(&p);
    }
    moe_st_set_close(set);
    moe_config_free(&cfg);
    return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dir[512], out[512];
    snprintf(dir, sizeof dir, "%s/checkpoint", fuzz_dir());
    snprintf(out, sizeof out, "%s/converted", fuzz_dir());
    fuzz_clear_dir(dir);
    const uint8_t *start[MAX_FILES];
    size_t len[MAX_FILES];
    int n = fuzz_split(data, size, start, len, MAX_FILES);
    for (int i = 0; i < n; i++) {
        const uint8_t *nl = memchr(start[i], '\n', len[i]);
        if (!nl || !plain_name(start[i], (size_t)(nl - start[i]))) continue;
        char name[MAX_NAME + 1];
        memcpy(name, start[i], (size_t)(nl - start[i]));
        name[nl - start[i]] = '\0';
        fuzz_write_file(dir, name, nl + 1, len[i] - (size_t)(nl + 1 - start[i]));
    }
    moe_checkpoint_info *info = NULL;
    if (moe_checkpoint_inspect(dir, &info) == MOE_OK) {
        fuzz_check(info->num_groups >= 0 && info->tensors >= 0, "inspect counts");
        moe_checkpoint_info_free(info);
    }
    if (plan(dir) == MOE_OK) {
        moe_convert_options o = moe_convert_default_options();
        o.model_dir = dir;
        o.out_dir = out;
        o.force = 1;
        o.group_size = 32; /* the seeds' rows are short: quantize them */
        moe_convert_result r;
        if (moe_checkpoint_convert(&o, &r) == MOE_OK) {
            moe_model *m = NULL;
            if (moe_model_load(out, NULL, &m) == MOE_OK) moe_model_free(m);
        }
    }
    /* the loader reads the source directly too */
    moe_model *m = NULL;
    if (moe_model_load(dir, NULL, &m) == MOE_OK) moe_model_free(m);
    return 0;
}
