// kernels/cuda/fp8_gemm.cu — DeepSeek's FP8 scheme on the GPU: activation quantization per
// token and 128 channels, SwiGLU + quantization, the block-scaled e4m3 GEMM (own grouped
// kernel; cuBLASLt block-scaled for dense shapes) and a bf16 cuBLASLt fallback.
// Contract in kernels/fp8.h (the bf16 GEMMs: kernels/matmul.h); CPU twins in kernels/cpu/fp8.c.
#include <cublasLt.h>

#include "kernels/cuda/ds_common.cuh"
#include "kernels/fp8.h"
#include "kernels/matmul.h"

using namespace ds;

// ---- quantization ----------------------------------------------------------------------
// One warp per (row, 128-channel block): lane i holds channels 4i … 4i+3. Grid-stride over the
// pairs: grid_for caps the grid at 65535·16 blocks (8.4M warps), fewer than M·K/128 for a long
// prefill through a wide layer.

template <bool SWIGLU>
__global__ static void k_quant(const uint16_t *__restrict__ x, int64_t M, int64_t K, uint8_t *__restrict__ q,
                               float *__restrict__ scale, int scale_t) {
    const int64_t nb = K / 128, nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    const int lane = threadIdx.x & 31;
    for (int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; wid < M * nb; wid += nw) {
        const int64_t m = wid / nb, b = wid % nb;
        float v[4];
        if (SWIGLU) {   // x is gu [M, 2K]: gate | up
            const uint16_t *g = x + m * 2 * K + b * 128 + lane * 4, *u = g + K;
            uint2 gv = *reinterpret_cast<const uint2 *>(g), uv = *reinterpret_cast<const uint2 *>(u);
            const uint16_t *gh = reinterpret_cast<const uint16_t *>(&gv), *uh = reinterpret_cast<const uint16_t *>(&uv);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float gf = bf2f(gh[i]);
                v[i] = gf / (1.0f + expf(-gf)) * bf2f(uh[i]);
            }
        } else {
            uint2 xv = *reinterpret_cast<const uint2 *>(x + m * K + b * 128 + lane * 4);
            const uint16_t *xh = reinterpret_cast<const uint16_t *>(&xv);
#pragma unroll
            for (int i = 0; i < 4; i++) v[i] = bf2f(xh[i]);
        }
        float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
        amax = warp_max(amax);
        float s = amax / 448.0f;
        if (!(s > 0.0f)) s = 1.0f;
        uint32_t packed = 0;
#pragma unroll
        for (int i = 0; i < 4; i++) packed |= (uint32_t)f2fp8(v[i] / s) << (8 * i);
        *reinterpret_cast<uint32_t *>(q + m * K + b * 128 + lane * 4) = packed;
        if (lane == 0) scale[scale_t ? b * M + m : m * nb + b] = s;
    }
}

