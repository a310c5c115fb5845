/* tokenizer/tokenizer_internal.h — what the tokenizer's files share: the
 * loaded tokenizer.json (moe_tokenizer), growable buffers, UTF-8 helpers,
 * the string and merge maps, and each stage of the pipeline
 *
 *   text ─UTF-8 check─▶ added tokens (raw) ─normalizer─▶ added tokens (normalized)
 *        ─pre-tokenizer─▶ pieces ─BPE─▶ ids ─post-processor─▶ ids
 *
 * as the Hugging Face `tokenizers` library runs it (the reference). */
#ifndef MOE_TOKENIZER_INTERNAL_H
#define MOE_TOKENIZER_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "moe/tokenizer.h"

/* ---- growable buffers (0 on success, -1 when out of memory) ---- */

typedef struct {
    char *p;
    size_t n, cap;
} moe_tok_buf;

int moe_tok_buf_reserve(moe_tok_buf *b, size_t extra);
int moe_tok_buf_append(moe_tok_buf *b, const void *s, size_t n);
void moe_tok_buf_free(moe_tok_buf *b);

typedef struct {
    int32_t *v;
    size_t n, cap;
} moe_tok_ids;

int moe_tok_ids_push(moe_tok_ids *a, int32_t id);
int moe_tok_ids_append(moe_tok_ids *a, const int32_t *ids, size_t n);

/* One more element, zeroed, at the end of *arr (of *n elements of `size`
 * bytes; realloc'd); NULL when out of memory, the array as it was. */
void *moe_tok_push(void **arr, int *n, size_t size);

/* ---- UTF-8 ---- */

enum { MOE_UTF8_OK, MOE_UTF8_INVALID, MOE_UTF8_TRUNCATED };

/* Reads the character at s[0..n) (n > 0). MOE_UTF8_OK: *cp and its length
 * in *len. MOE_UTF8_INVALID: *len is the length of the maximal invalid
 * subpart (Unicode ch. 3, "U+FFFD substitution of maximal subparts", as
 * Python and Rust's from_utf8_lossy replace). MOE_UTF8_TRUNCATED: the input
 * ends inside a sequence that is valid so far (*len bytes). */
int moe_utf8_next(const unsigned char *s, size_t n, uint32_t *cp, size_t *len);
/* The UTF-8 of cp into out (4 bytes room); returns its length. */
size_t moe_utf8_put(uint32_t cp, char *out);
/* Appends the whole characters of s, each maximal invalid subpart replaced
 * by U+FFFD, and stops before an unfinished character at the end; returns
 * the bytes consumed (*nomem set when out of memory). */
size_t moe_utf8_append_complete(moe_tok_buf *out, const char *s, size_t n, int *nomem);
/* The same, the unfinished end too replaced by U+FFFD; -1 when out of memory. */
int moe_utf8_append_lossy(moe_tok_buf *out, const char *s, size_t n);
/* The length of the longest valid UTF-8 prefix of s[0..n); 1 if all is valid. */
size_t moe_utf8_valid_prefix(const char *s, size_t n);
int moe_utf8_valid(const char *s, size_t n);

/* Unicode White_Space (Rust's char::is_whitespace, Oniguruma's \s). */
int moe_tok_is_whitespace(uint32_t cp);
/* Rust's char::is_numeric: general category Nd, Nl or No. */
int moe_tok_is_numeric(uint32_t cp);
/* A word character for single_word added tokens: letter, mark, number,
 * connector punctuation. */
int moe_tok_is_word(uint32_t cp);

/* ---- maps ---- */

uint64_t moe_tok_hash(const void *p, size_t n);

/* String → int32 (keys copied). get returns -1 when absent; put replaces. */
typedef struct {
    uint32_t *slot;        /* entry index + 1; 0: empty */
    uint32_t mask;
    uint32_t n, cap;
    uint32_t *key_off, *key_len;
    int32_t *val;
    moe_tok_buf keys;
} moe_tok_strmap;

int moe_tok_strmap_init(moe_tok_strmap *m, size_t expected);
int moe_tok_strmap_put(moe_tok_strmap *m, const char *k, size_t n, int32_t v);
int32_t moe_tok_strmap_get(const moe_tok_strmap *m, const char *k, size_t n);
void moe_tok_strmap_free(moe_tok_strmap *m);

/* (left id, right id) → (rank, merged id). */
typedef struct {
    uint64_t *key;         /* UINT64_MAX: empty */
    uint32_t *rank;
    int32_t *merged;
    uint32_t mask, n;
} moe_tok_mergemap;

