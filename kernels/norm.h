/* kernels/norm.h — RMSNorm as Llama and Qwen2 use it: y = w ⊙ x / sqrt(mean(x²) + eps).
 *
 * Shapes (row-major, f32): x, y, dy, dx [M, D]; w, dw [D]; rstd [M] (1/sqrt(mean(x²)+eps),
 * saved by the forward for the backward). The mean of squares is accumulated in double.
 * Rows are split over the pool; the weight gradient is split over columns, so no two
 * threads write the same element and results do not depend on the pool size.
 * No allocation, no errors.
 */
#ifndef RT_KERNELS_NORM_H
#define RT_KERNELS_NORM_H

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* rstd may be NULL (inference). y may not alias x. */
void rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t M, int64_t D, float eps,
                 tp_pool *pool);

/* The residual add fused in front: sum = x + add (f32; sum may equal x, then x += add in place),
 * then y, rstd = rmsnorm(sum) as above. The CPU twin of the CUDA fused forward. */
void rmsnorm_residual_fwd(float *y, float *rstd, float *sum, const float *x, const float *add, const float *w, int64_t M,
                          int64_t D, float eps, tp_pool *pool);

/* Qwen3's q/k norm: in place over the H heads of hd values at the start of each of T rows of
 * x (rows ld apart: a fused q|k|v row), each head normalized by its own RMS with the one
 * weight w [hd]: x[t·ld + h·hd + j] = w[j] · x·rstd(t, h). Forward only (inference). */
void rmsnorm_heads_fwd(float *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const float *w, float eps);

/* dx[M,D] += ∂L/∂x (accumulated: the residual stream's gradient); dw[D] += ∂L/∂w. */
void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, int64_t M,
                 int64_t D, tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/norm.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* Fused residual add + RMSNorm (forward): when add != NULL, res[M,D] += add first (bf16,
 * the sum rounded once), then y = w ⊙ res·rstd (bf16), rstd[M] (f32, may be NULL). One block
 * per row; D ≤ 16384 and D % 8 == 0. add == NULL is the plain rmsnorm_fwd twin. */
int rmsnorm_fwd_cuda(uint16_t *y, float *rstd, uint16_t *res, const uint16_t *add, const uint16_t *w, int64_t M,
                     int64_t D, float eps, void *stream);
/* The same out of place: sum = x + add (bf16; add == NULL: a copy of x), y = rmsnorm(sum), so
 * a trainer that keeps every layer's residual input gets the next one without a copy. sum may
 * equal x (that is rmsnorm_fwd_cuda). */
int rmsnorm_residual_fwd_cuda(uint16_t *y, float *rstd, uint16_t *sum, const uint16_t *x, const uint16_t *add,
                              const uint16_t *w, int64_t M, int64_t D, float eps, void *stream);
/* Backward fused with the residual: dres[M,D] (bf16) += ∂L/∂x, i.e. the residual stream's
 * gradient gets the norm's input gradient added in the same pass; dw[D] (f32) += ∂L/∂w.
 * dw goes through per-block partial sums in ws (rmsnorm_bwd_cuda_ws_bytes(M, D) bytes of
 * device scratch, owned by the caller) reduced in a fixed order. x is the norm's input. */
/* rmsnorm_heads_fwd's twin (bf16, f32 math): one warp per head; hd % 8 == 0, hd ≤ 256, ld % 8 == 0. */
int rmsnorm_heads_fwd_cuda(uint16_t *x, int64_t ld, int64_t T, int64_t H, int64_t hd, const uint16_t *w, float eps,
                           void *stream);
size_t rmsnorm_bwd_cuda_ws_bytes(int64_t M, int64_t D);
int rmsnorm_bwd_cuda(uint16_t *dres, float *dw, const uint16_t *dy, const uint16_t *x, const uint16_t *w,
                     const float *rstd, int64_t M, int64_t D, void *ws, void *stream);

/* The DeepSeek teacher's RMSNorm (kernels/cuda/ds_norm.cu). The same function as
 * rmsnorm_fwd_cuda, but not the same contract, so the two stay apart: the weight is f32 (the
 * teacher keeps norm weights in f32; rmsnorm_fwd_cuda's is bf16), rows have strides ldx, ldy ≥ D
 * (the kv latent is the first kv_lora_rank values of each kv_a_proj row, read in place), D is
 * any positive size (no D % 8 or D ≤ 16384: scalar loads, no 16-byte vectors), there is no
 * rstd output and no out-of-place sum. y = w ⊙ x / sqrt(mean(x²) + eps) over the first D
 * values of each of M rows, bf16 x/y, one block per row, sum of squares in f32. When res
 * (stride ldx) is not NULL, x ← x + res first (written back to x, rounded to bf16 once: the
 * fused pre-norm residual add). CPU twin: rmsnorm_fwd. */
int ds_rmsnorm_cuda(uint16_t *x, int64_t ldx, const uint16_t *res, const float *w, int64_t M, int64_t D, float eps,
                    uint16_t *y, int64_t ldy, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
