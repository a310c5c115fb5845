/* tests/fuzz/fuzz_server_request.c — a request body of `moe serve` (chat
 * completions or completions) read into a request, as the server reads
 * each body it receives from the network. Input: byte 0 picks the
 * endpoint, the rest is the body. What parses must hold only what the
 * engine takes (messages with a role and content, stops that are not
 * empty, sampling values in range); what does not is a 4xx error with a
 * message. */
#include <string.h>

#include "fuzz.h"
#include "server/request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    moe_api_kind kind = data[0] & 1 ? MOE_API_COMPLETION : MOE_API_CHAT;
    moe_api_request r;
    moe_api_error e;
    memset(&e, 0, sizeof e);
    if (moe_api_request_parse((const char *)data + 1, size - 1, kind, &r, &e) == 0) {
        fuzz_check(r.kind == kind, "the endpoint's kind");
        if (kind == MOE_API_CHAT) fuzz_check(r.n_messages > 0, "a chat has messages");
        for (int i = 0; i < r.n_messages; i++)
            fuzz_check(r.messages[i].role && r.messages[i].content, "each message has a role and content");
        if (kind == MOE_API_COMPLETION) fuzz_check(r.prompt_text || r.n_prompt_ids > 0 || r.prompt_ids, "a prompt");
        for (int i = 0; i < r.n_prompt_ids; i++) fuzz_check(r.prompt_ids[i] >= 0, "prompt ids are token ids");
        fuzz_check(r.n_stop >= 0 && r.n_stop <= MOE_API_MAX_STOPS, "stops within bounds");
        for (int i = 0; i < r.n_stop; i++) fuzz_check(r.stop[i] && r.stop[i][0], "stops are not empty");
        fuzz_check(r.max_tokens >= -1, "max_tokens");
        fuzz_check(r.temperature >= 0 && r.top_p >= 0 && r.top_p <= 1 && r.top_k >= 0 && r.min_p >= 0,
                   "sampling values in range");
    } else {
        fuzz_check(e.status >= 400 && e.status < 500, "a refused body is a 4xx");
        fuzz_check(e.message[0] != '\0', "a refused body gets a message");
    }
    moe_api_request_free(&r);
    return 0;
}
