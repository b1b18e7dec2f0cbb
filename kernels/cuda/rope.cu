// kernels/cuda/rope.cu — rotary embeddings in place on bf16 (contract in kernels/rope.h, CPU
// twin kernels/cpu/rope.c). One thread per (token, head, group of 8 frequency pairs): it
// loads x[i..i+7] and x[i+h..i+h+7] as two 16-byte vectors, forms the 8 angles pos·inv_freq
// in f32 (the CPU's rounding) and their sincosf (full-precision, not the __sinf intrinsic),
// rotates and stores. Heads whose half dimension is not a multiple of 8 take a scalar path
// (one pair per thread). Memory-bound: one read and one write of x; no tables. Rows may have
// a stride (rope_apply_cuda_ld: q and k in place inside a fused QKV GEMM output).
#include "kernels/cuda/common.cuh"
#include "kernels/rope.h"

using namespace rtk;

__global__ static void k_rope8(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T,
                               int64_t H, int half, float sgn) {
    int groups = half / 8;
    int64_t n = T * H * groups;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int gidx = (int)(i % groups);
        int64_t th = i / groups, t = th / H;
        uint16_t *base = x + t * ld + (th % H) * (2 * half);
        uint4 *pa = (uint4 *)(base + gidx * 8), *pb = (uint4 *)(base + half + gidx * 8);
        float a[8], b[8], ya[8], yb[8];
        unpack8(*pa, a);
        unpack8(*pb, b);
        float p = (float)pos[t];
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float s, c;
            sincosf(p * inv_freq[gidx * 8 + e], &s, &c);
            s *= sgn;
            ya[e] = a[e] * c - b[e] * s;
            yb[e] = b[e] * c + a[e] * s;
        }
        *pa = pack8(ya);
        *pb = pack8(yb);
    }
}

__global__ static void k_rope1(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T,
                               int64_t H, int half, float sgn) {
    int64_t n = T * H * half;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        int64_t th = i / half, t = th / H;
        uint16_t *base = x + t * ld + (th % H) * (2 * half);
        float a = bf2f(base[j]), b = bf2f(base[j + half]), s, c;
        sincosf((float)pos[t] * inv_freq[j], &s, &c);
        s *= sgn;
        base[j] = f2bf(a * c - b * s);
        base[j + half] = f2bf(b * c + a * s);
    }
}

#ifndef RT_EMU
extern "C" int rope_apply_cuda_ld(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T,
                                  int64_t H, int64_t hd, bool inverse, void *stream) {
    if (hd % 2 || hd > 256 || ld < H * hd)
        return rt_fail(RT_EINVAL, "rope_apply_cuda: head_dim %lld, row stride %lld", (long long)hd, (long long)ld);
    if (T <= 0 || H <= 0) return 0;
    int half = (int)(hd / 2);
    float sgn = inverse ? -1.f : 1.f;
    if (half % 8 == 0 && ld % 8 == 0)
        k_rope8<<<grid_1d((size_t)(T * H * (half / 8)), 256), 256, 0, (cudaStream_t)stream>>>(x, ld, pos, inv_freq, T, H,
                                                                                              half, sgn);
    else
        k_rope1<<<grid_1d((size_t)(T * H * half), 256), 256, 0, (cudaStream_t)stream>>>(x, ld, pos, inv_freq, T, H, half,
                                                                                        sgn);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int rope_apply_cuda(uint16_t *x, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H, int64_t hd,
                               bool inverse, void *stream) {
    return rope_apply_cuda_ld(x, H * hd, pos, inv_freq, T, H, hd, inverse, stream);
}
#endif
