/* engine/chat_template.h — turning a conversation into the text an
 * instruction-tuned model was trained on, without a Jinja engine.
 *
 * Three template families are known, each rendered exactly as its Jinja
 * source renders it (transformers' apply_chat_template(..., tokenize=False)):
 *
 *   tulu    OLMoE / OLMo-2 / Tulu instruct:
 *           {{ bos_token }}<|system|>\nS\n<|user|>\nU\n<|assistant|>\nA<eos>\n ...
 *           (an assistant message that is last ends at eos_token, with no \n)
 *   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n
 *   llama3  Meta-Llama-3-Instruct: bos_token, then for each message
 *           <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT|trim<|eot_id|>,
 *           then <|start_header_id|>assistant<|end_header_id|>\n\n
 *
 * A checkpoint's template (tokenizer_config.json's chat_template) is
 * recognised by substrings that only its family writes; a template that
 * writes bos_token gets it first. Variants with more logic are rendered as
 * their family's base form: Qwen-style ChatML templates that insert a
 * default system message when none is given, and Llama-3.1's date and tools
 * preamble, are not reproduced (pass --system to say the same).
 *
 * For a conversation kept in a KV cache, moe_chat_template_turn gives the
 * text of each new user turn so that the texts of the turns joined with the
 * assistant replies equal the rendering of the whole conversation. */
#ifndef MOE_ENGINE_CHAT_TEMPLATE_H
#define MOE_ENGINE_CHAT_TEMPLATE_H

#include "moe/status.h"

typedef enum { MOE_CHAT_TULU, MOE_CHAT_CHATML, MOE_CHAT_LLAMA3 } moe_chat_format;

typedef struct {
    moe_chat_format format;
    int with_bos;          /* the template writes bos_token at the start */
    const char *bos_token; /* "" when the checkpoint names none */
    const char *eos_token; /* tulu closes assistant turns with it */
} moe_chat_template;

typedef struct {
    const char *role;      /* "system", "user", "assistant" (chatml and llama3 take any) */
    const char *content;
} moe_chat_message;

/* "tulu", "chatml", "llama3" → the format; MOE_ERR_INVALID_ARG naming the
 * known names otherwise. */
moe_status moe_chat_format_from_name(const char *name, moe_chat_format *out);
const char *moe_chat_format_name(moe_chat_format f);

/* Recognises Jinja template source; MOE_ERR_UNSUPPORTED when it is none of
 * the three families. *with_bos: whether it writes bos_token. */
moe_status moe_chat_format_detect(const char *jinja, moe_chat_format *out, int *with_bos);

/* Whether the family's reference template writes bos_token (tulu and
 * llama3 do, chatml does not): for a format chosen by name. */
int moe_chat_format_default_bos(moe_chat_format f);

/* The whole conversation (*out malloc'd, free() it), with the generation
 * prompt after the last message when add_generation_prompt. */
moe_status moe_chat_template_render(const moe_chat_template *t, const moe_chat_message *msgs, int n,
                                    int add_generation_prompt, char **out);

/* One new user turn of a conversation, ending with the generation prompt
 * (*out malloc'd). first: the conversation starts here (bos_token and the
 * system message, if `system` is not NULL, come first); otherwise an
 * assistant reply precedes it and the text that closes that reply in the
 * rendered history comes first (tulu: eos_token "\n"; chatml:
 * "<|im_end|>\n"; llama3: "<|eot_id|>"). */
moe_status moe_chat_template_turn(const moe_chat_template *t, int first, const char *system, const char *user,
                                  char **out);

/* The token that ends an assistant turn: tulu's eos_token, "<|im_end|>",
 * "<|eot_id|>". Generation stops at it. */
const char *moe_chat_template_end_of_turn(const moe_chat_template *t);

#endif