#ifndef RT_EMU   // host side: launches
template <bool SWIGLU>
static int quant_launch(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t, void *stream) {
    if (K <= 0 || K % 128) return rt_fail(RT_EINVAL, "fp8 quantization: K = %lld is not a multiple of 128", (long long)K);
    if (M <= 0) return 0;
    size_t threads = (size_t)M * (size_t)(K / 128) * 32;
    k_quant<SWIGLU><<<grid_for(threads, 256), 256, 0, (cudaStream_t)stream>>>(x, M, K, q, scale, scale_t);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int fp8_act_quant_cuda(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t,
                                  void *stream) {
    return quant_launch<false>(x, M, K, q, scale, scale_t, stream);
}

extern "C" int fp8_swiglu_quant_cuda(const uint16_t *gu, int64_t M, int64_t I, uint8_t *q, float *scale, int scale_t,
                                     void *stream) {
    return quant_launch<true>(gu, M, I, q, scale, scale_t, stream);
}

#endif

// ---- the grouped block-scaled GEMM ----------------------------------------------------
// CTA tile 64 (rows of one group) × 128 (output channels = one weight scale block) × 128 (K,
// one scale block), 8 warps as 2 (M) × 4 (N), each warp 32×32 = 2×4 mma tiles. A K block is
// accumulated in f32 registers (mma.sync m16n8k32 e4m3, sm_89+), then promoted into the
// running f32 sum with a_scale[row, kb]·w_scale[nb, kb] (DeepSeek's promotion: the tensor
// core never accumulates more than 128 products before an f32 rescale). Two smem stages
// filled with cp.async (16 B, zero-filled outside the matrix). Rows of a tile never cross
// groups: blockIdx.y enumerates the groups' m-tiles in order, found by a scan of offsets.

#define GB_M 64
#define GB_N 128
#define GB_K 128
#define GB_LDS (GB_K + 16)          /* smem row stride in bytes: conflict-free 32-bit fragment loads */
#define GB_STAGE ((GB_M + GB_N) * GB_LDS)
#define GB_STAGES 3                 /* cp.async pipeline depth: two K blocks in flight while one computes */

// Launch arithmetic (also what tests/emu/fp8_emu.cpp launches with). Each non-empty group adds
// at most one partial m-tile to the full ones, so this bounds the grouped grid.
static inline int64_t gb_grouped_tiles(int64_t G, int64_t max_total_rows) {
    return max_total_rows / GB_M + (G < max_total_rows ? G : max_total_rows) + 1;
}
// K blocks per split (*kbs) and the number of splits actually used (no empty split).
static inline int gb_splits(int64_t nb, int splits, int64_t *kbs) {
    *kbs = (nb + splits - 1) / splits;
    return (int)((nb + *kbs - 1) / *kbs);
}

// GB_TC: the e4m3 tensor-core path (sm_89+, and the emulator unless -DRT_EMU_SM80 asks for the
// sm_80 scalar path).
#if defined(RT_EMU)
#ifdef RT_EMU_SM80
#define GB_TC 0
#else
#define GB_TC 1
#endif
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define GB_TC 1
#else
#define GB_TC 0
#endif

#ifdef RT_EMU   // tests/emu/cuda_emu.h: cp.async lands at the wait, mma from the PTX fragment layouts
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) { emu::cpa(smem, gmem, valid ? 16 : 0); }
__device__ __forceinline__ void cp_async_commit() { emu::cpa_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { emu::cpa_wait(N); }
__device__ __forceinline__ void mma_e4m3(float *d, const uint32_t *a, const uint32_t *b) { emu::mma16832_e4m3(d, a, b); }
#else
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void mma_e4m3(float *d, const uint32_t *a, const uint32_t *b) {
#if GB_TC
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    (void)d; (void)a; (void)b;   // unreachable: the sm_80 path below never calls it
#endif
}
#endif

// offsets NULL: one group of rows [0, M) (dense), no scan. part not NULL: split-K, blockIdx.z
// takes K blocks [z·kbs, (z+1)·kbs) and writes its f32 partial to part[z][row][n].
__global__ static void __launch_bounds__(256, 1)
k_gemm_grouped(const uint8_t *__restrict__ A, const float *__restrict__ a_scale, const uint8_t *__restrict__ W,
               const float *__restrict__ w_scale, const int32_t *__restrict__ offsets, int G, int M, int N, int K,
               uint16_t *__restrict__ out, float *__restrict__ part, int kbs) {
    DS_DYN_SMEM(uint8_t, smem);
    __shared__ int s_group, s_row0, s_rows;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int nb = K / GB_K, nsb = (N + GB_N - 1) / GB_N;

    // Which group and which of its m-tiles is blockIdx.y? Scan ceil(rows_g / 64) over groups.
    if (!offsets) {
        if (tid == 0) {
            s_group = (int)blockIdx.y * GB_M < M ? 0 : -1;
            s_row0 = blockIdx.y * GB_M;
            s_rows = min(GB_M, M - s_row0);
        }
    } else if (tid < 32) {
        int target = blockIdx.y, base = 0, found = -1;
        for (int g0 = 0; g0 < G && found < 0; g0 += 32) {
            int g = g0 + lane;
            int rows = g < G ? offsets[g + 1] - offsets[g] : 0;
            int tiles = (rows + GB_M - 1) / GB_M, incl = tiles;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                int v = __shfl_up_sync(0xffffffffu, incl, o);
                if (lane >= o) incl += v;
            }
            int excl = base + incl - tiles;
            unsigned hit = __ballot_sync(0xffffffffu, g < G && target >= excl && target < excl + tiles);
            if (hit) {
                int src = __ffs(hit) - 1;
                int e = __shfl_sync(0xffffffffu, excl, src);
                if (lane == 0) {
                    int gg = g0 + src, mt = target - e;
                    s_group = gg;
                    s_row0 = offsets[gg] + mt * GB_M;
                    s_rows = min(GB_M, offsets[gg + 1] - s_row0);
                }
                found = 1;
            }
            base += __shfl_sync(0xffffffffu, incl, 31);
        }
        if (lane == 0 && found < 0) s_group = -1;
    }
    __syncthreads();
    const int g = s_group;
    if (g < 0) return;   // past the last tile (the grid is an upper bound)
    const int row0 = s_row0, rows = s_rows, n0 = blockIdx.x * GB_N;
    const uint8_t *Wg = W + (int64_t)g * N * K;
    const float *wsg = w_scale + (int64_t)g * nsb * nb + (int64_t)(n0 / GB_N) * nb;

    auto load_stage = [&](int stage, int kb) {
        uint8_t *As = smem + stage * GB_STAGE, *Ws = As + GB_M * GB_LDS;
        const int k0 = kb * GB_K;
#pragma unroll
        for (int i = 0; i < (GB_M * GB_K / 16) / 256; i++) {   // 2 chunks of 16 B per thread
            int c = tid + i * 256, r = c >> 3, col = (c & 7) * 16;
            bool ok = r < rows;
            cp_async16(As + r * GB_LDS + col, ok ? A + (int64_t)(row0 + r) * K + k0 + col : A, ok);
        }
#pragma unroll
        for (int i = 0; i < (GB_N * GB_K / 16) / 256; i++) {   // 4 chunks
            int c = tid + i * 256, r = c >> 3, col = (c & 7) * 16;
            bool ok = n0 + r < N;
            cp_async16(Ws + r * GB_LDS + col, ok ? Wg + (int64_t)(n0 + r) * K + k0 + col : Wg, ok);
        }
        cp_async_commit();
    };

    const int wm = (warp >> 2) * 32, wn = (warp & 3) * 32, gq = lane >> 2, tq = lane & 3;
    float acc[2][4][4], blk[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const int kb0 = part ? blockIdx.z * kbs : 0, kb1 = part ? min(nb, kb0 + kbs) : nb;
#pragma unroll
    for (int s = 0; s < GB_STAGES - 1; s++) {
        if (kb0 + s < kb1) load_stage(s, kb0 + s);
        else cp_async_commit();   // empty groups keep the wait count uniform
    }
    for (int kb = kb0; kb < kb1; kb++) {
        const int it = kb - kb0, nxt = kb + GB_STAGES - 1;
        if (nxt < kb1) load_stage((it + GB_STAGES - 1) % GB_STAGES, nxt);
        else cp_async_commit();
        cp_async_wait<GB_STAGES - 1>();   // the group of K block `kb` has landed
        __syncthreads();
        const uint8_t *As = smem + (it % GB_STAGES) * GB_STAGE, *Ws = As + GB_M * GB_LDS;
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) blk[i][j][e] = 0.0f;
#if GB_TC
#pragma unroll
        for (int ks = 0; ks < GB_K; ks += 32) {
            uint32_t af[2][4], bfr[4][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const uint8_t *p = As + (wm + i * 16 + gq) * GB_LDS + ks + tq * 4;
                af[i][0] = *reinterpret_cast<const uint32_t *>(p);
                af[i][1] = *reinterpret_cast<const uint32_t *>(p + 8 * GB_LDS);
                af[i][2] = *reinterpret_cast<const uint32_t *>(p + 16);
                af[i][3] = *reinterpret_cast<const uint32_t *>(p + 8 * GB_LDS + 16);
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const uint8_t *p = Ws + (wn + j * 8 + gq) * GB_LDS + ks + tq * 4;
                bfr[j][0] = *reinterpret_cast<const uint32_t *>(p);
                bfr[j][1] = *reinterpret_cast<const uint32_t *>(p + 16);
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) mma_e4m3(blk[i][j], af[i], bfr[j]);
        }
#else
        // sm_80: no e4m3 tensor cores. Same fragment ownership, scalar f32 products.
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = wm + i * 16 + gq + (e >> 1) * 8, c = wn + j * 8 + tq * 2 + (e & 1);
                    float s = 0.0f;
                    for (int k = 0; k < GB_K; k++) s += fp82f(As[r * GB_LDS + k]) * fp82f(Ws[c * GB_LDS + k]);
                    blk[i][j][e] = s;
                }
#endif
        // promotion: one f32 multiply-add per element and K block
        const float sw = wsg[kb];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = wm + i * 16 + gq + h * 8;
                float sa = r < rows ? a_scale[(int64_t)(row0 + r) * nb + kb] * sw : 0.0f;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    acc[i][j][2 * h] = fmaf(blk[i][j][2 * h], sa, acc[i][j][2 * h]);
                    acc[i][j][2 * h + 1] = fmaf(blk[i][j][2 * h + 1], sa, acc[i][j][2 * h + 1]);
                }
            }
        __syncthreads();   // the stage just read is the next load's target
    }
    cp_async_wait<0>();

    if (part) {   // split-K: f32 partials, summed in z order by k_splitk_sum
        float *pz = part + (int64_t)blockIdx.z * M * N;
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = wm + i * 16 + gq + h * 8;
                if (r >= rows) continue;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int c = n0 + wn + j * 8 + tq * 2;
                    if (c < N) pz[(int64_t)(row0 + r) * N + c] = acc[i][j][2 * h];
                    if (c + 1 < N) pz[(int64_t)(row0 + r) * N + c + 1] = acc[i][j][2 * h + 1];
                }
            }
        return;
    }
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int r = wm + i * 16 + gq + h * 8;
            if (r >= rows) continue;
            uint16_t *o = out + (int64_t)(row0 + r) * N;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                int c = n0 + wn + j * 8 + tq * 2;
                if (c + 1 < N && !(N & 1)) {
                    *reinterpret_cast<uint32_t *>(o + c) = pack_bf2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
                } else {
                    if (c < N) o[c] = f2bf(acc[i][j][2 * h]);
                    if (c + 1 < N) o[c + 1] = f2bf(acc[i][j][2 * h + 1]);
                }
            }
        }
}

