/* tokenizer/pretokenize.c — cutting normalized text into pieces before BPE:
 * Split (a regex or a string, with the reference's five behaviors and
 * invert), Digits, and ByteLevel (optional prefix space, GPT-2's regex, then
 * every byte written as a character of the byte-level alphabet); Metaspace
 * is in metaspace.c.
 *
 * Patterns are written for Oniguruma, the engine the reference uses; PCRE2
 * runs them (UTF, Unicode properties, JIT). Both take \s as Unicode
 * White_Space (U+0085 included) and \p{..} alike; the one escape that means
 * something else is \h (Oniguruma: a hex digit; PCRE2: horizontal space),
 * rewritten. Matches are found the way the reference iterates them: left to
 * right, each search starting where the last match ended, an empty match
 * right after a match skipped by one character. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

/* ---- patterns ---- */

static int put(moe_tok_buf *b, const char *s) { return moe_tok_buf_append(b, s, strlen(s)); }

/* Oniguruma (Ruby syntax) → PCRE2: \h and \H mean hex digits. */
static int translate(const char *p, size_t n, moe_tok_buf *out)
{
    int depth = 0;   /* inside a character class (Oniguruma nests them) */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[++i];
            const char *r = NULL;
            if (d == 'h') r = depth ? "0-9a-fA-F" : "[0-9a-fA-F]";
            else if (d == 'H' && !depth) r = "[^0-9a-fA-F]";
            if (r ? put(out, r) : moe_tok_buf_append(out, p + i - 1, 2)) return -1;
            continue;
        }
        if (moe_tok_buf_append(out, &c, 1)) return -1;
        if (c == '[') {
            depth++;
            /* "[^" and a "]" right after the opening are part of the class */
            if (i + 1 < n && p[i + 1] == '^' && moe_tok_buf_append(out, p + ++i, 1)) return -1;
            if (i + 1 < n && p[i + 1] == ']' && moe_tok_buf_append(out, p + ++i, 1)) return -1;
        } else if (c == ']' && depth)
            depth--;
    }
    return 0;
}

pcre2_code *moe_tok_regex_compile(const char *origin, const char *what, const char *pattern, size_t len, int literal,
                                  int *jit)
{
    moe_tok_buf pat = { 0 };
    if (literal ? moe_tok_buf_append(&pat, pattern, len) : translate(pattern, len, &pat)) {
        moe_tok_buf_free(&pat);
        moe_error_set(MOE_ERR_NOMEM, "%s: out of memory compiling a pattern", origin);
        return NULL;
    }
    uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    int err;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat.p, pat.n, opts, &err, &at, NULL);
    moe_tok_buf_free(&pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        moe_error_set(MOE_ERR_FORMAT, "%s: %s pattern '%.*s' does not compile: %s", origin, what,
                      (int)(len > 80 ? 80 : len), pattern, (const char *)msg);
        return NULL;
    }
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

/* ---- pieces ---- */

static void pieces_clear(moe_tok_pieces *p)
{
    p->text.n = 0;
    p->n = 0;
}

static int pieces_add(moe_tok_pieces *p, size_t off, size_t len, int at_start)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        moe_tok_span *s = realloc(p->span, cap * sizeof *s);
        if (!s) return -1;
        p->span = s;
        p->cap = cap;
    }
    p->span[p->n].off = off;
    p->span[p->n].len = len;
    p->span[p->n].at_start = at_start;
    p->n++;
    return 0;
}

int moe_tok_pieces_push(moe_tok_pieces *p, const char *s, size_t n, int at_start)
{
    if (!n) return 0;
    size_t off = p->text.n;
    return moe_tok_buf_append(&p->text, s, n) || pieces_add(p, off, n, at_start) ? -1 : 0;
}

static int part_add(moe_tokenizer *t, size_t *np, size_t a, size_t b, int match)
{
    if (*np == t->parts_cap) {
        size_t cap = t->parts_cap ? 2 * t->parts_cap : 256;
        struct moe_tok_part *g = realloc(t->parts, cap * sizeof *g);
        if (!g) return -1;
        t->parts = g;
        t->parts_cap = cap;
    }
    t->parts[*np].a = a;
    t->parts[*np].b = b;
    t->parts[*np].match = match;
    (*np)++;
    return 0;
}

