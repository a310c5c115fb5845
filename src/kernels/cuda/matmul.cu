/* kernels/cuda/matmul.cu — projections, the embedding lookup and the
 * SwitchGLU expert layer on weights in the checkpoint's format.
 *
 * Two shapes of work:
 *  - a few activation rows (decode): a warp per output row streams the row
 *    once, quantized rows 8 values a lane a step with a stretch of loads in
 *    flight, and takes up to 8 activation rows along (warp_dots);
 *  - many rows: a tiled GEMM, 64 rows × 64 outputs a block, 32 columns a
 *    step through shared memory, each thread 4 × 4 outputs in float32; the
 *    weight tile is dequantized as it is staged;
 *  - a prompt's rows (MMA_MIN_TOKENS or more): the same tiling on the
 *    tensor cores, 64 rows × 128 outputs a block: activations rounded to
 *    bfloat16 and the weight tile dequantized and rounded to bfloat16 as
 *    they are staged in shared memory (never a dequantized copy in device
 *    memory), mma.sync m16n8k16 with float32 sums; the next tile's loads are
 *    in flight while the tensor cores take the current one.
 * The expert layer groups token–expert pairs by expert on the device
 * (count, scan, scatter: no host round trip), then runs the tiled GEMM over
 * each expert's block of pairs: gate and up (fused: both tiles staged
 * together, SwiGLU on the way out; unfused: two passes and SwiGLU a third,
 * the same sums in the same order), and down with the router weight applied
 * to each pair's row; a last pass adds a token's k rows in order j = 0..k-1,
 * so the result does not depend on how pairs were scheduled. */
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/weights.cuh"

namespace {

enum { GEMV_ROWS = 8, GEMV_THREADS = 32 * GEMV_ROWS, GEMV_MAX_TOKENS = 8 };
enum { BM = 64, BN = 64, BK = 32, TILE_THREADS = 256 };
/* the tensor-core tile: BM rows × mma_bn outputs (128; 64 of each matrix
 * fused, so that its sums fit two blocks an SM), BK columns a step, 8 warps
 * of 32 rows × mma_bn/4 outputs (tiles of m16n8); rows of shared memory
 * padded by 8 halves, so a warp's fragment loads fall in 32 different banks */
enum { MMA_PAD = 8, MMA_MIN_TOKENS = 64 };
__host__ __device__ constexpr int mma_bn(bool fused) { return fused ? 64 : 128; }
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
    const wrows m[1] = { wrows_of(W, 0) };
    const int rr[1] = { r };
    float acc[1][M];
    warp_dots<F, M, 1>(m, rr, x, (size_t)W.K, T, acc);
    if ((threadIdx.x & 31) == 0)
        for (int t = 0; t < T && t < M; t++) y[(size_t)t * W.rows + r] = acc[0][t];
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

/* Which rows block bx takes (false: none, a grouped tile past the last). */
__device__ inline bool block_rows(const tile_rows &R, int *e, int *m_lo, int *m_hi)
{
    int b = blockIdx.x;
    *e = 0;
    if (R.offsets) {
        if (b >= R.tile_prefix[R.E]) return false;
        int lo = 0, hi = R.E;
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (R.tile_prefix[mid] <= b) lo = mid;
            else hi = mid;
        }
        *e = lo;
        *m_lo = R.offsets[lo] + (b - R.tile_prefix[lo]) * BM;
        *m_hi = min(*m_lo + BM, R.offsets[lo + 1]);
    } else {
        *m_lo = b * BM;
        *m_hi = min(*m_lo + BM, R.M);
    }
    return true;
}

/* The block's rows, where they come from and go, and their scales, into
 * shared memory (then a barrier); false when the block has none. */
