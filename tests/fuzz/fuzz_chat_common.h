/* tests/fuzz/fuzz_chat_common.h — a conversation rendered through a chat
 * template both ways the engine uses it: whole (moe_chat_template_render)
 * and turn by turn (moe_chat_template_turn, which a chat session with a
 * kept KV cache prefills). For the templates that write the history as it
 * was (tulu, chatml: no trimming, no message moved), the turns joined with
 * the replies must be the whole rendering. */
#ifndef MOE_TESTS_FUZZ_CHAT_COMMON_H
#define MOE_TESTS_FUZZ_CHAT_COMMON_H

#include <stdlib.h>
#include <string.h>

#include "engine/chat_template.h"
#include "fuzz.h"

static void fuzz_chat_append(char **s, size_t *n, const char *add)
{
    size_t k = strlen(add);
    *s = realloc(*s, *n + k + 1);
    memcpy(*s + *n, add, k + 1);
    *n += k;
}

/* msgs[0..n): an optional system message, then user/assistant pairs,
 * ending with a user message (the roles as given are also rendered as
 * they are, whatever they are). */
static void fuzz_chat_run(const moe_chat_template *t, const moe_chat_message *msgs, int n)
{
    for (int gen = 0; gen < 2; gen++) {
        char *out = NULL;
        if (moe_chat_template_render(t, msgs, n, gen, &out) == MOE_OK) fuzz_check(out != NULL, "a rendering");
        free(out);
    }
    /* turn by turn: only for a well-formed conversation */
    int first = 0;
    const char *system = NULL;
    if (n > 0 && !strcmp(msgs[0].role, "system")) system = msgs[0].content, first = 1;
    for (int i = first; i < n; i++)
        if (strcmp(msgs[i].role, (i - first) % 2 ? "assistant" : "user") != 0) return;
    if (n <= first || (n - first) % 2 == 0) return; /* it must end with a user message */
    char *joined = NULL, *whole = NULL;
    size_t jn = 0;
    fuzz_chat_append(&joined, &jn, "");
    int ok = 1;
    for (int i = first; i < n && ok; i += 2) {
        char *turn = NULL;
        ok = moe_chat_template_turn(t, i == first, system, msgs[i].content, &turn) == MOE_OK;
        if (ok) fuzz_chat_append(&joined, &jn, turn);
        free(turn);
        if (ok && i + 1 < n) fuzz_chat_append(&joined, &jn, msgs[i + 1].content);
    }
    int comparable = t->format == MOE_CHAT_TULU || t->format == MOE_CHAT_CHATML;
    if (ok && comparable && moe_chat_template_render(t, msgs, n, 1, &whole) == MOE_OK)
        fuzz_check(!strcmp(whole, joined), "the turns joined with the replies are the whole rendering");
    free(whole);
    free(joined);
}

#endif
