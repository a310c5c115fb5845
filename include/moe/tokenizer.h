/* moe/tokenizer.h — text to token ids and back, read from a checkpoint's
 * Hugging Face `tokenizer.json`: byte-level BPE (GPT-2, GPT-NeoX / OLMoE,
 * OLMo-2 / cl100k, Llama-3, Qwen2 / Qwen3 and the like) and SentencePiece-
 * style BPE with byte fallback (Llama-2, Mistral / Mixtral, Gemma).
 *
 *   moe_tokenizer_load(path)        a tokenizer.json file
 *   moe_tokenizer_load_dir(dir)     DIR/tokenizer.json of a checkpoint
 *   moe_tokenizer_encode(t, text)   ids, as `tokenizers`' encode gives them
 *   moe_tokenizer_decode(t, ids)    text, as `tokenizers`' decode gives it
 *   moe_tokenizer_stream_*          decoding token by token, complete UTF-8 only
 *
 * What is read: model BPE (vocab, merges as "a b" strings or ["a", "b"]
 * pairs, ignore_merges, byte_fallback, unk_token, fuse_unk); normalizers
 * NFC, NFD, NFKC, NFKD, Prepend, Replace and Sequence; pre-tokenizers
 * ByteLevel, Split (regex or string, every behavior, invert), Digits,
 * Metaspace (prepend_scheme always / first / never or the older
 * add_prefix_space, split) and Sequence (or none: the whole text one
 * piece); added tokens (special or not, normalized or not, lstrip, rstrip,
 * single_word); post-processors TemplateProcessing, ByteLevel,
 * RobertaProcessing, BertProcessing and Sequence; decoders ByteLevel,
 * ByteFallback, Fuse, Replace, Strip, Metaspace and Sequence (or none). Anything else is an MOE_ERR_UNSUPPORTED error that
 * names the component by its "type" in the file. `truncation` and `padding`
 * are ignored: the engine decides how many tokens fit.
 *
 * Text is UTF-8. Bytes that are not valid UTF-8 are read the way Python's
 * bytes.decode("utf-8", errors="replace") reads them (each maximal invalid
 * subsequence becomes U+FFFD) before encoding: that is what a caller of the
 * reference, which accepts only valid strings, hands it. Decoding returns
 * UTF-8; byte sequences that do not form characters come out as U+FFFD, as
 * in the reference.
 *
 * Threads: encoding uses a cache and scratch space kept in the tokenizer, so
 * one tokenizer encodes on one thread at a time; decoding, streams and the
 * lookups only read it and may run anywhere. */
#ifndef MOE_TOKENIZER_H
#define MOE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_tokenizer moe_tokenizer;

/* Reads a tokenizer.json. Errors: MOE_ERR_IO (cannot read), MOE_ERR_FORMAT
 * (not JSON, a field missing or of the wrong type, a merge naming a token not
 * in the vocabulary, a regex that does not compile), MOE_ERR_UNSUPPORTED (a
 * component moe does not implement, named by its type). */
moe_status moe_tokenizer_load(const char *path, moe_tokenizer **out);

/* DIR/tokenizer.json. */
moe_status moe_tokenizer_load_dir(const char *dir, moe_tokenizer **out);

/* The same from JSON text in memory; `origin` names it in messages. */
moe_status moe_tokenizer_load_json(const char *json, size_t len, const char *origin, moe_tokenizer **out);

void moe_tokenizer_free(moe_tokenizer *t);

/* Encodes `len` bytes of `text` into *ids (malloc'd, free() it; NULL when
 * *n_ids is 0). With add_special non-zero the post-processor's tokens are
 * added (BOS and the like), as `encode(text, add_special_tokens=True)` does.
 * Added tokens written in the text (special or not) are always recognised. */
moe_status moe_tokenizer_encode(moe_tokenizer *t, const char *text, size_t len, int add_special,
                                int32_t **ids, int *n_ids);

enum {
    MOE_TOKENIZER_SKIP_SPECIAL = 1   /* decode: leave special tokens out */
};

/* Decodes ids into *text (malloc'd, NUL-terminated, free() it; *len
 * without the NUL). Ids that name no token decode to nothing, as in the
 * reference; flags: MOE_TOKENIZER_SKIP_SPECIAL. */
moe_status moe_tokenizer_decode(const moe_tokenizer *t, const int32_t *ids, int n_ids, int flags,
                                char **text, size_t *len);

/* Streaming decode: feed ids one at a time and get back the text that is
 * complete so far — whole UTF-8 characters only; the bytes of a character
 * split across tokens are held until it is whole. The concatenated output
 * of puts and the final flush equals moe_tokenizer_decode of the same ids
 * (with ByteFallback decoders, except where a run of byte tokens is not
 * valid UTF-8: the stream replaces each invalid part, the reference every
 * byte of the run; and a decoder Replace whose pattern spans several
 * characters, placed after Fuse, misses matches across tokens). Decoders
 * that strip trailing characters (Strip with a stop) hold them back until
 * what follows shows whether they end the text. The returned text is valid
 * until the next call on the stream and is NUL-terminated. */
typedef struct moe_tokenizer_stream moe_tokenizer_stream;

moe_status moe_tokenizer_stream_create(const moe_tokenizer *t, int flags, moe_tokenizer_stream **out);
moe_status moe_tokenizer_stream_put(moe_tokenizer_stream *s, int32_t id, const char **text, size_t *len);
/* What is still held (an incomplete character) comes out as U+FFFD; the
 * stream then starts afresh. */
moe_status moe_tokenizer_stream_flush(moe_tokenizer_stream *s, const char **text, size_t *len);
void moe_tokenizer_stream_free(moe_tokenizer_stream *s);

/* One more than the largest id (model vocabulary and added tokens). */
int moe_tokenizer_vocab_size(const moe_tokenizer *t);

/* The token's string as the file writes it ("Ġhello", "<|endoftext|>",
 * "▁hello"; an added token marked normalized: its normalized form, as the
 * reference's id_to_token gives it), NUL-terminated, its length in *len if
 * len is not NULL; NULL for an id that names no token. */
const char *moe_tokenizer_piece(const moe_tokenizer *t, int32_t id, size_t *len);

/* The id of a token string (added tokens first, then the model's
 * vocabulary); -1 if there is none. */
int32_t moe_tokenizer_token_id(const moe_tokenizer *t, const char *piece);

/* 1 if id is a special added token ("special": true in the file). */
int moe_tokenizer_is_special(const moe_tokenizer *t, int32_t id);

/* The token the post-processor puts first (BOS) and last (EOS) when it adds
 * special tokens to a single sequence; -1 where it adds none there. */
int32_t moe_tokenizer_bos_id(const moe_tokenizer *t);
int32_t moe_tokenizer_eos_id(const moe_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif
