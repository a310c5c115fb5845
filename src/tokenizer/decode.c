/* tokenizer/decode.c — ids → text, whole or streamed.
 *
 * Decoders as the reference runs them: ByteLevel maps each character of a
 * token back to its byte (a token with a character outside the byte-level
 * alphabet, such as an added "<|endoftext|>" or "  ", is taken as its UTF-8
 * instead), and the bytes are read as UTF-8 with U+FFFD for what is not;
 * ByteFallback turns <0xXX> tokens into bytes (a run of them that is not
 * valid UTF-8 becomes one U+FFFD per byte); Fuse concatenates; no decoder
 * joins the tokens with spaces. Ids that name no token are left out.
 *
 * The stream keeps the bytes of an unfinished character until the token
 * that completes it arrives, so that every piece it hands out is whole
 * UTF-8. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

static const char FFFD[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

/* The byte a "<0xXX>" token stands for, or -1. */
static int fallback_byte(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* A token's piece, or NULL when the id names none or is skipped. */
static const char *visible_piece(const moe_tokenizer *t, int32_t id, int flags, size_t *len)
{
    const char *p = moe_tokenizer_piece(t, id, len);
    if (p && (flags & MOE_TOKENIZER_SKIP_SPECIAL) && t->special[id]) return NULL;
    return p;
}

/* ByteLevel: the piece's bytes, or the piece itself if a character of it is
 * outside the alphabet. */
static int append_bytelevel(const moe_tokenizer *t, const char *p, size_t n, moe_tok_buf *out)
{
    size_t mark = out->n;
    if (moe_tok_buf_reserve(out, n)) return -1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len;
        if (moe_utf8_next((const unsigned char *)p + i, n - i, &cp, &len) != MOE_UTF8_OK || cp >= 0x144 ||
            t->bl_byte[cp] < 0) {
            out->n = mark;
            return moe_tok_buf_append(out, p, n);
        }
        out->p[out->n++] = (char)t->bl_byte[cp];
        i += len;
    }
    out->p[out->n] = 0;
    return 0;
}

static int flush_fallback_run(moe_tok_buf *out, const moe_tok_buf *run)
{
    if (moe_utf8_valid(run->p, run->n)) return moe_tok_buf_append(out, run->p, run->n);
    for (size_t i = 0; i < run->n; i++)
        if (moe_tok_buf_append(out, FFFD, 3)) return -1;
    return 0;
}

moe_status moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n_ids, int flags, char **text,
                                size_t *len)
{
    if (!t || (!ids && n_ids) || n_ids < 0 || !text)
        return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer decode: NULL argument or negative count");
    *text = NULL;
    moe_tok_buf raw = { 0 }, run = { 0 }, out = { 0 };
    int bad = moe_tok_buf_append(&raw, "", 0), first = 1;
    for (int i = 0; i < n_ids && !bad; i++) {
        size_t n;
        const char *p = visible_piece(t, ids[i], flags, &n);
        if (!p) continue;
        switch (t->dec_mode) {
        case MOE_DEC_BYTELEVEL: bad = append_bytelevel(t, p, n, &raw); break;
        case MOE_DEC_BYTEFALLBACK: {
            int b = fallback_byte(p, n);
            if (b >= 0) {
                char c = (char)b;
                bad = moe_tok_buf_append(&run, &c, 1);
            } else {
                bad = flush_fallback_run(&raw, &run) || moe_tok_buf_append(&raw, p, n);
                run.n = 0;
            }
            break;
        }
        case MOE_DEC_CONCAT: bad = moe_tok_buf_append(&raw, p, n); break;
        case MOE_DEC_NONE: bad = (!first && moe_tok_buf_append(&raw, " ", 1)) || moe_tok_buf_append(&raw, p, n); break;
        }
        first = 0;
    }
    if (!bad && run.n) bad = flush_fallback_run(&raw, &run);
    if (!bad) bad = moe_tok_buf_append(&out, "", 0) || moe_utf8_append_lossy(&out, raw.p, raw.n);
    moe_tok_buf_free(&raw);
    moe_tok_buf_free(&run);
    if (bad) {
        moe_tok_buf_free(&out);
        return moe_error_set(MOE_ERR_NOMEM, "tokenizer decode: out of memory");
    }
    *text = out.p;
    if (len) *len = out.n;
    return MOE_OK;
}

