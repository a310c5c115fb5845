/* tokenizer/load.c — tokenizer.json → moe_tokenizer: the model's
 * vocabulary and merges, the added tokens, and each component (normalizer,
 * pre-tokenizer, post-processor, decoder) checked and turned into the plain
 * tables the encoder runs on. A component moe does not implement is an
 * error naming its "type"; a malformed field is an error naming the field. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer_internal.h"

#define NOMEM(t) moe_error_set(MOE_ERR_NOMEM, "%s: out of memory while loading the tokenizer", (t)->origin)

/* ---- field access ---- */

json_object *moe_tok_json_get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v)) return NULL;
    return json_object_is_type(v, json_type_null) ? NULL : v;
}

moe_status moe_tok_json_bool(const moe_tokenizer *t, json_object *o, const char *where, const char *key, int def,
                             int *out)
{
    json_object *v = moe_tok_json_get(o, key);
    if (!v) {
        *out = def;
        return MOE_OK;
    }
    if (!json_object_is_type(v, json_type_boolean))
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s field '%s' must be true or false", t->origin, where, key);
    *out = json_object_get_boolean(v);
    return MOE_OK;
}

moe_status moe_tok_json_char(const moe_tokenizer *t, json_object *o, const char *where, const char *key, uint32_t *cp)
{
    json_object *v = moe_tok_json_get(o, key);
    size_t len = 0;
    const unsigned char *s = v && json_object_is_type(v, json_type_string)
                                 ? (const unsigned char *)json_object_get_string(v)
                                 : NULL;
    size_t n = s ? (size_t)json_object_get_string_len(v) : 0;
    if (!n || moe_utf8_next(s, n, cp, &len) != MOE_UTF8_OK || len != n)
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s field '%s' is not a string of one character", t->origin, where,
                             key);
    return MOE_OK;
}

/* Tables indexed by id (pieces, flags: 10 bytes an id) are as long as the
 * largest id, so ids are bounded before any is sized: 2^24, some sixty
 * times the largest vocabulary published (Gemma's 262,144). */
enum { MAX_TOKEN_ID = (1 << 24) - 1 };

static moe_status get_id(const moe_tokenizer *t, json_object *v, const char *what, int32_t *out)
{
    if (!v || !json_object_is_type(v, json_type_int))
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s is not an integer token id", t->origin, what);
    int64_t x = json_object_get_int64(v);
    if (x < 0)
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s is %lld, not a token id", t->origin, what, (long long)x);
    if (x > MAX_TOKEN_ID)
        return moe_error_set(MOE_ERR_FORMAT, "%s: %s is %lld, not a token id (moe takes ids up to %d)", t->origin,
                             what, (long long)x, MAX_TOKEN_ID);
    *out = (int32_t)x;
    return MOE_OK;
}

const char *moe_tok_json_type(json_object *o)
{
    json_object *v = moe_tok_json_get(o, "type");
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : "";
}

/* ---- model BPE ---- */

static moe_status read_vocab(moe_tokenizer *t, json_object *vocab)
{
    if (!vocab || !json_object_is_type(vocab, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "%s: model field 'vocab' is missing or not an object", t->origin);
    if (moe_tok_strmap_init(&t->vocab, (size_t)json_object_object_length(vocab))) return NOMEM(t);
    json_object_object_foreach(vocab, key, val) {
        int32_t id;
        char what[96];
        snprintf(what, sizeof what, "the id of vocab entry '%.40s'", key);
        moe_status st = get_id(t, val, what, &id);
        if (st) return st;
        if (moe_tok_strmap_put(&t->vocab, key, strlen(key), id)) return NOMEM(t);
        if (id + 1 > t->n_ids) t->n_ids = id + 1;
    }
    return MOE_OK;
}

/* One merge: "a b" (exactly one space) or ["a", "b"]. */
static moe_status merge_parts(const moe_tokenizer *t, json_object *m, size_t i, const char **a, size_t *na,
                              const char **b, size_t *nb)
{
    if (json_object_is_type(m, json_type_string)) {
        const char *s = json_object_get_string(m);
        size_t n = (size_t)json_object_get_string_len(m);
        const char *sp = memchr(s, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - s)))
            return moe_error_set(MOE_ERR_FORMAT, "%s: merge %zu ('%.60s') is not two tokens separated by one space",
                                 t->origin, i, s);
        *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = n - *na - 1;
        return MOE_OK;
    }
    if (json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2) {
        json_object *x = json_object_array_get_idx(m, 0), *y = json_object_array_get_idx(m, 1);
        if (json_object_is_type(x, json_type_string) && json_object_is_type(y, json_type_string)) {
            *a = json_object_get_string(x), *na = (size_t)json_object_get_string_len(x);
            *b = json_object_get_string(y), *nb = (size_t)json_object_get_string_len(y);
            return MOE_OK;
        }
    }
    return moe_error_set(MOE_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", t->origin, i);
}

