/* kernels/cuda/matmul.cu — projections, the embedding lookup and the
 * SwitchGLU expert layer on weights in the checkpoint's format.
 *
 * Two shapes of work:
 *  - a few activation rows (decode): a warp per output row streams the row
 *    once and takes up to 8 activation rows along (warp_dots);
 *  - many rows (prefill): a tiled GEMM, 64 rows × 64 outputs a block, 32
 *    columns a step through shared memory, each thread 4 × 4 outputs; the
 *    weight tile is dequantized as it is staged.
 * The expert layer groups token–expert pairs by expert on the device
 * (count, scan, scatter: no host round trip), then runs the tiled GEMM over
 * each expert's block of pairs: gate and up (fused: both tiles staged
 * together, SwiGLU on the way out; unfused: two passes and SwiGLU a third,
 * the same sums in the same order), and down with the router weight applied
 * to each pair's row; a last pass adds a token's k rows in order j = 0..k-1,
 * so the result does not depend on how pairs were scheduled. */
#include <cuda_runtime.h>

#include "kernels/cuda/weights.cuh"

namespace {

enum { GEMV_ROWS = 8, GEMV_THREADS = 32 * GEMV_ROWS, GEMV_MAX_TOKENS = 8 };
enum { BM = 64, BN = 64, BK = 32, TILE_THREADS = 256 };
/* pairs up to which the expert layer runs a warp per (pair, output row)
 * instead of grouping: each pair's expert is read once either way */
enum { EXPERT_GEMV_MAX_PAIRS = 16 };

unsigned blocks_for(size_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* ---- a few rows: a warp per output row ---- */

template <int F, int M>
__global__ void __launch_bounds__(GEMV_THREADS) gemv_linear(moe_cuda_weights W, const float *x, int T, float *y)
{
    int r = blockIdx.x * GEMV_ROWS + (threadIdx.x >> 5);
    if (r >= W.rows) return;
    wrows m = wrows_of(W, 0);
    float acc[M];
    warp_dots<F, M>(m, r, x, (size_t)W.K, T, acc);
    if ((threadIdx.x & 31) == 0)
        for (int t = 0; t < T && t < M; t++) y[(size_t)t * W.rows + r] = acc[t];
}

template <int F>
__global__ void embed_rows(moe_cuda_weights W, const int32_t *tokens, float *x)
{
    wrows m = wrows_of(W, 0);
    int row = tokens[blockIdx.x];
    float *dst = x + (size_t)blockIdx.x * W.K;
    for (int k = threadIdx.x * 8; k < W.K; k += blockDim.x * 8) {
        float v[8];
        fetch8<F>(m, row, k, v);
        for (int i = 0; i < 8 && k + i < W.K; i++) dst[k + i] = v[i];
    }
}

/* ---- many rows: the tiled GEMM ---- */

/* Which rows a block takes, and where they come from and go.
 * Plain (offsets NULL): rows [bx·BM, …) of M. Grouped: block bx is tile
 * bx − tile_prefix[e] of expert e's slots [offsets[e], offsets[e+1]). */
struct tile_rows {
    const int *offsets, *tile_prefix;
    int E, M;
    const int *a_map;      /* A row of slot m: a_map[m] / a_div (NULL: m) */
    int a_div;
    const int *c_map;      /* C row of slot m: c_map[m] (NULL: m) */
    const float *c_scale;  /* each C row times c_scale[C row] (NULL: 1) */
};

template <int F, bool FUSED>
__global__ void __launch_bounds__(TILE_THREADS)
tile_gemm(moe_cuda_weights W0, moe_cuda_weights W1, tile_rows R, const float *A, int lda, int a_vec, float *C,
          int ldc, int N)
{
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[FUSED ? 2 : 1][BK][BN + 4];
    __shared__ int a_row[BM], c_row[BM];
    __shared__ float c_sc[BM];
    int tid = threadIdx.x, e = 0, m_lo, m_hi;
    if (R.offsets) {
        int b = blockIdx.x;
        if (b >= R.tile_prefix[R.E]) return;
        int lo = 0, hi = R.E;    /* the last expert whose tiles start at or before b */
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (R.tile_prefix[mid] <= b) lo = mid;
            else hi = mid;
        }
        e = lo;
        m_lo = R.offsets[e] + (b - R.tile_prefix[e]) * BM;
        m_hi = min(m_lo + BM, R.offsets[e + 1]);
    } else {
        m_lo = blockIdx.x * BM;
        m_hi = min(m_lo + BM, R.M);
    }
    if (tid < BM) {
        int m = m_lo + tid, ok = m < m_hi;
        int cr = ok ? (R.c_map ? R.c_map[m] : m) : -1;
        a_row[tid] = ok ? (R.a_map ? R.a_map[m] / R.a_div : m) : -1;
        c_row[tid] = cr;
        c_sc[tid] = ok && R.c_scale ? R.c_scale[cr] : 1.0f;
    }
    __syncthreads();

    wrows m0 = wrows_of(W0, e), m1 = wrows_of(FUSED ? W1 : W0, e);
    int K = W0.K, n0 = blockIdx.y * BN;
    int ty = tid >> 4, tx = tid & 15;     /* rows ty·4.., outputs tx·4.. */
    int li = tid >> 2, lk = (tid & 3) * 8; /* the staging of one 8-column chunk */
    float acc0[4][4] = {}, acc1[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
        float v[8];
        int ar = a_row[li];
        if (ar >= 0) load_x8(A + (size_t)ar * lda, k0 + lk, K, a_vec, v);
        else
            for (int j = 0; j < 8; j++) v[j] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) As[lk + j][li] = v[j];
        int r = n0 + li;
        if (r < N) fetch8<F>(m0, r, k0 + lk, v);
        else
            for (int j = 0; j < 8; j++) v[j] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++) Bs[0][lk + j][li] = v[j];
        if (FUSED) {
            if (r < N) fetch8<F>(m1, r, k0 + lk, v);
            else
                for (int j = 0; j < 8; j++) v[j] = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) Bs[FUSED ? 1 : 0][lk + j][li] = v[j];
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk++) {
            float4 a = *(const float4 *)&As[kk][ty * 4], b = *(const float4 *)&Bs[0][kk][tx * 4];
            float av[4] = { a.x, a.y, a.z, a.w }, bv[4] = { b.x, b.y, b.z, b.w };
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc0[i][j] = __fmaf_rn(av[i], bv[j], acc0[i][j]);
            if (FUSED) {
                float4 c = *(const float4 *)&Bs[FUSED ? 1 : 0][kk][tx * 4];
                float cv[4] = { c.x, c.y, c.z, c.w };
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc1[i][j] = __fmaf_rn(av[i], cv[j], acc1[i][j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int row = ty * 4 + i, cr = c_row[row];
        if (cr < 0) continue;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx * 4 + j;
            if (n >= N) continue;
            float val = FUSED ? swiglu(acc0[i][j], acc1[i][j]) : acc0[i][j];
            if (R.c_scale) val = __fmul_rn(val, c_sc[row]);
            C[(size_t)cr * ldc + n] = val;
        }
    }
}

template <bool FUSED>
cudaError_t launch_tile_gemm(const moe_cuda_weights *W0, const moe_cuda_weights *W1, const tile_rows &R,
                             unsigned tiles, const float *A, int lda, float *C, int ldc, cudaStream_t stream)
{
    if (!tiles) return cudaSuccess;
    int a_vec = W0->K % 8 == 0 && lda % 4 == 0;
    dim3 grid(tiles, blocks_for((size_t)W0->rows, BN));
    MOE_CUDA_FORMAT_SWITCH(W0->fmt, F,
                           tile_gemm<F, FUSED><<<grid, TILE_THREADS, 0, stream>>>(*W0, W1 ? *W1 : *W0, R, A, lda, a_vec,
                                                                                C, ldc, W0->rows))
    return cudaGetLastError();
}

/* ---- the expert layer ---- */

__device__ inline void record_fault(int *fault, int code, int a, int b, int c)
{
    if (atomicCAS(fault, 0, code) == 0) fault[1] = a, fault[2] = b, fault[3] = c;
}

/* the pair's expert, or -1 (a fault recorded) when outside [0, E) */
__device__ inline int pair_expert(const int32_t *idx, int p, int k, int E, int *fault)
{
    int e = idx[p];
    if (e >= 0 && e < E) return e;
    record_fault(fault, MOE_CUDA_FAULT_EXPERT_INDEX, p / k, p % k, e);
    return -1;
}

/* gate-up for a few pairs: warp per (pair = blockIdx.y, row); fused
 * writes h, unfused writes gate into h and up into u (SwiGLU after). */
template <int F, bool FUSED>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_gate_up(moe_cuda_weights G, moe_cuda_weights U, const float *x, int D, const int32_t *idx, int k, int E,
             float *h, float *u, int *fault)
{
    int p = blockIdx.y, r = blockIdx.x * GEMV_ROWS + (threadIdx.x >> 5);
    int e = pair_expert(idx, p, k, E, fault);
    if (e < 0 || r >= G.rows) return;
    const float *xr = x + (size_t)(p / k) * D;
    float g[1], v[1];
    warp_dots<F, 1>(wrows_of(G, e), r, xr, (size_t)D, 1, g);
    warp_dots<F, 1>(wrows_of(U, e), r, xr, (size_t)D, 1, v);
    if ((threadIdx.x & 31) == 0) {
        size_t at = (size_t)p * G.rows + r;
        if (FUSED) h[at] = swiglu(g[0], v[0]);
        else h[at] = g[0], u[at] = v[0];
    }
}

template <int F>
__global__ void __launch_bounds__(GEMV_THREADS)
gemv_down(moe_cuda_weights W, const float *h, int I, const int32_t *idx, const float *w, int k, int E, float *y,
          int *fault)
{
    int p = blockIdx.y, r = blockIdx.x * GEMV_ROWS + (threadIdx.x >> 5);
    int e = pair_expert(idx, p, k, E, fault);
    if (e < 0 || r >= W.rows) return;
    float acc[1];
    warp_dots<F, 1>(wrows_of(W, e), r, h + (size_t)p * I, (size_t)I, 1, acc);
    if ((threadIdx.x & 31) == 0) y[(size_t)p * W.rows + r] = __fmul_rn(acc[0], w[p]);
}

__global__ void swiglu_rows(size_t n, float *g, const float *u)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = swiglu(g[i], u[i]);
}

