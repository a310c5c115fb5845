/* server/request.h — the OpenAI request bodies `moe serve` takes, read and
 * checked into plain fields, and the OpenAI error object a bad one gets.
 *
 * Nothing here touches the model: what is checked is the JSON itself (its
 * syntax, UTF-8, each field's type and range, the features moe does not
 * have). Fields the API defines and moe ignores harmlessly (user,
 * presence_penalty 0, ...) pass; those whose meaning moe cannot honour
 * (n > 1, logprobs, tools, echo, ...) are refused naming the field, rather
 * than answered as if they had been. */
#ifndef MOE_SERVER_REQUEST_H
#define MOE_SERVER_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include "moe/chat_template.h"

typedef enum { MOE_API_CHAT, MOE_API_COMPLETION } moe_api_kind;

/* What an error response says: the HTTP status and the fields of
 * {"error": {"message", "type", "param", "code"}}. */
typedef struct {
    int status;
    const char *type;       /* "invalid_request_error", "authentication_error", "server_error", ... */
    const char *code;       /* NULL, or "invalid_api_key", "model_not_found", "context_length_exceeded", ... */
    char param[64];         /* the field at fault; "" for none */
    char message[512];
} moe_api_error;

void moe_api_error_set(moe_api_error *e, int status, const char *type, const char *code, const char *param,
                       const char *fmt, ...) __attribute__((format(printf, 6, 7)));

enum { MOE_API_MAX_STOPS = 4 };   /* as the OpenAI API allows */

typedef struct {
    moe_api_kind kind;
    char *model;                    /* NULL when not given */
    moe_chat_message *messages;     /* chat: role and content, strings owned here */
    int n_messages;
    char *prompt_text;              /* completions: the prompt as text (or NULL) */
    int32_t *prompt_ids;            /* completions: the prompt as token ids (or NULL) */
    int n_prompt_ids;
    int max_tokens;                 /* max_tokens or max_completion_tokens; -1: not given */
    float temperature;              /* default 1, as the API's */
    float top_p;                    /* default 1 */
    int top_k;                      /* extension (vLLM, llama-server): default 0, off */
    float min_p;                    /* extension: default 0, off */
    int has_seed;
    uint64_t seed;
    char *stop[MOE_API_MAX_STOPS];  /* stop sequences, each non-empty */
    int n_stop;
    int stream, include_usage;      /* stream; stream_options.include_usage */
    int ignore_eos;                 /* extension (vLLM): generate past the stop ids */
    int return_token_ids;           /* extension (vLLM): token_ids in each choice */
} moe_api_request;

/* Reads a request body of `kind`. 0, or -1 with *err filled (status 400,
 * the field at fault in param); *out is then empty (free is still safe). */
int moe_api_request_parse(const char *body, size_t len, moe_api_kind kind, moe_api_request *out,
                          moe_api_error *err);
void moe_api_request_free(moe_api_request *r);

#endif
