/* tests/test_family_config.c — config.json of the Qwen3-MoE and Mixtral
 * families: their published configs (transformers 4's field names) and
 * transformers 5's, the choices each family implies (QK-norm, router rule,
 * dense layers, sizes under their own names), and an error naming the field
 * for what moe refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/model_config.h"
#include "moe/status.h"

/* Qwen/Qwen3-30B-A3B's config.json, as published. */
static const char *const QWEN3_30B =
    "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"bos_token_id\": 151643, \"decoder_sparse_step\": 1, \"eos_token_id\": 151645, \"head_dim\": 128,"
    " \"hidden_act\": \"silu\", \"hidden_size\": 2048, \"initializer_range\": 0.02, \"intermediate_size\": 6144,"
    " \"max_position_embeddings\": 40960, \"max_window_layers\": 48, \"mlp_only_layers\": [],"
    " \"model_type\": \"qwen3_moe\", \"moe_intermediate_size\": 768, \"norm_topk_prob\": true,"
    " \"num_attention_heads\": 32, \"num_experts\": 128, \"num_experts_per_tok\": 8, \"num_hidden_layers\": 48,"
    " \"num_key_value_heads\": 4, \"output_router_logits\": false, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null,"
    " \"rope_theta\": 1000000.0, \"router_aux_loss_coef\": 0.001, \"sliding_window\": null,"
    " \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.51.0\","
    " \"use_cache\": true, \"use_sliding_window\": false, \"vocab_size\": 151936}";

/* mistralai/Mixtral-8x7B-v0.1's config.json, as published. */
static const char *const MIXTRAL_8X7B =
    "{\"architectures\": [\"MixtralForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1,"
    " \"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02,"
    " \"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mixtral\","
    " \"num_attention_heads\": 32, \"num_experts_per_tok\": 2, \"num_hidden_layers\": 32,"
    " \"num_key_value_heads\": 8, \"num_local_experts\": 8, \"output_router_logits\": false,"
    " \"rms_norm_eps\": 1e-05, \"rope_theta\": 1000000.0, \"router_aux_loss_coef\": 0.02,"
    " \"sliding_window\": null, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.36.0.dev0\", \"use_cache\": true, \"vocab_size\": 32000}";

/* `base` with `from` replaced by `to` (which must occur), parsed. */
static moe_status parse_edited(const char *base, const char *from, const char *to, moe_model_config *c)
{
    const char *at = strstr(base, from);
    if (!at) fail_msg("'%s' is not in the config", from);
    size_t n = strlen(base) - strlen(from) + strlen(to) + 1;
    char *json = malloc(n);
    assert_non_null(json);
    snprintf(json, n, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    moe_status st = moe_config_parse(json, "cfg.json", c);
    free(json);
    return st;
}

static void expect_failure(const char *base, const char *from, const char *to, moe_status want, const char *needle)
{
    moe_model_config c;
    moe_status st = parse_edited(base, from, to, &c);
    if (st != want || !strstr(moe_last_error(), needle))
        fail_msg("replacing %s by %s: status %d, message \"%s\" (wanted %d and \"%s\")", from, to, st,
                 moe_last_error(), want, needle);
    assert_non_null(strstr(moe_last_error(), "cfg.json"));
}

static void qwen3_published(void **state)
{
    (void)state;
    moe_model_config c;
    assert_int_equal(moe_config_parse(QWEN3_30B, "qwen3", &c), MOE_OK);
    assert_int_equal(c.arch, MOE_ARCH_QWEN3_MOE);
    assert_string_equal(moe_arch_name(c.arch), "qwen3_moe");
    assert_int_equal(c.qk_norm, MOE_QK_NORM_PER_HEAD);
    assert_int_equal(c.hidden_size, 2048);
    assert_int_equal(c.num_layers, 48);
    assert_int_equal(c.num_heads, 32);
    assert_int_equal(c.num_kv_heads, 4);
    assert_int_equal(c.head_dim, 128);        /* not hidden / heads (64) */
    assert_int_equal(c.expert_hidden, 768);   /* moe_intermediate_size, not intermediate_size */
    assert_int_equal(c.num_experts, 128);
    assert_int_equal(c.top_k, 8);
    assert_true(c.norm_topk_prob);
    assert_null(c.dense_layers);
    for (int l = 0; l < c.num_layers; l++) assert_false(moe_config_layer_dense(&c, l));
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.max_position, 40960);
    assert_true(c.rms_norm_eps == 1e-6);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(c.bos_id, 151643);
    assert_int_equal(c.num_eos, 1);
    assert_int_equal(c.eos_ids[0], 151645);
    moe_config_free(&c);
}

/* Layer l is dense when listed in mlp_only_layers or when l + 1 is not a
 * multiple of decoder_sparse_step (transformers' Qwen3MoeDecoderLayer). */
