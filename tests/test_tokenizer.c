/* tests/test_tokenizer.c — the tokenizer.json BPE tokenizer against the
 * reference fixtures (tests/fixtures/tokenizers, made by Hugging Face
 * `tokenizers`; byte-level and SentencePiece-style tokenizers, the latter
 * also in test_tokenizer_sentencepiece.c): ids with and without special
 * tokens, pieces, decoded text,
 * decode(encode(s)) == s where the reference is lossless, streaming decode
 * that hands out whole UTF-8 only, invalid UTF-8 input, the lookups, and
 * errors that name the file, field or component at fault. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moe/tokenizer.h"
#include "support/tokenizer_fixture.h"


static json_object *reference(void)
{
    static json_object *ref;
    if (!ref) ref = json_object_from_file(TEST_TOKENIZER_FIXTURES "/reference.json");
    assert_non_null(ref);
    return ref;
}

static json_object *field(json_object *o, const char *key)
{
    json_object *v = NULL;
    assert_true(json_object_object_get_ex(o, key, &v));
    return v;
}

/* Hex → bytes (malloc'd, *n its length). */
static char *unhex(const char *h, size_t *n)
{
    size_t len = strlen(h) / 2;
    char *b = malloc(len + 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (char)v;
    }
    b[len] = 0;
    *n = len;
    return b;
}

static int ids_equal(json_object *want, const int32_t *got, int n)
{
    if ((int)json_object_array_length(want) != n) return 0;
    for (int i = 0; i < n; i++)
        if (json_object_get_int(json_object_array_get_idx(want, (size_t)i)) != got[i]) return 0;
    return 1;
}

static void print_mismatch(moe_tokenizer *t, const char *tok, const char *cas, const char *what, json_object *want,
                           const int32_t *got, int n)
{
    fprintf(stderr, "MISMATCH %s / %s (%s)\n  want:", tok, cas, what);
    for (size_t i = 0; i < json_object_array_length(want); i++) {
        int id = json_object_get_int(json_object_array_get_idx(want, i));
        const char *p = moe_tokenizer_piece(t, id, NULL);
        fprintf(stderr, " %d'%s'", id, p ? p : "?");
    }
    fprintf(stderr, "\n  got: ");
    for (int i = 0; i < n; i++) {
        const char *p = moe_tokenizer_piece(t, got[i], NULL);
        fprintf(stderr, " %d'%s'", got[i], p ? p : "?");
    }
    fprintf(stderr, "\n");
}

/* Calls fn for every tokenizer and case of the reference. */
typedef int (*case_fn)(moe_tokenizer *t, const char *tok, const char *cas, const char *input, size_t n,
                       json_object *text, json_object *res);

static void for_each_case(case_fn fn)
{
    json_object *ref = reference(), *cases = field(ref, "cases"), *results = field(ref, "results");
    int failures = 0, checked = 0, tokenizers = 0;
    json_object_object_foreach(results, tok, per_case) {
        moe_tokenizer *t = test_tokenizer_fixture(tok);
        tokenizers++;
        for (size_t i = 0; i < json_object_array_length(cases); i++) {
            json_object *c = json_object_array_get_idx(cases, i);
            const char *cas = json_object_get_string(field(c, "name"));
            size_t n;
            char *input = unhex(json_object_get_string(field(c, "hex")), &n);
            failures += fn(t, tok, cas, input, n, field(c, "text"), field(per_case, cas));
            checked++;
            free(input);
        }
        moe_tokenizer_free(t);
    }
    assert_true(tokenizers >= 18);
    assert_true(checked >= 18 * 30);
    assert_int_equal(failures, 0);
}

/* ---- against the reference ---- */

