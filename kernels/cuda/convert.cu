// kernels/cuda/convert.cu — CUDA twins of kernels/cpu/convert.c (contract in kernels/convert.h).
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "kernels/convert.h"
#include "core/status.h"
#include "kernels/cuda/common.cuh"


__global__ static void k_bf16_to_f32(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

__global__ static void k_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        __nv_bfloat16 b = __float2bfloat16_rn(src[i]);
        dst[i] = *reinterpret_cast<uint16_t *>(&b);
    }
}

// One thread per element; the scale is read once per element from L1/L2 (blocks are 128 wide).
__global__ static void k_fp8_block_dequant(const uint8_t *w, const float *scale, int64_t rows, int64_t cols, int br,
                                           int bc, int64_t scols, uint16_t *out) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int64_t r = i / cols, c = i % cols;
        __nv_fp8_e4m3 q;
        q.__x = w[i];
        float v = float(q) * scale[(r / br) * scols + c / bc];
        __nv_bfloat16 b = __float2bfloat16_rn(v);
        out[i] = *reinterpret_cast<uint16_t *>(&b);
    }
}

static unsigned grid_for(size_t n) {
    size_t g = (n + 255) / 256;
    return (unsigned)(g > 65535 * 8 ? 65535 * 8 : (g ? g : 1));
}

extern "C" int cvt_bf16_to_f32_cuda(const uint16_t *src, float *dst, size_t n, void *stream) {
    k_bf16_to_f32<<<grid_for(n), 256, 0, (cudaStream_t)stream>>>(src, dst, n);
    RT_CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cvt_f32_to_bf16_cuda(const float *src, uint16_t *dst, size_t n, void *stream) {
    k_f32_to_bf16<<<grid_for(n), 256, 0, (cudaStream_t)stream>>>(src, dst, n);
    RT_CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int fp8_block_dequant_cuda(const uint8_t *w, const float *scale_inv, int64_t rows, int64_t cols, int br,
                                      int bc, uint16_t *out_bf16, void *stream) {
    int64_t scols = (cols + bc - 1) / bc;
    k_fp8_block_dequant<<<grid_for((size_t)rows * cols), 256, 0, (cudaStream_t)stream>>>(w, scale_inv, rows, cols, br,
                                                                                       bc, scols, out_bf16);
    RT_CUDA_TRY(cudaGetLastError());
    return 0;
}