/* out[t] = Σ_j y[t·k + j], j in order */
__global__ void combine_pairs(int T, int k, int D, const float *y, float *out)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)T * D) return;
    size_t t = i / D, d = i % D;
    const float *src = y + t * k * D + d;
    float s = src[0];
    for (int j = 1; j < k; j++) s = __fadd_rn(s, src[(size_t)j * D]);
    out[i] = s;
}

/* grouping pairs by expert: counts, then offsets and tile starts, then slots */
__global__ void count_pairs(const int32_t *idx, int P, int k, int E, int *counts, int *fault)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    int e = pair_expert(idx, p, k, E, fault);
    if (e >= 0) atomicAdd(&counts[e], 1);
}

/* one warp: exclusive prefix sums of the counts and of their tiles, 32
 * experts a step with shuffles, the running totals carried between steps */
__global__ void scan_counts(const int *counts, int E, int *offsets, int *tile_prefix, int *cursor)
{
    int lane = threadIdx.x, o = 0, t = 0;
    for (int base = 0; base < E; base += 32) {
        int e = base + lane;
        int c = e < E ? counts[e] : 0, tc = (c + BM - 1) / BM, io = c, it = tc;
        for (int d = 1; d < 32; d <<= 1) {
            int x = __shfl_up_sync(0xffffffffu, io, d), y = __shfl_up_sync(0xffffffffu, it, d);
            if (lane >= d) io += x, it += y;
        }
        if (e < E) {
            offsets[e] = cursor[e] = o + io - c;
            tile_prefix[e] = t + it - tc;
        }
        o += __shfl_sync(0xffffffffu, io, 31);
        t += __shfl_sync(0xffffffffu, it, 31);
    }
    if (lane == 0) offsets[E] = o, tile_prefix[E] = t;
}

