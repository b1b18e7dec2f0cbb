/* kernels/fp8.h — DeepSeek-V3's FP8 scheme: e4m3 activations quantized per token and per
 * 128 channels, weights with one f32 scale per 128×128 block, and the block-scaled GEMM
 * out = A·Wᵀ whose f32 partial sums are promoted (multiplied by the two scales) once per
 * 128-wide K block. (The teacher's other GPU kernels sit with their families: the bf16 GEMMs in
 * kernels/matmul.h, its RMSNorm in kernels/norm.h, its YaRN rope in kernels/rope.h.)
 *
 * Encoding: fp8_from_f32() rounds to the nearest e4m3fn value, ties to even, and saturates
 * to ±448 (the fn variant has no infinities; NaN gives 0x7f). The same as torch's
 * .to(float8_e4m3fn) for |x| ≤ 448 and as CUDA's __nv_cvt_float_to_fp8(…, __NV_SATFINITE,
 * __NV_E4M3) everywhere.
 *
 * fp8_act_quant(): x [M, K] f32, K a multiple of 128 → q [M, K] e4m3 and scale [M, K/128]:
 * s = amax(|x[m, 128j … 128j+127]|) / 448 (1 when that is 0), q = fp8(x / s) — DeepSeek's
 * act_quant (inference/kernel.py), so x ≈ q·s.
 * fp8_swiglu_quant(): gu [M, 2I] f32 holds gate | up halves; h = silu(g)·u (f32, silu(g) =
 * g / (1 + e^−g)) is quantized as fp8_act_quant does; I a multiple of 128.
 *
 * fp8_gemm(): out [M, N] = Σ_kb (Σ_{k in kb} a[m,k]·w[n,k]) · a_scale[m, kb] · w_scale[n/128, kb],
 * a: [M, K] e4m3 with a_scale [M, K/128]; w: [N, K] e4m3 with w_scale [ceil(N/128), K/128]
 * (the checkpoint's weight_scale_inv); K a multiple of 128, N any. The inner block sum is
 * exact (double; e4m3 products are exact and 128 of them fit in 53 bits), the promoted sum
 * is f32 in kb order. out_f32 and/or out_bf16 may be NULL. Rows are split over the pool.
 * fp8_gemm_grouped(): the MoE form — groups g = 0 … G−1 own rows offsets[g] … offsets[g+1]
 * of a (tokens already permuted to their experts) and use weight g: w + g·N·K, w_scale +
 * g·ceil(N/128)·K/128. Rows outside [offsets[0], offsets[G]) are untouched.
 * Errors (CPU): RT_EINVAL for K not a multiple of 128 or bad offsets, RT_ENOMEM (K floats of
 * scratch per thread).
 *
 * FP8-resident weights with f32 activations (the CPU teacher, teacher/deepseek.c): an
 * fp8_weight is a [rows, cols] e4m3 matrix (row-major, any shape) with its f32 block scales
 * (weight_scale_inv), possibly a slice of a larger checkpoint tensor that does not start on
 * a block boundary: element (r, c) is dequantized as
 *   e4m3(w[r·cols + c]) · scale[((r + row_off) / block_rows) · scale_cols + (c + col_off) / block_cols]
 * (one f32 rounding of the exact product, as kernels/convert.h's fp8_block_dequant; the NaN
 * codes 0x7f/0xff give NaN). Nothing is widened ahead of time: about one byte per weight.
 * fp8_weight_dequant(): rows [r0, r1) of w into out [r1 − r0, cols] f32, rows over the pool.
 * fp8_linear_fwd(): y [M, N] = x [M, K] · Wᵀ (+ b [N] on every row when b is not NULL) for
 *   W = w [N = rows, K = cols], in f32. Output rows of W are split over the pool in tiles of
 *   FP8_TILE_N; each thread dequantizes its tile FP8_TILE_K columns at a time into a scratch
 *   on its stack (FP8_TILE_N·FP8_TILE_K floats, 64 KiB, cache-resident) and multiplies it
 *   into y with a single-threaded OpenBLAS sgemm (sgemv for M = 1: decode), so y is the sum
 *   over K tiles of f32 GEMMs on exactly dequantized weights — the f32 path's arithmetic up to
 *   summation order (|Δ| ≤ a few ulp of Σ|x·w|). No allocation, no errors.
 *   The decoding runs on AVX2 + F16C where the CPU has them (checked per call), else in
 *   portable C; both give the same bits.
 *
 * CUDA twins (RT_HAVE_CUDA): device pointers, asynchronous on `stream` (a cudaStream_t,
 * NULL = default); they return 0, RT_EINVAL (shape) or RT_EINTERNAL (the CUDA/cuBLASLt
 * error in the message). Activations are bf16 (uint16_t bits) on the GPU. Nothing allocates,
 * so calls can be captured into a CUDA graph; kernels with large shared memory (the grouped
 * GEMM, MLA) set their limit on the first call made outside a capture.
 *   fp8_act_quant_cuda / fp8_swiglu_quant_cuda: as above from bf16 input; scale_t = 0 writes
 *     scale [M, K/128], 1 writes it transposed, [K/128, M] (what fp8_gemm_lt reads).
 *   fp8_gemm_grouped_cuda: the own kernel (mma.sync m16n8k32 e4m3 on sm_89+, a scalar
 *     fallback on sm_80), one 64×128 output tile per CTA, f32 accumulators promoted once per
 *     128-wide K block; offsets [G+1] (int32) live on the device and may be written by an
 *     earlier kernel on the stream; max_total_rows bounds offsets[G] − offsets[0] (it sizes
 *     the launch: n_tokens·top_k is always safe).
 *   fp8_gemm_dense_cuda: the same kernel for one dense matrix (no offsets), with split-K for
 *     decode shapes (few rows, few output tiles: o_proj has 56 at batch 1): `splits` CTAs
 *     share the K blocks, write f32 partials to ws (fp8_gemm_splitk_workspace_bytes(M, N,
 *     splits), caller-owned) and a second kernel sums them in split order (deterministic)
 *     and rounds to bf16 once. splits = 1 needs no workspace; fp8_gemm_splitk_plan() picks
 *     as many splits as fill one wave (one CTA per SM), at least 4 K blocks each.
 *   fp8_gemm_lt: cuBLASLt's block-scaled FP8 (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
 *     for W, VEC128_32F for the activations, whose scales come transposed: a_scale_t
 *     [K/128, M]); CUDA ≥ 12.9 on Hopper; M, N multiples of 4, K of 512. RT_EUNSUPPORTED when
 *     the library offers no algorithm. The handle (fp8_gemm_lt_create) holds a 32 MiB
 *     workspace; one handle per stream. The bf16 GEMMs of kernels/matmul.h (bf16_gemm_cuda …)
 *     run on the same handle.
 */
