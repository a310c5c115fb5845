/* tokenizer/metaspace.c — the Metaspace pre-tokenizer of SentencePiece-style
 * tokenizers (Llama-2 converted without `legacy`, Mistral v3, T5-likes):
 * every space (U+0020 only) becomes the replacement character ("▁"), one
 * more is put in front as prepend_scheme says, and with `split` the text is
 * cut before each replacement character (the reference's MergedWithNext):
 *
 *   "Hey  you"  →  "▁Hey▁▁you"  →  "▁Hey" "▁" "▁you"
 *
 * prepend_scheme "always" prepends to every piece that does not already
 * begin with the replacement; "first" only to the piece that begins where
 * the input text begins (so not after an added token such as <s> or
 * [INST]); "never" not at all. Files written before prepend_scheme existed
 * say add_prefix_space instead: true is "always", false "never". The
 * reference reads `split` as true when it is absent. */
#include <json-c/json.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

moe_status moe_tok_read_prepend_scheme(const moe_tokenizer *t, json_object *o, const char *where,
                                       moe_tok_prepend *out)
{
    json_object *legacy = moe_tok_json_get(o, "add_prefix_space"), *scheme = moe_tok_json_get(o, "prepend_scheme");
    *out = MOE_PREPEND_ALWAYS;
    if (legacy) {   /* the reference lets add_prefix_space decide when both are there */
        int add;
        moe_status st = moe_tok_json_bool(t, o, where, "add_prefix_space", 1, &add);
        if (st) return st;
        *out = add ? MOE_PREPEND_ALWAYS : MOE_PREPEND_NEVER;
        return MOE_OK;
    }
    if (!scheme) return MOE_OK;
    const char *s = json_object_is_type(scheme, json_type_string) ? json_object_get_string(scheme) : "";
    if (!strcmp(s, "always")) *out = MOE_PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *out = MOE_PREPEND_FIRST;
    else if (!strcmp(s, "never")) *out = MOE_PREPEND_NEVER;
    else
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: %s prepend_scheme '%s' is not supported (always, first, never)",
                             t->origin, where, json_object_get_string(scheme));
    return MOE_OK;
}

moe_status moe_tok_read_metaspace(moe_tokenizer *t, json_object *o, moe_tok_pre *p)
{
    static const char where[] = "pre_tokenizer Metaspace";
    uint32_t cp;
    moe_status st;
    if ((st = moe_tok_json_char(t, o, where, "replacement", &cp)) ||
        (st = moe_tok_read_prepend_scheme(t, o, where, &p->prepend)) ||
        (st = moe_tok_json_bool(t, o, where, "split", 1, &p->split)))
        return st;
    p->kind = MOE_PRE_METASPACE;
    p->rep_len = moe_utf8_put(cp, p->rep);
    return MOE_OK;
}

moe_status moe_tok_metaspace_piece(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, int at_start,
                                   moe_tok_pieces *out)
{
    moe_tok_buf *b = &t->tmp;
    b->n = 0;
    if (moe_tok_buf_reserve(b, n * step->rep_len + step->rep_len)) return MOE_ERR_NOMEM;
    /* a space at the start becomes the replacement: that counts as starting with it */
    int starts_with_rep = s[0] == ' ' || (n >= step->rep_len && !memcmp(s, step->rep, step->rep_len));
    if (!starts_with_rep &&
        (step->prepend == MOE_PREPEND_ALWAYS || (step->prepend == MOE_PREPEND_FIRST && at_start)))
        moe_tok_buf_append(b, step->rep, step->rep_len);   /* room reserved above */
    for (const char *p = s, *end = s + n; p < end;) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        const char *stop = sp ? sp : end;
        moe_tok_buf_append(b, p, (size_t)(stop - p));
        if (sp) moe_tok_buf_append(b, step->rep, step->rep_len);
        p = sp ? sp + 1 : end;
    }
    if (!step->split) return moe_tok_pieces_push(out, b->p, b->n, at_start) ? MOE_ERR_NOMEM : MOE_OK;
    /* MergedWithNext: each replacement character begins a piece. */
    size_t from = 0;
    for (size_t i = 0; i + step->rep_len <= b->n; i++) {
        if (i > from && !memcmp(b->p + i, step->rep, step->rep_len)) {
            if (moe_tok_pieces_push(out, b->p + from, i - from, at_start && from == 0)) return MOE_ERR_NOMEM;
            from = i;
        }
    }
    return moe_tok_pieces_push(out, b->p + from, b->n - from, at_start && from == 0) ? MOE_ERR_NOMEM : MOE_OK;
}