#ifndef RT_EMU   // host side: launches
extern "C" int fp8_gemm_grouped_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                                     const int32_t *offsets, int64_t G, int64_t max_total_rows, int64_t N, int64_t K,
                                     uint16_t *out, void *stream) {
    if (K <= 0 || K % 128) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    if (G <= 0 || N <= 0 || max_total_rows < 0 || N > INT32_MAX || K > INT32_MAX || G > INT32_MAX)
        return rt_fail(RT_EINVAL, "fp8 gemm: bad shape G = %lld, N = %lld, rows ≤ %lld", (long long)G, (long long)N,
                       (long long)max_total_rows);
    if (max_total_rows == 0) return 0;
    int64_t tiles = gb_grouped_tiles(G, max_total_rows);
    if (tiles > 65535) return rt_fail(RT_EINVAL, "fp8 gemm: %lld m-tiles exceed the grid", (long long)tiles);
    size_t smem = GB_STAGES * GB_STAGE;
    RT_CUDA_TRY(smem_attr(k_gemm_grouped, (int)smem, (cudaStream_t)stream));
    dim3 grid((unsigned)((N + GB_N - 1) / GB_N), (unsigned)tiles);
    k_gemm_grouped<<<grid, 256, smem, (cudaStream_t)stream>>>(a, a_scale, w, w_scale, offsets, (int)G, 0, (int)N,
                                                             (int)K, out, NULL, 0);
    RT_CUDA_LAUNCHED();
    return 0;
}

