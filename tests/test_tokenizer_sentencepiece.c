/* tests/test_tokenizer_sentencepiece.c — what SentencePiece-style BPE adds
 * beyond the fixture comparisons of test_tokenizer.c: the decoder steps
 * (Replace, ByteFallback, Fuse, Strip, Metaspace) in the orders files chain
 * them, decoded and streamed, against what Hugging Face `tokenizers` 0.23
 * returns for the same ids (the expected strings below were printed by it);
 * cutting a whole-prompt piece before "▁" gives the ids the uncut merge
 * gives, on long mixed text, and both are fast; Metaspace's "first" scheme
 * after an added token; a normalized added token's piece. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "moe/tokenizer.h"
#include "support/tokenizer_fixture.h"


static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    buf[len] = 0;
    *n = (size_t)len;
    return buf;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- decoder steps on a hand-made vocabulary ---- */

static const char VOCAB[] =
    "{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"\xE2\x96\x81Hello\":3,\"\xE2\x96\x81\":4,\"\xE2\x96\x81\xE2\x96\x81\":5,"
    "\"x\":6,\"<0xE2>\":7,\"<0x82>\":8,\"<0xAC>\":9,\"<0xFF>\":10,\"a \":11,\"  a\":12,\"b  \":13,\" \":14,"
    "\"\xE2\x96\x81x\xE2\x96\x81\":15}";

#define REPLACE_META "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\xE2\x96\x81\"},\"content\":\" \"}"
#define META(scheme) "{\"type\":\"Metaspace\",\"replacement\":\"\xE2\x96\x81\",\"prepend_scheme\":\"" scheme "\"}"
#define STRIP(c, a, b) "{\"type\":\"Strip\",\"content\":\"" c "\",\"start\":" #a ",\"stop\":" #b "}"
#define SEQ(...) "{\"type\":\"Sequence\",\"decoders\":[" __VA_ARGS__ "]}"

static void decoder_steps_as_the_reference_runs_them(void **state)
{
    (void)state;
    static const struct {
        const char *decoder;   /* NULL: none */
        int n;
        int32_t ids[4];
        const char *want, *want_skip;
    } cases[] = {
        /* Strip after Fuse cuts the whole text's ends */
        { SEQ("{\"type\":\"Fuse\"}," STRIP(" ", 1, 2)), 3, { 12, 13, 14 }, " ab ", " ab " },
        { SEQ("{\"type\":\"Fuse\"}," STRIP("a", 3, 0)), 2, { 12, 11 }, "  aa ", "  aa " },
        /* before Fuse, each token's */
        { SEQ(STRIP(" ", 0, 1) ",{\"type\":\"Fuse\"}"), 3, { 11, 13, 14 }, "ab ", "ab " },
        /* Metaspace drops every "▁" of the first token, unless the scheme is never */
        { META("first"), 3, { 3, 15, 4 }, "Hello x  ", "Hello x  " },
        { META("first"), 2, { 15, 3 }, "x Hello", "x Hello" },
        { META("never"), 2, { 15, 3 }, " x  Hello", " x  Hello" },
        { META("first"), 3, { 1, 3, 15 }, "<s> Hello x ", "Hello x " },
        /* a byte run is one token for what follows; not UTF-8: U+FFFD a byte */
        { SEQ("{\"type\":\"ByteFallback\"}," META("always")), 4, { 7, 8, 9, 3 }, "\xE2\x82\xAC Hello",
          "\xE2\x82\xAC Hello" },
        { SEQ("{\"type\":\"ByteFallback\"}," META("always")), 3, { 7, 8, 3 }, "\xEF\xBF\xBD\xEF\xBF\xBD Hello",
          "\xEF\xBF\xBD\xEF\xBF\xBD Hello" },
        /* Llama-2: the first token's space is cut, the first kept one's when skipping */
        { SEQ(REPLACE_META ",{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}," STRIP(" ", 1, 0)), 4, { 1, 3, 5, 6 },
          "<s> Hello  x", "Hello  x" },
        { SEQ(REPLACE_META ",{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}," STRIP(" ", 1, 0)), 3, { 3, 1, 6 },
          "Hello<s>x", "Hellox" },
        { "{\"type\":\"Replace\",\"pattern\":{\"Regex\":\"\xE2\x96\x81+\"},\"content\":\"_\"}", 3, { 5, 6, 3 }, "_x_Hello",
          "_x_Hello" },
        { NULL, 3, { 3, 6, 4 }, "\xE2\x96\x81Hello x \xE2\x96\x81", "\xE2\x96\x81Hello x \xE2\x96\x81" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[2048];
        snprintf(json, sizeof json,
                 "{\"added_tokens\":[{\"id\":1,\"content\":\"<s>\",\"special\":true}],"
                 "\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":[]}%s%s}",
                 VOCAB, cases[i].decoder ? ",\"decoder\":" : "", cases[i].decoder ? cases[i].decoder : "");
        moe_tokenizer *t;
        moe_status st = moe_tokenizer_load_json(json, strlen(json), "decoders.json", &t);
        if (st) fprintf(stderr, "case %zu: %s\n", i, moe_last_error());
        assert_int_equal(st, MOE_OK);
        for (int skip = 0; skip <= 1; skip++) {
            int flags = skip ? MOE_TOKENIZER_SKIP_SPECIAL : 0;
            const char *want = skip ? cases[i].want_skip : cases[i].want;
            char *got, *streamed;
            size_t len, slen;
            assert_int_equal(moe_tokenizer_decode(t, cases[i].ids, cases[i].n, flags, &got, &len), MOE_OK);
            streamed = test_tokenizer_stream(t, cases[i].ids, cases[i].n, flags, &slen);
            /* the one case where the stream may differ: an invalid byte run (whole characters only) */
            const char *want_stream = strstr(want, "\xEF\xBF\xBD") ? "\xEF\xBF\xBD Hello" : want;
            if (strcmp(got, want) || strcmp(streamed, want_stream))
                fprintf(stderr, "case %zu skip %d: want '%s', decoded '%s', streamed '%s'\n", i, skip, want, got,
                        streamed);
            assert_string_equal(got, want);
            assert_int_equal(len, strlen(want));
            assert_string_equal(streamed, want_stream);
            free(got);
            free(streamed);
        }
        moe_tokenizer_free(t);
    }
}