__global__ void scatter_pairs(const int32_t *idx, int P, int E, int *cursor, int *sorted)
{
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= P) return;
    int e = idx[p];
    if (e >= 0 && e < E) sorted[atomicAdd(&cursor[e], 1)] = p;
}

/* The workspace, carved in 256-byte pieces. */
struct experts_work {
    int *counts, *cursor, *offsets, *tile_prefix, *sorted;
    float *h, *u, *y;
    size_t bytes;
};

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

experts_work carve(void *base, int T, int k, int E, int D, int I, int fused)
{
    size_t P = (size_t)T * k, at = 0;
    experts_work w;
    char *b = (char *)base;
#define CARVE(field, type, n) (w.field = (type *)(b ? b + at : nullptr), at += align256(sizeof(type) * (n)))
    CARVE(counts, int, E);
    CARVE(cursor, int, E);
    CARVE(offsets, int, E + 1);
    CARVE(tile_prefix, int, E + 1);
    CARVE(sorted, int, P);
    CARVE(h, float, P * I);
    if (!fused) CARVE(u, float, P * I);
    else w.u = nullptr;
    CARVE(y, float, P * D);
#undef CARVE
    w.bytes = at;
    return w;
}

}  // namespace

extern "C" {

cudaError_t moe_cuda_embed(const moe_cuda_weights *table, const int32_t *tokens, int T, float *x, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    MOE_CUDA_FORMAT_SWITCH(table->fmt, F, embed_rows<F><<<T, 128, 0, stream>>>(*table, tokens, x))
    return cudaGetLastError();
}

cudaError_t moe_cuda_linear(const moe_cuda_weights *W, const float *x, int T, float *y, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (T <= GEMV_MAX_TOKENS) {
        unsigned grid = blocks_for((size_t)W->rows, GEMV_ROWS);
        if (T == 1) {
            MOE_CUDA_FORMAT_SWITCH(W->fmt, F, gemv_linear<F, 1><<<grid, GEMV_THREADS, 0, stream>>>(*W, x, T, y))
        } else {
            MOE_CUDA_FORMAT_SWITCH(W->fmt, F,
                                   gemv_linear<F, GEMV_MAX_TOKENS><<<grid, GEMV_THREADS, 0, stream>>>(*W, x, T, y))
        }
        return cudaGetLastError();
    }
    tile_rows R = {};
    R.M = T;
    return launch_tile_gemm<false>(W, nullptr, R, blocks_for((size_t)T, BM), x, W->K, y, W->rows, stream);
}

size_t moe_cuda_experts_workspace(int T, int k, int E, int D, int I, int fused)
{
    return carve(nullptr, T, k, E, D, I, fused).bytes;
}

cudaError_t moe_cuda_experts(const moe_cuda_experts_args *a, cudaStream_t stream)
{
    int T = a->T, k = a->k, E = a->E, D = a->D, I = a->I, P = T * k;
    if (T <= 0) return cudaSuccess;
    experts_work w = carve(a->work, T, k, E, D, I, a->fused);
    cudaError_t err;
    if (P <= EXPERT_GEMV_MAX_PAIRS) {
        dim3 gu(blocks_for((size_t)I, GEMV_ROWS), P), dn(blocks_for((size_t)D, GEMV_ROWS), P);
        if (a->fused) {
            MOE_CUDA_FORMAT_SWITCH(a->gate.fmt, F,
                                   gemv_gate_up<F, true><<<gu, GEMV_THREADS, 0, stream>>>(
                                       a->gate, a->up, a->x, D, a->idx, k, E, w.h, nullptr, a->fault))
        } else {
            MOE_CUDA_FORMAT_SWITCH(a->gate.fmt, F,
                                   gemv_gate_up<F, false><<<gu, GEMV_THREADS, 0, stream>>>(
                                       a->gate, a->up, a->x, D, a->idx, k, E, w.h, w.u, a->fault))
        }
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
        if (!a->fused) {
            swiglu_rows<<<blocks_for((size_t)P * I, 256), 256, 0, stream>>>((size_t)P * I, w.h, w.u);
            if ((err = cudaGetLastError()) != cudaSuccess) return err;
        }
        MOE_CUDA_FORMAT_SWITCH(a->down.fmt, F,
                               gemv_down<F><<<dn, GEMV_THREADS, 0, stream>>>(a->down, w.h, I, a->idx, a->w, k, E, w.y,
                                                                             a->fault))
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
    } else {
        if ((err = cudaMemsetAsync(w.counts, 0, sizeof(int) * (size_t)E, stream)) != cudaSuccess) return err;
        count_pairs<<<blocks_for((size_t)P, 256), 256, 0, stream>>>(a->idx, P, k, E, w.counts, a->fault);
        scan_counts<<<1, 32, 0, stream>>>(w.counts, E, w.offsets, w.tile_prefix, w.cursor);
        scatter_pairs<<<blocks_for((size_t)P, 256), 256, 0, stream>>>(a->idx, P, E, w.cursor, w.sorted);
        if ((err = cudaGetLastError()) != cudaSuccess) return err;
        /* at most ⌈P/BM⌉ + E tiles; blocks past the last tile return at once */
        unsigned tiles = blocks_for((size_t)P, BM) + (unsigned)E;
        tile_rows gu = {};
        gu.offsets = w.offsets, gu.tile_prefix = w.tile_prefix, gu.E = E;
        gu.a_map = w.sorted, gu.a_div = k;     /* x row: the pair's token */
        if (a->fused) err = launch_tile_gemm<true>(&a->gate, &a->up, gu, tiles, a->x, D, w.h, I, stream);
        else {
            err = launch_tile_gemm<false>(&a->gate, nullptr, gu, tiles, a->x, D, w.h, I, stream);
            if (err == cudaSuccess) err = launch_tile_gemm<false>(&a->up, nullptr, gu, tiles, a->x, D, w.u, I, stream);
            if (err == cudaSuccess) {
                swiglu_rows<<<blocks_for((size_t)P * I, 256), 256, 0, stream>>>((size_t)P * I, w.h, w.u);
                err = cudaGetLastError();
            }
        }
        if (err != cudaSuccess) return err;
        tile_rows dn = {};
        dn.offsets = w.offsets, dn.tile_prefix = w.tile_prefix, dn.E = E;
        dn.c_map = w.sorted, dn.c_scale = a->w; /* out row: the pair, times its weight */
        if ((err = launch_tile_gemm<false>(&a->down, nullptr, dn, tiles, w.h, I, w.y, D, stream)) != cudaSuccess)
            return err;
    }
    combine_pairs<<<blocks_for((size_t)T * D, 256), 256, 0, stream>>>(T, k, D, w.y, a->out);
    return cudaGetLastError();
}

}  // extern "C"
