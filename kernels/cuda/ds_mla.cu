// kernels/cuda/ds_mla.cu — MLA attention on the paged latent cache, absorbed form (FlashMLA's
// shape: 576-dim keys = 512 latent + 64 rope, values = the 512 latent, all heads sharing one
// latent row), flash-decoding split over the context, bf16 tensor cores (mma.sync
// m16n8k16), f32 online softmax. Contract in kernels/mla.h (CUDA section); the CPU twin is
// mla_attn_absorbed (kernels/cpu/mla.c) on the latent-space inputs.
#include "kernels/cuda/ds_common.cuh"
extern "C" {
#include "kernels/mla.h"
}

using namespace ds;

#define ML_DL 512                  /* latent (value) dims */
#define ML_DR 64                   /* rope dims */
#define ML_DK (ML_DL + ML_DR)      /* key dims */
#define ML_HT 64                   /* heads per CTA */
#define ML_KC 32                   /* keys per chunk */
#define ML_LDQ (ML_DK + 8)         /* smem row stride (bf16): 1168 B, conflict-free fragments */
#define ML_LDP (ML_KC + 8)
#define ML_THREADS 256
#define ML_SMEM (ML_HT * ML_LDQ * 2 + 2 * ML_KC * ML_LDQ * 2 + ML_HT * (ML_KC + 1) * 4 + ML_HT * ML_LDP * 2 + 3 * ML_HT * 4)

#ifdef RT_EMU   // tests/emu/cuda_emu.h: cp.async lands at the wait, mma and ldmatrix from the PTX layouts
__device__ __forceinline__ void mma_bf16(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    emu::mma16816(*reinterpret_cast<float(*)[4]>(d), *reinterpret_cast<const uint32_t(*)[4]>(a), b0, b1);
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t *r, const void *p) {
    emu::ldsm_x4(*reinterpret_cast<uint32_t(*)[4]>(r), (const uint16_t *)p, true);
}
__device__ __forceinline__ void cp16(void *smem, const void *g) { emu::cpa(smem, g, 16); }
__device__ __forceinline__ void cp_commit() { emu::cpa_commit(); }
template <int N> __device__ __forceinline__ void cp_wait() { emu::cpa_wait(N); }
#else
__device__ __forceinline__ void mma_bf16(float *d, const uint32_t *a, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t *r, const void *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void cp16(void *smem, const void *g) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(g));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }
#endif

struct ml_args {
    const uint16_t *q;          // [n, H, 576]
    const void *kv;             // [pages, page, 576] bf16 or e4m3
    const float *kv_scale;      // [pages, page] (e4m3 cache) or NULL (bf16)
    const int32_t *bt, *seq, *ctx;
    int64_t bt_stride;
    int H, page, rows_per_split, nsplit;
    float scale;
    uint16_t *out;              // [n, H, 512] when nsplit == 1
    float *part, *lse;          // [n, H, nsplit, 512], [n, H, nsplit] otherwise
};