/* Llama-2's decoder, streamed: a piece comes out as soon as it is whole. */
static void stream_hands_out_whole_characters(void **state)
{
    (void)state;
    moe_tokenizer *t = test_tokenizer_fixture("sp_legacy");
    int32_t bos = moe_tokenizer_token_id(t, "<s>"), e2 = moe_tokenizer_token_id(t, "<0xE2>"),
            x82 = moe_tokenizer_token_id(t, "<0x82>"), xac = moe_tokenizer_token_id(t, "<0xAC>"),
            meta = moe_tokenizer_token_id(t, "\xE2\x96\x81");
    assert_true(bos >= 0 && e2 >= 0 && x82 >= 0 && xac >= 0 && meta >= 0);
    moe_tokenizer_stream *s;
    const char *p;
    size_t n;
    assert_int_equal(moe_tokenizer_stream_create(t, MOE_TOKENIZER_SKIP_SPECIAL, &s), MOE_OK);
    assert_int_equal(moe_tokenizer_stream_put(s, bos, &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_put(s, meta, &p, &n), MOE_OK);   /* the first kept token's space: cut */
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_put(s, e2, &p, &n), MOE_OK);
    assert_int_equal(moe_tokenizer_stream_put(s, x82, &p, &n), MOE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(moe_tokenizer_stream_put(s, xac, &p, &n), MOE_OK);
    assert_string_equal(p, "\xE2\x82\xAC");
    assert_int_equal(moe_tokenizer_stream_put(s, meta, &p, &n), MOE_OK);   /* later ones stay */
    assert_string_equal(p, " ");
    assert_int_equal(moe_tokenizer_stream_put(s, e2, &p, &n), MOE_OK);
    assert_int_equal(moe_tokenizer_stream_flush(s, &p, &n), MOE_OK);       /* an unfinished character */
    assert_string_equal(p, "\xEF\xBF\xBD");
    assert_int_equal(moe_tokenizer_stream_put(s, meta, &p, &n), MOE_OK);   /* afresh: first again */
    assert_int_equal(n, 0);
    moe_tokenizer_stream_free(s);
    moe_tokenizer_free(t);
}

/* ---- long prompts: cutting before "▁" ---- */

/* Mixed text of about `bytes` bytes: words, runs of spaces, newlines, CJK
 * and emoji (byte fallback), "▁" itself. */
static char *mixed_text(size_t bytes, size_t *n)
{
    static const char *const parts[] = {
        "The ", "quick ", "brown ", "fox ", "jumps  ", "over   ", "the ", "lazy ", "dog.\n", "It's ", "1,234,567 ",
        "caf\xC3\xA9 ", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E ", "\xF0\x9F\x91\x8D ", "\xE2\x96\x81\xE2\x96\x81x ",
        "\t\tdef f(x):\n    return x\n", "      ", "\n\n", "na\xC3\xAFve ", "\xD0\x9F\xD1\x80\xD0\xB8 ",
    };
    char *s = malloc(bytes + 64);
    size_t len = 0;
    unsigned r = 12345;
    while (len < bytes) {
        r = r * 1103515245u + 12345u;
        const char *p = parts[(r >> 16) % (sizeof parts / sizeof parts[0])];
        memcpy(s + len, p, strlen(p));
        len += strlen(p);
    }
    s[len] = 0;
    *n = len;
    return s;
}

static void word_cuts_change_no_ids(void **state)
{
    (void)state;
    /* The same tokenizer with one more token, "q▁q", that no merge makes:
     * it holds "▁" after another character, so no piece is cut there, and
     * the ids must be the same. */
    size_t jn;
    char *json = read_all(TEST_TOKENIZER_FIXTURES "/sp_legacy.json", &jn);
    char *at = strstr(json, "\"vocab\":{");
    assert_non_null(at);
    at += strlen("\"vocab\":{");
    moe_tokenizer *cut = test_tokenizer_fixture("sp_legacy");
    char extra[64];
    int extra_len = snprintf(extra, sizeof extra, "\"q\xE2\x96\x81q\":%d,", moe_tokenizer_vocab_size(cut));
    char *json2 = malloc(jn + (size_t)extra_len + 1);
    size_t head = (size_t)(at - json);
    memcpy(json2, json, head);
    memcpy(json2 + head, extra, (size_t)extra_len);
    memcpy(json2 + head + (size_t)extra_len, at, jn - head + 1);
    moe_tokenizer *whole;
    assert_int_equal(moe_tokenizer_load_json(json2, jn + (size_t)extra_len, "uncut.json", &whole), MOE_OK);

    size_t n;
    char *text = mixed_text(200000, &n);
    int32_t *a, *b;
    int na, nb;
    double t0 = now_s();
    assert_int_equal(moe_tokenizer_encode(cut, text, n, 1, &a, &na), MOE_OK);
    double t1 = now_s();
    assert_int_equal(moe_tokenizer_encode(whole, text, n, 1, &b, &nb), MOE_OK);
    double t2 = now_s();
    fprintf(stderr, "%zu bytes as one piece: %d ids; cut before \"\xE2\x96\x81\" %.1f ms, whole (heap) %.1f ms\n", n,
            na, 1e3 * (t1 - t0), 1e3 * (t2 - t1));
    assert_true((size_t)na > n / 8);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, sizeof *a * (size_t)na);
    /* well under a second either way (generous: sanitizers, a busy machine) */
    assert_true(t1 - t0 < 1.0);
    assert_true(t2 - t1 < 1.0);
    /* and it decodes back to the text ("<s>" skipped, the prepended space
     * stripped), but for "▁" in the text, which decodes as a space */
    char *back;
    size_t len, m = 0;
    assert_int_equal(moe_tokenizer_decode(cut, a, na, MOE_TOKENIZER_SKIP_SPECIAL, &back, &len), MOE_OK);
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && !memcmp(text + i, "\xE2\x96\x81", 3)) text[i + 2] = ' ', i += 2;
        text[m++] = text[i];
    }
    assert_int_equal(len, m);
    assert_memory_equal(back, text, m);
    free(back);
    free(a);
    free(b);
    free(text);
    free(json);
    free(json2);
    moe_tokenizer_free(cut);
    moe_tokenizer_free(whole);
}

