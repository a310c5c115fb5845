/* kernels/cuda/attention.cu — causal grouped-query attention over the KV
 * cache (float32, half, or 8-bit head blocks: kernels/kv_q8.h),
 * kernels/attention.h's contract.
 *
 * The main path (head_dim a multiple of 4 up to 256, rows 16-, 8- or
 * (8-bit) 2-byte aligned) is flash-decoding: a block takes a tile of rows
 * — up to 8 (query, head) pairs: several queries and the query heads
 * sharing one kv head — and a segment of the keys; each of its 4 warps
 * walks every 4th key of the segment, loading the key and value rows once
 * (a lane holds 4 consecutive elements: float4, 4 halves, or 4 codes of
 * one group with their scale) for every row of the tile, with the softmax
 * online per row. When the (token, kv head) tiles alone are too
 * few to fill the GPU (decode), the keys are split into segments whose
 * partial results (maximum, sum, unnormalised output) a second kernel
 * combines; otherwise each block writes its rows' outputs itself (prefill,
 * where a tile of 8 queries reads each key and value once for all 8).
 *
 * A prompt's queries (MMA_MIN_QUERIES or more, head_dim 64 or 128) take
 * the tensor cores instead, flash-attention style: a block of 4 warps holds
 * 64 queries of one head, each warp 16 of them as mma.sync fragments in
 * half precision; 64 keys and values at a time are staged in shared memory
 * as halves, row by row (a half cache copied by cp.async into one of two
 * stages while the other is used; other caches through registers, 8-bit
 * codes dequantized to float32 on the way, then rounded to halves as
 * float32 elements are), S = Q·Kᵀ and O += P·V are m16n8k16 products with
 * float32 sums (the values' fragments read transposed by ldmatrix), and
 * the softmax stays online in registers,
 * P going from S's accumulators to the next product's operand without a
 * trip through memory.
 *
 * The fallback (any other shape): one block of 4 warps per (query, head); each
 * warp walks every 4th key, its lanes splitting the head's dimensions
 * (lane + 32·i) for the q·k sum and for its share of the output, with the
 * softmax kept online (running maximum and sum), then the four warps'
 * partial results are merged. Scores, softmax and sums are float32 whatever
 * the cache holds.
 *
 * An 8-bit cache is read as it lies, codes and scales, each element
 * dequantized in registers as it is loaded (code · scale, exact in
 * float32: 8 by 8 significant bits), so every path computes what it
 * computes on a float32 cache of the dequantized values — the CPU's rule —
 * from 1.0625 bytes an element. Its rows count bytes (kv_stride) and a kv
 * head's block is hd + 2·⌈hd/32⌉ bytes, so a lane's 4 codes are 4-byte
 * aligned only where blocks and rows are (head_dim 64, 128: yes); where
 * they are 2-byte aligned the tiles take them as two halves of a word
 * (KV_Q8_U16), and the fallback reads bytes, any alignment. */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <type_traits>

#include "kernels/cuda/async_copy.cuh"
#include "kernels/cuda/codes.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace {

enum { WARPS = 4 };

/* The cache's formats as the kernels take them: cuda_kernels.h's three,
 * and Q8 whose lanes' 4 codes are only 2-byte aligned. */
enum { KV_F32 = MOE_CUDA_KV_F32, KV_F16 = MOE_CUDA_KV_F16, KV_Q8 = MOE_CUDA_KV_Q8, KV_Q8_U16 };

__host__ __device__ inline bool is_q8(int kv) { return kv == KV_Q8 || kv == KV_Q8_U16; }

/* bytes of one kv head's block in an 8-bit cache (moe_kv_q8_head_bytes) */
__host__ __device__ inline size_t q8_head_bytes(int hd) { return (size_t)hd + 2 * (size_t)((hd + 31) / 32); }

/* where kv head kvh of row j begins: elements, or bytes for Q8 */
template <int KV>
__device__ inline size_t head_at(size_t j, size_t kv_stride, int kvh, int hd)
{
    return j * kv_stride + (size_t)kvh * (is_q8(KV) ? q8_head_bytes(hd) : (size_t)hd);
}

__device__ inline float bf16_value(unsigned bits) { return __uint_as_float(bits << 16); }

