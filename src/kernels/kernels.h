/* kernels/kernels.h — the CPU kernels behind one dispatch table.
 *
 * Expert weights are stored in *panels*: 16 output rows side by side, input
 * index k outer, so one SIMD vector holds the 16 rows' values at one k and a
 * matrix-vector product needs no horizontal sums (llama.cpp-style repacking,
 * same bytes as the checkpoint):
 *   float formats:  values [K][nr]
 *   quantized:      one block per group of inputs, one after the other
 *                   (gstride bytes apart): the group's codes [group/epw][nr]
 *                   uint32 (epw = 32/bits codes per word, the checkpoint's
 *                   own words, only transposed), then its scales [nr], then
 *                   its biases [nr] in their dtype — one sequential stream.
 * nr (lanes) is 16 except in a projection's last panel.
 *
 * Every ISA (avx512vnni, avx512, avxvnni, avx2, portable) fills a moe_cpu_kernels
 * table; the blocking, threading and SwiGLU layer logic live above, written
 * once. */
#ifndef MOE_KERNELS_H
#define MOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "moe/dtype.h"

enum {
    MOE_PANEL = 16,       /* rows per panel */
    MOE_GEMV_MAX_M = 4,   /* tokens one panel_gemv call handles */
    MOE_TILE_N = 32,      /* gemm_tile output columns: two panels */
    MOE_TILE_MAX_M = 16   /* upper bound of any table's mr */
};

typedef enum {
    MOE_WF_F32 = 0,
    MOE_WF_F16,
    MOE_WF_BF16,
    MOE_WF_Q4,
    MOE_WF_Q8,
    MOE_WF_COUNT
} moe_wformat;

/* What every panel of one projection shares. */
typedef struct {
    moe_wformat fmt;
    moe_dtype sdtype;   /* dtype of scales and biases (quantized only) */
    int group_size;     /* quantized only */
    int K;              /* input length */
} moe_panel_format;

typedef struct {
    const void *w;      /* values, or group 0's codes */
    const void *scales; /* group 0's scales */
    const void *biases; /* group 0's biases */
    int nr;             /* lanes in use, 1..16 */
    size_t gstride;     /* quantized: bytes from one group's block to the next */
} moe_panel;

/* Group g's codes, scales or biases in a quantized panel. */
static inline const void *moe_panel_group(const moe_panel *p, const void *part, int g)
{
    return (const unsigned char *)part + (size_t)g * p->gstride;
}

enum {
    MOE_ATTN_LANES = 16,     /* queries in one attn_tile call, one per lane */
    MOE_ATTN_MAX_ROWS = 16,  /* queries in one attn_rows call */
    MOE_ATTN_MAX_KEYS = 256  /* keys in one attn_tile or attn_rows call */
};

