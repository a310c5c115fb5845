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
 * CPUs that have int8 dot products) is a CPU matter, ignored here. The KV
 * cache holds float32, halves or 8-bit head blocks (kernels/kv_q8.h: the
 * store quantizes with the CPU's bits, attention reads the codes as they
 * lie).
 *
 * Every operation is queued on one stream and returns at once; download
 * waits for the stream, so a failure inside a kernel surfaces there.
 *
 * Launches are what a one-token step costs: a few hundred kernels, most of
 * them tiny. Two things cut that. Small element-wise steps (RMSNorm, adds,
 * RoPE and its angles, the KV store, splits and clips of one token, the
 * expert pairs' sum) wait in a chain and run as one launch when the next
 * other operation comes (kernels/cuda/elementwise.cu). And a one-token step
 * of one sequence (backend.h: step_begin) is captured as a CUDA graph the
 * first time and replayed after: the kernels that depend on the position —
 * the rotation angles, attention, the KV store's row — read it from a small
 * device record written before each launch, as the embedding reads the
 * token id, and while a captured step is replayed the operations only note
 * their arguments, which must hash as the captured ones did. Freeing device
 * memory, loading weights or switching the gate-up fusion drops the graph.
 * MOE_CUDA_GRAPHS=0 in the environment turns graphs off, and
 * MOE_CUDA_TENSOR_CORES=0 keeps prompts off the tensor cores (float32
 * throughout, as for a few tokens). Faults
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

/* where a step stands (backend.h: step_begin) */
typedef enum { STEP_NONE, STEP_CAPTURE, STEP_REPLAY } step_mode;

typedef struct {
    cudaStream_t stream;
    int *fault;                  /* [4] the first fault a kernel recorded */
    void *work;                  /* the expert layers' shared workspace */
    size_t work_bytes;
    void *attn_work;             /* attention's partial results when it splits the cache */
    size_t attn_work_bytes;
    int32_t *tokens;             /* embed's token ids, copied over */
    size_t tokens_cap;
    int32_t *ids;                /* argmax_rows' choices, before they are brought back */
    size_t ids_cap;              /* bytes */
    float *inv_freq;             /* RoPE's inverse frequencies for (half, theta) */
    size_t inv_cap;
    int inv_half;
    double inv_theta;
    moe_cuda_chain chain;        /* small steps waiting to run as one launch */
    /* the captured step */
    int graphs;                  /* captured steps allowed */
    step_mode step;
    const void *step_key;
    uint64_t step_hash;          /* the operations' arguments so far */
    int32_t params[2];           /* the step's position and token id, as written before a launch */
    int32_t *dparams;            /* [2] on the device */
    cudaGraphExec_t exec;        /* the captured step, or NULL */
    const void *exec_key;
    uint64_t exec_hash;
    moe_status step_error;       /* a replayed step interrupted: reported by step_end */
    /* counts for MOE_CUDA_DEBUG=1 (printed at destroy) */
    long n_capture, n_replay, n_interrupt, n_drop;
    const char *last_drop;
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

/* ---- the chain and the captured step ---- */

static void graph_drop(cuda_state *s, const char *why)
{
    if (s->exec) cudaGraphExecDestroy(s->exec), s->n_drop++, s->last_drop = why;
    s->exec = NULL;
    s->exec_key = NULL;
}

/* Runs the waiting small steps as one launch. */
static moe_status chain_flush(cuda_state *s)
{
    if (!s->chain.n) return MOE_OK;
    s->chain.dpos = s->step == STEP_CAPTURE ? s->dparams : NULL;
    cudaError_t e = moe_cuda_chain_run(&s->chain, s->stream);
    s->chain.n = 0;
    if (e != cudaSuccess) return cuda_error(e, "moe_cuda_chain_run", "small steps");
    return MOE_OK;
}

static moe_status chain_push(cuda_state *s, moe_cuda_step_op op)
{
    if (s->chain.n == MOE_CUDA_CHAIN_MAX) {
        moe_status st = chain_flush(s);
        if (st != MOE_OK) return st;
    }
    s->chain.op[s->chain.n++] = op;
    return MOE_OK;
}

/* greedy choices the backend has room for from the start */
enum { IDS_AT_START = 256 };

/* elements up to which a step waits in the chain (one block runs it) */
enum { CHAIN_ELEMS = 16384 };

/* Writes the step's position and token id and launches `exec`. */
static moe_status graph_launch(cuda_state *s, cudaGraphExec_t exec)
{
    /* from pageable memory: staged before the call returns */
    CU_TRY(cudaMemcpyAsync(s->dparams, s->params, sizeof s->params, cudaMemcpyHostToDevice, s->stream), "step record");
    CU_TRY(cudaGraphLaunch(exec, s->stream), "the captured step");
    return MOE_OK;
}

/* Ends a capture in progress: the graph of what was captured, or NULL
 * (nothing captured, or the capture broke: its error cleared). */
static cudaGraph_t capture_end(cuda_state *s)
{
    cudaGraph_t g = NULL;
    if (cudaStreamEndCapture(s->stream, &g) != cudaSuccess) {
        cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        g = NULL;
    }
    s->step = STEP_NONE;
    return g;
}

/* Something that cannot be captured or skipped (memory, a sync) comes
 * inside a step: what a capture holds so far runs now, once, and the step
 * goes on as plain launches; a replayed step cannot go on (its earlier
 * operations were only noted) and is reported at step_end. */
static moe_status step_interrupt(cuda_state *s)
{
    if (s->step == STEP_REPLAY) {
        graph_drop(s, "interrupted replay");
        s->step = STEP_NONE;
        s->step_error = moe_error_set(MOE_ERR_DEVICE, "cuda backend: a replayed step was interrupted by a memory "
                                      "operation before its end");
        return s->step_error;
    }
    if (s->step != STEP_CAPTURE) return chain_flush(s);
    s->n_interrupt++;
    moe_status st = chain_flush(s);
    cudaGraph_t g = capture_end(s);
    if (st != MOE_OK || !g) {
        if (g) cudaGraphDestroy(g);
        return st != MOE_OK ? st : moe_error_set(MOE_ERR_DEVICE, "cuda backend: a step's capture failed");
    }
    cudaGraphExec_t exec = NULL;
    cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) return cuda_error(e, "cudaGraphInstantiate", "a step's first part");
    st = graph_launch(s, exec);
    cudaError_t done = cudaStreamSynchronize(s->stream);   /* rare: before the graph goes */
    cudaGraphExecDestroy(exec);
    if (st == MOE_OK && done != cudaSuccess) st = cuda_error(done, "cudaStreamSynchronize", "a step's first part");
    return st;
}

static inline uint64_t mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 31);
}