/* element d of the head at p + at (any alignment for Q8: bytes) */
template <int KV>
__device__ inline float kv_at(const void *p, size_t at, int d, int hd)
{
    if (KV == KV_F16) return __half2float(((const __half *)p)[at + d]);
    if (KV == KV_F32) return ((const float *)p)[at + d];
    const unsigned char *h = (const unsigned char *)p + at, *sc = h + hd + 2 * (d >> 5);
    return __int2float_rn((signed char)h[d]) * bf16_value(sc[0] | (unsigned)sc[1] << 8);
}

/* NV = ⌈hd/32⌉ values of the head per lane */
template <int NV, int KV>
__global__ void __launch_bounds__(32 * WARPS)
attention_kernel(int T, int pos, const int32_t *dpos, int heads, int group, int hd, float scale, const float *q,
                 const void *k, const void *v, size_t kv_stride, float *out)
{
    if (dpos) pos = *dpos;
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
        size_t row = head_at<KV>((size_t)j, kv_stride, kvh, hd);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) s = __fmaf_rn(qv[i], kv_at<KV>(k, row, d, hd), s);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        s *= scale;
        float m_new = fmaxf(m, s), corr = expf(m - m_new), p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < NV; i++) {
            int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * corr + p * kv_at<KV>(v, row, d, hd);
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
    const int32_t *dpos;   /* not NULL: pos = *dpos, and seg follows from it (segment_for) */
    float scale;
    const float *q;
    const void *k, *v;
    size_t kv_stride;
    float *out;    /* nsplit == 1: the output */
    float *part;   /* nsplit > 1: [nsplit][T·heads][hd] unnormalised outputs */
    float *ml;     /* nsplit > 1: [nsplit][T·heads][2] maximum, sum */
};

/* A lane's 4 Q8 elements d..d+3 (d a multiple of 4: one group, one
 * scale) as loaded — a word of codes (or two halves of one: U16) and the
 * scale's bits — and widened to floats only where they are used, so that
 * no arithmetic waits on a load before the next key's loads are out. */
template <bool U16>
struct q8_lane {
    unsigned w, s;
    __device__ void load(const void *p, size_t at, int d, int hd)
    {
        const unsigned char *h = (const unsigned char *)p + at;
        if (U16) w = *(const unsigned short *)(h + d) | (unsigned)*(const unsigned short *)(h + d + 2) << 16;
        else w = *(const unsigned *)(h + d);
        s = *(const unsigned short *)(h + hd + 2 * (d >> 5));
    }
    __device__ void zero() { w = s = 0; }
    __device__ void widen(float *f) const
    {
        float scale = bf16_value(s);
#pragma unroll
        for (int c = 0; c < 4; c++) f[c] = signed_byte_of(w, c) * scale;
    }
};

/* elements d..d+3 of the head at p + at, as floats */
template <int KV>
__device__ inline void load4(const void *p, size_t at, int d, int hd, float *f)
{
    if (KV == KV_F16) {
        uint2 u = *(const uint2 *)((const __half *)p + at + d);
        float2 a = __half22float2(*(const __half2 *)&u.x), b = __half22float2(*(const __half2 *)&u.y);
        f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
    } else if (KV == KV_F32) {
        float4 u = *(const float4 *)((const float *)p + at + d);
        f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w;
    } else {
        q8_lane<KV == KV_Q8_U16> l;
        l.load(p, at, d, hd);
        l.widen(f);
    }
}

/* A lane's 4 elements in flight: floats (float32, half: converted as
 * loaded), or Q8's codes and scale bits. */
template <int KV>
struct lane4 {
    float f[4];
    __device__ void load(const void *p, size_t at, int d, int hd) { load4<KV>(p, at, d, hd, f); }
    __device__ void zero()
    {
#pragma unroll
        for (int c = 0; c < 4; c++) f[c] = 0.0f;
    }
    __device__ void widen(float *o) const
    {
#pragma unroll
        for (int c = 0; c < 4; c++) o[c] = f[c];
    }
};
template <> struct lane4<KV_Q8> : q8_lane<false> {};
template <> struct lane4<KV_Q8_U16> : q8_lane<true> {};

enum {
    TILE_ROWS = 8,         /* rows a block holds (NV = 1); 4 when NV = 2 */
    TARGET_BLOCKS = 1056,  /* eight blocks per SM of an H100: a decode step's
                            * cache is read at the rate of the loads in flight */
    KEYS_IN_FLIGHT = 4,    /* keys a warp loads before it uses the first */
    MIN_SEGMENT = 64,      /* keys below which a further split does not pay */
    MAX_SPLIT = 64,
};

