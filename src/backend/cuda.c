/* backend/cuda.c — the CUDA backend: device memory on the first GPU and the
 * kernels of kernels/cuda/ (built only with -DMOE_CUDA=ON; backend/
 * cuda_stub.c stands in otherwise).
 *
 * Weights live in device memory in the checkpoint's own format (float32,
 * float16, bfloat16, or MLX affine codes with their scales and biases),
 * copied a block of rows or an expert at a time from the host bytes the
 * loader hands over; the kernels dequantize as they read, and no
 * dequantized copy exists. Activations are float32 and quantized weights
 * always meet them as floats: the act mode the loader asks for (int8 on
 * CPUs that have int8 dot products) is a CPU matter, ignored here.
 *
 * Every operation is queued on one stream and returns at once; download
 * waits for the stream, so a failure inside a kernel surfaces there. Faults
 * a kernel finds in its data (a non-finite router logit, an expert index
 * outside the layer) are kept in a small device record, read back at each
 * download and reported as the error they are. Every CUDA call and launch
 * is checked; a failure names the call. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/memory.h"
#include "kernels/cuda/cuda_kernels.h"
#include "layers/expert_store.h"

typedef struct {
    cudaStream_t stream;
    int *fault;                  /* [4] the first fault a kernel recorded */
    void *work;                  /* the expert layers' shared workspace */
    size_t work_bytes;
    void *attn_work;             /* attention's partial results when it splits the cache */
    size_t attn_work_bytes;
    int32_t *tokens;             /* embed's token ids, copied over */
    size_t tokens_cap;
    float *inv_freq;             /* RoPE's inverse frequencies for (half, theta) */
    size_t inv_cap;
    int inv_half;
    double inv_theta;
} cuda_state;

typedef struct {
    char name[96];
    moe_cuda_weights w;          /* [out, in]: w.rows = out, w.K = in */
    unsigned char *loaded;       /* per row (host) */
    int complete;                /* every row loaded */
} cuda_linear;

typedef struct {
    moe_switchglu_config cfg;
    moe_cuda_weights gate, up, down;
    unsigned char *loaded;       /* per expert (host) */
    int n_loaded;
    int fused;
} cuda_experts;

#define STATE(b) ((cuda_state *)(b)->impl)
#define LIN(l) ((cuda_linear *)(l))
#define EXP(x) ((cuda_experts *)(x))

/* ---- errors ---- */

/* `call` may be the call's whole text: its name is what comes before '(' */
static moe_status cuda_error(cudaError_t e, const char *call, const char *what)
{
    return moe_error_set(e == cudaErrorMemoryAllocation ? MOE_ERR_NOMEM : MOE_ERR_DEVICE, "cuda backend: %.*s (%s): %s",
                         (int)strcspn(call, "("), call, what, cudaGetErrorString(e));
}

/* a CUDA call or a launcher: its error returned, naming it */
#define CU_TRY(call, what)                                               \
    do {                                                                 \
        cudaError_t cu_e_ = (call);                                      \
        if (cu_e_ != cudaSuccess) return cuda_error(cu_e_, #call, what); \
    } while (0)

static moe_status device_alloc(void **p, size_t bytes, const char *what)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *p = NULL;
        return moe_error_set(e == cudaErrorMemoryAllocation ? MOE_ERR_NOMEM : MOE_ERR_DEVICE,
                             "cuda backend: cudaMalloc of %zu bytes for %s: %s", bytes, what, cudaGetErrorString(e));
    }
    return MOE_OK;
}

/* Grows a device buffer to at least `bytes` (contents not kept). */
static moe_status device_grow(void **p, size_t *cap, size_t bytes, const char *what)
{
    if (bytes <= *cap && *p) return MOE_OK;
    CU_TRY(cudaFree(*p), what);   /* waits for work that may still use it */
    *p = NULL;
    *cap = 0;
    moe_status st = device_alloc(p, bytes, what);
    if (st == MOE_OK) *cap = bytes;
    return st;
}