/* Notes an operation's arguments inside a step (the position-dependent
 * ones left out); 1 when the step is replayed, so the operation is done. */
static int step_note(cuda_state *s, const uint64_t *args, size_t n)
{
    if (s->step == STEP_NONE) return 0;
    for (size_t i = 0; i < n; i++) s->step_hash = mix(s->step_hash, args[i]);
    return s->step == STEP_REPLAY;
}

#define P64(p) ((uint64_t)(uintptr_t)(p))
#define STEP_NOTE(s, ...) \
    step_note((s), (const uint64_t[]){ __VA_ARGS__ }, sizeof((const uint64_t[]){ __VA_ARGS__ }) / sizeof(uint64_t))

static uint64_t fbits(double f)
{
    uint64_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* the device's copy of the step's position for a launch that is captured */
static const int32_t *step_dpos(const cuda_state *s) { return s->step == STEP_CAPTURE ? s->dparams : NULL; }

static moe_status step_begin(moe_backend *b, const void *key, int T, int pos)
{
    cuda_state *s = STATE(b);
    if (s->step == STEP_CAPTURE) {
        s->chain.n = 0;
        cudaGraph_t g = capture_end(s);   /* a step left unfinished: dropped */
        if (g) cudaGraphDestroy(g);
    }
    s->step = STEP_NONE;
    s->step_error = MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK || !s->graphs || T != 1) return st;
    s->step_key = key;
    s->step_hash = 0x6a09e667f3bcc908ull;
    s->params[0] = pos, s->params[1] = 0;
    if (s->exec && s->exec_key == key) {
        s->n_replay++;
        s->step = STEP_REPLAY;
        return MOE_OK;
    }
    graph_drop(s, "another key");
    CU_TRY(cudaStreamBeginCapture(s->stream, cudaStreamCaptureModeThreadLocal), "a step's capture");
    s->step = STEP_CAPTURE;
    return MOE_OK;
}