static int check_ids(moe_tokenizer *t, const char *tok, const char *cas, const char *input, size_t n,
                     json_object *text, json_object *res)
{
    (void)text;
    int bad = 0;
    for (int special = 0; special <= 1; special++) {
        int32_t *ids;
        int k;
        assert_int_equal(moe_tokenizer_encode(t, input, n, special, &ids, &k), MOE_OK);
        json_object *want = field(res, special ? "ids_special" : "ids");
        if (!ids_equal(want, ids, k)) {
            print_mismatch(t, tok, cas, special ? "with special tokens" : "without special tokens", want, ids, k);
            bad++;
        } else if (special) {
            /* pieces: the reference's tokens, except added tokens that took
             * whitespace in with lstrip/rstrip (the piece is the token itself) */
            json_object *tokens = field(res, "tokens_special");
            for (int i = 0; i < k; i++) {
                const char *want_piece = json_object_get_string(json_object_array_get_idx(tokens, (size_t)i));
                const char *p = moe_tokenizer_piece(t, ids[i], NULL);
                assert_non_null(p);
                if (strcmp(p, want_piece) != 0 && !moe_tokenizer_is_special(t, ids[i])) {
                    fprintf(stderr, "PIECE %s / %s [%d]: '%s' vs '%s'\n", tok, cas, i, p, want_piece);
                    bad++;
                }
            }
        }
        free(ids);
    }
    return bad;
}

static void ids_equal_reference(void **state)
{
    (void)state;
    for_each_case(check_ids);
}

/* ---- streaming ---- */

/* decode() equals the reference's decode, and streaming the same ids (every
 * piece whole UTF-8) gives the same text. */
static int check_decode(moe_tokenizer *t, const char *tok, const char *cas, const char *input, size_t n,
                        json_object *text, json_object *res)
{
    (void)input, (void)n, (void)text;
    json_object *ids = field(res, "ids_special");
    int k = (int)json_object_array_length(ids), bad = 0;
    int32_t *v = malloc(sizeof *v * (size_t)(k + 1));
    for (int i = 0; i < k; i++) v[i] = json_object_get_int(json_object_array_get_idx(ids, (size_t)i));
    for (int skip = 0; skip <= 1; skip++) {
        char *got;
        size_t len, wlen;
        assert_int_equal(moe_tokenizer_decode(t, v, k, skip ? MOE_TOKENIZER_SKIP_SPECIAL : 0, &got, &len), MOE_OK);
        char *want = unhex(json_object_get_string(field(res, skip ? "decode_skip_hex" : "decode_hex")), &wlen);
        if (len != wlen || memcmp(got, want, len) != 0) {
            fprintf(stderr, "DECODE %s / %s (skip %d):\n  want '%s'\n  got  '%s'\n", tok, cas, skip, want, got);
            bad++;
        }
        size_t slen;
        char *streamed = test_tokenizer_stream(t, v, k, skip ? MOE_TOKENIZER_SKIP_SPECIAL : 0, &slen);
        if (slen != len || memcmp(streamed, got, len) != 0) {
            fprintf(stderr, "STREAM %s / %s (skip %d): '%s' vs '%s'\n", tok, cas, skip, streamed, got);
            bad++;
        }
        free(streamed);
        free(got);
        free(want);
    }
    free(v);
    return bad;
}

static void decode_and_stream_equal_reference(void **state)
{
    (void)state;
    for_each_case(check_decode);
}

/* decode(encode(s)) == s wherever the reference round-trips (for input that
 * is not UTF-8: the text with U+FFFD that the reference sees). */
static int check_round_trip(moe_tokenizer *t, const char *tok, const char *cas, const char *input, size_t n,
                            json_object *text, json_object *res)
{
    if (!json_object_get_boolean(field(res, "lossless"))) return 0;
    int32_t *ids;
    int k;
    char *got;
    size_t len;
    assert_int_equal(moe_tokenizer_encode(t, input, n, 0, &ids, &k), MOE_OK);
    assert_int_equal(moe_tokenizer_decode(t, ids, k, 0, &got, &len), MOE_OK);
    const char *want = json_object_get_string(text);
    size_t wlen = (size_t)json_object_get_string_len(text);
    int bad = len != wlen || memcmp(got, want, len) != 0;
    if (bad) fprintf(stderr, "ROUND TRIP %s / %s: '%s'\n", tok, cas, got);
    free(ids);
    free(got);
    return bad;
}