// Rows [r0, r0 + 32) of the query's cache into Ks (rows ≥ r1 zero). bf16: cp.async; e4m3:
// loads, scale, bf16 stores.
__device__ __forceinline__ void load_chunk(const ml_args &a, const int32_t *bt, int r0, int r1, uint16_t *Ks) {
    const int tid = threadIdx.x;
    if (!a.kv_scale) {
        for (int c = tid; c < ML_KC * (ML_DK / 8); c += ML_THREADS) {
            int r = c / (ML_DK / 8), col = (c % (ML_DK / 8)) * 8, gr = r0 + r;
            uint16_t *dst = Ks + r * ML_LDQ + col;
            if (gr < r1) {
                int64_t row = (int64_t)bt[gr / a.page] * a.page + gr % a.page;
                cp16(dst, (const uint16_t *)a.kv + row * ML_DK + col);
            } else {
                *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_commit();
    } else {
        for (int c = tid; c < ML_KC * (ML_DK / 8); c += ML_THREADS) {
            int r = c / (ML_DK / 8), col = (c % (ML_DK / 8)) * 8, gr = r0 + r;
            uint4 o = make_uint4(0, 0, 0, 0);
            if (gr < r1) {
                int64_t row = (int64_t)bt[gr / a.page] * a.page + gr % a.page;
                uint2 v = *reinterpret_cast<const uint2 *>((const uint8_t *)a.kv + row * ML_DK + col);
                float s = a.kv_scale[row];
                const uint8_t *b = reinterpret_cast<const uint8_t *>(&v);
                o.x = pack_bf2(fp82f(b[0]) * s, fp82f(b[1]) * s);
                o.y = pack_bf2(fp82f(b[2]) * s, fp82f(b[3]) * s);
                o.z = pack_bf2(fp82f(b[4]) * s, fp82f(b[5]) * s);
                o.w = pack_bf2(fp82f(b[6]) * s, fp82f(b[7]) * s);
            }
            *reinterpret_cast<uint4 *>(Ks + r * ML_LDQ + col) = o;
        }
        cp_commit();   // an empty group keeps the wait counts uniform
    }
}

__global__ static void __launch_bounds__(ML_THREADS, 1) k_mla_decode(ml_args a) {
    DS_DYN_SMEM(uint8_t, smem);
    uint16_t *Qs = (uint16_t *)smem;
    uint16_t *Kb = Qs + ML_HT * ML_LDQ;                          // two chunk buffers
    float *Ss = (float *)(Kb + 2 * ML_KC * ML_LDQ);              // [64][33]
    uint16_t *Ps = (uint16_t *)(Ss + ML_HT * (ML_KC + 1));       // [64][40]
    float *m_s = (float *)(Ps + ML_HT * ML_LDP), *l_s = m_s + ML_HT, *al_s = l_s + ML_HT;

    const int i = blockIdx.x, h0 = blockIdx.y * ML_HT, split = blockIdx.z, tid = threadIdx.x;
    const int lane = tid & 31, warp = tid >> 5, gq = lane >> 2, tq = lane & 3;
    const int sq = a.seq ? a.seq[i] : i, ctx = a.ctx[i];
    const int32_t *bt = a.bt + (int64_t)sq * a.bt_stride;
    const int r_begin = split * a.rows_per_split, r_end = min(ctx, r_begin + a.rows_per_split);
    const int64_t ho = (int64_t)i * a.H + h0;   // first (query, head) row of this CTA
    const int heads = min(ML_HT, a.H - h0);

    if (r_begin >= r_end) {   // nothing to see in this split: a neutral partial
        if (a.nsplit > 1)
            for (int h = tid; h < heads; h += ML_THREADS) a.lse[(ho + h) * a.nsplit + split] = -INFINITY;
        return;
    }
    // queries: heads × 576 bf16, zero rows past H
    for (int c = tid; c < ML_HT * (ML_DK / 8); c += ML_THREADS) {
        int r = c / (ML_DK / 8), col = (c % (ML_DK / 8)) * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < heads) v = *reinterpret_cast<const uint4 *>(a.q + (ho + r) * ML_DK + col);
        *reinterpret_cast<uint4 *>(Qs + r * ML_LDQ + col) = v;
    }
    if (tid < ML_HT) {
        m_s[tid] = -INFINITY;
        l_s[tid] = 0.0f;
    }
    const int ht = warp & 3;                 // head tile of this warp (16 rows)
    const int half = warp >> 2;              // phase 1: key half; phase 3: value half
    float acc[32][4];
#pragma unroll
    for (int j = 0; j < 32; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    load_chunk(a, bt, r_begin, r_end, Kb);
    int buf = 0;
    for (int r0 = r_begin; r0 < r_end; r0 += ML_KC, buf ^= 1) {
        if (r0 + ML_KC < r_end) {
            load_chunk(a, bt, r0 + ML_KC, r_end, Kb + (buf ^ 1) * ML_KC * ML_LDQ);
            cp_wait<1>();
        } else {
            cp_wait<0>();
        }
        __syncthreads();
        const uint16_t *Ks = Kb + buf * ML_KC * ML_LDQ;
        // phase 1: S[16 heads, 16 keys] per warp over 576 dims
        {
            float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
            const uint16_t *qa = Qs + (ht * 16 + gq) * ML_LDQ + tq * 2;
#pragma unroll 4
            for (int k0 = 0; k0 < ML_DK; k0 += 16) {
                uint32_t af[4];
                af[0] = *reinterpret_cast<const uint32_t *>(qa + k0);
                af[1] = *reinterpret_cast<const uint32_t *>(qa + 8 * ML_LDQ + k0);
                af[2] = *reinterpret_cast<const uint32_t *>(qa + k0 + 8);
                af[3] = *reinterpret_cast<const uint32_t *>(qa + 8 * ML_LDQ + k0 + 8);
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const uint16_t *kb = Ks + (half * 16 + j * 8 + gq) * ML_LDQ + k0 + tq * 2;
                    mma_bf16(s[j], af, *reinterpret_cast<const uint32_t *>(kb),
                             *reinterpret_cast<const uint32_t *>(kb + 8));
                }
            }
#pragma unroll
            for (int j = 0; j < 2; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int row = ht * 16 + gq + (e >> 1) * 8, col = half * 16 + j * 8 + tq * 2 + (e & 1);
                    Ss[row * (ML_KC + 1) + col] = r0 + col < r_end ? s[j][e] * a.scale : -INFINITY;
                }
        }
        __syncthreads();
        // phase 2: online softmax, 4 threads per row, 8 keys each
        {
            int row = tid >> 2, part = tid & 3;
            float v[8], mx = -INFINITY;
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[e] = Ss[row * (ML_KC + 1) + part * 8 + e];
                mx = fmaxf(mx, v[e]);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            float m_old = m_s[row], m_new = fmaxf(m_old, mx);   // every chunk holds a valid key
            float sum = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e += 2) {
                float p0 = __expf(v[e] - m_new), p1 = __expf(v[e + 1] - m_new);
                sum += p0 + p1;
                *reinterpret_cast<uint32_t *>(Ps + row * ML_LDP + part * 8 + e) = pack_bf2(p0, p1);
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            __syncwarp();
            if (part == 0) {
                float alpha = __expf(m_old - m_new);   // m_old = −inf → 0
                al_s[row] = alpha;
                l_s[row] = l_s[row] * alpha + sum;
                m_s[row] = m_new;
            }
        }
        __syncthreads();
        // phase 3: O[16 heads, 256 dims] per warp += P[16, 32] · V[32, 256]
        {
            float al0 = al_s[ht * 16 + gq], al1 = al_s[ht * 16 + gq + 8];
#pragma unroll
            for (int j = 0; j < 32; j++) {
                acc[j][0] *= al0; acc[j][1] *= al0;
                acc[j][2] *= al1; acc[j][3] *= al1;
            }
#pragma unroll
            for (int k0 = 0; k0 < ML_KC; k0 += 16) {
                const uint16_t *pa = Ps + (ht * 16 + gq) * ML_LDP + k0 + tq * 2;
                uint32_t af[4];
                af[0] = *reinterpret_cast<const uint32_t *>(pa);
                af[1] = *reinterpret_cast<const uint32_t *>(pa + 8 * ML_LDP);
                af[2] = *reinterpret_cast<const uint32_t *>(pa + 8);
                af[3] = *reinterpret_cast<const uint32_t *>(pa + 8 * ML_LDP + 8);
#pragma unroll
                for (int j = 0; j < 32; j += 2) {
                    uint32_t b[4];
                    const uint16_t *vb = Ks + (k0 + (lane & 15)) * ML_LDQ + half * 256 + j * 8 + (lane >> 4) * 8;
                    ldsm_x4_trans(b, vb);
                    mma_bf16(acc[j], af, b[0], b[1]);
                    mma_bf16(acc[j + 1], af, b[2], b[3]);
                }
            }
        }
        __syncthreads();   // Ks, Ps and al_s are rewritten next round
    }
    // epilogue: rows g and g+8 of the warp's head tile
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        int row = ht * 16 + gq + hh * 8;
        if (row >= heads) continue;
        float l = l_s[row], inv = 1.0f / l;
        int64_t qh = ho + row;
        if (a.nsplit == 1) {
            uint16_t *o = a.out + qh * ML_DL + half * 256 + tq * 2;
#pragma unroll
            for (int j = 0; j < 32; j++)
                *reinterpret_cast<uint32_t *>(o + j * 8) = pack_bf2(acc[j][2 * hh] * inv, acc[j][2 * hh + 1] * inv);
        } else {
            float *o = a.part + (qh * a.nsplit + split) * ML_DL + half * 256 + tq * 2;
#pragma unroll
            for (int j = 0; j < 32; j++)
                *reinterpret_cast<float2 *>(o + j * 8) = make_float2(acc[j][2 * hh] * inv, acc[j][2 * hh + 1] * inv);
            if (half == 0 && tq == 0) a.lse[qh * a.nsplit + split] = m_s[row] + logf(l);
        }
    }
}

