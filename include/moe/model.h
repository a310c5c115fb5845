/* moe/model.h — loading a Mixture-of-Experts language model and running it.
 *
 *   moe_model_load(dir)          a checkpoint directory: config.json and
 *                                safetensors (one file or sharded), in the
 *                                Hugging Face per-expert layout or the MLX
 *                                stacked (optionally quantized) layout
 *   moe_model_synthetic(...)     a published model's shapes (OLMoE-1B-7B,
 *                                Qwen3-30B-A3B, Mixtral-8x7B) with seeded
 *                                random weights, built in memory (benchmarks)
 *   moe_context_create(model, n) a KV cache for up to n tokens
 *   moe_context_eval(ctx, ids)   appends tokens, returns logits
 *
 * A context holds one sequence; several contexts may share one model but
 * must not run at the same time (the model owns the activations' workspace);
 * moe_context_eval_batch runs several of them in one forward. */
#ifndef MOE_MODEL_H
#define MOE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "moe/device.h"   /* moe_device: where a model's weights live and its forward runs */
#include "moe/status.h"
#include "moe/switchglu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_model moe_model;
typedef struct moe_context moe_context;

/* Called while loading: `done` of `total` steps (layers) finished. */
typedef void (*moe_progress_fn)(void *user, int done, int total, const char *what);

typedef struct {
    int fuse_gate_up;       /* 1 (default): fused gate-up projection */
    /* How activations meet quantized weights: a moe_act_mode, or -1 (the
     * default) to let moe choose (see moe_model_default_activations). */
    int activations;
    /* The KV cache's element type: MOE_DTYPE_F32, MOE_DTYPE_F16, or -1 (the
     * default): f16 with int8 activations on quantized weights, f32 on the
     * exact paths. f16 halves the cache and its read traffic. */
    int kv_dtype;
    /* A moe_device; the default is MOE_DEVICE_CPU (the command line's
     * --device defaults to auto). */
    int device;
    moe_progress_fn progress;
    void *progress_user;
    /* 1: time each operation of the forward (moe_model_profile); each one
     * then waits for the last to finish, so a device loses its overlap */
    int profile;
} moe_model_options;

moe_model_options moe_model_default_options(void);

typedef struct {
    const char *architecture;   /* config.json's model_type: "olmoe", "qwen3_moe", "mixtral" */
    const char *device;         /* where it runs: "cpu", "cuda" */
    int vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim;
    int num_experts, top_k, expert_hidden;
    int max_position;
    int bos_id;                 /* -1 when the checkpoint names none */
    int num_eos;
    const int *eos_ids;
    int bits;                   /* experts' quantization bits; 0 = float */
    int fused;
    moe_act_mode activations;   /* in use for the quantized projections */
    moe_dtype kv_dtype;         /* of the KV cache */
    size_t weight_bytes;        /* resident weights */
    size_t active_bytes_per_token; /* weights one decode step reads (top_k
                                      distinct experts a layer) */
} moe_model_info;

moe_status moe_model_load(const char *dir, const moe_model_options *opt, moe_model **out);

/* What loading a checkpoint and running it with a context of max_tokens,
 * in chunks of max_chunk, will hold in memory — worked out from
 * config.json and the safetensors headers alone, before anything is
 * loaded, so that a model that cannot fit is refused rather than killed
 * by the kernel half-way. Sizes saturate at SIZE_MAX instead of wrapping. */
typedef struct {
    size_t weights;             /* as moe holds them (inspect's resident_bytes) */
    size_t kv_cache;            /* keys and values of every layer, max_tokens positions */
    size_t kv_bytes_per_token;  /* one position of that cache */
    size_t activations;         /* one chunk's buffers, the expert layers' workspace, a row of logits */
    size_t total;               /* weights + kv_cache + activations */
    size_t available;           /* what the machine has now (MemAvailable), or with the model on
                                   a GPU the GPU's free memory; 0 unknown */
    int device;                 /* whose memory that is: MOE_DEVICE_CPU (the host's) or
                                   MOE_DEVICE_CUDA (the first GPU's) */
    int fits;                   /* total within MOE_MEMORY_USABLE of available (1 when unknown) */
    int max_context;            /* the most positions whose cache fits beside the weights and
                                   activations (0: none; INT32_MAX when available is unknown) */
    int max_position;           /* the context the model was trained for (config.json) */
    moe_dtype kv_dtype;         /* of the cache, as loading with these options would choose it */
} moe_model_memory;

/* The share of the available memory a model may take: the rest is left to
 * the system and other processes. */
#define MOE_MEMORY_USABLE 0.9

