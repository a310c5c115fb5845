/* tokenizer/decoder.c — the decoder: reading it from tokenizer.json, and
 * running it. The reference's decoder is a list of steps, each turning the
 * list of token strings into another, the results joined at the end (with
 * spaces when there is no decoder at all):
 *
 *   ByteLevel     each token's characters back to the bytes they stand for (a
 *                 token with a character outside the byte-level alphabet, such
 *                 as "<|endoftext|>", as its UTF-8), all joined into one token,
 *                 read as UTF-8 with U+FFFD for what is not
 *   ByteFallback  each run of <0xXX> tokens becomes one token, the text of its
 *                 bytes, or one U+FFFD per byte when they are not UTF-8
 *   Fuse          all tokens joined into one
 *   Replace       a pattern replaced in each token ("▁" → " ")
 *   Strip         up to `start` copies of a character cut off each token's
 *                 start and up to `stop` off its end (after Fuse: the text's)
 *   Metaspace     the replacement character back to a space, except in the
 *                 first token, where it is dropped (unless prepend_scheme is
 *                 "never")
 *
 * SentencePiece-style files chain Replace, ByteFallback, Fuse and Strip
 * (Llama-2, Mistral) or stop after Fuse (Gemma); byte-level ones use
 * ByteLevel alone.
 *
 * Here the tokens go through the steps one at a time, each step handing on
 * pieces of its output tokens ("fragments", flagged where a token begins)
 * and holding only what it cannot decide yet: the bytes of a run, an
 * unfinished character, trailing characters that Strip may cut. Decoding a
 * whole list and streaming are then the same code; streaming (`eager`)
 * differs only in handing on a byte run's characters as each completes. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

#define NOMEM() moe_error_set(MOE_ERR_NOMEM, "tokenizer decode: out of memory")

static const char FFFD[3] = { (char)0xEF, (char)0xBF, (char)0xBD };

/* ---- reading ---- */

static moe_tok_dec *new_step(moe_tokenizer *t, moe_tok_dec_kind kind)
{
    moe_tok_dec *d = moe_tok_push((void **)&t->dec, &t->n_dec, sizeof *d);
    if (d) d->kind = kind;
    return d;
}

static moe_status read_count(const moe_tokenizer *t, json_object *o, const char *key, size_t *out)
{
    json_object *v = moe_tok_json_get(o, key);
    *out = 0;
    if (!v) return MOE_OK;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
        return moe_error_set(MOE_ERR_FORMAT, "%s: decoder Strip field '%s' is not a count", t->origin, key);
    *out = (size_t)json_object_get_int64(v);
    return MOE_OK;
}

