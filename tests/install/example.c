/* A program built against an installed moe (tests/install/install_test.sh
 * builds it with pkg-config and with find_package, against libmoe.so and
 * libmoe.a): it loads the tiny OLMoE fixture given as argv[1], generates 10
 * greedy tokens after the prompt the command-line tests use, and checks them
 * against the ids transformers produced for that model, on the GPU where
 * the build has CUDA and the machine a GPU, else on the CPU. It includes
 * only the public headers, as any program outside the tree would. */
#include <stdio.h>
#include <string.h>

#include <moe/generate.h>
#include <moe/model.h>
#include <moe/runtime.h>
#include <moe/sampler.h>
#include <moe/status.h>

static const int32_t prompt[] = {51, 130, 212, 151, 205, 118, 52, 51, 126, 132, 74, 47, 125, 70, 65, 189, 46, 138, 0};
static const int32_t expected[] = {173, 62, 30, 155, 228, 192, 193, 136, 97, 55};
enum { N_PROMPT = sizeof prompt / sizeof prompt[0], N_NEW = sizeof expected / sizeof expected[0] };

static int fail(const char *what, moe_status st)
{
    fprintf(stderr, "example: %s: %s (%s)\n", what, moe_last_error(), moe_status_name(st));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: example MODEL_DIR\n");
        return 2;
    }
    moe_status st = moe_set_num_threads(1);
    if (st != MOE_OK) return fail("threads", st);

    /* an error comes back as a status and a message naming the file */
    moe_model *m = NULL;
    st = moe_model_load("/nonexistent/moe-model", NULL, &m);
    if (st == MOE_OK || m || !strstr(moe_last_error(), "/nonexistent/moe-model")) {
        fprintf(stderr, "example: loading a missing directory gave %d, '%s'\n", (int)st, moe_last_error());
        return 1;
    }

    moe_model_options opt = moe_model_default_options();
    opt.device = MOE_DEVICE_AUTO;
    st = moe_model_load(argv[1], &opt, &m);
    if (st != MOE_OK) return fail("load", st);
    moe_model_info info = moe_model_get_info(m);
    moe_context *ctx = NULL;
    st = moe_context_create(m, N_PROMPT + N_NEW, 8, &ctx);
    if (st != MOE_OK) return fail("context", st);
    moe_sampler *greedy = NULL;
    moe_sampler_config sc = moe_sampler_default_config();
    st = moe_sampler_create(&sc, info.vocab_size, &greedy);
    if (st != MOE_OK) return fail("sampler", st);

    moe_gen_request req = {.max_new_tokens = N_NEW, .prefill_step = 5, .sampler = greedy};
    int32_t out[N_NEW];
    int n_out = 0;
    st = moe_generate(ctx, prompt, N_PROMPT, &req, out, &n_out, NULL);
    if (st != MOE_OK) return fail("generate", st);

    int ok = n_out == N_NEW && memcmp(out, expected, sizeof expected) == 0;
    printf("%s model, %d layers, %d experts top-%d on %s (%s kernels):", info.architecture, info.num_layers,
           info.num_experts, info.top_k, info.device, moe_cpu_isa());
    for (int i = 0; i < n_out; i++) printf(" %d", (int)out[i]);
    printf(ok ? " (the reference ids)\n" : " (expected 173 62 30 155 228 192 193 136 97 55)\n");

    moe_sampler_free(greedy);
    moe_context_free(ctx);
    moe_model_free(m);
    return ok ? 0 : 1;
}
