/* tokenizer/added.c — finding added tokens in text before the model sees it,
 * as the reference's AddedVocabulary does: the leftmost match, the longest
 * of those starting there, the search going on after it; a single_word
 * token only between non-word characters (a match that is not is passed
 * over, and the search still goes on after it); lstrip and rstrip take the
 * whitespace beside the token into it. Tokens marked "normalized" are
 * searched for in normalized text, in their normalized form; the others in
 * the raw text, before normalization. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

typedef struct {
    unsigned char first;
    size_t len;
    int index;
} sort_key;

/* By first byte, then longest first. */
static int by_first_then_longest(const void *x, const void *y)
{
    const sort_key *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->index - b->index;
}

moe_status moe_tok_added_set_build(moe_tokenizer *t, moe_tok_added_set *set, int want_normalized)
{
    set->n = 0;
    set->order = malloc((size_t)(t->n_added ? t->n_added : 1) * sizeof *set->order);
    sort_key *keys = malloc((size_t)(t->n_added ? t->n_added : 1) * sizeof *keys);
    if (!set->order || !keys) {
        free(keys);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", t->origin);
    }
    for (int i = 0; i < t->n_added; i++) {
        const moe_tok_added *a = &t->added[i];
        if ((int)a->normalized == want_normalized && a->match_len)
            keys[set->n++] = (sort_key){ (unsigned char)a->match[0], a->match_len, i };
    }
    qsort(keys, (size_t)set->n, sizeof *keys, by_first_then_longest);
    for (int k = 0; k < set->n; k++) set->order[k] = keys[k].index;
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < set->n && keys[k].first < b) k++;
        set->first[b] = k;
    }
    free(keys);
    return MOE_OK;
}

/* The longest token of the set at s[i..n); -1 if none. */
static int match_at(const moe_tokenizer *t, const moe_tok_added_set *set, const char *s, size_t n, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    for (int k = set->first[c]; k < set->first[c + 1]; k++) {
        const moe_tok_added *a = &t->added[set->order[k]];
        if (a->match_len <= n - i && memcmp(s + i, a->match, a->match_len) == 0) return set->order[k];
    }
    return -1;
}

/* The code point that ends s[0..i) (i > 0). */
static uint32_t cp_before(const char *s, size_t i)
{
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
    uint32_t cp = 0xFFFD;
    size_t len;
    moe_utf8_next((const unsigned char *)s + j, i - j, &cp, &len);
    return cp;
}

static uint32_t cp_at(const char *s, size_t n, size_t i, size_t *len)
{
    uint32_t cp = 0xFFFD;
    *len = 1;
    moe_utf8_next((const unsigned char *)s + i, n - i, &cp, len);
    return cp;
}

static int seg_push(const moe_tokenizer *t, moe_tok_segs *segs, size_t off, size_t len, int32_t id)
{
    (void)t;
    if (segs->n == segs->cap) {
        size_t cap = segs->cap ? 2 * segs->cap : 32;
        moe_tok_seg *g = realloc(segs->v, cap * sizeof *g);
        if (!g) return -1;
        segs->v = g;
        segs->cap = cap;
    }
    segs->v[segs->n].off = off;
    segs->v[segs->n].len = len;
    segs->v[segs->n].id = id;
    segs->n++;
    return 0;
}

moe_status moe_tok_split_added(const moe_tokenizer *t, const moe_tok_added_set *set, const char *s, size_t n,
                               size_t base, moe_tok_segs *segs)
{
    size_t done = 0;   /* s[0..done) is in segments */
    size_t i = 0;
    while (set->n && i < n) {
        unsigned char c = (unsigned char)s[i];
        int k = set->first[c] < set->first[c + 1] ? match_at(t, set, s, n, i) : -1;
        if (k < 0) {
            i++;
            continue;
        }
        const moe_tok_added *a = &t->added[k];
        size_t start = i, stop = i + a->match_len;
        i = stop;   /* the search goes on after this match, whatever becomes of it */
        if (a->single_word) {
            size_t l;
            int word_before = start > 0 && moe_tok_is_word(cp_before(s, start));
            int word_after = stop < n && moe_tok_is_word(cp_at(s, n, stop, &l));
            if (word_before || word_after) continue;
        }
        if (a->lstrip) {
            size_t j = start;
            while (j > 0 && moe_tok_is_whitespace(cp_before(s, j))) {
                size_t k2 = j - 1;
                while (k2 > 0 && ((unsigned char)s[k2] & 0xC0) == 0x80) k2--;
                j = k2;
            }
            start = j > done ? j : done;
        }
        if (a->rstrip) {
            size_t l;
            while (stop < n && moe_tok_is_whitespace(cp_at(s, n, stop, &l))) stop += l;
        }
        if (start < done) start = done;   /* an earlier rstrip already took these bytes */
        if (done < start && seg_push(t, segs, base + done, start - done, -1)) goto nomem;
        if (seg_push(t, segs, base + start, stop - start, a->id)) goto nomem;
        done = stop;
        if (i < done) i = done;
    }
    if (done < n && seg_push(t, segs, base + done, n - done, -1)) goto nomem;
    return MOE_OK;
nomem:
    return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while encoding", t->origin);
}
