/* engine/chat.c — see chat.h. */
#include "engine/chat.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/generation_config.h"

struct moe_chat {
    moe_context *ctx;
    moe_tokenizer *tok;
    moe_chat_config cfg;
    moe_stop_ids stop;
    int turns;          /* user turns so far */
    int32_t pending;    /* the last answer's last id, not yet in the cache; -1 when none */
};

moe_status moe_chat_create(moe_context *ctx, moe_tokenizer *tok, const moe_chat_config *cfg, moe_chat **out)
{
    *out = NULL;
    if (!ctx || !tok || !cfg || cfg->max_context < 1)
        return moe_error_set(MOE_ERR_INVALID_ARG, "chat: context, tokenizer and a positive context size are required");
    const char *eot = moe_chat_template_end_of_turn(&cfg->tpl);
    int32_t eot_id = eot ? moe_tokenizer_token_id(tok, eot) : -1;
    if (eot_id < 0)
        return moe_error_set(MOE_ERR_FORMAT, "the %s chat template ends a turn with '%s', which is not a token of the "
                             "tokenizer", moe_chat_format_name(cfg->tpl.format), eot ? eot : "");
    // a template that refuses the system message (Mixtral's first) says so now, not at the first turn
    char *first;
    if (cfg->system) {
        moe_status st = moe_chat_template_turn(&cfg->tpl, 1, cfg->system, "", &first);
        if (st != MOE_OK) return st;
        free(first);
    }
    moe_chat *c = calloc(1, sizeof *c);
    if (!c) return moe_error_set(MOE_ERR_NOMEM, "chat: out of memory");
    c->ctx = ctx;
    c->tok = tok;
    c->cfg = *cfg;
    c->pending = -1;
    moe_status st = MOE_OK;
    for (int i = 0; cfg->stop && i < cfg->stop->n && st == MOE_OK; i++)
        st = moe_token_set_add(c->stop.ids, &c->stop.n, MOE_MAX_STOP_IDS, cfg->stop->ids[i]);
    if (st == MOE_OK) st = moe_token_set_add(c->stop.ids, &c->stop.n, MOE_MAX_STOP_IDS, eot_id);
    if (st != MOE_OK) {
        free(c);
        return st;
    }
    *out = c;
    return MOE_OK;
}

const moe_stop_ids *moe_chat_stop_ids(const moe_chat *c) { return &c->stop; }

int moe_chat_room(const moe_chat *c) { return c->cfg.max_context - moe_context_position(c->ctx); }

/* The ids this turn prefills: the pending id, then the turn's text. */
static moe_status turn_ids(moe_chat *c, const char *user, int32_t **ids, int *n)
{
    char *text;
    moe_status st = moe_chat_template_turn(&c->cfg.tpl, c->turns == 0, c->cfg.system, user, &text);
    if (st != MOE_OK) return st;
    int32_t *enc;
    int ne;
    st = moe_tokenizer_encode(c->tok, text, strlen(text), 0, &enc, &ne);
    free(text);
    if (st != MOE_OK) return st;
    int vocab = moe_model_get_info(moe_context_model(c->ctx)).vocab_size;
    if ((st = moe_text_check_ids(c->tok, enc, ne, vocab)) != MOE_OK) {
        free(enc);
        return st;
    }
    int lead = c->pending >= 0;
    *ids = malloc(sizeof(int32_t) * (size_t)(ne + lead));
    if (!*ids) {
        free(enc);
        return moe_error_set(MOE_ERR_NOMEM, "chat: out of memory");
    }
    if (lead) (*ids)[0] = c->pending;
    if (ne) memcpy(*ids + lead, enc, sizeof(int32_t) * (size_t)ne);
    free(enc);
    *n = ne + lead;
    return MOE_OK;
}

moe_status moe_chat_turn(moe_chat *c, const char *user, const moe_gen_request *req, int32_t **ids, int *n,
                         moe_gen_metrics *mt)
{
    *ids = NULL;
    *n = 0;
    if (!c || !user || !req) return moe_error_set(MOE_ERR_INVALID_ARG, "chat turn: NULL argument");
    int32_t *prompt = NULL;
    int np = 0;
    moe_status st = turn_ids(c, user, &prompt, &np);
    if (st != MOE_OK) return st;
    int room = moe_chat_room(c);
    // the context holds prompt and answer; the answer needs room for one token at least
    if (np >= room) {
        free(prompt);
        return moe_error_set(MOE_ERR_RANGE, "the conversation is full: this turn's %d tokens and its answer do not "
                             "fit in the %d token%s left of the %d-token context", np, room, room == 1 ? "" : "s",
                             c->cfg.max_context);
    }
    moe_gen_request r = *req;
    r.stop_ids = c->stop.ids;
    r.num_stop = c->stop.n;
    r.max_new_tokens = room - np;
    if (req->max_new_tokens > 0 && req->max_new_tokens < r.max_new_tokens) r.max_new_tokens = req->max_new_tokens;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)r.max_new_tokens);
    if (!out) {
        free(prompt);
        return moe_error_set(MOE_ERR_NOMEM, "chat: out of memory");
    }
    st = moe_generate(c->ctx, prompt, np, &r, out, n, mt);
    free(prompt);
    if (st != MOE_OK) {
        free(out);
        *n = 0;
        return st;
    }
    c->turns++;
    c->pending = *n > 0 && !moe_stop_ids_has(&c->stop, out[*n - 1]) ? out[*n - 1] : -1;
    *ids = out;
    return MOE_OK;
}

void moe_chat_free(moe_chat *c) { free(c); }