/* Reads back and clears the fault record: MOE_OK, or the fault's error. */
static moe_status check_fault(cuda_state *s)
{
    int f[4];
    CU_TRY(cudaMemcpyAsync(f, s->fault, sizeof f, cudaMemcpyDeviceToHost, s->stream), "fault record");
    CU_TRY(cudaStreamSynchronize(s->stream), "fault record");
    if (f[0] == MOE_CUDA_FAULT_NONE) return MOE_OK;
    CU_TRY(cudaMemsetAsync(s->fault, 0, sizeof f, s->stream), "fault record");
    if (f[0] == MOE_CUDA_FAULT_ROUTER_LOGIT) {
        float z;
        memcpy(&z, &f[3], sizeof z);
        return moe_error_set(MOE_ERR_RANGE, "router: token %d, expert %d: logit %g is not finite", f[1], f[2],
                             (double)z);
    }
    if (f[0] == MOE_CUDA_FAULT_EXPERT_INDEX)
        return moe_error_set(MOE_ERR_RANGE, "expert layer: token %d, choice %d: expert index %d is outside the layer's "
                             "experts", f[1], f[2], f[3]);
    return moe_error_set(MOE_ERR_DEVICE, "cuda backend: unknown fault %d recorded on the device", f[0]);
}

/* ---- memory ---- */

static void *cuda_alloc(moe_backend *b, size_t bytes, const char *what)
{
    (void)b;
    void *p;
    return device_alloc(&p, bytes, what) == MOE_OK ? p : NULL;
}

static void cuda_free(moe_backend *b, void *p)
{
    (void)b;
    if (p) cudaFree(p);   /* nothing to report to: a failed free leaks at worst */
}

static moe_status cuda_upload(moe_backend *b, void *dst, const void *host_src, size_t bytes)
{
    /* from pageable memory the call returns once the source is staged, so
     * the caller may free it at once */
    if (bytes) CU_TRY(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, STATE(b)->stream), "upload");
    return MOE_OK;
}

static moe_status cuda_download(moe_backend *b, void *host_dst, const void *src, size_t bytes)
{
    cuda_state *s = STATE(b);
    if (bytes) CU_TRY(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, s->stream), "download");
    CU_TRY(cudaStreamSynchronize(s->stream), "download: the work queued before it");
    return check_fault(s);
}

/* ---- weights ---- */

/* A projection's format and sizes for `experts` matrices of [rows, K],
 * its arrays allocated. */
static moe_status weights_init(moe_cuda_weights *w, const moe_expert_weights *fmt, int experts, int rows, int K,
                               const char *what)
{
    moe_panel_format f;
    moe_status st = moe_expert_format_check(fmt, K, what, &f);
    if (st != MOE_OK) return st;
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->K = K;
    if (fmt->bits == 0) {
        w->fmt = fmt->dtype == MOE_DTYPE_F32 ? MOE_CUDA_W_F32 : fmt->dtype == MOE_DTYPE_F16 ? MOE_CUDA_W_F16
                                                                                           : MOE_CUDA_W_BF16;
        w->w_row = (size_t)K * moe_dtype_size(fmt->dtype);
    } else {
        w->fmt = fmt->bits == 4 ? MOE_CUDA_W_Q4 : MOE_CUDA_W_Q8;
        w->sdtype = fmt->dtype;
        w->group = fmt->group_size;
        w->w_row = (size_t)K * (size_t)fmt->bits / 8;
        w->s_row = (size_t)(K / fmt->group_size) * moe_dtype_size(fmt->dtype);
    }
    w->w_matrix = (size_t)rows * w->w_row;
    w->s_matrix = (size_t)rows * w->s_row;
    size_t n = (size_t)experts;
    if ((st = device_alloc((void **)&w->w, n * w->w_matrix, what)) != MOE_OK) return st;
    if (w->s_row && ((st = device_alloc((void **)&w->s, n * w->s_matrix, what)) != MOE_OK ||
                     (st = device_alloc((void **)&w->b, n * w->s_matrix, what)) != MOE_OK))
        return st;
    return MOE_OK;
}

static size_t weights_bytes(const moe_cuda_weights *w, int experts)
{
    return (size_t)experts * (w->w_matrix + 2 * w->s_matrix);
}

static void weights_free(moe_cuda_weights *w)
{
    cudaFree((void *)w->w), cudaFree((void *)w->s), cudaFree((void *)w->b);
    w->w = w->s = w->b = NULL;
}

/* Rows [row0, row0 + rows) of matrix e from row-major host bytes of the
 * same format. */