#endif

// ---- dense with split-K (decode: few rows, few output tiles) --------------------------------

__global__ static void k_splitk_sum(const float *__restrict__ part, int splits, size_t n, uint16_t *__restrict__ out) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = 0.0f;
        for (int z = 0; z < splits; z++) v += part[(size_t)z * n + i];
        out[i] = f2bf(v);
    }
}

#ifndef RT_EMU   // host side: launches and cuBLASLt
static int n_sms(void) {
    int dev = 0, sms = 132;
    if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    return sms > 0 ? sms : 132;
}

extern "C" int fp8_gemm_splitk_plan(int64_t M, int64_t N, int64_t K) {
    int64_t ctas = ((M + GB_M - 1) / GB_M) * ((N + GB_N - 1) / GB_N), nb = K / 128;
    int64_t want = n_sms() / ctas;                      // one wave, one CTA per SM (175 registers)
    int64_t most = nb / 4;                              // at least 4 K blocks per split
    int64_t s = want < most ? want : most;
    return (int)(s < 1 ? 1 : s > 32 ? 32 : s);
}

extern "C" size_t fp8_gemm_splitk_workspace_bytes(int64_t M, int64_t N, int splits) {
    return splits > 1 ? (size_t)splits * (size_t)M * (size_t)N * sizeof(float) : 0;
}