static void round_trip_where_lossless(void **state)
{
    (void)state;
    for_each_case(check_round_trip);
    /* and the byte-level tokenizers with no normalizer are lossless on these */
    json_object *ref = reference(), *results = field(ref, "results");
    static const char *const lossless[] = { "gpt2", "cl100k", "llama3", "o200k" };
    for (size_t i = 0; i < sizeof lossless / sizeof lossless[0]; i++)
        assert_true(json_object_get_boolean(field(field(field(results, lossless[i]), "emoji"), "lossless")));
}

/* The id of the byte-level token for byte b. */
static int32_t byte_token(moe_tokenizer *t, unsigned b)
{
    /* bytes_to_unicode: printable Latin-1 stands for itself, the rest from U+0100 on */
    unsigned cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE))
        cp = b;
    else {
        unsigned k = 0;
        for (unsigned x = 0; x < b; x++)
            if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) k++;
        cp = 256 + k;
    }
    char s[4] = { 0 };
    if (cp < 0x80) s[0] = (char)cp;
    else s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F));
    int32_t id = moe_tokenizer_token_id(t, s);
    assert_true(id >= 0);
    return id;
}

static void stream_holds_partial_characters(void **state)
{
    (void)state;
    moe_tokenizer *t = test_tokenizer_fixture("gpt2");
    moe_tokenizer_stream *s;
    assert_int_equal(moe_tokenizer_stream_create(t, 0, &s), MOE_OK);
    const char *p;
    size_t n;
    /* "€" = E2 82 AC, one byte token at a time: nothing, nothing, "€" */
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0xE2), &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_string_equal(p, "");
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0x82), &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0xAC), &p, &n), MOE_OK);
    assert_string_equal(p, "\xE2\x82\xAC");
    /* "a", then F0 9F (an unfinished emoji), then "b": "a", "", "\uFFFDb" */
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 'a'), &p, &n), MOE_OK);
    assert_string_equal(p, "a");
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0xF0), &p, &n), MOE_OK);
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0x9F), &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 'b'), &p, &n), MOE_OK);
    assert_string_equal(p, "\xEF\xBF\xBD" "b");
    /* a lone continuation byte is replaced at once; an unfinished end at flush */
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0x80), &p, &n), MOE_OK);
    assert_string_equal(p, "\xEF\xBF\xBD");
    assert_int_equal(moe_tokenizer_stream_put(s, byte_token(t, 0xE2), &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_flush(s, &p, &n), MOE_OK);
    assert_string_equal(p, "\xEF\xBF\xBD");
    assert_int_equal(moe_tokenizer_stream_flush(s, &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    /* an id that names no token streams nothing */
    assert_int_equal(moe_tokenizer_stream_put(s, 1 << 29, &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    moe_tokenizer_stream_free(s);
    moe_tokenizer_free(t);
}

/* ---- invalid UTF-8, lookups, files ---- */

static void invalid_utf8_is_read_as_the_reference_reads_it(void **state)
{
    (void)state;
    moe_tokenizer *t = test_tokenizer_fixture("cl100k");
    /* each maximal invalid subpart is one U+FFFD: C0 AF is two, ED A0 80 three, E2 82 one */
    static const char raw[] = "x\xC0\xAFy\xED\xA0\x80z\xE2\x82";
    static const char replaced[] = "x\xEF\xBF\xBD\xEF\xBF\xBDy\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz\xEF\xBF\xBD";
    int32_t *a, *b;
    int na, nb;
    assert_int_equal(moe_tokenizer_encode(t, raw, sizeof raw - 1, 0, &a, &na), MOE_OK);
    assert_int_equal(moe_tokenizer_encode(t, replaced, sizeof replaced - 1, 0, &b, &nb), MOE_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof *a * (size_t)na);
    free(a);
    free(b);
    /* the empty string: nothing, or only what the post-processor adds */
    assert_int_equal(moe_tokenizer_encode(t, "", 0, 1, &a, &na), MOE_OK);
    assert_int_equal(na, 0);
    assert_null(a);
    assert_int_equal(moe_tokenizer_encode(t, NULL, 0, 0, &a, &na), MOE_OK);
    assert_int_equal(na, 0);
    moe_tokenizer_free(t);
}

static void lookups(void **state)
{
    (void)state;
    json_object *info = field(reference(), "tokenizers");
    static const struct { const char *name, *bos, *eos; } cases[] = {
        { "gpt2", NULL, NULL },           { "roberta", "<s>", "</s>" },
        { "neox", NULL, "<|endoftext|>" }, { "cl100k", NULL, NULL },
        { "llama3", "<|begin_of_text|>", NULL }, { "o200k", NULL, NULL },
        { "digits", "<s>", "</s>" },      { "splits", "[CLS]", "[SEP]" },
        { "bytefallback", "<s>", NULL },  { "unk", NULL, NULL },
        { "qwen2", NULL, NULL },          { "sp_legacy", "<s>", NULL },
        { "sp_gemma", "<s>", NULL },      { "sp_first", "<s>", NULL },
        { "sp_first_split", "<s>", NULL }, { "sp_always", "<s>", NULL },
        { "sp_never", "<s>", NULL },      { "sp_add_prefix_space", "<s>", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        moe_tokenizer *t = test_tokenizer_fixture(cases[i].name);
        assert_int_equal(moe_tokenizer_vocab_size(t),
                         json_object_get_int(field(field(info, cases[i].name), "vocab_size")));
        assert_int_equal(moe_tokenizer_bos_id(t), cases[i].bos ? moe_tokenizer_token_id(t, cases[i].bos) : -1);
        assert_int_equal(moe_tokenizer_eos_id(t), cases[i].eos ? moe_tokenizer_token_id(t, cases[i].eos) : -1);
        if (cases[i].bos) assert_true(moe_tokenizer_is_special(t, moe_tokenizer_bos_id(t)));
        assert_null(moe_tokenizer_piece(t, -1, NULL));
        assert_null(moe_tokenizer_piece(t, moe_tokenizer_vocab_size(t), NULL));
        assert_int_equal(moe_tokenizer_token_id(t, "no such token at all"), -1);
        size_t len;
        const char *p = moe_tokenizer_piece(t, 5, &len);
        assert_non_null(p);
        assert_int_equal(strlen(p), len);
        assert_int_equal(moe_tokenizer_token_id(t, p), 5);
        moe_tokenizer_free(t);
    }
    moe_tokenizer *t = test_tokenizer_fixture("neox");
    int32_t eot = moe_tokenizer_token_id(t, "<|endoftext|>"), spaces = moe_tokenizer_token_id(t, "    ");
    assert_true(eot >= 0 && spaces >= 0);
    assert_true(moe_tokenizer_is_special(t, eot));
    assert_false(moe_tokenizer_is_special(t, spaces));   /* an added token that is not special */
    assert_false(moe_tokenizer_is_special(t, -3));
    moe_tokenizer_free(t);
}

static void loads_a_checkpoint_directory(void **state)
{
    (void)state;
    char dir[] = "/tmp/moe-tok-XXXXXX", path[600], cmd[1200];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    snprintf(cmd, sizeof cmd, "cp '%s/gpt2.json' '%s'", TEST_TOKENIZER_FIXTURES, path);
    assert_int_equal(system(cmd), 0);
    moe_tokenizer *t = NULL;
    assert_int_equal(moe_tokenizer_load_dir(dir, &t), MOE_OK);
    int32_t *ids;
    int n;
    assert_int_equal(moe_tokenizer_encode(t, "Hello world", 11, 1, &ids, &n), MOE_OK);
    assert_int_equal(n, 1);   /* "Hello world" is an added token of the gpt2 fixture */
    free(ids);
    moe_tokenizer_free(t);
    unlink(path);
    rmdir(dir);
    assert_int_equal(moe_tokenizer_load_dir(dir, &t), MOE_ERR_IO);
    assert_null(t);
    assert_non_null(strstr(moe_last_error(), "tokenizer.json: cannot open"));
    assert_non_null(strstr(moe_last_error(), dir));
}

/* A minimal tokenizer.json with `extra` spliced in at the top level and the
 * model's `model_extra`. */
static moe_status load_variant(const char *model_extra, const char *extra)
{
    char json[4096];
    snprintf(json, sizeof json,
             "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":5,\"content\":\"<eos>\",\"special\":true}]%s,"
             "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"c\":3,\"abc\":4}%s}}",
             extra, model_extra);
    moe_tokenizer *t = NULL;
    moe_status st = moe_tokenizer_load_json(json, strlen(json), "variant.json", &t);
    if (st == MOE_OK) {
        int32_t *ids;
        int n;
        assert_int_equal(moe_tokenizer_encode(t, "abcab<eos>", 10, 0, &ids, &n), MOE_OK);
        free(ids);
    }
    moe_tokenizer_free(t);
    return st;
}

static void expect_error(moe_status got, moe_status want, const char *text)
{
    if (got != want || !strstr(moe_last_error(), text))
        fprintf(stderr, "expected %d '%s', got %d '%s'\n", want, text, got, moe_last_error());
    assert_int_equal(got, want);
    assert_non_null(strstr(moe_last_error(), text));
}

static void bad_files_and_components_are_named(void **state)
{
    (void)state;
    moe_tokenizer *t = NULL;
    expect_error(moe_tokenizer_load("/nonexistent/dir/tokenizer.json", &t), MOE_ERR_IO,
                 "/nonexistent/dir/tokenizer.json: cannot open");
    assert_null(t);
    expect_error(moe_tokenizer_load_json("{\"model\": {", 11, "cut.json", &t), MOE_ERR_FORMAT, "cut.json: not valid JSON");
    expect_error(moe_tokenizer_load_json("[1, 2]", 6, "list.json", &t), MOE_ERR_FORMAT, "not a JSON object");
    expect_error(moe_tokenizer_load_json("{}", 2, "empty.json", &t), MOE_ERR_FORMAT, "empty.json: no \"model\" object");
    char path[] = "/tmp/moe-tok-empty-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    expect_error(moe_tokenizer_load(path, &t), MOE_ERR_FORMAT, "empty file");
    unlink(path);

    /* the variant itself loads and encodes */
    assert_int_equal(load_variant(",\"merges\":[\"a b\",[\"ab\",\"c\"]]", ""), MOE_OK);
    expect_error(load_variant(",\"merges\":[\"a x\"]", ""), MOE_ERR_FORMAT, "merge 0: token 'x' is not in the vocabulary");
    expect_error(load_variant(",\"merges\":[\"a b c\"]", ""), MOE_ERR_FORMAT, "not two tokens separated by one space");
    expect_error(load_variant(",\"merges\":[[\"a\"]]", ""), MOE_ERR_FORMAT, "merge 0 is neither");
    expect_error(load_variant(",\"merges\":[],\"dropout\":0.1", ""), MOE_ERR_UNSUPPORTED, "dropout");
    expect_error(load_variant(",\"merges\":[],\"unk_token\":\"<unk>\"", ""), MOE_ERR_FORMAT,
                 "unk_token '<unk>' is not in the vocabulary");
    expect_error(load_variant(",\"merges\":[],\"continuing_subword_prefix\":\"##\"", ""), MOE_ERR_UNSUPPORTED,
                 "continuing_subword_prefix");
    expect_error(load_variant(",\"merges\":[],\"byte_fallback\":\"yes\"", ""), MOE_ERR_FORMAT,
                 "field 'byte_fallback' must be true or false");
    static const char wordpiece[] = "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}";
    expect_error(moe_tokenizer_load_json(wordpiece, sizeof wordpiece - 1, "wp.json", &t), MOE_ERR_UNSUPPORTED,
                 "wp.json: model type 'WordPiece' is not supported");
    expect_error(load_variant("", ",\"normalizer\":{\"type\":\"Lowercase\"}"), MOE_ERR_UNSUPPORTED,
                 "variant.json: normalizer 'Lowercase' is not supported");
    expect_error(load_variant("", ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},"
                                  "{\"type\":\"StripAccents\"}]}"),
                 MOE_ERR_UNSUPPORTED, "normalizer 'StripAccents' is not supported");
    expect_error(load_variant("", ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(a\"},"
                                  "\"behavior\":\"Isolated\",\"invert\":false}"),
                 MOE_ERR_FORMAT, "pre_tokenizer Split pattern '(a' does not compile");
    expect_error(load_variant("", ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
                                  "\"behavior\":\"Sideways\"}"),
                 MOE_ERR_UNSUPPORTED, "Split behavior 'Sideways' is not supported");
    expect_error(load_variant("", ",\"pre_tokenizer\":{\"type\":\"Split\",\"behavior\":\"Isolated\"}"), MOE_ERR_FORMAT,
                 "Split has no pattern");
    expect_error(load_variant("", ",\"post_processor\":{\"type\":\"Sequence\",\"processors\":[{\"type\":\"ByteLevel\"},"
                                  "{\"type\":\"Fancy\"}]}"),
                 MOE_ERR_UNSUPPORTED, "post_processor 'Fancy' is not supported");
    expect_error(load_variant("", ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                                  "{\"id\":\"<bos>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
                                  "\"special_tokens\":{}}"),
                 MOE_ERR_FORMAT, "special token '<bos>' has no 'ids'");
    expect_error(load_variant("", ",\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
                                  "{\"id\":\"<bos>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
                                  "\"special_tokens\":{\"<bos>\":{\"id\":\"<bos>\",\"ids\":[77],\"tokens\":[\"<bos>\"]}}}"),
                 MOE_ERR_FORMAT, "adds id 77, which names no token");
    expect_error(load_variant("", ",\"added_tokens\":[{\"id\":-4,\"content\":\"x\"}]"), MOE_ERR_FORMAT,
                 "added_tokens[0].id is -4, not a token id");
    expect_error(load_variant("", ",\"added_tokens\":[{\"id\":9}]"), MOE_ERR_FORMAT,
                 "added_tokens[0] has no string 'content'");

    /* SentencePiece-style components: fields at fault, and what moe does not do */
    static const struct { const char *extra; moe_status st; const char *msg; } sp[] = {
        { ",\"pre_tokenizer\":{\"type\":\"WhitespaceSplit\"}", MOE_ERR_UNSUPPORTED,
          "pre_tokenizer 'WhitespaceSplit' is not supported" },
        { ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"__\"}", MOE_ERR_FORMAT,
          "pre_tokenizer Metaspace field 'replacement' is not a string of one character" },
        { ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\",\"prepend_scheme\":\"sometimes\"}",
          MOE_ERR_UNSUPPORTED, "pre_tokenizer Metaspace prepend_scheme 'sometimes' is not supported" },
        { ",\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\",\"split\":1}", MOE_ERR_FORMAT,
          "pre_tokenizer Metaspace field 'split' must be true or false" },
        { ",\"normalizer\":{\"type\":\"Prepend\"}", MOE_ERR_FORMAT, "normalizer Prepend has no string 'prepend'" },
        { ",\"normalizer\":{\"type\":\"Replace\",\"content\":\"_\"}", MOE_ERR_FORMAT,
          "normalizer Replace has no pattern" },
        { ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"}}", MOE_ERR_FORMAT,
          "normalizer Replace has no string 'content'" },
        { ",\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"[\"},\"content\":\"_\"}", MOE_ERR_FORMAT,
          "normalizer Replace pattern '[' does not compile" },
        { ",\"decoder\":{\"type\":\"WordPiece\"}", MOE_ERR_UNSUPPORTED, "decoder 'WordPiece' is not supported" },
        { ",\"decoder\":{\"type\":\"Metaspace\"}", MOE_ERR_FORMAT,
          "decoder Metaspace field 'replacement' is not a string of one character" },
        { ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Fuse\"},{\"type\":\"ByteFallback\"}]}",
          MOE_ERR_UNSUPPORTED, "decoder ByteFallback after Fuse is not supported" },
        { ",\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteLevel\"},{\"type\":\"ByteFallback\"}]}",
          MOE_ERR_UNSUPPORTED, "decoder ByteFallback after ByteLevel is not supported" },
        { ",\"decoder\":{\"type\":\"Strip\",\"content\":\" \",\"start\":-1}", MOE_ERR_FORMAT,
          "decoder Strip field 'start' is not a count" },
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++)
        expect_error(load_variant("", sp[i].extra), sp[i].st, sp[i].msg);
}

/* The BPE merges on a hand-made vocabulary: the lowest rank first, the
 * leftmost among equals; a merge is used even where the longer token would
 * need another order. */
static void merge_order(void **state)
{
    (void)state;
    static const char json[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"bc\":4,\"abc\":5,\"aa\":6,\"aaa\":7},"
        "\"merges\":[\"b c\",\"a b\",\"a bc\",\"a a\",\"aa a\"]}}";
    moe_tokenizer *t;
    assert_int_equal(moe_tokenizer_load_json(json, sizeof json - 1, "merges.json", &t), MOE_OK);
    static const struct { const char *text; int n; int32_t ids[6]; } cases[] = {
        { "abc", 1, { 5 } },          /* b c first (rank 0), then a bc */
        { "ab", 1, { 3 } },
        { "aaaa", 2, { 6, 6 } },      /* a a at 0, then a a at 2; aa a never applies */
        { "aaa", 1, { 7 } },          /* a a, then aa a */
        { "abab", 2, { 3, 3 } },
        { "cab", 2, { 2, 3 } },
        { "x", 0, { 0 } },            /* not in the vocabulary, no unk: dropped, as the reference does */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *ids;
        int n;
        assert_int_equal(moe_tokenizer_encode(t, cases[i].text, strlen(cases[i].text), 1, &ids, &n), MOE_OK);
        assert_int_equal(n, cases[i].n);
        if (n) assert_memory_equal(ids, cases[i].ids, sizeof *ids * (size_t)n);
        free(ids);
    }
    moe_tokenizer_free(t);
}

/* Long input, and more distinct pieces than the cache holds: the same text
 * gives the same ids before and after the cache is cleared, and a large
 * mixed text round-trips. */
static void long_text_and_cache(void **state)
{
    (void)state;
    moe_tokenizer *t = test_tokenizer_fixture("gpt2");
    static const char probe[] = "The quick brown fox, naïve café 1234567 — 👍🏽!\n";
    int32_t *a, *b;
    int na, nb;
    assert_int_equal(moe_tokenizer_encode(t, probe, sizeof probe - 1, 0, &a, &na), MOE_OK);
    size_t cap = 1 << 20, n = 0;
    char *big = malloc(cap);
    for (int i = 0; n + 64 < cap; i++) n += (size_t)snprintf(big + n, cap - n, "w%dq%c ", i * 7919, 'a' + i % 26);
    for (int i = 0; i < 5000 && n + 8 < cap; i++) big[n++] = i % 100 == 99 ? '\n' : ' ';   /* a long whitespace run */
    int32_t *ids;
    int k;
    assert_int_equal(moe_tokenizer_encode(t, big, n, 0, &ids, &k), MOE_OK);
    assert_true(k > 100000);
    char *back;
    size_t len;
    assert_int_equal(moe_tokenizer_decode(t, ids, k, 0, &back, &len), MOE_OK);
    assert_int_equal(len, n);
    assert_memory_equal(back, big, n);
    assert_int_equal(moe_tokenizer_encode(t, probe, sizeof probe - 1, 0, &b, &nb), MOE_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof *a * (size_t)na);
    free(a);
    free(b);
    free(ids);
    free(back);
    free(big);
    moe_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_equal_reference),
        cmocka_unit_test(decode_and_stream_equal_reference),
        cmocka_unit_test(round_trip_where_lossless),
        cmocka_unit_test(stream_holds_partial_characters),
        cmocka_unit_test(invalid_utf8_is_read_as_the_reference_reads_it),
        cmocka_unit_test(lookups),
        cmocka_unit_test(loads_a_checkpoint_directory),
        cmocka_unit_test(bad_files_and_components_are_named),
        cmocka_unit_test(merge_order),
        cmocka_unit_test(long_text_and_cache),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    json_object_put(reference());
    return rc;
}