static moe_status weights_put(cuda_state *s, moe_cuda_weights *w, int e, int row0, int rows,
                              const moe_expert_weights *src, const char *what)
{
    moe_panel_format f;
    moe_status st = moe_expert_format_check(src, w->K, what, &f);
    if (st != MOE_OK) return st;
    int quant = w->fmt == MOE_CUDA_W_Q4 || w->fmt == MOE_CUDA_W_Q8;
    int same = quant ? src->bits == (w->fmt == MOE_CUDA_W_Q4 ? 4 : 8) && (int)src->dtype == w->sdtype &&
                           src->group_size == w->group
                     : src->bits == 0 && (w->fmt == MOE_CUDA_W_F32 ? src->dtype == MOE_DTYPE_F32
                                          : w->fmt == MOE_CUDA_W_F16 ? src->dtype == MOE_DTYPE_F16
                                                                     : src->dtype == MOE_DTYPE_BF16);
    if (!same)
        return moe_error_set(MOE_ERR_DTYPE, "%s: rows [%d, %d) differ in format from the projection's", what, row0,
                             row0 + rows);
    if (!src->weight || (quant && (!src->scales || !src->biases)))
        return moe_error_set(MOE_ERR_INVALID_ARG, "%s: weight, scales or biases pointer is NULL", what);
    char *wd = (char *)w->w + (size_t)e * w->w_matrix + (size_t)row0 * w->w_row;
    CU_TRY(cudaMemcpyAsync(wd, src->weight, (size_t)rows * w->w_row, cudaMemcpyHostToDevice, s->stream), what);
    if (quant) {
        size_t at = (size_t)e * w->s_matrix + (size_t)row0 * w->s_row, n = (size_t)rows * w->s_row;
        CU_TRY(cudaMemcpyAsync((char *)w->s + at, src->scales, n, cudaMemcpyHostToDevice, s->stream), what);
        CU_TRY(cudaMemcpyAsync((char *)w->b + at, src->biases, n, cudaMemcpyHostToDevice, s->stream), what);
    }
    return MOE_OK;
}

static void linear_free(moe_backend *b, moe_bk_linear *l)
{
    (void)b;
    if (!l) return;
    weights_free(&LIN(l)->w);
    moe_free(LIN(l)->loaded);
    moe_free(l);
}

static moe_status linear_create(moe_backend *b, int out, int in, const moe_expert_weights *fmt, const char *name,
                                moe_act_mode act, moe_bk_linear **result)
{
    (void)b, (void)act;
    if (!result) return moe_error_set(MOE_ERR_INVALID_ARG, "linear create: output pointer is NULL");
    *result = NULL;
    if (!name) name = "linear";
    if (out < 1 || in < 1) return moe_error_set(MOE_ERR_SHAPE, "%s: shape [%d, %d] must be positive", name, out, in);
    cuda_linear *l = moe_calloc(sizeof *l, name);
    if (!l) return MOE_ERR_NOMEM;
    snprintf(l->name, sizeof l->name, "%s", name);
    moe_status st = (l->loaded = moe_calloc((size_t)out, "row flags")) ? MOE_OK : MOE_ERR_NOMEM;
    if (st == MOE_OK) st = weights_init(&l->w, fmt, 1, out, in, l->name);
    if (st != MOE_OK) {
        linear_free(b, (moe_bk_linear *)l);
        return st;
    }
    *result = (moe_bk_linear *)l;
    return MOE_OK;
}

static moe_status linear_load_rows(moe_backend *b, moe_bk_linear *bl, int row0, int rows,
                                   const moe_expert_weights *w)
{
    cuda_linear *l = LIN(bl);
    if (!l) return moe_error_set(MOE_ERR_INVALID_ARG, "linear load: projection is NULL");
    if (row0 < 0 || rows < 1 || row0 + rows > l->w.rows)
        return moe_error_set(MOE_ERR_SHAPE, "%s: rows [%d, %d) are outside its %d rows", l->name, row0, row0 + rows,
                             l->w.rows);
    moe_status st = weights_put(STATE(b), &l->w, 0, row0, rows, w, l->name);
    if (st != MOE_OK) return st;
    memset(l->loaded + row0, 1, (size_t)rows);
    return MOE_OK;
}

static size_t linear_bytes(const moe_bk_linear *l) { return l ? weights_bytes(&LIN(l)->w, 1) : 0; }

static const char *linear_name(const moe_bk_linear *l) { return ((const cuda_linear *)l)->name; }

/* MOE_OK when every row was loaded */
static moe_status linear_ready(cuda_linear *l)
{
    if (l->complete) return MOE_OK;
    for (int r = 0; r < l->w.rows; r++)
        if (!l->loaded[r]) return moe_error_set(MOE_ERR_INVALID_ARG, "%s: row %d was never loaded", l->name, r);
    l->complete = 1;
    return MOE_OK;
}

static void experts_free(moe_backend *b, moe_bk_experts *bx)
{
    (void)b;
    cuda_experts *x = EXP(bx);
    if (!x) return;
    weights_free(&x->gate), weights_free(&x->up), weights_free(&x->down);
    moe_free(x->loaded);
    moe_free(x);
}

static moe_status experts_create(moe_backend *b, const moe_switchglu_config *cfg, const moe_expert_weights *gate,
                                 const moe_expert_weights *up, const moe_expert_weights *down, moe_bk_experts **out)
{
    if (!out || !cfg) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer create: config or output is NULL");
    *out = NULL;
    int E = cfg->num_experts, D = cfg->dim, I = cfg->hidden;
    if (E < 1 || D < 1 || I < 1)
        return moe_error_set(MOE_ERR_SHAPE, "expert layer: %d experts of dim %d, hidden %d must be positive", E, D, I);
    if (!gate || !up || !down) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: gate, up or down is NULL");
    if (gate->dtype != up->dtype || gate->bits != up->bits || gate->group_size != up->group_size)
        return moe_error_set(MOE_ERR_DTYPE, "expert layer: gate and up differ in format");
    cuda_experts *x = moe_calloc(sizeof *x, "expert layer");
    if (!x) return MOE_ERR_NOMEM;
    x->cfg = *cfg;
    x->fused = cfg->fuse_gate_up != 0;
    moe_status st = (x->loaded = moe_calloc((size_t)E, "expert flags")) ? MOE_OK : MOE_ERR_NOMEM;
    if (st == MOE_OK) st = weights_init(&x->gate, gate, E, I, D, "gate");
    if (st == MOE_OK) st = weights_init(&x->up, up, E, I, D, "up");
    if (st == MOE_OK) st = weights_init(&x->down, down, E, D, I, "down");
    if (st != MOE_OK) {
        experts_free(b, (moe_bk_experts *)x);
        return st;
    }
    *out = (moe_bk_experts *)x;
    return MOE_OK;
}

static moe_status experts_load(moe_backend *b, moe_bk_experts *bx, int e, const moe_expert_weights *gate,
                               const moe_expert_weights *up, const moe_expert_weights *down)
{
    cuda_experts *x = EXP(bx);
    if (!x) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer load: layer is NULL");
    if (e < 0 || e >= x->cfg.num_experts)
        return moe_error_set(MOE_ERR_RANGE, "expert layer load: expert %d is outside 0..%d", e, x->cfg.num_experts - 1);
    moe_status st;
    if ((st = weights_put(STATE(b), &x->gate, e, 0, x->gate.rows, gate, "gate")) != MOE_OK ||
        (st = weights_put(STATE(b), &x->up, e, 0, x->up.rows, up, "up")) != MOE_OK ||
        (st = weights_put(STATE(b), &x->down, e, 0, x->down.rows, down, "down")) != MOE_OK)
        return st;
    if (!x->loaded[e]) x->loaded[e] = 1, x->n_loaded++;
    return MOE_OK;
}

/* fused and unfused read the same bytes: switching is a flag */
static moe_status experts_set_fused(moe_backend *b, moe_bk_experts *x, int fused)
{
    (void)b;
    if (!x) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: layer is NULL");
    EXP(x)->fused = fused != 0;
    return MOE_OK;
}

static int experts_fused(const moe_bk_experts *x) { return x ? ((const cuda_experts *)x)->fused : 0; }

static size_t experts_bytes(const moe_bk_experts *bx)
{
    const cuda_experts *x = (const cuda_experts *)bx;
    if (!x) return 0;
    int E = x->cfg.num_experts;
    return weights_bytes(&x->gate, E) + weights_bytes(&x->up, E) + weights_bytes(&x->down, E);
}

/* ---- operations ---- */

