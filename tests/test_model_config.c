/* tests/test_model_config.c — config.json parsing: the OLMoE hub config,
 * newer and MLX forms, defaults, quantization overrides, and an error that
 * names the field for every bad or missing value. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/model_config.h"
#include "moe/status.h"

/* allenai/OLMoE-1B-7B-0924's config.json, as published. */
static const char *const OLMOE_HUB =
    "{\"architectures\": [\"OlmoeForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0,"
    " \"clip_qkv\": null, \"eos_token_id\": 50279, \"hidden_act\": \"silu\", \"hidden_size\": 2048,"
    " \"initializer_range\": 0.02, \"intermediate_size\": 1024, \"max_position_embeddings\": 4096,"
    " \"model_type\": \"olmoe\", \"norm_topk_prob\": false, \"num_attention_heads\": 16,"
    " \"num_experts\": 64, \"num_experts_per_tok\": 8, \"num_hidden_layers\": 16,"
    " \"num_key_value_heads\": 16, \"output_router_logits\": false, \"pad_token_id\": 1,"
    " \"rms_norm_eps\": 1e-05, \"rope_scaling\": null, \"rope_theta\": 10000.0,"
    " \"router_aux_loss_coef\": 0.01, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\","
    " \"transformers_version\": \"4.43.0.dev0\", \"use_cache\": true, \"vocab_size\": 50304}";

static void parses_hub_config(void **state)
{
    (void)state;
    moe_model_config c;
    assert_int_equal(moe_config_parse(OLMOE_HUB, "hub", &c), MOE_OK);
    assert_string_equal(c.model_type, "olmoe");
    assert_int_equal(c.hidden_size, 2048);
    assert_int_equal(c.num_layers, 16);
    assert_int_equal(c.num_heads, 16);
    assert_int_equal(c.num_kv_heads, 16);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.expert_hidden, 1024);
    assert_int_equal(c.num_experts, 64);
    assert_int_equal(c.top_k, 8);
    assert_int_equal(c.vocab_size, 50304);
    assert_int_equal(c.max_position, 4096);
    assert_false(c.norm_topk_prob);
    assert_false(c.tie_word_embeddings);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_true(c.rope_theta == 10000.0);
    assert_true(c.clip_qkv == 0.0);
    assert_int_equal(c.quant_bits, 0);
    assert_int_equal(c.num_eos, 1);
    assert_int_equal(c.eos_ids[0], 50279);
    assert_int_equal(c.bos_id, -1);
    moe_config_free(&c);
}

static void newer_forms_and_defaults(void **state)
{
    (void)state;
    moe_model_config c;
    const char *json =
        "{\"model_type\": \"olmoe\", \"hidden_size\": 96, \"num_hidden_layers\": 2, \"num_attention_heads\": 6,"
        " \"intermediate_size\": 40, \"num_experts\": 5, \"num_experts_per_tok\": 2, \"vocab_size\": 300,"
        " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0}, \"norm_topk_prob\": true,"
        " \"tie_word_embeddings\": true, \"eos_token_id\": [7, 9], \"bos_token_id\": 3}";
    assert_int_equal(moe_config_parse(json, "new", &c), MOE_OK);
    assert_int_equal(c.num_kv_heads, 6);  /* absent: equal to heads */
    assert_int_equal(c.head_dim, 16);     /* absent: hidden / heads */
    assert_true(c.rope_theta == 500000.0);
    assert_true(c.rms_norm_eps == 1e-5);
    assert_true(c.norm_topk_prob);
    assert_true(c.tie_word_embeddings);
    assert_int_equal(c.num_eos, 2);
    assert_int_equal(c.eos_ids[1], 9);
    assert_int_equal(c.bos_id, 3);
    moe_config_free(&c);
    /* GQA with an explicit head_dim */
    json = "{\"model_type\": \"olmoe\", \"hidden_size\": 100, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
           " \"num_key_value_heads\": 2, \"head_dim\": 24, \"intermediate_size\": 8, \"num_experts\": 3,"
           " \"num_experts_per_tok\": 3, \"vocab_size\": 10}";
    assert_int_equal(moe_config_parse(json, "gqa", &c), MOE_OK);
    assert_int_equal(c.num_kv_heads, 2);
    assert_int_equal(c.head_dim, 24);
    moe_config_free(&c);
}