/* the keys of a segment when `keys` are split at most `most` ways: every
 * segment but the last full, none empty (a fixed split of `most` blocks
 * leaves the blocks past the keys with nothing to do) */
__host__ __device__ inline int segment_for(int keys, int most)
{
    int seg = (keys + most - 1) / most;
    return seg > MIN_SEGMENT ? seg : MIN_SEGMENT;
}

/* grid (T-tiles · kv_heads · group/gc, nsplit); R = gc·qt rows ≤ RMAX */
template <int NV, int RMAX, int KV>
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
    int pos = a.dpos ? *a.dpos : a.pos, seg = a.dpos ? segment_for(pos + a.T, a.nsplit) : a.seg;
    int s0 = blockIdx.y * seg, s1 = min(s0 + seg, pos + t_last + 1);

    float qv[RMAX][NV][4], acc[RMAX][NV][4], m[RMAX], l[RMAX];
    int last[RMAX];   /* the row's last key; -1: no such row */
#pragma unroll
    for (int r = 0; r < RMAX; r++) {
        int t = t0 + r / a.gc, h = h0 + r % a.gc;
        bool live = r < rows && t < a.T;
        last[r] = live ? pos + t : -1;
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
    /* KEYS_IN_FLIGHT keys a warp a step: their rows are loaded before the
     * first is used (a long cache is read at the rate of the bytes in
     * flight), then taken in order, as one key a step would take them */
    for (int j0 = s0 + warp; j0 < s1; j0 += WARPS * KEYS_IN_FLIGHT) {
        lane4<KV> kl[KEYS_IN_FLIGHT][NV], vl[KEYS_IN_FLIGHT][NV];
#pragma unroll
        for (int u = 0; u < KEYS_IN_FLIGHT; u++) {
            int j = j0 + u * WARPS;
            size_t row = head_at<KV>((size_t)j, a.kv_stride, kvh, a.hd);
#pragma unroll
            for (int i = 0; i < NV; i++) {
                int d = 4 * lane + 128 * i;
                if (j < s1 && d < a.hd) {
                    kl[u][i].load(a.k, row, d, a.hd);
                    vl[u][i].load(a.v, row, d, a.hd);
                } else {
                    kl[u][i].zero(), vl[u][i].zero();
                }
            }
        }
#pragma unroll
        for (int u = 0; u < KEYS_IN_FLIGHT; u++) {
            int j = j0 + u * WARPS;
            if (j >= s1) break;
            float kc[NV][4], vc[NV][4];
#pragma unroll
            for (int i = 0; i < NV; i++) kl[u][i].widen(kc[i]), vl[u][i].widen(vc[i]);
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

/* ---- a prompt's queries on the tensor cores ---- */

enum { MMA_MIN_QUERIES = 64, MMA_Q = 64, MMA_KEYS = 64, MMA_PAD = 8 };

__device__ inline uint32_t pack_half2(float lo, float hi)
{
    __half2 v = __floats2half2_rn(lo, hi);
    return *(uint32_t *)&v;
}

__device__ inline void mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Four 8×8 tiles of halves from shared memory, transposed: lanes 8i..8i+7
 * give the rows of tile i, and each lane gets, of each tile, the two
 * elements of column lane/4 in rows 2·(lane%4) and 2·(lane%4) + 1 — an
 * m16n8k16 B fragment of a row-major k × n tile. */
__device__ inline void ldmatrix_x4_trans(uint32_t r[4], const void *p)
{
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a)
                 : "memory");
}

/* the shared memory of attention_mma_kernel: a stage is 64 keys' rows and
 * 64 values' rows of HD halves, padded by MMA_PAD; two stages when the next
 * keys are copied while the current ones are used (ASYNC) */
template <int HD, bool ASYNC>
constexpr int mma_smem_bytes()
{
    return (ASYNC ? 2 : 1) * 2 * MMA_KEYS * (HD + MMA_PAD) * (int)sizeof(__half);
}

/* grid (⌈T/64⌉, heads), 4 warps; lane (g = lane/4, t4 = lane%4) holds rows
 * g and g + 8 of its warp's 16 queries. ASYNC (a half cache whose rows lie
 * on 16-byte boundaries): the next 64 keys and values are copied into the
 * other stage (cp.async) while the current ones are multiplied; otherwise
 * each stage is loaded through registers, converted to halves. Keys and
 * values stay row by row as the cache holds them; the values' fragments
 * for P·V are read transposed (ldmatrix .trans). */
template <int HD, int KV, bool ASYNC>
__global__ void __launch_bounds__(128)
attention_mma_kernel(int T, int pos, int heads, int group, float scale, const float *q, const void *k, const void *v,
                     size_t kv_stride, float *out)
{
    typedef __half kv_row[HD + MMA_PAD];
    extern __shared__ __align__(16) unsigned char mma_smem[];
    kv_row *stages = (kv_row *)mma_smem;   /* stage s: keys [128s, 128s + 64), values the next 64 rows */
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    int h = blockIdx.y, kvh = h / group, t0 = blockIdx.x * MMA_Q;
    int r0 = t0 + warp * 16 + g, r1 = r0 + 8;   /* this lane's two queries */

    uint32_t qf[HD / 16][4];
#pragma unroll
    for (int kc = 0; kc < HD / 16; kc++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            int t = (i & 1) ? r1 : r0, d = kc * 16 + 2 * t4 + ((i & 2) ? 8 : 0);
            const float *src = q + ((size_t)t * heads + h) * HD + d;
            qf[kc][i] = t < T ? pack_half2(src[0], src[1]) : 0u;
        }
    float o[HD / 8][4] = {}, m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    int keys = pos + min(t0 + MMA_Q, T);   /* the last query's keys, and so the block's */
    int tiles = (keys + MMA_KEYS - 1) / MMA_KEYS;

    /* the keys and values of tile kb into stage s (zeros past the last key) */
    auto stage_async = [&](int s, int kb) {
        kv_row *Ks = stages + 2 * s * MMA_KEYS, *Vs = Ks + MMA_KEYS;
        for (int c = threadIdx.x; c < MMA_KEYS * HD / 8; c += 128) {
            int j = c / (HD / 8), d = (c % (HD / 8)) * 8;
            bool ok = kb + j < keys;
            size_t at = ok ? head_at<KV>((size_t)(kb + j), kv_stride, kvh, HD) : 0;
            cp_async16(&Ks[j][d], (const __half *)k + at + d, ok);
            cp_async16(&Vs[j][d], (const __half *)v + at + d, ok);
        }
    };
    auto stage_loaded = [&](int kb) {
        kv_row *Ks = stages, *Vs = stages + MMA_KEYS;
        for (int c = threadIdx.x; c < MMA_KEYS * HD / 4; c += 128) {
            int j = c / (HD / 4), d = (c % (HD / 4)) * 4;
            float kv[2][4] = {};
            if (kb + j < keys) {
                size_t at = head_at<KV>((size_t)(kb + j), kv_stride, kvh, HD);
                load4<KV>(k, at, d, HD, kv[0]);
                load4<KV>(v, at, d, HD, kv[1]);
            }
            *(uint2 *)&Ks[j][d] = make_uint2(pack_half2(kv[0][0], kv[0][1]), pack_half2(kv[0][2], kv[0][3]));
            *(uint2 *)&Vs[j][d] = make_uint2(pack_half2(kv[1][0], kv[1][1]), pack_half2(kv[1][2], kv[1][3]));
        }
    };

    if (ASYNC) {
        stage_async(0, 0);
        cp_async_commit();
    }
    for (int i = 0; i < tiles; i++) {
        int kb = i * MMA_KEYS, s = ASYNC ? i & 1 : 0;
        if (ASYNC) {
            /* the other stage was last read before the previous barrier */
            if (i + 1 < tiles) stage_async(s ^ 1, kb + MMA_KEYS);
            cp_async_commit();
            cp_async_wait<1>();   /* this tile's copies, not the next's */
        } else {
            stage_loaded(kb);
        }
        __syncthreads();
        const kv_row *Ks = stages + 2 * s * MMA_KEYS, *Vs = Ks + MMA_KEYS;
        /* S = Q·Kᵀ for this warp's 16 queries × 64 keys */
        float sc[MMA_KEYS / 8][4] = {};
#pragma unroll
        for (int kc = 0; kc < HD / 16; kc++)
#pragma unroll
            for (int ni = 0; ni < MMA_KEYS / 8; ni++) {
                const __half *kr = &Ks[ni * 8 + g][kc * 16 + 2 * t4];
                mma_f16(sc[ni], qf[kc], *(const uint32_t *)kr, *(const uint32_t *)(kr + 8));
            }
        /* masked, scaled, and the rows' new maxima */
        float mx0 = m0, mx1 = m1;
#pragma unroll
        for (int ni = 0; ni < MMA_KEYS / 8; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                int key = kb + ni * 8 + 2 * t4 + (c & 1), last = pos + (c < 2 ? r0 : r1);
                float x = key <= last ? sc[ni][c] * scale : -INFINITY;
                sc[ni][c] = x;
                if (c < 2) mx0 = fmaxf(mx0, x);
                else mx1 = fmaxf(mx1, x);
            }
#pragma unroll
        for (int o2 = 1; o2 < 4; o2 <<= 1) {
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, o2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, o2));
        }
        float c0 = mx0 == -INFINITY ? 1.0f : expf(m0 - mx0), c1 = mx1 == -INFINITY ? 1.0f : expf(m1 - mx1);
        m0 = mx0, m1 = mx1;
        l0 *= c0, l1 *= c1;
#pragma unroll
        for (int nj = 0; nj < HD / 8; nj++) o[nj][0] *= c0, o[nj][1] *= c0, o[nj][2] *= c1, o[nj][3] *= c1;
        /* P = e^(S − m) as the next product's operand; O += P·V */
        uint32_t pf[MMA_KEYS / 16][4];
#pragma unroll
        for (int ni = 0; ni < MMA_KEYS / 8; ni++) {
            float p[4];
#pragma unroll
            for (int c = 0; c < 4; c++) {
                float mm = c < 2 ? m0 : m1;
                p[c] = sc[ni][c] == -INFINITY ? 0.0f : expf(sc[ni][c] - mm);
            }
            l0 += p[0] + p[1], l1 += p[2] + p[3];
            pf[ni / 2][(ni & 1) * 2] = pack_half2(p[0], p[1]);
            pf[ni / 2][(ni & 1) * 2 + 1] = pack_half2(p[2], p[3]);
        }
#pragma unroll
        for (int kc = 0; kc < MMA_KEYS / 16; kc++)
#pragma unroll
            for (int nj = 0; nj < HD / 8; nj += 2) {
                /* tiles: keys kc·16 + 0..7 and + 8..15 of values nj·8 + 0..7,
                 * then the same keys of the next 8 values */
                uint32_t b[4];
                ldmatrix_x4_trans(b, &Vs[kc * 16 + (lane & 15)][(nj + (lane >> 4)) * 8]);
                mma_f16(o[nj], pf[kc], b[0], b[1]);
                mma_f16(o[nj + 1], pf[kc], b[2], b[3]);
            }
        __syncthreads();
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
        l0 += __shfl_xor_sync(0xffffffffu, l0, o2);
        l1 += __shfl_xor_sync(0xffffffffu, l1, o2);
    }
