/* tokenizer/encode.c — text → ids, the reference's encode of one sequence:
 *
 *   invalid UTF-8 replaced (U+FFFD for each maximal invalid subpart)
 *   added tokens with normalized=false cut out of the raw text
 *   each stretch between them normalized, then the normalized added tokens cut out
 *   each remaining stretch pre-tokenized into pieces, each piece through BPE
 *   the post-processor's tokens around it all (when asked for)
 *
 * and the lookups of the public API (pieces, ids, special tokens, BOS/EOS). */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

/* One stretch of text between raw added tokens; at_start: it begins where the text begins. */
static moe_status encode_stretch(moe_tokenizer *t, const char *s, size_t n, int at_start, moe_tok_ids *out)
{
    const char *text = s;
    size_t len = n;
    moe_status st;
    if (t->n_norm) {
        if ((st = moe_tok_normalize(t, t->norm, t->n_norm, s, n, &t->normed))) return st;
        text = t->normed.p, len = t->normed.n;
    }
    t->norm_segs.n = 0;
    if ((st = moe_tok_split_added(t, &t->norm_set, text, len, 0, &t->norm_segs))) return st;
    for (size_t k = 0; k < t->norm_segs.n; k++) {
        const moe_tok_seg *g = &t->norm_segs.v[k];
        if (g->id >= 0) {
            if (moe_tok_ids_push(out, g->id)) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
            continue;
        }
        moe_tok_pieces *pieces;
        if ((st = moe_tok_pretokenize(t, text + g->off, g->len, at_start && g->off == 0, &pieces))) return st;
        for (size_t i = 0; i < pieces->n; i++)
            if ((st = moe_tok_bpe(t, pieces->text.p + pieces->span[i].off, pieces->span[i].len, out))) return st;
    }
    return MOE_OK;
}

moe_status moe_tokenizer_encode(moe_tokenizer *t, const char *text, size_t len, int add_special, int32_t **ids,
                                int *n_ids)
{
    if (!t || (!text && len) || !ids || !n_ids) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    if (!text) text = "";
    if (!moe_utf8_valid(text, len)) {
        t->valid.n = 0;
        if (moe_utf8_append_lossy(&t->valid, text, len)) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
        text = t->valid.p, len = t->valid.n;
    }
    moe_tok_ids out = { 0 };
    moe_status st = MOE_OK;
    if (add_special && moe_tok_ids_append(&out, t->prefix, (size_t)t->n_prefix)) st = MOE_ERR_NOMEM;
    t->raw_segs.n = 0;
    if (!st) st = moe_tok_split_added(t, &t->raw_set, text, len, 0, &t->raw_segs);
    for (size_t k = 0; k < t->raw_segs.n && !st; k++) {
        const moe_tok_seg *g = &t->raw_segs.v[k];
        if (g->id >= 0) st = moe_tok_ids_push(&out, g->id) ? MOE_ERR_NOMEM : MOE_OK;
        else st = encode_stretch(t, text + g->off, g->len, g->off == 0, &out);
    }
    if (!st && add_special && moe_tok_ids_append(&out, t->suffix, (size_t)t->n_suffix)) st = MOE_ERR_NOMEM;
    if (!st && out.n > INT32_MAX) st = moe_error_set(MOE_ERR_RANGE, "tokenizer encode: more than 2^31 tokens");
    if (st == MOE_ERR_NOMEM) st = moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while encoding", t->origin);
    if (st) {
        free(out.v);
        return st;
    }
    *ids = out.v;
    *n_ids = (int)out.n;
    return MOE_OK;
}

/* ---- lookups ---- */

int moe_tokenizer_vocab_size(const moe_tokenizer *t) { return t ? t->n_ids : 0; }

const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len)
{
    if (!t || id < 0 || id >= t->n_ids || t->piece_off[id] == UINT32_MAX) return NULL;
    if (len) *len = t->piece_len[id];
    return t->pieces.p + t->piece_off[id];
}

int32_t moe_tokenizer_token_id(const moe_tokenizer *t, const char *piece)
{
    if (!t || !piece) return -1;
    size_t n = strlen(piece);
    int32_t id = moe_tok_strmap_get(&t->added_ids, piece, n);
    return id >= 0 ? id : moe_tok_strmap_get(&t->vocab, piece, n);
}

int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_ids && t->special[id];
}

int32_t moe_tokenizer_bos_id(const moe_tokenizer *t) { return t && t->n_prefix ? t->prefix[0] : -1; }

int32_t moe_tokenizer_eos_id(const moe_tokenizer *t) { return t && t->n_suffix ? t->suffix[t->n_suffix - 1] : -1; }