__device__ inline bool stage_rows(const tile_rows &R, int *a_row, int *c_row, float *c_sc, int *e)
{
    int m_lo, m_hi, tid = threadIdx.x;
    if (!block_rows(R, e, &m_lo, &m_hi)) return false;
    if (tid < BM) {
        int m = m_lo + tid, ok = m < m_hi;
        int cr = ok ? (R.c_map ? R.c_map[m] : m) : -1;
        a_row[tid] = ok ? (R.a_map ? R.a_map[m] / R.a_div : m) : -1;
        c_row[tid] = cr;
        c_sc[tid] = ok && R.c_scale ? R.c_scale[cr] : 1.0f;
    }
    __syncthreads();
    return true;
}

template <int F, bool FUSED>
__global__ void __launch_bounds__(TILE_THREADS)
tile_gemm(moe_cuda_weights W0, moe_cuda_weights W1, tile_rows R, const float *A, int lda, int a_vec, float *C,
          int ldc, int N)
{
    __shared__ __align__(16) float As[BK][BM + 4];
    __shared__ __align__(16) float Bs[FUSED ? 2 : 1][BK][BN + 4];
    __shared__ int a_row[BM], c_row[BM];
    __shared__ float c_sc[BM];
    int tid = threadIdx.x, e;
    if (!stage_rows(R, a_row, c_row, c_sc, &e)) return;

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

/* ---- many rows on the tensor cores ---- */

__device__ inline uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ inline uint4 pack8_bf16(const float v[8])
{
    return make_uint4(pack_bf16(v[0], v[1]), pack_bf16(v[2], v[3]), pack_bf16(v[4], v[5]), pack_bf16(v[6], v[7]));
}

/* d += a · b: one m16n8k16 product, bfloat16 inputs, float32 sums */
__device__ inline void mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* ---- the tensor cores' staging: raw bytes, STAGES steps ahead ----
 * cp.async copies each step's activation rows (float32), weight bytes (codes
 * or values) and, for codes, the scale and bias of each row's group into a
 * ring of shared-memory stages; the step being multiplied is converted from
 * its stage to the bfloat16 tiles, so global latency hides behind the
 * stages in flight, not behind one step's products. */

enum { STAGES = 4 };

/* bytes of one weight value (codes: a fraction) */
template <int F>
struct wbits {
    static constexpr int bits = F == MOE_CUDA_W_Q4 ? 4 : F == MOE_CUDA_W_Q8 ? 8 : F == MOE_CUDA_W_F32 ? 32 : 16;
    static constexpr int row = BK * bits / 8;   /* a row's bytes in a step */
    static constexpr bool quant = F == MOE_CUDA_W_Q4 || F == MOE_CUDA_W_Q8;
};

/* one stage: activations [BM][BK] floats, weights [NB][bn][row] bytes, and
 * for codes the 4-byte words holding each row's scale and bias [NB][bn] */
template <int F, bool FUSED>
struct stage_layout {
    static constexpr int NB = FUSED ? 2 : 1, BNT = mma_bn(FUSED);
    static constexpr int a = 0, w = BM * BK * 4, s = w + NB * BNT * wbits<F>::row, b = s + NB * BNT * 4;
    static constexpr int bytes = (b + NB * BNT * 4 + 15) / 16 * 16;
    /* then the bfloat16 tiles */
    static constexpr int tiles = (BM + NB * BNT) * (BK + MMA_PAD) * 2;
    static constexpr int smem = STAGES * bytes + tiles;
};

/* The order of eight staged values in a tile row: 4-bit codes are turned
 * two at a time (codes i and i + 4 of a word, the low and high halves of a
 * bfloat16 pair), so their rows hold k = 0, 4, 1, 5, 2, 6, 3, 7 of each 8;
 * the activations are staged in the same order, and the products pair
 * the same k as in order. Other formats keep the order. */
template <int F>
__device__ inline uint4 pack8_staged(const float v[8])
{
    if (F != MOE_CUDA_W_Q4) return pack8_bf16(v);
    return make_uint4(pack_bf16(v[0], v[4]), pack_bf16(v[1], v[5]), pack_bf16(v[2], v[6]), pack_bf16(v[3], v[7]));
}

