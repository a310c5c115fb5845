/* tests/fuzz/fuzz_tokenizer_encode.c — encoding arbitrary bytes (invalid
 * UTF-8 too) and decoding arbitrary ids with fixed tokenizers: every style
 * of the tokenizer fixtures (byte-level BPE of GPT-2, NeoX, cl100k, o200k,
 * Llama-3, Qwen2; SentencePiece-style with byte fallback; normalizers
 * NFC/NFKC/NFKD, Replace, Prepend; Split, Digits, Metaspace).
 *
 * Input: byte 0 picks the tokenizer, byte 1 what to do (bit 0: encode
 * with the post-processor's tokens, bit 1: decode the rest as 16-bit ids
 * instead of encoding it, bit 2: skip special tokens when decoding); the
 * rest is the text or the ids. Checks: ids inside the vocabulary; decoding
 * gives valid UTF-8 and the stream gives the same text (byte-level
 * decoders); byte-level tokenizers without a normalizer give back the
 * text they encoded when it was valid UTF-8. */
#include <stdio.h>

#include "fuzz_tokenizer_common.h"

#ifndef MOE_SOURCE_DIR
#define MOE_SOURCE_DIR "."
#endif

static const struct {
    const char *file;
    int round_trip; /* byte-level, no normalizer: decode(encode(text)) == text */
    int stream_equal;
} TOKENIZERS[] = {
    { "gpt2.json", 1, 1 },        { "cl100k.json", 1, 1 },         { "o200k.json", 1, 1 },
    { "llama3.json", 1, 1 },      { "neox.json", 0, 1 },           { "qwen2.json", 0, 1 },
    { "roberta.json", 0, 1 },     { "digits.json", 0, 1 },         { "splits.json", 0, 1 },
    { "unk.json", 0, 0 },         { "bytefallback.json", 0, 0 },   { "sp_legacy.json", 0, 0 },
    { "sp_gemma.json", 0, 0 },    { "sp_first.json", 0, 0 },       { "sp_first_split.json", 0, 0 },
    { "sp_always.json", 0, 0 },   { "sp_never.json", 0, 0 },       { "sp_add_prefix_space.json", 0, 0 },
};
enum { N_TOKENIZERS = sizeof TOKENIZERS / sizeof TOKENIZERS[0] };
static moe_tokenizer *tok[N_TOKENIZERS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    for (int i = 0; i < N_TOKENIZERS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tests/fixtures/tokenizers/%s", MOE_SOURCE_DIR, TOKENIZERS[i].file);
        if (moe_tokenizer_load(path, &tok[i]) != MOE_OK) {
            fprintf(stderr, "fuzz_tokenizer_encode: %s\n", moe_last_error());
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    int which = data[0] % N_TOKENIZERS, mode = data[1];
    moe_tokenizer *t = tok[which];
    int vocab = moe_tokenizer_vocab_size(t), flags = mode & 4 ? MOE_TOKENIZER_SKIP_SPECIAL : 0;
    data += 2, size -= 2;
    size_t len;
    if (mode & 2) {
        /* arbitrary ids, some outside the vocabulary: they decode to nothing */
        int n = (int)(size / 2);
        int32_t *ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
        for (int i = 0; i < n; i++) ids[i] = (int32_t)(data[2 * i] | data[2 * i + 1] << 8) - 64;
        free(fuzz_decode_checked(t, ids, n, flags, TOKENIZERS[which].stream_equal, &len));
        free(ids);
        return 0;
    }
    int32_t *ids = NULL;
    int n = 0;
    if (moe_tokenizer_encode(t, (const char *)data, size, mode & 1, &ids, &n) != MOE_OK) return 0;
    for (int i = 0; i < n; i++) fuzz_check(ids[i] >= 0 && ids[i] < vocab, "encode gives ids inside the vocabulary");
    char *text = fuzz_decode_checked(t, ids, n, flags, TOKENIZERS[which].stream_equal, &len);
    if (text && TOKENIZERS[which].round_trip && !(mode & 1) && !flags && fuzz_utf8_valid((const char *)data, size))
        fuzz_check(len == size && !memcmp(text, data, size), "decode(encode(text)) is the text");
    free(text);
    free(ids);
    return 0;
}