static size_t char_len(const char *s, size_t n)
{
    unsigned char b = (unsigned char)s[0];
    size_t l = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    return l < n ? l : n;
}

int moe_tok_regex_find(const pcre2_code *re, int jit, pcre2_match_data *md, pcre2_match_context *mctx,
                       const char *s, size_t n, size_t *from, size_t *last_end, size_t *ms, size_t *me)
{
    while (*from <= n) {
        int rc = jit ? pcre2_jit_match(re, (PCRE2_SPTR)s, n, *from, PCRE2_NO_UTF_CHECK, md, mctx)
                     : pcre2_match(re, (PCRE2_SPTR)s, n, *from, PCRE2_NO_UTF_CHECK, md, mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return 0;
        if (rc < 0) return rc;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        *ms = ov[0], *me = ov[1];
        if (*ms == *me && *last_end == *me) {   /* empty, right after the last match */
            *from += *from < n ? char_len(s + *from, n - *from) : 1;
            continue;
        }
        *from = *last_end = *me;
        return 1;
    }
    return 0;
}

/* The matches of re in s[0..n) and the stretches between them, in order. */
static moe_status regex_parts(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, size_t *np)
{
    *np = 0;
    if (!n) return part_add(t, np, 0, 0, 0) ? MOE_ERR_NOMEM : MOE_OK;
    size_t from = 0, prev = 0, last_end = SIZE_MAX, ms, me;
    int rc;
    while ((rc = moe_tok_regex_find(step->re, step->jit, t->md, t->mctx, s, n, &from, &last_end, &ms, &me)) == 1) {
        if (prev != ms && part_add(t, np, prev, ms, 0)) return MOE_ERR_NOMEM;
        if (part_add(t, np, ms, me, 1)) return MOE_ERR_NOMEM;
        prev = me;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: pre_tokenizer pattern failed on the text: %s", t->origin,
                             (const char *)msg);
    }
    if (prev != n && part_add(t, np, prev, n, 0)) return MOE_ERR_NOMEM;
    return MOE_OK;
}

/* The digits of s[0..n) one by one, and the stretches between them. */
static moe_status digit_parts(moe_tokenizer *t, const char *s, size_t n, size_t *np)
{
    *np = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len;
        moe_utf8_next((const unsigned char *)s + i, n - i, &cp, &len);
        if (moe_tok_is_numeric(cp)) {
            if (last < i && part_add(t, np, last, i, 0)) return MOE_ERR_NOMEM;
            if (part_add(t, np, i, i + len, 1)) return MOE_ERR_NOMEM;
            last = i + len;
        }
        i += len;
    }
    if (last < n && part_add(t, np, last, n, 0)) return MOE_ERR_NOMEM;
    return MOE_OK;
}

/* The reference's SplitDelimiterBehavior applied to the parts, pieces to out. */
static moe_status emit_parts(moe_tokenizer *t, moe_tok_split_behavior behavior, const char *s, size_t np,
                             int at_start, moe_tok_pieces *out)
{
    struct moe_tok_part *P = t->parts;
    size_t first = 0, k = 0;
    int prev = 0;
    switch (behavior) {
    case MOE_SPLIT_ISOLATED:
        k = np;
        break;
    case MOE_SPLIT_REMOVED:
        for (size_t i = 0; i < np; i++)
            if (!P[i].match) P[k++] = P[i];
        break;
    case MOE_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < np; i++) {
            int m = P[i].match;
            if (m == prev && k) P[k - 1].b = P[i].b;
            else P[k++] = P[i];
            prev = m;
        }
        break;
    case MOE_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < np; i++) {
            int m = P[i].match;
            if (m && !prev && k) P[k - 1].b = P[i].b;
            else P[k++] = P[i];
            prev = m;
        }
        break;
    case MOE_SPLIT_MERGED_WITH_NEXT: {
        size_t w = np;   /* built from the end: P[w..np) */
        for (size_t i = np; i-- > 0;) {
            int m = P[i].match;
            if (m && !prev && w < np) P[w].a = P[i].a;
            else P[--w] = P[i];
            prev = m;
        }
        first = w, k = np;
        break;
    }
    }
    for (size_t i = first; i < k; i++)
        if (moe_tok_pieces_push(out, s + P[i].a, P[i].b - P[i].a, at_start && P[i].a == 0)) return MOE_ERR_NOMEM;
    return MOE_OK;
}

