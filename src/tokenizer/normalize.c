/* tokenizer/normalize.c — the Unicode normalizers (NFC, NFD, NFKC, NFKD,
 * and Sequences of them) through utf8proc.
 *
 * ASCII is the same in every form and never combines with what comes
 * before it, so text is cut before each ASCII character: runs of ASCII are
 * copied as they are and only the rest (with the one ASCII character before
 * it, which a combining mark may join) goes through utf8proc. English text
 * is then little more than a copy. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

static utf8proc_option_t options(moe_tok_norm form)
{
    switch (form) {
    case MOE_NORM_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case MOE_NORM_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case MOE_NORM_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case MOE_NORM_NFKD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
    return UTF8PROC_STABLE;
}

/* One form over s[0..n) (valid UTF-8), appended to out. */
static moe_status normalize_one(const moe_tokenizer *t, moe_tok_norm form, const char *s, size_t n, moe_tok_buf *out)
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
        moe_status st = normalize_one(t, steps[k], src, len, dst);
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
