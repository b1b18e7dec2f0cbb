// kernels/cuda/ds_rope.cu — DeepSeek's interleaved YaRN rope on bf16 rows. Contract in
// kernels/rope.h (ds_rope_cuda); CPU twin: yarn_tables + yarn_rope_apply (kernels/cpu/yarn.c).
#include "kernels/cuda/ds_common.cuh"
#include "kernels/rope.h"

using namespace ds;

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
