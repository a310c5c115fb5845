/* kernels/cuda/attention.cu — causal grouped-query attention over the KV
 * cache (float32 or half elements), kernels/attention.h's contract.
 *
 * The main path (head_dim a multiple of 4 up to 256, rows 16- or 8-byte
 * aligned) is flash-decoding: a block takes a tile of rows — up to 8
 * (query, head) pairs: several queries and the query heads sharing one kv
 * head — and a segment of the keys; each of its 4 warps walks every 4th key
 * of the segment, loading the key and value rows once (a lane holds 4
 * consecutive elements: float4, or 4 halves) for every row of the tile, with
 * the softmax online per row. When the (token, kv head) tiles alone are too
 * few to fill the GPU (decode), the keys are split into segments whose
 * partial results (maximum, sum, unnormalised output) a second kernel
 * combines; otherwise each block writes its rows' outputs itself (prefill,
 * where a tile of 8 queries reads each key and value once for all 8).
 *
 * The fallback (any other shape): one block of 4 warps per (query, head); each
 * warp walks every 4th key, its lanes splitting the head's dimensions
 * (lane + 32·i) for the q·k sum and for its share of the output, with the
 * softmax kept online (running maximum and sum), then the four warps'
 * partial results are merged. Scores, softmax and sums are float32 whatever
 * the cache holds. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda/cuda_kernels.h"

namespace {

enum { WARPS = 4 };

template <bool HALF>
__device__ inline float kv_at(const void *p, size_t i)
{
    if (HALF) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* NV = ⌈hd/32⌉ values of the head per lane */
template <int NV, bool HALF>
__global__ void __launch_bounds__(32 * WARPS)
attention_kernel(int T, int pos, int heads, int group, int hd, float scale, const float *q, const void *k,
                 const void *v, size_t kv_stride, float *out)
{
    __shared__ float part_m[WARPS], part_l[WARPS];
    extern __shared__ float part_acc[];   /* [WARPS][hd] */
    int t = blockIdx.x / heads, h = blockIdx.x % heads, kvh = h / group;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const float *qh = q + ((size_t)t * heads + h) * hd;
    float qv[NV], acc[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int d = lane + 32 * i;
        qv[i] = d < hd ? qh[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    int keys = pos + t + 1;
    for (int j = warp; j < keys; j += WARPS) {
        size_t row = (size_t)j * kv_stride + (size_t)kvh * hd;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) s = __fmaf_rn(qv[i], kv_at<HALF>(k, row + d), s);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * corr + p * kv_at<HALF>(v, row + d);
        }
        m = m_new;
    }
    if (lane == 0) part_m[warp] = m, part_l[warp] = l;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int d = lane + 32 * i;
        if (d < hd) part_acc[warp * hd + d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, part_m[w]);
    float L = 0.0f, f[WARPS];
    for (int w = 0; w < WARPS; w++) {
        f[w] = part_l[w] > 0.0f ? expf(part_m[w] - M) : 0.0f;
        L += part_l[w] * f[w];
    }
    float *o = out + ((size_t)t * heads + h) * hd;
    for (int d = threadIdx.x; d < hd; d += 32 * WARPS) {
        float s = 0.0f;
        for (int w = 0; w < WARPS; w++) s += part_acc[w * hd + d] * f[w];
        o[d] = s / L;
    }
}

/* ---- the tiled, split path ---- */

/* A block's rows: R = GC heads of one kv head × R/GC consecutive queries;
 * NV chunks of 4 elements per lane (head_dim ≤ 128·NV). */
struct tile_args {
    int T, pos, heads, group, hd, gc, qt, nsplit, seg;
    float scale;
    const float *q;
    const void *k, *v;
    size_t kv_stride;
    float *out;    /* nsplit == 1: the output */
    float *part;   /* nsplit > 1: [nsplit][T·heads][hd] unnormalised outputs */
    float *ml;     /* nsplit > 1: [nsplit][T·heads][2] maximum, sum */
};