static moe_status read_merges(moe_tokenizer *t, json_object *merges)
{
    if (merges && !json_object_is_type(merges, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "%s: model field 'merges' is not a list", t->origin);
    size_t n = merges ? json_object_array_length(merges) : 0;
    if (moe_tok_mergemap_init(&t->merges, n)) return NOMEM(t);
    moe_tok_buf joined = { 0 };
    moe_status st = MOE_OK;
    for (size_t i = 0; i < n && st == MOE_OK; i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if ((st = merge_parts(t, json_object_array_get_idx(merges, i), i, &a, &na, &b, &nb))) break;
        int32_t ia = moe_tok_strmap_get(&t->vocab, a, na), ib = moe_tok_strmap_get(&t->vocab, b, nb);
        joined.n = 0;
        if (moe_tok_buf_append(&joined, a, na) || moe_tok_buf_append(&joined, b, nb)) {
            st = NOMEM(t);
            break;
        }
        int32_t im = moe_tok_strmap_get(&t->vocab, joined.p, joined.n);
        if (ia < 0 || ib < 0 || im < 0) {
            const char *miss = ia < 0 ? a : ib < 0 ? b : joined.p;
            int nmiss = (int)(ia < 0 ? na : ib < 0 ? nb : joined.n);
            st = moe_error_set(MOE_ERR_FORMAT, "%s: merge %zu: token '%.*s' is not in the vocabulary", t->origin, i,
                               nmiss > 60 ? 60 : nmiss, miss);
            break;
        }
        moe_tok_mergemap_put(&t->merges, ia, ib, (uint32_t)i, im);
    }
    moe_tok_buf_free(&joined);
    return st;
}

static moe_status read_model(moe_tokenizer *t, json_object *model)
{
    if (!model || !json_object_is_type(model, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "%s: no \"model\" object", t->origin);
    const char *type = moe_tok_json_type(model);
    if (*type && strcmp(type, "BPE") != 0)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (moe reads BPE)", t->origin,
                             type);
    moe_status st;
    if ((st = read_vocab(t, moe_tok_json_get(model, "vocab"))) ||
        (st = read_merges(t, moe_tok_json_get(model, "merges"))))
        return st;
    json_object *v = moe_tok_json_get(model, "dropout");
    if (v && json_object_get_double(v) > 0)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: model BPE dropout %g is not supported (only null or 0)",
                             t->origin, json_object_get_double(v));
    static const char *const affixes[] = { "continuing_subword_prefix", "end_of_word_suffix" };
    for (int i = 0; i < 2; i++) {
        v = moe_tok_json_get(model, affixes[i]);
        if (v && (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) > 0))
            return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: model BPE %s is not supported", t->origin, affixes[i]);
    }
    if ((st = moe_tok_json_bool(t, model, "model", "fuse_unk", 0, &t->fuse_unk)) ||
        (st = moe_tok_json_bool(t, model, "model", "byte_fallback", 0, &t->byte_fallback)) ||
        (st = moe_tok_json_bool(t, model, "model", "ignore_merges", 0, &t->ignore_merges)))
        return st;
    t->unk_id = -1;
    if ((v = moe_tok_json_get(model, "unk_token"))) {
        if (!json_object_is_type(v, json_type_string))
            return moe_error_set(MOE_ERR_FORMAT, "%s: model field 'unk_token' is not a string", t->origin);
        t->unk_id = moe_tok_strmap_get(&t->vocab, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        if (t->unk_id < 0)
            return moe_error_set(MOE_ERR_FORMAT, "%s: unk_token '%s' is not in the vocabulary", t->origin,
                                 json_object_get_string(v));
    }
    return MOE_OK;
}

