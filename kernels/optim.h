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

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t step;   /* 1 for the first update */
} adamw_hparams;

void adamw_step(float *p, const float *g, float *m, float *v, size_t n, const adamw_hparams *h, tp_pool *pool);
double vec_sumsq(const float *x, size_t n, tp_pool *pool);
void vec_scale(float *x, size_t n, float s, tp_pool *pool);

#endif
