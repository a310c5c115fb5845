/* models/transformer.h — the weights and run state of every family moe runs
 * (OLMoE, Qwen3-MoE, Mixtral): one decoder-only transformer whose layers
 * differ only in choices read from config.json (moe_model_config), llama2.c
 * style, each buffer with its shape in a trailing comment. D = hidden_size,
 * H heads of hd, KV heads, E experts, I expert hidden, V vocab, T tokens of a
 * chunk. Weights and buffers belong to the model's backend (backend.h):
 * pointers here may be device addresses, handed back to it, never read. */
#ifndef MOE_MODELS_TRANSFORMER_H
#define MOE_MODELS_TRANSFORMER_H

#include "backend/backend.h"
#include "io/model_config.h"
#include "moe/model.h"
#include "moe/switchglu.h"

typedef struct {
    float *attn_norm;          /* (D) input_layernorm */
    /* q, k and v rows stacked in one projection when they share a format
     * and 16-row panels (one pass over the input), else three */
    moe_bk_linear *wqkv;       /* (H·hd + 2·KV·hd, D), or NULL */
    moe_bk_linear *wq;         /* (H·hd, D), when not stacked */
    moe_bk_linear *wk;         /* (KV·hd, D) */
    moe_bk_linear *wv;         /* (KV·hd, D) */
    moe_bk_linear *wo;         /* (D, H·hd) */
    float *q_norm;             /* (H·hd) whole projection, (hd) per head, or NULL */
    float *k_norm;             /* (KV·hd) whole projection, (hd) per head, or NULL */
    float *mlp_norm;           /* (D) post_attention_layernorm */
    moe_bk_linear *router;     /* (E, D); NULL for a dense MLP */
    /* the experts, gate/up (E, I, D) and down (E, D, I); a dense SwiGLU MLP
     * is the same layer with one expert that every token takes at weight 1
     * (so it gets the fused gate-up too) */
    moe_bk_experts *experts;
} model_layer;

/* The activations of one forward over T rows — the tokens of every
 * sequence of a batch, one sequence after another — held by the model and
 * grown as batches need (a model runs one batch at a time). */
typedef struct {
    int rows;                  /* capacity in token rows */
    int logit_rows;            /* capacity of `logits` in rows */
    float *x;                  /* (T, D) residual stream */
    float *xb;                 /* (T, D) normalised input of a block */
    float *xb2;                /* (T, D) a block's output */
    float *q;                  /* (T, H·hd) */
    float *k, *v;              /* (T, KV·hd) this chunk's keys and values */
    float *qkv;                /* (T, H·hd + 2·KV·hd) the stacked projection's output */
    float *att;                /* (T, H·hd) attention output */
    float *router_logits;      /* (T, E) */
    int32_t *expert_idx;       /* (T, top_k) */
    float *expert_w;           /* (T, top_k) */
    int32_t *dense_idx;        /* (T) zeros: a dense MLP's one expert */
    float *dense_w;            /* (T) ones */
    float *rope_cos, *rope_sin;/* (T, hd/2) each row's angles at its own position */
    float *logits;             /* (R, V) the classifier's rows, when they are not
                                  written straight into one caller's buffer */
    int32_t *tokens;           /* (T) host: the batch's token ids one after another */
} model_workspace;

struct moe_model {
    moe_model_config cfg;
    moe_model_options opt;
    moe_backend *be;           /* where weights live and the forward runs */
    int bits;                  /* experts' quantization bits, 0 = float */
    moe_act_mode act;          /* activations of quantized projections */
    moe_bk_linear *embed;      /* (V, D) */
    model_layer *layers;       /* (num_layers) */
    float *final_norm;         /* (D) */
    moe_bk_linear *lm_head;    /* (V, D); the embedding when tied */
    model_workspace ws;
};

/* The KV cache and position of one sequence. */
struct moe_context {
    moe_model *m;
    int max_tokens, max_chunk, pos;
    moe_dtype kv_dtype;        /* F32 or F16 */
    void *key_cache;           /* (layers, max_tokens, KV·hd) of kv_dtype */
    void *value_cache;         /* (layers, max_tokens, KV·hd) of kv_dtype */
};

/* One forward's sequences: items[s]'s tokens are rows row0[s] ..
 * row0[s] + items[s].n of the workspace, T rows in all. */
typedef struct {
    const moe_batch_item *items;
    int count;
    int T;
    const int *row0;
} model_batch;

/* The classifier's rows an item needs: its positions' when it asks for
 * the logits of all of them, else its last position's when it asks for
 * logits or the greedy choice, else none. */
static inline int model_item_logit_rows(const moe_batch_item *it)
{
    if (!it->logits && !it->greedy) return 0;
    return it->logits && it->all_positions ? it->n : 1;
}

void model_free_weights(moe_model *m);

/* The activation mode for quantized weights: the option's, or moe's
 * choice for -1 (int8 with its residual digit where the CPU has int8 dot
 * products, else float). */
moe_act_mode model_choose_activations(const moe_model *m, int quantized);

/* The KV cache's dtype: the option's, or for -1 f16 where activations
 * are already approximate (quantized weights with int8 activations) and
 * f32 on the exact paths (float weights, or float activations), so that
 * those stay within float rounding of the reference. */
moe_dtype model_choose_kv_dtype(const moe_model *m);

/* Checkpoint loading (load.c) and random weights of a published model's
 * shapes (synthetic.c). */
moe_status model_load_dir(moe_model *m, const char *dir);
moe_status model_synthetic(moe_model *m, const char *arch, int bits, uint64_t seed);
const char *model_synthetic_name(const char *arch);

/* The forward pass over a batch (checked), each sequence's tokens at its
 * next positions (forward.c); the workspace must hold b->T rows and the
 * classifier's rows. */
moe_status model_forward(moe_model *m, const model_batch *b);

#endif
