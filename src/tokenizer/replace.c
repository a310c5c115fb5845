/* tokenizer/replace.c — the Replace pattern that the Replace normalizer
 * (SentencePiece-style files: " " → "▁") and the Replace decoder ("▁" → " ")
 * share: {"String": s} or {"Regex": r}, and the "content" each match
 * becomes. Matches are found left to right without overlapping, a regex's
 * the way the pre-tokenizer's Split finds them (the reference uses one
 * matcher for both). */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

moe_status moe_tok_replace_read(const moe_tokenizer *t, json_object *o, const char *what, moe_tok_replace *r)
{
    memset(r, 0, sizeof *r);
    json_object *pat = moe_tok_json_get(o, "pattern"), *content = moe_tok_json_get(o, "content"), *s;
    if (!content || !json_object_is_type(content, json_type_string))
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s has no string 'content'", t->origin, what);
    r->content_len = (size_t)json_object_get_string_len(content);
    if (!(r->content = dup_n(json_object_get_string(content), r->content_len)))
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
    if ((s = moe_tok_json_get(pat, "String")) && json_object_is_type(s, json_type_string)) {
        r->literal_len = (size_t)json_object_get_string_len(s);
        if (!r->literal_len) return moe_error_set(MOE_ERR_FORMAT, "%s: %s pattern is an empty string", t->origin, what);
        if (!(r->literal = dup_n(json_object_get_string(s), r->literal_len)))
            return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
        return MOE_OK;
    }
    if ((s = moe_tok_json_get(pat, "Regex")) && json_object_is_type(s, json_type_string)) {
        r->re = moe_tok_regex_compile(t->origin, what, json_object_get_string(s), (size_t)json_object_get_string_len(s),
                                      0, &r->jit);
        return r->re ? MOE_OK : MOE_ERR_FORMAT;
    }
    return moe_error_set(MOE_ERR_FORMAT, "%s: %s has no pattern {\"String\": ...} or {\"Regex\": ...}", t->origin,
                         what);
}

moe_status moe_tok_replace_apply(const moe_tokenizer *t, const moe_tok_replace *r, const char *s, size_t n,
                                 moe_tok_buf *out)
{
    int bad = 0;
    if (r->literal) {
        const char *p = s, *end = s + n, *hit;
        while (!bad && (hit = memmem(p, (size_t)(end - p), r->literal, r->literal_len))) {
            bad = moe_tok_buf_append(out, p, (size_t)(hit - p)) || moe_tok_buf_append(out, r->content, r->content_len);
            p = hit + r->literal_len;
        }
        if (!bad) bad = moe_tok_buf_append(out, p, (size_t)(end - p));
        return bad ? moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin) : MOE_OK;
    }
    /* Its own match data: decoding may run on several threads at once. */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(r->re, NULL);
    if (!md) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
    size_t from = 0, last_end = SIZE_MAX, done = 0, ms, me;
    int rc = 0;
    while (!bad && (rc = moe_tok_regex_find(r->re, r->jit, md, NULL, s, n, &from, &last_end, &ms, &me)) == 1) {
        bad = moe_tok_buf_append(out, s + done, ms - done) || moe_tok_buf_append(out, r->content, r->content_len);
        done = me;
    }
    pcre2_match_data_free(md);
    if (!bad && rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: Replace pattern failed on the text: %s", t->origin,
                             (const char *)msg);
    }
    if (!bad) bad = moe_tok_buf_append(out, s + done, n - done);
    return bad ? moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin) : MOE_OK;
}

void moe_tok_replace_free(moe_tok_replace *r)
{
    free(r->literal);
    free(r->content);
    pcre2_code_free(r->re);
    memset(r, 0, sizeof *r);
}