/* ---- encoding details ---- */

static int32_t first_id(moe_tokenizer *t, const char *text, int k)
{
    int32_t *ids;
    int n;
    assert_int_equal(moe_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), MOE_OK);
    assert_true(n > k);
    int32_t id = ids[k];
    free(ids);
    return id;
}

static void metaspace_first_only_at_the_start_of_the_text(void **state)
{
    (void)state;
    /* "first": "hi" gets "▁", but not after an added token; "always": both */
    moe_tokenizer *t = test_tokenizer_fixture("sp_first");
    const char *p = moe_tokenizer_piece(t, first_id(t, "hi", 0), NULL);
    assert_memory_equal(p, "\xE2\x96\x81", 3);
    assert_string_equal(moe_tokenizer_piece(t, first_id(t, "[INST]hi", 0), NULL), "[INST]");
    p = moe_tokenizer_piece(t, first_id(t, "[INST]hi", 1), NULL);
    assert_true(memcmp(p, "\xE2\x96\x81", 3) != 0);
    moe_tokenizer_free(t);
    t = test_tokenizer_fixture("sp_always");
    p = moe_tokenizer_piece(t, first_id(t, "<s>hi", 1), NULL);
    assert_memory_equal(p, "\xE2\x96\x81", 3);
    moe_tokenizer_free(t);
}

static void normalized_added_token_piece_is_its_normalized_form(void **state)
{
    (void)state;
    /* As the reference's id_to_token: the normalizer's output, which the
     * decoder reads ("▁Hello▁world" decodes to " Hello world"). */
    moe_tokenizer *t = test_tokenizer_fixture("sp_legacy");
    int32_t id = moe_tokenizer_token_id(t, "Hello world");
    assert_true(id >= 0);
    assert_string_equal(moe_tokenizer_piece(t, id, NULL), "\xE2\x96\x81Hello\xE2\x96\x81world");
    assert_false(moe_tokenizer_is_special(t, id));
    assert_int_equal(first_id(t, "Hello world", 0), id);
    moe_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decoder_steps_as_the_reference_runs_them),
        cmocka_unit_test(stream_hands_out_whole_characters),
        cmocka_unit_test(word_cuts_change_no_ids),
        cmocka_unit_test(metaspace_first_only_at_the_start_of_the_text),
        cmocka_unit_test(normalized_added_token_piece_is_its_normalized_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