static moe_status op_embed(moe_backend *b, const moe_bk_linear *table, const int32_t *tokens, int T, float *x)
{
    cuda_state *s = STATE(b);
    cuda_linear *l = LIN(table);
    moe_status st = linear_ready(l);
    if (st != MOE_OK) return st;
    for (int t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= l->w.rows)
            return moe_error_set(MOE_ERR_RANGE, "embedding: token id %d (at %d) is outside 0..%d", (int)tokens[t], t,
                                 l->w.rows - 1);
    if (T <= 0) return MOE_OK;
    if ((st = device_grow((void **)&s->tokens, &s->tokens_cap, sizeof(int32_t) * (size_t)T, "token ids")) != MOE_OK)
        return st;
    CU_TRY(cudaMemcpyAsync(s->tokens, tokens, sizeof(int32_t) * (size_t)T, cudaMemcpyHostToDevice, s->stream),
           "token ids");
    CU_TRY(moe_cuda_embed(&l->w, s->tokens, T, x, s->stream), l->name);
    return MOE_OK;
}

static moe_status op_rmsnorm(moe_backend *b, int rows, int n, const float *x, const float *w, float eps, float *y)
{
    CU_TRY(moe_cuda_rmsnorm(rows, n, x, w, eps, y, STATE(b)->stream), "rmsnorm");
    return MOE_OK;
}

static moe_status op_linear(moe_backend *b, moe_bk_linear *bl, const float *x, int T, float *y)
{
    cuda_linear *l = LIN(bl);
    if (!l || !x || !y) return moe_error_set(MOE_ERR_INVALID_ARG, "linear forward: projection, x and y must not be NULL");
    if (x == y) return moe_error_set(MOE_ERR_INVALID_ARG, "%s: y must not alias x", l->name);
    moe_status st = linear_ready(l);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_linear(&l->w, x, T, y, STATE(b)->stream), l->name);
    return MOE_OK;
}

static moe_status op_split_cols(moe_backend *b, const float *src, int T, int n, const int *widths, float *const *dst)
{
    if (n < 1 || n > MOE_CUDA_SPLIT_MAX)
        return moe_error_set(MOE_ERR_INVALID_ARG, "split columns: %d parts (1..%d)", n, MOE_CUDA_SPLIT_MAX);
    CU_TRY(moe_cuda_split_cols(src, T, n, widths, dst, STATE(b)->stream), "split columns");
    return MOE_OK;
}

static moe_status op_clip(moe_backend *b, size_t n, float *x, float limit)
{
    CU_TRY(moe_cuda_clip(n, x, limit, STATE(b)->stream), "clip");
    return MOE_OK;
}

static moe_status op_rope_angles(moe_backend *b, int T, int hd, double theta, int pos, float *cos_out, float *sin_out)
{
    cuda_state *s = STATE(b);
    int half = hd / 2;
    if (half < 1) return MOE_OK;
    if (half != s->inv_half || theta != s->inv_theta) {
        /* the CPU's float32 expression (kernels/norm_rope.c), once per
         * (head_dim, theta) */
        float *host = moe_alloc(sizeof(float) * (size_t)half, "rotation frequencies");
        if (!host) return MOE_ERR_NOMEM;
        for (int i = 0; i < half; i++) {
            float exponent = (float)(2 * i) / (float)hd;
            host[i] = 1.0f / powf((float)theta, exponent);
        }
        moe_status st = device_grow((void **)&s->inv_freq, &s->inv_cap, sizeof(float) * (size_t)half,
                                    "rotation frequencies");
        if (st == MOE_OK) st = cuda_upload(b, s->inv_freq, host, sizeof(float) * (size_t)half);
        moe_free(host);
        if (st != MOE_OK) {
            s->inv_half = 0;
            return st;
        }
        s->inv_half = half;
        s->inv_theta = theta;
    }
    CU_TRY(moe_cuda_rope_angles(T, half, s->inv_freq, pos, cos_out, sin_out, s->stream), "rope angles");
    return MOE_OK;
}

static moe_status op_rope(moe_backend *b, int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t)
{
    CU_TRY(moe_cuda_rope(T, heads, hd, x, cos_t, sin_t, STATE(b)->stream), "rope");
    return MOE_OK;
}