extern "C" int fp8_gemm_dense_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                                   int64_t M, int64_t N, int64_t K, int splits, void *ws, size_t ws_bytes,
                                   uint16_t *out, void *stream) {
    if (K <= 0 || K % 128) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    if (M < 0 || N <= 0 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || splits < 1)
        return rt_fail(RT_EINVAL, "fp8 gemm: bad shape %lld × %lld × %lld, %d splits", (long long)M, (long long)N,
                       (long long)K, splits);
    if (!M) return 0;
    int64_t kbs;
    splits = gb_splits(K / 128, splits, &kbs);
    if (splits > 1 && ws_bytes < fp8_gemm_splitk_workspace_bytes(M, N, splits))
        return rt_fail(RT_EINVAL, "fp8 gemm: split-K workspace %zu bytes, %zu needed", ws_bytes,
                       fp8_gemm_splitk_workspace_bytes(M, N, splits));
    int64_t mt = (M + GB_M - 1) / GB_M;
    if (mt > 65535) return rt_fail(RT_EINVAL, "fp8 gemm: %lld m-tiles exceed the grid", (long long)mt);
    size_t smem = GB_STAGES * GB_STAGE;
    RT_CUDA_TRY(smem_attr(k_gemm_grouped, (int)smem, (cudaStream_t)stream));
    dim3 grid((unsigned)((N + GB_N - 1) / GB_N), (unsigned)mt, (unsigned)splits);
    k_gemm_grouped<<<grid, 256, smem, (cudaStream_t)stream>>>(a, a_scale, w, w_scale, NULL, 1, (int)M, (int)N, (int)K,
                                                             out, splits > 1 ? (float *)ws : NULL, (int)kbs);
    RT_CUDA_LAUNCHED();
    if (splits > 1) {
        k_splitk_sum<<<grid_for((size_t)(M * N)), 256, 0, (cudaStream_t)stream>>>((const float *)ws, splits,
                                                                                (size_t)(M * N), out);
        RT_CUDA_LAUNCHED();
    }
    return 0;
}

// ---- cuBLASLt: block-scaled FP8 (dense) and the bf16 fallback ---------------------------
// Row-major out[M, N] = x[M, K]·W[N, K]ᵀ is column-major outᵀ[N, M] = op(A)·op(B) with A = W
// seen as a K×N column-major matrix (ld K, op T) and B = x as K×M column-major (ld K, op N).
// Scales: W's 128×128 block scales, BLK128x128_32F, K-major: [ceil(N/128)][K/128] row-major
// (the checkpoint's weight_scale_inv), K/128 a multiple of 4; x's VEC128_32F scales are
// M-major: [K/128][M] (fp8_act_quant_cuda with scale_t = 1). cuBLASLt needs M, N multiples
// of 4 here.