// Merge the splits of one (query, head) row: weights e^(lse_s − max).
__global__ static void k_mla_merge(const float *__restrict__ part, const float *__restrict__ lse, int nsplit,
                                   uint16_t *__restrict__ out) {
    int64_t qh = blockIdx.x;
    const float *L = lse + qh * nsplit;
    float mx = -INFINITY;
    for (int s = 0; s < nsplit; s++) mx = fmaxf(mx, L[s]);
    float den = 0.0f;
    for (int s = 0; s < nsplit; s++) den += L[s] == -INFINITY ? 0.0f : __expf(L[s] - mx);
    for (int d = threadIdx.x * 2; d < ML_DL; d += blockDim.x * 2) {
        float o0 = 0.0f, o1 = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            if (L[s] == -INFINITY) continue;
            float wgt = __expf(L[s] - mx);
            float2 v = *reinterpret_cast<const float2 *>(part + (qh * nsplit + s) * ML_DL + d);
            o0 += wgt * v.x;
            o1 += wgt * v.y;
        }
        *reinterpret_cast<uint32_t *>(out + qh * ML_DL + d) = pack_bf2(o0 / den, o1 / den);
    }
}

// Splits: enough CTAs for two waves of `sms` SMs, each split at least 256 rows (also what
// tests/emu/mla_emu.cpp launches with).
static inline int plan_splits(int64_t n, int64_t H, int64_t max_ctx, int sms, int64_t *rows_per_split) {
    int64_t ctas = n * ((H + ML_HT - 1) / ML_HT), want = (2 * (int64_t)sms + ctas - 1) / ctas;
    int64_t most = (max_ctx + 255) / 256;
    int64_t ns = want < most ? want : most;
    if (ns < 1) ns = 1;
    if (ns > 64) ns = 64;
    int64_t rps = (max_ctx + ns - 1) / ns;
    rps = (rps + ML_KC - 1) / ML_KC * ML_KC;
    *rows_per_split = rps;
    return (int)((max_ctx + rps - 1) / rps);
}