/* ---- added tokens ---- */

static moe_status read_added(moe_tokenizer *t, json_object *list)
{
    if (!list) return MOE_OK;
    if (!json_object_is_type(list, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "%s: 'added_tokens' is not a list", t->origin);
    size_t n = json_object_array_length(list);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added || moe_tok_strmap_init(&t->added_ids, n)) return NOMEM(t);
    for (size_t i = 0; i < n; i++) {
        json_object *o = json_object_array_get_idx(list, i), *c = moe_tok_json_get(o, "content");
        moe_tok_added *a = &t->added[t->n_added];
        char what[64];
        snprintf(what, sizeof what, "added_tokens[%zu].id", i);
        moe_status st = get_id(t, moe_tok_json_get(o, "id"), what, &a->id);
        if (st) return st;
        if (!c || !json_object_is_type(c, json_type_string))
            return moe_error_set(MOE_ERR_FORMAT, "%s: added_tokens[%zu] has no string 'content'", t->origin, i);
        a->len = (size_t)json_object_get_string_len(c);
        a->content = malloc(a->len + 1);
        if (!a->content) return NOMEM(t);
        memcpy(a->content, json_object_get_string(c), a->len + 1);
        t->n_added++;
        int special, normalized, lstrip, rstrip, single_word;
        snprintf(what, sizeof what, "added_tokens[%zu]", i);
        if ((st = moe_tok_json_bool(t, o, what, "special", 0, &special)) ||
            (st = moe_tok_json_bool(t, o, what, "normalized", !special, &normalized)) ||
            (st = moe_tok_json_bool(t, o, what, "lstrip", 0, &lstrip)) ||
            (st = moe_tok_json_bool(t, o, what, "rstrip", 0, &rstrip)) ||
            (st = moe_tok_json_bool(t, o, what, "single_word", 0, &single_word)))
            return st;
        a->special = special, a->normalized = normalized, a->lstrip = lstrip, a->rstrip = rstrip;
        a->single_word = single_word;
        if (moe_tok_strmap_put(&t->added_ids, a->content, a->len, a->id)) return NOMEM(t);
        if (a->id + 1 > t->n_ids) t->n_ids = a->id + 1;
    }
    return MOE_OK;
}

/* id → piece for every id: the vocabulary, then the added tokens over it. */
static moe_status build_pieces(moe_tokenizer *t)
{
    size_t n = (size_t)t->n_ids;
    t->piece_off = malloc((n ? n : 1) * sizeof *t->piece_off);
    t->piece_len = calloc(n ? n : 1, sizeof *t->piece_len);
    t->special = calloc(n ? n : 1, 1);
    t->skip = calloc(n ? n : 1, 1);
    if (!t->piece_off || !t->piece_len || !t->special || !t->skip) return NOMEM(t);
    memset(t->piece_off, 0xFF, n * sizeof *t->piece_off);
    const moe_tok_strmap *v = &t->vocab;
    for (uint32_t e = 0; e < v->n; e++) {
        int32_t id = v->val[e];
        if (t->piece_off[id] != UINT32_MAX) continue;   /* two strings for one id: the first */
        t->piece_off[id] = (uint32_t)t->pieces.n;
        t->piece_len[id] = v->key_len[e];
        if (moe_tok_buf_append(&t->pieces, v->keys.p + v->key_off[e], v->key_len[e]) ||
            moe_tok_buf_append(&t->pieces, "", 1))
            return NOMEM(t);
    }
    for (int i = 0; i < t->n_added; i++) {
        const moe_tok_added *a = &t->added[i];
        t->piece_off[a->id] = (uint32_t)t->pieces.n;
        t->piece_len[a->id] = (uint32_t)a->len;
        t->special[a->id] = a->special;
        if (moe_tok_buf_append(&t->pieces, a->content, a->len) || moe_tok_buf_append(&t->pieces, "", 1))
            return NOMEM(t);
    }
    if (t->pieces.n > UINT32_MAX) return moe_error_set(MOE_ERR_FORMAT, "%s: vocabulary too large", t->origin);
    return MOE_OK;
}