static void qwen3_dense_layers(void **state)
{
    (void)state;
    moe_model_config c;
    static const char *const BASE7 =
        "{\"model_type\": \"qwen3_moe\", \"hidden_size\": 64, \"num_hidden_layers\": 7, \"num_attention_heads\": 4,"
        " \"num_key_value_heads\": 2, \"head_dim\": 24, \"intermediate_size\": 96, \"moe_intermediate_size\": 32,"
        " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"vocab_size\": 300, \"decoder_sparse_step\": 2,"
        " \"mlp_only_layers\": [3, 0]}";
    assert_int_equal(moe_config_parse(BASE7, "seven", &c), MOE_OK);
    static const int DENSE[7] = { 1, 0, 1, 1, 1, 0, 1 };
    for (int l = 0; l < 7; l++) assert_int_equal(moe_config_layer_dense(&c, l), DENSE[l]);
    assert_int_equal(c.dense_hidden, 96);
    assert_int_equal(c.expert_hidden, 32);
    assert_false(c.norm_topk_prob);           /* transformers' default */
    assert_true(c.rms_norm_eps == 1e-6);      /* Qwen3's default */
    assert_true(c.rope_theta == 10000.0);
    moe_config_free(&c);
}

/* transformers 5 writes num_local_experts, rope_parameters and dtype. */
static void qwen3_transformers5_form(void **state)
{
    (void)state;
    moe_model_config c;
    assert_int_equal(parse_edited(QWEN3_30B, "\"num_experts\": 128,", "\"num_local_experts\": 96,", &c), MOE_OK);
    assert_int_equal(c.num_experts, 96);
    moe_config_free(&c);
    assert_int_equal(parse_edited(QWEN3_30B, "\"rope_theta\": 1000000.0,",
                                  "\"rope_parameters\": {\"rope_theta\": 5000.0, \"rope_type\": \"default\"},", &c),
                     MOE_OK);
    assert_true(c.rope_theta == 5000.0);
    moe_config_free(&c);
}

static void mixtral_published(void **state)
{
    (void)state;
    moe_model_config c;
    assert_int_equal(moe_config_parse(MIXTRAL_8X7B, "mixtral", &c), MOE_OK);
    assert_int_equal(c.arch, MOE_ARCH_MIXTRAL);
    assert_int_equal(c.qk_norm, MOE_QK_NORM_NONE);
    assert_int_equal(c.head_dim, 128);        /* hidden / heads */
    assert_int_equal(c.num_kv_heads, 8);
    assert_int_equal(c.expert_hidden, 14336);
    assert_int_equal(c.num_experts, 8);
    assert_int_equal(c.top_k, 2);
    assert_true(c.norm_topk_prob);            /* softmax over the top-k: always renormalised */
    assert_null(c.dense_layers);
    assert_int_equal(c.sliding_window, 0);
    assert_true(c.rope_theta == 1e6);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_ids[0], 2);
    moe_config_free(&c);
    /* Mistral-style window, and transformers' default theta for Mixtral */
    assert_int_equal(parse_edited(MIXTRAL_8X7B, "\"sliding_window\": null", "\"sliding_window\": 4096", &c), MOE_OK);
    assert_int_equal(c.sliding_window, 4096);
    moe_config_free(&c);
    assert_int_equal(parse_edited(MIXTRAL_8X7B, "\"rope_theta\": 1000000.0,", "", &c), MOE_OK);
    assert_true(c.rope_theta == 1e6);
    moe_config_free(&c);
}

static void refusals_name_the_field(void **state)
{
    (void)state;
    expect_failure(QWEN3_30B, "\"use_sliding_window\": false", "\"use_sliding_window\": true", MOE_ERR_UNSUPPORTED,
                   "use_sliding_window true");
    expect_failure(QWEN3_30B, "\"attention_bias\": false", "\"attention_bias\": true", MOE_ERR_UNSUPPORTED,
                   "attention_bias true");
    expect_failure(QWEN3_30B, "\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", MOE_ERR_UNSUPPORTED,
                   "hidden_act \"gelu\"");
    expect_failure(QWEN3_30B, "\"mlp_only_layers\": []", "\"mlp_only_layers\": [2, 48]", MOE_ERR_FORMAT,
                   "mlp_only_layers[1] is 48");
    expect_failure(QWEN3_30B, "\"mlp_only_layers\": []", "\"mlp_only_layers\": 3", MOE_ERR_FORMAT,
                   "'mlp_only_layers' must be a list");
    expect_failure(QWEN3_30B, "\"decoder_sparse_step\": 1", "\"decoder_sparse_step\": 0", MOE_ERR_FORMAT,
                   "'decoder_sparse_step' is 0");
    expect_failure(QWEN3_30B, "\"moe_intermediate_size\": 768,", "", MOE_ERR_FORMAT,
                   "'moe_intermediate_size' is missing");
    expect_failure(QWEN3_30B, "\"num_experts\": 128,", "", MOE_ERR_FORMAT, "'num_experts' is missing");
    expect_failure(QWEN3_30B, "\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 129", MOE_ERR_FORMAT,
                   "num_experts_per_tok 129 exceeds num_experts 128");
    expect_failure(MIXTRAL_8X7B, "\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9", MOE_ERR_FORMAT,
                   "exceeds num_local_experts 8");
    expect_failure(MIXTRAL_8X7B, "\"sliding_window\": null", "\"sliding_window\": \"wide\"", MOE_ERR_FORMAT,
                   "'sliding_window' must be an integer");
    expect_failure(MIXTRAL_8X7B, "\"model_type\": \"mixtral\"", "\"model_type\": \"mistral\"", MOE_ERR_UNSUPPORTED,
                   "moe runs: olmoe, qwen3_moe, mixtral");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(qwen3_published),   cmocka_unit_test(qwen3_dense_layers),
        cmocka_unit_test(qwen3_transformers5_form), cmocka_unit_test(mixtral_published),
        cmocka_unit_test(refusals_name_the_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