#ifndef RT_EMU   // host side: launches
static int n_sms(void) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms > 0 ? sms : 132;
}

extern "C" size_t mla_decode_workspace_bytes(int64_t n, int64_t H, int64_t max_ctx) {
    int64_t rps;
    int ns = plan_splits(n, H, max_ctx, n_sms(), &rps);
    return ns > 1 ? (size_t)(n * H) * (size_t)ns * (ML_DL + 1) * sizeof(float) : 0;
}

extern "C" int mla_decode_cuda(const mla_dims *d, const uint16_t *q, int64_t n, const void *kv, const float *kv_scale,
                               int64_t page, const int32_t *block_table, int64_t bt_stride, const int32_t *seq,
                               const int32_t *ctx, int64_t max_ctx, void *ws, size_t ws_bytes, uint16_t *out,
                               void *stream) {
    if (d->kv_rank != ML_DL || d->rope_dim != ML_DR)
        return rt_fail(RT_EUNSUPPORTED, "mla on the GPU: kv_rank %lld, rope %lld (built for %d, %d)",
                       (long long)d->kv_rank, (long long)d->rope_dim, ML_DL, ML_DR);
    if (d->n_heads <= 0 || d->n_heads % 16 || page <= 0 || max_ctx <= 0 || n < 0 || n > 0x7fffffff)
        return rt_fail(RT_EINVAL, "mla on the GPU: %lld heads (a multiple of 16), page %lld, max_ctx %lld",
                       (long long)d->n_heads, (long long)page, (long long)max_ctx);
    if (!n) return 0;
    int64_t rps;
    int ns = plan_splits(n, d->n_heads, max_ctx, n_sms(), &rps);
    size_t need = mla_decode_workspace_bytes(n, d->n_heads, max_ctx);
    if (ws_bytes < need)
        return rt_fail(RT_EINVAL, "mla on the GPU: workspace %zu bytes, %zu needed", ws_bytes, need);
    ml_args a;
    a.q = q; a.kv = kv; a.kv_scale = kv_scale; a.bt = block_table; a.seq = seq; a.ctx = ctx;
    a.bt_stride = bt_stride; a.H = (int)d->n_heads; a.page = (int)page; a.rows_per_split = (int)rps; a.nsplit = ns;
    a.scale = d->scale; a.out = out;
    a.part = (float *)ws;
    a.lse = ns > 1 ? a.part + (size_t)(n * d->n_heads) * ns * ML_DL : NULL;
    RT_CUDA_TRY(smem_attr(k_mla_decode, ML_SMEM, (cudaStream_t)stream));
    dim3 grid((unsigned)n, (unsigned)((d->n_heads + ML_HT - 1) / ML_HT), (unsigned)ns);
    k_mla_decode<<<grid, ML_THREADS, ML_SMEM, (cudaStream_t)stream>>>(a);
    RT_CUDA_LAUNCHED();
    if (ns > 1) {
        k_mla_merge<<<(unsigned)(n * d->n_heads), 128, 0, (cudaStream_t)stream>>>(a.part, a.lse, ns, out);
        RT_CUDA_LAUNCHED();
    }
    return 0;
}

