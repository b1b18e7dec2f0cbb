// kernels/cuda/embed.cu — embedding gather and its deterministic scatter-add (contract in
// kernels/embed.h, CPU twin kernels/cpu/embed.c).
// Forward: one thread per 16-byte vector of an output row (grid-stride), a pure copy.
// Backward: the host plan (embed_bwd_plan) groups the batch's tokens by id; one block per
// (distinct id, 2048-column slice): each thread owns 8 columns, starts from the table row's
// current f32 value and adds that id's dout rows in token order — exactly the CPU twin's
// order of additions, so the result is bit-identical to it for the same (bf16) inputs, and no
// two blocks ever write the same element (no atomics).
#include "kernels/cuda/common.cuh"
#include "kernels/embed.h"

using namespace rtk;

__global__ static void k_embed_fwd(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D) {
    int64_t dv = D / 8, n = M * dv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / dv, c = i % dv;
        ((uint4 *)out)[r * dv + c] = ((const uint4 *)table)[(int64_t)ids[r] * dv + c];
    }
}

// Rows [v0, v0 + nv) of the vocabulary only; ids outside give zero rows.
__global__ static void k_embed_fwd_rows(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D,
                                        int64_t v0, int64_t nv) {
    int64_t dv = D / 8, n = M * dv;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / dv, c = i % dv, row = (int64_t)ids[r] - v0;
        ((uint4 *)out)[r * dv + c] = row >= 0 && row < nv ? ((const uint4 *)table)[row * dv + c] : make_uint4(0, 0, 0, 0);
    }
}

__global__ static void k_embed_bwd(float *dtable, const uint16_t *dout, const int32_t *ids, const int32_t *order,
                                   const int32_t *seg, int64_t D) {
    int s0 = seg[blockIdx.x], s1 = seg[blockIdx.x + 1];
    int64_t c = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * 8;
    if (c >= D) return;
    int64_t id = ids[order[s0]];
    float4 *dst = (float4 *)(dtable + id * D + c);
    float acc[8];
    float4 lo = dst[0], hi = dst[1];
    acc[0] = lo.x, acc[1] = lo.y, acc[2] = lo.z, acc[3] = lo.w;
    acc[4] = hi.x, acc[5] = hi.y, acc[6] = hi.z, acc[7] = hi.w;
    for (int s = s0; s < s1; s++) {
        float v[8];
        unpack8(*(const uint4 *)(dout + (int64_t)order[s] * D + c), v);
#pragma unroll
        for (int e = 0; e < 8; e++) acc[e] += v[e];
    }
    dst[0] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    dst[1] = make_float4(acc[4], acc[5], acc[6], acc[7]);
}

#ifndef RT_EMU
extern "C" int embed_fwd_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D,
                              void *stream) {
    if (D % 8) return rt_fail(RT_EINVAL, "embed_fwd_cuda: D = %lld is not a multiple of 8", (long long)D);
    if (M <= 0) return 0;
    k_embed_fwd<<<grid_1d((size_t)(M * D / 8), 256), 256, 0, (cudaStream_t)stream>>>(out, table, ids, M, D);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int embed_fwd_rows_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D,
                                   int64_t v0, int64_t nv, void *stream) {
    if (D % 8) return rt_fail(RT_EINVAL, "embed_fwd_rows_cuda: D = %lld is not a multiple of 8", (long long)D);
    if (M <= 0) return 0;
    k_embed_fwd_rows<<<grid_1d((size_t)(M * D / 8), 256), 256, 0, (cudaStream_t)stream>>>(out, table, ids, M, D, v0,
                                                                                          nv);
    RT_CUDA_LAUNCHED();
    return 0;
}

extern "C" int embed_bwd_cuda(float *dtable, const uint16_t *dout, const int32_t *ids, const int32_t *order,
                              const int32_t *seg, int64_t n_seg, int64_t M, int64_t D, void *stream) {
    if (D % 8) return rt_fail(RT_EINVAL, "embed_bwd_cuda: D = %lld is not a multiple of 8", (long long)D);
    if (n_seg <= 0 || M <= 0) return 0;
    if (n_seg > 0x7fffffff) return rt_fail(RT_EINVAL, "embed_bwd_cuda: %lld distinct ids", (long long)n_seg);
    dim3 grid((unsigned)n_seg, (unsigned)((D / 8 + 255) / 256));
    k_embed_bwd<<<grid, 256, 0, (cudaStream_t)stream>>>(dtable, dout, ids, order, seg, D);
    RT_CUDA_LAUNCHED();
    return 0;
}
#endif
