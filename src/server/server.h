/* server/server.h — `moe serve`: the OpenAI HTTP API over one loaded model
 * (POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET
 * /health, GET /metrics), requests run together by the engine
 * (engine.h). HTTP is libmicrohttpd's, one thread a connection. */
#ifndef MOE_SERVER_SERVER_H
#define MOE_SERVER_SERVER_H

#include <stddef.h>

#include "moe/chat_template.h"
#include "moe/model.h"
#include "moe/text.h"
#include "moe/tokenizer.h"

typedef struct {
    const char *host;               /* an address to listen on: "127.0.0.1" (default), "::1", "0.0.0.0" */
    int port;                       /* 0: any free port (the log line says which) */
    const char *api_key;            /* NULL: no key needed; else "Authorization: Bearer KEY" on every path but /health */
    const char *model_id;           /* the model's name in the API */
    size_t max_body;                /* bytes; a larger request body is refused (413) */
    int parallel, max_context, batch_tokens, queue;   /* see moe_engine_config */
    moe_model *model;
    moe_tokenizer *tok;             /* NULL: token ids only (completions with id prompts) */
    const moe_chat_template *tpl;   /* NULL: no chat endpoint */
    const moe_stop_ids *eos;
    int step_delay_ms;              /* tests only */
} moe_server_config;

/* Serves until SIGINT or SIGTERM, then drains: stops taking requests,
 * finishes those running and queued, and returns 0 (a second signal
 * cancels them). 1 with a message on stderr when it cannot start. */
int moe_server_run(const moe_server_config *cfg);

#endif