#endif  // RT_EMU

// ---- cache append ----------------------------------------------------------------------------
// Row r (576 bf16: c | k_r) goes to cache row slot[r]; for an e4m3 cache with its scale
// amax/448 (1 for an all-zero row), one warp per row, grid-stride (grid_for caps the grid).
__global__ static void k_append(const uint16_t *__restrict__ rows, int64_t n, const int32_t *__restrict__ slot,
                                void *kv, float *kv_scale) {
    const int lane = threadIdx.x & 31;
    const int64_t nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; r < n; r += nw) {
        const uint16_t *src = rows + r * ML_DK;
        int64_t dst = slot[r];
        if (!kv_scale) {
            uint16_t *d = (uint16_t *)kv + dst * ML_DK;
            for (int j = lane; j < ML_DK / 2; j += 32)
                reinterpret_cast<uint32_t *>(d)[j] = reinterpret_cast<const uint32_t *>(src)[j];
            continue;
        }
        float amax = 0.0f;
        for (int j = lane; j < ML_DK; j += 32) amax = fmaxf(amax, fabsf(bf2f(src[j])));
        amax = warp_max(amax);
        float sc = amax / 448.0f;
        if (!(sc > 0.0f)) sc = 1.0f;
        uint8_t *d = (uint8_t *)kv + dst * ML_DK;
        for (int j = lane; j < ML_DK; j += 32) d[j] = f2fp8(bf2f(src[j]) / sc);
        if (lane == 0) kv_scale[dst] = sc;
    }
}

#ifndef RT_EMU
extern "C" int mla_cache_append_cuda(const uint16_t *rows, int64_t n, const int32_t *slot, void *kv, float *kv_scale,
                                     void *stream) {
    if (n < 0) return rt_fail(RT_EINVAL, "mla cache append: %lld rows", (long long)n);
    if (!n) return 0;
    k_append<<<grid_for((size_t)n * 32, 256), 256, 0, (cudaStream_t)stream>>>(rows, n, slot, kv, kv_scale);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif  // RT_EMU
