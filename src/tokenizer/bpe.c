/* tokenizer/bpe.c — the BPE model on one pre-tokenized piece, exactly as the
 * reference computes it:
 *
 *   1. with ignore_merges, a piece that is itself in the vocabulary is that token;
 *   2. each character becomes its vocabulary token; one that is not in the
 *      vocabulary becomes its bytes' <0xXX> tokens (byte_fallback) or the
 *      unknown token (consecutive ones fused with fuse_unk), or is dropped;
 *   3. repeatedly, of all adjacent pairs that have a merge, the one with the
 *      lowest rank is merged, the leftmost first among equals (a heap of
 *      candidate merges, stale entries skipped when popped).
 *
 * Pieces of up to 256 bytes are cached (piece → ids); the cache is cleared
 * when full. English text mostly hits it.
 *
 * SentencePiece-style files have no pre-tokenizer (or Metaspace without
 * split): a whole prompt is one piece, and step 3 is then O(n log n) in its
 * length with a heap far larger than the cache. But where no vocabulary
 * token holds "▁" right after another character (Llama-2, Mistral, Gemma:
 * words begin with "▁", runs of "▁" are tokens of their own), no merge can
 * ever join across a "▁" that follows something other than "▁": cutting the
 * piece there changes nothing, and each word is merged (and cached) alone.
 * t->cut_words says the vocabulary allows it (load.c); ignore_merges does
 * not, since it looks the whole piece up. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tokenizer_internal.h"

enum { CACHE_ENTRIES = 1 << 15, CACHE_MAX_PIECE = 256, CACHE_KEY_BYTES = 4 << 20 };

/* ---- cache ---- */

static int cache_init(moe_tok_cache *c)
{
    c->slot = calloc(2 * CACHE_ENTRIES, sizeof *c->slot);
    c->entry = malloc(CACHE_ENTRIES * sizeof *c->entry);
    if (!c->slot || !c->entry) return -1;
    c->mask = 2 * CACHE_ENTRIES - 1;
    c->cap = CACHE_ENTRIES;
    return 0;
}

static void cache_clear(moe_tok_cache *c)
{
    memset(c->slot, 0, (c->mask + 1) * sizeof *c->slot);
    c->n = 0;
    c->keys.n = 0;
    c->ids.n = 0;
}

/* The slot where (hash, s) is or would go. */
static uint32_t *cache_find(const moe_tok_cache *c, uint64_t h, const char *s, size_t n)
{
    for (uint32_t i = (uint32_t)h & c->mask;; i = (i + 1) & c->mask) {
        uint32_t e = c->slot[i];
        if (!e) return &c->slot[i];
        const struct moe_tok_cache_entry *x = &c->entry[e - 1];
        if (x->hash == h && x->key_len == n && memcmp(c->keys.p + x->key_off, s, n) == 0) return &c->slot[i];
    }
}

static void cache_put(moe_tok_cache *c, uint64_t h, const char *s, size_t n, const int32_t *ids, size_t n_ids)
{
    if (!c->slot && cache_init(c)) return;   /* no cache: only slower */
    if (c->n == c->cap || c->keys.n + n > CACHE_KEY_BYTES) cache_clear(c);
    uint32_t *slot = cache_find(c, h, s, n);
    if (*slot) return;
    size_t key_off = c->keys.n, ids_off = c->ids.n;
    if (moe_tok_buf_append(&c->keys, s, n) || moe_tok_ids_append(&c->ids, ids, n_ids)) {
        cache_clear(c);
        return;
    }
    struct moe_tok_cache_entry *x = &c->entry[c->n];
    x->hash = h;
    x->key_off = (uint32_t)key_off;
    x->key_len = (uint32_t)n;
    x->ids_off = (uint32_t)ids_off;
    x->n_ids = (uint32_t)n_ids;
    *slot = ++c->n;
}

void moe_tok_cache_free(moe_tok_cache *c)
{
    free(c->slot);
    free(c->entry);
    moe_tok_buf_free(&c->keys);
    free(c->ids.v);
    memset(c, 0, sizeof *c);
}

/* ---- the merge heap: least (rank, position) on top ---- */

typedef struct moe_tok_merge_cand cand;

static inline int cand_less(const cand *x, const cand *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(cand *h, size_t *n, cand c)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
    cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l >= *n) break;
        m = (l + 1 < *n && cand_less(&h[l + 1], &h[l])) ? l + 1 : l;
        if (!cand_less(&h[m], &last)) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = last;
    return top;
}

/* ---- one piece ---- */

static int sym_push(moe_tokenizer *t, size_t *ns, int32_t id)
{
    if (*ns == t->sym_cap) {
        size_t cap = t->sym_cap ? 2 * t->sym_cap : 256;
        struct moe_tok_symbol *g = realloc(t->sym, cap * sizeof *g);
        if (!g) return -1;
        t->sym = g;
        t->sym_cap = cap;
    }
    struct moe_tok_symbol *x = &t->sym[*ns];
    x->id = id;
    x->prev = (int32_t)*ns - 1;
    x->next = (int32_t)*ns + 1;
    x->len = 1;
    (*ns)++;
    return 0;
}