/* ---- pre-tokenizer ---- */

/* GPT-2's pattern, which the ByteLevel pre-tokenizer uses when use_regex is on. */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static moe_tok_pre *new_pre(moe_tokenizer *t) { return moe_tok_push((void **)&t->pre, &t->n_pre, sizeof *t->pre); }

static moe_status add_split(moe_tokenizer *t, json_object *o)
{
    static const struct { const char *name; moe_tok_split_behavior b; } behaviors[] = {
        { "Removed", MOE_SPLIT_REMOVED },
        { "Isolated", MOE_SPLIT_ISOLATED },
        { "MergedWithPrevious", MOE_SPLIT_MERGED_WITH_PREVIOUS },
        { "MergedWithNext", MOE_SPLIT_MERGED_WITH_NEXT },
        { "Contiguous", MOE_SPLIT_CONTIGUOUS },
    };
    json_object *pat = moe_tok_json_get(o, "pattern"), *b = moe_tok_json_get(o, "behavior"), *s;
    int literal;
    if ((s = moe_tok_json_get(pat, "Regex")) && json_object_is_type(s, json_type_string)) literal = 0;
    else if ((s = moe_tok_json_get(pat, "String")) && json_object_is_type(s, json_type_string)) literal = 1;
    else
        return moe_error_set(MOE_ERR_FORMAT, "%s: pre_tokenizer Split has no pattern {\"Regex\": ...} or {\"String\": ...}",
                             t->origin);
    if (!b || !json_object_is_type(b, json_type_string))
        return moe_error_set(MOE_ERR_FORMAT, "%s: pre_tokenizer Split has no 'behavior'", t->origin);
    int behavior = -1;
    for (size_t i = 0; i < sizeof behaviors / sizeof behaviors[0]; i++)
        if (!strcmp(json_object_get_string(b), behaviors[i].name)) behavior = (int)behaviors[i].b;
    if (behavior < 0)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: pre_tokenizer Split behavior '%s' is not supported", t->origin,
                             json_object_get_string(b));
    int invert;
    moe_status st = moe_tok_json_bool(t, o, "pre_tokenizer Split", "invert", 0, &invert);
    if (st) return st;
    moe_tok_pre *p = new_pre(t);
    if (!p) return NOMEM(t);
    p->kind = MOE_PRE_SPLIT;
    p->behavior = (moe_tok_split_behavior)behavior;
    p->invert = invert;
    p->re = moe_tok_regex_compile(t->origin, "pre_tokenizer Split", json_object_get_string(s),
                                  (size_t)json_object_get_string_len(s), literal, &p->jit);
    return p->re ? MOE_OK : MOE_ERR_FORMAT;
}

