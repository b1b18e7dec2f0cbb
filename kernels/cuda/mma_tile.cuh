// kernels/cuda/mma_tile.cuh — the tensor-core pieces shared by the flash attention kernels
// (kernels/cuda/attention.cu: the student's causal attention; kernels/cuda/paged_attention.cu:
// the teacher's prefill on the paged cache): PTX wrappers (cp.async, ldmatrix, mma.sync
// m16n8k16 bf16 → f32), the lane → ldmatrix row address of each operand fragment, and the two
// per-warp steps of a flash-attention tile — S = Q·Kᵀ for 16 query rows × 64 keys, and the
// online-softmax update with O += P·V (P handed from the S accumulators to A fragments in
// registers). Shared tiles are bf16 with a row stride of hd + 8 (conflict-free ldmatrix).
// Header-only device code; no state. -DRT_EMU: tests/emu/cuda_emu.h stands in for the PTX.
#ifndef RT_KERNELS_CUDA_MMA_TILE_CUH
#define RT_KERNELS_CUDA_MMA_TILE_CUH

#include <math.h>
#include <stdint.h>

#include "kernels/cuda/common.cuh"

// ---- PTX wrappers ----------------------------------------------------------------------
// (-DRT_EMU: the CPU emulator of tests/emu/cuda_emu.h stands in for them, see tests/emu/)
#ifdef RT_EMU
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) { emu::cp_async16(smem, gmem, valid); }
__device__ __forceinline__ void cp_async_commit() {}
template <int N> __device__ __forceinline__ void cp_async_wait() {}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t *p) { emu::ldsm_x4(r, p, false); }
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const uint16_t *p) { emu::ldsm_x4(r, p, true); }
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    emu::mma16816(d, a, b0, b1);
}
#define RT_DYN_SMEM(name) uint16_t *name = (uint16_t *)emu::dyn_smem()
#else
#define RT_DYN_SMEM(name) extern __shared__ __align__(16) uint16_t name[]
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;   // src-size 0: the 16 bytes are zero-filled
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const uint16_t *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}
// d[4] += a[4] (16×16, row) · (b0, b1) (16×8, col)
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// ---- fragment addressing (lane → the row address it gives ldmatrix) ---------------------
// A operand (16×16 at row r0, col c0 of a row-major tile): matrices (rows 0-7, cols 0-7),
// (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15) = a0..a3.
__device__ __forceinline__ const uint16_t *a_addr(const uint16_t *s, int ld, int r0, int c0, int lane) {
    return s + (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + c0 + (lane >> 4) * 8;
}
// B operand from a tile stored [n][k] (rows = n): two n-tiles (n0, n0+8) × 16 k at c0:
// r[0], r[1] = b0, b1 of n-tile n0; r[2], r[3] = b0, b1 of n-tile n0 + 8.
__device__ __forceinline__ const uint16_t *bn_addr(const uint16_t *s, int ld, int n0, int c0, int lane) {
    return s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + c0 + ((lane >> 3) & 1) * 8;
}
// B operand from a tile stored [k][n] (rows = k), with ldmatrix.trans: 16 k at row k0 × two
// n-tiles (c0, c0+8): r[0], r[1] = b0, b1 of n-tile c0; r[2], r[3] of n-tile c0 + 8.
__device__ __forceinline__ const uint16_t *bt_addr(const uint16_t *s, int ld, int k0, int c0, int lane) {
    return s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + c0 + (lane >> 4) * 8;
}


// ---- flash-attention tile steps (one warp, 16 query rows × 64 keys) ----------------------
// s[nt][e] (nt: 8 key tiles of 8) += Q·Kᵀ: qf the warp's KC = hd/16 Q A-fragments, cK the 64
// keys [64][LD] in shared memory.
template <int KC>
__device__ __forceinline__ void tile_scores(float (&s)[8][4], const uint32_t (&qf)[KC][4], const uint16_t *cK, int LD,
                                            int lane) {
#pragma unroll
    for (int i = 0; i < 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
    for (int kc = 0; kc < KC; kc++)
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t b[4];
            ldsm_x4(b, bn_addr(cK, LD, np * 16, kc * 16, lane));
            mma16816(s[2 * np], qf[kc], b[0], b[1]);
            mma16816(s[2 * np + 1], qf[kc], b[2], b[3]);
        }
}

// The online softmax over one tile of scaled, masked scores s (log2 domain; −inf = masked) for
// the thread's two rows (e < 2: row g, e ≥ 2: row g + 8; the four lanes of a row quad share
// them): running maximum m and sum l (this lane's partial; the quad is summed at the end),
// O rescaled when the maximum grows, then O += P·V with V the 64 keys [64][LD] in shared
// memory. A row with every score masked so far keeps m = −inf, l = 0 and O = 0.
template <int DT>
__device__ __forceinline__ void tile_softmax_pv(float (&s)[8][4], float (&m)[2], float (&l)[2], float (&oacc)[DT][4],
                                                const uint16_t *cV, int LD, int lane) {
    float mx[2] = {m[0], m[1]};
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) mx[e >> 1] = fmaxf(mx[e >> 1], s[nt][e]);
    float base[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        base[r] = mx[r] == -INFINITY ? 0.f : mx[r];
        float alpha = exp2f(m[r] - base[r]);   // m = −inf → 0
        m[r] = mx[r];
        l[r] *= alpha;
#pragma unroll
        for (int dt = 0; dt < DT; dt++) {
            oacc[dt][2 * r] *= alpha;
            oacc[dt][2 * r + 1] *= alpha;
        }
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            float p = exp2f(s[nt][e] - base[e >> 1]);
            s[nt][e] = p;
            l[e >> 1] += p;
        }
    // O += P·V: P (16 × 64 keys) as four A fragments of 16 keys
#pragma unroll
    for (int kc = 0; kc < 4; kc++) {
        uint32_t a[4] = {rtk::pack_bf2(s[2 * kc][0], s[2 * kc][1]), rtk::pack_bf2(s[2 * kc][2], s[2 * kc][3]),
                         rtk::pack_bf2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                         rtk::pack_bf2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
        for (int dp = 0; dp < DT / 2; dp++) {
            uint32_t b[4];
            ldsm_x4_t(b, bt_addr(cV, LD, kc * 16, dp * 16, lane));
            mma16816(oacc[2 * dp], a, b[0], b[1]);
            mma16816(oacc[2 * dp + 1], a, b[2], b[3]);
        }
    }
}

#ifndef RT_EMU
// Raise a kernel's dynamic shared-memory limit, except while `st` is being captured into a CUDA
// graph (the attribute call is not a stream operation; the first, eager call has set it).
template <typename K> static int set_smem(K kern, size_t bytes, cudaStream_t st) {
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    RT_CUDA_TRY(cudaStreamIsCapturing(st, &cs));
    if (cs != cudaStreamCaptureStatusNone) return 0;
    RT_CUDA_TRY(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}
#endif

#endif
