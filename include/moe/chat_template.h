/* moe/chat_template.h — turning a conversation into the text an
 * instruction-tuned model was trained on, without a Jinja engine.
 *
 * The template families below are each rendered exactly as their Jinja
 * source renders them (transformers' apply_chat_template(...,
 * tokenize=False), jinja2 with trim_blocks and lstrip_blocks), including
 * the errors their raise_exception() calls raise; messages are role and
 * content only (no tools, tool calls or reasoning_content fields):
 *
 *   tulu    OLMoE / OLMo-2 / Tulu instruct:
 *           {{ bos_token }}<|system|>\nS\n<|user|>\nU\n<|assistant|>\nA<eos>\n ...
 *           (an assistant message that is last ends at eos_token, with no \n)
 *   chatml  <|im_start|>ROLE\nCONTENT<|im_end|>\n ... <|im_start|>assistant\n;
 *           Qwen1.5 / Qwen2 / Qwen2.5 write a default system message when
 *           the conversation has none (default_system below)
 *   qwen3   Qwen3's ChatML with reasoning: the system message only when
 *           given; an assistant message after the last user query (a user
 *           message that is not a <tool_response>) is written with its
 *           <think>\nREASONING\n</think>\n\n block (an empty one when it is
 *           the last message), one before it without (the reasoning of
 *           earlier turns is dropped); tool messages as
 *           <|im_start|>user\n<tool_response>\n...\n</tool_response>;
 *           enable_thinking=false (no_think below) adds
 *           <think>\n\n</think>\n\n after the generation prompt
 *   llama3  Meta-Llama-3-Instruct: bos_token, then for each message
 *           <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT|trim<|eot_id|>,
 *           then <|start_header_id|>assistant<|end_header_id|>\n\n
 *   llama2  Llama-2-chat: per user message bos_token[INST] U|trim [/INST],
 *           per assistant message " A|trim " eos_token; a system message
 *           goes first into the first user message as <<SYS>>\nS\n<</SYS>>\n\n
 *   mistral Mixtral-8x7B-Instruct-v0.1's first template:
 *           bos_token[INST] U [/INST]A</s>[INST] U2 [/INST]; no system message
 *   mistral-v1  its later one (Mistral's v1 tokenizer): bos_token [INST] U
 *           [/INST] A</s>, a system message before the first user message
 *           (" [INST] S\n\nU [/INST]")
 *   mistral-v3  Mistral-7B-Instruct-v0.3's: bos_token[INST] U[/INST] A|trim</s>,
 *           a system message before the LAST user message (and dropped when
 *           the conversation ends with an assistant message)
 *   mistral-v3-tekken  Mistral-Nemo's: the same with no spaces and no trim:
 *           [INST]U[/INST]A</s>
 *   mistral-v7  Mistral-Large-2411's: bos_token, then [INST] U[/INST],
 *           " A</s>" and [SYSTEM_PROMPT] S[/SYSTEM_PROMPT] where each stands
 * The [INST] templates have no generation prompt, and all but v7 refuse
 * conversations whose roles do not alternate user/assistant (after an
 * optional system message); moe refuses them too, with the template's words.
 *
 * A checkpoint's template (tokenizer_config.json's chat_template) is
 * recognised by the expressions that decide what it writes, compared with
 * the whitespace between Jinja tokens ignored; a template that writes
 * bos_token gets it. A template of these families that none of the forms
 * above matches (a ChatML one that writes <think> other than Qwen3's, a
 * default system message moe does not know, Mistral's v7 with a dated
 * default system message) is refused rather than rendered in another's
 * form. Llama-3.1's date and tools preamble is not reproduced (its header
 * and turns are Llama-3's).
 *
 * A conversation kept in a KV cache: moe_chat_template_turn gives the text
 * of each new user turn, so that the texts of the turns joined with the
 * assistant replies are the rendering of the whole conversation. Where a
 * template renders the history differently once a later message is added,
 * moe keeps the tokens in the cache as they were (as llama.cpp does):
 *   - qwen3: the reasoning of earlier replies stays in the cache (the
 *     template drops it from turns before the last query), and so does the
 *     empty think block that no_think put after each generation prompt;
 *   - mistral-v3 and -tekken: the system message stays where the first turn
 *     put it, before the first user message (the template moves it to the
 *     last one).
 * Each turn's text is what the template writes after the previous reply's
 * content, rendered as that reply followed by the new user message. */
#ifndef MOE_CHAT_TEMPLATE_H
#define MOE_CHAT_TEMPLATE_H