/* Step 2: characters → symbols. */
static int initial_symbols(moe_tokenizer *t, const char *s, size_t n, size_t *ns)
{
    const unsigned char *u = (const unsigned char *)s;
    int unk_pending = 0;
    *ns = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len;
        if (u[i] < 0x80) cp = u[i], len = 1;
        else moe_utf8_next(u + i, n - i, &cp, &len);
        int32_t id = cp < 0x800 ? t->char_id[cp] : moe_tok_strmap_get(&t->vocab, s + i, len);
        if (id >= 0) {
            if (unk_pending && sym_push(t, ns, t->unk_id)) return -1;
            unk_pending = 0;
            if (sym_push(t, ns, id)) return -1;
        } else {
            int fell_back = 0;
            if (t->byte_fallback) {
                fell_back = 1;
                for (size_t k = 0; k < len; k++) fell_back &= t->byte_id[u[i + k]] >= 0;
                /* as in the reference, a pending unknown token stays pending here */
                for (size_t k = 0; fell_back && k < len; k++)
                    if (sym_push(t, ns, t->byte_id[u[i + k]])) return -1;
            }
            if (!fell_back && t->unk_id >= 0) {
                if (unk_pending && !t->fuse_unk && sym_push(t, ns, t->unk_id)) return -1;
                unk_pending = 1;
            }
        }
        i += len;
    }
    if (unk_pending && sym_push(t, ns, t->unk_id)) return -1;
    if (*ns) t->sym[*ns - 1].next = -1;
    return 0;
}

/* Step 3. */
static int merge_all(moe_tokenizer *t, size_t ns)
{
    if (ns < 2) return 0;
    if (t->heap_cap < 2 * ns) {
        cand *g = realloc(t->heap, 2 * ns * sizeof *g);
        if (!g) return -1;
        t->heap = g;
        t->heap_cap = 2 * ns;
    }
    struct moe_tok_symbol *S = t->sym;
    cand *H = t->heap;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        cand c = { 0, (uint32_t)i, 0 };
        if (moe_tok_mergemap_get(&t->merges, S[i].id, S[i + 1].id, &c.rank, &c.merged)) heap_push(H, &nh, c);
    }
    while (nh) {
        cand top = heap_pop(H, &nh);
        struct moe_tok_symbol *x = &S[top.pos];
        if (!x->len || x->next < 0) continue;
        struct moe_tok_symbol *right = &S[x->next];
        uint32_t rank;
        int32_t merged;
        if (!moe_tok_mergemap_get(&t->merges, x->id, right->id, &rank, &merged) || merged != top.merged) continue;
        x->id = merged;
        x->len += right->len;
        right->len = 0;
        x->next = right->next;
        if (x->next >= 0) S[x->next].prev = (int32_t)top.pos;
        /* Each merge removes a symbol and adds at most two candidates: the
         * heap never holds more than 2 * ns entries. */
        cand c;
        if (x->prev >= 0 && moe_tok_mergemap_get(&t->merges, S[x->prev].id, x->id, &c.rank, &c.merged)) {
            c.pos = (uint32_t)x->prev;
            heap_push(H, &nh, c);
        }
        if (x->next >= 0 && moe_tok_mergemap_get(&t->merges, x->id, S[x->next].id, &c.rank, &c.merged)) {
            c.pos = top.pos;
            heap_push(H, &nh, c);
        }
    }
    return 0;
}

static moe_status bpe_word(moe_tokenizer *t, const char *s, size_t n, moe_tok_ids *out)
{
    if (t->ignore_merges) {
        int32_t id = moe_tok_strmap_get(&t->vocab, s, n);
        if (id >= 0) return moe_tok_ids_push(out, id) ? moe_error_set(MOE_ERR_NOMEM, "out of memory") : MOE_OK;
    }
    uint64_t h = 0;
    int cacheable = n <= CACHE_MAX_PIECE;
    if (cacheable && t->cache.slot) {
        h = moe_tok_hash(s, n);
        uint32_t e = *cache_find(&t->cache, h, s, n);
        if (e) {
            const struct moe_tok_cache_entry *x = &t->cache.entry[e - 1];
            return moe_tok_ids_append(out, t->cache.ids.v + x->ids_off, x->n_ids)
                       ? moe_error_set(MOE_ERR_NOMEM, "out of memory")
                       : MOE_OK;
        }
    } else if (cacheable)
        h = moe_tok_hash(s, n);
    size_t ns, start = out->n;
    if (initial_symbols(t, s, n, &ns) || merge_all(t, ns))
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while encoding", t->origin);
    for (size_t i = 0; i < ns; i++)
        if (t->sym[i].len && moe_tok_ids_push(out, t->sym[i].id))
            return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while encoding", t->origin);
    /* a piece may give no ids (characters with no token and no unk_token): out->v may be NULL */
    if (cacheable) cache_put(&t->cache, h, s, n, out->n > start ? out->v + start : NULL, out->n - start);
    return MOE_OK;
}

static const char META[3] = { (char)0xE2, (char)0x96, (char)0x81 };   /* U+2581 "▁" */

int moe_tok_word_cut_safe(const char *token, size_t n)
{
    for (const char *p = token + 1, *end = token + n; p + 3 <= end; p++) {
        p = memmem(p, (size_t)(end - p), META, 3);
        if (!p) break;
        if (p - token < 3 || memcmp(p - 3, META, 3) != 0) return 0;
    }
    return 1;
}

moe_status moe_tok_bpe(moe_tokenizer *t, const char *s, size_t n, moe_tok_ids *out)
{
    if (!n) return MOE_OK;
    if (!t->cut_words || t->ignore_merges) return bpe_word(t, s, n, out);
    size_t from = 0;
    for (const char *p = s + 1, *end = s + n; p + 3 <= end; p++) {
        p = memmem(p, (size_t)(end - p), META, 3);
        if (!p) break;
        size_t at = (size_t)(p - s);
        if (at >= 3 && !memcmp(p - 3, META, 3)) continue;   /* a run of "▁" stays together */
        moe_status st = bpe_word(t, s + from, at - from, out);
        if (st) return st;
        from = at;
        p += 2;
    }
    return bpe_word(t, s + from, n - from, out);
}
