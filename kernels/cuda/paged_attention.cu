// kernels/cuda/paged_attention.cu — inference attention of new queries against a paged bf16
// K/V cache (decode: one query per sequence; chunked prefill: many queries continuing a cached
// prefix), GQA, f32 accumulation with an online softmax, and split-KV over long contexts
// (contract in kernels/attention.h; CPU twin attn_paged_fwd in kernels/cpu/attention.c).
//
// k_attn_paged: one block of 128 threads per (query, kv head, group of up to 8 query heads of
// that kv head, KV split). Its query heads' vectors wait in shared memory as f32, pre-scaled by
// scale·log2 e (scores live in the log2 domain: exp2f). The split's keys stream through in
// tiles of KT = 64 positions: each position's K and V rows (hd bf16 each, contiguous in the
// block table's block) are loaded with 16-byte vectors; K rows are kept with a row stride of
// hd + 2 elements, so the 32 threads forming 32 scores (consecutive keys, same head) read 32
// different banks. Then, per tile: scores (one thread per (head, key)), the online softmax
// (one warp per head: tile maximum, rescale factor, probabilities, their sum), and P·V into
// f32 accumulators in shared memory (one thread per (head, dimension), keys in order). Every
// sum is formed in a fixed order by one thread or one warp: results are deterministic.
//
// Split-KV: with few blocks (decode of a small batch) and long contexts the keys of a query
// are cut into splits of `span` positions (a multiple of KT) run by separate blocks; each
// writes its unnormalized accumulator, running maximum and sum to the workspace, and
// k_attn_paged_combine merges a query's splits in order. A query whose context fits one split
// is finished by its block directly, exactly as in a launch without splits.
//
// k_kv_store writes new tokens' K and V rows into their cache positions (16-byte vectors).
//
// k_attn_paged_prefill (chunked prefill: many new queries of a sequence continuing its cached
// prefix) is the flash attention of kernels/cuda/attention.cu on the paged cache, on tensor
// cores: one block per (tile of up to BT consecutive queries of ONE sequence, kv head, group of
// G query heads of that kv head), G·WT warps, each warp 16 query rows of one head (BT = 16·WT
// queries; G the largest divisor of Hq/Hkv ≤ 8, WT = max(1, 4/G)). The block's G heads share
// every K/V tile: 64 positions gathered through the block table (cp.async, 16-byte vectors, any
// block size: each row finds its own block; positions past the tile's longest context are
// zero-filled), double-buffered. S = Q·Kᵀ and O += P·V are the m16n8k16 tile steps of
// kernels/cuda/mma_tile.cuh; the mask is per query row (key s is seen iff s < ctx[row]), so a
// chunk continuing a prefix of any length is causal with the prefix's offset, and a tile whose
// keys all lie below its shortest context needs no mask. The tile list (first query of each
// tile) comes from attn_paged_prefill_tiles on the host. No split-KV: a prefill has queries
// enough to fill the device.
#include <limits.h>

#include "kernels/attention.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/mma_tile.cuh"

using namespace rtk;

#define PA_KT 64        // keys per tile
#define PA_NT 128       // threads per block
#define PA_GMAX 8       // query heads per block at most
#define PA_LOG2E 1.4426950408889634f

#ifdef RT_EMU
#define PA_DYN_SMEM(name) char *name = (char *)emu::dyn_smem()
#else
#define PA_DYN_SMEM(name) extern __shared__ __align__(16) char name[]
#endif

// Shared memory of one block: q [G][HD] f32, K [KT][HD + 2] bf16, V [KT][HD] bf16, scores
// [G][KT] f32, accumulators [G][HD] f32, running max, sum and rescale factor [G] f32 each.
static inline size_t pa_smem_bytes(int G, int HD) {
    return (size_t)G * HD * 4 + (size_t)PA_KT * (HD + 2) * 2 + (size_t)PA_KT * HD * 2 + (size_t)G * PA_KT * 4 +
           (size_t)G * HD * 4 + (size_t)3 * G * 4;
}