/* eight values of a staged weight row as bfloat16, in pack8_staged's order */
template <int F>
__device__ inline uint4 stage_values(const unsigned char *w, int lk, unsigned sword, unsigned bword, int sshift,
                                     int sdtype)
{
    float v[8];
    if (wbits<F>::quant) {
        auto dec = [&](unsigned word) {
            if (sdtype == MOE_DTYPE_F32) return __uint_as_float(word);
            unsigned short h = (unsigned short)(word >> sshift);
            return sdtype == MOE_DTYPE_F16 ? f16_bits_to_f32(h) : bf16_bits_to_f32(h);
        };
        float scale = dec(sword), bias = dec(bword);
        if (F == MOE_CUDA_W_Q4) {
            /* two codes a step in bfloat16: under the exponent of 128 the
             * code's 4 bits make 128 + q exactly, less 128 is q, then one
             * rounding of q·scale + bias (the float path rounds twice,
             * to float and then to bfloat16: the same but at rare ties) */
            uint32_t word = *(const uint32_t *)(w + lk / 2);
            __nv_bfloat162 s2 = __float2bfloat162_rn(scale), b2 = __float2bfloat162_rn(bias);
            const __nv_bfloat162 base = __float2bfloat162_rn(128.0f);
            uint32_t out[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                uint32_t bits = ((word >> (4 * i)) & 0x000f000fu) | 0x43004300u;
                __nv_bfloat162 q = __hsub2(*(const __nv_bfloat162 *)&bits, base);
                __nv_bfloat162 r = __hfma2(q, s2, b2);
                out[i] = *(const uint32_t *)&r;
            }
            return make_uint4(out[0], out[1], out[2], out[3]);
        }
        uint2 words = *(const uint2 *)(w + lk);
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[i] = __fadd_rn(__fmul_rn(scale, code_of<8>(words.x, i)), bias);
            v[4 + i] = __fadd_rn(__fmul_rn(scale, code_of<8>(words.y, i)), bias);
        }
    } else if (F == MOE_CUDA_W_F32) {
        float4 a = *(const float4 *)(w + lk * 4), b = *(const float4 *)(w + lk * 4 + 16);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
        uint4 u = *(const uint4 *)(w + lk * 2);
        unsigned words[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
        for (int i = 0; i < 4; i++) {
            unsigned short lo = (unsigned short)(words[i] & 0xffffu), hi = (unsigned short)(words[i] >> 16);
            v[2 * i] = F == MOE_CUDA_W_F16 ? f16_bits_to_f32(lo) : bf16_bits_to_f32(lo);
            v[2 * i + 1] = F == MOE_CUDA_W_F16 ? f16_bits_to_f32(hi) : bf16_bits_to_f32(hi);
        }
    }
    return pack8_staged<F>(v);
}

/* C rows (mapped, scaled) = A rows (mapped) · Wᵀ on the tensor cores;
 * FUSED: silu(A·W0ᵀ) ⊙ (A·W1ᵀ). Shapes mma_fits() accepts (K a multiple
 * of BK, 16-byte rows). The conversion: thread tid takes activation row
 * tid/4 and weight rows tid/4 (and tid/4 + 64), 8 columns at (tid%4)·8. */