#ifndef RT_KERNELS_FP8_H
#define RT_KERNELS_FP8_H

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FP8_E4M3_MAX 448.0f
#define FP8_BLOCK 128

uint8_t fp8_from_f32(float f);

int fp8_act_quant(const float *x, int64_t M, int64_t K, uint8_t *q, float *scale);
int fp8_swiglu_quant(const float *gu, int64_t M, int64_t I, uint8_t *q, float *scale);

int fp8_gemm(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M, int64_t N,
             int64_t K, float *out_f32, uint16_t *out_bf16, tp_pool *pool);
int fp8_gemm_grouped(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                     const int64_t *offsets, int64_t G, int64_t N, int64_t K, float *out_f32, uint16_t *out_bf16,
                     tp_pool *pool);

#define FP8_TILE_N 64
#define FP8_TILE_K 256

typedef struct {
    const uint8_t *w;                    /* [rows, cols] e4m3 */
    const float *scale;                  /* [*, scale_cols] f32 block scales */
    int64_t rows, cols;
    int64_t block_rows, block_cols;      /* 128 × 128 for DeepSeek-V3 */
    int64_t row_off, col_off;            /* where (0, 0) sits in its block: 0 … block − 1 */
    int64_t scale_cols;
} fp8_weight;

void fp8_weight_dequant(const fp8_weight *w, int64_t r0, int64_t r1, float *out, tp_pool *pool);
void fp8_linear_fwd(float *y, const float *x, const fp8_weight *w, const float *b, int64_t M, tp_pool *pool);

#ifdef RT_HAVE_CUDA
int fp8_act_quant_cuda(const uint16_t *x, int64_t M, int64_t K, uint8_t *q, float *scale, int scale_t,
                       void *stream);
int fp8_swiglu_quant_cuda(const uint16_t *gu, int64_t M, int64_t I, uint8_t *q, float *scale, int scale_t,
                          void *stream);
int fp8_gemm_grouped_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                          const int32_t *offsets, int64_t G, int64_t max_total_rows, int64_t N, int64_t K,
                          uint16_t *out, void *stream);
int fp8_gemm_splitk_plan(int64_t M, int64_t N, int64_t K);
size_t fp8_gemm_splitk_workspace_bytes(int64_t M, int64_t N, int splits);
int fp8_gemm_dense_cuda(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M,
                        int64_t N, int64_t K, int splits, void *ws, size_t ws_bytes, uint16_t *out, void *stream);

typedef struct fp8_lt fp8_lt;   /* opaque; fp8_gemm_lt_create → fp8_gemm_lt_free */
int fp8_gemm_lt_create(fp8_lt **out);
void fp8_gemm_lt_free(fp8_lt *h);
int fp8_gemm_lt(fp8_lt *h, const uint8_t *a, const float *a_scale_t, const uint8_t *w, const float *w_scale,
                int64_t M, int64_t N, int64_t K, uint16_t *out, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