template <int HD>
__global__ void __launch_bounds__(PA_NT)
    k_attn_paged(uint16_t *o, float *ws, const uint16_t *q, int64_t ld_q, int Hq, int Hkv, int G, float scale_log2,
                 const uint16_t *k, const uint16_t *v, int bs, int64_t bstride, const int32_t *tables,
                 int64_t table_ld, const int32_t *seq, const int32_t *ctx, int span, int n_splits) {
    constexpr int KLD = HD + 2, V8 = HD / 8;
    PA_DYN_SMEM(smem);
    float *sq = (float *)smem;
    uint16_t *sk = (uint16_t *)(sq + G * HD);
    uint16_t *sv = sk + PA_KT * KLD;
    float *ss = (float *)(sv + PA_KT * HD);
    float *so = ss + G * PA_KT;
    float *sm = so + G * HD, *sl = sm + G, *sa = sl + G;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int i = blockIdx.x, rep = Hq / Hkv, groups = rep / G;
    const int hk = blockIdx.y / groups, h0 = hk * rep + (blockIdx.y % groups) * G;
    const int C = ctx[i], split = blockIdx.z;
    const int s_begin = split * span, s_end = min(C, s_begin + span);
    const bool one = C <= span;   // the whole context in this block: finish here
    if (one && split > 0) return;
    const int64_t kd = (int64_t)Hkv * HD;
    const int32_t *tab = tables + (int64_t)seq[i] * table_ld;

    for (int e = tid; e < G * HD; e += PA_NT) {
        sq[e] = bf2f(q[(int64_t)i * ld_q + (int64_t)h0 * HD + e]) * scale_log2;
        so[e] = 0.f;
    }
    if (tid < G) sm[tid] = -INFINITY, sl[tid] = 0.f;
    __syncthreads();

    for (int t0 = s_begin; t0 < s_end; t0 += PA_KT) {
        const int nk = min(PA_KT, s_end - t0);
        for (int idx = tid; idx < nk * V8; idx += PA_NT) {
            int r = idx / V8, c = (idx % V8) * 8, s = t0 + r;
            int64_t off = (int64_t)tab[s / bs] * bstride + (int64_t)(s % bs) * kd + (int64_t)hk * HD + c;
            uint4 kv = *(const uint4 *)(k + off), vv = *(const uint4 *)(v + off);
            uint32_t *kr = (uint32_t *)(sk + r * KLD + c);   // 4-byte aligned (KLD even)
            kr[0] = kv.x, kr[1] = kv.y, kr[2] = kv.z, kr[3] = kv.w;
            *(uint4 *)(sv + r * HD + c) = vv;
        }
        __syncthreads();
        for (int p = tid; p < G * PA_KT; p += PA_NT) {
            int g = p / PA_KT, j = p % PA_KT;
            float d = -INFINITY;
            if (j < nk) {
                const float *qg = sq + g * HD;
                const uint32_t *kr = (const uint32_t *)(sk + j * KLD);
                d = 0.f;
#pragma unroll 8
                for (int w = 0; w < HD / 2; w++) {
                    uint32_t u = kr[w];
                    d += qg[2 * w] * __uint_as_float(u << 16);
                    d += qg[2 * w + 1] * __uint_as_float(u & 0xffff0000u);
                }
            }
            ss[p] = d;
        }
        __syncthreads();
        for (int g = warp; g < G; g += PA_NT / 32) {
            float a = ss[g * PA_KT + lane], b = ss[g * PA_KT + lane + 32];
            float mx = warp_max(fmaxf(a, b));
            float m_old = sm[g], m_new = fmaxf(m_old, mx);   // mx is finite: nk ≥ 1
            float pa = exp2f(a - m_new), pb = exp2f(b - m_new);   // −inf → 0
            ss[g * PA_KT + lane] = pa;
            ss[g * PA_KT + lane + 32] = pb;
            float sum = warp_sum(pa + pb);
            if (lane == 0) {
                float alpha = exp2f(m_old - m_new);   // m_old = −inf → 0
                sl[g] = sl[g] * alpha + sum;
                sm[g] = m_new;
                sa[g] = alpha;
            }
        }
        __syncthreads();
        for (int e = tid; e < G * HD; e += PA_NT) {
            int g = e / HD, d = e % HD;
            const float *pg = ss + g * PA_KT;
            float acc = so[e] * sa[g];
            for (int j = 0; j < nk; j++) acc += pg[j] * bf2f(sv[j * HD + d]);
            so[e] = acc;
        }
        __syncthreads();
    }

    if (one) {
        for (int e = tid; e < G * HD; e += PA_NT) {
            int g = e / HD;
            o[((int64_t)i * Hq + h0) * HD + e] = f2bf(so[e] / sl[g]);
        }
        return;
    }
    // partial of split `split` (empty splits, beyond the context, leave max −inf and sum 0)
    for (int e = tid; e < G * HD; e += PA_NT) {
        int g = e / HD, d = e % HD;
        float *w = ws + (((int64_t)i * Hq + h0 + g) * n_splits + split) * (HD + 2);
        w[d] = so[e];
        if (d == 0) w[HD] = sm[g], w[HD + 1] = sl[g];
    }
}

