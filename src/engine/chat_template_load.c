/* engine/chat_template_load.c — a checkpoint's chat template, ready to
 * render (moe_chat_template_load_dir in moe/chat_template.h): the template
 * recognised from tokenizer_config.json and the bos/eos strings it writes,
 * copied into one allocation so that the caller frees one thing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "engine/chat_template.h"
#include "io/tokenizer_config.h"

/* bos_token / eos_token as the template sees them: tokenizer_config.json's,
 * else the piece of the model's id, else "". */
static const char *token_text(const char *configured, const moe_tokenizer *tok, int id)
{
    const char *p = id >= 0 && tok ? moe_tokenizer_piece(tok, id, NULL) : NULL;
    return configured ? configured : p ? p : "";
}

static moe_status choose(const char *dir, int format, const moe_tokenizer_config *tc, moe_chat_template *t)
{
    if (format >= 0) {
        if (format > MOE_CHAT_MISTRAL_V7)
            return moe_error_set(MOE_ERR_INVALID_ARG, "chat template format %d is not a moe_chat_format", format);
        t->format = (moe_chat_format)format;
        t->with_bos = moe_chat_format_default_bos(t->format);
        return MOE_OK;
    }
    if (!tc->chat_template)
        return moe_error_set(MOE_ERR_FORMAT, "%s has no chat template (%s/tokenizer_config.json %s)", dir, dir,
                             tc->found ? "has no chat_template" : "does not exist");
    moe_status st = moe_chat_template_detect(tc->chat_template, t);
    if (st != MOE_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", moe_last_error());
        return moe_error_set(st, "%s: %s", tc->template_origin, why);
    }
    return MOE_OK;
}

moe_status moe_chat_template_load_dir(const char *dir, int format, const moe_tokenizer *tok, int bos_id,
                                      int eos_id, moe_chat_template **out)
{
    if (out) *out = NULL;
    if (!dir || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "chat template: dir and out are required");
    moe_tokenizer_config tc = { 0 };
    moe_status st = moe_tokenizer_config_load_dir(dir, &tc);
    moe_chat_template t = { 0 };
    if (st == MOE_OK) st = choose(dir, format, &tc, &t);
    if (st == MOE_OK) {
        const char *bos = token_text(tc.bos_token, tok, bos_id), *eos = token_text(tc.eos_token, tok, eos_id);
        const char *sys = t.default_system ? t.default_system : "";
        size_t nb = strlen(bos) + 1, ne = strlen(eos) + 1, ns = strlen(sys) + 1;
        moe_chat_template *r = malloc(sizeof *r + nb + ne + ns);
        if (!r) {
            st = moe_error_set(MOE_ERR_NOMEM, "chat template: out of memory");
        } else {
            char *s = (char *)(r + 1);
            *r = t;
            r->bos_token = memcpy(s, bos, nb);
            r->eos_token = memcpy(s + nb, eos, ne);
            r->default_system = t.default_system ? memcpy(s + nb + ne, sys, ns) : NULL;
            *out = r;
        }
    }
    moe_tokenizer_config_free(&tc);
    return st;
}

void moe_chat_template_free(moe_chat_template *t) { free(t); }