template <bool HALF>
__device__ inline void load4(const void *p, size_t i, float *f)
{
    if (HALF) {
        uint2 u = *(const uint2 *)((const __half *)p + i);
        float2 a = __half22float2(*(const __half2 *)&u.x), b = __half22float2(*(const __half2 *)&u.y);
        f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    } else {
        float4 u = *(const float4 *)((const float *)p + i);
        f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w;
    }
}

/* grid (T-tiles · kv_heads · group/gc, nsplit); R = gc·qt rows ≤ RMAX */
template <int NV, int RMAX, bool HALF>
__global__ void __launch_bounds__(32 * WARPS) attention_tile_kernel(tile_args a)
{
    extern __shared__ float smem[];   /* acc [WARPS][RMAX][hd], then m, l [WARPS][RMAX] */
    float *s_acc = smem, *s_m = smem + WARPS * RMAX * a.hd, *s_l = s_m + WARPS * RMAX;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int hchunks = a.group / a.gc, kv_heads = a.heads / a.group;
    int b = blockIdx.x;
    int hc = b % hchunks;
    b /= hchunks;
    int kvh = b % kv_heads, t0 = (b / kv_heads) * a.qt;
    int h0 = kvh * a.group + hc * a.gc;
    int rows = a.gc * a.qt;
    int t_last = min(t0 + a.qt, a.T) - 1;
    int s0 = blockIdx.y * a.seg, s1 = min(s0 + a.seg, a.pos + t_last + 1);

    float qv[RMAX][NV][4], acc[RMAX][NV][4], m[RMAX], l[RMAX];
    int last[RMAX];   /* the row's last key; -1: no such row */
#pragma unroll
    for (int r = 0; r < RMAX; r++) {
        int t = t0 + r / a.gc, h = h0 + r % a.gc;
        bool live = r < rows && t < a.T;
        last[r] = live ? a.pos + t : -1;
        m[r] = -INFINITY, l[r] = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = 4 * lane + 128 * i;
#pragma unroll
            for (int c = 0; c < 4; c++) {
                qv[r][i][c] = live && d < a.hd ? a.q[((size_t)t * a.heads + h) * a.hd + d + c] : 0.0f;
                acc[r][i][c] = 0.0f;
            }
        }
    }
    for (int j = s0 + warp; j < s1; j += WARPS) {
        size_t row = (size_t)j * a.kv_stride + (size_t)kvh * a.hd;
        float kc[NV][4], vc[NV][4];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = 4 * lane + 128 * i;
            if (d < a.hd) {
                load4<HALF>(a.k, row + d, kc[i]);
                load4<HALF>(a.v, row + d, vc[i]);
            } else {
#pragma unroll
                for (int c = 0; c < 4; c++) kc[i][c] = vc[i][c] = 0.0f;
            }
        }
#pragma unroll
        for (int r = 0; r < RMAX; r++) {
            if (j > last[r]) continue;   /* masked (or no row): the same for the whole warp */
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < NV; i++)
#pragma unroll
                for (int c = 0; c < 4; c++) s = __fmaf_rn(qv[r][i][c], kc[i][c], s);
            for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            s *= a.scale;
            float m_new = fmaxf(m[r], s), corr = expf(m[r] - m_new), p = expf(s - m_new);
            l[r] = l[r] * corr + p;
#pragma unroll
            for (int i = 0; i < NV; i++)
#pragma unroll
                for (int c = 0; c < 4; c++) acc[r][i][c] = acc[r][i][c] * corr + p * vc[i][c];
            m[r] = m_new;
        }
    }
    /* merge the warps' partial rows */