// One block of HD threads per (query, head) whose context took more than one split.
template <int HD>
__global__ void __launch_bounds__(HD) k_attn_paged_combine(uint16_t *o, const float *ws, const int32_t *ctx, int Hq,
                                                           int span, int n_splits) {
    const int i = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    const int C = ctx[i];
    if (C <= span) return;
    const int ns = (C + span - 1) / span;
    const float *w = ws + ((int64_t)i * Hq + h) * n_splits * (HD + 2);
    float m = -INFINITY;
    for (int s = 0; s < ns; s++) m = fmaxf(m, w[s * (HD + 2) + HD]);
    float l = 0.f, acc = 0.f;
    for (int s = 0; s < ns; s++) {
        const float *ps = w + s * (HD + 2);
        float f = exp2f(ps[HD] - m);
        l += ps[HD + 1] * f;
        acc += ps[d] * f;
    }
    o[((int64_t)i * Hq + h) * HD + d] = f2bf(acc / l);
}

// K and V rows of n new tokens into the cache: one thread per 16-byte vector.
__global__ static void k_kv_store(uint16_t *kc, uint16_t *vc, const uint16_t *k, const uint16_t *v, int64_t ld,
                                  int64_t n, int64_t kd, int bs, int64_t bstride, const int32_t *tables,
                                  int64_t table_ld, const int32_t *seq, const int32_t *pos) {
    const int64_t per = kd / 8, total = n * per;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = idx / per, c = (idx % per) * 8;
        int p = pos[t];
        int64_t dst = (int64_t)tables[(int64_t)seq[t] * table_ld + p / bs] * bstride + (int64_t)(p % bs) * kd + c;
        *(uint4 *)(kc + dst) = *(const uint4 *)(k + t * ld + c);
        *(uint4 *)(vc + dst) = *(const uint4 *)(v + t * ld + c);
    }
}

// ---- prefill on tensor cores -------------------------------------------------------------
// The launch shape: G query heads per block, WT warps (16 queries each) per head.
struct pp_plan {
    int G, groups, WT;
};
static inline pp_plan pp_make_plan(int64_t Hq, int64_t Hkv) {
    pp_plan p;
    int rep = (int)(Hq / Hkv);
    p.G = 1;
    for (int g = 8; g >= 1; g--)
        if (rep % g == 0) {
            p.G = g;
            break;
        }
    p.groups = rep / p.G;
    p.WT = p.G >= 4 ? 1 : 4 / p.G;
    return p;
}
static inline size_t pp_smem_bytes(const pp_plan &p, int HD) {
    return (size_t)(16 * p.WT * p.G + 4 * 64) * (HD + 8) * 2;   // Q tile, K and V double-buffered
}

// Positions [kb, kb + 64) of kv head hk through the block table into sk, sv [64][HD + 8];
// positions ≥ kend are zero-filled (their probabilities are 0, and 0·V must not meet NaN).
template <int HD>
__device__ __forceinline__ void pp_load_kv(uint16_t *sk, uint16_t *sv, const uint16_t *k, const uint16_t *v,
                                           const int32_t *tab, int bs, int64_t bstride, int64_t kd, int hk, int kb,
                                           int kend, int nt) {
    constexpr int LD = HD + 8, V8 = HD / 8;
    for (int e = threadIdx.x; e < 64 * V8; e += nt) {
        int r = e / V8, c = (e % V8) * 8, s = kb + r;
        bool ok = s < kend;
        int64_t off = ok ? (int64_t)tab[s / bs] * bstride + (int64_t)(s % bs) * kd + (int64_t)hk * HD + c : 0;
        cp_async16(sk + r * LD + c, k + off, ok);
        cp_async16(sv + r * LD + c, v + off, ok);
    }
}