static moe_status add_decoder(moe_tokenizer *t, json_object *o, int depth)
{
    const char *type = moe_tok_json_type(o);
    static const struct { const char *name; moe_tok_dec_kind kind; } plain[] = {
        { "ByteLevel", MOE_DEC_BYTELEVEL }, { "ByteFallback", MOE_DEC_BYTEFALLBACK }, { "Fuse", MOE_DEC_FUSE },
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        if (!strcmp(type, plain[i].name))
            return new_step(t, plain[i].kind) ? MOE_OK : moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
    moe_tok_dec *d = NULL;
    moe_status st;
    if (!strcmp(type, "Replace")) {
        if (!(d = new_step(t, MOE_DEC_REPLACE))) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        return moe_tok_replace_read(t, o, "decoder Replace", &d->rep);
    }
    if (!strcmp(type, "Strip")) {
        if (!(d = new_step(t, MOE_DEC_STRIP))) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        if ((st = moe_tok_json_char(t, o, "decoder Strip", "content", &d->ch)) ||
            (st = read_count(t, o, "start", &d->start)) || (st = read_count(t, o, "stop", &d->stop)))
            return st;
        return MOE_OK;
    }
    if (!strcmp(type, "Metaspace")) {
        if (!(d = new_step(t, MOE_DEC_METASPACE))) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        moe_tok_prepend scheme;
        if ((st = moe_tok_json_char(t, o, "decoder Metaspace", "replacement", &d->ch)) ||
            (st = moe_tok_read_prepend_scheme(t, o, "decoder Metaspace", &scheme)))
            return st;
        d->drop_first = scheme != MOE_PREPEND_NEVER;
        return MOE_OK;
    }
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_object *list = moe_tok_json_get(o, "decoders");
        if (!list || !json_object_is_type(list, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: decoder Sequence has no 'decoders' list", t->origin);
        for (size_t i = 0; i < json_object_array_length(list); i++)
            if ((st = add_decoder(t, json_object_array_get_idx(list, i), depth + 1))) return st;
        return MOE_OK;
    }
    return moe_error_set(MOE_ERR_UNSUPPORTED,
                         "%s: decoder '%s' is not supported (moe reads ByteLevel, ByteFallback, Fuse, Replace, Strip, "
                         "Metaspace, Sequence)",
                         t->origin, *type ? type : "(no type)");
}

static const char *dec_name(moe_tok_dec_kind k)
{
    return k == MOE_DEC_BYTELEVEL ? "ByteLevel" : k == MOE_DEC_BYTEFALLBACK ? "ByteFallback" : "Fuse";
}

moe_status moe_tok_read_decoder(moe_tokenizer *t, json_object *o)
{
    t->has_decoder = o != NULL;
    if (!o) return MOE_OK;
    moe_status st = add_decoder(t, o, 0);
    if (st) return st;
    /* ByteLevel and ByteFallback read whole tokens: none may come after a
     * step that joins tokens (or, streaming, hands them on in pieces). */
    int joined = -1;
    for (int k = 0; k < t->n_dec; k++) {
        moe_tok_dec_kind kind = t->dec[k].kind;
        int reads_whole = kind == MOE_DEC_BYTELEVEL || kind == MOE_DEC_BYTEFALLBACK;
        if (reads_whole && joined >= 0)
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: decoder %s after %s is not supported", t->origin,
                                 dec_name(kind), dec_name(t->dec[joined].kind));
        if (reads_whole || kind == MOE_DEC_FUSE) joined = k;
    }
    return MOE_OK;
}

void moe_tok_dec_free(moe_tokenizer *t)
{
    for (int k = 0; k < t->n_dec; k++) moe_tok_replace_free(&t->dec[k].rep);
    free(t->dec);
    t->dec = NULL;
    t->n_dec = 0;
}

/* ---- running ---- */

moe_status moe_tok_dec_run_init(moe_tok_dec_run *r, const moe_tokenizer *t, int eager, moe_tok_buf *out)
{
    memset(r, 0, sizeof *r);
    r->t = t;
    r->eager = eager;
    r->out = out;
    r->st = calloc((size_t)(t->n_dec ? t->n_dec : 1), sizeof *r->st);
    if (!r->st) return NOMEM();
    for (int k = 0; k < t->n_dec; k++) r->st[k].at_start = SIZE_MAX;
    return MOE_OK;
}

void moe_tok_dec_run_free(moe_tok_dec_run *r)
{
    if (!r->st) return;
    for (int k = 0; k < r->t->n_dec; k++) {
        moe_tok_buf_free(&r->st[k].buf);
        moe_tok_buf_free(&r->st[k].bytes);
    }
    free(r->st);
    r->st = NULL;
}

static moe_status feed(moe_tok_dec_run *r, int k, const char *s, size_t n, int start);

/* The byte a "<0xXX>" token stands for, or -1 (Rust's u8::from_str_radix
 * on the two characters, which also takes "+X"). */
static int fallback_byte(const char *p, size_t n)
{
    if (n != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int v = 0;
    for (int i = p[3] == '+' ? 4 : 3; i < 5; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Moves the whole characters at the front of b (and invalid parts, as
 * U+FFFD) to out; an unfinished character stays in b. */
static int move_complete(moe_tok_buf *b, moe_tok_buf *out)
{
    int nomem;
    size_t done = moe_utf8_append_complete(out, b->p, b->n, &nomem);
    if (nomem) return -1;
    memmove(b->p, b->p + done, b->n - done);
    b->n -= done;
    return 0;
}

/* ByteLevel: the token's bytes appended to b, or its UTF-8 if a character
 * of it is outside the alphabet. */
static int append_bytelevel(const moe_tokenizer *t, const char *p, size_t n, moe_tok_buf *b)
{
    size_t mark = b->n;
    if (moe_tok_buf_reserve(b, n)) return -1;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len;
        if (moe_utf8_next((const unsigned char *)p + i, n - i, &cp, &len) != MOE_UTF8_OK || cp >= 0x144 ||
            t->bl_byte[cp] < 0) {
            b->n = mark;
            return moe_tok_buf_append(b, p, n);
        }
        b->p[b->n++] = (char)t->bl_byte[cp];
        i += len;
    }
    b->p[b->n] = 0;
    return 0;
}

static moe_status bytelevel(moe_tok_dec_run *r, int k, const char *s, size_t n, int flush)
{
    struct moe_tok_dec_state *st = &r->st[k];
    st->buf.n = 0;
    if (flush ? moe_utf8_append_lossy(&st->buf, st->bytes.p, st->bytes.n)
              : append_bytelevel(r->t, s, n, &st->bytes) || move_complete(&st->bytes, &st->buf))
        return NOMEM();
    if (flush) st->bytes.n = 0;
    if (!st->buf.n) return MOE_OK;
    int start = !st->joined;
    st->joined = 1;
    return feed(r, k + 1, st->buf.p, st->buf.n, start);
}

/* ByteFallback: the end of a run of byte tokens. */
static moe_status run_end(moe_tok_dec_run *r, int k)
{
    struct moe_tok_dec_state *st = &r->st[k];
    if (!st->in_run) return MOE_OK;
    st->in_run = 0;
    st->buf.n = 0;
    moe_status s = MOE_OK;
    if (r->eager) {
        if (moe_utf8_append_lossy(&st->buf, st->bytes.p, st->bytes.n)) return NOMEM();
        if (st->buf.n) s = feed(r, k + 1, st->buf.p, st->buf.n, !st->run_out);
    } else if (moe_utf8_valid(st->bytes.p, st->bytes.n)) {
        if (moe_tok_buf_append(&st->buf, st->bytes.p, st->bytes.n)) return NOMEM();
        s = feed(r, k + 1, st->buf.p, st->buf.n, 1);
    } else
        for (size_t i = 0; i < st->bytes.n && !s; i++) s = feed(r, k + 1, FFFD, 3, 1);
    st->bytes.n = 0;
    return s;
}

static moe_status bytefallback(moe_tok_dec_run *r, int k, const char *s, size_t n, int start)
{
    struct moe_tok_dec_state *st = &r->st[k];
    int b = fallback_byte(s, n);
    if (b < 0) {
        moe_status e = run_end(r, k);
        return e ? e : feed(r, k + 1, s, n, start);
    }
    if (!st->in_run) st->in_run = 1, st->run_out = 0, st->bytes.n = 0;
    char c = (char)b;
    if (moe_tok_buf_append(&st->bytes, &c, 1)) return NOMEM();
    if (!r->eager) return MOE_OK;
    st->buf.n = 0;
    if (move_complete(&st->bytes, &st->buf)) return NOMEM();
    if (!st->buf.n) return MOE_OK;
    int first = !st->run_out;
    st->run_out = 1;
    return feed(r, k + 1, st->buf.p, st->buf.n, first);
}

/* Strip, one character of the token: cut at its start, held back (it may
 * end the token), or out with what was held. */
static int strip_char(const moe_tok_dec *d, struct moe_tok_dec_state *st, uint32_t cp, const char *ch, size_t len,
                      moe_tok_buf *out)
{
    if (st->at_start != SIZE_MAX) {
        if (st->at_start < d->start && cp == d->ch) return st->at_start++, 0;
        st->at_start = SIZE_MAX;
    }
    char c[4];
    size_t cl = moe_utf8_put(d->ch, c);
    if (cp == d->ch && d->stop) {
        if (st->held < d->stop) return st->held++, 0;
        return moe_tok_buf_append(out, c, cl);   /* the oldest held one is not at the end */
    }
    for (; st->held; st->held--)
        if (moe_tok_buf_append(out, c, cl)) return -1;
    return moe_tok_buf_append(out, ch, len);
}

/* Strip and Metaspace: character by character. */
static moe_status per_char(moe_tok_dec_run *r, int k, const char *s, size_t n, int start)
{
    const moe_tok_dec *d = &r->t->dec[k];
    struct moe_tok_dec_state *st = &r->st[k];
    if (start) {
        st->tokens++;
        st->held = 0;   /* what Strip held ended the last token: cut */
        st->at_start = 0;
    }
    int drop = d->drop_first && st->tokens == 1;   /* Metaspace */
    st->buf.n = 0;
    int bad = moe_tok_buf_reserve(&st->buf, n);
    for (size_t i = 0; i < n && !bad;) {
        uint32_t cp;
        size_t len;
        moe_utf8_next((const unsigned char *)s + i, n - i, &cp, &len);
        if (d->kind == MOE_DEC_STRIP) bad = strip_char(d, st, cp, s + i, len, &st->buf);
        else if (cp != d->ch) bad = moe_tok_buf_append(&st->buf, s + i, len);
        else if (!drop) bad = moe_tok_buf_append(&st->buf, " ", 1);
        i += len;
    }
    return bad ? NOMEM() : feed(r, k + 1, st->buf.p, st->buf.n, start);
}

/* A fragment into step k (past the last step: into the output). */
static moe_status feed(moe_tok_dec_run *r, int k, const char *s, size_t n, int start)
{
    if (k == r->t->n_dec) {
        if (start && r->tokens_out++ && !r->t->has_decoder && moe_tok_buf_append(r->out, " ", 1)) return NOMEM();
        return moe_tok_buf_append(r->out, s, n) ? NOMEM() : MOE_OK;
    }
    struct moe_tok_dec_state *st = &r->st[k];
    switch (r->t->dec[k].kind) {
    case MOE_DEC_BYTELEVEL: return bytelevel(r, k, s, n, 0);
    case MOE_DEC_BYTEFALLBACK: return bytefallback(r, k, s, n, start);
    case MOE_DEC_FUSE: {
        int first = !st->joined;
        st->joined = 1;
        return feed(r, k + 1, s, n, first);
    }
    case MOE_DEC_REPLACE: {
        st->buf.n = 0;
        moe_status e = moe_tok_replace_apply(r->t, &r->t->dec[k].rep, s, n, &st->buf);
        return e ? e : feed(r, k + 1, st->buf.p ? st->buf.p : "", st->buf.n, start);
    }
    case MOE_DEC_STRIP:
    case MOE_DEC_METASPACE: return per_char(r, k, s, n, start);
    }
    return MOE_OK;
}

moe_status moe_tok_dec_run_put(moe_tok_dec_run *r, const char *piece, size_t n) { return feed(r, 0, piece, n, 1); }

moe_status moe_tok_dec_run_finish(moe_tok_dec_run *r)
{
    moe_status s = MOE_OK;
    for (int k = 0; k < r->t->n_dec && !s; k++) {
        struct moe_tok_dec_state *st = &r->st[k];
        if (r->t->dec[k].kind == MOE_DEC_BYTEFALLBACK) s = run_end(r, k);
        else if (r->t->dec[k].kind == MOE_DEC_BYTELEVEL && st->bytes.n) s = bytelevel(r, k, NULL, 0, 1);
    }
    for (int k = 0; k < r->t->n_dec; k++) {
        struct moe_tok_dec_state *st = &r->st[k];
        st->bytes.n = 0;
        st->tokens = st->held = 0;
        st->at_start = SIZE_MAX;
        st->in_run = st->run_out = st->joined = 0;
    }
    r->tokens_out = 0;
    return s;
}