#pragma unroll
    for (int nj = 0; nj < HD / 8; nj++) {
        int d = nj * 8 + 2 * t4;
        if (r0 < T) *(float2 *)(out + ((size_t)r0 * heads + h) * HD + d) = make_float2(o[nj][0] / l0, o[nj][1] / l0);
        if (r1 < T) *(float2 *)(out + ((size_t)r1 * heads + h) * HD + d) = make_float2(o[nj][2] / l1, o[nj][3] / l1);
    }
}

/* Calls f with the format kv as a constant (std::integral_constant), so a
 * launcher names each kernel's instance once. */
template <typename F>
cudaError_t with_format(int kv, F f)
{
    switch (kv) {
    case KV_F32: return f(std::integral_constant<int, KV_F32>());
    case KV_F16: return f(std::integral_constant<int, KV_F16>());
    case KV_Q8: return f(std::integral_constant<int, KV_Q8>());
    case KV_Q8_U16: return f(std::integral_constant<int, KV_Q8_U16>());
    }
    return cudaErrorInvalidValue;
}

/* Whether the tiles' and the tensor cores' loads suit a cache of format kv
 * at k, v with rows kv_stride apart: float4 or 4 halves at 16- or 8-byte
 * boundaries, or (Q8, kv_stride in bytes) codes and scales at 2-byte ones. */
