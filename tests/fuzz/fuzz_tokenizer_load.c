/* tests/fuzz/fuzz_tokenizer_load.c — a tokenizer.json: the model's vocab and
 * merges, added tokens, normalizers, pre-tokenizers (their regexes too),
 * post-processors and decoders. A tokenizer that loads is then used on a
 * fixed text: its ids must name tokens, and decoding them must give valid
 * UTF-8 whole and as a stream. */
#include "fuzz_tokenizer_common.h"

static const char TEXT[] = "Hello world! It's 2024: 12345 caf\xC3\xA9 \xE2\x96\x81x \xE6\x97\xA5\xE6\x9C\xAC "
                           "<|endoftext|> <s>[INST] \xF0\x9F\x98\x80  \t\n end";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    moe_tokenizer *t = NULL;
    if (moe_tokenizer_load_json((const char *)data, size, "tokenizer.json", &t) != MOE_OK) return 0;
    int vocab = moe_tokenizer_vocab_size(t);
    fuzz_check(vocab >= 0, "a vocabulary size");
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        int n = 0;
        if (moe_tokenizer_encode(t, TEXT, sizeof TEXT - 1, special, &ids, &n) != MOE_OK) continue;
        for (int i = 0; i < n; i++) {
            fuzz_check(ids[i] >= 0 && ids[i] < vocab, "encode gives ids inside the vocabulary");
            fuzz_check(moe_tokenizer_piece(t, ids[i], NULL) != NULL, "encode gives ids that name a token");
        }
        size_t len;
        free(fuzz_decode_checked(t, ids, n, special ? MOE_TOKENIZER_SKIP_SPECIAL : 0, 0, &len));
        free(ids);
    }
    for (int32_t id = 0; id < vocab && id < 64; id++) {
        size_t len;
        const char *piece = moe_tokenizer_piece(t, id, &len);
        if (piece) fuzz_check(strlen(piece) <= len, "a piece's length");
        if (piece && strlen(piece) == len) fuzz_check(moe_tokenizer_token_id(t, piece) >= 0, "a piece has an id");
    }
    int32_t ends[2] = { moe_tokenizer_bos_id(t), moe_tokenizer_eos_id(t) };
    for (int i = 0; i < 2; i++) fuzz_check(ends[i] < vocab, "BOS and EOS are tokens");
    moe_tokenizer_free(t);
    return 0;
}