static void mlx_quantization(void **state)
{
    (void)state;
    moe_model_config c;
    const char *json =
        "{\"model_type\": \"olmoe\", \"hidden_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
        " \"intermediate_size\": 32, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"vocab_size\": 128,"
        " \"quantization\": {\"group_size\": 64, \"bits\": 4,"
        "   \"model.layers.0.mlp.gate\": {\"group_size\": 64, \"bits\": 8},"
        "   \"model.layers.0.self_attn.q_proj\": false},"
        " \"quantization_config\": {\"group_size\": 64, \"bits\": 4}}";
    assert_int_equal(moe_config_parse(json, "mlx", &c), MOE_OK);
    assert_int_equal(c.quant_bits, 4);
    assert_int_equal(c.quant_group_size, 64);
    assert_int_equal(c.num_overrides, 2);
    int bits, group;
    moe_config_module_quant(&c, "model.layers.0.mlp.gate", &bits, &group);
    assert_int_equal(bits, 8);
    assert_int_equal(group, 64);
    moe_config_module_quant(&c, "model.layers.0.self_attn.q_proj", &bits, &group);
    assert_int_equal(bits, 0);
    moe_config_module_quant(&c, "model.layers.0.mlp.switch_mlp.up_proj", &bits, &group);
    assert_int_equal(bits, 4);
    moe_config_free(&c);
    /* only the mirror */
    json = "{\"model_type\": \"olmoe\", \"hidden_size\": 64, \"num_hidden_layers\": 1, \"num_attention_heads\": 4,"
           " \"intermediate_size\": 32, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"vocab_size\": 128,"
           " \"quantization_config\": {\"group_size\": 32, \"bits\": 8}}";
    assert_int_equal(moe_config_parse(json, "mirror", &c), MOE_OK);
    assert_int_equal(c.quant_bits, 8);
    assert_int_equal(c.quant_group_size, 32);
    moe_config_free(&c);
}

/* OLMOE_HUB with `from` replaced by `to`: the parse must fail with `want`
 * and a message containing `needle`. */
static void expect_failure(const char *from, const char *to, moe_status want, const char *needle)
{
    const char *at = strstr(OLMOE_HUB, from);
    assert_non_null(at);
    size_t n = strlen(OLMOE_HUB) - strlen(from) + strlen(to) + 1;
    char *json = malloc(n);
    snprintf(json, n, "%.*s%s%s", (int)(at - OLMOE_HUB), OLMOE_HUB, to, at + strlen(from));
    moe_model_config c;
    moe_status st = moe_config_parse(json, "cfg.json", &c);
    if (st != want || !strstr(moe_last_error(), needle)) {
        print_error("replacing %s by %s: status %d, message \"%s\" (wanted %d and \"%s\")\n", from, to, st,
                    moe_last_error(), want, needle);
        fail();
    }
    assert_non_null(strstr(moe_last_error(), "cfg.json"));
    free(json);
}