static moe_status step_end(moe_backend *b)
{
    cuda_state *s = STATE(b);
    if (s->step_error != MOE_OK) {
        moe_status st = s->step_error;
        s->step_error = MOE_OK;
        return st;
    }
    if (s->step == STEP_NONE) return chain_flush(s);
    if (s->step == STEP_REPLAY) {
        s->step = STEP_NONE;
        if (s->step_hash != s->exec_hash) {
            graph_drop(s, "hash");
            return moe_error_set(MOE_ERR_DEVICE, "cuda backend: a step's operations differ from those captured for "
                                 "its sequence");
        }
        return graph_launch(s, s->exec);
    }
    moe_status st = chain_flush(s);
    cudaGraph_t g = capture_end(s);
    if (st != MOE_OK) {
        if (g) cudaGraphDestroy(g);
        return st;
    }
    if (!g) return moe_error_set(MOE_ERR_DEVICE, "cuda backend: a step's capture failed");
    cudaError_t e = cudaGraphInstantiate(&s->exec, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        s->exec = NULL;
        return cuda_error(e, "cudaGraphInstantiate", "a step");
    }
    s->exec_key = s->step_key;
    s->exec_hash = s->step_hash;
    s->n_capture++;
    return graph_launch(s, s->exec);
}

/* ---- memory ---- */

/* Grows a device buffer to at least `bytes` (contents not kept). */
static moe_status device_grow(cuda_state *s, void **p, size_t *cap, size_t bytes, const char *what)
{
    if (bytes <= *cap && *p) return MOE_OK;
    moe_status st = step_interrupt(s);
    if (st != MOE_OK) return st;
    graph_drop(s, what);   /* it may use the old buffer */
    CU_TRY(cudaFree(*p), what);   /* waits for work that may still use it */
    *p = NULL;
    *cap = 0;
    st = device_alloc(p, bytes, what);
    if (st == MOE_OK) *cap = bytes;
    return st;
}

static void *cuda_alloc(moe_backend *b, size_t bytes, const char *what)
{
    void *p;
    if (step_interrupt(STATE(b)) != MOE_OK) return NULL;
    return device_alloc(&p, bytes, what) == MOE_OK ? p : NULL;
}

static void cuda_free(moe_backend *b, void *p)
{
    if (!p) return;
    step_interrupt(STATE(b));   /* reported at step_end */
    graph_drop(STATE(b), "free");
    cudaFree(p);   /* nothing to report to: a failed free leaks at worst */
}

static moe_status cuda_upload(moe_backend *b, void *dst, const void *host_src, size_t bytes)
{
    cuda_state *s = STATE(b);
    moe_status st = step_interrupt(s);
    if (st != MOE_OK) return st;
    /* from pageable memory the call returns once the source is staged, so
     * the caller may free it at once */
    if (bytes) CU_TRY(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, s->stream), "upload");
    return MOE_OK;
}