typedef struct moe_cpu_kernels {
    const char *name;
    /* out[i][r] = Σ_k W[k][r]·x[i][k] for r < nr, i < m ≤ MOE_GEMV_MAX_M.
     * xsum[i][g] = Σ of x[i] over group g (read for quantized formats only). */
    void (*panel_gemv)(const moe_panel_format *f, const moe_panel *p, int m,
                       const float *const *x, const float *const *xsum, float *const *out);
    /* dst[k][r] = W[k][r] as float for r < nr, 0 for nr ≤ r < 16. */
    void (*panel_unpack)(const moe_panel_format *f, const moe_panel *p, float *dst);
    /* C[i][0..32) (+)= Σ_k A[k][i]·(B0[k][0..16) ‖ B1[k][0..16)) for i < mr;
     * A packed [K][mr], B0/B1 [K][16], C row stride MOE_TILE_N. With
     * accumulate, the sums continue from C: splitting K into blocks gives
     * the same bits as one call (the FMA chains are the same). */
    void (*gemm_tile)(int K, const float *A, const float *B0, const float *B1, float *C, int accumulate);
    int mr;
    /* h[j] = silu(g[j])·u[j], silu(v) = v/(1+e^-v). */
    void (*swiglu)(int n, const float *g, const float *u, float *h);
    /* One step of flash attention (online softmax) over a block of
     * nk ≤ MOE_ATTN_MAX_KEYS keys: key j's rows at k + j·stride and
     * v + j·stride elements (plus the query's kv head column, below), D
     * elements each, of dtype kv: MOE_DTYPE_F32, or MOE_DTYPE_F16 (each
     * vector converted to float as it is loaded; scores, softmax and sums
     * stay float32); attn_rows also MOE_DTYPE_Q8 (kernels/kv_q8.h: stride
     * and columns in bytes, a head's column its block; each vector
     * dequantized as it is loaded). attn_tile takes no Q8: the caller
     * widens a Q8 block once for its tiles (kv_q8_widen).
     * For each query i, with s_j = q_i·k_j for j < lim[i] (later keys of the
     * block are masked out),
     *   m' = max(m_i, max_j s_j), a = e^(m_i − m'),
     *   l_i ← a·l_i + Σ_j e^(s_j − m'),  o_i ← a·o_i + Σ_j e^(s_j − m')·v_j,  m_i ← m'.
     * Start from m = −∞, l = 0, o = 0 (a query that has seen no key yet
     * keeps them); the attention output is o_i / l_i. q carries the softmax
     * scale.
     * attn_tile: MOE_ATTN_LANES queries of one kv head, one per lane: qt and
     *            ot [D][16] (d outer), m, l and lim [16]. For prefill: each
     *            key and value element read serves 16 queries. (A half
     *            block read by several tiles is best widened once, with
     *            f16_to_f32, and passed as float32.)
     * attn_rows: nq ≤ MOE_ATTN_MAX_ROWS queries as rows, q and o [nq][D], m,
     *            l and lim [nq]; query i reads kv head column (i / qpk)·D of
     *            each row, so one call spans nq / qpk kv heads. For decode:
     *            whole cache rows read in order. */
    void (*attn_tile)(int D, int nk, const float *qt, moe_dtype kv, const void *k, const void *v, size_t stride,
                      const int *lim, float *m, float *l, float *ot);
    void (*attn_rows)(int D, int nq, int qpk, int nk, const float *q, moe_dtype kv, const void *k, const void *v,
                      size_t stride, const int *lim, float *m, float *l, float *o);
    /* dst[i] = src[i] as IEEE half for i < n, rounded to nearest even: the
     * bits moe_f32_to_f16 gives (the F16C instruction where the ISA has it).
     * For writing a half KV cache (moe_kv_store). */
    void (*f32_to_f16)(size_t n, const float *src, uint16_t *dst);
    /* dst[i] = src[i] (IEEE half) as float for i < n, exactly (a NaN stays
     * a NaN of its sign, perhaps made quiet). For widening a block of a half
     * KV cache once for all the attn_tile calls that read it. */
    void (*f16_to_f32)(size_t n, const uint16_t *src, float *dst);
    /* An 8-bit KV cache (kernels/kv_q8.h): kv_q8_store quantizes n head
     * vectors of D floats from src into n head blocks at dst, the bits of
     * moe_kv_q8_store_ref (moe_kv_store); kv_q8_widen gives nb head blocks
     * (stride bytes apart, from src) as float32 rows [nb][D] at dst, the
     * values moe_kv_q8_value gives (for the tiles of prefill). */
    void (*kv_q8_store)(size_t n, int D, const float *src, void *dst);
    void (*kv_q8_widen)(int nb, int D, const void *src, size_t stride, float *dst);
    /* Quantized panels with int8 activations (see moe_quantize_act_i8):
     * out[i][r] = Σ_g scale·dx[i][g]·Σ_{k∈g} q·xq[i][k] + bias·xsum[i][g].
     * NULL where the ISA has no int8 dot product. */
    void (*panel_gemv_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                          const float *const *dx, const float *const *xsum, float *const *out);
    /* The same for a tile of m ≤ mr_i8 tokens packed by moe_pack_act_i8
     * (q, d = dx, s = xsum): each code word is split into its codes once
     * for all m tokens. A token's out has the bits panel_gemv_i8 gives it.
     * NULL (mr_i8 0) where the ISA has none; the layer then uses
     * panel_gemv_i8. */
    void (*panel_gemm_i8)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *q,
                          const float *d, const float *s, float *const *out);
    int mr_i8;
    /* int8 activations with their residual digit (MOE_ACT_INT8X2: x ≈
     * dx·(xq + xr/MOE_I8_RESIDUAL_STEPS), see moe_quantize_act_i8_residual)
     * in one call, the codes split once for both digits:
     * out[i][r] = Σ_g scale·(dx[i][g]/MOE_I8_RESIDUAL_STEPS)·
     *             Σ_{k∈g} q·(MOE_I8_RESIDUAL_STEPS·xq[i][k] + xr[i][k]) + bias·xsum[i][g],
     * exact integer sums (groups of at most 128), so within float rounding
     * of panel_gemv_i8 on the two digits as two rows (the residual's scale
     * dx/MOE_I8_RESIDUAL_STEPS, its sums 0), summed. panel_gemm_i8x2: the
     * same for a tile of m ≤ mr_i8 tokens packed by moe_pack_act_i8x2 (the
     * digits joined, a; d = dx, s = xsum), a token's out the bits
     * panel_gemv_i8x2 gives it. NULL where the ISA has none: the layer then
     * passes the residuals as rows of their own. */
    void (*panel_gemv_i8x2)(const moe_panel_format *f, const moe_panel *p, int m, const int8_t *const *xq,
                            const int8_t *const *xr, const float *const *dx, const float *const *xsum,
                            float *const *out);
    void (*panel_gemm_i8x2)(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *a,
                            const float *d, const float *s, float *const *out);
    /* panel_gemv_i8x2 on rows whose digits the caller joined once for all
     * the panels they meet (moe_pack_act_i8x2 of each row alone, m = 1):
     * the same bits. Set where a kernel set multiplies joined digits
     * (AVX2's vpmaddwd) and would otherwise join them in every call; NULL
     * where panel_gemv_i8x2 takes the digits apart. */
    void (*panel_gemv_i8x2_joined)(const moe_panel_format *f, const moe_panel *p, int m, const int16_t *const *rows,
                                   const float *const *dx, const float *const *xsum, float *const *out);
    /* moe_quantize_act_i8 (the same xq and dx, bit for bit) and
     * moe_group_sums (xsum, summed in another order) in one pass over x;
     * with xr, also moe_quantize_act_i8_residual's digits (bit for bit).
     * NULL where the portable functions serve. */
    void (*quantize_act_i8)(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx, float *xsum,
                            int8_t *xr);
    /* moe_pack_act_i8x2, the same bytes; NULL where the portable one serves. */
    void (*pack_act_i8x2)(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                          const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s);
} moe_cpu_kernels;