static void errors_name_the_field(void **state)
{
    (void)state;
    expect_failure("\"hidden_size\": 2048,", "", MOE_ERR_FORMAT, "'hidden_size' is missing");
    expect_failure("\"num_experts\": 64,", "\"num_experts\": \"64\",", MOE_ERR_FORMAT, "'num_experts' must be an integer");
    expect_failure("\"num_hidden_layers\": 16", "\"num_hidden_layers\": 0", MOE_ERR_FORMAT, "'num_hidden_layers' is 0");
    expect_failure("\"vocab_size\": 50304", "\"vocab_size\": -5", MOE_ERR_FORMAT, "'vocab_size' is -5");
    expect_failure("\"model_type\": \"olmoe\"", "\"model_type\": \"llama\"", MOE_ERR_UNSUPPORTED, "model_type 'llama'");
    expect_failure("\"model_type\": \"olmoe\",", "", MOE_ERR_FORMAT, "'model_type'");
    expect_failure("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
                   MOE_ERR_UNSUPPORTED, "rope_scaling");
    expect_failure("\"rope_theta\": 10000.0", "\"rope_theta\": \"big\"", MOE_ERR_FORMAT, "'rope_theta' must be a number");
    expect_failure("\"rope_theta\": 10000.0", "\"rope_theta\": -1", MOE_ERR_FORMAT, "rope_theta -1");
    expect_failure("\"rope_theta\": 10000.0,", "\"rope_parameters\": {\"rope_type\": \"yarn\"},", MOE_ERR_UNSUPPORTED,
                   "rope_type \"yarn\"");
    expect_failure("\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 65", MOE_ERR_FORMAT,
                   "num_experts_per_tok 65 exceeds num_experts 64");
    expect_failure("\"num_key_value_heads\": 16", "\"num_key_value_heads\": 5", MOE_ERR_FORMAT,
                   "not a multiple of num_key_value_heads 5");
    expect_failure("\"num_attention_heads\": 16", "\"num_attention_heads\": 3", MOE_ERR_FORMAT,
                   "not a multiple of num_key_value_heads 16");
    expect_failure("\"norm_topk_prob\": false", "\"norm_topk_prob\": 1", MOE_ERR_FORMAT,
                   "'norm_topk_prob' must be true or false");
    expect_failure("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", MOE_ERR_FORMAT, "rms_norm_eps 0");
    expect_failure("\"eos_token_id\": 50279", "\"eos_token_id\": [1, \"x\"]", MOE_ERR_FORMAT, "eos_token_id[1]");
    expect_failure("\"use_cache\": true", "\"quantization\": {\"bits\": 7, \"group_size\": 64}", MOE_ERR_UNSUPPORTED,
                   "bits 7");
    expect_failure("\"use_cache\": true", "\"quantization\": {\"bits\": 4, \"group_size\": 48}", MOE_ERR_UNSUPPORTED,
                   "group_size 48");
    expect_failure("\"use_cache\": true", "\"quantization\": {\"bits\": 4}", MOE_ERR_FORMAT, "'group_size' is missing");
    expect_failure("\"use_cache\": true",
                   "\"quantization\": {\"bits\": 4, \"group_size\": 64, \"model.embed_tokens\": {\"bits\": 9, "
                   "\"group_size\": 64}}",
                   MOE_ERR_UNSUPPORTED, "'model.embed_tokens': bits 9");
    expect_failure("\"use_cache\": true", "\"quantization\": 4", MOE_ERR_FORMAT, "'quantization' must be an object");
    expect_failure("{\"architectures\"", "[{\"architectures\"", MOE_ERR_FORMAT, "not valid JSON");

    moe_model_config c;
    assert_int_equal(moe_config_parse("[1, 2]", "arr.json", &c), MOE_ERR_FORMAT);
    assert_non_null(strstr(moe_last_error(), "not a JSON object"));
    assert_int_equal(moe_config_parse(NULL, "x", &c), MOE_ERR_INVALID_ARG);
}

static void loads_from_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/moe-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(OLMOE_HUB, f);
    fclose(f);
    moe_model_config c;
    assert_int_equal(moe_config_load(path, &c), MOE_OK);
    assert_int_equal(c.num_experts, 64);
    moe_config_free(&c);
    unlink(path);
    assert_int_equal(moe_config_load(path, &c), MOE_ERR_IO);
    assert_non_null(strstr(moe_last_error(), path));
    assert_non_null(strstr(moe_last_error(), "No such file"));
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_hub_config),  cmocka_unit_test(newer_forms_and_defaults),
        cmocka_unit_test(mlx_quantization),   cmocka_unit_test(errors_name_the_field),
        cmocka_unit_test(loads_from_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