struct fp8_lt {
    cublasLtHandle_t lt;
    void *ws;
    size_t ws_bytes;
};

extern "C" int fp8_gemm_lt_create(fp8_lt **out) {
    *out = NULL;
    fp8_lt *h = (fp8_lt *)calloc(1, sizeof *h);
    if (!h) return RT_ENOMEM;
    h->ws_bytes = 32u << 20;
    cublasStatus_t s = cublasLtCreate(&h->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        free(h);
        return rt_fail(RT_EINTERNAL, "cublasLtCreate: status %d", (int)s);
    }
    cudaError_t e = cudaMalloc(&h->ws, h->ws_bytes);
    if (e != cudaSuccess) {
        cublasLtDestroy(h->lt);
        free(h);
        return rt_fail(RT_ENOMEM, "cuBLASLt workspace: %s", cudaGetErrorString(e));
    }
    *out = h;
    return 0;
}

extern "C" void fp8_gemm_lt_free(fp8_lt *h) {
    if (!h) return;
    cudaFree(h->ws);
    cublasLtDestroy(h->lt);
    free(h);
}

// One matmul: descriptors, the heuristic's first algorithm, run. Everything is destroyed on
// every path (cleanup below).
static int lt_run(fp8_lt *h, cudaDataType_t in_t, const void *a_w, const void *b_x, const float *w_scale,
                  const float *x_scale, int64_t M, int64_t N, int64_t K, cudaDataType_t out_t, void *out,
                  cudaStream_t stream) {
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t st;
    int rc = 0, found = 0;
    cublasLtMatmulHeuristicResult_t heur;
    const cublasOperation_t opt = CUBLAS_OP_T, opn = CUBLAS_OP_N;
    const float alpha = 1.0f, beta = 0.0f;
#define LT(call)                                                                                    \
    do {                                                                                            \
        st = (call);                                                                                \
        if (st != CUBLAS_STATUS_SUCCESS) {                                                          \
            rc = rt_fail(RT_EINTERNAL, "%s: cuBLASLt status %d (M %lld, N %lld, K %lld)", #call,    \
                         (int)st, (long long)M, (long long)N, (long long)K);                        \
            goto done;                                                                              \
        }                                                                                           \
    } while (0)
    LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opt, sizeof opt));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn));
    if (in_t == CUDA_R_8F_E4M3) {
        cublasLtMatmulMatrixScale_t ma = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
        cublasLtMatmulMatrixScale_t mb = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &ma, sizeof ma));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mb, sizeof mb));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof w_scale));
        LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof x_scale));
    }
    LT(cublasLtMatrixLayoutCreate(&la, in_t, (uint64_t)K, (uint64_t)N, K));
    LT(cublasLtMatrixLayoutCreate(&lb, in_t, (uint64_t)K, (uint64_t)M, K));
    LT(cublasLtMatrixLayoutCreate(&ld, out_t, (uint64_t)N, (uint64_t)M, N));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &h->ws_bytes,
                                            sizeof h->ws_bytes));
    LT(cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &heur, &found));
    if (!found) {
        rc = rt_fail(RT_EUNSUPPORTED, "cuBLASLt has no %s algorithm for M %lld, N %lld, K %lld on this device",
                     in_t == CUDA_R_8F_E4M3 ? "block-scaled FP8" : "bf16", (long long)M, (long long)N, (long long)K);
        goto done;
    }
    LT(cublasLtMatmul(h->lt, desc, &alpha, a_w, la, b_x, lb, &beta, out, ld, out, ld, &heur.algo, h->ws, h->ws_bytes,
                      stream));
#undef LT
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return rc;
}

extern "C" int fp8_gemm_lt(fp8_lt *h, const uint8_t *a, const float *a_scale_t, const uint8_t *w,
                           const float *w_scale, int64_t M, int64_t N, int64_t K, uint16_t *out, void *stream) {
    if (K <= 0 || K % 512)
        return rt_fail(RT_EINVAL, "fp8 cuBLASLt gemm: K = %lld must be a multiple of 512 (K/128 a multiple of 4)",
                       (long long)K);
    if (M <= 0 || N <= 0 || M % 4 || N % 4)
        return rt_fail(RT_EINVAL, "fp8 cuBLASLt gemm: M = %lld and N = %lld must be positive multiples of 4",
                       (long long)M, (long long)N);
    return lt_run(h, CUDA_R_8F_E4M3, w, a, w_scale, a_scale_t, M, N, K, CUDA_R_16BF, out, (cudaStream_t)stream);
}