/* ---- streaming ---- */

struct moe_tokenizer_stream {
    const moe_tokenizer *t;
    int flags;
    int emitted;           /* a token has been decoded (no-decoder mode puts spaces between) */
    moe_tok_buf pending;   /* bytes of an unfinished character */
    moe_tok_buf out;       /* what the last call hands back */
};

moe_status moe_tokenizer_stream_create(const moe_tokenizer *t, int flags, moe_tokenizer_stream **out)
{
    if (!t || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    moe_tokenizer_stream *s = calloc(1, sizeof *s);
    if (!s || moe_tok_buf_append(&s->out, "", 0) || moe_tok_buf_append(&s->pending, "", 0)) {
        moe_tokenizer_stream_free(s);
        return moe_error_set(MOE_ERR_NOMEM, "tokenizer stream: out of memory");
    }
    s->t = t;
    s->flags = flags;
    *out = s;
    return MOE_OK;
}

/* Moves the complete part of pending to out: whole characters as they are,
 * invalid subparts as U+FFFD; an unfinished character at the end stays. */
static int drain(moe_tokenizer_stream *s)
{
    int nomem;
    size_t done = moe_utf8_append_complete(&s->out, s->pending.p, s->pending.n, &nomem);
    if (nomem) return -1;
    memmove(s->pending.p, s->pending.p + done, s->pending.n - done);
    s->pending.n -= done;
    return 0;
}

moe_status moe_tokenizer_stream_put(moe_tokenizer_stream *s, int32_t id, const char **text, size_t *len)
{
    if (!s || !text) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    const moe_tokenizer *t = s->t;
    s->out.n = 0;
    s->out.p[0] = 0;
    size_t n;
    const char *p = visible_piece(t, id, s->flags, &n);
    int bad = 0;
    if (p) {
        moe_tok_buf *b = &s->pending;
        int fb = t->dec_mode == MOE_DEC_BYTEFALLBACK ? fallback_byte(p, n) : -1;
        if (t->dec_mode == MOE_DEC_BYTELEVEL) bad = append_bytelevel(t, p, n, b);
        else if (fb >= 0) {
            char c = (char)fb;
            bad = moe_tok_buf_append(b, &c, 1);
        } else
            bad = (t->dec_mode == MOE_DEC_NONE && s->emitted && moe_tok_buf_append(b, " ", 1)) ||
                  moe_tok_buf_append(b, p, n);
        s->emitted = 1;
        if (!bad) bad = drain(s);
    }
    if (bad) return moe_error_set(MOE_ERR_NOMEM, "tokenizer stream: out of memory");
    *text = s->out.p;
    if (len) *len = s->out.n;
    return MOE_OK;
}

moe_status moe_tokenizer_stream_flush(moe_tokenizer_stream *s, const char **text, size_t *len)
{
    if (!s || !text) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer stream: NULL argument");
    s->out.n = 0;
    s->out.p[0] = 0;
    if (moe_utf8_append_lossy(&s->out, s->pending.p, s->pending.n))
        return moe_error_set(MOE_ERR_NOMEM, "tokenizer stream: out of memory");
    s->pending.n = 0;
    s->emitted = 0;
    *text = s->out.p;
    if (len) *len = s->out.n;
    return MOE_OK;
}

void moe_tokenizer_stream_free(moe_tokenizer_stream *s)
{
    if (!s) return;
    moe_tok_buf_free(&s->pending);
    moe_tok_buf_free(&s->out);
    free(s);
}
