// kernels/cuda/ds_common.cuh — shared by the DeepSeek teacher kernels (kernels/cuda/ds_*.cu,
// fp8_gemm.cu): the status-checking macros (CUDA, cuBLAS), bf16 bit helpers, warp
// reductions and the e4m3 conversions. Header-only; no state.
#ifndef RT_KERNELS_CUDA_DS_COMMON_CUH
#define RT_KERNELS_CUDA_DS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "core/status.h"

#define DS_CUDA_TRY(call)                                                                               \
    do {                                                                                                \
        cudaError_t e_ = (call);                                                                        \
        if (e_ != cudaSuccess)                                                                          \
            return rt_fail(RT_EINTERNAL, "%s failed at %s:%d: %s", #call, __FILE__, __LINE__,           \
                           cudaGetErrorString(e_));                                                     \
    } while (0)

#define DS_CUBLAS_TRY(call)                                                                             \
    do {                                                                                                \
        cublasStatus_t s_ = (call);                                                                     \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                                \
            return rt_fail(RT_EINTERNAL, "%s failed at %s:%d: cuBLAS status %d", #call, __FILE__,       \
                           __LINE__, (int)s_);                                                          \
    } while (0)

#define DS_LAUNCHED() DS_CUDA_TRY(cudaGetLastError())

namespace ds {

__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
__device__ __forceinline__ uint16_t f2bf(float f) {
    __nv_bfloat16 b = __float2bfloat16_rn(f);
    return *reinterpret_cast<uint16_t *>(&b);
}
__device__ __forceinline__ uint32_t pack_bf2(float lo, float hi) {
    return (uint32_t)f2bf(lo) | ((uint32_t)f2bf(hi) << 16);
}
// e4m3fn, round to nearest even, saturating to ±448 (kernels/fp8.h's fp8_from_f32).
__device__ __forceinline__ uint8_t f2fp8(float f) {
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ float fp82f(uint8_t b) {
    __nv_fp8_e4m3 q;
    q.__x = b;
    return float(q);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Raise a kernel's dynamic shared memory limit, except while `stream` is being captured into a
// graph (the attribute call is not a stream operation; the first, eager call sets it).
template <typename K>
static inline cudaError_t smem_attr(K kernel, int bytes, cudaStream_t stream) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    cudaError_t e = cudaStreamIsCapturing(stream, &cs);
    if (e != cudaSuccess || cs != cudaStreamCaptureStatusNone) return e;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

static inline unsigned grid_for(size_t n, unsigned per = 256) {
    size_t g = (n + per - 1) / per;
    return (unsigned)(g > 65535u * 16 ? 65535u * 16 : (g ? g : 1));
}

}  // namespace ds

#endif
