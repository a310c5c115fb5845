/* tests/fuzz/fuzz_tokenizer_common.h — checks both tokenizer targets run on
 * a loaded tokenizer: encoding gives ids the tokenizer names, and decoding
 * them at once or token by token gives valid UTF-8, the stream's pieces
 * adding up to the whole where the decoder allows it. */
#ifndef MOE_TESTS_FUZZ_TOKENIZER_COMMON_H
#define MOE_TESTS_FUZZ_TOKENIZER_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "moe/tokenizer.h"

/* 1: valid UTF-8 (no surrogates, nothing over U+10FFFF, shortest forms) */
static int fuzz_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!k || i + k > n) return 0;
        unsigned cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
        for (size_t j = 1; j < k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i + j] & 0x3F);
        }
        static const unsigned MIN[5] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (cp < MIN[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += k;
    }
    return 1;
}

/* Decodes ids whole and as a stream; returns the whole text (malloc'd) or
 * NULL when decoding refused them. `stream_equal`: the stream must give the
 * same text (decoders without byte fallback). */
static char *fuzz_decode_checked(const moe_tokenizer *t, const int32_t *ids, int n, int flags, int stream_equal,
                                 size_t *len)
{
    char *text = NULL;
    if (moe_tokenizer_decode(t, ids, n, flags, &text, len) != MOE_OK) return NULL;
    /* (a NUL inside is the text's own: byte fallback decodes <0x00> to it) */
    fuzz_check(text && text[*len] == '\0', "decode gives a NUL-terminated text of its length");
    fuzz_check(fuzz_utf8_valid(text, *len), "decode gives valid UTF-8");
    moe_tokenizer_stream *s = NULL;
    if (moe_tokenizer_stream_create(t, flags, &s) != MOE_OK) return text;
    char *joined = malloc(1);
    size_t jn = 0;
    int ok = 1;
    for (int i = 0; i <= n && ok; i++) {
        const char *piece;
        size_t pn;
        ok = (i < n ? moe_tokenizer_stream_put(s, ids[i], &piece, &pn) : moe_tokenizer_stream_flush(s, &piece, &pn)) ==
             MOE_OK;
        if (!ok) break;
        fuzz_check(fuzz_utf8_valid(piece, pn), "the stream gives whole UTF-8 characters");
        joined = realloc(joined, jn + pn + 1);
        memcpy(joined + jn, piece, pn);
        jn += pn;
    }
    if (ok && stream_equal) fuzz_check(jn == *len && !memcmp(joined, text, jn), "the stream adds up to the decode");
    free(joined);
    moe_tokenizer_stream_free(s);
    return text;
}

#endif
