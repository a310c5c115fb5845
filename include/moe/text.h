/* moe/text.h — what generation from text needs besides the model: the
 * prompt's ids as the reference frameworks build them, the ids generation
 * stops at, a check that the tokenizer's ids fit the model, and generated
 * ids turned back into text as they come. */
#ifndef MOE_TEXT_H
#define MOE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "moe/model.h"
#include "moe/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The ids of a prompt for generation: the text encoded, with the token the
 * tokenizer's post-processor puts first (BOS: Llama-3's <|begin_of_text|>)
 * in front, unless the text already begins with it (as mlx-lm's generate
 * does). Tokens the post-processor adds after the text are left out: an
 * OLMoE tokenizer.json appends <|endoftext|>, but transformers reads that
 * tokenizer through GPTNeoXTokenizerFast, whose add_eos_token (false in
 * OLMoE's tokenizer_config.json, and by default) rebuilds the
 * post-processor without it, so tokenizer(prompt) — what transformers'
 * and mlx-lm's generation feed the model — ends with the text; a prompt
 * ending in EOS would tell the model the document is over. *ids malloc'd. */
moe_status moe_text_prompt_ids(moe_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *n);

/* MOE_ERR_FORMAT naming the first id outside 0..vocab-1 (its piece and
 * place) and both vocabulary sizes: the tokenizer does not fit the model. */
moe_status moe_text_check_ids(const moe_tokenizer *tok, const int32_t *ids, int n, int vocab);

enum { MOE_MAX_STOP_IDS = 32 };

typedef struct {
    int n;
    int ids[MOE_MAX_STOP_IDS];
} moe_stop_ids;

/* config.json's EOS ids (info) and those of DIR/generation_config.json
 * when the checkpoint has one, together (each once); errors name the file
 * and field. */
moe_status moe_text_stop_ids(const char *dir, const moe_model_info *info, moe_stop_ids *out);

int moe_stop_ids_has(const moe_stop_ids *s, int32_t id);

/* Generated ids → text, streamed: whole UTF-8 characters as they complete,
 * handed to on_text (may be NULL) and gathered in `text`. A stop id (the
 * one generation ended at) adds no text. put has the signature of
 * moe_gen_request.on_token, with the streamer as `user`. */
typedef struct {
    moe_tokenizer_stream *stream;
    const moe_stop_ids *stop;        /* may be NULL */
    void (*on_text)(void *user, const char *text, size_t len);
    void *user;
    char *text;                      /* all text so far, NUL-terminated */
    size_t len, cap;
    moe_status status;               /* the first failure, if any */
} moe_text_streamer;

moe_status moe_text_streamer_init(moe_text_streamer *s, const moe_tokenizer *tok, const moe_stop_ids *stop,
                                  void (*on_text)(void *user, const char *text, size_t len), void *user);
void moe_text_streamer_put(void *streamer, int32_t id);
/* What the stream still holds (an incomplete character comes out as
 * U+FFFD); returns the first failure of the stream so far. */
moe_status moe_text_streamer_flush(moe_text_streamer *s);
/* Empties `text` (the stream goes on). */
void moe_text_streamer_clear(moe_text_streamer *s);
void moe_text_streamer_free(moe_text_streamer *s);

#ifdef __cplusplus
}
#endif

#endif
