// kernels/cuda/ds_moe.cu — DeepSeek-V3 MoE plumbing on the GPU: the sigmoid group-limited
// router, the stable permutation of (token, slot) pairs to experts, row gathers and the
// weighted combine. Contract in kernels/moe.h (CUDA section); the router's CPU twin is
// moe_route (kernels/cpu/moe.c).
#include "kernels/cuda/ds_common.cuh"
extern "C" {
#include "kernels/moe.h"   /* a C header without C++ guards around moe_router_check */
}

using namespace ds;

#define RT_THREADS 256
#define RT_MAX_E 1024
#define RT_MAX_G 64

// One block per token. Same f32 operations as moe_route: s = 1/(1+e^−l), choice = s + bias,
// group score = sum of the group's two best (the CPU's scan order), topk_group groups by
// argmax (lower index on ties), then top_k experts by argmax over the kept groups.
__global__ static void k_route(moe_router_cfg c, const float *__restrict__ logits, const float *__restrict__ bias,
                               int64_t stride, int32_t *__restrict__ idx, float *__restrict__ w) {
    __shared__ float s[RT_MAX_E], choice[RT_MAX_E], gscore[RT_MAX_G];
    __shared__ unsigned char gkeep[RT_MAX_G];
    __shared__ int picked[32];
    const int E = (int)c.n_experts, G = (int)c.n_group, per = E / G, K = (int)c.top_k, tid = threadIdx.x;
    const int64_t t = blockIdx.x;
    const float *l = logits + t * E;
    for (int e = tid; e < E; e += blockDim.x) {
        float v = 1.0f / (1.0f + expf(-l[e]));
        s[e] = v;
        choice[e] = v + (bias ? bias[e] : 0.0f);
    }
    __syncthreads();
    for (int g = tid; g < G; g += blockDim.x) {
        const float *v = choice + g * per;
        int a = v[0] >= v[1] ? 0 : 1, b = 1 - a;
        for (int i = 2; i < per; i++) {
            if (v[i] > v[a]) { b = a; a = i; }
            else if (v[i] > v[b]) b = i;
        }
        gscore[g] = v[a] + v[b];
        gkeep[g] = 0;
    }
    __syncthreads();
    if (tid == 0)
        for (int k = 0; k < c.topk_group; k++) {
            int best = -1;
            for (int g = 0; g < G; g++)
                if (!gkeep[g] && (best < 0 || gscore[g] > gscore[best])) best = g;
            gkeep[best] = 1;
        }
    __syncthreads();
    if (tid < 32) {   // one warp: top_k rounds of a (value desc, index asc) argmax
        const int lane = tid;
        for (int k = 0; k < K; k++) {
            float bv = -INFINITY;
            int be = -1;
            for (int e = lane; e < E; e += 32) {
                bool free_ = gkeep[e / per];
                for (int j = 0; j < k; j++) free_ = free_ && picked[j] != e;
                if (free_ && (be < 0 || choice[e] > bv)) { bv = choice[e]; be = e; }
            }
#pragma unroll
            for (int o = 16; o; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int oe = __shfl_xor_sync(0xffffffffu, be, o);
                bool take = oe >= 0 && (be < 0 || ov > bv || (ov == bv && oe < be));
                if (take) { bv = ov; be = oe; }
            }
            if (lane == 0) picked[k] = be;
            __syncwarp();
        }
        if (lane == 0) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += s[picked[k]];
            float den = c.norm_topk_prob ? sum + 1e-20f : 1.0f;
            for (int k = 0; k < K; k++) {
                float v = s[picked[k]];
                if (c.norm_topk_prob) v /= den;
                idx[t * stride + k] = picked[k];
                w[t * stride + k] = v * c.routed_scaling_factor;
            }
        }
    }
}

