// kernels/cuda/ds_norm.cu — the teacher's RMSNorm (with the fused residual add) and
// DeepSeek's interleaved YaRN rope on bf16 rows. Contract in kernels/fp8.h (CUDA section);
// CPU twins: rmsnorm_fwd (kernels/cpu/norm.c) and yarn_tables + yarn_rope_apply
// (kernels/cpu/yarn.c).
#include "kernels/cuda/ds_common.cuh"
#include "kernels/fp8.h"

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

// One warp per vector; lane l rotates pairs l, l+32, … (≤ 8: dim ≤ 512), reading them all
// before writing (the output is de-interleaved, so the rotation is not pair-local in place).
__global__ static void k_rope(uint16_t *__restrict__ x, int64_t T, int64_t row_stride, int64_t H,
                              int64_t vec_stride, int half, const int32_t *__restrict__ pos,
                              const float *__restrict__ inv_freq, float cs_scale) {
    int lane = threadIdx.x & 31;
    for (int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5; wid < T * H;
         wid += ((int64_t)gridDim.x * blockDim.x) >> 5) {
    int64_t t = wid / H, h = wid % H;
    uint16_t *v = x + t * row_stride + h * vec_stride;
    float a[8], b[8];
    float p = (float)pos[t];
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int i = lane + 32 * k;
        if (i < half) {
            uint32_t pr = *reinterpret_cast<const uint32_t *>(v + 2 * i);
            a[k] = bf2f((uint16_t)pr);
            b[k] = bf2f((uint16_t)(pr >> 16));
        }
    }
    __syncwarp();
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int i = lane + 32 * k;
        if (i < half) {
            float ang = p * inv_freq[i];
            float c = cosf(ang) * cs_scale, s = sinf(ang) * cs_scale;
            v[i] = f2bf(a[k] * c - b[k] * s);
            v[i + half] = f2bf(b[k] * c + a[k] * s);
        }
    }
    __syncwarp();
    }
}

#ifndef RT_EMU   // host side
extern "C" int ds_rope_cuda(uint16_t *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                            const int32_t *pos, const float *inv_freq, float cs_scale, void *stream) {
    if (dim <= 0 || dim % 2 || dim > 512 || T < 0 || H <= 0)
        return rt_fail(RT_EINVAL, "rope on the GPU: dim %lld (even, ≤ 512), %lld rows × %lld heads", (long long)dim,
                       (long long)T, (long long)H);
    if (!T) return 0;
    k_rope<<<grid_for((size_t)(T * H) * 32, 256), 256, 0, (cudaStream_t)stream>>>(x, T, row_stride, H, vec_stride,
                                                                                (int)(dim / 2), pos, inv_freq,
                                                                                cs_scale);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