static moe_status cuda_download(moe_backend *b, void *host_dst, const void *src, size_t bytes)
{
    cuda_state *s = STATE(b);
    moe_status st = step_interrupt(s);
    if (st != MOE_OK) return st;
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
    if (st == MOE_OK) st = step_interrupt(s);
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
    if (!l) return;
    step_interrupt(STATE(b));
    graph_drop(STATE(b), "weights freed");
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
    cuda_experts *x = EXP(bx);
    if (!x) return;
    step_interrupt(STATE(b));
    graph_drop(STATE(b), "weights freed");
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
    if (!x) return moe_error_set(MOE_ERR_INVALID_ARG, "expert layer: layer is NULL");
    if (EXP(x)->fused != (fused != 0)) graph_drop(STATE(b), "fusion");   /* other kernels */
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

/* Each operation notes its arguments inside a step (STEP_NOTE: done when
 * the step is replayed) after its checks; small element-wise steps join
 * the chain, every other operation runs the chain first. */

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
    if (s->step != STEP_NONE) {
        /* a step's one token: its id is written with the position */
        s->params[1] = tokens[0];
        if (STEP_NOTE(s, 1, P64(l), (uint64_t)T, P64(x))) return MOE_OK;
        if ((st = chain_flush(s)) != MOE_OK) return st;
        CU_TRY(moe_cuda_embed(&l->w, s->dparams + 1, T, x, s->stream), l->name);
        return MOE_OK;
    }
    if ((st = chain_flush(s)) != MOE_OK) return st;
    if ((st = device_grow(s, (void **)&s->tokens, &s->tokens_cap, sizeof(int32_t) * (size_t)T, "token ids")) != MOE_OK)
        return st;
    CU_TRY(cudaMemcpyAsync(s->tokens, tokens, sizeof(int32_t) * (size_t)T, cudaMemcpyHostToDevice, s->stream),
           "token ids");
    CU_TRY(moe_cuda_embed(&l->w, s->tokens, T, x, s->stream), l->name);
    return MOE_OK;
}

static moe_status op_rmsnorm(moe_backend *b, int rows, int n, const float *x, const float *w, float eps, float *y)
{
    cuda_state *s = STATE(b);
    if (STEP_NOTE(s, 2, (uint64_t)rows, (uint64_t)n, P64(x), P64(w), fbits(eps), P64(y))) return MOE_OK;
    if (rows <= 0) return MOE_OK;
    if ((size_t)rows * n <= CHAIN_ELEMS && rows <= 64)
        return chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_RMSNORM, .rows = rows, .n = n, .f = eps,
                                                 .in = x, .in2 = w, .out = y });
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_rmsnorm(rows, n, x, w, eps, y, s->stream), "rmsnorm");
    return MOE_OK;
}

static moe_status op_linear(moe_backend *b, moe_bk_linear *bl, const float *x, int T, float *y)
{
    cuda_state *s = STATE(b);
    cuda_linear *l = LIN(bl);
    if (!l || !x || !y) return moe_error_set(MOE_ERR_INVALID_ARG, "linear forward: projection, x and y must not be NULL");
    if (x == y) return moe_error_set(MOE_ERR_INVALID_ARG, "%s: y must not alias x", l->name);
    moe_status st = linear_ready(l);
    if (st != MOE_OK) return st;
    if (STEP_NOTE(s, 3, P64(l), P64(x), (uint64_t)T, P64(y))) return MOE_OK;
    if ((st = chain_flush(s)) != MOE_OK) return st;
    CU_TRY(moe_cuda_linear(&l->w, x, T, y, s->stream), l->name);
    return MOE_OK;
}

static moe_status op_split_cols(moe_backend *b, const float *src, int T, int n, const int *widths, float *const *dst)
{
    cuda_state *s = STATE(b);
    if (n < 1 || n > MOE_CUDA_SPLIT_MAX)
        return moe_error_set(MOE_ERR_INVALID_ARG, "split columns: %d parts (1..%d)", n, MOE_CUDA_SPLIT_MAX);
    uint64_t h = mix(mix(P64(src), (uint64_t)T), (uint64_t)n);
    for (int i = 0; i < n; i++) h = mix(mix(h, (uint64_t)widths[i]), P64(dst[i]));
    if (STEP_NOTE(s, 4, h)) return MOE_OK;
    size_t row = 0;
    for (int i = 0; i < n; i++) row += (size_t)widths[i];
    if (T == 1 && row <= CHAIN_ELEMS) {
        /* one row: each part is a run of it */
        const float *at = src;
        for (int i = 0; i < n; at += widths[i], i++) {
            moe_status st = chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_COPY, .n = widths[i], .in = at,
                                                              .out = dst[i] });
            if (st != MOE_OK) return st;
        }
        return MOE_OK;
    }
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_split_cols(src, T, n, widths, dst, s->stream), "split columns");
    return MOE_OK;
}