#pragma unroll
    for (int r = 0; r < RMAX; r++) {
        if (lane == 0) s_m[warp * RMAX + r] = m[r], s_l[warp * RMAX + r] = l[r];
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = 4 * lane + 128 * i;
            if (d < a.hd)
#pragma unroll
                for (int c = 0; c < 4; c++) s_acc[(warp * RMAX + r) * a.hd + d + c] = acc[r][i][c];
        }
    }
    __syncthreads();
    for (int r = 0; r < rows; r++) {
        int t = t0 + r / a.gc, h = h0 + r % a.gc;
        if (t >= a.T) break;
        float M = -INFINITY;
        for (int w = 0; w < WARPS; w++) M = fmaxf(M, s_m[w * RMAX + r]);
        float L = 0.0f, f[WARPS];
        for (int w = 0; w < WARPS; w++) {
            f[w] = s_l[w * RMAX + r] > 0.0f ? expf(s_m[w * RMAX + r] - M) : 0.0f;
            L += s_l[w * RMAX + r] * f[w];
        }
        size_t at = (size_t)t * a.heads + h;
        if (a.nsplit == 1) {
            float *o = a.out + at * a.hd;
            for (int d = threadIdx.x; d < a.hd; d += 32 * WARPS) {
                float s = 0.0f;
                for (int w = 0; w < WARPS; w++) s += s_acc[(w * RMAX + r) * a.hd + d] * f[w];
                o[d] = s / L;
            }
        } else {
            size_t slot = (size_t)blockIdx.y * a.T * a.heads + at;
            float *o = a.part + slot * a.hd;
            for (int d = threadIdx.x; d < a.hd; d += 32 * WARPS) {
                float s = 0.0f;
                for (int w = 0; w < WARPS; w++) s += s_acc[(w * RMAX + r) * a.hd + d] * f[w];
                o[d] = s;
            }
            if (threadIdx.x == 0) a.ml[2 * slot] = M, a.ml[2 * slot + 1] = L;   /* L = 0: no key here */
        }
    }
}

/* one block per (token, head): out = Σ_s part_s · e^(m_s − M) / Σ_s l_s · e^(m_s − M) */
__global__ void attention_combine_kernel(int n, int nsplit, int hd, const float *part, const float *ml, float *out)
{
    size_t at = blockIdx.x;
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++)
        if (ml[2 * ((size_t)s * n + at) + 1] > 0.0f) M = fmaxf(M, ml[2 * ((size_t)s * n + at)]);
    float L = 0.0f;
    for (int s = 0; s < nsplit; s++) {
        float l = ml[2 * ((size_t)s * n + at) + 1];
        if (l > 0.0f) L += l * expf(ml[2 * ((size_t)s * n + at)] - M);
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            size_t slot = (size_t)s * n + at;
            float l = ml[2 * slot + 1];
            if (l > 0.0f) acc += part[slot * hd + d] * expf(ml[2 * slot] - M);
        }
        out[at * hd + d] = acc / L;
    }
}

enum {
    TILE_ROWS = 8,         /* rows a block holds (NV = 1); 4 when NV = 2 */
    TARGET_BLOCKS = 264,   /* two blocks per SM of an H100 */
    MIN_SEGMENT = 64,      /* keys below which a further split does not pay */
    MAX_SPLIT = 64,
};

struct plan {
    int ok, nv, gc, qt, tiles, nsplit, seg;
};

/* How the tiled path lays out a call (ok = 0: the fallback takes it). */
plan make_plan(int T, int pos, int heads, int kv_heads, int hd, int kv_f16, const void *k, const void *v,
               size_t kv_stride)
{
    plan p = {};
    size_t align = kv_f16 ? 8 : 16;
    if (hd % 4 || hd > 256 || kv_stride % 4 || (uintptr_t)k % align || (uintptr_t)v % align) return p;
    p.ok = 1;
    p.nv = hd <= 128 ? 1 : 2;
    int rmax = p.nv == 1 ? TILE_ROWS : TILE_ROWS / 2, group = heads / kv_heads;
    p.gc = 1;
    while (p.gc * 2 <= rmax && group % (p.gc * 2) == 0) p.gc *= 2;
    p.qt = rmax / p.gc;
    if (p.qt > T) p.qt = T;
    p.tiles = (T + p.qt - 1) / p.qt * kv_heads * (group / p.gc);
    int keys = pos + T;
    int want = (TARGET_BLOCKS + p.tiles - 1) / p.tiles, most = (keys + MIN_SEGMENT - 1) / MIN_SEGMENT;
    p.nsplit = want < most ? want : most;
    if (p.nsplit > MAX_SPLIT) p.nsplit = MAX_SPLIT;
    if (p.nsplit < 1) p.nsplit = 1;
    p.seg = (keys + p.nsplit - 1) / p.nsplit;
    p.nsplit = (keys + p.seg - 1) / p.seg;   /* no empty last segment */
    return p;
}