/* The table in use (best supported, or as chosen by moe_cpu_select_isa). */
const moe_cpu_kernels *moe_kernels(void);
/* A table by name if this CPU can run it, else NULL. */
const moe_cpu_kernels *moe_kernels_by_name(const char *name);

/* The per-ISA tables (kernels/cpu/<isa>/table.c). */
extern const moe_cpu_kernels moe_kernels_portable;
extern const moe_cpu_kernels moe_kernels_avx2;
extern const moe_cpu_kernels moe_kernels_avx512;
extern const moe_cpu_kernels moe_kernels_avx512vnni;
extern const moe_cpu_kernels moe_kernels_avxvnni;

/* Format facts. */
int moe_wformat_bits(moe_wformat f);            /* 0 for float formats */
moe_dtype moe_wformat_value_dtype(moe_wformat f); /* float formats: the dtype of a value */
size_t moe_wformat_value_bytes(moe_wformat f);  /* float formats: bytes a value */
static inline int moe_wformat_is_quant(moe_wformat f) { return f == MOE_WF_Q4 || f == MOE_WF_Q8; }

/* Packs rows x[i][0..K) for i < m into dst [K][mr] (zeros for i ≥ m). */
void moe_pack_a(int K, int m, int mr, const float *const *x, float *dst);
/* sums[g] = Σ x[g·group .. (g+1)·group) for g < K/group. */
void moe_group_sums(int K, int group, const float *x, float *sums);