extern "C" int bf16_gemm_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K,
                              uint16_t *out, void *stream) {
    if (M <= 0 || N <= 0 || K <= 0)
        return rt_fail(RT_EINVAL, "bf16 gemm: bad shape %lld × %lld × %lld", (long long)M, (long long)N, (long long)K);
    return lt_run(h, CUDA_R_16BF, w, x, NULL, NULL, M, N, K, CUDA_R_16BF, out, (cudaStream_t)stream);
}

extern "C" int bf16_gemm_f32_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K,
                                  float *out, void *stream) {
    if (M <= 0 || N <= 0 || K <= 0)
        return rt_fail(RT_EINVAL, "bf16 gemm: bad shape %lld × %lld × %lld", (long long)M, (long long)N, (long long)K);
    return lt_run(h, CUDA_R_16BF, w, x, NULL, NULL, M, N, K, CUDA_R_32F, out, (cudaStream_t)stream);
}

extern "C" int bf16_gemm_batched_cuda(fp8_lt *h, int w_trans, const uint16_t *x, int64_t ldx, int64_t sx,
                                      const uint16_t *w, int64_t ldw, int64_t sw, uint16_t *out, int64_t ldo,
                                      int64_t so, int64_t M, int64_t N, int64_t K, int64_t batch, void *stream) {
    if (M <= 0 || N <= 0 || K <= 0 || batch <= 0 || batch > INT32_MAX)
        return rt_fail(RT_EINVAL, "bf16 batched gemm: bad shape %lld × %lld × %lld × %lld", (long long)batch,
                       (long long)M, (long long)N, (long long)K);
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, ld = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t st;
    int rc = 0, found = 0;
    int32_t bc = (int32_t)batch;
    cublasLtMatmulHeuristicResult_t heur;
    const cublasOperation_t opa = w_trans ? CUBLAS_OP_T : CUBLAS_OP_N, opn = CUBLAS_OP_N;
    const float alpha = 1.0f, beta = 0.0f;
#define LT(call)                                                                                    \
    do {                                                                                            \
        st = (call);                                                                                \
        if (st != CUBLAS_STATUS_SUCCESS) {                                                          \
            rc = rt_fail(RT_EINTERNAL, "%s: cuBLASLt status %d", #call, (int)st);                   \
            goto done;                                                                              \
        }                                                                                           \
    } while (0)
    LT(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    LT(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opn, sizeof opn));
    if (w_trans) LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, ldw));
    else LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, (uint64_t)N, (uint64_t)K, ldw));
    LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, ldx));
    LT(cublasLtMatrixLayoutCreate(&ld, CUDA_R_16BF, (uint64_t)N, (uint64_t)M, ldo));
    LT(cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT(cublasLtMatrixLayoutSetAttribute(lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT(cublasLtMatrixLayoutSetAttribute(ld, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT(cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sw, sizeof sw));
    LT(cublasLtMatrixLayoutSetAttribute(lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sx, sizeof sx));
    LT(cublasLtMatrixLayoutSetAttribute(ld, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &so, sizeof so));
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &h->ws_bytes,
                                            sizeof h->ws_bytes));
    LT(cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &heur, &found));
    if (!found) {
        rc = rt_fail(RT_EUNSUPPORTED, "cuBLASLt has no batched bf16 algorithm for %lld × %lld × %lld",
                     (long long)M, (long long)N, (long long)K);
        goto done;
    }
    LT(cublasLtMatmul(h->lt, desc, &alpha, w, la, x, lb, &beta, out, ld, out, ld, &heur.algo, h->ws, h->ws_bytes,
                      (cudaStream_t)stream));
#undef LT
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return rc;
}
#endif  // RT_EMU
