/* tests/fuzz/fuzz_chat_template.c — rendering arbitrary conversations with
 * each template moe knows. Input: byte 0 picks the format, byte 1 its
 * switches (bit 0 with_bos, bit 1 no_think, bit 2 a ChatML default system
 * message); the rest is split at "\n====\n" lines into bos_token,
 * eos_token, then role and content of each message. */
#include "fuzz_chat_common.h"

enum { MAX_PARTS = 18 };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    static const char *const NAMES[] = { "tulu", "chatml", "llama3", "qwen3", "llama2", "mistral",
                                         "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7" };
    moe_chat_template t = { 0 };
    if (moe_chat_format_from_name(NAMES[data[0] % 10], &t.format) != MOE_OK) abort();
    t.with_bos = data[1] & 1;
    t.no_think = (data[1] >> 1) & 1;
    t.default_system = data[1] & 4 ? "You are a helpful assistant." : NULL;
    const uint8_t *start[MAX_PARTS];
    size_t len[MAX_PARTS];
    int n = fuzz_split(data + 2, size - 2, start, len, MAX_PARTS);
    char *part[MAX_PARTS];
    for (int i = 0; i < n; i++) part[i] = fuzz_text(start[i], len[i]);
    t.bos_token = n > 0 ? part[0] : "";
    t.eos_token = n > 1 ? part[1] : "</s>";
    moe_chat_message msgs[MAX_PARTS / 2];
    int m = 0;
    for (int i = 2; i + 1 < n; i += 2) msgs[m++] = (moe_chat_message){ part[i], part[i + 1] };
    fuzz_chat_run(&t, msgs, m);
    fuzz_check(moe_chat_template_end_of_turn(&t) != NULL, "an end-of-turn token");
    for (int i = 0; i < n; i++) free(part[i]);
    return 0;
}