template <int F, bool FUSED>
__global__ void __launch_bounds__(TILE_THREADS)
mma_gemm(moe_cuda_weights W0, moe_cuda_weights W1, tile_rows R, const float *A, int lda, float *C, int ldc, int N)
{
    using L = stage_layout<F, FUSED>;
    constexpr int NB = L::NB, BNT = L::BNT, HR = BNT / 64, NI = BNT / 32, WROW = wbits<F>::row;
    extern __shared__ __align__(16) unsigned char smem[];
    typedef __nv_bfloat16 tile_row[BK + MMA_PAD];
    tile_row *As = (tile_row *)(smem + STAGES * L::bytes), *Bs = As + BM;   /* Bs[w·BNT + n] */
    __shared__ int a_row[BM], c_row[BM];
    __shared__ float c_sc[BM];
    int tid = threadIdx.x, e;
    if (!stage_rows(R, a_row, c_row, c_sc, &e)) return;

    wrows m0 = wrows_of(W0, e), m1 = wrows_of(FUSED ? W1 : W0, e);
    int K = W0.K, n0 = blockIdx.y * BNT, nk = K / BK;
    int groups = wbits<F>::quant ? K / W0.group : 1, es = W0.sdtype == MOE_DTYPE_F32 ? 4 : 2;

    /* the copies of step ks into stage st */
    auto issue = [&](int st, int ks) {
        unsigned char *base = smem + st * L::bytes;
        int k0 = ks * BK;
        for (int c = tid; c < BM * BK / 4; c += TILE_THREADS) {
            int row = c / (BK / 4), col = (c % (BK / 4)) * 4, ar = a_row[row];
            cp_async16(base + L::a + (row * BK + col) * 4, ar >= 0 ? A + (size_t)ar * lda + k0 + col : A, ar >= 0);
        }
        for (int c = tid; c < NB * BNT * WROW / 16; c += TILE_THREADS) {
            int w = c / (BNT * WROW / 16), rem = c % (BNT * WROW / 16), row = rem / (WROW / 16), part = rem % (WROW / 16);
            int r = n0 + row;
            const unsigned char *src = (w ? m1.w : m0.w) + (size_t)(r < N ? r : 0) * m0.w_row +
                                       (size_t)k0 * wbits<F>::bits / 8;
            cp_async16(base + L::w + (w * BNT + row) * WROW + part * 16, src + part * 16, r < N);
        }
        if (wbits<F>::quant)
            for (int c = tid; c < NB * BNT * 2; c += TILE_THREADS) {
                int which = c / (NB * BNT), rem = c % (NB * BNT), w = rem / BNT, row = rem % BNT, r = n0 + row;
                size_t at = ((size_t)(r < N ? r : 0) * groups + k0 / W0.group) * es;
                /* the aligned word holding the scale (an expert's scales
                 * may start 2 bytes into a word) */
                const unsigned char *p = (which ? (w ? m1.b : m0.b) : (w ? m1.s : m0.s)) + at;
                const unsigned char *src = (const unsigned char *)((uintptr_t)p & ~(uintptr_t)3);
                cp_async4(base + (which ? L::b : L::s) + (w * BNT + row) * 4, src, r < N);
            }
    };

    int li = tid >> 2, lk = (tid & 3) * 8;
    int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    int wm = (warp >> 2) * 32, wn = (warp & 3) * (BNT / 4);
    float acc[NB][2][NI][4] = {};
#pragma unroll
    for (int st = 0; st < STAGES - 1; st++) {
        if (st < nk) issue(st, st);
        cp_async_commit();
    }
    for (int ks = 0; ks < nk; ks++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        /* this step's stage into the bfloat16 tiles */
        const unsigned char *base = smem + (ks % STAGES) * L::bytes;
        {
            float v[8];
            const float *ar = (const float *)(base + L::a) + li * BK + lk;
            float4 x0 = *(const float4 *)ar, x1 = *(const float4 *)(ar + 4);
            v[0] = x0.x, v[1] = x0.y, v[2] = x0.z, v[3] = x0.w, v[4] = x1.x, v[5] = x1.y, v[6] = x1.z, v[7] = x1.w;
            *(uint4 *)&As[li][lk] = pack8_staged<F>(v);
#pragma unroll
            for (int w = 0; w < NB; w++)
#pragma unroll
                for (int h = 0; h < HR; h++) {
                    int row = li + 64 * h, r = n0 + row;
                    /* a 2-byte scale is the high half of its word at addresses 2 mod 4
                     * (biases and up's scales lie as gate's scales do: same
                     * shapes, allocations aligned alike) */
                    size_t at = ((size_t)(r < N ? r : 0) * groups + ks * BK / (wbits<F>::quant ? W0.group : 1)) * es;
                    int shift = wbits<F>::quant && ((uintptr_t)(m0.s + at) & 2) ? 16 : 0;
                    *(uint4 *)&Bs[w * BNT + row][lk] = stage_values<F>(
                        base + L::w + (w * BNT + row) * WROW, lk,
                        wbits<F>::quant ? *(const unsigned *)(base + L::s + (w * BNT + row) * 4) : 0u,
                        wbits<F>::quant ? *(const unsigned *)(base + L::b + (w * BNT + row) * 4) : 0u, shift,
                        W0.sdtype);
                }
        }
        if (ks + STAGES - 1 < nk) issue((ks + STAGES - 1) % STAGES, ks + STAGES - 1);
        cp_async_commit();
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t a[2][4], b[NB][NI][2];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                int r = wm + mi * 16 + g;
                a[mi][0] = *(const uint32_t *)&As[r][kk + 2 * t4];
                a[mi][1] = *(const uint32_t *)&As[r + 8][kk + 2 * t4];
                a[mi][2] = *(const uint32_t *)&As[r][kk + 2 * t4 + 8];
                a[mi][3] = *(const uint32_t *)&As[r + 8][kk + 2 * t4 + 8];
            }
#pragma unroll
            for (int w = 0; w < NB; w++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++) {
                    int n = w * BNT + wn + ni * 8 + g;
                    b[w][ni][0] = *(const uint32_t *)&Bs[n][kk + 2 * t4];
                    b[w][ni][1] = *(const uint32_t *)&Bs[n][kk + 2 * t4 + 8];
                }
#pragma unroll
            for (int w = 0; w < NB; w++)
#pragma unroll
                for (int mi = 0; mi < 2; mi++)
#pragma unroll
                    for (int ni = 0; ni < NI; ni++) mma_bf16(acc[w][mi][ni], a[mi], b[w][ni]);
        }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            int row = wm + mi * 16 + g + 8 * hr, cr = c_row[row];
            if (cr < 0) continue;
            float sc = c_sc[row];
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    int n = n0 + wn + ni * 8 + 2 * t4 + c;
                    if (n >= N) continue;
                    float val = acc[0][mi][ni][2 * hr + c];
                    if (FUSED) val = swiglu(val, acc[NB - 1][mi][ni][2 * hr + c]);
                    if (R.c_scale) val = __fmul_rn(val, sc);
                    C[(size_t)cr * ldc + n] = val;
                }
        }
}

