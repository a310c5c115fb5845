/* tests/support/tokenizer_fixture.c — see tokenizer_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_fixture.h"

moe_tokenizer *test_tokenizer_fixture(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, TEST_TOKENIZER_FIXTURES "/%s.json", name);
    moe_tokenizer *t = NULL;
    moe_status st = moe_tokenizer_load(path, &t);
    if (st != MOE_OK) fprintf(stderr, "load %s: %s\n", name, moe_last_error());
    assert_int_equal(st, MOE_OK);
    return t;
}

int test_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned b = u[i];
        size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
        if (!len || i + len > n || (len == 2 && b < 0xC2)) return 0;
        for (size_t k = 1; k < len; k++)
            if ((u[i + k] & 0xC0) != 0x80) return 0;
        i += len;
    }
    return 1;
}

char *test_tokenizer_stream(const moe_tokenizer *t, const int32_t *ids, int n, int flags, size_t *len)
{
    moe_tokenizer_stream *s;
    assert_int_equal(moe_tokenizer_stream_create(t, flags, &s), MOE_OK);
    size_t cap = 64, total = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    for (int i = 0; i <= n; i++) {
        const char *piece;
        size_t k;
        if (i < n) assert_int_equal(moe_tokenizer_stream_put(s, ids[i], &piece, &k), MOE_OK);
        else assert_int_equal(moe_tokenizer_stream_flush(s, &piece, &k), MOE_OK);
        assert_true(test_utf8_valid(piece, k));
        assert_int_equal(piece[k], 0);
        while (total + k + 1 > cap) all = realloc(all, cap *= 2);
        memcpy(all + total, piece, k);
        total += k;
    }
    all[total] = 0;
    moe_tokenizer_stream_free(s);
    *len = total;
    return all;
}