/* int8 activations, symmetric per weight group: dx[g] = max|x| over g / 127,
 * xq = round(x/dx), in the order panel_gemv_i8 reads for format f: natural
 * for Q8; for Q4, each run of 8 inputs as its 4 even then its 4 odd ones
 * (the order of low and high nibbles in a code word). */
void moe_quantize_act_i8(moe_wformat f, int K, int group, const float *x, int8_t *xq, float *dx);
/* The residual of that quantization as a second int8 digit: xr =
 * round((x − dx·xq) / (dx/MOE_I8_RESIDUAL_STEPS)), clamped to ±127, in the
 * same order. x ≈ dx·xq + (dx/MOE_I8_RESIDUAL_STEPS)·xr to about 2^-15 of a
 * group's largest |x|: two int8 dot products give nearly float accuracy
 * while the weights' codes are split once for both. */
enum { MOE_I8_RESIDUAL_STEPS = 254 };
void moe_quantize_act_i8_residual(moe_wformat f, int K, int group, const float *x, const int8_t *xq,
                                  const float *dx, int8_t *xr);
/* Position in that order of input k. */
static inline int moe_act_i8_index(moe_wformat f, int k)
{
    return f == MOE_WF_Q4 ? (k & ~7) | ((k & 1) << 2) | ((k & 7) >> 1) : k;
}
/* A tile of m tokens' int8 activations for panel_gemm_i8, interleaved in
 * 32-byte chunks so that one pointer walks all m tokens: q [K/32][m][32]
 * (chunk b of token i, xq[i][32b..32b+32) in the order above, at
 * (b·m + i)·32), d [K/group][m] and s [K/group][m] (dx[i][g] and xsum[i][g]
 * at g·m + i). K is a multiple of 32 (of the group size). */
void moe_pack_act_i8(int K, int group, int m, const int8_t *const *xq, const float *const *dx,
                     const float *const *xsum, int8_t *q, float *d, float *s);

/* A tile of m tokens' two int8 digits for panel_gemm_i8x2, joined once for
 * all the panels that read it: each input's MOE_I8_RESIDUAL_STEPS·xq + xr
 * as int16 (|·| ≤ 32639), in runs of 8 inputs [K/8][m][8] (token i's run b
 * at (b·m + i)·8), each run in the order moe_act_i8x2_pos gives: the pairs
 * of inputs that one int32 of code pairs meets (Q4: j and j+4 of a code
 * word; Q8: j and j+2 of each 4). xq and xr in moe_quantize_act_i8's order;
 * d [K/group][m] and s as moe_pack_act_i8 packs them, or neither where
 * both are NULL (a row joined alone keeps its own). K a multiple of 32. */
void moe_pack_act_i8x2(moe_wformat f, int K, int group, int m, const int8_t *const *xq, const int8_t *const *xr,
                       const float *const *dx, const float *const *xsum, int16_t *a, float *d, float *s);
/* One row's two digits joined alone, as moe_pack_act_i8x2 joins a tile of
 * one without its scales (they stay in the row's own dx and xsum), through
 * k's pack_act_i8x2 where it has one: a row for panel_gemv_i8x2_joined. */
void moe_join_row_i8x2(const moe_cpu_kernels *k, moe_wformat f, int K, int group, const int8_t *xq,
                       const int8_t *xr, int16_t *a);
/* Position in its run of 8 of input j (0..7 within the run). */
static inline int moe_act_i8x2_pos(moe_wformat f, int j)
{
    return f == MOE_WF_Q4 ? ((j & 3) << 1) | (j >> 2) : (j & 4) | ((j & 1) << 1) | ((j & 2) >> 1);
}

#endif