static moe_status add_pre(moe_tokenizer *t, json_object *o, int depth)
{
    const char *type = moe_tok_json_type(o);
    moe_status st;
    if (!strcmp(type, "ByteLevel")) {
        int prefix, use_regex;
        if ((st = moe_tok_json_bool(t, o, "pre_tokenizer ByteLevel", "add_prefix_space", 1, &prefix)) ||
            (st = moe_tok_json_bool(t, o, "pre_tokenizer ByteLevel", "use_regex", 1, &use_regex)))
            return st;
        moe_tok_pre *p = new_pre(t);
        if (!p) return NOMEM(t);
        p->kind = MOE_PRE_BYTELEVEL;
        p->add_prefix_space = prefix;
        if (use_regex) {
            p->re = moe_tok_regex_compile(t->origin, "pre_tokenizer ByteLevel", GPT2_PATTERN, strlen(GPT2_PATTERN), 0,
                                          &p->jit);
            if (!p->re) return MOE_ERR_FORMAT;
        }
        return MOE_OK;
    }
    if (!strcmp(type, "Split")) return add_split(t, o);
    if (!strcmp(type, "Metaspace")) {
        moe_tok_pre *p = new_pre(t);
        return p ? moe_tok_read_metaspace(t, o, p) : NOMEM(t);
    }
    if (!strcmp(type, "Digits")) {
        int individual;
        if ((st = moe_tok_json_bool(t, o, "pre_tokenizer Digits", "individual_digits", 0, &individual))) return st;
        moe_tok_pre *p = new_pre(t);
        if (!p) return NOMEM(t);
        p->kind = MOE_PRE_DIGITS;
        p->individual_digits = individual;
        return MOE_OK;
    }
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_object *list = moe_tok_json_get(o, "pretokenizers");
        if (!list || !json_object_is_type(list, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: pre_tokenizer Sequence has no 'pretokenizers' list", t->origin);
        for (size_t i = 0; i < json_object_array_length(list); i++)
            if ((st = add_pre(t, json_object_array_get_idx(list, i), depth + 1))) return st;
        return MOE_OK;
    }
    return moe_error_set(MOE_ERR_UNSUPPORTED,
                         "%s: pre_tokenizer '%s' is not supported (moe reads ByteLevel, Split, Digits, Metaspace, "
                         "Sequence)",
                         t->origin, *type ? type : "(no type)");
}

/* ---- post-processor: what it puts before and after a single sequence ---- */

typedef struct {
    moe_tok_ids prefix, suffix;
} affixes;

static moe_status special_pair(moe_tokenizer *t, json_object *pair, const char *what, int32_t *id)
{
    if (!pair || !json_object_is_type(pair, json_type_array) || json_object_array_length(pair) != 2)
        return moe_error_set(MOE_ERR_FORMAT, "%s: post_processor field '%s' is not [token, id]", t->origin, what);
    char w[64];
    snprintf(w, sizeof w, "post_processor field '%s'", what);
    return get_id(t, json_object_array_get_idx(pair, 1), w, id);
}

static moe_status template_single(moe_tokenizer *t, json_object *o, affixes *a)
{
    json_object *single = moe_tok_json_get(o, "single"), *specials = moe_tok_json_get(o, "special_tokens");
    if (!single || !json_object_is_type(single, json_type_array))
        return moe_error_set(MOE_ERR_FORMAT, "%s: TemplateProcessing has no 'single' list", t->origin);
    int seen_sequence = 0;
    for (size_t i = 0; i < json_object_array_length(single); i++) {
        json_object *item = json_object_array_get_idx(single, i), *sp = moe_tok_json_get(item, "SpecialToken");
        if (moe_tok_json_get(item, "Sequence")) {
            if (seen_sequence++)
                return moe_error_set(MOE_ERR_UNSUPPORTED, "%s: TemplateProcessing 'single' holds two sequences",
                                     t->origin);
            continue;
        }
        json_object *name = moe_tok_json_get(sp, "id");
        if (!name || !json_object_is_type(name, json_type_string))
            return moe_error_set(MOE_ERR_FORMAT, "%s: TemplateProcessing single[%zu] is neither a Sequence nor a SpecialToken",
                                 t->origin, i);
        json_object *ids = moe_tok_json_get(moe_tok_json_get(specials, json_object_get_string(name)), "ids");
        if (!ids || !json_object_is_type(ids, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: TemplateProcessing special token '%s' has no 'ids' in 'special_tokens'",
                                 t->origin, json_object_get_string(name));
        for (size_t k = 0; k < json_object_array_length(ids); k++) {
            int32_t id;
            moe_status st = get_id(t, json_object_array_get_idx(ids, k), "a TemplateProcessing special token id", &id);
            if (st) return st;
            if (moe_tok_ids_push(seen_sequence ? &a->suffix : &a->prefix, id)) return NOMEM(t);
        }
    }
    if (!seen_sequence)
        return moe_error_set(MOE_ERR_FORMAT, "%s: TemplateProcessing 'single' has no sequence ($A)", t->origin);
    return MOE_OK;
}

/* The processor `o` wrapped around what `a` already adds: its own prefix
 * goes before a's, its suffix after a's. */
static moe_status add_post(moe_tokenizer *t, json_object *o, affixes *a, int depth)
{
    const char *type = moe_tok_json_type(o);
    moe_status st = MOE_OK;
    if (!strcmp(type, "ByteLevel")) return MOE_OK;   /* offsets only */
    if (!strcmp(type, "Sequence") && depth < 8) {
        json_object *list = moe_tok_json_get(o, "processors");
        if (!list || !json_object_is_type(list, json_type_array))
            return moe_error_set(MOE_ERR_FORMAT, "%s: post_processor Sequence has no 'processors' list", t->origin);
        for (size_t i = 0; i < json_object_array_length(list) && !st; i++)
            st = add_post(t, json_object_array_get_idx(list, i), a, depth + 1);
        return st;
    }
    affixes own = { { 0 }, { 0 } };
    if (!strcmp(type, "TemplateProcessing")) st = template_single(t, o, &own);
    else if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        if (!(st = special_pair(t, moe_tok_json_get(o, "cls"), "cls", &cls)) &&
            !(st = special_pair(t, moe_tok_json_get(o, "sep"), "sep", &sep)) &&
            (moe_tok_ids_push(&own.prefix, cls) || moe_tok_ids_push(&own.suffix, sep)))
            st = NOMEM(t);
    } else
        st = moe_error_set(MOE_ERR_UNSUPPORTED,
                           "%s: post_processor '%s' is not supported (moe reads TemplateProcessing, ByteLevel, "
                           "RobertaProcessing, BertProcessing, Sequence)",
                           t->origin, *type ? type : "(no type)");
    moe_tok_ids p = { 0 }, s = { 0 };
    if (!st && (moe_tok_ids_append(&p, own.prefix.v, own.prefix.n) || moe_tok_ids_append(&p, a->prefix.v, a->prefix.n) ||
                moe_tok_ids_append(&s, a->suffix.v, a->suffix.n) || moe_tok_ids_append(&s, own.suffix.v, own.suffix.n)))
        st = NOMEM(t);
    if (!st) {
        free(a->prefix.v);
        free(a->suffix.v);
        a->prefix = p, a->suffix = s;
    } else {
        free(p.v);
        free(s.v);
    }
    free(own.prefix.v);
    free(own.suffix.v);
    return st;
}

/* ---- the whole file ---- */

void moe_tok_bytelevel_init(moe_tokenizer *t)
{
    /* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
     * the other 68 take the code points from U+0100 on, in byte order. */
    int next = 256;
    for (int i = 0; i < 0x144; i++) t->bl_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        uint32_t cp = keep ? (uint32_t)b : (uint32_t)next++;
        char buf[4];
        t->bl_char_len[b] = (unsigned char)moe_utf8_put(cp, buf);
        memcpy(t->bl_char[b], buf, 2);
        t->bl_byte[cp] = (int16_t)b;
    }
}