int moe_tok_mergemap_init(moe_tok_mergemap *m, size_t expected);
/* A later merge of the same pair replaces an earlier one (as the reference's map does). */
void moe_tok_mergemap_put(moe_tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
/* 1 and *rank, *merged when (a, b) merges. */
int moe_tok_mergemap_get(const moe_tok_mergemap *m, int32_t a, int32_t b, uint32_t *rank, int32_t *merged);
void moe_tok_mergemap_free(moe_tok_mergemap *m);

/* ---- the loaded tokenizer ---- */

/* A Replace pattern (normalizer or decoder): a literal string or a regex,
 * and what each match becomes. */
typedef struct {
    char *literal;               /* {"String": ...}; NULL for a regex */
    size_t literal_len;
    pcre2_code *re;              /* {"Regex": ...} */
    int jit;
    char *content;
    size_t content_len;
} moe_tok_replace;

typedef enum {
    MOE_NORM_NFC,
    MOE_NORM_NFD,
    MOE_NORM_NFKC,
    MOE_NORM_NFKD,
    MOE_NORM_PREPEND,            /* a string put before non-empty text (SentencePiece's leading "▁") */
    MOE_NORM_REPLACE
} moe_tok_norm_kind;

typedef struct {
    moe_tok_norm_kind kind;
    char *prepend;               /* Prepend */
    size_t prepend_len;
    moe_tok_replace rep;         /* Replace */
} moe_tok_norm;

typedef enum { MOE_PRE_BYTELEVEL, MOE_PRE_SPLIT, MOE_PRE_DIGITS, MOE_PRE_METASPACE } moe_tok_pre_kind;

/* Metaspace's prepend_scheme: where the replacement character is put before a piece. */
typedef enum { MOE_PREPEND_ALWAYS, MOE_PREPEND_FIRST, MOE_PREPEND_NEVER } moe_tok_prepend;

typedef enum {
    MOE_SPLIT_REMOVED,
    MOE_SPLIT_ISOLATED,
    MOE_SPLIT_MERGED_WITH_PREVIOUS,
    MOE_SPLIT_MERGED_WITH_NEXT,
    MOE_SPLIT_CONTIGUOUS
} moe_tok_split_behavior;

typedef struct {
    moe_tok_pre_kind kind;
    pcre2_code *re;              /* Split, and ByteLevel with use_regex */
    int jit;                     /* re is JIT-compiled */
    moe_tok_split_behavior behavior;
    int invert;                  /* Split */
    int add_prefix_space;        /* ByteLevel */
    int individual_digits;       /* Digits */
    char rep[4];                 /* Metaspace: the replacement character (UTF-8) */
    size_t rep_len;
    moe_tok_prepend prepend;     /* Metaspace */
    int split;                   /* Metaspace: cut before each replacement character */
} moe_tok_pre;

typedef struct {
    char *content;               /* as written in the file */
    size_t len;
    char *match;                 /* what is searched for: content, normalized if `normalized` */
    size_t match_len;
    int32_t id;
    unsigned special : 1, normalized : 1, lstrip : 1, rstrip : 1, single_word : 1;
} moe_tok_added;

/* The added tokens searched for in one pass (raw text, or normalized text),
 * indexed by first byte, longest first within a byte. */
typedef struct {
    int n;
    int *order;                  /* indices into added[] */
    int first[257];              /* order[first[b] .. first[b+1]) start with byte b */
} moe_tok_added_set;

/* One decoder step; a decoder is a list of them, run in order over the
 * list of token strings (decoder.c). */
typedef enum {
    MOE_DEC_BYTELEVEL,           /* bytes of the byte-level alphabet; joins the tokens */
    MOE_DEC_BYTEFALLBACK,        /* a run of <0xXX> tokens becomes the text of its bytes */
    MOE_DEC_FUSE,                /* joins the tokens */
    MOE_DEC_REPLACE,             /* in each token */
    MOE_DEC_STRIP,               /* up to start / stop copies of a character off each token's ends */
    MOE_DEC_METASPACE            /* the replacement character back to a space (dropped in the first token) */
} moe_tok_dec_kind;

typedef struct {
    moe_tok_dec_kind kind;
    moe_tok_replace rep;         /* Replace */
    uint32_t ch;                 /* Strip's content, Metaspace's replacement */
    size_t start, stop;          /* Strip */
    int drop_first;              /* Metaspace: prepend_scheme is not "never" */
} moe_tok_dec;

/* The piece cache: pre-tokenized piece → ids, cleared when full. */
typedef struct {
    uint32_t *slot;              /* entry index + 1 */
    uint32_t mask;
    struct moe_tok_cache_entry {
        uint64_t hash;
        uint32_t key_off, key_len, ids_off, n_ids;
    } *entry;
    uint32_t n, cap;
    moe_tok_buf keys;
    moe_tok_ids ids;
} moe_tok_cache;

typedef struct {
    size_t off, len;
    int at_start;                /* begins where the input text begins (Metaspace's "first") */
} moe_tok_span;

typedef struct {
    moe_tok_buf text;
    moe_tok_span *span;
    size_t n, cap;
} moe_tok_pieces;

typedef struct {
    size_t off, len;
    int32_t id;                  /* an added token, or -1 for text */
} moe_tok_seg;

typedef struct {
    moe_tok_seg *v;
    size_t n, cap;
} moe_tok_segs;

struct moe_tokenizer {
    char *origin;                /* the file, for messages */

    /* id → piece (added tokens override the model's vocabulary; one marked
     * normalized is its normalized form, which the decoder reads, as in the
     * reference) */
    int n_ids;
    uint32_t *piece_off;         /* UINT32_MAX: no token has this id */
    uint32_t *piece_len;
    moe_tok_buf pieces;          /* every piece, each NUL-terminated */
    unsigned char *special;      /* per id: a special added token */
    unsigned char *skip;         /* per id: its piece is a special token's content (left out by SKIP_SPECIAL) */

    /* model BPE */
    moe_tok_strmap vocab;
    moe_tok_mergemap merges;
    int32_t char_id[0x800];      /* vocab id of each one-character token below U+0800, or -1 */
    int32_t byte_id[256];        /* <0xXX> tokens for byte_fallback, or -1 */
    int32_t unk_id;              /* -1: none */
    int ignore_merges, byte_fallback, fuse_unk;
    int cut_words;               /* pieces may be cut before "▁" (bpe.c) */

    /* added tokens */
    int n_added;
    moe_tok_added *added;
    moe_tok_strmap added_ids;    /* content → id */
    moe_tok_added_set raw_set, norm_set;

    int n_norm;
    moe_tok_norm *norm;
    int n_pre;
    moe_tok_pre *pre;

    /* post-processor, single sequence */
    int n_prefix, n_suffix;
    int32_t *prefix, *suffix;

    int has_decoder;             /* none: tokens joined by spaces */
    int n_dec;
    moe_tok_dec *dec;

    /* the byte-level alphabet: byte → character (UTF-8) and back */
    char bl_char[256][2];
    unsigned char bl_char_len[256];
    int16_t bl_byte[0x144];      /* code point → byte, -1 if none */

    /* encoding scratch (one encode at a time) */
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    moe_tok_buf valid, normed, tmp;
    moe_tok_segs raw_segs, norm_segs;
    moe_tok_pieces pa, pb;
    struct moe_tok_part {
        size_t a, b;             /* a stretch of one piece */
        int match;               /* matched by the pattern (or the digit test) */
    } *parts;
    size_t parts_cap;
    moe_tok_cache cache;
    struct moe_tok_symbol {
        int32_t id, prev, next;
        uint32_t len;            /* 0: merged into its left neighbour */
    } *sym;
    size_t sym_cap;
    struct moe_tok_merge_cand {
        uint32_t rank, pos;
        int32_t merged;
    } *heap;
    size_t heap_cap;
};

/* load.c: the GPT-2 byte-level alphabet into t->bl_* */
void moe_tok_bytelevel_init(moe_tokenizer *t);

/* load.c: reading a component's fields; `where` names the component in messages. */
struct json_object;
/* The field, or NULL when absent or null. */
struct json_object *moe_tok_json_get(struct json_object *o, const char *key);
/* The component's "type"; "" when absent. */
const char *moe_tok_json_type(struct json_object *o);
moe_status moe_tok_json_bool(const moe_tokenizer *t, struct json_object *o, const char *where, const char *key,
                             int def, int *out);
/* A field that must be a string of exactly one character. */
moe_status moe_tok_json_char(const moe_tokenizer *t, struct json_object *o, const char *where, const char *key,
                             uint32_t *cp);

/* normalize.c: the "normalizer" object into t->norm. */
moe_status moe_tok_read_normalizer(moe_tokenizer *t, struct json_object *o);
void moe_tok_norm_free(moe_tokenizer *t);

/* replace.c: a Replace's "pattern" and "content"; what = "normalizer Replace" or the like. */
moe_status moe_tok_replace_read(const moe_tokenizer *t, struct json_object *o, const char *what, moe_tok_replace *r);
/* s[0..n) with every match replaced, appended to out. */
moe_status moe_tok_replace_apply(const moe_tokenizer *t, const moe_tok_replace *r, const char *s, size_t n,
                                 moe_tok_buf *out);
void moe_tok_replace_free(moe_tok_replace *r);

/* pretokenize.c: the next match of re in s[0..n), searching from *from, as
 * the reference iterates matches (an empty match right after the last one
 * is skipped by one character; *last_end starts at SIZE_MAX). 1: a match at
 * [*ms, *me); 0: none left; a negative PCRE2 error code. md and mctx may be
 * any match data and context for re (mctx NULL: the default). */
int moe_tok_regex_find(const pcre2_code *re, int jit, pcre2_match_data *md, pcre2_match_context *mctx,
                       const char *s, size_t n, size_t *from, size_t *last_end, size_t *ms, size_t *me);
/* Appends s[0..n) as one piece (nothing when empty); -1 when out of memory. */
int moe_tok_pieces_push(moe_tok_pieces *p, const char *s, size_t n, int at_start);

/* metaspace.c: the Metaspace pre-tokenizer. */
moe_status moe_tok_read_prepend_scheme(const moe_tokenizer *t, struct json_object *o, const char *where,
                                       moe_tok_prepend *out);
moe_status moe_tok_read_metaspace(moe_tokenizer *t, struct json_object *o, moe_tok_pre *p);
moe_status moe_tok_metaspace_piece(moe_tokenizer *t, const moe_tok_pre *step, const char *s, size_t n, int at_start,
                                   moe_tok_pieces *out);

/* decoder.c: the "decoder" object into t->dec, and running it. A run takes
 * the token strings one at a time and appends text to *out as it becomes
 * final. eager (streaming): a run of byte tokens is handed on character by
 * character as each completes, instead of whole at its end. */
moe_status moe_tok_read_decoder(moe_tokenizer *t, struct json_object *o);
void moe_tok_dec_free(moe_tokenizer *t);

typedef struct moe_tok_dec_run {
    const moe_tokenizer *t;
    int eager;
    moe_tok_buf *out;
    size_t tokens_out;           /* tokens that reached the end (no decoder: spaces between) */
    struct moe_tok_dec_state {
        moe_tok_buf buf;         /* the step's output */
        moe_tok_buf bytes;       /* ByteFallback: the run's bytes; ByteLevel: an unfinished character */
        size_t tokens;           /* tokens received */
        size_t at_start;         /* Strip: characters stripped from the token's start; SIZE_MAX once past it */
        size_t held;             /* Strip: trailing copies held back (they may end the token) */
        int in_run, run_out;     /* ByteFallback: inside a run of byte tokens; the run's token has begun */
        int joined;              /* Fuse, ByteLevel: the one token has begun */
    } *st;
} moe_tok_dec_run;

moe_status moe_tok_dec_run_init(moe_tok_dec_run *r, const moe_tokenizer *t, int eager, moe_tok_buf *out);
/* One token's string through the decoder. */
moe_status moe_tok_dec_run_put(moe_tok_dec_run *r, const char *piece, size_t n);
/* The end of the tokens: what steps held goes on (or is stripped); the run
 * starts afresh. */
moe_status moe_tok_dec_run_finish(moe_tok_dec_run *r);
void moe_tok_dec_run_free(moe_tok_dec_run *r);
/* pretokenize.c: compiles an Oniguruma-syntax pattern (as the reference uses) for PCRE2;
 * literal: a Split "String" pattern. NULL after setting the error. */
pcre2_code *moe_tok_regex_compile(const char *origin, const char *what, const char *pattern, size_t len,
                                  int literal, int *jit);

/* normalize.c: t->norm applied to s[0..n) into out (replaced). */
moe_status moe_tok_normalize(const moe_tokenizer *t, const moe_tok_norm *steps, int n_steps, const char *s,
                             size_t n, moe_tok_buf *out);

/* pretokenize.c: s[0..n) split by every pre-tokenizer step; the pieces
 * (non-empty) are left in *out (t->pa or t->pb). at_start: s begins where
 * the input text begins. */
moe_status moe_tok_pretokenize(moe_tokenizer *t, const char *s, size_t n, int at_start, moe_tok_pieces **out);

/* bpe.c: one piece through the model, ids appended to out. */
moe_status moe_tok_bpe(moe_tokenizer *t, const char *s, size_t n, moe_tok_ids *out);
/* bpe.c: 0 if the token holds "▁" right after another character (no word cuts then). */
int moe_tok_word_cut_safe(const char *token, size_t n);
void moe_tok_cache_free(moe_tok_cache *c);

/* added.c: s[0..n) cut at the added tokens of one set, as the reference's
 * AddedVocabulary finds them (leftmost-longest; single_word, lstrip,
 * rstrip); segments appended to segs (empty text segments left out). */
moe_status moe_tok_split_added(const moe_tokenizer *t, const moe_tok_added_set *set, const char *s, size_t n,
                               size_t base, moe_tok_segs *segs);
/* Builds a set from the added tokens with normalized == want_normalized. */
moe_status moe_tok_added_set_build(moe_tokenizer *t, moe_tok_added_set *set, int want_normalized);

#endif