static moe_status op_kv_store(moe_backend *b, moe_dtype kv_dtype, const float *src, void *dst, size_t n, int hd)
{
    (void)hd; /* the float caches' rows have no groups (no Q8 here: backend.h's kv_q8) */
    cuda_state *s = STATE(b);
    if (kv_dtype == MOE_DTYPE_F32) {
        if (n) CU_TRY(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, s->stream), "kv store");
        return MOE_OK;
    }
    if (kv_dtype != MOE_DTYPE_F16)
        return moe_error_set(MOE_ERR_DTYPE, "kv store: cache dtype %s is not F32 or F16", moe_dtype_name(kv_dtype));
    CU_TRY(moe_cuda_store_f16(src, dst, n, s->stream), "kv store");
    return MOE_OK;
}

static moe_status op_attention(moe_backend *b, int T, int pos, int heads, int kv_heads, int hd, float scale,
                               const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                               float *out)
{
    if (kv_dtype != MOE_DTYPE_F32 && kv_dtype != MOE_DTYPE_F16)
        return moe_error_set(MOE_ERR_DTYPE, "attention: cache dtype %s is not F32 or F16", moe_dtype_name(kv_dtype));
    if (hd < 1 || hd > 1024 || kv_heads < 1 || heads % kv_heads)
        return moe_error_set(MOE_ERR_SHAPE, "attention: %d heads over %d kv heads of dim %d", heads, kv_heads, hd);
    cuda_state *s = STATE(b);
    int f16 = kv_dtype == MOE_DTYPE_F16;
    size_t need = moe_cuda_attention_workspace(T, pos, heads, kv_heads, hd, f16, k, v, kv_stride);
    if (need) {
        moe_status st = device_grow(&s->attn_work, &s->attn_work_bytes, need, "attention workspace");
        if (st != MOE_OK) return st;
    }
    void *work = need ? s->attn_work : NULL;
    CU_TRY(moe_cuda_attention(T, pos, heads, kv_heads, hd, scale, q, f16, k, v, kv_stride, out, work, s->stream),
           "attention");
    return MOE_OK;
}

static moe_status op_add(moe_backend *b, size_t n, float *x, const float *y)
{
    CU_TRY(moe_cuda_add(n, x, y, STATE(b)->stream), "add");
    return MOE_OK;
}

static moe_status op_router_topk(moe_backend *b, const float *logits, int T, int E, int k, int norm, int32_t *idx,
                                 float *w)
{
    cuda_state *s = STATE(b);
    if (T < 0 || E < 1) return moe_error_set(MOE_ERR_SHAPE, "router: %d tokens over %d experts", T, E);
    if (k < 1 || k > E) return moe_error_set(MOE_ERR_SHAPE, "router: top_k %d is outside 1..%d (experts)", k, E);
    if (k > MOE_CUDA_MAX_TOP_K)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "router: top_k %d is more than the CUDA backend's %d", k,
                             MOE_CUDA_MAX_TOP_K);
    CU_TRY(moe_cuda_router_topk(logits, T, E, k, norm, idx, w, s->fault, s->stream), "router");
    return MOE_OK;
}

static moe_status op_experts(moe_backend *b, moe_bk_experts *bx, const float *in, int T, const int32_t *idx,
                             const float *w, int k, float *out)
{
    cuda_state *s = STATE(b);
    cuda_experts *x = EXP(bx);
    if (!x || !in || !idx || !w || !out)
        return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: layer, x, indices, scores and y must not be NULL");
    if (in == out) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: y must not alias x");
    if (T < 0 || k < 1) return moe_error_set(MOE_ERR_SHAPE, "expert layer: %d tokens, top_k %d", T, k);
    if (x->n_loaded < x->cfg.num_experts) {
        int e = 0;
        while (x->loaded[e]) e++;
        return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: expert %d was never loaded", e);
    }
    if (T == 0) return MOE_OK;
    int E = x->cfg.num_experts, D = x->cfg.dim, I = x->cfg.hidden;
    size_t need = moe_cuda_experts_workspace(T, k, E, D, I, x->fused);
    moe_status st = device_grow(&s->work, &s->work_bytes, need, "expert layer workspace");
    if (st != MOE_OK) return st;
    moe_cuda_experts_args a = {
        .gate = x->gate, .up = x->up, .down = x->down, .E = E, .D = D, .I = I, .fused = x->fused,
        .x = in, .T = T, .k = k, .idx = idx, .w = w, .out = out, .work = s->work, .fault = s->fault,
    };
    CU_TRY(moe_cuda_experts(&a, s->stream), x->fused ? "expert layer, fused" : "expert layer, unfused");
    return MOE_OK;
}