static moe_status finish(moe_tokenizer *t)
{
    /* "▁" must be a token itself, so that what a merge across a cut makes holds "x▁" (bpe.c) */
    t->cut_words = moe_tok_strmap_get(&t->vocab, "\xE2\x96\x81", 3) >= 0;
    for (uint32_t e = 0; e < t->vocab.n && t->cut_words; e++)
        t->cut_words = moe_tok_word_cut_safe(t->vocab.keys.p + t->vocab.key_off[e], t->vocab.key_len[e]);
    for (uint32_t cp = 0; cp < 0x800; cp++) {
        char buf[4];
        size_t n = moe_utf8_put(cp, buf);
        t->char_id[cp] = moe_tok_strmap_get(&t->vocab, buf, n);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = moe_tok_strmap_get(&t->vocab, name, 6);
    }
    /* Normalized added tokens are searched for in normalized text. */
    for (int i = 0; i < t->n_added; i++) {
        moe_tok_added *a = &t->added[i];
        if (a->normalized && t->n_norm) {
            moe_tok_buf out = { 0 };
            moe_status st = moe_tok_normalize(t, t->norm, t->n_norm, a->content, a->len, &out);
            if (st) return st;
            a->match = out.p ? out.p : strdup("");
            a->match_len = out.n;
        } else {
            a->match = malloc(a->len + 1);
            if (a->match) memcpy(a->match, a->content, a->len + 1);
            a->match_len = a->len;
        }
        if (!a->match) return NOMEM(t);
        if (a->normalized && t->n_norm) {   /* the reference decodes it in its normalized form */
            t->piece_off[a->id] = (uint32_t)t->pieces.n;
            t->piece_len[a->id] = (uint32_t)a->match_len;
            if (moe_tok_buf_append(&t->pieces, a->match, a->match_len + 1)) return NOMEM(t);
        }
    }
    if (t->pieces.n > UINT32_MAX) return moe_error_set(MOE_ERR_FORMAT, "%s: vocabulary too large", t->origin);
    /* Decoding with skip_special_tokens, the reference leaves out a token
     * whose string is the content of a special token. */
    for (int id = 0; id < t->n_ids; id++) {
        if (t->piece_off[id] == UINT32_MAX) continue;
        int32_t other = moe_tok_strmap_get(&t->added_ids, t->pieces.p + t->piece_off[id], t->piece_len[id]);
        t->skip[id] = other >= 0 && t->special[other];
    }
    moe_status st;
    if ((st = moe_tok_added_set_build(t, &t->raw_set, 0)) || (st = moe_tok_added_set_build(t, &t->norm_set, 1)))
        return st;
    t->md = pcre2_match_data_create(1, NULL);
    t->mctx = pcre2_match_context_create(NULL);
    t->jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!t->md || !t->mctx) return NOMEM(t);
    if (t->jit_stack) pcre2_jit_stack_assign(t->mctx, NULL, t->jit_stack);
    return MOE_OK;
}