static moe_status op_clip(moe_backend *b, size_t n, float *x, float limit)
{
    cuda_state *s = STATE(b);
    if (STEP_NOTE(s, 5, (uint64_t)n, P64(x), fbits(limit))) return MOE_OK;
    if (n <= CHAIN_ELEMS)
        return n ? chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_CLIP, .n = (int)n, .f = limit, .out = x })
                 : MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_clip(n, x, limit, s->stream), "clip");
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
        moe_status st = device_grow(s, (void **)&s->inv_freq, &s->inv_cap, sizeof(float) * (size_t)half,
                                    "rotation frequencies");
        if (st == MOE_OK) st = cuda_upload(b, s->inv_freq, host, sizeof(float) * (size_t)half);
        moe_free(host);
        if (st != MOE_OK) {
            s->inv_half = 0;
            return st;
        }
        s->inv_half = half;
        s->inv_theta = theta;
        graph_drop(s, "frequencies");   /* other frequencies */
    }
    if (STEP_NOTE(s, 6, (uint64_t)T, (uint64_t)hd, fbits(theta), P64(cos_out), P64(sin_out))) return MOE_OK;
    if (T <= 0) return MOE_OK;
    if ((size_t)T * half <= CHAIN_ELEMS)
        return chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_ANGLES, .rows = T, .n = half, .pos0 = pos,
                                                 .dev_pos = s->step == STEP_CAPTURE, .in = s->inv_freq,
                                                 .out = cos_out, .out2 = sin_out });
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_rope_angles(T, half, s->inv_freq, pos, step_dpos(s), cos_out, sin_out, s->stream), "rope angles");
    return MOE_OK;
}

static moe_status op_rope(moe_backend *b, int T, int heads, int hd, float *x, const float *cos_t, const float *sin_t)
{
    cuda_state *s = STATE(b);
    if (STEP_NOTE(s, 7, (uint64_t)T, (uint64_t)heads, (uint64_t)hd, P64(x), P64(cos_t), P64(sin_t))) return MOE_OK;
    size_t n = (size_t)T * heads * (hd / 2);
    if (!n) return MOE_OK;
    if (n <= CHAIN_ELEMS)
        return chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_ROPE, .rows = T, .n = heads, .hd = hd,
                                                 .in = cos_t, .in2 = sin_t, .out = x });
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_rope(T, heads, hd, x, cos_t, sin_t, s->stream), "rope");
    return MOE_OK;
}

/* The kernels' name for a cache dtype (-1: none of theirs). */
static int kv_format(moe_dtype kv_dtype)
{
    return kv_dtype == MOE_DTYPE_F32 ? MOE_CUDA_KV_F32 : kv_dtype == MOE_DTYPE_F16 ? MOE_CUDA_KV_F16
         : kv_dtype == MOE_DTYPE_Q8  ? MOE_CUDA_KV_Q8  : -1;
}

static moe_status op_kv_store(moe_backend *b, moe_dtype kv_dtype, const float *src, void *dst, size_t n, int hd)
{
    cuda_state *s = STATE(b);
    int kv = kv_format(kv_dtype), pos = s->params[0];
    if (kv < 0)
        return moe_error_set(MOE_ERR_DTYPE, "kv store: cache dtype %s is not F32, F16 or Q8", moe_dtype_name(kv_dtype));
    /* Q8's groups restart at each head: whole heads only */
    if (kv == MOE_CUDA_KV_Q8 && (hd < 1 || n % (size_t)hd))
        return moe_error_set(MOE_ERR_SHAPE, "kv store: %zu values are not whole heads of dim %d", n, hd);
    /* the bytes of the n values stored: a row when they are one position's */
    size_t bytes = kv == MOE_CUDA_KV_Q8 ? n / (size_t)hd * moe_kv_row_bytes(MOE_DTYPE_Q8, 1, hd)
                                        : n * moe_dtype_size(kv_dtype);
    /* inside a step the destination moves a row a position: noted at row 0 */
    const char *row0 = (const char *)dst - (s->step != STEP_NONE ? (size_t)pos * bytes : 0);
    if (STEP_NOTE(s, 8, (uint64_t)kv_dtype, P64(src), P64(row0), (uint64_t)n, (uint64_t)hd)) return MOE_OK;
    if (!n) return MOE_OK;
    int dev = s->step == STEP_CAPTURE;
    if (n <= CHAIN_ELEMS)
        return chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_STORE, .n = (int)n, .hd = hd, .pos0 = pos,
                                                 .kv = kv, .dev_pos = dev, .in = src, .dst = dst });
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_store(src, dst, n, kv, hd, step_dpos(s), pos, s->stream), "kv store");
    return MOE_OK;
}