template <int HD>
__global__ void __launch_bounds__(256)
    k_attn_paged_prefill(uint16_t *o, const uint16_t *q, int64_t ld_q, int n, int Hq, int Hkv, int G, int WT, float c2,
                         const uint16_t *k, const uint16_t *v, int bs, int64_t bstride, const int32_t *tables,
                         int64_t table_ld, const int32_t *seq, const int32_t *ctx, const int32_t *tiles) {
    constexpr int BN = 64, LD = HD + 8, KC = HD / 16, DT = HD / 8, V8 = HD / 8;
    PA_DYN_SMEM(smem_raw);
    uint16_t *smem = (uint16_t *)smem_raw;
    const int BT = 16 * WT, NT = 32 * G * WT, R = G * BT;
    uint16_t *sQ = smem, *sK = sQ + R * LD, *sV = sK + 2 * BN * LD;
    const int i0 = tiles[gridDim.x - 1 - blockIdx.x], rep = Hq / Hkv, groups = rep / G;   // longest contexts first
    const int hk = blockIdx.y / groups, h0 = hk * rep + (blockIdx.y % groups) * G;
    const int sq0 = seq[i0];
    // the tile: up to BT queries from i0 while they belong to i0's sequence
    int nr = 0, cmin = INT_MAX, cmax = 0;
    for (; nr < BT && i0 + nr < n && seq[i0 + nr] == sq0; nr++) {
        int c = ctx[i0 + nr];
        cmin = min(cmin, c), cmax = max(cmax, c);
    }
    const int32_t *tab = tables + (int64_t)sq0 * table_ld;
    const int64_t kd = (int64_t)Hkv * HD;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = warp / WT, tw = warp % WT;
    const int t4 = lane & 3, rA = tw * 16 + (lane >> 2), rB = rA + 8;
    const int cA = rA < nr ? ctx[i0 + rA] : 0, cB = rB < nr ? ctx[i0 + rB] : 0;   // 0: a row past the tile

    // Q rows: row hg·BT + t = query i0 + t, head h0 + hg (rows past the tile zero-filled)
    for (int e = threadIdx.x; e < R * V8; e += NT) {
        int r = e / V8, c = (e % V8) * 8, hg = r / BT, t = r % BT;
        bool ok = t < nr;
        cp_async16(sQ + r * LD + c, ok ? q + (int64_t)(i0 + t) * ld_q + (int64_t)(h0 + hg) * HD + c : q, ok);
    }
    pp_load_kv<HD>(sK, sV, k, v, tab, bs, bstride, kd, hk, 0, cmax, NT);
    cp_async_commit();

    uint32_t qf[KC][4];
    float oacc[DT][4];
#pragma unroll
    for (int i = 0; i < DT; i++) oacc[i][0] = oacc[i][1] = oacc[i][2] = oacc[i][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const int nkb = (cmax + BN - 1) / BN;
    for (int j = 0; j < nkb; j++) {
        const int kb = j * BN, buf = j & 1;
        if (j + 1 < nkb)
            pp_load_kv<HD>(sK + (buf ^ 1) * BN * LD, sV + (buf ^ 1) * BN * LD, k, v, tab, bs, bstride, kd, hk, kb + BN,
                           cmax, NT);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        if (j == 0) {
#pragma unroll
            for (int kc = 0; kc < KC; kc++) ldsm_x4(qf[kc], a_addr(sQ, LD, warp * 16, kc * 16, lane));
        }
        const uint16_t *cK = sK + buf * BN * LD, *cV = sV + buf * BN * LD;
        float s[8][4];
        tile_scores<KC>(s, qf, cK, LD, lane);
        const bool full = kb + BN <= cmin;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float x = s[nt][e] * c2;
                if (!full && kb + nt * 8 + t4 * 2 + (e & 1) >= (e < 2 ? cA : cB)) x = -INFINITY;
                s[nt][e] = x;
            }
        tile_softmax_pv<DT>(s, m, l, oacc, cV, LD, lane);
        __syncthreads();   // the buffer just read is the next prefetch's target
    }
    cp_async_wait<0>();
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        int row = r ? rB : rA;
        if (row >= nr) continue;
        float inv = 1.f / l[r];
        uint16_t *og = o + ((int64_t)(i0 + row) * Hq + h0 + g) * HD + t4 * 2;
#pragma unroll
        for (int dt = 0; dt < DT; dt++)
            *(uint32_t *)(og + dt * 8) = pack_bf2(oacc[dt][2 * r] * inv, oacc[dt][2 * r + 1] * inv);
    }
}

// First query of each prefill tile (host): tiles of up to 16·WT queries that never cross from
// one table row to the next. Returns the count (≤ n).
static int64_t pp_tiles(int32_t *tiles, const int32_t *seq, int64_t n, int BT) {
    int64_t nt = 0;
    for (int64_t i = 0; i < n;) {
        tiles[nt++] = (int32_t)i;
        int64_t j = i + 1;
        while (j < n && j - i < BT && seq[j] == seq[i]) j++;
        i = j;
    }
    return nt;
}