/* whether the tensor-core kernel takes these shapes: whole steps of K,
 * 16-byte rows of activations and weights */
bool mma_fits(const moe_cuda_weights *W, const float *A, int lda)
{
    return W->K % BK == 0 && lda % 4 == 0 && (uintptr_t)A % 16 == 0 && W->w_row % 16 == 0 &&
           (uintptr_t)W->w % 16 == 0 && (W->fmt == MOE_CUDA_W_Q4 || W->fmt == MOE_CUDA_W_Q8 ? W->group % BK == 0 : 1);
}

template <int F, bool FUSED>
cudaError_t launch_mma_f(const moe_cuda_weights *W0, const moe_cuda_weights *W1, const tile_rows &R, unsigned tiles,
                         const float *A, int lda, float *C, int ldc, cudaStream_t stream)
{
    constexpr int smem = stage_layout<F, FUSED>::smem;
    static bool raised = false;   /* the dynamic shared-memory limit, raised once */
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(mma_gemm<F, FUSED>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    dim3 grid(tiles, blocks_for((size_t)W0->rows, mma_bn(FUSED)));
    mma_gemm<F, FUSED><<<grid, TILE_THREADS, smem, stream>>>(*W0, W1 ? *W1 : *W0, R, A, lda, C, ldc, W0->rows);
    return cudaGetLastError();
}

template <bool FUSED>
cudaError_t launch_mma_gemm(const moe_cuda_weights *W0, const moe_cuda_weights *W1, const tile_rows &R,
                            unsigned tiles, const float *A, int lda, float *C, int ldc, cudaStream_t stream)
{
    if (!tiles) return cudaSuccess;
    MOE_CUDA_FORMAT_SWITCH(W0->fmt, F, return launch_mma_f<F, FUSED>(W0, W1, R, tiles, A, lda, C, ldc, stream))
    return cudaSuccess;
}

/* the tiled GEMM of many rows: on the tensor cores from MMA_MIN_TOKENS tokens */
template <bool FUSED>
cudaError_t launch_gemm(bool mma, const moe_cuda_weights *W0, const moe_cuda_weights *W1, const tile_rows &R,
                        unsigned tiles, const float *A, int lda, float *C, int ldc, cudaStream_t stream)
{
    return mma && mma_fits(W0, A, lda) && (!W1 || mma_fits(W1, A, lda))
               ? launch_mma_gemm<FUSED>(W0, W1, R, tiles, A, lda, C, ldc, stream)
               : launch_tile_gemm<FUSED>(W0, W1, R, tiles, A, lda, C, ldc, stream);
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
    /* gate's and up's rows side by side: both streams in flight at once */
    const wrows m[2] = { wrows_of(G, e), wrows_of(U, e) };
    const int rr[2] = { r, r };
    float acc[2][1];
    warp_dots<F, 1, 2>(m, rr, xr, (size_t)D, 1, acc);
    if ((threadIdx.x & 31) == 0) {
        size_t at = (size_t)p * G.rows + r;
        if (FUSED) h[at] = swiglu(acc[0][0], acc[1][0]);
        else h[at] = acc[0][0], u[at] = acc[1][0];
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
    const wrows m[1] = { wrows_of(W, e) };
    const int rr[1] = { r };
    float acc[1][1];
    warp_dots<F, 1, 1>(m, rr, h + (size_t)p * I, (size_t)I, 1, acc);
    if ((threadIdx.x & 31) == 0) y[(size_t)p * W.rows + r] = __fmul_rn(acc[0][0], w[p]);
}

__global__ void swiglu_rows(size_t n, float *g, const float *u)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) g[i] = swiglu(g[i], u[i]);
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

int moe_cuda_tensor_cores(void)
{
    static int on = -1;
    if (on < 0) {
        /* on (they pass the GPU tests, and a 2048-token prompt runs 3x
         * faster on an H100); MOE_CUDA_TENSOR_CORES=0 keeps every size on
         * the float32 kernels, to compare or to rule them out */
        const char *e = getenv("MOE_CUDA_TENSOR_CORES");
        on = !(e && strcmp(e, "0") == 0);
    }
    return on;
}

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
    return launch_gemm<false>(T >= MMA_MIN_TOKENS && moe_cuda_tensor_cores(), W, nullptr, R, blocks_for((size_t)T, BM),
                              x, W->K, y, W->rows, stream);
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
        bool mma = T >= MMA_MIN_TOKENS && moe_cuda_tensor_cores();
        if (a->fused) err = launch_gemm<true>(mma, &a->gate, &a->up, gu, tiles, a->x, D, w.h, I, stream);
        else {
            err = launch_gemm<false>(mma, &a->gate, nullptr, gu, tiles, a->x, D, w.h, I, stream);
            if (err == cudaSuccess) err = launch_gemm<false>(mma, &a->up, nullptr, gu, tiles, a->x, D, w.u, I, stream);
            if (err == cudaSuccess) {
                swiglu_rows<<<blocks_for((size_t)P * I, 256), 256, 0, stream>>>((size_t)P * I, w.h, w.u);
                err = cudaGetLastError();
            }
        }
        if (err != cudaSuccess) return err;
        tile_rows dn = {};
        dn.offsets = w.offsets, dn.tile_prefix = w.tile_prefix, dn.E = E;
        dn.c_map = w.sorted, dn.c_scale = a->w; /* out row: the pair, times its weight */
        if ((err = launch_gemm<false>(mma, &a->down, nullptr, dn, tiles, w.h, I, w.y, D, stream)) != cudaSuccess)
            return err;
    }
    if (a->defer_combine) return cudaSuccess;
    return moe_cuda_combine(T, k, D, w.y, a->out, stream);
}

const float *moe_cuda_experts_pairs(const moe_cuda_experts_args *a)
{
    return carve(a->work, a->T, a->k, a->E, a->D, a->I, a->fused).y;
}

}  // extern "C"
