// kernels/cuda/ds_norm.cu — the teacher's RMSNorm (f32 weight, strided bf16 rows, the fused
// residual add). Contract in kernels/norm.h (ds_rmsnorm_cuda, beside the student's
// rmsnorm_fwd_cuda and why the two differ); CPU twin: rmsnorm_fwd (kernels/cpu/norm.c).
#include "kernels/cuda/ds_common.cuh"
#include "kernels/norm.h"

using namespace ds;

#define NM_THREADS 256

// One block per row: x ← x + res (bf16, written back) when res is given, then
// y = w ⊙ x · rsqrt(mean(x²) + eps). Sum of squares in f32 per thread, tree-reduced.
__global__ static void k_rmsnorm(uint16_t *__restrict__ x, int64_t ldx, const uint16_t *__restrict__ res,
                                 const float *__restrict__ w, int64_t D, float eps, uint16_t *__restrict__ y,
                                 int64_t ldy) {
    __shared__ float red[NM_THREADS / 32];
    int64_t r = blockIdx.x;
    uint16_t *xr = x + r * ldx;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < D; j += NM_THREADS) {
        float v = bf2f(xr[j]);
        if (res) {
            uint16_t b = f2bf(v + bf2f(res[r * ldx + j]));
            xr[j] = b;
            v = bf2f(b);
        }
        ss += v * v;
    }
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < NM_THREADS / 32; i++) tot += red[i];
    float rstd = rsqrtf(tot / (float)D + eps);
    for (int64_t j = threadIdx.x; j < D; j += NM_THREADS) y[r * ldy + j] = f2bf(w[j] * (bf2f(xr[j]) * rstd));
}

#ifndef RT_EMU   // host side
extern "C" int ds_rmsnorm_cuda(uint16_t *x, int64_t ldx, const uint16_t *res, const float *w, int64_t M, int64_t D,
                               float eps, uint16_t *y, int64_t ldy, void *stream) {
    if (D <= 0 || M < 0 || M > 0x7fffffff || ldx < D || ldy < D)
        return rt_fail(RT_EINVAL, "rmsnorm: %lld rows of %lld (strides %lld, %lld)", (long long)M, (long long)D,
                       (long long)ldx, (long long)ldy);
    if (!M) return 0;
    k_rmsnorm<<<(unsigned)M, NM_THREADS, 0, (cudaStream_t)stream>>>(x, ldx, res, w, D, eps, y, ldy);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