#include "moe/status.h"
#include "moe/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    MOE_CHAT_TULU,
    MOE_CHAT_CHATML,
    MOE_CHAT_LLAMA3,
    MOE_CHAT_QWEN3,
    MOE_CHAT_LLAMA2,
    MOE_CHAT_MISTRAL,
    MOE_CHAT_MISTRAL_V1,
    MOE_CHAT_MISTRAL_V3,
    MOE_CHAT_MISTRAL_V3_TEKKEN,
    MOE_CHAT_MISTRAL_V7,
} moe_chat_format;

/* The names --chat-template takes, in the order of moe_chat_format. */
#define MOE_CHAT_FORMAT_NAMES \
    "tulu, chatml, llama3, qwen3, llama2, mistral, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7"

typedef struct {
    moe_chat_format format;
    int with_bos;               /* the template writes bos_token */
    const char *bos_token;      /* "" when the checkpoint names none */
    const char *eos_token;      /* tulu and the [INST] families close assistant turns with it */
    const char *default_system; /* chatml: the system message written when the conversation has none
                                   (Qwen1.5 / Qwen2 / Qwen2.5); NULL: none */
    int no_think;               /* qwen3: render with enable_thinking=false (the template's default,
                                   enable_thinking undefined, is to think; true renders the same) */
} moe_chat_template;

typedef struct {
    const char *role;      /* "system", "user", "assistant" (some families take others: see above) */
    const char *content;
} moe_chat_message;

/* A name of MOE_CHAT_FORMAT_NAMES → the format; MOE_ERR_INVALID_ARG
 * naming the known names otherwise. */
moe_status moe_chat_format_from_name(const char *name, moe_chat_format *out);
const char *moe_chat_format_name(moe_chat_format f);

/* Whether the family's reference template writes bos_token (all but
 * chatml and qwen3 do): for a format chosen by name. */
int moe_chat_format_default_bos(moe_chat_format f);

/* Recognises Jinja template source: sets t->format, t->with_bos and
 * t->default_system (its other fields are left as they are).
 * MOE_ERR_UNSUPPORTED, saying what was seen, when it is none of the
 * families' forms. */
moe_status moe_chat_template_detect(const char *jinja, moe_chat_template *t);

/* The whole conversation (*out malloc'd, free() it), with the generation
 * prompt after the last message when add_generation_prompt. A conversation
 * the template refuses is MOE_ERR_INVALID_ARG with the template's message
 * and the message at fault (so is an empty one, for the templates that
 * read messages[0]). */
moe_status moe_chat_template_render(const moe_chat_template *t, const moe_chat_message *msgs, int n,
                                    int add_generation_prompt, char **out);

/* One new user turn of a conversation, ending with the generation prompt
 * (*out malloc'd). first: the conversation starts here (the system message,
 * if `system` is not NULL, comes first: the rendering of the two);
 * otherwise an assistant reply precedes it, and the text that closes that
 * reply in the rendered history comes first (tulu: eos_token "\n"; chatml
 * and qwen3: "<|im_end|>\n"; llama3: "<|eot_id|>"; llama2: " " eos_token;
 * mistral: eos_token). `system` is used only when first. The replies are
 * what the model wrote after the generation prompt: where a template writes
 * " " before an assistant's content (llama2, mistral-v1, -v3, -v7), that
 * space begins the reply. */
moe_status moe_chat_template_turn(const moe_chat_template *t, int first, const char *system, const char *user,
                                  char **out);

/* The chat template of checkpoint DIR, ready to render: the one
 * DIR/tokenizer_config.json holds (or DIR/chat_template.jinja, which wins)
 * recognised, or, with format ≥ 0, that moe_chat_format instead (writing
 * bos_token where the family's reference template does). bos_token and
 * eos_token are tokenizer_config.json's, else the pieces of bos_id and
 * eos_id in tok (-1: none; ""). *out is malloc'd with its strings: free it
 * with moe_chat_template_free; set no_think on it as wanted. Errors: the
 * files' (naming file and field); MOE_ERR_FORMAT "DIR has no chat template
 * (DIR/tokenizer_config.json does not exist)" (or "has no chat_template");
 * MOE_ERR_UNSUPPORTED naming the file when its template is none of the
 * families above. */
moe_status moe_chat_template_load_dir(const char *dir, int format, const moe_tokenizer *tok, int bos_id,
                                      int eos_id, moe_chat_template **out);
void moe_chat_template_free(moe_chat_template *t);

/* The token that ends an assistant turn: tulu's and the [INST] families'
 * eos_token, "<|im_end|>", "<|eot_id|>". Generation stops at it. */
const char *moe_chat_template_end_of_turn(const moe_chat_template *t);

#ifdef __cplusplus
}
#endif

#endif
