/* tokenizer/normalize.c — the normalizers: the Unicode forms (NFC, NFD,
 * NFKC, NFKD) through utf8proc; Prepend and Replace, which SentencePiece-
 * style files use to write spaces as "▁" (Llama-2: Sequence[Prepend("▁"),
 * Replace(" " → "▁")], Gemma: Replace alone); Sequences of them. Each runs
 * on one stretch of text between added tokens, as in the reference: Prepend
 * puts its string before every non-empty stretch.
 *
 * ASCII is the same in every Unicode form and never combines with what
 * comes before it, so text is cut before each ASCII character: runs of
 * ASCII are copied as they are and only the rest (with the one ASCII
 * character before it, which a combining mark may join) goes through
 * utf8proc. English text is then little more than a copy. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

static utf8proc_option_t options(moe_tok_norm_kind form)
{
    switch (form) {
    case MOE_NORM_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case MOE_NORM_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case MOE_NORM_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case MOE_NORM_NFKD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    default: return UTF8PROC_STABLE;
    }
}

/* One Unicode form over s[0..n) (valid UTF-8), appended to out. */
static moe_status unicode_form(const moe_tokenizer *t, moe_tok_norm_kind form, const char *s, size_t n,
                               moe_tok_buf *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && u[j] < 0x80) j++;
        if (j == n) return moe_tok_buf_append(out, s + i, n - i) ? MOE_ERR_NOMEM : MOE_OK;
        size_t start = j > i ? j - 1 : j, k = j;
        while (k < n && u[k] >= 0x80) k++;
        if (moe_tok_buf_append(out, s + i, start - i)) return MOE_ERR_NOMEM;
        utf8proc_uint8_t *res = NULL;
        utf8proc_ssize_t r = utf8proc_map(u + start, (utf8proc_ssize_t)(k - start), &res, options(form));
        if (r < 0) {
            free(res);
            return moe_error_set(MOE_ERR_FORMAT, "%s: normalizer failed on the text: %s", t->origin,
                                 utf8proc_errmsg(r));
        }
        int bad = moe_tok_buf_append(out, res, (size_t)r);
        free(res);
        if (bad) return MOE_ERR_NOMEM;
        i = k;
    }
    return MOE_OK;
}

/* One step over s[0..n), appended to out. */
static moe_status normalize_one(const moe_tokenizer *t, const moe_tok_norm *step, const char *s, size_t n,
                                moe_tok_buf *out)
{
    switch (step->kind) {
    case MOE_NORM_PREPEND:
        if (n && moe_tok_buf_append(out, step->prepend, step->prepend_len)) return MOE_ERR_NOMEM;
        return moe_tok_buf_append(out, s, n) ? MOE_ERR_NOMEM : MOE_OK;
    case MOE_NORM_REPLACE: return moe_tok_replace_apply(t, &step->rep, s, n, out);
    default: return unicode_form(t, step->kind, s, n, out);
    }
}

moe_status moe_tok_normalize(const moe_tokenizer *t, const moe_tok_norm *steps, int n_steps, const char *s, size_t n,
                             moe_tok_buf *out)
{
    moe_tok_buf a = { 0 };
    out->n = 0;
    if (moe_tok_buf_append(out, "", 0)) return moe_error_set(MOE_ERR_NOMEM, "normalizer: out of memory");
    const char *src = s;
    size_t len = n;
    for (int k = 0; k < n_steps; k++) {
        /* Each step reads the previous one's output: alternate between out and a. */
        moe_tok_buf *dst = (k % 2 == (n_steps - 1) % 2) ? out : &a;
        dst->n = 0;
        moe_status st = moe_tok_buf_reserve(dst, 0) ? MOE_ERR_NOMEM : normalize_one(t, &steps[k], src, len, dst);
        if (st == MOE_ERR_NOMEM) st = moe_error_set(MOE_ERR_NOMEM, "normalizer: out of memory");
        if (st) {
            moe_tok_buf_free(&a);
            return st;
        }
        src = dst->p, len = dst->n;
    }
    moe_tok_buf_free(&a);
    if (n_steps == 0 && moe_tok_buf_append(out, s, n)) return moe_error_set(MOE_ERR_NOMEM, "normalizer: out of memory");
    return MOE_OK;
}

/* ---- reading the "normalizer" object ---- */

static moe_tok_norm *new_step(moe_tokenizer *t, moe_tok_norm_kind kind)
{
    moe_tok_norm *n = moe_tok_push((void **)&t->norm, &t->n_norm, sizeof *n);
    if (n) n->kind = kind;
    return n;
}

static moe_status add_norm(moe_tokenizer *t, json_object *o, int depth)
{
    const char *type = moe_tok_json_type(o);
    static const struct { const char *name; moe_tok_norm_kind form; } forms[] = {
        { "NFC", MOE_NORM_NFC }, { "NFD", MOE_NORM_NFD }, { "NFKC", MOE_NORM_NFKC }, { "NFKD", MOE_NORM_NFKD },
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(type, forms[i].name))
            return new_step(t, forms[i].form) ? MOE_OK : moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
    if (!strcmp(type, "Prepend")) {
        json_object *p = moe_tok_json_get(o, "prepend");
        if (!p || !json_object_is_type(p, json_type_string))
            return moe_error_set(MOE_ERR_FORMAT, "%s: normalizer Prepend has no string 'prepend'", t->origin);
        moe_tok_norm *n = new_step(t, MOE_NORM_PREPEND);
        if (n) n->prepend_len = (size_t)json_object_get_string_len(p);
        if (!n || !(n->prepend = malloc(n->prepend_len + 1)))
            return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        memcpy(n->prepend, json_object_get_string(p), n->prepend_len + 1);
        return MOE_OK;
    }
    if (!strcmp(type, "Replace")) {
        moe_tok_norm *n = new_step(t, MOE_NORM_REPLACE);
        if (!n) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        return moe_tok_replace_read(t, o, "normalizer Replace", &n->rep);
    }
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_object *list = moe_tok_json_get(o, "normalizers");
        if (!list || !json_object_is_type(list, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: normalizer Sequence has no 'normalizers' list", t->origin);
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            moe_status st = add_norm(t, json_object_array_get_idx(list, i), depth + 1);
            if (st) return st;
        }
        return MOE_OK;
    }
    return moe_error_set(MOE_ERR_UNSUPPORTED,
                         "%s: normalizer '%s' is not supported (moe reads NFC, NFD, NFKC, NFKD, Prepend, Replace, "
                         "Sequence)",
                         t->origin, *type ? type : "(no type)");
}

moe_status moe_tok_read_normalizer(moe_tokenizer *t, json_object *o) { return add_norm(t, o, 0); }

void moe_tok_norm_free(moe_tokenizer *t)
{
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].prepend);
        moe_tok_replace_free(&t->norm[i].rep);
    }
    free(t->norm);
    t->norm = NULL;
    t->n_norm = 0;
}