static moe_status split_piece(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, int at_start,
                              moe_tok_pieces *out)
{
    size_t np;
    moe_status st = regex_parts(t, step, s, n, &np);
    if (st) return st;
    if (step->invert)
        for (size_t i = 0; i < np; i++) t->parts[i].match = !t->parts[i].match;
    return emit_parts(t, step->behavior, s, np, at_start, out);
}

static moe_status digits_piece(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, int at_start,
                               moe_tok_pieces *out)
{
    size_t np;
    moe_status st = digit_parts(t, s, n, &np);
    if (st) return st;
    return emit_parts(t, step->individual_digits ? MOE_SPLIT_ISOLATED : MOE_SPLIT_CONTIGUOUS, s, np, at_start, out);
}

/* s[0..n) in the byte-level alphabet, appended to out as one piece. */
static int push_bytelevel(const moe_tokenizer *t, const char *s, size_t n, int at_start, moe_tok_pieces *out)
{
    if (!n) return 0;
    if (moe_tok_buf_reserve(&out->text, 2 * n)) return -1;
    size_t off = out->text.n;
    char *o = out->text.p + off;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        o[0] = t->bl_char[b][0];
        o[1] = t->bl_char[b][1];
        o += t->bl_char_len[b];
    }
    out->text.n = (size_t)(o - out->text.p);
    out->text.p[out->text.n] = 0;
    return pieces_add(out, off, out->text.n - off, at_start);
}

static moe_status bytelevel_piece(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, int at_start,
                                  moe_tok_pieces *out)
{
    if (step->add_prefix_space && n && s[0] != ' ') {
        t->tmp.n = 0;
        if (moe_tok_buf_append(&t->tmp, " ", 1) || moe_tok_buf_append(&t->tmp, s, n)) return MOE_ERR_NOMEM;
        s = t->tmp.p, n = t->tmp.n;
    }
    if (!step->re) return push_bytelevel(t, s, n, at_start, out) ? MOE_ERR_NOMEM : MOE_OK;
    size_t np;
    moe_status st = regex_parts(t, step, s, n, &np);
    if (st) return st;
    for (size_t i = 0; i < np; i++)
        if (push_bytelevel(t, s + t->parts[i].a, t->parts[i].b - t->parts[i].a, at_start && t->parts[i].a == 0, out))
            return MOE_ERR_NOMEM;
    return MOE_OK;
}

moe_status moe_tok_pretokenize(moe_tokenizer *t, const char *s, size_t n, int at_start, moe_tok_pieces **out)
{
    moe_tok_pieces *cur = &t->pa, *next = &t->pb;
    pieces_clear(cur);
    moe_status st = MOE_OK;
    if (moe_tok_pieces_push(cur, s, n, at_start)) st = MOE_ERR_NOMEM;
    for (int k = 0; k < t->n_pre && !st; k++) {
        const moe_tok_pre *step = &t->pre[k];
        pieces_clear(next);
        for (size_t i = 0; i < cur->n && !st; i++) {
            const char *p = cur->text.p + cur->span[i].off;
            size_t len = cur->span[i].len;
            int first = cur->span[i].at_start;
            switch (step->kind) {
            case MOE_PRE_SPLIT: st = split_piece(t, step, p, len, first, next); break;
            case MOE_PRE_DIGITS: st = digits_piece(t, step, p, len, first, next); break;
            case MOE_PRE_BYTELEVEL: st = bytelevel_piece(t, step, p, len, first, next); break;
            case MOE_PRE_METASPACE: st = moe_tok_metaspace_piece(t, step, p, len, first, next); break;
            }
        }
        moe_tok_pieces *swap = cur;
        cur = next;
        next = swap;
    }
    if (st == MOE_ERR_NOMEM) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while encoding", t->origin);
    *out = cur;
    return st;
}
