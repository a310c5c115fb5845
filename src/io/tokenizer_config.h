/* io/tokenizer_config.h — the parts of a checkpoint's tokenizer_config.json
 * that chat needs: the chat template (Jinja source, kept as text; or
 * DIR/chat_template.jinja, which newer transformers write instead and which
 * wins when both are there) and the bos_token / eos_token strings the
 * template refers to. */
#ifndef MOE_IO_TOKENIZER_CONFIG_H
#define MOE_IO_TOKENIZER_CONFIG_H

#include "moe/status.h"

typedef struct {
    int found;              /* tokenizer_config.json exists */
    char *chat_template;    /* NULL when there is none */
    char *template_origin;  /* the file the template came from (for messages) */
    char *bos_token;        /* NULL when not given (or null) */
    char *eos_token;
} moe_tokenizer_config;

/* DIR/tokenizer_config.json (and DIR/chat_template.jinja). Missing files
 * are MOE_OK with found 0 / chat_template NULL. Errors name the file and
 * field: not JSON, chat_template not a string (nor a list of {name,
 * template} with a "default"), a token neither a string nor {"content": …}. */
moe_status moe_tokenizer_config_load_dir(const char *dir, moe_tokenizer_config *out);

/* tokenizer_config.json text; `origin` names it in messages. */
moe_status moe_tokenizer_config_parse(const char *json, const char *origin, moe_tokenizer_config *out);

void moe_tokenizer_config_free(moe_tokenizer_config *c);

#endif
