/* tokenizer/util.c — the tokenizer's plumbing: growable buffers, UTF-8
 * reading with the reference's replacement rule, the few Unicode properties
 * the pipeline asks about, and two open-addressing hash maps (vocabulary
 * strings → ids, merge pairs → rank and result). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer_internal.h"

/* ---- buffers ---- */

int moe_tok_buf_reserve(moe_tok_buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int moe_tok_buf_append(moe_tok_buf *b, const void *s, size_t n)
{
    if (moe_tok_buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

void moe_tok_buf_free(moe_tok_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int ids_reserve(moe_tok_ids *a, size_t extra)
{
    if (a->n + extra <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 64;
    while (cap < a->n + extra) cap *= 2;
    int32_t *v = realloc(a->v, cap * sizeof *v);
    if (!v) return -1;
    a->v = v;
    a->cap = cap;
    return 0;
}

int moe_tok_ids_push(moe_tok_ids *a, int32_t id)
{
    if (a->n == a->cap && ids_reserve(a, 1)) return -1;
    a->v[a->n++] = id;
    return 0;
}

int moe_tok_ids_append(moe_tok_ids *a, const int32_t *ids, size_t n)
{
    if (ids_reserve(a, n)) return -1;
    if (n) memcpy(a->v + a->n, ids, n * sizeof *ids);
    a->n += n;
    return 0;
}

void *moe_tok_push(void **arr, int *n, size_t size)
{
    char *g = realloc(*arr, (size_t)(*n + 1) * size);
    if (!g) return NULL;
    *arr = g;
    memset(g + (size_t)*n * size, 0, size);
    return g + (size_t)(*n)++ * size;
}

/* ---- UTF-8 ---- */

int moe_utf8_next(const unsigned char *s, size_t n, uint32_t *cp, size_t *len)
{
    unsigned b = s[0];
    if (b < 0x80) {
        *cp = b;
        *len = 1;
        return MOE_UTF8_OK;
    }
    /* Well-formed sequences (Unicode Table 3-7): the lead byte fixes the
     * length and the range of the second byte; later bytes are 80..BF. */
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    uint32_t c;
    if (b >= 0xC2 && b <= 0xDF) need = 1, c = b & 0x1F;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2, c = b & 0x0F;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3, c = b & 0x07;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else {
        *len = 1;
        return MOE_UTF8_INVALID;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n) {
            *len = i;
            return MOE_UTF8_TRUNCATED;
        }
        unsigned x = s[i];
        if (x < lo || x > hi) {
            *len = i;
            return MOE_UTF8_INVALID;
        }
        lo = 0x80, hi = 0xBF;
        c = (c << 6) | (x & 0x3F);
    }
    *cp = c;
    *len = need + 1;
    return MOE_UTF8_OK;
}

size_t moe_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t moe_utf8_valid_prefix(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t len;
        if (moe_utf8_next(u + i, n - i, &cp, &len) != MOE_UTF8_OK) break;
        i += len;
    }
    return i;
}

int moe_utf8_valid(const char *s, size_t n) { return moe_utf8_valid_prefix(s, n) == n; }

size_t moe_utf8_append_complete(moe_tok_buf *out, const char *s, size_t n, int *nomem)
{
    static const char fffd[3] = { (char)0xEF, (char)0xBF, (char)0xBD };
    size_t i = 0;
    *nomem = 0;
    if (n == 0) return 0; /* s may be NULL then (an empty buffer) */
    for (;;) {
        size_t ok = moe_utf8_valid_prefix(s + i, n - i);
        if (moe_tok_buf_append(out, s + i, ok)) break;
        i += ok;
        if (i == n) return n;
        uint32_t cp;
        size_t len;
        if (moe_utf8_next((const unsigned char *)s + i, n - i, &cp, &len) == MOE_UTF8_TRUNCATED) return i;
        if (moe_tok_buf_append(out, fffd, 3)) break;
        i += len;
    }
    *nomem = 1;
    return i;
}

int moe_utf8_append_lossy(moe_tok_buf *out, const char *s, size_t n)
{
    int nomem;
    size_t done = moe_utf8_append_complete(out, s, n, &nomem);
    if (nomem) return -1;
    return done < n ? moe_tok_buf_append(out, "\xEF\xBF\xBD", 3) : 0;
}

/* ---- Unicode properties ---- */

int moe_tok_is_whitespace(uint32_t cp)
{
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int moe_tok_is_numeric(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

int moe_tok_is_word(uint32_t cp)
{
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* ---- hashing and maps ---- */

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

uint64_t moe_tok_hash(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    h = (h ^ v) * 0x94d049bb133111ebull;
    return mix64(h);
}

static uint32_t pow2_at_least(size_t n)
{
    uint32_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int moe_tok_strmap_init(moe_tok_strmap *m, size_t expected)
{
    memset(m, 0, sizeof *m);
    uint32_t slots = pow2_at_least(expected * 2 + 1);
    m->slot = calloc(slots, sizeof *m->slot);
    m->mask = slots - 1;
    m->cap = slots / 2;
    m->key_off = malloc(m->cap * sizeof *m->key_off);
    m->key_len = malloc(m->cap * sizeof *m->key_len);
    m->val = malloc(m->cap * sizeof *m->val);
    return m->slot && m->key_off && m->key_len && m->val ? 0 : -1;
}

static uint32_t *strmap_find(const moe_tok_strmap *m, const char *k, size_t n)
{
    uint32_t i = (uint32_t)moe_tok_hash(k, n) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        uint32_t e = m->slot[i];
        if (!e) return &m->slot[i];
        e--;
        if (m->key_len[e] == n && memcmp(m->keys.p + m->key_off[e], k, n) == 0) return &m->slot[i];
    }
}

static int strmap_grow(moe_tok_strmap *m)
{
    moe_tok_strmap g = *m;
    uint32_t slots = (m->mask + 1) * 2;
    g.slot = calloc(slots, sizeof *g.slot);
    g.mask = slots - 1;
    g.cap = slots / 2;
    uint32_t *ko = realloc(m->key_off, g.cap * sizeof *ko);
    if (ko) m->key_off = ko;
    uint32_t *kl = realloc(m->key_len, g.cap * sizeof *kl);
    if (kl) m->key_len = kl;
    int32_t *v = realloc(m->val, g.cap * sizeof *v);
    if (v) m->val = v;
    if (!g.slot || !ko || !kl || !v) {
        free(g.slot);
        return -1;
    }
    g.key_off = ko, g.key_len = kl, g.val = v;
    for (uint32_t e = 0; e < m->n; e++) *strmap_find(&g, g.keys.p + g.key_off[e], g.key_len[e]) = e + 1;
    free(m->slot);
    *m = g;
    return 0;
}

int moe_tok_strmap_put(moe_tok_strmap *m, const char *k, size_t n, int32_t v)
{
    uint32_t *s = strmap_find(m, k, n);
    if (*s) {
        m->val[*s - 1] = v;
        return 0;
    }
    if (m->n + 1 > m->cap) {
        if (strmap_grow(m)) return -1;
        s = strmap_find(m, k, n);
    }
    if (n > UINT32_MAX || m->keys.n > UINT32_MAX) return -1;
    uint32_t e = m->n++;
    m->key_off[e] = (uint32_t)m->keys.n;
    m->key_len[e] = (uint32_t)n;
    m->val[e] = v;
    if (moe_tok_buf_append(&m->keys, k, n)) return -1;
    *s = e + 1;
    return 0;
}

int32_t moe_tok_strmap_get(const moe_tok_strmap *m, const char *k, size_t n)
{
    if (!m->slot) return -1;
    uint32_t e = *strmap_find(m, k, n);
    return e ? m->val[e - 1] : -1;
}

void moe_tok_strmap_free(moe_tok_strmap *m)
{
    free(m->slot);
    free(m->key_off);
    free(m->key_len);
    free(m->val);
    moe_tok_buf_free(&m->keys);
    memset(m, 0, sizeof *m);
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

int moe_tok_mergemap_init(moe_tok_mergemap *m, size_t expected)
{
    memset(m, 0, sizeof *m);
    uint32_t slots = pow2_at_least(expected * 2 + 1);
    m->key = malloc(slots * sizeof *m->key);
    m->rank = malloc(slots * sizeof *m->rank);
    m->merged = malloc(slots * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return -1;
    memset(m->key, 0xFF, slots * sizeof *m->key);
    m->mask = slots - 1;
    return 0;
}

/* The map is sized for every merge at init, so it never fills. */
void moe_tok_mergemap_put(moe_tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged)
{
    uint64_t k = pair_key(a, b);
    uint32_t i = (uint32_t)mix64(k * 0x9E3779B97F4A7C15ull) & m->mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & m->mask;
    if (m->key[i] == UINT64_MAX) m->n++;
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

int moe_tok_mergemap_get(const moe_tok_mergemap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *merged)
{
    if (!m->key) return 0;
    uint64_t k = pair_key(a, b);
    uint32_t i = (uint32_t)mix64(k * 0x9E3779B97F4A7C15ull) & m->mask;
    for (;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        if (m->key[i] == UINT64_MAX) return 0;
    }
}

void moe_tok_mergemap_free(moe_tok_mergemap *m)
{
    free(m->key);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}
