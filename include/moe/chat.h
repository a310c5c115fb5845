/* moe/chat.h — a conversation with a model whose KV cache is kept
 * between turns: each user turn prefills only its own tokens (rendered by
 * the chat template), then the answer is generated until the model ends its
 * turn (an EOS id or the template's end-of-turn token), the turn's token
 * budget, or the end of the context.
 *
 * What the cache holds is the template's rendering of the conversation
 * so far, as ids, each turn as it was rendered when it was the newest (the
 * tokens are kept; where a template renders the history differently later,
 * Qwen3's dropped reasoning and Mistral v3's moved system message, see
 * chat_template.h): the answer's ids as the model chose them (not
 * re-encoded), and where the answer ended without its stop token (the
 * budget ran out) its last id, which moe_generate does not feed back, goes
 * in with the next turn, followed by the text that closes the reply. */
#ifndef MOE_CHAT_H
#define MOE_CHAT_H

#include "moe/chat_template.h"
#include "moe/generate.h"
#include "moe/text.h"
#include "moe/model.h"
#include "moe/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_chat moe_chat;

typedef struct {
    moe_chat_template tpl;
    const char *system;          /* NULL: no system message */
    const moe_stop_ids *stop;    /* the checkpoint's EOS ids; the template's end-of-turn token is added */
    int max_context;             /* the context's size in tokens, as created */
} moe_chat_config;

/* A conversation on an empty context. The template's end-of-turn token
 * must be a token of the tokenizer (else MOE_ERR_FORMAT naming it), and the
 * template must take the system message, if there is one (else
 * MOE_ERR_INVALID_ARG with the template's words). The context, tokenizer
 * and strings in cfg must outlive the chat. */
moe_status moe_chat_create(moe_context *ctx, moe_tokenizer *tok, const moe_chat_config *cfg, moe_chat **out);

/* One user turn (`user` is UTF-8; invalid bytes are read as the tokenizer
 * reads them). req gives the sampler, the prefill step, the callbacks and
 * max_new_tokens (0: no limit but the context); its stop ids are replaced by
 * the chat's. On success *ids (malloc'd) holds the answer's ids, the stop
 * id it ended at included, and mt the turn's figures (prompt_tokens: the
 * tokens this turn prefilled). A turn that does not fit in what is left of
 * the context is MOE_ERR_RANGE (and only that is), naming the numbers; it
 * changes nothing, as do errors of the text (its ids outside the model's
 * vocabulary: MOE_ERR_FORMAT); a failure of the model itself leaves the
 * conversation unusable. */
moe_status moe_chat_turn(moe_chat *c, const char *user, const moe_gen_request *req, int32_t **ids, int *n,
                         moe_gen_metrics *mt);

/* The stop ids the chat uses (EOS ids and the end-of-turn token). */
const moe_stop_ids *moe_chat_stop_ids(const moe_chat *c);

/* Tokens of the context not yet used. */
int moe_chat_room(const moe_chat *c);

void moe_chat_free(moe_chat *c);

#ifdef __cplusplus
}
#endif

#endif
