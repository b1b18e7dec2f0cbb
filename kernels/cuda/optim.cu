// kernels/cuda/optim.cu — AdamW on f32 master weights, the sum of squares behind the global
// gradient norm, and scaling (contract in kernels/optim.h, CPU twin kernels/cpu/optim.c).
//
// AdamW: one thread per 4 parameters (16-byte loads of p, g, m, v; the bf16 copy written as
// 8 bytes), grid-stride; a scalar kernel takes unaligned pointers. The arithmetic is the
// CPU twin's, operation for operation, with the _rn intrinsics so nvcc cannot contract a
// multiply and an add into an FMA (the x86 twin, built without -mfma and with -std=c11,
// has none): the result is bit-identical to adamw_step on g·grad_scale.
// Sum of squares: one 256-thread block per fixed block of 65536 values (each thread sums its
// strided share in double, then a fixed tree), the partials summed by one block in a fixed
// order: deterministic, and within a few double ulps of the CPU's sequential sum.
#include <math.h>

#include "kernels/cuda/common.cuh"
#include "kernels/optim.h"

using namespace rtk;

#define SUMSQ_BLOCK 65536

struct adam_k {
    float decay, b1c, b2, b2c, bc2_sqrt, eps, neg_step, gs;
};

__device__ __forceinline__ float adam_one(float &p, float g, float &m, float &v, const adam_k &k) {
    if (k.gs != 1.0f) g = __fmul_rn(g, k.gs);
    float w = __fmul_rn(p, k.decay);
    float mm = __fadd_rn(m, __fmul_rn(k.b1c, __fsub_rn(g, m)));
    float vv = __fadd_rn(__fmul_rn(v, k.b2), __fmul_rn(k.b2c, __fmul_rn(g, g)));
    float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vv), k.bc2_sqrt), k.eps);
    p = __fadd_rn(w, __fmul_rn(k.neg_step, __fdiv_rn(mm, denom)));
    m = mm;
    v = vv;
    return p;
}

__global__ static void k_adamw4(float *p, uint16_t *pb, const float *g, float *m, float *v, size_t n4, adam_k k) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += (size_t)gridDim.x * blockDim.x) {
        float4 P = ((float4 *)p)[i], G = ((const float4 *)g)[i], Mm = ((float4 *)m)[i], V = ((float4 *)v)[i];
        adam_one(P.x, G.x, Mm.x, V.x, k);
        adam_one(P.y, G.y, Mm.y, V.y, k);
        adam_one(P.z, G.z, Mm.z, V.z, k);
        adam_one(P.w, G.w, Mm.w, V.w, k);
        ((float4 *)p)[i] = P;
        ((float4 *)m)[i] = Mm;
        ((float4 *)v)[i] = V;
        if (pb) ((uint2 *)pb)[i] = make_uint2(pack_bf2(P.x, P.y), pack_bf2(P.z, P.w));
    }
}

__global__ static void k_adamw1(float *p, uint16_t *pb, const float *g, float *m, float *v, size_t n, adam_k k) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float P = p[i], Mm = m[i], V = v[i];
        adam_one(P, g[i], Mm, V, k);
        p[i] = P;
        m[i] = Mm;
        v[i] = V;
        if (pb) pb[i] = f2bf(P);
    }
}

#ifndef RT_EMU
static bool al16(const void *q) { return ((uintptr_t)q & 15) == 0; }

extern "C" int adamw_step_cuda(float *p, uint16_t *p_bf16, const float *g, float *m, float *v, size_t n,
                               const adamw_hparams *h, float grad_scale, void *stream) {
    if (!n) return 0;
    // the scalars exactly as adamw_step forms them
    double bc1 = 1.0 - pow(h->beta1, (double)h->step), bc2 = 1.0 - pow(h->beta2, (double)h->step);
    adam_k k = {(float)(1.0 - h->lr * h->weight_decay), (float)(1.0 - h->beta1), (float)h->beta2,
                (float)(1.0 - h->beta2), (float)sqrt(bc2), (float)h->eps, (float)(-(h->lr / bc1)), grad_scale};
    cudaStream_t st = (cudaStream_t)stream;
    size_t n4 = n / 4, done = 0;
    if (al16(p) && al16(g) && al16(m) && al16(v) && (!p_bf16 || ((uintptr_t)p_bf16 & 7) == 0) && n4) {
        k_adamw4<<<grid_1d(n4, 256), 256, 0, st>>>(p, p_bf16, g, m, v, n4, k);
        RT_CUDA_LAUNCHED();
        done = n4 * 4;
    }
    if (done < n) {
        k_adamw1<<<grid_1d(n - done, 256), 256, 0, st>>>(p + done, p_bf16 ? p_bf16 + done : NULL, g + done, m + done,
                                                         v + done, n - done, k);
        RT_CUDA_LAUNCHED();
    }
    return 0;
}

extern "C" size_t vec_sumsq_cuda_ws_bytes(size_t n) {
    return ((n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK + 1) * sizeof(double);
}
#endif

__device__ __forceinline__ double block_sum_d(double s, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    s = warp_sum_d(s);
    if (lane == 0) sh[warp] = s;
    __syncthreads();
    s = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(s);
}

__global__ static void __launch_bounds__(256) k_sumsq_part(double *part, const float *x, size_t n) {
    __shared__ double sh[32];
    size_t i0 = (size_t)blockIdx.x * SUMSQ_BLOCK, i1 = i0 + SUMSQ_BLOCK < n ? i0 + SUMSQ_BLOCK : n;
    double s = 0;
    for (size_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += (double)x[i] * (double)x[i];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ static void __launch_bounds__(256) k_sumsq_total(double *out, bool acc, const double *part, size_t nb) {
    __shared__ double sh[32];
    double s = 0;
    for (size_t b = threadIdx.x; b < nb; b += blockDim.x) s += part[b];
    s = block_sum_d(s, sh);
    if (threadIdx.x == 0) *out = acc ? *out + s : s;
}

#ifndef RT_EMU
extern "C" int vec_sumsq_cuda(double *out, bool accumulate, const float *x, size_t n, void *ws, void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    size_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double *part = (double *)ws;
    for (size_t b0 = 0; b0 < nb; b0 += 65535) {   // the grid's x limit is far above this, but stay portable
        size_t cnt = nb - b0 < 65535 ? nb - b0 : 65535;
        k_sumsq_part<<<(unsigned)cnt, 256, 0, st>>>(part + b0, x + b0 * SUMSQ_BLOCK, n - b0 * SUMSQ_BLOCK);
        RT_CUDA_LAUNCHED();
    }
    k_sumsq_total<<<1, 256, 0, st>>>(out, accumulate, part, nb);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif

__global__ static void k_scale(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

#ifndef RT_EMU
extern "C" int vec_scale_cuda(float *x, size_t n, float s, void *stream) {
    if (!n) return 0;
    k_scale<<<grid_1d(n, 256), 256, 0, (cudaStream_t)stream>>>(x, n, s);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
