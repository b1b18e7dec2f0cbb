// kernels/cuda/norm.cu — RMSNorm fused with the residual add, forward and backward
// (contract in kernels/norm.h, CPU twin kernels/cpu/norm.c).
//
// Forward: one 256-thread block per row. Each thread owns NV ≤ 8 vectors of 8 bf16 (NV a
// template parameter picked from D, so registers match the row: D = 4096 → NV = 2)
// with 16-byte loads (vector j of thread t is t + 256·j, so a warp reads 512 contiguous bytes),
// kept in registers between the sum of squares and the output: one read of res and add,
// one write of res and y. The sum of squares is an f32 per-thread partial reduced in a fixed
// tree (block_sum). D ≤ 8·8·256 = 16384.
// Backward: a block handles ROWS = 16 consecutive rows (8192 rows: 512 blocks, ~4 per SM);
// per row it forms g = dy ⊙ w, the row dot Σ g·x̂, writes dres += rstd·(g − x̂·dot/D), and
// accumulates dy·x̂ per column in registers; at the end each block writes its column partials
// to ws [nblocks, D], which a second kernel sums per column in block order (deterministic, no
// atomics) into dw.
#include "kernels/cuda/common.cuh"
#include "kernels/norm.h"

#define NT 256
#define NV_MAX 8
#define ROWS 16

using namespace rtk;

template <int NV>
__global__ static void __launch_bounds__(NT) k_rms_fwd(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *res_in,
                                                       const uint16_t *add, const uint16_t *w, int64_t D, float eps) {
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    int nvec = (int)(D / 8);
    uint4 *rv = (uint4 *)(res + row * D);
    const uint4 *iv = (const uint4 *)(res_in + row * D);
    const uint4 *av = add ? (const uint4 *)(add + row * D) : NULL;
    const bool copy = !add && res != res_in;   // out of place without an addend: sum = x
    float x[NV][8];
    float ss = 0.f;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int v = threadIdx.x + j * NT;
        if (v < nvec) {
            uint4 raw = iv[v];
            unpack8(raw, x[j]);
            if (copy) rv[v] = raw;
            if (av) {
                float a[8];
                unpack8(av[v], a);
#pragma unroll
                for (int e = 0; e < 8; e++) x[j][e] += a[e];
                uint4 p = pack8(x[j]);
                rv[v] = p;
                unpack8(p, x[j]);   // the norm reads the stored (rounded) residual
            }
#pragma unroll
            for (int e = 0; e < 8; e++) ss += x[j][e] * x[j][e];
        }
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)D + eps);
    if (rstd && threadIdx.x == 0) rstd[row] = r;
    const uint4 *wv = (const uint4 *)w;
    uint4 *yv = (uint4 *)(y + row * D);
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int v = threadIdx.x + j * NT;
        if (v < nvec) {
            float ww[8], o[8];
            unpack8(wv[v], ww);
#pragma unroll
            for (int e = 0; e < 8; e++) o[e] = ww[e] * (x[j][e] * r);
            yv[v] = pack8(o);
        }
    }
}

// Per-head RMSNorm (Qwen3's q_norm / k_norm), in place: one warp per (row, head), each lane up
// to 8 bf16 of the head (hd ≤ 256) kept in registers between the sum of squares (f32, warp
// tree) and the write; y = w · (x · rstd) in the order of k_rms_fwd.
__global__ static void k_rms_heads(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w,
                                   float eps) {
    int64_t g = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    if (g >= T * H) return;   // whole warps leave together (blockDim a multiple of 32)
    uint4 *v = (uint4 *)(x + (g / H) * ld + (g % H) * hd);
    const bool mine = lane < hd / 8;
    float a[8];
    float ss = 0.f;
    if (mine) {
        unpack8(v[lane], a);
#pragma unroll
        for (int e = 0; e < 8; e++) ss += a[e] * a[e];
    }
    ss = warp_sum(ss);
    float r = rsqrtf(ss / (float)hd + eps);
    if (mine) {
        float ww[8], o[8];
        unpack8(((const uint4 *)w)[lane], ww);
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = ww[e] * (a[e] * r);
        v[lane] = pack8(o);
    }
}

