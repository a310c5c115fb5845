/* tokenizer/decode.c — ids → text, whole or streamed, through the file's
 * decoder (decoder.c). As in the reference, ids that name no token are left
 * out, and with MOE_TOKENIZER_SKIP_SPECIAL so are special tokens (those whose
 * string is a special token's content), before the decoder sees the list
 * (so Metaspace's and Strip's "first token" is the first one kept).
 *
 * The stream runs the same decoder token by token and hands out only whole
 * UTF-8: the bytes of an unfinished character wait for the token that
 * completes it. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

/* A token's piece, or NULL when the id names none or is skipped. */
static const char *visible_piece(const moe_tokenizer *t, int32_t id, int flags, size_t *len)
{
    const char *p = moe_tokenizer_piece(t, id, len);
    if (p && (flags & MOE_TOKENIZER_SKIP_SPECIAL) && t->skip[id]) return NULL;
    return p;
}

moe_status moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n_ids, int flags, char **text,
                                size_t *len)
{
    if (!t || (!ids && n_ids) || n_ids < 0 || !text)
        return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer decode: NULL argument or negative count");
    *text = NULL;
    moe_tok_buf raw = { 0 }, out = { 0 };
    moe_tok_dec_run run;
    moe_status st = moe_tok_dec_run_init(&run, t, 0, &raw);
    for (int i = 0; i < n_ids && !st; i++) {
        size_t n;
        const char *p = visible_piece(t, ids[i], flags, &n);
        if (p) st = moe_tok_dec_run_put(&run, p, n);
    }
    if (!st) st = moe_tok_dec_run_finish(&run);
    moe_tok_dec_run_free(&run);
    /* The decoder's output is UTF-8 already, unless the file's pieces are not. */
    if (!st && (moe_tok_buf_append(&out, "", 0) || moe_utf8_append_lossy(&out, raw.p, raw.n)))
        st = moe_error_set(MOE_ERR_NOMEM, "tokenizer decode: out of memory");
    moe_tok_buf_free(&raw);
    if (st) {
        moe_tok_buf_free(&out);
        return st;
    }
    *text = out.p;
    if (len) *len = out.n;
    return MOE_OK;
}

/* ---- streaming ---- */

struct moe_tokenizer_stream {
    const moe_tokenizer *t;
    int flags;
    moe_tok_dec_run run;
    moe_tok_buf out;       /* what the last call hands back */
};

moe_status moe_tokenizer_stream_create(const moe_tokenizer *t, int flags, moe_tokenizer_stream **out)
{
    if (!t || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    moe_tokenizer_stream *s = calloc(1, sizeof *s);
    if (!s || moe_tok_buf_append(&s->out, "", 0)) {
        free(s);
        return moe_error_set(MOE_ERR_NOMEM, "tokenizer stream: out of memory");
    }
    moe_status st = moe_tok_dec_run_init(&s->run, t, 1, &s->out);
    if (st) {
        moe_tok_buf_free(&s->out);
        free(s);
        return st;
    }
    s->t = t;
    s->flags = flags;
    *out = s;
    return MOE_OK;
}

moe_status moe_tokenizer_stream_put(moe_tokenizer_stream *s, int32_t id, const char **text, size_t *len)
{
    if (!s || !text) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    s->out.n = 0;
    s->out.p[0] = 0;
    size_t n;
    const char *p = visible_piece(s->t, id, s->flags, &n);
    moe_status st = p ? moe_tok_dec_run_put(&s->run, p, n) : MOE_OK;
    if (st) return st;
    *text = s->out.p;
    if (len) *len = s->out.n;
    return MOE_OK;
}

moe_status moe_tokenizer_stream_flush(moe_tokenizer_stream *s, const char **text, size_t *len)
{
    if (!s || !text) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    s->out.n = 0;
    s->out.p[0] = 0;
    moe_status st = moe_tok_dec_run_finish(&s->run);
    if (st) return st;
    *text = s->out.p;
    if (len) *len = s->out.n;
    return MOE_OK;
}

void moe_tokenizer_stream_free(moe_tokenizer_stream *s)
{
    if (!s) return;
    moe_tok_dec_run_free(&s->run);
    moe_tok_buf_free(&s->out);
    free(s);
}
