// kernels/cuda/act.cu — SwiGLU forward and backward on bf16 (contract in kernels/act.h, CPU
// twin kernels/cpu/act.c). One thread per 8 consecutive elements of a row (16-byte loads and
// stores), grid-stride over M·F/8; the math is the CPU's, in f32 (expf, not __expf), so the
// only differences from the twin are the bf16 roundings of the outputs. The row stride of
// g/u (ld_in) lets the trainer feed a fused gate_up GEMM output [M, 2F] without a copy.
#include "kernels/act.h"
#include "kernels/cuda/common.cuh"

using namespace rtk;

__global__ static void k_swiglu_fwd(uint16_t *a, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F,
                                    int64_t ld) {
    int64_t fv = F / 8, n = M * fv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / fv, c = (i % fv) * 8;
        float gg[8], uu[8], o[8];
        unpack8(*(const uint4 *)(g + r * ld + c), gg);
        unpack8(*(const uint4 *)(u + r * ld + c), uu);
#pragma unroll
        for (int e = 0; e < 8; e++) o[e] = gg[e] / (1.0f + expf(-gg[e])) * uu[e];
        *(uint4 *)(a + r * F + c) = pack8(o);
    }
}

__global__ static void k_swiglu_bwd(uint16_t *dg, uint16_t *du, const uint16_t *da, const uint16_t *g,
                                    const uint16_t *u, int64_t M, int64_t F, int64_t ld) {
    int64_t fv = F / 8, n = M * fv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / fv, c = (i % fv) * 8;
        float gg[8], uu[8], d[8], og[8], ou[8];
        unpack8(*(const uint4 *)(g + r * ld + c), gg);
        unpack8(*(const uint4 *)(u + r * ld + c), uu);
        unpack8(*(const uint4 *)(da + r * F + c), d);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float s = 1.0f / (1.0f + expf(-gg[e]));
            ou[e] = d[e] * gg[e] * s;
            og[e] = d[e] * uu[e] * s * (1.0f + gg[e] * (1.0f - s));
        }
        *(uint4 *)(dg + r * ld + c) = pack8(og);
        *(uint4 *)(du + r * ld + c) = pack8(ou);
    }
}

#ifndef RT_EMU
static int check(int64_t F, int64_t ld) {
    if (F % 8 || ld % 8 || ld < F)
        return rt_fail(RT_EINVAL, "swiglu_cuda: F = %lld, ld_in = %lld (both multiples of 8, ld_in >= F)", (long long)F,
                       (long long)ld);
    return 0;
}

extern "C" int swiglu_fwd_cuda(uint16_t *a, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F, int64_t ld_in,
                               void *stream) {
    if (check(F, ld_in)) return RT_EINVAL;
    if (M <= 0 || F <= 0) return 0;
    k_swiglu_fwd<<<grid_1d((size_t)(M * F / 8), 256), 256, 0, (cudaStream_t)stream>>>(a, g, u, M, F, ld_in);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int swiglu_bwd_cuda(uint16_t *dg, uint16_t *du, const uint16_t *da, const uint16_t *g, const uint16_t *u,
                               int64_t M, int64_t F, int64_t ld_in, void *stream) {
    if (check(F, ld_in)) return RT_EINVAL;
    if (M <= 0 || F <= 0) return 0;
    k_swiglu_bwd<<<grid_1d((size_t)(M * F / 8), 256), 256, 0, (cudaStream_t)stream>>>(dg, du, da, g, u, M, F, ld_in);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