static moe_status op_attention(moe_backend *b, int T, int pos, int heads, int kv_heads, int hd, float scale,
                               const float *q, moe_dtype kv_dtype, const void *k, const void *v, size_t kv_stride,
                               float *out)
{
    int kv = kv_format(kv_dtype);
    if (kv < 0)
        return moe_error_set(MOE_ERR_DTYPE, "attention: cache dtype %s is not F32, F16 or Q8", moe_dtype_name(kv_dtype));
    if (hd < 1 || hd > 1024 || kv_heads < 1 || heads % kv_heads)
        return moe_error_set(MOE_ERR_SHAPE, "attention: %d heads over %d kv heads of dim %d", heads, kv_heads, hd);
    cuda_state *s = STATE(b);
    if (STEP_NOTE(s, 9, (uint64_t)T, (uint64_t)heads, (uint64_t)kv_heads, (uint64_t)hd, fbits(scale), P64(q),
                  (uint64_t)kv_dtype, P64(k), P64(v), (uint64_t)kv_stride, P64(out)))
        return MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    /* a captured step's split does not depend on the position */
    size_t need = moe_cuda_attention_workspace(T, pos, s->step == STEP_CAPTURE, heads, kv_heads, hd, kv, k, v,
                                               kv_stride);
    if (need && (st = device_grow(s, &s->attn_work, &s->attn_work_bytes, need, "attention workspace")) != MOE_OK)
        return st;
    void *work = need ? s->attn_work : NULL;
    CU_TRY(moe_cuda_attention(T, pos, step_dpos(s), heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, work,
                              s->stream),
           "attention");
    return MOE_OK;
}

static moe_status op_add(moe_backend *b, size_t n, float *x, const float *y)
{
    cuda_state *s = STATE(b);
    if (STEP_NOTE(s, 10, (uint64_t)n, P64(x), P64(y))) return MOE_OK;
    if (n <= CHAIN_ELEMS)
        return n ? chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_ADD, .n = (int)n, .in = y, .out = x })
                 : MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_add(n, x, y, s->stream), "add");
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
    if (STEP_NOTE(s, 11, P64(logits), (uint64_t)T, (uint64_t)E, (uint64_t)k, (uint64_t)norm, P64(idx), P64(w)))
        return MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_router_topk(logits, T, E, k, norm, idx, w, s->fault, s->stream), "router");
    return MOE_OK;
}

/* the choices made on the device, then only they are brought back */
static moe_status op_argmax_rows(moe_backend *b, const float *rows, int n, int V, int32_t *host_ids)
{
    cuda_state *s = STATE(b);
    if (n < 0 || V < 1) return moe_error_set(MOE_ERR_SHAPE, "greedy choice: %d rows of %d logits", n, V);
    if (!rows || !host_ids) return moe_error_set(MOE_ERR_INVALID_ARG, "greedy choice: rows and ids must not be NULL");
    if (n == 0) return MOE_OK;
    moe_status st = device_grow(s, (void **)&s->ids, &s->ids_cap, sizeof(int32_t) * (size_t)n, "greedy choices");
    if (st != MOE_OK) return st;
    CU_TRY(moe_cuda_argmax_rows(rows, n, V, s->ids, s->stream), "greedy choice");
    return cuda_download(b, host_ids, s->ids, sizeof(int32_t) * (size_t)n);
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
    if (STEP_NOTE(s, 12, P64(x), P64(in), (uint64_t)T, P64(idx), P64(w), (uint64_t)k, P64(out), (uint64_t)x->fused))
        return MOE_OK;
    if (T == 0) return MOE_OK;
    moe_status st = chain_flush(s);
    if (st != MOE_OK) return st;
    int E = x->cfg.num_experts, D = x->cfg.dim, I = x->cfg.hidden;
    size_t need = moe_cuda_experts_workspace(T, k, E, D, I, x->fused);
    if ((st = device_grow(s, &s->work, &s->work_bytes, need, "expert layer workspace")) != MOE_OK) return st;
    /* a few tokens' pairs are summed in the chain, with what follows */
    int defer = (size_t)T * D <= CHAIN_ELEMS;
    moe_cuda_experts_args a = {
        .gate = x->gate, .up = x->up, .down = x->down, .E = E, .D = D, .I = I, .fused = x->fused,
        .x = in, .T = T, .k = k, .idx = idx, .w = w, .out = out, .work = s->work, .fault = s->fault,
        .defer_combine = defer,
    };
    CU_TRY(moe_cuda_experts(&a, s->stream), x->fused ? "expert layer, fused" : "expert layer, unfused");
    if (!defer) return MOE_OK;
    return chain_push(s, (moe_cuda_step_op){ .kind = MOE_CUDA_OP_COMBINE, .rows = T, .n = D, .hd = k,
                                             .in = moe_cuda_experts_pairs(&a), .out = out });
}

