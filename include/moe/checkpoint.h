/* moe/checkpoint.h — converting and inspecting checkpoint directories.
 *
 *   moe_checkpoint_convert(opt)   a float checkpoint of any family moe runs
 *                                 (OLMoE, Qwen3-MoE, Mixtral; Hugging Face
 *                                 per-expert layout, or MLX stacked float)
 *                                 into the MLX layout, quantized as mlx-lm's
 *                                 convert -q quantizes it: the same tensors,
 *                                 the same codes, the same config.json blocks
 *   moe_checkpoint_inspect(dir)   what a checkpoint holds: layout, dtypes,
 *                                 quantization per module, parameters, bytes
 *
 * What convert writes (mlx-lm's rules, which moe's loader reads):
 *  - the experts of each MoE layer stacked: model.layers.N.BLOCK.switch_mlp.
 *    {gate,up,down}_proj.{weight,scales,biases} [E, rows, …] (BLOCK "mlp",
 *    Mixtral's "block_sparse_moe", whose w1, w3, w2 are gate, up, down),
 *    gate and up kept apart (fusing them is a load-time matter); a dense
 *    layer's MLP (Qwen3-MoE's mlp_only_layers, decoder_sparse_step) as it is,
 *    model.layers.N.mlp.{gate,up,down}_proj;
 *  - every Linear and Embedding weight (attention projections, router,
 *    experts, embedding, lm_head) whose input dimension divides by the group
 *    size quantized with MLX's affine rule (quant/affine.h; a value halfway
 *    between two codes rounds away from zero, as MLX's Metal and CUDA
 *    kernels round it, where its CPU backend rounds to even), the others and
 *    every norm (Qwen3-MoE's per-head q_norm and k_norm too) kept in float;
 *  - the routers (BLOCK.gate) as mlx-lm's model class asks: Qwen3-MoE's
 *    quant_predicate puts them at 8 bits, group 64; OLMoE and Mixtral have
 *    none, theirs are quantized as the rest; router_bits overrides both;
 *  - float values in `dtype`: every float tensor is cast to it first and the
 *    casted values are quantized, scales and biases in that dtype (mlx-lm's
 *    order: cast the model, then quantize);
 *  - config.json: the source's, keys sorted, "_name_or_path" dropped, with a
 *    "quantization" block {group_size, bits, mode: "affine"} plus one entry
 *    per module quantized differently, the dict mlx-lm's predicate gives it
 *    ({group_size, bits, mode} under router_bits, {group_size, bits} from
 *    the family's predicate), and its "quantization_config" mirror;
 *  - safetensors shards of at most 5 GiB of tensors ("model.safetensors",
 *    or "model-0000i-of-0000n.safetensors"), filled in model order, each with
 *    metadata {"format": "mlx"}, and model.safetensors.index.json (total_size,
 *    total_parameters, weight_map sorted by name);
 *  - the tokenizer and generation files copied as they are.
 *
 * The conversion streams: rows of one tensor at a time are read, cast,
 * quantized and written at their place in the output file, and the source
 * pages are dropped behind them, so memory stays a few MB whatever the model.
 * The output goes to a temporary directory beside `out_dir` and is renamed
 * into place only when complete; an existing `out_dir` is refused, or with
 * `force` replaced in one rename at the end. The temporary directories that
 * killed runs for the same `out_dir` left are removed first (only those: a
 * run in progress keeps its own). The source is only read. */
#ifndef MOE_CHECKPOINT_H
#define MOE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"
#include "moe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Progress: output bytes written so far of the total, and the module being
 * written. Returning non-zero stops the conversion (MOE_ERR_IO "interrupted",
 * nothing left behind). */
typedef int (*moe_convert_progress_fn)(void *user, uint64_t done, uint64_t total, const char *module);

typedef struct {
    const char *model_dir;    /* the source checkpoint */
    const char *out_dir;      /* the directory to create */
    int bits;                 /* 4 or 8 (default 4) */
    int group_size;           /* 32, 64 or 128 (default 64) */
    moe_dtype dtype;          /* F32, F16, BF16; MOE_DTYPE_COUNT (default): the
                                 source's (config.json's torch_dtype or dtype,
                                 else each tensor's own) */
    int router_bits;          /* 0 (default): the routers as the family's
                                 mlx-lm model asks (qwen3_moe: 8 bits, group 64;
                                 olmoe, mixtral: as everything else); 4 or 8:
                                 each layer's router at these bits and
                                 group_size; either is a per-module entry in the
                                 quantization block */
    int force;                /* replace an existing out_dir */
    uint64_t max_shard_bytes; /* 0 (default): 5 GiB, as mlx-lm */
    moe_convert_progress_fn progress;
    void *progress_user;
} moe_convert_options;

moe_convert_options moe_convert_default_options(void);

typedef struct {
    int tensors, shards;
    int quantized_modules, float_modules;
    int router_bits, router_group_size; /* of the routers quantized unlike the
                                           rest; 0: none is */
    uint64_t tensor_bytes;    /* of all shards' tensors */
    int64_t parameters;       /* counted as mlx-lm counts them (codes unpacked) */
    moe_dtype dtype;          /* of float tensors and scales; MOE_DTYPE_COUNT: mixed */
    int stale_removed;        /* OUT.tmp.XXXXXX directories of killed runs removed first */
} moe_convert_result;

/* result may be NULL. */
moe_status moe_checkpoint_convert(const moe_convert_options *opt, moe_convert_result *result);

/* ---- inspecting ---- */

/* Modules whose paths differ only in layer or expert numbers ('*' in the
 * pattern) and that are stored alike. */
typedef struct {
    char *pattern;            /* "model.layers.*.mlp.switch_mlp.gate_proj" */
    int count;                /* modules in the group */
    int bits, group_size;     /* 0: float */
    char dtype[16];           /* float: the weight's dtype; quantized: the scales' */
    int ndim;
    int64_t shape[8];         /* one module's weight, codes unpacked */
    int64_t parameters;       /* the whole group's */
    uint64_t bytes;           /* the whole group's, scales and biases included */
} moe_checkpoint_group;

typedef struct {
    char dtype[16];           /* as written in the files: "BF16", "U32", ... */
    int tensors;
    uint64_t bytes;
} moe_checkpoint_dtype;

typedef struct {
    char architecture[32];    /* config.json's model_type */
    const char *layout;       /* "hub" (one tensor per expert) or "mlx" (stacked) */
    int quantized;            /* any module quantized */
    int num_layers, hidden_size, num_heads, num_kv_heads, head_dim;
    int num_experts, top_k, expert_hidden, vocab_size, tie_word_embeddings;
    const char *qk_norm;      /* "whole" (over each projection), "per_head" or "none" */
    int num_dense_layers;     /* layers whose MLP is dense (no experts) */
    int *dense_layers;        /* [num_dense_layers] their indices, ascending */
    int dense_hidden;         /* their intermediate size; 0 when none */
    int tensors;
    int num_dtypes;
    moe_checkpoint_dtype dtypes[8];
    int num_groups;
    moe_checkpoint_group *groups;   /* in model order */
    int64_t parameters;       /* codes unpacked; a tied head counted once */
    uint64_t tensor_bytes;    /* the tensors' bytes in the files */
    uint64_t resident_bytes;  /* the weights moe holds once it has loaded them */
} moe_checkpoint_info;

moe_status moe_checkpoint_inspect(const char *dir, moe_checkpoint_info **out);
void moe_checkpoint_info_free(moe_checkpoint_info *info);

#ifdef __cplusplus
}
#endif

#endif
