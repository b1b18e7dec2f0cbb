/* kernels/optim.h — AdamW and the reductions around it (gradient norm, scaling).
 *
 * adamw_step() updates n parameters in place exactly as torch.optim.AdamW's single-tensor
 * path does (f32 tensors, scalars formed in double and rounded to f32 where torch does):
 *   p ← p·(1 − lr·wd);  m ← m + (1−β1)(g − m);  v ← v·β2 + (1−β2)·g²;
 *   p ← p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)
 * with t the 1-based step. vec_sumsq() returns Σ x² in double over a fixed split into
 * blocks (independent of the pool size), so the global gradient norm is deterministic.
 * vec_scale() multiplies in place. No allocation, no errors.
 */
#ifndef RT_KERNELS_OPTIM_H
#define RT_KERNELS_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;   /* 1 for the first update */
} adamw_hparams;

void adamw_step(float *p, const float *g, float *m, float *v, size_t n, const adamw_hparams *h, tp_pool *pool);
double vec_sumsq(const float *x, size_t n, tp_pool *pool);
void vec_scale(float *x, size_t n, float s, tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/optim.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* AdamW on f32 master weights and moments, the same arithmetic as adamw_step applied to
 * g·grad_scale (the clipping coefficient folded in; 1 = none). p_bf16 (may be NULL) receives
 * the updated weights rounded to bf16 (the compute copy), in the same pass. */
int adamw_step_cuda(float *p, uint16_t *p_bf16, const float *g, float *m, float *v, size_t n,
                    const adamw_hparams *h, float grad_scale, void *stream);
/* *out (device double) = Σ x² (accumulate: +=), over fixed blocks of 65536 summed in double
 * in block order (deterministic; the global gradient norm is sqrt of the total over all
 * gradient buffers). ws: vec_sumsq_cuda_ws_bytes(n) bytes of device scratch. */
size_t vec_sumsq_cuda_ws_bytes(size_t n);
int vec_sumsq_cuda(double *out, bool accumulate, const float *x, size_t n, void *ws, void *stream);
int vec_scale_cuda(float *x, size_t n, float s, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif
