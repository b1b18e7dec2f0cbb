// kernels/cuda/common.cuh — shared by every CUDA kernel file (kernels/cuda/*.cu): the
// status-checking macros (one per foreign status type: CUDA, cuBLAS), bf16 <-> f32 helpers
// on raw uint16_t bit patterns, 16-byte vector loads, and warp/block reductions.
// Header-only, device and host inline functions; no state.
#ifndef RT_KERNELS_CUDA_COMMON_CUH
#define RT_KERNELS_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "core/status.h"

#define RT_CUDA_TRY(call)                                                                               \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess)                                                                          \
            return rt_fail(RT_EINTERNAL, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,           \
                           cudaGetErrorString(e_));                                                     \
    } while (0)

// After a launch: the launch error (bad configuration), never a sync.
#define RT_CUDA_LAUNCHED() RT_CUDA_TRY(cudaGetLastError())

// cuBLAS / cuBLASLt statuses (the including file includes cublasLt.h).
#define RT_CUBLAS_TRY(call)                                                                             \
    do {                                                                                                \
        cublasStatus_t s_ = (call);                                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                \
            return rt_fail(RT_EINTERNAL, "%s failed at %s:%d: cuBLAS status %d", #call, __FILE__,       \
                           __LINE__, (int)s_);                                                          \
    } while (0)

namespace rtk {

__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t f2bf(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}
// Two f32 → one packed bf16x2 (lo in the low half), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf2(float lo, float hi) {
    __nv_bfloat162 b = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&b);
}

// 8 bf16 in one 16-byte vector.
struct __align__(16) bf8 { uint16_t v[8]; };
__device__ __forceinline__ void unpack8(const uint4 &u, float *f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ uint4 pack8(const float *f) {
    uint4 u;
    u.x = pack_bf2(f[0], f[1]);
    u.y = pack_bf2(f[2], f[3]);
    u.z = pack_bf2(f[4], f[5]);
    u.w = pack_bf2(f[6], f[7]);
    return u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, ≤ 1024) in a fixed tree order; every
// thread gets the result. sh: 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

static inline unsigned grid_1d(size_t n, unsigned threads, unsigned cap = 65535u * 16) {
    size_t g = (n + threads - 1) / threads;
    return (unsigned)(g > cap ? cap : (g ? g : 1));
}

}  // namespace rtk

#endif
