/* tests/support/tokenizer_fixture.h — what the tokenizer tests share: the
 * reference fixtures of tests/fixtures/tokenizers loaded by name, and a
 * stream decode that checks every piece it hands out. */
#ifndef MOE_TESTS_TOKENIZER_FIXTURE_H
#define MOE_TESTS_TOKENIZER_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "moe/tokenizer.h"

#define TEST_TOKENIZER_FIXTURES MOE_SOURCE_DIR "/tests/fixtures/tokenizers"

/* tests/fixtures/tokenizers/NAME.json; the test fails if it does not load. */
moe_tokenizer *test_tokenizer_fixture(const char *name);

/* 1 if s[0..n) is well-formed UTF-8. */
int test_utf8_valid(const char *s, size_t n);

/* The ids streamed one at a time, then a flush; every piece must be whole
 * UTF-8 and NUL-terminated. Returns the pieces joined (malloc'd,
 * NUL-terminated), their length in *len. */
char *test_tokenizer_stream(const moe_tokenizer *t, const int32_t *ids, int n, int flags, size_t *len);

#endif
