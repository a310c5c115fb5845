/* tests/fuzz/fuzz_tokenizer_config.c — tokenizer_config.json: its
 * chat_template (a string, or a list with a "default"), bos_token and
 * eos_token (strings or AddedToken objects); a template found is
 * recognised (or refused) and, when recognised, renders a fixed
 * conversation whole and turn by turn. */
#include "fuzz_chat_common.h"
#include "io/tokenizer_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    moe_tokenizer_config c;
    if (moe_tokenizer_config_parse(text, "tokenizer_config.json", &c) == MOE_OK) {
        fuzz_check(c.found, "parsed text was found");
        moe_chat_template t = { 0 };
        if (c.chat_template && moe_chat_template_detect(c.chat_template, &t) == MOE_OK) {
            t.bos_token = c.bos_token ? c.bos_token : "";
            t.eos_token = c.eos_token ? c.eos_token : "</s>";
            static const moe_chat_message CONV[] = {
                { "system", "Be brief." },     { "user", "Hi there" },  { "assistant", " Hello! " },
                { "user", "What is 2+2?\n" },
            };
            fuzz_chat_run(&t, CONV, 4);
            fuzz_chat_run(&t, CONV + 1, 3);
        }
        moe_tokenizer_config_free(&c);
    }
    free(text);
    return 0;
}