bool vector_aligned(int kv, const void *k, const void *v, size_t kv_stride)
{
    size_t align = kv == KV_F32 ? 16 : kv == KV_F16 ? 8 : 2;
    return kv_stride % (is_q8(kv) ? 2 : 4) == 0 && (uintptr_t)k % align == 0 && (uintptr_t)v % align == 0;
}

/* The format the vector loads take: Q8's codes a word a lane where every
 * head block and row lies on a 4-byte boundary (hd a multiple of 4), else
 * two halves of one. */
int vector_format(int kv, int hd, const void *k, const void *v, size_t kv_stride)
{
    if (kv != KV_Q8) return kv;
    return ((uintptr_t)k | (uintptr_t)v | kv_stride | q8_head_bytes(hd)) % 4 == 0 ? KV_Q8 : KV_Q8_U16;
}

/* whether a call takes the tensor cores */
bool takes_mma(int T, int fixed_split, int hd, int kv, const void *k, const void *v, size_t kv_stride)
{
    return !fixed_split && T >= MMA_MIN_QUERIES && (hd == 64 || hd == 128) && vector_aligned(kv, k, v, kv_stride) &&
           moe_cuda_tensor_cores();
}

template <int HD, int KV, bool ASYNC>
cudaError_t launch_mma_kv(dim3 grid, int T, int pos, int heads, int kv_heads, float scale, const float *q,
                          const void *k, const void *v, size_t kv_stride, float *out, cudaStream_t stream)
{
    constexpr int smem = mma_smem_bytes<HD, ASYNC>();
    static bool raised = false;   /* the dynamic shared-memory limit, raised once */
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(attention_mma_kernel<HD, KV, ASYNC>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess) return e;
        raised = true;
    }
    attention_mma_kernel<HD, KV, ASYNC><<<grid, 128, smem, stream>>>(T, pos, heads, heads / kv_heads, scale, q, k, v,
                                                                     kv_stride, out);
    return cudaGetLastError();
}