#ifndef RT_EMU
extern "C" int rmsnorm_heads_fwd_cuda(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w,
                                      float eps, void *stream) {
    if (hd % 8 || hd > 256 || ld % 8)
        return rt_fail(RT_EINVAL, "rmsnorm_heads_fwd_cuda: head_dim %lld, row stride %lld (needs head_dim %% 8 == 0, "
                       "head_dim <= 256, stride %% 8 == 0)", (long long)hd, (long long)ld);
    if (T <= 0 || H <= 0) return 0;
    int64_t warps = T * H;
    k_rms_heads<<<(unsigned)((warps + 7) / 8), 256, 0, (cudaStream_t)stream>>>(x, ld, T, H, hd, w, eps);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int rmsnorm_residual_fwd_cuda(uint16_t *y, float *rstd, uint16_t *sum, const uint16_t *x,
                                         const uint16_t *add, const uint16_t *w, int64_t M, int64_t D, float eps,
                                         void *stream) {
    if (D % 8 || D > 8 * NV_MAX * NT) return rt_fail(RT_EINVAL, "rmsnorm_fwd_cuda: D = %lld (needs D %% 8 == 0, D <= %d)",
                                                 (long long)D, 8 * NV_MAX * NT);
    if (M <= 0) return 0;
    cudaStream_t st = (cudaStream_t)stream;
    int nv = (int)((D / 8 + NT - 1) / NT);
    if (nv <= 1) k_rms_fwd<1><<<(unsigned)M, NT, 0, st>>>(y, rstd, sum, x, add, w, D, eps);
    else if (nv <= 2) k_rms_fwd<2><<<(unsigned)M, NT, 0, st>>>(y, rstd, sum, x, add, w, D, eps);
    else if (nv <= 4) k_rms_fwd<4><<<(unsigned)M, NT, 0, st>>>(y, rstd, sum, x, add, w, D, eps);
    else k_rms_fwd<8><<<(unsigned)M, NT, 0, st>>>(y, rstd, sum, x, add, w, D, eps);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int rmsnorm_fwd_cuda(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *add, const uint16_t *w,
                                int64_t M, int64_t D, float eps, void *stream) {
    return rmsnorm_residual_fwd_cuda(y, rstd, res, res, add, w, M, D, eps, stream);
}

extern "C" size_t rmsnorm_bwd_cuda_ws_bytes(int64_t M, int64_t D) {
    return (size_t)((M + ROWS - 1) / ROWS) * (size_t)D * sizeof(float);
}
#endif

template <int NV>
__global__ static void __launch_bounds__(NT) k_rms_bwd(uint16_t *dres, float *part, const uint16_t *dy,
                                                       const uint16_t *x, const uint16_t *w, const float *rstd,
                                                       int64_t M, int64_t D) {
    __shared__ float sh[32];
    int nvec = (int)(D / 8);
    float wreg[NV][8], acc[NV][8];
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int v = threadIdx.x + j * NT;
#pragma unroll
        for (int e = 0; e < 8; e++) acc[j][e] = 0.f, wreg[j][e] = 0.f;
        if (v < nvec) unpack8(((const uint4 *)w)[v], wreg[j]);
    }
    int64_t r0 = (int64_t)blockIdx.x * ROWS, r1 = r0 + ROWS < M ? r0 + ROWS : M;
    for (int64_t row = r0; row < r1; row++) {
        float r = rstd[row];
        const uint4 *dyv = (const uint4 *)(dy + row * D), *xv = (const uint4 *)(x + row * D);
        float g[NV][8], xh[NV][8];
        float dot = 0.f;
#pragma unroll
        for (int j = 0; j < NV; j++) {
            int v = threadIdx.x + j * NT;
            if (v < nvec) {
                float d8[8];
                unpack8(dyv[v], d8);
                unpack8(xv[v], xh[j]);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    xh[j][e] *= r;
                    g[j][e] = d8[e] * wreg[j][e];
                    dot += g[j][e] * xh[j][e];
                    acc[j][e] += d8[e] * xh[j][e];
                }
            }
        }
        float mean = block_sum(dot, sh) / (float)D;
        uint4 *dv = (uint4 *)(dres + row * D);
#pragma unroll
        for (int j = 0; j < NV; j++) {
            int v = threadIdx.x + j * NT;
            if (v < nvec) {
                float o[8];
                unpack8(dv[v], o);
#pragma unroll
                for (int e = 0; e < 8; e++) o[e] += r * (g[j][e] - xh[j][e] * mean);
                dv[v] = pack8(o);
            }
        }
    }
    float *pv = part + (int64_t)blockIdx.x * D;
#pragma unroll
    for (int j = 0; j < NV; j++) {
        int v = threadIdx.x + j * NT;
        if (v < nvec) {
#pragma unroll
            for (int e = 0; e < 8; e++) pv[(int64_t)v * 8 + e] = acc[j][e];
        }
    }
}

// dw[d] += Σ_b part[b][d], b in order.
__global__ static void k_rms_dw(float *dw, const float *part, int64_t nb, int64_t D) {
    int64_t d = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (d >= D) return;
    float s = 0.f;
    for (int64_t b = 0; b < nb; b++) s += part[b * D + d];
    dw[d] += s;
}

#ifndef RT_EMU
extern "C" int rmsnorm_bwd_cuda(uint16_t *dres, float *dw, const uint16_t *dy, const uint16_t *x, const uint16_t *w,
                                const float *rstd, int64_t M, int64_t D, void *ws, void *stream) {
    if (D % 8 || D > 8 * NV_MAX * NT) return rt_fail(RT_EINVAL, "rmsnorm_bwd_cuda: D = %lld (needs D %% 8 == 0, D <= %d)",
                                                 (long long)D, 8 * NV_MAX * NT);
    if (M <= 0) return 0;
    int64_t nb = (M + ROWS - 1) / ROWS;
    cudaStream_t st = (cudaStream_t)stream;
    int nv = (int)((D / 8 + NT - 1) / NT);
    float *part = (float *)ws;
    if (nv <= 1) k_rms_bwd<1><<<(unsigned)nb, NT, 0, st>>>(dres, part, dy, x, w, rstd, M, D);
    else if (nv <= 2) k_rms_bwd<2><<<(unsigned)nb, NT, 0, st>>>(dres, part, dy, x, w, rstd, M, D);
    else if (nv <= 4) k_rms_bwd<4><<<(unsigned)nb, NT, 0, st>>>(dres, part, dy, x, w, rstd, M, D);
    else k_rms_bwd<8><<<(unsigned)nb, NT, 0, st>>>(dres, part, dy, x, w, rstd, M, D);
    RT_CUDA_LAUNCHED();
    k_rms_dw<<<(unsigned)((D + 255) / 256), 256, 0, (cudaStream_t)stream>>>(dw, (const float *)ws, nb, D);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