#ifndef RT_EMU   // host side
extern "C" int moe_route_cuda(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n,
                              int64_t stride, int32_t *idx, float *w, void *stream) {
    int rc = moe_router_check(c);
    if (rc) return rc;
    if (c->n_experts > RT_MAX_E || c->n_group > RT_MAX_G || c->top_k > 32 || stride < c->top_k)
        return rt_fail(RT_EINVAL, "router on the GPU: %lld experts in %lld groups, top %lld, stride %lld (limits %d, %d, 32)",
                       (long long)c->n_experts, (long long)c->n_group, (long long)c->top_k, (long long)stride, RT_MAX_E,
                       RT_MAX_G);
    if (n <= 0) return 0;
    if (n > 0x7fffffff) return rt_fail(RT_EINVAL, "router: %lld tokens", (long long)n);
    k_route<<<(unsigned)n, RT_THREADS, 0, (cudaStream_t)stream>>>(*c, logits, bias, stride, idx, w);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif

// ---- permutation ---------------------------------------------------------------------------
// One block of 1024 threads: histogram, exclusive scan, then ranks in slot order, chunk by
// chunk (a slot's rank counts the earlier slots of its chunk with the same expert), so the
// order within an expert is the slot order — moe_experts_fwd's token-major order.

#define PM_THREADS 1024
#define PM_MAX_E 4096

__global__ static void __launch_bounds__(PM_THREADS)
k_permute(const int32_t *__restrict__ idx, int64_t n_slots, int E, int32_t *__restrict__ offsets,
          int32_t *__restrict__ row_of_slot, int32_t *__restrict__ slot_of_row) {
    __shared__ int cnt[PM_MAX_E + 1];
    __shared__ int chunk[PM_THREADS];
    const int tid = threadIdx.x;
    for (int e = tid; e <= E; e += PM_THREADS) cnt[e] = 0;
    __syncthreads();
    for (int64_t i = tid; i < n_slots; i += PM_THREADS) {
        int e = idx[i];
        if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
    }
    __syncthreads();
    if (tid == 0) {   // exclusive scan; cnt becomes each expert's cursor
        int run = 0;
        for (int e = 0; e < E; e++) {
            int v = cnt[e];
            offsets[e] = run;
            cnt[e] = run;
            run += v;
        }
        offsets[E] = run;
    }
    __syncthreads();
    for (int64_t c0 = 0; c0 < n_slots; c0 += PM_THREADS) {
        int64_t i = c0 + tid;
        int e = i < n_slots ? idx[i] : -1;
        if (e >= E) e = -1;
        chunk[tid] = e;
        __syncthreads();
        if (e >= 0) {
            int rank = 0;
            for (int j = 0; j < tid; j++) rank += chunk[j] == e;
            int pos = cnt[e] + rank;
            row_of_slot[i] = pos;
            slot_of_row[pos] = (int32_t)i;
        } else if (i < n_slots) {
            row_of_slot[i] = -1;
        }
        __syncthreads();
        if (e >= 0) atomicAdd(&cnt[e], 1);
        __syncthreads();
    }
}

#ifndef RT_EMU   // host side
extern "C" int moe_permute_cuda(const int32_t *idx, int64_t n_slots, int64_t n_experts, int32_t *offsets,
                                int32_t *row_of_slot, int32_t *slot_of_row, void *stream) {
    if (n_experts <= 0 || n_experts > PM_MAX_E || n_slots < 0 || n_slots > 0x7fffffff)
        return rt_fail(RT_EINVAL, "moe permute: %lld experts (limit %d), %lld slots", (long long)n_experts, PM_MAX_E,
                       (long long)n_slots);
    k_permute<<<1, PM_THREADS, 0, (cudaStream_t)stream>>>(idx, n_slots, (int)n_experts, offsets, row_of_slot,
                                                          slot_of_row);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif

// ---- gather ------------------------------------------------------------------------------------
// dst row r = src row (slot_of_row[r] / slots_per_token); one block per destination row.

__global__ static void k_gather(const uint8_t *__restrict__ src, int64_t row_bytes, const int32_t *__restrict__ sor,
                                int64_t spt, uint8_t *__restrict__ dst) {
    int64_t r = blockIdx.x, tok = sor[r] / spt;
    const uint8_t *s = src + tok * row_bytes;
    uint8_t *d = dst + r * row_bytes;
    if ((row_bytes & 15) == 0 && ((uintptr_t)src & 15) == 0 && ((uintptr_t)dst & 15) == 0) {
        for (int64_t i = threadIdx.x; i < row_bytes / 16; i += blockDim.x)
            reinterpret_cast<uint4 *>(d)[i] = reinterpret_cast<const uint4 *>(s)[i];
    } else {
        for (int64_t i = threadIdx.x; i < row_bytes; i += blockDim.x) d[i] = s[i];
    }
}

#ifndef RT_EMU   // host side
extern "C" int moe_gather_rows_cuda(const void *src, int64_t row_bytes, const int32_t *slot_of_row, int64_t n_rows,
                                    int64_t slots_per_token, void *dst, void *stream) {
    if (row_bytes <= 0 || slots_per_token <= 0 || n_rows < 0 || n_rows > 0x7fffffff)
        return rt_fail(RT_EINVAL, "moe gather: %lld rows of %lld bytes", (long long)n_rows, (long long)row_bytes);
    if (!n_rows) return 0;
    k_gather<<<(unsigned)n_rows, 128, 0, (cudaStream_t)stream>>>((const uint8_t *)src, row_bytes, slot_of_row,
                                                                 slots_per_token, (uint8_t *)dst);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif

// ---- combine -----------------------------------------------------------------------------------
// out[t] = base[t] + Σ_k w[t,k]·y[row_of_slot[t·slots + k]], f32 in slot order, one bf16 rounding.

__global__ static void k_combine(const uint16_t *__restrict__ y, const int32_t *__restrict__ ros,
                                 const float *__restrict__ w, int64_t slots, int64_t dim,
                                 const uint16_t *base, uint16_t *out) {   // base may be out (in place)
    int64_t t = blockIdx.x;
    for (int64_t j = 2 * threadIdx.x; j < dim; j += 2 * blockDim.x) {
        float a0 = 0.0f, a1 = 0.0f;
        if (base) {
            uint32_t b = *reinterpret_cast<const uint32_t *>(base + t * dim + j);
            a0 = bf2f((uint16_t)b);
            a1 = bf2f((uint16_t)(b >> 16));
        }
        for (int64_t k = 0; k < slots; k++) {
            int32_t r = ros[t * slots + k];
            if (r < 0) continue;
            float wk = w[t * slots + k];
            uint32_t v = *reinterpret_cast<const uint32_t *>(y + (int64_t)r * dim + j);
            a0 = fmaf(wk, bf2f((uint16_t)v), a0);
            a1 = fmaf(wk, bf2f((uint16_t)(v >> 16)), a1);
        }
        *reinterpret_cast<uint32_t *>(out + t * dim + j) = pack_bf2(a0, a1);
    }
}

#ifndef RT_EMU   // host side
extern "C" int moe_combine_cuda(const uint16_t *y, const int32_t *row_of_slot, const float *w, int64_t n,
                                int64_t slots, int64_t dim, const uint16_t *base, uint16_t *out, void *stream) {
    if (dim <= 0 || dim % 2 || slots <= 0 || n < 0 || n > 0x7fffffff)
        return rt_fail(RT_EINVAL, "moe combine: %lld tokens × %lld slots, dim %lld (even)", (long long)n,
                       (long long)slots, (long long)dim);
    if (!n) return 0;
    k_combine<<<(unsigned)n, 256, 0, (cudaStream_t)stream>>>(y, row_of_slot, w, slots, dim, base, out);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif

// ---- the capacity-padded expert-parallel dispatch (moe_slab_pack) ------------------------------
// Thread q scans the n·K slots in order and fills rank q's slab, then its padding; slots routed
// nowhere get comb −1 from thread 0. The slabs are at most P·cap ≤ 2^31 rows.

__global__ static void k_slab_pack(const int32_t *__restrict__ idx, int64_t nk, int64_t E, int P, int64_t cap,
                                   int32_t none, int32_t slot0, int32_t *__restrict__ slot, int32_t *__restrict__ lexp,
                                   int32_t *__restrict__ comb) {
    int q = threadIdx.x;
    if (q >= P) return;
    int64_t j = 0;
    for (int64_t i = 0; i < nk; i++) {
        int32_t e = idx[i];
        if (e < 0 || e >= E) {
            if (q == 0) comb[i] = -1;
            continue;
        }
        if (e % P != q) continue;
        slot[q * cap + j] = slot0 + (int32_t)i, lexp[q * cap + j] = e / P;
        comb[i] = (int32_t)(q * cap + j++);
    }
    for (; j < cap; j++) slot[q * cap + j] = 0, lexp[q * cap + j] = none;
}

#ifndef RT_EMU   // host side
extern "C" int moe_slab_pack_cuda(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap,
                                  int32_t none, int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb,
                                  void *stream) {
    int rc = moe_slab_check(n, K, n_experts, P, cap);
    if (rc) return rc;
    k_slab_pack<<<1, (unsigned)((P + 31) / 32 * 32), 0, (cudaStream_t)stream>>>(idx, n * K, n_experts, (int)P, cap,
                                                                                 none, slot0, slot, lexp, comb);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