/* For the checkpoint in `dir` loaded with `opt` (NULL: the defaults): the
 * memory of the device it will load on. With opt->device CUDA, or AUTO
 * where a GPU can run it, the weights, cache and activations all live in
 * the GPU's memory: that is compared with the GPU's free memory, not the
 * host's. Errors are those of reading config.json and the safetensors
 * headers. */
moe_status moe_model_estimate_memory(const char *dir, const moe_model_options *opt, int max_tokens, int max_chunk,
                                     moe_model_memory *out);

/* A published model's exact shapes with random weights from `seed`:
 * arch "olmoe" (or NULL) OLMoE-1B-7B (hidden 2048, 16 layers, 16 heads of
 * 128, 64 experts top-8 of hidden 1024, vocab 50304), "qwen3_moe"
 * Qwen3-30B-A3B (hidden 2048, 48 layers, 32 query / 4 kv heads of 128, 128
 * experts top-8 of hidden 768, vocab 151936), "mixtral" Mixtral-8x7B (hidden
 * 4096, 32 layers, 32 / 8 heads of 128, 8 experts top-2 of hidden 14336,
 * vocab 32000). bits 4 or 8 (MLX affine, group 64, bf16 scales; every
 * projection and the embedding quantized) or 16 (bf16). `layers` 0 means
 * the model's own depth. A model larger than the memory available is
 * refused (MOE_ERR_NOMEM) before anything is built, naming both sizes. */
moe_status moe_model_synthetic(const char *arch, int bits, int layers, uint64_t seed, const moe_model_options *opt,
                               moe_model **out);

/* The published model a synthetic arch stands for ("Qwen3-30B-A3B"), or
 * NULL for an unknown arch. */
const char *moe_model_synthetic_name(const char *arch);

moe_model_info moe_model_get_info(const moe_model *m);

/* Where the forward's time went since the model was made or the last
 * reset, by kind of operation (projections, attention, router, experts,
 * lm_head, ...), for a model made with options.profile: up to max entries
 * written, their count returned (0 without profiling). */
typedef struct {
    const char *name;
    double seconds;
    long calls;
} moe_profile_entry;
int moe_model_profile(const moe_model *m, moe_profile_entry *out, int max);
void moe_model_profile_reset(moe_model *m);

/* Switches gate-up fusion of every expert layer in place (same bytes). */
moe_status moe_model_set_fused(moe_model *m, int fuse_gate_up);

void moe_model_free(moe_model *m);

/* A KV cache for up to max_tokens positions (memory is touched only as
 * positions fill) and workspace for chunks of up to max_chunk tokens. */
moe_status moe_context_create(moe_model *m, int max_tokens, int max_chunk, moe_context **out);

/* Runs n (≤ max_chunk) tokens at the next positions. logits: NULL, or
 * [n][vocab] when all_positions, else [vocab] for the last token. Token ids
 * outside the vocabulary and overflowing the cache are errors. */
moe_status moe_context_eval(moe_context *c, const int32_t *tokens, int n, float *logits, int all_positions);

/* Runs n tokens as moe_context_eval does, and sets *id to the greedy choice
 * at the last position: the first of the largest logits (NaN never chosen;
 * 0 when none is above -inf), what a sampler at temperature 0 picks. Where
 * the model runs on a GPU the logits stay there: only the id comes back. */
moe_status moe_context_eval_greedy(moe_context *c, const int32_t *tokens, int n, int32_t *id);

/* One sequence's part of a batch. */
typedef struct {
    moe_context *ctx;
    const int32_t *tokens;
    int n;                  /* 1 ≤ n ≤ the context's max_chunk */
    float *logits;          /* NULL, [n][vocab] when all_positions, else [vocab] */
    int all_positions;
    int32_t *greedy;        /* NULL, or the last position's greedy choice (moe_context_eval_greedy) */
} moe_batch_item;

/* Runs several sequences in one forward pass: every projection and expert
 * layer reads its weights once for all their tokens, while each sequence
 * attends to its own KV cache. The contexts must be distinct and of one
 * model. Each item is checked as moe_context_eval checks it; on an error
 * no context has moved. The logits equal those of separate evals within
 * float rounding (a larger batch may take the GEMM path of a longer chunk). */
moe_status moe_context_eval_batch(const moe_batch_item *items, int count);

moe_model *moe_context_model(const moe_context *c);

/* Positions filled so far; reset empties the cache. */
int moe_context_position(const moe_context *c);
void moe_context_reset(moe_context *c);
/* Keeps the first n positions and forgets the rest (a prompt that shares
 * only a prefix with what the context holds goes on from there); n outside
 * 0..position is MOE_ERR_RANGE. */
moe_status moe_context_truncate(moe_context *c, int n);
void moe_context_free(moe_context *c);

#ifdef __cplusplus
}
#endif

#endif