static moe_status parse_root(moe_tokenizer *t, json_object *root)
{
    if (!json_object_is_type(root, json_type_object))
        return moe_error_set(MOE_ERR_FORMAT, "%s: the top level is not a JSON object", t->origin);
    moe_status st;
    if ((st = read_model(t, moe_tok_json_get(root, "model"))) ||
        (st = read_added(t, moe_tok_json_get(root, "added_tokens"))) ||
        (st = build_pieces(t)))
        return st;
    json_object *o;
    if ((o = moe_tok_json_get(root, "normalizer")) && (st = moe_tok_read_normalizer(t, o))) return st;
    if ((o = moe_tok_json_get(root, "pre_tokenizer")) && (st = add_pre(t, o, 0))) return st;
    if ((o = moe_tok_json_get(root, "post_processor"))) {
        affixes a = { { 0 }, { 0 } };
        st = add_post(t, o, &a, 0);
        t->prefix = a.prefix.v, t->n_prefix = (int)a.prefix.n;
        t->suffix = a.suffix.v, t->n_suffix = (int)a.suffix.n;
        if (st) return st;
    }
    if ((st = moe_tok_read_decoder(t, moe_tok_json_get(root, "decoder")))) return st;
    for (int i = 0; i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix[i] : t->suffix[i - t->n_prefix];
        if (id >= t->n_ids || t->piece_off[id] == UINT32_MAX)
            return moe_error_set(MOE_ERR_FORMAT, "%s: the post_processor adds id %d, which names no token", t->origin,
                                 (int)id);
    }
    return finish(t);
}