// ---- the launch plan (host; shared by the workspace query and the launch) -----------------
struct pa_plan {
    int G, groups, n_splits, span;
};

static inline pa_plan pa_make_plan(int64_t n, int64_t Hq, int64_t Hkv, int64_t max_ctx) {
    pa_plan p;
    int rep = (int)(Hq / Hkv);
    p.G = 1;
    for (int g = PA_GMAX; g >= 1; g--)
        if (rep % g == 0) {
            p.G = g;
            break;
        }
    p.groups = rep / p.G;
    if (max_ctx < 1) max_ctx = 1;
    // split when the blocks would not fill the device twice over (a fixed count, not the
    // device's, so a launch does the same arithmetic on every GPU) and the context is long
    int64_t blocks = n * Hkv * p.groups, splits = 1;
    if (blocks < 256 && max_ctx > 4 * PA_KT) {
        splits = (256 + blocks - 1) / blocks;
        int64_t by_len = (max_ctx + 4 * PA_KT - 1) / (4 * PA_KT);   // at least 4 tiles a split
        if (splits > by_len) splits = by_len;
        if (splits > 64) splits = 64;
    }
    int64_t span = (max_ctx + splits - 1) / splits;
    span = (span + PA_KT - 1) / PA_KT * PA_KT;
    p.span = (int)span;
    p.n_splits = (int)((max_ctx + span - 1) / span);
    return p;
}

#ifndef RT_EMU
extern "C" size_t attn_paged_cuda_ws_bytes(int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, int64_t max_ctx) {
    if (n <= 0 || Hkv <= 0 || Hq % Hkv) return 0;
    pa_plan p = pa_make_plan(n, Hq, Hkv, max_ctx);
    return p.n_splits > 1 ? (size_t)(n * Hq) * (size_t)p.n_splits * (size_t)(hd + 2) * sizeof(float) : 0;
}

extern "C" int attn_paged_fwd_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv,
                                   int64_t hd, float scale, const uint16_t *k, const uint16_t *v, int64_t block_size,
                                   int64_t block_stride, const int32_t *tables, int64_t table_ld, const int32_t *seq,
                                   const int32_t *ctx, int64_t max_ctx, void *ws, void *stream) {
    if ((hd != 64 && hd != 128) || Hkv <= 0 || Hq % Hkv || ld_q < Hq * hd || block_size <= 0 ||
        block_size > INT_MAX || block_stride % 8 || ((uintptr_t)k | (uintptr_t)v) % 16 || n > INT_MAX ||
        max_ctx > INT_MAX)
        return rt_fail(RT_EINVAL,
                       "attn_paged_fwd_cuda: head_dim %lld, Hq %lld, Hkv %lld, ld_q %lld, block size %lld, block "
                       "stride %lld (head_dim 64 or 128, Hq %% Hkv == 0, 16-byte aligned cache rows)",
                       (long long)hd, (long long)Hq, (long long)Hkv, (long long)ld_q, (long long)block_size,
                       (long long)block_stride);
    if (n <= 0) return 0;
    pa_plan p = pa_make_plan(n, Hq, Hkv, max_ctx);
    if (p.n_splits > 1 && !ws) return rt_fail(RT_EINVAL, "attn_paged_fwd_cuda: split-KV needs the workspace");
    cudaStream_t st = (cudaStream_t)stream;
    dim3 grid((unsigned)n, (unsigned)(Hkv * p.groups), (unsigned)p.n_splits);
    size_t sm = pa_smem_bytes(p.G, (int)hd);
    float sl2 = scale * PA_LOG2E;
    if (hd == 64)
        k_attn_paged<64><<<grid, PA_NT, sm, st>>>(o, (float *)ws, q, ld_q, (int)Hq, (int)Hkv, p.G, sl2, k, v,
                                                  (int)block_size, block_stride, tables, table_ld, seq, ctx, p.span,
                                                  p.n_splits);
    else
        k_attn_paged<128><<<grid, PA_NT, sm, st>>>(o, (float *)ws, q, ld_q, (int)Hq, (int)Hkv, p.G, sl2, k, v,
                                                   (int)block_size, block_stride, tables, table_ld, seq, ctx, p.span,
                                                   p.n_splits);
    RT_CUDA_LAUNCHED();
    if (p.n_splits > 1) {
        dim3 gc((unsigned)n, (unsigned)Hq);
        if (hd == 64) k_attn_paged_combine<64><<<gc, 64, 0, st>>>(o, (const float *)ws, ctx, (int)Hq, p.span, p.n_splits);
        else k_attn_paged_combine<128><<<gc, 128, 0, st>>>(o, (const float *)ws, ctx, (int)Hq, p.span, p.n_splits);
        RT_CUDA_LAUNCHED();
    }
    return 0;
}