template <int NV, int RMAX, bool HALF>
cudaError_t launch_tile(const plan &p, const tile_args &a, cudaStream_t stream)
{
    size_t smem = sizeof(float) * WARPS * RMAX * ((size_t)a.hd + 2);
    dim3 grid((unsigned)p.tiles, (unsigned)p.nsplit);
    attention_tile_kernel<NV, RMAX, HALF><<<grid, 32 * WARPS, smem, stream>>>(a);
    return cudaGetLastError();
}

template <int NV>
cudaError_t launch(int T, int pos, int heads, int kv_heads, int hd, float scale, const float *q, int kv_f16,
                   const void *k, const void *v, size_t kv_stride, float *out, cudaStream_t stream)
{
    size_t smem = sizeof(float) * WARPS * (size_t)hd;
    unsigned blocks = (unsigned)((size_t)T * heads);
    if (kv_f16)
        attention_kernel<NV, true><<<blocks, 32 * WARPS, smem, stream>>>(T, pos, heads, heads / kv_heads, hd, scale, q,
                                                                          k, v, kv_stride, out);
    else
        attention_kernel<NV, false><<<blocks, 32 * WARPS, smem, stream>>>(T, pos, heads, heads / kv_heads, hd, scale,
                                                                           q, k, v, kv_stride, out);
    return cudaGetLastError();
}

}  // namespace

extern "C" size_t moe_cuda_attention_workspace(int T, int pos, int heads, int kv_heads, int hd, int kv_f16,
                                               const void *k, const void *v, size_t kv_stride)
{
    if (T <= 0 || hd < 1 || kv_heads < 1 || heads % kv_heads) return 0;
    plan p = make_plan(T, pos, heads, kv_heads, hd, kv_f16, k, v, kv_stride);
    if (!p.ok || p.nsplit == 1) return 0;
    return sizeof(float) * (size_t)p.nsplit * T * heads * ((size_t)hd + 2);
}

extern "C" cudaError_t moe_cuda_attention(int T, int pos, int heads, int kv_heads, int hd, float scale, const float *q,
                                          int kv_f16, const void *k, const void *v, size_t kv_stride, float *out,
                                          void *work, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (hd < 1 || hd > 1024 || kv_heads < 1 || heads % kv_heads) return cudaErrorInvalidValue;
    plan p = make_plan(T, pos, heads, kv_heads, hd, kv_f16, k, v, kv_stride);
    if (p.ok && (p.nsplit == 1 || work)) {
        size_t n = (size_t)T * heads;
        tile_args a = {T, pos, heads, heads / kv_heads, hd, p.gc, p.qt, p.nsplit, p.seg, scale, q, k, v, kv_stride,
                       out, (float *)work, work ? (float *)work + (size_t)p.nsplit * n * hd : NULL};
        cudaError_t e;
        if (p.nv == 1)
            e = kv_f16 ? launch_tile<1, TILE_ROWS, true>(p, a, stream) : launch_tile<1, TILE_ROWS, false>(p, a, stream);
        else
            e = kv_f16 ? launch_tile<2, TILE_ROWS / 2, true>(p, a, stream)
                       : launch_tile<2, TILE_ROWS / 2, false>(p, a, stream);
        if (e != cudaSuccess || p.nsplit == 1) return e;
        attention_combine_kernel<<<(unsigned)n, hd < 128 ? hd : 128, 0, stream>>>((int)n, p.nsplit, hd, a.part, a.ml,
                                                                                   out);
        return cudaGetLastError();
    }
    if (hd <= 32) return launch<1>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 64) return launch<2>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 128) return launch<4>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 256) return launch<8>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    if (hd <= 512) return launch<16>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
    return launch<32>(T, pos, heads, kv_heads, hd, scale, q, kv_f16, k, v, kv_stride, out, stream);
}
