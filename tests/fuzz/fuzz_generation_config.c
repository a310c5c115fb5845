/* tests/fuzz/fuzz_generation_config.c — generation_config.json: its
 * eos_token_id, one id or a list. What parses holds only token ids, at
 * most MOE_GENCFG_MAX_EOS of them, each once. */
#include <stdlib.h>

#include "fuzz.h"
#include "io/generation_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_text(data, size);
    moe_generation_config g;
    if (moe_generation_config_parse(text, "generation_config.json", &g) == MOE_OK) {
        fuzz_check(g.found, "parsed text was found");
        fuzz_check(g.num_eos >= 0 && g.num_eos <= MOE_GENCFG_MAX_EOS, "eos ids within bounds");
        for (int i = 0; i < g.num_eos; i++) {
            fuzz_check(g.eos_ids[i] >= 0, "eos ids are token ids");
            for (int j = 0; j < i; j++) fuzz_check(g.eos_ids[i] != g.eos_ids[j], "each eos id once");
        }
    }
    free(text);
    return 0;
}