template <int HD>
cudaError_t launch_mma(int T, int pos, int heads, int kv_heads, float scale, const float *q, int kv, const void *k,
                       const void *v, size_t kv_stride, float *out, cudaStream_t stream)
{
    dim3 grid((unsigned)((T + MMA_Q - 1) / MMA_Q), (unsigned)heads);
    /* a half cache copied 16 bytes at a time: every row at a 16-byte boundary */
    if (kv == KV_F16 && ((uintptr_t)k | (uintptr_t)v | kv_stride * sizeof(__half)) % 16 == 0)
        return launch_mma_kv<HD, KV_F16, true>(grid, T, pos, heads, kv_heads, scale, q, k, v, kv_stride, out, stream);
    return with_format(vector_format(kv, HD, k, v, kv_stride), [&](auto f) {
        return launch_mma_kv<HD, decltype(f)::value, false>(grid, T, pos, heads, kv_heads, scale, q, k, v, kv_stride,
                                                            out, stream);
    });
}

struct plan {
    int ok, nv, gc, qt, tiles, nsplit, seg;
};

/* How the tiled path lays out a call (ok = 0: the fallback takes it). */
plan make_plan(int T, int pos, int fixed_split, int heads, int kv_heads, int hd, int kv, const void *k, const void *v,
               size_t kv_stride)
{
    plan p = {};
    if (hd % 4 || hd > 256 || !vector_aligned(kv, k, v, kv_stride)) return p;
    p.ok = 1;
    p.nv = hd <= 128 ? 1 : 2;
    int rmax = p.nv == 1 ? TILE_ROWS : TILE_ROWS / 2, group = heads / kv_heads;
    p.gc = 1;
    while (p.gc * 2 <= rmax && group % (p.gc * 2) == 0) p.gc *= 2;
    p.qt = rmax / p.gc;
    if (p.qt > T) p.qt = T;
    p.tiles = (T + p.qt - 1) / p.qt * kv_heads * (group / p.gc);
    int keys = pos + T, most = (TARGET_BLOCKS + p.tiles - 1) / p.tiles;
    if (most > MAX_SPLIT) most = MAX_SPLIT;
    if (most < 1) most = 1;
    p.seg = segment_for(keys, most);
    /* a fixed split launches `most` blocks whatever the keys (a position
     * read on the device); otherwise only those with keys */
    p.nsplit = fixed_split ? most : (keys + p.seg - 1) / p.seg;
    return p;
}

template <int NV, int RMAX>
cudaError_t launch_tile(const plan &p, const tile_args &a, int kv, cudaStream_t stream)
{
    size_t smem = sizeof(float) * WARPS * RMAX * ((size_t)a.hd + 2);
    dim3 grid((unsigned)p.tiles, (unsigned)p.nsplit);
    return with_format(vector_format(kv, a.hd, a.k, a.v, a.kv_stride), [&](auto f) {
        attention_tile_kernel<NV, RMAX, decltype(f)::value><<<grid, 32 * WARPS, smem, stream>>>(a);
        return cudaGetLastError();
    });
}