static moe_status cuda_sync(moe_backend *b)
{
    moe_status st = step_interrupt(STATE(b));
    if (st != MOE_OK) return st;
    CU_TRY(cudaStreamSynchronize(STATE(b)->stream), "sync: the work queued before it");
    return MOE_OK;
}

static void cuda_destroy(moe_backend *b)
{
    if (!b) return;
    cuda_state *s = STATE(b);
    if (s) {
        if (s->stream) step_interrupt(s), cudaStreamSynchronize(s->stream);
        graph_drop(s, "destroy");
        if (getenv("MOE_CUDA_DEBUG"))
            fprintf(stderr, "cuda backend: %ld steps captured, %ld replayed, %ld interrupted, %ld graphs dropped "
                    "(last: %s)\n", s->n_capture, s->n_replay, s->n_interrupt, s->n_drop,
                    s->last_drop ? s->last_drop : "none");
        cudaFree(s->dparams), cudaFree(s->ids);
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
    else if (st == MOE_OK &&
             (st = device_alloc((void **)&s->dparams, sizeof s->params, "step record")) == MOE_OK &&
             (e = cudaMemsetAsync(s->dparams, 0, sizeof s->params, s->stream)) != cudaSuccess)
        st = cuda_error(e, "cudaMemsetAsync", "step record");
    /* room for the greedy choices of a batch's rows, grown past it if need be:
     * allocated here so that a decode step's graph is not dropped for it */
    else if (st == MOE_OK && (st = device_alloc((void **)&s->ids, IDS_AT_START * sizeof(int32_t), "greedy choices")) ==
                                 MOE_OK)
        s->ids_cap = IDS_AT_START * sizeof(int32_t);
    const char *graphs = getenv("MOE_CUDA_GRAPHS");
    s->graphs = !(graphs && strcmp(graphs, "0") == 0);
    if (st != MOE_OK) {
        cuda_destroy(b);
        return NULL;
    }
    *b = (moe_backend){
        .name = "cuda", .host_memory = 0, .kv_q8 = 1, .impl = s,
        .alloc = cuda_alloc, .free = cuda_free, .upload = cuda_upload, .download = cuda_download,
        .linear_create = linear_create, .linear_load_rows = linear_load_rows,
        .linear_bytes = linear_bytes, .linear_name = linear_name, .linear_free = linear_free,
        .experts_create = experts_create, .experts_load = experts_load,
        .experts_set_fused = experts_set_fused, .experts_fused = experts_fused,
        .experts_bytes = experts_bytes, .experts_free = experts_free,
        .embed = op_embed, .rmsnorm = op_rmsnorm, .linear = op_linear, .split_cols = op_split_cols,
        .clip = op_clip, .rope_angles = op_rope_angles, .rope = op_rope, .kv_store = op_kv_store,
        .attention = op_attention, .add = op_add, .router_topk = op_router_topk, .experts = op_experts,
        .argmax_rows = op_argmax_rows,
        .step_begin = step_begin, .step_end = step_end, .sync = cuda_sync, .destroy = cuda_destroy,
    };
    return b;
}