static moe_status cuda_sync(moe_backend *b)
{
    CU_TRY(cudaStreamSynchronize(STATE(b)->stream), "sync: the work queued before it");
    return MOE_OK;
}

static void cuda_destroy(moe_backend *b)
{
    if (!b) return;
    cuda_state *s = STATE(b);
    if (s) {
        if (s->stream) cudaStreamSynchronize(s->stream);
        cudaFree(s->fault), cudaFree(s->work), cudaFree(s->attn_work), cudaFree(s->tokens), cudaFree(s->inv_freq);
        if (s->stream) cudaStreamDestroy(s->stream);
        free(s);
    }
    free(b);
}

moe_status moe_cuda_memory_info(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1)
        return moe_error_set(MOE_ERR_UNSUPPORTED, "no CUDA device found (cudaGetDeviceCount: %s)",
                             e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    size_t f = 0, t = 0;
    if ((e = cudaSetDevice(0)) != cudaSuccess) return cuda_error(e, "cudaSetDevice", "device 0");
    if ((e = cudaMemGetInfo(&f, &t)) != cudaSuccess) return cuda_error(e, "cudaMemGetInfo", "device 0");
    *free_bytes = f;
    *total_bytes = t;
    return MOE_OK;
}

moe_backend *moe_backend_cuda_create(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        moe_error_set(MOE_ERR_UNSUPPORTED, "no CUDA device found (cudaGetDeviceCount: %s)",
                      e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return NULL;
    }
    struct cudaDeviceProp p;
    if ((e = cudaGetDeviceProperties(&p, 0)) != cudaSuccess) {
        cuda_error(e, "cudaGetDeviceProperties", "device 0");
        return NULL;
    }
    if (p.major < 9) {
        moe_error_set(MOE_ERR_UNSUPPORTED, "CUDA device 0 (%s) has compute capability %d.%d; moe's CUDA kernels are "
                      "built for 9.0 (Hopper) and newer", p.name, p.major, p.minor);
        return NULL;
    }
    moe_backend *b = calloc(1, sizeof *b);
    cuda_state *s = calloc(1, sizeof *s);
    if (!b || !s) {
        free(b), free(s);
        moe_error_set(MOE_ERR_NOMEM, "cuda backend: out of memory");
        return NULL;
    }
    b->impl = s;
    moe_status st = MOE_OK;
    if ((e = cudaSetDevice(0)) != cudaSuccess) st = cuda_error(e, "cudaSetDevice", "device 0");
    else if ((e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) != cudaSuccess)
        st = cuda_error(e, "cudaStreamCreateWithFlags", "the backend's stream");
    else if ((st = device_alloc((void **)&s->fault, 4 * sizeof(int), "fault record")) == MOE_OK &&
             (e = cudaMemsetAsync(s->fault, 0, 4 * sizeof(int), s->stream)) != cudaSuccess)
        st = cuda_error(e, "cudaMemsetAsync", "fault record");
    if (st != MOE_OK) {
        cuda_destroy(b);
        return NULL;
    }
    *b = (moe_backend){
        .name = "cuda", .host_memory = 0, .impl = s,
        .alloc = cuda_alloc, .free = cuda_free, .upload = cuda_upload, .download = cuda_download,
        .linear_create = linear_create, .linear_load_rows = linear_load_rows,
        .linear_bytes = linear_bytes, .linear_name = linear_name, .linear_free = linear_free,
        .experts_create = experts_create, .experts_load = experts_load,
        .experts_set_fused = experts_set_fused, .experts_fused = experts_fused,
        .experts_bytes = experts_bytes, .experts_free = experts_free,
        .embed = op_embed, .rmsnorm = op_rmsnorm, .linear = op_linear, .split_cols = op_split_cols,
        .clip = op_clip, .rope_angles = op_rope_angles, .rope = op_rope, .kv_store = op_kv_store,
        .attention = op_attention, .add = op_add, .router_topk = op_router_topk, .experts = op_experts,
        .sync = cuda_sync, .destroy = cuda_destroy,
    };
    return b;
}
