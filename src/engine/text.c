/* engine/text.c — see text.h. */
#include "engine/text.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/generation_config.h"

moe_status moe_text_prompt_ids(moe_tokenizer *tok, const char *text, size_t len, int32_t **ids, int *n)
{
    int32_t *bare;
    int nb;
    *ids = NULL;
    *n = 0;
    moe_status st = moe_tokenizer_encode(tok, text, len, 0, &bare, &nb);
    if (st != MOE_OK) return st;
    int32_t bos = moe_tokenizer_bos_id(tok);
    int add_bos = bos >= 0 && !(nb > 0 && bare[0] == bos);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)(nb + add_bos + 1));
    if (!out) {
        free(bare);
        return moe_error_set(MOE_ERR_NOMEM, "prompt: out of memory");
    }
    if (add_bos) out[0] = bos;
    if (nb) memcpy(out + add_bos, bare, sizeof(int32_t) * (size_t)nb);
    free(bare);
    *ids = out;
    *n = nb + add_bos;
    return MOE_OK;
}

moe_status moe_text_check_ids(const moe_tokenizer *tok, const int32_t *ids, int n, int vocab)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] >= 0 && ids[i] < vocab) continue;
        const char *piece = moe_tokenizer_piece(tok, ids[i], NULL);
        return moe_error_set(MOE_ERR_FORMAT,
                             "the tokenizer gave token id %d ('%s', token %d of the text), outside the model's "
                             "vocabulary 0..%d: the tokenizer has %d ids and the model %d, so this tokenizer.json "
                             "does not belong to this model",
                             (int)ids[i], piece ? piece : "?", i, vocab - 1, moe_tokenizer_vocab_size(tok), vocab);
    }
    return MOE_OK;
}

moe_status moe_text_stop_ids(const char *dir, const moe_model_info *info, moe_stop_ids *out)
{
    memset(out, 0, sizeof *out);
    moe_status st = MOE_OK;
    for (int i = 0; i < info->num_eos && st == MOE_OK; i++)
        st = moe_token_set_add(out->ids, &out->n, MOE_MAX_STOP_IDS, info->eos_ids[i]);
    moe_generation_config g;
    if (st == MOE_OK && dir && (st = moe_generation_config_load_dir(dir, &g)) == MOE_OK)
        for (int i = 0; i < g.num_eos && st == MOE_OK; i++)
            st = moe_token_set_add(out->ids, &out->n, MOE_MAX_STOP_IDS, g.eos_ids[i]);
    return st;
}

int moe_stop_ids_has(const moe_stop_ids *s, int32_t id)
{
    for (int i = 0; s && i < s->n; i++)
        if (s->ids[i] == id) return 1;
    return 0;
}

/* ---- streaming ---- */

moe_status moe_text_streamer_init(moe_text_streamer *s, const moe_tokenizer *tok, const moe_stop_ids *stop,
                                  void (*on_text)(void *user, const char *text, size_t len), void *user)
{
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->on_text = on_text;
    s->user = user;
    if (!(s->text = malloc(s->cap = 256))) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    s->text[0] = '\0';
    return moe_tokenizer_stream_create(tok, 0, &s->stream);
}

static void emit(moe_text_streamer *s, const char *text, size_t len)
{
    if (!len) return;
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap;
        while (cap < s->len + len + 1) cap *= 2;
        char *g = realloc(s->text, cap);
        if (!g) {
            if (s->status == MOE_OK) s->status = moe_error_set(MOE_ERR_NOMEM, "out of memory");
            return;
        }
        s->text = g;
        s->cap = cap;
    }
    memcpy(s->text + s->len, text, len);
    s->text[s->len += len] = '\0';
    if (s->on_text) s->on_text(s->user, text, len);
}

void moe_text_streamer_put(void *streamer, int32_t id)
{
    moe_text_streamer *s = streamer;
    if (s->status != MOE_OK || moe_stop_ids_has(s->stop, id)) return;
    const char *text;
    size_t len;
    moe_status st = moe_tokenizer_stream_put(s->stream, id, &text, &len);
    if (st != MOE_OK) s->status = st;
    else emit(s, text, len);
}

moe_status moe_text_streamer_flush(moe_text_streamer *s)
{
    const char *text;
    size_t len;
    if (s->status == MOE_OK) {
        moe_status st = moe_tokenizer_stream_flush(s->stream, &text, &len);
        if (st != MOE_OK) s->status = st;
        else emit(s, text, len);
    }
    return s->status;
}

void moe_text_streamer_clear(moe_text_streamer *s)
{
    s->len = 0;
    if (s->text) s->text[0] = '\0';
}

void moe_text_streamer_free(moe_text_streamer *s)
{
    moe_tokenizer_stream_free(s->stream);
    free(s->text);
    memset(s, 0, sizeof *s);
}