extern "C" int attn_paged_store_cuda(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *k, const uint16_t *v,
                                     int64_t ld, int64_t n, int64_t kd, int64_t block_size, int64_t block_stride,
                                     const int32_t *tables, int64_t table_ld, const int32_t *seq, const int32_t *pos,
                                     void *stream) {
    if (kd % 8 || ld % 8 || ld < kd || block_stride % 8 || block_size <= 0 || block_size > INT_MAX ||
        ((uintptr_t)k | (uintptr_t)v | (uintptr_t)k_cache | (uintptr_t)v_cache) % 16)
        return rt_fail(RT_EINVAL, "attn_paged_store_cuda: row %lld, stride %lld, block stride %lld (multiples of 8, "
                       "16-byte aligned)", (long long)kd, (long long)ld, (long long)block_stride);
    if (n <= 0) return 0;
    k_kv_store<<<grid_1d((size_t)(n * kd / 8), 256), 256, 0, (cudaStream_t)stream>>>(
        k_cache, v_cache, k, v, ld, n, kd, (int)block_size, block_stride, tables, table_ld, seq, pos);
    RT_CUDA_LAUNCHED();
    return 0;
}
extern "C" int64_t attn_paged_prefill_tiles(int32_t *tiles, const int32_t *seq, int64_t n, int64_t Hq, int64_t Hkv) {
    if (n <= 0 || Hkv <= 0 || Hq % Hkv) return 0;
    return pp_tiles(tiles, seq, n, 16 * pp_make_plan(Hq, Hkv).WT);
}

extern "C" int attn_paged_prefill_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq,
                                       int64_t Hkv, int64_t hd, float scale, const uint16_t *k, const uint16_t *v,
                                       int64_t block_size, int64_t block_stride, const int32_t *tables,
                                       int64_t table_ld, const int32_t *seq, const int32_t *ctx,
                                       const int32_t *tiles, int64_t n_tiles, void *stream) {
    if ((hd != 64 && hd != 128) || Hkv <= 0 || Hq % Hkv || ld_q < Hq * hd || ld_q % 8 || block_size <= 0 ||
        block_size > INT_MAX || block_stride % 8 || ((uintptr_t)k | (uintptr_t)v | (uintptr_t)q) % 16 ||
        (uintptr_t)o % 4 || n > INT_MAX || n_tiles > n || Hkv * (Hq / Hkv) > 65535)
        return rt_fail(RT_EINVAL,
                       "attn_paged_prefill_cuda: head_dim %lld, Hq %lld, Hkv %lld, ld_q %lld, block size %lld, "
                       "block stride %lld, %lld tiles of %lld queries (head_dim 64 or 128, Hq %% Hkv == 0, ld_q and "
                       "block stride multiples of 8, 16-byte aligned q and cache)",
                       (long long)hd, (long long)Hq, (long long)Hkv, (long long)ld_q, (long long)block_size,
                       (long long)block_stride, (long long)n_tiles, (long long)n);
    if (n <= 0 || n_tiles <= 0) return 0;
    pp_plan p = pp_make_plan(Hq, Hkv);
    cudaStream_t st = (cudaStream_t)stream;
    dim3 grid((unsigned)n_tiles, (unsigned)(Hkv * p.groups));
    unsigned nt = 32u * (unsigned)(p.G * p.WT);
    size_t sm = pp_smem_bytes(p, (int)hd);
    float c2 = scale * PA_LOG2E;
    if (hd == 64) {
        if (set_smem(k_attn_paged_prefill<64>, sm, st)) return RT_EINTERNAL;
        k_attn_paged_prefill<64><<<grid, nt, sm, st>>>(o, q, ld_q, (int)n, (int)Hq, (int)Hkv, p.G, p.WT, c2, k, v,
                                                       (int)block_size, block_stride, tables, table_ld, seq, ctx,
                                                       tiles);
    } else {
        if (set_smem(k_attn_paged_prefill<128>, sm, st)) return RT_EINTERNAL;
        k_attn_paged_prefill<128><<<grid, nt, sm, st>>>(o, q, ld_q, (int)n, (int)Hq, (int)Hkv, p.G, p.WT, c2, k, v,
                                                        (int)block_size, block_stride, tables, table_ld, seq, ctx,
                                                        tiles);
    }
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
