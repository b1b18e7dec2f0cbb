// kernels/cuda/ds_common.cuh — shared by the DeepSeek teacher kernels (kernels/cuda/ds_*.cu,
// fp8_gemm.cu): common.cuh (status macros, bf16 bits, warp reductions) plus the e4m3
// conversions and launch helpers. Header-only; no state.
// Under -DRT_EMU (tests/emu/cuda_emu.h, the CPU warp emulator) dynamic shared memory comes from
// the emulator (DS_DYN_SMEM); each kernel file swaps its PTX wrappers for the emulator's and
// leaves its host launch code out.
#ifndef RT_KERNELS_CUDA_DS_COMMON_CUH
#define RT_KERNELS_CUDA_DS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "core/status.h"
#include "kernels/cuda/common.cuh"

namespace ds {

// The bf16 bit helpers and warp reductions are common.cuh's.
using rtk::bf2f;
using rtk::f2bf;
using rtk::pack_bf2;
using rtk::warp_max;
using rtk::warp_sum;
using rtk::warp_sum_d;

// e4m3fn, round to nearest even, saturating to ±448 (kernels/fp8.h's fp8_from_f32).
__device__ __forceinline__ uint8_t f2fp8(float f) {
    return (uint8_t)__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
}
__device__ __forceinline__ float fp82f(uint8_t b) {
    __nv_fp8_e4m3 q;
    q.__x = b;
    return float(q);
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

// Dynamic shared memory of a kernel as `T *name`.
#ifdef RT_EMU
#define DS_DYN_SMEM(T, name) T *name = (T *)emu::dyn_smem()
#else
#define DS_DYN_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif

static inline unsigned grid_for(size_t n, unsigned per = 256) {
    size_t g = (n + per - 1) / per;
    return (unsigned)(g > 65535u * 16 ? 65535u * 16 : (g ? g : 1));
}

}  // namespace ds

#endif