/* the fallback: Q8 read a byte at a time, so any alignment */
template <int NV>
cudaError_t launch(int T, int pos, const int32_t *dpos, int heads, int kv_heads, int hd, float scale, const float *q,
                   int kv, const void *k, const void *v, size_t kv_stride, float *out, cudaStream_t stream)
{
    size_t smem = sizeof(float) * WARPS * (size_t)hd;
    unsigned blocks = (unsigned)((size_t)T * heads);
    return with_format(kv, [&](auto f) {
        constexpr int KV = decltype(f)::value == KV_Q8_U16 ? KV_Q8 : decltype(f)::value;
        attention_kernel<NV, KV><<<blocks, 32 * WARPS, smem, stream>>>(T, pos, dpos, heads, heads / kv_heads, hd,
                                                                        scale, q, k, v, kv_stride, out);
        return cudaGetLastError();
    });
}

}  // namespace

extern "C" size_t moe_cuda_attention_workspace(int T, int pos, int fixed_split, int heads, int kv_heads, int hd,
                                               int kv, const void *k, const void *v, size_t kv_stride)
{
    if (T <= 0 || hd < 1 || kv_heads < 1 || heads % kv_heads) return 0;
    if (takes_mma(T, fixed_split, hd, kv, k, v, kv_stride)) return 0;   /* the tensor cores need none */
    plan p = make_plan(T, pos, fixed_split, heads, kv_heads, hd, kv, k, v, kv_stride);
    if (!p.ok || p.nsplit == 1) return 0;
    return sizeof(float) * (size_t)p.nsplit * T * heads * ((size_t)hd + 2);
}

extern "C" cudaError_t moe_cuda_attention(int T, int pos, const int32_t *dpos, int heads, int kv_heads, int hd,
                                          float scale, const float *q, int kv, const void *k, const void *v,
                                          size_t kv_stride, float *out, void *work, cudaStream_t stream)
{
    if (T <= 0) return cudaSuccess;
    if (hd < 1 || hd > 1024 || kv_heads < 1 || heads % kv_heads) return cudaErrorInvalidValue;
    if (kv != KV_F32 && kv != KV_F16 && kv != KV_Q8) return cudaErrorInvalidValue;
    if (takes_mma(T, dpos != NULL, hd, kv, k, v, kv_stride)) {
        if (hd == 64) return launch_mma<64>(T, pos, heads, kv_heads, scale, q, kv, k, v, kv_stride, out, stream);
        return launch_mma<128>(T, pos, heads, kv_heads, scale, q, kv, k, v, kv_stride, out, stream);
    }
    plan p = make_plan(T, pos, dpos != NULL, heads, kv_heads, hd, kv, k, v, kv_stride);
    if (p.ok && (p.nsplit == 1 || work)) {
        size_t n = (size_t)T * heads;
        tile_args a = {T, pos, heads, heads / kv_heads, hd, p.gc, p.qt, p.nsplit, p.seg, dpos, scale, q, k, v,
                       kv_stride, out, (float *)work, work ? (float *)work + (size_t)p.nsplit * n * hd : NULL};
        cudaError_t e;
        if (p.nv == 1 && p.gc * p.qt == 1)   /* one row a block (decode without GQA): registers for one */
            e = launch_tile<1, 1>(p, a, kv, stream);
        else if (p.nv == 1)
            e = launch_tile<1, TILE_ROWS>(p, a, kv, stream);
        else
            e = launch_tile<2, TILE_ROWS / 2>(p, a, kv, stream);
        if (e != cudaSuccess || p.nsplit == 1) return e;
        attention_combine_kernel<<<(unsigned)n, hd < 128 ? hd : 128, 0, stream>>>((int)n, p.nsplit, hd, a.part, a.ml,
                                                                                   out);
        return cudaGetLastError();
    }
    if (hd <= 32) return launch<1>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
    if (hd <= 64) return launch<2>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
    if (hd <= 128) return launch<4>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
    if (hd <= 256) return launch<8>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
    if (hd <= 512) return launch<16>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
    return launch<32>(T, pos, dpos, heads, kv_heads, hd, scale, q, kv, k, v, kv_stride, out, stream);
}