moe_status moe_tokenizer_load_json(const char *json, size_t len, const char *origin, moe_tokenizer **out)
{
    if (!json || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer load: NULL argument");
    *out = NULL;
    if (!origin) origin = "tokenizer.json";
    if (len > (size_t)INT32_MAX - 1) return moe_error_set(MOE_ERR_FORMAT, "%s: larger than 2 GiB", origin);
    struct json_tokener *tok = json_tokener_new();
    if (!tok) return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", origin);
    /* JSON is UTF-8, and the reference (serde_json) refuses a file that is
     * not: pieces must decode to text, whole or streamed */
    json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
    json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error err = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (err != json_tokener_success || !root) {
        json_object_put(root);
        if (err == json_tokener_continue) err = json_tokener_error_parse_eof;
        return moe_error_set(MOE_ERR_FORMAT, "%s: not valid JSON (%s at byte %zu)", origin,
                             json_tokener_error_desc(err), end);
    }
    moe_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->origin = strdup(origin))) {
        free(t);
        json_object_put(root);
        return moe_error_set(MOE_ERR_NOMEM, "%s: out of memory", origin);
    }
    t->unk_id = -1;
    moe_tok_bytelevel_init(t);
    moe_status st = parse_root(t, root);
    json_object_put(root);
    if (st) {
        moe_tokenizer_free(t);
        return st;
    }
    *out = t;
    return MOE_OK;
}

/* The largest tokenizer.json published is tens of MB (Gemma's: 33 MB). */
#define MAX_FILE_BYTES (512u << 20)

moe_status moe_tokenizer_load(const char *path, moe_tokenizer **out)
{
    if (!path || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer load: NULL argument");
    *out = NULL;
    char *text;
    size_t len;
    moe_status st = moe_file_read(path, MAX_FILE_BYTES, 0, &text, &len);
    if (st != MOE_OK) return st;
    if (!len) st = moe_error_set(MOE_ERR_FORMAT, "%s: empty file, not a tokenizer.json", path);
    else st = moe_tokenizer_load_json(text, len, path, out);
    free(text);
    return st;
}

moe_status moe_tokenizer_load_dir(const char *dir, moe_tokenizer **out)
{
    if (!dir || !out) return moe_error_set(MOE_ERR_INVALID_ARG, "tokenizer load: NULL argument");
    size_t n = strlen(dir);
    char *path = malloc(n + sizeof "/tokenizer.json");
    if (!path) return moe_error_set(MOE_ERR_NOMEM, "out of memory");
    memcpy(path, dir, n);
    strcpy(path + n, n && dir[n - 1] == '/' ? "tokenizer.json" : "/tokenizer.json");
    moe_status st = moe_tokenizer_load(path, out);
    free(path);
    return st;
}

void moe_tokenizer_free(moe_tokenizer *t)
{
    if (!t) return;
    free(t->origin);
    free(t->piece_off);
    free(t->piece_len);
    moe_tok_buf_free(&t->pieces);
    free(t->special);
    free(t->skip);
    moe_tok_strmap_free(&t->vocab);
    moe_tok_mergemap_free(&t->merges);
    for (int i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
        free(t->added[i].match);
    }
    free(t->added);
    moe_tok_strmap_free(&t->added_ids);
    free(t->raw_set.order);
    free(t->norm_set.order);
    moe_tok_norm_free(t);
    moe_tok_dec_free(t);
    for (int i = 0; i < t->n_pre; i++) pcre2_code_free(t->pre[i].re);
    free(t->pre);
    free(t->prefix);
    free(t->suffix);
    pcre2_match_data_free(t->md);
    pcre2_match_context_free(t->mctx);
    pcre2_jit_stack_free(t->jit_stack);
    moe_tok_buf_free(&t->valid);
    moe_tok_buf_free(&t->normed);
    moe_tok_buf_free(&t->tmp);
    free(t->raw_segs.v);
    free(t->norm_segs.v);
    moe_tok_buf_free(&t->pa.text);
    free(t->pa.span);
    moe_tok_buf_free(&t->pb.text);
    free(t->pb.span);
    moe_tok_cache_free(&t->cache);
    free(t->sym);
    free(t->heap);
    free(t->parts);
    free(t);
}
